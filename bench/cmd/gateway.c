/*
 * gateway: MQTT over QUIC in front of an MQTT broker that speaks TCP.
 *
 * It terminates QUIC (ALPN "mqtt", UDP 14567 by default) and, for every
 * bidirectional stream a client opens, opens a TCP connection to the
 * broker (127.0.0.1:1883 by default, TCP_NODELAY set like the broker's own
 * sockets) and relays bytes both ways. So the broker is the same for every
 * transport a benchmark compares; what the gateway costs is measured on
 * loopback and reported.
 *
 * Backpressure, both ways. Client to broker: a stream's bytes are taken
 * from QUIC (which is what gives the client flow-control credit back) only
 * when the previous ones have reached the broker's socket, so a slow
 * broker slows the client down instead of filling the gateway. Broker to
 * client: the broker's socket is read only while the stream takes the
 * bytes (the QUIC transport holds at most its per-stream limit until the
 * client acknowledges them).
 *
 * Ends: a stream's FIN ends the broker connection's sending side (the
 * broker then closes after MQTT's DISCONNECT), a RESET closes it; the
 * broker closing ends the stream with FIN, a broker reset resets it. A
 * QUIC connection that closes or times out (idle timeout) closes all its
 * broker connections. One misbehaving client (garbage datagrams, a broken
 * handshake, a vanished peer) never disturbs another.
 *
 * Statistics (JSON, like every benchmark process): written at exit
 * (SIGINT, SIGTERM) and on SIGUSR1 without stopping; every startup error
 * (port in use, unreadable key, broker unreachable) is one line and a
 * non-zero exit.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "app/results.h"
#include "measure/report.h"
#include "net/evloop.h"
#include "net/quic.h"
#include "net/transport.h"
#include "util/cli.h"
#include "util/version.h"

#define RELAY_BUF 65536 /* bytes in flight through the gateway, each way */

struct gw;
struct gw_conn;

/* One QUIC stream and its TCP connection to the broker. */
struct relay {
	struct relay *next;
	struct gw_conn *gc;
	int64_t sid;
	int fd;
	struct ev_io io;
	int connected;
	/* Buffers, each allocated while bytes pass and freed when drained,
	 * so that an idle relay holds none. */
	uint8_t *up;             /* client -> broker, not yet written */
	size_t up_len, up_off;
	uint8_t *down;           /* broker -> client, not yet taken */
	size_t down_len, down_off;
	int up_eof;              /* the client's FIN */
	int up_shut;             /* passed on to the broker */
	int down_eof;            /* the broker closed */
	int fin_sent;
	uint64_t bytes_up, bytes_down;
};

struct gw_conn {
	struct gw_conn *next, *prev;
	struct gw *g;
	struct tr_conn *tc;
	struct ev_timer timer;
	struct relay *relays;
	int handshake_seen;
};

struct gw_stats {
	uint64_t conns_closed, idle_timeouts, conn_errors;
	uint64_t streams, streams_done, stream_resets_in, stream_resets_out;
	uint64_t broker_connects, broker_connect_failures, broker_resets;
	uint64_t bytes_up, bytes_down;
};

struct gw_opts {
	const char *listen;
	uint16_t port;
	const char *cert, *key;
	const char *broker;
	uint16_t broker_port;
	uint64_t idle_ns;
	int retry;
	const char *cc;
	const char *qlog_dir;
	const char *json;
	const char *ready_file;
	int nodelay;
	uint64_t max_conns;
};

struct gw {
	struct gw_opts o;
	struct evloop *loop;
	struct tr_ctx *ctx;
	struct tr_listener *l;
	struct ev_io lio, sig_io;
	int sigfd;
	struct sockaddr_storage broker;
	socklen_t brokerlen;
	char broker_name[112];
	struct gw_conn *conns;
	uint64_t n_conns;
	struct gw_stats st;
	uint64_t t_start_wall;
	int64_t t_start;
	int stopping;
};

static void conn_process(struct gw_conn *gc);

/* ---- relays ---- */

static void relay_free(struct relay *r)
{
	struct gw *g = r->gc->g;

	if (r->fd >= 0) {
		ev_io_stop(g->loop, &r->io);
		close(r->fd);
	}
	free(r->up);
	free(r->down);
	free(r);
	g->st.streams_done++;
}

static void relay_unlink(struct relay *r)
{
	struct relay **pp;

	for (pp = &r->gc->relays; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			return;
		}
	}
}

/* Abort a relay: reset the stream, close the broker connection. */
static void relay_abort(struct relay *r, uint64_t code)
{
	struct gw *g = r->gc->g;

	if (tr_reset(r->gc->tc, r->sid, code, evloop_clock_ns()) == 0)
		g->st.stream_resets_out++;
	if (r->fd >= 0) {
		/* SO_LINGER 0: the broker sees a reset, not a clean close */
		struct linger lg = { 1, 0 };

		(void)setsockopt(r->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	relay_unlink(r);
	relay_free(r);
}

static void relay_update_io(struct relay *r)
{
	uint32_t ev = 0;

	if (r->fd < 0)
		return;
	if (!r->connected || r->up_len > r->up_off)
		ev |= EV_WRITE;
	if (r->connected && !r->down_eof && r->down_len == r->down_off)
		ev |= EV_READ;
	(void)ev_io_start(r->gc->g->loop, &r->io, ev);
}

/* Write what the client sent on to the broker. 0, or -1 after abort. */
static int relay_write_up(struct relay *r)
{
	while (r->connected && r->up_len > r->up_off) {
		ssize_t n = send(r->fd, r->up + r->up_off, r->up_len - r->up_off,
		                 MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			r->gc->g->st.broker_resets++;
			relay_abort(r, 0);
			return -1;
		}
		r->up_off += (size_t)n;
		r->bytes_up += (uint64_t)n;
		r->gc->g->st.bytes_up += (uint64_t)n;
	}
	if (r->up_off == r->up_len) {
		r->up_off = r->up_len = 0;
		free(r->up);
		r->up = NULL;
	}
	if (r->connected && r->up_eof && r->up_len == 0 && !r->up_shut) {
		shutdown(r->fd, SHUT_WR);
		r->up_shut = 1;
	}
	return 0;
}

/*
 * Client to broker: take the stream's bytes only when the last ones left
 * for the broker (see "Backpressure"). 0, or -1 when r is gone.
 */
static int relay_pump_up(struct relay *r)
{
	struct tr_conn *tc = r->gc->tc;

	while (!r->up_eof && r->up_len == 0) {
		int64_t sid = r->sid;
		ssize_t n;

		if (!r->up && !(r->up = malloc(RELAY_BUF))) {
			relay_abort(r, 0);
			return -1;
		}
		n = tr_recv(tc, &sid, r->up, RELAY_BUF, evloop_clock_ns());
		if (n == TR_AGAIN)
			break;
		if (n == TR_EOF) {
			r->up_eof = 1;
			break;
		}
		if (n == TR_ERESET) {
			r->gc->g->st.stream_resets_in++;
			relay_abort(r, 0);
			return -1;
		}
		if (n < 0)
			return 0; /* the connection failed: conn_process sees */
		r->up_len = (size_t)n;
		r->up_off = 0;
		if (relay_write_up(r) < 0)
			return -1;
	}
	return relay_write_up(r);
}

/* Broker to client: what the stream takes now. 0, or -1 when r is gone. */
static int relay_pump_down(struct relay *r)
{
	struct tr_conn *tc = r->gc->tc;

	while (r->down_len > r->down_off) {
		ssize_t n = tr_send(tc, r->sid, r->down + r->down_off,
		                    r->down_len - r->down_off,
		                    evloop_clock_ns());

		if (n == TR_AGAIN)
			return 0;
		if (n < 0)
			return 0; /* the connection failed: conn_process sees */
		r->down_off += (size_t)n;
		r->bytes_down += (uint64_t)n;
		r->gc->g->st.bytes_down += (uint64_t)n;
	}
	r->down_off = r->down_len = 0;
	free(r->down);
	r->down = NULL;
	if (r->down_eof && !r->fin_sent) {
		if (tr_shutdown(tc, r->sid, evloop_clock_ns()) == 0)
			r->fin_sent = 1;
	}
	/* both ways done: the relay has nothing left to do */
	if (r->fin_sent && r->up_eof && r->up_len == 0) {
		relay_unlink(r);
		relay_free(r);
		return -1;
	}
	return 0;
}

static void relay_io_cb(struct evloop *loop, struct ev_io *w, uint32_t ev)
{
	struct relay *r = w->arg;
	struct gw_conn *gc = r->gc;

	(void)loop;
	if (!r->connected && (ev & (EV_WRITE | EV_ERROR | EV_HUP))) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);

		if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
			soerr = errno;
		if (soerr) {
			gc->g->st.broker_connect_failures++;
			relay_abort(r, 0);
			goto out;
		}
		r->connected = 1;
		gc->g->st.broker_connects++;
	}
	if (r->connected && (ev & EV_WRITE) && relay_pump_up(r) < 0)
		goto out;
	if (r->connected && (ev & (EV_READ | EV_HUP | EV_ERROR)) &&
	    r->down_len == r->down_off && !r->down_eof) {
		ssize_t n;

		if (!r->down && !(r->down = malloc(RELAY_BUF))) {
			relay_abort(r, 0);
			goto out;
		}
		do
			n = recv(r->fd, r->down, RELAY_BUF, 0);
		while (n < 0 && errno == EINTR);
		if (n > 0) {
			r->down_len = (size_t)n;
			r->down_off = 0;
		} else if (n == 0) {
			r->down_eof = 1;
		} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
			gc->g->st.broker_resets++;
			relay_abort(r, 0);
			goto out;
		}
		if (relay_pump_down(r) < 0)
			goto out;
	}
	relay_update_io(r);
out:
	conn_process(gc);
}

/* A new stream: connect to the broker for it. */
static void relay_new(struct gw_conn *gc, int64_t sid)
{
	struct gw *g = gc->g;
	struct relay *r = calloc(1, sizeof(*r));
	int one = 1;

	if (!r) {
		(void)tr_reset(gc->tc, sid, 0, evloop_clock_ns());
		return;
	}
	r->gc = gc;
	r->sid = sid;
	r->fd = socket(g->broker.ss_family,
	               SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	g->st.streams++;
	r->next = gc->relays;
	gc->relays = r;
	if (r->fd < 0) {
		g->st.broker_connect_failures++;
		relay_abort(r, 0);
		return;
	}
	if (g->o.nodelay)
		(void)setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one,
		                 sizeof(one));
	if (connect(r->fd, (struct sockaddr *)&g->broker, g->brokerlen) < 0 &&
	    errno != EINPROGRESS) {
		g->st.broker_connect_failures++;
		relay_abort(r, 0);
		return;
	}
	ev_io_init(&r->io, r->fd, relay_io_cb, r);
	relay_update_io(r);
}

/* ---- QUIC connections ---- */

static void conn_close(struct gw_conn *gc)
{
	struct gw *g = gc->g;

	while (gc->relays) {
		struct relay *r = gc->relays;

		gc->relays = r->next;
		relay_free(r);
	}
	ev_timer_stop(g->loop, &gc->timer);
	if (gc->prev)
		gc->prev->next = gc->next;
	else
		g->conns = gc->next;
	if (gc->next)
		gc->next->prev = gc->prev;
	g->n_conns--;
	g->st.conns_closed++;
	tr_close(gc->tc); /* the transport finishes its closing period */
	free(gc);
}

static void conn_timer_cb(struct evloop *loop, struct ev_timer *t)
{
	struct gw_conn *gc = t->arg;
	int r;

	(void)loop;
	r = tr_on_expiry(gc->tc, evloop_clock_ns());
	if (r == TR_ETIMEOUT)
		gc->g->st.idle_timeouts++;
	conn_process(gc);
}

/*
 * Everything a connection may need after news: its new streams, bytes
 * both ways, its own progress (ACKs), its timer; closing when it failed.
 */
static void conn_process(struct gw_conn *gc)
{
	struct gw *g = gc->g;
	struct tr_conn *tc = gc->tc;
	struct relay *r, *next;
	int64_t sid, now = evloop_clock_ns(), exp;

	if (!gc->handshake_seen && tr_handshake(tc, now) == 0)
		gc->handshake_seen = 1;
	while (tr_accept_stream(tc, &sid) == 0)
		relay_new(gc, sid);
	for (r = gc->relays; r; r = next) {
		next = r->next;
		if (relay_pump_up(r) < 0)
			continue;
		if (relay_pump_down(r) < 0)
			continue;
		relay_update_io(r);
	}
	if (tr_progress(tc, evloop_clock_ns()) < 0 || tc->err) {
		if (strstr(tr_errmsg(tc), "idle timeout") == NULL &&
		    strstr(tr_errmsg(tc), "closed by") == NULL)
			g->st.conn_errors++;
		conn_close(gc);
		return;
	}
	exp = tr_expiry(tc);
	if (exp != EV_NEVER)
		ev_timer_start(g->loop, &gc->timer, exp);
	else
		ev_timer_stop(g->loop, &gc->timer);
}

static void listener_cb(struct evloop *loop, struct ev_io *w, uint32_t ev)
{
	struct gw *g = w->arg;
	struct tr_conn *tc;
	int n = 0;

	(void)loop;
	(void)ev;
	while (n++ < 256 && tr_accept(g->l, evloop_clock_ns(), &tc) == 0) {
		struct gw_conn *gc = NULL;

		if (tr_take_notes(tc) & TR_NOTE_NEW) {
			if (g->stopping ||
			    (g->o.max_conns && g->n_conns >= g->o.max_conns) ||
			    !(gc = calloc(1, sizeof(*gc)))) {
				tr_close(tc);
				continue;
			}
			gc->g = g;
			gc->tc = tc;
			tc->owner = gc;
			ev_timer_init(&gc->timer, conn_timer_cb, gc);
			gc->next = g->conns;
			if (g->conns)
				g->conns->prev = gc;
			g->conns = gc;
			g->n_conns++;
		} else {
			gc = tc->owner;
		}
		if (gc)
			conn_process(gc);
	}
}

/* ---- statistics ---- */

static json_t *stats_json(struct gw *g)
{
	const struct quic_stats_server *q = quic_listener_stats(g->l);
	json_t *doc = app_report_new("gateway");
	json_t *cfg = json_object(), *quic = json_object(),
	       *relay = json_object();

	report_set(cfg, "listen", json_string(g->o.listen));
	report_set(cfg, "port", json_integer(g->o.port));
	report_set(cfg, "broker", json_string(g->broker_name));
	report_set(cfg, "broker_tcp_nodelay", json_boolean(g->o.nodelay));
	report_set(cfg, "idle_timeout_us", report_us(g->o.idle_ns));
	report_set(cfg, "retry", json_boolean(g->o.retry));
	report_set(cfg, "anti_replay_window_us",
	           report_us(g->ctx->cfg.replay_window_ns));
	report_set(cfg, "congestion_control",
	           json_string(g->o.cc ? g->o.cc : "cubic"));
	report_set(cfg, "qlog_dir",
	           g->o.qlog_dir ? json_string(g->o.qlog_dir) : json_null());
	report_set(cfg, "relay_buffer_bytes", json_integer(RELAY_BUF));
	report_set(doc, "config", cfg);
	report_set(doc, "started", report_time(g->t_start_wall));
	report_set(doc, "uptime_us",
	           report_span_us(g->t_start, evloop_clock_ns()));
	report_set(quic, "datagrams_in", report_u64(q->datagrams_in));
	report_set(quic, "bytes_in", report_u64(q->bytes_in));
	report_set(quic, "connections_total", report_u64(q->conns_total));
	report_set(quic, "connections_now", report_u64(q->conns_now));
	report_set(quic, "handshakes", report_u64(q->handshakes));
	report_set(quic, "handshake_failures",
	           report_u64(q->handshake_failures));
	report_set(quic, "alpn_refused", report_u64(q->alpn_refused));
	report_set(quic, "early_data_accepted", report_u64(q->early_accepted));
	report_set(quic, "early_data_replays_refused",
	           report_u64(q->replays_refused));
	report_set(quic, "migrations", report_u64(q->migrations));
	report_set(quic, "version_negotiations",
	           report_u64(q->version_negotiations));
	report_set(quic, "stateless_resets", report_u64(q->stateless_resets));
	report_set(quic, "retries", report_u64(q->retries));
	report_set(quic, "bad_tokens", report_u64(q->bad_tokens));
	report_set(quic, "protocol_errors", report_u64(q->protocol_errors));
	report_set(quic, "garbage_datagrams", report_u64(q->garbage));
	report_set(quic, "dropped_datagrams", report_u64(q->dropped));
	report_set(quic, "idle_timeouts", report_u64(g->st.idle_timeouts));
	report_set(quic, "connection_errors", report_u64(g->st.conn_errors));
	report_set(doc, "quic", quic);
	report_set(relay, "streams", report_u64(g->st.streams));
	report_set(relay, "streams_done", report_u64(g->st.streams_done));
	report_set(relay, "stream_resets_in",
	           report_u64(g->st.stream_resets_in));
	report_set(relay, "stream_resets_out",
	           report_u64(g->st.stream_resets_out));
	report_set(relay, "broker_connects", report_u64(g->st.broker_connects));
	report_set(relay, "broker_connect_failures",
	           report_u64(g->st.broker_connect_failures));
	report_set(relay, "broker_resets", report_u64(g->st.broker_resets));
	report_set(relay, "bytes_to_broker", report_u64(g->st.bytes_up));
	report_set(relay, "bytes_from_broker", report_u64(g->st.bytes_down));
	report_set(doc, "relay", relay);
	report_set(doc, "resources", report_resources());
	return doc;
}

static int write_stats(struct gw *g)
{
	json_t *doc = stats_json(g);
	int r;

	if (!doc)
		return -ENOMEM;
	r = report_write(doc, g->o.json);
	json_decref(doc);
	if (r < 0)
		cli_error("cannot write '%s': %s", g->o.json ? g->o.json : "-",
		          strerror(-r));
	return r;
}

static void signal_cb(struct evloop *loop, struct ev_io *w, uint32_t ev)
{
	struct gw *g = w->arg;
	struct signalfd_siginfo si;

	(void)ev;
	while (read(g->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR1) {
			(void)write_stats(g);
			continue;
		}
		g->stopping = 1;
		evloop_stop(loop);
	}
}

/* ---- setup ---- */

static const char usage[] =
	"usage: gateway --cert FILE --key FILE [options]\n"
	"MQTT over QUIC in front of a TCP MQTT broker: every QUIC stream a\n"
	"client opens is relayed to its own TCP connection to the broker.\n"
	"  --listen ADDR          address to listen on (default 0.0.0.0)\n"
	"  --port PORT            UDP port (default 14567)\n"
	"  --cert FILE, --key FILE  the server's certificate and key (PEM)\n"
	"  --broker HOST          the MQTT broker (default 127.0.0.1)\n"
	"  --broker-port PORT     its TCP port (default 1883)\n"
	"  --no-nodelay           leave Nagle on for broker connections\n"
	"                         (default: TCP_NODELAY, as a benchmark\n"
	"                         broker's own sockets)\n"
	"  --idle-timeout DUR     close a silent QUIC connection (default\n"
	"                         120s)\n"
	"  --retry                make new clients prove their address\n"
	"                         (a Retry round trip first)\n"
	"  --cc NAME              congestion control: cubic (default), reno,\n"
	"                         bbr, bbr2\n"
	"  --qlog-dir DIR         one qlog file per connection\n"
	"  --max-conns N          refuse connections beyond N (default: no\n"
	"                         limit but the open-file limit)\n"
	"  --json FILE            statistics at exit and on SIGUSR1\n"
	"                         (default: stdout)\n"
	"  --ready-file FILE      write \"ready\" there once listening\n"
	"  --help, --version\n";

enum {
	OPT_LISTEN = 1000, OPT_PORT, OPT_CERT, OPT_KEY, OPT_BROKER,
	OPT_BROKER_PORT, OPT_NO_NODELAY, OPT_IDLE, OPT_RETRY, OPT_CC,
	OPT_QLOG, OPT_MAX_CONNS, OPT_JSON, OPT_READY, OPT_HELP, OPT_VERSION,
};

static const struct option longopts[] = {
	{ "listen", required_argument, 0, OPT_LISTEN },
	{ "port", required_argument, 0, OPT_PORT },
	{ "cert", required_argument, 0, OPT_CERT },
	{ "key", required_argument, 0, OPT_KEY },
	{ "broker", required_argument, 0, OPT_BROKER },
	{ "broker-port", required_argument, 0, OPT_BROKER_PORT },
	{ "no-nodelay", no_argument, 0, OPT_NO_NODELAY },
	{ "idle-timeout", required_argument, 0, OPT_IDLE },
	{ "retry", no_argument, 0, OPT_RETRY },
	{ "cc", required_argument, 0, OPT_CC },
	{ "qlog-dir", required_argument, 0, OPT_QLOG },
	{ "max-conns", required_argument, 0, OPT_MAX_CONNS },
	{ "json", required_argument, 0, OPT_JSON },
	{ "ready-file", required_argument, 0, OPT_READY },
	{ "help", no_argument, 0, OPT_HELP },
	{ "version", no_argument, 0, OPT_VERSION },
	{ 0, 0, 0, 0 }
};

/* 0 to run, 1 when --help/--version was handled; exits on bad usage. */
static int parse_args(int argc, char **argv, struct gw_opts *o)
{
	uint64_t v;
	int code;

	memset(o, 0, sizeof(*o));
	o->listen = "0.0.0.0";
	o->port = 14567;
	o->broker = "127.0.0.1";
	o->broker_port = 1883;
	o->nodelay = 1;
	o->idle_ns = 120 * UINT64_C(1000000000);
	opterr = 0;
	while ((code = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (code) {
		case OPT_LISTEN: o->listen = optarg; break;
		case OPT_PORT:
			if (cli_parse_u64("--port", optarg, 1, 65535, &v) < 0)
				exit(CLI_EXIT_USAGE);
			o->port = (uint16_t)v;
			break;
		case OPT_CERT: o->cert = optarg; break;
		case OPT_KEY: o->key = optarg; break;
		case OPT_BROKER: o->broker = optarg; break;
		case OPT_BROKER_PORT:
			if (cli_parse_u64("--broker-port", optarg, 1, 65535,
			                  &v) < 0)
				exit(CLI_EXIT_USAGE);
			o->broker_port = (uint16_t)v;
			break;
		case OPT_NO_NODELAY: o->nodelay = 0; break;
		case OPT_IDLE:
			if (cli_parse_duration("--idle-timeout", optarg,
			                       1000000, UINT64_C(86400000000000),
			                       &o->idle_ns) < 0)
				exit(CLI_EXIT_USAGE);
			break;
		case OPT_RETRY: o->retry = 1; break;
		case OPT_CC: o->cc = optarg; break;
		case OPT_QLOG: o->qlog_dir = optarg; break;
		case OPT_MAX_CONNS:
			if (cli_parse_u64("--max-conns", optarg, 1, 10000000,
			                  &o->max_conns) < 0)
				exit(CLI_EXIT_USAGE);
			break;
		case OPT_JSON: o->json = optarg; break;
		case OPT_READY: o->ready_file = optarg; break;
		case OPT_HELP: fputs(usage, stdout); return 1;
		case OPT_VERSION:
			printf("gateway %s\n", BENCH_VERSION);
			return 1;
		case ':':
			cli_die_usage("option '%s' needs a value (see --help)",
			              argv[optind - 1]);
		default:
			cli_die_usage("unknown option '%s' (see --help)",
			              argv[optind - 1]);
		}
	}
	if (optind < argc)
		cli_die_usage("unexpected argument '%s' (options only; see "
		              "--help)", argv[optind]);
	if (!o->cert || !o->key)
		cli_die_usage("--cert and --key are required (the server's "
		              "certificate and key, PEM)");
	if (o->qlog_dir) {
		if (access(o->qlog_dir, W_OK) != 0)
			cli_die_usage("--qlog-dir '%s': cannot write there: %s",
			              o->qlog_dir, strerror(errno));
	}
	return 0;
}

/* Resolve the broker and check it answers, so that a wrong address is
 * one line at startup instead of a reset per client. */
static int broker_check(struct gw *g)
{
	struct addrinfo hints, *res = NULL;
	char port[8];
	int r, fd;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", (unsigned)g->o.broker_port);
	r = getaddrinfo(g->o.broker, port, &hints, &res);
	if (r != 0 || !res) {
		cli_error("--broker '%s': cannot resolve: %s", g->o.broker,
		          r ? gai_strerror(r) : "no address");
		return -1;
	}
	memcpy(&g->broker, res->ai_addr, res->ai_addrlen);
	g->brokerlen = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(g->broker_name, sizeof(g->broker_name), "%s:%u", g->o.broker,
	         (unsigned)g->o.broker_port);
	fd = socket(g->broker.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&g->broker,
	                      g->brokerlen) < 0) {
		cli_error("broker %s is unreachable: %s; start it first or "
		          "check --broker and --broker-port", g->broker_name,
		          strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct gw g;
	struct tr_config cfg;
	char err[400];
	int r, rc = 0;

	cli_prog = "gateway";
	memset(&g, 0, sizeof(g));
	if (parse_args(argc, argv, &g.o))
		return 0;
	if (broker_check(&g) < 0)
		return CLI_EXIT_RUNTIME;
	if (cli_raise_nofile(g.o.max_conns ? 2 * g.o.max_conns + 64 : 1024) <
	    0)
		return CLI_EXIT_USAGE;
	tr_config_init(&cfg);
	cfg.host = g.o.listen;
	cfg.port = g.o.port;
	cfg.server = 1;
	cfg.certfile = g.o.cert;
	cfg.keyfile = g.o.key;
	cfg.retry = g.o.retry;
	cfg.cc = g.o.cc;
	cfg.qlog_dir = g.o.qlog_dir;
	cfg.idle_timeout_ns = (int64_t)g.o.idle_ns;
	r = tr_ctx_new(&g.ctx, &tr_quic_ops, &cfg, err, sizeof(err));
	if (r < 0) {
		cli_error("%s", err);
		return r == TR_ECONFIG ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME;
	}
	r = tr_listen(g.ctx, &g.l, err, sizeof(err));
	if (r < 0) {
		cli_error("%s", err);
		tr_ctx_del(g.ctx);
		return CLI_EXIT_RUNTIME;
	}
	g.loop = evloop_new();
	if (!g.loop || (g.sigfd = cli_signalfd(SIGUSR1)) < 0) {
		cli_error("cannot set up the event loop: %s", strerror(errno));
		return CLI_EXIT_RUNTIME;
	}
	g.t_start_wall = report_wall_ns();
	g.t_start = evloop_clock_ns();
	ev_io_init(&g.lio, g.l->fd, listener_cb, &g);
	ev_io_start(g.loop, &g.lio, EV_READ);
	ev_io_init(&g.sig_io, g.sigfd, signal_cb, &g);
	ev_io_start(g.loop, &g.sig_io, EV_READ);
	if (g.o.ready_file && (r = cli_write_ready(g.o.ready_file)) < 0) {
		cli_error("--ready-file '%s': %s", g.o.ready_file,
		          strerror(-r));
		rc = CLI_EXIT_RUNTIME;
	} else if ((r = evloop_run(g.loop)) < 0) {
		cli_error("event loop: %s", strerror(-r));
		rc = CLI_EXIT_RUNTIME;
	}
	if (write_stats(&g) < 0)
		rc = CLI_EXIT_RUNTIME;
	while (g.conns)
		conn_close(g.conns);
	ev_io_stop(g.loop, &g.lio);
	ev_io_stop(g.loop, &g.sig_io);
	close(g.sigfd);
	tr_listener_close(g.l);
	tr_ctx_del(g.ctx);
	evloop_del(g.loop);
	return rc;
}
