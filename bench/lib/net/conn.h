/*
 * conn.h: one transport connection on an event loop, carrying the byte
 * streams of its users.
 *
 * Who owns what:
 *   - The conn owns the transport connection (struct tr_conn), its socket,
 *     the I/O watcher on that socket (which follows the socket when the
 *     transport rebinds) and one timer.
 *   - A user (struct conn_user, embedded in the user's own object, e.g. an
 *     MQTT session's client) owns the bytes of one stream until the
 *     transport takes them (then the transport owns them until the peer
 *     acknowledges them: see transport.h). TCP and TLS carry one user;
 *     QUIC one per stream.
 *   - The loop drives the conn; the conn drives its users through their
 *     table of callbacks: bytes in (on_data), bytes out (pending/sent),
 *     time (deadline/on_timer), and the end of the stream (on_end).
 *
 * Life cycle: conn_new, conn_attach (one or more users), conn_open. As soon
 * as the transport allows bytes (handshake done, or early data allowed on
 * a resumed QUIC connection) each user's stream is opened and on_open
 * tells it; then its pending bytes are written whenever the transport takes
 * them. When the connection fails, every user gets on_end(err, message) and
 * is detached; the conn then only waits for conn_free().
 *
 * Re-entrancy: the conn calls its users only from loop callbacks, never
 * from a conn_* call. Users may call any conn_* function from their
 * callbacks, conn_free() included; calls that would write (conn_flush,
 * conn_shutdown) are then carried out when the callback returns, before
 * the loop callback ends. A failure met inside a conn_* call made outside a
 * loop callback (a send error, say) is reported from the timer on the next
 * loop round.
 */
#ifndef NET_CONN_H
#define NET_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "net/evloop.h"
#include "net/transport.h"

struct conn;
struct conn_user;

struct conn_user_ops {
	/* The stream can carry bytes now: early (0-RTT: handshake not done;
	 * early = 1) or ready (0). After an early open, on_note tells
	 * TR_NOTE_READY, and TR_NOTE_EARLY_ACCEPTED or _REJECTED. */
	void (*on_open)(struct conn_user *u, int early, int64_t now);
	/* Optional: a buffer to read this stream's next bytes into directly,
	 * saving a copy (*cap bytes); NULL to use the conn's buffer. Asked
	 * only of the single user of a single-stream transport. */
	uint8_t *(*rx_buffer)(struct conn_user *u, size_t *cap);
	/* Bytes of the stream, in order; now: CLOCK_MONOTONIC right after
	 * the read that brought them. buf is valid during the call only. */
	void (*on_data)(struct conn_user *u, const uint8_t *buf, size_t len,
	                int64_t now);
	/* Bytes waiting to be sent: a pointer to them and their count, 0
	 * when none. The pointer must stay valid until sent() or the next
	 * pending() call. No callbacks into the application here. */
	size_t (*pending)(struct conn_user *u, const uint8_t **data);
	/* The transport took the first n of those bytes (they are its own
	 * now). No callbacks into the application here. */
	void (*sent)(struct conn_user *u, size_t n, int64_t now);
	/* After a loop round in which the transport took some of this
	 * user's bytes (the place to tell the application there is room). */
	void (*on_sent)(struct conn_user *u);
	/* TR_NOTE_* bits from the transport. Optional. */
	void (*on_note)(struct conn_user *u, unsigned notes);
	/* The user's next deadline (EV_NEVER: none), and its expiry. */
	int64_t (*deadline)(struct conn_user *u);
	void (*on_timer)(struct conn_user *u, int64_t now);
	/* The stream is over and the user detached: err TR_EOF when the peer
	 * ended it in order, another TR_E* code with a one-line message when
	 * the connection failed. */
	void (*on_end)(struct conn_user *u, int err, const char *msg);
};

/* Embedded in the user's object; fields are the conn's. */
struct conn_user {
	const struct conn_user_ops *ops;
	struct conn *conn;       /* NULL when detached */
	struct conn_user *next;  /* the conn's list */
	int64_t sid;             /* stream id, -1 until opened */
	uint8_t opened;          /* on_open delivered */
	uint8_t shut_asked;      /* conn_shutdown() called */
	uint8_t shut_done;       /* the transport ended our side */
	uint8_t moved;           /* bytes taken this round (for on_sent) */
};

enum conn_state {
	CONN_IDLE = 0,  /* created, not opened */
	CONN_OPENING,   /* transport connect and handshake */
	CONN_EARLY,     /* handshake going on, early data allowed */
	CONN_READY,     /* handshake done */
	CONN_FAILED,    /* the transport failed; users were told */
};

/*
 * A connection to ctx's address on loop, resuming with sess (may be NULL;
 * referenced, must outlive the conn). NULL when out of memory.
 */
struct conn *conn_new(struct evloop *loop, struct tr_ctx *ctx,
                      struct tr_session *sess);
/* Close the transport and free the conn; users still attached are
 * detached without a callback. Deferred when called from a callback. */
void conn_free(struct conn *c);

/*
 * Start connecting (IDLE only). 0, or TR_ENOMEM / TR_ESTATE. Every later
 * failure, even an immediate one, reaches the users through on_end.
 */
int conn_open(struct conn *c);
/*
 * Add a user (its ops set, not attached elsewhere). Its stream opens once
 * the transport allows bytes (at once on an open connection: on the next
 * loop round). 0, or TR_ESTATE when the transport carries one stream and
 * has a user already, or the conn failed.
 */
int conn_attach(struct conn *c, struct conn_user *u);
/* Remove a user, without a callback. Harmless when not attached. On a
 * connection that goes on with other streams, the user's stream is reset
 * unless its sending side was ended already. */
void conn_detach(struct conn *c, struct conn_user *u);
/* A user queued bytes: write what the transport takes now. */
void conn_flush(struct conn *c);
/* End our sending side of u's stream once its pending bytes are sent
 * (TLS close_notify and FIN; QUIC FIN). */
void conn_shutdown(struct conn *c, struct conn_user *u);
/* A user's deadline may have moved earlier: re-arm the timer. */
void conn_kick(struct conn *c);
/*
 * Move the connection to a new local address (NULL: same address, new
 * port), for transports with TR_F_REBIND; the watcher follows the new
 * socket. 0, or a TR_E* code with conn_errmsg() set and the connection
 * left as it was (TR_ESTATE: the transport cannot).
 */
int conn_rebind(struct conn *c, const char *local_addr);

enum conn_state conn_state(const struct conn *c);
/* The transport connection (NULL before conn_open), e.g. for
 * tr_get_info and tr_get_stats. */
struct tr_conn *conn_transport(const struct conn *c);
/* The message of the failure, or of the last failed call; "" if none. */
const char *conn_errmsg(const struct conn *c);
/* Every TR_NOTE_* the transport has given so far. */
unsigned conn_notes(const struct conn *c);
/* Users attached now. */
unsigned conn_users(const struct conn *c);
/* Bytes of heap the conn holds (without the transport library's state). */
size_t conn_heap_bytes(const struct conn *c);

#endif /* NET_CONN_H */
