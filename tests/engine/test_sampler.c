/* test_sampler.c - every sampling rule of engine/sched/sampler.c, with seeded draws.
 *
 * Distribution checks draw many tokens with a fixed seed and bound Pearson's chi-square
 * statistic by the 0.999 quantile of its distribution, so a wrong rule fails and the
 * result is the same on every run.
 */
#include <math.h>
#include <stdlib.h>

#include "engine/sched/sampler.h"
#include "tests/check.h"

/* Neutral settings, as eng_sampling_default documents them. */
static eng_sampling_t neutral(void)
{
    eng_sampling_t sp;
    memset(&sp, 0, sizeof(sp));
    sp.temperature = 1;
    sp.top_p = 1;
    sp.repetition_penalty = 1;
    sp.logprobs = -1;
    sp.prompt_logprobs = -1;
    return sp;
}

static int32_t draw(const eng_sampling_t *sp, const float *logits, int V, smp_rng_t *r,
                    void *scratch, float *work)
{
    memcpy(work, logits, (size_t)V * sizeof(float));
    return smp_sample(sp, work, V, NULL, 0, NULL, 0, r, scratch);
}

/* Softmax of logits / t over the tokens with keep[i], as the expected distribution. */
static void expected_probs(const float *logits, int V, float t, const int *keep, double *p)
{
    double sum = 0;
    for (int i = 0; i < V; i++) {
        p[i] = keep[i] ? exp(logits[i] / t) : 0;
        sum += p[i];
    }
    for (int i = 0; i < V; i++)
        p[i] /= sum;
}

/* Draws n tokens and returns Pearson's chi-square against p; a draw with p == 0 counts
 * as a failure on its own. */
static double chi_square(const eng_sampling_t *sp, const float *logits, int V, const double *p,
                         int n, uint64_t seed, int *impossible)
{
    void *scratch = malloc(smp_scratch_bytes(V));
    float *work = malloc((size_t)V * sizeof(float));
    int *count = calloc((size_t)V, sizeof(int));
    smp_rng_t r;
    smp_rng_seed(&r, seed);
    for (int i = 0; i < n; i++)
        count[draw(sp, logits, V, &r, scratch, work)]++;
    double chi = 0;
    *impossible = 0;
    for (int i = 0; i < V; i++) {
        if (p[i] == 0) {
            *impossible += count[i];
            continue;
        }
        double e = p[i] * n;
        chi += (count[i] - e) * (count[i] - e) / e;
    }
    free(scratch);
    free(work);
    free(count);
    return chi;
}

static const float small_logits[8] = {1.0f, 2.5f, 0.3f, -1.0f, 2.0f, 0.0f, 1.7f, -0.5f};

static void test_rng(void)
{
    smp_rng_t a, b, c;
    smp_rng_seed(&a, 42);
    smp_rng_seed(&b, 42);
    smp_rng_seed(&c, 43);
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 100; i++) {
        uint64_t x = smp_rng_next(&a), y = smp_rng_next(&b), z = smp_rng_next(&c);
        same_ab &= x == y;
        same_ac &= x == z;
    }
    CHECK(same_ab);
    CHECK(!same_ac);
    /* Uniform doubles stay in [0, 1) and average near 1/2. */
    double sum = 0, lo = 1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        double u = smp_rng_uniform(&a);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    CHECK(lo >= 0);
    CHECK(hi < 1);
    CHECK_NEAR(sum / 100000, 0.5, 0.005);
}

static void test_greedy(void)
{
    float logits[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 0.0f};
    void *scratch = malloc(smp_scratch_bytes(6));
    float work[6];
    eng_sampling_t sp = neutral();
    sp.temperature = 0;
    smp_rng_t r, untouched;
    smp_rng_seed(&r, 1);
    untouched = r;
    /* Ties go to the lowest id, and greedy does not consume randomness. */
    CHECK_INT_EQ(draw(&sp, logits, 6, &r, scratch, work), 1);
    CHECK(memcmp(&r, &untouched, sizeof(r)) == 0);
    /* top_k = 1 at any temperature is greedy too. */
    sp.temperature = 1.5f;
    sp.top_k = 1;
    int all_greedy = 1;
    for (int i = 0; i < 200; i++)
        all_greedy &= draw(&sp, logits, 6, &r, scratch, work) == 1;
    CHECK(all_greedy);
    free(scratch);
}

/* The one-pass rule greedy decoding had before its vectorized form: the first index of the
 * largest value, a NaN never displacing the best (a NaN at 0 then wins). */
static int32_t argmax_ref(const float *x, int V)
{
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static void test_greedy_argmax(void)
{
    /* Few distinct values, so ties (and -0 against +0) are common; NaNs and infinities. */
    const float vals[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.5f, 2.5f, INFINITY, -INFINITY, NAN, 7.0f};
    enum { MAXV = 50257 };
    float *x = malloc(MAXV * sizeof(float)), *work = malloc(MAXV * sizeof(float));
    void *scratch = malloc(smp_scratch_bytes(MAXV));
    eng_sampling_t sp = neutral();
    sp.temperature = 0;
    smp_rng_t r;
    smp_rng_seed(&r, 3);
    uint64_t st = 12345;
    int bad = 0, cases = 0;
    for (int V = 1; V <= 70; V++) {
        for (int rep = 0; rep < 40; rep++) {
            /* Ties among the first six values; in some cases NaNs (a fifth of the values),
             * infinities, and one larger value at a random place, unique so that losing it
             * shows. */
            for (int i = 0; i < V; i++) {
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                int k = (int)((st >> 33) % 6);
                if (rep % 2 && (st >> 20) % 5 == 0)
                    k = 8;
                else if (rep % 8 == 3 && (st >> 24) % 7 == 0)
                    k = 6 + (int)((st >> 40) % 2);
                x[i] = vals[k];
            }
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            if (rep % 4 < 2)
                x[(st >> 33) % (uint64_t)V] = vals[9];
            int got = draw(&sp, x, V, &r, scratch, work), want = argmax_ref(x, V);
            if (got != want && bad++ < 5)
                fprintf(stderr, "argmax: V %d rep %d: got %d, want %d\n", V, rep, got, want);
            cases++;
        }
    }
    /* A full GPT-2 vocabulary: the maximum in the vector body, in the tail, tied, at 0. */
    for (int i = 0; i < MAXV; i++)
        x[i] = (float)((i * 7919) % 1000) * 0.001f - 0.5f;
    const int where[] = {0, 1, 15, 16, 17, 31337, MAXV - 17, MAXV - 2, MAXV - 1};
    for (int w = 0; w < (int)(sizeof(where) / sizeof(where[0])); w++) {
        float keep = x[where[w]];
        x[where[w]] = 3.0f;
        if (w % 2)
            x[MAXV - 1 - w] = 3.0f; /* a tie later on: the first one wins */
        if (w == 3)
            x[5] = NAN;
        int got = draw(&sp, x, MAXV, &r, scratch, work), want = argmax_ref(x, MAXV);
        if (got != want && bad++ < 10)
            fprintf(stderr, "argmax: V %d, max at %d: got %d, want %d\n", MAXV, where[w], got,
                    want);
        cases++;
        x[where[w]] = keep;
    }
    CHECK_INT_EQ(bad, 0);
    CHECK(cases > 2000);
    free(x);
    free(work);
    free(scratch);
}

static void test_temperature(void)
{
    int keep[8] = {1, 1, 1, 1, 1, 1, 1, 1}, bad;
    double p[8];
    /* 0.999 quantile of chi-square with 7 degrees of freedom. */
    const double limit = 24.32;
    float temps[3] = {1.0f, 0.5f, 2.0f};
    for (int t = 0; t < 3; t++) {
        eng_sampling_t sp = neutral();
        sp.temperature = temps[t];
        expected_probs(small_logits, 8, temps[t], keep, p);
        double chi = chi_square(&sp, small_logits, 8, p, 40000, 7 + t, &bad);
        printf("temperature %.1f: chi-square %.2f (limit %.2f)\n", temps[t], chi, limit);
        CHECK_LE(chi, limit);
        CHECK_INT_EQ(bad, 0);
    }
    /* A wrong temperature must be caught: draws at T=1 against the T=0.5 distribution. */
    eng_sampling_t sp = neutral();
    expected_probs(small_logits, 8, 0.5f, keep, p);
    double chi = chi_square(&sp, small_logits, 8, p, 40000, 7, &bad);
    CHECK(chi > limit);
}

static void test_top_k(void)
{
    /* Top 3 of small_logits: ids 1 (2.5), 4 (2.0), 6 (1.7). */
    int keep[8] = {0, 1, 0, 0, 1, 0, 1, 0}, bad;
    double p[8];
    eng_sampling_t sp = neutral();
    sp.top_k = 3;
    sp.temperature = 0.8f;
    expected_probs(small_logits, 8, 0.8f, keep, p);
    double chi = chi_square(&sp, small_logits, 8, p, 30000, 11, &bad);
    printf("top_k 3: chi-square %.2f (limit 13.82)\n", chi);
    CHECK_LE(chi, 13.82); /* 2 degrees of freedom, 0.999 */
    CHECK_INT_EQ(bad, 0);
}

static void test_top_p(void)
{
    /* Probabilities 0.5, 0.3, 0.15, 0.05 (as logits, in shuffled order). */
    float logits[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    int bad;
    double p[4];
    eng_sampling_t sp = neutral();

    /* 0.75: {0.5, 0.3} is the smallest set reaching it. */
    sp.top_p = 0.75f;
    int keep2[4] = {0, 1, 0, 1};
    expected_probs(logits, 4, 1, keep2, p);
    double chi = chi_square(&sp, logits, 4, p, 20000, 5, &bad);
    CHECK_LE(chi, 10.83); /* 1 degree of freedom */
    CHECK_INT_EQ(bad, 0);

    /* 0.85: needs the 0.15 token as well, never the 0.05 one. */
    sp.top_p = 0.85f;
    int keep3[4] = {1, 1, 0, 1};
    expected_probs(logits, 4, 1, keep3, p);
    chi = chi_square(&sp, logits, 4, p, 20000, 6, &bad);
    CHECK_LE(chi, 13.82);
    CHECK_INT_EQ(bad, 0);

    /* A tiny top_p keeps only the most likely token. */
    sp.top_p = 0.01f;
    int keep1[4] = {0, 1, 0, 0};
    expected_probs(logits, 4, 1, keep1, p);
    chi_square(&sp, logits, 4, p, 2000, 7, &bad);
    CHECK_INT_EQ(bad, 0);
}

static void test_min_p(void)
{
    /* p relative to the best: 1, 0.6, 0.3, 0.1 -> min_p 0.25 keeps the first three. */
    float logits[4] = {0, logf(0.6f), logf(0.3f), logf(0.1f)};
    int keep[4] = {1, 1, 1, 0}, bad;
    double p[4];
    eng_sampling_t sp = neutral();
    sp.min_p = 0.25f;
    expected_probs(logits, 4, 1, keep, p);
    double chi = chi_square(&sp, logits, 4, p, 20000, 9, &bad);
    CHECK_LE(chi, 13.82);
    CHECK_INT_EQ(bad, 0);
    /* An out-of-range min_p keeps nothing; the draw falls back to the best token. */
    sp.min_p = 2;
    int keep1[4] = {1, 0, 0, 0};
    expected_probs(logits, 4, 1, keep1, p);
    chi_square(&sp, logits, 4, p, 100, 9, &bad);
    CHECK_INT_EQ(bad, 0);
}

/* Compares by logit, highest first, then lower id: the reference order for big V. */
static const float *sort_base;
static int by_logit_desc(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (sort_base[x] != sort_base[y])
        return sort_base[x] > sort_base[y] ? -1 : 1;
    return x - y;
}

/* On a GPT-2-sized vocabulary, top-k and top-p draw only from the sets a full sort gives,
 * and every member of a small set shows up. */
static void test_big_vocab(void)
{
    enum { V = 50257 };
    float *logits = malloc(V * sizeof(float)), *work = malloc(V * sizeof(float));
    int32_t *order = malloc(V * sizeof(int32_t));
    int *rank = malloc(V * sizeof(int));
    void *scratch = malloc(smp_scratch_bytes(V));
    smp_rng_t r;
    smp_rng_seed(&r, 2024);
    for (int i = 0; i < V; i++) /* a long tail and a few strong tokens */
        logits[i] = (float)(smp_rng_uniform(&r) * 4.0 - 2.0) + (i % 4099 == 0 ? 9.0f : 0.0f);
    for (int i = 0; i < V; i++)
        order[i] = i;
    sort_base = logits;
    qsort(order, V, sizeof(int32_t), by_logit_desc);
    for (int i = 0; i < V; i++)
        rank[order[i]] = i;

    eng_sampling_t sp = neutral();
    sp.top_k = 40;
    int worst = 0;
    for (int i = 0; i < 1000; i++) {
        int32_t id = draw(&sp, logits, V, &r, scratch, work);
        worst = rank[id] > worst ? rank[id] : worst;
    }
    CHECK_LE(worst, 39);

    /* The top-p set by the definition: smallest best-first prefix with mass >= 0.6. */
    double z = 0, acc = 0;
    for (int i = 0; i < V; i++)
        z += exp(logits[i] - logits[order[0]]);
    int set = 0;
    while (acc < 0.6 * z)
        acc += exp(logits[order[set++]] - logits[order[0]]);
    sp = neutral();
    sp.top_p = 0.6f;
    int *seen = calloc((size_t)set, sizeof(int));
    worst = 0;
    for (int i = 0; i < 2000; i++) {
        int32_t id = draw(&sp, logits, V, &r, scratch, work);
        worst = rank[id] > worst ? rank[id] : worst;
        if (rank[id] < set)
            seen[rank[id]] = 1;
    }
    int all_seen = 1;
    for (int i = 0; i < set; i++)
        all_seen &= seen[i];
    printf("top_p 0.6 on V=%d: set of %d tokens, worst drawn rank %d\n", V, set, worst);
    CHECK_LE(worst, set - 1);
    CHECK(all_seen);
    free(seen);
    free(logits);
    free(work);
    free(order);
    free(rank);
    free(scratch);
}

static void test_logit_bias(void)
{
    int32_t ids[2] = {5, 99};
    float vals[2] = {100, 100};
    void *scratch = malloc(smp_scratch_bytes(8));
    float work[8];
    eng_sampling_t sp = neutral();
    sp.n_logit_bias = 2; /* id 99 is out of range and ignored */
    sp.logit_bias_ids = ids;
    sp.logit_bias_values = vals;
    smp_rng_t r;
    smp_rng_seed(&r, 3);
    int forced = 1;
    for (int i = 0; i < 500; i++)
        forced &= draw(&sp, small_logits, 8, &r, scratch, work) == 5;
    CHECK(forced);
    /* A large negative bias bans the greedy choice. */
    vals[0] = -100;
    ids[0] = 1;
    sp.temperature = 0;
    CHECK_INT_EQ(draw(&sp, small_logits, 8, &r, scratch, work), 4);
    free(scratch);
}

static void test_penalties(void)
{
    float logits[6] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f};
    int32_t prompt[3] = {0, 1, 0}; /* 0 repeated: penalised once */
    int32_t out[4] = {2, 2, 4, 2};
    void *scratch = malloc(smp_scratch_bytes(6));
    smp_rng_t r;
    smp_rng_seed(&r, 4);
    eng_sampling_t sp = neutral();
    sp.temperature = 0;
    sp.repetition_penalty = 2;
    sp.presence_penalty = 0.25f;
    sp.frequency_penalty = 0.5f;
    float w[6];
    memcpy(w, logits, sizeof(w));
    int32_t id = smp_sample(&sp, w, 6, prompt, 3, out, 4, &r, scratch);
    CHECK_NEAR(w[0], 1.0, 1e-6);                   /* 2 / 2 */
    CHECK_NEAR(w[1], -2.0, 1e-6);                  /* -1 * 2 */
    CHECK_NEAR(w[2], 0.25 - 3 * 0.5 - 0.25, 1e-6); /* 0.5 / 2, then 3 outputs */
    CHECK_NEAR(w[3], 3.0, 1e-6);                   /* untouched */
    CHECK_NEAR(w[4], -4.0 - 0.5 - 0.25, 1e-6);     /* -2 * 2, then 1 output */
    CHECK_NEAR(w[5], 1.0, 1e-6);
    CHECK_INT_EQ(id, 3);

    /* Without repetition penalty, prompt tokens are left alone. */
    sp.repetition_penalty = 1;
    memcpy(w, logits, sizeof(w));
    smp_sample(&sp, w, 6, prompt, 3, out, 4, &r, scratch);
    CHECK_NEAR(w[0], 2.0, 1e-6);
    CHECK_NEAR(w[2], 0.5 - 1.5 - 0.25, 1e-6);
    /* Penalties change the greedy pick: token 3 said three times loses to token 0. */
    int32_t out3[3] = {3, 3, 3};
    memcpy(w, logits, sizeof(w));
    CHECK_INT_EQ(smp_sample(&sp, w, 6, NULL, 0, out3, 3, &r, scratch), 0);
    free(scratch);
}

static void test_seeded_sequence(void)
{
    /* Same seed, same settings: the same tokens, whatever was drawn elsewhere in between. */
    void *scratch = malloc(smp_scratch_bytes(8));
    float work[8];
    eng_sampling_t sp = neutral();
    sp.top_p = 0.9f;
    sp.top_k = 6;
    smp_rng_t a, b, other;
    smp_rng_seed(&a, 77);
    smp_rng_seed(&b, 77);
    smp_rng_seed(&other, 1);
    int same = 1, differs_from_other = 0;
    for (int i = 0; i < 64; i++) {
        int32_t x = draw(&sp, small_logits, 8, &a, scratch, work);
        draw(&sp, small_logits, 8, &other, scratch, work);
        int32_t y = draw(&sp, small_logits, 8, &b, scratch, work);
        same &= x == y;
        differs_from_other |= x != draw(&sp, small_logits, 8, &other, scratch, work);
    }
    CHECK(same);
    CHECK(differs_from_other);
    free(scratch);
}

static void test_logprobs(void)
{
    float logits[7] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f, 2.0f, -0.1f};
    double z = 0;
    for (int i = 0; i < 7; i++)
        z += exp(logits[i]);
    eng_logprob_t lp;
    smp_logprobs(logits, 7, 4, 3, &lp);
    CHECK_INT_EQ(lp.id, 4);
    CHECK_NEAR(lp.logprob, 0.5 - log(z), 1e-5);
    CHECK_INT_EQ(lp.n_top, 3);
    CHECK_INT_EQ(lp.top_id[0], 1); /* tie at 3.0: lower id first */
    CHECK_INT_EQ(lp.top_id[1], 3);
    CHECK_INT_EQ(lp.top_id[2], 5);
    CHECK_NEAR(lp.top_logprob[0], 3.0 - log(z), 1e-5);
    CHECK_NEAR(lp.top_logprob[2], 2.0 - log(z), 1e-5);
    /* Asking for more than V or more than the maximum is clamped. */
    smp_logprobs(logits, 7, 2, 50, &lp);
    CHECK_INT_EQ(lp.n_top, 7);
    CHECK_INT_EQ(lp.top_id[6], 2);
    double sum = 0;
    for (int i = 0; i < 7; i++)
        sum += exp(lp.top_logprob[i]);
    CHECK_NEAR(sum, 1.0, 1e-5);
    smp_logprobs(logits, 7, 0, 0, &lp);
    CHECK_INT_EQ(lp.n_top, 0);
}

int main(void)
{
    test_rng();
    test_greedy();
    test_greedy_argmax();
    test_temperature();
    test_top_k();
    test_top_p();
    test_min_p();
    test_big_vocab();
    test_logit_bias();
    test_penalties();
    test_seeded_sequence();
    test_logprobs();
    if (check_failures()) {
        fprintf(stderr, "test_sampler: %d check(s) failed\n", check_failures());
        return 1;
    }
    printf("test_sampler: all checks passed\n");
    return 0;
}
