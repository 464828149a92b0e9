/* exec.c - runs statements: text and {{ }} to the output, if, for (a fresh scope for each
 * iteration, as Jinja2 has it; the loop variable; else; break and continue), set (a name,
 * names unpacked from a sequence, a namespace attribute, or a block's output), macro
 * definitions and calls (their own scope over the defining one, their output as the value). */
#include <string.h>

#include "template/internal.h"

#define MAX_DEPTH 64

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static size_t exec_body(render_t *r, frame_t *f, node_t **list, size_t n);

val_t macro_call(render_t *r, const node_t *at, val_t fn, val_t *args, size_t nargs,
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
        render_step(r, s);
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
    val_t ns = scope_lookup(f, s->names[0], s->namelen[0]);
    if (ns.t != V_NS)
        render_fail(r, s, "cannot assign attribute on non-namespace object '%s'", s->names[0]);
    dict_set(r, ns.d, s->s, s->slen, v);
}

static size_t exec_body(render_t *r, frame_t *f, node_t **list, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const node_t *s = list[k];
        render_step(r, s);
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
