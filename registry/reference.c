/*
 * reference: the reference distributions that are stored with a model
 * version, so drift detection (SPEC §8) can compare live features with
 * what the model was trained on.  Built from the training-set CSV in one
 * streaming pass (RFC 4180 quoting, a header row):
 *
 * - a numeric column (every non-empty cell a finite number) keeps its
 *   values, then gets n, nulls, min, max, mean, std (population) and a
 *   histogram whose edges are quantiles, so each bin holds about the same
 *   share of the training rows; that is what PSI and chi-square compare
 *   best, and KS/Wasserstein can use the edges as a quantile sketch;
 * - any other column is categorical: the counts of its 100 most frequent
 *   values and the count of all the others.
 *
 * Memory is one double per numeric cell and one entry per distinct
 * categorical value.
 */
#include "registry/registry.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/csv.h"
#include "common/xmalloc.h"

#define REF_TOP_VALUES	100
#define REF_MAX_BINS	1000

struct ref_col {
	const char	*name;		/* borrowed from the header */
	int		 numeric;	/* still numeric so far */
	double		*vals;
	size_t		 nvals, capvals;
	json_t		*counts;	/* categorical: value -> count */
	int64_t		 nulls;
};

static int
ref_is_null(const char *s)
{
	return s[0] == '\0' || strcmp(s, "null") == 0 ||
	    strcmp(s, "NULL") == 0 || strcmp(s, "NA") == 0;
}

/* A finite number filling the whole cell? */
static int
ref_parse_number(const char *s, double *out)
{
	char	*end;
	double	 d;

	errno = 0;
	d = strtod(s, &end);
	if (end == s || *end != '\0' || errno == ERANGE || !isfinite(d))
		return 0;
	*out = d;
	return 1;
}

static void
ref_count(struct ref_col *c, const char *v)
{
	json_t	*n = json_object_get(c->counts, v);

	if (n != NULL)
		json_integer_set(n, json_integer_value(n) + 1);
	else
		json_object_set_new(c->counts, v, json_integer(1));
}

/* The first non-numeric cell: the numbers seen so far become categories. */
static void
ref_make_categorical(struct ref_col *c)
{
	char	buf[64];
	size_t	i;

	c->numeric = 0;
	for (i = 0; i < c->nvals; i++) {
		snprintf(buf, sizeof buf, "%.17g", c->vals[i]);
		ref_count(c, buf);
	}
	free(c->vals);
	c->vals = NULL;
	c->nvals = c->capvals = 0;
}

static void
ref_add(struct ref_col *c, const char *v)
{
	double	d;

	if (ref_is_null(v)) {
		c->nulls++;
		return;
	}
	if (c->numeric) {
		if (ref_parse_number(v, &d)) {
			c->vals = xgrow(c->vals, &c->capvals, c->nvals + 1,
			    sizeof *c->vals);
			c->vals[c->nvals++] = d;
			return;
		}
		ref_make_categorical(c);
	}
	ref_count(c, v);
}

static int
ref_cmp_double(const void *a, const void *b)
{
	double	x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static json_t *
ref_numeric(struct ref_col *c, int bins)
{
	double	*v = c->vals, sum = 0, sq = 0, mean, e;
	size_t	 n = c->nvals, i, k, nedges = 0, b;
	json_t	*edges, *counts;
	double	*ed;
	int64_t	*cnt;

	qsort(v, n, sizeof *v, ref_cmp_double);
	for (i = 0; i < n; i++)
		sum += v[i];
	mean = n > 0 ? sum / (double)n : 0;
	for (i = 0; i < n; i++)
		sq += (v[i] - mean) * (v[i] - mean);

	/* Quantile edges, equal ones merged (ties, few distinct values). */
	ed = xcalloc((size_t)bins + 1, sizeof *ed);
	for (k = 0; n > 0 && k <= (size_t)bins; k++) {
		e = v[(size_t)((double)k * (double)(n - 1) / bins + 0.5)];
		if (nedges == 0 || e > ed[nedges - 1])
			ed[nedges++] = e;
	}
	if (nedges == 1)	/* one value: a single bin [v, v] */
		ed[nedges++] = ed[0];
	cnt = xcalloc(nedges > 1 ? nedges - 1 : 1, sizeof *cnt);
	/* Bins are [e_i, e_i+1), the last one closed; v is sorted. */
	for (i = 0, b = 0; n > 0 && i < n; i++) {
		while (b + 2 < nedges && v[i] >= ed[b + 1])
			b++;
		cnt[b]++;
	}
	edges = json_array();
	counts = json_array();
	for (k = 0; k < nedges; k++)
		json_array_append_new(edges, json_real(ed[k]));
	for (k = 0; n > 0 && k + 1 < nedges; k++)
		json_array_append_new(counts, json_integer(cnt[k]));
	free(ed);
	free(cnt);
	return json_pack("{s:s, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o}",
	    "type", "numeric",
	    "n", (json_int_t)n,
	    "nulls", (json_int_t)c->nulls,
	    "min", n > 0 ? json_real(v[0]) : json_null(),
	    "max", n > 0 ? json_real(v[n - 1]) : json_null(),
	    "mean", n > 0 ? json_real(mean) : json_null(),
	    "std", n > 0 ? json_real(sqrt(sq / (double)n)) : json_null(),
	    "edges", edges,
	    "counts", counts);
}

struct ref_kv {
	const char	*key;
	int64_t		 n;
};

static int
ref_cmp_kv(const void *a, const void *b)
{
	const struct ref_kv	*x = a, *y = b;

	if (x->n != y->n)
		return x->n > y->n ? -1 : 1;
	return strcmp(x->key, y->key);
}

static json_t *
ref_categorical(struct ref_col *c)
{
	struct ref_kv	*kv;
	const char	*key;
	json_t		*val, *values = json_object();
	size_t		 n = json_object_size(c->counts), i = 0;
	int64_t		 total = 0, other = 0;

	kv = xcalloc(n > 0 ? n : 1, sizeof *kv);
	json_object_foreach(c->counts, key, val) {
		kv[i].key = key;
		kv[i].n = json_integer_value(val);
		total += kv[i].n;
		i++;
	}
	qsort(kv, n, sizeof *kv, ref_cmp_kv);
	for (i = 0; i < n; i++) {
		if (i < REF_TOP_VALUES)
			json_object_set_new(values, kv[i].key,
			    json_integer(kv[i].n));
		else
			other += kv[i].n;
	}
	free(kv);
	return json_pack("{s:s, s:I, s:I, s:I, s:o, s:I}",
	    "type", "categorical",
	    "n", (json_int_t)total,
	    "nulls", (json_int_t)c->nulls,
	    "distinct", (json_int_t)n,
	    "values", values,
	    "other", (json_int_t)other);
}

json_t *
registry_reference_from_csv(const char *csv_path, json_t *features,
    const char *label, int bins, char *err, size_t errlen)
{
	FILE			*f;
	struct csv_reader	*r;
	struct csv_row		 hdr, row;
	struct ref_col		*cols = NULL;
	size_t			 nhdr = 0, ncols = 0, i, k;
	size_t			*idx = NULL;	/* cols[k] is header column idx[k] */
	json_t			*out = NULL, *fo, *name;
	int64_t			 nrows = 0;
	char			 msg[256];
	int			 n;

	if (bins <= 0)
		bins = 10;
	if (bins > REF_MAX_BINS)
		bins = REF_MAX_BINS;
	if (features != NULL && !json_is_array(features)) {
		snprintf(err, errlen, "features must be an array of column "
		    "names");
		return NULL;
	}
	if ((f = fopen(csv_path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", csv_path, strerror(errno));
		return NULL;
	}
	memset(&hdr, 0, sizeof hdr);
	memset(&row, 0, sizeof row);
	r = csv_open(f);
	if ((n = csv_read(r, &hdr, msg, sizeof msg)) <= 0) {
		if (n == 0)
			snprintf(err, errlen, "%s:1: empty file (a header row "
			    "is needed)", csv_path);
		else
			csv_format_error(r, csv_path, err, errlen);
		goto out;
	}
	nhdr = hdr.n;
	/* Choose the columns. */
	if (features != NULL) {
		cols = xcalloc(json_array_size(features) + 1, sizeof *cols);
		idx = xcalloc(json_array_size(features) + 1, sizeof *idx);
		json_array_foreach(features, k, name) {
			if (!json_is_string(name)) {
				snprintf(err, errlen, "features[%zu] must be a "
				    "column name", k);
				goto out;
			}
			for (i = 0; i < nhdr; i++)
				if (strcmp(csv_field(&hdr, i),
				    json_string_value(name)) == 0)
					break;
			if (i == nhdr) {
				snprintf(err, errlen, "%s:1: no column \"%s\" "
				    "in the header", csv_path,
				    json_string_value(name));
				goto out;
			}
			idx[ncols] = i;
			cols[ncols++].name = csv_field(&hdr, i);
		}
	} else {
		cols = xcalloc(nhdr, sizeof *cols);
		idx = xcalloc(nhdr, sizeof *idx);
		for (i = 0; i < nhdr; i++) {
			if (label != NULL &&
			    strcmp(csv_field(&hdr, i), label) == 0)
				continue;
			idx[ncols] = i;
			cols[ncols++].name = csv_field(&hdr, i);
		}
	}
	for (k = 0; k < ncols; k++) {
		cols[k].numeric = 1;
		cols[k].counts = json_object();
	}

	while ((n = csv_read(r, &row, msg, sizeof msg)) > 0) {
		for (k = 0; k < ncols; k++)
			ref_add(&cols[k], csv_field(&row, idx[k]));
		nrows++;
	}
	if (n < 0) {
		csv_format_error(r, csv_path, err, errlen);
		goto out;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", csv_path, strerror(errno));
		goto out;
	}

	fo = json_object();
	for (k = 0; k < ncols; k++)
		json_object_set_new(fo, cols[k].name, cols[k].numeric &&
		    cols[k].nvals > 0 ? ref_numeric(&cols[k], bins) :
		    ref_categorical(&cols[k]));
	out = json_pack("{s:I, s:i, s:o}", "rows", (json_int_t)nrows,
	    "bins", bins, "features", fo);
out:
	csv_close(r);
	fclose(f);
	for (k = 0; k < ncols; k++) {
		free(cols[k].vals);
		json_decref(cols[k].counts);
	}
	free(cols);
	free(idx);
	csv_row_free(&hdr);
	csv_row_free(&row);
	return out;
}
