/*
 * Unit tests of common/sha256.c against the FIPS 180-4 / NIST example
 * vectors, fed whole and in odd-sized pieces (so block boundaries and the
 * padding at 55/56/64 bytes are crossed), and of sha256_file_hex.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/sha256.h"

static const struct {
	const char	*in;
	size_t		 repeat;
	const char	*hex;
} vectors[] = {
	{ "", 1,
	  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
	{ "abc", 1,
	  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
	{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
	  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
	{ "a", 1000000,
	  "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
	/* 55, 56 and 64 bytes: the padding edge cases. */
	{ "a", 55,
	  "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
	{ "a", 56,
	  "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a" },
	{ "a", 64,
	  "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
};

static void
test_vectors(void **state)
{
	size_t	i, k, len, step;

	(void)state;
	for (i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
		size_t	 inlen = strlen(vectors[i].in);
		char	*buf, hex[SHA256_HEXLEN + 1];

		len = inlen * vectors[i].repeat;
		buf = malloc(len + 1);
		for (k = 0; k < vectors[i].repeat; k++)
			memcpy(buf + k * inlen, vectors[i].in, inlen);
		for (step = 1; step <= 67; step += 33) {
			struct sha256	c;

			sha256_init(&c);
			for (k = 0; k < len; k += step)
				sha256_update(&c, buf + k,
				    len - k < step ? len - k : step);
			sha256_final_hex(&c, hex);
			assert_string_equal(hex, vectors[i].hex);
		}
		free(buf);
	}
}

static void
test_file(void **state)
{
	char	path[] = "/tmp/test_sha256.XXXXXX", hex[SHA256_HEXLEN + 1];
	char	err[256];
	int64_t	size = -1;
	int	fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "abc", 3), 3);
	close(fd);
	assert_int_equal(sha256_file_hex(path, hex, &size, err, sizeof err), 0);
	assert_string_equal(hex, vectors[1].hex);
	assert_int_equal(size, 3);
	unlink(path);
	assert_int_equal(sha256_file_hex(path, hex, &size, err, sizeof err), -1);
	assert_non_null(strstr(err, ": No such file or directory"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
