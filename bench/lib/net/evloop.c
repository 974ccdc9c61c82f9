/*
 * evloop.c: epoll event loop with a binary min-heap of timers.
 */
#include "net/evloop.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

_Static_assert(EV_READ == EPOLLIN, "EV_READ must equal EPOLLIN");
_Static_assert(EV_WRITE == EPOLLOUT, "EV_WRITE must equal EPOLLOUT");
_Static_assert(EV_ERROR == EPOLLERR, "EV_ERROR must equal EPOLLERR");
_Static_assert(EV_HUP == EPOLLHUP, "EV_HUP must equal EPOLLHUP");

/* Events taken per epoll wait: enough for busy loops, small on the stack. */
#define EV_BATCH 256

struct evloop {
	int epfd;
	volatile sig_atomic_t stop; /* evloop_stop() may run in a handler */
	int no_pwait2; /* kernel said ENOSYS once: use epoll_wait */
	int64_t now;
	size_t n_io;
	/* heap[0..n_timers) of armed timers, ordered by `at` */
	struct ev_timer **heap;
	size_t n_timers, cap_timers;
	/* events of the round being dispatched; ev_io_stop() clears entries
	 * that point to the stopped watcher so they are not delivered */
	struct epoll_event *pending;
	int n_pending;
};

int64_t evloop_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * EV_NS_PER_SEC + ts.tv_nsec;
}

struct evloop *evloop_new(void)
{
	struct evloop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		int e = errno;

		free(loop);
		errno = e;
		return NULL;
	}
	loop->now = evloop_clock_ns();
	return loop;
}

void evloop_del(struct evloop *loop)
{
	size_t i;

	if (!loop)
		return;
	/* Forget armed timers so their owners see them as stopped. */
	for (i = 0; i < loop->n_timers; i++)
		loop->heap[i]->heap_idx = 0;
	close(loop->epfd);
	free(loop->heap);
	free(loop);
}

int64_t evloop_now(const struct evloop *loop)
{
	return loop->now;
}

void evloop_stop(struct evloop *loop)
{
	loop->stop = 1;
}

size_t evloop_timer_count(const struct evloop *loop)
{
	return loop->n_timers;
}

size_t evloop_io_count(const struct evloop *loop)
{
	return loop->n_io;
}

/* ---- I/O watchers ---- */

void ev_io_init(struct ev_io *w, int fd, ev_io_cb cb, void *arg)
{
	w->fd = fd;
	w->events = 0;
	w->active = 0;
	w->cb = cb;
	w->arg = arg;
}

int ev_io_start(struct evloop *loop, struct ev_io *w, uint32_t events)
{
	struct epoll_event ev;

	events &= EV_READ | EV_WRITE;
	if (w->active && w->events == events)
		return 0;
	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.ptr = w;
	if (epoll_ctl(loop->epfd, w->active ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
	              w->fd, &ev) < 0)
		return -errno;
	if (!w->active)
		loop->n_io++;
	w->active = 1;
	w->events = events;
	return 0;
}

void ev_io_stop(struct evloop *loop, struct ev_io *w)
{
	int i;

	if (!w->active)
		return;
	/* The fd may already be closed (then the kernel dropped it itself);
	 * an error here is harmless. */
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->active = 0;
	w->events = 0;
	loop->n_io--;
	for (i = 0; i < loop->n_pending; i++)
		if (loop->pending[i].data.ptr == w)
			loop->pending[i].data.ptr = NULL;
}

/* ---- timers: binary min-heap, heap_idx is 1-based ---- */

static void heap_set(struct evloop *loop, size_t i, struct ev_timer *t)
{
	loop->heap[i] = t;
	t->heap_idx = i + 1;
}

static void heap_up(struct evloop *loop, size_t i)
{
	struct ev_timer *t = loop->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (loop->heap[parent]->at <= t->at)
			break;
		heap_set(loop, i, loop->heap[parent]);
		i = parent;
	}
	heap_set(loop, i, t);
}

static void heap_down(struct evloop *loop, size_t i)
{
	struct ev_timer *t = loop->heap[i];
	size_t n = loop->n_timers;

	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m;

		if (l >= n)
			break;
		m = (r < n && loop->heap[r]->at < loop->heap[l]->at) ? r : l;
		if (t->at <= loop->heap[m]->at)
			break;
		heap_set(loop, i, loop->heap[m]);
		i = m;
	}
	heap_set(loop, i, t);
}

void ev_timer_init(struct ev_timer *t, ev_timer_cb cb, void *arg)
{
	t->at = 0;
	t->heap_idx = 0;
	t->cb = cb;
	t->arg = arg;
}

int ev_timer_start(struct evloop *loop, struct ev_timer *t, int64_t at)
{
	if (t->heap_idx) {
		size_t i = t->heap_idx - 1;
		int64_t old = t->at;

		t->at = at;
		if (at < old)
			heap_up(loop, i);
		else if (at > old)
			heap_down(loop, i);
		return 0;
	}
	if (loop->n_timers == loop->cap_timers) {
		size_t cap = loop->cap_timers ? loop->cap_timers * 2 : 64;
		struct ev_timer **h = realloc(loop->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		loop->heap = h;
		loop->cap_timers = cap;
	}
	t->at = at;
	loop->heap[loop->n_timers] = t;
	t->heap_idx = loop->n_timers + 1;
	loop->n_timers++;
	heap_up(loop, loop->n_timers - 1);
	return 0;
}

void ev_timer_stop(struct evloop *loop, struct ev_timer *t)
{
	size_t i;
	struct ev_timer *last;

	if (!t->heap_idx)
		return;
	i = t->heap_idx - 1;
	t->heap_idx = 0;
	loop->n_timers--;
	if (i == loop->n_timers)
		return;
	last = loop->heap[loop->n_timers];
	heap_set(loop, i, last);
	/* The moved element may belong above or below its new place. */
	if (i > 0 && loop->heap[(i - 1) / 2]->at > last->at)
		heap_up(loop, i);
	else
		heap_down(loop, i);
}

/* ---- the loop ---- */

/*
 * Wait for events at most until `deadline` (absolute ns, EV_NEVER: no limit).
 * Returns the number of events or a negative errno (-EINTR included).
 */
static int wait_events(struct evloop *loop, struct epoll_event *evs,
                       int64_t deadline)
{
	int64_t wait_ns;
	int n;

	if (deadline == EV_NEVER) {
		wait_ns = -1;
	} else {
		wait_ns = deadline - evloop_clock_ns();
		if (wait_ns < 0)
			wait_ns = 0;
	}
	if (!loop->no_pwait2) {
		struct timespec ts, *tsp = NULL;

		if (wait_ns >= 0) {
			ts.tv_sec = wait_ns / EV_NS_PER_SEC;
			ts.tv_nsec = wait_ns % EV_NS_PER_SEC;
			tsp = &ts;
		}
		n = epoll_pwait2(loop->epfd, evs, EV_BATCH, tsp, NULL);
		if (n >= 0)
			return n;
		if (errno != ENOSYS)
			return -errno;
		loop->no_pwait2 = 1;
	}
	{
		int ms;

		if (wait_ns < 0)
			ms = -1;
		else if (wait_ns > (int64_t)INT32_MAX * EV_NS_PER_MS)
			ms = INT32_MAX;
		else /* round up: waking early would spin until the timer */
			ms = (int)((wait_ns + EV_NS_PER_MS - 1) / EV_NS_PER_MS);
		n = epoll_wait(loop->epfd, evs, EV_BATCH, ms);
	}
	return n >= 0 ? n : -errno;
}

/*
 * Run timers due at loop->now. A timer re-armed for a time that is already
 * due waits for the next round, so a callback cannot spin the loop here:
 * only as many timers as were armed at the start are looked at.
 */
static int run_timers(struct evloop *loop)
{
	size_t budget = loop->n_timers;
	int ran = 0;

	while (budget-- > 0 && loop->n_timers > 0) {
		struct ev_timer *t = loop->heap[0];

		if (t->at > loop->now)
			break;
		ev_timer_stop(loop, t);
		t->cb(loop, t);
		ran++;
	}
	return ran;
}

int evloop_run_once(struct evloop *loop, int64_t timeout_ns)
{
	struct epoll_event evs[EV_BATCH];
	int64_t deadline = EV_NEVER;
	int n, i, ran = 0;

	if (timeout_ns < EV_NEVER / 2) /* beyond that: as good as never */
		deadline = evloop_clock_ns() + (timeout_ns > 0 ? timeout_ns : 0);
	if (loop->n_timers > 0 && loop->heap[0]->at < deadline)
		deadline = loop->heap[0]->at;

	n = wait_events(loop, evs, deadline);
	loop->now = evloop_clock_ns();
	if (n < 0) {
		if (n != -EINTR)
			return n;
		n = 0;
	}
	loop->pending = evs;
	loop->n_pending = n;
	for (i = 0; i < n; i++) {
		struct ev_io *w = evs[i].data.ptr;

		if (!w) /* stopped by an earlier callback of this round */
			continue;
		w->cb(loop, w, evs[i].events);
		ran++;
	}
	loop->pending = NULL;
	loop->n_pending = 0;
	if (loop->n_timers > 0 && loop->heap[0]->at <= loop->now)
		ran += run_timers(loop);
	return ran;
}

int evloop_run(struct evloop *loop)
{
	loop->stop = 0;
	/* With nothing registered the loop could never wake up. */
	while (!loop->stop && (loop->n_io > 0 || loop->n_timers > 0)) {
		int r = evloop_run_once(loop, EV_NEVER);

		if (r < 0)
			return r;
	}
	return 0;
}
