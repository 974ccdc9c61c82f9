/*
 * fuzz_client.c: libFuzzer target for the client engine's receive path.
 *
 * The fuzzer plays the broker. A fake transport hands the engine the input
 * as the broker's byte stream, cut into chunks, and swallows what the engine
 * sends. The engine must carry on or close with an error; besides crashes,
 * leaks and UBSan, these break the run (abort with a message):
 *  - the engine sends bytes a server could not decode, anything before its
 *    CONNECT or after its DISCONNECT, or a second CONNECT;
 *  - the engine sends a PUBREL with a success code for an id the broker
 *    never acknowledged with a successful PUBREC (a failed v5 PUBREC ends
 *    the flow; an unknown id gets PUBREL 0x92 in v5); to know, the broker's
 *    bytes are framed and decoded here as the engine receives them;
 *  - the engine holds more heap than our maximum packet size plus 64 KiB
 *    (a claimed length must not make it reserve more than it accepts);
 *  - in on_closed, client_stats() disagrees with the bytes the fake moved
 *    (wire bytes, and MQTT bytes written = queued - unsent);
 *  - a completion callback names a flow we did not start or has the wrong
 *    kind, client_inflight() disagrees with the publish flows we count,
 *    CONNACK's resent/dropped counts disagree with them, or a packet id
 *    handed out is still in use;
 *  - a message reaches on_message with an invalid topic or packet id, or
 *    with a Topic Alias (we allow none);
 *  - on_publish_done reports an ack time before the publish time;
 *  - the engine asks the transport for 0 bytes, or stops making progress
 *    (1000 loop rounds with no bytes moved, no first EOF, no callback)
 *    before it closes;
 *  - after client_free() a watcher, a timer or a connection is left.
 *
 * Input: 7 configuration bytes, then the broker's bytes (missing
 * configuration bytes count as 0).
 *   [0] bit 0 MQTT 5.0 (else 3.1.1); bit 1 persistent session;
 *       bits 2-3 read chunks: whole input, 1 byte, 1-16 bytes, 1-64 bytes
 *       with would-block; bit 4 hostile sends (partial, would-block,
 *       shutdown would-block); bit 5 graceful end (client_disconnect when
 *       the input is used up, then EOF) instead of a bare EOF;
 *       bits 6-7 our maximum packet size: the engine's default (1 MiB),
 *       4096, 64, 16 bytes
 *   [1] four 2-bit operations, issued in turn (wrapping) at every CONNACK:
 *       publish QoS 0, 1, 2, or (un)subscribe (subscribe at even turns)
 *   [2] seed of the chunking and fault generator
 *   [3] bits 0-1 reconnects allowed after an error close; bit 2 on_message
 *       publishes back at the message's QoS; bit 3 on_publish_done publishes
 *       again; bits 4-6 re-entrant action at callback number [4]: none,
 *       client_disconnect, client_free, client_connect, publish QoS 2,
 *       subscribe, disconnect then publish, disconnect then free;
 *       bit 7 inflight window 2 (else 20)
 *   [4] callback number (1-based) for the action
 *   [5] bits 0-2 number of operations at CONNACK; bit 3 v5 Receive Maximum
 *       4 in CONNECT; bit 4 keepalive 0 (else 60 s); bit 5 recv fails with
 *       TR_EIO now and then; bit 6 send does; bit 7 the handshake takes one
 *       more loop round
 *   [6] bit 0 connect timeout 1 ns (CONNACK must come in the first round);
 *       bit 1 linger 1 ns after our DISCONNECT; bit 2 user name and
 *       password; bit 3 output buffer limit 64 bytes; bit 4 v5 publishes
 *       carry properties
 *
 * The engine needs an fd to watch; an eventfd with a non-zero count is
 * always readable and writable, so every loop round calls the engine back
 * without sockets, and the fake decides what each read returns. Rounds run
 * with a zero timeout and nothing waits for real time: keepalive (whole
 * seconds) never fires in a run, the connect timeout and linger only when
 * [6] makes them 1 ns. A run takes about 0.1 ms.
 *
 * FUZZ_CLIENT_TRACE=1 in the environment prints the callbacks and the
 * packets the engine sent, to follow a reproducer:
 *   FUZZ_CLIENT_TRACE=1 build/fuzz/fuzz_client crash-...
 */
#define FUZZ_NAME "fuzz_client"

#include "app/client.h"
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#define HDR_LEN 7
#define SENT_MAX 8192      /* the engine's partial output we are framing */
#define RECV_MAX 8192      /* the broker's partial output we are framing */
#define HEAP_SLACK 65536   /* engine heap allowed beyond the packet limit */
#define ISSUE_BUDGET 96    /* operations we start per run (< FLOW_MAX) */
#define MAX_IDLE_ROUNDS 1000

enum action {
	ACT_NONE = 0,
	ACT_DISCONNECT,
	ACT_FREE,
	ACT_CONNECT,
	ACT_PUBLISH,
	ACT_SUBSCRIBE,
	ACT_DISCONNECT_PUBLISH,
	ACT_DISCONNECT_FREE,
};

struct fz_cfg {
	uint8_t version;
	int persistent;
	int chunk_mode;
	int hostile_send;
	int graceful_end;
	uint32_t max_packet;
	uint8_t ops;
	unsigned n_ops;
	unsigned reconnects;
	int reply;
	int refill;
	int action;
	unsigned action_at;
	int small_window;
	int receive_max;
	int no_keepalive;
	int recv_eio;
	int send_eio;
	int slow_handshake;
	int tiny_connect_timeout;
	int tiny_linger;
	int credentials;
	int tiny_outbuf;
	int pub_props;
};

/* One run's state; reset at the start of every input. */
static struct {
	struct fz_cfg cfg;
	const uint8_t *in;
	size_t in_len, in_off;
	uint64_t rng;
	struct evloop *loop;
	struct client *c; /* NULL once a callback freed it */
	unsigned conns;   /* fake connections open */
	uint64_t progress; /* I/O done or callbacks run, for hang detection */
	unsigned ncb;
	int action_done;
	unsigned reconnects_left;
	unsigned issued;
	unsigned op_turn;
	/* the current connection's output, framed and decoded as we go */
	uint8_t sent[SENT_MAX];
	size_t sent_len;
	unsigned sent_pkts;
	int sent_disconnect;
	int bye; /* graceful end: client_disconnect called */
	uint64_t sent_total; /* bytes the fake took, every connection */
	/* the current connection's input, framed and decoded as we hand it
	 * over; rx_dead: a packet we could not follow (too long for rx[], or
	 * malformed) ends, for the rest of the run, the checks that need to
	 * know every PUBREC (a PUBREL may be resent in a later connection) */
	uint8_t rx[RECV_MAX];
	size_t rx_len;
	int rx_dead;
	/* ids the broker acked with a successful PUBREC, in any connection */
	uint8_t pubrec_ok[65536 / 8];
	struct flows fl;
} g;

static struct tr_ctx *g_ctx;
static int g_trace; /* FUZZ_CLIENT_TRACE=1: callbacks to stderr */

#define TRACE(...)                                                            \
	do {                                                                  \
		if (g_trace)                                                  \
			fprintf(stderr, "fuzz_client: " __VA_ARGS__);         \
	} while (0)

static unsigned rnd(unsigned n)
{
	g.rng ^= g.rng << 13;
	g.rng ^= g.rng >> 7;
	g.rng ^= g.rng << 17;
	return (unsigned)(g.rng % n);
}

/* ---- operations we start ---- */

static void issue_publish(struct client *c, uint8_t qos)
{
	static const uint8_t payload[] = "payload";
	struct mqtt_props pr;
	int r;

	if (g.issued >= ISSUE_BUDGET)
		return;
	g.issued++;
	fz_pub_props(&pr);
	r = client_publish(c, (const uint8_t *)FZ_TOPIC, strlen(FZ_TOPIC),
	                   payload, sizeof(payload) - 1, qos, 0,
	                   g.cfg.pub_props && g.cfg.version == MQTT_V5 ? &pr
	                                                              : NULL);
	TRACE("publish QoS %u: %d\n", qos, r);
	fz_published(&g.fl, r, qos);
}

static void issue_sub(struct client *c, int unsub)
{
	struct mqtt_topic_filter f[2];
	int r;

	if (g.issued >= ISSUE_BUDGET)
		return;
	g.issued++;
	fz_sub_filters(f);
	r = unsub ? client_unsubscribe(c, f, 1, NULL)
	          : client_subscribe(c, f, 2, NULL);
	TRACE("%ssubscribe: %d\n", unsub ? "un" : "", r);
	fz_subscribed(&g.fl, r, unsub);
}

/*
 * Count a callback and, at the chosen one, call the engine back from inside
 * it. Returns 1 when the client was freed: the caller must not touch it.
 */
static int act(struct client *c, int in_closed)
{
	int r;

	g.progress++;
	g.ncb++;
	if (g.action_done || g.cfg.action == ACT_NONE ||
	    g.ncb != g.cfg.action_at)
		return 0;
	g.action_done = 1;
	switch (g.cfg.action) {
	case ACT_DISCONNECT:
		r = client_disconnect(c, 0);
		CHECK(r == 0 || r == CLIENT_ESTATE);
		break;
	case ACT_FREE:
	case ACT_DISCONNECT_FREE:
		if (g.cfg.action == ACT_DISCONNECT_FREE)
			client_disconnect(c, 0);
		client_free(c);
		g.c = NULL;
		return 1;
	case ACT_CONNECT:
		r = client_connect(c);
		/* only a closed client may connect again */
		CHECK(in_closed ? r == 0 : r == CLIENT_ESTATE);
		break;
	case ACT_PUBLISH:
		issue_publish(c, 2);
		break;
	case ACT_SUBSCRIBE:
		issue_sub(c, 0);
		break;
	case ACT_DISCONNECT_PUBLISH:
		client_disconnect(c, 0x04);
		r = client_publish(c, (const uint8_t *)"x", 1, NULL, 0, 1, 0,
		                   NULL);
		CHECK(r == CLIENT_ESTATE);
		break;
	}
	return 0;
}

/* ---- callbacks ---- */

static void on_connected(struct client *c,
                         const struct client_connected_info *info)
{
	unsigned i;

	CHECK(client_state(c) == CLIENT_CONNECTED);
	CHECK(info->mqtt->connack && info->mqtt->connack->reason == 0);
	CHECK(info->mqtt->window >= 1 && info->mqtt->max_qos <= 2);
	fz_touch_props(&info->mqtt->connack->props);
	/* Without a session on the broker the engine drops every flow; with
	 * one it resends every publish flow (a non-persistent client has none
	 * left at this point). */
	if (!info->mqtt->session_present) {
		CHECK(info->mqtt->resent == 0);
		CHECK(info->mqtt->dropped == flow_drop(&g.fl, 1));
	} else {
		CHECK(info->mqtt->dropped == 0);
		CHECK(info->mqtt->resent == g.fl.n_pub);
	}
	CHECK(client_inflight(c) == g.fl.n_pub);
	TRACE("connected: session %u, window %u, resent %u, dropped %u\n",
	      info->mqtt->session_present, info->mqtt->window, info->mqtt->resent,
	      info->mqtt->dropped);
	if (act(c, 0))
		return;
	for (i = 0; i < g.cfg.n_ops; i++, g.op_turn++) {
		unsigned op = (g.cfg.ops >> (2 * (g.op_turn % 4))) & 3;

		if (client_state(c) != CLIENT_CONNECTED)
			break;
		if (op < 3)
			issue_publish(c, (uint8_t)op);
		else
			issue_sub(c, (int)(g.op_turn & 1));
	}
}

static void on_message(struct client *c, const struct mqtt_publish *m,
                       int64_t now)
{
	(void)now;
	fz_check_message(m);
	TRACE("message: QoS %u, id %u, %zu bytes\n", m->qos, m->packet_id,
	      m->payload.len);
	if (act(c, 0))
		return;
	if (g.cfg.reply && client_state(c) == CLIENT_CONNECTED)
		issue_publish(c, m->qos);
}

static void on_publish_done(struct client *c, uint16_t id, uint8_t qos,
                            uint8_t reason, int64_t t_sent, int64_t now)
{
	struct flow *f = flow_find(&g.fl, id);

	TRACE("publish done: id %u, QoS %u, reason 0x%02x, %lld ns after "
	      "the publish\n", id, qos, reason, (long long)(now - t_sent));
	CHECK(f && f->kind == qos);
	/* also when the ack came in the read whose CONNACK or message made
	 * a callback issue the publish */
	CHECK(t_sent > 0 && now >= t_sent);
	flow_del(&g.fl, f);
	CHECK(client_inflight(c) == g.fl.n_pub);
	if (act(c, 0))
		return;
	if (g.cfg.refill && client_state(c) == CLIENT_CONNECTED)
		issue_publish(c, qos);
}

static void on_subscribed(struct client *c, uint16_t id, const uint8_t *codes,
                          size_t n)
{
	struct flow *f = flow_find(&g.fl, id);

	TRACE("subscribed: id %u, %zu codes\n", id, n);
	CHECK(f && f->kind == FLOW_SUB);
	CHECK(n >= 1);
	fz_touch(codes, n);
	flow_del(&g.fl, f);
	act(c, 0);
}

static void on_unsubscribed(struct client *c, uint16_t id,
                            const uint8_t *codes, size_t n)
{
	struct flow *f = flow_find(&g.fl, id);

	TRACE("unsubscribed: id %u, %zu codes\n", id, n);
	CHECK(f && f->kind == FLOW_UNSUB);
	/* 3.1.1 UNSUBACK carries no codes */
	CHECK(g.cfg.version == MQTT_V5 ? n >= 1 : n == 0);
	fz_touch(codes, n);
	flow_del(&g.fl, f);
	act(c, 0);
}

static void on_writable(struct client *c)
{
	CHECK(client_can_publish(c, 1));
	TRACE("writable\n");
	if (act(c, 0))
		return;
	issue_publish(c, 1);
}

static void on_closed(struct client *c, int err, const char *msg)
{
	CHECK(client_state(c) == CLIENT_CLOSED);
	CHECK(client_transport(c) == NULL);
	CHECK(err <= 0 && msg && strlen(msg) > 0);
	/* the engine ends subscriptions with the connection, and publish
	 * flows too unless the session persists */
	flow_drop(&g.fl, !g.cfg.persistent);
	CHECK(client_inflight(c) == g.fl.n_pub);
	{
		const struct client_stats *st = client_stats(c);

		CHECK(st->wire_in == g.in_off);
		CHECK(st->wire_out == g.sent_total);
		CHECK(st->bytes_out - st->bytes_unsent == g.sent_total);
		CHECK(st->bytes_in <= st->wire_in);
	}
	TRACE("closed: %d %s\n", err, msg);
	if (act(c, 1))
		return;
	if (err && g.reconnects_left > 0 &&
	    client_state(c) == CLIENT_CLOSED) {
		g.reconnects_left--;
		CHECK(client_connect(c) == 0);
	}
}

static const struct client_callbacks cbs = {
	.on_connected = on_connected,
	.on_message = on_message,
	.on_publish_done = on_publish_done,
	.on_subscribed = on_subscribed,
	.on_unsubscribed = on_unsubscribed,
	.on_writable = on_writable,
	.on_closed = on_closed,
};

/* ---- the fake transport ---- */

struct fz_conn {
	struct tr_conn base;
	int hs_left; /* handshake says TR_AGAIN this many more times */
	int ready;
	int eof;     /* EOF returned once: again is no progress */
};

static int fz_open(struct tr_ctx *ctx, struct tr_session *sess, int64_t now,
                   struct tr_conn **out)
{
	struct fz_conn *f = calloc(1, sizeof(*f));

	if (!f)
		return TR_ENOMEM;
	tr_base_init(&f->base, ctx->ops, ctx, sess);
	f->base.t_start = now;
	f->base.fd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
	if (f->base.fd < 0) {
		perror("fuzz_client: eventfd");
		abort();
	}
	f->hs_left = g.cfg.slow_handshake;
	g.conns++;
	g.sent_len = 0;
	g.sent_pkts = 0;
	g.sent_disconnect = 0;
	g.bye = 0;
	g.rx_len = 0;
	*out = &f->base;
	return 0;
}

static int fz_handshake(struct tr_conn *c, int64_t now)
{
	struct fz_conn *f = (struct fz_conn *)c;

	if (f->hs_left > 0) {
		f->hs_left--;
		return TR_AGAIN;
	}
	f->ready = 1;
	c->t_connected = c->t_ready = now;
	g.progress++;
	return 0;
}

/* Frame and decode, as the broker would, what the engine sent. */
static void check_sent(const uint8_t *buf, size_t len)
{
	CHECK(g.sent_len + len <= sizeof(g.sent));
	memcpy(g.sent + g.sent_len, buf, len);
	g.sent_len += len;
	for (;;) {
		struct mqtt_packet p;
		uint8_t type;
		size_t hl;
		ssize_t n = mqtt_frame(g.sent, g.sent_len, 0, &type, &hl), r;

		if (n == MQTT_ENEEDMORE)
			break;
		CHECK(n > 0);
		r = mqtt_decode(g.sent, (size_t)n, g.cfg.version, 1, &p);
		if (r != n) {
			fprintf(stderr, "fuzz_client: the engine sent a packet "
			        "of type %u that a broker cannot decode: %s\n",
			        type, mqtt_strerror((int)r));
			abort();
		}
		TRACE("sent: type %u, %zd bytes, id %u\n", p.type, n,
		      p.type == MQTT_PUBLISH ? p.u.publish.packet_id
		      : p.type >= MQTT_PUBACK && p.type <= MQTT_PUBCOMP
		              ? p.u.ack.packet_id : 0);
		/* CONNECT first and only once; nothing after DISCONNECT */
		CHECK((g.sent_pkts == 0) == (p.type == MQTT_CONNECT));
		if (p.type == MQTT_CONNECT)
			CHECK(p.u.connect.version == g.cfg.version);
		CHECK(!g.sent_disconnect);
		g.sent_disconnect = p.type == MQTT_DISCONNECT;
		if (p.type == MQTT_PUBREL) {
			uint16_t id = p.u.ack.packet_id;

			if (p.u.ack.reason == 0x92)
				CHECK(g.cfg.version == MQTT_V5);
			else
				CHECK(p.u.ack.reason == 0 &&
				      (g.rx_dead ||
				       (g.pubrec_ok[id / 8] >> (id % 8) & 1)));
		}
		g.sent_pkts++;
		g.sent_len -= (size_t)n;
		memmove(g.sent, g.sent + n, g.sent_len);
	}
}

/* Frame and decode, as the engine should, what the broker sent; note the
 * successful PUBRECs. */
static void track_recv(const uint8_t *buf, size_t len)
{
	if (g.rx_dead)
		return;
	if (g.rx_len + len > sizeof(g.rx)) {
		g.rx_dead = 1;
		return;
	}
	memcpy(g.rx + g.rx_len, buf, len);
	g.rx_len += len;
	for (;;) {
		struct mqtt_packet p;
		ssize_t n = mqtt_frame(g.rx, g.rx_len, 0, NULL, NULL), r;

		if (n == MQTT_ENEEDMORE)
			break;
		if (n < 0) {
			g.rx_dead = 1;
			return;
		}
		r = mqtt_decode(g.rx, (size_t)n, g.cfg.version, 0, &p);
		if (r != n) {
			g.rx_dead = 1;
			return;
		}
		if (p.type == MQTT_PUBREC && p.u.ack.reason < 0x80)
			g.pubrec_ok[p.u.ack.packet_id / 8] |=
				(uint8_t)(1u << (p.u.ack.packet_id % 8));
		g.rx_len -= (size_t)n;
		memmove(g.rx, g.rx + n, g.rx_len);
	}
}

static ssize_t fz_send(struct tr_conn *c, int64_t sid, const uint8_t *buf,
                       size_t len, int64_t now)
{
	(void)now;
	CHECK(sid == TR_STREAM_MAIN);
	CHECK(len > 0);
	CHECK(((struct fz_conn *)c)->ready);
	if (g.cfg.send_eio && rnd(64) == 0) {
		g.progress++;
		return tr_fail(c, TR_EIO, "send: injected error");
	}
	if (g.cfg.hostile_send) {
		if (rnd(4) == 0)
			return TR_AGAIN;
		len = 1 + rnd((unsigned)(len < 4096 ? len : 4096));
	}
	check_sent(buf, len);
	g.progress++;
	g.sent_total += len;
	c->wire_out += len;
	return (ssize_t)len;
}

static ssize_t fz_recv(struct tr_conn *c, int64_t *sid, uint8_t *buf,
                       size_t len, int64_t now)
{
	size_t n, left = g.in_len - g.in_off;

	(void)now;
	*sid = TR_STREAM_MAIN;
	/* a 0-byte read would make EOF and "nothing" look the same */
	CHECK(len > 0);
	CHECK(((struct fz_conn *)c)->ready);
	if (g.cfg.recv_eio && rnd(64) == 0) {
		g.progress++;
		return tr_fail(c, TR_EIO, "recv: injected error");
	}
	if (left == 0) {
		/* graceful end: hold the EOF until we have disconnected */
		if (g.cfg.graceful_end && g.c &&
		    (client_state(g.c) == CLIENT_CONNECTED ||
		     client_state(g.c) == CLIENT_CONNECT_SENT))
			return TR_AGAIN;
		if (!((struct fz_conn *)c)->eof)
			g.progress++;
		((struct fz_conn *)c)->eof = 1;
		return TR_EOF;
	}
	switch (g.cfg.chunk_mode) {
	case 0:
		n = left;
		break;
	case 1:
		n = 1;
		break;
	case 2:
		n = 1 + rnd(16);
		break;
	default:
		if (rnd(4) == 0)
			return TR_AGAIN;
		n = 1 + rnd(64);
		break;
	}
	if (n > left)
		n = left;
	if (n > len)
		n = len;
	memcpy(buf, g.in + g.in_off, n);
	track_recv(buf, n);
	g.in_off += n;
	c->wire_in += n;
	g.progress++;
	return (ssize_t)n;
}

static uint32_t fz_events(const struct tr_conn *c)
{
	return ((const struct fz_conn *)c)->ready ? EV_READ : EV_WRITE;
}

static int fz_shutdown(struct tr_conn *c, int64_t sid, int64_t now)
{
	(void)now;
	CHECK(sid == TR_STREAM_MAIN);
	CHECK(((struct fz_conn *)c)->ready);
	if (g.cfg.hostile_send && rnd(2) == 0)
		return TR_AGAIN;
	g.progress++;
	return 0;
}

static void fz_free(struct tr_conn *c)
{
	CHECK(g.conns > 0);
	g.conns--;
	tr_base_free(c);
	free(c);
}

static const struct transport_ops fz_ops = {
	.name = "fuzz",
	.open = fz_open,
	.handshake = fz_handshake,
	.send = fz_send,
	.recv = fz_recv,
	.events = fz_events,
	.shutdown = fz_shutdown,
	.free = fz_free,
};

/* ---- the run ---- */

static void parse_cfg(const uint8_t *data, size_t size)
{
	/* 0: leave the engine's default */
	static const uint32_t max_packet[4] = { 0, 4096, 64, 16 };
	uint8_t h[HDR_LEN] = { 0 };
	struct fz_cfg *f = &g.cfg;

	memcpy(h, data, size < HDR_LEN ? size : HDR_LEN);
	f->version = (h[0] & 1) ? MQTT_V5 : MQTT_V311;
	f->persistent = !!(h[0] & 2);
	f->chunk_mode = (h[0] >> 2) & 3;
	f->hostile_send = !!(h[0] & 0x10);
	f->graceful_end = !!(h[0] & 0x20);
	f->max_packet = max_packet[h[0] >> 6];
	f->ops = h[1];
	g.rng = 0x9E3779B97F4A7C15u ^ ((uint64_t)h[2] << 17 | h[2]);
	f->reconnects = h[3] & 3;
	f->reply = !!(h[3] & 4);
	f->refill = !!(h[3] & 8);
	f->action = (h[3] >> 4) & 7;
	f->small_window = !!(h[3] & 0x80);
	f->action_at = h[4];
	f->n_ops = h[5] & 7;
	f->receive_max = !!(h[5] & 8);
	f->no_keepalive = !!(h[5] & 0x10);
	f->recv_eio = !!(h[5] & 0x20);
	f->send_eio = !!(h[5] & 0x40);
	f->slow_handshake = !!(h[5] & 0x80);
	f->tiny_connect_timeout = !!(h[6] & 1);
	f->tiny_linger = !!(h[6] & 2);
	f->credentials = !!(h[6] & 4);
	f->tiny_outbuf = !!(h[6] & 8);
	f->pub_props = !!(h[6] & 0x10);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct client_config cc;
	unsigned idle = 0;

	if (!g_ctx) {
		/* Shared by every run, like one broker's context in the
		 * benchmark; the literal address resolves without a lookup. */
		struct tr_config tc;
		char err[200];
		const char *t = getenv("FUZZ_CLIENT_TRACE");

		g_trace = t && *t && strcmp(t, "0") != 0;
		tr_config_init(&tc);
		tc.host = "127.0.0.1";
		tc.port = 1884;
		if (tr_ctx_new(&g_ctx, &fz_ops, &tc, err, sizeof(err)) < 0) {
			fprintf(stderr, "fuzz_client: %s\n", err);
			abort();
		}
	}
	memset(&g, 0, sizeof(g));
	parse_cfg(data, size);
	g.in = data + (size < HDR_LEN ? size : HDR_LEN);
	g.in_len = size < HDR_LEN ? 0 : size - HDR_LEN;
	g.reconnects_left = g.cfg.reconnects;

	g.loop = evloop_new();
	CHECK(g.loop);
	client_config_init(&cc);
	cc.version = g.cfg.version;
	cc.client_id = "fuzz";
	if (g.cfg.persistent) {
		cc.clean_start = 0;
		cc.session_expiry = 300;
	}
	if (g.cfg.max_packet)
		cc.max_packet_size = g.cfg.max_packet;
	g.cfg.max_packet = cc.max_packet_size;
	CHECK(g.cfg.max_packet > 0);
	cc.inflight_window = g.cfg.small_window ? 2 : 20;
	if (g.cfg.receive_max && g.cfg.version == MQTT_V5)
		cc.receive_max = 4;
	if (g.cfg.no_keepalive)
		cc.keepalive = 0;
	if (g.cfg.tiny_connect_timeout)
		cc.connect_timeout_ns = 1;
	if (g.cfg.tiny_linger)
		cc.linger_ns = 1;
	if (g.cfg.credentials) {
		cc.username = "user";
		cc.password = "pass\0word";
		cc.password_len = 9;
	}
	if (g.cfg.tiny_outbuf)
		cc.max_outbuf = 64;
	g.c = client_new(g.loop, g_ctx, &cc, &cbs, NULL);
	CHECK(g.c);
	CHECK(client_connect(g.c) == 0);

	while (g.c && client_state(g.c) != CLIENT_CLOSED) {
		uint64_t before = g.progress;

		CHECK(evloop_run_once(g.loop, 0) >= 0);
		if (g.c) {
			enum client_state s = client_state(g.c);

			CHECK(client_inflight(g.c) == g.fl.n_pub);
			CHECK(client_heap_bytes(g.c) <=
			      g.cfg.max_packet + HEAP_SLACK);
			if (g.cfg.graceful_end && g.in_off == g.in_len &&
			    !g.bye && (s == CLIENT_CONNECTED ||
			               s == CLIENT_CONNECT_SENT)) {
				int r = client_disconnect(g.c, 0);

				CHECK(r == 0 || r == CLIENT_ESTATE);
				g.bye = 1;
				g.progress++;
			}
		}
		if (g.progress != before) {
			idle = 0;
		} else if (++idle > MAX_IDLE_ROUNDS) {
			fprintf(stderr, "fuzz_client: engine stuck in state "
			        "%s with %zu of %zu input bytes read\n",
			        client_state_name(client_state(g.c)),
			        g.in_off, g.in_len);
			abort();
		}
	}
	client_free(g.c);
	CHECK(g.conns == 0);
	CHECK(evloop_io_count(g.loop) == 0);
	CHECK(evloop_timer_count(g.loop) == 0);
	evloop_del(g.loop);
	return 0;
}
