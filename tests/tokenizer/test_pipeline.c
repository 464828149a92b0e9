/* test_pipeline.c - the tokenizer.json constructs on small files with hand-worked answers.
 *
 *   test_pipeline DATA_DIR
 *
 * DATA_DIR is tests/tokenizer/data: split-BEHAVIOR[-invert]/ (a byte-level BPE whose
 * pre-tokenizer is one Split on " " with that behavior; merges "a Ġ" 256, "b Ġ" 257,
 * "Ġ b" 258, "Ġ c" 259, "Ġ Ġ" 260 tell the pieces apart; a String pattern matches each
 * space on its own, so "  " is two matches) and sentencepiece/ (Llama 2's
 * pipeline: Prepend and Replace normalizers, byte fallback, Replace/ByteFallback/Fuse/Strip
 * decoder, BOS by TemplateProcessing, a tokenizer_config.json with a list of templates;
 * sentencepiece-eos/ has a Llama class config without BOS and with EOS).
 * The exit status is the verdict.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "tokenizer/tokenizer.h"

static tok_t *load(const char *data, const char *name)
{
    char dir[1024], err[512];
    tok_t *t;
    snprintf(dir, sizeof(dir), "%s/%s", data, name);
    if (tok_init(&t, dir, err, sizeof(err)) != 0) {
        fprintf(stderr, "tok_init %s: %s\n", name, err);
        check_failed_count++;
        return NULL;
    }
    return t;
}

static void expect(const tok_t *t, const char *what, const char *text, unsigned flags,
                   const int32_t *want, size_t nwant)
{
    int32_t *ids;
    size_t n;
    if (tok_encode_with(t, text, strlen(text), flags, &ids, &n) != 0) {
        fprintf(stderr, "%s: encode failed\n", what);
        check_failed_count++;
        return;
    }
    int ok = n == nwant && memcmp(ids, want, n * sizeof(*ids)) == 0;
    if (!ok) {
        fprintf(stderr, "%s: \"%s\" gave", what, text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, ", want");
        for (size_t i = 0; i < nwant; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
        check_failed_count++;
    }
    free(ids);
}

static void expect_decode(const tok_t *t, const int32_t *ids, size_t n, unsigned flags,
                          const char *want)
{
    char *text;
    size_t len;
    CHECK(tok_decode_with(t, ids, n, flags, &text, &len) == 0);
    if (!text || strcmp(text, want) != 0) {
        fprintf(stderr, "decode: got \"%s\", want \"%s\"\n", text ? text : "(null)", want);
        check_failed_count++;
    }
    free(text);
}

#define EXPECT(t, what, text, ...)                                                                 \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        expect(t, what, text, TOK_ENC_SPECIAL | TOK_ENC_ADD_SPECIAL, w_,                           \
               sizeof(w_) / sizeof(w_[0]));                                                        \
    } while (0)

static void test_split(const char *data)
{
    static const struct {
        const char *dir;
        int32_t ids[8];
        size_t n;
    } cases[] = {
        {"split-Removed", {'a', 'b', 'c'}, 3},
        {"split-Isolated", {'a', ' ', 'b', ' ', ' ', 'c'}, 6},
        {"split-MergedWithPrevious", {256, 257, ' ', 'c'}, 4},
        {"split-MergedWithNext", {'a', 258, ' ', 259}, 4},
        {"split-Contiguous", {'a', ' ', 'b', 260, 'c'}, 5},
        {"split-Removed-invert", {' ', ' ', ' '}, 3}, /* each match its own piece */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tok_t *t = load(data, cases[i].dir);
        if (!t)
            continue;
        expect(t, cases[i].dir, "a b  c", TOK_ENC_SPECIAL | TOK_ENC_ADD_SPECIAL, cases[i].ids,
               cases[i].n);
        tok_free(t);
    }
}

static void test_sentencepiece(const char *data)
{
    tok_t *t = load(data, "sentencepiece");
    if (!t)
        return;
    /* "▁hello▁ab": ▁a merges first (rank 0), then ▁ab, he, ll, hell, hello, ▁hello. */
    EXPECT(t, "merges", "hello ab", 1, 273, 268);
    expect(t, "no add_special_tokens", "hello ab", TOK_ENC_SPECIAL, (const int32_t[]){273, 268}, 2);
    /* ü has no token: its bytes <0xC3><0xBC>; é has one. Prepend applies per split. */
    EXPECT(t, "byte fallback", "\xc3\xbc\xc3\xa9", 1, 259, 198, 191, 274);
    EXPECT(t, "special", "ab</s>ab", 1, 268, 2, 268);
    expect(t, "special as text", "</s>", TOK_ENC_ADD_SPECIAL,
           (const int32_t[]){1, 259, 63, 50, 118, 65}, 6);
    expect_decode(t, (const int32_t[]){1, 273, 268, 2}, 4, TOK_DEC_SKIP_SPECIAL, "hello ab");
    expect_decode(t, (const int32_t[]){1, 273, 268, 2}, 4, 0, "<s> hello ab</s>");
    /* A byte run that is not UTF-8 is one U+FFFD per byte, as ByteFallback makes it. */
    expect_decode(t, (const int32_t[]){229, 133, 273}, 3, 0, "\xef\xbf\xbd\xef\xbf\xbd hello");
    expect_decode(t, (const int32_t[]){198, 191}, 2, 0, "\xc3\xbc");

    /* Streaming holds the byte run and strips the leading space once. */
    tok_stream_t st;
    char out[TOK_STREAM_OUT_MAX];
    size_t n;
    tok_stream_init(&st);
    CHECK(tok_stream_feed(t, &st, 1, out, sizeof(out), &n) == 0 && n == 0);
    CHECK(tok_stream_feed(t, &st, 273, out, sizeof(out), &n) == 0 && n == 5 &&
          memcmp(out, "hello", 5) == 0);
    CHECK(tok_stream_feed(t, &st, 198, out, sizeof(out), &n) == 0 && n == 0);
    CHECK(tok_stream_feed(t, &st, 268, out, sizeof(out), &n) == 0 && n == 6 &&
          memcmp(out, "\xef\xbf\xbd ab", 6) == 0);
    tok_stream_flush(&st, out, sizeof(out), &n);
    CHECK(n == 0);

    /* tokenizer_config.json */
    CHECK(tok_bos_id(t) == 1);
    CHECK(tok_eos_id(t) == 2);
    CHECK(tok_is_special(t, 2) && !tok_is_special(t, 268));
    CHECK(tok_token_id(t, "\xe2\x96\x81hello", 8) == 273);
    CHECK(tok_token_id(t, "<s>", 3) == 1);
    CHECK(tok_chat_template(t, NULL) && strcmp(tok_chat_template(t, NULL), "{{ messages }}") == 0);
    CHECK(tok_chat_template(t, "tool_use") &&
          strcmp(tok_chat_template(t, "tool_use"), "{{ tools }}") == 0);
    CHECK(tok_chat_template_count(t) == 2);
    CHECK(tok_chat_template_name(t, 1) && strcmp(tok_chat_template_name(t, 1), "tool_use") == 0);
    CHECK(tok_chat_template_name(t, 2) == NULL);
    tok_free(t);
}

/* A Llama tokenizer class: add_bos_token / add_eos_token decide, as in transformers. */
static void test_llama_config(const char *data)
{
    tok_t *t = load(data, "sentencepiece-eos");
    if (!t)
        return;
    EXPECT(t, "add_bos_token false, add_eos_token true", "hello ab", 273, 268, 2);
    tok_free(t);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    test_split(argv[1]);
    test_sentencepiece(argv[1]);
    test_llama_config(argv[1]);
    if (check_failures()) {
        fprintf(stderr, "%d check(s) failed\n", check_failures());
        return 1;
    }
    printf("all pipeline checks passed\n");
    return 0;
}
