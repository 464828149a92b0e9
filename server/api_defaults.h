/* api_defaults.h - what a request gets for the sampling fields it leaves out: OpenAI's neutral
 * values, or the ones the model's generation_config.json recommends (private to server/).
 *
 * As vLLM's --generation-config auto: temperature, top_p, top_k, min_p, repetition_penalty
 * and max_new_tokens (as max_tokens) of the file become the defaults of every completions and
 * chat request; a field the request sets (not null) always wins. Parsing is pure (text in,
 * defaults out), so it is unit-tested and fuzzed alone; api_defaults_load reads the file.
 * Loop thread, or the loader thread before the server is ready.
 */
#ifndef NANO_VLLM_SERVER_API_DEFAULTS_H
#define NANO_VLLM_SERVER_API_DEFAULTS_H

#include <stddef.h>

/* Which fields of api_defaults_t the file set (api_defaults_t.from_file). */
enum api_default_bit {
    API_DEF_TEMPERATURE = 1,
    API_DEF_TOP_P = 2,
    API_DEF_TOP_K = 4,
    API_DEF_MIN_P = 8,
    API_DEF_REPETITION_PENALTY = 16,
    API_DEF_MAX_TOKENS = 32,
};

typedef struct api_defaults {
    float temperature;        /* 1; 0 = greedy */
    float top_p;              /* 1 */
    int top_k;                /* 0 = off */
    float min_p;              /* 0 */
    float repetition_penalty; /* 1 */
    int max_tokens;           /* 0 = none: completions take 16, chat the rest of the context;
                               * else the most a request that sets none gets (also capped by the
                               * rest of the context) */
    unsigned from_file;       /* enum api_default_bit: what generation_config.json set */
    int found;                /* 1: api_defaults_load found the file */
    int greedy;               /* 1: the file's do_sample is false, so temperature is 0 */
    char ignored[256];        /* the file's keys that change generation in transformers but are
                               * not applied here, comma separated ("" when none) */
} api_defaults_t;

/* Sets *d to OpenAI's defaults (the neutral values above). */
void api_defaults_init(api_defaults_t *d);

/* Parses a generation_config.json text (len bytes; file names it in errors) into *d, which
 * starts from api_defaults_init. A null field counts as absent; a field equal to
 * transformers' own default (temperature 1, top_p 1, top_k 50, repetition_penalty 1) is not
 * applied, as vLLM reads only the fields that differ from it; do_sample false makes the
 * default temperature 0 (greedy), as transformers generates. A value transformers or vLLM
 * would refuse when generating is refused here, at start: returns -EINVAL with one line
 * naming the file and the key, e.g.
 *   "generation_config.json: temperature -0.5 is negative"
 *   "generation_config.json: top_p must be a number, got a string"
 * Text that is not a JSON object is -EINVAL too. */
int api_defaults_parse(const char *text, size_t len, const char *file, api_defaults_t *d, char *err,
                       size_t errlen);

/* Reads dir/generation_config.json into *d with api_defaults_parse. No such file leaves *d
 * at OpenAI's defaults and returns 0; one that cannot be read is -errno with the reason. */
int api_defaults_load(const char *dir, api_defaults_t *d, char *err, size_t errlen);

/* Writes the defaults the file set, as "temperature 0.6, top_p 0.9" ("" when none). */
void api_defaults_describe(const api_defaults_t *d, char *buf, size_t n);

#endif
