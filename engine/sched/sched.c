/* sched.c - one scheduler step: pick the batch, run the model, sample, emit events.
 *
 * vLLM-style: running sequences that decode get their one token first (oldest first), what
 * is left of the token budget goes to running sequences still in their prompt, then to
 * waiting sequences in arrival order (chunked prefill), at most max_num_seqs at once; in a
 * step that also decodes, prompt chunks share at most prefill_cap() tokens. When
 * a sequence needs a block and none is free, the most recently admitted running sequence is
 * preempted: its blocks are dropped and it recomputes its prompt and generated tokens later
 * (mostly from the prefix cache). Its RNG and text state are untouched, so it streams on
 * where it left off. Sequence bookkeeping and events are in seq.c.
 * Scheduler thread only. Nothing is allocated per step: events are recycled (event.c).
 */
#include "engine/sched/scheduler.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "engine/sched/seq.h"

int sched_is_eos(const sched_t *s, int32_t id)
{
    for (int i = 0; i < s->n_eos; i++)
        if (s->eos[i] == id)
            return 1;
    return 0;
}

int sched_init(sched_t *s, model_t *model, kv_cache_t *kv, const tok_t *tok,
               const sched_limits_t *lim, uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    list_init(&s->waiting.head);
    list_init(&s->running.head);
    const model_desc_t *cfg = model_describe(model);
    if (lim->max_num_seqs <= 0 || lim->max_num_batched_tokens <= 0 || lim->max_model_len <= 0)
        return -EINVAL;
    s->lim = *lim;
    s->model = model;
    s->kv = kv;
    s->tok = tok;
    s->V = cfg->vocab_size;
    if (tok && tok_eos_id(tok) >= 0)
        s->eos[s->n_eos++] = tok_eos_id(tok);
    for (int i = 0; tok && i < cfg->n_eos; i++)
        if (!sched_is_eos(s, cfg->eos[i]))
            s->eos[s->n_eos++] = cfg->eos[i];
    s->block_size = kv->block_size;
    s->max_blocks = (lim->max_model_len + kv->block_size - 1) / kv->block_size;
    /* model_reserve wants no more logit rows than rows. */
    s->max_logits = lim->max_num_seqs + SCHED_PROMPT_LOGIT_ROWS;
    if (s->max_logits > lim->max_num_batched_tokens)
        s->max_logits = lim->max_num_batched_tokens;
    s->seed_state = seed;
    int rc = blk_init(&s->blk, kv->num_blocks, kv->block_size);
    if (rc < 0)
        return rc;
    size_t T = (size_t)lim->max_num_batched_tokens, B = (size_t)lim->max_num_seqs;
    s->ent = calloc(B, sizeof(*s->ent));
    s->tok_buf = malloc(T * sizeof(int32_t));
    s->pos = malloc(T * sizeof(int32_t));
    s->slot = malloc(T * sizeof(int32_t));
    s->seq_start = malloc((B + 1) * sizeof(int32_t));
    s->ctx_len = malloc(B * sizeof(int32_t));
    s->tables = malloc(B * sizeof(*s->tables));
    s->logit_rows = malloc((size_t)s->max_logits * sizeof(int32_t));
    s->logits = malloc((size_t)s->max_logits * (size_t)s->V * sizeof(float));
    s->work = malloc((size_t)s->V * sizeof(float));
    s->fork_row = malloc((size_t)s->V * sizeof(float));
    s->smp_scratch = malloc(smp_scratch_bytes(s->V));
    /* Room for one token's text after stop strings of up to 256 bytes; requests with longer
     * ones grow it when they arrive (seq_req_new). */
    s->text_cap = DETOK_STEP_BYTES + 256;
    s->text = malloc(s->text_cap);
    s->evc = ev_cache_new();
    if (!s->ent || !s->tok_buf || !s->pos || !s->slot || !s->seq_start || !s->ctx_len ||
        !s->tables || !s->logit_rows || !s->logits || !s->work || !s->fork_row || !s->smp_scratch ||
        !s->text || !s->evc) {
        sched_free(s);
        return -ENOMEM;
    }
    return 0;
}

void sched_free(sched_t *s)
{
    if (!s)
        return;
    while (s->reqs) {
        sched_req_t *r = s->reqs;
        s->reqs = r->next;
        seq_req_free(r);
    }
    eng_event_t *ev = s->ev_head;
    while (ev) {
        eng_event_t *next = ev->next;
        eng_event_free(ev);
        ev = next;
    }
    ev_cache_close(s->evc);
    blk_free(&s->blk);
    free(s->ent);
    free(s->tok_buf);
    free(s->pos);
    free(s->slot);
    free(s->seq_start);
    free(s->ctx_len);
    free(s->tables);
    free(s->logit_rows);
    free(s->logits);
    free(s->work);
    free(s->fork_row);
    free(s->smp_scratch);
    free(s->text);
    memset(s, 0, sizeof(*s));
}

int sched_has_work(const sched_t *s)
{
    return s->waiting.count > 0 || s->running.count > 0;
}

/* ---- scheduling ---------------------------------------------------------------------- */

typedef struct plan {
    int budget;       /* tokens left in this step */
    int logits_left;  /* logit rows left */
    int prefill_left; /* prompt tokens left in this step (see the top of the file) */
} plan_t;

/* Steps over which a backlog of prompt tokens is spread while sequences decode. */
#define PREFILL_DRAIN_STEPS 4

/* Prompt (or recompute) tokens not yet computed: of running sequences not yet scheduled in
 * this step and of every waiting sequence. */
static int prompt_backlog(const sched_t *s)
{
    long n = 0;
    for (const sched_seq_t *q = sched_list_first(&s->running); q;
         q = sched_list_next(&s->running, q))
        if (q->entry < 0 && q->len - q->num_computed > 1)
            n += q->len - q->num_computed;
    for (const sched_seq_t *q = sched_list_first(&s->waiting); q && n < INT_MAX / 2;
         q = sched_list_next(&s->waiting, q))
        n += q->len - q->num_computed;
    return n < INT_MAX / 2 ? (int)n : INT_MAX / 2;
}

/* The prefill cap, the one place its rule is explained: in a step that decodes D sequences,
 * with N = max_prefill_decoding, prompt chunks together get at most
 * max(N - D, N / 4, min(N, backlog / PREFILL_DRAIN_STEPS)) tokens (at least 1). The step's
 * time is about linear in its rows, so this bounds the gap between two tokens of a running
 * stream (a 480-token prefill next to 32 decodes would stretch that step about sixfold),
 * while few decodes leave prompts most of it and many still leave them a quarter. The last
 * term is for prompts arriving faster than that: a backlog (prompt tokens not yet computed,
 * waiting or admitted) raises the share up to N, so it drains instead of queueing without
 * end (64 streams of 64-token prompts and 128 new tokens bring 32 prompt tokens a step,
 * twice the quarter). A step with nothing to decode, or N = 0, has no cap beyond the
 * budget. Sets *backlog_out to the backlog it saw. */
static int prefill_cap(const sched_t *s, int *backlog_out)
{
    const int cap = s->lim.max_prefill_decoding;
    int p = cap - s->n_ent;
    p = p > cap / 4 ? p : cap / 4;
    int backlog = prompt_backlog(s);
    int drain = (backlog + PREFILL_DRAIN_STEPS - 1) / PREFILL_DRAIN_STEPS;
    drain = drain < cap ? drain : cap;
    p = p > drain ? p : drain;
    *backlog_out = backlog;
    return p > 1 ? p : 1;
}

/* Tokens a prompt chunk may take now. */
static int prefill_room(const plan_t *pl)
{
    return pl->budget < pl->prefill_left ? pl->budget : pl->prefill_left;
}

static int blocks_for(const sched_t *s, int tokens)
{
    return (tokens + s->block_size - 1) / s->block_size;
}

/* 1 while the request still wants this sequence's prompt rows as logprobs. */
static int wants_prompt_lps(const sched_seq_t *q)
{
    const sched_req_t *r = q->req;
    return q->index == 0 && r->prompt_lps && !r->prompt_sent;
}

/* Logit rows a chunk of n tokens from q->num_computed needs. */
static int logit_rows_for(const sched_seq_t *q, int n)
{
    if (wants_prompt_lps(q))
        return n;
    return q->num_computed + n == q->len ? 1 : 0;
}

/* Cuts n so the chunk's logit rows fit; 0 if nothing fits. */
static int fit_logits(const sched_seq_t *q, int n, const plan_t *pl)
{
    if (wants_prompt_lps(q))
        return n < pl->logits_left ? n : pl->logits_left;
    if (logit_rows_for(q, n) <= pl->logits_left)
        return n;
    return n - 1; /* stop one short of sampling; the next step samples */
}

static void add_entry(sched_t *s, plan_t *pl, sched_seq_t *q, int n, int prefill)
{
    sched_entry_t *e = &s->ent[s->n_ent];
    e->seq = q;
    e->start = q->num_computed;
    e->n = n;
    e->n_logits = logit_rows_for(q, n);
    e->prefill = prefill;
    q->entry = s->n_ent++;
    pl->budget -= n;
    pl->logits_left -= e->n_logits;
    if (prefill)
        pl->prefill_left -= n;
}

/* Takes running sequence q out of the batch and the cache; it waits at the front. */
static void preempt(sched_t *s, plan_t *pl, sched_seq_t *q)
{
    if (q->entry >= 0) {
        sched_entry_t *e = &s->ent[q->entry];
        pl->budget += e->n;
        pl->logits_left += e->n_logits;
        if (e->prefill)
            pl->prefill_left += e->n;
        e->seq = NULL;
        q->entry = -1;
    }
    seq_release_blocks(s, q);
    seq_list_remove(&s->running, q);
    q->state = SCHED_WAITING;
    seq_list_push_front(&s->waiting, q);
    s->stats.preemptions++;
    s->last.preempted++;
}

/* Appends blocks until q's table covers tokens; they must be free. */
static void grow(sched_t *s, sched_seq_t *q, int tokens)
{
    while (q->n_blocks < blocks_for(s, tokens))
        q->blocks[q->n_blocks++] = blk_alloc(&s->blk);
}

/* Tokens q can hold beyond what it has computed with its blocks plus every free block. */
static int room(const sched_t *s, const sched_seq_t *q)
{
    return (q->n_blocks + s->blk.num_free) * s->block_size - q->num_computed;
}

/* Makes room for n new tokens of running sequence q, preempting the newest running
 * sequences while there is none. A prompt chunk (shrink) is cut to the room there is
 * rather than preempt. Returns the tokens granted; 0 if q itself was preempted. */
static int reserve(sched_t *s, plan_t *pl, sched_seq_t *q, int n, int shrink)
{
    for (;;) {
        int r = room(s, q);
        if (r >= n || (shrink && r > 0)) {
            n = r < n ? r : n;
            grow(s, q, q->num_computed + n);
            return n;
        }
        sched_seq_t *victim = sched_list_last(&s->running);
        preempt(s, pl, victim);
        if (victim == q)
            return 0;
    }
}

/* Shares the cached full blocks of q's leading tokens (always leaving at least one token to
 * compute, whose logits are needed). Returns the tokens found. */
static int match_prefix(sched_t *s, sched_seq_t *q)
{
    int bs = s->block_size, limit = (q->len - 1) / bs;
    uint64_t parent = BLK_ROOT_HASH, h;
    for (int i = 0; i < limit; i++) {
        int32_t b = blk_lookup(&s->blk, parent, &q->tokens[(size_t)i * (size_t)bs], &h);
        if (b < 0)
            break;
        blk_incref(&s->blk, b);
        q->blocks[q->n_blocks] = b;
        q->block_hash[q->n_blocks++] = h;
        parent = h;
    }
    q->n_hashed = q->n_blocks;
    q->num_computed = q->n_blocks * bs;
    return q->num_computed;
}

/* Admits waiting sequences in arrival order while budget, sequence slots and blocks last. */
static void admit_waiting(sched_t *s, plan_t *pl)
{
    sched_seq_t *q;
    while ((q = sched_list_first(&s->waiting)) && prefill_room(pl) > 0 &&
           s->running.count < s->lim.max_num_seqs && s->n_ent < s->lim.max_num_seqs) {
        int n_prompt = q->req->r->prompt_len;
        int cached = wants_prompt_lps(q) ? 0 : match_prefix(s, q);
        int n = q->len - q->num_computed;
        n = n < prefill_room(pl) ? n : prefill_room(pl);
        n = fit_logits(q, n, pl);
        /* Leave a few blocks to the running sequences (1% of the pool, as vLLM's
         * watermark): admitting into the last free blocks only preempts someone at the
         * next block boundary. With nothing running, everything may be taken. */
        int wm = s->running.count > 0 ? 1 + s->blk.num_blocks / 100 : 0;
        int r = room(s, q) - wm * s->block_size;
        /* A preempted sequence comes back only when all it must recompute fits: taking
         * part of it would just be preempted again at the next block boundary. */
        if (q->len > n_prompt && r < q->len - q->num_computed)
            r = 0;
        n = n < r ? n : r;
        if (n <= 0) {
            seq_release_blocks(s, q); /* first come, first served: wait for blocks */
            return;
        }
        if (!q->was_admitted) {
            q->was_admitted = 1;
            if (q->index == 0)
                s->waiting_reqs--;
            q->cached_tokens = cached < n_prompt ? cached : n_prompt;
            s->stats.prefix_cache_queries += (uint64_t)n_prompt;
            s->stats.prefix_cache_hits += (uint64_t)q->cached_tokens;
        }
        grow(s, q, q->num_computed + n);
        seq_list_remove(&s->waiting, q);
        q->state = SCHED_RUNNING;
        q->admitted = ++s->admit_counter;
        seq_list_push_back(&s->running, q);
        add_entry(s, pl, q, n, 1);
    }
}

static void schedule(sched_t *s)
{
    plan_t pl = {s->lim.max_num_batched_tokens, s->max_logits, s->lim.max_num_batched_tokens};
    s->n_ent = 0;
    /* 1. Decodes of running sequences, oldest first. */
    for (sched_seq_t *q = sched_list_first(&s->running); q && pl.budget > 0;) {
        if (q->len - q->num_computed != 1 || q->entry >= 0) {
            q = sched_list_next(&s->running, q);
            continue;
        }
        if (reserve(s, &pl, q, 1, 0) == 0)
            break; /* q was the newest and is preempted; nothing newer is left */
        add_entry(s, &pl, q, 1, 0);
        q = sched_list_next(&s->running, q);
    }
    if (s->n_ent > 0 && s->lim.max_prefill_decoding > 0) {
        pl.prefill_left = prefill_cap(s, &s->last.prefill_backlog);
        s->last.prefill_cap = pl.prefill_left;
    }
    /* 2. Running sequences still in their prompt (or recomputing), oldest first. */
    for (sched_seq_t *q = sched_list_first(&s->running); q && prefill_room(&pl) > 0;) {
        int left = q->len - q->num_computed;
        if (left <= 1 || q->entry >= 0) {
            q = sched_list_next(&s->running, q);
            continue;
        }
        int n = fit_logits(q, left < prefill_room(&pl) ? left : prefill_room(&pl), &pl);
        if (n > 0) {
            int got = reserve(s, &pl, q, n, 1);
            if (got > 0)
                add_entry(s, &pl, q, got, 1);
        }
        if (q->state != SCHED_RUNNING)
            break;
        q = sched_list_next(&s->running, q);
    }
    /* 3. Waiting sequences, unless this step had to preempt: blocks are short. */
    if (s->last.preempted == 0)
        admit_waiting(s, &pl);
}

/* ---- the batch ----------------------------------------------------------------------- */

/* Lays the scheduled chunks out as model_forward's flattened batch. */
static void build_batch(sched_t *s, model_batch_t *b)
{
    int T = 0, B = 0, nl = 0, bs = s->block_size;
    for (int i = 0; i < s->n_ent; i++) {
        sched_entry_t *e = &s->ent[i];
        sched_seq_t *q = e->seq;
        if (!q)
            continue;
        s->seq_start[B] = T;
        s->ctx_len[B] = e->start + e->n;
        s->tables[B] = q->blocks;
        for (int j = 0; j < e->n; j++) {
            int p = e->start + j;
            s->tok_buf[T + j] = q->tokens[p];
            s->pos[T + j] = p;
            s->slot[T + j] = q->blocks[p / bs] * bs + p % bs;
        }
        e->logit0 = nl;
        /* Either every row (prompt logprobs) or the last one (sampling) or none. */
        for (int j = e->n - e->n_logits; j < e->n; j++)
            s->logit_rows[nl++] = T + j;
        if (e->n == 1 && e->start == q->len - 1 && q->len > q->req->r->prompt_len) {
            s->last.n_decode++;
            s->last.decode_tokens++;
        } else {
            s->last.prefill_tokens += e->n;
        }
        T += e->n;
        B++;
    }
    s->seq_start[B] = T;
    s->last.n_seqs = B;
    *b = (model_batch_t){
        .T = T,
        .tokens = s->tok_buf,
        .pos = s->pos,
        .slot = s->slot,
        .B = B,
        .seq_start = s->seq_start,
        .ctx_len = s->ctx_len,
        .block_table = s->tables,
        .n_logits = nl,
        .logit_rows = s->logit_rows,
        .logits = s->logits,
    };
}

/* After the forward pass: advance each chunk, cache its full blocks, collect prompt
 * logprobs, and sample where the chunk reached the end of the sequence's tokens. */
static void finish_entry(sched_t *s, sched_entry_t *e)
{
    sched_seq_t *q = e->seq;
    sched_req_t *r = q->req;
    if (s->logits_cb)
        for (int j = 0; j < e->n_logits; j++)
            s->logits_cb(s->logits_arg, q, e->start + e->n - e->n_logits + j,
                         &s->logits[(size_t)(e->logit0 + j) * (size_t)s->V]);
    q->entry = -1;
    q->num_computed += e->n;
    seq_register_blocks(s, q);
    if (wants_prompt_lps(q))
        seq_prompt_logprobs(s, q, e->start, e->n, &s->logits[(size_t)e->logit0 * (size_t)s->V]);
    if (q->num_computed < q->len)
        return;
    float *row = &s->logits[(size_t)(e->logit0 + e->n_logits - 1) * (size_t)s->V];
    if (r->r->max_tokens == 0) {
        seq_finish_request(s, r, ENG_FINISH_LENGTH); /* scoring only: no completion */
        return;
    }
    if (q->index == 0 && q->len == r->r->prompt_len && r->r->n > 1)
        seq_fork(s, q, row);
    seq_sample(s, q, row);
}

int sched_step(sched_t *s)
{
    double t0 = clock_now_sec();
    memset(&s->last, 0, sizeof(s->last));
    schedule(s);
    model_batch_t b;
    build_batch(s, &b);
    double t1 = clock_now_sec();
    if (b.B == 0) {
        s->stats.schedule_seconds += t1 - t0;
        return 0;
    }
    int rc = model_forward(s->model, s->kv, &b);
    double t2 = clock_now_sec();
    s->stats.steps++;
    s->stats.forward_tokens += (uint64_t)b.T;
    s->computed_tokens += (uint64_t)b.T;
    for (int i = 0; i < s->n_ent; i++) {
        sched_entry_t *e = &s->ent[i];
        if (!e->seq)
            continue;
        if (rc < 0) {
            e->seq->entry = -1;
            seq_finish_request(s, e->seq->req, ENG_FINISH_ERROR);
            continue;
        }
        finish_entry(s, e);
    }
    s->n_ent = 0;
    seq_reap(s);
    double t3 = clock_now_sec();
    s->last.forward_sec = t2 - t1;
    s->last.step_sec = t3 - t0;
    s->stats.schedule_seconds += t1 - t0;
    s->stats.forward_seconds += t2 - t1;
    s->stats.sample_seconds += t3 - t2;
    return rc < 0 ? rc : 1;
}

/* ---- requests in, events out --------------------------------------------------------- */

int sched_add(sched_t *s, eng_request_t *r)
{
    sched_req_t *req;
    int rc = seq_req_new(s, r, &req);
    if (rc < 0)
        return rc;
    req->next = s->reqs;
    s->reqs = req;
    s->stats.prompt_tokens += (uint64_t)r->prompt_len * (uint64_t)r->n;
    return 0;
}

void sched_reject(sched_t *s, eng_request_t *r, int finish)
{
    seq_reject(s, r, finish);
}

int sched_abort(sched_t *s, uint64_t id)
{
    for (sched_req_t *r = s->reqs; r; r = r->next) {
        if (r->r->id == id && r->n_unfinished > 0) {
            seq_finish_request(s, r, ENG_FINISH_ABORT);
            seq_reap(s);
            return 1;
        }
    }
    return 0;
}

void sched_abort_all(sched_t *s)
{
    for (sched_req_t *r = s->reqs; r; r = r->next)
        if (r->n_unfinished > 0)
            seq_finish_request(s, r, ENG_FINISH_ABORT);
    seq_reap(s);
}

eng_event_t *sched_take_events(sched_t *s)
{
    eng_event_t *ev = s->ev_head;
    s->ev_head = s->ev_tail = NULL;
    return ev;
}

void sched_get_stats(const sched_t *s, eng_stats_t *st)
{
    *st = s->stats;
    st->running = s->running.count;
    st->waiting = s->waiting.count + s->n_fork;
    st->kv_blocks_total = s->blk.num_blocks;
    st->kv_blocks_used = s->blk.num_blocks - s->blk.num_free;
}
