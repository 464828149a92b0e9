/* test_api.c - the completions request parser (server/api.c) on good and bad bodies.
 *
 * Every accepted form of every field, every rejection (type, range, unknown, unsupported,
 * malformed JSON) with the field it names, and the engine request built from the result.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "tests/check.h"

static const api_limits_t lim = {"gpt2", 50257, NULL};

static int parse(const char *body, api_params_t *p, api_error_t *e)
{
    memset(e, 0, sizeof(*e));
    return api_completion_parse(body, strlen(body), &lim, p, e);
}

/* The body must be refused with status, naming param, with msg in the message. */
static void refuse_at(int line, const char *body, int status, const char *param, const char *msg)
{
    api_params_t p;
    api_error_t e;
    int rc = parse(body, &p, &e);
    if (rc != -1) {
        fprintf(stderr, "%s:%d: accepted %s\n", __FILE__, line, body);
        check_failed_count++;
        api_params_free(&p);
        return;
    }
    if (e.status != status || strcmp(e.param, param) != 0 || !strstr(e.message, msg)) {
        fprintf(stderr,
                "%s:%d: %s\n  got status %d param '%s' message '%s'\n  expected status %d "
                "param '%s' message containing '%s'\n",
                __FILE__, line, body, e.status, e.param, e.message, status, param, msg);
        check_failed_count++;
    }
    char *json = api_error_json(&e);
    if (!json || !strstr(json, "\"error\":{") || !strstr(json, "\"message\":")) {
        fprintf(stderr, "%s:%d: error json %s\n", __FILE__, line, json ? json : "(null)");
        check_failed_count++;
    }
    free(json);
}
#define REFUSE(body, status, param, msg) refuse_at(__LINE__, body, status, param, msg)

static void test_defaults(void)
{
    api_params_t p;
    api_error_t e;
    CHECK_INT_EQ(parse("{}", &p, &e), 0);
    CHECK_INT_EQ(p.n_prompts, 1);
    CHECK_STR_EQ(p.prompts[0].text, "<|endoftext|>"); /* OpenAI's default prompt */
    CHECK_INT_EQ(p.max_tokens, 16);
    CHECK_INT_EQ(p.n, 1);
    CHECK_INT_EQ(p.stream, 0);
    CHECK_INT_EQ(p.logprobs, -1);
    CHECK_INT_EQ(p.echo, 0);
    CHECK_INT_EQ(p.n_stop, 0);
    CHECK(p.sp.temperature == 1.0f && p.sp.top_p == 1.0f && p.sp.repetition_penalty == 1.0f);
    CHECK_INT_EQ(p.sp.top_k, 0);
    CHECK_INT_EQ(p.sp.has_seed, 0);
    CHECK(p.model == NULL);
    api_params_free(&p);

    /* null is the default for every field */
    CHECK_INT_EQ(parse("{\"model\":null,\"prompt\":null,\"max_tokens\":null,\"temperature\":null,"
                    "\"stop\":null,\"logprobs\":null,\"suffix\":null,\"best_of\":null}",
                    &p, &e),
              0);
    CHECK_INT_EQ(p.max_tokens, 16);
    api_params_free(&p);
}

static void test_all_fields(void)
{
    api_params_t p;
    api_error_t e;
    const char *body =
        "{\"model\":\"gpt2\",\"prompt\":\"Hello\",\"max_tokens\":7,\"temperature\":0.5,"
        "\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"n\":3,\"best_of\":3,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"logprobs\":5,\"echo\":true,"
        "\"stop\":[\"\\n\",\"END\"],\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
        "\"repetition_penalty\":1.2,\"logit_bias\":{\"50256\":-100,\"11\":2.5},\"seed\":-7,"
        "\"user\":\"u1\",\"ignore_eos\":true}";
    CHECK_INT_EQ(parse(body, &p, &e), 0);
    if (e.message[0])
        fprintf(stderr, "  %s\n", e.message);
    CHECK_STR_EQ(p.model, "gpt2");
    CHECK_STR_EQ(p.prompts[0].text, "Hello");
    CHECK_INT_EQ(p.prompts[0].text_len, 5);
    CHECK_INT_EQ(p.max_tokens, 7);
    CHECK(fabsf(p.sp.temperature - 0.5f) < 1e-6f);
    CHECK(fabsf(p.sp.top_p - 0.9f) < 1e-6f);
    CHECK_INT_EQ(p.sp.top_k, 40);
    CHECK(fabsf(p.sp.min_p - 0.05f) < 1e-6f);
    CHECK_INT_EQ(p.n, 3);
    CHECK_INT_EQ(p.stream, 1);
    CHECK_INT_EQ(p.include_usage, 1);
    CHECK_INT_EQ(p.logprobs, 5);
    CHECK_INT_EQ(p.echo, 1);
    CHECK_INT_EQ(p.n_stop, 2);
    CHECK_STR_EQ(p.stop[0], "\n");
    CHECK_STR_EQ(p.stop[1], "END");
    CHECK(fabsf(p.sp.presence_penalty - 0.5f) < 1e-6f);
    CHECK(fabsf(p.sp.frequency_penalty + 0.5f) < 1e-6f);
    CHECK(fabsf(p.sp.repetition_penalty - 1.2f) < 1e-6f);
    CHECK_INT_EQ(p.sp.n_logit_bias, 2);
    CHECK_INT_EQ(p.sp.has_seed, 1);
    CHECK(p.sp.seed == (uint64_t)-7LL);
    CHECK_STR_EQ(p.user, "u1");
    CHECK_INT_EQ(p.ignore_eos, 1);

    /* prompt i of n = 3 starts at choice index 3 * i, as OpenAI numbers choices */
    p.prompts[0].ids = malloc(2 * sizeof(int32_t));
    p.prompts[0].ids[0] = 15496;
    p.prompts[0].ids[1] = 11;
    p.prompts[0].n_ids = 2;
    eng_request_t *r = api_request_new(&p, 0, 42, &p);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT_EQ(r->id, 42);
        CHECK(r->user == &p);
        CHECK_INT_EQ(r->prompt_len, 2);
        CHECK_INT_EQ(r->prompt[1], 11);
        CHECK_INT_EQ(r->n, 3);
        CHECK_INT_EQ(r->index_base, 0);
        CHECK_INT_EQ(r->max_tokens, 7);
        CHECK_INT_EQ(r->ignore_eos, 1);
        CHECK_INT_EQ(r->n_stop, 2);
        CHECK(r->stop[1] != p.stop[1]); /* a copy: the engine owns it */
        CHECK_INT_EQ(r->sp.logprobs, 5);
        CHECK_INT_EQ(r->sp.prompt_logprobs, 5); /* echo with logprobs */
        CHECK_INT_EQ(r->sp.n_logit_bias, 2);
        CHECK_INT_EQ(r->sp.logit_bias_ids[0], 50256);
        CHECK(r->sp.logit_bias_values[0] == -100.0f);
        CHECK(r->sp.logit_bias_ids != p.sp.logit_bias_ids);
        eng_request_free(r);
    }
    api_params_free(&p);
}

static void test_prompt_forms(void)
{
    api_params_t p;
    api_error_t e;
    CHECK_INT_EQ(parse("{\"prompt\":[\"a\",\"b\",\"c\"],\"n\":2}", &p, &e), 0);
    CHECK_INT_EQ(p.n_prompts, 3);
    CHECK_STR_EQ(p.prompts[2].text, "c");
    api_params_free(&p);

    CHECK_INT_EQ(parse("{\"prompt\":[1,2,50256]}", &p, &e), 0);
    CHECK_INT_EQ(p.n_prompts, 1);
    CHECK(p.prompts[0].text == NULL);
    CHECK_INT_EQ(p.prompts[0].n_ids, 3);
    CHECK_INT_EQ(p.prompts[0].ids[2], 50256);
    api_params_free(&p);

    CHECK_INT_EQ(parse("{\"prompt\":[[1,2],[3]]}", &p, &e), 0);
    CHECK_INT_EQ(p.n_prompts, 2);
    CHECK_INT_EQ(p.prompts[1].n_ids, 1);
    CHECK_INT_EQ(p.prompts[1].ids[0], 3);
    api_params_free(&p);

    /* unicode and an embedded NUL survive */
    CHECK_INT_EQ(parse("{\"prompt\":\"h\\u00e9\\u0000x\"}", &p, &e), 0);
    CHECK_INT_EQ(p.prompts[0].text_len, 5);
    api_params_free(&p);

    REFUSE("{\"prompt\":[]}", 400, "prompt", "empty");
    REFUSE("{\"prompt\":[[]]}", 400, "prompt", "empty");
    REFUSE("{\"prompt\":[\"a\",1]}", 400, "prompt", "element 1");
    REFUSE("{\"prompt\":[1,\"a\"]}", 400, "prompt", "not an integer");
    REFUSE("{\"prompt\":[[1],\"a\"]}", 400, "prompt", "element 1");
    REFUSE("{\"prompt\":[50257]}", 400, "prompt", "out of range");
    REFUSE("{\"prompt\":[-1]}", 400, "prompt", "out of range");
    REFUSE("{\"prompt\":[1.5]}", 400, "prompt", "not an integer");
    REFUSE("{\"prompt\":12}", 400, "prompt", "must be a string");
    REFUSE("{\"prompt\":{\"a\":1}}", 400, "prompt", "must be a string");
}

static void test_ranges(void)
{
    api_params_t p;
    api_error_t e;
    REFUSE("{\"max_tokens\":-1}", 400, "max_tokens", "between 0 and");
    REFUSE("{\"max_tokens\":4294967296}", 400, "max_tokens", "between 0 and");
    REFUSE("{\"max_tokens\":1.5}", 400, "max_tokens", "must be an integer");
    REFUSE("{\"max_tokens\":\"16\"}", 400, "max_tokens", "must be an integer");
    REFUSE("{\"max_tokens\":0}", 400, "max_tokens", "only with 'echo'");
    CHECK_INT_EQ(parse("{\"max_tokens\":0,\"echo\":true,\"logprobs\":1}", &p, &e), 0);
    api_params_free(&p);
    CHECK_INT_EQ(parse("{\"max_tokens\":16.0}", &p, &e), 0); /* an integral real, as pydantic */
    CHECK_INT_EQ(p.max_tokens, 16);
    api_params_free(&p);
    REFUSE("{\"temperature\":-0.1}", 400, "temperature", ">= 0");
    REFUSE("{\"temperature\":2.01}", 400, "temperature", "<= 2");
    REFUSE("{\"temperature\":\"hot\"}", 400, "temperature", "must be a number");
    REFUSE("{\"temperature\":1e999}", 400, "", "invalid JSON"); /* overflows: jansson refuses */
    REFUSE("{\"temperature\":NaN}", 400, "", "invalid JSON");
    REFUSE("{\"top_p\":0}", 400, "top_p", "> 0");
    REFUSE("{\"top_p\":1.5}", 400, "top_p", "<= 1");
    REFUSE("{\"top_k\":-2}", 400, "top_k", "between -1");
    CHECK_INT_EQ(parse("{\"top_k\":-1}", &p, &e), 0);
    CHECK_INT_EQ(p.sp.top_k, 0);
    api_params_free(&p);
    REFUSE("{\"min_p\":1.1}", 400, "min_p", "<= 1");
    REFUSE("{\"n\":0}", 400, "n", "between 1");
    REFUSE("{\"n\":129}", 400, "n", "between 1");
    REFUSE("{\"logprobs\":21}", 400, "logprobs", "between 0 and 20");
    REFUSE("{\"logprobs\":-1}", 400, "logprobs", "between 0 and 20");
    REFUSE("{\"logprobs\":true}", 400, "logprobs", "must be an integer");
    REFUSE("{\"presence_penalty\":2.5}", 400, "presence_penalty", "<= 2");
    REFUSE("{\"frequency_penalty\":-3}", 400, "frequency_penalty", ">= -2");
    REFUSE("{\"repetition_penalty\":0}", 400, "repetition_penalty", "> 0");
    REFUSE("{\"seed\":\"1\"}", 400, "seed", "must be an integer");
    REFUSE("{\"seed\":1.5}", 400, "seed", "must be an integer");
    REFUSE("{\"stream\":\"yes\"}", 400, "stream", "must be a boolean");
    REFUSE("{\"echo\":1}", 400, "echo", "must be a boolean");
    REFUSE("{\"ignore_eos\":0}", 400, "ignore_eos", "must be a boolean");
    REFUSE("{\"user\":5}", 400, "user", "must be a string");
    REFUSE("{\"model\":5}", 400, "model", "must be a string");
    REFUSE("{\"prompt\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"],\"n\":128}", 400,
           "n", "choices");
}

static void test_stop_bias_options(void)
{
    api_params_t p;
    api_error_t e;
    CHECK_INT_EQ(parse("{\"stop\":\"x\"}", &p, &e), 0);
    CHECK_INT_EQ(p.n_stop, 1);
    CHECK_STR_EQ(p.stop[0], "x");
    api_params_free(&p);
    REFUSE("{\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop", "at most 4");
    REFUSE("{\"stop\":\"\"}", 400, "stop", "empty");
    REFUSE("{\"stop\":[\"a\",\"\"]}", 400, "stop", "empty");
    REFUSE("{\"stop\":[1]}", 400, "stop", "not a string");
    REFUSE("{\"stop\":3}", 400, "stop", "string or a list");
    CHECK_INT_EQ(parse("{\"stop_token_ids\":[50256,13,0]}", &p, &e), 0);
    CHECK_INT_EQ(p.n_stop_ids, 3);
    CHECK_INT_EQ(p.stop_ids[1], 13);
    p.prompts[0].ids = calloc(1, sizeof(int32_t));
    p.prompts[0].n_ids = 1;
    eng_request_t *r = api_request_new(&p, 0, 1, NULL);
    CHECK(r && r->n_stop_ids == 3 && r->stop_ids[0] == 50256 && r->stop_ids[2] == 0);
    eng_request_free(r);
    api_params_free(&p);
    CHECK_INT_EQ(parse("{\"stop_token_ids\":[]}", &p, &e), 0);
    CHECK_INT_EQ(p.n_stop_ids, 0);
    api_params_free(&p);
    REFUSE("{\"stop_token_ids\":[50257]}", 400, "stop_token_ids", "out of range");
    REFUSE("{\"stop_token_ids\":[-1]}", 400, "stop_token_ids", "out of range");
    REFUSE("{\"stop_token_ids\":[\"a\"]}", 400, "stop_token_ids", "not an integer");
    REFUSE("{\"stop_token_ids\":7}", 400, "stop_token_ids", "list of token ids");
    REFUSE("{\"stop_token_ids\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}", 400,
           "stop_token_ids", "at most 16");
    REFUSE("{\"logit_bias\":{\"abc\":1}}", 400, "logit_bias", "not a token id");
    REFUSE("{\"logit_bias\":{\"1x\":1}}", 400, "logit_bias", "not a token id");
    REFUSE("{\"logit_bias\":{\"50257\":1}}", 400, "logit_bias", "out of range");
    REFUSE("{\"logit_bias\":{\"5\":101}}", 400, "logit_bias", "<= 100");
    REFUSE("{\"logit_bias\":{\"5\":\"1\"}}", 400, "logit_bias", "must be a number");
    REFUSE("{\"logit_bias\":[1]}", 400, "logit_bias", "must be an object");
    REFUSE("{\"stream_options\":{\"include_usage\":true}}", 400, "stream_options",
           "only allowed when 'stream' is true");
    REFUSE("{\"stream\":true,\"stream_options\":{\"include_usage\":1}}", 400,
           "stream_options.include_usage", "boolean");
    REFUSE("{\"stream\":true,\"stream_options\":{\"x\":1}}", 400, "stream_options",
           "unknown field");
    REFUSE("{\"stream\":true,\"stream_options\":[]}", 400, "stream_options", "object");
}

static void test_unsupported_and_malformed(void)
{
    REFUSE("{\"suffix\":\"x\"}", 400, "suffix", "not supported");
    REFUSE("{\"best_of\":2}", 400, "best_of", "not supported");
    REFUSE("{\"best_of\":2,\"n\":3}", 400, "best_of", "not supported");
    REFUSE("{\"frobnicate\":1}", 400, "frobnicate", "unknown field");
    REFUSE("{\"model\":\"gpt3\"}", 404, "model", "does not exist");
    REFUSE("", 400, "", "invalid JSON");
    REFUSE("{\"prompt\":", 400, "", "invalid JSON");
    REFUSE("[1,2]", 400, "", "must be a JSON object");
    REFUSE("\"x\"", 400, "", "invalid JSON"); /* jansson decodes only arrays and objects */
    REFUSE("{\"a\":1,\"a\":2}", 400, "", "invalid JSON");
    REFUSE("{\"prompt\":\"\xff\"}", 400, "", "invalid JSON"); /* not UTF-8 */
}

static void test_context_and_errors(void)
{
    api_params_t p;
    api_error_t e;
    CHECK_INT_EQ(parse("{\"prompt\":[1,2,3],\"max_tokens\":10}", &p, &e), 0);
    CHECK_INT_EQ(api_check_context(&p, 13, &e), 0);
    CHECK_INT_EQ(api_check_context(&p, 12, &e), -1);
    CHECK_INT_EQ(e.status, 400);
    CHECK_STR_EQ(e.code, "context_length_exceeded");
    CHECK(strstr(e.message, "maximum context length is 12 tokens") != NULL);
    CHECK(strstr(e.message, "you requested 13 tokens (3 in the prompt, 10 in the completion)"));
    char *json = api_error_json(&e);
    CHECK(json && strstr(json, "\"code\":\"context_length_exceeded\"") &&
          strstr(json, "\"param\":\"prompt\"") &&
          strstr(json, "\"type\":\"invalid_request_error\""));
    free(json);
    api_params_free(&p);

    /* a message cut inside a UTF-8 character still renders as valid JSON */
    api_error_set(&e, 404, "invalid_request_error", NULL, NULL, "%.2s", "\xc3\xa9\xc3\xa9");
    api_error_set(&e, 404, "invalid_request_error", NULL, NULL, "x%.2s", "\xc3\xa9");
    json = api_error_json(&e);
    CHECK(json && strstr(json, "\"param\":null") && strstr(json, "\"code\":null"));
    free(json);
}

static void test_utf8_and_tokenize_bodies(void)
{
    CHECK_INT_EQ(api_utf8_valid("h\xc3\xa9", 3), 1);
    CHECK_INT_EQ(api_utf8_valid("\xc3", 1), 0);
    CHECK_INT_EQ(api_utf8_valid("\xed\xa0\x80", 3), 0); /* a surrogate */
    CHECK_INT_EQ(api_utf8_valid("\xc0\xaf", 2), 0);     /* overlong */
    size_t n;
    char *s = api_utf8_fix("a\xffz", 3, &n);
    CHECK_STR_EQ(s, "a\xef\xbf\xbdz");
    CHECK_INT_EQ(n, 5);
    free(s);

    api_error_t e;
    char *text;
    size_t tlen;
    const char *b = "{\"model\":\"gpt2\",\"prompt\":\"hi there\",\"add_special_tokens\":true}";
    CHECK_INT_EQ(api_tokenize_parse(b, strlen(b), &lim, &text, &tlen, &e), 0);
    CHECK_STR_EQ(text, "hi there");
    free(text);
    b = "{\"prompt\":3}";
    CHECK_INT_EQ(api_tokenize_parse(b, strlen(b), &lim, &text, &tlen, &e), -1);
    CHECK_STR_EQ(e.param, "prompt");
    b = "{\"prompt\":\"x\",\"model\":\"other\"}";
    CHECK_INT_EQ(api_tokenize_parse(b, strlen(b), &lim, &text, &tlen, &e), -1);
    CHECK_INT_EQ(e.status, 404);
    int32_t *ids;
    int nid;
    b = "{\"tokens\":[31373,995]}";
    CHECK_INT_EQ(api_detokenize_parse(b, strlen(b), &lim, &ids, &nid, &e), 0);
    CHECK_INT_EQ(nid, 2);
    CHECK_INT_EQ(ids[1], 995);
    free(ids);
    b = "{\"tokens\":[70000]}";
    CHECK_INT_EQ(api_detokenize_parse(b, strlen(b), &lim, &ids, &nid, &e), -1);
    CHECK(strstr(e.message, "out of range") != NULL);
    b = "{\"tokens\":\"x\"}";
    CHECK_INT_EQ(api_detokenize_parse(b, strlen(b), &lim, &ids, &nid, &e), -1);
    b = "{\"tokens\":[1],\"extra\":1}";
    CHECK_INT_EQ(api_detokenize_parse(b, strlen(b), &lim, &ids, &nid, &e), -1);
    CHECK_STR_EQ(e.param, "extra");
}

int main(void)
{
    test_defaults();
    test_all_fields();
    test_prompt_forms();
    test_ranges();
    test_stop_bias_options();
    test_unsupported_and_malformed();
    test_context_and_errors();
    test_utf8_and_tokenize_bodies();
    if (check_failed_count) {
        fprintf(stderr, "test_api: %d failure(s)\n", check_failed_count);
        return 1;
    }
    puts("test_api: all passed");
    return 0;
}
