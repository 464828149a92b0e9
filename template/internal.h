/* internal.h - the template module's private types: the arena every compile and render
 * allocates from, tokens, the AST, the value type and the render state. Errors inside a
 * compile or a render long-jump to its entry point (tpl_compile, tpl_render); since all
 * memory comes from an arena that is freed as a whole, nothing leaks on that path. */
#ifndef NANO_VLLM_TEMPLATE_INTERNAL_H
#define NANO_VLLM_TEMPLATE_INTERNAL_H

#include <locale.h>
#include <setjmp.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "template/template.h"

/* ---- arena (value.c) ---- */
typedef struct arena {
    struct chunk *head;
    size_t used, limit; /* bytes taken from malloc so far, and the most allowed */
    jmp_buf *fail;      /* where to jump when the limit or malloc fails */
} arena_t;

void *arena_alloc(arena_t *a, size_t n); /* zeroed */
char *arena_strndup(arena_t *a, const char *s, size_t n);
void arena_free(arena_t *a);

/* ---- lexer (lex.c) ---- */
enum {
    T_EOF,
    T_DATA,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_INT,
    T_FLOAT,
    T_STR,
    T_OP
};
/* Two-character operators get codes above 255; one-character ones are the character. */
enum { OP_FLOORDIV = 256, OP_POW, OP_EQ, OP_NE, OP_GE, OP_LE };

typedef struct token {
    int type, op, line;
    const char *s; /* T_DATA, T_NAME, T_STR (escapes decoded): arena-owned text */
    size_t n;
    long long i;
    double f;
} token_t;

/* Splits src into tokens (arena-owned array ending in T_EOF), applying Jinja2's whitespace
 * control with trim_blocks and lstrip_blocks. Fails through cerr. */
typedef struct compiler {
    arena_t *arena;
    jmp_buf jb;
    char *err;
    size_t errlen;
} compiler_t;
_Noreturn void compile_fail(compiler_t *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
token_t *lex(compiler_t *c, const char *src, size_t *ntok);

/* ---- AST (parse.c) ---- */
enum {
    /* statements */
    N_DATA,
    N_OUTPUT,
    N_IF,
    N_FOR,
    N_SET,
    N_MACRO,
    N_BREAK,
    N_CONTINUE,
    N_BODY,
    /* expressions */
    N_LIT,
    N_NAME,
    N_ATTR,
    N_ITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_BINOP,
    N_CMP,
    N_AND,
    N_OR,
    N_NOT,
    N_NEG,
    N_POS,
    N_COND,
    N_LIST,
    N_TUPLE,
    N_DICT
};

typedef struct val val_t;
typedef struct node node_t;

/* One value: strings are (p, n) byte ranges, not NUL-terminated, never modified. Lists,
 * dicts and the loop are shared by pointer; only a namespace's members change. */
typedef enum {
    V_UNDEF,
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,
    V_LIST,
    V_DICT,
    V_NS,
    V_LOOP,
    V_FUNC,
    V_METHOD
} vtype_t;

typedef struct vlist {
    val_t *v;
    size_t n, cap;
    int tuple;
} vlist_t;

typedef struct vdict {
    const char **k;
    size_t *kn;
    val_t *v;
    size_t n, cap;
} vdict_t;

struct frame;
struct val {
    vtype_t t;
    union {
        int b;
        long long i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;        /* V_STR; V_UNDEF: the missing name (p may be NULL) */
        vlist_t *l; /* V_LIST */
        vdict_t *d; /* V_DICT, V_NS */
        struct loop *loop;
        struct {
            const node_t *macro; /* NULL for a builtin global */
            struct frame *frame; /* the macro's defining scope */
            int id;              /* builtin global's index */
        } fn;
        struct {
            val_t *self;
            int id; /* index into the method table */
        } m;
    };
};

struct node {
    int kind, line, op;
    node_t *a, *b, *c;
    node_t **list; /* arguments, body, list items, dict keys */
    size_t n;
    node_t **list2; /* keyword argument values, else body, dict values, macro defaults */
    size_t n2;
    const char **names; /* keyword names, for targets, set targets, macro parameters */
    size_t *namelen;
    size_t nnames;
    const char *s; /* data text, a name, an attribute, a filter/test name */
    size_t slen;
    int id;    /* resolved filter, test, method or global index */
    val_t lit; /* N_LIT */
};

node_t *parse(compiler_t *c, token_t *toks, size_t ntok);

/* ---- values (value.c) ---- */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf_t;

typedef struct render render_t;

void sb_put(render_t *r, sbuf_t *b, const char *s, size_t n);
void sb_putc(render_t *r, sbuf_t *b, char ch);
val_t v_str(const char *p, size_t n);
val_t v_sb(sbuf_t *b);
val_t v_int(long long i);
val_t v_bool(int b);
val_t v_none(void);
val_t v_undef(const char *name);
vlist_t *list_new(render_t *r, size_t cap);
void list_push(render_t *r, vlist_t *l, val_t v);
vdict_t *dict_new(render_t *r);
val_t *dict_get(const vdict_t *d, const char *k, size_t kn);
void dict_set(render_t *r, vdict_t *d, const char *k, size_t kn, val_t v);
val_t v_from_json(render_t *r, const json_t *j);
int v_truthy(val_t v);
int v_equal(val_t a, val_t b);
const char *v_type_name(val_t v);
void v_to_str(render_t *r, sbuf_t *b, val_t v);  /* Python's str() */
void v_to_repr(render_t *r, sbuf_t *b, val_t v); /* Python's repr() */
void v_to_json(render_t *r, sbuf_t *b, val_t v, int indent, int level, const char *item_sep,
               const char *key_sep);
val_t v_as_str(render_t *r, val_t v); /* str(v) as a V_STR (undefined gives "") */

/* UTF-8 helpers: code points of s, byte offset of code point i, Python's isspace. */
size_t u8_len(const char *s, size_t n);
size_t u8_offset(const char *s, size_t n, size_t i);
size_t u8_space_at(const char *s, size_t n, size_t at); /* its bytes, or 0 */
size_t u8_space_before(const char *s, size_t end);      /* its bytes, or 0 */

/* ---- evaluation (eval.c, builtins.c) ---- */
typedef struct frame {
    struct frame *parent;
    vdict_t vars;
} frame_t;

struct loop {
    vlist_t *items;
    size_t i;
};

struct render {
    arena_t arena;
    jmp_buf jb;
    int code;   /* the error code render_fail returns */
    int raised; /* the error is raise_exception's message, printed as it is */
    char *err;
    size_t errlen;
    sbuf_t *out;
    frame_t *globals;
    long steps;
    int depth;
    time_t now;
    locale_t loc; /* C.UTF-8 for case mapping, or (locale_t)0: ASCII only */
};

void render_body(render_t *r, frame_t *f, const node_t *root);

_Noreturn void render_fail(render_t *r, const node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
val_t eval(render_t *r, frame_t *f, const node_t *e);
val_t call_value(render_t *r, frame_t *f, const node_t *at, val_t fn, val_t *args, size_t nargs,
                 const char **kw, size_t *kwn, val_t *kwv, size_t nkw);
vlist_t *v_iterate(render_t *r, const node_t *at, val_t v);
val_t v_getattr(render_t *r, const node_t *at, val_t obj, const char *name, size_t n);
val_t v_getitem(render_t *r, const node_t *at, val_t obj, val_t key);

/* Builtin tables: lookups return an index or -1. */
int filter_find(const char *name, size_t n);
int test_find(const char *name, size_t n);
int method_find(const char *name, size_t n);
int global_find(const char *name, size_t n);
/* Calls builtin idx of the given kind with self (the filtered/tested value, the method's
 * object; unused for globals) and the bound arguments. */
enum { B_FILTER, B_TEST, B_METHOD, B_GLOBAL };
val_t builtin_call(render_t *r, frame_t *f, const node_t *at, int kind, int idx, val_t self,
                   val_t *args, size_t nargs, const char **kw, size_t *kwn, val_t *kwv, size_t nkw);
/* Whether some type has a method of this name (for the compile-time check). */
val_t method_bind(render_t *r, const node_t *at, val_t self, const char *name, size_t n,
                  int *found);

#endif
