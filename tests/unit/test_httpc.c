/*
 * Unit tests of common/httpc.c against a one-shot server thread on a real
 * socket: the request it sends (method, path prefix, token, body), replies
 * with Content-Length, chunked and read-until-close bodies, and the errors
 * for bad URLs, refused connections and non-HTTP answers; and how the
 * command-line client (cmd/client.c) finds the daemon and its token.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmd/client.h"
#include "common/httpc.h"

struct server {
	int		 fd;
	int		 port;
	const char	*reply;
	char		 request[4096];
	pthread_t	 thread;
};

static void *
server_run(void *arg)
{
	struct server	*s = arg;
	size_t		 len = 0;
	ssize_t		 n;
	int		 c;
	char		*hend;

	if ((c = accept(s->fd, NULL, NULL)) == -1)
		return NULL;
	/* Read the head and whatever body Content-Length announces. */
	while (len < sizeof s->request - 1) {
		if ((n = read(c, s->request + len, sizeof s->request - 1 -
		    len)) <= 0)
			break;
		len += (size_t)n;
		s->request[len] = '\0';
		if ((hend = strstr(s->request, "\r\n\r\n")) != NULL) {
			char	*cl = strstr(s->request, "Content-Length: ");
			size_t	 want = cl != NULL ? strtoul(cl + 16, NULL, 10) :
				    0;

			if (len >= (size_t)(hend + 4 - s->request) + want)
				break;
		}
	}
	if (write(c, s->reply, strlen(s->reply)) < 0)
		(void)0;
	close(c);
	return NULL;
}

static void
server_start(struct server *s, const char *reply)
{
	struct sockaddr_in	sin;
	socklen_t		sl = sizeof sin;

	memset(s, 0, sizeof *s);
	s->reply = reply;
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->fd >= 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(listen(s->fd, 1), 0);
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sin, &sl), 0);
	s->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&s->thread, NULL, server_run, s), 0);
}

static void
server_join(struct server *s)
{
	pthread_join(s->thread, NULL);
	close(s->fd);
}

static void
test_content_length(void **state)
{
	struct server		s;
	struct httpc_response	r;
	char			base[64], err[256];

	(void)state;
	server_start(&s, "HTTP/1.1 201 Created\r\nContent-Type: "
	    "application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}junk");
	snprintf(base, sizeof base, "http://127.0.0.1:%d/api/", s.port);
	assert_int_equal(httpc_request(base, "PUT", "/v1/models/a", "tok",
	    NULL, "{\"version\":1}", 13, 5000, &r, err, sizeof err), 0);
	server_join(&s);
	assert_int_equal(r.status, 201);
	assert_string_equal(r.body, "{\"ok\":true}");
	assert_int_equal(r.len, 11);
	assert_string_equal(r.content_type, "application/json");
	httpc_response_free(&r);
	assert_memory_equal(s.request, "PUT /api/v1/models/a HTTP/1.1\r\n", 31);
	assert_non_null(strstr(s.request, "\r\nAuthorization: Bearer tok\r\n"));
	assert_non_null(strstr(s.request, "\r\nContent-Type: application/json"
	    "\r\nContent-Length: 13\r\n\r\n{\"version\":1}"));
}

static void
test_chunked_and_until_close(void **state)
{
	struct server		s;
	struct httpc_response	r;
	char			base[64], err[256];

	(void)state;
	server_start(&s, "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n5\r\nhello\r\nb\r\n, chunked!\n\r\n0\r\n\r\n");
	snprintf(base, sizeof base, "http://127.0.0.1:%d", s.port);
	assert_int_equal(httpc_request(base, "GET", "/x", NULL, NULL, NULL, 0,
	    5000, &r, err, sizeof err), 0);
	server_join(&s);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.body, "hello, chunked!\n");
	assert_null(r.content_type);
	httpc_response_free(&r);
	assert_null(strstr(s.request, "Authorization"));
	assert_null(strstr(s.request, "Content-Length"));

	server_start(&s, "HTTP/1.0 200 OK\r\n\r\nall of it");
	snprintf(base, sizeof base, "http://127.0.0.1:%d", s.port);
	assert_int_equal(httpc_request(base, "POST", "/y", NULL, NULL, NULL, 0,
	    5000, &r, err, sizeof err), 0);
	server_join(&s);
	assert_string_equal(r.body, "all of it");
	httpc_response_free(&r);
	/* A POST without a body still says so. */
	assert_non_null(strstr(s.request, "Content-Length: 0\r\n"));
}

static void
test_errors(void **state)
{
	static const char *const bad[] = {
		"https://127.0.0.1:1", "127.0.0.1:1", "http://", "http:///x",
		"http://host:notaport",
	};
	struct server		s;
	struct httpc_response	r;
	char			base[64], err[256];
	size_t			i;
	int			port;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(httpc_request(bad[i], "GET", "/", NULL, NULL,
		    NULL, 0, 1000, &r, err, sizeof err), -1);
		assert_non_null(strstr(err, "bad URL"));
	}
	/* A port nobody listens on: the server's, after it is closed. */
	server_start(&s, "not http at all\r\n\r\n");
	port = s.port;
	snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
	assert_int_equal(httpc_request(base, "GET", "/", NULL, NULL, NULL, 0,
	    5000, &r, err, sizeof err), -1);
	server_join(&s);
	assert_non_null(strstr(err, "not an HTTP response"));
	assert_int_equal(httpc_request(base, "GET", "/", NULL, NULL, NULL, 0,
	    5000, &r, err, sizeof err), -1);
	snprintf(base, sizeof base, "cannot connect to 127.0.0.1:%d: "
	    "Connection refused", port);
	assert_string_equal(err, base);
}

static void
test_client_finds_the_daemon(void **state)
{
	static const struct {
		const char	*listen;
		const char	*url;
	} cases[] = {
		{ "127.0.0.1:8700", "http://127.0.0.1:8700" },
		{ "0.0.0.0:9000", "http://127.0.0.1:9000" },
		{ "[::]:9001", "http://[::1]:9001" },
		{ "[::1]:9002", "http://[::1]:9002" },
		{ "localhost:9003", "http://localhost:9003" },
	};
	struct cmd_client	 c;
	char			 dir[] = "/tmp/test_client.XXXXXX", path[128];
	char			 tok[128], err[512];
	FILE			*f;
	size_t			 i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/c.yaml", dir);
	snprintf(tok, sizeof tok, "%s/token", dir);
	f = fopen(tok, "w");
	fputs("from-file\n", f);
	fclose(f);
	unsetenv("MLOPSD_TOKEN");
	unsetenv("MLOPSD_URL");
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		f = fopen(path, "w");
		fprintf(f, "data_dir: %s\nhttp:\n  listen: \"%s\"\n"
		    "  admin_token_file: %s\n", dir, cases[i].listen, tok);
		fclose(f);
		assert_int_equal(cmd_client_init(&c, path, NULL, err,
		    sizeof err), 0);
		assert_string_equal(c.url, cases[i].url);
		assert_string_equal(c.token, "from-file");
		cmd_client_free(&c);
	}
	/* --url wins over the config; $MLOPSD_TOKEN over its token. */
	setenv("MLOPSD_TOKEN", "from-env", 1);
	assert_int_equal(cmd_client_init(&c, path, "http://h:1", err,
	    sizeof err), 0);
	assert_string_equal(c.url, "http://h:1");
	assert_string_equal(c.token, "from-env");
	cmd_client_free(&c);
	unsetenv("MLOPSD_TOKEN");
	/* Nothing given: $MLOPSD_URL, else the default listen address. */
	setenv("MLOPSD_URL", "http://elsewhere:2", 1);
	assert_int_equal(cmd_client_init(&c, NULL, NULL, err, sizeof err), 0);
	assert_string_equal(c.url, "http://elsewhere:2");
	assert_null(c.token);
	cmd_client_free(&c);
	unsetenv("MLOPSD_URL");
	assert_int_equal(cmd_client_init(&c, NULL, NULL, err, sizeof err), 0);
	assert_string_equal(c.url, "http://127.0.0.1:8700");
	cmd_client_free(&c);
	/* Errors. */
	f = fopen(path, "w");
	fprintf(f, "http:\n  listen: 127.0.0.1:0\n");
	fclose(f);
	assert_int_equal(cmd_client_init(&c, path, NULL, err, sizeof err), -1);
	assert_string_equal(err, "the daemon listens on port 0 (any free "
	    "port): give its address with --url");
	assert_int_equal(cmd_client_init(&c, NULL, "ftp://x", err,
	    sizeof err), -1);
	assert_string_equal(err, "--url must be http://HOST:PORT, got "
	    "\"ftp://x\"");
	snprintf(tok, sizeof tok, "%s/missing.yaml", dir);
	assert_int_equal(cmd_client_init(&c, tok, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "missing.yaml"));
	unlink(path);
	snprintf(tok, sizeof tok, "%s/token", dir);
	unlink(tok);
	rmdir(dir);
}

static void
test_client_escape(void **state)
{
	char	*e = cmd_client_escape("churn v2/x%.-_~");

	(void)state;
	assert_string_equal(e, "churn%20v2%2Fx%25.-_~");
	free(e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_content_length),
		cmocka_unit_test(test_chunked_and_until_close),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_client_finds_the_daemon),
		cmocka_unit_test(test_client_escape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
