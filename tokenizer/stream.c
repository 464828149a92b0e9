/* stream.c - decoding: whole sequences and the incremental (streaming) form, which gives
 * only complete UTF-8 text and, concatenated, exactly what whole decode gives.
 *
 * Byte-level tokens are joined and invalid UTF-8 becomes U+FFFD, one per maximal
 * ill-formed subpart, which is what Hugging Face's ByteLevel decoder (Rust
 * String::from_utf8_lossy) does. Well-formedness follows Unicode Table 3-7, so overlong
 * forms, surrogates and code points above U+10FFFF are ill-formed. The stream holds an
 * unfinished character (at most 3 bytes) until it completes or cannot.
 *
 * SentencePiece-style tokens decode to their text with the decoder's Replace steps done
 * at load; a run of byte pieces (<0xNN>) becomes its bytes when the whole run is valid
 * UTF-8 and one U+FFFD per byte otherwise (Hugging Face's ByteFallback decoder). The
 * stream holds the run until a text token ends it; a run longer than TOK_STREAM_HOLD bytes
 * is decided at that length (the one place a stream can differ from whole decode; models
 * emit runs of a few bytes, one character each; the reference corpus' longest is 91). The decoder's
 * leading Strip removes up to strip_start strip characters from the start of the whole text.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

static const char utf8_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

int utf8_check(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    int len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n)
            return 0;
        unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
        if (s[i] < min || s[i] > max)
            return -i;
    }
    return len;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int r = utf8_check(s + i, n - i);
        if (r <= 0)
            return 0;
        i += (size_t)r;
    }
    return 1;
}

/* Appends s[0, n) with every maximal ill-formed subpart replaced by U+FFFD; with
 * hold_tail, an unfinished character at the end is not written and its length returned
 * in *held. out has room for 3 * n bytes. Returns the bytes written. */
static size_t lossy(const unsigned char *s, size_t n, char *out, int hold_tail, size_t *held)
{
    size_t i = 0, o = 0;
    *held = 0;
    while (i < n) {
        int r = utf8_check(s + i, n - i);
        if (r == 0 && hold_tail) {
            *held = n - i;
            break;
        }
        if (r == 0)
            r = -(int)(n - i); /* an unfinished character at the very end: one subpart */
        size_t emit = r > 0 ? (size_t)r : sizeof(utf8_replacement);
        memcpy(out + o, r > 0 ? (const void *)(s + i) : utf8_replacement, emit);
        o += emit;
        i += (size_t)(r > 0 ? r : -r);
    }
    return o;
}

/* A finished run of byte pieces: its bytes if valid UTF-8, else one U+FFFD per byte. */
static size_t byte_run(const unsigned char *s, size_t n, char *out, int raw)
{
    if (raw || utf8_valid(s, n)) {
        memcpy(out, s, n);
        return n;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(out + 3 * i, utf8_replacement, 3);
    return 3 * n;
}

/* ---- whole decode ---- */

typedef struct dbuf {
    char *p;
    size_t n, cap;
} dbuf_t;

static int dput(dbuf_t *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n) /* s may be NULL when n is 0 */
        memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int flush_run(dbuf_t *b, const unsigned char *run, size_t n, int raw)
{
    if (n == 0)
        return 0;
    if (raw || utf8_valid(run, n))
        return dput(b, run, n);
    for (size_t i = 0; i < n; i++)
        if (dput(b, utf8_replacement, 3) < 0)
            return -ENOMEM;
    return 0;
}

/* transformers' clean_up_tokenization, in its order. */
static void clean_up(char *s, size_t *len)
{
    static const char *const from[] = {" .",   " ?",  " !",  " ,",   " ' ",
                                       " n't", " 'm", " 's", " 've", " 're"};
    for (size_t r = 0; r < sizeof(from) / sizeof(from[0]); r++) {
        size_t fl = strlen(from[r]), o = 0, i = 0;
        /* each replacement drops the leading space (" ' " becomes "'") */
        size_t drop = r == 4 ? 2 : 1;
        while (i < *len) {
            if (i + fl <= *len && memcmp(s + i, from[r], fl) == 0) {
                memmove(s + o, s + i + 1, fl - drop);
                o += fl - drop;
                i += fl;
            } else {
                s[o++] = s[i++];
            }
        }
        *len = o;
    }
    s[*len] = '\0';
}

int tok_decode_with(const tok_t *t, const int32_t *ids, size_t n, unsigned flags, char **text,
                    size_t *len)
{
    dbuf_t b = {0}, run = {0};
    int raw = !!(flags & TOK_DEC_RAW), rc = 0, last_added = 0, any = 0;
    size_t blen;

    *text = NULL;
    *len = 0;
    for (size_t i = 0; i < n; i++)
        if (!tok_token_bytes(t, ids[i], &blen))
            return -EINVAL;
    rc = dput(&b, "", 0);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const tok_entry_t *e = &t->entries[ids[i]];
        if ((flags & TOK_DEC_SKIP_SPECIAL) && e->special)
            continue;
        const char *bytes = t->blob + e->off;
        if (e->byte) {
            rc = dput(&run, bytes, 1);
            continue;
        }
        rc = flush_run(&b, (const unsigned char *)run.p, run.n, raw);
        run.n = 0;
        if (rc == 0 && (flags & TOK_DEC_SPACES_SPECIAL) && any && (e->added || last_added))
            rc = dput(&b, " ", 1);
        if (rc == 0)
            rc = dput(&b, bytes, e->len);
        last_added = e->added;
        any = 1;
    }
    if (rc == 0)
        rc = flush_run(&b, (const unsigned char *)run.p, run.n, raw);
    free(run.p);
    if (rc == 0 && t->byte_level && !raw) {
        char *fixed = malloc(3 * b.n + 1);
        size_t held;
        if (!fixed) {
            rc = -ENOMEM;
        } else {
            size_t o = lossy((const unsigned char *)b.p, b.n, fixed, 0, &held);
            free(b.p);
            b.p = fixed;
            b.n = o;
            b.cap = 3 * b.n + 1;
        }
    }
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    size_t skip = 0;
    while ((int)skip < t->strip_start && skip < b.n && b.p[skip] == t->strip_char)
        skip++;
    memmove(b.p, b.p + skip, b.n - skip);
    b.n -= skip;
    b.p[b.n] = '\0';
    if (flags & TOK_DEC_CLEAN_UP)
        clean_up(b.p, &b.n);
    *text = b.p;
    *len = b.n;
    return 0;
}

int tok_decode(const tok_t *t, const int32_t *ids, size_t n, char **text, size_t *len)
{
    return tok_decode_with(t, ids, n, TOK_DEC_RAW, text, len);
}

unsigned tok_decode_defaults(const tok_t *t)
{
    return (t->clean_up ? TOK_DEC_CLEAN_UP : 0) | (t->spaces_between ? TOK_DEC_SPACES_SPECIAL : 0);
}

/* ---- streaming ---- */

void tok_stream_init_with(tok_stream_t *s, unsigned flags)
{
    memset(s, 0, sizeof(*s));
    s->flags = flags & TOK_DEC_SKIP_SPECIAL;
}

void tok_stream_init(tok_stream_t *s)
{
    tok_stream_init_with(s, TOK_DEC_SKIP_SPECIAL);
}

/* Writes text to out after the leading Strip; returns the bytes written. */
static size_t strip_out(tok_stream_t *s, const char *text, size_t n, char *out)
{
    size_t i = 0;
    while (!s->started && i < n && s->stripped < s->strip_max && text[i] == s->strip_char) {
        s->stripped++;
        i++;
    }
    if (i < n)
        s->started = 1;
    memmove(out, text + i, n - i);
    return n - i;
}

int tok_stream_feed(const tok_t *t, tok_stream_t *s, int32_t id, char *out, size_t cap,
                    size_t *outlen)
{
    char tmp[TOK_STREAM_OUT_MAX];
    unsigned char buf[TOK_STREAM_HOLD + TOK_MAX_TOKEN_BYTES];
    size_t blen, o = 0, held = 0;
    const char *b = tok_token_bytes(t, id, &blen);
    tok_stream_t next = *s;

    next.strip_max = t->strip_start;
    next.strip_char = t->strip_char;
    *outlen = 0;
    if (!b)
        return -EINVAL;
    const tok_entry_t *e = &t->entries[id];
    if ((s->flags & TOK_DEC_SKIP_SPECIAL) && e->special)
        return 0;
    if (t->byte_level) {
        memcpy(buf, s->pending, (size_t)s->npending);
        memcpy(buf + s->npending, b, blen);
        o = lossy(buf, (size_t)s->npending + blen, tmp, 1, &held);
        next.npending = (int)held;
        memcpy(next.pending, buf + s->npending + blen - held, held);
    } else if (e->byte) {
        if (s->npending == TOK_STREAM_HOLD) {
            o = byte_run(s->pending, (size_t)s->npending, tmp, 0);
            next.npending = 0;
        }
        next.pending[next.npending++] = (unsigned char)b[0];
        next.run = 1;
    } else {
        o = byte_run(s->pending, (size_t)s->npending, tmp, 0);
        memcpy(tmp + o, b, blen);
        o += blen;
        next.npending = 0;
        next.run = 0;
    }
    o = strip_out(&next, tmp, o, tmp);
    if (o > cap)
        return -ENOSPC;
    memcpy(out, tmp, o);
    *s = next;
    *outlen = o;
    return 0;
}

void tok_stream_flush(tok_stream_t *s, char *out, size_t cap, size_t *outlen)
{
    char tmp[3 * TOK_STREAM_HOLD];
    size_t o = 0;
    *outlen = 0;
    if (s->npending > 0 && s->run) {
        o = byte_run(s->pending, (size_t)s->npending, tmp, 0);
    } else if (s->npending > 0) {
        /* The held bytes are one unfinished character, one maximal subpart: one U+FFFD. */
        memcpy(tmp, utf8_replacement, 3);
        o = 3;
    }
    o = strip_out(s, tmp, o, tmp);
    if (o <= cap) {
        memcpy(out, tmp, o);
        *outlen = o;
    }
    s->npending = 0;
    s->run = 0;
}
