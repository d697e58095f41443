/*
 * pg: the Postgres offline backend (offline.postgres set).
 */
#include <stdio.h>

#include "offline/offline-internal.h"

static void *
pg_open(const struct config *cfg, const struct repo *repo, char *err,
    size_t errlen)
{
	(void)cfg;
	(void)repo;
	snprintf(err, errlen, "the Postgres offline backend is not built yet");
	return NULL;
}

static void
pg_close(void *b)
{
	(void)b;
}

static int
pg_shipped(void *b, int64_t *seq, char *err, size_t errlen)
{
	(void)b;
	(void)seq;
	snprintf(err, errlen, "not built yet");
	return -1;
}

static int64_t
pg_ship(void *b, const struct store_outbox *rows, size_t n, char *err,
    size_t errlen)
{
	(void)b;
	(void)rows;
	(void)n;
	snprintf(err, errlen, "not built yet");
	return -1;
}

static int
pg_scan(void *b, const struct repo_view *view, int64_t max_ts,
    const char *const *keys, size_t nkeys, offline_event_fn fn, void *arg,
    char *err, size_t errlen)
{
	(void)b; (void)view; (void)max_ts; (void)keys; (void)nkeys;
	(void)fn; (void)arg;
	snprintf(err, errlen, "not built yet");
	return -1;
}

const struct offline_backend_ops offline_pg_ops = {
	.name = "postgres",
	.open = pg_open,
	.close = pg_close,
	.shipped = pg_shipped,
	.ship = pg_ship,
	.scan = pg_scan,
};
