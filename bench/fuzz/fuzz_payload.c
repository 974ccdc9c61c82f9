/*
 * fuzz_payload.c: libFuzzer target for what the sink does with payloads
 * from the network: parse the benchmark header, and account a stream of
 * payloads (sequence tracking per publisher, latency histograms from the
 * send and from the schedule), in both header versions.
 *
 * Input: 8 bytes "now" (big-endian ns), then records of one length byte and
 * that many payload bytes (the last record takes what is left). The sink's
 * start (the earliest plausible send time) is now / 2, or 0 (no lower bound)
 * when now is odd. The whole input is also parsed as one payload, and a
 * parsed header must encode back to the same bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "measure/payload.h"
#include "measure/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct rx_stats rx; /* 31 KiB histogram: not on the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct payload_header h;
	struct rx_totals tot;
	struct rx_result r;
	uint8_t again[PAYLOAD_HEADER_LEN];
	uint64_t now = 0, before, not_before;
	size_t i, n;

	if (payload_parse(data, size, &h) == PAYLOAD_HEADER_LEN) {
		if (payload_encode(again, sizeof(again), &h) !=
		    PAYLOAD_HEADER_LEN)
			abort();
		/* version 1: bytes 6-7 are reserved and not checked on parse */
		if (memcmp(again, data, 6) != 0 ||
		    (h.version == 2 && memcmp(again + 6, data + 6, 2) != 0) ||
		    memcmp(again + 8, data + 8, PAYLOAD_HEADER_LEN - 8) != 0)
			abort();
	}
	if (size < 8)
		return 0;
	for (i = 0; i < 8; i++)
		now = now << 8 | data[i];
	data += 8;
	size -= 8;
	not_before = now & 1 ? 0 : now / 2;
	rx_stats_init(&rx, not_before);
	while (size > 0) {
		n = data[0];
		data++;
		size--;
		if (n > size)
			n = size;
		before = rx.messages;
		if (rx_stats_add(&rx, data, n, now, &r) < 0)
			abort(); /* a handful of publishers cannot exhaust memory */
		if (rx.messages != before + 1)
			abort();
		if (r.bench && r.latency_ns > now)
			abort();
		/* the wait before the send only adds to the latency */
		if (r.bench && r.scheduled && !r.clock_error &&
		    (r.sched_latency_ns < r.latency_ns ||
		     r.sched_latency_ns > now))
			abort();
		if (!r.bench && (r.scheduled || r.sched_latency_ns))
			abort();
		/* nothing implausible gets through, or gets a latency */
		if (r.bench && (r.invalid || r.seq_no > PAYLOAD_SEQ_MAX ||
		                r.latency_ns > now - not_before))
			abort();
		data += n;
		size -= n;
		now += 1000;
	}
	rx_stats_totals(&rx, &tot);
	if (rx.bench_messages + rx.foreign_messages != rx.messages)
		abort();
	if (rx.invalid + rx.bad_version > rx.foreign_messages)
		abort();
	/* no publisher can lose more than PAYLOAD_SEQ_MAX + 1 messages */
	if (tot.publishers > 0 &&
	    tot.lost / tot.publishers > PAYLOAD_SEQ_MAX + 1)
		abort();
	if (tot.unique + tot.duplicates != rx.bench_messages ||
	    tot.unique != rx.unique)
		abort();
	if (rx.latency.count + rx.clock_errors != rx.bench_messages)
		abort();
	if (rx.latency_sched.count > rx.latency.count ||
	    rx.latency_sched.count + rx.unscheduled < rx.latency.count ||
	    rx.header_v1 > rx.unscheduled ||
	    rx.lag_clamped + rx.unscheduled > rx.bench_messages)
		abort();
	(void)stats_hist_percentile(&rx.latency, 99.9);
	rx_stats_free(&rx);
	return 0;
}
