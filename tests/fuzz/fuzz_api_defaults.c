/* fuzz_api_defaults.c - libFuzzer harness for server/api_defaults.c: a generation_config.json
 * text in, request defaults out.
 *
 * Checks, beyond "no crash, no leak":
 *   - a refused file gives -EINVAL with one printable line that starts with the file's name,
 *     and leaves the defaults at OpenAI's;
 *   - accepted defaults are what the sampler and the request parser accept: temperature
 *     finite and >= 0, top_p in (0, 1], top_k >= 0, min_p in [0, 1], repetition_penalty
 *     finite and > 0, max_tokens >= 0; a field the file did not set keeps OpenAI's value;
 *     the list of ignored keys is one printable line; the description fits its buffer;
 *   - a completions request with no sampling fields gets exactly those defaults, and one
 *     that sets them all gets its own values (request fields win).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "server/api_defaults.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void require_line(const char *s, size_t cap)
{
    REQUIRE(memchr(s, '\0', cap) != NULL);
    for (const char *p = s; *p; p++)
        REQUIRE((unsigned char)*p >= 0x20 && *p != 0x7f);
}

static void require_openai(const api_defaults_t *d, unsigned except)
{
    if (!(except & API_DEF_TEMPERATURE))
        REQUIRE(d->temperature == 1.0f);
    if (!(except & API_DEF_TOP_P))
        REQUIRE(d->top_p == 1.0f);
    if (!(except & API_DEF_TOP_K))
        REQUIRE(d->top_k == 0);
    if (!(except & API_DEF_MIN_P))
        REQUIRE(d->min_p == 0.0f);
    if (!(except & API_DEF_REPETITION_PENALTY))
        REQUIRE(d->repetition_penalty == 1.0f);
    if (!(except & API_DEF_MAX_TOKENS))
        REQUIRE(d->max_tokens == 0);
}

/* The defaults reach a request that leaves the fields out, and lose to one that sets them. */
static void check_requests(const api_defaults_t *d)
{
    api_limits_t lim = {"tiny", 50257, d};
    api_params_t p;
    api_error_t e;
    static const char bare[] = "{\"prompt\": \"x\"}";
    REQUIRE(api_completion_parse(bare, sizeof(bare) - 1, &lim, &p, &e) == 0);
    REQUIRE(p.sp.temperature == d->temperature && p.sp.top_p == d->top_p);
    REQUIRE(p.sp.top_k == d->top_k && p.sp.min_p == d->min_p);
    REQUIRE(p.sp.repetition_penalty == d->repetition_penalty);
    REQUIRE(p.max_tokens == (d->max_tokens > 0 ? d->max_tokens : 16) && !p.max_tokens_set);
    api_params_free(&p);
    static const char own[] = "{\"prompt\": \"x\", \"temperature\": 0.5, \"top_p\": 0.25, "
                              "\"top_k\": 3, \"min_p\": 0.125, \"repetition_penalty\": 1.5, "
                              "\"max_tokens\": 7}";
    REQUIRE(api_completion_parse(own, sizeof(own) - 1, &lim, &p, &e) == 0);
    REQUIRE(p.sp.temperature == 0.5f && p.sp.top_p == 0.25f && p.sp.top_k == 3);
    REQUIRE(p.sp.min_p == 0.125f && p.sp.repetition_penalty == 1.5f);
    REQUIRE(p.max_tokens == 7 && p.max_tokens_set);
    api_params_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    api_defaults_t d;
    char err[256];
    int rc = api_defaults_parse((const char *)data, size, "generation_config.json", &d, err,
                                sizeof(err));
    if (rc) {
        REQUIRE(rc == -EINVAL);
        require_line(err, sizeof(err));
        REQUIRE(strncmp(err, "generation_config.json: ", 24) == 0);
        require_openai(&d, 0);
        REQUIRE(d.from_file == 0 && d.ignored[0] == '\0');
        return 0;
    }
    require_openai(&d, d.from_file);
    REQUIRE(isfinite(d.temperature) && d.temperature >= 0);
    REQUIRE(d.top_p > 0 && d.top_p <= 1);
    REQUIRE(d.top_k >= 0);
    REQUIRE(d.min_p >= 0 && d.min_p <= 1);
    REQUIRE(isfinite(d.repetition_penalty) && d.repetition_penalty > 0);
    REQUIRE(d.max_tokens >= 0);
    REQUIRE(!d.greedy || d.temperature == 0.0f);
    require_line(d.ignored, sizeof(d.ignored));
    char desc[256];
    api_defaults_describe(&d, desc, sizeof(desc));
    require_line(desc, sizeof(desc));
    REQUIRE((desc[0] != '\0') == (d.from_file != 0));
    check_requests(&d);
    return 0;
}
