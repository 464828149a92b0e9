/* completion.h - one POST /v1/completions in flight (private to server/).
 *
 * A job is created by the loop thread when a completions request is accepted and holds
 * everything about it. Two parties refer to it: the HTTP connection (until its closed
 * callback) and the engine (until every choice has its finishing event). It is freed by
 * whichever of the two lets go last, always on the loop thread.
 */
#ifndef NANO_VLLM_SERVER_COMPLETION_H
#define NANO_VLLM_SERVER_COMPLETION_H

#include <jansson.h>
#include <stdint.h>

#include "server/api.h"
#include "server/srv.h"

typedef struct api_choice {
    char *text; /* owned: the whole text so far (non-streaming) */
    size_t len, cap;
    json_t *lp;      /* owned: the logprobs object so far (non-streaming), or NULL */
    size_t offset;   /* text_offset of the next token, in characters */
    int finish;      /* enum eng_finish */
    int echoed;      /* the prompt text was sent or stored */
    int n_tokens;    /* generated so far */
    uint64_t t_last; /* uv_hrtime of the last token */
    char *error;     /* owned: the engine's message for ENG_FINISH_ERROR */
} api_choice_t;

struct api_job {
    list_t link;      /* in srv_t.jobs */
    srv_t *srv;       /* borrowed */
    http_req_t *http; /* borrowed; NULL once the connection is done with us */
    char id[48];      /* "cmpl-..." or "chatcmpl-..." */
    int chat;         /* a chat completion (chat.c frames its responses) */
    long long created;
    api_params_t p;
    int n_choices;
    api_choice_t *choices; /* (n_choices) owned */
    uint64_t eng_id0;      /* engine request i has id eng_id0 + i */
    int n_submitted;       /* engine requests accepted by eng_submit */
    int live;              /* choices without their finishing event */
    int answered;          /* the response was sent or the stream ended */
    int prompt_tokens;
    uint64_t t_start, t_first;
    char *sse; /* owned; (sse_cap) one event being framed, reused for each */
    size_t sse_cap;
    size_t sse_head; /* bytes of sse that every plain chunk shares (0: none yet) */
};

/* Builds the logprobs entries for tokens ids[0..n) into lp (an object of four arrays,
 * created when *lp is NULL). lps may be NULL for a token without one (the first prompt
 * token); *offset advances by each token's characters. Returns 0 or -ENOMEM. */
int api_logprobs_add(json_t **lp, const tok_t *tok, const int32_t *ids, int n,
                     const eng_logprob_t *const *lps, size_t *offset);

/* Streaming (sse.c): each writes one server-sent event to the job's stream. */
void sse_chunk(api_job_t *job, int index, const char *text, size_t len, json_t *logprobs,
               int finish);
void sse_usage(api_job_t *job);
void sse_error(api_job_t *job, int status, const char *type, const char *message);
void sse_done(api_job_t *job);
/* The fields every chunk starts with (id, object, created, model, choices, usage when asked);
 * takes choices. sse_send_json writes obj as one event and releases it. */
json_t *sse_chunk_head(api_job_t *job, json_t *choices);
void sse_send_json(api_job_t *job, json_t *obj);

/* A token as OpenAI shows it (its text, or "bytes:\\xNN..." when not UTF-8); *chars is the
 * characters it adds to the text. New reference, or NULL when out of memory. */
json_t *api_token_json(const tok_t *tok, int32_t id, size_t *chars);
/* A logprob as JSON: -9999.0 for an impossible token, as vLLM. */
json_t *api_logprob_json(float lp);

/* Jobs (completion.c), shared with chat.c. srv_job_new: a job for r with an id "PREFIX-..."
 * (NULL when out of memory). srv_job_run: job->p holds the prompts' ids: submits them and
 * starts the response (stream or deferred); 0 or -1 with *e. srv_job_fail answers the job's
 * request with *e and lets the job go. */
api_job_t *srv_job_new(srv_t *s, http_req_t *r, const char *prefix);
int srv_job_run(api_job_t *job, api_error_t *e);
void srv_job_fail(api_job_t *job, const api_error_t *e);

/* Chat framing (chat.c). chat_logprobs_add appends an event's tokens to a chat logprobs
 * object ({"content": [...]}, created when *lp is NULL); 0 or -ENOMEM. chat_reply answers a
 * finished non-streaming job. chat_sse_start sends each choice's first delta (the role);
 * chat_sse_chunk one content delta. */
int chat_logprobs_add(json_t **lp, const tok_t *tok, const eng_event_t *ev);
void chat_reply(api_job_t *job, int completion_tokens);
void chat_sse_start(api_job_t *job);
void chat_sse_chunk(api_job_t *job, int index, const char *text, size_t len, json_t *logprobs,
                    int finish);

#endif
