/* bench/engine.c - forward-pass speed on the GPT-2 124M shape, against bounds measured in
 * the same run.
 *
 *   bench/engine [MODEL_DIR]
 *
 * Without a model in MODEL_DIR (default: a directory in the build tree) it writes a seeded
 * random 124M checkpoint there with scripts/make-checkpoint first. Reports prefill tokens/s
 * (128- and 512-token prompts), decode tokens/s at batch 1, 8 and 32 against a filled cache,
 * cblas_sgemm GFLOP/s on exactly the products of those steps, the read bandwidth of a large
 * buffer, the ratios the engine issue sets targets for, and peak RSS against weights + KV.
 * Not a test: run it by hand, on a quiet machine, for about a minute.
 */
#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bounds.h"
#include "engine/engine.h"
#include "engine/model/gpt2_model.h"

#define BS 16
#define CTX 64 /* cached tokens per sequence before the decode steps */
#define MAX_B 32
#define MAX_T 512
#define DECODE_STEPS 4 /* per measurement */
#define ROUNDS 3
#define BW_MIB 256

/* model_load of a GPT-2 checkpoint, as the GPT-2 inside it (this bench reads its layers). */
static int bench_gpt2_load(gpt2_t **m, const char *dir, int dtype, char *err, size_t errlen)
{
    model_t *b = NULL;
    int rc = model_load(&b, dir, dtype, NULL, err, errlen);
    *m = (gpt2_t *)b;
    if (!rc && strcmp(model_describe(b)->arch, "GPT2LMHeadModel") != 0) {
        snprintf(err, errlen, "%s: not a GPT-2 checkpoint", dir);
        model_free(b);
        return -EINVAL;
    }
    return rc;
}

/* Sequences with contiguous private tables; block ids are seq * per_seq + i. */
typedef struct bench_batch {
    int32_t tokens[MAX_T], pos[MAX_T], slot[MAX_T], seq_start[MAX_B + 1], ctx_len[MAX_B];
    int32_t logit_rows[MAX_B];
    int32_t tables[MAX_B][MAX_T / BS + 8];
    const int32_t *table_ptrs[MAX_B];
    unsigned char written[MAX_B * (MAX_T / BS + 8)]; /* blocks a step has written to */
    model_batch_t b;
} bench_batch_t;

/* Builds a step where sequence s (of B) adds n tokens after `start` cached ones. */
static void make_step(bench_batch_t *bb, int B, int start, int n, float *logits)
{
    model_batch_t *b = &bb->b;
    memset(b, 0, sizeof(*b));
    for (int s = 0; s < B; s++) {
        bb->seq_start[s] = b->T;
        for (int i = 0; i < n; i++) {
            int p = start + i;
            bb->tokens[b->T] = (int32_t)((s * 7919 + p * 104729) % 50257);
            bb->pos[b->T] = p;
            bb->slot[b->T] = bb->tables[s][p / BS] * BS + p % BS;
            bb->written[bb->tables[s][p / BS]] = 1;
            b->T++;
        }
        bb->ctx_len[s] = start + n;
        bb->logit_rows[s] = b->T - 1;
        bb->table_ptrs[s] = bb->tables[s];
    }
    bb->seq_start[B] = b->T;
    b->tokens = bb->tokens;
    b->pos = bb->pos;
    b->slot = bb->slot;
    b->B = B;
    b->seq_start = bb->seq_start;
    b->ctx_len = bb->ctx_len;
    b->block_table = bb->table_ptrs;
    b->n_logits = B;
    b->logit_rows = bb->logit_rows;
    b->logits = logits;
}

/* The matrix products of one step with M rows (and M logit rows), timed alone: the same
 * cblas calls on the same (cold, mapped) weights as the forward pass. */
static double sgemm_step(const gpt2_t *m, float *a, float *out, int M)
{
    const int C = m->cfg.n_embd, V = m->cfg.vocab_size;
    double t0 = clock_now_sec();
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const gpt2_layer_t *w = &m->layers[l];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, 3 * C, C, 1, a, C, w->qkv_w,
                    3 * C, 0, out, 3 * C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, C, C, 1, a, C, w->attn_proj_w, C,
                    0, out, C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, 4 * C, C, 1, a, C, w->fc_w, 4 * C,
                    0, out, 4 * C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, C, 4 * C, 1, a, 4 * C,
                    w->mlp_proj_w, C, 0, out, C);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, V, C, 1, a, C, m->lm_head, C, 0, out,
                V);
    return clock_now_sec() - t0;
}

/* 2 * rows * weights of the matrix products of one step. */
static double step_flops(const gpt2_t *m, int rows, int logit_rows)
{
    const double C = m->cfg.n_embd, V = m->cfg.vocab_size;
    return 2.0 * rows * m->cfg.n_layer * 12.0 * C * C + 2.0 * logit_rows * V * C;
}

/* Bytes of weights one step reads (the matrix weights and the LM head). */
static double step_weight_bytes(const gpt2_t *m)
{
    const double C = m->cfg.n_embd, V = m->cfg.vocab_size;
    return 4.0 * (m->cfg.n_layer * 12.0 * C * C + V * C);
}

typedef float v8f __attribute__((vector_size(32)));

typedef struct read_job {
    const v8f *p;
    size_t n;
    float sum;
} read_job_t;

static void *read_loop(void *arg)
{
    read_job_t *j = arg;
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        a0 += j->p[i];
        a1 += j->p[i + 1];
        a2 += j->p[i + 2];
        a3 += j->p[i + 3];
    }
    v8f s = a0 + a1 + a2 + a3;
    j->sum = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    return NULL;
}

/* Read bandwidth of a buffer far larger than the caches, with nthreads threads; best of 2. */
static double bandwidth(int nthreads)
{
    const size_t bytes = (size_t)BW_MIB << 20;
    v8f *buf = aligned_alloc(64, bytes);
    if (!buf)
        return 0;
    memset(buf, 1, bytes);
    size_t nvec = bytes / sizeof(v8f), per = nvec / (size_t)nthreads;
    double best = 0;
    for (int rep = 0; rep < 2; rep++) {
        pthread_t th[16];
        read_job_t jobs[16];
        double t0 = clock_now_sec();
        for (int i = 0; i < nthreads; i++) {
            jobs[i] = (read_job_t){.p = buf + (size_t)i * per, .n = per};
            pthread_create(&th[i], NULL, read_loop, &jobs[i]);
        }
        for (int i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
        double gbs = (double)(per * (size_t)nthreads * sizeof(v8f)) / (clock_now_sec() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    free(buf);
    return best;
}

/* Seconds per decode step of B sequences (one row each) after CTX cached tokens. */
static double decode_time(gpt2_t *m, kv_cache_t *kv, bench_batch_t *bb, int B, float *logits)
{
    double t = clock_now_sec();
    for (int step = 0; step < DECODE_STEPS; step++) {
        make_step(bb, B, CTX + step, 1, logits);
        model_forward(&m->base, kv, &bb->b);
    }
    return (clock_now_sec() - t) / DECODE_STEPS;
}

static double max_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0 / 1e6; /* ru_maxrss is in KiB */
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: %s [MODEL_DIR]\n(default: a seeded random 124M checkpoint written into the "
               "build tree)\n",
               argv[0]);
        return 0;
    }
    const char *dir = argc > 1 ? argv[1] : BENCH_DEFAULT_MODEL_DIR;
    if (bench_model_ensure(dir) != 0) {
        fprintf(stderr, "bench/engine: could not write a checkpoint to %s\n", dir);
        return 1;
    }
    char err[512];
    gpt2_t *m = NULL;
    double t0 = clock_now_sec();
    int rc = bench_gpt2_load(&m, dir, 0, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "bench/engine: %s\n", err);
        return 1;
    }
    const gpt2_config_t *cfg = (&m->cfg);
    printf("model %s: L=%d C=%d NH=%d V=%d, %.1f MB of F32 weights, loaded in %.2f s; "
           "OpenBLAS threads %d\n",
           dir, cfg->n_layer, cfg->n_embd, cfg->n_head, cfg->vocab_size,
           (double)model_weight_bytes(&m->base) / 1e6, clock_now_sec() - t0,
           openblas_get_num_threads());

    /* Blocks for MAX_B sequences of CTX + DECODE_STEPS tokens, or one 512-token prompt. */
    int per_seq = (CTX + DECODE_STEPS + 2 * BS) / BS, num_blocks = MAX_B * per_seq;
    if (num_blocks < MAX_T / BS)
        num_blocks = MAX_T / BS;
    kv_cache_t kv;
    bench_batch_t *bb = calloc(1, sizeof(*bb));
    float *logits = malloc((size_t)MAX_B * cfg->vocab_size * sizeof(float));
    if (!bb || !logits || model_kv_init(&m->base, &kv, BS, num_blocks, ENG_DTYPE_F32) ||
        model_reserve(&m->base, MAX_T, MAX_B, cfg->n_ctx)) {
        fprintf(stderr, "bench/engine: out of memory\n");
        return 1;
    }
    for (int s = 0; s < MAX_B; s++)
        for (int i = 0; i < MAX_T / BS + 8; i++)
            bb->tables[s][i] = (s * per_seq + i) % num_blocks;
    double kv_mb =
        (double)num_blocks * (double)model_kv_block_bytes(&m->base, BS, ENG_DTYPE_F32) / 1e6;

    /* A first step touches the scratch and lets OpenBLAS start its threads. */
    make_step(bb, 1, 0, 16, logits);
    model_forward(&m->base, &kv, &bb->b);

    /* Prefill: one sequence, one step, logits for the last row. */
    const int prompt_lens[2] = {128, 512};
    for (int k = 0; k < 2; k++) {
        double best = 1e9;
        for (int rep = 0; rep < 2 - k; rep++) {
            make_step(bb, 1, 0, prompt_lens[k], logits);
            double t = clock_now_sec();
            model_forward(&m->base, &kv, &bb->b);
            t = clock_now_sec() - t;
            best = t < best ? t : best;
        }
        double gflops = step_flops(m, prompt_lens[k], 1) / best / 1e9;
        printf("prefill %3d tokens: %7.1f ms  %7.0f tokens/s  (%.0f GFLOP/s in matmuls)\n",
               prompt_lens[k], best * 1e3, prompt_lens[k] / best, gflops);
    }

    /* Decode: fill CTX tokens of MAX_B sequences (in chunks), then time steps of B rows. */
    for (int s0 = 0; s0 < MAX_B; s0 += MAX_T / CTX) {
        make_step(bb, MAX_T / CTX, 0, CTX, logits);
        for (int s = 0; s < MAX_T / CTX; s++) /* shift to sequences s0.. */
            bb->table_ptrs[s] = bb->tables[s0 + s];
        for (int t = 0; t < bb->b.T; t++) {
            int s = t / CTX, p = bb->pos[t];
            bb->slot[t] = bb->tables[s0 + s][p / BS] * BS + p % BS;
            bb->written[bb->tables[s0 + s][p / BS]] = 1;
        }
        model_forward(&m->base, &kv, &bb->b);
    }
    /* The engine's steps and the bounds are measured in interleaved rounds, so a busy
     * phase of the machine weighs on both sides of each ratio; the median round counts. */
    const int batches[3] = {1, 8, 32};
    for (int k = 0; k < 3; k++) /* warm-up: touches the decode positions' KV blocks */
        decode_time(m, &kv, bb, batches[k], logits);
    double rss_engine = max_rss_mb();
    float *a = malloc((size_t)MAX_B * 4 * cfg->n_embd * sizeof(float));
    float *out = malloc((size_t)MAX_B * cfg->vocab_size * sizeof(float));
    for (size_t i = 0; i < (size_t)MAX_B * 4 * cfg->n_embd; i++)
        a[i] = (float)(i % 13) * 0.01f;
    double step_time[3][ROUNDS], gemm_time[3][ROUNDS], bw[ROUNDS], r32[ROUNDS], r1[ROUNDS];
    const double bytes = step_weight_bytes(m);
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < 3; k++) {
            step_time[k][r] = decode_time(m, &kv, bb, batches[k], logits);
            gemm_time[k][r] = sgemm_step(m, a, out, batches[k]);
        }
        bw[r] = bandwidth(2);
        r32[r] = gemm_time[2][r] / step_time[2][r];
        r1[r] = bytes / step_time[0][r] / 1e9 / bw[r];
    }
    free(a);
    free(out);
    for (int k = 0; k < 3; k++) {
        int B = batches[k];
        double st = bench_median(step_time[k], ROUNDS), gt = bench_median(gemm_time[k], ROUNDS);
        printf("decode batch %2d (ctx %d): %7.1f ms/step %7.1f tokens/s | cblas_sgemm on the "
               "same products: %7.1f ms, %6.1f GFLOP/s\n",
               B, CTX, st * 1e3, B / st, gt * 1e3, step_flops(m, B, B) / gt / 1e9);
    }
    printf("read bandwidth (2 threads, %d MiB): %.1f GB/s\n", BW_MIB, bench_median(bw, ROUNDS));
    printf("ratio: decode batch 32 = %.0f%% of the sgemm rate on its products (target >= 50%%)\n",
           100 * bench_median(r32, ROUNDS));
    printf("ratio: decode batch 1 streams %.1f GB/s of weights = %.0f%% of the read bandwidth "
           "(target >= 60%%)\n",
           bytes / bench_median(step_time[0], ROUNDS) / 1e9, 100 * bench_median(r1, ROUNDS));
    /* The pool's pages become resident only when written. */
    int n_written = 0;
    for (int i = 0; i < num_blocks; i++)
        n_written += bb->written[i];
    printf("peak RSS %.0f MB (before the bandwidth buffer) vs weights %.0f MB + KV pool %.0f MB "
           "(%.0f MB of it written) + scratch %.0f MB\n",
           rss_engine, (double)model_weight_bytes(&m->base) / 1e6, kv_mb,
           (double)n_written * (double)model_kv_block_bytes(&m->base, BS, ENG_DTYPE_F32) / 1e6,
           (double)m->s.bytes / 1e6);

    kv_cache_free(&kv);
    model_free(&m->base);
    free(bb);
    free(logits);
    return 0;
}
