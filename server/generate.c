/* generate.c - `nano-vllm generate`: offline batch generation through the scheduler.
 *
 * All prompts are submitted at once and run together (continuous batching) by calling
 * eng_step on this thread until every completion has ended; then each completion is
 * printed in prompt order, followed by the throughput. On a terminal a progress line on
 * stderr shows prefill and decode tokens/s; otherwise plain progress lines, one a second.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "engine/engine.h"
#include "server/api_defaults.h"
#include "server/buf.h"
#include "server/generate.h"
#include "tokenizer/tokenizer.h"

typedef struct gen_prompt {
    char *text;       /* owned or NULL (given as token ids) */
    int32_t *ids;     /* owned */
    int n_ids;
    char *out;        /* owned; the completion text */
    size_t out_len, out_cap;
    int n_out, finish, cached;
    int first_seen;   /* its first token arrived: its prompt is done */
} gen_prompt_t;

typedef struct gen_opts {
    const char *model_dir;
    int max_tokens, top_k, ignore_eos, threads, has_seed;
    float temperature, top_p, min_p, repetition_penalty;
    unsigned given;    /* enum api_default_bit: the sampling options set on the command line */
    int no_gen_config; /* --generation-config none */
    int max_from_file; /* max_tokens is generation_config.json's max_new_tokens */
    uint64_t seed;
    int max_num_seqs, max_num_batched_tokens; /* 0 = the engine's defaults */
} gen_opts_t;

typedef struct gen {
    gen_opts_t o;
    gen_prompt_t *p; /* owned; (n) */
    int n, cap;
    tok_t *tok;      /* owned */
    eng_t *eng;      /* owned */
} gen_t;

static void usage(FILE *out)
{
    fputs("usage: nano-vllm generate MODEL_DIR [OPTIONS]\n"
          "\n"
          "Generates a completion for each prompt, all of them batched together.\n"
          "\n"
          "prompts (any mix, in order):\n"
          "  --prompt TEXT            a prompt (repeat for more)\n"
          "  --prompts-file FILE      one prompt per line (empty lines skipped)\n"
          "  --tokens ID,ID,...       a prompt given as token ids (repeat for more)\n"
          "\n"
          "sampling:\n"
          "  --max-tokens N           new tokens per prompt (default 64)\n"
          "  --temperature T          0 = greedy (default 1.0)\n"
          "  --top-p P                nucleus sampling mass (default 1.0)\n"
          "  --top-k K                keep the K most likely tokens; 0 = off (default 0)\n"
          "  --seed S                 prompt i is sampled with seed S + i (default: random)\n"
          "  --ignore-eos             go on past <|endoftext|>\n"
          "  --generation-config auto|none\n"
          "                           auto: the model's generation_config.json sets the\n"
          "                           defaults of the options above it sets (as the server\n"
          "                           does for requests); none: ignore it (default auto)\n"
          "\n"
          "engine:\n"
          "  --threads N              compute threads; 0 = one per core (default 0)\n",
          out);
    fprintf(out,
            "  --max-num-seqs N         sequences per step (default %d)\n"
            "  --max-num-batched-tokens N  tokens per step (default %d)\n"
            "  -h, --help               this text\n",
            ENG_DEFAULT_MAX_NUM_SEQS, ENG_DEFAULT_MAX_NUM_BATCHED_TOKENS);
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "nano-vllm generate: %s: '%s' is not an integer in %ld..%ld\n", flag, s,
                lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *flag, const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "nano-vllm generate: %s: '%s' is not a number in %g..%g\n", flag, s,
                (double)lo, (double)hi);
        return -1;
    }
    *out = v;
    return 0;
}

static gen_prompt_t *add_prompt(gen_t *g)
{
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 16;
        gen_prompt_t *p = realloc(g->p, (size_t)cap * sizeof(*p));
        if (!p)
            return NULL;
        g->p = p;
        g->cap = cap;
    }
    gen_prompt_t *p = &g->p[g->n++];
    memset(p, 0, sizeof(*p));
    return p;
}

static int add_text_prompt(gen_t *g, const char *text, size_t len)
{
    gen_prompt_t *p = add_prompt(g);
    if (!p || !(p->text = strndup(text, len))) {
        fputs("nano-vllm generate: out of memory\n", stderr);
        return -1;
    }
    return 0;
}

static int add_token_prompt(gen_t *g, const char *list)
{
    gen_prompt_t *p = add_prompt(g);
    if (!p)
        return -1;
    size_t cap = strlen(list) / 2 + 1;
    p->ids = malloc(cap * sizeof(int32_t));
    if (!p->ids)
        return -1;
    const char *s = list;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "nano-vllm generate: --tokens: '%s' is not a list of token ids\n",
                    list);
            return -1;
        }
        p->ids[p->n_ids++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    if (p->n_ids == 0) {
        fputs("nano-vllm generate: --tokens: empty list\n", stderr);
        return -1;
    }
    return 0;
}

static int read_prompts_file(gen_t *g, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "nano-vllm generate: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n > 0)
            rc = add_text_prompt(g, line, (size_t)n);
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "nano-vllm generate: %s: read error\n", path);
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

enum {
    OPT_PROMPT = 256,
    OPT_PROMPTS_FILE,
    OPT_TOKENS,
    OPT_MAX_TOKENS,
    OPT_TEMPERATURE,
    OPT_TOP_P,
    OPT_TOP_K,
    OPT_SEED,
    OPT_IGNORE_EOS,
    OPT_THREADS,
    OPT_MAX_NUM_SEQS,
    OPT_MAX_BATCHED,
    OPT_GEN_CONFIG,
};

/* Returns 0, 1 for --help, -1 on a bad argument (message written), -2 on usage error. */
static int parse_args(gen_t *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"prompts-file", required_argument, NULL, OPT_PROMPTS_FILE},
        {"tokens", required_argument, NULL, OPT_TOKENS},
        {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
        {"temperature", required_argument, NULL, OPT_TEMPERATURE},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"seed", required_argument, NULL, OPT_SEED},
        {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
        {"generation-config", required_argument, NULL, OPT_GEN_CONFIG},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"max-num-seqs", required_argument, NULL, OPT_MAX_NUM_SEQS},
        {"max-num-batched-tokens", required_argument, NULL, OPT_MAX_BATCHED},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    gen_opts_t *o = &g->o;
    o->max_tokens = 64;
    o->temperature = 1.0f;
    o->top_p = 1.0f;
    o->repetition_penalty = 1.0f;
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_PROMPT:
            rc = add_text_prompt(g, optarg, strlen(optarg));
            break;
        case OPT_PROMPTS_FILE:
            rc = read_prompts_file(g, optarg);
            break;
        case OPT_TOKENS:
            rc = add_token_prompt(g, optarg);
            break;
        case OPT_MAX_TOKENS:
            rc = parse_int("--max-tokens", optarg, 1, 1 << 20, &o->max_tokens);
            o->given |= API_DEF_MAX_TOKENS;
            break;
        case OPT_TEMPERATURE:
            rc = parse_float("--temperature", optarg, 0, 100, &o->temperature);
            o->given |= API_DEF_TEMPERATURE;
            break;
        case OPT_TOP_P:
            rc = parse_float("--top-p", optarg, 1e-6f, 1, &o->top_p);
            o->given |= API_DEF_TOP_P;
            break;
        case OPT_TOP_K:
            rc = parse_int("--top-k", optarg, 0, 1 << 20, &o->top_k);
            o->given |= API_DEF_TOP_K;
            break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            o->seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "nano-vllm generate: --seed: '%s' is not a non-negative integer\n",
                        optarg);
                rc = -1;
            }
            o->has_seed = 1;
            break;
        }
        case OPT_IGNORE_EOS:
            o->ignore_eos = 1;
            break;
        case OPT_GEN_CONFIG:
            if (!strcmp(optarg, "auto") || !strcmp(optarg, "none"))
                o->no_gen_config = !strcmp(optarg, "none");
            else {
                fprintf(stderr,
                        "nano-vllm generate: --generation-config: '%s' is not auto or none\n",
                        optarg);
                rc = -1;
            }
            break;
        case OPT_THREADS:
            rc = parse_int("--threads", optarg, 0, 1024, &o->threads);
            break;
        case OPT_MAX_NUM_SEQS:
            rc = parse_int("--max-num-seqs", optarg, 1, 1 << 16, &o->max_num_seqs);
            break;
        case OPT_MAX_BATCHED:
            rc = parse_int("--max-num-batched-tokens", optarg, 1, 1 << 20,
                           &o->max_num_batched_tokens);
            break;
        case 'h':
            return 1;
        case ':':
            fprintf(stderr, "nano-vllm generate: %s needs a value\n", argv[optind - 1]);
            return -2;
        default:
            fprintf(stderr, "nano-vllm generate: unknown option '%s'\n", argv[optind - 1]);
            return -2;
        }
    }
    if (rc < 0)
        return -1;
    if (optind >= argc) {
        fputs("nano-vllm generate: MODEL_DIR is missing\n", stderr);
        return -2;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "nano-vllm generate: unexpected argument '%s'\n", argv[optind + 1]);
        return -2;
    }
    o->model_dir = argv[optind];
    if (g->n == 0) {
        fputs("nano-vllm generate: no prompt (use --prompt, --prompts-file or --tokens)\n",
              stderr);
        return -2;
    }
    return 0;
}

/* The sampling defaults of the model's generation_config.json, for the options the command
 * line left out (as the server applies them to requests), unless --generation-config none.
 * Returns 0, or -1 with the message written. */
static int apply_generation_config(gen_t *g)
{
    gen_opts_t *o = &g->o;
    if (o->no_gen_config)
        return 0;
    api_defaults_t d;
    api_defaults_init(&d);
    char err[512] = "";
    if (api_defaults_load(o->model_dir, &d, err, sizeof(err)) < 0) {
        fprintf(stderr, "nano-vllm generate: %s\n", err);
        return -1;
    }
    if (!(o->given & API_DEF_TEMPERATURE))
        o->temperature = d.temperature;
    if (!(o->given & API_DEF_TOP_P))
        o->top_p = d.top_p;
    if (!(o->given & API_DEF_TOP_K))
        o->top_k = d.top_k;
    if (!(o->given & API_DEF_MAX_TOKENS) && d.max_tokens > 0) {
        o->max_tokens = d.max_tokens;
        o->max_from_file = 1;
    }
    o->min_p = d.min_p;
    o->repetition_penalty = d.repetition_penalty;
    char set[256];
    api_defaults_describe(&d, set, sizeof(set));
    if (set[0])
        fprintf(stderr,
                "sampling defaults from generation_config.json: %s; options given here win "
                "(--generation-config none ignores the file)\n",
                set);
    return 0;
}

/* Builds and submits the request of prompt i. */
static int submit(gen_t *g, int i, int max_model_len, int vocab_size)
{
    gen_prompt_t *p = &g->p[i];
    const gen_opts_t *o = &g->o;
    if (p->text) {
        size_t n = 0;
        if (tok_encode(g->tok, p->text, strlen(p->text), &p->ids, &n) < 0) {
            fputs("nano-vllm generate: out of memory\n", stderr);
            return -1;
        }
        p->n_ids = (int)n;
        if (n == 0) {
            fprintf(stderr, "nano-vllm generate: prompt %d is empty\n", i);
            return -1;
        }
    }
    for (int k = 0; k < p->n_ids; k++)
        if (p->ids[k] >= vocab_size) {
            fprintf(stderr, "nano-vllm generate: prompt %d: token id %d is outside the "
                    "vocabulary (%d tokens)\n", i, p->ids[k], vocab_size);
            return -1;
        }
    int max_tokens = o->max_tokens;
    if (o->max_from_file && max_tokens > max_model_len - p->n_ids)
        max_tokens = max_model_len - p->n_ids; /* the file's default: as much as fits */
    if (max_tokens < 1 || (long)p->n_ids + max_tokens > max_model_len) {
        fprintf(stderr,
                "nano-vllm generate: prompt %d: %d tokens + max_tokens %d exceed the model's "
                "length %d\n",
                i, p->n_ids, max_tokens, max_model_len);
        return -1;
    }
    eng_request_t *r = calloc(1, sizeof(*r));
    if (!r || !(r->prompt = malloc((size_t)p->n_ids * sizeof(int32_t)))) {
        free(r);
        fputs("nano-vllm generate: out of memory\n", stderr);
        return -1;
    }
    memcpy(r->prompt, p->ids, (size_t)p->n_ids * sizeof(int32_t));
    r->id = (uint64_t)i;
    r->prompt_len = p->n_ids;
    r->n = 1;
    r->max_tokens = max_tokens;
    r->ignore_eos = o->ignore_eos;
    eng_sampling_default(&r->sp);
    r->sp.temperature = o->temperature;
    r->sp.top_p = o->top_p;
    r->sp.top_k = o->top_k;
    r->sp.min_p = o->min_p;
    r->sp.repetition_penalty = o->repetition_penalty;
    r->sp.has_seed = o->has_seed;
    r->sp.seed = o->seed + (uint64_t)i;
    int rc = eng_submit(g->eng, r);
    if (rc < 0) {
        fprintf(stderr, "nano-vllm generate: prompt %d: rejected (%s)\n", i, strerror(-rc));
        eng_request_free(r);
        return -1;
    }
    return 0;
}

static int append_text(gen_prompt_t *p, const char *s, size_t n)
{
    return buf_append_text(&p->out, &p->out_len, &p->out_cap, s, n, 256) ? -1 : 0;
}

/* Prefill runs from the start to the last prompt's first token; decode from the first
 * prompt's first token on. The two overlap: prompts are batched with decodes. */
typedef struct gen_progress {
    double t0, last_print, first_token, last_first_token;
    long prefill_tokens, decode_tokens;
    int done;
} gen_progress_t;

static double rate(long n, double from, double to)
{
    return to > from ? (double)n / (to - from) : 0.0;
}

static void progress(const gen_t *g, gen_progress_t *pr, int tty, int final)
{
    double t = clock_now_sec();
    if (!final && t - pr->last_print < (tty ? 0.1 : 1.0))
        return;
    pr->last_print = t;
    fprintf(stderr, "%s[%d/%d done] prefill %.0f tok/s, decode %.0f tok/s%s",
            tty ? "\r\033[K" : "", pr->done, g->n,
            rate(pr->prefill_tokens, pr->t0, pr->last_first_token),
            pr->first_token > 0 ? rate(pr->decode_tokens, pr->first_token, t) : 0.0,
            tty && !final ? "" : "\n");
    fflush(stderr);
}

/* Steps the engine until every completion has ended. */
static int run(gen_t *g, int tty, double *elapsed, gen_progress_t *pr)
{
    pr->t0 = clock_now_sec();
    while (pr->done < g->n) {
        int rc = eng_step(g->eng);
        if (rc < 0) {
            fprintf(stderr, "%snano-vllm generate: the engine failed (%s)\n", tty ? "\n" : "",
                    strerror(-rc));
            return -1;
        }
        for (eng_event_t *ev = eng_poll(g->eng), *next; ev; ev = next) {
            next = ev->next;
            gen_prompt_t *p = &g->p[ev->req_id];
            if (!p->first_seen) {
                p->first_seen = 1;
                pr->prefill_tokens += p->n_ids - ev->cached_tokens;
                pr->last_first_token = clock_now_sec();
                if (pr->first_token == 0)
                    pr->first_token = pr->last_first_token;
            } else {
                pr->decode_tokens += ev->n_ids;
            }
            p->n_out += ev->n_ids;
            if (append_text(p, ev->text, ev->text_len) < 0) {
                fputs("nano-vllm generate: out of memory\n", stderr);
                return -1;
            }
            if (ev->finish != ENG_FINISH_NONE) {
                p->finish = ev->finish;
                p->cached = ev->cached_tokens;
                pr->done++;
            }
            eng_event_free(ev);
        }
        if (rc == 0 && pr->done < g->n) {
            fputs("nano-vllm generate: the engine stopped with prompts unfinished\n", stderr);
            return -1;
        }
        progress(g, pr, tty, 0);
    }
    *elapsed = clock_now_sec() - pr->t0;
    progress(g, pr, tty, 1);
    return 0;
}

static void gen_free(gen_t *g)
{
    eng_free(g->eng);
    tok_free(g->tok);
    for (int i = 0; i < g->n; i++) {
        free(g->p[i].text);
        free(g->p[i].ids);
        free(g->p[i].out);
    }
    free(g->p);
}

int generate_main(int argc, char **argv)
{
    gen_t g;
    memset(&g, 0, sizeof(g));
    int rc = parse_args(&g, argc, argv);
    if (rc != 0) {
        if (rc == 1)
            usage(stdout);
        else if (rc == -2)
            fputs("Run 'nano-vllm generate --help' for the options.\n", stderr);
        gen_free(&g);
        return rc == 1 ? 0 : rc == -2 ? 2 : 1;
    }
    char err[512] = "";
    int status = 1;
    if (apply_generation_config(&g) < 0)
        goto out;
    if (tok_init(&g.tok, g.o.model_dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "nano-vllm generate: %s\n", err);
        goto out;
    }
    eng_params_t ep;
    memset(&ep, 0, sizeof(ep));
    ep.model_dir = g.o.model_dir;
    ep.threads = g.o.threads;
    ep.max_num_seqs = g.o.max_num_seqs;
    ep.max_num_batched_tokens = g.o.max_num_batched_tokens;
    if (eng_init(&g.eng, &ep, g.tok, err, sizeof(err)) < 0) {
        fprintf(stderr, "nano-vllm generate: %s\n", err);
        goto out;
    }
    eng_info_t info;
    eng_get_info(g.eng, &info);
    for (int i = 0; i < g.n; i++)
        if (submit(&g, i, info.max_model_len, info.vocab_size) < 0)
            goto out;
    int tty = isatty(STDERR_FILENO);
    double elapsed = 0;
    gen_progress_t pr = {0};
    if (run(&g, tty, &elapsed, &pr) < 0)
        goto out;
    long prompt_tokens = 0, gen_tokens = 0;
    for (int i = 0; i < g.n; i++) {
        gen_prompt_t *p = &g.p[i];
        printf("=== completion %d (finish: %s, %d prompt + %d generated tokens)\n", i,
               eng_finish_name(p->finish) ? eng_finish_name(p->finish) : "none", p->n_ids,
               p->n_out);
        if (p->text) {
            printf("%s", p->text);
        } else {
            char *t = NULL;
            size_t n = 0;
            if (tok_decode(g.tok, p->ids, (size_t)p->n_ids, &t, &n) == 0)
                fwrite(t, 1, n, stdout);
            free(t);
        }
        printf("%s\n", p->out ? p->out : "");
        prompt_tokens += p->n_ids;
        gen_tokens += p->n_out;
    }
    printf("=== %d prompts: %ld prompt tokens, %ld generated tokens in %.2f s: "
           "%.1f generated tokens/s\n",
           g.n, prompt_tokens, gen_tokens, elapsed, elapsed > 0 ? gen_tokens / elapsed : 0.0);
    status = 0;
out:
    gen_free(&g);
    return status;
}
