/*
 * test_conn.c: the connection (net/conn) on a transport with several
 * streams, early data and rebinding, and MQTT clients sharing it
 * (client_connect_on).
 *
 * The fake transport below ("fq", a fake QUIC) has the flags QUIC will
 * have: TR_F_STREAMS | TR_F_EARLY | TR_F_REBIND. Its connection is one end
 * of a SOCK_SEQPACKET socketpair, one datagram per frame:
 *   [type 1][flags 1][stream id 4][offset 4][data ...]
 * and the test plays the server on the other end (the peer, P below),
 * stream by stream, byte-exact. Like QUIC, the fake
 *  - copies stream bytes into a buffer of its own and owns them until they
 *    are acknowledged (here: once written after the handshake);
 *  - drains its socket into per-stream receive buffers, so bytes wait
 *    inside it while its fd is quiet; a frame flagged HOLD is even kept
 *    back until the fake's next timer (on_expiry), as a QUIC packet
 *    processed in a timer would be;
 *  - with a session ticket (and cfg.early_data), lets early data flow
 *    (handshake says TR_EARLY) until the peer's HANDSHAKE_DONE frame
 *    accepts or rejects it; on rejection it sends every byte it still owns
 *    again, from offset 0, as the peer drops the early frames: the peer
 *    sees each byte exactly once;
 *  - moves to a new socketpair on rebind, closing the old one;
 *  - counts its progress calls, and those that follow a timer.
 * The peer checks offsets: a frame that leaves a gap or repeats bytes is
 * counted in P.bad_offsets.
 */
#include "app/client.h"
#include "tt.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- frames ---- */

enum { FR_STREAM = 1, FR_FIN = 2, FR_HS_DONE = 3 };
#define FL_EARLY 0x01 /* client: sent as 0-RTT */
#define FL_HOLD 0x02  /* peer: the fake keeps it until its next timer */
#define FR_HDR 10
#define FR_MAX 4096 /* data bytes per frame */

static size_t frame_put(uint8_t *b, uint8_t type, uint8_t flags, int64_t sid,
                        uint64_t off, const uint8_t *data, size_t len)
{
	uint32_t s = (uint32_t)sid, o = (uint32_t)off;

	b[0] = type;
	b[1] = flags;
	b[2] = (uint8_t)(s >> 24);
	b[3] = (uint8_t)(s >> 16);
	b[4] = (uint8_t)(s >> 8);
	b[5] = (uint8_t)s;
	b[6] = (uint8_t)(o >> 24);
	b[7] = (uint8_t)(o >> 16);
	b[8] = (uint8_t)(o >> 8);
	b[9] = (uint8_t)o;
	if (len)
		memcpy(b + FR_HDR, data, len);
	return FR_HDR + len;
}

static uint32_t get32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | b[3];
}

/* ---- the peer (the test's side of the socketpair) ---- */

#define P_STREAMS 8
#define P_RX (1 << 17)

struct pstream {
	int used;
	int64_t sid;
	uint8_t rx[P_RX];  /* received in order, not yet taken by a check */
	size_t rx_len;
	uint64_t rx_off;   /* next offset expected */
	uint8_t early[256]; /* early data waiting for the handshake outcome */
	size_t early_len;
	int fin;
	uint64_t tx_off;
};

static struct {
	int fd;
	int decided, accepted; /* HANDSHAKE_DONE sent, and its outcome */
	int eof;               /* the client's end is closed */
	int bad_offsets;       /* a gap or repeated bytes in a stream */
	struct pstream s[P_STREAMS];
} P = { .fd = -1 };

static struct evloop *loop;
static struct tr_ctx *ctx;

static void peer_reset(int fd)
{
	if (P.fd >= 0)
		close(P.fd);
	memset(&P, 0, sizeof(P));
	P.fd = fd;
}

static struct pstream *pstream(int64_t sid)
{
	int i;

	for (i = 0; i < P_STREAMS; i++)
		if (P.s[i].used && P.s[i].sid == sid)
			return &P.s[i];
	for (i = 0; i < P_STREAMS; i++)
		if (!P.s[i].used) {
			P.s[i].used = 1;
			P.s[i].sid = sid;
			return &P.s[i];
		}
	TT_CHECK(!"peer: too many streams");
	return &P.s[0];
}

static void peer_data(struct pstream *ps, uint64_t off, const uint8_t *d,
                      size_t len)
{
	if (off != ps->rx_off || ps->rx_len + len > P_RX) {
		P.bad_offsets++;
		return;
	}
	memcpy(ps->rx + ps->rx_len, d, len);
	ps->rx_len += len;
	ps->rx_off += len;
}

static void peer_frame(const uint8_t *b, size_t n)
{
	struct pstream *ps;
	uint64_t off;

	TT_CHECK(n >= FR_HDR);
	if (n < FR_HDR)
		return;
	ps = pstream(get32(b + 2));
	off = get32(b + 6);
	if (b[0] == FR_FIN) {
		ps->fin = 1;
		return;
	}
	TT_CHECK(b[0] == FR_STREAM);
	if (!(b[1] & FL_EARLY) || (P.decided && P.accepted)) {
		peer_data(ps, off, b + FR_HDR, n - FR_HDR);
	} else if (!P.decided) {
		if (off != ps->early_len ||
		    ps->early_len + n - FR_HDR > sizeof(ps->early)) {
			P.bad_offsets++;
			return;
		}
		memcpy(ps->early + ps->early_len, b + FR_HDR, n - FR_HDR);
		ps->early_len += n - FR_HDR;
	} /* else: early data of a rejected handshake, dropped */
}

/* Take every frame waiting on the peer's end. */
static void peer_read(void)
{
	uint8_t b[FR_HDR + FR_MAX];

	for (;;) {
		ssize_t n = recv(P.fd, b, sizeof(b), MSG_DONTWAIT);

		if (n == 0)
			P.eof = 1;
		if (n <= 0)
			return;
		peer_frame(b, (size_t)n);
	}
}

static void peer_write(const uint8_t *b, size_t n)
{
	TT_CHECK(send(P.fd, b, n, MSG_NOSIGNAL) == (ssize_t)n);
}

static void peer_send_raw(int64_t sid, const uint8_t *d, size_t len,
                          uint8_t flags)
{
	uint8_t b[FR_HDR + 512];
	struct pstream *ps = pstream(sid);

	TT_CHECK(len <= 512);
	peer_write(b, frame_put(b, FR_STREAM, flags, sid, ps->tx_off, d, len));
	ps->tx_off += len;
}

/* The peer writes these bytes on stream sid; the loop does not run. */
static void peer_send(int64_t sid, const char *hex, uint8_t flags)
{
	uint8_t d[512];

	peer_send_raw(sid, d, tt_unhex(hex, d), flags);
}

static void peer_fin(int64_t sid)
{
	uint8_t b[FR_HDR];

	peer_write(b, frame_put(b, FR_FIN, 0, sid, pstream(sid)->tx_off, NULL,
	                        0));
}

/* HANDSHAKE_DONE, accepting or rejecting the early data seen so far. */
static void peer_handshake_done(int accept)
{
	uint8_t b[FR_HDR + 1], a = (uint8_t)accept;
	int i;

	peer_read();
	P.decided = 1;
	P.accepted = accept;
	for (i = 0; i < P_STREAMS; i++) {
		struct pstream *ps = &P.s[i];

		if (accept && ps->used)
			peer_data(ps, 0, ps->early, ps->early_len);
		ps->early_len = 0;
	}
	peer_write(b, frame_put(b, FR_HS_DONE, 0, 0, 0, &a, 1));
}

/* Run the loop until cond() or a second passes. */
static int run_until(int (*cond)(const void *), const void *arg)
{
	int64_t end = evloop_clock_ns() + EV_NS_PER_SEC;

	for (;;) {
		peer_read();
		if (cond(arg))
			return 1;
		if (evloop_clock_ns() >= end)
			return 0;
		evloop_run_once(loop, EV_NS_PER_MS);
	}
}

/* Run the loop for about ms milliseconds. */
static void pump(int ms)
{
	int64_t end = evloop_clock_ns() + ms * EV_NS_PER_MS;

	while (evloop_clock_ns() < end)
		evloop_run_once(loop, EV_NS_PER_MS);
	peer_read();
}

struct want {
	int64_t sid;
	const uint8_t *b;
	size_t n;
	int early;
};

static int have_bytes(const void *arg)
{
	const struct want *w = arg;
	const struct pstream *ps = pstream(w->sid);

	return (w->early ? ps->early_len : ps->rx_len) >= w->n;
}

static int show_mismatch(const char *what, const uint8_t *want, size_t n,
                         const uint8_t *got, size_t have)
{
	size_t i;

	fprintf(stderr, "%s: expected", what);
	for (i = 0; i < n; i++)
		fprintf(stderr, " %02x", want[i]);
	fprintf(stderr, "\n     got");
	for (i = 0; i < have && i < 64; i++)
		fprintf(stderr, " %02x", got[i]);
	fprintf(stderr, " (%zu bytes)\n", have);
	return 0;
}

/* The peer expects exactly these bytes next on stream sid, within a
 * second, and takes them. */
static int peer_expect_bytes(int64_t sid, const uint8_t *b, size_t n)
{
	struct want w = { sid, b, n, 0 };
	struct pstream *ps = pstream(sid);

	run_until(have_bytes, &w);
	if (ps->rx_len < n || memcmp(ps->rx, b, n) != 0)
		return show_mismatch("peer", b, n, ps->rx, ps->rx_len);
	ps->rx_len -= n;
	memmove(ps->rx, ps->rx + n, ps->rx_len);
	return 1;
}

static int peer_expect(int64_t sid, const char *hex)
{
	uint8_t b[512];

	return peer_expect_bytes(sid, b, tt_unhex(hex, b));
}

/* The early data of stream sid begins with these bytes (not taken). */
static int peer_expect_early(int64_t sid, const char *hex)
{
	uint8_t b[512];
	size_t n = tt_unhex(hex, b);
	struct want w = { sid, b, n, 1 };
	struct pstream *ps = pstream(sid);

	run_until(have_bytes, &w);
	if (ps->early_len < n || memcmp(ps->early, b, n) != 0)
		return show_mismatch("peer (early)", b, n, ps->early,
		                     ps->early_len);
	return 1;
}

struct want_start {
	const uint8_t *b;
	size_t n;
	int64_t sid;
};

static int stream_starts(const void *arg)
{
	struct want_start *w = (struct want_start *)arg;
	int i;

	for (i = 0; i < P_STREAMS; i++) {
		const struct pstream *ps = &P.s[i];
		const uint8_t *d = ps->early_len ? ps->early : ps->rx;
		size_t have = ps->early_len ? ps->early_len : ps->rx_len;

		if (ps->used && have >= w->n && memcmp(d, w->b, w->n) == 0) {
			w->sid = ps->sid;
			return 1;
		}
	}
	return 0;
}

/* The stream whose data (early or not) begins with these bytes, waiting
 * up to a second for it; -1 if none. */
static int64_t peer_stream_of(const char *hex)
{
	uint8_t b[512];
	struct want_start w = { b, tt_unhex(hex, b), -1 };

	run_until(stream_starts, &w);
	return w.sid;
}

/* Nothing more on stream sid for a few milliseconds. */
static int peer_silent(int64_t sid)
{
	pump(5);
	return pstream(sid)->rx_len == 0;
}

static int fin_seen(const void *arg)
{
	return pstream(*(const int64_t *)arg)->fin;
}

/* ---- the fake transport ---- */

/* Knobs, set by a test before the connection opens. */
static struct {
	int hs_wait;        /* the handshake waits for HANDSHAKE_DONE */
	size_t early_limit; /* early data accepted per connection; 0: any */
	size_t recv_max;    /* bytes per recv call; 0: any */
	int sndbuf;         /* SO_SNDBUF of the fake's socket; 0: default */
	int64_t tick_ns;    /* a timer of the transport's own, e.g. ACKs */
	int fail_open;      /* the first handshake fails */
	int rebind_fail;    /* rebind fails */
} K;

/* What the fake saw, for checks. */
static struct {
	int opens, rebinds, send_calls, recv_calls;
	int progress_calls, progress_after_tick, ticks;
	int released, released_quiet; /* HOLD frames let go */
} G;

enum { FQ_HS_WAIT, FQ_HS_EARLY, FQ_HS_DONE };
#define FQ_STREAMS 8
#define FQ_HELD 4

struct fq_stream {
	int64_t sid;
	uint8_t *tx;       /* owned: offsets [tx_base, tx_base + tx_len) */
	size_t tx_len, tx_cap;
	uint64_t tx_base;
	uint64_t tx_sent;  /* frames written up to this offset */
	int fin_asked, fin_sent;
	uint8_t *rx;       /* received, not yet handed over */
	size_t rx_len, rx_cap;
	int rx_fin, eof_told;
};

struct fq_conn {
	struct tr_conn base;
	int err;
	int hs;
	int early;         /* early data was allowed */
	int hs_done_rcvd, accept;
	size_t early_used;
	struct fq_stream st[FQ_STREAMS];
	int n_st;
	int64_t next_sid;
	uint8_t held[FQ_HELD][FR_HDR + 512];
	size_t held_len[FQ_HELD];
	int n_held;
	int64_t hold_at;
	int peer_gone;
	int want_write;
	int64_t next_tick;
	int tick_fired;
};

static struct fq_conn *g_fq; /* the connection open now */

static struct fq_stream *fq_stream(struct fq_conn *f, int64_t sid)
{
	int i;

	for (i = 0; i < f->n_st; i++)
		if (f->st[i].sid == sid)
			return &f->st[i];
	return NULL;
}

static int fq_gone(struct fq_conn *f)
{
	if (!f->err)
		f->err = tr_fail(&f->base, TR_EQUIC,
		                 "QUIC connection to %s: closed by the peer",
		                 f->base.ctx->peer);
	return f->err;
}

static void append(uint8_t **buf, size_t *len, size_t *cap,
                   const uint8_t *d, size_t n)
{
	if (n == 0)
		return;
	if (*len + n > *cap) {
		size_t c = *cap ? *cap : 256;
		uint8_t *b;

		while (c < *len + n)
			c *= 2;
		b = realloc(*buf, c);
		if (!b)
			abort();
		*buf = b;
		*cap = c;
	}
	memcpy(*buf + *len, d, n);
	*len += n;
}

/* One frame from the peer. */
static void fq_frame(struct fq_conn *f, const uint8_t *b, size_t n,
                     int64_t now)
{
	struct fq_stream *s;

	if (b[0] == FR_HS_DONE) {
		f->hs_done_rcvd = 1;
		f->accept = n > FR_HDR && b[FR_HDR];
		return;
	}
	if (b[0] == FR_STREAM && (b[1] & FL_HOLD) && f->n_held < FQ_HELD &&
	    n <= sizeof(f->held[0])) {
		memcpy(f->held[f->n_held], b, n);
		f->held[f->n_held][1] &= (uint8_t)~FL_HOLD;
		f->held_len[f->n_held++] = n;
		if (!f->hold_at)
			f->hold_at = now + EV_NS_PER_MS;
		return;
	}
	s = fq_stream(f, get32(b + 2));
	TT_CHECK(s != NULL);
	if (!s)
		return;
	if (b[0] == FR_FIN)
		s->rx_fin = 1;
	else
		append(&s->rx, &s->rx_len, &s->rx_cap, b + FR_HDR,
		       n - FR_HDR);
}

/* Take every datagram waiting on the socket into the stream buffers. */
static void fq_drain(struct fq_conn *f, int64_t now)
{
	uint8_t b[FR_HDR + FR_MAX];

	for (;;) {
		ssize_t n = recv(f->base.fd, b, sizeof(b), MSG_DONTWAIT);

		if (n > 0) {
			f->base.wire_in += (uint64_t)n;
			TT_CHECK(n >= FR_HDR);
			if (n >= FR_HDR)
				fq_frame(f, b, (size_t)n, now);
			continue;
		}
		if (n == 0 || errno != EAGAIN)
			f->peer_gone = 1;
		return;
	}
}

/* Write one frame: 0, TR_AGAIN (socket full), or the connection's end. */
static int fq_write(struct fq_conn *f, uint8_t type, int64_t sid,
                    uint64_t off, const uint8_t *d, size_t len)
{
	uint8_t b[FR_HDR + FR_MAX];
	size_t n = frame_put(b, type, f->hs == FQ_HS_EARLY ? FL_EARLY : 0, sid,
	                     off, d, len);
	ssize_t w = send(f->base.fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (w == (ssize_t)n) {
		f->base.wire_out += n;
		return 0;
	}
	if (w < 0 && errno == EAGAIN)
		return TR_AGAIN;
	f->peer_gone = 1;
	return fq_gone(f);
}

/* Bytes below off are acknowledged: the fake lets them go. */
static void fq_ack(struct fq_stream *s, uint64_t off)
{
	size_t k = (size_t)(off - s->tx_base);

	if (k == 0)
		return;
	memmove(s->tx, s->tx + k, s->tx_len - k);
	s->tx_len -= k;
	s->tx_base = off;
}

/* Write what every stream has not written yet; after the handshake what
 * is written counts as acknowledged. 0 or the connection's end. */
static int fq_flush(struct fq_conn *f)
{
	int i, r;

	f->want_write = 0;
	for (i = 0; i < f->n_st; i++) {
		struct fq_stream *s = &f->st[i];
		uint64_t end = s->tx_base + s->tx_len;

		while (s->tx_sent < end) {
			size_t len = end - s->tx_sent > FR_MAX
			                     ? FR_MAX
			                     : (size_t)(end - s->tx_sent);

			r = fq_write(f, FR_STREAM, s->sid, s->tx_sent,
			             s->tx + (s->tx_sent - s->tx_base), len);
			if (r == TR_AGAIN) {
				f->want_write = 1;
				return 0;
			}
			if (r < 0)
				return r;
			s->tx_sent += len;
		}
		if (f->hs == FQ_HS_DONE)
			fq_ack(s, s->tx_sent);
		if (s->fin_asked && !s->fin_sent) {
			r = fq_write(f, FR_FIN, s->sid, s->tx_sent, NULL, 0);
			if (r == TR_AGAIN) {
				f->want_write = 1;
				return 0;
			}
			if (r < 0)
				return r;
			s->fin_sent = 1;
		}
	}
	return 0;
}

static int fq_open(struct tr_ctx *c, struct tr_session *sess, int64_t now,
                   struct tr_conn **out)
{
	struct fq_conn *f = calloc(1, sizeof(*f));
	int sv[2];

	if (!f)
		return TR_ENOMEM;
	G.opens++;
	tr_base_init(&f->base, c->ops, c, sess);
	f->base.t_start = now;
	f->next_tick = now + K.tick_ns;
	*out = &f->base;
	g_fq = f;
	if (K.fail_open) {
		f->err = tr_fail(&f->base, TR_ECONNECT,
		                 "QUIC connection to %s: no answer", c->peer);
		return 0;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
	               0, sv) < 0)
		abort();
	if (K.sndbuf)
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &K.sndbuf,
		           sizeof(K.sndbuf));
	f->base.fd = sv[0];
	peer_reset(sv[1]);
	return 0;
}

/* The handshake is over: settle early data, store a ticket. */
static void fq_complete(struct fq_conn *f, int64_t now)
{
	struct tr_conn *c = &f->base;
	int i;

	f->hs = FQ_HS_DONE;
	c->t_ready = now;
	if (!c->t_connected)
		c->t_connected = now;
	c->notes |= TR_NOTE_READY;
	if (f->early) {
		c->notes |= f->accept ? TR_NOTE_EARLY_ACCEPTED
		                      : TR_NOTE_EARLY_REJECTED;
		for (i = 0; i < f->n_st; i++) {
			struct fq_stream *s = &f->st[i];

			if (f->accept) {
				fq_ack(s, s->tx_sent);
				continue;
			}
			/* nothing was acknowledged as early data: send
			 * everything again, from the start */
			TT_CHECK(s->tx_base == 0);
			s->tx_sent = s->tx_base;
			s->fin_sent = 0;
		}
	}
	if (c->sess)
		tr_session_store(c->sess, "ticket", 6);
	fq_flush(f);
}

static int fq_handshake(struct tr_conn *c, int64_t now)
{
	struct fq_conn *f = (struct fq_conn *)c;
	size_t tlen = 0;

	if (f->err)
		return f->err;
	if (f->hs == FQ_HS_DONE)
		return 0;
	fq_drain(f, now);
	if (f->peer_gone)
		return fq_gone(f);
	if (!K.hs_wait || f->hs_done_rcvd) {
		fq_complete(f, now);
		return f->err;
	}
	if (f->hs == FQ_HS_EARLY)
		return TR_EARLY;
	if (c->ctx->cfg.early_data && tr_session_data(c->sess, &tlen) && tlen) {
		f->hs = FQ_HS_EARLY;
		f->early = 1;
		c->t_connected = now;
		return TR_EARLY;
	}
	return TR_AGAIN;
}

static int fq_stream_open(struct tr_conn *c, int64_t *sid)
{
	struct fq_conn *f = (struct fq_conn *)c;
	struct fq_stream *s;

	if (f->hs == FQ_HS_WAIT || f->n_st == FQ_STREAMS)
		return tr_fail(c, TR_ESTATE, "no stream can be opened now");
	s = &f->st[f->n_st++];
	memset(s, 0, sizeof(*s));
	s->sid = *sid = f->next_sid;
	f->next_sid += 4; /* client-initiated bidirectional, as in QUIC */
	return 0;
}

static ssize_t fq_send(struct tr_conn *c, int64_t sid, const uint8_t *buf,
                       size_t len, int64_t now)
{
	struct fq_conn *f = (struct fq_conn *)c;
	struct fq_stream *s = fq_stream(f, sid);
	size_t n = len;
	int r;

	(void)now;
	G.send_calls++;
	TT_CHECK(len > 0);
	if (f->err)
		return f->err;
	if (!s || f->hs == FQ_HS_WAIT || s->fin_asked)
		return tr_fail(c, TR_ESTATE, "send on stream %lld: not now",
		               (long long)sid);
	if (f->hs == FQ_HS_EARLY && K.early_limit &&
	    n > K.early_limit - f->early_used)
		n = K.early_limit - f->early_used;
	if (n == 0)
		return TR_AGAIN;
	append(&s->tx, &s->tx_len, &s->tx_cap, buf, n);
	if (f->hs == FQ_HS_EARLY)
		f->early_used += n;
	r = fq_flush(f);
	return r < 0 ? r : (ssize_t)n;
}

static ssize_t fq_recv(struct tr_conn *c, int64_t *sid, uint8_t *buf,
                       size_t len, int64_t now)
{
	struct fq_conn *f = (struct fq_conn *)c;
	int i;

	G.recv_calls++;
	*sid = -1;
	if (f->err)
		return f->err;
	fq_drain(f, now);
	if (K.recv_max && len > K.recv_max)
		len = K.recv_max;
	/* stream by stream, lowest id first */
	for (i = 0; i < f->n_st; i++) {
		struct fq_stream *s = &f->st[i];
		size_t n = s->rx_len < len ? s->rx_len : len;

		*sid = s->sid;
		if (n) {
			memcpy(buf, s->rx, n);
			memmove(s->rx, s->rx + n, s->rx_len - n);
			s->rx_len -= n;
			return (ssize_t)n;
		}
		if (s->rx_fin && !s->eof_told) {
			s->eof_told = 1; /* each stream's end is told once */
			return TR_EOF;
		}
	}
	*sid = -1;
	return f->peer_gone ? fq_gone(f) : TR_AGAIN;
}

static int fq_progress(struct tr_conn *c, int64_t now)
{
	struct fq_conn *f = (struct fq_conn *)c;

	(void)now;
	G.progress_calls++;
	if (f->tick_fired) {
		G.progress_after_tick++;
		f->tick_fired = 0;
	}
	if (f->err)
		return f->err;
	return f->hs == FQ_HS_WAIT ? 0 : fq_flush(f);
}

static uint32_t fq_events(const struct tr_conn *c)
{
	const struct fq_conn *f = (const struct fq_conn *)c;

	if (f->err)
		return 0;
	return EV_READ | (f->want_write ? EV_WRITE : 0);
}

static int64_t fq_expiry(const struct tr_conn *c)
{
	const struct fq_conn *f = (const struct fq_conn *)c;
	int64_t t = EV_NEVER;

	if (f->n_held)
		t = f->hold_at;
	if (K.tick_ns && f->next_tick < t)
		t = f->next_tick;
	return t;
}

static int fq_on_expiry(struct tr_conn *c, int64_t now)
{
	struct fq_conn *f = (struct fq_conn *)c;
	int i;

	if (f->n_held && now >= f->hold_at) {
		uint8_t x;

		/* the fd has nothing to say about these bytes */
		if (recv(c->fd, &x, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
		    errno == EAGAIN)
			G.released_quiet++;
		G.released++;
		for (i = 0; i < f->n_held; i++)
			fq_frame(f, f->held[i], f->held_len[i], now);
		f->n_held = 0;
		f->hold_at = 0;
	}
	if (K.tick_ns && now >= f->next_tick) {
		G.ticks++;
		f->tick_fired = 1;
		f->next_tick = now + K.tick_ns;
	}
	return 0;
}

static int fq_shutdown(struct tr_conn *c, int64_t sid, int64_t now)
{
	struct fq_conn *f = (struct fq_conn *)c;
	struct fq_stream *s = fq_stream(f, sid);

	(void)now;
	if (!s)
		return TR_ESTATE;
	s->fin_asked = 1;
	return fq_flush(f);
}

static int fq_rebind(struct tr_conn *c, const struct sockaddr *local,
                     socklen_t len, int64_t now)
{
	struct fq_conn *f = (struct fq_conn *)c;
	int sv[2];

	(void)len;
	(void)now;
	G.rebinds++;
	if (K.rebind_fail)
		return tr_fail(c, TR_EIO, "rebind: injected failure");
	if (local)
		TT_CHECK(local->sa_family == AF_INET);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
	               0, sv) < 0)
		abort();
	/* what is in flight on the old path still arrives */
	peer_read();
	close(c->fd);
	close(P.fd);
	c->fd = sv[0];
	P.fd = sv[1];
	c->notes |= TR_NOTE_PATH_VALIDATED;
	return fq_flush(f);
}

static void fq_stats(const struct tr_conn *c, struct tr_stats *out)
{
	const struct fq_conn *f = (const struct fq_conn *)c;
	int i;

	out->buffered = 0;
	for (i = 0; i < f->n_st; i++)
		out->buffered += (int64_t)f->st[i].tx_len;
}

static void fq_free(struct tr_conn *c)
{
	struct fq_conn *f = (struct fq_conn *)c;
	int i;

	for (i = 0; i < f->n_st; i++) {
		free(f->st[i].tx);
		free(f->st[i].rx);
	}
	if (g_fq == f)
		g_fq = NULL;
	tr_base_free(c);
	free(f);
}

static const struct transport_ops fq_ops = {
	.name = "fakequic",
	.flags = TR_F_STREAMS | TR_F_EARLY | TR_F_REBIND,
	.default_port = 14567,
	.open = fq_open,
	.handshake = fq_handshake,
	.stream_open = fq_stream_open,
	.send = fq_send,
	.recv = fq_recv,
	.progress = fq_progress,
	.events = fq_events,
	.expiry = fq_expiry,
	.on_expiry = fq_on_expiry,
	.shutdown = fq_shutdown,
	.rebind = fq_rebind,
	.stats = fq_stats,
	.free = fq_free,
};

/* ---- clients ---- */

struct rec {
	int connected, closed, messages, done;
	int close_err;
	char close_msg[300];
	char last_payload[64];
	int info_early;
	int64_t t_connect_queued, t_ready;
	struct client **free_on_message; /* client_free(*p) from on_message */
	struct client **free_on_closed;  /* ... and from on_closed */
	int rebind_on_message;           /* conn_rebind from on_message */
};

static void on_connected(struct client *c,
                         const struct client_connected_info *i)
{
	struct rec *r = client_user(c);

	r->connected++;
	r->info_early = i->early;
	r->t_connect_queued = i->mqtt->t_connect_queued;
	r->t_ready = i->t_transport_ready;
}

static void free_other(struct client **p)
{
	if (p && *p) {
		client_free(*p);
		*p = NULL;
	}
}

static void on_message(struct client *c, const struct mqtt_publish *m,
                       int64_t now)
{
	struct rec *r = client_user(c);

	(void)now;
	r->messages++;
	snprintf(r->last_payload, sizeof(r->last_payload), "%.*s",
	         (int)m->payload.len, (const char *)m->payload.data);
	free_other(r->free_on_message);
	if (r->rebind_on_message) {
		r->rebind_on_message = 0;
		TT_CHECK(conn_rebind(client_conn(c), NULL) == 0);
	}
}

static void on_publish_done(struct client *c, uint16_t id, uint8_t qos,
                            uint8_t reason, int64_t t_sent, int64_t now)
{
	struct rec *r = client_user(c);

	(void)id;
	(void)qos;
	(void)t_sent;
	(void)now;
	TT_CHECK(reason == 0);
	r->done++;
}

static void on_closed(struct client *c, int err, const char *msg)
{
	struct rec *r = client_user(c);

	r->closed++;
	r->close_err = err;
	snprintf(r->close_msg, sizeof(r->close_msg), "%s", msg);
	free_other(r->free_on_closed);
}

static const struct client_callbacks cbs = {
	.on_connected = on_connected,
	.on_message = on_message,
	.on_publish_done = on_publish_done,
	.on_closed = on_closed,
};

static struct client *new_client(struct rec *r, const char *id)
{
	struct client_config cc;

	client_config_init(&cc);
	cc.client_id = id;
	memset(r, 0, sizeof(*r));
	return client_new(loop, ctx, &cc, &cbs, r);
}

static int at_least(const void *arg)
{
	const int *const *p = arg;

	return *p[0] >= *p[1];
}

/* Run the loop until *v >= want, up to a second. */
static int wait_for(const int *v, int want)
{
	const int *p[2] = { v, &want };

	return run_until(at_least, p);
}

static void setup(void)
{
	struct tr_config tc;
	char err[200];

	memset(&K, 0, sizeof(K));
	memset(&G, 0, sizeof(G));
	loop = evloop_new();
	tr_config_init(&tc);
	tc.host = "127.0.0.1";
	tc.port = 14567;
	tc.early_data = 1;
	if (tr_ctx_new(&ctx, &fq_ops, &tc, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
}

static void teardown(void)
{
	peer_reset(-1);
	tr_ctx_del(ctx);
	TT_CHECK(g_fq == NULL);
	TT_CHECK(evloop_io_count(loop) == 0);
	evloop_del(loop);
}

/* 3.1.1, clean, keepalive 60, client ids "a" and "b" */
#define CONNECT_A "10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 61"
#define CONNECT_B "10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 62"
#define CONNACK_OK "20 02 00 00"

static int publish1(struct client *c, const char *payload)
{
	return client_publish(c, (const uint8_t *)"t", 1,
	                      (const uint8_t *)payload, strlen(payload), 1, 0,
	                      NULL);
}

/* Clients "a" (c[0]) and "b" (c[1]) on one connection, both connected;
 * lo and hi index the lower and the higher stream id (the fake hands
 * the lower one's bytes and end over first). */
struct pair {
	struct conn *conn;
	struct client *c[2];
	struct rec r[2];
	int64_t sid[2];
	int lo, hi;
};

static void two_connected(struct pair *p)
{
	static const char *const connects[2] = { CONNECT_A, CONNECT_B };
	int i;

	p->conn = conn_new(loop, ctx, NULL);
	p->c[0] = new_client(&p->r[0], "a");
	p->c[1] = new_client(&p->r[1], "b");
	for (i = 0; i < 2; i++)
		TT_CHECK(client_connect_on(p->c[i], p->conn) == 0);
	TT_CHECK(conn_users(p->conn) == 2);
	TT_CHECK(conn_open(p->conn) == 0);
	for (i = 0; i < 2; i++) {
		p->sid[i] = peer_stream_of(connects[i]);
		TT_CHECK(p->sid[i] >= 0);
		TT_CHECK(peer_expect(p->sid[i], connects[i]));
		peer_send(p->sid[i], CONNACK_OK, 0);
	}
	TT_CHECK(p->sid[0] != p->sid[1]);
	TT_CHECK(wait_for(&p->r[0].connected, 1) &&
	         wait_for(&p->r[1].connected, 1));
	p->lo = p->sid[0] < p->sid[1] ? 0 : 1;
	p->hi = 1 - p->lo;
}

/* ---- tests ---- */

/*
 * Bytes the transport holds while its fd stays quiet reach the session:
 * a CONNACK let go in the transport's timer (on_expiry), and packets of
 * one read handed over a few bytes per recv call.
 */
static void test_held_bytes_delivered(void)
{
	struct rec r;
	struct client *c;
	int64_t sid;

	setup();
	c = new_client(&r, "a");
	TT_CHECK(client_connect(c) == 0);
	sid = peer_stream_of(CONNECT_A);
	TT_CHECK(sid == 0);
	TT_CHECK(peer_expect(sid, CONNECT_A));
	peer_send(sid, CONNACK_OK, FL_HOLD);
	TT_CHECK(wait_for(&r.connected, 1));
	TT_CHECK(G.released == 1 && G.released_quiet == 1);
	/* the same for a message, and for its ack */
	peer_send(sid, "32 06 00 01 74 00 05 6d", FL_HOLD);
	TT_CHECK(wait_for(&r.messages, 1));
	TT_CHECK(strcmp(r.last_payload, "m") == 0);
	TT_CHECK(peer_expect(sid, "40 02 00 05"));
	TT_CHECK(publish1(c, "x") == 1);
	TT_CHECK(peer_expect(sid, "32 06 00 01 74 00 01 78"));
	peer_send(sid, "40 02 00 01", FL_HOLD);
	TT_CHECK(wait_for(&r.done, 1));
	TT_CHECK(G.released == 3 && G.released_quiet == 3);
	/* three packets drained from the socket at once, then handed over
	 * 3 bytes per call: the conn reads until the transport would block */
	K.recv_max = 3;
	peer_send(sid, "30 04 00 01 74 31", 0);
	peer_send(sid, "30 04 00 01 74 32", 0);
	peer_send(sid, "30 04 00 01 74 33", 0);
	TT_CHECK(wait_for(&r.messages, 4));
	TT_CHECK(strcmp(r.last_payload, "3") == 0);
	TT_CHECK(r.closed == 0);
	client_free(c);
	teardown();
}

/*
 * Two MQTT clients on one connection: a stream each, flows independent,
 * one leaves (DISCONNECT, FIN both ways) and comes back on a new stream
 * while the other goes on, and the connection's failure reaches both.
 */
static void test_two_clients_one_conn(void)
{
	struct pair p;
	struct client *a, *b;
	struct rec *ra = &p.r[0], *rb = &p.r[1];
	struct conn *conn;
	int64_t sa, sb, sc;

	setup();
	two_connected(&p);
	a = p.c[0];
	b = p.c[1];
	sa = p.sid[0];
	sb = p.sid[1];
	conn = p.conn;
	TT_CHECK(evloop_io_count(loop) == 1);
	/* publishes, each on its own stream, with its own packet ids */
	TT_CHECK(publish1(a, "x") == 1);
	TT_CHECK(publish1(b, "y") == 1);
	TT_CHECK(peer_expect(sa, "32 06 00 01 74 00 01 78"));
	TT_CHECK(peer_expect(sb, "32 06 00 01 74 00 01 79"));
	peer_send(sb, "40 02 00 01", 0);
	TT_CHECK(wait_for(&rb->done, 1));
	TT_CHECK(ra->done == 0 && client_inflight(a) == 1);
	peer_send(sa, "40 02 00 01", 0);
	TT_CHECK(wait_for(&ra->done, 1));
	/* a message to a reaches a only */
	peer_send(sa, "32 06 00 01 74 00 05 6d", 0);
	TT_CHECK(peer_expect(sa, "40 02 00 05"));
	TT_CHECK(ra->messages == 1 && rb->messages == 0);
	TT_CHECK(peer_silent(sb));

	/* a leaves: DISCONNECT and FIN on its stream only */
	TT_CHECK(client_disconnect(a, 0) == 0);
	TT_CHECK(peer_expect(sa, "e0 00"));
	TT_CHECK(run_until(fin_seen, &sa));
	TT_CHECK(!pstream(sb)->fin);
	TT_CHECK(ra->closed == 0);
	peer_fin(sa);
	TT_CHECK(wait_for(&ra->closed, 1));
	TT_CHECK(ra->close_err == 0);
	TT_CHECK(client_state(a) == CLIENT_CLOSED);
	TT_CHECK(conn_users(conn) == 1 && conn_state(conn) == CONN_READY);
	/* b goes on */
	TT_CHECK(publish1(b, "z") == 2);
	TT_CHECK(peer_expect(sb, "32 06 00 01 74 00 02 7a"));
	peer_send(sb, "40 02 00 02", 0);
	TT_CHECK(wait_for(&rb->done, 2));
	/* a comes back on the open connection: a new stream */
	TT_CHECK(client_connect_on(a, conn) == 0);
	sc = peer_stream_of(CONNECT_A);
	TT_CHECK(sc >= 0 && sc != sa && sc != sb);
	TT_CHECK(peer_expect(sc, CONNECT_A));
	peer_send(sc, CONNACK_OK, 0);
	TT_CHECK(wait_for(&ra->connected, 2));

	/* the connection fails, found by a publish (the send fails): both
	 * hear it from the loop, with the transport's line */
	peer_reset(-1);
	TT_CHECK(publish1(b, "w") == 3);
	TT_CHECK(ra->closed == 1 && rb->closed == 0);
	TT_CHECK(wait_for(&ra->closed, 2) && wait_for(&rb->closed, 1));
	TT_CHECK(ra->close_err == CLIENT_EQUIC && rb->close_err == CLIENT_EQUIC);
	TT_CHECK(strcmp(rb->close_msg, "QUIC connection to 127.0.0.1:14567: "
	                              "closed by the peer") == 0);
	TT_CHECK(conn_state(conn) == CONN_FAILED && conn_users(conn) == 0);
	TT_CHECK(client_connect_on(a, conn) == CLIENT_ESTATE);
	TT_CHECK(P.bad_offsets == 0);
	client_free(a);
	client_free(b);
	conn_free(conn);
	teardown();
}

/* A connection that cannot be opened: both clients hear it from the
 * loop, never from inside conn_open. */
static void test_shared_conn_open_fails(void)
{
	struct rec ra, rb, rc;
	struct client *a, *b, *c;
	struct conn *conn;

	setup();
	K.fail_open = 1;
	conn = conn_new(loop, ctx, NULL);
	a = new_client(&ra, "a");
	b = new_client(&rb, "b");
	TT_CHECK(client_connect_on(a, conn) == 0);
	TT_CHECK(client_connect_on(b, conn) == 0);
	TT_CHECK(conn_open(conn) == 0);
	TT_CHECK(conn_open(conn) == TR_ESTATE);
	/* a failed connection takes no one */
	c = new_client(&rc, "c");
	TT_CHECK(client_connect_on(c, conn) == CLIENT_ESTATE);
	TT_CHECK(ra.closed == 0 && rb.closed == 0);
	TT_CHECK(wait_for(&ra.closed, 1) && wait_for(&rb.closed, 1));
	TT_CHECK(ra.close_err == CLIENT_ECONNECT &&
	         rb.close_err == CLIENT_ECONNECT);
	TT_CHECK(strcmp(ra.close_msg, "QUIC connection to 127.0.0.1:14567: "
	                              "no answer") == 0);
	TT_CHECK(strcmp(conn_errmsg(conn), ra.close_msg) == 0);
	TT_CHECK(rc.closed == 0 && client_state(c) == CLIENT_IDLE);
	client_free(a);
	client_free(b);
	client_free(c);
	conn_free(conn);
	teardown();
}

/*
 * Early data accepted: on a connection resuming with a ticket, CONNECT is
 * written before the handshake completes, and the outcome is recorded.
 */
static void test_early_accepted(void)
{
	struct rec r;
	struct client *c;
	struct tr_info ti;
	int64_t sid;

	setup();
	K.hs_wait = 1;
	c = new_client(&r, "a");
	/* first connection: no ticket, so nothing before the handshake */
	TT_CHECK(client_connect(c) == 0);
	pump(5);
	TT_CHECK(client_state(c) == CLIENT_CONNECTING);
	TT_CHECK(pstream(0)->rx_len == 0 && pstream(0)->early_len == 0);
	peer_handshake_done(1);
	TT_CHECK(peer_expect(0, CONNECT_A));
	peer_send(0, CONNACK_OK, 0);
	TT_CHECK(wait_for(&r.connected, 1));
	TT_CHECK(r.info_early == 0 && client_early(c) == 0);
	TT_CHECK(client_disconnect(c, 0) == 0);
	TT_CHECK(peer_expect(0, "e0 00"));
	peer_fin(0);
	TT_CHECK(wait_for(&r.closed, 1) && r.close_err == 0);

	/* again, with the ticket the first handshake left */
	TT_CHECK(client_connect(c) == 0);
	sid = peer_stream_of(CONNECT_A);
	TT_CHECK(sid == 0);
	TT_CHECK(peer_expect_early(sid, CONNECT_A));
	TT_CHECK(client_state(c) == CLIENT_CONNECT_SENT);
	tr_get_info(client_transport(c), &ti);
	TT_CHECK(ti.t_ready == 0); /* the handshake is still going on */
	TT_CHECK(conn_state(client_conn(c)) == CONN_EARLY);
	TT_CHECK(client_early(c) == 0); /* no outcome yet */
	peer_handshake_done(1);
	TT_CHECK(peer_expect(sid, CONNECT_A)); /* the early bytes, kept */
	peer_send(sid, CONNACK_OK, 0);
	TT_CHECK(wait_for(&r.connected, 2));
	TT_CHECK(r.info_early == 1);
	TT_CHECK(r.t_connect_queued > 0 && r.t_connect_queued < r.t_ready);
	TT_CHECK(client_early(c) == 1);
	TT_CHECK(conn_notes(client_conn(c)) & TR_NOTE_EARLY_ACCEPTED);
	/* the stream goes on where the early data ended */
	TT_CHECK(publish1(c, "x") == 1);
	TT_CHECK(peer_expect(sid, "32 06 00 01 74 00 01 78"));
	peer_send(sid, "40 02 00 01", 0);
	TT_CHECK(wait_for(&r.done, 1));
	TT_CHECK(client_stats(c)->out_by_type[MQTT_CONNECT] == 2);
	TT_CHECK(P.bad_offsets == 0);
	client_free(c);
	teardown();
}

static int early_bytes(const void *arg)
{
	int i;
	size_t n = 0;

	(void)arg;
	for (i = 0; i < P_STREAMS; i++)
		n += P.s[i].early_len;
	return n >= 20;
}

/*
 * Early data rejected, with two clients whose CONNECTs only partly fit
 * in the early data allowed: the transport sends what it owns again from
 * offset 0 and the rest follows, so the server reads each CONNECT exactly
 * once; the sessions queued each once; nothing is lost.
 */
static void test_early_rejected(void)
{
	struct rec ra, rb;
	struct client *a, *b;
	struct tr_session *sess = tr_session_new();
	struct tr_stats ts;
	struct conn *conn;
	int64_t sa, sb;
	int i;

	setup();
	K.hs_wait = 1;
	K.early_limit = 20; /* one CONNECT and 5 bytes of the other */
	TT_CHECK(tr_session_store(sess, "ticket", 6) == 0);
	conn = conn_new(loop, ctx, sess);
	a = new_client(&ra, "a");
	b = new_client(&rb, "b");
	TT_CHECK(client_connect_on(a, conn) == 0);
	TT_CHECK(client_connect_on(b, conn) == 0);
	TT_CHECK(conn_open(conn) == 0);
	TT_CHECK(run_until(early_bytes, NULL));
	TT_CHECK(conn_state(conn) == CONN_EARLY);
	tr_get_stats(conn_transport(conn), &ts);
	TT_CHECK(ts.buffered == 20); /* owned until the handshake says */
	peer_handshake_done(0);
	sa = peer_stream_of(CONNECT_A);
	sb = peer_stream_of(CONNECT_B);
	TT_CHECK(sa >= 0 && sb >= 0 && sa != sb);
	TT_CHECK(peer_expect(sa, CONNECT_A));
	TT_CHECK(peer_expect(sb, CONNECT_B));
	TT_CHECK(peer_silent(sa) && peer_silent(sb));
	TT_CHECK(P.bad_offsets == 0);
	TT_CHECK(client_early(a) == -1 && client_early(b) == -1);
	TT_CHECK(conn_notes(conn) & TR_NOTE_EARLY_REJECTED);
	peer_send(sa, CONNACK_OK, 0);
	peer_send(sb, CONNACK_OK, 0);
	TT_CHECK(wait_for(&ra.connected, 1) && wait_for(&rb.connected, 1));
	TT_CHECK(ra.info_early == 1 && rb.info_early == 1);
	for (i = 0; i < 2; i++) {
		const struct client_stats *st = client_stats(i ? b : a);

		TT_CHECK(st->out_by_type[MQTT_CONNECT] == 1);
		TT_CHECK(st->pkts_out == 1 && st->bytes_out == 15);
	}
	/* nothing lost: both go on */
	TT_CHECK(publish1(a, "x") == 1 && publish1(b, "y") == 1);
	TT_CHECK(peer_expect(sa, "32 06 00 01 74 00 01 78"));
	TT_CHECK(peer_expect(sb, "32 06 00 01 74 00 01 79"));
	peer_send(sa, "40 02 00 01", 0);
	peer_send(sb, "40 02 00 01", 0);
	TT_CHECK(wait_for(&ra.done, 1) && wait_for(&rb.done, 1));
	tr_get_stats(conn_transport(conn), &ts);
	TT_CHECK(ts.buffered == 0);
	TT_CHECK(P.bad_offsets == 0);
	client_free(a);
	client_free(b);
	conn_free(conn);
	tr_session_del(sess);
	teardown();
}

/*
 * A rebind mid-session, from outside and from inside a callback: the
 * old socket is closed, the conn watches the new one (one watcher), and
 * messages go on both ways. A failed rebind leaves the connection as it
 * was.
 */
static void test_rebind_mid_session(void)
{
	struct rec r;
	struct client *c;
	struct conn *conn;
	int old_fd, round, msgs = 0;

	setup();
	c = new_client(&r, "a");
	TT_CHECK(client_connect(c) == 0);
	TT_CHECK(peer_expect(0, CONNECT_A));
	peer_send(0, CONNACK_OK, 0);
	TT_CHECK(wait_for(&r.connected, 1));
	conn = client_conn(c);
	for (round = 1; round <= 3; round++) {
		char pub[64], ack[32];

		old_fd = tr_fd(conn_transport(conn));
		if (round == 1) {
			TT_CHECK(conn_rebind(conn, NULL) == 0);
		} else if (round == 2) {
			TT_CHECK(conn_rebind(conn, "127.0.0.1") == 0);
		} else {
			/* from on_message, while the conn is reading */
			r.rebind_on_message = 1;
			peer_send(0, "30 04 00 01 74 72", 0);
			TT_CHECK(wait_for(&r.messages, ++msgs));
			TT_CHECK(r.rebind_on_message == 0);
		}
		TT_CHECK(G.rebinds == round);
		TT_CHECK(tr_fd(conn_transport(conn)) != old_fd);
		TT_CHECK(fcntl(old_fd, F_GETFD) < 0 && errno == EBADF);
		TT_CHECK(evloop_io_count(loop) == 1);
		/* broker to client, and its ack, on the new socket */
		snprintf(pub, sizeof(pub), "32 06 00 01 74 00 %02x 6d", round);
		snprintf(ack, sizeof(ack), "40 02 00 %02x", round);
		peer_send(0, pub, 0);
		TT_CHECK(wait_for(&r.messages, ++msgs));
		TT_CHECK(peer_expect(0, ack));
		/* client to broker */
		TT_CHECK(publish1(c, "x") == round);
		snprintf(pub, sizeof(pub), "32 06 00 01 74 00 %02x 78", round);
		TT_CHECK(peer_expect(0, pub));
		peer_send(0, ack, 0);
		TT_CHECK(wait_for(&r.done, round));
	}
	TT_CHECK(conn_notes(conn) & TR_NOTE_PATH_VALIDATED);
	/* failures: the connection stays where it was */
	old_fd = tr_fd(conn_transport(conn));
	TT_CHECK(conn_rebind(conn, "not-an-address") == TR_ECONFIG);
	TT_CHECK(strstr(conn_errmsg(conn), "rebind to 'not-an-address'"));
	K.rebind_fail = 1;
	TT_CHECK(conn_rebind(conn, NULL) == TR_EIO);
	TT_CHECK(strcmp(conn_errmsg(conn), "rebind: injected failure") == 0);
	TT_CHECK(tr_fd(conn_transport(conn)) == old_fd);
	TT_CHECK(evloop_io_count(loop) == 1);
	peer_send(0, "30 04 00 01 74 66", 0);
	TT_CHECK(wait_for(&r.messages, ++msgs));
	TT_CHECK(r.closed == 0 && P.bad_offsets == 0);
	client_free(c);
	teardown();
}

/*
 * The progress call: after every timer of the transport even when no
 * user has bytes queued, and on writable events, which alone move bytes
 * the transport took while its socket was full.
 */
static void test_progress_calls(void)
{
	static uint8_t pkt[1006];
	struct rec r;
	struct client *c;
	struct tr_stats ts;
	int sends, progress, i;

	setup();
	K.tick_ns = 2 * EV_NS_PER_MS;
	K.sndbuf = 4096;
	c = new_client(&r, "a");
	TT_CHECK(client_connect(c) == 0);
	TT_CHECK(peer_expect(0, CONNECT_A));
	peer_send(0, CONNACK_OK, 0);
	TT_CHECK(wait_for(&r.connected, 1));
	/* timers, idle */
	sends = G.send_calls;
	progress = G.progress_after_tick;
	TT_CHECK(wait_for(&G.ticks, G.ticks + 5));
	TT_CHECK(G.progress_after_tick - progress >= 5);
	TT_CHECK(G.progress_after_tick == G.ticks);
	TT_CHECK(G.send_calls == sends);

	/* a full socket: the transport takes every byte, then only its
	 * progress calls on writable events can write them (no timer of the
	 * transport's runs now, and the client's keepalive is a minute away) */
	K.tick_ns = 0;
	/* the timer armed for the last tick fires once more */
	TT_CHECK(wait_for(&G.progress_calls, G.progress_calls + 1));
	memset(pkt, 'p', sizeof(pkt));
	for (i = 0; i < 40; i++)
		TT_CHECK(client_publish(c, (const uint8_t *)"t", 1, pkt, 1000,
		                        0, 0, NULL) == 0);
	sends = G.send_calls;
	progress = G.progress_calls;
	tr_get_stats(conn_transport(client_conn(c)), &ts);
	TT_CHECK(ts.buffered > 0);
	printf("     held by the transport with its socket full: %lld "
	       "bytes\n", (long long)ts.buffered);
	/* a QoS 0 PUBLISH to "t" with 1000 payload bytes */
	pkt[0] = 0x30;
	pkt[1] = 0xeb;
	pkt[2] = 0x07;
	pkt[3] = 0;
	pkt[4] = 1;
	pkt[5] = 't';
	for (i = 0; i < 40; i++)
		TT_CHECK(peer_expect_bytes(0, pkt, sizeof(pkt)));
	TT_CHECK(G.send_calls == sends);
	TT_CHECK(G.progress_calls > progress);
	printf("     %d progress calls moved them\n",
	       G.progress_calls - progress);
	tr_get_stats(conn_transport(client_conn(c)), &ts);
	TT_CHECK(ts.buffered == 0);
	TT_CHECK(G.ticks == G.progress_after_tick);
	TT_CHECK(r.closed == 0 && P.bad_offsets == 0);
	client_free(c);
	teardown();
}

/*
 * Re-entrancy: a client frees another client of the same connection from
 * its on_message (the other's bytes of the same read are then dropped),
 * and from its on_closed while the conn tells every user of a failure.
 */
static int one_closed(const void *arg)
{
	const struct pair *p = arg;

	return p->r[0].closed + p->r[1].closed > 0;
}

static void test_free_other_user_in_callback(void)
{
	struct pair p;
	int lo, hi;

	setup();
	two_connected(&p);
	lo = p.lo;
	hi = p.hi;
	p.r[lo].free_on_message = &p.c[hi];
	/* both messages in one read; the first's callback frees the second */
	peer_send(p.sid[hi], "32 06 00 01 74 00 07 6d", 0);
	peer_send(p.sid[lo], "32 06 00 01 74 00 07 6d", 0);
	TT_CHECK(wait_for(&p.r[lo].messages, 1));
	TT_CHECK(p.c[hi] == NULL);
	TT_CHECK(p.r[hi].messages == 0);
	TT_CHECK(conn_users(p.conn) == 1);
	TT_CHECK(peer_expect(p.sid[lo], "40 02 00 07"));
	TT_CHECK(peer_silent(p.sid[hi]));
	/* the survivor goes on */
	TT_CHECK(publish1(p.c[lo], "x") == 1);
	TT_CHECK(peer_expect(p.sid[lo], "32 06 00 01 74 00 01 78"));
	peer_send(p.sid[lo], "40 02 00 01", 0);
	TT_CHECK(wait_for(&p.r[lo].done, 1));
	client_free(p.c[lo]);
	conn_free(p.conn);
	teardown();

	/* in on_closed: whoever hears of the failure first frees the other */
	setup();
	two_connected(&p);
	p.r[0].free_on_closed = &p.c[1];
	p.r[1].free_on_closed = &p.c[0];
	peer_reset(-1);
	TT_CHECK(run_until(one_closed, &p));
	pump(5);
	TT_CHECK(p.r[0].closed + p.r[1].closed == 1);
	TT_CHECK((p.c[0] == NULL) != (p.c[1] == NULL));
	TT_CHECK(conn_users(p.conn) == 0 && conn_state(p.conn) == CONN_FAILED);
	client_free(p.c[0]);
	client_free(p.c[1]);
	conn_free(p.conn);
	teardown();
}

/*
 * A client that left its stream without ending it (freed, or closed on
 * an error) may still get the peer's FIN on it. That end has nobody to
 * tell; the conn must go on reading the other streams' bytes, which the
 * transport holds while its fd stays quiet.
 */
static void test_end_of_abandoned_stream(void)
{
	struct pair p;
	struct rec *rkeep;

	setup();
	two_connected(&p);
	/* the one that leaves has the lower stream id, so the transport
	 * tells its end before the other's bytes */
	rkeep = &p.r[p.hi];
	client_free(p.c[p.lo]);
	TT_CHECK(conn_users(p.conn) == 1);
	peer_fin(p.sid[p.lo]);
	peer_send(p.sid[p.hi], "30 04 00 01 74 6b", 0);
	TT_CHECK(wait_for(&rkeep->messages, 1));
	TT_CHECK(rkeep->closed == 0);
	/* and the next one */
	peer_send(p.sid[p.hi], "30 04 00 01 74 6c", 0);
	TT_CHECK(wait_for(&rkeep->messages, 2));
	client_free(p.c[p.hi]);
	conn_free(p.conn);
	teardown();
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	TT_RUN(test_held_bytes_delivered);
	TT_RUN(test_two_clients_one_conn);
	TT_RUN(test_shared_conn_open_fails);
	TT_RUN(test_early_accepted);
	TT_RUN(test_early_rejected);
	TT_RUN(test_rebind_mid_session);
	TT_RUN(test_progress_calls);
	TT_RUN(test_free_other_user_in_callback);
	TT_RUN(test_end_of_abandoned_stream);
	return TT_DONE();
}
