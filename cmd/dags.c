/*
 * dags: wires the pipeline engine into the daemon (for `serve` and `dev`):
 * the DAG files of the configured repo, the engine with its run history in
 * the data dir, its HTTP routes, and a SIGHUP reload that swaps in the new
 * DAG files only when all of them validate.
 */
#include "cmd/dags.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/daemon.h"
#include "common/config.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "pipeline/pipeline.h"

struct dags {
	struct dag_engine	*e;
	char			*repo;
};

static int
dags_reload(void *arg, char *err, size_t errlen)
{
	struct dags	*dg = arg;
	struct dag_set	*set;

	if ((set = dag_set_load(dg->repo, NULL, err, errlen)) == NULL)
		return -1;
	dag_engine_reload(dg->e, set);
	return 0;
}

void
dags_on_listen(void *arg, const char *addr)
{
	struct dags	*dg = arg;
	char		*url;

	if (strncmp(addr, "0.0.0.0:", 8) == 0)
		url = xstrfmt("http://127.0.0.1:%s", addr + 8);
	else if (strncmp(addr, "[::]:", 5) == 0)
		url = xstrfmt("http://[::1]:%s", addr + 5);
	else
		url = xstrfmt("http://%s", addr);
	dag_engine_set_url(dg->e, url);
	free(url);
}

struct dags *
dags_new(struct daemon *d, char *err, size_t errlen)
{
	const struct config		*cfg = daemon_config(d);
	struct dag_engine_config	 ec;
	const struct http_route		*routes;
	struct dag_set			*set;
	struct dags			*dg;
	char				 repo[PATH_MAX], conf[PATH_MAX],
					 data[PATH_MAX], *url;
	size_t				 n;

	if (realpath(cfg->repo, repo) == NULL)
		snprintf(repo, sizeof repo, "%s", cfg->repo);
	if ((set = dag_set_load(repo, NULL, err, errlen)) == NULL)
		return NULL;
	memset(&ec, 0, sizeof ec);
	/* Absolute: steps see it from their run's directory. */
	(void)mkdir(cfg->data_dir, 0755);
	if (realpath(cfg->data_dir, data) == NULL)
		snprintf(data, sizeof data, "%s", cfg->data_dir);
	ec.data_dir = data;
	ec.repo = repo;
	if (cfg->path != NULL && realpath(cfg->path, conf) != NULL)
		ec.config_path = conf;
	url = xstrfmt("http://%s", cfg->http.listen);
	ec.url = url;
	ec.exe = "/proc/self/exe";
	ec.max_parallel = cfg->pipeline.max_parallel;
	ec.kill_grace_ms = cfg->pipeline.kill_grace_ms;
	ec.metrics = daemon_metrics(d);
	dg = xcalloc(1, sizeof *dg);
	dg->repo = xstrdup(repo);
	dg->e = dag_engine_new(&ec, set, err, errlen);
	free(url);
	if (dg->e == NULL) {
		free(dg->repo);
		free(dg);
		return NULL;
	}
	routes = dag_engine_routes(dg->e, &n);
	daemon_add_routes(d, routes, n);
	daemon_on_reload(d, dags_reload, dg);
	return dg;
}

struct dag_engine *
dags_engine(struct dags *dg)
{
	return dg->e;
}

void
dags_free(struct dags *dg)
{
	if (dg == NULL)
		return;
	dag_engine_free(dg->e);
	free(dg->repo);
	free(dg);
}
