/*
 * features: the feature repo, the windowed aggregation engine and the
 * online store (SPEC §3).  This is the module's one public header; the
 * aggregation engine's internals are in agg-internal.h.
 */
#ifndef MLOPSD_FEATURES_H
#define MLOPSD_FEATURES_H

#include <stddef.h>
#include <stdint.h>

/*
 * A field value of an event, as decoded by ingest and read by the
 * aggregations.  Strings are not owned by the value: they point into the
 * decoder's buffer (or the store's copy) and carry their length.
 */
enum agg_vtype {
	AGG_NULL = 0,
	AGG_INT,
	AGG_DOUBLE,
	AGG_BOOL,
	AGG_STRING,
};

struct agg_value {
	enum agg_vtype	 type;
	union {
		int64_t	 i;
		double	 d;
		int	 b;
		struct {
			const char	*ptr;
			uint32_t	 len;
		} s;
	} u;
};

#endif
