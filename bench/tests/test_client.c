/*
 * test_client.c: the MQTT client engine against a scripted broker.
 *
 * The fake transport below is a transport table whose connection is one end
 * of a socketpair; the test plays the broker on the other end, byte-exact.
 * In "partial" mode the fake cuts every send and receive short and makes
 * some would-block (seeded), and the test feeds the broker's bytes one at a
 * time, so the engine's partial paths are taken on every packet.
 */
#include "app/client.h"
#include "tt.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the fake transport ---- */

static int g_peer = -1;      /* the broker's end */
static int g_partial;        /* cut I/O short at random */
static int g_fail_open;      /* first handshake fails */
static int g_hs_again;       /* handshake says TR_AGAIN this many times */
static int g_send_block;     /* sends would block */
static unsigned g_recv_calls; /* recv calls that brought bytes */
static uint64_t g_rng = 12345;

static unsigned rnd(unsigned n)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return (unsigned)(g_rng % n);
}

struct fake_conn {
	struct tr_conn base;
	int hs_left;
	int ready;
	int failed;
	int want_write; /* a send would-block */
};

static int fake_open(struct tr_ctx *ctx, struct tr_session *sess, int64_t now,
                     struct tr_conn **out)
{
	struct fake_conn *f = calloc(1, sizeof(*f));
	int sv[2];

	if (!f)
		return TR_ENOMEM;
	tr_base_init(&f->base, ctx->ops, ctx, sess);
	f->base.t_start = now;
	*out = &f->base;
	if (g_fail_open) {
		f->failed = tr_fail(&f->base, TR_ECONNECT,
		                    "connect to %s: Connection refused",
		                    ctx->peer);
		return 0;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
		abort();
	f->base.fd = sv[0];
	if (g_peer >= 0)
		close(g_peer);
	g_peer = sv[1];
	f->hs_left = g_hs_again;
	return 0;
}

static int fake_handshake(struct tr_conn *c, int64_t now)
{
	struct fake_conn *f = (struct fake_conn *)c;

	if (f->failed)
		return f->failed;
	if (f->hs_left > 0) {
		f->hs_left--;
		return TR_AGAIN;
	}
	f->ready = 1;
	c->t_connected = c->t_ready = now;
	return 0;
}

static ssize_t fake_send(struct tr_conn *c, int64_t sid, const uint8_t *buf,
                         size_t len, int64_t now)
{
	struct fake_conn *f = (struct fake_conn *)c;
	ssize_t n;

	(void)now;
	TT_CHECK(sid == TR_STREAM_MAIN);
	f->want_write = 1;
	if (g_send_block)
		return TR_AGAIN;
	if (g_partial) {
		if (rnd(3) == 0)
			return TR_AGAIN;
		len = 1 + rnd((unsigned)len);
	}
	n = send(c->fd, buf, len, MSG_NOSIGNAL);
	if (n > 0) {
		f->want_write = 0;
		c->wire_out += (uint64_t)n;
		return n;
	}
	if (n < 0 && errno == EAGAIN)
		return TR_AGAIN;
	return tr_fail(c, TR_EIO, "send: %s", strerror(errno));
}

static ssize_t fake_recv(struct tr_conn *c, int64_t *sid, uint8_t *buf,
                         size_t len, int64_t now)
{
	ssize_t n;

	(void)now;
	*sid = TR_STREAM_MAIN;
	if (g_partial) {
		if (rnd(3) == 0)
			return TR_AGAIN;
		len = 1 + rnd((unsigned)len < 9 ? (unsigned)len : 9);
	}
	n = recv(c->fd, buf, len, 0);
	if (n > 0) {
		c->wire_in += (uint64_t)n;
		g_recv_calls++;
		return n;
	}
	if (n == 0)
		return TR_EOF;
	if (errno == EAGAIN)
		return TR_AGAIN;
	return tr_fail(c, TR_EIO, "recv: %s", strerror(errno));
}

static uint32_t fake_events(const struct tr_conn *c)
{
	const struct fake_conn *f = (const struct fake_conn *)c;

	if (!f->ready)
		return EV_WRITE;
	return EV_READ | (f->want_write ? EV_WRITE : 0);
}

static int fake_shutdown(struct tr_conn *c, int64_t sid, int64_t now)
{
	(void)now;
	(void)sid;
	shutdown(c->fd, SHUT_WR);
	return 0;
}

static void fake_free(struct tr_conn *c)
{
	tr_base_free(c);
	free(c);
}

static const struct transport_ops fake_ops = {
	.name = "fake",
	.open = fake_open,
	.handshake = fake_handshake,
	.send = fake_send,
	.recv = fake_recv,
	.events = fake_events,
	.shutdown = fake_shutdown,
	.free = fake_free,
};

/* ---- recording callbacks ---- */

struct rec {
	int connected, closed, messages, done, subacks, unsubacks, writable;
	int close_err;
	char close_msg[400];
	uint8_t session_present;
	uint16_t window;
	uint32_t resent, dropped;
	char last_topic[64];
	char last_payload[64];
	uint8_t last_qos;
	uint16_t done_ids[16];
	uint8_t done_qos[16], done_reason[16];
	uint8_t codes[8];
	size_t n_codes;
	int free_on_message;     /* client_free() from on_message */
	int reconnect_on_close;  /* client_connect() from on_closed */
	int publish_on_connect;  /* QoS 1 publish from on_connected */
	int64_t t_start, t_ready, t_connack;
	int64_t min_ack_delay;   /* smallest now - t_sent seen */
	size_t last_payload_len;
	uint32_t payload_sum;    /* of the last message */
	struct client_stats st_closed; /* client_stats() in on_closed */
};

static void on_connected(struct client *c,
                         const struct client_connected_info *i)
{
	struct rec *r = client_user(c);

	r->connected++;
	r->session_present = i->mqtt->session_present;
	r->window = i->mqtt->window;
	r->resent = i->mqtt->resent;
	r->dropped = i->mqtt->dropped;
	r->t_start = i->t_start;
	r->t_ready = i->t_transport_ready;
	r->t_connack = i->mqtt->t_connack;
	if (r->publish_on_connect) {
		/* let the clock move on past the read that brought CONNACK */
		while (evloop_clock_ns() < i->mqtt->t_connack + 20000)
			;
		TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1,
		                        0, NULL) == 1);
	}
}

static void on_message(struct client *c, const struct mqtt_publish *m,
                       int64_t now)
{
	struct rec *r = client_user(c);

	(void)now;
	r->messages++;
	r->last_qos = m->qos;
	snprintf(r->last_topic, sizeof(r->last_topic), "%.*s",
	         (int)m->topic.len, (const char *)m->topic.data);
	snprintf(r->last_payload, sizeof(r->last_payload), "%.*s",
	         (int)m->payload.len, (const char *)m->payload.data);
	r->last_payload_len = m->payload.len;
	r->payload_sum = 0;
	for (size_t i = 0; i < m->payload.len; i++)
		r->payload_sum = r->payload_sum * 31 + m->payload.data[i];
	if (r->free_on_message)
		client_free(c);
}

static void on_publish_done(struct client *c, uint16_t id, uint8_t qos,
                            uint8_t reason, int64_t t_sent, int64_t now)
{
	struct rec *r = client_user(c);

	TT_CHECK(t_sent > 0 && now >= t_sent);
	if (r->done == 0 || now - t_sent < r->min_ack_delay)
		r->min_ack_delay = now - t_sent;
	if (r->done < 16) {
		r->done_ids[r->done] = id;
		r->done_qos[r->done] = qos;
		r->done_reason[r->done] = reason;
	}
	r->done++;
}

static void on_subscribed(struct client *c, uint16_t id, const uint8_t *codes,
                          size_t n)
{
	struct rec *r = client_user(c);

	(void)id;
	r->subacks++;
	r->n_codes = n < 8 ? n : 8;
	memcpy(r->codes, codes, r->n_codes);
}

static void on_unsubscribed(struct client *c, uint16_t id,
                            const uint8_t *codes, size_t n)
{
	struct rec *r = client_user(c);

	(void)id;
	(void)codes;
	(void)n;
	r->unsubacks++;
}

static void on_writable(struct client *c)
{
	struct rec *r = client_user(c);

	r->writable++;
}

static void on_closed(struct client *c, int err, const char *msg)
{
	struct rec *r = client_user(c);

	r->closed++;
	r->close_err = err;
	snprintf(r->close_msg, sizeof(r->close_msg), "%s", msg);
	r->st_closed = *client_stats(c);
	if (r->reconnect_on_close) {
		r->reconnect_on_close = 0;
		TT_CHECK(client_connect(c) == 0);
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

/* ---- broker side helpers ---- */

static struct evloop *loop;
static struct tr_ctx *ctx;

static void setup(void)
{
	struct tr_config tc;
	char err[200];

	loop = evloop_new();
	tr_config_init(&tc);
	tc.host = "127.0.0.1";
	tc.port = 1884;
	if (tr_ctx_new(&ctx, &fake_ops, &tc, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	g_partial = g_fail_open = g_hs_again = g_send_block = 0;
	g_recv_calls = 0;
}

static void teardown(void)
{
	if (g_peer >= 0)
		close(g_peer);
	g_peer = -1;
	tr_ctx_del(ctx);
	TT_CHECK(evloop_io_count(loop) == 0);
	evloop_del(loop);
}

/* Run the loop for about ms milliseconds. */
static void pump(int ms)
{
	int64_t end = evloop_clock_ns() + ms * EV_NS_PER_MS;

	while (evloop_clock_ns() < end)
		evloop_run_once(loop, EV_NS_PER_MS);
}

/* The broker writes these bytes (one at a time in partial mode). */
static void feed(const char *hex)
{
	uint8_t b[512];
	size_t n = tt_unhex(hex, b), i;

	if (!g_partial) {
		TT_CHECK(write(g_peer, b, n) == (ssize_t)n);
		pump(2);
		return;
	}
	for (i = 0; i < n; i++) {
		TT_CHECK(write(g_peer, b + i, 1) == 1);
		evloop_run_once(loop, 0);
	}
	pump(5);
}

/* The broker expects exactly these bytes next (within a second). */
static int expect(const char *hex)
{
	uint8_t want[512], got[512];
	size_t n = tt_unhex(hex, want), have = 0, i;
	int64_t end = evloop_clock_ns() + EV_NS_PER_SEC;

	while (have < n && evloop_clock_ns() < end) {
		ssize_t r = read(g_peer, got + have, n - have);

		if (r > 0)
			have += (size_t)r;
		else
			evloop_run_once(loop, EV_NS_PER_MS);
	}
	if (have == n && memcmp(want, got, n) == 0)
		return 1;
	fprintf(stderr, "expected %s\n     got ", hex);
	for (i = 0; i < have; i++)
		fprintf(stderr, "%02x ", got[i]);
	fprintf(stderr, "(%zu bytes)\n", have);
	return 0;
}

/* Nothing more from the client right now. */
static int expect_silence(void)
{
	uint8_t b[64];

	pump(5);
	return read(g_peer, b, sizeof(b)) < 0 && errno == EAGAIN;
}

static struct client *new_client(struct rec *r, uint8_t version,
                                 int clean, uint32_t expiry)
{
	struct client_config cc;

	client_config_init(&cc);
	cc.version = version;
	cc.client_id = "c1";
	cc.clean_start = (uint8_t)clean;
	cc.session_expiry = expiry;
	memset(r, 0, sizeof(*r));
	return client_new(loop, ctx, &cc, &cbs, r);
}

#define CONNECT_V3 "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31"
/* 5.0, clean start: Maximum Packet Size 1 MiB (the default) advertised */
#define CONNECT_V5 "10 14 00 04 4d 51 54 54 05 02 00 3c 05 27 00 10 00 00" \
                   " 00 02 63 31"
#define CONNACK_OK "20 02 00 00"

/* Connect a 3.1.1 clean client and accept it. */
static struct client *connected_v3(struct rec *r)
{
	struct client *c = new_client(r, MQTT_V311, 1, 0);

	TT_CHECK(client_connect(c) == 0);
	TT_CHECK(expect(CONNECT_V3));
	feed(CONNACK_OK);
	TT_CHECK(r->connected == 1);
	TT_CHECK(client_state(c) == CLIENT_CONNECTED);
	return c;
}

/* ---- tests ---- */

static void test_connect_v311(void)
{
	struct rec r;
	struct client *c;

	setup();
	g_hs_again = 2; /* the transport takes a few rounds */
	c = new_client(&r, MQTT_V311, 1, 0);
	TT_CHECK(client_state(c) == CLIENT_IDLE);
	TT_CHECK(client_connect(c) == 0);
	TT_CHECK(client_connect(c) == CLIENT_ESTATE);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 0, 0,
	                        NULL) == CLIENT_ESTATE);
	TT_CHECK(expect(CONNECT_V3));
	TT_CHECK(client_state(c) == CLIENT_CONNECT_SENT);
	feed(CONNACK_OK);
	TT_CHECK(r.connected == 1);
	TT_CHECK(r.t_start > 0 && r.t_ready >= r.t_start &&
	         r.t_connack >= r.t_ready);
	TT_CHECK(client_stats(c)->pkts_out == 1);
	TT_CHECK(client_stats(c)->bytes_out == 16);
	TT_CHECK(client_stats(c)->bytes_in == 4);
	/* idle and connected: no buffers held */
	printf("     idle connected client heap: %zu bytes\n",
	       client_heap_bytes(c));
	TT_CHECK(client_heap_bytes(c) < 2048);
	client_free(c);
	teardown();
}

static void test_connect_v5_props(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = new_client(&r, MQTT_V5, 0, 120);
	TT_CHECK(client_connect(c) == 0);
	/* clean start 0, session expiry 120, maximum packet size 1 MiB */
	TT_CHECK(expect("10 19 00 04 4d 51 54 54 05 00 00 3c 0a 11 00 00 00 78"
	                " 27 00 10 00 00 00 02 63 31"));
	/* broker: session present, receive maximum 2, keepalive 30 */
	feed("20 09 01 00 06 21 00 02 13 00 1e");
	TT_CHECK(r.connected == 1);
	TT_CHECK(r.session_present == 1);
	TT_CHECK(r.window == 2);
	TT_CHECK(client_window(c) == 2);
	client_free(c);
	teardown();
}

static void test_connack_refused(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = new_client(&r, MQTT_V311, 1, 0);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3));
	feed("20 02 00 05");
	TT_CHECK(r.connected == 0 && r.closed == 1);
	TT_CHECK(r.close_err == CLIENT_EREFUSED);
	TT_CHECK(strstr(r.close_msg, "refused: not authorized (0x05)") != NULL);
	TT_CHECK(strstr(r.close_msg, "127.0.0.1:1884") != NULL);
	TT_CHECK(client_state(c) == CLIENT_CLOSED);
	TT_CHECK(strcmp(client_last_error(c), r.close_msg) == 0);
	client_free(c);

	/* 5.0 with a reason string */
	c = new_client(&r, MQTT_V5, 1, 0);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V5));
	feed("20 08 00 87 05 1f 00 02 6e 6f");
	TT_CHECK(r.close_err == CLIENT_EREFUSED);
	TT_CHECK(strstr(r.close_msg, "not authorized (0x87): no") != NULL);
	client_free(c);
	teardown();
}

static void test_connect_fails_async(void)
{
	struct rec r;
	struct client *c;

	setup();
	g_fail_open = 1;
	c = new_client(&r, MQTT_V311, 1, 0);
	TT_CHECK(client_connect(c) == 0);
	/* never from inside client_connect */
	TT_CHECK(r.closed == 0);
	pump(2);
	TT_CHECK(r.closed == 1);
	TT_CHECK(r.close_err == CLIENT_ECONNECT);
	TT_CHECK(strcmp(r.close_msg,
	                "connect to 127.0.0.1:1884: Connection refused") == 0);
	client_free(c);
	teardown();
}

static void test_connack_timeout(void)
{
	struct rec r;
	struct client_config cc;
	struct client *c;

	setup();
	client_config_init(&cc);
	cc.client_id = "c1";
	cc.connect_timeout_ns = 50 * EV_NS_PER_MS;
	memset(&r, 0, sizeof(r));
	c = client_new(loop, ctx, &cc, &cbs, &r);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3));
	pump(30);
	TT_CHECK(r.closed == 0);
	pump(60);
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_ETIMEOUT);
	TT_CHECK(strstr(r.close_msg, "no CONNACK within 0.1 s") != NULL);
	client_free(c);
	teardown();
}

static void run_qos_flows(void)
{
	struct rec r;
	struct client *c;
	int id;

	c = connected_v3(&r);
	/* QoS 0 out */
	TT_CHECK(client_publish(c, (const uint8_t *)"a/b", 3,
	                        (const uint8_t *)"hi", 2, 0, 0, NULL) == 0);
	TT_CHECK(expect("30 07 00 03 61 2f 62 68 69"));
	/* QoS 1 out: id 1, PUBACK */
	id = client_publish(c, (const uint8_t *)"a/b", 3,
	                    (const uint8_t *)"hi", 2, 1, 0, NULL);
	TT_CHECK(id == 1);
	TT_CHECK(client_inflight(c) == 1);
	TT_CHECK(expect("32 09 00 03 61 2f 62 00 01 68 69"));
	feed("40 02 00 01");
	TT_CHECK(r.done == 1 && r.done_ids[0] == 1 && r.done_qos[0] == 1);
	TT_CHECK(client_inflight(c) == 0);
	/* QoS 2 out, retained: PUBREC -> PUBREL -> PUBCOMP */
	id = client_publish(c, (const uint8_t *)"a/b", 3,
	                    (const uint8_t *)"hi", 2, 2, 1, NULL);
	TT_CHECK(id == 2);
	TT_CHECK(expect("35 09 00 03 61 2f 62 00 02 68 69"));
	feed("50 02 00 02");
	TT_CHECK(expect("62 02 00 02"));
	TT_CHECK(r.done == 1);
	/* a repeated PUBREC gets the PUBREL again */
	feed("50 02 00 02");
	TT_CHECK(expect("62 02 00 02"));
	feed("70 02 00 02");
	TT_CHECK(r.done == 2 && r.done_ids[1] == 2 && r.done_qos[1] == 2);
	TT_CHECK(client_inflight(c) == 0);
	/* a PUBACK nobody waits for is ignored */
	feed("40 02 00 09");
	TT_CHECK(r.done == 2 && client_state(c) == CLIENT_CONNECTED);

	/* QoS 0 in */
	feed("30 07 00 03 78 2f 79 6f 6b");
	TT_CHECK(r.messages == 1 && strcmp(r.last_topic, "x/y") == 0 &&
	         strcmp(r.last_payload, "ok") == 0);
	TT_CHECK(expect_silence());
	/* QoS 1 in: PUBACK */
	feed("32 09 00 03 78 2f 79 00 05 6f 6b");
	TT_CHECK(r.messages == 2 && r.last_qos == 1);
	TT_CHECK(expect("40 02 00 05"));
	/* QoS 2 in: delivered once, PUBREC, duplicate not delivered again,
	 * PUBREL -> PUBCOMP, then the id is free for a new message */
	feed("34 09 00 03 78 2f 79 00 07 6f 6b");
	TT_CHECK(r.messages == 3 && r.last_qos == 2);
	TT_CHECK(expect("50 02 00 07"));
	feed("3c 09 00 03 78 2f 79 00 07 6f 6b"); /* DUP */
	TT_CHECK(r.messages == 3);
	TT_CHECK(client_stats(c)->dup_qos2_in == 1);
	TT_CHECK(expect("50 02 00 07"));
	feed("62 02 00 07");
	TT_CHECK(expect("70 02 00 07"));
	feed("34 09 00 03 78 2f 79 00 07 6f 6b");
	TT_CHECK(r.messages == 4);
	TT_CHECK(expect("50 02 00 07"));
	feed("62 02 00 07");
	TT_CHECK(expect("70 02 00 07"));
	/* two packets in one read, and a packet split across reads */
	feed("30 05 00 01 71 41 42 30 05 00 01 71 43 44 30 05 00");
	TT_CHECK(r.messages == 6);
	feed("01 71 45 46");
	TT_CHECK(r.messages == 7 && strcmp(r.last_payload, "EF") == 0);

	/* subscribe to two filters, SUBACK with one failure; unsubscribe */
	{
		struct mqtt_topic_filter f[2];

		memset(f, 0, sizeof(f));
		f[0].filter.data = (const uint8_t *)"s/#";
		f[0].filter.len = 3;
		f[0].opts.qos = 1;
		f[1].filter.data = (const uint8_t *)"t";
		f[1].filter.len = 1;
		f[1].opts.qos = 2;
		id = client_subscribe(c, f, 2, NULL);
		TT_CHECK(id == 3);
		TT_CHECK(expect("82 0c 00 03 00 03 73 2f 23 01 00 01 74 02"));
		feed("90 04 00 03 01 80");
		TT_CHECK(r.subacks == 1 && r.n_codes == 2 &&
		         r.codes[0] == 1 && r.codes[1] == 0x80);
		id = client_unsubscribe(c, f, 1, NULL);
		TT_CHECK(id == 4);
		TT_CHECK(expect("a2 07 00 04 00 03 73 2f 23"));
		feed("b0 02 00 04");
		TT_CHECK(r.unsubacks == 1);
	}
	/* graceful disconnect: DISCONNECT, then our EOF, then closed(0) */
	TT_CHECK(client_disconnect(c, 0) == 0);
	TT_CHECK(client_state(c) == CLIENT_DISCONNECTING);
	TT_CHECK(client_disconnect(c, 0) == CLIENT_ESTATE);
	TT_CHECK(expect("e0 00"));
	{
		uint8_t b[4];
		int64_t end = evloop_clock_ns() + EV_NS_PER_SEC;
		ssize_t n;

		while ((n = read(g_peer, b, sizeof(b))) < 0 &&
		       evloop_clock_ns() < end)
			evloop_run_once(loop, EV_NS_PER_MS);
		TT_CHECK(n == 0); /* the client shut its side */
	}
	close(g_peer);
	g_peer = -1;
	pump(5);
	TT_CHECK(r.closed == 1 && r.close_err == 0);
	TT_CHECK(client_state(c) == CLIENT_CLOSED);
	TT_CHECK(client_stats(c)->pub_out[0] == 1 &&
	         client_stats(c)->pub_out[1] == 1 &&
	         client_stats(c)->pub_out[2] == 1);
	client_free(c);
}

static void test_qos_flows(void)
{
	setup();
	run_qos_flows();
	teardown();
}

static void test_qos_flows_partial_io(void)
{
	int seed;

	for (seed = 1; seed <= 5; seed++) {
		setup();
		g_partial = 1;
		g_rng = 0x9E3779B97F4A7C15ull * (uint64_t)seed;
		run_qos_flows();
		teardown();
	}
}

static void test_window_full(void)
{
	struct rec r;
	struct client_config cc;
	struct client *c;
	int i;

	setup();
	client_config_init(&cc);
	cc.client_id = "c1";
	cc.inflight_window = 3;
	memset(&r, 0, sizeof(r));
	c = client_new(loop, ctx, &cc, &cbs, &r);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3));
	feed(CONNACK_OK);
	TT_CHECK(client_window(c) == 3);
	for (i = 1; i <= 3; i++)
		TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1,
		                        0, NULL) == i);
	TT_CHECK(client_can_publish(c, 1) == 0);
	TT_CHECK(client_can_publish(c, 0) == 1);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1, 0,
	                        NULL) == CLIENT_EWINDOW);
	/* QoS 0 is not held by the window */
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 0, 0,
	                        NULL) == 0);
	TT_CHECK(expect("32 05 00 01 74 00 01 32 05 00 01 74 00 02"
	                " 32 05 00 01 74 00 03 30 03 00 01 74"));
	TT_CHECK(r.writable == 0);
	feed("40 02 00 02"); /* out of order */
	TT_CHECK(r.writable == 1);
	/* ids are never reused while in flight: 2 is free, 1 and 3 not */
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1, 0,
	                        NULL) == 4);
	TT_CHECK(expect("32 05 00 01 74 00 04"));
	feed("40 02 00 01 40 02 00 03 40 02 00 04");
	TT_CHECK(r.done == 4 && client_inflight(c) == 0);
	/* invalid arguments */
	TT_CHECK(client_publish(c, (const uint8_t *)"a/+", 3, NULL, 0, 0, 0,
	                        NULL) == CLIENT_EINVAL);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 3, 0,
	                        NULL) == CLIENT_EINVAL);
	client_free(c);
	teardown();
}

static void test_packet_ids_wrap(void)
{
	struct rec r;
	struct client *c;
	int i, id = 0, ok = 1;
	char ack[32];

	setup();
	c = connected_v3(&r);
	/* 70000 QoS 1 flows: ids run 1..65535, then 1 again, never 0 */
	for (i = 0; i < 70000; i++) {
		id = client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1, 0,
		                    NULL);
		if (id != (i % 65535) + 1)
			ok = 0;
		snprintf(ack, sizeof(ack), "40 02 %02x %02x", id >> 8,
		         id & 0xff);
		{
			uint8_t b[8], sink[64];
			size_t n = tt_unhex(ack, b);

			TT_CHECK(write(g_peer, b, n) == (ssize_t)n);
			while (client_inflight(c))
				evloop_run_once(loop, EV_NS_PER_MS);
			while (read(g_peer, sink, sizeof(sink)) > 0)
				;
		}
	}
	TT_CHECK(ok);
	TT_CHECK(r.done == 70000);
	client_free(c);
	teardown();
}

static void test_keepalive(void)
{
	struct rec r;
	struct client_config cc;
	struct client *c;

	setup();
	client_config_init(&cc);
	cc.client_id = "c1";
	cc.keepalive = 1;
	cc.ping_timeout_ns = 300 * EV_NS_PER_MS;
	memset(&r, 0, sizeof(r));
	c = client_new(loop, ctx, &cc, &cbs, &r);
	client_connect(c);
	TT_CHECK(expect("10 0e 00 04 4d 51 54 54 04 02 00 01 00 02 63 31"));
	feed(CONNACK_OK);
	pump(800);
	TT_CHECK(expect_silence()); /* not yet */
	pump(300);
	TT_CHECK(expect("c0 00"));
	feed("d0 00");
	TT_CHECK(client_stats(c)->pings == 1);
	/* next one after another second; this time no PINGRESP */
	pump(1000);
	TT_CHECK(expect("c0 00"));
	TT_CHECK(r.closed == 0);
	pump(400);
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_ETIMEOUT);
	TT_CHECK(strstr(r.close_msg, "no PINGRESP from 127.0.0.1:1884") !=
	         NULL);
	client_free(c);
	teardown();
}

static void test_persistent_resend(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = new_client(&r, MQTT_V311, 0, 0);
	client_connect(c);
	TT_CHECK(expect("10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 63 31"));
	feed(CONNACK_OK);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"A", 1, 1, 0, NULL) == 1);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"B", 1, 2, 0, NULL) == 2);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"C", 1, 2, 0, NULL) == 3);
	TT_CHECK(expect("32 06 00 01 74 00 01 41 34 06 00 01 74 00 02 42"
	                " 34 06 00 01 74 00 03 43"));
	feed("50 02 00 03");
	TT_CHECK(expect("62 02 00 03"));
	/* the broker goes away; we reconnect from on_closed */
	r.reconnect_on_close = 1;
	close(g_peer);
	g_peer = -1;
	pump(5);
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_ECLOSED);
	TT_CHECK(strstr(r.close_msg, "closed by the broker") != NULL);
	TT_CHECK(client_inflight(c) == 3);
	TT_CHECK(expect("10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 63 31"));
	feed("20 02 01 00"); /* session present */
	TT_CHECK(r.connected == 2 && r.resent == 3);
	/* in the original order: PUBLISH 1 and 2 with DUP, PUBREL 3 */
	TT_CHECK(expect("3a 06 00 01 74 00 01 41 3c 06 00 01 74 00 02 42"
	                " 62 02 00 03"));
	feed("40 02 00 01 50 02 00 02");
	TT_CHECK(expect("62 02 00 02"));
	feed("70 02 00 02 70 02 00 03");
	TT_CHECK(r.done == 3 && client_inflight(c) == 0);

	/* again, but the broker lost the session: flows are dropped */
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"D", 1, 1, 0, NULL) == 4);
	TT_CHECK(expect("32 06 00 01 74 00 04 44"));
	r.reconnect_on_close = 1;
	close(g_peer);
	g_peer = -1;
	pump(5);
	TT_CHECK(expect("10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 63 31"));
	feed("20 02 00 00");
	TT_CHECK(r.connected == 3 && r.resent == 0 && r.dropped == 1);
	TT_CHECK(client_inflight(c) == 0);
	TT_CHECK(expect_silence());
	client_free(c);
	teardown();
}

/*
 * client_reconnect (loadgen's TCP/TLS migration): the connection is dropped
 * as it is, with no DISCONNECT and no on_closed; a new one connects, and
 * the persistent session resends what was not acknowledged, with DUP.
 */
static void test_reconnect(void)
{
	struct rec r;
	struct client *c;
	uint8_t b[16];
	int old;

	setup();
	c = new_client(&r, MQTT_V311, 0, 0);
	TT_CHECK(client_reconnect(c, NULL) == CLIENT_ESTATE); /* idle */
	client_connect(c);
	TT_CHECK(expect("10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 63 31"));
	feed(CONNACK_OK);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"A", 1, 1, 0, NULL) == 1);
	TT_CHECK(expect("32 06 00 01 74 00 01 41"));
	old = dup(g_peer);
	TT_CHECK(client_reconnect(c, NULL) == 0);
	TT_CHECK(client_reconnect(c, NULL) == CLIENT_ESTATE); /* under way */
	/* nothing more on the old connection until the new CONNACK */
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"B", 1, 1, 0, NULL) ==
	         CLIENT_ESTATE);
	TT_CHECK(expect("10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 63 31"));
	TT_CHECK(read(old, b, sizeof(b)) == 0); /* closed, no DISCONNECT */
	close(old);
	TT_CHECK(r.closed == 0 && r.connected == 1);
	feed("20 02 01 00"); /* session present */
	TT_CHECK(r.connected == 2 && r.resent == 1 && r.closed == 0);
	TT_CHECK(expect("3a 06 00 01 74 00 01 41"));
	feed("40 02 00 01");
	TT_CHECK(r.done == 1 && client_inflight(c) == 0);
	TT_CHECK(client_stats(c)->pub_written == 1);
	TT_CHECK(client_stats(c)->connects == 2);
	client_free(c);
	teardown();
}

#define CONNECT_V3_PERSISTENT \
	"10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 63 31"

/*
 * pub_written, what loadgen reports as written to the transport: a message
 * counts once, when its last byte is taken; not when queued, not while a
 * send would block. A persistent session's message that a close caught
 * unwritten counts with its resend; one written before does not count
 * again when it is resent.
 */
static void test_pub_written(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = new_client(&r, MQTT_V311, 0, 0);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3_PERSISTENT));
	feed(CONNACK_OK);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"A", 1, 1, 0, NULL) == 1);
	TT_CHECK(expect("32 06 00 01 74 00 01 41"));
	TT_CHECK(client_stats(c)->pub_written == 1);
	/* the socket takes nothing: queued, not written */
	g_send_block = 1;
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"B", 1, 1, 0, NULL) == 2);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
	                        (const uint8_t *)"C", 1, 0, 0, NULL) == 0);
	pump(5);
	TT_CHECK(client_stats(c)->pub_out[0] == 1);
	TT_CHECK(client_stats(c)->pub_out[1] == 2);
	TT_CHECK(client_stats(c)->pub_written == 1);
	/* the broker goes away: B and C never left; the session keeps A and
	 * B (QoS 1) for a resend, C (QoS 0) is gone */
	r.reconnect_on_close = 1;
	close(g_peer);
	g_peer = -1;
	pump(5);
	TT_CHECK(r.closed == 1 && r.st_closed.pub_written == 1);
	TT_CHECK(r.st_closed.bytes_unsent == 8 + 6);
	g_send_block = 0;
	TT_CHECK(expect(CONNECT_V3_PERSISTENT));
	feed("20 02 01 00"); /* session present */
	TT_CHECK(r.connected == 2 && r.resent == 2);
	/* A again (written before: not counted twice), B for the first time */
	TT_CHECK(expect("3a 06 00 01 74 00 01 41 3a 06 00 01 74 00 02 42"));
	TT_CHECK(client_stats(c)->pub_written == 2);
	feed("40 02 00 01 40 02 00 02");
	TT_CHECK(r.done == 2 && client_inflight(c) == 0);
	TT_CHECK(client_stats(c)->pub_written == 2);
	client_free(c);
	teardown();
}

/*
 * The same under sends cut short at random: at every moment pub_written is
 * the number of publishes whose every byte reached the broker's side.
 */
static void test_pub_written_partial(void)
{
	struct rec r;
	struct client *c;
	uint8_t b[256];
	uint64_t got = 0;
	int i, ok = 1;
	ssize_t n;

	setup();
	c = connected_v3(&r);
	g_partial = 1;
	for (i = 0; i < 50; i++)
		TT_CHECK(client_publish(c, (const uint8_t *)"t", 1,
		                        (const uint8_t *)"XYZ", 3, 0, 0,
		                        NULL) == 0);
	TT_CHECK(client_stats(c)->pub_out[0] == 50);
	for (i = 0; i < 2000 && got < 50 * 8; i++) {
		evloop_run_once(loop, EV_NS_PER_MS);
		while ((n = read(g_peer, b, sizeof(b))) > 0)
			got += (uint64_t)n;
		/* 8 bytes per packet: 30 06 00 01 74 58 59 5a */
		if (client_stats(c)->pub_written != got / 8)
			ok = 0;
	}
	TT_CHECK(ok);
	TT_CHECK(got == 50 * 8 && client_stats(c)->pub_written == 50);
	client_free(c);
	teardown();
}

static void test_clean_session_drops_on_close(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = connected_v3(&r);
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1, 0,
	                        NULL) == 1);
	TT_CHECK(expect("32 05 00 01 74 00 01"));
	close(g_peer);
	g_peer = -1;
	pump(5);
	TT_CHECK(r.closed == 1 && client_inflight(c) == 0);
	TT_CHECK(client_stats(c)->dropped == 1);
	client_free(c);
	teardown();
}

static void test_broker_disconnect_v5(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = new_client(&r, MQTT_V5, 1, 0);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V5));
	feed("20 03 00 00 00");
	TT_CHECK(r.connected == 1);
	feed("e0 01 8e");
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_EDISCONNECTED);
	TT_CHECK(strstr(r.close_msg, "session taken over (0x8e)") != NULL);
	client_free(c);
	teardown();
}

static void test_protocol_errors(void)
{
	struct rec r;
	struct client_config cc;
	struct client *c;

	setup();
	/* a packet over our maximum size */
	client_config_init(&cc);
	cc.client_id = "c1";
	cc.max_packet_size = 16;
	memset(&r, 0, sizeof(r));
	c = client_new(loop, ctx, &cc, &cbs, &r);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3));
	feed(CONNACK_OK);
	feed("30 14 00 01 74 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
	     " 00");
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_EPROTO);
	TT_CHECK(strstr(r.close_msg, "maximum packet size of 16") != NULL);
	client_free(c);

	/* something other than CONNACK first */
	c = new_client(&r, MQTT_V311, 1, 0);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3));
	feed("d0 00");
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_EPROTO);
	TT_CHECK(strstr(r.close_msg, "before CONNACK") != NULL);
	client_free(c);

	/* malformed: CONNACK with bad flags */
	c = new_client(&r, MQTT_V311, 1, 0);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3));
	feed("20 02 02 00");
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_EPROTO);
	TT_CHECK(strstr(r.close_msg, "malformed") != NULL);
	client_free(c);
	teardown();
}

static void test_free_inside_callback(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = connected_v3(&r);
	TT_CHECK(c != NULL);
	r.free_on_message = 1;
	/* two messages in one read: the second must not reach a freed client */
	feed("30 05 00 01 71 41 42 30 05 00 01 71 43 44");
	TT_CHECK(r.messages == 1);
	TT_CHECK(evloop_io_count(loop) == 0);
	TT_CHECK(evloop_timer_count(loop) == 0);
	teardown();
}

static void test_disconnect_while_connecting(void)
{
	struct rec r;
	struct client *c;

	setup();
	g_hs_again = 1000000;
	c = new_client(&r, MQTT_V311, 1, 0);
	client_connect(c);
	pump(2);
	TT_CHECK(client_disconnect(c, 0) == 0);
	TT_CHECK(r.closed == 0);
	pump(2);
	TT_CHECK(r.closed == 1 && r.close_err == 0);
	TT_CHECK(client_state(c) == CLIENT_CLOSED);
	client_free(c);
	teardown();
}

/*
 * Robustness: after CONNACK the broker sends valid packets with random
 * damage (flipped bits, cut lengths, garbage). The engine must either go on
 * or close with a protocol error and a message; ASan watches the rest.
 */
static void test_damaged_broker_bytes(void)
{
	static const char *const good[] = {
		"30 07 00 03 61 2f 62 68 69",
		"32 09 00 03 61 2f 62 00 01 68 69",
		"34 09 00 03 61 2f 62 00 02 68 69",
		"62 02 00 02",
		"40 02 00 01",
		"50 02 00 01",
		"70 02 00 01",
		"90 04 00 01 01 80",
		"b0 02 00 01",
		"d0 00",
	};
	int iter, closed = 0;

	for (iter = 0; iter < 300; iter++) {
		struct rec r;
		struct client *c;
		uint8_t buf[256];
		size_t n = 0, k;
		int i;

		setup();
		g_rng = 0xC0FFEEull + (uint64_t)iter * 7919;
		c = connected_v3(&r);
		/* a QoS 1 and a QoS 2 flow in flight, a subscription */
		client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1, 0, NULL);
		client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 2, 0, NULL);
		for (i = 0; i < 6; i++) {
			uint8_t pkt[64];
			size_t m = tt_unhex(good[rnd(10)], pkt);

			if (n + m > sizeof(buf))
				break;
			memcpy(buf + n, pkt, m);
			n += m;
		}
		switch (rnd(4)) {
		case 0: /* flip bits */
			for (k = 0; k < 3; k++)
				buf[rnd((unsigned)n)] ^= (uint8_t)(1u << rnd(8));
			break;
		case 1: /* inflate a length byte */
			buf[1] = (uint8_t)rnd(256);
			break;
		case 2: /* garbage tail */
			for (k = 0; k < 8 && n < sizeof(buf); k++)
				buf[n++] = (uint8_t)rnd(256);
			break;
		default: /* cut short */
			n = 1 + rnd((unsigned)n);
			break;
		}
		TT_CHECK(write(g_peer, buf, n) == (ssize_t)n);
		pump(3);
		if (r.closed) {
			closed++;
			TT_CHECK(r.close_err == CLIENT_EPROTO);
			TT_CHECK(strncmp(r.close_msg, "broker 127.0.0.1:1884 ",
			                 22) == 0);
			TT_CHECK(client_state(c) == CLIENT_CLOSED);
		} else {
			TT_CHECK(client_state(c) == CLIENT_CONNECTED);
		}
		client_free(c);
		teardown();
	}
	printf("     %d of 300 damaged streams closed the connection\n",
	       closed);
	TT_CHECK(closed > 0 && closed < 300);
}

/* The broker writes n raw bytes at once. */
static void feed_raw(const uint8_t *b, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = write(g_peer, b + done, n - done);

		if (w > 0)
			done += (size_t)w;
		else
			evloop_run_once(loop, EV_NS_PER_MS);
	}
	pump(2);
}

/* A QoS 0 PUBLISH to "t" of `total` bytes in all (5 <= total < 2 MiB,
 * not 16387, which no fixed header makes exact), with a payload of bytes
 * i * 7 + 1; returns its length (total). */
static size_t make_publish(uint8_t *b, size_t total)
{
	size_t hl = total - 2 <= 127 ? 2 : total - 3 <= 16383 ? 3 : 4;
	size_t rem = total - hl, i, v = rem;

	b[0] = 0x30;
	for (i = 1; i < hl; i++) {
		b[i] = (uint8_t)(v & 0x7F) | (i + 1 < hl ? 0x80 : 0);
		v >>= 7;
	}
	b[hl] = 0;
	b[hl + 1] = 1;
	b[hl + 2] = 't';
	for (i = hl + 3; i < total; i++)
		b[i] = (uint8_t)((i - hl - 3) * 7 + 1);
	return total;
}

static uint32_t payload_sum(size_t len)
{
	uint32_t h = 0;
	size_t i;

	for (i = 0; i < len; i++)
		h = h * 31 + (uint8_t)(i * 7 + 1);
	return h;
}

/*
 * Item: the incoming packet limit. The default is 1 MiB; a header claiming
 * more closes at once (no buffer reserved), with the size and the limit in
 * the message; a packet of exactly the limit passes.
 */
static void test_max_packet_size(void)
{
	static uint8_t big[100000];
	struct rec r;
	struct client_config cc;
	struct client *c;
	size_t idle, n;

	client_config_init(&cc);
	TT_CHECK(cc.max_packet_size == 1048576);

	setup();
	c = connected_v3(&r);
	idle = client_heap_bytes(c);
	/* remaining length 268435455: the spec's largest */
	feed("30 ff ff ff 7f 00 01 74");
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_EPROTO);
	TT_CHECK(strstr(r.close_msg, "a packet of 268435460 bytes, over our "
	                             "maximum packet size of 1048576 bytes") !=
	         NULL);
	TT_CHECK(client_heap_bytes(c) <= idle + strlen(r.close_msg) + 1);
	client_free(c);

	/* a 100000-byte packet in three reads: the partial buffer is the
	 * packet's exact size, and freed once the packet is handled; the
	 * last 89997 bytes, more than the shared read buffer holds, are read
	 * into it directly */
	c = connected_v3(&r);
	idle = client_heap_bytes(c);
	n = make_publish(big, sizeof(big));
	feed_raw(big, 3);
	TT_CHECK(client_heap_bytes(c) == idle + MQTT_MAX_FIXED_HEADER);
	feed_raw(big + 3, 10000);
	TT_CHECK(client_heap_bytes(c) == idle + n);
	TT_CHECK(r.messages == 0);
	feed_raw(big + 10003, n - 10003);
	TT_CHECK(r.messages == 1 && r.last_payload_len == n - 7);
	TT_CHECK(r.payload_sum == payload_sum(n - 7));
	TT_CHECK(client_heap_bytes(c) == idle);
	TT_CHECK(client_state(c) == CLIENT_CONNECTED);
	client_free(c);
	teardown();

	/* a limit of 300: 300 bytes pass (split after the header), 301 not */
	setup();
	client_config_init(&cc);
	cc.client_id = "c1";
	cc.max_packet_size = 300;
	memset(&r, 0, sizeof(r));
	c = client_new(loop, ctx, &cc, &cbs, &r);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V3));
	feed(CONNACK_OK);
	n = make_publish(big, 300);
	feed_raw(big, 10);
	feed_raw(big + 10, n - 10);
	TT_CHECK(r.messages == 1 && r.last_payload_len == 294);
	n = make_publish(big, 301);
	feed_raw(big, 3); /* the header alone is enough to refuse it */
	TT_CHECK(r.closed == 1 && r.close_err == CLIENT_EPROTO);
	TT_CHECK(strstr(r.close_msg, "a packet of 301 bytes, over our maximum "
	                             "packet size of 300 bytes") != NULL);
	client_free(c);
	teardown();
}

/*
 * Item: an ack read together with the CONNACK whose on_connected issued
 * the publish: its `now` must not be before the publish's t_sent.
 */
static void test_ack_time_after_publish(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = new_client(&r, MQTT_V311, 1, 0);
	r.publish_on_connect = 1;
	TT_CHECK(client_connect(c) == 0);
	TT_CHECK(expect(CONNECT_V3));
	/* CONNACK and the PUBACK of the publish on_connected will make, in
	 * one read */
	feed("20 02 00 00 40 02 00 01");
	TT_CHECK(r.connected == 1);
	TT_CHECK(r.done == 1 && r.done_ids[0] == 1);
	TT_CHECK(r.min_ack_delay >= 0);
	TT_CHECK(expect("32 05 00 01 74 00 01"));
	client_free(c);
	teardown();
}

/*
 * Item: PUBREL only where MQTT 5.0 4.3.3 and 3.6.2.1 want one.
 */
static void test_pubrec_answers(void)
{
	struct rec r;
	struct client *c;

	setup();
	c = new_client(&r, MQTT_V5, 1, 0);
	client_connect(c);
	TT_CHECK(expect(CONNECT_V5));
	feed("20 03 00 00 00");
	TT_CHECK(r.connected == 1);
	/* a failed PUBREC ends the flow: on_publish_done, no PUBREL */
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 2, 0,
	                        NULL) == 1);
	TT_CHECK(expect("34 06 00 01 74 00 01 00"));
	feed("50 03 00 01 80");
	TT_CHECK(r.done == 1 && r.done_reason[0] == 0x80);
	TT_CHECK(client_inflight(c) == 0);
	TT_CHECK(expect_silence());
	/* a failed PUBREC for an id we do not know: nothing */
	feed("50 03 00 09 80");
	TT_CHECK(expect_silence());
	/* a successful one for an unknown id: PUBREL "not found" */
	feed("50 02 00 09");
	TT_CHECK(expect("62 03 00 09 92"));
	/* the normal flow; a repeated PUBREC gets the PUBREL again, a
	 * failed one after it is ignored */
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 2, 0,
	                        NULL) == 2);
	TT_CHECK(expect("34 06 00 01 74 00 02 00"));
	feed("50 02 00 02");
	TT_CHECK(expect("62 02 00 02"));
	feed("50 02 00 02");
	TT_CHECK(expect("62 02 00 02"));
	feed("50 03 00 02 80");
	TT_CHECK(expect_silence());
	feed("70 02 00 02");
	TT_CHECK(r.done == 2 && r.done_reason[1] == 0);
	/* PUBREC for the id of a QoS 1 flow: no QoS 2 flow has it */
	TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, NULL, 0, 1, 0,
	                        NULL) == 3);
	TT_CHECK(expect("32 06 00 01 74 00 03 00"));
	feed("50 02 00 03");
	TT_CHECK(expect("62 03 00 03 92"));
	TT_CHECK(client_inflight(c) == 1);
	feed("40 02 00 03");
	TT_CHECK(r.done == 3 && client_inflight(c) == 0);
	TT_CHECK(client_state(c) == CLIENT_CONNECTED);
	client_free(c);

	/* 3.1.1 has no reason codes: a plain PUBREL ends the broker's flow */
	c = connected_v3(&r);
	feed("50 02 00 09");
	TT_CHECK(expect("62 02 00 09"));
	client_free(c);
	teardown();
}

/* Item: we allow no topic aliases, so any Topic Alias is refused. */
static void test_topic_alias_refused(void)
{
	static const char *const alias[] = {
		"30 07 00 01 61 03 23 00 01", /* with a topic name */
		"30 06 00 00 03 23 00 01 ",   /* without */
	};
	int i;

	setup();
	for (i = 0; i < 2; i++) {
		struct rec r;
		struct client *c = new_client(&r, MQTT_V5, 1, 0);

		client_connect(c);
		TT_CHECK(expect(CONNECT_V5));
		feed("20 03 00 00 00");
		feed(alias[i]);
		TT_CHECK(r.messages == 0);
		TT_CHECK(r.closed == 1 && r.close_err == CLIENT_EPROTO);
		TT_CHECK(strstr(r.close_msg, "Topic Alias 1, but we allow no "
		                             "topic aliases") != NULL);
		client_free(c);
	}
	teardown();
}

/*
 * Item: after a packet split across reads, the next read still brings
 * every packet waiting, not one packet per system call.
 */
static void test_reads_after_split(void)
{
	enum { NPKT = 60, SZ = 1000 };
	static uint8_t buf[(NPKT + 1) * SZ];
	struct rec r;
	struct client *c;
	size_t i;
	unsigned calls;

	setup();
	c = connected_v3(&r);
	for (i = 0; i <= NPKT; i++)
		make_publish(buf + i * SZ, SZ);
	feed_raw(buf, SZ / 2);
	TT_CHECK(r.messages == 0);
	calls = g_recv_calls;
	feed_raw(buf + SZ / 2, sizeof(buf) - SZ / 2);
	printf("     %d packets after a split one: %u reads\n", NPKT,
	       g_recv_calls - calls);
	TT_CHECK(r.messages == NPKT + 1);
	TT_CHECK(g_recv_calls - calls <= 3);
	TT_CHECK(client_heap_bytes(c) < 2048); /* nothing partial kept */
	client_free(c);
	teardown();
}

/*
 * Item: in on_closed, client_stats() counts everything the connection
 * moved, on every way a connection ends: wire bytes equal what the broker
 * read and wrote, MQTT bytes too, queued bytes never sent are told apart.
 */
static size_t drain_peer(void)
{
	uint8_t b[4096];
	size_t total = 0;
	ssize_t n;

	while ((n = read(g_peer, b, sizeof(b))) > 0)
		total += (size_t)n;
	return total;
}

static void test_stats_in_on_closed(void)
{
	struct rec r;
	struct client *c;
	size_t got;
	int path;

	/* 0: our graceful disconnect, 1: broker EOF, 2: protocol error,
	 * 3: broker EOF with a publish still queued */
	for (path = 0; path < 4; path++) {
		const struct client_stats *st = &r.st_closed;

		setup();
		c = connected_v3(&r); /* the broker has read CONNECT */
		got = 16;
		TT_CHECK(client_publish(c, (const uint8_t *)"a", 1,
		                        (const uint8_t *)"xy", 2, 0, 0,
		                        NULL) == 0);
		TT_CHECK(expect("30 05 00 01 61 78 79"));
		got += 7;
		feed("30 05 00 01 62 6d 6e");
		TT_CHECK(r.messages == 1);
		if (path == 0) {
			TT_CHECK(client_disconnect(c, 0) == 0);
			pump(5);
			got += drain_peer();
			close(g_peer);
			g_peer = -1;
			pump(5);
			TT_CHECK(r.closed == 1 && r.close_err == 0);
			TT_CHECK(st->out_by_type[MQTT_DISCONNECT] == 1);
		} else if (path == 1 || path == 3) {
			if (path == 3) {
				g_send_block = 1;
				TT_CHECK(client_publish(c, (const uint8_t *)"a",
				                        1, NULL, 0, 0, 0,
				                        NULL) == 0);
			}
			close(g_peer);
			g_peer = -1;
			pump(5);
			TT_CHECK(r.closed == 1 &&
			         r.close_err == CLIENT_ECLOSED);
		} else {
			feed("f0 00");
			TT_CHECK(r.closed == 1 &&
			         r.close_err == CLIENT_EPROTO);
		}
		/* broker wrote CONNACK, a PUBLISH (and "f0 00") */
		TT_CHECK(st->wire_in == 4 + 7 + (path == 2 ? 2 : 0));
		TT_CHECK(st->bytes_in == st->wire_in);
		TT_CHECK(st->wire_out == got);
		TT_CHECK(st->bytes_out - st->bytes_unsent == got);
		TT_CHECK(st->bytes_unsent == (path == 3 ? 5u : 0u));
		/* the same after on_closed */
		TT_CHECK(client_stats(c)->wire_out == got);
		client_free(c);
		teardown();
	}
}

static void test_many_idle_clients_memory(void)
{
	enum { N = 200 };
	static struct rec recs[N];
	static struct client *cs[N];
	static int peers[N];
	static size_t fresh[N];
	size_t total = 0;
	int i, no_buffers = 1;

	setup();
	for (i = 0; i < N; i++) {
		char id[16];
		struct client_config cc;

		client_config_init(&cc);
		snprintf(id, sizeof(id), "c%d", i);
		cc.client_id = id;
		memset(&recs[i], 0, sizeof(recs[i]));
		cs[i] = client_new(loop, ctx, &cc, &cbs, &recs[i]);
		fresh[i] = client_heap_bytes(cs[i]);
		client_connect(cs[i]);
		{
			uint8_t b[64];
			int64_t end = evloop_clock_ns() + EV_NS_PER_SEC;

			while (read(g_peer, b, sizeof(b)) <= 0 &&
			       evloop_clock_ns() < end)
				evloop_run_once(loop, EV_NS_PER_MS);
		}
		feed(CONNACK_OK);
		/* keep this broker end; the fake makes a new one per open */
		peers[i] = g_peer;
		g_peer = -1;
	}
	pump(5);
	for (i = 0; i < N; i++) {
		total += client_heap_bytes(cs[i]);
		/* as before it ever connected (the struct, the id, an empty
		 * session cache), plus only the 128-byte output buffer that
		 * CONNECT was encoded in, kept because it is small; no input
		 * buffer */
		if (client_heap_bytes(cs[i]) > fresh[i] + 128)
			no_buffers = 0;
	}
	printf("     %d idle connected clients: %zu bytes of engine heap "
	       "each\n", N, total / N);
	TT_CHECK(no_buffers);
	TT_CHECK(total / N < 1280);
	for (i = 0; i < N; i++) {
		TT_CHECK(recs[i].connected == 1);
		TT_CHECK(client_state(cs[i]) == CLIENT_CONNECTED);
		client_free(cs[i]);
		close(peers[i]);
	}
	teardown();
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	TT_RUN(test_connect_v311);
	TT_RUN(test_connect_v5_props);
	TT_RUN(test_connack_refused);
	TT_RUN(test_connect_fails_async);
	TT_RUN(test_connack_timeout);
	TT_RUN(test_qos_flows);
	TT_RUN(test_qos_flows_partial_io);
	TT_RUN(test_window_full);
	TT_RUN(test_packet_ids_wrap);
	TT_RUN(test_persistent_resend);
	TT_RUN(test_reconnect);
	TT_RUN(test_clean_session_drops_on_close);
	TT_RUN(test_broker_disconnect_v5);
	TT_RUN(test_protocol_errors);
	TT_RUN(test_free_inside_callback);
	TT_RUN(test_disconnect_while_connecting);
	TT_RUN(test_keepalive);
	TT_RUN(test_damaged_broker_bytes);
	TT_RUN(test_max_packet_size);
	TT_RUN(test_ack_time_after_publish);
	TT_RUN(test_pubrec_answers);
	TT_RUN(test_topic_alias_refused);
	TT_RUN(test_reads_after_split);
	TT_RUN(test_stats_in_on_closed);
	TT_RUN(test_many_idle_clients_memory);
	TT_RUN(test_pub_written);
	TT_RUN(test_pub_written_partial);
	return TT_DONE();
}
