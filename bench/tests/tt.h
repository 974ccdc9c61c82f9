/*
 * tt.h: the smallest test harness that does the job. A test is a void
 * function; TT_CHECK records a failure and goes on; TT_RUN runs one test;
 * TT_DONE prints the "N passed, N failed" line scripts/testsuite.py reads and
 * gives main's exit status.
 */
#ifndef TT_H
#define TT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

static int tt_passed, tt_failed, tt_cur_failed;

#define TT_CHECK(cond)                                                        \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: check failed: %s\n",          \
			        __FILE__, __LINE__, #cond);                   \
			tt_cur_failed = 1;                                    \
		}                                                             \
	} while (0)

#define TT_RUN(fn)                                                            \
	do {                                                                  \
		tt_cur_failed = 0;                                            \
		fn();                                                         \
		if (tt_cur_failed) {                                          \
			tt_failed++;                                          \
			printf("FAIL %s\n", #fn);                             \
		} else {                                                      \
			tt_passed++;                                          \
			printf("ok   %s\n", #fn);                             \
		}                                                             \
		fflush(stdout);                                               \
	} while (0)

/* Bytes from hex pairs ("10 0e 00 04"; spaces ignored); returns how many. */
static inline size_t tt_unhex(const char *hex, uint8_t *out)
{
	size_t n = 0;

	while (*hex) {
		unsigned v;

		if (*hex == ' ') {
			hex++;
			continue;
		}
		if (sscanf(hex, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
		hex += hex[1] ? 2 : 1;
	}
	return n;
}

#define TT_DONE()                                                             \
	(printf("%d passed, %d failed\n", tt_passed, tt_failed),              \
	 tt_failed ? 1 : 0)

#endif
