/*
 * lead.h: how early the link emulator arms its timer before a
 * departure.
 *
 * A timer wakes a sleeping process some tens of microseconds late on a
 * virtual machine; a departure served by that wake-up is late by as much.
 * The emulator therefore arms the timer `lead` ns before the departure and
 * polls without sleeping for the rest. A fixed lead large enough for the
 * worst wake-ups burns CPU on every departure; this tracker instead follows
 * a high quantile (LINKEM_LEAD_Q) of the wake-up latencies actually seen,
 * capped at a maximum (--spin-us), so the poll is short when wake-ups are
 * prompt and longer only where the machine needs it.
 *
 * The tracker is the usual stochastic quantile estimate: each sample above
 * the estimate raises it by Q*step, each sample at or below lowers it by
 * (1-Q)*step; it settles where a fraction Q of samples lie below. Pure
 * logic: latencies are arguments.
 */
#ifndef LINKEM_LEAD_H
#define LINKEM_LEAD_H

#include <stdint.h>

/* Quantile followed, as parts per LINKEM_LEAD_DEN. */
#define LINKEM_LEAD_Q 90
#define LINKEM_LEAD_DEN 100
/* Step of the estimate per sample, ns: (Q, 1-Q) * step = (900, 100) ns. */
#define LINKEM_LEAD_STEP 1000

typedef struct linkem_lead {
	int64_t est; /* current estimate of the quantile, ns */
	int64_t max; /* cap: the lead never exceeds it; 0 = never poll */
} linkem_lead;

/* Start at half the cap. */
void linkem_lead_init(linkem_lead *l, int64_t max_ns);

/* One observed wake-up latency (ns; the actual wake-up minus the time the
 * timer was armed for). */
void linkem_lead_update(linkem_lead *l, int64_t latency_ns);

/* The lead to use now, in [0, max]. */
int64_t linkem_lead_get(const linkem_lead *l);

#endif
