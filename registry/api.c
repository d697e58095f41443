/*
 * api: the model registry endpoints (SPEC §5), after MLflow's registered
 * model / model version / alias:
 *
 *   GET    /v1/models                           {"models":[model...]}
 *   GET    /v1/models/{name}                    model: aliases, versions
 *   GET    /v1/models/{name}/versions/{n}       version (?reference=1 adds
 *                                               the drift reference,
 *                                               ?verify=1 checks the
 *                                               artifact's sha256)
 *   DELETE /v1/models/{name}/versions/{n}       unless an alias points at it
 *   GET    /v1/models/{name}/aliases/{alias}    the version it points to
 *   GET    /v1/models/{name}/history            alias moves, oldest first
 *   POST   /v1/models/{name}/versions           register a version:
 *          {"artifact_path": absolute path the daemon can read, "params",
 *           "metrics", "tags", "reference": {...}, "features": [...],
 *           "training_set_sha256", "dag", "run_id", "git_commit": "..."}
 *   PUT    /v1/models/{name}/aliases/{alias}    {"version":N[,"reason":s]}
 *   DELETE /v1/models/{name}/aliases/{alias}
 *   POST   /v1/models/{name}/rollback           champion := previous one
 *
 * Registering answers 201 with the new version.  The three alias changes
 * answer {"name","alias","version","previous"}
 * (version null after a delete, previous null when there was none) and
 * need the admin token when one is configured.  Errors: a bad name,
 * version or body is 400 bad_request; a model, version or alias that does
 * not exist is 404 not_found; a rollback without a previous champion, or
 * deleting a version an alias points at, is 409 conflict.
 *
 * Handlers run on HTTP worker threads; the registry serializes them.
 */
#include "registry/api.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"
#include "common/metrics.h"
#include "common/xmalloc.h"
#include "registry/registry.h"

#define API_NROUTES	10

struct registry_api {
	struct registry		*r;
	struct metrics		*m;
	struct metric_family	*events;
	/* seen: the last event counted; the lock keeps two renders apart. */
	pthread_mutex_t		 lock;
	int64_t			 seen;
	struct http_route	 routes[API_NROUTES];
};

/*
 * Which HTTP error a registry message is, by its wording (registry.h):
 * "no ..." is a missing model or version, "bad ..." a bad name, and a
 * state that forbids the change a conflict.  Anything else is ours.
 */
static const struct {
	const char	*text;
	int		 at_start;	/* else anywhere */
	int		 code;
	const char	*errcode;
} api_errors[] = {
	{ "no ", 1, 404, "not_found" },
	{ "bad ", 1, 400, "bad_request" },
	{ " has no ", 0, 409, "conflict" },
	{ " has alias ", 0, 409, "conflict" },
};

static void
api_fail(struct http_req *req, const char *err)
{
	size_t	i;

	for (i = 0; i < sizeof api_errors / sizeof api_errors[0]; i++) {
		if (api_errors[i].at_start ? strncmp(err, api_errors[i].text,
		    strlen(api_errors[i].text)) == 0 :
		    strstr(err, api_errors[i].text) != NULL) {
			http_reply_error(req, api_errors[i].code,
			    api_errors[i].errcode, "%s", err);
			return;
		}
	}
	http_reply_error(req, 500, "internal", "%s", err);
}

/* The {name} of the path, checked; NULL after replying 400. */
static const char *
api_model(struct http_req *req)
{
	const char	*name = http_req_param(req, "name");

	if (registry_model_name_ok(name))
		return name;
	http_reply_error(req, 400, "bad_request", "bad model name \"%.200s\"",
	    name);
	return NULL;
}

static const char *
api_alias(struct http_req *req)
{
	const char	*alias = http_req_param(req, "alias");

	if (registry_alias_name_ok(alias))
		return alias;
	http_reply_error(req, 400, "bad_request", "bad alias \"%.200s\" "
	    "([a-z0-9_-], 1 to 64 characters)", alias);
	return NULL;
}

static void
api_list(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	json_t			*a;
	char			 err[512];

	if ((a = registry_models_json(api->r, err, sizeof err)) == NULL) {
		api_fail(req, err);
		return;
	}
	http_reply_json(req, 200, json_pack("{s:o}", "models", a));
}

static void
api_get_model(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name;
	json_t			*o;
	char			 err[512];

	if ((name = api_model(req)) == NULL)
		return;
	if ((o = registry_model_json(api->r, name, err, sizeof err)) == NULL) {
		api_fail(req, err);
		return;
	}
	http_reply_json(req, 200, o);
}

static int
api_query_true(const char *v)
{
	return v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

/* Reply with one version; reference and verification when asked for. */
static void
api_reply_version(struct http_req *req, struct registry_api *api,
    const char *name, int v)
{
	const char	*ref = http_req_query(req, "reference");
	json_t		*o;
	char		 err[512];

	if ((o = registry_version_json(api->r, name, v, err,
	    sizeof err)) == NULL) {
		api_fail(req, err);
		return;
	}
	if (!api_query_true(ref))
		json_object_del(o, "reference");
	/* ?verify=1: hash the stored artifact now (it may be large). */
	if (api_query_true(http_req_query(req, "verify"))) {
		json_t	*art = json_object_get(o, "artifact");
		char	 path[1024];

		if (registry_artifact_path(api->r, name, v, path, sizeof path,
		    err, sizeof err) == 0)
			json_object_set_new(art, "ok", json_true());
		else {
			json_object_set_new(art, "ok", json_false());
			json_object_set_new(art, "error", json_string(err));
		}
	}
	http_reply_json(req, 200, o);
}

/* The {n} of the path; 0 after replying 400. */
static int
api_version_param(struct http_req *req)
{
	const char	*vs = http_req_param(req, "n");
	char		*end;
	long		 v;

	v = strtol(vs, &end, 10);
	if (end == vs || *end != '\0' || v < 1 || v > 2147483647L) {
		http_reply_error(req, 400, "bad_request", "bad version "
		    "\"%.64s\" (a number from 1)", vs);
		return 0;
	}
	return (int)v;
}

static void
api_get_version(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name;
	int			 v;

	if ((name = api_model(req)) == NULL || (v = api_version_param(req)) == 0)
		return;
	api_reply_version(req, api, name, v);
}

static void
api_delete_version(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name;
	char			 err[512];
	int			 v;

	if ((name = api_model(req)) == NULL || (v = api_version_param(req)) == 0)
		return;
	if (registry_version_delete(api->r, name, v, err, sizeof err) != 0) {
		api_fail(req, err);
		return;
	}
	http_reply_json(req, 200, json_pack("{s:s, s:i, s:b}", "name", name,
	    "version", v, "deleted", 1));
}

static void
api_get_alias(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name, *alias;
	int			 v;

	if ((name = api_model(req)) == NULL || (alias = api_alias(req)) == NULL)
		return;
	if (registry_alias_get(api->r, name, alias, &v) != 0) {
		http_reply_error(req, 404, "not_found", "model \"%s\" has no "
		    "alias \"%s\"", name, alias);
		return;
	}
	api_reply_version(req, api, name, v);
}

static void
api_history(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name;
	json_t			*m, *h;
	char			 err[512];

	if ((name = api_model(req)) == NULL)
		return;
	if ((m = registry_model_json(api->r, name, err, sizeof err)) == NULL) {
		api_fail(req, err);
		return;
	}
	json_decref(m);
	if ((h = registry_alias_history_json(api->r, name,
	    http_req_query(req, "alias"), err, sizeof err)) == NULL) {
		api_fail(req, err);
		return;
	}
	http_reply_json(req, 200, json_pack("{s:s, s:o}", "name", name,
	    "history", h));
}

/* The string member key of body, or NULL; -1 after replying 400. */
static int
api_body_str(struct http_req *req, json_t *body, const char *key,
    const char **out)
{
	json_t	*j = json_object_get(body, key);

	*out = NULL;
	if (j == NULL || json_is_null(j))
		return 0;
	if (!json_is_string(j)) {
		http_reply_error(req, 400, "bad_request", "\"%s\" must be a "
		    "string", key);
		return -1;
	}
	*out = json_string_value(j);
	return 0;
}

static void
api_create_version(struct http_req *req, void *arg)
{
	static const char *const known[] = { "artifact_path", "params",
	    "metrics", "tags", "reference", "features", "training_set_sha256",
	    "dag", "run_id", "git_commit" };
	struct registry_api		*api = arg;
	struct registry_version_spec	 s = { 0 };
	const char			*key;
	json_t				*body, *val, *o;
	char				 err[1024];
	size_t				 i;
	int				 v;

	if ((s.model = api_model(req)) == NULL)
		return;
	if ((body = http_req_json(req)) == NULL)
		return;
	if (!json_is_object(body)) {
		http_reply_error(req, 400, "bad_request", "the body must be a "
		    "JSON object");
		goto out;
	}
	json_object_foreach(body, key, val) {
		for (i = 0; i < sizeof known / sizeof known[0]; i++)
			if (strcmp(key, known[i]) == 0)
				break;
		if (i == sizeof known / sizeof known[0]) {
			http_reply_error(req, 400, "bad_request", "unknown "
			    "field \"%.100s\"", key);
			goto out;
		}
	}
	if (api_body_str(req, body, "artifact_path", &s.artifact_path) != 0 ||
	    api_body_str(req, body, "training_set_sha256",
	    &s.training_set_sha256) != 0 ||
	    api_body_str(req, body, "dag", &s.dag) != 0 ||
	    api_body_str(req, body, "run_id", &s.run_id) != 0 ||
	    api_body_str(req, body, "git_commit", &s.git_commit) != 0)
		goto out;
	if (s.artifact_path == NULL || s.artifact_path[0] != '/') {
		http_reply_error(req, 400, "bad_request", "\"artifact_path\" "
		    "must be an absolute path the daemon can read");
		goto out;
	}
	s.params = json_object_get(body, "params");
	s.metrics = json_object_get(body, "metrics");
	s.tags = json_object_get(body, "tags");
	s.reference = json_object_get(body, "reference");
	s.features = json_object_get(body, "features");
	if (registry_version_create(api->r, &s, &v, err, sizeof err) != 0) {
		/* Bad JSON members and unreadable artifacts are the caller's. */
		if (strstr(err, " must be a ") != NULL ||
		    strncmp(err, "artifact ", 9) == 0)
			http_reply_error(req, 400, "bad_request", "%s", err);
		else
			api_fail(req, err);
		goto out;
	}
	if ((o = registry_version_json(api->r, s.model, v, err,
	    sizeof err)) == NULL) {
		api_fail(req, err);
		goto out;
	}
	json_object_del(o, "reference");
	http_reply_json(req, 201, o);
out:
	json_decref(body);
}

static json_t *
api_version_or_null(int v)
{
	return v > 0 ? json_integer(v) : json_null();
}

static void
api_reply_move(struct http_req *req, const char *name, const char *alias,
    int version, int previous)
{
	http_reply_json(req, 200, json_pack("{s:s, s:s, s:o, s:o}",
	    "name", name, "alias", alias,
	    "version", api_version_or_null(version),
	    "previous", api_version_or_null(previous)));
}

static void
api_set_alias(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name, *alias, *reason = NULL;
	json_t			*body, *jv, *jr;
	json_int_t		 v;
	char			 err[512];
	int			 prev = 0;

	if ((name = api_model(req)) == NULL || (alias = api_alias(req)) == NULL)
		return;
	if ((body = http_req_json(req)) == NULL)
		return;
	jv = json_object_get(body, "version");
	jr = json_object_get(body, "reason");
	if (!json_is_object(body) || !json_is_integer(jv) ||
	    (v = json_integer_value(jv)) < 1 || v > 2147483647) {
		http_reply_error(req, 400, "bad_request", "the body must be "
		    "{\"version\": N} with N a version number");
		goto out;
	}
	if (jr != NULL && !json_is_null(jr)) {
		if (!json_is_string(jr)) {
			http_reply_error(req, 400, "bad_request", "\"reason\" "
			    "must be a string");
			goto out;
		}
		reason = json_string_value(jr);
	}
	if (registry_alias_get(api->r, name, alias, &prev) != 0)
		prev = 0;
	if (registry_alias_set(api->r, name, alias, (int)v, reason != NULL ?
	    reason : "api", err, sizeof err) != 0) {
		api_fail(req, err);
		goto out;
	}
	api_reply_move(req, name, alias, (int)v, prev);
out:
	json_decref(body);
}

static void
api_delete_alias(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name, *alias;
	char			 err[512];
	int			 prev = 0;

	if ((name = api_model(req)) == NULL || (alias = api_alias(req)) == NULL)
		return;
	if (registry_alias_get(api->r, name, alias, &prev) != 0) {
		http_reply_error(req, 404, "not_found", "model \"%s\" has no "
		    "alias \"%s\"", name, alias);
		return;
	}
	if (registry_alias_delete(api->r, name, alias, "api", err,
	    sizeof err) != 0) {
		/* Deleted meanwhile by another client: not there any more. */
		if (strstr(err, " has no alias ") != NULL)
			http_reply_error(req, 404, "not_found", "%s", err);
		else
			api_fail(req, err);
		return;
	}
	api_reply_move(req, name, alias, 0, prev);
}

static void
api_rollback(struct http_req *req, void *arg)
{
	struct registry_api	*api = arg;
	const char		*name;
	json_t			*m;
	char			 err[512];
	int			 prev = 0, v;

	if ((name = api_model(req)) == NULL)
		return;
	if ((m = registry_model_json(api->r, name, err, sizeof err)) == NULL) {
		api_fail(req, err);
		return;
	}
	json_decref(m);
	registry_alias_get(api->r, name, REGISTRY_CHAMPION, &prev);
	if (registry_rollback(api->r, name, &v, err, sizeof err) != 0) {
		api_fail(req, err);
		return;
	}
	api_reply_move(req, name, REGISTRY_CHAMPION, v, prev);
}

static int
api_count_event(void *arg, const struct registry_event *ev)
{
	struct registry_api	*api = arg;

	metric_inc(metric_get(api->events, ev->kind));
	api->seen = ev->seq;
	return 0;
}

/* At every /metrics render: count the events written since the last one. */
static void
api_collect(void *arg)
{
	struct registry_api	*api = arg;
	char			 err[256];

	pthread_mutex_lock(&api->lock);
	registry_events_since(api->r, api->seen, api_count_event, api, err,
	    sizeof err);
	pthread_mutex_unlock(&api->lock);
}

struct registry_api *
registry_api_new(struct registry *r, struct metrics *m)
{
	static const char *const kinds[] = { "version_created",
	    "version_deleted", "alias_moved", "alias_deleted", "rollback" };
	struct registry_api	*api = xcalloc(1, sizeof *api);
	size_t			 i = 0;

	api->r = r;
	api->m = m;
	pthread_mutex_init(&api->lock, NULL);
	api->routes[i++] = (struct http_route){ "GET", "/v1/models",
	    api_list, api, 0 };
	api->routes[i++] = (struct http_route){ "GET", "/v1/models/{name}",
	    api_get_model, api, 0 };
	api->routes[i++] = (struct http_route){ "GET",
	    "/v1/models/{name}/versions/{n}", api_get_version, api, 0 };
	api->routes[i++] = (struct http_route){ "DELETE",
	    "/v1/models/{name}/versions/{n}", api_delete_version, api,
	    HTTP_ROUTE_MUTATING };
	api->routes[i++] = (struct http_route){ "GET",
	    "/v1/models/{name}/aliases/{alias}", api_get_alias, api, 0 };
	api->routes[i++] = (struct http_route){ "GET",
	    "/v1/models/{name}/history", api_history, api, 0 };
	api->routes[i++] = (struct http_route){ "POST",
	    "/v1/models/{name}/versions", api_create_version, api,
	    HTTP_ROUTE_MUTATING };
	api->routes[i++] = (struct http_route){ "PUT",
	    "/v1/models/{name}/aliases/{alias}", api_set_alias, api,
	    HTTP_ROUTE_MUTATING };
	api->routes[i++] = (struct http_route){ "DELETE",
	    "/v1/models/{name}/aliases/{alias}", api_delete_alias, api,
	    HTTP_ROUTE_MUTATING };
	api->routes[i++] = (struct http_route){ "POST",
	    "/v1/models/{name}/rollback", api_rollback, api,
	    HTTP_ROUTE_MUTATING };
	if (m != NULL) {
		api->events = metrics_counter(m, "mlopsd_registry_events_total",
		    "Model registry events (version_created, version_deleted, "
		    "alias_moved, alias_deleted, rollback), from every process.",
		    "kind");
		for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
			metric_get(api->events, kinds[i]);
		metrics_add_collector(m, api_collect, api);
	}
	return api;
}

const struct http_route *
registry_api_routes(struct registry_api *api, size_t *n)
{
	*n = API_NROUTES;
	return api->routes;
}

void
registry_api_free(struct registry_api *api)
{
	if (api == NULL)
		return;
	if (api->m != NULL)
		metrics_remove_collector(api->m, api_collect, api);
	pthread_mutex_destroy(&api->lock);
	free(api);
}
