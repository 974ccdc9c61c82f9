/*
 * session.c: the MQTT client session as pure logic. See session.h.
 *
 * Entry points are the sess_* calls. Those that hand input or time in
 * (sess_input, sess_on_time) may run the owner's callbacks, which may do
 * anything to the session, so after each one the session checks alive():
 * the owner did not halt it and no failure was kept. Those the application
 * calls (publish, subscribe, disconnect) never call back.
 *
 * Receiving: input is framed and decoded in place in the owner's buffer,
 * so one read brings as many packets as are waiting. Only a packet that
 * spans reads is copied to the session's own buffer (s->in), allocated at
 * its exact size once its fixed header is complete (mqtt_frame_len), and
 * completed from the following reads, or read into directly
 * (sess_rx_buffer) when what is missing is at least the owner's usual read
 * size, 64 KiB. An idle session holds no input buffer.
 *
 * Receive time: `now` handed to on_message and on_publish_done is the
 * read's time, taken again after any callback when the owner gave a clock
 * (s->ncb counts callbacks): a callback may publish, stamping t_sent from
 * that clock, and a later ack from the same read must not look older.
 *
 * Sending: packets are encoded into s->out; the owner takes them with
 * sess_pending/sess_sent. The buffer is released when it drains, unless it
 * is small. The end offsets of queued PUBLISH packets wait in a small ring
 * (s->pw) so that sess_sent can count the publishes the transport took
 * whole (pub_written): each message once, at the first time all its bytes
 * were taken, whether by its first send or by a resend after a reconnect
 * (a persistent session's message whose first send a close cut short);
 * an inflight entry remembers that its message was written.
 *
 * Inflight: a table indexed by packet id & (cap - 1). Ids are chosen so
 * that their slot is free, which makes lookups O(1); growing the table by
 * doubling never makes two ids collide, because ids that differ in the low
 * bits of the old mask also differ under the wider one.
 */
#include "mqtt/session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEVER INT64_MAX   /* no deadline (evloop.h's EV_NEVER) */
#define NS_PER_SEC INT64_C(1000000000)
#define OUT_KEEP 1024     /* keep a drained output buffer up to this size */
#define PW_KEEP 8         /* ... and a drained publish ring this long */
#define INF_MIN 8         /* first inflight table size */
#define DIRECT_READ 65536 /* read the rest in place when this much is
                             missing: the owner's read size (net/conn.c) */

enum inf_kind {
	INF_FREE = 0,
	INF_PUB,    /* PUBLISH sent, awaiting PUBACK (QoS 1) or PUBREC (QoS 2) */
	INF_PUBREL, /* PUBREL sent, awaiting PUBCOMP */
	INF_SUB,    /* SUBSCRIBE sent, awaiting SUBACK */
	INF_UNSUB,  /* UNSUBSCRIBE sent, awaiting UNSUBACK */
};

struct inflight {
	uint16_t id; /* 0: free */
	uint8_t kind;
	uint8_t qos;
	uint32_t seq;    /* send order, for resending in order */
	int64_t t_sent;  /* sess_publish() time */
	uint8_t *pkt;    /* encoded PUBLISH kept for resending, or NULL */
	uint32_t pkt_len;
	uint8_t written; /* INF_PUB: all its bytes were taken once */
};

/* Packet ids of QoS 2 messages received and awaiting PUBREL: open
 * addressing with linear probing, key 0 = empty (ids are never 0). */
struct idset {
	uint16_t *slots;
	uint32_t cap, n;
};

/* End offsets (in s->out_total terms) of PUBLISH packets not yet sent,
 * with their packet ids (0 for QoS 0). */
struct pw_entry {
	uint64_t end;
	uint16_t id;
};
struct pubring {
	struct pw_entry *ends;
	uint32_t cap, head, n;
};

/* Ordered to leave no padding: 10,000 of these live in one process. */
struct mqtt_session {
	const struct sess_handler *h;
	void *owner;
	const char *peer; /* for messages; the owner's */
	struct client_config cfg;
	char *client_id;
	char *errmsg;      /* message of the kept failure */

	uint8_t *out;
	size_t out_off, out_len, out_cap;
	uint64_t out_total;  /* bytes ever queued in out, for pw's offsets */
	uint64_t sent_total; /* of those, bytes the transport took */
	struct pubring pw;
	/* One packet that spans reads: in_len bytes of it held; in_need its
	 * total length, 0 while its fixed header is incomplete; in_cap is
	 * in_need, or MQTT_MAX_FIXED_HEADER before it is known. */
	uint8_t *in;
	size_t in_len, in_need, in_cap;
	int64_t rx_now;    /* receive time of the bytes being parsed */
	int64_t now;       /* the time of the call being handled */
	uint32_t ncb;      /* owner callbacks run (wraps) */
	uint32_t rx_ncb;   /* ncb when rx_now was read */

	struct inflight *inf;
	struct idset q2;
	uint32_t inf_cap, inf_n, n_pub;
	uint32_t seq;
	uint32_t broker_max_packet;
	int err;
	uint16_t next_id;
	uint16_t window;
	uint16_t keepalive;
	uint16_t broker_rmax;
	uint8_t max_qos;
	uint8_t state;         /* enum client_state */
	uint8_t halted;        /* the owner left inside a callback */
	uint8_t failed;        /* a failure is kept: err, errmsg */
	uint8_t want_writable; /* publish said EWINDOW/EBUSY: owed */
	uint8_t persistent;    /* keep inflight across connections */

	int64_t t_start, t_connect, t_connack;
	int64_t last_send, last_recv, ping_sent, linger_until;

	struct client_stats st;
};

/* ---- names ---- */

const char *client_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case CLIENT_EINVAL: return "invalid argument";
	case CLIENT_ENOMEM: return "out of memory";
	case CLIENT_ESTATE: return "not allowed in the client's state";
	case CLIENT_EWINDOW: return "inflight window full";
	case CLIENT_EBUSY: return "output buffer full";
	case CLIENT_ETOOBIG: return "packet larger than the broker accepts";
	case CLIENT_EQOS: return "QoS not supported by the broker";
	case CLIENT_ECONNECT: return "cannot connect";
	case CLIENT_ETIMEOUT: return "timed out";
	case CLIENT_ETLS: return "TLS failure";
	case CLIENT_EIO: return "I/O error";
	case CLIENT_ECLOSED: return "connection closed by the broker";
	case CLIENT_EREFUSED: return "connection refused by the broker";
	case CLIENT_EPROTO: return "protocol error by the broker";
	case CLIENT_EDISCONNECTED: return "disconnected by the broker";
	case CLIENT_EQUIC: return "QUIC failure";
	}
	return "unknown client error";
}

const char *client_reason_str(uint8_t version, uint8_t code)
{
	if (version == MQTT_V311) {
		switch (code) {
		case 0: return "accepted";
		case 1: return "unacceptable protocol version";
		case 2: return "identifier rejected";
		case 3: return "server unavailable";
		case 4: return "bad user name or password";
		case 5: return "not authorized";
		case 0x80: return "failure";
		}
		return "unknown return code";
	}
	switch (code) {
	case 0x00: return "success";
	case 0x01: return "granted QoS 1";
	case 0x02: return "granted QoS 2";
	case 0x04: return "disconnect with will message";
	case 0x10: return "no matching subscribers";
	case 0x11: return "no subscription existed";
	case 0x18: return "continue authentication";
	case 0x19: return "re-authenticate";
	case 0x80: return "unspecified error";
	case 0x81: return "malformed packet";
	case 0x82: return "protocol error";
	case 0x83: return "implementation specific error";
	case 0x84: return "unsupported protocol version";
	case 0x85: return "client identifier not valid";
	case 0x86: return "bad user name or password";
	case 0x87: return "not authorized";
	case 0x88: return "server unavailable";
	case 0x89: return "server busy";
	case 0x8A: return "banned";
	case 0x8B: return "server shutting down";
	case 0x8C: return "bad authentication method";
	case 0x8D: return "keep alive timeout";
	case 0x8E: return "session taken over";
	case 0x8F: return "topic filter invalid";
	case 0x90: return "topic name invalid";
	case 0x91: return "packet identifier in use";
	case 0x92: return "packet identifier not found";
	case 0x93: return "receive maximum exceeded";
	case 0x94: return "topic alias invalid";
	case 0x95: return "packet too large";
	case 0x96: return "message rate too high";
	case 0x97: return "quota exceeded";
	case 0x98: return "administrative action";
	case 0x99: return "payload format invalid";
	case 0x9A: return "retain not supported";
	case 0x9B: return "QoS not supported";
	case 0x9C: return "use another server";
	case 0x9D: return "server moved";
	case 0x9E: return "shared subscriptions not supported";
	case 0x9F: return "connection rate exceeded";
	case 0xA0: return "maximum connect time";
	case 0xA1: return "subscription identifiers not supported";
	case 0xA2: return "wildcard subscriptions not supported";
	}
	return "unknown reason code";
}

const char *client_state_name(enum client_state s)
{
	switch (s) {
	case CLIENT_IDLE: return "idle";
	case CLIENT_CONNECTING: return "connecting";
	case CLIENT_CONNECT_SENT: return "connect-sent";
	case CLIENT_CONNECTED: return "connected";
	case CLIENT_DISCONNECTING: return "disconnecting";
	case CLIENT_CLOSED: return "closed";
	}
	return "unknown";
}

void client_config_init(struct client_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->version = MQTT_V311;
	cfg->client_id = "";
	cfg->keepalive = 60;
	cfg->clean_start = 1;
	cfg->inflight_window = 20;
	cfg->connect_timeout_ns = 10 * NS_PER_SEC;
	cfg->linger_ns = 2 * NS_PER_SEC;
	cfg->max_outbuf = 1u << 20;
	cfg->max_packet_size = CLIENT_MAX_PACKET_DEFAULT;
}

/* ---- small helpers ---- */

static const char *peer(const struct mqtt_session *s)
{
	return s->peer ? s->peer : "the broker";
}

static int alive(const struct mqtt_session *s)
{
	return !s->halted && !s->failed;
}

static size_t out_pending(const struct mqtt_session *s)
{
	return s->out_len - s->out_off;
}

static int64_t ns_of_s(uint32_t sec)
{
	return (int64_t)sec * NS_PER_SEC;
}

/* Before an owner callback: it may do anything to the session, and it
 * takes time (ncb makes the receive time fresh). */
static void cb_enter(struct mqtt_session *s)
{
	s->ncb++;
}

/* The receive time for a packet being handled: read at the last read, or
 * again if a callback ran since (see "Receive time" above). */
static int64_t rx_time(struct mqtt_session *s)
{
	if (s->ncb != s->rx_ncb) {
		if (s->h->clock)
			s->rx_now = s->h->clock(s->owner);
		s->rx_ncb = s->ncb;
	}
	return s->rx_now;
}

/*
 * A failure: keep the first one of the connection, with a one-line
 * message. The caller returns; the owner closes the connection.
 */
static void fail(struct mqtt_session *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct mqtt_session *s, int err, const char *fmt, ...)
{
	char line[400];
	va_list ap;
	char *m;

	if (s->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	s->failed = 1;
	s->err = err;
	m = strdup(line);
	if (m) { /* out of memory: the code still tells */
		free(s->errmsg);
		s->errmsg = m;
	}
}

/* The result a public entry point returns after its work. */
static int outcome(const struct mqtt_session *s)
{
	if (s->failed)
		return s->err;
	return s->halted ? SESS_STOPPED : 0;
}

static void in_release(struct mqtt_session *s)
{
	free(s->in);
	s->in = NULL;
	s->in_len = s->in_need = s->in_cap = 0;
}

/* ---- publish end offsets ---- */

static int pw_push(struct mqtt_session *s, uint64_t end, uint16_t id)
{
	struct pubring *r = &s->pw;
	uint32_t i;

	if (r->n == r->cap) {
		uint32_t cap = r->cap ? r->cap * 2 : PW_KEEP;
		struct pw_entry *e = malloc(cap * sizeof(*e));

		if (!e)
			return CLIENT_ENOMEM;
		for (i = 0; i < r->n; i++)
			e[i] = r->ends[(r->head + i) % r->cap];
		free(r->ends);
		r->ends = e;
		r->cap = cap;
		r->head = 0;
	}
	i = (r->head + r->n) & (r->cap - 1); /* cap: a power of 2 */
	r->ends[i].end = end;
	r->ends[i].id = id;
	r->n++;
	return 0;
}

/* Forget the newest entry (a publish that was queued, then taken back). */
static void pw_unpush(struct mqtt_session *s)
{
	if (s->pw.n)
		s->pw.n--;
}

static void pw_clear(struct mqtt_session *s)
{
	free(s->pw.ends);
	memset(&s->pw, 0, sizeof(s->pw));
}

static struct inflight *inf_find(struct mqtt_session *s, uint16_t id);

/* Count the publishes whose last byte is now sent, each message once. */
static void pw_sent(struct mqtt_session *s)
{
	struct pubring *r = &s->pw;

	while (r->n && r->ends[r->head].end <= s->sent_total) {
		struct inflight *e = inf_find(s, r->ends[r->head].id);

		/* an entry cannot be acked before it is written: found */
		if (e == NULL || e->kind != INF_PUB) {
			s->st.pub_written++;
		} else if (!e->written) {
			e->written = 1;
			s->st.pub_written++;
		}
		r->head = (r->head + 1) & (r->cap - 1); /* cap: a power of 2 */
		r->n--;
	}
	if (r->n == 0) {
		/* drained: a small ring stays, as a small output buffer does
		 * (a publisher would otherwise allocate it per message) */
		r->head = 0;
		if (r->cap > PW_KEEP)
			pw_clear(s);
	}
}


/* ---- QoS 2 receive id set ---- */

static uint32_t idset_hash(uint16_t id, uint32_t cap)
{
	return (uint32_t)(id * 40503u) & (cap - 1);
}

static int idset_has(const struct idset *s, uint16_t id)
{
	uint32_t i;

	if (!s->cap)
		return 0;
	for (i = idset_hash(id, s->cap); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == id)
			return 1;
	return 0;
}

static int idset_add(struct idset *s, uint16_t id)
{
	uint32_t i;

	if ((s->n + 1) * 2 > s->cap) { /* keep the load under 1/2 */
		uint32_t cap = s->cap ? s->cap * 2 : 16, j;
		uint16_t *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			return CLIENT_ENOMEM;
		for (j = 0; j < s->cap; j++) {
			if (!s->slots[j])
				continue;
			for (i = idset_hash(s->slots[j], cap); slots[i];
			     i = (i + 1) & (cap - 1))
				;
			slots[i] = s->slots[j];
		}
		free(s->slots);
		s->slots = slots;
		s->cap = cap;
	}
	for (i = idset_hash(id, s->cap); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == id)
			return 0;
	s->slots[i] = id;
	s->n++;
	return 0;
}

static void idset_clear(struct idset *s)
{
	free(s->slots);
	s->slots = NULL;
	s->cap = s->n = 0;
}

static void idset_del(struct idset *s, uint16_t id)
{
	uint32_t i, j, mask = s->cap - 1;

	if (!s->cap)
		return;
	for (i = idset_hash(id, s->cap); s->slots[i]; i = (i + 1) & mask)
		if (s->slots[i] == id)
			break;
	if (!s->slots[i])
		return;
	/* Backward-shift deletion keeps every probe chain unbroken. */
	j = i;
	for (;;) {
		uint32_t k;

		s->slots[i] = 0;
		for (;;) {
			j = (j + 1) & mask;
			if (!s->slots[j])
				goto done;
			k = idset_hash(s->slots[j], s->cap);
			/* move slots[j] to i unless its home k lies in (i, j] */
			if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
				continue;
			break;
		}
		s->slots[i] = s->slots[j];
		i = j;
	}
done:
	if (--s->n == 0)
		idset_clear(s);
}

/* ---- inflight table ---- */
static struct inflight *inf_find(struct mqtt_session *s, uint16_t id)
{
	struct inflight *e;

	if (!s->inf_cap || id == 0)
		return NULL;
	e = &s->inf[id & (s->inf_cap - 1)];
	return e->id == id ? e : NULL;
}

static int inf_grow(struct mqtt_session *s)
{
	uint32_t cap = s->inf_cap ? s->inf_cap * 2 : INF_MIN, i;
	struct inflight *t;

	if (cap > 65536)
		return CLIENT_EWINDOW;
	t = calloc(cap, sizeof(*t));
	if (!t)
		return CLIENT_ENOMEM;
	for (i = 0; i < s->inf_cap; i++)
		if (s->inf[i].id)
			t[s->inf[i].id & (cap - 1)] = s->inf[i];
	free(s->inf);
	s->inf = t;
	s->inf_cap = cap;
	return 0;
}

/* Take a free packet id and its slot. Returns the entry or NULL with *err. */
static struct inflight *inf_alloc(struct mqtt_session *s, int *err)
{
	uint32_t tries;

	if (s->inf_n >= 65535) {
		*err = CLIENT_EWINDOW;
		return NULL;
	}
	if (s->inf_n == s->inf_cap && (*err = inf_grow(s)) < 0)
		return NULL;
	/* A free slot exists; 2 * cap consecutive ids cover every slot even
	 * across the wrap that skips id 0. */
	for (tries = 0; tries < 2 * s->inf_cap + 2; tries++) {
		uint16_t id = s->next_id;
		struct inflight *e;

		s->next_id = (uint16_t)(s->next_id + 1);
		if (s->next_id == 0)
			s->next_id = 1;
		if (id == 0)
			continue;
		e = &s->inf[id & (s->inf_cap - 1)];
		if (e->id == 0) {
			memset(e, 0, sizeof(*e));
			e->id = id;
			e->seq = s->seq++;
			s->inf_n++;
			return e;
		}
	}
	*err = CLIENT_EWINDOW; /* not reached */
	return NULL;
}

static void inf_release(struct mqtt_session *s, struct inflight *e)
{
	if (e->kind == INF_PUB || e->kind == INF_PUBREL)
		s->n_pub--;
	free(e->pkt);
	memset(e, 0, sizeof(*e));
	s->inf_n--;
	if (s->inf_n == 0) {
		free(s->inf);
		s->inf = NULL;
		s->inf_cap = 0;
	}
}

/* Drop entries: SUB/UNSUB always, publishes too when `all`. Returns the
 * number of publish flows dropped. */
static uint32_t inf_drop(struct mqtt_session *s, int all)
{
	uint32_t i, dropped = 0;

	for (i = 0; i < s->inf_cap && s->inf; i++) {
		struct inflight *e = &s->inf[i];

		if (!e->id)
			continue;
		if (e->kind == INF_SUB || e->kind == INF_UNSUB || all) {
			if (e->kind == INF_PUB || e->kind == INF_PUBREL)
				dropped++;
			inf_release(s, e);
		}
	}
	return dropped;
}

/* ---- output ---- */

static int out_reserve(struct mqtt_session *s, size_t n)
{
	size_t need, cap;
	uint8_t *b;

	if (s->out_off && s->out_off == s->out_len)
		s->out_off = s->out_len = 0;
	if (s->out_cap - s->out_len >= n)
		return 0;
	if (s->out_off) { /* slide the unsent tail to the front first */
		memmove(s->out, s->out + s->out_off, out_pending(s));
		s->out_len -= s->out_off;
		s->out_off = 0;
		if (s->out_cap - s->out_len >= n)
			return 0;
	}
	need = s->out_len + n;
	cap = s->out_cap ? s->out_cap : 128;
	while (cap < need)
		cap *= 2;
	b = realloc(s->out, cap);
	if (!b)
		return CLIENT_ENOMEM;
	s->out = b;
	s->out_cap = cap;
	return 0;
}

static void out_note(struct mqtt_session *s, const uint8_t *pkt, size_t len)
{
	uint8_t type = pkt[0] >> 4;

	s->st.bytes_out += len;
	s->out_total += len;
	s->st.pkts_out++;
	s->st.out_by_type[type]++;
	s->last_send = s->now;
}

/* Encode p at the end of the output buffer. Returns its length or error. */
/*
 * Encode p, whose encoded size `size` the caller has already computed (and
 * so validated), at the end of the output buffer. A PUBLISH without
 * properties takes the codec's fast path. Bytes queued or CLIENT_E*.
 */
static ssize_t queue_sized(struct mqtt_session *s, const struct mqtt_packet *p,
                           size_t size)
{
	const struct mqtt_publish *pub = &p->u.publish;
	ssize_t n;

	if (out_reserve(s, size) < 0)
		return CLIENT_ENOMEM;
	if (p->type == MQTT_PUBLISH && pub->props.present == 0 &&
	    pub->props.n_user == 0 && pub->props.n_sub_ids == 0)
		n = mqtt_encode_publish_simple(s->out + s->out_len,
		                               s->out_cap - s->out_len,
		                               s->cfg.version, pub->topic.data,
		                               pub->topic.len, pub->qos,
		                               pub->retain, pub->dup,
		                               pub->packet_id, pub->payload.data,
		                               pub->payload.len);
	else
		n = mqtt_encode(s->out + s->out_len, s->out_cap - s->out_len,
		                s->cfg.version, p);
	if (n < 0 || (size_t)n != size)
		return CLIENT_EINVAL;
	out_note(s, s->out + s->out_len, (size_t)n);
	s->out_len += (size_t)n;
	return n;
}

static ssize_t queue_packet(struct mqtt_session *s, const struct mqtt_packet *p)
{
	ssize_t n = mqtt_encoded_size(s->cfg.version, p);

	if (n < 0)
		return n == MQTT_ETOOBIG ? CLIENT_ETOOBIG : CLIENT_EINVAL;
	return queue_sized(s, p, (size_t)n);
}

static int queue_raw(struct mqtt_session *s, const uint8_t *pkt, size_t len)
{
	if (out_reserve(s, len) < 0)
		return CLIENT_ENOMEM;
	memcpy(s->out + s->out_len, pkt, len);
	out_note(s, pkt, len);
	s->out_len += len;
	return 0;
}

/* Queue PUBACK/PUBREC/PUBREL/PUBCOMP; reason is written in v5 only. */
static int queue_ack(struct mqtt_session *s, uint8_t type, uint16_t id,
                     uint8_t reason)
{
	struct mqtt_packet p;
	ssize_t r;

	memset(&p, 0, sizeof(p));
	p.type = type;
	p.u.ack.packet_id = id;
	p.u.ack.reason = s->cfg.version == MQTT_V5 ? reason : 0;
	r = queue_packet(s, &p);
	return r < 0 ? (int)r : 0;
}

/* ---- connecting ---- */

/* Queue CONNECT. 0, or -1 after fail(). */
static int send_connect(struct mqtt_session *s)
{
	struct mqtt_packet p;
	struct mqtt_connect *cn = &p.u.connect;
	ssize_t r;

	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNECT;
	cn->version = s->cfg.version;
	cn->clean_start = s->cfg.clean_start ? 1 : 0;
	cn->keepalive = s->cfg.keepalive;
	cn->client_id.data = (const uint8_t *)s->client_id;
	cn->client_id.len = strlen(s->client_id);
	if (s->cfg.username) {
		cn->has_username = 1;
		cn->username.data = (const uint8_t *)s->cfg.username;
		cn->username.len = strlen(s->cfg.username);
	}
	if (s->cfg.password) {
		cn->has_password = 1;
		cn->password.data = (const uint8_t *)s->cfg.password;
		cn->password.len = s->cfg.password_len
		                           ? s->cfg.password_len
		                           : strlen(s->cfg.password);
	}
	if (s->cfg.version == MQTT_V5) {
		struct mqtt_props *pr = &cn->props;

		if (s->cfg.session_expiry) {
			pr->present |= MQTT_PROP_BIT(MQTT_PROP_SESSION_EXPIRY);
			pr->session_expiry = s->cfg.session_expiry;
		}
		if (s->cfg.receive_max) {
			pr->present |= MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAX);
			pr->receive_max = s->cfg.receive_max;
		}
		/* The broker must not send more (MQTT 5.0 3.1.2.11.4); 0 is
		 * the spec's limit, said by leaving the property out. */
		if (s->cfg.max_packet_size) {
			pr->present |= MQTT_PROP_BIT(MQTT_PROP_MAX_PACKET_SIZE);
			pr->max_packet_size = s->cfg.max_packet_size;
		}
		/* Topic Alias Maximum left out means 0: no aliases. */
	}
	r = queue_packet(s, &p);
	if (r < 0) {
		fail(s, r == CLIENT_ENOMEM ? CLIENT_ENOMEM : CLIENT_EINVAL,
		     "MQTT connect to %s: cannot encode CONNECT (check the "
		     "client id, user name and password)", peer(s));
		return -1;
	}
	s->state = CLIENT_CONNECT_SENT;
	return 0;
}

/* ---- receiving ---- */

/* The largest packet we accept: cfg.max_packet_size, 0 the spec's. */
static size_t max_in(const struct mqtt_session *s)
{
	return s->cfg.max_packet_size
	               ? s->cfg.max_packet_size
	               : MQTT_MAX_FIXED_HEADER + (size_t)MQTT_MAX_REMAINING;
}

/* 1 if a packet of `total` bytes is within our limit; else fail() and 0. */
static int size_ok(struct mqtt_session *s, size_t total)
{
	if (total <= max_in(s))
		return 1;
	fail(s, CLIENT_EPROTO,
	     "broker %s sent a packet of %zu bytes, over our maximum packet "
	     "size of %zu bytes (raise the client's max_packet_size)", peer(s),
	     total, max_in(s));
	return 0;
}
static void deliver_connack(struct mqtt_session *s,
                            const struct mqtt_connack *ca)
{
	struct sess_connack_info info;
	const struct mqtt_props *pr = &ca->props;
	uint32_t resent = 0, dropped = 0;

	if (ca->reason != 0) {
		if (s->cfg.version == MQTT_V5 &&
		    (pr->present & MQTT_PROP_BIT(MQTT_PROP_REASON_STRING)))
			fail(s, CLIENT_EREFUSED,
			     "MQTT connect to %s refused: %s (0x%02x): %.*s",
			     peer(s), client_reason_str(s->cfg.version, ca->reason),
			     ca->reason, (int)pr->reason_string.len,
			     (const char *)pr->reason_string.data);
		else
			fail(s, CLIENT_EREFUSED,
			     "MQTT connect to %s refused: %s (0x%02x)", peer(s),
			     client_reason_str(s->cfg.version, ca->reason),
			     ca->reason);
		return;
	}
	s->t_connack = rx_time(s);
	s->keepalive = s->cfg.keepalive;
	s->max_qos = 2;
	s->broker_rmax = 65535;
	s->broker_max_packet = 0;
	if (s->cfg.version == MQTT_V5) {
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAX))
			s->broker_rmax = pr->receive_max;
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_MAX_QOS))
			s->max_qos = pr->max_qos;
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_MAX_PACKET_SIZE))
			s->broker_max_packet = pr->max_packet_size;
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_SERVER_KEEPALIVE))
			s->keepalive = pr->server_keepalive;
	}
	s->window = s->cfg.inflight_window;
	if (s->window > s->broker_rmax)
		s->window = s->broker_rmax;
	if (s->window == 0)
		s->window = 1;
	s->state = CLIENT_CONNECTED;
	s->st.connects++;

	/* Session state: without a session on the broker's side ours is
	 * void (MQTT 3.2.2-4 / 5.0 3.2.2.1.1); with one, resend what was not
	 * acknowledged, in the original order, PUBLISH with DUP set. */
	if (!ca->session_present) {
		dropped = inf_drop(s, 1);
		s->st.dropped += dropped;
		idset_clear(&s->q2);
	} else if (s->inf_n) {
		struct inflight **order = malloc(s->inf_n * sizeof(*order));
		uint32_t i, n = 0, a, b;

		if (!order) {
			fail(s, CLIENT_ENOMEM, "out of memory");
			return;
		}
		for (i = 0; i < s->inf_cap; i++)
			if (s->inf[i].id)
				order[n++] = &s->inf[i];
		/* insertion sort by seq: the table is small */
		for (a = 1; a < n; a++)
			for (b = a; b > 0 && order[b - 1]->seq > order[b]->seq;
			     b--) {
				struct inflight *t = order[b];

				order[b] = order[b - 1];
				order[b - 1] = t;
			}
		for (i = 0; i < n; i++) {
			struct inflight *e = order[i];
			int r = 0;

			if (e->kind == INF_PUB && e->pkt) {
				e->pkt[0] |= 0x08; /* DUP */
				/* a message the last connection never wrote
				 * whole counts as written with this send */
				if (!e->written)
					r = pw_push(s, s->out_total + e->pkt_len,
					            e->id);
				if (r == 0)
					r = queue_raw(s, e->pkt, e->pkt_len);
			} else if (e->kind == INF_PUBREL) {
				r = queue_ack(s, MQTT_PUBREL, e->id, 0);
			}
			if (r < 0) {
				free(order);
				fail(s, CLIENT_ENOMEM, "out of memory");
				return;
			}
			resent++;
		}
		free(order);
		s->st.resent += resent;
	}

	if (!s->h->on_connack)
		return;
	memset(&info, 0, sizeof(info));
	info.t_connect_queued = s->t_connect;
	info.t_connack = s->t_connack;
	info.session_present = ca->session_present;
	info.max_qos = s->max_qos;
	info.receive_max = s->broker_rmax;
	info.keepalive = s->keepalive;
	info.window = s->window;
	info.max_packet_size = s->broker_max_packet;
	info.resent = resent;
	info.dropped = dropped;
	info.connack = ca;
	cb_enter(s);
	s->h->on_connack(s->owner, &info);
}

static void handle_publish(struct mqtt_session *s, const struct mqtt_publish *pb,
                           int64_t now)
{
	int r = 0;

	/* We never allow topic aliases (our CONNECT leaves Topic Alias
	 * Maximum out, which means 0), so any alias is a protocol error
	 * (MQTT 5.0 3.3.2.3.4), with or without a topic name. */
	if (pb->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)) {
		fail(s, CLIENT_EPROTO,
		     "broker %s sent a PUBLISH with Topic Alias %u, but we "
		     "allow no topic aliases (Topic Alias Maximum 0)", peer(s),
		     (unsigned)pb->props.topic_alias);
		return;
	}
	if (pb->topic.len == 0) {
		fail(s, CLIENT_EPROTO,
		     "broker %s sent a PUBLISH without a topic name", peer(s));
		return;
	}
	if (pb->qos == 2) {
		if (idset_has(&s->q2, pb->packet_id)) {
			/* already delivered; its PUBREC may have been lost */
			s->st.dup_qos2_in++;
			r = queue_ack(s, MQTT_PUBREC, pb->packet_id, 0);
			goto acked;
		}
		if (idset_add(&s->q2, pb->packet_id) < 0) {
			fail(s, CLIENT_ENOMEM, "out of memory");
			return;
		}
	}
	s->st.msgs_in++;
	if (s->h->on_message) {
		cb_enter(s);
		s->h->on_message(s->owner, pb, now);
		if (!alive(s))
			return;
	}
	/* After a client_disconnect() from the callback nothing more may be
	 * sent; the broker resends unacknowledged messages anyway. */
	if (s->state != CLIENT_CONNECTED)
		return;
	if (pb->qos == 1)
		r = queue_ack(s, MQTT_PUBACK, pb->packet_id, 0);
	else if (pb->qos == 2)
		r = queue_ack(s, MQTT_PUBREC, pb->packet_id, 0);
acked:
	if (r < 0)
		fail(s, CLIENT_ENOMEM, "out of memory");
}

static void publish_done(struct mqtt_session *s, struct inflight *e, uint8_t reason,
                         int64_t now)
{
	uint16_t id = e->id;
	uint8_t qos = e->qos;
	int64_t t_sent = e->t_sent;

	inf_release(s, e);
	s->st.pub_done++;
	if (s->h->on_publish_done) {
		cb_enter(s);
		s->h->on_publish_done(s->owner, id, qos, reason, t_sent, now);
	}
}

/*
 * PUBREC (MQTT 5.0 4.3.3, 3.6.2.1):
 *  - for a QoS 2 publish awaiting PUBREC: reason < 0x80 moves the flow on
 *    to PUBREL; a failure reason (>= 0x80, v5) ends the flow, and no PUBREL
 *    follows;
 *  - for a flow already awaiting PUBCOMP (our PUBREL was lost, or the
 *    broker resent after a reconnect): PUBREL again; a failure reason there
 *    makes no sense and is ignored;
 *  - for an id with no QoS 2 flow: v5 answers PUBREL with 0x92 "Packet
 *    Identifier not found", which ends the broker's flow and tells it the
 *    session states differ; a failed PUBREC is ignored (that flow already
 *    ended). 3.1.1 has no reason codes: a plain PUBREL ends the broker's
 *    flow (as Mosquitto's client library does).
 */
static void handle_pubrec(struct mqtt_session *s, const struct mqtt_ack *a,
                          int64_t now)
{
	struct inflight *e = inf_find(s, a->packet_id);
	uint8_t reason = 0;

	if (e && e->kind == INF_PUB && e->qos == 2) {
		if (a->reason >= 0x80) {
			publish_done(s, e, a->reason, now);
			return;
		}
		e->kind = INF_PUBREL;
		free(e->pkt); /* never resent after PUBREC */
		e->pkt = NULL;
		e->pkt_len = 0;
	} else if (e && e->kind == INF_PUBREL) {
		if (a->reason >= 0x80)
			return;
	} else {
		if (a->reason >= 0x80)
			return;
		reason = 0x92;
	}
	if (queue_ack(s, MQTT_PUBREL, a->packet_id, reason) < 0)
		fail(s, CLIENT_ENOMEM, "out of memory");
}

/* Act on one whole packet. */
static void handle_packet(struct mqtt_session *s, const uint8_t *buf, size_t len,
                          int64_t now)
{
	struct mqtt_packet p;
	struct inflight *e;
	ssize_t r;
	uint8_t type = buf[0] >> 4;

	s->st.bytes_in += len;
	s->st.pkts_in++;
	s->st.in_by_type[type]++;
	s->last_recv = now;

	r = mqtt_decode(buf, len, s->cfg.version, 0, &p);
	if (r < 0) {
		fail(s, CLIENT_EPROTO,
		     "broker %s sent a malformed packet (type %u): %s",
		     peer(s), type, mqtt_strerror((int)r));
		return;
	}
	if (s->state == CLIENT_CONNECT_SENT && p.type != MQTT_CONNACK) {
		if (p.type == MQTT_DISCONNECT)
			goto disconnect;
		fail(s, CLIENT_EPROTO,
		     "MQTT connect to %s: broker sent packet type %u before "
		     "CONNACK", peer(s), p.type);
		return;
	}
	/* After our DISCONNECT only the end of earlier flows counts. */
	if (s->state == CLIENT_DISCONNECTING && p.type != MQTT_PUBACK &&
	    p.type != MQTT_PUBCOMP && p.type != MQTT_SUBACK &&
	    p.type != MQTT_UNSUBACK && p.type != MQTT_PINGRESP)
		return;

	switch (p.type) {
	case MQTT_CONNACK:
		if (s->state != CLIENT_CONNECT_SENT) {
			fail(s, CLIENT_EPROTO, "broker %s sent a second CONNACK",
			     peer(s));
			return;
		}
		deliver_connack(s, &p.u.connack);
		return;
	case MQTT_PUBLISH:
		handle_publish(s, &p.u.publish, now);
		return;
	case MQTT_PUBACK:
		e = inf_find(s, p.u.ack.packet_id);
		if (e && e->kind == INF_PUB && e->qos == 1)
			publish_done(s, e, p.u.ack.reason, now);
		return;
	case MQTT_PUBREC:
		handle_pubrec(s, &p.u.ack, now);
		return;
	case MQTT_PUBREL:
		idset_del(&s->q2, p.u.ack.packet_id);
		if (queue_ack(s, MQTT_PUBCOMP, p.u.ack.packet_id, 0) < 0)
			fail(s, CLIENT_ENOMEM, "out of memory");
		return;
	case MQTT_PUBCOMP:
		e = inf_find(s, p.u.ack.packet_id);
		if (e && e->kind == INF_PUBREL)
			publish_done(s, e, p.u.ack.reason, now);
		return;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		e = inf_find(s, p.u.suback.packet_id);
		if (e && e->kind == (p.type == MQTT_SUBACK ? INF_SUB
		                                            : INF_UNSUB)) {
			uint16_t id = e->id;

			inf_release(s, e);
			cb_enter(s);
			if (p.type == MQTT_SUBACK && s->h->on_subscribed)
				s->h->on_subscribed(s->owner, id,
				                      p.u.suback.reasons.data,
				                      p.u.suback.reasons.len);
			else if (p.type == MQTT_UNSUBACK &&
			         s->h->on_unsubscribed)
				s->h->on_unsubscribed(s->owner, id,
				                        p.u.suback.reasons.data,
				                        p.u.suback.reasons.len);
			}
		return;
	case MQTT_PINGRESP:
		s->ping_sent = 0;
		return;
	case MQTT_DISCONNECT:
		goto disconnect;
	default:
		fail(s, CLIENT_EPROTO, "broker %s sent unexpected packet type %u",
		     peer(s), p.type);
		return;
	}
disconnect:
	{
		const struct mqtt_props *pr = &p.u.disconnect.props;
		uint8_t reason = p.u.disconnect.reason;

		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_REASON_STRING))
			fail(s, CLIENT_EDISCONNECTED,
			     "broker %s sent DISCONNECT: %s (0x%02x): %.*s",
			     peer(s), client_reason_str(MQTT_V5, reason), reason,
			     (int)pr->reason_string.len,
			     (const char *)pr->reason_string.data);
		else
			fail(s, CLIENT_EDISCONNECTED,
			     "broker %s sent DISCONNECT: %s (0x%02x)", peer(s),
			     client_reason_str(MQTT_V5, reason), reason);
	}
}

/*
 * Frame and handle the whole packets at the start of buf. Returns the bytes
 * consumed (the rest is the start of a packet that is not whole yet, within
 * our limit), or -1 when the session failed or was halted on the way.
 */
static ssize_t parse(struct mqtt_session *s, const uint8_t *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t tot = mqtt_frame(buf + off, len - off, 0, NULL, NULL);

		if (tot == MQTT_ENEEDMORE) {
			/* Refuse a packet over our limit as soon as its header
			 * says so, before buffering any of it. */
			tot = mqtt_frame_len(buf + off, len - off);
			if (tot > 0 && !size_ok(s, (size_t)tot))
				return -1;
			break;
		}
		if (tot < 0) {
			fail(s, CLIENT_EPROTO,
			     "broker %s sent a malformed packet: %s", peer(s),
			     mqtt_strerror((int)tot));
			return -1;
		}
		if (!size_ok(s, (size_t)tot))
			return -1;
		handle_packet(s, buf + off, (size_t)tot, rx_time(s));
		if (!alive(s))
			return -1;
		off += (size_t)tot;
	}
	return (ssize_t)off;
}

/*
 * The partial packet's header may have grown complete: learn its total
 * length, check it against our limit, and size s->in to exactly that.
 * 0, or -1 after fail().
 */
static int in_sized(struct mqtt_session *s)
{
	ssize_t tot;
	uint8_t *b;

	if (s->in_need)
		return 0;
	tot = mqtt_frame_len(s->in, s->in_len);
	if (tot == 0)
		return 0;
	if (tot < 0) {
		fail(s, CLIENT_EPROTO, "broker %s sent a malformed packet: %s",
		     peer(s), mqtt_strerror((int)tot));
		return -1;
	}
	if (!size_ok(s, (size_t)tot))
		return -1;
	if ((size_t)tot > s->in_cap) {
		b = realloc(s->in, (size_t)tot);
		if (!b) {
			fail(s, CLIENT_ENOMEM, "out of memory");
			return -1;
		}
		s->in = b;
		s->in_cap = (size_t)tot;
	}
	s->in_need = (size_t)tot;
	return 0;
}

/*
 * Keep buf[0, len), the start of a packet that parse() found incomplete and
 * within our limit, as the client's partial packet (none is held now).
 * 0, or -1 after fail().
 */
static int in_keep(struct mqtt_session *s, const uint8_t *buf, size_t len)
{
	ssize_t tot = mqtt_frame_len(buf, len);
	size_t cap = tot > 0 ? (size_t)tot : MQTT_MAX_FIXED_HEADER;

	s->in = malloc(cap);
	if (!s->in) {
		fail(s, CLIENT_ENOMEM, "out of memory");
		return -1;
	}
	memcpy(s->in, buf, len);
	s->in_len = len;
	s->in_cap = cap;
	s->in_need = tot > 0 ? (size_t)tot : 0;
	return 0;
}

/*
 * Complete the partial packet from the start of buf: header bytes one at a
 * time until its length is known, then as much of the rest as buf holds.
 * When it is whole, handle it and release the buffer. Returns the bytes of
 * buf used, or -1 when the client went away or failed.
 */
static ssize_t in_complete(struct mqtt_session *s, const uint8_t *buf, size_t len)
{
	size_t off = 0, take;

	while (!s->in_need && off < len) {
		/* in_len < MQTT_MAX_FIXED_HEADER = in_cap here: a header
		 * that long is complete or malformed */
		s->in[s->in_len++] = buf[off++];
		if (in_sized(s) < 0)
			return -1;
	}
	if (!s->in_need)
		return (ssize_t)off;
	take = s->in_need - s->in_len;
	if (take > len - off)
		take = len - off;
	memcpy(s->in + s->in_len, buf + off, take);
	s->in_len += take;
	off += take;
	if (s->in_len == s->in_need) {
		handle_packet(s, s->in, s->in_len, rx_time(s));
		if (!alive(s))
			return -1;
		in_release(s);
	}
	return (ssize_t)off;
}

/* ---- input ---- */

uint8_t *sess_rx_buffer(struct mqtt_session *s, size_t *cap)
{
	if (!s->in_need || s->in_need - s->in_len < DIRECT_READ)
		return NULL;
	*cap = s->in_need - s->in_len;
	return s->in + s->in_len;
}

int sess_input(struct mqtt_session *s, const uint8_t *buf, size_t len,
               int64_t now)
{
	size_t off = 0;
	ssize_t used;

	if (s->state == CLIENT_IDLE || s->state == CLIENT_CLOSED ||
	    s->state == CLIENT_CONNECTING)
		return CLIENT_ESTATE;
	if (!alive(s))
		return outcome(s);
	s->now = s->rx_now = now;
	s->rx_ncb = s->ncb;
	if (s->in_need && buf == s->in + s->in_len) {
		/* read in place by the owner (sess_rx_buffer) */
		s->in_len += len;
		if (s->in_len == s->in_need) {
			handle_packet(s, s->in, s->in_len, rx_time(s));
			if (alive(s))
				in_release(s);
		}
		return outcome(s);
	}
	if (s->in_len) {
		used = in_complete(s, buf, len);
		if (used < 0)
			return outcome(s);
		off = (size_t)used;
	}
	used = parse(s, buf + off, len - off);
	if (used < 0)
		return outcome(s);
	off += (size_t)used;
	if (off < len)
		in_keep(s, buf + off, len - off);
	return outcome(s);
}

int sess_eof(struct mqtt_session *s)
{
	if (s->state == CLIENT_DISCONNECTING)
		return SESS_DONE;
	if (s->state == CLIENT_CONNECT_SENT)
		fail(s, CLIENT_ECLOSED,
		     "MQTT connect to %s: broker closed the connection before "
		     "CONNACK (check the protocol version, client id and the "
		     "broker's log)", peer(s));
	else
		fail(s, CLIENT_ECLOSED, "connection to %s closed by the broker",
		     peer(s));
	return s->err;
}

/* ---- output ---- */

size_t sess_pending(struct mqtt_session *s, const uint8_t **data)
{
	*data = s->out + s->out_off;
	return out_pending(s);
}

void sess_sent(struct mqtt_session *s, size_t n)
{
	if (n > out_pending(s))
		n = out_pending(s);
	s->out_off += n;
	s->sent_total += n;
	if (s->pw.n)
		pw_sent(s);
	if (out_pending(s) == 0) {
		s->out_off = s->out_len = 0;
		if (s->out_cap > OUT_KEEP) {
			free(s->out);
			s->out = NULL;
			s->out_cap = 0;
		}
	}
}

/* ---- time ---- */

static int64_t ping_timeout(const struct mqtt_session *s)
{
	return s->cfg.ping_timeout_ns > 0 ? s->cfg.ping_timeout_ns
	                                  : ns_of_s(s->keepalive);
}

static int64_t idle_since(const struct mqtt_session *s)
{
	return s->last_send < s->last_recv ? s->last_send : s->last_recv;
}

int64_t sess_deadline(const struct mqtt_session *s)
{
	if (s->failed || s->halted)
		return NEVER;
	switch (s->state) {
	case CLIENT_CONNECTING:
	case CLIENT_CONNECT_SENT:
		return s->t_start + s->cfg.connect_timeout_ns;
	case CLIENT_CONNECTED:
		if (s->keepalive == 0)
			return NEVER;
		if (s->ping_sent)
			return s->ping_sent + ping_timeout(s);
		return idle_since(s) + ns_of_s(s->keepalive);
	case CLIENT_DISCONNECTING:
		return s->linger_until;
	default:
		return NEVER;
	}
}

int sess_on_time(struct mqtt_session *s, int64_t now)
{
	if (!alive(s))
		return outcome(s);
	s->now = now;
	switch (s->state) {
	case CLIENT_CONNECTING:
	case CLIENT_CONNECT_SENT:
		if (now >= s->t_start + s->cfg.connect_timeout_ns)
			fail(s, CLIENT_ETIMEOUT,
			     s->state == CLIENT_CONNECTING
			             ? "connect to %s: timed out after %.1f s"
			             : "MQTT connect to %s: no CONNACK within "
			               "%.1f s",
			     peer(s), (double)s->cfg.connect_timeout_ns / 1e9);
		break;
	case CLIENT_CONNECTED:
		if (s->keepalive == 0)
			break;
		if (s->ping_sent) {
			if (now >= s->ping_sent + ping_timeout(s))
				fail(s, CLIENT_ETIMEOUT,
				     "keepalive: no PINGRESP from %s within "
				     "%.1f s", peer(s),
				     (double)ping_timeout(s) / 1e9);
		} else if (now >= idle_since(s) + ns_of_s(s->keepalive)) {
			struct mqtt_packet p;

			memset(&p, 0, sizeof(p));
			p.type = MQTT_PINGREQ;
			if (queue_packet(s, &p) < 0) {
				fail(s, CLIENT_ENOMEM, "out of memory");
				break;
			}
			s->ping_sent = now;
			s->st.pings++;
		}
		break;
	case CLIENT_DISCONNECTING:
		if (now >= s->linger_until)
			return SESS_DONE;
		break;
	default:
		break;
	}
	return outcome(s);
}

/* ---- the connection's life ---- */

size_t sess_size(void)
{
	return sizeof(struct mqtt_session);
}

int sess_init(struct mqtt_session *s, const struct client_config *cfg,
              const struct sess_handler *h, void *owner)
{
	static const struct sess_handler none;
	const char *id = cfg->client_id ? cfg->client_id : "";

	memset(s, 0, sizeof(*s));
	if (cfg->version != MQTT_V311 && cfg->version != MQTT_V5)
		return -1;
	if (mqtt_valid_utf8((const uint8_t *)id, strlen(id)) != 0)
		return -1;
	s->client_id = strdup(id);
	if (!s->client_id)
		return -1;
	s->h = h ? h : &none;
	s->owner = owner;
	s->cfg = *cfg;
	s->cfg.client_id = s->client_id;
	if (s->cfg.inflight_window == 0)
		s->cfg.inflight_window = 20;
	if (s->cfg.connect_timeout_ns <= 0)
		s->cfg.connect_timeout_ns = 10 * NS_PER_SEC;
	if (s->cfg.linger_ns <= 0)
		s->cfg.linger_ns = 2 * NS_PER_SEC;
	if (s->cfg.max_outbuf == 0)
		s->cfg.max_outbuf = 1u << 20;
	s->persistent = (uint8_t)(cfg->version == MQTT_V5
	                                  ? (!cfg->clean_start &&
	                                     cfg->session_expiry > 0)
	                                  : !cfg->clean_start);
	s->next_id = 1;
	s->window = s->cfg.inflight_window;
	s->state = CLIENT_IDLE;
	return 0;
}

struct mqtt_session *sess_new(const struct client_config *cfg,
                              const struct sess_handler *h, void *owner)
{
	struct mqtt_session *s = malloc(sizeof(*s));

	if (!s)
		return NULL;
	if (sess_init(s, cfg, h, owner) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

void sess_set_peer(struct mqtt_session *s, const char *name)
{
	s->peer = name;
}

int sess_connecting(struct mqtt_session *s, int64_t now)
{
	if (s->state != CLIENT_IDLE && s->state != CLIENT_CLOSED)
		return CLIENT_ESTATE;
	s->state = CLIENT_CONNECTING;
	s->halted = s->failed = 0;
	s->err = 0;
	s->now = now;
	s->t_start = now;
	s->t_connect = s->t_connack = 0;
	s->last_send = s->last_recv = now;
	s->ping_sent = 0;
	return 0;
}

int sess_start(struct mqtt_session *s, int64_t now)
{
	if (s->state != CLIENT_CONNECTING)
		return CLIENT_ESTATE;
	s->now = now;
	s->t_connect = now;
	send_connect(s);
	return outcome(s);
}

void sess_halt(struct mqtt_session *s)
{
	s->halted = 1;
}

int sess_fail(struct mqtt_session *s, int err, const char *msg)
{
	fail(s, err, "%s", msg);
	return s->err;
}

void sess_closed(struct mqtt_session *s)
{
	uint32_t dropped;

	s->st.bytes_unsent += out_pending(s);
	free(s->out);
	s->out = NULL;
	s->out_off = s->out_len = s->out_cap = 0;
	s->out_total = s->sent_total = 0;
	pw_clear(s);
	in_release(s);
	/* A persistent session keeps its publish flows for the next
	 * connection; everything else ends with this one. */
	dropped = inf_drop(s, !s->persistent);
	s->st.dropped += dropped;
	if (!s->persistent)
		idset_clear(&s->q2);
	s->ping_sent = 0;
	s->want_writable = 0;
	free(s->errmsg); /* the owner has taken it */
	s->errmsg = NULL;
	s->state = CLIENT_CLOSED;
}

void sess_fini(struct mqtt_session *s)
{
	sess_closed(s);
	inf_drop(s, 1);
	idset_clear(&s->q2);
	free(s->client_id);
	free(s->errmsg);
	s->client_id = s->errmsg = NULL;
}

void sess_del(struct mqtt_session *s)
{
	if (!s)
		return;
	sess_fini(s);
	free(s);
}

/* ---- what the application does ---- */

/* Common entry for the calls that send: state and output limits. */
static int can_send(struct mqtt_session *s)
{
	if (s->state != CLIENT_CONNECTED || !alive(s))
		return CLIENT_ESTATE;
	if (out_pending(s) >= s->cfg.max_outbuf) {
		s->want_writable = 1;
		return CLIENT_EBUSY;
	}
	return 0;
}

int sess_publish(struct mqtt_session *s, const uint8_t *topic,
                 size_t topic_len, const uint8_t *payload, size_t payload_len,
                 uint8_t qos, uint8_t retain, const struct mqtt_props *props,
                 int64_t now)
{
	struct mqtt_packet p;
	struct inflight *e = NULL;
	ssize_t n;
	int r;

	if ((r = can_send(s)) < 0)
		return r;
	if (qos > 2 || topic_len == 0 || topic_len > 65535)
		return CLIENT_EINVAL;
	if (props && s->cfg.version != MQTT_V5)
		return CLIENT_EINVAL;
	if (qos > s->max_qos)
		return CLIENT_EQOS;
	if (qos && s->n_pub >= s->window) {
		s->want_writable = 1;
		return CLIENT_EWINDOW;
	}
	memset(&p, 0, sizeof(p));
	p.type = MQTT_PUBLISH;
	p.u.publish.qos = qos;
	p.u.publish.retain = retain ? 1 : 0;
	p.u.publish.topic.data = topic;
	p.u.publish.topic.len = topic_len;
	p.u.publish.payload.data = payload;
	p.u.publish.payload.len = payload_len;
	if (props)
		p.u.publish.props = *props;
	/* Validate and size before taking a packet id. */
	p.u.publish.packet_id = qos ? 1 : 0;
	n = mqtt_encoded_size(s->cfg.version, &p);
	if (n < 0)
		return n == MQTT_ETOOBIG ? CLIENT_ETOOBIG : CLIENT_EINVAL;
	if (s->broker_max_packet && (size_t)n > s->broker_max_packet)
		return CLIENT_ETOOBIG;
	s->now = now;
	if (qos) {
		e = inf_alloc(s, &r);
		if (!e)
			return r;
		p.u.publish.packet_id = e->id;
		e->kind = INF_PUB;
		e->qos = qos;
		e->t_sent = now;
		s->n_pub++;
	}
	/* Everything that can fail comes before anything is counted, so a
	 * failed publish leaves no trace: its packet id, its bytes, its
	 * counters all go back. */
	if (e && s->persistent) {
		/* kept for a resend after a reconnect */
		e->pkt = malloc((size_t)n);
		if (!e->pkt) {
			inf_release(s, e);
			return CLIENT_ENOMEM;
		}
		e->pkt_len = (uint32_t)n;
	}
	if (pw_push(s, s->out_total + (uint64_t)n, e ? e->id : 0) < 0) {
		if (e)
			inf_release(s, e);
		return CLIENT_ENOMEM;
	}
	/* the size does not depend on the packet id's value */
	n = queue_sized(s, &p, (size_t)n);
	if (n < 0) {
		pw_unpush(s);
		if (e)
			inf_release(s, e);
		return (int)n;
	}
	if (e && e->pkt)
		memcpy(e->pkt, s->out + s->out_len - (size_t)n, (size_t)n);
	s->st.pub_out[qos]++;
	return e ? e->id : 0;
}

int sess_can_publish(struct mqtt_session *s, uint8_t qos)
{
	if (can_send(s) < 0)
		return 0;
	if (qos && s->n_pub >= s->window) {
		s->want_writable = 1;
		return 0;
	}
	return 1;
}

static int sub_unsub(struct mqtt_session *s, uint8_t type,
                     const struct mqtt_topic_filter *filters, size_t n,
                     const struct mqtt_props *props, int64_t now)
{
	struct mqtt_packet p;
	struct inflight *e;
	ssize_t r;
	int err;
	uint16_t id;

	if ((err = can_send(s)) < 0)
		return err;
	if (n == 0 || !filters || (props && s->cfg.version != MQTT_V5))
		return CLIENT_EINVAL;
	memset(&p, 0, sizeof(p));
	p.type = type;
	p.u.subscribe.filters = filters;
	p.u.subscribe.n_filters = n;
	if (props)
		p.u.subscribe.props = *props;
	p.u.subscribe.packet_id = 1;
	r = mqtt_encoded_size(s->cfg.version, &p);
	if (r < 0)
		return CLIENT_EINVAL;
	if (s->broker_max_packet && (size_t)r > s->broker_max_packet)
		return CLIENT_ETOOBIG;
	s->now = now;
	e = inf_alloc(s, &err);
	if (!e)
		return err;
	e->kind = type == MQTT_SUBSCRIBE ? INF_SUB : INF_UNSUB;
	e->t_sent = now;
	id = e->id;
	p.u.subscribe.packet_id = id;
	r = queue_packet(s, &p);
	if (r < 0) {
		inf_release(s, e);
		return (int)r;
	}
	return id;
}

int sess_subscribe(struct mqtt_session *s,
                   const struct mqtt_topic_filter *filters, size_t n,
                   const struct mqtt_props *props, int64_t now)
{
	return sub_unsub(s, MQTT_SUBSCRIBE, filters, n, props, now);
}

int sess_unsubscribe(struct mqtt_session *s,
                     const struct mqtt_topic_filter *filters, size_t n,
                     const struct mqtt_props *props, int64_t now)
{
	return sub_unsub(s, MQTT_UNSUBSCRIBE, filters, n, props, now);
}

int sess_disconnect(struct mqtt_session *s, uint8_t reason, int64_t now)
{
	struct mqtt_packet p;

	if (s->state != CLIENT_CONNECTED || !alive(s))
		return CLIENT_ESTATE;
	s->now = now;
	memset(&p, 0, sizeof(p));
	p.type = MQTT_DISCONNECT;
	p.u.disconnect.reason = s->cfg.version == MQTT_V5 ? reason : 0;
	if (queue_packet(s, &p) < 0)
		return CLIENT_EINVAL;
	s->state = CLIENT_DISCONNECTING;
	s->linger_until = now + s->cfg.linger_ns;
	return 0;
}

int sess_take_writable(struct mqtt_session *s)
{
	if (!s->want_writable || s->state != CLIENT_CONNECTED || !alive(s))
		return 0;
	if (out_pending(s) > s->cfg.max_outbuf / 2 || s->n_pub >= s->window)
		return 0;
	s->want_writable = 0;
	return 1;
}

enum client_state sess_state(const struct mqtt_session *s)
{
	return (enum client_state)s->state;
}

int64_t sess_t_start(const struct mqtt_session *s)
{
	return s->t_start;
}

int sess_failed(const struct mqtt_session *s)
{
	return s->failed;
}

const char *sess_errmsg(const struct mqtt_session *s)
{
	return s->errmsg ? s->errmsg : "";
}

struct client_stats *sess_stats(struct mqtt_session *s)
{
	return &s->st;
}

unsigned sess_inflight(const struct mqtt_session *s)
{
	return s->n_pub;
}

unsigned sess_window(const struct mqtt_session *s)
{
	return s->window;
}

uint8_t sess_version(const struct mqtt_session *s)
{
	return s->cfg.version;
}

size_t sess_heap_bytes(const struct mqtt_session *s)
{
	size_t n = sizeof(*s) + (s->client_id ? strlen(s->client_id) + 1 : 0);
	uint32_t i;

	n += s->out_cap + s->in_cap;
	n += (size_t)s->pw.cap * sizeof(uint64_t);
	n += (size_t)s->inf_cap * sizeof(struct inflight);
	for (i = 0; i < s->inf_cap; i++)
		n += s->inf[i].pkt_len;
	n += (size_t)s->q2.cap * sizeof(uint16_t);
	if (s->errmsg)
		n += strlen(s->errmsg) + 1;
	return n;
}
