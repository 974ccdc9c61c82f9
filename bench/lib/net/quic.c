/*
 * quic.c: MQTT over QUIC (v1, TLS 1.3, ALPN "mqtt", UDP 14567 by default)
 * with ngtcp2 and its GnuTLS crypto helper, client and server side.
 *
 * Every ngtcp2 call of the project is in this file; the names that differ
 * between ngtcp2 0.12 and 1.x are in quic_compat.h.
 *
 * Sockets sit at the edges: a datagram read from the socket goes to
 * ngtcp2_conn_read_pkt; packets ngtcp2 writes go out one per send() (one
 * datagram, one Ethernet frame: no UDP GSO, no GRO), so a link emulator's
 * loss and rate act per QUIC packet as they do per TCP segment. A packet
 * the socket does not take (EAGAIN) is held and sent first on the next
 * writable event. Time is the caller's `now` (CLOCK_MONOTONIC ns), which
 * must be fresh: packets are stamped with it.
 *
 * Streams. A stream's send side is a chain of chunks that never move once
 * written (ngtcp2 keeps pointers into them for retransmission); a chunk is
 * freed once the peer acknowledged all of it (acked_stream_data_offset).
 * send() copies the caller's bytes into the chain, up to QUIC_SEND_MAX
 * bytes not yet acknowledged per stream, and says TR_AGAIN beyond (room
 * comes with ACKs, which arrive as reads: the caller waits for EV_READ).
 * The receive side buffers what ngtcp2 hands over; flow-control credit
 * (stream and connection) is given back only as the caller takes bytes
 * with recv(), so a slow reader (a gateway whose broker is slow) slows the
 * peer down instead of growing a buffer.
 *
 * 0-RTT (client): after a connection, the session ticket (from GnuTLS's
 * NewSessionTicket hook) and what 0-RTT needs of the server's transport
 * parameters are stored in the caller's tr_session. The next connection
 * with cfg.early_data applies both, and handshake() says TR_EARLY at once:
 * the caller may open streams and send; ngtcp2 sends that as 0-RTT packets
 * behind the Initial. When the handshake completes, GnuTLS tells whether
 * the server took the early data; if not, ngtcp2 is told
 * (early_data_rejected), which discards the streams, and this file reopens
 * them (they get the same ids) and sends every byte again from offset 0:
 * the stream bytes are still ours since nothing sent in 0-RTT could be
 * acknowledged before. The outcome is a note (TR_NOTE_EARLY_ACCEPTED /
 * _REJECTED).
 *
 * Pacing (ngtcp2 0.12): until the first RTT sample ngtcp2 paces as if the
 * RTT were 333 ms, which would delay the client's Finished and first
 * stream data by tens of ms and spread a 0-RTT flight over a third of a
 * second: the pacing time is not updated while there is no sample
 * (QC_PACING_NEEDS_RTT_SAMPLE), checked on every round because a migration
 * resets the RTT state.
 *
 * Migration (client): rebind() opens a new socket (same address and a new
 * port, or the given address), and moves the connection onto it at once
 * (ngtcp2_conn_initiate_immediate_migration: the old address is gone, as
 * when a device changes networks); ngtcp2 validates the new path, and the
 * result arrives as a note (TR_NOTE_PATH_VALIDATED / _FAILED) with its
 * time in the info.
 *
 * Server side: a listener owns the UDP socket and a map from connection
 * IDs to connections. accept() reads datagrams: version negotiation for
 * unknown versions, Retry when configured, a stateless reset for short
 * packets of unknown connections, a new connection for a valid Initial,
 * the packet into its connection otherwise; it then returns the
 * connections that have news one at a time. The server requires ALPN
 * "mqtt" (a ClientHello without ALPN is refused too), sends a session
 * ticket after the handshake, and accepts 0-RTT guarded by a real
 * anti-replay store. GnuTLS refuses early data for any ticket created
 * before its recording window last started over, and starts it over at
 * the first ClientHello a window after the last start: with its 10 s
 * default, a burst of 0-RTT connections after ten quiet seconds is partly
 * refused whatever the clients do. The window is therefore one hour by
 * default (cfg.replay_window_ns, recorded by the gateway), and the store
 * keeps one entry per 0-RTT ClientHello for that long. A connection the caller closes stays with the
 * listener for its closing period (three PTOs), answering stray packets
 * with its CONNECTION_CLOSE.
 */
#include "net/quic.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "net/quic_compat.h"
#include "net/tls_common.h"

#define QUIC_SCID_LEN 18         /* our connection IDs */
#define QUIC_PKT_MAX 1500        /* write buffer; packets are <= 1452 */
#define QUIC_RX_MAX 65536        /* read buffer: one datagram */
#define QUIC_READS_PER_ROUND 64  /* datagrams read before others' turn */
#define QUIC_SEND_MAX (1u << 20) /* per stream, not yet acknowledged */
#define QUIC_CHUNK 16384         /* send chunk size (at least) */
#define QUIC_STREAM_WINDOW (1u << 20) /* receive credit per stream */
#define QUIC_CONN_WINDOW (4u << 20)   /* and per connection */
#define QUIC_MAX_STREAMS 1024    /* streams a client may open */
#define QUIC_MAX_VECS 16
#define QUIC_MAX_CIDS 16         /* connection IDs a server conn holds */
#define QUIC_TICKET_MAX 8192     /* session ticket we keep */
#define QUIC_SESSION_MAGIC "MQBQ1"

/* ---- the shared context ---- */

struct replay_entry {
	struct replay_entry *next;
	time_t expires;
	size_t len;
	uint8_t key[];
};

/* GnuTLS's anti-replay store: keys of the ClientHellos that carried early
 * data, until their tickets' window ends. A key seen again is a replay. */
struct replay_store {
	struct replay_entry **buckets;
	size_t nbuckets, n;
	uint64_t replays; /* refused as replays */
};

struct quic_ctx {
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	gnutls_datum_t alpn;
	int name_is_ip;
	ngtcp2_cc_algo cc;
	/* server */
	gnutls_datum_t ticket_key;
	gnutls_anti_replay_t ar;
	struct replay_store replay;
	uint8_t secret[32]; /* stateless reset and Retry tokens */
};

/* ---- streams ---- */

struct qchunk {
	struct qchunk *next;
	uint64_t off;     /* stream offset of data[0] */
	size_t len, cap;
	uint8_t data[];
};

struct qstream {
	struct qstream *next;
	int64_t sid;
	/* send: bytes [acked, total) are ours, [acked, written) in flight */
	struct qchunk *head, *tail;
	uint64_t acked, written, total;
	uint8_t fin_asked, fin_sent, blocked, peer_opened, given;
	/* receive */
	uint8_t *rbuf;
	size_t rlen, roff, rcap;
	uint8_t rfin, eof_told, reset_rx, reset_told, closed;
};

/* ---- connections ---- */

struct quic_listener;

struct quic_conn {
	struct tr_conn base;
	struct quic_ctx *x;
	struct quic_listener *l; /* server side: whose socket we share */
	ngtcp2_conn *qc;
	gnutls_session_t tls;
	ngtcp2_crypto_conn_ref ref;
	struct sockaddr_storage local, remote;
	socklen_t locallen, remotelen;
	int err;            /* sticky failure, message in base.err */
	uint64_t pkts_in, pkts_out; /* datagrams */
	int started;        /* the first flight went out */
	int hs_done;
	int early_offered;  /* ticket and parameters applied (client) */
	int early_result;   /* 1 accepted, -1 rejected */
	int reopen;         /* 0-RTT rejected: reopen and resend */
	int ticket_saved;
	int closing;        /* server: in the closing period */
	int released;       /* server: the caller closed it */
	struct qstream *streams;
	uint64_t streams_opened;
	/* a packet the socket would not take */
	uint8_t *held;
	size_t held_len;
	struct sockaddr_storage held_to;
	socklen_t held_tolen;
	/* migration */
	int64_t t_rebind, t_validated;
	int path_result;
	unsigned migrations;
	FILE *qlog;
	/* server: the listener's bookkeeping */
	ngtcp2_cid cids[QUIC_MAX_CIDS];
	size_t ncids;
	struct quic_conn *lnext;    /* all of the listener's conns */
	struct quic_conn *rnext;    /* its ready list */
	int queued;                 /* on the ready list */
	uint8_t *close_pkt;         /* the CONNECTION_CLOSE we sent */
	size_t close_len;
	int64_t close_until;
	int64_t close_sent_at;
};

struct cid_node {
	struct cid_node *next;
	ngtcp2_cid cid;
	struct quic_conn *q;
};

struct quic_listener {
	struct tr_listener base;
	struct quic_ctx *x;
	struct cid_node **map;
	size_t nmap, nnodes;
	struct quic_conn *conns;
	struct quic_conn *ready_head, *ready_tail;
	struct quic_stats_server st;
};

static _Thread_local uint8_t rxbuf[QUIC_RX_MAX];

static void qc_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t qc_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static int64_t clock_ns(void)
{
	return evloop_clock_ns();
}

static void rand_bytes(uint8_t *p, size_t n)
{
	if (gnutls_rnd(GNUTLS_RND_RANDOM, p, n) != 0) {
		/* GnuTLS's generator does not fail once initialised; never
		 * send predictable IDs if it ever does */
		abort();
	}
}

static int name_is_ip(const char *name)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, name, buf) == 1 ||
	       inet_pton(AF_INET6, name, buf) == 1;
}

/* ---- the anti-replay store ---- */

static size_t replay_hash(const uint8_t *k, size_t len, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	while (len--)
		h = (h ^ *k++) * 1099511628211ull;
	return (size_t)(h & (n - 1));
}

static void replay_purge(struct replay_store *r, time_t now)
{
	size_t i;

	for (i = 0; i < r->nbuckets; i++) {
		struct replay_entry **pp = &r->buckets[i];

		while (*pp) {
			if ((*pp)->expires < now) {
				struct replay_entry *e = *pp;

				*pp = e->next;
				free(e);
				r->n--;
			} else {
				pp = &(*pp)->next;
			}
		}
	}
}

static int replay_add(void *ptr, time_t exp, const gnutls_datum_t *key,
                      const gnutls_datum_t *data)
{
	struct replay_store *r = ptr;
	struct replay_entry *e;
	time_t now = time(NULL);
	size_t b;

	(void)data;
	if (!r->buckets) {
		r->nbuckets = 1024;
		r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
		if (!r->buckets)
			return GNUTLS_E_MEMORY_ERROR;
	}
	if (r->n >= r->nbuckets * 4)
		replay_purge(r, now);
	b = replay_hash(key->data, key->size, r->nbuckets);
	for (e = r->buckets[b]; e; e = e->next) {
		if (e->len == key->size && e->expires >= now &&
		    memcmp(e->key, key->data, key->size) == 0) {
			r->replays++;
			return GNUTLS_E_DB_ENTRY_EXISTS;
		}
	}
	e = malloc(sizeof(*e) + key->size);
	if (!e)
		return GNUTLS_E_MEMORY_ERROR;
	e->expires = exp;
	e->len = key->size;
	memcpy(e->key, key->data, key->size);
	e->next = r->buckets[b];
	r->buckets[b] = e;
	r->n++;
	return 0;
}

static void replay_free(struct replay_store *r)
{
	size_t i;

	for (i = 0; i < r->nbuckets; i++) {
		while (r->buckets[i]) {
			struct replay_entry *e = r->buckets[i];

			r->buckets[i] = e->next;
			free(e);
		}
	}
	free(r->buckets);
	memset(r, 0, sizeof(*r));
}

/* ---- context ---- */

static int parse_cc(const char *name, ngtcp2_cc_algo *out)
{
	if (!name || strcmp(name, "cubic") == 0)
		*out = NGTCP2_CC_ALGO_CUBIC;
	else if (strcmp(name, "reno") == 0)
		*out = NGTCP2_CC_ALGO_RENO;
	else if (strcmp(name, "bbr") == 0)
		*out = NGTCP2_CC_ALGO_BBR;
#if QC_HAS_BBR2
	else if (strcmp(name, "bbr2") == 0)
		*out = NGTCP2_CC_ALGO_BBR2;
#endif
	else
		return -1;
	return 0;
}

static void quic_ctx_free(struct tr_ctx *ctx);

static int quic_ctx_init(struct tr_ctx *ctx, char *err, size_t errlen)
{
	struct tr_config *cfg = &ctx->cfg;
	struct quic_ctx *x;
	const char *errpos = NULL;
	int r;

	if (cfg->tls_version != TR_TLS_1_3 || cfg->priority) {
		snprintf(err, errlen, "QUIC runs TLS 1.3 only: drop "
		         "--tls-version and any priority string");
		return TR_ECONFIG;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		snprintf(err, errlen, "out of memory");
		return TR_ENOMEM;
	}
	ctx->impl = x;
	if (parse_cc(cfg->cc, &x->cc) < 0) {
		snprintf(err, errlen, "QUIC: unknown congestion control '%s' "
		         "(use reno, cubic, bbr%s)", cfg->cc,
		         QC_HAS_BBR2 ? ", bbr2" : "");
		r = TR_ECONFIG;
		goto fail;
	}
	r = tr_tls_load_creds(ctx, &x->cred, err, errlen);
	if (r < 0)
		goto fail;
	r = gnutls_priority_init(&x->prio,
	                         "NORMAL:-VERS-ALL:+VERS-TLS1.3:"
	                         "%DISABLE_TLS13_COMPAT_MODE",
	                         &errpos);
	if (r < 0) {
		x->prio = NULL;
		snprintf(err, errlen, "QUIC: TLS priorities: %s",
		         gnutls_strerror(r));
		r = TR_ETLS;
		goto fail;
	}
	if (cfg->server && cfg->alpn && !cfg->alpn[0]) {
		snprintf(err, errlen, "QUIC server: an ALPN is required");
		r = TR_ECONFIG;
		goto fail;
	}
	x->alpn.data = (unsigned char *)(cfg->alpn ? cfg->alpn : "mqtt");
	x->alpn.size = (unsigned)strlen((const char *)x->alpn.data);
	x->name_is_ip = name_is_ip(cfg->server_name);
	if (cfg->server) {
		rand_bytes(x->secret, sizeof(x->secret));
		if ((r = gnutls_session_ticket_key_generate(&x->ticket_key)) <
		            0 ||
		    (r = gnutls_anti_replay_init(&x->ar)) < 0) {
			snprintf(err, errlen, "QUIC server: %s",
			         gnutls_strerror(r));
			r = TR_ETLS;
			goto fail;
		}
		gnutls_anti_replay_set_window(
			x->ar, (unsigned)(cfg->replay_window_ns / 1000000));
		gnutls_anti_replay_set_add_function(x->ar, replay_add);
		gnutls_anti_replay_set_ptr(x->ar, &x->replay);
	}
	return 0;

fail:
	quic_ctx_free(ctx);
	return r;
}

static void quic_ctx_free(struct tr_ctx *ctx)
{
	struct quic_ctx *x = ctx->impl;

	if (!x)
		return;
	if (x->ar)
		gnutls_anti_replay_deinit(x->ar);
	replay_free(&x->replay);
	if (x->ticket_key.data) {
		gnutls_memset(x->ticket_key.data, 0, x->ticket_key.size);
		gnutls_free(x->ticket_key.data);
	}
	if (x->prio)
		gnutls_priority_deinit(x->prio);
	if (x->cred)
		gnutls_certificate_free_credentials(x->cred);
	free(x);
	ctx->impl = NULL;
}

/* ---- errors ---- */

static int qfail(struct quic_conn *q, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int qfail(struct quic_conn *q, int code, const char *fmt, ...)
{
	char line[300];
	va_list ap;

	if (q->err)
		return q->err;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	tr_fail(&q->base, code, "%s", line);
	return q->err = code;
}

static const char *who(const struct quic_conn *q)
{
	return q->base.server ? "client" : q->base.ctx->peer;
}

/* The peer closed the connection: say what it said. */
static int peer_closed(struct quic_conn *q)
{
	qc_ccerr e;

	qc_peer_ccerr(q->qc, &e);
	if (e.type == QC_CCERR_APPLICATION)
		return qfail(q, TR_EOF, "QUIC connection closed by %s "
		             "(application code %llu)", who(q),
		             (unsigned long long)e.error_code);
	if (e.error_code == 0)
		return qfail(q, TR_EOF, "QUIC connection closed by %s",
		             who(q));
	if ((e.error_code & 0xff00) == 0x0100) {
		/* CRYPTO_ERROR: a TLS alert */
		unsigned alert = (unsigned)(e.error_code & 0xff);

		return qfail(q, alert == 120 ? TR_ETLS : TR_EQUIC,
		             "QUIC handshake with %s: the %s sent TLS alert "
		             "'%s'%s", who(q),
		             q->base.server ? "client" : "server",
		             gnutls_alert_get_name((gnutls_alert_description_t)
		                                   alert)
		                     ?: "unknown",
		             alert == 120 ? " (ALPN: the server wants \"mqtt\")"
		                          : "");
	}
	return qfail(q, TR_EQUIC,
	             "QUIC connection closed by %s: transport error 0x%llx",
	             who(q), (unsigned long long)e.error_code);
}

/* ngtcp2 refused what we gave it (rv from read_pkt or a write): one line
 * for the caller, and the CONNECTION_CLOSE to send is settled later. */
static int lib_error(struct quic_conn *q, int rv, const char *what)
{
	if (rv == NGTCP2_ERR_DRAINING)
		return peer_closed(q);
	if (rv == NGTCP2_ERR_CRYPTO) {
		unsigned st = q->tls ? gnutls_session_get_verify_cert_status(
			                       q->tls)
		                     : 0;

		if (st && !q->base.server) {
			q->err = tr_tls_cert_error(&q->base, q->tls,
			                           "QUIC handshake");
			return q->err;
		}
		return qfail(q, TR_ETLS, "QUIC handshake with %s: TLS alert "
		             "'%s'", who(q),
		             gnutls_alert_get_name(
			             (gnutls_alert_description_t)
				     ngtcp2_conn_get_tls_alert(q->qc))
		                     ?: "unknown");
	}
	if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT)
		return qfail(q, TR_ETIMEOUT,
		             "QUIC handshake with %s: timed out after %.1f s",
		             who(q),
		             (double)q->base.ctx->cfg.connect_timeout_ns / 1e9);
	if (rv == NGTCP2_ERR_IDLE_CLOSE)
		return qfail(q, TR_ETIMEOUT,
		             "QUIC connection with %s: idle timeout (%.1f s "
		             "without a packet)", who(q),
		             (double)q->base.ctx->cfg.idle_timeout_ns / 1e9);
	return qfail(q, TR_EQUIC, "QUIC %s with %s: %s", what, who(q),
	             ngtcp2_strerror(rv));
}

/* ---- streams ---- */

static struct qstream *stream_find(struct quic_conn *q, int64_t sid)
{
	struct qstream *s;

	for (s = q->streams; s; s = s->next)
		if (s->sid == sid)
			return s;
	return NULL;
}

static struct qstream *stream_add(struct quic_conn *q, int64_t sid)
{
	struct qstream *s = calloc(1, sizeof(*s)), **pp;

	if (!s)
		return NULL;
	s->sid = sid;
	/* keep opening order: 0-RTT rejection reopens in the same order */
	for (pp = &q->streams; *pp; pp = &(*pp)->next)
		;
	*pp = s;
	return s;
}

static void stream_free(struct qstream *s)
{
	while (s->head) {
		struct qchunk *c = s->head;

		s->head = c->next;
		free(c);
	}
	free(s->rbuf);
	free(s);
}

/* Copy up to len bytes into the stream's chain. Returns bytes taken. */
static size_t stream_append(struct qstream *s, const uint8_t *buf,
                            size_t len)
{
	size_t room = QUIC_SEND_MAX - (size_t)(s->total - s->acked), done = 0;

	if (len > room)
		len = room;
	while (done < len) {
		struct qchunk *c = s->tail;
		size_t n;

		if (!c || c->len == c->cap) {
			size_t cap = len - done > QUIC_CHUNK ? len - done
			                                     : QUIC_CHUNK;

			c = malloc(sizeof(*c) + cap);
			if (!c)
				break;
			c->next = NULL;
			c->off = s->total;
			c->len = 0;
			c->cap = cap;
			if (s->tail)
				s->tail->next = c;
			else
				s->head = c;
			s->tail = c;
		}
		n = c->cap - c->len;
		if (n > len - done)
			n = len - done;
		memcpy(c->data + c->len, buf + done, n);
		c->len += n;
		done += n;
		s->total += n;
	}
	return done;
}

/* The peer acknowledged up to `upto`: free the chunks it covers. */
static void stream_acked(struct qstream *s, uint64_t upto)
{
	if (upto > s->acked)
		s->acked = upto;
	while (s->head && s->head->off + s->head->len <= s->acked &&
	       (s->head->len == s->head->cap || s->head->next ||
	        s->acked == s->total)) {
		struct qchunk *c = s->head;

		s->head = c->next;
		if (!s->head)
			s->tail = NULL;
		free(c);
	}
}

/* Vectors over the bytes not yet written, from `written` on. */
static size_t stream_vecs(const struct qstream *s, ngtcp2_vec *v, size_t max)
{
	const struct qchunk *c;
	size_t n = 0;

	for (c = s->head; c && n < max; c = c->next) {
		uint64_t end = c->off + c->len;

		if (end <= s->written)
			continue;
		if (c->off >= s->written) {
			v[n].base = (uint8_t *)c->data;
			v[n].len = c->len;
		} else {
			v[n].base = (uint8_t *)c->data + (s->written - c->off);
			v[n].len = (size_t)(end - s->written);
		}
		n++;
	}
	return n;
}

static int stream_wants_write(const struct qstream *s)
{
	return !s->blocked && !s->closed &&
	       (s->written < s->total || (s->fin_asked && !s->fin_sent));
}

/* ---- sockets ---- */

static int sock_new(struct quic_conn *q, const struct sockaddr *local,
                    socklen_t locallen, char *what, size_t whatlen)
{
	struct tr_ctx *ctx = q->base.ctx;
	int fd, one = 1;

	fd = socket(ctx->addr.ss_family,
	            SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(what, whatlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (ctx->cfg.sndbuf > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &ctx->cfg.sndbuf,
		                 sizeof(int));
	if (ctx->cfg.rcvbuf > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &ctx->cfg.rcvbuf,
		                 sizeof(int));
#ifdef IP_MTU_DISCOVER
	if (ctx->addr.ss_family == AF_INET) {
		int v = IP_PMTUDISC_DO; /* never fragment a QUIC packet */

		(void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v,
		                 sizeof(v));
	}
#endif
	(void)one;
	if (local && bind(fd, local, locallen) < 0) {
		snprintf(what, whatlen, "bind: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)&ctx->addr, ctx->addrlen) <
	    0) {
		snprintf(what, whatlen, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	q->locallen = sizeof(q->local);
	if (getsockname(fd, (struct sockaddr *)&q->local, &q->locallen) < 0) {
		snprintf(what, whatlen, "getsockname: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Send one datagram: on the connected socket (client) or to the path's
 * remote on the listener's (server). 0, TR_AGAIN (held), or an error. */
static int send_pkt(struct quic_conn *q, const uint8_t *data, size_t len,
                    const ngtcp2_path *path)
{
	int fd = q->l ? q->l->base.fd : q->base.fd;
	const struct sockaddr *to = NULL;
	socklen_t tolen = 0;
	ssize_t n;

	if (q->l) {
		to = (const struct sockaddr *)path->remote.addr;
		tolen = (socklen_t)path->remote.addrlen;
	}
	do
		n = to ? sendto(fd, data, len, 0, to, tolen)
		       : send(fd, data, len, 0);
	while (n < 0 && errno == EINTR);
	if (n >= 0) {
		q->base.wire_out += len;
		q->pkts_out++;
		return 0;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
		free(q->held);
		q->held = malloc(len);
		if (!q->held)
			return qfail(q, TR_ENOMEM, "out of memory");
		memcpy(q->held, data, len);
		q->held_len = len;
		q->held_tolen = tolen;
		if (to)
			memcpy(&q->held_to, to, tolen);
		return TR_AGAIN;
	}
	if (errno == EMSGSIZE || errno == ECONNREFUSED)
		return 0; /* lost on the way, as on a real network */
	q->base.sys_errno = errno;
	return qfail(q, TR_EIO, "QUIC send to %s: %s", who(q),
	             strerror(errno));
}

static int send_held(struct quic_conn *q)
{
	int fd = q->l ? q->l->base.fd : q->base.fd;
	ssize_t n;

	if (!q->held)
		return 0;
	do
		n = q->held_tolen ? sendto(fd, q->held, q->held_len, 0,
		                           (struct sockaddr *)&q->held_to,
		                           q->held_tolen)
		                  : send(fd, q->held, q->held_len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	              errno == ENOBUFS))
		return TR_AGAIN;
	if (n >= 0) {
		q->base.wire_out += q->held_len;
		q->pkts_out++;
	}
	free(q->held);
	q->held = NULL;
	q->held_len = 0;
	return 0;
}

/* ---- writing ---- */

static void update_tx_time(struct quic_conn *q, int64_t now)
{
	qc_stat st;

	qc_get_stat(q->qc, &st);
	if (QC_PACING_NEEDS_RTT_SAMPLE(&st))
		return; /* see "Pacing" above */
	ngtcp2_conn_update_pkt_tx_time(q->qc, (ngtcp2_tstamp)now);
}

/* s has something ngtcp2 can take now: bytes (when the connection's
 * window allows, data_ok) or just its FIN. */
static int writable(const struct qstream *s, int data_ok)
{
	if (!stream_wants_write(s))
		return 0;
	return data_ok || s->written == s->total;
}

/* The next stream to write, round-robin from `after`. */
static struct qstream *next_writer(struct quic_conn *q, struct qstream *after,
                                   int data_ok)
{
	struct qstream *s;

	for (s = after ? after->next : q->streams; s; s = s->next)
		if (writable(s, data_ok))
			return s;
	for (s = q->streams; s && s != after; s = s->next)
		if (writable(s, data_ok))
			return s;
	if (after && writable(after, data_ok))
		return after;
	return NULL;
}

static int write_close(struct quic_conn *q, int64_t now);

/*
 * Write what ngtcp2 has to send: stream bytes, ACKs, retransmissions,
 * handshake packets, at most a send quantum's worth, one datagram each.
 * 0, or an error (the connection is then closing).
 */
static int write_loop(struct quic_conn *q, int64_t now)
{
	static _Thread_local uint8_t buf[QUIC_PKT_MAX];
	size_t max_pkts, pkts = 0, udp, rounds = 0;
	struct qstream *s = NULL;
	int r;

	if (q->err)
		return q->err;
	q->started = 1;
	if ((r = send_held(q)) != 0)
		return r == TR_AGAIN ? 0 : r;
	if (qc_in_closing(q->qc) || qc_in_draining(q->qc))
		return 0;
	udp = ngtcp2_conn_get_max_tx_udp_payload_size(q->qc);
	max_pkts = ngtcp2_conn_get_send_quantum(q->qc) / (udp ? udp : 1200);
	if (max_pkts < 1)
		max_pkts = 1;
	for (;;) {
		ngtcp2_path_storage ps;
		ngtcp2_pkt_info pi;
		ngtcp2_vec v[QUIC_MAX_VECS];
		ngtcp2_ssize n, taken = -1;
		size_t nv = 0;
		uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
		int64_t sid = -1;

		/* every turn that writes no packet takes bytes, blocks a
		 * stream or closes one; this bound only guards a library
		 * that would do none of these */
		if (++rounds > 64 + 4 * max_pkts) {
			update_tx_time(q, now);
			return 0;
		}
		s = next_writer(q, s, ngtcp2_conn_get_max_data_left(q->qc) > 0);
		if (s) {
			sid = s->sid;
			nv = stream_vecs(s, v, QUIC_MAX_VECS);
			if (s->fin_asked)
				flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
		}
		ngtcp2_path_storage_zero(&ps);
		memset(&pi, 0, sizeof(pi));
		n = ngtcp2_conn_writev_stream(q->qc, &ps.path, &pi, buf,
		                              sizeof(buf), &taken, flags, sid,
		                              nv ? v : NULL, nv,
		                              (ngtcp2_tstamp)now);
		if (n == NGTCP2_ERR_WRITE_MORE) {
			if (s && taken >= 0)
				s->written += (uint64_t)taken;
			continue;
		}
		if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
			if (s)
				s->blocked = 1;
			continue;
		}
		if (n == NGTCP2_ERR_STREAM_SHUT_WR ||
		    n == NGTCP2_ERR_STREAM_NOT_FOUND) {
			if (s) {
				s->closed = 1;
				s->written = s->total;
			}
			continue;
		}
		if (n < 0) {
			lib_error(q, (int)n, "write");
			write_close(q, now);
			return q->err;
		}
		if (s && taken >= 0) {
			s->written += (uint64_t)taken;
			if (s->fin_asked && s->written == s->total)
				s->fin_sent = 1;
		}
		if (n == 0) {
			update_tx_time(q, now);
			return 0;
		}
		r = send_pkt(q, buf, (size_t)n, &ps.path);
		if (r == TR_AGAIN) {
			update_tx_time(q, now);
			return 0;
		}
		if (r < 0)
			return r;
		if (++pkts >= max_pkts) {
			update_tx_time(q, now);
			return 0;
		}
	}
}

/*
 * Send a CONNECTION_CLOSE for the failure q->err (or a clean application
 * close, code 0, when there is none). Server side, the packet is kept to
 * answer stray packets during the closing period.
 */
static int write_close(struct quic_conn *q, int64_t now)
{
	uint8_t buf[QUIC_PKT_MAX];
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	qc_ccerr e;
	ngtcp2_ssize n;

	if (!q->qc || q->closing || qc_in_closing(q->qc) ||
	    qc_in_draining(q->qc) || !q->started)
		return 0;
	qc_ccerr_default(&e);
	if (q->err == TR_ETLS || q->err == TR_ECERT)
		qc_ccerr_set_tls_alert(&e, ngtcp2_conn_get_tls_alert(q->qc));
	else if (q->err && q->err != TR_EOF)
		qc_ccerr_set_transport(&e, NGTCP2_INTERNAL_ERROR);
	else
		qc_ccerr_set_app(&e, 0);
	ngtcp2_path_storage_zero(&ps);
	memset(&pi, 0, sizeof(pi));
	n = ngtcp2_conn_write_connection_close(q->qc, &ps.path, &pi, buf,
	                                       sizeof(buf), &e,
	                                       (ngtcp2_tstamp)now);
	q->closing = 1;
	if (n <= 0)
		return 0;
	(void)send_pkt(q, buf, (size_t)n, &ps.path);
	if (q->l) {
		free(q->close_pkt);
		q->close_pkt = malloc((size_t)n);
		if (q->close_pkt) {
			memcpy(q->close_pkt, buf, (size_t)n);
			q->close_len = (size_t)n;
		}
		q->close_until = now + 3 * (int64_t)ngtcp2_conn_get_pto(q->qc);
		q->close_sent_at = now;
	}
	return 0;
}

/* ---- ngtcp2 callbacks ---- */

static struct quic_conn *of_conn(void *user_data)
{
	return user_data;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
	return ((struct quic_conn *)ref->user_data)->qc;
}

static void cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *rctx)
{
	(void)rctx;
	rand_bytes(dest, len);
}

static int cid_map_add(struct quic_listener *l, const ngtcp2_cid *cid,
                       struct quic_conn *q);
static void cid_map_del(struct quic_listener *l, const ngtcp2_cid *cid);

static int cb_new_cid(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token,
                      size_t cidlen, void *user_data)
{
	struct quic_conn *q = of_conn(user_data);

	(void)conn;
	cid->datalen = cidlen;
	rand_bytes(cid->data, cidlen);
	if (q->l) {
		if (ngtcp2_crypto_generate_stateless_reset_token(
			    token, q->x->secret, sizeof(q->x->secret), cid) !=
		    0)
			return NGTCP2_ERR_CALLBACK_FAILURE;
		if (cid_map_add(q->l, cid, q) < 0)
			return NGTCP2_ERR_CALLBACK_FAILURE;
	} else {
		rand_bytes(token, NGTCP2_STATELESS_RESET_TOKENLEN);
	}
	return 0;
}

static int cb_remove_cid(ngtcp2_conn *conn, const ngtcp2_cid *cid,
                         void *user_data)
{
	struct quic_conn *q = of_conn(user_data);

	(void)conn;
	if (q->l)
		cid_map_del(q->l, cid);
	return 0;
}

static int cb_recv_stream_data(ngtcp2_conn *conn, uint32_t flags,
                               int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t len,
                               void *user_data, void *stream_user_data)
{
	struct quic_conn *q = of_conn(user_data);
	struct qstream *s = stream_find(q, sid);

	(void)conn;
	(void)offset;
	(void)stream_user_data;
	if (!s) {
		if (!q->base.server)
			return 0; /* a stream we never opened: ignore */
		s = stream_add(q, sid);
		if (!s)
			return NGTCP2_ERR_CALLBACK_FAILURE;
		s->peer_opened = 1;
	}
	if (len) {
		if (s->roff && s->roff == s->rlen)
			s->roff = s->rlen = 0;
		if (s->rcap - s->rlen < len) {
			size_t need, cap;
			uint8_t *b;

			if (s->roff) {
				memmove(s->rbuf, s->rbuf + s->roff,
				        s->rlen - s->roff);
				s->rlen -= s->roff;
				s->roff = 0;
			}
			need = s->rlen + len;
			cap = s->rcap ? s->rcap : 4096;
			while (cap < need)
				cap *= 2;
			if (cap > s->rcap) {
				b = realloc(s->rbuf, cap);
				if (!b)
					return NGTCP2_ERR_CALLBACK_FAILURE;
				s->rbuf = b;
				s->rcap = cap;
			}
		}
		memcpy(s->rbuf + s->rlen, data, len);
		s->rlen += len;
	}
	if (flags & NGTCP2_STREAM_DATA_FLAG_FIN)
		s->rfin = 1;
	return 0;
}

static int cb_acked(ngtcp2_conn *conn, int64_t sid, uint64_t offset,
                    uint64_t len, void *user_data, void *stream_user_data)
{
	struct quic_conn *q = of_conn(user_data);
	struct qstream *s = stream_find(q, sid);

	(void)conn;
	(void)stream_user_data;
	if (s)
		stream_acked(s, offset + len);
	return 0;
}

static int cb_stream_close(ngtcp2_conn *conn, uint32_t flags, int64_t sid,
                           uint64_t code, void *user_data,
                           void *stream_user_data)
{
	struct quic_conn *q = of_conn(user_data);
	struct qstream *s = stream_find(q, sid);

	(void)conn;
	(void)flags;
	(void)code;
	(void)stream_user_data;
	if (s)
		s->closed = 1;
	if (q->base.server && (sid & 0x3) == 0)
		ngtcp2_conn_extend_max_streams_bidi(q->qc, 1);
	return 0;
}

static int cb_stream_reset(ngtcp2_conn *conn, int64_t sid,
                           uint64_t final_size, uint64_t code,
                           void *user_data, void *stream_user_data)
{
	struct quic_conn *q = of_conn(user_data);
	struct qstream *s = stream_find(q, sid);

	(void)conn;
	(void)final_size;
	(void)code;
	(void)stream_user_data;
	if (s)
		s->reset_rx = 1;
	return 0;
}

static int cb_extend_stream(ngtcp2_conn *conn, int64_t sid, uint64_t max,
                            void *user_data, void *stream_user_data)
{
	struct quic_conn *q = of_conn(user_data);
	struct qstream *s = stream_find(q, sid);

	(void)conn;
	(void)max;
	(void)stream_user_data;
	if (s)
		s->blocked = 0;
	return 0;
}

/* Keep the ticket and the server's 0-RTT parameters for the next
 * connection (client), once the ticket has arrived. */
static void save_session(struct quic_conn *q)
{
	uint8_t params[256];
	gnutls_datum_t d;
	ngtcp2_ssize plen;
	uint8_t *blob;
	size_t off = 0, mlen = sizeof(QUIC_SESSION_MAGIC) - 1;

	if (q->ticket_saved || !q->base.sess || q->base.ctx->cfg.no_resume ||
	    !q->hs_done)
		return;
	plen = qc_early_params_encode(q->qc, params, sizeof(params));
	if (plen < 0)
		return;
	if (gnutls_session_get_data2(q->tls, &d) < 0)
		return;
	if (d.size > QUIC_TICKET_MAX) {
		gnutls_free(d.data);
		return;
	}
	blob = malloc(mlen + 8 + d.size + (size_t)plen);
	if (blob) {
		memcpy(blob, QUIC_SESSION_MAGIC, mlen);
		off = mlen;
		qc_put32(blob + off, d.size);
		qc_put32(blob + off + 4, (uint32_t)plen);
		off += 8;
		memcpy(blob + off, d.data, d.size);
		off += d.size;
		memcpy(blob + off, params, (size_t)plen);
		off += (size_t)plen;
		if (tr_session_store(q->base.sess, blob, off) == 0)
			q->ticket_saved = 1;
		free(blob);
	}
	gnutls_free(d.data);
}

static int hook_ticket(gnutls_session_t s, unsigned htype, unsigned when,
                       unsigned incoming, const gnutls_datum_t *msg)
{
	ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
	struct quic_conn *q = ref->user_data;

	(void)when;
	(void)incoming;
	(void)msg;
	if (htype == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET)
		save_session(q);
	return 0;
}

/* Server: refuse a ClientHello that does not ask for our ALPN (GnuTLS's
 * mandatory flag lets one with no ALPN at all through). */
static int hook_client_hello(gnutls_session_t s, unsigned htype,
                             unsigned when, unsigned incoming,
                             const gnutls_datum_t *msg)
{
	ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
	struct quic_conn *q = ref->user_data;
	gnutls_datum_t got;

	(void)htype;
	(void)when;
	(void)incoming;
	(void)msg;
	if (gnutls_alpn_get_selected_protocol(s, &got) != 0 ||
	    got.size != q->x->alpn.size ||
	    memcmp(got.data, q->x->alpn.data, got.size) != 0) {
		q->l->st.alpn_refused++;
		return GNUTLS_E_NO_APPLICATION_PROTOCOL;
	}
	return 0;
}

static int cb_handshake_completed(ngtcp2_conn *conn, void *user_data)
{
	struct quic_conn *q = of_conn(user_data);

	(void)conn;
	q->hs_done = 1;
	q->base.t_ready = clock_ns();
	q->base.notes |= TR_NOTE_READY;
	if (q->base.server) {
		if (gnutls_session_get_flags(q->tls) & GNUTLS_SFLAGS_EARLY_DATA)
			q->l->st.early_accepted++;
		q->l->st.handshakes++;
		if (gnutls_session_ticket_send(q->tls, 1, 0) != 0)
			q->l->st.tickets_failed++;
		return 0;
	}
	if (q->early_offered) {
		if (gnutls_session_get_flags(q->tls) &
		    GNUTLS_SFLAGS_EARLY_DATA) {
			q->early_result = 1;
			q->base.notes |= TR_NOTE_EARLY_ACCEPTED;
		} else {
			q->early_result = -1;
			q->base.notes |= TR_NOTE_EARLY_REJECTED;
			if (qc_early_data_rejected(q->qc) != 0)
				return NGTCP2_ERR_CALLBACK_FAILURE;
			q->reopen = 1;
		}
	}
	return 0;
}

static int cb_path_validation(ngtcp2_conn *conn, uint32_t flags,
                              const ngtcp2_path *path,
                              ngtcp2_path_validation_result res,
                              void *user_data)
{
	struct quic_conn *q = of_conn(user_data);

	(void)conn;
	(void)flags;
	(void)path;
	if (q->base.server) {
		if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS)
			q->l->st.migrations++;
		return 0;
	}
	if (!q->t_rebind || q->t_validated)
		return 0;
	q->t_validated = clock_ns();
	q->path_result = res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS ? 1 : -1;
	q->base.notes |= q->path_result > 0 ? TR_NOTE_PATH_VALIDATED
	                                    : TR_NOTE_PATH_FAILED;
	return 0;
}

static void qlog_write(void *user_data, uint32_t flags, const void *data,
                       size_t len)
{
	struct quic_conn *q = of_conn(user_data);

	if (q->qlog && len)
		(void)fwrite(data, 1, len, q->qlog);
	if (q->qlog && (flags & NGTCP2_QLOG_WRITE_FLAG_FIN)) {
		fclose(q->qlog);
		q->qlog = NULL;
	}
}

/* Open the qlog file of a connection named by cid, when asked. */
static void qlog_open(struct quic_conn *q, const ngtcp2_cid *cid)
{
	const char *dir = q->base.ctx->cfg.qlog_dir;
	char path[512], hex[2 * NGTCP2_MAX_CIDLEN + 1];
	size_t i;

	if (!dir)
		return;
	for (i = 0; i < cid->datalen; i++)
		snprintf(hex + 2 * i, 3, "%02x", cid->data[i]);
	hex[2 * cid->datalen] = '\0';
	snprintf(path, sizeof(path), "%s/%s-%s.sqlog", dir,
	         q->base.server ? "server" : "client", hex);
	q->qlog = fopen(path, "w");
}

static void fill_callbacks(ngtcp2_callbacks *cb, int server)
{
	memset(cb, 0, sizeof(*cb));
	if (server)
		cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
	else {
		cb->client_initial = ngtcp2_crypto_client_initial_cb;
		cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
	}
	cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
	cb->encrypt = ngtcp2_crypto_encrypt_cb;
	cb->decrypt = ngtcp2_crypto_decrypt_cb;
	cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
	cb->update_key = ngtcp2_crypto_update_key_cb;
	cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
	cb->delete_crypto_cipher_ctx =
		ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
	cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
	cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
	cb->rand = cb_rand;
	cb->get_new_connection_id = cb_new_cid;
	cb->remove_connection_id = cb_remove_cid;
	cb->handshake_completed = cb_handshake_completed;
	cb->recv_stream_data = cb_recv_stream_data;
	cb->acked_stream_data_offset = cb_acked;
	cb->stream_close = cb_stream_close;
	cb->stream_reset = cb_stream_reset;
	cb->extend_max_stream_data = cb_extend_stream;
	cb->path_validation = cb_path_validation;
}

static void fill_settings(struct quic_conn *q, ngtcp2_settings *st,
                          int64_t now)
{
	const struct tr_config *cfg = &q->base.ctx->cfg;

	ngtcp2_settings_default(st);
	st->initial_ts = (ngtcp2_tstamp)now;
	st->cc_algo = q->x->cc;
	st->handshake_timeout = (ngtcp2_duration)cfg->connect_timeout_ns;
	/* no PMTU probes: packet counts stay the same run to run */
	st->no_pmtud = 1;
	if (cfg->qlog_dir)
		qc_settings_qlog(st, qlog_write);
}

static void fill_params(struct quic_conn *q, ngtcp2_transport_params *p)
{
	const struct tr_config *cfg = &q->base.ctx->cfg;

	ngtcp2_transport_params_default(p);
	p->initial_max_stream_data_bidi_local = QUIC_STREAM_WINDOW;
	p->initial_max_stream_data_bidi_remote = QUIC_STREAM_WINDOW;
	p->initial_max_data = QUIC_CONN_WINDOW;
	p->initial_max_streams_bidi = q->base.server ? QUIC_MAX_STREAMS : 0;
	p->initial_max_streams_uni = 0;
	p->max_idle_timeout = (ngtcp2_duration)cfg->idle_timeout_ns;
	/* spare connection IDs: one per migration we may make */
	p->active_connection_id_limit = 8;
}

/* The GnuTLS side of a connection. 0 or an error with the message. */
static int tls_setup(struct quic_conn *q)
{
	struct quic_ctx *x = q->x;
	const struct tr_config *cfg = &q->base.ctx->cfg;
	unsigned flags = q->base.server
	                         ? GNUTLS_SERVER | GNUTLS_ENABLE_EARLY_DATA |
	                                   GNUTLS_NO_AUTO_SEND_TICKET |
	                                   GNUTLS_NO_END_OF_EARLY_DATA
	                         : GNUTLS_CLIENT | GNUTLS_ENABLE_EARLY_DATA |
	                                   GNUTLS_NO_END_OF_EARLY_DATA;
	int r;

	r = gnutls_init(&q->tls, flags);
	if (r < 0) {
		q->tls = NULL;
		return qfail(q, TR_ENOMEM, "QUIC: TLS session: %s",
		             gnutls_strerror(r));
	}
	q->ref.get_conn = get_conn;
	q->ref.user_data = q;
	gnutls_session_set_ptr(q->tls, &q->ref);
	r = q->base.server ? ngtcp2_crypto_gnutls_configure_server_session(
		                     q->tls)
	                   : ngtcp2_crypto_gnutls_configure_client_session(
		                     q->tls);
	if (r != 0)
		return qfail(q, TR_ETLS, "QUIC: cannot set up TLS for QUIC");
	if ((r = gnutls_priority_set(q->tls, x->prio)) < 0 ||
	    (r = gnutls_credentials_set(q->tls, GNUTLS_CRD_CERTIFICATE,
	                                x->cred)) < 0 ||
	    (x->alpn.size > 0 &&
	     (r = gnutls_alpn_set_protocols(
		      q->tls, &x->alpn, 1,
		      GNUTLS_ALPN_MANDATORY |
		              (q->base.server ? GNUTLS_ALPN_SERVER_PRECEDENCE
		                              : 0))) < 0))
		return qfail(q, TR_ETLS, "QUIC: TLS setup: %s",
		             gnutls_strerror(r));
	if (q->base.server) {
		if ((r = gnutls_session_ticket_enable_server(
			     q->tls, &x->ticket_key)) < 0 ||
		    (r = gnutls_record_set_max_early_data_size(q->tls,
		                                               0xffffffffu)) <
		            0)
			return qfail(q, TR_ETLS, "QUIC: TLS setup: %s",
			             gnutls_strerror(r));
		gnutls_anti_replay_enable(q->tls, x->ar);
		gnutls_handshake_set_hook_function(q->tls,
		                                   GNUTLS_HANDSHAKE_CLIENT_HELLO,
		                                   GNUTLS_HOOK_POST,
		                                   hook_client_hello);
		return 0;
	}
	if (!x->name_is_ip &&
	    (r = gnutls_server_name_set(q->tls, GNUTLS_NAME_DNS,
	                                cfg->server_name,
	                                strlen(cfg->server_name))) < 0)
		return qfail(q, TR_ETLS, "QUIC: TLS server name: %s",
		             gnutls_strerror(r));
	if (!cfg->insecure)
		gnutls_session_set_verify_cert(q->tls, cfg->server_name, 0);
	gnutls_handshake_set_hook_function(q->tls, GNUTLS_HANDSHAKE_ANY,
	                                   GNUTLS_HOOK_POST, hook_ticket);
	return 0;
}

/* ---- client connections ---- */

/* Apply a stored ticket and 0-RTT parameters. 1 when 0-RTT may go. */
static int apply_session(struct quic_conn *q)
{
	size_t len, mlen = sizeof(QUIC_SESSION_MAGIC) - 1;
	const uint8_t *d = tr_session_data(q->base.sess, &len);
	uint32_t tlen, plen;

	if (!d || q->base.ctx->cfg.no_resume || len < mlen + 8 ||
	    memcmp(d, QUIC_SESSION_MAGIC, mlen) != 0)
		return 0;
	tlen = qc_get32(d + mlen);
	plen = qc_get32(d + mlen + 4);
	if ((size_t)tlen + plen + mlen + 8 != len)
		return 0;
	if (gnutls_session_set_data(q->tls, d + mlen + 8, tlen) < 0)
		return 0;
	if (!q->base.ctx->cfg.early_data)
		return 0; /* resumption without 0-RTT */
	if (qc_early_params_apply(q->qc, d + mlen + 8 + tlen, plen) != 0)
		return 0;
	return 1;
}

static void quic_free(struct tr_conn *c);

static int quic_open(struct tr_ctx *ctx, struct tr_session *sess,
                     int64_t now, struct tr_conn **out)
{
	struct quic_conn *q = calloc(1, sizeof(*q));
	ngtcp2_callbacks cb;
	ngtcp2_settings st;
	ngtcp2_transport_params p;
	ngtcp2_cid dcid, scid;
	ngtcp2_path path;
	char what[160];
	int r;

	*out = NULL;
	if (!q)
		return TR_ENOMEM;
	tr_base_init(&q->base, ctx->ops, ctx, sess);
	q->x = ctx->impl;
	q->base.t_start = now;
	*out = &q->base;
	q->base.fd = sock_new(q, ctx->locallen
	                                 ? (struct sockaddr *)&ctx->local
	                                 : NULL,
	                      ctx->locallen, what, sizeof(what));
	if (q->base.fd < 0) {
		qfail(q, TR_ECONNECT, "QUIC connect to %s: %s", ctx->peer,
		      what);
		return 0;
	}
	memcpy(&q->remote, &ctx->addr, ctx->addrlen);
	q->remotelen = ctx->addrlen;
	dcid.datalen = 18;
	rand_bytes(dcid.data, dcid.datalen);
	scid.datalen = QUIC_SCID_LEN;
	rand_bytes(scid.data, scid.datalen);
	fill_callbacks(&cb, 0);
	fill_settings(q, &st, now);
	fill_params(q, &p);
	path.local.addr = (ngtcp2_sockaddr *)&q->local;
	path.local.addrlen = q->locallen;
	path.remote.addr = (ngtcp2_sockaddr *)&q->remote;
	path.remote.addrlen = q->remotelen;
	path.user_data = NULL;
	if (ctx->cfg.qlog_dir)
		qlog_open(q, &dcid);
	r = ngtcp2_conn_client_new(&q->qc, &dcid, &scid, &path,
	                           NGTCP2_PROTO_VER_V1, &cb, &st, &p, NULL,
	                           q);
	if (r != 0) {
		q->qc = NULL;
		qfail(q, r == NGTCP2_ERR_NOMEM ? TR_ENOMEM : TR_EQUIC,
		      "QUIC connect to %s: %s", ctx->peer, ngtcp2_strerror(r));
		return 0;
	}
	if (tls_setup(q) < 0)
		return 0;
	ngtcp2_conn_set_tls_native_handle(q->qc, q->tls);
	q->early_offered = apply_session(q);
	return 0;
}

/* Read what the socket has (client), feeding ngtcp2. The number of
 * datagrams read, or an error. */
static int read_socket(struct quic_conn *q, int64_t now)
{
	int n = 0;

	while (n < QUIC_READS_PER_ROUND) {
		ngtcp2_path path;
		ngtcp2_pkt_info pi;
		ssize_t len;
		int rv;

		do
			len = recv(q->base.fd, rxbuf, sizeof(rxbuf), 0);
		while (len < 0 && errno == EINTR);
		if (len < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == ECONNREFUSED) {
				/* ICMP port unreachable: nobody listens (yet);
				 * the handshake timeout decides */
				continue;
			}
			q->base.sys_errno = errno;
			return qfail(q, TR_EIO, "QUIC receive from %s: %s",
			             who(q), strerror(errno));
		}
		n++;
		if (len == 0)
			continue; /* not a QUIC packet; ngtcp2 wants bytes */
		q->base.wire_in += (uint64_t)len;
		q->pkts_in++;
		if (!q->base.t_connected)
			q->base.t_connected = clock_ns();
		path.local.addr = (ngtcp2_sockaddr *)&q->local;
		path.local.addrlen = q->locallen;
		path.remote.addr = (ngtcp2_sockaddr *)&q->remote;
		path.remote.addrlen = q->remotelen;
		path.user_data = NULL;
		memset(&pi, 0, sizeof(pi));
		rv = ngtcp2_conn_read_pkt(q->qc, &path, &pi, rxbuf, (size_t)len,
		                          (ngtcp2_tstamp)now);
		if (rv != 0) {
			lib_error(q, rv, "receive");
			write_close(q, now);
			return q->err;
		}
	}
	return n;
}

/* After a rejected 0-RTT: reopen the streams (ngtcp2 gives the same ids
 * in the same order) and send everything again from offset 0. */
static int reopen_streams(struct quic_conn *q)
{
	struct qstream *s;

	q->reopen = 0;
	for (s = q->streams; s; s = s->next) {
		int64_t sid;
		int rv = ngtcp2_conn_open_bidi_stream(q->qc, &sid, NULL);

		if (rv != 0 || sid != s->sid)
			return qfail(q, TR_EQUIC,
			             "QUIC: cannot reopen stream %lld after a "
			             "rejected 0-RTT: %s", (long long)s->sid,
			             rv ? ngtcp2_strerror(rv) : "new id");
		s->written = 0;
		s->acked = 0;
		s->fin_sent = 0;
		s->blocked = 0;
	}
	return 0;
}

/* Read, then write: one round of a client connection's progress. */
static int client_round(struct quic_conn *q, int64_t now)
{
	int r;

	if (q->err)
		return q->err;
	r = read_socket(q, now);
	if (r < 0)
		return r;
	if (q->reopen && reopen_streams(q) < 0)
		return q->err;
	return write_loop(q, now);
}

static int quic_handshake(struct tr_conn *c, int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;
	int r;

	if (q->err)
		return q->err;
	if (c->server) {
		/* fed by the listener */
		if (q->hs_done)
			return 0;
		return TR_AGAIN;
	}
	if (!q->started) {
		/* With 0-RTT, write nothing yet: the caller opens its
		 * streams and queues CONNECT first, so that the Initial and
		 * the 0-RTT packet carrying CONNECT leave together with the
		 * caller's first write (or progress call). */
		if (q->early_offered)
			return TR_EARLY;
		r = write_loop(q, now); /* the Initial */
		if (r < 0)
			return r;
		return TR_AGAIN;
	}
	r = client_round(q, now);
	if (r < 0)
		return r;
	if (q->hs_done) {
		gnutls_datum_t alpn;

		if (q->x->alpn.size == 0)
			return 0; /* none offered (tests of the server) */
		if (gnutls_alpn_get_selected_protocol(q->tls, &alpn) != 0 ||
		    alpn.size != q->x->alpn.size ||
		    memcmp(alpn.data, q->x->alpn.data, alpn.size) != 0) {
			qfail(q, TR_ETLS, "QUIC handshake with %s: no ALPN "
			      "\"%.*s\" agreed", who(q), (int)q->x->alpn.size,
			      (const char *)q->x->alpn.data);
			write_close(q, now);
			return q->err;
		}
		return 0;
	}
	return q->early_offered ? TR_EARLY : TR_AGAIN;
}

static int quic_stream_open(struct tr_conn *c, int64_t *sid)
{
	struct quic_conn *q = (struct quic_conn *)c;
	int rv;

	if (q->err)
		return q->err;
	rv = ngtcp2_conn_open_bidi_stream(q->qc, sid, NULL);
	if (rv != 0)
		return qfail(q, rv == NGTCP2_ERR_STREAM_ID_BLOCKED ? TR_ESTATE
		                                                   : TR_EQUIC,
		             "QUIC: cannot open a stream to %s: %s", who(q),
		             ngtcp2_strerror(rv));
	if (!stream_add(q, *sid))
		return qfail(q, TR_ENOMEM, "out of memory");
	q->streams_opened++;
	return 0;
}

static ssize_t quic_send(struct tr_conn *c, int64_t sid, const uint8_t *buf,
                         size_t len, int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;
	struct qstream *s;
	size_t n;

	if (q->err)
		return q->err;
	s = stream_find(q, sid);
	if (!s || s->fin_asked || s->closed)
		return tr_fail(c, TR_ESTATE, "QUIC send to %s: stream %lld "
		               "is not open for sending", who(q),
		               (long long)sid);
	n = stream_append(s, buf, len);
	if (n == 0)
		return TR_AGAIN;
	/* Write now: the packet leaves with this call, not a round later.
	 * A failure here is kept and told by the next call. */
	(void)write_loop(q, now);
	return (ssize_t)n;
}

/* Hand the caller buffered bytes of s. */
static ssize_t take(struct quic_conn *q, struct qstream *s, uint8_t *buf,
                    size_t len)
{
	size_t n = s->rlen - s->roff;

	if (n > len)
		n = len;
	memcpy(buf, s->rbuf + s->roff, n);
	s->roff += n;
	if (s->roff == s->rlen) {
		/* drained: an idle stream holds no buffer */
		s->roff = s->rlen = 0;
		free(s->rbuf);
		s->rbuf = NULL;
		s->rcap = 0;
	}
	/* the caller has the bytes: the peer may send as many more */
	ngtcp2_conn_extend_max_stream_offset(q->qc, s->sid, n);
	ngtcp2_conn_extend_max_offset(q->qc, n);
	return (ssize_t)n;
}

/* What stream s has for the caller: bytes, EOF/reset once, or 0. */
static ssize_t stream_take(struct quic_conn *q, struct qstream *s,
                           uint8_t *buf, size_t len)
{
	if (s->rlen > s->roff)
		return take(q, s, buf, len);
	if (s->reset_rx && !s->reset_told) {
		s->reset_told = 1;
		return TR_ERESET;
	}
	if (s->rfin && !s->eof_told) {
		s->eof_told = 1;
		return TR_EOF;
	}
	return 0;
}

static ssize_t quic_recv(struct tr_conn *c, int64_t *sid, uint8_t *buf,
                         size_t len, int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;
	int round;

	for (round = 0; round < 2; round++) {
		struct qstream *s;
		ssize_t n;

		if (*sid >= 0) {
			s = stream_find(q, *sid);
			if (s && (n = stream_take(q, s, buf, len)) != 0)
				return n;
		} else {
			for (s = q->streams; s; s = s->next) {
				if (s->peer_opened && !s->given)
					continue; /* accept_stream first */
				if ((n = stream_take(q, s, buf, len)) != 0) {
					*sid = s->sid;
					return n;
				}
			}
		}
		if (q->err)
			return q->err;
		if (round || c->server)
			break;
		/* nothing buffered: read the socket once */
		if (client_round(q, now) <= 0 && q->err)
			return q->err;
	}
	return TR_AGAIN;
}

static int quic_accept_stream(struct tr_conn *c, int64_t *sid)
{
	struct quic_conn *q = (struct quic_conn *)c;
	struct qstream *s;

	for (s = q->streams; s; s = s->next) {
		if (s->peer_opened && !s->given) {
			s->given = 1;
			*sid = s->sid;
			return 0;
		}
	}
	return TR_AGAIN;
}

static int quic_progress(struct tr_conn *c, int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;

	if (q->err)
		return q->err;
	if (q->reopen && reopen_streams(q) < 0)
		return q->err;
	return write_loop(q, now);
}

static uint32_t quic_events(const struct tr_conn *c)
{
	const struct quic_conn *q = (const struct quic_conn *)c;

	if (q->err)
		return 0;
	return EV_READ | (q->held ? EV_WRITE : 0);
}

static int64_t quic_expiry(const struct tr_conn *c)
{
	const struct quic_conn *q = (const struct quic_conn *)c;
	ngtcp2_tstamp t;

	if (q->err || !q->qc)
		return EV_NEVER;
	t = ngtcp2_conn_get_expiry(q->qc);
	return t >= (ngtcp2_tstamp)EV_NEVER ? EV_NEVER : (int64_t)t;
}

static int quic_on_expiry(struct tr_conn *c, int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;
	int rv;

	if (q->err)
		return q->err;
	if (quic_expiry(c) > now)
		return 0;
	rv = ngtcp2_conn_handle_expiry(q->qc, (ngtcp2_tstamp)now);
	if (rv != 0) {
		lib_error(q, rv, "timer");
		/* an idle close is silent; the rest tell the peer */
		if (rv != NGTCP2_ERR_IDLE_CLOSE)
			write_close(q, now);
		else
			q->closing = 1;
		return q->err;
	}
	return write_loop(q, now);
}

static int quic_shutdown(struct tr_conn *c, int64_t sid, int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;
	struct qstream *s;

	if (q->err)
		return q->err == TR_EOF ? 0 : q->err;
	s = stream_find(q, sid);
	if (!s)
		return tr_fail(c, TR_ESTATE, "QUIC: no stream %lld",
		               (long long)sid);
	s->fin_asked = 1;
	(void)write_loop(q, now);
	return 0;
}

static int quic_reset(struct tr_conn *c, int64_t sid, uint64_t code,
                      int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;
	struct qstream *s = stream_find(q, sid);

	if (q->err)
		return q->err;
	if (s)
		s->closed = 1;
	(void)qc_shutdown_stream(q->qc, sid, code);
	return write_loop(q, now);
}

static int quic_rebind(struct tr_conn *c, const struct sockaddr *local,
                       socklen_t len, int64_t now)
{
	struct quic_conn *q = (struct quic_conn *)c;
	struct sockaddr_storage want;
	struct sockaddr_storage old_local = q->local;
	socklen_t old_len = q->locallen, wlen;
	ngtcp2_path path;
	char what[160];
	int fd, rv;

	if (q->err)
		return q->err;
	if (c->server || !q->hs_done)
		return tr_fail(c, TR_ESTATE, "QUIC: migration needs a client "
		               "connection past its handshake");
	if (local) {
		memcpy(&want, local, len);
		wlen = len;
	} else {
		/* same address, a new port */
		want = q->local;
		wlen = q->locallen;
		if (want.ss_family == AF_INET)
			((struct sockaddr_in *)&want)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&want)->sin6_port = 0;
	}
	fd = sock_new(q, (struct sockaddr *)&want, wlen, what, sizeof(what));
	if (fd < 0) {
		q->local = old_local;
		q->locallen = old_len;
		return tr_fail(c, TR_ECONFIG, "QUIC: cannot move to a new "
		               "local address: %s", what);
	}
	path.local.addr = (ngtcp2_sockaddr *)&q->local;
	path.local.addrlen = q->locallen;
	path.remote.addr = (ngtcp2_sockaddr *)&q->remote;
	path.remote.addrlen = q->remotelen;
	path.user_data = NULL;
	rv = ngtcp2_conn_initiate_immediate_migration(q->qc, &path,
	                                              (ngtcp2_tstamp)now);
	if (rv != 0) {
		close(fd);
		q->local = old_local;
		q->locallen = old_len;
		return tr_fail(c, TR_ESTATE, "QUIC: migration refused: %s",
		               ngtcp2_strerror(rv));
	}
	/* the old address is gone: packets still on their way to it are
	 * lost and recovered like any loss */
	close(c->fd);
	c->fd = fd;
	free(q->held);
	q->held = NULL;
	q->t_rebind = now;
	q->t_validated = 0;
	q->path_result = 0;
	q->migrations++;
	return write_loop(q, now);
}

static void quic_info(const struct tr_conn *c, struct tr_info *out)
{
	const struct quic_conn *q = (const struct quic_conn *)c;
	gnutls_datum_t alpn;
	const char *s;

	out->early = q->early_result;
	if (!q->tls || !q->hs_done)
		return;
	out->resumed = gnutls_session_is_resumed(q->tls) != 0;
	snprintf(out->version, sizeof(out->version), "QUICv1");
	s = gnutls_cipher_get_name(gnutls_cipher_get(q->tls));
	snprintf(out->cipher, sizeof(out->cipher), "%s", s ? s : "");
	if (gnutls_alpn_get_selected_protocol(q->tls, &alpn) == 0)
		snprintf(out->alpn, sizeof(out->alpn), "%.*s", (int)alpn.size,
		         (const char *)alpn.data);
	out->local_port = ntohs(q->local.ss_family == AF_INET6
	                                ? ((const struct sockaddr_in6 *)&q
	                                           ->local)
	                                          ->sin6_port
	                                : ((const struct sockaddr_in *)&q
	                                           ->local)
	                                          ->sin_port);
}

static void quic_stats(const struct tr_conn *c, struct tr_stats *out)
{
	const struct quic_conn *q = (const struct quic_conn *)c;
	const struct qstream *s;
	qc_stat st;
	int64_t buffered = 0;

	if (!q->qc)
		return;
	qc_get_stat(q->qc, &st);
	out->srtt_ns = (int64_t)st.smoothed_rtt;
	out->rttvar_ns = (int64_t)st.rttvar;
	out->min_rtt_ns = st.min_rtt == UINT64_MAX ? -1 : (int64_t)st.min_rtt;
	out->latest_rtt_ns = (int64_t)st.latest_rtt;
	out->cwnd_bytes = (int64_t)st.cwnd;
	out->inflight_bytes = (int64_t)st.bytes_in_flight;
	out->segs_out = (int64_t)q->pkts_out;
	out->segs_in = (int64_t)q->pkts_in;
	for (s = q->streams; s; s = s->next)
		buffered += (int64_t)(s->total - s->acked);
	out->buffered = buffered;
	switch (q->x->cc) {
	case NGTCP2_CC_ALGO_RENO: snprintf(out->cc, sizeof(out->cc), "reno");
		break;
	case NGTCP2_CC_ALGO_BBR: snprintf(out->cc, sizeof(out->cc), "bbr");
		break;
#if QC_HAS_BBR2
	case NGTCP2_CC_ALGO_BBR2: snprintf(out->cc, sizeof(out->cc), "bbr2");
		break;
#endif
	default: snprintf(out->cc, sizeof(out->cc), "cubic");
		break;
	}
}

int quic_migration_info(const struct tr_conn *c, int64_t *t_rebind,
                        int64_t *t_validated, unsigned *migrations)
{
	const struct quic_conn *q = (const struct quic_conn *)c;

	if (c->ops != &tr_quic_ops)
		return -1;
	*t_rebind = q->t_rebind;
	*t_validated = q->t_validated;
	*migrations = q->migrations;
	return q->path_result;
}

static void conn_release(struct quic_conn *q);

static void quic_free(struct tr_conn *c)
{
	struct quic_conn *q = (struct quic_conn *)c;

	if (q->l) {
		/* the listener finishes its closing period */
		if (!q->closing && !q->err)
			write_close(q, clock_ns());
		q->released = 1;
		conn_release(q);
		return;
	}
	if (q->qc && !q->err)
		write_close(q, clock_ns());
	while (q->streams) {
		struct qstream *s = q->streams;

		q->streams = s->next;
		stream_free(s);
	}
	if (q->qc)
		ngtcp2_conn_del(q->qc);
	if (q->tls)
		gnutls_deinit(q->tls);
	if (q->qlog)
		fclose(q->qlog);
	free(q->held);
	tr_base_free(c);
	free(q);
}

/* ---- server side ---- */

static size_t cid_hash(const ngtcp2_cid *cid, size_t n)
{
	return replay_hash(cid->data, cid->datalen, n);
}

static struct quic_conn *cid_map_find(struct quic_listener *l,
                                      const uint8_t *data, size_t len)
{
	struct cid_node *nd;
	ngtcp2_cid cid;

	if (!l->nmap || len > NGTCP2_MAX_CIDLEN)
		return NULL;
	cid.datalen = len;
	memcpy(cid.data, data, len);
	for (nd = l->map[cid_hash(&cid, l->nmap)]; nd; nd = nd->next)
		if (ngtcp2_cid_eq(&nd->cid, &cid))
			return nd->q;
	return NULL;
}

static int cid_map_add(struct quic_listener *l, const ngtcp2_cid *cid,
                       struct quic_conn *q)
{
	struct cid_node *nd;
	size_t b;

	if (l->nnodes >= l->nmap) {
		size_t n = l->nmap ? l->nmap * 2 : 256, i;
		struct cid_node **m = calloc(n, sizeof(*m));

		if (!m)
			return -1;
		for (i = 0; i < l->nmap; i++) {
			while (l->map[i]) {
				nd = l->map[i];
				l->map[i] = nd->next;
				b = cid_hash(&nd->cid, n);
				nd->next = m[b];
				m[b] = nd;
			}
		}
		free(l->map);
		l->map = m;
		l->nmap = n;
	}
	nd = malloc(sizeof(*nd));
	if (!nd)
		return -1;
	nd->cid = *cid;
	nd->q = q;
	b = cid_hash(cid, l->nmap);
	nd->next = l->map[b];
	l->map[b] = nd;
	l->nnodes++;
	if (q->ncids < QUIC_MAX_CIDS)
		q->cids[q->ncids++] = *cid;
	return 0;
}

static void cid_map_del(struct quic_listener *l, const ngtcp2_cid *cid)
{
	struct cid_node **pp;

	if (!l->nmap)
		return;
	for (pp = &l->map[cid_hash(cid, l->nmap)]; *pp; pp = &(*pp)->next) {
		if (ngtcp2_cid_eq(&(*pp)->cid, cid)) {
			struct cid_node *nd = *pp;

			*pp = nd->next;
			free(nd);
			l->nnodes--;
			return;
		}
	}
}

static void ready_push(struct quic_listener *l, struct quic_conn *q)
{
	if (q->queued || q->released)
		return;
	q->queued = 1;
	q->rnext = NULL;
	if (l->ready_tail)
		l->ready_tail->rnext = q;
	else
		l->ready_head = q;
	l->ready_tail = q;
}

static void ready_unlink(struct quic_listener *l, struct quic_conn *q)
{
	struct quic_conn **pp;

	if (!q->queued)
		return;
	for (pp = &l->ready_head; *pp; pp = &(*pp)->rnext) {
		if (*pp == q) {
			*pp = q->rnext;
			break;
		}
	}
	l->ready_tail = NULL;
	for (struct quic_conn *r = l->ready_head; r; r = r->rnext)
		l->ready_tail = r;
	q->queued = 0;
}

/* Free a server conn for good: out of the map and the lists. */
static void server_destroy(struct quic_conn *q)
{
	struct quic_listener *l = q->l;
	struct quic_conn **pp;
	size_t i;

	for (i = 0; i < q->ncids; i++)
		cid_map_del(l, &q->cids[i]);
	ready_unlink(l, q);
	for (pp = &l->conns; *pp; pp = &(*pp)->lnext) {
		if (*pp == q) {
			*pp = q->lnext;
			break;
		}
	}
	l->st.conns_now--;
	q->l = NULL;
	free(q->close_pkt);
	q->close_pkt = NULL;
	quic_free(&q->base);
}

/* The caller closed q: free it now, or after its closing period. */
static void conn_release(struct quic_conn *q)
{
	ready_unlink(q->l, q);
	if (q->close_pkt && q->close_until > clock_ns())
		return; /* kept to answer stray packets; freed by the sweep */
	server_destroy(q);
}

/* Free released conns whose closing period is over. */
static void sweep(struct quic_listener *l, int64_t now)
{
	struct quic_conn *q = l->conns, *next;

	for (; q; q = next) {
		next = q->lnext;
		if (q->released && q->close_until <= now)
			server_destroy(q);
	}
}

static int listener_send(struct quic_listener *l, const uint8_t *buf,
                         size_t len, const struct sockaddr *to,
                         socklen_t tolen)
{
	ssize_t n;

	do
		n = sendto(l->base.fd, buf, len, 0, to, tolen);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -1 : 0;
}

static void send_version_negotiation(struct quic_listener *l,
                                     const ngtcp2_version_cid *vc,
                                     const struct sockaddr *to,
                                     socklen_t tolen)
{
	uint8_t buf[QUIC_PKT_MAX], unused;
	uint32_t sv[2];
	ngtcp2_ssize n;

	sv[0] = NGTCP2_PROTO_VER_V1;
	sv[1] = 0x1a2a3a4a; /* a reserved version, so clients see grease */
	rand_bytes(&unused, 1);
	n = ngtcp2_pkt_write_version_negotiation(buf, sizeof(buf), unused,
	                                         vc->scid, vc->scidlen,
	                                         vc->dcid, vc->dcidlen, sv, 2);
	if (n > 0 && listener_send(l, buf, (size_t)n, to, tolen) == 0)
		l->st.version_negotiations++;
}

static void send_stateless_reset(struct quic_listener *l, const uint8_t *dcid,
                                 size_t dcidlen, size_t pktlen,
                                 const struct sockaddr *to, socklen_t tolen)
{
	uint8_t buf[QUIC_PKT_MAX], token[NGTCP2_STATELESS_RESET_TOKENLEN];
	uint8_t rnd[NGTCP2_MAX_CIDLEN + 22];
	ngtcp2_cid cid;
	size_t randlen;
	ngtcp2_ssize n;

	/* shorter than the packet that provoked it, so resets cannot loop */
	if (pktlen < QUIC_SCID_LEN + 22 || dcidlen > NGTCP2_MAX_CIDLEN)
		return;
	randlen = pktlen - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
	if (randlen > sizeof(rnd))
		randlen = sizeof(rnd);
	cid.datalen = dcidlen;
	memcpy(cid.data, dcid, dcidlen);
	if (ngtcp2_crypto_generate_stateless_reset_token(
		    token, l->x->secret, sizeof(l->x->secret), &cid) != 0)
		return;
	rand_bytes(rnd, randlen);
	n = ngtcp2_pkt_write_stateless_reset(buf, sizeof(buf), token, rnd,
	                                     randlen);
	if (n > 0 && listener_send(l, buf, (size_t)n, to, tolen) == 0)
		l->st.stateless_resets++;
}

/* Retry: ask a new client to come back with a token proving its address.
 * 1 when a Retry went out (drop the packet), 0 to go on with odcid and
 * the token verified, -1 to drop. */
static int retry_check(struct quic_listener *l, const ngtcp2_pkt_hd *hd,
                       const struct sockaddr *from, socklen_t fromlen,
                       int64_t now, ngtcp2_cid *odcid)
{
	uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN], buf[QUIC_PKT_MAX];
	ngtcp2_cid scid;
	ngtcp2_ssize tlen, n;
	struct timespec ts;
	ngtcp2_tstamp wall;

	/* tokens carry wall-clock time: they must verify across processes */
	clock_gettime(CLOCK_REALTIME, &ts);
	wall = (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS +
	       (ngtcp2_tstamp)ts.tv_nsec;
	(void)now;
	if (hd->token.len == 0) {
		scid.datalen = QUIC_SCID_LEN;
		rand_bytes(scid.data, scid.datalen);
		tlen = ngtcp2_crypto_generate_retry_token(
			token, l->x->secret, sizeof(l->x->secret), hd->version,
			(const ngtcp2_sockaddr *)from, fromlen, &scid,
			&hd->dcid, wall);
		if (tlen < 0)
			return -1;
		n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version,
		                              &hd->scid, &scid, &hd->dcid, token,
		                              (size_t)tlen);
		if (n > 0 && listener_send(l, buf, (size_t)n, from, fromlen) == 0)
			l->st.retries++;
		return 1;
	}
	if (hd->token.base[0] != NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY ||
	    ngtcp2_crypto_verify_retry_token(
		    odcid, hd->token.base, hd->token.len, l->x->secret,
		    sizeof(l->x->secret), hd->version,
		    (const ngtcp2_sockaddr *)from, fromlen, &hd->dcid,
		    10 * NGTCP2_SECONDS, wall) != 0) {
		l->st.bad_tokens++;
		n = ngtcp2_crypto_write_connection_close(
			buf, sizeof(buf), hd->version, &hd->scid, &hd->dcid,
			NGTCP2_INVALID_TOKEN, NULL, 0);
		if (n > 0)
			(void)listener_send(l, buf, (size_t)n, from, fromlen);
		return -1;
	}
	return 0;
}

/* A new connection from a valid Initial. NULL when refused. */
static struct quic_conn *server_new(struct quic_listener *l,
                                    const ngtcp2_pkt_hd *hd,
                                    const struct sockaddr *from,
                                    socklen_t fromlen, int64_t now)
{
	struct tr_ctx *ctx = l->base.ctx;
	struct quic_conn *q;
	ngtcp2_callbacks cb;
	ngtcp2_settings st;
	ngtcp2_transport_params p;
	ngtcp2_cid scid, odcid = hd->dcid;
	ngtcp2_path path;
	int retried = 0, r;

	if (ctx->cfg.retry) {
		r = retry_check(l, hd, from, fromlen, now, &odcid);
		if (r != 0)
			return NULL;
		retried = 1;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	tr_base_init(&q->base, ctx->ops, ctx, NULL);
	q->base.server = 1;
	q->base.t_start = q->base.t_connected = now;
	q->x = l->x;
	q->l = l;
	q->started = 1;
	memcpy(&q->remote, from, fromlen);
	q->remotelen = fromlen;
	q->locallen = sizeof(q->local);
	(void)getsockname(l->base.fd, (struct sockaddr *)&q->local,
	                  &q->locallen);
	scid.datalen = QUIC_SCID_LEN;
	rand_bytes(scid.data, scid.datalen);
	fill_callbacks(&cb, 1);
	fill_settings(q, &st, now);
	fill_params(q, &p);
	qc_params_set_odcid(&p, &odcid);
	if (retried) {
		p.retry_scid = hd->dcid;
		p.retry_scid_present = 1;
		st.token.base = hd->token.base;
		st.token.len = hd->token.len;
	}
	p.stateless_reset_token_present = 1;
	if (ngtcp2_crypto_generate_stateless_reset_token(
		    p.stateless_reset_token, l->x->secret,
		    sizeof(l->x->secret), &scid) != 0) {
		free(q);
		return NULL;
	}
	path.local.addr = (ngtcp2_sockaddr *)&q->local;
	path.local.addrlen = q->locallen;
	path.remote.addr = (ngtcp2_sockaddr *)&q->remote;
	path.remote.addrlen = q->remotelen;
	path.user_data = NULL;
	if (ctx->cfg.qlog_dir) {
		qlog_open(q, &hd->dcid);
#if NGTCP2_VERSION_NUM < 0x010000
		st.qlog.odcid = hd->dcid;
#endif
	}
	r = ngtcp2_conn_server_new(&q->qc, &hd->scid, &scid, &path,
	                           hd->version, &cb, &st, &p, NULL, q);
	if (r != 0) {
		q->qc = NULL;
		if (q->qlog)
			fclose(q->qlog);
		free(q);
		return NULL;
	}
	q->lnext = l->conns;
	l->conns = q;
	l->st.conns_now++;
	l->st.conns_total++;
	if (tls_setup(q) < 0 || cid_map_add(l, &scid, q) < 0 ||
	    cid_map_add(l, &hd->dcid, q) < 0) {
		q->released = 1;
		server_destroy(q);
		return NULL;
	}
	ngtcp2_conn_set_tls_native_handle(q->qc, q->tls);
	q->base.notes |= TR_NOTE_NEW;
	return q;
}

/* Feed one datagram to a server conn; errors close it (it still goes on
 * the ready list, so the caller learns). */
static void server_feed(struct quic_conn *q, const uint8_t *pkt, size_t len,
                        const struct sockaddr *from, socklen_t fromlen,
                        int64_t now)
{
	ngtcp2_path path;
	ngtcp2_pkt_info pi;
	int rv;

	q->base.wire_in += len;
	q->pkts_in++;
	if (q->closing) {
		/* answer at most once per PTO with the saved close */
		if (q->close_pkt && now - q->close_sent_at >
		                            (int64_t)ngtcp2_conn_get_pto(q->qc)) {
			(void)listener_send(q->l, q->close_pkt, q->close_len,
			                    from, fromlen);
			q->close_sent_at = now;
		}
		return;
	}
	if (q->err)
		return;
	/* the path this packet came on: a client that migrated shows up
	 * here with a new address, and ngtcp2 validates it */
	memcpy(&q->remote, from, fromlen);
	q->remotelen = fromlen;
	path.local.addr = (ngtcp2_sockaddr *)&q->local;
	path.local.addrlen = q->locallen;
	path.remote.addr = (ngtcp2_sockaddr *)&q->remote;
	path.remote.addrlen = q->remotelen;
	path.user_data = NULL;
	memset(&pi, 0, sizeof(pi));
	rv = ngtcp2_conn_read_pkt(q->qc, &path, &pi, pkt, len,
	                          (ngtcp2_tstamp)now);
	if (rv == NGTCP2_ERR_DRAINING) {
		peer_closed(q);
		if (!q->hs_done) /* the client gave up: a certificate it
		                    refused, say */
			q->l->st.handshake_failures++;
		q->closing = 1;
		q->close_until = now + 3 * (int64_t)ngtcp2_conn_get_pto(q->qc);
	} else if (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY) {
		qfail(q, TR_EQUIC, "QUIC: connection dropped");
		q->closing = 1;
	} else if (rv != 0) {
		lib_error(q, rv, "receive");
		if (rv == NGTCP2_ERR_CRYPTO)
			q->l->st.handshake_failures++;
		else
			q->l->st.protocol_errors++;
		write_close(q, now);
	}
	ready_push(q->l, q);
}

/* Read the listener's socket: at most one round's worth of datagrams. */
static void listener_read(struct quic_listener *l, int64_t now)
{
	int i;

	for (i = 0; i < QUIC_READS_PER_ROUND; i++) {
		struct sockaddr_storage from;
		socklen_t fromlen = sizeof(from);
		ngtcp2_version_cid vc;
		struct quic_conn *q;
		ssize_t len;
		int rv;

		do
			len = recvfrom(l->base.fd, rxbuf, sizeof(rxbuf), 0,
			               (struct sockaddr *)&from, &fromlen);
		while (len < 0 && errno == EINTR);
		if (len < 0)
			return; /* EAGAIN, or an ICMP error: nothing to do */
		l->st.datagrams_in++;
		l->st.bytes_in += (uint64_t)len;
		if (len == 0) {
			/* ngtcp2 asserts on an empty packet: a datagram of
			 * zero bytes would bring the gateway down */
			l->st.garbage++;
			continue;
		}
		rv = ngtcp2_pkt_decode_version_cid(&vc, rxbuf, (size_t)len,
		                                   QUIC_SCID_LEN);
		if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
			send_version_negotiation(l, &vc,
			                         (struct sockaddr *)&from,
			                         fromlen);
			continue;
		}
		if (rv != 0) {
			l->st.garbage++;
			continue;
		}
		q = cid_map_find(l, vc.dcid, vc.dcidlen);
		if (q) {
			server_feed(q, rxbuf, (size_t)len,
			            (struct sockaddr *)&from, fromlen, now);
			continue;
		}
		if (!(rxbuf[0] & 0x80)) {
			/* a short packet nobody owns: a peer that lost its
			 * state on our side; tell it to stop */
			send_stateless_reset(l, vc.dcid, vc.dcidlen,
			                     (size_t)len,
			                     (struct sockaddr *)&from, fromlen);
			continue;
		}
		{
			ngtcp2_pkt_hd hd;

			if (ngtcp2_accept(&hd, rxbuf, (size_t)len) != 0) {
				/* not an Initial we take (a 0-RTT packet
				 * ahead of its Initial, a short one): drop;
				 * the client sends again */
				l->st.dropped++;
				continue;
			}
			q = server_new(l, &hd, (struct sockaddr *)&from,
			               fromlen, now);
			if (!q)
				continue;
			server_feed(q, rxbuf, (size_t)len,
			            (struct sockaddr *)&from, fromlen, now);
		}
	}
}

static int quic_listen(struct tr_ctx *ctx, struct tr_listener **out,
                       char *err, size_t errlen)
{
	struct quic_listener *l;
	int r;

	r = tr_listener_new(ctx, &tr_quic_ops, sizeof(*l), SOCK_DGRAM, out,
	                    err, errlen);
	if (r < 0)
		return r;
	l = (struct quic_listener *)*out;
	l->x = ctx->impl;
	return 0;
}

static int quic_accept(struct tr_listener *tl, int64_t now,
                       struct tr_conn **out)
{
	struct quic_listener *l = (struct quic_listener *)tl;
	struct quic_conn *q;

	*out = NULL;
	if (!l->ready_head) {
		sweep(l, now);
		listener_read(l, now);
	}
	q = l->ready_head;
	if (!q)
		return TR_AGAIN;
	l->ready_head = q->rnext;
	if (!l->ready_head)
		l->ready_tail = NULL;
	q->queued = 0;
	*out = &q->base;
	return 0;
}

static void quic_listener_free(struct tr_listener *tl)
{
	struct quic_listener *l = (struct quic_listener *)tl;
	size_t i;

	while (l->conns) {
		struct quic_conn *q = l->conns;

		/* the caller closed every conn before, or they go now */
		q->released = 1;
		server_destroy(q);
	}
	for (i = 0; i < l->nmap; i++) {
		while (l->map[i]) {
			struct cid_node *nd = l->map[i];

			l->map[i] = nd->next;
			free(nd);
		}
	}
	free(l->map);
	tr_listener_base_free(tl);
	free(l);
}

const struct quic_stats_server *quic_listener_stats(
	const struct tr_listener *tl)
{
	const struct quic_listener *l = (const struct quic_listener *)tl;

	if (tl->ops != &tr_quic_ops)
		return NULL;
	((struct quic_listener *)l)->st.replays_refused =
		l->x->replay.replays;
	return &l->st;
}

const struct transport_ops tr_quic_ops = {
	.name = "quic",
	.flags = TR_F_SECURE | TR_F_DATAGRAM | TR_F_STREAMS | TR_F_EARLY |
	         TR_F_REBIND | TR_F_SERVER,
	.default_port = 14567,
	.ctx_init = quic_ctx_init,
	.ctx_free = quic_ctx_free,
	.open = quic_open,
	.handshake = quic_handshake,
	.stream_open = quic_stream_open,
	.send = quic_send,
	.recv = quic_recv,
	.accept_stream = quic_accept_stream,
	.reset = quic_reset,
	.progress = quic_progress,
	.events = quic_events,
	.expiry = quic_expiry,
	.on_expiry = quic_on_expiry,
	.shutdown = quic_shutdown,
	.rebind = quic_rebind,
	.info = quic_info,
	.stats = quic_stats,
	.free = quic_free,
	.listen = quic_listen,
	.accept = quic_accept,
	.listener_free = quic_listener_free,
};
