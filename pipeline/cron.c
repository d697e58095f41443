/*
 * cron: the schedule matcher of the pipeline scheduler.  Five fields
 * (minute hour day-of-month month day-of-week) as in Vixie cron: numbers,
 * "*", ranges, lists, steps, month and weekday names, 7 for Sunday, and
 * the @hourly/@daily/@weekly/@monthly/@yearly shorthands.  Matching is per
 * local-time minute (struct tm), so the engine decides what a minute is
 * (a DST jump skips or repeats one, as cron does).
 */
#include "pipeline/pipeline-internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct cron_field {
	const char		*name;
	int			 min, max;
	const char *const	*names;		/* names[i] is min + i, or NULL */
};

static const char *const cron_months[] = { "jan", "feb", "mar", "apr", "may",
	"jun", "jul", "aug", "sep", "oct", "nov", "dec", NULL };
static const char *const cron_days[] = { "sun", "mon", "tue", "wed", "thu",
	"fri", "sat", NULL };

static const struct cron_field cron_fields[5] = {
	{ "minute", 0, 59, NULL },
	{ "hour", 0, 23, NULL },
	{ "day of month", 1, 31, NULL },
	{ "month", 1, 12, cron_months },
	{ "day of week", 0, 7, cron_days },
};

static const struct {
	const char	*name;
	const char	*expr;
} cron_macros[] = {
	{ "@yearly", "0 0 1 1 *" }, { "@annually", "0 0 1 1 *" },
	{ "@monthly", "0 0 1 * *" }, { "@weekly", "0 0 * * 0" },
	{ "@daily", "0 0 * * *" }, { "@midnight", "0 0 * * *" },
	{ "@hourly", "0 * * * *" },
};

/* A number or a name of field f at *p; advances *p. */
static int
cron_value(const struct cron_field *f, const char **p, int *out)
{
	const char	*s = *p;
	char		*end;
	long		 v;
	size_t		 i;

	if (isdigit((unsigned char)*s)) {
		v = strtol(s, &end, 10);
		if (end - s > 2 || v < f->min || v > f->max)
			return -1;
		*out = (int)v;
		*p = end;
		return 0;
	}
	for (i = 0; f->names != NULL && f->names[i] != NULL; i++)
		if (strncasecmp(s, f->names[i], 3) == 0 &&
		    !isalpha((unsigned char)s[3])) {
			*out = f->min + (int)i;
			*p = s + 3;
			return 0;
		}
	return -1;
}

static int
cron_field_parse(const struct cron_field *f, const char *s, uint64_t *bits,
    int *star, char *err, size_t errlen)
{
	const char	*p = s;
	char		*end;
	int		 lo, hi, step, v;
	long		 lstep;

	*bits = 0;
	*star = 0;
	for (;;) {
		step = 1;
		if (*p == '*') {
			lo = f->min;
			hi = f->max == 7 ? 6 : f->max;
			p++;
			*star = 1;
		} else {
			if (cron_value(f, &p, &lo) == -1)
				goto bad;
			hi = lo;
			if (*p == '-') {
				p++;
				if (cron_value(f, &p, &hi) == -1)
					goto bad;
				if (hi < lo) {
					snprintf(err, errlen, "%s: range %d-%d "
					    "goes backwards", f->name, lo, hi);
					return -1;
				}
			}
		}
		if (*p == '/') {
			p++;
			lstep = strtol(p, &end, 10);
			if (end == p || lstep < 1 || lstep > f->max) {
				snprintf(err, errlen, "%s: bad step in \"%s\"",
				    f->name, s);
				return -1;
			}
			step = (int)lstep;
			p = end;
			if (!*star && hi == lo)
				hi = f->max == 7 ? 6 : f->max;
		}
		for (v = lo; v <= hi; v += step)
			*bits |= (uint64_t)1 << (f->max == 7 && v == 7 ? 0 : v);
		if (*p == '\0')
			return 0;
		if (*p != ',')
			goto bad;
		p++;
		*star = 0;
	}
bad:
	snprintf(err, errlen, "%s: bad field \"%s\" (allowed %d-%d%s, *, "
	    "ranges a-b, lists a,b, steps */n)", f->name, s, f->min, f->max,
	    f->names != NULL ? " or names" : "");
	return -1;
}

int
dag_cron_parse(const char *s, struct dag_cron *c, char *err, size_t errlen)
{
	char		 buf[256], *fields[6], *save = NULL, *tok;
	uint64_t	 bits[5];
	int		 stars[5], i, n = 0;
	size_t		 m;

	for (m = 0; m < sizeof cron_macros / sizeof cron_macros[0]; m++)
		if (strcmp(s, cron_macros[m].name) == 0)
			return dag_cron_parse(cron_macros[m].expr, c, err, errlen);
	if (s[0] == '@') {
		snprintf(err, errlen, "unknown shorthand \"%s\" (@hourly, "
		    "@daily, @weekly, @monthly, @yearly)", s);
		return -1;
	}
	if (strlen(s) >= sizeof buf) {
		snprintf(err, errlen, "too long");
		return -1;
	}
	strcpy(buf, s);
	for (tok = strtok_r(buf, " \t", &save); tok != NULL;
	    tok = strtok_r(NULL, " \t", &save)) {
		if (n == 5) {
			n++;
			break;
		}
		fields[n++] = tok;
	}
	if (n != 5) {
		snprintf(err, errlen, "needs 5 fields (minute hour day-of-month "
		    "month day-of-week), not %s%d", n > 5 ? "more than " : "",
		    n > 5 ? 5 : n);
		return -1;
	}
	for (i = 0; i < 5; i++)
		if (cron_field_parse(&cron_fields[i], fields[i], &bits[i],
		    &stars[i], err, errlen) == -1)
			return -1;
	memset(c, 0, sizeof *c);
	c->minute = bits[0];
	c->hour = (uint32_t)bits[1];
	c->dom = (uint32_t)bits[2];
	c->month = (uint16_t)bits[3];
	c->dow = (uint8_t)bits[4];
	c->dom_star = stars[2];
	c->dow_star = stars[4];
	return 0;
}

int
dag_cron_match(const struct dag_cron *c, const struct tm *tm)
{
	int	dom, dow;

	if (!(c->minute & ((uint64_t)1 << tm->tm_min)) ||
	    !(c->hour & (1u << tm->tm_hour)) ||
	    !(c->month & (1u << (tm->tm_mon + 1))))
		return 0;
	dom = (c->dom & (1u << tm->tm_mday)) != 0;
	dow = (c->dow & (1u << tm->tm_wday)) != 0;
	/* Vixie cron: both restricted -> either matches. */
	if (!c->dom_star && !c->dow_star)
		return dom || dow;
	return dom && dow;
}
