/*
 * config: the daemon configuration, mlopsd.yaml (SPEC §2).
 *
 * The loader is table-driven: one entry per key with its type, default and
 * validation.  Every key may be overridden by MLOPSD_SECTION_KEY in the
 * environment (MLOPSD_DATA_DIR, MLOPSD_OFFLINE_POSTGRES, ...).  Unknown
 * keys, wrong types and bad values are errors naming file:line:col (or the
 * environment variable).  A loaded config is immutable and may be read from
 * any thread.
 */
#ifndef MLOPSD_CONFIG_H
#define MLOPSD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/log.h"

struct config_kv {
	char	*key;
	char	*value;
	char	*where;	/* "file:line:col" or the variable it came from */
};

struct config {
	char		*path;		/* file it came from, NULL for defaults */
	char		*data_dir;
	char		*repo;
	enum log_level	 log_level;
	struct {
		char		 *bootstrap;
		char		 *group;
		struct config_kv *properties;	/* passed to librdkafka as-is */
		size_t		  nproperties;
		char		 *schema_registry;	/* NULL: local .avsc files */
		char		 *dead_letter_topic;
	} kafka;
	struct {
		char		*postgres;	/* NULL: embedded SQLite offline store */
		int64_t		 verify_interval_ms; /* background verify; 0: off */
		int		 verify_sample;	/* entities per view; 0: all */
	} offline;
	struct {
		char		*listen;
		int		 threads;
		char		*admin_token_file;
		char		*admin_token;	/* read from admin_token_file at load */
		int64_t		 request_timeout_ms;
		int64_t		 max_body_bytes;
		int		 max_entities;
	} http;
	struct {
		int		 max_parallel;	/* step processes at once */
		int64_t		 kill_grace_ms;	/* SIGTERM -> SIGKILL */
	} pipeline;
};

/* Defaults of every key, then environment overrides.  NULL on a bad override. */
struct config	*config_defaults(char *err, size_t errlen);
/*
 * Load path over the defaults, then apply environment overrides.  Returns
 * NULL with "file:line:col: message" (or "MLOPSD_X: message") in err.
 */
struct config	*config_load(const char *path, char *err, size_t errlen);
void		 config_free(struct config *cfg);
/*
 * Is addr a listen address (host:port, the host resolvable)?  0, or -1
 * with why ("expected host:port ...", "cannot resolve host ...").  What
 * http.listen is checked with, for addresses given on a command line.
 */
int		 config_check_listen(const char *addr, char *why,
		    size_t whylen);

#endif
