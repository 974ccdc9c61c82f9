/*
 * tls.c: TLS 1.3 (default) or 1.2 over TCP with GnuTLS.
 *
 * GnuTLS reads and writes the socket through our push/pull functions, so the
 * hostile I/O switch and the wire byte counters apply to TLS as well.
 * Credentials and priorities are loaded once per context and shared by every
 * connection. Resumption data go to the client's tr_session: after the
 * handshake for TLS 1.2, and for TLS 1.3 when the server's NewSessionTicket
 * has arrived (it comes after the handshake, with the first records read).
 * SSLKEYLOGFILE is honoured by GnuTLS itself (3.7 reads the variable).
 */
#include "net/tls_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct tls_ctx {
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	gnutls_datum_t ticket_key; /* server: session ticket encryption key */
	int name_is_ip; /* server_name is an IP literal: no SNI */
};

struct tls_conn {
	struct tr_conn base;
	gnutls_session_t s;
	int err;           /* sticky failure */
	int tcp_done;      /* TCP connect finished */
	int hs_done;       /* TLS handshake finished */
	int bye_done;      /* close_notify sent */
	int want_write;    /* last would-block was on the write side */
	int ticket_saved;  /* resumption data stored for this connection */
	int resumed;
	size_t send_pending; /* size of a record send to repeat after AGAIN */
};

/* ---- context ---- */

int tr_tls_load_creds(struct tr_ctx *ctx,
                      gnutls_certificate_credentials_t *out, char *err,
                      size_t errlen)
{
	const struct tr_config *cfg = &ctx->cfg;
	int r;

	r = gnutls_certificate_allocate_credentials(out);
	if (r < 0) {
		snprintf(err, errlen, "TLS: %s", gnutls_strerror(r));
		return TR_ENOMEM;
	}
	if (cfg->cafile) {
		FILE *f = fopen(cfg->cafile, "r");

		if (!f) {
			snprintf(err, errlen,
			         "TLS: cannot read CA file '%s': %s; check "
			         "--cafile", cfg->cafile, strerror(errno));
			r = TR_ECONFIG;
			goto fail;
		}
		fclose(f);
		r = gnutls_certificate_set_x509_trust_file(
			*out, cfg->cafile, GNUTLS_X509_FMT_PEM);
		if (r <= 0) {
			snprintf(err, errlen,
			         "TLS: no usable CA certificate in '%s'%s%s; "
			         "check --cafile", cfg->cafile,
			         r < 0 ? ": " : "",
			         r < 0 ? gnutls_strerror(r) : "");
			r = TR_ECONFIG;
			goto fail;
		}
	} else if (!cfg->insecure && !cfg->server) {
		r = gnutls_certificate_set_x509_system_trust(*out);
		if (r <= 0) {
			snprintf(err, errlen,
			         "TLS: no system CA certificates found; give "
			         "--cafile");
			r = TR_ECONFIG;
			goto fail;
		}
	}
	if (cfg->server && (!cfg->certfile || !cfg->keyfile)) {
		snprintf(err, errlen,
		         "TLS server on %s needs a certificate and its key",
		         ctx->peer);
		r = TR_ECONFIG;
		goto fail;
	}
	if (cfg->certfile || cfg->keyfile) {
		if (!cfg->certfile || !cfg->keyfile) {
			snprintf(err, errlen,
			         "TLS: a client certificate needs both a "
			         "certificate and a key file");
			r = TR_ECONFIG;
			goto fail;
		}
		r = gnutls_certificate_set_x509_key_file(
			*out, cfg->certfile, cfg->keyfile,
			GNUTLS_X509_FMT_PEM);
		if (r < 0) {
			snprintf(err, errlen,
			         "TLS: cannot load certificate '%s' with key "
			         "'%s': %s", cfg->certfile, cfg->keyfile,
			         gnutls_strerror(r));
			r = TR_ECONFIG;
			goto fail;
		}
	}
	return 0;

fail:
	gnutls_certificate_free_credentials(*out);
	*out = NULL;
	return r;
}

static int tls_ctx_init(struct tr_ctx *ctx, char *err, size_t errlen)
{
	struct tr_config *cfg = &ctx->cfg;
	struct tls_ctx *t;
	const char *prio, *errpos = NULL;
	unsigned char ipbuf[16];
	int r;

	t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return TR_ENOMEM;
	}
	r = tr_tls_load_creds(ctx, &t->cred, err, errlen);
	if (r < 0) {
		free(t);
		return r;
	}
	if (cfg->priority)
		prio = cfg->priority;
	else if (cfg->tls_version == TR_TLS_1_2)
		prio = "NORMAL:-VERS-ALL:+VERS-TLS1.2";
	else
		prio = "NORMAL:-VERS-ALL:+VERS-TLS1.3";
	r = gnutls_priority_init(&t->prio, prio, &errpos);
	if (r < 0) {
		snprintf(err, errlen, "TLS: bad priority string '%s' at '%s': %s",
		         prio, errpos ? errpos : "", gnutls_strerror(r));
		r = TR_ECONFIG;
		goto fail;
	}
	t->name_is_ip = inet_pton(AF_INET, cfg->server_name, ipbuf) == 1 ||
	                inet_pton(AF_INET6, cfg->server_name, ipbuf) == 1;
	if (cfg->server && !cfg->no_resume &&
	    (r = gnutls_session_ticket_key_generate(&t->ticket_key)) < 0) {
		snprintf(err, errlen, "TLS: session ticket key: %s",
		         gnutls_strerror(r));
		gnutls_priority_deinit(t->prio);
		r = TR_ETLS;
		goto fail;
	}
	ctx->impl = t;
	return 0;

fail:
	gnutls_certificate_free_credentials(t->cred);
	free(t);
	return r;
}

static void tls_ctx_free(struct tr_ctx *ctx)
{
	struct tls_ctx *t = ctx->impl;

	if (!t)
		return;
	gnutls_priority_deinit(t->prio);
	gnutls_certificate_free_credentials(t->cred);
	if (t->ticket_key.data)
		gnutls_memset(t->ticket_key.data, 0, t->ticket_key.size);
	gnutls_free(t->ticket_key.data);
	free(t);
	ctx->impl = NULL;
}

/* ---- socket glue ---- */

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *buf,
                        size_t len)
{
	struct tls_conn *t = ptr;
	ssize_t n = tr_sock_send(&t->base, buf, len);

	if (n >= 0)
		return n;
	gnutls_transport_set_errno(t->s, n == TR_AGAIN ? EAGAIN : EIO);
	return -1;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
	struct tls_conn *t = ptr;
	ssize_t n = tr_sock_recv(&t->base, buf, len);

	if (n >= 0)
		return n;
	if (n == TR_EOF)
		return 0;
	gnutls_transport_set_errno(t->s, n == TR_AGAIN ? EAGAIN : EIO);
	return -1;
}

/* Keep resumption data once the server has given us something to resume
 * with: a ticket (TLS 1.3, or 1.2 with tickets) or a 1.2 session id. */
static void save_session(struct tls_conn *t)
{
	gnutls_datum_t d;

	if (t->ticket_saved || !t->base.sess || t->base.ctx->cfg.no_resume ||
	    t->base.server)
		return;
	if (gnutls_protocol_get_version(t->s) == GNUTLS_TLS1_3 &&
	    !(gnutls_session_get_flags(t->s) & GNUTLS_SFLAGS_SESSION_TICKET))
		return;
	if (gnutls_session_get_data2(t->s, &d) < 0)
		return;
	tr_session_store(t->base.sess, d.data, d.size);
	gnutls_free(d.data);
	t->ticket_saved = 1;
}

/* ---- connection ---- */

static int tls_open(struct tr_ctx *ctx, struct tr_session *sess, int64_t now,
                    struct tr_conn **out)
{
	struct tls_ctx *x = ctx->impl;
	struct tls_conn *t = calloc(1, sizeof(*t));
	const char *name = ctx->cfg.server_name;
	int r;

	*out = NULL;
	if (!t)
		return TR_ENOMEM;
	tr_base_init(&t->base, &tr_tls_ops, ctx, sess);
	r = gnutls_init(&t->s, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
	if (r < 0) {
		free(t);
		return TR_ENOMEM;
	}
	*out = &t->base;
	r = gnutls_priority_set(t->s, x->prio);
	if (r >= 0)
		r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE,
		                           x->cred);
	/* SNI carries names only (RFC 6066); an IP is checked, not sent. */
	if (r >= 0 && !x->name_is_ip)
		r = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, name,
		                           strlen(name));
	if (r >= 0 && ctx->cfg.alpn) {
		gnutls_datum_t p;

		p.data = (unsigned char *)ctx->cfg.alpn;
		p.size = (unsigned)strlen(ctx->cfg.alpn);
		r = gnutls_alpn_set_protocols(t->s, &p, 1, 0);
	}
	if (r < 0) {
		t->err = tr_fail(&t->base, TR_ETLS, "TLS setup for %s: %s",
		                 ctx->peer, gnutls_strerror(r));
		return 0;
	}
	if (!ctx->cfg.insecure)
		gnutls_session_set_verify_cert(t->s, name, 0);
	if (sess && !ctx->cfg.no_resume) {
		size_t len;
		const uint8_t *d = tr_session_data(sess, &len);

		/* Stale or foreign data only cost a full handshake. */
		if (d)
			gnutls_session_set_data(t->s, d, len);
	}
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_push_function(t->s, tls_push);
	gnutls_transport_set_pull_function(t->s, tls_pull);
	t->err = tr_sock_connect(&t->base, now);
	return 0;
}

int tr_tls_cert_error(struct tr_conn *c, gnutls_session_t s, const char *what)
{
	const char *peer = c->ctx->peer;
	unsigned st = gnutls_session_get_verify_cert_status(s);
	gnutls_datum_t txt;
	int r;

	if (st & GNUTLS_CERT_SIGNER_NOT_FOUND)
		return tr_fail(c, TR_ECERT,
		               "%s with %s: certificate not trusted (signer not "
		               "found); check --cafile", what, peer);
	if (st & GNUTLS_CERT_UNEXPECTED_OWNER)
		return tr_fail(c, TR_ECERT,
		               "%s with %s: certificate name does not match "
		               "'%s'", what, peer, c->ctx->cfg.server_name);
	if (st & GNUTLS_CERT_EXPIRED)
		return tr_fail(c, TR_ECERT, "%s with %s: certificate expired",
		               what, peer);
	if (st & GNUTLS_CERT_NOT_ACTIVATED)
		return tr_fail(c, TR_ECERT,
		               "%s with %s: certificate not yet valid (check "
		               "the clock)", what, peer);
	if (st && gnutls_certificate_verification_status_print(
		          st, GNUTLS_CRT_X509, &txt, 0) >= 0) {
		r = tr_fail(c, TR_ECERT,
		            "%s with %s: certificate rejected: %s", what, peer,
		            (char *)txt.data);
		gnutls_free(txt.data);
		return r;
	}
	return tr_fail(c, TR_ECERT, "%s with %s: certificate rejected", what,
	               peer);
}

/* One line for a failed handshake, with what the user can do about it. */
static int handshake_error(struct tls_conn *t, int r)
{
	struct tr_conn *c = &t->base;
	const char *peer = c->ctx->peer;

	if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR)
		return tr_tls_cert_error(c, t->s, "TLS handshake");
	/* A plain MQTT listener resets or closes on a ClientHello. */
	if ((r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR) &&
	    (c->sys_errno == ECONNRESET || c->sys_errno == EPIPE))
		return tr_fail(c, TR_ETLS,
		               "TLS handshake with %s: connection reset by the "
		               "broker (is it a TLS port?)", peer);
	if (r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR)
		return tr_fail(c, TR_EIO, "TLS handshake with %s: %s", peer,
		               c->sys_errno ? strerror(c->sys_errno)
		                            : gnutls_strerror(r));
	if (r == GNUTLS_E_PREMATURE_TERMINATION)
		return tr_fail(c, TR_ETLS,
		               "TLS handshake with %s: connection closed by the "
		               "broker (is it a TLS port?)", peer);
	if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
		return tr_fail(c, TR_ETLS,
		               "TLS handshake with %s: broker sent alert '%s'",
		               peer, gnutls_alert_get_name(gnutls_alert_get(t->s)));
	if (r == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
	    r == GNUTLS_E_NO_PRIORITIES_WERE_SET ||
	    r == GNUTLS_E_INSUFFICIENT_CREDENTIALS)
		return tr_fail(c, TR_ETLS,
		               "TLS handshake with %s: %s (does the broker "
		               "accept this TLS version?)", peer,
		               gnutls_strerror(r));
	return tr_fail(c, TR_ETLS, "TLS handshake with %s: %s", peer,
	               gnutls_strerror(r));
}

static int tls_handshake(struct tr_conn *c, int64_t now)
{
	struct tls_conn *t = (struct tls_conn *)c;
	int r;

	if (t->err)
		return t->err;
	if (t->hs_done)
		return 0;
	if (!t->tcp_done) {
		r = tr_sock_connected(c, now);
		if (r == TR_AGAIN)
			return TR_AGAIN;
		if (r < 0)
			return t->err = r;
		t->tcp_done = 1;
	}
	for (;;) {
		r = gnutls_handshake(t->s);
		if (r == 0)
			break;
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
			t->want_write = gnutls_record_get_direction(t->s);
			return TR_AGAIN;
		}
		if (!gnutls_error_is_fatal(r))
			continue; /* a warning alert: go on */
		return t->err = handshake_error(t, r);
	}
	t->hs_done = 1;
	t->want_write = 0;
	c->t_ready = evloop_clock_ns(); /* after our last flight */
	t->resumed = gnutls_session_is_resumed(t->s) != 0;
	save_session(t);
	return 0;
}

static ssize_t tls_send(struct tr_conn *c, int64_t sid, const uint8_t *buf,
                        size_t len, int64_t now)
{
	struct tls_conn *t = (struct tls_conn *)c;
	ssize_t n;

	(void)now;
	if (t->err)
		return t->err;
	if (!t->hs_done || t->bye_done || sid != TR_STREAM_MAIN)
		return tr_fail(c, TR_ESTATE, "TLS send to %s: %s", c->ctx->peer,
		               !t->hs_done ? "handshake not done"
		               : t->bye_done ? "after close_notify"
		                             : "no such stream");
	/* After GNUTLS_E_AGAIN the same record must be offered again; the
	 * caller's buffer still starts with those bytes. */
	if (t->send_pending && t->send_pending <= len)
		len = t->send_pending;
	for (;;) {
		n = gnutls_record_send(t->s, buf, len);
		/* 0: that call only finished writing a record the library
		 * had queued itself and an earlier would-block had cut
		 * short; none of ours went, so offer them again */
		if (n != GNUTLS_E_INTERRUPTED && n != 0)
			break;
	}
	if (n > 0) {
		t->send_pending = 0;
		t->want_write = 0;
		return n;
	}
	if (n == GNUTLS_E_AGAIN) {
		t->send_pending = len;
		t->want_write = 1;
		return TR_AGAIN;
	}
	if (n == GNUTLS_E_PUSH_ERROR)
		return t->err = TR_EIO; /* message set by tr_sock_send */
	return t->err = tr_fail(c, TR_ETLS, "TLS send to %s: %s",
	                        c->ctx->peer, gnutls_strerror((int)n));
}

static ssize_t tls_recv(struct tr_conn *c, int64_t *sid, uint8_t *buf,
                        size_t len, int64_t now)
{
	struct tls_conn *t = (struct tls_conn *)c;
	ssize_t n;

	(void)now;
	*sid = TR_STREAM_MAIN;
	if (t->err)
		return t->err;
	if (!t->hs_done)
		return tr_fail(c, TR_ESTATE, "TLS receive from %s: handshake not "
		               "done", c->ctx->peer);
	for (;;) {
		n = gnutls_record_recv(t->s, buf, len);
		if (!t->ticket_saved)
			save_session(t);
		if (n > 0)
			return n;
		if (n == 0)
			return TR_EOF; /* close_notify */
		if (n == GNUTLS_E_AGAIN)
			return TR_AGAIN;
		if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_REHANDSHAKE ||
		    !gnutls_error_is_fatal((int)n))
			continue;
		break;
	}
	/* A broker that closes TCP without close_notify has still closed. */
	if (n == GNUTLS_E_PREMATURE_TERMINATION)
		return TR_EOF;
	if (n == GNUTLS_E_PULL_ERROR)
		return t->err = TR_EIO; /* message set by tr_sock_recv */
	return t->err = tr_fail(c, TR_ETLS, "TLS receive from %s: %s",
	                        c->ctx->peer, gnutls_strerror((int)n));
}

static uint32_t tls_events(const struct tr_conn *c)
{
	const struct tls_conn *t = (const struct tls_conn *)c;

	if (t->err)
		return 0;
	if (!t->tcp_done)
		return EV_WRITE;
	if (!t->hs_done)
		return t->want_write ? EV_WRITE : EV_READ;
	return EV_READ | (t->want_write ? EV_WRITE : 0);
}

static int64_t tls_expiry(const struct tr_conn *c)
{
	const struct tls_conn *t = (const struct tls_conn *)c;

	if (t->hs_done || t->err)
		return EV_NEVER;
	return c->t_start + c->ctx->cfg.connect_timeout_ns;
}

static int tls_on_expiry(struct tr_conn *c, int64_t now)
{
	struct tls_conn *t = (struct tls_conn *)c;
	double secs = (double)c->ctx->cfg.connect_timeout_ns / 1e9;

	if (t->err)
		return t->err;
	if (t->hs_done || now < tls_expiry(c))
		return 0;
	if (!t->tcp_done)
		return t->err = tr_fail(c, TR_ETIMEOUT,
		                        "connect to %s: timed out after %.1f s",
		                        c->ctx->peer, secs);
	return t->err = tr_fail(c, TR_ETIMEOUT,
	                        "TLS handshake with %s: timed out after %.1f s",
	                        c->ctx->peer, secs);
}

static int tls_shutdown(struct tr_conn *c, int64_t sid, int64_t now)
{
	struct tls_conn *t = (struct tls_conn *)c;
	int r;

	(void)now;
	if (sid != TR_STREAM_MAIN)
		return TR_ESTATE;
	if (!t->bye_done && t->hs_done && !t->err) {
		r = gnutls_bye(t->s, GNUTLS_SHUT_WR);
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
			t->want_write = gnutls_record_get_direction(t->s);
			return TR_AGAIN;
		}
		/* An error here means the peer is gone: nothing to end. */
		t->want_write = 0;
	}
	t->bye_done = 1;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_WR);
	return 0;
}

static void tls_info(const struct tr_conn *c, struct tr_info *out)
{
	const struct tls_conn *t = (const struct tls_conn *)c;
	gnutls_datum_t alpn;
	const char *s;

	out->resumed = t->resumed;
	if (!t->hs_done)
		return;
	s = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
	snprintf(out->version, sizeof(out->version), "%s", s ? s : "");
	s = gnutls_cipher_get_name(gnutls_cipher_get(t->s));
	snprintf(out->cipher, sizeof(out->cipher), "%s", s ? s : "");
	if (gnutls_alpn_get_selected_protocol(t->s, &alpn) == 0)
		snprintf(out->alpn, sizeof(out->alpn), "%.*s", (int)alpn.size,
		         (const char *)alpn.data);
}

static void tls_free(struct tr_conn *c)
{
	struct tls_conn *t = (struct tls_conn *)c;

	if (t->s)
		gnutls_deinit(t->s);
	tr_base_free(c);
	free(t);
}

static void tls_stats(const struct tr_conn *c, struct tr_stats *out)
{
	tr_tcp_stats(c, out);
}

/* ---- server side ---- */

static int tls_listen(struct tr_ctx *ctx, struct tr_listener **out, char *err,
                      size_t errlen)
{
	return tr_listener_new(ctx, &tr_tls_ops, sizeof(struct tr_listener),
	                       SOCK_STREAM, out, err, errlen);
}

static int tls_accept(struct tr_listener *l, int64_t now,
                      struct tr_conn **out)
{
	struct tls_ctx *x = l->ctx->impl;
	struct tls_conn *t;
	int r = tr_sock_accept(l, &tr_tls_ops, sizeof(struct tls_conn), now,
	                       out);

	if (r < 0)
		return r;
	t = (struct tls_conn *)*out;
	t->tcp_done = 1;
	r = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK);
	if (r < 0) {
		t->s = NULL;
		tr_close(*out);
		*out = NULL;
		return TR_ENOMEM;
	}
	r = gnutls_priority_set(t->s, x->prio);
	if (r >= 0)
		r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE,
		                           x->cred);
	if (r >= 0 && x->ticket_key.data)
		r = gnutls_session_ticket_enable_server(t->s, &x->ticket_key);
	if (r >= 0 && l->ctx->cfg.alpn) {
		gnutls_datum_t p;

		p.data = (unsigned char *)l->ctx->cfg.alpn;
		p.size = (unsigned)strlen(l->ctx->cfg.alpn);
		r = gnutls_alpn_set_protocols(t->s, &p, 1,
		                              GNUTLS_ALPN_MANDATORY);
	}
	if (r < 0)
		t->err = tr_fail(&t->base, TR_ETLS, "TLS setup for a client "
		                 "of %s: %s", l->ctx->peer, gnutls_strerror(r));
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_push_function(t->s, tls_push);
	gnutls_transport_set_pull_function(t->s, tls_pull);
	return 0;
}

static void tls_listener_free(struct tr_listener *l)
{
	tr_listener_base_free(l);
	free(l);
}

const struct transport_ops tr_tls_ops = {
	.name = "tls",
	.flags = TR_F_SECURE | TR_F_SERVER,
	.default_port = 8883,
	.ctx_init = tls_ctx_init,
	.ctx_free = tls_ctx_free,
	.open = tls_open,
	.handshake = tls_handshake,
	.send = tls_send,
	.recv = tls_recv,
	.events = tls_events,
	.expiry = tls_expiry,
	.on_expiry = tls_on_expiry,
	.shutdown = tls_shutdown,
	.info = tls_info,
	.stats = tls_stats,
	.free = tls_free,
	.listen = tls_listen,
	.accept = tls_accept,
	.listener_free = tls_listener_free,
};
