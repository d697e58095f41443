/*
 * log: leveled logging to stderr, journald-aware (see log.h).
 *
 * The level is the module's only state; it is written once at start-up (and
 * on reload) and read with relaxed atomics everywhere else.
 */
#include "common/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = LOG_INFO;

static const char *log_names[] = { "error", "warn", "info", "debug" };
/* syslog priorities for journald: err, warning, info, debug */
static const int log_prio[] = { 3, 4, 6, 7 };

void
log_set_level(enum log_level level)
{
	atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

enum log_level
log_get_level(void)
{
	return atomic_load_explicit(&log_level, memory_order_relaxed);
}

int
log_level_parse(const char *name, enum log_level *out)
{
	for (int i = 0; i <= LOG_DEBUG; i++) {
		if (strcmp(name, log_names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return -1;
}

const char *
log_level_name(enum log_level level)
{
	if ((int)level < 0 || level > LOG_DEBUG)
		return "?";
	return log_names[level];
}

void
log_vmsg(enum log_level level, const char *module, const char *fmt, va_list ap)
{
	char		 line[2048];
	int		 n, m;
	struct timespec	 ts;
	struct tm	 tm;

	if ((int)level > (int)log_get_level())
		return;
	if (getenv("JOURNAL_STREAM") != NULL)
		n = snprintf(line, sizeof line, "<%d>%s: ", log_prio[level],
		    module);
	else {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = snprintf(line, sizeof line,
		    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		    log_names[level], module);
	}
	if (n < 0 || (size_t)n >= sizeof line)
		n = 0;
	m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t)n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	/* One write per line so concurrent threads do not interleave. */
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
}

void
log_msg(enum log_level level, const char *module, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vmsg(level, module, fmt, ap);
	va_end(ap);
}
