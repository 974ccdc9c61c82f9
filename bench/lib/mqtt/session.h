/*
 * session.h: one MQTT client session (3.1.1 and 5.0) as pure logic.
 *
 * Bytes in, bytes out, next deadline: the session never touches a socket,
 * a loop or a clock. Its owner (mqtt/client.h: a client on a net/conn.h
 * connection; a fuzz target; a test) hands it the broker's bytes with the
 * time they were read (sess_input), takes the bytes it wants to send
 * (sess_pending, then sess_sent for what the transport took), asks when it
 * next has something to do (sess_deadline) and calls sess_on_time then.
 * Every state change of the connection under it is told with a call:
 * sess_connecting (transport starting), sess_start (bytes may flow: CONNECT
 * is queued), sess_eof (the broker ended the stream), sess_closed (the
 * connection is gone).
 *
 * The session calls its owner back (struct sess_handler) from inside
 * sess_input and sess_on_time only: CONNACK accepted, a message, a QoS flow
 * done, SUBACK, UNSUBACK. The owner's callbacks may call any sess_*
 * function; if the owner goes away or gives the connection up inside one,
 * it says so with sess_halt() and the session returns SESS_STOPPED at once.
 *
 * Failures: a call that finds the connection unusable (the broker broke
 * the protocol, refused CONNECT, a timeout) returns a negative CLIENT_E*
 * code and keeps it, with a one-line message (sess_errmsg); the owner then
 * closes the connection and calls sess_closed. Only the first failure of a
 * connection is kept.
 *
 * Memory and buffers: the output buffer holds encoded packets until the
 * owner reports them sent; drained, it is kept only when small (1 KiB),
 * since most connections send small packets. Input is parsed in place from
 * the owner's buffer; only a packet that spans reads is copied, into a
 * buffer of its exact size (allocated once its fixed header is complete,
 * refused over cfg.max_packet_size), which the owner may read into
 * directly (sess_rx_buffer) when what is missing is large. An idle
 * connected session holds neither. The inflight table grows with use,
 * bounded by the window, and is freed when empty.
 *
 * Ownership: the session copies client_id; it references cfg->username,
 * cfg->password and the handler, which must outlive it. Views handed to
 * callbacks (topic, payload, properties, codes) are valid only during the
 * callback; the pointer from sess_pending until the next sess_* call.
 */
#ifndef MQTT_SESSION_H
#define MQTT_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mqtt/codec.h"

/*
 * Each layer's error codes take a range of their own, so a stray code
 * tells where it came from: codec -1xx, transport -2xx, client -3xx,
 * measure -4xx, command line -5xx, link emulator -6xx.
 */
/* Error codes (negative; distinct from TR_* and MQTT_* codes). */
#define CLIENT_EINVAL -301       /* invalid argument (topic, QoS, size) */
#define CLIENT_ENOMEM -302       /* out of memory */
#define CLIENT_ESTATE -303       /* not allowed in this state */
#define CLIENT_EWINDOW -304      /* inflight window full: wait on_writable */
#define CLIENT_EBUSY -305        /* output buffer over max_outbuf: wait */
#define CLIENT_ETOOBIG -306      /* packet over the broker's maximum size */
#define CLIENT_EQOS -307         /* QoS above the broker's Maximum QoS */
#define CLIENT_ECONNECT -308     /* transport could not connect/resolve */
#define CLIENT_ETIMEOUT -309     /* connect, CONNACK or PINGRESP timeout */
#define CLIENT_ETLS -310         /* TLS failure, certificate rejected */
#define CLIENT_EIO -311          /* send/recv failed (reset, ...) */
#define CLIENT_ECLOSED -312      /* broker closed the connection */
#define CLIENT_EREFUSED -313     /* CONNACK refused the connection */
#define CLIENT_EPROTO -314       /* broker sent something invalid */
#define CLIENT_EDISCONNECTED -315 /* broker sent DISCONNECT (v5) */
#define CLIENT_EQUIC -316        /* QUIC failure (peer closed, protocol) */

/* Not errors: what sess_input/sess_on_time/sess_eof may also return. */
#define SESS_STOPPED 1 /* the owner called sess_halt() in a callback */
#define SESS_DONE 2    /* our DISCONNECT went through: close normally */

/* One line naming the code, never NULL. */
const char *client_strerror(int err);
/* Text of a CONNACK/ack/DISCONNECT reason code, e.g. "not authorized".
 * version picks the 3.1.1 CONNACK return codes or the 5.0 reason codes. */
const char *client_reason_str(uint8_t version, uint8_t code);

enum client_state {
	CLIENT_IDLE = 0,      /* created, never connected */
	CLIENT_CONNECTING,    /* transport connect and handshake */
	CLIENT_CONNECT_SENT,  /* CONNECT sent, waiting for CONNACK */
	CLIENT_CONNECTED,     /* CONNACK accepted */
	CLIENT_DISCONNECTING, /* DISCONNECT queued: flush, close_notify, EOF */
	CLIENT_CLOSED,        /* connection gone; may connect again */
};

const char *client_state_name(enum client_state s);

struct client_config {
	uint8_t version;     /* MQTT_V311 (default) or MQTT_V5 */
	const char *client_id; /* copied; "" lets the broker assign one */
	uint16_t keepalive;  /* seconds, 0 disables; default 60 */
	uint8_t clean_start; /* default 1 */
	uint32_t session_expiry; /* v5 seconds; 0: session ends on close */
	const char *username; /* NULL: none (referenced, not copied) */
	const char *password; /* NULL: none; binary-safe with password_len */
	size_t password_len;  /* 0: strlen(password) */
	/* QoS 1/2 publishes awaiting their final ack; capped at the broker's
	 * Receive Maximum (v5). Default 20 (Mosquitto's default). */
	uint16_t inflight_window;
	/* Largest packet we accept from the broker, whole (fixed header
	 * included); v5 advertises it in CONNECT as Maximum Packet Size.
	 * A bigger packet closes the connection with CLIENT_EPROTO as soon as
	 * its header arrives. Default CLIENT_MAX_PACKET_DEFAULT (1 MiB);
	 * 0: the spec's limit (256 MiB), which lets a broker make the client
	 * reserve that much by announcing a length. */
	uint32_t max_packet_size;
	uint16_t receive_max;     /* v5: our Receive Maximum, 0: not sent */
	int64_t connect_timeout_ns; /* connecting to CONNACK; 10 s */
	int64_t ping_timeout_ns;    /* PINGREQ to PINGRESP; 0: keepalive */
	int64_t linger_ns; /* after our DISCONNECT, wait this long for the
	                      broker to close; default 2 s */
	size_t max_outbuf; /* publish says CLIENT_EBUSY above; default 1 MiB */
};

#define CLIENT_MAX_PACKET_DEFAULT (1u << 20)

void client_config_init(struct client_config *cfg);

/*
 * Counters since the session was created, summed over every connection,
 * the current one included; they stay valid after a close of any kind.
 *
 * MQTT level: bytes_in/bytes_out are MQTT packets (counted when parsed,
 * and when queued for sending), not TLS records or QUIC packets. Queued
 * bytes that a connection never handed to its transport before it closed
 * are also counted in bytes_unsent, so bytes_out - bytes_unsent were
 * written. pub_written counts PUBLISH packets (first sends, not resends)
 * whose last byte the transport took. Wire level (filled in by the
 * client, not the session): wire_in/wire_out are the bytes through the
 * transport's socket (TCP payload; with TLS whole records including the
 * handshake and alerts; QUIC UDP payloads).
 */
struct client_stats {
	uint64_t bytes_in, bytes_out;
	uint64_t bytes_unsent;     /* queued, then dropped by a close */
	uint64_t wire_in, wire_out; /* bytes through the transport's socket */
	uint64_t pkts_in, pkts_out;
	uint32_t in_by_type[16], out_by_type[16]; /* index: enum mqtt_type
	                                             (32 bits: kept small for
	                                             10,000 clients) */
	uint64_t msgs_in;          /* messages delivered to on_message */
	uint64_t dup_qos2_in;      /* QoS 2 duplicates not delivered again */
	uint64_t pub_out[3];       /* publishes queued, by QoS */
	uint64_t pub_written;      /* publishes the transport took whole */
	uint64_t pub_done;         /* QoS 1/2 flows completed */
	uint64_t resent;           /* packets resent after reconnect */
	uint64_t dropped;          /* inflight lost with a non-present session */
	uint64_t pings;            /* PINGREQ sent */
	uint64_t connects;         /* CONNACK accepted */
};

/* What the CONNACK settled, handed to on_connack. */
struct sess_connack_info {
	uint8_t session_present;
	uint8_t max_qos;          /* broker's Maximum QoS (2 if unsaid) */
	uint16_t receive_max;     /* broker's Receive Maximum (65535) */
	uint16_t keepalive;       /* in effect (v5 server may override) */
	uint16_t window;          /* inflight window in effect */
	uint32_t max_packet_size; /* broker's limit, 0 if unsaid */
	uint32_t resent;          /* unacked QoS 1/2 packets resent */
	uint32_t dropped;         /* inflight dropped: session not present */
	int64_t t_connect_queued; /* when CONNECT was queued (sess_start) */
	int64_t t_connack;        /* the read that brought CONNACK */
	const struct mqtt_connack *connack; /* decoded CONNACK */
};

/* The owner's callbacks; `owner` is the pointer given to sess_new. */
struct sess_handler {
	void (*on_connack)(void *owner, const struct sess_connack_info *info);
	/* A PUBLISH from the broker, once per QoS 2 message. now: the time
	 * the bytes were read, refreshed after every callback. */
	void (*on_message)(void *owner, const struct mqtt_publish *msg,
	                   int64_t now);
	/* A QoS 1 PUBACK, QoS 2 PUBCOMP, or a v5 PUBREC with a failure
	 * reason (>= 0x80) that ends the flow. t_sent: the now given to
	 * sess_publish; now: the time the ack was read, never before
	 * t_sent. */
	void (*on_publish_done)(void *owner, uint16_t packet_id, uint8_t qos,
	                        uint8_t reason, int64_t t_sent, int64_t now);
	void (*on_subscribed)(void *owner, uint16_t packet_id,
	                      const uint8_t *codes, size_t n);
	void (*on_unsubscribed)(void *owner, uint16_t packet_id,
	                        const uint8_t *codes, size_t n);
	/* Optional: the time of now, read again after a callback (the
	 * session has no clock of its own). NULL: keep the read's time. */
	int64_t (*clock)(void *owner);
};

struct mqtt_session;

/* NULL when out of memory or cfg is invalid (version, client id). */
struct mqtt_session *sess_new(const struct client_config *cfg,
                              const struct sess_handler *h, void *owner);
void sess_del(struct mqtt_session *s);
/* The same in memory of the owner's (sess_size() bytes, aligned as
 * malloc's): sess_init returns 0, or -1 (out of memory, invalid cfg) with
 * nothing to undo; sess_fini frees what the session holds, not s. */
size_t sess_size(void);
int sess_init(struct mqtt_session *s, const struct client_config *cfg,
              const struct sess_handler *h, void *owner);
void sess_fini(struct mqtt_session *s);
/* The broker's name for messages ("127.0.0.1:1883"); referenced. */
void sess_set_peer(struct mqtt_session *s, const char *name);

/* ---- the connection under the session ---- */

/* A transport connection starts (IDLE or CLOSED only): 0 or ESTATE. */
int sess_connecting(struct mqtt_session *s, int64_t now);
/* Bytes may flow (handshake done, or early data allowed): queue CONNECT.
 * 0 or a failure. */
int sess_start(struct mqtt_session *s, int64_t now);
/* The broker's bytes, read at now. 0, SESS_STOPPED, or a failure. */
int sess_input(struct mqtt_session *s, const uint8_t *buf, size_t len,
               int64_t now);
/* Where to read the rest of a large packet that spans reads directly
 * (then hand that pointer to sess_input), or NULL. */
uint8_t *sess_rx_buffer(struct mqtt_session *s, size_t *cap);
/* Bytes to send now, and how many; 0 when none. */
size_t sess_pending(struct mqtt_session *s, const uint8_t **data);
/* The transport took n of the pending bytes. */
void sess_sent(struct mqtt_session *s, size_t n);
/* The next time sess_on_time has something to do; EV_NEVER (INT64_MAX)
 * when nothing. */
int64_t sess_deadline(const struct mqtt_session *s);
/* Timeouts and keepalive at now: 0, SESS_DONE (the linger after our
 * DISCONNECT is over), or a failure. */
int sess_on_time(struct mqtt_session *s, int64_t now);
/* The broker ended the stream: SESS_DONE after our DISCONNECT, else the
 * failure CLIENT_ECLOSED with its message. */
int sess_eof(struct mqtt_session *s);
/* The connection is gone (any reason): drop its state, keep a persistent
 * session's flows, state CLOSED. */
void sess_closed(struct mqtt_session *s);
/* The owner left inside a callback: stop handling input. Cleared by the
 * next sess_connecting. */
void sess_halt(struct mqtt_session *s);
/* Record a failure found by the owner (e.g. the transport's), unless one
 * is kept already; returns the code kept. */
int sess_fail(struct mqtt_session *s, int err, const char *msg);

/* ---- what the application does ---- */

/*
 * Queue a PUBLISH. now: its send time (for on_publish_done). Returns the
 * packet id (> 0) for QoS 1/2, 0 for QoS 0, or CLIENT_ESTATE (not
 * connected), CLIENT_EWINDOW (QoS 1/2 window full), CLIENT_EBUSY (output
 * buffer full), CLIENT_ETOOBIG, CLIENT_EQOS, CLIENT_EINVAL, CLIENT_ENOMEM;
 * nothing is queued or counted when it fails.
 */
int sess_publish(struct mqtt_session *s, const uint8_t *topic,
                 size_t topic_len, const uint8_t *payload, size_t payload_len,
                 uint8_t qos, uint8_t retain, const struct mqtt_props *props,
                 int64_t now);
/* 1 if sess_publish(qos) would not fail with ESTATE/EWINDOW/EBUSY now;
 * when 0 for EWINDOW/EBUSY the session owes a "writable" (see below). */
int sess_can_publish(struct mqtt_session *s, uint8_t qos);
int sess_subscribe(struct mqtt_session *s,
                   const struct mqtt_topic_filter *filters, size_t n,
                   const struct mqtt_props *props, int64_t now);
int sess_unsubscribe(struct mqtt_session *s,
                     const struct mqtt_topic_filter *filters, size_t n,
                     const struct mqtt_props *props, int64_t now);
/* Queue DISCONNECT (CONNECTED only), state DISCONNECTING: the owner ends
 * the stream once it is sent, then waits for the broker's EOF until the
 * linger deadline. 0 or CLIENT_ESTATE. */
int sess_disconnect(struct mqtt_session *s, uint8_t reason, int64_t now);
/* 1 once, after publish said EWINDOW/EBUSY, when there is room again. */
int sess_take_writable(struct mqtt_session *s);

enum client_state sess_state(const struct mqtt_session *s);
/* When the current (or last) connection began (sess_connecting's now). */
int64_t sess_t_start(const struct mqtt_session *s);
int sess_failed(const struct mqtt_session *s);
/* The kept failure's message, "" when none. */
const char *sess_errmsg(const struct mqtt_session *s);
/* The counters; the owner may fill in wire_in and wire_out. */
struct client_stats *sess_stats(struct mqtt_session *s);
unsigned sess_inflight(const struct mqtt_session *s);
unsigned sess_window(const struct mqtt_session *s);
uint8_t sess_version(const struct mqtt_session *s);
/* Bytes of heap the session holds now (buffers, tables, the struct). */
size_t sess_heap_bytes(const struct mqtt_session *s);

#endif /* MQTT_SESSION_H */
