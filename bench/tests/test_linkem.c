/*
 * test_linkem.c: the link emulator's queue logic against a virtual clock.
 * Every expectation is exact or a fixed statistical bound on a fixed seed,
 * so the suite is deterministic.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linkem/lead.h"
#include "linkem/queue.h"
#include "tt.h"

#define MS 1000000ll
#define US 1000ll

static uint8_t buf[LINKEM_FRAME_MAX];

/* A frame carrying its sequence number in the first 4 bytes. */
static int input_seq(linkem_dir *d, uint32_t seq, size_t len, int64_t now)
{
	memset(buf, 0xab, len);
	if (len >= 4)
		memcpy(buf, &seq, 4);
	return linkem_dir_input(d, buf, len, now);
}

static uint32_t frame_seq(const linkem_frame *f)
{
	uint32_t s;

	memcpy(&s, f->data, 4);
	return s;
}

static int linkem_config_ok(const linkem_dir_config *c)
{
	return linkem_dir_config_check(c) == 0;
}

static void init_dir(linkem_dir *d, uint64_t rate, int64_t delay,
                     int64_t jitter, uint64_t qpk, uint64_t qbytes)
{
	linkem_dir_config c;

	linkem_dir_config_default(&c);
	c.rate_bps = rate;
	c.delay_ns = delay;
	c.jitter_ns = jitter;
	c.queue_packets = qpk;
	c.queue_bytes = qbytes;
	TT_CHECK(linkem_dir_init(d, &c, 1, 0) == 0);
}

/* in = out + dropped + pending, for frames and bytes */
static int counters_add_up(const linkem_dir *d)
{
	const linkem_dir_stats *s = &d->st;

	return s->frames_in == s->frames_out + s->dropped_loss +
	                       s->dropped_queue + d->pending_frames &&
	       s->bytes_in == s->bytes_out + s->bytes_dropped_loss +
	                      s->bytes_dropped_queue + d->pending_bytes;
}

/* ceil(k * len * 8e9 / rate) without overflow */
static int64_t exact_ceil(uint64_t k, uint64_t len, uint64_t rate)
{
	unsigned __int128 num = (unsigned __int128)k * len * 8u * 1000000000u;

	return (int64_t)((num + rate - 1) / rate);
}

static void test_rng(void)
{
	linkem_rng a, b, c;
	double sum = 0;
	int i, same = 1, diff = 0;

	linkem_rng_seed(&a, 42, 0);
	linkem_rng_seed(&b, 42, 0);
	linkem_rng_seed(&c, 42, 1);
	for (i = 0; i < 1000; i++) {
		uint64_t x = linkem_rng_next(&a);

		same &= x == linkem_rng_next(&b);
		diff += x != linkem_rng_next(&c);
	}
	TT_CHECK(same);
	TT_CHECK(diff == 1000);
	for (i = 0; i < 100000; i++) {
		double u = linkem_rng_uniform(&a);

		TT_CHECK(u >= 0.0 && u < 1.0);
		sum += u;
	}
	/* mean of 1e5 uniforms: sd 0.00091; 5 sd */
	TT_CHECK(fabs(sum / 100000 - 0.5) < 0.0046);
	for (i = 0; i < 10000; i++)
		TT_CHECK(linkem_rng_below(&a, 7) < 7);
}

static void test_ser_ns(void)
{
	uint64_t frac;

	TT_CHECK(linkem_ser_ns(1500, 1000000, &frac) == 12000000 && frac == 0);
	/* 8e9 / 3 = 2666666666 rest 2 */
	TT_CHECK(linkem_ser_ns(1, 3, &frac) == 2666666666ll && frac == 2);
	TT_CHECK(linkem_ser_ns(1, LINKEM_RATE_MAX, &frac) == 0 &&
	         frac == 8000000000ull);
	TT_CHECK(linkem_ser_ns(LINKEM_FRAME_MAX, 1, &frac) ==
	         (int64_t)LINKEM_FRAME_MAX * 8000000000ll);
}

/* A burst at t0 leaves spaced by exactly len*8/rate, with no drift even
 * when the spacing is not a whole number of ns. */
static void test_rate_spacing(void)
{
	static const uint64_t rates[] = {1000000, 3000000, 250000, 30000000,
	                                 7};
	linkem_dir d;
	linkem_frame *f;
	const int64_t t0 = 5 * MS;
	const size_t len = 1000;
	size_t r;
	int k, n = 200, ok;

	for (r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
		init_dir(&d, rates[r], 0, 0, 1000, 0);
		for (k = 0; k < n; k++)
			TT_CHECK(input_seq(&d, (uint32_t)k, len, t0) ==
			         LINKEM_ACCEPTED);
		ok = 1;
		for (k = 1; k <= n; k++) {
			int64_t want = t0 + exact_ceil((uint64_t)k, len,
			                               rates[r]);

			ok &= linkem_dir_next(&d) == want;
			ok &= linkem_dir_pop(&d, want - 1) == NULL;
			f = linkem_dir_pop(&d, want);
			ok &= f != NULL && frame_seq(f) == (uint32_t)(k - 1);
			linkem_frame_del(f);
		}
		TT_CHECK(ok);
		TT_CHECK(linkem_dir_next(&d) == INT64_MAX);
		TT_CHECK(d.st.frames_out == (uint64_t)n);
		linkem_dir_free(&d);
	}

	/* frames arriving while the link is busy continue the exact
	 * schedule; a frame after an idle gap starts at its arrival */
	init_dir(&d, 3000000, 0, 0, 1000, 0);
	input_seq(&d, 0, len, 0);
	input_seq(&d, 1, len, 1 * MS);   /* busy: starts at 8e9/3e6 ns */
	input_seq(&d, 2, len, 100 * MS); /* idle: starts at 100 ms */
	f = linkem_dir_pop(&d, INT64_MAX - 1);
	TT_CHECK(f && f->depart_ns == exact_ceil(1, len, 3000000));
	linkem_frame_del(f);
	f = linkem_dir_pop(&d, INT64_MAX - 1);
	TT_CHECK(f && f->depart_ns == exact_ceil(2, len, 3000000));
	TT_CHECK(f && f->start_ns == exact_ceil(1, len, 3000000));
	linkem_frame_del(f);
	f = linkem_dir_pop(&d, INT64_MAX - 1);
	TT_CHECK(f && f->depart_ns == 100 * MS + exact_ceil(1, len, 3000000));
	linkem_frame_del(f);
	linkem_dir_free(&d);
}

/* The delay adds exactly, on top of the serialisation time. */
static void test_delay(void)
{
	linkem_dir d;
	linkem_frame *f;
	int k, ok = 1;

	init_dir(&d, 0, 5 * MS, 0, 1000, 0);
	for (k = 0; k < 100; k++)
		input_seq(&d, (uint32_t)k, 100, k * 37 * US);
	for (k = 0; k < 100; k++) {
		int64_t want = k * 37 * US + 5 * MS;

		ok &= linkem_dir_next(&d) == want;
		ok &= linkem_dir_pop(&d, want - 1) == NULL;
		f = linkem_dir_pop(&d, want);
		ok &= f && frame_seq(f) == (uint32_t)k && f->len == 100;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	linkem_dir_free(&d);

	/* rate 1 Mb/s, 125-byte frames (1 ms each), spaced 2 ms: every frame
	 * leaves at arrival + 1 ms + 20 ms */
	init_dir(&d, 1000000, 20 * MS, 0, 1000, 0);
	for (k = 0; k < 50; k++)
		input_seq(&d, (uint32_t)k, 125, k * 2 * MS);
	ok = 1;
	for (k = 0; k < 50; k++) {
		f = linkem_dir_pop(&d, INT64_MAX - 1);
		ok &= f && f->depart_ns == k * 2 * MS + 21 * MS;
		ok &= f && f->start_ns == f->arrival_ns;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	linkem_dir_free(&d);
}

/* Jitter stays within [-J, +J] and never reorders. */
static void test_jitter(void)
{
	linkem_dir d;
	linkem_frame *f;
	const int64_t delay = 10 * MS, J = 2 * MS;
	int64_t prev = INT64_MIN, lo = INT64_MAX, hi = INT64_MIN;
	double sum = 0;
	int k, n = 20000, ok = 1;

	/* spaced wider than 2J: no clamping, pure jitter visible */
	init_dir(&d, 0, delay, J, 100000, 0);
	for (k = 0; k < n; k++) {
		int64_t arr = (int64_t)k * 5 * MS, j;

		input_seq(&d, (uint32_t)k, 64, arr);
		f = linkem_dir_pop(&d, arr + delay + J);
		ok &= f != NULL && frame_seq(f) == (uint32_t)k;
		if (!f)
			break;
		j = f->depart_ns - arr - delay;
		ok &= j >= -J && j <= J;
		if (j < lo)
			lo = j;
		if (j > hi)
			hi = j;
		sum += (double)j;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	/* the draw covers the interval: extremes within 0.1 % of J */
	TT_CHECK(lo < -J + J / 1000 && hi > J - J / 1000);
	/* mean of uniform[-J, J] over 2e4: sd J/sqrt(3*2e4) = 8.2 us */
	TT_CHECK(fabs(sum / n) < 5 * 8.2 * US);
	linkem_dir_free(&d);

	/* spaced far tighter than J: order kept, bounds kept */
	init_dir(&d, 0, delay, J, 100000, 0);
	for (k = 0; k < n; k++)
		input_seq(&d, (uint32_t)k, 64, (int64_t)k * 10 * US);
	ok = 1;
	for (k = 0; k < n; k++) {
		int64_t arr = (int64_t)k * 10 * US;

		f = linkem_dir_pop(&d, INT64_MAX - 1);
		ok &= f && frame_seq(f) == (uint32_t)k;
		if (!f)
			break;
		ok &= f->depart_ns >= prev;
		ok &= f->depart_ns >= arr + delay - J;
		ok &= f->depart_ns <= arr + delay + J ||
		      f->depart_ns == prev;
		prev = f->depart_ns;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	linkem_dir_free(&d);

	/* jitter larger than the delay: delay + jitter clamps at 0 */
	init_dir(&d, 0, 1 * MS, 5 * MS, 100000, 0);
	ok = 1;
	for (k = 0; k < 1000; k++) {
		int64_t arr = (int64_t)k * 20 * MS;

		input_seq(&d, (uint32_t)k, 64, arr);
		f = linkem_dir_pop(&d, INT64_MAX - 1);
		ok &= f && f->depart_ns >= arr && f->depart_ns <= arr + 6 * MS;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	linkem_dir_free(&d);
}

/* Jitter never packs frames tighter than the link rate: each departure is
 * at least the frame's own serialisation time after the one ahead (the old
 * max(own, previous departure) let a frame leave at the same instant as
 * the frame ahead), and the exact spacing does not drift. */
static void test_jitter_keeps_rate(void)
{
	linkem_dir d;
	linkem_frame *f;
	const uint64_t rate = 3000000;
	const size_t len = 1000; /* 2666666.67 ns each */
	const int n = 5000;
	int64_t prev = INT64_MIN, first = 0, last = 0;
	uint64_t frac;
	int64_t ser = linkem_ser_ns(len, rate, &frac);
	int k, ok = 1, tight = 0;

	/* frames at exactly the rate, jitter far larger than the spacing:
	 * without the rule, a frame that draws less delay than the one
	 * ahead would leave with it */
	init_dir(&d, rate, 20 * MS, 10 * MS, 100000, 0);
	for (k = 0; k < n; k++)
		input_seq(&d, (uint32_t)k, len, exact_ceil((uint64_t)k, len,
		                                            rate));
	for (k = 0; k < n; k++) {
		f = linkem_dir_pop(&d, INT64_MAX - 1);
		ok &= f && frame_seq(f) == (uint32_t)k;
		if (!f)
			break;
		if (k == 0)
			first = f->depart_ns;
		else {
			/* whole ns of an exact spacing of ser + frac/rate */
			ok &= f->depart_ns - prev >= ser;
			tight += f->depart_ns - prev <= ser + 1;
		}
		prev = last = f->depart_ns;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	/* the rule did bind, often: back-to-back departures */
	TT_CHECK(tight > n / 10);
	/* no drift: n-1 spacings of exactly len*8/rate at the least, and the
	 * whole schedule stays within delay + jitter of the arrivals */
	TT_CHECK(last - first >= exact_ceil((uint64_t)n - 1, len, rate) - 1);
	TT_CHECK(counters_add_up(&d));
	linkem_dir_free(&d);

	/* no jitter: the rule never moves a frame; the schedule is exact */
	init_dir(&d, rate, 20 * MS, 0, 100000, 0);
	for (k = 0; k < 200; k++)
		input_seq(&d, (uint32_t)k, len, 0);
	ok = 1;
	for (k = 1; k <= 200; k++) {
		f = linkem_dir_pop(&d, INT64_MAX - 1);
		ok &= f && f->depart_ns == exact_ceil((uint64_t)k, len, rate) +
		                                   20 * MS;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	linkem_dir_free(&d);
}

/* Run n frames of len bytes, 1 ms apart, through c; write which were lost
 * (1) into lost[]. Returns the number lost. */
static int lost_pattern(const linkem_dir_config *c, int n, size_t len,
                        char *lost)
{
	linkem_dir d;
	linkem_frame *f;
	int k, count = 0;

	if (linkem_dir_init(&d, c, 5, 1) != 0)
		return -1;
	for (k = 0; k < n; k++) {
		lost[k] = input_seq(&d, (uint32_t)k, len, k * MS) ==
		          LINKEM_DROPPED_LOSS;
		count += lost[k];
		while ((f = linkem_dir_pop(&d, k * MS)) != NULL)
			linkem_frame_del(f);
	}
	linkem_dir_free(&d);
	return count;
}

/* Jitter has its own random stream: turning it on does not change which
 * frames the loss model drops (it did when both drew from one stream). */
static void test_jitter_own_stream(void)
{
	static char a[20000], b[20000];
	linkem_dir_config c;
	int n = 20000, la, lb;

	linkem_dir_config_default(&c);
	c.rate_bps = 10000000;
	c.delay_ns = 5 * MS;
	c.loss_model = LINKEM_LOSS_BERNOULLI;
	c.loss_p = 0.05;
	la = lost_pattern(&c, n, 200, a);
	c.jitter_ns = 2 * MS;
	lb = lost_pattern(&c, n, 200, b);
	TT_CHECK(la > 800 && la < 1200);
	TT_CHECK(la == lb && memcmp(a, b, (size_t)n) == 0);

	/* Gilbert-Elliott draws twice per frame: the same holds */
	c.loss_model = LINKEM_LOSS_GE;
	c.ge_p = 0.01;
	c.ge_r = 0.3;
	c.ge_lb = 0.9;
	c.ge_lg = 0.001;
	c.jitter_ns = 0;
	la = lost_pattern(&c, n, 200, a);
	c.jitter_ns = 3 * MS;
	lb = lost_pattern(&c, n, 200, b);
	TT_CHECK(la > 0 && la == lb && memcmp(a, b, (size_t)n) == 0);

	/* and the jitter stream is not the loss stream of the other
	 * direction (stream 1 of the same seed) */
	{
		linkem_rng j, l;
		int k, same = 0;

		linkem_rng_seed(&j, 5, 0 + LINKEM_JITTER_STREAM);
		linkem_rng_seed(&l, 5, 1);
		for (k = 0; k < 100; k++)
			same += linkem_rng_next(&j) == linkem_rng_next(&l);
		TT_CHECK(same == 0);
	}
}

/* Link-layer framing, netem's way: overhead per frame, then whole cells of
 * cell_size + cell_overhead bytes. */
static void test_framing(void)
{
	linkem_dir_config c;
	linkem_dir d;
	linkem_frame *f;
	int k, ok = 1;

	linkem_dir_config_default(&c);
	TT_CHECK(linkem_wire_bytes(&c, 1514) == 1514);
	TT_CHECK(linkem_cells(&c, 1514) == 1);
	c.packet_overhead = 24; /* e.g. preamble, FCS, inter-frame gap */
	TT_CHECK(linkem_wire_bytes(&c, 1514) == 1538);
	c.packet_overhead = -14; /* no Ethernet header on this link */
	TT_CHECK(linkem_wire_bytes(&c, 98) == 84);
	TT_CHECK(linkem_wire_bytes(&c, 10) == 0);
	/* 802.15.4 + 6LoWPAN-like: 104-byte cells sent as 146 bytes */
	c.cell_size = 104;
	c.cell_overhead = 42;
	TT_CHECK(linkem_cells(&c, 1514) == 15);           /* 1500 / 104 */
	TT_CHECK(linkem_wire_bytes(&c, 1514) == 15 * 146);
	TT_CHECK(linkem_cells(&c, 118) == 1);            /* exactly 104 */
	TT_CHECK(linkem_cells(&c, 119) == 2);
	TT_CHECK(linkem_wire_bytes(&c, 119) == 2 * 146);
	TT_CHECK(linkem_cells(&c, 14) == 1);             /* never 0 */
	/* ATM: 48-byte cells with 5 bytes of header each */
	c.packet_overhead = 0;
	c.cell_size = 48;
	c.cell_overhead = 5;
	TT_CHECK(linkem_wire_bytes(&c, 100) == 3 * 53);
	TT_CHECK(linkem_config_ok(&c));

	/* the transmitter serialises wire bytes: 250 kbit/s, 1514-byte frames
	 * as 2190 bytes, 70.08 ms each, back to back */
	linkem_dir_config_default(&c);
	c.rate_bps = 250000;
	c.packet_overhead = -14;
	c.cell_size = 104;
	c.cell_overhead = 42;
	TT_CHECK(linkem_dir_init(&d, &c, 1, 0) == 0);
	for (k = 0; k < 5; k++)
		input_seq(&d, (uint32_t)k, 1514, 0);
	for (k = 1; k <= 5; k++) {
		f = linkem_dir_pop(&d, INT64_MAX - 1);
		ok &= f && f->depart_ns == k * 70080 * US;
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	linkem_dir_free(&d);

	/* out of range */
	linkem_dir_config_default(&c);
	c.cell_overhead = 5; /* overhead of cells without cells */
	TT_CHECK(!linkem_config_ok(&c));
	c.cell_size = 10;
	c.cell_overhead = -11; /* a cell of less than nothing */
	TT_CHECK(!linkem_config_ok(&c));
	c.cell_overhead = LINKEM_CELL_OVERHEAD_MAX + 1;
	TT_CHECK(!linkem_config_ok(&c));
	linkem_dir_config_default(&c);
	c.packet_overhead = -LINKEM_OVERHEAD_MAX - 1;
	TT_CHECK(!linkem_config_ok(&c));
	c.packet_overhead = 0;
	c.loss_model = LINKEM_LOSS_BERNOULLI;
	c.loss_per_cell = 1; /* per cell, but no cells */
	TT_CHECK(!linkem_config_ok(&c));
}

/* Loss per cell: a frame is lost if any of its cells is, so a frame of k
 * cells is lost with 1 - (1 - p)^k; Gilbert-Elliott steps once per cell. */
static void test_loss_per_cell(void)
{
	static char lost[40000];
	linkem_dir_config c;
	const int n = 40000;
	double p = 0.01, want, sd;
	int got;

	linkem_dir_config_default(&c);
	c.loss_model = LINKEM_LOSS_BERNOULLI;
	c.loss_p = p;
	c.packet_overhead = -14;
	c.cell_size = 104;
	c.cell_overhead = 42;
	c.loss_per_cell = 1;
	/* 1294-byte frames: 1280 bytes, 13 cells */
	TT_CHECK(linkem_cells(&c, 1294) == 13);
	got = lost_pattern(&c, n, 1294, lost);
	want = n * (1 - pow(1 - p, 13));
	sd = sqrt(want * pow(1 - p, 13));
	TT_CHECK(fabs(got - want) <= 3.2905 * sd);
	/* one-cell frames: p */
	got = lost_pattern(&c, n, 60, lost);
	TT_CHECK(fabs(got - n * p) <= 3.2905 * sqrt(n * p * (1 - p)));
	/* per frame (the default): p whatever the size */
	c.loss_per_cell = 0;
	got = lost_pattern(&c, n, 1294, lost);
	TT_CHECK(fabs(got - n * p) <= 3.2905 * sqrt(n * p * (1 - p)));

	/* Gilbert-Elliott, bursts of 1/r = 20 cells on average, all lost in
	 * the bad state: 13-cell frames lose a whole burst's worth of cells
	 * in one or two frames, so far fewer frames are lost than cells */
	c.loss_model = LINKEM_LOSS_GE;
	c.ge_p = 0.002;
	c.ge_r = 0.05;
	c.ge_lb = 1;
	c.ge_lg = 0;
	c.loss_per_cell = 1;
	got = lost_pattern(&c, n, 1294, lost);
	/* cells lost: n*13*p/(p+r) = 20000; bursts n*13*p*r/(p+r) ~ 1000,
	 * each touching about 1 + 20/13 frames: ~2500 frames */
	TT_CHECK(got > 1500 && got < 3500);
}

/* Run n frames through a lossy direction (rate 0, delay 0), return the
 * number lost and, through bursts/burst_frames, the loss bursts seen. */
static uint64_t run_loss(const linkem_dir_config *c, uint64_t seed,
                         uint64_t stream, int n, uint64_t *bursts,
                         uint64_t *burst_frames)
{
	linkem_dir d;
	linkem_frame *f;
	uint64_t lost = 0;
	int k, in_burst = 0, rc;

	*bursts = *burst_frames = 0;
	if (linkem_dir_init(&d, c, seed, stream) != 0)
		return UINT64_MAX;
	for (k = 0; k < n; k++) {
		rc = input_seq(&d, (uint32_t)k, 64, k);
		if (rc == LINKEM_DROPPED_LOSS) {
			lost++;
			(*burst_frames)++;
			if (!in_burst)
				(*bursts)++;
			in_burst = 1;
		} else {
			in_burst = 0;
			f = linkem_dir_pop(&d, k);
			linkem_frame_del(f);
		}
	}
	if (!counters_add_up(&d) || d.st.dropped_loss != lost)
		lost = UINT64_MAX;
	linkem_dir_free(&d);
	return lost;
}

static void test_bernoulli(void)
{
	static const double ps[] = {0.001, 0.01, 0.02, 0.2, 0.5};
	linkem_dir_config c;
	uint64_t lost, b, bf;
	const int n = 100000;
	size_t i;

	linkem_dir_config_default(&c);
	c.loss_model = LINKEM_LOSS_BERNOULLI;
	for (i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		double mean, sd;

		c.loss_p = ps[i];
		lost = run_loss(&c, 7, 0, n, &b, &bf);
		mean = n * ps[i];
		sd = sqrt(n * ps[i] * (1 - ps[i]));
		/* two-sided 99.9 % binomial interval (normal approx.) */
		TT_CHECK(fabs((double)lost - mean) <= 3.2905 * sd);
	}
	c.loss_p = 0;
	TT_CHECK(run_loss(&c, 7, 0, 10000, &b, &bf) == 0);
	c.loss_p = 1;
	TT_CHECK(run_loss(&c, 7, 0, 10000, &b, &bf) == 10000);
	/* another stream of the same seed draws differently */
	c.loss_p = 0.5;
	TT_CHECK(run_loss(&c, 7, 0, 1000, &b, &bf) !=
	         run_loss(&c, 7, 1, 1000, &b, &bf));
}

static void test_gilbert_elliott(void)
{
	linkem_dir_config c;
	uint64_t lost, bursts, bf;
	const int n = 1000000;
	double pib, want, mean_burst;

	/* the classic two-state burst model: all lost in bad, none in good;
	 * loss = p/(p+r), mean burst = 1/r */
	linkem_dir_config_default(&c);
	c.loss_model = LINKEM_LOSS_GE;
	c.ge_p = 0.01;
	c.ge_r = 0.25;
	c.ge_lb = 1.0;
	c.ge_lg = 0.0;
	lost = run_loss(&c, 3, 0, n, &bursts, &bf);
	want = c.ge_p / (c.ge_p + c.ge_r);
	TT_CHECK(fabs((double)lost / n - want) < 0.05 * want);
	mean_burst = (double)bf / (double)bursts;
	TT_CHECK(fabs(mean_burst - 1 / c.ge_r) < 0.05 / c.ge_r);

	/* general case: loss = piG*lg + piB*lb */
	c.ge_p = 0.05;
	c.ge_r = 0.4;
	c.ge_lb = 0.7;
	c.ge_lg = 0.01;
	lost = run_loss(&c, 3, 0, n, &bursts, &bf);
	pib = c.ge_p / (c.ge_p + c.ge_r);
	want = (1 - pib) * c.ge_lg + pib * c.ge_lb;
	TT_CHECK(fabs((double)lost / n - want) < 0.05 * want);

	/* never entering the bad state, no good-state loss: nothing lost */
	c.ge_p = 0;
	c.ge_lg = 0;
	TT_CHECK(run_loss(&c, 3, 0, 10000, &bursts, &bf) == 0);
}

/* Drop-tail by packets: one frame on the transmitter plus exactly N
 * waiting; the next is dropped, and room reappears as frames start. */
static void test_droptail_packets(void)
{
	linkem_dir d;
	uint64_t frac;
	int64_t ser;
	int k, acc = 0, drop = 0;

	init_dir(&d, 1000000, 50 * MS, 0, 10, 0);
	ser = linkem_ser_ns(1000, 1000000, &frac); /* 8 ms */
	for (k = 0; k < 50; k++) {
		int rc = input_seq(&d, (uint32_t)k, 1000, 0);

		acc += rc == LINKEM_ACCEPTED;
		drop += rc == LINKEM_DROPPED_QUEUE;
	}
	TT_CHECK(acc == 11 && drop == 39);
	TT_CHECK(d.st.dropped_queue == 39 && d.st.bytes_dropped_queue == 39000);
	TT_CHECK(linkem_dir_waiting_frames(&d, 0) == 10);
	/* just before the second frame starts: still full */
	TT_CHECK(input_seq(&d, 99, 1000, ser - 1) == LINKEM_DROPPED_QUEUE);
	/* the second frame starts at ser: one place free, exactly one */
	TT_CHECK(input_seq(&d, 100, 1000, ser) == LINKEM_ACCEPTED);
	TT_CHECK(input_seq(&d, 101, 1000, ser) == LINKEM_DROPPED_QUEUE);
	TT_CHECK(linkem_dir_waiting_frames(&d, ser) == 10);
	/* frames being sent or on the delay line do not count: at 11*ser
	 * the last accepted frame starts, the queue is empty, and all 12
	 * accepted frames are still held (none popped) */
	TT_CHECK(linkem_dir_waiting_frames(&d, 11 * ser - 1) == 1);
	TT_CHECK(linkem_dir_waiting_frames(&d, 11 * ser) == 0);
	TT_CHECK(linkem_dir_pending_frames(&d) == 12);
	TT_CHECK(counters_add_up(&d));
	linkem_dir_free(&d);

	/* limit 0: only frames finding the transmitter idle pass */
	init_dir(&d, 1000000, 0, 0, 0, 0);
	TT_CHECK(input_seq(&d, 0, 1000, 0) == LINKEM_ACCEPTED);
	TT_CHECK(input_seq(&d, 1, 1000, 1) == LINKEM_DROPPED_QUEUE);
	TT_CHECK(input_seq(&d, 2, 1000, ser) == LINKEM_ACCEPTED);
	linkem_dir_free(&d);
}

static void test_droptail_bytes(void)
{
	linkem_dir d;

	init_dir(&d, 1000000, 0, 0, 1000, 5000);
	/* the first goes straight to the transmitter, not counted */
	TT_CHECK(input_seq(&d, 0, 1500, 0) == LINKEM_ACCEPTED);
	TT_CHECK(input_seq(&d, 1, 1500, 0) == LINKEM_ACCEPTED);
	TT_CHECK(input_seq(&d, 2, 1500, 0) == LINKEM_ACCEPTED);
	TT_CHECK(input_seq(&d, 3, 1500, 0) == LINKEM_ACCEPTED); /* 4500 */
	TT_CHECK(input_seq(&d, 4, 600, 0) == LINKEM_DROPPED_QUEUE);
	TT_CHECK(input_seq(&d, 5, 500, 0) == LINKEM_ACCEPTED); /* 5000 */
	TT_CHECK(input_seq(&d, 6, 1, 0) == LINKEM_DROPPED_QUEUE);
	TT_CHECK(linkem_dir_waiting_bytes(&d, 0) == 5000);
	TT_CHECK(d.st.dropped_queue == 2 && d.st.bytes_dropped_queue == 601);
	TT_CHECK(counters_add_up(&d));
	linkem_dir_free(&d);
}

/* Rate 0: no serialisation, no queue, any burst passes. */
static void test_zero_rate(void)
{
	linkem_dir d;
	linkem_frame *f;
	int k, ok = 1;

	init_dir(&d, 0, 3 * MS, 0, 1, 0);
	for (k = 0; k < 10000; k++)
		ok &= input_seq(&d, (uint32_t)k, k % 100 ? 200 : 65535, 7) ==
		      LINKEM_ACCEPTED;
	TT_CHECK(ok);
	TT_CHECK(linkem_dir_waiting_frames(&d, 7) == 0);
	TT_CHECK(linkem_dir_pop(&d, 7 + 3 * MS - 1) == NULL);
	for (k = 0; k < 10000; k++) {
		f = linkem_dir_pop(&d, 7 + 3 * MS);
		ok &= f && frame_seq(f) == (uint32_t)k &&
		      f->len == (k % 100 ? 200u : 65535u);
		linkem_frame_del(f);
	}
	TT_CHECK(ok);
	TT_CHECK(linkem_dir_next(&d) == INT64_MAX);
	linkem_dir_free(&d);
}

/* The delay line is not capped by the queue limit: a paced flow at the
 * link rate keeps many frames in flight with a queue limit of 1. */
static void test_inflight_uncapped(void)
{
	linkem_dir d;
	int k, ok = 1;

	init_dir(&d, 1000000, 1000 * MS, 0, 1, 0);
	for (k = 0; k < 100; k++)
		ok &= input_seq(&d, (uint32_t)k, 125, k * 1 * MS) ==
		      LINKEM_ACCEPTED;
	TT_CHECK(ok);
	TT_CHECK(linkem_dir_pending_frames(&d) == 100);
	TT_CHECK(d.st.dropped_queue == 0);
	linkem_dir_free(&d);
}

/* Counters add up through a random mix of arrivals, drops and pops. */
static void test_counters(void)
{
	linkem_dir_config c;
	linkem_dir d;
	linkem_rng r;
	linkem_frame *f;
	int64_t now = 0;
	int k, ok = 1;

	linkem_dir_config_default(&c);
	c.rate_bps = 2000000;
	c.delay_ns = 3 * MS;
	c.jitter_ns = 1 * MS;
	c.loss_model = LINKEM_LOSS_BERNOULLI;
	c.loss_p = 0.05;
	c.queue_packets = 20;
	c.queue_bytes = 20000;
	TT_CHECK(linkem_dir_init(&d, &c, 11, 0) == 0);
	linkem_rng_seed(&r, 5, 0);
	for (k = 0; k < 200000; k++) {
		now += (int64_t)linkem_rng_below(&r, 6 * MS / 1000);
		if (linkem_rng_below(&r, 3) != 0) {
			size_t len = 1 + (size_t)linkem_rng_below(&r, 1514);

			input_seq(&d, (uint32_t)k, len, now);
		} else {
			while ((f = linkem_dir_pop(&d, now)) != NULL)
				linkem_frame_del(f);
		}
		ok &= counters_add_up(&d);
		ok &= linkem_dir_waiting_frames(&d, now) <= 20;
		ok &= linkem_dir_waiting_bytes(&d, now) <= 20000;
	}
	TT_CHECK(ok);
	TT_CHECK(d.st.dropped_loss > 0 && d.st.dropped_queue > 0);
	TT_CHECK(d.st.frames_out > 0);
	linkem_dir_free(&d);
}

static void test_invalid(void)
{
	linkem_dir_config c;
	linkem_dir d;

	linkem_dir_config_default(&c);
	TT_CHECK(linkem_dir_config_check(&c) == 0);
	c.loss_model = LINKEM_LOSS_BERNOULLI;
	c.loss_p = 1.5;
	TT_CHECK(linkem_dir_config_check(&c) == LINKEM_ERR_INVALID);
	c.loss_p = NAN;
	TT_CHECK(linkem_dir_config_check(&c) == LINKEM_ERR_INVALID);
	TT_CHECK(linkem_dir_init(&d, &c, 1, 0) == LINKEM_ERR_INVALID);
	linkem_dir_config_default(&c);
	c.loss_model = LINKEM_LOSS_GE;
	c.ge_r = -0.1;
	TT_CHECK(linkem_dir_config_check(&c) == LINKEM_ERR_INVALID);
	linkem_dir_config_default(&c);
	c.rate_bps = LINKEM_RATE_MAX + 1;
	TT_CHECK(linkem_dir_config_check(&c) == LINKEM_ERR_INVALID);
	linkem_dir_config_default(&c);
	c.delay_ns = -1;
	TT_CHECK(linkem_dir_config_check(&c) == LINKEM_ERR_INVALID);

	init_dir(&d, 0, 0, 0, 10, 0);
	TT_CHECK(linkem_dir_input(&d, buf, 0, 0) == LINKEM_ERR_INVALID);
	TT_CHECK(linkem_dir_input(&d, buf, LINKEM_FRAME_MAX + 1, 0) ==
	         LINKEM_ERR_INVALID);
	TT_CHECK(d.st.frames_in == 0);
	TT_CHECK(linkem_dir_input(&d, buf, LINKEM_FRAME_MAX, 0) ==
	         LINKEM_ACCEPTED);
	TT_CHECK(linkem_dir_pending_bytes(&d) == LINKEM_FRAME_MAX);
	/* freeing with frames held releases them (ASan checks for leaks) */
	linkem_dir_free(&d);
	TT_CHECK(linkem_dir_next(&d) == INT64_MAX);
}

/* The queue delay histogram sees start - arrival. */
static void test_queue_delay(void)
{
	linkem_dir d;
	int k;

	init_dir(&d, 1000000, 0, 0, 1000, 0);
	for (k = 0; k < 10; k++)
		input_seq(&d, (uint32_t)k, 1000, 0); /* 8 ms each */
	TT_CHECK(d.queue_delay.count == 10);
	TT_CHECK(d.queue_delay.min == 0);
	TT_CHECK(d.queue_delay.max == 72 * MS);
	TT_CHECK(fabs(stats_hist_mean(&d.queue_delay) - 36.0 * MS) < 1);
	linkem_dir_free(&d);
}

/* The timer lead follows the 90th percentile of wake-up latencies and
 * stays within [0, cap]. */
static void test_lead(void)
{
	linkem_lead l;
	linkem_rng r;
	int k;

	linkem_rng_seed(&r, 9, 0);
	linkem_lead_init(&l, 100 * US);
	TT_CHECK(linkem_lead_get(&l) == 50 * US);
	/* latencies uniform in [0, 40 us]: p90 = 36 us */
	for (k = 0; k < 200000; k++)
		linkem_lead_update(&l, (int64_t)linkem_rng_below(&r, 40 * US));
	TT_CHECK(llabs(linkem_lead_get(&l) - 36 * US) < 2 * US);
	/* latencies far above the cap: the lead stops at the cap */
	for (k = 0; k < 10000; k++)
		linkem_lead_update(&l, 10 * MS);
	TT_CHECK(linkem_lead_get(&l) == 100 * US);
	/* prompt wake-ups: the lead falls to 0, not below */
	for (k = 0; k < 100000; k++)
		linkem_lead_update(&l, 0);
	TT_CHECK(linkem_lead_get(&l) == 0);
	/* cap 0: never poll */
	linkem_lead_init(&l, 0);
	linkem_lead_update(&l, 1 * MS);
	TT_CHECK(linkem_lead_get(&l) == 0);
}

int main(void)
{
	TT_RUN(test_rng);
	TT_RUN(test_ser_ns);
	TT_RUN(test_rate_spacing);
	TT_RUN(test_delay);
	TT_RUN(test_jitter);
	TT_RUN(test_jitter_keeps_rate);
	TT_RUN(test_jitter_own_stream);
	TT_RUN(test_framing);
	TT_RUN(test_loss_per_cell);
	TT_RUN(test_bernoulli);
	TT_RUN(test_gilbert_elliott);
	TT_RUN(test_droptail_packets);
	TT_RUN(test_droptail_bytes);
	TT_RUN(test_zero_rate);
	TT_RUN(test_inflight_uncapped);
	TT_RUN(test_counters);
	TT_RUN(test_invalid);
	TT_RUN(test_queue_delay);
	TT_RUN(test_lead);
	return TT_DONE();
}
