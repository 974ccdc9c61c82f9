/*
 * queue.c: one direction of the emulated link (see queue.h).
 */
#include "linkem/queue.h"
#include "util/prng.h"

#include <stdlib.h>
#include <string.h>

#define NS_PER_S 1000000000ull

void linkem_dir_config_default(linkem_dir_config *c)
{
	memset(c, 0, sizeof(*c));
	c->loss_model = LINKEM_LOSS_NONE;
	c->queue_packets = 1000;
}

/* 1 if p is a probability (NaN fails every comparison, so it is caught). */
static int is_prob(double p)
{
	return p >= 0.0 && p <= 1.0;
}

int linkem_dir_config_check(const linkem_dir_config *c)
{
	if (c->rate_bps > LINKEM_RATE_MAX)
		return LINKEM_ERR_INVALID;
	if (c->delay_ns < 0 || c->delay_ns > LINKEM_DELAY_MAX_NS)
		return LINKEM_ERR_INVALID;
	if (c->jitter_ns < 0 || c->jitter_ns > LINKEM_DELAY_MAX_NS)
		return LINKEM_ERR_INVALID;
	switch (c->loss_model) {
	case LINKEM_LOSS_NONE:
		break;
	case LINKEM_LOSS_BERNOULLI:
		if (!is_prob(c->loss_p))
			return LINKEM_ERR_INVALID;
		break;
	case LINKEM_LOSS_GE:
		if (!is_prob(c->ge_p) || !is_prob(c->ge_r) ||
		    !is_prob(c->ge_lb) || !is_prob(c->ge_lg))
			return LINKEM_ERR_INVALID;
		break;
	default:
		return LINKEM_ERR_INVALID;
	}
	if (c->packet_overhead < -LINKEM_OVERHEAD_MAX ||
	    c->packet_overhead > LINKEM_OVERHEAD_MAX ||
	    c->cell_size > LINKEM_OVERHEAD_MAX ||
	    c->cell_overhead > LINKEM_CELL_OVERHEAD_MAX)
		return LINKEM_ERR_INVALID;
	/* a cell is sent as at least nothing; cells need a size */
	if (c->cell_size == 0 ? c->cell_overhead != 0 :
	                        c->cell_overhead < -(int64_t)c->cell_size)
		return LINKEM_ERR_INVALID;
	if (c->loss_per_cell && c->cell_size == 0)
		return LINKEM_ERR_INVALID;
	return 0;
}

/* ---- PRNG: splitmix64 to seed, xoshiro256** to draw ---------------------- */

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void linkem_rng_seed(linkem_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x;
	int i;

	/* Mix the stream number in before expanding, so stream 0 of seed 1
	 * and stream 1 of seed 0 do not share a state sequence. */
	x = seed;
	x = prng_splitmix64(&x) ^ (stream * 0xd1342543de82ef95ull + 1);
	for (i = 0; i < 4; i++)
		r->s[i] = prng_splitmix64(&x);
	/* xoshiro's one forbidden state is all zeros */
	if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
		r->s[0] = 1;
}

uint64_t linkem_rng_next(linkem_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double linkem_rng_uniform(linkem_rng *r)
{
	return (double)(linkem_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t linkem_rng_below(linkem_rng *r, uint64_t n)
{
	/* multiply-shift: the bias is below n / 2^64, far under anything a
	 * jitter of at most 2000 s in ns could show */
	return (uint64_t)(((unsigned __int128)linkem_rng_next(r) * n) >> 64);
}

/* ---- frames -------------------------------------------------------------- */

linkem_frame *linkem_frame_new(size_t len)
{
	linkem_frame *f;

	if (len > LINKEM_FRAME_MAX)
		return NULL;
	f = malloc(sizeof(*f) + len);
	if (!f)
		return NULL;
	f->next = NULL;
	f->len = len;
	return f;
}

void linkem_frame_del(linkem_frame *f)
{
	free(f);
}

/* ---- one direction ------------------------------------------------------- */

/* len + packet_overhead, never below 0 */
static uint64_t with_overhead(const linkem_dir_config *c, uint64_t len)
{
	int64_t l = (int64_t)len + c->packet_overhead;

	return l > 0 ? (uint64_t)l : 0;
}

uint64_t linkem_cells(const linkem_dir_config *c, uint64_t len)
{
	uint64_t l = with_overhead(c, len), n;

	if (c->cell_size == 0)
		return 1;
	n = (l + c->cell_size - 1) / c->cell_size;
	return n ? n : 1;
}

uint64_t linkem_wire_bytes(const linkem_dir_config *c, uint64_t len)
{
	uint64_t l = with_overhead(c, len);

	if (c->cell_size == 0)
		return l;
	/* netem's packet_time_ns: whole cells, the last one padded */
	return (l + c->cell_size - 1) / c->cell_size *
	       (uint64_t)((int64_t)c->cell_size + c->cell_overhead);
}

int64_t linkem_ser_ns(uint64_t len, uint64_t rate_bps, uint64_t *frac)
{
	uint64_t bits_ns = len * 8 * NS_PER_S;

	*frac = bits_ns % rate_bps;
	return (int64_t)(bits_ns / rate_bps);
}

int linkem_dir_init(linkem_dir *d, const linkem_dir_config *c, uint64_t seed,
                    uint64_t stream)
{
	if (linkem_dir_config_check(c) != 0)
		return LINKEM_ERR_INVALID;
	memset(d, 0, sizeof(*d));
	d->cfg = *c;
	linkem_rng_seed(&d->rng, seed, stream);
	linkem_rng_seed(&d->jitter_rng, seed, stream + LINKEM_JITTER_STREAM);
	d->tx_free_ns = INT64_MIN;
	d->dep_ns = INT64_MIN;
	stats_hist_init(&d->queue_delay);
	stats_hist_init(&d->timing_error);
	return 0;
}

void linkem_dir_free(linkem_dir *d)
{
	linkem_frame *f, *next;

	for (f = d->head; f; f = next) {
		next = f->next;
		linkem_frame_del(f);
	}
	d->head = d->tail = d->first_waiting = NULL;
	d->pending_frames = d->pending_bytes = 0;
	d->waiting_frames = d->waiting_bytes = 0;
}

/* Frames whose serialisation has started by now stop counting as waiting. */
static void advance_started(linkem_dir *d, int64_t now)
{
	linkem_frame *f = d->first_waiting;

	while (f && f->start_ns <= now) {
		d->waiting_frames--;
		d->waiting_bytes -= f->len;
		f = f->next;
	}
	d->first_waiting = f;
}

/* One step of the loss model (a frame, or a cell of one): 1 = lost. */
static int loss_step(linkem_dir *d)
{
	const linkem_dir_config *c = &d->cfg;
	int lost;

	switch (c->loss_model) {
	case LINKEM_LOSS_BERNOULLI:
		return linkem_rng_uniform(&d->rng) < c->loss_p;
	case LINKEM_LOSS_GE:
		/* the loss follows the state the frame finds; the transition
		 * then applies to the next frame (netem's order of draws is
		 * the other way round, with the same distribution) */
		if (d->ge_bad) {
			lost = linkem_rng_uniform(&d->rng) < c->ge_lb;
			if (linkem_rng_uniform(&d->rng) < c->ge_r)
				d->ge_bad = 0;
		} else {
			lost = linkem_rng_uniform(&d->rng) < c->ge_lg;
			if (linkem_rng_uniform(&d->rng) < c->ge_p)
				d->ge_bad = 1;
		}
		return lost;
	default:
		return 0;
	}
}

/* The loss model's verdict on a frame of len bytes: 1 = lose it. Per cell,
 * every cell is drawn (the Gilbert-Elliott chain steps once per cell). */
static int loss_decide(linkem_dir *d, size_t len)
{
	uint64_t n, i;
	int lost = 0;

	if (d->cfg.loss_model == LINKEM_LOSS_NONE)
		return 0;
	n = d->cfg.loss_per_cell ? linkem_cells(&d->cfg, len) : 1;
	for (i = 0; i < n; i++)
		lost |= loss_step(d);
	return lost;
}

/* (a_ns + a_frac/rate) < (b_ns + b_frac/rate), both fractions < rate */
static int exact_before(int64_t a_ns, uint64_t a_frac, int64_t b_ns,
                        uint64_t b_frac)
{
	return a_ns != b_ns ? a_ns < b_ns : a_frac < b_frac;
}

int linkem_dir_input(linkem_dir *d, const uint8_t *data, size_t len,
                     int64_t now)
{
	const linkem_dir_config *c = &d->cfg;
	linkem_frame *f;
	int64_t start_ns, end_ns, start_up, delay, ser = 0;
	int64_t dep_ns, min_ns;
	uint64_t start_frac, end_frac, ser_frac = 0, dep_frac, min_frac;
	int busy;

	if (len == 0 || len > LINKEM_FRAME_MAX)
		return LINKEM_ERR_INVALID;
	d->st.frames_in++;
	d->st.bytes_in += len;
	if (len > d->st.frame_max)
		d->st.frame_max = len;

	if (loss_decide(d, len)) {
		d->st.dropped_loss++;
		d->st.bytes_dropped_loss += len;
		return LINKEM_DROPPED_LOSS;
	}

	advance_started(d, now);
	/* The transmitter is busy if it frees up only after now (exactly, with
	 * the fraction); then the frame would wait and the limits apply. */
	busy = c->rate_bps != 0 &&
	       (d->tx_free_ns > now ||
	        (d->tx_free_ns == now && d->tx_free_frac != 0));
	if (busy && (d->waiting_frames >= c->queue_packets ||
	             (c->queue_bytes != 0 &&
	              d->waiting_bytes + len > c->queue_bytes))) {
		d->st.dropped_queue++;
		d->st.bytes_dropped_queue += len;
		return LINKEM_DROPPED_QUEUE;
	}

	f = linkem_frame_new(len);
	if (!f) {
		d->st.dropped_queue++;
		d->st.bytes_dropped_queue += len;
		return LINKEM_ERR_NOMEM;
	}
	memcpy(f->data, data, len);

	if (busy) {
		start_ns = d->tx_free_ns;
		start_frac = d->tx_free_frac;
	} else {
		start_ns = now;
		start_frac = 0;
	}
	if (c->rate_bps != 0) {
		ser = linkem_ser_ns(linkem_wire_bytes(c, len), c->rate_bps,
		                    &ser_frac);
		end_frac = start_frac + ser_frac; /* < 2 * rate, no overflow */
		end_ns = start_ns + ser + (int64_t)(end_frac / c->rate_bps);
		end_frac %= c->rate_bps;
	} else {
		end_ns = start_ns;
		end_frac = 0;
	}
	d->tx_free_ns = end_ns;
	d->tx_free_frac = end_frac;

	/* whole-ns times round up: a frame is not out before its last bit */
	start_up = start_ns + (start_frac != 0);

	delay = c->delay_ns;
	if (c->jitter_ns > 0) {
		delay += (int64_t)linkem_rng_below(
			         &d->jitter_rng,
			         2 * (uint64_t)c->jitter_ns + 1) -
		         c->jitter_ns;
		if (delay < 0)
			delay = 0;
	}
	/* departure, exactly: end of serialisation + delay, but not before
	 * the frame ahead has left plus this frame's own serialisation time
	 * (jitter never reorders, nor packs frames tighter than the rate) */
	dep_ns = end_ns + delay;
	dep_frac = end_frac;
	if (d->dep_ns != INT64_MIN) {
		min_frac = d->dep_frac + ser_frac;
		min_ns = d->dep_ns + ser;
		if (c->rate_bps != 0) {
			min_ns += (int64_t)(min_frac / c->rate_bps);
			min_frac %= c->rate_bps;
		}
		if (exact_before(dep_ns, dep_frac, min_ns, min_frac)) {
			dep_ns = min_ns;
			dep_frac = min_frac;
		}
	}
	d->dep_ns = dep_ns;
	d->dep_frac = dep_frac;

	f->arrival_ns = now;
	f->start_ns = start_up;
	f->depart_ns = dep_ns + (dep_frac != 0);
	if (d->tail)
		d->tail->next = f;
	else
		d->head = f;
	d->tail = f;
	d->pending_frames++;
	d->pending_bytes += len;
	if (start_up > now) {
		d->waiting_frames++;
		d->waiting_bytes += len;
		if (!d->first_waiting)
			d->first_waiting = f;
	}
	stats_hist_add(&d->queue_delay, (uint64_t)(start_up - now));
	return LINKEM_ACCEPTED;
}

int64_t linkem_dir_next(const linkem_dir *d)
{
	return d->head ? d->head->depart_ns : INT64_MAX;
}

linkem_frame *linkem_dir_pop(linkem_dir *d, int64_t now)
{
	linkem_frame *f = d->head;

	if (!f || f->depart_ns > now)
		return NULL;
	/* departure >= start, so this moves first_waiting past f */
	advance_started(d, now);
	d->head = f->next;
	if (!d->head)
		d->tail = NULL;
	f->next = NULL;
	d->pending_frames--;
	d->pending_bytes -= f->len;
	d->st.frames_out++;
	d->st.bytes_out += f->len;
	return f;
}

uint64_t linkem_dir_pending_frames(const linkem_dir *d)
{
	return d->pending_frames;
}

uint64_t linkem_dir_pending_bytes(const linkem_dir *d)
{
	return d->pending_bytes;
}

uint64_t linkem_dir_waiting_frames(linkem_dir *d, int64_t now)
{
	advance_started(d, now);
	return d->waiting_frames;
}

uint64_t linkem_dir_waiting_bytes(linkem_dir *d, int64_t now)
{
	advance_started(d, now);
	return d->waiting_bytes;
}
