/*
 * fuzz_quic.c: libFuzzer target for the QUIC transport's server side
 * (what the gateway runs) and its stream handling, both ways.
 *
 * The first input byte picks the mode:
 *   even: datagrams. The rest is records [length: 2 bytes][bytes], each
 *         sent as one UDP datagram to a QUIC listener on loopback, which
 *         must take any of them (garbage, broken headers, Initials it
 *         cannot decrypt, short packets of unknown connections) without
 *         crashing, leaking or handing out a connection that has no news;
 *         whatever it hands out is served as the gateway would (new
 *         streams, reads, progress) and closed.
 *   odd:  streams. A real client completes a handshake with the listener
 *         (in this process, over loopback); the rest of the input is
 *         chopped into chunks sent on 1-3 client streams (chunk sizes,
 *         streams, FINs and the server's read sizes come from the input).
 *         The server echoes every byte back on the same stream. Checked:
 *         each stream delivers exactly the bytes sent, in order, then its
 *         EOF, in both directions; ACKs free what was sent (the client's
 *         stream buffers end empty).
 *
 * The server's certificate is made at start-up with GnuTLS (no key
 * material in the repository); the client skips verification. Every
 * packet stays on 127.0.0.1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "net/evloop.h"
#include "net/quic.h"
#include "net/transport.h"

#define CHECK(c)                                                             \
	do {                                                                 \
		if (!(c)) {                                                  \
			fprintf(stderr, "fuzz_quic: %s:%d: %s\n", __FILE__, \
			        __LINE__, #c);                               \
			abort();                                             \
		}                                                            \
	} while (0)

#define MAX_STREAMS 3
#define MAX_BYTES 65536 /* per stream, so a run stays short */

static struct tr_ctx *sctx, *cctx;
static struct tr_listener *lst;
static uint16_t port;
static char dir[64];

static void write_pem(const char *path, const gnutls_datum_t *d)
{
	FILE *f = fopen(path, "w");

	CHECK(f && fwrite(d->data, 1, d->size, f) == d->size);
	fclose(f);
}

/* A self-signed ECDSA certificate for 127.0.0.1, as files in dir. */
static void make_cert(void)
{
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
	gnutls_datum_t out;
	unsigned char serial[8] = { 1 }, ip[4] = { 127, 0, 0, 1 };
	char path[128];

	CHECK(gnutls_x509_privkey_init(&key) == 0);
	CHECK(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
	                                   GNUTLS_CURVE_TO_BITS(
		                                   GNUTLS_ECC_CURVE_SECP256R1),
	                                   0) == 0);
	CHECK(gnutls_x509_crt_init(&crt) == 0);
	CHECK(gnutls_x509_crt_set_version(crt, 3) == 0);
	CHECK(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) == 0);
	CHECK(gnutls_x509_crt_set_activation_time(crt, 1) == 0);
	CHECK(gnutls_x509_crt_set_expiration_time(crt, 0x7fffffff) == 0);
	CHECK(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME,
	                                    0, "fuzz", 4) == 0);
	CHECK(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS,
	                                           ip, 4,
	                                           GNUTLS_FSAN_SET) == 0);
	CHECK(gnutls_x509_crt_set_key(crt, key) == 0);
	CHECK(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) ==
	      0);
	CHECK(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out) ==
	      0);
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	write_pem(path, &out);
	gnutls_free(out.data);
	CHECK(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out) == 0);
	snprintf(path, sizeof(path), "%s/cert.pem", dir);
	write_pem(path, &out);
	gnutls_free(out.data);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct tr_config cfg;
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	char err[300], cert[128], key[128];

	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "/tmp/fuzz_quic.XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	make_cert();
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	tr_config_init(&cfg);
	cfg.host = "127.0.0.1";
	cfg.port = 1; /* replaced below: the listener takes a free port */
	cfg.server = 1;
	cfg.certfile = cert;
	cfg.keyfile = key;
	/* a short idle timeout, so half-open connections go quickly */
	cfg.idle_timeout_ns = 200 * EV_NS_PER_MS;
	CHECK(tr_ctx_new(&sctx, &tr_quic_ops, &cfg, err, sizeof(err)) == 0);
	/* bind to port 0: the kernel picks a free one */
	((struct sockaddr_in *)&sctx->addr)->sin_port = 0;
	CHECK(tr_listen(sctx, &lst, err, sizeof(err)) == 0);
	CHECK(getsockname(lst->fd, (struct sockaddr *)&sa, &len) == 0);
	port = ntohs(sa.sin_port);
	tr_config_init(&cfg);
	cfg.host = "127.0.0.1";
	cfg.port = port;
	cfg.insecure = 1;
	cfg.no_resume = 1;
	cfg.connect_timeout_ns = 2 * EV_NS_PER_SEC;
	CHECK(tr_ctx_new(&cctx, &tr_quic_ops, &cfg, err, sizeof(err)) == 0);
	unlink(cert);
	unlink(key);
	rmdir(dir);
	return 0;
}

/* ---- the server side, as the gateway drives it ---- */

struct echo {
	int64_t sid;
	uint8_t buf[4096];
	size_t len, off;
	int eof, fin_sent;
};

struct sconn {
	struct tr_conn *tc;
	struct echo streams[8];
	int n;
};

static struct sconn servers[16];
static int n_servers;
static size_t read_size = 1000;

static struct sconn *server_of(struct tr_conn *tc)
{
	int i;

	for (i = 0; i < n_servers; i++)
		if (servers[i].tc == tc)
			return &servers[i];
	return NULL;
}

/* Serve one server-side connection: new streams, echo, progress. */
static void serve(struct sconn *s)
{
	int64_t sid, now = evloop_clock_ns();
	int i;

	while (tr_accept_stream(s->tc, &sid) == 0) {
		if (s->n < 8) {
			memset(&s->streams[s->n], 0, sizeof(s->streams[0]));
			s->streams[s->n++].sid = sid;
		}
	}
	for (i = 0; i < s->n; i++) {
		struct echo *e = &s->streams[i];

		for (;;) {
			ssize_t n;

			while (e->off < e->len) {
				n = tr_send(s->tc, e->sid, e->buf + e->off,
				            e->len - e->off, now);
				if (n <= 0)
					break;
				e->off += (size_t)n;
			}
			if (e->off < e->len || e->eof)
				break;
			e->len = e->off = 0;
			sid = e->sid;
			n = tr_recv(s->tc, &sid, e->buf, read_size, now);
			if (n == TR_EOF) {
				e->eof = 1;
				break;
			}
			if (n <= 0)
				break;
			CHECK(sid == e->sid);
			e->len = (size_t)n;
		}
		if (e->eof && e->off == e->len && !e->fin_sent &&
		    tr_shutdown(s->tc, e->sid, now) == 0)
			e->fin_sent = 1;
	}
	(void)tr_progress(s->tc, now);
	if (tr_expiry(s->tc) <= now)
		(void)tr_on_expiry(s->tc, now);
}

static void server_round(void)
{
	struct tr_conn *tc;

	while (tr_accept(lst, evloop_clock_ns(), &tc) == 0) {
		struct sconn *s = server_of(tc);

		if (!s) {
			CHECK(tr_take_notes(tc) & TR_NOTE_NEW);
			if (n_servers == 16) {
				tr_close(tc);
				continue;
			}
			s = &servers[n_servers++];
			memset(s, 0, sizeof(*s));
			s->tc = tc;
		}
		serve(s);
	}
	for (int i = 0; i < n_servers; i++)
		serve(&servers[i]);
}

static void servers_close(void)
{
	int i;

	for (i = 0; i < n_servers; i++)
		tr_close(servers[i].tc);
	n_servers = 0;
}

/* ---- mode 0: datagrams ---- */

static void run_datagrams(const uint8_t *d, size_t n)
{
	struct sockaddr_in to;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	size_t off = 0;

	CHECK(fd >= 0);
	memset(&to, 0, sizeof(to));
	to.sin_family = AF_INET;
	to.sin_port = htons(port);
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while (off + 2 <= n) {
		size_t len = (size_t)d[off] << 8 | d[off + 1];

		off += 2;
		if (len > n - off)
			len = n - off;
		(void)sendto(fd, d + off, len, 0, (struct sockaddr *)&to,
		             sizeof(to));
		off += len;
		server_round();
	}
	server_round();
	close(fd);
	servers_close();
}

/* ---- mode 1: streams ---- */

struct cstream {
	int64_t sid;
	uint8_t sent[MAX_BYTES], got[MAX_BYTES];
	size_t n_sent, n_got;
	int fin, eof;
};

static struct cstream cs[MAX_STREAMS];

static int client_round(struct tr_conn *c, int ns)
{
	int64_t now = evloop_clock_ns();
	int i, r;

	r = tr_progress(c, now);
	if (r < 0)
		return r;
	if (tr_expiry(c) <= now && (r = tr_on_expiry(c, now)) < 0)
		return r;
	for (;;) {
		uint8_t buf[2048];
		int64_t sid = -1;
		ssize_t n = tr_recv(c, &sid, buf, sizeof(buf), now);

		if (n == TR_AGAIN)
			break;
		for (i = 0; i < ns && cs[i].sid != sid; i++)
			;
		CHECK(i < ns);
		if (n == TR_EOF) {
			CHECK(!cs[i].eof && cs[i].fin);
			cs[i].eof = 1;
			continue;
		}
		if (n < 0)
			return (int)n;
		CHECK(cs[i].n_got + (size_t)n <= cs[i].n_sent);
		CHECK(memcmp(cs[i].sent + cs[i].n_got, buf, (size_t)n) == 0);
		memcpy(cs[i].got + cs[i].n_got, buf, (size_t)n);
		cs[i].n_got += (size_t)n;
	}
	return 0;
}

static void run_streams(const uint8_t *d, size_t n)
{
	struct tr_conn *c;
	int ns, i, r = TR_AGAIN, rounds;
	size_t off = 0;
	int64_t deadline = evloop_clock_ns() + 3 * EV_NS_PER_SEC;

	if (n < 2)
		return;
	ns = 1 + d[0] % MAX_STREAMS;
	read_size = 1 + (size_t)d[1] * 16;
	d += 2;
	n -= 2;
	memset(cs, 0, sizeof(cs));
	CHECK(tr_open(cctx, NULL, evloop_clock_ns(), &c) == 0);
	while (evloop_clock_ns() < deadline) {
		r = tr_handshake(c, evloop_clock_ns());
		if (r == 0 || (r < 0 && r != TR_AGAIN))
			break;
		server_round();
	}
	CHECK(r == 0);
	for (i = 0; i < ns; i++)
		CHECK(tr_stream_open(c, &cs[i].sid) == 0);
	/* chunks: [stream + FIN bit][length][bytes] */
	while (off + 2 <= n) {
		int s = d[off] % ns, fin = d[off] & 0x80;
		size_t len = d[off + 1], taken = 0;

		off += 2;
		if (len > n - off)
			len = n - off;
		if (cs[s].n_sent + len > MAX_BYTES)
			len = MAX_BYTES - cs[s].n_sent;
		if (cs[s].fin)
			len = 0, fin = 0;
		memcpy(cs[s].sent + cs[s].n_sent, d + off, len);
		rounds = 0;
		while (taken < len && rounds++ < 1000) {
			ssize_t w = tr_send(c, cs[s].sid, d + off + taken,
			                    len - taken, evloop_clock_ns());

			if (w > 0) {
				/* the echo may come back within this loop */
				taken += (size_t)w;
				cs[s].n_sent += (size_t)w;
			}
			server_round();
			CHECK(client_round(c, ns) == 0);
		}
		CHECK(taken == len);
		off += len;
		if (fin) {
			CHECK(tr_shutdown(c, cs[s].sid, evloop_clock_ns()) == 0);
			cs[s].fin = 1;
		}
	}
	for (i = 0; i < ns; i++) {
		if (!cs[i].fin) {
			CHECK(tr_shutdown(c, cs[i].sid, evloop_clock_ns()) == 0);
			cs[i].fin = 1;
		}
	}
	/* everything comes back, then every stream's EOF */
	while (evloop_clock_ns() < deadline) {
		int done = 1;

		server_round();
		CHECK(client_round(c, ns) == 0);
		for (i = 0; i < ns; i++)
			done &= cs[i].eof && cs[i].n_got == cs[i].n_sent;
		if (done)
			break;
	}
	for (i = 0; i < ns; i++) {
		CHECK(cs[i].n_got == cs[i].n_sent);
		CHECK(cs[i].eof);
	}
	/* the server acknowledged all: the client holds no stream bytes */
	for (;;) {
		struct tr_stats st;

		tr_get_stats(c, &st);
		if (st.buffered == 0)
			break;
		CHECK(evloop_clock_ns() < deadline);
		server_round();
		CHECK(client_round(c, ns) == 0);
	}
	tr_close(c);
	server_round();
	servers_close();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		run_streams(data + 1, size - 1);
	else
		run_datagrams(data + 1, size - 1);
	return 0;
}
