/*
 * models: wires the model registry into the daemon (for `serve` and
 * `dev`): the registry database in the data dir and its HTTP endpoints
 * (registry/api.c).  Pipeline steps open the same database from their own
 * processes; nothing here needs a reload.
 */
#include "cmd/models.h"

#include <stdlib.h>

#include "cmd/daemon.h"
#include "common/config.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "registry/api.h"
#include "registry/registry.h"

struct models {
	struct registry		*r;
	struct registry_api	*api;
};

struct models *
models_new(struct daemon *d, char *err, size_t errlen)
{
	const struct config	*cfg = daemon_config(d);
	const struct http_route	*routes;
	struct models		*mo;
	struct registry		*r;
	size_t			 n;

	if ((r = registry_open(cfg->data_dir, err, errlen)) == NULL)
		return NULL;
	mo = xcalloc(1, sizeof *mo);
	mo->r = r;
	mo->api = registry_api_new(r, daemon_metrics(d));
	routes = registry_api_routes(mo->api, &n);
	daemon_add_routes(d, routes, n);
	log_info("registry", "model registry in %s/registry.db",
	    cfg->data_dir);
	return mo;
}

void
models_free(struct models *mo)
{
	if (mo == NULL)
		return;
	registry_api_free(mo->api);
	registry_close(mo->r);
	free(mo);
}
