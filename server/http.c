/* http.c - libmicrohttpd 0.9.75 in external epoll mode, driven by the libuv loop.
 *
 * DESIGN: everything in this file runs on the loop thread; there are no locks. The daemon
 * has no thread of its own: a uv_poll watches MHD's epoll fd, a uv_timer honours
 * MHD_get_timeout and a uv_idle stands in for a 0 ms timeout. Each of their callbacks ends
 * in drive(), which calls MHD_run. Deferred and streaming requests suspend their
 * connection while they have nothing to send; whoever produces output for them (the
 * engine-event callback in serve.c) calls http_reply / http_stream_write, which resume the
 * connection and kick the idle handle so that the next loop iteration runs MHD.
 *
 * Workarounds for MHD 0.9.75 (found by experiment; see the project's MHD notes):
 * - Resume does not wake the daemon (no ITC in external mode), so every resume kicks drive().
 * - After the connection limit was reached, the listen socket is re-armed only at the start
 *   of the next MHD_run: a connection close (NOTIFY_CONNECTION) therefore schedules one.
 * - A 0 ms uv_timer restarted from its own callback starves libuv < 1.48 (libuv #4245):
 *   timeout 0 uses the idle handle instead.
 * - MHD does not see a client leave while its connection is suspended: a uv_poll with
 *   UV_DISCONNECT watches the socket from the request's first suspension to its end.
 * - MHD_stop_daemon aborts the process if a connection is suspended: close resumes all.
 * - MHD answers a head too big for its per-connection memory itself, with HTML: the memory is
 *   set well above our own limits (http_head.c), which answer with the OpenAI error object.
 * - A header value is measured with strlen, so a NUL inside it silently cuts it short:
 *   http_head.c looks at the bytes of the head after each value (RFC 9110 §5.5).
 * - An absolute-form target ("http://host/path", RFC 9112 §3.2.2) reaches us as it was sent:
 *   req_new keeps its path, and its authority stands in for the Host header.
 * - CONNECTION_TIMEOUT only measures inactivity, so a client that sends one header byte a
 *   second (slowloris) would hold its slot for ever: every connection must send its request
 *   headers within header_timeout of opening or of its previous response, or a sweep shuts
 *   its socket down (MHD then sees the end of the stream and closes it).
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/buf.h"
#include "server/http_int.h"
#include "server/log.h"

static void drive(http_server_t *hs);
static void conn_wait(http_server_t *hs, http_conn_t *hc);
static void sweep_cb(uv_timer_t *t);

static void idle_cb(uv_idle_t *h)
{
    drive(h->data);
}

static void timer_cb(uv_timer_t *h)
{
    drive(h->data);
}

static void epoll_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    drive(h->data);
}

void http_kick(http_server_t *hs)
{
    if (hs->closing)
        return;
    hs->kicked = 1;
    uv_idle_start(&hs->idle, idle_cb);
}

/* One MHD_run, then re-arm the timer or the idle handle for MHD's next deadline. Never
 * called from inside an MHD callback. */
static void drive(http_server_t *hs)
{
    if (hs->closing)
        return;
    hs->conn_closed = 0;
    hs->kicked = 0;
    MHD_run(hs->d);
    MHD_UNSIGNED_LONG_LONG ms = 0;
    int have = MHD_get_timeout(hs->d, &ms) == MHD_YES;
    if (hs->conn_closed || hs->kicked) {
        have = 1;
        ms = 0;
    }
    if (!have) {
        uv_timer_stop(&hs->timer);
        uv_idle_stop(&hs->idle);
    } else if (ms == 0) {
        uv_timer_stop(&hs->timer);
        uv_idle_start(&hs->idle, idle_cb);
    } else {
        uv_idle_stop(&hs->idle);
        uv_timer_start(&hs->timer, timer_cb, (uint64_t)ms, 0);
    }
}

/* ---- requests ---- */

static http_req_t *req_new(http_server_t *hs, struct MHD_Connection *conn, const char *url,
                           const char *method)
{
    http_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    size_t alen;
    const char *path = http_target_path(url, &alen);
    r->path = strdup(*path ? path : "/");
    r->authority = path != url ? strndup(path - alen, alen) : NULL;
    if (!r->path || (path != url && !r->authority)) {
        free(r->path);
        free(r->authority);
        free(r);
        return NULL;
    }
    r->hs = hs;
    r->conn = conn;
    snprintf(r->method, sizeof(r->method), "%s", method);
    r->t0 = uv_hrtime();
    r->log.prompt_tokens = -1;
    r->log.completion_tokens = -1;
    r->log.ttft = -1;
    snprintf(r->log.id, sizeof(r->log.id), "req-%llu", (unsigned long long)++hs->next_id);
    list_insert_head(&hs->live, &r->link);
    hs->n_live++;
    return r;
}

static void req_free(http_req_t *r)
{
    http_server_t *hs = r->hs;
    list_remove(&r->link);
    hs->n_live--;
    http_watch_stop(r);
    if (r->pending)
        MHD_destroy_response(r->pending);
    free(r->path);
    free(r->authority);
    free(r->body);
    free(r->sbuf);
    free(r);
#ifdef __GLIBC__
    /* Idle again: hand the heap's free pages back to the system. Requests of many sizes leave
     * the loop thread's heap fragmented, and without this the resident size creeps up under
     * a long mixed load (bench/soak.py) though nothing leaks. */
    if (hs->n_live == 0)
        malloc_trim(0);
#endif
}

/* ---- MHD callbacks ---- */

/* One piece of the body. Past max_body the pieces are read and dropped: the 413 goes out
 * after the body, which keeps the connection usable. */
static enum MHD_Result on_body(http_req_t *r, const char *data, size_t n)
{
    size_t max = r->hs->max_body;
    if (r->too_large)
        return MHD_YES;
    if (r->body_len + n > max) {
        r->too_large = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return MHD_YES;
    }
    if (buf_append_text(&r->body, &r->body_len, &r->body_cap, data, n, 1024))
        return MHD_NO;
    return MHD_YES;
}

/* The whole request is here: answer 413 or hand it to the handler, once. */
static enum MHD_Result dispatch(http_req_t *r)
{
    http_server_t *hs = r->hs;
    enum MHD_Result ok = MHD_YES;
    r->in_access = 1;
    if (r->too_large) {
        char msg[160];
        int n = snprintf(msg, sizeof(msg),
                         "{\"error\":{\"message\":\"request body is larger than %zu bytes\","
                         "\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}",
                         hs->max_body);
        http_reply(r, MHD_HTTP_CONTENT_TOO_LARGE, "application/json", msg, (size_t)n, NULL);
    } else if (!r->body && !(r->body = calloc(1, 1))) {
        ok = MHD_NO;
    } else {
        r->dispatched = 1;
        hs->handler(hs->app, r);
    }
    r->in_access = 0;
    return ok;
}

/* The access handler's first call: the head has arrived, no body yet. This is the one chance to
 * refuse a body before it is read. */
static enum MHD_Result on_head(http_server_t *hs, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, void **con_cls)
{
    http_req_t *r = req_new(hs, conn, url, method);
    if (!r)
        return MHD_NO;
    *con_cls = r;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->hc = ci ? ci->socket_context : NULL;
    if (r->hc)
        r->hc->waiting = 0;
    if (http_head_refused(r, method, url, version))
        return MHD_YES;
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > hs->max_body) {
        r->too_large = 1;
        return dispatch(r); /* 413 now: the body is never read */
    }
    return MHD_YES;
}

/* A later call with no body piece: the body has ended, or the connection was resumed (a
 * deferred reply to queue, a client gone, or nothing yet). */
static enum MHD_Result on_ready(http_req_t *r)
{
    if (r->gone)
        return MHD_NO;
    if (r->pending) {
        enum MHD_Result ok = MHD_queue_response(r->conn, r->pending_status, r->pending);
        MHD_destroy_response(r->pending);
        r->pending = NULL;
        return ok;
    }
    if (r->dispatched || r->answered) {
        if (!r->answered && !r->suspended)
            http_conn_suspend(r); /* resumed with nothing to send: wait again */
        return MHD_YES;
    }
    return dispatch(r);
}

/* libmicrohttpd calls this once with the head, once per body piece, then with no piece when
 * the body has ended and again after every resume. */
static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    http_req_t *r = *con_cls;
    if (!r)
        return on_head(cls, conn, url, method, version, con_cls);
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return on_body(r, upload_data, n);
    }
    return on_ready(r);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_req_t *r = *con_cls;
    (void)cls;
    (void)conn;
    if (!r)
        return;
    *con_cls = NULL;
    http_watch_stop(r);
    int gone = r->gone || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (gone && r->status == 0)
        r->status = 499; /* as nginx logs it: the client closed before any response */
    if (r->closed)
        r->closed(r->job, gone);
    double total = (double)(uv_hrtime() - r->t0) / 1e9;
    char extra[160] = "";
    if (r->log.prompt_tokens >= 0)
        snprintf(extra, sizeof(extra), " prompt_tokens=%d completion_tokens=%d ttft=%.4f",
                 r->log.prompt_tokens, r->log.completion_tokens,
                 r->log.ttft >= 0 ? r->log.ttft : 0.0);
    srv_log(SRV_LOG_INFO, "http", r->log.id, "%s %s status=%d%s total=%.4f finish=%s%s", r->method,
            r->path, r->status, extra, total, r->log.finish ? r->log.finish : "-",
            gone ? " client_gone=1" : "");
    if (r->hs->on_done)
        r->hs->on_done(r->hs->app, r->status);
    if (r->hc)
        conn_wait(r->hs, r->hc);
    req_free(r);
}

static void connection_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    http_server_t *hs = cls;
    http_conn_t *hc = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        hc = calloc(1, sizeof(*hc));
        if (!hc)
            return; /* untracked: it only misses the header deadline */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        hc->fd = ci ? ci->connect_fd : -1;
        conn_wait(hs, hc);
        list_insert_head(&hs->conns, &hc->link);
        *socket_context = hc;
        if (!uv_is_active((uv_handle_t *)&hs->sweep) && !hs->closing)
            uv_timer_start(&hs->sweep, sweep_cb, 1000, 1000);
        return;
    }
    hs->conn_closed = 1;
    if (!hc)
        return;
    list_remove(&hc->link);
    free(hc);
    *socket_context = NULL;
    if (list_empty(&hs->conns))
        uv_timer_stop(&hs->sweep);
}

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    srv_log(SRV_LOG_INFO, "mhd", NULL, "%s", msg);
}

/* ---- the header deadline ---- */

static void sweep_cb(uv_timer_t *t)
{
    http_server_t *hs = t->data;
    uint64_t now = uv_now(hs->loop);
    int cut = 0;
    list_t *it;
    LIST_FOREACH(it, &hs->conns)
    {
        http_conn_t *hc = LIST_DATA(it, http_conn_t, link);
        if (hc->waiting && hc->fd >= 0 && now >= hc->deadline) {
            srv_log(SRV_LOG_INFO, "http", NULL,
                    "closing a connection that sent no complete request in %llu ms",
                    (unsigned long long)hs->header_timeout);
            shutdown(hc->fd, SHUT_RDWR);
            hc->fd = -1; /* MHD closes the fd; never touch it again */
            cut = 1;
        }
    }
    if (cut)
        http_kick(hs);
}

/* The connection has finished a request (or just opened): it must start the next one in
 * time. */
static void conn_wait(http_server_t *hs, http_conn_t *hc)
{
    hc->waiting = 1;
    hc->deadline = uv_now(hs->loop) + hs->header_timeout;
}

/* ---- the server ---- */

/* Binds and listens on host (a numeric address or a name such as "localhost", resolved to
 * its first address) and port. The listen socket is ours, so a busy port is a clear error
 * before MHD starts. */
static int listen_on(const char *host, int port, int *out_fd, int *out_port, int *v6, char *err,
                     size_t errlen)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, errlen, "--host: cannot resolve '%s': %s", host, gai_strerror(gai));
        return -EINVAL;
    }
    *v6 = ai->ai_family == AF_INET6;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        freeaddrinfo(ai);
        snprintf(err, errlen, "socket: %s", strerror(e));
        return -e;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 511) != 0) {
        int e = errno;
        freeaddrinfo(ai);
        snprintf(err, errlen, "%s%s%s:%d: %s", *v6 ? "[" : "", host, *v6 ? "]" : "", port,
                 strerror(e));
        close(fd);
        return -e;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &slen);
    *out_port = ntohs(*v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                          : ((struct sockaddr_in *)&ss)->sin_port);
    *out_fd = fd;
    return 0;
}

static void handle_close_cb(uv_handle_t *h)
{
    http_server_t *hs = h->data;
    if (--hs->open_handles == 0) {
        free(hs->api_key);
        free(hs);
    }
}

int http_server_init(http_server_t **out, uv_loop_t *loop, const http_options_t *o,
                     http_handler_cb handler, void *app, char *err, size_t errlen)
{
    *out = NULL;
    http_server_t *hs = calloc(1, sizeof(*hs));
    if (!hs) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    list_init(&hs->conns);
    list_init(&hs->live);
    hs->loop = loop;
    hs->handler = handler;
    hs->on_done = o->on_done;
    hs->app = app;
    hs->max_body = o->max_body_bytes;
    hs->header_timeout = (uint64_t)(o->header_timeout ? o->header_timeout : 30) * 1000;
    if (o->api_key && o->api_key[0]) {
        if (!(hs->api_key = strdup(o->api_key))) {
            free(hs);
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        hs->api_key_len = strlen(hs->api_key);
    }
    int fd = -1, v6 = 0, rc = listen_on(o->host, o->port, &fd, &hs->port, &v6, err, errlen);
    if (rc) {
        free(hs->api_key);
        free(hs);
        return rc;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* EXTERNAL_LOGGER must come first or MHD's early messages go to stderr. */
    hs->d = MHD_start_daemon(
        flags, 0, NULL, NULL, access_cb, hs, MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, hs,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)o->conn_timeout, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)o->conn_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)o->per_ip_limit,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_MHD_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
        completed_cb, hs, MHD_OPTION_NOTIFY_CONNECTION, connection_cb, hs, MHD_OPTION_END);
    if (!hs->d) {
        snprintf(err, errlen, "could not start the HTTP daemon on %s:%d", o->host, hs->port);
        close(fd);
        free(hs->api_key);
        free(hs);
        return -EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(hs->d, MHD_DAEMON_INFO_EPOLL_FD);
    uv_poll_init(loop, &hs->epoll_poll, di->epoll_fd);
    uv_timer_init(loop, &hs->timer);
    uv_idle_init(loop, &hs->idle);
    uv_timer_init(loop, &hs->sweep);
    hs->epoll_poll.data = hs->timer.data = hs->idle.data = hs->sweep.data = hs;
    hs->open_handles = 4;
    uv_poll_start(&hs->epoll_poll, UV_READABLE, epoll_cb);
    http_kick(hs);
    *out = hs;
    return 0;
}

int http_server_port(const http_server_t *hs)
{
    return hs->port;
}

void http_server_quiesce(http_server_t *hs)
{
    if (!hs || hs->quiesced)
        return;
    hs->quiesced = 1;
    MHD_socket fd = MHD_quiesce_daemon(hs->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd); /* after a quiesce MHD leaves closing the listen socket to us */
    http_kick(hs);
}

int http_server_active(const http_server_t *hs)
{
    return hs ? hs->n_live : 0;
}

void http_server_close(http_server_t *hs)
{
    if (!hs || hs->closing)
        return;
    /* MHD_stop_daemon aborts the process while a connection is suspended. */
    list_t *it;
    LIST_FOREACH(it, &hs->live)
    {
        http_req_t *r = LIST_DATA(it, http_req_t, link);
        if (r->suspended) {
            http_watch_stop(r);
            r->suspended = 0;
            MHD_resume_connection(r->conn);
        }
    }
    hs->closing = 1;
    uv_poll_stop(&hs->epoll_poll); /* before MHD closes its epoll fd */
    MHD_stop_daemon(hs->d);        /* completes every request: closed callbacks run here */
    hs->d = NULL;
    uv_close((uv_handle_t *)&hs->epoll_poll, handle_close_cb);
    uv_close((uv_handle_t *)&hs->timer, handle_close_cb);
    uv_close((uv_handle_t *)&hs->idle, handle_close_cb);
    uv_close((uv_handle_t *)&hs->sweep, handle_close_cb);
}
