/*
 * httpc: a small blocking HTTP/1.1 client for the commands that talk to a
 * running daemon (`mlopsd models`, `mlopsd dag`) and for tests.  One
 * request per connection ("Connection: close"), plain http only, bodies
 * read whole into memory (Content-Length, chunked, or until close).
 * No state outside the response the caller owns; thread-safe.
 */
#ifndef MLOPSD_HTTPC_H
#define MLOPSD_HTTPC_H

#include <stddef.h>

struct httpc_response {
	int	 status;	/* 200, 404, ... */
	char	*body;		/* NUL-terminated (len excludes the NUL) */
	size_t	 len;
	char	*content_type;	/* or NULL */
};

/*
 * Send method path to base ("http://host:port", a trailing path prefix
 * allowed: "http://h:1/api") with an optional bearer token and body
 * (content_type defaults to application/json when body is not NULL).
 * timeout_ms bounds connecting and each read or write (<= 0: 30 s).
 * Returns 0 with *resp filled (any status, 4xx and 5xx included), or -1
 * with err ("cannot connect to 127.0.0.1:8700: Connection refused", ...).
 */
int	httpc_request(const char *base, const char *method, const char *path,
	    const char *token, const char *content_type, const char *body,
	    size_t bodylen, int timeout_ms, struct httpc_response *resp,
	    char *err, size_t errlen);
void	httpc_response_free(struct httpc_response *resp);

#endif
