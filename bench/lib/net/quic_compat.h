/*
 * quic_compat.h: the ngtcp2 names that differ between 0.12 (Debian 12's
 * 0.12.1, what this project builds against) and 1.x, behind one switch, so
 * that a port to 1.x is this file and nothing else.
 *
 * What differs (0.12 -> 1.x): the close error type and its helpers
 * (ngtcp2_connection_close_error* -> ngtcp2_ccerr*), the closing and
 * draining predicates (is_in_ -> in_), the early data rejection call and
 * callback (tls_ prefix), the 0-RTT stream data flag (EARLY -> 0RTT), the
 * connection statistics (get_conn_stat -> get_conn_info, with fewer
 * fields), stream shutdown (a flags argument), the qlog settings (qlog.write
 * -> qlog_write), the server's original_dcid_present flag, and how the
 * server's transport parameters are kept for 0-RTT (0.12: the caller keeps
 * the fields; 1.x: encode/decode calls). Use error macros only: their
 * numbers changed.
 *
 * 0.12 also paces as if the RTT were 333 ms until it has a first sample
 * (fixed in 0.14): QC_PACING_NEEDS_RTT_SAMPLE says to hold the pacing
 * update back until then (see quic.c).
 */
#ifndef NET_QUIC_COMPAT_H
#define NET_QUIC_COMPAT_H

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#if NGTCP2_VERSION_NUM >= 0x010000

typedef ngtcp2_ccerr qc_ccerr;
#define qc_ccerr_default(e) ngtcp2_ccerr_default(e)
#define qc_ccerr_set_liberr(e, lib) ngtcp2_ccerr_set_liberr(e, lib, NULL, 0)
#define qc_ccerr_set_tls_alert(e, a) ngtcp2_ccerr_set_tls_alert(e, a, NULL, 0)
#define qc_ccerr_set_app(e, code) \
	ngtcp2_ccerr_set_application_error(e, code, NULL, 0)
#define qc_ccerr_set_transport(e, code) \
	ngtcp2_ccerr_set_transport_error(e, code, NULL, 0)
#define QC_CCERR_IDLE_CLOSE NGTCP2_CCERR_TYPE_IDLE_CLOSE
#define QC_CCERR_VERSION_NEGOTIATION NGTCP2_CCERR_TYPE_VERSION_NEGOTIATION
#define QC_CCERR_APPLICATION NGTCP2_CCERR_TYPE_APPLICATION
static inline void qc_peer_ccerr(ngtcp2_conn *c, qc_ccerr *e)
{
	*e = *ngtcp2_conn_get_ccerr(c);
}
#define qc_in_closing(c) ngtcp2_conn_in_closing_period(c)
#define qc_in_draining(c) ngtcp2_conn_in_draining_period(c)
#define qc_early_data_rejected(c) ngtcp2_conn_tls_early_data_rejected(c)
#define QC_CB_EARLY_REJECTED tls_early_data_rejected
#define QC_STREAM_DATA_FLAG_EARLY NGTCP2_STREAM_DATA_FLAG_0RTT
#define qc_shutdown_stream_write(c, sid, code) \
	ngtcp2_conn_shutdown_stream_write(c, 0, sid, code)
#define qc_shutdown_stream(c, sid, code) \
	ngtcp2_conn_shutdown_stream(c, 0, sid, code)
typedef ngtcp2_conn_info qc_stat;
#define qc_get_stat(c, st) ngtcp2_conn_get_conn_info(c, st)
#define QC_PACING_NEEDS_RTT_SAMPLE(st) 0
#define qc_settings_qlog(s, fn) ((s)->qlog_write = (fn))
#define qc_params_set_odcid(p, cid) \
	((p)->original_dcid = *(cid), (p)->original_dcid_present = 1)
#define QC_HAS_BBR2 0
/* 0-RTT: the library encodes and decodes what it needs. */
static inline ngtcp2_ssize qc_early_params_encode(ngtcp2_conn *c,
                                                  uint8_t *buf, size_t len)
{
	return ngtcp2_conn_encode_0rtt_transport_params(c, buf, len);
}
static inline int qc_early_params_apply(ngtcp2_conn *c, const uint8_t *buf,
                                        size_t len)
{
	return ngtcp2_conn_decode_and_set_0rtt_transport_params(c, buf, len);
}

#else /* 0.12 */

typedef ngtcp2_connection_close_error qc_ccerr;
#define qc_ccerr_default(e) ngtcp2_connection_close_error_default(e)
#define qc_ccerr_set_liberr(e, lib) \
	ngtcp2_connection_close_error_set_transport_error_liberr(e, lib, NULL, 0)
#define qc_ccerr_set_tls_alert(e, a) \
	ngtcp2_connection_close_error_set_transport_error_tls_alert(e, a, \
	                                                            NULL, 0)
#define qc_ccerr_set_app(e, code) \
	ngtcp2_connection_close_error_set_application_error(e, code, NULL, 0)
#define qc_ccerr_set_transport(e, code) \
	ngtcp2_connection_close_error_set_transport_error(e, code, NULL, 0)
#define QC_CCERR_IDLE_CLOSE \
	NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT_IDLE_CLOSE
#define QC_CCERR_VERSION_NEGOTIATION \
	NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT_VERSION_NEGOTIATION
#define QC_CCERR_APPLICATION NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION
static inline void qc_peer_ccerr(ngtcp2_conn *c, qc_ccerr *e)
{
	ngtcp2_conn_get_connection_close_error(c, e);
}
#define qc_in_closing(c) ngtcp2_conn_is_in_closing_period(c)
#define qc_in_draining(c) ngtcp2_conn_is_in_draining_period(c)
#define qc_early_data_rejected(c) ngtcp2_conn_early_data_rejected(c)
#define QC_CB_EARLY_REJECTED early_data_rejected
#define QC_STREAM_DATA_FLAG_EARLY NGTCP2_STREAM_DATA_FLAG_EARLY
#define qc_shutdown_stream_write(c, sid, code) \
	ngtcp2_conn_shutdown_stream_write(c, sid, code)
#define qc_shutdown_stream(c, sid, code) \
	ngtcp2_conn_shutdown_stream(c, sid, code)
typedef ngtcp2_conn_stat qc_stat;
#define qc_get_stat(c, st) ngtcp2_conn_get_conn_stat(c, st)
#define QC_PACING_NEEDS_RTT_SAMPLE(st) \
	((st)->first_rtt_sample_ts == UINT64_MAX)
#define qc_settings_qlog(s, fn) ((s)->qlog.write = (fn))
#define qc_params_set_odcid(p, cid) ((p)->original_dcid = *(cid))
#define QC_HAS_BBR2 1

/*
 * 0-RTT: 0.12 has no encoder for what the client keeps of the server's
 * transport parameters; keep the fields that
 * ngtcp2_conn_set_early_remote_transport_params uses, as 8-byte
 * little-endian numbers in a fixed order.
 */
#define QC_EARLY_FIELDS 11
static inline void qc_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t qc_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline ngtcp2_ssize qc_early_params_encode(ngtcp2_conn *c,
                                                  uint8_t *buf, size_t len)
{
	const ngtcp2_transport_params *p =
		ngtcp2_conn_get_remote_transport_params(c);
	uint64_t v[QC_EARLY_FIELDS];
	int i;

	if (!p || len < 8 * QC_EARLY_FIELDS)
		return -1;
	v[0] = p->initial_max_streams_bidi;
	v[1] = p->initial_max_streams_uni;
	v[2] = p->initial_max_stream_data_bidi_local;
	v[3] = p->initial_max_stream_data_bidi_remote;
	v[4] = p->initial_max_stream_data_uni;
	v[5] = p->initial_max_data;
	v[6] = p->active_connection_id_limit;
	v[7] = p->max_datagram_frame_size;
	v[8] = p->max_idle_timeout;
	v[9] = p->max_udp_payload_size;
	v[10] = p->disable_active_migration;
	for (i = 0; i < QC_EARLY_FIELDS; i++)
		qc_put64(buf + 8 * i, v[i]);
	return 8 * QC_EARLY_FIELDS;
}
static inline int qc_early_params_apply(ngtcp2_conn *c, const uint8_t *buf,
                                        size_t len)
{
	ngtcp2_transport_params p;

	if (len != 8 * QC_EARLY_FIELDS)
		return -1;
	ngtcp2_transport_params_default(&p);
	p.initial_max_streams_bidi = qc_get64(buf);
	p.initial_max_streams_uni = qc_get64(buf + 8);
	p.initial_max_stream_data_bidi_local = qc_get64(buf + 16);
	p.initial_max_stream_data_bidi_remote = qc_get64(buf + 24);
	p.initial_max_stream_data_uni = qc_get64(buf + 32);
	p.initial_max_data = qc_get64(buf + 40);
	p.active_connection_id_limit = qc_get64(buf + 48);
	p.max_datagram_frame_size = qc_get64(buf + 56);
	p.max_idle_timeout = qc_get64(buf + 64);
	p.max_udp_payload_size = qc_get64(buf + 72);
	p.disable_active_migration = (uint8_t)qc_get64(buf + 80);
	ngtcp2_conn_set_early_remote_transport_params(c, &p);
	return 0;
}

#endif

#endif /* NET_QUIC_COMPAT_H */
