/*
 * test_cli: the mlopsd command line (cmd.c and the commands), the parts of
 * the daemon that need no HTTP traffic (daemon_new and its data_dir), and
 * the systemd notification protocol (sdnotify.c).
 *
 * Each command line runs in a forked child with stdout and stderr sent to
 * temporary files, so getopt state, exit paths and the -v count of one
 * case cannot leak into the next.
 */
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "cmd/cmd.h"
#include "cmd/daemon.h"
#include "common/config.h"
#include "common/http.h"
#include "common/sdnotify.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "tests/unit/testutil.h"

static char	tmpdir[256];

static char *
write_file(const char *name, const char *text)
{
	char	*path = xstrfmt("%s/%s", tmpdir, name);
	FILE	*f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static char *
good_config(void)
{
	char	*text = xstrfmt("data_dir: %s/data\nlog_level: info\n"
	    "http:\n  listen: 127.0.0.1:0\n", tmpdir);
	char	*path = write_file("good.yaml", text);

	free(text);
	return path;
}

static const char *all_commands[] = {
	"serve", "dev", "kafka-mock", "produce", "repo", "training-set",
	"verify", "dag", "models",
};
#define NELEM(a)	(sizeof (a) / sizeof (a)[0])

static void
test_help_lists_every_command(void **state)
{
	static const char	*flags[] = { "--help", "-h" };
	struct testutil_run		 r;
	char			 needle[64];
	size_t			 i, j;

	(void)state;
	for (j = 0; j < NELEM(flags); j++) {
		testutil_run_cmd(&r, flags[j], NULL);
		assert_int_equal(r.rc, 0);
		assert_string_equal(r.err, "");
		for (i = 0; i < NELEM(all_commands); i++) {
			snprintf(needle, sizeof needle, "\n  mlopsd %s ",
			    all_commands[i]);
			assert_non_null(strstr(r.out, needle));
		}
	}
}

static void
test_version(void **state)
{
	struct testutil_run	r;

	(void)state;
	testutil_run_cmd(&r, "--version", NULL);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, "mlopsd " PACKAGE_VERSION "\n");
}

static void
test_no_command(void **state)
{
	struct testutil_run	r;

	(void)state;
	testutil_run_cmd(&r, NULL);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.out, "");
	assert_non_null(strstr(r.err, "usage: mlopsd "));
	assert_non_null(strstr(r.err, "mlopsd serve -c FILE"));
}

static void
test_unknown_command(void **state)
{
	struct testutil_run	r;

	(void)state;
	testutil_run_cmd(&r, "frobnicate", NULL);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.out, "");
	assert_non_null(strstr(r.err, "mlopsd: unknown command \"frobnicate\""));
}

static void
test_unknown_global_option(void **state)
{
	struct testutil_run	r;

	(void)state;
	testutil_run_cmd(&r, "--frob", "serve", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "mlopsd: unknown option --frob"));
}

static void
test_serve_needs_config(void **state)
{
	struct testutil_run	r;

	(void)state;
	testutil_run_cmd(&r, "serve", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "mlopsd serve: -c FILE is required"));
	assert_non_null(strstr(r.err, "usage: mlopsd serve -c FILE"));
}

static void
test_serve_bad_options(void **state)
{
	struct testutil_run	r;

	(void)state;
	testutil_run_cmd(&r, "serve", "--bogus", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "mlopsd serve: unknown option --bogus"));
	testutil_run_cmd(&r, "serve", "-x", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "mlopsd serve: unknown option -x"));
	testutil_run_cmd(&r, "serve", "-c", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "option -c needs a value"));
	testutil_run_cmd(&r, "serve", "--config", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "option --config needs a value"));
	testutil_run_cmd(&r, "serve", "-c", "x.yaml", "extra", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "unexpected argument \"extra\""));
}

static void
test_serve_check_good(void **state)
{
	struct testutil_run	 r;
	char		*path = good_config(), *want;

	(void)state;
	want = xstrfmt("%s: ok\n", path);
	testutil_run_cmd(&r, "serve", "-c", path, "--check", NULL);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, want);
	/* -v is accepted before the command and among its options. */
	testutil_run_cmd(&r, "-v", "serve", "--check", "--config", path, "-v", NULL);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.out, want);
	free(want);
	free(path);
}

static void
test_serve_check_bad(void **state)
{
	struct testutil_run	 r;
	char		*path, *want;

	(void)state;
	path = write_file("bad.yaml", "log_level: info\nno_such_key: 1\n");
	want = xstrfmt("%s:2:1: ", path);
	testutil_run_cmd(&r, "serve", "--check", "-c", path, NULL);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.out, "");
	/* The loader's message, as-is: it starts with file:line:col. */
	assert_memory_equal(r.err, want, strlen(want));
	assert_non_null(strstr(r.err, "no_such_key"));
	free(want);
	free(path);

	testutil_run_cmd(&r, "serve", "--check", "-c", "/nonexistent/mlopsd.yaml", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "/nonexistent/mlopsd.yaml"));

	/*
	 * A kafka property librdkafka refuses is a config error found by
	 * --check, with where it was written; serve used to start and exit
	 * 1 from ingest.
	 */
	path = write_file("badprop.yaml", "kafka:\n  properties:\n"
	    "    fetch.wait.max.ms: 100\n    no.such.prop: 1\n");
	want = xstrfmt("%s:4:5: kafka property no.such.prop: No such "
	    "configuration property", path);
	testutil_run_cmd(&r, "serve", "--check", "-c", path, NULL);
	assert_int_equal(r.rc, 2);
	assert_memory_equal(r.err, want, strlen(want));
	free(want);
	free(path);
}

/* dev --http is checked before anything starts: a usage error. */
static void
test_dev_bad_http(void **state)
{
	struct testutil_run	 r;

	(void)state;
	testutil_run_cmd(&r, "dev", "--http", "bogus", NULL);
	assert_int_equal(r.rc, 2);
	assert_string_equal(r.out, "");
	assert_non_null(strstr(r.err, "--http: expected host:port"));
}

/* training-set and verify: what is missing or wrong is a usage error. */
static void
test_trainset_usage(void **state)
{
	static const struct {
		const char	*argv[6];
		const char	*msg;
	} cases[] = {
		{ { "training-set", "--spine", "s.csv", "--features", "v", NULL },
		  "-c FILE is required" },
		{ { "training-set", "-c", "x.yaml", "--features", "v", NULL },
		  "--spine CSV is required" },
		{ { "training-set", "-c", "x.yaml", "--spine", "s.csv", NULL },
		  "--features LIST is required" },
		{ { "training-set", "-c", "x.yaml", "extra", NULL },
		  "unexpected argument \"extra\"" },
		{ { "verify", NULL }, "-c FILE is required" },
		{ { "verify", "-c", "x.yaml", "--sample", "0", NULL },
		  "--sample: not a positive integer: \"0\"" },
		{ { "verify", "--bogus", NULL }, "unknown option --bogus" },
	};
	struct testutil_run	r;
	size_t		i;

	(void)state;
	for (i = 0; i < NELEM(cases); i++) {
		const char *const *a = cases[i].argv;

		testutil_run_cmd(&r, a[0], a[1], a[2], a[3], a[4], a[5]);
		assert_int_equal(r.rc, 2);
		if (strstr(r.err, cases[i].msg) == NULL)
			fail_msg("%s: %s: no \"%s\" in:\n%s", a[0],
			    a[1] ? a[1] : "", cases[i].msg, r.err);
	}
	/* A config that does not load: exit 2 with the loader's message. */
	testutil_run_cmd(&r, "verify", "-c", "/nonexistent/mlopsd.yaml", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "/nonexistent/mlopsd.yaml"));
}

static void
test_every_command_help(void **state)
{
	struct testutil_run	r;
	char		want[128];
	size_t		i;

	(void)state;
	for (i = 0; i < NELEM(all_commands); i++) {
		testutil_run_cmd(&r, all_commands[i], "--help", NULL);
		assert_int_equal(r.rc, 0);
		assert_string_equal(r.err, "");
		snprintf(want, sizeof want, "usage: mlopsd %s", all_commands[i]);
		assert_memory_equal(r.out, want, strlen(want));
		testutil_run_cmd(&r, all_commands[i], "-h", NULL);
		assert_int_equal(r.rc, 0);
		assert_memory_equal(r.out, want, strlen(want));
	}
}

static void
test_kafka_mock_bad_options(void **state)
{
	static const struct {
		const char	*opt, *val, *msg;
	} cases[] = {
		{ "--topic", "a b", "--topic a b: a topic name is 1 to 249" },
		{ "--topic", ":3", "--topic :3: a topic name" },
		{ "--topic", "a:0", "--topic a:0: the partition count must be" },
		{ "--topic", "a:x", "--topic a:x: the partition count must be" },
		{ "--partitions", "0", "--partitions: \"0\" is not a number" },
		{ "--brokers", "x", "--brokers: \"x\" is not a number from 1" },
		{ "--listen", "0.0.0.0:9092", "--listen 0.0.0.0:9092: the mock" },
	};
	struct testutil_run	r;
	size_t		i;

	(void)state;
	for (i = 0; i < NELEM(cases); i++) {
		testutil_run_cmd(&r, "kafka-mock", cases[i].opt, cases[i].val, NULL);
		assert_int_equal(r.rc, 2);
		assert_string_equal(r.out, "");
		if (strstr(r.err, cases[i].msg) == NULL)
			fail_msg("%s %s: got \"%s\"", cases[i].opt, cases[i].val,
			    r.err);
	}
}

static void
test_dev_bad_repo(void **state)
{
	struct testutil_run	r;

	(void)state;
	testutil_run_cmd(&r, "dev", "--repo", "/nonexistent/repo", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "--repo /nonexistent/repo: not a "
	    "directory"));
}

static void
test_log_level_from_verbosity(void **state)
{
	struct testutil_run	r;

	(void)state;
	/* Run something so cmd_main resets the count to zero. */
	testutil_run_cmd(&r, "--version", NULL);
	assert_int_equal(cmd_log_level(LOG_WARN), LOG_WARN);
	cmd_verbose();
	assert_int_equal(cmd_log_level(LOG_INFO), LOG_DEBUG);
	assert_int_equal(cmd_log_level(LOG_ERROR), LOG_WARN);
	cmd_verbose();
	cmd_verbose();
	assert_int_equal(cmd_log_level(LOG_INFO), LOG_DEBUG);
}

static struct config *
config_with_data_dir(const char *dir)
{
	char		 err[256];
	struct config	*cfg = config_defaults(err, sizeof err);

	assert_non_null(cfg);
	free(cfg->data_dir);
	cfg->data_dir = xstrdup(dir);
	return cfg;
}

static void
test_daemon_creates_data_dir(void **state)
{
	struct daemon	*d;
	struct stat	 st;
	char		 err[256], *dir = xstrfmt("%s/a/b//c/", tmpdir);
	mode_t		 um = umask(0);

	(void)state;
	umask(um);
	d = daemon_new(config_with_data_dir(dir), err, sizeof err);
	assert_non_null(d);
	assert_int_equal(stat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0750 & ~um);
	assert_non_null(daemon_metrics(d));
	assert_string_equal(daemon_config(d)->data_dir, dir);
	daemon_free(d);
	free(dir);
}

static void
test_daemon_data_dir_errors(void **state)
{
	struct daemon	*d;
	char		 err[256], *file = write_file("plain", "x"), *dir;

	(void)state;
	dir = xstrfmt("%s/sub", file);
	d = daemon_new(config_with_data_dir(dir), err, sizeof err);
	assert_null(d);
	assert_non_null(strstr(err, "data_dir "));
	assert_non_null(strstr(err, "cannot create"));
	free(dir);

	d = daemon_new(config_with_data_dir(file), err, sizeof err);
	assert_null(d);
	assert_non_null(strstr(err, "not a directory"));

	d = daemon_new(config_with_data_dir(""), err, sizeof err);
	assert_null(d);
	assert_string_equal(err, "data_dir is not set");
	free(file);
}

/*
 * A daemon in a child process, with hooks that record what they see in
 * a file, so the parent can drive it over HTTP and signals.
 */
struct child {
	pid_t	 pid;
	char	 addr[64];
	FILE	*err;		/* the child's stderr */
};

enum hook_mode { HOOK_OK, HOOK_FAIL, HOOK_HANG };

static char	*hook_trace;	/* file the hooks append to */

static void
hook_note(const char *what)
{
	FILE	*f = fopen(hook_trace, "a");

	if (f != NULL) {
		fputs(what, f);
		fclose(f);
	}
}

static int
hook_reload(void *arg, char *err, size_t errlen)
{
	enum hook_mode	mode = (enum hook_mode)(intptr_t)arg;

	hook_note(mode == HOOK_OK ? "R" : "r");
	if (mode == HOOK_FAIL) {
		snprintf(err, errlen, "repo: features/x.yaml:3:1: bad");
		return -1;
	}
	return 0;
}

static void
hook_stop_a(void *arg)
{
	(void)arg;
	hook_note("a");
}

static void
hook_stop_b(void *arg)
{
	enum hook_mode	mode = (enum hook_mode)(intptr_t)arg;

	hook_note("b");
	if (mode == HOOK_HANG)
		sleep(60);
}

static int
hook_ready_no(void *arg, char *why, size_t whylen)
{
	(void)arg;
	snprintf(why, whylen, "kafka: partitions not assigned");
	return 0;
}

static int
hook_ready_yes(void *arg, char *why, size_t whylen)
{
	(void)arg;
	(void)why;
	(void)whylen;
	return 1;
}

static void
route_hello(struct http_req *req, void *arg)
{
	(void)arg;
	http_reply(req, 200, "text/plain", "hello", 5);
}

static void
child_on_listen(void *arg, const char *addr)
{
	int	fd = *(int *)arg;

	if (write(fd, addr, strlen(addr) + 1) < 0)
		_exit(99);
	close(fd);
}

static void
start_child(struct child *c, enum hook_mode mode, int not_ready)
{
	static const struct http_route	routes[] = {
		{ "GET", "/hello", route_hello, NULL, 0 },
	};
	struct pollfd	 pfd;
	int		 fds[2];
	ssize_t		 n;

	free(hook_trace);
	hook_trace = xstrfmt("%s/hooks.%d", tmpdir, (int)mode);
	unlink(hook_trace);
	c->err = tmpfile();
	assert_non_null(c->err);
	assert_int_equal(pipe(fds), 0);
	fflush(stdout);
	fflush(stderr);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		struct config	*cfg;
		struct daemon	*d;
		char		 err[256];
		int		 rc;

		close(fds[0]);
		dup2(fileno(c->err), STDERR_FILENO);
		cfg = config_with_data_dir(tmpdir);
		free(cfg->http.listen);
		cfg->http.listen = xstrdup("127.0.0.1:0");
		if ((d = daemon_new(cfg, err, sizeof err)) == NULL)
			_exit(98);
		daemon_add_routes(d, routes, 1);
		daemon_on_reload(d, hook_reload, (void *)(intptr_t)HOOK_OK);
		daemon_on_reload(d, hook_reload, (void *)(intptr_t)mode);
		daemon_on_stop(d, hook_stop_a, NULL);
		daemon_on_stop(d, hook_stop_b, (void *)(intptr_t)mode);
		daemon_on_ready(d, hook_ready_yes, NULL);
		if (not_ready)
			daemon_on_ready(d, hook_ready_no, NULL);
		rc = daemon_run(d, child_on_listen, &fds[1]);
		daemon_free(d);
		_exit(rc);
	}
	close(fds[1]);
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	n = read(fds[0], c->addr, sizeof c->addr - 1);
	assert_true(n > 0);
	c->addr[n] = '\0';
	close(fds[0]);
}

/* Signal the child and wait for its exit code; *secs is how long it took. */
static int
stop_child(struct child *c, int sig, double *secs)
{
	uint64_t	t0 = util_mono_ns();
	int		status;

	kill(c->pid, sig);
	assert_int_equal(waitpid(c->pid, &status, 0), c->pid);
	if (secs != NULL)
		*secs = (double)(util_mono_ns() - t0) / 1e9;
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static char *
child_log(struct child *c)
{
	char	*buf = xmalloc(16384);

	testutil_slurp(c->err, buf, 16384);
	return buf;
}

/* GET path from the child; returns the status, the body into body. */
static int
http_get(struct child *c, const char *path, char *body, size_t len)
{
	struct sockaddr_in	 sin;
	char			 host[64], req[256], *resp, *p;
	size_t			 got = 0;
	ssize_t			 n;
	int			 fd, port, status = -1;

	assert_int_equal(util_split_hostport(c->addr, host, sizeof host,
	    &port), 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sin.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n\r\n", path);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	resp = xmalloc(65536);
	while (got < 65535 && (n = read(fd, resp + got, 65535 - got)) > 0)
		got += (size_t)n;
	resp[got] = '\0';
	close(fd);
	sscanf(resp, "HTTP/1.%*d %d", &status);
	p = strstr(resp, "\r\n\r\n");
	snprintf(body, len, "%s", p != NULL ? p + 4 : "");
	free(resp);
	return status;
}

static void
test_daemon_routes_and_ready_hooks(void **state)
{
	struct child	c;
	char		body[4096];

	(void)state;
	start_child(&c, HOOK_OK, 1);
	assert_int_equal(http_get(&c, "/hello", body, sizeof body), 200);
	assert_string_equal(body, "hello");
	assert_int_equal(http_get(&c, "/readyz", body, sizeof body), 503);
	assert_non_null(strstr(body, "\"not_ready\""));
	assert_non_null(strstr(body, "\"kafka: partitions not assigned\""));
	assert_int_equal(http_get(&c, "/healthz", body, sizeof body), 200);
	assert_int_equal(stop_child(&c, SIGTERM, NULL), 0);
	fclose(c.err);
}

static void
test_daemon_reload_failure_keeps_serving(void **state)
{
	struct child	 c;
	char		 body[16384], *log, *trace;
	FILE		*f;
	int		 i;

	(void)state;
	start_child(&c, HOOK_FAIL, 0);
	assert_int_equal(http_get(&c, "/readyz", body, sizeof body), 200);
	kill(c.pid, SIGHUP);
	/* The counter says when the reload has run. */
	for (i = 0; i < 200; i++) {
		assert_int_equal(http_get(&c, "/metrics", body, sizeof body),
		    200);
		if (strstr(body, "mlopsd_reloads_total{result=\"failed\"} 1"))
			break;
		usleep(10000);
	}
	assert_non_null(strstr(body,
	    "mlopsd_reloads_total{result=\"failed\"} 1"));
	assert_non_null(strstr(body, "mlopsd_reloads_total{result=\"ok\"} 0"));
	assert_int_equal(http_get(&c, "/healthz", body, sizeof body), 200);
	assert_int_equal(stop_child(&c, SIGINT, NULL), 0);
	log = child_log(&c);
	assert_non_null(strstr(log, "reload failed, keeping the old state: "
	    "repo: features/x.yaml:3:1: bad"));
	free(log);
	/* Reload hooks in order, then stop hooks in reverse. */
	f = fopen(hook_trace, "r");
	assert_non_null(f);
	trace = xmalloc(64);
	testutil_slurp(f, trace, 64);
	assert_string_equal(trace, "Rrba");
	free(trace);
}

static void
test_daemon_stop_timeout(void **state)
{
	struct child	 c;
	char		*log;
	double		 secs;

	(void)state;
	start_child(&c, HOOK_HANG, 0);
	assert_int_equal(stop_child(&c, SIGTERM, &secs), 1);
	assert_true(secs >= 9.5 && secs < 12);
	log = child_log(&c);
	assert_non_null(strstr(log, "shutdown did not finish within 10 s"));
	free(log);
}

/* Bind a datagram socket at `name` (a path, or '@' for abstract). */
static int
notify_listener(const char *name)
{
	struct sockaddr_un	sun;
	socklen_t		len;
	struct timeval		tv = { 2, 0 };
	int			fd = socket(AF_UNIX, SOCK_DGRAM, 0);

	assert_true(fd >= 0);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, name);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	    strlen(name));
	if (name[0] == '@')
		sun.sun_path[0] = '\0';
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, len), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return fd;
}

static void
test_sdnotify_path_and_abstract(void **state)
{
	char	 buf[64], *names[2];
	ssize_t	 n;
	int	 fd, i;

	(void)state;
	names[0] = xstrfmt("%s/notify.sock", tmpdir);
	names[1] = xstrfmt("@mlopsd-test-%ld", (long)getpid());
	for (i = 0; i < 2; i++) {
		fd = notify_listener(names[i]);
		setenv("NOTIFY_SOCKET", names[i], 1);
		assert_int_equal(sdnotify("READY=1\nSTATUS=x"), 0);
		n = recv(fd, buf, sizeof buf - 1, 0);
		assert_int_equal(n, 16);
		buf[n] = '\0';
		assert_string_equal(buf, "READY=1\nSTATUS=x");
		close(fd);
		free(names[i]);
	}
	/* Not under systemd: nothing to do, and no error. */
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(sdnotify("READY=1"), 0);
	/* A relative path is not a notify socket. */
	setenv("NOTIFY_SOCKET", "relative.sock", 1);
	assert_int_equal(sdnotify("READY=1"), -1);
	unsetenv("NOTIFY_SOCKET");
}

static void
test_sdnotify_watchdog(void **state)
{
	char	pid[32];

	(void)state;
	unsetenv("WATCHDOG_PID");
	unsetenv("WATCHDOG_USEC");
	assert_int_equal(sdnotify_watchdog_usec(), 0);
	setenv("WATCHDOG_USEC", "3000000", 1);
	assert_int_equal(sdnotify_watchdog_usec(), 3000000);
	snprintf(pid, sizeof pid, "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(sdnotify_watchdog_usec(), 3000000);
	setenv("WATCHDOG_PID", "1", 1);		/* meant for another process */
	assert_int_equal(sdnotify_watchdog_usec(), 0);
	unsetenv("WATCHDOG_PID");
	setenv("WATCHDOG_USEC", "3s", 1);
	assert_int_equal(sdnotify_watchdog_usec(), 0);
	setenv("WATCHDOG_USEC", "-5", 1);
	assert_int_equal(sdnotify_watchdog_usec(), 0);
	unsetenv("WATCHDOG_USEC");
}

static int
setup(void **state)
{
	const char	*base = getenv("TMPDIR");

	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "%s/test_cli.XXXXXX",
	    base != NULL ? base : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	/* The tests set their own; one from the caller would interfere. */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("MLOPSD_DATA_DIR");
	unsetenv("MLOPSD_LOG_LEVEL");
	return 0;
}

static int
teardown(void **state)
{
	char	*cmd = xstrfmt("rm -rf '%s'", tmpdir);
	int	 rc;

	(void)state;
	rc = system(cmd);
	free(cmd);
	free(hook_trace);
	return rc == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_help_lists_every_command),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_no_command),
		cmocka_unit_test(test_unknown_command),
		cmocka_unit_test(test_unknown_global_option),
		cmocka_unit_test(test_serve_needs_config),
		cmocka_unit_test(test_serve_bad_options),
		cmocka_unit_test(test_serve_check_good),
		cmocka_unit_test(test_serve_check_bad),
		cmocka_unit_test(test_dev_bad_http),
		cmocka_unit_test(test_trainset_usage),
		cmocka_unit_test(test_every_command_help),
		cmocka_unit_test(test_kafka_mock_bad_options),
		cmocka_unit_test(test_dev_bad_repo),
		cmocka_unit_test(test_log_level_from_verbosity),
		cmocka_unit_test(test_daemon_creates_data_dir),
		cmocka_unit_test(test_daemon_data_dir_errors),
		cmocka_unit_test(test_daemon_routes_and_ready_hooks),
		cmocka_unit_test(test_daemon_reload_failure_keeps_serving),
		cmocka_unit_test(test_daemon_stop_timeout),
		cmocka_unit_test(test_sdnotify_path_and_abstract),
		cmocka_unit_test(test_sdnotify_watchdog),
	};

	return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}
