/* mm_dtype_test.c - logits with the weights kept in F16, BF16, int8 (W8A8 and weight-only)
 * and BF16X3 (engine/kernels/matmul.h) against the F32 path and against the PyTorch float64
 * reference on the F32 weights; and the same logits bit for bit whatever the number of
 * compute threads.
 *
 *   mm_dtype_test CKPT_DIR PYTHON3 REF_ROWS_PY GPT2_REF_PY
 *
 * The 16-bit paths round every matrix weight once (relative error 2^-11 for F16, 2^-8 for
 * BF16) and accumulate in F32, so their logits differ from the F32 path by a rounding-sized
 * amount. The bounds below are stated in units of the logits' spread (max |logit| of the
 * F32 path over the prompt) and were set from measured values with headroom:
 * measured on tiny-f32, prompts of 1/16/100 tokens: F16 <= 6.5e-4 of the spread (0.0046 absolute),
 * BF16 <= 6.0e-3 (0.042 absolute); the F32 path stays within 5e-6 of the reference. The AMX
 * kernel (the default where the CPU has it) also rounds X to BF16 at every BF16 product:
 * BF16 <= 7.7e-3 of the spread (0.055 absolute) with it, 5.6e-3 with the AVX-512 tiles on
 * the same machine; the bound 1.5e-2 leaves a factor of 1.9 over the AMX measurement.
 * Int8 weight-only ("int8w": per-column scales, every matrix and the tied embedding quantized,
 * error up to half a step = max |w| / 254 per weight): <= 1.8e-2 of the spread (0.11
 * absolute), with either kernel; bound 5e-2. W8A8 ("int8": the same weights, and X quantized
 * per row and 256 values of K, up to max |x| / 254 per value): <= 2.8e-2 of the spread (0.17
 * absolute; the same bits on every kernel); bound 5e-2, a factor of 1.8 over it.
 * BF16X3 (each weight as BF16 hi + lo, 16 significant bits, and on AMX X split the same way,
 * three BF16 products per product): <= 1.8e-5 of the spread from the reference on AMX (1.3e-4
 * absolute; 1.9e-5 from the F32 path); bound 5e-5, a factor of 2.7 over it and 300 below
 * BF16's. Where the kernel is not AMX the model loads as F32 (engine/model/model.c), so its
 * logits must be the F32 path's bits.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "tests/check.h"

#define F16_REL_TOL 2e-3
#define BF16_REL_TOL 1.5e-2
#define I8_REL_TOL 5e-2
#define X3_REL_TOL 5e-5
#define W8A8_REL_TOL 5e-2
#define F32_REF_TOL 1e-3 /* as tests/engine/test_model.c */

#define BS 16
#define N_BLOCKS 64
#define MAX_T 128

static const int prompt_lens[] = {1, 16, 100};
enum { N_PROMPT = 3, N_DT = 6 };
static const int dtypes[N_DT] = {ENG_DTYPE_F32, ENG_DTYPE_F16,    ENG_DTYPE_BF16,
                                 ENG_DTYPE_I8,  ENG_DTYPE_BF16X3, ENG_DTYPE_W8A8};
static const char *const dt_names[N_DT] = {"f32", "f16", "bf16", "int8w", "bf16x3", "int8"};
static const double rel_tol[N_DT] = {0,          F16_REL_TOL, BF16_REL_TOL,
                                     I8_REL_TOL, X3_REL_TOL,  W8A8_REL_TOL};

/* Prefills tokens[0..n) in one step into a fresh cache; writes the last row's logits. */
/* The logits of the last of n tokens: with split = 0 one prefill step of all n rows; with
 * split = 1 a prefill step of the first n - 1 rows and then a decode step of the last
 * (the decode attention path). */
static int run_prompt(model_t *m, const int32_t *tokens, int n, float *logits, int split)
{
    kv_cache_t kv;
    int rc = model_kv_init(m, &kv, BS, N_BLOCKS, ENG_DTYPE_F32);
    if (rc)
        return rc;
    int32_t pos[MAX_T], slot[MAX_T], table[MAX_T / BS + 1], start[2] = {0, n}, ctx = n;
    int32_t last = n - 1;
    for (int i = 0; i < MAX_T / BS + 1; i++)
        table[i] = (int32_t)(N_BLOCKS - 1 - i); /* not contiguous from 0 */
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        slot[i] = table[i / BS] * BS + i % BS;
    }
    const int32_t *tables[1] = {table};
    model_batch_t b = {.T = n,
                       .tokens = tokens,
                       .pos = pos,
                       .slot = slot,
                       .B = 1,
                       .seq_start = start,
                       .ctx_len = &ctx,
                       .block_table = tables,
                       .n_logits = 1,
                       .logit_rows = &last,
                       .logits = logits};
    int32_t first_start[2] = {0, n - 1}, first_ctx = n - 1, one_start[2] = {0, 1}, row = 0;
    if (split && n > 1) {
        model_batch_t first = b;
        first.T = n - 1;
        first.seq_start = first_start;
        first.ctx_len = &first_ctx;
        first.n_logits = 0;
        first.logits = NULL;
        rc = model_forward(m, &kv, &first);
        b.T = 1;
        b.tokens = tokens + n - 1;
        b.pos = pos + n - 1;
        b.slot = slot + n - 1;
        b.seq_start = one_start;
        b.logit_rows = &row;
    }
    rc = rc ? rc : model_forward(m, &kv, &b);
    kv_cache_free(&kv);
    return rc;
}

static int prefill(model_t *m, const int32_t *tokens, int n, float *logits)
{
    return run_prompt(m, tokens, n, logits, 0);
}

static double max_abs(const float *a, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fabs(a[i]) > d ? fabs(a[i]) : d;
    return d;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        d = x > d || isnan(x) ? x : d;
    }
    return d;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s CKPT_DIR PYTHON3 REF_ROWS_PY GPT2_REF_PY\n", argv[0]);
        return 2;
    }
    char dir[4096], err[512];
    snprintf(dir, sizeof(dir), "%s/tiny-f32", argv[1]);
    char tmp[] = "/tmp/mm_dtype_test.XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    char jobs[4200], out[4200];
    snprintf(jobs, sizeof(jobs), "%s/jobs.tsv", tmp);
    snprintf(out, sizeof(out), "%s/ref.bin", tmp);

    int V = 0;
    float *logits[N_DT][N_PROMPT] = {{0}};
    int as_f32[N_DT] = {0}; /* the weights were kept in F32 */
    int32_t tokens[N_PROMPT][MAX_T];
    for (int d = 0; d < N_DT; d++) {
        model_t *m = NULL;
        int rc = model_load(&m, dir, dtypes[d], NULL, err, sizeof(err));
        CHECK_INT_EQ(rc, 0);
        if (rc) {
            fprintf(stderr, "model_load %s as %s: %s\n", dir, dt_names[d], err);
            continue;
        }
        V = model_describe(m)->vocab_size;
        if (dtypes[d] == ENG_DTYPE_BF16X3)
            CHECK_INT_EQ(model_dtype(m), strcmp(model_kernel_name(m), "amx") == 0 ? ENG_DTYPE_BF16X3
                                                                                  : ENG_DTYPE_F32);
        as_f32[d] = model_dtype(m) == ENG_DTYPE_F32;
        CHECK_INT_EQ(model_reserve(m, MAX_T, 1, MAX_T), 0);
        for (int p = 0; p < N_PROMPT; p++) {
            for (int i = 0; i < prompt_lens[p]; i++)
                tokens[p][i] =
                    (int32_t)((1009u * (unsigned)(i + 1) + 7919u * (unsigned)p) % (unsigned)V);
            logits[d][p] = malloc((size_t)V * sizeof(float));
            CHECK_INT_EQ(prefill(m, tokens[p], prompt_lens[p], logits[d][p]), 0);
        }
        if (d == 0) {
            /* Each column, attention item and row is computed by one thread in a fixed
             * order: the logits are the same bits whatever the thread count, for a prefill
             * and for a decode step after it. */
            float *again = malloc((size_t)V * sizeof(float));
            float *dec = malloc((size_t)V * sizeof(float));
            CHECK(again && dec);
            CHECK_INT_EQ(run_prompt(m, tokens[2], prompt_lens[2], dec, 1), 0);
            static const int threads[] = {1, 3};
            for (int i = 0; i < 2 && again && dec; i++) {
                CHECK_INT_EQ(model_set_threads(m, threads[i]), 0);
                CHECK_INT_EQ(prefill(m, tokens[2], prompt_lens[2], again), 0);
                CHECK(memcmp(again, logits[0][2], (size_t)V * sizeof(float)) == 0);
                CHECK_INT_EQ(run_prompt(m, tokens[2], prompt_lens[2], again, 1), 0);
                CHECK(memcmp(again, dec, (size_t)V * sizeof(float)) == 0);
            }
            CHECK_INT_EQ(model_set_threads(m, -1), -EINVAL);
            free(again);
            free(dec);
        }
        model_free(m);
    }
    FILE *jf = fopen(jobs, "w");
    CHECK(jf != NULL);
    for (int p = 0; jf && p < N_PROMPT; p++) {
        fprintf(jf, "%s\t%d\t", dir, prompt_lens[p]);
        for (int i = 0; i < prompt_lens[p]; i++)
            fprintf(jf, "%s%d", i ? "," : "", (int)tokens[p][i]);
        fprintf(jf, "\n");
    }
    if (jf)
        fclose(jf);
    pid_t pid = fork();
    if (pid == 0) {
        execl(argv[2], argv[2], argv[3], argv[4], jobs, out, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0);
    FILE *rf = fopen(out, "rb");
    CHECK(rf != NULL);
    float *ref = malloc((size_t)(V ? V : 1) * sizeof(float));
    double worst[N_DT][2] = {{0}}; /* vs reference, vs the F32 path; relative to spread */
    for (int p = 0; rf && V && p < N_PROMPT; p++) {
        int32_t best;
        if (fread(ref, sizeof(float), (size_t)V, rf) != (size_t)V ||
            fread(&best, sizeof(best), 1, rf) != 1) {
            CHECK(!"reference output too short");
            break;
        }
        for (int d = 0; d < N_DT; d++) {
            if (!logits[d][p] || !logits[0][p])
                continue;
            double spread = max_abs(logits[0][p], (size_t)V);
            double dr = max_abs_diff(logits[d][p], ref, (size_t)V);
            double df = max_abs_diff(logits[d][p], logits[0][p], (size_t)V);
            printf("%-6s prompt %3d: max |logit| %.3g; max abs diff vs reference %.3g, vs f32 "
                   "path %.3g (%.2e of the spread)\n",
                   dt_names[d], prompt_lens[p], spread, dr, df, df / spread);
            if (d == 0)
                CHECK_NEAR(dr, 0, F32_REF_TOL);
            else
                CHECK_NEAR(dr / spread, 0, rel_tol[d]);
            if (d > 0 && as_f32[d])
                CHECK(memcmp(logits[d][p], logits[0][p], (size_t)V * sizeof(float)) == 0);
            worst[d][0] = dr / spread > worst[d][0] ? dr / spread : worst[d][0];
            worst[d][1] = df / spread > worst[d][1] ? df / spread : worst[d][1];
        }
    }
    for (int d = 1; d < N_DT; d++)
        printf("%-6s worst over prompts: vs reference %.2e, vs f32 path %.2e of the spread "
               "(tol %g)\n",
               dt_names[d], worst[d][0], worst[d][1], rel_tol[d]);
    if (rf)
        fclose(rf);
    free(ref);
    for (int d = 0; d < N_DT; d++)
        for (int p = 0; p < N_PROMPT; p++)
            free(logits[d][p]);
    unlink(jobs);
    unlink(out);
    rmdir(tmp);
    return check_failures() != 0;
}
