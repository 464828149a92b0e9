/* srv.h - the server's state, shared by the files of server/ (private to the module).
 *
 * One srv_t lives on srv_main's stack for the life of the process. All of it belongs to the
 * loop thread, except: the loader thread (uv_queue_work) writes tok, eng and load_err before
 * its after-work callback runs on the loop thread, and the engine's scheduler thread only
 * ever writes to wake_fd.
 */
#ifndef NANO_VLLM_SERVER_SRV_H
#define NANO_VLLM_SERVER_SRV_H

#include <stdint.h>
#include <uv.h>

#include "common/list.h"
#include "config/config.h"
#include "engine/engine.h"
#include "server/api_defaults.h"
#include "server/http.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"

typedef struct api_job api_job_t;

typedef struct srv {
    cfg_t cfg;
    uv_loop_t loop;
    http_server_t *http; /* owned; closed in shutdown */
    uv_poll_t wake;      /* watches wake_fd: the scheduler thread's "events queued" */
    int wake_fd;         /* owned eventfd; closed in wake's close callback */
    uv_signal_t sigint, sigterm;
    uv_timer_t drain_timer; /* drain deadline, then progress checks */
    uv_work_t load_work;    /* loads the tokenizer and the model off the loop thread */
    tok_t *tok;             /* owned; NULL until loaded */
    eng_t *eng;             /* owned; NULL until loaded */
    eng_info_t info;
    struct chat_tpl *chat; /* owned; written by the loader; NULL = the model has no template */
    int load_rc;
    char load_err[512];
    int loading, ready, draining, aborted, stopping, closed, exit_code;
    int chat_template;  /* 1 once the model's chat template is loaded (/v1/chat/completions) */
    api_defaults_t defaults; /* what requests leave out: OpenAI's or generation_config.json's;
                              * written by the loader */
    char *model_name;   /* owned: --served-model-name or the model directory's name */
    long long started;  /* unix time */
    double drain_start; /* seconds (uv_hrtime) when the drain began */
    metrics_t metrics;
    list_t jobs; /* completions not yet freed (api_job_t.link) */
    int n_jobs;
    uint64_t next_eng_id;
    uint64_t id_salt; /* random, makes completion ids unique across restarts */
    uint64_t next_job;
} srv_t;

/* Answers r with an OpenAI error object (status, type, code, param, message) and the extra
 * headers (NULL or name/value pairs ending in NULL). Loop thread. */
struct api_error;
void srv_reply_error(http_req_t *r, const struct api_error *e, const char *const *headers);
/* Answers r with a JSON text (copied). */
void srv_reply_json(http_req_t *r, int status, const char *json, size_t len);

/* When the server is loading or draining, answers r with 503 (and Retry-After) and returns 1;
 * else returns 0. */
int srv_busy(srv_t *s, http_req_t *r);

/* The routes of the HTTP API (routes.c); the handler given to http_server_init. */
void srv_route(void *app, http_req_t *r);

/* Engine events: the wake-up callback runs this on the loop thread (completion.c). */
void srv_handle_events(srv_t *s);
/* POST /v1/completions (completion.c). */
void srv_completions(srv_t *s, http_req_t *r);
/* POST /v1/chat/completions (chat.c). */
void srv_chat_completions(srv_t *s, http_req_t *r);
/* POST /tokenize with "messages" (chat.c): answers r and returns 0, or returns 1 when the
 * body has no "messages" (the caller answers it as a plain prompt). */
int srv_tokenize_chat(srv_t *s, http_req_t *r);
/* Ends every running completion with a final error (drain timeout); their engine requests
 * are aborted. */
void srv_abort_all(srv_t *s, const char *why);
/* Frees every job once the engine is gone (shutdown). */
void srv_jobs_free(srv_t *s);

#endif
