/* seq.c - the scheduler's sequences and requests: lifetimes, lists, blocks, sampling, text,
 * stops and events (seq.h). Scheduler thread only.
 *
 * Ownership: a sched_req_t owns the eng_request_t it was given and one sched_seq_t per
 * completion; each sequence owns its token array, block table and text state. Events are
 * allocated here, handed to engine.c by sched_take_events, and freed by whoever polls them.
 */
#include "engine/sched/seq.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- lists --------------------------------------------------------------------------- */

void seq_list_push_back(sched_list_t *l, sched_seq_t *q)
{
    q->next = NULL;
    q->prev = l->tail;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    l->count++;
}

void seq_list_push_front(sched_list_t *l, sched_seq_t *q)
{
    q->prev = NULL;
    q->next = l->head;
    if (l->head)
        l->head->prev = q;
    else
        l->tail = q;
    l->head = q;
    l->count++;
}

void seq_list_insert_after(sched_list_t *l, sched_seq_t *after, sched_seq_t *q)
{
    if (!after) {
        seq_list_push_front(l, q);
        return;
    }
    q->prev = after;
    q->next = after->next;
    if (after->next)
        after->next->prev = q;
    else
        l->tail = q;
    after->next = q;
    l->count++;
}

void seq_list_remove(sched_list_t *l, sched_seq_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        l->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->tail = q->prev;
    q->prev = q->next = NULL;
    l->count--;
}

/* ---- requests ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Completion 0 uses the request's seed as is, so n = 1 and the first of n > 1 draw the
 * same tokens; the others get seeds derived from it and their index. */
static uint64_t choice_seed(uint64_t seed, int k)
{
    if (k == 0)
        return seed;
    uint64_t x = seed ^ ((uint64_t)k * 0xd1b54a32d192ed03ULL);
    return splitmix64(&x);
}

static void seq_free_parts(sched_seq_t *q)
{
    free(q->tokens);
    free(q->blocks);
    free(q->block_hash);
    detok_free(&q->dt);
}

void seq_req_free(sched_req_t *r)
{
    if (!r)
        return;
    if (r->seqs)
        for (int k = 0; k < r->r->n; k++)
            seq_free_parts(&r->seqs[k]);
    free(r->seqs);
    free(r->prompt_lps);
    eng_request_free(r->r);
    free(r);
}

int seq_req_new(sched_t *s, eng_request_t *er, sched_req_t **out)
{
    sched_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->seqs = calloc((size_t)er->n, sizeof(*r->seqs));
    if (!r->seqs)
        goto fail;
    if (er->sp.prompt_logprobs >= 0) {
        r->prompt_lps = calloc((size_t)er->prompt_len, sizeof(*r->prompt_lps));
        if (!r->prompt_lps)
            goto fail;
        /* Nothing precedes the first token: it has no logprob (OpenAI sends null). */
        r->prompt_lps[0].id = er->prompt[0];
        r->prompt_lps[0].logprob = NAN;
        r->prompt_lp_next = 1;
    }
    uint64_t seed = er->sp.has_seed ? er->sp.seed : splitmix64(&s->seed_state);
    size_t need_text = 0;
    for (int k = 0; k < er->n; k++) {
        sched_seq_t *q = &r->seqs[k];
        q->req = r;
        q->index = k;
        q->entry = -1;
        q->tokens = malloc((size_t)s->lim.max_model_len * sizeof(int32_t));
        q->blocks = malloc((size_t)s->max_blocks * sizeof(int32_t));
        q->block_hash = malloc((size_t)s->max_blocks * sizeof(uint64_t));
        if (!q->tokens || !q->blocks || !q->block_hash ||
            detok_init(&q->dt, er->stop, er->n_stop) < 0)
            goto fail;
        memcpy(q->tokens, er->prompt, (size_t)er->prompt_len * sizeof(int32_t));
        q->len = er->prompt_len;
        smp_rng_seed(&q->rng, choice_seed(seed, k));
        if (q->dt.cap > need_text)
            need_text = q->dt.cap;
    }
    if (need_text > s->text_cap) {
        char *t = realloc(s->text, need_text);
        if (!t)
            goto fail;
        s->text = t;
        s->text_cap = need_text;
    }
    /* Committed: nothing below fails. */
    s->waiting_reqs++;
    r->r = er;
    r->n_unfinished = er->n;
    for (int k = 0; k < er->n; k++) {
        sched_seq_t *q = &r->seqs[k];
        if (k == 0) {
            q->state = SCHED_WAITING;
            seq_list_push_back(&s->waiting, q);
        } else {
            q->state = SCHED_FORK;
            s->n_fork++;
        }
    }
    *out = r;
    return 0;
fail:
    if (r->seqs)
        for (int k = 0; k < er->n; k++)
            seq_free_parts(&r->seqs[k]);
    free(r->seqs);
    free(r->prompt_lps);
    free(r);
    return -ENOMEM;
}

void seq_reap(sched_t *s)
{
    sched_req_t **p = &s->reqs;
    while (*p) {
        sched_req_t *r = *p;
        if (r->n_unfinished == 0) {
            *p = r->next;
            seq_req_free(r);
        } else {
            p = &r->next;
        }
    }
}

/* ---- blocks -------------------------------------------------------------------------- */

void seq_release_blocks(sched_t *s, sched_seq_t *q)
{
    for (int i = 0; i < q->n_blocks; i++)
        blk_decref(&s->blk, q->blocks[i]);
    q->n_blocks = 0;
    q->n_hashed = 0;
    q->num_computed = 0;
}

void seq_register_blocks(sched_t *s, sched_seq_t *q)
{
    int bs = s->block_size;
    while ((q->n_hashed + 1) * bs <= q->num_computed) {
        int i = q->n_hashed;
        uint64_t parent = i ? q->block_hash[i - 1] : BLK_ROOT_HASH;
        const int32_t *t = &q->tokens[(size_t)i * (size_t)bs];
        uint64_t h = blk_hash(parent, t, bs);
        q->block_hash[i] = h;
        blk_register(&s->blk, q->blocks[i], parent, h, t);
        q->n_hashed++;
    }
}

/* ---- events -------------------------------------------------------------------------- */

/* Queues one event for completion q. ids, text and lps are copied. If memory runs out
 * the event is dropped: nothing else can be done for it here. */
static void emit(sched_t *s, const sched_seq_t *q, const int32_t *ids, int n_ids,
                 const char *text, size_t text_len, const eng_logprob_t *lps, int n_lps,
                 int finish, int is_prompt)
{
    const eng_request_t *r = q->req->r;
    size_t extra = (size_t)n_lps * sizeof(eng_logprob_t) + (size_t)n_ids * sizeof(int32_t) +
                   text_len + 1;
    eng_event_t *ev = ev_alloc(s->evc, extra);
    if (!ev)
        return;
    char *p = (char *)(ev + 1);
    if (n_lps > 0) {
        ev->lps = (eng_logprob_t *)p;
        memcpy(ev->lps, lps, (size_t)n_lps * sizeof(*lps));
        ev->n_lps = n_lps;
        p += (size_t)n_lps * sizeof(*lps);
    }
    ev->ids = (int32_t *)p;
    if (n_ids > 0)
        memcpy(ev->ids, ids, (size_t)n_ids * sizeof(*ids));
    ev->n_ids = n_ids;
    p += (size_t)n_ids * sizeof(*ids);
    ev->text = p;
    if (text_len > 0)
        memcpy(ev->text, text, text_len);
    ev->text[text_len] = '\0';
    ev->text_len = text_len;
    ev->req_id = r->id;
    ev->user = r->user;
    ev->index = r->index_base + q->index;
    ev->is_prompt = is_prompt;
    ev->finish = finish;
    ev->cached_tokens = q->cached_tokens;
    if (finish != ENG_FINISH_NONE) {
        ev->prompt_tokens = r->prompt_len;
        ev->completion_tokens = q->len - r->prompt_len;
    }
    if (s->ev_tail)
        s->ev_tail->next = ev;
    else
        s->ev_head = ev;
    s->ev_tail = ev;
}

void seq_reject(sched_t *s, eng_request_t *r, int finish)
{
    static const char oom[] = "out of memory";
    const char *text = finish == ENG_FINISH_ERROR ? oom : "";
    size_t len = finish == ENG_FINISH_ERROR ? sizeof(oom) - 1 : 0;
    for (int k = 0; k < r->n; k++) {
        eng_event_t *ev = ev_alloc(s->evc, len + 1);
        if (!ev)
            break;
        ev->req_id = r->id;
        ev->user = r->user;
        ev->index = r->index_base + k;
        ev->text = (char *)(ev + 1);
        memcpy(ev->text, text, len);
        ev->text_len = len;
        ev->finish = finish;
        ev->prompt_tokens = r->prompt_len;
        if (s->ev_tail)
            s->ev_tail->next = ev;
        else
            s->ev_head = ev;
        s->ev_tail = ev;
    }
    s->stats.requests_finished++;
    eng_request_free(r);
}

/* Takes q out of whatever list it is in and frees its blocks; no event. */
static void seq_end(sched_t *s, sched_seq_t *q)
{
    if (q->state == SCHED_RUNNING)
        seq_list_remove(&s->running, q);
    else if (q->state == SCHED_WAITING)
        seq_list_remove(&s->waiting, q);
    else if (q->state == SCHED_FORK)
        s->n_fork--;
    seq_release_blocks(s, q);
    if (q->index == 0 && !q->was_admitted)
        s->waiting_reqs--;
    q->state = SCHED_FINISHED;
    if (--q->req->n_unfinished == 0)
        s->stats.requests_finished++;
}

void seq_finish_request(sched_t *s, sched_req_t *r, int finish)
{
    static const char failed[] = "the model's forward pass failed";
    for (int k = 0; k < r->r->n; k++) {
        sched_seq_t *q = &r->seqs[k];
        if (q->state == SCHED_FINISHED)
            continue;
        if (finish == ENG_FINISH_ERROR)
            emit(s, q, NULL, 0, failed, sizeof(failed) - 1, NULL, 0, finish, 0);
        else
            emit(s, q, NULL, 0, "", 0, NULL, 0, finish, 0);
        seq_end(s, q);
    }
}

void seq_prompt_logprobs(sched_t *s, sched_seq_t *q, int start, int n, const float *logits)
{
    sched_req_t *r = q->req;
    const eng_request_t *er = r->r;
    for (int j = 0; j < n; j++) {
        int t = start + j + 1; /* row start + j predicts token t */
        if (t >= er->prompt_len)
            break;
        if (t < r->prompt_lp_next)
            continue; /* recomputed after a preemption: already have it */
        smp_logprobs(&logits[(size_t)j * (size_t)s->V], s->V, er->prompt[t],
                     er->sp.prompt_logprobs, &r->prompt_lps[t]);
        r->prompt_lp_next = t + 1;
    }
    if (r->prompt_lp_next < er->prompt_len)
        return;
    r->prompt_sent = 1;
    char *text = NULL;
    size_t len = 0;
    if (!s->tok || tok_decode(s->tok, er->prompt, (size_t)er->prompt_len, &text, &len) < 0)
        len = 0;
    for (int k = 0; k < er->n; k++)
        if (r->seqs[k].state != SCHED_FINISHED)
            emit(s, &r->seqs[k], er->prompt, er->prompt_len, text ? text : "", len,
                 r->prompt_lps, er->prompt_len, ENG_FINISH_NONE, 1);
    free(text);
}

/* ---- sampling ------------------------------------------------------------------------ */

void seq_sample(sched_t *s, sched_seq_t *q, float *row)
{
    const eng_request_t *r = q->req->r;
    const eng_sampling_t *sp = &r->sp;
    int P = r->prompt_len;
    float *x = row;
    if (sp->logprobs >= 0) {
        memcpy(s->work, row, (size_t)s->V * sizeof(float));
        x = s->work; /* the sampler modifies its row; logprobs want the raw one */
    }
    int32_t id = smp_sample(sp, x, s->V, q->tokens, P, q->tokens + P, q->len - P, &q->rng,
                            s->smp_scratch);
    eng_logprob_t lp;
    if (sp->logprobs >= 0)
        smp_logprobs(row, s->V, id, sp->logprobs, &lp);
    q->tokens[q->len++] = id;
    s->stats.generation_tokens++;

    int finish = ENG_FINISH_NONE, by_string = 0;
    size_t tl = 0;
    s->text[0] = '\0';
    if (sched_is_eos(s, id)) {
        /* Special tokens add no text (vLLM's skip_special_tokens). */
        if (!r->ignore_eos)
            finish = ENG_FINISH_STOP;
    } else if (s->tok && detok_push(&q->dt, s->tok, id, s->text, &tl) == 1) {
        finish = ENG_FINISH_STOP;
        by_string = 1;
    }
    if (finish == ENG_FINISH_NONE &&
        (q->len - P >= r->max_tokens || q->len >= s->lim.max_model_len))
        finish = ENG_FINISH_LENGTH;
    if (finish != ENG_FINISH_NONE && !by_string) {
        /* The end decides what was held back: out it goes, unless it holds a stop. */
        size_t more = 0;
        if (detok_finish(&q->dt, s->text + tl, &more) == 1)
            finish = ENG_FINISH_STOP;
        tl += more;
    }
    emit(s, q, &id, 1, s->text, tl, sp->logprobs >= 0 ? &lp : NULL, sp->logprobs >= 0,
         finish, 0);
    if (finish != ENG_FINISH_NONE)
        seq_end(s, q);
}

void seq_fork(sched_t *s, sched_seq_t *parent, const float *row)
{
    sched_req_t *r = parent->req;
    int P = r->r->prompt_len, bs = s->block_size, full = P / bs;
    sched_seq_t *behind = NULL; /* the last completion sent to wait */
    for (int k = 1; k < r->r->n; k++) {
        sched_seq_t *c = &r->seqs[k];
        if (c->state != SCHED_FORK)
            continue;
        s->n_fork--;
        for (int i = 0; i < full; i++) {
            c->blocks[i] = parent->blocks[i];
            c->block_hash[i] = parent->block_hash[i];
            blk_incref(&s->blk, c->blocks[i]);
        }
        c->n_blocks = c->n_hashed = full;
        c->cached_tokens = parent->cached_tokens;
        c->was_admitted = 1;
        int ok = s->running.count < s->lim.max_num_seqs;
        if (ok && P % bs) {
            /* Copy-on-write: the partly filled block will be written by both. */
            int32_t b = blk_alloc(&s->blk);
            if (b < 0) {
                ok = 0;
            } else {
                kv_cache_copy_block(s->kv, b, parent->blocks[full]);
                c->blocks[c->n_blocks++] = b;
            }
        }
        if (!ok) {
            /* No slot or block now: it waits, first in line as it came before everything
             * waiting, and recomputes (its full blocks from the prefix cache); its RNG is
             * untouched, so it draws the same tokens. */
            seq_release_blocks(s, c);
            c->state = SCHED_WAITING;
            seq_list_insert_after(&s->waiting, behind, c);
            behind = c;
            continue;
        }
        c->num_computed = P;
        c->state = SCHED_RUNNING;
        c->admitted = ++s->admit_counter;
        seq_list_push_back(&s->running, c);
        memcpy(s->fork_row, row, (size_t)s->V * sizeof(float));
        seq_sample(s, c, s->fork_row);
    }
}
