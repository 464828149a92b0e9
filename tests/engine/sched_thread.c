/* sched_thread.c - the engine in threaded mode: eng_start, requests and aborts submitted
 * from two other threads, the wake callback, eng_poll on the main thread; outputs equal those
 * of eng_step; an idle engine uses no CPU; no second wake-up while the outbox is unpolled;
 * eng_free with requests in flight. Race-free
 * under ThreadSanitizer.
 * Usage: sched_thread TINY_DIR TOKENIZER_DIR
 */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "common/proc.h"
#include "tests/engine/sched_util.h"
#include "tests/time_scale.h"

#define NREQ 10

static const char *tiny_dir;
static tok_t *tok;
static int32_t prompts[NREQ][40];
static int plen[NREQ];

typedef struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int wakes;
} waker_t;

static void wake_cb(void *arg)
{
    waker_t *w = arg;
    pthread_mutex_lock(&w->mu);
    w->wakes++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static eng_request_t *req_for(int i)
{
    return make_req((uint64_t)i, prompts[i], plen[i], 20 + i, i % 2 ? 0.8f : 0.0f,
                    500 + (uint64_t)i);
}

/* Two of these run at once: one submits the even requests, the other the odd ones. */
typedef struct submitter {
    eng_t *e;
    int first;
} submitter_t;

static void *submit_thread(void *arg)
{
    submitter_t *s = arg;
    struct timespec d = {0, 2 * 1000 * 1000};
    for (int i = s->first; i < NREQ; i += 2) {
        eng_request_t *r = req_for(i);
        if (i == NREQ - 1)
            r->max_tokens = 200; /* aborted below, long before it could finish */
        submit_ok(s->e, r);
        nanosleep(&d, NULL);
    }
    if ((NREQ - 1) % 2 == s->first)
        eng_abort(s->e, NREQ - 1);
    return NULL;
}

/* An idle scheduler thread maps the KV pool (writes each page once, keeping its content),
 * so served steps do not fault its pages in: with no request at all, the process grows by
 * the pool's size within a few seconds. */
static void check_pool_mapped(eng_params_t p)
{
    p.num_kv_blocks = 0;
    p.kv_cache_memory = (size_t)96 << 20;
    eng_t *e = make_engine(&p, tok);
    eng_info_t info;
    eng_get_info(e, &info);
    double before = proc_rss_bytes();
    waker_t w = {.wakes = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    ASSERT_EQ(eng_start(e, wake_cb, &w), 0);
    double grown = 0;
    for (int i = 0; i < 200 * TEST_TIME_SCALE && grown < 0.9 * (double)info.kv_bytes; i++) {
        struct timespec d = {0, 50 * 1000 * 1000};
        nanosleep(&d, NULL);
        grown = proc_rss_bytes() - before;
    }
    printf("idle engine: RSS grew by %.1f MiB of a %.1f MiB KV pool\n", grown / (1 << 20),
           (double)info.kv_bytes / (1 << 20));
    ASSERT_TRUE(grown >= 0.9 * (double)info.kv_bytes);
    eng_free(e);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

static int all_finished(const choice_out_t *outs)
{
    for (int i = 0; i < NREQ; i++)
        if (outs[i].finishes == 0)
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TINY_DIR TOKENIZER_DIR\n", argv[0]);
        return 2;
    }
    tiny_dir = argv[1];
    tok = load_tok(argv[2]);
    uint64_t seed = 3;
    for (int i = 0; i < NREQ; i++) {
        plen[i] = 2 + (int)(test_rand(&seed) % 38);
        random_prompt(&seed, prompts[i], plen[i]);
    }
    eng_params_t p = params_for(tiny_dir);

    /* The reference: each request alone, synchronously. */
    static choice_out_t ref[NREQ], outs[NREQ];
    eng_t *e = make_engine(&p, tok);
    for (int i = 0; i < NREQ - 1; i++) {
        submit_ok(e, req_for(i));
        run_until_idle(e, ref, 1, 1000);
    }
    eng_free(e);

    waker_t w = {.wakes = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    e = make_engine(&p, tok);
    ASSERT_EQ(eng_start(e, wake_cb, &w), 0);
    ASSERT_EQ(eng_step(e), -EINVAL); /* the modes do not mix */
    submitter_t sub[2] = {{e, 0}, {e, 1}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++)
        ASSERT_EQ(pthread_create(&th[k], NULL, submit_thread, &sub[k]), 0);
    int seen = 0, polls = 0;
    while (!all_finished(outs)) {
        pthread_mutex_lock(&w.mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20;
        while (w.wakes == seen)
            ASSERT_EQ(pthread_cond_timedwait(&w.cv, &w.mu, &until), 0);
        seen = w.wakes;
        pthread_mutex_unlock(&w.mu);
        drain_events(e, outs, 1);
        eng_stats_t st;
        eng_get_stats(e, &st);
        ASSERT_LE(st.kv_blocks_used, st.kv_blocks_total);
        polls++;
    }
    for (int k = 0; k < 2; k++)
        pthread_join(th[k], NULL);
    for (int i = 0; i < NREQ - 1; i++) {
        ASSERT_EQ(outs[i].finishes, 1);
        ASSERT_EQ(outs[i].late_events, 0);
        ASSERT_EQ(outs[i].n_ids, ref[i].n_ids);
        ASSERT_TRUE(memcmp(outs[i].ids, ref[i].ids, (size_t)ref[i].n_ids * 4) == 0);
        ASSERT_STREQ(outs[i].text, ref[i].text);
    }
    ASSERT_EQ(outs[NREQ - 1].finish, ENG_FINISH_ABORT);
    ASSERT_LT(outs[NREQ - 1].n_ids, 200);

    /* Idle: the scheduler thread sleeps. Counted: no step and no wake-up in 300 ms; timed:
     * it uses (almost) no CPU, where a spinning thread would use all 300 ms. */
    eng_stats_t st;
    eng_get_stats(e, &st);
    const uint64_t steps = st.steps;
    pthread_mutex_lock(&w.mu);
    const int wakes = w.wakes;
    pthread_mutex_unlock(&w.mu);
    double c0 = proc_cpu_sec();
    struct timespec d = {0, 300 * 1000 * 1000};
    nanosleep(&d, NULL);
    double idle_cpu = proc_cpu_sec() - c0;
    printf("threaded: %d polls, idle CPU over 300 ms: %.1f ms\n", polls, idle_cpu * 1e3);
    ASSERT_TRUE(idle_cpu < 0.05 * TEST_TIME_SCALE);
    eng_get_stats(e, &st);
    ASSERT_EQ(st.steps, steps);
    pthread_mutex_lock(&w.mu);
    ASSERT_EQ(w.wakes, wakes);
    pthread_mutex_unlock(&w.mu);
    ASSERT_EQ(st.running + st.waiting, 0);
    ASSERT_EQ(st.kv_blocks_used, 0);
    ASSERT_EQ(st.requests_finished, NREQ);

    /* Events queued while the outbox is still unpolled bring no second wake-up (the poll
     * that the first one brings takes them all): a request left unpolled for all its steps
     * wakes the poller once, and one poll then has every token. */
    {
        static choice_out_t one[NREQ + 1];
        const int steps0 = (int)st.steps;
        const int n = ref[0].n_ids < 12 ? ref[0].n_ids : 12; /* fewer if it hit EOS */
        eng_request_t *r = req_for(0);
        r->id = NREQ;
        r->max_tokens = 12;
        submit_ok(e, r);
        for (int i = 0; i < 400 * TEST_TIME_SCALE; i++) {
            eng_get_stats(e, &st);
            if (st.requests_finished == NREQ + 1)
                break;
            struct timespec ms = {0, 5 * 1000 * 1000};
            nanosleep(&ms, NULL);
        }
        ASSERT_EQ(st.requests_finished, NREQ + 1);
        ASSERT_GE((int)st.steps - steps0, n);
        pthread_mutex_lock(&w.mu);
        ASSERT_EQ(w.wakes, wakes + 1);
        pthread_mutex_unlock(&w.mu);
        ASSERT_EQ(drain_events(e, one, 1), n);
        ASSERT_EQ(one[NREQ].n_ids, n);
        ASSERT_EQ(one[NREQ].finishes, 1);
        ASSERT_TRUE(memcmp(one[NREQ].ids, ref[0].ids, (size_t)n * sizeof(int32_t)) == 0);
    }

    check_pool_mapped(p);

    /* Shutdown with requests in flight: eng_free stops the thread and frees them. */
    for (int i = 0; i < 4; i++) {
        eng_request_t *r = req_for(i);
        r->max_tokens = 200;
        submit_ok(e, r);
    }
    eng_free(e);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    tok_free(tok);
    puts("sched_thread: ok");
    return 0;
}
