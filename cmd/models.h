/*
 * models: the model registry side of the daemon (models.c): opens the
 * registry in the data dir and serves its API.
 */
#ifndef MLOPSD_MODELS_H
#define MLOPSD_MODELS_H

#include <stddef.h>

struct daemon;
struct models;

/*
 * Open DATA_DIR/registry.db and register the /v1/models routes on d.
 * Returns NULL with a message in err when the registry cannot be opened.
 */
struct models	*models_new(struct daemon *d, char *err, size_t errlen);
void		 models_free(struct models *mo);

#endif
