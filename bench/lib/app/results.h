/*
 * results.h: what the MQTT client binaries add to the JSON documents of
 * measure/report.h: the versions of the libraries they link, and how one
 * connection came up.
 */
#ifndef APP_RESULTS_H
#define APP_RESULTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct client_connected_info;
struct tr_info;

/* report_new(tool) with the versions of GnuTLS and ngtcp2 added. */
json_t *app_report_new(const char *tool);

/*
 * How one connection came up: "tcp_us" (TCP connect), "transport_us" (TCP
 * plus TLS handshake), "mqtt_us" (CONNECT to CONNACK), "total_us", what was
 * negotiated (TLS version and cipher, MQTT window, keepalive). ti may be
 * NULL.
 */
json_t *report_connect(const struct client_connected_info *ci,
                       const struct tr_info *ti);

/*
 * The send path's settings as the kernel holds them, over many connections:
 * SO_SNDBUF and SO_RCVBUF (min and max), TCP_NODELAY (1 or 0 when every
 * connection agrees, -1 when unknown (QUIC's UDP socket) or mixed). Add a
 * connection with sockopts_seen_add() when it connects and before it
 * closes (TCP autotuning grows the buffers meanwhile).
 */
struct sockopts_seen {
	uint32_t n;
	int sndbuf_min, sndbuf_max, rcvbuf_min, rcvbuf_max;
	int nodelay;
};
struct tr_conn;
struct tr_config;

void sockopts_seen_add(struct sockopts_seen *s, const struct tr_conn *tc);

/*
 * The "socket" object of a client's document: the output-buffer limit of
 * the MQTT engine (client_config.max_outbuf: above it a publish waits),
 * what was asked of the kernel (cfg: SO_SNDBUF/SO_RCVBUF, 0 for its
 * default; TCP_NODELAY), what it held at connect and at close, and the
 * sysctls that size its buffers when nothing was asked (read from
 * /proc/sys in the process's network namespace).
 */
json_t *report_socket(size_t max_outbuf, const struct tr_config *cfg,
                      const struct sockopts_seen *at_connect,
                      const struct sockopts_seen *at_close);

#endif /* APP_RESULTS_H */
