/* http_req.c - answering one HTTP request: replies, deferred replies, streams, the
 * disconnect watch of a suspended connection, request accessors and the API key check.
 *
 * Loop thread only. A reply made inside the access handler is queued at once; one made later
 * (deferred or streamed output) is stored, the connection resumed and the daemon kicked, since
 * MHD 0.9.75 in external mode does not wake itself on resume.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/buf.h"
#include "server/http_int.h"

static void watch_close_cb(uv_handle_t *h)
{
    free(h);
}

void http_watch_stop(http_req_t *r)
{
    if (!r->watch)
        return;
    r->watch->data = NULL;
    uv_close((uv_handle_t *)r->watch, watch_close_cb);
    r->watch = NULL;
}

void http_conn_resume(http_req_t *r)
{
    if (!r->suspended)
        return;
    /* The watch stays started: a stream is suspended and resumed for every token, and
     * stopping and restarting it each time costs two epoll_ctl calls per token. A client that
     * leaves while MHD has the connection is gone all the same (MHD would see the end of the
     * stream itself), and the callback stops the watch so that it fires only once. It stays
     * ours until the request completes: completed_cb closes it while the fd is still open,
     * before MHD closes the fd and its number can be reused. */
    r->suspended = 0;
    MHD_resume_connection(r->conn);
    http_kick(r->hs);
}

static void watch_cb(uv_poll_t *h, int status, int events)
{
    http_req_t *r = h->data;
    (void)events;
    /* A FIN shows as UV_DISCONNECT, an RST as status UV_EBADF: either way the client left. */
    (void)status;
    if (!r)
        return;
    uv_poll_stop(h); /* level-triggered: it would fire on every loop turn until completion */
    r->gone = 1;
    http_conn_resume(r);
}

void http_conn_suspend(http_req_t *r)
{
    MHD_suspend_connection(r->conn);
    r->suspended = 1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return;
    if (!r->watch) { /* one per request, for every suspension of its connection */
        r->watch = malloc(sizeof(*r->watch));
        if (!r->watch)
            return;
        if (uv_poll_init(r->hs->loop, r->watch, ci->connect_fd) != 0) {
            free(r->watch);
            r->watch = NULL;
            return;
        }
        r->watch->data = r;
    }
    if (!uv_is_active((uv_handle_t *)r->watch))
        uv_poll_start(r->watch, UV_DISCONNECT, watch_cb);
}

static struct MHD_Response *make_response(http_req_t *r, const char *content_type, const char *body,
                                          size_t len, const char *const *headers)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return NULL;
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, "X-Request-Id", r->log.id); /* as in the access log */
    for (int i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    if (r->hs->quiesced)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    return resp;
}

void http_reply(http_req_t *r, int status, const char *content_type, const char *body, size_t len,
                const char *const *headers)
{
    if (r->answered)
        return;
    r->answered = 1;
    r->status = status;
    struct MHD_Response *resp = make_response(r, content_type, body, len, headers);
    if (!resp) {
        r->gone = 1; /* no memory for an answer: close the connection */
        http_conn_resume(r);
        return;
    }
    if (r->in_access) {
        MHD_queue_response(r->conn, (unsigned)status, resp);
        MHD_destroy_response(resp);
        return;
    }
    r->pending = resp;
    r->pending_status = (unsigned)status;
    http_conn_resume(r);
}

void http_defer(http_req_t *r, void *job, http_closed_cb closed)
{
    r->job = job;
    r->closed = closed;
    if (r->in_access && !r->answered)
        http_conn_suspend(r);
}

static ssize_t reader_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    http_req_t *r = cls;
    (void)pos;
    if (r->gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (r->soff < r->slen) {
        size_t n = r->slen - r->soff;
        if (n > max)
            n = max;
        memcpy(buf, r->sbuf + r->soff, n);
        r->soff += n;
        if (r->soff == r->slen)
            r->soff = r->slen = 0;
        return (ssize_t)n;
    }
    if (r->serr)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (r->sdone)
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* Returning 0 without suspending would make MHD call us again at once, for ever. */
    http_conn_suspend(r);
    return 0;
}

void http_stream_start(http_req_t *r, const char *content_type, void *job, http_closed_cb closed)
{
    r->job = job;
    r->closed = closed;
    r->streaming = 1;
    r->answered = 1;
    r->status = 200;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, reader_cb, r, NULL);
    if (!resp) {
        r->gone = 1;
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Request-Id", r->log.id);
    if (r->hs->quiesced)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
}

int http_stream_write(http_req_t *r, const char *data, size_t len)
{
    if (r->sdone || r->serr)
        return 0;
    if (buf_reserve(&r->sbuf, &r->scap, r->slen + len, 4096))
        return -ENOMEM;
    memcpy(r->sbuf + r->slen, data, len);
    r->slen += len;
    http_conn_resume(r);
    return 0;
}

void http_stream_end(http_req_t *r, int error)
{
    if (error)
        r->serr = 1;
    else
        r->sdone = 1;
    http_conn_resume(r);
}

const char *http_req_method(const http_req_t *r)
{
    return r->method;
}

const char *http_req_path(const http_req_t *r)
{
    return r->path;
}

const char *http_req_header(http_req_t *r, const char *name)
{
    /* An absolute-form target's authority replaces the Host header (RFC 9112 §3.2.2). */
    if (r->authority && strcasecmp(name, MHD_HTTP_HEADER_HOST) == 0)
        return r->authority;
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_req_body(const http_req_t *r, size_t *len)
{
    *len = r->body_len;
    return r->body;
}

http_log_info_t *http_req_log(http_req_t *r)
{
    return &r->log;
}

int http_req_authorized(http_req_t *r)
{
    const http_server_t *hs = r->hs;
    if (!hs->api_key)
        return 1;
    const char *h = http_req_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    size_t n = strlen(tok);
    /* The loop always runs over the whole key and never exits early, so the time taken does
     * not depend on how many leading bytes match. */
    volatile unsigned char diff = (unsigned char)(n != hs->api_key_len);
    for (size_t i = 0; i < hs->api_key_len; i++)
        diff |= (unsigned char)(hs->api_key[i] ^ (i < n ? tok[i] : 0));
    return diff == 0;
}
