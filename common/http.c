/*
 * http: the HTTP/1.1 JSON API server on libevent (see http.h).
 *
 * Each worker thread owns an event_base, an evhttp and its own listening
 * socket; the sockets share one address through SO_REUSEPORT, so the
 * kernel spreads connections over the workers and nothing is shared per
 * request but the read-only route table and the metrics' lock-free series.
 * One generic callback walks the route table for every request.  The
 * struct http_req handed to handlers lives on that callback's stack, since
 * handlers reply before they return; the only allocations per request are
 * libevent's own (plus the query list, parsed only when asked for).
 *
 * Body limit.  libevent 2.1.12 enforces evhttp_set_max_body_size itself,
 * and when it does it answers with an HTML error page we cannot change
 * (2.1 has no error callback).  So libevent gets a larger safety cap,
 * HTTP_BODY_CAP(max): bodies up to the cap, whether sent with a
 * Content-Length or chunked, are read and then refused by our own check on
 * their length with a JSON 413; only bodies declared (or streamed) beyond
 * the cap meet libevent's HTML 413, and those are refused as soon as the
 * Content-Length or the offending chunk header is seen, without reading
 * them.  Memory per connection is thus bounded by the cap plus the header
 * limit, HTTP_MAX_HEADERS.
 *
 * Shutdown: http_server_stop() activates an event on each worker's base
 * (thread-safe, since libevent runs with pthread locking); on its own
 * thread the worker closes its listener and leaves its loop as soon as the
 * requests it has dispatched have been written out, or after
 * HTTP_STOP_GRACE_MS if a client does not read its reply.
 */
#include "common/http.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"

#define HTTP_MAX_PARAMS		8
#define HTTP_MAX_HEADERS	(64 * 1024)
#define HTTP_BACKLOG		1024
#define HTTP_STOP_GRACE_MS	5000
/* What libevent may buffer before our own 413; see the top of the file. */
#define HTTP_BODY_CAP(max)	((max) + ((max) > 65536 ? (max) : 65536))

#define HTTP_JSON	"application/json; charset=utf-8"

/* One '/'-separated piece of a route pattern. */
struct http_seg {
	const char	*lit;		/* literal text, or NULL for a {param} */
	size_t		 len;
	int		 param;		/* index into params when lit is NULL */
};

/* Status codes whose counter series are cached per route. */
static const int http_cached_codes[] = {
	200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 500, 503
};
#define HTTP_NCACHED	(sizeof http_cached_codes / sizeof http_cached_codes[0])

struct http_rt {
	struct http_route	 r;		/* method, pattern: our copies */
	struct http_seg		*segs;
	size_t			 nsegs;
	char			*params[HTTP_MAX_PARAMS];
	size_t			 nparams;
	struct metric		*duration;
	/* Filled on first use by any worker; metric_get returns one handle. */
	_Atomic(struct metric *) count[HTTP_NCACHED];
};

struct http_worker {
	struct http_server		*s;
	pthread_t			 thread;
	int				 running;
	struct event_base		*base;
	struct evhttp			*http;
	struct evhttp_bound_socket	*bound;
	struct event			*stop_ev;
	/* Worker thread only: */
	int				 stopping;
	unsigned			 inflight;	/* dispatched, reply not yet written */
};

struct http_server {
	struct http_rt		*routes;
	size_t			 nroutes;
	struct http_rt		 unmatched;	/* metrics label for 404s */
	struct metric_family	*requests;
	struct metric_family	*durations;
	char			*token;
	size_t			 tokenlen;
	size_t			 max_body;
	char			 address[INET6_ADDRSTRLEN + 16];
	struct http_worker	*workers;
	int			 nworkers;
	int			 started;
	int			 stopped;
};

struct http_req {
	struct evhttp_request	*ev;
	struct event_base	*base;
	struct http_server	*s;
	struct http_rt		*rt;
	const char		*method;
	const char		*path;
	const char		*params[HTTP_MAX_PARAMS];
	char			*pbuf;		/* decoded params, if pstack is too small */
	char			 pstack[256];
	struct evkeyvalq	 query;
	int			 query_state;	/* 0 not parsed, 1 parsed, -1 malformed */
	int			 code;		/* 0 until replied */
};

struct http_span {
	size_t	off;
	size_t	len;
};

static const struct {
	enum evhttp_cmd_type	 cmd;
	const char		*name;
} http_methods[] = {
	{ EVHTTP_REQ_GET, "GET" },
	{ EVHTTP_REQ_POST, "POST" },
	{ EVHTTP_REQ_PUT, "PUT" },
	{ EVHTTP_REQ_DELETE, "DELETE" },
	{ EVHTTP_REQ_HEAD, "HEAD" },
	{ EVHTTP_REQ_OPTIONS, "OPTIONS" },
	{ EVHTTP_REQ_PATCH, "PATCH" },
};
#define HTTP_NMETHODS	(sizeof http_methods / sizeof http_methods[0])

static pthread_once_t	http_once = PTHREAD_ONCE_INIT;

static void
http_init_once(void)
{
	if (evthread_use_pthreads() != 0)
		log_error("http", "evthread_use_pthreads failed");
}

static const char *
http_method_name(enum evhttp_cmd_type cmd)
{
	for (size_t i = 0; i < HTTP_NMETHODS; i++)
		if (http_methods[i].cmd == cmd)
			return http_methods[i].name;
	return "?";
}

static int
http_method_known(const char *name)
{
	for (size_t i = 0; i < HTTP_NMETHODS; i++)
		if (strcmp(http_methods[i].name, name) == 0)
			return 1;
	return 0;
}

/*
 * Split a pattern into segments.  Literal segments point into the
 * pattern, which the route owns.  Returns 0 or -1 with err.
 */
static int
http_rt_parse(struct http_rt *rt, char *err, size_t errlen)
{
	const char	*p = rt->r.pattern, *q;
	size_t		 cap = 0, len;

	if (*p != '/') {
		snprintf(err, errlen, "route \"%s\": pattern must start with /",
		    rt->r.pattern);
		return -1;
	}
	while (*p == '/') {
		p++;
		q = strchr(p, '/');
		len = q != NULL ? (size_t)(q - p) : strlen(p);
		rt->segs = xgrow(rt->segs, &cap, rt->nsegs + 1, sizeof *rt->segs);
		if (len > 0 && p[0] == '{') {
			if (len < 3 || p[len - 1] != '}' ||
			    memchr(p + 1, '{', len - 2) != NULL ||
			    memchr(p + 1, '}', len - 2) != NULL) {
				snprintf(err, errlen, "route \"%s\": bad "
				    "parameter segment \"%.*s\"", rt->r.pattern,
				    (int)len, p);
				return -1;
			}
			if (rt->nparams == HTTP_MAX_PARAMS) {
				snprintf(err, errlen, "route \"%s\": more than "
				    "%d parameters", rt->r.pattern,
				    HTTP_MAX_PARAMS);
				return -1;
			}
			rt->segs[rt->nsegs].lit = NULL;
			rt->segs[rt->nsegs].param = (int)rt->nparams;
			rt->params[rt->nparams++] = xstrndup(p + 1, len - 2);
		} else {
			if (memchr(p, '{', len) != NULL ||
			    memchr(p, '}', len) != NULL) {
				snprintf(err, errlen, "route \"%s\": braces must "
				    "enclose a whole segment", rt->r.pattern);
				return -1;
			}
			rt->segs[rt->nsegs].lit = p;
			rt->segs[rt->nsegs].param = -1;
		}
		rt->segs[rt->nsegs++].len = len;
		p += len;
	}
	return 0;
}

static void
http_rt_clear(struct http_rt *rt)
{
	for (size_t i = 0; i < rt->nparams; i++)
		free(rt->params[i]);
	free(rt->segs);
	free((char *)rt->r.method);
	free((char *)rt->r.pattern);
}

/* Does path match the route's pattern?  Fills spans with the parameters. */
static int
http_rt_match(const struct http_rt *rt, const char *path, size_t pathlen,
    struct http_span *spans)
{
	const char	*p = path, *end = path + pathlen, *q;
	size_t		 len;

	for (size_t i = 0; i < rt->nsegs; i++) {
		if (p >= end || *p != '/')
			return 0;
		p++;
		if ((q = memchr(p, '/', (size_t)(end - p))) == NULL)
			q = end;
		len = (size_t)(q - p);
		if (rt->segs[i].lit == NULL) {
			if (len == 0)
				return 0;
			spans[rt->segs[i].param].off = (size_t)(p - path);
			spans[rt->segs[i].param].len = len;
		} else if (len != rt->segs[i].len ||
		    memcmp(p, rt->segs[i].lit, len) != 0)
			return 0;
		p = q;
	}
	return p == end;
}

/*
 * The route for method and path, or NULL.  *pathrt is the first route
 * whose pattern matches the path whatever the method, and allow lists the
 * methods of all such routes (for 405).
 */
static struct http_rt *
http_route_find(struct http_server *s, const char *method, const char *path,
    struct http_span *spans, struct http_rt **pathrt, char *allow,
    size_t allowlen)
{
	size_t		 pathlen = strlen(path), used = 0, n;
	struct http_rt	*rt;

	*pathrt = NULL;
	allow[0] = '\0';
	for (size_t i = 0; i < s->nroutes; i++) {
		rt = &s->routes[i];
		if (!http_rt_match(rt, path, pathlen, spans))
			continue;
		if (strcmp(rt->r.method, method) == 0)
			return rt;
		if (*pathrt == NULL)
			*pathrt = rt;
		if (strstr(allow, rt->r.method) != NULL)
			continue;
		n = strlen(rt->r.method);
		if (used + n + 3 > allowlen)
			continue;
		if (used > 0) {
			memcpy(allow + used, ", ", 2);
			used += 2;
		}
		memcpy(allow + used, rt->r.method, n + 1);
		used += n;
	}
	return NULL;
}

static int
http_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode len bytes into dst (len + 1 bytes); -1 on a bad escape or NUL. */
static int
http_pct_decode(const char *src, size_t len, char *dst)
{
	int	hi, lo;

	for (size_t i = 0; i < len; i++) {
		if (src[i] != '%') {
			*dst++ = src[i];
			continue;
		}
		if (len - i < 3 || (hi = http_hexval(src[i + 1])) < 0 ||
		    (lo = http_hexval(src[i + 2])) < 0 || (hi | lo) == 0)
			return -1;
		*dst++ = (char)(hi << 4 | lo);
		i += 2;
	}
	*dst = '\0';
	return 0;
}

/* Decode the matched parameters into req; replies 400 and returns -1 if bad. */
static int
http_params_decode(struct http_req *req, const struct http_span *spans)
{
	size_t	 need = 0;
	char	*p;

	for (size_t i = 0; i < req->rt->nparams; i++)
		need += spans[i].len + 1;
	p = req->pstack;
	if (need > sizeof req->pstack)
		p = req->pbuf = xmalloc(need);
	for (size_t i = 0; i < req->rt->nparams; i++) {
		if (http_pct_decode(req->path + spans[i].off, spans[i].len,
		    p) == -1) {
			http_reply_error(req, 400, "bad_request",
			    "path parameter \"%s\": invalid percent-encoding",
			    req->rt->params[i]);
			return -1;
		}
		req->params[i] = p;
		p += strlen(p) + 1;
	}
	return 0;
}

/* Compare in time that depends only on the expected token's length. */
static int
http_token_equal(const char *got, size_t gotlen, const char *want,
    size_t wantlen)
{
	volatile unsigned char	d = gotlen != wantlen;

	for (size_t i = 0; i < wantlen; i++)
		d |= (unsigned char)want[i] ^
		    (unsigned char)(i < gotlen ? got[i] : 0);
	return d == 0;
}

static int
http_authorized(struct http_req *req)
{
	const char	*h = http_req_header(req, "Authorization");

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return 0;
	h += 7;
	while (*h == ' ')
		h++;
	return http_token_equal(h, strlen(h), req->s->token, req->s->tokenlen);
}

static struct metric *
http_count_series(struct http_server *s, struct http_rt *rt, int code)
{
	struct metric	*m;
	char		 cs[16];
	size_t		 i;

	for (i = 0; i < HTTP_NCACHED; i++)
		if (http_cached_codes[i] == code)
			break;
	if (i < HTTP_NCACHED) {
		m = atomic_load_explicit(&rt->count[i], memory_order_acquire);
		if (m != NULL)
			return m;
	}
	snprintf(cs, sizeof cs, "%d", code);
	m = metric_get(s->requests, rt->r.pattern, cs);
	if (i < HTTP_NCACHED)
		atomic_store_explicit(&rt->count[i], m, memory_order_release);
	return m;
}

static void
http_account(struct http_server *s, struct http_rt *rt, int code, uint64_t t0)
{
	if (s->requests == NULL)
		return;
	metric_inc(http_count_series(s, rt, code));
	metric_observe(rt->duration, (double)(util_mono_ns() - t0) / 1e9);
}

/* The reply has been written out (not called if the client vanished). */
static void
http_complete(struct evhttp_request *ev, void *arg)
{
	struct http_worker	*w = arg;

	(void)ev;
	if (--w->inflight == 0 && w->stopping)
		event_base_loopbreak(w->base);
}

static void
http_dispatch(struct evhttp_request *ev, void *arg)
{
	struct http_worker	*w = arg;
	struct http_server	*s = w->s;
	struct http_req		 req;
	struct http_span	 spans[HTTP_MAX_PARAMS];
	struct http_rt		*rt, *pathrt;
	const struct evhttp_uri	*uri;
	uint64_t		 t0 = util_mono_ns();
	char			 allow[64];

	req.ev = ev;
	req.base = w->base;
	req.s = s;
	req.pbuf = NULL;
	req.query_state = 0;
	req.code = 0;
	TAILQ_INIT(&req.query);
	req.method = http_method_name(evhttp_request_get_command(ev));
	uri = evhttp_request_get_evhttp_uri(ev);
	if (uri == NULL || (req.path = evhttp_uri_get_path(uri)) == NULL)
		req.path = "";

	w->inflight++;
	evhttp_request_set_on_complete_cb(ev, http_complete, w);

	rt = http_route_find(s, req.method, req.path, spans, &pathrt, allow,
	    sizeof allow);
	if (rt == NULL && pathrt == NULL) {
		req.rt = &s->unmatched;
		http_reply_error(&req, 404, "not_found", "no route for %s %s",
		    req.method, req.path);
	} else if (rt == NULL) {
		req.rt = pathrt;
		evhttp_add_header(evhttp_request_get_output_headers(ev),
		    "Allow", allow);
		http_reply_error(&req, 405, "method_not_allowed",
		    "%s is not allowed on %s (allowed: %s)", req.method,
		    req.path, allow);
	} else {
		req.rt = rt;
		if (http_params_decode(&req, spans) == -1) {
			/* replied 400 */
		} else if ((rt->r.flags & HTTP_ROUTE_MUTATING) &&
		    s->token != NULL && !http_authorized(&req)) {
			evhttp_add_header(evhttp_request_get_output_headers(ev),
			    "WWW-Authenticate", "Bearer");
			http_reply_error(&req, 401, "unauthorized", "%s %s needs "
			    "a valid bearer token", req.method, req.path);
		} else if (evbuffer_get_length(evhttp_request_get_input_buffer(
		    ev)) > s->max_body)
			http_reply_error(&req, 413, "payload_too_large",
			    "request body is larger than %zu bytes",
			    s->max_body);
		else {
			rt->r.fn(&req, rt->r.arg);
			if (req.code == 0) {
				log_error("http", "%s %s: handler did not reply",
				    req.method, rt->r.pattern);
				http_reply_error(&req, 500, "internal",
				    "the handler did not reply");
			}
		}
	}

	http_account(s, req.rt, req.code, t0);
	if (req.query_state != 0)
		evhttp_clear_headers(&req.query);
	free(req.pbuf);
}

static void
http_worker_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_worker	*w = arg;
	struct timeval		 grace = { HTTP_STOP_GRACE_MS / 1000,
				    (HTTP_STOP_GRACE_MS % 1000) * 1000 };

	(void)fd;
	(void)what;
	w->stopping = 1;
	if (w->bound != NULL) {
		evhttp_del_accept_socket(w->http, w->bound);
		w->bound = NULL;
	}
	if (w->inflight == 0)
		event_base_loopbreak(w->base);
	else
		event_base_loopexit(w->base, &grace);
}

static void *
http_worker_main(void *arg)
{
	struct http_worker	*w = arg;

	if (event_base_dispatch(w->base) == -1)
		log_error("http", "event loop failed");
	return NULL;
}

/* ai's address with the given port. */
static void
http_sockaddr(struct sockaddr_storage *ss, const struct addrinfo *ai, int port)
{
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

/*
 * SO_REUSEPORT would let a second server of the same user share the port
 * silently; a socket bound without it fails if anyone listens there.
 */
static int
http_probe(const struct addrinfo *ai, int port, char *err, size_t errlen)
{
	struct sockaddr_storage	 ss;
	int			 fd, one = 1, rc = 0;

	http_sockaddr(&ss, ai, port);
	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) == -1) {
		snprintf(err, errlen, "bind: %s", strerror(errno));
		rc = -1;
	}
	close(fd);
	return rc;
}

/* A listening socket on ai's address and the given port; -1 with err. */
static int
http_listen(const struct addrinfo *ai, int port, char *err, size_t errlen)
{
	struct sockaddr_storage	 ss;
	int			 fd, one = 1;

	http_sockaddr(&ss, ai, port);
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == -1) {
		snprintf(err, errlen, "setsockopt: %s", strerror(errno));
		goto fail;
	}
	if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) == -1) {
		snprintf(err, errlen, "bind: %s", strerror(errno));
		goto fail;
	}
	if (listen(fd, HTTP_BACKLOG) == -1) {
		snprintf(err, errlen, "listen: %s", strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/* Record the bound address of fd as "host:port"; returns the port or -1. */
static int
http_learn_address(struct http_server *s, int fd)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sl = sizeof ss;
	char			 host[INET6_ADDRSTRLEN];
	int			 port;

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
		return -1;
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
		port = ntohs(sin6->sin6_port);
		snprintf(s->address, sizeof s->address, "[%s]:%d", host, port);
	} else {
		struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
		port = ntohs(sin->sin_port);
		snprintf(s->address, sizeof s->address, "%s:%d", host, port);
	}
	return port;
}

static int
http_worker_init(struct http_server *s, struct http_worker *w, int fd,
    const struct http_config *cfg, char *err, size_t errlen)
{
	struct event_config	*ec;
	struct timeval		 tv;

	w->s = s;
	/*
	 * evhttp turns reading and writing on and off several times per
	 * request; the changelist folds those into the next epoll_wait
	 * instead of one epoll_ctl each.  (Its caveat, dup()ed descriptors,
	 * does not arise here.)
	 */
	if ((ec = event_config_new()) != NULL) {
		event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		w->base = event_base_new_with_config(ec);
		event_config_free(ec);
	}
	if (w->base == NULL ||
	    (w->http = evhttp_new(w->base)) == NULL ||
	    (w->stop_ev = event_new(w->base, -1, 0, http_worker_stop_cb,
	    w)) == NULL) {
		snprintf(err, errlen, "cannot create the event loop");
		close(fd);
		return -1;
	}
	if ((w->bound = evhttp_accept_socket_with_handle(w->http, fd)) == NULL) {
		snprintf(err, errlen, "cannot listen on %s", s->address);
		close(fd);
		return -1;
	}
	tv.tv_sec = cfg->timeout_ms / 1000;
	tv.tv_usec = (cfg->timeout_ms % 1000) * 1000;
	evhttp_set_timeout_tv(w->http, &tv);
	evhttp_set_max_headers_size(w->http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(w->http,
	    (ev_ssize_t)HTTP_BODY_CAP(s->max_body));
	evhttp_set_default_content_type(w->http, NULL);
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(w->http, http_dispatch, w);
	return 0;
}

static int
http_check_config(const struct http_config *cfg, char *err, size_t errlen)
{
	if (cfg->threads < 1 || cfg->threads > 256)
		snprintf(err, errlen, "threads must be between 1 and 256, "
		    "not %d", cfg->threads);
	else if (cfg->max_body_bytes < 1 ||
	    cfg->max_body_bytes > (int64_t)1 << 40)
		snprintf(err, errlen, "max_body_bytes must be between 1 and "
		    "2^40, not %lld", (long long)cfg->max_body_bytes);
	else if (cfg->timeout_ms < 1)
		snprintf(err, errlen, "timeout must be positive, not %lldms",
		    (long long)cfg->timeout_ms);
	else if (cfg->token != NULL && cfg->token[0] == '\0')
		snprintf(err, errlen, "the bearer token is empty");
	else
		return 0;
	return -1;
}

struct http_server *
http_server_new(const struct http_config *cfg, const struct http_route *routes,
    size_t nroutes, struct metrics *m, char *err, size_t errlen)
{
	struct http_server	*s;
	struct http_rt		*rt;
	struct addrinfo		 hints, *ai = NULL;
	char			 host[256], why[256];
	int			 port, fd, gai;

	pthread_once(&http_once, http_init_once);
	if (http_check_config(cfg, err, errlen) == -1)
		return NULL;
	if (cfg->listen == NULL || util_split_hostport(cfg->listen, host,
	    sizeof host, &port) == -1) {
		snprintf(err, errlen, "listen address \"%s\": expected "
		    "host:port", cfg->listen != NULL ? cfg->listen : "");
		return NULL;
	}

	s = xcalloc(1, sizeof *s);
	s->max_body = (size_t)cfg->max_body_bytes;
	if (cfg->token != NULL) {
		s->token = xstrdup(cfg->token);
		s->tokenlen = strlen(s->token);
	}
	s->routes = xcalloc(nroutes, sizeof *s->routes);
	for (size_t i = 0; i < nroutes; i++) {
		rt = &s->routes[s->nroutes++];
		rt->r = routes[i];
		rt->r.method = xstrdup(routes[i].method != NULL ?
		    routes[i].method : "");
		rt->r.pattern = xstrdup(routes[i].pattern != NULL ?
		    routes[i].pattern : "");
		if (!http_method_known(rt->r.method)) {
			snprintf(err, errlen, "route \"%s\": unknown method "
			    "\"%s\"", rt->r.pattern, rt->r.method);
			goto fail;
		}
		if (rt->r.fn == NULL) {
			snprintf(err, errlen, "route %s %s: no handler",
			    rt->r.method, rt->r.pattern);
			goto fail;
		}
		if (http_rt_parse(rt, err, errlen) == -1)
			goto fail;
	}
	s->unmatched.r.method = xstrdup("");
	s->unmatched.r.pattern = xstrdup("unmatched");

	if (m != NULL) {
		s->requests = metrics_counter(m, "mlopsd_http_requests_total",
		    "HTTP requests by route pattern and status code.",
		    "route,code");
		s->durations = metrics_histogram(m,
		    "mlopsd_http_request_duration_seconds",
		    "Time to handle an HTTP request, by route pattern.",
		    "route", metrics_latency_buckets, metrics_latency_nbuckets);
		for (size_t i = 0; i < s->nroutes; i++)
			s->routes[i].duration = metric_get(s->durations,
			    s->routes[i].r.pattern);
		s->unmatched.duration = metric_get(s->durations, "unmatched");
	}

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((gai = getaddrinfo(host, "0", &hints, &ai)) != 0) {
		snprintf(err, errlen, "listen address \"%s\": %s", cfg->listen,
		    gai_strerror(gai));
		goto fail;
	}
	if (port != 0 && http_probe(ai, port, why, sizeof why) == -1) {
		snprintf(err, errlen, "listen %s: %s", cfg->listen, why);
		goto fail;
	}
	s->workers = xcalloc((size_t)cfg->threads, sizeof *s->workers);
	for (int i = 0; i < cfg->threads; i++) {
		if ((fd = http_listen(ai, port, why, sizeof why)) == -1) {
			snprintf(err, errlen, "listen %s: %s", cfg->listen, why);
			goto fail;
		}
		/* Port 0 asked: the others join the port the first one got. */
		if (i == 0 && (port = http_learn_address(s, fd)) == -1) {
			snprintf(err, errlen, "listen %s: getsockname: %s",
			    cfg->listen, strerror(errno));
			close(fd);
			goto fail;
		}
		s->nworkers++;
		if (http_worker_init(s, &s->workers[i], fd, cfg, why,
		    sizeof why) == -1) {
			snprintf(err, errlen, "listen %s: %s", cfg->listen, why);
			goto fail;
		}
	}
	freeaddrinfo(ai);
	return s;

fail:
	if (ai != NULL)
		freeaddrinfo(ai);
	http_server_free(s);
	return NULL;
}

int
http_server_start(struct http_server *s)
{
	sigset_t	all, old;
	int		error, rc = 0;

	if (s->started)
		return 0;
	s->started = 1;
	/* Workers take no signals: those are the main thread's business. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int i = 0; i < s->nworkers; i++) {
		error = pthread_create(&s->workers[i].thread, NULL,
		    http_worker_main, &s->workers[i]);
		if (error != 0) {
			log_error("http", "cannot start worker %d: %s", i,
			    strerror(error));
			rc = -1;
			break;
		}
		s->workers[i].running = 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == -1)
		http_server_stop(s);
	else
		log_info("http", "listening on %s (%d threads)", s->address,
		    s->nworkers);
	return rc;
}

const char *
http_server_address(const struct http_server *s)
{
	return s->address;
}

void
http_server_stop(struct http_server *s)
{
	if (!s->started || s->stopped)
		return;
	s->stopped = 1;
	for (int i = 0; i < s->nworkers; i++)
		if (s->workers[i].running)
			event_active(s->workers[i].stop_ev, EV_READ, 0);
	for (int i = 0; i < s->nworkers; i++) {
		if (s->workers[i].running)
			pthread_join(s->workers[i].thread, NULL);
		s->workers[i].running = 0;
	}
}

void
http_server_free(struct http_server *s)
{
	struct http_worker	*w;

	if (s == NULL)
		return;
	http_server_stop(s);
	for (int i = 0; i < s->nworkers; i++) {
		w = &s->workers[i];
		if (w->http != NULL)
			evhttp_free(w->http);	/* closes listener, connections */
		if (w->stop_ev != NULL)
			event_free(w->stop_ev);
		if (w->base != NULL)
			event_base_free(w->base);
	}
	free(s->workers);
	for (size_t i = 0; i < s->nroutes; i++)
		http_rt_clear(&s->routes[i]);
	http_rt_clear(&s->unmatched);
	free(s->routes);
	free(s->token);
	free(s);
}

const char *
http_req_method(struct http_req *req)
{
	return req->method;
}

const char *
http_req_path(struct http_req *req)
{
	return req->path;
}

const char *
http_req_param(struct http_req *req, const char *name)
{
	for (size_t i = 0; i < req->rt->nparams; i++)
		if (strcmp(req->rt->params[i], name) == 0)
			return req->params[i];
	return NULL;
}

const char *
http_req_query(struct http_req *req, const char *name)
{
	const struct evhttp_uri	*uri;
	const char		*q = NULL;

	if (req->query_state == 0) {
		if ((uri = evhttp_request_get_evhttp_uri(req->ev)) != NULL)
			q = evhttp_uri_get_query(uri);
		req->query_state = 1;
		if (q != NULL && evhttp_parse_query_str(q, &req->query) == -1)
			req->query_state = -1;
	}
	if (req->query_state == -1)
		return NULL;
	return evhttp_find_header(&req->query, name);
}

const char *
http_req_header(struct http_req *req, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(req->ev),
	    name);
}

const char *
http_req_body(struct http_req *req, size_t *len)
{
	struct evbuffer	*in = evhttp_request_get_input_buffer(req->ev);
	size_t		 n = evbuffer_get_length(in);

	if (len != NULL)
		*len = n;
	if (n == 0)
		return "";
	return (const char *)evbuffer_pullup(in, -1);
}

json_t *
http_req_json(struct http_req *req)
{
	json_error_t	 jerr;
	json_t		*j;
	const char	*body;
	size_t		 len;

	body = http_req_body(req, &len);
	if ((j = json_loadb(body, len, 0, &jerr)) == NULL)
		http_reply_error(req, 400, "malformed_json",
		    "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
	return j;
}

void
http_reply(struct http_req *req, int code, const char *content_type,
    const char *body, size_t len)
{
	if (req->code != 0) {
		log_error("http", "%s %s: second reply (%d after %d) dropped",
		    req->method, req->rt->r.pattern, code, req->code);
		return;
	}
	req->code = code;
	/*
	 * libevent arms the write timeout from the time cached when this
	 * loop iteration began; after a handler slower than the timeout the
	 * reply would time out before it is written.
	 */
	event_base_update_cache_time(req->base);
	if (content_type != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req->ev),
		    "Content-Type", content_type);
	evbuffer_add(evhttp_request_get_output_buffer(req->ev), body, len);
	evhttp_send_reply(req->ev, code, NULL, NULL);
}

void
http_reply_json(struct http_req *req, int code, json_t *body)
{
	static const char	 failed[] = "{\"error\":{\"code\":\"internal\","
				    "\"message\":\"cannot encode the reply\"}}";
	char			 stack[4096], *buf = stack;
	size_t			 n = 0;

	if (body != NULL &&
	    (n = json_dumpb(body, buf, sizeof stack, JSON_COMPACT)) >
	    sizeof stack) {
		buf = xmalloc(n);
		n = json_dumpb(body, buf, n, JSON_COMPACT);
	}
	json_decref(body);
	if (n == 0)
		http_reply(req, 500, HTTP_JSON, failed, sizeof failed - 1);
	else
		http_reply(req, code, HTTP_JSON, buf, n);
	if (buf != stack)
		free(buf);
}

/*
 * Replace bytes that are not valid UTF-8 (as jansson judges it: no
 * overlongs, surrogates or values past U+10FFFF) with '?', so messages
 * that quote client input always encode.
 */
static void
http_utf8_sanitize(char *s)
{
	unsigned char	*p = (unsigned char *)s;
	uint32_t	 v;
	int		 n, i;

	while (*p != '\0') {
		if (*p < 0x80) {
			p++;
			continue;
		}
		if (*p >= 0xc2 && *p <= 0xdf)
			n = 1, v = *p & 0x1f;
		else if (*p >= 0xe0 && *p <= 0xef)
			n = 2, v = *p & 0x0f;
		else if (*p >= 0xf0 && *p <= 0xf4)
			n = 3, v = *p & 0x07;
		else
			n = 0, v = 0;
		for (i = 1; n > 0 && i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				break;
			v = v << 6 | (p[i] & 0x3f);
		}
		if (n == 0 || i <= n || (n == 2 && v < 0x800) ||
		    (v >= 0xd800 && v <= 0xdfff) || (n == 3 && (v < 0x10000 ||
		    v > 0x10ffff))) {
			*p++ = '?';
			continue;
		}
		p += n + 1;
	}
}

void
http_reply_error(struct http_req *req, int code, const char *errcode,
    const char *fmt, ...)
{
	char	msg[512];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	http_utf8_sanitize(msg);
	http_reply_json(req, code, json_pack("{s:{s:s,s:s}}", "error", "code",
	    errcode, "message", msg));
}
