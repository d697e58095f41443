/*
 * Unit tests of the configuration loader (common/config.c) and of the YAML
 * document tree under it (common/ydoc.c): defaults, good files, environment
 * overrides of every type, and every kind of bad file or variable with its
 * exact message, file:line:col prefix included.  Each test writes its YAML
 * into a fresh temporary directory, so no fixture files are needed.
 */
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/xmalloc.h"
#include "common/ydoc.h"

/* Every variable config reads; cleared around each test. */
static const char *const env_names[] = {
	"MLOPSD_DATA_DIR", "MLOPSD_REPO", "MLOPSD_LOG_LEVEL",
	"MLOPSD_KAFKA_BOOTSTRAP", "MLOPSD_KAFKA_GROUP",
	"MLOPSD_KAFKA_PROPERTIES", "MLOPSD_KAFKA_SCHEMA_REGISTRY",
	"MLOPSD_KAFKA_DEAD_LETTER_TOPIC", "MLOPSD_OFFLINE_POSTGRES",
	"MLOPSD_HTTP_LISTEN", "MLOPSD_HTTP_THREADS",
	"MLOPSD_HTTP_ADMIN_TOKEN_FILE", "MLOPSD_HTTP_REQUEST_TIMEOUT",
	"MLOPSD_HTTP_MAX_BODY", "MLOPSD_HTTP_MAX_ENTITIES",
	"MLOPSD_HTTP_THEADS", "MLOPSD_KAFKA_PROPERTIES_ACKS",
};

static char	tmpdir[PATH_MAX];
static char	cfgpath[PATH_MAX + 32];

static void
clear_env(void)
{
	for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
		unsetenv(env_names[i]);
}

static int
setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/mlopsd-test-config.XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(cfgpath, sizeof cfgpath, "%s/mlopsd.yaml", tmpdir);
	clear_env();
	return 0;
}

static int
teardown(void **state)
{
	char	cmd[PATH_MAX + 16];

	clear_env();
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Write text to a file in the test's directory; returns its path (static). */
static const char *
write_file(const char *name, const char *text)
{
	static char	 path[PATH_MAX + 64];
	FILE		*f;

	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
	return path;
}

static struct config *
load_ok(const char *yaml)
{
	struct config	*cfg;
	char		 err[1024] = "";

	write_file("mlopsd.yaml", yaml);
	if ((cfg = config_load(cfgpath, err, sizeof err)) == NULL)
		fail_msg("load failed: %s", err);
	assert_string_equal(cfg->path, cfgpath);
	return cfg;
}

/* Load yaml and expect "<path>:<msg>" (msg starts with "line:col: "). */
static void
load_fails(const char *yaml, const char *msg)
{
	char	err[1024] = "", want[PATH_MAX + 2048];

	write_file("mlopsd.yaml", yaml);
	assert_null(config_load(cfgpath, err, sizeof err));
	snprintf(want, sizeof want, "%s:%s", cfgpath, msg);
	if (strcmp(err, want) != 0)
		fail_msg("for YAML:\n%s\ngot:  %s\nwant: %s", yaml, err, want);
}

static void
assert_defaults(const struct config *cfg)
{
	assert_string_equal(cfg->data_dir, "/var/lib/mlopsd");
	assert_string_equal(cfg->repo, "/srv/ml-repo");
	assert_int_equal(cfg->log_level, LOG_INFO);
	assert_string_equal(cfg->kafka.bootstrap, "127.0.0.1:9092");
	assert_string_equal(cfg->kafka.group, "mlopsd");
	assert_int_equal(cfg->kafka.nproperties, 0);
	assert_null(cfg->kafka.schema_registry);
	assert_string_equal(cfg->kafka.dead_letter_topic, "mlopsd.dead-letter");
	assert_null(cfg->offline.postgres);
	assert_string_equal(cfg->http.listen, "127.0.0.1:8700");
	assert_int_equal(cfg->http.threads, 2);
	assert_null(cfg->http.admin_token_file);
	assert_null(cfg->http.admin_token);
	assert_int_equal(cfg->http.request_timeout_ms, 30000);
	assert_int_equal(cfg->http.max_body_bytes, 1024 * 1024);
	assert_int_equal(cfg->http.max_entities, 1000);
}

static void
test_defaults(void **state)
{
	struct config	*cfg;
	char		 err[256];

	assert_non_null(cfg = config_defaults(err, sizeof err));
	assert_null(cfg->path);
	assert_defaults(cfg);
	config_free(cfg);
	config_free(NULL);
}

static void
test_empty_file(void **state)
{
	static const char *const empties[] = {
		"", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n",
	};
	struct config	*cfg;

	for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
		cfg = load_ok(empties[i]);
		assert_defaults(cfg);
		config_free(cfg);
	}
}

static void
test_minimal_file(void **state)
{
	struct config	*cfg = load_ok("data_dir: /tmp/mlopsd\n"
	    "http:\n"		/* an empty section is all defaults */
	    "kafka:\n"
	    "  bootstrap: kafka:9092\n");

	assert_string_equal(cfg->data_dir, "/tmp/mlopsd");
	assert_string_equal(cfg->kafka.bootstrap, "kafka:9092");
	assert_string_equal(cfg->repo, "/srv/ml-repo");
	assert_string_equal(cfg->http.listen, "127.0.0.1:8700");
	assert_int_equal(cfg->http.threads, 2);
	config_free(cfg);
}

static void
test_full_file(void **state)
{
	struct config	*cfg;
	char		 yaml[PATH_MAX + 2048], tokpath[PATH_MAX + 64];

	snprintf(tokpath, sizeof tokpath, "%s",
	    write_file("token", "s3cret token\n\n"));
	snprintf(yaml, sizeof yaml,
	    "# the SPEC §2 example, every key set\n"
	    "data_dir: /data/mlopsd\n"
	    "repo: /srv/other-repo\n"
	    "log_level: debug\n"
	    "kafka:\n"
	    "  bootstrap: broker1:9092,broker2:9092\n"
	    "  group: feature-store\n"
	    "  properties:\n"
	    "    security.protocol: SASL_SSL\n"
	    "    sasl.mechanisms: PLAIN\n"
	    "    queued.max.messages.kbytes: 65536\n"
	    "    enable.ssl.certificate.verification: false\n"
	    "  schema_registry: https://registry.example.com:8081\n"
	    "  dead_letter_topic: dlq\n"
	    "offline:\n"
	    "  postgres: \"host=/tmp dbname=features\"\n"
	    "http:\n"
	    "  listen: \"[::1]:9000\"\n"
	    "  threads: 8\n"
	    "  admin_token_file: %s\n"
	    "  request_timeout: 2m\n"
	    "  max_body: 512KiB\n"
	    "  max_entities: 50\n", tokpath);
	cfg = load_ok(yaml);
	assert_string_equal(cfg->data_dir, "/data/mlopsd");
	assert_string_equal(cfg->repo, "/srv/other-repo");
	assert_int_equal(cfg->log_level, LOG_DEBUG);
	assert_string_equal(cfg->kafka.bootstrap, "broker1:9092,broker2:9092");
	assert_string_equal(cfg->kafka.group, "feature-store");
	assert_int_equal(cfg->kafka.nproperties, 4);
	assert_string_equal(cfg->kafka.properties[0].key, "security.protocol");
	assert_string_equal(cfg->kafka.properties[0].value, "SASL_SSL");
	assert_string_equal(cfg->kafka.properties[1].key, "sasl.mechanisms");
	assert_string_equal(cfg->kafka.properties[1].value, "PLAIN");
	assert_string_equal(cfg->kafka.properties[2].value, "65536");
	assert_string_equal(cfg->kafka.properties[3].value, "false");
	assert_string_equal(cfg->kafka.schema_registry,
	    "https://registry.example.com:8081");
	assert_string_equal(cfg->kafka.dead_letter_topic, "dlq");
	assert_string_equal(cfg->offline.postgres, "host=/tmp dbname=features");
	assert_string_equal(cfg->http.listen, "[::1]:9000");
	assert_int_equal(cfg->http.threads, 8);
	assert_string_equal(cfg->http.admin_token_file, tokpath);
	assert_string_equal(cfg->http.admin_token, "s3cret token");
	assert_int_equal(cfg->http.request_timeout_ms, 120000);
	assert_int_equal(cfg->http.max_body_bytes, 512 * 1024);
	assert_int_equal(cfg->http.max_entities, 50);
	config_free(cfg);
}

/* The explicit nulls of the SPEC example and other spellings of values. */
static void
test_value_spellings(void **state)
{
	struct config	*cfg = load_ok("kafka:\n"
	    "  properties: {}\n"
	    "  schema_registry: null\n"
	    "offline:\n"
	    "  postgres: ~\n"
	    "http:\n"
	    "  admin_token_file:\n"
	    "  threads: 0x10\n"
	    "  max_body: 2048\n"
	    "  request_timeout: 500ms\n"
	    "log_level: 'warn'\n"
	    "repo: 123\n");

	assert_int_equal(cfg->kafka.nproperties, 0);
	assert_null(cfg->kafka.schema_registry);
	assert_null(cfg->offline.postgres);
	assert_null(cfg->http.admin_token_file);
	assert_int_equal(cfg->http.threads, 16);
	assert_int_equal(cfg->http.max_body_bytes, 2048);
	assert_int_equal(cfg->http.request_timeout_ms, 500);
	assert_int_equal(cfg->log_level, LOG_WARN);
	{
		/* A number is read as text, a relative path (the file's). */
		char *want = xstrfmt("%s/123", tmpdir);

		assert_string_equal(cfg->repo, want);
		free(want);
	}
	config_free(cfg);

	cfg = load_ok("http:\n  max_body: 1 MB\n");
	assert_int_equal(cfg->http.max_body_bytes, 1000000);
	config_free(cfg);
	cfg = load_ok("http:\n  max_body: 1GiB\n  request_timeout: 1d\n");
	assert_int_equal(cfg->http.max_body_bytes, 1024LL * 1024 * 1024);
	assert_int_equal(cfg->http.request_timeout_ms, 86400000);
	config_free(cfg);
}

static void
test_env_overrides(void **state)
{
	struct config	*cfg;
	char		 err[1024];
	const char	*tok = write_file("tok", "abc\n");

	setenv("MLOPSD_DATA_DIR", "/env/data", 1);
	setenv("MLOPSD_REPO", "/env/repo", 1);
	setenv("MLOPSD_LOG_LEVEL", "error", 1);
	setenv("MLOPSD_KAFKA_BOOTSTRAP", "envbroker:1", 1);
	setenv("MLOPSD_KAFKA_GROUP", "g2", 1);
	setenv("MLOPSD_KAFKA_PROPERTIES",
	    "security.protocol=SSL, client.id = x=y ,acks=all", 1);
	setenv("MLOPSD_KAFKA_SCHEMA_REGISTRY", "http://reg:8081", 1);
	setenv("MLOPSD_KAFKA_DEAD_LETTER_TOPIC", "dl2", 1);
	setenv("MLOPSD_OFFLINE_POSTGRES", "postgresql://u@h/db", 1);
	setenv("MLOPSD_HTTP_LISTEN", "0.0.0.0:0", 1);
	setenv("MLOPSD_HTTP_THREADS", "64", 1);
	setenv("MLOPSD_HTTP_ADMIN_TOKEN_FILE", tok, 1);
	setenv("MLOPSD_HTTP_REQUEST_TIMEOUT", "1h", 1);
	setenv("MLOPSD_HTTP_MAX_BODY", "4096", 1);
	setenv("MLOPSD_HTTP_MAX_ENTITIES", "1", 1);

	/* the environment wins over the file */
	cfg = load_ok("data_dir: /file\nhttp:\n  threads: 3\n"
	    "kafka:\n  properties: {a: b}\n");
	assert_string_equal(cfg->data_dir, "/env/data");
	assert_string_equal(cfg->repo, "/env/repo");
	assert_int_equal(cfg->log_level, LOG_ERROR);
	assert_string_equal(cfg->kafka.bootstrap, "envbroker:1");
	assert_string_equal(cfg->kafka.group, "g2");
	assert_int_equal(cfg->kafka.nproperties, 3);
	assert_string_equal(cfg->kafka.properties[0].key, "security.protocol");
	assert_string_equal(cfg->kafka.properties[0].value, "SSL");
	assert_string_equal(cfg->kafka.properties[1].key, "client.id");
	assert_string_equal(cfg->kafka.properties[1].value, "x=y");
	assert_string_equal(cfg->kafka.properties[2].key, "acks");
	assert_string_equal(cfg->kafka.properties[2].value, "all");
	assert_string_equal(cfg->kafka.schema_registry, "http://reg:8081");
	assert_string_equal(cfg->kafka.dead_letter_topic, "dl2");
	assert_string_equal(cfg->offline.postgres, "postgresql://u@h/db");
	assert_string_equal(cfg->http.listen, "0.0.0.0:0");
	assert_int_equal(cfg->http.threads, 64);
	assert_string_equal(cfg->http.admin_token, "abc");
	assert_int_equal(cfg->http.request_timeout_ms, 3600000);
	assert_int_equal(cfg->http.max_body_bytes, 4096);
	assert_int_equal(cfg->http.max_entities, 1);
	config_free(cfg);

	/* and over the defaults */
	assert_non_null(cfg = config_defaults(err, sizeof err));
	assert_string_equal(cfg->data_dir, "/env/data");
	assert_int_equal(cfg->http.threads, 64);
	config_free(cfg);
}

/* For a nullable key an empty value or "null" clears what the file set. */
static void
test_env_null(void **state)
{
	static const char *const nulls[] = { "", "null", "~" };
	struct config	*cfg;

	for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
		setenv("MLOPSD_OFFLINE_POSTGRES", nulls[i], 1);
		setenv("MLOPSD_KAFKA_SCHEMA_REGISTRY", nulls[i], 1);
		setenv("MLOPSD_HTTP_ADMIN_TOKEN_FILE", nulls[i], 1);
		cfg = load_ok("offline:\n  postgres: dbname=x\n"
		    "kafka:\n  schema_registry: http://r\n"
		    "http:\n  admin_token_file: /nonexistent\n");
		assert_null(cfg->offline.postgres);
		assert_null(cfg->kafka.schema_registry);
		assert_null(cfg->http.admin_token_file);
		assert_null(cfg->http.admin_token);
		config_free(cfg);
	}
	/* an empty map clears the file's properties */
	setenv("MLOPSD_KAFKA_PROPERTIES", "", 1);
	cfg = load_ok("kafka:\n  properties: {a: b}\n");
	assert_int_equal(cfg->kafka.nproperties, 0);
	config_free(cfg);
}

/* Checks run after the environment, so a variable can repair the file. */
/* Relative paths in the file are relative to the file, not to the cwd. */
static void
test_relative_paths(void **state)
{
	struct config	*cfg;
	char		*want, *tok;

	(void)state;
	clear_env();
	write_file("token", "s3cret\n");
	cfg = load_ok("data_dir: rel/data\nrepo: /abs/repo\n"
	    "http:\n  admin_token_file: token\n");
	want = xstrfmt("%s/rel/data", tmpdir);
	assert_string_equal(cfg->data_dir, want);
	assert_string_equal(cfg->repo, "/abs/repo");
	tok = xstrfmt("%s/token", tmpdir);
	assert_string_equal(cfg->http.admin_token_file, tok);
	assert_string_equal(cfg->http.admin_token, "s3cret");
	config_free(cfg);
	free(want);
	free(tok);
	/* The environment's are the shell's. */
	setenv("MLOPSD_DATA_DIR", "envrel", 1);
	cfg = load_ok("data_dir: rel/data\n");
	assert_string_equal(cfg->data_dir, "envrel");
	config_free(cfg);
	clear_env();
}

static void
test_env_repairs_file(void **state)
{
	struct config	*cfg;

	setenv("MLOPSD_HTTP_LISTEN", "127.0.0.1:1", 1);
	setenv("MLOPSD_HTTP_ADMIN_TOKEN_FILE", "", 1);
	cfg = load_ok("http:\n  listen: bad\n  admin_token_file: /nonexistent\n");
	assert_string_equal(cfg->http.listen, "127.0.0.1:1");
	assert_null(cfg->http.admin_token);
	config_free(cfg);
}

static void
test_env_errors(void **state)
{
	static const struct {
		const char	*name;
		const char	*value;
		const char	*err;
	} cases[] = {
		{ "MLOPSD_HTTP_THREADS", "x",
		  "MLOPSD_HTTP_THREADS: expected an integer 1..64, got 'x'" },
		{ "MLOPSD_HTTP_THREADS", "65",
		  "MLOPSD_HTTP_THREADS: expected an integer 1..64, got '65'" },
		{ "MLOPSD_HTTP_THREADS", "",
		  "MLOPSD_HTTP_THREADS: expected an integer 1..64, got ''" },
		{ "MLOPSD_HTTP_MAX_ENTITIES", "2.5",
		  "MLOPSD_HTTP_MAX_ENTITIES: expected an integer 1..1000000, "
		  "got '2.5'" },
		{ "MLOPSD_DATA_DIR", "",
		  "MLOPSD_DATA_DIR: expected a non-empty string, got ''" },
		{ "MLOPSD_REPO", "null",
		  "MLOPSD_REPO: expected a non-empty string, got 'null'" },
		{ "MLOPSD_LOG_LEVEL", "loud",
		  "MLOPSD_LOG_LEVEL: expected one of error|warn|info|debug, "
		  "got 'loud'" },
		{ "MLOPSD_HTTP_REQUEST_TIMEOUT", "30",
		  "MLOPSD_HTTP_REQUEST_TIMEOUT: expected a duration (e.g. "
		  "500ms, 30s, 5m, 1h), got '30': duration needs a unit "
		  "(ms, s, m, h, d, w)" },
		{ "MLOPSD_HTTP_REQUEST_TIMEOUT", "0s",
		  "MLOPSD_HTTP_REQUEST_TIMEOUT: expected a duration 1ms..1d, "
		  "got '0s'" },
		{ "MLOPSD_HTTP_MAX_BODY", "1 XB",
		  "MLOPSD_HTTP_MAX_BODY: expected a size (e.g. 512KiB, 1MiB, "
		  "or bytes), got '1 XB': unknown size unit (use B, KiB, MiB, "
		  "GiB, KB, MB, GB)" },
		{ "MLOPSD_HTTP_MAX_BODY", "2GiB",
		  "MLOPSD_HTTP_MAX_BODY: expected a size 1..1GiB, got '2GiB'" },
		{ "MLOPSD_KAFKA_PROPERTIES", "acks",
		  "MLOPSD_KAFKA_PROPERTIES: expected k=v[,k=v...], got 'acks'" },
		{ "MLOPSD_KAFKA_PROPERTIES", "a=1,=2",
		  "MLOPSD_KAFKA_PROPERTIES: expected k=v[,k=v...], "
		  "got 'a=1,=2'" },
		{ "MLOPSD_HTTP_LISTEN", "8700",
		  "MLOPSD_HTTP_LISTEN: expected host:port (e.g. 127.0.0.1:8700 "
		  "or [::1]:8700), got '8700'" },
		{ "MLOPSD_KAFKA_SCHEMA_REGISTRY", "registry:8081",
		  "MLOPSD_KAFKA_SCHEMA_REGISTRY: expected null or an http:// "
		  "or https:// URL, got 'registry:8081'" },
		{ "MLOPSD_HTTP_ADMIN_TOKEN_FILE", "/nonexistent/token",
		  "MLOPSD_HTTP_ADMIN_TOKEN_FILE: cannot read "
		  "'/nonexistent/token': No such file or directory" },
		/* A typo in one of our sections would change nothing. */
		{ "MLOPSD_HTTP_THEADS", "4",
		  "MLOPSD_HTTP_THEADS: no such setting (http.theads is not a "
		  "key of mlopsd.yaml); did you mean MLOPSD_HTTP_THREADS?" },
		{ "MLOPSD_KAFKA_PROPERTIES_ACKS", "all",
		  "MLOPSD_KAFKA_PROPERTIES_ACKS: no such setting "
		  "(kafka.properties_acks is not a key of mlopsd.yaml)" },
	};
	char	err[1024];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		clear_env();
		setenv(cases[i].name, cases[i].value, 1);
		assert_null(config_defaults(err, sizeof err));
		if (strcmp(err, cases[i].err) != 0)
			fail_msg("%s=%s\ngot:  %s\nwant: %s", cases[i].name,
			    cases[i].value, err, cases[i].err);
		/* the variable is blamed even when a file was loaded */
		write_file("mlopsd.yaml", "http:\n  threads: 4\n");
		assert_null(config_load(cfgpath, err, sizeof err));
		assert_string_equal(err, cases[i].err);
	}
}

static void
test_bad_files(void **state)
{
	static const struct {
		const char	*yaml;
		const char	*err;	/* after "<path>:" */
	} cases[] = {
		/* unknown keys, with a suggestion when one is close */
		{ "data_dir: /x\nfoo: 1\n", "2:1: unknown key 'foo'" },
		{ "htpp:\n  threads: 2\n",
		  "1:1: unknown key 'htpp'; did you mean 'http'?" },
		{ "datadir: /x\n",
		  "1:1: unknown key 'datadir'; did you mean 'data_dir'?" },
		{ "http:\n  threads: 2\n  lsiten: x\n",
		  "3:3: unknown key 'lsiten' in section 'http'; did you mean "
		  "'listen'?" },
		{ "kafka:\n  zookeeper: x\n",
		  "2:3: unknown key 'zookeeper' in section 'kafka'" },
		{ "offline:\n  postgress: x\n",
		  "2:3: unknown key 'postgress' in section 'offline'; did you "
		  "mean 'postgres'?" },
		/* wrong types, one per type */
		{ "http:\n  threads: two\n",
		  "2:12: http.threads: expected an integer, got a string "
		  "'two'" },
		{ "http:\n  threads: \"2\"\n",
		  "2:12: http.threads: expected an integer, got a string '2'" },
		{ "http:\n  threads: 2.5\n",
		  "2:12: http.threads: expected an integer, got a number 2.5" },
		{ "http:\n  threads: [2]\n",
		  "2:12: http.threads: expected an integer, got a sequence" },
		{ "http:\n  threads:\n",
		  "2:11: http.threads: expected an integer, got null" },
		{ "data_dir: {a: b}\n",
		  "1:11: data_dir: expected a non-empty string, got a mapping" },
		{ "data_dir: \"\"\n",
		  "1:11: data_dir: expected a non-empty string, got a string "
		  "''" },
		{ "repo: null\n",
		  "1:7: repo: expected a non-empty string, got null" },
		{ "offline:\n  postgres: [a]\n",
		  "2:13: offline.postgres: expected a string or null, got a "
		  "sequence" },
		{ "http:\n  request_timeout: [1s]\n",
		  "2:20: http.request_timeout: expected a duration (e.g. 500ms, "
		  "30s, 5m, 1h), got a sequence" },
		{ "http:\n  max_body: {}\n",
		  "2:13: http.max_body: expected a size (e.g. 512KiB, 1MiB, or "
		  "bytes), got a mapping" },
		{ "log_level: 3\n",
		  "1:12: log_level: expected one of error|warn|info|debug, got "
		  "an integer 3" },
		{ "kafka:\n  properties: [a, b]\n",
		  "2:15: kafka.properties: expected a mapping of names to "
		  "values, got a sequence" },
		{ "kafka:\n  properties:\n    sasl:\n      mechanism: PLAIN\n",
		  "4:7: kafka.properties.sasl: expected a string, number or "
		  "boolean, got a mapping" },
		{ "kafka:\n  properties:\n    acks:\n",
		  "3:10: kafka.properties.acks: expected a string, number or "
		  "boolean, got null" },
		/* out of range */
		{ "http:\n  threads: 0\n",
		  "2:12: http.threads: expected an integer 1..64, got 0" },
		{ "http:\n  threads: 65\n",
		  "2:12: http.threads: expected an integer 1..64, got 65" },
		{ "http:\n  threads: -1\n",
		  "2:12: http.threads: expected an integer 1..64, got -1" },
		{ "http:\n  max_entities: 99999999999\n",
		  "2:17: http.max_entities: expected an integer 1..1000000, "
		  "got 99999999999" },
		{ "http:\n  request_timeout: 2d\n",
		  "2:20: http.request_timeout: expected a duration 1ms..1d, "
		  "got 2d" },
		{ "http:\n  max_body: 0\n",
		  "2:13: http.max_body: expected a size 1..1GiB, got 0" },
		/* bad durations and sizes */
		{ "http:\n  request_timeout: 10x\n",
		  "2:20: http.request_timeout: expected a duration (e.g. 500ms, "
		  "30s, 5m, 1h), got a string '10x': unknown duration unit "
		  "(use ms, s, m, h, d, w)" },
		{ "http:\n  request_timeout: 30\n",
		  "2:20: http.request_timeout: expected a duration (e.g. 500ms, "
		  "30s, 5m, 1h), got an integer 30: duration needs a unit (ms, "
		  "s, m, h, d, w)" },
		{ "http:\n  max_body: 1XB\n",
		  "2:13: http.max_body: expected a size (e.g. 512KiB, 1MiB, or "
		  "bytes), got a string '1XB': unknown size unit (use B, KiB, "
		  "MiB, GiB, KB, MB, GB)" },
		{ "http:\n  max_body: -1MiB\n",
		  "2:13: http.max_body: expected a size (e.g. 512KiB, 1MiB, or "
		  "bytes), got a string '-1MiB': a size starts with a number" },
		{ "http:\n  max_body: 99999999999999GiB\n",
		  "2:13: http.max_body: expected a size (e.g. 512KiB, 1MiB, or "
		  "bytes), got a string '99999999999999GiB': size is too "
		  "large" },
		/* bad values */
		{ "http:\n  listen: 8700\n",
		  "2:11: http.listen: expected host:port (e.g. 127.0.0.1:8700 "
		  "or [::1]:8700), got '8700'" },
		{ "http:\n  listen: \"::1:8700\"\n",
		  "2:11: http.listen: expected host:port (e.g. 127.0.0.1:8700 "
		  "or [::1]:8700), got '::1:8700'" },
		{ "http:\n  listen: localhost:http\n",
		  "2:11: http.listen: expected host:port (e.g. 127.0.0.1:8700 "
		  "or [::1]:8700), got 'localhost:http'" },
		/* Looked up as the server will, not first found at bind. */
		{ "http:\n  listen: 999.1.1.1:80\n",
		  "2:11: http.listen: cannot resolve host '999.1.1.1': Name or "
		  "service not known" },
		{ "log_level: verbose\n",
		  "1:12: log_level: expected one of error|warn|info|debug, got "
		  "a string 'verbose'" },
		{ "kafka:\n  schema_registry: ftp://r:8081\n",
		  "2:20: kafka.schema_registry: expected null or an http:// or "
		  "https:// URL, got 'ftp://r:8081'" },
		{ "kafka:\n  schema_registry: http://\n",
		  "2:20: kafka.schema_registry: expected null or an http:// or "
		  "https:// URL, got 'http://'" },
		{ "kafka:\n  bootstrap: \"\"\n",
		  "2:14: kafka.bootstrap: expected a non-empty string, got a "
		  "string ''" },
		/* structure */
		{ "- data_dir\n",
		  "1:1: expected a mapping of settings at the top level, got a "
		  "sequence" },
		{ "data_dir\n",
		  "1:1: expected a mapping of settings at the top level, got a "
		  "string 'data_dir'" },
		{ "http: 127.0.0.1:8700\n",
		  "1:7: http: expected a mapping of settings, got a string "
		  "'127.0.0.1:8700'" },
		{ "kafka: [a]\n",
		  "1:8: kafka: expected a mapping of settings, got a sequence" },
		{ "http:\n  threads: 2\n  threads: 3\n",
		  "3:3: duplicate key 'threads' (first given at line 2, "
		  "column 3)" },
		{ "http: {}\ndata_dir: /a\nhttp: {}\n",
		  "3:1: duplicate key 'http' (first given at line 1, "
		  "column 1)" },
		/* YAML syntax, reported by libyaml with its position */
		{ "http:\n  threads: [2\n",
		  "3:1: did not find expected ',' or ']' while parsing a flow "
		  "sequence" },
		{ "http:\n  threads: 2\n listen: x\n",
		  "3:2: did not find expected key while parsing a block "
		  "mapping" },
		{ "data_dir: \"/x\n",
		  "2:1: found unexpected end of stream while scanning a quoted "
		  "scalar" },
		{ "http:\n\tthreads: 2\n",
		  "2:1: tab character in indentation (YAML indents with "
		  "spaces only)" },
		{ "http:\n  threads: 2\n  \tlisten: x\n",
		  "3:3: tab character in indentation (YAML indents with "
		  "spaces only)" },
		{ "data_dir: \"é\"\t\tx\n",
		  "1:16: did not find expected key while parsing a block "
		  "mapping" },
		/* what ydoc refuses */
		{ "data_dir: /a\n---\ndata_dir: /b\n",
		  "2:1: more than one YAML document ('---') in one file" },
		{ "defaults: &d {threads: 4}\nhttp:\n  <<: *d\n",
		  "3:3: merge keys ('<<') are not supported; write the keys "
		  "out" },
		{ "? [a, b]\n: 1\n",
		  "1:3: mapping keys must be scalars, not a sequence" },
		{ "http: *h\n",
		  "1:7: alias '*h' names no earlier anchor '&h'" },
		{ "a: &a [*a]\n",
		  "1:8: alias '*a' refers to a node that contains it" },
		{ "http:\n  threads: !!int 2\n",
		  "2:12: unsupported tag 'tag:yaml.org,2002:int' (only !!str "
		  "is allowed)" },
		/* a "billion laughs": 9^8 nodes from a few lines */
		{ "a: &a [x, x, x, x, x, x, x, x, x]\n"
		  "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
		  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
		  "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
		  "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
		  "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
		  "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
		  "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
		  "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
		  "7:12: document expands to more than 1048576 nodes through "
		  "aliases" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		load_fails(cases[i].yaml, cases[i].err);
}

static void
test_token_file(void **state)
{
	struct config	*cfg;
	char		 yaml[PATH_MAX + 64], want[2 * PATH_MAX];
	const char	*p;

	/* trailing whitespace goes, inner whitespace stays */
	p = write_file("tok", "Bearer-ish token\t \r\n");
	snprintf(yaml, sizeof yaml, "http:\n  admin_token_file: %s\n", p);
	cfg = load_ok(yaml);
	assert_string_equal(cfg->http.admin_token, "Bearer-ish token");
	config_free(cfg);

	p = write_file("empty", " \n\n");
	snprintf(yaml, sizeof yaml, "http:\n  admin_token_file: %s\n", p);
	snprintf(want, sizeof want, "2:21: http.admin_token_file: '%s' is "
	    "empty", p);
	load_fails(yaml, want);

	/* unreadable: a directory opens but cannot be read (even as root) */
	snprintf(yaml, sizeof yaml, "http:\n  admin_token_file: %s\n", tmpdir);
	snprintf(want, sizeof want, "2:21: http.admin_token_file: cannot read "
	    "'%s': Is a directory", tmpdir);
	load_fails(yaml, want);

	snprintf(yaml, sizeof yaml, "http:\n  admin_token_file: %s/none\n",
	    tmpdir);
	snprintf(want, sizeof want, "2:21: http.admin_token_file: cannot read "
	    "'%s/none': No such file or directory", tmpdir);
	load_fails(yaml, want);
}

static void
test_missing_file(void **state)
{
	char	err[1024], want[PATH_MAX + 128];

	snprintf(want, sizeof want, "%s/nope.yaml: cannot open: No such file "
	    "or directory", tmpdir);
	snprintf(cfgpath, sizeof cfgpath, "%s/nope.yaml", tmpdir);
	assert_null(config_load(cfgpath, err, sizeof err));
	assert_string_equal(err, want);
	snprintf(cfgpath, sizeof cfgpath, "%s/mlopsd.yaml", tmpdir);

	snprintf(want, sizeof want, "%s: cannot read: Is a directory", tmpdir);
	assert_null(config_load(tmpdir, err, sizeof err));
	assert_string_equal(err, want);
}

/* ydoc on its own: locations, typed reads, aliases and lookups. */
static void
test_ydoc_tree(void **state)
{
	static const char text[] =
	    "name: x\n"
	    "list:\n"
	    "  - &item {a: 1}\n"
	    "  - *item\n"
	    "quoted: \"5\"\n"
	    "nested: {k: [1, two]}\n";
	struct ydoc		*doc;
	struct ydoc_node	*root, *list, *n;
	char			 err[256];

	assert_non_null(doc = ydoc_load_string("t.yaml", text, strlen(text),
	    err, sizeof err));
	assert_string_equal(ydoc_name(doc), "t.yaml");
	root = ydoc_root(doc);
	assert_int_equal(root->type, YDOC_MAP);
	assert_int_equal(root->n, 4);
	assert_int_equal(root->line, 1);
	assert_int_equal(root->col, 1);
	assert_string_equal(ydoc_get_str(ydoc_map_get(root, "name")), "x");
	assert_null(ydoc_map_get(root, "missing"));
	assert_null(ydoc_map_get(ydoc_map_get(root, "name"), "x"));
	list = ydoc_map_get(root, "list");
	assert_int_equal(list->type, YDOC_SEQ);
	assert_int_equal(list->n, 2);
	assert_int_equal(list->items[0]->line, 3);
	assert_int_equal(list->items[0]->col, 5);	/* the anchor */
	/* an alias shares the anchored node */
	assert_ptr_equal(list->items[0], list->items[1]);
	n = ydoc_map_get(root, "quoted");
	assert_string_equal(ydoc_type_name(n), "string");
	assert_int_equal(n->plain, 0);
	assert_string_equal(ydoc_type_name(ydoc_map_get(root, "nested")),
	    "mapping");
	n = ydoc_map_get(ydoc_map_get(root, "nested"), "k");
	assert_string_equal(ydoc_type_name(n), "sequence");
	assert_null(ydoc_get_str(n));
	assert_int_equal(n->items[1]->line, 6);
	assert_int_equal(n->items[1]->col, 17);

	assert_int_equal(ydoc_err(doc, n, err, sizeof err, "bad %s", "thing"),
	    -1);
	assert_string_equal(err, "t.yaml:6:13: bad thing");
	assert_int_equal(ydoc_err(doc, NULL, err, sizeof err, "whole file"),
	    -1);
	assert_string_equal(err, "t.yaml: whole file");
	ydoc_free(doc);

	assert_non_null(doc = ydoc_load_string("e.yaml", "", 0, err,
	    sizeof err));
	assert_null(ydoc_root(doc));
	ydoc_free(doc);
	ydoc_free(NULL);
}

static struct ydoc_node *
scalar(struct ydoc **doc, const char *text)
{
	char	err[256];

	if (*doc != NULL)
		ydoc_free(*doc);
	if ((*doc = ydoc_load_string("s", text, strlen(text), err,
	    sizeof err)) == NULL)
		fail_msg("%s", err);
	return ydoc_root(*doc);
}

static void
test_ydoc_scalars(void **state)
{
	static const struct {
		const char	*text;
		const char	*type;
	} types[] = {
		{ "~", "null" }, { "null", "null" }, { "NULL", "null" },
		{ "x: ", "mapping" }, { "''", "string" }, { "'null'", "string" },
		{ "true", "boolean" }, { "No", "boolean" }, { "OFF", "boolean" },
		{ "\"true\"", "string" }, { "12", "integer" },
		{ "-12", "integer" }, { "+7", "integer" }, { "0x1F", "integer" },
		{ "0o17", "integer" }, { "0x", "string" }, { "0x0x1", "string" },
		{ "1_000", "string" }, { "--1", "string" }, { "1.5", "number" },
		{ "-2e3", "number" }, { ".inf", "number" }, { ".NaN", "number" },
		{ "inf", "string" }, { "1e", "string" }, { ".", "string" },
		{ "!!str 12", "string" }, { "12abc", "string" },
		{ "99999999999999999999", "number" },
	};
	struct ydoc		*doc = NULL;
	struct ydoc_node	*n;
	int64_t			 i;
	double			 d;
	int			 b;

	for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
		n = scalar(&doc, types[k].text);
		if (strcmp(ydoc_type_name(n), types[k].type) != 0)
			fail_msg("'%s' is a %s, want %s", types[k].text,
			    ydoc_type_name(n), types[k].type);
	}
	n = scalar(&doc, "0x1F");
	assert_int_equal(ydoc_get_int(n, &i), 0);
	assert_int_equal(i, 31);
	n = scalar(&doc, "0o17");
	assert_int_equal(ydoc_get_int(n, &i), 0);
	assert_int_equal(i, 15);
	n = scalar(&doc, "-9223372036854775808");
	assert_int_equal(ydoc_get_int(n, &i), 0);
	assert_true(i == INT64_MIN);
	n = scalar(&doc, "\"5\"");
	assert_int_equal(ydoc_get_int(n, &i), -1);
	assert_int_equal(ydoc_get_double(n, &d), -1);
	assert_int_equal(ydoc_get_bool(n, &b), -1);
	assert_string_equal(ydoc_get_str(n), "5");
	n = scalar(&doc, "7");
	assert_int_equal(ydoc_get_double(n, &d), 0);
	assert_true(d == 7.0);
	n = scalar(&doc, "-2.5e1");
	assert_int_equal(ydoc_get_double(n, &d), 0);
	assert_true(d == -25.0);
	n = scalar(&doc, "yes");
	assert_int_equal(ydoc_get_bool(n, &b), 0);
	assert_int_equal(b, 1);
	n = scalar(&doc, "off");
	assert_int_equal(ydoc_get_bool(n, &b), 0);
	assert_int_equal(b, 0);
	n = scalar(&doc, "null");
	assert_true(ydoc_is_null(n));
	assert_null(ydoc_get_str(n));
	n = scalar(&doc, "'null'");
	assert_false(ydoc_is_null(n));
	assert_string_equal(ydoc_get_str(n), "null");
	ydoc_free(doc);
}

/* Duplicates are found in big mappings too, and the first repeat is named. */
static void
test_ydoc_duplicates_large(void **state)
{
	char	*text = malloc(64 * 1024), err[256];
	size_t	 len = 0;

	for (int i = 0; i < 2000; i++)
		len += (size_t)sprintf(text + len, "k%d: %d\n", i, i);
	len += (size_t)sprintf(text + len, "k1500: x\nk7: y\n");
	assert_null(ydoc_load_string("big", text, len, err, sizeof err));
	assert_string_equal(err, "big:2001:1: duplicate key 'k1500' (first "
	    "given at line 1501, column 1)");
	free(text);
}

static void
test_ydoc_depth_limit(void **state)
{
	char	text[1200], err[256];

	memset(text, '[', 1000);
	text[1000] = '\0';
	assert_null(ydoc_load_string("deep", text, strlen(text), err,
	    sizeof err));
	assert_string_equal(err, "deep:1:258: nesting deeper than 256 levels");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_file, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_minimal_file, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_full_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_value_spellings, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_env_overrides, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_env_null, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relative_paths, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_env_repairs_file, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_env_errors, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_file, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup,
		    teardown),
		cmocka_unit_test(test_ydoc_tree),
		cmocka_unit_test(test_ydoc_scalars),
		cmocka_unit_test(test_ydoc_duplicates_large),
		cmocka_unit_test(test_ydoc_depth_limit),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
