/*
 * results.c: the client binaries' parts of their JSON documents. See
 * results.h.
 */
#include "app/results.h"

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>

#include "measure/report.h"
#include "app/client.h"
#include "net/transport.h"

json_t *app_report_new(const char *tool)
{
	json_t *doc = report_new(tool);
	const ngtcp2_info *ng = ngtcp2_version(0);

	if (doc == NULL)
		return NULL;
	report_add_version(doc, "gnutls", gnutls_check_version(NULL));
	report_add_version(doc, "ngtcp2", ng ? ng->version_str : NULL);
	return doc;
}

json_t *report_connect(const struct client_connected_info *ci,
                       const struct tr_info *ti)
{
	json_t *o = json_object();

	if (o == NULL)
		return NULL;
	report_set(o, "tcp_us",
	           report_span_us(ci->t_start, ci->t_transport_connected));
	report_set(o, "transport_us",
	           report_span_us(ci->t_start, ci->t_transport_ready));
	report_set(o, "mqtt_us",
	           report_span_us(ci->early ? ci->mqtt->t_connect_queued
	                                     : ci->t_transport_ready,
	                          ci->mqtt->t_connack));
	report_set(o, "total_us", report_span_us(ci->t_start, ci->mqtt->t_connack));
	report_set(o, "session_present", json_boolean(ci->mqtt->session_present));
	report_set(o, "keepalive_s", json_integer(ci->mqtt->keepalive));
	report_set(o, "window", json_integer(ci->mqtt->window));
	report_set(o, "broker_receive_max", json_integer(ci->mqtt->receive_max));
	report_set(o, "broker_max_qos", json_integer(ci->mqtt->max_qos));
	if (ti != NULL && ti->version[0] != '\0') {
		report_set(o, "tls",
		           json_pack("{s:s, s:s, s:b}", "version", ti->version,
		                     "cipher", ti->cipher, "resumed",
		                     ti->resumed));
	}
	return o;
}
