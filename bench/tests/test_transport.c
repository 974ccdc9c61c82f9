/*
 * test_transport.c: the TCP and TLS transports and the client engine
 * against a real Mosquitto on loopback.
 *
 * The test makes its own CA and broker certificate with certtool, writes a
 * private Mosquitto config (TCP and TLS listeners on free ports) and starts
 * the broker; everything lives in a temporary directory removed at the end.
 */
#include "app/client.h"
#include "tt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- broker fixture ---- */

static char dir[64];
static char ca_pem[128], wrong_ca_pem[128], keylog[128], mosq_log[128];
static char server_pem[128], server_key[128];
static uint16_t tcp_port, tls_port, dead_port;
static pid_t mosq_pid = -1;

static uint16_t free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		perror("free_port");
		exit(2);
	}
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static void write_file(const char *name, const char *fmt, ...)
{
	char path[160];
	va_list ap;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
}

static void sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0) {
		fprintf(stderr, "test setup failed: %s\n", cmd);
		exit(2);
	}
}

static int port_open(uint16_t port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static void make_certs(void)
{
	const char *q = ">/dev/null 2>&1";

	if (system("command -v certtool >/dev/null") != 0) {
		fprintf(stderr, "certtool not found: run 'make deps' "
		                "(package gnutls-bin)\n");
		exit(2);
	}
	write_file("ca.tmpl", "cn = mqb test CA\nca\ncert_signing_key\n"
	                      "expiration_days = 2\n");
	write_file("server.tmpl",
	           "cn = localhost\ndns_name = localhost\n"
	           "ip_address = 127.0.0.1\ntls_www_server\n"
	           "signing_key\nencryption_key\nexpiration_days = 2\n");
	sh("cd %s && certtool --generate-privkey --key-type=ecdsa "
	   "--outfile ca.key %s", dir, q);
	sh("cd %s && certtool --generate-self-signed --load-privkey ca.key "
	   "--template ca.tmpl --outfile ca.pem %s", dir, q);
	sh("cd %s && certtool --generate-privkey --key-type=ecdsa "
	   "--outfile server.key %s", dir, q);
	sh("cd %s && certtool --generate-certificate --load-privkey "
	   "server.key --load-ca-certificate ca.pem --load-ca-privkey ca.key "
	   "--template server.tmpl --outfile server.pem %s", dir, q);
	/* an unrelated CA with the same name: signer not found */
	sh("cd %s && certtool --generate-privkey --key-type=ecdsa "
	   "--outfile wrong.key %s", dir, q);
	sh("cd %s && certtool --generate-self-signed --load-privkey wrong.key "
	   "--template ca.tmpl --outfile wrong-ca.pem %s", dir, q);
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", dir);
	snprintf(wrong_ca_pem, sizeof(wrong_ca_pem), "%s/wrong-ca.pem", dir);
	snprintf(server_pem, sizeof(server_pem), "%s/server.pem", dir);
	snprintf(server_key, sizeof(server_key), "%s/server.key", dir);
}

static void start_broker(void)
{
	int i;

	tcp_port = free_port();
	tls_port = free_port();
	dead_port = free_port();
	snprintf(mosq_log, sizeof(mosq_log), "%s/mosquitto.log", dir);
	write_file("mosquitto.conf",
	           "%s"
	           "per_listener_settings false\n"
	           "allow_anonymous true\n"
	           "persistence false\n"
	           "max_inflight_messages 100\n"
	           "max_queued_messages 100000\n"
	           "set_tcp_nodelay true\n"
	           "log_dest file %s\n"
	           "listener %u 127.0.0.1\n"
	           "listener %u 127.0.0.1\n"
	           "certfile %s/server.pem\n"
	           "keyfile %s/server.key\n"
	           "tls_version tlsv1.2\n",
	           geteuid() == 0 ? "user root\n" : "", mosq_log,
	           (unsigned)tcp_port, (unsigned)tls_port, dir, dir);
	mosq_pid = fork();
	if (mosq_pid == 0) {
		char conf[160];

		snprintf(conf, sizeof(conf), "%s/mosquitto.conf", dir);
		execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
		fprintf(stderr, "cannot start mosquitto: %s; run 'make "
		                "deps'\n", strerror(errno));
		_exit(127);
	}
	for (i = 0; i < 500; i++) {
		if (port_open(tcp_port) && port_open(tls_port))
			return;
		usleep(10000);
	}
	fprintf(stderr, "mosquitto did not start; log: %s\n", mosq_log);
	exit(2);
}

static void stop_broker(void)
{
	if (mosq_pid > 0) {
		kill(mosq_pid, SIGTERM);
		waitpid(mosq_pid, NULL, 0);
		mosq_pid = -1;
	}
	if (dir[0])
		sh("rm -rf %s", dir);
}

/* ---- clients ---- */

static struct evloop *loop;

struct rec {
	int connected, closed, subacks, messages, done, resumed;
	int close_err;
	char close_msg[400];
	struct client_connected_info info; /* .mqtt points at mqtt */
	struct sess_connack_info mqtt;     /* .connack not kept */
	struct tr_info tri;
	uint8_t session_present;
	uint32_t next_seq[3]; /* per QoS: the sequence we expect next */
	int order_ok;
	int dup_qos2;
	struct client_stats st; /* client_stats() in on_closed */
};

static void on_connected(struct client *c,
                         const struct client_connected_info *i)
{
	struct rec *r = client_user(c);

	r->connected++;
	r->info = *i;
	r->mqtt = *i->mqtt;
	r->mqtt.connack = NULL;
	r->info.mqtt = &r->mqtt;
	r->session_present = i->mqtt->session_present;
	tr_get_info(client_transport(c), &r->tri);
}

/* Payload: "<qos> <seq> " then filler up to the size. */
static void on_message(struct client *c, const struct mqtt_publish *m,
                       int64_t now)
{
	struct rec *r = client_user(c);
	unsigned q, seq;
	char head[32];

	(void)now;
	r->messages++;
	snprintf(head, sizeof(head), "%.*s",
	         (int)(m->payload.len < 31 ? m->payload.len : 31),
	         (const char *)m->payload.data);
	if (sscanf(head, "%u %u", &q, &seq) == 2 && q <= 2) {
		if (seq != r->next_seq[q])
			r->order_ok = 0;
		r->next_seq[q] = seq + 1;
	}
}

static void on_publish_done(struct client *c, uint16_t id, uint8_t qos,
                            uint8_t reason, int64_t t_sent, int64_t now)
{
	struct rec *r = client_user(c);

	(void)id;
	(void)qos;
	(void)t_sent;
	(void)now;
	if (reason < 0x80)
		r->done++;
}

static void on_subscribed(struct client *c, uint16_t id, const uint8_t *codes,
                          size_t n)
{
	struct rec *r = client_user(c);

	(void)id;
	(void)codes;
	(void)n;
	r->subacks++;
}

static void on_closed(struct client *c, int err, const char *msg)
{
	struct rec *r = client_user(c);

	r->closed++;
	r->close_err = err;
	snprintf(r->close_msg, sizeof(r->close_msg), "%s", msg);
	r->st = *client_stats(c);
}

static const struct client_callbacks cbs = {
	.on_connected = on_connected,
	.on_message = on_message,
	.on_publish_done = on_publish_done,
	.on_subscribed = on_subscribed,
	.on_closed = on_closed,
};

/* Run the loop until *flag >= want or 10 s pass. */
static int wait_for(const int *flag, int want)
{
	int64_t end = evloop_clock_ns() + 10 * EV_NS_PER_SEC;

	while (*flag < want && evloop_clock_ns() < end)
		evloop_run_once(loop, 5 * EV_NS_PER_MS);
	return *flag >= want;
}

/* A context for 127.0.0.1:port from *tc (other fields set by the caller);
 * NULL with the message printed on failure. */
static struct tr_ctx *ctx_on(const char *tr, struct tr_config *tc,
                             uint16_t port, int tls_version)
{
	struct tr_ctx *ctx;
	char err[300];

	tc->host = "127.0.0.1";
	tc->port = port;
	if (tls_version)
		tc->tls_version = tls_version;
	if (tr_ctx_new(&ctx, tr_find(tr), tc, err, sizeof(err)) < 0) {
		fprintf(stderr, "tr_ctx_new: %s\n", err);
		return NULL;
	}
	return ctx;
}

static struct tr_ctx *make_ctx(const char *tr, uint16_t port,
                               const char *cafile, const char *name,
                               int tls_version)
{
	struct tr_config tc;

	tr_config_init(&tc);
	tc.cafile = cafile;
	tc.server_name = name;
	return ctx_on(tr, &tc, port, tls_version);
}

static struct client *make_client(struct tr_ctx *ctx, struct rec *r,
                                  const char *id, uint8_t version, int clean)
{
	struct client_config cc;

	client_config_init(&cc);
	cc.version = version;
	cc.client_id = id;
	cc.clean_start = (uint8_t)clean;
	cc.inflight_window = 1000;
	if (version == MQTT_V5 && !clean)
		cc.session_expiry = 300;
	memset(r, 0, sizeof(*r));
	r->order_ok = 1;
	return client_new(loop, ctx, &cc, &cbs, r);
}

/* Connect and wait; 1 when connected, 0 when it failed or took 10 s. */
static int connect_wait(struct client *c, struct rec *r)
{
	int before = r->connected, closed = r->closed;
	int64_t end = evloop_clock_ns() + 10 * EV_NS_PER_SEC;

	if (client_connect(c) != 0)
		return 0;
	while (r->connected == before && r->closed == closed &&
	       evloop_clock_ns() < end)
		evloop_run_once(loop, 5 * EV_NS_PER_MS);
	if (r->closed != closed)
		fprintf(stderr, "connect failed: %s\n", r->close_msg);
	return r->connected == before + 1;
}

static void disconnect_wait(struct client *c, struct rec *r)
{
	int before = r->closed;

	TT_CHECK(client_disconnect(c, 0) == 0);
	TT_CHECK(wait_for(&r->closed, before + 1));
	TT_CHECK(r->close_err == 0);
}

/*
 * One subscriber, one publisher: n messages of each QoS with payload sizes
 * cycling through `sizes`, then check every one arrived, in order, and each
 * QoS 2 message exactly once.
 */
static void pubsub(struct tr_ctx *sub_ctx, struct tr_ctx *pub_ctx, int n,
                   const size_t *sizes, int n_sizes, const char *topic)
{
	static uint8_t payload[70000];
	struct rec rs, rp;
	struct client *sub = make_client(sub_ctx, &rs, "mqb-sub", MQTT_V311, 1);
	struct client *pub = make_client(pub_ctx, &rp, "mqb-pub", MQTT_V5, 1);
	struct mqtt_topic_filter f;
	int i, q, sent = 0;

	memset(payload, 'x', sizeof(payload));
	TT_CHECK(connect_wait(sub, &rs));
	TT_CHECK(connect_wait(pub, &rp));
	memset(&f, 0, sizeof(f));
	f.filter.data = (const uint8_t *)topic;
	f.filter.len = strlen(topic);
	f.opts.qos = 2;
	TT_CHECK(client_subscribe(sub, &f, 1, NULL) > 0);
	TT_CHECK(wait_for(&rs.subacks, 1));
	for (i = 0; i < n; i++) {
		for (q = 0; q <= 2; q++) {
			size_t len = sizes[(i + q) % n_sizes];
			int hl = snprintf((char *)payload, 32, "%d %d ", q, i);
			int r;

			payload[hl] = 'x'; /* snprintf's NUL */
			if (len < (size_t)hl)
				len = (size_t)hl;
			while ((r = client_publish(pub, (const uint8_t *)topic,
			                           strlen(topic), payload, len,
			                           (uint8_t)q, 0, NULL)) ==
			               CLIENT_EWINDOW ||
			       r == CLIENT_EBUSY)
				evloop_run_once(loop, EV_NS_PER_MS);
			TT_CHECK(r >= 0);
			sent++;
		}
	}
	TT_CHECK(wait_for(&rs.messages, sent));
	TT_CHECK(wait_for(&rp.done, 2 * n));
	/* a little longer: duplicates would show up now */
	{
		int64_t end = evloop_clock_ns() + 50 * EV_NS_PER_MS;

		while (evloop_clock_ns() < end)
			evloop_run_once(loop, EV_NS_PER_MS);
	}
	TT_CHECK(rs.messages == sent);
	TT_CHECK(rs.order_ok);
	TT_CHECK(rs.next_seq[0] == (uint32_t)n && rs.next_seq[1] == (uint32_t)n &&
	         rs.next_seq[2] == (uint32_t)n);
	TT_CHECK(rp.done == 2 * n);
	TT_CHECK(rs.closed == 0 && rp.closed == 0);
	if (rs.closed || rp.closed)
		fprintf(stderr, "closed: sub '%s' pub '%s'\n", rs.close_msg,
		        rp.close_msg);
	disconnect_wait(pub, &rp);
	disconnect_wait(sub, &rs);
	client_free(pub);
	client_free(sub);
}

/* ---- tests ---- */

static void test_tcp_refused(void)
{
	struct tr_ctx *ctx = make_ctx("tcp", dead_port, NULL, NULL, 0);
	struct client *c;
	struct rec r;
	char want[120];

	c = make_client(ctx, &r, "x", MQTT_V311, 1);
	TT_CHECK(client_connect(c) == 0);
	TT_CHECK(wait_for(&r.closed, 1));
	TT_CHECK(r.close_err == CLIENT_ECONNECT);
	snprintf(want, sizeof(want),
	         "connect to 127.0.0.1:%u: Connection refused",
	         (unsigned)dead_port);
	TT_CHECK(strcmp(r.close_msg, want) == 0);
	if (strcmp(r.close_msg, want) != 0)
		fprintf(stderr, "got: %s\n", r.close_msg);
	client_free(c);
	tr_ctx_del(ctx);
}

static void test_bad_config_messages(void)
{
	struct tr_config tc;
	struct tr_ctx *ctx;
	char err[300];

	tr_config_init(&tc);
	tc.host = "127.0.0.1";
	tc.port = tls_port;
	tc.cafile = "/nonexistent/ca.pem";
	TT_CHECK(tr_ctx_new(&ctx, &tr_tls_ops, &tc, err, sizeof(err)) ==
	         TR_ECONFIG);
	TT_CHECK(strcmp(err, "TLS: cannot read CA file '/nonexistent/ca.pem':"
	                     " No such file or directory; check --cafile") ==
	         0);
	tc.cafile = NULL;
	tc.host = "no-such-host.invalid";
	TT_CHECK(tr_ctx_new(&ctx, &tr_tcp_ops, &tc, err, sizeof(err)) ==
	         TR_ERESOLVE);
	TT_CHECK(strncmp(err, "cannot resolve 'no-such-host.invalid': ", 39) ==
	         0);
	TT_CHECK(tr_find("tcp") == &tr_tcp_ops && tr_find("tls") == &tr_tls_ops);
	TT_CHECK(tr_find("udp") == NULL);
}

static void test_tcp_pubsub(void)
{
	static const size_t sizes[] = { 16, 100, 1000 };
	struct tr_ctx *ctx = make_ctx("tcp", tcp_port, NULL, NULL, 0);

	pubsub(ctx, ctx, 200, sizes, 3, "mqb/tcp");
	tr_ctx_del(ctx);
}

static void test_v5_receive_max(void)
{
	struct tr_ctx *ctx = make_ctx("tcp", tcp_port, NULL, NULL, 0);
	struct rec r;
	struct client *c = make_client(ctx, &r, "mqb-v5", MQTT_V5, 1);

	TT_CHECK(connect_wait(c, &r));
	/* max_inflight_messages 100 is the broker's Receive Maximum */
	TT_CHECK(r.mqtt.receive_max == 100);
	TT_CHECK(r.mqtt.window == 100 && client_window(c) == 100);
	TT_CHECK(r.info.t_start <= r.info.t_transport_ready &&
	         r.info.t_transport_ready <= r.mqtt.t_connack);
	TT_CHECK(strcmp(r.tri.transport, "tcp") == 0);
	disconnect_wait(c, &r);
	client_free(c);
	tr_ctx_del(ctx);
}

static void tls_version_case(int version, const char *want)
{
	struct tr_ctx *ctx = make_ctx("tls", tls_port, ca_pem, NULL, version);
	struct rec r;
	struct client *c = make_client(ctx, &r, "mqb-tls", MQTT_V311, 1);

	TT_CHECK(connect_wait(c, &r));
	TT_CHECK(strcmp(r.tri.version, want) == 0);
	TT_CHECK(r.tri.cipher[0] != 0);
	TT_CHECK(r.info.tls_resumed == 0);
	TT_CHECK(r.info.t_transport_connected >= r.info.t_start &&
	         r.info.t_transport_ready > r.info.t_transport_connected &&
	         r.mqtt.t_connack > r.info.t_transport_ready);
	printf("     %s %s: tcp %.3f ms, tls %.3f ms, mqtt %.3f ms\n", want,
	       r.tri.cipher,
	       (double)(r.info.t_transport_connected - r.info.t_start) / 1e6,
	       (double)(r.info.t_transport_ready -
	                r.info.t_transport_connected) / 1e6,
	       (double)(r.mqtt.t_connack - r.info.t_transport_ready) / 1e6);
	/* a reconnect of the same client resumes the TLS session */
	disconnect_wait(c, &r);
	TT_CHECK(connect_wait(c, &r));
	TT_CHECK(r.info.tls_resumed == 1);
	TT_CHECK(r.tri.resumed == 1);
	disconnect_wait(c, &r);
	TT_CHECK(connect_wait(c, &r));
	TT_CHECK(r.info.tls_resumed == 1);
	disconnect_wait(c, &r);
	client_free(c);
	tr_ctx_del(ctx);
}

static void test_tls13_connect_resume(void)
{
	tls_version_case(TR_TLS_1_3, "TLS1.3");
}

static void test_tls12_connect_resume(void)
{
	tls_version_case(TR_TLS_1_2, "TLS1.2");
}

static void test_tls_pubsub(void)
{
	static const size_t sizes[] = { 16, 5000, 20000 };
	struct tr_ctx *tls = make_ctx("tls", tls_port, ca_pem, "localhost", 0);
	struct tr_ctx *tcp = make_ctx("tcp", tcp_port, NULL, NULL, 0);

	pubsub(tls, tcp, 50, sizes, 3, "mqb/tls1");
	pubsub(tcp, tls, 50, sizes, 3, "mqb/tls2");
	tr_ctx_del(tls);
	tr_ctx_del(tcp);
}

static void tls_fail_case(const char *cafile, const char *name, int err,
                          const char *want)
{
	struct tr_ctx *ctx = make_ctx("tls", tls_port, cafile, name, 0);
	struct rec r;
	struct client *c = make_client(ctx, &r, "mqb-bad", MQTT_V311, 1);

	TT_CHECK(client_connect(c) == 0);
	TT_CHECK(wait_for(&r.closed, 1));
	TT_CHECK(r.connected == 0);
	TT_CHECK(r.close_err == err);
	TT_CHECK(strcmp(r.close_msg, want) == 0);
	if (strcmp(r.close_msg, want) != 0)
		fprintf(stderr, "got:  %s\nwant: %s\n", r.close_msg, want);
	client_free(c);
	tr_ctx_del(ctx);
}

static void test_tls_wrong_ca(void)
{
	char want[200];

	snprintf(want, sizeof(want),
	         "TLS handshake with 127.0.0.1:%u: certificate not trusted "
	         "(signer not found); check --cafile", (unsigned)tls_port);
	tls_fail_case(wrong_ca_pem, NULL, CLIENT_ETLS, want);
}

static void test_tls_name_mismatch(void)
{
	char want[200];

	snprintf(want, sizeof(want),
	         "TLS handshake with 127.0.0.1:%u: certificate name does not "
	         "match 'broker.example'", (unsigned)tls_port);
	tls_fail_case(ca_pem, "broker.example", CLIENT_ETLS, want);
	/* an IP that is not in the certificate */
	snprintf(want, sizeof(want),
	         "TLS handshake with 127.0.0.1:%u: certificate name does not "
	         "match '127.0.0.2'", (unsigned)tls_port);
	tls_fail_case(ca_pem, "127.0.0.2", CLIENT_ETLS, want);
}

static void test_tls_to_plain_port(void)
{
	char want[200];

	snprintf(want, sizeof(want),
	         "TLS handshake with 127.0.0.1:%u: connection reset by the "
	         "broker (is it a TLS port?)", (unsigned)tcp_port);
	{
		struct tr_ctx *ctx = make_ctx("tls", tcp_port, ca_pem, NULL, 0);
		struct rec r;
		struct client *c = make_client(ctx, &r, "x", MQTT_V311, 1);

		client_connect(c);
		TT_CHECK(wait_for(&r.closed, 1));
		TT_CHECK(r.close_err == CLIENT_ETLS);
		TT_CHECK(strcmp(r.close_msg, want) == 0);
		if (strcmp(r.close_msg, want) != 0)
			fprintf(stderr, "got: %s\n", r.close_msg);
		client_free(c);
		tr_ctx_del(ctx);
	}
}

static void test_keylog_written(void)
{
	struct stat st;
	FILE *f;
	char line[512];
	int secrets = 0;

	/* the TLS tests above ran with SSLKEYLOGFILE set */
	TT_CHECK(stat(keylog, &st) == 0 && st.st_size > 0);
	f = fopen(keylog, "r");
	TT_CHECK(f != NULL);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0 ||
		    strncmp(line, "CLIENT_RANDOM ", 14) == 0)
			secrets++;
	fclose(f);
	TT_CHECK(secrets >= 2); /* TLS 1.3 and 1.2 connections */
}

static void test_persistent_session(void)
{
	struct tr_ctx *ctx = make_ctx("tcp", tcp_port, NULL, NULL, 0);
	struct rec rs, rp;
	struct client *sub = make_client(ctx, &rs, "mqb-persist", MQTT_V5, 0);
	struct client *pub = make_client(ctx, &rp, "mqb-p2", MQTT_V311, 1);
	struct mqtt_topic_filter f;
	int i;

	TT_CHECK(connect_wait(sub, &rs));
	memset(&f, 0, sizeof(f));
	f.filter.data = (const uint8_t *)"mqb/persist";
	f.filter.len = 11;
	f.opts.qos = 1;
	TT_CHECK(client_subscribe(sub, &f, 1, NULL) > 0);
	TT_CHECK(wait_for(&rs.subacks, 1));
	disconnect_wait(sub, &rs);
	/* published while the subscriber is away: the broker queues them */
	TT_CHECK(connect_wait(pub, &rp));
	for (i = 0; i < 5; i++) {
		char p[16];
		int n = snprintf(p, sizeof(p), "1 %d ", i);

		TT_CHECK(client_publish(pub, (const uint8_t *)"mqb/persist", 11,
		                        (const uint8_t *)p, (size_t)n, 1, 0,
		                        NULL) > 0);
	}
	TT_CHECK(wait_for(&rp.done, 5));
	TT_CHECK(connect_wait(sub, &rs));
	TT_CHECK(rs.session_present == 1);
	TT_CHECK(wait_for(&rs.messages, 5));
	TT_CHECK(rs.order_ok && rs.next_seq[1] == 5);
	disconnect_wait(sub, &rs);
	disconnect_wait(pub, &rp);
	client_free(sub);
	client_free(pub);
	tr_ctx_del(ctx);
}

/*
 * Final byte counts in on_closed, on real sockets: after our graceful
 * close they include the DISCONNECT (and with TLS the close_notify record);
 * after the broker drops us (a second client takes the client id over)
 * they include everything read up to the end. Plain TCP has no framing, so
 * there wire bytes equal MQTT bytes exactly.
 */
static void stats_close_case(const char *tr, uint16_t port, const char *ca)
{
	struct tr_ctx *ctx = make_ctx(tr, port, ca, NULL, 0);
	struct rec r, r2;
	struct client *c = make_client(ctx, &r, "mqb-stats", MQTT_V311, 1);
	struct client *c2;
	struct client_stats before;
	const struct client_stats *st = &r.st;
	int tls = strcmp(tr, "tls") == 0, i;

	/* graceful */
	TT_CHECK(connect_wait(c, &r));
	for (i = 0; i < 3; i++)
		TT_CHECK(client_publish(c, (const uint8_t *)"mqb/stats", 9,
		                        (const uint8_t *)"1 0 ", 4, 1, 0,
		                        NULL) > 0);
	TT_CHECK(wait_for(&r.done, 3));
	before = *client_stats(c);
	TT_CHECK(before.wire_out > 0 && before.wire_in > 0);
	disconnect_wait(c, &r);
	TT_CHECK(st->out_by_type[MQTT_DISCONNECT] == 1);
	TT_CHECK(st->bytes_unsent == 0);
	if (tls) {
		/* TLS 1.3 records: 5 + 2 + 1 + 16 bytes for DISCONNECT, and as
		 * many for the close_notify alert */
		TT_CHECK(st->wire_out - before.wire_out >= 48);
		TT_CHECK(st->wire_in > st->bytes_in);
	} else {
		TT_CHECK(st->wire_out - before.wire_out == 2);
		TT_CHECK(st->wire_out == st->bytes_out);
		TT_CHECK(st->wire_in == st->bytes_in);
	}
	printf("     %s graceful: wire %llu out, %llu in; mqtt %llu out, "
	       "%llu in\n", tr, (unsigned long long)st->wire_out,
	       (unsigned long long)st->wire_in,
	       (unsigned long long)st->bytes_out,
	       (unsigned long long)st->bytes_in);

	/* lost: counts add up over both connections */
	before = *client_stats(c);
	TT_CHECK(connect_wait(c, &r));
	c2 = make_client(ctx, &r2, "mqb-stats", MQTT_V311, 1);
	TT_CHECK(connect_wait(c2, &r2));
	TT_CHECK(wait_for(&r.closed, 2));
	TT_CHECK(r.close_err == CLIENT_ECLOSED);
	TT_CHECK(st->wire_in > before.wire_in);
	TT_CHECK(st->wire_out > before.wire_out);
	TT_CHECK(st->connects == 2);
	if (tls) {
		TT_CHECK(st->wire_in - before.wire_in >
		         st->bytes_in - before.bytes_in);
	} else {
		TT_CHECK(st->wire_out == st->bytes_out - st->bytes_unsent);
		TT_CHECK(st->wire_in == st->bytes_in);
	}
	disconnect_wait(c2, &r2);
	client_free(c2);
	client_free(c);
	tr_ctx_del(ctx);
}

static void test_stats_after_close(void)
{
	stats_close_case("tcp", tcp_port, NULL);
	stats_close_case("tls", tls_port, ca_pem);
}

static void test_hostile_io(void)
{
	static const size_t sizes[] = { 1, 9, 300, 4000, 17000, 65000 };
	struct tr_ctx *tls = make_ctx("tls", tls_port, ca_pem, NULL, 0);
	struct tr_ctx *tcp = make_ctx("tcp", tcp_port, NULL, NULL, 0);

	/* the switch MQB_HOSTILE_IO=1 turns on, seeded */
	tr_hostile_set(1, 7);
	TT_CHECK(tr_hostile());
	pubsub(tcp, tcp, 60, sizes, 6, "mqb/hostile1");
	pubsub(tls, tls, 60, sizes, 6, "mqb/hostile2");
	tr_hostile_set(0, 0);
	tr_ctx_del(tls);
	tr_ctx_del(tcp);
}

/* The switch itself: read from the environment once, in a fresh process. */
static int hostile_in_child(const char *value)
{
	pid_t pid = fork();
	int st = 0;

	if (pid == 0) {
		if (value)
			setenv("MQB_HOSTILE_IO", value, 1);
		else
			unsetenv("MQB_HOSTILE_IO");
		tr_hostile_set(-1, 0); /* forget what the parent read */
		_exit(tr_hostile() ? 10 : 20);
	}
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_hostile_env(void)
{
	TT_CHECK(hostile_in_child("1") == 10);
	TT_CHECK(hostile_in_child("0") == 20);
	TT_CHECK(hostile_in_child(NULL) == 20);
}

static long rss_kib(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_many_idle_connections(void)
{
	enum { N = 500 };
	static struct rec recs[N];
	static struct client *cs[N];
	struct tr_ctx *ctx = make_ctx("tcp", tcp_port, NULL, NULL, 0);
	long before = rss_kib(), after;
	int i, connected = 0;

	for (i = 0; i < N; i++) {
		char id[24];

		snprintf(id, sizeof(id), "mqb-idle-%d", i);
		cs[i] = make_client(ctx, &recs[i], id, MQTT_V311, 1);
		TT_CHECK(client_connect(cs[i]) == 0);
	}
	{
		int64_t end = evloop_clock_ns() + 20 * EV_NS_PER_SEC;

		while (connected < N && evloop_clock_ns() < end) {
			evloop_run_once(loop, 5 * EV_NS_PER_MS);
			for (connected = 0, i = 0; i < N; i++)
				connected += recs[i].connected;
		}
	}
	TT_CHECK(connected == N);
	after = rss_kib();
	printf("     %d idle connections: %.1f KiB of process memory each "
	       "(RSS delta; includes ASan overhead in asan builds)\n", N,
	       (double)(after - before) / N);
	for (i = 0; i < N; i++) {
		TT_CHECK(recs[i].closed == 0);
		client_free(cs[i]);
	}
	tr_ctx_del(ctx);
}

/* ---- our own server side: tr_listen, tr_accept ---- */

/* A context for listening on 127.0.0.1:port ("tcp" or "tls"; TLS with
 * the test's server certificate). */
static struct tr_ctx *make_server_ctx(const char *tr, uint16_t port,
                                      int tls_version)
{
	struct tr_config tc;

	tr_config_init(&tc);
	tc.server = 1;
	tc.certfile = server_pem;
	tc.keyfile = server_key;
	return ctx_on(tr, &tc, port, tls_version);
}

/* Wait up to 10 ms for what the connections (or the listener) ask for;
 * any of them may be NULL. */
static void poll_ends(struct tr_conn *a, struct tr_conn *b,
                      struct tr_listener *l)
{
	struct pollfd p[3];
	nfds_t n = 0;

	/* EV_READ and EV_WRITE are POLLIN and POLLOUT */
	if (a && a->fd >= 0)
		p[n++] = (struct pollfd){ a->fd, (short)tr_events(a), 0 };
	if (b && b->fd >= 0)
		p[n++] = (struct pollfd){ b->fd, (short)tr_events(b), 0 };
	if (l)
		p[n++] = (struct pollfd){ l->fd, POLLIN, 0 };
	poll(p, n, 10);
}

/*
 * Our client (cctx, resuming with sess) to our listener l: open, accept,
 * and both handshakes until each is done or failed, or 5 s pass. The
 * server's result goes to *rs (TR_AGAIN if it did not finish, e.g.
 * because the client gave up first); the client's is returned.
 */
static int connect_pair(struct tr_ctx *cctx, struct tr_session *sess,
                        struct tr_listener *l, struct tr_conn **cli,
                        struct tr_conn **srv, int *rs)
{
	int64_t end = evloop_clock_ns() + 5 * EV_NS_PER_SEC;
	int rc = TR_AGAIN, r;

	*srv = NULL;
	*rs = TR_AGAIN;
	TT_CHECK(tr_open(cctx, sess, evloop_clock_ns(), cli) == 0);
	while (evloop_clock_ns() < end) {
		if (rc == TR_AGAIN)
			rc = tr_handshake(*cli, evloop_clock_ns());
		if (!*srv) {
			r = tr_accept(l, evloop_clock_ns(), srv);
			TT_CHECK(r == 0 || r == TR_AGAIN);
		}
		if (*srv && *rs == TR_AGAIN)
			*rs = tr_handshake(*srv, evloop_clock_ns());
		if (rc != TR_AGAIN && (*rs != TR_AGAIN || rc < 0))
			break;
		poll_ends(*cli, *srv, *srv ? NULL : l);
	}
	return rc;
}

/* Move up to len bytes through tr_send/tr_recv; bytes moved (0 when it
 * would block), the stream being the one main stream. */
static size_t send_some(struct tr_conn *c, const uint8_t *b, size_t len)
{
	ssize_t n;

	if (len == 0)
		return 0;
	n = tr_send(c, TR_STREAM_MAIN, b, len, evloop_clock_ns());
	TT_CHECK(n > 0 || n == TR_AGAIN);
	return n > 0 ? (size_t)n : 0;
}

static size_t recv_some(struct tr_conn *c, uint8_t *b, size_t len)
{
	int64_t sid = -1;
	ssize_t n;

	if (len == 0)
		return 0;
	n = tr_recv(c, &sid, b, len, evloop_clock_ns());
	TT_CHECK(n > 0 || n == TR_AGAIN);
	if (n > 0)
		TT_CHECK(sid == TR_STREAM_MAIN);
	return n > 0 ? (size_t)n : 0;
}

/*
 * The client writes `total` patterned bytes, the server writes back what
 * it reads, the client reads it all back: every byte, in order, both ways.
 */
static void echo(struct tr_conn *cli, struct tr_conn *srv, size_t total)
{
	static uint8_t out[1 << 18], mid[1 << 18], back[1 << 18];
	size_t sent = 0, in = 0, echoed = 0, got = 0, i;
	int64_t end = evloop_clock_ns() + 10 * EV_NS_PER_SEC;

	TT_CHECK(total <= sizeof(out));
	for (i = 0; i < total; i++)
		out[i] = (uint8_t)(i * 131 + i / 251);
	while (got < total && evloop_clock_ns() < end) {
		sent += send_some(cli, out + sent, total - sent);
		in += recv_some(srv, mid + in, total - in);
		echoed += send_some(srv, mid + echoed, in - echoed);
		got += recv_some(cli, back + got, total - got);
		poll_ends(cli, srv, NULL);
	}
	TT_CHECK(got == total);
	TT_CHECK(memcmp(out, back, total) == 0);
}

/* Run tr_recv until it says TR_EOF (up to 5 s); 1 if it did. */
static int recv_eof(struct tr_conn *c, struct tr_conn *other)
{
	int64_t end = evloop_clock_ns() + 5 * EV_NS_PER_SEC;
	uint8_t b[256];
	int64_t sid;

	while (evloop_clock_ns() < end) {
		ssize_t n = tr_recv(c, &sid, b, sizeof(b), evloop_clock_ns());

		if (n == TR_EOF)
			return 1;
		TT_CHECK(n == TR_AGAIN);
		if (n != TR_AGAIN)
			return 0;
		poll_ends(c, other, NULL);
	}
	return 0;
}

/* End c's sending direction, calling again while it would block (up to
 * 5 s); 1 when done. */
static int shutdown_wait(struct tr_conn *c, struct tr_conn *other)
{
	int64_t end = evloop_clock_ns() + 5 * EV_NS_PER_SEC;
	int r;

	while ((r = tr_shutdown(c, TR_STREAM_MAIN, evloop_clock_ns())) ==
	               TR_AGAIN &&
	       evloop_clock_ns() < end)
		poll_ends(c, other, NULL);
	return r == 0;
}

/* Each side ends its sending direction; the other reads the end. */
static void end_both(struct tr_conn *cli, struct tr_conn *srv)
{
	TT_CHECK(shutdown_wait(cli, srv));
	TT_CHECK(recv_eof(srv, cli));
	TT_CHECK(shutdown_wait(srv, cli));
	TT_CHECK(recv_eof(cli, srv));
}

/*
 * Our client, our listener: connect, echo 200 KB both ways, end both
 * directions; TLS twice more with the same session cache, which the
 * server resumes from its ticket.
 */
static void server_case(const char *tr, int tls_version, const char *want)
{
	int tls = strcmp(tr, "tls") == 0, round, rs;
	uint16_t port = free_port();
	struct tr_ctx *sctx = make_server_ctx(tr, port, tls_version);
	struct tr_ctx *cctx = make_ctx(tr, port, tls ? ca_pem : NULL, NULL,
	                               tls_version);
	struct tr_session *sess = tr_session_new();
	struct tr_listener *l = NULL;
	struct tr_conn *cli, *srv;
	struct tr_info ci, si;
	char err[300];

	TT_CHECK(sctx && cctx);
	if (!sctx || !cctx)
		return;
	TT_CHECK(tr_listen(sctx, &l, err, sizeof(err)) == 0);
	TT_CHECK(tr_accept(l, evloop_clock_ns(), &srv) == TR_AGAIN);
	for (round = 0; round < (tls ? 3 : 1); round++) {
		TT_CHECK(connect_pair(cctx, sess, l, &cli, &srv, &rs) == 0);
		TT_CHECK(rs == 0 && srv && srv->server == 1 && cli->server == 0);
		if (!srv || rs != 0) {
			fprintf(stderr, "client: %s\nserver: %s\n",
			        tr_errmsg(cli), tr_errmsg(srv));
			tr_close(cli);
			tr_close(srv);
			break;
		}
		tr_get_info(cli, &ci);
		tr_get_info(srv, &si);
		TT_CHECK(strcmp(ci.version, want) == 0);
		TT_CHECK(strcmp(si.version, want) == 0);
		TT_CHECK(strcmp(ci.cipher, si.cipher) == 0);
		echo(cli, srv, 200000);
		/* TLS: the server's ticket came with the echo; the next
		 * connection resumes with it */
		TT_CHECK(ci.resumed == (round > 0) && si.resumed == (round > 0));
		end_both(cli, srv);
		TT_CHECK(cli->wire_out >= 200000 && srv->wire_in >= 200000);
		if (!tls)
			TT_CHECK(cli->wire_out == 200000 &&
			         srv->wire_out == 200000);
		tr_close(cli);
		tr_close(srv);
	}
	tr_listener_close(l);
	tr_session_del(sess);
	tr_ctx_del(cctx);
	tr_ctx_del(sctx);
}

static void test_server_tcp_echo(void)
{
	server_case("tcp", 0, "");
}

static void test_server_tls13_echo_resume(void)
{
	server_case("tls", TR_TLS_1_3, "TLS1.3");
}

static void test_server_tls12_echo_resume(void)
{
	server_case("tls", TR_TLS_1_2, "TLS1.2");
}

/* Short sends and receives, and would-blocks, on the server side too. */
static void test_server_hostile_io(void)
{
	tr_hostile_set(1, 11);
	server_case("tcp", 0, "");
	server_case("tls", TR_TLS_1_3, "TLS1.3");
	tr_hostile_set(0, 0);
}

/* A second listener on a port in use: TR_EEXIST and one clear line; a
 * context not made for a server, and a TLS server without a
 * certificate, are refused with their own lines. */
static void test_server_listen_errors(void)
{
	uint16_t port = free_port();
	struct tr_ctx *sctx = make_server_ctx("tcp", port, 0);
	struct tr_ctx *cctx = make_ctx("tcp", port, NULL, NULL, 0);
	struct tr_listener *l = NULL, *l2 = (struct tr_listener *)1;
	struct tr_config tc;
	struct tr_ctx *bad = NULL;
	char err[300], want[300];

	TT_CHECK(tr_listen(sctx, &l, err, sizeof(err)) == 0);
	TT_CHECK(tr_listen(sctx, &l2, err, sizeof(err)) == TR_EEXIST);
	TT_CHECK(l2 == NULL);
	snprintf(want, sizeof(want),
	         "listen on 127.0.0.1:%u: Address already in use (another "
	         "process has this port; stop it or choose another port)",
	         (unsigned)port);
	TT_CHECK(strcmp(err, want) == 0);
	if (strcmp(err, want) != 0)
		fprintf(stderr, "got: %s\n", err);
	TT_CHECK(strchr(err, '\n') == NULL);
	TT_CHECK(strcmp(tr_strerror(TR_EEXIST), "address in use") == 0);
	tr_listener_close(l);

	TT_CHECK(tr_listen(cctx, &l, err, sizeof(err)) == TR_ECONFIG);
	snprintf(want, sizeof(want), "listen on 127.0.0.1:%u: the context "
	         "was not made for a server", (unsigned)port);
	TT_CHECK(strcmp(err, want) == 0);

	tr_config_init(&tc);
	tc.host = "127.0.0.1";
	tc.port = port;
	tc.server = 1; /* and no certificate */
	TT_CHECK(tr_ctx_new(&bad, &tr_tls_ops, &tc, err, sizeof(err)) ==
	         TR_ECONFIG);
	snprintf(want, sizeof(want), "TLS server on 127.0.0.1:%u needs a "
	         "certificate and its key", (unsigned)port);
	TT_CHECK(strcmp(err, want) == 0);
	TT_CHECK(bad == NULL);
	tr_ctx_del(cctx);
	tr_ctx_del(sctx);
}

/* A TLS client that trusts another CA refuses our server; the server's
 * handshake fails too, once the client has gone. */
static void test_server_tls_wrong_ca(void)
{
	uint16_t port = free_port();
	struct tr_ctx *sctx = make_server_ctx("tls", port, 0);
	struct tr_ctx *cctx = make_ctx("tls", port, wrong_ca_pem, NULL, 0);
	struct tr_listener *l = NULL;
	struct tr_conn *cli, *srv;
	int64_t end;
	int rs;
	char err[300], want[300];

	TT_CHECK(tr_listen(sctx, &l, err, sizeof(err)) == 0);
	TT_CHECK(connect_pair(cctx, NULL, l, &cli, &srv, &rs) == TR_ECERT);
	snprintf(want, sizeof(want),
	         "TLS handshake with 127.0.0.1:%u: certificate not trusted "
	         "(signer not found); check --cafile", (unsigned)port);
	TT_CHECK(strcmp(tr_errmsg(cli), want) == 0);
	if (strcmp(tr_errmsg(cli), want) != 0)
		fprintf(stderr, "got: %s\n", tr_errmsg(cli));
	tr_close(cli);
	TT_CHECK(srv != NULL);
	end = evloop_clock_ns() + 5 * EV_NS_PER_SEC;
	while (srv && rs == TR_AGAIN && evloop_clock_ns() < end) {
		poll_ends(srv, NULL, NULL);
		rs = tr_handshake(srv, evloop_clock_ns());
	}
	TT_CHECK(rs < 0 && rs != TR_AGAIN);
	printf("     server side: %s\n", tr_errmsg(srv));
	tr_close(srv);
	tr_listener_close(l);
	tr_ctx_del(cctx);
	tr_ctx_del(sctx);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "/tmp/mqb-test-transport-XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	/* before the first TLS handshake: GnuTLS reads it then */
	snprintf(keylog, sizeof(keylog), "%s/keys.log", dir);
	setenv("SSLKEYLOGFILE", keylog, 1);
	make_certs();
	start_broker();
	loop = evloop_new();

	TT_RUN(test_tcp_refused);
	TT_RUN(test_bad_config_messages);
	TT_RUN(test_tcp_pubsub);
	TT_RUN(test_v5_receive_max);
	TT_RUN(test_tls13_connect_resume);
	TT_RUN(test_tls12_connect_resume);
	TT_RUN(test_tls_pubsub);
	TT_RUN(test_tls_wrong_ca);
	TT_RUN(test_tls_name_mismatch);
	TT_RUN(test_tls_to_plain_port);
	TT_RUN(test_keylog_written);
	TT_RUN(test_persistent_session);
	TT_RUN(test_stats_after_close);
	TT_RUN(test_server_tcp_echo);
	TT_RUN(test_server_tls13_echo_resume);
	TT_RUN(test_server_tls12_echo_resume);
	TT_RUN(test_server_hostile_io);
	TT_RUN(test_server_listen_errors);
	TT_RUN(test_server_tls_wrong_ca);
	TT_RUN(test_hostile_env);
	TT_RUN(test_hostile_io);
	TT_RUN(test_many_idle_connections);

	TT_CHECK(evloop_io_count(loop) == 0);
	evloop_del(loop);
	stop_broker();
	return TT_DONE();
}
