/* http_int.h - what http.c (driving the daemon) and http_req.c (answering a request) share.
 * Private to server/; loop thread only.
 */
#ifndef NANO_VLLM_SERVER_HTTP_INT_H
#define NANO_VLLM_SERVER_HTTP_INT_H

#include <microhttpd.h>
#include <stdint.h>

#include "common/list.h"
#include "server/http.h"

/* One TCP connection, tracked for the header deadline (see http.c). */
typedef struct http_conn {
    list_t link; /* in http_server.conns */
    int fd;
    int waiting;       /* no request since it opened or since its last response completed */
    uint64_t deadline; /* uv_now (ms) by which a waiting connection must have sent headers */
} http_conn_t;

struct http_server {
    uv_loop_t *loop; /* borrowed */
    struct MHD_Daemon *d;
    uv_poll_t epoll_poll;    /* on MHD's epoll fd */
    uv_timer_t timer;        /* MHD_get_timeout > 0 */
    uv_idle_t idle;          /* MHD_get_timeout == 0, or a kick */
    uv_timer_t sweep;        /* once a second while connections exist: header deadlines */
    uint64_t header_timeout; /* ms */
    list_t conns;            /* every open connection (http_conn_t.link) */
    int open_handles;        /* freed when the last close callback runs */
    int conn_closed;         /* NOTIFY_CONNECTION CLOSED seen during MHD_run */
    int kicked;              /* a resume asked for another MHD_run */
    int quiesced, closing;
    int port;
    size_t max_body;
    char *api_key; /* owned or NULL */
    size_t api_key_len;
    http_handler_cb handler;
    void (*on_done)(void *app, int status);
    void *app;   /* borrowed, passed to handler and on_done */
    list_t live; /* requests not yet completed (http_req_t.link) */
    int n_live;
    uint64_t next_id;
};

struct http_req {
    http_server_t *hs;
    struct MHD_Connection *conn;
    http_conn_t *hc; /* its connection, or NULL */
    list_t link;     /* in hs->live */
    char method[16];
    char *path;      /* owned: the target's path, in origin form */
    char *authority; /* owned: the host of an absolute-form target, else NULL */
    char *body;      /* owned, NUL-terminated */
    size_t body_len, body_cap;
    int too_large;
    int in_access;  /* inside the access handler: replies are queued directly */
    int dispatched; /* the handler has seen it */
    int answered;   /* a response was queued or is pending */
    int suspended;
    int gone;                     /* the client closed its connection */
    uv_poll_t *watch;             /* UV_DISCONNECT watch, started at the first suspension;
                                   * closed when the request completes, freed on close */
    struct MHD_Response *pending; /* a reply made while suspended, queued on the next call */
    unsigned pending_status;
    int streaming;
    char *sbuf; /* owned: stream bytes not yet handed to MHD */
    size_t slen, soff, scap;
    int sdone, serr;
    void *job;
    http_closed_cb closed;
    uint64_t t0; /* uv_hrtime at arrival */
    int status;
    http_log_info_t log;
};

/* What a request head (request line and headers) may hold. libmicrohttpd answers requests
 * too big for its per-connection memory itself, with an HTML page (414 while it still reads
 * the request line, 431 after); its memory is therefore set to HTTP_MHD_MEMORY, well above
 * these limits, so that the heads between them and it reach access_cb and get the OpenAI
 * error object. The values are those of common front ends: 8 KiB for the request target
 * (nginx's large_client_header_buffers), 16 KiB for the whole head (h11, as uvicorn and thus
 * vLLM use it, and Node). */
#define HTTP_MAX_TARGET ((size_t)8 * 1024)
#define HTTP_MAX_HEAD ((size_t)16 * 1024)
#define HTTP_MHD_MEMORY ((size_t)64 * 1024)

/* Checks the head of r, whose headers just arrived (access_cb's first call, which passes
 * libmicrohttpd's method, url and version), for what libmicrohttpd lets through but a careful
 * HTTP/1.1 server refuses (RFC 9112): a target or head over the limits above, a missing or
 * repeated Host, conflicting body framing (the request-smuggling shapes), a header name with a
 * blank or another non-token byte, a NUL inside a header value, a folded header line, an
 * absolute-form target without a host, a transfer coding other than chunked. Answers r with the
 * OpenAI error object and "Connection: close" and returns 1 when it refuses; 0 otherwise. */
int http_head_refused(http_req_t *r, const char *method, const char *url, const char *version);

/* The path of a request target (without its query, which libmicrohttpd has taken off): url
 * itself in origin form ("/v1/models"); in absolute form ("http://host:port/v1/models",
 * which RFC 9112 §3.2.2 says a server must accept) what follows the authority, whose length
 * goes to *authority_len (it starts at the path minus that length). The path is "" when the
 * target has none, which means "/". */
const char *http_target_path(const char *url, size_t *authority_len);

/* Asks for one more MHD_run on the next loop iteration (after a resume). */
void http_kick(http_server_t *hs);
/* Suspends r's connection (only from the access handler or the content reader) and watches
 * its socket for the client leaving meanwhile. */
void http_conn_suspend(http_req_t *r);
/* Resumes r's connection if suspended (stopping the watch first) and kicks the daemon. */
void http_conn_resume(http_req_t *r);
/* Stops and closes r's disconnect watch, if any. */
void http_watch_stop(http_req_t *r);

#endif
