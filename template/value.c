/* value.c - the arena, string buffers, and the value type: construction from JSON,
 * truthiness and equality as Python has them, and the text forms templates print (Python's
 * str() and repr(), and json.dumps as transformers' tojson calls it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

static unsigned u8_decode(const char *s, size_t n, size_t *len);

struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
};

#define CHUNK_BYTES (64 * 1024)

void *arena_alloc(arena_t *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    struct chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
        if (n > a->limit || a->used + cap + sizeof(*c) > a->limit)
            longjmp(*a->fail, 1);
        c = malloc(sizeof(*c) + cap);
        if (!c)
            longjmp(*a->fail, 1);
        a->used += sizeof(*c) + cap;
        c->used = 0;
        c->cap = cap;
        /* A big block goes behind the current chunk so that chunk's free space stays usable. */
        if (a->head && n > CHUNK_BYTES) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    return p;
}

void arena_free(arena_t *a)
{
    struct chunk *c = a->head;
    while (c) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}

void sb_put(render_t *r, sbuf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = arena_alloc(&r->arena, cap);
        if (b->n)
            memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void sb_putc(render_t *r, sbuf_t *b, char ch)
{
    sb_put(r, b, &ch, 1);
}

static void sb_puts(render_t *r, sbuf_t *b, const char *s)
{
    sb_put(r, b, s, strlen(s));
}

val_t v_str(const char *p, size_t n)
{
    return (val_t){.t = V_STR, .s = {p ? p : "", n}};
}

val_t v_sb(sbuf_t *b)
{
    return v_str(b->p, b->n);
}

val_t v_int(long long i)
{
    return (val_t){.t = V_INT, .i = i};
}

val_t v_bool(int b)
{
    return (val_t){.t = V_BOOL, .b = !!b};
}

val_t v_none(void)
{
    return (val_t){.t = V_NONE};
}

val_t v_undef(const char *name)
{
    return (val_t){.t = V_UNDEF, .s = {name, name ? strlen(name) : 0}};
}

vlist_t *list_new(render_t *r, size_t cap)
{
    vlist_t *l = arena_alloc(&r->arena, sizeof(*l));
    l->cap = cap ? cap : 4;
    l->v = arena_alloc(&r->arena, l->cap * sizeof(val_t));
    return l;
}

void list_push(render_t *r, vlist_t *l, val_t v)
{
    if (l->n == l->cap) {
        val_t *nv = arena_alloc(&r->arena, 2 * l->cap * sizeof(val_t));
        memcpy(nv, l->v, l->n * sizeof(val_t));
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
}

vdict_t *dict_new(render_t *r)
{
    return arena_alloc(&r->arena, sizeof(vdict_t));
}

val_t *dict_get(const vdict_t *d, const char *k, size_t kn)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->kn[i] == kn && memcmp(d->k[i], k, kn) == 0)
            return &d->v[i];
    return NULL;
}

void dict_set(render_t *r, vdict_t *d, const char *k, size_t kn, val_t v)
{
    val_t *old = dict_get(d, k, kn);
    if (old) {
        *old = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 4;
        const char **nk = arena_alloc(&r->arena, cap * sizeof(*nk));
        size_t *nkn = arena_alloc(&r->arena, cap * sizeof(*nkn));
        val_t *nv = arena_alloc(&r->arena, cap * sizeof(*nv));
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(*nk));
            memcpy(nkn, d->kn, d->n * sizeof(*nkn));
            memcpy(nv, d->v, d->n * sizeof(*nv));
        }
        d->k = nk, d->kn = nkn, d->v = nv, d->cap = cap;
    }
    d->k[d->n] = k, d->kn[d->n] = kn, d->v[d->n] = v;
    d->n++;
}

val_t v_from_json(render_t *r, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        vdict_t *d = dict_new(r);
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)j, k, x) dict_set(r, d, k, strlen(k), v_from_json(r, x));
        return (val_t){.t = V_DICT, .d = d};
    }
    case JSON_ARRAY: {
        vlist_t *l = list_new(r, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            list_push(r, l, v_from_json(r, json_array_get(j, i)));
        return (val_t){.t = V_LIST, .l = l};
    }
    case JSON_STRING:
        return v_str(json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return v_int(json_integer_value(j));
    case JSON_REAL:
        return (val_t){.t = V_FLOAT, .f = json_real_value(j)};
    case JSON_TRUE:
        return v_bool(1);
    case JSON_FALSE:
        return v_bool(0);
    default:
        return v_none();
    }
}

int v_truthy(val_t v)
{
    switch (v.t) {
    case V_UNDEF:
    case V_NONE:
        return 0;
    case V_BOOL:
        return v.b;
    case V_INT:
        return v.i != 0;
    case V_FLOAT:
        return v.f != 0;
    case V_STR:
        return v.s.n != 0;
    case V_LIST:
        return v.l->n != 0;
    case V_DICT:
        return v.d->n != 0;
    default:
        return 1;
    }
}

static int is_num(val_t v)
{
    return v.t == V_INT || v.t == V_BOOL || v.t == V_FLOAT;
}

int v_equal(val_t a, val_t b)
{
    if (is_num(a) && is_num(b)) {
        if (a.t == V_FLOAT || b.t == V_FLOAT)
            return (a.t == V_FLOAT ? a.f : (double)(a.t == V_INT ? a.i : a.b)) ==
                   (b.t == V_FLOAT ? b.f : (double)(b.t == V_INT ? b.i : b.b));
        return (a.t == V_INT ? a.i : a.b) == (b.t == V_INT ? b.i : b.b);
    }
    if (a.t != b.t)
        return 0;
    switch (a.t) {
    case V_UNDEF:
    case V_NONE:
        return 1;
    case V_STR:
        return a.s.n == b.s.n && memcmp(a.s.p, b.s.p, a.s.n) == 0;
    case V_LIST:
        if (a.l->n != b.l->n || a.l->tuple != b.l->tuple)
            return 0;
        for (size_t i = 0; i < a.l->n; i++)
            if (!v_equal(a.l->v[i], b.l->v[i]))
                return 0;
        return 1;
    case V_DICT:
        if (a.d->n != b.d->n)
            return 0;
        for (size_t i = 0; i < a.d->n; i++) {
            val_t *o = dict_get(b.d, a.d->k[i], a.d->kn[i]);
            if (!o || !v_equal(a.d->v[i], *o))
                return 0;
        }
        return 1;
    case V_NS:
        return a.d == b.d;
    case V_LOOP:
        return a.loop == b.loop;
    default:
        return 0;
    }
}

const char *v_type_name(val_t v)
{
    static const char *names[] = {"Undefined", "NoneType",    "bool",     "int",
                                  "float",     "str",         "list",     "dict",
                                  "Namespace", "LoopContext", "function", "method"};
    if (v.t == V_LIST && v.l->tuple)
        return "tuple";
    return names[v.t];
}

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

void v_to_repr(render_t *r, sbuf_t *b, val_t v)
{
    if (v.t == V_STR)
        str_repr(r, b, v.s.p, v.s.n);
    else
        v_to_str(r, b, v);
}

void v_to_str(render_t *r, sbuf_t *b, val_t v)
{
    char num[32];
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
            v_to_repr(r, b, v.l->v[i]);
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
            v_to_repr(r, b, v.d->v[i]);
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
    if (level > 200)
        render_fail(r, NULL, "tojson: nesting too deep");
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

static unsigned u8_decode(const char *s, size_t n, size_t *len)
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

size_t u8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

size_t u8_offset(const char *s, size_t n, size_t i)
{
    size_t o = 0;
    while (o < n && i) {
        o++;
        while (o < n && ((unsigned char)s[o] & 0xc0) == 0x80)
            o++;
        i--;
    }
    return o;
}

/* Python's str.isspace(): ASCII \t\n\v\f\r, \x1c-\x1f and space, and the Unicode spaces. */
static int py_space(unsigned c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

size_t u8_space_at(const char *s, size_t n, size_t at)
{
    size_t len;
    unsigned c = u8_decode(s + at, n - at, &len);
    return py_space(c) ? len : 0;
}

size_t u8_space_before(const char *s, size_t end)
{
    size_t start = end - 1;
    while (start > 0 && end - start < 4 && ((unsigned char)s[start] & 0xc0) == 0x80)
        start--;
    size_t len;
    unsigned c = u8_decode(s + start, end - start, &len);
    return (start + len == end && py_space(c)) ? len : 0;
}
