/*
 * transport.c: what every transport shares: configuration, the
 * shared context (address resolution), session caches, error messages,
 * non-blocking TCP socket steps and the hostile I/O switch.
 */
#include "net/transport.h"
#include "net/quic.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *tr_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case TR_AGAIN: return "would block";
	case TR_EOF: return "connection closed by peer";
	case TR_ENOMEM: return "out of memory";
	case TR_ECONNECT: return "cannot connect";
	case TR_ETIMEOUT: return "timed out";
	case TR_EIO: return "I/O error";
	case TR_ETLS: return "TLS failure";
	case TR_ECERT: return "server certificate rejected";
	case TR_ECONFIG: return "invalid transport configuration";
	case TR_ERESOLVE: return "cannot resolve host name";
	case TR_EQUIC: return "QUIC failure";
	case TR_ESTATE: return "operation not allowed in this state";
	case TR_ERESET: return "stream reset by peer";
	case TR_EEXIST: return "address in use";
	}
	return "unknown transport error";
}

void tr_config_init(struct tr_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->connect_timeout_ns = 10 * EV_NS_PER_SEC;
	cfg->nodelay = 1;
	cfg->tls_version = TR_TLS_1_3;
	/* above MQTT's keepalive (60 s) and its 1.5 grace, so an idle
	 * MQTT connection over QUIC lives as it does over TCP */
	cfg->idle_timeout_ns = 120 * EV_NS_PER_SEC;
	cfg->replay_window_ns = 3600 * EV_NS_PER_SEC;
}

static const struct transport_ops *const all_transports[] = {
	&tr_tcp_ops,
	&tr_tls_ops,
	&tr_quic_ops,
};
#define N_TRANSPORTS (sizeof(all_transports) / sizeof(all_transports[0]))

const struct transport_ops *tr_find(const char *name)
{
	size_t i;

	if (!name)
		return NULL;
	for (i = 0; i < N_TRANSPORTS; i++)
		if (strcmp(all_transports[i]->name, name) == 0)
			return all_transports[i];
	return NULL;
}

const char *tr_names(void)
{
	static char names[64];
	size_t i, off = 0;

	if (names[0])
		return names;
	for (i = 0; i < N_TRANSPORTS && off < sizeof(names); i++)
		off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
		                        i ? ", " : "", all_transports[i]->name);
	return names;
}

/* ---- context ---- */

static int dup_str(const char **dst, const char *src)
{
	if (!src) {
		*dst = NULL;
		return 0;
	}
	*dst = strdup(src);
	return *dst ? 0 : -1;
}

static void free_strings(struct tr_config *cfg)
{
	free((char *)cfg->host);
	free((char *)cfg->local_addr);
	free((char *)cfg->cafile);
	free((char *)cfg->server_name);
	free((char *)cfg->priority);
	free((char *)cfg->certfile);
	free((char *)cfg->keyfile);
	free((char *)cfg->alpn);
	free((char *)cfg->cc);
	free((char *)cfg->qlog_dir);
}

/* Copy every string of src into dst (whose other fields are already
 * copied). On failure dst owns only what was copied: the rest is NULL. */
static int copy_strings(struct tr_config *dst, const struct tr_config *src)
{
	dst->host = dst->local_addr = dst->cafile = dst->server_name = NULL;
	dst->priority = dst->certfile = dst->keyfile = dst->alpn = NULL;
	dst->cc = dst->qlog_dir = NULL;
	if (dup_str(&dst->host, src->host) ||
	    dup_str(&dst->local_addr, src->local_addr) ||
	    dup_str(&dst->cafile, src->cafile) ||
	    dup_str(&dst->server_name,
	            src->server_name ? src->server_name : src->host) ||
	    dup_str(&dst->priority, src->priority) ||
	    dup_str(&dst->certfile, src->certfile) ||
	    dup_str(&dst->keyfile, src->keyfile) ||
	    dup_str(&dst->alpn, src->alpn) || dup_str(&dst->cc, src->cc) ||
	    dup_str(&dst->qlog_dir, src->qlog_dir))
		return -1;
	return 0;
}

/* Resolve host/port into ss; 0 or TR_ERESOLVE with the message in err. */
static int resolve(const char *host, uint16_t port,
                   struct sockaddr_storage *ss, socklen_t *len, char *err,
                   size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	char portstr[8];
	int r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0 || !res) {
		snprintf(err, errlen, "cannot resolve '%s': %s", host,
		         r ? gai_strerror(r) : "no address");
		return TR_ERESOLVE;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int tr_ctx_new(struct tr_ctx **out, const struct transport_ops *ops,
               const struct tr_config *cfg, char *err, size_t errlen)
{
	struct tr_ctx *ctx;
	char num[INET6_ADDRSTRLEN];
	int r;

	*out = NULL;
	if (!cfg->host || !*cfg->host) {
		snprintf(err, errlen, "no broker host given");
		return TR_ECONFIG;
	}
	if (cfg->port == 0) {
		snprintf(err, errlen, "no broker port given for '%s'",
		         cfg->host);
		return TR_ECONFIG;
	}
	if (cfg->tls_version != TR_TLS_1_3 && cfg->tls_version != TR_TLS_1_2) {
		snprintf(err, errlen,
		         "unsupported TLS version %d; use 1.2 or 1.3",
		         cfg->tls_version);
		return TR_ECONFIG;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		goto fail_nomem;
	ctx->ops = ops;
	ctx->cfg = *cfg;
	if (copy_strings(&ctx->cfg, cfg) < 0)
		goto fail_strings;
	if (ctx->cfg.connect_timeout_ns <= 0)
		ctx->cfg.connect_timeout_ns = 10 * EV_NS_PER_SEC;
	if (ctx->cfg.idle_timeout_ns <= 0)
		ctx->cfg.idle_timeout_ns = 120 * EV_NS_PER_SEC;
	if (ctx->cfg.replay_window_ns <= 0)
		ctx->cfg.replay_window_ns = 3600 * EV_NS_PER_SEC;

	r = resolve(cfg->host, cfg->port, &ctx->addr, &ctx->addrlen, err,
	            errlen);
	if (r < 0)
		goto fail;
	if (cfg->local_addr) {
		r = resolve(cfg->local_addr, 0, &ctx->local, &ctx->locallen,
		            err, errlen);
		if (r < 0)
			goto fail;
	}
	/* The peer as the user wrote it, plus the address when that was a
	 * name, so that messages say both. */
	if (getnameinfo((struct sockaddr *)&ctx->addr, ctx->addrlen, num,
	                sizeof(num), NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(num, sizeof(num), "?");
	if (strcmp(num, cfg->host) == 0)
		snprintf(ctx->peer, sizeof(ctx->peer),
		         strchr(num, ':') ? "[%s]:%u" : "%s:%u", num,
		         (unsigned)cfg->port);
	else
		snprintf(ctx->peer, sizeof(ctx->peer), "%.40s:%u (%s)",
		         cfg->host, (unsigned)cfg->port, num);

	if (ops->ctx_init) {
		r = ops->ctx_init(ctx, err, errlen);
		if (r < 0)
			goto fail;
	}
	*out = ctx;
	return 0;

fail_strings:
	free_strings(&ctx->cfg);
	free(ctx);
fail_nomem:
	snprintf(err, errlen, "out of memory");
	return TR_ENOMEM;
fail:
	free_strings(&ctx->cfg);
	free(ctx);
	return r;
}

void tr_ctx_del(struct tr_ctx *ctx)
{
	if (!ctx)
		return;
	if (ctx->ops->ctx_free)
		ctx->ops->ctx_free(ctx);
	free_strings(&ctx->cfg);
	free(ctx);
}

/* ---- session cache ---- */

struct tr_session {
	uint8_t *data;
	size_t len;
};

struct tr_session *tr_session_new(void)
{
	return calloc(1, sizeof(struct tr_session));
}

void tr_session_del(struct tr_session *s)
{
	if (!s)
		return;
	free(s->data);
	free(s);
}

int tr_session_store(struct tr_session *s, const void *data, size_t len)
{
	uint8_t *copy;

	if (len == 0) {
		tr_session_clear(s);
		return 0;
	}
	copy = malloc(len);
	if (!copy)
		return TR_ENOMEM;
	memcpy(copy, data, len);
	free(s->data);
	s->data = copy;
	s->len = len;
	return 0;
}

const uint8_t *tr_session_data(const struct tr_session *s, size_t *len)
{
	*len = s ? s->len : 0;
	return s ? s->data : NULL;
}

void tr_session_clear(struct tr_session *s)
{
	free(s->data);
	s->data = NULL;
	s->len = 0;
}

/* ---- connection base ---- */

void tr_base_init(struct tr_conn *c, const struct transport_ops *ops,
                  struct tr_ctx *ctx, struct tr_session *sess)
{
	memset(c, 0, sizeof(*c));
	c->ops = ops;
	c->ctx = ctx;
	c->sess = sess;
	c->fd = -1;
}

void tr_base_free(struct tr_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->err);
	c->err = NULL;
}

void tr_close(struct tr_conn *c)
{
	if (c)
		c->ops->free(c);
}

const char *tr_errmsg(const struct tr_conn *c)
{
	return c && c->err ? c->err : "no error";
}

int tr_fail(struct tr_conn *c, int code, const char *fmt, ...)
{
	char line[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	free(c->err);
	/* Out of memory: the code still says what happened. */
	c->err = strdup(line);
	return code;
}

void tr_get_info(const struct tr_conn *c, struct tr_info *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	memset(out, 0, sizeof(*out));
	out->transport = c->ops->name;
	out->t_start = c->t_start;
	out->t_connected = c->t_connected;
	out->t_ready = c->t_ready;
	out->wire_in = c->wire_in;
	out->wire_out = c->wire_out;
	if (c->fd >= 0 &&
	    getsockname(c->fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET)
			out->local_port =
				ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			out->local_port =
				ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	if (c->ops->info)
		c->ops->info(c, out);
}

/* ---- TCP socket steps ---- */

int tr_sock_options(int fd, const struct tr_config *cfg)
{
	int one = 1;

	if (cfg->nodelay &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -1;
	if (cfg->sndbuf > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg->sndbuf, sizeof(int)) < 0)
		return -1;
	if (cfg->rcvbuf > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg->rcvbuf, sizeof(int)) < 0)
		return -1;
	return 0;
}

int tr_sock_connect(struct tr_conn *c, int64_t now)
{
	struct tr_ctx *ctx = c->ctx;
	int fd;

	c->t_start = now;
	fd = socket(ctx->addr.ss_family,
	            SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return tr_fail(c, TR_ECONNECT, "connect to %s: socket: %s",
		               ctx->peer, strerror(errno));
	c->fd = fd;
	if (tr_sock_options(fd, &ctx->cfg) < 0)
		return tr_fail(c, TR_ECONNECT,
		               "connect to %s: socket options: %s", ctx->peer,
		               strerror(errno));
	if (ctx->locallen &&
	    bind(fd, (struct sockaddr *)&ctx->local, ctx->locallen) < 0)
		return tr_fail(c, TR_ECONNECT, "bind to %s: %s",
		               ctx->cfg.local_addr, strerror(errno));
	if (connect(fd, (struct sockaddr *)&ctx->addr, ctx->addrlen) < 0 &&
	    errno != EINPROGRESS)
		return tr_fail(c, TR_ECONNECT, "connect to %s: %s", ctx->peer,
		               strerror(errno));
	return 0;
}

int tr_sock_connected(struct tr_conn *c, int64_t now)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(int);
	int soerr = 0;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr)
		return tr_fail(c, TR_ECONNECT, "connect to %s: %s",
		               c->ctx->peer, strerror(soerr));
	/* No error yet and no peer: the connect is still in progress. */
	len = sizeof(ss);
	if (getpeername(c->fd, (struct sockaddr *)&ss, &len) < 0) {
		if (errno == ENOTCONN)
			return TR_AGAIN;
		return tr_fail(c, TR_ECONNECT, "connect to %s: %s",
		               c->ctx->peer, strerror(errno));
	}
	/* Stamped from the clock now, when the caller's loop has seen the
	 * socket writable and asked: late by the loop's reaction time (the
	 * wake-up and the callbacks before this one in the round), not the
	 * instant the kernel completed the connect. Fresher than `now`,
	 * which the loop read before it ran callbacks. */
	(void)now;
	c->t_connected = evloop_clock_ns();
	return 0;
}

ssize_t tr_sock_send(struct tr_conn *c, const uint8_t *buf, size_t len)
{
	ssize_t n;

	if (tr_hostile()) {
		len = tr_hostile_len(len);
		if (len == 0)
			return TR_AGAIN;
	}
	do
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n >= 0) {
		c->wire_out += (uint64_t)n;
		return n > 0 ? n : TR_AGAIN;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return TR_AGAIN;
	c->sys_errno = errno;
	return tr_fail(c, TR_EIO, "send to %s: %s", c->ctx->peer,
	               strerror(errno));
}

ssize_t tr_sock_recv(struct tr_conn *c, uint8_t *buf, size_t len)
{
	ssize_t n;

	if (tr_hostile()) {
		len = tr_hostile_len(len);
		if (len == 0)
			return TR_AGAIN;
	}
	do
		n = recv(c->fd, buf, len, 0);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		c->wire_in += (uint64_t)n;
		return n;
	}
	if (n == 0)
		return TR_EOF;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return TR_AGAIN;
	c->sys_errno = errno;
	return tr_fail(c, TR_EIO, "recv from %s: %s", c->ctx->peer,
	               strerror(errno));
}

/* ---- what every connection offers ---- */

int tr_rebind(struct tr_conn *c, const char *local_addr, int64_t now)
{
	struct addrinfo hints, *res = NULL;
	int r;

	if (!(c->ops->flags & TR_F_REBIND) || !c->ops->rebind)
		return tr_fail(c, TR_ESTATE,
		               "%s cannot move a connection to a new address; "
		               "reconnect instead", c->ops->name);
	if (!local_addr)
		return c->ops->rebind(c, NULL, 0, now);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = c->ctx->addr.ss_family;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICHOST;
	r = getaddrinfo(local_addr, "0", &hints, &res);
	if (r != 0 || !res)
		return tr_fail(c, TR_ECONFIG,
		               "rebind to '%s': not an address of the broker's "
		               "family: %s", local_addr,
		               r ? gai_strerror(r) : "no address");
	r = c->ops->rebind(c, res->ai_addr, res->ai_addrlen, now);
	freeaddrinfo(res);
	return r;
}

void tr_get_stats(const struct tr_conn *c, struct tr_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->srtt_ns = out->rttvar_ns = out->min_rtt_ns = -1;
	out->latest_rtt_ns = out->cwnd_bytes = out->inflight_bytes = -1;
	out->retransmits = out->segs_out = out->segs_in = -1;
	out->rto_ns = out->buffered = -1;
	if (c->ops->stats)
		c->ops->stats(c, out);
}

void tr_get_sockopts(const struct tr_conn *c, struct tr_sockopts *out)
{
	socklen_t len;
	int v;

	out->sndbuf = out->rcvbuf = out->nodelay = -1;
	if (c == NULL || c->fd < 0)
		return;
	len = sizeof(v);
	if (getsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &v, &len) == 0)
		out->sndbuf = v;
	len = sizeof(v);
	if (getsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &v, &len) == 0)
		out->rcvbuf = v;
	/* fails on a UDP socket (QUIC): no such option there */
	len = sizeof(v);
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0)
		out->nodelay = v != 0;
}

/* ---- server side ---- */

int tr_listener_new(struct tr_ctx *ctx, const struct transport_ops *ops,
                    size_t size, int type, struct tr_listener **out,
                    char *err, size_t errlen)
{
	struct tr_listener *l;
	int r;

	*out = NULL;
	l = calloc(1, size);
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return TR_ENOMEM;
	}
	l->ops = ops;
	l->ctx = ctx;
	r = tr_sock_listen(ctx, type, &l->fd, err, errlen);
	if (r < 0) {
		free(l);
		return r;
	}
	*out = l;
	return 0;
}

void tr_listener_base_free(struct tr_listener *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	free(l->err);
	l->err = NULL;
}

int tr_listen(struct tr_ctx *ctx, struct tr_listener **out, char *err,
              size_t errlen)
{
	*out = NULL;
	if (!(ctx->ops->flags & TR_F_SERVER) || !ctx->ops->listen) {
		snprintf(err, errlen, "%s has no server side", ctx->ops->name);
		return TR_ECONFIG;
	}
	if (!ctx->cfg.server) {
		snprintf(err, errlen, "listen on %s: the context was not made "
		         "for a server", ctx->peer);
		return TR_ECONFIG;
	}
	return ctx->ops->listen(ctx, out, err, errlen);
}

void tr_listener_close(struct tr_listener *l)
{
	if (l)
		l->ops->listener_free(l);
}

int tr_sock_listen(struct tr_ctx *ctx, int type, int *fd, char *err,
                   size_t errlen)
{
	int s, one = 1;

	*fd = -1;
	s = socket(ctx->addr.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC,
	           0);
	if (s < 0) {
		snprintf(err, errlen, "listen on %s: socket: %s", ctx->peer,
		         strerror(errno));
		return TR_ECONFIG;
	}
	(void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&ctx->addr, ctx->addrlen) < 0) {
		int e = errno;

		close(s);
		snprintf(err, errlen, "listen on %s: %s%s", ctx->peer,
		         strerror(e),
		         e == EADDRINUSE ? " (another process has this port; "
		                           "stop it or choose another port)"
		                         : "");
		return e == EADDRINUSE ? TR_EEXIST : TR_ECONFIG;
	}
	if (type == SOCK_STREAM && listen(s, 1024) < 0) {
		snprintf(err, errlen, "listen on %s: %s", ctx->peer,
		         strerror(errno));
		close(s);
		return TR_ECONFIG;
	}
	*fd = s;
	return 0;
}

int tr_sock_accept(struct tr_listener *l, const struct transport_ops *ops,
                   size_t size, int64_t now, struct tr_conn **out)
{
	struct tr_conn *c;
	int fd;

	*out = NULL;
	do
		fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == ECONNABORTED)
			return TR_AGAIN;
		return errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
		                       errno == ENOBUFS
		               ? TR_ENOMEM
		               : TR_EIO;
	}
	c = calloc(1, size);
	if (!c) {
		close(fd);
		return TR_ENOMEM;
	}
	tr_base_init(c, ops, l->ctx, NULL);
	c->fd = fd;
	c->server = 1;
	c->t_start = c->t_connected = now;
	(void)tr_sock_options(fd, &l->ctx->cfg);
	*out = c;
	return 0;
}

/* ---- hostile I/O ---- */

static int hostile_state = -1; /* -1: environment not read yet */
static uint64_t hostile_rng;

int tr_hostile(void)
{
	if (hostile_state < 0) {
		const char *v = getenv("MQB_HOSTILE_IO");
		const char *seed = getenv("MQB_HOSTILE_SEED");

		hostile_state = v && *v && strcmp(v, "0") != 0;
		hostile_rng = seed ? strtoull(seed, NULL, 0) : 1;
		/* xorshift has one bad state */
		hostile_rng = hostile_rng * 0x9E3779B97F4A7C15ull + 1;
	}
	return hostile_state;
}

void tr_hostile_set(int on, uint64_t seed)
{
	hostile_state = on < 0 ? -1 : on ? 1 : 0;
	hostile_rng = seed * 0x9E3779B97F4A7C15ull + 1;
}

static uint64_t hostile_next(void)
{
	uint64_t x = hostile_rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	hostile_rng = x;
	return x;
}

size_t tr_hostile_len(size_t len)
{
	uint64_t r = hostile_next();

	if (len == 0)
		return 0;
	/* One call in four would-blocks; the rest move 1..len bytes, half of
	 * them at most a few bytes, so headers get split too. */
	if (r % 4 == 0)
		return 0;
	r >>= 2;
	if (r % 2 == 0)
		return 1 + (size_t)((r >> 1) % (len < 7 ? len : 7));
	return 1 + (size_t)((r >> 1) % len);
}
