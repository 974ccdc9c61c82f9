/*
 * evloop.h: a small event loop over epoll, with I/O watchers and timers.
 *
 * One loop per thread carries thousands of connections. Watchers and timers
 * are embedded in the caller's objects (no allocation per watcher); the loop
 * only keeps pointers to them, so a watcher must be stopped before the memory
 * holding it is freed. Stopping a watcher from any callback is safe, also
 * when an event for it is already pending in the current batch: the loop
 * drops that event.
 *
 * Time is CLOCK_MONOTONIC in nanoseconds (int64_t), absolute. Timers live in
 * a binary min-heap: start, stop and restart are O(log n). The loop waits
 * with epoll_pwait2() (nanosecond timeout) and falls back to epoll_wait()
 * (millisecond timeout, rounded up so a timer never fires early) where the
 * kernel lacks it.
 *
 * Epoll is level-triggered: a watcher whose fd stays readable is called again
 * on the next round, so a callback may stop reading at any point.
 */
#ifndef EVLOOP_H
#define EVLOOP_H

#include <stddef.h>
#include <stdint.h>

/* Event bits, equal to EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP. */
#define EV_READ 0x001u
#define EV_WRITE 0x004u
#define EV_ERROR 0x008u /* only reported, never requested */
#define EV_HUP 0x010u   /* only reported, never requested */

#define EV_NS_PER_SEC INT64_C(1000000000)
#define EV_NS_PER_MS INT64_C(1000000)
/* A time that never comes; also "no deadline" wherever a time is returned. */
#define EV_NEVER INT64_MAX

struct evloop;
struct ev_io;
struct ev_timer;

/* revents: EV_READ/EV_WRITE/EV_ERROR/EV_HUP as reported by epoll. */
typedef void (*ev_io_cb)(struct evloop *loop, struct ev_io *w,
                         uint32_t revents);
typedef void (*ev_timer_cb)(struct evloop *loop, struct ev_timer *t);

/* An I/O watcher. Fields are read-only for the caller after ev_io_init(). */
struct ev_io {
	int fd;
	uint32_t events; /* registered events, 0 when not started */
	int active;      /* 1 while registered with the loop */
	ev_io_cb cb;
	void *arg; /* the caller's, untouched by the loop */
};

/* A one-shot timer; restart it from its callback for periodic behaviour. */
struct ev_timer {
	int64_t at;      /* absolute CLOCK_MONOTONIC ns when armed */
	size_t heap_idx; /* 1-based position in the heap, 0 when not armed */
	ev_timer_cb cb;
	void *arg; /* the caller's, untouched by the loop */
};

/* CLOCK_MONOTONIC now, in nanoseconds (a fresh read, no caching). */
int64_t evloop_clock_ns(void);

/*
 * Create a loop. Returns NULL when out of memory or when epoll_create1 fails
 * (errno tells which).
 */
struct evloop *evloop_new(void);
/* Free a loop. Watchers still registered are forgotten, not called. */
void evloop_del(struct evloop *loop);

/*
 * The loop's cached time: taken when the loop last woke up, before it ran
 * callbacks, so it lags behind the clock by the time callbacks of the round
 * have taken. Cheap; good enough for deadlines. Read evloop_clock_ns() for
 * timestamps that are measured results.
 */
int64_t evloop_now(const struct evloop *loop);

/*
 * Run until evloop_stop() is called from a callback, or until no watcher
 * and no timer is left (nothing could ever wake the loop). Returns 0, or a
 * negative errno when epoll fails for a reason other than EINTR.
 */
int evloop_run(struct evloop *loop);

/*
 * One round: wait at most timeout_ns (EV_NEVER: until something happens;
 * 0: do not block), never beyond the next timer, then dispatch I/O events and
 * expired timers. Returns the number of callbacks run (>= 0) or a negative
 * errno. Tests and programs with their own outer loop use this.
 */
int evloop_run_once(struct evloop *loop, int64_t timeout_ns);

/* Make evloop_run() return after the current round. Async-signal-safe: a
 * signal handler may call it (the wait is interrupted, the loop returns). */
void evloop_stop(struct evloop *loop);

/* Number of timers armed and I/O watchers registered (for tests, stats). */
size_t evloop_timer_count(const struct evloop *loop);
size_t evloop_io_count(const struct evloop *loop);

/* Prepare a watcher; does not register it. */
void ev_io_init(struct ev_io *w, int fd, ev_io_cb cb, void *arg);

/*
 * Register w for `events` (EV_READ|EV_WRITE, or 0 to keep the fd registered
 * and only hear errors/hang-ups), or change the events of a registered
 * watcher. Does no system call when nothing changes. Returns 0 or a negative
 * errno from epoll_ctl.
 */
int ev_io_start(struct evloop *loop, struct ev_io *w, uint32_t events);

/* Unregister w; harmless if it is not registered. Pending events dropped. */
void ev_io_stop(struct evloop *loop, struct ev_io *w);

/* Prepare a timer; does not arm it. */
void ev_timer_init(struct ev_timer *t, ev_timer_cb cb, void *arg);

/*
 * Arm t to fire at absolute time `at` (ns), or move it if already armed.
 * A time in the past fires on the next round. Returns 0 or -ENOMEM (the heap
 * could not grow; the timer is then not armed).
 */
int ev_timer_start(struct evloop *loop, struct ev_timer *t, int64_t at);

/* Disarm t; harmless if it is not armed. */
void ev_timer_stop(struct evloop *loop, struct ev_timer *t);

static inline int ev_timer_active(const struct ev_timer *t)
{
	return t->heap_idx != 0;
}

#endif /* EVLOOP_H */
