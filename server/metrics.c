/* metrics.c - counters and histograms of the loop thread, rendered as Prometheus text.
 *
 * Names follow vLLM's (with a nano_vllm_ prefix instead of vllm:) so dashboards carry over.
 */
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/buf.h"

/* vLLM's bucket bounds for the same three histograms. */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                                    0.4,  0.5,   0.75, 1.0,   2.5, 5.0,  7.5, 10.0};
static const double e2e_bounds[] = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,  2.5,   5.0,  10.0,
                                    15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

void metrics_init(metrics_t *m)
{
    memset(m, 0, sizeof(*m));
    m->ttft.bounds = ttft_bounds;
    m->ttft.n_bounds = COUNT(ttft_bounds);
    m->itl.bounds = itl_bounds;
    m->itl.n_bounds = COUNT(itl_bounds);
    m->e2e.bounds = e2e_bounds;
    m->e2e.n_bounds = COUNT(e2e_bounds);
}

void metrics_observe(metrics_hist_t *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void metrics_count_status(metrics_t *m, int status)
{
    for (int i = 0; i < METRICS_MAX_STATUS; i++) {
        if (m->status_code[i] == status || m->status_code[i] == 0) {
            m->status_code[i] = status;
            m->status_count[i]++;
            return;
        }
    }
}

typedef struct buf {
    char *p;
    size_t len, cap;
    int failed;
} buf_t;

static void put(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        if (buf_reserve(&b->p, &b->cap, b->len + (size_t)n + 1, 8192)) {
            b->failed = 1;
            return;
        }
    }
}

static void hist(buf_t *b, const char *name, const char *help, const metrics_hist_t *h)
{
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    put(b, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

static void metric(buf_t *b, const char *name, const char *type, const char *help, double v)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

char *metrics_render(const metrics_t *m, const eng_stats_t *st, const eng_info_t *info, size_t *len)
{
    buf_t b = {malloc(8192), 0, 8192, 0};
    if (!b.p)
        return NULL;
    b.p[0] = '\0';
    /* num_gpu_blocks repeats num_blocks under vLLM's label name, which is where the Gateway API
     * Inference Extension's endpoint picker reads the pool size (with block_size) from. */
    if (info)
        put(&b,
            "# HELP nano_vllm_cache_config_info KV cache configuration (the value is 1).\n"
            "# TYPE nano_vllm_cache_config_info gauge\n"
            "nano_vllm_cache_config_info{block_size=\"%d\",cache_dtype=\"%s\","
            "num_blocks=\"%d\",num_gpu_blocks=\"%d\"} 1\n",
            info->block_size, info->kv_cache_dtype ? info->kv_cache_dtype : "", info->num_kv_blocks,
            info->num_kv_blocks);
    if (st) {
        metric(&b, "nano_vllm_num_requests_running", "gauge", "Sequences in the running batch.",
               st->running);
        metric(&b, "nano_vllm_num_requests_waiting", "gauge", "Sequences waiting to be scheduled.",
               st->waiting);
        metric(&b, "nano_vllm_kv_cache_usage_perc", "gauge",
               "Fraction of KV-cache blocks in use (1 = full).",
               st->kv_blocks_total ? (double)st->kv_blocks_used / st->kv_blocks_total : 0.0);
        metric(&b, "nano_vllm_kv_cache_blocks_used", "gauge", "KV-cache blocks in use.",
               st->kv_blocks_used);
        metric(&b, "nano_vllm_kv_cache_blocks", "gauge", "KV-cache blocks in the pool.",
               st->kv_blocks_total);
        metric(&b, "nano_vllm_prefix_cache_queries_total", "counter",
               "Prompt tokens looked up in the prefix cache.", (double)st->prefix_cache_queries);
        metric(&b, "nano_vllm_prefix_cache_hits_total", "counter",
               "Prompt tokens served from the prefix cache.", (double)st->prefix_cache_hits);
        metric(&b, "nano_vllm_prefix_cache_hit_rate", "gauge",
               "Prefix-cache hits over queries since start.",
               st->prefix_cache_queries
                   ? (double)st->prefix_cache_hits / (double)st->prefix_cache_queries
                   : 0.0);
        metric(&b, "nano_vllm_num_preemptions_total", "counter",
               "Sequences preempted for lack of KV blocks.", (double)st->preemptions);
        metric(&b, "nano_vllm_prompt_tokens_total", "counter", "Prompt tokens processed.",
               (double)st->prompt_tokens);
        metric(&b, "nano_vllm_generation_tokens_total", "counter", "Tokens generated.",
               (double)st->generation_tokens);
        metric(&b, "nano_vllm_scheduler_steps_total", "counter", "Scheduler steps run.",
               (double)st->steps);
        metric(&b, "nano_vllm_forward_tokens_total", "counter",
               "Rows run through the model (prompt chunks, recomputes and decodes).",
               (double)st->forward_tokens);
        const struct {
            const char *name;
            double v;
        } ph[] = {{"schedule", st->schedule_seconds},
                  {"forward", st->forward_seconds},
                  {"sample", st->sample_seconds},
                  {"handoff", st->handoff_seconds},
                  {"idle", st->idle_seconds}};
        put(&b, "# HELP nano_vllm_engine_seconds_total Wall seconds of the scheduler thread by "
                "phase: schedule (plan the step, lay out the batch), forward (the model), "
                "sample (sample, detokenize, stop checks, events), handoff (requests in, events "
                "out, the wake), idle (nothing to do).\n"
                "# TYPE nano_vllm_engine_seconds_total counter\n");
        for (int i = 0; i < COUNT(ph); i++)
            put(&b, "nano_vllm_engine_seconds_total{phase=\"%s\"} %.6f\n", ph[i].name, ph[i].v);
    }
    hist(&b, "nano_vllm_time_to_first_token_seconds", "Time from arrival to the first token.",
         &m->ttft);
    hist(&b, "nano_vllm_inter_token_latency_seconds", "Time between tokens of one choice.",
         &m->itl);
    hist(&b, "nano_vllm_e2e_request_latency_seconds", "Time from arrival to the last token.",
         &m->e2e);
    put(&b, "# HELP nano_vllm_request_success_total Finished choices by finish reason.\n"
            "# TYPE nano_vllm_request_success_total counter\n");
    for (int i = ENG_FINISH_STOP; i <= ENG_FINISH_ERROR; i++)
        put(&b, "nano_vllm_request_success_total{finished_reason=\"%s\"} %llu\n",
            eng_finish_name(i), (unsigned long long)m->finish[i]);
    put(&b, "# HELP nano_vllm_http_requests_total HTTP requests by status code.\n"
            "# TYPE nano_vllm_http_requests_total counter\n");
    for (int i = 0; i < METRICS_MAX_STATUS && m->status_code[i]; i++)
        put(&b, "nano_vllm_http_requests_total{status=\"%d\"} %llu\n", m->status_code[i],
            (unsigned long long)m->status_count[i]);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
