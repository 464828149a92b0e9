/* forward-bench.c - forward-pass speed of any model with the packed kernels, against the full
 * roofline of each step with the read bandwidth and compute peak measured in the same run
 * (bench/bounds.c).
 *
 *   forward-bench [MODEL_DIR] [--shape NAME[:f32|f16|bf16]]
 *                 [--dtype f32,f16,bf16,int8,int8w,bf16x3]  (int8: W8A8, int8w: weight-only)
 *                 [--steps dec1,dec32,dec64,mixed,prefill[:N]...]
 *                 [--rounds N] [--threads N] [--ctx N[,N...]] [--kv-dtype auto|f32|f16]
 *                 [--pf-dist BYTES[,BYTES...]] [--cpu-ms]
 *
 * The model is MODEL_DIR (any architecture model_load knows), else the shape --shape names,
 * written with scripts/make-checkpoint into the build tree on first use and kept there:
 * gpt2-124m (the default, F32), smollm2-135m, smollm2-360m, qwen2.5-0.5b, qwen3-0.6b,
 * llama-3.2-1b (random weights in the real configurations; their file dtype BF16 unless
 * the :DTYPE suffix says otherwise). --dtype says how the weights are kept (each one loads
 * the checkpoint again), --kv-dtype the K/V cache (auto, the default: as the server keeps it
 * for those weights, F32 with F32 or BF16X3 weights, else F16). For each weight dtype:
 *   decode, batch 1, 32 and 64, at each context of --ctx (default 64: positions of K/V
 *                      already written; each step adds one token to every sequence);
 *   mixed: the 32 decodes with a 32-row prompt chunk (positions 32-63) in the same step,
 *                      as a server admits new prompts, at each context; rows/s;
 *   prefill of 512 tokens (causal attention), or of N with prefill:N in --steps (one or
 *                      more, N up to 512): a prompt's step from position 0 with one logit
 *                      row, as a server runs a prompt that fits in one step;
 * each against the full roofline max((weight bytes + K/V bytes read) / read bandwidth,
 * (weight FLOPs + attention FLOPs) / compute peak). Weight bytes are every packed panel once
 * (model_matrix_cost); weight FLOPs 2 x rows x multiply-adds per row plus the LM head for the
 * rows with logits; K/V bytes L x NKV x HS x 2 x (bytes per value) per cached position of
 * each sequence, read once; attention FLOPs 4 x HS x NH x L per row per position it attends
 * (QK^T and PV). The compute peak is the FMA rate of the kernel's vector width: 16-lane
 * (AVX-512) chains for the avx512 and amx kernels, 8-lane for avx2 (on an AVX-512 CPU half
 * the widest rate when its units are 512 bits wide) and the portable one. The table prints which
 * term bounds each step (bandwidth, FMA or AMX), the share of that term that is attention's (K/V
 * bytes or attention FLOPs), and the ratio. BF16 weights on the amx kernel take the AMX BF16 tile
 * peak instead of the FMA peak for their weight FLOPs, and BF16X3 weights (three tile products per
 * product) a third of it. With f32 among the dtypes, each other dtype's logits against F32's on one
 * prompt (max difference relative to the largest |logit|) and how many greedy tokens agree. Rounds
 * interleave the engine and the bounds; the bounds keep their best sample and the engine its best
 * round, because other tenants of a shared host only ever slow a sample down. The last column
 * divides the step's FLOPs (weights and attention) by the CPU time the process used (both threads,
 * spinning included) and by one core's FMA rate per CPU-second: the kernels' efficiency with the
 * time other tenants held the cores left out (meaningful for the compute-bound steps); --cpu-ms
 * adds a column after it, that CPU time in ms per step. --steps runs only the named steps (e.g.
 * one step under perf record).
 * --pf-dist compares software prefetch distances of the weight streams (mm_set_pf_dist; 0 is the
 * default): before the rounds, for each dtype, batch-1 decode steps at the first context, one step
 * at each distance in turn, PF_STEPS x rounds steps per distance; it prints the fastest, 10th
 * percentile and median step per distance and the 10th percentile relative to the first's. On a
 * shared host the interleaving puts every distance through the same noise.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bounds.h"
#include "engine/engine.h"
#include "engine/model/arch.h"

#define BS 16
#define MAX_B 64
#define MAX_T 512
#define MAX_CTX 1024
#define MAX_NCTX 8
#define DECODE_STEPS 4

/* The shapes --shape names: make-checkpoint's --arch and --shape, and the file's dtype. */
static const struct {
    const char *name, *arch, *shape, *dtype;
} SHAPES[] = {
    {"gpt2-124m", "gpt2", "124m", "f32"},
    {"smollm2-135m", "llama", "smollm2-135m", "bf16"},
    {"smollm2-360m", "llama", "smollm2-360m", "bf16"},
    {"qwen2.5-0.5b", "qwen2", "qwen2.5-0.5b", "bf16"},
    {"qwen3-0.6b", "qwen3", "qwen3-0.6b", "bf16"},
    {"llama-3.2-1b", "llama", "llama-3.2-1b", "bf16"},
};
#define N_SHAPES ((int)(sizeof(SHAPES) / sizeof(SHAPES[0])))

typedef struct step {
    int32_t tokens[MAX_T], pos[MAX_T], slot[MAX_T], seq_start[MAX_B + 1], ctx_len[MAX_B];
    int32_t logit_rows[MAX_B];
    int32_t tables[MAX_B][MAX_CTX / BS + 2];
    const int32_t *table_ptrs[MAX_B];
    model_batch_t b;
} step_t;

/* B sequences each adding n rows after `start` cached positions; logits for each last row.
 * Sequence s owns blocks s * per_seq ... (the cache content does not change the work). */
static void make_step(step_t *st, int B, int start, int n, int per_seq, int V, float *logits)
{
    model_batch_t *b = &st->b;
    memset(b, 0, sizeof(*b));
    for (int s = 0; s < B; s++) {
        st->seq_start[s] = b->T;
        for (int i = 0; i < per_seq; i++)
            st->tables[s][i] = s * per_seq + i;
        for (int i = 0; i < n; i++) {
            int p = start + i;
            st->tokens[b->T] = (int32_t)((s * 7919 + p * 104729) % V);
            st->pos[b->T] = p;
            st->slot[b->T] = st->tables[s][p / BS] * BS + p % BS;
            b->T++;
        }
        st->ctx_len[s] = start + n;
        st->logit_rows[s] = b->T - 1;
        st->table_ptrs[s] = st->tables[s];
    }
    st->seq_start[B] = b->T;
    *b = (model_batch_t){.T = b->T,
                         .tokens = st->tokens,
                         .pos = st->pos,
                         .slot = st->slot,
                         .B = B,
                         .seq_start = st->seq_start,
                         .ctx_len = st->ctx_len,
                         .block_table = st->table_ptrs,
                         .n_logits = B,
                         .logit_rows = st->logit_rows,
                         .logits = logits};
}

/* Appends to st's batch one more sequence (the next index) with a prompt chunk of n rows
 * after `start` cached positions and no logits: a step of a server that decodes and admits
 * a prompt at once. */
static void add_chunk(step_t *st, int start, int n, int per_seq, int V)
{
    model_batch_t *b = &st->b;
    int s = b->B, T = b->T;
    for (int i = 0; i < per_seq; i++)
        st->tables[s][i] = s * per_seq + i;
    st->seq_start[s] = T;
    for (int i = 0; i < n; i++, T++) {
        int p = start + i;
        st->tokens[T] = (int32_t)((s * 7919 + p * 104729) % V);
        st->pos[T] = p;
        st->slot[T] = st->tables[s][p / BS] * BS + p % BS;
    }
    st->ctx_len[s] = start + n;
    st->table_ptrs[s] = st->tables[s];
    st->seq_start[s + 1] = T;
    b->T = T;
    b->B = s + 1;
}

/* The accuracy probe: the logits of a PROBE_PROMPT-token prompt, then PROBE_GEN tokens
 * continued greedily; each dtype is compared with F32 (when F32 is measured too). */
#define PROBE_PROMPT 32
#define PROBE_GEN 16

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        best = v[i] > v[best] ? i : best;
    return best;
}

/* Writes the prompt's last logits (V floats) and the greedy continuation. The prompt is
 * sequence 0's first positions, so it runs before the decode steps rewrite them. */
static void probe(model_t *m, kv_cache_t *kv, step_t *st, int per_seq, float *logits,
                  float *prompt_logits, int32_t *gen)
{
    const int V = model_describe(m)->vocab_size;
    make_step(st, 1, 0, PROBE_PROMPT, per_seq, V, logits);
    model_forward(m, kv, &st->b);
    memcpy(prompt_logits, logits, (size_t)V * sizeof(float));
    for (int i = 0; i < PROBE_GEN; i++) {
        gen[i] = argmax(logits, V);
        make_step(st, 1, PROBE_PROMPT + i, 1, per_seq, V, logits);
        st->tokens[0] = gen[i];
        model_forward(m, kv, &st->b);
    }
}

enum { K_DEC1, K_DEC32, K_DEC64, K_MIXED, K_PREFILL, N_K };
static const char *const K_NAME[N_K] = {"decode 1", "decode 32", "decode 64", "dec 32+prompt 32",
                                        "prefill"};
static const char *const K_ARG[N_K] = {"dec1", "dec32", "dec64", "mixed", "prefill"};
/* Sequences that decode (and have logits) in each step. */
static const int K_B[N_K] = {1, 32, 64, 32, 1};
/* The mixed step's prompt chunk: rows 32..63 of a 64-token prompt, what a server at 32
 * streams admits beside the decodes (bench/loadgen.py's prompts). */
#define MIXED_CHUNK 32

/* What one step costs in the roofline's terms. */
typedef struct cost {
    int rows;
    double w_bytes, kv_bytes; /* read: packed weights; K/V of every sequence, once */
    double w_flops, a_flops;  /* weight matrices; attention (QK^T and PV) */
} cost_t;

/* Step k at decode context n (the decodes' steps run at n, n+1, ...: averaged), or the prefill
 * of n rows from position 0. */
static cost_t step_cost(const model_t *m, int k, int n, int kv_size)
{
    const model_desc_t *d = model_describe(m);
    double mm_bytes, macs_row, macs_logit;
    model_matrix_cost(m, &mm_bytes, &macs_row, &macs_logit);
    /* Per position attended: K/V bytes read, FLOPs of one row. */
    const double kv_pos = (double)d->n_layer * d->n_kv_head * d->head_size * 2 * kv_size;
    const double a_pos = 4.0 * d->head_size * d->n_head * d->n_layer;
    cost_t c = {.w_bytes = mm_bytes};
    /* Positions attended by a decode row (and cached for its sequence), over the steps. */
    const double dec_pos = n + (DECODE_STEPS + 1) / 2.0;
    if (k == K_PREFILL) {
        c.rows = n;
        c.kv_bytes = kv_pos * n;
        c.a_flops = a_pos * (double)n * (n + 1) / 2;
    } else {
        c.rows = K_B[k];
        c.kv_bytes = kv_pos * dec_pos * K_B[k];
        c.a_flops = a_pos * dec_pos * K_B[k];
        if (k == K_MIXED) {
            c.rows += MIXED_CHUNK;
            c.kv_bytes += kv_pos * 2 * MIXED_CHUNK;
            for (int p = MIXED_CHUNK; p < 2 * MIXED_CHUNK; p++)
                c.a_flops += a_pos * (p + 1);
        }
    }
    c.w_flops = 2.0 * (c.rows * macs_row + K_B[k] * macs_logit);
    return c;
}

#define PF_STEPS 100
#define MAX_PF 8

/* --pf-dist: n_pf distances, `steps` batch-1 decode steps each, interleaved (see the top). */
static int pf_sweep(model_t *m, kv_cache_t *kv, step_t *st, const char *dt, const int *pf, int n_pf,
                    int steps, int ctx, int per_seq, int V, float *logits)
{
    double *t = malloc((size_t)n_pf * steps * sizeof(double));
    if (!t)
        return -1;
    for (int i = 0; i < steps; i++)
        for (int v = 0; v < n_pf; v++) {
            mm_set_pf_dist(m->mm, pf[v], pf[v]);
            make_step(st, 1, ctx + i % DECODE_STEPS, 1, per_seq, V, logits);
            double t0 = clock_now_sec();
            model_forward(m, kv, &st->b);
            t[(size_t)v * steps + i] = clock_now_sec() - t0;
        }
    mm_set_pf_dist(m->mm, 0, 0);
    double ref = 0;
    for (int v = 0; v < n_pf; v++) {
        double *a = t + (size_t)v * steps;
        bench_sort(a, (size_t)steps);
        ref = v == 0 ? a[steps / 10] : ref;
        printf("%-6s decode 1 ctx %d, prefetch %5d B (0: default): min %.3f p10 %.3f p50 %.3f ms, "
               "p10 %.3f of the first's\n",
               dt, ctx, pf[v], a[0] * 1e3, a[steps / 10] * 1e3, a[steps / 2] * 1e3,
               a[steps / 10] / ref);
    }
    fflush(stdout);
    free(t);
    return 0;
}

/* A prefill sample runs as many steps as fit in MAX_T rows, at most DECODE_STEPS: the 512-row
 * one alone, a short prompt's as many as a decode sample. */
static int prefill_reps(int rows)
{
    return MAX_T / rows < DECODE_STEPS ? MAX_T / rows : DECODE_STEPS;
}

/* Parses --steps into run[N_K] (whether each step runs) and the prefill's row counts (prefill:N,
 * N in [1, MAX_T]; prefill alone is MAX_T rows); returns 0, or -1 with the bad word in err. */
static int parse_steps(const char *s, int *run, int *pre, int *n_pre, char *err, size_t errlen)
{
    *n_pre = 0;
    memset(run, 0, N_K * sizeof(*run));
    for (const char *p = s; p && *p;) {
        const char *c = strchr(p, ',');
        int len = c ? (int)(c - p) : (int)strlen(p), k = 0;
        char word[32];
        snprintf(word, sizeof(word), "%.*s", len, p);
        snprintf(err, errlen, "%.*s", len, p);
        p = c ? c + 1 : NULL;
        while (k < N_K && strcmp(word, K_ARG[k]))
            k++;
        long rows = MAX_T;
        if (k == N_K && !strncmp(word, "prefill:", 8)) {
            char *end;
            rows = strtol(word + 8, &end, 10);
            k = *end || end == word + 8 || rows < 1 || rows > MAX_T ? N_K : K_PREFILL;
        }
        if (k == N_K || len >= (int)sizeof(word) || (k == K_PREFILL && *n_pre == MAX_NCTX))
            return -1;
        run[k] = 1;
        if (k == K_PREFILL)
            pre[(*n_pre)++] = (int)rows;
    }
    return 0;
}

/* Parses a comma-separated list of contexts into ctx; returns how many, 0 if one is bad. */
static int parse_ctx(const char *s, int *ctx)
{
    int n = 0;
    for (const char *p = s; p && *p; n++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (n == MAX_NCTX || end == p || (*end && *end != ',') || v < 1 ||
            v > MAX_CTX - DECODE_STEPS)
            return 0;
        ctx[n] = (int)v;
        p = *end ? end + 1 : NULL;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *shape = "gpt2-124m", *dtypes = "f32,f16,bf16";
    const char *steps = "dec1,dec32,dec64,mixed,prefill";
    const char *kv_dtype = "auto", *ctx_arg = "64";
    int rounds = 2, threads = 0, ctxs[MAX_NCTX], n_ctx, pf[MAX_PF], n_pf = 0, cpu_ms = 0;
    int run[N_K], pre[MAX_NCTX], n_pre;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtypes = argv[++i];
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc)
            shape = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = argv[++i];
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx_arg = argv[++i];
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc)
            kv_dtype = argv[++i];
        else if (!strcmp(argv[i], "--cpu-ms"))
            cpu_ms = 1;
        else if (!strcmp(argv[i], "--pf-dist") && i + 1 < argc) {
            for (const char *p = argv[++i]; p && *p; n_pf++) {
                char *end;
                long v = strtol(p, &end, 10);
                if (n_pf == MAX_PF || end == p || (*end && *end != ',') || v < 0 || v > 65536) {
                    fprintf(stderr, "forward-bench: --pf-dist wants up to %d byte counts\n",
                            MAX_PF);
                    return 2;
                }
                pf[n_pf] = (int)v;
                p = *end ? end + 1 : NULL;
            }
        } else if (argv[i][0] != '-')
            dir = argv[i];
        else {
            fprintf(stderr,
                    "usage: %s [MODEL_DIR] [--shape NAME[:f32|f16|bf16]] [--dtype "
                    "f32,f16,bf16,int8,int8w,bf16x3] [--steps "
                    "dec1,dec32,dec64,mixed,prefill[:N]...] [--rounds N] [--threads N] "
                    "[--ctx N[,N...]] [--kv-dtype auto|f32|f16] [--pf-dist BYTES[,BYTES...]] "
                    "[--cpu-ms]\n"
                    "shapes:",
                    argv[0]);
            for (int s = 0; s < N_SHAPES; s++)
                fprintf(stderr, " %s", SHAPES[s].name);
            fprintf(stderr, "\n");
            return strcmp(argv[i], "--help") ? 2 : 0; /* --help is not an error */
        }
    }
    if (rounds < 1 || rounds > 20)
        rounds = 2;
    if (!(n_ctx = parse_ctx(ctx_arg, ctxs))) {
        fprintf(stderr, "forward-bench: --ctx wants up to %d contexts in [1, %d]: %s\n", MAX_NCTX,
                MAX_CTX - DECODE_STEPS, ctx_arg);
        return 2;
    }
    char bad[64];
    if (parse_steps(steps, run, pre, &n_pre, bad, sizeof(bad))) {
        fprintf(stderr,
                "forward-bench: --steps: bad step '%s' (dec1, dec32, dec64, mixed, prefill, "
                "prefill:N with N in [1, %d], up to %d prefills)\n",
                bad, MAX_T, MAX_NCTX);
        return 2;
    }
    /* Each step runs at each of its parameters: the decodes' contexts, the prefills' rows. */
    const int *par[N_K];
    int n_par[N_K];
    for (int k = 0; k < N_K; k++) {
        par[k] = k == K_PREFILL ? pre : ctxs;
        n_par[k] = k == K_PREFILL ? n_pre : n_ctx;
    }
    int max_ctx = 0;
    for (int c = 0; c < n_ctx; c++)
        max_ctx = ctxs[c] > max_ctx ? ctxs[c] : max_ctx;
    if (strcmp(kv_dtype, "auto") && strcmp(kv_dtype, "f32") && strcmp(kv_dtype, "f16")) {
        fprintf(stderr, "forward-bench: --kv-dtype must be auto, f32 or f16\n");
        return 2;
    }
    char shape_dir[4200];
    if (!dir) {
        char name[64];
        snprintf(name, sizeof(name), "%s", shape);
        char *colon = strchr(name, ':');
        if (colon)
            *colon = 0;
        int s = 0;
        while (s < N_SHAPES && strcmp(SHAPES[s].name, name))
            s++;
        const char *fdt = colon ? colon + 1 : s < N_SHAPES ? SHAPES[s].dtype : "";
        if (s == N_SHAPES || (strcmp(fdt, "f32") && strcmp(fdt, "f16") && strcmp(fdt, "bf16"))) {
            fprintf(stderr, "forward-bench: unknown --shape %s (see --help)\n", shape);
            return 2;
        }
        /* The 124M F32 checkpoint is the one the other benchmarks write. */
        if (s == 0 && !strcmp(fdt, "f32"))
            snprintf(shape_dir, sizeof(shape_dir), "%s", BENCH_DEFAULT_MODEL_DIR);
        else
            snprintf(shape_dir, sizeof(shape_dir), "%s/%s-%s", BENCH_SHAPES_DIR, name, fdt);
        if (bench_shape_ensure(shape_dir, SHAPES[s].arch, SHAPES[s].shape, fdt) != 0) {
            fprintf(stderr, "forward-bench: could not write a checkpoint to %s\n", shape_dir);
            return 1;
        }
        dir = shape_dir;
    }
    enum { N_DT = 6 };
    static const char *const dt_name[N_DT] = {"f32", "f16", "bf16", "int8", "bf16x3", "int8w"};
    static const int dt_val[N_DT] = {ENG_DTYPE_F32,  ENG_DTYPE_F16,    ENG_DTYPE_BF16,
                                     ENG_DTYPE_W8A8, ENG_DTYPE_BF16X3, ENG_DTYPE_I8};
    static double best[N_DT][N_K][MAX_NCTX], best_cpu[N_DT][N_K][MAX_NCTX];
    static cost_t costs[N_DT][N_K][MAX_NCTX];
    double bw = 0, fma = 0, core = 0;
    double amx = 0, amx_core = 0;
    /* Tile products per product on AMX (BF16 1, BF16X3 3), 0 off AMX: the compute bound of
     * those rows' weight FLOPs is AMX's peak over it. */
    int on_amx[N_DT] = {0};
    int have[N_DT] = {0}, V = 0, width = 16;
    float *probe_logits = NULL, *logits = NULL;
    int32_t probe_gen[N_DT][PROBE_GEN];
    step_t *st = calloc(1, sizeof(*st));
    if (!st)
        return 1;
    for (int d = 0; d < N_DT; d++) {
        if (!bench_in_list(dtypes, dt_name[d]))
            continue;
        char err[512];
        model_t *m = NULL;
        if (model_load(&m, dir, dt_val[d], NULL, err, sizeof(err))) {
            fprintf(stderr, "forward-bench: %s\n", err);
            return 1;
        }
        if (threads > 0 && model_set_threads(m, threads)) {
            fprintf(stderr, "forward-bench: cannot use %d threads\n", threads);
            return 1;
        }
        const model_desc_t *desc = model_describe(m);
        if (!logits) {
            V = desc->vocab_size;
            logits = malloc((size_t)MAX_B * V * sizeof(float));
            probe_logits = malloc((size_t)N_DT * V * sizeof(float));
            if (!logits || !probe_logits)
                return 1;
        }
        int span = max_ctx + DECODE_STEPS > MAX_T ? max_ctx + DECODE_STEPS : MAX_T;
        if (span > desc->max_pos) {
            fprintf(stderr, "forward-bench: %d positions are beyond the model's %d\n", span,
                    desc->max_pos);
            return 2;
        }
        double rss_load = proc_rss_bytes() / 1e6;
        /* auto: as the server keeps K/V for these weights (kv_cache_dtype auto). */
        const int kv_dt = !strcmp(kv_dtype, "f32")   ? ENG_DTYPE_F32
                          : !strcmp(kv_dtype, "f16") ? ENG_DTYPE_F16
                                                     : model_kv_dtype_auto(dt_val[d]);
        const int kv_size = kv_dt == ENG_DTYPE_F16 ? 2 : 4;
        int per_seq = span / BS + 1;
        kv_cache_t kv;
        if (model_kv_init(m, &kv, BS, MAX_B * per_seq, kv_dt) ||
            model_reserve(m, MAX_T, MAX_B, span)) {
            fprintf(stderr, "forward-bench: out of memory\n");
            return 1;
        }
        /* The decode steps read up to `max_ctx` cached positions: give their blocks real
         * memory with finite values (0x3c bytes: 0.0115 as F32, 1.06 as F16), as a server's
         * cache has. Untouched blocks would all read the kernel's one zero page, from L1. */
        size_t block_bytes = model_kv_block_bytes(m, BS, kv_dt);
        int span_read =
            max_ctx + DECODE_STEPS > 2 * MIXED_CHUNK ? max_ctx + DECODE_STEPS : 2 * MIXED_CHUNK;
        for (int s = 0; s < MAX_B; s++)
            memset((char *)kv.data + (size_t)s * per_seq * block_bytes, 0x3c,
                   (size_t)((span_read - 1) / BS + 1) * block_bytes);
        for (int k = 0; k < N_K; k++)
            for (int c = 0; c < n_par[k]; c++)
                costs[d][k][c] = step_cost(m, k, par[k][c], kv_size);
        /* The avx2 kernel's FMA ceiling is AVX2's, whatever wider units the CPU has. */
        width = mm_kernel_avx512(mm_get_kernel(m->mm)) ? 16 : 8;
        on_amx[d] = mm_get_kernel(m->mm) != MM_KERNEL_AMX ? 0
                    : m->dtype == ENG_DTYPE_BF16          ? 1
                    : m->dtype == ENG_DTYPE_BF16X3        ? 3
                                                          : 0;
        printf("%s: %s, %d layers, C=%d, NH=%d, NKV=%d, HS=%d, V=%d, %.0f MB of packed "
               "matrices, weights %.0f MB, RSS after load %.0f MB, kernel %s, %d threads, "
               "decode context %s, K/V %s\n",
               dt_name[d], desc->arch, desc->n_layer, desc->n_embd, desc->n_head, desc->n_kv_head,
               desc->head_size, desc->vocab_size, costs[d][0][0].w_bytes / 1e6,
               (double)model_weight_bytes(m) / 1e6, rss_load, model_kernel_name(m),
               model_threads(m), ctx_arg, model_dtype_name(kv_dt));
        fflush(stdout);
        for (int k = 0; k < N_K; k++)
            for (int c = 0; c < n_par[k]; c++)
                best[d][k][c] = best_cpu[d][k][c] = 1e30;
        /* Warm-up: touches the scratch and the KV blocks of the decode positions. */
        make_step(st, MAX_B, 0, 8, per_seq, V, logits);
        model_forward(m, &kv, &st->b);
        probe(m, &kv, st, per_seq, logits, probe_logits + (size_t)d * V, probe_gen[d]);
        if (n_pf && pf_sweep(m, &kv, st, dt_name[d], pf, n_pf, PF_STEPS * rounds, ctxs[0], per_seq,
                             V, logits)) {
            fprintf(stderr, "forward-bench: out of memory\n");
            return 1;
        }
        for (int r = 0; r < rounds; r++) {
            for (int k = 0; k < N_K; k++) {
                if (!run[k])
                    continue;
                for (int c = 0; c < n_par[k]; c++) {
                    const int reps = k == K_PREFILL ? prefill_reps(par[k][c]) : DECODE_STEPS;
                    double t0 = clock_now_sec(), c0 = proc_cpu_sec();
                    for (int s = 0; s < reps; s++) {
                        if (k == K_PREFILL) {
                            make_step(st, 1, 0, par[k][c], per_seq, V, logits);
                        } else {
                            make_step(st, K_B[k], par[k][c] + s, 1, per_seq, V, logits);
                            if (k == K_MIXED)
                                add_chunk(st, MIXED_CHUNK, MIXED_CHUNK, per_seq, V);
                        }
                        model_forward(m, &kv, &st->b);
                    }
                    double t = (clock_now_sec() - t0) / reps;
                    double cpu = (proc_cpu_sec() - c0) / reps;
                    best[d][k][c] = t < best[d][k][c] ? t : best[d][k][c];
                    best_cpu[d][k][c] = cpu < best_cpu[d][k][c] ? cpu : best_cpu[d][k][c];
                }
            }
            double b1 = bench_read_bandwidth(mm_pool(m->mm), (size_t)256 << 20, 2);
            double f1 = bench_fma_peak_width(mm_pool(m->mm), 1, width);
            double c1 = bench_fma_core_peak_cpu_width(2, width);
            if (on_amx[d]) {
                double a2, a1 = bench_amx_peak(mm_pool(m->mm), 2, &a2);
                amx = a1 > amx ? a1 : amx;
                amx_core = a2 > amx_core ? a2 : amx_core;
            }
            bw = b1 > bw ? b1 : bw;
            fma = f1 > fma ? f1 : fma;
            core = c1 > core ? c1 : core;
        }
        have[d] = 1;
        kv_cache_free(&kv);
        model_free(m);
    }
    printf("\nbounds (best samples): read bandwidth %.1f GB/s, FMA peak %.1f GFLOP/s (one "
           "core: %.1f GFLOP per CPU-second; %d-lane FMAs, the kernel's)\n",
           bw / 1e9, fma / 1e9, core / 1e9, width);
    if (amx > 0)
        printf("AMX BF16 peak %.1f GFLOP/s (one core: %.1f GFLOP per CPU-second): the compute "
               "bound of BF16 weights on the amx kernel (a third of it for BF16X3)\n",
               amx / 1e9, amx_core / 1e9);
    printf("%-6s %-16s %5s %9s %10s %11s %8s  %-9s %6s  %s%s\n", "dtype", "step", "ctx", "ms/step",
           "tokens/s", "bound t/s", "% bound", "kind", "attn", "FLOP per CPU-second / core peak",
           cpu_ms ? "  CPU ms/step" : "");
    for (int d = 0; d < N_DT; d++) {
        if (!have[d])
            continue;
        for (int k = 0; k < N_K; k++) {
            if (!run[k])
                continue;
            for (int c = 0; c < n_par[k]; c++) {
                const cost_t *x = &costs[d][k][c];
                /* Attention runs on the FMA units whatever multiplies the weights. */
                double peak = on_amx[d] ? amx / on_amx[d] : fma;
                double peak_core = on_amx[d] ? amx_core / on_amx[d] : core;
                double t_mem = (x->w_bytes + x->kv_bytes) / bw;
                double t_fma = x->w_flops / peak + x->a_flops / fma;
                double bound = t_mem > t_fma ? t_mem : t_fma;
                double attn = t_mem > t_fma ? x->kv_bytes / bw / t_mem : x->a_flops / fma / t_fma;
                double cpu_eff = (x->w_flops / peak_core + x->a_flops / core) / best_cpu[d][k][c];
                char name[32], ctx_s[16] = "-", eff[16];
                if (k == K_PREFILL) { /* its rows, in its name */
                    snprintf(name, sizeof(name), "%s %d", K_NAME[k], par[k][c]);
                } else {
                    snprintf(name, sizeof(name), "%s", K_NAME[k]);
                    snprintf(ctx_s, sizeof(ctx_s), "%d", par[k][c]);
                }
                snprintf(eff, sizeof(eff), "%.0f%%", 100.0 * cpu_eff);
                printf("%-6s %-16s %5s %9.2f %10.1f %11.1f %7.0f%%  %-9s %5.0f%%  ", dt_name[d],
                       name, ctx_s, best[d][k][c] * 1e3, x->rows / best[d][k][c], x->rows / bound,
                       100.0 * bound / best[d][k][c],
                       t_mem > t_fma ? "bandwidth"
                       : on_amx[d]   ? "AMX"
                                     : "FMA",
                       100.0 * attn);
                /* The CPU ms go under their heading, after the efficiency's long one. */
                if (cpu_ms)
                    printf("%-31s  %11.2f\n", eff, best_cpu[d][k][c] * 1e3);
                else
                    printf("%s\n", eff);
            }
        }
    }
    /* Accuracy against the F32 weights, relative to the largest |logit| as the tests state it. */
    for (int d = 1; d < N_DT && have[0]; d++) {
        if (!have[d])
            continue;
        const float *a = probe_logits, *b = probe_logits + (size_t)d * V;
        double mx = 0, diff = 0;
        for (int i = 0; i < V; i++) {
            mx = fabs(a[i]) > mx ? fabs(a[i]) : mx;
            diff = fabs((double)a[i] - b[i]) > diff ? fabs((double)a[i] - b[i]) : diff;
        }
        int same = 0;
        while (same < PROBE_GEN && probe_gen[d][same] == probe_gen[0][same])
            same++;
        printf("%-6s vs f32, %d-token prompt: max |logit diff| %.4g = %.2e of max |logit| %.3g; "
               "greedy continuation equal for %d of %d tokens\n",
               dt_name[d], PROBE_PROMPT, diff, diff / mx, mx, same, PROBE_GEN);
    }
    free(st);
    free(logits);
    free(probe_logits);
    return 0;
}
