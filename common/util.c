/*
 * util: time, duration, timestamp and hashing helpers (see util.h).
 */
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t
util_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_backoff_next(int64_t cur, int64_t first, int64_t max)
{
	if (cur <= 0)
		return first;
	return cur > max / 2 ? max : cur * 2;
}

uint64_t
util_mono_ns(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const struct {
	const char	*unit;
	int64_t		 ms;
} duration_units[] = {
	{ "ms", 1 },
	{ "s", 1000 },
	{ "m", 60 * 1000 },
	{ "h", 3600 * 1000 },
	{ "d", 86400 * 1000 },
	{ "w", 7 * 86400 * 1000LL },
};

int
util_parse_duration_ms(const char *s, int64_t *out, const char **err)
{
	const char	*p = s;
	int64_t		 n = 0;
	size_t		 i;

	if (!isdigit((unsigned char)*p)) {
		*err = "duration must start with a number (e.g. 5m, 1h, 7d)";
		return -1;
	}
	while (isdigit((unsigned char)*p)) {
		if (n > (INT64_MAX - 9) / 10) {
			*err = "duration is too large";
			return -1;
		}
		n = n * 10 + (*p++ - '0');
	}
	if (*p == '\0') {
		*err = "duration needs a unit (ms, s, m, h, d, w)";
		return -1;
	}
	for (i = 0; i < sizeof duration_units / sizeof duration_units[0]; i++) {
		if (strcmp(p, duration_units[i].unit) == 0) {
			if (n > INT64_MAX / duration_units[i].ms) {
				*err = "duration is too large";
				return -1;
			}
			*out = n * duration_units[i].ms;
			return 0;
		}
	}
	*err = "unknown duration unit (use ms, s, m, h, d, w)";
	return -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t		 era;
	unsigned	 yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int
parse_digits(const char **pp, int n, int *out)
{
	int	v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*pp)[i]))
			return -1;
		v = v * 10 + ((*pp)[i] - '0');
	}
	*pp += n;
	*out = v;
	return 0;
}

int
util_parse_rfc3339_ms(const char *s, int64_t *out)
{
	const char	*p = s;
	int		 y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	int64_t		 frac = 0, ms;
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	if (parse_digits(&p, 4, &y) || *p++ != '-' ||
	    parse_digits(&p, 2, &mo) || *p++ != '-' ||
	    parse_digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
		return -1;
	p++;
	if (parse_digits(&p, 2, &h) || *p++ != ':' ||
	    parse_digits(&p, 2, &mi) || *p++ != ':' ||
	    parse_digits(&p, 2, &sec))
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 ||
	    mi > 59 || sec > 60)
		return -1;
	/* mdays allows Feb 29 in every year; only leap years have it. */
	if (mo == 2 && d == 29 && (y % 4 != 0 || (y % 100 == 0 && y % 400 != 0)))
		return -1;
	if (*p == '.') {
		int	digits = 0;

		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p)) {
			if (digits < 3) {
				frac = frac * 10 + (*p - '0');
				digits++;
			}
			p++;
		}
		while (digits++ < 3)
			frac *= 10;
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (parse_digits(&p, 2, &oh) || *p++ != ':' ||
		    parse_digits(&p, 2, &om) || oh > 23 || om > 59)
			return -1;
	} else
		return -1;
	if (*p != '\0')
		return -1;
	/*
	 * Leap second: POSIX time has no 23:59:60, so map all of it to the
	 * last millisecond of the second before.  Keeping the fraction
	 * (":60.5" -> ":59.5") would sort it before ":59.9" and break the
	 * (ts, partition, offset) order of events.
	 */
	if (sec == 60) {
		sec = 59;
		frac = 999;
	}
	ms = days_from_civil(y, mo, d) * 86400000LL +
	    ((int64_t)h * 3600 + mi * 60 + sec) * 1000 + frac;
	ms -= (int64_t)sign * ((int64_t)oh * 3600 + om * 60) * 1000;
	*out = ms;
	return 0;
}

int
util_parse_timestamp_ms(const char *s, int64_t *out)
{
	char		*end;
	long long	 v;

	if (*s == '\0')
		return -1;
	if (isdigit((unsigned char)*s) || *s == '-') {
		errno = 0;
		v = strtoll(s, &end, 10);
		if (*end == '\0') {
			if (errno != 0)
				return -1;
			*out = v;
			return 0;
		}
	}
	return util_parse_rfc3339_ms(s, out);
}

char *
util_format_rfc3339(int64_t ms, char *buf, size_t len)
{
	time_t		 secs = (time_t)util_floordiv(ms, 1000);
	int		 frac = (int)(ms - (int64_t)secs * 1000);
	struct tm	 tm;

	if (gmtime_r(&secs, &tm) == NULL) {
		snprintf(buf, len, "%lld", (long long)ms);
		return buf;
	}
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, frac);
	return buf;
}

/* FNV-1a folded through a 64-bit finalizer (splitmix64). */
uint64_t
util_hash64(const void *data, size_t len, uint64_t seed)
{
	const unsigned char	*p = data;
	uint64_t		 h = 0xcbf29ce484222325ull ^ seed;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h;
}

int
util_split_hostport(const char *addr, char *host, size_t hostlen, int *port)
{
	const char	*colon;
	const char	*hs = addr;
	size_t		 hl;
	char		*end;
	long		 p;

	if (*addr == '[') {
		const char *rb = strchr(addr, ']');

		if (rb == NULL || rb[1] != ':')
			return -1;
		hs = addr + 1;
		hl = (size_t)(rb - hs);
		colon = rb + 1;
	} else {
		if ((colon = strrchr(addr, ':')) == NULL)
			return -1;
		hl = (size_t)(colon - addr);
		/* "::1:80" is ambiguous: an IPv6 host needs brackets. */
		if (memchr(addr, ':', hl) != NULL)
			return -1;
	}
	if (hl == 0 || hl >= hostlen)
		return -1;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	/* Digits only: strtol alone would take " 80", "+80" and "-0". */
	if (colon[1] == '\0' || strspn(colon + 1, "0123456789") !=
	    strlen(colon + 1))
		return -1;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || errno != 0 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}

int
util_fmt_i64(char *dst, size_t room, int64_t v)
{
	static const char	digits[] =
	    "00010203040506070809101112131415161718192021222324"
	    "25262728293031323334353637383940414243444546474849"
	    "50515253545556575859606162636465666768697071727374"
	    "75767778798081828384858687888990919293949596979899";
	uint64_t		u = v < 0 ? -(uint64_t)v : (uint64_t)v, p10;
	size_t			n = 1;
	char			*p;

	/* Count the digits by comparison, then write them two a step from
	 * the end straight into dst: keys are rendered once per event. */
	for (p10 = 10; n < 20 && u >= p10; n++)
		p10 *= 10;
	if (v < 0)
		n++;
	if (n > room)
		return -1;
	p = dst + n;
	while (u >= 100) {
		p -= 2;
		memcpy(p, digits + (u % 100) * 2, 2);
		u /= 100;
	}
	if (u >= 10) {
		p -= 2;
		memcpy(p, digits + u * 2, 2);
	} else
		*--p = (char)('0' + u);
	if (v < 0)
		*--p = '-';
	return (int)n;
}

void
util_realtime_after(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}
