/*
 * The online feature lookup endpoints (api.c, SPEC §5).
 */
#ifndef MLOPSD_FEATURES_API_H
#define MLOPSD_FEATURES_API_H

#include <stddef.h>

struct agg_value;
struct store;
struct http_route;
struct feature_api;

/* Endpoints over store (not owned); max_entities per Feast request. */
struct feature_api	*feature_api_new(struct store *store, int max_entities);
/* The routes to give the HTTP server; they live as long as api. */
const struct http_route	*feature_api_routes(struct feature_api *api, size_t *n);
/* Swap in another store (a reload); returns the old one, no longer in use. */
struct store		*feature_api_swap(struct feature_api *api,
			    struct store *store);
void			 feature_api_free(struct feature_api *api);
/*
 * v as the GET lookup writes it (a NUL-terminated string the caller
 * frees): byte for byte what json_dumpb(store_value_json(v),
 * JSON_COMPACT | JSON_ENCODE_ANY) gives, without jansson.  For tests.
 */
char			*feature_api_value_text(const struct agg_value *v);

#endif
