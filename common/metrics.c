/*
 * metrics: the registry of counters, gauges and histograms behind
 * GET /metrics, rendered in the Prometheus text format 0.0.4 (see
 * metrics.h).
 *
 * The hot path is metric_inc/metric_add/metric_set/metric_observe on a
 * series handle the caller looked up once; those touch only the series'
 * own atomics and never take a lock.  Doubles live in 64-bit atomics as
 * their bit patterns and are updated with a compare-and-swap loop;
 * counter increments by one go to a separate atomic integer with a plain
 * fetch-add, because that is what counters mostly do and it does not
 * retry under contention.  A histogram keeps one atomic count per bucket
 * (not cumulative) plus an atomic double sum; the render adds the buckets
 * up, so the +Inf bucket and _count always agree even while observations
 * race with a scrape.
 *
 * The registry lock guards the family array (kept sorted by name, so the
 * render needs no sort) and every family's hash table of series.  Lookup,
 * creation, removal and rendering take it; updates do not.  Collectors
 * have their own lock, held while they run at the start of a render, so
 * a collector may call metric_get (which takes the registry lock) and
 * metrics_remove_collector guarantees the collector is not running and
 * will not run again once it returns.
 *
 * Misuse (a bad name, a conflicting registration, metric_set on a
 * counter) is a programming error: it is logged and aborts, so it shows
 * up in the first test run rather than as a scrape that Prometheus
 * rejects.
 */
#include "common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"

/* metric_observe_many() counts locally up to this many buckets. */
#define METRICS_OBSERVE_MANY_BUCKETS	64

#define METRICS_PREFIX		"mlopsd_"
#define METRICS_HASH_SEED	0x6d6c6f7073640a01ULL
#define METRICS_TABLE_MIN	8

enum metric_type {
	METRIC_COUNTER,
	METRIC_GAUGE,
	METRIC_HISTOGRAM,
};

static const char *metric_type_names[] = {
	[METRIC_COUNTER] = "counter",
	[METRIC_GAUGE] = "gauge",
	[METRIC_HISTOGRAM] = "histogram",
};

/* One label-value tuple of a family. */
struct metric {
	/*
	 * Hot: updated without the registry lock.  ticks counts a counter's
	 * increments by one; bits holds a double: a counter's other adds, a
	 * gauge's value, a histogram's sum; counts are a histogram's
	 * per-bucket counts, nbuckets + 1 of them, the last for +Inf.
	 */
	_Atomic uint64_t	 ticks;
	_Atomic uint64_t	 bits;
	_Atomic uint64_t	*counts;

	/* Cold: fixed at creation, or guarded by the registry lock. */
	enum metric_type	 type;
	struct metric_family	*family;
	struct metric		*next;		/* hash chain */
	uint64_t		 hash;
	char			*key;		/* values, each + '\0' */
	size_t			 keylen;
	const char		**values;	/* into key */
};

struct metric_family {
	struct metrics		*m;
	enum metric_type	 type;
	char			*name;
	char			*help;
	char			*labelspec;	/* as registered */
	char			**labels;
	size_t			 nlabels;
	double			*buckets;	/* bounds, no +Inf */
	size_t			 nbuckets;

	/* Series by key; guarded by the registry lock. */
	struct metric		**table;
	size_t			 tsize;		/* power of two */
	size_t			 nseries;
};

struct metrics_collector {
	void			(*fn)(void *);
	void			*arg;
};

struct metrics {
	/* Guards families and every family's series table. */
	pthread_mutex_t		 lock;
	struct metric_family	**families;	/* sorted by name */
	size_t			 nfamilies;
	size_t			 familiescap;

	/* Guards collectors and is held while they run. */
	pthread_mutex_t		 collect_lock;
	struct metrics_collector *collectors;
	size_t			 ncollectors;
	size_t			 collectorscap;
};

/* An output buffer for the render. */
struct metrics_buf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

const double metrics_latency_buckets[] = {
	0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
const size_t metrics_latency_nbuckets =
    sizeof metrics_latency_buckets / sizeof metrics_latency_buckets[0];

static void __attribute__((noreturn, format(printf, 1, 2)))
metrics_misuse(const char *fmt, ...)
{
	va_list	ap;
	char	*msg;

	va_start(ap, fmt);
	xvasprintf(&msg, fmt, ap);
	va_end(ap);
	log_error("metrics", "%s", msg);
	free(msg);
	abort();
}

static inline double
metrics_u2d(uint64_t u)
{
	double	d;

	memcpy(&d, &u, sizeof d);
	return d;
}

static inline uint64_t
metrics_d2u(double d)
{
	uint64_t	u;

	memcpy(&u, &d, sizeof u);
	return u;
}

static inline void
metrics_atomic_add(_Atomic uint64_t *p, double v)
{
	uint64_t	old, new;

	old = atomic_load_explicit(p, memory_order_relaxed);
	do {
		new = metrics_d2u(metrics_u2d(old) + v);
	} while (!atomic_compare_exchange_weak_explicit(p, &old, new,
	    memory_order_relaxed, memory_order_relaxed));
}

/* ---- names ---- */

static int
metrics_name_char(char c, int first, int colon)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
		return 1;
	if (colon && c == ':')
		return 1;
	return !first && c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metrics, no ':' for labels. */
static int
metrics_valid_name(const char *s, size_t len, int colon)
{
	size_t	i;

	if (len == 0)
		return 0;
	for (i = 0; i < len; i++)
		if (!metrics_name_char(s[i], i == 0, colon))
			return 0;
	return 1;
}

/* Split and check "a,b,c"; the family owns the results. */
static void
metrics_parse_labels(struct metric_family *f, const char *spec)
{
	const char	*p, *end;
	size_t		 len, i;

	if (spec == NULL || *spec == '\0')
		return;
	for (p = spec;; p = end + 1) {
		end = strchr(p, ',');
		len = end != NULL ? (size_t)(end - p) : strlen(p);
		if (!metrics_valid_name(p, len, 0))
			metrics_misuse("%s: bad label name \"%.*s\" in \"%s\"",
			    f->name, (int)len, p, spec);
		if (len >= 2 && p[0] == '_' && p[1] == '_')
			metrics_misuse("%s: label \"%.*s\": names starting "
			    "with __ are reserved", f->name, (int)len, p);
		if (f->type == METRIC_HISTOGRAM && len == 2 &&
		    memcmp(p, "le", 2) == 0)
			metrics_misuse("%s: label \"le\" is reserved for "
			    "histogram buckets", f->name);
		for (i = 0; i < f->nlabels; i++)
			if (strlen(f->labels[i]) == len &&
			    memcmp(f->labels[i], p, len) == 0)
				metrics_misuse("%s: label \"%.*s\" given twice",
				    f->name, (int)len, p);
		f->labels = xrealloc(f->labels,
		    (f->nlabels + 1) * sizeof *f->labels);
		f->labels[f->nlabels++] = xstrndup(p, len);
		if (end == NULL)
			break;
	}
}

/* ---- registry ---- */

/*
 * A new, empty registry.  Free it with metrics_free once no thread uses
 * it or any handle from it.
 */
struct metrics *
metrics_new(void)
{
	struct metrics	*m = xcalloc(1, sizeof *m);

	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->collect_lock, NULL);
	return m;
}

static void
metrics_series_free(struct metric *s)
{
	free(s->counts);
	free(s->values);
	free(s->key);
	free(s);
}

static void
metrics_family_free(struct metric_family *f)
{
	struct metric	*s, *next;
	size_t		 i;

	for (i = 0; i < f->tsize; i++) {
		for (s = f->table[i]; s != NULL; s = next) {
			next = s->next;
			metrics_series_free(s);
		}
	}
	free(f->table);
	for (i = 0; i < f->nlabels; i++)
		free(f->labels[i]);
	free(f->labels);
	free(f->buckets);
	free(f->labelspec);
	free(f->help);
	free(f->name);
	free(f);
}

/*
 * Free the registry, its families and series; every handle dies.  Not
 * thread-safe against other calls on the same registry.
 */
void
metrics_free(struct metrics *m)
{
	size_t	i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nfamilies; i++)
		metrics_family_free(m->families[i]);
	free(m->families);
	free(m->collectors);
	pthread_mutex_destroy(&m->collect_lock);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Binary search by name; *at is where it is or would go.  Lock held. */
static struct metric_family *
metrics_find(struct metrics *m, const char *name, size_t *at)
{
	size_t	lo = 0, hi = m->nfamilies, mid;
	int	c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = strcmp(name, m->families[mid]->name);
		if (c == 0) {
			*at = mid;
			return m->families[mid];
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	*at = lo;
	return NULL;
}

static int
metrics_same_buckets(const struct metric_family *f, const double *buckets,
    size_t nbuckets)
{
	return f->nbuckets == nbuckets && (nbuckets == 0 ||
	    memcmp(f->buckets, buckets, nbuckets * sizeof *buckets) == 0);
}

static struct metric_family *
metrics_register(struct metrics *m, enum metric_type type, const char *name,
    const char *help, const char *labels, const double *buckets,
    size_t nbuckets)
{
	struct metric_family	*f;
	const char		*spec = labels != NULL ? labels : "";
	size_t			 at, i;

	if (name == NULL || !metrics_valid_name(name, strlen(name), 1))
		metrics_misuse("bad metric name \"%s\"",
		    name != NULL ? name : "(null)");
	if (strncmp(name, METRICS_PREFIX, strlen(METRICS_PREFIX)) != 0)
		metrics_misuse("metric name \"%s\" does not begin with "
		    "\"" METRICS_PREFIX "\"", name);
	if (help == NULL || *help == '\0')
		metrics_misuse("%s: help text is missing", name);
	if (type == METRIC_HISTOGRAM) {
		for (i = 0; i < nbuckets; i++) {
			if (!isfinite(buckets[i]))
				metrics_misuse("%s: bucket %zu is not finite "
				    "(+Inf is added by itself)", name, i);
			if (i > 0 && buckets[i] <= buckets[i - 1])
				metrics_misuse("%s: buckets are not strictly "
				    "ascending at %zu", name, i);
		}
	}

	pthread_mutex_lock(&m->lock);
	if ((f = metrics_find(m, name, &at)) != NULL) {
		if (f->type != type || strcmp(f->labelspec, spec) != 0 ||
		    (type == METRIC_HISTOGRAM &&
		    !metrics_same_buckets(f, buckets, nbuckets)))
			metrics_misuse("%s: registered again as %s {%s}, "
			    "was %s {%s}%s", name, metric_type_names[type],
			    spec, metric_type_names[f->type], f->labelspec,
			    f->type == type && strcmp(f->labelspec, spec) == 0 ?
			    " with other buckets" : "");
		pthread_mutex_unlock(&m->lock);
		return f;
	}

	f = xcalloc(1, sizeof *f);
	f->m = m;
	f->type = type;
	f->name = xstrdup(name);
	f->help = xstrdup(help);
	f->labelspec = xstrdup(spec);
	metrics_parse_labels(f, labels);
	if (type == METRIC_HISTOGRAM && nbuckets > 0) {
		f->buckets = xcalloc(nbuckets, sizeof *f->buckets);
		memcpy(f->buckets, buckets, nbuckets * sizeof *buckets);
		f->nbuckets = nbuckets;
	}
	f->tsize = METRICS_TABLE_MIN;
	f->table = xcalloc(f->tsize, sizeof *f->table);

	m->families = xgrow(m->families, &m->familiescap, m->nfamilies + 1,
	    sizeof *m->families);
	memmove(&m->families[at + 1], &m->families[at],
	    (m->nfamilies - at) * sizeof *m->families);
	m->families[at] = f;
	m->nfamilies++;
	pthread_mutex_unlock(&m->lock);
	return f;
}

/*
 * Register families.  The name must match [a-zA-Z_:][a-zA-Z0-9_:]* and
 * begin with "mlopsd_" (a counter's "_total" is the caller's to add);
 * help must be non-empty; label names match [a-zA-Z_][a-zA-Z0-9_]* and do
 * not begin with "__".  Anything else, or a conflicting registration,
 * aborts.  The family lives until metrics_free.  Thread-safe.
 */
struct metric_family *
metrics_counter(struct metrics *m, const char *name, const char *help,
    const char *labels)
{
	return metrics_register(m, METRIC_COUNTER, name, help, labels, NULL, 0);
}

/* A gauge: the same rules as metrics_counter. */
struct metric_family *
metrics_gauge(struct metrics *m, const char *name, const char *help,
    const char *labels)
{
	return metrics_register(m, METRIC_GAUGE, name, help, labels, NULL, 0);
}

/* Buckets must be finite and strictly ascending; they are copied. */
struct metric_family *
metrics_histogram(struct metrics *m, const char *name, const char *help,
    const char *labels, const double *buckets, size_t nbuckets)
{
	return metrics_register(m, METRIC_HISTOGRAM, name, help, labels,
	    buckets, nbuckets);
}

/* ---- series ---- */

/* Key of a value tuple: each value followed by '\0'.  Caller frees. */
static char *
metrics_key(const struct metric_family *f, const char **values, size_t *len)
{
	char	*key, *p;
	size_t	 i, n = 0;

	for (i = 0; i < f->nlabels; i++) {
		if (values[i] == NULL)
			metrics_misuse("%s: value of label \"%s\" is NULL",
			    f->name, f->labels[i]);
		n += strlen(values[i]) + 1;
	}
	p = key = xmalloc(n);
	for (i = 0; i < f->nlabels; i++) {
		n = strlen(values[i]) + 1;
		memcpy(p, values[i], n);
		p += n;
	}
	*len = (size_t)(p - key);
	return key;
}

/* Where the series with this key is, or where it would go.  Lock held. */
static struct metric **
metrics_slot(struct metric_family *f, const char *key, size_t keylen,
    uint64_t hash)
{
	struct metric	**sp;

	for (sp = &f->table[hash & (f->tsize - 1)]; *sp != NULL;
	    sp = &(*sp)->next) {
		if ((*sp)->hash == hash && (*sp)->keylen == keylen &&
		    memcmp((*sp)->key, key, keylen) == 0)
			break;
	}
	return sp;
}

static void
metrics_grow(struct metric_family *f)
{
	struct metric	**old = f->table, *s, *next;
	size_t		  oldsize = f->tsize, i;

	f->tsize *= 2;
	f->table = xcalloc(f->tsize, sizeof *f->table);
	for (i = 0; i < oldsize; i++) {
		for (s = old[i]; s != NULL; s = next) {
			next = s->next;
			s->next = f->table[s->hash & (f->tsize - 1)];
			f->table[s->hash & (f->tsize - 1)] = s;
		}
	}
	free(old);
}

/*
 * The series of f for these label values, created at zero on first use.
 * values must hold exactly as many non-NULL strings as f has labels
 * (none for a family without labels).  The handle stays valid until
 * metric_remove of the same values or metrics_free.  Takes the registry
 * lock: look a series up once, not per event.
 */
struct metric *
metric_getv(struct metric_family *f, const char **values)
{
	struct metric	**sp, *s;
	char		 *key, *p;
	size_t		  keylen, i;
	uint64_t	  hash;

	key = metrics_key(f, values, &keylen);
	hash = util_hash64(key, keylen, METRICS_HASH_SEED);

	pthread_mutex_lock(&f->m->lock);
	sp = metrics_slot(f, key, keylen, hash);
	if ((s = *sp) != NULL) {
		pthread_mutex_unlock(&f->m->lock);
		free(key);
		return s;
	}
	s = xcalloc(1, sizeof *s);
	s->type = f->type;
	s->family = f;
	s->hash = hash;
	s->key = key;
	s->keylen = keylen;
	s->values = xcalloc(f->nlabels, sizeof *s->values);
	for (i = 0, p = key; i < f->nlabels; i++, p += strlen(p) + 1)
		s->values[i] = p;
	if (f->type == METRIC_HISTOGRAM)
		s->counts = xcalloc(f->nbuckets + 1, sizeof *s->counts);
	*sp = s;
	if (++f->nseries > f->tsize)
		metrics_grow(f);
	pthread_mutex_unlock(&f->m->lock);
	return s;
}

/* Like metric_getv with the values as arguments (const char *). */
struct metric *
metric_get(struct metric_family *f, ...)
{
	const char	 *small[8], **values = small;
	struct metric	 *s;
	va_list		  ap;
	size_t		  i;

	if (f->nlabels > sizeof small / sizeof small[0])
		values = xcalloc(f->nlabels, sizeof *values);
	va_start(ap, f);
	for (i = 0; i < f->nlabels; i++)
		values[i] = va_arg(ap, const char *);
	va_end(ap);
	s = metric_getv(f, values);
	if (values != small)
		free(values);
	return s;
}

/*
 * Remove the series for these values, if there is one.  Its handle is
 * freed: no thread may use it any more.  Thread-safe.
 */
void
metric_remove(struct metric_family *f, const char **values)
{
	struct metric	**sp, *s;
	char		 *key;
	size_t		  keylen;
	uint64_t	  hash;

	key = metrics_key(f, values, &keylen);
	hash = util_hash64(key, keylen, METRICS_HASH_SEED);
	pthread_mutex_lock(&f->m->lock);
	sp = metrics_slot(f, key, keylen, hash);
	if ((s = *sp) != NULL) {
		*sp = s->next;
		f->nseries--;
	}
	pthread_mutex_unlock(&f->m->lock);
	free(key);
	if (s != NULL)
		metrics_series_free(s);
}

/* ---- updates: lock-free ---- */

static inline void
metrics_check_type(const struct metric *s, int ok, const char *what)
{
	if (!ok)
		metrics_misuse("%s: %s on a %s", s->family->name, what,
		    metric_type_names[s->type]);
}

/* Add one to a counter or gauge.  Lock-free. */
void
metric_inc(struct metric *s)
{
	if (s->type == METRIC_COUNTER)
		atomic_fetch_add_explicit(&s->ticks, 1, memory_order_relaxed);
	else {
		metrics_check_type(s, s->type == METRIC_GAUGE, "metric_inc");
		metrics_atomic_add(&s->bits, 1.0);
	}
}

/* Add v to a gauge, or to a counter when v >= 0.  Lock-free. */
void
metric_add(struct metric *s, double v)
{
	metrics_check_type(s, s->type != METRIC_HISTOGRAM, "metric_add");
	if (s->type == METRIC_COUNTER && !(v >= 0))
		metrics_misuse("%s: counter add of %g (counters only go up)",
		    s->family->name, v);
	metrics_atomic_add(&s->bits, v);
}

/* Set a gauge.  Lock-free. */
void
metric_set(struct metric *s, double v)
{
	metrics_check_type(s, s->type == METRIC_GAUGE, "metric_set");
	atomic_store_explicit(&s->bits, metrics_d2u(v), memory_order_relaxed);
}

/* Record one observation in a histogram.  Lock-free. */
void
metric_observe(struct metric *s, double v)
{
	const double	*b = s->family->buckets;
	size_t		 lo = 0, hi = s->family->nbuckets, mid;

	metrics_check_type(s, s->type == METRIC_HISTOGRAM, "metric_observe");
	/* The first bucket whose bound is >= v; NaN lands in +Inf. */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (v <= b[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	atomic_fetch_add_explicit(&s->counts[lo], 1, memory_order_relaxed);
	metrics_atomic_add(&s->bits, v);
}

void
metric_observe_many(struct metric *s, const double *v, size_t n)
{
	const double	*b = s->family->buckets;
	size_t		 nb = s->family->nbuckets;
	uint64_t	 counts[METRICS_OBSERVE_MANY_BUCKETS] = { 0 };
	double		 sum = 0;

	metrics_check_type(s, s->type == METRIC_HISTOGRAM,
	    "metric_observe_many");
	if (nb >= METRICS_OBSERVE_MANY_BUCKETS) {
		for (size_t i = 0; i < n; i++)
			metric_observe(s, v[i]);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		size_t	lo = 0, hi = nb, mid;

		while (lo < hi) {
			mid = lo + (hi - lo) / 2;
			if (v[i] <= b[mid])
				hi = mid;
			else
				lo = mid + 1;
		}
		counts[lo]++;
		sum += v[i];
	}
	for (size_t i = 0; i <= nb; i++)
		if (counts[i] > 0)
			atomic_fetch_add_explicit(&s->counts[i], counts[i],
			    memory_order_relaxed);
	if (n > 0)
		metrics_atomic_add(&s->bits, sum);
}

static uint64_t
metrics_hist_count(const struct metric *s)
{
	uint64_t	n = 0;
	size_t		i;

	for (i = 0; i <= s->family->nbuckets; i++)
		n += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
	return n;
}

/*
 * The value of a counter or gauge; for a histogram, its number of
 * observations.  Lock-free; meant for tests.
 */
double
metric_value(const struct metric *s)
{
	double	v;

	if (s->type == METRIC_HISTOGRAM)
		return (double)metrics_hist_count(s);
	v = metrics_u2d(atomic_load_explicit(&s->bits, memory_order_relaxed));
	if (s->type == METRIC_COUNTER)
		v += (double)atomic_load_explicit(&s->ticks,
		    memory_order_relaxed);
	return v;
}

/* ---- collectors ---- */

/*
 * Run fn(arg) at the start of every render.  fn runs with the collector
 * lock held and must not add or remove collectors.  Thread-safe.
 */
void
metrics_add_collector(struct metrics *m, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&m->collect_lock);
	m->collectors = xgrow(m->collectors, &m->collectorscap,
	    m->ncollectors + 1, sizeof *m->collectors);
	m->collectors[m->ncollectors].fn = fn;
	m->collectors[m->ncollectors].arg = arg;
	m->ncollectors++;
	pthread_mutex_unlock(&m->collect_lock);
}

/*
 * Remove one registration of fn(arg).  When this returns, fn is not
 * running and will not run again for it.  Thread-safe.
 */
void
metrics_remove_collector(struct metrics *m, void (*fn)(void *), void *arg)
{
	size_t	i;

	pthread_mutex_lock(&m->collect_lock);
	for (i = 0; i < m->ncollectors; i++) {
		if (m->collectors[i].fn == fn && m->collectors[i].arg == arg) {
			memmove(&m->collectors[i], &m->collectors[i + 1],
			    (m->ncollectors - i - 1) * sizeof *m->collectors);
			m->ncollectors--;
			break;
		}
	}
	pthread_mutex_unlock(&m->collect_lock);
}

/* ---- render ---- */

static void
metrics_put(struct metrics_buf *b, const char *s, size_t n)
{
	b->p = xgrow(b->p, &b->cap, b->len + n + 1, 1);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
metrics_puts(struct metrics_buf *b, const char *s)
{
	metrics_put(b, s, strlen(s));
}

/* s with backslash and newline escaped, and '"' too when quote is set. */
static void
metrics_put_escaped(struct metrics_buf *b, const char *s, int quote)
{
	const char	*run = s;

	for (; *s != '\0'; s++) {
		if (*s != '\\' && *s != '\n' && !(quote && *s == '"'))
			continue;
		metrics_put(b, run, (size_t)(s - run));
		metrics_puts(b, *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" :
		    "\\\"");
		run = s + 1;
	}
	metrics_put(b, run, (size_t)(s - run));
}

/*
 * A number the way Prometheus spells it: NaN, +Inf, -Inf; integral
 * values as integers; anything else in the fewest digits that read back
 * to the same double.
 */
static void
metrics_put_number(struct metrics_buf *b, double v)
{
	char	buf[64];
	int	prec;

	if (isnan(v))
		metrics_puts(b, "NaN");
	else if (isinf(v))
		metrics_puts(b, v > 0 ? "+Inf" : "-Inf");
	else if (v == 0)
		metrics_puts(b, "0");		/* also -0 */
	else if (v == trunc(v) && fabs(v) < 1e18) {
		snprintf(buf, sizeof buf, "%.0f", v);
		metrics_puts(b, buf);
	} else {
		for (prec = 15; prec < 17; prec++) {
			snprintf(buf, sizeof buf, "%.*g", prec, v);
			if (strtod(buf, NULL) == v)
				break;
		}
		if (prec == 17)
			snprintf(buf, sizeof buf, "%.17g", v);
		metrics_puts(b, buf);
	}
}

/* {a="x",b="y"} with an optional le="..." last; nothing if no labels. */
static void
metrics_put_labels(struct metrics_buf *b, const struct metric *s,
    const char *le)
{
	const struct metric_family	*f = s->family;
	size_t				 i;

	if (f->nlabels == 0 && le == NULL)
		return;
	metrics_puts(b, "{");
	for (i = 0; i < f->nlabels; i++) {
		if (i > 0)
			metrics_puts(b, ",");
		metrics_puts(b, f->labels[i]);
		metrics_puts(b, "=\"");
		metrics_put_escaped(b, s->values[i], 1);
		metrics_puts(b, "\"");
	}
	if (le != NULL) {
		if (f->nlabels > 0)
			metrics_puts(b, ",");
		metrics_puts(b, "le=\"");
		metrics_puts(b, le);
		metrics_puts(b, "\"");
	}
	metrics_puts(b, "}");
}

static void
metrics_put_sample(struct metrics_buf *b, const struct metric *s,
    const char *suffix, const char *le, double v)
{
	metrics_puts(b, s->family->name);
	metrics_puts(b, suffix);
	metrics_put_labels(b, s, le);
	metrics_puts(b, " ");
	metrics_put_number(b, v);
	metrics_puts(b, "\n");
}

static void
metrics_put_histogram(struct metrics_buf *b, const struct metric *s)
{
	const struct metric_family	*f = s->family;
	struct metrics_buf		 le = { NULL, 0, 0 };
	uint64_t			 n = 0;
	double				 sum;
	size_t				 i;

	/* Read the sum first so it never includes more than the buckets. */
	sum = metrics_u2d(atomic_load_explicit(&s->bits, memory_order_relaxed));
	for (i = 0; i <= f->nbuckets; i++) {
		n += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
		le.len = 0;
		metrics_put_number(&le, i < f->nbuckets ? f->buckets[i] :
		    INFINITY);
		metrics_put_sample(b, s, "_bucket", le.p, (double)n);
	}
	free(le.p);
	metrics_put_sample(b, s, "_sum", NULL, sum);
	metrics_put_sample(b, s, "_count", NULL, (double)n);
}

/* Label values in order: the key bytes compare the same way. */
static int
metrics_series_cmp(const void *a, const void *b)
{
	const struct metric	*x = *(const struct metric * const *)a;
	const struct metric	*y = *(const struct metric * const *)b;
	size_t			 n;
	int			 c;

	n = x->keylen < y->keylen ? x->keylen : y->keylen;
	c = memcmp(x->key, y->key, n);

	if (c != 0)
		return c;
	return (x->keylen > y->keylen) - (x->keylen < y->keylen);
}

/* One family, series sorted by label values; nothing if it has none. */
static void
metrics_put_family(struct metrics_buf *b, const struct metric_family *f)
{
	struct metric	**all, *s;
	size_t		  i, n = 0;

	if (f->nseries == 0)
		return;
	all = xcalloc(f->nseries, sizeof *all);
	for (i = 0; i < f->tsize; i++)
		for (s = f->table[i]; s != NULL; s = s->next)
			all[n++] = s;
	qsort(all, n, sizeof *all, metrics_series_cmp);

	metrics_puts(b, "# HELP ");
	metrics_puts(b, f->name);
	metrics_puts(b, " ");
	metrics_put_escaped(b, f->help, 0);
	metrics_puts(b, "\n# TYPE ");
	metrics_puts(b, f->name);
	metrics_puts(b, " ");
	metrics_puts(b, metric_type_names[f->type]);
	metrics_puts(b, "\n");
	for (i = 0; i < n; i++) {
		if (f->type == METRIC_HISTOGRAM)
			metrics_put_histogram(b, all[i]);
		else
			metrics_put_sample(b, all[i], "", NULL,
			    metric_value(all[i]));
	}
	free(all);
}

/*
 * Run the collectors, then render every family with at least one series,
 * sorted by name, its series sorted by label values.  Returns a
 * NUL-terminated string the caller frees, its length in *len (if not
 * NULL).  Thread-safe; updates proceed while it runs.
 */
char *
metrics_render(struct metrics *m, size_t *len)
{
	struct metrics_buf	b = { NULL, 0, 0 };
	size_t			i;

	pthread_mutex_lock(&m->collect_lock);
	for (i = 0; i < m->ncollectors; i++)
		m->collectors[i].fn(m->collectors[i].arg);
	pthread_mutex_unlock(&m->collect_lock);

	metrics_puts(&b, "");
	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->nfamilies; i++)
		metrics_put_family(&b, m->families[i]);
	pthread_mutex_unlock(&m->lock);
	if (len != NULL)
		*len = b.len;
	return b.p;
}
