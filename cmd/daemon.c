/*
 * daemon: the composition root of `mlopsd serve` and `mlopsd dev` (see
 * daemon.h).
 *
 * The daemon owns the config, the metrics registry and the HTTP server;
 * modules own themselves and plug in through routes and three kinds of
 * hooks (reload, stop, ready), which must all be registered before
 * daemon_run() and are then read-only.  The main thread does nothing but
 * wait in a libevent loop for signals and the systemd watchdog timer, so
 * every reload and the stop sequence run there, one at a time:
 *
 *   SIGHUP           reload hooks in registration order, stopping at the
 *                    first failure (whose hook keeps its old state);
 *                    counted in mlopsd_reloads_total{result}.
 *   SIGTERM/SIGINT   STOPPING=1 to systemd, /readyz turns 503, stop hooks
 *                    in reverse registration order (the last module built
 *                    is the first stopped), then the HTTP server.  An
 *                    alarm hard-exits with code 1 if that takes more than
 *                    DAEMON_STOP_TIMEOUT_S, so a hung module cannot keep
 *                    systemd waiting.
 *
 * The built-in routes are /healthz (the process answers), /readyz (every
 * ready hook says yes; hooks run on HTTP worker threads, concurrently, so
 * they must be thread-safe) and /metrics.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "config.h"
#include "cmd/cmd.h"
#include "cmd/daemon.h"
#include "common/config.h"
#include "common/http.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/sdnotify.h"
#include "common/util.h"
#include "common/xmalloc.h"

#define DAEMON_STOP_TIMEOUT_S	10
#define DAEMON_DATA_DIR_MODE	0750

struct daemon_reload_hook {
	int	(*fn)(void *arg, char *err, size_t errlen);
	void	*arg;
};

struct daemon_stop_hook {
	void	(*fn)(void *arg);
	void	*arg;
};

struct daemon_ready_hook {
	int	(*fn)(void *arg, char *why, size_t whylen);
	void	*arg;
};

struct daemon {
	struct config			*cfg;
	struct metrics			*metrics;
	struct http_server		*http;
	int				 http_started;
	struct event_base		*base;

	struct http_route		*routes;	/* added by modules */
	size_t				 nroutes, caproutes;
	struct daemon_reload_hook	*reload;
	size_t				 nreload, capreload;
	struct daemon_stop_hook		*stop;
	size_t				 nstop, capstop;
	struct daemon_ready_hook	*ready;
	size_t				 nready, capready;

	/* Written on the main thread, read by /readyz on the workers. */
	atomic_int			 stopping;

	struct metric			*up;
	struct metric			*reloads_ok;
	struct metric			*reloads_failed;

	int				 lockfd;	/* data_dir's lock */
};

/*
 * Create `path` and any missing parents with `mode` (mkdir -p), then check
 * that it is a directory we can write.  Returns 0, or -1 with a message.
 */
static int
daemon_mkdirs(const char *path, mode_t mode, char *err, size_t errlen)
{
	char		*p = xstrdup(path), *s;
	struct stat	 st;
	int		 rc = -1;

	for (s = p + 1; ; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		if (s[-1] != '/') {
			char c = *s;

			*s = '\0';
			if (mkdir(p, mode) == -1 && errno != EEXIST) {
				snprintf(err, errlen, "data_dir %s: cannot create "
				    "%s: %s", path, p, strerror(errno));
				goto fail;
			}
			*s = c;
		}
		if (*s == '\0')
			break;
	}
	if (stat(path, &st) == -1 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "data_dir %s: not a directory", path);
		goto fail;
	}
	if (access(path, W_OK | X_OK) == -1) {
		snprintf(err, errlen, "data_dir %s: not writable: %s", path,
		    strerror(errno));
		goto fail;
	}
	rc = 0;
fail:
	free(p);
	return rc;
}

static void
daemon_register_metrics(struct daemon *d)
{
	struct metric_family	*f;

	f = metrics_gauge(d->metrics, "mlopsd_build_info",
	    "Build of this mlopsd, always 1.", "version");
	metric_set(metric_get(f, PACKAGE_VERSION), 1);
	f = metrics_gauge(d->metrics, "mlopsd_process_start_time_seconds",
	    "Start time of the process since the Unix epoch in seconds.", NULL);
	metric_set(metric_get(f), (double)util_now_ms() / 1000.0);
	f = metrics_gauge(d->metrics, "mlopsd_up",
	    "1 while the daemon serves, 0 once it is stopping.", NULL);
	d->up = metric_get(f);
	metric_set(d->up, 1);
	f = metrics_counter(d->metrics, "mlopsd_reloads_total",
	    "Reloads on SIGHUP by result.", "result");
	d->reloads_ok = metric_get(f, "ok");
	d->reloads_failed = metric_get(f, "failed");
}

/*
 * Build a daemon from cfg, which it owns from now on (also when this
 * fails: then cfg is freed).  Creates data_dir when it is missing.
 * Returns NULL with a message in err.  Main thread only.
 */
struct daemon *
daemon_new(struct config *cfg, char *err, size_t errlen)
{
	struct daemon	*d;

	if (cfg->data_dir == NULL || *cfg->data_dir == '\0') {
		snprintf(err, errlen, "data_dir is not set");
		config_free(cfg);
		return NULL;
	}
	if (daemon_mkdirs(cfg->data_dir, DAEMON_DATA_DIR_MODE, err,
	    errlen) == -1) {
		config_free(cfg);
		return NULL;
	}
	d = xcalloc(1, sizeof *d);
	d->cfg = cfg;
	if ((d->lockfd = daemon_lock_dir(cfg->data_dir, err, errlen)) == -1) {
		config_free(cfg);
		free(d);
		return NULL;
	}
	d->metrics = metrics_new();
	daemon_register_metrics(d);
	return d;
}

int
daemon_lock_dir(const char *dir, char *err, size_t errlen)
{
	char	*path = xstrfmt("%s/" DAEMON_LOCK_FILE, dir), pid[32];
	int	 fd;
	ssize_t	 n;

	/* O_CLOEXEC: a step process that outlives us must not hold it. */
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		int e = errno;

		n = e == EWOULDBLOCK ? pread(fd, pid, sizeof pid - 1, 0) : -1;
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (e == EWOULDBLOCK)
			snprintf(err, errlen, "data_dir %s is in use by another "
			    "mlopsd%s%s%s (%s is locked)", dir, pid[0] ? " (pid " :
			    "", pid, pid[0] ? ")" : "", path);
		else
			snprintf(err, errlen, "%s: lock: %s", path,
			    strerror(e));
		close(fd);
		free(path);
		return -1;
	}
	n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, pid, (size_t)n, 0) != n)
		log_warn("daemon", "%s: cannot write our pid: %s", path,
		    strerror(errno));
	free(path);
	return fd;
}

/* The registry every module registers its metrics in; lives as long as d. */
struct metrics *
daemon_metrics(struct daemon *d)
{
	return d->metrics;
}

/* The config the daemon was built from; immutable, any thread. */
const struct config *
daemon_config(struct daemon *d)
{
	return d->cfg;
}

/* Add module routes (the array is copied; its strings must outlive d). */
void
daemon_add_routes(struct daemon *d, const struct http_route *r, size_t n)
{
	d->routes = xgrow(d->routes, &d->caproutes, d->nroutes + n,
	    sizeof *d->routes);
	memcpy(d->routes + d->nroutes, r, n * sizeof *r);
	d->nroutes += n;
}

void
daemon_on_reload(struct daemon *d, int (*fn)(void *, char *, size_t),
    void *arg)
{
	d->reload = xgrow(d->reload, &d->capreload, d->nreload + 1,
	    sizeof *d->reload);
	d->reload[d->nreload++] = (struct daemon_reload_hook){ fn, arg };
}

void
daemon_on_stop(struct daemon *d, void (*fn)(void *), void *arg)
{
	d->stop = xgrow(d->stop, &d->capstop, d->nstop + 1, sizeof *d->stop);
	d->stop[d->nstop++] = (struct daemon_stop_hook){ fn, arg };
}

void
daemon_on_ready(struct daemon *d, int (*fn)(void *, char *, size_t),
    void *arg)
{
	d->ready = xgrow(d->ready, &d->capready, d->nready + 1,
	    sizeof *d->ready);
	d->ready[d->nready++] = (struct daemon_ready_hook){ fn, arg };
}

static void
daemon_healthz(struct http_req *req, void *arg)
{
	(void)arg;
	http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void
daemon_readyz(struct http_req *req, void *arg)
{
	struct daemon	*d = arg;
	json_t		*reasons = json_array(), *why_json;
	char		 why[256];
	size_t		 i;

	if (atomic_load(&d->stopping))
		json_array_append_new(reasons, json_string("shutting down"));
	for (i = 0; i < d->nready; i++) {
		why[0] = '\0';
		if (d->ready[i].fn(d->ready[i].arg, why, sizeof why))
			continue;
		/* A reason that is not UTF-8 must not make us look ready. */
		if (why[0] == '\0' || (why_json = json_string(why)) == NULL)
			why_json = json_string("not ready");
		json_array_append_new(reasons, why_json);
	}
	if (json_array_size(reasons) == 0) {
		json_decref(reasons);
		http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
		return;
	}
	http_reply_json(req, 503, json_pack("{s:s,s:o}", "status", "not_ready",
	    "reasons", reasons));
}

static void
daemon_metrics_route(struct http_req *req, void *arg)
{
	struct daemon	*d = arg;
	size_t		 len;
	char		*text = metrics_render(d->metrics, &len);

	http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text,
	    len);
	free(text);
}

/* Async-signal-safe: the last resort when the stop sequence hangs. */
static void
daemon_stop_timeout(int sig)
{
	static const char msg[] = "mlopsd: daemon: shutdown did not finish "
	    "within 10 s, exiting\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
		/* nothing more to do */
	}
	_exit(CMD_EXIT_FAIL);
}

static void
daemon_stop_sequence(struct daemon *d, int sig)
{
	struct sigaction	sa;
	size_t			i;

	if (atomic_exchange(&d->stopping, 1))
		return;
	log_info("daemon", "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
	sdnotify("STOPPING=1");
	metric_set(d->up, 0);

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = daemon_stop_timeout;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	alarm(DAEMON_STOP_TIMEOUT_S);

	for (i = d->nstop; i > 0; i--)
		d->stop[i - 1].fn(d->stop[i - 1].arg);
	if (d->http_started) {
		http_server_stop(d->http);
		d->http_started = 0;
	}
	event_base_loopbreak(d->base);
}

static void
daemon_reload_sequence(struct daemon *d)
{
	char	err[1024];
	size_t	i;

	log_info("daemon", "SIGHUP: reloading");
	sdnotify("RELOADING=1");
	for (i = 0; i < d->nreload; i++) {
		err[0] = '\0';
		if (d->reload[i].fn(d->reload[i].arg, err, sizeof err) == -1)
			break;
	}
	if (i < d->nreload) {
		log_error("daemon", "reload failed, keeping the old state: %s",
		    err[0] != '\0' ? err : "(no reason given)");
		metric_inc(d->reloads_failed);
	} else {
		log_info("daemon", "reload done");
		metric_inc(d->reloads_ok);
	}
	sdnotify("READY=1");
}

static void
daemon_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	if (sig == SIGHUP)
		daemon_reload_sequence(arg);
	else
		daemon_stop_sequence(arg, (int)sig);
}

static void
daemon_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sdnotify("WATCHDOG=1");
}

/*
 * Serve until SIGTERM/SIGINT.  Returns CMD_EXIT_OK after a clean stop,
 * CMD_EXIT_FAIL when the HTTP server cannot bind or start (logged).
 * Main thread only; call once.
 */
int
daemon_run(struct daemon *d, void (*on_listen)(void *, const char *),
    void *arg)
{
	static const int	 sigs[] = { SIGTERM, SIGINT, SIGHUP };
	struct event		*sigev[sizeof sigs / sizeof sigs[0]] = { NULL };
	struct event		*watchdog = NULL;
	const struct http_route	 builtin[] = {
		{ "GET", "/healthz", daemon_healthz, d, 0 },
		{ "GET", "/readyz", daemon_readyz, d, 0 },
		{ "GET", "/metrics", daemon_metrics_route, d, 0 },
	};
	size_t			 nbuiltin = sizeof builtin / sizeof builtin[0];
	struct http_route	*routes;
	struct http_config	 hc;
	const char		*addr;
	char			 err[1024], *status;
	uint64_t		 wd_usec;
	struct timeval		 tv;
	size_t			 i;
	int			 rc = CMD_EXIT_FAIL;

	/* The HTTP workers must see EPIPE, not die of SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	if ((d->base = event_base_new()) == NULL) {
		log_error("daemon", "cannot create an event base");
		return CMD_EXIT_FAIL;
	}
	/* Catch signals first: one during start-up must not kill us. */
	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		sigev[i] = evsignal_new(d->base, sigs[i], daemon_signal_cb, d);
		event_add(sigev[i], NULL);
	}

	routes = xcalloc(nbuiltin + d->nroutes, sizeof *routes);
	memcpy(routes, builtin, sizeof builtin);
	if (d->nroutes > 0)
		memcpy(routes + nbuiltin, d->routes,
		    d->nroutes * sizeof *routes);
	memset(&hc, 0, sizeof hc);
	hc.listen = d->cfg->http.listen;
	hc.threads = d->cfg->http.threads;
	hc.max_body_bytes = d->cfg->http.max_body_bytes;
	hc.timeout_ms = d->cfg->http.request_timeout_ms;
	hc.token = d->cfg->http.admin_token;
	d->http = http_server_new(&hc, routes, nbuiltin + d->nroutes,
	    d->metrics, err, sizeof err);
	free(routes);
	if (d->http == NULL) {
		log_error("daemon", "%s", err);
		goto out;
	}
	if (http_server_start(d->http) == -1) {
		log_error("daemon", "cannot start the HTTP server threads");
		goto out;
	}
	d->http_started = 1;
	addr = http_server_address(d->http);
	log_info("http", "listening on %s", addr);
	if (on_listen != NULL)
		on_listen(arg, addr);

	status = xstrfmt("READY=1\nSTATUS=serving on %s", addr);
	sdnotify(status);
	free(status);
	if ((wd_usec = sdnotify_watchdog_usec()) > 0) {
		wd_usec /= 2;
		tv.tv_sec = (time_t)(wd_usec / 1000000);
		tv.tv_usec = (suseconds_t)(wd_usec % 1000000);
		watchdog = event_new(d->base, -1, EV_PERSIST, daemon_watchdog_cb,
		    d);
		event_add(watchdog, &tv);
		sdnotify("WATCHDOG=1");
		log_debug("daemon", "systemd watchdog every %llu us",
		    (unsigned long long)wd_usec);
	}

	event_base_dispatch(d->base);
	log_info("daemon", "stopped");
	rc = CMD_EXIT_OK;
out:
	if (watchdog != NULL)
		event_free(watchdog);
	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		if (sigev[i] != NULL)
			event_free(sigev[i]);
	return rc;
}

/*
 * Free everything the daemon owns, the config included.  After a stop
 * this also cancels the stop alarm, so it must be called even on exit.
 */
void
daemon_free(struct daemon *d)
{
	if (d == NULL)
		return;
	if (d->http != NULL) {
		if (d->http_started)
			http_server_stop(d->http);
		http_server_free(d->http);
	}
	if (d->base != NULL)
		event_base_free(d->base);
	metrics_free(d->metrics);
	config_free(d->cfg);
	free(d->routes);
	free(d->reload);
	free(d->stop);
	free(d->ready);
	if (atomic_load(&d->stopping))
		alarm(0);
	close(d->lockfd);	/* the pid stays: a stale one is harmless */
	free(d);
}
