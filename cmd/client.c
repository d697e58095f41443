/*
 * client: the daemon-client side of the command line (see client.h): the
 * daemon's address and token from the same config file the daemon reads,
 * one JSON request over common/httpc, and errors printed the same way by
 * every command.
 */
#include "cmd/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "common/config.h"
#include "common/httpc.h"
#include "common/xmalloc.h"

#define CLIENT_TIMEOUT_MS	30000

/* "0.0.0.0:8700" -> "http://127.0.0.1:8700"; "[::]:1" -> "http://[::1]:1". */
static char *
cmd_client_url_of_listen(const char *listen)
{
	if (strncmp(listen, "0.0.0.0:", 8) == 0)
		return xstrfmt("http://127.0.0.1:%s", listen + 8);
	if (strncmp(listen, "[::]:", 5) == 0)
		return xstrfmt("http://[::1]:%s", listen + 5);
	if (strncmp(listen, ":", 1) == 0)
		return xstrfmt("http://127.0.0.1%s", listen);
	return xstrfmt("http://%s", listen);
}

int
cmd_client_init(struct cmd_client *c, const char *config_path,
    const char *url, char *err, size_t errlen)
{
	struct config	*cfg = NULL;
	const char	*env;
	size_t		 n;

	memset(c, 0, sizeof *c);
	if (url == NULL && config_path == NULL &&
	    (env = getenv("MLOPSD_URL")) != NULL && env[0] != '\0')
		url = env;
	if (url == NULL || config_path != NULL || getenv("MLOPSD_TOKEN") ==
	    NULL) {
		cfg = config_path != NULL ? config_load(config_path, err,
		    errlen) : config_defaults(err, errlen);
		if (cfg == NULL)
			return -1;
	}
	if (url != NULL) {
		if (strncmp(url, "http://", 7) != 0) {
			snprintf(err, errlen, "--url must be http://HOST:PORT, "
			    "got \"%s\"", url);
			config_free(cfg);
			return -1;
		}
		c->url = xstrdup(url);
	} else
		c->url = cmd_client_url_of_listen(cfg->http.listen);
	n = strlen(c->url);
	if (n > 2 && strcmp(c->url + n - 2, ":0") == 0) {
		snprintf(err, errlen, "the daemon listens on port 0 (any free "
		    "port): give its address with --url");
		cmd_client_free(c);
		config_free(cfg);
		return -1;
	}
	if ((env = getenv("MLOPSD_TOKEN")) != NULL && env[0] != '\0')
		c->token = xstrdup(env);
	else if (cfg != NULL && cfg->http.admin_token != NULL)
		c->token = xstrdup(cfg->http.admin_token);
	config_free(cfg);
	return 0;
}

int
cmd_client_open(const struct cmd_entry *self, struct cmd_client *c,
    const char *config_path, const char *url)
{
	char	err[1024];

	if (cmd_client_init(c, config_path, url, err, sizeof err) != 0) {
		fprintf(stderr, "mlopsd %s: %s\n", self->name, err);
		return -1;
	}
	return 0;
}

int
cmd_client_output(const struct cmd_entry *self, const char *arg, int *json)
{
	if (strcmp(arg, "json") != 0 && strcmp(arg, "table") != 0) {
		cmd_usage_error(self, "--output is json or table, not \"%s\"",
		    arg);
		return -1;
	}
	*json = strcmp(arg, "json") == 0;
	return 0;
}

void
cmd_client_free(struct cmd_client *c)
{
	free(c->url);
	free(c->token);
	memset(c, 0, sizeof *c);
}

int
cmd_client_call(struct cmd_client *c, const char *method, const char *path,
    json_t *body, json_t **reply, char *err, size_t errlen)
{
	struct httpc_response	 resp;
	json_error_t		 jerr;
	char			*text = NULL;
	int			 status;

	*reply = NULL;
	if (body != NULL)
		text = json_dumps(body, JSON_COMPACT);
	if (httpc_request(c->url, method, path, c->token, NULL, text,
	    text != NULL ? strlen(text) : 0, CLIENT_TIMEOUT_MS, &resp, err,
	    errlen) != 0) {
		free(text);
		return -1;
	}
	free(text);
	status = resp.status;
	*reply = json_loadb(resp.body, resp.len, 0, &jerr);
	if (*reply == NULL) {
		snprintf(err, errlen, "%s%s: HTTP %d without a JSON body: %.200s",
		    c->url, path, status, resp.body);
		status = -1;
	}
	httpc_response_free(&resp);
	return status;
}

void
cmd_client_print_error(const char *cmd, int status, json_t *reply)
{
	json_t		*e = json_object_get(reply, "error");
	const char	*msg = json_string_value(json_object_get(e, "message"));
	const char	*code = json_string_value(json_object_get(e, "code"));

	fprintf(stderr, "mlopsd %s: %s (HTTP %d%s%s)\n", cmd,
	    msg != NULL ? msg : "request failed", status,
	    code != NULL ? " " : "", code != NULL ? code : "");
}

char *
cmd_client_escape(const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";
	char			*out = xmalloc(strlen(s) * 3 + 1), *o = out;

	for (; *s != '\0'; s++) {
		unsigned char	ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
		    ch == '.' || ch == '~')
			*o++ = (char)ch;
		else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 0xf];
		}
	}
	*o = '\0';
	return out;
}
