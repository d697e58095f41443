/*
 * The model registry endpoints (api.c, SPEC §5), MLflow's concepts over
 * HTTP: registered models, versions, aliases.
 */
#ifndef MLOPSD_REGISTRY_API_H
#define MLOPSD_REGISTRY_API_H

#include <stddef.h>

struct registry;
struct metrics;
struct http_route;
struct registry_api;

/*
 * Endpoints over r (not owned; it must outlive the api).  m may be NULL;
 * otherwise registry events, whichever process wrote them, are counted in
 * mlopsd_registry_events_total{kind} whenever metrics are rendered.
 */
struct registry_api	*registry_api_new(struct registry *r, struct metrics *m);
/* The routes to give the HTTP server; they live as long as api. */
const struct http_route	*registry_api_routes(struct registry_api *api,
			    size_t *n);
void			 registry_api_free(struct registry_api *api);

#endif
