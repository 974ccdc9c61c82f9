/*
 * report.h: the JSON document every benchmark process writes when it ends
 * (jansson), and what goes into it besides the figures: run metadata
 * (versions, host, kernel, build), wall-clock timestamps, CPU time and peak
 * resident memory.
 *
 * Documents describe themselves: "tool", "tool_version" and "schema" first,
 * then "meta", "config", the figures, "resources" and "errors". Durations are
 * given in microseconds as numbers with ns resolution ("_us"), counters as
 * integers, timestamps as ISO 8601 UTC strings plus Unix seconds.
 */
#ifndef REPORT_H
#define REPORT_H

#include <stdint.h>

#include <jansson.h>

#include "measure/stats.h"

/* Version of the JSON layout the tools write (the tools' own version is
 * util/version.h). */
#define REPORT_SCHEMA 1

/* Wall clock (CLOCK_REALTIME) in ns, for the documents' timestamps. The
 * monotonic clock of intervals and payload stamps is evloop_clock_ns(). */
uint64_t report_wall_ns(void);

/*
 * A new document for `tool` (e.g. "loadgen") with "tool", "tool_version",
 * "schema" and "meta" filled in ("meta.versions" names the tool, jansson
 * and the compiler; binaries add the libraries they link, see
 * report_add_version). NULL when memory runs out.
 */
json_t *report_new(const char *tool);

/* {"iso": "2024-01-02T03:04:05.678Z", "unix": 1704164645.678} */
json_t *report_time(uint64_t wall_ns);

/* Microseconds with ns resolution, as a JSON real. */
json_t *report_us(uint64_t ns);

/* to - from in microseconds; null when from is unset (<= 0) or to < from. */
json_t *report_span_us(int64_t from, int64_t to);

/*
 * An unsigned counter as a JSON number, never cast to a negative one: an
 * integer up to INT64_MAX (jansson's integers are signed), a real above.
 */
json_t *report_u64(uint64_t v);

/*
 * Summary of a histogram: count, min/mean/p50/p90/p99/p99_9/max in us,
 * clamped; with_buckets adds "buckets": [[value_ns, count], ...] for every
 * non-empty bucket (midpoint values) so that distributions of several
 * processes can be merged and CDFs drawn from the JSON alone.
 */
json_t *report_hist(const struct stats_hist *h, int with_buckets);

/*
 * CPU time (user, system, total, in seconds) and context switches of
 * this process so far, from getrusage(RUSAGE_SELF); its own peak RSS
 * (KiB, VmHWM: getrusage's would carry the peak of the process that
 * exec'd it); and
 * "run_queue_delay_us", the time its main thread spent runnable but
 * waiting for a CPU (/proc/self/schedstat; null where the kernel does not
 * keep it): what tells that the machine's CPUs were contended.
 */
json_t *report_resources(void);

/* Current resident set size in KiB (from /proc/self/statm), -1 if unknown. */
long report_rss_kib(void);

/* Add name: version to the document's "meta.versions". */
void report_add_version(json_t *doc, const char *name, const char *version);

/* Append {"time": <iso>, "message": ...} to the document's "errors" array. */
void report_error(json_t *doc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Set key to value, taking the reference; ignores a NULL value. */
void report_set(json_t *obj, const char *key, json_t *value);

/*
 * Write the document (pretty-printed, keys in insertion order) to `path`:
 * NULL or "-" means stdout; otherwise through afile (afile.h): a regular file
 * is replaced atomically (a reader never sees half of it), a symbolic link
 * keeps pointing at the new file, and a device or pipe (/dev/null,
 * /dev/stdout) is written to directly. Returns 0 or a negative errno value.
 */
int report_write(const json_t *doc, const char *path);

#endif /* REPORT_H */
