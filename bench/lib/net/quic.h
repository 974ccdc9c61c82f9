/*
 * quic.h: the QUIC transport (tr_quic_ops) and what it tells beyond the
 * transport table: a listener's statistics (for the QUIC gateway) and a
 * client connection's migration.
 */
#ifndef NET_QUIC_H
#define NET_QUIC_H

#include <stdint.h>

#include "net/transport.h"

extern const struct transport_ops tr_quic_ops;

/* What a QUIC listener has seen, since it started. */
struct quic_stats_server {
	uint64_t datagrams_in, bytes_in;
	uint64_t conns_total, conns_now;
	uint64_t handshakes;          /* completed */
	uint64_t handshake_failures;  /* handshakes that failed, on either
	                                 side (ALPN, a certificate the
	                                 client refused) */
	uint64_t alpn_refused;        /* ClientHellos without ALPN "mqtt" */
	uint64_t early_accepted;      /* 0-RTT taken */
	uint64_t replays_refused;     /* 0-RTT refused as a replay */
	uint64_t tickets_failed;      /* session tickets not sent */
	uint64_t migrations;          /* client paths validated */
	uint64_t version_negotiations, stateless_resets, retries;
	uint64_t bad_tokens;          /* Retry tokens that did not verify */
	uint64_t protocol_errors;     /* connections closed for a violation */
	uint64_t garbage;             /* datagrams that are not QUIC */
	uint64_t dropped;             /* not an Initial of a new connection */
};

/* The statistics of a QUIC listener; NULL for other transports. */
const struct quic_stats_server *quic_listener_stats(
	const struct tr_listener *l);

/*
 * A client connection's migration: when the last rebind happened and when
 * its path was validated (0 until then), and how many rebinds there were.
 * Returns 1 validated, -1 failed, 0 pending or none; -1 with nothing set
 * when c is not a QUIC connection.
 */
int quic_migration_info(const struct tr_conn *c, int64_t *t_rebind,
                        int64_t *t_validated, unsigned *migrations);

#endif /* NET_QUIC_H */
