/* api.h - the OpenAI completions request: JSON in, validated parameters out, and the
 * OpenAI error object.
 *
 * api_completion_parse is pure: no I/O, no tokenizer, no globals, so it can be unit-tested
 * and fuzzed on its own. Tokenizing the prompts and the context-length check are separate
 * steps that the loop thread runs afterwards. Everything here runs on the loop thread.
 */
#ifndef NANO_VLLM_SERVER_API_H
#define NANO_VLLM_SERVER_API_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

#define API_MAX_N 128        /* completions per prompt (OpenAI's limit) */
#define API_MAX_PROMPTS 256  /* prompts in one request */
#define API_MAX_CHOICES 1024 /* prompts * n */
#define API_MAX_LOGIT_BIAS 1024
#define API_MAX_STOP_BYTES 1024
#define API_MAX_STOP_IDS 16 /* stop_token_ids; the engine takes more: the model's end of turn */

/* A client error (or, for status >= 500, ours), rendered as OpenAI's error object. */
typedef struct api_error {
    int status;       /* HTTP status */
    const char *type; /* static: "invalid_request_error", "authentication_error" ... */
    const char *code; /* static or NULL: "context_length_exceeded", "model_not_found" ... */
    char param[64];   /* the field at fault, "" when none */
    char message[512];
} api_error_t;

/* Fills *e; returns -1 so a caller can `return api_error_set(...)`. */
int api_error_set(api_error_t *e, int status, const char *type, const char *code, const char *param,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error object as a NUL-terminated JSON text, malloc'd (caller frees), or NULL. */
char *api_error_json(const api_error_t *e);

/* 1 when s[0..n) is valid UTF-8 (no overlongs, surrogates or values above U+10FFFF). */
int api_utf8_valid(const char *s, size_t n);
/* A malloc'd NUL-terminated copy of s[0..n) with every invalid UTF-8 sequence replaced by
 * U+FFFD, its length in *out_len; NULL when out of memory. */
char *api_utf8_fix(const char *s, size_t n, size_t *out_len);

/* One prompt: given as text (text != NULL) or as token ids. */
typedef struct api_prompt {
    char *text; /* owned, NUL-terminated; NULL when the prompt came as ids */
    size_t text_len;
    int32_t *ids; /* (n_ids) owned; filled by the loop thread's tokenizer for text prompts */
    int n_ids;
} api_prompt_t;

/* A validated POST /v1/completions request. */
typedef struct api_params {
    char *model; /* owned or NULL (= the served model) */
    int n_prompts;
    api_prompt_t *prompts; /* (n_prompts) owned */
    int max_tokens;        /* 16, or the model's default (api_defaults.h) */
    int max_tokens_set;    /* the request gave max_tokens (not null) */
    int n;                 /* 1 */
    int best_of;           /* 0 = not given; else it must equal n */
    int stream;
    int include_usage; /* stream_options.include_usage */
    int logprobs;      /* -1 = none, else 0..ENG_MAX_LOGPROBS */
    int echo;
    int ignore_eos;
    int n_stop;
    char *stop[ENG_MAX_STOPS]; /* owned */
    int n_stop_ids;
    int32_t stop_ids[ENG_MAX_STOP_IDS]; /* stop_token_ids, each below the vocabulary */
    char *user;                /* owned or NULL */
    eng_sampling_t sp;         /* logit_bias arrays owned here until copied into a request */
} api_params_t;

struct api_defaults;

/* What the parser checks against: all borrowed, all may be 0/NULL to skip that check. */
typedef struct api_limits {
    const char *model_name; /* a different "model" is 404 model_not_found */
    int vocab_size;         /* token ids and logit_bias keys must be below it */
    /* What a field the request leaves out (or sets to null) gets: the model's
     * generation_config.json (api_defaults.h); NULL = OpenAI's defaults. */
    const struct api_defaults *defaults;
} api_limits_t;

/* Parses and validates a completions request body. On success returns 0 and fills *p
 * (free with api_params_free). On failure returns -1, leaves *p freed (empty) and fills
 * *e: 400 for malformed JSON, wrong types, out-of-range or unknown fields, 404 for an
 * unknown model. Pure. */
int api_completion_parse(const char *body, size_t len, const api_limits_t *lim, api_params_t *p,
                         api_error_t *e);
void api_params_free(api_params_t *p);

/* For the chat parser (api_chat.c), which shares the completions fields: api_params_init
 * sets *p to the completions defaults; api_params_field parses one top-level field `key`
 * (v not null; a jansson json_t *) into *p, returning 0 or -1 with *e (unknown field
 * included). */
void api_params_init(api_params_t *p);
/* Puts the sampling defaults and max_tokens of d (NULL: none) into *p, as the starting values
 * a request's own fields then overwrite. */
void api_params_defaults(api_params_t *p, const struct api_defaults *d);
struct json_t;
/* Parses body as a JSON object (duplicate keys refused) into *root (caller decrefs). Returns 0,
 * or -1 with a 400 in *e naming the JSON error or saying the body is not an object. */
int api_json_object(const char *body, size_t len, struct json_t **root, api_error_t *e);
int api_params_field(const char *key, struct json_t *v, const api_limits_t *lim, api_params_t *p,
                     api_error_t *e);

/* Checks prompt + max_tokens against the model's context for every prompt. Returns 0, or
 * -1 with a 400 context_length_exceeded error that names the numbers. */
int api_check_context(const api_params_t *p, int max_model_len, api_error_t *e);

/* A malloc'd engine request for prompt i of p (deep copies; the engine will own it), or
 * NULL when out of memory. One eng_submit refused is freed with eng_request_free. */
eng_request_t *api_request_new(const api_params_t *p, int i, uint64_t id, void *user);

/* Parses the bodies of POST /tokenize ({"prompt": string, "model"?, "add_special_tokens"?})
 * and POST /detokenize ({"tokens": [ids], "model"?}). Return 0 or -1 with *e; the text or
 * ids are malloc'd for the caller. Pure. */
int api_tokenize_parse(const char *body, size_t len, const api_limits_t *lim, char **text,
                       size_t *text_len, api_error_t *e);
int api_detokenize_parse(const char *body, size_t len, const api_limits_t *lim, int32_t **ids,
                         int *n_ids, api_error_t *e);

#endif
