/* parse.h - the parser's state and the helpers its two files share (parse_expr.c: tokens
 * and expressions; parse.c: statements). Private to the template module. */
#ifndef NANO_VLLM_TEMPLATE_PARSE_H
#define NANO_VLLM_TEMPLATE_PARSE_H

#include "template/internal.h"

typedef struct parser {
    compiler_t *c;
    token_t *t;
    size_t i, n;
    int loops;           /* enclosing for loops, for break/continue */
    int depth;           /* nesting of expressions and blocks, bounded by MAX_NEST */
    const char **macros; /* names defined by {% macro %} */
    size_t nmacros;
    node_t **calls; /* calls of a plain name, checked at the end */
    size_t ncalls;
} parser_t;

typedef struct vec {
    node_t **v;
    size_t n, cap;
} vec_t;

/* Expressions and blocks nest at most this deep: the parser and the evaluator recurse. */
#define MAX_NEST 400

/* Enters one level of nesting (refused past MAX_NEST); leave() is its pair. */
void enter(parser_t *P);
void leave(parser_t *P);
void vec_push(parser_t *P, vec_t *v, node_t *x);
token_t *cur(parser_t *P);
int is_op(parser_t *P, int op);
int is_name(parser_t *P, const char *name);
const char *describe(token_t *t);
void expect_op(parser_t *P, int op);
const char *expect_name(parser_t *P);
void expect_end(parser_t *P, int type);
node_t *mk(parser_t *P, int kind, int line);
node_t *mk2(parser_t *P, int kind, int line, int op, node_t *a, node_t *b);

/* A full expression ("x if c else y" included); or_expr stops before "if" (for loops);
 * tuple_expr also takes "a, b" up to the token type end. */
node_t *expr(parser_t *P);
node_t *or_expr(parser_t *P);
node_t *tuple_expr(parser_t *P, int end);

#endif
