/*
 * fuzz_codec.c: libFuzzer target for the MQTT codec.
 *
 * The input is decoded as a client and as a server in 3.1.1 and 5.0. When a
 * decode succeeds:
 *  - mqtt_frame() agrees on the length and every shorter prefix is
 *    MQTT_ENEEDMORE;
 *  - the iterators walk exactly as many user properties, subscription ids
 *    and topic filters as the decoder counted, all of them valid;
 *  - re-encoding succeeds, is no longer than the input, fails with
 *    MQTT_ENOBUF one byte short, decodes back to the same fields, and
 *    encoding that again gives the same bytes (a canonical form);
 *  - a PUBLISH without properties encodes the same through
 *    mqtt_encode_publish_simple().
 * The input is also split into a filter and a topic name to check
 * mqtt_topic_matches() against a plain level-by-level reference.
 * Any broken invariant aborts with a message.
 */
#include "mqtt/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "fuzz_codec: %s:%d: %s\n", __FILE__,  \
			        __LINE__, #cond);                             \
			abort();                                              \
		}                                                             \
	} while (0)

static int beq(struct mqtt_bytes a, struct mqtt_bytes b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data,
	                                               a.len) == 0);
}

/* Iterators agree with the counts, and every value is one the decoder
 * should have let through. */
static void walk_props(const struct mqtt_props *p)
{
	struct mqtt_user_prop u;
	size_t pos = 0;
	uint32_t n = 0, id;

	while (mqtt_props_next_user(p, &pos, &u)) {
		CHECK(mqtt_valid_utf8(u.key.data, u.key.len) == 0);
		CHECK(mqtt_valid_utf8(u.value.data, u.value.len) == 0);
		n++;
	}
	CHECK(n == p->n_user);
	CHECK(!!(p->present & MQTT_PROP_BIT(MQTT_PROP_USER)) == !!n);
	pos = 0;
	n = 0;
	while (mqtt_props_next_sub_id(p, &pos, &id)) {
		CHECK(id >= 1 && id <= MQTT_MAX_REMAINING);
		if (n == 0)
			CHECK(id == p->subscription_id);
		n++;
	}
	CHECK(n == p->n_sub_ids);
	CHECK(!!(p->present & MQTT_PROP_BIT(MQTT_PROP_SUBSCRIPTION_ID)) ==
	      !!n);
}

/* Two decoded property blocks hold the same properties (order may differ
 * between the input and the canonical re-encoding). */
static int props_same(const struct mqtt_props *a, const struct mqtt_props *b)
{
	struct mqtt_user_prop ua, ub;
	size_t pa = 0, pb = 0;
	uint32_t ia, ib;
	uint64_t pr = a->present;

	if (a->present != b->present || a->n_user != b->n_user ||
	    a->n_sub_ids != b->n_sub_ids)
		return 0;
#define F(id, f) if ((pr & MQTT_PROP_BIT(id)) && a->f != b->f) return 0
#define FB(id, f) if ((pr & MQTT_PROP_BIT(id)) && !beq(a->f, b->f)) return 0
	F(0x01, payload_format);
	F(0x02, message_expiry);
	FB(0x03, content_type);
	FB(0x08, response_topic);
	FB(0x09, correlation_data);
	F(0x0B, subscription_id);
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
	/* user properties keep their order (3.3.2.3.7) */
	while (mqtt_props_next_user(a, &pa, &ua)) {
		if (!mqtt_props_next_user(b, &pb, &ub))
			return 0;
		if (!beq(ua.key, ub.key) || !beq(ua.value, ub.value))
			return 0;
	}
	pa = pb = 0;
	while (mqtt_props_next_sub_id(a, &pa, &ia)) {
		if (!mqtt_props_next_sub_id(b, &pb, &ib) || ia != ib)
			return 0;
	}
	return 1;
}

/* Filters of a decoded SUBSCRIBE/UNSUBSCRIBE: count and validity. */
static void walk_filters(const struct mqtt_subscribe *s, uint8_t version,
                         uint8_t type)
{
	struct mqtt_topic_filter f;
	size_t pos = 0, n = 0;

	while (mqtt_subscribe_next(s, version, type, &pos, &f)) {
		CHECK(mqtt_valid_topic_filter(f.filter.data, f.filter.len) ==
		      0);
		CHECK(f.opts.qos <= 2 && f.opts.retain_handling <= 2);
		if (version == MQTT_V311 || type != MQTT_SUBSCRIBE)
			CHECK(!f.opts.no_local && !f.opts.retain_as_published &&
			      !f.opts.retain_handling);
		n++;
	}
	CHECK(n == s->n_filters && n >= 1);
}

static int filters_same(const struct mqtt_subscribe *a,
                        const struct mqtt_subscribe *b, uint8_t version,
                        uint8_t type)
{
	struct mqtt_topic_filter fa, fb;
	size_t pa = 0, pb = 0;

	if (a->n_filters != b->n_filters)
		return 0;
	while (mqtt_subscribe_next(a, version, type, &pa, &fa)) {
		if (!mqtt_subscribe_next(b, version, type, &pb, &fb))
			return 0;
		if (!beq(fa.filter, fb.filter) ||
		    memcmp(&fa.opts, &fb.opts, sizeof(fa.opts)) != 0)
			return 0;
	}
	return !mqtt_subscribe_next(b, version, type, &pb, &fb);
}

static void walk(const struct mqtt_packet *p, uint8_t version)
{
	switch (p->type) {
	case MQTT_CONNECT:
		walk_props(&p->u.connect.props);
		walk_props(&p->u.connect.will_props);
		CHECK(mqtt_valid_utf8(p->u.connect.client_id.data,
		                      p->u.connect.client_id.len) == 0);
		if (p->u.connect.will_flag)
			CHECK(mqtt_valid_topic_name(
			          p->u.connect.will_topic.data,
			          p->u.connect.will_topic.len) == 0);
		break;
	case MQTT_CONNACK:
		walk_props(&p->u.connack.props);
		break;
	case MQTT_PUBLISH:
		walk_props(&p->u.publish.props);
		CHECK(p->u.publish.qos <= 2);
		CHECK(!!p->u.publish.packet_id == !!p->u.publish.qos);
		if (p->u.publish.topic.len)
			CHECK(mqtt_valid_topic_name(p->u.publish.topic.data,
			                            p->u.publish.topic.len) ==
			      0);
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		walk_props(&p->u.ack.props);
		CHECK(p->u.ack.packet_id != 0);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		walk_props(&p->u.subscribe.props);
		walk_filters(&p->u.subscribe, version, p->type);
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		walk_props(&p->u.suback.props);
		break;
	case MQTT_DISCONNECT:
		walk_props(&p->u.disconnect.props);
		break;
	case MQTT_AUTH:
		walk_props(&p->u.auth.props);
		break;
	default:
		break;
	}
}

static int pkt_same(const struct mqtt_packet *a, const struct mqtt_packet *b,
                    uint8_t version)
{
	if (a->type != b->type || a->flags != b->flags)
		return 0;
	switch (a->type) {
	case MQTT_CONNECT: {
		const struct mqtt_connect *x = &a->u.connect, *y = &b->u.connect;

		return x->version == y->version &&
		       x->clean_start == y->clean_start &&
		       x->keepalive == y->keepalive &&
		       beq(x->client_id, y->client_id) &&
		       x->will_flag == y->will_flag &&
		       x->will_qos == y->will_qos &&
		       x->will_retain == y->will_retain &&
		       beq(x->will_topic, y->will_topic) &&
		       beq(x->will_payload, y->will_payload) &&
		       x->has_username == y->has_username &&
		       x->has_password == y->has_password &&
		       beq(x->username, y->username) &&
		       beq(x->password, y->password) &&
		       props_same(&x->props, &y->props) &&
		       props_same(&x->will_props, &y->will_props);
	}
	case MQTT_CONNACK:
		return a->u.connack.session_present ==
		           b->u.connack.session_present &&
		       a->u.connack.reason == b->u.connack.reason &&
		       props_same(&a->u.connack.props, &b->u.connack.props);
	case MQTT_PUBLISH: {
		const struct mqtt_publish *x = &a->u.publish, *y = &b->u.publish;

		return x->dup == y->dup && x->qos == y->qos &&
		       x->retain == y->retain && beq(x->topic, y->topic) &&
		       x->packet_id == y->packet_id &&
		       beq(x->payload, y->payload) &&
		       props_same(&x->props, &y->props);
	}
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		return a->u.ack.packet_id == b->u.ack.packet_id &&
		       a->u.ack.reason == b->u.ack.reason &&
		       props_same(&a->u.ack.props, &b->u.ack.props);
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		return a->u.subscribe.packet_id == b->u.subscribe.packet_id &&
		       props_same(&a->u.subscribe.props,
		                  &b->u.subscribe.props) &&
		       filters_same(&a->u.subscribe, &b->u.subscribe, version,
		                    a->type);
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		return a->u.suback.packet_id == b->u.suback.packet_id &&
		       beq(a->u.suback.reasons, b->u.suback.reasons) &&
		       props_same(&a->u.suback.props, &b->u.suback.props);
	case MQTT_DISCONNECT:
		return a->u.disconnect.reason == b->u.disconnect.reason &&
		       props_same(&a->u.disconnect.props,
		                  &b->u.disconnect.props);
	case MQTT_AUTH:
		return a->u.auth.reason == b->u.auth.reason &&
		       props_same(&a->u.auth.props, &b->u.auth.props);
	default:
		return 1; /* PINGREQ, PINGRESP */
	}
}

static void roundtrip(const uint8_t *data, size_t n, uint8_t version,
                      int srv, const struct mqtt_packet *p)
{
	struct mqtt_packet q, r;
	uint8_t *b1, *b2;
	ssize_t sz;
	size_t i;

	for (i = 0; i < n; i++)
		CHECK(mqtt_decode(data, i, version, srv, &q) ==
		      MQTT_ENEEDMORE);
	walk(p, version);
	sz = mqtt_encoded_size(version, p);
	if (sz < 0)
		fprintf(stderr, "re-encode type %u v%u: %s\n", p->type,
		        version, mqtt_strerror((int)sz));
	CHECK(sz >= 2 && (size_t)sz <= n);
	b1 = malloc((size_t)sz);
	b2 = malloc((size_t)sz);
	CHECK(b1 && b2);
	CHECK(mqtt_encode(b1, (size_t)sz - 1, version, p) == MQTT_ENOBUF);
	CHECK(mqtt_encode(b1, (size_t)sz, version, p) == sz);
	CHECK(mqtt_decode(b1, (size_t)sz, version, srv, &q) == sz);
	CHECK(pkt_same(p, &q, version));
	CHECK(mqtt_encode(b2, (size_t)sz, version, &q) == sz);
	CHECK(memcmp(b1, b2, (size_t)sz) == 0);
	CHECK(mqtt_decode(b2, (size_t)sz, version, srv, &r) == sz);
	if (p->type == MQTT_PUBLISH && p->u.publish.props.raw.len == 0) {
		const struct mqtt_publish *x = &p->u.publish;

		CHECK(mqtt_encode_publish_simple(
		          b2, (size_t)sz, version, x->topic.data, x->topic.len,
		          x->qos, x->retain, x->dup, x->packet_id,
		          x->payload.data, x->payload.len) == sz);
		CHECK(memcmp(b1, b2, (size_t)sz) == 0);
	}
	free(b1);
	free(b2);
}

/* Split s into levels; returns the count. */
static size_t levels(const uint8_t *s, size_t len, struct mqtt_bytes *out)
{
	size_t n = 0, start = 0, i;

	for (i = 0; i <= len; i++) {
		if (i == len || s[i] == '/') {
			out[n].data = s + start;
			out[n].len = i - start;
			n++;
			start = i + 1;
		}
	}
	return n;
}

/* Level-by-level reference for mqtt_topic_matches() on valid input. */
static int ref_match(const uint8_t *f, size_t fl, const uint8_t *t,
                     size_t tl)
{
	struct mqtt_bytes *fv = malloc((fl + 1) * sizeof(*fv));
	struct mqtt_bytes *tv = malloc((tl + 1) * sizeof(*tv));
	size_t nf, nt, i;
	int m = -1;

	CHECK(fv && tv);
	nf = levels(f, fl, fv);
	nt = levels(t, tl, tv);
	if (t[0] == '$' && fv[0].len == 1 &&
	    (fv[0].data[0] == '+' || fv[0].data[0] == '#'))
		m = 0;
	for (i = 0; m < 0 && i < nf; i++) {
		if (fv[i].len == 1 && fv[i].data[0] == '#')
			m = 1;
		else if (i >= nt)
			m = 0;
		else if (!(fv[i].len == 1 && fv[i].data[0] == '+') &&
		         !beq(fv[i], tv[i]))
			m = 0;
	}
	if (m < 0)
		m = nf == nt;
	free(fv);
	free(tv);
	return m;
}

static void topics(const uint8_t *data, size_t size)
{
	const uint8_t *f, *t;
	size_t fl, tl;

	if (size < 2)
		return;
	fl = data[0] < size - 1 ? data[0] : size - 1;
	f = data + 1;
	t = f + fl;
	tl = size - 1 - fl;
	if (mqtt_valid_topic_name(t, tl) == 0) {
		CHECK(mqtt_topic_matches(t, tl, t, tl) == 1);
		CHECK(mqtt_valid_topic_filter(t, tl) == 0);
	}
	if (mqtt_valid_topic_filter(f, fl) == 0 &&
	    mqtt_valid_topic_name(t, tl) == 0)
		CHECK(mqtt_topic_matches(f, fl, t, tl) ==
		      ref_match(f, fl, t, tl));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t v, type;
	int srv;

	for (v = MQTT_V311; v <= MQTT_V5; v++) {
		for (srv = 0; srv < 2; srv++) {
			struct mqtt_packet p;
			size_t hl;
			ssize_t n = mqtt_decode(data, size, v, srv, &p);
			ssize_t f = mqtt_frame(data, size, 0, &type, &hl);

			CHECK(n != 0 && n >= MQTT_EREASON);
			if (f < 0)
				CHECK(n == f);
			if (n < 0)
				continue;
			CHECK(f == n && type == p.type);
			roundtrip(data, (size_t)n,
			          p.type == MQTT_CONNECT ? p.u.connect.version
			                                 : v,
			          srv, &p);
		}
	}
	topics(data, size);
	return 0;
}
