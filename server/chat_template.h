/* chat_template.h - the served model's chat template (private to server/): found and compiled
 * once at start-up, rendered per chat request into the prompt text.
 *
 * Where it comes from, as vLLM (through transformers) finds it: --chat-template (a file, or
 * the template text itself), else the model directory's chat_template.jinja, else
 * tokenizer_config.json's "chat_template" (a string, or a list of {"name", "template"} whose
 * "default" is used). bos_token and eos_token come from tokenizer_config.json (text or
 * {"content": ...}), else the tokenizer's end-of-text token (GPT-2's files have no config).
 */
#ifndef NANO_VLLM_SERVER_CHAT_TEMPLATE_H
#define NANO_VLLM_SERVER_CHAT_TEMPLATE_H

#include <stddef.h>

#include "server/api_chat.h"
#include "tokenizer/tokenizer.h"

typedef struct chat_tpl chat_tpl_t;

/* Finds and compiles the template for the model in dir (given: --chat-template or NULL). On
 * success returns 0 and *out is the template (caller frees with chat_tpl_free), or NULL
 * when the model has none. On failure returns -errno and writes one line into err naming
 * the source and the problem (a file that cannot be read, a malformed tokenizer_config.json,
 * the template engine's message for a construct it lacks). Any thread; tok only read. */
int chat_tpl_load(chat_tpl_t **out, const char *dir, const char *given, const tok_t *tok, char *err,
                  size_t errlen);
void chat_tpl_free(chat_tpl_t *t);
/* Where the template came from, for the start-up log ("--chat-template FILE", ...). */
const char *chat_tpl_source(const chat_tpl_t *t);
/* The id of eos_token when it is one token other than the tokenizer's end-of-text (a chat
 * model's end of turn, e.g. Qwen's <|im_end|>), else -1: chat completions stop on it. */
int32_t chat_tpl_end_id(const chat_tpl_t *t);

/* Renders c's conversation with t (NULL: the model has none, a 400 that says how to give
 * one) into the prompt text: *text is malloc'd (caller frees), *len its bytes. With
 * continue_final_message the text ends where the final message's content ends. Returns 0,
 * or -1 with *e: a 400 with the template's own message when it raises, or with the engine's
 * line when the render fails. Loop thread (any thread: t is only read). */
int chat_tpl_render(const chat_tpl_t *t, const api_chat_t *c, char **text, size_t *len,
                    api_error_t *e);

#endif
