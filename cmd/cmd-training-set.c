/*
 * cmd-training-set: `mlopsd training-set -c FILE --spine CSV --features
 * LIST [-o CSV]`, a point-in-time correct training set from the offline
 * store (SPEC §1, §4).  The work is offline/training.c; this file reads
 * the options, the config and the repo, and opens the offline store.
 *
 * Exit 0 with a summary line on stderr; 1 when the training set cannot be
 * built (bad spine, unknown feature, offline store unreachable), with the
 * reason on stderr and no output file; 2 for a usage or config error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cmd/cmd.h"
#include "common/config.h"
#include "common/log.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "offline/offline.h"
#include "offline/training.h"

static int
cmd_training_set_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "spine", required_argument, NULL, 's' },
		{ "features", required_argument, NULL, 'f' },
		{ "output", required_argument, NULL, 'o' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct training_spec	 spec = { 0 };
	struct training_result	 res;
	struct config		*cfg = NULL;
	struct repo		*repo = NULL;
	struct offline		*off = NULL;
	const char		*path = NULL;
	char			*err = xmalloc(REPO_ERRLEN);
	int			 ch, rc = CMD_EXIT_FAIL;

	if (cmd_wants_help(self, argc, argv)) {
		free(err);
		return CMD_EXIT_OK;
	}
	while ((ch = getopt_long(argc, argv, ":c:s:f:o:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 's':
			spec.spine = optarg;
			break;
		case 'f':
			spec.features = optarg;
			break;
		case 'o':
			spec.output = optarg;
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			free(err);
			return cmd_bad_option(self, ch, argv);
		}
	}
	rc = cmd_need_config(self, argc, argv, path);
	if (rc == CMD_EXIT_OK && spec.spine == NULL)
		rc = cmd_usage_error(self, "--spine CSV is required");
	else if (rc == CMD_EXIT_OK && spec.features == NULL)
		rc = cmd_usage_error(self, "--features LIST is required");
	else if (rc == CMD_EXIT_OK)
		rc = cmd_open_offline(self, path, &cfg, &repo, &off, err,
		    REPO_ERRLEN);
	if (rc != CMD_EXIT_OK)
		goto out;
	rc = CMD_EXIT_FAIL;
	spec.scan = training_scan_offline;
	spec.scan_arg = off;
	if (training_build(repo, &spec, &res, err, REPO_ERRLEN) != 0) {
		fprintf(stderr, "mlopsd training-set: %s\n", err);
		goto out;
	}
	fprintf(stderr, "training-set: %zu rows, features %s, sha256 %s%s%s\n",
	    res.rows, res.features, res.sha256, spec.output != NULL ?
	    " -> " : "", spec.output != NULL ? spec.output : "");
	free(res.features);
	rc = CMD_EXIT_OK;
out:
	offline_close(off);
	repo_free(repo);
	config_free(cfg);
	free(err);
	return rc;
}

const struct cmd_entry cmd_training_set_entry = {
	.name = "training-set",
	.usage = "training-set -c FILE --spine CSV --features LIST [-o CSV]",
	.summary = "build a point-in-time correct training set from the "
	    "offline store",
	.exec = cmd_training_set_exec,
	.help =
	    "  -c, --config FILE     the configuration (mlopsd.conf(5))\n"
	    "  --spine CSV           the join-key columns and event_timestamp\n"
	    "                        (epoch ms or RFC 3339), one row per example\n"
	    "  --features LIST       comma separated: view:feature_window, or a\n"
	    "                        view name for all its features\n"
	    "  -o, --output CSV      write there (atomically); default stdout\n"
	    "  -v, --verbose         more log output\n"
	    "\nThe output repeats each spine row, in order, and adds one column\n"
	    "view__feature_window per feature, its value as of the row's\n"
	    "event_timestamp (SPEC §3): no later event influences a row.\n",
};
