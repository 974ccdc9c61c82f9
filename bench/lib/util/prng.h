/*
 * prng.h: small deterministic pseudo-random helpers shared by the benchmark
 * binaries, so that a seed given on the command line reproduces a run.
 * Not for anything secret.
 */
#ifndef PRNG_H
#define PRNG_H

#include <stdint.h>

/*
 * splitmix64 (Steele, Lea, Flood 2014; the constants are Vigna's): advances
 * *state by the golden-ratio increment and returns a well-mixed 64-bit value.
 * Any state is valid, 0 included. Good for seeding other generators and for
 * cheap per-stream draws.
 */
static inline uint64_t prng_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* A double uniform in [0, 1) from the top 53 bits of one draw. */
static inline double prng_unit(uint64_t *state)
{
	return (double)(prng_splitmix64(state) >> 11) *
	       (1.0 / 9007199254740992.0);
}

#endif /* PRNG_H */
