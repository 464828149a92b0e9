/* bench/sched.c - continuous batching speed on the GPT-2 124M shape: aggregate generated
 * tokens/s at several concurrencies, the share of step time spent outside the forward pass
 * (scheduling, sampling, detokenizing, events), time to first token and inter-token latency.
 *
 *   bench/sched [MODEL_DIR] [--concurrency 1,8,32,64] [--prompt-tokens 64]
 *               [--new-tokens 128] [--threads N] [--max-num-batched-tokens 512]
 *               [--max-prefill-tokens-decoding 48] [--steady-waves 3]
 *               [--kv-cache-dtype auto|f32|f16]
 *
 * Without a model in MODEL_DIR (default: a directory in the build tree, shared with
 * bench/engine) it writes a seeded random 124M checkpoint there with scripts/make-checkpoint
 * first. Each concurrency runs a burst round (all requests submitted at once) and a steady
 * round (--steady-waves x conc requests, a finished one replaced at once, counted only
 * while conc streams decode and new prompts keep arriving; 0 skips it). Greedy, ignore_eos;
 * the engine is stepped on this thread. The bound each round is compared with is measured
 * in the same round: generated tokens over the time spent inside model_forward alone.
 * Not a test: run it by hand, briefly (lower --new-tokens on a busy machine).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bounds.h"
#include "engine/engine.h"
#include "engine/sched/scheduler.h"
#include "engine/testing.h"
#include "tokenizer/tokenizer.h"

#define MAX_ROUNDS 8

/* The p-th percentile (0..100) of sorted v (n > 0), nearest rank. */
static double pct(const double *v, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)n);
    return v[i < n ? i : n - 1];
}

typedef struct round_result {
    int conc, steps, max_rows;
    long generated;
    double wall, step_sum, forward_sum;
    double ttft[3], itl[3], step_p99; /* p50, p90, p99 in seconds */
} round_result_t;

static eng_request_t *make_request(uint64_t id, int prompt_tokens, int new_tokens, uint64_t *seed)
{
    eng_request_t *r = calloc(1, sizeof(*r));
    if (!r || !(r->prompt = malloc((size_t)prompt_tokens * sizeof(int32_t)))) {
        free(r);
        return NULL;
    }
    for (int k = 0; k < prompt_tokens; k++) {
        *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
        r->prompt[k] = (int32_t)((*seed >> 33) % 50000); /* distinct: no cache hits */
    }
    r->id = id;
    r->prompt_len = prompt_tokens;
    r->n = 1;
    r->max_tokens = new_tokens;
    r->ignore_eos = 1;
    eng_sampling_default(&r->sp);
    r->sp.temperature = 0;
    return r;
}

/* One round: waves x conc requests, conc of them in flight (a finished one is replaced at
 * once). With one wave all arrive together and the whole round counts (burst). With more,
 * only the window from the first replacement to the last submission counts (steady): conc
 * streams decode throughout it while new prompts keep arriving. */
static int run_round(eng_t *e, int conc, int waves, int prompt_tokens, int new_tokens,
                     uint64_t *seed, round_result_t *res)
{
    int total = conc * waves, submitted = 0, done = 0;
    double *sent = calloc((size_t)total, sizeof(double));
    double *first = calloc((size_t)total, sizeof(double));
    double *last = calloc((size_t)total, sizeof(double));
    double *ttft = calloc((size_t)total, sizeof(double));
    size_t cap = (size_t)total * (size_t)new_tokens, n_itl = 0, n_ttft = 0, n_steps = 0;
    double *itl = malloc(cap * sizeof(double));
    double *steps = malloc(cap * sizeof(double));
    int rc = -ENOMEM;
    if (!sent || !first || !last || !ttft || !itl || !steps)
        goto out;
    memset(res, 0, sizeof(*res));
    res->conc = conc;
    double w0 = clock_now_sec(), w1 = 0;
    for (; submitted < conc; submitted++) {
        eng_request_t *r = make_request((uint64_t)submitted, prompt_tokens, new_tokens, seed);
        if (!r || (rc = eng_submit(e, r)) < 0)
            goto out;
        sent[submitted] = w0;
    }
    const sched_t *s = eng_sched(e);
    while (done < total) {
        double a = clock_now_sec();
        rc = eng_step(e);
        double b = clock_now_sec();
        if (rc < 0)
            goto out;
        int in_window = waves == 1 || (submitted > conc && submitted < total);
        if (in_window) {
            res->steps++;
            res->step_sum += b - a;
            res->forward_sum += s->last.forward_sec;
            int rows = s->last.decode_tokens + s->last.prefill_tokens;
            res->max_rows = rows > res->max_rows ? rows : res->max_rows;
            if (n_steps < cap)
                steps[n_steps++] = b - a;
        }
        for (eng_event_t *ev = eng_poll(e), *next; ev; ev = next) {
            next = ev->next;
            int i = (int)ev->req_id;
            if (ev->n_ids > 0) {
                if (first[i] == 0) {
                    first[i] = b;
                    if (waves == 1 || i >= conc) /* steady: arrived among running streams */
                        ttft[n_ttft++] = b - sent[i];
                } else if (in_window && n_itl < cap) {
                    itl[n_itl++] = b - last[i];
                }
                last[i] = b;
                if (in_window)
                    res->generated += ev->n_ids;
            }
            if (ev->finish != ENG_FINISH_NONE) {
                done++;
                if (submitted < total) {
                    eng_request_t *r =
                        make_request((uint64_t)submitted, prompt_tokens, new_tokens, seed);
                    if (!r || (rc = eng_submit(e, r)) < 0) {
                        rc = rc < 0 ? rc : -ENOMEM;
                        goto out;
                    }
                    sent[submitted] = clock_now_sec();
                    if (submitted == conc)
                        w0 = sent[submitted]; /* the window opens at the first replacement */
                    if (++submitted == total)
                        w1 = sent[total - 1];
                }
            }
            eng_event_free(ev);
        }
    }
    res->wall = (waves == 1 ? clock_now_sec() : w1) - w0;
    bench_sort(ttft, n_ttft);
    bench_sort(itl, n_itl);
    bench_sort(steps, n_steps);
    const double ps[3] = {50, 90, 99};
    for (int k = 0; k < 3; k++) {
        res->ttft[k] = n_ttft ? pct(ttft, n_ttft, ps[k]) : 0;
        res->itl[k] = n_itl ? pct(itl, n_itl, ps[k]) : 0;
    }
    res->step_p99 = n_steps ? pct(steps, n_steps, 99) : 0;
    rc = 0;
out:
    free(sent);
    free(first);
    free(last);
    free(ttft);
    free(itl);
    free(steps);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = BENCH_DEFAULT_MODEL_DIR;
    int conc[MAX_ROUNDS] = {1, 8, 32, 64}, n_conc = 4;
    int prompt_tokens = 64, new_tokens = 128, threads = 0;
    int budget = 512, prefill_decoding = 48; /* the server's defaults */
    int waves = 3, kv_dtype = ENG_DTYPE_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--concurrency") && i + 1 < argc) {
            n_conc = 0;
            for (char *t = strtok(argv[++i], ","); t && n_conc < MAX_ROUNDS; t = strtok(NULL, ","))
                conc[n_conc++] = atoi(t);
        } else if (!strcmp(argv[i], "--prompt-tokens") && i + 1 < argc) {
            prompt_tokens = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--new-tokens") && i + 1 < argc) {
            new_tokens = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--steady-waves") && i + 1 < argc) {
            waves = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--max-num-batched-tokens") && i + 1 < argc) {
            budget = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--max-prefill-tokens-decoding") && i + 1 < argc) {
            prefill_decoding = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--kv-cache-dtype") && i + 1 < argc) {
            i++;
            kv_dtype = !strcmp(argv[i], "f16")   ? ENG_DTYPE_F16
                       : !strcmp(argv[i], "f32") ? ENG_DTYPE_F32
                                                 : ENG_DTYPE_AUTO;
        } else if (argv[i][0] != '-') {
            dir = argv[i];
        } else {
            fprintf(stderr,
                    "usage: %s [MODEL_DIR] [--concurrency 1,8,32,64] "
                    "[--prompt-tokens 64] [--new-tokens 128] [--threads N] "
                    "[--max-num-batched-tokens 512] [--max-prefill-tokens-decoding 48] "
                    "[--steady-waves 3] [--kv-cache-dtype auto|f32|f16]\n",
                    argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0; /* --help is not an error */
        }
    }
    int max_conc = 1;
    for (int i = 0; i < n_conc; i++) {
        if (conc[i] < 1 || prompt_tokens < 1 || new_tokens < 1) {
            fputs("bench/sched: concurrency, prompt and new tokens must be positive\n", stderr);
            return 2;
        }
        max_conc = conc[i] > max_conc ? conc[i] : max_conc;
    }
    if (bench_model_ensure(dir) < 0) {
        fprintf(stderr, "bench/sched: cannot write a checkpoint to %s\n", dir);
        return 1;
    }
    char err[512] = "";
    tok_t *tok = NULL;
    if (tok_init(&tok, dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench/sched: %s\n", err);
        return 1;
    }
    eng_params_t p;
    memset(&p, 0, sizeof(p));
    p.model_dir = dir;
    p.threads = threads;
    p.max_num_seqs = max_conc;
    p.max_num_batched_tokens = budget > max_conc ? budget : max_conc;
    p.max_prefill_tokens_decoding = prefill_decoding;
    p.kv_cache_dtype = kv_dtype;
    p.max_model_len = prompt_tokens + new_tokens;
    /* Exactly the blocks the largest round needs: every sequence at full length. */
    p.block_size = 16;
    p.num_kv_blocks = max_conc * ((prompt_tokens + new_tokens + 15) / 16);
    eng_t *e = NULL;
    if (eng_init(&e, &p, tok, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench/sched: %s\n", err);
        return 1;
    }
    eng_info_t info;
    eng_get_info(e, &info);
    printf("model %s: %d layers, %d channels; KV pool %d blocks (%zu MiB); %d-token prompts, "
           "%d new tokens, greedy, ignore_eos; step budget %d tokens, "
           "max_prefill_tokens_decoding %d\n",
           dir, info.n_layer, info.n_embd, info.num_kv_blocks, info.kv_bytes >> 20, prompt_tokens,
           new_tokens, p.max_num_batched_tokens, prefill_decoding);
    printf("%-6s %5s %6s %10s %10s %9s %9s %22s %22s %6s %5s\n", "phase", "conc", "steps",
           "gen tok/s", "fwd bound", "of bound", "outside", "TTFT p50/p90/p99 ms",
           "ITL p50/p90/p99 ms", "stp99", "rows");
    uint64_t seed = 12345;
    int status = 0;
    for (int i = 0; i < n_conc && !status; i++) {
        for (int steady = 0; steady < 2 && !status; steady++) {
            if (steady && waves < 2)
                continue;
            round_result_t r;
            int rc =
                run_round(e, conc[i], steady ? waves : 1, prompt_tokens, new_tokens, &seed, &r);
            if (rc < 0) {
                fprintf(stderr, "bench/sched: round of %d failed: %s\n", conc[i], strerror(-rc));
                status = 1;
                break;
            }
            double outside = r.step_sum > 0 ? (r.step_sum - r.forward_sum) / r.step_sum : 0;
            printf("%-6s %5d %6d %10.1f %10.1f %8.1f%% %8.2f%% %7.0f/%6.0f/%6.0f  "
                   "%7.1f/%6.1f/%6.1f %6.1f %5d\n",
                   steady ? "steady" : "burst", r.conc, r.steps, (double)r.generated / r.wall,
                   (double)r.generated / r.forward_sum, 100.0 * r.forward_sum / r.wall,
                   100.0 * outside, r.ttft[0] * 1e3, r.ttft[1] * 1e3, r.ttft[2] * 1e3,
                   r.itl[0] * 1e3, r.itl[1] * 1e3, r.itl[2] * 1e3, r.step_p99 * 1e3, r.max_rows);
            fflush(stdout);
        }
    }
    printf("burst: every request of the round submitted at once; steady: %d waves, a finished "
           "request replaced at once,\nonly the window from the first replacement to the last "
           "submission counted.\ngen tok/s: generated tokens over the wall time; fwd bound: "
           "over the time inside model_forward only;\noutside: share of eng_step time outside "
           "model_forward (target < 2%% at 64); stp99: step time p99 (ms); rows: most rows in a "
           "step.\n",
           waves);
    eng_free(e);
    tok_free(tok);
    return status;
}
