/* det_test.c - a request's logits are bit-identical under any load: its full logits rows
 * (every vocabulary entry of every prompt row and every sampled row) compared bit for bit
 * between running alone with the whole prompt in one chunk and
 *   - prefill chunked at 1, 3, 16 and 17 tokens (alone);
 *   - batched with other requests of other lengths, some arriving while it decodes (prompt
 *     chunks and decodes of others in its steps), another block size, 2 threads;
 *   - its prefix from the prefix cache: after a request sharing its first 32 tokens (the rest
 *     continues a cached prefix), and again after itself (every full block cached), 3 threads;
 * for every kernel path the CPU runs (SKIP printed for the others), every weight dtype (BF16X3
 * only where it is its own path: AMX) and both KV dtypes. Rows are taken from the scheduler
 * before sampling (sched_t.logits_cb); the engine runs on the calling thread (eng_step).
 * Usage: det_test MODEL_DIR [--slow]   (--slow: longer prompts and more variants)
 */
#include "engine/kernels/matmul.h"
#include "tests/engine/sched_util.h"

#define TARGET 100 /* request id of the request under test */
#define MAX_POS 256

static const char *model_dir;
static int slow;
static int V;

/* Every logits row of the target, by the position of its token. */
typedef struct capture {
    float *rows[MAX_POS]; /* (V) each, or NULL */
    int n_rows;
} capture_t;

static void capture_free(capture_t *c)
{
    for (int i = 0; i < MAX_POS; i++)
        free(c->rows[i]);
    memset(c, 0, sizeof(*c));
}

static void on_logits(void *arg, const sched_seq_t *q, int pos, const float *row)
{
    capture_t *c = arg;
    if (q->req->r->id != TARGET)
        return;
    ASSERT_TRUE(pos >= 0 && pos < MAX_POS);
    /* A row computed twice (recomputation) must agree with itself too. */
    if (!c->rows[pos]) {
        c->rows[pos] = malloc((size_t)V * sizeof(float));
        ASSERT_TRUE(c->rows[pos] != NULL);
        memcpy(c->rows[pos], row, (size_t)V * sizeof(float));
        c->n_rows++;
    } else if (memcmp(c->rows[pos], row, (size_t)V * sizeof(float)) != 0) {
        fprintf(stderr, "row %d computed twice with different bits\n", pos);
        exit(1);
    }
}

typedef struct config {
    const char *kernel;
    int wdtype, kvdtype;
} config_t;

static eng_t *engine_for(const config_t *c, int threads, int budget, int seqs, int block_size,
                         capture_t *cap)
{
    eng_params_t p = params_for(model_dir);
    p.kernel = c->kernel;
    p.weight_dtype = c->wdtype;
    p.kv_cache_dtype = c->kvdtype;
    p.threads = threads;
    p.max_num_batched_tokens = budget;
    p.max_num_seqs = seqs;
    p.block_size = block_size;
    p.num_kv_blocks = 1024 / block_size;
    eng_t *e = make_engine(&p, NULL);
    eng_info_t info;
    eng_get_info(e, &info);
    V = info.vocab_size;
    eng_sched(e)->logits_cb = on_logits;
    eng_sched(e)->logits_arg = cap;
    return e;
}

static int32_t target[MAX_POS], others[6][MAX_POS];
static int target_len, other_len[6];
#define GEN 8

/* With prompt_lps, logits for every prompt row too (and no prefix-cache lookup). */
static eng_request_t *target_req(int prompt_lps)
{
    eng_request_t *r = make_req(TARGET, target, target_len, GEN, 0.0f, 0);
    r->sp.prompt_logprobs = prompt_lps ? 0 : -1;
    r->sp.logprobs = 5;
    return r;
}

static eng_request_t *other_req(int i)
{
    /* Sampled with a seed, so the others' tokens vary but are reproducible. */
    return make_req((uint64_t)i, others[i], other_len[i], 5 + 3 * i, 0.8f, 7 + (uint64_t)i);
}

static void run(eng_t *e, int max_steps)
{
    static choice_out_t outs[TARGET + 1];
    memset(outs, 0, sizeof(outs));
    run_until_idle(e, outs, 1, max_steps);
    ASSERT_EQ(outs[TARGET].n_ids, GEN);
}

/* Compares every row of got (n_rows of them: every prompt row and the sampled ones, or only
 * the sampled ones) with ref's, bit for bit. */
static void expect_rows(const capture_t *ref, const capture_t *got, int n_rows, const char *cfg,
                        const char *what)
{
    if (got->n_rows != n_rows) {
        fprintf(stderr, "%s, %s: %d logits rows, expected %d\n", cfg, what, got->n_rows, n_rows);
        exit(1);
    }
    for (int pos = 0; pos < MAX_POS; pos++) {
        if (!got->rows[pos])
            continue;
        ASSERT_TRUE(ref->rows[pos] != NULL);
        if (memcmp(ref->rows[pos], got->rows[pos], (size_t)V * sizeof(float)) == 0)
            continue;
        int diff = 0, first = -1;
        float worst = 0;
        for (int i = 0; i < V; i++)
            if (memcmp(&ref->rows[pos][i], &got->rows[pos][i], sizeof(float)) != 0) {
                diff++;
                first = first < 0 ? i : first;
                float d = fabsf(ref->rows[pos][i] - got->rows[pos][i]);
                worst = d > worst ? d : worst;
            }
        fprintf(stderr,
                "%s, %s: position %d: %d of %d logits differ from alone (first at %d: %.9g vs "
                "%.9g; largest difference %g)\n",
                cfg, what, pos, diff, V, first, ref->rows[pos][first], got->rows[pos][first],
                worst);
        exit(1);
    }
}

static void check_config(const config_t *c, const char *name)
{
    capture_t ref = {0}, got = {0};
    char what[64];

    /* Alone, the whole prompt in one step, one thread. */
    eng_t *e = engine_for(c, 1, 256, 8, 16, &ref);
    submit_ok(e, target_req(1));
    run(e, 100);
    eng_free(e);
    ASSERT_EQ(ref.n_rows, target_len + GEN - 1);

    /* Alone, prefill chunked. */
    const int chunks[] = {1, 3, 16, 17};
    for (int k = 0; k < 4; k++) {
        e = engine_for(c, 1 + k % 2, chunks[k], 1, 16, &got);
        submit_ok(e, target_req(1));
        run(e, 400);
        eng_free(e);
        snprintf(what, sizeof(what), "prefill chunks of %d", chunks[k]);
        expect_rows(&ref, &got, ref.n_rows, name, what);
        capture_free(&got);
    }

    /* Among others of other lengths: two ahead of it, more arriving while it decodes; a
     * budget that cuts prompts across steps, block size 8, two threads. */
    e = engine_for(c, 2, 24, 8, 8, &got);
    submit_ok(e, other_req(0));
    submit_ok(e, other_req(1));
    submit_ok(e, target_req(1));
    static choice_out_t outs[TARGET + 1];
    memset(outs, 0, sizeof(outs));
    for (int step = 0; step < 400; step++) {
        if (step == 2)
            submit_ok(e, other_req(2));
        if (step == 4) {
            submit_ok(e, other_req(3));
            submit_ok(e, other_req(4));
        }
        int rc = eng_step(e);
        ASSERT_GE(rc, 0);
        drain_events(e, outs, 1);
        if (rc == 0 && step > 4)
            break;
    }
    ASSERT_EQ(outs[TARGET].n_ids, GEN);
    eng_free(e);
    expect_rows(&ref, &got, ref.n_rows, name, "batched with others");
    capture_free(&got);

    /* Prefix cache: a request sharing its first 32 tokens runs first, so its prefill starts
     * from two cached blocks; then itself again, every full block cached. Three threads. */
    e = engine_for(c, 3, 40, 8, 16, &got);
    submit_ok(e, other_req(5));
    run_until_idle(e, outs, 1, 400);
    submit_ok(e, target_req(0));
    run(e, 400);
    expect_rows(&ref, &got, GEN, name, "continuing a cached prefix");
    capture_free(&got);
    submit_ok(e, target_req(0));
    run(e, 400);
    eng_stats_t st;
    eng_get_stats(e, &st);
    ASSERT_GT(st.prefix_cache_hits, 32);
    eng_free(e);
    expect_rows(&ref, &got, GEN, name, "prefix-cached");
    capture_free(&got);
    capture_free(&ref);
}

static const char *dtype_name(int d)
{
    switch (d) {
    case ENG_DTYPE_F32:
        return "f32";
    case ENG_DTYPE_F16:
        return "f16";
    case ENG_DTYPE_BF16:
        return "bf16";
    case ENG_DTYPE_I8:
        return "int8w";
    case ENG_DTYPE_W8A8:
        return "int8";
    case ENG_DTYPE_BF16X3:
        return "bf16x3";
    }
    return "?";
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [--slow]\n", argv[0]);
        return 2;
    }
    model_dir = argv[1];
    slow = argc > 2 && strcmp(argv[2], "--slow") == 0;
    uint64_t s = 31;
    target_len = slow ? 150 : 36;
    for (int i = 0; i < target_len; i++)
        target[i] = (int32_t)(test_rand(&s) % 500);
    for (int i = 0; i < 6; i++) {
        other_len[i] = 5 + 11 * i + (slow ? 40 : 0);
        for (int j = 0; j < other_len[i]; j++)
            others[i][j] = (int32_t)(test_rand(&s) % 500);
    }
    /* other 5 shares the target's first 32 tokens (two blocks of 16), then differs. */
    memcpy(others[5], target, 32 * sizeof(int32_t));
    other_len[5] = 40;

    const struct {
        const char *name;
        int id;
    } kernels[] = {{"generic", MM_KERNEL_GENERIC},
                   {"avx2", MM_KERNEL_AVX2},
                   {"avx512", MM_KERNEL_AVX512},
                   {"amx", MM_KERNEL_AMX}};
    const int wdtypes[] = {ENG_DTYPE_F32, ENG_DTYPE_F16,    ENG_DTYPE_BF16,
                           ENG_DTYPE_I8,  ENG_DTYPE_BF16X3, ENG_DTYPE_W8A8};
    const int kvdtypes[] = {ENG_DTYPE_F32, ENG_DTYPE_F16};
    int checked = 0;
    for (int k = 0; k < 4; k++) {
        if (!mm_kernel_supported(kernels[k].id)) {
            printf("SKIP kernel %s: this CPU or OS cannot run it\n", kernels[k].name);
            continue;
        }
        for (int w = 0; w < 6; w++) {
            if (wdtypes[w] == ENG_DTYPE_BF16X3 && kernels[k].id != MM_KERNEL_AMX) {
                printf("SKIP kernel %s, weights bf16x3: its own path only on AMX\n",
                       kernels[k].name);
                continue;
            }
            for (int v = 0; v < 2; v++) {
                config_t c = {kernels[k].name, wdtypes[w], kvdtypes[v]};
                char name[96];
                snprintf(name, sizeof(name), "kernel %s, weights %s, kv %s", kernels[k].name,
                         dtype_name(wdtypes[w]), dtype_name(kvdtypes[v]));
                check_config(&c, name);
                printf("ok: %s\n", name);
                checked++;
            }
        }
    }
    ASSERT_GT(checked, 0);
    printf("det_test: %d configurations bit-identical\n", checked);
    return 0;
}
