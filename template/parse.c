/* parse.c - statements: tokens to the AST of a template (text, {{ }}, if/elif/else, for with
 * else and a filter, set (plain, tuple, namespace attribute, block), macro, break/continue,
 * transformers' generation block). Everything the engine cannot evaluate is refused here,
 * with the template line: unknown tags and functions, loop controls outside a loop,
 * recursive loops. Expressions are in parse_expr.c. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "template/parse.h"

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
    enter(P);
    node_t *b = mk(P, N_BODY, cur(P)->line);
    vec_t items = {0};
    for (;;) {
        token_t *t = cur(P);
        if (t->type == T_EOF) {
            if (ends) {
                size_t last = 0;
                while (ends[last + 1])
                    last++;
                compile_fail(P->c, t->line, "missing '%s'", ends[last]);
            }
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
    leave(P);
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
