/* fuzz_tokenizer.c - libFuzzer target for the tokenizer: any bytes are encoded (with and
 * without the word cache), decoded and streamed back.
 *
 *   build with clang (tests/tokenizer/meson.build adds it), then
 *   build/tests/tokenizer/fuzz_tokenizer -max_total_time=60 CORPUS_DIR
 *
 * Properties: encode never fails on valid memory, both paths give the same ids, decode gives
 * back exactly the input bytes, and the streamed pieces are each valid UTF-8 and concatenate
 * to the input whenever the input is valid UTF-8. Any violation aborts (a finding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

/* libFuzzer calls the target many times with no context argument: the tokenizer is loaded
 * once and kept for the life of the process. */
static tok_t *fuzz_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[512];
    (void)argc;
    (void)argv;
    if (tok_init(&fuzz_tok, DATA_DIR, err, sizeof(err)) != 0)
        abort();
    return 0;
}

/* Strict UTF-8 check, independent of stream.c. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return 0;
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const tok_t *t = fuzz_tok;
    int32_t *ids, *ids2;
    size_t n, n2;
    if (tok_encode(t, (const char *)data, size, &ids, &n) != 0 ||
        tok_encode_ex(t, (const char *)data, size, 0, &ids2, &n2) != 0)
        abort();
    if (n != n2 || (n && memcmp(ids, ids2, n * sizeof(*ids)) != 0))
        abort();

    char *text;
    size_t len;
    if (tok_decode(t, ids, n, &text, &len) != 0 || len != size ||
        (size && memcmp(text, data, size) != 0))
        abort();
    free(text);

    tok_stream_t st;
    char piece[TOK_STREAM_OUT_MAX];
    size_t plen, o = 0;
    char *out = malloc(3 * size + 4);
    int utf8 = valid_utf8(data, size);
    tok_stream_init(&st);
    for (size_t i = 0; i <= n; i++) {
        if (i < n) {
            if (tok_stream_feed(t, &st, ids[i], piece, sizeof(piece), &plen) != 0)
                abort();
        } else {
            tok_stream_flush(&st, piece, sizeof(piece), &plen);
        }
        if (!valid_utf8((const unsigned char *)piece, plen) || o + plen > 3 * size + 4)
            abort();
        memcpy(out + o, piece, plen);
        o += plen;
    }
    if (utf8 && (o != size || (size && memcmp(out, data, size) != 0)))
        abort();
    free(out);
    free(ids);
    free(ids2);
    return 0;
}
