/* filters.c - the filters templates apply with "|", with the parameters of their Jinja2
 * originals (tojson is transformers' json.dumps wrapper). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/builtins.h"
#include "template/strings.h"

#define soft_str v_as_str

static val_t list_val(vlist_t *l)
{
    return (val_t){.t = V_LIST, .l = l};
}

/* ---- filters ---- */

static val_t f_trim(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at;
    return str_strip(r, soft_str(r, self), GIVEN(a[0]) ? a[0] : v_none(), 1, 1);
}

static val_t f_length(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)a;
    switch (self.t) {
    case V_STR:
        return v_int((long long)u8_len(self.s.p, self.s.n));
    case V_LIST:
        return v_int((long long)self.l->n);
    case V_DICT:
        return v_int((long long)self.d->n);
    case V_UNDEF:
        return v_int(0);
    default:
        render_fail(r, at, "object of type '%s' has no len()", v_type_name(self));
    }
}

static val_t f_tojson(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f;
    long long indent = need_int(r, at, a[1], -1, "tojson indent");
    if (GIVEN(a[1]) && a[1].t != V_NONE && indent < 0)
        indent = 0;
    if (indent > 64)
        render_fail(r, at, "tojson indent %lld is too large", indent);
    if (GIVEN(a[3]) && v_truthy(a[3]))
        render_fail(r, at, "unsupported tojson sort_keys=True");
    if (GIVEN(a[0]) && v_truthy(a[0]))
        render_fail(r, at, "unsupported tojson ensure_ascii=True");
    const char *item_sep = indent >= 0 ? "," : ", ", *key_sep = ": ";
    if (GIVEN(a[2]) && a[2].t != V_NONE) {
        if (a[2].t != V_LIST || a[2].l->n != 2 || a[2].l->v[0].t != V_STR ||
            a[2].l->v[1].t != V_STR)
            render_fail(r, at, "tojson separators must be two strings");
        item_sep = arena_strndup(&r->arena, a[2].l->v[0].s.p, a[2].l->v[0].s.n);
        key_sep = arena_strndup(&r->arena, a[2].l->v[1].s.p, a[2].l->v[1].s.n);
    }
    sbuf_t b = {0};
    v_to_json(r, &b, self, (int)indent, 0, item_sep, key_sep);
    return v_sb(&b);
}

static val_t f_upper(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at, (void)a;
    return str_case(r, soft_str(r, self), 'u');
}

static val_t f_lower(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at, (void)a;
    return str_case(r, soft_str(r, self), 'l');
}

static val_t f_title(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at, (void)a;
    return str_case(r, soft_str(r, self), 'j');
}

static val_t f_capitalize(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at, (void)a;
    return str_case(r, soft_str(r, self), 'c');
}

static val_t f_default(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)r, (void)f, (void)at;
    int boolean = GIVEN(a[1]) && v_truthy(a[1]);
    if (self.t == V_UNDEF || (boolean && !v_truthy(self)))
        return GIVEN(a[0]) ? a[0] : v_str("", 0);
    return self;
}

static val_t f_join(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f;
    vlist_t *l = v_iterate(r, at, self);
    val_t sep = GIVEN(a[0]) ? soft_str(r, a[0]) : v_str("", 0);
    sbuf_t b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i)
            sb_put(r, &b, sep.s.p, sep.s.n);
        val_t v = l->v[i];
        if (GIVEN(a[1]) && a[1].t != V_NONE) {
            val_t attr = soft_str(r, a[1]);
            v = v_getattr(r, at, v, attr.s.p, attr.s.n);
        }
        v_to_str(r, &b, v);
    }
    return v_sb(&b);
}

static val_t f_replace(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f;
    if (!GIVEN(a[0]) || !GIVEN(a[1]))
        render_fail(r, at, "replace needs two arguments");
    return str_replace(r, soft_str(r, self), soft_str(r, a[0]), soft_str(r, a[1]),
                       need_int(r, at, a[2], -1, "replace count"));
}

static val_t f_first(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)a;
    vlist_t *l = v_iterate(r, at, self);
    return l->n ? l->v[0] : v_undef(NULL);
}

static val_t f_last(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)a;
    vlist_t *l = v_iterate(r, at, self);
    return l->n ? l->v[l->n - 1] : v_undef(NULL);
}

val_t items_of(render_t *r, const node_t *at, val_t self)
{
    if (self.t == V_UNDEF)
        return list_val(list_new(r, 1));
    if (self.t != V_DICT)
        render_fail(r, at, "items expects a mapping, got '%s'", v_type_name(self));
    vlist_t *l = list_new(r, self.d->n);
    for (size_t i = 0; i < self.d->n; i++) {
        vlist_t *pair = list_new(r, 2);
        list_push(r, pair, v_str(self.d->k[i], self.d->kn[i]));
        list_push(r, pair, self.d->v[i]);
        pair->tuple = 1;
        list_push(r, l, list_val(pair));
    }
    return list_val(l);
}

static val_t f_items(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)a;
    return items_of(r, at, self);
}

static val_t f_list(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)a;
    vlist_t *src = v_iterate(r, at, self), *l = list_new(r, src->n);
    for (size_t i = 0; i < src->n; i++)
        list_push(r, l, src->v[i]);
    return list_val(l);
}

static val_t f_string(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at, (void)a;
    return soft_str(r, self);
}

static val_t f_safe(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)r, (void)f, (void)at, (void)a;
    return self;
}

/* Python's int() of a string: optional sign, digits with single underscores, spaces around. */
static int parse_int(val_t s, long long *out)
{
    char buf[64];
    size_t n = 0;
    for (size_t i = 0; i < s.s.n; i++)
        if (s.s.p[i] != '_' && n < sizeof(buf) - 1)
            buf[n++] = s.s.p[i];
    buf[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\n')
        end++;
    if (end == buf || *end || errno || n == 0)
        return 0;
    *out = v;
    return 1;
}

static val_t f_int(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f;
    val_t dflt = GIVEN(a[0]) ? a[0] : v_int(0);
    long long i;
    switch (self.t) {
    case V_INT:
        return self;
    case V_BOOL:
        return v_int(self.b);
    case V_FLOAT:
        if (!isfinite(self.f) || fabs(self.f) >= 9.2e18)
            return dflt;
        return v_int((long long)self.f);
    case V_STR:
        if (parse_int(self, &i))
            return v_int(i);
        {
            char *buf = arena_strndup(&r->arena, self.s.p, self.s.n), *end;
            double d = strtod(buf, &end);
            if (end != buf && !*end && isfinite(d) && fabs(d) < 9.2e18)
                return v_int((long long)d);
        }
        return dflt;
    default:
        (void)at;
        return dflt;
    }
}

static val_t f_reverse(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)a;
    vlist_t *src = v_iterate(r, at, self), *l = list_new(r, src->n);
    for (size_t i = src->n; i > 0; i--)
        list_push(r, l, src->v[i - 1]);
    if (self.t != V_STR)
        return list_val(l);
    sbuf_t b = {0};
    for (size_t i = 0; i < l->n; i++)
        sb_put(r, &b, l->v[i].s.p, l->v[i].s.n);
    return v_sb(&b);
}

static val_t attr_path(render_t *r, const node_t *at, val_t v, val_t attr)
{
    if (attr.t == V_INT)
        return v_getitem(r, at, v, attr);
    val_t s = soft_str(r, attr);
    /* "a.b" walks nested attributes, as Jinja2's make_attrgetter does. */
    size_t st = 0;
    for (size_t i = 0; i <= s.s.n; i++)
        if (i == s.s.n || s.s.p[i] == '.') {
            v = v_getitem(r, at, v, v_str(s.s.p + st, i - st));
            st = i + 1;
        }
    return v;
}

static val_t f_map(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    vlist_t *src = v_iterate(r, at, self), *l = list_new(r, src->n);
    for (size_t i = 0; i < src->n; i++) {
        val_t v = src->v[i];
        if (GIVEN(a[1])) {
            v = attr_path(r, at, v, a[1]);
            if (v.t == V_UNDEF && GIVEN(a[2]))
                v = a[2];
        } else if (GIVEN(a[0]) && a[0].t == V_STR) {
            int id = filter_find(a[0].s.p, a[0].s.n);
            if (id < 0)
                render_fail(r, at, "map: no filter named '%.*s'", (int)a[0].s.n, a[0].s.p);
            v = builtin_call(r, f, at, B_FILTER, id, v, NULL, 0, NULL, NULL, NULL, 0);
        } else {
            render_fail(r, at, "map needs a filter name or attribute=");
        }
        list_push(r, l, v);
    }
    return list_val(l);
}

/* select/reject/selectattr/rejectattr: keep items whose (attribute's) test is (not) true. */
static val_t select_items(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a,
                          int by_attr, int keep)
{
    vlist_t *src = v_iterate(r, at, self), *l = list_new(r, src->n);
    val_t *test = &a[by_attr];
    int id = -1;
    if (GIVEN(*test)) {
        if (test->t != V_STR || (id = test_find(test->s.p, test->s.n)) < 0)
            render_fail(r, at, "no test named '%s'", test->t == V_STR ? test->s.p : "?");
    }
    for (size_t i = 0; i < src->n; i++) {
        val_t v = by_attr ? attr_path(r, at, src->v[i], a[0]) : src->v[i];
        int ok;
        if (id >= 0) {
            size_t nargs = GIVEN(test[1]) ? 1 : 0;
            ok = builtin_call(r, f, at, B_TEST, id, v, test + 1, nargs, NULL, NULL, NULL, 0).b;
        } else {
            ok = v_truthy(v);
        }
        if (ok == keep)
            list_push(r, l, src->v[i]);
    }
    return list_val(l);
}

static val_t f_select(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    return select_items(r, f, at, self, a, 0, 1);
}

static val_t f_reject(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    return select_items(r, f, at, self, a, 0, 0);
}

static val_t f_selectattr(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    return select_items(r, f, at, self, a, 1, 1);
}

static val_t f_rejectattr(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    return select_items(r, f, at, self, a, 1, 0);
}

static val_t f_float(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at;
    val_t dflt = GIVEN(a[0]) ? a[0] : (val_t){.t = V_FLOAT, .f = 0};
    if (self.t == V_FLOAT)
        return self;
    if (self.t == V_INT || self.t == V_BOOL)
        return (val_t){.t = V_FLOAT, .f = self.t == V_INT ? (double)self.i : self.b};
    if (self.t == V_STR) {
        char *buf = arena_strndup(&r->arena, self.s.p, self.s.n), *end;
        double d = strtod(buf, &end);
        while (*end == ' ' || *end == '\n' || *end == '\t')
            end++;
        if (end != buf && !*end)
            return (val_t){.t = V_FLOAT, .f = d};
    }
    return dflt;
}

typedef struct sort_ctx {
    render_t *r;
    const node_t *at;
    int case_sensitive;
} sort_ctx_t;

static int sort_cmp(sort_ctx_t *c, val_t x, val_t y)
{
    if (x.t == V_STR && y.t == V_STR) {
        if (!c->case_sensitive) {
            x = str_case(c->r, x, 'l');
            y = str_case(c->r, y, 'l');
        }
        size_t n = x.s.n < y.s.n ? x.s.n : y.s.n;
        int d = memcmp(x.s.p, y.s.p, n);
        return d ? d : (x.s.n > y.s.n) - (x.s.n < y.s.n);
    }
    int xn = x.t == V_INT || x.t == V_BOOL || x.t == V_FLOAT;
    int yn = y.t == V_INT || y.t == V_BOOL || y.t == V_FLOAT;
    if (!xn || !yn)
        render_fail(c->r, c->at, "sort: '<' not supported between instances of '%s' and '%s'",
                    v_type_name(x), v_type_name(y));
    double dx = x.t == V_FLOAT ? x.f : x.t == V_INT ? (double)x.i : x.b;
    double dy = y.t == V_FLOAT ? y.f : y.t == V_INT ? (double)y.i : y.b;
    return (dx > dy) - (dx < dy);
}

/* A stable merge sort of items by keys (Python's sort is stable too). */
static void merge_sort(sort_ctx_t *c, val_t *items, val_t *keys, val_t *ti, val_t *tk, size_t n,
                       int reverse)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    merge_sort(c, items, keys, ti, tk, h, reverse);
    merge_sort(c, items + h, keys + h, ti, tk, n - h, reverse);
    size_t i = 0, j = h, o = 0;
    while (i < h || j < n) {
        int take_right = i == h || (j < n && (reverse ? sort_cmp(c, keys[j], keys[i]) > 0
                                                      : sort_cmp(c, keys[j], keys[i]) < 0));
        size_t k = take_right ? j++ : i++;
        ti[o] = items[k], tk[o++] = keys[k];
    }
    memcpy(items, ti, n * sizeof(val_t));
    memcpy(keys, tk, n * sizeof(val_t));
}

static val_t f_sort(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f;
    vlist_t *src = v_iterate(r, at, self), *l = list_new(r, src->n);
    size_t n = src->n;
    val_t *keys = arena_alloc(&r->arena, (n + 1) * sizeof(val_t));
    val_t *ti = arena_alloc(&r->arena, (n + 1) * sizeof(val_t));
    val_t *tk = arena_alloc(&r->arena, (n + 1) * sizeof(val_t));
    for (size_t i = 0; i < n; i++) {
        list_push(r, l, src->v[i]);
        keys[i] = GIVEN(a[2]) && a[2].t != V_NONE ? attr_path(r, at, src->v[i], a[2]) : src->v[i];
    }
    sort_ctx_t c = {r, at, GIVEN(a[1]) && v_truthy(a[1])};
    merge_sort(&c, l->v, keys, ti, tk, n, GIVEN(a[0]) && v_truthy(a[0]));
    return list_val(l);
}

const builtin_t filter_table[] = {
    {"trim", "chars", f_trim, 0},
    {"length", "", f_length, 0},
    {"count", "", f_length, 0},
    {"tojson", "ensure_ascii indent separators sort_keys", f_tojson, 0},
    {"upper", "", f_upper, 0},
    {"lower", "", f_lower, 0},
    {"title", "", f_title, 0},
    {"capitalize", "", f_capitalize, 0},
    {"default", "default_value boolean", f_default, 0},
    {"d", "default_value boolean", f_default, 0},
    {"join", "d attribute", f_join, 0},
    {"replace", "old new count", f_replace, 0},
    {"first", "", f_first, 0},
    {"last", "", f_last, 0},
    {"items", "", f_items, 0},
    {"list", "", f_list, 0},
    {"string", "", f_string, 0},
    {"safe", "", f_safe, 0},
    {"int", "default base", f_int, 0},
    {"float", "default", f_float, 0},
    {"reverse", "", f_reverse, 0},
    {"map", "name attribute default", f_map, 0},
    {"select", "test arg", f_select, 0},
    {"reject", "test arg", f_reject, 0},
    {"selectattr", "attribute test arg", f_selectattr, 0},
    {"rejectattr", "attribute test arg", f_rejectattr, 0},
    {"sort", "reverse case_sensitive attribute", f_sort, 0},
    {NULL, NULL, NULL, 0},
};
