/* sampler.c - logits processing, top-k/top-p/min-p selection and the per-request RNG.
 *
 * Selection never sorts the whole vocabulary: min-p is a threshold, top-k a quickselect and
 * top-p a quickselect on probability mass, all expected O(V). Everything runs in the
 * caller's scratch; nothing is allocated.
 */
#include "engine/sched/sampler.h"

#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS). */
#define SMP_GREEDY_EPS 1e-5f

typedef struct cand {
    float p; /* unnormalised probability exp((logit - max) / temperature) */
    int32_t id;
} cand_t;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void smp_rng_seed(smp_rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t smp_rng_next(smp_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double smp_rng_uniform(smp_rng_t *r)
{
    return (double)(smp_rng_next(r) >> 11) * 0x1.0p-53;
}

size_t smp_scratch_bytes(int V)
{
    return (size_t)(V > 0 ? V : 1) * (sizeof(cand_t) + sizeof(uint32_t));
}

/* The counts region follows the candidates; both are sized by smp_scratch_bytes. */
static uint32_t *scratch_counts(void *scratch, int V)
{
    return (uint32_t *)((char *)scratch + (size_t)V * sizeof(cand_t));
}

/* The first index of the largest value; NaNs never win, unless x[0] is one (then 0).
 * That is the first i with x[i] == m, m the maximum of the values that are not NaN, since
 * only a strictly larger value displaces the best so far (and -0 == +0). So it takes two
 * passes that vectorize: the maximum, then the first index holding it. With SSE, maxps
 * returns its second operand when either is NaN, so a NaN element leaves the accumulator
 * alone. */
static int32_t argmax(const float *x, int V)
{
    float m = x[0];
    if (m != m)
        return 0;
    int i = 1;
#if defined(__SSE2__)
    if (V >= 17) {
        __m128 a0 = _mm_set1_ps(m), a1 = a0, a2 = a0, a3 = a0;
        for (; i + 16 <= V; i += 16) {
            a0 = _mm_max_ps(_mm_loadu_ps(x + i), a0);
            a1 = _mm_max_ps(_mm_loadu_ps(x + i + 4), a1);
            a2 = _mm_max_ps(_mm_loadu_ps(x + i + 8), a2);
            a3 = _mm_max_ps(_mm_loadu_ps(x + i + 12), a3);
        }
        float lane[4];
        _mm_storeu_ps(lane, _mm_max_ps(_mm_max_ps(a0, a1), _mm_max_ps(a2, a3)));
        for (int k = 0; k < 4; k++)
            m = lane[k] > m ? lane[k] : m;
    }
#endif
    for (; i < V; i++)
        m = x[i] > m ? x[i] : m;
    i = 0;
#if defined(__SSE2__)
    const __m128 mv = _mm_set1_ps(m);
    for (; i + 4 <= V; i += 4) {
        int hit = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i), mv));
        if (hit)
            return i + __builtin_ctz((unsigned)hit);
    }
#endif
    for (; i < V; i++)
        if (x[i] == m)
            return i;
    return 0; /* not reached: m is one of the values */
}

/* Higher probability first, then the lower id: a total order, so results are reproducible. */
static int cand_before(const cand_t *a, const cand_t *b)
{
    return a->p > b->p || (a->p == b->p && a->id < b->id);
}

static void cand_swap(cand_t *a, cand_t *b)
{
    cand_t t = *a;
    *a = *b;
    *b = t;
}

/* Lomuto partition of c[lo..hi] around the median of three; returns the pivot's index.
 * Afterwards c[lo..pivot) come before the pivot and c(pivot..hi] after it. */
static int partition(cand_t *c, int lo, int hi)
{
    int mid = lo + (hi - lo) / 2;
    if (cand_before(&c[mid], &c[lo]))
        cand_swap(&c[mid], &c[lo]);
    if (cand_before(&c[hi], &c[lo]))
        cand_swap(&c[hi], &c[lo]);
    if (cand_before(&c[mid], &c[hi]))
        cand_swap(&c[mid], &c[hi]);
    cand_t pivot = c[hi]; /* the median of the three */
    int store = lo;
    for (int i = lo; i < hi; i++)
        if (cand_before(&c[i], &pivot))
            cand_swap(&c[i], &c[store++]);
    cand_swap(&c[store], &c[hi]);
    return store;
}

/* Reorders c[0..n) so that its first k entries are the k best (in no particular order). */
static void select_top_k(cand_t *c, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int p = partition(c, lo, hi);
        if (p == k - 1 || p == k)
            return;
        if (p < k)
            lo = p + 1;
        else
            hi = p - 1;
    }
}

/* Returns the size m of the smallest best-first prefix of c[0..n) whose mass reaches
 * target (> 0), reordering c so that this prefix comes first. Like quickselect, but the
 * side to keep is chosen by mass instead of by count. */
static int select_top_mass(cand_t *c, int n, double target)
{
    /* Invariant: c[0..lo) belong to the set and their mass is already taken off target;
     * the set ends somewhere in c[lo..hi]. */
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int p = partition(c, lo, hi);
        double upper = 0; /* mass of c[lo..p), all better than the pivot */
        for (int i = lo; i < p; i++)
            upper += c[i].p;
        if (upper >= target) {
            hi = p - 1;
        } else if (upper + c[p].p >= target) {
            return p + 1;
        } else {
            target -= upper + c[p].p;
            lo = p + 1;
        }
    }
    /* lo == hi: that one candidate closes the set. lo == n only by rounding. */
    return lo < n ? lo + 1 : n;
}

static void apply_logit_bias(const eng_sampling_t *sp, float *logits, int V)
{
    for (int i = 0; i < sp->n_logit_bias; i++) {
        int32_t id = sp->logit_bias_ids[i];
        if (id >= 0 && id < V)
            logits[id] += sp->logit_bias_values[i];
    }
}

/* Bit 31 of a count marks "seen in prompt or output"; the low bits count output tokens. */
#define SEEN 0x80000000u

static void apply_penalties(const eng_sampling_t *sp, float *logits, int V, const int32_t *prompt,
                            int n_prompt, const int32_t *out, int n_out, uint32_t *cnt)
{
    float rp = sp->repetition_penalty;
    int use_rp = rp > 0 && rp != 1.0f;
    int use_out = sp->presence_penalty != 0 || sp->frequency_penalty != 0;
    if (!use_rp && !use_out)
        return;
    memset(cnt, 0, (size_t)V * sizeof(*cnt));
    if (use_rp)
        for (int i = 0; i < n_prompt; i++)
            if (prompt[i] >= 0 && prompt[i] < V)
                cnt[prompt[i]] |= SEEN;
    for (int i = 0; i < n_out; i++)
        if (out[i] >= 0 && out[i] < V)
            cnt[out[i]] = (cnt[out[i]] + 1) | SEEN;
    /* Visiting the listed ids (not all V) keeps this O(prompt + output); the SEEN bit is
     * cleared on the first visit so a repeated id is penalised once. */
    for (int pass = 0; pass < 2; pass++) {
        const int32_t *ids = pass == 0 ? prompt : out;
        int n = pass == 0 ? n_prompt : n_out;
        for (int i = 0; i < n; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= V || !(cnt[id] & SEEN))
                continue;
            uint32_t c = cnt[id] & ~SEEN;
            cnt[id] = c;
            float l = logits[id];
            if (use_rp)
                l = l > 0 ? l / rp : l * rp;
            if (c > 0)
                l -= sp->frequency_penalty * (float)c + sp->presence_penalty;
            logits[id] = l;
        }
    }
}

int32_t smp_sample(const eng_sampling_t *sp, float *logits, int V, const int32_t *prompt,
                   int n_prompt, const int32_t *out, int n_out, smp_rng_t *r, void *scratch)
{
    cand_t *c = scratch;
    apply_logit_bias(sp, logits, V);
    apply_penalties(sp, logits, V, prompt, n_prompt, out, n_out, scratch_counts(scratch, V));

    int32_t best = argmax(logits, V);
    if (!(sp->temperature >= SMP_GREEDY_EPS) || !isfinite(logits[best]))
        return best;

    /* Probabilities relative to the best token, so min-p is a plain threshold on p. */
    float inv_t = 1.0f / sp->temperature, max = logits[best];
    float min_p = sp->min_p > 0 ? sp->min_p : 0;
    int n = 0;
    double total = 0;
    for (int i = 0; i < V; i++) {
        float p = expf((logits[i] - max) * inv_t);
        if (p > 0 && p >= min_p) {
            c[n].p = p;
            c[n].id = i;
            total += p;
            n++;
        }
    }
    if (n == 0) /* only with min_p > 1, which keeps nothing: fall back to greedy */
        return best;
    if (sp->top_k > 0 && sp->top_k < n) {
        select_top_k(c, n, sp->top_k);
        n = sp->top_k;
        total = 0;
        for (int i = 0; i < n; i++)
            total += c[i].p;
    }
    if (sp->top_p > 0 && sp->top_p < 1) {
        n = select_top_mass(c, n, sp->top_p * total);
        total = 0;
        for (int i = 0; i < n; i++)
            total += c[i].p;
    }

    /* Draw walking the kept tokens in id order, not in the order selection left them in:
     * that order depends on every logit, so a difference in the last bit (OpenBLAS rows
     * change in the last bits with the number of rows in the batch) would change which
     * token the same u picks, and a request's output would depend on its batch. In id
     * order such a difference moves each boundary by as much, so it almost never matters.
     * The counts scratch is free again after the penalties. */
    float *dense = (float *)scratch_counts(scratch, V);
    memset(dense, 0, (size_t)V * sizeof(*dense));
    for (int i = 0; i < n; i++)
        dense[c[i].id] = c[i].p;
    total = 0;
    for (int i = 0; i < V; i++)
        total += dense[i];
    double u = smp_rng_uniform(r) * total, acc = 0;
    int32_t last = c[0].id;
    for (int i = 0; i < V; i++) {
        if (dense[i] <= 0)
            continue;
        acc += dense[i];
        last = i;
        if (u < acc)
            return i;
    }
    /* Only rounding can get here (u within an ulp of total): the last candidate. */
    return last;
}

void smp_logprobs(const float *logits, int V, int32_t id, int n_top, eng_logprob_t *lp)
{
    float max = logits[argmax(logits, V)];
    double sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp((double)logits[i] - max);
    float lse = max + (float)log(sum);

    if (n_top < 0)
        n_top = 0;
    if (n_top > ENG_MAX_LOGPROBS)
        n_top = ENG_MAX_LOGPROBS;
    if (n_top > V)
        n_top = V;
    lp->id = id;
    lp->logprob = id >= 0 && id < V ? logits[id] - lse : -INFINITY;
    lp->n_top = n_top;

    /* Insertion into a sorted list of at most ENG_MAX_LOGPROBS: a strict > keeps the lower
     * id ahead on ties, since ids arrive in increasing order. */
    int have = 0;
    for (int i = 0; i < V && n_top > 0; i++) {
        float x = logits[i];
        if (have == n_top && !(x > lp->top_logprob[have - 1]))
            continue;
        int j = have < n_top ? have++ : have - 1;
        while (j > 0 && x > lp->top_logprob[j - 1]) {
            lp->top_logprob[j] = lp->top_logprob[j - 1];
            lp->top_id[j] = lp->top_id[j - 1];
            j--;
        }
        lp->top_logprob[j] = x;
        lp->top_id[j] = i;
    }
    for (int j = 0; j < n_top; j++)
        lp->top_logprob[j] -= lse;
}
