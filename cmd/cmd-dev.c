/*
 * cmd-dev: `mlopsd dev`, everything embedded for a first look.
 *
 * Starts an in-process Kafka (kmock.c) and the daemon with a config built
 * in memory: the defaults, the mock's bootstrap address, a data directory
 * of its own ($TMPDIR/mlopsd-dev.XXXXXX when TMPDIR is set, else
 * ./mlopsd-dev, kept after exit so a second look finds the same state)
 * and HTTP on --http or 127.0.0.1:8700.  Prints "kafka: HOST:PORT" and,
 * once HTTP listens, "ready: http://HOST:PORT" on stdout for scripts, and
 * logs the rest on stderr.  Ingest, the example repo and the event
 * generator join here as they are written.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/cmd.h"
#include "cmd/daemon.h"
#include "cmd/kmock.h"
#include "common/config.h"
#include "common/log.h"
#include "common/xmalloc.h"

#define DEV_HTTP_DEFAULT	"127.0.0.1:8700"
#define DEV_DATA_DIR		"./mlopsd-dev"

static void
cmd_dev_on_listen(void *arg, const char *addr)
{
	(void)arg;
	printf("ready: http://%s\n", addr);
	fflush(stdout);
	log_info("dev", "try: curl http://%s/readyz  (Ctrl-C stops)", addr);
}

/* Replace a config string the config owns. */
static void
cmd_dev_set(char **field, const char *value)
{
	free(*field);
	*field = value != NULL ? xstrdup(value) : NULL;
}

/* A fresh directory under $TMPDIR, or ./mlopsd-dev.  NULL with err. */
static char *
cmd_dev_data_dir(char *err, size_t errlen)
{
	const char	*tmp = getenv("TMPDIR");
	char		*dir;

	if (tmp == NULL || *tmp == '\0')
		return xstrdup(DEV_DATA_DIR);
	dir = xstrfmt("%s/mlopsd-dev.XXXXXX", tmp);
	if (mkdtemp(dir) == NULL) {
		snprintf(err, errlen, "cannot create a directory in TMPDIR %s: "
		    "%s", tmp, strerror(errno));
		free(dir);
		return NULL;
	}
	return dir;
}

static int
cmd_dev_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repo", required_argument, NULL, 'r' },
		{ "http", required_argument, NULL, 'H' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct kmock	*k = NULL;
	struct config	*cfg = NULL;
	struct daemon	*d = NULL;
	struct stat	 st;
	const char	*repo = NULL, *http = DEV_HTTP_DEFAULT;
	char		 err[1024], *dir = NULL;
	int		 ch, rc;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	while ((ch = getopt_long(argc, argv, ":v", opts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			repo = optarg;
			break;
		case 'H':
			http = optarg;
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			return cmd_bad_option(self, ch, argv);
		}
	}
	if (optind < argc)
		return cmd_usage_error(self, "unexpected argument \"%s\"",
		    argv[optind]);
	if (repo != NULL && (stat(repo, &st) == -1 || !S_ISDIR(st.st_mode)))
		return cmd_usage_error(self, "--repo %s: not a directory", repo);
	if ((cfg = config_defaults(err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return CMD_EXIT_USAGE;
	}
	log_set_level(cmd_log_level(cfg->log_level));

	rc = CMD_EXIT_FAIL;
	if ((dir = cmd_dev_data_dir(err, sizeof err)) == NULL) {
		log_error("dev", "%s", err);
		goto out;
	}
	if ((k = kmock_new(1, err, sizeof err)) == NULL) {
		log_error("dev", "%s", err);
		goto out;
	}
	cmd_dev_set(&cfg->data_dir, dir);
	cmd_dev_set(&cfg->http.listen, http);
	cmd_dev_set(&cfg->kafka.bootstrap, kmock_bootstrap(k));
	if (repo != NULL)
		cmd_dev_set(&cfg->repo, repo);

	printf("kafka: %s\n", kmock_bootstrap(k));
	fflush(stdout);
	log_info("dev", "kafka: in-process mock cluster at %s (topics are "
	    "created with 4 partitions on first use)", kmock_bootstrap(k));
	log_info("dev", "data dir: %s", dir);
	if (repo != NULL)
		log_info("dev", "feature repo: %s", repo);

	/* The daemon owns cfg from here, also when daemon_new() fails. */
	d = daemon_new(cfg, err, sizeof err);
	cfg = NULL;
	if (d == NULL) {
		log_error("dev", "%s", err);
		goto out;
	}
	rc = daemon_run(d, cmd_dev_on_listen, NULL);
out:
	/* Stop the daemon before the Kafka it consumes from. */
	daemon_free(d);
	kmock_free(k);
	if (cfg != NULL)
		config_free(cfg);
	free(dir);
	return rc;
}

const struct cmd_entry cmd_dev_entry = {
	.name = "dev",
	.usage = "dev [--repo DIR] [--http ADDR] [-v]",
	.summary = "everything embedded for a first look: in-process Kafka, "
	    "SQLite, HTTP API",
	.exec = cmd_dev_exec,
	.help =
	    "  --repo DIR     the feature repo to serve\n"
	    "  --http ADDR    HTTP listen address (default " DEV_HTTP_DEFAULT ")\n"
	    "  -v, --verbose  more log output\n"
	    "Prints \"kafka: HOST:PORT\" and \"ready: http://HOST:PORT\" on "
	    "stdout.\n",
};
