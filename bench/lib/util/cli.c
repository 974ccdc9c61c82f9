/*
 * cli.c: strict option parsing and process setup for the benchmark
 * binaries. See cli.h.
 *
 * Strict because a benchmark that silently reads "10x" as 10 or "-1" as
 * 18446744073709551615 measures something other than what was asked.
 */
#include "util/cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "util/afile.h"

const char *cli_prog = "bench";

static void verror(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: error: ", cli_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(fmt, ap);
	va_end(ap);
}

void cli_die_usage(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(fmt, ap);
	va_end(ap);
	exit(CLI_EXIT_USAGE);
}

int cli_parse_u64(const char *opt, const char *arg, uint64_t min,
                  uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (arg == NULL || !isdigit((unsigned char)arg[0])) {
		cli_error("%s: '%s' is not a non-negative integer", opt,
		          arg ? arg : "");
		return CLI_EBADARG;
	}
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (*end != '\0') {
		cli_error("%s: '%s' is not a non-negative integer", opt, arg);
		return CLI_EBADARG;
	}
	if (errno == ERANGE || v < min || v > max) {
		cli_error("%s: %s is out of range (%llu to %llu)", opt, arg,
		          (unsigned long long)min, (unsigned long long)max);
		return CLI_EBADARG;
	}
	*out = v;
	return 0;
}

/* strtod, but only plain decimal notation: no hex, inf, nan or sign. */
static int parse_real(const char *arg, double *v, char **end)
{
	const char *p = arg;

	if (!isdigit((unsigned char)*p) && *p != '.')
		return -1;
	for (; *p; p++) {
		if (!isdigit((unsigned char)*p) && *p != '.' && *p != 'e' &&
		    *p != 'E' && *p != '-' && *p != '+')
			break;
	}
	errno = 0;
	*v = strtod(arg, end);
	if (*end == arg || *end > p || errno == ERANGE || !isfinite(*v))
		return -1;
	return 0;
}

int cli_parse_double(const char *opt, const char *arg, double min, double max,
                     double *out)
{
	double v;
	char *end;

	if (arg == NULL || parse_real(arg, &v, &end) < 0 || *end != '\0') {
		cli_error("%s: '%s' is not a non-negative number", opt,
		          arg ? arg : "");
		return CLI_EBADARG;
	}
	if (v < min || v > max) {
		cli_error("%s: %s is out of range (%g to %g)", opt, arg, min,
		          max);
		return CLI_EBADARG;
	}
	*out = v;
	return 0;
}

int cli_parse_duration(const char *opt, const char *arg, uint64_t min_ns,
                       uint64_t max_ns, uint64_t *out_ns)
{
	static const struct {
		const char *unit;
		double ns;
	} units[] = {
		{ "", 1e9 },   { "s", 1e9 },    { "ms", 1e6 },
		{ "us", 1e3 }, { "ns", 1.0 },   { "m", 60e9 },
		{ "h", 3600e9 },
	};
	double v, ns;
	char *end;
	size_t i;

	if (arg == NULL || parse_real(arg, &v, &end) < 0)
		goto bad;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(end, units[i].unit) == 0)
			break;
	if (i == sizeof(units) / sizeof(units[0]))
		goto bad;
	ns = v * units[i].ns;
	if (ns < (double)min_ns || ns > (double)max_ns) {
		cli_error("%s: %s is out of range (%.9g s to %.9g s)", opt, arg,
		          (double)min_ns / 1e9, (double)max_ns / 1e9);
		return CLI_EBADARG;
	}
	*out_ns = (uint64_t)llround(ns);
	return 0;
bad:
	cli_error("%s: '%s' is not a duration (a number with an optional unit "
	          "ns, us, ms, s, m or h; e.g. 10s, 500ms)", opt,
	          arg ? arg : "");
	return CLI_EBADARG;
}

int cli_parse_size(const char *opt, const char *arg, uint64_t min,
                   uint64_t max, uint64_t *out)
{
	unsigned long long v;
	uint64_t mul = 1;
	char *end;

	if (arg == NULL || !isdigit((unsigned char)arg[0]))
		goto bad;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno == ERANGE)
		goto range;
	if (*end == 'k' || *end == 'K')
		mul = 1024, end++;
	else if (*end == 'm' || *end == 'M')
		mul = 1024 * 1024, end++;
	if (*end != '\0')
		goto bad;
	if (v > max / mul || v * mul < min)
		goto range;
	*out = v * mul;
	return 0;
bad:
	cli_error("%s: '%s' is not a size in bytes (e.g. 64, 4k, 1M)", opt,
	          arg ? arg : "");
	return CLI_EBADARG;
range:
	cli_error("%s: %s is out of range (%llu to %llu bytes)", opt, arg,
	          (unsigned long long)min, (unsigned long long)max);
	return CLI_EBADARG;
}

int cli_raise_nofile(uint64_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		cli_error("cannot read the open-file limit: %s",
		          strerror(errno));
		return CLI_EBADARG;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		/* failure is harmless: the check below tells what matters */
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		cli_error("this run needs about %llu open files but the limit "
		          "is %llu (hard limit %llu); raise it, e.g. "
		          "'ulimit -n %llu' as root",
		          (unsigned long long)need,
		          (unsigned long long)rl.rlim_cur,
		          (unsigned long long)rl.rlim_max,
		          (unsigned long long)need);
		return CLI_EBADARG;
	}
	return 0;
}

int cli_signalfd(int extra_sig)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (extra_sig)
		sigaddset(&set, extra_sig);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int cli_write_ready(const char *path)
{
	struct afile af;
	int rv;

	rv = afile_open(&af, path);
	if (rv < 0)
		return rv;
	errno = 0;
	if (fputs("ready\n", af.fp) == EOF) {
		rv = errno ? -errno : -EIO;
		afile_abort(&af);
		return rv;
	}
	return afile_commit(&af);
}
