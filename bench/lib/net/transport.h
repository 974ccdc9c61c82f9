/*
 * transport.h: byte-stream transports under the MQTT client engine.
 *
 * A transport is a constant table of functions (struct transport_ops): TCP
 * (tr_tcp_ops), TLS over TCP with GnuTLS (tr_tls_ops), and later QUIC. Shared
 * code calls through the table and never asks which transport it has.
 *
 * Three objects:
 *   struct tr_ctx      shared by every connection to one broker: the resolved
 *                      address, the configuration with defaults filled in,
 *                      and the transport's shared state (TLS credentials and
 *                      priorities, loaded once for 10,000 connections).
 *   struct tr_conn     one connection. Every implementation embeds it as the
 *                      first member of its own struct.
 *   struct tr_session  resumption state of one client across its connections
 *                      (TLS session ticket; QUIC can keep its ticket and
 *                      transport parameters here too). Owned by the caller.
 *
 * Non-blocking life cycle of a connection, driven by the caller's loop:
 *   tr_open()        creates the socket and starts connecting; never blocks.
 *   tr_handshake()   call when the fd shows the events tr_events() asked for
 *                    (and once right after tr_open): 0 when the transport is
 *                    ready for application bytes, TR_AGAIN to wait, or an
 *                    error. TCP: connect finished. TLS: handshake finished.
 *   tr_send/tr_recv  bytes (> 0), TR_AGAIN (would block: wait for the events
 *                    tr_events() returns), TR_EOF (recv only: peer closed), or
 *                    another negative TR_E* code. They never return 0 for a
 *                    non-empty buffer.
 *   tr_events()      EV_READ/EV_WRITE the transport wants now. Ask again after
 *                    every call into the transport.
 *   tr_expiry()      absolute time (ns) of the transport's own next deadline,
 *                    EV_NEVER if none (TCP/TLS: the connect timeout while
 *                    connecting; QUIC: loss recovery, idle timeout). When it
 *                    passes, call tr_on_expiry(), which returns 0 or an error.
 *   tr_shutdown()    graceful end of the sending direction: TLS close_notify,
 *                    then shutdown(SHUT_WR). 0 when done, TR_AGAIN to call
 *                    again when tr_events() are ready. Reading may go on
 *                    until TR_EOF.
 *   tr_close()       closes the fd and frees the connection.
 *
 * A QUIC transport fits the same shape: its fd is a UDP socket, recv() feeds
 * datagrams to the QUIC stack and returns stream bytes, send() writes stream
 * bytes, and its timers come out through expiry()/on_expiry(). Callers must
 * therefore keep calling tr_recv() until it returns TR_AGAIN (buffered data
 * does not always make the fd readable), and retry pending sends after a recv
 * (an ACK may open the window).
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
#define TR_ERESOLVE -210 /* host name could not be resolved */
#define TR_EQUIC -211    /* QUIC failure (reserved for the QUIC transport) */
#define TR_ESTATE -212   /* call not allowed in the connection's state */

/* One line naming the code, never NULL. */
const char *tr_strerror(int err);

enum tr_tls_version {
	TR_TLS_1_3 = 13, /* default */
	TR_TLS_1_2 = 12,
};

/*
 * Configuration. Fill with tr_config_init() (defaults), then set fields.
 * Strings are copied by tr_ctx_new(); the caller's may go away afterwards.
 */
struct tr_config {
	const char *host; /* broker name or address (IPv4 or IPv6 literal) */
	uint16_t port;
	const char *local_addr;     /* optional: bind to this address first */
	int64_t connect_timeout_ns; /* transport connect+handshake; default 10 s */
	int nodelay;                /* TCP_NODELAY, default 1 (on) */
	int sndbuf, rcvbuf;         /* SO_SNDBUF/SO_RCVBUF, 0: kernel default */

	/* TLS (and QUIC's TLS); ignored by TCP. */
	const char *cafile;      /* PEM bundle of trusted CAs; NULL: system */
	const char *server_name; /* name or IP to verify; NULL: host */
	int tls_version;         /* TR_TLS_1_3 (default) or TR_TLS_1_2 */
	const char *priority;    /* GnuTLS priority string overriding the above */
	const char *certfile;    /* optional client certificate (PEM) */
	const char *keyfile;     /* its key (PEM); required with certfile */
	const char *alpn;        /* optional ALPN protocol ("mqtt" for QUIC) */
	int no_resume;           /* 1: do not resume sessions */
	int insecure;            /* 1: skip certificate verification (never
	                            the default; for experiments only) */
};

void tr_config_init(struct tr_config *cfg);

struct transport_ops;
struct tr_session;

/* Shared per broker and transport. Read-only for callers. */
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
	int fd;                  /* the fd to watch, -1 when none */
	/* Timestamps, CLOCK_MONOTONIC ns. t_start is the `now` given to
	 * tr_open(): the caller's time just before it, so socket creation
	 * and options count as connecting. t_connected and t_ready are read
	 * from the clock (not taken from `now` arguments) in the call that
	 * finds the step done: tr_handshake(), which the caller's loop runs
	 * when the socket becomes writable (TCP) or readable (handshake
	 * records). They include our own processing (key exchange,
	 * certificate checks) and are late by the loop's reaction time. */
	int64_t t_start;         /* the caller's time before tr_open() */
	int64_t t_connected;     /* TCP connect seen done (QUIC: first reply) */
	int64_t t_ready;         /* handshake done, 0 until then */
	/* Bytes through the socket (with TLS: whole records, handshake and
	 * alerts included), counted as send()/recv() move them. */
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
	char version[16];       /* "TLS1.3", "" for TCP */
	char cipher[48];        /* "AES-128-GCM", "" for TCP */
	char alpn[16];          /* negotiated ALPN, "" if none */
	uint16_t local_port;
};

struct transport_ops {
	const char *name; /* "tcp", "tls", "quic" */
	/* Set up ctx->impl from ctx->cfg; message into err on failure. */
	int (*ctx_init)(struct tr_ctx *ctx, char *err, size_t errlen);
	void (*ctx_free)(struct tr_ctx *ctx);
	/* Create a connection and start connecting. Only TR_ENOMEM fails
	 * here; socket and connect errors are kept and returned by the first
	 * handshake() so that callers have one error path. */
	int (*open)(struct tr_ctx *ctx, struct tr_session *sess, int64_t now,
	            struct tr_conn **out);
	int (*handshake)(struct tr_conn *c, int64_t now);
	ssize_t (*send)(struct tr_conn *c, const uint8_t *buf, size_t len,
	                int64_t now);
	ssize_t (*recv)(struct tr_conn *c, uint8_t *buf, size_t len,
	                int64_t now);
	uint32_t (*events)(const struct tr_conn *c);
	int64_t (*expiry)(const struct tr_conn *c);       /* NULL: none */
	int (*on_expiry)(struct tr_conn *c, int64_t now); /* NULL: none */
	int (*shutdown)(struct tr_conn *c, int64_t now);
	void (*info)(const struct tr_conn *c, struct tr_info *out); /* extras */
	void (*free)(struct tr_conn *c); /* close fd, free everything */
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
static inline ssize_t tr_send(struct tr_conn *c, const uint8_t *buf,
                              size_t len, int64_t now)
{
	return c->ops->send(c, buf, len, now);
}
static inline ssize_t tr_recv(struct tr_conn *c, uint8_t *buf, size_t len,
                              int64_t now)
{
	return c->ops->recv(c, buf, len, now);
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
static inline int tr_shutdown(struct tr_conn *c, int64_t now)
{
	return c->ops->shutdown(c, now);
}
static inline int tr_fd(const struct tr_conn *c)
{
	return c->fd;
}
/* Close the connection and free it. NULL is fine. */
void tr_close(struct tr_conn *c);
/* The last error message of c, "no error" if none; never NULL. */
const char *tr_errmsg(const struct tr_conn *c);
/* Fill *out (generic fields, then the transport's extras). */
void tr_get_info(const struct tr_conn *c, struct tr_info *out);

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
 */
int tr_sock_connect(struct tr_conn *c, int64_t now);
int tr_sock_connected(struct tr_conn *c, int64_t now);
ssize_t tr_sock_send(struct tr_conn *c, const uint8_t *buf, size_t len);
ssize_t tr_sock_recv(struct tr_conn *c, uint8_t *buf, size_t len);

/* Hostile I/O: 1 if MQB_HOSTILE_IO is set to a non-zero value. */
int tr_hostile(void);
/* Tests: switch hostile I/O on (1) or off (0) and reseed, overriding the
 * environment; -1 makes the next tr_hostile() read the environment again. */
void tr_hostile_set(int on, uint64_t seed);
/* Under hostile I/O: how many of len bytes to try now; 0 = would block. */
size_t tr_hostile_len(size_t len);

#endif /* TRANSPORT_H */
