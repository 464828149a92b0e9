/* api_defaults.c - request defaults from a model's generation_config.json (api_defaults.h).
 *
 * vLLM (--generation-config auto, its default) takes transformers' GenerationConfig of the
 * model, keeps the fields that differ from transformers' defaults (to_diff_dict) and uses
 * temperature, top_p, top_k, min_p, repetition_penalty and max_new_tokens of them where a
 * request leaves a field unset. This does the same from the JSON text, with one addition
 * transformers makes: do_sample false means greedy. The file comes from outside: any text
 * gets a return code and never a crash (tests/fuzz/fuzz_api_defaults.c).
 */
#include "server/api_defaults.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_defaults_init(api_defaults_t *d)
{
    memset(d, 0, sizeof(*d));
    d->temperature = 1.0f;
    d->top_p = 1.0f;
    d->repetition_penalty = 1.0f;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        /* Keys come from the file: keep the message one printable line. */
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    return -EINVAL;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "a number";
    }
}

/* A number field; 1 when present (not null), 0 when absent, -EINVAL for another type. */
static int get_number(json_t *root, const char *file, const char *key, double *out, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return fail(err, errlen, "%s: %s must be a number, got %s", file, key, type_name(v));
    *out = json_number_value(v);
    return 1;
}

/* An integer field: a JSON integer, or a real without a fraction (Python reads 20.0 as a
 * number all the same). Same returns as get_number. */
static int get_integer(json_t *root, const char *file, const char *key, long long lo, long long hi,
                       long long *out, char *err, size_t errlen)
{
    double d = 0; /* set when rc > 0; gcc -O3 cannot see that */
    int rc = get_number(root, file, key, &d, err, errlen);
    if (rc <= 0)
        return rc;
    json_t *v = json_object_get(root, key);
    if (json_is_integer(v))
        *out = json_integer_value(v);
    else if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18)
        *out = (long long)d;
    else
        return fail(err, errlen, "%s: %s must be an integer, got %g", file, key, d);
    if (*out < lo || *out > hi)
        return fail(err, errlen, "%s: %s %lld is out of range (%lld-%lld)", file, key, *out, lo,
                    hi);
    return 1;
}

/* Keys the engine uses elsewhere (the EOS ids end a completion) or that say nothing about
 * what is generated; every other key in the file that is not applied is named as ignored. */
static const char *const quiet_keys[] = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "transformers_version",
    "_from_model_config",
    "do_sample",
    "use_cache",
    "return_dict_in_generate",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "max_new_tokens",
    "cache_implementation",
};

static void list_ignored(json_t *root, api_defaults_t *d)
{
    const char *key;
    json_t *v;
    size_t used = 0, cap = sizeof(d->ignored);
    json_object_foreach(root, key, v)
    {
        if (json_is_null(v))
            continue;
        int quiet = 0;
        for (size_t i = 0; i < sizeof(quiet_keys) / sizeof(quiet_keys[0]) && !quiet; i++)
            quiet = strcmp(key, quiet_keys[i]) == 0;
        if (quiet)
            continue;
        /* Room for ", ...": a long list ends so rather than cut a name. */
        size_t n = strlen(key);
        if (used + n + 2 + 5 >= cap) {
            if (used + 5 < cap)
                used += (size_t)snprintf(d->ignored + used, cap - used, "%s...", used ? ", " : "");
            break;
        }
        used += (size_t)snprintf(d->ignored + used, cap - used, "%s%s", used ? ", " : "", key);
    }
    for (char *p = d->ignored; *p; p++) /* keys from the file go into a log line */
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

static int parse_root(json_t *root, const char *file, api_defaults_t *d, char *err, size_t errlen)
{
    double x = 0;
    long long k = 0;
    int rc;
    /* Each check is what vLLM's SamplingParams (or transformers' logits processors) refuse;
     * transformers' own defaults are not applied (vLLM's to_diff_dict). */
    if ((rc = get_number(root, file, "temperature", &x, err, errlen)) < 0)
        return rc;
    if (rc && x < 0)
        return fail(err, errlen, "%s: temperature %g is negative", file, x);
    if (rc && x > FLT_MAX)
        return fail(err, errlen, "%s: temperature %g is too large", file, x);
    if (rc && x != 1.0) {
        d->temperature = (float)x;
        d->from_file |= API_DEF_TEMPERATURE;
    }
    if ((rc = get_number(root, file, "top_p", &x, err, errlen)) < 0)
        return rc;
    if (rc && !(x > 0 && x <= 1 && (float)x > 0)) /* (float: a 1e-50 would become 0) */
        return fail(err, errlen, "%s: top_p %g is not in (0, 1]", file, x);
    if (rc && x != 1.0) {
        d->top_p = (float)x;
        d->from_file |= API_DEF_TOP_P;
    }
    /* -1 and 0 turn top-k off (vLLM); a k beyond the vocabulary keeps every token. */
    if ((rc = get_integer(root, file, "top_k", -1, INT32_MAX, &k, err, errlen)) < 0)
        return rc;
    if (rc && k != 50) {
        d->top_k = k < 0 ? 0 : (int)k;
        d->from_file |= API_DEF_TOP_K;
    }
    if ((rc = get_number(root, file, "min_p", &x, err, errlen)) < 0)
        return rc;
    if (rc && !(x >= 0 && x <= 1))
        return fail(err, errlen, "%s: min_p %g is not in [0, 1]", file, x);
    if (rc) {
        d->min_p = (float)x;
        d->from_file |= API_DEF_MIN_P;
    }
    if ((rc = get_number(root, file, "repetition_penalty", &x, err, errlen)) < 0)
        return rc;
    if (rc && !(x > 0 && (float)x > 0))
        return fail(err, errlen, "%s: repetition_penalty %g is not positive", file, x);
    if (rc && x > FLT_MAX)
        return fail(err, errlen, "%s: repetition_penalty %g is too large", file, x);
    if (rc && x != 1.0) {
        d->repetition_penalty = (float)x;
        d->from_file |= API_DEF_REPETITION_PENALTY;
    }
    /* transformers' GenerationConfig refuses max_new_tokens <= 0 when it loads. */
    if ((rc = get_integer(root, file, "max_new_tokens", 1, INT32_MAX, &k, err, errlen)) < 0)
        return rc;
    if (rc) {
        d->max_tokens = (int)k;
        d->from_file |= API_DEF_MAX_TOKENS;
    }
    json_t *ds = json_object_get(root, "do_sample");
    if (ds && !json_is_null(ds) && !json_is_boolean(ds))
        return fail(err, errlen, "%s: do_sample must be true or false, got %s", file,
                    type_name(ds));
    if (json_is_false(ds)) {
        d->greedy = 1;
        d->temperature = 0.0f;
        d->from_file |= API_DEF_TEMPERATURE;
    }
    list_ignored(root, d);
    return 0;
}

int api_defaults_parse(const char *text, size_t len, const char *file, api_defaults_t *d, char *err,
                       size_t errlen)
{
    api_defaults_init(d);
    if (err && errlen)
        err[0] = '\0';
    json_error_t jerr;
    /* As Python's json module: a repeated key keeps its last value. */
    json_t *root = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!root)
        return fail(err, errlen, "%s: invalid JSON: %s (line %d, column %d)", file, jerr.text,
                    jerr.line, jerr.column);
    int rc = json_is_object(root) ? parse_root(root, file, d, err, errlen)
                                  : fail(err, errlen, "%s: not a JSON object", file);
    json_decref(root);
    if (rc) {
        api_defaults_init(d);
        return rc;
    }
    return 0;
}

/* A generation_config.json is a few hundred bytes; anything past this is not one. */
#define MAX_FILE_BYTES (1 << 20)

int api_defaults_load(const char *dir, api_defaults_t *d, char *err, size_t errlen)
{
    static const char name[] = "generation_config.json";
    api_defaults_init(d);
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        return fail(err, errlen, "%s: the path is too long", name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        int rc = -errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
        return rc;
    }
    char *buf = malloc(MAX_FILE_BYTES + 1);
    errno = 0;
    size_t n = buf ? fread(buf, 1, MAX_FILE_BYTES + 1, f) : 0;
    int rc = 0;
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", name);
        rc = -ENOMEM;
    } else if (ferror(f)) {
        rc = errno ? -errno : -EIO; /* a directory of that name: EISDIR */
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
    } else if (n > MAX_FILE_BYTES) {
        rc = fail(err, errlen, "%s: larger than %d bytes", name, MAX_FILE_BYTES);
    } else {
        rc = api_defaults_parse(buf, n, name, d, err, errlen);
        d->found = rc == 0;
    }
    free(buf);
    fclose(f);
    return rc;
}

void api_defaults_describe(const api_defaults_t *d, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (used < n)                                                                              \
            used += (size_t)snprintf(buf + used, n - used, __VA_ARGS__);                           \
    } while (0)
    if (d->from_file & API_DEF_TEMPERATURE)
        PUT("%stemperature %g%s", used ? ", " : "", d->temperature,
            d->greedy ? " (do_sample false)" : "");
    if (d->from_file & API_DEF_TOP_P)
        PUT("%stop_p %g", used ? ", " : "", d->top_p);
    if (d->from_file & API_DEF_TOP_K)
        PUT("%stop_k %d", used ? ", " : "", d->top_k);
    if (d->from_file & API_DEF_MIN_P)
        PUT("%smin_p %g", used ? ", " : "", d->min_p);
    if (d->from_file & API_DEF_REPETITION_PENALTY)
        PUT("%srepetition_penalty %g", used ? ", " : "", d->repetition_penalty);
    if (d->from_file & API_DEF_MAX_TOKENS)
        PUT("%smax_tokens %d", used ? ", " : "", d->max_tokens);
#undef PUT
}
