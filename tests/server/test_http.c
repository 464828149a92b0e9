/* test_http.c - the MHD-on-libuv layer (server/http.c, http_req.c) with real sockets.
 *
 * The loop thread runs an http_server with a small connection limit and short timeouts and a
 * handler of four routes; a client thread talks to it over plain TCP sockets. Covered: an
 * immediate reply, a deferred one (suspend, reply from a timer, resume), a stream of events
 * from a timer, a client leaving a suspended request (the UV_DISCONNECT watch), the server
 * staying reachable after the connection limit was reached (MHD 0.9.75 would stay deaf without
 * the re-run after a close), the header deadline against slowloris, 413, shutdown with
 * suspended connections, and uv_loop_close() == 0 at the end. Also the head checks of RFC
 * 9110/9112 that need the raw bytes: an absolute-form target served as its path (its authority
 * as Host), a NUL inside a header value and a folded header refused with 400.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/clock.h"
#include "server/http.h"
#include "tests/check.h"
#include "tests/time_scale.h"

/* The deferred reply's delay: longer than a client's leaving takes to be noticed. */
#define LATER_MS (300 * TEST_TIME_SCALE)

/* ---- the server side (loop thread) ---- */

typedef struct job {
    http_req_t *r; /* NULL once closed */
    uv_timer_t timer;
    int events_left; /* stream: events still to send */
    int closed, gone;
} job_t;

typedef struct app {
    uv_loop_t loop;
    http_server_t *hs;
    uv_async_t stop;
    int port;
    int deferred_closed, deferred_gone; /* atomic: the client thread reads them */
    int later_replies;                  /* atomic: deferred replies sent */
    int streams_done;                   /* loop thread; read after the join */
} app_t;

static void job_timer_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void job_done(job_t *j)
{
    uv_timer_stop(&j->timer);
    uv_close((uv_handle_t *)&j->timer, job_timer_close_cb);
}

static void job_closed_cb(void *arg, int client_gone)
{
    job_t *j = arg;
    app_t *a = j->timer.loop->data;
    j->r = NULL;
    j->closed = 1;
    j->gone = client_gone;
    if (j->events_left < 0) { /* a deferred request; the client thread reads these */
        __atomic_add_fetch(&a->deferred_closed, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&a->deferred_gone, client_gone, __ATOMIC_SEQ_CST);
    }
    job_done(j);
}

static void later_cb(uv_timer_t *t)
{
    job_t *j = t->data;
    app_t *a = t->loop->data;
    if (j->r) {
        __atomic_add_fetch(&a->later_replies, 1, __ATOMIC_SEQ_CST);
        http_reply(j->r, 200, "text/plain", "later", 5, NULL);
    }
}

static void stream_cb(uv_timer_t *t)
{
    job_t *j = t->data;
    app_t *a = t->loop->data;
    if (!j->r)
        return;
    char ev[32];
    int n = snprintf(ev, sizeof(ev), "data: %d\n\n", j->events_left);
    http_stream_write(j->r, ev, (size_t)n);
    if (--j->events_left == 0) {
        http_stream_end(j->r, 0);
        a->streams_done++;
        uv_timer_stop(t);
    }
}

static void handler(void *arg, http_req_t *r)
{
    app_t *a = arg;
    const char *path = http_req_path(r);
    if (strcmp(path, "/hello") == 0) {
        http_reply(r, 200, "text/plain", "hello", 5, NULL);
    } else if (strcmp(path, "/echo") == 0) { /* the path, Host and X-A as the handler sees them */
        const char *host = http_req_header(r, "Host"), *xa = http_req_header(r, "X-A");
        char out[512];
        int n = snprintf(out, sizeof(out), "path=%s host=%s x-a=[%s]", path, host ? host : "-",
                         xa ? xa : "-");
        http_reply(r, 200, "text/plain", out, (size_t)n, NULL);
    } else if (strcmp(path, "/later") == 0 || strcmp(path, "/stream") == 0) {
        job_t *j = calloc(1, sizeof(*j));
        j->r = r;
        uv_timer_init(&a->loop, &j->timer);
        j->timer.data = j;
        if (path[1] == 'l') {
            j->events_left = -1;
            http_defer(r, j, job_closed_cb);
            uv_timer_start(&j->timer, later_cb, LATER_MS, 0);
        } else {
            j->events_left = 3;
            http_stream_start(r, "text/event-stream", j, job_closed_cb);
            uv_timer_start(&j->timer, stream_cb, 20, 20);
        }
    } else if (strcmp(path, "/forever") == 0) { /* deferred, never answered */
        job_t *j = calloc(1, sizeof(*j));
        j->r = r;
        j->events_left = -1;
        uv_timer_init(&a->loop, &j->timer);
        j->timer.data = j;
        http_defer(r, j, job_closed_cb);
    } else {
        http_reply(r, 404, "text/plain", "no", 2, NULL);
    }
}

static void stop_cb(uv_async_t *h)
{
    app_t *a = h->data;
    http_server_close(a->hs); /* with /forever still suspended: must not abort */
    uv_close((uv_handle_t *)h, NULL);
}

/* ---- the client side (its own thread) ---- */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until the peer closes, the buffer is full, "needle" appears, or timeout seconds. */
static size_t read_until(int fd, char *buf, size_t cap, const char *needle, double timeout)
{
    size_t len = 0;
    double end = clock_now_sec() + timeout;
    while (len + 1 < cap) {
        int ms = (int)((end - clock_now_sec()) * 1000);
        if (ms <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (needle && strstr(buf, needle))
            break;
    }
    buf[len] = '\0';
    return len;
}

static int send_str(int fd, const char *s)
{
    return send(fd, s, strlen(s), MSG_NOSIGNAL) == (ssize_t)strlen(s) ? 0 : -1;
}

/* One request on a fresh connection; the answer (head and body) is in buf. */
static void exchange(int port, const char *req, size_t len, char *buf, size_t cap)
{
    int fd = dial(port);
    CHECK(fd >= 0);
    CHECK(send(fd, req, len, MSG_NOSIGNAL) == (ssize_t)len);
    read_until(fd, buf, cap, NULL, 5); /* every request here asks for Connection: close */
    close(fd);
}

#define EXCHANGE(port, lit, buf) exchange(port, lit, sizeof(lit) - 1, buf, sizeof(buf))

static void head_checks(int port)
{
    char buf[4096];
    /* Absolute form (RFC 9112 §3.2.2): the path is served, the authority replaces Host. */
    EXCHANGE(port,
             "GET http://example.test:8000/echo?x=1 HTTP/1.1\r\nHost: other\r\n"
             "Connection: close\r\n\r\n",
             buf);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    CHECK(strstr(buf, "path=/echo host=example.test:8000 x-a=[-]") != NULL);
    EXCHANGE(port, "GET HTTPS://h/echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", buf);
    CHECK(strstr(buf, "path=/echo host=h ") != NULL);
    EXCHANGE(port, "GET http://h HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", buf);
    CHECK(strncmp(buf, "HTTP/1.1 404", 12) == 0); /* "/", which this handler does not serve */
    EXCHANGE(port, "GET http:///echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", buf);
    CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0 && strstr(buf, "has no host"));
    /* Origin form is unchanged. */
    EXCHANGE(port, "GET /echo HTTP/1.1\r\nHost: h2\r\nX-A: a b\r\nConnection: close\r\n\r\n", buf);
    CHECK(strstr(buf, "path=/echo host=h2 x-a=[a b]") != NULL);

    /* A NUL inside a header value (RFC 9110 §5.5), in the middle of the head and in its last
     * header, with CR LF and with bare LF line ends: 400, not the value cut short. */
    static const struct {
        const char *s;
        size_t n;
    } nul[] = {
#define LIT(s) {s, sizeof(s) - 1}
        LIT("GET /echo HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\nConnection: close\r\n\r\n"),
        LIT("GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-A: a\0b\r\n\r\n"),
        LIT("GET /echo HTTP/1.1\nHost: h\nX-A: a\0\0b\nConnection: close\n\n"),
        LIT("GET /echo HTTP/1.1\r\nHost: h\0evil\r\nConnection: close\r\n\r\n"),
        LIT("POST /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-A: \0 x\r\n"
            "Content-Length: 2\r\n\r\n{}"),
#undef LIT
    };
    for (size_t i = 0; i < sizeof(nul) / sizeof(nul[0]); i++) {
        exchange(port, nul[i].s, nul[i].n, buf, sizeof(buf));
        if (strncmp(buf, "HTTP/1.1 400", 12) != 0 || !strstr(buf, "NUL byte"))
            fprintf(stderr, "  NUL case %zu got: %.60s\n", i, buf);
        CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0 && strstr(buf, "NUL byte"));
    }
    /* A NUL with nothing but NULs and blanks after it reads as the RFC's replacement by a
     * space, the trailing blanks dropped: accepted as "a". */
    static const char trail[] = "GET /echo HTTP/1.1\r\nHost: h\r\nX-A: a\0 \0\r\n"
                                "Connection: close\r\n\r\n";
    exchange(port, trail, sizeof(trail) - 1, buf, sizeof(buf));
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "x-a=[a]"));
    /* A header folded over two lines (obs-fold, RFC 9112 §5.2): 400. */
    EXCHANGE(port, "GET /echo HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n",
             buf);
    CHECK(strncmp(buf, "HTTP/1.1 400", 12) == 0 && strstr(buf, "folded"));
    /* A long head of many headers (within the limits) is still read right. */
    char big[12000];
    int n = snprintf(big, sizeof(big), "GET /echo HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 150; i++)
        n += snprintf(big + n, sizeof(big) - (size_t)n, "X-H%d: %050d\r\n", i, i);
    n += snprintf(big + n, sizeof(big) - (size_t)n, "X-A: last\r\nConnection: close\r\n\r\n");
    exchange(port, big, (size_t)n, buf, sizeof(buf));
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "x-a=[last]"));
}

static void *client(void *arg)
{
    app_t *a = arg;
    char buf[8192];

    /* An immediate reply and a 404 on one keep-alive connection. */
    int fd = dial(a->port);
    CHECK(fd >= 0);
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    read_until(fd, buf, sizeof(buf), "hello", 5);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "\r\n\r\nhello"));
    send_str(fd, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    read_until(fd, buf, sizeof(buf), "\r\n\r\nno", 5);
    CHECK(strncmp(buf, "HTTP/1.1 404", 12) == 0);

    /* Deferred: the reply comes from a timer LATER_MS later, through suspend and resume. */
    double t0 = clock_now_sec();
    send_str(fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    read_until(fd, buf, sizeof(buf), "later", 5);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "\r\n\r\nlater"));
    CHECK(clock_now_sec() - t0 >= LATER_MS / 1000.0 - 0.05 &&
          clock_now_sec() - t0 < 3.0 * TEST_TIME_SCALE);

    /* A stream of three events, chunked, ended by the zero chunk. */
    send_str(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    read_until(fd, buf, sizeof(buf), "0\r\n\r\n", 5);
    CHECK(strstr(buf, "Transfer-Encoding: chunked") != NULL);
    CHECK(strstr(buf, "data: 3\n\n") && strstr(buf, "data: 2\n\n") && strstr(buf, "data: 1\n\n"));
    CHECK(strstr(buf, "\r\n0\r\n\r\n") != NULL);
    close(fd);

    head_checks(a->port);

    /* A client that leaves a suspended request is noticed at once, not at the reply: its
     * request closes as gone before its reply timer fires (an order, not a time bound). */
    int replies = __atomic_load_n(&a->later_replies, __ATOMIC_SEQ_CST);
    fd = dial(a->port);
    send_str(fd, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(50000);
    close(fd);
    for (double end = clock_now_sec() + 5.0 * TEST_TIME_SCALE;
         __atomic_load_n(&a->deferred_closed, __ATOMIC_SEQ_CST) < 2 && clock_now_sec() < end;)
        usleep(5000);
    CHECK_INT_EQ(__atomic_load_n(&a->deferred_gone, __ATOMIC_SEQ_CST), 1);
    CHECK_INT_EQ(__atomic_load_n(&a->later_replies, __ATOMIC_SEQ_CST), replies);

    /* 413 from the Content-Length alone. */
    fd = dial(a->port);
    send_str(fd, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
    read_until(fd, buf, sizeof(buf), "\r\n\r\n", 5);
    CHECK(strncmp(buf, "HTTP/1.1 413", 12) == 0);
    close(fd);

    /* Fill the connection limit (4) with idle connections; a fifth client waits in the
     * backlog and must be served once the idle ones time out (1 s), not never. */
    int idle[4];
    for (int i = 0; i < 4; i++)
        idle[i] = dial(a->port);
    usleep(100000);
    fd = dial(a->port);
    t0 = clock_now_sec();
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    read_until(fd, buf, sizeof(buf), "hello", 6);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    CHECK(clock_now_sec() - t0 < 4.0 * TEST_TIME_SCALE);
    close(fd);
    for (int i = 0; i < 4; i++)
        close(idle[i]);

    /* Slowloris: one header byte every 100 ms never completes a request; the connection is cut
     * at the header deadline (1 s) although it is never inactive. */
    fd = dial(a->port);
    t0 = clock_now_sec();
    const char *slow =
        "GET /hello HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int cut = 0;
    for (size_t i = 0; i < strlen(slow) && clock_now_sec() - t0 < 5.0 * TEST_TIME_SCALE; i++) {
        char c = slow[i];
        if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
            cut = 1;
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0 && recv(fd, buf, sizeof(buf), 0) <= 0) {
            cut = 1;
            break;
        }
    }
    CHECK(cut);
    CHECK(clock_now_sec() - t0 < 3.5 * TEST_TIME_SCALE);
    close(fd);

    /* Leave one request suspended for ever and stop the server under it. */
    fd = dial(a->port);
    send_str(fd, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(100000);
    uv_async_send(&a->stop);
    read_until(fd, buf, sizeof(buf), NULL, 5); /* the server closes it */
    close(fd);
    return NULL;
}

int main(void)
{
    app_t a;
    memset(&a, 0, sizeof(a));
    CHECK_INT_EQ(uv_loop_init(&a.loop), 0);
    a.loop.data = &a;
    char err[256];
    http_options_t o = {
        .host = "127.0.0.1",
        .port = 0,
        .max_body_bytes = 1000,
        .conn_timeout = 1,
        .header_timeout = 1,
        .conn_limit = 4,
    };
    int rc = http_server_init(&a.hs, &a.loop, &o, handler, &a, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "http_server_init: %s\n", err);
        return 1;
    }
    a.port = http_server_port(a.hs);
    CHECK(a.port > 0);

    /* A second server on the same port fails with one line naming it. */
    http_server_t *second = NULL;
    o.port = a.port;
    CHECK(http_server_init(&second, &a.loop, &o, handler, &a, err, sizeof(err)) == -EADDRINUSE);
    CHECK(strstr(err, "127.0.0.1:") && strstr(err, "in use"));

    uv_async_init(&a.loop, &a.stop, stop_cb);
    a.stop.data = &a;
    pthread_t t;
    pthread_create(&t, NULL, client, &a);
    uv_run(&a.loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    CHECK_INT_EQ(a.deferred_closed, 3); /* the answered /later, the one left, /forever */
    CHECK_INT_EQ(a.streams_done, 1);
    CHECK_INT_EQ(uv_loop_close(&a.loop), 0);
    if (check_failed_count) {
        fprintf(stderr, "test_http: %d failure(s)\n", check_failed_count);
        return 1;
    }
    puts("test_http: all passed");
    return 0;
}
