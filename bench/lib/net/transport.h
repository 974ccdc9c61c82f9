/*
 * transport.h: the transports under the MQTT engine and the QUIC gateway.
 *
 * A transport is a constant table of functions (struct transport_ops): TCP
 * (tr_tcp_ops), TLS over TCP with GnuTLS (tr_tls_ops), QUIC. Shared code
 * calls through the table and never asks which transport it has; what
 * differs is said by the table's flags and default port.
 *
 * Objects:
 *   struct tr_ctx      shared by every connection to (or from) one address:
 *                      the resolved address, the configuration with
 *                      defaults filled in, and the transport's shared state
 *                      (TLS credentials and priorities, loaded once for
 *                      10,000 connections).
 *   struct tr_conn     one connection, client or server side. Every
 *                      implementation embeds it as the first member of its
 *                      own struct.
 *   struct tr_session  resumption state of one client across its
 *                      connections (TLS session ticket; QUIC ticket and the
 *                      server's transport parameters). Owned by the caller.
 *   struct tr_listener a listening endpoint (server side) whose accept()
 *                      hands out server-side connections.
 *
 * Streams. A connection carries byte streams, each named by a stream id.
 * TCP and TLS carry exactly one, TR_STREAM_MAIN (0), open as soon as the
 * handshake is done. A transport with TR_F_STREAMS (QUIC) opens more with
 * stream_open(); on the server side the peer opens them and recv() names
 * each new one as its first bytes arrive.
 *
 * Who owns stream bytes: send() takes bytes from the caller's buffer and,
 * for the bytes it accepts, becomes their owner: the caller may reuse or
 * free its buffer at once. TCP and TLS hand them to the kernel (the kernel
 * keeps them until ACKed); QUIC copies them into the connection's stream
 * buffer and frees them when the peer acknowledges them (ngtcp2 keeps
 * pointers into that buffer until then). So every byte is held once, and
 * tr_stats().buffered says how many the transport holds.
 *
 * Non-blocking life cycle of a client connection, driven by the caller:
 *   tr_open()        creates the socket and starts connecting; never blocks.
 *   tr_handshake()   call when the fd shows the events tr_events() asked for,
 *                    when tr_expiry() passes, and once right after tr_open():
 *                    0 when the transport is ready for application bytes,
 *                    TR_EARLY when it is not yet but early data (0-RTT) may
 *                    be sent now, TR_AGAIN to wait, or an error. Call it
 *                    again after TR_EARLY until it returns 0.
 *   tr_send/tr_recv  bytes (> 0), TR_AGAIN (would block: wait for the events
 *                    tr_events() returns, then call again), TR_EOF (recv
 *                    only: the peer ended the stream), or another negative
 *                    TR_E* code. Never 0 for a non-empty buffer. With
 *                    TR_F_STREAMS, recv tells each stream's end (TR_EOF,
 *                    TR_ERESET) once, with its stream id; TCP and TLS say
 *                    TR_EOF again on every call after the end.
 *   tr_progress()    lets the transport do what needs no caller bytes: QUIC
 *                    ACKs, retransmissions, probes, packets held back by a
 *                    full socket buffer. Call it on every I/O event and timer
 *                    of the connection, after reading and sending. NULL in
 *                    the table for TCP and TLS (nothing to do).
 *   tr_events()      EV_READ/EV_WRITE the transport waits for now. Ask again
 *                    after every call into the transport.
 *   tr_expiry()      absolute time (ns) of the transport's next deadline,
 *                    EV_NEVER if none (TCP/TLS: the connect timeout while
 *                    connecting; QUIC: loss recovery, idle timeout, ACK
 *                    delay, pacing). When it passes, call tr_on_expiry().
 *   tr_shutdown()    graceful end of our sending direction of one stream:
 *                    TLS close_notify then shutdown(SHUT_WR); QUIC FIN on
 *                    the stream. 0 when done, TR_AGAIN to call again when
 *                    tr_events() are ready. Reading goes on until TR_EOF.
 *   tr_rebind()      (TR_F_REBIND) move to a new local address or port
 *                    mid-connection: a new socket, the connection goes on.
 *                    tr_fd() changes: the caller must watch the new one.
 *   tr_close()       closes the socket and frees the connection.
 * Server side: tr_listen() binds ctx's address; tr_accept() returns the
 * next server-side connection with news (TR_AGAIN when none): TCP and TLS
 * a new connection each time, which then has a socket of its own; QUIC,
 * whose connections share the listener's UDP socket (their fd is -1), a
 * new connection (note TR_NOTE_NEW) or one that the listener just fed
 * packets: the caller then takes its new streams (tr_accept_stream), reads
 * them (tr_recv) and lets it progress. Server-side connections run the
 * same life cycle from tr_handshake() on.
 *
 * Notes: a transport reports events that need no answer but change what
 * the caller measures (0-RTT accepted or rejected, a migration's path
 * validated) by setting TR_NOTE_* bits in tr_conn.notes; the caller takes
 * them with tr_take_notes() after calls into the transport. After
 * TR_NOTE_EARLY_REJECTED the transport has already sent again, in 1-RTT and
 * from offset 0, every stream byte it had accepted as early data: nothing
 * is lost and nothing is sent twice to the application on the other side.
 *
 * Time: every `now` handed to a transport must be fresh
 * (evloop_clock_ns()), not the loop's cached time: QUIC stamps packets
 * with it, and a stale now is a wrong RTT sample.
 *
 * Errors: every failure leaves a one-line message with context in the
 * connection, read with tr_errmsg(), e.g.
 *   "connect to 127.0.0.1:1884: Connection refused"
 *   "TLS handshake with 127.0.0.1:8883: certificate not trusted (signer not
 *    found); check --cafile"
 *
 * Hostile I/O (tests): with the environment variable MQB_HOSTILE_IO=1, TCP
 * and TLS socket reads and writes are cut short or made to would-block at
 * random (seeded by MQB_HOSTILE_SEED, default 1), to exercise partial paths.
 *
 * SSLKEYLOGFILE: when set, TLS secrets are appended to that file in the NSS
 * key log format (for Wireshark).
 */
#ifndef TRANSPORT_H
#define TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "net/evloop.h"

/*
 * Each layer's error codes take a range of their own, so a stray code
 * tells where it came from: codec -1xx, transport -2xx, client -3xx,
 * measure -4xx, command line -5xx, link emulator -6xx.
 */
/* Results: errors are negative (TR_EARLY below is not an error). */
#define TR_AGAIN -201     /* would block: wait for tr_events(), call again */
#define TR_EOF -202       /* the peer closed the stream in order */
#define TR_ENOMEM -203    /* out of memory */
#define TR_ECONNECT -204  /* could not connect (refused, unreachable, ...) */
#define TR_ETIMEOUT -205  /* connect/handshake did not finish in time */
#define TR_EIO -206       /* send/recv failed (reset, broken pipe, ...) */
#define TR_ETLS -207      /* TLS failure other than certificate checks */
#define TR_ECERT -208     /* server certificate rejected */
#define TR_ECONFIG -209   /* unusable configuration (file, address, option) */
#define TR_ERESOLVE -210  /* host name could not be resolved */
#define TR_EQUIC -211     /* QUIC failure (protocol, peer's close) */
#define TR_ESTATE -212    /* call not allowed in the connection's state */
#define TR_ERESET -213    /* the peer reset the stream */
#define TR_EEXIST -214    /* listen: the address is in use */

#define TR_EARLY 1        /* handshake: not done, early data may be sent */

/* The one stream of TCP and TLS; QUIC's first client stream too. */
#define TR_STREAM_MAIN 0

/* One line naming the code, never NULL. */
const char *tr_strerror(int err);

/* What a transport is, for shared code that must not compare names. */
#define TR_F_SECURE 0x01    /* runs TLS: takes a CA, a name to verify */
#define TR_F_DATAGRAM 0x02  /* runs over UDP */
#define TR_F_STREAMS 0x04   /* several streams on one connection */
#define TR_F_EARLY 0x08     /* may send early data (0-RTT) */
#define TR_F_REBIND 0x10    /* may move to a new local address */
#define TR_F_SERVER 0x20    /* has a server side (listen/accept) */

/* Notes, set in tr_conn.notes by the transport (see above). */
#define TR_NOTE_EARLY_ACCEPTED 0x01 /* the server accepted our 0-RTT data */
#define TR_NOTE_EARLY_REJECTED 0x02 /* it did not; resent in 1-RTT */
#define TR_NOTE_PATH_VALIDATED 0x04 /* a rebind's new path is validated */
#define TR_NOTE_PATH_FAILED 0x08    /* ... or failed to validate */
#define TR_NOTE_READY 0x10          /* the handshake completed */
#define TR_NOTE_NEW 0x20            /* server side: a new connection */

enum tr_tls_version {
	TR_TLS_1_3 = 13, /* default */
	TR_TLS_1_2 = 12,
};

/*
 * Configuration. Fill with tr_config_init() (defaults), then set fields.
 * Strings are copied by tr_ctx_new(); the caller's may go away afterwards.
 */
struct tr_config {
	const char *host; /* broker name or address (IPv4 or IPv6 literal);
	                     server side: the address to listen on */
	uint16_t port;
	const char *local_addr;     /* optional: bind to this address first */
	int64_t connect_timeout_ns; /* transport connect+handshake; default 10 s */
	int nodelay;                /* TCP_NODELAY, default 1 (on) */
	int sndbuf, rcvbuf;         /* SO_SNDBUF/SO_RCVBUF, 0: kernel default */
	int server;                 /* 1: a context for tr_listen() */

	/* TLS (and QUIC's TLS); ignored by TCP. */
	const char *cafile;      /* PEM bundle of trusted CAs; NULL: system */
	const char *server_name; /* name or IP to verify; NULL: host */
	int tls_version;         /* TR_TLS_1_3 (default) or TR_TLS_1_2 */
	const char *priority;    /* GnuTLS priority string overriding the above */
	const char *certfile;    /* certificate (PEM): the client's, optional;
	                            the server's, required */
	const char *keyfile;     /* its key (PEM); required with certfile */
	const char *alpn;        /* ALPN protocol ("mqtt" for QUIC) */
	int no_resume;           /* 1: do not resume sessions */
	int insecure;            /* 1: skip certificate verification (never
	                            the default; for experiments only) */

	/* QUIC; ignored by TCP and TLS. */
	int early_data;          /* 1: send early data when a session allows */
	const char *cc;          /* congestion control: "cubic" (default),
	                            "reno", "bbr", "bbr2" */
	const char *qlog_dir;    /* write one qlog file per connection here */
	int retry;               /* server: demand a Retry token first */
	int64_t replay_window_ns; /* server: 0-RTT anti-replay window;
	                            default 1 h (see quic.c) */
	int64_t idle_timeout_ns; /* default 120 s (MQTT keepalive 60 s) */
};

void tr_config_init(struct tr_config *cfg);

struct transport_ops;
struct tr_session;

/* Shared per address and transport. Read-only for callers. */
struct tr_ctx {
	const struct transport_ops *ops;
	struct tr_config cfg;          /* copy, defaults resolved */
	struct sockaddr_storage addr;  /* resolved broker address */
	socklen_t addrlen;
	struct sockaddr_storage local; /* resolved local_addr, if any */
	socklen_t locallen;
	char peer[112]; /* "127.0.0.1:8883", "[::1]:8883", for messages */
	void *impl;    /* the transport's shared state */
};

/* Base of every connection; implementations embed it first. */
struct tr_conn {
	const struct transport_ops *ops;
	struct tr_ctx *ctx;
	struct tr_session *sess; /* may be NULL */
	void *owner;             /* the caller's, untouched by the transport */
	int fd;                  /* the fd to watch, -1 when none */
	uint8_t server;          /* 1: accepted by a listener */
	uint8_t notes;           /* TR_NOTE_* not yet taken */
	/* Timestamps, CLOCK_MONOTONIC ns. t_start is the `now` given to
	 * tr_open(): the caller's time just before it, so socket creation
	 * and options count as connecting. t_connected and t_ready are read
	 * from the clock in the call that finds the step done: tr_handshake()
	 * (TCP: when the loop sees the socket writable; TLS and QUIC: when
	 * the record or packet completing the step is processed). They
	 * include our own processing (key exchange, certificate checks) and
	 * are late by the loop's reaction time. */
	int64_t t_start;         /* the caller's time before tr_open() */
	int64_t t_connected;     /* TCP connect seen done (QUIC: first reply) */
	int64_t t_ready;         /* handshake done, 0 until then */
	/* Bytes through the socket (TCP payload; with TLS whole records,
	 * handshake and alerts included; QUIC: UDP payloads), counted as
	 * send()/recv() move them. Packets: tr_stats (TCP segments from the
	 * kernel, QUIC packets). */
	uint64_t wire_in, wire_out;
	char *err;               /* last error message (heap), NULL if none */
	int sys_errno;           /* errno of the last failed socket call */
};

/* What a connection negotiated, for results and tests. */
struct tr_info {
	const char *transport; /* ops->name */
	int64_t t_start, t_connected, t_ready;
	uint64_t wire_in, wire_out;
	int resumed;            /* 1 if the TLS/QUIC session was resumed */
	int early;              /* 0-RTT: 0 not tried, 1 accepted,
	                           -1 rejected (and resent in 1-RTT) */
	char version[16];       /* "TLS1.3", "" for TCP */
	char cipher[48];        /* "AES-128-GCM", "" for TCP */
	char alpn[16];          /* negotiated ALPN, "" if none */
	uint16_t local_port;
};

/*
 * How the connection is doing, from the transport's own state: TCP from
 * the kernel (TCP_INFO), QUIC from ngtcp2. -1 (or "") when unknown.
 */
struct tr_stats {
	int64_t srtt_ns, rttvar_ns, min_rtt_ns, latest_rtt_ns;
	int64_t cwnd_bytes;      /* congestion window */
	int64_t inflight_bytes;  /* sent, not yet acknowledged */
	int64_t retransmits;     /* TCP: segments retransmitted in total;
	                            QUIC: packets declared lost */
	int64_t segs_out, segs_in; /* TCP segments / QUIC packets */
	int64_t rto_ns;          /* TCP: current retransmission timeout */
	int64_t buffered;        /* stream bytes held until acknowledged
	                            (by the transport, not the kernel) */
	char cc[16];             /* congestion control in use */
};

/* A listening endpoint. Implementations embed it first. */
struct tr_listener {
	const struct transport_ops *ops;
	struct tr_ctx *ctx;
	int fd;    /* the fd to watch for EV_READ */
	char *err; /* last error message, NULL if none */
};

struct transport_ops {
	const char *name;      /* "tcp", "tls", "quic" */
	unsigned flags;        /* TR_F_* */
	uint16_t default_port; /* 1883, 8883, 14567 */
	/* Set up ctx->impl from ctx->cfg; message into err on failure. */
	int (*ctx_init)(struct tr_ctx *ctx, char *err, size_t errlen);
	void (*ctx_free)(struct tr_ctx *ctx);
	/* Create a connection and start connecting. Only TR_ENOMEM fails
	 * here; socket and connect errors are kept and returned by the first
	 * handshake() so that callers have one error path. */
	int (*open)(struct tr_ctx *ctx, struct tr_session *sess, int64_t now,
	            struct tr_conn **out);
	int (*handshake)(struct tr_conn *c, int64_t now);
	/* TR_F_STREAMS: open a new bidirectional stream once handshake()
	 * said TR_EARLY or 0. NULL: the one stream is TR_STREAM_MAIN. */
	int (*stream_open)(struct tr_conn *c, int64_t *sid);
	ssize_t (*send)(struct tr_conn *c, int64_t sid, const uint8_t *buf,
	                size_t len, int64_t now);
	/* Bytes of one stream. *sid on input: -1 for any stream, or the
	 * stream to read; on output the stream the bytes (or TR_EOF,
	 * TR_ERESET) belong to. TCP and TLS have only TR_STREAM_MAIN. */
	ssize_t (*recv)(struct tr_conn *c, int64_t *sid, uint8_t *buf,
	                size_t len, int64_t now);
	/* Server side: the next stream the peer opened that the caller was
	 * not given yet: 0 and *sid, or TR_AGAIN. NULL: none ever. */
	int (*accept_stream)(struct tr_conn *c, int64_t *sid);
	/* End a stream abruptly both ways (QUIC RESET_STREAM and
	 * STOP_SENDING with code). NULL: the transport cannot (TCP, TLS:
	 * close the connection instead). */
	int (*reset)(struct tr_conn *c, int64_t sid, uint64_t code,
	             int64_t now);
	int (*progress)(struct tr_conn *c, int64_t now); /* NULL: none */
	uint32_t (*events)(const struct tr_conn *c);
	int64_t (*expiry)(const struct tr_conn *c);       /* NULL: none */
	int (*on_expiry)(struct tr_conn *c, int64_t now); /* NULL: none */
	int (*shutdown)(struct tr_conn *c, int64_t sid, int64_t now);
	/* TR_F_REBIND: local NULL keeps the address, takes a new port. */
	int (*rebind)(struct tr_conn *c, const struct sockaddr *local,
	              socklen_t len, int64_t now);
	void (*info)(const struct tr_conn *c, struct tr_info *out); /* extras */
	void (*stats)(const struct tr_conn *c, struct tr_stats *out);
	void (*free)(struct tr_conn *c); /* close fd, free everything */
	/* TR_F_SERVER */
	int (*listen)(struct tr_ctx *ctx, struct tr_listener **out, char *err,
	              size_t errlen);
	int (*accept)(struct tr_listener *l, int64_t now,
	              struct tr_conn **out);
	void (*listener_free)(struct tr_listener *l);
};

extern const struct transport_ops tr_tcp_ops;
extern const struct transport_ops tr_tls_ops;

/* Look a transport up by name ("tcp", "tls"); NULL if unknown. */
const struct transport_ops *tr_find(const char *name);
/* Comma-separated names of the known transports, for usage messages. */
const char *tr_names(void);

/*
 * Create the shared context: copy cfg, resolve the host (this may block once,
 * for a name; literals never block), and load the transport's shared state.
 * Returns 0, or a negative TR_E* code with one line in err, such as
 * "cannot resolve 'brokr': Name or service not known" or
 * "TLS: cannot read CA file 'ca.pem': Error while reading file; check
 * --cafile".
 */
int tr_ctx_new(struct tr_ctx **out, const struct transport_ops *ops,
               const struct tr_config *cfg, char *err, size_t errlen);
void tr_ctx_del(struct tr_ctx *ctx);

/* Session cache: resumption data of one client. */
struct tr_session *tr_session_new(void);
void tr_session_del(struct tr_session *s);
/* For transports: replace the stored data (copied). 0 or TR_ENOMEM. */
int tr_session_store(struct tr_session *s, const void *data, size_t len);
/* For transports: the stored data, NULL/0 when empty. */
const uint8_t *tr_session_data(const struct tr_session *s, size_t *len);
void tr_session_clear(struct tr_session *s);

/* Calls through the table. */
static inline int tr_open(struct tr_ctx *ctx, struct tr_session *sess,
                          int64_t now, struct tr_conn **out)
{
	return ctx->ops->open(ctx, sess, now, out);
}
static inline int tr_handshake(struct tr_conn *c, int64_t now)
{
	return c->ops->handshake(c, now);
}
/* A new stream (TR_F_STREAMS), or TR_STREAM_MAIN for the others. */
static inline int tr_stream_open(struct tr_conn *c, int64_t *sid)
{
	if (!c->ops->stream_open) {
		*sid = TR_STREAM_MAIN;
		return 0;
	}
	return c->ops->stream_open(c, sid);
}
static inline ssize_t tr_send(struct tr_conn *c, int64_t sid,
                              const uint8_t *buf, size_t len, int64_t now)
{
	return c->ops->send(c, sid, buf, len, now);
}
static inline ssize_t tr_recv(struct tr_conn *c, int64_t *sid, uint8_t *buf,
                              size_t len, int64_t now)
{
	return c->ops->recv(c, sid, buf, len, now);
}
static inline int tr_accept_stream(struct tr_conn *c, int64_t *sid)
{
	return c->ops->accept_stream ? c->ops->accept_stream(c, sid)
	                             : TR_AGAIN;
}
static inline int tr_reset(struct tr_conn *c, int64_t sid, uint64_t code,
                           int64_t now)
{
	return c->ops->reset ? c->ops->reset(c, sid, code, now) : TR_ESTATE;
}
static inline int tr_progress(struct tr_conn *c, int64_t now)
{
	return c->ops->progress ? c->ops->progress(c, now) : 0;
}
static inline uint32_t tr_events(const struct tr_conn *c)
{
	return c->ops->events(c);
}
static inline int64_t tr_expiry(const struct tr_conn *c)
{
	return c->ops->expiry ? c->ops->expiry(c) : EV_NEVER;
}
static inline int tr_on_expiry(struct tr_conn *c, int64_t now)
{
	return c->ops->on_expiry ? c->ops->on_expiry(c, now) : 0;
}
static inline int tr_shutdown(struct tr_conn *c, int64_t sid, int64_t now)
{
	return c->ops->shutdown(c, sid, now);
}
static inline int tr_fd(const struct tr_conn *c)
{
	return c->fd;
}
static inline unsigned tr_take_notes(struct tr_conn *c)
{
	unsigned n = c->notes;

	c->notes = 0;
	return n;
}
/* Move to a new local address (NULL: same address, new port). 0, or
 * TR_ESTATE when the transport cannot (no TR_F_REBIND), or an error. */
int tr_rebind(struct tr_conn *c, const char *local_addr, int64_t now);
/* Close the connection and free it. NULL is fine. */
void tr_close(struct tr_conn *c);
/* The last error message of c, "no error" if none; never NULL. */
const char *tr_errmsg(const struct tr_conn *c);
/* Fill *out (generic fields, then the transport's extras). */
void tr_get_info(const struct tr_conn *c, struct tr_info *out);
/* Fill *out; fields the transport does not know stay -1. */
void tr_get_stats(const struct tr_conn *c, struct tr_stats *out);

/* What the kernel holds for the socket c has now (tr_fd). */
struct tr_sockopts {
	int sndbuf;  /* SO_SNDBUF as getsockopt reads it (Linux reports
	                twice what was set, and the autotuned size when
	                nothing was); -1 without a socket */
	int rcvbuf;  /* SO_RCVBUF, the same way */
	int nodelay; /* TCP_NODELAY 0 or 1; -1 where the socket has no such
	                option (QUIC's UDP socket) */
};
/* Read them with getsockopt; c may be NULL (everything -1). */
void tr_get_sockopts(const struct tr_conn *c, struct tr_sockopts *out);

/*
 * Server side: listen on ctx's address (ctx made with cfg.server = 1).
 * 0, or TR_EEXIST ("address in use"), TR_ECONFIG, TR_ENOMEM with the
 * message in err.
 */
int tr_listen(struct tr_ctx *ctx, struct tr_listener **out, char *err,
              size_t errlen);
/* The next connection (0 and *out), TR_AGAIN when none is waiting, or an
 * error of the listener itself. The new connection then goes through
 * tr_handshake() like a client's. */
static inline int tr_accept(struct tr_listener *l, int64_t now,
                            struct tr_conn **out)
{
	return l->ops->accept(l, now, out);
}
void tr_listener_close(struct tr_listener *l);

/* ---- helpers for transport implementations (transport.c) ---- */

/* Set c->err to a formatted line (replacing the previous one); returns
 * code, so that `return tr_fail(c, TR_EIO, "...", ...);` reads well. */
int tr_fail(struct tr_conn *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void tr_base_init(struct tr_conn *c, const struct transport_ops *ops,
                  struct tr_ctx *ctx, struct tr_session *sess);
void tr_base_free(struct tr_conn *c);

/*
 * TCP socket steps shared by TCP, TLS (and anything else on TCP):
 * tr_sock_connect() creates a non-blocking socket, applies the options and
 * starts connect(); tr_sock_connected() checks completion (0 connected,
 * TR_AGAIN pending, TR_ECONNECT with the message set).
 * tr_sock_send()/tr_sock_recv() are send()/recv() with TR_* results and
 * hostile I/O applied; they count wire bytes.
 * tr_sock_options() applies cfg's socket options to an accepted socket;
 * tr_sock_listen() binds and listens (one line in err on failure);
 * tr_sock_accept() takes the next TCP connection as a server-side tr_conn
 * of `size` bytes (the implementation's struct) with its fd set.
 * tr_tcp_stats() reads TCP_INFO into *out.
 */
int tr_sock_connect(struct tr_conn *c, int64_t now);
int tr_sock_connected(struct tr_conn *c, int64_t now);
ssize_t tr_sock_send(struct tr_conn *c, const uint8_t *buf, size_t len);
ssize_t tr_sock_recv(struct tr_conn *c, uint8_t *buf, size_t len);
int tr_sock_options(int fd, const struct tr_config *cfg);
int tr_sock_listen(struct tr_ctx *ctx, int type, int *fd, char *err,
                   size_t errlen);
int tr_sock_accept(struct tr_listener *l, const struct transport_ops *ops,
                   size_t size, int64_t now, struct tr_conn **out);
void tr_tcp_stats(const struct tr_conn *c, struct tr_stats *out);
/* A listener of `size` bytes with its fd listening (TCP: SOCK_STREAM). */
int tr_listener_new(struct tr_ctx *ctx, const struct transport_ops *ops,
                    size_t size, int type, struct tr_listener **out,
                    char *err, size_t errlen);
void tr_listener_base_free(struct tr_listener *l);

/* Hostile I/O: 1 if MQB_HOSTILE_IO is set to a non-zero value. */
int tr_hostile(void);
/* Tests: switch hostile I/O on (1) or off (0) and reseed, overriding the
 * environment; -1 makes the next tr_hostile() read the environment again. */
void tr_hostile_set(int on, uint64_t seed);
/* Under hostile I/O: how many of len bytes to try now; 0 = would block. */
size_t tr_hostile_len(size_t len);

#endif /* TRANSPORT_H */
