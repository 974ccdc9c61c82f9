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
 *
 * The input side: a frame's arrival is the time linkem reads it, so a
 * stretch in which the loop is away from epoll_wait (writing departures,
 * reading the other TAP, or descheduled) stamps every frame that arrives
 * meanwhile late. The stats therefore keep those stretches (loop.busy),
 * the size of every read burst (a burst that stops at READ_BURST leaves
 * frames waiting in the TAP), and the TAP devices' own counters, whose
 * drops are frames the kernel could not queue for linkem at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <linux/if_tun.h>

#include <jansson.h>

#include "linkem/lead.h"
#include "linkem/queue.h"
#include "measure/report.h"
#include "measure/stats.h"
#include "net/evloop.h"
#include "util/afile.h"
#include "util/cli.h"

/* The kernel's limit for a TAP: 65535 minus the Ethernet header. */
#define TAP_MTU_MAX (65535 - 14)
#define ETH_HEADER 14

/* Frames read from one TAP before the loop looks at departures again, so
 * a flood on one side cannot make the other side's departures late. */
#define READ_BURST 64
/* Default cap on the busy-poll window before a departure. Measured on a
 * 2-vCPU VM (scripts/bench-linkem.sh): timer wake-ups come 20-30 us late at
 * the median, 40 us at p90; polling the last ~45 us moves the median timing
 * error from ~30 us to ~0.2 us for about 15 % more CPU at 10k frames/s. */
#define DEFAULT_SPIN_US 50

/* ---- options ------------------------------------------------------------- */

/* Link options; each exists as --NAME, --a2b-NAME and --b2a-NAME. The
 * settings slots (--loss and --loss-ge share one). */
enum link_opt {
	LO_RATE,
	LO_DELAY,
	LO_JITTER,
	LO_LOSS,
	LO_QPK,
	LO_QBYTES,
	LO_OVERHEAD,
	LO_CELL,
	LO_CELL_OVERHEAD,
	LO_LOSS_UNIT,
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
	/* link options: OPT_LINK + 4 * kind + scope */
	OPT_LINK = 512,
};

/* The kinds of link option on the command line. */
enum link_kind {
	LK_RATE,
	LK_DELAY,
	LK_JITTER,
	LK_LOSS,
	LK_LOSS_GE,
	LK_QPK,
	LK_QBYTES,
	LK_OVERHEAD,
	LK_CELL,
	LK_CELL_OVERHEAD,
	LK_LOSS_UNIT,
	LK_COUNT
};

static const char *const kind_name[LK_COUNT] = {
	"rate", "delay-us", "jitter-us", "loss", "loss-ge", "queue-packets",
	"queue-bytes", "packet-overhead", "cell-size", "cell-overhead",
	"loss-unit"};

/* The settings slot each kind fills. */
static const enum link_opt kind_slot[LK_COUNT] = {
	LO_RATE, LO_DELAY, LO_JITTER, LO_LOSS, LO_LOSS, LO_QPK, LO_QBYTES,
	LO_OVERHEAD, LO_CELL, LO_CELL_OVERHEAD, LO_LOSS_UNIT};

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
"  --packet-overhead N   bytes added to every frame for the rate (may be\n"
"                        negative: -14 for a link without Ethernet header)\n"
"  --cell-size N         the link sends whole cells of N bytes (0 = none)\n"
"  --cell-overhead N     bytes added to every cell\n"
"  --loss-unit frame|cell  the loss model draws once per frame (default)\n"
"                        or once per cell (a frame is lost with any cell)\n"
"Other options:\n"
"  --stats FILE          write the stats JSON there on exit (atomically)\n"
"  --seed N              PRNG seed (default 1); each direction has its\n"
"                        own streams, for loss and for jitter\n"
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

/* The shared parsers print the one line; the program then stops. */
static void ok_or_exit(int rv)
{
	if (rv != 0)
		exit(CLI_EXIT_USAGE);
}

/* "P,R,LB,LG", each a probability. */
static void parse_ge(const char *opt, const char *s, linkem_dir_config *c)
{
	double v[4];
	char tmp[256], *p = tmp, *comma;
	int n;

	if (strlen(s) >= sizeof(tmp))
		cli_die_usage("%s: '%.20s...' is too long", opt, s);
	strcpy(tmp, s);
	for (n = 0; n < 4; n++) {
		comma = strchr(p, ',');
		if ((comma == NULL) != (n == 3))
			cli_die_usage("%s: '%s': give P,R,LB,LG, four "
			              "probabilities from 0 to 1", opt, s);
		if (comma)
			*comma = '\0';
		ok_or_exit(cli_parse_double(opt, p, 0, 1, &v[n]));
		if (comma)
			p = comma + 1;
	}
	c->ge_p = v[0];
	c->ge_r = v[1];
	c->ge_lb = v[2];
	c->ge_lg = v[3];
}

static void parse_link(struct opts *o, int kind, int scope, const char *arg)
{
	struct scoped *sc = &o->sc[scope];
	linkem_dir_config *c = &sc->c;
	const char *pre = scope_prefix[scope];
	char opt[48];
	uint64_t u;
	int64_t i;
	double d;

	snprintf(opt, sizeof(opt), "--%s%s", pre, kind_name[kind]);
	switch (kind) {
	case LK_RATE:
		ok_or_exit(cli_parse_u64(opt, arg, 0, LINKEM_RATE_MAX, &u));
		c->rate_bps = u;
		break;
	case LK_DELAY:
	case LK_JITTER:
		ok_or_exit(cli_parse_double(opt, arg, 0,
		                            LINKEM_DELAY_MAX_NS / 1000, &d));
		if (kind == LK_DELAY)
			c->delay_ns = (int64_t)(d * 1000 + 0.5);
		else
			c->jitter_ns = (int64_t)(d * 1000 + 0.5);
		break;
	case LK_LOSS:
		ok_or_exit(cli_parse_double(opt, arg, 0, 1, &d));
		c->loss_model = LINKEM_LOSS_BERNOULLI;
		c->loss_p = d;
		sc->loss_kind_set[0] = 1;
		break;
	case LK_LOSS_GE:
		parse_ge(opt, arg, c);
		c->loss_model = LINKEM_LOSS_GE;
		sc->loss_kind_set[1] = 1;
		break;
	case LK_QPK:
		ok_or_exit(cli_parse_u64(opt, arg, 0, UINT32_MAX, &u));
		c->queue_packets = u;
		break;
	case LK_QBYTES:
		ok_or_exit(cli_parse_u64(opt, arg, 0, UINT64_MAX / 2, &u));
		c->queue_bytes = u;
		break;
	case LK_OVERHEAD:
		ok_or_exit(cli_parse_i64(opt, arg, -LINKEM_OVERHEAD_MAX,
		                         LINKEM_OVERHEAD_MAX, &i));
		c->packet_overhead = i;
		break;
	case LK_CELL:
		ok_or_exit(cli_parse_u64(opt, arg, 0, LINKEM_OVERHEAD_MAX, &u));
		c->cell_size = u;
		break;
	case LK_CELL_OVERHEAD:
		ok_or_exit(cli_parse_i64(opt, arg, -LINKEM_OVERHEAD_MAX,
		                         LINKEM_CELL_OVERHEAD_MAX, &i));
		c->cell_overhead = i;
		break;
	case LK_LOSS_UNIT:
		if (strcmp(arg, "frame") != 0 && strcmp(arg, "cell") != 0)
			cli_die_usage("%s: '%s' is not a loss unit; give frame "
			              "or cell", opt, arg);
		c->loss_per_cell = strcmp(arg, "cell") == 0;
		break;
	}
	sc->set[kind_slot[kind]] = 1;
	if (sc->loss_kind_set[0] && sc->loss_kind_set[1])
		cli_die_usage("--%sloss and --%sloss-ge exclude each other; "
		              "give one of them", pre, pre);
}

/* Copy slot `slot` of src into c. */
static void copy_slot(linkem_dir_config *c, const linkem_dir_config *src,
                      int slot)
{
	switch (slot) {
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
	case LO_OVERHEAD:
		c->packet_overhead = src->packet_overhead;
		break;
	case LO_CELL:
		c->cell_size = src->cell_size;
		break;
	case LO_CELL_OVERHEAD:
		c->cell_overhead = src->cell_overhead;
		break;
	case LO_LOSS_UNIT:
		c->loss_per_cell = src->loss_per_cell;
		break;
	}
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
		const char *name = dir == 0 ? "a2b" : "b2a";

		linkem_dir_config_default(c);
		for (i = 0; i < LO_COUNT; i++) {
			if (own->set[i])
				copy_slot(c, &own->c, i);
			else if (both->set[i])
				copy_slot(c, &both->c, i);
		}
		if (c->loss_per_cell && c->cell_size == 0)
			cli_die_usage("%s: --loss-unit cell needs --cell-size",
			              name);
		if (c->cell_size == 0 && c->cell_overhead != 0)
			cli_die_usage("%s: --cell-overhead needs --cell-size",
			              name);
		if (c->cell_size != 0 &&
		    c->cell_overhead < -(int64_t)c->cell_size)
			cli_die_usage("%s: --cell-overhead below minus "
			              "--cell-size: a cell would be sent as less "
			              "than nothing", name);
		if (linkem_dir_config_check(c) != 0)
			cli_die_usage("the %s link options are out of range",
			              name);
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
			                          OPT_LINK + 4 * k + s};
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
				cli_die_usage("--stats needs a file name");
			o->stats = optarg;
			break;
		case OPT_SEED:
			ok_or_exit(cli_parse_u64("--seed", optarg, 0,
			                         UINT64_MAX, &o->seed));
			break;
		case OPT_MTU:
			ok_or_exit(cli_parse_u64("--mtu", optarg, 68,
			                         TAP_MTU_MAX, &u));
			o->mtu = (int)u;
			break;
		case OPT_SPIN:
			ok_or_exit(cli_parse_u64("--spin-us", optarg, 0,
			                         1000000, &u));
			o->spin_ns = (int64_t)u * 1000;
			break;
		case OPT_RT_PRIO:
			ok_or_exit(cli_parse_u64("--rt-prio", optarg, 0, 99,
			                         &u));
			o->rt_prio = (int)u;
			break;
		case OPT_HELP:
			usage();
			exit(0);
		case OPT_VERSION:
			printf("linkem %s\n", LINKEM_VERSION);
			exit(0);
		case ':':
			cli_die_usage("%s needs a value (see linkem --help)",
			              argv[optind - 1]);
		case '?':
			cli_die_usage("unknown option '%s' (see linkem --help)",
			              argv[optind - 1]);
		default:
			if (c >= OPT_LINK && c < OPT_LINK + 4 * LK_COUNT) {
				parse_link(o, (c - OPT_LINK) / 4,
				           (c - OPT_LINK) % 4, optarg);
				break;
			}
			cli_die_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		cli_die_usage("unexpected argument '%s'", argv[optind]);
	if (!o->tap_a || !o->tap_b)
		cli_die_usage("--tap-a and --tap-b are required (see linkem "
		              "--help)");
	if (!valid_ifname(o->tap_a))
		cli_die_usage("--tap-a '%s' is not a valid interface name "
		              "(1 to %d characters, no '/', ':', '%%' or "
		              "spaces)", o->tap_a, IFNAMSIZ - 1);
	if (!valid_ifname(o->tap_b))
		cli_die_usage("--tap-b '%s' is not a valid interface name "
		              "(1 to %d characters, no '/', ':', '%%' or "
		              "spaces)", o->tap_b, IFNAMSIZ - 1);
	if (!strcmp(o->tap_a, o->tap_b))
		cli_die_usage("--tap-a and --tap-b must differ");
	resolve(o);
}

/* ---- TAP devices --------------------------------------------------------- */

/*
 * IPv6 off on the new device `name`, before it comes up: else this host's
 * own stack sends router solicitations, MLD reports and DAD probes out of
 * it, frames that would cross the emulated link as if a host had sent
 * them. Where /proc/sys cannot be written (a read-only mount, no IPv6)
 * nothing is lost but that.
 */
static void ipv6_off(const char *name)
{
	char path[96];
	int fd;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6",
	         name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, "1", 1) != 1) {
		/* nothing to do: only stray frames are at stake */
	}
	close(fd);
}

/*
 * Create the TAP device `name` (new, not persistent, no packet info header,
 * no offloads, IPv6 off), set its MTU if mtu > 0 and bring it up. Returns the
 * non-blocking fd, or -1 after printing why.
 */
static int tap_open(const char *name, int mtu)
{
	struct ifreq ifr;
	int fd, sk = -1;

	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		cli_error("cannot open /dev/net/tun: %s%s", strerror(errno),
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
			cli_error("cannot create TAP device %s: %s (is the name "
			         "taken? pick another or remove it)",
			         name, strerror(errno));
		else
			cli_error("cannot create TAP device %s: %s%s", name,
			         strerror(errno),
			         errno == EPERM ? " (run as root or with "
			                          "CAP_NET_ADMIN)" : "");
		goto fail;
	}
	/* no offload flags: the kernel segments and checksums before the
	 * frame reaches us, so every frame is one wire frame */
	if (ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
		cli_error("cannot disable offloads on %s: %s", name,
		         strerror(errno));
		goto fail;
	}
	sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sk < 0) {
		cli_error("socket: %s", strerror(errno));
		goto fail;
	}
	if (mtu > 0) {
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
		ifr.ifr_mtu = mtu;
		if (ioctl(sk, SIOCSIFMTU, &ifr) < 0) {
			cli_error("cannot set MTU %d on %s: %s", mtu, name,
			         strerror(errno));
			goto fail;
		}
	}
	ipv6_off(name);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sk, SIOCGIFFLAGS, &ifr) < 0) {
		cli_error("cannot read flags of %s: %s", name, strerror(errno));
		goto fail;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(sk, SIOCSIFFLAGS, &ifr) < 0) {
		cli_error("cannot bring %s up: %s", name, strerror(errno));
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
	uint64_t frames_above_mtu; /* longer than the TAP's MTU + header */
	/* read bursts: bursts[n] = how many reads of this TAP brought n
	 * frames (n = 1..READ_BURST); bursts[READ_BURST] stopped at the cap
	 * with frames still waiting */
	uint64_t bursts[READ_BURST + 1];
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
	/* passes of the loop that read or wrote frames: the time from
	 * epoll_wait's return to the next call, in which no arrival can be
	 * noticed (ns) */
	struct stats_hist busy;
	int stop;         /* 1: signal, 2: a TAP went away */
	int64_t start_ns, end_ns;
	uint64_t wall0;
	int mtu; /* of tap-a when created */
	uint8_t buf[LINKEM_FRAME_MAX + 1];
};

/* Write every frame of s that is due at now. Returns how many. */
static int flush_due(struct side *s, int64_t now)
{
	linkem_frame *f;
	int64_t t;
	ssize_t n;
	int count = 0;

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
		count++;
	}
	return count;
}

/*
 * Read up to READ_BURST frames from s's input TAP. Returns the number read
 * (>= 0), or -1 when the device is gone (the caller stops).
 */
static int read_burst(struct emu *e, struct side *s)
{
	ssize_t n;
	int i, rc;

	for (i = 0; i < READ_BURST; i++) {
		n = read(s->in_fd, e->buf, sizeof(e->buf));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (errno == EBADFD || errno == ENODEV ||
			    errno == ENXIO) {
				cli_error("%s went away (%s); stopping",
				          s->in_name, strerror(errno));
				return -1;
			}
			s->read_errors++;
			break;
		}
		if (n == 0)
			break;
		if ((size_t)n > LINKEM_FRAME_MAX) {
			/* cannot happen with MTU <= 65535; count, not crash */
			s->read_errors++;
			continue;
		}
		if (e->mtu > 0 && (size_t)n > (size_t)e->mtu + ETH_HEADER)
			s->frames_above_mtu++;
		rc = linkem_dir_input(&s->dir, e->buf, (size_t)n,
		                      evloop_clock_ns());
		if (rc == LINKEM_ERR_NOMEM && !s->nomem_warned) {
			cli_error("out of memory queueing a frame; dropping "
			          "such frames");
			s->nomem_warned = 1;
		}
	}
	if (i > 0)
		s->bursts[i]++;
	return i;
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
	int64_t now, next, target, lead, woke = 0, sleep_target;
	int n, i, timeout, r, moved = 0;
	uint64_t expirations;
	struct signalfd_siginfo si;

	while (!e->stop) {
		now = evloop_clock_ns();
		moved += flush_due(&e->side[0], now);
		moved += flush_due(&e->side[1], now);
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
					cli_error("timerfd_settime: %s",
					          strerror(errno));
					return -1;
				}
				sleep_target = target;
			}
		}
		/* the pass that ends here kept arrivals unnoticed this long */
		if (moved) {
			stats_hist_add(&e->busy,
			               (uint64_t)(evloop_clock_ns() - woke));
			moved = 0;
		}
		n = epoll_wait(e->ep, ev, 8, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			cli_error("epoll_wait: %s", strerror(errno));
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
					cli_error("timerfd read: %s",
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
					cli_error("%s went away; stopping",
					          s->in_name);
					e->stop = 2;
				} else if ((r = read_burst(e, s)) < 0) {
					e->stop = 2;
				} else {
					moved += r;
				}
			}
		}
	}
	return 0;
}

/* ---- the TAP devices' own counters ----------------------------------------- */

struct tap_counters {
	char name[IFNAMSIZ];
	unsigned long long rx_packets, rx_dropped, tx_packets, tx_dropped;
};

/* The line of `name` in /proc/self/net/dev (this thread's namespace). */
static int read_net_dev(struct tap_counters *t)
{
	char line[512], *colon, *p;
	unsigned long long v[16];
	FILE *f = fopen("/proc/self/net/dev", "r");
	int found = 0;

	if (f == NULL)
		return -1;
	while (!found && fgets(line, sizeof(line), f)) {
		colon = strchr(line, ':');
		if (colon == NULL)
			continue;
		*colon = '\0';
		for (p = line; *p == ' '; p++)
			;
		if (strcmp(p, t->name) != 0)
			continue;
		/* rx: bytes packets errs drop fifo frame compressed multicast,
		 * tx: bytes packets errs drop fifo colls carrier compressed */
		if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu "
		           "%llu %llu %llu %llu %llu %llu %llu %llu",
		           &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
		           &v[7], &v[8], &v[9], &v[10], &v[11], &v[12],
		           &v[13], &v[14], &v[15]) != 16)
			break;
		t->rx_packets = v[1];
		t->rx_dropped = v[3];
		t->tx_packets = v[9];
		t->tx_dropped = v[11];
		found = 1;
	}
	fclose(f);
	return found ? 0 : -1;
}

/*
 * The counters of the TAP behind fd, wherever it is now: the caller (the
 * topology, a test) may have moved it into another network namespace and
 * renamed it, so its name comes from the fd (TUNGETIFF) and the counters
 * are read inside its namespace (TUNGETDEVNETNS, then back to ours through
 * own_ns). 0, or -1 if they cannot be read.
 */
static int tap_counters(int fd, int own_ns, struct tap_counters *t)
{
	struct ifreq ifr;
	int ns, rv;

	memset(t, 0, sizeof(*t));
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return -1;
	snprintf(t->name, sizeof(t->name), "%s", ifr.ifr_name);
	ns = ioctl(fd, TUNGETDEVNETNS);
	if (ns < 0)
		return read_net_dev(t);   /* older kernels: hope it is ours */
	if (setns(ns, CLONE_NEWNET) < 0) {
		close(ns);
		return -1;
	}
	close(ns);
	rv = read_net_dev(t);
	if (setns(own_ns, CLONE_NEWNET) < 0) {
		cli_error("cannot return to linkem's network namespace: %s",
		          strerror(errno));
		rv = -1;
	}
	return rv;
}

static json_t *tap_json(const struct tap_counters *t, int ok)
{
	if (!ok)
		return json_null();
	return json_pack("{s:s, s:o, s:o, s:o, s:o}", "name", t->name,
	                 "tx_packets", report_u64(t->tx_packets),
	                 "tx_dropped", report_u64(t->tx_dropped),
	                 "rx_packets", report_u64(t->rx_packets),
	                 "rx_dropped", report_u64(t->rx_dropped));
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
	if (loss && c->loss_model != LINKEM_LOSS_NONE)
		report_set(loss, "unit",
		           json_string(c->loss_per_cell ? "cell" : "frame"));
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:I}",
	                 "rate_bps", report_u64(c->rate_bps),
	                 "delay_us", report_us((uint64_t)c->delay_ns),
	                 "jitter_us", report_us((uint64_t)c->jitter_ns),
	                 "loss", loss,
	                 "queue_packets", report_u64(c->queue_packets),
	                 "queue_bytes", report_u64(c->queue_bytes),
	                 "packet_overhead", (json_int_t)c->packet_overhead,
	                 "cell_size", report_u64(c->cell_size),
	                 "cell_overhead", (json_int_t)c->cell_overhead);
}

/* How big the reads of one TAP were: count, mean, the largest, how many
 * stopped at the cap with frames left waiting, and every size seen. */
static json_t *bursts_json(const struct side *s)
{
	json_t *sizes = json_array();
	uint64_t reads = 0, frames = 0, max = 0;
	int n;

	for (n = 1; n <= READ_BURST; n++) {
		if (!s->bursts[n])
			continue;
		reads += s->bursts[n];
		frames += (uint64_t)n * s->bursts[n];
		max = (uint64_t)n;
		json_array_append_new(sizes, json_pack("[i, o]", n,
		                      report_u64(s->bursts[n])));
	}
	return json_pack("{s:o, s:o, s:o, s:i, s:o, s:o}",
	                 "reads", report_u64(reads),
	                 "mean_frames",
	                 reads ? json_real((double)frames / (double)reads)
	                       : json_null(),
	                 "max_frames", report_u64(max),
	                 "cap", READ_BURST,
	                 "at_cap", report_u64(s->bursts[READ_BURST]),
	                 "sizes", sizes);
}

/* tap_in: counters of the TAP the direction reads, tap_out: of the one it
 * writes (NULL if unknown). */
static json_t *side_json(const struct side *s,
                         const struct tap_counters *tap_in,
                         const struct tap_counters *tap_out)
{
	const linkem_dir_stats *st = &s->dir.st;
	json_t *o = json_object();

	/* frames_out counts frames the other TAP took; write_errors those it
	 * refused; frames_pending those still held at exit, so that
	 * frames_in = frames_out + write_errors + dropped_loss +
	 * dropped_queue + frames_pending */
	report_set(o, "frames_in", report_u64(st->frames_in));
	report_set(o, "bytes_in", report_u64(st->bytes_in));
	report_set(o, "frames_out",
	           report_u64(st->frames_out - s->write_errors));
	report_set(o, "bytes_out",
	           report_u64(st->bytes_out - s->bytes_write_errors));
	report_set(o, "dropped_loss", report_u64(st->dropped_loss));
	report_set(o, "dropped_queue", report_u64(st->dropped_queue));
	report_set(o, "bytes_dropped_loss", report_u64(st->bytes_dropped_loss));
	report_set(o, "bytes_dropped_queue",
	           report_u64(st->bytes_dropped_queue));
	report_set(o, "frames_pending",
	           report_u64(linkem_dir_pending_frames(&s->dir)));
	report_set(o, "bytes_pending",
	           report_u64(linkem_dir_pending_bytes(&s->dir)));
	report_set(o, "write_errors", report_u64(s->write_errors));
	report_set(o, "bytes_write_errors", report_u64(s->bytes_write_errors));
	report_set(o, "read_errors", report_u64(s->read_errors));
	/* frames bigger than the MTU allows were merged by an offload: the
	 * link would carry what no wire carries */
	report_set(o, "frame_max_bytes", report_u64(st->frame_max));
	report_set(o, "frames_above_mtu", report_u64(s->frames_above_mtu));
	report_set(o, "queue_delay", report_hist(&s->dir.queue_delay, 0));
	report_set(o, "timing_error", report_hist(&s->dir.timing_error, 0));
	report_set(o, "read_bursts", bursts_json(s));
	/* frames the kernel dropped because linkem did not read them in time
	 * (the input TAP's tx drops), and frames linkem wrote that the kernel
	 * then dropped (the output TAP's rx drops) */
	report_set(o, "tap_dropped_in",
	           tap_in ? report_u64(tap_in->tx_dropped) : json_null());
	report_set(o, "tap_dropped_out",
	           tap_out ? report_u64(tap_out->rx_dropped) : json_null());
	return o;
}

static json_t *stats_json(const struct emu *e, int own_ns)
{
	const struct opts *o = e->o;
	struct tap_counters ta, tb;
	int ta_ok, tb_ok;
	json_t *doc, *cfg;

	ta_ok = own_ns >= 0 && tap_counters(e->tap_a, own_ns, &ta) == 0;
	tb_ok = own_ns >= 0 && tap_counters(e->tap_b, own_ns, &tb) == 0;
	doc = report_new("linkem");
	if (doc == NULL)
		return NULL;
	report_add_version(doc, "linkem", LINKEM_VERSION);
	cfg = json_pack("{s:s, s:s, s:o, s:i, s:o, s:i, s:o, s:o}",
	                "tap_a", o->tap_a, "tap_b", o->tap_b,
	                "seed", report_u64(o->seed),
	                "mtu", e->mtu,
	                "spin_us", report_us((uint64_t)o->spin_ns),
	                "rt_prio", o->rt_prio,
	                "a2b", dir_config_json(&o->dir[0]),
	                "b2a", dir_config_json(&o->dir[1]));
	report_set(doc, "config", cfg);
	report_set(doc, "start", report_time(e->wall0));
	report_set(doc, "end", report_time(report_wall_ns()));
	report_set(doc, "duration_s",
	           json_real((double)(e->end_ns - e->start_ns) / 1e9));
	report_set(doc, "a2b", side_json(&e->side[0], ta_ok ? &ta : NULL,
	                                 tb_ok ? &tb : NULL));
	report_set(doc, "b2a", side_json(&e->side[1], tb_ok ? &tb : NULL,
	                                 ta_ok ? &ta : NULL));
	report_set(doc, "timer",
	           json_pack("{s:o, s:o}", "lead_us",
	                     report_us((uint64_t)linkem_lead_get(&e->lead)),
	                     "wake_latency", report_hist(&e->wake_latency, 0)));
	report_set(doc, "loop", json_pack("{s:o}", "busy",
	                                  report_hist(&e->busy, 0)));
	report_set(doc, "taps", json_pack("{s:o, s:o}", "a", tap_json(&ta, ta_ok),
	                                  "b", tap_json(&tb, tb_ok)));
	report_set(doc, "resources", report_resources());
	return doc;
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
			cli_die_usage("--stats '%s': cannot write there: %s",
			              path, strerror(errno));
		return;
	}
	rv = afile_open(&af, path);
	if (rv != 0)
		cli_die_usage("--stats '%s': cannot create a file there: %s",
		              path, strerror(-rv));
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
	json_t *doc;
	int rc = CLI_EXIT_RUNTIME, i, dirs_ready = 0, own_ns = -1;

	cli_prog = "linkem";
	parse_args(argc, argv, &o);
	if (o.stats)
		check_stats_path(o.stats);

	e.o = &o;
	e.tap_a = e.tap_b = e.ep = e.tfd = e.sfd = -1;
	e.armed_ns = INT64_MIN;
	linkem_lead_init(&e.lead, o.spin_ns);
	stats_hist_init(&e.wake_latency);
	stats_hist_init(&e.busy);

	/* signals through the loop, so a stop never interrupts a write half
	 * way and the stats are written from a consistent state */
	e.sfd = cli_signalfd(0);
	if (e.sfd < 0) {
		cli_error("signalfd: %s", strerror(errno));
		goto out;
	}
	/* to come back here after reading the TAPs' counters in whatever
	 * namespace they end up in */
	own_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

	for (i = 0; i < 2; i++) {
		if (linkem_dir_init(&e.side[i].dir, &o.dir[i], o.seed,
		                    (uint64_t)i) != 0) {
			cli_error("bad link configuration");
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
		cli_error("timerfd_create: %s", strerror(errno));
		goto out;
	}
	e.ep = epoll_create1(EPOLL_CLOEXEC);
	if (e.ep < 0 || epoll_add(e.ep, e.tap_a) < 0 ||
	    epoll_add(e.ep, e.tap_b) < 0 || epoll_add(e.ep, e.tfd) < 0 ||
	    epoll_add(e.ep, e.sfd) < 0) {
		cli_error("epoll: %s", strerror(errno));
		goto out;
	}

	if (o.rt_prio > 0) {
		struct sched_param sp;

		memset(&sp, 0, sizeof(sp));
		sp.sched_priority = o.rt_prio;
		if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0) {
			cli_error("cannot switch to real-time priority %d: %s "
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
	e.wall0 = report_wall_ns();
	e.start_ns = evloop_clock_ns();
	if (run(&e) < 0)
		goto out;
	e.end_ns = evloop_clock_ns();
	rc = e.stop == 2 ? CLI_EXIT_RUNTIME : 0;

	if (o.stats) {
		doc = stats_json(&e, own_ns);
		if (!doc) {
			cli_error("out of memory building the stats");
			rc = CLI_EXIT_RUNTIME;
		} else {
			int wr = report_write(doc, o.stats);

			if (wr != 0) {
				cli_error("cannot write stats to %s: %s",
				          o.stats, strerror(-wr));
				rc = CLI_EXIT_RUNTIME;
			}
			json_decref(doc);
		}
	}

out:
	for (i = 0; i < dirs_ready; i++)
		linkem_dir_free(&e.side[i].dir);
	if (own_ns >= 0)
		close(own_ns);
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
