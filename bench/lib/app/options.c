/*
 * options.c: the client binaries' common options. See options.h.
 */
#include "app/options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <jansson.h>
#include <ngtcp2/ngtcp2.h>

#include "measure/report.h"
#include "mqtt/codec.h"
#include "net/transport.h"
#include "util/version.h"

const char cli_conn_help[] =
	"Broker and transport:\n"
	"  --host HOST            broker address (default 127.0.0.1)\n"
	"  --port PORT            broker port (default 1883 tcp, 8883 tls,\n"
	"                         14567 quic)\n"
	"  --transport NAME       tcp (default), tls, or another transport\n"
	"                         the library offers\n"
	"  --cafile FILE          TLS: CA certificates to verify the broker\n"
	"                         (default: the system trust store)\n"
	"  --tls-name NAME        TLS: name to verify and send as SNI\n"
	"                         (default: --host)\n"
	"  --tls-version 1.2|1.3  TLS: use exactly this version (default 1.3)\n"
	"  --cc NAME              QUIC congestion control: cubic (default),\n"
	"                         reno, bbr, bbr2\n"
	"  --qlog-dir DIR         QUIC: write a qlog file per connection\n"
	"  --alpn NAME            QUIC: the ALPN to offer (default mqtt, as\n"
	"                         EMQX and NanoMQ; \"\" offers none)\n"
	"MQTT:\n"
	"  --mqtt 3.1.1|5         protocol version (default 3.1.1)\n"
	"  --qos 0|1|2            QoS (default 0)\n"
	"  --keepalive SECONDS    keepalive (default 60; 0 disables)\n"
	"  --client-id PREFIX     client id, or prefix of the ids\n"
	"                         (default <program>-<pid>)\n"
	"  --clean                clean session / clean start (default)\n"
	"  --persistent           keep the session (clean session off)\n"
	"  --session-expiry SEC   MQTT 5 session expiry with --persistent\n"
	"                         (default 0xFFFFFFFF: never)\n"
	"  --connect-timeout DUR  give up connecting after DUR (default 10s)\n"
	"Output:\n"
	"  --json FILE            write the result document to FILE, "
	"atomically\n"
	"                         (default: stdout)\n"
	"  --help, --version\n";

void cli_conn_init(struct cli_conn *c)
{
	memset(c, 0, sizeof(*c));
	c->host = "127.0.0.1";
	c->ops = &tr_tcp_ops;
	c->mqtt_version = MQTT_V311;
	c->keepalive = 60;
	c->clean = 1;
	c->session_expiry = UINT32_MAX;
	c->connect_timeout_ns = 10 * UINT64_C(1000000000);
}

int cli_conn_option(struct cli_conn *c, int code, const char *arg)
{
	uint64_t v;

	switch (code) {
	case CLI_OPT_HOST:
		if (arg[0] == '\0') {
			cli_error("--host: empty host name");
			return CLI_EBADARG;
		}
		c->host = arg;
		return 1;
	case CLI_OPT_PORT:
		if (cli_parse_u64("--port", arg, 1, 65535, &v) < 0)
			return CLI_EBADARG;
		c->port = (uint16_t)v;
		return 1;
	case CLI_OPT_TRANSPORT:
		/* whatever the transport library offers: QUIC joins by
		 * being listed there */
		c->ops = tr_find(arg);
		if (c->ops == NULL) {
			cli_error("--transport: '%s' is not a transport (use one "
			          "of: %s)", arg, tr_names());
			return CLI_EBADARG;
		}
		c->secure = (c->ops->flags & TR_F_SECURE) != 0;
		return 1;
	case CLI_OPT_CAFILE:
		if (access(arg, R_OK) != 0) {
			cli_error("--cafile: cannot read '%s': %s", arg,
			          strerror(errno));
			return CLI_EBADARG;
		}
		c->cafile = arg;
		return 1;
	case CLI_OPT_TLS_NAME:
		c->tls_name = arg;
		return 1;
	case CLI_OPT_TLS_VERSION:
		if (strcmp(arg, "1.2") == 0) {
			c->tls_version = 12;
		} else if (strcmp(arg, "1.3") == 0) {
			c->tls_version = 13;
		} else {
			cli_error("--tls-version: '%s' is not supported (use 1.2 "
			          "or 1.3)", arg);
			return CLI_EBADARG;
		}
		return 1;
	case CLI_OPT_MQTT:
		if (strcmp(arg, "3.1.1") == 0 || strcmp(arg, "311") == 0 ||
		    strcmp(arg, "4") == 0) {
			c->mqtt_version = MQTT_V311;
		} else if (strcmp(arg, "5") == 0 || strcmp(arg, "5.0") == 0) {
			c->mqtt_version = MQTT_V5;
		} else {
			cli_error("--mqtt: '%s' is not a supported MQTT version "
			          "(use 3.1.1 or 5)", arg);
			return CLI_EBADARG;
		}
		return 1;
	case CLI_OPT_QOS:
		if (strcmp(arg, "0") != 0 && strcmp(arg, "1") != 0 &&
		    strcmp(arg, "2") != 0) {
			cli_error("--qos: '%s' is not a valid QoS (use 0, 1 or "
			          "2)", arg);
			return CLI_EBADARG;
		}
		c->qos = (uint8_t)(arg[0] - '0');
		return 1;
	case CLI_OPT_KEEPALIVE:
		if (cli_parse_u64("--keepalive", arg, 0, 65535, &v) < 0)
			return CLI_EBADARG;
		c->keepalive = (uint16_t)v;
		return 1;
	case CLI_OPT_CLIENT_ID:
		if (mqtt_valid_utf8((const uint8_t *)arg, strlen(arg)) != 0 ||
		    strlen(arg) > 200) {
			cli_error("--client-id: '%s' is not a valid client id "
			          "(UTF-8, at most 200 bytes)", arg);
			return CLI_EBADARG;
		}
		c->client_id = arg;
		return 1;
	case CLI_OPT_CLEAN:
		c->clean = 1;
		return 1;
	case CLI_OPT_PERSISTENT:
		c->clean = 0;
		return 1;
	case CLI_OPT_SESSION_EXPIRY:
		if (cli_parse_u64("--session-expiry", arg, 0, UINT32_MAX, &v) <
		    0)
			return CLI_EBADARG;
		c->session_expiry = (uint32_t)v;
		return 1;
	case CLI_OPT_CONNECT_TIMEOUT:
		if (cli_parse_duration("--connect-timeout", arg, 1000000,
		                       3600 * UINT64_C(1000000000),
		                       &c->connect_timeout_ns) < 0)
			return CLI_EBADARG;
		return 1;
	case CLI_OPT_CC:
		if (strcmp(arg, "cubic") != 0 && strcmp(arg, "reno") != 0 &&
		    strcmp(arg, "bbr") != 0 && strcmp(arg, "bbr2") != 0) {
			cli_error("--cc: '%s' is not a congestion control QUIC "
			          "offers here (use cubic, reno, bbr or bbr2)",
			          arg);
			return CLI_EBADARG;
		}
		c->cc = arg;
		return 1;
	case CLI_OPT_ALPN:
		if (strlen(arg) > 255) {
			cli_error("--alpn: at most 255 bytes");
			return CLI_EBADARG;
		}
		c->alpn = arg;
		return 1;
	case CLI_OPT_QLOG_DIR:
		if (access(arg, W_OK) != 0) {
			cli_error("--qlog-dir: cannot write to '%s': %s", arg,
			          strerror(errno));
			return CLI_EBADARG;
		}
		c->qlog_dir = arg;
		return 1;
	case CLI_OPT_JSON:
		if (arg[0] == '\0') {
			cli_error("--json: empty file name");
			return CLI_EBADARG;
		}
		c->json_path = arg;
		return 1;
	default:
		return 0;
	}
}

int cli_conn_finish(struct cli_conn *c)
{
	if (c->port == 0)
		c->port = c->ops->default_port;
	if (!c->secure &&
	    (c->cafile || c->tls_name || c->tls_version)) {
		cli_error("--cafile, --tls-name and --tls-version need a "
		          "secure transport (--transport tls or quic)");
		return CLI_EBADARG;
	}
	if ((c->cc || c->qlog_dir || c->alpn) &&
	    !(c->ops->flags & TR_F_DATAGRAM)) {
		cli_error("--cc, --qlog-dir and --alpn are QUIC settings "
		          "(--transport quic); TCP's congestion control is the "
		          "kernel's");
		return CLI_EBADARG;
	}
	if (c->secure && c->tls_name == NULL)
		c->tls_name = c->host;
	return 0;
}

int cli_parse(int argc, char **argv, const struct option *longopts,
              struct cli_conn *conn, cli_handler handle, void *ctx,
              const char *usage)
{
	int code, rv;

	opterr = 0; /* our own one-line messages instead of getopt's */
	optind = 1;
	for (;;) {
		code = getopt_long(argc, argv, ":", longopts, NULL);
		if (code == -1)
			break;
		if (code == '?') {
			cli_error("unknown option '%s' (see --help)",
			          argv[optind - 1]);
			return CLI_EBADARG;
		}
		if (code == ':') {
			cli_error("option '%s' needs a value (see --help)",
			          argv[optind - 1]);
			return CLI_EBADARG;
		}
		if (code == CLI_OPT_HELP) {
			fputs(usage, stdout);
			fputs(cli_conn_help, stdout);
			return 1;
		}
		if (code == CLI_OPT_VERSION) {
			cli_print_version();
			return 1;
		}
		rv = cli_conn_option(conn, code, optarg);
		if (rv < 0)
			return CLI_EBADARG;
		if (rv == 1)
			continue;
		if (handle(ctx, code, optarg) < 0)
			return CLI_EBADARG;
	}
	if (optind < argc) {
		cli_error("unexpected argument '%s' (options only; see --help)",
		          argv[optind]);
		return CLI_EBADARG;
	}
	return cli_conn_finish(conn);
}

void cli_print_version(void)
{
	const ngtcp2_info *ng = ngtcp2_version(0);

	printf("%s %s (GnuTLS %s, ngtcp2 %s, jansson %s)\n", cli_prog,
	       BENCH_VERSION, gnutls_check_version(NULL),
	       ng ? ng->version_str : "unknown", JANSSON_VERSION);
}

void cli_tr_config(const struct cli_conn *c, struct tr_config *cfg)
{
	tr_config_init(cfg);
	cfg->host = c->host;
	cfg->port = c->port;
	cfg->connect_timeout_ns = (int64_t)c->connect_timeout_ns;
	cfg->cafile = c->cafile;
	cfg->server_name = c->tls_name;
	if (c->tls_version == 12)
		cfg->tls_version = TR_TLS_1_2;
	else if (c->tls_version == 13)
		cfg->tls_version = TR_TLS_1_3;
	cfg->cc = c->cc;
	cfg->qlog_dir = c->qlog_dir;
	cfg->alpn = c->alpn;
}

json_t *cli_conn_json(const struct cli_conn *c)
{
	json_t *o = json_object();

	if (o == NULL)
		return NULL;
	report_set(o, "host", json_string(c->host));
	report_set(o, "port", json_integer(c->port));
	report_set(o, "transport",
	           json_string(c->ops->name));
	if (c->secure) {
		report_set(o, "cafile",
		           c->cafile ? json_string(c->cafile) : json_null());
		report_set(o, "tls_name", json_string(c->tls_name));
		report_set(o, "tls_version",
		           json_string(c->tls_version == 12 ? "1.2" : "1.3"));
	}
	report_set(o, "mqtt_version",
	           json_string(c->mqtt_version == MQTT_V5 ? "5.0" : "3.1.1"));
	report_set(o, "qos", json_integer(c->qos));
	report_set(o, "keepalive_s", json_integer(c->keepalive));
	report_set(o, "clean", json_boolean(c->clean));
	if (!c->clean && c->mqtt_version == MQTT_V5)
		report_set(o, "session_expiry_s",
		           json_integer((json_int_t)c->session_expiry));
	report_set(o, "connect_timeout_us", report_us(c->connect_timeout_ns));
	if (c->ops->flags & TR_F_DATAGRAM) {
		report_set(o, "congestion_control",
		           json_string(c->cc ? c->cc : "cubic"));
		report_set(o, "qlog_dir",
		           c->qlog_dir ? json_string(c->qlog_dir) : json_null());
		report_set(o, "alpn", json_string(c->alpn ? c->alpn : "mqtt"));
	}
	return o;
}
