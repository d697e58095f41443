/*
 * bench_dag: the pipeline engine's own cost.  Runs a 100-step no-op DAG
 * (each step `run: "true"`) end to end in-process, as a chain (every step
 * needs the previous one: the scheduler's latency per step adds up) and as
 * a fan-out (100 independent steps, max_parallel 4), and compares with
 * the bare cost of fork+exec+wait of `/bin/sh -c true` 100 times, so the
 * difference is the engine's overhead per step (templating, context and
 * outputs files, run history writes, the 2 ms reap poll).
 *
 *   bench/bench_dag [STEPS]      prints one line per measurement
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "pipeline/pipeline.h"

static void
write_dag(const char *dir, const char *name, int n, int chain)
{
	char	*path = xstrfmt("%s/pipelines/%s.yaml", dir, name);
	FILE	*f = fopen(path, "w");
	int	 i;

	if (f == NULL) {
		perror(path);
		exit(1);
	}
	fprintf(f, "name: %s\nconcurrency: 1\nsteps:\n", name);
	for (i = 0; i < n; i++) {
		fprintf(f, "  - id: s%d\n    run: \"true\"\n", i);
		if (chain && i > 0)
			fprintf(f, "    needs: [s%d]\n", i - 1);
	}
	fclose(f);
	free(path);
}

static double
run_once(struct dag_engine *e, const char *dag)
{
	char		 id[128], st[32], err[512];
	uint64_t	 t0 = util_mono_ns();

	if (dag_engine_submit(e, dag, NULL, NULL, id, sizeof id, err,
	    sizeof err) == -1) {
		fprintf(stderr, "bench_dag: %s\n", err);
		exit(1);
	}
	for (;;) {
		if (dag_engine_run_status(e, id, st, sizeof st) == 0 &&
		    (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0))
			break;
		usleep(200);
	}
	if (strcmp(st, "succeeded") != 0) {
		fprintf(stderr, "bench_dag: run %s %s\n", id, st);
		exit(1);
	}
	return (double)(util_mono_ns() - t0) / 1e9;
}

static double
bare_spawns(int n)
{
	uint64_t	t0 = util_mono_ns();
	pid_t		pid;
	int		i, ws;

	for (i = 0; i < n; i++) {
		if ((pid = fork()) == 0) {
			execl("/bin/sh", "sh", "-c", "true", (char *)NULL);
			_exit(127);
		}
		waitpid(pid, &ws, 0);
	}
	return (double)(util_mono_ns() - t0) / 1e9;
}

int
main(int argc, char **argv)
{
	struct dag_engine_config	 ec;
	struct dag_engine		*e;
	struct dag_set			*set;
	char				 tmpl[] = "/tmp/bench-dag-XXXXXX", err[1024];
	char				*pipes, *data;
	int				 n = argc > 1 ? atoi(argv[1]) : 100, i;
	double				 chain = 1e9, fan = 1e9, bare, t;

	log_set_level(LOG_WARN);
	if (n < 1 || mkdtemp(tmpl) == NULL) {
		fprintf(stderr, "usage: bench_dag [STEPS]\n");
		return 2;
	}
	pipes = xstrfmt("%s/pipelines", tmpl);
	data = xstrfmt("%s/data", tmpl);
	mkdir(pipes, 0755);
	write_dag(tmpl, "chain", n, 1);
	write_dag(tmpl, "fan", n, 0);
	if ((set = dag_set_load(tmpl, NULL, err, sizeof err)) == NULL) {
		fprintf(stderr, "bench_dag: %s\n", err);
		return 1;
	}
	memset(&ec, 0, sizeof ec);
	ec.data_dir = data;
	ec.repo = tmpl;
	ec.url = "http://127.0.0.1:0";
	ec.max_parallel = 4;
	if ((e = dag_engine_new(&ec, set, err, sizeof err)) == NULL) {
		fprintf(stderr, "bench_dag: %s\n", err);
		return 1;
	}
	for (i = 0; i < 3; i++) {	/* best of 3 */
		if ((t = run_once(e, "chain")) < chain)
			chain = t;
		if ((t = run_once(e, "fan")) < fan)
			fan = t;
	}
	bare = bare_spawns(n);
	dag_engine_free(e);
	printf("dag_chain_%d_steps_seconds %.3f\n", n, chain);
	printf("dag_fanout_%d_steps_seconds %.3f (max_parallel 4)\n", n, fan);
	printf("bare_fork_exec_%d_seconds %.3f\n", n, bare);
	printf("engine_overhead_per_step_ms %.2f\n",
	    (chain - bare) * 1000.0 / n);
	free(pipes);
	pipes = xstrfmt("rm -rf '%s'", tmpl);
	if (system(pipes) != 0)
		fprintf(stderr, "bench_dag: could not remove %s\n", tmpl);
	free(pipes);
	free(data);
	return 0;
}
