/*
 * results.h: what the MQTT client binaries add to the JSON documents of
 * measure/report.h: the versions of the libraries they link, and how one
 * connection came up.
 */
#ifndef APP_RESULTS_H
#define APP_RESULTS_H

#include <jansson.h>

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

#endif /* APP_RESULTS_H */
