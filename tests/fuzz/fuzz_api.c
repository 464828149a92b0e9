/* fuzz_api.c - libFuzzer harness for the server's request parsers (server/api.c).
 *
 * The input is a request body, given to the completions, tokenize and detokenize parsers.
 * Checks, beyond "no crash, no leak": a refusal has status 400 or 404, a non-empty message and
 * renders as a valid JSON error object; an accepted completions request has every field in
 * range, and the engine request built from each of its prompts copies it faithfully.
 * Built by tests/fuzz/meson.build with -Dfuzz=true (clang), and linked with replay.c into a
 * plain test that runs the corpus.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_api: %s\n", what);
        abort();
    }
}

static void check_error(const api_error_t *e)
{
    check(e->status == 400 || e->status == 404, "a refusal is 400 or 404");
    check(e->message[0] != '\0', "a refusal has a message");
    char *json = api_error_json(e);
    check(json != NULL, "the error renders");
    json_error_t jerr;
    json_t *o = json_loads(json, 0, &jerr);
    check(o && json_is_string(json_object_get(json_object_get(o, "error"), "message")),
          "the error is an OpenAI error object");
    json_decref(o);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    const api_limits_t lim = {"gpt2", 50257};
    api_params_t p;
    api_error_t e;
    if (api_completion_parse(body, size, &lim, &p, &e) == 0) {
        check(p.n_prompts >= 1 && p.n_prompts <= API_MAX_PROMPTS, "prompt count");
        check(p.n >= 1 && p.n <= API_MAX_N, "n in range");
        check(p.max_tokens >= 0 && (p.max_tokens > 0 || p.echo), "max_tokens in range");
        check(p.logprobs >= -1 && p.logprobs <= ENG_MAX_LOGPROBS, "logprobs in range");
        check(p.n_stop >= 0 && p.n_stop <= ENG_MAX_STOPS, "stop count");
        check(p.sp.temperature >= 0 && p.sp.temperature <= 2, "temperature in range");
        for (int i = 0; i < p.sp.n_logit_bias; i++)
            check(p.sp.logit_bias_ids[i] >= 0 && p.sp.logit_bias_ids[i] < lim.vocab_size,
                  "logit_bias id in range");
        for (int i = 0; i < p.n_prompts; i++) {
            api_prompt_t *pr = &p.prompts[i];
            check((pr->text != NULL) != (pr->ids != NULL), "a prompt is text or ids");
            if (!pr->ids) { /* stand-in for the tokenizer: one id per byte */
                pr->n_ids = pr->text_len ? (int)pr->text_len : 1;
                pr->ids = calloc((size_t)pr->n_ids, sizeof(int32_t));
                check(pr->ids != NULL, "allocation");
            }
            for (int k = 0; k < pr->n_ids; k++)
                check(pr->ids[k] >= 0 && pr->ids[k] < lim.vocab_size, "token id in range");
            eng_request_t *r = api_request_new(&p, i, (uint64_t)i, &p);
            check(r != NULL, "engine request built");
            check(r->prompt_len == pr->n_ids && r->n == p.n && r->index_base == i * p.n,
                  "engine request copies the prompt");
            check(r->n_stop == p.n_stop && r->sp.n_logit_bias == p.sp.n_logit_bias,
                  "engine request copies stops and logit bias");
            api_request_free(r);
        }
        if (api_check_context(&p, 1024, &e) != 0)
            check(e.status == 400 && strcmp(e.code, "context_length_exceeded") == 0,
                  "context error code");
        api_params_free(&p);
    } else {
        check_error(&e);
    }

    char *text = NULL;
    size_t tlen;
    if (api_tokenize_parse(body, size, &lim, &text, &tlen, &e) == 0)
        free(text);
    else
        check_error(&e);
    int32_t *ids = NULL;
    int n_ids;
    if (api_detokenize_parse(body, size, &lim, &ids, &n_ids, &e) == 0) {
        for (int i = 0; i < n_ids; i++)
            check(ids[i] >= 0 && ids[i] < lim.vocab_size, "detokenize id in range");
        free(ids);
    } else {
        check_error(&e);
    }
    return 0;
}
