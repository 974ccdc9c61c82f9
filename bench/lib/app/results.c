/*
 * results.c: the client binaries' parts of their JSON documents. See
 * results.h.
 */
#include "app/results.h"

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <stdio.h>
#include <string.h>

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

void sockopts_seen_add(struct sockopts_seen *s, const struct tr_conn *tc)
{
	struct tr_sockopts so;

	tr_get_sockopts(tc, &so);
	if (so.sndbuf < 0)
		return; /* no socket (yet, or any more) */
	if (s->n++ == 0) {
		s->sndbuf_min = s->sndbuf_max = so.sndbuf;
		s->rcvbuf_min = s->rcvbuf_max = so.rcvbuf;
		s->nodelay = so.nodelay;
		return;
	}
	if (so.sndbuf < s->sndbuf_min)
		s->sndbuf_min = so.sndbuf;
	if (so.sndbuf > s->sndbuf_max)
		s->sndbuf_max = so.sndbuf;
	if (so.rcvbuf < s->rcvbuf_min)
		s->rcvbuf_min = so.rcvbuf;
	if (so.rcvbuf > s->rcvbuf_max)
		s->rcvbuf_max = so.rcvbuf;
	if (so.nodelay != s->nodelay)
		s->nodelay = -1;
}

static json_t *seen_json(const struct sockopts_seen *s)
{
	if (s->n == 0)
		return json_null();
	return json_pack("{s:I, s:{s:i, s:i}, s:{s:i, s:i}, s:o}",
	                 "connections", (json_int_t)s->n,
	                 "so_sndbuf_bytes", "min", s->sndbuf_min, "max",
	                 s->sndbuf_max, "so_rcvbuf_bytes", "min",
	                 s->rcvbuf_min, "max", s->rcvbuf_max, "tcp_nodelay",
	                 s->nodelay < 0 ? json_null()
	                                : json_boolean(s->nodelay));
}

/* The first line of /proc/sys/<path>, or null. */
static json_t *sysctl_json(const char *path)
{
	char file[128], line[128];
	FILE *f;
	size_t n;

	snprintf(file, sizeof(file), "/proc/sys/%s", path);
	f = fopen(file, "r");
	if (f == NULL)
		return json_null();
	if (fgets(line, sizeof(line), f) == NULL)
		line[0] = '\0';
	fclose(f);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
	/* tabs separate tcp_wmem's three values: make them spaces */
	for (char *p = line; *p; p++)
		if (*p == '\t')
			*p = ' ';
	return json_string(line);
}

json_t *report_socket(size_t max_outbuf, const struct tr_config *cfg,
                      const struct sockopts_seen *at_connect,
                      const struct sockopts_seen *at_close)
{
	static const char *const sysctls[] = {
		"net/ipv4/tcp_wmem", "net/ipv4/tcp_rmem",
		"net/core/wmem_default", "net/core/wmem_max",
		"net/core/rmem_default", "net/core/rmem_max",
	};
	json_t *o = json_object(), *sc = json_object();
	char name[64];
	size_t i, j;

	report_set(o, "max_outbuf_bytes", report_u64(max_outbuf));
	report_set(o, "requested",
	           json_pack("{s:i, s:i, s:b}", "so_sndbuf_bytes",
	                     cfg ? cfg->sndbuf : 0, "so_rcvbuf_bytes",
	                     cfg ? cfg->rcvbuf : 0, "tcp_nodelay",
	                     cfg ? cfg->nodelay : 0));
	report_set(o, "at_connect", seen_json(at_connect));
	report_set(o, "at_close", seen_json(at_close));
	for (i = 0; i < sizeof(sysctls) / sizeof(sysctls[0]); i++) {
		/* "net.ipv4.tcp_wmem", the name sysctl(8) uses */
		for (j = 0; sysctls[i][j] && j + 1 < sizeof(name); j++)
			name[j] = sysctls[i][j] == '/' ? '.' : sysctls[i][j];
		name[j] = '\0';
		report_set(sc, name, sysctl_json(sysctls[i]));
	}
	report_set(o, "sysctl", sc);
	return o;
}
