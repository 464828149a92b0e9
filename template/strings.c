/* strings.c - Python's string operations on UTF-8 byte ranges, as templates call them:
 * strip with an optional character set, case mapping (upper, lower, str.title, capitalize
 * and Jinja2's title filter), replace, split and find. Case mapping uses the C.UTF-8 locale's
 * towupper/towlower when the system has it (ASCII only otherwise). */
#include <string.h>
#include <wctype.h>

#include "template/internal.h"
#include "template/strings.h"

/* Decodes one code point of s (n bytes, n > 0) and its length; invalid bytes are taken one
 * by one as themselves. */
static unsigned decode(const char *s, size_t n, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t need = u[0] < 0x80 ? 1 : u[0] >= 0xf0 ? 4 : u[0] >= 0xe0 ? 3 : u[0] >= 0xc0 ? 2 : 1;
    if (need > n)
        need = 1;
    for (size_t i = 1; i < need; i++)
        if ((u[i] & 0xc0) != 0x80)
            need = 1;
    *len = need;
    if (need == 1)
        return u[0];
    unsigned c = u[0] & (0x7fu >> need);
    for (size_t i = 1; i < need; i++)
        c = (c << 6) | (u[i] & 0x3fu);
    return c;
}

static void encode(render_t *r, sbuf_t *b, unsigned c)
{
    char out[4];
    size_t n;
    if (c < 0x80) {
        out[0] = (char)c, n = 1;
    } else if (c < 0x800) {
        out[0] = (char)(0xc0 | (c >> 6)), out[1] = (char)(0x80 | (c & 0x3f)), n = 2;
    } else if (c < 0x10000) {
        out[0] = (char)(0xe0 | (c >> 12)), out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f)), n = 3;
    } else {
        out[0] = (char)(0xf0 | (c >> 18)), out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
        out[2] = (char)(0x80 | ((c >> 6) & 0x3f)), out[3] = (char)(0x80 | (c & 0x3f)), n = 4;
    }
    sb_put(r, b, out, n);
}

static int in_set(val_t chars, const char *s, size_t len)
{
    for (size_t i = 0; i < chars.s.n;) {
        size_t k;
        decode(chars.s.p + i, chars.s.n - i, &k);
        if (k == len && memcmp(chars.s.p + i, s, len) == 0)
            return 1;
        i += k;
    }
    return 0;
}

val_t str_strip(render_t *r, val_t s, val_t chars, int left, int right)
{
    (void)r;
    size_t a = 0, e = s.s.n, k;
    int custom = chars.t == V_STR;
    while (left && a < e) {
        if (custom) {
            decode(s.s.p + a, e - a, &k);
            if (!in_set(chars, s.s.p + a, k))
                break;
        } else if (!(k = u8_space_at(s.s.p, e, a))) {
            break;
        }
        a += k;
    }
    while (right && e > a) {
        if (custom) {
            size_t st = e - 1;
            while (st > a && ((unsigned char)s.s.p[st] & 0xc0) == 0x80 && e - st < 4)
                st--;
            decode(s.s.p + st, e - st, &k);
            if (st + k != e)
                st = e - 1, k = 1;
            if (!in_set(chars, s.s.p + st, k))
                break;
        } else if (!(k = u8_space_before(s.s.p, e)) || e - k < a) {
            break;
        }
        e -= k;
    }
    return v_str(s.s.p + a, e - a);
}

static unsigned map_case(render_t *r, unsigned c, int upper)
{
    if (c < 0x80)
        return upper ? (c >= 'a' && c <= 'z' ? c - 32 : c) : (c >= 'A' && c <= 'Z' ? c + 32 : c);
    if (!r->loc)
        return c;
    return (unsigned)(upper ? towupper_l((wint_t)c, r->loc) : towlower_l((wint_t)c, r->loc));
}

static int is_cased(render_t *r, unsigned c)
{
    return map_case(r, c, 1) != c || map_case(r, c, 0) != c;
}

/* Python maps a few characters to several (Unicode's SpecialCasing.txt): the common ones,
 * for upper case, title case (title, capitalize) and lower case. */
static const char *special_case(unsigned c, int up, int mode)
{
    static const struct {
        unsigned c;
        const char *upper, *title;
    } table[] = {
        {0xdf, "SS", "Ss"},   {0xfb00, "FF", "Ff"},   {0xfb01, "FI", "Fi"},
        {0xfb02, "FL", "Fl"}, {0xfb03, "FFI", "Ffi"}, {0xfb04, "FFL", "Ffl"},
        {0xfb05, "ST", "St"}, {0xfb06, "ST", "St"},   {0x149, "\u02bcN", "\u02bcN"},
    };
    if (!up)
        return c == 0x130 ? "i\u0307" : NULL;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].c == c)
            return mode == 'u' ? table[i].upper : table[i].title;
    return NULL;
}

/* mode: 'u' upper, 'l' lower, 't' str.title, 'c' capitalize, 'j' Jinja2's title filter
 * (a word starts after whitespace or one of "-({[<"). */
val_t str_case(render_t *r, val_t s, int mode)
{
    sbuf_t b = {0};
    int prev_cased = 0, word_start = 1;
    for (size_t i = 0; i < s.s.n;) {
        size_t k;
        unsigned c = decode(s.s.p + i, s.s.n - i, &k);
        int up;
        switch (mode) {
        case 'u':
            up = 1;
            break;
        case 'l':
            up = 0;
            break;
        case 't':
            up = !prev_cased;
            break;
        case 'c':
            up = i == 0;
            break;
        default:
            up = word_start;
            break;
        }
        const char *special = special_case(c, up, mode);
        if (k == 1 && c >= 0x80)
            sb_put(r, &b, s.s.p + i, 1); /* an invalid byte stays as it is */
        else if (special)
            sb_put(r, &b, special, strlen(special));
        else
            encode(r, &b, map_case(r, c, up));
        prev_cased = is_cased(r, c);
        int sep = u8_space_at(s.s.p, s.s.n, i) || (c < 0x80 && strchr("-({[<", (int)c) && c);
        word_start = mode == 'j' ? (sep ? 1 : 0) : 0;
        i += k;
    }
    return v_sb(&b);
}

val_t str_replace(render_t *r, val_t s, val_t old, val_t new, long long count)
{
    sbuf_t b = {0};
    size_t i = 0;
    long long done = 0;
    if (old.s.n == 0) { /* Python inserts new between every character and at both ends */
        for (;;) {
            if (count >= 0 && done >= count)
                break;
            sb_put(r, &b, new.s.p, new.s.n), done++;
            if (i >= s.s.n)
                break;
            size_t k;
            decode(s.s.p + i, s.s.n - i, &k);
            sb_put(r, &b, s.s.p + i, k);
            i += k;
        }
        sb_put(r, &b, s.s.p + i, s.s.n - i);
        return v_sb(&b);
    }
    while (i <= s.s.n && (count < 0 || done < count)) {
        const char *hit = memmem(s.s.p + i, s.s.n - i, old.s.p, old.s.n);
        if (!hit)
            break;
        sb_put(r, &b, s.s.p + i, (size_t)(hit - s.s.p) - i);
        sb_put(r, &b, new.s.p, new.s.n);
        i = (size_t)(hit - s.s.p) + old.s.n;
        done++;
    }
    sb_put(r, &b, s.s.p + i, s.s.n - i);
    return v_sb(&b);
}

/* str.split(sep=None, maxsplit=-1) */
val_t str_split(render_t *r, val_t s, val_t sep, long long maxsplit)
{
    vlist_t *l = list_new(r, 4);
    const char *p = s.s.p;
    size_t n = s.s.n, i = 0, k;
    if (sep.t == V_STR) {
        while (maxsplit < 0 || (long long)l->n < maxsplit) {
            const char *hit = memmem(p + i, n - i, sep.s.p, sep.s.n);
            if (!hit)
                break;
            list_push(r, l, v_str(p + i, (size_t)(hit - p) - i));
            i = (size_t)(hit - p) + sep.s.n;
        }
        list_push(r, l, v_str(p + i, n - i));
        return (val_t){.t = V_LIST, .l = l};
    }
    /* No separator: runs of whitespace split, and no empty strings come out. */
    for (;;) {
        while (i < n && (k = u8_space_at(p, n, i)))
            i += k;
        if (i >= n)
            break;
        if (maxsplit >= 0 && (long long)l->n >= maxsplit) {
            size_t e = n;
            while (e > i && (k = u8_space_before(p, e)))
                e -= k;
            list_push(r, l, v_str(p + i, e - i));
            break;
        }
        size_t st = i;
        while (i < n && !u8_space_at(p, n, i))
            i++;
        list_push(r, l, v_str(p + st, i - st));
    }
    return (val_t){.t = V_LIST, .l = l};
}

/* Index in code points of the first occurrence of sub, or -1. */
long long str_find(val_t s, val_t sub)
{
    const char *hit = memmem(s.s.p, s.s.n, sub.s.p, sub.s.n);
    return hit ? (long long)u8_len(s.s.p, (size_t)(hit - s.s.p)) : -1;
}
