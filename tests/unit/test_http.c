/*
 * test_http: the HTTP server seen from a socket.
 *
 * A server on 127.0.0.1:0 with two workers and a few routes; the tests
 * write raw HTTP/1.1 and parse the status line, headers and body
 * themselves, so nothing of libevent's client side hides what goes over
 * the wire.
 */
#include <sys/socket.h>
#include <sys/time.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/http.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/xmalloc.h"

#define TOKEN		"s3cret"
#define MAX_BODY	1024
#define TIMEOUT_MS	300

/* ---- handlers ---- */

static void
h_feature(struct http_req *req, void *arg)
{
	const char	*asof = http_req_query(req, "as_of");
	const char	*feats = http_req_query(req, "features");

	(void)arg;
	http_reply_json(req, 200, json_pack("{s:s,s:s,s:s?,s:s?,s:s}",
	    "view", http_req_param(req, "view"),
	    "key", http_req_param(req, "key"),
	    "as_of", asof, "features", feats,
	    "path", http_req_path(req)));
}

static void
h_echo(struct http_req *req, void *arg)
{
	json_t	*j;

	(void)arg;
	if ((j = http_req_json(req)) == NULL)
		return;
	http_reply_json(req, 200, j);
}

static void
h_admin(struct http_req *req, void *arg)
{
	(void)arg;
	http_reply_json(req, 200, json_pack("{s:b,s:s}", "ok", 1, "name",
	    http_req_param(req, "name")));
}

static atomic_int	slow_started;

static void
h_slow(struct http_req *req, void *arg)
{
	(void)arg;
	atomic_store(&slow_started, 1);
	usleep(300 * 1000);	/* >= TIMEOUT_MS on purpose */
	http_reply(req, 200, "text/plain", "slow\n", 5);
}

static void
h_silent(struct http_req *req, void *arg)
{
	(void)req;
	(void)arg;
}

static const struct http_route routes[] = {
	{ "GET", "/v1/features/{view}/{key}", h_feature, NULL, 0 },
	{ "POST", "/v1/echo", h_echo, NULL, 0 },
	{ "PUT", "/v1/echo", h_echo, NULL, 0 },
	{ "POST", "/v1/admin/{name}", h_admin, NULL, HTTP_ROUTE_MUTATING },
	{ "GET", "/slow", h_slow, NULL, 0 },
	{ "GET", "/silent", h_silent, NULL, 0 },
};
#define NROUTES	(sizeof routes / sizeof routes[0])

/* ---- a tiny raw client ---- */

struct conn {
	int	fd;
	char	buf[65536];
	size_t	len;
};

struct resp {
	int	 status;
	char	 head[8192];
	char	*body;
	size_t	 bodylen;
};

static struct http_server	*srv;
static struct metrics		*mx;

static int
conn_open_addr(struct conn *c, const char *addr)
{
	struct sockaddr_in	sin;
	struct timeval		tv = { 5, 0 };
	char			host[64];
	int			port;

	assert_int_equal(util_split_hostport(addr, host, sizeof host, &port), 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sin.sin_addr);
	c->len = 0;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd == -1)
		return -1;
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return connect(c->fd, (struct sockaddr *)&sin, sizeof sin);
}

static void
conn_open(struct conn *c)
{
	assert_int_equal(conn_open_addr(c, http_server_address(srv)), 0);
}

static void
conn_send(struct conn *c, const char *data, size_t len)
{
	ssize_t	n;

	while (len > 0) {
		n = send(c->fd, data, len, MSG_NOSIGNAL);
		if (n <= 0)
			return;	/* the server may close early (413) */
		data += n;
		len -= (size_t)n;
	}
}

static void
conn_sends(struct conn *c, const char *s)
{
	conn_send(c, s, strlen(s));
}

/* Read more; returns bytes read, 0 on EOF, -1 on error/timeout. */
static ssize_t
conn_fill(struct conn *c)
{
	ssize_t	n;

	if (c->len >= sizeof c->buf - 1)
		return -1;
	n = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
	if (n > 0)
		c->len += (size_t)n;
	return n;
}

static const char *
resp_header(const struct resp *r, const char *name)
{
	static __thread char	 val[256];
	const char		*p = r->head, *eol;
	size_t			 nl = strlen(name), vl;

	while ((eol = strstr(p, "\r\n")) != NULL) {
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			p += nl + 1;
			while (*p == ' ')
				p++;
			vl = (size_t)(eol - p);
			if (vl >= sizeof val)
				vl = sizeof val - 1;
			memcpy(val, p, vl);
			val[vl] = '\0';
			return val;
		}
		p = eol + 2;
	}
	return NULL;
}

/* Read one response; returns 0, or -1 if the connection ended first. */
static int
conn_read(struct conn *c, struct resp *r)
{
	char		*end;
	const char	*cl;
	size_t		 hl, need;

	memset(r, 0, sizeof *r);
	for (;;) {
		c->buf[c->len < sizeof c->buf ? c->len : sizeof c->buf - 1] =
		    '\0';
		if ((end = strstr(c->buf, "\r\n\r\n")) != NULL)
			break;
		if (conn_fill(c) <= 0)
			return -1;
	}
	hl = (size_t)(end - c->buf) + 4;
	if (hl >= sizeof r->head)
		return -1;
	memcpy(r->head, c->buf, hl);
	if (sscanf(r->head, "HTTP/1.1 %d ", &r->status) != 1)
		return -1;
	cl = resp_header(r, "Content-Length");
	need = cl != NULL ? strtoul(cl, NULL, 10) : 0;
	while (c->len < hl + need)
		if (conn_fill(c) <= 0)
			return -1;
	r->body = xmalloc(need + 1);
	memcpy(r->body, c->buf + hl, need);
	r->body[need] = '\0';
	r->bodylen = need;
	memmove(c->buf, c->buf + hl + need, c->len - hl - need);
	c->len -= hl + need;
	return 0;
}

static void
conn_close(struct conn *c)
{
	close(c->fd);
}

static void
resp_free(struct resp *r)
{
	free(r->body);
	r->body = NULL;
}

/* One request on a fresh connection. */
static void
roundtrip(const char *req, struct resp *r)
{
	struct conn	c;

	conn_open(&c);
	conn_sends(&c, req);
	assert_int_equal(conn_read(&c, r), 0);
	conn_close(&c);
}

static json_t *
resp_json(const struct resp *r)
{
	json_error_t	 err;
	json_t		*j;

	assert_string_equal(resp_header(r, "Content-Type"),
	    "application/json; charset=utf-8");
	j = json_loadb(r->body, r->bodylen, 0, &err);
	assert_non_null(j);
	return j;
}

/* Assert the body is {"error":{"code":code,...}} and return the message. */
static void
assert_error(const struct resp *r, int status, const char *code,
    const char *msgpart)
{
	json_t		*j = resp_json(r);
	const char	*c = NULL, *m = NULL;

	assert_int_equal(r->status, status);
	assert_int_equal(json_unpack(j, "{s:{s:s,s:s}}", "error", "code", &c,
	    "message", &m), 0);
	assert_string_equal(c, code);
	if (msgpart != NULL && strstr(m, msgpart) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", m, msgpart);
	json_decref(j);
}

static double
count_of(const char *route, const char *code)
{
	struct metric_family	*f;

	f = metrics_counter(mx, "mlopsd_http_requests_total",
	    "HTTP requests by route pattern and status code.", "route,code");
	return metric_value(metric_get(f, route, code));
}

/* ---- server setup ---- */

static struct http_server *
start_server(const char *listen, int threads)
{
	struct http_config	 cfg = { listen, threads, MAX_BODY, TIMEOUT_MS,
				    TOKEN };
	struct http_server	*s;
	char			 err[256];

	s = http_server_new(&cfg, routes, NROUTES, mx, err, sizeof err);
	if (s == NULL)
		fail_msg("http_server_new: %s", err);
	assert_int_equal(http_server_start(s), 0);
	return s;
}

static int
group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	mx = metrics_new();
	srv = start_server("127.0.0.1:0", 2);
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	http_server_free(srv);
	metrics_free(mx);
	return 0;
}

/* ---- tests ---- */

static void
test_address(void **state)
{
	const char	*a = http_server_address(srv);
	char		 host[64];
	int		 port;

	(void)state;
	assert_int_equal(util_split_hostport(a, host, sizeof host, &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_true(port > 0);
}

static void
test_get_params_query(void **state)
{
	struct resp	 r;
	json_t		*j;

	(void)state;
	roundtrip("GET /v1/features/user%20x/a%7Cb%2F1?as_of=1000&"
	    "features=f1,f2 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	j = resp_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "view")),
	    "user x");
	assert_string_equal(json_string_value(json_object_get(j, "key")),
	    "a|b/1");
	assert_string_equal(json_string_value(json_object_get(j, "as_of")),
	    "1000");
	assert_string_equal(json_string_value(json_object_get(j, "features")),
	    "f1,f2");
	assert_string_equal(json_string_value(json_object_get(j, "path")),
	    "/v1/features/user%20x/a%7Cb%2F1");
	json_decref(j);
	resp_free(&r);

	/* no query: absent values */
	roundtrip("GET /v1/features/v/k HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	j = resp_json(&r);
	assert_true(json_is_null(json_object_get(j, "as_of")));
	json_decref(j);
	resp_free(&r);

	/*
	 * 32 pairs are read, the last one too; a 33rd is refused rather
	 * than the pairs past the limit silently ignored.
	 */
	{
		char	q[1024] = "";
		char	*req;

		for (int i = 1; i < 32; i++)
			snprintf(q + strlen(q), sizeof q - strlen(q),
			    "z%d=1&", i);
		req = xstrfmt("GET /v1/features/v/k?%sas_of=7 HTTP/1.1\r\n"
		    "Host: t\r\n\r\n", q);
		roundtrip(req, &r);
		free(req);
		assert_int_equal(r.status, 200);
		j = resp_json(&r);
		assert_string_equal(json_string_value(json_object_get(j,
		    "as_of")), "7");
		json_decref(j);
		resp_free(&r);
		req = xstrfmt("GET /v1/features/v/k?z0=1&%sas_of=7 HTTP/1.1"
		    "\r\nHost: t\r\n\r\n", q);
		roundtrip(req, &r);
		free(req);
		assert_error(&r, 400, "bad_request",
		    "more than 32 query parameters");
		resp_free(&r);
	}
}

static void
test_bad_percent_encoding(void **state)
{
	struct resp	r;

	(void)state;
	roundtrip("GET /v1/features/a%zz/k HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 400, "bad_request",
	    "path parameter \"view\": invalid percent-encoding");
	resp_free(&r);
	roundtrip("GET /v1/features/a/%00 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 400, "bad_request", "path parameter \"key\"");
	resp_free(&r);
}

static void
test_not_found(void **state)
{
	struct resp	r;
	double		before = count_of("unmatched", "404");

	(void)state;
	roundtrip("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 404, "not_found", "no route for GET /nope");
	resp_free(&r);
	/* a missing segment, a trailing slash, an empty parameter */
	roundtrip("GET /v1/features/v HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 404, "not_found", NULL);
	resp_free(&r);
	roundtrip("GET /v1/features/v/k/ HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 404, "not_found", NULL);
	resp_free(&r);
	roundtrip("GET /v1/features//k HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 404, "not_found", NULL);
	resp_free(&r);
	assert_true(count_of("unmatched", "404") - before == 4);
}

static void
test_method_not_allowed(void **state)
{
	struct resp	r;

	(void)state;
	roundtrip("GET /v1/echo HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 405, "method_not_allowed", "GET is not allowed");
	assert_string_equal(resp_header(&r, "Allow"), "POST, PUT");
	resp_free(&r);
	roundtrip("DELETE /v1/features/a/b HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_int_equal(r.status, 405);
	assert_string_equal(resp_header(&r, "Allow"), "GET, HEAD");
	resp_free(&r);
}

static void
test_post_echo(void **state)
{
	struct resp	 r;
	const char	*body = "{\"a\": [1, 2], \"b\": \"\xc3\xa9\"}";
	char		 req[512];
	double		 before = count_of("/v1/echo", "200");

	(void)state;
	snprintf(req, sizeof req, "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    strlen(body), body);
	roundtrip(req, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"a\":[1,2],\"b\":\"\xc3\xa9\"}");
	resp_free(&r);
	assert_true(count_of("/v1/echo", "200") - before == 1);
}

static void
test_malformed_json(void **state)
{
	struct resp	r;
	const char	*body = "{\"a\": 1,\n  \"b\": }";
	char		req[512];

	(void)state;
	snprintf(req, sizeof req, "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
	roundtrip(req, &r);
	assert_error(&r, 400, "malformed_json", "line 2 column 8: ");
	resp_free(&r);
	/* an empty body is malformed too */
	roundtrip("POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
	    "\r\n", &r);
	assert_error(&r, 400, "malformed_json", "line 1 column 0: ");
	resp_free(&r);
}

static void
test_too_large_content_length(void **state)
{
	struct conn	 c;
	struct resp	 r;
	char		 hdr[256], *body;
	size_t		 n = MAX_BODY + 1;

	(void)state;
	body = xmalloc(n);
	memset(body, ' ', n);
	conn_open(&c);
	snprintf(hdr, sizeof hdr, "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: %zu\r\n\r\n", n);
	conn_sends(&c, hdr);
	conn_send(&c, body, n);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_error(&r, 413, "payload_too_large", "larger than 1024 bytes");
	assert_string_equal(resp_header(&r, "Connection"), "close");
	resp_free(&r);
	/* refused on the head: the body is not read, the connection ends */
	assert_int_equal(conn_read(&c, &r), -1);
	conn_close(&c);
	free(body);

	/* exactly the limit is fine */
	body = xmalloc(MAX_BODY + 256);
	snprintf(hdr, sizeof hdr, "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: %d\r\n\r\n", MAX_BODY);
	memset(body, ' ', MAX_BODY);
	body[0] = '[';
	body[MAX_BODY - 1] = ']';
	conn_open(&c);
	conn_sends(&c, hdr);
	conn_send(&c, body, MAX_BODY);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	conn_close(&c);
	free(body);
}

/* Chunked request bodies are refused: send a Content-Length. */
static void
test_chunked_refused(void **state)
{
	struct conn	c;
	struct resp	r;

	(void)state;
	conn_open(&c);
	conn_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_error(&r, 411, "length_required", "send a Content-Length");
	resp_free(&r);
	assert_int_equal(conn_read(&c, &r), -1);
	conn_close(&c);
}

/* Far beyond the limit, on any path: 413 before 404, body unread. */
static void
test_too_large_declared(void **state)
{
	struct resp	r;
	double		before = count_of("/v1/echo", "413");

	(void)state;
	roundtrip("POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: 100000000\r\n\r\n", &r);
	assert_error(&r, 413, "payload_too_large", "larger than 1024 bytes");
	resp_free(&r);
	assert_true(count_of("/v1/echo", "413") - before == 1);
	roundtrip("POST /nope HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: 100000000\r\n\r\n", &r);
	assert_error(&r, 413, "payload_too_large", NULL);
	resp_free(&r);
	roundtrip("GET /v1/features/a/b HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: 999999999999999999\r\n\r\n", &r);
	assert_error(&r, 413, "payload_too_large", NULL);
	resp_free(&r);
}

static void
test_auth(void **state)
{
	static const char	*bad[] = {
		"",
		"Authorization: Bearer wrong\r\n",
		"Authorization: Bearer s3cre\r\n",
		"Authorization: Bearer s3cret2\r\n",
		"Authorization: Basic s3cret\r\n",
	};
	struct resp		 r;
	char			 req[256];
	json_t			*j;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(req, sizeof req, "POST /v1/admin/x HTTP/1.1\r\n"
		    "Host: t\r\n%sContent-Length: 0\r\n\r\n", bad[i]);
		roundtrip(req, &r);
		assert_error(&r, 401, "unauthorized", "bearer token");
		assert_string_equal(resp_header(&r, "WWW-Authenticate"),
		    "Bearer");
		resp_free(&r);
	}
	roundtrip("POST /v1/admin/x HTTP/1.1\r\nHost: t\r\n"
	    "Authorization: bearer s3cret\r\nContent-Length: 0\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	j = resp_json(&r);
	assert_true(json_is_true(json_object_get(j, "ok")));
	json_decref(j);
	resp_free(&r);
	/* non-mutating routes need no token */
	roundtrip("GET /v1/features/a/b HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
}

static void
test_keepalive(void **state)
{
	struct conn	c;
	struct resp	r;

	(void)state;
	conn_open(&c);
	conn_sends(&c, "GET /v1/features/a/1 HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"key\":\"1\""));
	resp_free(&r);
	conn_sends(&c, "GET /v1/features/a/2 HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"key\":\"2\""));
	resp_free(&r);
	/* pipelined */
	conn_sends(&c, "GET /v1/features/a/3 HTTP/1.1\r\nHost: t\r\n\r\n"
	    "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 404);
	resp_free(&r);
	conn_close(&c);
}

/* Three requests in one write, a body among them: three replies in order. */
static void
test_pipelining(void **state)
{
	struct conn	c;
	struct resp	r;

	(void)state;
	conn_open(&c);
	conn_sends(&c, "GET /v1/features/a/1 HTTP/1.1\r\nHost: t\r\n\r\n"
	    "POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n"
	    "[1,2,3]"
	    "GET /v1/features/a/3?as_of=5 HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"key\":\"1\""));
	resp_free(&r);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "[1,2,3]");
	resp_free(&r);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"as_of\":\"5\""));
	resp_free(&r);
	conn_close(&c);
}

/* A request written one byte at a time, twice on one connection. */
static void
test_split_reads(void **state)
{
	static const char	 req[] = "POST /v1/echo?x=1 HTTP/1.1\r\n"
				    "Host: t\r\nContent-Length: 9\r\n\r\n"
				    "{\"a\":[1]}";
	struct conn		 c;
	struct resp		 r;

	(void)state;
	conn_open(&c);
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof req - 1; i++) {
			conn_send(&c, req + i, 1);
			if (i % 16 == 0)
				usleep(1000);
		}
		assert_int_equal(conn_read(&c, &r), 0);
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, "{\"a\":[1]}");
		resp_free(&r);
	}
	conn_close(&c);
}

/* Requests the parser refuses: a JSON error, then the connection ends. */
static void
test_bad_requests(void **state)
{
	static const struct {
		const char	*req;
		int		 status;
		const char	*code, *msg;
	} cases[] = {
		{ "THIS IS NOT HTTP\r\n\r\n", 400, "bad_request",
		    "malformed request line" },
		{ "GET  /v1/echo HTTP/1.1\r\n\r\n", 400, "bad_request",
		    "malformed request line" },
		{ "get /v1/echo HTTP/1.1\r\n\r\n", 400, "bad_request",
		    "malformed request line" },
		{ "GET /v1/echo\r\n\r\n", 400, "bad_request",
		    "malformed request line" },
		{ "GET /v1/echo HTTP/1.1 x\r\n\r\n", 400, "bad_request",
		    "malformed request line" },
		{ "GET v1/echo HTTP/1.1\r\n\r\n", 400, "bad_request",
		    "must be an absolute path" },
		{ "GET /v1/\x01 HTTP/1.1\r\n\r\n", 400, "bad_request",
		    "malformed request target" },
		{ "GET / HTTP/2.0\r\n\r\n", 505,
		    "http_version_not_supported", "HTTP/1.x" },
		{ "GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", 400,
		    "bad_request", "folded header" },
		{ "GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "bad_request",
		    "malformed header line" },
		{ "GET / HTTP/1.1\r\n: empty\r\n\r\n", 400, "bad_request",
		    "malformed header line" },
		{ "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, "bad_request",
		    "malformed header name" },
		{ "POST /v1/echo HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400,
		    "bad_request", "malformed Content-Length" },
		{ "POST /v1/echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400,
		    "bad_request", "malformed Content-Length" },
		{ "POST /v1/echo HTTP/1.1\r\nContent-Length: 2\r\n"
		    "Content-Length: 3\r\n\r\n[]", 400, "bad_request",
		    "conflicting Content-Length" },
	};
	struct conn	c;
	struct resp	r;

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		conn_open(&c);
		conn_sends(&c, cases[i].req);
		if (conn_read(&c, &r) != 0)
			fail_msg("case %zu: no reply", i);
		if (r.status != cases[i].status)
			fail_msg("case %zu: status %d", i, r.status);
		assert_error(&r, cases[i].status, cases[i].code, cases[i].msg);
		assert_string_equal(resp_header(&r, "Connection"), "close");
		resp_free(&r);
		assert_int_equal(conn_read(&c, &r), -1);
		conn_close(&c);
	}
	/* A NUL byte in the head. */
	conn_open(&c);
	conn_send(&c, "GET /v1/echo HTTP/1.1\r\nX: a\0b\r\n\r\n", 33);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_error(&r, 400, "bad_request", "NUL byte");
	resp_free(&r);
	conn_close(&c);
}

static void
test_header_too_large(void **state)
{
	struct conn	 c;
	struct resp	 r;
	char		*big;
	size_t		 n = 70 * 1024;

	(void)state;
	/* One huge header, refused before its end arrives. */
	big = xmalloc(n + 64);
	memcpy(big, "GET / HTTP/1.1\r\nX-Big: ", 23);
	memset(big + 23, 'a', n - 23);
	conn_open(&c);
	conn_send(&c, big, n);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_error(&r, 431, "header_too_large", "larger than 65536 bytes");
	resp_free(&r);
	conn_close(&c);
	free(big);

	/* Too many header lines. */
	big = xmalloc(200 * 16 + 64);
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 101; i++)
		n += (size_t)sprintf(big + n, "X-H%d: v\r\n", i);
	n += (size_t)sprintf(big + n, "\r\n");
	conn_open(&c);
	conn_send(&c, big, n);
	assert_int_equal(conn_read(&c, &r), 0);
	assert_error(&r, 431, "header_too_large", "too many header lines");
	resp_free(&r);
	conn_close(&c);
	free(big);
}

static void
test_connection_close(void **state)
{
	struct conn	c;
	struct resp	r;

	(void)state;
	conn_open(&c);
	conn_sends(&c, "GET /v1/features/a/1 HTTP/1.1\r\nHost: t\r\n"
	    "Connection: Close\r\n\r\nGET /v1/features/a/2 HTTP/1.1\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(resp_header(&r, "Connection"), "close");
	resp_free(&r);
	/* the pipelined second request is not answered */
	assert_int_equal(conn_read(&c, &r), -1);
	conn_close(&c);
}

static void
test_http10(void **state)
{
	struct conn	c;
	struct resp	r;

	(void)state;
	/* HTTP/1.0 closes by default... */
	conn_open(&c);
	conn_sends(&c, "GET /v1/features/a/1 HTTP/1.0\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(resp_header(&r, "Connection"), "close");
	resp_free(&r);
	assert_int_equal(conn_read(&c, &r), -1);
	conn_close(&c);
	/* ...unless asked to keep alive. */
	conn_open(&c);
	for (int i = 0; i < 2; i++) {
		conn_sends(&c, "GET /v1/features/a/1 HTTP/1.0\r\n"
		    "Connection: keep-alive\r\n\r\n");
		assert_int_equal(conn_read(&c, &r), 0);
		assert_int_equal(r.status, 200);
		assert_string_equal(resp_header(&r, "Connection"),
		    "keep-alive");
		resp_free(&r);
	}
	conn_close(&c);
}

/* HEAD is GET without the body; Content-Length stays the body's. */
static void
test_head(void **state)
{
	struct conn	c;
	struct resp	r;
	size_t		getlen;

	(void)state;
	roundtrip("GET /v1/features/a/1 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	getlen = r.bodylen;
	assert_true(getlen > 0);
	resp_free(&r);
	conn_open(&c);
	conn_sends(&c, "HEAD /v1/features/a/1 HTTP/1.1\r\nHost: t\r\n\r\n"
	    "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
	/* conn_read would take the next reply as the body: read the head */
	for (;;) {
		char	*e;

		c.buf[c.len] = '\0';
		if ((e = strstr(c.buf, "\r\n\r\n")) != NULL &&
		    strstr(e + 4, "\r\n\r\n") != NULL)
			break;
		assert_true(conn_fill(&c) > 0);
	}
	assert_int_equal(strncmp(c.buf, "HTTP/1.1 200 OK\r\n", 17), 0);
	{
		char	*second = strstr(c.buf, "\r\n\r\n") + 4;
		char	 want[64];

		snprintf(want, sizeof want, "Content-Length: %zu\r\n", getlen);
		assert_non_null(strstr(c.buf, want));
		assert_int_equal(strncmp(second, "HTTP/1.1 404 ", 13), 0);
	}
	conn_close(&c);
}

static void
test_expect_continue(void **state)
{
	struct conn	c;
	struct resp	r;

	(void)state;
	conn_open(&c);
	conn_sends(&c, "PUT /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Expect: 100-continue\r\nContent-Length: 4\r\n\r\n");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 100);
	resp_free(&r);
	conn_sends(&c, "[42]");
	assert_int_equal(conn_read(&c, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "[42]");
	resp_free(&r);
	conn_close(&c);
}

/* A request trickling in, each byte within the idle timeout, is cut off. */
static void
test_slowloris(void **state)
{
	static const char	 req[] = "GET /v1/features/a/1 HTTP/1.1\r\n"
				    "Host: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n";
	struct conn		 c;
	struct resp		 r;
	uint64_t		 t0 = util_mono_ns(), ms;
	size_t			 i;

	(void)state;
	conn_open(&c);
	for (i = 0; i < sizeof req - 1; i++) {
		if (send(c.fd, req + i, 1, MSG_NOSIGNAL) != 1)
			break;
		usleep(TIMEOUT_MS / 4 * 1000);
	}
	ms = (util_mono_ns() - t0) / 1000000;
	assert_true(i < sizeof req - 1);
	assert_true(ms >= TIMEOUT_MS && ms < 3 * TIMEOUT_MS);
	assert_int_equal(conn_read(&c, &r), -1);
	conn_close(&c);
}

/*
 * Random bytes, and valid requests with random bytes flipped, never
 * crash the server (run under ASan); it goes on answering.
 */
static void
test_fuzz(void **state)
{
	static const char	*seeds[] = {
		"GET /v1/features/a/1?as_of=1&features=x HTTP/1.1\r\n"
		    "Host: t\r\n\r\n",
		"POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n"
		    "Expect: 100-continue\r\n\r\n[1,2,3]",
		"POST /v1/admin/x HTTP/1.0\r\nAuthorization: Bearer s3cret\r\n"
		    "Connection: keep-alive\r\nContent-Length: 0\r\n\r\n",
	};
	struct conn	 c;
	struct resp	 r;
	char		 buf[512];
	unsigned	 seed = 12345;
	size_t		 n;

	(void)state;
	for (int round = 0; round < 300; round++) {
		if (round % 3 == 0) {
			n = (size_t)(rand_r(&seed) % sizeof buf);
			for (size_t i = 0; i < n; i++)
				buf[i] = (char)rand_r(&seed);
		} else {
			const char *s = seeds[rand_r(&seed) % 3];

			n = strlen(s);
			memcpy(buf, s, n);
			for (int k = rand_r(&seed) % 4; k >= 0; k--)
				buf[rand_r(&seed) % n] = (char)rand_r(&seed);
			if (rand_r(&seed) % 2 && n + n < sizeof buf) {
				memcpy(buf + n, buf, n);	/* pipelined */
				n *= 2;
			}
		}
		conn_open(&c);
		conn_send(&c, buf, n);
		shutdown(c.fd, SHUT_WR);
		while (conn_fill(&c) > 0)
			c.len = 0;
		conn_close(&c);
	}
	roundtrip("GET /v1/features/a/1 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
}

static void
test_timeout(void **state)
{
	struct conn	c;
	struct resp	r;
	uint64_t	t0, ms;

	(void)state;
	conn_open(&c);
	conn_sends(&c, "POST /v1/echo HTTP/1.1\r\nHost: t\r\n"
	    "Content-Length: 10\r\n\r\nabc");
	t0 = util_mono_ns();
	assert_int_equal(conn_read(&c, &r), -1);	/* closed, no reply */
	ms = (util_mono_ns() - t0) / 1000000;
	assert_int_equal(c.len, 0);
	assert_true(ms >= TIMEOUT_MS / 2 && ms < 3000);
	conn_close(&c);
}

static void
test_handler_without_reply(void **state)
{
	struct resp	r;

	(void)state;
	roundtrip("GET /silent HTTP/1.1\r\nHost: t\r\n\r\n", &r);
	assert_error(&r, 500, "internal", "did not reply");
	resp_free(&r);
}

#define NCLIENTS	8
#define NREQUESTS	200

static void *
client_main(void *arg)
{
	atomic_int	*ok = arg;
	struct conn	*c = xmalloc(sizeof *c);
	struct resp	 r;
	char		 req[128], want[32];
	int		 open = 0;

	for (int i = 0; i < NREQUESTS; i++) {
		if (!open) {
			if (conn_open_addr(c, http_server_address(srv)) != 0)
				break;
			open = 1;
		}
		snprintf(req, sizeof req, "GET /v1/features/v/%d HTTP/1.1\r\n"
		    "Host: t\r\n%s\r\n", i, i % 20 == 19 ?
		    "Connection: close\r\n" : "");
		snprintf(want, sizeof want, "\"key\":\"%d\"", i);
		conn_sends(c, req);
		if (conn_read(c, &r) == 0 && r.status == 200 &&
		    strstr(r.body, want) != NULL)
			atomic_fetch_add(ok, 1);
		resp_free(&r);
		if (i % 20 == 19) {
			conn_close(c);
			open = 0;
		}
	}
	if (open)
		conn_close(c);
	free(c);
	return NULL;
}

static void
test_concurrent(void **state)
{
	pthread_t	t[NCLIENTS];
	atomic_int	ok = 0;
	double		before = count_of("/v1/features/{view}/{key}", "200");

	(void)state;
	for (int i = 0; i < NCLIENTS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, client_main, &ok),
		    0);
	for (int i = 0; i < NCLIENTS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&ok), NCLIENTS * NREQUESTS);
	assert_true(count_of("/v1/features/{view}/{key}", "200") - before ==
	    NCLIENTS * NREQUESTS);
}

struct slowarg {
	const char	*addr;
	int		 status;
	char		 body[16];
};

static void *
slow_client(void *arg)
{
	struct slowarg	*a = arg;
	struct conn	*c = xmalloc(sizeof *c);
	struct resp	 r;

	a->status = -1;
	if (conn_open_addr(c, a->addr) == 0) {
		conn_sends(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
		if (conn_read(c, &r) == 0) {
			a->status = r.status;
			snprintf(a->body, sizeof a->body, "%s", r.body);
			resp_free(&r);
		}
		conn_close(c);
	}
	free(c);
	return NULL;
}

static void
test_stop_in_flight(void **state)
{
	struct http_server	*s = start_server("127.0.0.1:0", 2);
	struct slowarg		 a;
	struct conn		 c;
	pthread_t		 t;
	char			 addr[64];
	uint64_t		 t0;

	(void)state;
	snprintf(addr, sizeof addr, "%s", http_server_address(s));
	a.addr = addr;
	atomic_store(&slow_started, 0);
	assert_int_equal(pthread_create(&t, NULL, slow_client, &a), 0);
	while (!atomic_load(&slow_started))
		usleep(1000);
	t0 = util_mono_ns();
	http_server_stop(s);
	pthread_join(t, NULL);
	assert_int_equal(a.status, 200);
	assert_string_equal(a.body, "slow\n");
	assert_true((util_mono_ns() - t0) / 1000000 < 2000);
	/* no longer listening */
	assert_int_not_equal(conn_open_addr(&c, addr), 0);
	close(c.fd);
	http_server_stop(s);	/* twice is harmless */
	http_server_free(s);
}

static void
test_stop_idle(void **state)
{
	struct http_server	*s = start_server("127.0.0.1:0", 3);
	struct conn		 c;

	(void)state;
	/* an idle keep-alive connection does not hold the stop up */
	assert_int_equal(conn_open_addr(&c, http_server_address(s)), 0);
	http_server_free(s);
	conn_close(&c);
}

static void
test_config_errors(void **state)
{
	static const struct http_route	bad1[] = {
		{ "GET", "v1/x", h_admin, NULL, 0 } };
	static const struct http_route	bad2[] = {
		{ "GET", "/v1/{x", h_admin, NULL, 0 } };
	static const struct http_route	bad3[] = {
		{ "FETCH", "/v1/x", h_admin, NULL, 0 } };
	static const struct http_route	bad4[] = {
		{ "GET", "/v1/a{x}", h_admin, NULL, 0 } };
	static const struct http_route	bad5[] = {
		{ "GET", "/v1/x", NULL, NULL, 0 } };
	static const struct http_route	bad6[] = {
		{ "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", h_admin, NULL,
		    0 } };
	static const struct {
		const char			*listen;
		int				 threads;
		int64_t				 max_body, timeout;
		const char			*token;
		const struct http_route		*routes;
		const char			*err;
	} cases[] = {
		{ "nope", 1, 10, 10, NULL, NULL,
		    "listen address \"nope\": expected host:port" },
		{ "127.0.0.1:70000", 1, 10, 10, NULL, NULL,
		    "listen address \"127.0.0.1:70000\": expected host:port" },
		{ "127.0.0.1:0", 0, 10, 10, NULL, NULL,
		    "threads must be between 1 and 256, not 0" },
		{ "127.0.0.1:0", 1, 0, 10, NULL, NULL,
		    "max_body_bytes must be between 1 and 2^40, not 0" },
		{ "127.0.0.1:0", 1, 10, 0, NULL, NULL,
		    "timeout must be positive, not 0ms" },
		{ "127.0.0.1:0", 1, 10, 10, "", NULL,
		    "the bearer token is empty" },
		{ "127.0.0.1:0", 1, 10, 10, NULL, bad1,
		    "route \"v1/x\": pattern must start with /" },
		{ "127.0.0.1:0", 1, 10, 10, NULL, bad2,
		    "route \"/v1/{x\": bad parameter segment \"{x\"" },
		{ "127.0.0.1:0", 1, 10, 10, NULL, bad3,
		    "route \"/v1/x\": unknown method \"FETCH\"" },
		{ "127.0.0.1:0", 1, 10, 10, NULL, bad4,
		    "route \"/v1/a{x}\": braces must enclose a whole segment" },
		{ "127.0.0.1:0", 1, 10, 10, NULL, bad5,
		    "route GET /v1/x: no handler" },
		{ "127.0.0.1:0", 1, 10, 10, NULL, bad6,
		    "more than 8 parameters" },
		{ "192.0.2.1:0", 1, 10, 10, NULL, NULL,
		    "listen 192.0.2.1:0: bind: Cannot assign requested address" },
	};
	struct http_config	 cfg;
	struct http_server	*s;
	char			 err[256];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cfg.listen = cases[i].listen;
		cfg.threads = cases[i].threads;
		cfg.max_body_bytes = cases[i].max_body;
		cfg.timeout_ms = cases[i].timeout;
		cfg.token = cases[i].token;
		err[0] = '\0';
		s = http_server_new(&cfg, cases[i].routes,
		    cases[i].routes != NULL ? 1 : 0, NULL, err, sizeof err);
		assert_null(s);
		if (strstr(err, cases[i].err) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err,
			    cases[i].err);
	}
}

/* SO_REUSEPORT must not let a second server share a port silently. */
static void
test_address_in_use(void **state)
{
	struct http_config	 cfg = { http_server_address(srv), 1, 10, 10,
				    NULL };
	char			 err[256];

	(void)state;
	assert_null(http_server_new(&cfg, routes, NROUTES, NULL, err,
	    sizeof err));
	assert_non_null(strstr(err, "Address already in use"));
}

int
main(void)
{
	const struct CMUnitTest	tests[] = {
		cmocka_unit_test(test_address),
		cmocka_unit_test(test_get_params_query),
		cmocka_unit_test(test_bad_percent_encoding),
		cmocka_unit_test(test_not_found),
		cmocka_unit_test(test_method_not_allowed),
		cmocka_unit_test(test_post_echo),
		cmocka_unit_test(test_malformed_json),
		cmocka_unit_test(test_too_large_content_length),
		cmocka_unit_test(test_chunked_refused),
		cmocka_unit_test(test_too_large_declared),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_split_reads),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_header_too_large),
		cmocka_unit_test(test_connection_close),
		cmocka_unit_test(test_http10),
		cmocka_unit_test(test_head),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_slowloris),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_handler_without_reply),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_stop_in_flight),
		cmocka_unit_test(test_stop_idle),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_address_in_use),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
