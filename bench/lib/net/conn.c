/*
 * conn.c: a transport connection driven by the loop, feeding its users.
 * See conn.h for the contract.
 *
 * Entry points are the two loop callbacks (io_cb, timer_cb) and the
 * conn_* calls. Loop callbacks set `busy` while they run; users are called
 * back only then. A conn_* call made while busy (from a user callback)
 * only records what it wants (flush, shutdown, a new timer); leave() does
 * it before the loop callback returns. A conn_* call made outside a loop
 * callback writes at once, and parks any failure it meets (fail_parked)
 * for the timer, so that no user is called back from inside it.
 *
 * Users are a singly linked list threaded through their conn_user. A user
 * callback may detach any user, itself included, and free it: walks over
 * the list keep their next step in `cursor`, which conn_detach() moves on
 * when it unlinks that very user, so a walk never touches a freed user.
 * Walks do not nest: users are called only from the top-level walks below,
 * inside loop callbacks, and a loop runs one callback at a time; so one
 * cursor per thread serves every conn (a user is on one conn only).
 *
 * Messages: a failure's one line is the transport connection's (tr->err),
 * set by the transport or, when it said nothing, here.
 */
#include "net/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_SIZE 65536

struct conn {
	struct evloop *loop;
	struct tr_ctx *ctx;
	struct tr_session *sess;
	struct tr_conn *tr;
	struct ev_io io;
	struct ev_timer timer;
	struct conn_user *users;
	int fail_err;
	uint16_t n_users;
	uint8_t state;        /* enum conn_state */
	uint8_t busy;         /* depth of loop callbacks running */
	uint8_t free_pending; /* conn_free() from a callback */
	uint8_t fail_parked;  /* a failure waits for the timer */
	uint8_t need_open;    /* users wait for their stream */
	uint8_t notes;        /* every note so far */
};

static _Thread_local uint8_t scratch[SCRATCH_SIZE];
static _Thread_local struct conn_user *cursor; /* next user of the walk */

static void update_io(struct conn *c);
static void update_timer(struct conn *c);

/* ---- users ---- */

static struct conn_user *walk_first(struct conn *c)
{
	struct conn_user *u = c->users;

	cursor = u ? u->next : NULL;
	return u;
}

static struct conn_user *walk_next(struct conn *c)
{
	(void)c; /* the cursor is the thread's (see above) */
	struct conn_user *u = cursor;

	cursor = u ? u->next : NULL;
	return u;
}

static struct conn_user *find_user(struct conn *c, int64_t sid)
{
	struct conn_user *u;

	for (u = c->users; u; u = u->next)
		if (u->opened && u->sid == sid)
			return u;
	return NULL;
}

static int alive(const struct conn *c)
{
	return !c->free_pending && c->state != CONN_FAILED;
}

/* Take u off c's users. */
static void unlink_user(struct conn *c, struct conn_user *u)
{
	struct conn_user **pp;

	for (pp = &c->users; *pp; pp = &(*pp)->next) {
		if (*pp == u) {
			*pp = u->next;
			break;
		}
	}
	if (cursor == u)
		cursor = u->next;
	u->next = NULL;
	u->conn = NULL;
	c->n_users--;
}

void conn_detach(struct conn *c, struct conn_user *u)
{
	if (!c || u->conn != c)
		return;
	unlink_user(c, u);
	/* A stream left while the connection goes on (QUIC: a client that
	 * quits a shared connection) is reset, so that the peer does not
	 * keep a half-open stream; a single-stream connection ends with its
	 * user anyway (its transport has no reset). */
	if (u->opened && !u->shut_done && c->tr && alive(c))
		(void)tr_reset(c->tr, u->sid, 0, evloop_clock_ns());
}

/* ---- failures ---- */

/* Tell every user the connection is over, detaching each first. */
static void deliver_failure(struct conn *c)
{
	struct conn_user *u;
	const char *msg = c->tr && c->tr->err ? c->tr->err
	                                      : tr_strerror(c->fail_err);

	for (u = walk_first(c); u; u = walk_next(c)) {
		unlink_user(c, u);
		u->ops->on_end(u, c->fail_err, msg);
		if (c->free_pending)
			return;
	}
}

/*
 * The transport failed with err (its message in tr_errmsg). Inside a loop
 * callback the users hear it now; inside a conn_* call it is parked for
 * the timer. The first failure is the one reported.
 */
static void fail(struct conn *c, int err)
{
	if (c->state == CONN_FAILED)
		return;
	if (c->tr && !c->tr->err)
		tr_fail(c->tr, err, "connection to %s: %s (%d)", c->ctx->peer,
		        tr_strerror(err), err);
	c->state = CONN_FAILED;
	c->fail_err = err;
	ev_io_stop(c->loop, &c->io);
	if (!c->busy) {
		c->fail_parked = 1;
		ev_timer_start(c->loop, &c->timer, evloop_now(c->loop));
		return;
	}
	deliver_failure(c);
}

/* ---- streams and bytes ---- */

/* Open a stream for every user still without one, then tell each. */
static void open_streams(struct conn *c, int64_t now)
{
	struct conn_user *u;
	int early = c->state == CONN_EARLY;

	c->need_open = 0;
	for (u = walk_first(c); u && alive(c); u = walk_next(c)) {
		int r;

		if (u->opened)
			continue;
		r = tr_stream_open(c->tr, &u->sid);
		if (r < 0) {
			fail(c, r);
			return;
		}
		u->opened = 1;
		if (c->busy)
			u->ops->on_open(u, early, now);
	}
}

/* Give the users the transport's notes (loop callbacks only). */
static void deliver_notes(struct conn *c)
{
	struct conn_user *u;
	unsigned n;

	if (!c->tr || !(n = tr_take_notes(c->tr)))
		return;
	c->notes |= n;
	for (u = walk_first(c); u && !c->free_pending; u = walk_next(c))
		if (u->opened && u->ops->on_note)
			u->ops->on_note(u, n);
}

/*
 * Write every user's pending bytes the transport takes, end the streams
 * whose users asked and have nothing left, then let the transport make
 * progress of its own. No user callbacks.
 */
static void flush_all(struct conn *c)
{
	struct conn_user *u;
	int64_t now = evloop_clock_ns();
	int r;

	if (c->state != CONN_EARLY && c->state != CONN_READY)
		return;
	for (u = c->users; u; u = u->next) {
		const uint8_t *p;
		size_t len;

		if (!u->opened || u->shut_done)
			continue;
		while ((len = u->ops->pending(u, &p)) > 0) {
			ssize_t n = tr_send(c->tr, u->sid, p, len, now);

			if (n == TR_AGAIN)
				break;
			if (n < 0) {
				fail(c, (int)n);
				return;
			}
			u->ops->sent(u, (size_t)n, now);
			u->moved = 1;
			if ((size_t)n == len) {
				len = 0; /* all taken: nothing is pending */
				break;
			}
		}
		if (u->shut_asked && len == 0) {
			r = tr_shutdown(c->tr, u->sid, now);
			if (r == 0)
				u->shut_done = 1;
			else if (r != TR_AGAIN) {
				fail(c, r);
				return;
			}
		}
	}
	r = tr_progress(c->tr, now);
	if (r < 0)
		fail(c, r);
}

/* Tell users whose bytes moved (loop callbacks only). */
static void deliver_sent(struct conn *c)
{
	struct conn_user *u;

	for (u = walk_first(c); u && !c->free_pending; u = walk_next(c)) {
		if (!u->moved)
			continue;
		u->moved = 0;
		if (u->ops->on_sent)
			u->ops->on_sent(u);
	}
}

/*
 * Read until the transport would block: QUIC keeps stream bytes inside
 * itself where the socket does not show them, so "readable" is asked of
 * the transport, not of the fd.
 */
static void read_all(struct conn *c)
{
	int64_t unheard = -1; /* the last stream end nobody heard */

	for (;;) {
		struct conn_user *u = NULL;
		uint8_t *dst = scratch;
		size_t cap = sizeof(scratch);
		int64_t sid = -1, now;
		ssize_t n;

		if (!(c->tr->ops->flags & TR_F_STREAMS) && c->users &&
		    c->users->ops->rx_buffer) {
			uint8_t *b = c->users->ops->rx_buffer(c->users, &cap);

			if (b)
				dst = b;
			else
				cap = sizeof(scratch);
		}
		n = tr_recv(c->tr, &sid, dst, cap, evloop_clock_ns());
		if (n == TR_AGAIN)
			return;
		if (n == TR_EOF || n == TR_ERESET) {
			u = find_user(c, sid);
			if (!u) {
				/* An end nobody hears: TCP and TLS say EOF
				 * again and again once their one stream is
				 * over, so stop. A transport with streams
				 * tells each end once, here of a stream whose
				 * user left without ending it, and may hold
				 * other streams' bytes: read on (unless it
				 * repeats itself). */
				if (!(c->tr->ops->flags & TR_F_STREAMS) ||
				    sid == unheard)
					return;
				unheard = sid;
				continue;
			}
			conn_detach(c, u);
			u->ops->on_end(u, (int)n,
			               n == TR_EOF ? "stream ended by the peer"
			                           : "stream reset by the peer");
			if (!alive(c))
				return;
			continue;
		}
		if (n < 0) {
			fail(c, (int)n);
			return;
		}
		now = evloop_clock_ns();
		u = find_user(c, sid);
		if (!u)
			continue; /* a stream nobody reads: dropped */
		u->ops->on_data(u, dst, (size_t)n, now);
		if (!alive(c))
			return;
	}
}

/* One handshake step (now: fresh, for the transport); opens streams
 * when bytes may flow. */
static void step_handshake(struct conn *c, int64_t now)
{
	int r = tr_handshake(c->tr, now);

	if (r == TR_AGAIN)
		return;
	if (r < 0) {
		fail(c, r);
		return;
	}
	if (r == TR_EARLY && c->state == CONN_EARLY)
		return;
	c->state = r == TR_EARLY ? CONN_EARLY : CONN_READY;
	/* the handshake step took time (key exchange, certificate checks):
	 * whatever users stamp now comes after it */
	open_streams(c, evloop_clock_ns());
}

/* ---- loop plumbing ---- */

static void update_io(struct conn *c)
{
	uint32_t ev;

	if (!c->tr || c->tr->fd < 0 || !alive(c)) {
		ev_io_stop(c->loop, &c->io);
		return;
	}
	ev = tr_events(c->tr);
	if (c->state == CONN_EARLY || c->state == CONN_READY)
		ev |= EV_READ;
	if (ev_io_start(c->loop, &c->io, ev) < 0) {
		tr_fail(c->tr, TR_EIO, "event loop: cannot watch the socket "
		        "of %s", c->ctx->peer);
		fail(c, TR_EIO);
	}
}

/* The earliest time the timer has something to do. */
static int64_t next_deadline(struct conn *c)
{
	struct conn_user *u;
	int64_t d, t;

	if (c->fail_parked || c->need_open)
		return evloop_now(c->loop);
	if (!c->tr || c->state == CONN_FAILED)
		return EV_NEVER;
	d = tr_expiry(c->tr);
	for (u = c->users; u; u = u->next) {
		t = u->ops->deadline(u);
		if (t < d)
			d = t;
	}
	return d;
}

/* Arm the timer, moving it only earlier: one that fires early finds
 * nothing due and re-arms, cheaper than moving it on every packet. */
static void update_timer(struct conn *c)
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

static void destroy(struct conn *c)
{
	struct conn_user *u;

	/* closing: the streams end with the connection, none is reset */
	while ((u = c->users) != NULL)
		unlink_user(c, u);
	ev_io_stop(c->loop, &c->io);
	ev_timer_stop(c->loop, &c->timer);
	tr_close(c->tr);
	free(c);
}

/* End of a loop callback: write what callbacks queued, tell users what
 * moved and what the transport noted, re-arm, free if asked. */
static void leave(struct conn *c)
{
	if (alive(c)) {
		flush_all(c);
		if (alive(c))
			deliver_sent(c);
		if (alive(c))
			deliver_notes(c);
		/* callbacks may have queued more, or asked for shutdown */
		if (alive(c))
			flush_all(c);
		if (alive(c))
			update_io(c);
	}
	if (!c->free_pending)
		update_timer(c);
	c->busy--;
	if (c->busy == 0 && c->free_pending)
		destroy(c);
}

static void io_cb(struct evloop *loop, struct ev_io *w, uint32_t revents)
{
	struct conn *c = w->arg;

	(void)loop;
	c->busy++;
	if (c->state == CONN_OPENING || c->state == CONN_EARLY) {
		step_handshake(c, evloop_clock_ns());
		if (alive(c))
			deliver_notes(c);
	}
	if (alive(c) && (c->state == CONN_EARLY || c->state == CONN_READY)) {
		(void)revents;
		/* every event reads: errors and hang-ups come out of recv, and
		 * a transport may hold bytes the fd does not show */
		read_all(c);
	}
	leave(c);
}

static void timer_cb(struct evloop *loop, struct ev_timer *t)
{
	struct conn *c = t->arg;
	struct conn_user *u;
	int64_t now = evloop_clock_ns();

	(void)loop;
	c->busy++;
	if (c->fail_parked) {
		c->fail_parked = 0;
		deliver_failure(c);
		goto out;
	}
	if (!alive(c) || !c->tr)
		goto out;
	if (tr_expiry(c->tr) <= now) {
		int r = tr_on_expiry(c->tr, now);

		if (r < 0) {
			fail(c, r);
			goto out;
		}
		if (c->state == CONN_OPENING || c->state == CONN_EARLY)
			step_handshake(c, now);
		if (!alive(c))
			goto out;
	}
	if (c->need_open && c->state != CONN_OPENING)
		open_streams(c, now);
	for (u = walk_first(c); u && alive(c); u = walk_next(c))
		if (u->ops->deadline(u) <= now)
			u->ops->on_timer(u, now);
	/* the transport may hold bytes whose arrival no fd event told (a
	 * QUIC packet processed in on_expiry, say) */
	if (alive(c) && (c->state == CONN_EARLY || c->state == CONN_READY))
		read_all(c);
out:
	leave(c);
}

/* ---- public calls ---- */

struct conn *conn_new(struct evloop *loop, struct tr_ctx *ctx,
                      struct tr_session *sess)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->loop = loop;
	c->ctx = ctx;
	c->sess = sess;
	c->state = CONN_IDLE;
	ev_io_init(&c->io, -1, io_cb, c);
	ev_timer_init(&c->timer, timer_cb, c);
	return c;
}

void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->busy) {
		c->free_pending = 1;
		ev_io_stop(c->loop, &c->io);
		ev_timer_stop(c->loop, &c->timer);
		return;
	}
	destroy(c);
}

int conn_open(struct conn *c)
{
	int64_t now;
	int r;

	if (c->state != CONN_IDLE || c->tr)
		return TR_ESTATE;
	now = evloop_clock_ns();
	r = tr_open(c->ctx, c->sess, now, &c->tr);
	if (r < 0)
		return r;
	c->state = CONN_OPENING;
	ev_io_init(&c->io, tr_fd(c->tr), io_cb, c);
	/* The first step right away: QUIC sends its Initial here. */
	r = tr_handshake(c->tr, now);
	if (r < 0 && r != TR_AGAIN) {
		fail(c, r);
	} else if (r != TR_AGAIN) {
		c->state = r == TR_EARLY ? CONN_EARLY : CONN_READY;
		c->need_open = 1; /* on_open from the loop, not from here */
	}
	if (alive(c))
		update_io(c);
	update_timer(c);
	return 0;
}

int conn_attach(struct conn *c, struct conn_user *u)
{
	if (u->conn)
		return TR_ESTATE;
	if (c->state == CONN_FAILED || c->free_pending)
		return TR_ESTATE;
	if (c->n_users > 0 &&
	    !(c->ctx->ops->flags & TR_F_STREAMS))
		return TR_ESTATE;
	u->conn = c;
	u->sid = -1;
	u->opened = u->shut_asked = u->shut_done = u->moved = 0;
	u->next = c->users;
	c->users = u;
	c->n_users++;
	if (c->state == CONN_EARLY || c->state == CONN_READY) {
		c->need_open = 1;
		if (!c->busy)
			update_timer(c);
	}
	return 0;
}

/* Write now, outside a loop callback; failures are parked. */
static void api_flush(struct conn *c)
{
	if (c->busy || !alive(c))
		return; /* leave() writes when the callback returns */
	flush_all(c);
	if (alive(c))
		update_io(c);
	update_timer(c);
}

void conn_flush(struct conn *c)
{
	api_flush(c);
}

void conn_shutdown(struct conn *c, struct conn_user *u)
{
	if (u->conn != c)
		return;
	u->shut_asked = 1;
	api_flush(c);
}

void conn_kick(struct conn *c)
{
	if (!c->busy && !c->free_pending)
		update_timer(c);
}

int conn_rebind(struct conn *c, const char *local_addr)
{
	int r;

	if (!c->tr || !alive(c) || c->state == CONN_OPENING)
		return TR_ESTATE;
	/* Stop watching before the transport closes the old socket. */
	ev_io_stop(c->loop, &c->io);
	r = tr_rebind(c->tr, local_addr, evloop_clock_ns());
	ev_io_init(&c->io, tr_fd(c->tr), io_cb, c);
	if (!c->busy) {
		update_io(c);
		update_timer(c);
	}
	return r;
}

enum conn_state conn_state(const struct conn *c)
{
	return (enum conn_state)c->state;
}

struct tr_conn *conn_transport(const struct conn *c)
{
	return c->tr;
}

const char *conn_errmsg(const struct conn *c)
{
	return c->tr && c->tr->err ? c->tr->err : "";
}

unsigned conn_notes(const struct conn *c)
{
	return c->notes | (c->tr ? c->tr->notes : 0);
}

unsigned conn_users(const struct conn *c)
{
	return c->n_users;
}

size_t conn_heap_bytes(const struct conn *c)
{
	return sizeof(*c);
}
