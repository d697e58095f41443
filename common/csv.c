/*
 * csv: the streaming RFC 4180 reader (see csv.h).
 *
 * Input is read in 64 KiB blocks into the reader's buffer, and a field
 * is copied into the row a run at a time: an unquoted field up to the
 * next comma or line end, a quoted one up to the next quote or line
 * break, so the common case is a table lookup per byte and one memcpy
 * per field.  Lines are counted at every LF, inside quotes too, so
 * errors name physical lines; the column of a byte is its offset from
 * the start of its line, kept as an absolute offset into the input so
 * nothing is counted per byte.  A lone CR is data; CRLF ends a record.
 */
#include "common/csv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/xmalloc.h"

#define CSV_BLOCK	65536

struct csv_reader {
	FILE		*fp;		/* or NULL: read fd */
	int		 fd;
	char		*buf;
	size_t		 pos;		/* next byte */
	size_t		 end;		/* bytes in buf */
	size_t		 base;		/* input offset of buf[0] */
	int		 eof;
	int		 started;	/* the BOM check is done */
	int		 quoted0;	/* the record's first field was quoted */
	size_t		 line;		/* current physical line, 1-based */
	size_t		 linestart;	/* input offset of its first byte */
	size_t		 nfields;	/* of the header */
	size_t		 nrecords;
	size_t		 errline;
	size_t		 errcol;
	char		 errmsg[128];
};

/* Bytes that end a run of an unquoted field. */
static const unsigned char csv_stop[256] = {
	[','] = 1, ['\n'] = 1, ['\r'] = 1,
};

static struct csv_reader *
csv_new(FILE *f, int fd)
{
	struct csv_reader	*r = xcalloc(1, sizeof *r);

	r->fp = f;
	r->fd = fd;
	r->buf = xmalloc(CSV_BLOCK);
	r->line = 1;
	return r;
}

/*
 * Create a reader over f.  f stays the caller's; the reader reads it
 * ahead.  Never fails.
 */
struct csv_reader *
csv_open(FILE *f)
{
	return csv_new(f, -1);
}

/* Create a reader over fd, which stays the caller's.  Never fails. */
struct csv_reader *
csv_open_fd(int fd)
{
	return csv_new(NULL, fd);
}

/* Free r (NULL is fine).  The FILE or fd is not closed. */
void
csv_close(struct csv_reader *r)
{
	if (r == NULL)
		return;
	free(r->buf);
	free(r);
}

/* Free a row's memory and zero it. */
void
csv_row_free(struct csv_row *row)
{
	free(row->buf);
	free(row->off);
	memset(row, 0, sizeof *row);
}

/* Returns the last error's parts (see csv.h). */
const char *
csv_error(const struct csv_reader *r, size_t *line, size_t *col)
{
	if (line != NULL)
		*line = r->errline;
	if (col != NULL)
		*col = r->errcol;
	return r->errmsg;
}

/* Records read so far, the header included. */
size_t
csv_records(const struct csv_reader *r)
{
	return r->nrecords;
}

static int
csv_fail(struct csv_reader *r, size_t line, size_t col, const char *msg)
{
	r->errline = line;
	r->errcol = col;
	snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
	return -1;
}

/* The 1-based column of buf[pos]. */
static size_t
csv_col(const struct csv_reader *r)
{
	return r->base + r->pos - r->linestart + 1;
}

/* An LF at buf[pos - 1] was consumed. */
static void
csv_newline(struct csv_reader *r)
{
	r->line++;
	r->linestart = r->base + r->pos;
}

/* Make buf[pos] valid: 1, 0 at the end of the input, -1 on a read error. */
static int
csv_fill(struct csv_reader *r)
{
	ssize_t	n;

	if (r->pos < r->end)
		return 1;
	if (r->eof)
		return 0;
	r->base += r->end;
	r->pos = r->end = 0;
	if (r->fp != NULL) {
		n = (ssize_t)fread(r->buf, 1, CSV_BLOCK, r->fp);
		if (n == 0 && ferror(r->fp))
			n = -1;
	} else {
		while ((n = read(r->fd, r->buf, CSV_BLOCK)) < 0 &&
		    errno == EINTR)
			;
	}
	if (n < 0)
		return csv_fail(r, r->line, 0, strerror(errno));
	if (n == 0) {
		r->eof = 1;
		return 0;
	}
	r->end = (size_t)n;
	return 1;
}

static void
csv_put(struct csv_row *row, const char *s, size_t n)
{
	row->buf = xgrow(row->buf, &row->cap, row->len + n + 1, 1);
	memcpy(row->buf + row->len, s, n);
	row->len += n;
}

static void
csv_putc(struct csv_row *row, char c)
{
	row->buf = xgrow(row->buf, &row->cap, row->len + 2, 1);
	row->buf[row->len++] = c;
}

/* Start field n of row. */
static void
csv_begin_field(struct csv_row *row)
{
	row->off = xgrow(row->off, &row->offcap, row->n + 2,
	    sizeof *row->off);
	row->off[row->n++] = row->len;
}

/* End the current field; with last, the record too. */
static void
csv_end_field(struct csv_row *row, int last)
{
	csv_putc(row, '\0');
	if (last)
		row->off[row->n] = row->len;
}

/*
 * The rest of a quoted field after its opening quote, up to and with the
 * closing quote.  Returns 0 or -1.
 */
static int
csv_quoted(struct csv_reader *r, struct csv_row *row)
{
	size_t	qline = r->line, qcol = csv_col(r) - 1;
	int	rc;

	for (;;) {
		const char	*p, *q, *e;

		if ((rc = csv_fill(r)) < 0)
			return -1;
		if (rc == 0)
			return csv_fail(r, qline, qcol,
			    "unterminated quoted field");
		p = r->buf + r->pos;
		e = r->buf + r->end;
		for (q = p; q < e && *q != '"' && *q != '\n'; q++)
			;
		csv_put(row, p, (size_t)(q - p));
		r->pos += (size_t)(q - p);
		if (q == e)
			continue;
		r->pos++;
		if (*q == '\n') {
			csv_putc(row, '\n');
			csv_newline(r);
			continue;
		}
		if ((rc = csv_fill(r)) < 0)
			return -1;
		if (rc == 0 || r->buf[r->pos] != '"')
			return 0;
		csv_putc(row, '"');
		r->pos++;
	}
}

/*
 * One record into row.  Returns 1 with the record (row->n == 0, or one
 * empty unquoted field, for a blank line), 0 at the end of the input, -1 on an error.
 */
static int
csv_record(struct csv_reader *r, struct csv_row *row)
{
	int	rc;

	row->len = 0;
	row->n = 0;
	r->quoted0 = 0;
	if ((rc = csv_fill(r)) <= 0)
		return rc;
	row->line = r->line;
	if (r->buf[r->pos] == '\n') {
		r->pos++;
		csv_newline(r);
		return 1;
	}
	for (;;) {
		csv_begin_field(row);
		if ((rc = csv_fill(r)) < 0)
			return -1;
		if (rc > 0 && r->buf[r->pos] == '"') {
			size_t	col;
			char	c;

			r->pos++;
			if (row->n == 1)
				r->quoted0 = 1;
			if (csv_quoted(r, row) != 0)
				return -1;
			if ((rc = csv_fill(r)) < 0)
				return -1;
			if (rc == 0) {
				csv_end_field(row, 1);
				return 1;
			}
			col = csv_col(r);
			c = r->buf[r->pos++];
			if (c == ',') {
				csv_end_field(row, 0);
				continue;
			}
			if (c == '\r') {
				if ((rc = csv_fill(r)) < 0)
					return -1;
				if (rc > 0 && r->buf[r->pos] == '\n') {
					c = '\n';
					r->pos++;
				}
			}
			if (c == '\n') {
				csv_newline(r);
				csv_end_field(row, 1);
				return 1;
			}
			return csv_fail(r, r->line, col,
			    "text after closing quote");
		}
		for (;;) {
			const unsigned char	*p, *q, *e;
			char			 c;

			if ((rc = csv_fill(r)) < 0)
				return -1;
			if (rc == 0) {
				csv_end_field(row, 1);
				return 1;
			}
			p = (const unsigned char *)r->buf + r->pos;
			e = (const unsigned char *)r->buf + r->end;
			for (q = p; q < e && !csv_stop[*q]; q++)
				;
			csv_put(row, (const char *)p, (size_t)(q - p));
			r->pos += (size_t)(q - p);
			if (q == e)
				continue;
			c = r->buf[r->pos++];
			if (c == ',')
				break;
			if (c == '\r') {
				if ((rc = csv_fill(r)) < 0)
					return -1;
				if (rc == 0 || r->buf[r->pos] != '\n') {
					csv_putc(row, '\r');
					continue;
				}
				r->pos++;
			}
			csv_newline(r);
			csv_end_field(row, 1);
			return 1;
		}
		csv_end_field(row, 0);
	}
}

/* Read the next record (see csv.h). */
int
csv_read(struct csv_reader *r, struct csv_row *row, char *err,
    size_t errlen)
{
	int	rc;

	if (!r->started) {
		r->started = 1;
		if ((rc = csv_fill(r)) < 0)
			goto fail;
		if (r->end - r->pos >= 3 &&
		    memcmp(r->buf + r->pos, "\xef\xbb\xbf", 3) == 0) {
			r->pos += 3;
			r->linestart = r->base + r->pos;
		}
	}
	do {
		if ((rc = csv_record(r, row)) < 0)
			goto fail;
		if (rc == 0)
			return 0;
	} while (row->n == 0 || (row->n == 1 && row->len == 1 &&
	    !r->quoted0));	/* blank lines */
	if (r->nrecords++ == 0)
		r->nfields = row->n;
	else if (row->n != r->nfields) {
		char	msg[96];

		snprintf(msg, sizeof msg, "%zu fields, the header has %zu",
		    row->n, r->nfields);
		csv_fail(r, row->line, 0, msg);
		goto fail;
	}
	return 1;
fail:
	if (r->errcol > 0)
		snprintf(err, errlen, "line %zu column %zu: %s", r->errline,
		    r->errcol, r->errmsg);
	else
		snprintf(err, errlen, "line %zu: %s", r->errline, r->errmsg);
	return -1;
}

void
csv_format_error(const struct csv_reader *r, const char *path, char *err,
    size_t errlen)
{
	size_t		 line, col;
	const char	*msg = csv_error(r, &line, &col);

	if (col > 0)
		snprintf(err, errlen, "%s:%zu:%zu: %s", path, line, col, msg);
	else
		snprintf(err, errlen, "%s:%zu: %s", path, line, msg);
}
