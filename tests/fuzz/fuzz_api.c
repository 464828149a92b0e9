/* fuzz_api.c - libFuzzer harness for the request parsers of server/api.c: the completions
 * body (JSON -> validated parameters), POST /tokenize and /detokenize, the error object and
 * the UTF-8 helpers.
 *
 * An input starting with 'T' or 'D' is the body of /tokenize or /detokenize after that byte,
 * 'C' a chat completions body (server/api_chat.c), 'M' a /tokenize body with messages;
 * anything else is a completions body. Checks, beyond "no crash, no leak":
 *   - a refused request has a 400 or 404 error whose JSON object has exactly message, type,
 *     param and code, and leaves the parameters empty;
 *   - an accepted one obeys every bound api.h states (counts, ranges, finite floats, token
 *     ids below the vocabulary, non-empty stops), and each prompt becomes an engine request
 *     (with a stand-in tokenization) that is a faithful copy;
 *   - an accepted chat request has 1..API_MAX_MESSAGES messages, each with a known role and
 *     string content, add_generation_prompt and continue_final_message not both set, and
 *     its shared fields within the same bounds (checked as a one-prompt request);
 *   - api_utf8_fix always gives valid UTF-8, and leaves valid input unchanged.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "server/api_chat.h"

#define VOCAB 50257
#define MODEL "tiny"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                        \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

static void check_error(const api_error_t *e)
{
    REQUIRE(e->status == 400 || e->status == 404);
    REQUIRE(e->type && e->message[0]);
    REQUIRE(memchr(e->param, '\0', sizeof(e->param)) && memchr(e->message, '\0', sizeof(e->message)));
    char *js = api_error_json(e);
    REQUIRE(js);
    json_error_t jerr;
    json_t *root = json_loads(js, 0, &jerr);
    if (!root)
        fprintf(stderr, "error object is not JSON: %s\n%s\n", jerr.text, js);
    REQUIRE(root);
    json_t *err = json_object_get(root, "error");
    REQUIRE(json_is_object(err) && json_object_size(err) == 4);
    REQUIRE(json_is_string(json_object_get(err, "message")));
    REQUIRE(json_is_string(json_object_get(err, "type")));
    json_t *param = json_object_get(err, "param"), *code = json_object_get(err, "code");
    REQUIRE(param && (json_is_null(param) || json_is_string(param)));
    REQUIRE(code && (json_is_null(code) || json_is_string(code)));
    json_decref(root);
    free(js);
}

static int finite_in(float x, float lo, float hi)
{
    return isfinite(x) && x >= lo && x <= hi;
}

static void check_params(api_params_t *p)
{
    REQUIRE(p->n_prompts >= 1 && p->n_prompts <= API_MAX_PROMPTS && p->prompts);
    REQUIRE(p->n >= 1 && p->n <= API_MAX_N && p->n_prompts * p->n <= API_MAX_CHOICES);
    REQUIRE(p->max_tokens >= 1 || (p->max_tokens == 0 && p->echo));
    REQUIRE(p->logprobs >= -1 && p->logprobs <= ENG_MAX_LOGPROBS);
    REQUIRE(!p->include_usage || p->stream);
    REQUIRE(!p->model || strcmp(p->model, MODEL) == 0);
    REQUIRE(p->n_stop >= 0 && p->n_stop <= ENG_MAX_STOPS);
    for (int i = 0; i < p->n_stop; i++)
        REQUIRE(p->stop[i] && p->stop[i][0] && strlen(p->stop[i]) <= API_MAX_STOP_BYTES);
    REQUIRE(p->n_stop_ids >= 0 && p->n_stop_ids <= API_MAX_STOP_IDS);
    for (int i = 0; i < p->n_stop_ids; i++)
        REQUIRE(p->stop_ids[i] >= 0 && p->stop_ids[i] < VOCAB);
    const eng_sampling_t *sp = &p->sp;
    REQUIRE(finite_in(sp->temperature, 0, 2) && finite_in(sp->top_p, 0, 1));
    REQUIRE(finite_in(sp->min_p, 0, 1) && sp->top_k >= 0);
    REQUIRE(isfinite(sp->presence_penalty) && isfinite(sp->frequency_penalty));
    REQUIRE(isfinite(sp->repetition_penalty) && sp->repetition_penalty > 0);
    REQUIRE(sp->n_logit_bias >= 0 && sp->n_logit_bias <= API_MAX_LOGIT_BIAS);
    for (int i = 0; i < sp->n_logit_bias; i++)
        REQUIRE(sp->logit_bias_ids[i] >= 0 && sp->logit_bias_ids[i] < VOCAB &&
                isfinite(sp->logit_bias_values[i]));
    for (int i = 0; i < p->n_prompts; i++) {
        api_prompt_t *pr = &p->prompts[i];
        if (pr->text) {
            REQUIRE(!pr->ids && strlen(pr->text) <= pr->text_len);
            /* Stand-in for the tokenizer: one id per byte, at least one. */
            pr->n_ids = pr->text_len ? (int)(pr->text_len < 300 ? pr->text_len : 300) : 1;
            pr->ids = malloc((size_t)pr->n_ids * sizeof(int32_t));
            REQUIRE(pr->ids);
            for (int k = 0; k < pr->n_ids; k++)
                pr->ids[k] = k < (int)pr->text_len ? (unsigned char)pr->text[k] : 0;
        } else {
            REQUIRE(pr->ids && pr->n_ids >= 1);
            for (int k = 0; k < pr->n_ids; k++)
                REQUIRE(pr->ids[k] >= 0 && pr->ids[k] < VOCAB);
        }
    }
    api_error_t e;
    if (api_check_context(p, 256, &e) != 0) {
        check_error(&e);
        REQUIRE(e.status == 400 && e.code && strcmp(e.code, "context_length_exceeded") == 0);
    }
    for (int i = 0; i < p->n_prompts; i++) {
        eng_request_t *r = api_request_new(p, i, (uint64_t)i + 1, p);
        REQUIRE(r);
        REQUIRE(r->prompt_len == p->prompts[i].n_ids && r->n == p->n &&
                r->index_base == i * p->n && r->max_tokens == p->max_tokens);
        REQUIRE(memcmp(r->prompt, p->prompts[i].ids, (size_t)r->prompt_len * 4) == 0);
        REQUIRE(r->n_stop == p->n_stop && r->sp.n_logit_bias == sp->n_logit_bias);
        REQUIRE(r->n_stop_ids == p->n_stop_ids &&
                memcmp(r->stop_ids, p->stop_ids, sizeof(r->stop_ids)) == 0);
        for (int k = 0; k < r->n_stop; k++)
            REQUIRE(strcmp(r->stop[k], p->stop[k]) == 0 && r->stop[k] != p->stop[k]);
        eng_request_free(r);
    }
}

static void check_utf8(const char *s, size_t n)
{
    size_t m = 0;
    char *fixed = api_utf8_fix(s, n, &m);
    REQUIRE(fixed && fixed[m] == '\0');
    REQUIRE(api_utf8_valid(fixed, m));
    if (api_utf8_valid(s, n))
        REQUIRE(m == n && memcmp(fixed, s, n) == 0);
    free(fixed);
}

static void check_chat(api_chat_t *c)
{
    size_t n = json_array_size(c->messages);
    REQUIRE(n >= 1 && n <= API_MAX_MESSAGES);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(c->messages, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        REQUIRE(role && (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0 ||
                         strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0));
        REQUIRE(json_is_string(json_object_get(m, "content")));
        REQUIRE(json_object_size(m) <= 3);
    }
    REQUIRE(!(c->add_generation_prompt && c->continue_final_message));
    REQUIRE(!c->kwargs || json_is_object(c->kwargs));
    REQUIRE(c->p.n_prompts == 0 && !c->p.prompts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    api_limits_t lim = {.model_name = MODEL, .vocab_size = VOCAB};
    api_error_t e;
    memset(&e, 0, sizeof(e));
    check_utf8(body, size);
    if (size > 0 && data[0] == 'T') {
        char *text = NULL;
        size_t n = 0;
        if (api_tokenize_parse(body + 1, size - 1, &lim, &text, &n, &e) == 0) {
            REQUIRE(text && text[n] == '\0');
            free(text);
        } else {
            check_error(&e);
        }
        return 0;
    }
    if (size > 0 && data[0] == 'D') {
        int32_t *ids = NULL;
        int n = -1;
        if (api_detokenize_parse(body + 1, size - 1, &lim, &ids, &n, &e) == 0) {
            REQUIRE(n >= 0);
            for (int i = 0; i < n; i++)
                REQUIRE(ids[i] >= 0 && ids[i] < VOCAB);
            free(ids);
        } else {
            check_error(&e);
        }
        return 0;
    }
    if (size > 0 && (data[0] == 'C' || data[0] == 'M')) {
        api_chat_t c;
        int rc = data[0] == 'C' ? api_chat_parse(body + 1, size - 1, &lim, &c, &e)
                                : api_chat_tokenize_parse(body + 1, size - 1, &lim, &c, &e);
        if (rc == 1) {
            REQUIRE(data[0] == 'M');
            return 0;
        }
        if (rc != 0) {
            check_error(&e);
            return 0;
        }
        check_chat(&c);
        if (data[0] == 'C') { /* the shared fields, as a one-prompt request */
            REQUIRE(c.max_tokens_set || c.p.max_tokens == 16);
            c.p.prompts = calloc(1, sizeof(*c.p.prompts));
            REQUIRE(c.p.prompts);
            c.p.n_prompts = 1;
            c.p.prompts[0].ids = calloc(1, sizeof(int32_t));
            REQUIRE(c.p.prompts[0].ids);
            c.p.prompts[0].n_ids = 1;
            check_params(&c.p);
        }
        api_chat_free(&c);
        api_chat_free(&c);
        return 0;
    }
    api_params_t p;
    if (api_completion_parse(body, size, &lim, &p, &e) == 0) {
        check_params(&p);
        api_params_free(&p);
        api_params_free(&p); /* freeing twice is safe */
    } else {
        check_error(&e);
        REQUIRE(p.prompts == NULL && p.n_prompts == 0 && p.model == NULL && p.n_stop == 0 &&
                p.sp.logit_bias_ids == NULL);
    }
    return 0;
}
