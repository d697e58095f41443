/*
 * online: wires the feature repo, the online store, ingest and the lookup
 * API into the daemon (for `serve` and `dev`), and swaps them on reload.
 *
 * A reload (SIGHUP) loads the repo again; an invalid repo is refused and
 * the running one kept.  A changed repo stops ingest at a checkpoint,
 * opens the store over the new repo (views whose definition changed are
 * rebuilt from their topic), swaps it under the lookup API and starts
 * ingest again.  Lookups go on throughout, from the old store until the
 * swap.
 */
#include "cmd/online.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/daemon.h"
#include "common/config.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "features/api.h"
#include "features/features.h"
#include "features/store.h"
#include "ingest/ingest.h"
#include "offline/offline.h"
#include "offline/training.h"

#define ONLINE_SHARDS	8
/* Of the 10 s stop budget: shipping the outbox's tail to the offline store. */
#define ONLINE_OFFLINE_STOP_MS	2000

struct online {
	struct daemon		*d;
	const struct config	*cfg;
	struct metrics		*m;
	char			*dbpath;
	struct repo		*repo;
	struct store		*store;
	struct offline		*offline;	/* NULL: could not be opened */
	/*
	 * ingest: replaced by a reload on the main thread while /readyz
	 * asks it on HTTP threads; ilock guards the pointer, and is held
	 * while readiness is asked so the reload cannot free it meanwhile.
	 * NULL while a reload swaps it, or when it could not be restarted.
	 */
	pthread_mutex_t		 ilock;
	struct ingest		*ingest;
	struct feature_api	*api;
	struct ingest_options	 opt;
	struct verify_periodic	*verify;	/* background verify, or NULL */
};

static int
online_ready(void *arg, char *why, size_t whylen)
{
	struct online	*o = arg;
	int		 ready = 0;

	pthread_mutex_lock(&o->ilock);
	if (o->ingest != NULL)
		ready = ingest_ready(o->ingest, why, whylen);
	else
		snprintf(why, whylen, "ingest is not running (feature repo "
		    "reload)");
	pthread_mutex_unlock(&o->ilock);
	return ready;
}

/* Swap the ingest pointer under ilock; returns the old one. */
static struct ingest *
online_set_ingest(struct online *o, struct ingest *in)
{
	struct ingest	*old;

	pthread_mutex_lock(&o->ilock);
	old = o->ingest;
	o->ingest = in;
	pthread_mutex_unlock(&o->ilock);
	return old;
}

static void
online_stop(void *arg)
{
	struct online	*o = arg;

	ingest_stop(o->ingest);
	offline_stop(o->offline, ONLINE_OFFLINE_STOP_MS);
}

/* Open the offline store over o->repo and ship o->store's outbox. */
static int
online_offline_start(struct online *o, char *err, size_t errlen)
{
	o->offline = offline_open(o->cfg, o->repo, o->m, err, errlen);
	if (o->offline == NULL)
		return -1;
	if (offline_start(o->offline, o->store, err, errlen) != 0) {
		offline_close(o->offline);
		o->offline = NULL;
		return -1;
	}
	return 0;
}

static int
online_reload(void *arg, char *err, size_t errlen)
{
	struct online	*o = arg;
	struct repo	*repo;
	struct store	*store;
	struct ingest	*in;
	char		 ierr[512];
	int		 rc = 0;

	if ((repo = repo_load(o->cfg->repo, err, errlen)) == NULL)
		return -1;
	if (repo->hash == o->repo->hash) {
		repo_free(repo);
		log_info("online", "feature repo unchanged (%s)",
		    o->repo->hash_hex);
		return 0;
	}
	/* Stop at a checkpoint so the new store opens on a settled database. */
	ingest_free(online_set_ingest(o, NULL));
	offline_stop(o->offline, ONLINE_OFFLINE_STOP_MS);
	offline_close(o->offline);
	o->offline = NULL;
	store = store_open(repo, o->dbpath, ONLINE_SHARDS, o->m, err, errlen);
	if (store == NULL) {
		/* Keep the running repo and store; ingest restarts on them. */
		repo_free(repo);
		rc = -1;
	} else {
		store_close(feature_api_swap(o->api, store));
		repo_free(o->repo);
		o->repo = repo;
		o->store = store;
		log_info("online", "feature repo %s loaded: %zu views",
		    repo->hash_hex, repo->nviews);
	}
	if (online_offline_start(o, ierr, sizeof ierr) != 0)
		log_error("online", "offline store: %s; accepted events wait "
		    "in the outbox", ierr);
	in = ingest_new(o->cfg, o->store, o->m, &o->opt, ierr, sizeof ierr);
	if (in == NULL || ingest_start(in, ierr, sizeof ierr) != 0) {
		log_error("online", "ingest: %s", ierr);
		if (rc == 0)
			snprintf(err, errlen, "ingest: %s", ierr);
		rc = -1;
	}
	online_set_ingest(o, in);
	return rc;
}

struct online *
online_new(struct daemon *d, const struct ingest_options *opt, char *err,
    size_t errlen)
{
	struct online		*o = xcalloc(1, sizeof *o);
	const struct http_route	*routes;
	size_t			 n;
	struct stat		 sb;

	err[0] = '\0';
	pthread_mutex_init(&o->ilock, NULL);
	o->d = d;
	o->cfg = daemon_config(d);
	o->m = daemon_metrics(d);
	if (opt != NULL)
		o->opt = *opt;
	if (stat(o->cfg->repo, &sb) != 0) {
		log_warn("online", "no feature repo at %s (%s): serving "
		    "without features", o->cfg->repo, strerror(errno));
		pthread_mutex_destroy(&o->ilock);
		free(o);
		return NULL;
	}
	if ((o->repo = repo_load(o->cfg->repo, err, errlen)) == NULL)
		goto fail;
	o->dbpath = xstrfmt("%s/online.db", o->cfg->data_dir);
	o->store = store_open(o->repo, o->dbpath, ONLINE_SHARDS, o->m, err,
	    errlen);
	if (o->store == NULL)
		goto fail;
	o->ingest = ingest_new(o->cfg, o->store, o->m, &o->opt, err, errlen);
	if (o->ingest == NULL)
		goto fail;
	o->api = feature_api_new(o->store, o->cfg->http.max_entities);
	routes = feature_api_routes(o->api, &n);
	daemon_add_routes(d, routes, n);
	daemon_on_ready(d, online_ready, o);
	daemon_on_stop(d, online_stop, o);
	daemon_on_reload(d, online_reload, o);
	if (online_offline_start(o, err, errlen) != 0 ||
	    ingest_start(o->ingest, err, errlen) != 0)
		goto fail;
	log_info("online", "feature repo %s (%s): %zu views, %zu sources",
	    o->cfg->repo, o->repo->hash_hex, o->repo->nviews,
	    o->repo->nsources);
	o->verify = verify_periodic_start(o->cfg, o->m);
	return o;
fail:
	online_free(o);
	return NULL;
}

void
online_free(struct online *o)
{
	if (o == NULL)
		return;
	verify_periodic_stop(o->verify);
	ingest_free(o->ingest);
	offline_close(o->offline);
	feature_api_free(o->api);
	/* Only the exit paths of serve and dev free an online. */
	store_close_at_exit(o->store);
	repo_free(o->repo);
	free(o->dbpath);
	pthread_mutex_destroy(&o->ilock);
	free(o);
}
