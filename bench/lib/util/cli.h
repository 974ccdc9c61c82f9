/*
 * cli.h: what every benchmark binary (loadgen, sink, linkem, the gateway)
 * shares on its command line and in its process setup: strict number,
 * duration and size parsers, one-line errors, the open-file limit, a
 * signalfd, the ready file. The options of the MQTT client binaries
 * (broker, transport, TLS, MQTT) are in app/options.h.
 *
 * Every parser prints one line on stderr naming the option, the value and
 * what is accepted, and returns CLI_EBADARG; the caller exits non-zero.
 */
#ifndef CLI_H
#define CLI_H

#include <getopt.h>
#include <stdint.h>

#define CLI_EBADARG -501

/* Exit statuses of every binary: 0 success, 1 a runtime failure, 2 a usage
 * error (bad option or value). */
#define CLI_EXIT_RUNTIME 1
#define CLI_EXIT_USAGE 2

/* Name the messages start with ("loadgen", "sink"); set once in main. */
extern const char *cli_prog;

/* "<prog>: error: <message>" on stderr, one line. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* cli_error(), then exit(CLI_EXIT_USAGE). */
void cli_die_usage(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

/* Unsigned integer in [min, max], decimal only; no sign, no suffix. */
int cli_parse_u64(const char *opt, const char *arg, uint64_t min,
                  uint64_t max, uint64_t *out);
/* Finite real number in [min, max]. */
int cli_parse_double(const char *opt, const char *arg, double min, double max,
                     double *out);
/*
 * Duration: a number with an optional unit ns, us, ms, s (default), m, h;
 * e.g. "10", "2.5s", "500ms". Must lie in [min_ns, max_ns].
 */
int cli_parse_duration(const char *opt, const char *arg, uint64_t min_ns,
                       uint64_t max_ns, uint64_t *out_ns);
/* Size in bytes: integer with optional k/K (1024) or m/M (1048576). */
int cli_parse_size(const char *opt, const char *arg, uint64_t min,
                   uint64_t max, uint64_t *out);

/*
 * Raise RLIMIT_NOFILE's soft limit to the hard limit and check that `need`
 * descriptors fit. Returns 0, or CLI_EBADARG after printing one line that
 * says how many are needed, what the limits are, and what to do.
 */
int cli_raise_nofile(uint64_t need);

/*
 * Block SIGINT and SIGTERM (and extra_sig, when not 0: SIGUSR1 for the
 * binaries that act on it) and return a signalfd that reports them (for
 * the event loop), or -1 with errno set. SIGPIPE is ignored as well: a
 * broken connection is an error result, not a reason to die.
 */
int cli_signalfd(int extra_sig);

/*
 * Write "ready\n" to path through afile (afile.h: a regular file appears
 * atomically, a symbolic link is followed, a device or pipe is written to
 * directly): tells a test or the runner that the process is connected (and
 * subscribed). 0 or -errno.
 */
int cli_write_ready(const char *path);

#endif /* CLI_H */
