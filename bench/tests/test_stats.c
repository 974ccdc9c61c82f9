/*
 * test_stats.c: the latency histogram and the sequence tracker.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "measure/payload.h"
#include "measure/stats.h"
#include "tt.h"

/* Relative error of a histogram answer against the exact value. */
static double rel_err(uint64_t got, uint64_t want)
{
	return fabs((double)got - (double)want) / (double)want;
}

/* The exact percentile of a sorted array, same rank rule as the histogram. */
static uint64_t exact_pct(const uint64_t *sorted, size_t n, double p)
{
	size_t rank = (size_t)ceil(p / 100.0 * (double)n - 1e-9);

	if (rank < 1)
		rank = 1;
	return sorted[rank - 1];
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* xorshift64*: a deterministic generator so failures reproduce */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static double rng_unit(void)
{
	return (double)(rng() >> 11) / 9007199254740992.0; /* [0, 1) */
}

static void test_hist_empty(void)
{
	struct stats_hist h;

	stats_hist_init(&h);
	TT_CHECK(h.count == 0);
	TT_CHECK(stats_hist_percentile(&h, 50) == 0);
	TT_CHECK(stats_hist_mean(&h) == 0.0);
}

/* Every bucket covers at most 1/128 of its lower bound, above 256 ns. */
static void test_hist_geometry(void)
{
	uint64_t lo, hi, prev_hi = 0;
	size_t i;
	int contiguous = 1, narrow = 1, inverse = 1;

	for (i = 0; i < STATS_HIST_NBUCKETS; i++) {
		stats_hist_bucket_range(i, &lo, &hi);
		if (i > 0 && lo != prev_hi + 1)
			contiguous = 0;
		if (lo >= 256 && (double)(hi - lo + 1) > (double)lo / 128.0)
			narrow = 0;
		if (stats_hist_index(lo) != i || stats_hist_index(hi) != i)
			inverse = 0;
		prev_hi = hi;
	}
	TT_CHECK(contiguous);
	TT_CHECK(narrow);
	TT_CHECK(inverse);
	/* the last bucket holds 100 s */
	TT_CHECK(stats_hist_index(STATS_HIST_MAX_NS) == STATS_HIST_NBUCKETS - 1);
	TT_CHECK(prev_hi >= STATS_HIST_MAX_NS);
	/* exact below 256 ns */
	TT_CHECK(stats_hist_index(0) == 0);
	TT_CHECK(stats_hist_index(255) == 255);
	stats_hist_bucket_range(stats_hist_index(200), &lo, &hi);
	TT_CHECK(lo == 200 && hi == 200);
}

/* One value: every percentile is that value, exactly. */
static void test_hist_single(void)
{
	struct stats_hist h;

	stats_hist_init(&h);
	stats_hist_add(&h, 123456789);
	TT_CHECK(stats_hist_percentile(&h, 50) == 123456789);
	TT_CHECK(stats_hist_percentile(&h, 99.9) == 123456789);
	TT_CHECK(stats_hist_percentile(&h, 100) == 123456789);
	TT_CHECK(h.min == 123456789 && h.max == 123456789);
}

/* Uniform 1..100000 us: percentiles within 1% of the exact ones. */
static void test_hist_uniform(void)
{
	static const double ps[] = { 1, 10, 50, 90, 99, 99.9 };
	struct stats_hist h;
	uint64_t i, want, got;
	size_t k;
	int ok = 1;

	stats_hist_init(&h);
	for (i = 1; i <= 100000; i++)
		stats_hist_add(&h, i * 1000);
	for (k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		want = (uint64_t)ceil(ps[k] / 100.0 * 100000 - 1e-9) * 1000;
		got = stats_hist_percentile(&h, ps[k]);
		if (rel_err(got, want) > 0.01) {
			fprintf(stderr, "p%g: got %llu want %llu\n", ps[k],
			        (unsigned long long)got,
			        (unsigned long long)want);
			ok = 0;
		}
	}
	TT_CHECK(ok);
	TT_CHECK(stats_hist_percentile(&h, 100) == 100000000);
	TT_CHECK(h.min == 1000);
	TT_CHECK(fabs(stats_hist_mean(&h) - 50000500.0) < 1.0);
}

/*
 * Log-normal latencies spanning 1 us .. 100 s (the promised range):
 * every percentile within 1% of the exact value of the same data.
 */
static void test_hist_lognormal(void)
{
	static const double ps[] = { 0.1, 5, 25, 50, 75, 90, 99, 99.9, 99.99 };
	enum { N = 200000 };
	uint64_t *v = malloc(N * sizeof(*v));
	struct stats_hist *h = malloc(sizeof(*h));
	double z, worst = 0, e;
	size_t i, k;

	TT_CHECK(v != NULL && h != NULL);
	if (v == NULL || h == NULL)
		goto out;
	stats_hist_init(h);
	for (i = 0; i < N; i++) {
		/* Box-Muller; median 1 ms, spread over 8 decades */
		z = sqrt(-2.0 * log(1.0 - rng_unit())) *
		    cos(2.0 * M_PI * rng_unit());
		v[i] = (uint64_t)(1e6 * exp(2.5 * z));
		if (v[i] < 1000)
			v[i] = 1000;
		if (v[i] > STATS_HIST_MAX_NS)
			v[i] = STATS_HIST_MAX_NS;
		stats_hist_add(h, v[i]);
	}
	qsort(v, N, sizeof(*v), cmp_u64);
	for (k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		e = rel_err(stats_hist_percentile(h, ps[k]),
		            exact_pct(v, N, ps[k]));
		if (e > worst)
			worst = e;
	}
	TT_CHECK(worst <= 0.01);
	/* and the precision is better than promised: half a bucket */
	TT_CHECK(worst <= 1.0 / 256 + 1e-9);
	TT_CHECK(h->max == v[N - 1] && h->min == v[0]);
out:
	free(v);
	free(h);
}

/* Values above 100 s are clamped, counted, and do not corrupt max. */
static void test_hist_clamp(void)
{
	struct stats_hist h;

	stats_hist_init(&h);
	stats_hist_add(&h, 500 * UINT64_C(1000000000));
	stats_hist_add(&h, UINT64_MAX);
	stats_hist_add(&h, 1000);
	TT_CHECK(h.clamped == 2);
	TT_CHECK(h.count == 3);
	TT_CHECK(h.max == UINT64_MAX);
	TT_CHECK(stats_hist_percentile(&h, 100) == UINT64_MAX);
	TT_CHECK(stats_hist_percentile(&h, 30) == 1000);
}

/*
 * Memory does not grow with the number of values: the histogram is one
 * fixed-size struct, ~31 KiB, whether it holds one value or ten million.
 * Ten million values uniform in [1 us, 1.001 ms) land exactly in the buckets
 * that cover that range, every one of them, and nowhere else.
 */
static void test_hist_memory_constant(void)
{
	struct stats_hist *h = malloc(sizeof(*h));
	uint64_t i, total = 0, val, cnt, lo, hi;
	size_t nonzero = 0, pos = 0, first, last;
	int inside = 1;

	TT_CHECK(sizeof(struct stats_hist) < 32 * 1024);
	if (h == NULL)
		return;
	stats_hist_init(h);
	for (i = 0; i < 10000000; i++)
		stats_hist_add(h, 1000 + (rng() % 1000000));
	TT_CHECK(h->count == 10000000);
	first = stats_hist_index(1000);
	last = stats_hist_index(1000999);
	while (stats_hist_next(h, &pos, &val, &cnt)) {
		nonzero++;
		total += cnt;
		/* pos is one past the bucket just returned */
		if (pos - 1 < first || pos - 1 > last)
			inside = 0;
		stats_hist_bucket_range(pos - 1, &lo, &hi);
		if (val < lo || val > hi)
			inside = 0;
	}
	TT_CHECK(total == h->count);
	TT_CHECK(inside);
	/* the narrowest bucket there is 4 ns wide: ~40 values each */
	TT_CHECK(nonzero == last - first + 1);
	TT_CHECK(rel_err(stats_hist_percentile(h, 50), 501000) <= 0.01);
	TT_CHECK(fabs(stats_hist_mean(h) - 501000.0) < 501000.0 * 0.001);
	free(h);
}

/* Merging equals recording everything into one histogram. */
static void test_hist_merge(void)
{
	struct stats_hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)),
	                  *all = malloc(sizeof(*all));
	uint64_t x;
	int i;

	if (a == NULL || b == NULL || all == NULL)
		goto out;
	stats_hist_init(a);
	stats_hist_init(b);
	stats_hist_init(all);
	for (i = 0; i < 10000; i++) {
		x = 1000 + rng() % 10000000;
		stats_hist_add(i % 3 ? a : b, x);
		stats_hist_add(all, x);
	}
	stats_hist_merge(a, b);
	TT_CHECK(a->count == all->count);
	TT_CHECK(a->min == all->min && a->max == all->max);
	TT_CHECK(memcmp(a->buckets, all->buckets, sizeof(a->buckets)) == 0);
	TT_CHECK(stats_hist_percentile(a, 99) ==
	         stats_hist_percentile(all, 99));
out:
	free(a);
	free(b);
	free(all);
}

/* A bimodal distribution: p50 in the low mode, p99 in the high one. */
static void test_hist_bimodal(void)
{
	struct stats_hist h;
	int i;

	stats_hist_init(&h);
	for (i = 0; i < 980; i++)
		stats_hist_add(&h, 50000); /* 50 us */
	for (i = 0; i < 20; i++)
		stats_hist_add(&h, 200000000); /* 200 ms: retransmissions */
	TT_CHECK(rel_err(stats_hist_percentile(&h, 50), 50000) <= 0.01);
	TT_CHECK(rel_err(stats_hist_percentile(&h, 98), 50000) <= 0.01);
	TT_CHECK(rel_err(stats_hist_percentile(&h, 99), 200000000) <= 0.01);
	TT_CHECK(stats_hist_percentile(&h, 50) <=
	         stats_hist_percentile(&h, 90));
}

/* ---- sequence tracker ---------------------------------------------- */

static void test_seq_in_order(void)
{
	struct seq_tracker t;
	uint64_t i;

	seq_tracker_init(&t);
	TT_CHECK(seq_tracker_add(&t, 0) == SEQ_FIRST);
	for (i = 1; i < 5000; i++)
		TT_CHECK(seq_tracker_add(&t, i) == SEQ_IN_ORDER);
	TT_CHECK(t.received == 5000);
	TT_CHECK(seq_tracker_lost(&t) == 0);
	TT_CHECK(t.duplicates == 0 && t.reordered == 0 && t.gaps == 0);
}

static void test_seq_loss(void)
{
	struct seq_tracker t;

	seq_tracker_init(&t);
	seq_tracker_add(&t, 0);
	seq_tracker_add(&t, 1);
	TT_CHECK(seq_tracker_add(&t, 5) == SEQ_GAP); /* 2,3,4 missing */
	seq_tracker_add(&t, 6);
	TT_CHECK(seq_tracker_add(&t, 100) == SEQ_GAP); /* 7..99 missing */
	TT_CHECK(t.gaps == 2);
	TT_CHECK(seq_tracker_lost(&t) == 3 + 93);
	TT_CHECK(t.duplicates == 0 && t.reordered == 0);
}

/* The sink joined late: everything before the first one counts as lost. */
static void test_seq_late_start(void)
{
	struct seq_tracker t;

	seq_tracker_init(&t);
	TT_CHECK(seq_tracker_add(&t, 10) == SEQ_FIRST);
	TT_CHECK(t.first == 10);
	TT_CHECK(seq_tracker_lost(&t) == 10);
	/* a late one from before the first is a reorder, not a duplicate */
	TT_CHECK(seq_tracker_add(&t, 3) == SEQ_REORDERED);
	TT_CHECK(seq_tracker_lost(&t) == 9);
}

static void test_seq_duplicates(void)
{
	struct seq_tracker t;

	seq_tracker_init(&t);
	seq_tracker_add(&t, 0);
	seq_tracker_add(&t, 1);
	seq_tracker_add(&t, 2);
	TT_CHECK(seq_tracker_add(&t, 2) == SEQ_DUPLICATE); /* = highest */
	TT_CHECK(seq_tracker_add(&t, 0) == SEQ_DUPLICATE); /* below */
	TT_CHECK(t.duplicates == 2);
	TT_CHECK(t.received == 5);
	TT_CHECK(seq_tracker_unique(&t) == 3);
	TT_CHECK(seq_tracker_lost(&t) == 0);
	TT_CHECK(t.reordered == 0);
}

/* 0 2 1 3: one reordering, no loss; then 1 again is a duplicate. */
static void test_seq_reorder(void)
{
	struct seq_tracker t;

	seq_tracker_init(&t);
	seq_tracker_add(&t, 0);
	TT_CHECK(seq_tracker_add(&t, 2) == SEQ_GAP);
	TT_CHECK(seq_tracker_lost(&t) == 1); /* for now */
	TT_CHECK(seq_tracker_add(&t, 1) == SEQ_REORDERED);
	TT_CHECK(seq_tracker_lost(&t) == 0);
	TT_CHECK(seq_tracker_add(&t, 3) == SEQ_IN_ORDER);
	TT_CHECK(seq_tracker_add(&t, 1) == SEQ_DUPLICATE);
	TT_CHECK(t.reordered == 1 && t.duplicates == 1);
	TT_CHECK(seq_tracker_unique(&t) == 4);
}

/*
 * The ring wraps many times: a long stream with every 7th message delayed
 * by 100 positions and every 11th sent twice must be classified exactly.
 */
static void test_seq_window_wrap(void)
{
	struct seq_tracker t;
	uint64_t s, dups = 0, late = 0, n = 50000;

	seq_tracker_init(&t);
	for (s = 0; s < n; s++) {
		if (s % 7 == 3 && s + 100 < n)
			continue; /* delivered later */
		seq_tracker_add(&t, s);
		if (s % 11 == 0) {
			TT_CHECK(seq_tracker_add(&t, s) == SEQ_DUPLICATE);
			dups++;
		}
		if (s >= 100 && (s - 100) % 7 == 3) {
			TT_CHECK(seq_tracker_add(&t, s - 100) ==
			         SEQ_REORDERED);
			late++;
		}
	}
	TT_CHECK(t.duplicates == dups);
	TT_CHECK(t.reordered == late);
	TT_CHECK(t.too_old == 0);
	TT_CHECK(seq_tracker_lost(&t) == 0);
	TT_CHECK(seq_tracker_unique(&t) == n);
}

/* Exactly at the window's edge, and just past it. */
static void test_seq_window_edge(void)
{
	struct seq_tracker t;

	seq_tracker_init(&t);
	seq_tracker_add(&t, 0);
	/* jump so that 0 is the oldest number the window still holds */
	seq_tracker_add(&t, SEQ_WINDOW - 1);
	TT_CHECK(seq_tracker_add(&t, 0) == SEQ_DUPLICATE);
	TT_CHECK(seq_tracker_add(&t, 1) == SEQ_REORDERED);
	/* one more step: 0 falls out of the window, 1 is still in it */
	seq_tracker_add(&t, SEQ_WINDOW);
	TT_CHECK(seq_tracker_add(&t, 0) == SEQ_TOO_OLD);
	TT_CHECK(seq_tracker_add(&t, 1) == SEQ_DUPLICATE);
	TT_CHECK(t.too_old == 1);
	/* a gap longer than the window forgets everything before it */
	seq_tracker_add(&t, 10 * SEQ_WINDOW);
	TT_CHECK(seq_tracker_add(&t, 10 * SEQ_WINDOW - 5) == SEQ_REORDERED);
	TT_CHECK(seq_tracker_add(&t, 10 * SEQ_WINDOW - 5) == SEQ_DUPLICATE);
	/* numbers that were cleared by the jump are not taken as seen */
	TT_CHECK(seq_tracker_add(&t, 9 * SEQ_WINDOW + 2) == SEQ_REORDERED);
}

/* A hostile sequence number near 2^64 must not wrap the loss count. */
static void test_seq_extreme(void)
{
	struct seq_tracker t;

	seq_tracker_init(&t);
	seq_tracker_add(&t, UINT64_MAX);
	TT_CHECK(seq_tracker_lost(&t) == UINT64_MAX - 1);
	TT_CHECK(seq_tracker_add(&t, UINT64_MAX) == SEQ_DUPLICATE);
	TT_CHECK(seq_tracker_add(&t, 0) == SEQ_TOO_OLD);
}

static void test_seq_table(void)
{
	struct seq_table tab;
	struct seq_tracker *p;
	uint32_t id;
	int ok = 1;

	seq_table_init(&tab);
	/* 5000 publishers, spread ids, 3 messages each, interleaved */
	for (int round = 0; round < 3; round++) {
		for (id = 0; id < 5000; id++) {
			p = seq_table_get(&tab, id * 65537u + 7);
			if (p == NULL) {
				ok = 0;
				break;
			}
			seq_tracker_add(p, (uint64_t)round);
		}
	}
	TT_CHECK(ok);
	TT_CHECK(tab.n == 5000);
	for (id = 0; id < 5000; id++) {
		p = seq_table_get(&tab, id * 65537u + 7);
		if (p == NULL || p->received != 3 || seq_tracker_lost(p) != 0)
			ok = 0;
	}
	TT_CHECK(ok);
	TT_CHECK(tab.n == 5000);
	seq_table_free(&tab);
}


/* ---- the sink's accounting ----------------------------------------- */

static size_t mk(uint8_t *buf, size_t size, uint32_t pub, uint64_t seq,
                 uint64_t t)
{
	struct payload_header h = { .publisher = pub, .seq = seq,
	                            .send_ns = t };

	/* what version 2 cannot hold goes as the old version */
	if (seq > PAYLOAD_SEQ_MAX)
		h.version = 1;
	memset(buf, 0, size);
	payload_encode(buf, size, &h);
	return size;
}

/* A version 2 payload sent at t, due at due (0: no schedule). */
static void mk_due(uint8_t *buf, size_t size, uint32_t pub, uint64_t seq,
                   uint64_t t, uint64_t due)
{
	struct payload_header h = { .publisher = pub, .seq = seq,
	                            .send_ns = t };

	payload_set_due(&h, due);
	memset(buf, 0, size);
	payload_encode(buf, size, &h);
}

/*
 * Latency from the schedule: the wait before the send is in it, so a
 * backlog cannot hide. A message due at 1 ms, sent at 5 ms, received at
 * 6 ms: 1 ms from the send, 5 ms from the schedule. Payloads without a due
 * time (the old version, loadgen at max rate) have the first only.
 */
static void test_rx_stats_schedule(void)
{
	struct rx_stats *rx = malloc(sizeof(*rx));
	struct rx_result r;
	struct payload_header h = { .flags = PAYLOAD_F_SCHEDULED, .seq = 9,
	                            .publisher = 3 };
	const uint64_t ms = 1000000;
	uint8_t buf[64];

	if (rx == NULL)
		return;
	rx_stats_init(rx, 0);
	mk_due(buf, 64, 3, 0, 5 * ms, 1 * ms);
	TT_CHECK(rx_stats_add(rx, buf, 64, 6 * ms, &r) == 0);
	TT_CHECK(r.bench && r.scheduled);
	TT_CHECK(r.latency_ns == 1 * ms && r.sched_latency_ns == 5 * ms);
	/* on time: both the same */
	mk_due(buf, 64, 3, 1, 7 * ms, 7 * ms);
	rx_stats_add(rx, buf, 64, 8 * ms, &r);
	TT_CHECK(r.latency_ns == ms && r.sched_latency_ns == ms);
	/* no schedule (max rate), and the old version */
	mk_due(buf, 64, 3, 2, 9 * ms, 0);
	rx_stats_add(rx, buf, 64, 10 * ms, &r);
	TT_CHECK(r.bench && !r.scheduled && r.sched_latency_ns == 0);
	h.version = 1;
	h.flags = 0;
	h.send_ns = 11 * ms;
	h.seq = 3;
	memset(buf, 0, sizeof(buf));
	payload_encode(buf, sizeof(buf), &h);
	rx_stats_add(rx, buf, 64, 12 * ms, &r);
	TT_CHECK(r.bench && !r.scheduled && r.seq == SEQ_IN_ORDER);
	/* a clock error keeps both latencies out */
	mk_due(buf, 64, 3, 4, 20 * ms, 19 * ms);
	rx_stats_add(rx, buf, 64, 13 * ms, &r);
	TT_CHECK(r.bench && r.clock_error && r.sched_latency_ns == 0);
	/* a lag longer than the send time: a due time before boot */
	h.version = 0;
	h.flags = PAYLOAD_F_SCHEDULED;
	h.send_ns = 1 * ms;
	h.lag_ns = 2 * ms;
	h.seq = 5;
	payload_encode(buf, sizeof(buf), &h);
	rx_stats_add(rx, buf, 64, 14 * ms, &r);
	TT_CHECK(!r.bench && r.invalid);

	TT_CHECK(rx->bench_messages == 5 && rx->invalid == 1);
	TT_CHECK(rx->latency.count == 4 && rx->latency_sched.count == 2);
	TT_CHECK(rx->latency_sched.min == ms && rx->latency_sched.max == 5 * ms);
	TT_CHECK(rx->latency.max == ms);
	TT_CHECK(rx->unscheduled == 2 && rx->header_v1 == 1);
	TT_CHECK(rx->clock_errors == 1 && rx->lag_clamped == 0);

	/* a lag beyond the field: a lower bound, counted */
	h.send_ns = UINT64_C(1) << 62;
	h.lag_ns = UINT64_C(1) << 61;
	h.seq = 6;
	payload_encode(buf, sizeof(buf), &h);
	rx_stats_add(rx, buf, 64, h.send_ns + ms, &r);
	TT_CHECK(r.bench && r.scheduled);
	TT_CHECK(r.sched_latency_ns == ms + (uint64_t)PAYLOAD_LAG_MAX_US * 1000);
	TT_CHECK(rx->lag_clamped == 1 && rx->latency_sched.count == 3);
	rx_stats_free(rx);
	free(rx);
}

static void test_rx_stats(void)
{
	struct rx_stats *rx = malloc(sizeof(*rx));
	struct rx_result r;
	struct rx_totals tot;
	uint8_t buf[64];
	const char *text = "plain text from mosquitto_pub";

	if (rx == NULL)
		return;
	rx_stats_init(rx, 0);
	/* publisher 7: 0 1 3 3 2 (one dup, one reorder); publisher 9: 5 */
	mk(buf, 64, 7, 0, 1000);
	TT_CHECK(rx_stats_add(rx, buf, 64, 51000, &r) == 0);
	TT_CHECK(r.bench && r.seq == SEQ_FIRST && r.latency_ns == 50000);
	mk(buf, 64, 7, 1, 2000);
	rx_stats_add(rx, buf, 64, 62000, &r);
	mk(buf, 64, 7, 3, 3000);
	rx_stats_add(rx, buf, 64, 73000, &r);
	TT_CHECK(r.seq == SEQ_GAP);
	rx_stats_add(rx, buf, 64, 74000, &r);
	TT_CHECK(r.seq == SEQ_DUPLICATE);
	mk(buf, 40, 7, 2, 3000);
	rx_stats_add(rx, buf, 40, 90000, &r);
	TT_CHECK(r.seq == SEQ_REORDERED && r.publisher == 7 && r.seq_no == 2);
	mk(buf, 64, 9, 5, 1000);
	rx_stats_add(rx, buf, 64, 2000, &r);
	/* foreign: text, and our magic with a short body */
	rx_stats_add(rx, (const uint8_t *)text, strlen(text), 95000, &r);
	TT_CHECK(r.bench == 0);
	mk(buf, 64, 7, 4, 1000);
	rx_stats_add(rx, buf, 20, 96000, &r);
	TT_CHECK(r.bench == 0);
	/* a send time in the future: counted, tracked, no latency */
	mk(buf, 64, 9, 6, 500000);
	rx_stats_add(rx, buf, 64, 100000, &r);
	TT_CHECK(r.bench && r.latency_ns == 0);

	TT_CHECK(rx->messages == 9);
	TT_CHECK(rx->bench_messages == 7);
	TT_CHECK(rx->bench_bytes == 6 * 64 + 40);
	TT_CHECK(rx->foreign_messages == 2);
	TT_CHECK(rx->foreign_bytes == strlen(text) + 20);
	TT_CHECK(rx->bad_version == 0);
	TT_CHECK(rx->clock_errors == 1);
	TT_CHECK(rx->latency.count == 6);
	TT_CHECK(rx->latency.min == 1000 && rx->latency.max == 87000);
	TT_CHECK(rx->first_ns == 51000 && rx->last_ns == 100000);
	rx_stats_totals(rx, &tot);
	TT_CHECK(tot.publishers == 2);
	TT_CHECK(tot.duplicates == 1 && tot.reordered == 1);
	/* publisher 7: 0..3 all there; publisher 9: 0..4 never seen */
	TT_CHECK(tot.lost == 5);
	TT_CHECK(tot.unique == 6 && rx->unique == 6);
	rx_stats_free(rx);
	free(rx);
}

/*
 * Payloads that carry the magic but cannot come from a load generator of
 * this run: a stray like mosquitto_pub's with sequence 2^64 - 1 and send
 * time 1 once made "lost" -2 (2^64 - 2 cast to signed) and a latency of the
 * machine's uptime. They are foreign (and invalid), nothing else.
 */
static void test_rx_stats_stray(void)
{
	struct rx_stats *rx = malloc(sizeof(*rx));
	const uint64_t start = UINT64_C(4000) * 1000000000; /* sink start */
	const uint64_t now = start + 5000000000u;
	struct rx_result r;
	struct rx_totals tot;
	uint8_t buf[64];

	if (rx == NULL)
		return;
	rx_stats_init(rx, start);
	mk(buf, 64, 7, UINT64_MAX, 1);
	TT_CHECK(rx_stats_add(rx, buf, 64, now, &r) == 0);
	TT_CHECK(!r.bench && r.invalid);
	/* each reason alone */
	mk(buf, 64, 7, PAYLOAD_SEQ_MAX + 1, now - 1000);
	rx_stats_add(rx, buf, 64, now, &r);
	TT_CHECK(!r.bench && r.invalid);
	mk(buf, 64, 7, 3, start - 1); /* before the sink started */
	rx_stats_add(rx, buf, 64, now, &r);
	TT_CHECK(!r.bench && r.invalid);
	mk(buf, 64, 7, 3, now + RX_FUTURE_TOLERANCE_NS + 1);
	rx_stats_add(rx, buf, 64, now, &r);
	TT_CHECK(!r.bench && r.invalid);
	mk(buf, 64, 7, 3, UINT64_MAX); /* no overflow in the check */
	rx_stats_add(rx, buf, 64, now, &r);
	TT_CHECK(!r.bench && r.invalid);
	TT_CHECK(rx->invalid == 5 && rx->foreign_messages == 5);
	TT_CHECK(rx->bench_messages == 0 && rx->latency.count == 0);
	rx_stats_totals(rx, &tot);
	TT_CHECK(tot.publishers == 0 && tot.lost == 0);

	/* the edges that are still ours */
	mk(buf, 64, 8, PAYLOAD_SEQ_MAX, start);
	rx_stats_add(rx, buf, 64, now, &r);
	TT_CHECK(r.bench && !r.invalid && r.latency_ns == now - start);
	mk(buf, 64, 9, 0, now + RX_FUTURE_TOLERANCE_NS);
	rx_stats_add(rx, buf, 64, now, &r);
	TT_CHECK(r.bench && r.clock_error && r.latency_ns == 0);
	TT_CHECK(rx->invalid == 5 && rx->bench_messages == 2);
	TT_CHECK(rx->clock_errors == 1 && rx->latency.count == 1);
	TT_CHECK(rx->latency.max == now - start);
	rx_stats_free(rx);

	/* 0 turns the lower bound off (persistent sessions) */
	rx_stats_init(rx, 0);
	mk(buf, 64, 7, 0, 1);
	rx_stats_add(rx, buf, 64, now, &r);
	TT_CHECK(r.bench && !r.invalid);
	rx_stats_free(rx);
	free(rx);
}

/* Totals saturate instead of wrapping around (trackers fed directly). */
static void test_rx_totals_saturate(void)
{
	struct rx_stats *rx = malloc(sizeof(*rx));
	struct rx_totals tot;
	struct seq_tracker *t;
	uint32_t id;

	if (rx == NULL)
		return;
	rx_stats_init(rx, 0);
	for (id = 1; id <= 3; id++) {
		t = seq_table_get(&rx->pubs, id);
		TT_CHECK(t != NULL);
		if (t != NULL)
			seq_tracker_add(t, UINT64_MAX);
	}
	rx_stats_totals(rx, &tot);
	TT_CHECK(tot.publishers == 3);
	TT_CHECK(tot.lost == UINT64_MAX);
	TT_CHECK(tot.unique == 3);
	rx_stats_free(rx);
	free(rx);
}

int main(void)
{
	TT_RUN(test_hist_empty);
	TT_RUN(test_hist_geometry);
	TT_RUN(test_hist_single);
	TT_RUN(test_hist_uniform);
	TT_RUN(test_hist_lognormal);
	TT_RUN(test_hist_clamp);
	TT_RUN(test_hist_memory_constant);
	TT_RUN(test_hist_merge);
	TT_RUN(test_hist_bimodal);
	TT_RUN(test_seq_in_order);
	TT_RUN(test_seq_loss);
	TT_RUN(test_seq_late_start);
	TT_RUN(test_seq_duplicates);
	TT_RUN(test_seq_reorder);
	TT_RUN(test_seq_window_wrap);
	TT_RUN(test_seq_window_edge);
	TT_RUN(test_seq_extreme);
	TT_RUN(test_seq_table);
	TT_RUN(test_rx_stats);
	TT_RUN(test_rx_stats_stray);
	TT_RUN(test_rx_totals_saturate);
	TT_RUN(test_rx_stats_schedule);
	return TT_DONE();
}
