/*
 * queue.h: the link emulator's logic for one direction of a link,
 * without I/O and without a clock.
 *
 * The caller hands in each frame with the time it arrived and asks for
 * frames whose departure time has come; "now" is always an argument in
 * nanoseconds on any monotonic time line (CLOCK_MONOTONIC in bench/cmd/
 * linkem.c, a virtual clock in the tests). Calls must pass non-decreasing
 * times.
 *
 * Per frame, in this order:
 *   1. the loss model (none, Bernoulli, Gilbert-Elliott) decides at arrival,
 *      once per frame or, with loss_per_cell, once per cell of the frame
 *      (the frame is lost if any of its cells is);
 *   2. the drop-tail check: a frame that would have to wait for the
 *      transmitter is dropped when the frames already waiting reach
 *      queue_packets, or their bytes plus its own exceed queue_bytes;
 *   3. FIFO serialisation at rate_bps of the frame's wire size
 *      (linkem_wire_bytes: the frame plus packet_overhead, in cells of
 *      cell_size + cell_overhead bytes when cell_size is set, as netem's
 *      "rate R PACKETOVERHEAD CELLSIZE CELLOVERHEAD"): the transmitter's
 *      next-free time is kept as an exact rational (ns + frac/rate_bps), so
 *      back-to-back frames are spaced by exactly their serialisation time
 *      with no rounding drift;
 *   4. the delay line: departure = end of serialisation + delay + a uniform
 *      jitter in [-jitter, +jitter] (delay + jitter never below 0), then
 *      raised to the previous departure plus the frame's own serialisation
 *      time (also exact), so frames never reorder and never leave closer
 *      together than the link rate allows.
 * Jitter draws from its own PRNG stream, apart from the loss model's, so
 * turning jitter on or off does not change which frames are lost.
 * Because serialisation is FIFO and deterministic, the whole schedule of a
 * frame is fixed when it is accepted; one FIFO holds every accepted frame
 * (waiting, being sent, in flight) in departure order. Only the waiting
 * ones count against the queue limits, so the delay line, like a wire,
 * holds whatever is in flight.
 *
 * Memory: one heap block per accepted frame (linkem_frame_new), freed by
 * whoever ends up owning it (linkem_dir_pop hands it to the caller,
 * linkem_dir_free frees what is left). Frames dropped at arrival are never
 * copied.
 */
#ifndef LINKEM_QUEUE_H
#define LINKEM_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "measure/stats.h"

#define LINKEM_VERSION "0.1.0"

/* Largest frame accepted: a 65535-byte MTU plus Ethernet and two VLAN
 * headers, with room to spare. */
#define LINKEM_FRAME_MAX (65535 + 64)

/* Highest rate accepted (1 Tb/s); keeps len * 8e9 + frac inside 64 bits. */
#define LINKEM_RATE_MAX 1000000000000ull
/* Longest delay or jitter accepted: 1000 s. */
#define LINKEM_DELAY_MAX_NS 1000000000000ll
/* Framing bounds: |packet_overhead| and cell_size up to 65535 bytes,
 * cell_overhead up to 1000; wire sizes then stay below 2^27 bytes, so
 * wire * 8e9 + frac keeps inside 64 bits. */
#define LINKEM_OVERHEAD_MAX 65535
#define LINKEM_CELL_OVERHEAD_MAX 1000
/* Stream of a direction's jitter draws: its loss stream plus this, so the
 * two never share a sequence. */
#define LINKEM_JITTER_STREAM 0x100000000ull

/* Error codes: negative, 0 is success; -6xx is the emulator's range
 * (codec -1xx, transport -2xx, client -3xx, measure -4xx, cli -5xx). */
#define LINKEM_ERR_INVALID -601 /* argument out of range */
#define LINKEM_ERR_NOMEM -602   /* allocation failed */

/* What linkem_dir_input did with a frame. */
#define LINKEM_ACCEPTED 0
#define LINKEM_DROPPED_LOSS 1
#define LINKEM_DROPPED_QUEUE 2

typedef enum linkem_loss_model {
	LINKEM_LOSS_NONE = 0,
	LINKEM_LOSS_BERNOULLI,
	LINKEM_LOSS_GE,
} linkem_loss_model;

typedef struct linkem_dir_config {
	uint64_t rate_bps; /* 0 = unlimited (no serialisation time) */
	int64_t delay_ns;
	int64_t jitter_ns;
	linkem_loss_model loss_model;
	double loss_p;     /* Bernoulli: loss probability */
	/* Gilbert-Elliott as netem's "gemodel p r 1-h 1-k": per frame,
	 * P(good->bad) = ge_p, P(bad->good) = ge_r, loss probability ge_lb in
	 * the bad state and ge_lg in the good one. */
	double ge_p, ge_r, ge_lb, ge_lg;
	uint64_t queue_packets; /* drop-tail limit on waiting frames */
	uint64_t queue_bytes;   /* limit on their bytes; 0 = none */
	/* Link-layer framing, as netem's rate options: every frame counts
	 * packet_overhead more bytes (may be negative, e.g. -14 for a link
	 * without the Ethernet header); with cell_size > 0 the result is cut
	 * into cells of cell_size bytes, each sent as cell_size +
	 * cell_overhead bytes. */
	int64_t packet_overhead;
	uint64_t cell_size;     /* 0 = no cells */
	int64_t cell_overhead;
	int loss_per_cell;      /* the loss model draws once per cell */
} linkem_dir_config;

/* xoshiro256** state; seeded through splitmix64. */
typedef struct linkem_rng {
	uint64_t s[4];
} linkem_rng;

typedef struct linkem_frame {
	struct linkem_frame *next;
	int64_t arrival_ns;
	int64_t start_ns;  /* serialisation starts (rounded up to a whole ns) */
	int64_t depart_ns; /* scheduled write to the other side */
	size_t len;
	uint8_t data[];
} linkem_frame;

typedef struct linkem_dir_stats {
	uint64_t frames_in, bytes_in;
	uint64_t frame_max; /* largest frame handed in, bytes */
	uint64_t frames_out, bytes_out;
	uint64_t dropped_loss, bytes_dropped_loss;
	uint64_t dropped_queue, bytes_dropped_queue;
} linkem_dir_stats;

typedef struct linkem_dir {
	linkem_dir_config cfg;
	linkem_rng rng;        /* the loss model's draws */
	linkem_rng jitter_rng; /* the jitter's draws */
	int ge_bad; /* Gilbert-Elliott: currently in the bad state */

	/* transmitter free from tx_free_ns + tx_free_frac / rate_bps on */
	int64_t tx_free_ns;
	uint64_t tx_free_frac;
	/* the last departure, exactly: dep_ns + dep_frac / rate_bps
	 * (INT64_MIN before the first) */
	int64_t dep_ns;
	uint64_t dep_frac;

	/* every accepted frame not yet popped, in departure order */
	linkem_frame *head, *tail;
	/* first frame that has not started serialisation at the last time
	 * seen; it and all after it are "waiting" */
	linkem_frame *first_waiting;
	uint64_t waiting_frames, waiting_bytes;
	uint64_t pending_frames, pending_bytes;

	linkem_dir_stats st;
	struct stats_hist queue_delay;  /* start - arrival, accepted frames, ns */
	struct stats_hist timing_error; /* filled by the caller: write - depart */
} linkem_dir;

/* The defaults: unlimited rate, no delay, no loss, 1000 frames. */
void linkem_dir_config_default(linkem_dir_config *c);

/* 0 if every field is in range, else LINKEM_ERR_INVALID. */
int linkem_dir_config_check(const linkem_dir_config *c);

/* Seed stream `stream` of `seed`; different streams are independent. */
void linkem_rng_seed(linkem_rng *r, uint64_t seed, uint64_t stream);
uint64_t linkem_rng_next(linkem_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double linkem_rng_uniform(linkem_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t linkem_rng_below(linkem_rng *r, uint64_t n);

/* A frame with room for len bytes (uninitialised), or NULL. */
linkem_frame *linkem_frame_new(size_t len);
void linkem_frame_del(linkem_frame *f);

/*
 * Bytes the link sends for a frame of len bytes under c's framing: len +
 * packet_overhead (at least 0), rounded up to whole cells of cell_size
 * bytes, each counted as cell_size + cell_overhead.
 */
uint64_t linkem_wire_bytes(const linkem_dir_config *c, uint64_t len);

/* Cells of a frame of len bytes (at least 1); 1 without cells. */
uint64_t linkem_cells(const linkem_dir_config *c, uint64_t len);

/*
 * Serialisation time of len bytes at rate_bps as whole ns plus a remainder
 * in units of 1/rate_bps ns: len * 8e9 = ns * rate + frac. rate_bps > 0.
 */
int64_t linkem_ser_ns(uint64_t len, uint64_t rate_bps, uint64_t *frac);

/*
 * Set up d with the configuration c (copied; checked by the caller with
 * linkem_dir_config_check): the loss model draws from PRNG stream `stream`
 * of `seed`, the jitter from stream `stream` + LINKEM_JITTER_STREAM.
 * Returns 0 or LINKEM_ERR_INVALID.
 */
int linkem_dir_init(linkem_dir *d, const linkem_dir_config *c, uint64_t seed,
                    uint64_t stream);

/* Free every frame still held. d can be initialised again afterwards. */
void linkem_dir_free(linkem_dir *d);

/*
 * One frame of len bytes at data arrived at now. Returns LINKEM_ACCEPTED
 * (data copied, schedule fixed), LINKEM_DROPPED_LOSS, LINKEM_DROPPED_QUEUE,
 * LINKEM_ERR_INVALID (len 0 or above LINKEM_FRAME_MAX; not counted) or
 * LINKEM_ERR_NOMEM (counted as a queue drop: the frame could not be
 * queued).
 */
int linkem_dir_input(linkem_dir *d, const uint8_t *data, size_t len,
                     int64_t now);

/* Departure time of the next frame, INT64_MAX when none is held. */
int64_t linkem_dir_next(const linkem_dir *d);

/*
 * The next frame if its departure time is <= now, else NULL. The caller
 * owns the frame (linkem_frame_del); it counts as sent.
 */
linkem_frame *linkem_dir_pop(linkem_dir *d, int64_t now);

/* Frames (and their bytes) accepted but not popped: waiting, being sent or
 * in flight. */
uint64_t linkem_dir_pending_frames(const linkem_dir *d);
uint64_t linkem_dir_pending_bytes(const linkem_dir *d);

/* Frames waiting for the transmitter at now (the drop-tail occupancy). */
uint64_t linkem_dir_waiting_frames(linkem_dir *d, int64_t now);
uint64_t linkem_dir_waiting_bytes(linkem_dir *d, int64_t now);

#endif
