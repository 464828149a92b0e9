/* eval.c - evaluates the AST: expressions to values, statements to output. Semantics are
 * Jinja2's over Python's: truthiness, int/float arithmetic, comparisons, `in`, attribute and
 * item access (a missing one is undefined; any access on an undefined value is an error),
 * slices, and the scopes of a for loop body (fresh each iteration), a macro and the template.
 * Every render error long-jumps to tpl_render through render_fail. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "template/internal.h"

#define MAX_STEPS 50000000L
#define MAX_DEPTH 64

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static val_t lookup(render_t *r, frame_t *f, const char *name, size_t n)
{
    for (; f; f = f->parent) {
        val_t *v = dict_get(&f->vars, name, n);
        if (v)
            return *v;
    }
    int g = global_find(name, n);
    if (g >= 0)
        return (val_t){.t = V_FUNC, .fn = {.id = g}};
    (void)r;
    return (val_t){.t = V_UNDEF, .s = {name, n}};
}

static _Noreturn void undefined_fail(render_t *r, const node_t *at, val_t v)
{
    if (v.s.p)
        render_fail(r, at, "'%.*s' is undefined", (int)v.s.n, v.s.p);
    render_fail(r, at, "a value is undefined");
}

static long long as_int(val_t v)
{
    return v.t == V_BOOL ? v.b : v.i;
}

static double as_float(val_t v)
{
    return v.t == V_FLOAT ? v.f : (double)as_int(v);
}

static int is_num(val_t v)
{
    return v.t == V_INT || v.t == V_BOOL || v.t == V_FLOAT;
}

static int is_intlike(val_t v)
{
    return v.t == V_INT || v.t == V_BOOL;
}

static const char *op_name(int op)
{
    switch (op) {
    case OP_FLOORDIV:
        return "//";
    case OP_POW:
        return "**";
    default:
        return op == '+' ? "+" : op == '-' ? "-" : op == '*' ? "*" : op == '/' ? "/" : "%";
    }
}

static val_t repeat(render_t *r, const node_t *at, val_t seq, long long k)
{
    if (k < 0)
        k = 0;
    size_t unit = seq.t == V_STR ? seq.s.n : seq.l->n;
    if (unit && (unsigned long long)k > (64u << 20) / unit)
        render_fail(r, at, "repetition too large");
    if (seq.t == V_STR) {
        sbuf_t b = {0};
        for (long long i = 0; i < k; i++)
            sb_put(r, &b, seq.s.p, seq.s.n);
        return v_sb(&b);
    }
    vlist_t *l = list_new(r, unit * (size_t)k);
    for (long long i = 0; i < k; i++)
        for (size_t j = 0; j < unit; j++)
            list_push(r, l, seq.l->v[j]);
    return (val_t){.t = V_LIST, .l = l};
}

static val_t arith(render_t *r, const node_t *at, int op, val_t a, val_t b)
{
    if (a.t == V_UNDEF)
        undefined_fail(r, at, a);
    if (b.t == V_UNDEF)
        undefined_fail(r, at, b);
    if (op == '+' && a.t == V_STR && b.t == V_STR) {
        sbuf_t s = {0};
        sb_put(r, &s, a.s.p, a.s.n);
        sb_put(r, &s, b.s.p, b.s.n);
        return v_sb(&s);
    }
    if (op == '+' && a.t == V_LIST && b.t == V_LIST) {
        vlist_t *l = list_new(r, a.l->n + b.l->n);
        for (size_t i = 0; i < a.l->n; i++)
            list_push(r, l, a.l->v[i]);
        for (size_t i = 0; i < b.l->n; i++)
            list_push(r, l, b.l->v[i]);
        l->tuple = a.l->tuple && b.l->tuple;
        return (val_t){.t = V_LIST, .l = l};
    }
    if (op == '*' && (a.t == V_STR || a.t == V_LIST) && is_intlike(b))
        return repeat(r, at, a, as_int(b));
    if (op == '*' && (b.t == V_STR || b.t == V_LIST) && is_intlike(a))
        return repeat(r, at, b, as_int(a));
    if (!is_num(a) || !is_num(b))
        render_fail(r, at, "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op),
                    v_type_name(a), v_type_name(b));
    if (is_intlike(a) && is_intlike(b) && op != '/') {
        long long x = as_int(a), y = as_int(b), z = 0;
        int overflow = 0;
        switch (op) {
        case '+':
            overflow = __builtin_add_overflow(x, y, &z);
            break;
        case '-':
            overflow = __builtin_sub_overflow(x, y, &z);
            break;
        case '*':
            overflow = __builtin_mul_overflow(x, y, &z);
            break;
        case OP_FLOORDIV:
        case '%':
            if (y == 0)
                render_fail(r, at, "integer division or modulo by zero");
            if (x == LLONG_MIN && y == -1)
                render_fail(r, at, "integer overflow");
            z = op == '%' ? x % y : x / y;
            if (op == '%' && z != 0 && ((z < 0) != (y < 0)))
                z += y;
            if (op == OP_FLOORDIV && (x % y != 0) && ((x < 0) != (y < 0)))
                z--;
            break;
        case OP_POW:
            if (y < 0)
                return (val_t){.t = V_FLOAT, .f = pow((double)x, (double)y)};
            z = 1;
            for (long long i = 0; i < y && !overflow; i++)
                overflow = __builtin_mul_overflow(z, x, &z);
            break;
        }
        if (overflow)
            render_fail(r, at, "integer overflow");
        return v_int(z);
    }
    double x = as_float(a), y = as_float(b), z = 0;
    switch (op) {
    case '+':
        z = x + y;
        break;
    case '-':
        z = x - y;
        break;
    case '*':
        z = x * y;
        break;
    case '/':
    case OP_FLOORDIV:
    case '%':
        if (y == 0)
            render_fail(r, at, "division by zero");
        z = op == '/' ? x / y : op == '%' ? fmod(x, y) : floor(x / y);
        if (op == '%' && z != 0 && ((z < 0) != (y < 0)))
            z += y;
        break;
    case OP_POW:
        z = pow(x, y);
        break;
    }
    return (val_t){.t = V_FLOAT, .f = z};
}

static int str_cmp(val_t a, val_t b)
{
    size_t n = a.s.n < b.s.n ? a.s.n : b.s.n;
    int c = memcmp(a.s.p, b.s.p, n);
    return c ? c : (a.s.n > b.s.n) - (a.s.n < b.s.n);
}

static int contains(render_t *r, const node_t *at, val_t hay, val_t needle)
{
    switch (hay.t) {
    case V_STR:
        if (needle.t != V_STR)
            render_fail(r, at, "'in <string>' requires string as left operand, not %s",
                        v_type_name(needle));
        return needle.s.n == 0 || memmem(hay.s.p, hay.s.n, needle.s.p, needle.s.n) != NULL;
    case V_LIST:
        for (size_t i = 0; i < hay.l->n; i++)
            if (v_equal(hay.l->v[i], needle))
                return 1;
        return 0;
    case V_DICT:
        return needle.t == V_STR && dict_get(hay.d, needle.s.p, needle.s.n) != NULL;
    case V_UNDEF:
        return 0;
    default:
        render_fail(r, at, "argument of type '%s' is not iterable", v_type_name(hay));
    }
}

static int compare(render_t *r, const node_t *at, int op, val_t a, val_t b)
{
    if (op == OP_EQ)
        return v_equal(a, b);
    if (op == OP_NE)
        return !v_equal(a, b);
    if (op == 'i')
        return contains(r, at, b, a);
    if (op == 'n')
        return !contains(r, at, b, a);
    int c;
    if (is_num(a) && is_num(b))
        c = (as_float(a) > as_float(b)) - (as_float(a) < as_float(b));
    else if (a.t == V_STR && b.t == V_STR)
        c = str_cmp(a, b);
    else
        render_fail(r, at, "'%s' not supported between instances of '%s' and '%s'",
                    op == '<'     ? "<"
                    : op == '>'   ? ">"
                    : op == OP_LE ? "<="
                                  : ">=",
                    v_type_name(a), v_type_name(b));
    if (is_intlike(a) && is_intlike(b))
        c = (as_int(a) > as_int(b)) - (as_int(a) < as_int(b));
    return op == '<' ? c < 0 : op == '>' ? c > 0 : op == OP_LE ? c <= 0 : c >= 0;
}

vlist_t *v_iterate(render_t *r, const node_t *at, val_t v)
{
    switch (v.t) {
    case V_LIST:
        return v.l;
    case V_UNDEF:
        return list_new(r, 1);
    case V_DICT: {
        vlist_t *l = list_new(r, v.d->n);
        for (size_t i = 0; i < v.d->n; i++)
            list_push(r, l, v_str(v.d->k[i], v.d->kn[i]));
        return l;
    }
    case V_STR: {
        vlist_t *l = list_new(r, v.s.n);
        for (size_t i = 0; i < v.s.n;) {
            size_t j = i + 1;
            while (j < v.s.n && ((unsigned char)v.s.p[j] & 0xc0) == 0x80)
                j++;
            list_push(r, l, v_str(v.s.p + i, j - i));
            i = j;
        }
        return l;
    }
    default:
        render_fail(r, at, "'%s' object is not iterable", v_type_name(v));
    }
}

val_t v_getattr(render_t *r, const node_t *at, val_t obj, const char *name, size_t n)
{
    if (obj.t == V_UNDEF)
        undefined_fail(r, at, obj);
    if (obj.t == V_LOOP) {
        struct loop *L = obj.loop;
        size_t len = L->items->n, i = L->i;
        static const char *const attrs[] = {"index",  "index0",   "revindex", "revindex0",
                                            "first",  "last",     "length",   "depth",
                                            "depth0", "previtem", "nextitem"};
        for (int k = 0; k < 11; k++) {
            if (strlen(attrs[k]) != n || memcmp(attrs[k], name, n) != 0)
                continue;
            switch (k) {
            case 0:
                return v_int((long long)i + 1);
            case 1:
                return v_int((long long)i);
            case 2:
                return v_int((long long)(len - i));
            case 3:
                return v_int((long long)(len - i - 1));
            case 4:
                return v_bool(i == 0);
            case 5:
                return v_bool(i + 1 == len);
            case 6:
                return v_int((long long)len);
            case 7:
                return v_int(1);
            case 8:
                return v_int(0);
            case 9:
                return i ? L->items->v[i - 1] : v_undef("previtem");
            default:
                return i + 1 < len ? L->items->v[i + 1] : v_undef("nextitem");
            }
        }
        return v_undef(arena_strndup(&r->arena, name, n));
    }
    int found = 0;
    val_t m = method_bind(r, at, obj, name, n, &found);
    if (found)
        return m;
    if (obj.t == V_DICT || obj.t == V_NS) {
        val_t *v = dict_get(obj.d, name, n);
        if (v)
            return *v;
    }
    return v_undef(arena_strndup(&r->arena, name, n));
}

/* Python's index normalization: negative counts from the end; -1 when out of range. */
static long long py_index(long long i, size_t len)
{
    if (i < 0)
        i += (long long)len;
    return (i < 0 || i >= (long long)len) ? -1 : i;
}

val_t v_getitem(render_t *r, const node_t *at, val_t obj, val_t key)
{
    if (obj.t == V_UNDEF)
        undefined_fail(r, at, obj);
    if ((obj.t == V_LIST || obj.t == V_STR) && is_intlike(key)) {
        size_t len = obj.t == V_LIST ? obj.l->n : u8_len(obj.s.p, obj.s.n);
        long long i = py_index(as_int(key), len);
        if (i < 0)
            return v_undef(NULL);
        if (obj.t == V_LIST)
            return obj.l->v[i];
        size_t o = u8_offset(obj.s.p, obj.s.n, (size_t)i);
        size_t e = u8_offset(obj.s.p, obj.s.n, (size_t)i + 1);
        return v_str(obj.s.p + o, e - o);
    }
    if (obj.t == V_DICT && key.t == V_STR) {
        val_t *v = dict_get(obj.d, key.s.p, key.s.n);
        if (v)
            return *v;
        return v_undef(arena_strndup(&r->arena, key.s.p, key.s.n));
    }
    if (key.t == V_STR)
        return v_getattr(r, at, obj, key.s.p, key.s.n);
    return v_undef(NULL);
}

static long long slice_bound(render_t *r, const node_t *at, val_t v, long long dflt)
{
    if (v.t == V_UNDEF || v.t == V_NONE)
        return dflt;
    if (!is_intlike(v))
        render_fail(r, at, "slice indices must be integers or None");
    return as_int(v);
}

static val_t slice(render_t *r, const node_t *at, val_t obj, val_t *parts)
{
    if (obj.t == V_UNDEF)
        undefined_fail(r, at, obj);
    if (obj.t != V_LIST && obj.t != V_STR)
        render_fail(r, at, "'%s' object is not subscriptable", v_type_name(obj));
    long long len = (long long)(obj.t == V_LIST ? obj.l->n : u8_len(obj.s.p, obj.s.n));
    long long step = slice_bound(r, at, parts[2], 1);
    if (step == 0)
        render_fail(r, at, "slice step cannot be zero");
    long long lo = step > 0 ? 0 : -1, hi = step > 0 ? len : len - 1;
    long long start = slice_bound(r, at, parts[0], step > 0 ? 0 : len - 1);
    long long stop = slice_bound(r, at, parts[1], step > 0 ? len : -len - 1);
    if (start < 0)
        start += len;
    if (stop < 0)
        stop += len;
    start = start < lo ? lo : start > hi ? hi : start;
    stop = stop < lo ? lo : stop > hi ? hi : stop;
    vlist_t *chars = obj.t == V_STR ? v_iterate(r, at, obj) : obj.l;
    vlist_t *l = list_new(r, 0);
    for (long long i = start; step > 0 ? i < stop : i > stop; i += step)
        list_push(r, l, chars->v[i]);
    if (obj.t == V_LIST) {
        l->tuple = obj.l->tuple;
        return (val_t){.t = V_LIST, .l = l};
    }
    sbuf_t b = {0};
    for (size_t i = 0; i < l->n; i++)
        sb_put(r, &b, l->v[i].s.p, l->v[i].s.n);
    return v_sb(&b);
}

static size_t exec_body(render_t *r, frame_t *f, node_t **list, size_t n);

static val_t call_macro(render_t *r, const node_t *at, val_t fn, val_t *args, size_t nargs,
                        const char **kw, size_t *kwn, val_t *kwv, size_t nkw)
{
    const node_t *m = fn.fn.macro;
    if (nargs > m->nnames)
        render_fail(r, at, "macro '%s' takes not more than %zu argument(s)", m->s, m->nnames);
    if (++r->depth > MAX_DEPTH)
        render_fail(r, at, "macro calls nested too deep");
    frame_t *f = arena_alloc(&r->arena, sizeof(*f));
    f->parent = fn.fn.frame;
    for (size_t k = 0; k < nkw; k++) {
        size_t p = 0;
        while (p < m->nnames && (m->namelen[p] != kwn[k] || memcmp(m->names[p], kw[k], kwn[k])))
            p++;
        if (p == m->nnames || p < nargs)
            render_fail(r, at, "macro '%s' got an unexpected keyword argument '%s'", m->s, kw[k]);
        dict_set(r, &f->vars, m->names[p], m->namelen[p], kwv[k]);
    }
    for (size_t p = 0; p < m->nnames; p++) {
        if (p < nargs)
            dict_set(r, &f->vars, m->names[p], m->namelen[p], args[p]);
        else if (!dict_get(&f->vars, m->names[p], m->namelen[p]))
            dict_set(r, &f->vars, m->names[p], m->namelen[p],
                     m->list2[p] ? eval(r, f, m->list2[p]) : v_undef(m->names[p]));
    }
    sbuf_t out = {0}, *saved = r->out;
    r->out = &out;
    exec_body(r, f, m->list, m->n);
    r->out = saved;
    r->depth--;
    return v_sb(&out);
}

val_t call_value(render_t *r, frame_t *f, const node_t *at, val_t fn, val_t *args, size_t nargs,
                 const char **kw, size_t *kwn, val_t *kwv, size_t nkw)
{
    if (fn.t == V_FUNC && fn.fn.macro)
        return call_macro(r, at, fn, args, nargs, kw, kwn, kwv, nkw);
    if (fn.t == V_FUNC)
        return builtin_call(r, f, at, B_GLOBAL, fn.fn.id, v_none(), args, nargs, kw, kwn, kwv, nkw);
    if (fn.t == V_METHOD)
        return builtin_call(r, f, at, B_METHOD, fn.m.id, *fn.m.self, args, nargs, kw, kwn, kwv,
                            nkw);
    if (fn.t == V_UNDEF)
        undefined_fail(r, at, fn);
    render_fail(r, at, "'%s' object is not callable", v_type_name(fn));
}

/* Evaluates the arguments of a call, filter or test node and calls. */
static val_t apply(render_t *r, frame_t *f, const node_t *e, int kind, val_t self, val_t fn)
{
    val_t args[16], kwv[32];
    if (e->n > 16)
        render_fail(r, e, "too many arguments");
    for (size_t k = 0; k < e->n; k++)
        args[k] = eval(r, f, e->list[k]);
    for (size_t k = 0; k < e->n2; k++)
        kwv[k] = eval(r, f, e->list2[k]);
    if (kind < 0)
        return call_value(r, f, e, fn, args, e->n, e->names, e->namelen, kwv, e->n2);
    return builtin_call(r, f, e, kind, e->id, self, args, e->n, e->names, e->namelen, kwv, e->n2);
}

val_t eval(render_t *r, frame_t *f, const node_t *e)
{
    if (++r->steps > MAX_STEPS) {
        r->code = -ENOMEM;
        render_fail(r, e, "the render took more than %ld steps", MAX_STEPS);
    }
    switch (e->kind) {
    case N_LIT:
        return e->lit;
    case N_NAME:
        return lookup(r, f, e->s, e->slen);
    case N_ATTR:
        return v_getattr(r, e, eval(r, f, e->a), e->s, e->slen);
    case N_ITEM: {
        val_t obj = eval(r, f, e->a);
        return v_getitem(r, e, obj, eval(r, f, e->b));
    }
    case N_SLICE: {
        val_t obj = eval(r, f, e->a), parts[3];
        for (int k = 0; k < 3; k++)
            parts[k] = e->list[k] ? eval(r, f, e->list[k]) : v_none();
        return slice(r, e, obj, parts);
    }
    case N_CALL:
        return apply(r, f, e, -1, v_none(), eval(r, f, e->a));
    case N_FILTER:
        return apply(r, f, e, B_FILTER, eval(r, f, e->a), v_none());
    case N_TEST: {
        val_t v = apply(r, f, e, B_TEST, eval(r, f, e->a), v_none());
        return v_bool(e->op ? !v.b : v.b);
    }
    case N_BINOP: {
        val_t a = eval(r, f, e->a), b = eval(r, f, e->b);
        if (e->op != '~')
            return arith(r, e, e->op, a, b);
        sbuf_t s = {0};
        v_to_str(r, &s, a);
        v_to_str(r, &s, b);
        return v_sb(&s);
    }
    case N_CMP: {
        val_t a = eval(r, f, e->a);
        return v_bool(compare(r, e, e->op, a, eval(r, f, e->b)));
    }
    case N_AND: {
        val_t a = eval(r, f, e->a);
        return v_truthy(a) ? eval(r, f, e->b) : a;
    }
    case N_OR: {
        val_t a = eval(r, f, e->a);
        return v_truthy(a) ? a : eval(r, f, e->b);
    }
    case N_NOT:
        return v_bool(!v_truthy(eval(r, f, e->a)));
    case N_NEG:
    case N_POS: {
        val_t a = eval(r, f, e->a);
        if (a.t == V_UNDEF)
            undefined_fail(r, e, a);
        if (!is_num(a))
            render_fail(r, e, "bad operand type for unary %c: '%s'", e->kind == N_NEG ? '-' : '+',
                        v_type_name(a));
        if (e->kind == N_POS)
            return a.t == V_BOOL ? v_int(a.b) : a;
        if (a.t == V_FLOAT)
            return (val_t){.t = V_FLOAT, .f = -a.f};
        if (as_int(a) == LLONG_MIN)
            render_fail(r, e, "integer overflow");
        return v_int(-as_int(a));
    }
    case N_COND:
        if (v_truthy(eval(r, f, e->b)))
            return eval(r, f, e->a);
        return e->c ? eval(r, f, e->c) : v_undef(NULL);
    case N_LIST:
    case N_TUPLE: {
        vlist_t *l = list_new(r, e->n);
        for (size_t k = 0; k < e->n; k++)
            list_push(r, l, eval(r, f, e->list[k]));
        l->tuple = e->kind == N_TUPLE;
        return (val_t){.t = V_LIST, .l = l};
    }
    case N_DICT: {
        vdict_t *d = dict_new(r);
        for (size_t k = 0; k < e->n; k++) {
            val_t key = eval(r, f, e->list[k]);
            if (key.t != V_STR)
                render_fail(r, e, "dict keys other than strings are not supported");
            dict_set(r, d, key.s.p, key.s.n, eval(r, f, e->list2[k]));
        }
        return (val_t){.t = V_DICT, .d = d};
    }
    default:
        render_fail(r, e, "internal error: node %d is not an expression", e->kind);
    }
}

/* Binds for-loop or set targets: one name takes v, several unpack it. */
static void bind(render_t *r, const node_t *at, frame_t *f, val_t v)
{
    if (at->nnames == 1) {
        dict_set(r, &f->vars, at->names[0], at->namelen[0], v);
        return;
    }
    vlist_t *l = v_iterate(r, at, v);
    if (l->n != at->nnames)
        render_fail(r, at, "cannot unpack %zu values into %zu names", l->n, at->nnames);
    for (size_t k = 0; k < l->n; k++)
        dict_set(r, &f->vars, at->names[k], at->namelen[k], l->v[k]);
}

static void exec_for(render_t *r, frame_t *f, const node_t *s)
{
    vlist_t *items = v_iterate(r, s, eval(r, f, s->a));
    if (s->b) { /* {% for x in xs if cond %}: the loop sees only the items that pass */
        vlist_t *kept = list_new(r, items->n);
        for (size_t i = 0; i < items->n; i++) {
            frame_t *g = arena_alloc(&r->arena, sizeof(*g));
            g->parent = f;
            bind(r, s, g, items->v[i]);
            if (v_truthy(eval(r, g, s->b)))
                list_push(r, kept, items->v[i]);
        }
        items = kept;
    }
    struct loop *L = arena_alloc(&r->arena, sizeof(*L));
    L->items = items;
    for (size_t i = 0; i < items->n; i++) {
        frame_t *g = arena_alloc(&r->arena, sizeof(*g));
        g->parent = f;
        L->i = i;
        dict_set(r, &g->vars, "loop", 4, (val_t){.t = V_LOOP, .loop = L});
        bind(r, s, g, items->v[i]);
        if (exec_body(r, g, s->list, s->n) == FLOW_BREAK)
            break;
    }
    if (!items->n && s->n2) {
        frame_t *g = arena_alloc(&r->arena, sizeof(*g));
        g->parent = f;
        exec_body(r, g, s->list2, s->n2);
    }
}

static void exec_set(render_t *r, frame_t *f, const node_t *s)
{
    val_t v;
    if (s->a) {
        v = eval(r, f, s->a);
    } else {
        sbuf_t out = {0}, *saved = r->out;
        r->out = &out;
        exec_body(r, f, s->list, s->n);
        r->out = saved;
        v = v_sb(&out);
    }
    if (!s->s) {
        bind(r, s, f, v);
        return;
    }
    val_t ns = lookup(r, f, s->names[0], s->namelen[0]);
    if (ns.t != V_NS)
        render_fail(r, s, "cannot assign attribute on non-namespace object '%s'", s->names[0]);
    dict_set(r, ns.d, s->s, s->slen, v);
}

static size_t exec_body(render_t *r, frame_t *f, node_t **list, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const node_t *s = list[k];
        if (++r->steps > MAX_STEPS) {
            r->code = -ENOMEM;
            render_fail(r, s, "the render took more than %ld steps", MAX_STEPS);
        }
        size_t flow = FLOW_NEXT;
        switch (s->kind) {
        case N_DATA:
            sb_put(r, r->out, s->s, s->slen);
            break;
        case N_OUTPUT:
            v_to_str(r, r->out, eval(r, f, s->a));
            break;
        case N_IF:
            if (v_truthy(eval(r, f, s->a)))
                flow = exec_body(r, f, s->list, s->n);
            else
                flow = exec_body(r, f, s->list2, s->n2);
            break;
        case N_FOR:
            exec_for(r, f, s);
            break;
        case N_SET:
            exec_set(r, f, s);
            break;
        case N_MACRO:
            dict_set(r, &f->vars, s->s, s->slen,
                     (val_t){.t = V_FUNC, .fn = {.macro = s, .frame = f}});
            break;
        case N_BREAK:
            return FLOW_BREAK;
        case N_CONTINUE:
            return FLOW_CONTINUE;
        case N_BODY:
            flow = exec_body(r, f, s->list, s->n);
            break;
        default:
            render_fail(r, s, "internal error: node %d is not a statement", s->kind);
        }
        if (flow != FLOW_NEXT)
            return flow;
    }
    return FLOW_NEXT;
}

void render_body(render_t *r, frame_t *f, const node_t *root)
{
    exec_body(r, f, root->list, root->n);
}
