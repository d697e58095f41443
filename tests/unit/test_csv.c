/*
 * test_csv: the RFC 4180 reader (common/csv.c) every CSV input goes
 * through.  Inputs come from temporary files read through a FILE * and
 * through a file descriptor; a long input crosses the reader's 64 KiB
 * block boundary in the middle of quoted and unquoted fields.  Every
 * error is checked with its exact message, line and column.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/csv.h"
#include "common/xmalloc.h"

static FILE *
tmp_text(const char *text, size_t len)
{
	FILE	*f = tmpfile();

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	rewind(f);
	return f;
}

static FILE *
tmp_str(const char *text)
{
	return tmp_text(text, strlen(text));
}

/* Read every record of text; the last csv_read result is returned. */
static int
read_all(const char *text, struct csv_row *row, size_t *nrec, char *err,
    size_t errlen)
{
	FILE			*f = tmp_text(text, strlen(text));
	struct csv_reader	*r = csv_open(f);
	int			 rc;

	*nrec = 0;
	while ((rc = csv_read(r, row, err, errlen)) == 1)
		(*nrec)++;
	assert_int_equal(csv_records(r), *nrec);
	csv_close(r);
	fclose(f);
	return rc;
}

static void
test_fields(void **state)
{
	FILE			*f = tmp_str("a,\"b,c\",\"d\"\"e\"\r\n"
				    "\"multi\nline\",,x\n"
				    "\"\",\"\"\"\",\"\"\"\"\"\"\n"
				    "last,row,\"q\"");
	struct csv_reader	*r = csv_open(f);
	struct csv_row		 row;
	char			 err[128];

	(void)state;
	memset(&row, 0, sizeof row);
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_int_equal(row.n, 3);
	assert_int_equal(row.line, 1);
	assert_string_equal(csv_field(&row, 0), "a");
	assert_string_equal(csv_field(&row, 1), "b,c");
	assert_string_equal(csv_field(&row, 2), "d\"e");
	assert_int_equal(csv_field_len(&row, 0), 1);
	assert_int_equal(csv_field_len(&row, 1), 3);
	assert_int_equal(csv_field_len(&row, 2), 3);
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_int_equal(row.n, 3);
	assert_int_equal(row.line, 2);
	assert_string_equal(csv_field(&row, 0), "multi\nline");
	assert_int_equal(csv_field_len(&row, 0), 10);
	assert_string_equal(csv_field(&row, 1), "");
	assert_int_equal(csv_field_len(&row, 1), 0);
	assert_string_equal(csv_field(&row, 2), "x");
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_int_equal(row.line, 4);
	assert_string_equal(csv_field(&row, 0), "");
	assert_string_equal(csv_field(&row, 1), "\"");
	assert_string_equal(csv_field(&row, 2), "\"\"");
	/* No line end after the last record, a quoted last field. */
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_int_equal(row.line, 5);
	assert_int_equal(row.n, 3);
	assert_string_equal(csv_field(&row, 1), "row");
	assert_string_equal(csv_field(&row, 2), "q");
	assert_int_equal(csv_read(r, &row, err, sizeof err), 0);
	assert_int_equal(csv_read(r, &row, err, sizeof err), 0);
	assert_int_equal(csv_records(r), 4);
	csv_row_free(&row);
	csv_close(r);
	fclose(f);
}

/* CR: CRLF ends a record, also after a quoted field; a lone CR is data. */
static void
test_crlf(void **state)
{
	FILE			*f = tmp_str("a,b\r\n\"x\"\r\n" "1\r2,\"y\"\r\n"
				    "\"p\r\nq\",z\r\n");
	struct csv_reader	*r = csv_open(f);
	struct csv_row		 row;
	char			 err[128];

	(void)state;
	memset(&row, 0, sizeof row);
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_string_equal(csv_field(&row, 1), "b");
	assert_int_equal(csv_read(r, &row, err, sizeof err), -1);
	assert_string_equal(err, "line 2: 1 fields, the header has 2");
	csv_row_free(&row);
	csv_close(r);
	fclose(f);

	f = tmp_str("a,b\r\n1\r2,\"y\"\r\n\"p\r\nq\",z\r\n");
	r = csv_open(f);
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_string_equal(csv_field(&row, 0), "1\r2");
	assert_string_equal(csv_field(&row, 1), "y");
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_int_equal(row.line, 3);
	assert_string_equal(csv_field(&row, 0), "p\r\nq");
	assert_string_equal(csv_field(&row, 1), "z");
	assert_int_equal(csv_read(r, &row, err, sizeof err), 0);
	csv_row_free(&row);
	csv_close(r);
	fclose(f);
}

/* A UTF-8 BOM at the start is skipped and does not count as a column. */
static void
test_bom(void **state)
{
	struct csv_row	 row;
	size_t		 n;
	char		 err[128];
	FILE		*f = tmp_str("\xef\xbb\xbf" "id,v\n1,2\n");
	struct csv_reader *r = csv_open(f);

	(void)state;
	memset(&row, 0, sizeof row);
	assert_int_equal(csv_read(r, &row, err, sizeof err), 1);
	assert_string_equal(csv_field(&row, 0), "id");
	assert_int_equal(csv_field_len(&row, 0), 2);
	csv_close(r);
	fclose(f);
	/* The column of an error on line 1 counts after the BOM. */
	assert_int_equal(read_all("\xef\xbb\xbf\"a\"b\n", &row, &n, err,
	    sizeof err), -1);
	assert_string_equal(err, "line 1 column 4: text after closing quote");
	/* A BOM elsewhere is data. */
	assert_int_equal(read_all("a\n\xef\xbb\xbf\n", &row, &n, err,
	    sizeof err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(csv_field(&row, 0), "\xef\xbb\xbf");
	csv_row_free(&row);
}

/* Blank lines (LF or CRLF) are skipped; a quoted empty field is not. */
static void
test_blank_lines(void **state)
{
	struct csv_row	 row;
	size_t		 n;
	char		 err[128];

	(void)state;
	memset(&row, 0, sizeof row);
	assert_int_equal(read_all("\n\na,b\n\n1,2\r\n\r\n\n3,4\n\n", &row, &n,
	    err, sizeof err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(read_all("a\n\"\"\n\nb\n", &row, &n, err,
	    sizeof err), 0);
	assert_int_equal(n, 3);
	assert_int_equal(read_all("", &row, &n, err, sizeof err), 0);
	assert_int_equal(n, 0);
	assert_int_equal(read_all("\n\n", &row, &n, err, sizeof err), 0);
	assert_int_equal(n, 0);
	csv_row_free(&row);
}

static void
test_errors(void **state)
{
	static const struct {
		const char	*text;
		const char	*msg;
		size_t		 line, col;
	} cases[] = {
		/* Text after a closing quote, at its column. */
		{ "a,\"b\"c\n", "line 1 column 6: text after closing quote",
		  1, 6 },
		{ "a,b\n\"x\" ,y\n", "line 2 column 4: text after closing quote",
		  2, 4 },
		{ "a,b\n\"x\"\"\"y\n", "line 2 column 6: text after closing "
		  "quote", 2, 6 },
		{ "a\n\"x\ny\"z\n", "line 3 column 3: text after closing quote",
		  3, 3 },
		{ "a,b\n\"x\"\r1\n", "line 2 column 4: text after closing quote",
		  2, 4 },
		/* An unterminated quote at the end: where it opened. */
		{ "a,b\n\"open,c\n", "line 2 column 1: unterminated quoted "
		  "field", 2, 1 },
		{ "a,b\n1,\"x\n\n\n", "line 2 column 3: unterminated quoted "
		  "field", 2, 3 },
		{ "a,\"", "line 1 column 3: unterminated quoted field", 1, 3 },
		{ "a,\"b\"\"", "line 1 column 3: unterminated quoted field",
		  1, 3 },
		/* Field counts, at the line where the record starts. */
		{ "a,b\n1,2\n3\n", "line 3: 1 fields, the header has 2", 3, 0 },
		{ "a,b\n1,2,3\n", "line 2: 3 fields, the header has 2", 2, 0 },
		{ "a,b\n\"x\ny\",1\n5,6,7\n", "line 4: 3 fields, the header "
		  "has 2", 4, 0 },
		{ "a,b\n1,2\n\n3,", "line 4: 2 fields, the header has 2", 0, 0 },
	};
	char	err[128];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		FILE			*f;
		struct csv_reader	*r;
		struct csv_row		 row;
		size_t			 line, col;
		int			 rc;

		if (cases[i].line == 0)
			continue;	/* a valid input, checked below */
		f = tmp_text(cases[i].text, strlen(cases[i].text));
		r = csv_open(f);
		memset(&row, 0, sizeof row);
		while ((rc = csv_read(r, &row, err, sizeof err)) == 1)
			;
		assert_int_equal(rc, -1);
		assert_string_equal(err, cases[i].msg);
		(void)csv_error(r, &line, &col);
		assert_int_equal(line, cases[i].line);
		assert_int_equal(col, cases[i].col);
		assert_string_equal(csv_error(r, NULL, NULL),
		    strstr(cases[i].msg, ": ") + 2);
		csv_row_free(&row);
		csv_close(r);
		fclose(f);
	}
	/* "3," is two fields: the last one empty. */
	{
		struct csv_row	 row;
		size_t		 n;

		memset(&row, 0, sizeof row);
		assert_int_equal(read_all("a,b\n1,2\n\n3,", &row, &n, err,
		    sizeof err), 0);
		assert_int_equal(n, 3);
		assert_string_equal(csv_field(&row, 1), "");
		csv_row_free(&row);
	}
}

/*
 * A long input read through a descriptor: records and fields straddle the
 * 64 KiB blocks, quoted fields with "" and newlines among them, and a
 * long field makes the row buffer grow.
 */
static void
test_blocks_fd(void **state)
{
	char		*text = NULL, *big;
	size_t		 len = 0, cap = 0, nrec = 0;
	FILE		*f;
	int		 fd;
	struct csv_reader *r;
	struct csv_row	 row;
	char		 err[128];
	size_t		 bigsize = 200000;

	(void)state;
	big = xmalloc(bigsize + 1);
	memset(big, 'z', bigsize);
	big[bigsize] = '\0';
	for (size_t i = 0; i < 20000; i++) {
		char	line[128];
		int	n;

		if (i == 777)
			n = snprintf(line, sizeof line, "%zu,\"%s\",big\n", i,
			    "");
		else
			n = snprintf(line, sizeof line, "%zu,\"q\"\"%zu\n"
			    "x\",%s\r\n", i, i * 7, i % 3 ? "plain" : "");
		text = xgrow(text, &cap, len + (size_t)n + bigsize + 1, 1);
		memcpy(text + len, line, (size_t)n);
		len += (size_t)n;
		if (i == 777) {
			/* Put a 200000-byte field in the middle field. */
			len -= (size_t)n;
			n = snprintf(line, sizeof line, "%zu,\"", i);
			memcpy(text + len, line, (size_t)n);
			len += (size_t)n;
			memcpy(text + len, big, bigsize);
			len += bigsize;
			memcpy(text + len, "\",big\n", 6);
			len += 6;
		}
	}
	f = tmp_text(text, len);
	fd = fileno(f);
	r = csv_open_fd(fd);
	memset(&row, 0, sizeof row);
	for (size_t line = 1;; nrec++) {
		char	want[64];
		int	rc = csv_read(r, &row, err, sizeof err);

		if (rc == 0)
			break;
		assert_int_equal(rc, 1);
		assert_int_equal(row.n, 3);
		assert_int_equal(row.line, line);
		snprintf(want, sizeof want, "%zu", nrec);
		assert_string_equal(csv_field(&row, 0), want);
		if (nrec == 777) {
			assert_int_equal(csv_field_len(&row, 1), bigsize);
			assert_string_equal(csv_field(&row, 1), big);
			assert_string_equal(csv_field(&row, 2), "big");
			line += 1;
			continue;
		}
		snprintf(want, sizeof want, "q\"%zu\nx", nrec * 7);
		assert_string_equal(csv_field(&row, 1), want);
		assert_string_equal(csv_field(&row, 2),
		    nrec % 3 ? "plain" : "");
		line += 2;
	}
	assert_int_equal(nrec, 20000);
	csv_row_free(&row);
	csv_close(r);
	fclose(f);
	free(text);
	free(big);
}

/* A read error is reported with its line. */
static void
test_read_error(void **state)
{
	struct csv_reader	*r = csv_open_fd(-1);
	struct csv_row		 row;
	char			 err[128];

	(void)state;
	memset(&row, 0, sizeof row);
	assert_int_equal(csv_read(r, &row, err, sizeof err), -1);
	assert_string_equal(err, "line 1: Bad file descriptor");
	csv_row_free(&row);
	csv_close(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_crlf),
		cmocka_unit_test(test_bom),
		cmocka_unit_test(test_blank_lines),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_blocks_fd),
		cmocka_unit_test(test_read_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
