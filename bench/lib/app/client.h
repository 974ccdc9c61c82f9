/*
 * client.h: an MQTT client (3.1.1 and 5.0) on any transport: an MQTT
 * session (mqtt/session.h, the protocol as pure logic) carried by a
 * connection (net/conn.h, the transport on the event loop).
 *
 * One struct client is one MQTT client, driven by an evloop (no threads;
 * thousands of clients share one loop); the application sees callbacks.
 *
 *   client_new -> client_connect -> [transport connect, handshake]
 *     -> CONNECT sent -> CONNACK -> on_connected -> publish/subscribe ...
 *     -> client_disconnect -> DISCONNECT flushed -> close -> on_closed(0)
 *   Any failure on the way ends in on_closed(err, "one line").
 *   After on_closed the client may connect again (same session objects:
 *   TLS/QUIC session resumption, and the MQTT session if persistent).
 *
 * Connections: client_connect() opens a connection of the client's own,
 * which it closes when the MQTT connection ends. client_connect_on() puts
 * the client on a connection the application made (conn_new) and keeps
 * open: on a transport with several streams (QUIC) several clients share
 * one connection, each on a stream of its own; the application opens it
 * (conn_open) and frees it after the last client left.
 *
 * Early data: on a resumed QUIC connection that allows 0-RTT, CONNECT
 * leaves as early data (publishing waits for CONNACK, so nothing else
 * does). If the server rejects it, the transport sends those bytes again
 * in 1-RTT; the client only records the outcome (client_early()).
 *
 * Memory: an idle connected client holds its session (no input buffer, an
 * output buffer only when it is small) and, with its own connection, that
 * connection (conn_heap_bytes) and the transport's state. See session.h.
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

#include "mqtt/codec.h"
#include "mqtt/session.h"
#include "net/conn.h"
#include "net/evloop.h"
#include "net/transport.h"

/* Handed to on_connected; valid during the callback. */
struct client_connected_info {
	int64_t t_start;             /* client_connect() was called */
	int64_t t_transport_connected; /* TCP connect completed (QUIC: the
	                                  first packet from the server) */
	int64_t t_transport_ready;   /* TCP connected / TLS or QUIC
	                                handshake done */
	int tls_resumed;             /* transport resumed its session */
	int early;                   /* CONNECT went as early data (0-RTT;
	                                outcome in client_early()) */
	/* What CONNACK settled (window, session present, resent and
	 * dropped flows, ...), when CONNECT was queued and CONNACK read. */
	const struct sess_connack_info *mqtt;
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
 * Start connecting (IDLE or CLOSED only) on a connection of the client's
 * own. Returns 0 or CLIENT_ESTATE / CLIENT_ENOMEM. Every failure after
 * that, even an immediate one, arrives through on_closed, never from
 * inside this call.
 */
int client_connect(struct client *c);
/*
 * The same on the application's connection `conn` (made with the same
 * transport context), as one more stream of it; the application opens it
 * (conn_open, before or after) and frees it after the client closed.
 * CLIENT_ESTATE also when conn takes no more streams (TCP and TLS carry
 * one) or has failed.
 */
int client_connect_on(struct client *c, struct conn *conn);

/*
 * Move to a new connection, as a device whose address changed: the
 * current connection (the client's own, connected) is dropped as it is,
 * with no DISCONNECT, no TLS close_notify and no wait (the kernel closes
 * the socket; what it still held may yet reach the broker), and a new one
 * is opened on ctx (NULL: the client's context; another context to the
 * same broker, e.g. one bound to another local address). A new socket
 * has a new local port. The TLS or QUIC session resumes when a ticket is
 * kept. The MQTT session goes on: connected with clean start off (the
 * config's clean_start 0, and a session expiry for v5), the broker keeps
 * it, and after the new CONNACK the unacknowledged QoS 1/2 PUBLISH are
 * sent again with DUP set (struct sess_connack_info: resent, dropped);
 * queued bytes the old connection never wrote are lost (QoS 0) or resent.
 * Carried out on the next loop round (from the connection's timer), so
 * it may be called from any callback; publishing says CLIENT_ESTATE
 * until the new CONNACK. No on_closed for the old connection:
 * on_connected follows the new CONNACK, or on_closed the new connection's
 * failure. 0, or CLIENT_ESTATE when not connected, on a shared
 * connection (client_connect_on), or with a move already under way.
 */
int client_reconnect(struct client *c, struct tr_ctx *ctx);

/*
 * Queue a PUBLISH and try to send it at once. topic must be a valid topic
 * name; props (v5 only, may be NULL) are encoded as given. Returns the
 * packet id (> 0) for QoS 1/2, 0 for QoS 0, or CLIENT_ESTATE (not
 * connected), CLIENT_EWINDOW (QoS 1/2 window full), CLIENT_EBUSY (output
 * buffer full), CLIENT_ETOOBIG, CLIENT_EQOS, CLIENT_EINVAL, CLIENT_ENOMEM;
 * a failed publish changes no counter. After EWINDOW/EBUSY, on_writable is
 * called once there is room.
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
 * end the stream (TLS close_notify, QUIC FIN), wait up to linger for the
 * broker's EOF, close, then on_closed(c, 0, "disconnected"). If not
 * connected yet, the connection attempt is abandoned and on_closed(0)
 * follows as well. Returns 0, or CLIENT_ESTATE when idle/closed/already
 * disconnecting.
 */
int client_disconnect(struct client *c, uint8_t reason);

enum client_state client_state(const struct client *c);
/* The session's counters, with the wire bytes of the client's own
 * connections (a shared connection's are its own: conn_transport). The
 * pointer stays valid until client_free(); the values are refreshed by
 * the next call. */
const struct client_stats *client_stats(struct client *c);
/* QoS 1/2 publishes in flight, and the window in effect. */
unsigned client_inflight(const struct client *c);
unsigned client_window(const struct client *c);
/* The current connection (NULL when none), its transport connection
 * (NULL when none), e.g. for tr_get_info and tr_get_stats. Do not keep
 * them: an own connection goes away when the MQTT connection closes. */
struct conn *client_conn(const struct client *c);
struct tr_conn *client_transport(const struct client *c);
/* The client's resumption state (TLS/QUIC session ticket, and what QUIC's
 * 0-RTT needs), kept across its connections; the caller may fill it from
 * an earlier process and read it back (tr_session_data/_store). NULL for
 * a transport without resumption (TCP). */
struct tr_session *client_tr_session(const struct client *c);
/* 0-RTT outcome of the current or last connection: 0 not tried, 1
 * accepted, -1 rejected (CONNECT resent in 1-RTT). */
int client_early(const struct client *c);
/* The message of the last on_closed with an error, "" if none. */
const char *client_last_error(const struct client *c);
/* Bytes of heap this client holds now: its struct and its session's
 * buffers and tables; not the connection (conn_heap_bytes) and not the
 * transport library's state. */
size_t client_heap_bytes(const struct client *c);

#endif /* CLIENT_H */
