/*
 * http: the HTTP/1.1 JSON API server (see http.h).
 *
 * Each worker thread owns a libevent event_base and its own listening
 * socket; the sockets share one address through SO_REUSEPORT, so the
 * kernel spreads connections over the workers and nothing is shared per
 * request but the read-only route table and the metrics' lock-free series.
 * libevent only tells us when a socket is readable or writable (and runs
 * the timers); the HTTP layer is our own, because evhttp's cost per
 * request (a header list and several allocations per request and reply,
 * event changes on every request) was most of a lookup's CPU.
 *
 * A connection has one input buffer and one output buffer, both kept
 * across its requests.  Bytes are read into the input buffer; a request
 * head, once its empty line has arrived, is parsed in place (strings are
 * NUL-terminated where they lie, offsets remembered, so a buffer that
 * grows or moves keeps the parse), the body is waited for by its
 * Content-Length, and the handler runs with pointers into the buffer: no
 * allocation per request.  Replies are appended to the output buffer, and
 * every request that arrived in one read (pipelining) is answered by one
 * write().  While output is blocked, reading stops.
 *
 * Limits and errors.  A head is at most HTTP_MAX_HEAD bytes and
 * HTTP_MAX_NHEADERS lines (431 beyond); a body is announced by
 * Content-Length and at most max_body bytes: a larger one is refused with
 * 413 as soon as the head is read, before routing and without reading the
 * body.  Chunked request bodies get 411 (send a Content-Length).  Any
 * request the parser refuses gets a JSON error, and the connection is
 * closed after a lingering half-close so the client reads the reply
 * rather than a reset.  A connection idle for timeout_ms, or whose request
 * has taken longer than timeout_ms to arrive (a slow-loris), is closed.
 *
 * Shutdown: http_server_stop() activates an event on each worker's base
 * (thread-safe, since libevent runs with pthread locking); on its own
 * thread the worker closes its listener and its idle connections, lets
 * replies still being written go out, and leaves its loop when the last
 * connection is gone or after HTTP_STOP_GRACE_MS.
 */
#include "common/http.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"

#define HTTP_MAX_PARAMS		8
#define HTTP_MAX_HEAD		(64 * 1024)	/* request line and headers */
#define HTTP_MAX_NHEADERS	100
#define HTTP_MAX_QUERY		32		/* query pairs looked at */
#define HTTP_BUF_INIT		4096
#define HTTP_BUF_KEEP		(64 * 1024)	/* larger buffers shrink when empty */
#define HTTP_OUT_FLUSH		(64 * 1024)	/* write out mid-batch beyond this */
#define HTTP_BACKLOG		1024
#define HTTP_ACCEPT_BATCH	64
#define HTTP_STOP_GRACE_MS	5000

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

/*
 * A parsed request head.  Offsets count from the request's first byte
 * (the method), whose strings have been NUL-terminated in place.
 */
struct http_head {
	uint32_t	 len;		/* through the empty line */
	uint32_t	 target;	/* the path */
	uint32_t	 query;		/* after '?', or 0 */
	int		 minor;		/* HTTP/1.minor */
	int		 keepalive;
	int		 expect;	/* Expect: 100-continue */
	int		 chunked;	/* a Transfer-Encoding was given */
	int64_t		 clen;
	unsigned	 nhdrs;
	struct {
		uint32_t	name, value;
	}		 hdrs[HTTP_MAX_NHEADERS];
};

struct http_worker;

struct http_conn {
	struct http_worker	*w;
	int			 fd;
	struct event		*rev, *wev;
	TAILQ_ENTRY(http_conn)	 entry;
	char			*in;
	size_t			 inoff, inlen, incap;	/* unparsed: in[inoff..inlen) */
	size_t			 scanned;	/* head bytes searched for its end */
	uint64_t		 started;	/* current request's first byte, mono ns */
	int			 have_head;
	int			 continued;	/* 100 Continue sent for it */
	struct http_head	 head;
	char			*out;
	size_t			 outoff, outlen, outcap;
	int			 closing;	/* close once out is written */
	int			 linger;	/* half-close and drain first */
	int			 lingering;
	int			 writing;	/* wev armed, rev not */
};

TAILQ_HEAD(http_conns, http_conn);

struct http_worker {
	struct http_server	*s;
	pthread_t		 thread;
	int			 running;
	struct event_base	*base;
	int			 lfd;
	struct event		*lev;
	struct event		*stop_ev;
	const struct timeval	*tv;		/* the common connection timeout */
	/* Worker thread only: */
	struct http_conns	 conns;
	int			 stopping;
	time_t			 date_sec;
	char			 date[48];	/* "Date: ...\r\n" */
	size_t			 datelen;
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
	uint64_t		 timeout_ns;
	struct timeval		 timeout;
	char			 address[INET6_ADDRSTRLEN + 16];
	struct http_worker	*workers;
	int			 nworkers;
	int			 started;
	int			 stopped;
};

struct http_req {
	struct http_conn	*c;
	struct http_server	*s;
	struct http_rt		*rt;
	char			*base;		/* the request's first byte */
	const struct http_head	*h;		/* NULL for a refused request */
	const char		*method;
	const char		*path;
	const char		*params[HTTP_MAX_PARAMS];
	char			*pbuf;		/* decoded params, if pstack is too small */
	char			 pstack[256];
	int			 nquery;	/* -1 until parsed */
	const char		*qkeys[HTTP_MAX_QUERY], *qvals[HTTP_MAX_QUERY];
	const char		*xhdr;		/* extra header lines of the reply */
	int			 head_only;	/* HEAD: no body in the reply */
	int			 keepalive;
	int			 code;		/* 0 until replied */
};

struct http_span {
	size_t	off;
	size_t	len;
};

static const char *const http_methods[] = {
	"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
};
#define HTTP_NMETHODS	(sizeof http_methods / sizeof http_methods[0])

/* Reason phrases of the status line. */
static const struct {
	int		 code;
	const char	*reason;
} http_reasons[] = {
	{ 100, "Continue" }, { 200, "OK" }, { 201, "Created" },
	{ 202, "Accepted" }, { 204, "No Content" },
	{ 301, "Moved Permanently" }, { 302, "Found" },
	{ 304, "Not Modified" }, { 400, "Bad Request" },
	{ 401, "Unauthorized" }, { 403, "Forbidden" }, { 404, "Not Found" },
	{ 405, "Method Not Allowed" }, { 408, "Request Timeout" },
	{ 409, "Conflict" }, { 410, "Gone" }, { 411, "Length Required" },
	{ 412, "Precondition Failed" }, { 413, "Payload Too Large" },
	{ 415, "Unsupported Media Type" }, { 422, "Unprocessable Entity" },
	{ 429, "Too Many Requests" },
	{ 431, "Request Header Fields Too Large" },
	{ 500, "Internal Server Error" }, { 501, "Not Implemented" },
	{ 502, "Bad Gateway" }, { 503, "Service Unavailable" },
	{ 504, "Gateway Timeout" }, { 505, "HTTP Version Not Supported" },
};
#define HTTP_NREASONS	(sizeof http_reasons / sizeof http_reasons[0])

static pthread_once_t	http_once = PTHREAD_ONCE_INIT;

static void	http_conn_process(struct http_conn *c);

static void
http_init_once(void)
{
	if (evthread_use_pthreads() != 0)
		log_error("http", "evthread_use_pthreads failed");
}

static int
http_method_known(const char *name)
{
	for (size_t i = 0; i < HTTP_NMETHODS; i++)
		if (strcmp(http_methods[i], name) == 0)
			return 1;
	return 0;
}

static const char *
http_reason(int code)
{
	for (size_t i = 0; i < HTTP_NREASONS; i++)
		if (http_reasons[i].code == code)
			return http_reasons[i].reason;
	return "Unknown";
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
/* Append ", method" (or just method) to the Allow list; its new length. */
static size_t
http_allow_add(char *allow, size_t used, size_t allowlen, const char *method)
{
	size_t	n = strlen(method);

	if (used + n + 3 > allowlen)
		return used;
	if (used > 0) {
		memcpy(allow + used, ", ", 2);
		used += 2;
	}
	memcpy(allow + used, method, n + 1);
	return used + n;
}

static struct http_rt *
http_route_find(struct http_server *s, const char *method, const char *path,
    struct http_span *spans, struct http_rt **pathrt, char *allow,
    size_t allowlen)
{
	size_t		 pathlen = strlen(path), used = 0;
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
		used = http_allow_add(allow, used, allowlen, rt->r.method);
		/* HEAD is served wherever GET is (http_dispatch). */
		if (strcmp(rt->r.method, "GET") == 0)
			used = http_allow_add(allow, used, allowlen, "HEAD");
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

/* ---- the request parser ---- */

/* Is c a token character (RFC 9110 tchar)? */
static int
http_tchar(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", c) == NULL;
}

/* Does the comma-separated list hold token (case-insensitively)? */
static int
http_has_token(const char *list, const char *token)
{
	size_t	tl = strlen(token), n;

	while (*list != '\0') {
		while (*list == ' ' || *list == '\t' || *list == ',')
			list++;
		n = strcspn(list, ", \t");
		if (n == tl && strncasecmp(list, token, tl) == 0)
			return 1;
		list += n;
		while (*list != '\0' && *list != ',')
			list++;
	}
	return 0;
}

enum {
	HTTP_H_CONTENT_LENGTH,
	HTTP_H_TRANSFER_ENCODING,
	HTTP_H_CONNECTION,
	HTTP_H_EXPECT,
};

/* The headers the server itself reads. */
static const struct {
	const char	*name;
	int		 which;
} http_known_headers[] = {
	{ "Content-Length", HTTP_H_CONTENT_LENGTH },
	{ "Transfer-Encoding", HTTP_H_TRANSFER_ENCODING },
	{ "Connection", HTTP_H_CONNECTION },
	{ "Expect", HTTP_H_EXPECT },
};

/* Read what the server needs from the headers; an HTTP status or 0. */
static int
http_head_semantics(char *b, struct http_head *h, const char **why)
{
	int	close = 0, keep = 0;

	h->clen = -1;
	for (unsigned i = 0; i < h->nhdrs; i++) {
		const char	*name = b + h->hdrs[i].name;
		const char	*v = b + h->hdrs[i].value;
		size_t		 k;
		int64_t		 n = 0;

		for (k = 0; k < sizeof http_known_headers /
		    sizeof http_known_headers[0]; k++)
			if (strcasecmp(name, http_known_headers[k].name) == 0)
				break;
		if (k == sizeof http_known_headers /
		    sizeof http_known_headers[0])
			continue;
		switch (http_known_headers[k].which) {
		case HTTP_H_CONTENT_LENGTH:
			if (*v == '\0' || strlen(v) > 18 ||
			    strspn(v, "0123456789") != strlen(v)) {
				*why = "malformed Content-Length";
				return 400;
			}
			for (; *v != '\0'; v++)
				n = n * 10 + (*v - '0');
			if (h->clen != -1 && h->clen != n) {
				*why = "conflicting Content-Length headers";
				return 400;
			}
			h->clen = n;
			break;
		case HTTP_H_TRANSFER_ENCODING:
			h->chunked = 1;
			break;
		case HTTP_H_CONNECTION:
			close |= http_has_token(v, "close");
			keep |= http_has_token(v, "keep-alive");
			break;
		case HTTP_H_EXPECT:
			if (strcasecmp(v, "100-continue") == 0)
				h->expect = 1;
			break;
		}
	}
	if (h->clen == -1)
		h->clen = 0;
	h->keepalive = h->minor >= 1 ? !close : keep && !close;
	return 0;
}

/*
 * Parse a complete head b[0..len) (len counts the empty line) into h,
 * NUL-terminating its strings in place.  Returns 0, or the HTTP status
 * to refuse the request with and a reason in *why.
 */
static int
http_head_parse(char *b, size_t len, struct http_head *h, const char **why)
{
	char	*p, *end = b + len - 2, *eol, *sp, *colon, *v, *ve, *q;
	size_t	 mlen;

	memset(h, 0, offsetof(struct http_head, hdrs));
	h->len = (uint32_t)len;
	if (memchr(b, '\0', len) != NULL) {
		*why = "NUL byte in the request head";
		return 400;
	}
	eol = memmem(b, len, "\r\n", 2);
	for (mlen = 0; b + mlen < eol && b[mlen] >= 'A' && b[mlen] <= 'Z';
	    mlen++)
		;
	if (mlen == 0 || mlen > 16 || b[mlen] != ' ') {
		*why = "malformed request line";
		return 400;
	}
	p = b + mlen + 1;
	if ((sp = memchr(p, ' ', (size_t)(eol - p))) == NULL || sp == p) {
		*why = "malformed request line";
		return 400;
	}
	for (q = p; q < sp; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f) {
			*why = "malformed request target";
			return 400;
		}
	if (eol - sp != 9 || memcmp(sp + 1, "HTTP/", 5) != 0 ||
	    sp[6] < '0' || sp[6] > '9' || sp[7] != '.' || sp[8] < '0' ||
	    sp[8] > '9') {
		*why = "malformed request line";
		return 400;
	}
	if (sp[6] != '1') {
		*why = "only HTTP/1.x is supported";
		return 505;
	}
	if (*p != '/') {
		*why = "the request target must be an absolute path";
		return 400;
	}
	h->minor = sp[8] - '0';
	b[mlen] = '\0';
	*sp = '\0';
	h->target = (uint32_t)(p - b);
	if ((q = memchr(p, '?', (size_t)(sp - p))) != NULL) {
		*q = '\0';
		h->query = (uint32_t)(q + 1 - b);
	}

	for (p = eol + 2; p < end; p = eol + 2) {
		eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
		if (*p == ' ' || *p == '\t') {
			*why = "folded header lines are not supported";
			return 400;
		}
		if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL ||
		    colon == p) {
			*why = "malformed header line";
			return 400;
		}
		for (q = p; q < colon; q++)
			if (!http_tchar((unsigned char)*q)) {
				*why = "malformed header name";
				return 400;
			}
		if (h->nhdrs == HTTP_MAX_NHEADERS) {
			*why = "too many header lines";
			return 431;
		}
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t');
		    ve--)
			;
		*colon = '\0';
		*ve = '\0';
		h->hdrs[h->nhdrs].name = (uint32_t)(p - b);
		h->hdrs[h->nhdrs++].value = (uint32_t)(v - b);
	}
	return http_head_semantics(b, h, why);
}

/* ---- connections ---- */

static void
http_buf_reserve(char **buf, size_t *cap, size_t need)
{
	size_t	n = *cap > 0 ? *cap : HTTP_BUF_INIT;

	if (need <= *cap)
		return;
	while (n < need)
		n *= 2;
	*buf = xrealloc(*buf, n);
	*cap = n;
}

static void
http_conn_free(struct http_conn *c)
{
	struct http_worker	*w = c->w;

	TAILQ_REMOVE(&w->conns, c, entry);
	event_free(c->rev);
	event_free(c->wev);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	if (w->stopping && TAILQ_EMPTY(&w->conns))
		event_base_loopbreak(w->base);
}

/*
 * The reply is out and the connection is to end.  After a refused
 * request the client may still be sending: half-close and read on until
 * it closes, for at most twice the timeout since the request began, so
 * that closing does not reset the connection under the reply it has yet
 * to read.  Returns 1 if c was freed.
 */
static int
http_conn_finish(struct http_conn *c)
{
	if (!c->linger || c->w->stopping) {
		http_conn_free(c);
		return 1;
	}
	shutdown(c->fd, SHUT_WR);
	c->lingering = 1;
	c->inoff = c->inlen = 0;
	return 0;
}

/*
 * Write out what is buffered.  Returns 0 when all is written (the
 * connection may then be gone if it was closing: *freed says so), 1 when
 * the socket is full (the write event is armed), -1 when the connection
 * died and was freed.
 */
static int
http_conn_flush(struct http_conn *c, int *freed)
{
	ssize_t	n;

	*freed = 0;
	while (c->outoff < c->outlen) {
		n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
		if (n > 0) {
			c->outoff += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!c->writing) {
				event_del(c->rev);
				event_add(c->wev, c->w->tv);
				c->writing = 1;
			}
			return 1;
		}
		http_conn_free(c);
		*freed = 1;
		return -1;
	}
	c->outoff = c->outlen = 0;
	if (c->outcap > HTTP_BUF_KEEP) {
		free(c->out);
		c->out = NULL;
		c->outcap = 0;
	}
	if (c->writing) {
		event_del(c->wev);
		event_add(c->rev, c->w->tv);
		c->writing = 0;
	}
	if (c->closing)
		*freed = http_conn_finish(c);
	return 0;
}

static void	http_dispatch(struct http_conn *c, char *b, const struct http_head *h);
static void	http_refuse(struct http_conn *c, int code, const char *why);

/*
 * Handle the next request in the input if it is complete.  Returns 1 if
 * one was handled, 0 if more input is needed or the connection is
 * closing, -1 if the connection died and was freed.
 */
static int
http_conn_next(struct http_conn *c)
{
	struct http_server	*s = c->w->s;
	char			*b = c->in + c->inoff, *end;
	size_t			 avail = c->inlen - c->inoff, from, need;
	const char		*why = NULL;
	int			 code, freed;

	if (avail == 0 || c->closing)
		return 0;
	if (c->started == 0)
		c->started = util_mono_ns();
	if (!c->have_head) {
		from = c->scanned > 3 ? c->scanned - 3 : 0;
		end = memmem(b + from, avail - from, "\r\n\r\n", 4);
		if (end == NULL) {
			c->scanned = avail;
			if (avail > HTTP_MAX_HEAD)
				http_refuse(c, 431, "the request head is "
				    "larger than 65536 bytes");
			return 0;
		}
		if ((size_t)(end - b) + 4 > HTTP_MAX_HEAD) {
			http_refuse(c, 431, "the request head is larger "
			    "than 65536 bytes");
			return 0;
		}
		code = http_head_parse(b, (size_t)(end - b) + 4, &c->head,
		    &why);
		if (code == 0 && c->head.chunked) {
			code = 411;
			why = "chunked request bodies are not supported; send "
			    "a Content-Length";
		}
		if (code == 0 && (uint64_t)c->head.clen > s->max_body) {
			code = 413;
			why = NULL;
		}
		if (code != 0) {
			http_refuse(c, code, why);
			return 0;
		}
		c->have_head = 1;
		c->continued = 0;
	}
	need = c->head.len + (size_t)c->head.clen;
	if (avail < need) {
		if (c->head.expect && !c->continued) {
			static const char	cont[] = "HTTP/1.1 100 Continue"
						    "\r\n\r\n";

			c->continued = 1;
			http_buf_reserve(&c->out, &c->outcap, c->outlen +
			    sizeof cont);
			memcpy(c->out + c->outlen, cont, sizeof cont - 1);
			c->outlen += sizeof cont - 1;
			if (http_conn_flush(c, &freed) == -1)
				return -1;
		}
		return 0;
	}
	http_dispatch(c, b, &c->head);
	c->inoff += need;
	c->have_head = 0;
	c->scanned = 0;
	c->started = 0;
	return 1;
}

/* Answer what has arrived, then write the replies out. */
static void
http_conn_process(struct http_conn *c)
{
	int	freed, rc;

	while ((rc = http_conn_next(c)) == 1) {
		if (c->outlen > HTTP_OUT_FLUSH) {
			if (http_conn_flush(c, &freed) != 0 || freed)
				return;
		}
	}
	if (rc == -1)
		return;
	if (c->inoff == c->inlen) {
		c->inoff = c->inlen = 0;
		if (c->incap > HTTP_BUF_KEEP) {
			free(c->in);
			c->in = NULL;
			c->incap = 0;
		}
	}
	if (c->outlen > 0)
		http_conn_flush(c, &freed);
}

static void
http_conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_conn	*c = arg;
	struct http_server	*s = c->w->s;
	ssize_t			 n;
	size_t			 want;
	char			 drain[4096];

	if (what & EV_TIMEOUT) {
		http_conn_free(c);	/* idle, or a request too slow */
		return;
	}
	if (c->lingering) {
		/* At most the timeout from the refused request's start. */
		n = read(fd, drain, sizeof drain);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR) ||
		    util_mono_ns() - c->started > 2 * s->timeout_ns)
			http_conn_free(c);
		return;
	}
	/* Compact, then make room for the head or the whole body. */
	if (c->inoff > 0 && c->inoff == c->inlen)
		c->inoff = c->inlen = 0;
	else if (c->inoff > 0 && c->incap - c->inlen < HTTP_BUF_INIT) {
		memmove(c->in, c->in + c->inoff, c->inlen - c->inoff);
		c->inlen -= c->inoff;
		c->inoff = 0;
	}
	want = c->inlen + HTTP_BUF_INIT;
	if (c->have_head && c->inoff + c->head.len +
	    (size_t)c->head.clen > want)
		want = c->inoff + c->head.len + (size_t)c->head.clen;
	http_buf_reserve(&c->in, &c->incap, want);
	n = read(fd, c->in + c->inlen, c->incap - c->inlen);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0) {
		/* Closed (or reset): answer nothing more. */
		http_conn_free(c);
		return;
	}
	c->inlen += (size_t)n;
	if (c->started != 0 && util_mono_ns() - c->started > s->timeout_ns) {
		http_conn_free(c);	/* a request trickling in */
		return;
	}
	http_conn_process(c);
}

static void
http_conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_conn	*c = arg;
	int			 freed;

	(void)fd;
	if (what & EV_TIMEOUT) {
		http_conn_free(c);	/* the client does not read */
		return;
	}
	if (http_conn_flush(c, &freed) != 0 || freed || c->lingering)
		return;
	/* Requests that arrived while the output was blocked. */
	if (c->inlen > c->inoff)
		http_conn_process(c);
}

static void
http_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct http_worker	*w = arg;
	struct http_conn	*c;
	int			 fd, one = 1;

	(void)what;
	for (int i = 0; i < HTTP_ACCEPT_BATCH; i++) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				log_warn("http", "accept: %s", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		c = xcalloc(1, sizeof *c);
		c->w = w;
		c->fd = fd;
		c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST,
		    http_conn_read_cb, c);
		c->wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST,
		    http_conn_write_cb, c);
		if (c->rev == NULL || c->wev == NULL) {
			log_error("http", "event_new failed");
			abort();
		}
		TAILQ_INSERT_TAIL(&w->conns, c, entry);
		event_add(c->rev, w->tv);
	}
}

/* ---- dispatch ---- */

static void
http_req_init(struct http_req *req, struct http_conn *c)
{
	req->c = c;
	req->s = c->w->s;
	req->rt = &req->s->unmatched;
	req->base = NULL;
	req->h = NULL;
	req->method = "";
	req->path = "";
	req->pbuf = NULL;
	req->nquery = -1;
	req->xhdr = NULL;
	req->head_only = 0;
	req->keepalive = 0;
	req->code = 0;
}

/*
 * Refuse the request being read: a JSON error, then close.  A 413 is
 * counted under its route when it has one.
 */
static void
http_refuse(struct http_conn *c, int code, const char *why)
{
	struct http_server	*s = c->w->s;
	struct http_req		 req;
	struct http_span	 spans[HTTP_MAX_PARAMS];
	struct http_rt		*rt, *pathrt;
	uint64_t		 t0 = util_mono_ns();
	char			 allow[64];
	const char		*b = c->in + c->inoff;

	http_req_init(&req, c);
	c->linger = 1;
	switch (code) {
	case 413:
		rt = http_route_find(s, b, b + c->head.target, spans, &pathrt,
		    allow, sizeof allow);
		if (rt != NULL || pathrt != NULL)
			req.rt = rt != NULL ? rt : pathrt;
		http_reply_error(&req, 413, "payload_too_large", "request "
		    "body is larger than %zu bytes", s->max_body);
		break;
	case 411:
		http_reply_error(&req, 411, "length_required", "%s", why);
		break;
	case 431:
		http_reply_error(&req, 431, "header_too_large", "%s", why);
		break;
	case 505:
		http_reply_error(&req, 505, "http_version_not_supported",
		    "%s", why);
		break;
	default:
		http_reply_error(&req, code, "bad_request", "%s", why);
		break;
	}
	c->closing = 1;
	http_account(s, req.rt, req.code, t0);
}

/* How many '&'-separated pairs query holds (0 for NULL or ""). */
static int
http_query_pairs(const char *query)
{
	int	n;

	if (query == NULL || *query == '\0')
		return 0;
	for (n = 1; (query = strchr(query, '&')) != NULL; query++)
		n++;
	return n;
}

static void
http_dispatch(struct http_conn *c, char *b, const struct http_head *h)
{
	struct http_server	*s = c->w->s;
	struct http_req		 req;
	struct http_span	 spans[HTTP_MAX_PARAMS];
	struct http_rt		*rt, *pathrt;
	uint64_t		 t0 = util_mono_ns();
	char			 allow[64], xhdr[96];
	const char		*method = b;

	http_req_init(&req, c);
	req.base = b;
	req.h = h;
	req.method = b;
	req.path = b + h->target;
	req.keepalive = h->keepalive;
	if (strcmp(method, "HEAD") == 0) {
		method = "GET";
		req.head_only = 1;
	}

	rt = http_route_find(s, method, req.path, spans, &pathrt, allow,
	    sizeof allow);
	if (rt == NULL && pathrt == NULL) {
		http_reply_error(&req, 404, "not_found", "no route for %s %s",
		    req.method, req.path);
	} else if (rt == NULL) {
		req.rt = pathrt;
		snprintf(xhdr, sizeof xhdr, "Allow: %s\r\n", allow);
		req.xhdr = xhdr;
		http_reply_error(&req, 405, "method_not_allowed",
		    "%s is not allowed on %s (allowed: %s)", req.method,
		    req.path, allow);
	} else {
		req.rt = rt;
		if (http_params_decode(&req, spans) == -1) {
			/* replied 400 */
		} else if (http_query_pairs(h->query ? b + h->query : NULL) >
		    HTTP_MAX_QUERY) {
			/* Not looked at past the limit: refused, not ignored. */
			http_reply_error(&req, 400, "bad_request", "more than %d "
			    "query parameters", HTTP_MAX_QUERY);
		} else if ((rt->r.flags & HTTP_ROUTE_MUTATING) &&
		    s->token != NULL && !http_authorized(&req)) {
			req.xhdr = "WWW-Authenticate: Bearer\r\n";
			http_reply_error(&req, 401, "unauthorized", "%s %s needs "
			    "a valid bearer token", req.method, req.path);
		} else {
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
	free(req.pbuf);
}

static void
http_worker_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_worker	*w = arg;
	struct http_conn	*c, *next;
	struct timeval		 grace = { HTTP_STOP_GRACE_MS / 1000,
				    (HTTP_STOP_GRACE_MS % 1000) * 1000 };

	(void)fd;
	(void)what;
	w->stopping = 1;
	if (w->lev != NULL) {
		event_free(w->lev);
		w->lev = NULL;
		close(w->lfd);
		w->lfd = -1;
	}
	for (c = TAILQ_FIRST(&w->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->outoff == c->outlen)
			http_conn_free(c);
		else
			c->closing = 1;
	}
	if (TAILQ_EMPTY(&w->conns))
		event_base_loopbreak(w->base);
	else
		event_base_loopexit(w->base, &grace);
}

static void *
http_worker_main(void *arg)
{
	struct http_worker	*w = arg;

	pthread_setname_np(pthread_self(), "http-worker");
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
    char *err, size_t errlen)
{
	w->s = s;
	w->lfd = fd;
	TAILQ_INIT(&w->conns);
	if ((w->base = event_base_new()) == NULL ||
	    (w->stop_ev = event_new(w->base, -1, 0, http_worker_stop_cb,
	    w)) == NULL ||
	    (w->lev = event_new(w->base, fd, EV_READ | EV_PERSIST,
	    http_accept_cb, w)) == NULL ||
	    event_add(w->lev, NULL) == -1) {
		snprintf(err, errlen, "cannot create the event loop");
		return -1;
	}
	/* One timeout for every connection: libevent keeps it in a queue. */
	if ((w->tv = event_base_init_common_timeout(w->base,
	    &s->timeout)) == NULL)
		w->tv = &s->timeout;
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
	s->timeout_ns = (uint64_t)cfg->timeout_ms * 1000000;
	s->timeout.tv_sec = cfg->timeout_ms / 1000;
	s->timeout.tv_usec = (cfg->timeout_ms % 1000) * 1000;
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
		if (http_worker_init(s, &s->workers[i], fd, why,
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
	struct http_conn	*c;

	if (s == NULL)
		return;
	http_server_stop(s);
	for (int i = 0; i < s->nworkers; i++) {
		w = &s->workers[i];
		w->stopping = 0;	/* no loopbreak from http_conn_free */
		while ((c = TAILQ_FIRST(&w->conns)) != NULL)
			http_conn_free(c);
		if (w->lev != NULL)
			event_free(w->lev);
		if (w->lfd >= 0)
			close(w->lfd);
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

/*
 * Percent- and '+'-decode s in place, as a form value.  An invalid or NUL
 * escape stays as it is.
 */
static void
http_query_decode(char *s)
{
	char	*d = s;
	int	 hi, lo;

	for (; *s != '\0'; s++) {
		if (*s == '+')
			*d++ = ' ';
		else if (*s == '%' && (hi = http_hexval(s[1])) >= 0 &&
		    (lo = http_hexval(s[2])) >= 0 && (hi | lo) != 0) {
			*d++ = (char)(hi << 4 | lo);
			s += 2;
		} else
			*d++ = *s;
	}
	*d = '\0';
}

/*
 * The query is split and decoded in place on first use: it lies in the
 * connection's buffer, which nothing reads again.  Pairs without '='
 * are skipped; the first of repeated keys wins.
 */
const char *
http_req_query(struct http_req *req, const char *name)
{
	char	*p, *amp, *eq;

	if (req->nquery == -1) {
		req->nquery = 0;
		p = req->h != NULL && req->h->query != 0 ?
		    req->base + req->h->query : NULL;
		while (p != NULL && req->nquery < HTTP_MAX_QUERY) {
			if ((amp = strchr(p, '&')) != NULL)
				*amp++ = '\0';
			if ((eq = strchr(p, '=')) != NULL && eq != p) {
				*eq = '\0';
				http_query_decode(p);
				http_query_decode(eq + 1);
				req->qkeys[req->nquery] = p;
				req->qvals[req->nquery++] = eq + 1;
			}
			p = amp;
		}
	}
	for (int i = 0; i < req->nquery; i++)
		if (strcmp(req->qkeys[i], name) == 0)
			return req->qvals[i];
	return NULL;
}

const char *
http_req_header(struct http_req *req, const char *name)
{
	const struct http_head	*h = req->h;

	if (h == NULL)
		return NULL;
	for (unsigned i = 0; i < h->nhdrs; i++)
		if (strcasecmp(req->base + h->hdrs[i].name, name) == 0)
			return req->base + h->hdrs[i].value;
	return NULL;
}

const char *
http_req_body(struct http_req *req, size_t *len)
{
	size_t	n = req->h != NULL ? (size_t)req->h->clen : 0;

	if (len != NULL)
		*len = n;
	if (n == 0)
		return "";
	return req->base + req->h->len;
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

/* The worker's "Date: ...\r\n" line, formatted once a second. */
static void
http_date(struct http_worker *w)
{
	static const char	 days[][4] = { "Sun", "Mon", "Tue", "Wed",
				    "Thu", "Fri", "Sat" };
	static const char	 months[][4] = { "Jan", "Feb", "Mar", "Apr",
				    "May", "Jun", "Jul", "Aug", "Sep", "Oct",
				    "Nov", "Dec" };
	time_t			 now = time(NULL);
	struct tm		 tm;
	int			 n;

	if (now == w->date_sec && w->datelen > 0)
		return;
	w->date_sec = now;
	gmtime_r(&now, &tm);
	n = snprintf(w->date, sizeof w->date, "Date: %s, %02d %s %04d "
	    "%02d:%02d:%02d GMT\r\n", days[tm.tm_wday], tm.tm_mday,
	    months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
	    tm.tm_sec);
	w->datelen = n > 0 && (size_t)n < sizeof w->date ? (size_t)n : 0;
}

/* Append v in decimal to p and return the end. */
static char *
http_put_uint(char *p, size_t v)
{
	char	buf[24], *q = buf + sizeof buf;

	do {
		*--q = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	memcpy(p, q, (size_t)(buf + sizeof buf - q));
	return p + (buf + sizeof buf - q);
}

/* Append n bytes to p and return the end. */
static char *
http_put(char *p, const char *s, size_t n)
{
	if (n > 0)
		memcpy(p, s, n);
	return p + n;
}

void
http_reply(struct http_req *req, int code, const char *content_type,
    const char *body, size_t len)
{
	struct http_conn	*c = req->c;
	struct http_worker	*w = c->w;
	const char		*reason = http_reason(code);
	size_t			 ctl = content_type != NULL ?
				    strlen(content_type) : 0;
	size_t			 xl = req->xhdr != NULL ? strlen(req->xhdr) : 0;
	char			*p;
	int			 keep;

	if (req->code != 0) {
		log_error("http", "%s %s: second reply (%d after %d) dropped",
		    req->method, req->rt->r.pattern, code, req->code);
		return;
	}
	req->code = code;
	keep = req->keepalive && !c->closing && !w->stopping;
	if (!keep)
		c->closing = 1;
	http_date(w);
	http_buf_reserve(&c->out, &c->outcap, c->outlen + 160 +
	    strlen(reason) + ctl + xl + w->datelen + len);
	p = c->out + c->outlen;
	p = http_put(p, "HTTP/1.1 ", 9);
	p = http_put_uint(p, code > 0 ? (size_t)code : 0);
	*p++ = ' ';
	p = http_put(p, reason, strlen(reason));
	p = http_put(p, "\r\n", 2);
	p = http_put(p, w->date, w->datelen);
	if (content_type != NULL) {
		p = http_put(p, "Content-Type: ", 14);
		p = http_put(p, content_type, ctl);
		p = http_put(p, "\r\n", 2);
	}
	p = http_put(p, "Content-Length: ", 16);
	p = http_put_uint(p, len);
	p = http_put(p, "\r\n", 2);
	p = http_put(p, req->xhdr, xl);
	if (!keep)
		p = http_put(p, "Connection: close\r\n", 19);
	else if (req->h != NULL && req->h->minor == 0)
		p = http_put(p, "Connection: keep-alive\r\n", 24);
	p = http_put(p, "\r\n", 2);
	if (!req->head_only)
		p = http_put(p, body, len);
	c->outlen = (size_t)(p - c->out);
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
