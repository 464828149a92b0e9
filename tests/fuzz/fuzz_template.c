/* fuzz_template.c - libFuzzer harness for the chat-template engine: the input is a template.
 *
 * It is compiled and, when that succeeds, rendered with a fixed conversation (a system
 * message, unicode, an empty turn, a tool call, content parts) and kwargs. Checks, beyond
 * "no crash, no leak, no undefined behaviour": every failure leaves one non-empty line in err
 * and a negative code, a success gives a NUL-terminated output, and a second render gives the
 * same bytes (a render does not change the template). The step and memory budgets are small
 * so that a slow template costs little. Built by tests/fuzz/meson.build with -Dfuzz=true (clang),
 * and linked with replay.c into a plain test that runs the corpus (the real chat templates).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "template/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *CONVERSATION =
    "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \" Hi \\u00e9 \\ud83e\\udd99\\n\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nhm\\n</think>\\n\\nHello!\","
    "  \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\","
    "   \"arguments\": {\"x\": 1, \"y\": [true, null, 2.5]}}}]},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"\"}]},"
    " {\"role\": \"tool\", \"content\": \"42\"}]";

static void check_error(int rc, const char *err)
{
    REQUIRE(rc < 0);
    REQUIRE(err[0] != '\0' && strchr(err, '\n') == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *src = malloc(size + 1);
    REQUIRE(src);
    memcpy(src, data, size);
    src[size] = '\0';
    tpl_t *t = NULL;
    char err[256];
    int rc = tpl_compile(&t, src, err, sizeof(err));
    free(src);
    if (rc < 0) {
        check_error(rc, err);
        REQUIRE(t == NULL);
        return 0;
    }
    json_t *msgs = json_loads(CONVERSATION, 0, NULL);
    json_t *kwargs = json_pack("{s:b, s:[{s:s}]}", "enable_thinking", 0, "tools", "name", "t");
    REQUIRE(msgs && kwargs);
    tpl_ctx_t ctx = {.messages = msgs,
                     .add_generation_prompt = 1,
                     .bos_token = "<s>",
                     .eos_token = "</s>",
                     .kwargs = kwargs,
                     .now = 1700000000,
                     .max_steps = 200000,
                     .max_bytes = 8 << 20};
    char *out = NULL, *out2 = NULL;
    size_t len = 0, len2 = 0;
    rc = tpl_render(t, &ctx, &out, &len, err, sizeof(err));
    if (rc < 0) {
        check_error(rc, err);
        REQUIRE(out == NULL);
    } else {
        REQUIRE(out && out[len] == '\0');
        REQUIRE(tpl_render(t, &ctx, &out2, &len2, err, sizeof(err)) == 0);
        REQUIRE(len2 == len && memcmp(out, out2, len) == 0);
    }
    free(out);
    free(out2);
    json_decref(msgs);
    json_decref(kwargs);
    tpl_free(t);
    return 0;
}
