/* chat_template.c - finds, compiles and renders the served model's chat template (see
 * chat_template.h). The Jinja engine is template/; this file only knows where templates live
 * and how vLLM calls them.
 */
#include "server/chat_template.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "template/template.h"

#define MAX_TEMPLATE_BYTES (4 << 20)

struct chat_tpl {
    tpl_t *tpl;     /* owned */
    char *bos;      /* owned or NULL */
    char *eos;      /* owned or NULL */
    char *source;   /* owned: where the template came from */
    int32_t end_id; /* eos_token's id when it is a single token but not end-of-text, or -1 */
};

void chat_tpl_free(chat_tpl_t *t)
{
    if (!t)
        return;
    tpl_free(t->tpl);
    free(t->bos);
    free(t->eos);
    free(t->source);
    free(t);
}

int32_t chat_tpl_end_id(const chat_tpl_t *t)
{
    return t ? t->end_id : -1;
}

const char *chat_tpl_source(const chat_tpl_t *t)
{
    return t ? t->source : "";
}

/* Reads a whole file; -ENOENT when it does not exist. */
static int read_file(const char *path, char **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int rc = -errno;
        if (rc != -ENOENT)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
        return rc;
    }
    char *buf = malloc(MAX_TEMPLATE_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_TEMPLATE_BYTES + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    if (bad || n > MAX_TEMPLATE_BYTES) {
        free(buf);
        snprintf(err, errlen, "%s: %s", path,
                 bad ? "read error" : "larger than 4 MiB, too large for a chat template");
        return bad ? -EIO : -EFBIG;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* A special token in tokenizer_config.json: "text" or {"content": "text", ...}. */
static char *token_text(json_t *v)
{
    if (json_is_object(v))
        v = json_object_get(v, "content");
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

/* tokenizer_config.json's template (malloc'd, or NULL for none) and special tokens. */
static int from_config(chat_tpl_t *t, const char *dir, char **src, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    *src = NULL;
    json_error_t jerr;
    /* DECODE_INT_AS_REAL: model_max_length is often 1e30 written as an integer. */
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (!root) {
        struct stat st;
        if (stat(path, &st) != 0)
            return 0; /* no config: GPT-2's files */
        snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
        return -EINVAL;
    }
    int rc = 0;
    t->bos = token_text(json_object_get(root, "bos_token"));
    t->eos = token_text(json_object_get(root, "eos_token"));
    json_t *ct = json_object_get(root, "chat_template");
    if (json_is_string(ct)) {
        *src = strdup(json_string_value(ct));
    } else if (json_is_array(ct)) {
        size_t i;
        json_t *item;
        json_array_foreach(ct, i, item)
        {
            json_t *name = json_object_get(item, "name");
            json_t *text = json_object_get(item, "template");
            if (!json_is_string(name) || !json_is_string(text)) {
                snprintf(err, errlen,
                         "%s: chat_template[%zu] must be an object with string 'name' and "
                         "'template'",
                         path, i);
                rc = -EINVAL;
                break;
            }
            if (strcmp(json_string_value(name), "default") == 0)
                *src = strdup(json_string_value(text));
        }
        if (rc == 0 && !*src) {
            snprintf(err, errlen, "%s: chat_template lists named templates but none is 'default'",
                     path);
            rc = -EINVAL;
        }
    } else if (ct && !json_is_null(ct)) {
        snprintf(err, errlen, "%s: chat_template must be a string or a list of named templates",
                 path);
        rc = -EINVAL;
    }
    if (rc == 0 && (json_is_string(ct) || json_is_array(ct)) && !*src) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -ENOMEM;
    }
    json_decref(root);
    return rc;
}

/* --chat-template: a file's contents, or the value itself when it is no file's name. As
 * vLLM, a value that looks like a path (no braces, one line) but names no file is an error,
 * not a template that prints the path. */
static int from_given(chat_tpl_t *t, const char *given, char **src, char *err, size_t errlen)
{
    int rc = read_file(given, src, err, errlen);
    if (rc == 0) {
        size_t n = strlen(given) + 32;
        if ((t->source = malloc(n)))
            snprintf(t->source, n, "--chat-template %s", given);
        return t->source ? 0 : -ENOMEM;
    }
    if (rc != -ENOENT && rc != -ENAMETOOLONG)
        return rc;
    if (!strchr(given, '{') && !strchr(given, '\n')) {
        snprintf(err, errlen,
                 "--chat-template: '%.200s' is no file and does not look like a template "
                 "(it has no '{')",
                 given);
        return -ENOENT;
    }
    *src = strdup(given);
    t->source = strdup("--chat-template (text)");
    return *src && t->source ? 0 : -ENOMEM;
}

int chat_tpl_load(chat_tpl_t **out, const char *dir, const char *given, const tok_t *tok, char *err,
                  size_t errlen)
{
    *out = NULL;
    chat_tpl_t *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    char *src = NULL, *cfg_src = NULL;
    int rc = from_config(t, dir, &cfg_src, err, errlen);
    if (rc)
        goto fail;
    char path[4096];
    snprintf(path, sizeof(path), "%s/chat_template.jinja", dir);
    if (given) {
        rc = from_given(t, given, &src, err, errlen);
    } else if ((rc = read_file(path, &src, err, errlen)) == 0) {
        t->source = strdup(path);
    } else if (rc == -ENOENT && cfg_src) {
        rc = 0;
        src = cfg_src;
        cfg_src = NULL;
        snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
        t->source = strdup(path);
    } else if (rc == -ENOENT) { /* no template anywhere */
        chat_tpl_free(t);
        return 0;
    }
    if (rc)
        goto fail;
    if (!t->source) {
        rc = -ENOMEM;
        goto fail;
    }
    /* Without tokenizer_config.json (GPT-2's files) both are the end-of-text token, as
     * transformers' GPT-2 tokenizer has them. */
    size_t n = 0;
    const char *eot = tok_token_bytes(tok, tok_eos_id(tok), &n);
    if (!t->bos && eot && !(t->bos = strndup(eot, n)))
        rc = -ENOMEM;
    if (!t->eos && eot && !(t->eos = strndup(eot, n)))
        rc = -ENOMEM;
    if (rc)
        goto fail;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    t->end_id = -1;
    if (t->eos && tok_encode(tok, t->eos, strlen(t->eos), &ids, &n_ids)) {
        rc = -ENOMEM;
        goto fail;
    }
    if (n_ids == 1 && ids[0] != tok_eos_id(tok))
        t->end_id = ids[0];
    free(ids);
    char msg[400];
    rc = tpl_compile(&t->tpl, src, msg, sizeof(msg));
    if (rc) {
        snprintf(err, errlen, "%s: %s", t->source, msg);
        goto fail;
    }
    free(src);
    free(cfg_src);
    *out = t;
    return 0;
fail:
    if (rc == -ENOMEM && !err[0])
        snprintf(err, errlen, "chat template: out of memory");
    free(src);
    free(cfg_src);
    chat_tpl_free(t);
    return rc;
}

/* continue_final_message: the text ends where the final message's content (stripped of
 * surrounding whitespace) last appears, as transformers cuts it. */
static int cut_after_final(const api_chat_t *c, char *text, size_t *len, api_error_t *e)
{
    json_t *last = json_array_get(c->messages, json_array_size(c->messages) - 1);
    json_t *content = json_object_get(last, "content");
    const char *s = json_string_value(content);
    size_t n = json_string_length(content);
    while (n > 0 && strchr(" \t\n\r\f\v", s[0]))
        s++, n--;
    while (n > 0 && strchr(" \t\n\r\f\v", s[n - 1]))
        n--;
    if (n == 0)
        return 0;
    for (size_t i = *len >= n ? *len - n + 1 : 0; i-- > 0;) {
        if (memcmp(text + i, s, n) == 0) {
            *len = i + n;
            text[*len] = '\0';
            return 0;
        }
    }
    return api_error_set(e, 400, "invalid_request_error", NULL, "continue_final_message",
                         "'continue_final_message' is set but the final message does not "
                         "appear in the chat after applying the chat template");
}

int chat_tpl_render(const chat_tpl_t *t, const api_chat_t *c, char **text, size_t *len,
                    api_error_t *e)
{
    *text = NULL;
    *len = 0;
    if (!t)
        return api_error_set(e, 400, "invalid_request_error", NULL, "messages",
                             "this model has no chat template (neither tokenizer_config.json's "
                             "chat_template nor chat_template.jinja), so it cannot answer chat "
                             "requests; start the server with --chat-template FILE|STRING to "
                             "give one, or use /v1/completions");
    tpl_ctx_t ctx = {
        .messages = c->messages,
        .add_generation_prompt = c->add_generation_prompt,
        .bos_token = t->bos,
        .eos_token = t->eos,
        .kwargs = c->kwargs,
        .now = 0,
    };
    char msg[400];
    int rc = tpl_render(t->tpl, &ctx, text, len, msg, sizeof(msg));
    if (rc)
        return api_error_set(e, 400, "invalid_request_error", NULL, "messages",
                             "the chat template failed: %s", msg);
    if (c->continue_final_message && cut_after_final(c, *text, len, e)) {
        free(*text);
        *text = NULL;
        return -1;
    }
    return 0;
}
