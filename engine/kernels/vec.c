/* vec.c - the vector loops outside the matrix products (see vec.h), portable and AVX2. */
#include "engine/kernels/vec.h"

#include <math.h>
#include <string.h>

#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_VEC_AVX2 1
#endif

/* Eight floats; loads and stores go through memcpy (no alignment or aliasing assumptions)
 * and compile to one vector move where the target has 32-byte vectors. */
typedef float v8f __attribute__((vector_size(32)));

float vec_dot(const float *a, const float *b, int n)
{
    v8f acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f x, y;
        memcpy(&x, a + i, sizeof(x));
        memcpy(&y, b + i, sizeof(y));
        acc += x * y;
    }
    float s = 0;
    for (; i < n; i++)
        s += a[i] * b[i];
    for (int u = 0; u < 8; u++)
        s += acc[u];
    return s;
}

void vec_axpy(float *y, float p, const float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f a, b;
        memcpy(&a, y + i, sizeof(a));
        memcpy(&b, x + i, sizeof(b));
        a += p * b;
        memcpy(y + i, &a, sizeof(a));
    }
    for (; i < n; i++)
        y[i] += p * x[i];
}

void vec_silu_mul(float *out, const float *g, const float *u, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void vec_f16_to_f32(float *dst, const void *src, size_t n)
{
    const uint8_t *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = mm_f16_to_f32(h);
    }
}

void vec_bf16_to_f32(float *dst, const void *src, size_t n)
{
    const uint8_t *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = mm_bf16_to_f32(h);
    }
}

static void softmax_generic(float *x, int n)
{
    float max = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++)
        max = x[j] > max ? x[j] : max;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - max);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++)
        x[j] *= inv;
}

static void layernorm_generic(float *out, const float *x, const float *w, const float *b, int C,
                              float eps)
{
    float mean = 0, var = 0;
    for (int i = 0; i < C; i++)
        mean += x[i];
    mean /= (float)C;
    for (int i = 0; i < C; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float rstd = 1.0f / sqrtf(var / (float)C + eps);
    for (int i = 0; i < C; i++)
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

static void rmsnorm_generic(float *out, const float *x, const float *w, int C, float eps)
{
    float ss = 0;
    for (int i = 0; i < C; i++)
        ss += x[i] * x[i];
    float rstd = 1.0f / sqrtf(ss / (float)C + eps);
    for (int i = 0; i < C; i++)
        out[i] = x[i] * rstd * w[i];
}

static void to_f16_generic(uint16_t *dst, const float *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = mm_f32_to_f16(src[i]);
}

static void from_f16_generic(float *dst, const uint16_t *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = mm_f16_to_f32(src[i]);
}

static const vec_ops_t vec_generic = {softmax_generic, layernorm_generic, rmsnorm_generic,
                                      to_f16_generic,  from_f16_generic,  vec_silu_mul};

#ifdef HAVE_VEC_AVX2
#define VEC_AVX2 __attribute__((target("avx2,fma,f16c")))

/* softmax_generic with eight-wide passes and vm_exp8. */
VEC_AVX2 static void softmax_avx2(float *x, int n)
{
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float max = _mm_cvtss_f32(h);
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    mv = _mm256_set1_ps(max);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = vm_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = vm_hsum8(acc);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++)
        x[i] *= 1.0f / sum;
}

/* layernorm_generic with eight-wide sums. */
VEC_AVX2 static void layernorm_avx2(float *out, const float *x, const float *w, const float *b,
                                    int C, float eps)
{
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= C; i += 8)
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    float mean = vm_hsum8(acc);
    for (; i < C; i++)
        mean += x[i];
    mean /= (float)C;
    const __m256 mv = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= C; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float var = vm_hsum8(acc);
    for (; i < C; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float rstd = 1.0f / sqrtf(var / (float)C + eps);
    const __m256 rv = _mm256_set1_ps(rstd);
    for (i = 0; i + 8 <= C; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
        _mm256_storeu_ps(out + i,
                         _mm256_fmadd_ps(d, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < C; i++)
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

/* rmsnorm_generic with an eight-wide sum of squares. */
VEC_AVX2 static void rmsnorm_avx2(float *out, const float *x, const float *w, int C, float eps)
{
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= C; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = vm_hsum8(acc);
    for (; i < C; i++)
        ss += x[i] * x[i];
    float rstd = 1.0f / sqrtf(ss / (float)C + eps);
    const __m256 rv = _mm256_set1_ps(rstd);
    for (i = 0; i + 8 <= C; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), rv),
                                                _mm256_loadu_ps(w + i)));
    for (; i < C; i++)
        out[i] = x[i] * rstd * w[i];
}

VEC_AVX2 static void to_f16_avx2(uint16_t *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = mm_f32_to_f16(src[i]);
}

VEC_AVX2 static void from_f16_avx2(float *dst, const uint16_t *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = mm_f16_to_f32(src[i]);
}

/* silu(g) * u for eight values: g / (1 + exp(-g)) * u with vm_exp8. */
VEC_AVX2 static inline __m256 silu_mul8(__m256 g, __m256 u)
{
    const __m256 e = vm_exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

/* vec_silu_mul eight values at a time (a scalar expf took most of a Llama layer's time
 * outside the matrix products at batch 1); the last n % 8 through a padded copy, so every
 * element goes through the same arithmetic. */
VEC_AVX2 static void silu_mul_avx2(float *out, const float *g, const float *u, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        float gt[8] = {0}, ut[8] = {0}, ot[8];
        memcpy(gt, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(ut, u + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(ot, silu_mul8(_mm256_loadu_ps(gt), _mm256_loadu_ps(ut)));
        memcpy(out + i, ot, (size_t)(n - i) * sizeof(float));
    }
}

static const vec_ops_t vec_avx2 = {softmax_avx2, layernorm_avx2, rmsnorm_avx2,
                                   to_f16_avx2,  from_f16_avx2,  silu_mul_avx2};
#endif

const vec_ops_t *vec_ops_get(int mm_kernel)
{
#ifdef HAVE_VEC_AVX2
    if (mm_kernel != MM_KERNEL_GENERIC)
        return &vec_avx2;
#else
    (void)mm_kernel;
#endif
    return &vec_generic;
}
