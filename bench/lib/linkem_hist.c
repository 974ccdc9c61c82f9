/*
 * linkem_hist.c: fixed-size log-linear histogram (see linkem_hist.h).
 */
#include "linkem_hist.h"

#include <string.h>

void linkem_hist_init(linkem_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

unsigned linkem_hist_index(uint64_t v)
{
	unsigned e;

	if (v < LINKEM_HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	/* the top bit is implied; the next SUB_BITS bits pick the bucket */
	return (e - LINKEM_HIST_SUB_BITS + 1) * LINKEM_HIST_SUB +
	       (unsigned)((v >> (e - LINKEM_HIST_SUB_BITS)) &
	                  (LINKEM_HIST_SUB - 1));
}

uint64_t linkem_hist_bucket_low(unsigned i)
{
	unsigned e, sub;

	if (i < LINKEM_HIST_SUB)
		return i;
	e = i / LINKEM_HIST_SUB + LINKEM_HIST_SUB_BITS - 1;
	sub = i % LINKEM_HIST_SUB;
	return ((uint64_t)LINKEM_HIST_SUB + sub) << (e - LINKEM_HIST_SUB_BITS);
}

/* Width of bucket i: 1 for the exact ones, else 2^(e - SUB_BITS). */
static uint64_t bucket_width(unsigned i)
{
	unsigned e;

	if (i < LINKEM_HIST_SUB)
		return 1;
	e = i / LINKEM_HIST_SUB + LINKEM_HIST_SUB_BITS - 1;
	return (uint64_t)1 << (e - LINKEM_HIST_SUB_BITS);
}

void linkem_hist_add(linkem_hist *h, uint64_t v)
{
	h->bucket[linkem_hist_index(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

uint64_t linkem_hist_quantile(const linkem_hist *h, double q)
{
	uint64_t rank, seen = 0, v;
	unsigned i;

	if (h->count == 0)
		return 0;
	if (!(q > 0))
		return h->min;
	if (q >= 1)
		return h->max;
	rank = (uint64_t)(q * (double)h->count);
	if ((double)rank < q * (double)h->count)
		rank++;
	if (rank == 0)
		rank = 1;
	for (i = 0; i < LINKEM_HIST_NBUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank)
			break;
	}
	if (i == LINKEM_HIST_NBUCKETS)
		return h->max;
	/* middle of the bucket, computed without overflow in the top octave */
	v = linkem_hist_bucket_low(i) + (bucket_width(i) - 1) / 2;
	if (v < h->min)
		v = h->min;
	if (v > h->max)
		v = h->max;
	return v;
}

double linkem_hist_mean(const linkem_hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}
