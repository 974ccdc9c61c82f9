/*
 * payload.h: the benchmark header at the start of every payload the load
 * generator publishes, so the sink can compute one-way latency (from the
 * send and from the schedule), loss, duplicates and reordering.
 *
 * Version 2 (written since the due time was added; PAYLOAD_HEADER_LEN = 28
 * bytes, integers big-endian like MQTT's):
 *
 *   0  4  magic "MQTB"
 *   4  1  version, 2
 *   5  1  flags: PAYLOAD_F_SCHEDULED (bit 0): the message had a due time,
 *         and the lag field holds it; PAYLOAD_F_LAG_CLAMPED (bit 1): the
 *         lag was longer than the field holds (it then holds its maximum,
 *         a lower bound). A receiver rejects unknown bits.
 *   6  4  publisher id
 *  10  6  sequence number (48 bits), 0 for the publisher's first message;
 *         never above PAYLOAD_SEQ_MAX
 *  16  8  send time, CLOCK_MONOTONIC in ns (all hosts of a Mininet topology
 *         share one kernel clock, so the sink's clock is the same clock)
 *  24  4  schedule lag in us, rounded down: send time minus the time the
 *         schedule wanted the message sent (its due time); 0 without
 *         PAYLOAD_F_SCHEDULED (no schedule: loadgen at --rate 0)
 *  28  .. padding up to the payload size; its content is not checked
 *
 * Why the due time travels as a lag: the header stays 28 bytes, so the
 * smallest payload stays what it was (scenarios publish 32- and 35-byte
 * messages), at the price of 1 us resolution for the wait (the send time
 * keeps its ns) and of 48-bit sequence numbers. The due time is
 * send_ns - lag_ns.
 *
 * Version 1 (the previous load generator; still read, and written on
 * request, for tests):
 *
 *   0  4  magic "MQTB"
 *   4  1  version, 1
 *   5  1  flags, 0
 *   6  2  reserved, 0 (not checked)
 *   8  4  publisher id
 *  12  8  sequence number
 *  20  8  send time, CLOCK_MONOTONIC ns
 *
 * It has no due time: such a message has a latency from its send only.
 *
 * Pure functions: no I/O, no clock.
 */
#ifndef PAYLOAD_H
#define PAYLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PAYLOAD_HEADER_LEN 28 /* both versions */
#define PAYLOAD_VERSION 2     /* what payload_encode writes by default */
#define PAYLOAD_MAGIC0 'M'
#define PAYLOAD_MAGIC1 'Q'
#define PAYLOAD_MAGIC2 'T'
#define PAYLOAD_MAGIC3 'B'

#define PAYLOAD_F_SCHEDULED 0x01
#define PAYLOAD_F_LAG_CLAMPED 0x02
/* The longest lag the field holds: 2^32 - 1 us, about 71 minutes. */
#define PAYLOAD_LAG_MAX_US UINT32_MAX

/*
 * The largest sequence number a load generator sends: 2^48 - 1, what the
 * version 2 field holds: 9 years of one publisher at a million messages/s,
 * and well inside the integers every JSON reader (most store numbers as
 * doubles) holds exactly. A receiver treats a larger one, in either
 * version, as a payload that only looks like ours (see stats.h).
 */
#define PAYLOAD_SEQ_MAX ((UINT64_C(1) << 48) - 1)

/* Error codes, all negative. */
#define PAYLOAD_EFOREIGN -401 /* not a benchmark payload (no magic, too short) */
#define PAYLOAD_EVERSION -402 /* magic present, unknown version or flags */
#define PAYLOAD_ENOBUF -403   /* encoder: buffer shorter than the header */
#define PAYLOAD_ERANGE -404   /* encoder: a field the version cannot hold */

struct payload_header {
	uint8_t version; /* parse: 1 or 2; encode: 0 writes PAYLOAD_VERSION */
	uint8_t flags;   /* PAYLOAD_F_*, as on the wire */
	uint32_t publisher;
	uint64_t seq;
	uint64_t send_ns;
	/*
	 * With PAYLOAD_F_SCHEDULED: send time minus due time, in ns. Parse
	 * gives a multiple of 1000; encode rounds down to the us and clamps
	 * at PAYLOAD_LAG_MAX_US (setting PAYLOAD_F_LAG_CLAMPED). 0 otherwise.
	 * payload_set_due() fills flags and lag from a due time.
	 */
	uint64_t lag_ns;
};

/*
 * Set h's schedule from the due time due_ns (0: no schedule) and h->send_ns:
 * PAYLOAD_F_SCHEDULED and the lag (0 when due after send: not late).
 */
static inline void payload_set_due(struct payload_header *h, uint64_t due_ns)
{
	h->flags = due_ns ? PAYLOAD_F_SCHEDULED : 0;
	h->lag_ns = due_ns && h->send_ns > due_ns ? h->send_ns - due_ns : 0;
}

/* One line, never NULL. */
const char *payload_strerror(int err);

/*
 * Write the header of version h->version (0: PAYLOAD_VERSION) into
 * buf[0..PAYLOAD_HEADER_LEN). Returns PAYLOAD_HEADER_LEN, PAYLOAD_ENOBUF
 * when cap is too small, PAYLOAD_ERANGE for what the version cannot hold
 * (version 2: a sequence number above PAYLOAD_SEQ_MAX; version 1: a
 * schedule) or an unknown version. The padding after the header is the
 * caller's (the load generator fills it once).
 */
ssize_t payload_encode(uint8_t *buf, size_t cap,
                       const struct payload_header *h);

/*
 * Parse the header of a received payload. Returns PAYLOAD_HEADER_LEN and
 * fills *h; PAYLOAD_EFOREIGN for a payload that does not start with the
 * magic or is shorter than the header; PAYLOAD_EVERSION for one that has the
 * magic but a version or flags this code does not know (in version 2 also
 * flags that contradict the lag: a lag without PAYLOAD_F_SCHEDULED, a
 * clamped lag below the maximum).
 */
ssize_t payload_parse(const uint8_t *buf, size_t len,
                      struct payload_header *h);

#endif /* PAYLOAD_H */
