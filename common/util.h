/*
 * util: small pure helpers shared by every module: time, durations,
 * timestamps, hashing, address parsing.  No state.
 */
#ifndef MLOPSD_UTIL_H
#define MLOPSD_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall clock and monotonic clock in milliseconds / nanoseconds. */
int64_t		 util_now_ms(void);
uint64_t	 util_mono_ns(void);

/* The next wait of a doubling backoff: first after 0, then twice cur, at most max. */
int64_t		 util_backoff_next(int64_t cur, int64_t first, int64_t max);

/*
 * Parse a duration "500ms", "10s", "5m", "1h", "7d", "2w" (one number and
 * one unit; a bare number is an error) into milliseconds.  Returns 0, or -1
 * with *err pointing to a static message.
 */
int		 util_parse_duration_ms(const char *s, int64_t *out, const char **err);

/*
 * Parse an event timestamp: epoch milliseconds as a decimal integer, or an
 * RFC 3339 date-time ("2026-11-26T19:00:00Z", "...T19:00:00.123+01:00").
 * Returns 0, or -1 if the text is neither.
 */
int		 util_parse_timestamp_ms(const char *s, int64_t *out);
int		 util_parse_rfc3339_ms(const char *s, int64_t *out);
/* Format ms since the epoch as RFC 3339 UTC with milliseconds into buf (>= 32 bytes). */
char		*util_format_rfc3339(int64_t ms, char *buf, size_t len);

/* Floor division that is correct for negative numerators. */
static inline int64_t
util_floordiv(int64_t a, int64_t b)
{
	int64_t	q = a / b;

	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

/* 64-bit hash of a byte string (stable across runs and machines). */
/*
 * *ts = CLOCK_REALTIME now + ms (ms >= 0): the absolute time that
 * pthread_cond_timedwait() and pthread_timedjoin_np() take.
 */
struct timespec;
void		 util_realtime_after(struct timespec *ts, int64_t ms);
/*
 * Decimal text of v into dst (room bytes, no NUL added): its length, or
 * -1 if it does not fit.  For hot paths where snprintf costs too much.
 */
int		 util_fmt_i64(char *dst, size_t room, int64_t v);
uint64_t	 util_hash64(const void *data, size_t len, uint64_t seed);

/*
 * Split "host:port" (IPv4, name, or "[v6]:port") into host and port.
 * host must have room for hostlen bytes.  Returns 0 or -1.
 */
int		 util_split_hostport(const char *addr, char *host, size_t hostlen,
		     int *port);

#endif
