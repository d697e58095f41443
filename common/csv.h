/*
 * csv: one streaming RFC 4180 reader for every CSV input (training-set
 * spines, the ML steps' training data, drift references).
 *
 * Records are read from a FILE * or a file descriptor through the
 * reader's own block buffer into a row the caller owns and may reuse.
 * Quoted fields may hold commas, "" (a quote) and line breaks; CRLF or
 * LF ends a record; a UTF-8 byte-order mark at the start is skipped;
 * blank lines are skipped.  The reader is strict: text after a closing
 * quote, an unterminated quote at the end of the file, and a record whose
 * field count differs from the first record's (the header) are errors
 * that give the physical line (1-based) and, where there is one, the
 * byte column (1-based).  A reader is used by one thread at a time; no
 * state outside it.
 */
#ifndef MLOPSD_CSV_H
#define MLOPSD_CSV_H

#include <stddef.h>
#include <stdio.h>

/*
 * A record: n fields in one buffer, each NUL-terminated (so fields
 * holding no NUL can be used as C strings).  Zero it before the first
 * read; free it with csv_row_free().  Reading into it again reuses its
 * memory.
 */
struct csv_row {
	char		*buf;
	size_t		 len;
	size_t		 cap;
	size_t		*off;		/* field i at buf + off[i]; off[n] = len */
	size_t		 n;
	size_t		 offcap;
	size_t		 line;		/* physical line where it starts */
};

struct csv_reader;

/*
 * A reader over f (not closed by csv_close) or over fd (not closed
 * either).  The reader reads ahead in blocks: do not read f or fd
 * otherwise while it is in use.
 */
struct csv_reader	*csv_open(FILE *f);
struct csv_reader	*csv_open_fd(int fd);
void			 csv_close(struct csv_reader *r);

/*
 * Read the next record into row.  The first record read is the header:
 * every later record must have as many fields.  Returns 1, 0 at the end
 * of the input, or -1 with err "line L column C: MESSAGE" (or "line L:
 * MESSAGE" when there is no column, or the read error): the messages are
 *   text after closing quote
 *   unterminated quoted field       (at the opening quote)
 *   N fields, the header has M
 * csv_error() gives the parts so callers can write "FILE:L:C: MESSAGE".
 * After an error the reader must not be read again.
 */
int	csv_read(struct csv_reader *r, struct csv_row *row, char *err,
	    size_t errlen);
/*
 * The last error's line, column (0 when it has none) and bare message
 * (owned by the reader, valid until csv_close).
 */
const char	*csv_error(const struct csv_reader *r, size_t *line,
		    size_t *col);
/* The last error as "PATH:LINE[:COLUMN]: MESSAGE" into err. */
void		 csv_format_error(const struct csv_reader *r, const char *path,
		    char *err, size_t errlen);
/* Records read so far, the header included. */
size_t	csv_records(const struct csv_reader *r);

void	csv_row_free(struct csv_row *row);

static inline const char *
csv_field(const struct csv_row *row, size_t i)
{
	return row->buf + row->off[i];
}

static inline size_t
csv_field_len(const struct csv_row *row, size_t i)
{
	return row->off[i + 1] - row->off[i] - 1;
}

#endif
