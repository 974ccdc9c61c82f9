/*
 * lead.c: timer lead tracker (see lead.h).
 */
#include "linkem/lead.h"

void linkem_lead_init(linkem_lead *l, int64_t max_ns)
{
	l->max = max_ns > 0 ? max_ns : 0;
	l->est = l->max / 2;
}

void linkem_lead_update(linkem_lead *l, int64_t latency_ns)
{
	if (latency_ns > l->est)
		l->est += LINKEM_LEAD_STEP * LINKEM_LEAD_Q / LINKEM_LEAD_DEN;
	else
		l->est -= LINKEM_LEAD_STEP * (LINKEM_LEAD_DEN - LINKEM_LEAD_Q) /
		          LINKEM_LEAD_DEN;
	/* clamp so that a long run of outliers (a descheduled process) or of
	 * prompt wake-ups cannot wind the estimate far outside the cap */
	if (l->est < 0)
		l->est = 0;
	if (l->est > l->max)
		l->est = l->max;
}

int64_t linkem_lead_get(const linkem_lead *l)
{
	return l->est;
}
