/* scheduler.h - private to engine/: continuous batching over the paged KV cache.
 *
 * A sched_t holds every live request and its sequences (one per completion), the block
 * manager and the buffers of one step. sched_step picks the batch (running decodes first,
 * then prompt chunks under the token budget, preempting the newest running sequence when
 * blocks run out), runs the forward pass, samples, detokenizes, checks stops and appends
 * output events to its list. Only one thread (the scheduler thread, or the caller of
 * eng_step) touches a sched_t; engine.c moves requests in and events out.
 */
#ifndef NANO_VLLM_SCHEDULER_H
#define NANO_VLLM_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "common/list.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/sched/blocks.h"
#include "engine/sched/detok.h"
#include "engine/sched/event.h"
#include "engine/sched/sampler.h"

/* Logit rows beyond one per sequence, for prompt logprobs (echo): a prompt chunk that needs
 * them is cut to what is left of these. */
#define SCHED_PROMPT_LOGIT_ROWS 64

enum sched_seq_state {
    SCHED_WAITING = 0, /* in the waiting queue: not admitted yet, or preempted */
    SCHED_RUNNING,     /* admitted: holds blocks, is scheduled every step it can be */
    SCHED_FORK,        /* a later completion of n > 1: forks from the first after prefill */
    SCHED_FINISHED,
};

typedef struct sched_req sched_req_t;

/* One completion of a request: its tokens, its blocks, its RNG and its text state. */
typedef struct sched_seq {
    sched_req_t *req;     /* the request it belongs to */
    int index;            /* completion k of the request, 0..n-1 */
    int state;            /* enum sched_seq_state */
    int32_t *tokens;      /* owned; (max_model_len) the prompt, then generated tokens */
    int len;              /* tokens so far */
    int num_computed;     /* tokens whose K/V is in the cache (len - 1 while decoding) */
    int32_t *blocks;      /* owned; (max_blocks) block ids, the block table */
    uint64_t *block_hash; /* owned; (max_blocks) chained hash of each full block */
    int n_blocks;
    int n_hashed; /* leading full blocks whose hash is known (and maybe registered) */
    smp_rng_t rng;
    detok_t dt;
    uint64_t admitted; /* admission stamp (for debugging: the running list keeps this order,
                        * and its tail, the newest, is preempted first) */
    int entry;         /* index of its entry in the current step, or -1 */
    int cached_tokens; /* prompt tokens found in the prefix cache at its first admission */
    int was_admitted;  /* admitted at least once (counted in the prefix-cache stats) */
    list_t link;       /* in the waiting or running list, oldest first */
} sched_seq_t;

struct sched_req {
    eng_request_t *r;  /* owned; freed with eng_request_free when every completion ended */
    sched_seq_t *seqs; /* owned; (r->n) */
    int n_unfinished;
    eng_logprob_t *prompt_lps; /* owned; (prompt_len) when r->sp.prompt_logprobs >= 0 */
    int prompt_lp_next;        /* the next prompt position whose logprob is still missing */
    int prompt_sent;           /* prompt logprob events queued */
    sched_req_t *next;         /* in the list of live requests */
};

typedef struct sched_list {
    list_t head; /* of sched_seq_t.link */
    int count;
} sched_list_t;

/* The first and last sequence of l, and the one after q in l; NULL past either end. */
static inline sched_seq_t *sched_list_first(const sched_list_t *l)
{
    list_t *e = list_first(&l->head);
    return e ? LIST_DATA(e, sched_seq_t, link) : NULL;
}

static inline sched_seq_t *sched_list_last(const sched_list_t *l)
{
    list_t *e = list_last(&l->head);
    return e ? LIST_DATA(e, sched_seq_t, link) : NULL;
}

static inline sched_seq_t *sched_list_next(const sched_list_t *l, const sched_seq_t *q)
{
    list_t *e = list_next(&l->head, &q->link);
    return e ? LIST_DATA(e, sched_seq_t, link) : NULL;
}

/* One sequence's share of a step: rows [row0, row0 + n) computing positions
 * [start, start + n). seq is NULL when it was taken out again by a preemption. */
typedef struct sched_entry {
    sched_seq_t *seq;
    int start, n;
    int logit0, n_logits; /* its rows in the logits buffer */
    int prefill;          /* 1 for a prompt (or recompute) chunk, 0 for a decode */
} sched_entry_t;

/* What the last step was made of (tests assert on it). */
typedef struct sched_step_info {
    int n_seqs;   /* entries in the batch */
    int n_decode; /* of which single-token decodes of running sequences */
    int decode_tokens;
    int prefill_tokens;  /* rows that were prompt (or recomputed) chunks */
    int prefill_backlog; /* prompt tokens not yet computed when the step was planned */
    int prefill_cap;     /* prompt tokens the step could take; 0 = no cap (see sched.c) */
    int preempted;       /* preemptions during this step's scheduling */
    double forward_sec;  /* time inside model_forward */
    double step_sec;     /* the whole step */
} sched_step_info_t;

typedef struct sched_limits {
    int max_num_seqs;
    int max_num_batched_tokens;
    int max_model_len;
    int max_prefill_decoding; /* N of the prefill cap (prefill_cap in sched.c); 0 = no cap */
} sched_limits_t;

typedef struct sched {
    sched_limits_t lim;
    int V, block_size, max_blocks, max_logits;
    /* End-of-sequence ids: the tokenizer's and the model's (config.json and
     * generation_config.json); none without a tokenizer. */
    int32_t eos[MODEL_MAX_EOS + 1];
    int n_eos;
    const tok_t *tok; /* borrowed */
    model_t *model;   /* borrowed from the engine */
    kv_cache_t *kv;   /* borrowed from the engine */
    blk_mgr_t blk;    /* owned */

    sched_req_t *reqs; /* owned; every live request */
    sched_list_t waiting, running;
    int n_fork;       /* completions waiting to fork */
    int waiting_reqs; /* requests whose first completion was never admitted */
    uint64_t admit_counter, seed_state;

    /* One step's batch; all sized at sched_init for the largest step. */
    sched_entry_t *ent; /* (max_num_seqs) */
    int n_ent;
    int32_t *tok_buf, *pos, *slot; /* (max_num_batched_tokens) */
    int32_t *seq_start, *ctx_len;  /* (max_num_seqs + 1), (max_num_seqs) */
    const int32_t **tables;        /* (max_num_seqs) borrowed from the sequences */
    int32_t *logit_rows;           /* (max_logits) */
    float *logits;                 /* (max_logits, V) */
    float *work;                   /* (V) a logits row the sampler may modify */
    float *fork_row;               /* (V) the raw row later completions sample from */
    void *smp_scratch;             /* smp_scratch_bytes(V) */
    char *text;                    /* (text_cap) one event's text */
    size_t text_cap;

    eng_event_t *ev_head, *ev_tail; /* owned; events of the steps since the last take */
    ev_cache_t *evc;                /* owned (closed by sched_free); recycled events */
    eng_stats_t stats;              /* counters (running/waiting/blocks set on read) */
    uint64_t computed_tokens;       /* rows run through the model */
    sched_step_info_t last;
    /* Tests: called with every logits row a step computed, raw (before any sampling
     * setting), the sequence and the position of the row's token; NULL = none. */
    void (*logits_cb)(void *arg, const sched_seq_t *q, int pos, const float *row);
    void *logits_arg;
} sched_t;

/* Whether id ends a sequence (one of s->eos). */
int sched_is_eos(const sched_t *s, int32_t id);
/* Sets up the block manager for kv->num_blocks blocks and every step buffer. model, kv and
 * tok are borrowed. seed seeds the completions of requests that bring no seed. Returns 0,
 * -EINVAL or -ENOMEM. sched_free on a zeroed or half-initialised sched_t is safe. */
int sched_init(sched_t *s, model_t *model, kv_cache_t *kv, const tok_t *tok,
               const sched_limits_t *lim, uint64_t seed);
/* Frees every request (no events), every event and every buffer. */
void sched_free(sched_t *s);

/* Takes ownership of r (already validated) and queues its completions. -ENOMEM leaves r
 * with the caller. */
int sched_add(sched_t *s, eng_request_t *r);
/* Ends every choice of r, which never entered the scheduler, with finish and frees it. */
void sched_reject(sched_t *s, eng_request_t *r, int finish);
/* Ends every unfinished completion of request id with ENG_FINISH_ABORT and frees its
 * blocks. Returns 1 if the request was live. */
int sched_abort(sched_t *s, uint64_t id);
/* Ends everything with ENG_FINISH_ABORT (shutdown). */
void sched_abort_all(sched_t *s);
/* 1 if a step would do anything. */
int sched_has_work(const sched_t *s);
/* One step. Returns 1 if a batch ran, 0 if there was nothing to do, or the negative error
 * of the forward pass (its sequences then end with ENG_FINISH_ERROR). */
int sched_step(sched_t *s);
/* Takes the events produced since the last call, oldest first (the caller owns them). */
eng_event_t *sched_take_events(sched_t *s);
/* The counters with running, waiting and block usage filled in. */
void sched_get_stats(const sched_t *s, eng_stats_t *st);

#endif
