/* print.c - the text forms of values that templates print: Python's str() and repr() (floats
 * in their shortest round-trip form, strings quoted and escaped as Python quotes them), and
 * json.dumps(ensure_ascii=False) as transformers' tojson calls it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

/* Python's float repr: the shortest digits that read back as the same double, in fixed
 * notation for exponents -4..15 and scientific (e+XX) otherwise, ".0" added when integral. */
static void float_repr(render_t *r, sbuf_t *b, double f)
{
    if (isnan(f)) {
        sb_puts(r, b, "nan");
        return;
    }
    if (isinf(f)) {
        sb_puts(r, b, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec, f);
        if (strtod(e, NULL) == f)
            break;
    }
    /* e is [-]D[.DDD]e[+-]XX: take the digits and the exponent apart. */
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    int neg = *p == '-';
    if (neg)
        p++;
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    char out[64];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            out[o++] = '0', out[o++] = '.';
            for (int i = -1; i > exp; i--)
                out[o++] = '0';
            memcpy(out + o, digits, nd), o += nd;
        } else {
            for (int i = 0; i <= exp; i++)
                out[o++] = (size_t)i < nd ? digits[i] : '0';
            out[o++] = '.';
            if ((size_t)exp + 1 < nd)
                memcpy(out + o, digits + exp + 1, nd - exp - 1), o += nd - exp - 1;
            else
                out[o++] = '0';
        }
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1), o += nd - 1;
        }
        o += (size_t)snprintf(out + o, sizeof(out) - o, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
    }
    sb_put(r, b, out, o);
}

/* Python's str.isprintable() is false for these besides the ASCII controls: the C1
 * controls, the separators other than the space (Zs, Zl, Zp) and the common format
 * characters (Cf). repr() writes them as escapes. */
static int py_unprintable(unsigned c)
{
    return (c >= 0x7f && c <= 0xa0) || c == 0xad || c == 0x1680 || (c >= 0x2000 && c <= 0x200f) ||
           (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x2064) ||
           (c >= 0x2066 && c <= 0x206f) || c == 0x3000 || c == 0xfeff || c == 0x061c ||
           c == 0x180e || (c >= 0xfff9 && c <= 0xfffb);
}

static void str_repr(render_t *r, sbuf_t *b, const char *s, size_t n)
{
    char q = (memchr(s, '\'', n) && !memchr(s, '"', n)) ? '"' : '\'';
    sb_putc(r, b, q);
    for (size_t i = 0; i < n;) {
        size_t len;
        unsigned c = u8_decode(s + i, n - i, &len);
        char esc[16];
        if (c == '\\' || c == (unsigned char)q) {
            sb_putc(r, b, '\\'), sb_putc(r, b, (char)c);
        } else if (c == '\n' || c == '\r' || c == '\t') {
            sb_putc(r, b, '\\'), sb_putc(r, b, c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        } else if (c < 0x20 || py_unprintable(c)) {
            snprintf(esc, sizeof(esc), c < 0x100 ? "\\x%02x" : "\\u%04x", c);
            sb_puts(r, b, esc);
        } else {
            sb_put(r, b, s + i, len);
        }
        i += len;
    }
    sb_putc(r, b, q);
}

static void to_str(render_t *r, sbuf_t *b, val_t v, int level);

static void to_repr(render_t *r, sbuf_t *b, val_t v, int level)
{
    if (v.t == V_STR)
        str_repr(r, b, v.s.p, v.s.n);
    else if (v.t == V_UNDEF)
        sb_puts(r, b, "Undefined");
    else
        to_str(r, b, v, level);
}

void v_to_repr(render_t *r, sbuf_t *b, val_t v)
{
    to_repr(r, b, v, 0);
}

void v_to_str(render_t *r, sbuf_t *b, val_t v)
{
    to_str(r, b, v, 0);
}

static void to_str(render_t *r, sbuf_t *b, val_t v, int level)
{
    char num[32];
    if (level > MAX_VALUE_DEPTH)
        render_fail(r, NULL, "a value nested deeper than %d cannot be printed", MAX_VALUE_DEPTH);
    switch (v.t) {
    case V_UNDEF:
        return;
    case V_NONE:
        sb_puts(r, b, "None");
        return;
    case V_BOOL:
        sb_puts(r, b, v.b ? "True" : "False");
        return;
    case V_INT:
        snprintf(num, sizeof(num), "%lld", v.i);
        sb_puts(r, b, num);
        return;
    case V_FLOAT:
        float_repr(r, b, v.f);
        return;
    case V_STR:
        sb_put(r, b, v.s.p, v.s.n);
        return;
    case V_LIST:
        sb_putc(r, b, v.l->tuple ? '(' : '[');
        for (size_t i = 0; i < v.l->n; i++) {
            if (i)
                sb_puts(r, b, ", ");
            to_repr(r, b, v.l->v[i], level + 1);
        }
        if (v.l->tuple && v.l->n == 1)
            sb_putc(r, b, ',');
        sb_putc(r, b, v.l->tuple ? ')' : ']');
        return;
    case V_DICT:
    case V_NS:
        sb_puts(r, b, v.t == V_NS ? "<Namespace {" : "{");
        for (size_t i = 0; i < v.d->n; i++) {
            if (i)
                sb_puts(r, b, ", ");
            str_repr(r, b, v.d->k[i], v.d->kn[i]);
            sb_puts(r, b, ": ");
            to_repr(r, b, v.d->v[i], level + 1);
        }
        sb_puts(r, b, v.t == V_NS ? "}>" : "}");
        return;
    default:
        sb_puts(r, b, v.t == V_LOOP ? "<LoopContext>" : "<function>");
        return;
    }
}

val_t v_as_str(render_t *r, val_t v)
{
    if (v.t == V_STR)
        return v;
    sbuf_t b = {0};
    v_to_str(r, &b, v);
    return v_sb(&b);
}

/* json.dumps(ensure_ascii=False): only '"', '\\' and control characters are escaped. */
static void json_str(render_t *r, sbuf_t *b, const char *s, size_t n)
{
    sb_putc(r, b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *short_esc = c == '"'    ? "\\\""
                                : c == '\\' ? "\\\\"
                                : c == '\n' ? "\\n"
                                : c == '\r' ? "\\r"
                                : c == '\t' ? "\\t"
                                : c == '\b' ? "\\b"
                                : c == '\f' ? "\\f"
                                            : NULL;
        if (short_esc) {
            sb_puts(r, b, short_esc);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sb_puts(r, b, esc);
        } else {
            sb_putc(r, b, (char)c);
        }
    }
    sb_putc(r, b, '"');
}

static void json_newline(render_t *r, sbuf_t *b, int indent, int level)
{
    sb_putc(r, b, '\n');
    for (int i = 0; i < indent * level; i++)
        sb_putc(r, b, ' ');
}

/* indent < 0 means none (everything on one line). */
void v_to_json(render_t *r, sbuf_t *b, val_t v, int indent, int level, const char *item_sep,
               const char *key_sep)
{
    if (level > MAX_VALUE_DEPTH)
        render_fail(r, NULL, "tojson: a value nested deeper than %d", MAX_VALUE_DEPTH);
    switch (v.t) {
    case V_NONE:
        sb_puts(r, b, "null");
        return;
    case V_BOOL:
        sb_puts(r, b, v.b ? "true" : "false");
        return;
    case V_INT:
    case V_FLOAT:
        if (v.t == V_FLOAT && isnan(v.f))
            sb_puts(r, b, "NaN");
        else if (v.t == V_FLOAT && isinf(v.f))
            sb_puts(r, b, v.f < 0 ? "-Infinity" : "Infinity");
        else
            v_to_str(r, b, v);
        return;
    case V_STR:
        json_str(r, b, v.s.p, v.s.n);
        return;
    case V_LIST:
    case V_DICT: {
        size_t n = v.t == V_LIST ? v.l->n : v.d->n;
        sb_putc(r, b, v.t == V_LIST ? '[' : '{');
        for (size_t i = 0; i < n; i++) {
            if (i)
                sb_puts(r, b, item_sep);
            if (indent >= 0)
                json_newline(r, b, indent, level + 1);
            if (v.t == V_DICT) {
                json_str(r, b, v.d->k[i], v.d->kn[i]);
                sb_puts(r, b, key_sep);
            }
            v_to_json(r, b, v.t == V_LIST ? v.l->v[i] : v.d->v[i], indent, level + 1, item_sep,
                      key_sep);
        }
        if (indent >= 0 && n)
            json_newline(r, b, indent, level);
        sb_putc(r, b, v.t == V_LIST ? ']' : '}');
        return;
    }
    default:
        render_fail(r, NULL, "tojson: Object of type %s is not JSON serializable", v_type_name(v));
    }
}
