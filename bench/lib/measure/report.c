/*
 * report.c: JSON documents of the benchmark processes. See report.h.
 */
#include "measure/report.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "util/afile.h"
#include "util/version.h"

uint64_t report_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void report_set(json_t *obj, const char *key, json_t *value)
{
	if (value != NULL)
		json_object_set_new(obj, key, value);
}

json_t *report_time(uint64_t wall_ns)
{
	time_t sec = (time_t)(wall_ns / 1000000000u);
	unsigned int ms = (unsigned int)(wall_ns % 1000000000u / 1000000u);
	struct tm tm;
	char buf[64];

	gmtime_r(&sec, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	         tm.tm_min, tm.tm_sec, ms);
	return json_pack("{s:s, s:f}", "iso", buf, "unix",
	                 (double)wall_ns / 1e9);
}

json_t *report_us(uint64_t ns)
{
	return json_real((double)ns / 1000.0);
}

json_t *report_span_us(int64_t from, int64_t to)
{
	if (from <= 0 || to < from)
		return json_null();
	return report_us((uint64_t)(to - from));
}

_Static_assert(sizeof(json_int_t) == sizeof(int64_t),
               "jansson's integers are expected to be 64-bit");

json_t *report_u64(uint64_t v)
{
	if (v > (uint64_t)INT64_MAX)
		return json_real((double)v);
	return json_integer((json_int_t)v);
}

/* Versions of what produced the figures, and where they were produced. */
static json_t *report_meta(void)
{
	json_t *meta = json_object();
	struct utsname u;
	char host[256];

	if (meta == NULL)
		return NULL;
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		report_set(meta, "hostname", json_string(host));
	}
	if (uname(&u) == 0) {
		report_set(meta, "kernel",
		           json_pack("{s:s, s:s, s:s}", "sysname", u.sysname,
		                     "release", u.release, "machine",
		                     u.machine));
	}
	report_set(meta, "pid", json_integer((json_int_t)getpid()));
	report_set(meta, "versions",
	           json_pack("{s:s, s:s, s:s}", "tool", BENCH_VERSION,
	                     "jansson", JANSSON_VERSION, "compiler",
#ifdef __VERSION__
	                     __VERSION__
#else
	                     "unknown"
#endif
	                     ));
#if defined(__SANITIZE_ADDRESS__)
	report_set(meta, "build", json_string("asan"));
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	report_set(meta, "build", json_string("asan"));
#else
	report_set(meta, "build", json_string("release"));
#endif
#else
	report_set(meta, "build", json_string("release"));
#endif
	return meta;
}

json_t *report_new(const char *tool)
{
	json_t *doc = json_object();

	if (doc == NULL)
		return NULL;
	report_set(doc, "tool", json_string(tool));
	report_set(doc, "tool_version", json_string(BENCH_VERSION));
	report_set(doc, "schema", json_integer(REPORT_SCHEMA));
	report_set(doc, "meta", report_meta());
	report_set(doc, "errors", json_array());
	return doc;
}

void report_add_version(json_t *doc, const char *name, const char *version)
{
	json_t *v = json_object_get(json_object_get(doc, "meta"), "versions");

	if (v != NULL)
		report_set(v, name, json_string(version ? version : "unknown"));
}

json_t *report_hist(const struct stats_hist *h, int with_buckets)
{
	json_t *o = json_object(), *b;
	size_t pos = 0;
	uint64_t v, n;

	if (o == NULL)
		return NULL;
	report_set(o, "count", report_u64(h->count));
	if (h->count) {
		report_set(o, "min_us", report_us(h->min));
		report_set(o, "mean_us", json_real(stats_hist_mean(h) / 1e3));
		report_set(o, "p50_us",
		           report_us(stats_hist_percentile(h, 50.0)));
		report_set(o, "p90_us",
		           report_us(stats_hist_percentile(h, 90.0)));
		report_set(o, "p99_us",
		           report_us(stats_hist_percentile(h, 99.0)));
		report_set(o, "p99_9_us",
		           report_us(stats_hist_percentile(h, 99.9)));
		report_set(o, "max_us", report_us(h->max));
	} else {
		/* no values: say so with nulls rather than invent zeros */
		const char *keys[] = { "min_us", "mean_us", "p50_us", "p90_us",
		                       "p99_us", "p99_9_us", "max_us" };
		size_t i;

		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			report_set(o, keys[i], json_null());
	}
	report_set(o, "clamped", report_u64(h->clamped));
	if (with_buckets) {
		b = json_array();
		if (b == NULL)
			return o;
		while (stats_hist_next(h, &pos, &v, &n))
			json_array_append_new(
				b, json_pack("[o, o]", report_u64(v),
				             report_u64(n)));
		report_set(o, "buckets", b);
	}
	return o;
}

static double tv_sec(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/*
 * The main thread's time waiting on a run queue, runnable but not running
 * (the second field of /proc/self/schedstat, ns): how much the CPU was
 * contended for this process. 0, or -1 if the kernel does not tell.
 */
static int run_queue_delay_ns(uint64_t *wait_ns)
{
	FILE *f = fopen("/proc/self/schedstat", "r");
	unsigned long long run, wait;
	int n;

	if (f == NULL)
		return -1;
	n = fscanf(f, "%llu %llu", &run, &wait);
	fclose(f);
	if (n != 2)
		return -1;
	*wait_ns = wait;
	return 0;
}

/*
 * This process's own peak resident set (KiB) from VmHWM in
 * /proc/self/status, or -1. getrusage's ru_maxrss is not it: the kernel
 * carries the peak across execve, so a binary started by a large parent
 * (the runner's Python) reports the parent's peak.
 */
static long peak_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[128];
	long kib = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

json_t *report_resources(void)
{
	struct rusage ru;
	double user, sys;
	uint64_t wait_ns;
	long peak;
	json_t *o;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return json_null();
	peak = peak_rss_kib();
	user = tv_sec(&ru.ru_utime);
	sys = tv_sec(&ru.ru_stime);
	o = json_pack("{s:f, s:f, s:f, s:I, s:I, s:I}", "cpu_user_s", user,
	              "cpu_sys_s", sys, "cpu_total_s", user + sys,
	              "max_rss_kib",
	              (json_int_t)(peak >= 0 ? peak : ru.ru_maxrss),
	              "voluntary_ctx_switches", (json_int_t)ru.ru_nvcsw,
	              "involuntary_ctx_switches", (json_int_t)ru.ru_nivcsw);
	if (o != NULL)
		report_set(o, "run_queue_delay_us",
		           run_queue_delay_ns(&wait_ns) == 0 ? report_us(wait_ns)
		                                             : json_null());
	return o;
}

long report_rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size, resident = -1;

	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &resident) != 2)
		resident = -1;
	fclose(f);
	if (resident < 0)
		return -1;
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

void report_error(json_t *doc, const char *fmt, ...)
{
	json_t *errs = json_object_get(doc, "errors");
	char buf[512];
	va_list ap;

	if (errs == NULL) {
		errs = json_array();
		report_set(doc, "errors", errs);
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	json_array_append_new(errs,
	                      json_pack("{s:o, s:s}", "time",
	                                report_time(report_wall_ns()),
	                                "message", buf));
}

static const size_t JSON_FLAGS = JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                 JSON_REAL_PRECISION(15);

int report_write(const json_t *doc, const char *path)
{
	struct afile af;
	int rv;

	if (path == NULL || strcmp(path, "-") == 0) {
		if (json_dumpf(doc, stdout, JSON_FLAGS) != 0)
			return -EIO;
		fputc('\n', stdout);
		return fflush(stdout) == 0 ? 0 : -errno;
	}
	rv = afile_open(&af, path);
	if (rv < 0)
		return rv;
	errno = 0;
	if (json_dumpf(doc, af.fp, JSON_FLAGS) != 0 ||
	    fputc('\n', af.fp) == EOF) {
		rv = errno ? -errno : -EIO;
		afile_abort(&af);
		return rv;
	}
	return afile_commit(&af);
}
