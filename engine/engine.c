/* engine.c - the engine service: model + KV pool + scheduler behind engine.h.
 *
 * DESIGN
 * - What runs where: eng_submit, eng_abort, eng_poll and eng_get_stats run on any thread
 *   (the server's loop thread). Everything else - the model, the KV pool, the block
 *   manager, every sequence - belongs to the scheduler thread started by eng_start, or,
 *   without eng_start, to the single thread calling eng_step.
 * - What is locked: one mutex (mu) guards the inbox (submitted requests), the abort list,
 *   the outbox (events), the stats snapshot and the stop flag. The scheduler thread takes
 *   the inbox and the aborts under the lock, works on its own state with the lock released,
 *   then appends the step's events to the outbox and refreshes the snapshot under the lock.
 *   eng_poll takes the whole outbox in one go.
 * - Who wakes whom: eng_submit, eng_abort and eng_free signal the condition variable the
 *   scheduler thread sleeps on when it has nothing to do (it never spins; while part of the
 *   KV pool was never written it first maps it, one chunk per idle turn). After queueing
 *   events into an empty outbox the scheduler thread calls the wake callback (outside the
 *   lock; the server writes an eventfd), at most once per step; into an outbox not yet
 *   polled it does not, as the poll that the earlier wake-up brings takes them too. The
 *   callback must not call back into the engine.
 */
#include "engine/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "engine/kernels/pool.h"
#include "engine/model/model.h"
#include "engine/sched/scheduler.h"
#include "engine/testing.h"

/* A request or an abort on its way to the scheduler thread. */
typedef struct eng_msg {
    struct eng_msg *next;
    eng_request_t *req; /* owned; NULL for an abort */
    uint64_t abort_id;
} eng_msg_t;

struct eng {
    model_t *model;   /* owned */
    kv_cache_t kv;    /* owned */
    const tok_t *tok; /* borrowed */
    sched_t sched;    /* owned; scheduler thread only */
    eng_info_t info;
    int max_waiting;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sync_init; /* mu and cv exist */
    pthread_t thread;
    int started;
    eng_wake_cb wake;
    void *wake_arg;

    /* Guarded by mu. */
    eng_msg_t *in_head, *in_tail; /* requests and aborts, in order */
    int in_requests;              /* requests in the inbox */
    eng_event_t *out_head, *out_tail;
    eng_stats_t stats;
    int waiting_reqs; /* the scheduler's requests not admitted yet, at its last publish */
    int stop;
    /* Wall seconds of the scheduler thread asleep with nothing to do, and in its rounds
     * outside sched_step (taking the inbox, applying it, publishing events, the wake);
     * written by it with mu held, up to the end of its last round. */
    double idle_sec, handoff_sec;
    double idle_since; /* when its current sleep (or idle turn) began; 0 while busy */
    size_t kv_touched; /* bytes of the KV pool from its start already written (scheduler) */
};

/* The pool size: num_kv_blocks, else kv_cache_memory, else what max_num_seqs sequences of
 * max_model_len need, up to 1 GiB. */
static int pool_blocks(const eng_params_t *p, size_t block_bytes, int max_model_len,
                       int max_num_seqs, int block_size)
{
    if (p->num_kv_blocks > 0)
        return p->num_kv_blocks;
    size_t bytes = p->kv_cache_memory;
    if (bytes == 0) {
        size_t per_seq = (size_t)((max_model_len + block_size - 1) / block_size) * block_bytes;
        bytes = (size_t)1 << 30;
        if ((size_t)max_num_seqs * per_seq < bytes)
            bytes = (size_t)max_num_seqs * per_seq;
    }
    size_t n = bytes / block_bytes;
    return n > INT32_MAX / 4096 ? INT32_MAX / 4096 : (int)n;
}

/* What eng_init resolves from the parameters and the model before it allocates anything. */
typedef struct eng_plan {
    sched_limits_t lim;
    int block_size, kv_dtype, num_blocks;
    size_t block_bytes;
    char max_model_len_from[sizeof(((eng_info_t *)0)->max_model_len_from)];
} eng_plan_t;

/* Resolves the limits, the KV dtype and the pool's size from p and the loaded model, and
 * checks them. Returns 0, or -EINVAL with one line in err naming the setting and the numbers. */
static int eng_plan(eng_plan_t *pl, const eng_params_t *p, const model_t *model, const tok_t *tok,
                    char *err, size_t errlen)
{
    const model_desc_t *cfg = model_describe(model);
    memset(pl, 0, sizeof(*pl));
    sched_limits_t lim = {
        .max_num_seqs = p->max_num_seqs ? p->max_num_seqs : ENG_DEFAULT_MAX_NUM_SEQS,
        .max_num_batched_tokens = p->max_num_batched_tokens ? p->max_num_batched_tokens
                                                            : ENG_DEFAULT_MAX_NUM_BATCHED_TOKENS,
        .max_model_len = p->max_model_len ? p->max_model_len : cfg->max_pos,
        .max_prefill_decoding = p->max_prefill_tokens_decoding,
    };
    int bs = p->block_size ? p->block_size : 16;
    int kv_dtype = p->kv_cache_dtype;
    if (kv_dtype == ENG_DTYPE_AUTO)
        kv_dtype = model_kv_dtype_auto(model_dtype(model));
    if (kv_dtype != ENG_DTYPE_F32 && kv_dtype != ENG_DTYPE_F16) {
        snprintf(err, errlen, "kv_cache_dtype %s: the KV cache is kept in f32 or f16",
                 model_dtype_name(kv_dtype));
        return -EINVAL;
    }
    if (lim.max_model_len < 1 || lim.max_model_len > cfg->max_pos) {
        snprintf(err, errlen, "max_model_len %d is outside 1..%d (the model's maximum positions)",
                 lim.max_model_len, cfg->max_pos);
        return -EINVAL;
    }
    if (lim.max_num_seqs < 1 || lim.max_num_batched_tokens < 1 || bs < 1 || bs > 4096 ||
        p->max_waiting < 0 || lim.max_prefill_decoding < 0) {
        snprintf(err, errlen,
                 "engine limits must be positive: max_num_seqs %d, max_num_batched_tokens %d, "
                 "block_size %d, max_waiting %d, max_prefill_tokens_decoding %d",
                 lim.max_num_seqs, lim.max_num_batched_tokens, bs, p->max_waiting,
                 lim.max_prefill_decoding);
        return -EINVAL;
    }
    if (lim.max_num_batched_tokens < lim.max_num_seqs) {
        /* Decodes are scheduled oldest first: with fewer tokens than sequences per step the
         * newest running sequences would wait until the oldest ones end. */
        snprintf(err, errlen,
                 "max_num_batched_tokens %d is below max_num_seqs %d: every running sequence "
                 "needs a token per step",
                 lim.max_num_batched_tokens, lim.max_num_seqs);
        return -EINVAL;
    }
    if (tok && tok_vocab_size(tok) > cfg->vocab_size) {
        snprintf(err, errlen, "tokenizer has %d tokens but the model's vocab_size is %d",
                 tok_vocab_size(tok), cfg->vocab_size);
        return -EINVAL;
    }
    size_t block_bytes = model_kv_block_bytes(model, bs, kv_dtype);
    int nb = pool_blocks(p, block_bytes, lim.max_model_len, lim.max_num_seqs, bs);
    /* Unset, max_model_len is the model's maximum when the pool holds one such sequence,
     * else the most the pool holds (a 131072-position model would otherwise need GiBs of
     * KV cache before serving a short prompt). */
    if (p->max_model_len)
        snprintf(pl->max_model_len_from, sizeof(pl->max_model_len_from),
                 "the max_model_len setting");
    else if ((int64_t)nb * bs >= lim.max_model_len || nb < 1)
        snprintf(pl->max_model_len_from, sizeof(pl->max_model_len_from),
                 "the model's maximum positions");
    else {
        lim.max_model_len = nb * bs;
        snprintf(pl->max_model_len_from, sizeof(pl->max_model_len_from),
                 "the most the KV pool holds (the model allows %d)", cfg->max_pos);
    }
    /* One sequence of max_model_len must fit, or it could never finish: with that, the
     * oldest running sequence can always preempt the others and go on. */
    int need = (lim.max_model_len + bs - 1) / bs;
    if (nb < need) {
        snprintf(err, errlen,
                 "KV cache of %d blocks (%zu MiB; %zu KiB per block of %d tokens) cannot hold "
                 "one sequence of max_model_len %d (%d blocks): raise kv_cache_memory or lower "
                 "max_model_len",
                 nb, (size_t)nb * block_bytes >> 20, block_bytes >> 10, bs, lim.max_model_len,
                 need);
        return -EINVAL;
    }
    pl->lim = lim;
    pl->block_size = bs;
    pl->kv_dtype = kv_dtype;
    pl->num_blocks = nb;
    pl->block_bytes = block_bytes;
    return 0;
}

int eng_init(eng_t **out, const eng_params_t *p, const tok_t *tok, char *err, size_t errlen)
{
    *out = NULL;
    const double t0 = clock_now_sec();
    eng_t *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "engine: out of memory");
        return -ENOMEM;
    }
    int rc = model_load_progress(&e->model, p->model_dir, p->weight_dtype, p->kernel,
                                 p->load_progress, p->load_progress_arg, err, errlen);
    if (rc < 0)
        goto fail;
    /* model_load starts one compute thread per core; OpenBLAS stays single-threaded. */
    if (p->threads != 0) {
        rc = model_set_threads(e->model, p->threads);
        if (rc < 0) {
            snprintf(err, errlen,
                     "threads %d: cannot start that many compute threads (%s; "
                     "1..%d, or 0 = one per core)",
                     p->threads, strerror(-rc), POOL_MAX_THREADS);
            goto fail;
        }
    }
    eng_plan_t pl;
    rc = eng_plan(&pl, p, e->model, tok, err, errlen);
    if (rc < 0)
        goto fail;
    const model_desc_t *cfg = model_describe(e->model);
    e->tok = tok;
    const sched_limits_t lim = pl.lim;
    const int bs = pl.block_size, nb = pl.num_blocks, kv_dtype = pl.kv_dtype;
    const size_t block_bytes = pl.block_bytes;
    rc = model_kv_init(e->model, &e->kv, bs, nb, kv_dtype);
    if (rc < 0) {
        snprintf(err, errlen, "KV cache of %d blocks (%zu MiB): %s", nb,
                 (size_t)nb * block_bytes >> 20, strerror(-rc));
        goto fail;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rc = sched_init(&e->sched, e->model, &e->kv, tok, &lim,
                    (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20));
    if (rc == 0)
        rc = model_reserve(e->model, lim.max_num_batched_tokens, e->sched.max_logits,
                           lim.max_model_len);
    if (rc < 0) {
        snprintf(err, errlen, "engine step buffers (%d tokens, %d sequences): %s",
                 lim.max_num_batched_tokens, lim.max_num_seqs, strerror(-rc));
        goto fail;
    }
    if (pthread_mutex_init(&e->mu, NULL) != 0)
        goto fail_sync;
    if (pthread_cond_init(&e->cv, NULL) != 0) {
        pthread_mutex_destroy(&e->mu);
        goto fail_sync;
    }
    e->sync_init = 1;
    e->max_waiting = p->max_waiting;
    eng_info_t info = {
        .n_layer = cfg->n_layer,
        .n_head = cfg->n_head,
        .n_embd = cfg->n_embd,
        .n_ctx = cfg->max_pos,
        .vocab_size = cfg->vocab_size,
        .max_model_len = lim.max_model_len,
        .block_size = bs,
        .num_kv_blocks = nb,
        .weight_bytes = model_weight_bytes(e->model),
        .kv_bytes = (size_t)nb * block_bytes,
        .weight_dtype = model_dtype_name(model_dtype(e->model)),
        .kv_cache_dtype = model_dtype_name(kv_dtype),
        .kernel = model_kernel_name(e->model),
        .compute_threads = model_threads(e->model),
        .arch = cfg->arch,
        .n_kv_head = cfg->n_kv_head,
        .head_size = cfg->head_size,
    };
    memcpy(info.max_model_len_from, pl.max_model_len_from, sizeof(info.max_model_len_from));
    model_load_times_t lt;
    model_load_times(e->model, &lt);
    info.init_map_s = lt.map_s;
    info.init_fault_s = lt.fault_s;
    info.init_pack_s = lt.pack_s;
    info.init_rest_s = clock_now_sec() - t0 - lt.map_s - lt.fault_s - lt.pack_s;
    e->info = info;
    sched_get_stats(&e->sched, &e->stats);
    *out = e;
    return 0;
fail_sync:
    rc = -ENOMEM;
    snprintf(err, errlen, "engine: cannot create its lock");
fail:
    eng_free(e);
    return rc;
}

static void free_msgs(eng_msg_t *m)
{
    while (m) {
        eng_msg_t *next = m->next;
        eng_request_free(m->req);
        free(m);
        m = next;
    }
}

static void free_events(eng_event_t *ev)
{
    while (ev) {
        eng_event_t *next = ev->next;
        eng_event_free(ev);
        ev = next;
    }
}

void eng_free(eng_t *e)
{
    if (!e)
        return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    free_msgs(e->in_head);
    free_events(e->out_head);
    sched_free(&e->sched);
    kv_cache_free(&e->kv);
    model_free(e->model);
    if (e->sync_init) {
        pthread_cond_destroy(&e->cv);
        pthread_mutex_destroy(&e->mu);
    }
    free(e);
}

void eng_get_info(const eng_t *e, eng_info_t *info)
{
    *info = e->info;
}

/* Whether the engine could ever run r. */
static int request_valid(const eng_t *e, const eng_request_t *r)
{
    const eng_sampling_t *sp = &r->sp;
    if (!r->prompt || r->prompt_len < 1 || r->n < 1 || r->n > e->sched.lim.max_num_seqs ||
        r->max_tokens < 0 || (r->max_tokens == 0 && sp->prompt_logprobs < 0) ||
        (int64_t)r->prompt_len + r->max_tokens > e->info.max_model_len)
        return 0;
    for (int i = 0; i < r->prompt_len; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->info.vocab_size)
            return 0;
    if (r->n_stop < 0 || r->n_stop > ENG_MAX_STOPS || r->n_stop_ids < 0 ||
        r->n_stop_ids > ENG_MAX_STOP_IDS)
        return 0;
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] < 0 || r->stop_ids[i] >= e->info.vocab_size)
            return 0;
    for (int i = 0; i < r->n_stop; i++)
        if (!r->stop[i] || !r->stop[i][0])
            return 0;
    if (sp->logprobs < -1 || sp->logprobs > ENG_MAX_LOGPROBS || sp->prompt_logprobs < -1 ||
        sp->prompt_logprobs > ENG_MAX_LOGPROBS || sp->n_logit_bias < 0 ||
        (sp->n_logit_bias > 0 && (!sp->logit_bias_ids || !sp->logit_bias_values)))
        return 0;
    return 1;
}

int eng_submit(eng_t *e, eng_request_t *req)
{
    if (!request_valid(e, req))
        return -EINVAL;
    eng_msg_t *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->req = req;
    pthread_mutex_lock(&e->mu);
    if (e->max_waiting > 0 && e->waiting_reqs + e->in_requests >= e->max_waiting) {
        pthread_mutex_unlock(&e->mu);
        free(m);
        return -EAGAIN;
    }
    if (e->in_tail)
        e->in_tail->next = m;
    else
        e->in_head = m;
    e->in_tail = m;
    e->in_requests++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void eng_abort(eng_t *e, uint64_t req_id)
{
    eng_msg_t *m = calloc(1, sizeof(*m));
    pthread_mutex_lock(&e->mu);
    if (m) {
        m->abort_id = req_id;
        if (e->in_tail)
            e->in_tail->next = m;
        else
            e->in_head = m;
        e->in_tail = m;
    } else {
        /* Out of memory: still honour a cancel of a request not yet taken. */
        for (eng_msg_t *x = e->in_head; x; x = x->next)
            if (x->req && x->req->id == req_id)
                x->req->max_tokens = -1; /* marked: dropped when taken */
    }
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

eng_event_t *eng_poll(eng_t *e)
{
    pthread_mutex_lock(&e->mu);
    eng_event_t *ev = e->out_head;
    e->out_head = e->out_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    return ev;
}

void eng_get_stats(eng_t *e, eng_stats_t *st)
{
    pthread_mutex_lock(&e->mu);
    *st = e->stats;
    st->waiting += e->in_requests;
    st->idle_seconds = e->idle_sec + (e->idle_since > 0 ? clock_now_sec() - e->idle_since : 0);
    st->handoff_seconds = e->handoff_sec;
    pthread_mutex_unlock(&e->mu);
}

/* Hands the taken messages to the scheduler, in the order they came. Scheduler side. */
static void apply_msgs(eng_t *e, eng_msg_t *m)
{
    while (m) {
        eng_msg_t *next = m->next;
        if (m->req) {
            eng_request_t *r = m->req;
            /* Cancelled before it was taken, or no memory: its choices end at once. */
            if (r->max_tokens < 0)
                sched_reject(&e->sched, r, ENG_FINISH_ABORT);
            else if (sched_add(&e->sched, r) < 0)
                sched_reject(&e->sched, r, ENG_FINISH_ERROR);
        } else {
            sched_abort(&e->sched, m->abort_id);
        }
        free(m);
        m = next;
    }
}

/* Publishes the scheduler's events and counters. Called with mu held; returns 1 if the
 * outbox was empty and now holds events: only then is a wake-up due, since every wake-up
 * is followed by an eng_poll that takes the whole outbox, whatever was added to it after
 * the wake-up and before that poll included. */
static int publish_locked(eng_t *e)
{
    eng_event_t *ev = sched_take_events(&e->sched);
    int wake = ev != NULL && e->out_head == NULL;
    if (ev) {
        if (e->out_tail)
            e->out_tail->next = ev;
        else
            e->out_head = ev;
        while (ev->next)
            ev = ev->next;
        e->out_tail = ev;
    }
    sched_get_stats(&e->sched, &e->stats);
    e->waiting_reqs = e->sched.waiting_reqs;
    return wake;
}

/* Takes the inbox under the lock. */
static eng_msg_t *take_inbox_locked(eng_t *e)
{
    eng_msg_t *m = e->in_head;
    e->in_head = e->in_tail = NULL;
    e->in_requests = 0;
    return m;
}

/* One round of the scheduler: messages in, one step, events out. Returns as sched_step,
 * or 1 if only messages were handled. */
static int round_once(eng_t *e, eng_msg_t *msgs)
{
    int had_msgs = msgs != NULL;
    apply_msgs(e, msgs);
    int rc = sched_step(&e->sched);
    pthread_mutex_lock(&e->mu);
    int wake = publish_locked(e);
    pthread_mutex_unlock(&e->mu);
    if (wake && e->wake)
        e->wake(e->wake_arg);
    return rc == 0 && had_msgs ? 1 : rc;
}

/* Bytes of the KV pool touched per idle turn of the scheduler thread: a request that
 * arrives meanwhile waits for at most one such chunk (a few ms). */
#define KV_TOUCH_CHUNK ((size_t)8 << 20)

/* 1 while part of the KV pool was never written. Its pages are mapped on first write, and
 * the kernel zeroes each one then: served steps would pay that inside the forward pass
 * until every block had been used once. */
static int kv_touch_some(const eng_t *e)
{
    return e->kv.data && e->kv_touched < e->info.kv_bytes;
}

/* Writes one byte of every page of the next chunk of the pool back unchanged: the pages
 * get mapped without changing what any block holds (blocks in use included). Scheduler
 * thread, between steps: nothing else reads or writes the pool then. */
static void kv_touch_chunk(eng_t *e)
{
    size_t total = e->info.kv_bytes, end = e->kv_touched + KV_TOUCH_CHUNK;
    end = end < total ? end : total;
    volatile unsigned char *p = e->kv.data;
    for (size_t i = e->kv_touched; i < end; i += 4096)
        p[i] = p[i];
    e->kv_touched = end;
}

static void *sched_thread(void *arg)
{
    eng_t *e = arg;
    /* Named for top -H and perf; it is also compute thread 0 of the pool. */
    pthread_setname_np(pthread_self(), "nv-scheduler");
    pthread_mutex_lock(&e->mu);
    double t = clock_now_sec();
    const eng_stats_t *ss = &e->sched.stats;
    while (!e->stop) {
        if (!e->in_head && !sched_has_work(&e->sched)) {
            /* Nothing to do: map a chunk of the pool while part of it was never written, else
             * sleep. Either counts as idle, up to the moment (eng_get_stats). */
            double t0 = clock_now_sec();
            e->handoff_sec += t0 - t;
            e->idle_since = t0;
            if (kv_touch_some(e)) {
                pthread_mutex_unlock(&e->mu);
                kv_touch_chunk(e);
                pthread_mutex_lock(&e->mu);
            } else {
                pthread_cond_wait(&e->cv, &e->mu);
            }
            t = clock_now_sec();
            e->idle_sec += t - t0;
            e->idle_since = 0;
            continue;
        }
        eng_msg_t *msgs = take_inbox_locked(e);
        pthread_mutex_unlock(&e->mu);
        double in_step = ss->schedule_seconds + ss->forward_seconds + ss->sample_seconds;
        /* A failed forward pass ended its requests with ENG_FINISH_ERROR; serve on. */
        round_once(e, msgs);
        in_step = ss->schedule_seconds + ss->forward_seconds + ss->sample_seconds - in_step;
        pthread_mutex_lock(&e->mu);
        double t1 = clock_now_sec();
        e->handoff_sec += t1 - t - in_step;
        t = t1;
    }
    pthread_mutex_unlock(&e->mu);
    /* Shutdown: every request still live ends as aborted. */
    sched_abort_all(&e->sched);
    pthread_mutex_lock(&e->mu);
    publish_locked(e);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

int eng_start(eng_t *e, eng_wake_cb wake, void *arg)
{
    if (e->started)
        return -EINVAL;
    e->wake = wake;
    e->wake_arg = arg;
    int rc = pthread_create(&e->thread, NULL, sched_thread, e);
    if (rc != 0)
        return -rc;
    e->started = 1;
    return 0;
}

int eng_step(eng_t *e)
{
    if (e->started)
        return -EINVAL;
    pthread_mutex_lock(&e->mu);
    eng_msg_t *msgs = take_inbox_locked(e);
    pthread_mutex_unlock(&e->mu);
    return round_once(e, msgs);
}

/* ---- for tests and benchmarks (engine/testing.h) ---- */

sched_t *eng_sched(eng_t *e)
{
    return &e->sched;
}
