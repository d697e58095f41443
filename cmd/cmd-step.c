/*
 * cmd-step: `mlopsd step BUILTIN`, the hidden command a pipeline step with
 * `uses: BUILTIN` runs as (contracts §2).  The engine forks, sets the
 * step's environment (MLOPSD_STEP_CONTEXT, MLOPSD_OUTPUTS, ...), and execs
 * this binary; here the context is parsed, the outputs file opened for
 * append, and the builtin's run function called.  Its return is the exit
 * status: 0 success, 1 the step failed; 2 for a broken environment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmd/cmd.h"
#include "pipeline/builtins.h"

static int
cmd_step_exec(const struct cmd_entry *self, int argc, char **argv)
{
	const struct dag_builtin	*b;
	struct dag_step_env		 env;
	json_error_t			 jerr;
	const char			*ctx_path, *out_path;
	int				 rc;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	if (argc != 2)
		return cmd_usage_error(self, "needs exactly one builtin name");
	if ((b = dag_builtin_find(argv[1])) == NULL)
		return cmd_usage_error(self, "unknown builtin \"%s\"", argv[1]);
	ctx_path = getenv("MLOPSD_STEP_CONTEXT");
	out_path = getenv("MLOPSD_OUTPUTS");
	if (ctx_path == NULL || out_path == NULL) {
		fprintf(stderr, "mlopsd step: MLOPSD_STEP_CONTEXT and "
		    "MLOPSD_OUTPUTS must be set (the pipeline engine runs this "
		    "command)\n");
		return CMD_EXIT_USAGE;
	}
	memset(&env, 0, sizeof env);
	env.ctx_path = ctx_path;
	if ((env.ctx = json_load_file(ctx_path, 0, &jerr)) == NULL) {
		fprintf(stderr, "mlopsd step: %s:%d:%d: %s\n", ctx_path,
		    jerr.line, jerr.column, jerr.text);
		return CMD_EXIT_USAGE;
	}
	if ((env.outputs = fopen(out_path, "a")) == NULL) {
		perror(out_path);
		json_decref(env.ctx);
		return CMD_EXIT_USAGE;
	}
	rc = b->run(&env) == 0 ? CMD_EXIT_OK : CMD_EXIT_FAIL;
	if (fclose(env.outputs) != 0) {
		perror(out_path);
		rc = CMD_EXIT_FAIL;
	}
	json_decref(env.ctx);
	return rc;
}

/* Hidden: no summary, so `mlopsd --help` does not list it. */
const struct cmd_entry cmd_step_entry = {
	.name = "step",
	.usage = "step BUILTIN",
	.summary = NULL,
	.exec = cmd_step_exec,
};
