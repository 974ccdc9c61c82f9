/*
 * linkem: userspace link emulator between two TAP devices.
 *
 * Frames read from tap-a go through direction a2b and are written to tap-b;
 * frames read from tap-b go through b2a to tap-a. Each direction is a
 * linkem_dir (queue.h): loss model, drop-tail queue,
 * serialisation at the rate, delay line with jitter. This file is only the
 * I/O around it: the TAP devices, one epoll loop woken by the TAPs, by a
 * timerfd armed at the next departure (absolute CLOCK_MONOTONIC time), and
 * by a signalfd; then the stats JSON on exit.
 *
 * Timing: the loop sleeps until shortly before the next departure, then
 * polls without sleeping until the departure is due, so the wake-up latency
 * of the timer does not land in the emulated delay. How early it wakes
 * follows the 90th percentile of the timer wake-up latencies seen, capped
 * at --spin-us (lead.h); nothing polls while no frame is held, so an
 * idle link costs no CPU. Every write is stamped and its lateness (write
 * time - scheduled departure) goes into the timing_error histogram of its
 * direction.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <linux/if_tun.h>

#include <jansson.h>

#include "util/afile.h"
#include "linkem/lead.h"
#include "linkem/queue.h"
#include "net/evloop.h"
#include "measure/stats.h"

#define PROG "linkem"
/* The kernel's limit for a TAP: 65535 minus the Ethernet header. */
#define TAP_MTU_MAX (65535 - 14)
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

/* Frames read from one TAP before the loop looks at departures again, so
 * a flood on one side cannot make the other side's departures late. */
#define READ_BURST 64
/* Default cap on the busy-poll window before a departure. Measured on a
 * 2-vCPU VM (scripts/bench-linkem.sh): timer wake-ups come 20-30 us late at
 * the median, 40 us at p90; polling the last ~45 us moves the median timing
 * error from ~30 us to ~0.2 us for about 15 % more CPU at 10k frames/s. */
#define DEFAULT_SPIN_US 50

/* ---- options ------------------------------------------------------------- */

/* Link options; each exists as --NAME, --a2b-NAME and --b2a-NAME. */
enum link_opt {
	LO_RATE,
	LO_DELAY,
	LO_JITTER,
	LO_LOSS, /* --loss and --loss-ge share this slot */
	LO_QPK,
	LO_QBYTES,
	LO_COUNT
};

enum scope { SC_BOTH, SC_A2B, SC_B2A, SC_COUNT };

static const char *const scope_prefix[SC_COUNT] = {"", "a2b-", "b2a-"};

/* Settings given on the command line at one scope. */
struct scoped {
	int set[LO_COUNT];
	int loss_kind_set[2]; /* [0] --loss, [1] --loss-ge */
	linkem_dir_config c;
};

struct opts {
	const char *tap_a, *tap_b;
	const char *stats;
	uint64_t seed;
	int mtu; /* 0 = leave the kernel's default */
	int64_t spin_ns;
	int rt_prio; /* 0 = normal scheduling, else SCHED_FIFO priority */
	struct scoped sc[SC_COUNT];
	linkem_dir_config dir[2]; /* resolved: [0] a2b, [1] b2a */
};

enum {
	OPT_TAP_A = 256,
	OPT_TAP_B,
	OPT_STATS,
	OPT_SEED,
	OPT_MTU,
	OPT_SPIN,
	OPT_RT_PRIO,
	OPT_HELP,
	OPT_VERSION,
	/* link options: OPT_LINK + 8 * kind + scope */
	OPT_LINK = 512,
};

/* The kinds of link option on the command line (loss and loss-ge differ
 * here, share LO_LOSS in the settings). */
enum link_kind {
	LK_RATE,
	LK_DELAY,
	LK_JITTER,
	LK_LOSS,
	LK_LOSS_GE,
	LK_QPK,
	LK_QBYTES,
	LK_COUNT
};

static const char *const kind_name[LK_COUNT] = {
	"rate", "delay-us", "jitter-us", "loss", "loss-ge", "queue-packets",
	"queue-bytes"};

static void die_usage(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

/* One line "linkem: error: ..." and exit 2. */
static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see linkem --help)\n", stderr);
	exit(EXIT_USAGE);
}

static void err_line(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static void err_line(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(void)
{
	printf(
"usage: linkem --tap-a NAME --tap-b NAME [LINK OPTIONS] [--stats FILE]\n"
"              [--seed N] [--mtu N] [--spin-us N] [--rt-prio N]\n"
"       linkem --help | --version\n"
"\n"
"Creates the TAP devices NAME (tap-a) and NAME (tap-b), prints \"ready\",\n"
"and emulates a link between them until SIGTERM or SIGINT: frames read\n"
"from tap-a go a2b to tap-b, frames from tap-b go b2a to tap-a.\n"
"\n"
"Link options apply to both directions; prefix with a2b- or b2a- for one\n"
"(e.g. --a2b-rate 1000000); a prefixed option wins over the plain one.\n"
"  --rate BITS_PER_S     serialisation rate of whole frames; 0 = unlimited\n"
"  --delay-us US         one-way propagation delay\n"
"  --jitter-us US        uniform jitter in [-US, +US], never reordering\n"
"  --loss P              Bernoulli loss probability, 0 <= P <= 1\n"
"  --loss-ge P,R,LB,LG   Gilbert-Elliott loss: P(good->bad), P(bad->good),\n"
"                        loss probability in bad, in good (excludes --loss)\n"
"  --queue-packets N     drop-tail limit on frames waiting (default 1000)\n"
"  --queue-bytes N       limit on their bytes (default 0 = none)\n"
"Other options:\n"
"  --stats FILE          write the stats JSON there on exit (atomically)\n"
"  --seed N              PRNG seed (default 1); each direction has its\n"
"                        own stream\n"
"  --mtu N               set the MTU of both TAPs (68..65521)\n"
"  --spin-us N           at most N us of polling without sleep before a\n"
"                        departure, to hide timer wake-up latency; the\n"
"                        window adapts to the latency seen; 0 = always\n"
"                        sleep (default %d)\n"
"  --rt-prio N           run under SCHED_FIFO priority N (1..99) so busy\n"
"                        traffic processes on the same CPUs do not delay\n"
"                        departures; 0 = normal scheduling (default)\n",
	       DEFAULT_SPIN_US);
}

/* Decimal digits only, value in [0, max]. 0 or -1. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A finite number in [lo, hi], nothing after it. 0 or -1. */
static int parse_num(const char *s, double lo, double hi, double *out)
{
	double v;
	char *end;

	if (!*s || *s == ' ' || *s == '\t')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

/* "P,R,LB,LG", each a probability. 0 or -1. */
static int parse_ge(const char *s, linkem_dir_config *c)
{
	double v[4];
	char tmp[256], *tok, *save = NULL, *p;
	const char *q;
	int n = 0, commas = 0;

	if (strlen(s) >= sizeof(tmp))
		return -1;
	strcpy(tmp, s);
	for (p = tmp; (tok = strtok_r(p, ",", &save)) != NULL; p = NULL) {
		if (n == 4 || parse_num(tok, 0, 1, &v[n]) != 0)
			return -1;
		n++;
	}
	/* strtok_r skips empty fields; count commas to reject "a,,b,c" */
	for (q = s; *q; q++)
		commas += *q == ',';
	if (n != 4 || commas != 3)
		return -1;
	c->ge_p = v[0];
	c->ge_r = v[1];
	c->ge_lb = v[2];
	c->ge_lg = v[3];
	return 0;
}

static void parse_link(struct opts *o, int kind, int scope, const char *arg)
{
	struct scoped *sc = &o->sc[scope];
	linkem_dir_config *c = &sc->c;
	const char *pre = scope_prefix[scope];
	uint64_t u;
	double d;

	switch (kind) {
	case LK_RATE:
		if (parse_u64(arg, LINKEM_RATE_MAX, &u) != 0)
			die_usage("--%srate '%s': give a whole number of bits "
			          "per second, 0 (unlimited) to %llu", pre,
			          arg, (unsigned long long)LINKEM_RATE_MAX);
		c->rate_bps = u;
		sc->set[LO_RATE] = 1;
		break;
	case LK_DELAY:
	case LK_JITTER:
		if (parse_num(arg, 0, LINKEM_DELAY_MAX_NS / 1000, &d) != 0)
			die_usage("--%s%s '%s': give microseconds, 0 to %lld",
			          pre, kind_name[kind], arg,
			          (long long)(LINKEM_DELAY_MAX_NS / 1000));
		if (kind == LK_DELAY) {
			c->delay_ns = (int64_t)(d * 1000 + 0.5);
			sc->set[LO_DELAY] = 1;
		} else {
			c->jitter_ns = (int64_t)(d * 1000 + 0.5);
			sc->set[LO_JITTER] = 1;
		}
		break;
	case LK_LOSS:
		if (parse_num(arg, 0, 1, &d) != 0)
			die_usage("--%sloss '%s': give a probability from 0 "
			          "to 1", pre, arg);
		c->loss_model = LINKEM_LOSS_BERNOULLI;
		c->loss_p = d;
		sc->loss_kind_set[0] = 1;
		sc->set[LO_LOSS] = 1;
		break;
	case LK_LOSS_GE:
		if (parse_ge(arg, c) != 0)
			die_usage("--%sloss-ge '%s': give P,R,LB,LG, four "
			          "probabilities from 0 to 1", pre, arg);
		c->loss_model = LINKEM_LOSS_GE;
		sc->loss_kind_set[1] = 1;
		sc->set[LO_LOSS] = 1;
		break;
	case LK_QPK:
		if (parse_u64(arg, UINT32_MAX, &u) != 0)
			die_usage("--%squeue-packets '%s': give a whole number "
			          "of frames, 0 to %u", pre, arg, UINT32_MAX);
		c->queue_packets = u;
		sc->set[LO_QPK] = 1;
		break;
	case LK_QBYTES:
		if (parse_u64(arg, UINT64_MAX / 2, &u) != 0)
			die_usage("--%squeue-bytes '%s': give a whole number "
			          "of bytes (0 = no byte limit)", pre, arg);
		c->queue_bytes = u;
		sc->set[LO_QBYTES] = 1;
		break;
	}
	if (sc->loss_kind_set[0] && sc->loss_kind_set[1])
		die_usage("--%sloss and --%sloss-ge exclude each other; give "
		          "one of them", pre, pre);
}

/* Per direction: the prefixed setting, else the plain one, else the
 * default. */
static void resolve(struct opts *o)
{
	int dir, i;

	for (dir = 0; dir < 2; dir++) {
		linkem_dir_config *c = &o->dir[dir];
		const struct scoped *own = &o->sc[dir == 0 ? SC_A2B : SC_B2A];
		const struct scoped *both = &o->sc[SC_BOTH];

		linkem_dir_config_default(c);
		for (i = 0; i < LO_COUNT; i++) {
			const linkem_dir_config *src;

			if (own->set[i])
				src = &own->c;
			else if (both->set[i])
				src = &both->c;
			else
				continue;
			switch (i) {
			case LO_RATE:
				c->rate_bps = src->rate_bps;
				break;
			case LO_DELAY:
				c->delay_ns = src->delay_ns;
				break;
			case LO_JITTER:
				c->jitter_ns = src->jitter_ns;
				break;
			case LO_LOSS:
				c->loss_model = src->loss_model;
				c->loss_p = src->loss_p;
				c->ge_p = src->ge_p;
				c->ge_r = src->ge_r;
				c->ge_lb = src->ge_lb;
				c->ge_lg = src->ge_lg;
				break;
			case LO_QPK:
				c->queue_packets = src->queue_packets;
				break;
			case LO_QBYTES:
				c->queue_bytes = src->queue_bytes;
				break;
			}
		}
		if (linkem_dir_config_check(c) != 0)
			die_usage("the %s link options are out of range",
			          dir == 0 ? "a2b" : "b2a");
	}
}

/* A name the kernel accepts for a new interface. */
static int valid_ifname(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n >= IFNAMSIZ || !strcmp(s, ".") || !strcmp(s, ".."))
		return 0;
	for (i = 0; i < n; i++)
		if (s[i] == '/' || s[i] == ':' || s[i] <= ' ' || s[i] == 127)
			return 0;
	/* a '%' would make the kernel pick a number for us */
	return strchr(s, '%') == NULL;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	static struct option lo[9 + LK_COUNT * SC_COUNT + 1];
	static char names[LK_COUNT * SC_COUNT][32];
	int n = 0, k, s, c;
	uint64_t u;

	lo[n++] = (struct option){"tap-a", required_argument, NULL, OPT_TAP_A};
	lo[n++] = (struct option){"tap-b", required_argument, NULL, OPT_TAP_B};
	lo[n++] = (struct option){"stats", required_argument, NULL, OPT_STATS};
	lo[n++] = (struct option){"seed", required_argument, NULL, OPT_SEED};
	lo[n++] = (struct option){"mtu", required_argument, NULL, OPT_MTU};
	lo[n++] = (struct option){"spin-us", required_argument, NULL, OPT_SPIN};
	lo[n++] = (struct option){"rt-prio", required_argument, NULL,
	                          OPT_RT_PRIO};
	lo[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
	lo[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
	for (k = 0; k < LK_COUNT; k++) {
		for (s = 0; s < SC_COUNT; s++) {
			char *nm = names[k * SC_COUNT + s];

			snprintf(nm, sizeof(names[0]), "%s%s", scope_prefix[s],
			         kind_name[k]);
			lo[n++] = (struct option){nm, required_argument, NULL,
			                          OPT_LINK + 8 * k + s};
		}
	}
	lo[n] = (struct option){NULL, 0, NULL, 0};

	memset(o, 0, sizeof(*o));
	o->seed = 1;
	o->spin_ns = (int64_t)DEFAULT_SPIN_US * 1000;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
		switch (c) {
		case OPT_TAP_A:
			o->tap_a = optarg;
			break;
		case OPT_TAP_B:
			o->tap_b = optarg;
			break;
		case OPT_STATS:
			if (!*optarg)
				die_usage("--stats needs a file name");
			o->stats = optarg;
			break;
		case OPT_SEED:
			if (parse_u64(optarg, UINT64_MAX, &o->seed) != 0)
				die_usage("--seed '%s': give a whole number",
				          optarg);
			break;
		case OPT_MTU:
			if (parse_u64(optarg, TAP_MTU_MAX, &u) != 0 || u < 68)
				die_usage("--mtu '%s': give 68 to %d", optarg,
				          TAP_MTU_MAX);
			o->mtu = (int)u;
			break;
		case OPT_SPIN:
			if (parse_u64(optarg, 1000000, &u) != 0)
				die_usage("--spin-us '%s': give 0 to 1000000",
				          optarg);
			o->spin_ns = (int64_t)u * 1000;
			break;
		case OPT_RT_PRIO:
			if (parse_u64(optarg, 99, &u) != 0)
				die_usage("--rt-prio '%s': give 0 (normal "
				          "scheduling) or 1 to 99", optarg);
			o->rt_prio = (int)u;
			break;
		case OPT_HELP:
			usage();
			exit(0);
		case OPT_VERSION:
			printf("linkem %s\n", LINKEM_VERSION);
			exit(0);
		case ':':
			die_usage("%s needs a value", argv[optind - 1]);
		case '?':
			die_usage("unknown option '%s'", argv[optind - 1]);
		default:
			if (c >= OPT_LINK && c < OPT_LINK + 8 * LK_COUNT) {
				parse_link(o, (c - OPT_LINK) / 8,
				           (c - OPT_LINK) % 8, optarg);
				break;
			}
			die_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
	if (!o->tap_a || !o->tap_b)
		die_usage("--tap-a and --tap-b are required");
	if (!valid_ifname(o->tap_a))
		die_usage("--tap-a '%s' is not a valid interface name "
		          "(1 to %d characters, no '/', ':', '%%' or spaces)",
		          o->tap_a, IFNAMSIZ - 1);
	if (!valid_ifname(o->tap_b))
		die_usage("--tap-b '%s' is not a valid interface name "
		          "(1 to %d characters, no '/', ':', '%%' or spaces)",
		          o->tap_b, IFNAMSIZ - 1);
	if (!strcmp(o->tap_a, o->tap_b))
		die_usage("--tap-a and --tap-b must differ");
	resolve(o);
}

/* ---- TAP devices --------------------------------------------------------- */

/*
 * Create the TAP device `name` (new, not persistent, no packet info header,
 * no offloads), set its MTU if mtu > 0 and bring it up. Returns the
 * non-blocking fd, or -1 after printing why.
 */
static int tap_open(const char *name, int mtu)
{
	struct ifreq ifr;
	int fd, sk = -1;

	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		err_line("cannot open /dev/net/tun: %s%s", strerror(errno),
		         errno == EACCES || errno == EPERM ?
		                 " (run as root or with CAP_NET_ADMIN)" :
		                 errno == ENOENT ?
		                 " (the kernel needs the tun module)" : "");
		return -1;
	}
	memset(&ifr, 0, sizeof(ifr));
	/* IFF_TUN_EXCL: fail instead of attaching to an existing device */
	ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		if (errno == EBUSY || errno == EEXIST || errno == EINVAL)
			err_line("cannot create TAP device %s: %s (is the name "
			         "taken? pick another or remove it)",
			         name, strerror(errno));
		else
			err_line("cannot create TAP device %s: %s%s", name,
			         strerror(errno),
			         errno == EPERM ? " (run as root or with "
			                          "CAP_NET_ADMIN)" : "");
		goto fail;
	}
	/* no offload flags: the kernel segments and checksums before the
	 * frame reaches us, so every frame is one wire frame */
	if (ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
		err_line("cannot disable offloads on %s: %s", name,
		         strerror(errno));
		goto fail;
	}
	sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sk < 0) {
		err_line("socket: %s", strerror(errno));
		goto fail;
	}
	if (mtu > 0) {
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
		ifr.ifr_mtu = mtu;
		if (ioctl(sk, SIOCSIFMTU, &ifr) < 0) {
			err_line("cannot set MTU %d on %s: %s", mtu, name,
			         strerror(errno));
			goto fail;
		}
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sk, SIOCGIFFLAGS, &ifr) < 0) {
		err_line("cannot read flags of %s: %s", name, strerror(errno));
		goto fail;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(sk, SIOCSIFFLAGS, &ifr) < 0) {
		err_line("cannot bring %s up: %s", name, strerror(errno));
		goto fail;
	}
	close(sk);
	return fd;

fail:
	if (sk >= 0)
		close(sk);
	close(fd);
	return -1;
}

/* The MTU of `name`, 0 if it cannot be read. */
static int tap_mtu(const char *name)
{
	struct ifreq ifr;
	int sk, mtu = 0;

	sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sk < 0)
		return 0;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sk, SIOCGIFMTU, &ifr) == 0)
		mtu = ifr.ifr_mtu;
	close(sk);
	return mtu;
}

/* ---- the emulator -------------------------------------------------------- */

struct side {
	linkem_dir dir;
	int in_fd, out_fd;
	const char *in_name;
	uint64_t write_errors, bytes_write_errors;
	uint64_t read_errors;
	int nomem_warned;
};

struct emu {
	struct opts *o;
	struct side side[2];
	int tap_a, tap_b;
	int ep, tfd, sfd;
	int64_t armed_ns; /* INT64_MIN: timer not armed */
	linkem_lead lead; /* how early to wake before a departure */
	struct stats_hist wake_latency; /* timer wake-ups: woke - armed time */
	int stop;         /* 1: signal, 2: a TAP went away */
	int64_t start_ns, end_ns;
	int mtu; /* of tap-a when created */
	uint8_t buf[LINKEM_FRAME_MAX + 1];
};

/* Write every frame of s that is due at now. */
static void flush_due(struct side *s, int64_t now)
{
	linkem_frame *f;
	int64_t t;
	ssize_t n;

	while ((f = linkem_dir_pop(&s->dir, now)) != NULL) {
		t = evloop_clock_ns();
		n = write(s->out_fd, f->data, f->len);
		if (n != (ssize_t)f->len) {
			/* e.g. the peer device is down; the frame is lost,
			 * as on a wire with nobody listening */
			s->write_errors++;
			s->bytes_write_errors += f->len;
		}
		stats_hist_add(&s->dir.timing_error,
		                (uint64_t)(t - f->depart_ns));
		linkem_frame_del(f);
	}
}

/*
 * Read up to READ_BURST frames from s's input TAP. Returns 0, or -1 when
 * the device is gone (the caller stops).
 */
static int read_burst(struct emu *e, struct side *s)
{
	ssize_t n;
	int i, rc;

	for (i = 0; i < READ_BURST; i++) {
		n = read(s->in_fd, e->buf, sizeof(e->buf));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			if (errno == EBADFD || errno == ENODEV ||
			    errno == ENXIO) {
				err_line("%s went away (%s); stopping",
				         s->in_name, strerror(errno));
				return -1;
			}
			s->read_errors++;
			return 0;
		}
		if (n == 0)
			return 0;
		if ((size_t)n > LINKEM_FRAME_MAX) {
			/* cannot happen with MTU <= 65535; count, not crash */
			s->read_errors++;
			continue;
		}
		rc = linkem_dir_input(&s->dir, e->buf, (size_t)n, evloop_clock_ns());
		if (rc == LINKEM_ERR_NOMEM && !s->nomem_warned) {
			err_line("out of memory queueing a frame; dropping "
			         "such frames");
			s->nomem_warned = 1;
		}
	}
	return 0;
}

/* Arm the timer for the absolute time at (CLOCK_MONOTONIC ns). */
static int arm_timer(struct emu *e, int64_t at)
{
	struct itimerspec its;

	memset(&its, 0, sizeof(its));
	if (at < 1)
		at = 1; /* 0 would disarm */
	its.it_value.tv_sec = at / 1000000000;
	its.it_value.tv_nsec = at % 1000000000;
	if (timerfd_settime(e->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return -1;
	e->armed_ns = at;
	return 0;
}

static int run(struct emu *e)
{
	struct epoll_event ev[8];
	int64_t now, next, target, lead, woke, sleep_target;
	int n, i, timeout;
	uint64_t expirations;
	struct signalfd_siginfo si;

	while (!e->stop) {
		now = evloop_clock_ns();
		flush_due(&e->side[0], now);
		flush_due(&e->side[1], now);
		next = linkem_dir_next(&e->side[0].dir);
		if (linkem_dir_next(&e->side[1].dir) < next)
			next = linkem_dir_next(&e->side[1].dir);
		timeout = -1;
		sleep_target = INT64_MIN;
		if (next != INT64_MAX) {
			now = evloop_clock_ns();
			lead = linkem_lead_get(&e->lead);
			if (next - now <= lead) {
				timeout = 0; /* due soon: poll, do not sleep */
			} else {
				target = next - lead;
				if (target != e->armed_ns &&
				    arm_timer(e, target) < 0) {
					err_line("timerfd_settime: %s",
					         strerror(errno));
					return -1;
				}
				sleep_target = target;
			}
		}
		n = epoll_wait(e->ep, ev, 8, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err_line("epoll_wait: %s", strerror(errno));
			return -1;
		}
		woke = evloop_clock_ns();
		for (i = 0; i < n; i++) {
			int fd = ev[i].data.fd;

			if (fd == e->tfd) {
				/* consume the expiry; the loop recomputes */
				if (read(e->tfd, &expirations,
				         sizeof(expirations)) < 0 &&
				    errno != EAGAIN)
					err_line("timerfd read: %s",
					         strerror(errno));
				/* a wake-up from a sleep that the timer ended
				 * tells how late timers wake us */
				if (sleep_target != INT64_MIN &&
				    e->armed_ns == sleep_target)
				{
					int64_t late = woke - sleep_target;

					linkem_lead_update(&e->lead, late);
					stats_hist_add(&e->wake_latency,
					                (uint64_t)late);
				}
				e->armed_ns = INT64_MIN;
			} else if (fd == e->sfd) {
				if (read(e->sfd, &si, sizeof(si)) > 0)
					e->stop = 1;
			} else {
				struct side *s = fd == e->tap_a ?
				                         &e->side[0] :
				                         &e->side[1];

				if (ev[i].events & (EPOLLERR | EPOLLHUP)) {
					err_line("%s went away; stopping",
					         s->in_name);
					e->stop = 2;
				} else if (read_burst(e, s) < 0) {
					e->stop = 2;
				}
			}
		}
	}
	return 0;
}

/* ---- stats JSON ---------------------------------------------------------- */

static json_t *dir_config_json(const linkem_dir_config *c)
{
	json_t *loss;

	switch (c->loss_model) {
	case LINKEM_LOSS_BERNOULLI:
		loss = json_pack("{s:s, s:f}", "model", "bernoulli", "p",
		                 c->loss_p);
		break;
	case LINKEM_LOSS_GE:
		loss = json_pack("{s:s, s:f, s:f, s:f, s:f}", "model",
		                 "gilbert-elliott", "p", c->ge_p, "r",
		                 c->ge_r, "lb", c->ge_lb, "lg", c->ge_lg);
		break;
	default:
		loss = json_pack("{s:s}", "model", "none");
		break;
	}
	return json_pack("{s:I, s:f, s:f, s:o, s:I, s:I}",
	                 "rate_bps", (json_int_t)c->rate_bps,
	                 "delay_us", (double)c->delay_ns / 1000.0,
	                 "jitter_us", (double)c->jitter_ns / 1000.0,
	                 "loss", loss,
	                 "queue_packets", (json_int_t)c->queue_packets,
	                 "queue_bytes", (json_int_t)c->queue_bytes);
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

/* count, mean and percentiles of h in microseconds; p999 only if asked
 * (the contract has it for the timing error only). */
static json_t *hist_json(const struct stats_hist *h, int with_p999)
{
	json_t *j;

	j = json_pack("{s:I, s:f, s:f, s:f, s:f}",
	              "count", (json_int_t)h->count,
	              "mean", stats_hist_mean(h) / 1000.0,
	              "p50", us(stats_hist_percentile(h, 50.0)),
	              "p90", us(stats_hist_percentile(h, 90.0)),
	              "p99", us(stats_hist_percentile(h, 99.0)));
	if (j && with_p999)
		json_object_set_new(j, "p999",
		                    json_real(us(stats_hist_percentile(h, 99.9))));
	if (j)
		json_object_set_new(j, "max", json_real(us(h->max)));
	return j;
}

static json_t *side_json(const struct side *s)
{
	const linkem_dir_stats *st = &s->dir.st;

	/* frames_out counts frames the other TAP took; write_errors those it
	 * refused; frames_pending those still held at exit, so that
	 * frames_in = frames_out + write_errors + dropped_loss +
	 * dropped_queue + frames_pending */
	return json_pack(
		"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o,"
		" s:I, s:I, s:I}",
		"frames_in", (json_int_t)st->frames_in,
		"bytes_in", (json_int_t)st->bytes_in,
		"frames_out", (json_int_t)(st->frames_out - s->write_errors),
		"bytes_out",
		(json_int_t)(st->bytes_out - s->bytes_write_errors),
		"dropped_loss", (json_int_t)st->dropped_loss,
		"dropped_queue", (json_int_t)st->dropped_queue,
		"bytes_dropped_loss", (json_int_t)st->bytes_dropped_loss,
		"bytes_dropped_queue", (json_int_t)st->bytes_dropped_queue,
		"frames_pending",
		(json_int_t)linkem_dir_pending_frames(&s->dir),
		"bytes_pending", (json_int_t)linkem_dir_pending_bytes(&s->dir),
		"queue_delay_us", hist_json(&s->dir.queue_delay, 0),
		"timing_error_us", hist_json(&s->dir.timing_error, 1),
		"write_errors", (json_int_t)s->write_errors,
		"bytes_write_errors", (json_int_t)s->bytes_write_errors,
		"read_errors", (json_int_t)s->read_errors);
}

static json_t *stats_json(const struct emu *e)
{
	const struct opts *o = e->o;
	struct rusage ru;
	json_t *cfg;

	getrusage(RUSAGE_SELF, &ru);
	cfg = json_pack("{s:s, s:s, s:I, s:i, s:f, s:i, s:o, s:o}",
	                "tap_a", o->tap_a, "tap_b", o->tap_b,
	                "seed", (json_int_t)o->seed,
	                "mtu", e->mtu,
	                "spin_us", (double)o->spin_ns / 1000.0,
	                "rt_prio", o->rt_prio,
	                "a2b", dir_config_json(&o->dir[0]),
	                "b2a", dir_config_json(&o->dir[1]));
	return json_pack("{s:s, s:s, s:o, s:f, s:o, s:o, s:o, s:f, s:f, s:I}",
	                 "tool", "linkem", "version", LINKEM_VERSION,
	                 "config", cfg,
	                 "duration_s", (double)(e->end_ns - e->start_ns) / 1e9,
	                 "a2b", side_json(&e->side[0]),
	                 "b2a", side_json(&e->side[1]),
	                 "timer", json_pack("{s:f, s:o}", "lead_us",
	                                    (double)linkem_lead_get(&e->lead) /
	                                            1000.0,
	                                    "wake_latency_us",
	                                    hist_json(&e->wake_latency, 1)),
	                 "cpu_user_s", (double)ru.ru_utime.tv_sec +
	                                       ru.ru_utime.tv_usec / 1e6,
	                 "cpu_sys_s", (double)ru.ru_stime.tv_sec +
	                                      ru.ru_stime.tv_usec / 1e6,
	                 "max_rss_kb", (json_int_t)ru.ru_maxrss);
}

/* Write doc to path atomically (afile.h: a regular file is replaced by
 * rename, a device or pipe such as /dev/null is written in place).
 * 0, or -errno. */
static int write_stats(const char *path, json_t *doc)
{
	struct afile af;
	int rv;

	rv = afile_open(&af, path);
	if (rv != 0)
		return rv;
	/* 12 significant digits: ns resolution for anything under 11 days,
	 * and 0.3 stays "0.3" */
	errno = 0;
	if (json_dumpf(doc, af.fp, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
	                                   JSON_REAL_PRECISION(12)) != 0 ||
	    fputc('\n', af.fp) == EOF) {
		rv = errno ? -errno : -EIO;
		afile_abort(&af);
		return rv;
	}
	return afile_commit(&af);
}

/* Fail early, before any device exists, if the stats file cannot be
 * written where asked: open it as the final write will, and throw that
 * away. A named pipe is only checked for write permission (opening it
 * would wait for a reader). */
static void check_stats_path(const char *path)
{
	struct afile af;
	struct stat st;
	int rv;

	if (stat(path, &st) == 0 && S_ISFIFO(st.st_mode)) {
		if (access(path, W_OK) != 0)
			die_usage("--stats '%s': cannot write there: %s", path,
			          strerror(errno));
		return;
	}
	rv = afile_open(&af, path);
	if (rv != 0)
		die_usage("--stats '%s': cannot create a file there: %s", path,
		          strerror(-rv));
	afile_abort(&af);
}

/* ---- main ---------------------------------------------------------------- */

static int epoll_add(int ep, int fd)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.fd = fd;
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv)
{
	static struct emu e; /* static: the frame buffer is 64 KiB */
	struct opts o;
	sigset_t mask;
	json_t *doc;
	int rc = EXIT_RUNTIME, i, dirs_ready = 0;

	parse_args(argc, argv, &o);
	if (o.stats)
		check_stats_path(o.stats);

	e.o = &o;
	e.tap_a = e.tap_b = e.ep = e.tfd = e.sfd = -1;
	e.armed_ns = INT64_MIN;
	linkem_lead_init(&e.lead, o.spin_ns);
	stats_hist_init(&e.wake_latency);

	/* signals through the loop, so a stop never interrupts a write half
	 * way and the stats are written from a consistent state */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
		err_line("sigprocmask: %s", strerror(errno));
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	e.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (e.sfd < 0) {
		err_line("signalfd: %s", strerror(errno));
		goto out;
	}

	for (i = 0; i < 2; i++) {
		if (linkem_dir_init(&e.side[i].dir, &o.dir[i], o.seed,
		                    (uint64_t)i) != 0) {
			err_line("bad link configuration");
			goto out;
		}
		dirs_ready++;
	}

	e.tap_a = tap_open(o.tap_a, o.mtu);
	if (e.tap_a < 0)
		goto out;
	e.tap_b = tap_open(o.tap_b, o.mtu);
	if (e.tap_b < 0)
		goto out;
	e.side[0].in_fd = e.tap_a;
	e.side[0].out_fd = e.tap_b;
	e.side[0].in_name = o.tap_a;
	e.side[1].in_fd = e.tap_b;
	e.side[1].out_fd = e.tap_a;
	e.side[1].in_name = o.tap_b;

	e.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (e.tfd < 0) {
		err_line("timerfd_create: %s", strerror(errno));
		goto out;
	}
	e.ep = epoll_create1(EPOLL_CLOEXEC);
	if (e.ep < 0 || epoll_add(e.ep, e.tap_a) < 0 ||
	    epoll_add(e.ep, e.tap_b) < 0 || epoll_add(e.ep, e.tfd) < 0 ||
	    epoll_add(e.ep, e.sfd) < 0) {
		err_line("epoll: %s", strerror(errno));
		goto out;
	}

	if (o.rt_prio > 0) {
		struct sched_param sp;

		memset(&sp, 0, sizeof(sp));
		sp.sched_priority = o.rt_prio;
		if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0) {
			err_line("cannot switch to real-time priority %d: %s "
			         "(needs root or CAP_SYS_NICE; or drop "
			         "--rt-prio)", o.rt_prio, strerror(errno));
			goto out;
		}
	}

	/* read now: once the caller moves the TAPs into other namespaces,
	 * this process can no longer look them up by name */
	e.mtu = tap_mtu(o.tap_a);

	printf("ready\n");
	fflush(stdout);
	e.start_ns = evloop_clock_ns();
	if (run(&e) < 0)
		goto out;
	e.end_ns = evloop_clock_ns();
	rc = e.stop == 2 ? EXIT_RUNTIME : 0;

	if (o.stats) {
		doc = stats_json(&e);
		if (!doc) {
			err_line("out of memory building the stats");
			rc = EXIT_RUNTIME;
		} else {
			int wr = write_stats(o.stats, doc);

			if (wr != 0) {
				err_line("cannot write stats to %s: %s",
				         o.stats, strerror(-wr));
				rc = EXIT_RUNTIME;
			}
			json_decref(doc);
		}
	}

out:
	for (i = 0; i < dirs_ready; i++)
		linkem_dir_free(&e.side[i].dir);
	if (e.ep >= 0)
		close(e.ep);
	if (e.tfd >= 0)
		close(e.tfd);
	if (e.sfd >= 0)
		close(e.sfd);
	/* closing the last fd of a non-persistent TAP deletes the device */
	if (e.tap_a >= 0)
		close(e.tap_a);
	if (e.tap_b >= 0)
		close(e.tap_b);
	return rc;
}
