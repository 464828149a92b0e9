/* engine.h - the inference service (GPT-2 and the Llama family): model, KV-cache block pool
 * and the scheduler thread.
 *
 * The engine owns the weights, the block pool and every sequence. Other threads talk to it
 * only through three calls: eng_submit (a request in), eng_abort (a cancel in) and
 * eng_poll (output events out). When events are queued into an empty outbox the scheduler
 * thread calls the wake callback given to eng_start (the server's writes an eventfd).
 * Without eng_start the caller drives the engine itself with eng_step (tests, offline
 * generation); the two modes are not mixed.
 */
#ifndef NANO_VLLM_ENGINE_H
#define NANO_VLLM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

typedef struct eng eng_t;

#define ENG_MAX_LOGPROBS 20 /* alternatives per token, as OpenAI's completions API allows */
#define ENG_MAX_STOPS 4
#define ENG_MAX_STOP_IDS 32 /* extra end tokens per request (stop_token_ids, end of turn) */

/* How weights (and the KV cache) are kept. I8 is weights only: per output column one F32
 * scale (max |w| / 127) and the values rounded to int8 in [-127, 127], multiplied as F32.
 * W8A8 keeps the weights as I8 does and multiplies them by X quantized to int8 on the fly
 * (per row and 256 values of K), summing the products as integers. BF16X3 is weights
 * only, and only on AMX (F32 elsewhere): each F32 weight as two BF16, hi (the nearest) and lo
 * (the nearest to w - hi), 16 significant bits, and each product as three BF16 tile
 * products (xh wh + xl wh + xh wl), as PyTorch's float32 matmul precision "high" does on
 * AMX: about 1e-5 relative error, at up to twice the speed of F32 on the FMA units. */
enum eng_dtype {
    ENG_DTYPE_AUTO = 0,
    ENG_DTYPE_F32,
    ENG_DTYPE_F16,
    ENG_DTYPE_BF16,
    ENG_DTYPE_I8,
    ENG_DTYPE_BF16X3,
    ENG_DTYPE_W8A8
};

/* What a 0 in eng_params_t's max_num_seqs and max_num_batched_tokens means: an offline
 * batch's sizes (`nano-vllm generate`). The server passes its own, smaller for latency
 * (config/config.c, the README's settings table). */
#define ENG_DEFAULT_MAX_NUM_SEQS 256
#define ENG_DEFAULT_MAX_NUM_BATCHED_TOKENS 2048

/* Loading progress: bytes of the checkpoint's weights packed or converted so far (never
 * decreasing) and their total; the last call of a load that succeeds has done == total. */
typedef void (*eng_progress_cb)(void *arg, uint64_t done, uint64_t total);

typedef struct eng_params {
    const char *model_dir;           /* borrowed: Hugging Face model directory */
    int threads;                     /* compute threads; 0 = one per core */
    int block_size;                  /* tokens per KV block; 0 = 16 */
    size_t kv_cache_memory;          /* bytes for the KV pool; 0 = what max_num_seqs full-length
                                      * sequences need, at most 1 GiB */
    int num_kv_blocks;               /* > 0 overrides kv_cache_memory */
    int max_num_seqs;                /* sequences in one step; 0 = ENG_DEFAULT_MAX_NUM_SEQS */
    int max_num_batched_tokens;      /* token budget of one step; >= max_num_seqs;
                                      * 0 = ENG_DEFAULT_MAX_NUM_BATCHED_TOKENS */
    int max_model_len;               /* prompt + completion limit; 0 = the model's maximum
                                      * positions, or what the KV pool holds if less */
    int max_waiting;                 /* requests not yet admitted; eng_submit fails with -EAGAIN
                                      * past this; 0 = unbounded */
    int weight_dtype;                /* enum eng_dtype: how weights are kept in memory */
    const char *kernel;              /* matrix kernel: "auto", "generic", "avx2", "avx512", "amx";
                                      * NULL = as NANO_VLLM_KERNEL says, else auto */
    int kv_cache_dtype;              /* enum eng_dtype: F32 or F16; AUTO = F16 with 16-bit or
                                      * int8 weights, F32 with F32 or BF16X3 weights */
    int max_prefill_tokens_decoding; /* N: caps the prompt tokens of a step that also
                                      * decodes, so running streams keep their pace and
                                      * arrivals are not starved (the rule: prefill_cap in
                                      * engine/sched/sched.c); 0 = no cap beyond
                                      * max_num_batched_tokens */
    eng_progress_cb load_progress;   /* called on eng_init's thread while the weights load
                                      * (a few hundred calls); NULL = none */
    void *load_progress_arg;
} eng_params_t;

/* What the model and pool look like once loaded. Strings borrowed from the engine. */
typedef struct eng_info {
    int n_layer, n_head, n_embd, n_ctx, vocab_size;
    const char *arch;         /* config.json's architecture, e.g. "LlamaForCausalLM" */
    int n_kv_head, head_size; /* the KV pool's shape per layer and token */
    int max_model_len;
    /* Where max_model_len came from: "the max_model_len setting", "the model's maximum
     * positions", or "the most the KV pool holds (the model allows N)". */
    char max_model_len_from[96];
    int block_size, num_kv_blocks;
    size_t weight_bytes, kv_bytes;
    const char *weight_dtype;   /* "f32", "f16", "bf16", "int8", "bf16x3" */
    const char *kv_cache_dtype; /* "f32", "f16" */
    const char *kernel;         /* the matrix kernel: "generic", "avx2", "avx512", "amx" */
    int compute_threads;
    /* Where eng_init's time went, in seconds: mapping the checkpoint and checking its
     * headers, faulting in fresh memory for the packed weights, packing (and converting)
     * the weights, and the rest (KV pool, scheduler, step buffers, thread pool). */
    double init_map_s, init_fault_s, init_pack_s, init_rest_s;
} eng_info_t;

/* Sampling settings; the neutral value of each is given. */
typedef struct eng_sampling {
    float temperature;        /* 0 = greedy; 1 */
    float top_p;              /* 1 */
    int top_k;                /* 0 = off */
    float min_p;              /* 0 */
    float presence_penalty;   /* 0 */
    float frequency_penalty;  /* 0 */
    float repetition_penalty; /* 1 */
    uint64_t seed;            /* used when has_seed; else the engine picks one */
    int has_seed;
    int n_logit_bias;
    int32_t *logit_bias_ids;  /* (n_logit_bias) owned by the request */
    float *logit_bias_values; /* (n_logit_bias) owned by the request */
    int logprobs;             /* -1 = none, else 0..ENG_MAX_LOGPROBS alternatives per token */
    int prompt_logprobs;      /* -1 = none, else alternatives for each prompt token (echo) */
} eng_sampling_t;

/* One prompt and how to continue it. eng_submit takes ownership of the whole struct
 * (allocated with malloc, with every pointer below) and frees it when the request ends.
 * Completion k draws with its own RNG: k = 0 with sp.seed itself (so it matches the same
 * request with n = 1), k > 0 with a seed derived from sp.seed and k. With a seed, what a
 * completion generates does not depend on what else is batched with it. */
typedef struct eng_request {
    uint64_t id;     /* chosen by the caller, unique among live requests */
    void *user;      /* returned in every event, never dereferenced */
    int32_t *prompt; /* (prompt_len) owned */
    int prompt_len;
    int n;          /* completions of this prompt (they share its KV blocks); >= 1 */
    int index_base; /* choice index of the first completion */
    int max_tokens; /* new tokens per completion; 0 only with prompt_logprobs (scoring) */
    int ignore_eos;
    int n_stop;
    char *stop[ENG_MAX_STOPS]; /* owned, NUL-terminated, non-empty */
    /* Tokens that end a completion as EOS does, ignore_eos or not (vLLM's stop_token_ids,
     * and a chat model's end-of-turn token): counted, in ids, no text, finish STOP. */
    int n_stop_ids;
    int32_t stop_ids[ENG_MAX_STOP_IDS]; /* each below the vocabulary size */
    eng_sampling_t sp;
} eng_request_t;

/* Frees r and everything it owns (prompt, stop strings, logit bias arrays). For a caller
 * whose eng_submit failed; the engine frees the requests it accepted. NULL is a no-op.
 * (This and the next two are in engine/request.c, which needs only libc.) */
void eng_request_free(eng_request_t *r);

/* Fill *sp with the neutral values listed above. */
void eng_sampling_default(eng_sampling_t *sp);

enum eng_finish {
    ENG_FINISH_NONE = 0, /* more events follow for this choice */
    ENG_FINISH_STOP,     /* EOS or a stop string */
    ENG_FINISH_LENGTH,   /* max_tokens or the context length */
    ENG_FINISH_ABORT,    /* eng_abort or shutdown */
    ENG_FINISH_ERROR,    /* the engine could not run it; message in text */
};

/* The finish reason's one name, in the API (finish_reason), the metrics and the logs:
 * "stop", "length", "abort", "error"; NULL for ENG_FINISH_NONE or an unknown value. */
const char *eng_finish_name(int finish);

/* The log-probability of one token and its top alternatives (highest first). */
typedef struct eng_logprob {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[ENG_MAX_LOGPROBS];
    float top_logprob[ENG_MAX_LOGPROBS];
} eng_logprob_t;

/* Output for one choice of one request. Owned by whoever holds it; free with eng_event_free.
 * Generated tokens come one event per token and choice per step. Every choice ends with
 * exactly one event whose finish is not ENG_FINISH_NONE (it may carry the last token, or
 * none), and nothing follows it. An EOS token is in ids (and counted) but adds no text.
 * text may be "" while it is held back as the possible start of a stop string; the text of
 * a choice never contains its stop string. With prompt_logprobs, every choice first gets
 * one is_prompt event: ids = the prompt, text = the decoded prompt, lps = one per prompt
 * token, lps[0].logprob = NAN (nothing precedes the first token; OpenAI sends null). */
typedef struct eng_event {
    struct eng_event *next;
    uint64_t req_id;
    void *user;
    int index;    /* choice index (index_base + k) */
    int32_t *ids; /* (n_ids) tokens generated since the last event of this choice */
    int n_ids;
    char *text; /* text delta, NUL-terminated; held back while it may start a stop;
                 * with ENG_FINISH_ERROR, the reason */
    size_t text_len;
    int is_prompt;      /* 1: lps are the prompt's logprobs (echo), ids the prompt */
    eng_logprob_t *lps; /* (n_lps) or NULL */
    int n_lps;
    int finish;            /* enum eng_finish */
    int prompt_tokens;     /* set on the finishing event */
    int completion_tokens; /* set on the finishing event */
    int cached_tokens;     /* prompt tokens served from the prefix cache */
} eng_event_t;

typedef struct eng_stats {
    int running, waiting; /* sequences (completions); waiting includes queued requests */
    int kv_blocks_used, kv_blocks_total; /* used: held by a sequence; cached free ones not */
    uint64_t preemptions;
    uint64_t prefix_cache_queries, prefix_cache_hits; /* in prompt tokens, first admission */
    uint64_t prompt_tokens;                           /* prompt_len * n of every accepted request */
    uint64_t generation_tokens;                       /* every sampled token */
    uint64_t steps;
    uint64_t requests_finished;
    uint64_t forward_tokens; /* rows run through the model (prompt chunks and decodes) */
    /* Seconds of the scheduler thread since start, by what it did: planning the step and
     * laying out its batch, the forward pass, sampling and detokenizing and queueing the
     * events, handing requests in and events out (locks and the wake), and sleeping with
     * nothing to do. Their sum is the thread's wall time; what is not forward or idle is
     * what serving costs on this thread. */
    double schedule_seconds, forward_seconds, sample_seconds, handoff_seconds, idle_seconds;
} eng_stats_t;

typedef void (*eng_wake_cb)(void *arg);

/* Loads the model in p->model_dir and sizes the block pool. tok is borrowed and must
 * outlive the engine. The pool must hold one sequence of max_model_len (then the oldest
 * running sequence can always go on by preempting the others); -EINVAL says so otherwise.
 * Returns 0, or -ENOENT/-EINVAL/-ENOMEM/-EIO with one line in err naming the file and the
 * problem. Any thread, once. */
int eng_init(eng_t **out, const eng_params_t *p, const tok_t *tok, char *err, size_t errlen);
/* Stops the scheduler thread if running (aborting what is left) and frees everything,
 * including events not yet polled. eng_free(NULL) is a no-op. */
void eng_free(eng_t *e);
void eng_get_info(const eng_t *e, eng_info_t *info);

/* Starts the scheduler thread. wake(arg) is called from it after events were queued into an
 * empty outbox (so each wake-up must be followed by an eng_poll, which takes every event
 * queued until then), with no engine lock held; it must not block. It sleeps when idle. */
int eng_start(eng_t *e, eng_wake_cb wake, void *arg);

/* Queues a request (any thread). Returns 0 and owns req, or -EAGAIN when the waiting queue
 * is full, -EINVAL when it cannot ever run (empty prompt, prompt + max_tokens beyond
 * max_model_len, bad token id, n outside 1..max_num_seqs, max_tokens 0 without
 * prompt_logprobs, an empty stop string, logprobs beyond ENG_MAX_LOGPROBS); on failure the
 * caller keeps req (eng_request_free). */
int eng_submit(eng_t *e, eng_request_t *req);
/* Cancels a request (any thread); its choices end with ENG_FINISH_ABORT and its blocks
 * return to the pool at the next step. Unknown ids are ignored. */
void eng_abort(eng_t *e, uint64_t req_id);
/* Takes every queued event, oldest first (any thread). NULL when there is none. */
eng_event_t *eng_poll(eng_t *e);
void eng_event_free(eng_event_t *ev); /* frees one event (ids, text, lps with it), not the list */

/* Runs one scheduler step on the calling thread; only when eng_start was not called.
 * Returns 1 if work was done, 0 if idle, negative on error. */
int eng_step(eng_t *e);

/* A consistent snapshot of the counters (any thread). */
void eng_get_stats(eng_t *e, eng_stats_t *st);

#endif
