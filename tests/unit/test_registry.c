/*
 * Unit tests of registry/registry.c: versions and their JSON, version
 * numbers allocated across processes (fork), aliases with history,
 * rollback chains (skipping deleted versions), artifact corruption,
 * the event log, idempotent schema migrations, and the reference
 * distributions built from a training-set CSV.  Each test runs in a
 * fresh data directory under /tmp.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/log.h"
#include "common/sha256.h"
#include "registry/registry.h"
#include "tests/unit/testutil.h"

struct fixture {
	char		 dir[64];
	char		 model[128];	/* an artifact file */
	struct registry	*r;
};

static int
setup(void **state)
{
	struct fixture	*f = calloc(1, sizeof *f);
	char		 err[512];

	snprintf(f->dir, sizeof f->dir, "/tmp/test_registry.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->model, sizeof f->model, "%s/model.json", f->dir);
	testutil_write_file(f->model, "{\"learner\": \"tree\"}\n");
	f->r = registry_open(f->dir, err, sizeof err);
	if (f->r == NULL)
		fail_msg("registry_open: %s", err);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture	*f = *state;

	registry_close(f->r);
	testutil_rm_tree(f->dir);
	free(f);
	return 0;
}

static int
create(struct fixture *f, const char *model)
{
	struct registry_version_spec	s = { .model = model,
	    .artifact_path = f->model };
	char				err[512];
	int				v = -1;

	if (registry_version_create(f->r, &s, &v, err, sizeof err) != 0)
		fail_msg("create %s: %s", model, err);
	return v;
}

static void
test_version_create_and_json(void **state)
{
	struct fixture	*f = *state;
	struct registry_version_spec s = { 0 };
	json_t		*params = json_pack("{s:i, s:f}", "max_depth", 6,
			    "eta", 0.3);
	json_t		*metrics = json_pack("{s:f}", "auc", 0.91);
	json_t		*features = json_pack("[s, s]", "user:clicks_1h",
			    "user:spend_1d");
	json_t		*ref = json_pack("{s:i}", "rows", 10);
	json_t		*v, *m;
	char		 err[512], hex[SHA256_HEXLEN + 1];
	char		 path[512];
	int		 n = 0;

	s.model = "churn";
	s.artifact_path = f->model;
	s.params = params;
	s.metrics = metrics;
	s.features = features;
	s.reference = ref;
	s.training_set_sha256 = "abc";
	s.dag = "churn-retrain";
	s.run_id = "r-1";
	s.git_commit = "deadbeef";
	assert_int_equal(registry_version_create(f->r, &s, &n, err,
	    sizeof err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(registry_version_create(f->r, &s, &n, err,
	    sizeof err), 0);
	assert_int_equal(n, 2);

	assert_int_equal(sha256_file_hex(f->model, hex, NULL, err,
	    sizeof err), 0);
	v = registry_version_json(f->r, "churn", 2, err, sizeof err);
	assert_non_null(v);
	assert_string_equal(json_string_value(json_object_get(v, "name")),
	    "churn");
	assert_int_equal(json_integer_value(json_object_get(v, "version")), 2);
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(v, "artifact"), "sha256")), hex);
	assert_true(json_equal(json_object_get(v, "params"), params));
	assert_true(json_equal(json_object_get(v, "metrics"), metrics));
	assert_true(json_equal(json_object_get(v, "reference"), ref));
	assert_true(json_equal(json_object_get(json_object_get(v, "lineage"),
	    "features"), features));
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    v, "lineage"), "run_id")), "r-1");
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    v, "lineage"), "git_commit")), "deadbeef");
	assert_int_equal(json_array_size(json_object_get(v, "aliases")), 0);
	assert_true(json_integer_value(json_object_get(v, "created_at")) >
	    1700000000000LL);
	json_decref(v);

	/* Same content, one stored file; the path checks out. */
	assert_int_equal(registry_artifact_path(f->r, "churn", 1, path,
	    sizeof path, err, sizeof err), 0);
	assert_non_null(strstr(path, hex));

	assert_null(registry_version_json(f->r, "churn", 3, err, sizeof err));
	assert_string_equal(err, "no version 3 of model \"churn\"");
	assert_null(registry_model_json(f->r, "nope", err, sizeof err));
	assert_string_equal(err, "no model \"nope\"");

	m = registry_model_json(f->r, "churn", err, sizeof err);
	assert_non_null(m);
	assert_int_equal(json_array_size(json_object_get(m, "versions")), 2);
	assert_int_equal(json_integer_value(json_object_get(m,
	    "latest_version")), 2);
	assert_null(json_object_get(json_array_get(json_object_get(m,
	    "versions"), 0), "reference"));
	json_decref(m);

	json_decref(params);
	json_decref(metrics);
	json_decref(features);
	json_decref(ref);
}

static void
test_version_create_bad(void **state)
{
	struct fixture	*f = *state;
	struct registry_version_spec s = { .model = "churn",
	    .artifact_path = "/nonexistent/model.json" };
	json_t		*arr = json_array();
	char		 err[512];
	int		 n = 0;

	assert_int_equal(registry_version_create(f->r, &s, &n, err,
	    sizeof err), -1);
	assert_string_equal(err, "artifact /nonexistent/model.json: No such "
	    "file or directory");
	s.artifact_path = f->model;
	s.model = "bad name";
	assert_int_equal(registry_version_create(f->r, &s, &n, err,
	    sizeof err), -1);
	assert_non_null(strstr(err, "bad model name \"bad name\""));
	s.model = "churn";
	s.params = arr;
	assert_int_equal(registry_version_create(f->r, &s, &n, err,
	    sizeof err), -1);
	assert_string_equal(err, "params must be a JSON object");
	s.params = NULL;
	s.features = arr;
	json_array_append_new(arr, json_integer(1));
	assert_int_equal(registry_version_create(f->r, &s, &n, err,
	    sizeof err), -1);
	assert_string_equal(err, "features[0] must be a string");
	s.features = NULL;
	s.artifact_path = NULL;
	assert_int_equal(registry_version_create(f->r, &s, &n, err,
	    sizeof err), -1);
	assert_string_equal(err, "a model version needs an artifact");
	json_decref(arr);
	/* Nothing was registered by the failures. */
	assert_null(registry_model_json(f->r, "churn", err, sizeof err));
}

/* Two processes registering at once get distinct consecutive numbers. */
static void
test_version_concurrent_processes(void **state)
{
	struct fixture	*f = *state;
	enum { PER_CHILD = 25, NCHILD = 2 };
	pid_t		 pid[NCHILD];
	json_t		*m, *vs;
	char		 err[512];
	int		 i, k, status, seen[NCHILD * PER_CHILD + 1] = { 0 };

	for (k = 0; k < NCHILD; k++) {
		pid[k] = fork();
		assert_true(pid[k] >= 0);
		if (pid[k] == 0) {
			struct registry	*r = registry_open(f->dir, err,
			    sizeof err);
			struct registry_version_spec s = { .model = "race",
			    .artifact_path = f->model };
			int		 n;

			if (r == NULL)
				_exit(2);
			for (i = 0; i < PER_CHILD; i++) {
				if (registry_version_create(r, &s, &n, err,
				    sizeof err) != 0) {
					fprintf(stderr, "child: %s\n", err);
					_exit(1);
				}
			}
			registry_close(r);
			_exit(0);
		}
	}
	for (k = 0; k < NCHILD; k++) {
		assert_int_equal(waitpid(pid[k], &status, 0), pid[k]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	m = registry_model_json(f->r, "race", err, sizeof err);
	assert_non_null(m);
	vs = json_object_get(m, "versions");
	assert_int_equal(json_array_size(vs), NCHILD * PER_CHILD);
	for (i = 0; i < (int)json_array_size(vs); i++) {
		int v = (int)json_integer_value(json_object_get(
		    json_array_get(vs, (size_t)i), "version"));

		assert_true(v >= 1 && v <= NCHILD * PER_CHILD);
		assert_int_equal(seen[v], 0);
		seen[v] = 1;
	}
	json_decref(m);
}

static void
test_aliases_and_history(void **state)
{
	struct fixture	*f = *state;
	json_t		*h, *v, *m;
	char		 err[512];
	int		 n = -1;

	create(f, "churn");
	create(f, "churn");
	assert_int_equal(registry_alias_get(f->r, "churn", "champion", &n), -1);
	assert_int_equal(registry_alias_set(f->r, "churn", "champion", 1,
	    "first", err, sizeof err), 0);
	assert_int_equal(registry_alias_set(f->r, "churn", "challenger", 2,
	    NULL, err, sizeof err), 0);
	assert_int_equal(registry_alias_get(f->r, "churn", "champion", &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(registry_alias_set(f->r, "churn", "champion", 2,
	    "better auc", err, sizeof err), 0);
	/* The same version again changes nothing (no history row). */
	assert_int_equal(registry_alias_set(f->r, "churn", "champion", 2,
	    NULL, err, sizeof err), 0);
	assert_int_equal(registry_alias_get(f->r, "churn", "champion", &n), 0);
	assert_int_equal(n, 2);

	h = registry_alias_history_json(f->r, "churn", "champion", err,
	    sizeof err);
	assert_int_equal(json_array_size(h), 2);
	assert_true(json_is_null(json_object_get(json_array_get(h, 0),
	    "from")));
	assert_int_equal(json_integer_value(json_object_get(json_array_get(h,
	    1), "from")), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(h,
	    1), "to")), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    h, 1), "reason")), "better auc");
	json_decref(h);

	/* Every version says which aliases it has. */
	v = registry_version_json(f->r, "churn", 2, err, sizeof err);
	assert_int_equal(json_array_size(json_object_get(v, "aliases")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(v,
	    "aliases"), 0)), "challenger");
	json_decref(v);
	m = registry_model_json(f->r, "churn", err, sizeof err);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(m,
	    "aliases"), "champion")), 2);
	json_decref(m);

	/* Bad input. */
	assert_int_equal(registry_alias_set(f->r, "churn", "champion", 7, NULL,
	    err, sizeof err), -1);
	assert_string_equal(err, "no version 7 of model \"churn\"");
	assert_int_equal(registry_alias_set(f->r, "churn", "Champion", 1, NULL,
	    err, sizeof err), -1);
	assert_string_equal(err, "bad alias \"Champion\" ([a-z0-9_-], 1 to 64 "
	    "characters)");
	assert_int_equal(registry_alias_set(f->r, "nope", "champion", 1, NULL,
	    err, sizeof err), -1);
	assert_string_equal(err, "no version 1 of model \"nope\"");

	/* Delete. */
	assert_int_equal(registry_alias_delete(f->r, "churn", "challenger",
	    NULL, err, sizeof err), 0);
	assert_int_equal(registry_alias_get(f->r, "churn", "challenger", &n),
	    -1);
	assert_int_equal(registry_alias_delete(f->r, "churn", "challenger",
	    NULL, err, sizeof err), -1);
	assert_string_equal(err, "model \"churn\" has no alias \"challenger\"");
}

static void
test_alias_names(void **state)
{
	static const struct {
		const char	*name;
		int		 ok;
	} cases[] = {
		{ "champion", 1 }, { "challenger", 1 }, { "a", 1 },
		{ "shadow-2_b", 1 }, { "", 0 }, { "Champion", 0 },
		{ "with space", 0 }, { "a.b", 0 }, { "é", 0 },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		    1 },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		    0 },
	};
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		assert_int_equal(registry_alias_name_ok(cases[i].name),
		    cases[i].ok);
	assert_true(registry_model_name_ok("churn.v2-x_y"));
	assert_false(registry_model_name_ok("../etc"));
	assert_false(registry_model_name_ok("a/b"));
	assert_false(registry_model_name_ok(""));
}

static void
promote(struct fixture *f, int v)
{
	char	err[512];

	if (registry_alias_set(f->r, "churn", "champion", v, NULL, err,
	    sizeof err) != 0)
		fail_msg("promote %d: %s", v, err);
}

static int
rollback(struct fixture *f)
{
	char	err[512];
	int	v = -1;

	if (registry_rollback(f->r, "churn", &v, err, sizeof err) != 0)
		fail_msg("rollback: %s", err);
	return v;
}

static void
test_rollback_chain(void **state)
{
	struct fixture	*f = *state;
	char		 err[512];
	int		 v, i;

	for (i = 0; i < 5; i++)
		create(f, "churn");
	assert_int_equal(registry_rollback(f->r, "churn", &v, err, sizeof err),
	    -1);
	assert_string_equal(err, "model \"churn\" has no champion to roll back");
	promote(f, 1);
	promote(f, 2);
	promote(f, 3);
	assert_int_equal(rollback(f), 2);
	assert_int_equal(rollback(f), 1);	/* a chain, not 2 <-> 3 */
	assert_int_equal(registry_rollback(f->r, "churn", &v, err, sizeof err),
	    -1);
	assert_string_equal(err, "model \"churn\" has no previous champion "
	    "(champion is version 1)");
	assert_int_equal(registry_alias_get(f->r, "churn", "champion", &v), 0);
	assert_int_equal(v, 1);

	/* A promotion after rollbacks stacks on what is left. */
	promote(f, 4);
	promote(f, 5);
	assert_int_equal(rollback(f), 4);
	assert_int_equal(rollback(f), 1);

	/* Other aliases do not count as champions. */
	assert_int_equal(registry_alias_set(f->r, "churn", "challenger", 3,
	    NULL, err, sizeof err), 0);
	assert_int_equal(registry_rollback(f->r, "churn", &v, err, sizeof err),
	    -1);
}

static void
test_rollback_skips_deleted_versions(void **state)
{
	struct fixture	*f = *state;
	sqlite3		*db;
	char		 path[256];
	int		 i;

	for (i = 0; i < 3; i++)
		create(f, "churn");
	promote(f, 1);
	promote(f, 2);
	promote(f, 3);
	/* Version 2 disappears (deleted by hand). */
	snprintf(path, sizeof path, "%s/registry.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, "DELETE FROM versions WHERE "
	    "version = 2", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(rollback(f), 1);
}

static void
test_version_delete(void **state)
{
	struct fixture	*f = *state;
	char		 err[512];
	int		 i;

	for (i = 0; i < 3; i++)
		create(f, "churn");
	promote(f, 1);
	promote(f, 2);
	promote(f, 3);
	assert_int_equal(registry_version_delete(f->r, "churn", 3, err,
	    sizeof err), -1);
	assert_string_equal(err, "version 3 of model \"churn\" has alias "
	    "\"champion\": move or delete the alias first");
	assert_int_equal(registry_version_delete(f->r, "churn", 2, err,
	    sizeof err), 0);
	assert_int_equal(registry_version_delete(f->r, "churn", 2, err,
	    sizeof err), -1);
	assert_string_equal(err, "no version 2 of model \"churn\"");
	assert_null(registry_version_json(f->r, "churn", 2, err, sizeof err));
	/* Rollback skips it; numbers are not reused. */
	assert_int_equal(rollback(f), 1);
	assert_int_equal(create(f, "churn"), 4);
	assert_true(registry_events_last_seq(f->r) > 0);
}

static void
test_rollback_after_delete(void **state)
{
	struct fixture	*f = *state;
	char		 err[512];
	int		 v;

	create(f, "churn");
	create(f, "churn");
	promote(f, 1);
	promote(f, 2);
	assert_int_equal(registry_alias_delete(f->r, "churn", "champion", NULL,
	    err, sizeof err), 0);
	assert_int_equal(registry_rollback(f->r, "churn", &v, err, sizeof err),
	    -1);
	assert_string_equal(err, "model \"churn\" has no champion to roll back");
	promote(f, 2);
	assert_int_equal(registry_rollback(f->r, "churn", &v, err, sizeof err),
	    -1);
	assert_string_equal(err, "model \"churn\" has no previous champion "
	    "(champion is version 2)");
}

static void
test_artifact_corruption(void **state)
{
	struct fixture	*f = *state;
	char		 path[512], err[1024], hex[SHA256_HEXLEN + 1];

	create(f, "churn");
	assert_int_equal(sha256_file_hex(f->model, hex, NULL, err, sizeof err),
	    0);
	assert_int_equal(registry_artifact_path(f->r, "churn", 1, path,
	    sizeof path, err, sizeof err), 0);
	/* The stored copy is read-only; the original may change freely. */
	testutil_write_file(f->model, "changed\n");
	assert_int_equal(registry_artifact_path(f->r, "churn", 1, path,
	    sizeof path, err, sizeof err), 0);

	assert_int_equal(chmod(path, 0644), 0);
	testutil_write_file(path, "{\"learner\": \"tampered\"}\n");
	assert_int_equal(registry_artifact_path(f->r, "churn", 1, path,
	    sizeof path, err, sizeof err), -1);
	assert_non_null(strstr(err, "model churn version 1: artifact "));
	assert_non_null(strstr(err, " is corrupt: its sha256 is "));
	assert_non_null(strstr(err, hex));	/* registered */
	assert_non_null(strstr(err, "f06e69119e3071ba"));	/* actual */

	assert_int_equal(unlink(path), 0);
	assert_int_equal(registry_artifact_path(f->r, "churn", 1, path,
	    sizeof path, err, sizeof err), -1);
	assert_non_null(strstr(err, "model churn version 1: artifact missing: "));
	assert_non_null(strstr(err, "No such file or directory"));
	assert_non_null(strstr(err, hex));

	assert_int_equal(registry_artifact_path(f->r, "churn", 9, path,
	    sizeof path, err, sizeof err), -1);
	assert_string_equal(err, "no version 9 of model \"churn\"");
}

struct evlog {
	char	lines[16][128];
	int	n;
};

static int
collect(void *arg, const struct registry_event *ev)
{
	struct evlog	*l = arg;

	assert_true(l->n < 16);
	snprintf(l->lines[l->n++], sizeof l->lines[0], "%lld %s %s %s %d",
	    (long long)ev->seq, ev->kind, ev->model,
	    ev->alias != NULL ? ev->alias : "-", ev->version);
	return 0;
}

static int
stop_at_second(void *arg, const struct registry_event *ev)
{
	int	*n = arg;

	(void)ev;
	return ++*n == 2 ? 42 : 0;
}

static void
test_events(void **state)
{
	struct fixture	*f = *state;
	struct evlog	 l = { .n = 0 };
	char		 err[512];
	int		 v, n = 0;

	create(f, "churn");
	create(f, "churn");
	promote(f, 1);
	promote(f, 2);
	rollback(f);
	assert_int_equal(registry_alias_delete(f->r, "churn", "champion", NULL,
	    err, sizeof err), 0);
	assert_int_equal(registry_events_since(f->r, 0, collect, &l, err,
	    sizeof err), 0);
	assert_int_equal(l.n, 6);
	assert_string_equal(l.lines[0], "1 version_created churn - 1");
	assert_string_equal(l.lines[1], "2 version_created churn - 2");
	assert_string_equal(l.lines[2], "3 alias_moved churn champion 1");
	assert_string_equal(l.lines[3], "4 alias_moved churn champion 2");
	assert_string_equal(l.lines[4], "5 rollback churn champion 1");
	assert_string_equal(l.lines[5], "6 alias_deleted churn champion 1");

	l.n = 0;
	assert_int_equal(registry_events_since(f->r, 4, collect, &l, err,
	    sizeof err), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.lines[0], "5 rollback churn champion 1");
	assert_int_equal(registry_events_since(f->r, 0, stop_at_second, &n,
	    err, sizeof err), 42);
	/* Failures log nothing. */
	assert_int_equal(registry_rollback(f->r, "churn", &v, err, sizeof err),
	    -1);
	l.n = 0;
	assert_int_equal(registry_events_since(f->r, 6, collect, &l, err,
	    sizeof err), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(registry_events_last_seq(f->r), 6);
}

static void
test_migrations_idempotent(void **state)
{
	struct fixture	*f = *state;
	struct registry	*r2;
	sqlite3		*db;
	sqlite3_stmt	*st;
	json_t		*j;
	char		 err[512], path[256];
	int		 v;

	create(f, "churn");
	registry_close(f->r);
	f->r = registry_open(f->dir, err, sizeof err);
	assert_non_null(f->r);
	r2 = registry_open(f->dir, err, sizeof err);	/* twice at once */
	assert_non_null(r2);
	assert_int_equal(create(f, "churn"), 2);
	j = registry_version_json(r2, "churn", 2, err, sizeof err);
	assert_non_null(j);	/* the other connection sees it */
	json_decref(j);
	registry_close(r2);

	snprintf(path, sizeof path, "%s/registry.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st,
	    NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	assert_int_equal(v, 1);
	/* A database from a newer mlopsd is refused, not damaged. */
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL,
	    NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	r2 = registry_open(f->dir, err, sizeof err);
	assert_null(r2);
	assert_string_equal(err, "registry database schema version 99 is newer "
	    "than this mlopsd knows (1)");
}

static void
test_open_bad_dir(void **state)
{
	char	err[512];

	(void)state;
	assert_null(registry_open("/proc/nope/registry", err, sizeof err));
	assert_non_null(strstr(err, "/proc/nope"));
}

static json_t *
reference(struct fixture *f, const char *csv, const char *features,
    const char *label, int bins, char *err, size_t errlen)
{
	char	 path[256];
	json_t	*fj = features != NULL ? json_loads(features, 0, NULL) : NULL,
		*ref;

	snprintf(path, sizeof path, "%s/train.csv", f->dir);
	testutil_write_file(path, csv);
	ref = registry_reference_from_csv(path, fj, label, bins, err, errlen);
	json_decref(fj);
	return ref;
}

static void
test_reference_numeric_and_categorical(void **state)
{
	struct fixture	*f = *state;
	char		*csv = NULL, *p, err[512];
	size_t		 cap = 1 << 16, i;
	json_t		*ref, *x, *c, *counts, *edges;
	int64_t		 sum = 0;

	csv = p = calloc(1, cap);
	p += sprintf(p, "user_id,x,city,label,sparse\r\n");
	/* x = 1..200; city: 150 distinct values, "paris" most frequent */
	for (i = 1; i <= 200; i++)
		p += sprintf(p, "u%zu,%zu,%s%zu%s,%d,%s\r\n", i, i,
		    i <= 50 ? "\"paris, fr" : "c", i <= 50 ? (size_t)0 : i,
		    i <= 50 ? "\"" : "",
		    (int)(i % 2), i % 4 == 0 ? "2.5" : "");
	ref = reference(f, csv, "[\"x\", \"city\", \"sparse\"]", NULL, 4,
	    err, sizeof err);
	free(csv);
	if (ref == NULL)
		fail_msg("%s", err);
	assert_int_equal(json_integer_value(json_object_get(ref, "rows")), 200);
	assert_int_equal(json_object_size(json_object_get(ref, "features")), 3);
	x = json_object_get(json_object_get(ref, "features"), "x");
	assert_string_equal(json_string_value(json_object_get(x, "type")),
	    "numeric");
	assert_int_equal(json_integer_value(json_object_get(x, "n")), 200);
	assert_int_equal(json_integer_value(json_object_get(x, "nulls")), 0);
	assert_true(json_real_value(json_object_get(x, "min")) == 1.0);
	assert_true(json_real_value(json_object_get(x, "max")) == 200.0);
	assert_true(fabs(json_real_value(json_object_get(x, "mean")) - 100.5) <
	    1e-9);
	/* population std of 1..200: sqrt((200^2 - 1) / 12) */
	assert_true(fabs(json_real_value(json_object_get(x, "std")) -
	    sqrt((200.0 * 200.0 - 1) / 12)) < 1e-9);
	edges = json_object_get(x, "edges");
	counts = json_object_get(x, "counts");
	assert_int_equal(json_array_size(edges), 5);
	assert_int_equal(json_array_size(counts), 4);
	for (i = 0; i < 4; i++) {
		/* equal-frequency bins */
		assert_true(json_integer_value(json_array_get(counts, i)) >= 49);
		assert_true(json_integer_value(json_array_get(counts, i)) <= 51);
		sum += json_integer_value(json_array_get(counts, i));
	}
	assert_int_equal(sum, 200);

	c = json_object_get(json_object_get(ref, "features"), "city");
	assert_string_equal(json_string_value(json_object_get(c, "type")),
	    "categorical");
	assert_int_equal(json_integer_value(json_object_get(c, "distinct")),
	    151);
	assert_int_equal(json_object_size(json_object_get(c, "values")), 100);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(c,
	    "values"), "paris, fr0")), 50);
	assert_int_equal(json_integer_value(json_object_get(c, "other")), 51);

	x = json_object_get(json_object_get(ref, "features"), "sparse");
	assert_int_equal(json_integer_value(json_object_get(x, "n")), 50);
	assert_int_equal(json_integer_value(json_object_get(x, "nulls")), 150);
	/* one value: one bin [2.5, 2.5] */
	assert_int_equal(json_array_size(json_object_get(x, "edges")), 2);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(x,
	    "counts"), 0)), 50);
	json_decref(ref);

	/* No feature list: every column but the label. */
	ref = reference(f, "a,label,b\n1,0,x\n2,1,\"y\"\"q\"\n", NULL,
	    "label", 0, err, sizeof err);
	assert_non_null(ref);
	assert_int_equal(json_object_size(json_object_get(ref, "features")), 2);
	assert_null(json_object_get(json_object_get(ref, "features"), "label"));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(
	    json_object_get(json_object_get(ref, "features"), "b"), "values"),
	    "y\"q")), 1);
	json_decref(ref);
}

static void
test_reference_errors(void **state)
{
	static const struct {
		const char	*csv;
		const char	*features;
		const char	*err;	/* after "DIR/train.csv" */
	} cases[] = {
		{ "", NULL, ":1: empty file (a header row is needed)" },
		{ "a,b\n1,2\n3\n", NULL, ":3: 1 fields, the header has 2" },
		{ "a,b\n1,2\n\"3,4\n", NULL, ":3:1: unterminated quoted field" },
		{ "a,b\n\"1\"x,2\n", NULL, ":2:4: text after closing quote" },
		{ "a,b\n1,2\n", "[\"c\"]", ":1: no column \"c\" in the header" },
	};
	struct fixture	*f = *state;
	char		 err[512], want[512];
	size_t		 i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_null(reference(f, cases[i].csv, cases[i].features, NULL,
		    10, err, sizeof err));
		snprintf(want, sizeof want, "%s/train.csv%s", f->dir,
		    cases[i].err);
		assert_string_equal(err, want);
	}
	assert_null(reference(f, "a\n", "{}", NULL, 10, err, sizeof err));
	assert_string_equal(err, "features must be an array of column names");
	assert_null(registry_reference_from_csv("/nonexistent.csv", NULL, NULL,
	    10, err, sizeof err));
	assert_string_equal(err, "/nonexistent.csv: No such file or directory");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_version_create_and_json,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_version_create_bad,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_version_concurrent_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aliases_and_history,
		    setup, teardown),
		cmocka_unit_test(test_alias_names),
		cmocka_unit_test_setup_teardown(test_rollback_chain,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_rollback_skips_deleted_versions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_version_delete,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_rollback_after_delete,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_artifact_corruption,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrations_idempotent,
		    setup, teardown),
		cmocka_unit_test(test_open_bad_dir),
		cmocka_unit_test_setup_teardown(
		    test_reference_numeric_and_categorical, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reference_errors,
		    setup, teardown),
	};

	log_set_level(LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
