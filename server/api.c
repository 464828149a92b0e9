/* api.c - parses and validates OpenAI completions (and tokenize/detokenize) requests.
 *
 * Every field OpenAI's and vLLM's completions API accept here is checked for its type and
 * range; null means "default"; a field we do not know or do not support is a 400 that
 * names it, never silently ignored. The parser is pure (see api.h).
 */
#include "server/api.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api_defaults.h"

#define INVALID "invalid_request_error"

static int bad(api_error_t *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(api_error_t *e, const char *param, const char *fmt, ...)
{
    e->status = 400;
    e->type = INVALID;
    e->code = NULL;
    snprintf(e->param, sizeof(e->param), "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return -1;
}

/* An integer field: a JSON integer, or a real with no fraction (as pydantic accepts). */
static int get_int(json_t *v, const char *name, long long lo, long long hi, long long *out,
                   api_error_t *e)
{
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || d != floor(d) || d < -9.2e18 || d > 9.2e18)
            return bad(e, name, "'%s' must be an integer, got %g", name, d);
        x = (long long)d;
    } else {
        return bad(e, name, "'%s' must be an integer", name);
    }
    if (x < lo || x > hi)
        return bad(e, name, "'%s' must be between %lld and %lld, got %lld", name, lo, hi, x);
    *out = x;
    return 0;
}

/* A number field in [lo, hi] (or (lo, hi] when lo_open). */
static int get_num(json_t *v, const char *name, double lo, double hi, int lo_open, float *out,
                   api_error_t *e)
{
    if (!json_is_number(v))
        return bad(e, name, "'%s' must be a number", name);
    double d = json_number_value(v);
    if (isnan(d) || (lo_open ? d <= lo : d < lo) || d > hi)
        return bad(e, name, "'%s' must be %s %g and <= %g, got %g", name, lo_open ? ">" : ">=", lo,
                   hi, d);
    *out = (float)d;
    return 0;
}

static int get_bool(json_t *v, const char *name, int *out, api_error_t *e)
{
    if (!json_is_boolean(v))
        return bad(e, name, "'%s' must be a boolean", name);
    *out = json_is_true(v);
    return 0;
}

static int oom(api_error_t *e)
{
    return api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* Reads a JSON array of token ids into a malloc'd array. */
static int get_ids(json_t *arr, const char *name, int vocab, int32_t **ids, int *n, api_error_t *e)
{
    size_t len = json_array_size(arr);
    if (len == 0)
        return bad(e, name, "'%s' must not be an empty list of token ids", name);
    if (len > INT_MAX / 2)
        return bad(e, name, "'%s' has too many token ids", name);
    int32_t *out = malloc(len * sizeof(*out));
    if (!out)
        return oom(e);
    for (size_t i = 0; i < len; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v)) {
            free(out);
            return bad(e, name, "'%s' token %zu is not an integer", name, i);
        }
        long long id = json_integer_value(v);
        long long hi = vocab > 0 ? vocab - 1 : INT32_MAX;
        if (id < 0 || id > hi) {
            free(out);
            return bad(e, name, "'%s' token id %lld is out of range (0-%lld)", name, id, hi);
        }
        out[i] = (int32_t)id;
    }
    *ids = out;
    *n = (int)len;
    return 0;
}

static int set_text_prompt(api_prompt_t *pr, const char *s, size_t len, api_error_t *e)
{
    pr->text = malloc(len + 1);
    if (!pr->text)
        return oom(e);
    memcpy(pr->text, s, len);
    pr->text[len] = '\0';
    pr->text_len = len;
    return 0;
}

/* "prompt": a string, a list of strings, a list of ids, or a list of lists of ids. */
static int parse_prompt(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    if (json_is_string(v)) {
        p->prompts = calloc(1, sizeof(*p->prompts));
        if (!p->prompts)
            return oom(e);
        p->n_prompts = 1;
        return set_text_prompt(&p->prompts[0], json_string_value(v), json_string_length(v), e);
    }
    if (!json_is_array(v))
        return bad(e, "prompt",
                   "'prompt' must be a string, a list of strings, a list of token ids or a "
                   "list of lists of token ids");
    size_t len = json_array_size(v);
    if (len == 0)
        return bad(e, "prompt", "'prompt' must not be an empty list");
    json_t *first = json_array_get(v, 0);
    if (json_is_number(first)) { /* one prompt as token ids */
        p->prompts = calloc(1, sizeof(*p->prompts));
        if (!p->prompts)
            return oom(e);
        p->n_prompts = 1;
        return get_ids(v, "prompt", lim->vocab_size, &p->prompts[0].ids, &p->prompts[0].n_ids, e);
    }
    if (len > API_MAX_PROMPTS)
        return bad(e, "prompt", "'prompt' has %zu prompts; at most %d are allowed", len,
                   API_MAX_PROMPTS);
    p->prompts = calloc(len, sizeof(*p->prompts));
    if (!p->prompts)
        return oom(e);
    p->n_prompts = (int)len;
    int strings = json_is_string(first);
    for (size_t i = 0; i < len; i++) {
        json_t *x = json_array_get(v, i);
        if (strings && json_is_string(x)) {
            if (set_text_prompt(&p->prompts[i], json_string_value(x), json_string_length(x), e))
                return -1;
        } else if (!strings && json_is_array(x)) {
            if (get_ids(x, "prompt", lim->vocab_size, &p->prompts[i].ids, &p->prompts[i].n_ids, e))
                return -1;
        } else {
            return bad(e, "prompt",
                       "'prompt' must be a string, a list of strings, a list of token ids or a "
                       "list of lists of token ids (element %zu does not match)",
                       i);
        }
    }
    return 0;
}

static int parse_stop(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    (void)lim;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0)
            return bad(e, "stop", "'stop' must not be an empty string");
        if (json_string_length(v) > API_MAX_STOP_BYTES)
            return bad(e, "stop", "'stop' is longer than %d bytes", API_MAX_STOP_BYTES);
        if (!(p->stop[0] = strdup(json_string_value(v))))
            return oom(e);
        p->n_stop = 1;
        return 0;
    }
    if (!json_is_array(v))
        return bad(e, "stop", "'stop' must be a string or a list of strings");
    if (json_array_size(v) > ENG_MAX_STOPS)
        return bad(e, "stop", "'stop' has %zu entries; at most %d are allowed", json_array_size(v),
                   ENG_MAX_STOPS);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s))
            return bad(e, "stop", "'stop' entry %zu is not a string", i);
        if (json_string_length(s) == 0)
            return bad(e, "stop", "'stop' entry %zu is an empty string", i);
        if (json_string_length(s) > API_MAX_STOP_BYTES)
            return bad(e, "stop", "'stop' entry %zu is longer than %d bytes", i,
                       API_MAX_STOP_BYTES);
        if (memchr(json_string_value(s), '\0', json_string_length(s)))
            return bad(e, "stop", "'stop' entry %zu contains a NUL character", i);
        if (!(p->stop[p->n_stop] = strdup(json_string_value(s))))
            return oom(e);
        p->n_stop++;
    }
    return 0;
}

/* "stop_token_ids": [id, ...] (vLLM's): generation ends at any of them. */
static int parse_stop_ids(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    if (!json_is_array(v))
        return bad(e, "stop_token_ids", "'stop_token_ids' must be a list of token ids");
    if (json_array_size(v) > API_MAX_STOP_IDS)
        return bad(e, "stop_token_ids", "'stop_token_ids' has %zu entries; at most %d are allowed",
                   json_array_size(v), API_MAX_STOP_IDS);
    if (json_array_size(v) == 0)
        return 0;
    int32_t *ids;
    int n;
    if (get_ids(v, "stop_token_ids", lim->vocab_size, &ids, &n, e))
        return -1;
    memcpy(p->stop_ids, ids, (size_t)n * sizeof(int32_t));
    p->n_stop_ids = n;
    free(ids);
    return 0;
}

/* "logit_bias": {"token id": bias in [-100, 100], ...}. */
static int parse_logit_bias(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    if (!json_is_object(v))
        return bad(e, "logit_bias", "'logit_bias' must be an object of token id -> bias");
    size_t n = json_object_size(v);
    if (n == 0)
        return 0;
    if (n > API_MAX_LOGIT_BIAS)
        return bad(e, "logit_bias", "'logit_bias' has %zu entries; at most %d are allowed", n,
                   API_MAX_LOGIT_BIAS);
    p->sp.logit_bias_ids = malloc(n * sizeof(int32_t));
    p->sp.logit_bias_values = malloc(n * sizeof(float));
    if (!p->sp.logit_bias_ids || !p->sp.logit_bias_values)
        return oom(e);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        char *end;
        errno = 0;
        long long id = strtoll(key, &end, 10);
        long long hi = lim->vocab_size > 0 ? lim->vocab_size - 1 : INT32_MAX;
        if (end == key || *end != '\0' || errno)
            return bad(e, "logit_bias", "'logit_bias' key '%.40s' is not a token id", key);
        if (id < 0 || id > hi)
            return bad(e, "logit_bias", "'logit_bias' token id %lld is out of range (0-%lld)", id,
                       hi);
        float b = 0.0f; /* set by get_num; gcc -O3 cannot see that on every path */
        if (get_num(val, "logit_bias", -100.0, 100.0, 0, &b, e))
            return -1;
        p->sp.logit_bias_ids[p->sp.n_logit_bias] = (int32_t)id;
        p->sp.logit_bias_values[p->sp.n_logit_bias] = b;
        p->sp.n_logit_bias++;
    }
    return 0;
}

static int parse_stream_options(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    (void)lim;
    if (!json_is_object(v))
        return bad(e, "stream_options", "'stream_options' must be an object");
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (strcmp(key, "include_usage") == 0) {
            if (!json_is_null(val) &&
                get_bool(val, "stream_options.include_usage", &p->include_usage, e))
                return -1;
        } else if (strcmp(key, "continuous_usage_stats") == 0) {
            int on = 0;
            if (!json_is_null(val) &&
                get_bool(val, "stream_options.continuous_usage_stats", &on, e))
                return -1;
            if (on)
                return bad(e, "stream_options.continuous_usage_stats",
                           "'stream_options.continuous_usage_stats' is not supported");
        } else {
            return bad(e, "stream_options", "unknown field 'stream_options.%.40s'", key);
        }
    }
    return 0;
}

static int parse_model(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    (void)lim;
    if (!json_is_string(v))
        return bad(e, "model", "'model' must be a string");
    if (!(p->model = strdup(json_string_value(v))))
        return oom(e);
    return 0;
}

static int parse_top_k(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    /* vLLM: -1 (or 0) turns it off. */
    long long x = 0;
    if (get_int(v, "top_k", -1, lim->vocab_size > 0 ? lim->vocab_size : INT32_MAX, &x, e))
        return -1;
    p->sp.top_k = x < 0 ? 0 : (int)x;
    return 0;
}

static int parse_seed(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    (void)lim;
    long long x = 0;
    if (get_int(v, "seed", LLONG_MIN, LLONG_MAX, &x, e))
        return -1;
    p->sp.seed = (uint64_t)x;
    p->sp.has_seed = 1;
    return 0;
}

static int parse_user(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    (void)lim;
    if (!json_is_string(v))
        return bad(e, "user", "'user' must be a string");
    if (!(p->user = strdup(json_string_value(v))))
        return oom(e);
    return 0;
}

static int parse_suffix(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e)
{
    (void)v, (void)lim, (void)p;
    return bad(e, "suffix", "'suffix' is not supported by this model");
}

/* The request's top-level fields, one row each (as config/'s settings table): a number, an
 * integer or a boolean stored at an offset in api_params_t, or a function for the rest. */
enum field_type { FIELD_INT, FIELD_NUM, FIELD_BOOL, FIELD_FN };

typedef struct field {
    const char *key;
    int type;      /* enum field_type */
    size_t offset; /* FIELD_INT, FIELD_BOOL: of an int in api_params_t; FIELD_NUM: of a float */
    double lo, hi; /* FIELD_INT, FIELD_NUM: the range, inclusive */
    int lo_open;   /* FIELD_NUM: lo itself is out of range */
    int (*parse)(json_t *v, const api_limits_t *lim, api_params_t *p, api_error_t *e);
} field_t;

#define AT(member) offsetof(api_params_t, member)
static const field_t fields[] = {
    {"model", FIELD_FN, 0, 0, 0, 0, parse_model},
    {"prompt", FIELD_FN, 0, 0, 0, 0, parse_prompt},
    {"max_tokens", FIELD_INT, AT(max_tokens), 0, INT32_MAX, 0, NULL},
    {"temperature", FIELD_NUM, AT(sp.temperature), 0.0, 2.0, 0, NULL},
    {"top_p", FIELD_NUM, AT(sp.top_p), 0.0, 1.0, 1, NULL},
    {"top_k", FIELD_FN, 0, 0, 0, 0, parse_top_k},
    {"min_p", FIELD_NUM, AT(sp.min_p), 0.0, 1.0, 0, NULL},
    {"n", FIELD_INT, AT(n), 1, API_MAX_N, 0, NULL},
    {"best_of", FIELD_INT, AT(best_of), 1, API_MAX_N, 0, NULL},
    {"stream", FIELD_BOOL, AT(stream), 0, 0, 0, NULL},
    {"stream_options", FIELD_FN, 0, 0, 0, 0, parse_stream_options},
    {"logprobs", FIELD_INT, AT(logprobs), 0, ENG_MAX_LOGPROBS, 0, NULL},
    {"echo", FIELD_BOOL, AT(echo), 0, 0, 0, NULL},
    {"stop", FIELD_FN, 0, 0, 0, 0, parse_stop},
    {"stop_token_ids", FIELD_FN, 0, 0, 0, 0, parse_stop_ids},
    {"presence_penalty", FIELD_NUM, AT(sp.presence_penalty), -2.0, 2.0, 0, NULL},
    {"frequency_penalty", FIELD_NUM, AT(sp.frequency_penalty), -2.0, 2.0, 0, NULL},
    {"repetition_penalty", FIELD_NUM, AT(sp.repetition_penalty), 0.0, 10.0, 1, NULL},
    {"logit_bias", FIELD_FN, 0, 0, 0, 0, parse_logit_bias},
    {"seed", FIELD_FN, 0, 0, 0, 0, parse_seed},
    {"user", FIELD_FN, 0, 0, 0, 0, parse_user},
    {"ignore_eos", FIELD_BOOL, AT(ignore_eos), 0, 0, 0, NULL},
    {"suffix", FIELD_FN, 0, 0, 0, 0, parse_suffix},
};
#undef AT

/* One top-level field of the request. */
int api_params_field(const char *key, json_t *v, const api_limits_t *lim, api_params_t *p,
                     api_error_t *e)
{
    const field_t *f = NULL;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]) && !f; i++)
        if (strcmp(key, fields[i].key) == 0)
            f = &fields[i];
    if (!f)
        return bad(e, key, "unknown field '%.40s'", key);
    void *at = (char *)p + f->offset;
    long long x = 0;
    switch (f->type) {
    case FIELD_INT:
        if (get_int(v, key, (long long)f->lo, (long long)f->hi, &x, e))
            return -1;
        *(int *)at = (int)x;
        return 0;
    case FIELD_NUM:
        return get_num(v, key, f->lo, f->hi, f->lo_open, (float *)at, e);
    case FIELD_BOOL:
        return get_bool(v, key, (int *)at, e);
    default:
        return f->parse(v, lim, p, e);
    }
}

void api_params_init(api_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->max_tokens = 16;
    p->n = 1;
    p->logprobs = -1;
    eng_sampling_default(&p->sp);
}

void api_params_defaults(api_params_t *p, const api_defaults_t *d)
{
    if (!d)
        return;
    p->sp.temperature = d->temperature;
    p->sp.top_p = d->top_p;
    p->sp.top_k = d->top_k;
    p->sp.min_p = d->min_p;
    p->sp.repetition_penalty = d->repetition_penalty;
    if (d->max_tokens > 0)
        p->max_tokens = d->max_tokens;
}

int api_json_object(const char *body, size_t len, json_t **root, api_error_t *e)
{
    json_error_t jerr;
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!*root)
        return bad(e, "", "invalid JSON in the request body: %s (line %d, column %d)", jerr.text,
                   jerr.line, jerr.column);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return bad(e, "", "the request body must be a JSON object");
    }
    return 0;
}

int api_completion_parse(const char *body, size_t len, const api_limits_t *lim, api_params_t *p,
                         api_error_t *e)
{
    api_params_init(p);
    api_params_defaults(p, lim->defaults);
    json_t *root;
    if (api_json_object(body, len, &root, e))
        return -1;
    int rc = -1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (json_is_null(v))
            continue; /* null is the default, as in OpenAI's API */
        if (api_params_field(key, v, lim, p, e))
            goto out;
        p->max_tokens_set |= strcmp(key, "max_tokens") == 0;
    }

    if (p->model && lim->model_name && strcmp(p->model, lim->model_name) != 0) {
        api_error_set(e, 404, INVALID, "model_not_found", "model",
                      "The model '%.200s' does not exist; this server serves '%.200s'", p->model,
                      lim->model_name);
        goto out;
    }
    if (p->best_of && p->best_of != p->n) {
        bad(e, "best_of", "'best_of' %d is not supported: only best_of equal to n (%d)", p->best_of,
            p->n);
        goto out;
    }
    if (p->include_usage && !p->stream) {
        bad(e, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        goto out;
    }
    if (p->max_tokens == 0 && !p->echo) {
        bad(e, "max_tokens", "'max_tokens' must be at least 1 (0 is allowed only with 'echo')");
        goto out;
    }
    if (!p->prompts) { /* OpenAI's default prompt */
        p->prompts = calloc(1, sizeof(*p->prompts));
        if (!p->prompts || set_text_prompt(&p->prompts[0], "<|endoftext|>", 13, e)) {
            oom(e);
            goto out;
        }
        p->n_prompts = 1;
    }
    if ((long long)p->n_prompts * p->n > API_MAX_CHOICES) {
        bad(e, "n", "%d prompts times n = %d is more than %d choices", p->n_prompts, p->n,
            API_MAX_CHOICES);
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc)
        api_params_free(p);
    return rc;
}

void api_params_free(api_params_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_prompts; i++) {
        free(p->prompts[i].text);
        free(p->prompts[i].ids);
    }
    free(p->prompts);
    for (int i = 0; i < p->n_stop; i++)
        free(p->stop[i]);
    free(p->model);
    free(p->user);
    free(p->sp.logit_bias_ids);
    free(p->sp.logit_bias_values);
    memset(p, 0, sizeof(*p));
    p->logprobs = -1;
}

int api_check_context(const api_params_t *p, int max_model_len, api_error_t *e)
{
    for (int i = 0; i < p->n_prompts; i++) {
        long long want = (long long)p->prompts[i].n_ids + p->max_tokens;
        if (want > max_model_len)
            return api_error_set(
                e, 400, INVALID, "context_length_exceeded", "prompt",
                "This model's maximum context length is %d tokens. However, you requested %lld "
                "tokens (%d in the prompt, %d in the completion). Please reduce the length of "
                "the prompt or completion.",
                max_model_len, want, p->prompts[i].n_ids, p->max_tokens);
    }
    return 0;
}

eng_request_t *api_request_new(const api_params_t *p, int i, uint64_t id, void *user)
{
    eng_request_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    const api_prompt_t *pr = &p->prompts[i];
    r->id = id;
    r->user = user;
    r->prompt_len = pr->n_ids;
    r->n = p->n;
    r->index_base = i * p->n;
    r->max_tokens = p->max_tokens;
    r->ignore_eos = p->ignore_eos;
    r->n_stop_ids = p->n_stop_ids;
    memcpy(r->stop_ids, p->stop_ids, sizeof(r->stop_ids));
    r->sp = p->sp;
    r->sp.logit_bias_ids = NULL;
    r->sp.logit_bias_values = NULL;
    r->sp.logprobs = p->logprobs;
    /* Echo needs the prompt's logprobs only when logprobs were asked for; scoring
     * (max_tokens 0) always runs the prompt through the model. */
    r->sp.prompt_logprobs = p->echo && (p->logprobs >= 0 || p->max_tokens == 0)
                                ? (p->logprobs >= 0 ? p->logprobs : 0)
                                : -1;
    if (!(r->prompt = malloc((size_t)pr->n_ids * sizeof(int32_t))))
        goto fail;
    memcpy(r->prompt, pr->ids, (size_t)pr->n_ids * sizeof(int32_t));
    for (int k = 0; k < p->n_stop; k++) {
        if (!(r->stop[k] = strdup(p->stop[k])))
            goto fail;
        r->n_stop++;
    }
    if (p->sp.n_logit_bias > 0) {
        size_t nb = (size_t)p->sp.n_logit_bias;
        r->sp.logit_bias_ids = malloc(nb * sizeof(int32_t));
        r->sp.logit_bias_values = malloc(nb * sizeof(float));
        if (!r->sp.logit_bias_ids || !r->sp.logit_bias_values)
            goto fail;
        memcpy(r->sp.logit_bias_ids, p->sp.logit_bias_ids, nb * sizeof(int32_t));
        memcpy(r->sp.logit_bias_values, p->sp.logit_bias_values, nb * sizeof(float));
    }
    return r;
fail:
    eng_request_free(r);
    return NULL;
}

static int check_model(json_t *root, const api_limits_t *lim, api_error_t *e)
{
    json_t *m = json_object_get(root, "model");
    if (!m || json_is_null(m))
        return 0;
    if (!json_is_string(m))
        return bad(e, "model", "'model' must be a string");
    if (lim->model_name && strcmp(json_string_value(m), lim->model_name) != 0)
        return api_error_set(e, 404, INVALID, "model_not_found", "model",
                             "The model '%.200s' does not exist; this server serves '%.200s'",
                             json_string_value(m), lim->model_name);
    return 0;
}

int api_tokenize_parse(const char *body, size_t len, const api_limits_t *lim, char **text,
                       size_t *text_len, api_error_t *e)
{
    json_t *root;
    if (api_json_object(body, len, &root, e))
        return -1;
    int rc = -1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "model") == 0 || strcmp(key, "prompt") == 0)
            continue;
        if (strcmp(key, "add_special_tokens") == 0) {
            int dummy; /* GPT-2 adds no special tokens either way */
            if (!json_is_null(v) && get_bool(v, key, &dummy, e))
                goto out;
            continue;
        }
        bad(e, key, "unknown field '%.40s'", key);
        goto out;
    }
    if (check_model(root, lim, e))
        goto out;
    json_t *pr = json_object_get(root, "prompt");
    if (!pr || !json_is_string(pr)) {
        bad(e, "prompt", "'prompt' must be a string");
        goto out;
    }
    *text_len = json_string_length(pr);
    if (!(*text = malloc(*text_len + 1))) {
        oom(e);
        goto out;
    }
    memcpy(*text, json_string_value(pr), *text_len + 1);
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int api_detokenize_parse(const char *body, size_t len, const api_limits_t *lim, int32_t **ids,
                         int *n_ids, api_error_t *e)
{
    json_t *root;
    if (api_json_object(body, len, &root, e))
        return -1;
    int rc = -1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "model") != 0 && strcmp(key, "tokens") != 0) {
            bad(e, key, "unknown field '%.40s'", key);
            goto out;
        }
    }
    if (check_model(root, lim, e))
        goto out;
    json_t *t = json_object_get(root, "tokens");
    if (!t || !json_is_array(t)) {
        bad(e, "tokens", "'tokens' must be a list of token ids");
        goto out;
    }
    if (json_array_size(t) == 0) {
        *ids = malloc(sizeof(int32_t));
        *n_ids = 0;
        rc = *ids ? 0 : oom(e);
        goto out;
    }
    rc = get_ids(t, "tokens", lim->vocab_size, ids, n_ids, e);
out:
    json_decref(root);
    return rc;
}
