/* routes.c - the HTTP API's endpoints other than completions, and the router.
 *
 * Every answer is JSON, except the playground page at / (HTML, unless --no-ui); every error is
 * OpenAI's error object. The API key guards every endpoint except /health, /metrics (probes and
 * scrapers carry no key) and the page, which holds nothing about the model: it asks for the key
 * and shows the model only once /v1/models accepts it. Loop thread only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/api.h"
#include "server/srv.h"
#include "server/ui/ui.h"

void srv_reply_json(http_req_t *r, int status, const char *json, size_t len)
{
    http_reply(r, status, "application/json", json, len, NULL);
}

void srv_reply_error(http_req_t *r, const api_error_t *e, const char *const *headers)
{
    char *body = api_error_json(e);
    static const char fallback[] =
        "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
        "\"code\":null}}";
    if (body)
        http_reply(r, e->status, "application/json", body, strlen(body), headers);
    else
        http_reply(r, 500, "application/json", fallback, sizeof(fallback) - 1, headers);
    free(body);
}

static void reply_obj(http_req_t *r, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) {
        api_error_t e;
        api_error_set(&e, 500, "server_error", NULL, NULL, "could not build the response");
        srv_reply_error(r, &e, NULL);
        return;
    }
    srv_reply_json(r, status, s, strlen(s));
    free(s);
}

int srv_busy(srv_t *s, http_req_t *r)
{
    if (s->ready && !s->draining)
        return 0;
    api_error_t e;
    static const char *const retry[] = {"Retry-After", "1", NULL};
    api_error_set(&e, 503, "service_unavailable", NULL, NULL,
                  s->draining ? "the server is shutting down" : "the model is loading");
    srv_reply_error(r, &e, retry);
    return 1;
}

static void get_health(srv_t *s, http_req_t *r)
{
    if (!srv_busy(s, r))
        http_reply(r, 200, "application/json", "{}", 2, NULL);
}

static void get_version(srv_t *s, http_req_t *r)
{
    (void)s;
    reply_obj(r, 200, json_pack("{s:s}", "version", NANO_VLLM_VERSION));
}

/* vLLM's model card, plus "capabilities" (as Ollama names them): "completion" always, "chat"
 * when the model has a chat template. The playground offers its chat mode by it. */
static json_t *model_obj(srv_t *s)
{
    json_t *caps = json_pack("[s]", "completion");
    if (caps && s->chat_template)
        json_array_append_new(caps, json_string("chat"));
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i, s:o}", "id", s->model_name, "object",
                     "model", "created", (json_int_t)s->started, "owned_by", "nano-vllm", "root",
                     s->cfg.model_dir ? s->cfg.model_dir : "", "parent", "max_model_len",
                     s->ready ? s->info.max_model_len : s->cfg.max_model_len, "capabilities", caps);
}

static void get_models(srv_t *s, http_req_t *r)
{
    reply_obj(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_obj(s)));
}

static void get_model(srv_t *s, http_req_t *r, const char *name)
{
    if (strcmp(name, s->model_name) == 0) {
        reply_obj(r, 200, model_obj(s));
        return;
    }
    api_error_t e;
    api_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                  "The model '%.200s' does not exist", name);
    srv_reply_error(r, &e, NULL);
}

static void get_metrics(srv_t *s, http_req_t *r)
{
    eng_stats_t st;
    if (s->eng)
        eng_get_stats(s->eng, &st);
    size_t len;
    char *text = metrics_render(&s->metrics, s->eng ? &st : NULL, s->ready ? &s->info : NULL,
                                &len);
    if (!text) {
        api_error_t e;
        api_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        srv_reply_error(r, &e, NULL);
        return;
    }
    http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
    free(text);
}

/* The playground: a static page, so the headers a static page should have. No ETag: MHD 0.9.75
 * writes "Content-Length: 0" on a 304, which RFC 9110 forbids, and the page is small; no-cache
 * makes a browser fetch it again, so a new binary's page is seen at once. */
static void get_ui(srv_t *s, http_req_t *r)
{
    (void)s;
    /* clang-format off */
    static const char *const headers[] = {
        "Content-Security-Policy", ui_csp,
        "X-Content-Type-Options", "nosniff",
        "Referrer-Policy", "no-referrer",
        "X-Frame-Options", "DENY",
        "Cross-Origin-Opener-Policy", "same-origin",
        "Cache-Control", "no-cache",
        NULL};
    /* clang-format on */
    http_reply(r, 200, "text/html; charset=utf-8", (const char *)ui_page, ui_page_len, headers);
}

static void post_tokenize(srv_t *s, http_req_t *r)
{
    if (srv_busy(s, r) || srv_tokenize_chat(s, r) == 0)
        return;
    api_error_t e;
    api_limits_t lim = {s->model_name, s->info.vocab_size, NULL};
    size_t len, tlen, n = 0;
    const char *body = http_req_body(r, &len);
    char *text = NULL;
    int32_t *ids = NULL;
    if (api_tokenize_parse(body, len, &lim, &text, &tlen, &e)) {
        srv_reply_error(r, &e, NULL);
        return;
    }
    if (tok_encode(s->tok, text, tlen, &ids, &n)) {
        free(text);
        api_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        srv_reply_error(r, &e, NULL);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    reply_obj(r, 200,
              json_pack("{s:I, s:i, s:o}", "count", (json_int_t)n, "max_model_len",
                        s->info.max_model_len, "tokens", arr));
    free(text);
    free(ids);
}

static void post_detokenize(srv_t *s, http_req_t *r)
{
    if (srv_busy(s, r))
        return;
    api_error_t e;
    api_limits_t lim = {s->model_name, s->info.vocab_size, NULL};
    size_t len, tlen, flen;
    const char *body = http_req_body(r, &len);
    int32_t *ids = NULL;
    int n = 0;
    char *text = NULL;
    if (api_detokenize_parse(body, len, &lim, &ids, &n, &e)) {
        srv_reply_error(r, &e, NULL);
        return;
    }
    if (tok_decode(s->tok, ids, (size_t)n, &text, &tlen)) {
        free(ids);
        api_error_set(&e, 400, "invalid_request_error", NULL, "tokens",
                      "'tokens' holds an id the tokenizer does not know");
        srv_reply_error(r, &e, NULL);
        return;
    }
    char *fixed = api_utf8_fix(text, tlen, &flen);
    reply_obj(r, 200, fixed ? json_pack("{s:s%}", "prompt", fixed, flen) : NULL);
    free(fixed);
    free(text);
    free(ids);
}

static void post_completions(srv_t *s, http_req_t *r)
{
    srv_completions(s, r);
}

static void post_chat_completions(srv_t *s, http_req_t *r)
{
    srv_chat_completions(s, r);
}

typedef struct route {
    const char *path;
    const char *method; /* GET routes also answer HEAD */
    int open;           /* needs no API key */
    void (*fn)(srv_t *s, http_req_t *r);
} route_t;

static const route_t routes[] = {
    {"/", "GET", 1, get_ui},
    {"/index.html", "GET", 1, get_ui},
    {"/health", "GET", 1, get_health},
    {"/metrics", "GET", 1, get_metrics},
    {"/version", "GET", 0, get_version},
    {"/v1/models", "GET", 0, get_models},
    {"/v1/completions", "POST", 0, post_completions},
    {"/v1/chat/completions", "POST", 0, post_chat_completions},
    {"/tokenize", "POST", 0, post_tokenize},
    {"/detokenize", "POST", 0, post_detokenize},
};

/* 1 when the request says its body is JSON: media type application/json in any case, with
 * or without parameters ("application/json; charset=utf-8"). As in vLLM, a body sent as
 * anything else (curl -d's form encoding, text/plain, no Content-Type) is a 415. */
static int json_content_type(http_req_t *r)
{
    const char *ct = http_req_header(r, "Content-Type");
    static const char want[] = "application/json";
    if (!ct)
        return 0;
    ct += strspn(ct, " \t");
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
        return 0;
    ct += sizeof(want) - 1;
    ct += strspn(ct, " \t");
    return *ct == '\0' || *ct == ';';
}

void srv_route(void *app, http_req_t *r)
{
    srv_t *s = app;
    const char *path = http_req_path(r);
    const char *method = http_req_method(r);
    api_error_t e;
    const route_t *found = NULL;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (strcmp(path, routes[i].path) == 0)
            found = &routes[i];
    if (found && found->fn == get_ui && s->cfg.no_ui)
        found = NULL; /* as any unknown path */
    int model_path = strncmp(path, "/v1/models/", 11) == 0 && path[11];

    if (!(found && found->open) && !http_req_authorized(r)) {
        static const char *const www[] = {"WWW-Authenticate", "Bearer", NULL};
        api_error_set(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
                      "missing or incorrect API key: send 'Authorization: Bearer <key>'");
        srv_reply_error(r, &e, www);
        return;
    }
    if (!found && !model_path) {
        api_error_set(&e, 404, "invalid_request_error", "not_found", NULL,
                      "no such endpoint: %.200s", path);
        srv_reply_error(r, &e, NULL);
        return;
    }
    const char *want = found ? found->method : "GET";
    int ok = strcmp(method, want) == 0 || (strcmp(want, "GET") == 0 && strcmp(method, "HEAD") == 0);
    if (!ok) {
        const char *const allow[] = {"Allow", strcmp(want, "GET") == 0 ? "GET, HEAD" : want, NULL};
        api_error_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL,
                      "%.16s is not allowed on %.200s; use %s", method, path, want);
        srv_reply_error(r, &e, allow);
        return;
    }
    if (found && strcmp(want, "POST") == 0 && !json_content_type(r)) {
        const char *ct = http_req_header(r, "Content-Type");
        api_error_set(&e, 415, "invalid_request_error", "unsupported_media_type", NULL,
                      "Content-Type %s%.100s%s is not supported: send 'application/json'",
                      ct ? "'" : "", ct ? ct : "(none)", ct ? "'" : "");
        srv_reply_error(r, &e, NULL);
        return;
    }
    if (found)
        found->fn(s, r);
    else
        get_model(s, r, path + 11);
}
