/*
 * stats.c: log-linear histogram, sequence tracker, publisher table.
 * See stats.h for the guarantees.
 */
#include "measure/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SUB_COUNT (1u << STATS_HIST_SUB_BITS) /* 128 */

void stats_hist_init(struct stats_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

/* Index of the highest set bit of v (v > 0). */
static unsigned int log2_floor(uint64_t v)
{
	return 63u - (unsigned int)__builtin_clzll(v);
}

/*
 * Values below 2 * SUB_COUNT get one bucket per ns (group 0). Above, group g
 * holds [2^(g+7), 2^(g+8)) in 128 buckets of width 2^g, so a bucket is never
 * wider than 1/128 of the values in it.
 */
size_t stats_hist_index(uint64_t ns)
{
	unsigned int g;

	if (ns > STATS_HIST_MAX_NS)
		ns = STATS_HIST_MAX_NS;
	g = log2_floor(ns | (2 * SUB_COUNT - 1)) - STATS_HIST_SUB_BITS;
	return (size_t)g * SUB_COUNT + (size_t)(ns >> g);
}

void stats_hist_bucket_range(size_t idx, uint64_t *lo, uint64_t *hi)
{
	unsigned int g = 0;
	uint64_t sub = idx;

	if (idx >= 2 * SUB_COUNT) {
		g = (unsigned int)(idx / SUB_COUNT) - 1;
		sub = idx - (size_t)g * SUB_COUNT;
	}
	*lo = sub << g;
	*hi = ((sub + 1) << g) - 1;
}

static uint64_t bucket_mid(size_t idx)
{
	uint64_t lo, hi;

	stats_hist_bucket_range(idx, &lo, &hi);
	return lo + (hi - lo) / 2;
}

void stats_hist_add_n(struct stats_hist *h, uint64_t ns, uint64_t n)
{
	if (n == 0)
		return;
	h->count += n;
	if (ns > STATS_HIST_MAX_NS)
		h->clamped += n;
	if (ns < h->min)
		h->min = ns;
	if (ns > h->max)
		h->max = ns;
	h->sum += (double)ns * (double)n;
	h->buckets[stats_hist_index(ns)] += n;
}

void stats_hist_add(struct stats_hist *h, uint64_t ns)
{
	stats_hist_add_n(h, ns, 1);
}

void stats_hist_merge(struct stats_hist *dst, const struct stats_hist *src)
{
	size_t i;

	if (src->count == 0)
		return;
	for (i = 0; i < STATS_HIST_NBUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
	dst->count += src->count;
	dst->clamped += src->clamped;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t stats_hist_percentile(const struct stats_hist *h, double p)
{
	uint64_t rank, cum = 0, v;
	size_t i;

	if (h->count == 0)
		return 0;
	if (p >= 100.0)
		return h->max;
	if (p <= 0.0)
		return h->min;
	/* ceil, computed so that p = 50 of 10 values gives rank 5 exactly */
	rank = (uint64_t)ceil(p / 100.0 * (double)h->count - 1e-9);
	if (rank < 1)
		rank = 1;
	for (i = 0; i < STATS_HIST_NBUCKETS; i++) {
		cum += h->buckets[i];
		if (cum >= rank)
			break;
	}
	if (i == STATS_HIST_NBUCKETS)
		return h->max;
	/* exact values beat the midpoint where we know them */
	if (i == stats_hist_index(h->min))
		return h->min;
	if (i == stats_hist_index(h->max))
		return h->max;
	v = bucket_mid(i);
	if (v < h->min)
		v = h->min;
	if (v > h->max)
		v = h->max;
	return v;
}

double stats_hist_mean(const struct stats_hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}

int stats_hist_next(const struct stats_hist *h, size_t *pos, uint64_t *value,
                    uint64_t *count)
{
	size_t i;

	for (i = *pos; i < STATS_HIST_NBUCKETS; i++) {
		if (h->buckets[i]) {
			*value = bucket_mid(i);
			*count = h->buckets[i];
			*pos = i + 1;
			return 1;
		}
	}
	*pos = STATS_HIST_NBUCKETS;
	return 0;
}

/* ------------------------------------------------------------------------ */

static int win_test(const struct seq_tracker *t, uint64_t seq)
{
	unsigned int b = (unsigned int)(seq % SEQ_WINDOW);

	return (int)((t->window[b / 64] >> (b % 64)) & 1u);
}

static void win_set(struct seq_tracker *t, uint64_t seq)
{
	unsigned int b = (unsigned int)(seq % SEQ_WINDOW);

	t->window[b / 64] |= UINT64_C(1) << (b % 64);
}

static void win_clear(struct seq_tracker *t, uint64_t seq)
{
	unsigned int b = (unsigned int)(seq % SEQ_WINDOW);

	t->window[b / 64] &= ~(UINT64_C(1) << (b % 64));
}

void seq_tracker_init(struct seq_tracker *t)
{
	memset(t, 0, sizeof(*t));
}

enum seq_kind seq_tracker_add(struct seq_tracker *t, uint64_t seq)
{
	uint64_t d, s;

	if (t->received++ == 0) {
		t->first = t->highest = seq;
		win_set(t, seq);
		return SEQ_FIRST;
	}
	if (seq > t->highest) {
		d = seq - t->highest;
		/*
		 * The ring positions of highest+1 .. seq now stand for these
		 * new numbers: forget what they held (older numbers that fall
		 * out of the window).
		 */
		if (d >= SEQ_WINDOW) {
			memset(t->window, 0, sizeof(t->window));
		} else {
			for (s = t->highest + 1; s < seq; s++)
				win_clear(t, s);
		}
		win_set(t, seq);
		t->highest = seq;
		if (d > 1) {
			t->gaps++;
			return SEQ_GAP;
		}
		return SEQ_IN_ORDER;
	}
	d = t->highest - seq;
	if (d >= SEQ_WINDOW) {
		t->too_old++;
		t->reordered++;
		return SEQ_TOO_OLD;
	}
	if (win_test(t, seq)) {
		t->duplicates++;
		return SEQ_DUPLICATE;
	}
	win_set(t, seq);
	t->reordered++;
	return SEQ_REORDERED;
}

uint64_t seq_tracker_unique(const struct seq_tracker *t)
{
	return t->received - t->duplicates;
}

uint64_t seq_tracker_lost(const struct seq_tracker *t)
{
	uint64_t span, u;

	if (t->received == 0)
		return 0;
	/* saturate: a hostile seq of UINT64_MAX must not wrap to 0 */
	span = t->highest == UINT64_MAX ? UINT64_MAX : t->highest + 1;
	u = seq_tracker_unique(t);
	return span > u ? span - u : 0;
}

/* ------------------------------------------------------------------------ */

void seq_table_init(struct seq_table *tab)
{
	memset(tab, 0, sizeof(*tab));
}

void seq_table_free(struct seq_table *tab)
{
	free(tab->entries);
	free(tab->slots);
	memset(tab, 0, sizeof(*tab));
}

static size_t slot_of(uint32_t id, size_t nslots)
{
	/* Fibonacci hashing spreads consecutive ids over the table */
	return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 32) &
	       (nslots - 1);
}

static int table_rehash(struct seq_table *tab, size_t nslots)
{
	uint32_t *slots = calloc(nslots, sizeof(*slots));
	size_t i, j;

	if (slots == NULL)
		return STATS_ENOMEM;
	for (i = 0; i < tab->n; i++) {
		j = slot_of(tab->entries[i].publisher, nslots);
		while (slots[j])
			j = (j + 1) & (nslots - 1);
		slots[j] = (uint32_t)(i + 1);
	}
	free(tab->slots);
	tab->slots = slots;
	tab->nslots = nslots;
	return 0;
}

struct seq_tracker *seq_table_get(struct seq_table *tab, uint32_t publisher)
{
	struct seq_entry *e;
	size_t j, cap;

	if (tab->nslots) {
		j = slot_of(publisher, tab->nslots);
		while (tab->slots[j]) {
			e = &tab->entries[tab->slots[j] - 1];
			if (e->publisher == publisher)
				return &e->t;
			j = (j + 1) & (tab->nslots - 1);
		}
	}
	/* not found: make room, keeping the load factor at most 1/2 */
	if (tab->n >= UINT32_MAX - 1)
		return NULL;
	if ((tab->n + 1) * 2 > tab->nslots &&
	    table_rehash(tab, tab->nslots ? tab->nslots * 2 : 64) < 0)
		return NULL;
	if (tab->n == tab->cap) {
		cap = tab->cap ? tab->cap * 2 : 16;
		e = realloc(tab->entries, cap * sizeof(*e));
		if (e == NULL)
			return NULL;
		tab->entries = e;
		tab->cap = cap;
	}
	e = &tab->entries[tab->n];
	e->publisher = publisher;
	seq_tracker_init(&e->t);
	j = slot_of(publisher, tab->nslots);
	while (tab->slots[j])
		j = (j + 1) & (tab->nslots - 1);
	tab->slots[j] = (uint32_t)(++tab->n);
	return &e->t;
}

/* ------------------------------------------------------------------------ */

void rx_stats_init(struct rx_stats *rx, uint64_t not_before_ns)
{
	memset(rx, 0, sizeof(*rx));
	rx->not_before_ns = not_before_ns;
	stats_hist_init(&rx->latency);
	stats_hist_init(&rx->latency_sched);
	seq_table_init(&rx->pubs);
}

void rx_stats_free(struct rx_stats *rx)
{
	seq_table_free(&rx->pubs);
}

/* Could a load generator of this run have sent this header? See stats.h. */
static int header_plausible(const struct rx_stats *rx,
                            const struct payload_header *h, uint64_t now_ns)
{
	if (h->seq > PAYLOAD_SEQ_MAX)
		return 0;
	if (h->send_ns < rx->not_before_ns)
		return 0;
	/* written so that it cannot overflow near UINT64_MAX */
	if (h->send_ns > now_ns && h->send_ns - now_ns > RX_FUTURE_TOLERANCE_NS)
		return 0;
	if (h->lag_ns > h->send_ns) /* due before the clock started */
		return 0;
	return 1;
}

int rx_stats_add(struct rx_stats *rx, const uint8_t *payload, size_t len,
                 uint64_t now_ns, struct rx_result *out)
{
	struct payload_header h;
	struct seq_tracker *t;
	struct rx_result r;
	ssize_t rv;
	int ret = 0;

	memset(&r, 0, sizeof(r));
	rx->messages++;
	rx->bytes += len;
	if (rx->first_ns == 0)
		rx->first_ns = now_ns;
	rx->last_ns = now_ns;
	rv = payload_parse(payload, len, &h);
	if (rv >= 0 && !header_plausible(rx, &h, now_ns)) {
		r.invalid = 1;
		rx->invalid++;
	}
	if (rv < 0 || r.invalid) {
		rx->foreign_messages++;
		rx->foreign_bytes += len;
		if (rv == PAYLOAD_EVERSION)
			rx->bad_version++;
		goto done;
	}
	r.bench = 1;
	r.publisher = h.publisher;
	r.seq_no = h.seq;
	rx->bench_messages++;
	rx->bench_bytes += len;
	if (h.version == 1)
		rx->header_v1++;
	r.scheduled = (h.flags & PAYLOAD_F_SCHEDULED) != 0;
	if (!r.scheduled)
		rx->unscheduled++;
	else if (h.flags & PAYLOAD_F_LAG_CLAMPED)
		rx->lag_clamped++;
	if (h.send_ns > now_ns) {
		rx->clock_errors++;
		r.clock_error = 1;
	} else {
		r.latency_ns = now_ns - h.send_ns;
		stats_hist_add(&rx->latency, r.latency_ns);
		if (r.scheduled) {
			/* lag <= send <= now (header_plausible): no wrap */
			r.sched_latency_ns = r.latency_ns + h.lag_ns;
			stats_hist_add(&rx->latency_sched, r.sched_latency_ns);
		}
	}
	t = seq_table_get(&rx->pubs, h.publisher);
	if (t == NULL) {
		ret = STATS_ENOMEM;
		goto done;
	}
	r.seq = seq_tracker_add(t, h.seq);
	if (r.seq != SEQ_DUPLICATE)
		rx->unique++;
done:
	if (out != NULL)
		*out = r;
	return ret;
}

static void add_sat(uint64_t *sum, uint64_t v)
{
	*sum = *sum > UINT64_MAX - v ? UINT64_MAX : *sum + v;
}

void rx_stats_totals(const struct rx_stats *rx, struct rx_totals *tot)
{
	const struct seq_tracker *t;
	size_t i;

	memset(tot, 0, sizeof(*tot));
	tot->publishers = rx->pubs.n;
	for (i = 0; i < rx->pubs.n; i++) {
		t = &rx->pubs.entries[i].t;
		add_sat(&tot->unique, seq_tracker_unique(t));
		add_sat(&tot->lost, seq_tracker_lost(t));
		add_sat(&tot->duplicates, t->duplicates);
		add_sat(&tot->reordered, t->reordered);
		add_sat(&tot->too_old, t->too_old);
		add_sat(&tot->gaps, t->gaps);
	}
}
