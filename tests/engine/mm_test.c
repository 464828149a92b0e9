/* mm_test.c - packed matmul against a plain double-precision loop, for one kernel path
 * (forced; `mm_test KERNEL`, SKIP when this CPU lacks it), every weight dtype, M = 1..70 and
 * larger, odd K and N, N not a multiple of the panel width, bias / accumulate / strided rows, 1-3
 * threads; `mm_test common`: the F16/BF16/int8 conversions and the BF16X3 split and the context's
 * error handling; `mm_test same-bits`: the AVX2 and AVX-512 tiles give the same bits.
 *
 * Tolerance: the reference uses the weights as stored (after 16-bit rounding; int8: the
 * dequantized q * scale), so the only difference is F32 summation: |y - ref| <= 2*K*eps *
 * sum_k |x_k w_k| + |bias| * eps, the textbook bound for a K-term sum (it holds with or
 * without FMA contraction, and with int8's one scaling of the sum instead of each weight).
 * The int8 weights themselves are checked against a quantization computed here. W8A8 also
 * quantizes X (per row and block of K, as the test's w8a8_x does too) and sums exactly, so
 * its reference multiplies the quantized X and its tolerance is a few roundings per block.
 * The AMX kernel rounds X to BF16 for BF16 weights (relative error <= 2^-8 per value, so at
 * most 2^-8 * sum_k |x_k w_k| in the sum), which its tolerance adds; and there one row's
 * result must be the same bits alone as inside any product (test_amx_rows).
 * BF16X3 stores w as wh + wl (hi the nearest BF16 of w, lo the nearest of w - hi; their sum
 * is exact in F32 and is what the reference uses). The AMX kernel splits X the same way into
 * xh + xl and computes xh wh + xl wh + xh wl = (xh + xl)(wh + wl) - xl wl. Two roundings to 8
 * significant bits give |x - xh - xl| <= 2^-18 |x|, and xl and wl are each at most
 * 2^-9 (1 + 2^-9) of their whole, so |xl wl| <= 2^-18 (1 + 2^-8) |x w|: the result is within
 * about 2^-17 * sum_k |x_k w_k| of the sum on the stored weights, and the tolerance adds
 * 2^-16 * sum_k |x_k w_k|. Its 3K products are summed in F32 (at most 3K roundings of
 * 2^-24 = eps / 2 each: 1.5 K eps, inside the 2 (K + 2) eps above).
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/matmul_q8.h"
#include "tests/check.h"
#include "tests/rand.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    return (uint32_t)(rand_next(&rng_state) >> 16);
}

static const char *dtype_name(int dt)
{
    return dt == ENG_DTYPE_F32      ? "f32"
           : dt == ENG_DTYPE_F16    ? "f16"
           : dt == ENG_DTYPE_BF16   ? "bf16"
           : dt == ENG_DTYPE_BF16X3 ? "bf16x3"
           : dt == ENG_DTYPE_W8A8   ? "w8a8"
                                    : "int8";
}

/* One product, checked element by element; returns 0 when all pass. */
/* GPT-2's tanh GELU in double: the reference for the MM_EPI_GELU epilogue. */
static double gelu_ref(double v)
{
    return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

/* Int8 packing: column n of the stored weight is q * s with s = max_k |W[k][n]| / 127 (1 for
 * a zero column) and q the nearest integer to W / s; the largest value maps to +-127 and
 * every stored value is within s / 2 of the source. Returns the number of failures. */
static int check_i8(const mm_weight_t *w, const float *src, size_t lds, int trans)
{
    for (int n = 0; n < w->N; n++) {
        double mx = 0;
        for (int k = 0; k < w->K; k++) {
            float v = trans ? src[(size_t)n * lds + k] : src[(size_t)k * lds + n];
            mx = fabs(v) > mx ? fabs(v) : mx;
        }
        float s = mx > 0 ? (float)mx / 127.0f : 1.0f;
        if (w->scale[n] != s) {
            fprintf(stderr, "mm_test: int8 scale of column %d is %.9g, expected %.9g\n", n,
                    w->scale[n], s);
            return 1;
        }
        int hit_max = mx == 0;
        for (int k = 0; k < w->K; k++) {
            float v = trans ? src[(size_t)n * lds + k] : src[(size_t)k * lds + n];
            float got = mm_weight_get(w, k, n);
            double q = rint(got / s); /* got is q * s rounded to float */
            if ((float)q * s != got || fabs(q) > 127 || fabs(got - v) > 0.5001 * s) {
                fprintf(stderr, "mm_test: int8 (%d,%d) = %.9g (%.9g x scale %.9g) for %.9g\n", k, n,
                        got, q, s, v);
                return 1;
            }
            hit_max |= fabs(v) == mx && fabs(q) == 127;
        }
        if (!hit_max) {
            fprintf(stderr, "mm_test: int8 column %d: its max %.9g is not stored as +-127\n", n,
                    mx);
            return 1;
        }
    }
    return 0;
}

/* W8A8 quantizes each row of X per block of MM_Q8_KB values: s = max |x| / 127 and q = the
 * nearest integer (ties to even) to x * (127 / max |x|), both rounded to F32 as written; a
 * zero block stays zero. Writes the values the product then multiplies, q * s, in double. */
static void w8a8_x(const float *x, int K, double *out)
{
    for (int k0 = 0; k0 < K; k0 += MM_Q8_KB) {
        int k1 = K - k0 < MM_Q8_KB ? K : k0 + MM_Q8_KB;
        float mx = 0.0f;
        for (int k = k0; k < k1; k++)
            mx = fabsf(x[k]) > mx ? fabsf(x[k]) : mx;
        float s = mx / 127.0f, inv = mx > 0 ? 127.0f / mx : 0.0f;
        for (int k = k0; k < k1; k++)
            out[k] = (double)rintf(x[k] * inv) * s;
    }
}

/* Whether h is a BF16 nearest to v: no neighbour of it is nearer (ties are checked by the
 * conversion tests). */
static int bf16_nearest(float v, uint16_t h)
{
    double e = fabs((double)v - mm_bf16_to_f32(h));
    if ((h & 0x7fff) != 0 && e > fabs((double)v - mm_bf16_to_f32((uint16_t)(h - 1))))
        return 0;
    return !(e > fabs((double)v - mm_bf16_to_f32((uint16_t)(h + 1))));
}

/* BF16X3 packing: element (k, n) is a value in a row of pairs of hi and the one at the same
 * place in the row of pairs of lo after it (matmul_pack.c panel_at); hi is the nearest BF16
 * of the source value, lo the nearest of what hi left, hi + lo is exact in F32, and
 * mm_weight_get gives it. Returns the number of failures. */
static int check_x3(const mm_weight_t *w, const float *src, size_t lds, int trans)
{
    const uint16_t *d = w->data;
    const size_t panel = (size_t)mm_panel_rows(ENG_DTYPE_BF16X3, w->K) * MM_NR * 2;
    for (int n = 0; n < w->N; n++)
        for (int k = 0; k < w->K; k++) {
            float v = trans ? src[(size_t)n * lds + k] : src[(size_t)k * lds + n];
            size_t at = (size_t)(n / MM_NR) * panel + (size_t)(k & ~1) * 2 * MM_NR +
                        2 * (size_t)(n % MM_NR) + (size_t)(k & 1);
            uint16_t hi = d[at], lo = d[at + 2 * MM_NR];
            float rest = v - mm_bf16_to_f32(hi), sum = mm_bf16_to_f32(hi) + mm_bf16_to_f32(lo);
            if (hi != mm_f32_to_bf16(v) || !bf16_nearest(v, hi) || lo != mm_f32_to_bf16(rest) ||
                !bf16_nearest(rest, lo) ||
                (double)sum != (double)mm_bf16_to_f32(hi) + mm_bf16_to_f32(lo) ||
                mm_weight_get(w, k, n) != sum) {
                fprintf(stderr,
                        "mm_test: bf16x3 (%d,%d) of %.9g: hi 0x%04x lo 0x%04x, read as "
                        "%.9g\n",
                        k, n, v, hi, lo, mm_weight_get(w, k, n));
                return 1;
            }
        }
    return 0;
}

static int check_case(mm_t *mm, int M, int K, int N, int dtype, int trans, int use_bias,
                      int accumulate, int pad, int gelu)
{
    size_t ldx = (size_t)K + (size_t)pad, ldy = (size_t)N + (size_t)pad;
    size_t lds = trans ? (size_t)K + (size_t)pad : (size_t)N + (size_t)pad;
    size_t src_rows = trans ? (size_t)N : (size_t)K;
    float *src = malloc(src_rows * lds * sizeof(float));
    float *x = malloc(((size_t)M * ldx + 1) * sizeof(float));
    float *y = malloc(((size_t)M * ldy + 1) * sizeof(float));
    float *y0 = malloc(((size_t)M * ldy + 1) * sizeof(float));
    float *bias = malloc((size_t)N * sizeof(float));
    double *xq = malloc((size_t)K * sizeof(double));
    int bad = 0;
    if (!src || !x || !y || !y0 || !bias || !xq) {
        fprintf(stderr, "mm_test: out of memory\n");
        check_failed_count++;
        goto out;
    }
    for (size_t i = 0; i < src_rows * lds; i++)
        src[i] = rand_unit(&rng_state);
    /* Column scales differ by orders of magnitude (int8 keeps one per column), and one
     * column is all zeros. */
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            float *v = trans ? &src[(size_t)n * lds + k] : &src[(size_t)k * lds + n];
            *v = n == N / 2 && N > 2 ? 0.0f : *v * (float)(1 << (n % 7)) * 0.01f;
        }
    for (size_t i = 0; i < (size_t)M * ldx; i++)
        x[i] = rand_unit(&rng_state);
    for (size_t i = 0; i < (size_t)M * ldy; i++)
        y0[i] = y[i] = rand_unit(&rng_state); /* also the guard values between rows when pad > 0 */
    for (int i = 0; i < N; i++)
        bias[i] = rand_unit(&rng_state);

    mm_weight_t w;
    int rc = mm_weight_init_mt(mm, &w, src, K, N, lds, trans, dtype);
    CHECK_INT_EQ(rc, 0);
    if (rc)
        goto out;
    mm_matmul(mm, M, x, ldx, &w, use_bias ? bias : NULL, y, ldy, accumulate,
              gelu ? MM_EPI_GELU : MM_EPI_NONE);

    for (int m = 0; m < M && bad < 5; m++) {
        for (int n = 0; n < (int)ldy && bad < 5; n++) {
            size_t at = (size_t)m * ldy + (size_t)n;
            if (n >= N) { /* padding must be untouched */
                if (y[at] != y0[at]) {
                    fprintf(stderr, "mm_test: wrote padding y[%d][%d]\n", m, n);
                    bad++;
                }
                continue;
            }
            double ref = accumulate ? y0[at] : 0.0, mag = fabs(ref);
            if (use_bias) {
                ref += bias[n];
                mag += fabs(bias[n]);
            }
            double absum = 0.0;
            if (dtype == ENG_DTYPE_W8A8 && n == 0)
                w8a8_x(x + (size_t)m * ldx, K, xq);
            for (int k = 0; k < K; k++) {
                double xv = dtype == ENG_DTYPE_W8A8 ? xq[k] : (double)x[(size_t)m * ldx + k];
                double t = xv * mm_weight_get(&w, k, n);
                ref += t;
                absum += fabs(t);
            }
            double tol = 2.0 * (K + 2) * FLT_EPSILON * (absum + mag) + 1e-30;
            /* W8A8 sums exactly in integers: per block of K one rounding of d * s_x and one of
             * the fma, and mm_weight_get's rounding of q * s_w: far tighter than the
             * quantization of X, which the reference reproduces. */
            if (dtype == ENG_DTYPE_W8A8)
                tol = ((K + MM_Q8_KB - 1) / MM_Q8_KB + 3) * FLT_EPSILON * (absum + mag) + 1e-30;
            if (dtype == ENG_DTYPE_BF16 && mm_get_kernel(mm) == MM_KERNEL_AMX)
                tol += 0x1p-8 * absum;
            if (dtype == ENG_DTYPE_BF16X3 && mm_get_kernel(mm) == MM_KERNEL_AMX)
                tol += 0x1p-16 * absum;
            if (gelu) {
                /* |gelu'| < 1.13, so the sum's error grows by at most that; the F32 GELU
                 * itself (exp to ~1 ulp, a few roundings) adds a few ulps of its input. */
                tol = 1.13 * tol + 8.0 * FLT_EPSILON * fabs(ref) + 1e-30;
                ref = gelu_ref(ref);
            }
            if (!(fabs(y[at] - ref) <= tol)) {
                fprintf(stderr,
                        "mm_test: %s %s M=%d K=%d N=%d trans=%d bias=%d acc=%d pad=%d gelu=%d: "
                        "y[%d][%d] = %.9g, expected %.9g (tol %.3g)\n",
                        mm_kernel_name(mm_get_kernel(mm)), dtype_name(dtype), M, K, N, trans,
                        use_bias, accumulate, pad, gelu, m, n, y[at], ref, tol);
                bad++;
            }
        }
    }
    if (dtype == ENG_DTYPE_I8 || dtype == ENG_DTYPE_W8A8)
        bad += check_i8(&w, src, lds, trans);
    if (dtype == ENG_DTYPE_BF16X3)
        bad += check_x3(&w, src, lds, trans);
    /* The stored weight is the source rounded to the dtype (BF16X3: checked above). */
    for (int i = 0;
         i < 20 && dtype != ENG_DTYPE_I8 && dtype != ENG_DTYPE_BF16X3 && dtype != ENG_DTYPE_W8A8;
         i++) {
        int k = (int)(rnd() % (uint32_t)K), n = (int)(rnd() % (uint32_t)N);
        float s = trans ? src[(size_t)n * lds + k] : src[(size_t)k * lds + n];
        float e = dtype == ENG_DTYPE_F32   ? s
                  : dtype == ENG_DTYPE_F16 ? mm_f16_to_f32(mm_f32_to_f16(s))
                                           : mm_bf16_to_f32(mm_f32_to_bf16(s));
        if (mm_weight_get(&w, k, n) != e) {
            fprintf(stderr, "mm_test: weight (%d,%d) stored %.9g, expected %.9g\n", k, n,
                    mm_weight_get(&w, k, n), e);
            bad++;
            break;
        }
    }
    float col[600];
    if (K <= 600) {
        int n = N - 1;
        mm_weight_column(&w, n, col);
        for (int k = 0; k < K; k++)
            if (col[k] != mm_weight_get(&w, k, n)) {
                fprintf(stderr, "mm_test: mm_weight_column(%d)[%d] differs\n", n, k);
                bad++;
                break;
            }
    }
    mm_weight_free(&w);
    mm_weight_free(&w); /* freeing twice is a no-op */
    check_failed_count += bad != 0;
out:
    free(src);
    free(x);
    free(y);
    free(y0);
    free(bias);
    free(xq);
    return bad;
}

/* only: one dtype (W8A8 in its other form), or 0 for all. */
static void test_shapes(mm_t *mm, int only)
{
    static const int Ks[] = {1, 7, 33, 255, 257, 300, 517};
    static const int Ns[] = {1, 15, 16, 17, 40, 100, 129};
    static const int dts[] = {ENG_DTYPE_F32, ENG_DTYPE_F16,    ENG_DTYPE_BF16,
                              ENG_DTYPE_I8,  ENG_DTYPE_BF16X3, ENG_DTYPE_W8A8};
    enum { N_DTS = 6 };
    int i = 0;
    /* Every M with one of the three plain dtypes in turn, and with int8, BF16X3 and W8A8
     * (their own packing and kernel paths). */
    for (int M = 1; M <= 70; M++, i++) {
        int K = Ks[i % 7], N = Ns[(i * 3 + 1) % 7];
        int dt = dts[i % 3];
        if ((!only && (check_case(mm, M, K, N, dt, i % 2, i % 3 != 0, i % 4 == 1, (i % 5 == 2) * 3,
                                  i % 6 == 3) ||
                       check_case(mm, M, K, N, ENG_DTYPE_I8, i % 2, i % 3 != 0, i % 4 == 1,
                                  (i % 5 == 2) * 3, i % 6 == 3) ||
                       check_case(mm, M, K, N, ENG_DTYPE_BF16X3, i % 2, i % 3 != 0, i % 4 == 1,
                                  (i % 5 == 2) * 3, i % 6 == 3))) ||
            check_case(mm, M, K, N, ENG_DTYPE_W8A8, i % 2, i % 3 != 0, i % 4 == 1, (i % 5 == 2) * 3,
                       i % 6 == 3))
            return;
    }
    /* Every dtype on the blocking edges: one tile over a long K, several row blocks (K =
     * 1000: 65 rows of X fill the X block, so 131 rows are blocks of whole tiles), K in
     * chunks (K = 1500 with more rows than fit the X block; K = 3072 as GPT-2's MLP
     * projection, with M > MM_MC so the rows are cut too). */
    for (int d = 0; d < N_DTS; d++) {
        if (only && dts[d] != only)
            continue;
        if (check_case(mm, 1, 768, 77, dts[d], 0, 1, 0, 0, 0) ||
            check_case(mm, 8, 513, 50, dts[d], 1, 0, 1, 1, 0) ||
            check_case(mm, 20, 1500, 33, dts[d], 0, 1, 1, 0, 0) ||
            check_case(mm, 131, 1000, 47, dts[d], 0, 1, 0, 2, 0) ||
            check_case(mm, 250, 70, 20, dts[d], 1, 0, 0, 0, 0) ||
            check_case(mm, 50, 1500, 33, dts[d], 0, 1, 1, 0, 0) ||
            check_case(mm, 130, 3072, 31, dts[d], 0, 1, 1, 1, 0) ||
            check_case(mm, 1, 257, 47, dts[d], 1, 1, 1, 0, 1) ||
            check_case(mm, 8, 300, 31, dts[d], 0, 1, 1, 3, 1))
            return;
        /* The GELU epilogue on the last K chunk only, with several row blocks, and with the
         * accumulated Y under it. */
        if (check_case(mm, 20, 1500, 33, dts[d], 0, 1, 0, 0, 1) ||
            check_case(mm, 50, 1500, 33, dts[d], 1, 1, 1, 0, 1) ||
            check_case(mm, 131, 1000, 47, dts[d], 0, 1, 1, 2, 1) ||
            check_case(mm, 5, 768, 100, dts[d], 1, 1, 0, 0, 1))
            return;
    }
}

/* The operands of the bit-for-bit checks below: W (K x N), MMAX rows of X and a bias, random
 * in [-1, 1), and two Y buffers. */
enum { BITS_K = 301, BITS_N = 83, BITS_MMAX = 40 };
typedef struct bits_data {
    float *src, *x, *y1, *y2;
    float bias[BITS_N];
} bits_data_t;

static void bits_data_free(bits_data_t *d)
{
    free(d->src);
    free(d->x);
    free(d->y1);
    free(d->y2);
    memset(d, 0, sizeof(*d));
}

/* 0, or -1 (a failed check, nothing left allocated) when out of memory. */
static int bits_data_init(bits_data_t *d)
{
    d->src = malloc((size_t)BITS_K * BITS_N * sizeof(float));
    d->x = malloc((size_t)BITS_MMAX * BITS_K * sizeof(float));
    d->y1 = malloc((size_t)BITS_MMAX * BITS_N * sizeof(float));
    d->y2 = malloc((size_t)BITS_MMAX * BITS_N * sizeof(float));
    if (!d->src || !d->x || !d->y1 || !d->y2) {
        CHECK(!"out of memory");
        bits_data_free(d);
        return -1;
    }
    for (int i = 0; i < BITS_K * BITS_N; i++)
        d->src[i] = rand_unit(&rng_state);
    for (int i = 0; i < BITS_MMAX * BITS_K; i++)
        d->x[i] = rand_unit(&rng_state);
    for (int i = 0; i < BITS_N; i++)
        d->bias[i] = rand_unit(&rng_state);
    return 0;
}

/* The vector kernels sum in the same order of k (matmul_kern.h) and both contract with FMA,
 * so on the same packed weights they give the same bits, whatever their tile shapes: here
 * for every dtype, M = 1..40 (one row block, whole K), tails, bias, accumulate and GELU. */
static void test_same_bits(void)
{
    char err[200];
    mm_t *a = NULL, *b = NULL;
    if (mm_init(&a, 2, err, sizeof(err)) || mm_init(&b, 2, err, sizeof(err)) ||
        mm_set_kernel(a, MM_KERNEL_AVX2) || mm_set_kernel(b, MM_KERNEL_AVX512)) {
        CHECK(!"avx2 and avx512 contexts");
        goto out;
    }
    static const int dts[] = {ENG_DTYPE_F32, ENG_DTYPE_F16, ENG_DTYPE_BF16, ENG_DTYPE_I8,
                              ENG_DTYPE_BF16X3};
    enum { K = BITS_K, N = BITS_N, MMAX = BITS_MMAX };
    bits_data_t data;
    if (bits_data_init(&data))
        goto out;
    const float *src = data.src, *x = data.x, *bias = data.bias;
    float *ya = data.y1, *yb = data.y2;
    for (int d = 0; d < 5; d++) {
        mm_weight_t w;
        if (mm_weight_init(&w, src, K, N, N, 0, dts[d])) {
            CHECK(!"mm_weight_init");
            continue;
        }
        for (int M = 1; M <= MMAX; M++) {
            int acc = M % 2, epi = M % 3 == 0 ? MM_EPI_GELU : MM_EPI_NONE;
            for (int i = 0; i < M * N; i++)
                ya[i] = yb[i] = (float)i * 1e-3f;
            mm_matmul(a, M, x, K, &w, M % 4 ? bias : NULL, ya, N, acc, epi);
            mm_matmul(b, M, x, K, &w, M % 4 ? bias : NULL, yb, N, acc, epi);
            if (memcmp(ya, yb, (size_t)M * N * sizeof(float)) != 0) {
                fprintf(stderr, "mm_test: avx2 and avx512 differ: %s M=%d\n", dtype_name(dts[d]),
                        M);
                check_failed_count++;
                break;
            }
        }
        mm_weight_free(&w);
    }
    bits_data_free(&data);
out:
    mm_free(a);
    mm_free(b);
}

/* W8A8 sums exactly in integers and finishes each block with the same float steps, so every
 * kernel and form gives the same bits: the portable tile, AVX2 and AVX-512, each with and
 * without VNNI (where the CPU has it), for M = 1..40, tails, bias and accumulate; with GELU
 * the vector tiles (the portable tile's GELU is the scalar one). K = 301: two blocks of X
 * scales, the second short. */
static void test_same_bits_w8a8(void)
{
    char err[200];
    enum { N_CTX = 5, K = BITS_K, N = BITS_N, MMAX = BITS_MMAX };
    static const int kernels[N_CTX] = {MM_KERNEL_GENERIC, MM_KERNEL_AVX2, MM_KERNEL_AVX2,
                                       MM_KERNEL_AVX512, MM_KERNEL_AVX512};
    static const int vnni[N_CTX] = {0, 0, 1, 0, 1};
    mm_t *mm[N_CTX] = {NULL};
    bits_data_t data = {0};
    mm_weight_t w = {0};
    float *ref = malloc((size_t)MMAX * N * sizeof(float));
    if (!ref || bits_data_init(&data) || mm_weight_init(&w, data.src, K, N, N, 0, ENG_DTYPE_W8A8)) {
        CHECK(!"w8a8 data");
        goto out;
    }
    for (int c = 0; c < N_CTX; c++) {
        if (mm_init(&mm[c], 2, err, sizeof(err)) || mm_set_kernel(mm[c], kernels[c])) {
            CHECK(!"a context");
            goto out;
        }
        if (mm_set_vnni(mm[c], vnni[c]) == -ENOTSUP) {
            printf("mm_test: SKIP w8a8 %s with VNNI: not supported by this CPU\n",
                   mm_kernel_name(kernels[c]));
            mm_free(mm[c]);
            mm[c] = NULL;
        }
    }
    for (int M = 1; M <= MMAX; M++) {
        int acc = M % 2, epi = M % 3 == 0 ? MM_EPI_GELU : MM_EPI_NONE;
        const float *b = M % 4 ? data.bias : NULL;
        for (int c = 0; c < N_CTX; c++) {
            if (!mm[c] || (kernels[c] == MM_KERNEL_GENERIC && epi == MM_EPI_GELU))
                continue;
            float *y = c == 0 || (c == 1 && epi == MM_EPI_GELU) ? ref : data.y1;
            for (int i = 0; i < M * N; i++)
                y[i] = (float)i * 1e-3f;
            mm_matmul(mm[c], M, data.x, K, &w, b, y, N, acc, epi);
            if (y != ref && memcmp(y, ref, (size_t)M * N * sizeof(float)) != 0) {
                fprintf(stderr, "mm_test: w8a8 %s%s differs from the %s tile: M=%d\n",
                        mm_kernel_name(kernels[c]), vnni[c] ? " (VNNI)" : "",
                        epi == MM_EPI_GELU ? "avx2" : "portable", M);
                check_failed_count++;
                goto out;
            }
        }
    }
out:
    for (int c = 0; c < N_CTX; c++)
        mm_free(mm[c]);
    mm_weight_free(&w);
    bits_data_free(&data);
    free(ref);
}

/* AMX with BF16 and BF16X3 weights: each row of a product is the same bits as that row
 * alone (M = 1, which runs on the calling thread) and as inside products of other sizes and
 * offsets (its position in a 16-row tile differs), with bias, accumulate and GELU; K and N
 * not multiples of the tile sizes. */
static void test_amx_rows(void)
{
    char err[200];
    mm_t *mm = NULL;
    if (mm_init(&mm, 2, err, sizeof(err)) || mm_set_kernel(mm, MM_KERNEL_AMX)) {
        CHECK(!"an amx context");
        mm_free(mm);
        return;
    }
    enum { K = BITS_K, N = BITS_N, MMAX = BITS_MMAX };
    bits_data_t data = {0};
    mm_weight_t w = {0};
    if (bits_data_init(&data))
        goto out;
    const float *src = data.src, *x = data.x, *bias = data.bias;
    float *yall = data.y1, *y = data.y2;
    static const int dts[] = {ENG_DTYPE_BF16, ENG_DTYPE_BF16X3};
    for (int v = 0; v < 6; v++) {
        if (v % 3 == 0) {
            mm_weight_free(&w);
            if (mm_weight_init(&w, src, K, N, N, 0, dts[v / 3])) {
                CHECK(!"mm_weight_init");
                goto out;
            }
        }
        int acc = v % 3 == 1, epi = v % 3 == 2 ? MM_EPI_GELU : MM_EPI_NONE;
        const float *b = v % 3 ? bias : NULL;
        for (int i = 0; i < MMAX * N; i++)
            yall[i] = (float)i * 1e-3f;
        mm_matmul(mm, MMAX, x, K, &w, b, yall, N, acc, epi);
        static const int starts[] = {0, 1, 5, 16, 17, 39}, sizes[] = {1, 2, 7, 16, 17, 23};
        for (int s = 0; s < 6; s++)
            for (int z = 0; z < 6; z++) {
                int m0 = starts[s], M = sizes[z] < MMAX - m0 ? sizes[z] : MMAX - m0;
                for (int i = 0; i < M * N; i++)
                    y[i] = (float)((size_t)m0 * N + i) * 1e-3f;
                mm_matmul(mm, M, x + (size_t)m0 * K, K, &w, b, y, N, acc, epi);
                if (memcmp(y, yall + (size_t)m0 * N, (size_t)M * N * sizeof(float)) != 0) {
                    fprintf(stderr,
                            "mm_test: amx %s rows %d..%d alone differ from the %d-row "
                            "product (variant %d)\n",
                            dtype_name(w.dtype), m0, m0 + M - 1, MMAX, v % 3);
                    check_failed_count++;
                    goto out;
                }
            }
    }
out:
    mm_weight_free(&w);
    bits_data_free(&data);
    mm_free(mm);
}

static void test_conversions(void)
{
    /* Every finite half survives half -> float -> half. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue; /* NaN */
        uint16_t back = mm_f32_to_f16(mm_f16_to_f32((uint16_t)h));
        if (back != h) {
            CHECK_INT_EQ(back, h);
            break;
        }
    }
    for (uint32_t b = 0; b < 0x10000; b++) {
        if ((b & 0x7f80) == 0x7f80 && (b & 0x7f))
            continue;
        uint16_t back = mm_f32_to_bf16(mm_bf16_to_f32((uint16_t)b));
        if (back != b) {
            CHECK_INT_EQ(back, b);
            break;
        }
    }
    /* Rounding goes to the nearest representable value, ties to even. */
    CHECK_INT_EQ(mm_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);     /* tie, even stays */
    CHECK_INT_EQ(mm_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie, odd rounds up */
    CHECK_INT_EQ(mm_f32_to_f16(65520.0f), 0x7c00);            /* overflow to inf */
    CHECK_INT_EQ(mm_f32_to_f16(65519.0f), 0x7bff);
    CHECK_INT_EQ(mm_f32_to_f16(0x1p-25f), 0x0000); /* tie to zero */
    CHECK_INT_EQ(mm_f32_to_f16(0x1.8p-25f), 0x0001);
    CHECK_INT_EQ(mm_f32_to_f16(-0x1p-24f), 0x8001);
    CHECK_INT_EQ(mm_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    CHECK_INT_EQ(mm_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    CHECK_INT_EQ(mm_f32_to_bf16(-2.0f), 0xc000);
    CHECK_INT_EQ(mm_f32_to_bf16(NAN) & 0x7fc0, 0x7fc0);
    CHECK_INT_EQ(mm_f32_to_f16(NAN) & 0x7e00, 0x7e00);
    /* Int8: nearest, ties to even, clamped to +-127, NaN to 0. */
    CHECK_INT_EQ(mm_f32_to_i8(2.5f, 1.0f), 2);
    CHECK_INT_EQ(mm_f32_to_i8(3.5f, 1.0f), 4);
    CHECK_INT_EQ(mm_f32_to_i8(-3.5f, 1.0f), -4);
    CHECK_INT_EQ(mm_f32_to_i8(0.74f, 0.5f), 1);
    CHECK_INT_EQ(mm_f32_to_i8(0.76f, 0.5f), 2);
    CHECK_INT_EQ(mm_f32_to_i8(127.4f, 1.0f), 127);
    CHECK_INT_EQ(mm_f32_to_i8(1000.0f, 1.0f), 127);
    CHECK_INT_EQ(mm_f32_to_i8(-1000.0f, 1.0f), -127);
    CHECK_INT_EQ(mm_f32_to_i8(INFINITY, 1.0f), 127);
    CHECK_INT_EQ(mm_f32_to_i8(NAN, 1.0f), 0);
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = rnd() ^ (rnd() << 16);
        float f;
        memcpy(&f, &bits, sizeof(f));
        if (!(fabsf(f) < 60000.0f))
            continue;
        uint16_t h = mm_f32_to_f16(f);
        double e = fabs((double)f - mm_f16_to_f32(h));
        double e_dn = fabs((double)f - mm_f16_to_f32((uint16_t)(h - 1)));
        double e_up = fabs((double)f - mm_f16_to_f32((uint16_t)(h + 1)));
        if ((h & 0x7fff) != 0 && e > e_dn) {
            fprintf(stderr, "mm_test: f16(%a) = 0x%04x is not nearest\n", (double)f, h);
            check_failed_count++;
            break;
        }
        if ((h & 0x7fff) != 0x7bff && e > e_up) {
            fprintf(stderr, "mm_test: f16(%a) = 0x%04x is not nearest\n", (double)f, h);
            check_failed_count++;
            break;
        }
    }
}

static void test_errors(void)
{
    char err[200];
    mm_t *mm = NULL;
    setenv("NANO_VLLM_KERNEL", "fastest", 1);
    CHECK_INT_EQ(mm_init(&mm, 1, err, sizeof(err)), -EINVAL);
    CHECK_INT_EQ(strstr(err, "fastest") != NULL, 1);
    CHECK_INT_EQ(mm == NULL, 1);
    setenv("NANO_VLLM_KERNEL", "generic", 1);
    CHECK_INT_EQ(mm_init(&mm, 1, err, sizeof(err)), 0);
    if (mm) {
        CHECK_INT_EQ(mm_get_kernel(mm), MM_KERNEL_GENERIC);
        CHECK_INT_EQ(mm_set_kernel(mm, 99), -EINVAL);
        CHECK_INT_EQ(mm_get_kernel(mm), MM_KERNEL_GENERIC);
    }
    mm_free(mm);
    /* amx by name: the AMX kernel, or -ENOTSUP with the reason where the CPU or OS lacks it;
     * auto picks it wherever forcing it works. */
    setenv("NANO_VLLM_KERNEL", "amx", 1);
    mm = NULL;
    int rc = mm_init(&mm, 1, err, sizeof(err));
    CHECK(rc == 0 || rc == -ENOTSUP);
    if (rc == 0)
        CHECK_INT_EQ(mm_get_kernel(mm), MM_KERNEL_AMX);
    else
        CHECK_INT_EQ(strstr(err, "not supported") != NULL, 1);
    mm_free(mm);
    unsetenv("NANO_VLLM_KERNEL");
    mm = NULL;
    CHECK_INT_EQ(mm_init(&mm, 1, err, sizeof(err)), 0);
    if (mm)
        CHECK_INT_EQ(mm_get_kernel(mm) == MM_KERNEL_AMX, rc == 0);
    mm_free(mm);
    mm_free(NULL);

    mm_weight_t w;
    float src[4] = {1, 2, 3, 4};
    CHECK_INT_EQ(mm_weight_init(&w, src, 0, 4, 4, 0, ENG_DTYPE_F32), -EINVAL);
    CHECK_INT_EQ(w.data == NULL, 1);
    CHECK_INT_EQ(mm_weight_init(&w, src, 2, 2, 1, 0, ENG_DTYPE_F32), -EINVAL); /* ld < N */
    CHECK_INT_EQ(mm_weight_init(&w, src, 2, 2, 2, 0, 42), -EINVAL);
    CHECK_INT_EQ(mm_weight_init(&w, src, 2, 2, 2, 0, ENG_DTYPE_AUTO), 0);
    CHECK_INT_EQ(w.dtype, ENG_DTYPE_F32);
    CHECK_INT_EQ(mm_weight_get(&w, 1, 0) == 3.0f, 1);
    CHECK_INT_EQ(w.scale == NULL, 1);
    mm_weight_free(&w);
    /* Int8 keeps its scales, padded with 1 to the panel width, and frees them. */
    CHECK_INT_EQ(mm_weight_init(&w, src, 2, 2, 2, 0, ENG_DTYPE_I8), 0);
    CHECK_INT_EQ(w.bytes, 2 * MM_NR);
    CHECK(w.scale != NULL);
    if (w.scale) {
        CHECK_NEAR(w.scale[0], 3.0 / 127, 1e-9);
        CHECK_NEAR(w.scale[1], 4.0 / 127, 1e-9);
        CHECK_NEAR(w.scale[MM_NR - 1], 1.0, 0);
        CHECK_NEAR(mm_weight_get(&w, 1, 1), 4.0, 1e-6);
        CHECK_NEAR(mm_weight_get(&w, 0, 0), 1.0, 3.0 / 254);
    }
    mm_weight_free(&w);
    CHECK_INT_EQ(w.scale == NULL && w.data == NULL, 1);
}

/* W8A8 on rows whose quantization is a special case, each row alone and all in one product
 * (M = 4, K = 300: two blocks of X): zeros, values below 2^-100 (a block of zeros: scale 0),
 * a NaN and an Inf (that row's outputs are NaN; the other rows are untouched). The first
 * two give exactly the bias. */
static void test_w8a8_edges(mm_t *mm)
{
    enum { M = 4, K = 300, N = 40 };
    float src[K * N], x[M * K], y[M * N], bias[N];
    for (int i = 0; i < K * N; i++)
        src[i] = rand_unit(&rng_state);
    for (int i = 0; i < N; i++)
        bias[i] = rand_unit(&rng_state);
    for (int k = 0; k < K; k++) {
        x[k] = 0.0f;
        x[K + k] = (k % 2 ? 1e-35f : -5e-32f) * (float)(k % 7);
        x[2 * K + k] = rand_unit(&rng_state);
        x[3 * K + k] = rand_unit(&rng_state);
    }
    x[2 * K + 5] = NAN;
    x[3 * K + 280] = INFINITY;
    mm_weight_t w;
    if (mm_weight_init(&w, src, K, N, N, 0, ENG_DTYPE_W8A8)) {
        CHECK(!"mm_weight_init");
        return;
    }
    for (int alone = 0; alone < 2; alone++) {
        for (int i = 0; i < M * N; i++)
            y[i] = 1.0f;
        if (alone)
            for (int m = 0; m < M; m++)
                mm_matmul(mm, 1, x + (size_t)m * K, K, &w, bias, y + (size_t)m * N, N, 0, 0);
        else
            mm_matmul(mm, M, x, K, &w, bias, y, N, 0, 0);
        for (int n = 0; n < N; n++) {
            CHECK(y[n] == bias[n]);
            CHECK(y[N + n] == bias[n]);
            CHECK(isnan(y[2 * N + n]));
            CHECK(isnan(y[3 * N + n]));
        }
    }
    mm_weight_free(&w);
}

/* Runs one kernel's shapes on 1-3 threads, and on AMX its row check too. */
static void test_kernel(int kernel)
{
    char err[200];
    static const int threads[] = {1, 2, 3};
    for (int ti = 0; ti < 3; ti++) {
        mm_t *mm = NULL;
        int rc = mm_init(&mm, threads[ti], err, sizeof(err));
        CHECK_INT_EQ(rc, 0);
        if (rc) {
            fprintf(stderr, "mm_test: %s\n", err);
            continue;
        }
        CHECK_INT_EQ(mm_set_kernel(mm, kernel), 0);
        const int vnni = mm_get_vnni(mm);
        test_shapes(mm, 0);
        test_w8a8_edges(mm);
        printf("mm_test: kernel %s%s, %d threads: %s\n", mm_kernel_name(kernel),
               vnni ? " (w8a8 with VNNI)" : "", threads[ti], check_failed_count ? "FAILED" : "ok");
        /* W8A8's other form on this kernel: VPMADDUBSW where the CPU has VNNI. */
        if (vnni) {
            CHECK_INT_EQ(mm_set_vnni(mm, 0), 0);
            CHECK_INT_EQ(mm_get_vnni(mm), 0);
            test_shapes(mm, ENG_DTYPE_W8A8);
            test_w8a8_edges(mm);
            printf("mm_test: kernel %s, w8a8 without VNNI, %d threads: %s\n",
                   mm_kernel_name(kernel), threads[ti], check_failed_count ? "FAILED" : "ok");
        }
        mm_free(mm);
    }
    if (kernel == MM_KERNEL_AMX)
        test_amx_rows();
}

static int kernel_by_name(const char *name)
{
    for (int k = MM_KERNEL_GENERIC; k <= MM_KERNEL_AMX; k++)
        if (strcmp(name, mm_kernel_name(k)) == 0)
            return k;
    return -1;
}

/* Exit 77 (meson's SKIP) naming the kernel this CPU lacks, so a green run says what it did
 * not test instead of passing without testing it. */
static int skip_unless_supported(int kernel)
{
    if (mm_kernel_supported(kernel))
        return 0;
    printf("SKIP: kernel %s is not supported by this CPU\n", mm_kernel_name(kernel));
    return 77;
}

int main(int argc, char **argv)
{
    const char *part = argc > 1 ? argv[1] : "";
    int kernel = kernel_by_name(part);
    if (argc != 2 ||
        (kernel < 0 && strcmp(part, "common") != 0 && strcmp(part, "same-bits") != 0)) {
        fprintf(stderr, "usage: mm_test common|same-bits|generic|avx2|avx512|amx\n");
        return 2;
    }
    int skip = 0;
    if (kernel >= 0) {
        if ((skip = skip_unless_supported(kernel)) == 0)
            test_kernel(kernel);
    } else if (strcmp(part, "same-bits") == 0) {
        if ((skip = skip_unless_supported(MM_KERNEL_AVX2)) == 0 &&
            (skip = skip_unless_supported(MM_KERNEL_AVX512)) == 0) {
            test_same_bits();
            test_same_bits_w8a8();
        }
    } else {
        test_conversions();
        test_errors();
    }
    if (check_failed_count) {
        fprintf(stderr, "mm_test %s: %d failures\n", part, check_failed_count);
        return 1;
    }
    return skip;
}
