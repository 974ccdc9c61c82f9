/*
 * options.h: the command line of the MQTT client binaries (loadgen, sink):
 * the connection options every one of them takes (broker, transport, TLS,
 * MQTT version, QoS, session), the getopt loop around them, and how they
 * become a transport configuration and a JSON object.
 *
 * Every error prints one line on stderr naming the option, the value and
 * what is accepted, and returns CLI_EBADARG; the caller exits
 * CLI_EXIT_USAGE.
 */
#ifndef APP_OPTIONS_H
#define APP_OPTIONS_H

#include <getopt.h>
#include <stdint.h>

#include "util/cli.h"

struct transport_ops;

/* Connection options common to the load generator and the sink. */
struct cli_conn {
	const char *host;       /* default "127.0.0.1" */
	uint16_t port;          /* 0 until set: default by transport */
	const struct transport_ops *ops; /* from tr_find(); default TCP */
	int secure;             /* the transport runs TLS (tls, quic) */
	const char *cafile;     /* TLS: trust anchors; NULL = system store */
	const char *tls_name;   /* TLS: name to verify and send (SNI) */
	int tls_version;        /* 0 = library default, 12 or 13 (exactly) */
	uint8_t mqtt_version;   /* MQTT_V311 or MQTT_V5; default MQTT_V311 */
	uint8_t qos;            /* default 0 */
	uint16_t keepalive;     /* seconds, default 60 */
	const char *client_id;  /* prefix; default "<prog>-<pid>" */
	int clean;              /* clean session / clean start, default 1 */
	uint32_t session_expiry; /* v5, seconds, for persistent sessions */
	uint64_t connect_timeout_ns; /* default 10 s */
	const char *json_path;  /* NULL = stdout */
	const char *cc;         /* QUIC congestion control; NULL: cubic */
	const char *qlog_dir;   /* QUIC: a qlog file per connection */
	const char *alpn;       /* QUIC: ALPN to offer; NULL "mqtt", "" none */
};

/* Option codes of the common options (above any short option letter). */
enum {
	CLI_OPT_HOST = 1000,
	CLI_OPT_PORT,
	CLI_OPT_TRANSPORT,
	CLI_OPT_CAFILE,
	CLI_OPT_TLS_NAME,
	CLI_OPT_TLS_VERSION,
	CLI_OPT_MQTT,
	CLI_OPT_QOS,
	CLI_OPT_KEEPALIVE,
	CLI_OPT_CLIENT_ID,
	CLI_OPT_CLEAN,
	CLI_OPT_PERSISTENT,
	CLI_OPT_SESSION_EXPIRY,
	CLI_OPT_CONNECT_TIMEOUT,
	CLI_OPT_JSON,
	CLI_OPT_CC,
	CLI_OPT_QLOG_DIR,
	CLI_OPT_ALPN,
	CLI_OPT_HELP,
	CLI_OPT_VERSION,
	CLI_OPT_FIRST_OWN /* binaries number their own options from here */
};

/* Entries for a getopt_long table; end the table with {0, 0, 0, 0}. */
#define CLI_CONN_LONGOPTS                                                     \
	{ "host", required_argument, 0, CLI_OPT_HOST },                       \
	{ "port", required_argument, 0, CLI_OPT_PORT },                       \
	{ "transport", required_argument, 0, CLI_OPT_TRANSPORT },             \
	{ "cafile", required_argument, 0, CLI_OPT_CAFILE },                   \
	{ "tls-name", required_argument, 0, CLI_OPT_TLS_NAME },               \
	{ "tls-version", required_argument, 0, CLI_OPT_TLS_VERSION },         \
	{ "mqtt", required_argument, 0, CLI_OPT_MQTT },                       \
	{ "mqtt-version", required_argument, 0, CLI_OPT_MQTT },               \
	{ "qos", required_argument, 0, CLI_OPT_QOS },                         \
	{ "keepalive", required_argument, 0, CLI_OPT_KEEPALIVE },             \
	{ "client-id", required_argument, 0, CLI_OPT_CLIENT_ID },             \
	{ "clean", no_argument, 0, CLI_OPT_CLEAN },                           \
	{ "persistent", no_argument, 0, CLI_OPT_PERSISTENT },                 \
	{ "session-expiry", required_argument, 0, CLI_OPT_SESSION_EXPIRY },   \
	{ "connect-timeout", required_argument, 0, CLI_OPT_CONNECT_TIMEOUT }, \
	{ "json", required_argument, 0, CLI_OPT_JSON },                       \
	{ "cc", required_argument, 0, CLI_OPT_CC },                           \
	{ "qlog-dir", required_argument, 0, CLI_OPT_QLOG_DIR },               \
	{ "alpn", required_argument, 0, CLI_OPT_ALPN },                       \
	{ "help", no_argument, 0, CLI_OPT_HELP },                             \
	{ "version", no_argument, 0, CLI_OPT_VERSION }

/* Help text of the common options, for the binaries' --help. */
extern const char cli_conn_help[];

void cli_conn_init(struct cli_conn *c);
/*
 * Handle one common option. Returns 1 when handled, 0 when `code` is not a
 * common option (or is --help/--version, which the binary handles), or
 * CLI_EBADARG after printing the error line.
 */
int cli_conn_option(struct cli_conn *c, int code, const char *arg);
/*
 * Check the combination once all options are read and fill in defaults
 * (port by transport, TLS name from host). Returns 0 or CLI_EBADARG.
 */
int cli_conn_finish(struct cli_conn *c);

/*
 * Run getopt_long over argv with the binary's table, calling handle() for
 * every option that is not common. Reports unknown options and missing
 * arguments as one line. Returns 0, CLI_EBADARG, or 1 when --help (usage,
 * then the common options' help, printed on stdout) or --version (printed)
 * was given: the caller then exits with status 0.
 */
typedef int (*cli_handler)(void *ctx, int code, const char *arg);
int cli_parse(int argc, char **argv, const struct option *longopts,
              struct cli_conn *conn, cli_handler handle, void *ctx,
              const char *usage);

/* "<prog> <BENCH_VERSION> (GnuTLS x, ngtcp2 y, jansson z)" on stdout. */
void cli_print_version(void);

struct tr_config;

/* Fill a transport configuration from the common options. */
void cli_tr_config(const struct cli_conn *c, struct tr_config *cfg);

/* The common options as a JSON object (for the result's "config"). */
struct json_t;
struct json_t *cli_conn_json(const struct cli_conn *c);

#endif /* APP_OPTIONS_H */
