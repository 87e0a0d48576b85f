/*
 * A tiny test harness shared by tests/unit and tests/kvm. Each test binary lists its cases in
 * a table; every case prints "PASS: name" or "FAIL: name" and tests/run.sh counts them.
 *
 *   static void test_foo(void) { CHECK(1 + 1 == 2); CHECK_EQ(x, 3); }
 *   TEST_MAIN(TEST(test_foo), TEST(test_bar))
 */
#ifndef KUMO_TEST_HARNESS_H
#define KUMO_TEST_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

extern int __test_failed;

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__,      \
				__LINE__, #cond);                                     \
			__test_failed = 1;                                            \
			return;                                                       \
		}                                                                     \
	} while (0)

#define CHECK_EQ(a, b)                                                                \
	do {                                                                          \
		unsigned long long __a = (unsigned long long)(a);                     \
		unsigned long long __b = (unsigned long long)(b);                     \
		if (__a != __b) {                                                     \
			fprintf(stderr, "  %s:%d: CHECK_EQ failed: %s == %s "         \
				"(0x%llx != 0x%llx)\n", __FILE__, __LINE__, #a, #b,   \
				__a, __b);                                            \
			__test_failed = 1;                                            \
			return;                                                       \
		}                                                                     \
	} while (0)

/* Skips report as SKIP and count neither as passed nor failed. */
#define SKIP(why)                                                                     \
	do {                                                                          \
		fprintf(stderr, "  skipped: %s\n", why);                              \
		__test_failed = -1;                                                   \
		return;                                                               \
	} while (0)

#define TEST(fn) { #fn, fn }

#define TEST_MAIN(...)                                                                \
	int __test_failed;                                                            \
	int main(int argc, char **argv)                                               \
	{                                                                             \
		static const struct test_case cases[] = { __VA_ARGS__ };              \
		int failed = 0;                                                       \
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {      \
			if (argc > 1 && strcmp(argv[1], cases[i].name))               \
				continue;                                             \
			__test_failed = 0;                                            \
			cases[i].fn();                                                \
			printf("%s: %s\n", __test_failed > 0 ? "FAIL" :               \
			       __test_failed < 0 ? "SKIP" : "PASS", cases[i].name);   \
			fflush(stdout);                                               \
			failed += __test_failed > 0;                                  \
		}                                                                     \
		return failed ? 1 : 0;                                                \
	}

#endif
