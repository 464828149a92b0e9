/* mm_rows_test.c - batch invariance of the matrix products: a row's outputs are the same
 * bits whatever else is in the product, for every kernel this CPU runs (each forced; the
 * others print SKIP) and every weight dtype.
 *
 * 70 random rows of X are multiplied alone (M = 1, one thread): their reference bits. Then
 * for M = 1..70 and 1, 2 and 3 threads (W8A8 with and without VNNI), a product of M of those rows,
 * taken at a different start and stride each time (so every row sits at many positions: first,
 * last, inside a tile, in the tail tile), must give every row exactly its reference bits. Two
 * shapes cover the driver's three loop nests: K = 1500 (one tile over the whole K up to a tile's
 * rows, then K in chunks of 256 once the rows outgrow the X block), and K = 1000 (blocks of rows of
 * X past 60); N is not a multiple of the panel width. The first shape has a bias and the GELU
 * epilogue, the second accumulates into Y (each row's own start values).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "tests/check.h"
#include "tests/rand.h"

enum { ROWS = 70, PAD = 3 };

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static const char *dtype_name(int dt)
{
    return dt == ENG_DTYPE_F32      ? "f32"
           : dt == ENG_DTYPE_F16    ? "f16"
           : dt == ENG_DTYPE_BF16   ? "bf16"
           : dt == ENG_DTYPE_BF16X3 ? "bf16x3"
           : dt == ENG_DTYPE_W8A8   ? "w8a8"
                                    : "int8";
}

typedef struct shape {
    int K, N, bias, accumulate, epi;
} shape_t;

static const shape_t SHAPES[] = {
    {1500, 70, 1, 0, MM_EPI_GELU},
    {1000, 47, 0, 1, MM_EPI_NONE},
};

/* Strides coprime to ROWS: M consecutive picks are M distinct rows. */
static const int STRIDES[] = {1, 3, 11, 13, 17, 69};

/* One kernel, one dtype, one shape: returns the number of rows that differ. mm[t] runs t + 1
 * threads. */
static int check_rows(mm_t *const mm[3], int dtype, const shape_t *s, const float *src,
                      const float *xs, const float *y0, const float *bias, float *ref, float *x,
                      float *y)
{
    const int K = s->K, N = s->N;
    const char *kname = mm_kernel_name(mm_get_kernel(mm[0]));
    mm_weight_t w;
    if (mm_weight_init(&w, src, K, N, (size_t)N, 0, dtype)) {
        CHECK(!"mm_weight_init");
        return 1;
    }
    const float *b = s->bias ? bias : NULL;
    for (int r = 0; r < ROWS; r++) {
        memcpy(ref + (size_t)r * N, y0 + (size_t)r * N, (size_t)N * sizeof(float));
        mm_matmul(mm[0], 1, xs + (size_t)r * K, (size_t)K, &w, b, ref + (size_t)r * N, (size_t)N,
                  s->accumulate, s->epi);
    }
    int bad = 0;
    for (int M = 1; M <= ROWS && !bad; M++) {
        for (int t = 0; t < 3 && !bad; t++) {
            const int start = (M * 37 + t * 11) % ROWS;
            const int stride = STRIDES[(M + t) % (int)(sizeof(STRIDES) / sizeof(STRIDES[0]))];
            const size_t ldx = (size_t)K + (size_t)((M + t) % 2) * PAD;
            const size_t ldy = (size_t)N + (size_t)(M % 2) * PAD;
            for (int i = 0; i < M; i++) {
                int r = (start + i * stride) % ROWS;
                memcpy(x + (size_t)i * ldx, xs + (size_t)r * K, (size_t)K * sizeof(float));
                memcpy(y + (size_t)i * ldy, y0 + (size_t)r * N, (size_t)N * sizeof(float));
            }
            mm_matmul(mm[t], M, x, ldx, &w, b, y, ldy, s->accumulate, s->epi);
            for (int i = 0; i < M && !bad; i++) {
                int r = (start + i * stride) % ROWS;
                const float *got = y + (size_t)i * ldy, *want = ref + (size_t)r * N;
                if (memcmp(got, want, (size_t)N * sizeof(float)) == 0)
                    continue;
                int n = 0;
                while (got[n] == want[n] || (got[n] != got[n] && want[n] != want[n]))
                    n++;
                fprintf(stderr,
                        "mm_rows_test: %s %s K=%d N=%d: row %d at position %d of M=%d, %d "
                        "threads: y[%d] = %a, alone %a\n",
                        kname, dtype_name(dtype), K, N, r, i, M, t + 1, n, (double)got[n],
                        (double)want[n]);
                bad++;
            }
        }
    }
    mm_weight_free(&w);
    return bad;
}

int main(void)
{
    static const int kernels[] = {MM_KERNEL_GENERIC, MM_KERNEL_AVX2, MM_KERNEL_AVX512,
                                  MM_KERNEL_AMX};
    static const int dtypes[] = {ENG_DTYPE_F32, ENG_DTYPE_F16,    ENG_DTYPE_BF16,
                                 ENG_DTYPE_I8,  ENG_DTYPE_BF16X3, ENG_DTYPE_W8A8};
    const int KMAX = 1500, NMAX = 70;
    float *src = malloc((size_t)KMAX * NMAX * sizeof(float));
    float *xs = malloc((size_t)ROWS * KMAX * sizeof(float));
    float *y0 = malloc((size_t)ROWS * NMAX * sizeof(float));
    float *ref = malloc((size_t)ROWS * NMAX * sizeof(float));
    float *x = malloc((size_t)ROWS * (KMAX + PAD) * sizeof(float));
    float *y = malloc((size_t)ROWS * (NMAX + PAD) * sizeof(float));
    float bias[70];
    if (!src || !xs || !y0 || !ref || !x || !y) {
        fprintf(stderr, "mm_rows_test: out of memory\n");
        return 1;
    }
    /* Columns of different magnitudes (int8 scales each column apart). */
    for (int k = 0; k < KMAX; k++)
        for (int n = 0; n < NMAX; n++)
            src[(size_t)k * NMAX + n] = rand_unit(&rng_state) * (float)(1 << (n % 5)) * 0.02f;
    for (size_t i = 0; i < (size_t)ROWS * KMAX; i++)
        xs[i] = rand_unit(&rng_state);
    for (size_t i = 0; i < (size_t)ROWS * NMAX; i++)
        y0[i] = rand_unit(&rng_state);
    for (int i = 0; i < NMAX; i++)
        bias[i] = rand_unit(&rng_state);
    int ran = 0;
    for (size_t ki = 0; ki < sizeof(kernels) / sizeof(kernels[0]); ki++) {
        mm_t *mm[3] = {NULL, NULL, NULL};
        char err[200];
        int rc = 0;
        for (int t = 0; t < 3 && rc == 0; t++) {
            rc = mm_init(&mm[t], t + 1, err, sizeof(err));
            if (rc == 0)
                rc = mm_set_kernel(mm[t], kernels[ki]);
            else
                fprintf(stderr, "mm_rows_test: %s\n", err);
        }
        if (rc == -ENOTSUP) {
            printf("mm_rows_test: SKIP kernel %s: not supported by this CPU\n",
                   mm_kernel_name(kernels[ki]));
        } else if (rc) {
            CHECK_INT_EQ(rc, 0);
        } else {
            int before = check_failed_count;
            for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++)
                for (size_t si = 0; si < sizeof(SHAPES) / sizeof(SHAPES[0]); si++)
                    check_failed_count +=
                        check_rows(mm, dtypes[d], &SHAPES[si], src, xs, y0, bias, ref, x, y) != 0;
            /* W8A8 also without VNNI where the kernel uses it by default. */
            if (mm_get_vnni(mm[0])) {
                for (int t = 0; t < 3; t++)
                    CHECK_INT_EQ(mm_set_vnni(mm[t], 0), 0);
                for (size_t si = 0; si < sizeof(SHAPES) / sizeof(SHAPES[0]); si++)
                    check_failed_count += check_rows(mm, ENG_DTYPE_W8A8, &SHAPES[si], src, xs, y0,
                                                     bias, ref, x, y) != 0;
            }
            printf("mm_rows_test: kernel %s: %s\n", mm_kernel_name(kernels[ki]),
                   check_failed_count == before ? "every row the same bits in every product"
                                                : "FAILED");
            ran++;
        }
        for (int t = 0; t < 3; t++)
            mm_free(mm[t]);
    }
    free(src);
    free(xs);
    free(y0);
    free(ref);
    free(x);
    free(y);
    if (check_failed_count) {
        fprintf(stderr, "mm_rows_test: %d failures\n", check_failed_count);
        return 1;
    }
    return ran ? 0 : 77;
}
