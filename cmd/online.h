/*
 * online: the feature store side of the daemon (online.c): feature repo,
 * online store, ingest and lookup API, plugged into a daemon's hooks.
 */
#ifndef MLOPSD_ONLINE_H
#define MLOPSD_ONLINE_H

#include <stddef.h>

struct daemon;
struct ingest_options;
struct online;

/*
 * Load the repo named by the daemon's config, open the store in its
 * data_dir, register routes and hooks, and start ingest.  Returns NULL
 * with err empty when the repo directory does not exist (the daemon then
 * serves without features), or NULL with err set on a failure.
 */
struct online	*online_new(struct daemon *d, const struct ingest_options *opt,
		    char *err, size_t errlen);
void		 online_free(struct online *o);

#endif
