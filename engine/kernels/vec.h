/* vec.h - private to engine/: the vector loops outside the matrix products, shared by every
 * model: dot, axpy, softmax, layer norm, RMS norm, SiLU-gated product and the 16-bit float
 * conversions.
 *
 * Each loop has a portable version (SSE2 on x86-64) and an AVX2+FMA(+F16C) one. A step picks
 * one set with vec_ops_get(mm kernel), the same decision the matrix kernels made, so forcing
 * the generic kernel forces these too. Every output element is computed by the same code
 * whatever thread runs it. Other folders (model/) may use everything declared here.
 */
#ifndef NANO_VLLM_VEC_H
#define NANO_VLLM_VEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct vec_ops {
    /* softmax in place over n scores; the row sums to 1. */
    void (*softmax)(float *x, int n);
    /* out = (x - mean) / sqrt(var + eps) * w + b over a row of C. */
    void (*layernorm)(float *out, const float *x, const float *w, const float *b, int C, float eps);
    /* out = x / sqrt(mean(x^2) + eps) * w over a row of C (out may be x). */
    void (*rmsnorm)(float *out, const float *x, const float *w, int C, float eps);
    /* F32 <-> F16, round to nearest even (as the F16C instructions do), n values. */
    void (*to_f16)(uint16_t *dst, const float *src, int n);
    void (*from_f16)(float *dst, const uint16_t *src, int n);
    /* out[i] = silu(g[i]) * u[i] over n values (out may be g), as vec_silu_mul. */
    void (*silu_mul)(float *out, const float *g, const float *u, int n);
} vec_ops_t;

/* The set for an enum mm_kernel: the portable one for MM_KERNEL_GENERIC, the AVX2 one for
 * every other kernel (each implies AVX2; these loops are memory bound). Never NULL. */
const vec_ops_t *vec_ops_get(int mm_kernel);

/* sum a[i] b[i], eight partial sums then the tail (portable). */
float vec_dot(const float *a, const float *b, int n);
/* y += p * x (portable). */
void vec_axpy(float *y, float p, const float *x, int n);
/* out[i] = silu(g[i]) * u[i], silu(g) = g / (1 + exp(-g)): the SwiGLU MLP's gate (portable;
 * the AVX2 set's silu_mul computes exp eight values at a time with vm_exp8). */
void vec_silu_mul(float *out, const float *g, const float *u, int n);

/* Widens n 16-bit floats (F16 or BF16 as stored in a file, any alignment) to F32. */
void vec_f16_to_f32(float *dst, const void *src, size_t n);
void vec_bf16_to_f32(float *dst, const void *src, size_t n);

#endif
