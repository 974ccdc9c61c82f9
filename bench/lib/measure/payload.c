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

const char *payload_strerror(int err)
{
	switch (err) {
	case PAYLOAD_EFOREIGN:
		return "not a benchmark payload";
	case PAYLOAD_EVERSION:
		return "benchmark payload of an unknown version";
	case PAYLOAD_ENOBUF:
		return "buffer shorter than the benchmark header";
	default:
		return "unknown payload error";
	}
}

ssize_t payload_encode(uint8_t *buf, size_t cap,
                       const struct payload_header *h)
{
	if (cap < PAYLOAD_HEADER_LEN)
		return PAYLOAD_ENOBUF;
	buf[0] = PAYLOAD_MAGIC0;
	buf[1] = PAYLOAD_MAGIC1;
	buf[2] = PAYLOAD_MAGIC2;
	buf[3] = PAYLOAD_MAGIC3;
	buf[4] = PAYLOAD_VERSION;
	buf[5] = 0;
	buf[6] = 0;
	buf[7] = 0;
	put32(buf + 8, h->publisher);
	put64(buf + 12, h->seq);
	put64(buf + 20, h->send_ns);
	return PAYLOAD_HEADER_LEN;
}

void payload_stamp(uint8_t *buf, uint64_t seq, uint64_t send_ns)
{
	put64(buf + 12, seq);
	put64(buf + 20, send_ns);
}

ssize_t payload_parse(const uint8_t *buf, size_t len,
                      struct payload_header *h)
{
	if (len < PAYLOAD_HEADER_LEN || buf[0] != PAYLOAD_MAGIC0 ||
	    buf[1] != PAYLOAD_MAGIC1 || buf[2] != PAYLOAD_MAGIC2 ||
	    buf[3] != PAYLOAD_MAGIC3)
		return PAYLOAD_EFOREIGN;
	if (buf[4] != PAYLOAD_VERSION || buf[5] != 0)
		return PAYLOAD_EVERSION;
	h->publisher = get32(buf + 8);
	h->seq = get64(buf + 12);
	h->send_ns = get64(buf + 20);
	return PAYLOAD_HEADER_LEN;
}
