/*
 * replay: the aggregation engine seen from outside the features module.
 * Offline consumers (the training-set generator and verify, in offline/)
 * rebuild an entity's feature values from its stored events with the very
 * code the online store runs, so both agree value for value (SPEC §3).
 *
 * A replay compiles one view (the plan of agg.c over its source's field
 * vector, laid out exactly as the online store lays it out, so that a
 * state written by the store decodes here), and holds one entity state at
 * a time: reset, add events in (ts, partition, offset) order, and read
 * values as of any t not before the last event added.  It does no I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"
#include "features/agg-internal.h"
#include "features/features.h"

struct replay {
	const struct repo_view	*view;
	struct agg_plan		*plan;
	struct agg_state	*st;
	struct agg_scratch	*sc;
};

struct agg_plan *
agg_plan_for_view(const struct repo_view *v, char *err, size_t errlen)
{
	const struct repo_source	 *src = v->source;
	struct agg_window_spec		 *ws;
	struct agg_feature_spec		 *fs;
	const char			**names;
	struct agg_plan			 *plan = NULL;

	ws = xcalloc(v->nwindows ? v->nwindows : 1, sizeof *ws);
	fs = xcalloc(v->nfeatures ? v->nfeatures : 1, sizeof *fs);
	names = xcalloc(src->nfields ? src->nfields : 1, sizeof *names);
	for (size_t i = 0; i < src->nfields; i++)
		names[i] = src->fields[i].name;
	for (size_t i = 0; i < v->nwindows; i++) {
		ws[i].size_ms = v->windows[i].size_ms;
		ws[i].hop_ms = v->windows[i].hop_ms;
	}
	for (size_t i = 0; i < v->nfeatures; i++) {
		const struct repo_feature *f = &v->features[i];

		fs[i].kind = (enum agg_kind)f->agg;
		fs[i].n = (uint32_t)f->n;
		fs[i].field = AGG_NO_FIELD;
		if (f->field == NULL)
			continue;
		for (size_t j = 0; j < src->nfields; j++)
			if (strcmp(src->fields[j].name, f->field) == 0)
				fs[i].field = (int)j;
		if (fs[i].field == AGG_NO_FIELD) {
			snprintf(err, errlen, "view %s: field %s not read "
			    "from source %s", v->name, f->field, src->name);
			goto out;
		}
	}
	plan = agg_plan_new(ws, v->nwindows, fs, v->nfeatures, names,
	    src->nfields, err, errlen);
out:
	free(ws);
	free(fs);
	free(names);
	return plan;
}

struct replay *
replay_new(const struct repo_view *view, char *err, size_t errlen)
{
	struct replay	*r;
	struct agg_plan	*plan;

	if ((plan = agg_plan_for_view(view, err, errlen)) == NULL)
		return NULL;
	r = xcalloc(1, sizeof *r);
	r->view = view;
	r->plan = plan;
	r->st = agg_state_new(plan);
	r->sc = agg_scratch_new();
	return r;
}

void
replay_free(struct replay *r)
{
	if (r == NULL)
		return;
	agg_state_free(r->plan, r->st);
	agg_scratch_free(r->sc);
	agg_plan_free(r->plan);
	free(r);
}

void
replay_reset(struct replay *r)
{
	/* A fresh state: cheap next to the events that will fill it. */
	agg_state_free(r->plan, r->st);
	r->st = agg_state_new(r->plan);
}

int
replay_add(struct replay *r, int64_t ts, int32_t partition, int64_t offset,
    const struct agg_value *fields, char *err, size_t errlen)
{
	int	rc;

	rc = agg_state_add(r->plan, r->st, ts, partition, offset, fields,
	    err, errlen);
	if (rc < 0)
		return -1;
	/*
	 * In (ts, partition, offset) order nothing is ever too old; should a
	 * caller add out of order, such an event is in no window it may ask
	 * for, exactly as online.
	 */
	return 0;
}

int
replay_newest(const struct replay *r, int64_t *ts)
{
	int64_t	off;
	int32_t	part;

	return agg_state_newest(r->st, ts, &part, &off);
}

int
replay_value(struct replay *r, size_t feature, size_t window,
    int64_t as_of_ms, struct agg_value *out, char *err, size_t errlen)
{
	if (feature >= r->view->nfeatures || window >= r->view->nwindows) {
		snprintf(err, errlen, "view %s: no feature %zu window %zu",
		    r->view->name, feature, window);
		return -1;
	}
	return agg_result(r->plan, r->st, feature, window, as_of_ms, out,
	    r->sc, err, errlen);
}

int
replay_load(struct replay *r, const void *data, size_t len, char *err,
    size_t errlen)
{
	struct agg_state	*st;

	if ((st = agg_state_decode(r->plan, data, len, err, errlen)) == NULL)
		return -1;
	agg_state_free(r->plan, r->st);
	r->st = st;
	return 0;
}
