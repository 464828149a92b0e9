/* parse.c - tokens to an AST with Jinja2's grammar and operator precedence (lowest first:
 * "x if c else y", or, and, not, comparisons and in, + -, ~, * / // %, **, unary - +, then
 * filters, tests and calls after attribute access and subscripts). Everything the engine
 * cannot evaluate is refused here, with the template line: unknown tags, filters, tests,
 * methods and functions, loop controls outside a loop, recursive loops. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "template/internal.h"

typedef struct parser {
    compiler_t *c;
    token_t *t;
    size_t i, n;
    int loops;           /* enclosing for loops, for break/continue */
    const char **macros; /* names defined by {% macro %} */
    size_t nmacros;
    node_t **calls; /* calls of a plain name, checked at the end */
    size_t ncalls;
} parser_t;

typedef struct vec {
    node_t **v;
    size_t n, cap;
} vec_t;

static void vec_push(parser_t *P, vec_t *v, node_t *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 4;
        node_t **nv = arena_alloc(P->c->arena, cap * sizeof(*nv));
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof(*nv));
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static token_t *cur(parser_t *P)
{
    return &P->t[P->i];
}

static int is_op(parser_t *P, int op)
{
    return cur(P)->type == T_OP && cur(P)->op == op;
}

static int is_name(parser_t *P, const char *name)
{
    return cur(P)->type == T_NAME && strcmp(cur(P)->s, name) == 0;
}

static const char *describe(token_t *t)
{
    static const char *names[] = {
        "end of template", "text",     "'{{'",     "'}}'",     "'{%'",       "'%}'",
        "a name",          "a number", "a number", "a string", "an operator"};
    return t->type == T_NAME ? t->s : names[t->type];
}

static void expect_op(parser_t *P, int op)
{
    if (!is_op(P, op))
        compile_fail(P->c, cur(P)->line, "expected '%c', got %s", op, describe(cur(P)));
    P->i++;
}

static const char *expect_name(parser_t *P)
{
    if (cur(P)->type != T_NAME)
        compile_fail(P->c, cur(P)->line, "expected a name, got %s", describe(cur(P)));
    return P->t[P->i++].s;
}

static void expect_end(parser_t *P, int type)
{
    if (cur(P)->type != type)
        compile_fail(P->c, cur(P)->line, "expected %s, got %s",
                     type == T_BLOCK_END ? "'%}'" : "'}}'", describe(cur(P)));
    P->i++;
}

static node_t *mk(parser_t *P, int kind, int line)
{
    node_t *x = arena_alloc(P->c->arena, sizeof(*x));
    x->kind = kind;
    x->line = line;
    return x;
}

static node_t *mk2(parser_t *P, int kind, int line, int op, node_t *a, node_t *b)
{
    node_t *x = mk(P, kind, line);
    x->op = op;
    x->a = a;
    x->b = b;
    return x;
}

static node_t *expr(parser_t *P);
static node_t *unary(parser_t *P, int with_filter);

/* Arguments of a call, filter or test: positional ones into list, key=value into names and
 * list2. */
static void call_args(parser_t *P, node_t *x)
{
    vec_t pos = {0}, kwv = {0};
    const char *kwn[32];
    size_t nkw = 0;
    expect_op(P, '(');
    while (!is_op(P, ')')) {
        if (pos.n + nkw)
            expect_op(P, ',');
        if (is_op(P, ')'))
            break;
        if (is_op(P, '*') || is_op(P, OP_POW))
            compile_fail(P->c, cur(P)->line, "unsupported *args or **kwargs in a call");
        if (cur(P)->type == T_NAME && P->t[P->i + 1].type == T_OP && P->t[P->i + 1].op == '=') {
            if (nkw == 32)
                compile_fail(P->c, cur(P)->line, "too many keyword arguments");
            kwn[nkw++] = P->t[P->i].s;
            P->i += 2;
            vec_push(P, &kwv, expr(P));
        } else {
            if (nkw)
                compile_fail(P->c, cur(P)->line, "positional argument after keyword argument");
            vec_push(P, &pos, expr(P));
        }
    }
    P->i++;
    x->list = pos.v, x->n = pos.n;
    x->list2 = kwv.v, x->n2 = kwv.n;
    x->names = arena_alloc(P->c->arena, (nkw + 1) * sizeof(char *));
    x->namelen = arena_alloc(P->c->arena, (nkw + 1) * sizeof(size_t));
    for (size_t k = 0; k < nkw; k++)
        x->names[k] = kwn[k], x->namelen[k] = strlen(kwn[k]);
    x->nnames = nkw;
}

/* "(a)", "(a, b)", "()" */
static node_t *paren(parser_t *P)
{
    int line = cur(P)->line;
    P->i++;
    vec_t items = {0};
    int comma = 0;
    while (!is_op(P, ')')) {
        if (items.n) {
            expect_op(P, ',');
            comma = 1;
            if (is_op(P, ')'))
                break;
        }
        vec_push(P, &items, expr(P));
    }
    P->i++;
    if (items.n == 1 && !comma)
        return items.v[0];
    node_t *x = mk(P, N_TUPLE, line);
    x->list = items.v, x->n = items.n;
    return x;
}

static node_t *primary(parser_t *P)
{
    token_t *t = cur(P);
    node_t *x = mk(P, N_LIT, t->line);
    if (t->type == T_NAME) {
        P->i++;
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True"))
            x->lit = v_bool(1);
        else if (!strcmp(t->s, "false") || !strcmp(t->s, "False"))
            x->lit = v_bool(0);
        else if (!strcmp(t->s, "none") || !strcmp(t->s, "None"))
            x->lit = v_none();
        else
            x->kind = N_NAME, x->s = t->s, x->slen = t->n;
        return x;
    }
    if (t->type == T_STR) {
        /* Adjacent string literals are one string, as in Python. */
        size_t n = 0, j = P->i;
        for (; P->t[j].type == T_STR; j++)
            n += P->t[j].n;
        char *s = arena_alloc(P->c->arena, n + 1);
        n = 0;
        for (; P->t[P->i].type == T_STR; P->i++) {
            memcpy(s + n, P->t[P->i].s, P->t[P->i].n);
            n += P->t[P->i].n;
        }
        x->lit = v_str(s, n);
        return x;
    }
    if (t->type == T_INT || t->type == T_FLOAT) {
        P->i++;
        x->lit = t->type == T_INT ? v_int(t->i) : (val_t){.t = V_FLOAT, .f = t->f};
        return x;
    }
    if (is_op(P, '('))
        return paren(P);
    if (is_op(P, '[') || is_op(P, '{')) {
        int dict = is_op(P, '{');
        vec_t keys = {0}, vals = {0};
        P->i++;
        while (!is_op(P, dict ? '}' : ']')) {
            if (keys.n)
                expect_op(P, ',');
            if (is_op(P, dict ? '}' : ']'))
                break;
            vec_push(P, &keys, expr(P));
            if (dict) {
                expect_op(P, ':');
                vec_push(P, &vals, expr(P));
            }
        }
        P->i++;
        x->kind = dict ? N_DICT : N_LIST;
        x->list = keys.v, x->n = keys.n;
        x->list2 = vals.v, x->n2 = vals.n;
        return x;
    }
    compile_fail(P->c, t->line, "unexpected %s in an expression", describe(t));
}

static node_t *subscript(parser_t *P, node_t *obj)
{
    int line = cur(P)->line;
    if (is_op(P, '.')) {
        P->i++;
        node_t *x = mk2(P, N_ATTR, line, 0, obj, NULL);
        if (cur(P)->type == T_INT) { /* x.0 is x[0] */
            x->kind = N_ITEM;
            x->b = mk(P, N_LIT, line);
            x->b->lit = v_int(P->t[P->i++].i);
            return x;
        }
        x->s = expect_name(P);
        x->slen = strlen(x->s);
        return x;
    }
    P->i++; /* [ */
    node_t *parts[3] = {NULL, NULL, NULL};
    int colons = 0;
    while (!is_op(P, ']')) {
        if (is_op(P, ':')) {
            if (++colons > 2)
                compile_fail(P->c, line, "bad slice");
            P->i++;
            continue;
        }
        if (parts[colons])
            compile_fail(P->c, line, "expected ']'");
        parts[colons] = expr(P);
    }
    P->i++;
    if (!colons) {
        if (!parts[0])
            compile_fail(P->c, line, "empty subscript");
        return mk2(P, N_ITEM, line, 0, obj, parts[0]);
    }
    node_t *x = mk2(P, N_SLICE, line, 0, obj, NULL);
    x->list = arena_alloc(P->c->arena, 3 * sizeof(node_t *));
    memcpy(x->list, parts, sizeof(parts));
    x->n = 3;
    return x;
}

static node_t *call(parser_t *P, node_t *callee)
{
    node_t *x = mk2(P, N_CALL, cur(P)->line, 0, callee, NULL);
    call_args(P, x);
    if (callee->kind == N_ATTR) {
        x->id = method_find(callee->s, callee->slen);
        if (x->id < 0)
            compile_fail(P->c, x->line, "unsupported method '%s'", callee->s);
    } else if (callee->kind == N_NAME) {
        if (P->ncalls % 16 == 0) {
            node_t **nc = arena_alloc(P->c->arena, (P->ncalls + 16) * sizeof(*nc));
            if (P->ncalls)
                memcpy(nc, P->calls, P->ncalls * sizeof(*nc));
            P->calls = nc;
        }
        P->calls[P->ncalls++] = x;
    }
    return x;
}

static node_t *postfix(parser_t *P, node_t *x)
{
    for (;;) {
        if (is_op(P, '.') || is_op(P, '['))
            x = subscript(P, x);
        else if (is_op(P, '('))
            x = call(P, x);
        else
            return x;
    }
}

/* "name" or "name.name" after | or is */
static const char *dotted_name(parser_t *P)
{
    const char *name = expect_name(P);
    if (is_op(P, '.'))
        compile_fail(P->c, cur(P)->line, "unsupported dotted filter or test name '%s.'", name);
    return name;
}

static node_t *filter_expr(parser_t *P, node_t *x)
{
    for (;;) {
        int line = cur(P)->line;
        if (is_op(P, '|')) {
            P->i++;
            node_t *f = mk2(P, N_FILTER, line, 0, x, NULL);
            f->s = dotted_name(P);
            f->slen = strlen(f->s);
            f->id = filter_find(f->s, f->slen);
            if (f->id < 0)
                compile_fail(P->c, line, "unsupported filter '%s'", f->s);
            if (is_op(P, '('))
                call_args(P, f);
            x = f;
        } else if (is_name(P, "is")) {
            P->i++;
            node_t *t = mk2(P, N_TEST, line, 0, x, NULL);
            if (is_name(P, "not"))
                P->i++, t->op = 1;
            t->s = dotted_name(P);
            t->slen = strlen(t->s);
            t->id = test_find(t->s, t->slen);
            if (t->id < 0)
                compile_fail(P->c, line, "unsupported test '%s'", t->s);
            token_t *c = cur(P);
            if (is_op(P, '(')) {
                call_args(P, t);
            } else if ((c->type == T_NAME || c->type == T_STR || c->type == T_INT ||
                        c->type == T_FLOAT || is_op(P, '[') || is_op(P, '{')) &&
                       !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
                if (is_name(P, "is"))
                    compile_fail(P->c, line, "cannot chain tests with 'is'");
                t->list = arena_alloc(P->c->arena, sizeof(node_t *));
                t->list[0] = postfix(P, primary(P));
                t->n = 1;
            }
            x = t;
        } else if (is_op(P, '(')) {
            x = call(P, x);
        } else {
            return x;
        }
    }
}

static node_t *unary(parser_t *P, int with_filter)
{
    node_t *x;
    int line = cur(P)->line;
    if (is_op(P, '-') || is_op(P, '+')) {
        int op = P->t[P->i++].op;
        x = mk2(P, op == '-' ? N_NEG : N_POS, line, 0, unary(P, 0), NULL);
    } else {
        x = primary(P);
    }
    x = postfix(P, x);
    return with_filter ? filter_expr(P, x) : x;
}

static node_t *power(parser_t *P)
{
    node_t *x = unary(P, 1);
    while (is_op(P, OP_POW)) {
        int line = P->t[P->i++].line;
        x = mk2(P, N_BINOP, line, OP_POW, x, unary(P, 1));
    }
    return x;
}

static node_t *math2(parser_t *P)
{
    node_t *x = power(P);
    while (is_op(P, '*') || is_op(P, '/') || is_op(P, OP_FLOORDIV) || is_op(P, '%')) {
        token_t *t = &P->t[P->i++];
        x = mk2(P, N_BINOP, t->line, t->op, x, power(P));
    }
    return x;
}

static node_t *concat(parser_t *P)
{
    node_t *x = math2(P);
    while (is_op(P, '~')) {
        int line = P->t[P->i++].line;
        x = mk2(P, N_BINOP, line, '~', x, math2(P));
    }
    return x;
}

static node_t *math1(parser_t *P)
{
    node_t *x = concat(P);
    while (is_op(P, '+') || is_op(P, '-')) {
        token_t *t = &P->t[P->i++];
        x = mk2(P, N_BINOP, t->line, t->op, x, concat(P));
    }
    return x;
}

/* Comparison operators: the token ops, 'i' for in, 'n' for not in. */
static node_t *compare(parser_t *P)
{
    node_t *x = math1(P), *prev = x, *result = NULL;
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(P, OP_EQ) || is_op(P, OP_NE) || is_op(P, '<') || is_op(P, '>') ||
            is_op(P, OP_LE) || is_op(P, OP_GE))
            op = P->t[P->i++].op;
        else if (is_name(P, "in"))
            op = 'i', P->i++;
        else if (is_name(P, "not") && P->t[P->i + 1].type == T_NAME &&
                 !strcmp(P->t[P->i + 1].s, "in"))
            op = 'n', P->i += 2;
        else
            return result ? result : x;
        /* a < b < c is (a < b) and (b < c). */
        node_t *rhs = math1(P);
        node_t *cmp = mk2(P, N_CMP, line, op, prev, rhs);
        result = result ? mk2(P, N_AND, line, 0, result, cmp) : cmp;
        prev = rhs;
    }
}

static node_t *not_expr(parser_t *P)
{
    if (is_name(P, "not")) {
        int line = P->t[P->i++].line;
        return mk2(P, N_NOT, line, 0, not_expr(P), NULL);
    }
    return compare(P);
}

static node_t *and_expr(parser_t *P)
{
    node_t *x = not_expr(P);
    while (is_name(P, "and")) {
        int line = P->t[P->i++].line;
        x = mk2(P, N_AND, line, 0, x, not_expr(P));
    }
    return x;
}

static node_t *or_expr(parser_t *P)
{
    node_t *x = and_expr(P);
    while (is_name(P, "or")) {
        int line = P->t[P->i++].line;
        x = mk2(P, N_OR, line, 0, x, and_expr(P));
    }
    return x;
}

static node_t *expr(parser_t *P)
{
    node_t *x = or_expr(P);
    while (is_name(P, "if")) {
        int line = P->t[P->i++].line;
        node_t *c = mk2(P, N_COND, line, 0, x, or_expr(P));
        if (is_name(P, "else")) {
            P->i++;
            c->c = expr(P);
        }
        x = c;
    }
    return x;
}

/* An expression that may be an unparenthesized tuple ("set a = 1, 2"). */
static node_t *tuple_expr(parser_t *P, int end)
{
    node_t *x = expr(P);
    if (!is_op(P, ','))
        return x;
    vec_t items = {0};
    vec_push(P, &items, x);
    while (is_op(P, ',')) {
        P->i++;
        if (cur(P)->type == end)
            break;
        vec_push(P, &items, expr(P));
    }
    node_t *t = mk(P, N_TUPLE, x->line);
    t->list = items.v, t->n = items.n;
    return t;
}

/* ---- statements ---- */

static node_t *body(parser_t *P, const char *const *ends);

static void set_names(parser_t *P, node_t *x, vec_t *names)
{
    x->names = arena_alloc(P->c->arena, names->n * sizeof(char *));
    x->namelen = arena_alloc(P->c->arena, names->n * sizeof(size_t));
    for (size_t k = 0; k < names->n; k++)
        x->names[k] = (const char *)names->v[k], x->namelen[k] = strlen(x->names[k]);
    x->nnames = names->n;
}

/* Target names "a" or "a, b" (stored in a vec as strings). */
static void targets(parser_t *P, vec_t *names)
{
    do {
        if (names->n)
            P->i++;
        vec_push(P, names, (node_t *)expect_name(P));
    } while (is_op(P, ','));
}

static node_t *stmt_if(parser_t *P, int line)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    node_t *x = mk(P, N_IF, line);
    x->a = expr(P);
    expect_end(P, T_BLOCK_END);
    node_t *b = body(P, ends);
    x->list = b->list, x->n = b->n;
    const char *end = expect_name(P);
    if (!strcmp(end, "elif")) {
        node_t *e = stmt_if(P, P->t[P->i - 1].line);
        x->list2 = arena_alloc(P->c->arena, sizeof(node_t *));
        x->list2[0] = e, x->n2 = 1;
        return x; /* the nested if consumed endif */
    }
    if (!strcmp(end, "else")) {
        static const char *const endif[] = {"endif", NULL};
        expect_end(P, T_BLOCK_END);
        b = body(P, endif);
        x->list2 = b->list, x->n2 = b->n;
        P->i++;
    }
    expect_end(P, T_BLOCK_END);
    return x;
}

static node_t *stmt_for(parser_t *P, int line)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const endfor[] = {"endfor", NULL};
    node_t *x = mk(P, N_FOR, line);
    vec_t names = {0};
    targets(P, &names);
    set_names(P, x, &names);
    if (!is_name(P, "in"))
        compile_fail(P->c, cur(P)->line, "expected 'in' in a for loop, got %s", describe(cur(P)));
    P->i++;
    x->a = or_expr(P);
    if (is_name(P, "if")) {
        P->i++;
        x->b = or_expr(P);
    }
    if (is_name(P, "recursive"))
        compile_fail(P->c, cur(P)->line, "unsupported recursive for loop");
    expect_end(P, T_BLOCK_END);
    P->loops++;
    node_t *b = body(P, ends);
    P->loops--;
    x->list = b->list, x->n = b->n;
    if (!strcmp(expect_name(P), "else")) {
        expect_end(P, T_BLOCK_END);
        b = body(P, endfor);
        x->list2 = b->list, x->n2 = b->n;
        P->i++;
    }
    expect_end(P, T_BLOCK_END);
    return x;
}

static node_t *stmt_set(parser_t *P, int line)
{
    static const char *const endset[] = {"endset", NULL};
    node_t *x = mk(P, N_SET, line);
    vec_t names = {0};
    targets(P, &names);
    if (names.n == 1 && is_op(P, '.')) { /* set ns.attr = ... */
        P->i++;
        x->s = expect_name(P);
        x->slen = strlen(x->s);
    }
    set_names(P, x, &names);
    if (is_op(P, '=')) {
        P->i++;
        x->a = tuple_expr(P, T_BLOCK_END);
        expect_end(P, T_BLOCK_END);
        return x;
    }
    if (names.n != 1 || x->s)
        compile_fail(P->c, line, "expected '=' in set");
    if (is_op(P, '|'))
        compile_fail(P->c, line, "unsupported filtered block set");
    expect_end(P, T_BLOCK_END);
    node_t *b = body(P, endset);
    x->list = b->list, x->n = b->n;
    P->i++;
    expect_end(P, T_BLOCK_END);
    return x;
}

static node_t *stmt_macro(parser_t *P, int line)
{
    static const char *const endmacro[] = {"endmacro", NULL};
    node_t *x = mk(P, N_MACRO, line);
    x->s = expect_name(P);
    x->slen = strlen(x->s);
    vec_t params = {0}, defaults = {0};
    expect_op(P, '(');
    while (!is_op(P, ')')) {
        if (params.n)
            expect_op(P, ',');
        vec_push(P, &params, (node_t *)expect_name(P));
        node_t *d = NULL;
        if (is_op(P, '=')) {
            P->i++;
            d = expr(P);
        }
        vec_push(P, &defaults, d);
    }
    P->i++;
    expect_end(P, T_BLOCK_END);
    set_names(P, x, &params);
    x->list2 = defaults.v, x->n2 = defaults.n;
    int loops = P->loops;
    P->loops = 0;
    node_t *b = body(P, endmacro);
    P->loops = loops;
    x->list = b->list, x->n = b->n;
    P->i++;
    expect_end(P, T_BLOCK_END);
    if (P->nmacros % 16 == 0) {
        const char **nm = arena_alloc(P->c->arena, (P->nmacros + 16) * sizeof(*nm));
        if (P->nmacros)
            memcpy(nm, P->macros, P->nmacros * sizeof(*nm));
        P->macros = nm;
    }
    P->macros[P->nmacros++] = x->s;
    return x;
}

static node_t *statement(parser_t *P)
{
    static const char *const endgen[] = {"endgeneration", NULL};
    int line = cur(P)->line;
    const char *tag = expect_name(P);
    if (!strcmp(tag, "if"))
        return stmt_if(P, line);
    if (!strcmp(tag, "for"))
        return stmt_for(P, line);
    if (!strcmp(tag, "set"))
        return stmt_set(P, line);
    if (!strcmp(tag, "macro"))
        return stmt_macro(P, line);
    if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
        if (!P->loops)
            compile_fail(P->c, line, "'%s' outside a for loop", tag);
        expect_end(P, T_BLOCK_END);
        return mk(P, tag[0] == 'b' ? N_BREAK : N_CONTINUE, line);
    }
    if (!strcmp(tag, "generation")) { /* transformers' assistant-mask tag: renders its body */
        expect_end(P, T_BLOCK_END);
        node_t *b = body(P, endgen);
        P->i++;
        expect_end(P, T_BLOCK_END);
        return b;
    }
    compile_fail(P->c, line, "unsupported tag '%s'", tag);
}

/* Statements up to a block tag named in ends (the parser is left on that name) or, when
 * ends is NULL, to the end of the template. */
static node_t *body(parser_t *P, const char *const *ends)
{
    node_t *b = mk(P, N_BODY, cur(P)->line);
    vec_t items = {0};
    for (;;) {
        token_t *t = cur(P);
        if (t->type == T_EOF) {
            if (ends)
                compile_fail(P->c, t->line, "missing '%s'",
                             ends[0][0] == 'e' ? ends[0] : "end tag");
            break;
        }
        if (t->type == T_DATA) {
            node_t *d = mk(P, N_DATA, t->line);
            d->s = t->s, d->slen = t->n;
            vec_push(P, &items, d);
            P->i++;
        } else if (t->type == T_VAR_BEGIN) {
            P->i++;
            node_t *o = mk2(P, N_OUTPUT, t->line, 0, tuple_expr(P, T_VAR_END), NULL);
            expect_end(P, T_VAR_END);
            vec_push(P, &items, o);
        } else if (t->type == T_BLOCK_BEGIN) {
            P->i++;
            token_t *name = cur(P);
            int is_end = 0;
            for (size_t k = 0; ends && ends[k]; k++)
                is_end |= name->type == T_NAME && !strcmp(name->s, ends[k]);
            if (is_end)
                break;
            if (name->type == T_NAME && (!strncmp(name->s, "end", 3) || !strcmp(name->s, "else") ||
                                         !strcmp(name->s, "elif")))
                compile_fail(P->c, name->line, "unexpected '%s'", name->s);
            vec_push(P, &items, statement(P));
        } else {
            compile_fail(P->c, t->line, "unexpected %s", describe(t));
        }
    }
    b->list = items.v, b->n = items.n;
    return b;
}

node_t *parse(compiler_t *c, token_t *toks, size_t ntok)
{
    parser_t P = {.c = c, .t = toks, .n = ntok};
    node_t *root = body(&P, NULL);
    for (size_t k = 0; k < P.ncalls; k++) {
        node_t *x = P.calls[k];
        int known = global_find(x->a->s, x->a->slen) >= 0;
        for (size_t m = 0; m < P.nmacros && !known; m++)
            known = !strcmp(P.macros[m], x->a->s);
        if (!known)
            compile_fail(c, x->line, "unsupported function '%s'", x->a->s);
    }
    return root;
}
