/* serve.c - `nano-vllm serve`: settings, the loop, loading, signals and the drain.
 *
 * DESIGN: the main thread runs the libuv loop and owns everything in srv_t. The port is bound
 * first (so a busy port fails at once); the tokenizer and the model load on a libuv worker
 * thread while /health answers 503. Once loaded, the engine's scheduler thread runs and wakes
 * the loop through an eventfd whenever it queued output; nothing else crosses threads.
 * Why not uv_async_send: its sender marks the handle busy, writes the fd, then marks it done,
 * and the loop thread spins and then sched_yield()s while it sees the handle busy. On a machine
 * with no idle core the woken loop thread often preempts the scheduler thread inside that
 * window, yields, and only runs again a time slice later, in the middle of the next forward
 * pass (about 3 yields per token were seen at one stream). A write to an eventfd has no such
 * window: the write is the sender's last act.
 * SIGINT/SIGTERM start a drain: no new connections, in-flight requests finish until
 * --shutdown-timeout, then end with an error event; then every handle is closed and
 * srv_main returns 0. A second signal skips the wait.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/chat_template.h"
#include "server/log.h"
#include "server/server.h"
#include "server/srv.h"

#define DRAIN_CHECK_MS 50
#define ABORT_GRACE_S 5.0 /* after aborting, how long connections get to finish */

static void on_wake(void *arg) /* scheduler thread */
{
    srv_t *s = arg;
    uint64_t one = 1;
    /* Fails only when the counter is full (EAGAIN): the loop is woken then anyway. */
    ssize_t n = write(s->wake_fd, &one, sizeof(one));
    (void)n;
}

static void shutdown_now(srv_t *s);

static void wake_cb(uv_poll_t *h, int status, int events)
{
    srv_t *s = h->data;
    (void)status;
    (void)events;
    uint64_t n;
    /* Resets the counter: wake-ups that came meanwhile are covered by this poll. */
    if (read(s->wake_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        srv_log(SRV_LOG_WARN, "srv", NULL, "wake-up eventfd: %s", strerror(errno));
    srv_handle_events(s);
}

static void on_request_done(void *app, int status)
{
    srv_t *s = app;
    metrics_count_status(&s->metrics, status);
}

/* ---- loading ---- */

/* config's dtype values are engine.h's (config cannot include it). */
#define SAME_DTYPE(c, e) ((int)CFG_DTYPE_##c == (int)ENG_DTYPE_##e)
_Static_assert(SAME_DTYPE(AUTO, AUTO) && SAME_DTYPE(F32, F32) && SAME_DTYPE(F16, F16) &&
                   SAME_DTYPE(BF16, BF16) && SAME_DTYPE(INT8W, I8) && SAME_DTYPE(BF16X3, BF16X3) &&
                   SAME_DTYPE(INT8, W8A8),
               "enum cfg_dtype and enum eng_dtype differ");

/* Loading progress: a log line every LOAD_LOG_INTERVAL_S and one at the end; on a terminal
 * (text log format) a live bar on stderr instead of the periodic lines. */
#define LOAD_LOG_INTERVAL_S 5.0
#define LOAD_BAR_INTERVAL_S 0.1
#define LOAD_BAR_WIDTH 30

typedef struct load_progress {
    double start, last; /* seconds (uv_hrtime) */
    int bar;            /* a live bar on stderr */
    int drawn;          /* the bar is on screen, its line not yet ended */
} load_progress_t;

static void draw_bar(const load_progress_t *lp, double now, uint64_t done, uint64_t total)
{
    char bar[LOAD_BAR_WIDTH + 1];
    int fill = total ? (int)(done * LOAD_BAR_WIDTH / total) : LOAD_BAR_WIDTH;
    for (int i = 0; i < LOAD_BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[LOAD_BAR_WIDTH] = 0;
    double secs = now - lp->start;
    fprintf(stderr, "\rloading weights [%s] %3d%% %.2f/%.2f GB %.2f GB/s ", bar,
            total ? (int)(done * 100 / total) : 100, (double)done / 1e9, (double)total / 1e9,
            secs > 0 ? (double)done / 1e9 / secs : 0.0);
    fflush(stderr);
}

static void on_load_progress(void *arg, uint64_t done, uint64_t total) /* the loader thread */
{
    load_progress_t *lp = arg;
    double now = (double)uv_hrtime() / 1e9;
    if (done < total) {
        if (now - lp->last < (lp->bar ? LOAD_BAR_INTERVAL_S : LOAD_LOG_INTERVAL_S))
            return;
        lp->last = now;
        if (lp->bar) {
            draw_bar(lp, now, done, total);
            lp->drawn = 1;
        } else {
            srv_log(SRV_LOG_INFO, "srv", NULL, "loading weights: %.2f of %.2f GB (%d%%)",
                    (double)done / 1e9, (double)total / 1e9, (int)(done * 100 / total));
        }
        return;
    }
    if (lp->drawn) {
        draw_bar(lp, now, done, total);
        fputc('\n', stderr);
        lp->drawn = 0;
    }
    double secs = now - lp->start;
    srv_log(SRV_LOG_INFO, "srv", NULL, "loaded %.2f GB of weights in %.1f s (100%%, %.2f GB/s)",
            (double)total / 1e9, secs, secs > 0 ? (double)total / 1e9 / secs : 0.0);
}

static void load_work_cb(uv_work_t *w) /* a libuv worker thread */
{
    srv_t *s = w->data;
    /* Name a missing or wrong model directory as such, not by the first file not in it. */
    struct stat st;
    int rc = stat(s->cfg.model_dir, &st) != 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    if (rc) {
        s->load_rc = rc;
        snprintf(s->load_err, sizeof(s->load_err), "model directory %s: %s", s->cfg.model_dir,
                 strerror(-s->load_rc));
        return;
    }
    srv_log(SRV_LOG_INFO, "srv", NULL, "loading the tokenizer from %s", s->cfg.model_dir);
    s->load_rc = tok_init(&s->tok, s->cfg.model_dir, s->load_err, sizeof(s->load_err));
    if (s->load_rc)
        return;
    s->load_rc = chat_tpl_load(&s->chat, s->cfg.model_dir, s->cfg.chat_template, s->tok,
                               s->load_err, sizeof(s->load_err));
    if (s->load_rc)
        return;
    /* Before the weights: a bad value in the file stops the start at once. */
    api_defaults_init(&s->defaults);
    if (s->cfg.generation_config == CFG_GEN_AUTO)
        s->load_rc =
            api_defaults_load(s->cfg.model_dir, &s->defaults, s->load_err, sizeof(s->load_err));
    if (s->load_rc)
        return;
    srv_log(SRV_LOG_INFO, "srv", NULL, "loading the model from %s", s->cfg.model_dir);
    load_progress_t lp = {.start = (double)uv_hrtime() / 1e9,
                          .bar = s->cfg.log_format != CFG_LOG_JSON && isatty(STDERR_FILENO)};
    lp.last = lp.start;
    eng_params_t p = {
        .model_dir = s->cfg.model_dir,
        .threads = s->cfg.threads,
        .block_size = s->cfg.block_size,
        .kv_cache_memory = s->cfg.kv_cache_memory,
        .num_kv_blocks = s->cfg.num_kv_blocks,
        .max_num_seqs = s->cfg.max_num_seqs,
        .max_num_batched_tokens = s->cfg.max_num_batched_tokens,
        .max_model_len = s->cfg.max_model_len,
        .max_waiting = s->cfg.max_waiting,
        .weight_dtype = s->cfg.weight_dtype,
        .kernel = s->cfg.kernel,
        .kv_cache_dtype = s->cfg.kv_cache_dtype,
        .max_prefill_tokens_decoding = s->cfg.max_prefill_tokens_decoding,
        .load_progress = on_load_progress,
        .load_progress_arg = &lp,
    };
    s->load_rc = eng_init(&s->eng, &p, s->tok, s->load_err, sizeof(s->load_err));
    if (lp.drawn) /* a failed load leaves the bar's line open */
        fputc('\n', stderr);
}

/* One line: the sampling defaults requests get, where they came from, and what of the file
 * is not applied (vLLM warns likewise that the model's generation config overrides its
 * defaults). */
static void log_defaults(const srv_t *s)
{
    const api_defaults_t *d = &s->defaults;
    char set[256];
    api_defaults_describe(d, set, sizeof(set));
    if (s->cfg.generation_config == CFG_GEN_NONE)
        srv_log(SRV_LOG_INFO, "srv", NULL,
                "sampling defaults: OpenAI's (--generation-config none ignores "
                "generation_config.json)");
    else if (set[0])
        srv_log(SRV_LOG_INFO, "srv", NULL,
                "sampling defaults from generation_config.json: %s; a request's own fields win "
                "(--generation-config none ignores the file)%s%s",
                set, d->ignored[0] ? "; not applied: " : "", d->ignored);
    else
        srv_log(SRV_LOG_INFO, "srv", NULL, "sampling defaults: OpenAI's (%s)%s%s",
                d->found ? "generation_config.json sets none" : "no generation_config.json",
                d->ignored[0] ? "; not applied: " : "", d->ignored);
}

static void load_done_cb(uv_work_t *w, int status)
{
    srv_t *s = w->data;
    s->loading = 0;
    if (s->stopping) { /* a failure elsewhere already began the shutdown */
        shutdown_now(s);
        return;
    }
    if (status == 0 && s->load_rc == 0)
        s->load_rc = eng_start(s->eng, on_wake, s);
    if (status != 0 || s->load_rc != 0) {
        srv_log(SRV_LOG_ERROR, "srv", NULL, "could not load the model: %s",
                s->load_err[0] ? s->load_err : strerror(-s->load_rc));
        s->exit_code = 1;
        shutdown_now(s);
        return;
    }
    eng_get_info(s->eng, &s->info);
    srv_log(SRV_LOG_INFO, "srv", NULL,
            "model %s: %d layers, %d heads, %d channels, vocab %d, context %d; weights %s "
            "%.1f MiB; KV pool %d blocks of %d tokens, %s, %.1f MiB; kernel %s, %d compute "
            "threads",
            s->model_name, s->info.n_layer, s->info.n_head, s->info.n_embd, s->info.vocab_size,
            s->info.max_model_len, s->info.weight_dtype ? s->info.weight_dtype : "?",
            (double)s->info.weight_bytes / 1048576.0, s->info.num_kv_blocks, s->info.block_size,
            s->info.kv_cache_dtype ? s->info.kv_cache_dtype : "?",
            (double)s->info.kv_bytes / 1048576.0, s->info.kernel ? s->info.kernel : "?",
            s->info.compute_threads);
    srv_log(SRV_LOG_INFO, "srv", NULL, "architecture %s, %d KV heads of %d; context %d is %s",
            s->info.arch ? s->info.arch : "?", s->info.n_kv_head, s->info.head_size,
            s->info.max_model_len, s->info.max_model_len_from);
    if (s->draining) { /* a signal came while loading */
        shutdown_now(s);
        return;
    }
    s->chat_template = s->chat != NULL;
    if (s->chat)
        srv_log(SRV_LOG_INFO, "srv", NULL, "chat template from %s", chat_tpl_source(s->chat));
    else
        srv_log(SRV_LOG_INFO, "srv", NULL,
                "the model has no chat template: /v1/chat/completions answers 400 (give one "
                "with --chat-template)");
    log_defaults(s);
    s->ready = 1;
    srv_log(SRV_LOG_INFO, "srv", NULL, "ready");
}

/* ---- drain and shutdown ---- */

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void wake_close_cb(uv_handle_t *h)
{
    srv_t *s = h->data;
    close(s->wake_fd);
    s->wake_fd = -1;
}

/* Closes the HTTP side, stops the engine and closes every handle; uv_run then returns. While
 * the loader still runs, the second half waits for its after-work callback. */
static void shutdown_now(srv_t *s)
{
    if (!s->stopping) {
        s->stopping = 1;
        s->ready = 0;
        http_server_close(s->http); /* completes every connection; jobs abort their requests */
        s->http = NULL;
    }
    if (s->loading || s->closed)
        return;
    s->closed = 1;
    eng_free(s->eng); /* joins the scheduler thread: no wake-up after this */
    s->eng = NULL;
    srv_jobs_free(s);
    uv_close((uv_handle_t *)&s->wake, wake_close_cb);
    uv_close((uv_handle_t *)&s->sigint, close_cb);
    uv_close((uv_handle_t *)&s->sigterm, close_cb);
    /* Closing the handles gives SIGINT and SIGTERM back their default action, which would
     * kill the process (status -15) if a second signal came while it closes: the drain is
     * already done, so ignore them until exit. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    uv_close((uv_handle_t *)&s->drain_timer, close_cb);
}

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static void drain_check_cb(uv_timer_t *t)
{
    srv_t *s = t->data;
    if (s->stopping)
        return;
    if (s->loading)
        return;
    int active = http_server_active(s->http);
    double now = now_s();
    if (active == 0 || now >= s->drain_start + s->cfg.shutdown_timeout + ABORT_GRACE_S) {
        srv_log(SRV_LOG_INFO, "srv", NULL, "drained (%d request(s) still open), stopping", active);
        shutdown_now(s);
        return;
    }
    if (!s->aborted && now >= s->drain_start + s->cfg.shutdown_timeout) {
        s->aborted = 1;
        srv_log(SRV_LOG_WARN, "srv", NULL,
                "shutdown timeout of %.1f s reached: aborting %d request(s)",
                s->cfg.shutdown_timeout, active);
        srv_abort_all(s, "the server is shutting down");
    }
}

static void signal_cb(uv_signal_t *h, int signum)
{
    srv_t *s = h->data;
    if (s->draining) {
        srv_log(SRV_LOG_WARN, "srv", NULL, "second signal: not waiting any longer");
        s->drain_start = now_s() - s->cfg.shutdown_timeout;
        drain_check_cb(&s->drain_timer);
        return;
    }
    s->draining = 1;
    s->drain_start = now_s();
    srv_log(SRV_LOG_INFO, "srv", NULL, "%s: draining %d request(s), waiting up to %.1f s",
            strsignal(signum), http_server_active(s->http), s->cfg.shutdown_timeout);
    http_server_quiesce(s->http);
    uv_timer_start(&s->drain_timer, drain_check_cb, 0, DRAIN_CHECK_MS);
}

/* ---- main ---- */

static char *model_name_of(const cfg_t *c)
{
    if (c->served_model_name && c->served_model_name[0])
        return strdup(c->served_model_name);
    /* The model directory's base name, without trailing slashes. */
    size_t n = strlen(c->model_dir);
    while (n > 1 && c->model_dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && c->model_dir[b - 1] != '/')
        b--;
    return strndup(c->model_dir + b, n - b);
}

static void log_settings(const cfg_t *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return;
    cfg_print(c, f);
    fclose(f);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        srv_log(SRV_LOG_INFO, "config", NULL, "%s", line);
    free(text);
}

/* --max-connections 0: as many connections as file descriptors allow. The soft open-file
 * limit is raised to the hard one first (as the Go runtime does), since 1024, the usual soft
 * default, is far below what a server needs; FD_RESERVE descriptors stay for everything that
 * is not a client connection (the listen socket, epoll, libuv, model files while loading). */
#define FD_RESERVE 64
static unsigned connection_limit(const cfg_t *c)
{
    if (c->max_connections > 0)
        return (unsigned)c->max_connections;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1000;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
    }
    rlim_t n = rl.rlim_cur == RLIM_INFINITY ? 1048576 : rl.rlim_cur;
    n = n > 1048576 ? 1048576 : n;
    return n > 2 * FD_RESERVE ? (unsigned)(n - FD_RESERVE) : (unsigned)(n / 2 ? n / 2 : 1);
}

static int start(srv_t *s)
{
    char err[256];
    unsigned conn_limit = connection_limit(&s->cfg);
    http_options_t ho = {
        .host = s->cfg.host,
        .port = s->cfg.port,
        .max_body_bytes = s->cfg.max_body_bytes,
        .conn_timeout = (unsigned)s->cfg.timeout_keep_alive,
        .header_timeout = (unsigned)s->cfg.header_timeout,
        .conn_limit = conn_limit,
        .per_ip_limit = (unsigned)s->cfg.max_connections_per_ip,
        .api_key = s->cfg.api_key,
        .on_done = on_request_done,
    };
    int rc = http_server_init(&s->http, &s->loop, &ho, srv_route, s, err, sizeof(err));
    if (rc) {
        srv_log(SRV_LOG_ERROR, "srv", NULL, "cannot listen: %s", err);
        return rc;
    }
    srv_log(SRV_LOG_INFO, "srv", NULL, "listening on %s%s%s:%d (at most %u connections)",
            strchr(s->cfg.host, ':') ? "[" : "", s->cfg.host, strchr(s->cfg.host, ':') ? "]" : "",
            http_server_port(s->http), conn_limit);
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = s->wake_fd < 0 ? -errno : uv_poll_init(&s->loop, &s->wake, s->wake_fd);
    if (rc) {
        srv_log(SRV_LOG_ERROR, "srv", NULL, "cannot create the engine's wake-up eventfd: %s",
                uv_strerror(rc));
        if (s->wake_fd >= 0)
            close(s->wake_fd);
        http_server_close(s->http);
        s->http = NULL;
        return -EIO;
    }
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    uv_timer_init(&s->loop, &s->drain_timer);
    s->wake.data = s->sigint.data = s->sigterm.data = s->drain_timer.data = s;
    uv_poll_start(&s->wake, UV_READABLE, wake_cb);
    uv_signal_start(&s->sigint, signal_cb, SIGINT);
    uv_signal_start(&s->sigterm, signal_cb, SIGTERM);
    s->load_work.data = s;
    s->loading = 1;
    rc = uv_queue_work(&s->loop, &s->load_work, load_work_cb, load_done_cb);
    if (rc) {
        s->loading = 0;
        srv_log(SRV_LOG_ERROR, "srv", NULL, "cannot start the loader: %s", uv_strerror(rc));
        s->exit_code = 1;
        shutdown_now(s);
    }
    return 0;
}

int srv_main(int argc, char **argv, char **envp)
{
    srv_t s;
    memset(&s, 0, sizeof(s));
    list_init(&s.jobs);
    char err[512] = "";
    if (cfg_init(&s.cfg)) {
        fputs("nano-vllm serve: out of memory\n", stderr);
        return 1;
    }
    int rc = cfg_load(&s.cfg, argc, argv, envp, stdout, err, sizeof(err));
    if (rc == 1) {
        cfg_free(&s.cfg);
        return 0;
    }
    if (rc == 0)
        rc = cfg_validate(&s.cfg, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "nano-vllm serve: %s\n", err);
        cfg_free(&s.cfg);
        return 2;
    }
    srv_log_setup(s.cfg.log_format == CFG_LOG_JSON, SRV_LOG_INFO);
    /* libuv does not ignore SIGPIPE; MHD sends with MSG_NOSIGNAL, but other writes may not. */
    signal(SIGPIPE, SIG_IGN);
    metrics_init(&s.metrics);
    s.started = (long long)time(NULL);
    s.next_eng_id = 1;
    if (getrandom(&s.id_salt, sizeof(s.id_salt), 0) != sizeof(s.id_salt))
        s.id_salt = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    s.model_name = model_name_of(&s.cfg);
    if (!s.model_name || uv_loop_init(&s.loop) != 0) {
        fputs("nano-vllm serve: out of memory\n", stderr);
        free(s.model_name);
        cfg_free(&s.cfg);
        return 1;
    }
    log_settings(&s.cfg);
    if (start(&s) != 0) {
        uv_run(&s.loop, UV_RUN_DEFAULT);
        uv_loop_close(&s.loop);
        free(s.model_name);
        cfg_free(&s.cfg);
        return 1;
    }
    uv_run(&s.loop, UV_RUN_DEFAULT);
    int lc = uv_loop_close(&s.loop);
    if (lc != 0)
        srv_log(SRV_LOG_WARN, "srv", NULL, "loop closed with handles left: %s", uv_strerror(lc));
    chat_tpl_free(s.chat);
    tok_free(s.tok);
    free(s.model_name);
    cfg_free(&s.cfg);
    srv_log(SRV_LOG_INFO, "srv", NULL, "stopped");
    return s.exit_code;
}
