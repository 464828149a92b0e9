/* sched_util.h - helpers shared by the scheduler tests: engines on the test checkpoints,
 * requests, and collecting every event of a run per (request, choice).
 * Usage of every test binary: TEST CKPT_DIR TOKENIZER_DIR [--long]
 */
#ifndef NANO_VLLM_SCHED_UTIL_H
#define NANO_VLLM_SCHED_UTIL_H

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/sched/scheduler.h"
#include "engine/testing.h"
#include "tests/engine/sched_assert.h"
#include "tests/engine/sched_check.h"
#include "tokenizer/tokenizer.h"

#define MAX_OUT_TOKENS 1100
#define MAX_OUT_TEXT 16384

/* Everything one choice produced. */
typedef struct choice_out {
    int32_t ids[MAX_OUT_TOKENS];
    int n_ids;
    char text[MAX_OUT_TEXT];
    size_t text_len;
    float lp[MAX_OUT_TOKENS]; /* logprob of each token, when asked */
    eng_logprob_t first_lp;   /* the first generated token's logprobs */
    int n_lp;
    int prompt_events;
    int n_prompt_lps;
    int finish;
    int finishes;      /* finishing events seen: must end at exactly 1 */
    int late_events;   /* events after the finishing one: must stay 0 */
    int prompt_tokens, completion_tokens, cached_tokens;
    int n_events;
} choice_out_t;

static inline void fatal_err(const char *what, int rc, const char *err)
{
    fprintf(stderr, "%s failed (%d): %s\n", what, rc, err);
    exit(1);
}

static inline tok_t *load_tok(const char *dir)
{
    tok_t *t = NULL;
    char err[256] = "";
    int rc = tok_init(&t, dir, err, sizeof(err));
    if (rc < 0)
        fatal_err("tok_init", rc, err);
    return t;
}

static inline eng_params_t params_for(const char *model_dir)
{
    eng_params_t p;
    memset(&p, 0, sizeof(p));
    p.model_dir = model_dir;
    p.threads = 1;
    p.max_num_seqs = 32;
    p.max_num_batched_tokens = 256;
    p.num_kv_blocks = 512;
    return p;
}

static inline eng_t *make_engine(const eng_params_t *p, const tok_t *tok)
{
    eng_t *e = NULL;
    char err[512] = "";
    int rc = eng_init(&e, p, tok, err, sizeof(err));
    if (rc < 0)
        fatal_err("eng_init", rc, err);
    return e;
}

/* A request owning a copy of prompt; sampling neutral (greedy when temperature is 0). */
static inline eng_request_t *make_req(uint64_t id, const int32_t *prompt, int n, int max_tokens,
                                      float temperature, uint64_t seed)
{
    eng_request_t *r = calloc(1, sizeof(*r));
    ASSERT_TRUE(r != NULL);
    r->id = id;
    r->prompt = malloc((size_t)n * sizeof(int32_t));
    ASSERT_TRUE(r->prompt != NULL);
    memcpy(r->prompt, prompt, (size_t)n * sizeof(int32_t));
    r->prompt_len = n;
    r->n = 1;
    r->max_tokens = max_tokens;
    r->ignore_eos = 1;
    eng_sampling_default(&r->sp);
    r->sp.temperature = temperature;
    if (temperature > 0) {
        r->sp.top_p = 0.9f;
        r->sp.has_seed = 1;
        r->sp.seed = seed;
    }
    return r;
}

static inline void add_stop(eng_request_t *r, const char *stop)
{
    ASSERT_LT(r->n_stop, ENG_MAX_STOPS);
    r->stop[r->n_stop] = strdup(stop);
    ASSERT_TRUE(r->stop[r->n_stop] != NULL);
    r->n_stop++;
}

static inline void submit_ok(eng_t *e, eng_request_t *r)
{
    int rc = eng_submit(e, r);
    if (rc != 0) {
        fprintf(stderr, "eng_submit(request %llu) = %d\n", (unsigned long long)r->id, rc);
        exit(1);
    }
}

/* Files one event under outs[req_id * stride + index]. */
static inline void collect_event(choice_out_t *outs, int stride, const eng_event_t *ev)
{
    choice_out_t *o = &outs[ev->req_id * (uint64_t)stride + (uint64_t)ev->index];
    o->n_events++;
    if (o->finishes)
        o->late_events++;
    if (ev->is_prompt) {
        o->prompt_events++;
        o->n_prompt_lps = ev->n_lps;
        return;
    }
    for (int i = 0; i < ev->n_ids && o->n_ids < MAX_OUT_TOKENS; i++) {
        if (ev->n_lps > i) {
            if (o->n_ids == 0)
                o->first_lp = ev->lps[i];
            o->lp[o->n_ids] = ev->lps[i].logprob;
            o->n_lp++;
        }
        o->ids[o->n_ids++] = ev->ids[i];
    }
    ASSERT_EQ(strlen(ev->text), ev->text_len);
    if (o->text_len + ev->text_len < MAX_OUT_TEXT) {
        memcpy(o->text + o->text_len, ev->text, ev->text_len);
        o->text_len += ev->text_len;
        o->text[o->text_len] = '\0';
    }
    if (ev->finish != ENG_FINISH_NONE) {
        o->finish = ev->finish;
        o->finishes++;
        o->prompt_tokens = ev->prompt_tokens;
        o->completion_tokens = ev->completion_tokens;
        o->cached_tokens = ev->cached_tokens;
    }
}

static inline int drain_events(eng_t *e, choice_out_t *outs, int stride)
{
    int n = 0;
    eng_event_t *ev = eng_poll(e);
    while (ev) {
        eng_event_t *next = ev->next;
        collect_event(outs, stride, ev);
        eng_event_free(ev);
        ev = next;
        n++;
    }
    return n;
}

static inline void check_sched(eng_t *e)
{
    char err[256];
    if (sched_check(eng_sched(e), err, sizeof(err)) != 0) {
        fprintf(stderr, "sched_check after step %llu: %s\n",
                (unsigned long long)eng_sched(e)->stats.steps, err);
        exit(1);
    }
}

/* Steps until the engine is idle, checking the invariants after every step. Returns the
 * steps taken. */
static inline int run_until_idle(eng_t *e, choice_out_t *outs, int stride, int max_steps)
{
    int steps = 0;
    for (;;) {
        int rc = eng_step(e);
        ASSERT_GE(rc, 0);
        check_sched(e);
        drain_events(e, outs, stride);
        if (rc == 0)
            break;
        ASSERT_LT(++steps, max_steps);
    }
    return steps;
}

/* Deterministic pseudo-random numbers for building test inputs. */
static inline uint32_t test_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

static inline void random_prompt(uint64_t *s, int32_t *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = (int32_t)(test_rand(s) % 50000);
}

#endif
