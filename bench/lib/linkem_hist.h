/*
 * linkem_hist.h: a fixed-size log-linear histogram of non-negative 64-bit
 * values (nanoseconds in practice) for the link emulator's queue delay and
 * timing error.
 *
 * Every power of two is split into LINKEM_HIST_SUB equal buckets, so a
 * reported percentile is within 1/(2*LINKEM_HIST_SUB) (1.6 %) of a recorded
 * value; values below LINKEM_HIST_SUB are exact. No allocation: the struct is
 * embedded (linkem_hist_init, nothing to free). Kept inside the emulator's
 * own files on purpose, so the emulator does not depend on the project's
 * general latency histogram while that one evolves.
 */
#ifndef LINKEM_HIST_H
#define LINKEM_HIST_H

#include <stdint.h>

#define LINKEM_HIST_SUB_BITS 5
#define LINKEM_HIST_SUB (1u << LINKEM_HIST_SUB_BITS)
/* values < SUB take one bucket each; each octave 2^e..2^(e+1)-1 for
 * e = SUB_BITS..63 takes SUB buckets */
#define LINKEM_HIST_NBUCKETS ((64 - LINKEM_HIST_SUB_BITS + 1) * LINKEM_HIST_SUB)

typedef struct linkem_hist {
	uint64_t count;
	uint64_t min;
	uint64_t max;
	double sum;
	uint64_t bucket[LINKEM_HIST_NBUCKETS];
} linkem_hist;

void linkem_hist_init(linkem_hist *h);

/* Record one value. */
void linkem_hist_add(linkem_hist *h, uint64_t v);

/*
 * The q-quantile (0 <= q <= 1) of the recorded values: the middle of the
 * bucket holding the value of rank ceil(q * count), clamped to [min, max];
 * q = 1 gives the exact maximum. 0 when nothing was recorded.
 */
uint64_t linkem_hist_quantile(const linkem_hist *h, double q);

/* Mean of the recorded values, 0 when nothing was recorded. */
double linkem_hist_mean(const linkem_hist *h);

/* Bucket index of v and the smallest value of bucket i (exposed for tests). */
unsigned linkem_hist_index(uint64_t v);
uint64_t linkem_hist_bucket_low(unsigned i);

#endif
