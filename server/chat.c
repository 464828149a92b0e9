/* chat.c - POST /v1/chat/completions and /tokenize with messages: the conversation is
 * rendered with the model's chat template into one prompt, which runs as a completions job
 * (completion.c); this file frames the answer as OpenAI's chat.completion, or its stream of
 * chat.completion.chunk events.
 *
 * As vLLM: the rendered text is tokenized without adding special tokens again (the template
 * writes BOS itself; add_special_tokens on /tokenize asks for them) while special-token text
 * in it becomes the special ids; without
 * max_tokens the answer may fill the rest of the context. Loop thread only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/api_chat.h"
#include "server/chat_template.h"
#include "server/completion.h"

/* ---- the prompt ---- */

/* Renders and tokenizes c's conversation. A text longer than TOK_MAX_TOKEN_BYTES times the
 * context cannot fit and is refused before it is encoded (as completions prompts are). */
static int chat_prompt(srv_t *s, const api_chat_t *c, int32_t **ids, size_t *n, api_error_t *e)
{
    char *text;
    size_t len;
    *ids = NULL;
    *n = 0;
    if (chat_tpl_render(s->chat, c, &text, &len, e))
        return -1;
    int max_len = s->info.max_model_len;
    int rc = 0;
    if (len / TOK_MAX_TOKEN_BYTES > (size_t)max_len)
        rc = api_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                           "This model's maximum context length is %d tokens. However, the "
                           "messages rendered to %zu bytes, more than %d tokens. Please reduce "
                           "the length of the messages.",
                           max_len, len, (int)(len / TOK_MAX_TOKEN_BYTES));
    else if (tok_encode_with(s->tok, text, len,
                             TOK_ENC_SPECIAL | (c->add_special_tokens ? TOK_ENC_ADD_SPECIAL : 0),
                             ids, n))
        rc = api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    else if (*n == 0)
        rc = api_error_set(e, 400, "invalid_request_error", NULL, "messages",
                           "the chat template rendered these messages to an empty prompt");
    free(text);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

/* ---- the request ---- */

void srv_chat_completions(srv_t *s, http_req_t *r)
{
    api_error_t e;
    if (srv_busy(s, r))
        return;
    api_job_t *job = srv_job_new(s, r, "chatcmpl");
    if (!job) {
        api_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        srv_reply_error(r, &e, NULL);
        return;
    }
    job->chat = 1;
    api_limits_t lim = {s->model_name, s->info.vocab_size, &s->defaults};
    size_t len, n = 0;
    const char *body = http_req_body(r, &len);
    api_chat_t c;
    int32_t *ids = NULL;
    if (api_chat_parse(body, len, &lim, &c, &e)) {
        srv_job_fail(job, &e);
        return;
    }
    int rc = chat_prompt(s, &c, &ids, &n, &e);
    /* The job owns the shared fields from here; the conversation is done with. */
    job->p = c.p;
    memset(&c.p, 0, sizeof(c.p));
    int max_tokens_set = c.max_tokens_set;
    api_chat_free(&c);
    if (rc || !(job->p.prompts = calloc(1, sizeof(*job->p.prompts)))) {
        free(ids);
        if (!rc)
            api_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        srv_job_fail(job, &e);
        return;
    }
    job->p.n_prompts = 1;
    job->p.prompts[0].ids = ids;
    job->p.prompts[0].n_ids = (int)n;
    /* The model's end of turn ends the answer as EOS does. */
    int32_t end = chat_tpl_end_id(s->chat);
    int have = 0;
    for (int i = 0; i < job->p.n_stop_ids; i++)
        have |= job->p.stop_ids[i] == end;
    if (end >= 0 && !have) /* room: the API takes fewer than the engine */
        job->p.stop_ids[job->p.n_stop_ids++] = end;
    if (!max_tokens_set) { /* the rest of the context, as vLLM; at most the model's default */
        int room = s->info.max_model_len > (int)n ? s->info.max_model_len - (int)n : 1;
        int most = s->defaults.max_tokens;
        job->p.max_tokens = most > 0 && most < room ? most : room;
    }
    if (api_check_context(&job->p, s->info.max_model_len, &e)) {
        snprintf(e.param, sizeof(e.param), "messages");
        srv_job_fail(job, &e);
        return;
    }
    if (srv_job_run(job, &e)) {
        srv_job_fail(job, &e);
        return;
    }
    if (job->p.stream)
        chat_sse_start(job);
}

int srv_tokenize_chat(srv_t *s, http_req_t *r)
{
    api_error_t e;
    api_limits_t lim = {s->model_name, s->info.vocab_size, &s->defaults};
    size_t len, n = 0;
    const char *body = http_req_body(r, &len);
    api_chat_t c;
    int rc = api_chat_tokenize_parse(body, len, &lim, &c, &e);
    if (rc > 0)
        return 1;
    int32_t *ids = NULL;
    if (rc || chat_prompt(s, &c, &ids, &n, &e)) {
        if (rc == 0)
            api_chat_free(&c);
        srv_reply_error(r, &e, NULL);
        return 0;
    }
    api_chat_free(&c);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    json_t *o = json_pack("{s:I, s:i, s:o}", "count", (json_int_t)n, "max_model_len",
                          s->info.max_model_len, "tokens", arr);
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!js) {
        api_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        srv_reply_error(r, &e, NULL);
        return 0;
    }
    srv_reply_json(r, 200, js, strlen(js));
    free(js);
    return 0;
}

/* ---- logprobs ---- */

/* {"token", "logprob", "bytes"}: bytes are the token's own, which the text may not show (a
 * piece of a character). */
static json_t *entry(const tok_t *tok, int32_t id, float logprob)
{
    size_t chars, n = 0;
    const char *b = tok_token_bytes(tok, id, &n);
    json_t *bytes = json_array();
    for (size_t i = 0; bytes && b && i < n; i++)
        json_array_append_new(bytes, json_integer((unsigned char)b[i]));
    return json_pack("{s:o, s:o, s:o}", "token", api_token_json(tok, id, &chars), "logprob",
                     api_logprob_json(logprob), "bytes", bytes);
}

int chat_logprobs_add(json_t **lp, const tok_t *tok, const eng_event_t *ev)
{
    if (!*lp && !(*lp = json_pack("{s:[]}", "content")))
        return -ENOMEM;
    json_t *content = json_object_get(*lp, "content");
    for (int i = 0; i < ev->n_ids && ev->lps && i < ev->n_lps; i++) {
        const eng_logprob_t *l = &ev->lps[i];
        json_t *item = entry(tok, ev->ids[i], l->logprob);
        json_t *top = json_array();
        if (!item || !top) {
            json_decref(item);
            json_decref(top);
            return -ENOMEM;
        }
        for (int k = 0; k < l->n_top && k < ENG_MAX_LOGPROBS; k++)
            json_array_append_new(top, entry(tok, l->top_id[k], l->top_logprob[k]));
        json_object_set_new(item, "top_logprobs", top);
        json_array_append_new(content, item);
    }
    return 0;
}

/* ---- responses ---- */

void chat_reply(api_job_t *job, int completion_tokens)
{
    srv_t *s = job->srv;
    json_t *choices = json_array();
    for (int i = 0; choices && i < job->n_choices; i++) {
        api_choice_t *c = &job->choices[i];
        json_t *lp = c->lp;
        c->lp = NULL;
        if (!lp && job->p.logprobs >= 0) /* no token at all */
            lp = json_pack("{s:[]}", "content");
        json_array_append_new(
            choices, json_pack("{s:i, s:{s:s, s:s%}, s:o, s:s}", "index", i, "message", "role",
                               "assistant", "content", c->text ? c->text : "", c->len, "logprobs",
                               lp ? lp : json_null(), "finish_reason", eng_finish_name(c->finish)));
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o, s:{s:i, s:i, s:i}}", "id", job->id, "object",
                          "chat.completion", "created", (json_int_t)job->created, "model",
                          s->model_name, "choices", choices, "usage", "prompt_tokens",
                          job->prompt_tokens, "completion_tokens", completion_tokens,
                          "total_tokens", job->prompt_tokens + completion_tokens);
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(o);
    if (!body) {
        api_error_t e;
        api_error_set(&e, 500, "server_error", NULL, NULL, "could not build the response");
        srv_reply_error(job->http, &e, NULL);
        return;
    }
    srv_reply_json(job->http, 200, body, strlen(body));
    free(body);
}

static void send_choice(api_job_t *job, json_t *choice)
{
    json_t *choices = json_array();
    if (!choice || !choices) {
        json_decref(choice);
        json_decref(choices);
        return;
    }
    json_array_append_new(choices, choice);
    sse_send_json(job, sse_chunk_head(job, choices));
}

void chat_sse_start(api_job_t *job)
{
    for (int i = 0; i < job->n_choices; i++)
        send_choice(job, json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", i, "delta", "role",
                                   "assistant", "content", "", "logprobs", "finish_reason"));
}

void chat_sse_chunk(api_job_t *job, int index, const char *text, size_t len, json_t *logprobs,
                    int finish)
{
    if (!logprobs) { /* framed by hand, as the same chunk without logprobs of a completion */
        sse_chunk(job, index, text, len, NULL, finish);
        return;
    }
    /* The last chunk of a choice has an empty delta when its token added no text (EOS). */
    json_t *delta = len > 0 || !finish ? json_pack("{s:s%}", "content", text, len) : json_object();
    send_choice(job, json_pack("{s:i, s:o, s:o, s:o}", "index", index, "delta", delta, "logprobs",
                               logprobs ? logprobs : json_null(), "finish_reason",
                               finish ? json_string(eng_finish_name(finish)) : json_null()));
}
