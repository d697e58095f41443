/*
 * cmd: the mlopsd command line (see cmd.h).
 *
 * `mlopsd [-v]... [--help | --version] COMMAND [ARGS]`: the global options
 * are read here, then the command named by the first other word runs with
 * argv starting at its name, so it can use getopt_long as if it were its
 * own program.  The commands are one table, in the order `--help` lists
 * them (SPEC §1).  The -v count is this file's only state; cmd_main()
 * resets it, so the unit tests can call cmd_main() over and over.
 */
#include <getopt.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cmd/cmd.h"
#include "common/config.h"
#include "common/log.h"
#include "features/features.h"
#include "offline/offline.h"

static const struct cmd_entry *cmd_table[] = {
	&cmd_serve_entry,
	&cmd_dev_entry,
	&cmd_kafka_mock_entry,
	&cmd_produce_entry,
	&cmd_repo_entry,
	&cmd_training_set_entry,
	&cmd_verify_entry,
	&cmd_dag_entry,
	&cmd_models_entry,
	&cmd_step_entry,
};
#define CMD_NTABLE	(sizeof cmd_table / sizeof cmd_table[0])

#define CMD_GLOBAL_USAGE	"[-v]... [--help | --version] COMMAND [ARGS]"

static int	cmd_verbosity;

void
cmd_verbose(void)
{
	cmd_verbosity++;
}

enum log_level
cmd_log_level(enum log_level base)
{
	int	level = (int)base + cmd_verbosity;

	return level > LOG_DEBUG ? LOG_DEBUG : (enum log_level)level;
}

static void
cmd_print_help(FILE *f)
{
	size_t	i;

	fprintf(f, "usage: mlopsd " CMD_GLOBAL_USAGE "\n\n"
	    "mlopsd %s: streaming feature store and MLOps pipeline daemon.\n\n"
	    "commands:\n", PACKAGE_VERSION);
	for (i = 0; i < CMD_NTABLE; i++) {
		if (cmd_table[i]->summary == NULL)	/* hidden */
			continue;
		fprintf(f, "  mlopsd %s\n      %s\n", cmd_table[i]->usage,
		    cmd_table[i]->summary);
	}
	fprintf(f, "\noptions:\n"
	    "  -v, --verbose  more log output (repeat for more)\n"
	    "  -h, --help     this text; `mlopsd COMMAND --help` for a command\n"
	    "  --version      print the version\n"
	    "\nExit status: 0 ok, 1 the operation failed, 2 usage or "
	    "configuration error.\n");
}

/* Print usage, the message, and return CMD_EXIT_USAGE.  self may be NULL. */
int
cmd_usage_error(const struct cmd_entry *self, const char *fmt, ...)
{
	va_list	ap;

	fprintf(stderr, "mlopsd%s%s: ", self != NULL ? " " : "",
	    self != NULL ? self->name : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (self != NULL)
		fprintf(stderr, "\nusage: mlopsd %s\n", self->usage);
	else
		fprintf(stderr, "\nusage: mlopsd " CMD_GLOBAL_USAGE "\n");
	fprintf(stderr, "(try `mlopsd %s%s--help`)\n",
	    self != NULL ? self->name : "", self != NULL ? " " : "");
	return CMD_EXIT_USAGE;
}

/*
 * True when -h or --help comes before any "--" in argv[1..]; then the
 * command's usage, summary and options go to stdout.
 */
int
cmd_parse_int(const char *s, int min, int max, int *out)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

int
cmd_wants_help(const struct cmd_entry *self, int argc, char **argv)
{
	int	i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			break;
	}
	if (i == argc)
		return 0;
	printf("usage: mlopsd %s\n\n%s\n", self->usage,
	    self->summary != NULL ? self->summary : "(internal command)");
	if (self->help != NULL)
		printf("\noptions:\n%s", self->help);
	return 1;
}

int
cmd_bad_option(const struct cmd_entry *self, int ch, char **argv)
{
	char		 shortopt[3] = { '-', (char)optopt, '\0' };
	const char	*prev = argv[optind - 1];
	int		 len;

	/* getopt says which short option failed but not which long one. */
	if (optopt == 0 || (ch == ':' && strncmp(prev, "--", 2) == 0)) {
		len = (int)strcspn(prev, "=");
		if (ch == ':')
			return cmd_usage_error(self, "option %.*s needs a value",
			    len, prev);
		return cmd_usage_error(self, "unknown option %.*s", len, prev);
	}
	if (ch == ':')
		return cmd_usage_error(self, "option %s needs a value", shortopt);
	return cmd_usage_error(self, "unknown option %s", shortopt);
}

int
cmd_need_config(const struct cmd_entry *self, int argc, char **argv,
    const char *path)
{
	if (optind < argc)
		return cmd_usage_error(self, "unexpected argument \"%s\"",
		    argv[optind]);
	if (path == NULL)
		return cmd_usage_error(self, "-c FILE is required");
	return CMD_EXIT_OK;
}

int
cmd_open_offline(const struct cmd_entry *self, const char *path,
    struct config **cfg, struct repo **repo, struct offline **off, char *err,
    size_t errlen)
{
	if ((*cfg = config_load(path, err, errlen)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return CMD_EXIT_USAGE;
	}
	log_set_level(cmd_log_level((*cfg)->log_level));
	if ((*repo = repo_load((*cfg)->repo, err, errlen)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return CMD_EXIT_FAIL;
	}
	if ((*off = offline_open(*cfg, *repo, NULL, err, errlen)) == NULL) {
		fprintf(stderr, "mlopsd %s: %s\n", self->name, err);
		return CMD_EXIT_FAIL;
	}
	return CMD_EXIT_OK;
}

/* Is arg "-v", "-vv", ...?  Then count it. */
static int
cmd_is_verbose(const char *arg)
{
	const char	*p;

	if (strcmp(arg, "--verbose") == 0) {
		cmd_verbose();
		return 1;
	}
	if (arg[0] != '-' || arg[1] != 'v')
		return 0;
	for (p = arg + 1; *p == 'v'; p++)
		;
	if (*p != '\0')
		return 0;
	cmd_verbosity += (int)(p - arg - 1);
	return 1;
}

/*
 * Run a whole command line; returns the exit code.  Not reentrant (getopt
 * and the -v count are process state); stdout is flushed on return.
 */
int
cmd_main(int argc, char **argv)
{
	const struct cmd_entry	*ce = NULL;
	const char		*arg;
	size_t			 j;
	int			 i, rc;

	cmd_verbosity = 0;
	log_set_level(LOG_INFO);
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		arg = argv[i];
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			cmd_print_help(stdout);
			fflush(stdout);
			return CMD_EXIT_OK;
		}
		if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
			printf("mlopsd %s\n", PACKAGE_VERSION);
			fflush(stdout);
			return CMD_EXIT_OK;
		}
		if (cmd_is_verbose(arg))
			continue;
		return cmd_usage_error(NULL, "unknown option %s", arg);
	}
	if (i == argc) {
		cmd_print_help(stderr);
		return CMD_EXIT_USAGE;
	}
	for (j = 0; j < CMD_NTABLE; j++) {
		if (strcmp(argv[i], cmd_table[j]->name) == 0) {
			ce = cmd_table[j];
			break;
		}
	}
	if (ce == NULL)
		return cmd_usage_error(NULL, "unknown command \"%s\"", argv[i]);
	log_set_level(cmd_log_level(LOG_INFO));

	/* Each command parses its own options from scratch. */
	optind = 0;
	opterr = 0;
	rc = ce->exec(ce, argc - i, argv + i);
	fflush(stdout);
	return rc;
}
