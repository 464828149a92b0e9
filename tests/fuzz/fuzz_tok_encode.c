/* fuzz_tok_encode.c - libFuzzer harness for tokenizer encode and decode on arbitrary bytes,
 * with the real GPT-2 files (tests/data/gpt2, path compiled in as NV_TOKENIZER_DIR).
 *
 * If the first byte is even, the rest is text: encode it and check decode(encode(s)) == s
 * (the tokenizer's promise for any bytes), every id in range, and that the streaming
 * decoder gives back s itself when s is valid UTF-8. If odd, the rest is little-endian
 * 16-bit ids (some out of range): decode and stream-decode them and check that they agree
 * on valid ids and that invalid ids are refused. Abort on any broken promise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const tok_t *tokenizer(void)
{
    static tok_t *t; /* loaded once per process; read-only afterwards */
    if (!t) {
        char err[256];
        if (tok_init(&t, NV_TOKENIZER_DIR, err, sizeof(err)) != 0) {
            fprintf(stderr, "tok_init: %s\n", err);
            abort();
        }
    }
    return t;
}

/* 1 when s[0..n) is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return 0;
        }
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += len;
    }
    return 1;
}

/* Stream-decodes ids into a malloc'd buffer; returns -EINVAL on the first invalid id. */
static int stream_decode(const tok_t *t, const int32_t *ids, size_t n, char **out, size_t *len)
{
    char *buf = malloc(n * TOK_STREAM_OUT_MAX + 8);
    size_t used = 0, got;
    tok_stream_t s;
    tok_stream_init_with(&s, 0); /* special tokens as text, to compare with the input */
    for (size_t i = 0; i < n; i++) {
        int rc = tok_stream_feed(t, &s, ids[i], buf + used, TOK_STREAM_OUT_MAX, &got);
        if (rc != 0) {
            free(buf);
            return rc;
        }
        used += got;
    }
    tok_stream_flush(&s, buf + used, 8, &got);
    *out = buf;
    *len = used + got;
    return 0;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "broken promise: %s\n", what);
        abort();
    }
}

static void fuzz_text(const tok_t *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    check(tok_encode(t, text, len, &ids, &n) == 0 && ids != NULL, "tok_encode succeeds");
    int V = tok_vocab_size(t);
    for (size_t i = 0; i < n; i++)
        check(ids[i] >= 0 && ids[i] < V, "ids in range");
    char *back = NULL;
    size_t blen = 0;
    check(tok_decode(t, ids, n, &back, &blen) == 0, "tok_decode of encoded ids succeeds");
    check(blen == len && memcmp(back, text, len) == 0, "decode(encode(s)) == s");
    check(back[blen] == '\0', "decode output is NUL-terminated");
    if (valid_utf8((const unsigned char *)text, len)) {
        char *streamed = NULL;
        size_t slen = 0;
        check(stream_decode(t, ids, n, &streamed, &slen) == 0, "stream decode succeeds");
        check(slen == len && memcmp(streamed, text, len) == 0, "stream decode == s for UTF-8");
        free(streamed);
    }
    free(back);
    free(ids);
}

static void fuzz_ids(const tok_t *t, const uint8_t *data, size_t size)
{
    size_t n = size / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    int V = tok_vocab_size(t), all_valid = 1;
    for (size_t i = 0; i < n; i++) {
        /* 0..65535 covers the whole vocabulary and ids past it; the top bit makes some
         * negative. */
        ids[i] = (int32_t)(data[2 * i] | data[2 * i + 1] << 8);
        if (ids[i] >= 0xF000)
            ids[i] = -(ids[i] - 0xF000) - 1;
        all_valid &= ids[i] >= 0 && ids[i] < V;
    }
    char *text = NULL, *streamed = NULL;
    size_t len = 0, slen = 0;
    int rc = tok_decode(t, ids, n, &text, &len);
    int src = stream_decode(t, ids, n, &streamed, &slen);
    check(all_valid ? rc == 0 && src == 0 : rc != 0 && src != 0, "invalid ids are refused");
    if (all_valid) {
        check(valid_utf8((const unsigned char *)streamed, slen), "stream output is UTF-8");
        if (valid_utf8((const unsigned char *)text, len))
            check(slen == len && memcmp(streamed, text, len) == 0,
                  "stream == decode when the bytes are UTF-8");
    }
    free(text);
    free(streamed);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const tok_t *t = tokenizer();
    if (size == 0)
        return 0;
    if (data[0] % 2 == 0)
        fuzz_text(t, (const char *)data + 1, size - 1);
    else
        fuzz_ids(t, data + 1, size - 1);
    return 0;
}
