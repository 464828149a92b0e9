/* sampler.h - private to engine/: turns one row of logits into one token, and logprobs.
 *
 * Pure functions over caller-owned memory: no allocation, no globals, no locks. The
 * scheduler thread calls them once per sampled row with that request's own RNG, so what a
 * request draws never depends on what else is in the batch.
 */
#ifndef NANO_VLLM_SAMPLER_H
#define NANO_VLLM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

/* xoshiro256** state; one per request (or per choice). Seed it, never zero it by hand. */
typedef struct smp_rng {
    uint64_t s[4];
} smp_rng_t;

/* Seeds r from any 64-bit seed (expanded with splitmix64, so 0 is a fine seed). */
void smp_rng_seed(smp_rng_t *r, uint64_t seed);
/* Next 64 random bits, and a uniform double in [0, 1) built from the top 53 of them. */
uint64_t smp_rng_next(smp_rng_t *r);
double smp_rng_uniform(smp_rng_t *r);

/* Bytes of scratch smp_sample needs for a vocabulary of V (allocate once, malloc-aligned). */
size_t smp_scratch_bytes(int V);

/* Draws one token from logits (V), which it modifies. In the order vLLM applies them:
 *   1. logit bias (sp->logit_bias_ids/values; ids outside [0, V) are ignored),
 *   2. repetition penalty over prompt and output tokens (positive logits divided by it,
 *      negative ones multiplied), presence and frequency penalties over output tokens,
 *   3. greedy when temperature < 1e-5: argmax, ties to the lowest id, no RNG draw;
 *      otherwise divide by temperature, keep tokens with p >= min_p * p_max, then the top_k
 *      most likely (0 = off), then the smallest most-likely set with mass >= top_p, and draw
 *      one token with r (exactly one smp_rng_next per draw).
 * prompt (n_prompt) and out (n_out) are the sequence's tokens so far (ids outside [0, V)
 * are ignored). scratch has smp_scratch_bytes(V) bytes. Selection is partial (expected
 * O(V)), never a full sort. Returns the token id; never fails. */
int32_t smp_sample(const eng_sampling_t *sp, float *logits, int V, const int32_t *prompt,
                   int n_prompt, const int32_t *out, int n_out, smp_rng_t *r, void *scratch);

/* Log-softmax of the raw logits (call it before smp_sample, which modifies them; as vLLM's
 * default, logprobs are of the model's distribution, before penalties and temperature).
 * Fills lp with the logprob of id and the n_top (clamped to 0..ENG_MAX_LOGPROBS) most
 * likely tokens, highest first, ties to the lowest id. */
void smp_logprobs(const float *logits, int V, int32_t id, int n_top, eng_logprob_t *lp);

#endif
