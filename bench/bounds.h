/* bounds.h - what the benchmarks share: machine bounds (streaming read bandwidth and FMA
 * peak, measured on the same pool of threads the kernels use, so ratios printed by a
 * benchmark compare numbers taken in the same run), clocks (common/clock.h, common/proc.h), and
 * the 124M test checkpoint. */
#ifndef NANO_VLLM_BENCH_BOUNDS_H
#define NANO_VLLM_BENCH_BOUNDS_H

#include <stddef.h>

#include "common/clock.h"
#include "common/proc.h"
#include "engine/kernels/pool.h"

/* Bytes per second of a sequential read of `bytes` (fresh memory, far beyond L3), split in
 * contiguous halves over the pool's threads; the median of `reps` passes. */
double bench_read_bandwidth(pool_t *pool, size_t bytes, int reps);
/* FLOP/s of independent FMA chains on every pool thread: 16 wide with AVX-512, 8 wide with
 * AVX2+FMA, else scalar code the compiler vectorizes as it can; the median of `reps`
 * samples. The widest the CPU has, whichever kernel a benchmark forces. */
double bench_fma_peak(pool_t *pool, int reps);
/* The same with chains `width` lanes wide: 16 (the widest the CPU has) or 8 (AVX2's: the
 * ceiling of the avx2 kernel on an AVX-512 CPU). */
double bench_fma_peak_width(pool_t *pool, int reps, int width);
/* FLOP/s of AMX BF16 tile products (TDPBF16PS, operands in the tile registers) on as many
 * threads as the pool has (threads of its own: the pool's keep the engine's tile
 * configuration), the median of `reps` samples, and in *core the best thread's FLOP per
 * CPU-second; both 0 where the CPU or OS has no AMX. The compute bound of BF16 products on
 * the amx kernel (engine/kernels/matmul_amx.c). */
double bench_amx_peak(pool_t *pool, int reps, double *core);
/* FLOP per CPU-second of one core running the FMA chains: with work divided by CPU time
 * (proc_cpu_sec), these ratios hold on a busy host too (for compute-bound work; memory
 * traffic of other tenants still weighs). */
double bench_fma_core_peak_cpu(int reps);
double bench_fma_core_peak_cpu_width(int reps, int width);

/* Makes sure dir holds a checkpoint: when it has no config.json, writes a seeded random one
 * of the GPT-2 124M shape there with scripts/make-checkpoint. 0, or -1 if that failed. */
int bench_model_ensure(const char *dir);
/* The same for any shape scripts/make-checkpoint knows: arch "gpt2", "llama", "qwen2" or
 * "qwen3", its --shape name and the file's dtype ("f32", "f16", "bf16"); seed 1. */
int bench_shape_ensure(const char *dir, const char *arch, const char *shape, const char *dtype);

/* Sorts v[0..n) in ascending order (times, for percentiles and medians). */
void bench_sort(double *v, size_t n);
/* The median of v[0..n) (n > 0; the mean of the middle two for even n); sorts v. */
double bench_median(double *v, int n);

/* Whether name is one of the comma-separated words of list (a --dtype or --shapes value). */
int bench_in_list(const char *list, const char *name);

#endif
