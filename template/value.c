/* value.c - the arena, string buffers, and the value type: construction from JSON,
 * truthiness and equality as Python has them. Their text forms are in print.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

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

void sb_puts(render_t *r, sbuf_t *b, const char *s)
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

static int equal(val_t a, val_t b, int level);

int v_equal(val_t a, val_t b)
{
    return equal(a, b, 0);
}

static int equal(val_t a, val_t b, int level)
{
    if (level > MAX_VALUE_DEPTH)
        return 0;
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
            if (!equal(a.l->v[i], b.l->v[i], level + 1))
                return 0;
        return 1;
    case V_DICT:
        if (a.d->n != b.d->n)
            return 0;
        for (size_t i = 0; i < a.d->n; i++) {
            val_t *o = dict_get(b.d, a.d->k[i], a.d->kn[i]);
            if (!o || !equal(a.d->v[i], *o, level + 1))
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
