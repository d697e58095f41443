/*
 * xmalloc: allocation that never returns NULL.
 *
 * mlopsd cannot do anything useful after an allocation failure, so these
 * wrappers log and abort instead; callers never test for NULL.
 */
#ifndef MLOPSD_XMALLOC_H
#define MLOPSD_XMALLOC_H

#include <stdarg.h>
#include <stddef.h>

void	*xmalloc(size_t size);
void	*xcalloc(size_t nmemb, size_t size);
void	*xrealloc(void *ptr, size_t size);
/* Grow an array to at least `need` elements, doubling; updates *cap. */
void	*xgrow(void *ptr, size_t *cap, size_t need, size_t elem);
char	*xstrdup(const char *s);
char	*xstrndup(const char *s, size_t n);
int	 xasprintf(char **ret, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
int	 xvasprintf(char **ret, const char *fmt, va_list ap)
	    __attribute__((format(printf, 2, 0)));
/* Like xasprintf but returns the string. */
char	*xstrfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
