/*
 * sink: the benchmark's subscriber. One MQTT connection subscribed to one or
 * more filters; for every message it reads the benchmark header (payload.h)
 * and accounts one-way latency from the send (receive time minus the send
 * time stamped by the load generator: both are CLOCK_MONOTONIC of the same
 * kernel) and from the schedule (receive time minus the time the load
 * generator's schedule wanted the message sent: the wait for a full window
 * or buffer included, so a backlog cannot hide), loss, duplicates and
 * reordering per publisher (stats.h), and throughput.
 * Payloads without the header (mosquitto_pub's, say) are counted as foreign,
 * and so are headers no load generator of this run can have written (stats.h).
 * A subscription the broker grants at a lower QoS than asked for is an error:
 * the run would measure something else than asked.
 * Writes one JSON document when it ends: at --count messages, at --expect
 * benchmark messages, after --idle-timeout without a message, or after
 * --duration or on SIGINT/SIGTERM followed by the drain: it goes on reading
 * until nothing came for the drain time (several retransmission timeouts),
 * so messages still in flight at the stop are counted, not lost.
 *
 * The receive time of a message is the engine's clock read right after the
 * read() that completed it (on_message's now_ns): the earliest moment the
 * sink knows the message is there. Not the loop's cached wake-up time (a
 * message in the same read may have been sent after the wake-up), and not a
 * read per message (that would add the sink's own processing of the
 * messages before it in the same read).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "util/afile.h"
#include "app/options.h"
#include "app/results.h"
#include "app/client.h"
#include "net/evloop.h"
#include "mqtt/codec.h"
#include "measure/payload.h"
#include "measure/report.h"
#include "measure/stats.h"
#include "net/transport.h"

#define MAX_FILTERS 64
/* The per-publisher list in the JSON stops here (totals stay complete). */
#define MAX_LISTED_PUBLISHERS 100000
/* Binary raw file: magic, then fixed records (see usage). */
#define RAW_MAGIC "MQTBRAW2"
#define RAW_RECORD 48
/* The drain's defaults: --drain auto's floor and RTO multiple, --drain-max */
#define DRAIN_FLOOR_NS (1 * EV_NS_PER_SEC)
#define DRAIN_RTOS 4
#define DRAIN_MAX_NS (60 * EV_NS_PER_SEC)

enum sink_state {
	SINK_CONNECTING = 0,
	SINK_SUBSCRIBING,
	SINK_RECEIVING,
	SINK_CLOSING,
	SINK_CLOSED,
};

struct sink_opts {
	struct cli_conn conn;
	const char *filters[MAX_FILTERS];
	size_t n_filters;
	uint64_t count;       /* stop after this many messages, 0: no */
	uint64_t expect;      /* ... distinct benchmark messages, 0: no */
	uint64_t duration_ns; /* stop this long after subscribing, 0: no */
	int64_t drain_ns;     /* quiet time that ends a drain; -1: auto */
	uint64_t drain_max_ns; /* a drain's longest time */
	uint64_t idle_ns;     /* stop this long after the last message */
	const char *raw_path;
	int raw_binary;
	const char *ready_file;
	uint64_t coalesce_ns; /* --coalesce, 0: off */
	int accept_lower_qos; /* --accept-lower-qos */
	uint64_t max_packet;  /* --max-packet: largest packet we accept */
};

/* loadgen's largest payload (64 MiB) with room for topic and header */
#define SINK_MAX_PACKET_DEFAULT (UINT64_C(64) * 1024 * 1024 + 64 * 1024)

struct sink {
	struct sink_opts o;
	struct evloop *loop;
	struct tr_ctx *tr;
	struct client *cl;
	json_t *doc;
	enum sink_state state;
	const char *stop_reason;
	char *err; /* first error, for the stderr line */
	int signals;
	int done; /* the loop is to end (also for the coalescing loop) */

	uint64_t wall0;
	int64_t t0, t_subscribed;
	struct client_connected_info ci; /* .mqtt points at ci_mqtt */
	struct sess_connack_info ci_mqtt; /* .connack not kept */
	struct tr_info ti;
	int have_ci;
	uint8_t granted[MAX_FILTERS]; /* SUBACK codes, n_granted of them */
	size_t n_granted;
	int qos_downgraded; /* a filter was granted less than asked for */
	uint64_t mqtt_in, wire_in, wire_out, qos2_dups;

	struct rx_stats rx;
	/* the drain (see the top of the file) */
	int draining;
	const char *drain_end; /* how it ended: quiet, expected, max, ... */
	int64_t t_drain, t_drain_end, drain_quiet_ns, drain_rto_ns;
	uint64_t drain_from; /* rx.messages when it began */
	size_t max_outbuf;   /* the engine's output-buffer limit */
	struct sockopts_seen so_connect, so_close;
	struct afile raw; /* raw.fp is NULL unless --raw */
	uint64_t raw_records;
	int raw_failed;

	struct ev_timer deadline_timer, idle_timer, final_timer, drain_timer,
		drain_max_timer;
	struct ev_io sig_io;
	int sigfd;
};

static const char usage[] =
	"usage: sink [options]\n"
	"MQTT subscriber of the transport benchmark: one-way latency,\n"
	"throughput, loss, duplicates and reordering per publisher, from the\n"
	"benchmark header the load generator puts into every payload.\n"
	"Payloads without it (e.g. from mosquitto_pub) count as foreign.\n"
	"\n"
	"Subscription and stop:\n"
	"  --topic FILTER         topic filter, wildcards allowed; repeat for\n"
	"                         several (default bench/#)\n"
	"  --count N              stop after N messages (all, foreign included)\n"
	"  --expect N             stop once N distinct benchmark messages\n"
	"                         (publisher, sequence) have arrived: what the\n"
	"                         load generators will write; also ends a drain\n"
	"  --duration DUR         DUR after the subscription is in place, drain\n"
	"                         and stop\n"
	"  --idle-timeout DUR     stop when no message came for DUR (counted\n"
	"                         from the first message)\n"
	"                         (none of these: run until SIGINT/SIGTERM;\n"
	"                         the first signal drains, a second one stops)\n"
	"  --drain DUR|auto       after --duration or a signal, go on reading\n"
	"                         until no message came for DUR (after the last\n"
	"                         message and after the stop), so that what is\n"
	"                         in flight or being retransmitted still counts;\n"
	"                         0 stops at once; auto (default): 4 x the\n"
	"                         retransmission timeout of the sink's own\n"
	"                         connection at the stop, at least 1 s (give DUR\n"
	"                         when the publishers' path is slower than the\n"
	"                         sink's)\n"
	"  --drain-max DUR        a drain ends after DUR at the latest (default\n"
	"                         60s), also when messages keep coming\n"
	"  --ready-file FILE      create FILE once subscribed\n"
	"  --accept-lower-qos     measure even when the broker grants a lower\n"
	"                         QoS than --qos (default: that is an error,\n"
	"                         exit 1; granted_qos is in the JSON either way)\n"
	"  --max-packet BYTES     largest MQTT packet accepted from the broker\n"
	"                         (default 64M + 64k: loadgen's largest payload\n"
	"                         with room for topic and header; MQTT 5\n"
	"                         advertises it as Maximum Packet Size)\n"
	"  --coalesce DUR         when reads bring more than one message, wait\n"
	"                         DUR before reading again (e.g. 200us): fewer\n"
	"                         wake-ups, less broker CPU, more throughput;\n"
	"                         adds up to DUR to latencies under load\n"
	"                         (default off; for throughput runs)\n"
	"Raw per-message records (for CDF plots):\n"
	"  --raw FILE             one record per message, written atomically\n"
	"  --raw-format text|binary\n"
	"                         text (default): a '#' header line, then\n"
	"                         'recv_ns publisher seq latency_ns size kind\n"
	"                         sched_latency_ns' per message: latency_ns from\n"
	"                         the send, sched_latency_ns from the due time;\n"
	"                         '-' where a message has no value (foreign;\n"
	"                         no due time); kind is first, in_order, gap,\n"
	"                         reordered, duplicate, too_old, foreign,\n"
	"                         clock_error or invalid\n"
	"                         binary: '" RAW_MAGIC "', then 48-byte\n"
	"                         little-endian records: u64 recv_ns, u64 seq,\n"
	"                         u64 latency_ns, u32 publisher, u32 size,\n"
	"                         u8 kind (0 first .. 5 too_old, 6 foreign,\n"
	"                         7 clock_error, 8 invalid), 7 bytes zero,\n"
	"                         u64 sched_latency_ns (2^64 - 1: none)\n"
	"\n"
	"Foreign and invalid payloads: a payload without the benchmark header is\n"
	"foreign. One with the header's magic but values no load generator of\n"
	"this run can have sent is invalid (counted as foreign as well, and in\n"
	"messages.invalid): a sequence number above 2^48 - 1, a send time more\n"
	"than 1 s in the future, or one from before this sink started (not\n"
	"checked with --persistent: a session may hold older messages), a due\n"
	"time before the clock started. Neither enters the latency or the\n"
	"sequence figures. The previous header version (1) is read as well; it\n"
	"has no due time: such messages have no latency from the schedule\n"
	"(messages.unscheduled, messages.header_v1).\n"
	"\n";

enum {
	OPT_TOPIC = CLI_OPT_FIRST_OWN,
	OPT_COUNT,
	OPT_DURATION,
	OPT_IDLE,
	OPT_RAW,
	OPT_RAW_FORMAT,
	OPT_READY,
	OPT_COALESCE,
	OPT_ACCEPT_LOWER_QOS,
	OPT_MAX_PACKET,
	OPT_EXPECT,
	OPT_DRAIN,
	OPT_DRAIN_MAX,
};

static const struct option longopts[] = {
	CLI_CONN_LONGOPTS,
	{ "topic", required_argument, 0, OPT_TOPIC },
	{ "count", required_argument, 0, OPT_COUNT },
	{ "duration", required_argument, 0, OPT_DURATION },
	{ "idle-timeout", required_argument, 0, OPT_IDLE },
	{ "raw", required_argument, 0, OPT_RAW },
	{ "raw-format", required_argument, 0, OPT_RAW_FORMAT },
	{ "ready-file", required_argument, 0, OPT_READY },
	{ "coalesce", required_argument, 0, OPT_COALESCE },
	{ "accept-lower-qos", no_argument, 0, OPT_ACCEPT_LOWER_QOS },
	{ "max-packet", required_argument, 0, OPT_MAX_PACKET },
	{ "expect", required_argument, 0, OPT_EXPECT },
	{ "drain", required_argument, 0, OPT_DRAIN },
	{ "drain-max", required_argument, 0, OPT_DRAIN_MAX },
	{ 0, 0, 0, 0 },
};

static const char *const kind_names[] = {
	"first", "in_order", "gap", "reordered", "duplicate", "too_old",
	"foreign", "clock_error", "invalid",
};
#define KIND_FOREIGN 6
#define KIND_CLOCK_ERROR 7
#define KIND_INVALID 8

static int handle_opt(void *ctx, int code, const char *arg)
{
	struct sink_opts *o = ctx;

	switch (code) {
	case OPT_TOPIC:
		if (o->n_filters == MAX_FILTERS) {
			cli_error("--topic: at most %d filters", MAX_FILTERS);
			return CLI_EBADARG;
		}
		if (arg[0] == '\0' ||
		    mqtt_valid_topic_filter((const uint8_t *)arg,
		                            strlen(arg)) != 0) {
			cli_error("--topic: '%s' is not a valid topic filter "
			          "(non-empty UTF-8; # only as the last level, "
			          "+ alone in its level)", arg);
			return CLI_EBADARG;
		}
		o->filters[o->n_filters++] = arg;
		return 0;
	case OPT_COUNT:
		return cli_parse_u64("--count", arg, 1, UINT64_MAX, &o->count);
	case OPT_EXPECT:
		return cli_parse_u64("--expect", arg, 1, UINT64_MAX, &o->expect);
	case OPT_DRAIN: {
		uint64_t v;

		if (strcmp(arg, "auto") == 0) {
			o->drain_ns = -1;
			return 0;
		}
		if (cli_parse_duration("--drain", arg, 0,
		                       UINT64_C(3600) * 1000000000, &v) < 0)
			return CLI_EBADARG;
		o->drain_ns = (int64_t)v;
		return 0;
	}
	case OPT_DRAIN_MAX:
		return cli_parse_duration("--drain-max", arg, 1000000,
		                          UINT64_C(86400) * 1000000000,
		                          &o->drain_max_ns);
	case OPT_DURATION:
		return cli_parse_duration("--duration", arg, 1000000,
		                          UINT64_C(365) * 86400 * 1000000000,
		                          &o->duration_ns);
	case OPT_IDLE:
		return cli_parse_duration("--idle-timeout", arg, 1000000,
		                          UINT64_C(86400) * 1000000000,
		                          &o->idle_ns);
	case OPT_RAW:
		if (arg[0] == '\0') {
			cli_error("--raw: empty file name");
			return CLI_EBADARG;
		}
		o->raw_path = arg;
		return 0;
	case OPT_RAW_FORMAT:
		if (strcmp(arg, "text") == 0) {
			o->raw_binary = 0;
		} else if (strcmp(arg, "binary") == 0) {
			o->raw_binary = 1;
		} else {
			cli_error("--raw-format: '%s' is not a format (use text "
			          "or binary)", arg);
			return CLI_EBADARG;
		}
		return 0;
	case OPT_READY:
		o->ready_file = arg;
		return 0;
	case OPT_COALESCE:
		return cli_parse_duration("--coalesce", arg, 0,
		                          UINT64_C(100000000), &o->coalesce_ns);
	case OPT_ACCEPT_LOWER_QOS:
		o->accept_lower_qos = 1;
		return 0;
	case OPT_MAX_PACKET:
		return cli_parse_size("--max-packet", arg, 64, MQTT_MAX_REMAINING + 5,
		                      &o->max_packet);
	default:
		cli_error("internal: unhandled option %d", code);
		return CLI_EBADARG;
	}
}

static void sink_note_error(struct sink *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sink_note_error(struct sink *s, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (s->err == NULL)
		s->err = strdup(buf);
	report_error(s->doc, "%s", buf);
}

/* ---- raw records ------------------------------------------------------- */

/* Open the raw file through afile (atomic, follows links, devices as
 * they are). 0 or -errno. */
static int raw_open(struct sink *s)
{
	int rv = afile_open(&s->raw, s->o.raw_path);

	if (rv < 0)
		return rv;
	/* a large buffer: one write per MiB, not per message */
	setvbuf(s->raw.fp, NULL, _IOFBF, 1 << 20);
	if (s->o.raw_binary)
		fwrite(RAW_MAGIC, 1, 8, s->raw.fp);
	else
		fputs("# recv_ns publisher seq latency_ns size kind "
		      "sched_latency_ns\n", s->raw.fp);
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void raw_write(struct sink *s, uint64_t now, size_t size,
                      const struct rx_result *r)
{
	unsigned kind;
	uint8_t rec[RAW_RECORD];
	int sched = r->bench && r->scheduled && !r->clock_error;

	if (s->raw.fp == NULL)
		return;
	if (r->invalid)
		kind = KIND_INVALID;
	else if (!r->bench)
		kind = KIND_FOREIGN;
	else if (r->clock_error)
		kind = KIND_CLOCK_ERROR;
	else
		kind = (unsigned)r->seq;
	if (s->o.raw_binary) {
		memset(rec, 0, sizeof(rec));
		put_le(rec, now, 8);
		put_le(rec + 8, r->bench ? r->seq_no : 0, 8);
		put_le(rec + 16, r->bench ? r->latency_ns : 0, 8);
		put_le(rec + 24, r->bench ? r->publisher : 0, 4);
		put_le(rec + 28, size > UINT32_MAX ? UINT32_MAX : size, 4);
		rec[32] = (uint8_t)kind;
		put_le(rec + 40, sched ? r->sched_latency_ns : UINT64_MAX, 8);
		fwrite(rec, 1, sizeof(rec), s->raw.fp);
	} else if (r->bench) {
		fprintf(s->raw.fp, "%" PRIu64 " %" PRIu32 " %" PRIu64 " %" PRIu64
		        " %zu %s ", now, r->publisher, r->seq_no,
		        r->latency_ns, size, kind_names[kind]);
		if (sched)
			fprintf(s->raw.fp, "%" PRIu64 "\n", r->sched_latency_ns);
		else
			fputs("-\n", s->raw.fp);
	} else {
		fprintf(s->raw.fp, "%" PRIu64 " - - - %zu %s -\n", now, size,
		        kind_names[kind]);
	}
	s->raw_records++;
}

/* Flush, sync and rename the raw file into place. 0 or -errno. */
static int raw_close(struct sink *s)
{
	if (s->raw.fp == NULL)
		return 0;
	return afile_commit(&s->raw);
}

/* ---- run control ------------------------------------------------------- */

static void sink_done(struct sink *s)
{
	s->done = 1;
	evloop_stop(s->loop);
}

/*
 * --coalesce: when one round of the loop delivered more than one message,
 * the broker is writing faster than we read; sleep DUR before reading again
 * so that it writes a batch meanwhile. A sink that sleeps in epoll with an
 * empty socket must be woken for every few messages, and on loopback the
 * broker's own send() pays for that wake-up: with a fast sink, Mosquitto
 * spends far more CPU per message than with a slow one (measured: 2.2 s
 * against 1.25 s of broker CPU for 200,000 QoS 0 messages). Coalescing
 * removes most wake-ups, at the price of up to DUR of added latency for the
 * messages that arrive during the sleep; at low rates (one message per
 * round) it never sleeps. Off by default: for throughput runs.
 */
static int run_coalescing(struct sink *s)
{
	struct timespec ts = {
		.tv_sec = (time_t)(s->o.coalesce_ns / 1000000000u),
		.tv_nsec = (long)(s->o.coalesce_ns % 1000000000u),
	};
	uint64_t seen = 0;
	int rv = 0;

	while (!s->done && rv >= 0) {
		rv = evloop_run_once(s->loop, EV_NEVER);
		if (s->rx.messages - seen > 1 && !s->done)
			clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
		seen = s->rx.messages;
	}
	return rv < 0 ? rv : 0;
}

/*
 * Byte counters of the connection so far. The engine keeps them valid after
 * a close of any kind (client.h): on_closed reads the final ones, and the
 * result reads them again in case the run ended before the close.
 */
static void sink_read_counters(struct sink *s)
{
	const struct client_stats *st;

	if (s->cl == NULL)
		return;
	st = client_stats(s->cl);
	s->mqtt_in = st->bytes_in;
	s->wire_in = st->wire_in;
	s->wire_out = st->wire_out;
	s->qos2_dups = st->dup_qos2_in;
}

static void sink_stop(struct sink *s, const char *reason)
{
	if (s->state == SINK_CLOSING || s->state == SINK_CLOSED)
		return;
	/* a drain keeps the reason that began it; record how it ended */
	if (s->draining) {
		s->drain_end = reason;
		s->t_drain_end = evloop_clock_ns();
	} else {
		s->stop_reason = reason;
	}
	ev_timer_stop(s->loop, &s->deadline_timer);
	ev_timer_stop(s->loop, &s->idle_timer);
	ev_timer_stop(s->loop, &s->drain_timer);
	ev_timer_stop(s->loop, &s->drain_max_timer);
	if (s->cl != NULL)
		sockopts_seen_add(&s->so_close, client_transport(s->cl));
	s->state = SINK_CLOSING;
	if (s->cl == NULL || client_disconnect(s->cl, 0) < 0) {
		s->state = SINK_CLOSED;
		sink_done(s);
		return;
	}
	/* the engine lingers up to 2 s for the broker's close */
	ev_timer_start(s->loop, &s->final_timer,
	               evloop_clock_ns() + 5 * EV_NS_PER_SEC);
}

/*
 * The drain's quiet time: --drain, or auto: DRAIN_RTOS retransmission
 * timeouts of our own connection now (TCP's from TCP_INFO; QUIC's probe
 * timeout srtt + 4 x rttvar), at least DRAIN_FLOOR_NS. Keeps the RTO it
 * used in s->drain_rto_ns (-1: unknown).
 */
static int64_t drain_quiet(struct sink *s)
{
	struct tr_conn *tc = s->cl ? client_transport(s->cl) : NULL;
	struct tr_stats ts;
	int64_t rto = -1, q;

	if (s->o.drain_ns >= 0)
		return s->o.drain_ns;
	if (tc != NULL) {
		tr_get_stats(tc, &ts);
		if (ts.rto_ns >= 0)
			rto = ts.rto_ns;
		else if (ts.srtt_ns >= 0)
			rto = ts.srtt_ns + 4 * (ts.rttvar_ns > 0 ? ts.rttvar_ns : 0);
	}
	s->drain_rto_ns = rto;
	q = rto > 0 ? DRAIN_RTOS * rto : 0;
	return q > DRAIN_FLOOR_NS ? q : DRAIN_FLOOR_NS;
}

/* The drain ends after the quiet time, counted from the later of its
 * start and the last message; re-armed lazily like the idle timer. */
static void drain_cb(struct evloop *loop, struct ev_timer *t)
{
	struct sink *s = t->arg;
	int64_t from = s->t_drain, due;

	if ((int64_t)s->rx.last_ns > from)
		from = (int64_t)s->rx.last_ns;
	due = from + s->drain_quiet_ns;
	if (evloop_clock_ns() >= due)
		sink_stop(s, "quiet");
	else
		ev_timer_start(loop, t, due);
}

static void drain_max_cb(struct evloop *loop, struct ev_timer *t)
{
	(void)loop;
	sink_stop(t->arg, "max");
}

/*
 * Stop receiving after the drain (reason: what asked for the stop). A sink
 * that never subscribed, or one told not to drain, stops at once.
 */
static void sink_drain(struct sink *s, const char *reason)
{
	int64_t now = evloop_clock_ns();

	if (s->draining || s->state == SINK_CLOSING ||
	    s->state == SINK_CLOSED)
		return;
	if (s->state != SINK_RECEIVING || s->o.drain_ns == 0) {
		sink_stop(s, reason);
		return;
	}
	s->stop_reason = reason;
	s->draining = 1;
	s->t_drain = now;
	s->drain_from = s->rx.messages;
	s->drain_quiet_ns = drain_quiet(s);
	ev_timer_stop(s->loop, &s->deadline_timer);
	ev_timer_start(s->loop, &s->drain_timer, now + s->drain_quiet_ns);
	ev_timer_start(s->loop, &s->drain_max_timer,
	               now + (int64_t)s->o.drain_max_ns);
}

static void deadline_cb(struct evloop *loop, struct ev_timer *t)
{
	(void)loop;
	sink_drain(t->arg, "duration");
}

/*
 * Checked lazily: re-armed from the last message's time instead of being
 * restarted on every message.
 */
static void idle_cb(struct evloop *loop, struct ev_timer *t)
{
	struct sink *s = t->arg;
	int64_t due = (int64_t)s->rx.last_ns + (int64_t)s->o.idle_ns;

	if (evloop_clock_ns() >= due)
		sink_stop(s, "idle");
	else
		ev_timer_start(loop, t, due);
}

static void final_cb(struct evloop *loop, struct ev_timer *t)
{
	struct sink *s = t->arg;

	(void)loop;
	report_error(s->doc, "the connection did not close in time");
	sink_done(s);
}

static void signal_cb(struct evloop *loop, struct ev_io *w, uint32_t revents)
{
	struct sink *s = w->arg;
	struct signalfd_siginfo si;

	(void)loop;
	(void)revents;
	while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
		/* the first drains; the next ends the drain; then no wait */
		if (s->state == SINK_CLOSING || s->state == SINK_CLOSED) {
			sink_done(s);
			return;
		}
		if (s->signals++ == 0)
			sink_drain(s, "signal");
		else
			sink_stop(s, "signal");
	}
}

/* ---- client callbacks -------------------------------------------------- */

static void on_connected(struct client *c,
                         const struct client_connected_info *info)
{
	struct sink *s = client_user(c);
	struct mqtt_topic_filter f[MAX_FILTERS];
	struct tr_conn *tc;
	size_t i;
	int rv;

	s->ci = *info;
	s->ci_mqtt = *info->mqtt;
	s->ci_mqtt.connack = NULL;
	s->ci.mqtt = &s->ci_mqtt;
	s->have_ci = 1;
	tc = client_transport(c);
	if (tc != NULL)
		tr_get_info(tc, &s->ti);
	sockopts_seen_add(&s->so_connect, tc);
	memset(f, 0, sizeof(f));
	for (i = 0; i < s->o.n_filters; i++) {
		f[i].filter.data = (const uint8_t *)s->o.filters[i];
		f[i].filter.len = strlen(s->o.filters[i]);
		f[i].opts.qos = s->o.conn.qos;
	}
	s->state = SINK_SUBSCRIBING;
	rv = client_subscribe(c, f, s->o.n_filters, NULL);
	if (rv < 0) {
		sink_note_error(s, "cannot subscribe: %s", client_strerror(rv));
		sink_stop(s, "error");
	}
}

static void on_subscribed(struct client *c, uint16_t packet_id,
                          const uint8_t *codes, size_t n)
{
	struct sink *s = client_user(c);
	size_t i;
	int rv;

	(void)packet_id;
	/* a persistent session may deliver (and complete the count) before
	 * the SUBACK: then we are already closing */
	if (s->state != SINK_SUBSCRIBING)
		return;
	for (i = 0; i < n && i < s->o.n_filters; i++)
		s->granted[i] = codes[i];
	s->n_granted = i;
	for (i = 0; i < s->n_granted; i++) {
		if (codes[i] >= 0x80) {
			sink_note_error(s, "the broker refused the subscription "
			                "to '%s': %s (0x%02x)", s->o.filters[i],
			                client_reason_str(s->o.conn.mqtt_version,
			                                  codes[i]),
			                codes[i]);
			sink_stop(s, "error");
			return;
		}
		if (codes[i] < s->o.conn.qos)
			s->qos_downgraded = 1;
		if (codes[i] < s->o.conn.qos && !s->o.accept_lower_qos) {
			sink_note_error(s, "the broker granted QoS %u for '%s', "
			                "not the QoS %u asked for: the run would "
			                "measure QoS %u (check the broker's "
			                "max_qos, or pass --accept-lower-qos)",
			                codes[i], s->o.filters[i], s->o.conn.qos,
			                codes[i]);
			sink_stop(s, "error");
			return;
		}
	}
	if (n != s->o.n_filters) {
		sink_note_error(s, "SUBACK has %zu codes for %zu filters", n,
		                s->o.n_filters);
		sink_stop(s, "error");
		return;
	}
	s->state = SINK_RECEIVING;
	s->t_subscribed = evloop_clock_ns();
	if (s->o.duration_ns)
		ev_timer_start(s->loop, &s->deadline_timer,
		               s->t_subscribed + (int64_t)s->o.duration_ns);
	if (s->o.ready_file) {
		rv = cli_write_ready(s->o.ready_file);
		if (rv < 0) {
			sink_note_error(s, "cannot write the ready file '%s': %s",
			                s->o.ready_file, strerror(-rv));
			sink_stop(s, "error");
		}
	}
}

static void on_message(struct client *c, const struct mqtt_publish *msg,
                       int64_t now_ns)
{
	struct sink *s = client_user(c);
	struct rx_result r;
	uint64_t now = (uint64_t)now_ns; /* see the top of the file */

	if (s->state != SINK_RECEIVING && s->state != SINK_SUBSCRIBING)
		return; /* stopping: the count is complete */
	if (rx_stats_add(&s->rx, msg->payload.data, msg->payload.len, now,
	                 &r) < 0 && s->err == NULL)
		sink_note_error(s, "out of memory tracking publishers");
	raw_write(s, now, msg->payload.len, &r);
	if (s->rx.messages == 1 && s->o.idle_ns)
		ev_timer_start(s->loop, &s->idle_timer,
		               (int64_t)now + (int64_t)s->o.idle_ns);
	if (s->o.count && s->rx.messages >= s->o.count)
		sink_stop(s, "count");
	else if (s->o.expect && s->rx.unique >= s->o.expect)
		sink_stop(s, "expected");
}

static void on_closed(struct client *c, int err, const char *msg)
{
	struct sink *s = client_user(c);

	sink_read_counters(s);
	if (s->state != SINK_CLOSING || err != 0) {
		if (s->state == SINK_CONNECTING)
			sink_note_error(s, "%s", msg);
		else if (err != 0)
			sink_note_error(s, "connection lost: %s", msg);
		else
			sink_note_error(s, "connection closed by the broker");
		if (s->state != SINK_CLOSING)
			s->stop_reason = "error";
	}
	s->state = SINK_CLOSED;
	sink_done(s);
}

static const struct client_callbacks callbacks = {
	.on_connected = on_connected,
	.on_message = on_message,
	.on_subscribed = on_subscribed,
	.on_closed = on_closed,
};

/* ---- result document --------------------------------------------------- */

static json_t *config_json(const struct sink *s)
{
	const struct sink_opts *o = &s->o;
	json_t *c = json_object(), *f = json_array();
	size_t i;

	for (i = 0; i < o->n_filters; i++)
		json_array_append_new(f, json_string(o->filters[i]));
	report_set(c, "connection", cli_conn_json(&o->conn));
	report_set(c, "client_id", json_string(o->conn.client_id));
	report_set(c, "filters", f);
	report_set(c, "count", o->count ? report_u64(o->count)
	                                : json_null());
	report_set(c, "expect", o->expect ? report_u64(o->expect)
	                                  : json_null());
	report_set(c, "duration_s",
	           o->duration_ns ? json_real((double)o->duration_ns / 1e9)
	                          : json_null());
	report_set(c, "idle_timeout_s",
	           o->idle_ns ? json_real((double)o->idle_ns / 1e9)
	                      : json_null());
	/* null: auto (the drain object says what it came to) */
	report_set(c, "drain_s", o->drain_ns >= 0
	                                 ? json_real((double)o->drain_ns / 1e9)
	                                 : json_null());
	report_set(c, "drain_max_s", json_real((double)o->drain_max_ns / 1e9));
	report_set(c, "raw", o->raw_path ? json_string(o->raw_path)
	                                 : json_null());
	report_set(c, "raw_format",
	           json_string(o->raw_binary ? "binary" : "text"));
	report_set(c, "header_size", json_integer(PAYLOAD_HEADER_LEN));
	report_set(c, "header_version", json_integer(PAYLOAD_VERSION));
	report_set(c, "coalesce_us", report_us(o->coalesce_ns));
	report_set(c, "max_packet", report_u64(o->max_packet));
	report_set(c, "accept_lower_qos", json_boolean(o->accept_lower_qos));
	report_set(c, "not_before_check",
	           json_boolean(s->rx.not_before_ns != 0));
	return c;
}

static json_t *sequence_json(const struct sink *s)
{
	struct rx_totals tot;
	json_t *o = json_object(), *list = json_array();
	const struct seq_entry *e;
	size_t i;

	rx_stats_totals(&s->rx, &tot);
	report_set(o, "publishers", report_u64(tot.publishers));
	report_set(o, "unique", report_u64(tot.unique));
	report_set(o, "lost", report_u64(tot.lost));
	report_set(o, "duplicates", report_u64(tot.duplicates));
	report_set(o, "reordered", report_u64(tot.reordered));
	report_set(o, "too_old", report_u64(tot.too_old));
	report_set(o, "gaps", report_u64(tot.gaps));
	report_set(o, "window", json_integer(SEQ_WINDOW));
	for (i = 0; i < s->rx.pubs.n && i < MAX_LISTED_PUBLISHERS; i++) {
		e = &s->rx.pubs.entries[i];
		json_array_append_new(
			list,
			json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
			          "s:o, s:o}",
			          "publisher", (json_int_t)e->publisher, "first",
			          report_u64(e->t.first), "highest",
			          report_u64(e->t.highest), "received",
			          report_u64(e->t.received), "unique",
			          report_u64(seq_tracker_unique(&e->t)), "lost",
			          report_u64(seq_tracker_lost(&e->t)),
			          "duplicates", report_u64(e->t.duplicates),
			          "reordered", report_u64(e->t.reordered),
			          "too_old", report_u64(e->t.too_old), "gaps",
			          report_u64(e->t.gaps)));
	}
	report_set(o, "per_publisher", list);
	report_set(o, "per_publisher_truncated",
	           json_boolean(s->rx.pubs.n > MAX_LISTED_PUBLISHERS));
	return o;
}

/*
 * How the run ended after a stop request: the quiet time the drain waited
 * for (and the RTO it came from, with auto), how long it lasted, what it
 * still received, what ended it: "quiet" (nothing came for the quiet time),
 * "expected" (--expect reached), "max" (--drain-max), "signal", "error".
 * null when no drain took place.
 */
static json_t *drain_json(const struct sink *s)
{
	int64_t end = s->t_drain_end ? s->t_drain_end : evloop_clock_ns();

	if (!s->draining)
		return json_null();
	return json_pack("{s:s, s:f, s:o, s:b, s:f, s:f, s:o, s:s}",
	                 "requested_by", s->stop_reason,
	                 "quiet_s", (double)s->drain_quiet_ns / 1e9,
	                 "rto_ms", s->drain_rto_ns >= 0
	                                   ? json_real((double)s->drain_rto_ns / 1e6)
	                                   : json_null(),
	                 "auto", s->o.drain_ns < 0,
	                 "started_after_s",
	                 (double)(s->t_drain - s->t_subscribed) / 1e9,
	                 "lasted_s", (double)(end - s->t_drain) / 1e9,
	                 "messages", report_u64(s->rx.messages - s->drain_from),
	                 "ended_by", s->drain_end ? s->drain_end : "error");
}

static void build_result(struct sink *s, uint64_t wall_end)
{
	json_t *doc = s->doc, *m, *tp, *sub, *fl;
	const struct rx_stats *rx = &s->rx;
	double secs;
	size_t i;

	report_set(doc, "config", config_json(s));
	report_set(doc, "start", report_time(s->wall0));
	report_set(doc, "end", report_time(wall_end));
	report_set(doc, "stop_reason", json_string(s->stop_reason));
	report_set(doc, "connect",
	           s->have_ci ? report_connect(&s->ci, &s->ti) : json_null());
	sub = json_object();
	fl = json_array();
	for (i = 0; i < s->o.n_filters; i++)
		json_array_append_new(
			fl, json_pack("{s:s, s:o}", "filter", s->o.filters[i],
			              "granted_qos",
			              i < s->n_granted
			                      ? json_integer(s->granted[i])
			                      : json_null()));
	report_set(sub, "filters", fl);
	report_set(sub, "qos_downgraded", json_boolean(s->qos_downgraded));
	report_set(sub, "subscribed_after_us",
	           s->t_subscribed ? report_us((uint64_t)(s->t_subscribed -
	                                                  s->t0))
	                           : json_null());
	report_set(doc, "subscription", sub);

	m = json_object();
	report_set(m, "received", report_u64(rx->messages));
	report_set(m, "bytes", report_u64(rx->bytes));
	report_set(m, "bench", report_u64(rx->bench_messages));
	report_set(m, "bench_bytes", report_u64(rx->bench_bytes));
	report_set(m, "foreign", report_u64(rx->foreign_messages));
	report_set(m, "foreign_bytes", report_u64(rx->foreign_bytes));
	report_set(m, "bad_version", report_u64(rx->bad_version));
	report_set(m, "invalid", report_u64(rx->invalid));
	report_set(m, "clock_errors", report_u64(rx->clock_errors));
	report_set(m, "unique", report_u64(rx->unique));
	/* benchmark messages without a due time (header version 1, or a
	 * load generator without a schedule: --rate 0): no latency from
	 * the schedule for them */
	report_set(m, "unscheduled", report_u64(rx->unscheduled));
	report_set(m, "header_v1", report_u64(rx->header_v1));
	report_set(m, "lag_clamped", report_u64(rx->lag_clamped));
	report_set(m, "qos2_duplicates_dropped", report_u64(s->qos2_dups));
	report_set(doc, "messages", m);

	tp = json_object();
	secs = rx->last_ns > rx->first_ns
	               ? (double)(rx->last_ns - rx->first_ns) / 1e9
	               : 0.0;
	report_set(tp, "first_to_last_s", json_real(secs));
	/* n messages span n - 1 gaps */
	report_set(tp, "messages_per_s",
	           secs > 0 ? json_real((double)(rx->messages - 1) / secs)
	                    : json_null());
	report_set(tp, "bytes_per_s",
	           secs > 0 ? json_real((double)rx->bytes *
	                                (double)(rx->messages - 1) /
	                                (double)rx->messages / secs)
	                    : json_null());
	report_set(doc, "throughput", tp);
	/* from the send; from the schedule: the same messages' latency plus
	 * the time each waited before its send (unscheduled ones left out) */
	report_set(doc, "latency", report_hist(&rx->latency, 1));
	report_set(doc, "latency_from_schedule",
	           report_hist(&rx->latency_sched, 1));
	report_set(doc, "drain", drain_json(s));
	report_set(doc, "socket",
	           report_socket(s->max_outbuf, s->tr ? &s->tr->cfg : NULL,
	                         &s->so_connect, &s->so_close));
	report_set(doc, "sequence", sequence_json(s));
	report_set(doc, "transfer",
	           json_pack("{s:o, s:o, s:o}", "mqtt_bytes_in",
	                     report_u64(s->mqtt_in), "wire_bytes_in",
	                     report_u64(s->wire_in), "wire_bytes_out",
	                     report_u64(s->wire_out)));
	report_set(doc, "raw_records",
	           s->o.raw_path ? report_u64(s->raw_records) : json_null());
	report_set(doc, "resources", report_resources());
}

/* ---- main -------------------------------------------------------------- */

static int sink_setup(struct sink *s)
{
	struct tr_config tcfg;
	struct client_config ccfg;
	char err[512];
	int rv;

	cli_tr_config(&s->o.conn, &tcfg);
	rv = tr_ctx_new(&s->tr, s->o.conn.ops, &tcfg, err, sizeof(err));
	if (rv < 0) {
		sink_note_error(s, "%s", err);
		return -1;
	}
	s->loop = evloop_new();
	if (s->loop == NULL) {
		sink_note_error(s, "out of memory");
		return -1;
	}
	client_config_init(&ccfg);
	ccfg.version = s->o.conn.mqtt_version;
	ccfg.client_id = s->o.conn.client_id;
	ccfg.keepalive = s->o.conn.keepalive;
	ccfg.clean_start = (uint8_t)s->o.conn.clean;
	ccfg.session_expiry = s->o.conn.clean ? 0 : s->o.conn.session_expiry;
	ccfg.connect_timeout_ns = (int64_t)s->o.conn.connect_timeout_ns;
	ccfg.max_packet_size = (uint32_t)s->o.max_packet;
	s->max_outbuf = ccfg.max_outbuf;
	s->cl = client_new(s->loop, s->tr, &ccfg, &callbacks, s);
	if (s->cl == NULL) {
		sink_note_error(s, "out of memory");
		return -1;
	}
	ev_timer_init(&s->deadline_timer, deadline_cb, s);
	ev_timer_init(&s->idle_timer, idle_cb, s);
	ev_timer_init(&s->final_timer, final_cb, s);
	ev_timer_init(&s->drain_timer, drain_cb, s);
	ev_timer_init(&s->drain_max_timer, drain_max_cb, s);
	ev_io_init(&s->sig_io, s->sigfd, signal_cb, s);
	if (ev_io_start(s->loop, &s->sig_io, EV_READ) < 0) {
		sink_note_error(s, "cannot watch signals");
		return -1;
	}
	if (client_connect(s->cl) < 0) {
		sink_note_error(s, "out of memory");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct sink sinks; /* the histogram is big for a stack */
	struct sink *s = &sinks;
	static char def_id[64];
	int rv, status = 0;

	cli_prog = "sink";
	s->sigfd = -1;
	cli_conn_init(&s->o.conn);
	s->o.max_packet = SINK_MAX_PACKET_DEFAULT;
	s->o.drain_ns = -1;
	s->o.drain_max_ns = DRAIN_MAX_NS;
	rv = cli_parse(argc, argv, longopts, &s->o.conn, handle_opt, &s->o,
	               usage);
	if (rv == 1)
		return 0;
	if (rv < 0)
		return 2;
	if (s->o.n_filters == 0)
		s->o.filters[s->o.n_filters++] = "bench/#";
	if (s->o.conn.client_id == NULL) {
		snprintf(def_id, sizeof(def_id), "sink-%ld", (long)getpid());
		s->o.conn.client_id = def_id;
	}
	/* the process start, near enough: a message stamped before it cannot
	 * reach a clean session; a persistent one may hold older messages */
	s->t0 = evloop_clock_ns();
	rx_stats_init(&s->rx, s->o.conn.clean ? (uint64_t)s->t0 : 0);
	s->stop_reason = "error";
	s->doc = app_report_new("sink");
	if (s->doc == NULL) {
		cli_error("out of memory");
		return 1;
	}
	if (s->o.raw_path && (rv = raw_open(s)) < 0) {
		cli_error("--raw: cannot create '%s': %s", s->o.raw_path,
		          strerror(-rv));
		json_decref(s->doc);
		return 2;
	}
	s->sigfd = cli_signalfd(0);
	if (s->sigfd < 0) {
		cli_error("cannot set up signal handling: %s", strerror(errno));
		status = 1;
		goto out;
	}
	s->wall0 = report_wall_ns();
	if (sink_setup(s) < 0) {
		status = 1;
		goto result;
	}
	s->stop_reason = "signal"; /* until something else stops it */
	rv = s->o.coalesce_ns ? run_coalescing(s) : evloop_run(s->loop);
	if (rv < 0)
		sink_note_error(s, "event loop failed: %s", strerror(-rv));
result:
	if (s->o.raw_path && (rv = raw_close(s)) < 0)
		sink_note_error(s, "cannot write the raw file '%s': %s",
		                s->o.raw_path, strerror(-rv));
	sink_read_counters(s);
	build_result(s, report_wall_ns());
	report_set(s->doc, "status", json_string(s->err ? "failed" : "ok"));
	if (s->err) {
		cli_error("%s", s->err);
		status = 1;
	}
	rv = report_write(s->doc, s->o.conn.json_path);
	if (rv < 0) {
		cli_error("cannot write '%s': %s", s->o.conn.json_path,
		          strerror(-rv));
		status = 1;
	}
out:
	afile_abort(&s->raw); /* nothing left to do after raw_close() */
	free(s->err);
	client_free(s->cl);
	if (s->loop)
		evloop_del(s->loop);
	if (s->tr)
		tr_ctx_del(s->tr);
	if (s->sigfd >= 0)
		close(s->sigfd);
	rx_stats_free(&s->rx);
	json_decref(s->doc);
	return status;
}
