/* sse.c - server-sent events for streamed completions, framed as OpenAI frames them.
 *
 * Each event is one "data: <json>\n\n"; the stream ends with "data: [DONE]\n\n". A chunk has
 * the shape of a completion response with one choice holding the text delta; finish_reason
 * is null until that choice's last chunk. Loop thread only.
 */
#include <stdlib.h>
#include <string.h>

#include "server/completion.h"

static void send_json(api_job_t *job, json_t *obj)
{
    if (!obj || !job->http)
        goto out;
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!s)
        goto out;
    size_t n = strlen(s);
    char *ev = malloc(n + 9);
    if (ev) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, s, n);
        memcpy(ev + 6 + n, "\n\n", 2);
        http_stream_write(job->http, ev, n + 8);
        free(ev);
    }
    free(s);
out:
    json_decref(obj);
}

static json_t *chunk_head(api_job_t *job, json_t *choices)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", job->id, "object", "text_completion",
                          "created", (json_int_t)job->created, "model", job->srv->model_name,
                          "choices", choices);
    if (o && job->p.include_usage)
        json_object_set_new(o, "usage", json_null());
    return o;
}

void sse_chunk(api_job_t *job, int index, const char *text, size_t len, json_t *logprobs,
               int finish)
{
    json_t *choice = json_pack("{s:i, s:s%, s:o, s:o}", "index", index, "text", text, len,
                               "logprobs", logprobs ? logprobs : json_null(), "finish_reason",
                               finish ? json_string(api_finish_name(finish)) : json_null());
    if (!choice)
        return;
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    send_json(job, chunk_head(job, choices));
}

void sse_usage(api_job_t *job)
{
    int completion = 0;
    for (int i = 0; i < job->n_choices; i++)
        completion += job->choices[i].n_tokens;
    json_t *o = chunk_head(job, json_array());
    if (o)
        json_object_set_new(o, "usage",
                            json_pack("{s:i, s:i, s:i}", "prompt_tokens", job->prompt_tokens,
                                      "completion_tokens", completion, "total_tokens",
                                      job->prompt_tokens + completion));
    send_json(job, o);
}

void sse_error(api_job_t *job, int status, const char *type, const char *message)
{
    send_json(job, json_pack("{s:{s:s, s:s, s:n, s:i}}", "error", "message", message, "type", type,
                             "param", "code", status));
}

void sse_done(api_job_t *job)
{
    if (!job->http)
        return;
    static const char done[] = "data: [DONE]\n\n";
    http_stream_write(job->http, done, sizeof(done) - 1);
    http_stream_end(job->http, 0);
}
