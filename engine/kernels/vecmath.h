/* vecmath.h - private to engine/: exp, a horizontal sum and GPT-2's GELU, scalar, eight-wide
 * AVX2 and sixteen-wide AVX-512, shared by the vector loops (vec.c, attention_tiles.c) and the
 * matrix tiles (GELU applied as the FC product stores Y).
 *
 * The vector functions carry their own target attribute, so including this header does not
 * make the including file need -mavx2 or -mavx512f; callers reach them only after the CPU
 * check (mm_get_kernel == MM_KERNEL_AVX2, MM_KERNEL_AVX512 or MM_KERNEL_AMX).
 */
#ifndef NANO_VLLM_VECMATH_H
#define NANO_VLLM_VECMATH_H

#include <math.h>

/* gelu_new(x) = 0.5 x (1 + tanh(y)), y = sqrt(2/pi) (x + 0.044715 x^3), GPT-2's tanh form,
 * computed as x / (1 + exp(-2y)): the same function (1 + tanh(y) = 2 / (1 + exp(-2y))), with
 * one expf instead of tanhf, which took most of the time of a GELU pass. */
static inline float vm_gelu(float v)
{
    const float s = 0.7978845608028654f; /* sqrt(2/pi) */
    return v / (1.0f + expf(-2.0f * s * (v + 0.044715f * v * v * v)));
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define VM_AVX2 static inline __attribute__((always_inline, target("avx2,fma")))

/* The sum of eight floats: the halves added, then pairs, then the last two. */
VM_AVX2 float vm_hsum8(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* exp(x) for eight floats, Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by a
 * degree-6 polynomial (about 1 ulp), 2^n built in the exponent bits; x is clamped to
 * [-87.3, 88.7] so 2^n stays a normal float. */
VM_AVX2 __m256 vm_exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* vm_gelu's formula for eight floats. */
VM_AVX2 __m256 vm_gelu8(__m256 v)
{
    const __m256 k = _mm256_set1_ps(-2.0f * 0.7978845608028654f), c = _mm256_set1_ps(0.044715f);
    __m256 y = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, v), _mm256_mul_ps(v, v), v));
    return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), vm_exp8(y)));
}

#define VM_AVX512 static inline __attribute__((always_inline, target("avx512f")))

/* vm_exp8 for sixteen floats: the same operations in the same order, so the same results. */
VM_AVX512 __m512 vm_exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* vm_gelu8 for sixteen floats (the same results). */
VM_AVX512 __m512 vm_gelu16(__m512 v)
{
    const __m512 k = _mm512_set1_ps(-2.0f * 0.7978845608028654f), c = _mm512_set1_ps(0.044715f);
    __m512 y = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c, v), _mm512_mul_ps(v, v), v));
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), vm_exp16(y)));
}
#endif

#endif
