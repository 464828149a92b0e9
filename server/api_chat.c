/* api_chat.c - parses and validates OpenAI chat completions requests and vLLM's /tokenize
 * body with messages.
 *
 * The sampling and stopping fields are the completions ones (api_params_field); this file
 * adds messages and the chat-only fields. What OpenAI's chat API has and we do not (tools,
 * structured output, images, audio) is a 400 that names the field, never silently ignored.
 * The parser is pure (see api_chat.h).
 */
#include "server/api_chat.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INVALID "invalid_request_error"

static int bad(api_error_t *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(api_error_t *e, const char *param, const char *fmt, ...)
{
    e->status = 400;
    e->type = INVALID;
    e->code = NULL;
    snprintf(e->param, sizeof(e->param), "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(api_error_t *e)
{
    return api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* "content" as a string; a list of text parts is joined with "\n", as vLLM joins them for
 * templates that take a string. Returns a new reference or NULL with *e. */
static json_t *content_text(json_t *v, size_t i, api_error_t *e)
{
    char name[64];
    snprintf(name, sizeof(name), "messages[%zu].content", i);
    if (json_is_string(v))
        return json_incref(v);
    if (!json_is_array(v)) {
        bad(e, name, "'%s' must be a string or a list of {\"type\": \"text\", \"text\": ...} parts",
            name);
        return NULL;
    }
    size_t total = 0, n = json_array_size(v);
    for (size_t k = 0; k < n; k++) {
        json_t *part = json_array_get(v, k);
        char pname[112];
        snprintf(pname, sizeof(pname), "%s[%zu]", name, k);
        json_t *type = json_object_get(part, "type");
        if (!json_is_object(part) || !json_is_string(type)) {
            bad(e, pname, "'%s' must be an object with a string 'type'", pname);
            return NULL;
        }
        const char *t = json_string_value(type);
        if (strcmp(t, "text") != 0) {
            int media = strcmp(t, "image_url") == 0 || strcmp(t, "input_audio") == 0 ||
                        strcmp(t, "audio_url") == 0 || strcmp(t, "video_url") == 0 ||
                        strcmp(t, "image") == 0 || strcmp(t, "file") == 0;
            bad(e, pname,
                media ? "'%s' is a '%.40s' part: this model takes text only"
                      : "'%s' has an unknown type '%.40s'; only 'text' parts are "
                        "supported",
                pname, t);
            return NULL;
        }
        const char *key;
        json_t *val;
        json_object_foreach(part, key, val)
        {
            if (strcmp(key, "type") != 0 && strcmp(key, "text") != 0) {
                bad(e, pname, "unknown field '%s.%.40s'", pname, key);
                return NULL;
            }
        }
        json_t *text = json_object_get(part, "text");
        if (!json_is_string(text)) {
            bad(e, pname, "'%s.text' must be a string", pname);
            return NULL;
        }
        total += json_string_length(text) + 1;
    }
    char *buf = malloc(total + 1), *o = buf;
    if (!buf) {
        oom(e);
        return NULL;
    }
    for (size_t k = 0; k < n; k++) {
        json_t *text = json_object_get(json_array_get(v, k), "text");
        if (k > 0)
            *o++ = '\n';
        memcpy(o, json_string_value(text), json_string_length(text));
        o += json_string_length(text);
    }
    json_t *s = json_stringn_nocheck(buf, (size_t)(o - buf));
    free(buf);
    if (!s)
        oom(e);
    return s;
}

/* One message: {role, content, name?}, checked and copied into the normalised form the
 * template sees. */
static json_t *parse_message(json_t *m, size_t i, api_error_t *e)
{
    char name[48];
    snprintf(name, sizeof(name), "messages[%zu]", i);
    if (!json_is_object(m)) {
        bad(e, name, "'%s' must be an object with 'role' and 'content'", name);
        return NULL;
    }
    json_t *role = json_object_get(m, "role");
    if (!json_is_string(role)) {
        bad(e, name, "'%s.role' must be a string", name);
        return NULL;
    }
    const char *r = json_string_value(role);
    if (strcmp(r, "tool") == 0 || strcmp(r, "function") == 0) {
        bad(e, name, "'%s.role' '%s' is not supported: tool calling is not implemented", name, r);
        return NULL;
    }
    if (strcmp(r, "system") != 0 && strcmp(r, "developer") != 0 && strcmp(r, "user") != 0 &&
        strcmp(r, "assistant") != 0) {
        bad(e, name, "'%s.role' '%.40s' is not one of system, developer, user, assistant", name, r);
        return NULL;
    }
    const char *key;
    json_t *val;
    json_object_foreach(m, key, val)
    {
        if (strcmp(key, "role") == 0 || strcmp(key, "content") == 0)
            continue;
        if (strcmp(key, "name") == 0) {
            if (!json_is_string(val)) {
                bad(e, name, "'%s.name' must be a string", name);
                return NULL;
            }
            continue;
        }
        if (strcmp(key, "tool_calls") == 0 || strcmp(key, "function_call") == 0 ||
            strcmp(key, "tool_call_id") == 0) {
            if (json_is_null(val) || (json_is_array(val) && json_array_size(val) == 0))
                continue;
            bad(e, name, "'%s.%s' is not supported: tool calling is not implemented", name, key);
            return NULL;
        }
        if (strcmp(key, "refusal") == 0 && json_is_null(val))
            continue;
        bad(e, name, "unknown field '%s.%.40s'", name, key);
        return NULL;
    }
    json_t *content = json_object_get(m, "content");
    if (!content) {
        bad(e, name, "'%s.content' is missing", name);
        return NULL;
    }
    json_t *text = content_text(content, i, e);
    if (!text)
        return NULL;
    json_t *out = json_pack("{s:O, s:o}", "role", role, "content", text);
    json_t *nm = json_object_get(m, "name");
    if (out && nm)
        json_object_set(out, "name", nm);
    if (!out)
        oom(e);
    return out;
}

static int parse_messages(json_t *v, api_chat_t *c, api_error_t *e)
{
    if (!json_is_array(v))
        return bad(e, "messages", "'messages' must be a list of message objects");
    size_t n = json_array_size(v);
    if (n == 0)
        return bad(e, "messages", "'messages' must hold at least one message");
    if (n > API_MAX_MESSAGES)
        return bad(e, "messages", "'messages' has %zu messages; at most %d are allowed", n,
                   API_MAX_MESSAGES);
    if (!(c->messages = json_array()))
        return oom(e);
    for (size_t i = 0; i < n; i++) {
        json_t *m = parse_message(json_array_get(v, i), i, e);
        if (!m)
            return -1;
        json_array_append_new(c->messages, m);
    }
    return 0;
}

static int get_bool(json_t *v, const char *name, int *out, api_error_t *e)
{
    if (!json_is_boolean(v))
        return bad(e, name, "'%s' must be a boolean", name);
    *out = json_is_true(v);
    return 0;
}

static int parse_kwargs(json_t *v, api_chat_t *c, api_error_t *e)
{
    if (!json_is_object(v))
        return bad(e, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
    c->kwargs = json_incref(v);
    return 0;
}

/* A field both chat bodies (completions and /tokenize) have. 1 when key is not one. */
static int common_field(const char *key, json_t *v, api_chat_t *c, api_error_t *e)
{
    if (strcmp(key, "messages") == 0)
        return parse_messages(v, c, e);
    if (strcmp(key, "add_generation_prompt") == 0)
        return get_bool(v, key, &c->add_generation_prompt, e);
    if (strcmp(key, "continue_final_message") == 0)
        return get_bool(v, key, &c->continue_final_message, e);
    if (strcmp(key, "add_special_tokens") == 0)
        return get_bool(v, key, &c->add_special_tokens, e);
    if (strcmp(key, "chat_template_kwargs") == 0)
        return parse_kwargs(v, c, e);
    if (strcmp(key, "chat_template") == 0 || strcmp(key, "documents") == 0 ||
        strcmp(key, "mm_processor_kwargs") == 0)
        return bad(e, key, "'%s' is not supported; the server's chat template is used", key);
    return 1;
}

static int parse_response_format(json_t *v, api_error_t *e)
{
    json_t *t = json_object_get(v, "type");
    if (!json_is_object(v) || !json_is_string(t))
        return bad(e, "response_format", "'response_format' must be an object with a 'type'");
    if (strcmp(json_string_value(t), "text") != 0)
        return bad(e, "response_format",
                   "'response_format' of type '%.40s' is not supported: only 'text'",
                   json_string_value(t));
    if (json_object_size(v) != 1)
        return bad(e, "response_format",
                   "'response_format' {\"type\": \"text\"} takes no other "
                   "field");
    return 0;
}

/* A chat-only field of a completions request; 1 when key is a shared one. */
static int chat_field(const char *key, json_t *v, api_chat_t *c, int *logprobs, long long *top,
                      api_error_t *e)
{
    int rc = common_field(key, v, c, e);
    if (rc <= 0)
        return rc;
    if (strcmp(key, "max_tokens") == 0 || strcmp(key, "max_completion_tokens") == 0) {
        double d = json_number_value(v);
        if (!json_is_number(v) || d != floor(d) || d < 1 || d > INT32_MAX)
            return bad(e, key, "'%s' must be an integer between 1 and %d", key, INT32_MAX);
        /* The same limit under two names; the newer one wins when both are given. */
        int newer = strcmp(key, "max_completion_tokens") == 0;
        if (newer || c->max_tokens_set != 2)
            c->p.max_tokens = (int)d;
        if (newer || !c->max_tokens_set)
            c->max_tokens_set = newer ? 2 : 1;
        return 0;
    }
    if (strcmp(key, "logprobs") == 0)
        return get_bool(v, key, logprobs, e);
    if (strcmp(key, "top_logprobs") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > ENG_MAX_LOGPROBS)
            return bad(e, key, "'top_logprobs' must be an integer between 0 and %d",
                       ENG_MAX_LOGPROBS);
        *top = json_integer_value(v);
        return 0;
    }
    if (strcmp(key, "response_format") == 0)
        return parse_response_format(v, e);
    if (strcmp(key, "tools") == 0 || strcmp(key, "functions") == 0) {
        if (json_is_array(v) && json_array_size(v) == 0)
            return 0;
        return bad(e, key, "'%s' is not supported: tool calling is not implemented", key);
    }
    if (strcmp(key, "tool_choice") == 0 || strcmp(key, "function_call") == 0) {
        if (json_is_string(v) && strcmp(json_string_value(v), "none") == 0)
            return 0;
        return bad(e, key, "'%s' is not supported: tool calling is not implemented", key);
    }
    if (strcmp(key, "parallel_tool_calls") == 0)
        return json_is_boolean(v) ? 0 : bad(e, key, "'%s' must be a boolean", key);
    if (strcmp(key, "prompt") == 0 || strcmp(key, "echo") == 0 || strcmp(key, "suffix") == 0 ||
        strcmp(key, "best_of") == 0)
        return bad(e, key, "unknown field '%s' (a completions field; chat takes 'messages')", key);
    return 1;
}

static void chat_init(api_chat_t *c)
{
    memset(c, 0, sizeof(*c));
    api_params_init(&c->p);
    c->add_generation_prompt = 1;
}

/* The rules between fields, once all are read. */
static int check_chat(api_chat_t *c, const api_limits_t *lim, api_error_t *e)
{
    if (!c->messages)
        return bad(e, "messages", "'messages' is required");
    if (c->p.model && lim->model_name && strcmp(c->p.model, lim->model_name) != 0)
        return api_error_set(e, 404, INVALID, "model_not_found", "model",
                             "The model '%.200s' does not exist; this server serves '%.200s'",
                             c->p.model, lim->model_name);
    if (c->continue_final_message && c->add_generation_prompt)
        return bad(e, "continue_final_message",
                   "'continue_final_message' and 'add_generation_prompt' cannot both be true "
                   "(set add_generation_prompt to false)");
    if (c->continue_final_message) {
        json_t *last = json_array_get(c->messages, json_array_size(c->messages) - 1);
        if (strcmp(json_string_value(json_object_get(last, "role")), "assistant") != 0)
            return bad(e, "continue_final_message",
                       "'continue_final_message' needs the last message to be the assistant's");
    }
    return 0;
}

int api_chat_parse(const char *body, size_t len, const api_limits_t *lim, api_chat_t *c,
                   api_error_t *e)
{
    chat_init(c);
    api_params_defaults(&c->p, lim->defaults);
    json_t *root;
    if (api_json_object(body, len, &root, e))
        return -1;
    int rc = -1, logprobs = 0;
    long long top = -1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (json_is_null(v))
            continue; /* null is the default, as in OpenAI's API */
        int r = chat_field(key, v, c, &logprobs, &top, e);
        if (r < 0 || (r > 0 && api_params_field(key, v, lim, &c->p, e)))
            goto out;
    }
    if (check_chat(c, lim, e))
        goto out;
    if (top >= 0 && !logprobs) {
        bad(e, "top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
        goto out;
    }
    c->p.logprobs = logprobs ? (top >= 0 ? (int)top : 0) : -1;
    if (c->p.include_usage && !c->p.stream) {
        bad(e, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc)
        api_chat_free(c);
    return rc;
}

int api_chat_tokenize_parse(const char *body, size_t len, const api_limits_t *lim, api_chat_t *c,
                            api_error_t *e)
{
    json_t *root;
    if (api_json_object(body, len, &root, e))
        return -1;
    if (!json_object_get(root, "messages")) {
        json_decref(root);
        return 1;
    }
    chat_init(c);
    int rc = -1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (json_is_null(v))
            continue;
        int r = common_field(key, v, c, e);
        if (r < 0)
            goto out;
        if (r > 0 && strcmp(key, "model") == 0) {
            if (api_params_field(key, v, lim, &c->p, e))
                goto out;
        } else if (r > 0) {
            bad(e, key, "unknown field '%.40s'", key);
            goto out;
        }
    }
    rc = check_chat(c, lim, e);
out:
    json_decref(root);
    if (rc)
        api_chat_free(c);
    return rc;
}

void api_chat_free(api_chat_t *c)
{
    if (!c)
        return;
    api_params_free(&c->p);
    json_decref(c->messages);
    json_decref(c->kwargs);
    c->messages = NULL;
    c->kwargs = NULL;
}
