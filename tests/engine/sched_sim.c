/* sched_sim.c - randomized simulation of the scheduler on the tiny model: random arrivals,
 * prompt and output lengths, n > 1, shared prefixes, stop strings, echo, aborts, and a KV
 * pool small enough to force preemption. After every step: the block manager agrees with
 * the sequences (sched_check). Throughout: every choice finishes exactly once, with no
 * event after its end, with as many tokens as it reports, and no request waits longer
 * than a bound. At the end nothing is left: no request, no used block.
 * Usage: sched_sim TINY_DIR TOKENIZER_DIR STEPS SEED
 */
#include "tests/engine/sched_util.h"

#define MAX_REQ 4096
#define MAX_N 3
#define MODEL_LEN 64
#define MAX_AGE 600 /* steps a request may live; far above what the load needs */

typedef struct sim_choice {
    int n_ids, finishes, late, finish, completion_tokens, prompt_events;
} sim_choice_t;

typedef struct sim_req {
    int live, n, max_tokens, prompt_len, echo, submitted_at, ended_at;
} sim_req_t;

static sim_choice_t ch[MAX_REQ][MAX_N];
static sim_req_t rq[MAX_REQ];

static void on_event(const eng_event_t *ev, int step)
{
    ASSERT_LT(ev->req_id, MAX_REQ);
    ASSERT_LT(ev->index, MAX_N);
    sim_req_t *r = &rq[ev->req_id];
    sim_choice_t *c = &ch[ev->req_id][ev->index];
    if (c->finishes)
        c->late++;
    if (ev->is_prompt) {
        ASSERT_EQ(ev->n_lps, r->prompt_len);
        c->prompt_events++;
        return;
    }
    c->n_ids += ev->n_ids;
    ASSERT_LE(c->n_ids, r->max_tokens);
    if (ev->finish == ENG_FINISH_NONE)
        return;
    c->finishes++;
    c->finish = ev->finish;
    c->completion_tokens = ev->completion_tokens;
    ASSERT_EQ(ev->prompt_tokens, r->prompt_len);
    int done = 1;
    for (int k = 0; k < r->n; k++)
        done &= ch[ev->req_id][k].finishes > 0;
    if (done) {
        r->live = 0;
        r->ended_at = step;
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s TINY_DIR TOKENIZER_DIR STEPS SEED\n", argv[0]);
        return 2;
    }
    tok_t *tok = load_tok(argv[2]);
    int steps = atoi(argv[3]);
    uint64_t s = strtoull(argv[4], NULL, 10);
    eng_params_t p = params_for(argv[1]);
    p.block_size = 4;
    p.max_model_len = MODEL_LEN;
    p.num_kv_blocks = 22; /* 16 hold one full sequence */
    p.max_num_seqs = 6;
    p.max_num_batched_tokens = 24;
    /* Odd seeds also cap the prompt tokens of steps that decode (fewer than one prompt). */
    p.max_prefill_tokens_decoding = s % 2 ? 8 : 0;
    eng_t *e = make_engine(&p, tok);

    /* A few shared beginnings, so prompts hit the prefix cache. */
    int32_t prefixes[4][32];
    for (int i = 0; i < 4; i++)
        random_prompt(&s, prefixes[i], 32);
    static const char *stops[] = {"e", "th", " the", "\n", "ing"};
    int nreq = 0;
    int32_t prompt[MODEL_LEN];
    for (int step = 0; step < steps || eng_sched(e)->reqs; step++) {
        ASSERT_LT(step, steps + 5000);
        /* Arrivals, random but bounded (closed loop): the bound on waiting below is about
         * fairness, not about a queue growing without end. */
        int live = 0;
        for (int i = 0; i < nreq; i++)
            live += rq[i].live;
        while (step < steps && nreq < MAX_REQ && live++ < 10 && test_rand(&s) % 100 < 25) {
            int plen = 1 + (int)(test_rand(&s) % 50);
            int use_prefix = test_rand(&s) % 2;
            random_prompt(&s, prompt, plen);
            if (use_prefix)
                memcpy(prompt, prefixes[test_rand(&s) % 4],
                       (size_t)(plen < 32 ? plen : 32) * sizeof(int32_t));
            int maxt = (int)(test_rand(&s) % (unsigned)(MODEL_LEN - plen + 1));
            int echo = test_rand(&s) % 8 == 0;
            if (maxt == 0 && !echo)
                maxt = 1;
            if (plen + maxt > MODEL_LEN)
                plen = MODEL_LEN - maxt;
            eng_request_t *r = make_req((uint64_t)nreq, prompt, plen, maxt,
                                        test_rand(&s) % 2 ? 0.0f : 1.0f, test_rand(&s));
            r->n = 1 + (int)(test_rand(&s) % MAX_N);
            r->ignore_eos = (int)(test_rand(&s) % 2);
            if (echo)
                r->sp.prompt_logprobs = (int)(test_rand(&s) % 3);
            if (test_rand(&s) % 4 == 0)
                r->sp.logprobs = (int)(test_rand(&s) % 4);
            if (test_rand(&s) % 3 == 0)
                add_stop(r, stops[test_rand(&s) % 5]);
            rq[nreq] = (sim_req_t){1, r->n, maxt, plen, echo, step, -1};
            submit_ok(e, r);
            nreq++;
        }
        /* Aborts of random requests, live or not. */
        if (nreq > 0 && test_rand(&s) % 100 < 4)
            eng_abort(e, test_rand(&s) % (unsigned)nreq);
        ASSERT_GE(eng_step(e), 0);
        check_sched(e);
        eng_event_t *ev = eng_poll(e);
        while (ev) {
            eng_event_t *next = ev->next;
            on_event(ev, step);
            eng_event_free(ev);
            ev = next;
        }
        for (int i = 0; i < nreq; i++)
            if (rq[i].live && step - rq[i].submitted_at > MAX_AGE) {
                fprintf(stderr, "request %d waits since step %d (now %d)\n", i,
                        rq[i].submitted_at, step);
                for (sched_req_t *x = eng_sched(e)->reqs; x; x = x->next)
                    for (int k = 0; k < x->r->n; k++)
                        fprintf(stderr, "  req %llu.%d state %d len %d computed %d blocks %d\n",
                                (unsigned long long)x->r->id, k, x->seqs[k].state,
                                x->seqs[k].len, x->seqs[k].num_computed,
                                x->seqs[k].n_blocks);
                return 1;
            }
    }
    eng_stats_t st;
    eng_get_stats(e, &st);
    ASSERT_EQ(st.running + st.waiting, 0);
    ASSERT_EQ(st.kv_blocks_used, 0);
    ASSERT_EQ(eng_sched(e)->blk.num_free, eng_sched(e)->blk.num_blocks);
    ASSERT_EQ(st.requests_finished, (uint64_t)nreq);
    int aborted = 0, stopped = 0, longest = 0;
    uint64_t ids_seen = 0, prompt_tokens = 0;
    for (int i = 0; i < nreq; i++) {
        ASSERT_EQ(rq[i].live, 0);
        if (rq[i].ended_at - rq[i].submitted_at > longest)
            longest = rq[i].ended_at - rq[i].submitted_at;
        for (int k = 0; k < rq[i].n; k++) {
            sim_choice_t *c = &ch[i][k];
            ASSERT_EQ(c->finishes, 1);
            ASSERT_EQ(c->late, 0);
            ASSERT_EQ(c->completion_tokens, c->n_ids);
            ASSERT_LE(c->prompt_events, 1);
            if (rq[i].echo && c->finish != ENG_FINISH_ABORT)
                ASSERT_EQ(c->prompt_events, 1);
            if (c->finish == ENG_FINISH_LENGTH)
                ASSERT_EQ(c->n_ids, rq[i].max_tokens);
            ids_seen += (uint64_t)c->n_ids;
            prompt_tokens += (uint64_t)rq[i].prompt_len;
            aborted += c->finish == ENG_FINISH_ABORT;
            stopped += c->finish == ENG_FINISH_STOP;
            ASSERT_TRUE(c->finish != ENG_FINISH_ERROR);
        }
    }
    /* Every sampled token reached its choice once: none lost, none duplicated. */
    ASSERT_EQ(st.generation_tokens, ids_seen);
    ASSERT_EQ(st.prompt_tokens, prompt_tokens);
    printf("sim: %d steps, %d requests, %d choices aborted, %d stopped, %llu preemptions, "
           "prefix cache %llu/%llu tokens, longest request %d steps\n",
           (int)st.steps, nreq, aborted, stopped, (unsigned long long)st.preemptions,
           (unsigned long long)st.prefix_cache_hits,
           (unsigned long long)st.prefix_cache_queries, longest);
    ASSERT_GT(st.preemptions, 0);
    ASSERT_GT(st.prefix_cache_hits, 0);
    ASSERT_GT(aborted, 0);
    eng_free(e);
    tok_free(tok);
    puts("sched_sim: ok");
    return 0;
}
