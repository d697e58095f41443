/*
 * testutil: the fixture helpers several unit tests repeat: writing a whole
 * file and removing a temporary directory tree.  Header only (static
 * inline), so a test needs no extra link input; include it after
 * <cmocka.h>, whose assertions it uses.
 */
#ifndef MLOPSD_TESTS_TESTUTIL_H
#define MLOPSD_TESTS_TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

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

#endif
