/* sse.c - server-sent events for streamed completions, framed as OpenAI frames them.
 *
 * Each event is one "data: <json>\n\n"; the stream ends with "data: [DONE]\n\n". A chunk has
 * the shape of a completion response with one choice holding the text delta; finish_reason
 * is null until that choice's last chunk. Loop thread only.
 *
 * A chunk without logprobs (every token of a plain stream) is framed by hand into the job's
 * reusable buffer, byte for byte what jansson would write, so streaming allocates nothing
 * per token once the buffer has grown to the size of an event; the part every chunk of the
 * job shares (id, created, model) stays at the start of that buffer and is framed once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/buf.h"
#include "server/completion.h"

void sse_send_json(api_job_t *job, json_t *obj)
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

/* The "object" of the job's chunks. */
static const char *chunk_object(const api_job_t *job)
{
    return job->chat ? "chat.completion.chunk" : "text_completion";
}

json_t *sse_chunk_head(api_job_t *job, json_t *choices)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", job->id, "object", chunk_object(job),
                          "created", (json_int_t)job->created, "model", job->srv->model_name,
                          "choices", choices);
    if (o && job->p.include_usage)
        json_object_set_new(o, "usage", json_null());
    return o;
}

/* Makes room for need more bytes at *len in the job's buffer. 0 or -1 (out of memory). */
static int sse_reserve(api_job_t *job, size_t len, size_t need)
{
    return buf_reserve(&job->sse, &job->sse_cap, len + need, 512) ? -1 : 0;
}

/* Appends s[0..n) as a JSON string body, escaped as jansson escapes it by default: quote,
 * backslash and control characters; UTF-8 passes through. */
static int sse_put_escaped(api_job_t *job, size_t *len, const char *s, size_t n)
{
    if (sse_reserve(job, *len, 6 * n) < 0) /* \u00XX is the longest escape */
        return -1;
    char *o = job->sse + *len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c >= 0x20) {
            *o++ = (char)c;
        } else {
            const char *short_esc = c == '\b'   ? "b"
                                    : c == '\f' ? "f"
                                    : c == '\n' ? "n"
                                    : c == '\r' ? "r"
                                    : c == '\t' ? "t"
                                                : NULL;
            *o++ = '\\';
            if (short_esc) {
                *o++ = short_esc[0];
            } else {
                static const char hex[] = "0123456789ABCDEF";
                memcpy(o, "u00", 3);
                o[3] = hex[c >> 4];
                o[4] = hex[c & 15];
                o += 5;
            }
        }
    }
    *len = (size_t)(o - job->sse);
    return 0;
}

static int sse_put(api_job_t *job, size_t *len, const char *s, size_t n)
{
    if (sse_reserve(job, *len, n) < 0)
        return -1;
    memcpy(job->sse + *len, s, n);
    *len += n;
    return 0;
}

/* Appends v in decimal. */
static int sse_put_int(api_job_t *job, size_t *len, int v)
{
    char d[12];
    int n = 0;
    unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    do {
        d[sizeof(d) - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        d[sizeof(d) - 1 - n++] = '-';
    return sse_put(job, len, d + sizeof(d) - n, (size_t)n);
}

/* Frames the head every chunk of the job shares, up to the choice's index, at the start of the
 * job's buffer, once: the chunks then write only what follows it. */
static int sse_plain_head(api_job_t *job)
{
    if (job->sse_head)
        return 0;
    char num[96];
    size_t n = 0;
    int k = snprintf(num, sizeof(num), "\",\"object\":\"%s\",\"created\":%lld,\"model\":\"",
                     chunk_object(job), job->created);
    int rc = sse_put(job, &n, "data: {\"id\":\"", 13);
    rc |= sse_put(job, &n, job->id, strlen(job->id));
    rc |= sse_put(job, &n, num, (size_t)k);
    rc |= sse_put_escaped(job, &n, job->srv->model_name, strlen(job->srv->model_name));
    static const char choices[] = "\",\"choices\":[{\"index\":";
    rc |= sse_put(job, &n, choices, sizeof(choices) - 1);
    if (rc == 0)
        job->sse_head = n;
    return rc;
}

/* A chunk without logprobs, framed by hand (see the top of the file). The model name is
 * escaped like the text; the id is ours ("cmpl-" or "chatcmpl-" and hex digits). A chat
 * chunk carries the text as its delta's content, and an empty delta when a choice's last
 * chunk adds no text (chat_sse_chunk). */
static void sse_plain_chunk(api_job_t *job, int index, const char *text, size_t len, int finish)
{
    if (sse_plain_head(job) < 0)
        return;
    size_t n = job->sse_head;
    int rc = sse_put_int(job, &n, index);
    if (!job->chat) {
        rc |= sse_put(job, &n, ",\"text\":\"", 9);
        rc |= sse_put_escaped(job, &n, text, len);
        rc |= sse_put(job, &n, "\"", 1);
    } else if (len > 0 || !finish) {
        static const char delta[] = ",\"delta\":{\"content\":\"";
        rc |= sse_put(job, &n, delta, sizeof(delta) - 1);
        rc |= sse_put_escaped(job, &n, text, len);
        rc |= sse_put(job, &n, "\"}", 2);
    } else {
        static const char empty[] = ",\"delta\":{}";
        rc |= sse_put(job, &n, empty, sizeof(empty) - 1);
    }
    static const char no_lp[] = ",\"logprobs\":null,\"finish_reason\":";
    rc |= sse_put(job, &n, no_lp, sizeof(no_lp) - 1);
    if (finish) {
        const char *name = eng_finish_name(finish);
        rc |= sse_put(job, &n, "\"", 1);
        rc |= sse_put(job, &n, name, strlen(name));
        rc |= sse_put(job, &n, "\"", 1);
    } else {
        rc |= sse_put(job, &n, "null", 4);
    }
    rc |= sse_put(job, &n, "}]", 2);
    if (job->p.include_usage)
        rc |= sse_put(job, &n, ",\"usage\":null", 13);
    rc |= sse_put(job, &n, "}\n\n", 3);
    if (rc == 0)
        http_stream_write(job->http, job->sse, n);
}

void sse_chunk(api_job_t *job, int index, const char *text, size_t len, json_t *logprobs,
               int finish)
{
    if (!logprobs) {
        if (job->http)
            sse_plain_chunk(job, index, text, len, finish);
        return;
    }
    json_t *choice = json_pack("{s:i, s:s%, s:o, s:o}", "index", index, "text", text, len,
                               "logprobs", logprobs ? logprobs : json_null(), "finish_reason",
                               finish ? json_string(eng_finish_name(finish)) : json_null());
    if (!choice)
        return;
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    sse_send_json(job, sse_chunk_head(job, choices));
}

void sse_usage(api_job_t *job)
{
    int completion = 0;
    for (int i = 0; i < job->n_choices; i++)
        completion += job->choices[i].n_tokens;
    json_t *o = sse_chunk_head(job, json_array());
    if (o)
        json_object_set_new(o, "usage",
                            json_pack("{s:i, s:i, s:i}", "prompt_tokens", job->prompt_tokens,
                                      "completion_tokens", completion, "total_tokens",
                                      job->prompt_tokens + completion));
    sse_send_json(job, o);
}

void sse_error(api_job_t *job, int status, const char *type, const char *message)
{
    sse_send_json(job, json_pack("{s:{s:s, s:s, s:n, s:i}}", "error", "message", message, "type",
                                 type, "param", "code", status));
}

void sse_done(api_job_t *job)
{
    if (!job->http)
        return;
    static const char done[] = "data: [DONE]\n\n";
    http_stream_write(job->http, done, sizeof(done) - 1);
    http_stream_end(job->http, 0);
}
