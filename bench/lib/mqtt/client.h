/*
 * client.h: the MQTT client engine (3.1.1 and 5.0) on any transport.
 *
 * One struct client is one MQTT client: a state machine over one transport
 * connection at a time, driven by an evloop (no threads; thousands of
 * clients share one loop). The engine owns its transport connection, its
 * buffers and its timer; the application sees callbacks.
 *
 *   client_new -> client_connect -> [transport connect, handshake]
 *     -> CONNECT sent -> CONNACK -> on_connected -> publish/subscribe ...
 *     -> client_disconnect -> DISCONNECT flushed -> close -> on_closed(0)
 *   Any failure on the way ends in on_closed(err, "one line").
 *   After on_closed the client may connect again (same session objects:
 *   TLS session resumption, and the MQTT session if it is persistent).
 *
 * Memory: an idle connected client holds no input buffer, and an output
 * buffer only when it is small (up to 1 KiB is kept when it drains, to save
 * an allocation per packet sent; bigger ones are freed). Every read goes
 * into one per-thread 64 KiB buffer and whole packets are parsed in place,
 * so one read brings as many packets as are waiting; only a packet that
 * spans reads is copied to a buffer of its exact size, freed once it is
 * handled. Incoming packets are limited to cfg.max_packet_size (1 MiB by
 * default), so a broker's claimed length cannot make the client reserve
 * more. Inflight tracking grows with use, bounded by the window, and is
 * freed when empty.
 *
 * Re-entrancy: callbacks may call any client function on any client,
 * including client_free() and client_connect() on the client being called
 * back; the engine notices and stops touching it. The public calls below
 * never run a callback themselves: a failure they meet (a send error, say)
 * is reported through on_closed from the loop, on its next round.
 *
 * Ownership: the engine copies client_id; it references cfg->username,
 * cfg->password, the callbacks table and the transport context, which must
 * outlive the client. Views handed to callbacks (message topic, payload,
 * properties, codes) are valid only during the callback.
 */
#ifndef CLIENT_H
#define CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "net/evloop.h"
#include "mqtt/codec.h"
#include "net/transport.h"

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
	int64_t connect_timeout_ns; /* client_connect() to CONNACK; 10 s */
	int64_t ping_timeout_ns;    /* PINGREQ to PINGRESP; 0: keepalive */
	int64_t linger_ns; /* after our DISCONNECT, wait this long for the
	                      broker to close; default 2 s */
	size_t max_outbuf; /* publish says CLIENT_EBUSY above; default 1 MiB */
};

#define CLIENT_MAX_PACKET_DEFAULT (1u << 20)

void client_config_init(struct client_config *cfg);

/* Handed to on_connected; valid during the callback. */
struct client_connected_info {
	int64_t t_start;             /* client_connect() was called */
	int64_t t_transport_connected; /* TCP connect completed */
	int64_t t_transport_ready;   /* TCP connected / TLS handshake done */
	int64_t t_connack;           /* CONNACK parsed */
	uint8_t session_present;
	uint8_t max_qos;             /* broker's Maximum QoS (2 if unsaid) */
	uint16_t receive_max;        /* broker's Receive Maximum (65535) */
	uint16_t keepalive;          /* in effect (v5 server may override) */
	uint16_t window;             /* inflight window in effect */
	uint32_t max_packet_size;    /* broker's limit, 0 if unsaid */
	uint32_t resent;             /* unacked QoS 1/2 packets resent */
	uint32_t dropped;            /* inflight dropped: session not present */
	int tls_resumed;             /* transport resumed its session */
	const struct mqtt_connack *connack; /* decoded CONNACK */
};

struct client;

struct client_callbacks {
	void (*on_connected)(struct client *c,
	                     const struct client_connected_info *info);
	/* A PUBLISH from the broker, delivered once per QoS 2 message.
	 * A v5 PUBLISH never carries a Topic Alias: we allow none, and one
	 * that does closes the connection with CLIENT_EPROTO.
	 * now_ns: CLOCK_MONOTONIC when the bytes were read (refreshed after
	 * every callback, see on_publish_done). */
	void (*on_message)(struct client *c, const struct mqtt_publish *msg,
	                   int64_t now_ns);
	/* QoS 1 PUBACK or QoS 2 PUBCOMP (or a v5 PUBREC with a failure
	 * reason >= 0x80, which ends the flow: no PUBREL follows it).
	 * t_sent_ns: evloop_clock_ns() when client_publish() was called;
	 * now_ns: when the ack was read, from the same clock, and never
	 * before t_sent_ns: the receive time is read again after every
	 * callback, so an ack parsed from the same read as the packet whose
	 * callback published does not look older than that publish. */
	void (*on_publish_done)(struct client *c, uint16_t packet_id,
	                        uint8_t qos, uint8_t reason, int64_t t_sent_ns,
	                        int64_t now_ns);
	/* SUBACK: one code per filter (granted QoS 0-2, or >= 0x80 failed). */
	void (*on_subscribed)(struct client *c, uint16_t packet_id,
	                      const uint8_t *codes, size_t n);
	void (*on_unsubscribed)(struct client *c, uint16_t packet_id,
	                        const uint8_t *codes, size_t n);
	/* After CLIENT_EWINDOW or CLIENT_EBUSY: there is room again. */
	void (*on_writable)(struct client *c);
	/* The connection is gone. err 0: our own disconnect completed.
	 * msg: one line with context, e.g. "connect to 127.0.0.1:1884:
	 * Connection refused" or "MQTT connect to 127.0.0.1:1884 refused:
	 * not authorized (0x87)". */
	void (*on_closed)(struct client *c, int err, const char *msg);
};

/*
 * Counters since client_new(), summed over every connection, the current
 * one included. They stay valid after a close of any kind: in on_closed
 * (graceful, lost, refused, timed out, protocol error) they already count
 * everything that connection moved, our DISCONNECT and the TLS close_notify
 * included. So the final counts of a client are client_stats(c) read in
 * on_closed, or at any later time.
 *
 * MQTT level: bytes_in/bytes_out are MQTT packets (counted when parsed, and
 * when queued for sending), not TLS records or QUIC packets. Queued bytes
 * that a connection never handed to its transport before it closed are
 * also counted in bytes_unsent, so bytes_out - bytes_unsent were written.
 * Wire level: wire_in/wire_out are the bytes through the socket (TCP
 * payload; with TLS, whole records including the handshake and alerts).
 */
struct client_stats {
	uint64_t bytes_in, bytes_out;
	uint64_t bytes_unsent;     /* queued, then dropped by a close */
	uint64_t wire_in, wire_out; /* bytes through the transport's socket */
	uint64_t pkts_in, pkts_out;
	uint64_t in_by_type[16], out_by_type[16]; /* index: enum mqtt_type */
	uint64_t msgs_in;          /* messages delivered to on_message */
	uint64_t dup_qos2_in;      /* QoS 2 duplicates not delivered again */
	uint64_t pub_out[3];       /* publishes sent, by QoS */
	uint64_t pub_done;         /* QoS 1/2 flows completed */
	uint64_t resent;           /* packets resent after reconnect */
	uint64_t dropped;          /* inflight lost with a non-present session */
	uint64_t pings;            /* PINGREQ sent */
	uint64_t connects;         /* CONNACK accepted */
};

/*
 * Create a client on `loop` using transport context `tr` (shared by many
 * clients). cbs must outlive the client. Returns NULL when out of memory or
 * when cfg is invalid (version not 4/5, client id not UTF-8).
 */
struct client *client_new(struct evloop *loop, struct tr_ctx *tr,
                          const struct client_config *cfg,
                          const struct client_callbacks *cbs, void *user);
/* Close abruptly (no DISCONNECT, no callbacks) and free. NULL is fine. */
void client_free(struct client *c);

void *client_user(const struct client *c);
void client_set_user(struct client *c, void *user);

/*
 * Start connecting (IDLE or CLOSED only). Returns 0 or CLIENT_ESTATE /
 * CLIENT_ENOMEM. Every failure after that, even an immediate one, arrives
 * through on_closed, never from inside this call.
 */
int client_connect(struct client *c);

/*
 * Queue a PUBLISH and try to send it at once. topic must be a valid topic
 * name; props (v5 only, may be NULL) are encoded as given. Returns the
 * packet id (> 0) for QoS 1/2, 0 for QoS 0, or CLIENT_ESTATE (not
 * connected), CLIENT_EWINDOW (QoS 1/2 window full), CLIENT_EBUSY (output
 * buffer full), CLIENT_ETOOBIG, CLIENT_EQOS, CLIENT_EINVAL, CLIENT_ENOMEM.
 * After EWINDOW/EBUSY, on_writable is called once there is room.
 */
int client_publish(struct client *c, const uint8_t *topic, size_t topic_len,
                   const uint8_t *payload, size_t payload_len, uint8_t qos,
                   uint8_t retain, const struct mqtt_props *props);

/* 1 if client_publish(qos) would not fail with ESTATE/EWINDOW/EBUSY now;
 * when it returns 0 for EWINDOW/EBUSY, on_writable will follow. */
int client_can_publish(struct client *c, uint8_t qos);

/*
 * SUBSCRIBE to n filters (each with its options). Returns the packet id, or
 * a negative code as for publish. on_subscribed reports the SUBACK.
 */
int client_subscribe(struct client *c, const struct mqtt_topic_filter *filters,
                     size_t n, const struct mqtt_props *props);
int client_unsubscribe(struct client *c,
                       const struct mqtt_topic_filter *filters, size_t n,
                       const struct mqtt_props *props);

/*
 * Graceful close: queue DISCONNECT (v5: with `reason`, normally 0), flush,
 * end the transport (TLS close_notify), wait up to linger for the broker's
 * EOF, close, then on_closed(c, 0, "disconnected"). If not connected yet,
 * the connection attempt is abandoned and on_closed(0) follows as well.
 * Returns 0, or CLIENT_ESTATE when idle/closed/already disconnecting.
 */
int client_disconnect(struct client *c, uint8_t reason);

enum client_state client_state(const struct client *c);
/* The counters above, brought up to date with the current connection's
 * wire bytes. The pointer stays valid until client_free(); the values are
 * refreshed by the next call. */
const struct client_stats *client_stats(struct client *c);
/* QoS 1/2 publishes in flight, and the window in effect. */
unsigned client_inflight(const struct client *c);
unsigned client_window(const struct client *c);
/* The current transport connection (NULL when none), e.g. for tr_get_info.
 * Do not keep it: it goes away when the connection closes. */
struct tr_conn *client_transport(const struct client *c);
/* The message of the last on_closed with an error, "" if none. */
const char *client_last_error(const struct client *c);
/* Bytes of heap this client holds now (buffers, tables), for memory
 * accounting in tests and results; excludes the transport's library state. */
size_t client_heap_bytes(const struct client *c);

#endif /* CLIENT_H */
