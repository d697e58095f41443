/*
 * cmd: the mlopsd command line.  One table of subcommands (cmd.c); each
 * command lives in its own cmd-NAME.c with a `const struct cmd_entry`.
 */
#ifndef MLOPSD_CMD_H
#define MLOPSD_CMD_H

/* Exit codes (SPEC §1). */
#define CMD_EXIT_OK	0
#define CMD_EXIT_FAIL	1	/* the operation failed */
#define CMD_EXIT_USAGE	2	/* usage or configuration error */

struct cmd_entry {
	const char	*name;		/* "serve", "repo validate" is "repo" */
	const char	*usage;		/* "serve -c FILE [--check]" */
	const char	*summary;	/* one line for mlopsd --help */
	int		(*exec)(const struct cmd_entry *self, int argc, char **argv);
};

/* Run the command line; returns the process exit code. */
int	cmd_main(int argc, char **argv);

/* Print "usage: mlopsd <usage>" and a message to stderr; returns CMD_EXIT_USAGE. */
int	cmd_usage_error(const struct cmd_entry *self, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* True when argv holds -h or --help (then print usage to stdout). */
int	cmd_wants_help(const struct cmd_entry *self, int argc, char **argv);

extern const struct cmd_entry cmd_serve_entry;
extern const struct cmd_entry cmd_dev_entry;
extern const struct cmd_entry cmd_kafka_mock_entry;
extern const struct cmd_entry cmd_produce_entry;
extern const struct cmd_entry cmd_repo_entry;
extern const struct cmd_entry cmd_training_set_entry;
extern const struct cmd_entry cmd_verify_entry;
extern const struct cmd_entry cmd_dag_entry;
extern const struct cmd_entry cmd_models_entry;

#endif
