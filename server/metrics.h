/* metrics.h - request metrics kept by the loop thread and GET /metrics (Prometheus text).
 *
 * Histograms and counters here are written and read only on the loop thread, so they need
 * no lock; the engine's own counters come from eng_get_stats at render time.
 */
#ifndef NANO_VLLM_SERVER_METRICS_H
#define NANO_VLLM_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

#define METRICS_MAX_BUCKETS 24
#define METRICS_MAX_STATUS 16

typedef struct metrics_hist {
    const double *bounds; /* static upper bounds, ascending; +Inf is implied */
    int n_bounds;
    uint64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
} metrics_hist_t;

typedef struct metrics {
    metrics_hist_t ttft; /* seconds to the first generated token */
    metrics_hist_t itl;  /* seconds between tokens of one choice */
    metrics_hist_t e2e;  /* seconds from arrival to the last token */
    uint64_t finish[5];  /* choices by enum eng_finish (index 0 unused) */
    int status_code[METRICS_MAX_STATUS];
    uint64_t status_count[METRICS_MAX_STATUS];
    uint64_t prompt_tokens, generation_tokens; /* of finished completions */
} metrics_t;

void metrics_init(metrics_t *m);
void metrics_observe(metrics_hist_t *h, double v);
void metrics_count_status(metrics_t *m, int status);

/* The Prometheus text exposition of m and, when st is not NULL, the engine counters, and
 * when info is not NULL the KV cache's configuration (as vLLM's cache_config_info).
 * Returns a malloc'd NUL-terminated text (caller frees) or NULL. */
char *metrics_render(const metrics_t *m, const eng_stats_t *st, const eng_info_t *info,
                     size_t *len);

#endif
