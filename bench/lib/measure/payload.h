/*
 * payload.h: the benchmark header at the start of every payload the load
 * generator publishes, so the sink can compute one-way latency, loss,
 * duplicates and reordering.
 *
 * Layout (PAYLOAD_HEADER_LEN = 28 bytes, integers big-endian like MQTT's):
 *
 *   0  4  magic "MQTB"
 *   4  1  version (PAYLOAD_VERSION)
 *   5  1  flags, 0 (reserved; a receiver rejects unknown bits)
 *   6  2  reserved, 0
 *   8  4  publisher id
 *  12  8  sequence number, 0 for the publisher's first message; never above
 *         PAYLOAD_SEQ_MAX
 *  20  8  send time, CLOCK_MONOTONIC in ns (all hosts of a Mininet topology
 *         share one kernel clock, so the sink's clock is the same clock)
 *  28  .. padding up to the payload size; its content is not checked
 *
 * Pure functions: no I/O, no clock.
 */
#ifndef PAYLOAD_H
#define PAYLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PAYLOAD_HEADER_LEN 28
#define PAYLOAD_VERSION 1
#define PAYLOAD_MAGIC0 'M'
#define PAYLOAD_MAGIC1 'Q'
#define PAYLOAD_MAGIC2 'T'
#define PAYLOAD_MAGIC3 'B'

/*
 * The largest sequence number a load generator sends: 2^53 - 1, which is 28
 * years of one publisher at 10 million messages/s, and the largest integer
 * every JSON reader (most store numbers as doubles) holds exactly. A receiver
 * treats a larger one as a payload that only looks like ours (see stats.h).
 */
#define PAYLOAD_SEQ_MAX ((UINT64_C(1) << 53) - 1)

/* Error codes, all negative. */
#define PAYLOAD_EFOREIGN -401 /* not a benchmark payload (no magic, too short) */
#define PAYLOAD_EVERSION -402 /* magic present, unknown version or flags */
#define PAYLOAD_ENOBUF -403   /* encoder: buffer shorter than the header */

struct payload_header {
	uint32_t publisher;
	uint64_t seq;
	uint64_t send_ns;
};

/* One line, never NULL. */
const char *payload_strerror(int err);

/*
 * Write the header into buf[0..PAYLOAD_HEADER_LEN). Returns
 * PAYLOAD_HEADER_LEN, or PAYLOAD_ENOBUF when cap is too small. The padding
 * after it is the caller's (the load generator fills it once).
 */
ssize_t payload_encode(uint8_t *buf, size_t cap,
                       const struct payload_header *h);

/*
 * Rewrite only the per-message fields (sequence number and send time) of a
 * header written by payload_encode(); buf must hold PAYLOAD_HEADER_LEN bytes.
 */
void payload_stamp(uint8_t *buf, uint64_t seq, uint64_t send_ns);

/*
 * Parse the header of a received payload. Returns PAYLOAD_HEADER_LEN and
 * fills *h; PAYLOAD_EFOREIGN for a payload that does not start with the
 * magic or is shorter than the header; PAYLOAD_EVERSION for one that has the
 * magic but a version or flags this code does not know.
 */
ssize_t payload_parse(const uint8_t *buf, size_t len,
                      struct payload_header *h);

#endif /* PAYLOAD_H */
