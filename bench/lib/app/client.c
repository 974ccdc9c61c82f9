/*
 * client.c: an MQTT session on a connection. See client.h.
 *
 * The client is the session's owner and the connection's user: it hands
 * the connection's bytes, time and end to the session, the session's
 * bytes to the connection, and turns what the session settles into the
 * application's callbacks.
 *
 * Structure: entry points are the public calls and the conn_user callbacks
 * (u_*), which the connection runs from loop callbacks only. Public calls
 * never run application callbacks: a close they decide (abandoning a
 * connection attempt) or a move to a new connection (client_reconnect) is
 * parked in c->pend and carried out from the connection's timer, on the
 * next loop round. The u_* callbacks may run
 * application callbacks, which may do anything to the client; `busy`
 * defers a client_free() from inside one until the u_* callback returns,
 * and sess_halt() makes the session stop at once.
 */
#include "app/client.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct client {
	struct conn_user user; /* our stream on the connection */
	struct mqtt_session *s; /* in this allocation, after the struct */
	struct evloop *loop;
	struct tr_ctx *trctx;
	struct tr_session *trsess; /* TLS and QUIC only; NULL for TCP */
	struct conn *conn;     /* NULL when not connected */
	const struct client_callbacks *cbs;
	void *user_ptr;
	char *errmsg;          /* message of the last close with an error */
	/* wire bytes of the own connections already closed */
	uint64_t wire_in_done, wire_out_done;
	int pend_err;
	struct tr_ctx *pend_ctx; /* PEND_RECONNECT: the new connection's */
	uint16_t busy;         /* depth of u_* callbacks running */
	uint8_t own_conn;      /* conn is ours: freed at close */
	uint8_t free_pending;  /* client_free() inside a callback */
	uint8_t pend;          /* PEND_*: parked for the timer */
	uint8_t early_sent;    /* CONNECT went as early data */
	int8_t early;          /* 0-RTT outcome: 0, 1 accepted, -1 rejected */
};

/* What c->pend parks for the connection's timer. */
enum { PEND_NONE = 0, PEND_CLOSE, PEND_RECONNECT };

/* The session sits after the client, aligned as malloc aligns. */
#define SESS_OFFSET ((sizeof(struct client) + 15) & ~(size_t)15)

static struct client *of_user(struct conn_user *u)
{
	return (struct client *)((char *)u - offsetof(struct client, user));
}

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
	case TR_EQUIC: return CLIENT_EQUIC;
	case TR_EOF:
	case TR_ERESET: return CLIENT_ECLOSED;
	}
	return CLIENT_EIO;
}

static void set_errmsg(struct client *c, const char *msg)
{
	char *m = strdup(msg);

	if (!m)
		return; /* the old message stays; the code still tells */
	free(c->errmsg);
	c->errmsg = m;
}

/* ---- closing ---- */

/* Leave the connection; an own one is closed, its wire bytes kept. */
static void teardown(struct client *c)
{
	struct tr_conn *t;

	if (!c->conn)
		return;
	t = conn_transport(c->conn);
	if (c->own_conn && t) {
		c->wire_in_done += t->wire_in;
		c->wire_out_done += t->wire_out;
	}
	conn_detach(c->conn, &c->user);
	if (c->own_conn)
		conn_free(c->conn);
	c->conn = NULL;
	c->own_conn = 0;
}

/* The MQTT connection is over: tear down, then tell the application. */
static void close_now(struct client *c, int err, const char *msg)
{
	char line[400];

	/* msg may be the session's or the connection's, gone below */
	snprintf(line, sizeof(line), "%s", err ? msg : "disconnected");
	if (err)
		set_errmsg(c, line);
	teardown(c);
	sess_closed(c->s);
	c->pend = PEND_NONE;
	if (c->cbs->on_closed)
		c->cbs->on_closed(c, err, line);
}

/* After a session call: a failure it kept closes the connection. */
static void check(struct client *c, int r)
{
	if (r == SESS_DONE)
		close_now(c, 0, "disconnected");
	else if (r < 0 && !c->free_pending)
		close_now(c, r, sess_errmsg(c->s));
}

static void destroy(struct client *c)
{
	teardown(c);
	sess_fini(c->s);
	tr_session_del(c->trsess);
	free(c->errmsg);
	free(c);
}

static void enter(struct client *c)
{
	c->busy++;
}

/* End of a u_* callback: a "writable" owed, then a deferred free. */
static void leave(struct client *c)
{
	if (!c->free_pending && !c->pend && sess_take_writable(c->s) &&
	    c->cbs->on_writable)
		c->cbs->on_writable(c);
	c->busy--;
	if (c->busy == 0 && c->free_pending)
		destroy(c);
}

/* ---- the session's callbacks ---- */

static void s_on_connack(void *owner, const struct sess_connack_info *si)
{
	struct client *c = owner;
	struct client_connected_info info;
	struct tr_info ti;
	struct tr_conn *t = c->conn ? conn_transport(c->conn) : NULL;

	if (!c->cbs->on_connected)
		return;
	memset(&info, 0, sizeof(info));
	memset(&ti, 0, sizeof(ti));
	if (t)
		tr_get_info(t, &ti);
	info.t_start = sess_t_start(c->s);
	info.t_transport_connected = ti.t_connected;
	info.t_transport_ready = ti.t_ready;
	info.tls_resumed = ti.resumed;
	info.early = c->early_sent;
	info.mqtt = si;
	c->cbs->on_connected(c, &info);
}

static void s_on_message(void *owner, const struct mqtt_publish *m,
                         int64_t now)
{
	struct client *c = owner;

	if (c->cbs->on_message)
		c->cbs->on_message(c, m, now);
}

static void s_on_publish_done(void *owner, uint16_t id, uint8_t qos,
                              uint8_t reason, int64_t t_sent, int64_t now)
{
	struct client *c = owner;

	if (c->cbs->on_publish_done)
		c->cbs->on_publish_done(c, id, qos, reason, t_sent, now);
}

static void s_on_subscribed(void *owner, uint16_t id, const uint8_t *codes,
                            size_t n)
{
	struct client *c = owner;

	if (c->cbs->on_subscribed)
		c->cbs->on_subscribed(c, id, codes, n);
}

static void s_on_unsubscribed(void *owner, uint16_t id,
                              const uint8_t *codes, size_t n)
{
	struct client *c = owner;

	if (c->cbs->on_unsubscribed)
		c->cbs->on_unsubscribed(c, id, codes, n);
}

static int64_t s_clock(void *owner)
{
	(void)owner;
	return evloop_clock_ns();
}

static const struct sess_handler sess_handler = {
	.on_connack = s_on_connack,
	.on_message = s_on_message,
	.on_publish_done = s_on_publish_done,
	.on_subscribed = s_on_subscribed,
	.on_unsubscribed = s_on_unsubscribed,
	.clock = s_clock,
};

/* ---- the connection's callbacks ---- */

static void u_on_open(struct conn_user *u, int early, int64_t now)
{
	struct client *c = of_user(u);

	if (c->pend || c->free_pending)
		return;
	enter(c);
	c->early_sent = early;
	check(c, sess_start(c->s, now));
	leave(c);
}

static uint8_t *u_rx_buffer(struct conn_user *u, size_t *cap)
{
	return sess_rx_buffer(of_user(u)->s, cap);
}

static void u_on_data(struct conn_user *u, const uint8_t *buf, size_t len,
                      int64_t now)
{
	struct client *c = of_user(u);

	if (c->pend || c->free_pending)
		return; /* abandoning: the broker's bytes no longer matter */
	enter(c);
	check(c, sess_input(c->s, buf, len, now));
	leave(c);
}

static size_t u_pending(struct conn_user *u, const uint8_t **data)
{
	struct client *c = of_user(u);

	if (c->pend || c->free_pending)
		return 0;
	return sess_pending(c->s, data);
}

static void u_sent(struct conn_user *u, size_t n, int64_t now)
{
	(void)now;
	sess_sent(of_user(u)->s, n);
}

static void u_on_sent(struct conn_user *u)
{
	struct client *c = of_user(u);

	enter(c);
	leave(c); /* where an owed on_writable is called */
}

static void u_on_note(struct conn_user *u, unsigned notes)
{
	struct client *c = of_user(u);

	if (!c->early_sent)
		return;
	if (notes & TR_NOTE_EARLY_ACCEPTED)
		c->early = 1;
	if (notes & TR_NOTE_EARLY_REJECTED)
		c->early = -1;
}

static int64_t u_deadline(struct conn_user *u)
{
	struct client *c = of_user(u);

	if (c->pend)
		return 0; /* now */
	return sess_deadline(c->s);
}

static int connect_own(struct client *c, struct tr_ctx *ctx);

/*
 * What a public call parked: the close of an abandoned attempt, or the
 * move to a new connection (client_reconnect): the old one is dropped as
 * it is, the session closed (a persistent one keeps its flows) and a new
 * connection started; only its failure to start is told (on_closed).
 */
static void carry_out_pending(struct client *c)
{
	if (c->pend == PEND_RECONNECT) {
		teardown(c);
		sess_closed(c->s);
		c->pend = PEND_NONE;
		if (connect_own(c, c->pend_ctx) < 0)
			close_now(c, CLIENT_ENOMEM,
			          "out of memory for a new connection");
		return;
	}
	close_now(c, c->pend_err,
	          c->pend_err && c->errmsg ? c->errmsg : "disconnected");
}

static void u_on_timer(struct conn_user *u, int64_t now)
{
	struct client *c = of_user(u);

	enter(c);
	if (c->pend)
		carry_out_pending(c);
	else if (!c->free_pending)
		check(c, sess_on_time(c->s, now));
	leave(c);
}

static void u_on_end(struct conn_user *u, int err, const char *msg)
{
	struct client *c = of_user(u);

	enter(c);
	if (c->free_pending) {
		/* going away: nothing to tell */
	} else if (c->pend) {
		carry_out_pending(c);
	} else if (err == TR_EOF) {
		check(c, sess_eof(c->s));
	} else if (sess_state(c->s) == CLIENT_DISCONNECTING) {
		/* after our DISCONNECT, a reset is the broker closing */
		close_now(c, 0, "disconnected");
	} else {
		close_now(c, map_tr_error(err), msg);
	}
	leave(c);
}

static const struct conn_user_ops user_ops = {
	.on_open = u_on_open,
	.rx_buffer = u_rx_buffer,
	.on_data = u_on_data,
	.pending = u_pending,
	.sent = u_sent,
	.on_sent = u_on_sent,
	.on_note = u_on_note,
	.deadline = u_deadline,
	.on_timer = u_on_timer,
	.on_end = u_on_end,
};

/* ---- public calls ---- */

struct client *client_new(struct evloop *loop, struct tr_ctx *tr,
                          const struct client_config *cfg,
                          const struct client_callbacks *cbs, void *user)
{
	static const struct client_callbacks none;
	struct client *c = calloc(1, SESS_OFFSET + sess_size());

	if (!c)
		return NULL;
	c->s = (struct mqtt_session *)((char *)c + SESS_OFFSET);
	if (sess_init(c->s, cfg, &sess_handler, c) < 0) {
		free(c);
		return NULL;
	}
	/* resumption state only where the transport resumes */
	if ((tr->ops->flags & (TR_F_SECURE | TR_F_EARLY)) &&
	    !(c->trsess = tr_session_new())) {
		sess_fini(c->s);
		free(c);
		return NULL;
	}
	sess_set_peer(c->s, tr->peer);
	c->loop = loop;
	c->trctx = tr;
	c->cbs = cbs ? cbs : &none;
	c->user_ptr = user;
	c->user.ops = &user_ops;
	return c;
}

void client_free(struct client *c)
{
	if (!c)
		return;
	if (c->busy) {
		/* Inside a callback: the session may still be in use up the
		 * stack. Stop it now, free when the callback unwinds. */
		c->free_pending = 1;
		sess_halt(c->s);
		return;
	}
	destroy(c);
}

void *client_user(const struct client *c)
{
	return c->user_ptr;
}

void client_set_user(struct client *c, void *user)
{
	c->user_ptr = user;
}

/* Put the client on conn and start its session. */
static int start_on(struct client *c, struct conn *conn, int own)
{
	enum client_state st = sess_state(c->s);
	int64_t now;

	if ((st != CLIENT_IDLE && st != CLIENT_CLOSED) || c->free_pending)
		return CLIENT_ESTATE;
	if (conn_attach(conn, &c->user) < 0)
		return CLIENT_ESTATE;
	now = evloop_clock_ns();
	sess_connecting(c->s, now);
	c->conn = conn;
	c->own_conn = own;
	c->pend = PEND_NONE;
	c->early_sent = c->early = 0;
	return 0;
}

/* Start the session on a new connection of its own, to ctx. */
static int connect_own(struct client *c, struct tr_ctx *ctx)
{
	struct conn *conn;
	int r;

	conn = conn_new(c->loop, ctx, c->trsess);
	if (!conn)
		return CLIENT_ENOMEM;
	r = start_on(c, conn, 1);
	if (r < 0) {
		conn_free(conn);
		return r;
	}
	if (conn_open(conn) < 0) {
		teardown(c);
		sess_closed(c->s);
		return CLIENT_ENOMEM;
	}
	return 0;
}

int client_connect(struct client *c)
{
	if (c->free_pending)
		return CLIENT_ESTATE;
	return connect_own(c, c->trctx);
}

int client_reconnect(struct client *c, struct tr_ctx *ctx)
{
	if (c->free_pending || c->pend || !c->conn || !c->own_conn ||
	    sess_state(c->s) != CLIENT_CONNECTED)
		return CLIENT_ESTATE;
	c->pend = PEND_RECONNECT;
	c->pend_ctx = ctx ? ctx : c->trctx;
	sess_halt(c->s);
	conn_kick(c->conn);
	return 0;
}

int client_connect_on(struct client *c, struct conn *conn)
{
	return start_on(c, conn, 0);
}

/* After the application queued something: write it. */
static int sent_now(struct client *c, int r)
{
	if (r >= 0 && c->conn)
		conn_flush(c->conn);
	return r;
}

int client_publish(struct client *c, const uint8_t *topic, size_t topic_len,
                   const uint8_t *payload, size_t payload_len, uint8_t qos,
                   uint8_t retain, const struct mqtt_props *props)
{
	if (c->pend || c->free_pending)
		return CLIENT_ESTATE;
	/* QoS 1/2: the send time of the ack latency, read fresh; QoS 0
	 * needs only the keepalive's idea of time, the loop's */
	return sent_now(c, sess_publish(c->s, topic, topic_len, payload,
	                                payload_len, qos, retain, props,
	                                qos ? evloop_clock_ns()
	                                    : evloop_now(c->loop)));
}

int client_can_publish(struct client *c, uint8_t qos)
{
	if (c->pend || c->free_pending)
		return 0;
	return sess_can_publish(c->s, qos);
}

int client_subscribe(struct client *c, const struct mqtt_topic_filter *filters,
                     size_t n, const struct mqtt_props *props)
{
	if (c->pend || c->free_pending)
		return CLIENT_ESTATE;
	return sent_now(c, sess_subscribe(c->s, filters, n, props,
	                                  evloop_clock_ns()));
}

int client_unsubscribe(struct client *c,
                       const struct mqtt_topic_filter *filters, size_t n,
                       const struct mqtt_props *props)
{
	if (c->pend || c->free_pending)
		return CLIENT_ESTATE;
	return sent_now(c, sess_unsubscribe(c->s, filters, n, props,
	                                    evloop_clock_ns()));
}

int client_disconnect(struct client *c, uint8_t reason)
{
	int r;

	if (c->free_pending || c->pend || !c->conn)
		return CLIENT_ESTATE;
	switch (sess_state(c->s)) {
	case CLIENT_CONNECTING:
	case CLIENT_CONNECT_SENT:
		/* Abandon the attempt; report it from the timer. */
		c->pend = PEND_CLOSE;
		c->pend_err = 0;
		sess_halt(c->s);
		conn_kick(c->conn);
		return 0;
	case CLIENT_CONNECTED:
		break;
	default:
		return CLIENT_ESTATE;
	}
	r = sess_disconnect(c->s, reason, evloop_now(c->loop));
	if (r < 0)
		return r;
	conn_shutdown(c->conn, &c->user); /* once DISCONNECT is written */
	conn_kick(c->conn);               /* the linger deadline */
	return 0;
}

enum client_state client_state(const struct client *c)
{
	return sess_state(c->s);
}

const struct client_stats *client_stats(struct client *c)
{
	struct tr_conn *t = c->conn && c->own_conn ? conn_transport(c->conn)
	                                           : NULL;
	struct client_stats *st = sess_stats(c->s);

	st->wire_in = c->wire_in_done + (t ? t->wire_in : 0);
	st->wire_out = c->wire_out_done + (t ? t->wire_out : 0);
	return st;
}

unsigned client_inflight(const struct client *c)
{
	return sess_inflight(c->s);
}

unsigned client_window(const struct client *c)
{
	return sess_window(c->s);
}

struct conn *client_conn(const struct client *c)
{
	return c->conn;
}

struct tr_conn *client_transport(const struct client *c)
{
	return c->conn ? conn_transport(c->conn) : NULL;
}

struct tr_session *client_tr_session(const struct client *c)
{
	return c->trsess;
}

int client_early(const struct client *c)
{
	return c->early;
}

const char *client_last_error(const struct client *c)
{
	return c->errmsg ? c->errmsg : "";
}

size_t client_heap_bytes(const struct client *c)
{
	size_t n = SESS_OFFSET + sess_heap_bytes(c->s), sl;

	if (c->trsess) {
		tr_session_data(c->trsess, &sl);
		n += 32 + sl;
	}
	if (c->errmsg)
		n += strlen(c->errmsg) + 1;
	return n;
}
