/* vec_test.c - the SiLU-gated product of every vector set (engine/kernels/vec.h): each set's
 * silu_mul against a float64 silu(g) u, over lengths with and without a tail of fewer than eight
 * values, with out over g (as the Llama MLP calls it) and gates far into both tails of the
 * exponential (finite results, silu(g) -> 0 and -> g). A length's last values get the same
 * bits as the same values inside a longer row. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine/kernels/matmul.h"
#include "engine/kernels/vec.h"
#include "tests/check.h"
#include "tests/rand.h"

enum { N = 43 };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static void check_set(const char *name, const vec_ops_t *ops)
{
    const int before = check_failures();
    float g[N], u[N], full[N], out[N];
    for (int i = 0; i < N; i++) {
        g[i] = 12 * rand_unit(&rng_state);
        u[i] = 3 * rand_unit(&rng_state);
    }
    g[0] = -200, g[1] = 200, g[2] = -88.5f, g[3] = 88.5f, g[4] = 0, g[5] = -1e-30f;
    ops->silu_mul(full, g, u, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        double err = fabs(full[i] - want) / (fabs(want) > 1e-30 ? fabs(want) : 1.0);
        worst = err > worst ? err : worst;
        CHECK(isfinite(full[i]));
    }
    CHECK_LE(worst, 4e-7);
    /* Every length, out over g: the same bits as in the full row. */
    for (int n = 1; n <= N; n++) {
        memcpy(out, g, sizeof(out));
        ops->silu_mul(out, out, u, n);
        CHECK_INT_EQ(memcmp(out, full, (size_t)n * sizeof(float)), 0);
        CHECK_INT_EQ(memcmp(out + n, g + n, (size_t)(N - n) * sizeof(float)), 0);
    }
    printf("%s: %s (max relative error %.2e)\n", name, check_failures() == before ? "ok" : "FAILED",
           worst);
}

int main(void)
{
    check_set("generic", vec_ops_get(MM_KERNEL_GENERIC));
    if (mm_kernel_supported(MM_KERNEL_AVX2))
        check_set("avx2", vec_ops_get(MM_KERNEL_AVX2));
    else
        printf("SKIP avx2: this CPU or OS cannot run it\n");
    return check_failures() ? 1 : 0;
}
