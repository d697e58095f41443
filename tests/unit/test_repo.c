/*
 * test_repo: the feature repo loader (features/repo.c) and `mlopsd repo
 * validate` (cmd/cmd-repo.c).
 *
 * The example repo under examples/repo must load with the numbers the docs
 * promise.  Every validation error has a case in one table: the files of a
 * small repo, written into a fresh temporary directory, and the exact
 * lines repo_load() must report ("@" stands for the directory), no more
 * and no fewer, so each file, line, column and message is checked.
 */
#include "config.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmd/cmd.h"
#include "common/xmalloc.h"
#include "features/features.h"
#include "tests/unit/testutil.h"

/* The example's Avro schema, the base of most cases. */
static const char click_avsc[] =
    "{\"type\": \"record\", \"name\": \"Click\", \"fields\": [\n"
    "  {\"name\": \"user_id\", \"type\": \"long\"},\n"
    "  {\"name\": \"ts\", \"type\": {\"type\": \"long\", "
    "\"logicalType\": \"timestamp-millis\"}},\n"
    "  {\"name\": \"page\", \"type\": \"string\"},\n"
    "  {\"name\": \"price\", \"type\": [\"null\", \"double\"]},\n"
    "  {\"name\": \"flags\", \"type\": {\"type\": \"array\", "
    "\"items\": \"string\"}},\n"
    "  {\"name\": \"ts_opt\", \"type\": [\"null\", \"long\"]},\n"
    "  {\"name\": \"ts_us\", \"type\": {\"type\": \"long\", "
    "\"logicalType\": \"timestamp-micros\"}},\n"
    "  {\"name\": \"mixed\", \"type\": [\"null\", \"long\", \"string\"]}\n"
    "]}\n";

/* A valid entity and source for cases about views (features/base.yaml). */
#define BASE_YAML							\
	"entities:\n"							\
	"  - name: user\n"						\
	"    join_keys: [user_id]\n"					\
	"  - name: merchant\n"						\
	"    join_keys: [merchant_id]\n"				\
	"sources:\n"							\
	"  - name: clicks\n"						\
	"    topic: clicks\n"						\
	"    format: avro\n"						\
	"    schema: schemas/click.avsc\n"				\
	"    timestamp_field: ts\n"					\
	"  - name: orders\n"						\
	"    topic: orders\n"						\
	"    format: json\n"						\
	"    timestamp_field: created_at\n"

/* A view header for feature and window cases: windows/features follow. */
#define VIEW_HEAD							\
	"feature_views:\n"						\
	"  - name: v\n"							\
	"    entities: [user]\n"					\
	"    source: clicks\n"

struct tfile {
	const char	*path;
	const char	*text;
};

struct ecase {
	const char	*name;
	struct tfile	 files[4];
	const char	*want[12];	/* NULL-terminated; "@" is the repo dir */
};

static const struct ecase ecases[] = {
	{ "unknown_key_suggests", {
	    { "features/a.yaml", BASE_YAML
		"feature_views:\n"
		"  - name: v\n"
		"    entities: [user]\n"
		"    source: clicks\n"
		"    windwos: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" } },
	  { "@/features/a.yaml:17:5: feature view v: missing required key "
	    "\"windows\"",
	    "@/features/a.yaml:20:5: feature view v: unknown key \"windwos\" "
	    "(did you mean \"windows\"?)" } },
	{ "unknown_key_lists_known", {
	    { "features/a.yaml",
		"entities:\n"
		"  - name: user\n"
		"    join_keys: [user_id]\n"
		"    owner: me\n" } },
	  { "@/features/a.yaml:4:5: entity user: unknown key \"owner\" (known "
	    "keys: name, join_keys, description)" } },
	{ "unknown_top_level_key", {
	    { "features/a.yaml", "entity:\n  - name: user\n" } },
	  { "@/features/a.yaml:1:1: features file: unknown key \"entity\" "
	    "(did you mean \"entities\"?)" } },
	{ "missing_required_keys", {
	    { "features/a.yaml",
		"sources:\n"
		"  - name: clicks\n"
		"    format: json\n" } },
	  { "@/features/a.yaml:2:5: source clicks: missing required key "
	    "\"topic\"",
	    "@/features/a.yaml:2:5: source clicks: missing required key "
	    "\"timestamp_field\"" } },
	{ "duplicate_entity_across_files", {
	    { "features/a.yaml",
		"entities:\n  - name: user\n    join_keys: [user_id]\n" },
	    { "features/b.yaml",
		"entities:\n  - {name: user, join_keys: [id]}\n" } },
	  { "@/features/b.yaml:2:12: duplicate entity \"user\" (first defined "
	    "at @/features/a.yaml:2:11)" } },
	{ "duplicate_source_and_view_across_files", {
	    { "features/a.yaml", BASE_YAML VIEW_HEAD
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" },
	    { "features/b.yaml",
		"sources:\n"
		"  - {name: clicks, topic: clicks2, format: json, "
		"timestamp_field: ts}\n"
		"feature_views:\n"
		"  - name: v\n"
		"    entities: [user]\n"
		"    source: orders\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" } },
	  { "@/features/b.yaml:2:12: duplicate source \"clicks\" (first "
	    "defined at @/features/a.yaml:7:11)",
	    "@/features/b.yaml:4:11: duplicate feature view \"v\" (first "
	    "defined at @/features/a.yaml:17:11)" } },
	{ "duplicate_topic", {
	    { "features/a.yaml", BASE_YAML
		"  - {name: clicks2, topic: clicks, format: json, "
		"timestamp_field: ts}\n" } },
	  { "@/features/a.yaml:16:28: source clicks2: topic \"clicks\" is "
	    "already read by source clicks (@/features/a.yaml:7:11)" } },
	{ "duplicate_feature_and_window", {
	    { "features/a.yaml", BASE_YAML VIEW_HEAD
		"    windows: [{size: 1h, hop: 1m}, {size: 60m, hop: 5m}]\n"
		"    features:\n"
		"      - {name: n, agg: count}\n"
		"      - {name: n, agg: sum, field: price}\n" } },
	  { "@/features/a.yaml:20:43: feature view v: a second window of "
	    "size 60m (the same as 1h): window sizes name the features and "
	    "must differ",
	    "@/features/a.yaml:23:16: feature view v: duplicate feature "
	    "\"n\" (first at line 22)" } },
	{ "unknown_entity_and_source", {
	    { "features/a.yaml", BASE_YAML
		"feature_views:\n"
		"  - name: v\n"
		"    entities: [usr, shop]\n"
		"    source: click\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" } },
	  { "@/features/a.yaml:18:16: feature view v: unknown entity \"usr\" "
	    "(did you mean \"user\"?)",
	    "@/features/a.yaml:18:21: feature view v: unknown entity "
	    "\"shop\"",
	    "@/features/a.yaml:19:13: feature view v: unknown source "
	    "\"click\" (did you mean \"clicks\"?)" } },
	{ "join_key_not_in_schema", {
	    { "features/a.yaml", BASE_YAML
		"feature_views:\n"
		"  - name: v\n"
		"    entities: [user, merchant]\n"
		"    source: clicks\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" } },
	  { "@/features/a.yaml:18:22: feature view v: join key "
	    "\"merchant_id\" of entity merchant is not a field of source "
	    "clicks (schema schemas/click.avsc)" } },
	{ "join_key_must_be_scalar_type", {
	    { "features/a.yaml", BASE_YAML
		"feature_views:\n"
		"  - name: v\n"
		"    entities: [e2]\n"
		"    source: clicks\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" },
	    { "features/b.yaml",
		"entities:\n"
		"  - {name: e2, join_keys: [price]}\n" } },
	  { "@/features/a.yaml:18:16: feature view v: join key \"price\" of "
	    "entity e2 is double in source clicks; join keys must be string, "
	    "int or long" } },
	{ "format", {
	    { "features/a.yaml",
		"sources:\n"
		"  - name: s\n"
		"    topic: t\n"
		"    format: csv\n"
		"    timestamp_field: ts\n" } },
	  { "@/features/a.yaml:4:13: source s: format must be avro or json, "
	    "not \"csv\"" } },
	{ "avro_needs_schema_json_forbids_it", {
	    { "features/a.yaml",
		"sources:\n"
		"  - name: s\n"
		"    topic: t\n"
		"    format: avro\n"
		"    timestamp_field: ts\n"
		"  - name: j\n"
		"    topic: j\n"
		"    format: json\n"
		"    schema: schemas/click.avsc\n"
		"    timestamp_field: ts\n" } },
	  { "@/features/a.yaml:2:5: source s: an avro source needs a schema "
	    "(the path of its .avsc file in the repo)",
	    "@/features/a.yaml:9:13: source j: schema is only for avro "
	    "sources" } },
	{ "schema_missing", {
	    { "features/a.yaml",
		"sources:\n"
		"  - name: s\n"
		"    topic: t\n"
		"    format: avro\n"
		"    schema: schemas/nope.avsc\n"
		"    timestamp_field: ts\n" } },
	  { "@/features/a.yaml:5:13: source s: cannot read schema "
	    "schemas/nope.avsc: No such file or directory" } },
	{ "view_name_with_double_underscore", {
	    { "features/a.yaml", BASE_YAML
		"feature_views:\n"
		"  - name: user__clicks\n"
		"    entities: [user]\n"
		"    source: clicks\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" } },
	  { "@/features/a.yaml:17:11: invalid feature view name "
	    "\"user__clicks\": \"__\" separates a view's name from its "
	    "features' in column names (view__feature_window)" } },
	/* A directory opens; reading it by its "size" aborted the process. */
	{ "schema_is_a_directory", {
	    { "schemas/dir.avsc/x", "" },
	    { "features/a.yaml",
		"sources:\n"
		"  - name: s\n"
		"    topic: t\n"
		"    format: avro\n"
		"    schema: schemas/dir.avsc\n"
		"    timestamp_field: ts\n" } },
	  { "@/features/a.yaml:5:13: source s: cannot read schema "
	    "schemas/dir.avsc: it is a directory" } },
	{ "schema_bad_json", {
	    { "schemas/bad.avsc", "{\"type\": \"record\",\n  \"fields\": [,]}\n" },
	    { "features/a.yaml",
		"sources:\n"
		"  - name: s\n"
		"    topic: t\n"
		"    format: avro\n"
		"    schema: schemas/bad.avsc\n"
		"    timestamp_field: ts\n" } },
	  { "@/schemas/bad.avsc:2:14: schema of source s is not valid JSON: "
	    "unexpected token near ','" } },
	{ "schema_not_a_record", {
	    { "schemas/bad.avsc", "{\"type\": \"long\"}\n" },
	    { "schemas/bad2.avsc", "{\"type\": \"record\", \"name\": \"X\", "
		"\"fields\": [{\"name\": \"a\", \"type\": \"nosuch\"}]}\n" },
	    { "features/a.yaml",
		"sources:\n"
		"  - {name: s, topic: t, format: avro, schema: schemas/bad.avsc, "
		"timestamp_field: ts}\n"
		"  - {name: s2, topic: t2, format: avro, schema: "
		"schemas/bad2.avsc, timestamp_field: ts}\n" } },
	  { "@/schemas/bad.avsc:1:10: schema of source s must be an Avro "
	    "record (an object with \"type\": \"record\" and \"fields\")",
	    "@/schemas/bad2.avsc:1:66: schema of source s2 is not a valid "
	    "Avro schema: Unknown Avro \"type\": nosuch" } },
	/* libavro's messages have no position: the field is found for it. */
	{ "schema_errors_have_positions", {
	    { "schemas/a.avsc", "\"string\"\n" },
	    { "schemas/b.avsc", "{\"type\": \"record\", \"name\": \"B\",\n"
		" \"fields\": [\n  {\"name\": \"a\", \"type\": \"long\"},\n"
		"  {\"type\": \"long\"}]}\n" },
	    { "schemas/c.avsc", "{\"type\": \"record\", \"name\": \"C\",\n"
		" \"fields\": [\n  {\"name\": \"a\", \"type\": \"long\"},\n"
		"  {\"name\": \"b\", \"type\": \"long\"},\n"
		"  {\"name\": \"a\", \"type\": \"string\"}]}\n" },
	    { "features/a.yaml",
		"sources:\n"
		"  - {name: s, topic: t, format: avro, schema: schemas/a.avsc, "
		"timestamp_field: ts}\n"
		"  - {name: s2, topic: t2, format: avro, schema: "
		"schemas/b.avsc, timestamp_field: ts}\n"
		"  - {name: s3, topic: t3, format: avro, schema: "
		"schemas/c.avsc, timestamp_field: ts}\n" } },
	  { "@/schemas/a.avsc:1:1: schema of source s must be an Avro record "
	    "(an object with \"type\": \"record\" and \"fields\")",
	    "@/schemas/b.avsc:4:3: schema of source s2: field 2 must be an "
	    "object with a \"name\" string and a \"type\"",
	    "@/schemas/c.avsc:5:3: schema of source s3: field \"a\" is "
	    "defined twice" } },
	{ "timestamp_field", {
	    { "features/a.yaml",
		"sources:\n"
		"  - {name: a, topic: a, format: avro, schema: schemas/click.avsc, "
		"timestamp_field: tss}\n"
		"  - {name: b, topic: b, format: avro, schema: schemas/click.avsc, "
		"timestamp_field: price}\n"
		"  - {name: c, topic: c, format: avro, schema: schemas/click.avsc, "
		"timestamp_field: ts_opt}\n"
		"  - {name: d, topic: d, format: avro, schema: schemas/click.avsc, "
		"timestamp_field: ts_us}\n" } },
	  { "@/features/a.yaml:2:84: source a: timestamp_field \"tss\" is not "
	    "a field of schema schemas/click.avsc; did you mean \"ts\"?",
	    "@/features/a.yaml:3:84: source b: timestamp field \"price\" is "
	    "double; it must be a long (epoch milliseconds) or a string "
	    "(RFC 3339)",
	    "@/features/a.yaml:4:84: source c: timestamp field \"ts_opt\" may "
	    "not be nullable: every event needs a timestamp",
	    "@/features/a.yaml:5:84: source d: timestamp field \"ts_us\" is a "
	    "timestamp-micros long; mlopsd reads epoch milliseconds "
	    "(timestamp-millis)" } },
	{ "windows", {
	    { "features/a.yaml", BASE_YAML VIEW_HEAD
		"    windows:\n"
		"      - {size: 90m, hop: 1h}\n"
		"      - {size: 1m, hop: 1h}\n"
		"      - {size: 1h, hop: 0s}\n"
		"      - {size: 2h, hop: 1x}\n"
		"      - {size: 3h}\n"
		"      - {size: 60, hop: 1m, step: 1m}\n"
		"    features: [{name: n, agg: count}]\n" } },
	  { "@/features/a.yaml:21:16: feature view v: window size 90m is not "
	    "a multiple of its hop 1h",
	    "@/features/a.yaml:22:16: feature view v: window size 1m is "
	    "smaller than its hop 1h",
	    "@/features/a.yaml:23:25: feature view v: window hop must be "
	    "greater than 0",
	    "@/features/a.yaml:24:25: feature view v: window hop \"1x\": "
	    "unknown duration unit (use ms, s, m, h, d, w)",
	    "@/features/a.yaml:25:9: feature view v: missing required key "
	    "\"hop\"",
	    "@/features/a.yaml:26:16: feature view v: window size \"60\": "
	    "duration needs a unit (ms, s, m, h, d, w)",
	    "@/features/a.yaml:26:29: feature view v: unknown key \"step\" "
	    "(known keys: size, hop)" } },
	{ "ttl", {
	    { "features/a.yaml", BASE_YAML VIEW_HEAD
		"    ttl: 0s\n"
		"    max_future: soon\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n"
		"  - name: w\n"
		"    entities: [user]\n"
		"    source: clicks\n"
		"    ttl: 7\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: n, agg: count}]\n" } },
	  { "@/features/a.yaml:20:10: feature view v: ttl must be greater "
	    "than 0 (leave it out for no TTL)",
	    "@/features/a.yaml:21:17: feature view v: max_future \"soon\": "
	    "duration must start with a number (e.g. 5m, 1h, 7d)",
	    "@/features/a.yaml:27:10: feature view w: ttl \"7\": duration "
	    "needs a unit (ms, s, m, h, d, w)" } },
	{ "aggregations", {
	    { "features/a.yaml", BASE_YAML VIEW_HEAD
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features:\n"
		"      - {name: a, agg: sun, field: price}\n"
		"      - {name: b, agg: count, field: price}\n"
		"      - {name: c, agg: mean}\n"
		"      - {name: d, agg: last_n, field: page}\n"
		"      - {name: e, agg: last_n, field: page, n: 1001}\n"
		"      - {name: f, agg: last, field: page, n: 3}\n"
		"      - {name: g, agg: avg, field: price}\n" } },
	  { "@/features/a.yaml:22:24: feature view v: feature a: unknown "
	    "aggregation \"sun\" (did you mean \"sum\"? one of count, sum, "
	    "mean, min, max, last, first, stddev, variance, "
	    "approx_count_distinct, last_n)",
	    "@/features/a.yaml:23:38: feature view v: feature b: count takes "
	    "no field (it counts events)",
	    "@/features/a.yaml:24:9: feature view v: feature c: mean needs a "
	    "field",
	    "@/features/a.yaml:25:9: feature view v: feature d: last_n needs "
	    "n, the number of values to keep (1 to 1000)",
	    "@/features/a.yaml:26:48: feature view v: feature e: n must be "
	    "an integer from 1 to 1000",
	    "@/features/a.yaml:27:46: feature view v: feature f: n is only "
	    "for last_n",
	    "@/features/a.yaml:28:24: feature view v: feature g: unknown "
	    "aggregation \"avg\" (one of count, sum, mean, min, max, last, "
	    "first, stddev, variance, approx_count_distinct, last_n)" } },
	{ "fields_against_schema", {
	    { "features/a.yaml", BASE_YAML VIEW_HEAD
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features:\n"
		"      - {name: a, agg: sum, field: prise}\n"
		"      - {name: b, agg: min, field: page}\n"
		"      - {name: c, agg: stddev, field: page}\n"
		"      - {name: d, agg: last, field: flags}\n"
		"      - {name: e, agg: max, field: price}\n"
		"      - {name: f, agg: last, field: bad-name}\n" } },
	  { "@/features/a.yaml:22:36: feature view v: feature a: field "
	    "\"prise\" is not a field of source clicks (schema "
	    "schemas/click.avsc); did you mean \"price\"?",
	    "@/features/a.yaml:23:36: feature view v: feature b: min needs a "
	    "numeric field (int, long, float or double), and \"page\" is "
	    "string",
	    "@/features/a.yaml:24:39: feature view v: feature c: stddev needs "
	    "a numeric field (int, long, float or double), and \"page\" is "
	    "string",
	    "@/features/a.yaml:25:37: feature view v: feature d: field "
	    "\"flags\" is array; features read boolean, int, long, float, "
	    "double and string fields",
	    "@/features/a.yaml:27:37: feature view v: feature f: invalid field "
	    "\"bad-name\": field names are [A-Za-z_][A-Za-z0-9_]*" } },
	{ "identifiers", {
	    { "features/a.yaml",
		"entities:\n"
		"  - {name: User, join_keys: [user-id]}\n"
		"sources:\n"
		"  - {name: 1clicks, topic: \"bad topic\", format: json, "
		"timestamp_field: ts}\n"
		"feature_views:\n"
		"  - name: my-view\n"
		"    entities: [User]\n"
		"    source: 1clicks\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: Clicks, agg: count}]\n" } },
	  { "@/features/a.yaml:2:12: invalid entity name \"User\": names are "
	    "[a-z_][a-z0-9_]* (lower-case letters, digits and underscores, "
	    "not starting with a digit)",
	    "@/features/a.yaml:2:30: entity User: invalid join key "
	    "\"user-id\": field names are [A-Za-z_][A-Za-z0-9_]*",
	    "@/features/a.yaml:4:12: invalid source name \"1clicks\": names "
	    "are [a-z_][a-z0-9_]* (lower-case letters, digits and "
	    "underscores, not starting with a digit)",
	    "@/features/a.yaml:4:28: source 1clicks: invalid topic \"bad "
	    "topic\": Kafka topic names are 1 to 249 of A-Z a-z 0-9 . _ -",
	    "@/features/a.yaml:6:11: invalid feature view name \"my-view\": "
	    "names are [a-z_][a-z0-9_]* (lower-case letters, digits and "
	    "underscores, not starting with a digit)",
	    "@/features/a.yaml:7:16: feature view my-view: unknown entity "
	    "\"User\"",
	    "@/features/a.yaml:8:13: feature view my-view: unknown source "
	    "\"1clicks\"",
	    "@/features/a.yaml:10:23: feature view my-view: invalid feature "
	    "name \"Clicks\": names are [a-z_][a-z0-9_]* (lower-case letters, "
	    "digits and underscores, not starting with a digit)" } },
	{ "shapes", {
	    { "features/a.yaml",
		"entities: {name: user}\n"
		"sources:\n"
		"  - just-a-string\n"
		"feature_views:\n"
		"  - name: v\n"
		"    entities: user\n"
		"    source: [clicks]\n"
		"    windows: []\n"
		"    features: [count]\n" } },
	  { "@/features/a.yaml:1:11: entities must be a list, not a mapping",
	    "@/features/a.yaml:3:5: each item of sources must be a mapping, "
	    "not a string",
	    "@/features/a.yaml:6:15: feature view v: entities must be a list, "
	    "not a string",
	    "@/features/a.yaml:7:13: feature view v: source must be a string, "
	    "not a sequence",
	    "@/features/a.yaml:8:14: feature view v: windows must not be empty",
	    "@/features/a.yaml:9:16: feature view v: each feature must be a "
	    "mapping like {name: clicks, agg: count}, not a string" } },
	{ "list_items", {
	    { "features/a.yaml",
		"entities:\n"
		"  - name: user\n"
		"    join_keys: [{id: 1}, \"\"]\n" } },
	  { "@/features/a.yaml:3:17: entity user: each item of join_keys must "
	    "be a name, not a mapping",
	    "@/features/a.yaml:3:26: entity user: each item of join_keys must "
	    "be a name, not an empty string" } },
	{ "more_duplicates_and_types", {
	    { "features/a.yaml", BASE_YAML
		"  - {name: \"\", topic: t, format: json, timestamp_field: ts}\n"
		"feature_views:\n"
		"  - name: v\n"
		"    entities: [user, user, account]\n"
		"    source: clicks\n"
		"    windows: [{size: 1h, hop: 1m}]\n"
		"    features: [{name: m, agg: last, field: mixed}]\n" },
	    { "features/b.yaml",
		"entities:\n"
		"  - {name: account, join_keys: [user_id, user_id]}\n" } },
	  { "@/features/a.yaml:16:12: source: name must not be empty",
	    "@/features/a.yaml:19:22: feature view v: entity user is listed "
	    "twice",
	    "@/features/a.yaml:19:28: feature view v: entity account has join "
	    "key \"user_id\", which an earlier entity of the view has too",
	    "@/features/a.yaml:22:44: feature view v: feature m: field "
	    "\"mixed\" is union; features read boolean, int, long, float, "
	    "double and string fields",
	    "@/features/b.yaml:2:42: entity account: join key \"user_id\" is "
	    "listed twice" } },
	{ "yaml_syntax_error", {
	    { "features/a.yaml", "entities:\n  - name: [user\n" } },
	  { "@/features/a.yaml:*" } },
	{ "no_features_dir", { { "schemas/x.avsc", "{}" } },
	  { "@/features: No such file or directory (a feature repo keeps its "
	    "definitions in features/*.yaml)" } },
};

static char *
mktmp(void)
{
	char	*dir = xstrfmt("%s/test_repo.XXXXXX", getenv("TMPDIR") != NULL ?
	    getenv("TMPDIR") : "/tmp");

	assert_non_null(mkdtemp(dir));
	return dir;
}

static void
put(const char *dir, const char *path, const char *text)
{
	char	*full = xstrfmt("%s/%s", dir, path), *slash;
	FILE	*f;

	for (slash = strchr(full + strlen(dir) + 1, '/'); slash != NULL;
	    slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(full, 0755);
		*slash = '/';
	}
	assert_non_null(f = fopen(full, "w"));
	fputs(text, f);
	fclose(f);
	free(full);
}

static void
rmtree(char *dir)
{
	testutil_rm_tree(dir);
	free(dir);
}

/* s with every "@" replaced by dir. */
static char *
subst(const char *s, const char *dir)
{
	char	*out = xmalloc(strlen(s) * (strlen(dir) + 1) + 1), *o = out;

	for (; *s != '\0'; s++) {
		if (*s == '@') {
			strcpy(o, dir);
			o += strlen(dir);
		} else
			*o++ = *s;
	}
	*o = '\0';
	return out;
}

/* Does line match want, where a trailing "*" in want matches anything? */
static int
line_matches(const char *line, size_t len, const char *want)
{
	size_t	wl = strlen(want);

	if (wl > 0 && want[wl - 1] == '*')
		return len >= wl - 1 && strncmp(line, want, wl - 1) == 0;
	return len == wl && strncmp(line, want, len) == 0;
}

/* Assert that err holds exactly the lines of want (in that order). */
static void
assert_errors(const char *err, const char *dir, const char *const *want)
{
	const char	*p = err, *nl;
	char		*w;
	size_t		 i, len;

	for (i = 0; want[i] != NULL; i++) {
		assert_true(*p != '\0' || (fprintf(stderr, "missing line %zu: "
		    "%s\nall errors:\n%s\n", i, want[i], err), 0));
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		w = subst(want[i], dir);
		if (!line_matches(p, len, w)) {
			fprintf(stderr, "line %zu:\n  got:  %.*s\n  want: %s\n"
			    "all errors:\n%s\n", i, (int)len, p, w, err);
			fail();
		}
		free(w);
		p += len + (nl != NULL);
	}
	if (*p != '\0') {
		fprintf(stderr, "unexpected errors:\n%s\n", p);
		fail();
	}
}

static void
test_error_case(void **state)
{
	const struct ecase	*c = *state;
	char			*dir = mktmp(), err[REPO_ERRLEN];
	struct repo		*r;
	size_t			 i;

	if (strcmp(c->name, "no_features_dir") != 0)
		put(dir, "schemas/click.avsc", click_avsc);
	for (i = 0; i < 4 && c->files[i].path != NULL; i++)
		put(dir, c->files[i].path, c->files[i].text);
	err[0] = '\0';
	r = repo_load(dir, err, sizeof err);
	if (r != NULL)
		fprintf(stderr, "case %s loaded without errors\n", c->name);
	assert_null(r);
	assert_errors(err, dir, c->want);
	rmtree(dir);
}

/* ------------------------------------------------------------ good repos */

static char *
example_dir(void)
{
	const char	*src = getenv("MLOPSD_SRCDIR");

	return xstrfmt("%s/examples/repo", src != NULL ? src : ".");
}

static void
test_example_repo(void **state)
{
	char				*dir = example_dir(), err[REPO_ERRLEN];
	struct repo			*r;
	const struct repo_view		*v;
	const struct repo_source	*s;
	const struct repo_feature	*f;
	size_t				 fi, wi;

	(void)state;
	err[0] = '\0';
	r = repo_load(dir, err, sizeof err);
	if (r == NULL)
		fprintf(stderr, "%s\n", err);
	assert_non_null(r);
	assert_int_equal(r->nentities, 2);
	assert_int_equal(r->nsources, 2);
	assert_int_equal(r->nviews, 2);
	assert_int_equal(r->nfeatures, 16);
	assert_int_equal(r->noutputs, 32);
	assert_int_equal(strlen(r->hash_hex), 16);

	assert_non_null(v = repo_view_find(r, "user_clicks"));
	assert_null(repo_view_find(r, "user_click"));
	assert_int_equal(v->nentities, 1);
	assert_string_equal(v->entities[0]->name, "user");
	assert_int_equal(v->njoin_keys, 1);
	assert_string_equal(v->join_keys[0], "user_id");
	assert_ptr_equal(v->source, repo_source_find(r, "clicks"));
	assert_int_equal(v->ttl_ms, 7 * 86400000LL);
	assert_int_equal(v->max_future_ms, REPO_DEFAULT_MAX_FUTURE_MS);
	assert_int_equal(v->nwindows, 2);
	assert_string_equal(v->windows[0].suffix, "1h");
	assert_int_equal(v->windows[0].size_ms, 3600000);
	assert_int_equal(v->windows[0].hop_ms, 60000);
	assert_string_equal(v->windows[1].suffix, "1d");
	assert_int_equal(v->windows[1].hop_ms, 3600000);
	assert_int_equal(v->nfeatures, 8);
	f = &v->features[0];
	assert_string_equal(f->name, "clicks");
	assert_int_equal(f->agg, REPO_AGG_COUNT);
	assert_null(f->field);
	f = &v->features[7];
	assert_string_equal(f->name, "recent_pages");
	assert_int_equal(f->agg, REPO_AGG_LAST_N);
	assert_string_equal(f->agg_name, "last_n");
	assert_string_equal(f->field, "page");
	assert_int_equal(f->n, 5);
	assert_int_equal(v->features[6].agg, REPO_AGG_APPROX_COUNT_DISTINCT);
	assert_int_equal(v->noutputs, 16);
	assert_string_equal(v->outputs[0], "user_clicks:clicks_1h");
	assert_string_equal(v->outputs[1], "user_clicks:clicks_1d");
	assert_string_equal(v->outputs[15], "user_clicks:recent_pages_1d");

	assert_int_equal(repo_output_find(r, "user_clicks:spend_1d", &v, &fi,
	    &wi), 0);
	assert_string_equal(v->name, "user_clicks");
	assert_string_equal(v->features[fi].name, "spend");
	assert_string_equal(v->windows[wi].suffix, "1d");
	assert_int_equal(repo_output_find(r, "user_clicks:spend_2d", &v, &fi,
	    &wi), -1);
	assert_int_equal(repo_output_find(r, "nope:spend_1d", &v, &fi,
	    &wi), -1);
	assert_int_equal(repo_output_find(r, "spend_1d", &v, &fi, &wi), -1);

	s = repo_source_find(r, "clicks");
	assert_int_equal(s->format, REPO_FORMAT_AVRO);
	assert_string_equal(s->topic, "clicks");
	assert_string_equal(s->schema_path, "schemas/click.avsc");
	assert_non_null(strstr(s->schema_json, "\"Click\""));
	assert_string_equal(s->timestamp_field, "ts");
	assert_int_equal(s->timestamp_type, REPO_FTYPE_LONG);
	/* Join keys first, then fields in order of first use; no ts. */
	assert_int_equal(s->nfields, 3);
	assert_string_equal(s->fields[0].name, "user_id");
	assert_int_equal(s->fields[0].type, REPO_FTYPE_LONG);
	assert_string_equal(s->fields[1].name, "price");
	assert_int_equal(s->fields[1].type, REPO_FTYPE_DOUBLE);
	assert_int_equal(s->fields[1].nullable, 1);
	assert_string_equal(s->fields[2].name, "page");
	assert_int_equal(s->fields[2].type, REPO_FTYPE_STRING);
	assert_int_equal(s->fields[2].nullable, 0);

	s = repo_source_find(r, "orders");
	assert_int_equal(s->format, REPO_FORMAT_JSON);
	assert_null(s->schema_path);
	assert_null(s->schema_json);
	assert_int_equal(s->timestamp_type, REPO_FTYPE_ANY);
	assert_int_equal(s->nfields, 5);
	assert_string_equal(s->fields[0].name, "merchant_id");
	assert_string_equal(s->fields[2].name, "user_id");
	assert_int_equal(s->fields[2].type, REPO_FTYPE_ANY);
	v = repo_view_find(r, "merchant_orders");
	assert_int_equal(v->max_future_ms, 10 * 60000);
	assert_int_equal(v->ttl_ms, 30 * 86400000LL);

	assert_non_null(repo_entity_find(r, "merchant"));
	assert_null(repo_entity_find(r, "orders"));
	assert_string_equal(repo_agg_name(REPO_AGG_STDDEV), "stddev");
	assert_string_equal(repo_ftype_name(REPO_FTYPE_DOUBLE), "double");
	repo_free(r);
	free(dir);
}

/*
 * Names are global across files: a view in the first file may use an
 * entity of the last and a source of the middle one.
 */
static const char cross_a[] =
    "feature_views:\n"
    "  - name: v\n"
    "    entities: [user, shop]\n"
    "    source: events\n"
    "    windows: [{size: 1h, hop: 1m}]\n"
    "    features:\n"
    "      - {name: n, agg: count}\n"
    "      - {name: amt, agg: sum, field: amount}\n";
static const char cross_b[] =
    "sources:\n"
    "  - {name: events, topic: events, format: json, timestamp_field: ts}\n";
static const char cross_c[] =
    "entities:\n"
    "  - {name: shop, join_keys: [shop_id]}\n"
    "  - {name: user, join_keys: [user_id, tenant]}\n";

static void
test_references_across_files(void **state)
{
	char			*dir = mktmp(), err[REPO_ERRLEN];
	struct repo		*r;
	const struct repo_view	*v;

	(void)state;
	put(dir, "features/a.yaml", cross_a);
	put(dir, "features/b.yml", cross_b);
	put(dir, "features/c.yaml", cross_c);
	put(dir, "features/.swap.yaml", "not: [valid");
	put(dir, "features/notes.txt", "not: [valid");
	r = repo_load(dir, err, sizeof err);
	if (r == NULL)
		fprintf(stderr, "%s\n", err);
	assert_non_null(r);
	v = repo_view_find(r, "v");
	assert_non_null(v);
	assert_int_equal(v->nentities, 2);
	assert_int_equal(v->njoin_keys, 3);
	assert_string_equal(v->join_keys[0], "user_id");
	assert_string_equal(v->join_keys[1], "tenant");
	assert_string_equal(v->join_keys[2], "shop_id");
	assert_int_equal(v->ttl_ms, 0);
	assert_int_equal(v->source->nfields, 4);
	assert_string_equal(v->source->fields[3].name, "amount");
	repo_free(r);
	rmtree(dir);
}

/* Same meaning, other layout: same hash.  Another meaning: another hash. */
static void
test_hash(void **state)
{
	char		*d1 = mktmp(), *d2 = mktmp(), *d3 = mktmp();
	char		 err[REPO_ERRLEN];
	struct repo	*r1, *r2, *r3;

	(void)state;
	put(d1, "features/a.yaml", cross_a);
	put(d1, "features/b.yaml", cross_b);
	put(d1, "features/c.yaml", cross_c);
	/* One file, lists in another order, comments. */
	put(d2, "features/all.yaml",
	    "# everything\n"
	    "entities:\n"
	    "  - {join_keys: [user_id, tenant], name: user}\n"
	    "  - {name: shop, join_keys: [shop_id]}\n"
	    "sources:\n"
	    "  - {name: events, topic: events, format: json, timestamp_field: ts}\n"
	    "feature_views:\n"
	    "  - name: v\n"
	    "    source: events\n"
	    "    entities: [user, shop]\n"
	    "    features:\n"
	    "      - {name: n, agg: count}\n"
	    "      - {name: amt, agg: sum, field: amount}\n"
	    "    windows: [{size: 1h, hop: 1m}]\n");
	put(d3, "features/a.yaml", cross_a);
	put(d3, "features/b.yaml", cross_b);
	put(d3, "features/c.yaml",
	    "entities:\n"
	    "  - {name: shop, join_keys: [shop_id]}\n"
	    "  - {name: user, join_keys: [user_id]}\n");
	assert_non_null(r1 = repo_load(d1, err, sizeof err));
	assert_non_null(r2 = repo_load(d2, err, sizeof err));
	assert_non_null(r3 = repo_load(d3, err, sizeof err));
	assert_string_equal(r1->hash_hex, r2->hash_hex);
	assert_int_equal(r1->views[0].hash, r2->views[0].hash);
	assert_string_not_equal(r1->hash_hex, r3->hash_hex);
	assert_true(r1->views[0].hash != r3->views[0].hash);
	repo_free(r1);
	repo_free(r2);
	repo_free(r3);
	rmtree(d1);
	rmtree(d2);
	rmtree(d3);
}

static void
test_empty_repo(void **state)
{
	char		*dir = mktmp(), *fdir = xstrfmt("%s/features", dir);
	char		 err[REPO_ERRLEN];
	struct repo	*r;

	(void)state;
	assert_int_equal(mkdir(fdir, 0755), 0);
	put(dir, "features/empty.yaml", "# nothing yet\n");
	assert_non_null(r = repo_load(dir, err, sizeof err));
	assert_int_equal(r->nentities + r->nsources + r->nviews, 0);
	repo_free(r);
	free(fdir);
	rmtree(dir);
}

/* More than REPO_MAX_ERRORS: the first ones, then a line saying so. */
static void
test_error_cap(void **state)
{
	char		*dir = mktmp(), err[REPO_ERRLEN], *want, *text, *next;
	struct repo	*r;
	const char	*p;
	int		 i, lines = 0;

	(void)state;
	/* 60 entities with upper-case names: one error each. */
	text = xstrdup("entities:\n");
	for (i = 0; i < 60; i++) {
		next = xstrfmt("%s  - {name: E%d, join_keys: [k]}\n", text, i);
		free(text);
		text = next;
	}
	put(dir, "features/a.yaml", text);
	free(text);
	assert_null(r = repo_load(dir, err, sizeof err));
	for (p = err; *p != '\0'; p++)
		lines += *p == '\n';
	assert_int_equal(lines + 1, REPO_MAX_ERRORS + 1);
	want = xstrfmt("\n%s: too many errors; these are the first 50 of 60",
	    dir);
	assert_string_equal(strrchr(err, '\n'), want);
	free(want);
	rmtree(dir);
}

/* ------------------------------------------------- mlopsd repo validate */

static void
test_validate_ok(void **state)
{
	char		*dir = example_dir(), *want;
	struct testutil_run	 r;

	(void)state;
	testutil_run_cmd(&r, "repo", "validate", dir, NULL);
	assert_int_equal(r.rc, 0);
	assert_string_equal(r.err, "");
	want = xstrfmt("%s: ok (2 entities, 2 sources, 2 views, 16 features, "
	    "32 windowed outputs, ", dir);
	assert_memory_equal(r.out, want, strlen(want));
	free(want);
	free(dir);
}

static void
test_validate_errors(void **state)
{
	char		*dir = mktmp(), *want;
	struct testutil_run	 r;

	(void)state;
	put(dir, "features/a.yaml",
	    "entities:\n"
	    "  - {name: user, join_keys: [user_id], colour: red}\n"
	    "sources:\n"
	    "  - {name: s, topic: s, format: xml, timestamp_field: ts}\n");
	testutil_run_cmd(&r, "repo", "validate", dir, NULL);
	assert_int_equal(r.rc, 1);
	assert_string_equal(r.out, "");
	want = xstrfmt("%s/features/a.yaml:2:40: entity user: unknown key "
	    "\"colour\" (known keys: name, join_keys, description)\n"
	    "%s/features/a.yaml:4:33: source s: format must be avro or json, "
	    "not \"xml\"\n", dir, dir);
	assert_string_equal(r.err, want);
	free(want);
	rmtree(dir);
}

static void
test_validate_usage(void **state)
{
	char		*dir = mktmp(), *file;
	struct testutil_run	 r;

	(void)state;
	testutil_run_cmd(&r, "repo", "validate", "/nonexistent/repo", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "mlopsd repo: /nonexistent/repo: No such "
	    "file or directory\nusage: mlopsd repo validate DIR\n"));

	put(dir, "file", "x");
	file = xstrfmt("%s/file", dir);
	testutil_run_cmd(&r, "repo", "validate", file, NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, ": not a directory"));
	free(file);

	testutil_run_cmd(&r, "repo", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "missing command (validate)"));
	testutil_run_cmd(&r, "repo", "validate", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "validate needs the repo directory"));
	testutil_run_cmd(&r, "repo", "check", dir, NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "unknown repo command \"check\""));
	testutil_run_cmd(&r, "repo", "validate", dir, "extra", NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "unexpected argument \"extra\""));
	testutil_run_cmd(&r, "repo", "validate", "--bogus", dir, NULL);
	assert_int_equal(r.rc, 2);
	assert_non_null(strstr(r.err, "unknown option --bogus"));

	testutil_run_cmd(&r, "repo", "--help", NULL);
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.out, "usage: mlopsd repo validate DIR\n"));
	assert_non_null(strstr(r.out, "FILE:LINE:COL: MESSAGE"));
	rmtree(dir);
}

int
main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_example_repo),
		cmocka_unit_test(test_references_across_files),
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_empty_repo),
		cmocka_unit_test(test_error_cap),
		cmocka_unit_test(test_validate_ok),
		cmocka_unit_test(test_validate_errors),
		cmocka_unit_test(test_validate_usage),
	};
	size_t			 nfixed = sizeof fixed / sizeof fixed[0];
	size_t			 ncases = sizeof ecases / sizeof ecases[0], i;
	struct CMUnitTest	*tests;
	int			 rc;

	/* One test per error case, named after it. */
	tests = xcalloc(nfixed + ncases, sizeof *tests);
	memcpy(tests, fixed, sizeof fixed);
	for (i = 0; i < ncases; i++) {
		tests[nfixed + i].name = ecases[i].name;
		tests[nfixed + i].test_func = test_error_case;
		tests[nfixed + i].initial_state = (void *)(uintptr_t)&ecases[i];
	}
	rc = _cmocka_run_group_tests("repo", tests, nfixed + ncases, NULL,
	    NULL);
	free(tests);
	return rc;
}
