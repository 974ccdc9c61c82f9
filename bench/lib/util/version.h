/*
 * version.h: the version of the benchmark tools, written by every binary's
 * --version and into every JSON document it writes.
 */
#ifndef UTIL_VERSION_H
#define UTIL_VERSION_H

#define BENCH_VERSION "0.1.0"

#endif /* UTIL_VERSION_H */
