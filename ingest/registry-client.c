/*
 * registry-client: fetch Avro writer schemas by id from a Confluent Schema
 * Registry (GET {url}/schemas/ids/{id} -> {"schema": "<json text>"}).
 *
 * Lookups are rare (once per schema id per process, see decode.c), so the
 * HTTP client here is deliberately small and blocking: one connection per
 * request, "Connection: close", poll(2) timeouts on connect and on every
 * read, bodies by Content-Length, chunked or until close.  http:// only.
 *
 * Failures are split by whose fault they are: a 404 means the message
 * names a schema nobody registered (bad input, dead-lettered); anything
 * else that goes wrong (refused connection, timeout, 5xx, 401, garbage) is
 * the registry's or our configuration's fault, so the caller must retry
 * the message later instead of dead-lettering a good event.  5xx and
 * connection errors are retried here first, with doubling backoff.
 */
#include "ingest/ingest-internal.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"

#define REGISTRY_MAX_RESPONSE	(16 * 1024 * 1024)
#define REGISTRY_MAX_BACKOFF_MS	5000
#define REGISTRY_FAIL_TTL_MS	1000	/* a failed fetch is not retried sooner, */
#define REGISTRY_FAIL_TTL_MAX_MS 30000	/* doubling while it fails */

struct registry_entry {
	int32_t		 id;
	char		*schema;	/* NULL: a remembered 404 or failure */
	char		*fail;		/* a failure's message: ask again
					   after until_ms (NULL: a 404) */
	int		 fail_ms;	/* that wait; doubles per failure */
	int64_t		 until_ms;	/* no schema: forget after this */
};

struct ingest_registry {
	char			*base;		/* "http://host:port/prefix" */
	int			 timeout_ms;
	int			 retries;
	int			 backoff_ms;
	int			 negative_ttl_ms;
	const _Atomic int	*stop;		/* NULL, or give up when set */

	/* Guards entries and requests; never held across a request. */
	pthread_mutex_t		 lock;
	struct registry_entry	*entries;
	size_t			 nentries;
	size_t			 centries;
	uint64_t		 requests;
};

/* The parts of an http:// URL; host without brackets. */
struct http_url {
	char	host[256];
	char	port[8];
	char	path[1024];	/* "" or "/prefix/..." */
};

static int
http_url_parse(const char *url, struct http_url *u, char *err, size_t errlen)
{
	const char	*p, *slash, *colon;
	size_t		 hostlen;

	if (strncasecmp(url, "https://", 8) == 0) {
		snprintf(err, errlen, "https schema registry not supported yet");
		return -1;
	}
	if (strncasecmp(url, "http://", 7) != 0) {
		snprintf(err, errlen, "schema registry URL '%s' must start "
		    "with http://", url);
		return -1;
	}
	p = url + 7;
	slash = strchr(p, '/');
	if (slash == NULL)
		slash = p + strlen(p);
	if (memchr(p, '@', (size_t)(slash - p)) != NULL) {
		snprintf(err, errlen, "credentials in the schema registry URL "
		    "are not supported yet");
		return -1;
	}
	if (*p == '[') {
		const char	*close = memchr(p, ']', (size_t)(slash - p));

		if (close == NULL)
			goto bad;
		hostlen = (size_t)(close - p - 1);
		if (hostlen == 0 || hostlen >= sizeof u->host)
			goto bad;
		memcpy(u->host, p + 1, hostlen);
		u->host[hostlen] = '\0';
		colon = close + 1 < slash && close[1] == ':' ? close + 1 : NULL;
		if (colon == NULL && close + 1 != slash)
			goto bad;
	} else {
		colon = memchr(p, ':', (size_t)(slash - p));
		hostlen = (size_t)((colon != NULL ? colon : slash) - p);
		if (hostlen == 0 || hostlen >= sizeof u->host)
			goto bad;
		memcpy(u->host, p, hostlen);
		u->host[hostlen] = '\0';
	}
	if (colon != NULL) {
		size_t	plen = (size_t)(slash - colon - 1);

		if (plen == 0 || plen >= sizeof u->port ||
		    strspn(colon + 1, "0123456789") < plen)
			goto bad;
		memcpy(u->port, colon + 1, plen);
		u->port[plen] = '\0';
	} else
		snprintf(u->port, sizeof u->port, "80");
	if (strlen(slash) >= sizeof u->path)
		goto bad;
	snprintf(u->path, sizeof u->path, "%s", slash);
	return 0;
bad:
	snprintf(err, errlen, "bad schema registry URL '%s' (want "
	    "http://host[:port][/path])", url);
	return -1;
}

#define REGISTRY_POLL_MS	100	/* how often a wait looks at stop */

static int
registry_stopping(const _Atomic int *stop)
{
	return stop != NULL && atomic_load(stop);
}

/*
 * Wait for events on fd until deadline (ms, util_now_ms()), looking at
 * *stop every REGISTRY_POLL_MS.  0, or -1 with errno ETIMEDOUT (the
 * deadline of the whole request: a reply sent a byte at a time must not
 * hold the consumer) or ECANCELED.
 */
static int
http_wait(int fd, short events, int64_t deadline, const _Atomic int *stop)
{
	struct pollfd	pfd = { .fd = fd, .events = events };
	int64_t		left;
	int		rc;

	for (;;) {
		if (registry_stopping(stop)) {
			errno = ECANCELED;
			return -1;
		}
		if ((left = deadline - util_now_ms()) <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		rc = poll(&pfd, 1, left < REGISTRY_POLL_MS ? (int)left :
		    REGISTRY_POLL_MS);
		if (rc > 0)
			return 0;
		if (rc == -1 && errno != EINTR)
			return -1;
	}
}

/* Connect to the first address of host:port that answers. */
static int
http_connect(const struct http_url *u, int64_t deadline,
    const _Atomic int *stop, char *err, size_t errlen)
{
	struct addrinfo	 hints, *res = NULL, *ai;
	int		 fd = -1, rc, soerr = 0;
	socklen_t	 sl = sizeof soerr;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(u->host, u->port, &hints, &res)) != 0) {
		snprintf(err, errlen, "resolve %s: %s", u->host,
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
		if (errno == EINPROGRESS && http_wait(fd, POLLOUT, deadline,
		    stop) == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR,
		    &soerr, &sl) == 0) {
			if (soerr == 0)
				break;
			errno = soerr;
		}
		rc = errno;
		close(fd);
		fd = -1;
		errno = rc;
	}
	if (fd == -1)
		snprintf(err, errlen, "connect to %s:%s: %s", u->host, u->port,
		    strerror(errno));
	freeaddrinfo(res);
	return fd;
}

/*
 * Decode a chunked body in buf[0..len) into out.  Returns 1 when the last
 * chunk was seen, 0 when more bytes are needed, -1 when malformed.
 */
static int
http_dechunk(const char *buf, size_t len, char *out, size_t *outlen)
{
	size_t	pos = 0, n = 0;

	for (;;) {
		const char	*eol;
		char		*end;
		unsigned long	 sz;

		eol = memchr(buf + pos, '\n', len - pos);
		if (eol == NULL)
			return 0;
		sz = strtoul(buf + pos, &end, 16);
		if (end == buf + pos || (*end != '\r' && *end != ';' &&
		    *end != '\n') || sz > REGISTRY_MAX_RESPONSE)
			return -1;
		pos = (size_t)(eol - buf) + 1;
		if (sz == 0)
			break;
		if (len - pos < sz + 2)
			return 0;
		memcpy(out + n, buf + pos, sz);
		n += sz;
		pos += sz;
		if (buf[pos] == '\r')
			pos++;
		if (buf[pos] != '\n')
			return -1;
		pos++;
	}
	/* Trailers end with an empty line; with Connection: close we only
	 * need to have seen the last chunk. */
	*outlen = n;
	return 1;
}

int
ingest_http_get(const char *url, int timeout_ms, const _Atomic int *stop,
    int *status, char **body, size_t *bodylen, char *err, size_t errlen)
{
	int64_t		 deadline = util_now_ms() + timeout_ms;
	struct http_url	 u;
	char		*req = NULL, *buf = NULL, *hdrend = NULL, *p;
	size_t		 len = 0, cap = 0, sent = 0, reqlen, hdrlen = 0;
	int64_t		 clen = -1;
	int		 fd = -1, chunked = 0, rc = -1, eof = 0;

	*body = NULL;
	*bodylen = 0;
	if (http_url_parse(url, &u, err, errlen) == -1)
		return -1;
	if ((fd = http_connect(&u, deadline, stop, err, errlen)) == -1)
		return -1;
	reqlen = (size_t)xasprintf(&req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n"
	    "Accept: application/vnd.schemaregistry.v1+json, "
	    "application/json\r\nUser-Agent: mlopsd\r\n"
	    "Connection: close\r\n\r\n", u.path[0] != '\0' ? u.path : "/",
	    u.host, u.port);
	while (sent < reqlen) {
		ssize_t	n = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);

		if (n > 0) {
			sent += (size_t)n;
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EINTR) &&
		    http_wait(fd, POLLOUT, deadline, stop) == 0)
			continue;
		snprintf(err, errlen, "send to %s:%s: %s", u.host, u.port,
		    strerror(errno));
		goto fail;
	}

	for (;;) {
		ssize_t	n;

		/* Done yet? */
		if (hdrend != NULL) {
			size_t	have = len - hdrlen;

			if (chunked) {
				size_t	outlen = 0;
				int	crc;

				*body = xrealloc(*body, have + 1);
				crc = http_dechunk(buf + hdrlen, have, *body,
				    &outlen);
				if (crc == -1) {
					snprintf(err, errlen, "bad chunked "
					    "response from %s:%s", u.host,
					    u.port);
					goto fail;
				}
				if (crc == 1) {
					*bodylen = outlen;
					break;
				}
			} else if (clen >= 0 && have >= (size_t)clen) {
				*bodylen = (size_t)clen;
				*body = xmalloc(*bodylen + 1);
				memcpy(*body, buf + hdrlen, *bodylen);
				break;
			} else if (clen < 0 && eof) {
				*bodylen = have;
				*body = xmalloc(have + 1);
				memcpy(*body, buf + hdrlen, have);
				break;
			}
		}
		if (eof) {
			snprintf(err, errlen, "%s:%s closed the connection "
			    "mid-response", u.host, u.port);
			goto fail;
		}
		if (len >= REGISTRY_MAX_RESPONSE) {
			snprintf(err, errlen, "response from %s:%s is larger "
			    "than %d bytes", u.host, u.port,
			    REGISTRY_MAX_RESPONSE);
			goto fail;
		}
		buf = xgrow(buf, &cap, len + 4096 + 1, 1);
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n == -1) {
			if ((errno == EAGAIN || errno == EINTR) &&
			    http_wait(fd, POLLIN, deadline, stop) == 0)
				continue;
			snprintf(err, errlen, "read from %s:%s: %s", u.host,
			    u.port, strerror(errno));
			goto fail;
		}
		if (n == 0)
			eof = 1;
		len += (size_t)n;
		buf[len] = '\0';
		if (hdrend != NULL || (hdrend = strstr(buf, "\r\n\r\n")) == NULL)
			continue;

		/* Status line and the two headers that frame the body. */
		hdrlen = (size_t)(hdrend - buf) + 4;
		if (sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
			snprintf(err, errlen, "%s:%s did not answer HTTP",
			    u.host, u.port);
			goto fail;
		}
		for (p = strstr(buf, "\r\n"); p != NULL && p < hdrend;
		    p = strstr(p + 2, "\r\n")) {
			const char	*h = p + 2;

			if (strncasecmp(h, "content-length:", 15) == 0)
				clen = strtoll(h + 15, NULL, 10);
			else if (strncasecmp(h, "transfer-encoding:", 18) == 0 &&
			    strstr(h, "chunked") != NULL)
				chunked = 1;
		}
		if (clen > REGISTRY_MAX_RESPONSE) {
			snprintf(err, errlen, "response from %s:%s is larger "
			    "than %d bytes", u.host, u.port,
			    REGISTRY_MAX_RESPONSE);
			goto fail;
		}
	}
	(*body)[*bodylen] = '\0';
	rc = 0;
fail:
	if (rc == -1) {
		free(*body);
		*body = NULL;
		*bodylen = 0;
	}
	free(req);
	free(buf);
	close(fd);
	return rc;
}

struct ingest_registry *
ingest_registry_new(const struct ingest_registry_config *cfg, char *err,
    size_t errlen)
{
	struct ingest_registry	*reg;
	struct http_url		 u;
	size_t			 n;

	if (http_url_parse(cfg->url, &u, err, errlen) == -1)
		return NULL;
	reg = xcalloc(1, sizeof *reg);
	reg->base = xstrdup(cfg->url);
	n = strlen(reg->base);
	while (n > 0 && reg->base[n - 1] == '/')
		reg->base[--n] = '\0';
	reg->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 5000;
	reg->retries = cfg->retries > 0 ? cfg->retries :
	    cfg->retries < 0 ? 0 : 3;
	reg->backoff_ms = cfg->backoff_ms > 0 ? cfg->backoff_ms : 200;
	reg->negative_ttl_ms = cfg->negative_ttl_ms > 0 ?
	    cfg->negative_ttl_ms : 60000;
	pthread_mutex_init(&reg->lock, NULL);
	return reg;
}

void
ingest_registry_free(struct ingest_registry *reg)
{
	if (reg == NULL)
		return;
	for (size_t i = 0; i < reg->nentries; i++) {
		free(reg->entries[i].schema);
		free(reg->entries[i].fail);
	}
	free(reg->entries);
	pthread_mutex_destroy(&reg->lock);
	free(reg->base);
	free(reg);
}

uint64_t
ingest_registry_requests(struct ingest_registry *reg)
{
	uint64_t	n;

	pthread_mutex_lock(&reg->lock);
	n = reg->requests;
	pthread_mutex_unlock(&reg->lock);
	return n;
}

/* Called with the lock held. */
static struct registry_entry *
registry_find(struct ingest_registry *reg, int32_t id)
{
	for (size_t i = 0; i < reg->nentries; i++)
		if (reg->entries[i].id == id)
			return &reg->entries[i];
	return NULL;
}

/* id's entry, a new empty one if there is none.  Called with the lock held. */
static struct registry_entry *
registry_entry(struct ingest_registry *reg, int32_t id)
{
	struct registry_entry	*e;

	if ((e = registry_find(reg, id)) != NULL)
		return e;
	reg->entries = xgrow(reg->entries, &reg->centries, reg->nentries + 1,
	    sizeof *reg->entries);
	e = &reg->entries[reg->nentries++];
	memset(e, 0, sizeof *e);
	e->id = id;
	return e;
}

/* Remember schema (taken) or a 404 (schema NULL) for id. */
static const char *
registry_store(struct ingest_registry *reg, int32_t id, char *schema)
{
	struct registry_entry	*e;
	const char		*ret;

	pthread_mutex_lock(&reg->lock);
	if (schema == NULL) {
		/* Forget expired 404s, so ids made up by corrupt messages
		 * do not pile up. */
		int64_t	now = util_now_ms();
		size_t	i, n = 0;

		for (i = 0; i < reg->nentries; i++) {
			if (reg->entries[i].schema == NULL &&
			    reg->entries[i].until_ms <= now) {
				free(reg->entries[i].fail);
				continue;
			}
			reg->entries[n++] = reg->entries[i];
		}
		reg->nentries = n;
	}
	e = registry_entry(reg, id);
	if (e->schema == NULL) {
		e->schema = schema;
		schema = NULL;
	}
	free(e->fail);
	e->fail = NULL;
	e->fail_ms = 0;
	e->until_ms = util_now_ms() + reg->negative_ttl_ms;
	ret = e->schema;
	pthread_mutex_unlock(&reg->lock);
	free(schema);	/* another thread stored it first */
	return ret;
}

/*
 * Remember that fetching id failed (why), for REGISTRY_FAIL_TTL_MS: the
 * partitions waiting for the same schema ask once, not each of them.
 */
static void
registry_store_failure(struct ingest_registry *reg, int32_t id,
    const char *why)
{
	struct registry_entry	*e;

	pthread_mutex_lock(&reg->lock);
	e = registry_entry(reg, id);
	if (e->schema == NULL) {
		free(e->fail);
		e->fail = xstrdup(why);
		e->fail_ms = (int)util_backoff_next(e->fail_ms,
		    REGISTRY_FAIL_TTL_MS, REGISTRY_FAIL_TTL_MAX_MS);
		e->until_ms = util_now_ms() + e->fail_ms;
	}
	pthread_mutex_unlock(&reg->lock);
}

/* Sleep ms, or less when *stop turns non-zero. */
static void
registry_sleep_ms(int ms, const _Atomic int *stop)
{
	while (ms > 0 && !registry_stopping(stop)) {
		int		step = ms < REGISTRY_POLL_MS ? ms :
				    REGISTRY_POLL_MS;
		struct timespec	ts = { 0, (long)step * 1000000L };

		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
		ms -= step;
	}
}

void
ingest_registry_set_stop(struct ingest_registry *reg,
    const _Atomic int *stop)
{
	reg->stop = stop;
}

/*
 * Read a 200 reply: the schema text, or NULL with err when the reply is
 * not {"schema": "..."} of an Avro schema.  *permanent says whether the
 * problem is the schema's (a non-Avro schema type) or the registry's.
 */
static char *
registry_parse_reply(const char *body, size_t len, int32_t id,
    int *permanent, char *err, size_t errlen)
{
	json_t		*root, *schema, *type;
	json_error_t	 jerr;
	char		*ret = NULL;

	*permanent = 0;
	if ((root = json_loadb(body, len, 0, &jerr)) == NULL) {
		snprintf(err, errlen, "registry_unavailable: schema id %" PRId32
		    ": reply is not JSON: %s", id, jerr.text);
		return NULL;
	}
	type = json_object_get(root, "schemaType");
	schema = json_object_get(root, "schema");
	if (json_is_string(type) && strcmp(json_string_value(type),
	    "AVRO") != 0) {
		*permanent = 1;
		snprintf(err, errlen, "schema_resolution: schema id %" PRId32
		    " is a %s schema, not Avro", id, json_string_value(type));
	} else if (!json_is_string(schema))
		snprintf(err, errlen, "registry_unavailable: schema id %" PRId32
		    ": reply has no \"schema\" string", id);
	else
		ret = xstrdup(json_string_value(schema));
	json_decref(root);
	return ret;
}

int
ingest_registry_get(struct ingest_registry *reg, int32_t id,
    const char **schema, char *err, size_t errlen)
{
	struct registry_entry	*e;
	char			*url = NULL, *body = NULL, *text;
	char			 herr[256];
	size_t			 bodylen;
	int			 status, attempt, backoff = reg->backoff_ms;
	int			 rc = INGEST_RETRY, permanent;

	pthread_mutex_lock(&reg->lock);
	e = registry_find(reg, id);
	if (e != NULL && (e->schema != NULL || e->until_ms > util_now_ms())) {
		*schema = e->schema;
		if (*schema == NULL && e->fail != NULL) {
			snprintf(err, errlen, "%s", e->fail);
			pthread_mutex_unlock(&reg->lock);
			return INGEST_RETRY;
		}
		pthread_mutex_unlock(&reg->lock);
		if (*schema != NULL)
			return INGEST_OK;
		snprintf(err, errlen, "unknown_schema_id: %" PRId32, id);
		return INGEST_BAD;
	}
	pthread_mutex_unlock(&reg->lock);

	xasprintf(&url, "%s/schemas/ids/%" PRId32, reg->base, id);
	for (attempt = 0; attempt <= reg->retries &&
	    !registry_stopping(reg->stop); attempt++) {
		if (attempt > 0) {
			registry_sleep_ms(backoff, reg->stop);
			backoff = (int)util_backoff_next(backoff, backoff,
			    REGISTRY_MAX_BACKOFF_MS);
		}
		pthread_mutex_lock(&reg->lock);
		reg->requests++;
		pthread_mutex_unlock(&reg->lock);
		free(body);
		body = NULL;
		if (ingest_http_get(url, reg->timeout_ms, reg->stop, &status,
		    &body, &bodylen, herr, sizeof herr) == -1) {
			snprintf(err, errlen, "registry_unavailable: %s", herr);
			continue;
		}
		if (status >= 500) {
			snprintf(err, errlen, "registry_unavailable: GET %s: "
			    "HTTP %d", url, status);
			continue;
		}
		if (status == 404) {
			registry_store(reg, id, NULL);
			snprintf(err, errlen, "unknown_schema_id: %" PRId32, id);
			rc = INGEST_BAD;
		} else if (status != 200) {
			/* 401, 403, ...: our configuration, not the message. */
			snprintf(err, errlen, "registry_unavailable: GET %s: "
			    "HTTP %d", url, status);
		} else if ((text = registry_parse_reply(body, bodylen, id,
		    &permanent, err, errlen)) != NULL) {
			*schema = registry_store(reg, id, text);
			rc = INGEST_OK;
		} else if (permanent)
			rc = INGEST_BAD;
		break;
	}
	if (rc == INGEST_RETRY) {
		log_warn("ingest", "schema id %" PRId32 ": %s", id, err);
		registry_store_failure(reg, id, err);
	}
	free(body);
	free(url);
	return rc;
}
