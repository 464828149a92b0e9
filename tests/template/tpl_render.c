/* tpl_render.c - renders one template over many cases, for test_templates.py to compare
 * with Jinja2.
 *
 *   tpl_render TEMPLATE CASES.json OUT.json
 *
 * CASES.json is an array of {"messages", "add_generation_prompt", "bos_token", "eos_token",
 * "kwargs", "now"}; OUT.json gets one object per case: {"out": TEXT} or {"error": MESSAGE,
 * "code": N}. A template that does not compile prints its error and exits with 3. Each case
 * is rendered twice to check that a render leaves the template as it found it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "template/template.h"

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static json_t *render_case(const tpl_t *t, json_t *c, int *stable)
{
    json_t *bos = json_object_get(c, "bos_token"), *eos = json_object_get(c, "eos_token");
    tpl_ctx_t ctx = {
        .messages = json_object_get(c, "messages"),
        .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
        .bos_token = json_string_value(bos),
        .eos_token = json_string_value(eos),
        .kwargs = json_object_get(c, "kwargs"),
        .now = (time_t)json_integer_value(json_object_get(c, "now")),
    };
    char err[512], err2[512], *out = NULL, *out2 = NULL;
    size_t len = 0, len2 = 0;
    int rc = tpl_render(t, &ctx, &out, &len, err, sizeof(err));
    int rc2 = tpl_render(t, &ctx, &out2, &len2, err2, sizeof(err2));
    *stable =
        rc == rc2 && (rc < 0 ? strcmp(err, err2) == 0 : len == len2 && memcmp(out, out2, len) == 0);
    json_t *res = rc < 0 ? json_pack("{s:s, s:i}", "error", err, "code", rc)
                         : json_pack("{s:s%}", "out", out, len);
    free(out);
    free(out2);
    return res;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s TEMPLATE CASES.json OUT.json\n", argv[0]);
        return 2;
    }
    char *src = read_file(argv[1]);
    json_error_t jerr;
    json_t *cases = json_load_file(argv[2], 0, &jerr);
    if (!src || !json_is_array(cases)) {
        fprintf(stderr, "%s: cannot read %s or %s (%s)\n", argv[0], argv[1], argv[2], jerr.text);
        return 2;
    }
    tpl_t *t;
    char err[512];
    if (tpl_compile(&t, src, err, sizeof(err)) < 0) {
        printf("%s\n", err);
        free(src);
        json_decref(cases);
        return 3;
    }
    json_t *results = json_array();
    int unstable = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        int stable;
        json_array_append_new(results, render_case(t, json_array_get(cases, i), &stable));
        if (!stable) {
            fprintf(stderr, "case %zu: two renders differ\n", i);
            unstable++;
        }
    }
    int rc = json_dump_file(results, argv[3], JSON_COMPACT) == 0 && !unstable ? 0 : 1;
    json_decref(results);
    json_decref(cases);
    tpl_free(t);
    free(src);
    return rc;
}
