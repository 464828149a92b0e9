/* stream.c - incremental decode for streaming: one id in, only complete UTF-8 out.
 *
 * The bytes of a token are appended to what the stream held back; every complete, valid
 * UTF-8 character is emitted; a valid but unfinished character at the end is held (at most
 * 3 bytes) for the next token; bytes that can never start or continue a valid character
 * come out as U+FFFD, one per maximal ill-formed subpart, which is what Hugging Face's
 * decode (Rust String::from_utf8_lossy) does. Well-formedness follows Unicode Table 3-7,
 * so overlong forms, surrogates and code points above U+10FFFF are ill-formed.
 */
#include <errno.h>
#include <string.h>

#include "tokenizer/internal.h"

static const char utf8_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Checks the character starting at s[0] with n bytes available. Returns its length when it
 * is complete and valid, 0 when the n bytes are a valid but unfinished start, and -k when
 * the first k bytes are a maximal ill-formed subpart (k >= 1). */
static int utf8_check(const unsigned char *s, size_t n)
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

void tok_stream_init(tok_stream_t *s)
{
    memset(s, 0, sizeof(*s));
}

int tok_stream_feed(const tok_t *t, tok_stream_t *s, int32_t id, char *out, size_t cap,
                    size_t *outlen)
{
    unsigned char buf[4 + TOK_MAX_TOKEN_BYTES];
    size_t blen, n, o = 0, i = 0;
    const char *b = tok_token_bytes(t, id, &blen);

    *outlen = 0;
    if (!b)
        return -EINVAL;
    memcpy(buf, s->pending, (size_t)s->npending);
    memcpy(buf + s->npending, b, blen);
    n = (size_t)s->npending + blen;

    while (i < n) {
        int r = utf8_check(buf + i, n - i);
        if (r == 0)
            break; /* an unfinished character: hold it */
        size_t emit = r > 0 ? (size_t)r : sizeof(utf8_replacement);
        if (o + emit > cap)
            return -ENOSPC;
        memcpy(out + o, r > 0 ? (const void *)(buf + i) : utf8_replacement, emit);
        o += emit;
        i += (size_t)(r > 0 ? r : -r);
    }
    /* Only an unfinished character is left: at most 3 bytes. */
    s->npending = (int)(n - i);
    memcpy(s->pending, buf + i, n - i);
    *outlen = o;
    return 0;
}

void tok_stream_flush(tok_stream_t *s, char *out, size_t cap, size_t *outlen)
{
    *outlen = 0;
    /* The held bytes are one unfinished character, one maximal subpart: one U+FFFD. */
    if (s->npending > 0 && cap >= sizeof(utf8_replacement)) {
        memcpy(out, utf8_replacement, sizeof(utf8_replacement));
        *outlen = sizeof(utf8_replacement);
    }
    s->npending = 0;
}
