/*
 * test_payload.c: the benchmark payload header.
 */
#include <string.h>

#include "measure/payload.h"
#include "tt.h"

static const struct payload_header sample = {
	.publisher = 0x01020304u,
	.seq = UINT64_C(0x1122334455667788),
	.send_ns = UINT64_C(0x99aabbccddeeff00),
};

/* Byte-exact layout: other tools (the aggregation, Wireshark) rely on it. */
static void test_encode_layout(void)
{
	static const uint8_t want[PAYLOAD_HEADER_LEN] = {
		'M', 'Q', 'T', 'B', 1, 0, 0, 0, 0x01, 0x02, 0x03, 0x04,
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
		0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
	};
	uint8_t buf[64];

	memset(buf, 0xa5, sizeof(buf));
	TT_CHECK(payload_encode(buf, sizeof(buf), &sample) ==
	         PAYLOAD_HEADER_LEN);
	TT_CHECK(memcmp(buf, want, sizeof(want)) == 0);
	/* the padding is not touched */
	TT_CHECK(buf[PAYLOAD_HEADER_LEN] == 0xa5);
}

static void test_roundtrip(void)
{
	uint8_t buf[100];
	struct payload_header h;

	TT_CHECK(payload_encode(buf, sizeof(buf), &sample) ==
	         PAYLOAD_HEADER_LEN);
	memset(&h, 0, sizeof(h));
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.publisher == sample.publisher);
	TT_CHECK(h.seq == sample.seq);
	TT_CHECK(h.send_ns == sample.send_ns);
	/* a payload of exactly the header's size is valid */
	TT_CHECK(payload_parse(buf, PAYLOAD_HEADER_LEN, &h) ==
	         PAYLOAD_HEADER_LEN);
}

/* payload_stamp changes seq and time only. */
static void test_stamp(void)
{
	uint8_t buf[PAYLOAD_HEADER_LEN];
	struct payload_header h;

	payload_encode(buf, sizeof(buf), &sample);
	payload_stamp(buf, 42, 123456789);
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(h.publisher == sample.publisher);
	TT_CHECK(h.seq == 42 && h.send_ns == 123456789);
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
	struct payload_header h;

	payload_encode(buf, sizeof(buf), &sample);
	buf[4] = PAYLOAD_VERSION + 1;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	payload_encode(buf, sizeof(buf), &sample);
	buf[5] = 0x80;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_EVERSION);
	/* the reserved bytes are not checked: room for a later use */
	payload_encode(buf, sizeof(buf), &sample);
	buf[6] = 7;
	TT_CHECK(payload_parse(buf, sizeof(buf), &h) == PAYLOAD_HEADER_LEN);
	TT_CHECK(payload_strerror(PAYLOAD_EVERSION)[0] != '\0');
	TT_CHECK(payload_strerror(12345)[0] != '\0');
}

/*
 * The sequence bound is 2^53 - 1: the largest integer a double (what most
 * JSON readers use) holds exactly, so every sequence number a sink reports
 * reads back unchanged.
 */
static void test_seq_max(void)
{
	double d = (double)PAYLOAD_SEQ_MAX;

	TT_CHECK(PAYLOAD_SEQ_MAX == UINT64_C(9007199254740991));
	TT_CHECK((uint64_t)d == PAYLOAD_SEQ_MAX);
	/* one more is where doubles start to skip integers */
	TT_CHECK((double)(PAYLOAD_SEQ_MAX + 2) ==
	         (double)(PAYLOAD_SEQ_MAX + 1));
}

int main(void)
{
	TT_RUN(test_encode_layout);
	TT_RUN(test_roundtrip);
	TT_RUN(test_stamp);
	TT_RUN(test_encode_short_buffer);
	TT_RUN(test_truncated);
	TT_RUN(test_foreign);
	TT_RUN(test_version);
	TT_RUN(test_seq_max);
	return TT_DONE();
}
