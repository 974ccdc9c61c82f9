/*
 * codec.h: MQTT 3.1.1 and 5.0 control packets, encode and decode.
 *
 * Pure functions: no I/O, no allocation, no clock. Decoders take a byte range
 * and fill a struct whose byte views (struct mqtt_bytes) point into the
 * caller's buffer: they stay valid as long as that buffer is unchanged.
 * Encoders write into a caller's buffer; each has a _size() companion or takes
 * the capacity and returns MQTT_ENOBUF when it is too small.
 *
 * Return convention (ngtcp2 style): a signed size, >= 0 is the number of bytes
 * consumed (decode) or written (encode); < 0 is one of the MQTT_E* codes.
 * MQTT_ENEEDMORE is not an error of the peer: the packet is incomplete.
 *
 * Validation is strict in both directions: what the decoder rejects, the
 * encoder refuses to produce, so a packet the encoder wrote always decodes
 * back to the same fields. Variable byte integers must be in their shortest
 * form (MQTT 5.0 1.5.5; applied to 3.1.1 as well).
 *
 * Left to the caller, because they are session state or answered with a
 * CONNACK rather than a dropped connection: client identifier contents,
 * topic alias ranges, packet size limits negotiated in CONNECT/CONNACK, and
 * the UTF-8 validity of payloads whose payload format indicator is 1.
 */
#ifndef MQTT_CODEC_H
#define MQTT_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MQTT_V311 4 /* protocol level byte of MQTT 3.1.1 */
#define MQTT_V5 5   /* protocol level byte of MQTT 5.0 */

/* Largest remaining length a 4-byte variable integer can express. */
#define MQTT_MAX_REMAINING 268435455u
/* Fixed header: 1 type byte + up to 4 remaining-length bytes. */
#define MQTT_MAX_FIXED_HEADER 5

enum mqtt_type {
	MQTT_CONNECT = 1,
	MQTT_CONNACK = 2,
	MQTT_PUBLISH = 3,
	MQTT_PUBACK = 4,
	MQTT_PUBREC = 5,
	MQTT_PUBREL = 6,
	MQTT_PUBCOMP = 7,
	MQTT_SUBSCRIBE = 8,
	MQTT_SUBACK = 9,
	MQTT_UNSUBSCRIBE = 10,
	MQTT_UNSUBACK = 11,
	MQTT_PINGREQ = 12,
	MQTT_PINGRESP = 13,
	MQTT_DISCONNECT = 14,
	MQTT_AUTH = 15, /* 5.0 only */
};

/*
 * Each layer's error codes take a range of their own, so a stray code
 * tells where it came from: codec -1xx, transport -2xx, client -3xx,
 * measure -4xx, command line -5xx, link emulator -6xx.
 */
/* Error codes, all negative. */
#define MQTT_ENEEDMORE -101  /* incomplete: feed more bytes, then call again */
#define MQTT_EMALFORMED -102 /* structure does not parse (lengths, trailing) */
#define MQTT_EVARINT -103    /* variable byte integer > 4 bytes or not shortest */
#define MQTT_EUTF8 -104      /* string is not well-formed UTF-8 per spec */
#define MQTT_ETOPIC -105     /* topic name or filter empty, too long, against
                              wildcard rules or bad $share syntax */
#define MQTT_EPROP -106      /* v5 property unknown, duplicated, misplaced,
                              with a forbidden value, or given in 3.1.1 */
#define MQTT_EPKTID -107     /* packet identifier 0 where non-zero required */
#define MQTT_EFLAGS -108     /* fixed-header flags, reserved bits, CONNECT
                              flag combination or subscription options */
#define MQTT_ETOOBIG -109    /* packet exceeds the caller's maximum size */
#define MQTT_ENOBUF -110    /* encoder: output buffer too small */
#define MQTT_EINVAL -111    /* invalid argument: version not 4 or 5, a NULL
                              view with a length, a string > 65535 bytes */
#define MQTT_EQOS -112      /* QoS value 3, or QoS/flag combination invalid */
#define MQTT_EPROTO -113    /* protocol name/level or other rule violated */
#define MQTT_ETYPE -114     /* packet type 0, AUTH in 3.1.1, or a type the
                              decoding side never receives */
#define MQTT_EREASON -115   /* reason/return code not defined for the packet */

/* One line, never NULL. */
const char *mqtt_strerror(int err);

/* A view into a buffer owned by someone else. */
struct mqtt_bytes {
	const uint8_t *data;
	size_t len;
};

/* v5 property identifiers (MQTT 5.0, 2.2.2.2). */
enum mqtt_prop_id {
	MQTT_PROP_PAYLOAD_FORMAT = 0x01,
	MQTT_PROP_MESSAGE_EXPIRY = 0x02,
	MQTT_PROP_CONTENT_TYPE = 0x03,
	MQTT_PROP_RESPONSE_TOPIC = 0x08,
	MQTT_PROP_CORRELATION_DATA = 0x09,
	MQTT_PROP_SUBSCRIPTION_ID = 0x0B,
	MQTT_PROP_SESSION_EXPIRY = 0x11,
	MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,
	MQTT_PROP_SERVER_KEEPALIVE = 0x13,
	MQTT_PROP_AUTH_METHOD = 0x15,
	MQTT_PROP_AUTH_DATA = 0x16,
	MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,
	MQTT_PROP_WILL_DELAY = 0x18,
	MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,
	MQTT_PROP_RESPONSE_INFO = 0x1A,
	MQTT_PROP_SERVER_REFERENCE = 0x1C,
	MQTT_PROP_REASON_STRING = 0x1F,
	MQTT_PROP_RECEIVE_MAX = 0x21,
	MQTT_PROP_TOPIC_ALIAS_MAX = 0x22,
	MQTT_PROP_TOPIC_ALIAS = 0x23,
	MQTT_PROP_MAX_QOS = 0x24,
	MQTT_PROP_RETAIN_AVAILABLE = 0x25,
	MQTT_PROP_USER = 0x26,
	MQTT_PROP_MAX_PACKET_SIZE = 0x27,
	MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
	MQTT_PROP_SUB_ID_AVAILABLE = 0x29,
	MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

/* Bit for property id in struct mqtt_props.present (ids are < 64). */
#define MQTT_PROP_BIT(id) (UINT64_C(1) << (id))

/*
 * v5 properties of one packet. `present` says which fields hold a value.
 * Decoding rejects (MQTT_EPROP) a property that is unknown, not allowed in
 * the packet it appears in, or duplicated where the spec forbids it.
 * User properties and repeated subscription identifiers stay as raw encoded
 * ranges; walk them with mqtt_props_next_user()/mqtt_props_next_sub_id().
 * Decoding sets the MQTT_PROP_USER bit when there is at least one user
 * property.
 *
 * Encoding (start from a zeroed struct) writes, in ascending identifier
 * order, every field whose bit is set in `present`; the two properties that
 * may repeat are written as:
 *  - n_user user properties, taken from `user` when it is not NULL, else
 *    from `raw` (so a decoded block re-encodes as it is); the USER bit itself
 *    is not needed;
 *  - when the SUBSCRIPTION_ID bit is set, max(n_sub_ids, 1) subscription
 *    identifiers, taken from `sub_ids` when it is not NULL, else from `raw`
 *    when n_sub_ids > 1, else `subscription_id`. More than one is allowed
 *    only in PUBLISH.
 * Values the decoder would reject make the encoder fail the same way.
 * In 3.1.1 the struct must be empty (MQTT_EPROP otherwise).
 */
struct mqtt_user_prop {
	struct mqtt_bytes key, value;
};

struct mqtt_props {
	uint64_t present;
	uint8_t payload_format;
	uint32_t message_expiry;
	struct mqtt_bytes content_type;
	struct mqtt_bytes response_topic;
	struct mqtt_bytes correlation_data;
	uint32_t subscription_id; /* the first one; see n_sub_ids */
	uint32_t session_expiry;
	struct mqtt_bytes assigned_client_id;
	uint16_t server_keepalive;
	struct mqtt_bytes auth_method;
	struct mqtt_bytes auth_data;
	uint8_t request_problem_info;
	uint32_t will_delay;
	uint8_t request_response_info;
	struct mqtt_bytes response_info;
	struct mqtt_bytes server_reference;
	struct mqtt_bytes reason_string;
	uint16_t receive_max;
	uint16_t topic_alias_max;
	uint16_t topic_alias;
	uint8_t max_qos;
	uint8_t retain_available;
	uint32_t max_packet_size;
	uint8_t wildcard_sub_available;
	uint8_t sub_id_available;
	uint8_t shared_sub_available;
	/* decode: the property block without its length, for the iterators
	 * below; encode: source of user properties/subscription ids when
	 * `user`/`sub_ids` are NULL */
	struct mqtt_bytes raw;
	uint32_t n_user;    /* number of user properties (decode and encode) */
	uint32_t n_sub_ids; /* number of subscription identifiers (both) */
	/* encode only: n_user user properties and n_sub_ids ids to write */
	const struct mqtt_user_prop *user;
	const uint32_t *sub_ids;
};

/*
 * Iterate user properties (or subscription ids) of a decoded property block.
 * *pos starts at 0. Returns 1 and fills *out while there is one more,
 * 0 at the end (or at the first byte that does not parse, for a block that
 * did not come from the decoder).
 */
int mqtt_props_next_user(const struct mqtt_props *p, size_t *pos,
                         struct mqtt_user_prop *out);
int mqtt_props_next_sub_id(const struct mqtt_props *p, size_t *pos,
                           uint32_t *out);

/*
 * CONNECT. Encoding reads the will_* views and will_props only when
 * will_flag is set (will_qos/will_retain without it are MQTT_EFLAGS), and
 * username/password only when has_username/has_password are set.
 */
struct mqtt_connect {
	uint8_t version; /* MQTT_V311 or MQTT_V5; encode: 0 or the version */
	uint8_t clean_start;    /* clean session (3.1.1) / clean start (5.0) */
	uint16_t keepalive;     /* seconds */
	struct mqtt_bytes client_id;
	uint8_t will_flag, will_qos, will_retain;
	struct mqtt_bytes will_topic, will_payload;
	struct mqtt_props will_props; /* v5 */
	uint8_t has_username, has_password;
	struct mqtt_bytes username, password;
	struct mqtt_props props; /* v5 */
};

struct mqtt_connack {
	uint8_t session_present;
	uint8_t reason; /* 3.1.1 return code or 5.0 reason code */
	struct mqtt_props props;
};

struct mqtt_publish {
	uint8_t dup, qos, retain;
	struct mqtt_bytes topic; /* may be empty in v5 with a topic alias */
	uint16_t packet_id;      /* 0 for QoS 0 */
	struct mqtt_props props;
	struct mqtt_bytes payload;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
struct mqtt_ack {
	uint16_t packet_id;
	uint8_t reason; /* 0 when absent (v5 short form, or 3.1.1) */
	struct mqtt_props props;
};

/*
 * Subscription options byte (v5); in 3.1.1 only qos is used: decoding leaves
 * the rest 0 and encoding ignores it, so one scenario works in both versions.
 */
struct mqtt_sub_opts {
	uint8_t qos;
	uint8_t no_local, retain_as_published, retain_handling;
};

struct mqtt_topic_filter {
	struct mqtt_bytes filter;
	struct mqtt_sub_opts opts;
};

/*
 * SUBSCRIBE/UNSUBSCRIBE: decode leaves the payload as a raw range that has
 * already been validated and counted in n_filters; walk it with
 * mqtt_subscribe_next(). Encoding takes the array in `filters`/`n_filters`
 * (UNSUBSCRIBE ignores opts), or, when `filters` is NULL, copies
 * `raw_payload` after validating it (its count must equal n_filters).
 * In v5 a filter "$share/NAME/FILTER" must have a non-empty NAME without
 * wildcards and a non-empty FILTER, and must not set no_local.
 */
struct mqtt_subscribe {
	uint16_t packet_id;
	struct mqtt_props props;
	struct mqtt_bytes raw_payload; /* decode; encode when filters is NULL */
	size_t n_filters;
	const struct mqtt_topic_filter *filters; /* encode */
};

/*
 * SUBACK/UNSUBACK: one reason code (granted QoS) per filter, at least one.
 * A 3.1.1 UNSUBACK has none: decoding leaves `reasons` empty and encoding
 * ignores it.
 */
struct mqtt_suback {
	uint16_t packet_id;
	struct mqtt_props props;
	struct mqtt_bytes reasons; /* decode: view; encode: codes to write */
};

struct mqtt_disconnect {
	uint8_t reason;
	struct mqtt_props props;
};

struct mqtt_auth {
	uint8_t reason;
	struct mqtt_props props;
};

/*
 * One packet. Encoding ignores `flags` (it derives them from the type and,
 * for PUBLISH, from dup/qos/retain); decoding sets both fields.
 */
struct mqtt_packet {
	uint8_t type;  /* enum mqtt_type */
	uint8_t flags; /* low nibble of the first byte */
	union {
		struct mqtt_connect connect;
		struct mqtt_connack connack;
		struct mqtt_publish publish;
		struct mqtt_ack ack; /* PUBACK, PUBREC, PUBREL, PUBCOMP */
		struct mqtt_subscribe subscribe; /* SUBSCRIBE, UNSUBSCRIBE */
		struct mqtt_suback suback;       /* SUBACK, UNSUBACK */
		struct mqtt_disconnect disconnect;
		struct mqtt_auth auth;
	} u;
};

/*
 * Frame: find where the packet at buf starts and ends without decoding its
 * body. On success returns the total packet length (fixed header + remaining
 * length) and sets *type and *header_len; MQTT_ENEEDMORE when the fixed
 * header or the body is not complete yet; MQTT_EVARINT; MQTT_ETOOBIG when the
 * total exceeds max_size (0: no limit beyond the spec's), reported as soon
 * as the fixed header is complete. type and header_len may be NULL. It does
 * not look at the type: mqtt_decode() does.
 */
ssize_t mqtt_frame(const uint8_t *buf, size_t len, size_t max_size,
                   uint8_t *type, size_t *header_len);

/*
 * The total length of the packet at buf (fixed header + remaining length)
 * as soon as its fixed header is complete, whether or not the rest has
 * arrived: > 0; 0 while the fixed header itself is incomplete; or
 * MQTT_EVARINT. Lets a reader size a buffer for a packet that spans reads.
 */
ssize_t mqtt_frame_len(const uint8_t *buf, size_t len);

/*
 * Decode one whole packet at buf for protocol `version` (MQTT_V311 or
 * MQTT_V5; for CONNECT the packet's own level is used and stored). Returns
 * bytes consumed, MQTT_ENEEDMORE, or an error. `is_server` says which side
 * decodes: it picks the direction rules (a client never receives CONNECT,
 * a server never receives CONNACK, a 3.1.1 client never receives
 * DISCONNECT: MQTT_ETYPE; a server refuses subscription ids in PUBLISH and a
 * client refuses a session expiry in DISCONNECT: MQTT_EPROP).
 * Any other `version` is MQTT_EINVAL. CONNECT with authentication data but
 * no method, and AUTH other than the empty form without a method, are
 * MQTT_EPROP. On error the contents of *out are
 * unspecified, except that a CONNECT refused with MQTT_EPROTO for its
 * protocol level leaves that level in out->u.connect.version, so a server
 * can answer with the right CONNACK. Bytes after the packet (the next one)
 * are not looked at.
 */
ssize_t mqtt_decode(const uint8_t *buf, size_t len, uint8_t version,
                    int is_server, struct mqtt_packet *out);

/* Iterate filters of a decoded SUBSCRIBE/UNSUBSCRIBE; *pos starts at 0. */
int mqtt_subscribe_next(const struct mqtt_subscribe *s, uint8_t version,
                        uint8_t type, size_t *pos,
                        struct mqtt_topic_filter *out);

/*
 * Encode: returns bytes written, MQTT_ENOBUF if cap is too small, MQTT_EINVAL
 * (or a more specific code) for arguments that would make a packet the spec
 * forbids (bad topic, packet id 0 with QoS > 0, ...).
 * mqtt_encoded_size() returns the number of bytes the same call would write,
 * or a negative error.
 */
ssize_t mqtt_encode(uint8_t *buf, size_t cap, uint8_t version,
                    const struct mqtt_packet *p);
ssize_t mqtt_encoded_size(uint8_t version, const struct mqtt_packet *p);

/*
 * Fast path: encode a PUBLISH with no v5 properties (the client engine uses
 * it for every such publish, after mqtt_encoded_size() has validated it).
 * Same return convention as mqtt_encode(). It checks QoS, DUP, packet id and
 * lengths but does not scan the topic: validate it once with
 * mqtt_valid_topic_name() before the send loop.
 */
ssize_t mqtt_encode_publish_simple(uint8_t *buf, size_t cap, uint8_t version,
                                   const uint8_t *topic, size_t topic_len,
                                   uint8_t qos, uint8_t retain, uint8_t dup,
                                   uint16_t packet_id, const uint8_t *payload,
                                   size_t payload_len);

/*
 * Validators, also used by the tools on user input. Return 0 or error.
 * mqtt_valid_utf8: well-formed, no overlong forms, no surrogates, no U+0000.
 * The topic validators also check UTF-8 (MQTT_EUTF8), and give MQTT_ETOPIC
 * for an empty or longer than 65535-byte topic, for wildcards in a name,
 * and for '#' not alone in the last level or '+' not alone in its level in
 * a filter.
 */
int mqtt_valid_utf8(const uint8_t *s, size_t len);      /* MQTT_EUTF8 */
int mqtt_valid_topic_name(const uint8_t *s, size_t len);   /* MQTT_ETOPIC */
int mqtt_valid_topic_filter(const uint8_t *s, size_t len); /* MQTT_ETOPIC */
/* 0 if `reason` is a valid reason/return code of packet `type` in
 * `version`, else MQTT_EREASON (or MQTT_EINVAL for a bad version). */
int mqtt_valid_reason(uint8_t version, uint8_t type, uint8_t reason);
/*
 * 1 if topic name matches filter (with + and #, $-topics rule), else 0.
 * A filter '#' or '+' in its first level does not match a topic starting
 * with '$'. Shared subscriptions: pass the filter without "$share/NAME/".
 */
int mqtt_topic_matches(const uint8_t *filter, size_t flen,
                       const uint8_t *topic, size_t tlen);

#endif /* MQTT_CODEC_H */
