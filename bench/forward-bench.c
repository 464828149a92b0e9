/* forward-bench.c - GPT-2 forward-pass speed with the packed kernels, against the read
 * bandwidth and FMA peak measured in the same run (bench/bounds.c).
 *
 *   forward-bench [MODEL_DIR] [--dtype f32,f16,bf16,int8,int8w,bf16x3]  (int8: W8A8)
 *                 [--steps dec1,dec32,dec64,mixed,prefill]
 *                 [--rounds N] [--threads N] [--ctx N] [--kv-dtype f32|f16]
 *
 * Without a model in MODEL_DIR (default: the random 124M checkpoint bench/engine writes in
 * the build tree) it writes one with scripts/make-checkpoint first. For each weight dtype:
 *   decode, batch 1:   tokens/s against read bandwidth / bytes of weights per token;
 *   decode, batch 32 and 64 (context --ctx, default 64, of K/V already written): tokens/s
 *                      against the roofline bound max(weight bytes / bandwidth, matmul
 *                      FLOPs / FMA peak);
 *   mixed: the 32 decodes with a 32-row prompt chunk (positions 32-63) in the same step,
 *                      as a server admits new prompts; rows/s against the same bound;
 *   prefill of 512 tokens: tokens/s against the same roofline;
 * BF16 weights on the amx kernel take the AMX BF16 tile peak instead of the FMA peak, and
 *   BF16X3 weights (three tile products per product) a third of it;
 *   with f32 among the dtypes, each other dtype's logits against F32's on one prompt (max
 *   difference relative to the largest |logit|) and how many greedy tokens agree.
 * FLOPs count only the weight matrices (2 x rows x weights, the LM head for sampled rows),
 * not attention, so the ratios are conservative. Rounds interleave the engine and the
 * bounds; the bounds keep their best sample and the engine its best round, because other
 * tenants of a shared host only ever slow a sample down. The last column divides the
 * matmul FLOPs by the CPU time the process used (both threads, spinning included) and by
 * one core's FMA rate per CPU-second: the kernels' efficiency with the time other tenants
 * held the cores left out (meaningful for the compute-bound steps). --steps runs only the
 * named steps (e.g. one step under perf record).
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
#include "engine/model/gpt2_model.h"

#define BS 16
#define MAX_B 64
#define MAX_T 512
#define MAX_CTX 1024
#define DECODE_STEPS 4

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

typedef struct step {
    int32_t tokens[MAX_T], pos[MAX_T], slot[MAX_T], seq_start[MAX_B + 1], ctx_len[MAX_B];
    int32_t logit_rows[MAX_B];
    int32_t tables[MAX_B][MAX_CTX / BS + 2];
    const int32_t *table_ptrs[MAX_B];
    model_batch_t b;
} step_t;

/* B sequences each adding n rows after `start` cached positions; logits for each last row.
 * Sequence s owns blocks s * per_seq ... (the cache content does not change the work). */
static void make_step(step_t *st, int B, int start, int n, int per_seq, float *logits)
{
    model_batch_t *b = &st->b;
    memset(b, 0, sizeof(*b));
    for (int s = 0; s < B; s++) {
        st->seq_start[s] = b->T;
        for (int i = 0; i < per_seq; i++)
            st->tables[s][i] = s * per_seq + i;
        for (int i = 0; i < n; i++) {
            int p = start + i;
            st->tokens[b->T] = (int32_t)((s * 7919 + p * 104729) % 50257);
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
static void add_chunk(step_t *st, int start, int n, int per_seq)
{
    model_batch_t *b = &st->b;
    int s = b->B, T = b->T;
    for (int i = 0; i < per_seq; i++)
        st->tables[s][i] = s * per_seq + i;
    st->seq_start[s] = T;
    for (int i = 0; i < n; i++, T++) {
        int p = start + i;
        st->tokens[T] = (int32_t)((s * 7919 + p * 104729) % 50257);
        st->pos[T] = p;
        st->slot[T] = st->tables[s][p / BS] * BS + p % BS;
    }
    st->ctx_len[s] = start + n;
    st->table_ptrs[s] = st->tables[s];
    st->seq_start[s + 1] = T;
    b->T = T;
    b->B = s + 1;
}

/* Bytes a product streams from W: the panels, and int8's column scales. */
static double weight_read_bytes(const mm_weight_t *w)
{
    return (double)w->bytes + (w->scale ? (double)w->n_panels * MM_NR * sizeof(float) : 0);
}

static double packed_bytes(const gpt2_t *m)
{
    double s = weight_read_bytes(&m->lm_head_p);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const gpt2_layer_t *w = &m->layers[l];
        s += weight_read_bytes(&w->qkv_p) + weight_read_bytes(&w->attn_proj_p) +
             weight_read_bytes(&w->fc_p) + weight_read_bytes(&w->mlp_proj_p);
    }
    return s;
}

/* Resident set size now, in MB (/proc/self/statm). */
static double rss_mb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / 1e6;
}

static double step_flops(const gpt2_config_t *cfg, int rows, int logit_rows)
{
    const double C = cfg->n_embd, V = cfg->vocab_size;
    return 2.0 * rows * cfg->n_layer * 12.0 * C * C + 2.0 * logit_rows * V * C;
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
static void probe(gpt2_t *m, kv_cache_t *kv, step_t *st, int per_seq, float *logits,
                  float *prompt_logits, int32_t *gen)
{
    const int V = (&m->cfg)->vocab_size;
    make_step(st, 1, 0, PROBE_PROMPT, per_seq, logits);
    model_forward(&m->base, kv, &st->b);
    memcpy(prompt_logits, logits, (size_t)V * sizeof(float));
    for (int i = 0; i < PROBE_GEN; i++) {
        gen[i] = argmax(logits, V);
        make_step(st, 1, PROBE_PROMPT + i, 1, per_seq, logits);
        st->tokens[0] = gen[i];
        model_forward(&m->base, kv, &st->b);
    }
}

enum { K_DEC1, K_DEC32, K_DEC64, K_MIXED, K_PREFILL, N_K };
static const char *const K_NAME[N_K] = {"decode batch 1", "decode batch 32", "decode batch 64",
                                        "decode 32+prompt 32", "prefill 512"};
static const char *const K_ARG[N_K] = {"dec1", "dec32", "dec64", "mixed", "prefill"};
/* Sequences that decode (and have logits) in each step. */
static const int K_B[N_K] = {1, 32, 64, 32, 1};
/* The mixed step's prompt chunk: rows 32..63 of a 64-token prompt, what a server at 32
 * streams admits beside the decodes (bench/loadgen.py's prompts). */
#define MIXED_CHUNK 32

int main(int argc, char **argv)
{
    const char *dir = BENCH_DEFAULT_MODEL_DIR, *dtypes = "f32,f16,bf16";
    const char *steps = "dec1,dec32,dec64,mixed,prefill";
    const char *kv_dtype = "f32";
    int rounds = 2, threads = 0, ctx = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtypes = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = argv[++i];
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc)
            kv_dtype = argv[++i];
        else if (argv[i][0] != '-')
            dir = argv[i];
        else {
            fprintf(stderr,
                    "usage: %s [MODEL_DIR] [--dtype f32,f16,bf16,int8,int8w,bf16x3] [--steps "
                    "dec1,dec32,dec64,mixed,prefill] [--rounds N] [--threads N] [--ctx N] "
                    "[--kv-dtype f32|f16]\n",
                    argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0; /* --help is not an error */
        }
    }
    if (rounds < 1 || rounds > 20)
        rounds = 2;
    if (ctx < 1 || ctx > MAX_CTX - DECODE_STEPS) {
        fprintf(stderr, "forward-bench: --ctx must be in [1, %d]\n", MAX_CTX - DECODE_STEPS);
        return 2;
    }
    if (strcmp(kv_dtype, "f32") && strcmp(kv_dtype, "f16")) {
        fprintf(stderr, "forward-bench: --kv-dtype must be f32 or f16\n");
        return 2;
    }
    const int kv_dt = strcmp(kv_dtype, "f16") ? ENG_DTYPE_F32 : ENG_DTYPE_F16;
    if (bench_model_ensure(dir) != 0) {
        fprintf(stderr, "forward-bench: could not write a checkpoint to %s\n", dir);
        return 1;
    }
    enum { N_DT = 6 };
    static const char *const dt_name[N_DT] = {"f32", "f16", "bf16", "int8", "bf16x3", "int8w"};
    static const int dt_val[N_DT] = {ENG_DTYPE_F32,  ENG_DTYPE_F16,    ENG_DTYPE_BF16,
                                     ENG_DTYPE_W8A8, ENG_DTYPE_BF16X3, ENG_DTYPE_I8};
    double best[N_DT][N_K], best_cpu[N_DT][N_K], bw = 0, fma = 0, core = 0, wbytes[N_DT] = {0};
    double amx = 0, amx_core = 0;
    /* Tile products per product on AMX (BF16 1, BF16X3 3), 0 off AMX: the compute bound of
     * those rows is AMX's peak over it. */
    int on_amx[N_DT] = {0};
    gpt2_config_t cfgs[N_DT];
    int have[N_DT] = {0};
    float *probe_logits = malloc((size_t)N_DT * 50257 * sizeof(float));
    int32_t probe_gen[N_DT][PROBE_GEN];
    step_t *st = calloc(1, sizeof(*st));
    float *logits = malloc((size_t)MAX_B * 50257 * sizeof(float));
    if (!st || !logits || !probe_logits)
        return 1;
    for (int d = 0; d < N_DT; d++) {
        if (!bench_in_list(dtypes, dt_name[d]))
            continue;
        char err[512];
        gpt2_t *m = NULL;
        if (bench_gpt2_load(&m, dir, dt_val[d], err, sizeof(err))) {
            fprintf(stderr, "forward-bench: %s\n", err);
            return 1;
        }
        if (threads > 0 && model_set_threads(&m->base, threads)) {
            fprintf(stderr, "forward-bench: cannot use %d threads\n", threads);
            return 1;
        }
        const gpt2_config_t *cfg = (&m->cfg);
        if (cfg->vocab_size > 50257) {
            fprintf(stderr, "forward-bench: vocabulary %d is larger than this bench's\n",
                    cfg->vocab_size);
            return 1;
        }
        if (ctx + DECODE_STEPS > cfg->n_ctx) {
            fprintf(stderr, "forward-bench: --ctx %d is beyond the model's n_positions %d\n", ctx,
                    cfg->n_ctx);
            return 2;
        }
        double rss_load = rss_mb();
        int span = ctx + DECODE_STEPS > MAX_T ? ctx + DECODE_STEPS : MAX_T;
        int per_seq = span / BS + 1;
        kv_cache_t kv;
        if (model_kv_init(&m->base, &kv, BS, MAX_B * per_seq, kv_dt) ||
            model_reserve(&m->base, MAX_T, MAX_B, cfg->n_ctx)) {
            fprintf(stderr, "forward-bench: out of memory\n");
            return 1;
        }
        /* The decode steps read `ctx` cached positions: give their blocks real memory with
         * finite values (0x3c bytes: 0.0115 as F32, 1.06 as F16), as a server's cache has.
         * Untouched blocks would all read the kernel's one zero page, from L1. */
        size_t block_bytes = model_kv_block_bytes(&m->base, BS, kv_dt);
        int span_read = ctx + DECODE_STEPS > 2 * MIXED_CHUNK ? ctx + DECODE_STEPS : 2 * MIXED_CHUNK;
        for (int s = 0; s < MAX_B; s++)
            memset((char *)kv.data + (size_t)s * per_seq * block_bytes, 0x3c,
                   (size_t)((span_read - 1) / BS + 1) * block_bytes);
        wbytes[d] = packed_bytes(m);
        cfgs[d] = *cfg;
        on_amx[d] = mm_get_kernel(m->base.mm) != MM_KERNEL_AMX ? 0
                    : m->base.dtype == ENG_DTYPE_BF16          ? 1
                    : m->base.dtype == ENG_DTYPE_BF16X3        ? 3
                                                               : 0;
        printf("%s: %d layers, C=%d, %.0f MB of packed matrices, weights %.0f MB, RSS after "
               "load %.0f MB, kernel %s, %d threads, decode context %d, K/V %s\n",
               dt_name[d], cfg->n_layer, cfg->n_embd, wbytes[d] / 1e6,
               (double)model_weight_bytes(&m->base) / 1e6, rss_load,
               mm_kernel_name(mm_get_kernel(m->base.mm)), pool_threads(mm_pool(m->base.mm)), ctx,
               kv_dtype);
        fflush(stdout);
        for (int k = 0; k < N_K; k++)
            best[d][k] = best_cpu[d][k] = 1e30;
        /* Warm-up: touches the scratch and the KV blocks of the decode positions. */
        make_step(st, MAX_B, 0, 8, per_seq, logits);
        model_forward(&m->base, &kv, &st->b);
        probe(m, &kv, st, per_seq, logits, probe_logits + (size_t)d * 50257, probe_gen[d]);
        for (int r = 0; r < rounds; r++) {
            for (int k = 0; k < N_K; k++) {
                if (!bench_in_list(steps, K_ARG[k]))
                    continue;
                double t0 = bench_now(), c0 = bench_cpu_now();
                if (k == K_PREFILL) {
                    make_step(st, 1, 0, MAX_T, per_seq, logits);
                    model_forward(&m->base, &kv, &st->b);
                } else {
                    for (int s = 0; s < DECODE_STEPS; s++) {
                        make_step(st, K_B[k], ctx + s, 1, per_seq, logits);
                        if (k == K_MIXED)
                            add_chunk(st, MIXED_CHUNK, MIXED_CHUNK, per_seq);
                        model_forward(&m->base, &kv, &st->b);
                    }
                }
                double t = (bench_now() - t0) / (k == K_PREFILL ? 1 : DECODE_STEPS);
                double c = (bench_cpu_now() - c0) / (k == K_PREFILL ? 1 : DECODE_STEPS);
                best[d][k] = t < best[d][k] ? t : best[d][k];
                best_cpu[d][k] = c < best_cpu[d][k] ? c : best_cpu[d][k];
            }
            double b1 = bench_read_bandwidth(mm_pool(m->base.mm), (size_t)256 << 20, 2);
            double f1 = bench_fma_peak(mm_pool(m->base.mm), 1);
            double c1 = bench_fma_core_peak_cpu(2);
            if (on_amx[d]) {
                double a2, a1 = bench_amx_peak(mm_pool(m->base.mm), 2, &a2);
                amx = a1 > amx ? a1 : amx;
                amx_core = a2 > amx_core ? a2 : amx_core;
            }
            bw = b1 > bw ? b1 : bw;
            fma = f1 > fma ? f1 : fma;
            core = c1 > core ? c1 : core;
        }
        have[d] = 1;
        kv_cache_free(&kv);
        model_free(&m->base);
    }
    printf("\nbounds (best samples): read bandwidth %.1f GB/s, FMA peak %.1f GFLOP/s (one "
           "core: %.1f GFLOP per CPU-second)\n",
           bw / 1e9, fma / 1e9, core / 1e9);
    if (amx > 0)
        printf("AMX BF16 peak %.1f GFLOP/s (one core: %.1f GFLOP per CPU-second): the compute "
               "bound of BF16 rows on the amx kernel (a third of it for BF16X3)\n",
               amx / 1e9, amx_core / 1e9);
    printf("%-6s %-16s %10s %10s %11s %8s  %-9s %s\n", "dtype", "step", "ms/step", "tokens/s",
           "bound t/s", "% bound", "kind", "matmul FLOP per CPU-second / core peak");
    for (int d = 0; d < N_DT; d++) {
        if (!have[d])
            continue;
        for (int k = 0; k < N_K; k++) {
            if (!bench_in_list(steps, K_ARG[k]))
                continue;
            int rows = k == K_PREFILL ? MAX_T : k == K_MIXED ? K_B[k] + MIXED_CHUNK : K_B[k];
            double flops = step_flops(&cfgs[d], rows, K_B[k]);
            double peak = on_amx[d] ? amx / on_amx[d] : fma;
            double peak_core = on_amx[d] ? amx_core / on_amx[d] : core;
            double t_mem = wbytes[d] / bw, t_fma = flops / peak;
            double bound = t_mem > t_fma ? t_mem : t_fma;
            printf("%-6s %-16s %10.2f %10.1f %11.1f %7.0f%%  %-9s %.0f%%\n", dt_name[d], K_NAME[k],
                   best[d][k] * 1e3, rows / best[d][k], rows / bound, 100.0 * bound / best[d][k],
                   t_mem > t_fma ? "bandwidth"
                   : on_amx[d]   ? "AMX"
                                 : "FMA",
                   100.0 * flops / best_cpu[d][k] / peak_core);
        }
    }
    /* Accuracy against the F32 weights, relative to the largest |logit| as the tests state it. */
    for (int d = 1; d < N_DT && have[0]; d++) {
        if (!have[d])
            continue;
        const float *a = probe_logits, *b = probe_logits + (size_t)d * 50257;
        double mx = 0, diff = 0;
        for (int i = 0; i < cfgs[0].vocab_size; i++) {
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
