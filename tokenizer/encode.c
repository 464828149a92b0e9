/* encode.c - text to ids, in Hugging Face's order: added tokens are split off the text,
 * the rest is normalized (norm.c), split by the pre-tokenizer steps into pieces, and each
 * piece goes through BPE (bpe.c); the post-processor's ids go around the result.
 *
 * Patterns are compiled by PCRE2 with Unicode properties (PCRE2_UTF|PCRE2_UCP), so \p{L},
 * \p{N} and \s come from PCRE2's Unicode tables. Input that is not valid UTF-8 is matched
 * with PCRE2_MATCH_INVALID_UTF: an invalid sequence matches nothing, so every maximal run
 * of invalid bytes lies between two matches and becomes a piece of its own, which
 * byte-level BPE encodes byte-wise like any other piece. Every byte of the text lands in
 * exactly one piece, so byte-level decode(encode(s)) == s for any bytes s.
 *
 * Thread-safe: the compiled patterns are read-only; match data and BPE scratch are per call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

/* GPT-2's pre-tokenizer pattern (openai/gpt-2 src/encoder.py), verbatim; Hugging Face's
 * ByteLevel pre-tokenizer uses the same one. */
const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int tok_pattern_compile(tok_pretok_t *p, const char *pattern, size_t len, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE off;
    p->re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                          &code, &off, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(err, errlen, "pattern: PCRE2 error at offset %zu: %s", (size_t)off,
                 (const char *)msg);
        return -EINVAL;
    }
    /* Without JIT (a PCRE2 built without it, or no executable memory) pcre2_match
     * interprets the same pattern; with it, pcre2_jit_match skips pcre2_match's checks. */
    size_t jit_size = 0;
    p->jit = pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE) == 0 &&
             pcre2_pattern_info(p->re, PCRE2_INFO_JITSIZE, &jit_size) == 0 && jit_size > 0;
    return 0;
}

typedef struct encode_ctx {
    const tok_t *t;
    int use_cache;
    int parse_special;
    pcre2_match_data *md[TOK_MAX_STEPS];
    bpe_scratch_t scratch;
    tok_ids_t ids;
} encode_ctx_t;

static int pieces(encode_ctx_t *c, int step, const unsigned char *s, size_t len);

/* How a Split step joins matches and the text between them (Hugging Face's
 * NormalizedString::split): pieces are delayed in (ps, pe) while they may still grow. */
typedef struct splitter {
    encode_ctx_t *c;
    int step, behavior;
    const unsigned char *s;
    size_t ps, pe;
    int have, prev_match;
} splitter_t;

static int emit(splitter_t *p, size_t a, size_t b)
{
    return b > a ? pieces(p->c, p->step + 1, p->s + a, b - a) : 0;
}

static int flush(splitter_t *p)
{
    int rc = p->have ? emit(p, p->ps, p->pe) : 0;
    p->have = 0;
    return rc;
}

static int hold(splitter_t *p, size_t a, size_t b)
{
    int rc = flush(p);
    p->ps = a;
    p->pe = b;
    p->have = 1;
    return rc;
}

static inline int element(splitter_t *p, size_t a, size_t b, int m)
{
    int rc = 0, prev = p->prev_match;
    p->prev_match = m;
    switch (p->behavior) {
    case SPLIT_ISOLATED:
        /* The hot path (GPT-2, Llama 3, Qwen): the last step's pieces go straight to BPE. */
        if (p->step + 1 >= p->c->t->n_pre_work)
            return bpe_encode_word(p->c->t, p->s + a, b - a, p->c->use_cache, &p->c->scratch,
                                   &p->c->ids);
        return emit(p, a, b);
    case SPLIT_REMOVED:
        return m ? 0 : emit(p, a, b);
    case SPLIT_MERGED_PREV:
        if (m && !prev && p->have) {
            p->pe = b;
            return 0;
        }
        return hold(p, a, b);
    case SPLIT_CONTIGUOUS:
        if (m == prev && p->have) {
            p->pe = b;
            return 0;
        }
        return hold(p, a, b);
    default: /* SPLIT_MERGED_NEXT: a match joins the text after it */
        if (p->have && !m) {
            p->have = 0;
            return emit(p, p->ps, b);
        }
        if (m)
            return hold(p, a, b);
        rc = flush(p);
        return rc ? rc : emit(p, a, b);
    }
}

static int split_step(encode_ctx_t *c, int step, const unsigned char *s, size_t len)
{
    const tok_pretok_t *pt = &c->t->pre[step];
    int behavior = pt->kind == PRE_BYTELEVEL ? SPLIT_ISOLATED : pt->behavior;
    splitter_t p = {.c = c, .step = step, .behavior = behavior, .s = s};
    size_t prev = 0, search = 0;
    int inv = pt->kind == PRE_SPLIT && pt->invert, rc = 0;
    PCRE2_SIZE *ov = pt->re ? pcre2_get_ovector_pointer(c->md[step]) : NULL;

    while (search < len && rc == 0) {
        size_t ms, me;
        if (pt->re) {
            int r = pt->jit ? pcre2_jit_match(pt->re, s, len, search, 0, c->md[step], NULL)
                            : pcre2_match(pt->re, s, len, search, 0, c->md[step], NULL);
            if (r == PCRE2_ERROR_NOMATCH)
                break;
            if (r < 0)
                return r == PCRE2_ERROR_NOMEMORY ? -ENOMEM : -EINVAL;
            ms = ov[0];
            me = ov[1];
        } else {
            const unsigned char *f = memmem(s + search, len - search, pt->lit, pt->litlen);
            if (!f)
                break;
            ms = (size_t)(f - s);
            me = ms + pt->litlen;
        }
        if (me == ms) {
            search = ms + 1; /* an empty match splits nothing */
            continue;
        }
        if (ms > prev)
            rc = element(&p, prev, ms, inv);
        if (rc == 0)
            rc = element(&p, ms, me, !inv);
        prev = search = me;
    }
    if (rc == 0 && prev < len)
        rc = element(&p, prev, len, inv);
    return rc ? rc : flush(&p);
}

/* Runs pre-tokenizer step `step` and the ones after it over s; past the last, BPE. */
static int pieces(encode_ctx_t *c, int step, const unsigned char *s, size_t len)
{
    const tok_t *t = c->t;
    if (len == 0)
        return 0;
    if (step >= t->n_pre_work)
        return bpe_encode_word(t, s, len, c->use_cache, &c->scratch, &c->ids);
    const tok_pretok_t *pt = &t->pre[step];
    if (pt->kind == PRE_BYTELEVEL && pt->prefix_space && s[0] != ' ') {
        unsigned char *tmp = malloc(len + 1);
        if (!tmp)
            return -ENOMEM;
        tmp[0] = ' ';
        memcpy(tmp + 1, s, len);
        int rc = pt->re ? split_step(c, step, tmp, len + 1) : pieces(c, step + 1, tmp, len + 1);
        free(tmp);
        return rc;
    }
    if (pt->kind == PRE_BYTELEVEL && !pt->re)
        return pieces(c, step + 1, s, len);
    return split_step(c, step, s, len);
}

/* ---- added tokens ---- */

static int is_space(unsigned char b)
{
    return b == ' ' || (b >= '\t' && b <= '\r');
}

static int is_word(unsigned char b)
{
    return b == '_' || b >= 0x80 || (b >= '0' && b <= '9') ||
           ((b | 0x20) >= 'a' && (b | 0x20) <= 'z');
}

/* Finds the leftmost-longest added token in s[from, len) (those with normalized == want),
 * with the span its lstrip/rstrip flags take, as Hugging Face's AddedVocabulary does.
 * Returns its index in t->added or -1. */
static int find_added(const encode_ctx_t *c, const unsigned char *s, size_t len, size_t from,
                      int want, size_t *start, size_t *stop)
{
    const tok_t *t = c->t;
    for (size_t pos = from; pos < len; pos++) {
        if (t->added_lead >= 0) {
            /* Usually every added token starts with '<': jump from one to the next. */
            const unsigned char *p = memchr(s + pos, t->added_lead, len - pos);
            if (!p)
                return -1;
            pos = (size_t)(p - s);
        } else if (!t->added_first[s[pos]]) {
            continue;
        }
        for (int i = 0; i < t->n_added; i++) {
            const tok_added_t *a = &t->added[i];
            if (a->normalized != want || (a->special && !c->parse_special) || a->len > len - pos ||
                (unsigned char)a->text[0] != s[pos] || memcmp(a->text, s + pos, a->len) != 0)
                continue;
            size_t b = pos, e = pos + a->len;
            if (a->single_word && ((b > 0 && is_word(s[b - 1])) || (e < len && is_word(s[e]))))
                continue;
            if (a->lstrip)
                while (b > from && is_space(s[b - 1]))
                    b--;
            if (a->rstrip)
                while (e < len && is_space(s[e]))
                    e++;
            *start = b;
            *stop = e;
            return i;
        }
    }
    return -1;
}

/* Text between non-normalized added tokens: normalize, split off normalized added tokens,
 * pre-tokenize and BPE each stretch. */
static int encode_normalized(encode_ctx_t *c, const unsigned char *s, size_t len)
{
    char *ns;
    size_t nlen;
    int owned = 0, rc;
    if (len == 0)
        return 0;
    rc = tok_normalize(c->t, (const char *)s, len, &ns, &nlen, &owned);
    if (rc < 0)
        return rc;
    const unsigned char *u = (const unsigned char *)ns;
    size_t pos = 0, start, stop;
    int i;
    while (rc == 0 && (i = find_added(c, u, nlen, pos, 1, &start, &stop)) >= 0) {
        rc = pieces(c, 0, u + pos, start - pos);
        if (rc == 0)
            rc = tok_ids_push(&c->ids, c->t->added[i].id);
        pos = stop;
    }
    if (rc == 0)
        rc = pieces(c, 0, u + pos, nlen - pos);
    if (owned)
        free(ns);
    return rc;
}

static int encode_text(encode_ctx_t *c, const unsigned char *s, size_t len)
{
    size_t pos = 0, start, stop;
    int i, rc = 0;
    while (rc == 0 && (i = find_added(c, s, len, pos, 0, &start, &stop)) >= 0) {
        rc = encode_normalized(c, s + pos, start - pos);
        if (rc == 0)
            rc = tok_ids_push(&c->ids, c->t->added[i].id);
        pos = stop;
    }
    return rc ? rc : encode_normalized(c, s + pos, len - pos);
}

int tok_encode_ex(const tok_t *t, const char *text, size_t len, unsigned flags, int use_cache,
                  int32_t **ids, size_t *n)
{
    encode_ctx_t c = {.t = t, .use_cache = use_cache, .parse_special = !!(flags & TOK_ENC_SPECIAL)};
    int rc = -ENOMEM, add = !!(flags & TOK_ENC_ADD_SPECIAL);

    *ids = NULL;
    *n = 0;
    for (int k = 0; k < t->n_pre; k++)
        if (t->pre[k].re && !(c.md[k] = pcre2_match_data_create_from_pattern(t->pre[k].re, NULL)))
            goto out;
    c.ids.cap = len / 3 + 16;
    c.ids.v = malloc(c.ids.cap * sizeof(int32_t));
    if (!c.ids.v)
        goto out;
    for (int k = 0; add && k < t->n_post_pre; k++)
        if ((rc = tok_ids_push(&c.ids, t->post_pre[k])) < 0)
            goto out;
    rc = encode_text(&c, (const unsigned char *)text, len);
    for (int k = 0; rc == 0 && add && k < t->n_post_suf; k++)
        rc = tok_ids_push(&c.ids, t->post_suf[k]);
    if (rc < 0)
        goto out;
    *ids = c.ids.v;
    *n = c.ids.n;
    c.ids.v = NULL;
out:
    free(c.ids.v);
    bpe_scratch_free(&c.scratch);
    for (int k = 0; k < t->n_pre; k++)
        pcre2_match_data_free(c.md[k]);
    return rc;
}

int tok_encode_with(const tok_t *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                    size_t *n)
{
    return tok_encode_ex(t, text, len, flags, 1, ids, n);
}

int tok_encode(const tok_t *t, const char *text, size_t len, int32_t **ids, size_t *n)
{
    return tok_encode_ex(t, text, len, TOK_ENC_SPECIAL | TOK_ENC_ADD_SPECIAL, 1, ids, n);
}
