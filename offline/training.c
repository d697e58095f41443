/*
 * training: the point-in-time join of a spine (entity keys and times) with
 * the offline copy of the events (SPEC §4).
 *
 * The spine is read into memory, and for each view requested its rows are
 * sorted by (key, ts) and grouped by key in a hash table.  The view's
 * events are then streamed from the offline store, grouped by key and in
 * time order: for each key one replay (features/replay.c, the online
 * engine) adds the events and, before the first event later than a row's
 * time, reads the row's values.  So no event after a row's time can reach
 * it, and values equal the online store's by construction.  Rows whose
 * key has no event get the values of an empty window.  Cells are kept as
 * formatted text and written in spine order once everything is computed:
 * a failure leaves no output.
 */
#include "offline/training.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/config.h"
#include "common/csv.h"
#include "common/sha256.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "features/store.h"

#define TRAINING_TS_COLUMN	"event_timestamp"
/* Spine rows joined at a time: memory is bounded by a chunk. */
#define TRAINING_CHUNK_ROWS	1000000
/* Up to this many distinct keys the scan asks for those keys alone. */
#define TRAINING_MAX_SCAN_KEYS	10000

/* One requested output column. */
struct training_out {
	size_t		 view;		/* index into the repo's views */
	size_t		 feature;
	size_t		 window;
	size_t		 col;		/* index among the output columns */
};

/* A spine row of one view: its entity key and time. */
struct training_ref {
	const char	*key;
	size_t		 keylen;
	int64_t		 ts;
	size_t		 row;
};

/* The spine rows of one key: refs[first .. first + n), sorted by ts. */
struct training_group {
	const char	*key;
	size_t		 keylen;
	size_t		 first;
	size_t		 n;
	int		 seen;		/* its events were streamed */
};

struct training_job {
	const struct repo	 *repo;
	struct training_out	 *outs;
	size_t			  nouts;
	/* The spine: the chunk of rows being joined. */
	struct csv_reader	 *csv;
	size_t			  rowbase;	/* rows of earlier chunks */
	struct csv_row		 *rows;
	size_t			  nrows;
	int64_t			 *ts;
	char			**cells;	/* [row * nouts + col] */
	/* The view being joined. */
	const struct repo_view	 *view;
	size_t			  viewidx;
	struct replay		 *replay;
	struct training_ref	 *refs;
	struct training_group	 *groups;
	size_t			  ngroups;
	size_t			 *table;	/* open addressing: group + 1 */
	size_t			  tablesize;
	struct training_group	 *cur;		/* key being streamed */
	size_t			  pos;		/* next ref of cur */
	struct offline_event	  last;		/* cur's last event (order) */
	char			 *err;
	size_t			  errlen;
};

/* ---------------------------------------------------------------- CSV */

static void
buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	*buf = xgrow(*buf, cap, *len + n + 1, 1);
	if (n > 0)
		memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

void
training_csv_put(char **buf, size_t *len, size_t *cap, const char *s,
    size_t slen)
{
	int	quote = 0;

	for (size_t i = 0; i < slen && !quote; i++)
		quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' ||
		    s[i] == '\n';
	if (slen > 0 && (s[0] == ' ' || s[slen - 1] == ' '))
		quote = 1;
	if (!quote) {
		buf_add(buf, len, cap, s, slen);
		return;
	}
	buf_add(buf, len, cap, "\"", 1);
	for (size_t i = 0; i < slen; i++) {
		if (s[i] == '"')
			buf_add(buf, len, cap, "\"", 1);
		buf_add(buf, len, cap, s + i, 1);
	}
	buf_add(buf, len, cap, "\"", 1);
}

void
training_csv_put_value(char **buf, size_t *len, size_t *cap,
    const struct agg_value *v)
{
	char	 num[64];
	char	*js;
	json_t	*j;

	switch (v->type) {
	case AGG_NULL:
		buf_add(buf, len, cap, "", 0);
		break;
	case AGG_INT:
		snprintf(num, sizeof num, "%lld", (long long)v->u.i);
		buf_add(buf, len, cap, num, strlen(num));
		break;
	case AGG_DOUBLE:
		/* As JSON writes it: a double stays a double (2.0, not 2). */
		snprintf(num, sizeof num, "%.17g", v->u.d);
		if (strspn(num, "-0123456789") == strlen(num))
			strcat(num, ".0");
		buf_add(buf, len, cap, num, strlen(num));
		break;
	case AGG_BOOL:
		buf_add(buf, len, cap, v->u.b ? "true" : "false",
		    v->u.b ? 4 : 5);
		break;
	case AGG_STRING:
		training_csv_put(buf, len, cap, v->u.s.ptr, v->u.s.len);
		break;
	case AGG_LIST:
		j = store_value_json(v);
		js = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		training_csv_put(buf, len, cap, js, strlen(js));
		free(js);
		json_decref(j);
		break;
	}
}

/* ----------------------------------------------------------- features */

/*
 * Parse "view:feature_window,view,..." into job->outs; err without
 * the "--features: " its callers put before it.
 */
static int
training_parse_features(struct training_job *job, const char *list,
    char *err, size_t errlen)
{
	const struct repo	*repo = job->repo;
	char			*copy = xstrdup(list), *tok, *save = NULL;
	size_t			 cap = 0;
	int			 rc = -1;

	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		const struct repo_view	*v;
		size_t			 f, w, nf, nw, f0, w0;

		while (*tok == ' ')
			tok++;
		for (size_t n = strlen(tok); n > 0 && tok[n - 1] == ' '; n--)
			tok[n - 1] = '\0';
		if (*tok == '\0')
			continue;
		if (strchr(tok, ':') != NULL) {
			if (repo_output_find(repo, tok, &v, &f, &w) != 0) {
				snprintf(err, errlen, "unknown feature %s", tok);
				goto fail;
			}
			f0 = f, w0 = w, nf = 1, nw = 1;
		} else {
			if ((v = repo_view_find(repo, tok)) == NULL) {
				snprintf(err, errlen, "unknown feature view "
				    "%s", tok);
				goto fail;
			}
			f0 = 0, w0 = 0, nf = v->nfeatures, nw = v->nwindows;
		}
		for (f = f0; f < f0 + nf; f++) {
			for (w = w0; w < w0 + nw; w++) {
				job->outs = xgrow(job->outs, &cap,
				    job->nouts + 1, sizeof *job->outs);
				job->outs[job->nouts].view =
				    (size_t)(v - repo->views);
				job->outs[job->nouts].feature = f;
				job->outs[job->nouts].window = w;
				job->outs[job->nouts].col = job->nouts;
				job->nouts++;
			}
		}
	}
	if (job->nouts == 0) {
		snprintf(err, errlen, "no feature given");
		goto fail;
	}
	/* Columns are read by name: one name, one column (as Feast). */
	for (size_t i = 1; i < job->nouts; i++)
		for (size_t j = 0; j < i; j++) {
			const struct training_out *a = &job->outs[i];
			const struct training_out *b = &job->outs[j];
			const struct repo_view *v = &repo->views[a->view];

			if (a->view != b->view || a->feature != b->feature ||
			    a->window != b->window)
				continue;
			snprintf(err, errlen, "%s is asked for "
			    "twice", v->outputs[a->feature * v->nwindows +
			    a->window]);
			goto fail;
		}
	rc = 0;
fail:
	free(copy);
	return rc;
}

/* -------------------------------------------------------------- spine */

static int
training_find_column(const struct csv_row *hdr, const char *name)
{
	for (size_t i = 0; i < hdr->n; i++)
		if (strcmp(csv_field(hdr, i), name) == 0)
			return (int)i;
	return -1;
}

/* An output's column name, view__feature_window (caller frees). */
static char *
training_out_column(const struct training_job *job,
    const struct training_out *out)
{
	const struct repo_view	*v = &job->repo->views[out->view];

	return xstrfmt("%s__%s", v->name, strchr(v->outputs[out->feature *
	    v->nwindows + out->window], ':') + 1);
}

/* Open the spine, read its header and check its columns. */
static FILE *
training_open_spine(struct training_job *job, const char *path,
    struct csv_row *hdr, int *tscol, char *err, size_t errlen)
{
	FILE	*f;
	char	 msg[256];
	int	 r;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	job->csv = csv_open(f);
	if ((r = csv_read(job->csv, hdr, msg, sizeof msg)) <= 0) {
		if (r == 0)
			snprintf(err, errlen, "%s: empty file (a header line "
			    "is needed)", path);
		else
			csv_format_error(job->csv, path, err, errlen);
		goto fail;
	}
	for (size_t i = 1; i < hdr->n; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(csv_field(hdr, i), csv_field(hdr, j)) == 0) {
				snprintf(err, errlen, "%s:1: column %s appears "
				    "twice", path, csv_field(hdr, i));
				goto fail;
			}
	if ((*tscol = training_find_column(hdr, TRAINING_TS_COLUMN)) < 0) {
		snprintf(err, errlen, "%s:1: missing column %s", path,
		    TRAINING_TS_COLUMN);
		goto fail;
	}
	for (size_t o = 0; o < job->nouts; o++) {
		const struct training_out *out = &job->outs[o];
		const struct repo_view *v = &job->repo->views[out->view];
		char *col = training_out_column(job, out);

		if (training_find_column(hdr, col) >= 0) {
			snprintf(err, errlen, "%s:1: column %s is also the name "
			    "of a requested feature's column", path, col);
			free(col);
			goto fail;
		}
		free(col);
		for (size_t k = 0; k < v->njoin_keys; k++) {
			if (training_find_column(hdr, v->join_keys[k]) >= 0)
				continue;
			snprintf(err, errlen, "%s:1: missing column %s (a join "
			    "key of view %s)", path, v->join_keys[k], v->name);
			goto fail;
		}
	}
	return f;
fail:
	csv_close(job->csv);
	job->csv = NULL;
	fclose(f);
	return NULL;
}

/*
 * Read up to max rows of the spine into job->rows (after the rowbase rows
 * already done).  Returns 0 (job->nrows < max: the end was reached), or
 * -1 with err.
 */
static int
training_read_rows(struct training_job *job, FILE *f, const char *path,
    const struct csv_row *hdr, int tscol, size_t max, char *err,
    size_t errlen)
{
	struct csv_row	 scratch, row;
	size_t		 cap = 0, tcap = 0;
	char		 msg[256];
	int		 r, rc = -1;

	memset(&scratch, 0, sizeof scratch);
	while (job->nrows < max) {
		const char	*tstext;
		size_t		 rowno;

		if ((r = csv_read(job->csv, &scratch, msg, sizeof msg)) <= 0) {
			if (r == 0)
				break;
			csv_format_error(job->csv, path, err, errlen);
			goto fail;
		}
		/* The chunk keeps an exact-size copy; scratch is reused. */
		row = scratch;
		row.buf = xmalloc(scratch.len);
		memcpy(row.buf, scratch.buf, scratch.len);
		row.cap = scratch.len;
		row.off = xcalloc(scratch.n + 1, sizeof *row.off);
		memcpy(row.off, scratch.off, (scratch.n + 1) * sizeof *row.off);
		row.offcap = scratch.n + 1;
		job->rows = xgrow(job->rows, &cap, job->nrows + 1,
		    sizeof *job->rows);
		job->rows[job->nrows++] = row;
		rowno = job->rowbase + job->nrows;
		job->ts = xgrow(job->ts, &tcap, job->nrows, sizeof *job->ts);
		tstext = csv_field(&row, (size_t)tscol);
		if (util_parse_timestamp_ms(tstext, &job->ts[job->nrows - 1])
		    != 0) {
			snprintf(err, errlen, "%s:%zu: row %zu, column %s: bad "
			    "timestamp \"%.64s\" (epoch milliseconds or "
			    "RFC 3339)", path, row.line, rowno,
			    TRAINING_TS_COLUMN, tstext);
			goto fail;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	rc = 0;
fail:
	csv_row_free(&scratch);
	return rc;
}

/* Free the rows of a chunk and their cells. */
static void
training_chunk_free(struct training_job *job)
{
	for (size_t i = 0; job->cells != NULL &&
	    i < job->nrows * job->nouts; i++)
		free(job->cells[i]);
	free(job->cells);
	job->cells = NULL;
	for (size_t r = 0; r < job->nrows; r++)
		csv_row_free(&job->rows[r]);
	free(job->rows);
	job->rows = NULL;
	free(job->ts);
	job->ts = NULL;
	job->rowbase += job->nrows;
	job->nrows = 0;
}

/* ---------------------------------------------------------------- join */

static int
training_ref_cmp(const void *a, const void *b)
{
	const struct training_ref	*x = a, *y = b;
	size_t				 n = x->keylen < y->keylen ?
					     x->keylen : y->keylen;
	int				 c = memcmp(x->key, y->key, n);

	if (c != 0)
		return c;
	if (x->keylen != y->keylen)
		return x->keylen < y->keylen ? -1 : 1;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return x->row < y->row ? -1 : x->row > y->row;
}

static struct training_group *
training_group_find(struct training_job *job, const char *key, size_t keylen)
{
	size_t	i = util_hash64(key, keylen, 0) & (job->tablesize - 1);

	for (; job->table[i] != 0; i = (i + 1) & (job->tablesize - 1)) {
		struct training_group *g = &job->groups[job->table[i] - 1];

		if (g->keylen == keylen && memcmp(g->key, key, keylen) == 0)
			return g;
	}
	return NULL;
}

/* The cells of row ref of the view being joined, from the replay now. */
static int
training_fill(struct training_job *job, const struct training_ref *ref)
{
	static const struct agg_value null_value = { .type = AGG_NULL };
	struct agg_value	 val;
	char			*buf = NULL;
	size_t			 len = 0, cap = 0;
	int64_t			 newest;
	int			 absent;

	/*
	 * What a lookup as of the row's time would serve: no event yet
	 * (NOT_FOUND) or the newest older than the view's TTL
	 * (OUTSIDE_MAX_AGE) is null in every column, as Feast's
	 * point-in-time join does, so a model never trains on values that
	 * serving would not give it.
	 */
	absent = replay_newest(job->replay, &newest) != 0 ||
	    (job->view->ttl_ms > 0 && ref->ts - newest > job->view->ttl_ms);
	for (size_t o = 0; o < job->nouts; o++) {
		const struct training_out *out = &job->outs[o];

		if (out->view != job->viewidx)
			continue;
		if (absent)
			val = null_value;
		else if (replay_value(job->replay, out->feature, out->window,
		    ref->ts, &val, job->err, job->errlen) != 0) {
			free(buf);
			return -1;
		}
		len = 0;
		training_csv_put_value(&buf, &len, &cap, &val);
		job->cells[ref->row * job->nouts + out->col] =
		    xstrndup(buf != NULL ? buf : "", len);
	}
	free(buf);
	return 0;
}

/* Fill the rest of the current key's rows: every event is in. */
static int
training_finish_group(struct training_job *job)
{
	struct training_group	*g = job->cur;

	if (g == NULL)
		return 0;
	for (; job->pos < g->first + g->n; job->pos++)
		if (training_fill(job, &job->refs[job->pos]) != 0)
			return -1;
	job->cur = NULL;
	return 0;
}

static int
training_on_event(void *arg, const struct offline_event *ev)
{
	struct training_job	*job = arg;
	struct training_group	*g = job->cur;
	char			 msg[256];

	if (g == NULL || g->keylen != ev->keylen ||
	    memcmp(g->key, ev->key, ev->keylen) != 0) {
		if (training_finish_group(job) != 0)
			return -1;
		if ((g = training_group_find(job, ev->key, ev->keylen)) ==
		    NULL)
			return 0;	/* a key the spine does not ask for */
		if (g->seen) {
			snprintf(job->err, job->errlen, "view %s: the offline "
			    "store returned the events of key %.*s apart",
			    job->view->name, (int)ev->keylen, ev->key);
			return -1;
		}
		g->seen = 1;
		job->cur = g;
		job->pos = g->first;
		replay_reset(job->replay);
	} else if (agg_event_cmp(ev->ts, ev->partition, ev->offset,
	    job->last.ts, job->last.partition, job->last.offset) <= 0) {
		/* Rows filled so far would have missed this event. */
		snprintf(job->err, job->errlen, "view %s: the offline store "
		    "returned the events of key %.*s out of time order",
		    job->view->name, (int)ev->keylen, ev->key);
		return -1;
	}
	job->last = *ev;
	/* Rows before this event see everything added so far. */
	for (; job->pos < g->first + g->n &&
	    job->refs[job->pos].ts < ev->ts; job->pos++)
		if (training_fill(job, &job->refs[job->pos]) != 0)
			return -1;
	if (job->pos == g->first + g->n)
		return 0;	/* later events concern no row */
	if (replay_add(job->replay, ev->ts, ev->partition, ev->offset,
	    ev->fields, msg, sizeof msg) != 0) {
		snprintf(job->err, job->errlen, "view %s key %.*s: offline "
		    "event %d/%lld: %s", job->view->name, (int)ev->keylen,
		    ev->key, ev->partition, (long long)ev->offset, msg);
		return -1;
	}
	return 0;
}

/* Join every row with view number vi. */
static int
training_join_view(struct training_job *job, const struct training_spec *spec,
    size_t vi, const struct csv_row *hdr, char *err, size_t errlen)
{
	const struct repo_view	 *v = &job->repo->views[vi];
	char			**keys = xcalloc(job->nrows ? job->nrows : 1,
				      sizeof *keys);
	const char		**scankeys = NULL;
	int			 *cols = xcalloc(v->njoin_keys, sizeof *cols);
	size_t			  nscan = 0, gcap = 0;
	int64_t			  max_ts = INT64_MIN;
	int			  rc = -1;

	job->view = v;
	job->viewidx = vi;
	job->err = err;
	job->errlen = errlen;
	job->cur = NULL;
	if ((job->replay = replay_new(v, err, errlen)) == NULL)
		goto out;
	for (size_t k = 0; k < v->njoin_keys; k++)
		cols[k] = training_find_column(hdr, v->join_keys[k]);
	job->refs = xcalloc(job->nrows ? job->nrows : 1, sizeof *job->refs);
	for (size_t r = 0; r < job->nrows; r++) {
		char	*key = NULL;
		size_t	 len = 0, cap = 0;

		for (size_t k = 0; k < v->njoin_keys; k++) {
			const char *s = csv_field(&job->rows[r],
			    (size_t)cols[k]);

			if (k > 0)
				buf_add(&key, &len, &cap, "|", 1);
			buf_add(&key, &len, &cap, s, strlen(s));
		}
		keys[r] = key != NULL ? key : xstrdup("");
		job->refs[r].key = keys[r];
		job->refs[r].keylen = len;
		job->refs[r].ts = job->ts[r];
		job->refs[r].row = r;
		if (job->ts[r] > max_ts)
			max_ts = job->ts[r];
	}
	qsort(job->refs, job->nrows, sizeof *job->refs, training_ref_cmp);

	/* Group by key, index the groups. */
	for (size_t r = 0; r < job->nrows; r++) {
		struct training_ref *ref = &job->refs[r];

		if (job->ngroups > 0 &&
		    job->groups[job->ngroups - 1].keylen == ref->keylen &&
		    memcmp(job->groups[job->ngroups - 1].key, ref->key,
		    ref->keylen) == 0) {
			job->groups[job->ngroups - 1].n++;
			continue;
		}
		job->groups = xgrow(job->groups, &gcap, job->ngroups + 1,
		    sizeof *job->groups);
		job->groups[job->ngroups++] = (struct training_group){
		    ref->key, ref->keylen, r, 1, 0 };
	}
	for (job->tablesize = 16; job->tablesize < 2 * job->ngroups;)
		job->tablesize *= 2;
	job->table = xcalloc(job->tablesize, sizeof *job->table);
	for (size_t gi = 0; gi < job->ngroups; gi++) {
		struct training_group	*g = &job->groups[gi];
		size_t			 i = util_hash64(g->key, g->keylen, 0) &
					     (job->tablesize - 1);

		while (job->table[i] != 0)
			i = (i + 1) & (job->tablesize - 1);
		job->table[i] = gi + 1;
	}

	if (job->ngroups <= TRAINING_MAX_SCAN_KEYS) {
		scankeys = xcalloc(job->ngroups ? job->ngroups : 1,
		    sizeof *scankeys);
		for (size_t gi = 0; gi < job->ngroups; gi++)
			scankeys[nscan++] = job->groups[gi].key;
	}
	if (job->nrows > 0 && spec->scan(spec->scan_arg, v, max_ts,
	    scankeys, nscan, training_on_event, job, err, errlen) != 0)
		goto out;
	if (training_finish_group(job) != 0)
		goto out;
	/* Keys without any event: values of empty windows. */
	replay_reset(job->replay);
	for (size_t gi = 0; gi < job->ngroups; gi++) {
		struct training_group *g = &job->groups[gi];

		if (g->seen)
			continue;
		for (size_t r = g->first; r < g->first + g->n; r++)
			if (training_fill(job, &job->refs[r]) != 0)
				goto out;
	}
	rc = 0;
out:
	replay_free(job->replay);
	job->replay = NULL;
	for (size_t r = 0; r < job->nrows; r++)
		free(keys[r]);
	free(keys);
	free(scankeys);
	free(cols);
	free(job->refs);
	job->refs = NULL;
	free(job->groups);
	job->groups = NULL;
	job->ngroups = 0;
	free(job->table);
	job->table = NULL;
	return rc;
}

/* -------------------------------------------------------------- output */

/* The output: a temporary file renamed at the end, or stdout. */
struct training_sink {
	FILE		*f;
	char		*tmp;		/* NULL for stdout */
	struct sha256	 sha;
	char		*line;
	size_t		 cap;
};

static int
training_sink_open(struct training_sink *o, const char *output, char *err,
    size_t errlen)
{
	int	fd;

	memset(o, 0, sizeof *o);
	sha256_init(&o->sha);
	o->f = stdout;
	if (output == NULL)
		return 0;
	xasprintf(&o->tmp, "%s.tmp.XXXXXX", output);
	if ((fd = mkstemp(o->tmp)) < 0 || (o->f = fdopen(fd, "w")) == NULL) {
		snprintf(err, errlen, "%s: %s", output, strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(o->tmp);
		}
		free(o->tmp);
		o->tmp = NULL;
		o->f = NULL;
		return -1;
	}
	return 0;
}

/* Write row (NULL: the header) with its cells (or the column names). */
static void
training_sink_row(struct training_sink *o, const struct training_job *job,
    const struct csv_row *row, char *const *cells)
{
	size_t	len = 0;

	for (size_t i = 0; i < row->n; i++) {
		const char *s = csv_field(row, i);

		if (i > 0)
			buf_add(&o->line, &len, &o->cap, ",", 1);
		training_csv_put(&o->line, &len, &o->cap, s, strlen(s));
	}
	for (size_t c = 0; c < job->nouts; c++) {
		char	*name;

		buf_add(&o->line, &len, &o->cap, ",", 1);
		if (cells != NULL) {
			buf_add(&o->line, &len, &o->cap, cells[c],
			    strlen(cells[c]));
			continue;
		}
		name = training_out_column(job, &job->outs[c]);
		training_csv_put(&o->line, &len, &o->cap, name, strlen(name));
		free(name);
	}
	buf_add(&o->line, &len, &o->cap, "\n", 1);
	sha256_update(&o->sha, o->line, len);
	fwrite(o->line, 1, len, o->f);	/* errors: ferror() at the end */
}

/*
 * Finish: flush, fsync and rename into place (ok), or remove the
 * temporary file (!ok).  Returns 0, or -1 with err.
 */
static int
training_sink_close(struct training_sink *o, const char *output, int ok,
    struct training_result *res, char *err, size_t errlen)
{
	int	rc = -1;

	if (o->f == NULL)
		goto out;
	if (ok && (fflush(o->f) != 0 || ferror(o->f) ||
	    (o->tmp != NULL && fsync(fileno(o->f)) != 0))) {
		snprintf(err, errlen, "%s: %s", output != NULL ? output :
		    "stdout", strerror(errno));
		ok = 0;
	}
	if (o->tmp != NULL) {
		if (fclose(o->f) != 0 && ok) {
			snprintf(err, errlen, "%s: %s", output,
			    strerror(errno));
			ok = 0;
		}
		if (ok && rename(o->tmp, output) != 0) {
			snprintf(err, errlen, "%s: %s", output,
			    strerror(errno));
			ok = 0;
		}
		if (!ok)
			unlink(o->tmp);
	}
	if (ok) {
		sha256_final_hex(&o->sha, res->sha256);
		rc = 0;
	}
out:
	free(o->tmp);
	free(o->line);
	memset(o, 0, sizeof *o);
	return rc;
}

int
training_scan_offline(void *offline, const struct repo_view *view,
    int64_t max_ts, const char *const *keys, size_t nkeys,
    offline_event_fn fn, void *arg, char *err, size_t errlen)
{
	return offline_scan_view(offline, view, max_ts, keys, nkeys, fn, arg,
	    err, errlen);
}

int
training_check_features(const struct repo *repo, const char *list,
    char *err, size_t errlen)
{
	struct training_job	job;
	int			rc;

	memset(&job, 0, sizeof job);
	job.repo = repo;
	rc = training_parse_features(&job, list, err, errlen);
	free(job.outs);
	return rc;
}

int
training_build(const struct repo *repo, const struct training_spec *spec,
    struct training_result *res, char *err, size_t errlen)
{
	struct training_job	 job;
	struct csv_row		 hdr;
	struct training_sink	 sink;
	FILE			*spine = NULL;
	size_t			 chunk = spec->chunk_rows > 0 ?
				     spec->chunk_rows : TRAINING_CHUNK_ROWS;
	int			 tscol = -1, rc = -1, opened = 0;
	char			*names = NULL;
	size_t			 nlen = 0, ncap = 0;

	memset(&job, 0, sizeof job);
	memset(&hdr, 0, sizeof hdr);
	memset(res, 0, sizeof *res);
	job.repo = repo;
	if (training_parse_features(&job, spec->features, err, errlen) != 0) {
		char why[256];

		snprintf(why, sizeof why, "%s", err);
		snprintf(err, errlen, "--features: %s", why);
		goto out;
	}
	if ((spine = training_open_spine(&job, spec->spine, &hdr, &tscol, err,
	    errlen)) == NULL)
		goto out;
	/* Rows before the output: a bad first chunk writes nothing at all. */
	if (training_read_rows(&job, spine, spec->spine, &hdr, tscol, chunk,
	    err, errlen) != 0)
		goto out;
	if (training_sink_open(&sink, spec->output, err, errlen) != 0)
		goto out;
	opened = 1;
	training_sink_row(&sink, &job, &hdr, NULL);
	for (;;) {
		size_t	got = job.nrows;

		job.cells = xcalloc(job.nrows * job.nouts + 1,
		    sizeof *job.cells);
		for (size_t o = 0; o < job.nouts && job.nrows > 0; o++) {
			size_t vi = job.outs[o].view, p;

			for (p = 0; p < o && job.outs[p].view != vi; p++)
				;
			if (p < o)
				continue;	/* view joined already */
			if (training_join_view(&job, spec, vi, &hdr, err,
			    errlen) != 0)
				goto out;
		}
		for (size_t r = 0; r < job.nrows; r++)
			training_sink_row(&sink, &job, &job.rows[r],
			    job.cells + r * job.nouts);
		training_chunk_free(&job);
		if (got < chunk)
			break;
		/* A spine larger than a chunk: the next one, its own scans. */
		if (training_read_rows(&job, spine, spec->spine, &hdr, tscol,
		    chunk, err, errlen) != 0)
			goto out;
	}
	opened = 0;
	if (training_sink_close(&sink, spec->output, 1, res, err, errlen) != 0)
		goto out;
	for (size_t o = 0; o < job.nouts; o++) {
		const struct repo_view	*v = &repo->views[job.outs[o].view];
		const char		*name = v->outputs[job.outs[o].feature *
					    v->nwindows + job.outs[o].window];

		if (o > 0)
			buf_add(&names, &nlen, &ncap, ",", 1);
		buf_add(&names, &nlen, &ncap, name, strlen(name));
	}
	res->features = names;
	res->rows = job.rowbase;
	rc = 0;
out:
	if (opened)
		training_sink_close(&sink, spec->output, 0, res, err, errlen);
	csv_close(job.csv);
	if (spine != NULL)
		fclose(spine);
	training_chunk_free(&job);
	free(job.outs);
	csv_row_free(&hdr);
	return rc;
}

/* ------------------------------------------------------ pipeline step */

static const char *
training_ctx_str(json_t *ctx, const char *key)
{
	json_t	*v = json_object_get(ctx, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

int
training_step(json_t *ctx, FILE *outputs)
{
	json_t			*with = json_object_get(ctx, "with");
	json_t			*jf = json_object_get(with, "features");
	const char		*cfgpath = training_ctx_str(ctx, "config");
	const char		*repodir = training_ctx_str(ctx, "repo");
	const char		*spine = training_ctx_str(with, "spine");
	const char		*output = training_ctx_str(with, "output");
	struct training_spec	 spec = { 0 };
	struct training_result	 res;
	struct config		*cfg = NULL;
	struct repo		*repo = NULL;
	struct offline		*off = NULL;
	char			*err = xmalloc(REPO_ERRLEN);
	char			*features = NULL, *spinepath = NULL;
	char			*outpath = NULL, *cwd = NULL;
	size_t			 flen = 0, fcap = 0;
	int			 rc = 1;

	memset(&res, 0, sizeof res);
	if (json_is_string(jf))
		features = xstrdup(json_string_value(jf));
	else if (json_is_array(jf)) {
		size_t	 i;
		json_t	*x;

		json_array_foreach(jf, i, x) {
			if (!json_is_string(x))
				continue;
			if (flen > 0)
				buf_add(&features, &flen, &fcap, ",", 1);
			buf_add(&features, &flen, &fcap, json_string_value(x),
			    strlen(json_string_value(x)));
		}
	}
	if (spine == NULL || features == NULL) {
		fprintf(stderr, "training-set: with.spine (a path) and "
		    "with.features (a list or a comma separated string) are "
		    "required\n");
		goto out;
	}
	/*
	 * The daemon's config; without one (`mlopsd dev`), the defaults over
	 * the context's data_dir: the embedded SQLite offline store there.
	 */
	if (cfgpath != NULL && cfgpath[0] != '\0')
		cfg = config_load(cfgpath, err, REPO_ERRLEN);
	else if ((cfg = config_defaults(err, REPO_ERRLEN)) != NULL &&
	    training_ctx_str(ctx, "data_dir") != NULL) {
		free(cfg->data_dir);
		cfg->data_dir = xstrdup(training_ctx_str(ctx, "data_dir"));
	}
	if (cfg == NULL) {
		fprintf(stderr, "training-set: %s\n", err);
		goto out;
	}
	if (repodir == NULL)
		repodir = cfg->repo;
	if ((repo = repo_load(repodir, err, REPO_ERRLEN)) == NULL) {
		fprintf(stderr, "training-set: %s\n", err);
		goto out;
	}
	spinepath = spine[0] == '/' ? xstrdup(spine) :
	    xstrfmt("%s/%s", repodir, spine);
	if ((cwd = getcwd(NULL, 0)) == NULL) {
		fprintf(stderr, "training-set: getcwd: %s\n", strerror(errno));
		goto out;
	}
	if (output == NULL)
		output = "training_set.csv";
	outpath = output[0] == '/' ? xstrdup(output) :
	    xstrfmt("%s/%s", cwd, output);
	if ((off = offline_open(cfg, repo, NULL, err, REPO_ERRLEN)) == NULL) {
		fprintf(stderr, "training-set: %s\n", err);
		goto out;
	}
	spec.spine = spinepath;
	spec.output = outpath;
	spec.features = features;
	spec.scan = training_scan_offline;
	spec.scan_arg = off;
	if (training_build(repo, &spec, &res, err, REPO_ERRLEN) != 0) {
		fprintf(stderr, "training-set: %s\n", err);
		goto out;
	}
	fprintf(stderr, "training-set: %zu rows, features %s -> %s (sha256 "
	    "%s)\n", res.rows, res.features, outpath, res.sha256);
	fprintf(outputs, "path=%s\nrows=%zu\nsha256=%s\nfeatures=%s\n",
	    outpath, res.rows, res.sha256, res.features);
	rc = fflush(outputs) == 0 ? 0 : 1;
out:
	offline_close(off);
	repo_free(repo);
	config_free(cfg);
	free(res.features);
	free(features);
	free(spinepath);
	free(outpath);
	free(cwd);
	free(err);
	return rc;
}
