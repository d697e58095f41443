/*
 * cmd-serve: `mlopsd serve -c FILE`, the daemon in the foreground.
 *
 * Loads the config (any error is a configuration error, exit 2, printed
 * exactly as the loader wrote it: "file:line:col: message"), then hands it
 * to the daemon (daemon.c) and runs until SIGTERM/SIGINT.  With --check it
 * only validates, for ExecStartPre= and for CI.  The log level is the
 * config's, raised by -v.
 */
#include <getopt.h>
#include <stdio.h>

#include "config.h"
#include "cmd/cmd.h"
#include "cmd/daemon.h"
#include "cmd/dags.h"
#include "cmd/models.h"
#include "cmd/online.h"
#include "common/config.h"
#include "common/log.h"
#include "ingest/ingest.h"

static int
cmd_serve_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct config	*cfg;
	struct daemon	*d;
	struct online	*o;
	struct models	*mo;
	struct dags	*dg;
	const char	*path = NULL;
	char		 err[1024];
	int		 ch, check = 0, rc;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	while ((ch = getopt_long(argc, argv, ":c:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			return cmd_bad_option(self, ch, argv);
		}
	}
	if (cmd_need_config(self, argc, argv, path) != CMD_EXIT_OK)
		return CMD_EXIT_USAGE;

	if ((cfg = config_load(path, err, sizeof err)) == NULL ||
	    ingest_check_config(cfg, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return CMD_EXIT_USAGE;
	}
	if (check) {
		printf("%s: ok\n", path);
		config_free(cfg);
		return CMD_EXIT_OK;
	}
	log_set_level(cmd_log_level(cfg->log_level));
	log_info("serve", "mlopsd %s starting with %s", PACKAGE_VERSION, path);
	if ((d = daemon_new(cfg, err, sizeof err)) == NULL) {
		log_error("serve", "%s", err);
		return CMD_EXIT_FAIL;
	}
	o = online_new(d, NULL, err, sizeof err);
	if (o == NULL && err[0] != '\0') {
		log_error("serve", "%s", err);
		daemon_free(d);
		return CMD_EXIT_FAIL;
	}
	if ((mo = models_new(d, err, sizeof err)) == NULL) {
		log_error("serve", "%s", err);
		online_free(o);
		daemon_free(d);
		return CMD_EXIT_FAIL;
	}
	if ((dg = dags_new(d, err, sizeof err)) == NULL) {
		log_error("serve", "%s", err);
		models_free(mo);
		online_free(o);
		daemon_free(d);
		return CMD_EXIT_FAIL;
	}
	rc = daemon_run(d, dags_on_listen, dg);
	dags_free(dg);
	models_free(mo);
	online_free(o);
	daemon_free(d);
	return rc;
}

const struct cmd_entry cmd_serve_entry = {
	.name = "serve",
	.usage = "serve -c FILE [--check] [-v]",
	.summary = "run the daemon in the foreground: ingest, online store, "
	    "HTTP API, pipelines",
	.exec = cmd_serve_exec,
	.help =
	    "  -c, --config FILE  the configuration (mlopsd.conf(5))\n"
	    "  --check            only validate FILE, print \"FILE: ok\"\n"
	    "  -v, --verbose      more log output than the config's log_level\n"
	    "Signals: SIGTERM/SIGINT stop within 10 s, SIGHUP reloads.\n",
};
