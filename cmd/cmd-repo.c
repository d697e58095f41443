/*
 * cmd-repo: `mlopsd repo validate DIR`, the check a feature repo's CI runs
 * before a change reaches a daemon (SPEC §1).
 *
 * Every problem goes to stderr as "file:line:col: message", the form
 * compilers use, so editors and CI annotations can jump to it; the paths
 * start with DIR as given.  Exit 1 when there are errors, 0 with a one-line
 * summary on stdout when there are none, 2 when DIR is missing or is not a
 * directory (a usage error: nothing was checked).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/cmd.h"
#include "common/xmalloc.h"
#include "pipeline/pipeline.h"
#include "features/features.h"

static const char *
cmd_repo_plural(size_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

static int
cmd_repo_validate(const struct cmd_entry *self, const char *dir)
{
	struct repo	*r;
	struct dag_set	*dags;
	struct stat	 st;
	char		*err;
	size_t		 ndags;

	if (stat(dir, &st) == -1)
		return cmd_usage_error(self, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return cmd_usage_error(self, "%s: not a directory (give the "
		    "repo's top directory, the one holding features/)", dir);

	err = xmalloc(REPO_ERRLEN);
	if ((r = repo_load(dir, err, REPO_ERRLEN)) == NULL) {
		fprintf(stderr, "%s\n", err);
		free(err);
		return CMD_EXIT_FAIL;
	}
	free(err);

	/* The DAG files: pipelines/NAME.yaml, errors as file:line:col. */
	err = xmalloc(DAG_ERRLEN);
	if ((dags = dag_set_load(dir, r, err, DAG_ERRLEN)) == NULL) {
		fprintf(stderr, "%s\n", err);
		free(err);
		repo_free(r);
		return CMD_EXIT_FAIL;
	}
	free(err);
	ndags = dag_set_count(dags);
	dag_set_free(dags);

	printf("%s: ok (%zu %s, %zu %s, %zu %s, %zu %s, %zu windowed %s, "
	    "%zu %s; hash %s)\n", dir,
	    r->nentities, cmd_repo_plural(r->nentities, "entity", "entities"),
	    r->nsources, cmd_repo_plural(r->nsources, "source", "sources"),
	    r->nviews, cmd_repo_plural(r->nviews, "view", "views"),
	    r->nfeatures, cmd_repo_plural(r->nfeatures, "feature", "features"),
	    r->noutputs, cmd_repo_plural(r->noutputs, "output", "outputs"),
	    ndags, cmd_repo_plural(ndags, "DAG", "DAGs"), r->hash_hex);
	repo_free(r);
	return CMD_EXIT_OK;
}

static int
cmd_repo_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	int	ch;

	if (cmd_wants_help(self, argc, argv))
		return CMD_EXIT_OK;
	while ((ch = getopt_long(argc, argv, ":v", opts, NULL)) != -1) {
		switch (ch) {
		case 'v':
			cmd_verbose();
			break;
		default:
			return cmd_bad_option(self, ch, argv);
		}
	}
	if (optind >= argc)
		return cmd_usage_error(self, "missing command (validate)");
	if (strcmp(argv[optind], "validate") != 0)
		return cmd_usage_error(self, "unknown repo command \"%s\"",
		    argv[optind]);
	if (optind + 1 >= argc)
		return cmd_usage_error(self, "validate needs the repo directory");
	if (optind + 2 < argc)
		return cmd_usage_error(self, "unexpected argument \"%s\"",
		    argv[optind + 2]);
	return cmd_repo_validate(self, argv[optind + 1]);
}

const struct cmd_entry cmd_repo_entry = {
	.name = "repo",
	.usage = "repo validate DIR",
	.summary = "check a feature repo and its DAG files (errors as "
	    "file:line:col)",
	.exec = cmd_repo_exec,
	.help =
	    "  DIR                  the repo: features/*.yaml, schemas/*.avsc,\n"
	    "                       pipelines/*.yaml\n"
	    "  -v, --verbose        more log output\n"
	    "\nPrints every error as FILE:LINE:COL: MESSAGE on stderr and exits 1;\n"
	    "with none, prints a summary and exits 0.  Exit 2: DIR is missing\n"
	    "or not a directory.\n",
};
