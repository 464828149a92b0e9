/* attn-bench.c - decode attention alone: the K/V read rate of batched decode steps over a real
 * paged KV cache, against the read bandwidth measured in the same run (bench/bounds.c).
 *
 *   attn-bench [--batch 32] [--ctx 64,256] [--kv-dtype f32,f16] [--rounds 5] [--threads N]
 *              [--layers 12] [--heads 12] [--head-size 64] [--layout shuffled|seq]
 *              [--block-size 16] [--calls N [--hot]]
 *
 * A step is one decode token of each of --batch sequences at context N (positions [0, N),
 * the last one written by the step) through attn_forward for each of --layers layers in turn,
 * as the model runs it: --heads heads of --head-size (GPT-2 124M's shape by default, MHA),
 * blocks of --block-size tokens. The sequences' blocks are drawn from a pool of at least 128 MB
 * in a seeded random order (--layout seq: one after the other), so a step reads K/V from
 * scattered blocks as a server does after some traffic; at batch 32 all the layers' K/V
 * together are far larger than the caches (--calls, for batch 1, reads other memory before each
 * call: see run_calls). K/V bytes per step: batch x N x layers x 2 x heads x head-size x
 * (4 or 2). Rounds interleave the attention and the bandwidth bound; each keeps its best
 * round (other tenants of a shared host only slow a sample down). The kernel is the CPU's best
 * or the one NANO_VLLM_KERNEL names.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bounds.h"
#include "engine/engine.h"
#include "engine/kernels/attention.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/vec.h"

#define STEPS 4

typedef struct opts {
    int B, L, NH, HS, rounds, threads, shuffled;
    int calls, hot, bs;
    int ctx[8], nctx;
    const char *kv_dtypes;
} opts_t;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static float frand(void) /* uniform in [-1, 1) */
{
    return (float)((double)((rnd() >> 16) & 0xffffff) / 8388608.0 - 1.0);
}

/* --calls N: each layer's attn_forward timed alone, N steps of every layer, each call after
 * the pool's threads read FLUSH_BYTES of other memory (a real step streams the weights between
 * two layers' attention, with both threads busy); --hot also times each call again at once
 * (its K/V in the caches). Prints the 10th percentile and the median, us per call. */
#define FLUSH_BYTES ((size_t)48 << 20)
static double flush_sink[64];

static void flush_part(void *arg, int part, int n)
{
    const double *buf = arg;
    const size_t N = FLUSH_BYTES / sizeof(double), i0 = N * part / n, i1 = N * (part + 1) / n;
    double s = 0;
    for (size_t i = i0; i < i1; i += 8)
        s += buf[i];
    flush_sink[part % 64] += s;
}

static int cmp_dbl(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_calls(const opts_t *o, mm_t *mm, const kv_cache_t *kv, const attn_batch_t *b,
                     const attn_layer_t *a0, double *p10, double *med, double *hot10)
{
    const int L = o->L;
    const size_t N = (size_t)o->calls * L;
    double *buf = malloc(FLUSH_BYTES), *t = malloc(2 * N * sizeof(double));
    if (!buf || !t) {
        free(buf);
        free(t);
        return -1;
    }
    for (size_t i = 0; i < FLUSH_BYTES / sizeof(double); i++)
        buf[i] = (double)i;
    for (size_t c = 0; c < N; c++) {
        attn_layer_t a = *a0;
        a.l = (int)(c % (size_t)L);
        pool_run_parts(mm_pool(mm), 64, flush_part, buf);
        const double t0 = clock_now_sec();
        attn_forward(mm, kv, b, &a);
        const double t1 = clock_now_sec();
        t[c] = t1 - t0;
        if (o->hot) {
            attn_forward(mm, kv, b, &a);
            t[N + c] = clock_now_sec() - t1;
        }
    }
    qsort(t, N, sizeof(double), cmp_dbl);
    *p10 = t[N / 10] * 1e6;
    *med = t[N / 2] * 1e6;
    if (o->hot) {
        qsort(t + N, N, sizeof(double), cmp_dbl);
        *hot10 = t[N + N / 10] * 1e6;
    }
    free(buf);
    free(t);
    return 0;
}

/* Best ms of a step (every layer) over `rounds` rounds of STEPS steps, and the best read bound
 * in GB/s measured between them. */
static int run(const opts_t *o, mm_t *mm, int dtype, int n, double *ms, double *bound, double *hot)
{
    const int B = o->B, L = o->L, NH = o->NH, HS = o->HS, C = NH * HS;
    const int BS = o->bs, per_seq = (n + BS - 1) / BS, used = B * per_seq;
    /* A pool of at least 128 MB, the sequences' blocks drawn from all of it (as a server's
     * pool is larger than what a few sequences hold). */
    const size_t bb = kv_cache_block_bytes(L, NH, HS, BS, dtype);
    const int nblk = (size_t)used * bb >= ((size_t)128 << 20)
                         ? used
                         : (int)((((size_t)128 << 20) + bb - 1) / bb);
    kv_cache_t kv;
    int rc = kv_cache_init(&kv, L, NH, HS, BS, nblk, dtype);
    if (rc)
        return rc;
    /* Every value once: random, in the cache's dtype. */
    const vec_ops_t *ops = vec_ops_get(mm_get_kernel(mm));
    const size_t vals = kv_cache_block_bytes(L, NH, HS, BS, dtype) * (size_t)nblk /
                        (dtype == ENG_DTYPE_F16 ? 2 : 4);
    float chunk[1024];
    for (size_t i = 0; i < vals; i += 1024) {
        const int w = vals - i < 1024 ? (int)(vals - i) : 1024;
        for (int k = 0; k < w; k++)
            chunk[k] = frand();
        if (dtype == ENG_DTYPE_F16)
            ops->to_f16((uint16_t *)kv.data + i, chunk, w);
        else
            memcpy((float *)kv.data + i, chunk, (size_t)w * sizeof(float));
    }
    int32_t *blocks = malloc((size_t)nblk * sizeof(int32_t));
    int32_t *pos = malloc((size_t)B * sizeof(int32_t)), *slot = malloc((size_t)B * sizeof(int32_t));
    int32_t *start = malloc((size_t)(B + 1) * sizeof(int32_t));
    int32_t *ctx = malloc((size_t)B * sizeof(int32_t));
    const int32_t **tables = malloc((size_t)B * sizeof(*tables));
    float *q = malloc((size_t)B * C * sizeof(float)), *k = malloc((size_t)B * C * sizeof(float));
    float *v = malloc((size_t)B * C * sizeof(float)), *out = malloc((size_t)B * C * sizeof(float));
    const int threads = pool_threads(mm_pool(mm));
    const size_t sf = attn_scratch_floats(HS, n);
    float *scratch = aligned_alloc(64, sf * (size_t)threads * sizeof(float));
    if (!blocks || !pos || !slot || !start || !ctx || !tables || !q || !k || !v || !out ||
        !scratch) {
        rc = -1;
        goto done;
    }
    for (int i = 0; i < nblk; i++)
        blocks[i] = i;
    for (int i = nblk - 1; o->shuffled && i > 0; i--) {
        const int j = (int)(rnd() % (uint64_t)(i + 1)), t = blocks[i];
        blocks[i] = blocks[j];
        blocks[j] = t;
    }
    for (int s = 0; s < B; s++) {
        tables[s] = blocks + (size_t)s * per_seq;
        start[s] = s;
        ctx[s] = n;
        pos[s] = n - 1;
        slot[s] = tables[s][(n - 1) / BS] * BS + (n - 1) % BS;
    }
    start[B] = B;
    for (size_t i = 0; i < (size_t)B * C; i++) {
        q[i] = frand();
        k[i] = frand();
        v[i] = frand();
    }
    const attn_batch_t b = {.T = B,
                            .B = B,
                            .pos = pos,
                            .slot = slot,
                            .seq_start = start,
                            .ctx_len = ctx,
                            .block_table = tables};
    *ms = 1e30;
    *bound = 0;
    attn_layer_t a = {.q = q,
                      .k = k,
                      .v = v,
                      .ldq = (size_t)C,
                      .ldkv = (size_t)C,
                      .out = out,
                      .ldo = (size_t)C,
                      .NH = NH,
                      .NKV = NH,
                      .HS = HS,
                      .scratch = scratch,
                      .scratch_floats = sf,
                      .threads = threads,
                      .max_ctx = n};
    if (o->calls) {
        rc = run_calls(o, mm, &kv, &b, &a, ms, bound, hot);
        goto done;
    }
    for (int r = 0; r < o->rounds; r++) {
        const double t0 = clock_now_sec();
        for (int st = 0; st < STEPS; st++)
            for (int l = 0; l < L; l++) {
                a.l = l;
                attn_forward(mm, &kv, &b, &a);
            }
        const double t = (clock_now_sec() - t0) / STEPS * 1e3;
        *ms = t < *ms ? t : *ms;
        const double bw = bench_read_bandwidth(mm_pool(mm), (size_t)256 << 20, 2) / 1e9;
        *bound = bw > *bound ? bw : *bound;
    }
done:
    free(blocks);
    free(pos);
    free(slot);
    free(start);
    free(ctx);
    free(tables);
    free(q);
    free(k);
    free(v);
    free(out);
    free(scratch);
    kv_cache_free(&kv);
    return rc;
}

static int parse_ints(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 1 << 16)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

int main(int argc, char **argv)
{
    opts_t o = {.B = 32,
                .L = 12,
                .NH = 12,
                .HS = 64,
                .rounds = 5,
                .threads = 0,
                .shuffled = 1,
                .ctx = {64, 256},
                .nctx = 2,
                .kv_dtypes = "f32,f16",
                .calls = 0,
                .bs = 16};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *dst = !strcmp(a, "--batch")       ? &o.B
                   : !strcmp(a, "--layers")    ? &o.L
                   : !strcmp(a, "--heads")     ? &o.NH
                   : !strcmp(a, "--head-size") ? &o.HS
                   : !strcmp(a, "--rounds")    ? &o.rounds
                   : !strcmp(a, "--threads")   ? &o.threads
                                               : NULL;
        if (dst && v) {
            *dst = atoi(v);
            i++;
        } else if (!strcmp(a, "--ctx") && v) {
            o.nctx = parse_ints(v, o.ctx, 8);
            i++;
        } else if (!strcmp(a, "--calls") && v) {
            o.calls = atoi(v);
            i++;
        } else if (!strcmp(a, "--hot")) {
            o.hot = 1;
        } else if (!strcmp(a, "--block-size") && v) {
            o.bs = atoi(v);
            i++;
        } else if (!strcmp(a, "--kv-dtype") && v) {
            o.kv_dtypes = v;
            i++;
        } else if (!strcmp(a, "--layout") && v && (!strcmp(v, "seq") || !strcmp(v, "shuffled"))) {
            o.shuffled = !strcmp(v, "shuffled");
            i++;
        } else {
            fprintf(stderr,
                    "usage: %s [--batch 32] [--ctx 64,256] [--kv-dtype f32,f16] [--rounds 5] "
                    "[--threads N] [--layers 12] [--heads 12] [--head-size 64] "
                    "[--layout shuffled|seq] [--block-size 16] [--calls N [--hot]]\n",
                    argv[0]);
            return strcmp(a, "--help") ? 2 : 0; /* --help is not an error */
        }
    }
    if (!bench_in_list(o.kv_dtypes, "f32") && !bench_in_list(o.kv_dtypes, "f16")) {
        fprintf(stderr, "attn-bench: --kv-dtype wants f32, f16 or both: %s\n", o.kv_dtypes);
        return 2;
    }
    if (o.nctx < 1 || o.B < 1 || o.L < 1 || o.NH < 1 || o.HS < 1 || o.rounds < 1 || o.bs < 1 ||
        o.bs > 4096 || o.calls < 0) {
        fprintf(stderr, "attn-bench: bad --ctx, --batch, --layers, --heads, --head-size, "
                        "--rounds, --block-size or --calls\n");
        return 2;
    }
    mm_t *mm;
    char err[200];
    if (mm_init(&mm, o.threads, err, sizeof(err))) {
        fprintf(stderr, "attn-bench: %s\n", err);
        return 1;
    }
    printf("decode attention: batch %d, %d layers, %d heads of %d, blocks of %d (%s), kernel "
           "%s, %d threads\n",
           o.B, o.L, o.NH, o.HS, o.bs, o.shuffled ? "shuffled" : "seq",
           mm_kernel_name(mm_get_kernel(mm)), pool_threads(mm_pool(mm)));
    if (o.calls)
        printf("%-4s %5s %10s %9s %11s   (one layer's call, p10 over %d)\n", "kv", "ctx", "K/V MB",
               "p10 us", "attn GB/s", o.calls * o.L);
    else
        printf("%-4s %5s %10s %9s %11s %8s\n", "kv", "ctx", "K/V MB", "ms/step", "attn GB/s",
               "of read");
    static const struct {
        const char *name;
        int dtype, es;
    } DT[] = {{"f32", ENG_DTYPE_F32, 4}, {"f16", ENG_DTYPE_F16, 2}};
    for (int d = 0; d < 2; d++) {
        if (!bench_in_list(o.kv_dtypes, DT[d].name))
            continue;
        for (int c = 0; c < o.nctx; c++) {
            const int n = o.ctx[c];
            double ms, bound, hot = 0;
            if (run(&o, mm, DT[d].dtype, n, &ms, &bound, &hot)) {
                fprintf(stderr, "attn-bench: no memory for the cache at context %d\n", n);
                mm_free(mm);
                return 1;
            }
            if (o.calls) { /* ms, bound: p10 and median us of a layer */
                const double lb = (double)o.B * n * 2 * o.NH * o.HS * DT[d].es;
                printf("%-4s %5d %10.2f %9.2f %11.1f %8s   (median %.2f us", DT[d].name, n,
                       lb / 1e6, ms, lb / (ms * 1e-6) / 1e9, "", bound);
                if (o.hot)
                    printf(", hot p10 %.2f us", hot);
                printf(")\n");
                fflush(stdout);
                continue;
            }
            const double bytes = (double)o.B * n * o.L * 2 * o.NH * o.HS * DT[d].es;
            const double gbs = bytes / (ms * 1e-3) / 1e9;
            printf("%-4s %5d %10.1f %9.3f %11.1f %7.0f%%   (read bound %.1f GB/s)\n", DT[d].name, n,
                   bytes / 1e6, ms, gbs, 100 * gbs / bound, bound);
            fflush(stdout);
        }
    }
    mm_free(mm);
    return 0;
}
