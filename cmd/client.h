/*
 * client: what the commands that talk to a running daemon over its HTTP
 * API (`mlopsd models`, `mlopsd dag`) share: finding the daemon and its
 * token, sending one JSON request, and reporting an error reply.
 */
#ifndef MLOPSD_CMD_CLIENT_H
#define MLOPSD_CMD_CLIENT_H

#include <stddef.h>

#include <jansson.h>

struct cmd_client {
	char	*url;		/* "http://127.0.0.1:8700" */
	char	*token;		/* bearer token, or NULL */
};

/*
 * Where the daemon is: url when given (--url), else the http.listen of
 * config_path (-c FILE), else $MLOPSD_URL, else the default config (and
 * its MLOPSD_* overrides).  A wildcard listen address (0.0.0.0, [::])
 * means the loopback.  The token is $MLOPSD_TOKEN when set, else the
 * config's admin token.  Returns 0, or -1 with err (an unreadable
 * config: a usage error, exit 2).
 */
int	cmd_client_init(struct cmd_client *c, const char *config_path,
	    const char *url, char *err, size_t errlen);
void	cmd_client_free(struct cmd_client *c);

struct cmd_entry;
/*
 * cmd_client_init() for command self: its error is printed as
 * "mlopsd NAME: reason" to stderr.  Returns 0, or -1 (a usage error).
 */
int	cmd_client_open(const struct cmd_entry *self, struct cmd_client *c,
	    const char *config_path, const char *url);
/*
 * The --output value arg: "json" sets *json, "table" clears it; anything
 * else prints the usage error and returns -1.  Returns 0 otherwise.
 */
int	cmd_client_output(const struct cmd_entry *self, const char *arg,
	    int *json);

/*
 * Send method path with body (may be NULL; not stolen) and parse the JSON
 * reply into *reply (the caller owns it).  Returns the HTTP status, or -1
 * with err when the daemon cannot be reached or did not answer JSON.
 */
int	cmd_client_call(struct cmd_client *c, const char *method,
	    const char *path, json_t *body, json_t **reply, char *err,
	    size_t errlen);

/*
 * Print an error reply ({"error":{"code","message"}}) as
 * "mlopsd CMD: message (HTTP status code)" to stderr.
 */
void	cmd_client_print_error(const char *cmd, int status, json_t *reply);

/* Percent-encode a path segment (a model or DAG name). Caller frees. */
char	*cmd_client_escape(const char *s);

#endif
