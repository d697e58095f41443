/*
 * cmd-dev: `mlopsd dev`, everything embedded for a first look.
 *
 * Starts an in-process Kafka (kmock.c) with a topic of 4 partitions per
 * source of the feature repo, the daemon with its feature store side
 * (online.c) on a config built in memory, and the event generator
 * (devgen.c) that sends --rate events per second to every source.  The
 * config is the defaults plus: the mock's bootstrap address, HTTP on
 * --http or 127.0.0.1:8700, the repo, and a data directory of its own
 * ($TMPDIR/mlopsd-dev.XXXXXX when TMPDIR is set, else ./mlopsd-dev, kept
 * after exit).  The Kafka starts empty on every run, so the online store
 * in that directory is removed at start: its positions would point past
 * the head of the new topics.  The SQLite offline store (offline.db) goes
 * with it: its (partition, offset) keys would collide with the new run's.
 *
 * The repo is --repo DIR, else the example repo, looked for in order at
 * $MLOPSD_SRCDIR/examples/repo (the source tree: `make check` sets it),
 * DIR/../examples/repo and DIR/examples/repo where DIR holds the binary
 * (an in-tree build, an unpacked tarball), and MLOPSD_DATADIR/examples/repo
 * when the build defines MLOPSD_DATADIR (an installed mlopsd).
 *
 * Prints "kafka: HOST:PORT" and, once HTTP listens, "ready: http://HOST:
 * PORT" and a few curl commands for the repo on stdout for scripts and
 * people; logs the rest on stderr.  Stops on SIGTERM/SIGINT, exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "cmd/daemon.h"
#include "cmd/devgen.h"
#include "cmd/kmock.h"
#include "cmd/dags.h"
#include "cmd/models.h"
#include "cmd/online.h"
#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"

#define DEV_HTTP_DEFAULT	"127.0.0.1:8700"
#define DEV_DATA_DIR		"./mlopsd-dev"
#define DEV_RATE_DEFAULT	50
#define DEV_RATE_MAX		1000000
#define DEV_PARTITIONS		4
#define DEV_EXAMPLE		"examples/repo"

/* Where the example repo may be; "" is the directory of the binary. */
static const struct {
	const char	*env;		/* NULL: the binary's directory */
	const char	*sub;
} dev_repo_places[] = {
	{ "MLOPSD_SRCDIR", "/" DEV_EXAMPLE },
	{ NULL, "/../" DEV_EXAMPLE },
	{ NULL, "/" DEV_EXAMPLE },
};

static void	cmd_dev_set(char **, const char *);

/* key: "value" (YAML double-quoted), or key: null */
static void
cmd_dev_yaml_str(FILE *f, const char *key, const char *v)
{
	const char	*p;

	if (v == NULL) {
		fprintf(f, "%s: null\n", key);
		return;
	}
	fprintf(f, "%s: \"", key);
	for (p = v; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fputc('\\', f);
		fputc(*p, f);
	}
	fprintf(f, "\"\n");
}

/*
 * Write the effective configuration to DATA_DIR/dev.yaml and make it the
 * config's path: pipeline steps get it as MLOPSD_CONFIG (contracts §2),
 * so builtins open the same data dir, repo and Kafka as this daemon.
 */
static int
cmd_dev_write_config(struct config *cfg, char *err, size_t errlen)
{
	char	*path, abs[PATH_MAX];
	FILE	*f;

	/* Absolute paths: steps run in their run's directory. */
	(void)mkdir(cfg->data_dir, 0755);
	if (realpath(cfg->data_dir, abs) != NULL)
		cmd_dev_set(&cfg->data_dir, abs);
	if (realpath(cfg->repo, abs) != NULL)
		cmd_dev_set(&cfg->repo, abs);
	path = xstrfmt("%s/dev.yaml", cfg->data_dir);
	if ((f = fopen(path, "w")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	fprintf(f, "# the effective configuration of `mlopsd dev`\n");
	cmd_dev_yaml_str(f, "data_dir", cfg->data_dir);
	cmd_dev_yaml_str(f, "repo", cfg->repo);
	fprintf(f, "log_level: %s\nkafka:\n", log_level_name(cfg->log_level));
	cmd_dev_yaml_str(f, "  bootstrap", cfg->kafka.bootstrap);
	fprintf(f, "offline:\n");
	cmd_dev_yaml_str(f, "  postgres", cfg->offline.postgres);
	fprintf(f, "http:\n");
	cmd_dev_yaml_str(f, "  listen", cfg->http.listen);
	if (fclose(f) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	free(cfg->path);
	cfg->path = path;
	return 0;
}

static void
cmd_dev_on_listen(void *arg, const char *addr)
{
	const struct repo	*repo = arg;
	const struct repo_view	*v;
	size_t			 i;

	printf("ready: http://%s\n", addr);
	printf("try:\n");
	for (i = 0; i < repo->nviews; i++) {
		v = &repo->views[i];
		printf("  curl http://%s/v1/features/%s/%s\n", addr, v->name,
		    v->njoin_keys == 1 ? "1" : "'1|1'");
	}
	for (i = 0; i < repo->nviews; i++) {
		v = &repo->views[i];
		if (v->njoin_keys != 1 || v->noutputs == 0)
			continue;
		printf("  curl -X POST http://%s/get-online-features -d "
		    "'{\"features\": [\"%s\"], \"entities\": {\"%s\": "
		    "[1, 2, 3]}}'\n", addr, v->outputs[0], v->join_keys[0]);
		break;
	}
	printf("  curl http://%s/metrics\n", addr);
	printf("  mlopsd models list --url http://%s\n", addr);
	printf("  mlopsd dag list --url http://%s\n", addr);
	fflush(stdout);
	log_info("dev", "serving on http://%s (Ctrl-C stops)", addr);
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

/* Remove the online store of an earlier run; 0 or -1 with err. */
static int
cmd_dev_fresh_store(const char *dir, char *err, size_t errlen)
{
	static const char *const files[] = {
		"online.db", "online.db-wal", "online.db-shm",
		"offline.db", "offline.db-wal", "offline.db-shm",
	};
	char	*path;
	size_t	 i;
	int	 rc = 0, lock;

	/*
	 * Not under a dev that is running there: its stores would go.  The
	 * lock is let go just before daemon_new() takes it again.
	 */
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", dir,
		    strerror(errno));
		return -1;
	}
	if ((lock = daemon_lock_dir(dir, err, errlen)) == -1)
		return -1;
	for (i = 0; i < sizeof files / sizeof files[0] && rc == 0; i++) {
		path = xstrfmt("%s/%s", dir, files[i]);
		if (unlink(path) == 0) {
			if (i == 0 || i == 3)
				log_info("dev", "removed the %s store of an "
				    "earlier run (%s): the in-process Kafka "
				    "starts empty", i == 0 ? "online" :
				    "offline", path);
		} else if (errno != ENOENT) {
			snprintf(err, errlen, "cannot remove %s: %s", path,
			    strerror(errno));
			rc = -1;
		}
		free(path);
	}
	close(lock);
	return rc;
}

static int
cmd_dev_is_dir(const char *path)
{
	struct stat	st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * The example repo (see the top of the file); NULL with the places
 * tried in err.
 */
static char *
cmd_dev_find_repo(char *err, size_t errlen)
{
	char		 exe[PATH_MAX], *path;
	const char	*base, *exedir = NULL;
	ssize_t		 n;
	size_t		 i, off;

	if ((n = readlink("/proc/self/exe", exe, sizeof exe - 1)) > 0) {
		exe[n] = '\0';
		exedir = dirname(exe);
	}
	off = (size_t)snprintf(err, errlen, "no example repo found (tried");
	for (i = 0; i < sizeof dev_repo_places / sizeof dev_repo_places[0];
	    i++) {
		if (dev_repo_places[i].env != NULL)
			base = getenv(dev_repo_places[i].env);
		else
			base = exedir;
		if (base == NULL || *base == '\0')
			continue;
		path = xstrfmt("%s%s", base, dev_repo_places[i].sub);
		if (cmd_dev_is_dir(path))
			return path;
		if (off < errlen)
			off += (size_t)snprintf(err + off, errlen - off, " %s",
			    path);
		free(path);
	}
#ifdef MLOPSD_DATADIR
	path = xstrdup(MLOPSD_DATADIR "/" DEV_EXAMPLE);
	if (cmd_dev_is_dir(path))
		return path;
	if (off < errlen)
		off += (size_t)snprintf(err + off, errlen - off, " %s", path);
	free(path);
#endif
	if (off < errlen)
		snprintf(err + off, errlen - off, "); give --repo DIR or set "
		    "MLOPSD_SRCDIR to the source tree");
	return NULL;
}

/* Parse --rate: events per second, > 0. */
static int
cmd_dev_rate(const char *s, double *out)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v > 0) ||
	    v > DEV_RATE_MAX)
		return -1;
	*out = v;
	return 0;
}

/* Create each source's topic once (two sources may share one). */
static int
cmd_dev_topics(struct kmock *k, const struct repo *repo, char *err,
    size_t errlen)
{
	size_t	i, j;

	for (i = 0; i < repo->nsources; i++) {
		for (j = 0; j < i; j++)
			if (strcmp(repo->sources[j].topic,
			    repo->sources[i].topic) == 0)
				break;
		if (j < i)
			continue;
		if (kmock_topic_create(k, repo->sources[i].topic,
		    DEV_PARTITIONS, err, errlen) == -1)
			return -1;
	}
	return 0;
}

static int
cmd_dev_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repo", required_argument, NULL, 'r' },
		{ "http", required_argument, NULL, 'H' },
		{ "rate", required_argument, NULL, 'R' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct kmock	*k = NULL;
	struct config	*cfg = NULL;
	struct daemon	*d = NULL;
	struct online	*o = NULL;
	struct models	*mo = NULL;
	struct dags	*dg = NULL;
	struct devgen	*g = NULL;
	struct repo	*repo = NULL;
	const char	*repo_arg = NULL, *http = DEV_HTTP_DEFAULT;
	char		 err[REPO_ERRLEN], *dir = NULL, *repo_dir = NULL;
	double		 rate = DEV_RATE_DEFAULT;
	int		 ch, rc;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	while ((ch = getopt_long(argc, argv, ":v", opts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			repo_arg = optarg;
			break;
		case 'H':
			http = optarg;
			break;
		case 'R':
			if (cmd_dev_rate(optarg, &rate) == -1)
				return cmd_usage_error(self, "--rate: \"%s\" is "
				    "not a number of events per second above 0 "
				    "and at most %d", optarg, DEV_RATE_MAX);
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
	if (config_check_listen(http, err, sizeof err) != 0)
		return cmd_usage_error(self, "--http: %s", err);
	if (repo_arg != NULL && !cmd_dev_is_dir(repo_arg))
		return cmd_usage_error(self, "--repo %s: not a directory",
		    repo_arg);
	if (repo_arg != NULL)
		repo_dir = xstrdup(repo_arg);
	else if ((repo_dir = cmd_dev_find_repo(err, sizeof err)) == NULL)
		return cmd_usage_error(self, "%s", err);
	if ((cfg = config_defaults(err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		free(repo_dir);
		return CMD_EXIT_USAGE;
	}
	log_set_level(cmd_log_level(cfg->log_level));

	rc = CMD_EXIT_FAIL;
	if ((repo = repo_load(repo_dir, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s", err);
		if (err[0] != '\0' && err[strlen(err) - 1] != '\n')
			fputc('\n', stderr);
		goto out;
	}
	if ((dir = cmd_dev_data_dir(err, sizeof err)) == NULL ||
	    cmd_dev_fresh_store(dir, err, sizeof err) == -1) {
		log_error("dev", "%s", err);
		goto out;
	}
	if ((k = kmock_new(1, err, sizeof err)) == NULL ||
	    cmd_dev_topics(k, repo, err, sizeof err) == -1) {
		log_error("dev", "%s", err);
		goto out;
	}
	cmd_dev_set(&cfg->data_dir, dir);
	cmd_dev_set(&cfg->http.listen, http);
	cmd_dev_set(&cfg->kafka.bootstrap, kmock_bootstrap(k));
	cmd_dev_set(&cfg->repo, repo_dir);
	if (cmd_dev_write_config(cfg, err, sizeof err) == -1) {
		log_error("dev", "%s", err);
		goto out;
	}

	printf("kafka: %s\n", kmock_bootstrap(k));
	fflush(stdout);
	log_info("dev", "kafka: in-process mock cluster at %s, one topic of "
	    "%d partitions per source", kmock_bootstrap(k), DEV_PARTITIONS);
	log_info("dev", "data dir: %s", dir);
	log_info("dev", "feature repo: %s", repo_dir);

	/* The daemon owns cfg from here, also when daemon_new() fails. */
	d = daemon_new(cfg, err, sizeof err);
	cfg = NULL;
	if (d == NULL) {
		log_error("dev", "%s", err);
		goto out;
	}
	if ((o = online_new(d, NULL, err, sizeof err)) == NULL) {
		log_error("dev", "%s", err);
		goto out;
	}
	if ((mo = models_new(d, err, sizeof err)) == NULL) {
		log_error("dev", "%s", err);
		goto out;
	}
	if ((dg = dags_new(d, err, sizeof err)) == NULL) {
		log_error("dev", "%s", err);
		goto out;
	}
	if ((g = devgen_new(repo, kmock_bootstrap(k),
	    (uint64_t)util_now_ms(), err, sizeof err)) == NULL ||
	    devgen_start(g, rate, err, sizeof err) == -1) {
		log_error("dev", "%s", err);
		goto out;
	}
	/* Registered last, so stopped first: no events after ingest stops. */
	daemon_on_stop(d, devgen_stop, g);
	rc = daemon_run(d, cmd_dev_on_listen, repo);
out:
	/* Stop the producers and the daemon before the Kafka they use. */
	devgen_free(g);
	dags_free(dg);
	models_free(mo);
	online_free(o);
	daemon_free(d);
	kmock_free(k);
	repo_free(repo);
	if (cfg != NULL)
		config_free(cfg);
	free(repo_dir);
	free(dir);
	return rc;
}

const struct cmd_entry cmd_dev_entry = {
	.name = "dev",
	.usage = "dev [--repo DIR] [--http ADDR] [--rate N] [-v]",
	.summary = "everything embedded for a first look: in-process Kafka, "
	    "the example repo, an event generator, HTTP API",
	.exec = cmd_dev_exec,
	.help =
	    "  --repo DIR     the feature repo to serve (default: the example\n"
	    "                 repo, from $MLOPSD_SRCDIR/examples/repo or next\n"
	    "                 to the binary)\n"
	    "  --http ADDR    HTTP listen address (default " DEV_HTTP_DEFAULT ")\n"
	    "  --rate N       synthetic events per second for each source of\n"
	    "                 the repo (default 50)\n"
	    "  -v, --verbose  more log output\n"
	    "Prints \"kafka: HOST:PORT\" and \"ready: http://HOST:PORT\" on "
	    "stdout.\n",
};
