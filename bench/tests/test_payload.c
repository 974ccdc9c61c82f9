/*
 * test_payload.c: the benchmark payload header.
 */
#include <string.h>

#include "measure/payload.h"
#include "tt.h"

static const struct payload_header sample = {
	.flags = PAYLOAD_F_SCHEDULED,
	.publisher = 0x01020304u,
	.seq = UINT64_C(0x112233445566),
	.send_ns = UINT64_C(0x99aabbccddeeff00),
	.lag_ns = UINT64_C(0xa0b0c0d) * 1000 + 999, /* rounded down to the us */
};

/* Byte-exact layout: other tools (the aggregation, Wireshark) rely on it. */
static void test_encode_layout(void)
{
	static const uint8_t want[PAYLOAD_HEADER_LEN] = {
		'M', 'Q', 'T', 'B', 2, PAYLOAD_F_SCHEDULED,
		0x01, 0x02, 0x03, 0x04,
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
		0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
		0x0a, 0x0b, 0x0c, 0x0d,
	};
	uint8_t buf[64];

	memset(buf, 0xa5, sizeof(buf));
	TT_CHECK(payload_encode(buf, sizeof(buf), &sample) ==
	         PAYLOAD_HEADER_LEN);
	TT_CHECK(memcmp(buf, want, sizeof(want)) == 0);
	/* the padding is not touched */
	TT_CHECK(buf[PAYLOAD_HEADER_LEN] == 0xa5);
}

/* Version 1, what the previous load generator wrote, byte for byte. */
static void test_encode_layout_v1(void)
{
	static const uint8_t want[PAYLOAD_HEADER_LEN] = {
		'M', 'Q', 'T', 'B', 1, 0, 0, 0, 0x01, 0x02, 0x03, 0x04,
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
		0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
	};
	struct payload_header h = {
		.version = 1, .publisher = 0x01020304u,
		.seq = UINT64_C(0x1122334455667788),
		.send_ns = UINT64_C(0x99aabbccddeeff00),
	};
	uint8_t buf[PAYLOAD_HEADER_LEN];

	TT_CHECK(payload_encode(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(memcmp(buf, want, sizeof(want)) == 0);
	memset(&h, 0xff, sizeof(h));
	TT_CHECK(payload_parse(want, sizeof(want), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.version == 1 && h.flags == 0 && h.lag_ns == 0);
	TT_CHECK(h.publisher == 0x01020304u);
	TT_CHECK(h.seq == UINT64_C(0x1122334455667788));
	TT_CHECK(h.send_ns == UINT64_C(0x99aabbccddeeff00));
	/* version 1 has no room for a schedule */
	h.flags = PAYLOAD_F_SCHEDULED;
	TT_CHECK(payload_encode(buf, sizeof(buf), &h) == PAYLOAD_ERANGE);
}

static void test_roundtrip(void)
{
	uint8_t buf[100];
	struct payload_header h;

	TT_CHECK(payload_encode(buf, sizeof(buf), &sample) ==
	         PAYLOAD_HEADER_LEN);
	memset(&h, 0, sizeof(h));
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.version == 2 && h.flags == PAYLOAD_F_SCHEDULED);
	TT_CHECK(h.publisher == sample.publisher);
	TT_CHECK(h.seq == sample.seq);
	TT_CHECK(h.send_ns == sample.send_ns);
	TT_CHECK(h.lag_ns == sample.lag_ns - 999);
	/* a payload of exactly the header's size is valid */
	TT_CHECK(payload_parse(buf, PAYLOAD_HEADER_LEN, &h) ==
	         PAYLOAD_HEADER_LEN);
}

/* The due time becomes the lag; no due time, no schedule; never negative. */
static void test_due_time(void)
{
	struct payload_header h = { .send_ns = 5000000, .seq = 1 };
	uint8_t buf[PAYLOAD_HEADER_LEN];

	payload_set_due(&h, 1234567);
	TT_CHECK(h.flags == PAYLOAD_F_SCHEDULED && h.lag_ns == 3765433);
	payload_encode(buf, sizeof(buf), &h);
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.flags == PAYLOAD_F_SCHEDULED && h.lag_ns == 3765000);
	/* due after the send (a timer that fired early): on time */
	payload_set_due(&h, 6000000);
	TT_CHECK(h.flags == PAYLOAD_F_SCHEDULED && h.lag_ns == 0);
	payload_set_due(&h, 0);
	TT_CHECK(h.flags == 0 && h.lag_ns == 0);
	payload_encode(buf, sizeof(buf), &h);
	TT_CHECK(buf[5] == 0 && buf[24] == 0 && buf[27] == 0);
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.flags == 0 && h.lag_ns == 0);
}

/* A lag beyond 2^32 - 1 us is clamped and says so. */
static void test_lag_clamped(void)
{
	struct payload_header h = { .flags = PAYLOAD_F_SCHEDULED,
	                            .send_ns = UINT64_C(1) << 62 };
	uint8_t buf[PAYLOAD_HEADER_LEN];

	h.lag_ns = (uint64_t)PAYLOAD_LAG_MAX_US * 1000 + 999;
	payload_encode(buf, sizeof(buf), &h);
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.flags == PAYLOAD_F_SCHEDULED);
	TT_CHECK(h.lag_ns == (uint64_t)PAYLOAD_LAG_MAX_US * 1000);
	h.lag_ns = (uint64_t)PAYLOAD_LAG_MAX_US * 1000 + 1000;
	payload_encode(buf, sizeof(buf), &h);
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.flags == (PAYLOAD_F_SCHEDULED | PAYLOAD_F_LAG_CLAMPED));
	TT_CHECK(h.lag_ns == (uint64_t)PAYLOAD_LAG_MAX_US * 1000);
	/* the parsed header encodes to the same bytes */
	{
		uint8_t again[PAYLOAD_HEADER_LEN];

		payload_encode(again, sizeof(again), &h);
		TT_CHECK(memcmp(again, buf, sizeof(buf)) == 0);
	}
}

/* Version 2 holds 48-bit sequence numbers, no more. */
static void test_seq_range(void)
{
	struct payload_header h = { .seq = PAYLOAD_SEQ_MAX };
	uint8_t buf[PAYLOAD_HEADER_LEN];

	TT_CHECK(payload_encode(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.seq == PAYLOAD_SEQ_MAX);
	h.seq = PAYLOAD_SEQ_MAX + 1;
	TT_CHECK(payload_encode(buf, sizeof(buf), &h) == PAYLOAD_ERANGE);
	h.seq = 0;
	h.version = 3;
	TT_CHECK(payload_encode(buf, sizeof(buf), &h) == PAYLOAD_ERANGE);
	TT_CHECK(payload_strerror(PAYLOAD_ERANGE)[0] != '\0');
}

static void test_encode_short_buffer(void)
{
	uint8_t buf[PAYLOAD_HEADER_LEN];

	TT_CHECK(payload_encode(buf, PAYLOAD_HEADER_LEN - 1, &sample) ==
	         PAYLOAD_ENOBUF);
	TT_CHECK(payload_encode(buf, 0, &sample) == PAYLOAD_ENOBUF);
}

/* Every prefix shorter than the header is foreign, never a crash. */
static void test_truncated(void)
{
	uint8_t buf[PAYLOAD_HEADER_LEN];
	struct payload_header h;
	size_t len;
	int ok = 1;

	payload_encode(buf, sizeof(buf), &sample);
	for (len = 0; len < PAYLOAD_HEADER_LEN; len++)
		if (payload_parse(buf, len, &h) != PAYLOAD_EFOREIGN)
			ok = 0;
	TT_CHECK(ok);
	TT_CHECK(payload_parse(NULL, 0, &h) == PAYLOAD_EFOREIGN);
}

/* What mosquitto_pub sends, and near misses of the magic. */
static void test_foreign(void)
{
	const char *text = "hello from mosquitto_pub, a line of text......";
	uint8_t buf[PAYLOAD_HEADER_LEN + 4];
	struct payload_header h;
	size_t i;
	int ok = 1;

	TT_CHECK(payload_parse((const uint8_t *)text, strlen(text), &h) ==
	         PAYLOAD_EFOREIGN);
	memset(buf, 0, sizeof(buf));
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EFOREIGN);
	for (i = 0; i < 4; i++) {
		payload_encode(buf, sizeof(buf), &sample);
		buf[i] ^= 0x20; /* "mQTB", "MqTB", ... */
		if (payload_parse(buf, sizeof(buf), &h) != PAYLOAD_EFOREIGN)
			ok = 0;
	}
	TT_CHECK(ok);
}

/* The magic with an unknown version or flags is told apart. */
static void test_version(void)
{
	uint8_t buf[PAYLOAD_HEADER_LEN];
	struct payload_header h, v1 = { .version = 1, .seq = 3 };

	payload_encode(buf, sizeof(buf), &sample);
	buf[4] = PAYLOAD_VERSION + 1;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	buf[4] = 0;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	payload_encode(buf, sizeof(buf), &sample);
	buf[5] = 0x80;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	/* version 2: flags that contradict the lag */
	payload_encode(buf, sizeof(buf), &sample);
	buf[5] = 0; /* a lag without a schedule */
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	buf[5] = PAYLOAD_F_SCHEDULED | PAYLOAD_F_LAG_CLAMPED; /* not the max */
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	buf[5] = PAYLOAD_F_LAG_CLAMPED; /* clamped without a schedule */
	memset(buf + 24, 0xff, 4);
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	/* version 1: flags are 0; the reserved bytes are not checked */
	payload_encode(buf, sizeof(buf), &v1);
	buf[5] = 1;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	payload_encode(buf, sizeof(buf), &v1);
	buf[6] = 7;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.version == 1 && h.seq == 3);
	TT_CHECK(payload_strerror(PAYLOAD_EVERSION)[0] != '\0');
	TT_CHECK(payload_strerror(12345)[0] != '\0');
}

/*
 * The sequence bound is 2^48 - 1, what version 2 holds; every integer up
 * to it reads back unchanged from JSON through a double.
 */
static void test_seq_max(void)
{
	double d = (double)PAYLOAD_SEQ_MAX;

	TT_CHECK(PAYLOAD_SEQ_MAX == UINT64_C(281474976710655));
	TT_CHECK((uint64_t)d == PAYLOAD_SEQ_MAX);
	TT_CHECK((uint64_t)(d - 1) == PAYLOAD_SEQ_MAX - 1);
}

int main(void)
{
	TT_RUN(test_encode_layout);
	TT_RUN(test_encode_layout_v1);
	TT_RUN(test_roundtrip);
	TT_RUN(test_due_time);
	TT_RUN(test_lag_clamped);
	TT_RUN(test_seq_range);
	TT_RUN(test_encode_short_buffer);
	TT_RUN(test_truncated);
	TT_RUN(test_foreign);
	TT_RUN(test_version);
	TT_RUN(test_seq_max);
	return TT_DONE();
}
