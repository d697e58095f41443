/*
 * log: leveled logging to stderr.
 *
 * Lines look like "2026-11-26T19:00:00.123Z info http: listening on ..." on
 * a terminal and "<6>http: listening on ..." under systemd (JOURNAL_STREAM
 * set), where journald reads the priority prefix.  Every line names its
 * module.  Thread-safe: one write(2) per line.  Never log per event on a
 * hot path; count in metrics instead.
 */
#ifndef MLOPSD_LOG_H
#define MLOPSD_LOG_H

#include <stdarg.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Set the threshold; lines above it are dropped.  Call before threads start. */
void		 log_set_level(enum log_level level);
enum log_level	 log_get_level(void);
/* Parse "error|warn|info|debug"; returns -1 for anything else. */
int		 log_level_parse(const char *name, enum log_level *out);
const char	*log_level_name(enum log_level level);

void	log_msg(enum log_level level, const char *module, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
void	log_vmsg(enum log_level level, const char *module, const char *fmt,
	    va_list ap) __attribute__((format(printf, 3, 0)));

#define log_error(mod, ...)	log_msg(LOG_ERROR, (mod), __VA_ARGS__)
#define log_warn(mod, ...)	log_msg(LOG_WARN, (mod), __VA_ARGS__)
#define log_info(mod, ...)	log_msg(LOG_INFO, (mod), __VA_ARGS__)
#define log_debug(mod, ...)	do {					\
	if (log_get_level() >= LOG_DEBUG)				\
		log_msg(LOG_DEBUG, (mod), __VA_ARGS__);			\
} while (0)

#endif
