/* encode.c - text to ids: split on <|endoftext|>, pre-tokenize with GPT-2's pattern, BPE.
 *
 * The pattern is GPT-2's, compiled by PCRE2 with Unicode properties (PCRE2_UTF|PCRE2_UCP),
 * so \p{L}, \p{N} and \s come from PCRE2's Unicode tables. Input that is not valid UTF-8
 * is matched with PCRE2_MATCH_INVALID_UTF: an invalid sequence matches nothing, so every
 * maximal run of invalid bytes lies between two matches and becomes a piece of its own,
 * which BPE encodes byte-wise like any other piece. Every byte of the text lands in
 * exactly one piece, so decode(encode(s)) == s for any bytes s.
 *
 * Thread-safe: the compiled pattern is read-only; match data and BPE scratch are per call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

/* GPT-2's pre-tokenizer pattern (openai/gpt-2 src/encoder.py), verbatim. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char eot_text[] = "<|endoftext|>";
#define EOT_LEN (sizeof(eot_text) - 1)

int tok_pattern_compile(tok_t *t, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(err, errlen, "tokenizer pattern: PCRE2 error at offset %zu: %s", (size_t)off,
                 (const char *)msg);
        return -EINVAL;
    }
    /* Without JIT (a PCRE2 built without it, or no executable memory) pcre2_match
     * interprets the same pattern; with it, pcre2_jit_match skips pcre2_match's checks. */
    size_t jit_size = 0;
    t->re_jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0 &&
                pcre2_pattern_info(t->re, PCRE2_INFO_JITSIZE, &jit_size) == 0 && jit_size > 0;
    return 0;
}

typedef struct encode_ctx {
    const tok_t *t;
    int use_cache;
    pcre2_match_data *md;
    bpe_scratch_t scratch;
    tok_ids_t ids;
} encode_ctx_t;

/* Pre-tokenizes one stretch of text that holds no <|endoftext|> and encodes each piece. */
static int encode_segment(encode_ctx_t *c, const unsigned char *s, size_t len)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    size_t pos = 0;
    while (pos < len) {
        int rc = c->t->re_jit ? pcre2_jit_match(c->t->re, s, len, pos, 0, c->md, NULL)
                              : pcre2_match(c->t->re, s, len, pos, 0, c->md, NULL);
        size_t start = len, end = len;
        if (rc > 0) {
            start = ov[0];
            end = ov[1];
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            return rc == PCRE2_ERROR_NOMEMORY ? -ENOMEM : -EINVAL;
        }
        /* Bytes skipped by the match are invalid UTF-8: one piece. */
        if (start > pos) {
            int e = bpe_encode_word(c->t, s + pos, start - pos, c->use_cache, &c->scratch,
                                    &c->ids);
            if (e < 0)
                return e;
        }
        if (end > start) {
            int e = bpe_encode_word(c->t, s + start, end - start, c->use_cache, &c->scratch,
                                    &c->ids);
            if (e < 0)
                return e;
        }
        /* Every alternative of the pattern consumes at least one character; the guard only
         * keeps a broken PCRE2 from looping forever. */
        pos = end > pos ? end : pos + 1;
    }
    return 0;
}

int tok_encode_ex(const tok_t *t, const char *text, size_t len, int use_cache, int32_t **ids,
                  size_t *n)
{
    encode_ctx_t c = {.t = t, .use_cache = use_cache};
    const unsigned char *s = (const unsigned char *)text;
    int rc = -ENOMEM;

    *ids = NULL;
    *n = 0;
    c.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    c.ids.cap = len / 3 + 16;
    c.ids.v = malloc(c.ids.cap * sizeof(int32_t));
    if (!c.md || !c.ids.v)
        goto out;

    size_t pos = 0;
    while (pos < len) {
        const unsigned char *eot = memmem(s + pos, len - pos, eot_text, EOT_LEN);
        size_t seg_end = eot ? (size_t)(eot - s) : len;
        rc = encode_segment(&c, s + pos, seg_end - pos);
        if (rc < 0)
            goto out;
        if (eot && (rc = tok_ids_push(&c.ids, t->eos_id)) < 0)
            goto out;
        pos = eot ? seg_end + EOT_LEN : len;
    }
    rc = 0;
    *ids = c.ids.v;
    *n = c.ids.n;
    c.ids.v = NULL;
out:
    free(c.ids.v);
    bpe_scratch_free(&c.scratch);
    pcre2_match_data_free(c.md);
    return rc;
}

int tok_encode(const tok_t *t, const char *text, size_t len, int32_t **ids, size_t *n)
{
    return tok_encode_ex(t, text, len, 1, ids, n);
}
