/*
 * http: the HTTP/1.1 JSON API server.
 *
 * N worker threads, each with its own libevent loop and listening socket
 * bound to the same address with SO_REUSEPORT, so the kernel spreads
 * connections and no lock is taken per request.  Keep-alive, pipelining,
 * HEAD and Expect: 100-continue are supported; request bodies need a
 * Content-Length (chunked: 411) of at most max_body_bytes (413, refused
 * on the head before routing).  Routes come from a table given at creation;
 * a pattern like "/v1/features/{view}/{key}" captures path segments.
 * Every reply to an error is {"error":{"code":"...","message":"..."}}.
 * Requests are counted in mlopsd_http_requests_total{route,code} and timed
 * in mlopsd_http_request_duration_seconds{route}.
 *
 * Handlers run on worker threads, concurrently: whatever they read must be
 * safe for that.  A handler must reply exactly once before returning.
 */
#ifndef MLOPSD_HTTP_H
#define MLOPSD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct metrics;
struct http_server;
struct http_req;

typedef void	(*http_handler_fn)(struct http_req *req, void *arg);

#define HTTP_ROUTE_MUTATING	0x1	/* needs the admin bearer token when one is set */

struct http_route {
	const char	*method;	/* "GET", "POST", "PUT", "DELETE" */
	const char	*pattern;	/* "/v1/models/{name}/aliases/{alias}" */
	http_handler_fn	 fn;
	void		*arg;
	int		 flags;
};

struct http_config {
	const char	*listen;	/* "127.0.0.1:8700"; port 0 picks a free port */
	int		 threads;
	int64_t		 max_body_bytes;	/* larger bodies: 413 */
	int64_t		 timeout_ms;		/* idle/read timeout per connection */
	const char	*token;		/* bearer token for mutating routes, or NULL */
};

/*
 * Bind the listening sockets (so the address is known and errors surface
 * here) but serve nothing until http_server_start().  Routes are copied.
 * m may be NULL (no metrics).  Returns NULL with a message in err.
 */
struct http_server	*http_server_new(const struct http_config *cfg,
			    const struct http_route *routes, size_t nroutes,
			    struct metrics *m, char *err, size_t errlen);
/* Start the worker threads.  Returns 0 or -1. */
int			 http_server_start(struct http_server *s);
/* The bound address as "host:port" (the real port when 0 was asked). */
const char		*http_server_address(const struct http_server *s);
/*
 * Stop accepting, finish in-flight requests, join the workers.  Call from
 * one thread that is not a worker (never from a handler); a second call
 * does nothing.  http_server_free() stops first if needed.
 */
void			 http_server_stop(struct http_server *s);
void			 http_server_free(struct http_server *s);

/* Request accessors; strings live as long as the request. */
const char	*http_req_method(struct http_req *req);
const char	*http_req_path(struct http_req *req);
const char	*http_req_param(struct http_req *req, const char *name);	/* {name} in pattern */
const char	*http_req_query(struct http_req *req, const char *name);	/* decoded, or NULL */
const char	*http_req_header(struct http_req *req, const char *name);
const char	*http_req_body(struct http_req *req, size_t *len);	/* not NUL-terminated */
/*
 * Parse the body as JSON.  On failure replies 400 "malformed_json" (with
 * line and column) and returns NULL: the handler just returns.  The caller
 * owns the returned reference.
 */
json_t		*http_req_json(struct http_req *req);

/* Replies.  http_reply_json steals the reference to body. */
void	http_reply_json(struct http_req *req, int code, json_t *body);
void	http_reply(struct http_req *req, int code, const char *content_type,
	    const char *body, size_t len);
void	http_reply_error(struct http_req *req, int code, const char *errcode,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
