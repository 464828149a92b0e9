/* http.h - libmicrohttpd driven by a libuv loop: connections, bodies, replies, streams.
 *
 * Everything here runs on the loop thread. The daemon runs in external epoll mode; libuv
 * polls its epoll fd and honours its timeout (see notes on MHD 0.9.75 in http.c). A request
 * is handed to the handler once its whole body has arrived; the handler answers at once
 * (http_reply), later (http_defer, then http_reply from any loop callback), or with a stream
 * (http_stream_start, http_stream_write, http_stream_end).
 */
#ifndef NANO_VLLM_SERVER_HTTP_H
#define NANO_VLLM_SERVER_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct http_server http_server_t;
typedef struct http_req http_req_t;

/* Called once per request with its whole body. The handler must answer r before it returns
 * or call http_defer / http_stream_start. */
typedef void (*http_handler_cb)(void *app, http_req_t *r);
/* Called once when the connection of a deferred or streaming request is done with it
 * (answered, client gone, or shutdown); client_gone says whether the answer may not have
 * reached the client. After this r is freed: the owner of job must forget r. */
typedef void (*http_closed_cb)(void *job, int client_gone);

/* What the access log line of a request shows besides method, path, status and time. */
typedef struct http_log_info {
    char id[48];       /* request id; "" = the server's own "req-N" */
    int prompt_tokens; /* -1 = not applicable */
    int completion_tokens;
    double ttft;        /* seconds; < 0 = not applicable */
    const char *finish; /* static or NULL */
} http_log_info_t;

typedef struct http_options {
    const char *host;        /* address or host name to bind */
    int port;                /* 0 = any free port */
    size_t max_body_bytes;   /* bodies above it get 413 */
    unsigned conn_timeout;   /* seconds of inactivity before an idle connection closes */
    unsigned header_timeout; /* seconds a connection has to send a request's headers; 0 = 30 */
    unsigned conn_limit;     /* connections in all */
    unsigned per_ip_limit;   /* connections from one address; 0 = no limit */
    const char *api_key;     /* NULL = no key needed */
    void (*on_done)(void *app, int status); /* NULL, or told the status of every request */
} http_options_t;

/* Binds host:port and starts serving on loop. Returns 0, or a negative errno with one line in
 * err (e.g. "127.0.0.1:8000: Address already in use"). */
int http_server_init(http_server_t **out, uv_loop_t *loop, const http_options_t *o,
                     http_handler_cb handler, void *app, char *err, size_t errlen);
int http_server_port(const http_server_t *hs);
/* Stops accepting new connections (closes the listen socket); requests in flight go on and
 * their responses carry "Connection: close". */
void http_server_quiesce(http_server_t *hs);
/* Requests received and not yet completed. */
int http_server_active(const http_server_t *hs);
/* Ends every connection, stops the daemon and closes the handles; the memory goes in the
 * handles' close callbacks, so run the loop afterwards. Safe on NULL. */
void http_server_close(http_server_t *hs);

const char *http_req_method(const http_req_t *r);
/* The target's path, also for an absolute-form target ("http://host/v1/models" gives
 * "/v1/models"); without the query. */
const char *http_req_path(const http_req_t *r);
/* Value of a request header (case-insensitive name) or NULL. For an absolute-form target,
 * "Host" is the target's authority. */
const char *http_req_header(http_req_t *r, const char *name);
const char *http_req_body(const http_req_t *r, size_t *len);
/* The request's log fields; the caller may fill them at any time before completion. */
http_log_info_t *http_req_log(http_req_t *r);
/* 1 when the request arrived with a valid API key or none is configured. Constant time. */
int http_req_authorized(http_req_t *r);

/* Answers with a complete body (copied). headers: NULL or "Name", "value" pairs ended by
 * NULL. Allowed inside the handler or, after http_defer, from any loop-thread callback. */
void http_reply(http_req_t *r, int status, const char *content_type, const char *body, size_t len,
                const char *const *headers);
/* Keeps r open without an answer; job is passed to closed() when the connection is done. */
void http_defer(http_req_t *r, void *job, http_closed_cb closed);
/* Starts a 200 chunked response of content_type whose body comes from http_stream_write. */
void http_stream_start(http_req_t *r, const char *content_type, void *job, http_closed_cb closed);
/* Appends bytes to the stream (copied). Returns 0 or -ENOMEM. */
int http_stream_write(http_req_t *r, const char *data, size_t len);
/* Ends the stream after what was written: cleanly, or (error) by closing the connection
 * without the final chunk so the client knows the body is incomplete. */
void http_stream_end(http_req_t *r, int error);

#endif
