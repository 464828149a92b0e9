/* test_api_defaults.c - request defaults from generation_config.json (server/api_defaults.c)
 * and how the completions and chat parsers apply them.
 *
 * Real files (Llama 3.2 Instruct, Qwen3, Qwen2.5 Instruct, GPT-2), do_sample false, null
 * fields, transformers' own defaults (not applied, as vLLM), the keys listed as ignored;
 * a battery of malformed files, each refused with one line naming the file and the key;
 * reading the file from a directory; and a request's own fields winning over the defaults.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/api.h"
#include "server/api_chat.h"
#include "server/api_defaults.h"
#include "tests/check.h"

#define FILE_NAME "generation_config.json"

static int parse(const char *text, api_defaults_t *d, char *err, size_t errlen)
{
    return api_defaults_parse(text, strlen(text), FILE_NAME, d, err, errlen);
}

static void describe_is(int line, const char *text, const char *want, const char *ignored)
{
    api_defaults_t d;
    char err[256] = "", desc[256];
    int rc = parse(text, &d, err, sizeof(err));
    api_defaults_describe(&d, desc, sizeof(desc));
    if (rc != 0 || strcmp(desc, want) != 0 || strcmp(d.ignored, ignored) != 0) {
        fprintf(stderr,
                "%s:%d: %s\n  got rc %d '%s' (ignored '%s', err '%s')\n  expected '%s' "
                "(ignored '%s')\n",
                __FILE__, line, text, rc, desc, d.ignored, err, want, ignored);
        check_failed_count++;
    }
}
#define DESCRIBE_IS(text, want, ignored) describe_is(__LINE__, text, want, ignored)

/* The file must be refused with one line starting with the file's name and holding msg. */
static void refuse_at(int line, const char *text, const char *msg)
{
    api_defaults_t d;
    char err[256] = "";
    int rc = parse(text, &d, err, sizeof(err));
    if (rc != -EINVAL || strncmp(err, FILE_NAME ": ", strlen(FILE_NAME) + 2) != 0 ||
        !strstr(err, msg) || strchr(err, '\n') || d.from_file || d.temperature != 1.0f) {
        fprintf(stderr, "%s:%d: %s\n  got rc %d err '%s'\n  expected -EINVAL with '%s'\n", __FILE__,
                line, text, rc, err, msg);
        check_failed_count++;
    }
}
#define REFUSE(text, msg) refuse_at(__LINE__, text, msg)

static void test_real_files(void)
{
    api_defaults_t d;
    char err[256];
    /* Llama 3.2 1B Instruct's file as published. */
    CHECK_INT_EQ(parse("{\"bos_token_id\": 128000, \"do_sample\": true, \"eos_token_id\": "
                       "[128001, 128008, 128009], \"temperature\": 0.6, \"top_p\": 0.9, "
                       "\"transformers_version\": \"4.45.0.dev0\"}",
                       &d, err, sizeof(err)),
                 0);
    CHECK(d.temperature == 0.6f && d.top_p == 0.9f);
    CHECK_INT_EQ(d.top_k, 0);
    CHECK(d.min_p == 0.0f && d.repetition_penalty == 1.0f);
    CHECK_INT_EQ(d.max_tokens, 0);
    CHECK_INT_EQ(d.from_file, API_DEF_TEMPERATURE | API_DEF_TOP_P);
    CHECK_STR_EQ(d.ignored, "");
    DESCRIBE_IS("{\"bos_token_id\": 151643, \"do_sample\": true, \"eos_token_id\": [151645, "
                "151643], \"pad_token_id\": 151643, \"temperature\": 0.6, \"top_k\": 20, "
                "\"top_p\": 0.95, \"transformers_version\": \"4.51.0\"}",
                "temperature 0.6, top_p 0.95, top_k 20", "");
    DESCRIBE_IS("{\"bos_token_id\": 151643, \"pad_token_id\": 151643, \"do_sample\": true, "
                "\"eos_token_id\": [151645, 151643], \"repetition_penalty\": 1.05, "
                "\"temperature\": 0.7, \"top_p\": 0.8, \"top_k\": 20}",
                "temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05", "");
    /* GPT-2's file has only token ids; TinyLlama's a max_length vLLM ignores too. */
    DESCRIBE_IS("{\"_from_model_config\": true, \"bos_token_id\": 50256, \"eos_token_id\": "
                "50256, \"transformers_version\": \"4.26.0.dev0\"}",
                "", "");
    DESCRIBE_IS("{\"bos_token_id\": 1, \"eos_token_id\": 2, \"max_length\": 2048, "
                "\"pad_token_id\": 0}",
                "", "max_length");
    DESCRIBE_IS("{}", "", "");
}

static void test_rules(void)
{
    api_defaults_t d;
    char err[256];
    /* do_sample false: greedy whatever temperature says, as transformers generates. */
    CHECK_INT_EQ(
        parse("{\"do_sample\": false, \"temperature\": 0.6, \"top_p\": 0.9}", &d, err, sizeof(err)),
        0);
    CHECK(d.temperature == 0.0f && d.greedy && d.top_p == 0.9f);
    DESCRIBE_IS("{\"do_sample\": false}", "temperature 0 (do_sample false)", "");
    /* Absent do_sample is not false: vLLM applies the temperature. */
    DESCRIBE_IS("{\"temperature\": 0.3}", "temperature 0.3", "");
    DESCRIBE_IS("{\"temperature\": 0}", "temperature 0", "");
    /* transformers' own defaults are not applied (vLLM's to_diff_dict), nor are nulls. */
    DESCRIBE_IS("{\"temperature\": 1.0, \"top_p\": 1, \"top_k\": 50, \"repetition_penalty\": 1}",
                "", "");
    DESCRIBE_IS("{\"temperature\": null, \"top_p\": null, \"top_k\": null, \"min_p\": null, "
                "\"do_sample\": null, \"max_new_tokens\": null, \"typical_p\": null}",
                "", "");
    /* Every field we apply; top_k -1 and 0 are off; integral reals are integers. */
    DESCRIBE_IS("{\"temperature\": 1.5, \"top_p\": 0.5, \"top_k\": 40.0, \"min_p\": 0.05, "
                "\"repetition_penalty\": 1.2, \"max_new_tokens\": 256}",
                "temperature 1.5, top_p 0.5, top_k 40, min_p 0.05, repetition_penalty 1.2, "
                "max_tokens 256",
                "");
    CHECK_INT_EQ(parse("{\"top_k\": -1}", &d, err, sizeof(err)), 0);
    CHECK(d.top_k == 0 && (d.from_file & API_DEF_TOP_K));
    DESCRIBE_IS("{\"top_k\": 0, \"min_p\": 0}", "top_k 0, min_p 0", "");
    /* A top_k beyond the vocabulary keeps every token (the sampler's rule). */
    DESCRIBE_IS("{\"top_k\": 1000000}", "top_k 1000000", "");
    /* Generation settings we do not apply are named; token ids and bookkeeping are not. */
    DESCRIBE_IS("{\"do_sample\": true, \"num_beams\": 4, \"typical_p\": 0.9, \"pad_token_id\": "
                "0, \"no_repeat_ngram_size\": 3, \"use_cache\": true}",
                "", "num_beams, typical_p, no_repeat_ngram_size");
    /* A long list ends with "..." and stays within its buffer; control bytes become '?'. */
    char big[4096] = "{";
    for (int i = 0; i < 60; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s\"unknown_key_%02d\": 1",
                 i ? ", " : "", i);
    strcat(big, ", \"tab\\there\": 2}");
    CHECK_INT_EQ(parse(big, &d, err, sizeof(err)), 0);
    CHECK(strlen(d.ignored) < sizeof(d.ignored));
    CHECK(strstr(d.ignored, "unknown_key_00, unknown_key_01") == d.ignored);
    CHECK(strlen(d.ignored) >= 3 && strcmp(d.ignored + strlen(d.ignored) - 3, "...") == 0);
    CHECK_INT_EQ(parse("{\"tab\\there\": 1}", &d, err, sizeof(err)), 0);
    CHECK_STR_EQ(d.ignored, "tab?here");
}

/* Malformed files: each stops the start with one line naming the file and the key, as
 * transformers or vLLM refuse these values when they generate. */
static void test_malformed(void)
{
    REFUSE("", "invalid JSON");
    REFUSE("{\"temperature\": 0.6", "invalid JSON");
    REFUSE("{\"temperature\": 0.6} x", "invalid JSON");
    REFUSE("[{\"temperature\": 0.6}]", "not a JSON object");
    REFUSE("\"temperature\"", "not a JSON object");
    REFUSE("{\"temperature\": -0.5}", "temperature -0.5 is negative");
    REFUSE("{\"temperature\": \"0.6\"}", "temperature must be a number, got a string");
    REFUSE("{\"temperature\": true}", "temperature must be a number, got a boolean");
    REFUSE("{\"temperature\": [0.6]}", "temperature must be a number, got a list");
    REFUSE("{\"temperature\": 1e300}", "temperature 1e+300 is too large");
    REFUSE("{\"top_p\": 0}", "top_p 0 is not in (0, 1]");
    REFUSE("{\"top_p\": 1.5}", "top_p 1.5 is not in (0, 1]");
    REFUSE("{\"top_p\": -0.1}", "top_p -0.1 is not in (0, 1]");
    REFUSE("{\"top_p\": 1e-50}", "top_p 1e-50 is not in (0, 1]");
    REFUSE("{\"top_p\": {}}", "top_p must be a number, got an object");
    REFUSE("{\"top_k\": -2}", "top_k -2 is out of range");
    REFUSE("{\"top_k\": 2.5}", "top_k must be an integer, got 2.5");
    REFUSE("{\"top_k\": \"20\"}", "top_k must be a number, got a string");
    REFUSE("{\"top_k\": 1e10}", "top_k 10000000000 is out of range");
    REFUSE("{\"min_p\": 1.5}", "min_p 1.5 is not in [0, 1]");
    REFUSE("{\"min_p\": -0.01}", "min_p -0.01 is not in [0, 1]");
    REFUSE("{\"repetition_penalty\": 0}", "repetition_penalty 0 is not positive");
    REFUSE("{\"repetition_penalty\": -1.1}", "repetition_penalty -1.1 is not positive");
    REFUSE("{\"max_new_tokens\": 0}", "max_new_tokens 0 is out of range");
    REFUSE("{\"max_new_tokens\": -5}", "max_new_tokens -5 is out of range");
    REFUSE("{\"max_new_tokens\": 3000000000}", "max_new_tokens 3000000000 is out of range");
    REFUSE("{\"max_new_tokens\": \"many\"}", "max_new_tokens must be a number, got a string");
    REFUSE("{\"do_sample\": \"yes\"}", "do_sample must be true or false, got a string");
    REFUSE("{\"do_sample\": 0}", "do_sample must be true or false, got a number");
    /* The first bad key is named even when good ones follow; a NUL byte is not JSON text. */
    REFUSE("{\"top_p\": 2, \"temperature\": 0.5}", "top_p 2");
    api_defaults_t d;
    char err[64];
    CHECK_INT_EQ(api_defaults_parse("{\"a\":\0}", 7, FILE_NAME, &d, err, sizeof(err)), -EINVAL);
    /* A short error buffer still ends in NUL. */
    char tiny[8];
    CHECK_INT_EQ(parse("{\"temperature\": -1}", &d, tiny, sizeof(tiny)), -EINVAL);
    CHECK_INT_EQ((int)strlen(tiny), 7);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_load(void)
{
    const char *tmpdir = getenv("TMPDIR");
    char dir[4096], path[4200], err[256];
    snprintf(dir, sizeof(dir), "%s/test_api_defaults.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    snprintf(path, sizeof(path), "%s/" FILE_NAME, dir);
    api_defaults_t d;
    /* No file: OpenAI's defaults, and it says so. */
    CHECK_INT_EQ(api_defaults_load(dir, &d, err, sizeof(err)), 0);
    CHECK(!d.found && !d.from_file && d.temperature == 1.0f);
    write_file(path, "{\"top_k\": 1, \"max_new_tokens\": 12}\n");
    CHECK_INT_EQ(api_defaults_load(dir, &d, err, sizeof(err)), 0);
    CHECK(d.found && d.top_k == 1 && d.max_tokens == 12);
    write_file(path, "{\"top_p\": \"high\"}");
    CHECK_INT_EQ(api_defaults_load(dir, &d, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, FILE_NAME ": top_p must be a number, got a string");
    CHECK(!d.found && !d.from_file);
    /* A directory where the file should be cannot be read. */
    unlink(path);
    CHECK_INT_EQ(mkdir(path, 0700), 0);
    int rc = api_defaults_load(dir, &d, err, sizeof(err));
    CHECK(rc == -EISDIR || rc == -EIO);
    CHECK_CONTAINS(err, FILE_NAME);
    rmdir(path);
    rmdir(dir);
}

/* A request gets the defaults for the fields it leaves out or sets to null, and keeps its
 * own values for the rest, in completions and in chat. */
static void test_requests(void)
{
    api_defaults_t d;
    char err[256];
    CHECK_INT_EQ(parse("{\"temperature\": 0.6, \"top_p\": 0.9, \"top_k\": 20, \"min_p\": 0.05, "
                       "\"repetition_penalty\": 1.1, \"max_new_tokens\": 40}",
                       &d, err, sizeof(err)),
                 0);
    api_limits_t lim = {"m", 50257, &d};
    api_params_t p;
    api_error_t e;
    const char *body = "{\"prompt\": \"hi\", \"top_p\": null}";
    CHECK_INT_EQ(api_completion_parse(body, strlen(body), &lim, &p, &e), 0);
    CHECK(p.sp.temperature == 0.6f && p.sp.top_p == 0.9f && p.sp.top_k == 20);
    CHECK(p.sp.min_p == 0.05f && p.sp.repetition_penalty == 1.1f);
    CHECK_INT_EQ(p.max_tokens, 40);
    CHECK_INT_EQ(p.max_tokens_set, 0);
    api_params_free(&p);
    body = "{\"prompt\": \"hi\", \"temperature\": 0, \"top_k\": -1, \"max_tokens\": 5, "
           "\"repetition_penalty\": 1}";
    CHECK_INT_EQ(api_completion_parse(body, strlen(body), &lim, &p, &e), 0);
    CHECK(p.sp.temperature == 0.0f && p.sp.top_k == 0 && p.sp.repetition_penalty == 1.0f);
    CHECK(p.sp.top_p == 0.9f);
    CHECK_INT_EQ(p.max_tokens, 5);
    CHECK_INT_EQ(p.max_tokens_set, 1);
    api_params_free(&p);
    /* Without defaults: OpenAI's. */
    api_limits_t plain = {"m", 50257, NULL};
    body = "{\"prompt\": \"hi\"}";
    CHECK_INT_EQ(api_completion_parse(body, strlen(body), &plain, &p, &e), 0);
    CHECK(p.sp.temperature == 1.0f && p.sp.top_p == 1.0f && p.sp.top_k == 0);
    CHECK_INT_EQ(p.max_tokens, 16);
    api_params_free(&p);
    /* Chat: the same defaults; its own fields win. */
    api_chat_t c;
    body = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"top_k\": 3}";
    CHECK_INT_EQ(api_chat_parse(body, strlen(body), &lim, &c, &e), 0);
    CHECK(c.p.sp.temperature == 0.6f && c.p.sp.top_p == 0.9f && c.p.sp.top_k == 3);
    CHECK(c.p.sp.min_p == 0.05f && c.p.sp.repetition_penalty == 1.1f);
    CHECK_INT_EQ(c.max_tokens_set, 0);
    api_chat_free(&c);
    body = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": 1.2, "
           "\"max_completion_tokens\": 9}";
    CHECK_INT_EQ(api_chat_parse(body, strlen(body), &lim, &c, &e), 0);
    CHECK(c.p.sp.temperature == 1.2f && c.p.sp.top_k == 20);
    CHECK_INT_EQ(c.p.max_tokens, 9);
    CHECK_INT_EQ(c.max_tokens_set, 2);
    api_chat_free(&c);
}

int main(void)
{
    test_real_files();
    test_rules();
    test_malformed();
    test_load();
    test_requests();
    if (check_failed_count) {
        fprintf(stderr, "test_api_defaults: %d failure(s)\n", check_failed_count);
        return 1;
    }
    puts("test_api_defaults: all passed");
    return 0;
}
