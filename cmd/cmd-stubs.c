/*
 * cmd-stubs: the commands of SPEC §1 that later work will implement.  They
 * are in the table already so `mlopsd --help` shows the whole interface
 * and scripts get a usage error (exit 2) rather than "unknown command".
 * Each one moves to its own cmd-NAME.c when it is written.
 */
#include <stdio.h>

#include "cmd/cmd.h"

static int
cmd_stub_exec(const struct cmd_entry *self, int argc, char **argv)
{
	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	fprintf(stderr, "mlopsd %s: not yet implemented\n", self->name);
	return CMD_EXIT_USAGE;
}

const struct cmd_entry cmd_training_set_entry = {
	.name = "training-set",
	.usage = "training-set -c FILE --spine CSV --features LIST [-o CSV]",
	.summary = "build a point-in-time correct training set from the "
	    "offline store",
	.exec = cmd_stub_exec,
};

const struct cmd_entry cmd_verify_entry = {
	.name = "verify",
	.usage = "verify -c FILE",
	.summary = "recompute every online value from the offline store and "
	    "report mismatches",
	.exec = cmd_stub_exec,
};
