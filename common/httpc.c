/*
 * httpc: a blocking HTTP/1.1 client (see httpc.h).  It exists for the
 * command line, which sends one request and prints the answer, so it is
 * plain: resolve, connect with a deadline, write the request, read until
 * the server closes, then parse the status line, the headers and the
 * body (Content-Length, chunked, or everything up to the close).
 */
#include "common/httpc.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/util.h"
#include "common/xmalloc.h"

#define HTTPC_DEFAULT_TIMEOUT_MS	30000
#define HTTPC_MAX_RESPONSE		(256u << 20)

/* Split "http://host[:port][/prefix]" into host, port and prefix. */
static int
httpc_parse_base(const char *base, char *host, size_t hostlen, char *port,
    size_t portlen, const char **prefix, int *prefixlen, char *err,
    size_t errlen)
{
	const char	*p;
	char		 hp[256];
	size_t		 n;
	int		 nport = 80;

	if (strncmp(base, "http://", 7) != 0)
		goto bad;
	p = base + 7;
	n = strcspn(p, "/");
	*prefix = p + n;
	*prefixlen = (int)strlen(*prefix);
	while (*prefixlen > 0 && (*prefix)[*prefixlen - 1] == '/')
		(*prefixlen)--;
	if (n == 0 || n >= sizeof hp)
		goto bad;
	memcpy(hp, p, n);
	hp[n] = '\0';
	if (hp[0] == '[' && hp[n - 1] == ']') {	/* [v6] without a port */
		if (snprintf(host, hostlen, "%.*s", (int)n - 2, hp + 1) >=
		    (int)hostlen)
			goto bad;
	} else if (strchr(hp, ':') == NULL) {
		if (snprintf(host, hostlen, "%s", hp) >= (int)hostlen)
			goto bad;
	} else if (util_split_hostport(hp, host, hostlen, &nport) != 0)
		goto bad;
	snprintf(port, portlen, "%d", nport);
	return 0;
bad:
	snprintf(err, errlen, "bad URL \"%.200s\" (http://HOST:PORT)", base);
	return -1;
}

static int
httpc_connect(const char *host, const char *port, int timeout_ms, char *err,
    size_t errlen)
{
	struct addrinfo	 hints, *res = NULL, *ai;
	struct pollfd	 pfd;
	struct timeval	 tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	socklen_t	 sl;
	int		 fd = -1, rc, soerr = 0;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", host,
		    gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd == -1)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			rc = poll(&pfd, 1, timeout_ms);
			sl = sizeof soerr;
			if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR,
			    &soerr, &sl) == 0 && soerr == 0)
				break;
			errno = rc == 0 ? ETIMEDOUT : soerr;
		}
		soerr = errno;
		close(fd);
		fd = -1;
		errno = soerr;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		snprintf(err, errlen, "cannot connect to %s:%s: %s", host, port,
		    strerror(errno));
		return -1;
	}
	/* Blocking from here, each read and write bounded by the timeout. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int
httpc_write_all(int fd, const char *p, size_t len)
{
	ssize_t	n;

	while (len > 0) {
		if ((n = send(fd, p, len, MSG_NOSIGNAL)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Decode a chunked body in place; returns its length or -1. */
static ssize_t
httpc_dechunk(char *p, size_t len)
{
	char	*in = p, *end = p + len, *out = p, *nl;
	size_t	 n;

	for (;;) {
		if ((nl = memchr(in, '\n', (size_t)(end - in))) == NULL)
			return -1;
		n = strtoul(in, NULL, 16);
		in = nl + 1;
		if (n == 0)
			return out - p;
		if ((size_t)(end - in) < n + 2)
			return -1;
		memmove(out, in, n);
		out += n;
		in += n + 2;	/* the data and its CRLF */
	}
}

/* Value of header name in the header block [h, hend), or NULL. */
static char *
httpc_header(const char *h, const char *hend, const char *name)
{
	size_t		 nl = strlen(name);
	const char	*line = h, *eol, *v;

	while (line < hend) {
		eol = memchr(line, '\n', (size_t)(hend - line));
		if (eol == NULL)
			eol = hend;
		if ((size_t)(eol - line) > nl && strncasecmp(line, name,
		    nl) == 0 && line[nl] == ':') {
			v = line + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			while (eol > v && (eol[-1] == '\r' || eol[-1] == ' '))
				eol--;
			return xstrndup(v, (size_t)(eol - v));
		}
		line = eol + 1;
	}
	return NULL;
}

int
httpc_request(const char *base, const char *method, const char *path,
    const char *token, const char *content_type, const char *body,
    size_t bodylen, int timeout_ms, struct httpc_response *resp,
    char *err, size_t errlen)
{
	char		 host[256], port[16], *req = NULL, *buf = NULL;
	char		*hend, *te = NULL, *cl = NULL;
	const char	*prefix;
	size_t		 len = 0, cap = 0, hlen;
	ssize_t		 n;
	int		 fd = -1, rc = -1, major, minor, status, prefixlen;

	memset(resp, 0, sizeof *resp);
	if (timeout_ms <= 0)
		timeout_ms = HTTPC_DEFAULT_TIMEOUT_MS;
	if (httpc_parse_base(base, host, sizeof host, port, sizeof port,
	    &prefix, &prefixlen, err, errlen) != 0)
		return -1;
	if ((fd = httpc_connect(host, port, timeout_ms, err, errlen)) == -1)
		return -1;
	xasprintf(&req, "%s %.*s%s HTTP/1.1\r\nHost: %s:%s\r\n"
	    "Connection: close\r\nAccept: application/json\r\n"
	    "User-Agent: mlopsd\r\n%s%s%s",
	    method, prefixlen, prefix, path,
	    host, port,
	    token != NULL ? "Authorization: Bearer " : "",
	    token != NULL ? token : "", token != NULL ? "\r\n" : "");
	if (body != NULL) {
		char	*r2;

		xasprintf(&r2, "%sContent-Type: %s\r\nContent-Length: %zu"
		    "\r\n\r\n", req, content_type != NULL ? content_type :
		    "application/json", bodylen);
		free(req);
		req = r2;
	} else {
		char	*r2;

		xasprintf(&r2, "%s%s\r\n", req, strcmp(method, "GET") != 0 &&
		    strcmp(method, "DELETE") != 0 && strcmp(method, "HEAD") != 0 ?
		    "Content-Length: 0\r\n" : "");
		free(req);
		req = r2;
	}
	if (httpc_write_all(fd, req, strlen(req)) != 0 ||
	    (body != NULL && httpc_write_all(fd, body, bodylen) != 0)) {
		snprintf(err, errlen, "%s:%s: sending the request: %s", host,
		    port, strerror(errno));
		goto out;
	}
	for (;;) {
		buf = xgrow(buf, &cap, len + 65536 + 1, 1);
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n == 0)
			break;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "%s:%s: reading the response: %s",
			    host, port, errno == EAGAIN ? "timed out" :
			    strerror(errno));
			goto out;
		}
		len += (size_t)n;
		if (len > HTTPC_MAX_RESPONSE) {
			snprintf(err, errlen, "%s:%s: response larger than "
			    "%u bytes", host, port, HTTPC_MAX_RESPONSE);
			goto out;
		}
	}
	if (buf == NULL)
		buf = xgrow(buf, &cap, 1, 1);
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/%d.%d %d", &major, &minor, &status) != 3 ||
	    (hend = strstr(buf, "\r\n\r\n")) == NULL) {
		snprintf(err, errlen, "%s:%s: not an HTTP response", host, port);
		goto out;
	}
	hlen = (size_t)(hend - buf) + 4;
	resp->status = status;
	resp->content_type = httpc_header(buf, hend, "Content-Type");
	te = httpc_header(buf, hend, "Transfer-Encoding");
	cl = httpc_header(buf, hend, "Content-Length");
	len -= hlen;
	memmove(buf, buf + hlen, len);
	if (te != NULL && strcasecmp(te, "chunked") == 0) {
		if ((n = httpc_dechunk(buf, len)) < 0) {
			snprintf(err, errlen, "%s:%s: bad chunked body", host,
			    port);
			goto out;
		}
		len = (size_t)n;
	} else if (cl != NULL && strtoull(cl, NULL, 10) < len)
		len = strtoull(cl, NULL, 10);
	buf[len] = '\0';
	resp->body = buf;
	resp->len = len;
	buf = NULL;
	rc = 0;
out:
	if (rc != 0)
		httpc_response_free(resp);
	free(te);
	free(cl);
	free(buf);
	free(req);
	close(fd);
	return rc;
}

void
httpc_response_free(struct httpc_response *resp)
{
	free(resp->body);
	free(resp->content_type);
	memset(resp, 0, sizeof *resp);
}
