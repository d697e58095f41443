/*
 * bench_memory: memory of the online store per entity, measured two ways
 * without Kafka or HTTP in the way.
 *
 * It loads a feature repo (default examples/repo), opens the online store
 * on a scratch SQLite file and applies --events events to each of
 * --entities entities of one view (default user_clicks) straight through
 * store_apply(), the way ingest does after decoding: user ids 0..N-1, event
 * times spread over the --spread-ms before now, prices and pages as
 * bench_produce makes them.  Then it prints the process's RSS growth per
 * entity (VmRSS from /proc/self/status, before and after) beside the
 * store's own accounting (store_mem_bytes(): entity structs, keys, hash
 * table and agg_state_mem_bytes() of each state), so the allocator's
 * overhead shows as the difference.  Nothing is checkpointed: SQLite's
 * page cache is not in the figure (bench/run measures the daemon for that).
 *
 * With --checkpoint it then times one checkpoint of every entity in its
 * two parts: encoding the states (store_ckpt_collect(), which ingest's
 * shard threads run) and writing them (store_ckpt_commit(), the writer
 * thread's), per entity.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "features/agg-internal.h"
#include "features/features.h"
#include "features/store.h"

static const char *bm_pages[] = {
	"/", "/cart", "/p/1", "/p/2", "/p/3", "/p/17", "/p/42", "/search",
	"/checkout", "/p/99",
};
#define BM_NPAGES	(sizeof bm_pages / sizeof bm_pages[0])

/* VmRSS of this process in bytes, or 0. */
static long long
bm_rss(void)
{
	FILE		*f = fopen("/proc/self/status", "r");
	char		 line[256];
	long long	 kb = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "VmRSS:", 6) == 0)
			kb = atoll(line + 6);
	fclose(f);
	return kb * 1024;
}

static uint64_t
bm_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* One checkpoint of every (dirty) entity, timed in its two parts. */
static int
bm_checkpoint(struct store *s, size_t n)
{
	struct store_ckpt	*c = store_ckpt_new();
	char			 err[512];
	uint64_t		 t0, t1, t2;

	t0 = util_mono_ns();
	for (int i = 0; i < store_nshards(s); i++)
		store_ckpt_collect(s, i, c);
	t1 = util_mono_ns();
	if (store_ckpt_commit(s, c, err, sizeof err) != 0) {
		fprintf(stderr, "bench_memory: checkpoint: %s\n", err);
		store_ckpt_free(c);
		return -1;
	}
	t2 = util_mono_ns();
	printf("checkpoint of %zu entities: encode %.2f us, commit %.2f us "
	    "per entity\n", store_ckpt_nentities(c),
	    (double)(t1 - t0) / 1e3 / (double)n,
	    (double)(t2 - t1) / 1e3 / (double)n);
	store_ckpt_free(c);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repo", required_argument, NULL, 'r' },
		{ "view", required_argument, NULL, 'v' },
		{ "entities", required_argument, NULL, 'n' },
		{ "events", required_argument, NULL, 'e' },
		{ "spread-ms", required_argument, NULL, 's' },
		{ "checkpoint", no_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 }
	};
	const char		*dir = "examples/repo", *vname = "user_clicks";
	long long		 n = 1000000, k = 3, spread = 50LL * 60 * 1000;
	long long		 rss0, rss1, applied = 0;
	struct repo		*repo;
	const struct repo_view	*v;
	struct store		*s;
	struct agg_value	*vals;
	char			 err[1024], path[] = "/tmp/bench_memory.XXXXXX";
	char			 db[64], key[24];
	uint64_t		 seed = 0x9e3779b97f4a7c15ull, t0;
	int64_t			 start;
	size_t			 vi, nf, mem;
	int			 ch, fd, ckpt = 0;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'r': dir = optarg; break;
		case 'v': vname = optarg; break;
		case 'n': n = atoll(optarg); break;
		case 'e': k = atoll(optarg); break;
		case 's': spread = atoll(optarg); break;
		case 'c': ckpt = 1; break;
		default:
			fprintf(stderr, "usage: bench_memory [--repo DIR] "
			    "[--view V] [--entities N] [--events K] "
			    "[--spread-ms MS] [--checkpoint]\n");
			return 2;
		}
	}
	if (n < 1 || k < 1) {
		fprintf(stderr, "bench_memory: --entities and --events must "
		    "be positive\n");
		return 2;
	}
	if ((repo = repo_load(dir, err, sizeof err)) == NULL) {
		fprintf(stderr, "bench_memory: %s\n", err);
		return 1;
	}
	if ((v = repo_view_find(repo, vname)) == NULL) {
		fprintf(stderr, "bench_memory: %s: no view %s\n", dir, vname);
		return 1;
	}
	vi = (size_t)(v - repo->views);
	if ((fd = mkstemp(path)) == -1) {
		perror("bench_memory: mkstemp");
		return 1;
	}
	close(fd);
	snprintf(db, sizeof db, "%s", path);
	if ((s = store_open(repo, db, 8, NULL, err, sizeof err)) == NULL) {
		fprintf(stderr, "bench_memory: %s\n", err);
		return 1;
	}

	/* One value per source field, by name; the rest stay NULL. */
	nf = v->source->nfields;
	vals = calloc(nf ? nf : 1, sizeof *vals);
	rss0 = bm_rss();
	start = util_now_ms() - spread;
	t0 = util_mono_ns();
	for (long long j = 0; j < k; j++) {
		for (long long i = 0; i < n; i++) {
			uint64_t	r = bm_rand(&seed);
			int64_t		ts = start + (j * n + i) * spread / (n * k);
			int		klen;
			double		price = (double)((r >> 16) % 10000) / 100.0;

			klen = snprintf(key, sizeof key, "%lld", i);
			for (size_t f = 0; f < nf; f++) {
				const char *fn = v->source->fields[f].name;

				memset(&vals[f], 0, sizeof vals[f]);
				vals[f].type = AGG_NULL;
				if (strcmp(fn, "user_id") == 0) {
					vals[f].type = AGG_INT;
					vals[f].u.i = i;
				} else if (strcmp(fn, "page") == 0) {
					const char *p = bm_pages[r % BM_NPAGES];

					vals[f].type = AGG_STRING;
					vals[f].u.s.ptr = p;
					vals[f].u.s.len = (uint32_t)strlen(p);
				} else if (strcmp(fn, "price") == 0 &&
				    (r >> 8) % 10 >= 3) {
					vals[f].type = AGG_DOUBLE;
					vals[f].u.d = price;
				} else if (strcmp(fn, "ts") == 0) {
					vals[f].type = AGG_INT;
					vals[f].u.i = ts;
				}
			}
			if (store_apply(s, store_shard_of(s, vi, key,
			    (size_t)klen), vi, key, (size_t)klen, ts, 0,
			    j * n + i, vals, err, sizeof err) == AGG_ADD_OK)
				applied++;
		}
	}
	rss1 = bm_rss();
	mem = store_mem_bytes(s);
	printf("entities %zu events %lld applied %lld in %.1f s\n",
	    store_view_entities(s, vi), n * k, applied,
	    (double)(util_mono_ns() - t0) / 1e9);
	printf("rss_delta_bytes %lld per_entity %.0f\n", rss1 - rss0,
	    (double)(rss1 - rss0) / (double)n);
	printf("store_mem_bytes %zu per_entity %.0f\n", mem,
	    (double)mem / (double)n);
	if (ckpt && bm_checkpoint(s, (size_t)n) != 0)
		return 1;
	store_close(s);
	repo_free(repo);
	free(vals);
	unlink(path);
	snprintf(db, sizeof db, "%s-wal", path);
	unlink(db);
	snprintf(db, sizeof db, "%s-shm", path);
	unlink(db);
	return 0;
}
