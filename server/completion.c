/* completion.c - POST /v1/completions: a validated request becomes one engine request per
 * prompt; the engine's events become the OpenAI response (one JSON body) or its stream.
 *
 * DESIGN: loop thread only. The scheduler thread queues events and wakes the loop; the
 * wake-up callback takes the whole queue (eng_poll) and hands each event to its job here.
 * A client that leaves aborts its engine requests (eng_abort, a message, never a flag in the
 * engine's structs); the job then waits for their finishing events before it is freed, so
 * no event can ever point at freed memory.
 */
#include "server/completion.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/buf.h"
#include "server/log.h"

/* ---- logprobs ---- */

/* A token as OpenAI shows it: its text when its bytes are valid UTF-8, otherwise
 * "bytes:\xNN..." with the bytes written as escapes, so that no information is lost. */
json_t *api_token_json(const tok_t *tok, int32_t id, size_t *chars)
{
    size_t n = 0;
    const char *b = tok_token_bytes(tok, id, &n);
    *chars = 0;
    if (!b)
        return json_string("");
    /* Characters this token adds to the text: its UTF-8 lead bytes. A character split
     * across tokens is thereby counted once, at the token that starts it. */
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)b[i] & 0xC0) != 0x80)
            (*chars)++;
    if (api_utf8_valid(b, n))
        return json_stringn(b, n);
    char s[6 + 4 * TOK_MAX_TOKEN_BYTES + 1];
    size_t k = (size_t)snprintf(s, sizeof(s), "bytes:");
    for (size_t i = 0; i < n && k + 5 < sizeof(s); i++)
        k += (size_t)snprintf(s + k, sizeof(s) - k, "\\x%02x", (unsigned char)b[i]);
    return json_stringn(s, k);
}

/* JSON has no infinities; vLLM reports an impossible token as -9999.0. */
json_t *api_logprob_json(float lp)
{
    return json_real(isfinite(lp) ? (double)lp : -9999.0);
}

int api_logprobs_add(json_t **lp, const tok_t *tok, const int32_t *ids, int n,
                     const eng_logprob_t *const *lps, size_t *offset)
{
    if (!*lp) {
        *lp = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                        "text_offset");
        if (!*lp)
            return -ENOMEM;
    }
    json_t *tokens = json_object_get(*lp, "tokens");
    json_t *values = json_object_get(*lp, "token_logprobs");
    json_t *tops = json_object_get(*lp, "top_logprobs");
    json_t *offsets = json_object_get(*lp, "text_offset");
    for (int i = 0; i < n; i++) {
        size_t chars;
        json_t *t = api_token_json(tok, ids[i], &chars);
        if (!t)
            return -ENOMEM;
        json_array_append_new(offsets, json_integer((json_int_t)*offset));
        *offset += chars;
        const eng_logprob_t *l = lps[i];
        if (!l) {
            json_array_append_new(tokens, t);
            json_array_append_new(values, json_null());
            json_array_append_new(tops, json_null());
            continue;
        }
        /* The alternatives, highest first, and the chosen token as vLLM adds it. */
        json_t *top = json_object();
        for (int k = 0; k < l->n_top && k < ENG_MAX_LOGPROBS; k++) {
            size_t c;
            json_t *s = api_token_json(tok, l->top_id[k], &c);
            if (s && !json_object_get(top, json_string_value(s)))
                json_object_set_new(top, json_string_value(s), api_logprob_json(l->top_logprob[k]));
            json_decref(s);
        }
        if (!json_object_get(top, json_string_value(t)))
            json_object_set_new(top, json_string_value(t), api_logprob_json(l->logprob));
        json_array_append_new(tokens, t);
        json_array_append_new(values, api_logprob_json(l->logprob));
        json_array_append_new(tops, top);
    }
    return 0;
}

/* The logprobs of an event's tokens. For prompt tokens the engine sends either one entry per
 * token (the first meaningless) or one per token after the first; the first prompt token
 * has no logprob either way. */
static int event_logprobs(json_t **lp, const tok_t *tok, const eng_event_t *ev, size_t *offset)
{
    const eng_logprob_t **ptrs = calloc((size_t)(ev->n_ids ? ev->n_ids : 1), sizeof(*ptrs));
    if (!ptrs)
        return -ENOMEM;
    int shift = ev->is_prompt && ev->n_lps == ev->n_ids - 1 ? 1 : 0;
    for (int i = 0; i < ev->n_ids; i++) {
        int j = i - shift;
        if (ev->is_prompt && i == 0)
            ptrs[i] = NULL;
        else if (ev->lps && j >= 0 && j < ev->n_lps)
            ptrs[i] = &ev->lps[j];
    }
    int rc = api_logprobs_add(lp, tok, ev->ids, ev->n_ids, ptrs, offset);
    free(ptrs);
    return rc;
}

/* ---- jobs ---- */

static int text_append(api_choice_t *c, const char *s, size_t n)
{
    return buf_append_text(&c->text, &c->len, &c->cap, s, n, 256);
}

static void job_free(api_job_t *job)
{
    srv_t *s = job->srv;
    list_remove(&job->link);
    s->n_jobs--;
    for (int i = 0; job->choices && i < job->n_choices; i++) {
        free(job->choices[i].text);
        free(job->choices[i].error);
        json_decref(job->choices[i].lp);
    }
    free(job->choices);
    free(job->sse);
    api_params_free(&job->p);
    free(job);
}

static void abort_engine(api_job_t *job)
{
    for (int i = 0; i < job->n_submitted; i++)
        eng_abort(job->srv->eng, job->eng_id0 + (uint64_t)i);
}

/* The HTTP side is done with the job: the response went out, the client left, or the
 * server is stopping. */
static void job_closed_cb(void *arg, int client_gone)
{
    api_job_t *job = arg;
    job->http = NULL;
    if (job->live > 0) {
        if (client_gone)
            srv_log(SRV_LOG_INFO, "api", job->id, "client gone, aborting %d choice(s)", job->live);
        abort_engine(job);
        return; /* freed when the last finishing event arrives */
    }
    job_free(job);
}

/* The text a choice starts with when echo is on: the prompt as given, or the decoded ids
 * (with bytes that are not UTF-8 replaced, since JSON strings must be text). */
static int echo_text(api_job_t *job, int prompt, char **out, size_t *len)
{
    const api_prompt_t *pr = &job->p.prompts[prompt];
    if (pr->text) { /* may hold NUL characters: copy by length */
        if (!(*out = malloc(pr->text_len + 1)))
            return -ENOMEM;
        memcpy(*out, pr->text, pr->text_len + 1);
        *len = pr->text_len;
        return 0;
    }
    char *raw;
    size_t n;
    int rc = tok_decode(job->srv->tok, pr->ids, (size_t)pr->n_ids, &raw, &n);
    if (rc)
        return rc;
    *out = api_utf8_fix(raw, n, len);
    free(raw);
    return *out ? 0 : -ENOMEM;
}

/* Echo without prompt logprobs: the prompt text starts each choice right away. With prompt
 * logprobs it comes with the engine's prompt event instead (prompt_event). */
static void echo_start(api_job_t *job)
{
    for (int i = 0; i < job->n_choices; i++) {
        char *t;
        size_t n;
        if (echo_text(job, i / job->p.n, &t, &n))
            continue;
        if (job->p.stream)
            sse_chunk(job, i, t, n, NULL, ENG_FINISH_NONE);
        else
            text_append(&job->choices[i], t, n);
        free(t);
    }
}

static void prompt_event(api_job_t *job, const eng_event_t *ev)
{
    if (!job->p.echo)
        return;
    int prompt = ev->index / job->p.n;
    char *t;
    size_t n;
    if (echo_text(job, prompt, &t, &n))
        return;
    /* The engine may report a prompt once per choice or once per prompt: every choice of the
     * prompt gets the echo once. */
    for (int k = 0; k < job->p.n; k++) {
        int index = prompt * job->p.n + k;
        api_choice_t *c = &job->choices[index];
        if (c->echoed)
            continue;
        c->echoed = 1;
        json_t *lp = NULL;
        if (job->p.logprobs >= 0)
            event_logprobs(&lp, job->srv->tok, ev, &c->offset);
        if (job->p.stream) {
            sse_chunk(job, index, t, n, lp, ENG_FINISH_NONE);
        } else {
            text_append(c, t, n);
            c->lp = lp;
        }
    }
    free(t);
}

/* Every choice has finished: send the response (or end the stream) and count the metrics. */
static void job_finish(api_job_t *job)
{
    srv_t *s = job->srv;
    uint64_t now = uv_hrtime();
    metrics_observe(&s->metrics.e2e, (double)(now - job->t_start) / 1e9);
    int completion = 0;
    const char *error = NULL;
    for (int i = 0; i < job->n_choices; i++) {
        completion += job->choices[i].n_tokens;
        if (job->choices[i].finish == ENG_FINISH_ERROR && !error)
            error = job->choices[i].error ? job->choices[i].error : "the engine failed";
    }
    s->metrics.prompt_tokens += (uint64_t)job->prompt_tokens;
    s->metrics.generation_tokens += (uint64_t)completion;
    if (!job->http || job->answered)
        return;
    job->answered = 1;
    http_log_info_t *log = http_req_log(job->http);
    log->prompt_tokens = job->prompt_tokens;
    log->completion_tokens = completion;
    log->finish = eng_finish_name(job->choices[0].finish);
    if (job->p.stream) {
        if (error)
            sse_error(job, 500, "server_error", error);
        else if (job->p.include_usage)
            sse_usage(job);
        sse_done(job);
        return;
    }
    if (error) {
        api_error_t e;
        api_error_set(&e, 500, "server_error", NULL, NULL, "%s", error);
        srv_reply_error(job->http, &e, NULL);
        return;
    }
    if (job->chat) {
        chat_reply(job, completion);
        return;
    }
    json_t *choices = json_array();
    for (int i = 0; i < job->n_choices; i++) {
        api_choice_t *c = &job->choices[i];
        json_t *lp = c->lp;
        c->lp = NULL;
        if (!lp && job->p.logprobs >= 0) /* no token at all: the four lists are empty */
            api_logprobs_add(&lp, s->tok, NULL, 0, NULL, &c->offset);
        json_array_append_new(choices, json_pack("{s:i, s:s%, s:o, s:s}", "index", i, "text",
                                                 c->text ? c->text : "", c->len, "logprobs",
                                                 lp ? lp : json_null(), "finish_reason",
                                                 eng_finish_name(c->finish)));
    }
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:s, s:o, s:{s:i, s:i, s:i}}", "id", job->id, "object",
                  "text_completion", "created", (json_int_t)job->created, "model", s->model_name,
                  "choices", choices, "usage", "prompt_tokens", job->prompt_tokens,
                  "completion_tokens", completion, "total_tokens", job->prompt_tokens + completion);
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

static void job_event(api_job_t *job, const eng_event_t *ev)
{
    srv_t *s = job->srv;
    if (ev->index < 0 || ev->index >= job->n_choices)
        return;
    api_choice_t *c = &job->choices[ev->index];
    if (ev->is_prompt) {
        if (job->http && !job->answered)
            prompt_event(job, ev);
        return;
    }
    uint64_t now = uv_hrtime();
    if (ev->n_ids > 0) {
        if (!job->t_first) {
            job->t_first = now;
            double ttft = (double)(now - job->t_start) / 1e9;
            metrics_observe(&s->metrics.ttft, ttft);
            if (job->http)
                http_req_log(job->http)->ttft = ttft;
        }
        if (c->t_last)
            for (int i = 0; i < ev->n_ids; i++)
                metrics_observe(&s->metrics.itl, (double)(now - c->t_last) / 1e9 / ev->n_ids);
        c->t_last = now;
        c->n_tokens += ev->n_ids;
    }
    if (ev->finish != ENG_FINISH_NONE && c->finish == ENG_FINISH_NONE) {
        c->finish = ev->finish;
        if (ev->completion_tokens > c->n_tokens)
            c->n_tokens = ev->completion_tokens;
        if (ev->finish == ENG_FINISH_ERROR && ev->text && !c->error)
            c->error = strdup(ev->text);
        if (ev->finish >= 1 && ev->finish <= 4)
            s->metrics.finish[ev->finish]++;
        job->live--;
    }
    if (job->http && !job->answered && ev->finish != ENG_FINISH_ERROR) {
        json_t *lp = NULL;
        int want_lp = job->p.logprobs >= 0 && ev->n_ids > 0;
        if (job->p.stream) {
            if (want_lp && job->chat)
                chat_logprobs_add(&lp, s->tok, ev);
            else if (want_lp)
                event_logprobs(&lp, s->tok, ev, &c->offset);
            if (!(ev->text_len > 0 || ev->finish != ENG_FINISH_NONE || want_lp))
                json_decref(lp);
            else if (job->chat)
                chat_sse_chunk(job, ev->index, ev->text ? ev->text : "", ev->text_len, lp,
                               ev->finish);
            else
                sse_chunk(job, ev->index, ev->text ? ev->text : "", ev->text_len, lp, ev->finish);
        } else {
            if (want_lp && job->chat)
                chat_logprobs_add(&c->lp, s->tok, ev);
            else if (want_lp)
                event_logprobs(&c->lp, s->tok, ev, &c->offset);
            if (ev->text_len > 0)
                text_append(c, ev->text, ev->text_len);
        }
    }
    if (job->live == 0) {
        job_finish(job);
        if (!job->http)
            job_free(job);
    }
}

void srv_handle_events(srv_t *s)
{
    if (!s->eng)
        return;
    eng_event_t *ev = eng_poll(s->eng);
    while (ev) {
        eng_event_t *next = ev->next;
        if (ev->user)
            job_event(ev->user, ev);
        eng_event_free(ev);
        ev = next;
    }
}

/* ---- accepting a request ---- */

/* Encodes the text prompts on the loop thread. A token covers at most TOK_MAX_TOKEN_BYTES
 * bytes, so a text longer than that many times the context cannot fit: it is refused
 * without spending the loop thread's time on encoding it. */
static int prompts_tokenize(api_params_t *p, const tok_t *tok, int max_model_len, api_error_t *e)
{
    for (int i = 0; i < p->n_prompts; i++) {
        api_prompt_t *pr = &p->prompts[i];
        if (!pr->text || pr->ids)
            continue;
        if (pr->text_len / TOK_MAX_TOKEN_BYTES > (size_t)max_model_len)
            return api_error_set(
                e, 400, "invalid_request_error", "context_length_exceeded", "prompt",
                "This model's maximum context length is %d tokens. However, "
                "prompt %d is %zu bytes, more than %d tokens. Please reduce "
                "the length of the prompt.",
                max_model_len, i, pr->text_len, (int)(pr->text_len / TOK_MAX_TOKEN_BYTES));
        size_t n = 0;
        if (tok_encode(tok, pr->text, pr->text_len, &pr->ids, &n))
            return api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        if (n == 0)
            return api_error_set(e, 400, "invalid_request_error", NULL, "prompt",
                                 "prompt %d is empty", i);
        pr->n_ids = (int)n;
    }
    return 0;
}

/* A max_tokens taken from generation_config.json (the request gave none) is the most a
 * completion gets: it is cut to the room the longest prompt leaves, as vLLM takes the
 * smaller of the two, rather than refusing a request for a limit it did not ask for. */
static void fit_default_max_tokens(api_params_t *p, const api_defaults_t *d, int max_model_len)
{
    if (p->max_tokens_set || d->max_tokens <= 0)
        return;
    int room = max_model_len;
    for (int i = 0; i < p->n_prompts; i++) {
        int left = max_model_len - p->prompts[i].n_ids;
        room = left < room ? left : room;
    }
    if (room >= 1 && room < p->max_tokens)
        p->max_tokens = room;
}

api_job_t *srv_job_new(srv_t *s, http_req_t *r, const char *prefix)
{
    api_job_t *job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->srv = s;
    job->http = r;
    job->t_start = uv_hrtime();
    job->created = (long long)time(NULL);
    job->p.logprobs = -1;
    snprintf(job->id, sizeof(job->id), "%s-%016llx%08llx", prefix, (unsigned long long)s->id_salt,
             (unsigned long long)++s->next_job);
    list_insert_head(&s->jobs, &job->link);
    s->n_jobs++;
    snprintf(http_req_log(r)->id, sizeof(http_req_log(r)->id), "%s", job->id);
    return job;
}

/* Submits one engine request per prompt. Returns 0, or -1 with *e (429 when the waiting
 * queue is full). Requests already submitted stay with the job and are aborted by the
 * caller. */
static int job_submit(api_job_t *job, api_error_t *e)
{
    srv_t *s = job->srv;
    job->eng_id0 = s->next_eng_id;
    s->next_eng_id += (uint64_t)job->p.n_prompts;
    for (int i = 0; i < job->p.n_prompts; i++) {
        eng_request_t *req = api_request_new(&job->p, i, job->eng_id0 + (uint64_t)i, job);
        if (!req)
            return api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        int rc = eng_submit(s->eng, req);
        if (rc == -EAGAIN) {
            eng_request_free(req);
            return api_error_set(e, 429, "rate_limit_error", NULL, NULL,
                                 "the server has %d requests waiting, its limit; retry later",
                                 s->cfg.max_waiting);
        }
        if (rc) {
            eng_request_free(req);
            return api_error_set(e, 400, "invalid_request_error", NULL, "prompt",
                                 "the engine refused prompt %d (%s)", i, strerror(-rc));
        }
        job->n_submitted++;
        job->live += job->p.n;
    }
    return 0;
}

int srv_job_run(api_job_t *job, api_error_t *e)
{
    srv_t *s = job->srv;
    if (job->p.n > s->cfg.max_num_seqs) /* the n completions of a prompt run together */
        return api_error_set(e, 400, "invalid_request_error", NULL, "n",
                             "'n' %d is more than the %d sequences this server runs at once "
                             "(--max-num-seqs)",
                             job->p.n, s->cfg.max_num_seqs);
    job->n_choices = job->p.n_prompts * job->p.n;
    job->choices = calloc((size_t)job->n_choices, sizeof(*job->choices));
    if (!job->choices)
        return api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    for (int i = 0; i < job->p.n_prompts; i++)
        job->prompt_tokens += job->p.prompts[i].n_ids;
    if (job_submit(job, e))
        return -1;
    if (job->p.stream)
        http_stream_start(job->http, "text/event-stream", job, job_closed_cb);
    else
        http_defer(job->http, job, job_closed_cb);
    return 0;
}

void srv_job_fail(api_job_t *job, const api_error_t *e)
{
    static const char *const retry[] = {"Retry-After", "1", NULL};
    srv_reply_error(job->http, e, e->status == 429 ? retry : NULL);
    job->http = NULL;
    job->answered = 1;
    if (job->live > 0)
        abort_engine(job); /* freed when the aborted choices report */
    else
        job_free(job);
}

void srv_completions(srv_t *s, http_req_t *r)
{
    api_error_t e;
    if (srv_busy(s, r))
        return;
    api_job_t *job = srv_job_new(s, r, "cmpl");
    if (!job) {
        api_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        srv_reply_error(r, &e, NULL);
        return;
    }
    api_limits_t lim = {s->model_name, s->info.vocab_size, &s->defaults};
    size_t len;
    const char *body = http_req_body(r, &len);
    if (api_completion_parse(body, len, &lim, &job->p, &e) ||
        prompts_tokenize(&job->p, s->tok, s->info.max_model_len, &e)) {
        srv_job_fail(job, &e);
        return;
    }
    fit_default_max_tokens(&job->p, &s->defaults, s->info.max_model_len);
    if (api_check_context(&job->p, s->info.max_model_len, &e) || srv_job_run(job, &e)) {
        srv_job_fail(job, &e);
        return;
    }
    if (job->p.echo && job->p.max_tokens > 0 && job->p.logprobs < 0)
        echo_start(job);
}

void srv_abort_all(srv_t *s, const char *why)
{
    list_t *it;
    LIST_FOREACH(it, &s->jobs)
    {
        api_job_t *job = LIST_DATA(it, api_job_t, link);
        if (job->live > 0)
            abort_engine(job);
        if (!job->http || job->answered)
            continue;
        job->answered = 1;
        http_req_log(job->http)->finish = eng_finish_name(ENG_FINISH_ABORT);
        if (job->p.stream) {
            sse_error(job, 503, "service_unavailable", why);
            sse_done(job);
        } else {
            api_error_t e;
            api_error_set(&e, 503, "service_unavailable", NULL, NULL, "%s", why);
            srv_reply_error(job->http, &e, NULL);
        }
    }
}

void srv_jobs_free(srv_t *s)
{
    while (!list_empty(&s->jobs))
        job_free(LIST_DATA(s->jobs.next, api_job_t, link));
}
