/* attn_test.c - attention through the paged KV cache (engine/kernels/attention.c): a row's
 * output is the same bits however its prompt is chunked and whatever else is in the step, for
 * every kernel this CPU runs (each forced; the others print SKIP), both KV dtypes, grouped-query
 * groups of 1 and more, and block sizes that are and are not multiples of the 16-key panel
 * groups.
 *
 * Each case writes a sequence of P random rows (q, k, v) and computes every row's output
 *   - alone: one decode step per position (the reference bits);
 *   - chunked: prefill in chunks of 7, 13, 1 and the rest (rows straddle blocks and the causal
 *     limit inside a block), on 2 threads;
 *   - batched: two chunks of it in steps that also carry another sequence's chunks;
 *   - in a decode batch: one decode step per position for MAX_B sequences at once (the work
 *     items then take several KV heads each);
 * and compares them bit for bit; the reference bits are also checked against a float64
 * softmax(q kᵀ / sqrt(HS)) v of the same (stored) values. The pool starts filled with NaN, so a
 * key or value read past a row's context would show. The AVX2 and AVX-512 paths compute the
 * same chains, so their bits are compared too.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/attention.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/vec.h"
#include "tests/check.h"
#include "tests/rand.h"

enum { P = 45, P2 = 20, MAX_CTX = 64, NBLK = 64, MAX_B = 8 };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* The value an F16 cache keeps for x (round to nearest even), as float. */
static float f16_round(float x)
{
    const vec_ops_t *ops = vec_ops_get(MM_KERNEL_GENERIC);
    uint16_t h;
    ops->to_f16(&h, &x, 1);
    ops->from_f16(&x, &h, 1);
    return x;
}

typedef struct shape {
    int NH, NKV, HS, BS;
} shape_t;

static const shape_t SHAPES[] = {
    {4, 4, 64, 16},   /* GPT-2's head size, group 1 */
    {6, 2, 32, 16},   /* group 3 */
    {8, 2, 16, 5},    /* group 4, blocks of 5: every panel group partial */
    {2, 1, 48, 32},   /* two panel groups per block */
    {6, 3, 32, 16},   /* group 2, an odd number of KV heads */
    {10, 10, 32, 16}, /* group 1, ten KV heads: a decode token's V in four runs */
};
#define NSHAPES ((int)(sizeof(SHAPES) / sizeof(SHAPES[0])))

/* One sequence's rows: Q (P, NH, HS), K and V (P, NKV, HS), its blocks. */
typedef struct seq {
    int n;
    float *q, *k, *v;
    int32_t table[MAX_CTX];
} seq_t;

typedef struct rig {
    const shape_t *s;
    int dtype;
    mm_t *mm;
    kv_cache_t kv;
    float *scratch;
    int threads;
} rig_t;

static int rig_init(rig_t *r, const shape_t *s, int dtype, const char *kernel, int threads)
{
    char err[200];
    memset(r, 0, sizeof(*r));
    r->s = s;
    r->dtype = dtype;
    r->threads = threads;
    int rc = mm_init_kernel(&r->mm, threads, kernel, err, sizeof(err));
    if (rc)
        return rc;
    rc = kv_cache_init(&r->kv, 1, s->NKV, s->HS, s->BS, NBLK, dtype);
    CHECK_INT_EQ(rc, 0);
    size_t bytes = kv_cache_block_bytes(1, s->NKV, s->HS, s->BS, dtype) * NBLK;
    memset(r->kv.data, 0xff, bytes); /* NaN as F32 and as F16 */
    size_t fl = attn_scratch_floats(s->HS, MAX_CTX) * (size_t)threads;
    r->scratch = aligned_alloc(64, (fl * sizeof(float) + 63) / 64 * 64);
    CHECK(r->scratch != NULL);
    return 0;
}

static void rig_free(rig_t *r)
{
    kv_cache_free(&r->kv);
    free(r->scratch);
    mm_free(r->mm);
}

/* One step: for each i < B, rows [t0[i], t1[i]) of sequence sq[i]; outputs into out[i] (rows
 * by position, NH x HS each). */
static void step(rig_t *r, int B, seq_t *const *sq, const int *t0, const int *t1, float *const *out)
{
    const shape_t *s = r->s;
    const int HS = s->HS, ldq = s->NH * HS, ldkv = s->NKV * HS;
    int T = 0;
    for (int i = 0; i < B; i++)
        T += t1[i] - t0[i];
    float *q = malloc((size_t)T * ldq * sizeof(float));
    float *k = malloc((size_t)T * ldkv * sizeof(float));
    float *v = malloc((size_t)T * ldkv * sizeof(float));
    float *o = malloc((size_t)T * ldq * sizeof(float));
    int32_t pos[MAX_B * MAX_CTX], slot[MAX_B * MAX_CTX], start[MAX_B + 1], ctx[MAX_B];
    const int32_t *tables[MAX_B];
    CHECK(q && k && v && o && B <= MAX_B);
    int t = 0;
    for (int i = 0; i < B; i++) {
        start[i] = t;
        ctx[i] = t1[i];
        tables[i] = sq[i]->table;
        for (int p = t0[i]; p < t1[i]; p++, t++) {
            pos[t] = p;
            slot[t] = sq[i]->table[p / s->BS] * s->BS + p % s->BS;
            memcpy(q + (size_t)t * ldq, sq[i]->q + (size_t)p * ldq, (size_t)ldq * sizeof(float));
            memcpy(k + (size_t)t * ldkv, sq[i]->k + (size_t)p * ldkv, (size_t)ldkv * sizeof(float));
            memcpy(v + (size_t)t * ldkv, sq[i]->v + (size_t)p * ldkv, (size_t)ldkv * sizeof(float));
        }
    }
    start[B] = t;
    attn_batch_t b = {.T = T,
                      .B = B,
                      .pos = pos,
                      .slot = slot,
                      .seq_start = start,
                      .ctx_len = ctx,
                      .block_table = tables};
    attn_layer_t a = {.q = q,
                      .k = k,
                      .v = v,
                      .ldq = (size_t)ldq,
                      .ldkv = (size_t)ldkv,
                      .out = o,
                      .ldo = (size_t)ldq,
                      .NH = s->NH,
                      .NKV = s->NKV,
                      .HS = HS,
                      .l = 0,
                      .scratch = r->scratch,
                      .scratch_floats = attn_scratch_floats(HS, MAX_CTX),
                      .threads = r->threads,
                      .max_ctx = MAX_CTX};
    attn_forward(r->mm, &r->kv, &b, &a);
    for (int i = 0; i < B; i++)
        memcpy(out[i] + (size_t)t0[i] * ldq, o + (size_t)start[i] * ldq,
               (size_t)(t1[i] - t0[i]) * ldq * sizeof(float));
    free(q);
    free(k);
    free(v);
    free(o);
}

/* Rows of a and b that differ in any bit, printed (the first few). */
static int diff_rows(const char *what, const float *a, const float *b, int n, int ld)
{
    int bad = 0;
    for (int t = 0; t < n; t++)
        if (memcmp(a + (size_t)t * ld, b + (size_t)t * ld, (size_t)ld * sizeof(float)) != 0) {
            if (bad++ < 3)
                fprintf(stderr, "  %s: row %d differs\n", what, t);
        }
    return bad;
}

/* The largest |ref - got| over every row, ref in float64 from the values the cache keeps. */
static double ref_diff(const shape_t *s, int dtype, const seq_t *sq, const float *got)
{
    const int HS = s->HS, ldq = s->NH * HS, ldkv = s->NKV * HS, group = s->NH / s->NKV;
    double worst = 0, sc[MAX_CTX];
    for (int t = 0; t < sq->n; t++)
        for (int h = 0; h < s->NH; h++) {
            const float *q = sq->q + (size_t)t * ldq + (size_t)h * HS;
            const int g = h / group;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) {
                double d = 0;
                for (int c = 0; c < HS; c++) {
                    float kv = sq->k[(size_t)j * ldkv + (size_t)g * HS + c];
                    d += (double)q[c] * (dtype == ENG_DTYPE_F16 ? f16_round(kv) : kv);
                }
                sc[j] = d / sqrt((double)HS);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = 0; j <= t; j++)
                sum += sc[j] = exp(sc[j] - mx);
            for (int c = 0; c < HS; c++) {
                double o = 0;
                for (int j = 0; j <= t; j++) {
                    float vv = sq->v[(size_t)j * ldkv + (size_t)g * HS + c];
                    o += sc[j] / sum * (dtype == ENG_DTYPE_F16 ? f16_round(vv) : vv);
                }
                double e = fabs(o - got[(size_t)t * ldq + (size_t)h * HS + c]);
                worst = e > worst || e != e ? e : worst;
            }
        }
    return worst;
}

static void seq_init(seq_t *sq, const shape_t *s, int n, int first_block, int step)
{
    const size_t ldq = (size_t)s->NH * s->HS, ldkv = (size_t)s->NKV * s->HS;
    sq->n = n;
    sq->q = malloc((size_t)n * ldq * sizeof(float));
    sq->k = malloc((size_t)n * ldkv * sizeof(float));
    sq->v = malloc((size_t)n * ldkv * sizeof(float));
    CHECK(sq->q && sq->k && sq->v);
    for (size_t i = 0; i < (size_t)n * ldq; i++)
        sq->q[i] =
            2 * rand_unit(&rng_state); /* scores of a few units: a softmax far from uniform */
    for (size_t i = 0; i < (size_t)n * ldkv; i++) {
        sq->k[i] = rand_unit(&rng_state);
        sq->v[i] = rand_unit(&rng_state);
    }
    /* Blocks out of order, interleaved with the other sequence's. */
    for (int b = 0; b < MAX_CTX; b++)
        sq->table[b] = (first_block + b * step) % NBLK;
}

static void seq_free(seq_t *sq)
{
    free(sq->q);
    free(sq->k);
    free(sq->v);
}

/* Every row of a (and of b) one decode step at a time. */
static int run_alone(const shape_t *s, int dtype, const char *kernel, seq_t *sq, float *out)
{
    rig_t r;
    int rc = rig_init(&r, s, dtype, kernel, 1);
    if (rc)
        return rc;
    for (int t = 0; t < sq->n; t++) {
        int t0 = t, t1 = t + 1;
        step(&r, 1, &sq, &t0, &t1, &out);
    }
    rig_free(&r);
    return 0;
}

static void check_case(const shape_t *s, int dtype, const char *kernel, float *avx_bits)
{
    const int ldq = s->NH * s->HS;
    seq_t a, b;
    /* The same rows for every kernel. */
    rng_state = 0x9e3779b97f4a7c15ull ^ (uint64_t)(s->NH * 131 + s->HS * 7 + s->BS + dtype * 1000);
    seq_init(&a, s, P, 3, 5);
    seq_init(&b, s, P2, 1, 5); /* blocks 1, 6, 11, ...: none of a's (3, 8, 13, ...) */
    float *ref = calloc((size_t)P * ldq, sizeof(float));
    float *refb = calloc((size_t)P2 * ldq, sizeof(float));
    float *got = calloc((size_t)P * ldq, sizeof(float));
    float *gotb = calloc((size_t)P2 * ldq, sizeof(float));
    CHECK(ref && refb && got && gotb);
    char name[160];
    snprintf(name, sizeof(name), "kernel %s, kv %s, NH %d NKV %d HS %d BS %d", kernel,
             dtype == ENG_DTYPE_F16 ? "f16" : "f32", s->NH, s->NKV, s->HS, s->BS);
    int before = check_failures();
    CHECK_INT_EQ(run_alone(s, dtype, kernel, &a, ref), 0);
    CHECK_INT_EQ(run_alone(s, dtype, kernel, &b, refb), 0);
    double tol = dtype == ENG_DTYPE_F16 ? 2e-5 : 2e-6; /* the stored values are the reference's */
    double e = ref_diff(s, dtype, &a, ref);
    CHECK_LE(e, tol);

    /* Chunked, 2 threads. */
    rig_t r;
    CHECK_INT_EQ(rig_init(&r, s, dtype, kernel, 2), 0);
    static const int chunks[] = {7, 13, 1, P - 21};
    for (int c = 0, t = 0; c < 4; t += chunks[c++]) {
        int t0 = t, t1 = t + chunks[c];
        seq_t *sp = &a;
        step(&r, 1, &sp, &t0, &t1, &got);
    }
    CHECK_INT_EQ(diff_rows("chunked", ref, got, P, ldq), 0);
    rig_free(&r);

    /* Batched with b: a's 16 + 29 rows with b's 10 + 10, then b alone is not needed. */
    memset(got, 0, (size_t)P * ldq * sizeof(float));
    CHECK_INT_EQ(rig_init(&r, s, dtype, kernel, 3), 0);
    seq_t *both[2] = {&b, &a};
    float *outs[2] = {gotb, got};
    int t0[2] = {0, 0}, t1[2] = {10, 16};
    step(&r, 2, both, t0, t1, outs);
    t0[0] = 10, t0[1] = 16, t1[0] = P2, t1[1] = P;
    step(&r, 2, both, t0, t1, outs);
    CHECK_INT_EQ(diff_rows("batched", ref, got, P, ldq), 0);
    CHECK_INT_EQ(diff_rows("batched, other sequence", refb, gotb, P2, ldq), 0);
    rig_free(&r);

    /* Decode steps of MAX_B sequences on one thread (enough to keep it busy, so each work item
     * takes all the KV heads of a sequence, as in a server's batched decode): every one is a,
     * reading the same blocks (one thread: the same values written to the same slots one
     * after the other). */
    float *many = calloc((size_t)MAX_B * P * ldq, sizeof(float));
    CHECK(many != NULL);
    CHECK_INT_EQ(rig_init(&r, s, dtype, kernel, 1), 0);
    for (int t = 0; t < P; t++) {
        seq_t *sq[MAX_B];
        float *outm[MAX_B];
        int d0[MAX_B], d1[MAX_B];
        for (int i = 0; i < MAX_B; i++) {
            sq[i] = &a;
            outm[i] = many + (size_t)i * P * ldq;
            d0[i] = t;
            d1[i] = t + 1;
        }
        step(&r, MAX_B, sq, d0, d1, outm);
    }
    for (int i = 0; i < MAX_B; i++)
        CHECK_INT_EQ(diff_rows("decode batch", ref, many + (size_t)i * P * ldq, P, ldq), 0);
    rig_free(&r);
    free(many);

    /* The AVX2 and AVX-512 paths: the same bits. */
    if (avx_bits && strcmp(kernel, "avx2") == 0)
        memcpy(avx_bits, ref, (size_t)P * ldq * sizeof(float));
    else if (avx_bits)
        CHECK_INT_EQ(diff_rows("avx512 against avx2", avx_bits, ref, P, ldq), 0);

    printf("%s: %s (max diff from float64 %.2e, tol %.0e)\n", name,
           check_failures() == before ? "ok" : "FAILED", e, tol);
    free(ref);
    free(refb);
    free(got);
    free(gotb);
    seq_free(&a);
    seq_free(&b);
}

int main(void)
{
    static const struct {
        const char *name;
        int id;
    } kernels[] = {
        {"generic", MM_KERNEL_GENERIC}, {"avx2", MM_KERNEL_AVX2}, {"avx512", MM_KERNEL_AVX512}};
    const int both_avx =
        mm_kernel_supported(MM_KERNEL_AVX2) && mm_kernel_supported(MM_KERNEL_AVX512);
    for (int k = 0; k < 3; k++) {
        if (!mm_kernel_supported(kernels[k].id)) {
            printf("SKIP kernel %s: this CPU or OS cannot run it\n", kernels[k].name);
            continue;
        }
        for (int d = 0; d < 2; d++)
            for (int i = 0; i < NSHAPES; i++) {
                static float avx_bits[2][NSHAPES][P * 8 * 64];
                float *bits = both_avx && k > 0 ? avx_bits[d][i] : NULL;
                check_case(&SHAPES[i], d ? ENG_DTYPE_F16 : ENG_DTYPE_F32, kernels[k].name, bits);
            }
    }
    return check_failures() ? 1 : 0;
}
