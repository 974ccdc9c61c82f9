/*
 * loadgen: the benchmark's load generator. N MQTT publisher connections in
 * one process and one event loop; every payload carries the benchmark header
 * (payload.h) so that the sink can measure one-way latency, loss,
 * duplicates and reordering. Writes one JSON document when it ends.
 *
 * Timing: message i of a client is due at connack + i / rate (constant) or
 * after exponential gaps (Poisson, seeded per client). Due times never move:
 * a client that falls behind sends its overdue messages back to back as soon
 * as it can (none is skipped), then follows the schedule again. What holds it
 * back: at QoS 0 only a full socket and output buffer (open loop as long as
 * the broker keeps reading); at QoS 1 and 2 also the inflight window (at most
 * --inflight unacknowledged messages), which closes the loop: when acks come
 * back slower than the schedule, the offered load drops to window / ack time
 * whatever --rate says.
 *
 * The payload carries the actual send time, read just before the publish,
 * and the due time (as the lag between the two, payload.h), so the sink
 * reports both a latency from the send (transport and broker time only) and
 * a latency from the schedule (the wait for its turn included): a backlog
 * behind a full window or output buffer cannot hide. The wait is measured
 * here too, per message, as the schedule lag (send time minus due time):
 * histogram "schedule_lag" with the count of messages sent more than LATE_NS
 * late, next to the configured and the achieved rate. How long a message
 * can wait in the engine's output buffer depends on its limit and on the
 * socket's: "socket" records max_outbuf, SO_SNDBUF and TCP_NODELAY.
 *
 * Rate 0 means "as fast as the inflight window and the socket allow": there
 * is no schedule, hence no lag and no due time.
 *
 * Flows (--flows N): a client's one connection and MQTT session carries N
 * publishers, each with its own id, topic, schedule (flow f starts f / N of
 * a period late) and sequence numbers; the client sends whichever flow is
 * due first. Their written counts come from the engine's one count through
 * a queue of the flows of the messages not yet written (struct
 * flow_queue): a stream keeps order.
 *
 * Migration (--migrate-after, SIGUSR1): QUIC moves the connection to a new
 * socket and goes on. TCP and TLS die with their address: the connection
 * is dropped and made again from a new socket with the persistent session
 * (client_reconnect); the client publishes nothing until the new CONNACK,
 * after which the due messages go out back to back. Each move is recorded
 * (struct mig_rec).
 *
 * Duration: --duration starts when every client has connected (or failed),
 * and not before the ramp-up ends, so that every client publishes for the
 * whole duration at least. A run in which some clients never connected
 * (failed, abandoned, never started because the run stopped) is not "ok":
 * the JSON's "completeness" says why, one line on stderr says how many, and
 * the exit status is 1.
 *
 * Loss accounting: per publisher, the JSON gives the messages queued, those
 * written to the transport whole (the engine's pub_written) and the first
 * and last sequence number, so scripts/reconcile.py can set them against
 * what the sinks received: queued but never written (a connection that
 * died) apart from written and lost. Publisher ids are random by default
 * (getrandom), so that processes feeding one sink do not collide.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "app/options.h"
#include "app/results.h"
#include "app/client.h"
#include "net/conn.h"
#include "net/quic.h"
#include "util/afile.h"
#include "net/evloop.h"
#include "mqtt/codec.h"
#include "measure/payload.h"
#include "util/prng.h"
#include "measure/report.h"
#include "measure/stats.h"
#include "net/transport.h"

/*
 * Per-connection ack histograms cost 31 KiB each: only for small runs, and
 * allocated at a connection's first ack, so an idle connection has none.
 */
#define PER_CONN_HIST_MAX 1000
/* A message sent more than this after its due time counts as late. */
#define LATE_NS INT64_C(1000000) /* 1 ms */
/* The smallest --rate above 0: one message per 1000 s. */
#define MIN_RATE 0.001
/* Messages one client sends per turn at max rate before yielding. */
#define MAX_RATE_BURST 256
#define MAX_PAYLOAD (64u * 1024 * 1024)
#define MAX_CLIENTS 1000000u
/* Topic flows of one client at the most (--flows). */
#define MAX_FLOWS 1000u

enum pub_state {
	PUB_PENDING = 0, /* not started yet */
	PUB_CONNECTING,  /* client_connect() called, no CONNACK yet */
	PUB_CONNECTED,
	PUB_CLOSING,     /* our DISCONNECT under way */
	PUB_CLOSED,      /* closed after our DISCONNECT */
	PUB_FAILED,      /* never connected: error */
	PUB_LOST,        /* connected, then closed by an error */
	PUB_ABANDONED,   /* connect abandoned because the run stopped */
	PUB_NOT_STARTED, /* the run stopped before its turn */
	PUB_SLEEPING,    /* between two cycles (--cycles) */
	PUB_MIGRATING,   /* TCP, TLS: reconnecting from a new port */
};

static const char *const pub_state_names[] = {
	"pending", "connecting", "connected", "closing", "closed",
	"failed", "lost", "abandoned", "not_started", "sleeping",
	"migrating",
};

struct lg;

/* One publisher connection. Kept small: 10,000 of them must stay cheap. */
/* What the transport knew of a connection when it ended (tr_stats),
 * compact: thousands of these live for the whole run. */
struct pub_transport {
	uint8_t valid;
	int32_t srtt_us, rttvar_us, min_rtt_us;
	int64_t cwnd_bytes, retransmits, segs_out, segs_in;
};

/*
 * --flows: the flow of every message not yet written whole, in publish
 * order. A connection's stream keeps order, so the messages the engine
 * counts as written (pub_written, each once, resends after a reconnect
 * included) are always the oldest of these: their flows are popped from
 * the head as the count grows. Bounded by what the output buffer holds.
 */
struct flow_queue {
	uint16_t *ring; /* flow indexes; capacity a power of 2 */
	uint32_t head, n, cap;
	uint64_t seen;  /* pub_written already given to flows */
};

/*
 * One topic flow of a publisher: its own publisher id, topic, schedule
 * and sequence numbers. A client has --flows of them (1 by default) on
 * its one MQTT session; lg->flows holds them, client i's at i x flows.
 */
struct flow {
	char *topic;
	uint16_t topic_len;
	uint32_t publisher_id;
	uint64_t target;     /* messages to send; PAYLOAD_SEQ_MAX + 1: no
	                        limit */
	uint64_t sent;       /* queued: sequence numbers 0 .. sent - 1 */
	uint64_t sent0;      /* sent before this cycle (--cycles) */
	uint64_t written;    /* written whole, the first `written` of them */
	int64_t next_at;     /* rate mode: when the next one is due */
	int64_t t_rate0;     /* rate mode: when this cycle's first was due */
	uint64_t rng;        /* Poisson gaps */
};

/*
 * One move of a connection to a new local port or address (--migrate-after,
 * SIGUSR1). QUIC migrates the connection: it goes on while the new path is
 * validated. TCP and TLS cannot: the connection is dropped and a new one
 * made, and the persistent MQTT session resumed (client_reconnect).
 */
struct mig_rec {
	int64_t t_at;     /* the move was asked */
	int64_t t_done;   /* QUIC: path validated; TCP/TLS: the new CONNACK */
	int8_t result;    /* 1 done, -1 failed, 0 pending */
	uint8_t session_present; /* TCP/TLS: the broker kept the session */
	uint8_t tls_resumed;     /* TLS: the new handshake resumed */
	uint32_t delayed; /* QUIC: sent before the validation; TCP/TLS: due
	                     while it was down, sent after */
	uint32_t resent;  /* TCP/TLS: packets sent again after CONNACK (DUP
	                     PUBLISH, PUBREL) */
};

/* What only some connections need (ack figures once acks come, transport
 * statistics at the close, cycles, migrations), apart from struct pub so
 * that an idle connection does not pay for it. */
struct pub_more {
	uint64_t ack_min, ack_max;
	double ack_sum;
	int64_t t_first_pub, t_last_pub;
	struct pub_transport tr;     /* the transport's view, at close */
	/* --cycles: cycles begun, and where this one began */
	uint32_t cycle;
	int64_t t_cycle;
	uint64_t wire_cycle; /* wire bytes in + out before this cycle */
	/* --migrate-after / SIGUSR1: every move, in order */
	struct mig_rec *migs;
	uint32_t n_migs;
	uint64_t written;    /* messages the transport took whole */
	struct flow_queue fq; /* --flows: whose messages wait to be written */
};

struct pub {
	struct lg *lg;
	struct client *cl;
	struct flow *flows;  /* its --flows flows, in lg->flows */
	uint8_t state; /* enum pub_state */
	uint8_t send_done, blocked, tls_resumed;
	uint8_t grouped;     /* on a shared connection (--streams) */
	uint32_t index;
	uint32_t acks_failed, late;
	uint64_t target; /* its flows' targets summed */
	uint64_t sent, acks; /* over its flows; payload bytes: sent * --size */
	struct pub_more *more;       /* from the first use: see pm() */
	struct stats_hist *ack_hist; /* from the first ack; small runs only */
	int64_t t_start, t_tcp, t_ready, t_connack;
	int64_t t_connect_sent; /* when CONNECT could leave (see on_connected) */
	uint64_t wire_in, wire_out, mqtt_out;
	char *err;
	struct ev_timer timer;
};

struct lg_opts {
	struct cli_conn conn;
	uint32_t clients;
	uint32_t flows;   /* topic flows per client */
	const char *topic_tmpl;
	uint64_t size;
	double rate; /* per flow, messages/s; 0: max */
	int poisson;
	uint64_t seed;
	uint64_t count;   /* per flow, 0: not given */
	uint64_t total;   /* all flows of all clients, 0: not given */
	uint64_t duration_ns;
	uint64_t ramp_ns;
	int idle;
	uint32_t id_base;
	int id_base_set; /* given with --id-base; else random */
	uint16_t inflight;
	uint64_t drain_ns;
	uint32_t max_pending;
	const char *ready_file;
	int per_conn; /* list every connection in the JSON */
	uint32_t streams;      /* clients per connection (QUIC streams) */
	uint32_t cycles;       /* connect, publish --count, disconnect */
	uint64_t sleep_ns;     /* between cycles */
	int early_data;        /* 0-RTT on resumed QUIC connections */
	const char *session_file; /* resumption state kept across runs */
	uint64_t migrate_after;   /* rebind after this many messages */
	const char *migrate_addr; /* ... to this local address */
	int64_t start_at;      /* CLOCK_MONOTONIC ns: start no earlier */
};

struct lg {
	struct lg_opts o;
	struct evloop *loop;
	struct tr_ctx *tr;
	struct tr_ctx *tr_mig; /* TCP/TLS --migrate-addr: bound to it */
	struct client_config ccfg;
	struct pub *pubs;
	struct flow *flows; /* clients x flows */
	uint8_t *payload;
	json_t *doc;
	int per_conn_hist;

	int64_t t0;       /* run start (monotonic) */
	uint64_t wall0;   /* run start (wall clock) */
	int64_t deadline; /* end of publishing, 0: none */
	uint32_t next_start, pending, open, settled;
	uint32_t n_ok, n_failed, n_lost, n_abandoned, n_not_started;
	uint32_t sending; /* connected clients still publishing */
	int stopping, signals;
	const char *stop_reason;
	char *first_err; /* first connection error, for the stderr line */

	long rss_start_kib, rss_connected_kib;
	uint64_t hist_bytes;           /* per-connection ack histograms */
	uint64_t hist_bytes_connected; /* ... at the rss_connected reading */
	int64_t t_all_settled;
	char tls_version[16], tls_cipher[48];

	struct stats_hist ack_lat, conn_total, conn_transport, conn_mqtt,
		conn_tcp, conn_handshake, sched_lag;
	char cc[16]; /* congestion control the transport reported */
	/* --streams: the shared connections and their clients still on */
	struct conn **groups;
	uint32_t *group_refs, n_groups;
	uint64_t group_wire_in, group_wire_out;
	/* --cycles */
	struct stats_hist cycle_done, cycle_wire, cycle_segs;
	uint64_t cycles_done;
	uint32_t sleeping;
	/* 0-RTT outcomes, per connection */
	uint64_t early_tried, early_ok, early_rejected;
	/* --session-file: what it held at the start, per client */
	uint8_t **sess_blob;
	size_t *sess_len;
	uint32_t n_sess;
	uint64_t more_oom;
	uint64_t acks, acks_failed, sent, bytes, publish_errors, late;
	uint8_t first_refusal; /* reason of the first refused publish */
	int64_t t_first_pub, t_last_pub;
	/* steady state: from t_steady (ramp-up over, every connection up)
	 * to t_pub_end (the last publisher stopped sending) */
	int64_t t_steady, t_pub_end;
	uint64_t steady_sent;
	/* the send path's settings, read from the sockets */
	struct sockopts_seen so_connect, so_close;

	struct ev_timer start_timer, deadline_timer, drain_timer,
		final_timer;
	struct ev_io sig_io;
	int sigfd;
};

/*
 * p's less used figures, allocated at their first use. Out of memory, a
 * shared scratch copy takes them (the figures are then wrong, and the run
 * says so in its errors) rather than the process crashing.
 */
static struct pub_more *pm(struct pub *p)
{
	static struct pub_more scratch_more;

	if (p->more)
		return p->more;
	p->more = calloc(1, sizeof(*p->more));
	if (p->more)
		return p->more;
	if (!p->lg->more_oom++)
		report_error(p->lg->doc, "out of memory for per-connection "
		             "figures: some are wrong");
	return &scratch_more;
}

/* The same for reading: zeros when p never needed them. */
static const struct pub_more *pmc(const struct pub *p)
{
	static const struct pub_more none;

	return p->more ? p->more : &none;
}

static const char usage[] =
	"usage: loadgen [options]\n"
	"MQTT load generator of the transport benchmark: N publisher\n"
	"connections; every payload starts with a benchmark header (magic,\n"
	"publisher id, sequence number, CLOCK_MONOTONIC send time, the lag\n"
	"behind the schedule) that the sink uses for one-way latency from the\n"
	"send and from the due time, loss, duplicates and reordering.\n"
	"\n"
	"Load:\n"
	"  --clients N            publisher connections (default 1)\n"
	"  --flows N              independent topic flows per client, all on its\n"
	"                         one connection and MQTT session (default 1):\n"
	"                         each has its own publisher id, topic ({f}),\n"
	"                         schedule and sequence numbers; --rate and\n"
	"                         --count are per flow\n"
	"  --topic TEMPLATE       topic; {client} is replaced by the client id,\n"
	"                         {n} by the client's index, {f} by the flow's\n"
	"                         (default bench/{client})\n"
	"  --size BYTES           payload size, >= 28 (the header; default 64)\n"
	"  --rate R               messages/s per client, per flow with --flows\n"
	"                         (default 10; at least 0.001); 0 = as fast as\n"
	"                         window and socket allow\n"
	"  --arrival constant|poisson  gaps between messages (default constant)\n"
	"  --seed N               seed of the Poisson gaps (default 1)\n"
	"  --count N              messages per client, per flow with --flows\n"
	"  --total N              messages over all clients and flows (split\n"
	"                         evenly)\n"
	"  --duration DUR         publish (or, --idle, hold) for DUR from the\n"
	"                         moment every client has connected, not before\n"
	"                         the ramp-up ends\n"
	"                         (without --count/--total/--duration: until\n"
	"                         SIGINT/SIGTERM)\n"
	"  --ramp-up DUR          spread connection starts over DUR (default 0)\n"
	"  --max-pending N        connections being set up at once (default 64)\n"
	"  --idle                 connect, then only keep alive (memory runs)\n"
	"  --inflight N           QoS 1/2 messages in flight per connection\n"
	"                         (default 20, capped by the broker's Receive\n"
	"                         Maximum)\n"
	"  --drain DUR            after the last publish, wait up to DUR for\n"
	"                         acks (default 10s)\n"
	"  --id-base N            publisher id of client 0; client i gets\n"
	"                         N + i, its flow f N + i x flows + f (default:\n"
	"                         random, from getrandom, so that processes\n"
	"                         feeding one sink do not collide)\n"
	"  --ready-file FILE      create FILE once every connection is up\n"
	"  --no-per-connection    leave the per-connection list out of the JSON\n"
	"                         (the compact \"publishers\" list stays)\n"
	"  --start-at NS          start no earlier than this CLOCK_MONOTONIC\n"
	"                         time in ns (processes released together)\n"
	"\n"
	"Connections:\n"
	"  --cycles N             each client connects, publishes --count\n"
	"                         messages, disconnects, N times (a device that\n"
	"                         wakes, reports, sleeps); resumption and 0-RTT\n"
	"                         apply from the second cycle\n"
	"  --sleep DUR            between cycles (default 0)\n"
	"  --session-file FILE    TLS/QUIC resumption state: read at the start\n"
	"                         when FILE exists, written at the end\n"
	"  --early-data           QUIC: send CONNECT as 0-RTT early data on\n"
	"                         resumed connections\n"
	"  --streams N            QUIC: N consecutive clients share one\n"
	"                         connection, one stream each (default 1)\n"
	"  --migrate-after N      move the connection to a new local port (or\n"
	"                         --migrate-addr) after N messages; SIGUSR1\n"
	"                         does it at once. QUIC migrates the\n"
	"                         connection; TCP and TLS drop it and reconnect\n"
	"                         from a new socket with the persistent session\n"
	"                         (needs --persistent): unacknowledged QoS 1/2\n"
	"                         messages are resent with DUP, TLS resumes\n"
	"  --migrate-addr ADDR    the local address to move to\n"
	"\n"
	"Timing: message i of a client is due at its CONNACK + i / rate (or\n"
	"after Poisson gaps); with --flows N, message i of flow f at CONNACK +\n"
	"(i + f / N) / rate: the flows are spread evenly over the period and\n"
	"interleave on the connection in the order they are due. A client\n"
	"(a flow) that falls behind sends the overdue messages back to back,\n"
	"skipping none. At QoS 1/2 the inflight window closes the loop: at\n"
	"most --inflight messages wait for acks, so slow acks lower the\n"
	"offered load below --rate. The payload carries the\n"
	"actual send time and the due time: the sink reports the latency from\n"
	"the send (transport + broker) and from the schedule (the wait for its\n"
	"turn included). The wait alone is the schedule lag (send time - due\n"
	"time), in the JSON as \"schedule_lag\" with the messages sent over 1 ms\n"
	"late; \"throughput\" sets the achieved rate after the ramp-up\n"
	"(\"steady_state\") beside the configured one.\n"
	"\n"
	"A run in which some clients never connected is not ok: one line on\n"
	"stderr, exit status 1, and \"completeness\" in the JSON says why.\n"
	"\n";

enum {
	OPT_CLIENTS = CLI_OPT_FIRST_OWN,
	OPT_FLOWS,
	OPT_TOPIC,
	OPT_SIZE,
	OPT_RATE,
	OPT_ARRIVAL,
	OPT_SEED,
	OPT_COUNT,
	OPT_TOTAL,
	OPT_DURATION,
	OPT_RAMP,
	OPT_MAX_PENDING,
	OPT_IDLE,
	OPT_INFLIGHT,
	OPT_DRAIN,
	OPT_ID_BASE,
	OPT_READY,
	OPT_NO_PER_CONN,
	OPT_CYCLES,
	OPT_SLEEP,
	OPT_SESSION_FILE,
	OPT_EARLY,
	OPT_STREAMS,
	OPT_MIGRATE_AFTER,
	OPT_MIGRATE_ADDR,
	OPT_START_AT,
};

static const struct option longopts[] = {
	CLI_CONN_LONGOPTS,
	{ "clients", required_argument, 0, OPT_CLIENTS },
	{ "flows", required_argument, 0, OPT_FLOWS },
	{ "topic", required_argument, 0, OPT_TOPIC },
	{ "size", required_argument, 0, OPT_SIZE },
	{ "rate", required_argument, 0, OPT_RATE },
	{ "arrival", required_argument, 0, OPT_ARRIVAL },
	{ "seed", required_argument, 0, OPT_SEED },
	{ "count", required_argument, 0, OPT_COUNT },
	{ "total", required_argument, 0, OPT_TOTAL },
	{ "duration", required_argument, 0, OPT_DURATION },
	{ "ramp-up", required_argument, 0, OPT_RAMP },
	{ "max-pending", required_argument, 0, OPT_MAX_PENDING },
	{ "idle", no_argument, 0, OPT_IDLE },
	{ "inflight", required_argument, 0, OPT_INFLIGHT },
	{ "drain", required_argument, 0, OPT_DRAIN },
	{ "id-base", required_argument, 0, OPT_ID_BASE },
	{ "ready-file", required_argument, 0, OPT_READY },
	{ "no-per-connection", no_argument, 0, OPT_NO_PER_CONN },
	{ "cycles", required_argument, 0, OPT_CYCLES },
	{ "sleep", required_argument, 0, OPT_SLEEP },
	{ "session-file", required_argument, 0, OPT_SESSION_FILE },
	{ "early-data", no_argument, 0, OPT_EARLY },
	{ "streams", required_argument, 0, OPT_STREAMS },
	{ "migrate-after", required_argument, 0, OPT_MIGRATE_AFTER },
	{ "migrate-addr", required_argument, 0, OPT_MIGRATE_ADDR },
	{ "start-at", required_argument, 0, OPT_START_AT },
	{ 0, 0, 0, 0 },
};

/* ---- options ----------------------------------------------------------- */

static int handle_opt(void *ctx, int code, const char *arg)
{
	struct lg_opts *o = ctx;
	uint64_t v;

	switch (code) {
	case OPT_CLIENTS:
		if (cli_parse_u64("--clients", arg, 1, MAX_CLIENTS, &v) < 0)
			return CLI_EBADARG;
		o->clients = (uint32_t)v;
		return 0;
	case OPT_FLOWS:
		if (cli_parse_u64("--flows", arg, 1, MAX_FLOWS, &v) < 0)
			return CLI_EBADARG;
		o->flows = (uint32_t)v;
		return 0;
	case OPT_TOPIC:
		o->topic_tmpl = arg;
		return 0;
	case OPT_SIZE:
		if (cli_parse_size("--size", arg, 0, MAX_PAYLOAD, &o->size) < 0)
			return CLI_EBADARG;
		if (o->size < PAYLOAD_HEADER_LEN) {
			cli_error("--size: %s bytes is smaller than the benchmark "
			          "header (%d bytes); use --size %d or more",
			          arg, PAYLOAD_HEADER_LEN, PAYLOAD_HEADER_LEN);
			return CLI_EBADARG;
		}
		return 0;
	case OPT_RATE:
		if (cli_parse_double("--rate", arg, 0.0, 1e7, &o->rate) < 0)
			return CLI_EBADARG;
		if (o->rate > 0 && o->rate < MIN_RATE) {
			cli_error("--rate: %s messages/s is below the smallest "
			          "rate, %g (one message per %g s); use 0 for "
			          "as fast as possible", arg, MIN_RATE,
			          1 / MIN_RATE);
			return CLI_EBADARG;
		}
		return 0;
	case OPT_ARRIVAL:
		if (strcmp(arg, "constant") == 0) {
			o->poisson = 0;
		} else if (strcmp(arg, "poisson") == 0) {
			o->poisson = 1;
		} else {
			cli_error("--arrival: '%s' is not an arrival process "
			          "(use constant or poisson)", arg);
			return CLI_EBADARG;
		}
		return 0;
	case OPT_SEED:
		return cli_parse_u64("--seed", arg, 0, UINT64_MAX, &o->seed);
	case OPT_COUNT:
		/* sequence numbers 0 .. count - 1 */
		return cli_parse_u64("--count", arg, 1, PAYLOAD_SEQ_MAX + 1,
		                     &o->count);
	case OPT_TOTAL:
		return cli_parse_u64("--total", arg, 1, PAYLOAD_SEQ_MAX + 1,
		                     &o->total);
	case OPT_DURATION:
		return cli_parse_duration("--duration", arg, 1000000,
		                          UINT64_C(365) * 86400 * 1000000000,
		                          &o->duration_ns);
	case OPT_RAMP:
		return cli_parse_duration("--ramp-up", arg, 0,
		                          UINT64_C(86400) * 1000000000,
		                          &o->ramp_ns);
	case OPT_MAX_PENDING:
		if (cli_parse_u64("--max-pending", arg, 1, MAX_CLIENTS, &v) < 0)
			return CLI_EBADARG;
		o->max_pending = (uint32_t)v;
		return 0;
	case OPT_IDLE:
		o->idle = 1;
		return 0;
	case OPT_INFLIGHT:
		if (cli_parse_u64("--inflight", arg, 1, 65535, &v) < 0)
			return CLI_EBADARG;
		o->inflight = (uint16_t)v;
		return 0;
	case OPT_DRAIN:
		return cli_parse_duration("--drain", arg, 0,
		                          UINT64_C(3600) * 1000000000,
		                          &o->drain_ns);
	case OPT_ID_BASE:
		if (cli_parse_u64("--id-base", arg, 0, UINT32_MAX, &v) < 0)
			return CLI_EBADARG;
		o->id_base = (uint32_t)v;
		o->id_base_set = 1;
		return 0;
	case OPT_READY:
		o->ready_file = arg;
		return 0;
	case OPT_NO_PER_CONN:
		o->per_conn = 0;
		return 0;
	case OPT_CYCLES:
		if (cli_parse_u64("--cycles", arg, 1, 10000000, &v) < 0)
			return CLI_EBADARG;
		o->cycles = (uint32_t)v;
		return 0;
	case OPT_SLEEP:
		return cli_parse_duration("--sleep", arg, 0,
		                          UINT64_C(86400) * 1000000000,
		                          &o->sleep_ns);
	case OPT_SESSION_FILE:
		if (arg[0] == '\0') {
			cli_error("--session-file: empty file name");
			return CLI_EBADARG;
		}
		o->session_file = arg;
		return 0;
	case OPT_EARLY:
		o->early_data = 1;
		return 0;
	case OPT_STREAMS:
		if (cli_parse_u64("--streams", arg, 1, 1000, &v) < 0)
			return CLI_EBADARG;
		o->streams = (uint32_t)v;
		return 0;
	case OPT_MIGRATE_AFTER:
		return cli_parse_u64("--migrate-after", arg, 1,
		                     PAYLOAD_SEQ_MAX, &o->migrate_after);
	case OPT_MIGRATE_ADDR:
		o->migrate_addr = arg;
		return 0;
	case OPT_START_AT:
		if (cli_parse_u64("--start-at", arg, 0, (uint64_t)INT64_MAX / 2,
		                  &v) < 0)
			return CLI_EBADARG;
		o->start_at = (int64_t)v;
		return 0;
	default:
		cli_error("internal: unhandled option %d", code);
		return CLI_EBADARG;
	}
}

/* Client id of client i: the prefix alone for one client. */
static void client_id_of(const struct lg_opts *o, uint32_t i, char *buf,
                         size_t len)
{
	if (o->clients == 1)
		snprintf(buf, len, "%s", o->conn.client_id);
	else
		snprintf(buf, len, "%s-%" PRIu32, o->conn.client_id, i);
}

/*
 * Expand the topic template for client n's flow f into a new string.
 * Returns NULL with one error line for an unknown placeholder or when out
 * of memory.
 */
static char *expand_topic(const char *tmpl, const char *cid, uint32_t n,
                          uint32_t f)
{
	size_t cap = strlen(tmpl) + 1, len = 0, add;
	const char *p = tmpl, *ins;
	char num[16], fnum[16], *out, *tmp;

	snprintf(num, sizeof(num), "%" PRIu32, n);
	snprintf(fnum, sizeof(fnum), "%" PRIu32, f);
	out = malloc(cap);
	if (out == NULL)
		return NULL;
	while (*p) {
		if (*p == '{') {
			if (strncmp(p, "{client}", 8) == 0) {
				ins = cid;
				p += 8;
			} else if (strncmp(p, "{n}", 3) == 0) {
				ins = num;
				p += 3;
			} else if (strncmp(p, "{f}", 3) == 0) {
				ins = fnum;
				p += 3;
			} else {
				cli_error("--topic: unknown placeholder in '%s' "
				          "(use {client}, {n} or {f})", tmpl);
				free(out);
				return NULL;
			}
		} else {
			ins = NULL;
		}
		add = ins ? strlen(ins) : 1;
		if (len + add + 1 > cap) {
			cap = (len + add + 1) * 2;
			tmp = realloc(out, cap);
			if (tmp == NULL) {
				free(out);
				return NULL;
			}
			out = tmp;
		}
		if (ins) {
			memcpy(out + len, ins, add);
		} else {
			out[len] = *p++;
		}
		len += add;
	}
	out[len] = '\0';
	return out;
}

static int check_options(struct lg_opts *o)
{
	char cid[256], *t;
	int rv;
	/* publisher ids and topic flows: one per flow of every client */
	uint64_t n_flows = (uint64_t)o->clients * o->flows;

	if (o->conn.client_id == NULL) {
		static char def[64];

		snprintf(def, sizeof(def), "loadgen-%ld", (long)getpid());
		o->conn.client_id = def;
	}
	if (!o->id_base_set) {
		/* a random range: two processes of n clients each collide
		 * with probability about 2n / 2^32 (pids would collide
		 * modulo anything, and repeat across hosts) */
		uint32_t r;
		uint64_t span = (uint64_t)UINT32_MAX - n_flows + 2;

		if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
			cli_error("cannot read random bytes for publisher ids: "
			          "%s (give --id-base)", strerror(errno));
			return CLI_EBADARG;
		}
		o->id_base = (uint32_t)(r % span);
	}
	if ((uint64_t)o->id_base + n_flows - 1 > UINT32_MAX) {
		cli_error("--id-base %" PRIu32 " + --clients %" PRIu32
		          " x --flows %" PRIu32 " exceeds the 32-bit publisher "
		          "id", o->id_base, o->clients, o->flows);
		return CLI_EBADARG;
	}
	if (o->count && o->total) {
		cli_error("--count and --total exclude each other (messages per "
		          "client, or over all clients)");
		return CLI_EBADARG;
	}
	if (o->idle && (o->count || o->total)) {
		cli_error("--idle publishes nothing: drop --count/--total, use "
		          "--duration to bound the run");
		return CLI_EBADARG;
	}
	if (o->total && o->total < n_flows) {
		cli_error("--total %" PRIu64 " is smaller than the %" PRIu64
		          " flows (--clients x --flows): every flow must send "
		          "at least one message", o->total, n_flows);
		return CLI_EBADARG;
	}
	if (o->idle && o->flows > 1) {
		cli_error("--flows with --idle: an idle client publishes "
		          "nothing, in no flow");
		return CLI_EBADARG;
	}
	if (o->poisson && o->rate == 0) {
		cli_error("--arrival poisson needs a --rate above 0");
		return CLI_EBADARG;
	}
	if (o->streams > 1 && !(o->conn.ops->flags & TR_F_STREAMS)) {
		cli_error("--streams needs a transport that carries several "
		          "streams on one connection (--transport quic); over "
		          "%s every client has a connection of its own",
		          o->conn.ops->name);
		return CLI_EBADARG;
	}
	if (o->streams > o->clients) {
		cli_error("--streams %" PRIu32 " is more than --clients %" PRIu32,
		          o->streams, o->clients);
		return CLI_EBADARG;
	}
	if (o->cycles > 1 && (!o->count || o->idle)) {
		cli_error("--cycles needs --count: the messages each client "
		          "publishes per cycle");
		return CLI_EBADARG;
	}
	if (o->cycles > 1 && o->streams > 1) {
		cli_error("--cycles and --streams exclude each other: clients "
		          "that share a connection do not reconnect alone");
		return CLI_EBADARG;
	}
	if (o->early_data && !(o->conn.ops->flags & TR_F_EARLY)) {
		cli_error("--early-data needs a transport with 0-RTT "
		          "(--transport quic)");
		return CLI_EBADARG;
	}
	if (o->session_file && !(o->conn.ops->flags & TR_F_SECURE)) {
		cli_error("--session-file keeps TLS or QUIC resumption state; "
		          "%s has none", o->conn.ops->name);
		return CLI_EBADARG;
	}
	if ((o->migrate_after || o->migrate_addr) &&
	    !(o->conn.ops->flags & TR_F_REBIND) && o->conn.clean) {
		cli_error("--migrate-after and --migrate-addr over %s need "
		          "--persistent: a %s connection dies with its address, "
		          "and only a persistent MQTT session survives the "
		          "reconnect", o->conn.ops->name, o->conn.ops->name);
		return CLI_EBADARG;
	}
	client_id_of(o, o->clients - 1, cid, sizeof(cid));
	if (mqtt_valid_utf8((const uint8_t *)cid, strlen(cid)) != 0 ||
	    strlen(cid) > 23 * 10) {
		cli_error("--client-id: '%s' makes client ids that are too long "
		          "or not UTF-8", o->conn.client_id);
		return CLI_EBADARG;
	}
	t = expand_topic(o->topic_tmpl, cid, o->clients - 1, o->flows - 1);
	if (t == NULL)
		return CLI_EBADARG;
	rv = mqtt_valid_topic_name((const uint8_t *)t, strlen(t));
	if (rv != 0 || t[0] == '\0') {
		cli_error("--topic: '%s' is not a valid topic name to publish to "
		          "(non-empty UTF-8, no + or # wildcards)", t);
		free(t);
		return CLI_EBADARG;
	}
	free(t);
	return 0;
}

/* ---- helpers ------------------------------------------------------------ */

/*
 * base + gap_ns without overflow: a time beyond any run (EV_NEVER / 2, about
 * 146 years) when the sum would pass it. The run's end (count, duration,
 * signal) comes first.
 */
static int64_t time_after(int64_t base, double gap_ns)
{
	const int64_t far = EV_NEVER / 2;

	if (!(gap_ns > 0)) /* NaN too */
		return base;
	if (base >= far || gap_ns >= (double)(far - base))
		return far;
	return base + (int64_t)gap_ns;
}

/*
 * When flow f's next message is due, after f->sent messages. Constant
 * rate: from the start time and the count, so that rounding never
 * accumulates. Poisson: an exponential gap, -ln(1 - U) / rate with U
 * uniform in [0, 1).
 */
static int64_t next_due(const struct lg_opts *o, struct flow *f)
{
	double u;

	if (!o->poisson)
		return time_after(f->t_rate0,
		                  (double)(f->sent - f->sent0) * 1e9 / o->rate);
	u = prng_unit(&f->rng);
	return time_after(f->next_at, -log1p(-u) / o->rate * 1e9);
}

/*
 * p's schedule begins at `now` (its CONNACK, every cycle): flow i of N
 * starts i / N of a period later, so that the flows take turns evenly.
 */
static void pub_begin_schedule(struct pub *p, int64_t now)
{
	const struct lg_opts *o = &p->lg->o;
	uint32_t i;

	for (i = 0; i < o->flows; i++) {
		struct flow *f = &p->flows[i];

		f->sent0 = f->sent;
		f->t_rate0 = o->rate > 0 ? time_after(now, (double)i * 1e9 /
		                                                ((double)o->flows *
		                                                 o->rate))
		                         : now;
		f->next_at = f->t_rate0;
	}
}

/*
 * The flow whose message goes next: the one due first (rate mode; ties to
 * the lower index), or the one that has sent least (max rate: turns).
 * NULL when every flow has sent its target.
 */
static struct flow *pub_next_flow(struct pub *p)
{
	struct flow *best = NULL;
	uint32_t i;

	for (i = 0; i < p->lg->o.flows; i++) {
		struct flow *f = &p->flows[i];

		if (f->sent >= f->target)
			continue;
		if (best == NULL ||
		    (p->lg->o.rate > 0 ? f->next_at < best->next_at
		                       : f->sent < best->sent))
			best = f;
	}
	return best;
}

/* The flow queue's capacity, doubled when full. 0 or -1 (out of memory). */
static int fq_grow(struct flow_queue *q)
{
	uint32_t cap = q->cap ? q->cap * 2 : 16, i;
	uint16_t *r;

	if (q->n < q->cap)
		return 0;
	r = malloc(cap * sizeof(*r));
	if (r == NULL)
		return -1;
	for (i = 0; i < q->n; i++)
		r[i] = q->ring[(q->head + i) & (q->cap - 1)];
	free(q->ring);
	q->ring = r;
	q->cap = cap;
	q->head = 0;
	return 0;
}

/*
 * Give the messages the engine now counts as written to their flows:
 * with one flow all of them, with several the oldest of the queue (see
 * struct flow_queue).
 */
static void pub_sync_written(struct pub *p)
{
	const struct client_stats *st;
	struct flow_queue *q;

	if (p->cl == NULL)
		return;
	st = client_stats(p->cl);
	if (p->lg->o.flows == 1) {
		p->flows[0].written = st->pub_written;
		return;
	}
	q = &pm(p)->fq;
	while (q->seen < st->pub_written && q->n > 0) {
		p->flows[q->ring[q->head]].written++;
		q->head = (q->head + 1) & (q->cap - 1);
		q->n--;
		q->seen++;
	}
	q->seen = st->pub_written;
}

/* Messages still queued will never be written (the connection that held
 * them was dropped, or the broker kept no session for their resend). */
static void pub_forget_unwritten(struct pub *p)
{
	if (p->lg->o.flows > 1) {
		pub_sync_written(p);
		pm(p)->fq.n = 0;
	}
}

static void note_error(struct lg *lg, struct pub *p, const char *msg)
{
	if (p != NULL && p->err == NULL)
		p->err = strdup(msg);
	if (lg->first_err == NULL)
		lg->first_err = strdup(msg);
	if (p != NULL)
		report_error(lg->doc, "client %" PRIu32 ": %s", p->index, msg);
	else
		report_error(lg->doc, "%s", msg);
}

static void lg_kick_starter(struct lg *lg);
static void lg_stop(struct lg *lg, const char *reason);
static void pub_pump(struct pub *p);
static void pub_migrate(struct pub *p);
static void pub_group_leave(struct lg *lg, struct pub *p);

static void lg_check_end(struct lg *lg)
{
	if (lg->open == 0 && lg->next_start >= lg->o.clients)
		evloop_stop(lg->loop);
}

/*
 * The "connected" moment: every connection has come up, failed, or will not
 * start. Reads the memory figure, and begins the steady state once the
 * ramp-up is over as well.
 */
static void lg_all_settled(struct lg *lg)
{
	int64_t ramp_end = lg->t0 + (int64_t)lg->o.ramp_ns;

	lg->t_all_settled = evloop_clock_ns();
	lg->rss_connected_kib = report_rss_kib();
	lg->hist_bytes_connected = lg->hist_bytes;
	lg->t_steady = lg->t_all_settled > ramp_end ? lg->t_all_settled
	                                            : ramp_end;
	/* the duration begins here: every client gets all of it */
	if (lg->o.duration_ns && !lg->stopping) {
		lg->deadline = lg->t_steady + (int64_t)lg->o.duration_ns;
		ev_timer_start(lg->loop, &lg->deadline_timer, lg->deadline);
	}
}

static void lg_settle_one(struct lg *lg)
{
	int rv;

	lg->settled++;
	if (lg->settled + lg->n_not_started != lg->o.clients)
		return;
	lg_all_settled(lg);
	if (lg->o.ready_file && lg->n_ok > 0) {
		rv = cli_write_ready(lg->o.ready_file);
		if (rv < 0)
			note_error(lg, NULL, "cannot write the ready file");
	}
}

/*
 * Byte counters of p's connection so far. The engine keeps them valid after
 * a close of any kind (client.h), so on_closed reads the final ones. MQTT
 * bytes count as sent once written: queued bytes a close dropped are not.
 */
static void pub_read_counters(struct pub *p)
{
	const struct client_stats *st;

	if (p->cl == NULL)
		return;
	st = client_stats(p->cl);
	p->wire_in = st->wire_in;
	p->wire_out = st->wire_out;
	p->mqtt_out = st->bytes_out > st->bytes_unsent
	                      ? st->bytes_out - st->bytes_unsent
	                      : 0;
	if (st->pub_written) /* an idle connection allocates nothing */
		pm(p)->written = st->pub_written;
	pub_sync_written(p);
}

/* Keep what the transport knows of p's connection (TCP_INFO: RTT,
 * retransmissions, congestion window), read just before it ends. */
static void pub_read_transport(struct pub *p)
{
	struct tr_conn *tc = p->cl ? client_transport(p->cl) : NULL;
	struct tr_stats ts;

	if (tc == NULL)
		return;
	sockopts_seen_add(&p->lg->so_close, tc);
	tr_get_stats(tc, &ts);
	pm(p)->tr.valid = 1;
	pm(p)->tr.srtt_us = ts.srtt_ns < 0 ? -1 : (int32_t)(ts.srtt_ns / 1000);
	pm(p)->tr.rttvar_us = ts.rttvar_ns < 0 ? -1
	                                   : (int32_t)(ts.rttvar_ns / 1000);
	pm(p)->tr.min_rtt_us = ts.min_rtt_ns < 0 ? -1
	                                     : (int32_t)(ts.min_rtt_ns / 1000);
	pm(p)->tr.cwnd_bytes = ts.cwnd_bytes;
	pm(p)->tr.retransmits = ts.retransmits;
	pm(p)->tr.segs_out = ts.segs_out;
	pm(p)->tr.segs_in = ts.segs_in;
	if (ts.cc[0] && !p->lg->cc[0])
		memcpy(p->lg->cc, ts.cc, sizeof(p->lg->cc));
}

/* p's last move, NULL when none. */
static struct mig_rec *mig_last(const struct pub *p)
{
	return p->more && p->more->n_migs ? &p->more->migs[p->more->n_migs - 1]
	                                  : NULL;
}

/*
 * Where p's last QUIC migration stands (the transport knows the last
 * rebind only: read before the next one and before the close). Returns
 * the record while its path is not validated yet, else NULL.
 */
static struct mig_rec *pub_mig_pending(struct pub *p)
{
	struct mig_rec *m = mig_last(p);
	struct tr_conn *tc;
	unsigned n;
	int64_t t0;

	if (m == NULL || m->result != 0 ||
	    !(p->lg->o.conn.ops->flags & TR_F_REBIND))
		return NULL;
	tc = p->cl ? client_transport(p->cl) : NULL;
	if (tc != NULL)
		m->result = (int8_t)quic_migration_info(tc, &t0, &m->t_done, &n);
	return m->result == 0 ? m : NULL;
}

static void pub_close(struct pub *p)
{
	struct lg *lg = p->lg;

	if (p->state != PUB_CONNECTED)
		return;
	pub_read_transport(p);
	pub_mig_pending(p);
	if (lg->o.cycles > 1 && p->sent >= p->target) {
		/* the cycle's work is done: its last ack is in (QoS 1/2) or
		 * its last message handed over (QoS 0) */
		stats_hist_add(&lg->cycle_done,
		               (uint64_t)(evloop_clock_ns() - pm(p)->t_cycle));
		if (pm(p)->tr.segs_out >= 0 && pm(p)->tr.segs_in >= 0)
			stats_hist_add(&lg->cycle_segs,
			               (uint64_t)(pm(p)->tr.segs_out +
			                          pm(p)->tr.segs_in));
	}
	ev_timer_stop(p->lg->loop, &p->timer);
	p->state = PUB_CLOSING;
	if (client_disconnect(p->cl, 0) < 0) {
		/* not connected after all: on_closed has been or will be
		 * called; nothing more to do here */
	}
}

/*
 * Once nobody publishes any more and no connection is still being set up,
 * the ones waiting for acks get the drain time, not more.
 */
static void lg_maybe_drain(struct lg *lg)
{
	if (lg->sending == 0 && lg->next_start >= lg->o.clients &&
	    lg->pending == 0 && lg->sleeping == 0 && !lg->o.idle &&
	    !ev_timer_active(&lg->drain_timer))
		ev_timer_start(lg->loop, &lg->drain_timer,
		               evloop_clock_ns() + (int64_t)lg->o.drain_ns);
}

/* p sends no more: from now on it only waits for its acks. */
static void pub_finish_sending(struct pub *p)
{
	struct lg *lg = p->lg;

	if (p->send_done)
		return;
	p->send_done = 1;
	ev_timer_stop(lg->loop, &p->timer);
	if ((p->state == PUB_CONNECTED || p->state == PUB_MIGRATING) &&
	    lg->sending > 0) {
		lg->sending--;
		lg->t_pub_end = evloop_clock_ns();
	}
	if (p->state == PUB_CONNECTED &&
	    (lg->o.conn.qos == 0 || p->acks >= p->sent) && !lg->o.idle)
		pub_close(p);
	lg_maybe_drain(lg);
}

/* ---- publishing --------------------------------------------------------- */

/*
 * Move p's connection to a new local port (or --migrate-addr). QUIC
 * migrates the connection; on a shared connection only its first client
 * does, once for all. TCP and TLS drop it and reconnect with the
 * persistent session (on_connected takes the new CONNACK); p publishes
 * nothing meanwhile.
 */
static void pub_migrate(struct pub *p)
{
	struct lg *lg = p->lg;
	struct conn *c = p->cl ? client_conn(p->cl) : NULL;
	struct pub_more *m;
	struct mig_rec *rec;
	char msg[300];
	int r;

	if (c == NULL || p->state != PUB_CONNECTED ||
	    (p->grouped && p->index % lg->o.streams != 0))
		return;
	pub_mig_pending(p); /* the previous one's outcome, before it is lost */
	m = pm(p);
	rec = realloc(m->migs, (m->n_migs + 1) * sizeof(*rec));
	if (rec == NULL) {
		note_error(lg, p, "migration failed: out of memory");
		return;
	}
	m->migs = rec;
	if (lg->o.conn.ops->flags & TR_F_REBIND) {
		r = conn_rebind(c, lg->o.migrate_addr);
	} else {
		r = client_reconnect(p->cl, lg->tr_mig);
		if (r == 0)
			p->state = PUB_MIGRATING;
	}
	if (r < 0) {
		snprintf(msg, sizeof(msg), "migration failed: %s",
		         lg->o.conn.ops->flags & TR_F_REBIND
		                 ? conn_errmsg(c) : client_strerror(r));
		note_error(lg, p, msg);
		return;
	}
	rec = &m->migs[m->n_migs++];
	memset(rec, 0, sizeof(*rec));
	rec->t_at = evloop_clock_ns();
}

/*
 * p's new CONNACK after a reconnect (TCP, TLS): the move is done. The
 * session's resends are queued; what the broker did not keep, and (QoS 0)
 * what the dropped connection never wrote, will never be written.
 */
static void pub_migrated(struct pub *p,
                         const struct client_connected_info *info)
{
	struct lg *lg = p->lg;
	const struct sess_connack_info *ci = info->mqtt;
	struct mig_rec *m = mig_last(p);

	if (m != NULL) {
		m->t_done = ci->t_connack;
		m->result = 1;
		m->session_present = ci->session_present;
		m->tls_resumed = (uint8_t)info->tls_resumed;
		m->resent = ci->resent;
	}
	if (lg->o.conn.qos == 0 || !ci->session_present)
		pub_forget_unwritten(p);
	if (lg->stopping ||
	    (!lg->o.idle && p->send_done &&
	     (lg->o.conn.qos == 0 || p->acks >= p->sent)))
		pub_close(p);
	else
		pub_pump(p); /* nothing when it was done sending */
}

/*
 * Publish flow f's next message now; due: when the schedule wanted it sent
 * (0 at max rate: no schedule). Returns client_publish()'s result, or
 * CLIENT_ENOMEM when the flow queue cannot grow.
 */
static int pub_publish_one(struct pub *p, struct flow *f, int64_t due)
{
	struct lg *lg = p->lg;
	struct payload_header h;
	struct flow_queue *q = NULL;
	int64_t now, lag;
	int rv;

	if (lg->o.flows > 1) {
		/* the message joins the queue before the publish may write
		 * it; taken back if the publish fails */
		pub_sync_written(p);
		q = &pm(p)->fq;
		if (fq_grow(q) < 0)
			return CLIENT_ENOMEM;
		q->ring[(q->head + q->n++) & (q->cap - 1)] =
			(uint16_t)(f - p->flows);
	}
	memset(&h, 0, sizeof(h));
	h.publisher = f->publisher_id;
	h.seq = f->sent;
	now = evloop_clock_ns();
	h.send_ns = (uint64_t)now;
	payload_set_due(&h, due > 0 ? (uint64_t)due : 0);
	payload_encode(lg->payload, (size_t)lg->o.size, &h);
	rv = client_publish(p->cl, (const uint8_t *)f->topic, f->topic_len,
	                    lg->payload, (size_t)lg->o.size, lg->o.conn.qos,
	                    0, NULL);
	if (rv < 0) {
		if (q != NULL)
			q->n--;
		return rv;
	}
	if (due > 0) {
		lag = (int64_t)h.lag_ns; /* payload_set_due took it */
		stats_hist_add(&lg->sched_lag, (uint64_t)lag);
		if (lag > LATE_NS) {
			p->late++;
			lg->late++;
		}
	}
	if (mig_last(p) != NULL) {
		struct mig_rec *m = mig_last(p);

		if (lg->o.conn.ops->flags & TR_F_REBIND) {
			if (pub_mig_pending(p)) /* sent before the validation */
				m->delayed++;
		} else if (m->result > 0 && due > 0 && due >= m->t_at &&
		           due < m->t_done) {
			m->delayed++; /* due while the connection was down */
		}
	}
	if (lg->t_steady > 0 && now >= lg->t_steady)
		lg->steady_sent++;
	if (p->sent == 0)
		pm(p)->t_first_pub = now;
	pm(p)->t_last_pub = now;
	f->sent++;
	p->sent++;
	if (lg->o.migrate_after && p->sent == lg->o.migrate_after)
		pub_migrate(p);
	lg->sent++;
	lg->bytes += lg->o.size;
	if (lg->t_first_pub == 0 || now < lg->t_first_pub)
		lg->t_first_pub = now;
	if (now > lg->t_last_pub)
		lg->t_last_pub = now;
	return rv;
}

/*
 * Send what is due. Stops at a full window or socket (on_writable resumes),
 * at the next due time (timer), or after a burst at max rate (a timer at
 * "now" lets the other clients and the reads run).
 */
static void pub_pump(struct pub *p)
{
	struct lg *lg = p->lg;
	int64_t now;
	unsigned budget = MAX_RATE_BURST;
	int rv;

	struct flow *f;

	if (p->state != PUB_CONNECTED || p->send_done || p->blocked)
		return;
	for (;;) {
		if (p->state != PUB_CONNECTED)
			return; /* migrating: on_connected pumps again */
		now = evloop_clock_ns();
		f = pub_next_flow(p);
		if (f == NULL || (lg->deadline && now >= lg->deadline)) {
			pub_finish_sending(p);
			return;
		}
		if (lg->o.rate > 0 && f->next_at > now) {
			ev_timer_start(lg->loop, &p->timer, f->next_at);
			return;
		}
		if (budget-- == 0) {
			ev_timer_start(lg->loop, &p->timer, now);
			return;
		}
		rv = pub_publish_one(p, f, lg->o.rate > 0 ? f->next_at : 0);
		if (rv == CLIENT_EWINDOW || rv == CLIENT_EBUSY) {
			p->blocked = 1;
			return;
		}
		if (rv < 0) {
			char msg[160];

			snprintf(msg, sizeof(msg), "publish failed: %s",
			         client_strerror(rv));
			lg->publish_errors++;
			note_error(lg, p, msg);
			pub_finish_sending(p);
			pub_close(p);
			return;
		}
		if (lg->o.rate > 0)
			f->next_at = next_due(&lg->o, f);
	}
}

static void pub_reconnect(struct pub *p);

static void pub_timer_cb(struct evloop *loop, struct ev_timer *t)
{
	struct pub *p = t->arg;

	(void)loop;
	if (p->state == PUB_SLEEPING)
		pub_reconnect(p);
	else
		pub_pump(p);
}

/* ---- client callbacks --------------------------------------------------- */

/* Add to - from to h when both are stamped and in order (as
 * report_span_us judges a span). */
static void hist_span(struct stats_hist *h, int64_t from, int64_t to)
{
	if (from > 0 && to >= from)
		stats_hist_add(h, (uint64_t)(to - from));
}

static void on_connected(struct client *c,
                         const struct client_connected_info *info)
{
	struct pub *p = client_user(c);
	struct lg *lg = p->lg;
	struct tr_info ti;
	struct tr_conn *tc;
	uint32_t i;

	if (p->state == PUB_MIGRATING) {
		/* a reconnect, not a set-up: in the migration's record,
		 * not in the connect figures */
		p->state = PUB_CONNECTED;
		pub_migrated(p, info);
		return;
	}
	p->state = PUB_CONNECTED;
	p->t_start = info->t_start;
	p->t_tcp = info->t_transport_connected;
	p->t_ready = info->t_transport_ready;
	/* MQTT's part starts when CONNECT could leave: at transport ready,
	 * or, sent as early data (0-RTT), when it was queued */
	p->t_connect_sent = info->early ? info->mqtt->t_connect_queued
	                                : info->t_transport_ready;
	p->t_connack = info->mqtt->t_connack;
	p->tls_resumed = (uint8_t)info->tls_resumed;
	sockopts_seen_add(&lg->so_connect, client_transport(c));
	if (info->early) {
		lg->early_tried++;
		if (client_early(c) > 0)
			lg->early_ok++;
		else if (client_early(c) < 0)
			lg->early_rejected++;
	}
	lg->pending--;
	/* A span is recorded only when the transport stamped both ends: a
	 * 0 stamp would count as a connect time of months. */
	hist_span(&lg->conn_total, info->t_start, info->mqtt->t_connack);
	hist_span(&lg->conn_transport, info->t_start,
	          info->t_transport_ready);
	hist_span(&lg->conn_tcp, info->t_start, info->t_transport_connected);
	/* the transport's own handshake after TCP's (TLS), or after the
	 * server's first reply (QUIC); 0 for plain TCP */
	hist_span(&lg->conn_handshake,
	          info->t_transport_connected > 0 ? info->t_transport_connected
	                                          : info->t_start,
	          info->t_transport_ready);
	hist_span(&lg->conn_mqtt, p->t_connect_sent, info->mqtt->t_connack);
	if (pmc(p)->cycle > 0) {
		/* a later cycle: counted as connected once, at the first;
		 * its connect may have held a --max-pending slot */
		lg_kick_starter(lg);
		if (lg->stopping) {
			pub_close(p);
			return;
		}
		p->state = PUB_CONNECTED;
		p->send_done = 0;
		p->blocked = 0;
		for (i = 0; i < lg->o.flows; i++)
			p->flows[i].target += lg->o.count;
		p->target += lg->o.count * lg->o.flows;
		lg->sending++;
		/* this cycle's schedule starts now */
		pub_begin_schedule(p, evloop_clock_ns());
		pub_pump(p);
		return;
	}
	lg->n_ok++;
	if (lg->tls_version[0] == '\0' && (tc = client_transport(c)) != NULL) {
		tr_get_info(tc, &ti);
		snprintf(lg->tls_version, sizeof(lg->tls_version), "%s",
		         ti.version);
		snprintf(lg->tls_cipher, sizeof(lg->tls_cipher), "%s",
		         ti.cipher);
	}
	lg_settle_one(lg);
	lg_kick_starter(lg);
	if (lg->stopping || lg->o.idle) {
		p->send_done = 1;
		if (lg->stopping)
			pub_close(p);
		return;
	}
	lg->sending++;
	pub_begin_schedule(p, evloop_clock_ns());
	pub_pump(p);
}

static void on_publish_done(struct client *c, uint16_t packet_id, uint8_t qos,
                            uint8_t reason, int64_t t_sent_ns, int64_t now_ns)
{
	struct pub *p = client_user(c);
	struct lg *lg = p->lg;
	uint64_t lat, ok;

	(void)packet_id;
	(void)qos;
	p->acks++;
	lg->acks++;
	if (reason >= 0x80) {
		/* refused (v5): counted, kept out of the latency; main()
		 * turns it into the run's error */
		if (lg->acks_failed++ == 0)
			lg->first_refusal = reason;
		p->acks_failed++;
		goto done;
	}
	/* now_ns: the clock read right after the read() that brought the
	 * ack; t_sent_ns: read when client_publish() was called */
	lat = now_ns > t_sent_ns ? (uint64_t)(now_ns - t_sent_ns) : 0;
	stats_hist_add(&lg->ack_lat, lat);
	if (p->ack_hist == NULL && lg->per_conn_hist) {
		p->ack_hist = malloc(sizeof(*p->ack_hist));
		if (p->ack_hist != NULL) {
			stats_hist_init(p->ack_hist);
			lg->hist_bytes += sizeof(*p->ack_hist);
		}
	}
	if (p->ack_hist)
		stats_hist_add(p->ack_hist, lat);
	ok = p->acks - p->acks_failed;
	if (ok == 1 || lat < pm(p)->ack_min)
		pm(p)->ack_min = lat;
	if (lat > pm(p)->ack_max)
		pm(p)->ack_max = lat;
	pm(p)->ack_sum += (double)lat;
done:
	if (p->send_done && p->state == PUB_CONNECTED && p->acks >= p->sent)
		pub_close(p);
}

static void on_writable(struct client *c)
{
	struct pub *p = client_user(c);

	p->blocked = 0;
	pub_pump(p);
}

static void on_closed(struct client *c, int err, const char *msg)
{
	struct pub *p = client_user(c);
	struct lg *lg = p->lg;
	enum pub_state was = p->state;
	struct mig_rec *mig;

	ev_timer_stop(lg->loop, &p->timer);
	/* final counts, whatever closed it: lost and refused connections
	 * moved bytes too */
	pub_read_counters(p);
	switch (was) {
	case PUB_CONNECTING:
		lg->pending--;
		if (err != 0) {
			p->state = PUB_FAILED;
			lg->n_failed++;
			note_error(lg, p, msg);
		} else {
			p->state = PUB_ABANDONED;
			lg->n_abandoned++;
		}
		lg_settle_one(lg);
		/* fail fast: nothing has connected, do not try the rest */
		if (lg->n_ok == 0 && err != 0)
			lg_stop(lg, "error");
		else
			lg_kick_starter(lg);
		break;
	case PUB_MIGRATING: /* the new connection failed, or was
	                       abandoned when the run stopped */
		if ((mig = mig_last(p)) != NULL)
			mig->result = -1;
		/* fall through */
	case PUB_CONNECTED:
		if (!p->send_done && lg->sending > 0) {
			lg->sending--;
			lg->t_pub_end = evloop_clock_ns();
		}
		p->send_done = 1;
		p->state = PUB_LOST;
		lg->n_lost++;
		note_error(lg, p, err ? msg : was == PUB_MIGRATING
		                          ? "reconnect abandoned: the run stopped"
		                          : "connection closed by the broker");
		break;
	case PUB_CLOSING:
		p->state = PUB_CLOSED;
		if (err != 0)
			note_error(lg, p, msg);
		if (lg->o.cycles > 1) {
			stats_hist_add(&lg->cycle_wire,
			               p->wire_in + p->wire_out - pm(p)->wire_cycle);
			lg->cycles_done++;
		}
		if (err == 0 && pmc(p)->cycle + 1 < lg->o.cycles &&
		    !lg->stopping &&
		    p->sent >= p->target) {
			/* sleep, then wake for the next cycle: the client,
			 * its MQTT session and its resumption state stay */
			p->state = PUB_SLEEPING;
			lg->sleeping++;
			ev_timer_start(lg->loop, &p->timer,
			               evloop_clock_ns() +
			                       (int64_t)lg->o.sleep_ns);
			return;
		}
		break;
	default:
		break;
	}
	pub_group_leave(lg, p);
	lg->open--;
	lg_maybe_drain(lg);
	lg_check_end(lg);
}

static const struct client_callbacks callbacks = {
	.on_connected = on_connected,
	.on_publish_done = on_publish_done,
	.on_writable = on_writable,
	.on_closed = on_closed,
};

/* ---- run control -------------------------------------------------------- */

static int64_t start_time_of(const struct lg *lg, uint32_t i)
{
	if (lg->o.ramp_ns == 0 || lg->o.clients <= 1)
		return lg->t0;
	return lg->t0 + (int64_t)((double)lg->o.ramp_ns * i / lg->o.clients);
}

static int pub_start(struct lg *lg, struct pub *p)
{
	char cid[256];
	struct client_config cfg = lg->ccfg;

	struct conn *conn = NULL;
	int r;

	client_id_of(&lg->o, p->index, cid, sizeof(cid));
	cfg.client_id = cid;
	p->cl = client_new(lg->loop, lg->tr, &cfg, &callbacks, p);
	if (p->cl == NULL)
		return CLIENT_ENOMEM;
	if (p->index < lg->n_sess && lg->sess_blob[p->index] &&
	    tr_session_store(client_tr_session(p->cl), lg->sess_blob[p->index],
	                     lg->sess_len[p->index]) < 0)
		return CLIENT_ENOMEM;
	if (lg->o.streams > 1) {
		uint32_t g = p->index / lg->o.streams;

		if (!lg->groups[g])
			lg->groups[g] = conn_new(lg->loop, lg->tr,
			                         client_tr_session(p->cl));
		conn = lg->groups[g];
		if (conn == NULL)
			return CLIENT_ENOMEM;
	}
	p->state = PUB_CONNECTING;
	if (lg->o.cycles > 1)
		pm(p)->t_cycle = evloop_clock_ns();
	lg->pending++;
	lg->open++;
	r = conn ? client_connect_on(p->cl, conn) : client_connect(p->cl);
	if (r == 0 && conn) {
		p->grouped = 1;
		lg->group_refs[p->index / lg->o.streams]++;
		if (conn_state(conn) == CONN_IDLE && conn_open(conn) < 0)
			r = CLIENT_ENOMEM; /* told through on_closed */
	}
	if (r < 0 && !p->grouped) {
		lg->pending--;
		lg->open--;
		return CLIENT_ENOMEM;
	}
	return 0;
}

/* p leaves its shared connection; the last one out frees it and keeps
 * what it moved. */
static void pub_group_leave(struct lg *lg, struct pub *p)
{
	uint32_t g;
	struct tr_conn *tc;

	if (!p->grouped)
		return;
	p->grouped = 0;
	g = p->index / lg->o.streams;
	if (--lg->group_refs[g] > 0 || !lg->groups[g])
		return;
	tc = conn_transport(lg->groups[g]);
	if (tc) {
		lg->group_wire_in += tc->wire_in;
		lg->group_wire_out += tc->wire_out;
	}
	conn_free(lg->groups[g]);
	lg->groups[g] = NULL;
}

/* The next cycle of p: wake up and connect again. */
static void pub_reconnect(struct pub *p)
{
	struct lg *lg = p->lg;
	const struct client_stats *st;

	lg->sleeping--;
	if (lg->stopping) {
		p->state = PUB_CLOSED;
		lg->open--;
		lg_maybe_drain(lg);
		lg_check_end(lg);
		return;
	}
	pm(p)->cycle++;
	st = client_stats(p->cl);
	pm(p)->wire_cycle = st->wire_in + st->wire_out;
	p->state = PUB_CONNECTING;
	pm(p)->t_cycle = evloop_clock_ns();
	lg->pending++;
	if (client_connect(p->cl) < 0) {
		lg->pending--;
		p->state = PUB_LOST;
		lg->n_lost++;
		lg->open--;
		note_error(lg, p, "out of memory reconnecting");
		lg_maybe_drain(lg);
		lg_check_end(lg);
	}
}

static void lg_kick_starter(struct lg *lg)
{
	int64_t now, at;
	struct pub *p;

	if (lg->stopping)
		return;
	now = evloop_clock_ns();
	while (lg->next_start < lg->o.clients &&
	       lg->pending < lg->o.max_pending) {
		at = start_time_of(lg, lg->next_start);
		if (at > now) {
			ev_timer_start(lg->loop, &lg->start_timer, at);
			return;
		}
		p = &lg->pubs[lg->next_start++];
		if (pub_start(lg, p) < 0) {
			p->state = PUB_FAILED;
			lg->n_failed++;
			note_error(lg, p, "out of memory creating the client");
			lg_settle_one(lg);
		}
	}
}

static void start_timer_cb(struct evloop *loop, struct ev_timer *t)
{
	(void)loop;
	lg_kick_starter(t->arg);
}

/*
 * Stop the run: no more connections, no more publishing; acks get the drain
 * time, then everything is closed.
 */
static void lg_stop(struct lg *lg, const char *reason)
{
	uint32_t i;
	struct pub *p;

	if (lg->stopping)
		return;
	lg->stopping = 1;
	lg->stop_reason = reason;
	ev_timer_stop(lg->loop, &lg->start_timer);
	ev_timer_stop(lg->loop, &lg->deadline_timer);
	while (lg->next_start < lg->o.clients) {
		lg->pubs[lg->next_start++].state = PUB_NOT_STARTED;
		lg->n_not_started++;
	}
	if (lg->settled + lg->n_not_started == lg->o.clients &&
	    lg->t_all_settled == 0)
		lg_all_settled(lg);
	for (i = 0; i < lg->o.clients; i++) {
		p = &lg->pubs[i];
		if (p->state == PUB_SLEEPING) {
			ev_timer_start(lg->loop, &p->timer, evloop_clock_ns());
		} else if (p->state == PUB_CONNECTING) {
			client_disconnect(p->cl, 0); /* abandons the attempt */
		} else if (p->state == PUB_CONNECTED ||
		           p->state == PUB_MIGRATING) {
			/* a reconnect under way closes at its CONNACK */
			if (lg->o.idle)
				pub_close(p);
			else
				pub_finish_sending(p);
		}
	}
	if (!ev_timer_active(&lg->drain_timer))
		ev_timer_start(lg->loop, &lg->drain_timer,
		               evloop_clock_ns() + (int64_t)lg->o.drain_ns);
	lg_check_end(lg);
}

static void deadline_cb(struct evloop *loop, struct ev_timer *t)
{
	(void)loop;
	lg_stop(t->arg, "duration");
}

/* The drain time is over: close whoever still waits for acks. */
static void drain_cb(struct evloop *loop, struct ev_timer *t)
{
	struct lg *lg = t->arg;
	uint32_t i;

	for (i = 0; i < lg->o.clients; i++) {
		if (lg->pubs[i].state == PUB_CONNECTED)
			pub_close(&lg->pubs[i]);
		else if (lg->pubs[i].state == PUB_MIGRATING)
			client_disconnect(lg->pubs[i].cl, 0); /* abandoned */
	}
	/* the engine lingers 2 s for the broker's close; allow for it */
	ev_timer_start(loop, &lg->final_timer,
	               evloop_clock_ns() + 5 * EV_NS_PER_SEC);
	lg_check_end(lg);
}

static void final_cb(struct evloop *loop, struct ev_timer *t)
{
	struct lg *lg = t->arg;

	report_error(lg->doc, "%" PRIu32 " connections did not close in time",
	             lg->open);
	evloop_stop(loop);
}

static void signal_cb(struct evloop *loop, struct ev_io *w, uint32_t revents)
{
	struct lg *lg = w->arg;
	struct signalfd_siginfo si;

	(void)revents;
	while (read(lg->sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGUSR1) {
			uint32_t i;

			for (i = 0; lg->pubs && i < lg->o.clients; i++)
				pub_migrate(&lg->pubs[i]);
			continue;
		}
		if (++lg->signals > 1) {
			/* second signal: do not wait for anything */
			evloop_stop(loop);
			return;
		}
		lg_stop(lg, "signal");
	}
}

/* ---- result document ---------------------------------------------------- */

static json_t *config_json(const struct lg *lg)
{
	const struct lg_opts *o = &lg->o;
	json_t *c = json_object();

	report_set(c, "connection", cli_conn_json(&o->conn));
	report_set(c, "clients", json_integer(o->clients));
	report_set(c, "flows_per_client", json_integer(o->flows));
	report_set(c, "client_id_prefix", json_string(o->conn.client_id));
	report_set(c, "topic", json_string(o->topic_tmpl));
	report_set(c, "payload_size", report_u64(o->size));
	report_set(c, "header_size", json_integer(PAYLOAD_HEADER_LEN));
	/* --rate is per flow; a client sends its flows' rates together */
	report_set(c, "rate_per_client", json_real(o->rate * o->flows));
	report_set(c, "rate_per_flow", json_real(o->rate));
	report_set(c, "max_rate", json_boolean(o->rate == 0 && !o->idle));
	report_set(c, "arrival", json_string(o->poisson ? "poisson"
	                                                : "constant"));
	report_set(c, "seed", report_u64(o->seed));
	report_set(c, "count_per_client",
	           o->count ? report_u64(o->count * o->flows) : json_null());
	report_set(c, "count_per_flow",
	           o->count ? report_u64(o->count) : json_null());
	report_set(c, "total", o->total ? report_u64(o->total)
	                                : json_null());
	report_set(c, "duration_s",
	           o->duration_ns ? json_real((double)o->duration_ns / 1e9)
	                          : json_null());
	report_set(c, "ramp_up_s", json_real((double)o->ramp_ns / 1e9));
	report_set(c, "max_pending", json_integer(o->max_pending));
	report_set(c, "idle", json_boolean(o->idle));
	report_set(c, "inflight_window", json_integer(lg->ccfg.inflight_window));
	report_set(c, "drain_s", json_real((double)o->drain_ns / 1e9));
	report_set(c, "publisher_id_base", json_integer(o->id_base));
	report_set(c, "publisher_id_source",
	           json_string(o->id_base_set ? "option" : "random"));
	report_set(c, "header_version", json_integer(PAYLOAD_VERSION));
	report_set(c, "streams_per_connection", json_integer(o->streams));
	report_set(c, "cycles", json_integer(o->cycles));
	report_set(c, "sleep_us", report_us(o->sleep_ns));
	report_set(c, "early_data", json_boolean(o->early_data));
	report_set(c, "session_file", o->session_file
	                                      ? json_string(o->session_file)
	                                      : json_null());
	report_set(c, "migrate_after",
	           o->migrate_after ? report_u64(o->migrate_after) : json_null());
	report_set(c, "migrate_addr", o->migrate_addr
	                                      ? json_string(o->migrate_addr)
	                                      : json_null());
	report_set(c, "start_at_ns",
	           o->start_at ? json_integer(o->start_at) : json_null());
	return c;
}

/* A histogram of counts (bytes, packets), not of times. */
static json_t *hist_plain(const struct stats_hist *h)
{
	if (h->count == 0)
		return json_pack("{s:i}", "count", 0);
	return json_pack("{s:I, s:I, s:f, s:I, s:I, s:I}", "count",
	                 (json_int_t)h->count, "min", (json_int_t)h->min,
	                 "mean", stats_hist_mean(h), "p50",
	                 (json_int_t)stats_hist_percentile(h, 50.0), "p99",
	                 (json_int_t)stats_hist_percentile(h, 99.0), "max",
	                 (json_int_t)h->max);
}

/* -1 (unknown) as null. */
static json_t *known(int64_t v)
{
	return v < 0 ? json_null() : json_integer((json_int_t)v);
}

static json_t *transport_json(const struct pub_transport *t)
{
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "srtt_us",
	                 known(t->srtt_us), "rttvar_us", known(t->rttvar_us),
	                 "min_rtt_us", known(t->min_rtt_us), "cwnd_bytes",
	                 known(t->cwnd_bytes), "retransmits",
	                 known(t->retransmits), "segments_out",
	                 known(t->segs_out), "segments_in", known(t->segs_in));
}

/* The connections' transport statistics summed (retransmissions,
 * segments) and their smoothed RTTs summarised, at their close. */
static json_t *transports_json(const struct lg *lg)
{
	int64_t retrans = 0, segs_out = 0, segs_in = 0, n = 0, n_rtt = 0;
	int64_t rtt_min = -1, rtt_max = -1;
	double rtt_sum = 0;
	uint32_t i;

	for (i = 0; lg->pubs != NULL && i < lg->o.clients; i++) {
		const struct pub_transport *t = &pmc(&lg->pubs[i])->tr;

		if (!t->valid)
			continue;
		n++;
		retrans += t->retransmits > 0 ? t->retransmits : 0;
		segs_out += t->segs_out > 0 ? t->segs_out : 0;
		segs_in += t->segs_in > 0 ? t->segs_in : 0;
		if (t->srtt_us >= 0) {
			n_rtt++;
			rtt_sum += t->srtt_us;
			if (rtt_min < 0 || t->srtt_us < rtt_min)
				rtt_min = t->srtt_us;
			if (t->srtt_us > rtt_max)
				rtt_max = t->srtt_us;
		}
	}
	return json_pack("{s:I, s:s?, s:I, s:I, s:I, s:o, s:o, s:o}",
	                 "connections", (json_int_t)n, "congestion_control",
	                 lg->cc[0] ? lg->cc : NULL, "retransmits",
	                 (json_int_t)retrans, "segments_out",
	                 (json_int_t)segs_out, "segments_in",
	                 (json_int_t)segs_in, "srtt_us_min", known(rtt_min),
	                 "srtt_us_mean",
	                 n_rtt ? json_real(rtt_sum / (double)n_rtt)
	                       : json_null(),
	                 "srtt_us_max", known(rtt_max));
}

/*
 * One move of a connection. Both kinds: at_us (asked, from the run's
 * start) and at_ns (the same on CLOCK_MONOTONIC, the sinks' clock: where
 * to look for the delivery gap), result, kind. QUIC ("migration"): the path validation's time and
 * the messages sent before it. TCP and TLS ("reconnect"): down_us from the
 * drop to the new CONNACK, the messages due meanwhile (sent after it),
 * the packets resent with DUP, whether the broker kept the session and
 * TLS resumed.
 */
static json_t *mig_json(const struct lg *lg, const struct mig_rec *m)
{
	const char *res = m->result < 0 ? "failed" : "pending";

	if (lg->o.conn.ops->flags & TR_F_REBIND)
		return json_pack("{s:s, s:o, s:I, s:s, s:o, s:I}", "kind",
		                 "migration", "at_us",
		                 report_span_us(lg->t0, m->t_at), "at_ns",
		                 (json_int_t)m->t_at, "result",
		                 m->result > 0 ? "validated" : res,
		                 "path_validation_us",
		                 report_span_us(m->t_at, m->t_done),
		                 "sent_before_validation",
		                 (json_int_t)m->delayed);
	return json_pack("{s:s, s:o, s:I, s:s, s:o, s:I, s:I, s:o, s:o}",
	                 "kind", "reconnect", "at_us",
	                 report_span_us(lg->t0, m->t_at), "at_ns",
	                 (json_int_t)m->t_at, "result",
	                 m->result > 0 ? "reconnected" : res,
	                 "down_us", report_span_us(m->t_at, m->t_done),
	                 "messages_delayed", (json_int_t)m->delayed, "resent",
	                 (json_int_t)m->resent, "session_present",
	                 m->result > 0 ? json_boolean(m->session_present)
	                               : json_null(),
	                 "tls_resumed",
	                 m->result > 0 && (lg->o.conn.ops->flags & TR_F_SECURE)
	                         ? json_boolean(m->tls_resumed)
	                         : json_null());
}

/* The sequence numbers flow f queued: 0 .. sent - 1, or nulls. */
static void flow_seq_json(json_t *o, const struct flow *f)
{
	report_set(o, "first_seq", f->sent ? json_integer(0) : json_null());
	report_set(o, "last_seq",
	           f->sent ? report_u64(f->sent - 1) : json_null());
}

static json_t *pub_json(const struct lg *lg, const struct pub *p)
{
	json_t *o = json_object(), *ack, *fl;
	char cid[256];
	uint64_t ok = p->acks - p->acks_failed;
	uint32_t i;

	client_id_of(&lg->o, p->index, cid, sizeof(cid));
	report_set(o, "index", json_integer(p->index));
	report_set(o, "client_id", json_string(cid));
	/* with --flows, flow 0's here; every flow's in "flows" */
	report_set(o, "publisher_id", json_integer(p->flows[0].publisher_id));
	report_set(o, "topic", p->flows[0].topic ? json_string(p->flows[0].topic)
	                                         : json_null());
	report_set(o, "state", json_string(pub_state_names[p->state]));
	if (p->t_connack) {
		report_set(o, "connect",
		           json_pack("{s:o, s:o, s:o, s:o, s:b}", "tcp_us",
		                     report_span_us(p->t_start, p->t_tcp),
		                     "transport_us",
		                     report_span_us(p->t_start, p->t_ready),
		                     "mqtt_us",
		                     report_span_us(p->t_connect_sent,
		                                    p->t_connack),
		                     "total_us",
		                     report_span_us(p->t_start, p->t_connack),
		                     "tls_resumed", p->tls_resumed));
		report_set(o, "connected_at_us",
		           report_span_us(lg->t0, p->t_connack));
	} else {
		report_set(o, "connect", json_null());
	}
	if (pmc(p)->tr.valid)
		report_set(o, "transport", transport_json(&pmc(p)->tr));
	if (lg->o.cycles > 1)
		report_set(o, "cycles_begun", json_integer(pmc(p)->cycle + 1));
	if (pmc(p)->n_migs) {
		/* every move, and the last one with the count on its own */
		json_t *last, *all = json_array();

		for (i = 0; i < pmc(p)->n_migs; i++)
			json_array_append_new(all, mig_json(lg,
			                                    &pmc(p)->migs[i]));
		last = mig_json(lg, &pmc(p)->migs[pmc(p)->n_migs - 1]);
		report_set(last, "count", json_integer(pmc(p)->n_migs));
		report_set(o, "migration", last);
		report_set(o, "migrations", all);
	}
	report_set(o, "sent", report_u64(p->sent));
	report_set(o, "written", report_u64(pmc(p)->written));
	flow_seq_json(o, &p->flows[0]);
	if (lg->o.flows > 1) {
		fl = json_array();
		for (i = 0; i < lg->o.flows; i++) {
			const struct flow *f = &p->flows[i];
			json_t *e = json_pack("{s:I, s:s, s:o, s:o}",
			                      "publisher_id",
			                      (json_int_t)f->publisher_id, "topic",
			                      f->topic, "sent", report_u64(f->sent),
			                      "written", report_u64(f->written));

			flow_seq_json(e, f);
			json_array_append_new(fl, e);
		}
		report_set(o, "flows", fl);
	}
	if (lg->o.rate > 0)
		report_set(o, "late_messages", report_u64(p->late));
	report_set(o, "payload_bytes", report_u64(p->sent * lg->o.size));
	report_set(o, "mqtt_bytes_out", report_u64(p->mqtt_out));
	report_set(o, "wire_bytes_out", report_u64(p->wire_out));
	report_set(o, "wire_bytes_in", report_u64(p->wire_in));
	if (lg->o.conn.qos > 0) {
		report_set(o, "acks", report_u64(p->acks));
		report_set(o, "acks_failed", report_u64(p->acks_failed));
		report_set(o, "unacked", report_u64(p->sent - p->acks));
		/* successful acks only: a refusal says nothing of latency */
		if (p->ack_hist) {
			ack = report_hist(p->ack_hist, 0);
		} else {
			ack = json_object();
			report_set(ack, "count", report_u64(ok));
			report_set(ack, "min_us",
			           ok ? report_us(pmc(p)->ack_min) : json_null());
			report_set(ack, "mean_us",
			           ok ? json_real(pmc(p)->ack_sum / (double)ok / 1e3)
			              : json_null());
			report_set(ack, "max_us",
			           ok ? report_us(pmc(p)->ack_max) : json_null());
		}
		report_set(o, "ack_latency", ack);
	}
	report_set(o, "publish_span_us",
	           report_span_us(pmc(p)->t_first_pub, pmc(p)->t_last_pub));
	report_set(o, "error", p->err ? json_string(p->err) : json_null());
	return o;
}

/*
 * Per publisher, compact and always present (also with
 * --no-per-connection), for the reconciliation with the sinks
 * (scripts/reconcile.py): id, topic, how its connection ended, messages
 * queued (sequence numbers first_seq .. last_seq, in order) and written to
 * the transport whole (the first `written` of them: a stream keeps order).
 * queued - written never left this process: its connection died (or the
 * run ended) first.
 */
static json_t *publishers_json(const struct lg *lg)
{
	json_t *list = json_array();
	uint32_t i, k;

	for (i = 0; lg->pubs != NULL && i < lg->o.clients; i++) {
		const struct pub *p = &lg->pubs[i];

		for (k = 0; k < lg->o.flows; k++) {
			const struct flow *f = &p->flows[k];
			json_t *e = json_pack(
				"{s:I, s:s?, s:s, s:o, s:o, s:I, s:I}", "id",
				(json_int_t)f->publisher_id, "topic", f->topic,
				"state", pub_state_names[p->state], "queued",
				report_u64(f->sent), "written",
				report_u64(f->written), "client",
				(json_int_t)i, "flow", (json_int_t)k);

			flow_seq_json(e, f);
			json_array_append_new(list, e);
		}
	}
	return list;
}

/*
 * Did the run do what was asked? Every client must have connected: those
 * that failed, were abandoned (the run stopped while they connected) or
 * never started (it stopped before their turn) make it incomplete, as do
 * connections lost on the way. The duration starting only once every
 * client is up (lg_all_settled) is what gives each connected client its
 * full share of it. Fills why (one line) when incomplete; returns 1 when
 * complete.
 */
/* Clients that never had a connection: failed, abandoned, not started. */
static uint32_t never_connected(const struct lg *lg)
{
	return lg->n_failed + lg->n_abandoned + lg->n_not_started;
}

static int completeness(const struct lg *lg, char *why, size_t len)
{
	uint32_t never = never_connected(lg);

	why[0] = '\0';
	if (never == 0 && lg->n_lost == 0)
		return 1;
	if (never > 0)
		snprintf(why, len,
		         "%" PRIu32 " of %" PRIu32 " clients never connected "
		         "(%" PRIu32 " failed, %" PRIu32 " abandoned and %" PRIu32
		         " not started when the run stopped: %s)%s",
		         never, lg->o.clients, lg->n_failed, lg->n_abandoned,
		         lg->n_not_started, lg->stop_reason,
		         lg->n_lost ? "; connections were lost too" : "");
	else
		snprintf(why, len,
		         "%" PRIu32 " of %" PRIu32 " connections were lost "
		         "before the run ended", lg->n_lost, lg->o.clients);
	return 0;
}

static json_t *completeness_json(const struct lg *lg)
{
	char why[300];
	int ok = completeness(lg, why, sizeof(why));

	return json_pack("{s:b, s:s?, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:o}",
	                 "ok", ok, "why", ok ? NULL : why, "clients",
	                 (int)lg->o.clients, "connected", (int)lg->n_ok,
	                 "never_connected",
	                 (int)never_connected(lg),
	                 "failed", (int)lg->n_failed, "abandoned",
	                 (int)lg->n_abandoned, "not_started",
	                 (int)lg->n_not_started, "lost", (int)lg->n_lost,
	                 "duration_started_after_s",
	                 lg->o.duration_ns && lg->t_steady
	                         ? json_real((double)(lg->t_steady - lg->t0) /
	                                     1e9)
	                         : json_null());
}

/*
 * Throughput of the publishers. "messages_per_s": first to last publish of
 * the whole run, ramp-up included (n messages span n - 1 gaps), the
 * load generator's own speed. "steady_state": the messages sent from the
 * moment the ramp-up is over and every connection is up (t_steady) to the
 * moment the last publisher stopped sending (t_pub_end: the deadline, the
 * last message of a --count run, the signal), divided by that interval: the
 * offered load to set beside "configured_messages_per_s" (--rate x
 * --clients; null at max rate).
 */
static json_t *throughput_json(const struct lg *lg)
{
	json_t *tp = json_object(), *st = json_null();
	double secs, steady;
	int64_t end = lg->t_pub_end > lg->t_last_pub ? lg->t_pub_end
	                                             : lg->t_last_pub;

	secs = lg->t_last_pub > lg->t_first_pub
	               ? (double)(lg->t_last_pub - lg->t_first_pub) / 1e9
	               : 0.0;
	report_set(tp, "publish_span_s", json_real(secs));
	report_set(tp, "messages_per_s",
	           secs > 0 ? json_real((double)(lg->sent - 1) / secs)
	                    : json_null());
	report_set(tp, "payload_bytes_per_s",
	           secs > 0 ? json_real((double)(lg->sent - 1) *
	                                (double)lg->o.size / secs)
	                    : json_null());
	if (lg->t_steady > 0 && lg->steady_sent > 0 && end > lg->t_steady) {
		steady = (double)(end - lg->t_steady) / 1e9;
		st = json_object();
		report_set(st, "start_after_s",
		           json_real((double)(lg->t_steady - lg->t0) / 1e9));
		report_set(st, "span_s", json_real(steady));
		report_set(st, "messages", report_u64(lg->steady_sent));
		report_set(st, "messages_per_s",
		           json_real((double)lg->steady_sent / steady));
		report_set(st, "payload_bytes_per_s",
		           json_real((double)lg->steady_sent *
		                     (double)lg->o.size / steady));
	}
	report_set(tp, "steady_state", st);
	report_set(tp, "configured_messages_per_s",
	           lg->o.rate > 0 && !lg->o.idle
	                   ? json_real(lg->o.rate * lg->o.clients *
	                               lg->o.flows)
	                   : json_null());
	return tp;
}

/* The schedule lag (see the top of the file); null without a schedule. */
static json_t *schedule_lag_json(const struct lg *lg)
{
	json_t *o;

	if (lg->o.rate == 0 || lg->o.idle)
		return json_null();
	o = report_hist(&lg->sched_lag, 1);
	report_set(o, "late_threshold_us", report_us((uint64_t)LATE_NS));
	report_set(o, "late_messages", report_u64(lg->late));
	return o;
}

static json_t *memory_json(const struct lg *lg)
{
	json_t *mem = json_object();
	long hists_kib = (long)(lg->hist_bytes_connected / 1024);

	report_set(mem, "rss_start_kib", json_integer(lg->rss_start_kib));
	report_set(mem, "rss_connected_kib",
	           lg->rss_connected_kib > 0
	                   ? json_integer(lg->rss_connected_kib)
	                   : json_null());
	/* the load generator's own per-connection ack histograms (touched
	 * in full by stats_hist_init) are bookkeeping of this tool, not a
	 * cost of the connection: left out of per_connection_kib */
	report_set(mem, "ack_histograms_kib", json_integer(hists_kib));
	report_set(mem, "per_connection_kib",
	           lg->rss_connected_kib > 0 && lg->n_ok > 0
	                   ? json_real((double)(lg->rss_connected_kib -
	                                        lg->rss_start_kib -
	                                        hists_kib) /
	                               lg->n_ok)
	                   : json_null());
	return mem;
}

static void build_result(struct lg *lg, uint64_t wall_end)
{
	json_t *doc = lg->doc, *tot, *conns;
	uint64_t wire_in = 0, wire_out = 0, mqtt_out = 0, unacked = 0;
	uint64_t written = 0, unwritten_lost = 0;
	uint32_t i;

	report_set(doc, "config", config_json(lg));
	report_set(doc, "start", report_time(lg->wall0));
	report_set(doc, "end", report_time(wall_end));
	report_set(doc, "stop_reason", json_string(lg->stop_reason));
	for (i = 0; lg->pubs != NULL && i < lg->o.clients; i++) {
		/* still open: the run ended before their close (final timer,
		 * second signal); count what they moved until now */
		if (lg->pubs[i].state == PUB_CONNECTING ||
		    lg->pubs[i].state == PUB_CONNECTED ||
		    lg->pubs[i].state == PUB_MIGRATING ||
		    lg->pubs[i].state == PUB_CLOSING)
			pub_read_counters(&lg->pubs[i]);
		wire_in += lg->pubs[i].wire_in;
		wire_out += lg->pubs[i].wire_out;
		mqtt_out += lg->pubs[i].mqtt_out;
		if (lg->o.conn.qos > 0 && lg->pubs[i].sent > lg->pubs[i].acks)
			unacked += lg->pubs[i].sent - lg->pubs[i].acks;
		written += pmc(&lg->pubs[i])->written;
		if (lg->pubs[i].state == PUB_LOST)
			unwritten_lost += lg->pubs[i].sent -
			                  pmc(&lg->pubs[i])->written;
	}
	/* shared connections (--streams): their bytes are the
	 * connection's, not one client's */
	for (i = 0; i < lg->n_groups; i++) {
		struct tr_conn *tc = lg->groups[i] ? conn_transport(lg->groups[i])
		                                   : NULL;

		if (tc) {
			lg->group_wire_in += tc->wire_in;
			lg->group_wire_out += tc->wire_out;
		}
	}
	wire_in += lg->group_wire_in;
	wire_out += lg->group_wire_out;
	tot = json_object();
	report_set(tot, "connections", json_integer(lg->o.clients));
	report_set(tot, "connected", json_integer(lg->n_ok));
	report_set(tot, "failed", json_integer(lg->n_failed));
	report_set(tot, "lost", json_integer(lg->n_lost));
	report_set(tot, "abandoned", json_integer(lg->n_abandoned));
	report_set(tot, "not_started", json_integer(lg->n_not_started));
	/* sent: queued to the engine; written: taken whole by the
	 * transport; the rest never left, on connections that died or at
	 * the end of the run */
	report_set(tot, "messages_sent", report_u64(lg->sent));
	report_set(tot, "messages_written", report_u64(written));
	report_set(tot, "messages_unwritten", report_u64(lg->sent - written));
	report_set(tot, "unwritten_connection_lost",
	           report_u64(unwritten_lost));
	report_set(tot, "payload_bytes_sent", report_u64(lg->bytes));
	report_set(tot, "mqtt_bytes_out", report_u64(mqtt_out));
	report_set(tot, "wire_bytes_out", report_u64(wire_out));
	report_set(tot, "wire_bytes_in", report_u64(wire_in));
	report_set(tot, "publish_errors", report_u64(lg->publish_errors));
	if (lg->o.conn.qos > 0) {
		report_set(tot, "acks", report_u64(lg->acks));
		report_set(tot, "acks_failed", report_u64(lg->acks_failed));
		report_set(tot, "unacked", report_u64(unacked));
	}
	report_set(doc, "totals", tot);
	report_set(doc, "throughput", throughput_json(lg));
	report_set(doc, "schedule_lag", schedule_lag_json(lg));
	if (lg->o.conn.qos > 0)
		report_set(doc, "ack_latency", report_hist(&lg->ack_lat, 1));
	/* every connection of every cycle, with buckets: documents merge */
	report_set(doc, "connect",
	           json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o?, s:o?}",
	                     "tcp", report_hist(&lg->conn_tcp, 1), "transport",
	                     report_hist(&lg->conn_transport, 1), "handshake",
	                     report_hist(&lg->conn_handshake, 1), "mqtt",
	                     report_hist(&lg->conn_mqtt, 1), "total",
	                     report_hist(&lg->conn_total, 1),
	                     "all_connected_after_us",
	                     report_span_us(lg->t0, lg->t_all_settled),
	                     "tls_version",
	                     lg->tls_version[0] ? json_string(lg->tls_version)
	                                        : NULL,
	                     "tls_cipher",
	                     lg->tls_cipher[0] ? json_string(lg->tls_cipher)
	                                       : NULL));
	/* read at each connection's close (TCP: the kernel's TCP_INFO) */
	report_set(doc, "transport", transports_json(lg));
	if (lg->o.cycles > 1) {
		/* per cycle: from the connect call (the wake) to its last ack
		 * (QoS 1/2) or last message handed over (QoS 0); the wire
		 * bytes of the whole cycle, close included; the transport's
		 * segments or packets up to the disconnect */
		report_set(doc, "cycles",
		           json_pack("{s:o, s:o, s:o, s:o}", "done",
		                     report_u64(lg->cycles_done),
		                     "wake_to_done", report_hist(&lg->cycle_done, 1),
		                     "wire_bytes", hist_plain(&lg->cycle_wire),
		                     "segments", hist_plain(&lg->cycle_segs)));
	}
	if (lg->o.early_data)
		report_set(doc, "early_data",
		           json_pack("{s:o, s:o, s:o}", "attempted",
		                     report_u64(lg->early_tried), "accepted",
		                     report_u64(lg->early_ok), "rejected",
		                     report_u64(lg->early_rejected)));
	report_set(doc, "memory", memory_json(lg));
	report_set(doc, "completeness", completeness_json(lg));
	report_set(doc, "socket",
	           report_socket(lg->ccfg.max_outbuf,
	                         lg->tr ? &lg->tr->cfg : NULL, &lg->so_connect,
	                         &lg->so_close));
	report_set(doc, "publishers", publishers_json(lg));
	if (lg->o.per_conn && lg->pubs != NULL) {
		conns = json_array();
		for (i = 0; i < lg->o.clients; i++)
			json_array_append_new(conns, pub_json(lg, &lg->pubs[i]));
		report_set(doc, "connections", conns);
	}
	report_set(doc, "resources", report_resources());
}

/* ---- resumption state across runs (--session-file) --------------------- */

/*
 * The file: a line "MQBSESS1 <transport>", then per client a record of
 * its index and length (4 bytes each, big-endian) and the transport's
 * resumption data, as tr_session holds it.
 */
#define SESS_MAGIC "MQBSESS1 "

static uint32_t get_be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | b[3];
}

/* Read --session-file when it exists. 0, or -1 with the error noted. */
static int sess_file_load(struct lg *lg)
{
	const char *path = lg->o.session_file;
	char head[64], want[64];
	uint8_t rec[8];
	FILE *f;
	int ok = 1;

	if (!path)
		return 0;
	f = fopen(path, "rb");
	if (!f)
		return errno == ENOENT ? 0 : (note_error(lg, NULL, strerror(errno)), -1);
	snprintf(want, sizeof(want), SESS_MAGIC "%s\n", lg->o.conn.ops->name);
	if (!fgets(head, sizeof(head), f) || strcmp(head, want) != 0) {
		fclose(f);
		snprintf(head, sizeof(head), "%.40s", path);
		note_error(lg, NULL, "--session-file holds no resumption "
		           "state of this transport; delete it or use another "
		           "file");
		return -1;
	}
	lg->sess_blob = calloc(lg->o.clients, sizeof(*lg->sess_blob));
	lg->sess_len = calloc(lg->o.clients, sizeof(*lg->sess_len));
	if (!lg->sess_blob || !lg->sess_len)
		ok = 0;
	lg->n_sess = lg->o.clients;
	while (ok && fread(rec, 1, 8, f) == 8) {
		uint32_t i = get_be32(rec), len = get_be32(rec + 4);
		uint8_t *b;

		if (len > (1u << 20) || !(b = malloc(len ? len : 1)) ||
		    fread(b, 1, len, f) != len) {
			ok = 0;
			break;
		}
		if (i < lg->o.clients && !lg->sess_blob[i]) {
			lg->sess_blob[i] = b;
			lg->sess_len[i] = len;
		} else {
			free(b);
		}
	}
	fclose(f);
	if (!ok) {
		note_error(lg, NULL, "--session-file is damaged; delete it");
		return -1;
	}
	return 0;
}

/* Write every client's resumption state to --session-file, atomically. */
static int sess_file_save(struct lg *lg)
{
	struct afile af;
	uint32_t i;
	int r;

	if (!lg->o.session_file || !lg->pubs)
		return 0;
	r = afile_open(&af, lg->o.session_file);
	if (r < 0)
		return r;
	fprintf(af.fp, SESS_MAGIC "%s\n", lg->o.conn.ops->name);
	for (i = 0; i < lg->o.clients; i++) {
		const uint8_t *d;
		size_t len;
		uint8_t rec[8];

		if (!lg->pubs[i].cl)
			continue;
		d = tr_session_data(client_tr_session(lg->pubs[i].cl), &len);
		if (!d)
			continue;
		rec[0] = (uint8_t)(i >> 24);
		rec[1] = (uint8_t)(i >> 16);
		rec[2] = (uint8_t)(i >> 8);
		rec[3] = (uint8_t)i;
		rec[4] = (uint8_t)(len >> 24);
		rec[5] = (uint8_t)(len >> 16);
		rec[6] = (uint8_t)(len >> 8);
		rec[7] = (uint8_t)len;
		if (fwrite(rec, 1, 8, af.fp) != 8 ||
		    fwrite(d, 1, len, af.fp) != len) {
			afile_abort(&af);
			return -EIO;
		}
	}
	return afile_commit(&af);
}

/* ---- main --------------------------------------------------------------- */

/*
 * Everything a run needs whatever its number of connections: transport
 * context (TLS credentials), loop, payload buffer, timers, signals. The
 * memory baseline is read after this, so that per_connection_kib holds only
 * what grows with the connections.
 */
static int lg_setup_run(struct lg *lg)
{
	struct tr_config tcfg;
	char err[512];
	int rv;

	cli_tr_config(&lg->o.conn, &tcfg);
	tcfg.early_data = lg->o.early_data;
	rv = tr_ctx_new(&lg->tr, lg->o.conn.ops, &tcfg, err, sizeof(err));
	if (rv == 0 && lg->o.migrate_addr &&
	    !(lg->o.conn.ops->flags & TR_F_REBIND)) {
		/* reconnects after a move leave from this address */
		tcfg.local_addr = lg->o.migrate_addr;
		rv = tr_ctx_new(&lg->tr_mig, lg->o.conn.ops, &tcfg, err,
		                sizeof(err));
	}
	if (rv < 0) {
		note_error(lg, NULL, err);
		return -1;
	}
	lg->loop = evloop_new();
	lg->payload = calloc(1, (size_t)lg->o.size);
	if (lg->loop == NULL || lg->payload == NULL) {
		note_error(lg, NULL, "out of memory");
		return -1;
	}
	client_config_init(&lg->ccfg);
	lg->ccfg.version = lg->o.conn.mqtt_version;
	lg->ccfg.keepalive = lg->o.conn.keepalive;
	lg->ccfg.clean_start = (uint8_t)lg->o.conn.clean;
	lg->ccfg.session_expiry = lg->o.conn.clean ? 0
	                                          : lg->o.conn.session_expiry;
	lg->ccfg.connect_timeout_ns = (int64_t)lg->o.conn.connect_timeout_ns;
	if (lg->o.inflight)
		lg->ccfg.inflight_window = lg->o.inflight;
	lg->per_conn_hist = lg->o.conn.qos > 0 &&
	                    lg->o.clients <= PER_CONN_HIST_MAX;
	ev_timer_init(&lg->start_timer, start_timer_cb, lg);
	ev_timer_init(&lg->deadline_timer, deadline_cb, lg);
	ev_timer_init(&lg->drain_timer, drain_cb, lg);
	ev_timer_init(&lg->final_timer, final_cb, lg);
	ev_io_init(&lg->sig_io, lg->sigfd, signal_cb, lg);
	if (ev_io_start(lg->loop, &lg->sig_io, EV_READ) < 0) {
		note_error(lg, NULL, "cannot watch signals");
		return -1;
	}
	return 0;
}

/* The publishers: what grows with --clients. */
static int lg_setup_pubs(struct lg *lg)
{
	uint32_t i, k;
	uint64_t n_flows = (uint64_t)lg->o.clients * lg->o.flows;
	char cid[256];

	lg->pubs = calloc(lg->o.clients, sizeof(*lg->pubs));
	lg->flows = calloc((size_t)lg->o.clients * lg->o.flows,
	                   sizeof(*lg->flows));
	if (lg->pubs == NULL || lg->flows == NULL) {
		note_error(lg, NULL, "out of memory");
		return -1;
	}
	if (lg->o.streams > 1) {
		lg->n_groups = (lg->o.clients + lg->o.streams - 1) /
		               lg->o.streams;
		lg->groups = calloc(lg->n_groups, sizeof(*lg->groups));
		lg->group_refs = calloc(lg->n_groups, sizeof(*lg->group_refs));
		if (!lg->groups || !lg->group_refs) {
			note_error(lg, NULL, "out of memory");
			return -1;
		}
	}
	for (i = 0; i < lg->o.clients; i++) {
		struct pub *p = &lg->pubs[i];

		p->lg = lg;
		p->index = i;
		p->flows = &lg->flows[(size_t)i * lg->o.flows];
		client_id_of(&lg->o, i, cid, sizeof(cid));
		for (k = 0; k < lg->o.flows; k++) {
			struct flow *f = &p->flows[k];
			uint64_t g = (uint64_t)i * lg->o.flows + k; /* flow id */

			f->publisher_id = lg->o.id_base + (uint32_t)g;
			f->rng = lg->o.seed ^
			         (UINT64_C(0x9E3779B97F4A7C15) * (g + 1));
			if (lg->o.count)
				f->target = lg->o.count;
			else if (lg->o.total)
				f->target = lg->o.total / n_flows +
				            (g < lg->o.total % n_flows);
			else /* unbounded; the sink takes larger ones as
			        invalid */
				f->target = PAYLOAD_SEQ_MAX + 1;
			p->target += f->target;
			f->topic = expand_topic(lg->o.topic_tmpl, cid, i, k);
			if (f->topic == NULL) {
				note_error(lg, NULL, "out of memory");
				return -1;
			}
			f->topic_len = (uint16_t)strlen(f->topic);
		}
		ev_timer_init(&p->timer, pub_timer_cb, p);
	}
	return 0;
}

static void lg_cleanup(struct lg *lg)
{
	uint32_t i;

	if (lg->pubs) {
		for (i = 0; i < lg->o.clients; i++) {
			if (lg->loop)
				ev_timer_stop(lg->loop, &lg->pubs[i].timer);
			client_free(lg->pubs[i].cl);
			free(lg->pubs[i].ack_hist);
			if (lg->pubs[i].more) {
				free(lg->pubs[i].more->fq.ring);
				free(lg->pubs[i].more->migs);
			}
			free(lg->pubs[i].more);
			free(lg->pubs[i].err);
		}
	}
	for (i = 0; i < lg->n_groups; i++)
		conn_free(lg->groups[i]);
	free(lg->groups);
	free(lg->group_refs);
	for (i = 0; i < lg->n_sess; i++)
		free(lg->sess_blob[i]);
	free(lg->sess_blob);
	free(lg->sess_len);
	for (i = 0; lg->flows && i < lg->o.clients * lg->o.flows; i++)
		free(lg->flows[i].topic);
	free(lg->flows);
	free(lg->pubs);
	free(lg->payload);
	free(lg->first_err);
	if (lg->loop)
		evloop_del(lg->loop);
	if (lg->tr)
		tr_ctx_del(lg->tr);
	if (lg->tr_mig)
		tr_ctx_del(lg->tr_mig);
	if (lg->sigfd >= 0)
		close(lg->sigfd);
	json_decref(lg->doc);
}

int main(int argc, char **argv)
{
	static struct lg lgs; /* histograms: too big for the stack */
	struct lg *lg = &lgs;
	int rv, status = 0, failed, complete;
	char why[300];

	cli_prog = "loadgen";
	lg->sigfd = -1;
	cli_conn_init(&lg->o.conn);
	lg->o.clients = 1;
	lg->o.flows = 1;
	lg->o.topic_tmpl = "bench/{client}";
	lg->o.size = 64;
	lg->o.rate = 10;
	lg->o.seed = 1;
	lg->o.max_pending = 64;
	lg->o.drain_ns = 10 * UINT64_C(1000000000);
	lg->o.per_conn = 1;
	lg->o.streams = 1;
	lg->o.cycles = 1;
	rv = cli_parse(argc, argv, longopts, &lg->o.conn, handle_opt, &lg->o,
	               usage);
	if (rv == 1)
		return 0;
	if (rv < 0 || check_options(&lg->o) < 0)
		return 2;
	/* every connection is a socket; TLS and the loop need a few more */
	if (cli_raise_nofile((uint64_t)lg->o.clients + 32) < 0)
		return 2;

	stats_hist_init(&lg->ack_lat);
	stats_hist_init(&lg->conn_total);
	stats_hist_init(&lg->conn_transport);
	stats_hist_init(&lg->conn_mqtt);
	stats_hist_init(&lg->conn_tcp);
	stats_hist_init(&lg->conn_handshake);
	stats_hist_init(&lg->sched_lag);
	stats_hist_init(&lg->cycle_done);
	stats_hist_init(&lg->cycle_wire);
	stats_hist_init(&lg->cycle_segs);
	lg->stop_reason = "done";
	lg->doc = app_report_new("loadgen");
	if (lg->doc == NULL) {
		cli_error("out of memory");
		return 1;
	}
	lg->sigfd = cli_signalfd(SIGUSR1);
	if (lg->sigfd < 0) {
		cli_error("cannot set up signal handling: %s", strerror(errno));
		lg_cleanup(lg);
		return 1;
	}
	lg->wall0 = report_wall_ns();
	if (lg_setup_run(lg) < 0) {
		lg->stop_reason = "error";
		status = 1;
		goto out;
	}
	lg->rss_start_kib = report_rss_kib();
	if (sess_file_load(lg) < 0 || lg_setup_pubs(lg) < 0) {
		lg->stop_reason = "error";
		status = 1;
		goto out;
	}
	lg->t0 = evloop_clock_ns();
	if (lg->o.start_at > lg->t0)
		lg->t0 = lg->o.start_at; /* released with the other processes */
	/* a --duration deadline is set once every client is up */
	lg_kick_starter(lg);
	rv = evloop_run(lg->loop);
	if (rv < 0) {
		note_error(lg, NULL, "event loop failed");
		status = 1;
	}
out:
	if (lg->n_failed + lg->n_lost > 0)
		lg->stop_reason = lg->n_ok == 0 ? "error" : lg->stop_reason;
	complete = completeness(lg, why, sizeof(why));
	failed = !complete || lg->first_err != NULL || lg->acks_failed > 0;
	if (!complete && lg->pubs != NULL)
		report_error(lg->doc, "%s", why);
	if (lg->acks_failed > 0)
		report_error(lg->doc, "the broker refused %" PRIu64 " of "
		             "%" PRIu64 " publishes (first: %s, 0x%02x)",
		             lg->acks_failed, lg->sent,
		             client_reason_str(lg->o.conn.mqtt_version,
		                               lg->first_refusal),
		             lg->first_refusal);
	build_result(lg, report_wall_ns());
	report_set(lg->doc, "status",
	           json_string(failed || status ? "failed" : "ok"));
	if (lg->first_err != NULL) {
		uint32_t never = never_connected(lg);

		if (lg->o.clients > 1 && never > lg->n_failed)
			cli_error("%s (%" PRIu32 " of %" PRIu32
			          " connections failed; %" PRIu32 " of %" PRIu32
			          " clients never connected: the run stopped, %s)",
			          lg->first_err, lg->n_failed + lg->n_lost,
			          lg->o.clients, never, lg->o.clients,
			          strcmp(lg->stop_reason, "error") == 0
			                  ? "at the first failure"
			                  : lg->stop_reason);
		else if (lg->o.clients > 1)
			cli_error("%s (%" PRIu32 " of %" PRIu32
			          " connections failed)", lg->first_err,
			          lg->n_failed + lg->n_lost, lg->o.clients);
		else
			cli_error("%s", lg->first_err);
		status = 1;
	} else if (!complete) {
		cli_error("%s", why);
		status = 1;
	} else if (lg->acks_failed > 0) {
		/* one line even then; the JSON has the details */
		cli_error("the broker refused %" PRIu64 " of %" PRIu64
		          " publishes (first: %s, 0x%02x); they are left out "
		          "of ack_latency", lg->acks_failed, lg->sent,
		          client_reason_str(lg->o.conn.mqtt_version,
		                            lg->first_refusal),
		          lg->first_refusal);
		status = 1;
	}
	rv = sess_file_save(lg);
	if (rv < 0) {
		cli_error("cannot write --session-file '%s': %s",
		          lg->o.session_file, strerror(-rv));
		status = 1;
	}
	rv = report_write(lg->doc, lg->o.conn.json_path);
	if (rv < 0) {
		cli_error("cannot write '%s': %s", lg->o.conn.json_path,
		          strerror(-rv));
		status = 1;
	}
	lg_cleanup(lg);
	return status;
}
