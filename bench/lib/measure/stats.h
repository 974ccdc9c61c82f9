/*
 * stats.h: measurement primitives of the benchmark binaries.
 *
 * - struct stats_hist: a log-linear histogram of durations in nanoseconds
 *   (the HdrHistogram idea, our own layout). Fixed size, no allocation: its
 *   memory does not grow with the number of values. Relative precision is
 *   better than 1% (bucket width <= 1/128 of its lower bound; the reported
 *   value is the bucket's midpoint, so the error is at most ~0.4%) from 256 ns
 *   up to STATS_HIST_MAX_NS (100 s); below 256 ns it is exact to the ns.
 *   Values above the maximum are clamped into the last bucket and counted in
 *   `clamped`; exact min, max and sum are kept apart from the buckets.
 *
 * - struct seq_tracker: loss, duplicates and reordering of one publisher's
 *   sequence numbers, with a ring bitmap of the last SEQ_WINDOW numbers.
 *
 * - struct seq_table: publisher id -> seq_tracker, an open-addressing hash
 *   table that grows with the number of publishers (not messages).
 *
 * - struct rx_stats: the sink's accounting of one received payload.
 *
 * Everything here is pure: no I/O, no clock.
 */
#ifndef STATS_H
#define STATS_H

#include <stddef.h>
#include <stdint.h>

#include "measure/payload.h"

#define STATS_ENOMEM -411 /* allocation failed */

/* Histogram geometry: 128 linear sub-buckets per power of two. */
#define STATS_HIST_SUB_BITS 7
#define STATS_HIST_MAX_NS UINT64_C(100000000000) /* 100 s */
/*
 * Index of the largest value: floor(log2(1e11)) = 36, minus
 * STATS_HIST_SUB_BITS, gives group 29; 1e11 >> 29 = 186; index = group * 128
 * + sub = 3898. Checked by the unit test.
 */
#define STATS_HIST_NBUCKETS (29 * 128 + 186 + 1)

struct stats_hist {
	uint64_t count;   /* values recorded */
	uint64_t clamped; /* values above STATS_HIST_MAX_NS */
	uint64_t min, max; /* exact, ns; min is UINT64_MAX while empty */
	double sum;        /* exact sum in ns, for the mean */
	uint64_t buckets[STATS_HIST_NBUCKETS];
};

void stats_hist_init(struct stats_hist *h);
/* Record one duration in ns. */
void stats_hist_add(struct stats_hist *h, uint64_t ns);
/* Record `n` copies of a duration (used when merging and in tests). */
void stats_hist_add_n(struct stats_hist *h, uint64_t ns, uint64_t n);
/* Add every value of src into dst. */
void stats_hist_merge(struct stats_hist *dst, const struct stats_hist *src);
/*
 * The value at percentile p (0 < p <= 100): the smallest recorded value v
 * such that at least p% of the values are <= v, to the histogram's
 * precision. Returns the exact max for p = 100, the exact min when the rank
 * falls in the min's bucket, 0 when the histogram is empty.
 */
uint64_t stats_hist_percentile(const struct stats_hist *h, double p);
double stats_hist_mean(const struct stats_hist *h);

/* Bucket index of a value, and the [lo, hi] range a bucket covers. */
size_t stats_hist_index(uint64_t ns);
void stats_hist_bucket_range(size_t idx, uint64_t *lo, uint64_t *hi);

/*
 * Iterate non-empty buckets: *pos starts at 0; returns 1 and fills the
 * bucket's midpoint value and count while there is one more, 0 at the end.
 */
int stats_hist_next(const struct stats_hist *h, size_t *pos, uint64_t *value,
                    uint64_t *count);

/* ------------------------------------------------------------------------ */

/* How many recent sequence numbers a tracker remembers (bits). */
#define SEQ_WINDOW 1024

/* What seq_tracker_add() found a sequence number to be. */
enum seq_kind {
	SEQ_FIRST = 0,      /* first message of this publisher */
	SEQ_IN_ORDER = 1,   /* exactly highest + 1 */
	SEQ_GAP = 2,        /* above highest + 1: some are missing (for now) */
	SEQ_REORDERED = 3,  /* below highest, not seen before: late arrival */
	SEQ_DUPLICATE = 4,  /* seen before */
	SEQ_TOO_OLD = 5,    /* below the window: cannot tell dup from late */
};

/*
 * Counters of one publisher. Sequence numbers are assumed to start at 0
 * (the load generator's do), so messages missing before the first one
 * received count as lost too; `first` records where the sink came in.
 *
 *   received    every message, duplicates included
 *   unique      distinct sequence numbers (received - duplicates)
 *   lost        highest + 1 - unique (never negative); messages after the
 *               highest received cannot be known here
 *   duplicates  sequence numbers received more than once
 *   reordered   arrivals below the highest, filling a gap
 *   too_old     arrivals more than SEQ_WINDOW below the highest: counted as
 *               late (reordered) arrivals, since a duplicate that far back
 *               is far less likely; recorded apart so a reader can judge
 *   gaps        times the sequence jumped forward by more than one
 */
struct seq_tracker {
	uint64_t first, highest;
	uint64_t received, duplicates, reordered, too_old, gaps;
	uint64_t window[SEQ_WINDOW / 64]; /* bit (seq % SEQ_WINDOW) */
};

void seq_tracker_init(struct seq_tracker *t);
enum seq_kind seq_tracker_add(struct seq_tracker *t, uint64_t seq);
uint64_t seq_tracker_unique(const struct seq_tracker *t);
uint64_t seq_tracker_lost(const struct seq_tracker *t);

struct seq_entry {
	uint32_t publisher;
	struct seq_tracker t;
};

struct seq_table {
	struct seq_entry *entries; /* dense, in order of first appearance */
	size_t n, cap;
	uint32_t *slots; /* open addressing: index+1 into entries, 0 = free */
	size_t nslots;   /* power of two */
};

void seq_table_init(struct seq_table *tab);
void seq_table_free(struct seq_table *tab);
/*
 * The tracker of `publisher`, created on first sight. Returns NULL when
 * memory runs out. The pointer stays valid until the next call.
 */
struct seq_tracker *seq_table_get(struct seq_table *tab, uint32_t publisher);

/* ------------------------------------------------------------------------ */

/*
 * struct rx_stats: what the sink accounts for each received payload, kept
 * here (not in the sink's main) so that the fuzz target drives the same code
 * with hostile payloads.
 *
 * Every message counts in messages/bytes. A payload with a plausible
 * benchmark header counts in bench_*, feeds the publisher's sequence tracker,
 * and its one-way latency from the send (now - send time) goes into
 * `latency`; when the header carries a due time (version 2 with
 * PAYLOAD_F_SCHEDULED), its latency from the schedule (now - due time =
 * latency + lag: the wait for a full window or buffer included) goes into
 * `latency_sched`, else it counts in `unscheduled`. Anything
 * else is "foreign" (e.g. from mosquitto_pub): counted, never an error, never
 * in the latency, never in the sequence figures. Foreign includes:
 *
 *   bad_version  our magic, a version or flags this code does not know
 *   invalid      our magic and version, values no load generator of this run
 *                can have sent: a sequence number above PAYLOAD_SEQ_MAX, a
 *                send time before not_before_ns (the sink's start), or one
 *                more than RX_FUTURE_TOLERANCE_NS in the future, a lag
 *                longer than the send time (a due time before boot). One such
 *                stray (say, a mosquitto_pub payload that happens to start
 *                with the magic) must not invent a publisher with 2^64 lost
 *                messages or a latency of hours.
 *
 * A header whose send time lies in the future by less than the tolerance is
 * a benchmark message with a clock problem (all hosts of a topology share one
 * kernel clock, so this should never happen): counted in `clock_errors`,
 * tracked in the sequence, left out of both latencies.
 *
 * A lag the header could not hold (PAYLOAD_F_LAG_CLAMPED, over 71 minutes)
 * enters `latency_sched` at its lower bound and counts in `lag_clamped`.
 */
#define RX_FUTURE_TOLERANCE_NS UINT64_C(1000000000) /* 1 s */

struct rx_stats {
	uint64_t not_before_ns; /* earliest plausible send time, 0: none */
	uint64_t messages, bytes;
	uint64_t bench_messages, bench_bytes;
	uint64_t foreign_messages, foreign_bytes;
	uint64_t bad_version; /* foreign ones that carried our magic */
	uint64_t invalid;     /* foreign ones with an impossible header */
	uint64_t clock_errors;
	uint64_t unique;      /* distinct (publisher, sequence) tracked */
	uint64_t header_v1;   /* bench messages with a version 1 header */
	uint64_t unscheduled; /* bench messages without a due time */
	uint64_t lag_clamped; /* ... with a lag the header could not hold */
	uint64_t first_ns, last_ns; /* receive times; 0 before the first */
	struct stats_hist latency;       /* from the send */
	struct stats_hist latency_sched; /* from the schedule (due time) */
	struct seq_table pubs;
};

/* What rx_stats_add() found, for the caller's raw per-message record. */
struct rx_result {
	int bench;            /* 1 with a plausible benchmark header, else 0 */
	int invalid;          /* foreign: the magic, but impossible values */
	enum seq_kind seq;    /* bench only */
	uint32_t publisher;   /* bench only */
	uint64_t seq_no;      /* bench only */
	uint64_t latency_ns;  /* bench only; 0 on a clock error */
	int clock_error;      /* bench only: send time in the future */
	int scheduled;        /* bench only: the header has a due time */
	uint64_t sched_latency_ns; /* scheduled, no clock error: now - due */
};

/*
 * not_before_ns: send times before it are invalid; the sink passes the
 * CLOCK_MONOTONIC time it started at (0 turns the check off, e.g. for a
 * persistent session that may hold messages from before the start).
 */
void rx_stats_init(struct rx_stats *rx, uint64_t not_before_ns);
void rx_stats_free(struct rx_stats *rx);
/*
 * Account one payload received at now_ns (CLOCK_MONOTONIC). Returns 0, or
 * STATS_ENOMEM when a new publisher's tracker cannot be allocated (the
 * message is then counted but not tracked). `out` may be NULL.
 */
int rx_stats_add(struct rx_stats *rx, const uint8_t *payload, size_t len,
                 uint64_t now_ns, struct rx_result *out);

/* Sums over all publishers; they saturate at UINT64_MAX instead of wrapping. */
struct rx_totals {
	uint64_t publishers, unique, lost, duplicates, reordered, too_old, gaps;
};
void rx_stats_totals(const struct rx_stats *rx, struct rx_totals *t);

#endif /* STATS_H */
