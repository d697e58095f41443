/*
 * cmd: the mlopsd command line.  One table of subcommands (cmd.c); each
 * command lives in its own cmd-NAME.c with a `const struct cmd_entry`.
 */
#ifndef MLOPSD_CMD_H
#define MLOPSD_CMD_H

#include <stddef.h>

#include "common/log.h"

/* Exit codes (SPEC §1). */
#define CMD_EXIT_OK	0
#define CMD_EXIT_FAIL	1	/* the operation failed */
#define CMD_EXIT_USAGE	2	/* usage or configuration error */

struct cmd_entry {
	const char	*name;		/* "serve", "repo validate" is "repo" */
	const char	*usage;		/* "serve -c FILE [--check]" */
	const char	*summary;	/* one line for mlopsd --help; NULL: hidden */
	int		(*exec)(const struct cmd_entry *self, int argc, char **argv);
	const char	*help;		/* option lines for NAME --help, or NULL */
};

/* Run the command line; returns the process exit code. */
int	cmd_main(int argc, char **argv);

/* Print "usage: mlopsd <usage>" and a message to stderr; returns CMD_EXIT_USAGE. */
int	cmd_usage_error(const struct cmd_entry *self, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* Parse a whole decimal string in [min, max] into *out.  Returns 0 or -1. */
int	cmd_parse_int(const char *s, int min, int max, int *out);
/* True when argv holds -h or --help (then print usage to stdout). */
int	cmd_wants_help(const struct cmd_entry *self, int argc, char **argv);
/*
 * Report what getopt_long (optstring starting with ':', opterr 0) rejected:
 * ch is the '?' or ':' it returned.  Returns CMD_EXIT_USAGE.
 */
int	cmd_bad_option(const struct cmd_entry *self, int ch, char **argv);

/*
 * -v may be given before the command or among its options, repeatedly;
 * a command's option parser calls cmd_verbose() for each -v it sees.
 * cmd_log_level() is `base` raised one step per -v, at most LOG_DEBUG.
 */
void		cmd_verbose(void);
enum log_level	cmd_log_level(enum log_level base);
/*
 * The usage checks after the options of a command that takes no operands
 * and needs -c FILE (path): prints "unexpected argument" or "-c FILE is
 * required" and returns CMD_EXIT_USAGE, else returns CMD_EXIT_OK.
 */
int	cmd_need_config(const struct cmd_entry *self, int argc, char **argv,
	    const char *path);

struct config;
struct repo;
struct offline;
/*
 * The setup of a command that works on the offline store (training-set,
 * verify): load the config at path (its error printed as the loader wrote
 * it), set the log level (the config's raised by -v), load its repo and
 * open the offline store (that error printed as "mlopsd NAME: reason").
 * On CMD_EXIT_OK the caller owns *cfg, *repo and *off; on CMD_EXIT_USAGE
 * (the config) or CMD_EXIT_FAIL what was opened is left in them for the
 * caller to free (each free accepts NULL).  err is the caller's buffer.
 */
int	cmd_open_offline(const struct cmd_entry *self, const char *path,
	    struct config **cfg, struct repo **repo, struct offline **off,
	    char *err, size_t errlen);

extern const struct cmd_entry cmd_serve_entry;
extern const struct cmd_entry cmd_dev_entry;
extern const struct cmd_entry cmd_kafka_mock_entry;
extern const struct cmd_entry cmd_produce_entry;
extern const struct cmd_entry cmd_repo_entry;
extern const struct cmd_entry cmd_training_set_entry;
extern const struct cmd_entry cmd_verify_entry;
extern const struct cmd_entry cmd_dag_entry;
extern const struct cmd_entry cmd_models_entry;
extern const struct cmd_entry cmd_step_entry;

#endif
