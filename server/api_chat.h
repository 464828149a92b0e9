/* api_chat.h - the OpenAI chat completions request (private to server/): JSON in, the
 * conversation and validated parameters out.
 *
 * api_chat_parse is pure like api_completion_parse (no I/O, no tokenizer, no template), so
 * it is unit-tested and fuzzed alone. Rendering the template and tokenizing the result are
 * later steps on the loop thread (chat.c). Everything here runs on the loop thread.
 */
#ifndef NANO_VLLM_SERVER_API_CHAT_H
#define NANO_VLLM_SERVER_API_CHAT_H

#include <jansson.h>

#include "server/api.h"

#define API_MAX_MESSAGES 4096

/* A validated POST /v1/chat/completions (or a /tokenize body with "messages"). */
typedef struct api_chat {
    api_params_t p;     /* the shared fields; p.prompts is empty until the prompt is rendered;
                           p.logprobs is top_logprobs when logprobs is true, else -1 */
    json_t *messages;   /* owned: [{role, content (a string), name?}], parts joined by "\n" */
    int max_tokens_set; /* max_tokens or max_completion_tokens was given (else: the rest of
                           the context, as vLLM) */
    int add_generation_prompt;  /* 1 */
    int continue_final_message; /* 0 */
    int add_special_tokens;     /* 0: the template writes BOS itself */
    json_t *kwargs;             /* owned or NULL: chat_template_kwargs */
} api_chat_t;

/* Parses and validates a chat completions body. On success returns 0 and fills *c (free with
 * api_chat_free). On failure returns -1, leaves *c empty and fills *e: 400 for malformed JSON,
 * wrong types, bad roles or content, unknown fields and the features we lack (tools,
 * tool_choice, functions, response_format json_object/json_schema, image or audio parts),
 * each naming its field; 404 for an unknown model. Pure. */
int api_chat_parse(const char *body, size_t len, const api_limits_t *lim, api_chat_t *c,
                   api_error_t *e);

/* Parses a POST /tokenize body that holds "messages" (vLLM's shape: messages, model,
 * add_generation_prompt, continue_final_message, add_special_tokens, chat_template_kwargs).
 * Returns 1 when the body has no "messages" (a plain {"prompt": ...} body: *c untouched),
 * 0 with *c filled, or -1 with *e. Pure. */
int api_chat_tokenize_parse(const char *body, size_t len, const api_limits_t *lim, api_chat_t *c,
                            api_error_t *e);

void api_chat_free(api_chat_t *c);

#endif
