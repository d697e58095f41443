/*
 * cmd-models: `mlopsd models list | show NAME [VERSION] | promote NAME
 * VERSION [--alias A] | rollback NAME | register NAME FILE | history
 * NAME`, the model
 * registry of a running daemon over its HTTP API (SPEC §1, §5).
 *
 * Output is a table for people, or the API's JSON with --output json for
 * scripts.  The daemon is found through -c FILE or --url (cmd/client.c).
 * Exit status: 0 done, 1 the daemon refused or could not be reached,
 * 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmd/client.h"
#include "cmd/cmd.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "registry/registry.h"

struct models_opts {
	struct cmd_client	 c;
	int			 json;
	const char		*alias;		/* NULL: not given */
	/* register */
	const char		*metrics, *params, *tags;	/* JSON objects */
	const char		*features;	/* a,b,c */
	const char		*training_set;	/* CSV for the drift reference */
	const char		*label;
	char			**args;		/* positional, after the verb */
	int			 nargs;
};

/* GET path; prints an error and returns NULL unless 200. */
static json_t *
models_get(struct models_opts *o, const char *path)
{
	json_t	*reply;
	char	 err[1024];
	int	 status;

	if ((status = cmd_client_call(&o->c, "GET", path, NULL, &reply, err,
	    sizeof err)) == -1) {
		fprintf(stderr, "mlopsd models: %s\n", err);
		return NULL;
	}
	if (status != 200) {
		cmd_client_print_error("models", status, reply);
		json_decref(reply);
		return NULL;
	}
	return reply;
}

static void
models_print_json(json_t *j)
{
	char	*s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	printf("%s\n", s);
	free(s);
}

/* "champion=2 challenger=3" from {"champion":2,...}; caller frees. */
static char *
models_alias_list(json_t *aliases, int by_name)
{
	const char	*k;
	json_t		*v;
	char		*s = xstrdup(""), *t;
	size_t		 i;

	if (by_name) {
		json_object_foreach(aliases, k, v) {
			xasprintf(&t, "%s%s%s=%lld", s, s[0] != '\0' ? " " : "",
			    k, (long long)json_integer_value(v));
			free(s);
			s = t;
		}
	} else {
		json_array_foreach(aliases, i, v) {
			xasprintf(&t, "%s%s%s", s, s[0] != '\0' ? "," : "",
			    json_string_value(v));
			free(s);
			s = t;
		}
	}
	if (s[0] == '\0') {
		free(s);
		s = xstrdup("-");
	}
	return s;
}

/* "auc=0.912 logloss=0.31" from a metrics object; caller frees. */
static char *
models_metric_list(json_t *metrics)
{
	const char	*k;
	json_t		*v;
	char		*s = xstrdup(""), *t;

	json_object_foreach(metrics, k, v) {
		if (json_is_number(v))
			xasprintf(&t, "%s%s%s=%.6g", s, s[0] != '\0' ? " " :
			    "", k, json_number_value(v));
		else
			xasprintf(&t, "%s%s%s=?", s, s[0] != '\0' ? " " : "",
			    k);
		free(s);
		s = t;
	}
	if (s[0] == '\0') {
		free(s);
		s = xstrdup("-");
	}
	return s;
}

static const char *
models_time(json_t *ms, char *buf, size_t len)
{
	if (!json_is_integer(ms))
		return "-";
	return util_format_rfc3339(json_integer_value(ms), buf, len);
}

static int
models_list(struct models_opts *o)
{
	json_t	*r, *m, *models;
	char	*aliases, tbuf[40];
	size_t	 i;

	if (o->nargs != 0)
		return cmd_usage_error(&cmd_models_entry, "list takes no "
		    "arguments");
	if ((r = models_get(o, "/v1/models")) == NULL)
		return CMD_EXIT_FAIL;
	if (o->json) {
		models_print_json(r);
		json_decref(r);
		return CMD_EXIT_OK;
	}
	models = json_object_get(r, "models");
	printf("%-24s %7s  %-24s  %s\n", "NAME", "LATEST", "CREATED",
	    "ALIASES");
	json_array_foreach(models, i, m) {
		aliases = models_alias_list(json_object_get(m, "aliases"), 1);
		printf("%-24s %7lld  %-24s  %s\n",
		    json_string_value(json_object_get(m, "name")),
		    (long long)json_integer_value(json_object_get(m,
		    "latest_version")),
		    models_time(json_object_get(m, "created_at"), tbuf,
		    sizeof tbuf), aliases);
		free(aliases);
	}
	json_decref(r);
	return CMD_EXIT_OK;
}

static void
models_print_version(json_t *v)
{
	static const struct {
		const char	*label;
		const char	*key;
	} lineage[] = {
		{ "dag:", "dag" },
		{ "run:", "run_id" },
		{ "git commit:", "git_commit" },
		{ "training set:", "training_set_sha256" },
	};
	json_t		*lin = json_object_get(v, "lineage"), *f, *ref, *art;
	char		*aliases, *metrics, *tags, tbuf[40];
	char		*params = json_dumps(json_object_get(v, "params"),
			    JSON_COMPACT | JSON_SORT_KEYS);
	const char	*s, *k;
	size_t		 i;

	aliases = models_alias_list(json_object_get(v, "aliases"), 0);
	metrics = models_metric_list(json_object_get(v, "metrics"));
	printf("model:        %s\n", json_string_value(json_object_get(v,
	    "name")));
	printf("version:      %lld\n", (long long)json_integer_value(
	    json_object_get(v, "version")));
	printf("aliases:      %s\n", aliases);
	printf("created:      %s\n", models_time(json_object_get(v,
	    "created_at"), tbuf, sizeof tbuf));
	printf("metrics:      %s\n", metrics);
	printf("params:       %s\n", params != NULL ? params : "{}");
	art = json_object_get(v, "artifact");
	printf("artifact:     sha256:%s (%lld bytes)%s\n",
	    json_string_value(json_object_get(art, "sha256")),
	    (long long)json_integer_value(json_object_get(art, "size")),
	    json_is_true(json_object_get(art, "ok")) ? " verified" : "");
	if (json_is_false(json_object_get(art, "ok")))
		printf("              BAD: %s\n", json_string_value(
		    json_object_get(art, "error")));
	for (i = 0; i < sizeof lineage / sizeof lineage[0]; i++) {
		s = json_string_value(json_object_get(lin, lineage[i].key));
		printf("%-14s%s\n", lineage[i].label, s != NULL ? s : "-");
	}
	printf("features:    ");
	json_array_foreach(json_object_get(lin, "features"), i, f)
		printf(" %s", json_string_value(f));
	printf("%s\n", json_array_size(json_object_get(lin, "features")) == 0 ?
	    " -" : "");
	tags = json_dumps(json_object_get(v, "tags"), JSON_COMPACT |
	    JSON_SORT_KEYS);
	printf("tags:         %s\n", tags != NULL ? tags : "{}");
	free(tags);
	/* The drift reference, summed up: rows and each feature's kind. */
	ref = json_object_get(v, "reference");
	if (json_is_object(ref)) {
		printf("reference:    %lld rows,", (long long)json_integer_value(
		    json_object_get(ref, "rows")));
		json_object_foreach(json_object_get(ref, "features"), k, f)
			printf(" %s (%s)", k, json_string_value(json_object_get(
			    f, "type")));
		printf("\n");
	} else
		printf("reference:    - (no drift reference)\n");
	free(aliases);
	free(metrics);
	free(params);
}

static int
models_show(struct models_opts *o)
{
	json_t	*r, *v;
	char	*name, *path, *aliases, *metrics, tbuf[40];
	size_t	 i;
	int	 version = 0;

	if (o->nargs < 1 || o->nargs > 2)
		return cmd_usage_error(&cmd_models_entry, "show takes NAME "
		    "[VERSION]");
	if (o->nargs == 2 && cmd_parse_int(o->args[1], 1, 2147483647,
	    &version) != 0)
		return cmd_usage_error(&cmd_models_entry, "bad version \"%s\" "
		    "(a number from 1)", o->args[1]);
	name = cmd_client_escape(o->args[0]);
	if (version > 0)
		path = xstrfmt("/v1/models/%s/versions/%d%s", name, version,
		    o->json ? "" : "?reference=1&verify=1");
	else
		path = xstrfmt("/v1/models/%s", name);
	free(name);
	r = models_get(o, path);
	free(path);
	if (r == NULL)
		return CMD_EXIT_FAIL;
	if (o->json)
		models_print_json(r);
	else if (version > 0)
		models_print_version(r);
	else {
		aliases = models_alias_list(json_object_get(r, "aliases"), 1);
		printf("model:    %s\naliases:  %s\ncreated:  %s\n\n",
		    json_string_value(json_object_get(r, "name")), aliases,
		    models_time(json_object_get(r, "created_at"), tbuf,
		    sizeof tbuf));
		free(aliases);
		printf("%7s  %-20s  %-24s  %-16s  %s\n", "VERSION", "ALIASES",
		    "CREATED", "RUN", "METRICS");
		json_array_foreach(json_object_get(r, "versions"), i, v) {
			const char *run = json_string_value(json_object_get(
			    json_object_get(v, "lineage"), "run_id"));

			aliases = models_alias_list(json_object_get(v,
			    "aliases"), 0);
			metrics = models_metric_list(json_object_get(v,
			    "metrics"));
			printf("%7lld  %-20s  %-24s  %-16s  %s\n",
			    (long long)json_integer_value(json_object_get(v,
			    "version")), aliases, models_time(json_object_get(v,
			    "created_at"), tbuf, sizeof tbuf),
			    run != NULL ? run : "-", metrics);
			free(aliases);
			free(metrics);
		}
	}
	json_decref(r);
	return CMD_EXIT_OK;
}

/* Send a mutating request and print what moved (unless quiet). */
static int
models_move(struct models_opts *o, const char *method, const char *path,
    json_t *body, const char *what, int quiet)
{
	json_t	*r, *prev;
	char	 err[1024];
	int	 status;

	status = cmd_client_call(&o->c, method, path, body, &r, err,
	    sizeof err);
	if (status == -1) {
		fprintf(stderr, "mlopsd models: %s\n", err);
		return CMD_EXIT_FAIL;
	}
	if (status != 200) {
		cmd_client_print_error("models", status, r);
		json_decref(r);
		return CMD_EXIT_FAIL;
	}
	if (quiet)
		;
	else if (o->json)
		models_print_json(r);
	else {
		prev = json_object_get(r, "previous");
		printf("%s: %s %s version %lld", json_string_value(
		    json_object_get(r, "name")), json_string_value(
		    json_object_get(r, "alias")), what,
		    (long long)json_integer_value(json_object_get(r,
		    "version")));
		if (json_is_integer(prev))
			printf(" (was %lld)", (long long)json_integer_value(prev));
		printf("\n");
	}
	json_decref(r);
	return CMD_EXIT_OK;
}

static int
models_promote(struct models_opts *o)
{
	json_t	*body;
	char	*name, *path;
	int	 version, rc;

	if (o->nargs != 2)
		return cmd_usage_error(&cmd_models_entry, "promote takes NAME "
		    "VERSION");
	if (cmd_parse_int(o->args[1], 1, 2147483647, &version) != 0)
		return cmd_usage_error(&cmd_models_entry, "bad version \"%s\" "
		    "(a number from 1)", o->args[1]);
	name = cmd_client_escape(o->args[0]);
	path = xstrfmt("/v1/models/%s/aliases/%s", name, o->alias != NULL ?
	    o->alias : "champion");
	body = json_pack("{s:i, s:s}", "version", version, "reason",
	    "mlopsd models promote");
	rc = models_move(o, "PUT", path, body, "->", 0);
	json_decref(body);
	free(path);
	free(name);
	return rc;
}

static int
models_rollback(struct models_opts *o)
{
	char	*name, *path;
	int	 rc;

	if (o->nargs != 1)
		return cmd_usage_error(&cmd_models_entry, "rollback takes NAME");
	name = cmd_client_escape(o->args[0]);
	path = xstrfmt("/v1/models/%s/rollback", name);
	rc = models_move(o, "POST", path, NULL, "rolled back to", 0);
	free(path);
	free(name);
	return rc;
}

/* Parse --what JSON as an object into body[key]; -1 after a usage error. */
static int
models_json_opt(json_t *body, const char *key, const char *text)
{
	json_error_t	 jerr;
	json_t		*j;

	if (text == NULL)
		return 0;
	if ((j = json_loads(text, 0, &jerr)) == NULL || !json_is_object(j)) {
		json_decref(j);
		cmd_usage_error(&cmd_models_entry, "--%s must be a JSON object, "
		    "e.g. '{\"auc\": 0.9}'", key);
		return -1;
	}
	json_object_set_new(body, key, j);
	return 0;
}

/*
 * register NAME FILE: a model trained elsewhere.  The daemon copies FILE,
 * so the path goes absolute; the drift reference is computed here from
 * --training-set, where the CSV is.
 */
static int
models_register(struct models_opts *o)
{
	json_t	*body = NULL, *r = NULL, *feats = NULL, *ref;
	char	*name = NULL, *path = NULL, *abs = NULL, *list, *tok, *save;
	char	 err[1024];
	int	 status, rc = CMD_EXIT_USAGE;

	if (o->nargs != 2)
		return cmd_usage_error(&cmd_models_entry, "register takes NAME "
		    "FILE");
	if ((abs = realpath(o->args[1], NULL)) == NULL) {
		fprintf(stderr, "mlopsd models: %s: %s\n", o->args[1],
		    strerror(errno));
		return CMD_EXIT_FAIL;
	}
	body = json_pack("{s:s}", "artifact_path", abs);
	if (models_json_opt(body, "metrics", o->metrics) != 0 ||
	    models_json_opt(body, "params", o->params) != 0 ||
	    models_json_opt(body, "tags", o->tags) != 0)
		goto out;
	if (o->features != NULL) {
		feats = json_array();
		list = xstrdup(o->features);
		for (tok = strtok_r(list, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save))
			json_array_append_new(feats, json_string(tok));
		free(list);
		json_object_set(body, "features", feats);
	}
	if (o->training_set != NULL) {
		ref = registry_reference_from_csv(o->training_set, feats,
		    o->label, 0, err, sizeof err);
		if (ref == NULL) {
			fprintf(stderr, "mlopsd models: %s\n", err);
			rc = CMD_EXIT_FAIL;
			goto out;
		}
		json_object_set_new(body, "reference", ref);
	}
	name = cmd_client_escape(o->args[0]);
	path = xstrfmt("/v1/models/%s/versions", name);
	rc = CMD_EXIT_FAIL;
	status = cmd_client_call(&o->c, "POST", path, body, &r, err,
	    sizeof err);
	if (status == -1) {
		fprintf(stderr, "mlopsd models: %s\n", err);
		goto out;
	}
	if (status != 201) {
		cmd_client_print_error("models", status, r);
		goto out;
	}
	if (o->json && o->alias == NULL)
		models_print_json(r);
	else if (!o->json)
		printf("%s: version %lld registered (sha256:%s)\n",
		    json_string_value(json_object_get(r, "name")),
		    (long long)json_integer_value(json_object_get(r, "version")),
		    json_string_value(json_object_get(json_object_get(r,
		    "artifact"), "sha256")));
	rc = CMD_EXIT_OK;
	/* --alias: promote the new version too. */
	if (o->alias != NULL) {
		json_t	*pb = json_pack("{s:I, s:s}", "version",
			    json_integer_value(json_object_get(r, "version")),
			    "reason", "mlopsd models register");

		free(path);
		path = xstrfmt("/v1/models/%s/aliases/%s", name, o->alias);
		rc = models_move(o, "PUT", path, pb, "->", o->json);
		json_decref(pb);
		if (rc == CMD_EXIT_OK && o->json) {
			/* One document: the version, now with its alias. */
			json_t	*vj;

			free(path);
			path = xstrfmt("/v1/models/%s/versions/%lld", name,
			    (long long)json_integer_value(json_object_get(r,
			    "version")));
			if ((vj = models_get(o, path)) == NULL)
				rc = CMD_EXIT_FAIL;
			else {
				models_print_json(vj);
				json_decref(vj);
			}
		}
	}
out:
	json_decref(r);
	json_decref(body);
	json_decref(feats);
	free(path);
	free(name);
	free(abs);
	return rc;
}

/* history NAME [--alias A]: every alias move, oldest first. */
static int
models_history(struct models_opts *o)
{
	json_t	*r, *h;
	char	*name, *alias = NULL, *path, tbuf[40], from[16], to[16];
	size_t	 i;

	if (o->nargs != 1)
		return cmd_usage_error(&cmd_models_entry, "history takes NAME");
	name = cmd_client_escape(o->args[0]);
	if (o->alias != NULL)
		alias = cmd_client_escape(o->alias);
	path = xstrfmt("/v1/models/%s/history%s%s", name, alias != NULL ?
	    "?alias=" : "", alias != NULL ? alias : "");
	r = models_get(o, path);
	free(path);
	free(alias);
	free(name);
	if (r == NULL)
		return CMD_EXIT_FAIL;
	if (o->json) {
		models_print_json(r);
		json_decref(r);
		return CMD_EXIT_OK;
	}
	printf("%-24s  %-16s  %-8s  %5s  %5s  %s\n", "AT", "ALIAS", "KIND",
	    "FROM", "TO", "REASON");
	json_array_foreach(json_object_get(r, "history"), i, h) {
		const char *reason = json_string_value(json_object_get(h,
		    "reason"));

		snprintf(from, sizeof from, json_is_integer(json_object_get(h,
		    "from")) ? "%lld" : "-", (long long)json_integer_value(
		    json_object_get(h, "from")));
		snprintf(to, sizeof to, json_is_integer(json_object_get(h,
		    "to")) ? "%lld" : "-", (long long)json_integer_value(
		    json_object_get(h, "to")));
		printf("%-24s  %-16s  %-8s  %5s  %5s  %s\n", models_time(
		    json_object_get(h, "at"), tbuf, sizeof tbuf),
		    json_string_value(json_object_get(h, "alias")),
		    json_string_value(json_object_get(h, "kind")), from, to,
		    reason != NULL ? reason : "-");
	}
	json_decref(r);
	return CMD_EXIT_OK;
}

static const struct {
	const char	*verb;
	int		(*fn)(struct models_opts *o);
} models_verbs[] = {
	{ "list", models_list },
	{ "show", models_show },
	{ "promote", models_promote },
	{ "rollback", models_rollback },
	{ "register", models_register },
	{ "history", models_history },
};

static int
cmd_models_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "url", required_argument, NULL, 'u' },
		{ "output", required_argument, NULL, 'o' },
		{ "alias", required_argument, NULL, 'a' },
		{ "metrics", required_argument, NULL, 'M' },
		{ "params", required_argument, NULL, 'P' },
		{ "tags", required_argument, NULL, 'T' },
		{ "features", required_argument, NULL, 'F' },
		{ "training-set", required_argument, NULL, 'S' },
		{ "label", required_argument, NULL, 'L' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct models_opts	 o;
	const char		*config = NULL, *url = NULL;
	size_t			 i;
	int			 ch, rc;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	memset(&o, 0, sizeof o);
	while ((ch = getopt_long(argc, argv, ":c:o:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config = optarg;
			break;
		case 'u':
			url = optarg;
			break;
		case 'o':
			if (cmd_client_output(self, optarg, &o.json) != 0)
				return CMD_EXIT_USAGE;
			break;
		case 'a':
			o.alias = optarg;
			break;
		case 'M':
			o.metrics = optarg;
			break;
		case 'P':
			o.params = optarg;
			break;
		case 'T':
			o.tags = optarg;
			break;
		case 'F':
			o.features = optarg;
			break;
		case 'S':
			o.training_set = optarg;
			break;
		case 'L':
			o.label = optarg;
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			return cmd_bad_option(self, ch, argv);
		}
	}
	if (optind >= argc)
		return cmd_usage_error(self, "a subcommand is needed (list, "
		    "show, promote, rollback, register, history)");
	for (i = 0; i < sizeof models_verbs / sizeof models_verbs[0]; i++)
		if (strcmp(argv[optind], models_verbs[i].verb) == 0)
			break;
	if (i == sizeof models_verbs / sizeof models_verbs[0])
		return cmd_usage_error(self, "unknown subcommand \"%s\" (list, "
		    "show, promote, rollback, register, history)", argv[optind]);
	if (cmd_client_open(self, &o.c, config, url) != 0)
		return CMD_EXIT_USAGE;
	o.args = argv + optind + 1;
	o.nargs = argc - optind - 1;
	rc = models_verbs[i].fn(&o);
	cmd_client_free(&o.c);
	return rc;
}

const struct cmd_entry cmd_models_entry = {
	.name = "models",
	.usage = "models list | show NAME [VERSION] | promote NAME VERSION "
	    "[--alias A] | rollback NAME | register NAME FILE | history NAME  "
	    "[-c FILE | --url URL] [--output json]",
	.summary = "inspect the model registry, move aliases, roll back",
	.exec = cmd_models_exec,
	.help =
	    "  list                   registered models, latest version, aliases\n"
	    "  show NAME [VERSION]    a model's versions, or one version's "
	    "metrics,\n"
	    "                         params, artifact and lineage\n"
	    "  promote NAME VERSION   point an alias (--alias A, default "
	    "champion)\n"
	    "                         at VERSION\n"
	    "  rollback NAME          champion := the previous champion\n"
	    "  history NAME           every alias move (--alias A: of one "
	    "alias)\n"
	    "  register NAME FILE     a model file trained elsewhere, with\n"
	    "                         --metrics/--params/--tags JSON, --features "
	    "a,b,\n"
	    "                         --training-set CSV [--label COL] (drift "
	    "reference)\n"
	    "                         and --alias A (promote it too)\n"
	    "  -c, --config FILE      the daemon's config (its http.listen "
	    "and token)\n"
	    "  --url URL              the daemon, http://HOST:PORT "
	    "(else $MLOPSD_URL)\n"
	    "  --output json          the API's JSON instead of a table\n"
	    "  --alias A              the alias promote moves\n"
	    "The token is $MLOPSD_TOKEN, else the config's admin token.\n",
};
