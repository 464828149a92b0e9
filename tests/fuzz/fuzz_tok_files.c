/* fuzz_tok_files.c - libFuzzer harness for the tokenizer file loader.
 *
 * The input is vocab.json and merges.txt separated by a line "@@"; with no separator it is
 * a Hugging Face tokenizer.json instead (then a second "\n@@@\n" separator, if any, starts
 * a tokenizer_config.json). The files go to a private temp directory and tok_init loads
 * it. A failure must leave a NULL tokenizer and one error line; a success must give a
 * tokenizer that encodes and decodes a few strings, whose streaming decode equals whole
 * decode, and which gives every sample back byte for byte where it promises
 * decode(encode(s)) == s: a byte-level pipeline that drops nothing and adds nothing (no
 * normalizer, no Removed split, no prefix space, no post-processor ids, no stripping
 * added tokens, added tokens that decode to their own text and that BPE builds only from
 * that text).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_tmpdir.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "broken promise: %s\n", what);
        abort();
    }
}

static int lossless(const tok_t *t)
{
    if (!t->byte_level || t->n_norm > 0 || t->n_post_pre > 0 || t->n_post_suf > 0)
        return 0;
    for (int i = 0; i < t->n_pre; i++)
        if ((t->pre[i].kind == PRE_SPLIT && t->pre[i].behavior == SPLIT_REMOVED) ||
            t->pre[i].prefix_space)
            return 0;
    for (int i = 0; i < t->n_added; i++) {
        size_t n;
        const char *b = tok_token_bytes(t, t->added[i].id, &n);
        if (t->added[i].lstrip || t->added[i].rstrip || !b || n != t->added[i].len ||
            memcmp(b, t->added[i].text, n) != 0)
            return 0;
        /* An added token that takes the id of another vocabulary entry: BPE still builds
         * that id from the entry's key, and it decodes as the added text. */
        const tok_entry_t *e = &t->entries[t->added[i].id];
        if (e->klen > 0 && (e->klen != n || memcmp(t->kblob + e->koff, b, n) != 0))
            return 0;
    }
    return 1;
}

static void check_stream(const tok_t *t, const int32_t *ids, size_t n)
{
    char *whole = NULL, piece[TOK_STREAM_OUT_MAX];
    size_t wlen = 0, plen, o = 0;
    tok_stream_t st;
    check(tok_decode_with(t, ids, n, TOK_DEC_SKIP_SPECIAL, &whole, &wlen) == 0,
          "decode of encoded ids succeeds");
    tok_stream_init(&st);
    for (size_t i = 0; i <= n; i++) {
        if (i < n)
            check(tok_stream_feed(t, &st, ids[i], piece, sizeof(piece), &plen) == 0,
                  "stream feed of an encoded id succeeds");
        else
            tok_stream_flush(&st, piece, sizeof(piece), &plen);
        check(o + plen <= wlen && memcmp(whole + o, piece, plen) == 0,
              "streaming decode equals whole decode");
        o += plen;
    }
    check(o == wlen, "streaming decode is as long as whole decode");
    free(whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *sep = memmem(text, size, "\n@@\n", 4);
    if (sep) {
        fuzz_dir_put("vocab.json", text, (size_t)(sep - text));
        fuzz_dir_put("merges.txt", sep + 4, size - (size_t)(sep - text) - 4);
        fuzz_dir_put("tokenizer.json", NULL, (size_t)-1);
        fuzz_dir_put("tokenizer_config.json", NULL, (size_t)-1);
    } else {
        const char *cfg = memmem(text, size, "\n@@@\n", 5);
        fuzz_dir_put("vocab.json", NULL, (size_t)-1);
        fuzz_dir_put("merges.txt", NULL, (size_t)-1);
        fuzz_dir_put("tokenizer.json", text, cfg ? (size_t)(cfg - text) : size);
        if (cfg)
            fuzz_dir_put("tokenizer_config.json", cfg + 5, size - (size_t)(cfg - text) - 5);
        else
            fuzz_dir_put("tokenizer_config.json", NULL, (size_t)-1);
    }

    tok_t *t = (tok_t *)1;
    char err[256] = "";
    int rc = tok_init(&t, fuzz_dir(), err, sizeof(err));
    if (rc != 0) {
        check(rc < 0 && t == NULL, "a failed tok_init leaves *out NULL");
        if (err[0] == '\0' || strchr(err, '\n') != NULL)
            fprintf(stderr, "tok_init error (rc %d): '%s'\n", rc, err);
        check(err[0] != '\0' && strchr(err, '\n') == NULL, "one error line");
        return 0;
    }
    static const char *const samples[] = {"",
                                          "a",
                                          "hello world",
                                          " \n\t  x",
                                          "\xff\xfe",
                                          "<|endoftext|>",
                                          "caf\xc3\xa9 123",
                                          "ab<s>ab</s>"};
    int exact = lossless(t);
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        size_t len = strlen(samples[i]);
        if (tok_encode(t, samples[i], len, &ids, &n) != 0) {
            free(ids);
            continue; /* a character without a token, byte fallback or unk */
        }
        char *back = NULL;
        size_t blen = 0;
        check(tok_decode(t, ids, n, &back, &blen) == 0, "decode of encoded ids succeeds");
        if (exact)
            check(blen == len && memcmp(back, samples[i], len) == 0, "decode(encode(s)) == s");
        free(back);
        check_stream(t, ids, n);
        free(ids);
    }
    tok_free(t);
    return 0;
}
