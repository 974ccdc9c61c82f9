/*
 * test_codec.c: unit tests of the MQTT codec (bench/lib/mqtt/codec.c).
 *
 * The property placement rules are restated here from the 5.0 spec (table
 * 2-4) instead of being read from the codec, so a mistake in the codec's
 * table shows up as a disagreement.
 */
#include "mqtt/codec.h"
#include "tt.h"

#include <stdio.h>
#include <string.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Decode a literal byte list; `...` are the bytes. The list dies with the
 * enclosing statement, so only scalar fields of g_pkt may be looked at
 * afterwards, never its views.
 */
#define DEC(v, srv, ...)                                                      \
	dec_bytes((v), (srv), (const uint8_t[]){ __VA_ARGS__ },               \
	          sizeof((const uint8_t[]){ __VA_ARGS__ }))

static struct mqtt_packet g_pkt;

static ssize_t dec_bytes(uint8_t version, int srv, const uint8_t *b,
                         size_t len)
{
	memset(&g_pkt, 0xA5, sizeof(g_pkt)); /* catch fields left unset */
	return mqtt_decode(b, len, version, srv, &g_pkt);
}

static struct mqtt_bytes S(const char *s)
{
	struct mqtt_bytes b = { (const uint8_t *)s, strlen(s) };
	return b;
}

static int beq(struct mqtt_bytes a, struct mqtt_bytes b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data,
	                                               a.len) == 0);
}

static int seq(struct mqtt_bytes a, const char *s)
{
	return beq(a, S(s));
}

/* ---- test-side restatement of table 2-4 ------------------------------- */

enum { T_BYTE = 1, T_U16, T_U32, T_VAR, T_STR, T_BIN, T_PAIR };
#define CW 0 /* will properties */
#define X(t) (1u << (t))

struct tprop {
	uint8_t id, type;
	unsigned where;
};

static const struct tprop tprops[] = {
	{ 0x01, T_BYTE, X(MQTT_PUBLISH) | X(CW) },
	{ 0x02, T_U32, X(MQTT_PUBLISH) | X(CW) },
	{ 0x03, T_STR, X(MQTT_PUBLISH) | X(CW) },
	{ 0x08, T_STR, X(MQTT_PUBLISH) | X(CW) },
	{ 0x09, T_BIN, X(MQTT_PUBLISH) | X(CW) },
	{ 0x0B, T_VAR, X(MQTT_PUBLISH) | X(MQTT_SUBSCRIBE) },
	{ 0x11, T_U32, X(MQTT_CONNECT) | X(MQTT_CONNACK) | X(MQTT_DISCONNECT) },
	{ 0x12, T_STR, X(MQTT_CONNACK) },
	{ 0x13, T_U16, X(MQTT_CONNACK) },
	{ 0x15, T_STR, X(MQTT_CONNECT) | X(MQTT_CONNACK) | X(MQTT_AUTH) },
	{ 0x16, T_BIN, X(MQTT_CONNECT) | X(MQTT_CONNACK) | X(MQTT_AUTH) },
	{ 0x17, T_BYTE, X(MQTT_CONNECT) },
	{ 0x18, T_U32, X(CW) },
	{ 0x19, T_BYTE, X(MQTT_CONNECT) },
	{ 0x1A, T_STR, X(MQTT_CONNACK) },
	{ 0x1C, T_STR, X(MQTT_CONNACK) | X(MQTT_DISCONNECT) },
	{ 0x1F, T_STR, X(MQTT_CONNACK) | X(MQTT_PUBACK) | X(MQTT_PUBREC) |
	                   X(MQTT_PUBREL) | X(MQTT_PUBCOMP) | X(MQTT_SUBACK) |
	                   X(MQTT_UNSUBACK) | X(MQTT_DISCONNECT) |
	                   X(MQTT_AUTH) },
	{ 0x21, T_U16, X(MQTT_CONNECT) | X(MQTT_CONNACK) },
	{ 0x22, T_U16, X(MQTT_CONNECT) | X(MQTT_CONNACK) },
	{ 0x23, T_U16, X(MQTT_PUBLISH) },
	{ 0x24, T_BYTE, X(MQTT_CONNACK) },
	{ 0x25, T_BYTE, X(MQTT_CONNACK) },
	{ 0x26, T_PAIR, 0xFFFFu & ~X(MQTT_PINGREQ) & ~X(MQTT_PINGRESP) },
	{ 0x27, T_U32, X(MQTT_CONNECT) | X(MQTT_CONNACK) },
	{ 0x28, T_BYTE, X(MQTT_CONNACK) },
	{ 0x29, T_BYTE, X(MQTT_CONNACK) },
	{ 0x2A, T_BYTE, X(MQTT_CONNACK) },
};

/* Contexts that carry properties: the will, then packet types. */
static const int ctxs[] = {
	CW, MQTT_CONNECT, MQTT_CONNACK, MQTT_PUBLISH, MQTT_PUBACK,
	MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP, MQTT_SUBSCRIBE, MQTT_SUBACK,
	MQTT_UNSUBSCRIBE, MQTT_UNSUBACK, MQTT_DISCONNECT, MQTT_AUTH,
};

/* Which side decodes what a packet's sender encoded. */
static int receiver_is_server(int type)
{
	switch (type) {
	case MQTT_CONNECT:
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
	case MQTT_PINGREQ:
	case MQTT_DISCONNECT: /* from the client, so session expiry is ok */
		return 1;
	default:
		return 0; /* PUBLISH to a client may carry subscription ids */
	}
}

static char pstr[64][8];
static uint8_t pbin[64][3];
static const struct mqtt_user_prop users2[] = {
	{ { (const uint8_t *)"k1", 2 }, { (const uint8_t *)"v1", 2 } },
	{ { (const uint8_t *)"k1", 2 }, { (const uint8_t *)"", 0 } },
};
static const uint32_t subids2[] = { 1, 268435455 };

/* Give property `id` a distinctive valid value in *p. */
static void set_prop(struct mqtt_props *p, uint8_t id)
{
	struct mqtt_bytes s, b;

	snprintf(pstr[id], sizeof(pstr[id]), "p%02x/x", id);
	s = S(pstr[id]);
	pbin[id][0] = id;
	pbin[id][1] = 0xFF;
	pbin[id][2] = 0x00;
	b.data = pbin[id];
	b.len = 3;
	if (id == MQTT_PROP_USER) {
		p->user = users2;
		p->n_user = 2;
		return;
	}
	p->present |= MQTT_PROP_BIT(id);
	switch (id) {
	case 0x01: p->payload_format = 1; break;
	case 0x02: p->message_expiry = 0x10000u + id; break;
	case 0x03: p->content_type = s; break;
	case 0x08: p->response_topic = s; break;
	case 0x09: p->correlation_data = b; break;
	case 0x0B: p->subscription_id = 200 + id; break;
	case 0x11: p->session_expiry = 0x10000u + id; break;
	case 0x12: p->assigned_client_id = s; break;
	case 0x13: p->server_keepalive = 0x100 + id; break;
	case 0x15: p->auth_method = s; break;
	case 0x16: p->auth_data = b; break;
	case 0x17: p->request_problem_info = 1; break;
	case 0x18: p->will_delay = 0x10000u + id; break;
	case 0x19: p->request_response_info = 1; break;
	case 0x1A: p->response_info = s; break;
	case 0x1C: p->server_reference = s; break;
	case 0x1F: p->reason_string = s; break;
	case 0x21: p->receive_max = 0x100 + id; break;
	case 0x22: p->topic_alias_max = 0x100 + id; break;
	case 0x23: p->topic_alias = 0x100 + id; break;
	case 0x24: p->max_qos = 1; break;
	case 0x25: p->retain_available = 1; break;
	case 0x27: p->max_packet_size = 0x10000u + id; break;
	case 0x28: p->wildcard_sub_available = 1; break;
	case 0x29: p->sub_id_available = 1; break;
	case 0x2A: p->shared_sub_available = 1; break;
	default: break;
	}
}

/* The i-th user property of an encode-side struct (array or raw). */
static int user_at(const struct mqtt_props *p, uint32_t i,
                   struct mqtt_user_prop *u)
{
	size_t pos = 0;

	if (p->user) {
		*u = p->user[i];
		return 1;
	}
	while (mqtt_props_next_user(p, &pos, u))
		if (i-- == 0)
			return 1;
	return 0;
}

/* Encode-side props *a against decoded props *b, field by field. */
static int props_eq(const struct mqtt_props *a, const struct mqtt_props *b)
{
	const uint64_t ub = MQTT_PROP_BIT(MQTT_PROP_USER);
	uint64_t pr = a->present & ~ub;
	struct mqtt_user_prop ua, ubp;
	size_t pos = 0;
	uint32_t i, v;

	if (pr != (b->present & ~ub))
		return 0;
	if (a->n_user != b->n_user || !!(b->present & ub) != !!a->n_user)
		return 0;
#define F(id, f) if ((pr & MQTT_PROP_BIT(id)) && a->f != b->f) return 0
#define FB(id, f) if ((pr & MQTT_PROP_BIT(id)) && !beq(a->f, b->f)) return 0
	F(0x01, payload_format);
	F(0x02, message_expiry);
	FB(0x03, content_type);
	FB(0x08, response_topic);
	FB(0x09, correlation_data);
	F(0x11, session_expiry);
	FB(0x12, assigned_client_id);
	F(0x13, server_keepalive);
	FB(0x15, auth_method);
	FB(0x16, auth_data);
	F(0x17, request_problem_info);
	F(0x18, will_delay);
	F(0x19, request_response_info);
	FB(0x1A, response_info);
	FB(0x1C, server_reference);
	FB(0x1F, reason_string);
	F(0x21, receive_max);
	F(0x22, topic_alias_max);
	F(0x23, topic_alias);
	F(0x24, max_qos);
	F(0x25, retain_available);
	F(0x27, max_packet_size);
	F(0x28, wildcard_sub_available);
	F(0x29, sub_id_available);
	F(0x2A, shared_sub_available);
#undef F
#undef FB
	for (i = 0; i < a->n_user; i++) {
		if (!user_at(a, i, &ua) || !mqtt_props_next_user(b, &pos, &ubp))
			return 0;
		if (!beq(ua.key, ubp.key) || !beq(ua.value, ubp.value))
			return 0;
	}
	if (mqtt_props_next_user(b, &pos, &ubp))
		return 0;
	if (pr & MQTT_PROP_BIT(0x0B)) {
		uint32_t n = a->n_sub_ids ? a->n_sub_ids : 1;

		if (b->n_sub_ids != n)
			return 0;
		pos = 0;
		for (i = 0; i < n; i++) {
			uint32_t want = a->sub_ids ? a->sub_ids[i]
			                           : a->subscription_id;

			if (!mqtt_props_next_sub_id(b, &pos, &v) || v != want)
				return 0;
			if (i == 0 && b->subscription_id != want)
				return 0;
		}
	} else if (b->n_sub_ids) {
		return 0;
	}
	return 1;
}

/* ---- round trip machinery --------------------------------------------- */

static uint8_t g_buf[8192];
static size_t g_len;

/*
 * Encode p, check the size function, MQTT_ENOBUF one byte short, that every
 * prefix decodes to MQTT_ENEEDMORE, that the whole decodes (also with a
 * following packet in the buffer) into *q. Returns 1 if all held.
 */
static int roundtrip(uint8_t version, const struct mqtt_packet *p,
                     struct mqtt_packet *q)
{
	int srv = receiver_is_server(p->type), ok = 1;
	ssize_t n = mqtt_encoded_size(version, p), m;
	size_t i;

	TT_CHECK(n > 0);
	if (n <= 0) {
		fprintf(stderr, "  encoded_size(type %d, v%d) = %zd\n",
		        p->type, version, n);
		return 0;
	}
	TT_CHECK(mqtt_encode(g_buf, (size_t)n - 1, version, p) ==
	         MQTT_ENOBUF);
	m = mqtt_encode(g_buf, sizeof(g_buf) - 2, version, p);
	TT_CHECK(m == n);
	if (m != n)
		return 0;
	g_len = (size_t)n;
	for (i = 0; i < g_len; i++) {
		if (mqtt_decode(g_buf, i, version, srv, q) != MQTT_ENEEDMORE) {
			fprintf(stderr, "  prefix %zu of %zu (type %d, v%d)\n",
			        i, g_len, p->type, version);
			ok = 0;
			break;
		}
	}
	TT_CHECK(ok);
	g_buf[g_len] = 0xC0; /* a PINGREQ follows: must not be consumed */
	g_buf[g_len + 1] = 0x00;
	memset(q, 0x5A, sizeof(*q));
	m = mqtt_decode(g_buf, g_len + 2, version, srv, q);
	TT_CHECK(m == n);
	if (m != n) {
		fprintf(stderr, "  decode(type %d, v%d) = %zd\n", p->type,
		        version, m);
		return 0;
	}
	TT_CHECK(q->type == p->type);
	return ok && q->type == p->type;
}

/* ---- byte-exact packets ------------------------------------------------ */

static int enc_is(uint8_t version, const struct mqtt_packet *p,
                  const uint8_t *want, size_t wlen)
{
	uint8_t out[256];
	ssize_t n = mqtt_encode(out, sizeof(out), version, p);

	if (n != (ssize_t)wlen || memcmp(out, want, wlen) != 0) {
		fprintf(stderr, "  encode(type %d, v%d) = %zd bytes:", p->type,
		        version, n);
		for (ssize_t i = 0; i < n; i++)
			fprintf(stderr, " %02x", out[i]);
		fprintf(stderr, "\n");
		return 0;
	}
	return 1;
}

#define ENC_IS(v, p, ...)                                                     \
	enc_is((v), (p), (const uint8_t[]){ __VA_ARGS__ },                    \
	       sizeof((const uint8_t[]){ __VA_ARGS__ }))

static void test_exact_connect(void)
{
	struct mqtt_packet p;

	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNECT;
	p.u.connect.clean_start = 1;
	p.u.connect.keepalive = 60;
	p.u.connect.client_id = S("abc");
	/* 3.1.2: "MQTT", level 4, clean session, keepalive 60 */
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x10, 0x0F, 0x00, 0x04, 'M', 'Q', 'T',
	                'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x03, 'a', 'b',
	                'c'));
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T',
	                'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x03, 'a',
	                'b', 'c'));
	/* will, username and password: flags 0xEE = user|pass|retain|qos1
	 * |will|clean */
	p.u.connect.will_flag = 1;
	p.u.connect.will_qos = 1;
	p.u.connect.will_retain = 1;
	p.u.connect.will_topic = S("w");
	p.u.connect.will_payload = S("bye");
	p.u.connect.has_username = 1;
	p.u.connect.username = S("u");
	p.u.connect.has_password = 1;
	p.u.connect.password = S("pw");
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x10, 0x1E, 0x00, 0x04, 'M', 'Q', 'T',
	                'T', 0x04, 0xEE, 0x00, 0x3C, 0x00, 0x03, 'a', 'b',
	                'c', 0x00, 0x01, 'w', 0x00, 0x03, 'b', 'y', 'e', 0x00,
	                0x01, 'u', 0x00, 0x02, 'p', 'w'));
}

static void test_exact_other(void)
{
	struct mqtt_packet p;
	struct mqtt_topic_filter f = { S("a/#"), { 1, 0, 0, 0 } };
	struct mqtt_user_prop up = { S("k"), S("v") };

	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNACK;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x20, 0x02, 0x00, 0x00));
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x20, 0x03, 0x00, 0x00, 0x00));

	memset(&p, 0, sizeof(p));
	p.type = MQTT_PUBLISH;
	p.u.publish.qos = 1;
	p.u.publish.topic = S("a/b");
	p.u.publish.packet_id = 10;
	p.u.publish.payload = S("hi");
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x32, 0x09, 0x00, 0x03, 'a', '/', 'b',
	                0x00, 0x0A, 'h', 'i'));
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x32, 0x0A, 0x00, 0x03, 'a', '/', 'b',
	                0x00, 0x0A, 0x00, 'h', 'i'));
	/* properties in ascending identifier order, user property last */
	p.u.publish.props.present = MQTT_PROP_BIT(MQTT_PROP_PAYLOAD_FORMAT) |
	                            MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY);
	p.u.publish.props.payload_format = 1;
	p.u.publish.props.message_expiry = 60;
	p.u.publish.props.user = &up;
	p.u.publish.props.n_user = 1;
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x32, 0x18, 0x00, 0x03, 'a', '/', 'b',
	                0x00, 0x0A, 0x0E, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00,
	                0x3C, 0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', 'h',
	                'i'));

	memset(&p, 0, sizeof(p));
	p.type = MQTT_SUBSCRIBE;
	p.u.subscribe.packet_id = 1;
	p.u.subscribe.filters = &f;
	p.u.subscribe.n_filters = 1;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x82, 0x08, 0x00, 0x01, 0x00, 0x03,
	                'a', '/', '#', 0x01));
	f.opts.no_local = 1;
	f.opts.retain_as_published = 1;
	f.opts.retain_handling = 2;
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03,
	                'a', '/', '#', 0x2D));
	/* 3.1.1 ignores the v5 option bits */
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x82, 0x08, 0x00, 0x01, 0x00, 0x03,
	                'a', '/', '#', 0x01));
	p.type = MQTT_UNSUBSCRIBE;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0xA2, 0x07, 0x00, 0x01, 0x00, 0x03,
	                'a', '/', '#'));

	memset(&p, 0, sizeof(p));
	p.type = MQTT_PUBACK;
	p.u.ack.packet_id = 10;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x40, 0x02, 0x00, 0x0A));
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x40, 0x02, 0x00, 0x0A));
	p.u.ack.reason = 0x10;
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x40, 0x03, 0x00, 0x0A, 0x10));
	p.type = MQTT_PUBREL;
	p.u.ack.reason = 0;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x62, 0x02, 0x00, 0x0A));

	memset(&p, 0, sizeof(p));
	p.type = MQTT_PINGREQ;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0xC0, 0x00));
	p.type = MQTT_PINGRESP;
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0xD0, 0x00));
	p.type = MQTT_DISCONNECT;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0xE0, 0x00));
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0xE0, 0x00));
	p.u.disconnect.reason = 0x04;
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0xE0, 0x01, 0x04));
	p.type = MQTT_AUTH;
	p.u.auth.reason = 0;
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0xF0, 0x00));

	memset(&p, 0, sizeof(p));
	p.type = MQTT_SUBACK;
	p.u.suback.packet_id = 1;
	p.u.suback.reasons = S("\x01\x80");
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0x90, 0x04, 0x00, 0x01, 0x01, 0x80));
	TT_CHECK(ENC_IS(MQTT_V5, &p, 0x90, 0x05, 0x00, 0x01, 0x00, 0x01,
	                0x80));
	p.type = MQTT_UNSUBACK;
	TT_CHECK(ENC_IS(MQTT_V311, &p, 0xB0, 0x02, 0x00, 0x01));
}

/* Hand-written packets from the spec decode to the expected fields. The
 * byte arrays are static: decoded views point into them. */
static void test_exact_decode(void)
{
	static const uint8_t conn[] = { 0x10, 0x0F, 0x00, 0x04, 'M', 'Q', 'T',
	                                'T', 0x04, 0x02, 0x00, 0x3C, 0x00,
	                                0x03, 'a', 'b', 'c' };
	static const uint8_t pub[] = {
		0x3B, 0x18, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 0x0E,
		0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x3C, 0x26, 0x00, 0x01,
		'k', 0x00, 0x01, 'v', 'h', 'i',
	};
	size_t pos = 0;
	struct mqtt_user_prop u;

	TT_CHECK(dec_bytes(MQTT_V311, 1, conn, sizeof(conn)) == 17);
	TT_CHECK(g_pkt.type == MQTT_CONNECT && g_pkt.u.connect.version == 4);
	TT_CHECK(g_pkt.u.connect.clean_start == 1);
	TT_CHECK(g_pkt.u.connect.keepalive == 60);
	TT_CHECK(seq(g_pkt.u.connect.client_id, "abc"));
	TT_CHECK(!g_pkt.u.connect.will_flag && !g_pkt.u.connect.has_username);
	/* the version argument does not matter for CONNECT */
	TT_CHECK(DEC(MQTT_V5, 1, 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T',
	             0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 'a', 'b',
	             'c') == 18);
	TT_CHECK(g_pkt.u.connect.version == 5 && !g_pkt.u.connect.clean_start);

	TT_CHECK(dec_bytes(MQTT_V5, 0, pub, sizeof(pub)) == 26);
	TT_CHECK(g_pkt.type == MQTT_PUBLISH && g_pkt.flags == 0x0B);
	TT_CHECK(g_pkt.u.publish.dup && g_pkt.u.publish.qos == 1 &&
	         g_pkt.u.publish.retain);
	TT_CHECK(g_pkt.u.publish.packet_id == 10);
	TT_CHECK(seq(g_pkt.u.publish.topic, "a/b"));
	TT_CHECK(seq(g_pkt.u.publish.payload, "hi"));
	TT_CHECK(g_pkt.u.publish.props.payload_format == 1);
	TT_CHECK(g_pkt.u.publish.props.message_expiry == 60);
	TT_CHECK(g_pkt.u.publish.props.n_user == 1);
	TT_CHECK(g_pkt.u.publish.props.raw.len == 14);
	TT_CHECK(mqtt_props_next_user(&g_pkt.u.publish.props, &pos, &u) == 1);
	TT_CHECK(seq(u.key, "k") && seq(u.value, "v"));
	TT_CHECK(mqtt_props_next_user(&g_pkt.u.publish.props, &pos, &u) == 0);

	TT_CHECK(DEC(MQTT_V311, 0, 0x20, 0x02, 0x01, 0x00) == 4);
	TT_CHECK(g_pkt.u.connack.session_present == 1 &&
	         g_pkt.u.connack.reason == 0);
	TT_CHECK(DEC(MQTT_V311, 0, 0x20, 0x02, 0x00, 0x05) == 4);
	TT_CHECK(g_pkt.u.connack.reason == 5);
	TT_CHECK(DEC(MQTT_V311, 1, 0xC0, 0x00) == 2);
	TT_CHECK(g_pkt.type == MQTT_PINGREQ);
	TT_CHECK(DEC(MQTT_V311, 0, 0xD0, 0x00) == 2);
	TT_CHECK(DEC(MQTT_V311, 1, 0xE0, 0x00) == 2);
}

/* ---- round trips of every packet type ---------------------------------- */

static void fill_props(struct mqtt_props *p, int ctx)
{
	size_t i;

	memset(p, 0, sizeof(*p));
	for (i = 0; i < NELEM(tprops); i++)
		if (tprops[i].where & X(ctx))
			set_prop(p, tprops[i].id);
	if (ctx == MQTT_PUBLISH) {
		p->sub_ids = subids2;
		p->n_sub_ids = 2;
	}
}

static void test_rt_connect(void)
{
	struct mqtt_packet p, q;
	struct mqtt_connect *c = &p.u.connect, *d = &q.u.connect;
	uint8_t v;
	int full;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		for (full = 0; full < 2; full++) {
			memset(&p, 0, sizeof(p));
			p.type = MQTT_CONNECT;
			c->keepalive = 0xBEEF;
			c->client_id = S(full ? "client-\xC3\xA9" : "");
			if (full) {
				c->clean_start = 1;
				c->will_flag = 1;
				c->will_qos = 2;
				c->will_retain = 1;
				c->will_topic = S("last/will");
				c->will_payload = S("gone");
				c->has_username = 1;
				c->username = S("user");
				c->has_password = 1;
				c->password = S("\x01\x02");
				if (v == MQTT_V5) {
					fill_props(&c->props, MQTT_CONNECT);
					fill_props(&c->will_props, CW);
				}
			}
			if (!roundtrip(v, &p, &q))
				continue;
			TT_CHECK(d->version == v);
			TT_CHECK(d->clean_start == c->clean_start);
			TT_CHECK(d->keepalive == 0xBEEF);
			TT_CHECK(beq(d->client_id, c->client_id));
			TT_CHECK(d->will_flag == c->will_flag);
			TT_CHECK(d->will_qos == c->will_qos);
			TT_CHECK(d->will_retain == c->will_retain);
			TT_CHECK(beq(d->will_topic, c->will_topic));
			TT_CHECK(beq(d->will_payload, c->will_payload));
			TT_CHECK(d->has_username == c->has_username);
			TT_CHECK(d->has_password == c->has_password);
			TT_CHECK(beq(d->username, c->username));
			TT_CHECK(beq(d->password, c->password));
			TT_CHECK(props_eq(&c->props, &d->props));
			TT_CHECK(props_eq(&c->will_props, &d->will_props));
		}
	}
	/* 5.0 allows a password without a user name, 3.1.1 does not */
	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNECT;
	c->has_password = 1;
	c->password = S("secret");
	TT_CHECK(roundtrip(MQTT_V5, &p, &q) && q.u.connect.has_password &&
	         !q.u.connect.has_username);
	TT_CHECK(mqtt_encode(g_buf, sizeof(g_buf), MQTT_V311, &p) ==
	         MQTT_EFLAGS);
}

static void test_rt_connack(void)
{
	struct mqtt_packet p, q;
	uint8_t v;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		memset(&p, 0, sizeof(p));
		p.type = MQTT_CONNACK;
		p.u.connack.session_present = 1;
		if (v == MQTT_V5)
			fill_props(&p.u.connack.props, MQTT_CONNACK);
		if (roundtrip(v, &p, &q)) {
			TT_CHECK(q.u.connack.session_present == 1);
			TT_CHECK(q.u.connack.reason == 0);
			TT_CHECK(props_eq(&p.u.connack.props,
			                  &q.u.connack.props));
		}
		p.u.connack.session_present = 0;
		p.u.connack.reason = v == MQTT_V5 ? 0x87 : 5;
		if (roundtrip(v, &p, &q))
			TT_CHECK(q.u.connack.reason == p.u.connack.reason &&
			         !q.u.connack.session_present);
	}
}

static void test_rt_publish(void)
{
	static uint8_t big[70000];
	struct mqtt_packet p, q;
	struct mqtt_publish *a = &p.u.publish, *b = &q.u.publish;
	uint8_t v, qos;

	memset(big, 'x', sizeof(big));
	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		for (qos = 0; qos <= 2; qos++) {
			memset(&p, 0, sizeof(p));
			p.type = MQTT_PUBLISH;
			a->qos = qos;
			a->dup = qos > 0;
			a->retain = qos == 1;
			a->packet_id = qos ? 0xFFFF : 0;
			a->topic = S("sensors/\xE2\x82\xAC/temp");
			a->payload = S(qos == 2 ? "" : "payload bytes");
			if (v == MQTT_V5 && qos == 1)
				fill_props(&a->props, MQTT_PUBLISH);
			if (!roundtrip(v, &p, &q))
				continue;
			TT_CHECK(b->qos == qos && b->dup == a->dup &&
			         b->retain == a->retain);
			TT_CHECK(b->packet_id == a->packet_id);
			TT_CHECK(beq(b->topic, a->topic));
			TT_CHECK(beq(b->payload, a->payload));
			TT_CHECK(props_eq(&a->props, &b->props));
			TT_CHECK(q.flags == (uint8_t)(a->dup << 3 |
			                              qos << 1 | a->retain));
		}
		/* a payload that needs a 3-byte remaining length */
		memset(&p, 0, sizeof(p));
		p.type = MQTT_PUBLISH;
		a->topic = S("t");
		a->payload.data = big;
		a->payload.len = sizeof(big) - 100;
		{
			static uint8_t out[sizeof(big)];
			ssize_t n = mqtt_encode(out, sizeof(out), v, &p);

			TT_CHECK(n == (ssize_t)(1 + 3 + 3 + (v == MQTT_V5) +
			                        a->payload.len));
			TT_CHECK(mqtt_decode(out, (size_t)n, v, 0, &q) == n);
			TT_CHECK(beq(b->payload, a->payload));
		}
	}
	/* v5: empty topic with a topic alias */
	memset(&p, 0, sizeof(p));
	p.type = MQTT_PUBLISH;
	a->props.present = MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS);
	a->props.topic_alias = 7;
	if (roundtrip(MQTT_V5, &p, &q))
		TT_CHECK(b->topic.len == 0 && b->props.topic_alias == 7);
	/* re-encoding a decoded PUBLISH takes repeated ids and user
	 * properties from the raw block */
	memset(&p, 0, sizeof(p));
	p.type = MQTT_PUBLISH;
	a->topic = S("t");
	fill_props(&a->props, MQTT_PUBLISH);
	if (roundtrip(MQTT_V5, &p, &q)) {
		uint8_t first[512];
		size_t n1 = g_len;
		struct mqtt_packet r;

		memcpy(first, g_buf, n1);
		TT_CHECK(b->props.user == NULL && b->props.sub_ids == NULL);
		TT_CHECK(mqtt_encode(g_buf, sizeof(g_buf), MQTT_V5, &q) ==
		         (ssize_t)n1);
		TT_CHECK(memcmp(first, g_buf, n1) == 0);
		TT_CHECK(mqtt_decode(g_buf, n1, MQTT_V5, 0, &r) ==
		         (ssize_t)n1);
	}
}

static void test_rt_acks(void)
{
	static const uint8_t types[] = { MQTT_PUBACK, MQTT_PUBREC,
	                                 MQTT_PUBREL, MQTT_PUBCOMP };
	struct mqtt_packet p, q;
	size_t i;
	uint8_t v;
	int form;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		for (i = 0; i < NELEM(types); i++) {
			for (form = 0; form < (v == MQTT_V5 ? 3 : 1); form++) {
				memset(&p, 0, sizeof(p));
				p.type = types[i];
				p.u.ack.packet_id = (uint16_t)(0x1234 + i);
				if (form >= 1) /* reason code, no properties */
					p.u.ack.reason = types[i] <= MQTT_PUBREC
					                     ? 0x10 : 0x92;
				if (form == 2)
					fill_props(&p.u.ack.props, types[i]);
				if (!roundtrip(v, &p, &q))
					continue;
				TT_CHECK(g_len == (form == 0 ? 4u : form == 1
				                                     ? 5u
				                                     : g_len));
				TT_CHECK(q.u.ack.packet_id ==
				         p.u.ack.packet_id);
				TT_CHECK(q.u.ack.reason == p.u.ack.reason);
				TT_CHECK(props_eq(&p.u.ack.props,
				                  &q.u.ack.props));
			}
		}
	}
}

static void test_rt_subscribe(void)
{
	struct mqtt_topic_filter fs[3] = {
		{ S("a/+/c"), { 0, 0, 0, 0 } },
		{ S("#"), { 2, 0, 1, 1 } },
		{ S("$share/g/x/#"), { 1, 0, 0, 2 } },
	};
	struct mqtt_packet p, q, r;
	struct mqtt_topic_filter out;
	uint8_t v, t;
	size_t pos, k;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		for (t = MQTT_SUBSCRIBE; t <= MQTT_UNSUBSCRIBE; t += 2) {
			memset(&p, 0, sizeof(p));
			p.type = t;
			p.u.subscribe.packet_id = 42;
			p.u.subscribe.filters = fs;
			p.u.subscribe.n_filters = 3;
			if (v == MQTT_V5)
				fill_props(&p.u.subscribe.props, t);
			if (!roundtrip(v, &p, &q))
				continue;
			TT_CHECK(q.u.subscribe.packet_id == 42);
			TT_CHECK(q.u.subscribe.n_filters == 3);
			TT_CHECK(props_eq(&p.u.subscribe.props,
			                  &q.u.subscribe.props));
			pos = 0;
			for (k = 0; k < 3; k++) {
				const struct mqtt_sub_opts *o = &fs[k].opts;

				TT_CHECK(mqtt_subscribe_next(&q.u.subscribe, v,
				                             t, &pos, &out));
				TT_CHECK(beq(out.filter, fs[k].filter));
				if (t != MQTT_SUBSCRIBE)
					continue;
				TT_CHECK(out.opts.qos == o->qos);
				TT_CHECK(out.opts.retain_as_published ==
				         (v == MQTT_V5 ? o->retain_as_published
				                       : 0));
				TT_CHECK(out.opts.retain_handling ==
				         (v == MQTT_V5 ? o->retain_handling : 0));
				TT_CHECK(out.opts.no_local == 0);
			}
			TT_CHECK(!mqtt_subscribe_next(&q.u.subscribe, v, t,
			                              &pos, &out));
			/* re-encode from the raw payload, same bytes */
			{
				uint8_t first[512];
				size_t n1 = g_len;

				memcpy(first, g_buf, n1);
				TT_CHECK(mqtt_encode(g_buf, sizeof(g_buf), v,
				                     &q) == (ssize_t)n1);
				TT_CHECK(memcmp(first, g_buf, n1) == 0);
				TT_CHECK(mqtt_decode(g_buf, n1, v, 1, &r) ==
				         (ssize_t)n1);
			}
		}
	}
}

static void test_rt_suback(void)
{
	static const uint8_t sub_rc[] = { 0x00, 0x01, 0x02, 0x80 };
	static const uint8_t unsub_rc[] = { 0x11, 0x80 };
	struct mqtt_packet p, q;
	uint8_t v, t;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		for (t = MQTT_SUBACK; t <= MQTT_UNSUBACK; t += 2) {
			memset(&p, 0, sizeof(p));
			p.type = t;
			p.u.suback.packet_id = 7;
			p.u.suback.reasons.data = t == MQTT_SUBACK ? sub_rc
			                                           : unsub_rc;
			p.u.suback.reasons.len = t == MQTT_SUBACK
			                             ? sizeof(sub_rc)
			                             : sizeof(unsub_rc);
			if (v == MQTT_V5)
				fill_props(&p.u.suback.props, t);
			if (!roundtrip(v, &p, &q))
				continue;
			TT_CHECK(q.u.suback.packet_id == 7);
			if (v == MQTT_V311 && t == MQTT_UNSUBACK)
				TT_CHECK(q.u.suback.reasons.len == 0);
			else
				TT_CHECK(beq(q.u.suback.reasons,
				             p.u.suback.reasons));
			TT_CHECK(props_eq(&p.u.suback.props,
			                  &q.u.suback.props));
		}
	}
}

static void test_rt_simple(void)
{
	struct mqtt_packet p, q;
	uint8_t v;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		memset(&p, 0, sizeof(p));
		p.type = MQTT_PINGREQ;
		TT_CHECK(roundtrip(v, &p, &q) && g_len == 2);
		p.type = MQTT_PINGRESP;
		TT_CHECK(roundtrip(v, &p, &q) && g_len == 2);
		p.type = MQTT_DISCONNECT;
		TT_CHECK(roundtrip(v, &p, &q) && g_len == 2 &&
		         q.u.disconnect.reason == 0);
	}
	memset(&p, 0, sizeof(p));
	p.type = MQTT_DISCONNECT;
	p.u.disconnect.reason = 0x8E;
	fill_props(&p.u.disconnect.props, MQTT_DISCONNECT);
	if (roundtrip(MQTT_V5, &p, &q)) {
		TT_CHECK(q.u.disconnect.reason == 0x8E);
		TT_CHECK(props_eq(&p.u.disconnect.props,
		                  &q.u.disconnect.props));
	}
	memset(&p, 0, sizeof(p));
	p.type = MQTT_AUTH;
	TT_CHECK(roundtrip(MQTT_V5, &p, &q) && g_len == 2);
	p.u.auth.reason = 0x18;
	fill_props(&p.u.auth.props, MQTT_AUTH);
	if (roundtrip(MQTT_V5, &p, &q)) {
		TT_CHECK(q.u.auth.reason == 0x18);
		TT_CHECK(props_eq(&p.u.auth.props, &q.u.auth.props));
	}
	/* AUTH does not exist in 3.1.1 */
	TT_CHECK(mqtt_encode(g_buf, sizeof(g_buf), MQTT_V311, &p) ==
	         MQTT_ETYPE);
}

/* ---- property placement, both directions ------------------------------- */

/* A valid v5 packet of context ctx with no properties, to add one to. */
static struct mqtt_props *base_packet(int ctx, struct mqtt_packet *p)
{
	static const struct mqtt_topic_filter f = { { (const uint8_t *)"t",
	                                              1 }, { 0, 0, 0, 0 } };

	memset(p, 0, sizeof(*p));
	p->type = (uint8_t)(ctx == CW ? MQTT_CONNECT : ctx);
	switch (ctx) {
	case CW:
		p->u.connect.will_flag = 1;
		p->u.connect.will_topic = S("t");
		return &p->u.connect.will_props;
	case MQTT_CONNECT:
		return &p->u.connect.props;
	case MQTT_CONNACK:
		return &p->u.connack.props;
	case MQTT_PUBLISH:
		p->u.publish.topic = S("t");
		return &p->u.publish.props;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		p->u.subscribe.packet_id = 1;
		p->u.subscribe.filters = &f;
		p->u.subscribe.n_filters = 1;
		return &p->u.subscribe.props;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		p->u.suback.packet_id = 1;
		p->u.suback.reasons.data = (const uint8_t *)"";
		p->u.suback.reasons.len = 1;
		return &p->u.suback.props;
	case MQTT_DISCONNECT:
		return &p->u.disconnect.props;
	case MQTT_AUTH:
		return &p->u.auth.props;
	default:
		p->u.ack.packet_id = 1;
		return &p->u.ack.props;
	}
}

/*
 * Build the wire form of a v5 packet of context ctx around a property block
 * (the block's bytes without its length, < 128 bytes).
 */
static size_t build_v5(int ctx, const uint8_t *props, size_t plen,
                       uint8_t *out)
{
	uint8_t body[300], first;
	size_t n = 0;

#define B(...)                                                                \
	do {                                                                  \
		const uint8_t t_[] = { __VA_ARGS__ };                         \
		memcpy(body + n, t_, sizeof(t_));                             \
		n += sizeof(t_);                                              \
	} while (0)
#define P()                                                                   \
	do {                                                                  \
		body[n++] = (uint8_t)plen;                                    \
		memcpy(body + n, props, plen);                                \
		n += plen;                                                    \
	} while (0)
	switch (ctx) {
	case CW:
		first = 0x10;
		B(0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 10, 0, 0, 1, 'c');
		P();
		B(0, 1, 't', 0, 0);
		break;
	case MQTT_CONNECT:
		first = 0x10;
		B(0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 10);
		P();
		B(0, 1, 'c');
		break;
	case MQTT_CONNACK:
		first = 0x20;
		B(0, 0);
		P();
		break;
	case MQTT_PUBLISH:
		first = 0x30;
		B(0, 1, 't');
		P();
		break;
	case MQTT_SUBSCRIBE:
		first = 0x82;
		B(0, 1);
		P();
		B(0, 1, 't', 0);
		break;
	case MQTT_UNSUBSCRIBE:
		first = 0xA2;
		B(0, 1);
		P();
		B(0, 1, 't');
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		first = (uint8_t)(ctx << 4);
		B(0, 1);
		P();
		B(0);
		break;
	case MQTT_DISCONNECT:
	case MQTT_AUTH:
		first = (uint8_t)(ctx << 4);
		B(0);
		P();
		break;
	default: /* PUBACK..PUBCOMP */
		first = (uint8_t)(ctx << 4 | (ctx == MQTT_PUBREL ? 2 : 0));
		B(0, 1, 0);
		P();
		break;
	}
#undef B
#undef P
	out[0] = first;
	out[1] = (uint8_t)n;
	memcpy(out + 2, body, n);
	return n + 2;
}

/* Wire form of one property with a valid value. */
static size_t prop_bytes(const struct tprop *t, uint8_t *out)
{
	size_t n = 0;

	out[n++] = t->id;
	switch (t->type) {
	case T_BYTE:
		out[n++] = 1;
		break;
	case T_U16:
		out[n++] = 0;
		out[n++] = 5;
		break;
	case T_U32:
		memcpy(out + n, "\x00\x00\x01\x00", 4);
		n += 4;
		break;
	case T_VAR:
		out[n++] = 0x81; /* 129 */
		out[n++] = 0x01;
		break;
	case T_STR:
	case T_BIN:
		memcpy(out + n, "\x00\x02x/", 4);
		n += 4;
		break;
	default:
		memcpy(out + n, "\x00\x01k\x00\x01v", 6);
		n += 6;
		break;
	}
	return n;
}

static void test_prop_placement(void)
{
	size_t i, j;

	for (i = 0; i < NELEM(tprops); i++) {
		const struct tprop *t = &tprops[i];

		for (j = 0; j < NELEM(ctxs); j++) {
			int ctx = ctxs[j], allowed = !!(t->where & X(ctx));
			int type = ctx == CW ? MQTT_CONNECT : ctx;
			int srv = receiver_is_server(type);
			struct mqtt_packet p, q;
			struct mqtt_props *pp = base_packet(ctx, &p);
			uint8_t props[64], pkt[300];
			size_t plen = 0, n;
			ssize_t rc;

			/* these need an authentication method beside */
			if ((ctx == MQTT_AUTH && t->id != 0x15) ||
			    (ctx == MQTT_CONNECT && t->id == 0x16)) {
				memcpy(props, "\x15\x00\x01m", 4);
				plen = 4;
				pp->present |= MQTT_PROP_BIT(0x15);
				pp->auth_method = S("m");
			}
			set_prop(pp, t->id);
			rc = mqtt_encoded_size(MQTT_V5, &p);
			if (allowed ? rc <= 0 : rc != MQTT_EPROP) {
				TT_CHECK(!"encode placement");
				fprintf(stderr, "  id 0x%02x ctx %d: %zd\n",
				        t->id, ctx, rc);
			} else if (allowed && roundtrip(MQTT_V5, &p, &q)) {
				const struct mqtt_props *qp =
				    ctx == CW ? &q.u.connect.will_props
				              : (const struct mqtt_props *)
				                    ((const char *)&q.u +
				                     ((const char *)pp -
				                      (const char *)&p.u));
				TT_CHECK(props_eq(pp, qp));
			}
			plen += prop_bytes(t, props + plen);
			n = build_v5(ctx, props, plen, pkt);
			rc = dec_bytes(MQTT_V5, srv, pkt, n);
			if (allowed ? rc != (ssize_t)n : rc != MQTT_EPROP) {
				TT_CHECK(!"decode placement");
				fprintf(stderr, "  id 0x%02x ctx %d: %zd\n",
				        t->id, ctx, rc);
			}
		}
	}
	/* unknown identifiers, including a multi-byte one */
	{
		static const uint8_t unknown[] = { 0x00, 0x04, 0x0A, 0x14,
		                                   0x1B, 0x20, 0x2B, 0x7F };
		uint8_t props[4], pkt[64];
		size_t n;

		for (i = 0; i < NELEM(unknown); i++) {
			props[0] = unknown[i];
			props[1] = 0;
			n = build_v5(MQTT_PUBLISH, props, 2, pkt);
			TT_CHECK(dec_bytes(MQTT_V5, 0, pkt, n) == MQTT_EPROP);
		}
		props[0] = 0x81;
		props[1] = 0x00;
		n = build_v5(MQTT_PUBLISH, props, 2, pkt);
		TT_CHECK(dec_bytes(MQTT_V5, 0, pkt, n) == MQTT_EPROP);
	}
}

/* ---- malformed input, one rule at a time -------------------------------- */

static ssize_t dec_props5(int ctx, int srv, const uint8_t *props,
                          size_t plen)
{
	uint8_t pkt[300];
	size_t n = build_v5(ctx, props, plen, pkt);

	return dec_bytes(MQTT_V5, srv, pkt, n);
}

#define PROPS(ctx, srv, ...)                                                  \
	dec_props5((ctx), (srv), (const uint8_t[]){ __VA_ARGS__ },            \
	           sizeof((const uint8_t[]){ __VA_ARGS__ }))

static void test_bad_props(void)
{
	/* duplicates */
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2) ==
	         MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x24, 0, 0x24, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x23, 0, 1, 0x23, 0, 1) ==
	         MQTT_EPROP);
	/* user properties may repeat, also with the same key */
	TT_CHECK(PROPS(MQTT_PUBACK, 0, 0x26, 0, 1, 'a', 0, 0, 0x26, 0, 1, 'a',
	               0, 0) > 0);
	TT_CHECK(g_pkt.u.ack.props.n_user == 2);
	/* subscription ids: several in a PUBLISH to a client ... */
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x0B, 1, 0x0B, 2) > 0);
	TT_CHECK(g_pkt.u.publish.props.n_sub_ids == 2 &&
	         g_pkt.u.publish.props.subscription_id == 1);
	/* ... none from a client, one in SUBSCRIBE, never 0 */
	TT_CHECK(PROPS(MQTT_PUBLISH, 1, 0x0B, 1) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_SUBSCRIBE, 1, 0x0B, 1, 0x0B, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_SUBSCRIBE, 1, 0x0B, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x0B, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_SUBSCRIBE, 1, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F) > 0);
	TT_CHECK(g_pkt.u.subscribe.props.subscription_id == 268435455);
	/* a non-minimal variable byte integer */
	TT_CHECK(PROPS(MQTT_SUBSCRIBE, 1, 0x0B, 0x81, 0x00) == MQTT_EVARINT);
	/* zero values */
	TT_CHECK(PROPS(MQTT_CONNECT, 1, 0x21, 0, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x21, 0, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNECT, 1, 0x27, 0, 0, 0, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x27, 0, 0, 0, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x23, 0, 0) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x22, 0, 0) > 0); /* alias max 0 ok */
	/* bytes that must be 0 or 1 */
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x24, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x24, 1) > 0);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x01, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(CW, 1, 0x01, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNECT, 1, 0x17, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNECT, 1, 0x19, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x25, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x28, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x29, 2) == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNACK, 0, 0x2A, 0xFF) == MQTT_EPROP);
	/* strings inside properties */
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x03, 0, 2, 0xC0, 0x80) == MQTT_EUTF8);
	TT_CHECK(PROPS(MQTT_PUBACK, 0, 0x26, 0, 1, 'k', 0, 1, 0) ==
	         MQTT_EUTF8);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x08, 0, 3, 'a', '/', '#') ==
	         MQTT_ETOPIC);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x08, 0, 0) == MQTT_ETOPIC);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x09, 0, 2, 0, 0xFF) > 0); /* binary */
	/* direction: a server's DISCONNECT has no session expiry */
	TT_CHECK(PROPS(MQTT_DISCONNECT, 1, 0x11, 0, 0, 0, 1) > 0);
	TT_CHECK(PROPS(MQTT_DISCONNECT, 0, 0x11, 0, 0, 0, 1) == MQTT_EPROP);
	/* authentication data needs a method; AUTH needs a method */
	TT_CHECK(PROPS(MQTT_CONNECT, 1, 0x16, 0, 1, 'd') == MQTT_EPROP);
	TT_CHECK(PROPS(MQTT_CONNECT, 1, 0x15, 0, 1, 'm', 0x16, 0, 1, 'd') > 0);
	TT_CHECK(PROPS(MQTT_AUTH, 0, 0x1F, 0, 1, 'r') == MQTT_EPROP);
	TT_CHECK(DEC(MQTT_V5, 0, 0xF0, 0x01, 0x18) == MQTT_EPROP);
	TT_CHECK(DEC(MQTT_V5, 0, 0xF0, 0x02, 0x18, 0x00) == MQTT_EPROP);
	/* property length must match the properties exactly */
	TT_CHECK(DEC(MQTT_V5, 0, 0x30, 0x05, 0, 1, 't', 0x02, 0x01) ==
	         MQTT_EMALFORMED); /* block runs past the packet */
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x02, 0, 0) == MQTT_EMALFORMED);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x03, 0, 5, 'a') == MQTT_EMALFORMED);
	TT_CHECK(PROPS(MQTT_PUBACK, 0, 0x26, 0, 1, 'k', 0) ==
	         MQTT_EMALFORMED);
	TT_CHECK(PROPS(MQTT_PUBLISH, 0, 0x23) == MQTT_EMALFORMED);
	TT_CHECK(PROPS(MQTT_SUBSCRIBE, 1, 0x0B, 0x80) == MQTT_EMALFORMED);
	/* the property length itself: 5 bytes, or not minimal */
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x08, 0, 1, 0, 0x80, 0x80, 0x80, 0x80,
	             0x01) == MQTT_EVARINT);
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x05, 0, 1, 0, 0x80, 0x00) ==
	         MQTT_EVARINT);
	/* 3.1.1 has no properties: the bytes are payload / trailing */
	TT_CHECK(DEC(MQTT_V311, 0, 0x40, 0x04, 0, 1, 0, 0) == MQTT_EMALFORMED);
}

static void test_bad_header(void)
{
	uint8_t t, type;
	size_t hl;

	/* remaining length: 5 bytes are never valid, 4 with continuation is
	 * already an error before the fifth arrives */
	TT_CHECK(DEC(MQTT_V5, 0, 0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F) ==
	         MQTT_EVARINT);
	TT_CHECK(DEC(MQTT_V5, 0, 0x30, 0x80, 0x80, 0x80, 0x80) ==
	         MQTT_EVARINT);
	TT_CHECK(DEC(MQTT_V5, 0, 0x30, 0x80, 0x80, 0x80) == MQTT_ENEEDMORE);
	TT_CHECK(DEC(MQTT_V5, 0, 0xC0, 0x80, 0x00) == MQTT_EVARINT);
	TT_CHECK(DEC(MQTT_V5, 0, 0xC0, 0xFF, 0x00) == MQTT_EVARINT);
	/* reserved flags per type (2.2.2) */
	for (t = MQTT_CONNECT; t <= MQTT_AUTH; t++) {
		uint8_t pkt[2] = { (uint8_t)(t << 4), 0 }, f;

		if (t == MQTT_PUBLISH)
			continue;
		for (f = 0; f < 16; f++) {
			ssize_t rc;

			pkt[0] = (uint8_t)(t << 4 | f);
			if (f == ((t == MQTT_PUBREL || t == MQTT_SUBSCRIBE ||
			           t == MQTT_UNSUBSCRIBE) ? 2 : 0))
				continue;
			rc = dec_bytes(MQTT_V5, 1, pkt, 2);
			if (rc == MQTT_ETYPE)
				rc = dec_bytes(MQTT_V5, 0, pkt, 2);
			TT_CHECK(rc == MQTT_EFLAGS);
		}
	}
	TT_CHECK(DEC(MQTT_V311, 0, 0x60, 0x02, 0, 1) == MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V311, 0, 0x62, 0x02, 0, 1) == 4);
	TT_CHECK(DEC(MQTT_V311, 1, 0x80, 0x06, 0, 1, 0, 1, 'a', 0) ==
	         MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V311, 1, 0xA0, 0x05, 0, 1, 0, 1, 'a') ==
	         MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V311, 0, 0x42, 0x02, 0, 1) == MQTT_EFLAGS);
	/* PUBLISH QoS 3, and DUP with QoS 0 */
	TT_CHECK(DEC(MQTT_V311, 0, 0x36, 0x05, 0, 1, 't', 0, 1) == MQTT_EQOS);
	TT_CHECK(DEC(MQTT_V311, 0, 0x38, 0x03, 0, 1, 't') == MQTT_EQOS);
	TT_CHECK(DEC(MQTT_V311, 0, 0x31, 0x03, 0, 1, 't') == 5);
	/* types: 0, AUTH in 3.1.1, wrong direction */
	TT_CHECK(DEC(MQTT_V5, 0, 0x00, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 1, 0x00, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V311, 0, 0xF0, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V311, 1, 0xF0, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 0, 0x20, 0x03, 0, 0, 0) == 5);
	TT_CHECK(DEC(MQTT_V5, 1, 0x20, 0x03, 0, 0, 0) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 1, 0xD0, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 0, 0xC0, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 1, 0x90, 0x03, 0, 1, 0) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 0, 0x82, 0x06, 0, 1, 0, 0, 1, 'a') ==
	         MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 0, 0x10, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V311, 0, 0xE0, 0x00) == MQTT_ETYPE);
	TT_CHECK(DEC(MQTT_V5, 0, 0xE0, 0x00) == 2);
	/* version argument */
	TT_CHECK(DEC(3, 0, 0xD0, 0x00) == MQTT_EINVAL);
	TT_CHECK(DEC(6, 0, 0xD0, 0x00) == MQTT_EINVAL);
	/* trailing bytes after the declared content */
	TT_CHECK(DEC(MQTT_V5, 1, 0xC0, 0x01, 0x00) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V5, 0, 0xD0, 0x01, 0x00) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 1, 0xE0, 0x01, 0x00) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 0, 0x40, 0x03, 0, 1, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 0, 0x40, 0x01, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 0, 0xB0, 0x03, 0, 1, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 0, 0x20, 0x03, 0, 0, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 0, 0x20, 0x01, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V5, 0, 0x20, 0x02, 0, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V5, 0, 0x20, 0x04, 0, 0, 0, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x05, 0, 1, 0, 0, 0) ==
	         MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V5, 1, 0xE0, 0x03, 0, 0, 0) == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 1, 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T',
	             0x04, 0x02, 0x00, 0x3C, 0x00, 0x03, 'a', 'b', 'c', 0) ==
	         MQTT_EMALFORMED);
	/* string length pointing past the packet */
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x03, 0, 5, 't') == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x01, 0) == MQTT_EMALFORMED);

	/* mqtt_frame: boundaries of the variable byte integer (1.5.5) */
	{
		static const struct {
			uint8_t b[5];
			size_t n;
			uint32_t v;
		} vi[] = {
			{ { 0x00 }, 1, 0 },
			{ { 0x7F }, 1, 127 },
			{ { 0x80, 0x01 }, 2, 128 },
			{ { 0xFF, 0x7F }, 2, 16383 },
			{ { 0x80, 0x80, 0x01 }, 3, 16384 },
			{ { 0xFF, 0xFF, 0x7F }, 3, 2097151 },
			{ { 0x80, 0x80, 0x80, 0x01 }, 4, 2097152 },
			{ { 0xFF, 0xFF, 0xFF, 0x7F }, 4, 268435455 },
		};
		uint8_t hdr[6];
		size_t k;

		for (k = 0; k < NELEM(vi); k++) {
			ssize_t want = (ssize_t)(1 + vi[k].n + vi[k].v);

			hdr[0] = 0x30;
			memcpy(hdr + 1, vi[k].b, vi[k].n);
			TT_CHECK(mqtt_frame(hdr, 1 + vi[k].n, 0, &type, &hl) ==
			         (vi[k].v ? MQTT_ENEEDMORE : want));
			TT_CHECK(mqtt_frame(hdr, 1 + vi[k].n, (size_t)want,
			                    &type, &hl) ==
			         (vi[k].v ? MQTT_ENEEDMORE : want));
			TT_CHECK(mqtt_frame(hdr, 1 + vi[k].n, (size_t)want - 1,
			                    &type, &hl) == MQTT_ETOOBIG);
			if (vi[k].n > 1)
				TT_CHECK(mqtt_frame(hdr, vi[k].n, 0, &type,
				                    &hl) == MQTT_ENEEDMORE);
		}
		TT_CHECK(mqtt_frame(hdr, 0, 0, &type, &hl) == MQTT_ENEEDMORE);
		TT_CHECK(mqtt_frame((const uint8_t *)"\x30", 1, 0, &type, &hl) ==
		         MQTT_ENEEDMORE);
		TT_CHECK(mqtt_frame((const uint8_t *)"\xD0\x00\xC0", 3, 0,
		                    &type, &hl) == 2);
		TT_CHECK(type == MQTT_PINGRESP && hl == 2);
		TT_CHECK(mqtt_frame((const uint8_t *)"\x30\x80\x80\x80\x80", 5,
		                    0, &type, &hl) == MQTT_EVARINT);
		TT_CHECK(mqtt_frame((const uint8_t *)"\x30\x80\x00", 3, 0, NULL,
		                    NULL) == MQTT_EVARINT);
		TT_CHECK(mqtt_frame((const uint8_t *)"\x30\x82\x01xx", 5, 0,
		                    NULL, NULL) == MQTT_ENEEDMORE);
	}
}

static void test_bad_connect(void)
{
#define CONN(v, flags, ...)                                                   \
	DEC(MQTT_V5, 1, 0x10, (uint8_t)(10 + sizeof((const uint8_t[]){        \
	                                         __VA_ARGS__ })),             \
	    0, 4, 'M', 'Q', 'T', 'T', (v), (flags), 0, 10, __VA_ARGS__)

	TT_CHECK(CONN(4, 0x02, 0, 1, 'c') == 15);
	TT_CHECK(CONN(5, 0x02, 0, 0, 1, 'c') == 16);
	/* protocol name and level */
	TT_CHECK(DEC(MQTT_V5, 1, 0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'X', 4, 2, 0,
	             10, 0, 1, 'c') == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V5, 1, 0x10, 0x0D, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0,
	             10, 0, 1, 'c') == 15);
	TT_CHECK(DEC(MQTT_V5, 1, 0x10, 0x0F, 0, 6, 'M', 'Q', 'I', 's', 'd',
	             'p', 3, 2, 0, 10, 0, 1, 'c') == MQTT_EPROTO);
	TT_CHECK(CONN(3, 0x02, 0, 1, 'c') == MQTT_EPROTO);
	TT_CHECK(g_pkt.u.connect.version == 3); /* to answer with CONNACK */
	TT_CHECK(CONN(6, 0x02, 0, 1, 'c') == MQTT_EPROTO);
	/* reserved bit */
	TT_CHECK(CONN(4, 0x03, 0, 1, 'c') == MQTT_EFLAGS);
	/* will QoS / retain without the will flag, will QoS 3 */
	TT_CHECK(CONN(4, 0x0A, 0, 1, 'c') == MQTT_EFLAGS);
	TT_CHECK(CONN(4, 0x12, 0, 1, 'c') == MQTT_EFLAGS);
	TT_CHECK(CONN(4, 0x22, 0, 1, 'c') == MQTT_EFLAGS);
	TT_CHECK(CONN(4, 0x1E, 0, 1, 'c', 0, 1, 't', 0, 0) == MQTT_EQOS);
	TT_CHECK(CONN(4, 0x16, 0, 1, 'c', 0, 1, 't', 0, 0) == 20);
	TT_CHECK(g_pkt.u.connect.will_qos == 2);
	/* will topic is a topic name */
	TT_CHECK(CONN(4, 0x06, 0, 1, 'c', 0, 1, '#', 0, 0) == MQTT_ETOPIC);
	TT_CHECK(CONN(4, 0x06, 0, 1, 'c', 0, 0, 0, 0) == MQTT_ETOPIC);
	/* password without user name: 3.1.1 no, 5.0 yes */
	TT_CHECK(CONN(4, 0x42, 0, 1, 'c', 0, 1, 'p') == MQTT_EFLAGS);
	TT_CHECK(CONN(5, 0x42, 0, 0, 1, 'c', 0, 1, 'p') == 19);
	TT_CHECK(CONN(4, 0xC2, 0, 1, 'c', 0, 1, 'u', 0, 1, 'p') == 21);
	/* missing fields the flags announce */
	TT_CHECK(CONN(4, 0x82, 0, 1, 'c') == MQTT_EMALFORMED);
	TT_CHECK(CONN(4, 0x06, 0, 1, 'c', 0, 1, 't') == MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V5, 1, 0x10, 0x0A, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0,
	             10) == MQTT_EMALFORMED);
	/* strings: client id and user name are UTF-8, password is not */
	TT_CHECK(CONN(4, 0x02, 0, 2, 0xED, 0xA0) == MQTT_EUTF8);
	TT_CHECK(CONN(4, 0x82, 0, 1, 'c', 0, 1, 0xFF) == MQTT_EUTF8);
	TT_CHECK(CONN(4, 0xC2, 0, 1, 'c', 0, 1, 'u', 0, 1, 0xFF) == 21);
	/* empty client id is a CONNACK matter, not a decode error */
	TT_CHECK(CONN(4, 0x00, 0, 0) == 14);
#undef CONN
}

static void test_bad_packets(void)
{
	/* CONNACK */
	TT_CHECK(DEC(MQTT_V311, 0, 0x20, 0x02, 0x02, 0x00) == MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V5, 0, 0x20, 0x03, 0x80, 0x00, 0) == MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V311, 0, 0x20, 0x02, 0x01, 0x05) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V5, 0, 0x20, 0x03, 0x01, 0x87, 0) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V311, 0, 0x20, 0x02, 0x00, 0x06) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V5, 0, 0x20, 0x03, 0x00, 0x01, 0) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V5, 0, 0x20, 0x03, 0x00, 0x9F, 0) == 5);
	/* PUBLISH topics */
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x02, 0, 0) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V5, 0, 0x30, 0x03, 0, 0, 0) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V5, 0, 0x30, 0x06, 0, 0, 3, 0x23, 0, 1) == 8);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x05, 0, 3, 'a', '/', '+') ==
	         MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x03, 0, 1, '#') == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x04, 0, 2, 0xC0, 0x80) ==
	         MQTT_EUTF8);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x05, 0, 3, 0xED, 0xA0, 0x80) ==
	         MQTT_EUTF8);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x03, 0, 1, 0) == MQTT_EUTF8);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x06, 0, 4, 0xF4, 0x90, 0x80, 0x80) ==
	         MQTT_EUTF8);
	TT_CHECK(DEC(MQTT_V311, 0, 0x30, 0x05, 0, 1, '$', 0xFF, 0x00) == 7);
	/* packet identifiers */
	TT_CHECK(DEC(MQTT_V311, 0, 0x32, 0x05, 0, 1, 't', 0, 0) ==
	         MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V311, 0, 0x32, 0x04, 0, 1, 't', 0) ==
	         MQTT_EMALFORMED);
	TT_CHECK(DEC(MQTT_V311, 0, 0x40, 0x02, 0, 0) == MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V5, 0, 0x50, 0x02, 0, 0) == MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V5, 0, 0x62, 0x02, 0, 0) == MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V5, 0, 0x70, 0x02, 0, 0) == MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x06, 0, 0, 0, 1, 'a', 0) ==
	         MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V311, 0, 0x90, 0x03, 0, 0, 0) == MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V311, 1, 0xA2, 0x05, 0, 0, 0, 1, 'a') ==
	         MQTT_EPKTID);
	TT_CHECK(DEC(MQTT_V311, 0, 0xB0, 0x02, 0, 0) == MQTT_EPKTID);
	/* v5 acknowledgement short forms and reason codes */
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x02, 0, 9) == 4);
	TT_CHECK(g_pkt.u.ack.reason == 0 && g_pkt.u.ack.props.present == 0);
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x03, 0, 9, 0x10) == 5);
	TT_CHECK(g_pkt.u.ack.reason == 0x10 && g_pkt.u.ack.packet_id == 9);
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x04, 0, 9, 0x10, 0) == 6);
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x03, 0, 9, 0x05) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V5, 0, 0x62, 0x03, 0, 9, 0x10) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V5, 0, 0x72, 0x03, 0, 9, 0x92) == MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V5, 0, 0x70, 0x03, 0, 9, 0x92) == 5);
	TT_CHECK(DEC(MQTT_V5, 0, 0x40, 0x01, 0) == MQTT_EMALFORMED);
	/* DISCONNECT / AUTH short forms */
	TT_CHECK(DEC(MQTT_V5, 0, 0xE0, 0x00) == 2);
	TT_CHECK(g_pkt.u.disconnect.reason == 0);
	TT_CHECK(DEC(MQTT_V5, 0, 0xE0, 0x01, 0x8B) == 3);
	TT_CHECK(g_pkt.u.disconnect.reason == 0x8B);
	TT_CHECK(DEC(MQTT_V5, 1, 0xE0, 0x02, 0x04, 0x00) == 4);
	TT_CHECK(DEC(MQTT_V5, 1, 0xE0, 0x01, 0x05) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V5, 1, 0xF0, 0x00) == 2);
	TT_CHECK(g_pkt.u.auth.reason == 0);
	TT_CHECK(DEC(MQTT_V5, 1, 0xF0, 0x05, 0x19, 0x03, 0x15, 0, 0) == 7);
	TT_CHECK(g_pkt.u.auth.reason == 0x19);
	TT_CHECK(DEC(MQTT_V5, 1, 0xF0, 0x05, 0x01, 0x03, 0x15, 0, 0) ==
	         MQTT_EREASON);
	/* SUBACK / UNSUBACK */
	TT_CHECK(DEC(MQTT_V311, 0, 0x90, 0x02, 0, 1) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V5, 0, 0x90, 0x03, 0, 1, 0) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V311, 0, 0x90, 0x03, 0, 1, 0x03) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V311, 0, 0x90, 0x03, 0, 1, 0x87) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V5, 0, 0x90, 0x04, 0, 1, 0, 0x87) == 6);
	TT_CHECK(DEC(MQTT_V5, 0, 0x90, 0x04, 0, 1, 0, 0x11) == MQTT_EREASON);
	TT_CHECK(DEC(MQTT_V5, 0, 0xB0, 0x04, 0, 1, 0, 0x11) == 6);
	TT_CHECK(DEC(MQTT_V5, 0, 0xB0, 0x03, 0, 1, 0) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V311, 0, 0xB0, 0x02, 0, 1) == 4);
	TT_CHECK(g_pkt.u.suback.reasons.len == 0);
}

static void test_bad_subscribe(void)
{
	/* at least one filter */
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x02, 0, 1) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x03, 0, 1, 0) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V311, 1, 0xA2, 0x02, 0, 1) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V5, 1, 0xA2, 0x03, 0, 1, 0) == MQTT_EPROTO);
	/* options byte missing */
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x05, 0, 1, 0, 1, 'a') ==
	         MQTT_EMALFORMED);
	/* filter rules */
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x05, 0, 1, 0, 0, 0) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x08, 0, 1, 0, 3, 'a', '/', '#', 0) ==
	         10);
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x0A, 0, 1, 0, 5, 'a', '/', '#', '/',
	             'b', 0) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x07, 0, 1, 0, 2, 'a', '+', 0) ==
	         MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x07, 0, 1, 0, 2, 'a', '#', 0) ==
	         MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V311, 1, 0xA2, 0x06, 0, 1, 0, 2, '#', '#') ==
	         MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V311, 1, 0xA2, 0x06, 0, 1, 0, 2, 0xC0, 0xAF) ==
	         MQTT_EUTF8);
	/* options: 3.1.1 upper six bits, v5 reserved bits, retain handling
	 * 3, QoS 3 */
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x06, 0, 1, 0, 1, 'a', 0x04) ==
	         MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x06, 0, 1, 0, 1, 'a', 0x80) ==
	         MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x06, 0, 1, 0, 1, 'a', 0x03) ==
	         MQTT_EQOS);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x07, 0, 1, 0, 0, 1, 'a', 0x40) ==
	         MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x07, 0, 1, 0, 0, 1, 'a', 0x30) ==
	         MQTT_EFLAGS);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x07, 0, 1, 0, 0, 1, 'a', 0x03) ==
	         MQTT_EQOS);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x07, 0, 1, 0, 0, 1, 'a', 0x2E) == 9);
	/* shared subscriptions (v5 4.8.2) */
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x0F, 0, 1, 0, 0, 9, '$', 's', 'h',
	             'a', 'r', 'e', '/', 'g', '/', 0x04) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x10, 0, 1, 0, 0, 10, '$', 's', 'h',
	             'a', 'r', 'e', '/', 'g', '/', 'a', 0x00) == 18);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x10, 0, 1, 0, 0, 10, '$', 's', 'h',
	             'a', 'r', 'e', '/', 'g', '/', 'a', 0x04) == MQTT_EPROTO);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x10, 0, 1, 0, 0, 10, '$', 's', 'h',
	             'a', 'r', 'e', '/', '+', '/', 'a', 0x00) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x0F, 0, 1, 0, 0, 9, '$', 's', 'h',
	             'a', 'r', 'e', '/', '/', 'a', 0x00) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V5, 1, 0x82, 0x0E, 0, 1, 0, 0, 8, '$', 's', 'h',
	             'a', 'r', 'e', '/', 'g', 0x00) == MQTT_ETOPIC);
	TT_CHECK(DEC(MQTT_V5, 1, 0xA2, 0x0D, 0, 1, 0, 0, 8, '$', 's', 'h',
	             'a', 'r', 'e', '/', '#') == MQTT_ETOPIC);
	/* 3.1.1 has no shared subscriptions: a plain filter */
	TT_CHECK(DEC(MQTT_V311, 1, 0x82, 0x0F, 0, 1, 0, 10, '$', 's', 'h',
	             'a', 'r', 'e', '/', '+', '/', 'a', 0x00) == 17);
}

/* ---- encoder refusals --------------------------------------------------- */

static void test_encode_errors(void)
{
	struct mqtt_packet p;
	struct mqtt_topic_filter f = { S("a/#"), { 0, 0, 0, 0 } };
	struct mqtt_user_prop bad = { S("k"), { (const uint8_t *)"\xC0\x80",
	                                        2 } };
	uint8_t out[64];

	memset(&p, 0, sizeof(p));
	p.type = MQTT_PUBLISH;
	p.u.publish.topic = S("a/b");
	TT_CHECK(mqtt_encode(out, sizeof(out), 3, &p) == MQTT_EINVAL);
	TT_CHECK(mqtt_encode(out, 4, MQTT_V311, &p) == MQTT_ENOBUF);
	p.u.publish.qos = 3;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) == MQTT_EQOS);
	p.u.publish.qos = 0;
	p.u.publish.dup = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) == MQTT_EQOS);
	p.u.publish.dup = 0;
	p.u.publish.qos = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) == MQTT_EPKTID);
	p.u.publish.packet_id = 1;
	p.u.publish.topic = S("a/+");
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) == MQTT_ETOPIC);
	p.u.publish.topic = S("");
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_ETOPIC);
	p.u.publish.topic = S("\xED\xA0\x80");
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EUTF8);
	p.u.publish.topic = S("a");
	p.u.publish.props.present = MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) == MQTT_EPROP);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) > 0);
	p.u.publish.props.present |= MQTT_PROP_BIT(0x04); /* unknown */
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);
	p.u.publish.props.present = MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);
	p.u.publish.props.present = 0;
	p.u.publish.props.n_user = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EINVAL);
	p.u.publish.props.user = &bad;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EUTF8);
	p.u.publish.props.n_user = 0;
	p.u.publish.props.present = MQTT_PROP_BIT(MQTT_PROP_SUBSCRIPTION_ID);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);
	p.u.publish.props.subscription_id = 268435456;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);
	p.u.publish.props.n_sub_ids = 2; /* neither array nor raw */
	p.u.publish.props.subscription_id = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EINVAL);

	memset(&p, 0, sizeof(p));
	p.type = MQTT_SUBSCRIBE;
	p.u.subscribe.filters = &f;
	p.u.subscribe.n_filters = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPKTID);
	p.u.subscribe.packet_id = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) > 0);
	f.opts.qos = 3;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EQOS);
	f.opts.qos = 0;
	f.opts.retain_handling = 3;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EFLAGS);
	f.opts.retain_handling = 0;
	f.filter = S("a/#/b");
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_ETOPIC);
	f.filter = S("$share/g/a");
	f.opts.no_local = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROTO);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) > 0);
	p.u.subscribe.n_filters = 0;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROTO);
	p.u.subscribe.filters = NULL;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROTO);
	p.u.subscribe.raw_payload = S("\x00\x01\x61\x03"); /* QoS 3 */
	p.u.subscribe.raw_payload.len = 4;
	p.u.subscribe.n_filters = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EQOS);

	memset(&p, 0, sizeof(p));
	p.type = MQTT_PUBACK;
	p.u.ack.packet_id = 1;
	p.u.ack.reason = 0x10;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) ==
	         MQTT_EREASON);
	p.u.ack.reason = 0x05;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EREASON);

	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNACK;
	p.u.connack.session_present = 1;
	p.u.connack.reason = 0x80;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROTO);
	p.u.connack.reason = 0x01;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EREASON);

	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNECT;
	p.u.connect.will_qos = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EFLAGS);
	p.u.connect.will_flag = 1;
	p.u.connect.will_topic = S("w/#");
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_ETOPIC);
	p.u.connect.will_qos = 3;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EQOS);
	p.u.connect.will_qos = 0;
	p.u.connect.will_topic = S("w");
	p.u.connect.version = MQTT_V311;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EINVAL);
	p.u.connect.version = 0;
	p.u.connect.props.present = MQTT_PROP_BIT(MQTT_PROP_AUTH_DATA);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);
	p.u.connect.props.present = MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAX);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);
	p.u.connect.props.receive_max = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) > 0);
	p.u.connect.props.present = MQTT_PROP_BIT(MQTT_PROP_REQUEST_PROBLEM_INFO);
	p.u.connect.props.request_problem_info = 2;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);

	memset(&p, 0, sizeof(p));
	p.type = MQTT_AUTH;
	p.u.auth.reason = 0x18;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROP);
	p.type = MQTT_DISCONNECT;
	p.u.disconnect.reason = 0x18;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EREASON);
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) ==
	         MQTT_EREASON);
	p.type = 0;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_ETYPE);
	p.type = 16;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_ETYPE);

	memset(&p, 0, sizeof(p));
	p.type = MQTT_SUBACK;
	p.u.suback.packet_id = 1;
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V5, &p) == MQTT_EPROTO);
	p.u.suback.reasons = S("\x03");
	TT_CHECK(mqtt_encode(out, sizeof(out), MQTT_V311, &p) ==
	         MQTT_EREASON);
}

static void test_publish_simple(void)
{
	static const uint8_t payload[64] = { 1, 2, 3 };
	struct mqtt_packet p;
	uint8_t a[256], b[256];
	uint8_t v, qos;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		for (qos = 0; qos <= 2; qos++) {
			ssize_t n1, n2;

			memset(&p, 0, sizeof(p));
			p.type = MQTT_PUBLISH;
			p.u.publish.qos = qos;
			p.u.publish.retain = 1;
			p.u.publish.dup = qos == 2;
			p.u.publish.packet_id = qos ? 513 : 0;
			p.u.publish.topic = S("bench/0001");
			p.u.publish.payload.data = payload;
			p.u.publish.payload.len = sizeof(payload);
			n1 = mqtt_encode(a, sizeof(a), v, &p);
			n2 = mqtt_encode_publish_simple(
			    b, sizeof(b), v, (const uint8_t *)"bench/0001", 10,
			    qos, 1, qos == 2, p.u.publish.packet_id, payload,
			    sizeof(payload));
			TT_CHECK(n1 > 0 && n1 == n2);
			TT_CHECK(n1 > 0 && memcmp(a, b, (size_t)n1) == 0);
			TT_CHECK(mqtt_encode_publish_simple(
			             b, (size_t)n1 - 1, v,
			             (const uint8_t *)"bench/0001", 10, qos, 1,
			             qos == 2, p.u.publish.packet_id, payload,
			             sizeof(payload)) == MQTT_ENOBUF);
		}
	}
	TT_CHECK(mqtt_encode_publish_simple(b, sizeof(b), MQTT_V5,
	                                    (const uint8_t *)"t", 1, 1, 0, 0,
	                                    0, NULL, 0) == MQTT_EPKTID);
	TT_CHECK(mqtt_encode_publish_simple(b, sizeof(b), MQTT_V5,
	                                    (const uint8_t *)"t", 1, 3, 0, 0,
	                                    1, NULL, 0) == MQTT_EQOS);
	TT_CHECK(mqtt_encode_publish_simple(b, sizeof(b), MQTT_V5,
	                                    (const uint8_t *)"t", 1, 0, 0, 1,
	                                    0, NULL, 0) == MQTT_EQOS);
	TT_CHECK(mqtt_encode_publish_simple(b, sizeof(b), MQTT_V5,
	                                    (const uint8_t *)"t", 0, 0, 0, 0,
	                                    0, NULL, 0) == MQTT_ETOPIC);
	TT_CHECK(mqtt_encode_publish_simple(b, sizeof(b), 0,
	                                    (const uint8_t *)"t", 1, 0, 0, 0,
	                                    0, NULL, 0) == MQTT_EINVAL);
	TT_CHECK(mqtt_encode_publish_simple(b, sizeof(b), MQTT_V311,
	                                    (const uint8_t *)"t", 1, 0, 0, 0,
	                                    0, NULL, 0) == 5);
	TT_CHECK(memcmp(b, "\x30\x03\x00\x01t", 5) == 0);
}

/* ---- validators and matching tables ------------------------------------ */

static void test_utf8(void)
{
	static const struct {
		const char *s;
		size_t len;
		int ok;
	} t[] = {
		{ "", 0, 1 },
		{ "abc", 3, 1 },
		{ "\x00", 1, 0 },             /* U+0000 */
		{ "a\x00z", 3, 0 },
		{ "\x01\x1F\x7F", 3, 1 },     /* controls: SHOULD NOT only */
		{ "\xC2\x80", 2, 1 },         /* U+0080 */
		{ "\xDF\xBF", 2, 1 },         /* U+07FF */
		{ "\xC0\x80", 2, 0 },         /* overlong U+0000 */
		{ "\xC1\xBF", 2, 0 },         /* overlong U+007F */
		{ "\xE0\xA0\x80", 3, 1 },     /* U+0800 */
		{ "\xE0\x9F\xBF", 3, 0 },     /* overlong U+07FF */
		{ "\xED\x9F\xBF", 3, 1 },     /* U+D7FF */
		{ "\xED\xA0\x80", 3, 0 },     /* U+D800 */
		{ "\xED\xBF\xBF", 3, 0 },     /* U+DFFF */
		{ "\xEE\x80\x80", 3, 1 },     /* U+E000 */
		{ "\xEF\xBB\xBF", 3, 1 },     /* U+FEFF */
		{ "\xEF\xBF\xBF", 3, 1 },     /* U+FFFF */
		{ "\xF0\x90\x80\x80", 4, 1 }, /* U+10000 */
		{ "\xF0\x8F\xBF\xBF", 4, 0 }, /* overlong U+FFFF */
		{ "\xF4\x8F\xBF\xBF", 4, 1 }, /* U+10FFFF */
		{ "\xF4\x90\x80\x80", 4, 0 }, /* U+110000 */
		{ "\xF5\x80\x80\x80", 4, 0 },
		{ "\xF8\x88\x80\x80\x80", 5, 0 },
		{ "\xFF", 1, 0 },
		{ "\xFE", 1, 0 },
		{ "\x80", 1, 0 },             /* lone continuation */
		{ "a\xBF", 2, 0 },
		{ "\xC2", 1, 0 },             /* truncated */
		{ "\xE0\xA0", 2, 0 },
		{ "\xF0\x90\x80", 3, 0 },
		{ "\xC2\x41", 2, 0 },         /* bad continuation */
		{ "\xE1\x80\x41", 3, 0 },
		{ "\xF1\x80\x80\xC0", 4, 0 },
		{ "\xE2\x82\xAC\xF0\x9F\x98\x80", 7, 1 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		int rc = mqtt_valid_utf8((const uint8_t *)t[i].s, t[i].len);

		if ((rc == 0) != t[i].ok) {
			TT_CHECK(!"utf8 table");
			fprintf(stderr, "  entry %zu: %d\n", i, rc);
		}
		TT_CHECK(rc == 0 || rc == MQTT_EUTF8);
	}
}

static void test_topic_valid(void)
{
	static const char *good_f[] = { "#", "+", "+/+", "a/#", "/#", "a/+/b",
	                                 "+/", "/", "//", "$SYS/#", "a b",
	                                 "$share/g/a", "sport/+/player1" };
	static const char *bad_f[] = { "", "a#", "a/#/b", "#/a", "a+", "+a",
	                               "a/+b", "##", "++", "a/b#", "+#" };
	static const char *good_n[] = { "a", "/", "a/b", "$SYS/x", "//",
	                                "a b", "\xE2\x82\xAC" };
	static const char *bad_n[] = { "", "a/+", "#", "+", "a#b",
	                               "sport/tennis/#" };
	static uint8_t longt[65536];
	size_t i;

	for (i = 0; i < NELEM(good_f); i++)
		TT_CHECK(mqtt_valid_topic_filter((const uint8_t *)good_f[i],
		                                 strlen(good_f[i])) == 0);
	for (i = 0; i < NELEM(bad_f); i++)
		TT_CHECK(mqtt_valid_topic_filter((const uint8_t *)bad_f[i],
		                                 strlen(bad_f[i])) ==
		         MQTT_ETOPIC);
	for (i = 0; i < NELEM(good_n); i++)
		TT_CHECK(mqtt_valid_topic_name((const uint8_t *)good_n[i],
		                               strlen(good_n[i])) == 0);
	for (i = 0; i < NELEM(bad_n); i++)
		TT_CHECK(mqtt_valid_topic_name((const uint8_t *)bad_n[i],
		                               strlen(bad_n[i])) ==
		         MQTT_ETOPIC);
	TT_CHECK(mqtt_valid_topic_name((const uint8_t *)"a\0b", 3) ==
	         MQTT_EUTF8);
	TT_CHECK(mqtt_valid_topic_filter((const uint8_t *)"\xC0\x80", 2) ==
	         MQTT_EUTF8);
	memset(longt, 'a', sizeof(longt));
	TT_CHECK(mqtt_valid_topic_name(longt, 65535) == 0);
	TT_CHECK(mqtt_valid_topic_name(longt, 65536) == MQTT_ETOPIC);
	TT_CHECK(mqtt_valid_topic_filter(longt, 65536) == MQTT_ETOPIC);
}

static void test_topic_match(void)
{
	static const struct {
		const char *f, *t;
		int m;
	} t[] = {
		/* 4.7.1.2 */
		{ "sport/tennis/player1/#", "sport/tennis/player1", 1 },
		{ "sport/tennis/player1/#", "sport/tennis/player1/ranking", 1 },
		{ "sport/tennis/player1/#",
		  "sport/tennis/player1/score/wimbledon", 1 },
		{ "sport/#", "sport", 1 },
		{ "#", "sport/tennis", 1 },
		{ "#", "/", 1 },
		{ "/#", "/", 1 },
		{ "/#", "a", 0 },
		{ "a/#", "ab", 0 },
		{ "a/#", "a/", 1 },
		/* 4.7.1.3 */
		{ "sport/tennis/+", "sport/tennis/player1", 1 },
		{ "sport/tennis/+", "sport/tennis/player2", 1 },
		{ "sport/tennis/+", "sport/tennis/player1/ranking", 0 },
		{ "sport/+", "sport", 0 },
		{ "sport/+", "sport/", 1 },
		{ "+/+", "/finance", 1 },
		{ "/+", "/finance", 1 },
		{ "+", "/finance", 0 },
		{ "+", "a", 1 },
		{ "+/#", "a", 1 },
		{ "a/+/c", "a//c", 1 },
		{ "a/+/c", "a/b/c/d", 0 },
		{ "+/+/+", "a/b", 0 },
		/* 4.7.2: $-topics */
		{ "#", "$SYS/monitor/Clients", 0 },
		{ "+/monitor/Clients", "$SYS/monitor/Clients", 0 },
		{ "$SYS/#", "$SYS/monitor/Clients", 1 },
		{ "$SYS/monitor/+", "$SYS/monitor/Clients", 1 },
		{ "$SYS/#", "$SYS", 1 },
		{ "+", "$", 0 },
		{ "#", "$", 0 },
		{ "a/+", "a/$b", 1 },
		{ "a/#", "a/$b/c", 1 },
		/* exact */
		{ "a/b", "a/b", 1 },
		{ "a/b", "a/B", 0 },
		{ "a/b", "a/b/", 0 },
		{ "a/b/", "a/b/", 1 },
		{ "a/b", "a", 0 },
		{ "a", "a/b", 0 },
		{ "a/bc", "a/b", 0 },
		{ "a/b", "a/bc", 0 },
		{ "/", "/", 1 },
		{ "//", "/", 0 },
		{ "a", "", 0 },
		{ "", "a", 0 },
	};
	size_t i;

	for (i = 0; i < NELEM(t); i++) {
		int m = mqtt_topic_matches((const uint8_t *)t[i].f,
		                           strlen(t[i].f),
		                           (const uint8_t *)t[i].t,
		                           strlen(t[i].t));

		if (m != t[i].m) {
			TT_CHECK(!"topic match table");
			fprintf(stderr, "  '%s' vs '%s': %d\n", t[i].f, t[i].t,
			        m);
		}
	}
}

static void test_reasons_and_strerror(void)
{
	int e;

	TT_CHECK(mqtt_valid_reason(MQTT_V5, MQTT_PUBACK, 0x10) == 0);
	TT_CHECK(mqtt_valid_reason(MQTT_V5, MQTT_PUBREL, 0x10) ==
	         MQTT_EREASON);
	TT_CHECK(mqtt_valid_reason(MQTT_V5, MQTT_DISCONNECT, 0xA2) == 0);
	TT_CHECK(mqtt_valid_reason(MQTT_V5, MQTT_AUTH, 0x19) == 0);
	TT_CHECK(mqtt_valid_reason(MQTT_V311, MQTT_CONNACK, 5) == 0);
	TT_CHECK(mqtt_valid_reason(MQTT_V311, MQTT_CONNACK, 6) ==
	         MQTT_EREASON);
	TT_CHECK(mqtt_valid_reason(2, MQTT_CONNACK, 0) == MQTT_EINVAL);
	/* every code of the codec's range has its own text */
	for (e = MQTT_EREASON; e <= MQTT_ENEEDMORE; e++)
		TT_CHECK(strcmp(mqtt_strerror(e), "unknown MQTT codec error"));
	TT_CHECK(strcmp(mqtt_strerror(0), "unknown MQTT codec error"));
	TT_CHECK(strcmp(mqtt_strerror(-99), "unknown MQTT codec error") == 0);
}

/* Decoding arbitrary short inputs never crashes; a success is consistent
 * with mqtt_frame. A fast, deterministic taste of what the fuzzer does. */
static void test_decode_small_inputs(void)
{
	uint8_t b[4];
	unsigned x;
	int bad = 0;

	for (x = 0; x < 0x10000; x++) {
		size_t len = 2 + (x & 1) + ((x >> 1) & 1);
		uint8_t v, srv, type;
		size_t hl;

		b[0] = (uint8_t)(x >> 8);
		b[1] = (uint8_t)(x & 0x07);
		b[2] = (uint8_t)(x >> 3);
		b[3] = (uint8_t)(x >> 5);
		for (v = MQTT_V311; v <= MQTT_V5; v++) {
			for (srv = 0; srv < 2; srv++) {
				struct mqtt_packet p;
				ssize_t n = mqtt_decode(b, len, v, srv, &p);

				if (n > 0 && mqtt_frame(b, len, 0, &type,
				                        &hl) != n)
					bad++;
				if (n == 0 || n < MQTT_EREASON)
					bad++;
			}
		}
	}
	TT_CHECK(bad == 0);
}

int main(void)
{
	TT_RUN(test_exact_connect);
	TT_RUN(test_exact_other);
	TT_RUN(test_exact_decode);
	TT_RUN(test_rt_connect);
	TT_RUN(test_rt_connack);
	TT_RUN(test_rt_publish);
	TT_RUN(test_rt_acks);
	TT_RUN(test_rt_subscribe);
	TT_RUN(test_rt_suback);
	TT_RUN(test_rt_simple);
	TT_RUN(test_prop_placement);
	TT_RUN(test_bad_props);
	TT_RUN(test_bad_header);
	TT_RUN(test_bad_connect);
	TT_RUN(test_bad_packets);
	TT_RUN(test_bad_subscribe);
	TT_RUN(test_encode_errors);
	TT_RUN(test_publish_simple);
	TT_RUN(test_utf8);
	TT_RUN(test_topic_valid);
	TT_RUN(test_topic_match);
	TT_RUN(test_reasons_and_strerror);
	TT_RUN(test_decode_small_inputs);
	return TT_DONE();
}
