/* lex.c - splits a template into tokens as Jinja2's lexer does with the settings of Hugging
 * Face transformers: newlines normalized to "\n" and one trailing newline dropped;
 * "{%- " / "-%}" / "{{-" / "-}}" / "{#-" / "-#}" strip whitespace on their side;
 * trim_blocks removes the first newline after "%}" and "#}"; lstrip_blocks removes the
 * spaces and tabs before "{%" and "{#" on a line of their own ("{%+" keeps them). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/internal.h"

typedef struct lexer {
    compiler_t *c;
    const char *s;
    size_t n, pos;
    int line;
    token_t *t;
    size_t nt, cap;
} lexer_t;

static token_t *push(lexer_t *L, int type, int line)
{
    if (L->nt == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 64;
        token_t *t = arena_alloc(L->c->arena, cap * sizeof(*t));
        if (L->nt)
            memcpy(t, L->t, L->nt * sizeof(*t));
        L->t = t;
        L->cap = cap;
    }
    token_t *t = &L->t[L->nt++];
    memset(t, 0, sizeof(*t));
    t->type = type;
    t->line = line;
    return t;
}

static void advance(lexer_t *L, size_t k)
{
    for (size_t i = 0; i < k; i++)
        L->line += L->s[L->pos + i] == '\n';
    L->pos += k;
}

/* Skips Python whitespace (\s) from the current position; returns whether the last skipped
 * character was a newline. */
static int skip_space(lexer_t *L)
{
    int nl = 0;
    size_t k;
    while (L->pos < L->n && (k = u8_space_at(L->s, L->n, L->pos)) > 0) {
        nl = L->s[L->pos] == '\n';
        advance(L, k);
    }
    return nl;
}

static void append_codepoint(char *out, size_t *o, unsigned long cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xc0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xe0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*o)++] = (char)(0xf0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* A string literal with Python's escapes (Jinja2 decodes them with "unicode-escape");
 * an unknown escape keeps its backslash. */
static void lex_string(lexer_t *L, token_t *t)
{
    char q = L->s[L->pos];
    size_t i = L->pos + 1;
    while (i < L->n && L->s[i] != q)
        i += (L->s[i] == '\\' && i + 1 < L->n) ? 2 : 1;
    if (i >= L->n)
        compile_fail(L->c, L->line, "unterminated string");
    const char *s = L->s + L->pos + 1;
    size_t n = i - L->pos - 1, o = 0;
    char *out = arena_alloc(L->c->arena, n + 1);
    for (size_t k = 0; k < n; k++) {
        if (s[k] != '\\' || k + 1 >= n) {
            out[o++] = s[k];
            continue;
        }
        char e = s[++k];
        static const char from[] = "nrtbfva\\'\"", to[] = "\n\r\t\b\f\v\a\\'\"";
        const char *simple = e ? strchr(from, e) : NULL;
        if (e == '\n') {
            /* a backslash-newline continues the line */
        } else if (simple) {
            out[o++] = to[simple - from];
        } else if (e == 'x' || e == 'u' || e == 'U') {
            size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            unsigned long cp = 0;
            for (size_t d = 1; d <= digits; d++) {
                if (k + d >= n || !isxdigit((unsigned char)s[k + d]))
                    compile_fail(L->c, L->line, "truncated \\%c escape in a string", e);
                char h[2] = {s[k + d], 0};
                cp = cp * 16 + strtoul(h, NULL, 16);
            }
            if (cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
                compile_fail(L->c, L->line, "bad \\%c escape in a string", e);
            append_codepoint(out, &o, cp);
            k += digits;
        } else if (e >= '0' && e <= '7') {
            unsigned cp = 0;
            size_t d = 0;
            for (; d < 3 && k + d < n && s[k + d] >= '0' && s[k + d] <= '7'; d++)
                cp = cp * 8 + (unsigned)(s[k + d] - '0');
            append_codepoint(out, &o, cp);
            k += d - 1;
        } else if (e == 'N') {
            compile_fail(L->c, L->line, "unsupported \\N{...} escape in a string");
        } else {
            out[o++] = '\\';
            out[o++] = e;
        }
    }
    t->s = out;
    t->n = o;
    advance(L, i + 1 - L->pos);
}

static void lex_number(lexer_t *L, token_t *t, int after_dot)
{
    const char *s = L->s + L->pos;
    size_t i = 0;
    char buf[64];
    size_t b = 0;
    while (isdigit((unsigned char)s[i]) || (s[i] == '_' && isdigit((unsigned char)s[i + 1]))) {
        if (s[i] != '_' && b < sizeof(buf) - 8)
            buf[b++] = s[i];
        i++;
    }
    int is_float = 0;
    if (!after_dot && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
        is_float = 1;
        buf[b++] = s[i++];
        while (isdigit((unsigned char)s[i]) || (s[i] == '_' && isdigit((unsigned char)s[i + 1]))) {
            if (s[i] != '_' && b < sizeof(buf) - 8)
                buf[b++] = s[i];
            i++;
        }
    }
    if (!after_dot && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-')
            j++;
        if (isdigit((unsigned char)s[j])) {
            is_float = 1;
            buf[b++] = 'e';
            for (size_t k = i + 1; k < j; k++)
                buf[b++] = s[k];
            while (isdigit((unsigned char)s[j]) && b < sizeof(buf) - 1)
                buf[b++] = s[j++];
            i = j;
        }
    }
    buf[b] = '\0';
    if (is_float) {
        t->type = T_FLOAT;
        t->f = strtod(buf, NULL);
    } else {
        t->type = T_INT;
        errno = 0;
        t->i = strtoll(buf, NULL, 10);
        if (errno)
            compile_fail(L->c, L->line, "integer %s is too large", buf);
    }
    advance(L, i);
}

/* The tokens inside one tag, up to and including its end; returns whether the end ate a
 * newline (Jinja2's line_starting for the next lstrip_blocks decision). */
static int lex_tag(lexer_t *L, int kind)
{
    int depth = 0, start_line = L->line;
    const char *end = kind == T_VAR_BEGIN ? "}}" : "%}";
    for (;;) {
        skip_space(L);
        if (L->pos >= L->n)
            compile_fail(L->c, start_line, "unclosed tag: missing '%s'", end);
        const char *p = L->s + L->pos;
        if (depth == 0) {
            int sign = (*p == '-' || *p == '+') ? *p : 0;
            if (strncmp(p + (sign ? 1 : 0), end, 2) == 0 && !(sign == '+' && kind == T_VAR_BEGIN)) {
                push(L, kind == T_VAR_BEGIN ? T_VAR_END : T_BLOCK_END, L->line);
                advance(L, sign ? 3 : 2);
                if (sign == '-')
                    return skip_space(L);
                if (!sign && kind == T_BLOCK_BEGIN && L->pos < L->n && L->s[L->pos] == '\n') {
                    advance(L, 1);
                    return 1;
                }
                return 0;
            }
        }
        token_t *t = push(L, T_OP, L->line);
        unsigned char ch = (unsigned char)*p;
        if (isalpha(ch) || ch == '_') {
            size_t i = 0;
            while (isalnum((unsigned char)p[i]) || p[i] == '_')
                i++;
            t->type = T_NAME;
            t->s = arena_strndup(L->c->arena, p, i);
            t->n = i;
            advance(L, i);
        } else if (isdigit(ch)) {
            lex_number(L, t,
                       L->nt >= 2 && L->t[L->nt - 2].type == T_OP && L->t[L->nt - 2].op == '.');
        } else if (ch == '\'' || ch == '"') {
            t->type = T_STR;
            lex_string(L, t);
        } else {
            static const struct {
                char s[3];
                int op;
            } two[] = {{"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ},
                       {"!=", OP_NE},       {">=", OP_GE},  {"<=", OP_LE}};
            t->op = 0;
            for (size_t k = 0; k < sizeof(two) / sizeof(two[0]); k++)
                if (p[0] == two[k].s[0] && p[1] == two[k].s[1])
                    t->op = two[k].op;
            if (t->op) {
                advance(L, 2);
            } else if (ch && strchr("+-/*%~[](){}><=.:|,;", ch)) {
                t->op = ch;
                depth +=
                    (ch == '(' || ch == '[' || ch == '{') - (ch == ')' || ch == ']' || ch == '}');
                if (depth < 0)
                    compile_fail(L->c, L->line, "unexpected '%c'", ch);
                advance(L, 1);
            } else {
                compile_fail(L->c, L->line, "unexpected character '%c' in a tag", ch);
            }
        }
    }
}

/* Text before a tag, after the tag's "-" or lstrip_blocks has had its say. */
static void push_data(lexer_t *L, size_t from, size_t to, int line, int sign, int kind,
                      int line_starting)
{
    if (sign == '-') {
        size_t k;
        while (to > from && (k = u8_space_before(L->s, to)) > 0 && to - k >= from)
            to -= k;
    } else if (sign != '+' && kind != T_VAR_BEGIN) {
        size_t l = to;
        while (l > from && L->s[l - 1] != '\n')
            l--;
        if (l > from || line_starting) {
            size_t i = l, k;
            while (i < to && (k = u8_space_at(L->s, to, i)) > 0)
                i += k;
            if (i == to)
                to = l;
        }
    }
    if (to > from) {
        token_t *t = push(L, T_DATA, line);
        t->s = L->s + from;
        t->n = to - from;
    }
}

token_t *lex(compiler_t *c, const char *src, size_t *ntok)
{
    lexer_t L = {.c = c, .line = 1};
    /* Newlines become "\n"; one trailing newline goes (keep_trailing_newline=False). */
    size_t n = strlen(src), o = 0;
    char *s = arena_alloc(c->arena, n + 1);
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[o++] = '\n';
            i += src[i + 1] == '\n';
        } else {
            s[o++] = src[i];
        }
    }
    if (o && s[o - 1] == '\n')
        o--;
    s[o] = '\0';
    L.s = s;
    L.n = o;
    int line_starting = 1;
    while (L.pos < L.n) {
        size_t from = L.pos;
        int line = L.line;
        const char *p = L.s + from;
        const char *tag = NULL;
        for (const char *q = strchr(p, '{'); q; q = strchr(q + 1, '{'))
            if (q[1] == '{' || q[1] == '%' || q[1] == '#') {
                tag = q;
                break;
            }
        if (!tag || (size_t)(tag - L.s) >= L.n) {
            push_data(&L, from, L.n, line, 0, T_VAR_BEGIN, 0);
            break;
        }
        int kind = tag[1] == '{' ? T_VAR_BEGIN : tag[1] == '%' ? T_BLOCK_BEGIN : T_EOF;
        int sign = (tag[2] == '-' || tag[2] == '+') ? tag[2] : 0;
        size_t at = (size_t)(tag - L.s);
        push_data(&L, from, at, line, sign, kind, line_starting);
        advance(&L, at - from + 2 + (sign ? 1 : 0));
        if (kind == T_EOF) { /* a comment */
            const char *e = strstr(L.s + L.pos, "#}");
            if (!e)
                compile_fail(c, L.line, "unclosed comment: missing '#}'");
            size_t end = (size_t)(e - L.s);
            int esign = (end > L.pos && (e[-1] == '-' || e[-1] == '+')) ? e[-1] : 0;
            advance(&L, end + 2 - L.pos);
            line_starting = 0;
            if (esign == '-')
                line_starting = skip_space(&L);
            else if (!esign && L.pos < L.n && L.s[L.pos] == '\n')
                advance(&L, 1), line_starting = 1;
            continue;
        }
        push(&L, kind, L.line);
        line_starting = lex_tag(&L, kind);
    }
    push(&L, T_EOF, L.line);
    *ntok = L.nt;
    return L.t;
}
