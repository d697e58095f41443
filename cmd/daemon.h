/*
 * daemon: the composition root of `mlopsd serve` and `mlopsd dev`.  Builds
 * every module from the config, serves the HTTP API, handles signals
 * (SIGTERM/SIGINT: graceful stop within 10 s; SIGHUP: reload) and talks to
 * systemd.  Modules plug in through the hooks below, never through globals.
 */
#ifndef MLOPSD_DAEMON_H
#define MLOPSD_DAEMON_H

#include <stddef.h>

struct config;
struct metrics;
struct http_route;
struct daemon;

/* Create from a loaded config (ownership passes to the daemon). */
struct daemon	*daemon_new(struct config *cfg, char *err, size_t errlen);
/*
 * Lock data directory dir for this process (flock of dir/mlopsd.lock,
 * which then holds our pid): two daemons on one online store would break
 * exactly-once.  daemon_new() takes it; the fd, or -1 with err naming
 * the pid that holds it.  Closing the fd releases it.
 */
#define DAEMON_LOCK_FILE	"mlopsd.lock"
int		 daemon_lock_dir(const char *dir, char *err, size_t errlen);
struct metrics	*daemon_metrics(struct daemon *d);
const struct config *daemon_config(struct daemon *d);

/* Routes added before daemon_run(); copied. */
void		 daemon_add_routes(struct daemon *d, const struct http_route *r,
		    size_t n);
/*
 * A reload hook runs on SIGHUP on the main thread.  It returns 0, or -1
 * with a message in err: then the old state must stay in force.
 */
void		 daemon_on_reload(struct daemon *d,
		    int (*fn)(void *arg, char *err, size_t errlen), void *arg);
/* A stop hook runs on SIGTERM/SIGINT before the HTTP server stops. */
void		 daemon_on_stop(struct daemon *d, void (*fn)(void *arg), void *arg);
/* A readiness check for /readyz: returns 1 when ready, else 0 with why. */
void		 daemon_on_ready(struct daemon *d,
		    int (*fn)(void *arg, char *why, size_t whylen), void *arg);

/*
 * Bind, start, notify systemd, block until a stop signal, then stop.
 * on_listen (may be NULL) is called once with the bound HTTP address.
 * Returns the process exit code.
 */
int		 daemon_run(struct daemon *d,
		    void (*on_listen)(void *arg, const char *addr), void *arg);
void		 daemon_free(struct daemon *d);

#endif
