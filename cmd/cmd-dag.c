/*
 * cmd-dag: `mlopsd dag list | run NAME [-p K=V]... [--from STEP] [--wait] |
 * status [RUN] | logs RUN [STEP] | cancel RUN`, the pipeline engine of a
 * running daemon over its HTTP API (SPEC §1, §5, §6).
 *
 * Tables for people, the API's JSON with --output json.  `run --wait`
 * follows the run until it ends and exits 0 iff it succeeded.  The daemon
 * is found through -c FILE or --url (cmd/client.c).  Exit status: 0 done,
 * 1 the daemon refused, could not be reached, or the run failed; 2 usage.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cmd/client.h"
#include "cmd/cmd.h"
#include "common/httpc.h"
#include "common/util.h"
#include "common/xmalloc.h"

struct dag_opts {
	struct cmd_client	 c;
	int			 json;
	int			 wait;
	const char		*from;
	json_t			*params;
	char			**args;
	int			 nargs;
};

/* Call; prints an error and returns NULL unless the status is want. */
static json_t *
dag_call(struct dag_opts *o, const char *method, const char *path,
    json_t *body, int want)
{
	json_t	*reply = NULL;
	char	 err[1024];
	int	 status;

	if ((status = cmd_client_call(&o->c, method, path, body, &reply, err,
	    sizeof err)) == -1) {
		fprintf(stderr, "mlopsd dag: %s\n", err);
		return NULL;
	}
	if (status != want) {
		cmd_client_print_error("dag", status, reply);
		json_decref(reply);
		return NULL;
	}
	return reply;
}

static void
dag_print_json(json_t *j)
{
	char	*s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	printf("%s\n", s);
	free(s);
}

static const char *
dag_str(json_t *o, const char *key)
{
	json_t	*v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : "-";
}

static void
dag_time(json_t *v, char *buf, size_t len)
{
	if (!json_is_integer(v))
		snprintf(buf, len, "-");
	else
		util_format_rfc3339(json_integer_value(v), buf, len);
}

static int
dag_list(struct dag_opts *o)
{
	json_t	*reply, *dags, *d, *steps;
	size_t	 i;

	if (o->nargs != 0)
		return cmd_usage_error(NULL, "dag list takes no arguments");
	if ((reply = dag_call(o, "GET", "/v1/dags", NULL, 200)) == NULL)
		return CMD_EXIT_FAIL;
	if (o->json) {
		dag_print_json(reply);
		json_decref(reply);
		return CMD_EXIT_OK;
	}
	dags = json_object_get(reply, "dags");
	printf("%-24s %-16s %-6s %s\n", "NAME", "SCHEDULE", "STEPS", "FILE");
	json_array_foreach(dags, i, d) {
		steps = json_object_get(d, "steps");
		printf("%-24s %-16s %-6zu %s\n", dag_str(d, "name"),
		    dag_str(d, "schedule"), json_array_size(steps),
		    dag_str(d, "file"));
	}
	json_decref(reply);
	return CMD_EXIT_OK;
}

static void
dag_print_run(json_t *run)
{
	json_t	*steps = json_object_get(run, "steps"), *s, *a, *b;
	char	 t[64];
	size_t	 i;

	dag_time(json_object_get(run, "created_at"), t, sizeof t);
	printf("run %s of %s: %s (trigger %s, created %s, git %s)\n",
	    dag_str(run, "run_id"), dag_str(run, "dag"), dag_str(run, "status"),
	    dag_str(run, "trigger"), t, dag_str(run, "git_commit"));
	printf("  %-20s %-10s %-8s %-6s %s\n", "STEP", "STATUS", "ATTEMPTS",
	    "CACHED", "SECONDS");
	json_array_foreach(steps, i, s) {
		a = json_object_get(s, "started_at");
		b = json_object_get(s, "ended_at");
		if (json_is_integer(a) && json_is_integer(b))
			snprintf(t, sizeof t, "%.3f", (double)(json_integer_value(b)
			    - json_integer_value(a)) / 1000.0);
		else
			snprintf(t, sizeof t, "-");
		printf("  %-20s %-10s %-8lld %-6s %s\n", dag_str(s, "id"),
		    dag_str(s, "status"), (long long)json_integer_value(
		    json_object_get(s, "attempts")), json_is_true(
		    json_object_get(s, "cached")) ? "yes" : "no", t);
	}
}

static int
dag_terminal(const char *status)
{
	return strcmp(status, "succeeded") == 0 ||
	    strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0;
}

static int
dag_run(struct dag_opts *o)
{
	json_t		*body, *reply, *run = NULL;
	char		*name, *path;
	const char	*id, *status;
	int		 rc = CMD_EXIT_FAIL;

	if (o->nargs != 1)
		return cmd_usage_error(NULL, "dag run takes one DAG name");
	body = json_pack("{s:O}", "params", o->params);
	if (o->from != NULL)
		json_object_set_new(body, "from", json_string(o->from));
	name = cmd_client_escape(o->args[0]);
	path = xstrfmt("/v1/dags/%s/runs", name);
	reply = dag_call(o, "POST", path, body, 201);
	free(path);
	free(name);
	json_decref(body);
	if (reply == NULL)
		return CMD_EXIT_FAIL;
	id = dag_str(reply, "run_id");
	if (!o->wait) {
		if (o->json)
			dag_print_json(reply);
		else
			printf("%s\n", id);
		json_decref(reply);
		return CMD_EXIT_OK;
	}
	path = xstrfmt("/v1/runs/%s", id);
	json_decref(reply);
	for (;;) {
		if ((run = dag_call(o, "GET", path, NULL, 200)) == NULL)
			goto done;
		status = dag_str(run, "status");
		if (dag_terminal(status))
			break;
		json_decref(run);
		usleep(200000);
	}
	if (o->json)
		dag_print_json(run);
	else
		dag_print_run(run);
	rc = strcmp(dag_str(run, "status"), "succeeded") == 0 ? CMD_EXIT_OK :
	    CMD_EXIT_FAIL;
	json_decref(run);
done:
	free(path);
	return rc;
}

static int
dag_status(struct dag_opts *o)
{
	json_t	*reply, *runs, *r;
	char	*path, t[64];
	size_t	 i;

	if (o->nargs > 1)
		return cmd_usage_error(NULL, "dag status takes at most one run id");
	path = o->nargs == 1 ? xstrfmt("/v1/runs/%s", o->args[0]) :
	    xstrdup("/v1/runs?limit=50");
	reply = dag_call(o, "GET", path, NULL, 200);
	free(path);
	if (reply == NULL)
		return CMD_EXIT_FAIL;
	if (o->json)
		dag_print_json(reply);
	else if (o->nargs == 1)
		dag_print_run(reply);
	else {
		runs = json_object_get(reply, "runs");
		printf("%-22s %-24s %-10s %-20s %s\n", "RUN", "DAG", "STATUS",
		    "TRIGGER", "CREATED");
		json_array_foreach(runs, i, r) {
			dag_time(json_object_get(r, "created_at"), t, sizeof t);
			printf("%-22s %-24s %-10s %-20s %s\n",
			    dag_str(r, "run_id"), dag_str(r, "dag"),
			    dag_str(r, "status"), dag_str(r, "trigger"), t);
		}
	}
	json_decref(reply);
	return CMD_EXIT_OK;
}

/* Print one step's log; 0, or -1 (an error was printed) */
static int
dag_print_log(struct dag_opts *o, const char *run, const char *step,
    int header)
{
	struct httpc_response	 resp;
	char			*path, err[1024];
	int			 rc = -1;

	path = xstrfmt("/v1/runs/%s/steps/%s/log", run, step);
	if (httpc_request(o->c.url, "GET", path, o->c.token, NULL, NULL, 0, 0,
	    &resp, err, sizeof err) == -1) {
		fprintf(stderr, "mlopsd dag: %s\n", err);
		free(path);
		return -1;
	}
	free(path);
	if (resp.status == 200) {
		if (header)
			printf("==> %s <==\n", step);
		fwrite(resp.body, 1, resp.len, stdout);
		rc = 0;
	} else if (resp.status == 404 && header)
		rc = 0;	/* a step that never ran */
	else
		fprintf(stderr, "mlopsd dag: no log for step %s of run %s "
		    "(HTTP %d)\n", step, run, resp.status);
	httpc_response_free(&resp);
	return rc;
}

static int
dag_logs(struct dag_opts *o)
{
	json_t	*run, *s;
	char	*path;
	size_t	 i;
	int	 rc = CMD_EXIT_OK;

	if (o->nargs < 1 || o->nargs > 2)
		return cmd_usage_error(NULL, "dag logs takes RUN [STEP]");
	if (o->nargs == 2)
		return dag_print_log(o, o->args[0], o->args[1], 0) == 0 ?
		    CMD_EXIT_OK : CMD_EXIT_FAIL;
	path = xstrfmt("/v1/runs/%s", o->args[0]);
	run = dag_call(o, "GET", path, NULL, 200);
	free(path);
	if (run == NULL)
		return CMD_EXIT_FAIL;
	json_array_foreach(json_object_get(run, "steps"), i, s)
		if (dag_print_log(o, o->args[0], dag_str(s, "id"), 1) == -1)
			rc = CMD_EXIT_FAIL;
	json_decref(run);
	return rc;
}

static int
dag_cancel(struct dag_opts *o)
{
	json_t	*reply;
	char	*path;

	if (o->nargs != 1)
		return cmd_usage_error(NULL, "dag cancel takes one run id");
	path = xstrfmt("/v1/runs/%s/cancel", o->args[0]);
	reply = dag_call(o, "POST", path, NULL, 202);
	free(path);
	if (reply == NULL)
		return CMD_EXIT_FAIL;
	if (o->json)
		dag_print_json(reply);
	else
		printf("%s: cancelling\n", o->args[0]);
	json_decref(reply);
	return CMD_EXIT_OK;
}

static const struct {
	const char	*verb;
	int		(*fn)(struct dag_opts *);
} dag_verbs[] = {
	{ "list", dag_list },
	{ "run", dag_run },
	{ "status", dag_status },
	{ "logs", dag_logs },
	{ "cancel", dag_cancel },
};

/* -p K=V: V as a JSON number, boolean or null when it is one, else text. */
static int
dag_param(json_t *params, const char *kv)
{
	const char	*eq = strchr(kv, '=');
	char		*key;
	json_t		*v;

	if (eq == NULL || eq == kv)
		return -1;
	key = xstrndup(kv, (size_t)(eq - kv));
	v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
	if (v == NULL || json_is_object(v) || json_is_array(v) ||
	    json_is_string(v)) {
		json_decref(v);
		v = json_string(eq + 1);
	}
	json_object_set_new(params, key, v);
	free(key);
	return 0;
}

static int
cmd_dag_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "url", required_argument, NULL, 'u' },
		{ "output", required_argument, NULL, 'o' },
		{ "param", required_argument, NULL, 'p' },
		{ "from", required_argument, NULL, 'f' },
		{ "wait", no_argument, NULL, 'w' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct dag_opts	 o;
	const char	*config = NULL, *url = NULL;
	size_t		 i;
	int		 ch, rc;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	memset(&o, 0, sizeof o);
	o.params = json_object();
	while ((ch = getopt_long(argc, argv, ":c:o:p:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config = optarg;
			break;
		case 'u':
			url = optarg;
			break;
		case 'o':
			if (cmd_client_output(self, optarg, &o.json) != 0) {
				json_decref(o.params);
				return CMD_EXIT_USAGE;
			}
			break;
		case 'p':
			if (dag_param(o.params, optarg) == -1) {
				json_decref(o.params);
				return cmd_usage_error(self, "-p wants KEY=VALUE, "
				    "not \"%s\"", optarg);
			}
			break;
		case 'f':
			o.from = optarg;
			break;
		case 'w':
			o.wait = 1;
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			json_decref(o.params);
			return cmd_bad_option(self, ch, argv);
		}
	}
	rc = CMD_EXIT_USAGE;
	if (optind >= argc) {
		cmd_usage_error(self, "a subcommand is needed (list, run, "
		    "status, logs, cancel)");
		goto done;
	}
	for (i = 0; i < sizeof dag_verbs / sizeof dag_verbs[0]; i++)
		if (strcmp(argv[optind], dag_verbs[i].verb) == 0)
			break;
	if (i == sizeof dag_verbs / sizeof dag_verbs[0]) {
		cmd_usage_error(self, "unknown subcommand \"%s\" (list, run, "
		    "status, logs, cancel)", argv[optind]);
		goto done;
	}
	if (cmd_client_open(self, &o.c, config, url) != 0)
		goto done;
	o.args = argv + optind + 1;
	o.nargs = argc - optind - 1;
	rc = dag_verbs[i].fn(&o);
	cmd_client_free(&o.c);
done:
	json_decref(o.params);
	return rc;
}

const struct cmd_entry cmd_dag_entry = {
	.name = "dag",
	.usage = "dag list | run NAME [-p K=V]... [--from STEP] [--wait] | "
	    "status [RUN] | logs RUN [STEP] | cancel RUN  [-c FILE | --url URL] "
	    "[--output json]",
	.summary = "list, run and follow pipeline DAGs of a running daemon",
	.exec = cmd_dag_exec,
	.help =
	    "  list                   the DAGs of the repo\n"
	    "  run NAME               start a run; prints its id\n"
	    "    -p, --param K=V      a param (repeat); numbers and booleans "
	    "stay typed\n"
	    "    --from STEP          re-run STEP and what follows it, reusing "
	    "the\n"
	    "                         cached outputs of the steps upstream\n"
	    "    --wait               follow the run; exit 0 iff it succeeded\n"
	    "  status [RUN]           recent runs, or one run's steps\n"
	    "  logs RUN [STEP]        a step's log, or every step's\n"
	    "  cancel RUN             stop a run (finally: steps still run)\n"
	    "  -c, --config FILE      the daemon's config (its http.listen "
	    "and token)\n"
	    "  --url URL              the daemon, http://HOST:PORT "
	    "(else $MLOPSD_URL)\n"
	    "  --output json          the API's JSON instead of a table\n"
	    "The token is $MLOPSD_TOKEN, else the config's admin token.\n",
};
