/*
 * fuzz_session.c: libFuzzer target for the MQTT session as pure logic
 * (mqtt/session.h): no loop, no socket, no transport, a virtual clock.
 *
 * The fuzzer plays the broker and the session's owner at once. After a
 * configuration header, every input byte is an operation (some take the
 * next bytes as arguments): broker bytes in through sess_input in chunks
 * of its choosing (or synthesized acks and CONNACKs for the flows the
 * session has open, so that it need not guess packet ids), partial takes
 * of the session's output (sess_pending/sess_sent), time passing
 * (sess_on_time), application calls (publish, subscribe, unsubscribe,
 * disconnect), and the connection's life (sess_connecting, sess_start,
 * sess_eof, sess_closed, a failure the owner found, sess_halt). Callbacks
 * may call the session back (publish, subscribe, disconnect, halt, fail).
 *
 * Besides crashes, leaks and UBSan, these break the run (abort with a
 * message):
 *  - a byte the session sends does not decode, as a server would decode
 *    it, into a valid client packet; CONNECT is not the first packet of a
 *    connection or comes twice; anything follows DISCONNECT; a PUBLISH or
 *    SUBSCRIBE carries an id we were not handed for that kind; DUP is set
 *    on a first send or missing on a resend after a reconnect;
 *  - a PUBREL with a success code for an id the broker never acknowledged
 *    with a successful PUBREC (the broker's bytes are framed and decoded
 *    here as they are fed; a v5 PUBREL 0x92 answers an unknown id);
 *  - sess_inflight() disagrees with the publish flows we count, a
 *    completion names a flow we did not start or of another kind, or
 *    CONNACK's resent/dropped counts disagree with them;
 *  - the session holds more heap than our maximum packet size plus 64
 *    KiB, or, without a persistent session, anything beyond what a fresh
 *    session holds once its connection is closed;
 *  - after sess_closed: state not CLOSED, bytes still pending, a deadline
 *    set, input taken, the counters not adding up (bytes queued minus
 *    bytes dropped unsent must equal the bytes taken); then sess_connecting
 *    must work;
 *  - sess_on_time before sess_deadline() does something, or, at or after
 *    it, returns 0 leaving a deadline not in the future (a busy loop for
 *    the owner's timer);
 *  - a failure without a kept message, SESS_STOPPED without a halt,
 *    SESS_DONE without our DISCONNECT, bytes before sess_start;
 *  - sess_can_publish() says yes and sess_publish() then says ESTATE,
 *    EWINDOW or EBUSY; a "writable" owed while publishing is not possible;
 *  - a large packet read in place (sess_rx_buffer) offers a buffer other
 *    than exactly what the packet misses.
 *
 * Input: 4 configuration bytes, then operations (missing bytes are 0).
 *   [0] bit 0 MQTT 5.0 (else 3.1.1); bit 1 persistent session; bits 2-3
 *       our maximum packet size: the default (1 MiB), 4096, 64, 16; bit 4
 *       keepalive 0 (else 5 s); bit 5 inflight window 2 (else 20); bit 6
 *       output limit 64 bytes; bit 7 user name and password, and (v5)
 *       Receive Maximum 4 in CONNECT
 *   [1] bits 0-2 re-entrant action in a callback: none, publish QoS 1,
 *       publish QoS 2, subscribe, disconnect, halt, fail, disconnect then
 *       publish; bits 3-7 at callback number n (0: at every callback)
 *   [2] bit 0 on_message publishes back at the message's QoS; bit 1
 *       on_publish_done publishes again; bits 2-3 the owner's clock moves
 *       by 0, 1 ns, 1 ms or 1 s at every read; bit 4 v5 publishes carry
 *       properties
 *   [3] bits 0-3 connect timeout in 200 ms steps (0: 10 s); bits 4-7
 *       linger after our DISCONNECT in 100 ms steps (0: 2 s)
 * Operations, by the low 4 bits of the byte o (a = o >> 4):
 *   0 broker bytes: the next a + 1 input bytes
 *   1 broker bytes: the next (a + 1) * 8 input bytes
 *   2 an ack from the broker: a & 3 picks PUBACK, PUBREC, PUBCOMP or the
 *     (UN)SUBACK of an open (un)subscribe; the next byte picks the flow
 *     (or, with bit 6 of o, an id of its own); bit 7: v5 failure reason
 *   3 CONNACK: bit 4 session present, bit 5 refused, bit 6 v5 properties
 *     (Receive Maximum 2, Maximum QoS 1, Server Keep Alive 1 s, Maximum
 *     Packet Size 64)
 *   4 take output: a * a bytes (0: all pending)
 *   5 time: advance by 2^a ms (a = 0: not at all), then sess_on_time
 *   6 publish QoS (a & 3) % 3 with (a >> 2) * 40 payload bytes
 *   7 subscribe (a even) or unsubscribe
 *   8 disconnect (a == 1: v5 reason 0x04)
 *   9 the broker ends the stream: sess_eof
 *  10 the connection is gone: sess_closed
 *  11 a new connection: sess_connecting, and sess_start too when a is odd
 *  12 sess_start
 *  13 the owner gives up: a failure it found (a even) or sess_halt
 *  14 a large PUBLISH from the broker, 1 KiB * (next byte + 1), fed in
 *     16 KiB pieces, read in place where the session offers its buffer
 *  15 queries: sess_can_publish, sess_take_writable
 *
 * FUZZ_SESSION_TRACE=1 prints the operations and callbacks:
 *   FUZZ_SESSION_TRACE=1 build/fuzz/fuzz_session crash-...
 */
#define FUZZ_NAME "fuzz_session"

#include "mqtt/session.h"
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR_LEN 4
#define SENT_MAX 8192     /* the session's output being framed */
#define RECV_MAX 8192     /* the broker's bytes being framed */
#define HEAP_SLACK 65536  /* session heap allowed beyond the packet limit */
#define ISSUE_BUDGET 96   /* publishes and (un)subscribes per run (< FLOW_MAX) */
#define BIG_CHUNK 16384   /* a large packet is fed in pieces this big */
#define MS INT64_C(1000000)
#define NEVER INT64_MAX

enum cb_action {
	CB_NONE = 0,
	CB_PUBLISH1,
	CB_PUBLISH2,
	CB_SUBSCRIBE,
	CB_DISCONNECT,
	CB_HALT,
	CB_FAIL,
	CB_DISCONNECT_PUBLISH,
};

/* One run's state; reset at the start of every input. */
static struct {
	/* configuration */
	uint8_t version;
	int persistent;
	uint32_t max_packet;
	int action;
	unsigned action_at;
	int reply, refill, pub_props;
	int64_t clock_step;

	const uint8_t *in;
	size_t in_len, off;
	struct mqtt_session *s;
	int64_t now;
	size_t heap_fresh;  /* sess_heap_bytes() of the new session */
	int up;             /* a connection: from sess_connecting to closed */
	int halted;         /* we called sess_halt() */
	unsigned conn_no;   /* connections so far */
	unsigned ncb, issued;
	/* the current connection's output, framed and decoded as taken */
	uint8_t sent[SENT_MAX];
	size_t sent_len;
	unsigned sent_pkts;
	int sent_disconnect;
	uint64_t sent_total; /* bytes taken, every connection */
	uint64_t fed_total;  /* broker bytes the session accepted to read */
	/* the current connection's input, framed and decoded as fed; a
	 * packet too long for rx[] is skipped (rx_skip) unless it is a
	 * PUBREC; rx_dead: one we could not follow ends, for the run, the
	 * check that needs to know every PUBREC */
	uint8_t rx[RECV_MAX];
	size_t rx_len, rx_skip;
	int rx_dead;
	uint8_t pubrec_ok[65536 / 8];
	/* per packet id: the kind of the flow last handed out with it, and
	 * the connection it was handed out in */
	uint8_t issued_kind[65536];
	uint16_t issued_conn[65536];
	struct flows fl;
} g;

static int g_trace = -1; /* -1: the environment not read yet */

#define TRACE(...)                                                            \
	do {                                                                  \
		if (g_trace)                                                  \
			fprintf(stderr, "fuzz_session: " __VA_ARGS__);        \
	} while (0)

static uint8_t next_byte(void)
{
	return g.off < g.in_len ? g.in[g.off++] : 0;
}

/* A flow handed out now: also note its kind and connection per id. */
static void noted(int id)
{
	struct flow *f = id > 0 ? flow_find(&g.fl, (uint16_t)id) : NULL;

	if (!f)
		return;
	g.issued_kind[id] = f->kind;
	g.issued_conn[id] = (uint16_t)g.conn_no;
}

/* ---- what the application does ---- */

static void issue_publish(uint8_t qos, size_t payload_len)
{
	static const uint8_t payload[160];
	struct mqtt_props pr;
	int can, r;

	if (g.issued >= ISSUE_BUDGET)
		return;
	g.issued++;
	fz_pub_props(&pr);
	can = sess_can_publish(g.s, qos);
	r = sess_publish(g.s, (const uint8_t *)FZ_TOPIC, strlen(FZ_TOPIC),
	                 payload, payload_len, qos, 0,
	                 g.pub_props && g.version == MQTT_V5 ? &pr : NULL,
	                 g.now);
	TRACE("publish QoS %u, %zu bytes: %d\n", qos, payload_len, r);
	if (can)
		CHECK(r != CLIENT_ESTATE && r != CLIENT_EWINDOW &&
		      r != CLIENT_EBUSY);
	fz_published(&g.fl, r, qos);
	noted(r);
}

static void issue_sub(int unsub)
{
	struct mqtt_topic_filter f[2];
	int r;

	if (g.issued >= ISSUE_BUDGET)
		return;
	g.issued++;
	fz_sub_filters(f);
	r = unsub ? sess_unsubscribe(g.s, f, 1, NULL, g.now)
	          : sess_subscribe(g.s, f, 2, NULL, g.now);
	TRACE("%ssubscribe: %d\n", unsub ? "un" : "", r);
	fz_subscribed(&g.fl, r, unsub);
	noted(r);
}

/* Count a callback and, at the chosen one, call the session back. */
static void act(void)
{
	int r;

	g.ncb++;
	if (g.action == CB_NONE || (g.action_at && g.ncb != g.action_at))
		return;
	switch (g.action) {
	case CB_PUBLISH1:
	case CB_PUBLISH2:
		issue_publish((uint8_t)g.action, 8);
		break;
	case CB_SUBSCRIBE:
		issue_sub(0);
		break;
	case CB_DISCONNECT:
	case CB_DISCONNECT_PUBLISH:
		r = sess_disconnect(g.s, 0, g.now);
		CHECK(r == 0 || r == CLIENT_ESTATE);
		if (g.action == CB_DISCONNECT_PUBLISH)
			CHECK(sess_publish(g.s, (const uint8_t *)"x", 1, NULL,
			                   0, 1, 0, NULL, g.now) ==
			      CLIENT_ESTATE);
		break;
	case CB_HALT:
		sess_halt(g.s);
		g.halted = 1;
		break;
	case CB_FAIL:
		r = sess_fail(g.s, CLIENT_EIO, "owner: injected failure");
		CHECK(r < 0 && sess_failed(g.s));
		break;
	}
}

/* ---- the session's callbacks ---- */

static void on_connack(void *owner, const struct sess_connack_info *info)
{
	CHECK(owner == &g);
	CHECK(sess_state(g.s) == CLIENT_CONNECTED);
	CHECK(info->connack && info->connack->reason == 0);
	CHECK(info->window >= 1 && info->window == sess_window(g.s));
	CHECK(info->max_qos <= 2);
	CHECK(info->t_connect_queued > 0 &&
	      info->t_connack >= info->t_connect_queued);
	fz_touch_props(&info->connack->props);
	/* Without a session on the broker every flow is dropped; with one,
	 * every publish flow is sent again (a non-persistent session has
	 * none left by now). */
	if (!info->session_present) {
		CHECK(info->resent == 0);
		CHECK(info->dropped == flow_drop(&g.fl, 1));
	} else {
		CHECK(info->dropped == 0);
		CHECK(info->resent == g.fl.n_pub);
	}
	CHECK(sess_inflight(g.s) == g.fl.n_pub);
	TRACE("connack: session %u, window %u, resent %u, dropped %u\n",
	      info->session_present, info->window, info->resent,
	      info->dropped);
	act();
}

static void on_message(void *owner, const struct mqtt_publish *m,
                       int64_t now)
{
	CHECK(owner == &g);
	CHECK(now <= g.now);
	fz_check_message(m);
	TRACE("message: QoS %u, id %u, %zu bytes\n", m->qos, m->packet_id,
	      m->payload.len);
	act();
	if (g.reply && sess_state(g.s) == CLIENT_CONNECTED)
		issue_publish(m->qos, 8);
}

static void on_publish_done(void *owner, uint16_t id, uint8_t qos,
                            uint8_t reason, int64_t t_sent, int64_t now)
{
	struct flow *f = flow_find(&g.fl, id);

	CHECK(owner == &g);
	TRACE("publish done: id %u, QoS %u, reason 0x%02x\n", id, qos, reason);
	CHECK(f && f->kind == qos);
	/* also when the ack came in the read whose callback published */
	CHECK(t_sent > 0 && now >= t_sent);
	flow_del(&g.fl, f);
	CHECK(sess_inflight(g.s) == g.fl.n_pub);
	act();
	if (g.refill && sess_state(g.s) == CLIENT_CONNECTED)
		issue_publish(qos, 8);
}

static void on_subacked(void *owner, uint16_t id, const uint8_t *codes,
                        size_t n, uint8_t kind)
{
	struct flow *f = flow_find(&g.fl, id);

	CHECK(owner == &g);
	TRACE("%s: id %u, %zu codes\n",
	      kind == FLOW_SUB ? "subscribed" : "unsubscribed", id, n);
	CHECK(f && f->kind == kind);
	/* a 3.1.1 UNSUBACK carries no codes */
	CHECK(kind == FLOW_UNSUB && g.version == MQTT_V311 ? n == 0 : n >= 1);
	fz_touch(codes, n);
	flow_del(&g.fl, f);
	act();
}

static void on_subscribed(void *owner, uint16_t id, const uint8_t *codes,
                          size_t n)
{
	on_subacked(owner, id, codes, n, FLOW_SUB);
}

static void on_unsubscribed(void *owner, uint16_t id, const uint8_t *codes,
                            size_t n)
{
	on_subacked(owner, id, codes, n, FLOW_UNSUB);
}

/* The owner's clock: it moves on while callbacks run. */
static int64_t h_clock(void *owner)
{
	CHECK(owner == &g);
	g.now += g.clock_step;
	return g.now;
}

static const struct sess_handler handler = {
	.on_connack = on_connack,
	.on_message = on_message,
	.on_publish_done = on_publish_done,
	.on_subscribed = on_subscribed,
	.on_unsubscribed = on_unsubscribed,
	.clock = h_clock,
};

/* ---- the session's bytes, decoded as a broker would ---- */

static void check_packet(const uint8_t *b, size_t n)
{
	struct mqtt_packet p;
	ssize_t r = mqtt_decode(b, n, g.version, 1, &p);
	uint16_t id;

	if (r != (ssize_t)n) {
		fprintf(stderr, "fuzz_session: the session sent a packet of "
		        "type %u that a broker cannot decode: %s\n", b[0] >> 4,
		        mqtt_strerror((int)r));
		abort();
	}
	TRACE("sent: type %u, %zu bytes\n", p.type, n);
	/* CONNECT first and only once; nothing after DISCONNECT */
	CHECK((g.sent_pkts == 0) == (p.type == MQTT_CONNECT));
	if (p.type == MQTT_CONNECT)
		CHECK(p.u.connect.version == g.version);
	CHECK(!g.sent_disconnect);
	g.sent_disconnect = p.type == MQTT_DISCONNECT;
	g.sent_pkts++;
	switch (p.type) {
	case MQTT_PUBLISH:
		id = p.u.publish.packet_id;
		if (p.u.publish.qos == 0)
			break;
		CHECK(g.issued_kind[id] == p.u.publish.qos);
		/* DUP on a resend after a reconnect, never on a first send */
		CHECK(p.u.publish.dup == (g.issued_conn[id] != g.conn_no));
		break;
	case MQTT_SUBSCRIBE:
		CHECK(g.issued_kind[p.u.subscribe.packet_id] == FLOW_SUB);
		break;
	case MQTT_UNSUBSCRIBE:
		CHECK(g.issued_kind[p.u.subscribe.packet_id] == FLOW_UNSUB);
		break;
	case MQTT_PUBREL:
		id = p.u.ack.packet_id;
		if (p.u.ack.reason == 0x92)
			CHECK(g.version == MQTT_V5);
		else
			CHECK(p.u.ack.reason == 0 &&
			      (g.rx_dead || (g.pubrec_ok[id / 8] >> (id % 8) & 1)));
		break;
	}
}

/* Frame what the session handed over, packet by packet. */
static void check_sent(const uint8_t *buf, size_t len)
{
	while (len > 0) {
		size_t k = sizeof(g.sent) - g.sent_len;

		if (k > len)
			k = len;
		memcpy(g.sent + g.sent_len, buf, k);
		g.sent_len += k;
		buf += k;
		len -= k;
		for (;;) {
			ssize_t n = mqtt_frame(g.sent, g.sent_len, 0, NULL,
			                       NULL);

			if (n == MQTT_ENEEDMORE) {
				/* our packets are small: one fits */
				CHECK(g.sent_len < sizeof(g.sent));
				break;
			}
			CHECK(n > 0);
			check_packet(g.sent, (size_t)n);
			g.sent_len -= (size_t)n;
			memmove(g.sent, g.sent + n, g.sent_len);
		}
	}
}

/* Frame and decode, as the session should, what the broker sent; note
 * the successful PUBRECs. */
static void track_recv(const uint8_t *b, size_t n)
{
	while (n > 0 && !g.rx_dead) {
		size_t k;

		if (g.rx_skip) {
			k = n < g.rx_skip ? n : g.rx_skip;
			g.rx_skip -= k;
			b += k;
			n -= k;
			continue;
		}
		k = sizeof(g.rx) - g.rx_len;
		if (k > n)
			k = n;
		memcpy(g.rx + g.rx_len, b, k);
		g.rx_len += k;
		b += k;
		n -= k;
		for (;;) {
			struct mqtt_packet p;
			ssize_t t = mqtt_frame(g.rx, g.rx_len, 0, NULL, NULL), r;

			if (t == MQTT_ENEEDMORE && g.rx_len == sizeof(g.rx)) {
				t = mqtt_frame_len(g.rx, g.rx_len);
				if (t <= 0 || (g.rx[0] >> 4) == MQTT_PUBREC) {
					g.rx_dead = 1;
					return;
				}
				g.rx_skip = (size_t)t - g.rx_len;
				g.rx_len = 0;
				break;
			}
			if (t == MQTT_ENEEDMORE)
				break;
			if (t < 0) {
				g.rx_dead = 1;
				return;
			}
			r = mqtt_decode(g.rx, (size_t)t, g.version, 0, &p);
			if (r != t) {
				g.rx_dead = 1;
				return;
			}
			if (p.type == MQTT_PUBREC && p.u.ack.reason < 0x80)
				g.pubrec_ok[p.u.ack.packet_id / 8] |=
					(uint8_t)(1u << (p.u.ack.packet_id % 8));
			g.rx_len -= (size_t)t;
			memmove(g.rx, g.rx + t, g.rx_len);
		}
	}
}

/* ---- the connection's life ---- */

static void check_all(void)
{
	const uint8_t *p;
	size_t pending = sess_pending(g.s, &p);
	enum client_state st = sess_state(g.s);

	CHECK(sess_inflight(g.s) == g.fl.n_pub);
	CHECK(sess_heap_bytes(g.s) <= g.max_packet + HEAP_SLACK);
	CHECK(g.up ? st != CLIENT_IDLE && st != CLIENT_CLOSED
	           : st == CLIENT_IDLE || st == CLIENT_CLOSED);
	/* nothing before sess_start, and nothing once closed */
	if (st == CLIENT_CONNECTING || !g.up)
		CHECK(pending == 0);
	if (pending)
		CHECK(p != NULL);
}

/* The connection is gone (any reason): the owner calls sess_closed. */
static void close_conn(void)
{
	const struct client_stats *st;
	const uint8_t *p;
	uint8_t x = 0x30;

	TRACE("closed\n");
	sess_closed(g.s);
	g.up = 0;
	g.halted = 0;
	flow_drop(&g.fl, !g.persistent);
	CHECK(sess_state(g.s) == CLIENT_CLOSED);
	CHECK(sess_inflight(g.s) == g.fl.n_pub);
	CHECK(sess_pending(g.s, &p) == 0);
	CHECK(sess_deadline(g.s) == NEVER);
	CHECK(sess_errmsg(g.s)[0] == 0); /* the owner has taken it */
	CHECK(sess_input(g.s, &x, 1, g.now) == CLIENT_ESTATE);
	CHECK(sess_start(g.s, g.now) == CLIENT_ESTATE);
	st = sess_stats(g.s);
	CHECK(st->bytes_out - st->bytes_unsent == g.sent_total);
	CHECK(st->bytes_in <= g.fed_total);
	/* a closed connection leaves no buffers; only a persistent
	 * session's flows stay */
	if (!g.persistent)
		CHECK(sess_heap_bytes(g.s) == g.heap_fresh);
}

/* After a call that may end the connection: act on its result. */
static void after(int r)
{
	enum client_state st = sess_state(g.s);

	CHECK(r == 0 || r == SESS_STOPPED || r == SESS_DONE ||
	      (r <= CLIENT_EINVAL && r >= CLIENT_EQUIC));
	if (r < 0) {
		CHECK(sess_failed(g.s));
		CHECK(sess_errmsg(g.s)[0] != 0);
		CHECK(sess_deadline(g.s) == NEVER);
		TRACE("failed: %d %s\n", r, sess_errmsg(g.s));
	}
	if (r == SESS_STOPPED)
		CHECK(g.halted);
	if (r == SESS_DONE)
		CHECK(st == CLIENT_DISCONNECTING);
	if (r != 0)
		close_conn();
}

static int takes_input(void)
{
	enum client_state st = sess_state(g.s);

	return st == CLIENT_CONNECT_SENT || st == CLIENT_CONNECTED ||
	       st == CLIENT_DISCONNECTING;
}

/* The broker's bytes, read now. */
static void feed(const uint8_t *b, size_t n)
{
	int r;

	if (n == 0)
		return;
	if (!g.up || !takes_input()) {
		CHECK(sess_input(g.s, b, n, g.now) == CLIENT_ESTATE);
		return;
	}
	track_recv(b, n);
	g.fed_total += n;
	r = sess_input(g.s, b, n, g.now);
	TRACE("input %zu bytes: %d\n", n, r);
	CHECK(!g.halted || r != 0);
	after(r);
}

static void take(size_t n)
{
	const uint8_t *p;
	size_t len = sess_pending(g.s, &p);

	if (len == 0)
		return;
	if (n == 0 || n > len)
		n = len;
	check_sent(p, n);
	sess_sent(g.s, n);
	g.sent_total += n;
	CHECK(sess_pending(g.s, &p) == len - n);
}

static void new_conn(int start)
{
	enum client_state st = sess_state(g.s);
	const uint8_t *p;
	int r;

	if (st != CLIENT_IDLE && st != CLIENT_CLOSED) {
		CHECK(sess_connecting(g.s, g.now) == CLIENT_ESTATE);
		return;
	}
	CHECK(sess_connecting(g.s, g.now) == 0);
	CHECK(sess_state(g.s) == CLIENT_CONNECTING && !sess_failed(g.s));
	g.up = 1;
	g.conn_no++;
	g.sent_len = g.sent_pkts = 0;
	g.sent_disconnect = 0;
	g.rx_len = g.rx_skip = 0;
	TRACE("connection %u\n", g.conn_no);
	if (!start)
		return;
	r = sess_start(g.s, g.now);
	if (r == 0)
		CHECK(sess_state(g.s) == CLIENT_CONNECT_SENT &&
		      sess_pending(g.s, &p) > 0);
	after(r);
}

/* ---- operations ---- */

/* An ack from the broker for one of our flows (or any id). */
static void op_ack(uint8_t o)
{
	static const uint8_t types[3] = { 0x40, 0x50, 0x70 };
	uint8_t pick = next_byte(), b[8];
	unsigned kind = (o >> 4) & 3, i;
	uint16_t id = (uint16_t)(pick + 1);
	size_t n;
	int v5 = g.version == MQTT_V5;

	if (!(o & 0x40) && g.fl.n) {
		id = g.fl.f[pick % g.fl.n].id;
		if (kind == 3) /* the (un)subscribe among the flows, if any */
			for (i = 0; i < g.fl.n; i++)
				if (g.fl.f[i].kind >= FLOW_SUB)
					id = g.fl.f[i].id;
	}
	b[2] = (uint8_t)(id >> 8);
	b[3] = (uint8_t)id;
	if (kind < 3) {
		b[0] = types[kind];
		b[1] = 2;
		n = 4;
		if (v5 && (o & 0x80)) {
			b[1] = 3;
			b[4] = 0x80;
			n = 5;
		}
	} else if (g.issued_kind[id] == FLOW_UNSUB) {
		b[0] = 0xb0; /* 3.1.1: no codes; v5: no properties, success */
		b[1] = v5 ? 4 : 2;
		b[4] = b[5] = 0;
		n = v5 ? 6 : 4;
	} else {
		b[0] = 0x90;
		b[1] = v5 ? 4 : 3;
		b[4] = 0;
		b[v5 ? 5 : 4] = (o & 0x80) ? 0x80 : 1;
		n = v5 ? 6 : 5;
	}
	feed(b, n);
}

static void op_connack(uint8_t o)
{
	uint8_t b[32];
	size_t n = 0;
	int refused = !!(o & 0x20);

	b[n++] = 0x20;
	b[n++] = 0; /* length, below */
	b[n++] = (o & 0x10) ? 1 : 0;
	b[n++] = refused ? (g.version == MQTT_V5 ? 0x87 : 5) : 0;
	if (g.version == MQTT_V5) {
		if (o & 0x40) {
			static const uint8_t props[] = {
				13, 0x21, 0, 2, 0x24, 1, 0x13, 0, 1,
				0x27, 0, 0, 0, 64,
			};

			memcpy(b + n, props, sizeof(props));
			n += sizeof(props);
		} else {
			b[n++] = 0;
		}
	}
	b[1] = (uint8_t)(n - 2);
	feed(b, n);
}

static void op_time(unsigned a)
{
	int64_t d = sess_deadline(g.s), t;
	const uint8_t *p;
	size_t before = sess_pending(g.s, &p);
	int r;

	if (a)
		g.now += (INT64_C(1) << (a - 1)) * MS;
	if (!g.up)
		return; /* no connection, no timer */
	r = sess_on_time(g.s, g.now);
	TRACE("time %lld ms, deadline %lld: %d\n", (long long)(g.now / MS),
	      (long long)(d == NEVER ? -1 : d / MS), r);
	if (g.now < d) {
		/* nothing is due before the deadline */
		CHECK(r == 0 && sess_pending(g.s, &p) == before);
	} else if (r == 0) {
		/* what was due is done: the next deadline is later */
		t = sess_deadline(g.s);
		CHECK(t > g.now);
	}
	after(r);
}

/* A QoS 0 PUBLISH to "t" of `total` bytes from the broker, fed in pieces,
 * read in place where the session offers its own buffer. */
static size_t varint_len(size_t v)
{
	return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

static void op_big_publish(void)
{
	static uint8_t chunk[BIG_CHUNK];
	size_t total = 1024 * ((size_t)next_byte() + 1), rem, left, hl, i;
	uint8_t head[16];
	size_t n = 0;
	/* with no partial packet held, the session's buffer for this one
	 * is offered whole */
	int alone = !g.rx_dead && g.rx_len == 0 && g.rx_skip == 0;

	for (hl = 1; varint_len(total - 1 - hl) != hl; hl++)
		;
	rem = total - 1 - hl;
	head[n++] = 0x30;
	for (i = 0; i < hl; i++) {
		head[n++] = (uint8_t)((rem & 0x7f) | (i + 1 < hl ? 0x80 : 0));
		rem >>= 7;
	}
	head[n++] = 0;
	head[n++] = 1;
	head[n++] = 't';
	if (g.version == MQTT_V5)
		head[n++] = 0; /* no properties */
	CHECK(mqtt_frame_len(head, n) == (ssize_t)total);
	TRACE("big publish: %zu bytes\n", total);
	feed(head, n);
	left = total - n;
	memset(chunk, 'b', sizeof(chunk));
	while (left > 0 && g.up && takes_input()) {
		size_t cap = 0, k = left < BIG_CHUNK ? left : BIG_CHUNK;
		uint8_t *dst = sess_rx_buffer(g.s, &cap);
		int r;

		if (!dst) {
			feed(chunk, k);
		} else {
			/* exactly what the packet still misses */
			CHECK(cap > 0 && (!alone || cap == left));
			if (k > cap)
				k = cap;
			memset(dst, 'b', k);
			track_recv(dst, k);
			g.fed_total += k;
			r = sess_input(g.s, dst, k, g.now);
			TRACE("input %zu bytes in place: %d\n", k, r);
			CHECK(!g.halted || r != 0);
			after(r);
		}
		left -= k;
	}
}

static void op(uint8_t o)
{
	unsigned a = o >> 4, i;
	uint8_t buf[128];
	size_t n;
	int r;

	switch (o & 15) {
	case 0:
	case 1:
		n = (o & 15) ? (a + 1) * 8 : a + 1;
		for (i = 0; i < n && g.off < g.in_len; i++)
			buf[i] = next_byte();
		feed(buf, i);
		break;
	case 2:
		op_ack(o);
		break;
	case 3:
		op_connack(o);
		break;
	case 4:
		take(a * a);
		break;
	case 5:
		op_time(a);
		break;
	case 6:
		issue_publish((uint8_t)((a & 3) % 3), (a >> 2) * 40);
		break;
	case 7:
		issue_sub(a & 1);
		break;
	case 8:
		r = sess_disconnect(g.s, a == 1 ? 0x04 : 0, g.now);
		TRACE("disconnect: %d\n", r);
		if (r == 0)
			CHECK(sess_state(g.s) == CLIENT_DISCONNECTING &&
			      sess_deadline(g.s) >= g.now);
		else
			CHECK(r == CLIENT_ESTATE);
		break;
	case 9:
		if (!g.up)
			break;
		r = sess_eof(g.s);
		TRACE("eof: %d\n", r);
		CHECK(r == (sess_state(g.s) == CLIENT_DISCONNECTING
		                    ? SESS_DONE
		                    : CLIENT_ECLOSED));
		after(r);
		break;
	case 10:
		if (g.up)
			close_conn();
		break;
	case 11:
		new_conn(a & 1);
		break;
	case 12:
		if (g.up && sess_state(g.s) == CLIENT_CONNECTING) {
			r = sess_start(g.s, g.now);
			TRACE("start: %d\n", r);
			after(r);
		} else {
			CHECK(sess_start(g.s, g.now) == CLIENT_ESTATE);
		}
		break;
	case 13:
		if (!g.up)
			break;
		if (a & 1) {
			sess_halt(g.s);
			g.halted = 1;
			CHECK(sess_deadline(g.s) == NEVER);
			buf[0] = 0x30;
			if (takes_input())
				CHECK(sess_input(g.s, buf, 1, g.now) ==
				      SESS_STOPPED);
			close_conn();
		} else {
			r = sess_fail(g.s, CLIENT_EIO, "transport: injected");
			CHECK(r == CLIENT_EIO);
			after(r);
		}
		break;
	case 14:
		op_big_publish();
		break;
	default:
		r = sess_can_publish(g.s, (uint8_t)(a % 3));
		CHECK(r == 0 || r == 1);
		if (sess_take_writable(g.s))
			CHECK(sess_can_publish(g.s, 1));
		break;
	}
	check_all();
}

/* ---- the run ---- */

static void configure(struct client_config *cc, const uint8_t *data,
                      size_t size)
{
	static const uint32_t max_packet[4] = { 0, 4096, 64, 16 };
	static const int64_t steps[4] = { 0, 1, MS, 1000 * MS };
	uint8_t h[HDR_LEN] = { 0 };

	memcpy(h, data, size < HDR_LEN ? size : HDR_LEN);
	client_config_init(cc);
	g.version = (h[0] & 1) ? MQTT_V5 : MQTT_V311;
	cc->version = g.version;
	cc->client_id = "fuzz";
	g.persistent = !!(h[0] & 2);
	if (g.persistent) {
		cc->clean_start = 0;
		cc->session_expiry = 300;
	}
	if (max_packet[(h[0] >> 2) & 3])
		cc->max_packet_size = max_packet[(h[0] >> 2) & 3];
	g.max_packet = cc->max_packet_size;
	cc->keepalive = (h[0] & 0x10) ? 0 : 5;
	cc->inflight_window = (h[0] & 0x20) ? 2 : 20;
	if (h[0] & 0x40)
		cc->max_outbuf = 64;
	if (h[0] & 0x80) {
		cc->username = "user";
		cc->password = "pass\0word";
		cc->password_len = 9;
		if (g.version == MQTT_V5)
			cc->receive_max = 4;
	}
	g.action = h[1] & 7;
	g.action_at = h[1] >> 3;
	g.reply = !!(h[2] & 1);
	g.refill = !!(h[2] & 2);
	g.clock_step = steps[(h[2] >> 2) & 3];
	g.pub_props = !!(h[2] & 0x10);
	if (h[3] & 15)
		cc->connect_timeout_ns = (h[3] & 15) * 200 * MS;
	if (h[3] >> 4)
		cc->linger_ns = (h[3] >> 4) * 100 * MS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct client_config cc;

	if (g_trace < 0) {
		const char *t = getenv("FUZZ_SESSION_TRACE");

		g_trace = t && *t && strcmp(t, "0") != 0;
	}
	memset(&g, 0, sizeof(g));
	configure(&cc, data, size);
	g.in = data + (size < HDR_LEN ? size : HDR_LEN);
	g.in_len = size < HDR_LEN ? 0 : size - HDR_LEN;
	g.now = 1000 * MS;
	g.s = sess_new(&cc, &handler, &g);
	CHECK(g.s);
	sess_set_peer(g.s, "broker.test:1883");
	g.heap_fresh = sess_heap_bytes(g.s);
	CHECK(sess_state(g.s) == CLIENT_IDLE);
	CHECK(sess_deadline(g.s) == NEVER);
	/* the first connection starts at once: most inputs are about it */
	new_conn(1);
	check_all();
	while (g.off < g.in_len)
		op(next_byte());
	if (g.up)
		close_conn();
	sess_del(g.s);
	return 0;
}
