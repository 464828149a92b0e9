/* template.h - chat templates: the subset of Jinja2 that real chat templates use, rendered
 * byte for byte as Hugging Face transformers renders them (Jinja2's sandbox with trim_blocks,
 * lstrip_blocks and the loop controls; tojson without ASCII escaping; raise_exception and
 * strftime_now as globals).
 *
 * A template is compiled once (tpl_compile) and is immutable afterwards: any number of
 * threads may render it at once, each render keeps all its state in its own memory. A
 * construct the engine lacks (an unknown tag, filter, test, method or function) fails at
 * compile time, not at the first render.
 */
#ifndef NANO_VLLM_TEMPLATE_H
#define NANO_VLLM_TEMPLATE_H

#include <stddef.h>
#include <time.h>

struct json_t; /* jansson's value type; this header does not include jansson.h */

typedef struct tpl tpl_t;

/* What a render sees. The variables are, from lowest to highest precedence: bos_token and
 * eos_token (when not NULL), the members of kwargs (a JSON object, e.g. a request's
 * chat_template_kwargs such as {"enable_thinking": false}; NULL for none), then messages
 * and add_generation_prompt. JSON values are borrowed for the duration of the call. */
typedef struct tpl_ctx {
    const struct json_t *messages; /* a JSON array of message objects (borrowed) */
    int add_generation_prompt;
    const char *bos_token; /* NULL: undefined in the template */
    const char *eos_token;
    const struct json_t *kwargs; /* a JSON object or NULL (borrowed) */
    time_t now;                  /* strftime_now's local time; 0 means time(NULL) */
} tpl_ctx_t;

/* Compiles the template source src (NUL-terminated UTF-8). On success returns 0 and *out is
 * owned by the caller (tpl_free). On failure returns -EINVAL (or -ENOMEM), leaves *out NULL
 * and writes one line into err naming the template line and the problem, e.g.
 * "chat template line 3: unsupported tag 'include'". Any thread. */
int tpl_compile(tpl_t **out, const char *src, char *err, size_t errlen);
/* Frees t; NULL is fine. No render of t may be running. */
void tpl_free(tpl_t *t);

/* Renders t with ctx. On success returns 0 and *out is a malloc'd NUL-terminated string
 * owned by the caller (free()), *outlen its length (it may hold NUL bytes that came from the
 * messages). On failure *out is NULL and one line is written into err: -EINVAL for an error
 * of the template or its input, where err is the template's own message for
 * raise_exception(msg) and "chat template line N: ..." otherwise (a type error, an undefined
 * value where one is not allowed); -ENOMEM when memory runs out or the render passes its
 * limits (64 MiB of memory, 50 million evaluation steps). Thread-safe: t is only read. */
int tpl_render(const tpl_t *t, const tpl_ctx_t *ctx, char **out, size_t *outlen, char *err,
               size_t errlen);

#endif
