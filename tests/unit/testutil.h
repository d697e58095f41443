/*
 * testutil: the fixture helpers several unit tests repeat: writing a whole
 * file, removing a temporary directory tree, and running `mlopsd ARGS` in
 * a child with its stdout and stderr captured.  Header only (static
 * inline), so a test needs no extra link input; include it after
 * <cmocka.h>, whose assertions it uses.
 */
#ifndef MLOPSD_TESTS_TESTUTIL_H
#define MLOPSD_TESTS_TESTUTIL_H

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmd/cmd.h"

struct testutil_run {
	int	rc;		/* the exit code */
	char	out[32768];	/* stdout, NUL-terminated, truncated */
	char	err[32768];	/* stderr, likewise */
};

/* Write text to path (created or truncated); any I/O error fails the test. */
static inline void
testutil_write_file(const char *path, const char *text)
{
	FILE	*f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) < 0, 0);
	assert_int_equal(fclose(f), 0);
}

static inline int
testutil_rm_one(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove dir and everything under it, best effort (for teardowns). */
static inline void
testutil_rm_tree(const char *dir)
{
	nftw(dir, testutil_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Read f from its start into buf (len bytes with the NUL), then close it. */
static inline void
testutil_slurp(FILE *f, char *buf, size_t len)
{
	size_t	n;

	rewind(f);
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

/* Run `mlopsd ARGS...` (NULL-terminated) through cmd_main() in a child. */
static inline void
testutil_run_cmd(struct testutil_run *r, ...)
{
	char	*argv[32];
	int	 argc = 0, status;
	FILE	*out = tmpfile(), *err = tmpfile();
	pid_t	 pid;
	va_list	 ap;

	assert_non_null(out);
	assert_non_null(err);
	argv[argc++] = (char *)"mlopsd";
	va_start(ap, r);
	while ((argv[argc] = va_arg(ap, char *)) != NULL)
		argc++;
	va_end(ap);

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int	rc;

		dup2(fileno(out), STDOUT_FILENO);
		dup2(fileno(err), STDERR_FILENO);
		rc = cmd_main(argc, argv);
		fflush(stdout);
		fflush(stderr);
		_exit(rc);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	r->rc = WEXITSTATUS(status);
	testutil_slurp(out, r->out, sizeof r->out);
	testutil_slurp(err, r->err, sizeof r->err);
}

#endif
