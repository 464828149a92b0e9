/* builtins.c - tests ("is defined"), methods of strings and dicts, the global functions
 * (raise_exception, strftime_now, namespace, range, dict), and the binding of call arguments
 * to a builtin's parameters by position and keyword, as Python binds them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "template/builtins.h"
#include "template/strings.h"

const char builtin_missing[] = "";

val_t need_str(render_t *r, const node_t *at, val_t v, const char *what)
{
    if (v.t != V_STR)
        render_fail(r, at, "%s expects a string, got '%s'", what, v_type_name(v));
    return v;
}

long long need_int(render_t *r, const node_t *at, val_t v, long long dflt, const char *what)
{
    if (!GIVEN(v) || v.t == V_NONE)
        return dflt;
    if (v.t == V_INT)
        return v.i;
    if (v.t == V_BOOL)
        return v.b;
    render_fail(r, at, "%s expects an integer, got '%s'", what, v_type_name(v));
}

/* ---- tests: each returns a V_BOOL ---- */

static int is_number(val_t v)
{
    return v.t == V_INT || v.t == V_FLOAT || v.t == V_BOOL;
}

#define TEST(name, expr)                                                                           \
    static val_t name(render_t *r, frame_t *f, const node_t *at, val_t v, val_t *a)                \
    {                                                                                              \
        (void)r, (void)f, (void)at, (void)a;                                                       \
        return v_bool(expr);                                                                       \
    }

TEST(t_defined, v.t != V_UNDEF)
TEST(t_undefined, v.t == V_UNDEF)
TEST(t_none, v.t == V_NONE)
TEST(t_string, v.t == V_STR)
TEST(t_mapping, v.t == V_DICT)
TEST(t_iterable, v.t == V_STR || v.t == V_LIST || v.t == V_DICT || v.t == V_UNDEF)
TEST(t_sequence, v.t == V_STR || v.t == V_LIST || v.t == V_DICT)
TEST(t_number, is_number(v))
TEST(t_integer, v.t == V_INT)
TEST(t_float, v.t == V_FLOAT)
TEST(t_boolean, v.t == V_BOOL)
TEST(t_true, v.t == V_BOOL && v.b)
TEST(t_false, v.t == V_BOOL && !v.b)
TEST(t_callable, v.t == V_FUNC || v.t == V_METHOD)
TEST(t_eq, v_equal(v, a[0]))
TEST(t_ne, !v_equal(v, a[0]))

static val_t t_odd_even(render_t *r, const node_t *at, val_t v, int odd)
{
    if (v.t != V_INT && v.t != V_BOOL)
        render_fail(r, at, "odd/even expects an integer, got '%s'", v_type_name(v));
    long long i = v.t == V_INT ? v.i : v.b;
    return v_bool((i % 2 != 0) == odd);
}

static val_t t_odd(render_t *r, frame_t *f, const node_t *at, val_t v, val_t *a)
{
    (void)f, (void)a;
    return t_odd_even(r, at, v, 1);
}

static val_t t_even(render_t *r, frame_t *f, const node_t *at, val_t v, val_t *a)
{
    (void)f, (void)a;
    return t_odd_even(r, at, v, 0);
}

static val_t t_divisibleby(render_t *r, frame_t *f, const node_t *at, val_t v, val_t *a)
{
    (void)f;
    long long d = need_int(r, at, a[0], 0, "divisibleby"), i = need_int(r, at, v, 0, "divisibleby");
    if (d == 0)
        render_fail(r, at, "integer division or modulo by zero");
    return v_bool(d == -1 || i % d == 0);
}

/* The comparison tests (lt, le, gt, ge, in) reuse the expression evaluator's operators. */
static val_t compare_test(render_t *r, const node_t *at, val_t v, val_t arg, int op)
{
    node_t cmp = {.kind = N_CMP, .line = at ? at->line : 0, .op = op};
    node_t lhs = {.kind = N_LIT, .lit = v}, rhs = {.kind = N_LIT, .lit = arg};
    cmp.a = &lhs, cmp.b = &rhs;
    return eval(r, NULL, &cmp);
}

#define CMP_TEST(name, op)                                                                         \
    static val_t name(render_t *r, frame_t *f, const node_t *at, val_t v, val_t *a)                \
    {                                                                                              \
        (void)f;                                                                                   \
        return compare_test(r, at, v, a[0], op);                                                   \
    }
CMP_TEST(t_lt, '<')
CMP_TEST(t_le, OP_LE)
CMP_TEST(t_gt, '>')
CMP_TEST(t_ge, OP_GE)
CMP_TEST(t_in, 'i')

static val_t t_lower_upper(render_t *r, val_t v, int upper)
{
    if (v.t != V_STR)
        return v_bool(0);
    val_t m = str_case(r, v, upper ? 'u' : 'l'), other = str_case(r, v, upper ? 'l' : 'u');
    return v_bool(v_equal(m, v) && !v_equal(other, v));
}

static val_t t_lower(render_t *r, frame_t *f, const node_t *at, val_t v, val_t *a)
{
    (void)f, (void)at, (void)a;
    return t_lower_upper(r, v, 0);
}

static val_t t_upper(render_t *r, frame_t *f, const node_t *at, val_t v, val_t *a)
{
    (void)f, (void)at, (void)a;
    return t_lower_upper(r, v, 1);
}

static const builtin_t test_table[] = {
    {"defined", "", t_defined, 0},
    {"undefined", "", t_undefined, 0},
    {"none", "", t_none, 0},
    {"string", "", t_string, 0},
    {"mapping", "", t_mapping, 0},
    {"iterable", "", t_iterable, 0},
    {"sequence", "", t_sequence, 0},
    {"number", "", t_number, 0},
    {"integer", "", t_integer, 0},
    {"float", "", t_float, 0},
    {"boolean", "", t_boolean, 0},
    {"true", "", t_true, 0},
    {"false", "", t_false, 0},
    {"callable", "", t_callable, 0},
    {"odd", "", t_odd, 0},
    {"even", "", t_even, 0},
    {"divisibleby", "num", t_divisibleby, 0},
    {"eq", "other", t_eq, 0},
    {"equalto", "other", t_eq, 0},
    {"==", "other", t_eq, 0},
    {"ne", "other", t_ne, 0},
    {"!=", "other", t_ne, 0},
    {"lt", "other", t_lt, 0},
    {"lessthan", "other", t_lt, 0},
    {"le", "other", t_le, 0},
    {"gt", "other", t_gt, 0},
    {"greaterthan", "other", t_gt, 0},
    {"ge", "other", t_ge, 0},
    {"in", "seq", t_in, 0},
    {"lower", "", t_lower, 0},
    {"upper", "", t_upper, 0},
    {"sameas", "other", t_eq, 0},
    {NULL, NULL, NULL, 0},
};

/* ---- methods of str and dict ---- */

#define STR_METHOD(name, body)                                                                     \
    static val_t name(render_t *r, frame_t *f, const node_t *at, val_t s, val_t *a)                \
    {                                                                                              \
        (void)r, (void)f, (void)at, (void)a;                                                       \
        body                                                                                       \
    }

static val_t chars_arg(val_t v)
{
    return GIVEN(v) ? v : v_none();
}

STR_METHOD(m_strip, return str_strip(r, s, chars_arg(a[0]), 1, 1);)
STR_METHOD(m_lstrip, return str_strip(r, s, chars_arg(a[0]), 1, 0);)
STR_METHOD(m_rstrip, return str_strip(r, s, chars_arg(a[0]), 0, 1);)
STR_METHOD(m_upper, return str_case(r, s, 'u');)
STR_METHOD(m_lower, return str_case(r, s, 'l');)
STR_METHOD(m_title, return str_case(r, s, 't');)
STR_METHOD(m_capitalize, return str_case(r, s, 'c');)

static int affix(val_t s, val_t x, int end)
{
    return x.s.n <= s.s.n && memcmp(s.s.p + (end ? s.s.n - x.s.n : 0), x.s.p, x.s.n) == 0;
}

static val_t starts_ends(render_t *r, const node_t *at, val_t s, val_t x, int end)
{
    if (x.t == V_LIST && x.l->tuple) {
        for (size_t i = 0; i < x.l->n; i++)
            if (affix(s, need_str(r, at, x.l->v[i], "startswith/endswith"), end))
                return v_bool(1);
        return v_bool(0);
    }
    return v_bool(affix(s, need_str(r, at, x, end ? "endswith" : "startswith"), end));
}

STR_METHOD(m_startswith, return starts_ends(r, at, s, a[0], 0);)
STR_METHOD(m_endswith, return starts_ends(r, at, s, a[0], 1);)
STR_METHOD(m_split, {
    val_t sep = GIVEN(a[0]) && a[0].t != V_NONE ? need_str(r, at, a[0], "split") : v_none();
    if (sep.t == V_STR && sep.s.n == 0)
        render_fail(r, at, "empty separator");
    return str_split(r, s, sep, need_int(r, at, a[1], -1, "split maxsplit"));
})
STR_METHOD(m_replace, return str_replace(r, s, need_str(r, at, a[0], "replace"),
                                         need_str(r, at, a[1], "replace"),
                                         need_int(r, at, a[2], -1, "replace count"));)
STR_METHOD(m_find, return v_int(str_find(s, need_str(r, at, a[0], "find")));)
STR_METHOD(m_join, {
    vlist_t *l = v_iterate(r, at, a[0]);
    sbuf_t b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i)
            sb_put(r, &b, s.s.p, s.s.n);
        val_t x = need_str(r, at, l->v[i], "join");
        sb_put(r, &b, x.s.p, x.s.n);
    }
    return v_sb(&b);
})

static val_t m_items(render_t *r, frame_t *f, const node_t *at, val_t d, val_t *a)
{
    (void)f, (void)a;
    return items_of(r, at, d);
}

static val_t keys_or_values(render_t *r, val_t d, int values)
{
    vlist_t *l = list_new(r, d.d->n);
    for (size_t i = 0; i < d.d->n; i++)
        list_push(r, l, values ? d.d->v[i] : v_str(d.d->k[i], d.d->kn[i]));
    return (val_t){.t = V_LIST, .l = l};
}

static val_t m_keys(render_t *r, frame_t *f, const node_t *at, val_t d, val_t *a)
{
    (void)f, (void)at, (void)a;
    return keys_or_values(r, d, 0);
}

static val_t m_values(render_t *r, frame_t *f, const node_t *at, val_t d, val_t *a)
{
    (void)f, (void)at, (void)a;
    return keys_or_values(r, d, 1);
}

static val_t m_get(render_t *r, frame_t *f, const node_t *at, val_t d, val_t *a)
{
    (void)r, (void)f;
    if (!GIVEN(a[0]))
        render_fail(r, at, "get expected at least 1 argument");
    val_t *v = a[0].t == V_STR ? dict_get(d.d, a[0].s.p, a[0].s.n) : NULL;
    return v ? *v : GIVEN(a[1]) ? a[1] : v_none();
}

static const builtin_t method_table[] = {
    {"strip", "chars", m_strip, V_STR},
    {"lstrip", "chars", m_lstrip, V_STR},
    {"rstrip", "chars", m_rstrip, V_STR},
    {"upper", "", m_upper, V_STR},
    {"lower", "", m_lower, V_STR},
    {"title", "", m_title, V_STR},
    {"capitalize", "", m_capitalize, V_STR},
    {"startswith", "prefix", m_startswith, V_STR},
    {"endswith", "suffix", m_endswith, V_STR},
    {"split", "sep maxsplit", m_split, V_STR},
    {"replace", "old new count", m_replace, V_STR},
    {"find", "sub", m_find, V_STR},
    {"join", "iterable", m_join, V_STR},
    {"items", "", m_items, V_DICT},
    {"keys", "", m_keys, V_DICT},
    {"values", "", m_values, V_DICT},
    {"get", "key default", m_get, V_DICT},
    {NULL, NULL, NULL, 0},
};

/* ---- globals ---- */

static val_t g_raise_exception(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)at, (void)self;
    val_t msg = v_as_str(r, GIVEN(a[0]) ? a[0] : v_none());
    r->code = -EINVAL;
    r->raised = 1;
    render_fail(r, NULL, "%.*s", (int)msg.s.n, msg.s.p);
}

static val_t g_strftime_now(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)self;
    val_t fmt = need_str(r, at, GIVEN(a[0]) ? a[0] : v_none(), "strftime_now");
    struct tm tm;
    if (!localtime_r(&r->now, &tm))
        render_fail(r, at, "strftime_now: the time is out of range");
    char *cfmt = arena_strndup(&r->arena, fmt.s.p, fmt.s.n);
    char *buf = arena_alloc(&r->arena, 4 * fmt.s.n + 256);
    size_t n = strftime(buf, 4 * fmt.s.n + 256, cfmt, &tm);
    return v_str(buf, n);
}

static val_t g_range(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a)
{
    (void)f, (void)self;
    long long start = 0, stop, step = need_int(r, at, a[2], 1, "range");
    if (GIVEN(a[1]))
        start = need_int(r, at, a[0], 0, "range"), stop = need_int(r, at, a[1], 0, "range");
    else
        stop = need_int(r, at, a[0], 0, "range");
    if (!GIVEN(a[0]))
        render_fail(r, at, "range expected at least 1 argument");
    if (step == 0)
        render_fail(r, at, "range() arg 3 must not be zero");
    vlist_t *l = list_new(r, 4);
    for (long long i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (l->n >= 100000) /* Jinja2's sandbox limit (MAX_RANGE) */
            render_fail(r, at, "range too big, maximum size for range is 100000");
        list_push(r, l, v_int(i));
    }
    return (val_t){.t = V_LIST, .l = l};
}

static const builtin_t global_table[] = {
    {"raise_exception", "message", g_raise_exception, 0},
    {"strftime_now", "format", g_strftime_now, 0},
    {"range", "start stop step", g_range, 0},
    {"namespace", "", NULL, V_NS}, /* keyword arguments become the members */
    {"dict", "", NULL, V_DICT},
    {NULL, NULL, NULL, 0},
};

/* ---- lookup and binding ---- */

static int find(const builtin_t *table, const char *name, size_t n)
{
    for (int i = 0; table[i].name; i++)
        if (strlen(table[i].name) == n && memcmp(table[i].name, name, n) == 0)
            return i;
    return -1;
}

int filter_find(const char *name, size_t n)
{
    return find(filter_table, name, n);
}

int test_find(const char *name, size_t n)
{
    return find(test_table, name, n);
}

int method_find(const char *name, size_t n)
{
    return find(method_table, name, n);
}

int global_find(const char *name, size_t n)
{
    return find(global_table, name, n);
}

val_t method_bind(render_t *r, const node_t *at, val_t self, const char *name, size_t n, int *found)
{
    (void)at;
    *found = 0;
    for (int i = 0; method_table[i].name; i++) {
        if (method_table[i].self_type != (int)self.t || strlen(method_table[i].name) != n ||
            memcmp(method_table[i].name, name, n) != 0)
            continue;
        *found = 1;
        val_t *boxed = arena_alloc(&r->arena, sizeof(*boxed));
        *boxed = self;
        return (val_t){.t = V_METHOD, .m = {boxed, i}};
    }
    return v_none();
}

/* namespace(a=1) / namespace({"a": 1}) and dict(a=1): a fresh mapping. */
static val_t make_mapping(render_t *r, const node_t *at, int type, val_t *args, size_t nargs,
                          const char **kw, size_t *kwn, val_t *kwv, size_t nkw)
{
    vdict_t *d = dict_new(r);
    if (nargs > 1)
        render_fail(r, at, "expected at most 1 positional argument, got %zu", nargs);
    if (nargs == 1) {
        if (args[0].t != V_DICT)
            render_fail(r, at, "expected a mapping, got '%s'", v_type_name(args[0]));
        for (size_t i = 0; i < args[0].d->n; i++)
            dict_set(r, d, args[0].d->k[i], args[0].d->kn[i], args[0].d->v[i]);
    }
    for (size_t k = 0; k < nkw; k++)
        dict_set(r, d, kw[k], kwn[k], kwv[k]);
    return (val_t){.t = (vtype_t)type, .d = d};
}

val_t builtin_call(render_t *r, frame_t *f, const node_t *at, int kind, int idx, val_t self,
                   val_t *args, size_t nargs, const char **kw, size_t *kwn, val_t *kwv, size_t nkw)
{
    const builtin_t *table = kind == B_FILTER   ? filter_table
                             : kind == B_TEST   ? test_table
                             : kind == B_METHOD ? method_table
                                                : global_table;
    const builtin_t *b = &table[idx];
    if (!b->fn)
        return make_mapping(r, at, b->self_type, args, nargs, kw, kwn, kwv, nkw);
    /* Split the parameter names and bind positional, then keyword arguments. */
    const char *pname[MAXP];
    size_t plen[MAXP], np = 0;
    for (const char *p = b->params; *p && np < MAXP;) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        pname[np] = p, plen[np++] = len;
        p += len + (e ? 1 : 0);
    }
    val_t a[MAXP];
    for (size_t i = 0; i < MAXP; i++)
        a[i] = (val_t){.t = V_UNDEF, .s = {builtin_missing, 0}};
    if (nargs > np)
        render_fail(r, at, "%s() takes at most %zu argument(s) (%zu given)", b->name, np, nargs);
    for (size_t i = 0; i < nargs; i++)
        a[i] = args[i];
    for (size_t k = 0; k < nkw; k++) {
        size_t p = 0;
        while (p < np && (plen[p] != kwn[k] || memcmp(pname[p], kw[k], kwn[k]) != 0))
            p++;
        if (p == np)
            render_fail(r, at, "%s() got an unexpected keyword argument '%s'", b->name, kw[k]);
        if (p < nargs)
            render_fail(r, at, "%s() got multiple values for argument '%s'", b->name, kw[k]);
        a[p] = kwv[k];
    }
    return b->fn(r, f, at, self, a);
}
