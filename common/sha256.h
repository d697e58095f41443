/*
 * sha256: the SHA-256 digest (FIPS 180-4), for content-addressed
 * artifacts and training-set hashes.  No state outside the context the
 * caller owns; any number of contexts may be used from any threads.
 */
#ifndef MLOPSD_SHA256_H
#define MLOPSD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN	32
#define SHA256_HEXLEN	64	/* without the NUL */

struct sha256 {
	uint32_t	h[8];
	uint64_t	len;		/* bytes hashed so far */
	uint8_t		buf[64];
	size_t		nbuf;
};

void	sha256_init(struct sha256 *c);
void	sha256_update(struct sha256 *c, const void *data, size_t len);
/* Finish: the 32-byte digest into out; c must be initialised again to reuse. */
void	sha256_final(struct sha256 *c, uint8_t out[SHA256_LEN]);
/* Finish into 64 lower-case hex digits and a NUL (hex has >= 65 bytes). */
void	sha256_final_hex(struct sha256 *c, char *hex);
/*
 * The hex digest of a whole file, read in blocks.  Returns 0, or -1 with
 * "PATH: strerror" in err.  *size (may be NULL) gets its length in bytes.
 */
int	sha256_file_hex(const char *path, char *hex, int64_t *size, char *err,
	    size_t errlen);

#endif
