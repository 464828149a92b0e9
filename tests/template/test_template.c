/* test_template.c - unit tests of the template language: whitespace control, loops, scopes,
 * filters, tests, methods, printing of values, and errors (at compile time with the template
 * line, at render time with the line or raise_exception's message). The expected strings are
 * what Jinja2 renders with transformers' settings. Also: renders on several threads at once
 * give the same text, and the memory and step limits stop runaway templates. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "template/template.h"
#include "tests/check.h"

static const char *MESSAGES = "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
                              " {\"role\": \"user\", \"content\": \" Hi \\u00e9 \"},"
                              " {\"role\": \"assistant\", \"content\": \"Hello!\"},"
                              " {\"role\": \"user\", \"content\": \"Bye\"}]";

/* Renders src with MESSAGES, add_generation_prompt, bos "<s>", eos "</s>" and the kwargs
 * given as JSON (or NULL). Returns the malloc'd output, or NULL with err set. */
static char *render(const char *src, const char *kwargs, int *rc, char *err, size_t errlen)
{
    tpl_t *t;
    *rc = tpl_compile(&t, src, err, errlen);
    if (*rc < 0)
        return NULL;
    json_t *msgs = json_loads(MESSAGES, 0, NULL), *kw = kwargs ? json_loads(kwargs, 0, NULL) : NULL;
    tpl_ctx_t ctx = {.messages = msgs,
                     .add_generation_prompt = 1,
                     .bos_token = "<s>",
                     .eos_token = "</s>",
                     .kwargs = kw,
                     .now = 86400 * 365};
    char *out;
    size_t len;
    *rc = tpl_render(t, &ctx, &out, &len, err, errlen);
    json_decref(msgs);
    json_decref(kw);
    tpl_free(t);
    return out;
}

#define RENDERS(src, kwargs, want)                                                                 \
    do {                                                                                           \
        char err_[256];                                                                            \
        int rc_;                                                                                   \
        char *out_ = render(src, kwargs, &rc_, err_, sizeof(err_));                                \
        if (rc_ < 0)                                                                               \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, err_);                              \
        CHECK_STR_EQ(out_, want);                                                                  \
        free(out_);                                                                                \
    } while (0)

/* The render or compile fails with code and an error that contains want. */
#define FAILS(src, kwargs, code, want)                                                             \
    do {                                                                                           \
        char err_[256];                                                                            \
        int rc_;                                                                                   \
        char *out_ = render(src, kwargs, &rc_, err_, sizeof(err_));                                \
        CHECK(out_ == NULL);                                                                       \
        CHECK_INT_EQ(rc_, code);                                                                   \
        if (rc_ < 0 && !strstr(err_, want)) {                                                      \
            fprintf(stderr, "%s:%d: error '%s' lacks '%s'\n", __FILE__, __LINE__, err_, want);     \
            check_failed_count++;                                                                  \
        }                                                                                          \
        free(out_);                                                                                \
    } while (0)

static void test_whitespace(void)
{
    RENDERS("a  {%- if true %} b {% endif -%}  c", NULL, "a b c");
    RENDERS("{% if true %}\nx\n{% endif %}\ny", NULL, "x\ny");
    RENDERS("  {% if true %}\n  x\n  {% endif %}\n", NULL, "  x\n");
    RENDERS("  {%+ if true %}x{% endif %}", NULL, "  x");
    RENDERS("{% if true +%}\nx{% endif %}", NULL, "\nx");
    RENDERS("a {# c #} b|a\n  {# c #}\nb", NULL, "a  b|a\nb");
    RENDERS("x  {{- ' y ' -}}  \n z", NULL, "x y z");
    RENDERS("{{ 1 }}\n{{ 2 }}\n", NULL, "1\n2");
    RENDERS("a\r\nb\rc\n\n", NULL, "a\nb\nc\n");
    RENDERS("{%- for m in messages %}\n    {{- m.role[0] }}\n{%- endfor %}\n", NULL, "suau");
    RENDERS("  {#- c -#}  x", NULL, "x");
}

static void test_loops_and_scopes(void)
{
    RENDERS("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
            "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
            NULL, "1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;");
    RENDERS("{% for x in [] %}x{% else %}empty{% endfor %}", NULL, "empty");
    RENDERS("{% for x in range(10) %}{% if x is odd %}{% continue %}{% endif %}"
            "{% if x > 6 %}{% break %}{% endif %}{{ x }}{% endfor %}",
            NULL, "0246");
    RENDERS("{% for x in range(6) if x % 2 %}{{ x }}{{ loop.length }}{% endfor %}", NULL, "133353");
    RENDERS("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}",
            NULL, "231");
    RENDERS("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
            "{% endfor %}{{ ns.n }}",
            NULL, "6");
    RENDERS("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}", NULL,
            "a=1,b=2,");
    RENDERS("{% macro m(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ m(1) }}{{ m(2, b=3) }}", NULL,
            "[1B][23]");
    RENDERS("{% set x %}a{{ 1 + 1 }}{% endset %}{{ x | length }}{{ x }}", NULL, "2a2");
    RENDERS("{% if false %}a{% elif 0 %}b{% elif [1] %}c{% else %}d{% endif %}", NULL, "c");
    RENDERS("{% for m in messages[1:] %}{{ m.role }}{{ loop.previtem is defined }} "
            "{% endfor %}",
            NULL, "userFalse assistantTrue userTrue ");
    RENDERS("{% for m in messages[::-1] %}{{ m.role[:1] }}{% endfor %}", NULL, "uaus");
    RENDERS("{% set a, b = 1, 2 %}{{ a }}{{ b }}{{ (a, b) }}", NULL, "12(1, 2)");
}

static void test_filters_and_methods(void)
{
    RENDERS("{{ '  hi  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ [1, 2] | length }}|"
            "{{ 'h\\u00e9llo' | length }}|{{ 'abc' | upper }}|{{ 'hello wORLD' | title }}|"
            "{{ 'hELLO' | capitalize }}|{{ 'ABC' | lower }}",
            NULL, "hi|hi|2|5|ABC|Hello World|Hello|abc");
    RENDERS("{{ {'a': [1, '\\u00e9', none, true, 1.5]} | tojson }}|{{ [1, {'b': 2}, []] | "
            "tojson(indent=2) }}|{{ 'q\"\\n<>&' | tojson }}",
            NULL,
            "{\"a\": [1, \"\xc3\xa9\", null, true, 1.5]}|[\n  1,\n  {\n    \"b\": 2\n  },\n  "
            "[]\n]|\"q\\\"\\n<>&\"");
    RENDERS("{{ x | default('d') }}{{ none | default('d') }}{{ '' | d('e', true) }}", NULL,
            "dNonee");
    RENDERS("{{ messages | map(attribute='role') | join(', ') }}|"
            "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | "
            "map('trim') | list }}|{{ messages | rejectattr('role', 'ne', 'system') | list | "
            "length }}",
            NULL, "system, user, assistant, user|['Hi \xc3\xa9', 'Bye']|1");
    RENDERS("{{ 'aXbX' | replace('X', '-') }}|{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}|"
            "{{ 'ab' | list }}|{{ 12 | string ~ '3' }}|{{ '42' | int + 1 }}{{ 'x' | int }}|"
            "{{ [1, 2] | reverse | list }}|{{ ['b', 'C', 'a'] | sort }}|{{ {'k': 'v'} | items | "
            "list }}",
            NULL, "a-b-|32|['a', 'b']|123|430|[2, 1]|['a', 'b', 'C']|[('k', 'v')]");
    RENDERS("{{ '  x  '.strip() }}|{{ '--x--'.lstrip('-') }}|{{ '--x--'.rstrip('-') }}|"
            "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'a b  c'.split() }}|"
            "{{ 'a,b,c'.split(',', 1) }}|{{ 'ab'.upper() }}|{{ {'a': 1}.get('b', 2) }}|"
            "{{ {'a': 1}.keys() | list }}{{ {'a': 1}.values() | list }}",
            NULL, "x|x--|--x|TrueTrue|['a', 'b', 'c']|['a', 'b,c']|AB|2|['a'][1]");
}

static void test_values_and_tests(void)
{
    RENDERS("{{ none }}|{{ true }}|{{ [1, 'a', none] }}|{{ {'a': 1} }}|{{ 1.0 }}|{{ 1e20 }}|"
            "{{ 0.1 }}|{{ nothing }}|{{ 10 / 4 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|"
            "{{ 'it''s' }}|{{ \"'\" ~ '\"' }}|{{ ['it\\'s'] }}",
            NULL,
            "None|True|[1, 'a', None]|{'a': 1}|1.0|1e+20|0.1||2.5|-4|2|1024|its|'\"|[\"it's\"]");
    RENDERS("{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 'a' is string }}"
            "{{ {} is mapping }}{{ [] is iterable }}{{ 1 is number }}{{ 'a' is sequence }}"
            "{{ true is true }}{{ false is false }}{{ 1 is not string }}{{ 3 is divisibleby 3 }}",
            NULL, "FalseTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrue");
    RENDERS("{{ 'b' in 'abc' }}{{ 2 not in [1, 2] }}{{ 'k' in {'k': 1} }}{{ 1 < 2 < 3 }}"
            "{{ 'a' if 0 else 'b' }}{{ 1 == 1.0 }}{{ true == 1 }}{{ not [] }}{{ 0 or 'x' }}"
            "{{ 1 and 2 }}",
            NULL, "TrueFalseTrueTruebTrueTrueTruex2");
    RENDERS("{{ messages[0]['content'] }}|{{ messages[-1].content }}|{{ messages[9] is defined "
            "}}|{{ messages[0].nope is defined }}|{{ bos_token }}{{ eos_token }}|"
            "{{ add_generation_prompt }}|{{ enable_thinking }}",
            "{\"enable_thinking\": false}", "Be brief.|Bye|False|False|<s></s>|True|False");
    RENDERS("{{ strftime_now('%Y-%m-%d') }}", NULL, "1971-01-01");
}

static void test_errors(void)
{
    FAILS("line1\n{% include 'x' %}", NULL, -EINVAL,
          "chat template line 2: unsupported tag 'include'");
    FAILS("{{ x | frobnicate }}", NULL, -EINVAL, "line 1: unsupported filter 'frobnicate'");
    FAILS("\n{% if x is frob %}{% endif %}", NULL, -EINVAL, "line 2: unsupported test 'frob'");
    FAILS("{{ x.frob() }}", NULL, -EINVAL, "unsupported method 'frob'");
    FAILS("{{ frob() }}", NULL, -EINVAL, "unsupported function 'frob'");
    FAILS("{% for x in y %}\n", NULL, -EINVAL, "missing 'endfor'");
    FAILS("{% break %}", NULL, -EINVAL, "'break' outside a for loop");
    FAILS("\n\n{{ 'open }}", NULL, -EINVAL, "line 3: unterminated string");
    FAILS("{% endif %}", NULL, -EINVAL, "unexpected 'endif'");
    FAILS("{% for x in y recursive %}{% endfor %}", NULL, -EINVAL, "recursive");
    FAILS("{{ 1 +* 2 }}", NULL, -EINVAL, "line 1: unexpected an operator");
    FAILS("{% raw %}x{% endraw %}", NULL, -EINVAL, "unsupported tag 'raw'");
    FAILS("\n\n{{ 1 + 'a' }}", NULL, -EINVAL,
          "chat template line 3: unsupported operand type(s) for +: 'int' and 'str'");
    FAILS("{{ raise_exception('boom ' ~ 1) }}", NULL, -EINVAL, "boom 1");
    FAILS("{{ 1 // 0 }}", NULL, -EINVAL, "division or modulo by zero");
    FAILS("{{ a.b }}", NULL, -EINVAL, "'a' is undefined");
    FAILS("{{ messages[0].nope.deeper }}", NULL, -EINVAL, "'nope' is undefined");
    FAILS("{{ x + 1 }}", NULL, -EINVAL, "'x' is undefined");
    FAILS("{% set x = 5 %}{% set x.y = 1 %}", NULL, -EINVAL, "non-namespace");
    FAILS("{{ 'abc' < 1 }}", NULL, -EINVAL, "not supported between");
    FAILS("{% for x in none %}{% endfor %}", NULL, -EINVAL, "not iterable");
    FAILS("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", NULL, -EINVAL, "too deep");
    /* raise_exception's message is given as it is: the server shows it to the client. */
    char err[128];
    int rc;
    char *out =
        render("{{ raise_exception('Roles must alternate') }}", NULL, &rc, err, sizeof(err));
    CHECK(out == NULL);
    CHECK_STR_EQ(err, "Roles must alternate");
}

/* A string of 2000 times the character c (in a buffer per call site). */
static const char *lots_of(char *buf, char c)
{
    memset(buf, c, 2000);
    buf[2000] = '\0';
    return buf;
}
#define LOTS_OF(c) lots_of((char[2001]){0}, c)

static void test_limits(void)
{
    char deep[2200];
    snprintf(deep, sizeof(deep), "{{ %.*s1%.*s }}", 1000, LOTS_OF('('), 1000, LOTS_OF(')'));
    FAILS(deep, NULL, -EINVAL, "line 1: expressions or blocks nested deeper than");
    snprintf(deep, sizeof(deep), "%.*s", 2000, LOTS_OF('-'));
    memcpy(deep, "{{ ", 3), memcpy(deep + 1000, "1 }}", 5);
    FAILS(deep, NULL, -EINVAL, "nested deeper than");
    FAILS("{% set ns = namespace(x=1) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}"
          "{% endfor %}{{ ns.x }}",
          NULL, -EINVAL, "cannot be printed");
    FAILS("{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
          "{% endfor %}",
          NULL, -ENOMEM, "MiB");
    FAILS("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", NULL,
          -ENOMEM, "MiB");
    /* The step budget: 1000 iterations of a loop take more than 500 steps. */
    tpl_t *t;
    char err[128], *out = NULL;
    size_t len;
    CHECK_INT_EQ(tpl_compile(&t, "{% for a in range(1000) %}{{ a }}{% endfor %}", err, sizeof(err)),
                 0);
    tpl_ctx_t ctx = {.max_steps = 500};
    CHECK_INT_EQ(tpl_render(t, &ctx, &out, &len, err, sizeof(err)), -ENOMEM);
    CHECK(out == NULL && strstr(err, "more than 500 steps"));
    ctx.max_steps = 0;
    CHECK_INT_EQ(tpl_render(t, &ctx, &out, &len, err, sizeof(err)), 0);
    CHECK_INT_EQ(len, 2890);
    free(out);
    /* The memory budget: the loop's frames and range's list need more than 16 KiB... */
    ctx.max_bytes = 16 << 10;
    CHECK_INT_EQ(tpl_render(t, &ctx, &out, &len, err, sizeof(err)), -ENOMEM);
    CHECK(out == NULL && strstr(err, "needs more than 16 KiB"));
    /* ...and less than 4 MiB. */
    ctx.max_bytes = 4 << 20;
    CHECK_INT_EQ(tpl_render(t, &ctx, &out, &len, err, sizeof(err)), 0);
    free(out);
    tpl_free(t);
}

typedef struct job {
    const tpl_t *t;
    json_t *msgs;
    char *out;
} job_t;

static void *render_job(void *arg)
{
    job_t *j = arg;
    tpl_ctx_t ctx = {.messages = j->msgs, .add_generation_prompt = 1, .bos_token = "<s>"};
    char err[128];
    size_t len;
    for (int i = 0; i < 50; i++) {
        free(j->out);
        if (tpl_render(j->t, &ctx, &j->out, &len, err, sizeof(err)) < 0)
            return NULL;
    }
    return NULL;
}

static void test_threads(void)
{
    const char *src =
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "<{{ m.role | upper }}>{{ m.content | trim }}{% endfor %}{{ ns.n }}";
    tpl_t *t;
    char err[128];
    CHECK_INT_EQ(tpl_compile(&t, src, err, sizeof(err)), 0);
    json_t *msgs = json_loads(MESSAGES, 0, NULL);
    job_t jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job_t){t, msgs, NULL};
        pthread_create(&th[i], NULL, render_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_STR_EQ(jobs[i].out, "<SYSTEM>Be brief.<USER>Hi \xc3\xa9<ASSISTANT>Hello!<USER>Bye4");
        free(jobs[i].out);
    }
    json_decref(msgs);
    tpl_free(t);
    tpl_free(NULL);
}

int main(void)
{
    setenv("TZ", "UTC", 1); /* strftime_now renders local time */
    tzset();
    test_whitespace();
    test_loops_and_scopes();
    test_filters_and_methods();
    test_values_and_tests();
    test_errors();
    test_limits();
    test_threads();
    if (check_failures()) {
        fprintf(stderr, "%d check(s) failed\n", check_failures());
        return 1;
    }
    printf("template unit tests passed\n");
    return 0;
}
