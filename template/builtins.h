/* builtins.h - the tables of filters, tests, methods and globals (builtins.c, filters.c) and
 * the helpers they share; private to the template module. */
#ifndef NANO_VLLM_TEMPLATE_BUILTINS_H
#define NANO_VLLM_TEMPLATE_BUILTINS_H

#include "template/internal.h"

#define MAXP 6

/* An argument that was not given (distinct from an undefined value that was). */
extern const char builtin_missing[];
#define GIVEN(v) (!((v).t == V_UNDEF && (v).s.p == builtin_missing))

typedef val_t (*builtin_fn)(render_t *r, frame_t *f, const node_t *at, val_t self, val_t *a);

typedef struct builtin {
    const char *name;
    const char *params; /* space-separated parameter names, at most MAXP */
    builtin_fn fn;
    int self_type; /* methods: the type they belong to */
} builtin_t;

extern const builtin_t filter_table[];

val_t need_str(render_t *r, const node_t *at, val_t v, const char *what);
long long need_int(render_t *r, const node_t *at, val_t v, long long dflt, const char *what);
val_t items_of(render_t *r, const node_t *at, val_t self);

#endif
