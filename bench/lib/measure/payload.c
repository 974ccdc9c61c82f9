/*
 * payload.c: the benchmark payload header. See payload.h for the layout.
 */
#include "measure/payload.h"

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put48(uint8_t *p, uint64_t v)
{
	p[0] = (uint8_t)(v >> 40);
	p[1] = (uint8_t)(v >> 32);
	put32(p + 2, (uint32_t)v);
}

static uint64_t get48(const uint8_t *p)
{
	return (uint64_t)p[0] << 40 | (uint64_t)p[1] << 32 | get32(p + 2);
}

const char *payload_strerror(int err)
{
	switch (err) {
	case PAYLOAD_EFOREIGN:
		return "not a benchmark payload";
	case PAYLOAD_EVERSION:
		return "benchmark payload of an unknown version";
	case PAYLOAD_ENOBUF:
		return "buffer shorter than the benchmark header";
	case PAYLOAD_ERANGE:
		return "value the benchmark header version cannot hold";
	default:
		return "unknown payload error";
	}
}

ssize_t payload_encode(uint8_t *buf, size_t cap,
                       const struct payload_header *h)
{
	uint8_t version = h->version ? h->version : PAYLOAD_VERSION;
	uint8_t flags = 0;
	uint64_t lag_us = 0;

	if (cap < PAYLOAD_HEADER_LEN)
		return PAYLOAD_ENOBUF;
	if (version == 1 ? (h->flags & PAYLOAD_F_SCHEDULED) != 0
	                 : version != 2 || h->seq > PAYLOAD_SEQ_MAX)
		return PAYLOAD_ERANGE;
	buf[0] = PAYLOAD_MAGIC0;
	buf[1] = PAYLOAD_MAGIC1;
	buf[2] = PAYLOAD_MAGIC2;
	buf[3] = PAYLOAD_MAGIC3;
	buf[4] = version;
	if (version == 1) {
		buf[5] = 0;
		buf[6] = 0;
		buf[7] = 0;
		put32(buf + 8, h->publisher);
		put64(buf + 12, h->seq);
		put64(buf + 20, h->send_ns);
		return PAYLOAD_HEADER_LEN;
	}
	if (h->flags & PAYLOAD_F_SCHEDULED) {
		flags = PAYLOAD_F_SCHEDULED;
		lag_us = h->lag_ns / 1000;
		if (lag_us > PAYLOAD_LAG_MAX_US ||
		    (h->flags & PAYLOAD_F_LAG_CLAMPED)) {
			lag_us = PAYLOAD_LAG_MAX_US;
			flags |= PAYLOAD_F_LAG_CLAMPED;
		}
	}
	buf[5] = flags;
	put32(buf + 6, h->publisher);
	put48(buf + 10, h->seq);
	put64(buf + 16, h->send_ns);
	put32(buf + 24, (uint32_t)lag_us);
	return PAYLOAD_HEADER_LEN;
}

ssize_t payload_parse(const uint8_t *buf, size_t len,
                      struct payload_header *h)
{
	uint8_t flags;
	uint32_t lag_us;

	if (len < PAYLOAD_HEADER_LEN || buf[0] != PAYLOAD_MAGIC0 ||
	    buf[1] != PAYLOAD_MAGIC1 || buf[2] != PAYLOAD_MAGIC2 ||
	    buf[3] != PAYLOAD_MAGIC3)
		return PAYLOAD_EFOREIGN;
	if (buf[4] == 1) {
		if (buf[5] != 0)
			return PAYLOAD_EVERSION;
		h->version = 1;
		h->flags = 0;
		h->publisher = get32(buf + 8);
		h->seq = get64(buf + 12);
		h->send_ns = get64(buf + 20);
		h->lag_ns = 0;
		return PAYLOAD_HEADER_LEN;
	}
	if (buf[4] != 2)
		return PAYLOAD_EVERSION;
	flags = buf[5];
	lag_us = get32(buf + 24);
	/* unknown bits; a lag without a schedule; a clamp that is not one */
	if ((flags & ~(PAYLOAD_F_SCHEDULED | PAYLOAD_F_LAG_CLAMPED)) ||
	    (!(flags & PAYLOAD_F_SCHEDULED) && (lag_us || flags)) ||
	    ((flags & PAYLOAD_F_LAG_CLAMPED) && lag_us != PAYLOAD_LAG_MAX_US))
		return PAYLOAD_EVERSION;
	h->version = 2;
	h->flags = flags;
	h->publisher = get32(buf + 6);
	h->seq = get48(buf + 10);
	h->send_ns = get64(buf + 16);
	h->lag_ns = (uint64_t)lag_us * 1000;
	return PAYLOAD_HEADER_LEN;
}
