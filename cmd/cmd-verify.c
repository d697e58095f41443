/*
 * cmd-verify: `mlopsd verify -c FILE [--sample N]`, the online/offline
 * consistency check (SPEC §1, §4).  offline/verify.c recomputes the online
 * values from the offline copy at one cut of the online store and compares
 * them; this file prints each mismatch on stdout and the summary line
 * `verified N entities, M mismatches`.  Exit 1 when M > 0 or the stores
 * cannot be read, 2 on a usage or config error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cmd/cmd.h"
#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "offline/offline.h"
#include "offline/training.h"

static int
cmd_verify_exec(const struct cmd_entry *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "sample", required_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct verify_spec	 spec = { 0 };
	struct verify_result	 res;
	struct config		*cfg = NULL;
	struct repo		*repo = NULL;
	struct offline		*off = NULL;
	const char		*path = NULL;
	char			*err = xmalloc(REPO_ERRLEN), *db = NULL;
	int			 ch, sample = 0, rc = CMD_EXIT_FAIL;

	if (cmd_wants_help(self, argc, argv)) {
		free(err);
		return CMD_EXIT_OK;
	}
	while ((ch = getopt_long(argc, argv, ":c:v", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			if (cmd_parse_int(optarg, 1, 1 << 30, &sample) != 0) {
				free(err);
				return cmd_usage_error(self, "--sample: not a "
				    "positive integer: \"%s\"", optarg);
			}
			break;
		case 'v':
			cmd_verbose();
			break;
		default:
			free(err);
			return cmd_bad_option(self, ch, argv);
		}
	}
	if ((rc = cmd_need_config(self, argc, argv, path)) == CMD_EXIT_OK)
		rc = cmd_open_offline(self, path, &cfg, &repo, &off, err,
		    REPO_ERRLEN);
	if (rc != CMD_EXIT_OK)
		goto out;
	rc = CMD_EXIT_FAIL;
	db = xstrfmt("%s/online.db", cfg->data_dir);
	spec.online_db = db;
	spec.now_ms = util_now_ms();
	spec.sample = (size_t)sample;
	spec.scan = training_scan_offline;
	spec.scan_arg = off;
	spec.pending = verify_pending_outbox;
	spec.pending_arg = off;
	spec.report = stdout;
	if (verify_run(repo, &spec, &res, err, REPO_ERRLEN) != 0) {
		fprintf(stderr, "mlopsd verify: %s\n", err);
		goto out;
	}
	printf("verified %zu entities, %zu mismatches\n", res.entities,
	    res.mismatches);
	rc = res.mismatches > 0 ? CMD_EXIT_FAIL : CMD_EXIT_OK;
out:
	offline_close(off);
	repo_free(repo);
	config_free(cfg);
	free(db);
	free(err);
	return rc;
}

const struct cmd_entry cmd_verify_entry = {
	.name = "verify",
	.usage = "verify -c FILE [--sample N]",
	.summary = "recompute every online value from the offline store and "
	    "report mismatches",
	.exec = cmd_verify_exec,
	.help =
	    "  -c, --config FILE     the configuration (mlopsd.conf(5))\n"
	    "  --sample N            N random entities per view, not all\n"
	    "  -v, --verbose         more log output\n"
	    "\nPrints \"VIEW KEY FEATURE_WINDOW: online=V offline=V\" per value\n"
	    "that differs and \"verified N entities, M mismatches\"; exit 1\n"
	    "when M > 0.  Runs beside a live daemon: it reads one snapshot of\n"
	    "the online store and the offline rows of that cut.\n",
};
