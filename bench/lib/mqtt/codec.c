/*
 * codec.c: MQTT 3.1.1 and 5.0 control packets, encode and decode.
 *
 * Decoding reads through a bounds-checked cursor (struct rd); running out of
 * bytes inside a packet whose remaining length has fully arrived is
 * MQTT_EMALFORMED, never MQTT_ENEEDMORE. Encoding runs the same body writer
 * twice: once "dry" to validate and measure, once for real into a buffer
 * already known to be big enough (struct wr).
 *
 * Spec references are to OASIS MQTT 3.1.1 and MQTT 5.0 section numbers.
 */
#include "mqtt/codec.h"

#include <stddef.h>
#include <string.h>

const char *mqtt_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case MQTT_ENEEDMORE:
		return "incomplete packet, more bytes needed";
	case MQTT_EMALFORMED:
		return "malformed packet (lengths do not add up)";
	case MQTT_EVARINT:
		return "variable byte integer too long or not in shortest form";
	case MQTT_EUTF8:
		return "string is not well-formed MQTT UTF-8";
	case MQTT_ETOPIC:
		return "invalid topic name or topic filter";
	case MQTT_EPROP:
		return "invalid, misplaced or duplicated property";
	case MQTT_EPKTID:
		return "packet identifier 0 where a non-zero one is required";
	case MQTT_EFLAGS:
		return "invalid flags or reserved bits";
	case MQTT_ETOOBIG:
		return "packet too big";
	case MQTT_ENOBUF:
		return "output buffer too small";
	case MQTT_EINVAL:
		return "invalid argument";
	case MQTT_EQOS:
		return "invalid QoS or QoS/flag combination";
	case MQTT_EPROTO:
		return "protocol violation";
	case MQTT_ETYPE:
		return "packet type not allowed here";
	case MQTT_EREASON:
		return "reason code not defined for this packet";
	default:
		return "unknown MQTT codec error";
	}
}

/* ---- strings and topics ------------------------------------------------ */

/*
 * Check MQTT UTF-8 (well-formed per RFC 3629, no U+0000; surrogates and
 * code points above U+10FFFF are excluded by the byte ranges). With
 * `topic_name` set, '+' and '#' are refused too, so a PUBLISH topic is
 * scanned once. Returns 0, MQTT_EUTF8 or MQTT_ETOPIC.
 */
static int utf8_scan(const uint8_t *s, size_t len, int topic_name)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		uint8_t lo = 0x80, hi = 0xBF;
		size_t need, k;

		if (c < 0x80) {
			if (c == 0)
				return MQTT_EUTF8;
			if (topic_name && (c == '+' || c == '#'))
				return MQTT_ETOPIC;
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
		} else if (c == 0xE0) {
			need = 2;
			lo = 0xA0; /* below is overlong */
		} else if (c == 0xED) {
			need = 2;
			hi = 0x9F; /* above is U+D800..U+DFFF */
		} else if (c >= 0xE1 && c <= 0xEF) {
			need = 2;
		} else if (c == 0xF0) {
			need = 3;
			lo = 0x90; /* below is overlong */
		} else if (c >= 0xF1 && c <= 0xF3) {
			need = 3;
		} else if (c == 0xF4) {
			need = 3;
			hi = 0x8F; /* above is beyond U+10FFFF */
		} else {
			return MQTT_EUTF8; /* 0x80..0xC1, 0xF5..0xFF */
		}
		if (len - i <= need)
			return MQTT_EUTF8;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return MQTT_EUTF8;
		for (k = 2; k <= need; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return MQTT_EUTF8;
		i += need + 1;
	}
	return 0;
}

int mqtt_valid_utf8(const uint8_t *s, size_t len)
{
	if (len && !s)
		return MQTT_EUTF8;
	return utf8_scan(s, len, 0);
}

int mqtt_valid_topic_name(const uint8_t *s, size_t len)
{
	if (len == 0 || len > 65535 || !s)
		return MQTT_ETOPIC;
	return utf8_scan(s, len, 1);
}

int mqtt_valid_topic_filter(const uint8_t *s, size_t len)
{
	size_t i;
	int rc;

	if (len == 0 || len > 65535 || !s)
		return MQTT_ETOPIC;
	rc = utf8_scan(s, len, 0);
	if (rc)
		return rc;
	for (i = 0; i < len; i++) {
		if (s[i] == '+') {
			if ((i > 0 && s[i - 1] != '/') ||
			    (i + 1 < len && s[i + 1] != '/'))
				return MQTT_ETOPIC;
		} else if (s[i] == '#') {
			if (i + 1 != len || (i > 0 && s[i - 1] != '/'))
				return MQTT_ETOPIC;
		}
	}
	return 0;
}

/*
 * v5 shared subscription syntax (4.8.2) on an already valid filter: returns
 * 1 for "$share/NAME/FILTER" with NAME non-empty and free of wildcards and
 * FILTER non-empty, 0 for a filter that is not shared, MQTT_ETOPIC for a
 * malformed shared one.
 */
static int shared_filter(const uint8_t *s, size_t len)
{
	static const char pfx[] = "$share/";
	const size_t plen = sizeof(pfx) - 1;
	const uint8_t *name, *slash;
	size_t i;

	if (len < plen || memcmp(s, pfx, plen) != 0)
		return 0;
	name = s + plen;
	slash = memchr(name, '/', len - plen);
	if (!slash || slash == name || slash + 1 == s + len)
		return MQTT_ETOPIC;
	for (i = 0; name + i < slash; i++)
		if (name[i] == '+' || name[i] == '#')
			return MQTT_ETOPIC;
	return 1;
}

int mqtt_topic_matches(const uint8_t *filter, size_t flen,
                       const uint8_t *topic, size_t tlen)
{
	size_t fi = 0, ti = 0;
	int topic_done = 0;

	if (flen == 0 || tlen == 0)
		return 0;
	/* 4.7.2: wildcards at the first level never match $-topics */
	if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
		return 0;
	for (;;) {
		const uint8_t *p = memchr(filter + fi, '/', flen - fi);
		size_t fe = p ? (size_t)(p - filter) : flen;
		size_t fl = fe - fi, te;

		/* '#' also matches the parent level: "a/#" matches "a" */
		if (fl == 1 && filter[fi] == '#')
			return 1;
		if (topic_done)
			return 0;
		p = memchr(topic + ti, '/', tlen - ti);
		te = p ? (size_t)(p - topic) : tlen;
		if (!(fl == 1 && filter[fi] == '+') &&
		    (fl != te - ti || memcmp(filter + fi, topic + ti, fl) != 0))
			return 0;
		if (fe == flen)
			return te == tlen;
		fi = fe + 1;
		if (te == tlen)
			topic_done = 1;
		else
			ti = te + 1;
	}
}

/* ---- reason codes ------------------------------------------------------ */

static const uint8_t rc_connack5[] = {
	0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
	0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
};
static const uint8_t rc_puback5[] = {
	0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99,
};
static const uint8_t rc_pubrel5[] = { 0x00, 0x92 };
static const uint8_t rc_suback5[] = {
	0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
};
static const uint8_t rc_unsuback5[] = {
	0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91,
};
static const uint8_t rc_disconnect5[] = {
	0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D,
	0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A,
	0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
};
static const uint8_t rc_auth5[] = { 0x00, 0x18, 0x19 };
static const uint8_t rc_suback311[] = { 0x00, 0x01, 0x02, 0x80 };

#define IN_LIST(list, v) (memchr((list), (v), sizeof(list)) != NULL)

int mqtt_valid_reason(uint8_t version, uint8_t type, uint8_t reason)
{
	int ok;

	if (version == MQTT_V311) {
		switch (type) {
		case MQTT_CONNACK:
			ok = reason <= 5; /* 3.2.2.3 */
			break;
		case MQTT_SUBACK:
			ok = IN_LIST(rc_suback311, reason); /* 3.9.3 */
			break;
		default:
			ok = reason == 0; /* no reason field at all */
			break;
		}
		return ok ? 0 : MQTT_EREASON;
	}
	if (version != MQTT_V5)
		return MQTT_EINVAL;
	switch (type) {
	case MQTT_CONNACK:
		ok = IN_LIST(rc_connack5, reason);
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
		ok = IN_LIST(rc_puback5, reason);
		break;
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		ok = IN_LIST(rc_pubrel5, reason);
		break;
	case MQTT_SUBACK:
		ok = IN_LIST(rc_suback5, reason);
		break;
	case MQTT_UNSUBACK:
		ok = IN_LIST(rc_unsuback5, reason);
		break;
	case MQTT_DISCONNECT:
		ok = IN_LIST(rc_disconnect5, reason);
		break;
	case MQTT_AUTH:
		ok = IN_LIST(rc_auth5, reason);
		break;
	default:
		ok = reason == 0;
		break;
	}
	return ok ? 0 : MQTT_EREASON;
}

/* ---- variable byte integers and framing -------------------------------- */

static size_t varint_size(uint32_t v)
{
	return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

/*
 * Parse a variable byte integer (1.5.5) at p. Returns the bytes it took,
 * MQTT_ENEEDMORE if it runs past len, MQTT_EVARINT if it is longer than
 * four bytes or not in its shortest form.
 */
static ssize_t varint_parse(const uint8_t *p, size_t len, uint32_t *v)
{
	uint32_t val = 0;
	size_t i;

	for (i = 0; i < 4; i++) {
		if (i == len)
			return MQTT_ENEEDMORE;
		val |= (uint32_t)(p[i] & 0x7F) << (7 * i);
		if (!(p[i] & 0x80)) {
			if (i > 0 && p[i] == 0)
				return MQTT_EVARINT;
			*v = val;
			return (ssize_t)i + 1;
		}
	}
	return MQTT_EVARINT;
}

ssize_t mqtt_frame(const uint8_t *buf, size_t len, size_t max_size,
                   uint8_t *type, size_t *header_len)
{
	uint32_t rem;
	ssize_t n;
	size_t total;

	if (len < 2)
		return MQTT_ENEEDMORE;
	n = varint_parse(buf + 1, len - 1, &rem);
	if (n < 0)
		return n;
	total = 1 + (size_t)n + rem;
	if (max_size && total > max_size)
		return MQTT_ETOOBIG;
	if (len < total)
		return MQTT_ENEEDMORE;
	if (type)
		*type = buf[0] >> 4;
	if (header_len)
		*header_len = 1 + (size_t)n;
	return (ssize_t)total;
}

ssize_t mqtt_frame_len(const uint8_t *buf, size_t len)
{
	uint32_t rem;
	ssize_t n;

	if (len < 2)
		return 0;
	n = varint_parse(buf + 1, len - 1, &rem);
	if (n == MQTT_ENEEDMORE)
		return 0;
	if (n < 0)
		return n;
	return (ssize_t)(1 + (size_t)n + rem);
}

/* ---- decode cursor ------------------------------------------------------ */

struct rd {
	const uint8_t *p, *end;
};

static size_t rd_left(const struct rd *r)
{
	return (size_t)(r->end - r->p);
}

static int rd_u8(struct rd *r, uint8_t *v)
{
	if (r->p == r->end)
		return MQTT_EMALFORMED;
	*v = *r->p++;
	return 0;
}

static int rd_u16(struct rd *r, uint16_t *v)
{
	if (rd_left(r) < 2)
		return MQTT_EMALFORMED;
	*v = (uint16_t)(r->p[0] << 8 | r->p[1]);
	r->p += 2;
	return 0;
}

static int rd_u32(struct rd *r, uint32_t *v)
{
	if (rd_left(r) < 4)
		return MQTT_EMALFORMED;
	*v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 |
	     (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	return 0;
}

/* MQTT_EMALFORMED when cut by the end of the range, else as varint_parse. */
static int rd_varint(struct rd *r, uint32_t *v)
{
	ssize_t n = varint_parse(r->p, rd_left(r), v);

	if (n == MQTT_ENEEDMORE)
		return MQTT_EMALFORMED;
	if (n < 0)
		return (int)n;
	r->p += n;
	return 0;
}

/* Two-byte length, then that many bytes (binary data, 1.5.6). */
static int rd_bin(struct rd *r, struct mqtt_bytes *b)
{
	uint16_t n;

	if (rd_u16(r, &n))
		return MQTT_EMALFORMED;
	if (rd_left(r) < n)
		return MQTT_EMALFORMED;
	b->data = r->p;
	b->len = n;
	r->p += n;
	return 0;
}

/* UTF-8 string (1.5.4): binary data that must also be valid MQTT UTF-8. */
static int rd_str(struct rd *r, struct mqtt_bytes *b)
{
	int rc = rd_bin(r, b);

	return rc ? rc : utf8_scan(b->data, b->len, 0);
}

/* ---- properties --------------------------------------------------------- */

enum { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VARINT, PT_STR, PT_BIN,
       PT_PAIR };
enum { CK_NONE, CK_BOOL, CK_NONZERO, CK_TOPIC };

/* Where a property may appear: bit (packet type), bit 0 for the will. */
#define CTX_WILL 0
#define W(t) (1u << (t))
#define W_PUBWILL (W(MQTT_PUBLISH) | W(CTX_WILL))
#define W_CONN (W(MQTT_CONNECT) | W(MQTT_CONNACK))
#define W_ACKS                                                               \
	(W(MQTT_PUBACK) | W(MQTT_PUBREC) | W(MQTT_PUBREL) | W(MQTT_PUBCOMP))

struct pdesc {
	uint8_t type;
	uint8_t check;
	uint16_t where;
	uint16_t off; /* offset of the field in struct mqtt_props */
};

#define NPROPS (MQTT_PROP_SHARED_SUB_AVAILABLE + 1)
#define OFF(f) ((uint16_t)offsetof(struct mqtt_props, f))

/* 5.0 table 2-4: type, value rule and packets of every property. */
static const struct pdesc ptab[NPROPS] = {
	[MQTT_PROP_PAYLOAD_FORMAT] = { PT_BYTE, CK_BOOL, W_PUBWILL,
	                               OFF(payload_format) },
	[MQTT_PROP_MESSAGE_EXPIRY] = { PT_U32, CK_NONE, W_PUBWILL,
	                               OFF(message_expiry) },
	[MQTT_PROP_CONTENT_TYPE] = { PT_STR, CK_NONE, W_PUBWILL,
	                             OFF(content_type) },
	[MQTT_PROP_RESPONSE_TOPIC] = { PT_STR, CK_TOPIC, W_PUBWILL,
	                               OFF(response_topic) },
	[MQTT_PROP_CORRELATION_DATA] = { PT_BIN, CK_NONE, W_PUBWILL,
	                                 OFF(correlation_data) },
	[MQTT_PROP_SUBSCRIPTION_ID] = { PT_VARINT, CK_NONZERO,
	                                W(MQTT_PUBLISH) | W(MQTT_SUBSCRIBE),
	                                OFF(subscription_id) },
	[MQTT_PROP_SESSION_EXPIRY] = { PT_U32, CK_NONE,
	                               W_CONN | W(MQTT_DISCONNECT),
	                               OFF(session_expiry) },
	[MQTT_PROP_ASSIGNED_CLIENT_ID] = { PT_STR, CK_NONE, W(MQTT_CONNACK),
	                                   OFF(assigned_client_id) },
	[MQTT_PROP_SERVER_KEEPALIVE] = { PT_U16, CK_NONE, W(MQTT_CONNACK),
	                                 OFF(server_keepalive) },
	[MQTT_PROP_AUTH_METHOD] = { PT_STR, CK_NONE, W_CONN | W(MQTT_AUTH),
	                            OFF(auth_method) },
	[MQTT_PROP_AUTH_DATA] = { PT_BIN, CK_NONE, W_CONN | W(MQTT_AUTH),
	                          OFF(auth_data) },
	[MQTT_PROP_REQUEST_PROBLEM_INFO] = { PT_BYTE, CK_BOOL, W(MQTT_CONNECT),
	                                     OFF(request_problem_info) },
	[MQTT_PROP_WILL_DELAY] = { PT_U32, CK_NONE, W(CTX_WILL),
	                           OFF(will_delay) },
	[MQTT_PROP_REQUEST_RESPONSE_INFO] = { PT_BYTE, CK_BOOL,
	                                      W(MQTT_CONNECT),
	                                      OFF(request_response_info) },
	[MQTT_PROP_RESPONSE_INFO] = { PT_STR, CK_NONE, W(MQTT_CONNACK),
	                              OFF(response_info) },
	[MQTT_PROP_SERVER_REFERENCE] = { PT_STR, CK_NONE,
	                                 W(MQTT_CONNACK) | W(MQTT_DISCONNECT),
	                                 OFF(server_reference) },
	[MQTT_PROP_REASON_STRING] = { PT_STR, CK_NONE,
	                              W(MQTT_CONNACK) | W_ACKS |
	                                  W(MQTT_SUBACK) | W(MQTT_UNSUBACK) |
	                                  W(MQTT_DISCONNECT) | W(MQTT_AUTH),
	                              OFF(reason_string) },
	[MQTT_PROP_RECEIVE_MAX] = { PT_U16, CK_NONZERO, W_CONN,
	                            OFF(receive_max) },
	[MQTT_PROP_TOPIC_ALIAS_MAX] = { PT_U16, CK_NONE, W_CONN,
	                                OFF(topic_alias_max) },
	[MQTT_PROP_TOPIC_ALIAS] = { PT_U16, CK_NONZERO, W(MQTT_PUBLISH),
	                            OFF(topic_alias) },
	[MQTT_PROP_MAX_QOS] = { PT_BYTE, CK_BOOL, W(MQTT_CONNACK),
	                        OFF(max_qos) },
	[MQTT_PROP_RETAIN_AVAILABLE] = { PT_BYTE, CK_BOOL, W(MQTT_CONNACK),
	                                 OFF(retain_available) },
	[MQTT_PROP_USER] = { PT_PAIR, CK_NONE,
	                     W_CONN | W_PUBWILL | W_ACKS | W(MQTT_SUBSCRIBE) |
	                         W(MQTT_SUBACK) | W(MQTT_UNSUBSCRIBE) |
	                         W(MQTT_UNSUBACK) | W(MQTT_DISCONNECT) |
	                         W(MQTT_AUTH),
	                     0 },
	[MQTT_PROP_MAX_PACKET_SIZE] = { PT_U32, CK_NONZERO, W_CONN,
	                                OFF(max_packet_size) },
	[MQTT_PROP_WILDCARD_SUB_AVAILABLE] = { PT_BYTE, CK_BOOL,
	                                       W(MQTT_CONNACK),
	                                       OFF(wildcard_sub_available) },
	[MQTT_PROP_SUB_ID_AVAILABLE] = { PT_BYTE, CK_BOOL, W(MQTT_CONNACK),
	                                 OFF(sub_id_available) },
	[MQTT_PROP_SHARED_SUB_AVAILABLE] = { PT_BYTE, CK_BOOL, W(MQTT_CONNACK),
	                                     OFF(shared_sub_available) },
};

static const struct pdesc *prop_desc(uint8_t id)
{
	if (id >= NPROPS || ptab[id].type == PT_NONE)
		return NULL;
	return &ptab[id];
}

/* One property's value as read off the wire. */
struct pval {
	uint32_t num;
	struct mqtt_bytes a, b;
};

/*
 * Read one property at r: identifier (ids are all below 0x80, so a byte with
 * the continuation bit is an unknown id) and value. Strings are checked for
 * UTF-8. Returns 0, MQTT_EPROP (unknown id), MQTT_EMALFORMED, MQTT_EVARINT
 * or MQTT_EUTF8.
 */
static int prop_read(struct rd *r, uint8_t *id, const struct pdesc **dp,
                     struct pval *v)
{
	const struct pdesc *d;
	uint8_t u8 = 0;
	uint16_t u16 = 0;
	int rc;

	if ((rc = rd_u8(r, id)))
		return rc;
	if (!(d = prop_desc(*id)))
		return MQTT_EPROP;
	*dp = d;
	switch (d->type) {
	case PT_BYTE:
		rc = rd_u8(r, &u8);
		v->num = u8;
		return rc;
	case PT_U16:
		rc = rd_u16(r, &u16);
		v->num = u16;
		return rc;
	case PT_U32:
		return rd_u32(r, &v->num);
	case PT_VARINT:
		return rd_varint(r, &v->num);
	case PT_STR:
		return rd_str(r, &v->a);
	case PT_BIN:
		return rd_bin(r, &v->a);
	default: /* PT_PAIR */
		if ((rc = rd_str(r, &v->a)))
			return rc;
		return rd_str(r, &v->b);
	}
}

/* Apply the value rule of a property. Returns 0, MQTT_EPROP, MQTT_ETOPIC or
 * MQTT_EUTF8. */
static int prop_check(const struct pdesc *d, const struct pval *v)
{
	switch (d->check) {
	case CK_BOOL:
		return v->num > 1 ? MQTT_EPROP : 0;
	case CK_NONZERO:
		return v->num == 0 ? MQTT_EPROP : 0;
	case CK_TOPIC:
		return mqtt_valid_topic_name(v->a.data, v->a.len);
	default:
		return 0;
	}
}

/*
 * Decode a property block (length, then properties) for context `ctx`
 * (packet type or CTX_WILL) into *pr, which must be zeroed. Returns 0 or
 * MQTT_EMALFORMED, MQTT_EVARINT, MQTT_EUTF8, MQTT_ETOPIC, MQTT_EPROP.
 */
static int dec_props(struct rd *r, int ctx, struct mqtt_props *pr)
{
	struct rd b;
	uint32_t plen;
	int rc;

	if ((rc = rd_varint(r, &plen)))
		return rc;
	if (plen > rd_left(r))
		return MQTT_EMALFORMED;
	b.p = r->p;
	b.end = r->p + plen;
	r->p = b.end;
	pr->raw.data = b.p;
	pr->raw.len = plen;
	while (b.p < b.end) {
		const struct pdesc *d;
		struct pval v;
		uint64_t bit;
		uint8_t id;
		char *f;

		if ((rc = prop_read(&b, &id, &d, &v)))
			return rc;
		if (!(d->where & W(ctx)))
			return MQTT_EPROP;
		bit = MQTT_PROP_BIT(id);
		if (id == MQTT_PROP_USER) {
			pr->n_user++;
			pr->present |= bit;
			continue;
		}
		if ((rc = prop_check(d, &v)))
			return rc;
		if (id == MQTT_PROP_SUBSCRIPTION_ID) {
			/* 3.3.4: a PUBLISH to a client may carry several */
			if (pr->n_sub_ids && ctx != MQTT_PUBLISH)
				return MQTT_EPROP;
			if (pr->n_sub_ids++)
				continue; /* keep the first in the field */
		} else if (pr->present & bit) {
			return MQTT_EPROP;
		}
		pr->present |= bit;
		f = (char *)pr + d->off;
		switch (d->type) {
		case PT_BYTE:
			*(uint8_t *)f = (uint8_t)v.num;
			break;
		case PT_U16:
			*(uint16_t *)f = (uint16_t)v.num;
			break;
		case PT_U32:
		case PT_VARINT:
			*(uint32_t *)f = v.num;
			break;
		default:
			*(struct mqtt_bytes *)f = v.a;
			break;
		}
	}
	return 0;
}

/*
 * Find the next property `want` in a decoded block from *pos on. 1 with *v
 * filled and *pos moved past it, or 0 at the end.
 */
static int props_next(const struct mqtt_props *p, size_t *pos, uint8_t want,
                      struct pval *v)
{
	struct rd r;

	if (!p->raw.data || *pos >= p->raw.len)
		return 0;
	r.p = p->raw.data + *pos;
	r.end = p->raw.data + p->raw.len;
	while (r.p < r.end) {
		const struct pdesc *d;
		uint8_t id;

		if (prop_read(&r, &id, &d, v))
			break;
		if (id == want) {
			*pos = (size_t)(r.p - p->raw.data);
			return 1;
		}
	}
	*pos = p->raw.len;
	return 0;
}

int mqtt_props_next_user(const struct mqtt_props *p, size_t *pos,
                         struct mqtt_user_prop *out)
{
	struct pval v;

	if (!props_next(p, pos, MQTT_PROP_USER, &v))
		return 0;
	out->key = v.a;
	out->value = v.b;
	return 1;
}

int mqtt_props_next_sub_id(const struct mqtt_props *p, size_t *pos,
                           uint32_t *out)
{
	struct pval v;

	if (!props_next(p, pos, MQTT_PROP_SUBSCRIPTION_ID, &v))
		return 0;
	*out = v.num;
	return 1;
}

/* ---- decode packets ----------------------------------------------------- */

/* Bytes left after the declared content are malformed (the length lied). */
static int rd_end(const struct rd *r)
{
	return r->p == r->end ? 0 : MQTT_EMALFORMED;
}

static int rd_pktid(struct rd *r, uint16_t *id)
{
	int rc = rd_u16(r, id);

	if (rc)
		return rc;
	return *id ? 0 : MQTT_EPKTID;
}

/* 3.1 CONNECT (server side). */
static int dec_connect(struct rd *r, struct mqtt_connect *c)
{
	struct mqtt_bytes name;
	uint8_t flags;
	int rc;

	if ((rc = rd_bin(r, &name)))
		return rc;
	if (name.len != 4 || memcmp(name.data, "MQTT", 4) != 0)
		return MQTT_EPROTO;
	if ((rc = rd_u8(r, &c->version)))
		return rc;
	if (c->version != MQTT_V311 && c->version != MQTT_V5)
		return MQTT_EPROTO;
	if ((rc = rd_u8(r, &flags)))
		return rc;
	if (flags & 0x01) /* reserved */
		return MQTT_EFLAGS;
	c->clean_start = (flags >> 1) & 1;
	c->will_flag = (flags >> 2) & 1;
	c->will_qos = (flags >> 3) & 3;
	c->will_retain = (flags >> 5) & 1;
	c->has_password = (flags >> 6) & 1;
	c->has_username = (flags >> 7) & 1;
	if (c->will_qos == 3)
		return MQTT_EQOS;
	if (!c->will_flag && (c->will_qos || c->will_retain))
		return MQTT_EFLAGS;
	if (c->version == MQTT_V311 && c->has_password && !c->has_username)
		return MQTT_EFLAGS; /* 3.1.2-22 */
	if ((rc = rd_u16(r, &c->keepalive)))
		return rc;
	if (c->version == MQTT_V5) {
		if ((rc = dec_props(r, MQTT_CONNECT, &c->props)))
			return rc;
		/* 3.1.2.11.10: data without a method is a protocol error */
		if ((c->props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_DATA)) &&
		    !(c->props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)))
			return MQTT_EPROP;
	}
	if ((rc = rd_str(r, &c->client_id)))
		return rc;
	if (c->will_flag) {
		if (c->version == MQTT_V5 &&
		    (rc = dec_props(r, CTX_WILL, &c->will_props)))
			return rc;
		if ((rc = rd_bin(r, &c->will_topic)))
			return rc;
		if ((rc = mqtt_valid_topic_name(c->will_topic.data,
		                                c->will_topic.len)))
			return rc;
		if ((rc = rd_bin(r, &c->will_payload)))
			return rc;
	}
	if (c->has_username && (rc = rd_str(r, &c->username)))
		return rc;
	if (c->has_password && (rc = rd_bin(r, &c->password)))
		return rc;
	return rd_end(r);
}

/* 3.2 CONNACK (client side). */
static int dec_connack(struct rd *r, uint8_t version, struct mqtt_connack *c)
{
	uint8_t flags;
	int rc;

	if ((rc = rd_u8(r, &flags)) || (rc = rd_u8(r, &c->reason)))
		return rc;
	if (flags & 0xFE)
		return MQTT_EFLAGS;
	c->session_present = flags;
	if ((rc = mqtt_valid_reason(version, MQTT_CONNACK, c->reason)))
		return rc;
	/* 3.2.2-4 (3.1.1), 3.2.2-6 (5.0): no session on a refusal */
	if (c->session_present && c->reason != 0)
		return MQTT_EPROTO;
	if (version == MQTT_V5 &&
	    (rc = dec_props(r, MQTT_CONNACK, &c->props)))
		return rc;
	return rd_end(r);
}

/* 3.3 PUBLISH; the fixed-header flags were checked by the caller. */
static int dec_publish(struct rd *r, uint8_t version, int is_server,
                       uint8_t flags, struct mqtt_publish *pb)
{
	int rc;

	pb->dup = (flags >> 3) & 1;
	pb->qos = (flags >> 1) & 3;
	pb->retain = flags & 1;
	if ((rc = rd_bin(r, &pb->topic)))
		return rc;
	if ((rc = utf8_scan(pb->topic.data, pb->topic.len, 1)))
		return rc;
	if (pb->qos && (rc = rd_pktid(r, &pb->packet_id)))
		return rc;
	if (version == MQTT_V5) {
		if ((rc = dec_props(r, MQTT_PUBLISH, &pb->props)))
			return rc;
		/* 3.3.4-6: a client never sends a subscription id */
		if (is_server && pb->props.n_sub_ids)
			return MQTT_EPROP;
	}
	if (pb->topic.len == 0 &&
	    !(pb->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)))
		return MQTT_ETOPIC;
	pb->payload.data = r->p;
	pb->payload.len = rd_left(r);
	r->p = r->end;
	return 0;
}

/* 3.4-3.7 PUBACK, PUBREC, PUBREL, PUBCOMP, with the 5.0 short forms. */
static int dec_ack(struct rd *r, uint8_t version, uint8_t type,
                   struct mqtt_ack *a)
{
	int rc;

	if ((rc = rd_pktid(r, &a->packet_id)))
		return rc;
	if (version == MQTT_V5 && rd_left(r) > 0) {
		if ((rc = rd_u8(r, &a->reason)))
			return rc;
		if ((rc = mqtt_valid_reason(version, type, a->reason)))
			return rc;
		if (rd_left(r) > 0 && (rc = dec_props(r, type, &a->props)))
			return rc;
	}
	return rd_end(r);
}

/*
 * Validate a SUBSCRIBE/UNSUBSCRIBE payload and count its entries. Returns 0,
 * MQTT_EMALFORMED, MQTT_EUTF8, MQTT_ETOPIC, MQTT_EFLAGS, MQTT_EQOS, or
 * MQTT_EPROTO (empty payload, 3.8.3-3 / 3.10.3-2; no_local on a shared
 * subscription, 3.8.3-4).
 */
static int check_sub_payload(const uint8_t *p, size_t len, uint8_t version,
                             uint8_t type, size_t *count)
{
	struct rd r = { p, p + len };
	size_t n = 0;

	while (r.p < r.end) {
		struct mqtt_bytes f;
		int rc, shared = 0;
		uint8_t o;

		if ((rc = rd_bin(&r, &f)))
			return rc;
		if ((rc = mqtt_valid_topic_filter(f.data, f.len)))
			return rc;
		if (version == MQTT_V5 && (shared = shared_filter(f.data,
		                                                  f.len)) < 0)
			return shared;
		if (type == MQTT_SUBSCRIBE) {
			if ((rc = rd_u8(&r, &o)))
				return rc;
			if (o & (version == MQTT_V5 ? 0xC0 : 0xFC))
				return MQTT_EFLAGS;
			if (((o >> 4) & 3) == 3) /* retain handling 3 */
				return MQTT_EFLAGS;
			if ((o & 3) == 3)
				return MQTT_EQOS;
			if (shared && (o & 0x04))
				return MQTT_EPROTO;
		}
		n++;
	}
	if (n == 0)
		return MQTT_EPROTO;
	*count = n;
	return 0;
}

int mqtt_subscribe_next(const struct mqtt_subscribe *s, uint8_t version,
                        uint8_t type, size_t *pos,
                        struct mqtt_topic_filter *out)
{
	struct rd r;
	uint8_t o;

	if (!s->raw_payload.data || *pos >= s->raw_payload.len)
		return 0;
	r.p = s->raw_payload.data + *pos;
	r.end = s->raw_payload.data + s->raw_payload.len;
	if (rd_bin(&r, &out->filter))
		goto end;
	memset(&out->opts, 0, sizeof(out->opts));
	if (type == MQTT_SUBSCRIBE) {
		if (rd_u8(&r, &o))
			goto end;
		out->opts.qos = o & 3;
		if (version == MQTT_V5) {
			out->opts.no_local = (o >> 2) & 1;
			out->opts.retain_as_published = (o >> 3) & 1;
			out->opts.retain_handling = (o >> 4) & 3;
		}
	}
	*pos = (size_t)(r.p - s->raw_payload.data);
	return 1;
end:
	*pos = s->raw_payload.len;
	return 0;
}

/* 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE (server side). */
static int dec_subscribe(struct rd *r, uint8_t version, uint8_t type,
                         struct mqtt_subscribe *s)
{
	int rc;

	if ((rc = rd_pktid(r, &s->packet_id)))
		return rc;
	if (version == MQTT_V5 && (rc = dec_props(r, type, &s->props)))
		return rc;
	s->raw_payload.data = r->p;
	s->raw_payload.len = rd_left(r);
	r->p = r->end;
	return check_sub_payload(s->raw_payload.data, s->raw_payload.len,
	                         version, type, &s->n_filters);
}

/* 3.9 SUBACK, 3.11 UNSUBACK (client side). */
static int dec_suback(struct rd *r, uint8_t version, uint8_t type,
                      struct mqtt_suback *s)
{
	size_t i;
	int rc;

	if ((rc = rd_pktid(r, &s->packet_id)))
		return rc;
	if (version == MQTT_V311 && type == MQTT_UNSUBACK)
		return rd_end(r); /* 3.11.2: packet id only */
	if (version == MQTT_V5 && (rc = dec_props(r, type, &s->props)))
		return rc;
	s->reasons.data = r->p;
	s->reasons.len = rd_left(r);
	r->p = r->end;
	if (s->reasons.len == 0)
		return MQTT_EPROTO; /* one per filter, and there is >= 1 */
	for (i = 0; i < s->reasons.len; i++)
		if ((rc = mqtt_valid_reason(version, type, s->reasons.data[i])))
			return rc;
	return 0;
}

/* 3.14 DISCONNECT and 3.15 AUTH (5.0): reason and properties may be cut. */
static int dec_reason_props(struct rd *r, uint8_t type, uint8_t *reason,
                            struct mqtt_props *props)
{
	int rc;

	if (rd_left(r) == 0)
		return 0;
	if ((rc = rd_u8(r, reason)))
		return rc;
	if ((rc = mqtt_valid_reason(MQTT_V5, type, *reason)))
		return rc;
	if (rd_left(r) > 0 && (rc = dec_props(r, type, props)))
		return rc;
	return rd_end(r);
}

/* Which side receives which type (table 2-1); 0 if it never does. */
static int receives(uint8_t type, uint8_t version, int is_server)
{
	switch (type) {
	case MQTT_CONNECT:
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
	case MQTT_PINGREQ:
		return is_server;
	case MQTT_CONNACK:
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
	case MQTT_PINGRESP:
		return !is_server;
	case MQTT_DISCONNECT:
		return version == MQTT_V5 || is_server;
	case MQTT_AUTH:
		return version == MQTT_V5;
	case 0:
		return 0;
	default:
		return 1; /* PUBLISH and its acknowledgements */
	}
}

/* The flags of the first byte that each type requires (2.2.2). */
static uint8_t fixed_flags(uint8_t type)
{
	return (type == MQTT_PUBREL || type == MQTT_SUBSCRIBE ||
	        type == MQTT_UNSUBSCRIBE) ? 0x02 : 0x00;
}

ssize_t mqtt_decode(const uint8_t *buf, size_t len, uint8_t version,
                    int is_server, struct mqtt_packet *out)
{
	struct rd r;
	size_t hl;
	ssize_t total;
	uint8_t type, flags;
	int rc;

	total = mqtt_frame(buf, len, 0, &type, &hl);
	if (total < 0)
		return total;
	flags = buf[0] & 0x0F;
	out->type = type;
	out->flags = flags;
	/* CONNECT carries its own level; dec_connect() reads it */
	if (type != MQTT_CONNECT && version != MQTT_V311 && version != MQTT_V5)
		return MQTT_EINVAL;
	if (!receives(type, version, is_server))
		return MQTT_ETYPE;
	if (type == MQTT_PUBLISH) {
		if (((flags >> 1) & 3) == 3)
			return MQTT_EQOS;
		if ((flags & 0x08) && !(flags & 0x06))
			return MQTT_EQOS; /* DUP with QoS 0, 3.3.1-2 */
	} else if (flags != fixed_flags(type)) {
		return MQTT_EFLAGS;
	}
	r.p = buf + hl;
	r.end = buf + total;

	switch (type) {
	case MQTT_CONNECT:
		memset(&out->u.connect, 0, sizeof(out->u.connect));
		rc = dec_connect(&r, &out->u.connect);
		break;
	case MQTT_CONNACK:
		memset(&out->u.connack, 0, sizeof(out->u.connack));
		rc = dec_connack(&r, version, &out->u.connack);
		break;
	case MQTT_PUBLISH:
		memset(&out->u.publish, 0, sizeof(out->u.publish));
		rc = dec_publish(&r, version, is_server, flags,
		                 &out->u.publish);
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		memset(&out->u.ack, 0, sizeof(out->u.ack));
		rc = dec_ack(&r, version, type, &out->u.ack);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		memset(&out->u.subscribe, 0, sizeof(out->u.subscribe));
		rc = dec_subscribe(&r, version, type, &out->u.subscribe);
		break;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		memset(&out->u.suback, 0, sizeof(out->u.suback));
		rc = dec_suback(&r, version, type, &out->u.suback);
		break;
	case MQTT_PINGREQ:
	case MQTT_PINGRESP:
		rc = rd_end(&r);
		break;
	case MQTT_DISCONNECT:
		memset(&out->u.disconnect, 0, sizeof(out->u.disconnect));
		if (version == MQTT_V311) {
			rc = rd_end(&r);
			break;
		}
		rc = dec_reason_props(&r, type, &out->u.disconnect.reason,
		                      &out->u.disconnect.props);
		/* 3.14.2.2.2: the server never sends a session expiry */
		if (!rc && !is_server &&
		    (out->u.disconnect.props.present &
		     MQTT_PROP_BIT(MQTT_PROP_SESSION_EXPIRY)))
			rc = MQTT_EPROP;
		break;
	default: /* MQTT_AUTH, v5 only (receives() said so) */
		memset(&out->u.auth, 0, sizeof(out->u.auth));
		rc = dec_reason_props(&r, type, &out->u.auth.reason,
		                      &out->u.auth.props);
		/* 3.15.2.2.2: anything but the empty form names a method */
		if (!rc && total > (ssize_t)hl &&
		    !(out->u.auth.props.present &
		      MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)))
			rc = MQTT_EPROP;
		break;
	}
	if (rc)
		return rc;
	return total;
}

/* ---- encode ------------------------------------------------------------- */

/*
 * Output cursor. With `dry` set nothing is written and `n` only counts, so
 * the same code validates and measures a packet, then writes it.
 */
struct wr {
	uint8_t *buf;
	size_t n;
	int dry;
};

static void w_u8(struct wr *w, uint8_t v)
{
	if (!w->dry)
		w->buf[w->n] = v;
	w->n++;
}

static void w_u16(struct wr *w, uint16_t v)
{
	w_u8(w, (uint8_t)(v >> 8));
	w_u8(w, (uint8_t)v);
}

static void w_u32(struct wr *w, uint32_t v)
{
	w_u16(w, (uint16_t)(v >> 16));
	w_u16(w, (uint16_t)v);
}

static void w_varint(struct wr *w, uint32_t v)
{
	do {
		uint8_t b = v & 0x7F;

		v >>= 7;
		w_u8(w, v ? (uint8_t)(b | 0x80) : b);
	} while (v);
}

static void w_mem(struct wr *w, const uint8_t *p, size_t n)
{
	if (!w->dry && n)
		memcpy(w->buf + w->n, p, n);
	w->n += n;
}

/* Length-prefixed binary data. Returns 0 or MQTT_EINVAL. */
static int w_bin(struct wr *w, const struct mqtt_bytes *b)
{
	if (b->len > 65535 || (b->len && !b->data))
		return MQTT_EINVAL;
	w_u16(w, (uint16_t)b->len);
	w_mem(w, b->data, b->len);
	return 0;
}

/* Length-prefixed UTF-8 string. Returns 0, MQTT_EINVAL or MQTT_EUTF8. */
static int w_str(struct wr *w, const struct mqtt_bytes *b)
{
	int rc;

	if (b->len > 65535 || (b->len && !b->data))
		return MQTT_EINVAL;
	if (w->dry && (rc = utf8_scan(b->data, b->len, 0)))
		return rc;
	return w_bin(w, b);
}

/* Write the subscription identifiers of *pr (see mqtt_codec.h). */
static int w_sub_ids(struct wr *w, const struct mqtt_props *pr, int ctx)
{
	uint32_t i, n = pr->n_sub_ids ? pr->n_sub_ids : 1;
	size_t pos = 0;

	if (n > 1 && ctx != MQTT_PUBLISH)
		return MQTT_EPROP;
	for (i = 0; i < n; i++) {
		uint32_t v;

		if (pr->sub_ids)
			v = pr->sub_ids[i];
		else if (n == 1)
			v = pr->subscription_id;
		else if (!mqtt_props_next_sub_id(pr, &pos, &v))
			return MQTT_EINVAL;
		if (v == 0 || v > MQTT_MAX_REMAINING)
			return MQTT_EPROP;
		w_u8(w, MQTT_PROP_SUBSCRIPTION_ID);
		w_varint(w, v);
	}
	return 0;
}

/* Write the user properties of *pr (see mqtt_codec.h). */
static int w_users(struct wr *w, const struct mqtt_props *pr)
{
	size_t pos = 0;
	uint32_t i;
	int rc;

	for (i = 0; i < pr->n_user; i++) {
		struct mqtt_user_prop u;

		if (pr->user)
			u = pr->user[i];
		else if (!mqtt_props_next_user(pr, &pos, &u))
			return MQTT_EINVAL;
		w_u8(w, MQTT_PROP_USER);
		if ((rc = w_str(w, &u.key)) || (rc = w_str(w, &u.value)))
			return rc;
	}
	return 0;
}

/* All known property bits. */
#define KNOWN_PROPS                                                          \
	(MQTT_PROP_BIT(0x01) | MQTT_PROP_BIT(0x02) | MQTT_PROP_BIT(0x03) |    \
	 MQTT_PROP_BIT(0x08) | MQTT_PROP_BIT(0x09) | MQTT_PROP_BIT(0x0B) |    \
	 MQTT_PROP_BIT(0x11) | MQTT_PROP_BIT(0x12) | MQTT_PROP_BIT(0x13) |    \
	 MQTT_PROP_BIT(0x15) | MQTT_PROP_BIT(0x16) | MQTT_PROP_BIT(0x17) |    \
	 MQTT_PROP_BIT(0x18) | MQTT_PROP_BIT(0x19) | MQTT_PROP_BIT(0x1A) |    \
	 MQTT_PROP_BIT(0x1C) | MQTT_PROP_BIT(0x1F) | MQTT_PROP_BIT(0x21) |    \
	 MQTT_PROP_BIT(0x22) | MQTT_PROP_BIT(0x23) | MQTT_PROP_BIT(0x24) |    \
	 MQTT_PROP_BIT(0x25) | MQTT_PROP_BIT(0x26) | MQTT_PROP_BIT(0x27) |    \
	 MQTT_PROP_BIT(0x28) | MQTT_PROP_BIT(0x29) | MQTT_PROP_BIT(0x2A))

/* The properties themselves, without the length. */
static int w_props_body(struct wr *w, const struct mqtt_props *pr, int ctx)
{
	uint8_t id;
	int rc;

	if (pr->present & ~KNOWN_PROPS)
		return MQTT_EPROP;
	for (id = 1; id < NPROPS; id++) {
		const struct pdesc *d = &ptab[id];
		const char *f = (const char *)pr + d->off;
		struct pval v;

		if (d->type == PT_NONE)
			continue;
		if (id == MQTT_PROP_USER) {
			if (pr->n_user == 0)
				continue;
			if (!(d->where & W(ctx)))
				return MQTT_EPROP;
			if ((rc = w_users(w, pr)))
				return rc;
			continue;
		}
		if (!(pr->present & MQTT_PROP_BIT(id)))
			continue;
		if (!(d->where & W(ctx)))
			return MQTT_EPROP;
		if (id == MQTT_PROP_SUBSCRIPTION_ID) {
			if ((rc = w_sub_ids(w, pr, ctx)))
				return rc;
			continue;
		}
		memset(&v, 0, sizeof(v));
		switch (d->type) {
		case PT_BYTE:
			v.num = *(const uint8_t *)f;
			break;
		case PT_U16:
			v.num = *(const uint16_t *)f;
			break;
		case PT_U32:
			v.num = *(const uint32_t *)f;
			break;
		default:
			v.a = *(const struct mqtt_bytes *)f;
			break;
		}
		if ((rc = prop_check(d, &v)))
			return rc;
		w_u8(w, id);
		switch (d->type) {
		case PT_BYTE:
			w_u8(w, (uint8_t)v.num);
			break;
		case PT_U16:
			w_u16(w, (uint16_t)v.num);
			break;
		case PT_U32:
			w_u32(w, v.num);
			break;
		case PT_STR:
			if ((rc = w_str(w, &v.a)))
				return rc;
			break;
		default: /* PT_BIN */
			if ((rc = w_bin(w, &v.a)))
				return rc;
			break;
		}
	}
	return 0;
}

/*
 * Property length and properties for context ctx; in 3.1.1 only checks that
 * there are none. Returns 0, MQTT_EPROP, MQTT_EINVAL, MQTT_EUTF8,
 * MQTT_ETOPIC or MQTT_ETOOBIG.
 */
static int w_props(struct wr *w, uint8_t version, const struct mqtt_props *pr,
                   int ctx)
{
	struct wr m = { NULL, 0, 1 };
	int rc;

	if (version == MQTT_V311)
		return (pr->present || pr->n_user) ? MQTT_EPROP : 0;
	if (!pr->present && !pr->n_user) { /* the common case, skip the table */
		w_u8(w, 0);
		return 0;
	}
	if ((rc = w_props_body(&m, pr, ctx)))
		return rc;
	if (m.n > MQTT_MAX_REMAINING)
		return MQTT_ETOOBIG;
	w_varint(w, (uint32_t)m.n);
	if (w->dry) {
		w->n += m.n;
		return 0;
	}
	return w_props_body(w, pr, ctx);
}

/* Size of the property block including its length field, 0 when empty. */
static int props_len(uint8_t version, const struct mqtt_props *pr, int ctx,
                     size_t *len)
{
	struct wr m = { NULL, 0, 1 };
	int rc;

	if ((rc = w_props(&m, version, pr, ctx)))
		return rc;
	*len = m.n;
	return 0;
}

static int enc_connect(struct wr *w, uint8_t version,
                       const struct mqtt_connect *c)
{
	uint8_t flags = 0;
	int rc, will = c->will_flag != 0;

	if (c->version && c->version != version)
		return MQTT_EINVAL;
	if (c->will_qos > 2)
		return MQTT_EQOS;
	if (!will && (c->will_qos || c->will_retain))
		return MQTT_EFLAGS;
	if (version == MQTT_V311 && c->has_password && !c->has_username)
		return MQTT_EFLAGS;
	if (version == MQTT_V5 &&
	    (c->props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_DATA)) &&
	    !(c->props.present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)))
		return MQTT_EPROP;
	flags |= c->clean_start ? 0x02 : 0;
	if (will) {
		flags |= 0x04 | (uint8_t)(c->will_qos << 3);
		flags |= c->will_retain ? 0x20 : 0;
	}
	flags |= c->has_password ? 0x40 : 0;
	flags |= c->has_username ? 0x80 : 0;
	w_u16(w, 4);
	w_mem(w, (const uint8_t *)"MQTT", 4);
	w_u8(w, version);
	w_u8(w, flags);
	w_u16(w, c->keepalive);
	if ((rc = w_props(w, version, &c->props, MQTT_CONNECT)))
		return rc;
	if ((rc = w_str(w, &c->client_id)))
		return rc;
	if (will) {
		if ((rc = w_props(w, version, &c->will_props, CTX_WILL)))
			return rc;
		if (w->dry && (rc = mqtt_valid_topic_name(c->will_topic.data,
		                                          c->will_topic.len)))
			return rc;
		if ((rc = w_bin(w, &c->will_topic)) ||
		    (rc = w_bin(w, &c->will_payload)))
			return rc;
	}
	if (c->has_username && (rc = w_str(w, &c->username)))
		return rc;
	if (c->has_password && (rc = w_bin(w, &c->password)))
		return rc;
	return 0;
}

static int enc_connack(struct wr *w, uint8_t version,
                       const struct mqtt_connack *c)
{
	int rc;

	if ((rc = mqtt_valid_reason(version, MQTT_CONNACK, c->reason)))
		return rc;
	if (c->session_present && c->reason != 0)
		return MQTT_EPROTO;
	w_u8(w, c->session_present ? 1 : 0);
	w_u8(w, c->reason);
	return w_props(w, version, &c->props, MQTT_CONNACK);
}

/* Checks shared by mqtt_encode() and mqtt_encode_publish_simple(). */
static int check_publish(uint8_t qos, uint8_t dup, uint16_t packet_id)
{
	if (qos > 2)
		return MQTT_EQOS;
	if (dup && qos == 0)
		return MQTT_EQOS;
	if (qos && packet_id == 0)
		return MQTT_EPKTID;
	return 0;
}

static int enc_publish(struct wr *w, uint8_t version,
                       const struct mqtt_publish *pb)
{
	int rc;

	if ((rc = check_publish(pb->qos, pb->dup, pb->packet_id)))
		return rc;
	if (pb->topic.len > 65535 || (pb->topic.len && !pb->topic.data))
		return MQTT_EINVAL;
	if (pb->topic.len == 0) {
		if (version == MQTT_V311 ||
		    !(pb->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)))
			return MQTT_ETOPIC;
	} else if (w->dry && (rc = utf8_scan(pb->topic.data, pb->topic.len,
	                                     1))) {
		return rc;
	}
	if ((rc = w_bin(w, &pb->topic)))
		return rc;
	if (pb->qos)
		w_u16(w, pb->packet_id);
	if ((rc = w_props(w, version, &pb->props, MQTT_PUBLISH)))
		return rc;
	if (pb->payload.len && !pb->payload.data)
		return MQTT_EINVAL;
	w_mem(w, pb->payload.data, pb->payload.len);
	return 0;
}

static int enc_ack(struct wr *w, uint8_t version, uint8_t type,
                   const struct mqtt_ack *a)
{
	size_t plen;
	int rc;

	if (a->packet_id == 0)
		return MQTT_EPKTID;
	if ((rc = mqtt_valid_reason(version, type, a->reason)))
		return rc;
	if ((rc = props_len(version, &a->props, type, &plen)))
		return rc;
	w_u16(w, a->packet_id);
	if (version == MQTT_V311)
		return 0;
	/* 3.4.2.1: omit what is default, as short as the spec allows */
	if (plen <= 1) { /* just the zero property length */
		if (a->reason)
			w_u8(w, a->reason);
		return 0;
	}
	w_u8(w, a->reason);
	return w_props(w, version, &a->props, type);
}

static int enc_subscribe(struct wr *w, uint8_t version, uint8_t type,
                         const struct mqtt_subscribe *s)
{
	size_t i, n;
	int rc;

	if (s->packet_id == 0)
		return MQTT_EPKTID;
	w_u16(w, s->packet_id);
	if ((rc = w_props(w, version, &s->props, type)))
		return rc;
	if (!s->filters) {
		if (w->dry) {
			if (!s->raw_payload.data)
				return MQTT_EPROTO;
			if ((rc = check_sub_payload(s->raw_payload.data,
			                            s->raw_payload.len, version,
			                            type, &n)))
				return rc;
			if (n != s->n_filters)
				return MQTT_EINVAL;
		}
		w_mem(w, s->raw_payload.data, s->raw_payload.len);
		return 0;
	}
	if (s->n_filters == 0)
		return MQTT_EPROTO;
	for (i = 0; i < s->n_filters; i++) {
		const struct mqtt_topic_filter *f = &s->filters[i];
		const struct mqtt_sub_opts *o = &f->opts;
		int shared = 0;

		if (w->dry) {
			if ((rc = mqtt_valid_topic_filter(f->filter.data,
			                                  f->filter.len)))
				return rc;
			if (version == MQTT_V5 &&
			    (shared = shared_filter(f->filter.data,
			                            f->filter.len)) < 0)
				return shared;
		}
		if ((rc = w_bin(w, &f->filter)))
			return rc;
		if (type != MQTT_SUBSCRIBE)
			continue;
		if (o->qos > 2)
			return MQTT_EQOS;
		if (version == MQTT_V311) {
			w_u8(w, o->qos);
			continue;
		}
		if (o->retain_handling > 2)
			return MQTT_EFLAGS;
		if (shared && o->no_local)
			return MQTT_EPROTO;
		w_u8(w, (uint8_t)(o->qos | (o->no_local ? 0x04 : 0) |
		                  (o->retain_as_published ? 0x08 : 0) |
		                  o->retain_handling << 4));
	}
	return 0;
}

static int enc_suback(struct wr *w, uint8_t version, uint8_t type,
                      const struct mqtt_suback *s)
{
	size_t i;
	int rc;

	if (s->packet_id == 0)
		return MQTT_EPKTID;
	w_u16(w, s->packet_id);
	if (version == MQTT_V311 && type == MQTT_UNSUBACK)
		return w_props(w, version, &s->props, type);
	if ((rc = w_props(w, version, &s->props, type)))
		return rc;
	if (s->reasons.len == 0)
		return MQTT_EPROTO;
	if (!s->reasons.data)
		return MQTT_EINVAL;
	for (i = 0; i < s->reasons.len; i++)
		if ((rc = mqtt_valid_reason(version, type, s->reasons.data[i])))
			return rc;
	w_mem(w, s->reasons.data, s->reasons.len);
	return 0;
}

/* DISCONNECT and AUTH: omit reason and properties when they are default. */
static int enc_reason_props(struct wr *w, uint8_t version, uint8_t type,
                            uint8_t reason, const struct mqtt_props *pr)
{
	size_t plen;
	int rc;

	if ((rc = mqtt_valid_reason(version, type, reason)))
		return rc;
	if ((rc = props_len(version, pr, type, &plen)))
		return rc;
	if (version == MQTT_V311)
		return 0;
	if (type == MQTT_AUTH && (reason || plen > 1) &&
	    !(pr->present & MQTT_PROP_BIT(MQTT_PROP_AUTH_METHOD)))
		return MQTT_EPROP;
	if (plen <= 1) { /* just the zero property length */
		if (reason)
			w_u8(w, reason);
		return 0;
	}
	w_u8(w, reason);
	return w_props(w, version, pr, type);
}

/* Everything after the fixed header. */
static int enc_body(struct wr *w, uint8_t version, const struct mqtt_packet *p)
{
	switch (p->type) {
	case MQTT_CONNECT:
		return enc_connect(w, version, &p->u.connect);
	case MQTT_CONNACK:
		return enc_connack(w, version, &p->u.connack);
	case MQTT_PUBLISH:
		return enc_publish(w, version, &p->u.publish);
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		return enc_ack(w, version, p->type, &p->u.ack);
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		return enc_subscribe(w, version, p->type, &p->u.subscribe);
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		return enc_suback(w, version, p->type, &p->u.suback);
	case MQTT_PINGREQ:
	case MQTT_PINGRESP:
		return 0;
	case MQTT_DISCONNECT:
		return enc_reason_props(w, version, p->type,
		                        p->u.disconnect.reason,
		                        &p->u.disconnect.props);
	case MQTT_AUTH:
		if (version != MQTT_V5)
			return MQTT_ETYPE;
		return enc_reason_props(w, version, p->type, p->u.auth.reason,
		                        &p->u.auth.props);
	default:
		return MQTT_ETYPE;
	}
}

/* Validate and measure: remaining length into *rem, total returned. */
static ssize_t enc_measure(uint8_t version, const struct mqtt_packet *p,
                           size_t *rem)
{
	struct wr m = { NULL, 0, 1 };
	int rc;

	if (version != MQTT_V311 && version != MQTT_V5)
		return MQTT_EINVAL;
	if ((rc = enc_body(&m, version, p)))
		return rc;
	if (m.n > MQTT_MAX_REMAINING)
		return MQTT_ETOOBIG;
	*rem = m.n;
	return (ssize_t)(1 + varint_size((uint32_t)m.n) + m.n);
}

ssize_t mqtt_encoded_size(uint8_t version, const struct mqtt_packet *p)
{
	size_t rem;

	return enc_measure(version, p, &rem);
}

ssize_t mqtt_encode(uint8_t *buf, size_t cap, uint8_t version,
                    const struct mqtt_packet *p)
{
	struct wr w;
	size_t rem = 0;
	ssize_t total;
	uint8_t flags;
	int rc;

	total = enc_measure(version, p, &rem);
	if (total < 0)
		return total;
	if ((size_t)total > cap)
		return MQTT_ENOBUF;
	if (p->type == MQTT_PUBLISH) {
		const struct mqtt_publish *pb = &p->u.publish;

		flags = (uint8_t)((pb->dup ? 0x08 : 0) | pb->qos << 1 |
		                  (pb->retain ? 0x01 : 0));
	} else {
		flags = fixed_flags(p->type);
	}
	w.buf = buf;
	w.n = 0;
	w.dry = 0;
	w_u8(&w, (uint8_t)(p->type << 4 | flags));
	w_varint(&w, (uint32_t)rem);
	/* validated by the dry run, so this cannot fail */
	rc = enc_body(&w, version, p);
	if (rc || w.n != (size_t)total)
		return rc ? rc : MQTT_EINVAL;
	return total;
}

ssize_t mqtt_encode_publish_simple(uint8_t *buf, size_t cap, uint8_t version,
                                   const uint8_t *topic, size_t topic_len,
                                   uint8_t qos, uint8_t retain, uint8_t dup,
                                   uint16_t packet_id, const uint8_t *payload,
                                   size_t payload_len)
{
	size_t rem, total;
	uint8_t *p = buf;
	uint32_t v;
	int rc;

	if (version != MQTT_V311 && version != MQTT_V5)
		return MQTT_EINVAL;
	if ((rc = check_publish(qos, dup, packet_id)))
		return rc;
	if (topic_len == 0)
		return MQTT_ETOPIC;
	if (topic_len > 65535 || !topic || (payload_len && !payload))
		return MQTT_EINVAL;
	if (payload_len > MQTT_MAX_REMAINING)
		return MQTT_ETOOBIG;
	rem = 2 + topic_len + (qos ? 2 : 0) + (version == MQTT_V5) +
	      payload_len;
	if (rem > MQTT_MAX_REMAINING)
		return MQTT_ETOOBIG;
	total = 1 + varint_size((uint32_t)rem) + rem;
	if (total > cap)
		return MQTT_ENOBUF;
	*p++ = (uint8_t)(MQTT_PUBLISH << 4 | (dup ? 0x08 : 0) | qos << 1 |
	                 (retain ? 0x01 : 0));
	v = (uint32_t)rem;
	do {
		uint8_t b = v & 0x7F;

		v >>= 7;
		*p++ = v ? (uint8_t)(b | 0x80) : b;
	} while (v);
	*p++ = (uint8_t)(topic_len >> 8);
	*p++ = (uint8_t)topic_len;
	memcpy(p, topic, topic_len);
	p += topic_len;
	if (qos) {
		*p++ = (uint8_t)(packet_id >> 8);
		*p++ = (uint8_t)packet_id;
	}
	if (version == MQTT_V5)
		*p++ = 0; /* property length */
	if (payload_len)
		memcpy(p, payload, payload_len);
	return (ssize_t)total;
}
