/*
 * tcp.c: plain TCP. The handshake is the non-blocking connect; the one
 * stream is the connection. A server-side connection (from accept) is
 * ready at once.
 */
#include "net/transport.h"

#include <stdlib.h>
#include <sys/socket.h>

struct tcp_conn {
	struct tr_conn base;
	int err;            /* failure kept from open(), returned by
	                       handshake() */
	uint8_t connected;  /* connect() completed */
	uint8_t want_write; /* a send would-block: wait for EV_WRITE */
};

static int tcp_open(struct tr_ctx *ctx, struct tr_session *sess, int64_t now,
                    struct tr_conn **out)
{
	struct tcp_conn *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (!t)
		return TR_ENOMEM;
	tr_base_init(&t->base, &tr_tcp_ops, ctx, sess);
	t->err = tr_sock_connect(&t->base, now);
	*out = &t->base;
	return 0;
}

static int tcp_handshake(struct tr_conn *c, int64_t now)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	int r;

	if (t->err)
		return t->err;
	if (t->connected)
		return 0;
	r = tr_sock_connected(c, now);
	if (r == TR_AGAIN)
		return TR_AGAIN;
	if (r < 0)
		return t->err = r;
	t->connected = 1;
	c->t_ready = c->t_connected;
	return 0;
}

static ssize_t tcp_send(struct tr_conn *c, int64_t sid, const uint8_t *buf,
                        size_t len, int64_t now)
{
	struct tcp_conn *t = (struct tcp_conn *)c;
	ssize_t n;

	(void)now;
	if (!t->connected)
		return t->err ? t->err : TR_ESTATE;
	if (sid != TR_STREAM_MAIN)
		return TR_ESTATE;
	n = tr_sock_send(c, buf, len);
	t->want_write = n == TR_AGAIN;
	return n;
}

static ssize_t tcp_recv(struct tr_conn *c, int64_t *sid, uint8_t *buf,
                        size_t len, int64_t now)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	(void)now;
	*sid = TR_STREAM_MAIN;
	if (!t->connected)
		return t->err ? t->err : TR_ESTATE;
	return tr_sock_recv(c, buf, len);
}

static uint32_t tcp_events(const struct tr_conn *c)
{
	const struct tcp_conn *t = (const struct tcp_conn *)c;

	if (t->err)
		return 0;
	if (!t->connected)
		return EV_WRITE;
	return EV_READ | (t->want_write ? EV_WRITE : 0);
}

static int64_t tcp_expiry(const struct tr_conn *c)
{
	const struct tcp_conn *t = (const struct tcp_conn *)c;

	if (t->connected || t->err)
		return EV_NEVER;
	return c->t_start + c->ctx->cfg.connect_timeout_ns;
}

static int tcp_on_expiry(struct tr_conn *c, int64_t now)
{
	struct tcp_conn *t = (struct tcp_conn *)c;

	if (t->err)
		return t->err;
	if (t->connected || now < tcp_expiry(c))
		return 0;
	return t->err = tr_fail(c, TR_ETIMEOUT,
	                        "connect to %s: timed out after %.1f s",
	                        c->ctx->peer,
	                        (double)c->ctx->cfg.connect_timeout_ns / 1e9);
}

static int tcp_shutdown(struct tr_conn *c, int64_t sid, int64_t now)
{
	(void)now;
	if (sid != TR_STREAM_MAIN)
		return TR_ESTATE;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_WR);
	return 0;
}

static void tcp_free(struct tr_conn *c)
{
	tr_base_free(c);
	free(c);
}

static int tcp_listen(struct tr_ctx *ctx, struct tr_listener **out, char *err,
                      size_t errlen)
{
	return tr_listener_new(ctx, &tr_tcp_ops, sizeof(struct tr_listener),
	                       SOCK_STREAM, out, err, errlen);
}

static int tcp_accept(struct tr_listener *l, int64_t now,
                      struct tr_conn **out)
{
	int r = tr_sock_accept(l, &tr_tcp_ops, sizeof(struct tcp_conn), now,
	                       out);

	if (r == 0) {
		((struct tcp_conn *)*out)->connected = 1;
		(*out)->t_ready = now;
	}
	return r;
}

static void tcp_listener_free(struct tr_listener *l)
{
	tr_listener_base_free(l);
	free(l);
}

const struct transport_ops tr_tcp_ops = {
	.name = "tcp",
	.flags = TR_F_SERVER,
	.default_port = 1883,
	.open = tcp_open,
	.handshake = tcp_handshake,
	.send = tcp_send,
	.recv = tcp_recv,
	.events = tcp_events,
	.expiry = tcp_expiry,
	.on_expiry = tcp_on_expiry,
	.shutdown = tcp_shutdown,
	.stats = tr_tcp_stats,
	.free = tcp_free,
	.listen = tcp_listen,
	.accept = tcp_accept,
	.listener_free = tcp_listener_free,
};
