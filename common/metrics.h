/*
 * metrics: counters, gauges and histograms with labels, rendered in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * A registry holds families (one name, help, type and label names); a
 * family holds series (one per label-value tuple).  Series handles are
 * stable for the registry's lifetime, so hot paths look a series up once
 * and then update it with lock-free atomics.  Creating families and series
 * takes the registry lock; updating never does.  All functions are
 * thread-safe.  Every name must begin with "mlopsd_".
 */
#ifndef MLOPSD_METRICS_H
#define MLOPSD_METRICS_H

#include <stddef.h>

struct metrics;
struct metric_family;
struct metric;

struct metrics		*metrics_new(void);
void			 metrics_free(struct metrics *m);

/*
 * Register a family.  labels is a comma-separated list of label names
 * ("source,result") or NULL.  Registering the same name twice with the same
 * type and labels returns the existing family; a conflicting registration
 * aborts (it is a programming error).
 */
struct metric_family	*metrics_counter(struct metrics *m, const char *name,
			    const char *help, const char *labels);
struct metric_family	*metrics_gauge(struct metrics *m, const char *name,
			    const char *help, const char *labels);
/* buckets: ascending upper bounds, without +Inf (added automatically). */
struct metric_family	*metrics_histogram(struct metrics *m, const char *name,
			    const char *help, const char *labels,
			    const double *buckets, size_t nbuckets);

/*
 * The series of a family for the given label values (exactly as many
 * strings as the family has labels), created at zero on first use.
 */
struct metric		*metric_get(struct metric_family *f, ...);
struct metric		*metric_getv(struct metric_family *f, const char **values);
/* Remove a series (e.g. a revoked partition's lag gauge); the handle dies. */
void			 metric_remove(struct metric_family *f, const char **values);

void	metric_inc(struct metric *s);			/* counter, gauge */
void	metric_add(struct metric *s, double v);		/* counter (v >= 0), gauge */
void	metric_set(struct metric *s, double v);		/* gauge */
void	metric_observe(struct metric *s, double v);	/* histogram */
/* n observations with one atomic add per bucket hit and one to the sum:
   the same counts as n metric_observe() calls (the sum may differ in its
   last bits).  Any thread. */
void	metric_observe_many(struct metric *s, const double *v, size_t n);
double	metric_value(const struct metric *s);		/* counter, gauge; histogram:
							   its count.  For tests */

/*
 * A collector runs at the start of every render, so gauges that are cheap
 * to compute on demand (lag, queue lengths) are set only when scraped.
 * Called with no registry lock held; it may call metric_get/metric_set.
 */
void	metrics_add_collector(struct metrics *m, void (*fn)(void *arg), void *arg);
void	metrics_remove_collector(struct metrics *m, void (*fn)(void *arg), void *arg);

/* Render all families, sorted by name.  Caller frees the result. */
char	*metrics_render(struct metrics *m, size_t *len);

/* Default latency buckets in seconds, from 50 µs to 10 s. */
extern const double	metrics_latency_buckets[];
extern const size_t	metrics_latency_nbuckets;

#endif
