/*
 * client.c: the MQTT client engine.
 *
 * Structure: the public calls and the two loop callbacks (io_cb, timer_cb)
 * are the only entry points. Public calls never run application callbacks;
 * a failure they meet (a send error, say) is parked in c->pend and reported
 * through on_closed from the timer on the next loop round. The loop
 * callbacks may run application callbacks, which may do anything to the
 * client, so after each one the engine checks alive(): the client was not
 * freed, not closed, not reconnected (c->gen counts connections).
 *
 * Receiving: every read goes into a per-thread 64 KiB scratch buffer, and
 * packets are framed and decoded in place, so one system call brings as
 * many packets as are waiting. Only a packet that spans reads is copied to
 * the client's own buffer (c->in), allocated at its exact size once its
 * fixed header is complete, and completed from the scratch buffer of the
 * following reads (or read into directly when what is missing is at least
 * the scratch buffer's size, which then could hold nothing else). An idle
 * client holds no input buffer.
 *
 * Receive time: `now` handed to on_message and on_publish_done is read once
 * per read, and again after any application callback (c->ncb counts them):
 * a callback may publish, stamping t_sent from the same clock, and a later
 * ack from the same read must not look older than that publish.
 *
 * Sending: packets are encoded into c->out and written at once; what the
 * transport does not take waits for EV_WRITE. The buffer is released when it
 * drains, unless it is small.
 *
 * Inflight: a table indexed by packet id & (cap - 1). Ids are chosen so that
 * their slot is free, which makes lookups O(1); growing the table by
 * doubling never makes two ids collide, because ids that differ in the low
 * bits of the old mask also differ under the wider one.
 */
#include "mqtt/client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_SIZE 65536
#define OUT_KEEP 1024     /* keep a drained output buffer up to this size */
#define INF_MIN 8         /* first inflight table size */

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
	int64_t t_sent;  /* client_publish() time */
	uint8_t *pkt;    /* encoded PUBLISH kept for resending, or NULL */
	uint32_t pkt_len;
};

/* Packet ids of QoS 2 messages received and awaiting PUBREL: open
 * addressing with linear probing, key 0 = empty (ids are never 0). */
struct idset {
	uint16_t *slots;
	uint32_t cap, n;
};

struct client {
	struct evloop *loop;
	struct tr_ctx *trctx;
	const struct client_callbacks *cbs;
	void *user;
	struct client_config cfg;
	char *client_id;
	struct tr_session *sess;
	struct tr_conn *tr;
	struct ev_io io;
	struct ev_timer timer;
	enum client_state state;

	unsigned busy;     /* depth of loop callbacks running on this client */
	unsigned in_api;   /* depth of public calls: failures are deferred */
	int free_pending;  /* client_free() inside a callback */
	uint32_t gen;      /* bumped on every connect and close */
	int pend;          /* a close is parked for the timer */
	int pend_err;
	int want_writable; /* publish said EWINDOW/EBUSY: on_writable owed */
	int shut;          /* DISCONNECTING: transport shutdown done */

	uint8_t *out;
	size_t out_off, out_len, out_cap;
	/* One packet that spans reads: in_len bytes of it held; in_need its
	 * total length, 0 while its fixed header is incomplete; in_cap is
	 * in_need, or MQTT_MAX_FIXED_HEADER before it is known. */
	uint8_t *in;
	size_t in_len, in_need, in_cap;
	uint32_t ncb;      /* application callbacks run (wraps) */
	uint32_t rx_ncb;   /* ncb when rx_now was read */
	int64_t rx_now;    /* receive time of the bytes being parsed */

	struct inflight *inf;
	uint32_t inf_cap, inf_n, n_pub;
	uint16_t next_id;
	uint32_t seq;
	uint16_t window;
	struct idset q2;
	int persistent; /* keep inflight across connections */

	uint16_t keepalive;
	uint8_t max_qos;
	uint16_t broker_rmax;
	uint32_t broker_max_packet;

	int64_t t_start, t_ready, t_connack;
	int64_t last_send, last_recv, ping_sent, linger_until;

	char *errmsg; /* message of the last close with an error */
	struct client_stats st;
	/* wire bytes of the connections already closed */
	uint64_t wire_in_done, wire_out_done;
};

static _Thread_local uint8_t scratch[SCRATCH_SIZE];

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
	cfg->connect_timeout_ns = 10 * EV_NS_PER_SEC;
	cfg->linger_ns = 2 * EV_NS_PER_SEC;
	cfg->max_outbuf = 1u << 20;
	cfg->max_packet_size = CLIENT_MAX_PACKET_DEFAULT;
}

/* ---- small helpers ---- */

static int map_tr_error(int r)
{
	switch (r) {
	case TR_ENOMEM: return CLIENT_ENOMEM;
	case TR_ECONNECT:
	case TR_ERESOLVE:
	case TR_ECONFIG: return CLIENT_ECONNECT;
	case TR_ETIMEOUT: return CLIENT_ETIMEOUT;
	case TR_ETLS:
	case TR_ECERT: return CLIENT_ETLS;
	case TR_EOF: return CLIENT_ECLOSED;
	}
	return CLIENT_EIO;
}

static const char *peer(const struct client *c)
{
	return c->trctx->peer;
}

static int alive(const struct client *c, uint32_t gen)
{
	return !c->free_pending && !c->pend && c->gen == gen;
}

static size_t out_pending(const struct client *c)
{
	return c->out_len - c->out_off;
}

static int64_t ns_of_s(uint32_t s)
{
	return (int64_t)s * EV_NS_PER_SEC;
}

/* Before an application callback: it may do anything to the client (busy
 * defers a free), and it takes time (ncb makes the receive time fresh). */
static void cb_enter(struct client *c)
{
	c->busy++;
	c->ncb++;
}

/* The receive time for a packet being handled: read at the last read, or
 * again if a callback ran since (see "Receive time" above). */
static int64_t rx_time(struct client *c)
{
	if (c->ncb != c->rx_ncb) {
		c->rx_now = evloop_clock_ns();
		c->rx_ncb = c->ncb;
	}
	return c->rx_now;
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

static struct inflight *inf_find(struct client *c, uint16_t id)
{
	struct inflight *e;

	if (!c->inf_cap || id == 0)
		return NULL;
	e = &c->inf[id & (c->inf_cap - 1)];
	return e->id == id ? e : NULL;
}

static int inf_grow(struct client *c)
{
	uint32_t cap = c->inf_cap ? c->inf_cap * 2 : INF_MIN, i;
	struct inflight *t;

	if (cap > 65536)
		return CLIENT_EWINDOW;
	t = calloc(cap, sizeof(*t));
	if (!t)
		return CLIENT_ENOMEM;
	for (i = 0; i < c->inf_cap; i++)
		if (c->inf[i].id)
			t[c->inf[i].id & (cap - 1)] = c->inf[i];
	free(c->inf);
	c->inf = t;
	c->inf_cap = cap;
	return 0;
}

/* Take a free packet id and its slot. Returns the entry or NULL with *err. */
static struct inflight *inf_alloc(struct client *c, int *err)
{
	uint32_t tries;

	if (c->inf_n >= 65535) {
		*err = CLIENT_EWINDOW;
		return NULL;
	}
	if (c->inf_n == c->inf_cap && (*err = inf_grow(c)) < 0)
		return NULL;
	/* A free slot exists; 2 * cap consecutive ids cover every slot even
	 * across the wrap that skips id 0. */
	for (tries = 0; tries < 2 * c->inf_cap + 2; tries++) {
		uint16_t id = c->next_id;
		struct inflight *e;

		c->next_id = (uint16_t)(c->next_id + 1);
		if (c->next_id == 0)
			c->next_id = 1;
		if (id == 0)
			continue;
		e = &c->inf[id & (c->inf_cap - 1)];
		if (e->id == 0) {
			memset(e, 0, sizeof(*e));
			e->id = id;
			e->seq = c->seq++;
			c->inf_n++;
			return e;
		}
	}
	*err = CLIENT_EWINDOW; /* not reached */
	return NULL;
}

static void inf_release(struct client *c, struct inflight *e)
{
	if (e->kind == INF_PUB || e->kind == INF_PUBREL)
		c->n_pub--;
	free(e->pkt);
	memset(e, 0, sizeof(*e));
	c->inf_n--;
	if (c->inf_n == 0) {
		free(c->inf);
		c->inf = NULL;
		c->inf_cap = 0;
	}
}

/* Drop entries: SUB/UNSUB always, publishes too when `all`. Returns the
 * number of publish flows dropped. */
static uint32_t inf_drop(struct client *c, int all)
{
	uint32_t i, dropped = 0;

	for (i = 0; i < c->inf_cap && c->inf; i++) {
		struct inflight *e = &c->inf[i];

		if (!e->id)
			continue;
		if (e->kind == INF_SUB || e->kind == INF_UNSUB || all) {
			if (e->kind == INF_PUB || e->kind == INF_PUBREL)
				dropped++;
			inf_release(c, e);
		}
	}
	return dropped;
}

/* ---- output ---- */

static int out_reserve(struct client *c, size_t n)
{
	size_t need, cap;
	uint8_t *b;

	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_cap - c->out_len >= n)
		return 0;
	if (c->out_off) { /* slide the unsent tail to the front first */
		memmove(c->out, c->out + c->out_off, out_pending(c));
		c->out_len -= c->out_off;
		c->out_off = 0;
		if (c->out_cap - c->out_len >= n)
			return 0;
	}
	need = c->out_len + n;
	cap = c->out_cap ? c->out_cap : 128;
	while (cap < need)
		cap *= 2;
	b = realloc(c->out, cap);
	if (!b)
		return CLIENT_ENOMEM;
	c->out = b;
	c->out_cap = cap;
	return 0;
}

static void out_note(struct client *c, const uint8_t *pkt, size_t len)
{
	uint8_t type = pkt[0] >> 4;

	c->st.bytes_out += len;
	c->st.pkts_out++;
	c->st.out_by_type[type]++;
	c->last_send = evloop_now(c->loop);
}

/* Encode p at the end of the output buffer. Returns its length or error. */
/*
 * Encode p, whose encoded size `size` the caller has already computed (and
 * so validated), at the end of the output buffer. A PUBLISH without
 * properties takes the codec's fast path. Bytes queued or CLIENT_E*.
 */
static ssize_t queue_sized(struct client *c, const struct mqtt_packet *p,
                           size_t size)
{
	const struct mqtt_publish *pub = &p->u.publish;
	ssize_t n;

	if (out_reserve(c, size) < 0)
		return CLIENT_ENOMEM;
	if (p->type == MQTT_PUBLISH && pub->props.present == 0 &&
	    pub->props.n_user == 0 && pub->props.n_sub_ids == 0)
		n = mqtt_encode_publish_simple(c->out + c->out_len,
		                               c->out_cap - c->out_len,
		                               c->cfg.version, pub->topic.data,
		                               pub->topic.len, pub->qos,
		                               pub->retain, pub->dup,
		                               pub->packet_id, pub->payload.data,
		                               pub->payload.len);
	else
		n = mqtt_encode(c->out + c->out_len, c->out_cap - c->out_len,
		                c->cfg.version, p);
	if (n < 0 || (size_t)n != size)
		return CLIENT_EINVAL;
	out_note(c, c->out + c->out_len, (size_t)n);
	c->out_len += (size_t)n;
	return n;
}

static ssize_t queue_packet(struct client *c, const struct mqtt_packet *p)
{
	ssize_t n = mqtt_encoded_size(c->cfg.version, p);

	if (n < 0)
		return n == MQTT_ETOOBIG ? CLIENT_ETOOBIG : CLIENT_EINVAL;
	return queue_sized(c, p, (size_t)n);
}

static int queue_raw(struct client *c, const uint8_t *pkt, size_t len)
{
	if (out_reserve(c, len) < 0)
		return CLIENT_ENOMEM;
	memcpy(c->out + c->out_len, pkt, len);
	out_note(c, pkt, len);
	c->out_len += len;
	return 0;
}

/* Queue PUBACK/PUBREC/PUBREL/PUBCOMP; reason is written in v5 only. */
static int queue_ack(struct client *c, uint8_t type, uint16_t id,
                     uint8_t reason)
{
	struct mqtt_packet p;
	ssize_t r;

	memset(&p, 0, sizeof(p));
	p.type = type;
	p.u.ack.packet_id = id;
	p.u.ack.reason = c->cfg.version == MQTT_V5 ? reason : 0;
	r = queue_packet(c, &p);
	return r < 0 ? (int)r : 0;
}

/* ---- closing ---- */

static void update_io(struct client *c);
static void update_timer(struct client *c);
static void close_now(struct client *c, int err, const char *msg);

static void set_errmsg(struct client *c, const char *msg)
{
	char *m = strdup(msg);

	if (!m)
		return; /* the old message stays; the code still tells */
	free(c->errmsg);
	c->errmsg = m;
}

/*
 * A failure: close now when a loop callback is running the engine, or park
 * it for the timer when a public call is (public calls never call back).
 */
static void fail(struct client *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct client *c, int err, const char *fmt, ...)
{
	char line[400];
	va_list ap;

	if (c->pend)
		return; /* the first failure is the one to report */
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (c->in_api) {
		set_errmsg(c, line);
		c->pend = 1;
		c->pend_err = err;
		ev_io_stop(c->loop, &c->io);
		ev_timer_start(c->loop, &c->timer, evloop_now(c->loop));
		return;
	}
	close_now(c, err, line);
}

static void fail_tr(struct client *c, int r)
{
	fail(c, map_tr_error(r), "%s", tr_errmsg(c->tr));
}

static void in_release(struct client *c)
{
	free(c->in);
	c->in = NULL;
	c->in_len = c->in_need = c->in_cap = 0;
}

/* Tear the connection down without calling back. Its byte counts stay in
 * the client's stats: what the socket moved, and what was never sent. */
static void teardown(struct client *c)
{
	uint32_t dropped;

	ev_io_stop(c->loop, &c->io);
	ev_timer_stop(c->loop, &c->timer);
	if (c->tr) {
		c->wire_in_done += c->tr->wire_in;
		c->wire_out_done += c->tr->wire_out;
	}
	tr_close(c->tr);
	c->tr = NULL;
	c->st.bytes_unsent += out_pending(c);
	free(c->out);
	c->out = NULL;
	c->out_off = c->out_len = c->out_cap = 0;
	in_release(c);
	/* A persistent session keeps its publish flows for the next
	 * connection; everything else ends with this one. */
	dropped = inf_drop(c, !c->persistent);
	c->st.dropped += dropped;
	if (!c->persistent)
		idset_clear(&c->q2);
	c->pend = 0;
	c->shut = 0;
	c->ping_sent = 0;
}

static void close_now(struct client *c, int err, const char *msg)
{
	if (err)
		set_errmsg(c, msg);
	teardown(c);
	c->state = CLIENT_CLOSED;
	c->gen++;
	c->want_writable = 0;
	if (c->cbs->on_closed) {
		cb_enter(c);
		c->cbs->on_closed(c, err,
		                  err ? (c->errmsg ? c->errmsg : msg)
		                      : "disconnected");
		c->busy--;
	}
}

static void destroy(struct client *c)
{
	teardown(c);
	inf_drop(c, 1);
	idset_clear(&c->q2);
	tr_session_del(c->sess);
	free(c->client_id);
	free(c->errmsg);
	free(c);
}

/* ---- sending ---- */

/* Write what the transport takes. 0, or <0 after fail(). */
static int flush(struct client *c)
{
	int64_t now = evloop_now(c->loop);

	while (out_pending(c) > 0) {
		ssize_t n = tr_send(c->tr, c->out + c->out_off, out_pending(c),
		                    now);

		if (n == TR_AGAIN)
			break;
		if (n < 0) {
			fail_tr(c, (int)n);
			return -1;
		}
		c->out_off += (size_t)n;
	}
	if (out_pending(c) == 0) {
		c->out_off = c->out_len = 0;
		if (c->out_cap > OUT_KEEP) {
			free(c->out);
			c->out = NULL;
			c->out_cap = 0;
		}
	}
	return 0;
}

static int send_connect(struct client *c)
{
	struct mqtt_packet p;
	struct mqtt_connect *cn = &p.u.connect;
	ssize_t r;

	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNECT;
	cn->version = c->cfg.version;
	cn->clean_start = c->cfg.clean_start ? 1 : 0;
	cn->keepalive = c->cfg.keepalive;
	cn->client_id.data = (const uint8_t *)c->client_id;
	cn->client_id.len = strlen(c->client_id);
	if (c->cfg.username) {
		cn->has_username = 1;
		cn->username.data = (const uint8_t *)c->cfg.username;
		cn->username.len = strlen(c->cfg.username);
	}
	if (c->cfg.password) {
		cn->has_password = 1;
		cn->password.data = (const uint8_t *)c->cfg.password;
		cn->password.len = c->cfg.password_len
		                           ? c->cfg.password_len
		                           : strlen(c->cfg.password);
	}
	if (c->cfg.version == MQTT_V5) {
		struct mqtt_props *pr = &cn->props;

		if (c->cfg.session_expiry) {
			pr->present |= MQTT_PROP_BIT(MQTT_PROP_SESSION_EXPIRY);
			pr->session_expiry = c->cfg.session_expiry;
		}
		if (c->cfg.receive_max) {
			pr->present |= MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAX);
			pr->receive_max = c->cfg.receive_max;
		}
		/* The broker must not send more (MQTT 5.0 3.1.2.11.4); 0 is
		 * the spec's limit, said by leaving the property out. */
		if (c->cfg.max_packet_size) {
			pr->present |= MQTT_PROP_BIT(MQTT_PROP_MAX_PACKET_SIZE);
			pr->max_packet_size = c->cfg.max_packet_size;
		}
		/* Topic Alias Maximum left out means 0: no aliases. */
	}
	r = queue_packet(c, &p);
	if (r < 0) {
		fail(c, r == CLIENT_ENOMEM ? CLIENT_ENOMEM : CLIENT_EINVAL,
		     "MQTT connect to %s: cannot encode CONNECT (check the "
		     "client id, user name and password)", peer(c));
		return -1;
	}
	c->state = CLIENT_CONNECT_SENT;
	return flush(c);
}

/* The transport is ready: record the time and send CONNECT. */
static void transport_ready(struct client *c)
{
	c->t_ready = c->tr->t_ready ? c->tr->t_ready : evloop_now(c->loop);
	send_connect(c);
}

/* DISCONNECTING: after the flush, end the transport's sending side. */
static void disconnect_progress(struct client *c)
{
	int r;

	if (c->shut || out_pending(c) > 0)
		return;
	r = tr_shutdown(c->tr, evloop_now(c->loop));
	if (r == TR_AGAIN)
		return;
	c->shut = 1;
}

/* ---- receiving ---- */

/*
 * Total length of the packet whose first len bytes are at b, from its fixed
 * header: > 0 once the header is complete, 0 before, or MQTT_EVARINT.
 * mqtt_frame() gives the total of a whole packet only, but it compares the
 * total with a size limit as soon as the header is complete (MQTT_ETOOBIG);
 * so the total of a partial packet is the smallest limit it accepts, found
 * by bisection: about 28 calls of a few instructions, once per packet that
 * spans reads. The codec thus stays the only parser of lengths.
 */
static ssize_t frame_total(const uint8_t *b, size_t len)
{
	size_t lo = 2, hi = MQTT_MAX_FIXED_HEADER + MQTT_MAX_REMAINING;
	ssize_t r = mqtt_frame(b, len, 0, NULL, NULL);

	if (r != MQTT_ENEEDMORE)
		return r; /* whole, or malformed */
	r = mqtt_frame(b, len, 1, NULL, NULL);
	if (r == MQTT_ENEEDMORE)
		return 0; /* the header itself is incomplete */
	if (r != MQTT_ETOOBIG)
		return r;
	while (lo < hi) { /* the total lies in [lo, hi] */
		size_t mid = lo + (hi - lo) / 2;

		if (mqtt_frame(b, len, mid, NULL, NULL) == MQTT_ETOOBIG)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (ssize_t)lo;
}

/* The largest packet we accept: cfg.max_packet_size, 0 the spec's. */
static size_t max_in(const struct client *c)
{
	return c->cfg.max_packet_size
	               ? c->cfg.max_packet_size
	               : MQTT_MAX_FIXED_HEADER + (size_t)MQTT_MAX_REMAINING;
}

/* 1 if a packet of `total` bytes is within our limit; else fail() and 0. */
static int size_ok(struct client *c, size_t total)
{
	if (total <= max_in(c))
		return 1;
	fail(c, CLIENT_EPROTO,
	     "broker %s sent a packet of %zu bytes, over our maximum packet "
	     "size of %zu bytes (raise the client's max_packet_size)", peer(c),
	     total, max_in(c));
	return 0;
}

static void deliver_connack(struct client *c, const struct mqtt_connack *ca,
                            uint32_t gen)
{
	struct client_connected_info info;
	const struct mqtt_props *pr = &ca->props;
	struct tr_info ti;
	uint32_t resent = 0, dropped = 0;

	if (ca->reason != 0) {
		if (c->cfg.version == MQTT_V5 &&
		    (pr->present & MQTT_PROP_BIT(MQTT_PROP_REASON_STRING)))
			fail(c, CLIENT_EREFUSED,
			     "MQTT connect to %s refused: %s (0x%02x): %.*s",
			     peer(c), client_reason_str(c->cfg.version, ca->reason),
			     ca->reason, (int)pr->reason_string.len,
			     (const char *)pr->reason_string.data);
		else
			fail(c, CLIENT_EREFUSED,
			     "MQTT connect to %s refused: %s (0x%02x)", peer(c),
			     client_reason_str(c->cfg.version, ca->reason),
			     ca->reason);
		return;
	}
	c->t_connack = evloop_clock_ns();
	c->keepalive = c->cfg.keepalive;
	c->max_qos = 2;
	c->broker_rmax = 65535;
	c->broker_max_packet = 0;
	if (c->cfg.version == MQTT_V5) {
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_RECEIVE_MAX))
			c->broker_rmax = pr->receive_max;
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_MAX_QOS))
			c->max_qos = pr->max_qos;
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_MAX_PACKET_SIZE))
			c->broker_max_packet = pr->max_packet_size;
		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_SERVER_KEEPALIVE))
			c->keepalive = pr->server_keepalive;
	}
	c->window = c->cfg.inflight_window;
	if (c->window > c->broker_rmax)
		c->window = c->broker_rmax;
	if (c->window == 0)
		c->window = 1;
	c->state = CLIENT_CONNECTED;
	c->st.connects++;

	/* Session state: without a session on the broker's side ours is
	 * void (MQTT 3.2.2-4 / 5.0 3.2.2.1.1); with one, resend what was not
	 * acknowledged, in the original order, PUBLISH with DUP set. */
	if (!ca->session_present) {
		dropped = inf_drop(c, 1);
		c->st.dropped += dropped;
		idset_clear(&c->q2);
	} else if (c->inf_n) {
		struct inflight **order = malloc(c->inf_n * sizeof(*order));
		uint32_t i, n = 0, a, b;

		if (!order) {
			fail(c, CLIENT_ENOMEM, "out of memory");
			return;
		}
		for (i = 0; i < c->inf_cap; i++)
			if (c->inf[i].id)
				order[n++] = &c->inf[i];
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
				r = queue_raw(c, e->pkt, e->pkt_len);
			} else if (e->kind == INF_PUBREL) {
				r = queue_ack(c, MQTT_PUBREL, e->id, 0);
			}
			if (r < 0) {
				free(order);
				fail(c, CLIENT_ENOMEM, "out of memory");
				return;
			}
			resent++;
		}
		free(order);
		c->st.resent += resent;
		if (flush(c) < 0)
			return;
	}

	if (!c->cbs->on_connected)
		return;
	memset(&info, 0, sizeof(info));
	tr_get_info(c->tr, &ti);
	info.t_start = c->t_start;
	info.t_transport_connected = ti.t_connected;
	info.t_transport_ready = c->t_ready;
	info.t_connack = c->t_connack;
	info.session_present = ca->session_present;
	info.max_qos = c->max_qos;
	info.receive_max = c->broker_rmax;
	info.keepalive = c->keepalive;
	info.window = c->window;
	info.max_packet_size = c->broker_max_packet;
	info.resent = resent;
	info.dropped = dropped;
	info.tls_resumed = ti.resumed;
	info.connack = ca;
	cb_enter(c);
	c->cbs->on_connected(c, &info);
	c->busy--;
	(void)gen;
}

static void handle_publish(struct client *c, const struct mqtt_publish *pb,
                           int64_t now, uint32_t gen)
{
	int r = 0;

	/* We never allow topic aliases (our CONNECT leaves Topic Alias
	 * Maximum out, which means 0), so any alias is a protocol error
	 * (MQTT 5.0 3.3.2.3.4), with or without a topic name. */
	if (pb->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)) {
		fail(c, CLIENT_EPROTO,
		     "broker %s sent a PUBLISH with Topic Alias %u, but we "
		     "allow no topic aliases (Topic Alias Maximum 0)", peer(c),
		     (unsigned)pb->props.topic_alias);
		return;
	}
	if (pb->topic.len == 0) {
		fail(c, CLIENT_EPROTO,
		     "broker %s sent a PUBLISH without a topic name", peer(c));
		return;
	}
	if (pb->qos == 2) {
		if (idset_has(&c->q2, pb->packet_id)) {
			/* already delivered; its PUBREC may have been lost */
			c->st.dup_qos2_in++;
			r = queue_ack(c, MQTT_PUBREC, pb->packet_id, 0);
			goto acked;
		}
		if (idset_add(&c->q2, pb->packet_id) < 0) {
			fail(c, CLIENT_ENOMEM, "out of memory");
			return;
		}
	}
	c->st.msgs_in++;
	if (c->cbs->on_message) {
		cb_enter(c);
		c->cbs->on_message(c, pb, now);
		c->busy--;
		if (!alive(c, gen))
			return;
	}
	/* After a client_disconnect() from the callback nothing more may be
	 * sent; the broker resends unacknowledged messages anyway. */
	if (c->state != CLIENT_CONNECTED)
		return;
	if (pb->qos == 1)
		r = queue_ack(c, MQTT_PUBACK, pb->packet_id, 0);
	else if (pb->qos == 2)
		r = queue_ack(c, MQTT_PUBREC, pb->packet_id, 0);
acked:
	if (r < 0)
		fail(c, CLIENT_ENOMEM, "out of memory");
}

static void publish_done(struct client *c, struct inflight *e, uint8_t reason,
                         int64_t now)
{
	uint16_t id = e->id;
	uint8_t qos = e->qos;
	int64_t t_sent = e->t_sent;

	inf_release(c, e);
	c->st.pub_done++;
	if (c->cbs->on_publish_done) {
		cb_enter(c);
		c->cbs->on_publish_done(c, id, qos, reason, t_sent, now);
		c->busy--;
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
static void handle_pubrec(struct client *c, const struct mqtt_ack *a,
                          int64_t now)
{
	struct inflight *e = inf_find(c, a->packet_id);
	uint8_t reason = 0;

	if (e && e->kind == INF_PUB && e->qos == 2) {
		if (a->reason >= 0x80) {
			publish_done(c, e, a->reason, now);
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
	if (queue_ack(c, MQTT_PUBREL, a->packet_id, reason) < 0)
		fail(c, CLIENT_ENOMEM, "out of memory");
}

/* Act on one whole packet. */
static void handle_packet(struct client *c, const uint8_t *buf, size_t len,
                          int64_t now, uint32_t gen)
{
	struct mqtt_packet p;
	struct inflight *e;
	ssize_t r;
	uint8_t type = buf[0] >> 4;

	c->st.bytes_in += len;
	c->st.pkts_in++;
	c->st.in_by_type[type]++;
	c->last_recv = now;

	r = mqtt_decode(buf, len, c->cfg.version, 0, &p);
	if (r < 0) {
		fail(c, CLIENT_EPROTO,
		     "broker %s sent a malformed packet (type %u): %s",
		     peer(c), type, mqtt_strerror((int)r));
		return;
	}
	if (c->state == CLIENT_CONNECT_SENT && p.type != MQTT_CONNACK) {
		if (p.type == MQTT_DISCONNECT)
			goto disconnect;
		fail(c, CLIENT_EPROTO,
		     "MQTT connect to %s: broker sent packet type %u before "
		     "CONNACK", peer(c), p.type);
		return;
	}
	/* After our DISCONNECT only the end of earlier flows counts. */
	if (c->state == CLIENT_DISCONNECTING && p.type != MQTT_PUBACK &&
	    p.type != MQTT_PUBCOMP && p.type != MQTT_SUBACK &&
	    p.type != MQTT_UNSUBACK && p.type != MQTT_PINGRESP)
		return;

	switch (p.type) {
	case MQTT_CONNACK:
		if (c->state != CLIENT_CONNECT_SENT) {
			fail(c, CLIENT_EPROTO, "broker %s sent a second CONNACK",
			     peer(c));
			return;
		}
		deliver_connack(c, &p.u.connack, gen);
		return;
	case MQTT_PUBLISH:
		handle_publish(c, &p.u.publish, now, gen);
		return;
	case MQTT_PUBACK:
		e = inf_find(c, p.u.ack.packet_id);
		if (e && e->kind == INF_PUB && e->qos == 1)
			publish_done(c, e, p.u.ack.reason, now);
		return;
	case MQTT_PUBREC:
		handle_pubrec(c, &p.u.ack, now);
		return;
	case MQTT_PUBREL:
		idset_del(&c->q2, p.u.ack.packet_id);
		if (queue_ack(c, MQTT_PUBCOMP, p.u.ack.packet_id, 0) < 0)
			fail(c, CLIENT_ENOMEM, "out of memory");
		return;
	case MQTT_PUBCOMP:
		e = inf_find(c, p.u.ack.packet_id);
		if (e && e->kind == INF_PUBREL)
			publish_done(c, e, p.u.ack.reason, now);
		return;
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		e = inf_find(c, p.u.suback.packet_id);
		if (e && e->kind == (p.type == MQTT_SUBACK ? INF_SUB
		                                            : INF_UNSUB)) {
			uint16_t id = e->id;

			inf_release(c, e);
			cb_enter(c);
			if (p.type == MQTT_SUBACK && c->cbs->on_subscribed)
				c->cbs->on_subscribed(c, id,
				                      p.u.suback.reasons.data,
				                      p.u.suback.reasons.len);
			else if (p.type == MQTT_UNSUBACK &&
			         c->cbs->on_unsubscribed)
				c->cbs->on_unsubscribed(c, id,
				                        p.u.suback.reasons.data,
				                        p.u.suback.reasons.len);
			c->busy--;
		}
		return;
	case MQTT_PINGRESP:
		c->ping_sent = 0;
		return;
	case MQTT_DISCONNECT:
		goto disconnect;
	default:
		fail(c, CLIENT_EPROTO, "broker %s sent unexpected packet type %u",
		     peer(c), p.type);
		return;
	}
disconnect:
	{
		const struct mqtt_props *pr = &p.u.disconnect.props;
		uint8_t reason = p.u.disconnect.reason;

		if (pr->present & MQTT_PROP_BIT(MQTT_PROP_REASON_STRING))
			fail(c, CLIENT_EDISCONNECTED,
			     "broker %s sent DISCONNECT: %s (0x%02x): %.*s",
			     peer(c), client_reason_str(MQTT_V5, reason), reason,
			     (int)pr->reason_string.len,
			     (const char *)pr->reason_string.data);
		else
			fail(c, CLIENT_EDISCONNECTED,
			     "broker %s sent DISCONNECT: %s (0x%02x)", peer(c),
			     client_reason_str(MQTT_V5, reason), reason);
	}
}

/*
 * Frame and handle the whole packets at the start of buf. Returns the bytes
 * consumed (the rest is the start of a packet that is not whole yet, within
 * our limit), or -1 when the client went away (closed, freed, reconnected)
 * on the way.
 */
static ssize_t parse(struct client *c, const uint8_t *buf, size_t len,
                     uint32_t gen)
{
	size_t off = 0;

	while (off < len) {
		ssize_t tot = mqtt_frame(buf + off, len - off, 0, NULL, NULL);

		if (tot == MQTT_ENEEDMORE) {
			/* Refuse a packet over our limit as soon as its header
			 * says so, before buffering any of it. */
			tot = frame_total(buf + off, len - off);
			if (tot > 0 && !size_ok(c, (size_t)tot))
				return -1;
			break;
		}
		if (tot < 0) {
			fail(c, CLIENT_EPROTO,
			     "broker %s sent a malformed packet: %s", peer(c),
			     mqtt_strerror((int)tot));
			return -1;
		}
		if (!size_ok(c, (size_t)tot))
			return -1;
		handle_packet(c, buf + off, (size_t)tot, rx_time(c), gen);
		if (!alive(c, gen))
			return -1;
		off += (size_t)tot;
	}
	return (ssize_t)off;
}

/*
 * The partial packet's header may have grown complete: learn its total
 * length, check it against our limit, and size c->in to exactly that.
 * 0, or -1 after fail().
 */
static int in_sized(struct client *c)
{
	ssize_t tot;
	uint8_t *b;

	if (c->in_need)
		return 0;
	tot = frame_total(c->in, c->in_len);
	if (tot == 0)
		return 0;
	if (tot < 0) {
		fail(c, CLIENT_EPROTO, "broker %s sent a malformed packet: %s",
		     peer(c), mqtt_strerror((int)tot));
		return -1;
	}
	if (!size_ok(c, (size_t)tot))
		return -1;
	if ((size_t)tot > c->in_cap) {
		b = realloc(c->in, (size_t)tot);
		if (!b) {
			fail(c, CLIENT_ENOMEM, "out of memory");
			return -1;
		}
		c->in = b;
		c->in_cap = (size_t)tot;
	}
	c->in_need = (size_t)tot;
	return 0;
}

/*
 * Keep buf[0, len), the start of a packet that parse() found incomplete and
 * within our limit, as the client's partial packet (none is held now).
 * 0, or -1 after fail().
 */
static int in_keep(struct client *c, const uint8_t *buf, size_t len)
{
	ssize_t tot = frame_total(buf, len);
	size_t cap = tot > 0 ? (size_t)tot : MQTT_MAX_FIXED_HEADER;

	c->in = malloc(cap);
	if (!c->in) {
		fail(c, CLIENT_ENOMEM, "out of memory");
		return -1;
	}
	memcpy(c->in, buf, len);
	c->in_len = len;
	c->in_cap = cap;
	c->in_need = tot > 0 ? (size_t)tot : 0;
	return 0;
}

/*
 * Complete the partial packet from the start of buf: header bytes one at a
 * time until its length is known, then as much of the rest as buf holds.
 * When it is whole, handle it and release the buffer. Returns the bytes of
 * buf used, or -1 when the client went away or failed.
 */
static ssize_t in_complete(struct client *c, const uint8_t *buf, size_t len,
                           uint32_t gen)
{
	size_t off = 0, take;

	while (!c->in_need && off < len) {
		/* in_len < MQTT_MAX_FIXED_HEADER = in_cap here: a header
		 * that long is complete or malformed */
		c->in[c->in_len++] = buf[off++];
		if (in_sized(c) < 0)
			return -1;
	}
	if (!c->in_need)
		return (ssize_t)off;
	take = c->in_need - c->in_len;
	if (take > len - off)
		take = len - off;
	memcpy(c->in + c->in_len, buf + off, take);
	c->in_len += take;
	off += take;
	if (c->in_len == c->in_need) {
		handle_packet(c, c->in, c->in_len, rx_time(c), gen);
		if (!alive(c, gen))
			return -1;
		in_release(c);
	}
	return (ssize_t)off;
}

/* Read until the transport would block (see "Receiving" above). */
static void do_read(struct client *c, uint32_t gen)
{
	for (;;) {
		uint8_t *dst = scratch;
		size_t cap = sizeof(scratch), off = 0;
		ssize_t n, used;

		/* A big partial packet reads its rest in place: the scratch
		 * buffer could hold nothing else, and a copy is saved. */
		if (c->in_need && c->in_need - c->in_len >= sizeof(scratch)) {
			dst = c->in + c->in_len;
			cap = c->in_need - c->in_len;
		}
		n = tr_recv(c->tr, dst, cap, evloop_now(c->loop));
		if (n == TR_AGAIN)
			return;
		if (n == TR_EOF) {
			if (c->state == CLIENT_DISCONNECTING)
				close_now(c, 0, "disconnected");
			else if (c->state == CLIENT_CONNECT_SENT)
				fail(c, CLIENT_ECLOSED,
				     "MQTT connect to %s: broker closed the "
				     "connection before CONNACK (check the "
				     "protocol version, client id and the "
				     "broker's log)", peer(c));
			else
				fail(c, CLIENT_ECLOSED,
				     "connection to %s closed by the broker",
				     peer(c));
			return;
		}
		if (n < 0) {
			if (c->state == CLIENT_DISCONNECTING)
				close_now(c, 0, "disconnected");
			else
				fail_tr(c, (int)n);
			return;
		}
		c->rx_now = evloop_clock_ns();
		c->rx_ncb = c->ncb;
		if (dst != scratch) {
			c->in_len += (size_t)n;
			if (c->in_len == c->in_need) {
				handle_packet(c, c->in, c->in_len, rx_time(c),
				              gen);
				if (!alive(c, gen))
					return;
				in_release(c);
			}
			continue;
		}
		if (c->in_len) {
			used = in_complete(c, scratch, (size_t)n, gen);
			if (used < 0)
				return;
			off = (size_t)used;
		}
		used = parse(c, scratch + off, (size_t)n - off, gen);
		if (used < 0)
			return;
		off += (size_t)used;
		if (off < (size_t)n &&
		    in_keep(c, scratch + off, (size_t)n - off) < 0)
			return;
	}
}

/* ---- loop plumbing ---- */

static void update_io(struct client *c)
{
	uint32_t ev;

	if (!c->tr || c->pend || c->free_pending || c->tr->fd < 0) {
		ev_io_stop(c->loop, &c->io);
		return;
	}
	ev = tr_events(c->tr);
	if (c->state != CLIENT_CONNECTING) {
		ev |= EV_READ;
		if (out_pending(c) > 0)
			ev |= EV_WRITE;
	}
	if (ev_io_start(c->loop, &c->io, ev) < 0)
		fail(c, CLIENT_EIO, "event loop: cannot watch the socket of %s",
		     peer(c));
}

static int64_t ping_timeout(const struct client *c)
{
	return c->cfg.ping_timeout_ns > 0 ? c->cfg.ping_timeout_ns
	                                  : ns_of_s(c->keepalive);
}

/* The earliest time the timer has something to do. */
static int64_t next_deadline(const struct client *c)
{
	int64_t d = EV_NEVER, t;

	if (c->pend)
		return evloop_now(c->loop);
	if (!c->tr)
		return EV_NEVER;
	t = tr_expiry(c->tr);
	if (t < d)
		d = t;
	switch (c->state) {
	case CLIENT_CONNECTING:
	case CLIENT_CONNECT_SENT:
		t = c->t_start + c->cfg.connect_timeout_ns;
		if (t < d)
			d = t;
		break;
	case CLIENT_CONNECTED:
		if (c->keepalive == 0)
			break;
		if (c->ping_sent)
			t = c->ping_sent + ping_timeout(c);
		else
			t = (c->last_send < c->last_recv ? c->last_send
			                                  : c->last_recv) +
			    ns_of_s(c->keepalive);
		if (t < d)
			d = t;
		break;
	case CLIENT_DISCONNECTING:
		if (c->linger_until < d)
			d = c->linger_until;
		break;
	default:
		break;
	}
	return d;
}

/* Arm the timer, moving it only earlier: a timer that fires early finds
 * nothing due and re-arms, which is cheaper than moving it on every
 * packet sent. */
static void update_timer(struct client *c)
{
	int64_t d;

	if (c->free_pending)
		return;
	d = next_deadline(c);
	if (d == EV_NEVER)
		return; /* an armed timer fires once, finds nothing, stops */
	if (!ev_timer_active(&c->timer) || d < c->timer.at)
		ev_timer_start(c->loop, &c->timer, d);
}

static void maybe_writable(struct client *c)
{
	if (!c->want_writable || c->state != CLIENT_CONNECTED || c->pend)
		return;
	if (out_pending(c) > c->cfg.max_outbuf / 2 || c->n_pub >= c->window)
		return;
	c->want_writable = 0;
	if (c->cbs->on_writable) {
		cb_enter(c);
		c->cbs->on_writable(c);
		c->busy--;
	}
}

/* Finish a loop callback: re-arm what this connection needs, owe-callbacks,
 * deferred free. */
static void leave(struct client *c, uint32_t gen)
{
	if (alive(c, gen)) {
		maybe_writable(c);
		if (alive(c, gen)) {
			update_io(c);
			update_timer(c);
		}
	} else if (c->pend && !c->free_pending) {
		update_timer(c);
	}
	c->busy--;
	if (c->busy == 0 && c->free_pending)
		destroy(c);
}

static void do_handshake(struct client *c)
{
	int r = tr_handshake(c->tr, evloop_now(c->loop));

	if (r == TR_AGAIN)
		return;
	if (r < 0) {
		fail_tr(c, r);
		return;
	}
	transport_ready(c);
}

static void io_cb(struct evloop *loop, struct ev_io *w, uint32_t revents)
{
	struct client *c = w->arg;
	uint32_t gen = c->gen;

	(void)loop;
	c->busy++;
	if (c->state == CLIENT_CONNECTING) {
		do_handshake(c);
	} else {
		if (revents & (EV_READ | EV_ERROR | EV_HUP))
			do_read(c, gen);
		/* Reads may have queued acks, or opened a QUIC window. */
		if (alive(c, gen) && (out_pending(c) > 0 ||
		                      (tr_events(c->tr) & EV_WRITE)))
			flush(c);
		if (alive(c, gen) && c->state == CLIENT_DISCONNECTING)
			disconnect_progress(c);
	}
	leave(c, gen);
}

static void timer_cb(struct evloop *loop, struct ev_timer *t)
{
	struct client *c = t->arg;
	uint32_t gen = c->gen;
	int64_t now = evloop_now(loop);

	c->busy++;
	if (c->pend) {
		c->pend = 0;
		close_now(c, c->pend_err, c->errmsg ? c->errmsg : "error");
		goto out;
	}
	if (!c->tr)
		goto out;
	if (tr_expiry(c->tr) <= now) {
		int r = tr_on_expiry(c->tr, now);

		if (r < 0) {
			fail_tr(c, r);
			goto out;
		}
	}
	switch (c->state) {
	case CLIENT_CONNECTING:
	case CLIENT_CONNECT_SENT:
		if (now >= c->t_start + c->cfg.connect_timeout_ns)
			fail(c, CLIENT_ETIMEOUT,
			     c->state == CLIENT_CONNECTING
			             ? "connect to %s: timed out after %.1f s"
			             : "MQTT connect to %s: no CONNACK within "
			               "%.1f s",
			     peer(c), (double)c->cfg.connect_timeout_ns / 1e9);
		break;
	case CLIENT_CONNECTED:
		if (c->keepalive == 0)
			break;
		if (c->ping_sent) {
			if (now >= c->ping_sent + ping_timeout(c))
				fail(c, CLIENT_ETIMEOUT,
				     "keepalive: no PINGRESP from %s within "
				     "%.1f s", peer(c),
				     (double)ping_timeout(c) / 1e9);
		} else if (now >= (c->last_send < c->last_recv
		                           ? c->last_send
		                           : c->last_recv) +
		                          ns_of_s(c->keepalive)) {
			struct mqtt_packet p;

			memset(&p, 0, sizeof(p));
			p.type = MQTT_PINGREQ;
			if (queue_packet(c, &p) < 0) {
				fail(c, CLIENT_ENOMEM, "out of memory");
				break;
			}
			c->ping_sent = now;
			c->st.pings++;
			flush(c);
		}
		break;
	case CLIENT_DISCONNECTING:
		if (now >= c->linger_until)
			close_now(c, 0, "disconnected");
		break;
	default:
		break;
	}
out:
	leave(c, gen);
}

/* ---- public calls ---- */

struct client *client_new(struct evloop *loop, struct tr_ctx *tr,
                          const struct client_config *cfg,
                          const struct client_callbacks *cbs, void *user)
{
	static const struct client_callbacks none;
	struct client *c;
	const char *id = cfg->client_id ? cfg->client_id : "";

	if (cfg->version != MQTT_V311 && cfg->version != MQTT_V5)
		return NULL;
	if (mqtt_valid_utf8((const uint8_t *)id, strlen(id)) != 0)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->client_id = strdup(id);
	c->sess = tr_session_new();
	if (!c->client_id || !c->sess)
		goto fail;
	c->loop = loop;
	c->trctx = tr;
	c->cbs = cbs ? cbs : &none;
	c->user = user;
	c->cfg = *cfg;
	c->cfg.client_id = c->client_id;
	if (c->cfg.inflight_window == 0)
		c->cfg.inflight_window = 20;
	if (c->cfg.connect_timeout_ns <= 0)
		c->cfg.connect_timeout_ns = 10 * EV_NS_PER_SEC;
	if (c->cfg.linger_ns <= 0)
		c->cfg.linger_ns = 2 * EV_NS_PER_SEC;
	if (c->cfg.max_outbuf == 0)
		c->cfg.max_outbuf = 1u << 20;
	c->persistent = cfg->version == MQTT_V5
	                        ? (!cfg->clean_start && cfg->session_expiry > 0)
	                        : !cfg->clean_start;
	c->next_id = 1;
	c->window = c->cfg.inflight_window;
	c->state = CLIENT_IDLE;
	ev_io_init(&c->io, -1, io_cb, c);
	ev_timer_init(&c->timer, timer_cb, c);
	return c;
fail:
	tr_session_del(c->sess);
	free(c->client_id);
	free(c);
	return NULL;
}

void client_free(struct client *c)
{
	if (!c)
		return;
	if (c->busy) {
		/* Inside a callback: buffers may still be in use up the stack.
		 * Go quiet now, free when the callback unwinds. */
		c->free_pending = 1;
		ev_io_stop(c->loop, &c->io);
		ev_timer_stop(c->loop, &c->timer);
		return;
	}
	destroy(c);
}

void *client_user(const struct client *c)
{
	return c->user;
}

void client_set_user(struct client *c, void *user)
{
	c->user = user;
}

int client_connect(struct client *c)
{
	int64_t now;
	int r;

	if ((c->state != CLIENT_IDLE && c->state != CLIENT_CLOSED) ||
	    c->free_pending)
		return CLIENT_ESTATE;
	now = evloop_clock_ns();
	r = tr_open(c->trctx, c->sess, now, &c->tr);
	if (r < 0)
		return CLIENT_ENOMEM;
	c->in_api++;
	c->gen++;
	c->state = CLIENT_CONNECTING;
	c->t_start = now;
	c->t_ready = c->t_connack = 0;
	c->last_send = c->last_recv = evloop_now(c->loop);
	c->ping_sent = 0;
	c->pend = 0;
	c->shut = 0;
	ev_io_init(&c->io, tr_fd(c->tr), io_cb, c);
	r = tr_handshake(c->tr, now);
	if (r == 0)
		transport_ready(c);
	else if (r != TR_AGAIN)
		fail_tr(c, r);
	if (!c->pend)
		update_io(c);
	update_timer(c);
	c->in_api--;
	return 0;
}

/* Common entry for the calls that send: state and output limits. */
static int can_send(struct client *c)
{
	if (c->state != CLIENT_CONNECTED || c->pend || c->free_pending)
		return CLIENT_ESTATE;
	if (out_pending(c) >= c->cfg.max_outbuf) {
		c->want_writable = 1;
		return CLIENT_EBUSY;
	}
	return 0;
}

/* After queueing: write, then re-arm the watcher. */
static void api_send(struct client *c)
{
	flush(c);
	if (!c->pend) {
		update_io(c);
		update_timer(c);
	}
}

int client_publish(struct client *c, const uint8_t *topic, size_t topic_len,
                   const uint8_t *payload, size_t payload_len, uint8_t qos,
                   uint8_t retain, const struct mqtt_props *props)
{
	struct mqtt_packet p;
	struct inflight *e = NULL;
	ssize_t n;
	int r;

	if ((r = can_send(c)) < 0)
		return r;
	if (qos > 2 || topic_len == 0 || topic_len > 65535)
		return CLIENT_EINVAL;
	if (props && c->cfg.version != MQTT_V5)
		return CLIENT_EINVAL;
	if (qos > c->max_qos)
		return CLIENT_EQOS;
	if (qos && c->n_pub >= c->window) {
		c->want_writable = 1;
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
	n = mqtt_encoded_size(c->cfg.version, &p);
	if (n < 0)
		return n == MQTT_ETOOBIG ? CLIENT_ETOOBIG : CLIENT_EINVAL;
	if (c->broker_max_packet && (size_t)n > c->broker_max_packet)
		return CLIENT_ETOOBIG;
	if (qos) {
		e = inf_alloc(c, &r);
		if (!e)
			return r;
		p.u.publish.packet_id = e->id;
		e->kind = INF_PUB;
		e->qos = qos;
		e->t_sent = evloop_clock_ns();
		c->n_pub++;
	}
	c->in_api++;
	/* the size does not depend on the packet id's value */
	n = queue_sized(c, &p, (size_t)n);
	if (n < 0) {
		if (e)
			inf_release(c, e);
		c->in_api--;
		return (int)n;
	}
	if (e && c->persistent) {
		/* kept for a resend after a reconnect */
		e->pkt = malloc((size_t)n);
		if (!e->pkt) {
			c->out_len -= (size_t)n;
			inf_release(c, e);
			c->in_api--;
			return CLIENT_ENOMEM;
		}
		memcpy(e->pkt, c->out + c->out_len - (size_t)n, (size_t)n);
		e->pkt_len = (uint32_t)n;
	}
	c->st.pub_out[qos]++;
	api_send(c);
	c->in_api--;
	return e ? e->id : 0;
}

int client_can_publish(struct client *c, uint8_t qos)
{
	if (can_send(c) < 0)
		return 0;
	if (qos && c->n_pub >= c->window) {
		c->want_writable = 1;
		return 0;
	}
	return 1;
}

static int sub_unsub(struct client *c, uint8_t type,
                     const struct mqtt_topic_filter *filters, size_t n,
                     const struct mqtt_props *props)
{
	struct mqtt_packet p;
	struct inflight *e;
	ssize_t r;
	int err;
	uint16_t id;

	if ((err = can_send(c)) < 0)
		return err;
	if (n == 0 || !filters || (props && c->cfg.version != MQTT_V5))
		return CLIENT_EINVAL;
	memset(&p, 0, sizeof(p));
	p.type = type;
	p.u.subscribe.filters = filters;
	p.u.subscribe.n_filters = n;
	if (props)
		p.u.subscribe.props = *props;
	p.u.subscribe.packet_id = 1;
	r = mqtt_encoded_size(c->cfg.version, &p);
	if (r < 0)
		return CLIENT_EINVAL;
	if (c->broker_max_packet && (size_t)r > c->broker_max_packet)
		return CLIENT_ETOOBIG;
	e = inf_alloc(c, &err);
	if (!e)
		return err;
	e->kind = type == MQTT_SUBSCRIBE ? INF_SUB : INF_UNSUB;
	e->t_sent = evloop_clock_ns();
	id = e->id;
	p.u.subscribe.packet_id = id;
	c->in_api++;
	r = queue_packet(c, &p);
	if (r < 0) {
		inf_release(c, e);
		c->in_api--;
		return (int)r;
	}
	api_send(c);
	c->in_api--;
	return id;
}

int client_subscribe(struct client *c, const struct mqtt_topic_filter *filters,
                     size_t n, const struct mqtt_props *props)
{
	return sub_unsub(c, MQTT_SUBSCRIBE, filters, n, props);
}

int client_unsubscribe(struct client *c,
                       const struct mqtt_topic_filter *filters, size_t n,
                       const struct mqtt_props *props)
{
	return sub_unsub(c, MQTT_UNSUBSCRIBE, filters, n, props);
}

int client_disconnect(struct client *c, uint8_t reason)
{
	struct mqtt_packet p;

	if (c->free_pending || c->pend)
		return CLIENT_ESTATE;
	switch (c->state) {
	case CLIENT_IDLE:
	case CLIENT_CLOSED:
	case CLIENT_DISCONNECTING:
		return CLIENT_ESTATE;
	case CLIENT_CONNECTING:
	case CLIENT_CONNECT_SENT:
		/* Abandon the attempt; report it from the timer. */
		c->pend = 1;
		c->pend_err = 0;
		ev_io_stop(c->loop, &c->io);
		ev_timer_start(c->loop, &c->timer, evloop_now(c->loop));
		return 0;
	default:
		break;
	}
	c->in_api++;
	memset(&p, 0, sizeof(p));
	p.type = MQTT_DISCONNECT;
	p.u.disconnect.reason = c->cfg.version == MQTT_V5 ? reason : 0;
	if (queue_packet(c, &p) < 0) {
		c->in_api--;
		return CLIENT_EINVAL;
	}
	c->state = CLIENT_DISCONNECTING;
	c->linger_until = evloop_now(c->loop) + c->cfg.linger_ns;
	flush(c);
	if (!c->pend) {
		disconnect_progress(c);
		update_io(c);
		update_timer(c);
	}
	c->in_api--;
	return 0;
}

enum client_state client_state(const struct client *c)
{
	return c->state;
}

const struct client_stats *client_stats(struct client *c)
{
	c->st.wire_in = c->wire_in_done + (c->tr ? c->tr->wire_in : 0);
	c->st.wire_out = c->wire_out_done + (c->tr ? c->tr->wire_out : 0);
	return &c->st;
}

unsigned client_inflight(const struct client *c)
{
	return c->n_pub;
}

unsigned client_window(const struct client *c)
{
	return c->window;
}

struct tr_conn *client_transport(const struct client *c)
{
	return c->tr;
}

const char *client_last_error(const struct client *c)
{
	return c->errmsg ? c->errmsg : "";
}

size_t client_heap_bytes(const struct client *c)
{
	size_t n = sizeof(*c) + strlen(c->client_id) + 1;
	uint32_t i;
	size_t sl;

	n += c->out_cap + c->in_cap;
	n += (size_t)c->inf_cap * sizeof(struct inflight);
	for (i = 0; i < c->inf_cap; i++)
		n += c->inf[i].pkt_len;
	n += (size_t)c->q2.cap * sizeof(uint16_t);
	if (c->sess) {
		tr_session_data(c->sess, &sl);
		n += 32 + sl;
	}
	if (c->errmsg)
		n += strlen(c->errmsg) + 1;
	return n;
}
