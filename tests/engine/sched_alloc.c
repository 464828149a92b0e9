/* sched_alloc.c - steady decoding allocates nothing: after a warm-up, eng_step, eng_poll and
 * eng_event_free over many decode steps of several streams (crossing KV block boundaries,
 * registering full blocks in the prefix cache) make no malloc, calloc, realloc or
 * posix_memalign call. The test links with -Wl,--wrap for those, so it counts every call
 * made from our code (the engine's static library included).
 * Usage: sched_alloc TINY_DIR TOKENIZER_DIR
 */
#include "tests/engine/sched_util.h"

static long n_allocs;
static int counting;

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);

void *__wrap_malloc(size_t n)
{
    n_allocs += counting;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    n_allocs += counting;
    return __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    n_allocs += counting;
    return __real_realloc(p, n);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n)
{
    n_allocs += counting;
    return __real_posix_memalign(p, a, n);
}

enum { STREAMS = 8, PROMPT = 13, NEW = 120, WARM = 8, MEASURED = 80 };

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TINY_DIR TOKENIZER_DIR\n", argv[0]);
        return 2;
    }
    tok_t *tok = load_tok(argv[2]);
    eng_params_t p = params_for(argv[1]);
    eng_t *e = make_engine(&p, tok);
    static choice_out_t outs[STREAMS];
    uint64_t s = 7;
    for (int i = 0; i < STREAMS; i++) {
        int32_t prompt[PROMPT];
        random_prompt(&s, prompt, PROMPT);
        /* Half greedy, half sampled with top-p: both sampler paths run. */
        submit_ok(e, make_req((uint64_t)i, prompt, PROMPT, NEW, i % 2 ? 0.8f : 0.0f, 100 + i));
    }
    const sched_step_info_t *last = &eng_sched(e)->last;
    for (int k = 0; k < WARM; k++) {
        ASSERT_EQ(eng_step(e), 1);
        drain_events(e, outs, 1);
    }
    long events = 0;
    n_allocs = 0;
    counting = 1;
    for (int k = 0; k < MEASURED; k++) {
        ASSERT_EQ(eng_step(e), 1);
        ASSERT_EQ(last->n_decode, STREAMS);
        for (eng_event_t *ev = eng_poll(e), *next; ev; ev = next) {
            next = ev->next;
            events++;
            eng_event_free(ev);
        }
    }
    counting = 0;
    printf("%d decode steps of %d streams, %ld events: %ld allocations\n", MEASURED, STREAMS,
           events, n_allocs);
    ASSERT_TRUE(events >= (long)MEASURED * STREAMS / 2);
    ASSERT_EQ(n_allocs, 0);
    run_until_idle(e, outs, 1, 1000);
    eng_stats_t st;
    eng_get_stats(e, &st);
    ASSERT_EQ(st.running, 0);
    ASSERT_EQ(st.kv_blocks_used, 0);
    eng_free(e);
    tok_free(tok);
    return 0;
}
