/* sched_engine.c - the scheduler through the engine API on the tiny test checkpoints:
 * batch invariance (alone vs together, with preemption, with prefix-cache hits, n > 1),
 * prefix caching, chunked prefill step composition, stop strings with hold-back, aborts
 * and request validation.
 * Usage: sched_engine TINY_DIR TINY_1K_DIR TOKENIZER_DIR
 */
#include "tests/engine/sched_util.h"

static const char *tiny_dir, *tiny1k_dir;
static tok_t *tok;

#define NP 16
#define GEN 24

static int32_t prompts[NP][64];
static int plen[NP];

static void make_prompts(void)
{
    uint64_t s = 99;
    for (int i = 0; i < NP; i++) {
        plen[i] = 3 + (int)(test_rand(&s) % 45);
        random_prompt(&s, prompts[i], plen[i]);
    }
}

/* Request i of the set: even ones greedy, odd ones sampled with their own seed. */
static eng_request_t *set_req(uint64_t id, int i)
{
    float temp = i % 2 ? 0.9f : 0.0f;
    eng_request_t *r = make_req(id, prompts[i], plen[i], GEN + i, temp, 1000 + (uint64_t)i);
    if (i == 5)
        r->sp.top_k = 40;
    if (i == 7)
        r->sp.logprobs = 3;
    return r;
}

static void expect_same(const choice_out_t *a, const choice_out_t *b, const char *what, int i)
{
    if (a->n_ids != b->n_ids || memcmp(a->ids, b->ids, (size_t)a->n_ids * 4) != 0 ||
        strcmp(a->text, b->text) != 0 || a->finish != b->finish) {
        fprintf(stderr, "%s: prompt %d differs: %d vs %d tokens, finish %d vs %d\n", what, i,
                a->n_ids, b->n_ids, a->finish, b->finish);
        for (int k = 0; k < a->n_ids || k < b->n_ids; k++)
            fprintf(stderr, "  %d: %d %d\n", k, k < a->n_ids ? a->ids[k] : -1,
                    k < b->n_ids ? b->ids[k] : -1);
        exit(1);
    }
    ASSERT_EQ(a->finishes, 1);
    ASSERT_EQ(b->finishes, 1);
    ASSERT_EQ(a->late_events, 0);
    ASSERT_EQ(b->late_events, 0);
}

static void check_idle(eng_t *e)
{
    eng_stats_t st;
    eng_get_stats(e, &st);
    ASSERT_EQ(st.running, 0);
    ASSERT_EQ(st.waiting, 0);
    ASSERT_EQ(st.kv_blocks_used, 0);
    ASSERT_TRUE(eng_sched(e)->reqs == NULL);
}

static void test_batch_invariance(void)
{
    static choice_out_t alone[NP], together[NP], tight[NP], cached[NP];
    eng_params_t p = params_for(tiny_dir);
    p.block_size = 8;

    /* Each request alone. */
    eng_t *e = make_engine(&p, tok);
    for (int i = 0; i < NP; i++) {
        submit_ok(e, set_req((uint64_t)i, i));
        run_until_idle(e, alone, 1, 1000);
        ASSERT_EQ(alone[i].finish, ENG_FINISH_LENGTH);
        ASSERT_EQ(alone[i].n_ids, GEN + i);
        ASSERT_EQ(alone[i].completion_tokens, GEN + i);
        ASSERT_EQ(alone[i].prompt_tokens, plen[i]);
    }
    ASSERT_EQ(alone[7].n_lp, GEN + 7);
    ASSERT_EQ(alone[7].first_lp.n_top, 3);
    check_idle(e);
    eng_free(e);

    /* All together, plenty of blocks. */
    e = make_engine(&p, tok);
    for (int i = 0; i < NP; i++)
        submit_ok(e, set_req((uint64_t)i, i));
    run_until_idle(e, together, 1, 1000);
    for (int i = 0; i < NP; i++)
        expect_same(&alone[i], &together[i], "together", i);
    eng_stats_t st;
    eng_get_stats(e, &st);
    ASSERT_EQ(st.preemptions, 0);
    /* Again on the same engine: every full prompt block is now in the prefix cache. */
    uint64_t hits0 = st.prefix_cache_hits;
    for (int i = 0; i < NP; i++)
        submit_ok(e, set_req((uint64_t)i, i));
    run_until_idle(e, cached, 1, 1000);
    eng_get_stats(e, &st);
    ASSERT_GT(st.prefix_cache_hits, hits0);
    for (int i = 0; i < NP; i++)
        expect_same(&alone[i], &cached[i], "prefix-cached", i);
    check_idle(e);
    eng_free(e);

    /* Together in a pool far too small: preemption and recomputation. 7 blocks of 8 hold
     * one full sequence of max_model_len 56. */
    p.num_kv_blocks = 12;
    p.max_model_len = 96;
    p.max_num_batched_tokens = 40;
    e = make_engine(&p, tok);
    for (int i = 0; i < NP; i++)
        submit_ok(e, set_req((uint64_t)i, i));
    run_until_idle(e, tight, 1, 5000);
    eng_get_stats(e, &st);
    ASSERT_GT(st.preemptions, 0);
    printf("batch invariance: %llu preemptions in the small pool\n",
           (unsigned long long)st.preemptions);
    for (int i = 0; i < NP; i++)
        expect_same(&alone[i], &tight[i], "preempted", i);
    check_idle(e);
    eng_free(e);
}

/* n = 3 completions share the prompt's blocks; completion 0 is the n = 1 request, and the
 * others do not depend on what else runs or on preemption. */
static void test_fork(void)
{
    static choice_out_t solo[4], a[8];
    eng_params_t p = params_for(tiny_dir);
    p.block_size = 8;
    eng_t *e = make_engine(&p, tok);
    eng_request_t *r = make_req(0, prompts[3], 21, 20, 1.0f, 77);
    submit_ok(e, r);
    run_until_idle(e, solo, 4, 1000);
    r = make_req(1, prompts[3], 21, 20, 1.0f, 77);
    r->n = 3;
    submit_ok(e, r);
    run_until_idle(e, a, 4, 1000);
    eng_free(e);
    expect_same(&solo[0], &a[4], "fork choice 0", 0);
    ASSERT_TRUE(memcmp(a[4].ids, a[5].ids, sizeof(a[4].ids[0]) * 20) != 0 ||
                memcmp(a[5].ids, a[6].ids, sizeof(a[4].ids[0]) * 20) != 0);

    /* The same request among others in a small pool, with index_base 2. */
    p.num_kv_blocks = 10;
    p.max_model_len = 64;
    e = make_engine(&p, tok);
    for (int i = 0; i < 4; i++)
        submit_ok(e,
                  make_req(2 + (uint64_t)i, prompts[i], plen[i] < 30 ? plen[i] : 30, 30, 0.0f, 0));
    r = make_req(1, prompts[3], 21, 20, 1.0f, 77);
    r->n = 3;
    r->index_base = 0;
    submit_ok(e, r);
    static choice_out_t many[6 * 4];
    run_until_idle(e, many, 4, 3000);
    for (int k = 0; k < 3; k++)
        expect_same(&a[4 + k], &many[4 + k], "fork among others", k);
    ASSERT_EQ(many[4].prompt_tokens, 21);
    check_idle(e);
    eng_free(e);
}

/* A second request sharing a 64-token prefix computes only its own tokens and sees the same
 * logits as without the cache. */
static void test_prefix_cache(void)
{
    int32_t pa[72], pb[72];
    uint64_t s = 5;
    random_prompt(&s, pa, 72);
    memcpy(pb, pa, 64 * sizeof(int32_t));
    random_prompt(&s, pb + 64, 8);
    eng_params_t p = params_for(tiny_dir);
    p.block_size = 16;
    static choice_out_t with[2], without[2];

    eng_t *e = make_engine(&p, tok);
    eng_request_t *r = make_req(0, pa, 72, 4, 0.0f, 0);
    submit_ok(e, r);
    run_until_idle(e, with, 1, 100);
    uint64_t before = eng_sched(e)->computed_tokens;
    eng_stats_t st0, st1;
    eng_get_stats(e, &st0);
    r = make_req(1, pb, 72, 4, 0.0f, 0);
    r->sp.logprobs = 5;
    submit_ok(e, r);
    run_until_idle(e, with, 1, 100);
    eng_get_stats(e, &st1);
    /* 8 new prompt tokens, then 3 decode steps (the 4th token needs no forward). */
    ASSERT_EQ(eng_sched(e)->computed_tokens - before, 8 + 3);
    ASSERT_EQ(st1.prefix_cache_hits - st0.prefix_cache_hits, 64);
    ASSERT_EQ(st1.prefix_cache_queries - st0.prefix_cache_queries, 72);
    ASSERT_EQ(with[1].cached_tokens, 64);
    check_idle(e);
    eng_free(e);

    e = make_engine(&p, tok);
    r = make_req(1, pb, 72, 4, 0.0f, 0);
    r->sp.logprobs = 5;
    submit_ok(e, r);
    run_until_idle(e, without, 1, 100);
    ASSERT_EQ(without[1].cached_tokens, 0);
    eng_free(e);
    expect_same(&with[1], &without[1], "prefix cache", 1);
    ASSERT_EQ(with[1].first_lp.n_top, 5);
    float maxd = 0;
    for (int k = 0; k < 5; k++) {
        ASSERT_EQ(with[1].first_lp.top_id[k], without[1].first_lp.top_id[k]);
        float d = fabsf(with[1].first_lp.top_logprob[k] - without[1].first_lp.top_logprob[k]);
        maxd = d > maxd ? d : maxd;
    }
    for (int k = 0; k < 4; k++) {
        float d = fabsf(with[1].lp[k] - without[1].lp[k]);
        maxd = d > maxd ? d : maxd;
    }
    printf("prefix cache: max |logprob difference| %.3g (tolerance 1e-5)\n", (double)maxd);
    ASSERT_TRUE(maxd <= 1e-5f);
}

/* A 900-token prompt arriving while 8 streams decode: every step still decodes all 8, and
 * the prompt gets only what is left of the budget. */
static void test_chunked_prefill(void)
{
    enum { BUDGET = 64, STREAMS = 8, LONG = 900 };
    eng_params_t p = params_for(tiny1k_dir);
    p.max_num_batched_tokens = BUDGET;
    p.max_num_seqs = 16;
    p.num_kv_blocks = 200;
    static choice_out_t outs[STREAMS + 1];
    eng_t *e = make_engine(&p, tok);
    for (int i = 0; i < STREAMS; i++)
        submit_ok(e, make_req((uint64_t)i, prompts[i], 6, 100, 0.0f, 0));
    const sched_step_info_t *last = &eng_sched(e)->last;
    for (int k = 0; k < 3; k++) {
        ASSERT_EQ(eng_step(e), 1);
        drain_events(e, outs, 1);
    }
    ASSERT_EQ(last->n_decode, STREAMS);
    static int32_t big[LONG];
    uint64_t s = 11;
    random_prompt(&s, big, LONG);
    submit_ok(e, make_req(STREAMS, big, LONG, 4, 0.0f, 0));
    int steps = 0, prefilled = 0;
    while (outs[STREAMS].n_ids == 0) {
        ASSERT_EQ(eng_step(e), 1);
        check_sched(e);
        drain_events(e, outs, 1);
        steps++;
        ASSERT_EQ(last->n_decode, STREAMS);
        ASSERT_LE(last->prefill_tokens, BUDGET - STREAMS);
        prefilled += last->prefill_tokens;
        ASSERT_LE(steps, LONG / (BUDGET - STREAMS) + 2);
    }
    ASSERT_EQ(prefilled, LONG);
    printf("chunked prefill: %d-token prompt in %d steps, %d streams decoding every step\n", LONG,
           steps, STREAMS);
    for (int i = 0; i < STREAMS; i++)
        ASSERT_EQ(outs[i].finishes, 0);
    run_until_idle(e, outs, 1, 1000);
    for (int i = 0; i <= STREAMS; i++)
        ASSERT_EQ(outs[i].finishes, 1);
    check_idle(e);
    eng_free(e);
}

/* With max_prefill_tokens_decoding N, prompts arriving while D streams decode get at most
 * max(N - D, N / 4, min(N, backlog / 4)) tokens per step (several prompts share it;
 * backlog = the prompt tokens not yet computed), while a step with nothing to decode still
 * takes the whole budget. Here the backlog term is what admits the burst of new prompts at
 * first, up to N. */
static void test_prefill_cap(void)
{
    enum { BUDGET = 128, CAP = 16, STREAMS = 4, NEW = 6, PROMPT = 20 };
    eng_params_t p = params_for(tiny1k_dir);
    p.max_num_batched_tokens = BUDGET;
    p.max_prefill_tokens_decoding = CAP;
    p.max_num_seqs = 16;
    p.num_kv_blocks = 200;
    static choice_out_t outs[STREAMS + NEW];
    eng_t *e = make_engine(&p, tok);
    const sched_step_info_t *last = &eng_sched(e)->last;
    static int32_t pr[STREAMS + NEW][PROMPT];
    uint64_t s = 23;
    for (int i = 0; i < STREAMS + NEW; i++)
        random_prompt(&s, pr[i], PROMPT);
    for (int i = 0; i < STREAMS; i++)
        submit_ok(e, make_req((uint64_t)i, pr[i], PROMPT, 200, 0.0f, 0));
    ASSERT_EQ(eng_step(e), 1); /* nothing decodes yet: every prompt in one step */
    ASSERT_EQ(last->prefill_tokens, STREAMS * PROMPT);
    drain_events(e, outs, 1);
    for (int i = STREAMS; i < STREAMS + NEW; i++)
        submit_ok(e, make_req((uint64_t)i, pr[i], PROMPT, 3, 0.0f, 0));
    int steps = 0, prefilled = 0, full = 0, by_backlog = 0;
    for (;;) {
        int pending = 0;
        for (int i = STREAMS; i < STREAMS + NEW; i++)
            pending += outs[i].n_ids == 0;
        if (!pending)
            break;
        ASSERT_EQ(eng_step(e), 1);
        check_sched(e);
        drain_events(e, outs, 1);
        steps++;
        int allowed = CAP - last->n_decode > CAP / 4 ? CAP - last->n_decode : CAP / 4;
        int drain = (last->prefill_backlog + 3) / 4;
        drain = drain < CAP ? drain : CAP;
        by_backlog += drain > allowed;
        allowed = allowed > drain ? allowed : drain;
        ASSERT_EQ(last->prefill_cap, allowed);
        ASSERT_LE(last->prefill_tokens, allowed);
        ASSERT_TRUE(last->n_decode >= STREAMS);
        prefilled += last->prefill_tokens;
        full += last->prefill_tokens == allowed;
        ASSERT_LE(steps, NEW * PROMPT / (CAP / 4) + 2);
    }
    ASSERT_EQ(prefilled, NEW * PROMPT);
    ASSERT_TRUE(full >= 2);       /* the cap is reached, not just respected */
    ASSERT_TRUE(by_backlog >= 2); /* and the backlog raised it */
    printf("prefill cap: %d prompts of %d tokens in %d steps at <= max(%d - decodes, %d, "
           "min(%d, backlog / 4)) prompt tokens a step (%d steps raised by the backlog)\n",
           NEW, PROMPT, steps, CAP, CAP / 4, CAP, by_backlog);
    for (int i = 0; i < STREAMS; i++)
        ASSERT_EQ(outs[i].finishes, 0);
    eng_abort(e, 0);
    run_until_idle(e, outs, 1, 1000);
    for (int i = 0; i < STREAMS + NEW; i++)
        ASSERT_EQ(outs[i].finishes, 1);
    check_idle(e);
    eng_free(e);
}

/* The detokenizer's hold-back, on text alone. */
static void test_holdback(void)
{
    char *stops[2] = {"abc", "cd"};
    detok_t d;
    ASSERT_EQ(detok_init(&d, stops, 2), 0);
    char out[1024];
    size_t n;
    ASSERT_EQ(detok_push_text(&d, "xa", 2, out, &n), 0);
    ASSERT_STREQ(out, "x");
    ASSERT_EQ(detok_push_text(&d, "b", 1, out, &n), 0);
    ASSERT_STREQ(out, "");
    ASSERT_EQ(detok_push_text(&d, "d", 1, out, &n), 0);
    ASSERT_STREQ(out, "abd");
    ASSERT_EQ(detok_push_text(&d, "zzc", 3, out, &n), 0);
    ASSERT_STREQ(out, "zz");
    ASSERT_EQ(detok_push_text(&d, "d!", 2, out, &n), 1); /* "cd" across two pushes */
    ASSERT_STREQ(out, "");
    detok_free(&d);

    ASSERT_EQ(detok_init(&d, stops, 2), 0);
    ASSERT_EQ(detok_push_text(&d, "hello ab", 8, out, &n), 0);
    ASSERT_STREQ(out, "hello ");
    ASSERT_EQ(detok_finish(&d, out, &n), 0); /* the end decides: "ab" was no stop */
    ASSERT_STREQ(out, "ab");
    detok_free(&d);

    ASSERT_EQ(detok_init(&d, stops, 2), 0);
    ASSERT_EQ(detok_push_text(&d, "xxabcdcd", 8, out, &n), 1); /* the earliest wins */
    ASSERT_STREQ(out, "xx");
    detok_free(&d);

    ASSERT_EQ(detok_init(&d, NULL, 0), 0);
    ASSERT_EQ(detok_push_text(&d, "abc", 3, out, &n), 0);
    ASSERT_STREQ(out, "abc");
    detok_free(&d);
}

/* Stop strings on real generated text: one spanning two tokens ends the text right before
 * it, and no event ever shows any part of it. */
static void test_stop_strings(void)
{
    eng_params_t p = params_for(tiny_dir);
    static choice_out_t free_run[1], stopped[1];
    eng_t *e = make_engine(&p, tok);
    submit_ok(e, make_req(0, prompts[0], plen[0], 60, 0.0f, 0));
    run_until_idle(e, free_run, 1, 200);
    /* Find two consecutive ASCII tokens of 2+ characters and straddle their boundary. */
    const char *full = free_run[0].text;
    int found = -1;
    size_t off = 0, cut = 0;
    for (int k = 0; k + 1 < free_run[0].n_ids && found < 0; k++) {
        size_t la, lb;
        const char *ta = tok_token_bytes(tok, free_run[0].ids[k], &la);
        const char *tb = tok_token_bytes(tok, free_run[0].ids[k + 1], &lb);
        int ascii = 1;
        for (size_t i = 0; i < la; i++)
            ascii &= (unsigned char)ta[i] < 128;
        for (size_t i = 0; i < lb; i++)
            ascii &= (unsigned char)tb[i] < 128;
        if (ascii && la >= 2 && lb >= 2 && off >= 1) {
            found = k;
            cut = off + la - 2;
        }
        off += la;
    }
    if (found < 0) {
        fprintf(stderr, "no two ASCII tokens in a row in: %s\n", full);
        exit(1);
    }
    char stop[5];
    memcpy(stop, full + cut, 4);
    stop[4] = '\0';
    /* The text must end at the first occurrence of the stop string. */
    const char *first = strstr(full, stop);
    ASSERT_TRUE(first != NULL);
    size_t expect_len = (size_t)(first - full);
    eng_request_t *r = make_req(0, prompts[0], plen[0], 60, 0.0f, 0);
    add_stop(r, "\xF0\x9F\x98\x80 never appears");
    char longer[400]; /* beyond what the scheduler's text buffer holds at start */
    memset(longer, 'q', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    add_stop(r, longer);
    add_stop(r, stop);
    submit_ok(e, r);
    run_until_idle(e, stopped, 1, 200);
    printf("stop string \"%s\": %zu of %zu bytes kept\n", stop, stopped[0].text_len,
           free_run[0].text_len);
    ASSERT_EQ(stopped[0].finish, ENG_FINISH_STOP);
    ASSERT_EQ(stopped[0].text_len, expect_len);
    ASSERT_TRUE(memcmp(stopped[0].text, full, expect_len) == 0);
    ASSERT_TRUE(strstr(stopped[0].text, stop) == NULL);
    ASSERT_LT(stopped[0].n_ids, free_run[0].n_ids);
    check_idle(e);
    eng_free(e);
}

/* An aborted request ends with ENG_FINISH_ABORT once and its blocks are back at once;
 * the others go on unchanged. */
static void test_abort(void)
{
    eng_params_t p = params_for(tiny_dir);
    p.block_size = 4;
    static choice_out_t outs[4], ref[4];
    eng_t *e = make_engine(&p, tok);
    submit_ok(e, make_req(0, prompts[0], plen[0], 30, 0.0f, 0));
    run_until_idle(e, ref, 1, 100);
    submit_ok(e, make_req(0, prompts[0], plen[0], 30, 0.0f, 0));
    submit_ok(e, make_req(1, prompts[1], plen[1], 30, 0.0f, 0));
    for (int k = 0; k < 5; k++) {
        ASSERT_EQ(eng_step(e), 1);
        drain_events(e, outs, 1);
    }
    eng_stats_t st0, st1;
    eng_get_stats(e, &st0);
    ASSERT_EQ(st0.running, 2);
    eng_abort(e, 1);
    eng_abort(e, 12345); /* unknown: ignored */
    ASSERT_EQ(eng_step(e), 1);
    drain_events(e, outs, 1);
    eng_get_stats(e, &st1);
    ASSERT_EQ(outs[1].finish, ENG_FINISH_ABORT);
    ASSERT_EQ(outs[1].finishes, 1);
    ASSERT_EQ(st1.running, 1);
    /* Only request 0 holds blocks now (freed cached blocks count as free). */
    ASSERT_EQ(st1.kv_blocks_used, eng_sched(e)->running.head->n_blocks);
    ASSERT_LT(st1.kv_blocks_used, st0.kv_blocks_used);
    /* Abort of a request not yet taken by the scheduler. */
    submit_ok(e, make_req(2, prompts[2], plen[2], 30, 0.0f, 0));
    eng_abort(e, 2);
    run_until_idle(e, outs, 1, 100);
    ASSERT_EQ(outs[2].finish, ENG_FINISH_ABORT);
    ASSERT_EQ(outs[2].finishes, 1);
    expect_same(&ref[0], &outs[0], "abort neighbour", 0);
    check_idle(e);
    eng_free(e);
}

static void test_validation(void)
{
    eng_params_t p = params_for(tiny_dir);
    p.max_model_len = 100;
    p.max_waiting = 2;
    eng_t *e = make_engine(&p, tok);
    eng_info_t info;
    eng_get_info(e, &info);
    ASSERT_EQ(info.max_model_len, 100);
    ASSERT_EQ(info.vocab_size, 50257);
    eng_request_t *r = make_req(0, prompts[0], 40, 61, 0.0f, 0); /* 101 > 100 */
    ASSERT_EQ(eng_submit(e, r), -EINVAL);
    r->max_tokens = 60;
    ASSERT_EQ(eng_submit(e, r), 0);
    r = make_req(1, prompts[0], 4, 0, 0.0f, 0); /* max_tokens 0 without prompt logprobs */
    ASSERT_EQ(eng_submit(e, r), -EINVAL);
    r->prompt[1] = 50257;
    r->max_tokens = 4;
    ASSERT_EQ(eng_submit(e, r), -EINVAL);
    r->prompt[1] = 1;
    add_stop(r, "");
    ASSERT_EQ(eng_submit(e, r), -EINVAL);
    eng_request_free(r);
    ASSERT_EQ(eng_submit(e, make_req(2, prompts[0], 4, 4, 0.0f, 0)), 0);
    r = make_req(3, prompts[0], 4, 4, 0.0f, 0);
    ASSERT_EQ(eng_submit(e, r), -EAGAIN); /* two waiting already */
    ASSERT_EQ(eng_step(e), 1);            /* both admitted: none waits */
    ASSERT_EQ(eng_submit(e, r), 0);
    r = make_req(4, prompts[0], 4, 4, 0.0f, 0);
    r->n = 3; /* counts as one waiting request */
    ASSERT_EQ(eng_submit(e, r), 0);
    r = make_req(5, prompts[0], 4, 4, 0.0f, 0);
    ASSERT_EQ(eng_submit(e, r), -EAGAIN);
    eng_request_free(r);
    eng_free(e); /* with requests still queued: freed, no leak */

    /* The pool must hold one sequence of a max_model_len that is set. */
    p = params_for(tiny_dir);
    p.num_kv_blocks = 15;
    p.max_model_len = 256;
    eng_t *bad = NULL;
    char err[512] = "";
    ASSERT_EQ(eng_init(&bad, &p, tok, err, sizeof(err)), -EINVAL);
    ASSERT_TRUE(bad == NULL);
    ASSERT_TRUE(strstr(err, "max_model_len 256") != NULL);
    p.num_kv_blocks = 16;
    ASSERT_EQ(eng_init(&bad, &p, tok, err, sizeof(err)), 0);
    eng_get_info(bad, &info);
    ASSERT_EQ(info.max_model_len, 256);
    ASSERT_TRUE(strstr(info.max_model_len_from, "setting") != NULL);
    eng_free(bad);
    /* Unset, it is the model's 256 positions when the pool holds them, else what the pool
     * holds (15 blocks of 16). */
    p.max_model_len = 0;
    ASSERT_EQ(eng_init(&bad, &p, tok, err, sizeof(err)), 0);
    eng_get_info(bad, &info);
    ASSERT_EQ(info.max_model_len, 256);
    ASSERT_TRUE(strstr(info.max_model_len_from, "model's maximum") != NULL);
    eng_free(bad);
    p.num_kv_blocks = 15;
    ASSERT_EQ(eng_init(&bad, &p, tok, err, sizeof(err)), 0);
    eng_get_info(bad, &info);
    ASSERT_EQ(info.max_model_len, 240);
    ASSERT_TRUE(strstr(info.max_model_len_from, "KV pool holds (the model allows 256)") != NULL);
    eng_free(bad);
    p.max_num_batched_tokens = 8;
    ASSERT_EQ(eng_init(&bad, &p, tok, err, sizeof(err)), -EINVAL);
    ASSERT_TRUE(strstr(err, "max_num_batched_tokens 8 is below max_num_seqs 32") != NULL);
    p.max_num_batched_tokens = 0;
    p.model_dir = "no/such/dir";
    ASSERT_LT(eng_init(&bad, &p, tok, err, sizeof(err)), 0);
    ASSERT_TRUE(bad == NULL);
    eng_free(NULL);
}

/* Prompt logprobs (echo) and scoring with max_tokens 0. */
static void test_prompt_logprobs(void)
{
    eng_params_t p = params_for(tiny_dir);
    p.max_num_batched_tokens = 16; /* the 40-token prompt comes in chunks */
    p.max_num_seqs = 16;
    static choice_out_t outs[2 * 2];
    eng_t *e = make_engine(&p, tok);
    eng_request_t *r = make_req(0, prompts[1], 40, 0, 0.0f, 0);
    r->sp.prompt_logprobs = 2;
    submit_ok(e, r);
    r = make_req(1, prompts[1], 40, 3, 0.0f, 0);
    r->sp.prompt_logprobs = 1;
    r->n = 2;
    submit_ok(e, r);
    run_until_idle(e, outs, 2, 100);
    ASSERT_EQ(outs[0].prompt_events, 1);
    ASSERT_EQ(outs[0].n_prompt_lps, 40);
    ASSERT_EQ(outs[0].finish, ENG_FINISH_LENGTH);
    ASSERT_EQ(outs[0].n_ids, 0);
    ASSERT_EQ(outs[2].prompt_events, 1);
    ASSERT_EQ(outs[3].prompt_events, 1);
    ASSERT_EQ(outs[2].n_ids, 3);
    ASSERT_EQ(outs[3].n_ids, 3);
    check_idle(e);
    eng_free(e);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s TINY_DIR TINY_1K_DIR TOKENIZER_DIR\n", argv[0]);
        return 2;
    }
    tiny_dir = argv[1];
    tiny1k_dir = argv[2];
    tok = load_tok(argv[3]);
    make_prompts();
    test_holdback();
    test_validation();
    test_batch_invariance();
    test_fork();
    test_prefix_cache();
    test_chunked_prefill();
    test_prefill_cap();
    test_stop_strings();
    test_abort();
    test_prompt_logprobs();
    tok_free(tok);
    puts("sched_engine: ok");
    return 0;
}
