/* template.c - the public entry points: tpl_compile (lex, parse, check), tpl_render (the
 * variables of the context, then the template's statements into one output buffer) and the
 * two error paths that long-jump back to them. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

#define COMPILE_LIMIT (64u << 20)
#define RENDER_LIMIT (64u << 20)

struct tpl {
    arena_t arena; /* owns the AST and every string in it */
    node_t *root;
    locale_t loc; /* C.UTF-8 for case mapping, or (locale_t)0 */
};

void compile_fail(compiler_t *c, int line, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "chat template line %d: %s", line, msg);
    longjmp(c->jb, 2);
}

void render_fail(render_t *r, const node_t *at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One line: the message may come from the template (raise_exception) or the input. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (r->raised)
        snprintf(r->err, r->errlen, "%s", msg);
    else if (at)
        snprintf(r->err, r->errlen, "chat template line %d: %s", at->line, msg);
    else
        snprintf(r->err, r->errlen, "chat template: %s", msg);
    longjmp(r->jb, 2);
}

int tpl_compile(tpl_t **out, const char *src, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    tpl_t *t = calloc(1, sizeof(*t));
    compiler_t *c = calloc(1, sizeof(*c));
    if (!t || !c) {
        free(t);
        free(c);
        snprintf(err, errlen, "chat template: out of memory");
        return -ENOMEM;
    }
    t->arena.limit = COMPILE_LIMIT;
    t->arena.fail = &c->jb;
    c->arena = &t->arena;
    c->err = err;
    c->errlen = errlen;
    int jr = setjmp(c->jb);
    if (jr) {
        if (jr == 1)
            snprintf(err, errlen, "chat template: out of memory");
        free(c);
        tpl_free(t);
        return jr == 1 ? -ENOMEM : -EINVAL;
    }
    size_t ntok;
    token_t *toks = lex(c, src, &ntok);
    t->root = parse(c, toks, ntok);
    t->arena.fail = NULL; /* nothing allocates from it any more */
    t->loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    free(c);
    *out = t;
    return 0;
}

void tpl_free(tpl_t *t)
{
    if (!t)
        return;
    if (t->loc)
        freelocale(t->loc);
    arena_free(&t->arena);
    free(t);
}

static void set_var(render_t *r, frame_t *f, const char *name, val_t v)
{
    dict_set(r, &f->vars, name, strlen(name), v);
}

int tpl_render(const tpl_t *t, const tpl_ctx_t *ctx, char **out, size_t *outlen, char *err,
               size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    if (errlen)
        err[0] = '\0';
    render_t *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "chat template: out of memory");
        return -ENOMEM;
    }
    r->arena.limit = RENDER_LIMIT;
    r->arena.fail = &r->jb;
    r->code = -EINVAL;
    r->err = err;
    r->errlen = errlen;
    r->now = ctx->now ? ctx->now : time(NULL);
    r->loc = t->loc;
    int jr = setjmp(r->jb);
    if (jr) {
        int code = r->code;
        if (jr == 1) {
            snprintf(err, errlen, "chat template: the render needs more than %u MiB",
                     RENDER_LIMIT >> 20);
            code = -ENOMEM;
        }
        arena_free(&r->arena);
        free(r);
        return code;
    }
    frame_t *globals = arena_alloc(&r->arena, sizeof(*globals));
    if (ctx->bos_token)
        set_var(r, globals, "bos_token", v_str(ctx->bos_token, strlen(ctx->bos_token)));
    if (ctx->eos_token)
        set_var(r, globals, "eos_token", v_str(ctx->eos_token, strlen(ctx->eos_token)));
    if (ctx->kwargs && json_is_object(ctx->kwargs)) {
        val_t kw = v_from_json(r, ctx->kwargs);
        for (size_t i = 0; i < kw.d->n; i++)
            dict_set(r, &globals->vars, kw.d->k[i], kw.d->kn[i], kw.d->v[i]);
    }
    if (ctx->messages)
        set_var(r, globals, "messages", v_from_json(r, ctx->messages));
    set_var(r, globals, "add_generation_prompt", v_bool(ctx->add_generation_prompt));
    frame_t *top = arena_alloc(&r->arena, sizeof(*top));
    top->parent = globals;
    sbuf_t buf = {0};
    r->out = &buf;
    render_body(r, top, t->root);
    char *s = malloc(buf.n + 1);
    if (!s) {
        arena_free(&r->arena);
        free(r);
        snprintf(err, errlen, "chat template: out of memory");
        return -ENOMEM;
    }
    if (buf.n)
        memcpy(s, buf.p, buf.n);
    s[buf.n] = '\0';
    *out = s;
    *outlen = buf.n;
    arena_free(&r->arena);
    free(r);
    return 0;
}
