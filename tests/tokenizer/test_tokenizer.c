/* test_tokenizer.c - the tokenizer suite.
 *
 *   test_tokenizer DATA_DIR VECTORS
 *
 * DATA_DIR holds the real GPT-2 vocab.json + merges.txt; VECTORS is gpt2-vectors.jsonl,
 * ids from independent GPT-2 BPE implementations (gen-vectors.js). Checks: every vector id
 * for id (with and without the word cache), decode(encode(s)) == s, streaming decode one
 * id at a time, invalid UTF-8 input, invalid ids, error messages for malformed files,
 * tokenizer.json loading, long inputs, and concurrent encodes on several threads.
 * The exit status is the verdict.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/clock.h"
#include "tests/check.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

/* ---- vectors ---- */

typedef struct vec {
    char *cat;
    char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} vec_t;

static vec_t *vectors;
static size_t n_vectors;

static void load_vectors(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", path);
        exit(1);
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0) {
        json_error_t jerr;
        lineno++;
        json_t *o = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        json_t *text = json_object_get(o, "text"), *ids = json_object_get(o, "ids");
        if (!json_is_string(text) || !json_is_array(ids)) {
            fprintf(stderr, "%s:%zu: bad vector (%s)\n", path, lineno, jerr.text);
            exit(1);
        }
        vectors = realloc(vectors, (n_vectors + 1) * sizeof(*vectors));
        vec_t *v = &vectors[n_vectors++];
        v->cat = strdup(json_string_value(json_object_get(o, "cat")));
        v->len = json_string_length(text);
        v->text = malloc(v->len + 1);
        memcpy(v->text, json_string_value(text), v->len + 1);
        v->n = json_array_size(ids);
        v->ids = malloc((v->n + 1) * sizeof(int32_t));
        for (size_t i = 0; i < v->n; i++)
            v->ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        json_decref(o);
    }
    free(line);
    fclose(f);
}

static void free_vectors(void)
{
    for (size_t i = 0; i < n_vectors; i++) {
        free(vectors[i].cat);
        free(vectors[i].text);
        free(vectors[i].ids);
    }
    free(vectors);
}

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(*a)) == 0);
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Independent of stream.c: strict UTF-8 validation (Unicode Table 3-7). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return 0;
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += len;
    }
    return 1;
}

/* Streams ids one at a time; returns the concatenated text (malloc'd) and checks that every
 * piece is valid UTF-8 on its own. */
static char *stream_all(const tok_t *t, const int32_t *ids, size_t n, size_t *len, int *broken)
{
    tok_stream_t st;
    char piece[TOK_STREAM_OUT_MAX];
    size_t plen, cap = 64, o = 0;
    char *out = malloc(cap);
    tok_stream_init_with(&st, 0); /* special tokens as text, to compare with the input */
    *broken = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n)
            CHECK_INT_EQ(tok_stream_feed(t, &st, ids[i], piece, sizeof(piece), &plen), 0);
        else
            tok_stream_flush(&st, piece, sizeof(piece), &plen);
        if (!valid_utf8((const unsigned char *)piece, plen))
            *broken = 1;
        while (o + plen + 1 > cap)
            out = realloc(out, cap *= 2);
        memcpy(out + o, piece, plen);
        o += plen;
    }
    out[o] = '\0';
    *len = o;
    return out;
}

static void test_vectors(const tok_t *t)
{
    size_t mismatch = 0, nocache_mismatch = 0, roundtrip = 0, streamed = 0, total_ids = 0;
    for (size_t i = 0; i < n_vectors; i++) {
        const vec_t *v = &vectors[i];
        int32_t *ids, *ids2;
        size_t n, n2;
        CHECK_INT_EQ(tok_encode(t, v->text, v->len, &ids, &n), 0);
        CHECK_INT_EQ(
            tok_encode_ex(t, v->text, v->len, TOK_ENC_SPECIAL | TOK_ENC_ADD_SPECIAL, 0, &ids2, &n2),
            0);
        total_ids += n;
        if (!ids_equal(ids, n, v->ids, v->n)) {
            if (mismatch++ < 5) {
                fprintf(stderr, "vector %zu [%s] mismatch: %.80s\n", i, v->cat, v->text);
                print_ids("expected", v->ids, v->n);
                print_ids("got", ids, n);
            }
        }
        if (!ids_equal(ids2, n2, v->ids, v->n))
            nocache_mismatch++;

        char *text;
        size_t len;
        CHECK_INT_EQ(tok_decode(t, ids, n, &text, &len), 0);
        if (len != v->len || memcmp(text, v->text, len) != 0)
            roundtrip++;
        free(text);

        int broken;
        text = stream_all(t, ids, n, &len, &broken);
        if (broken || len != v->len || memcmp(text, v->text, len) != 0) {
            if (streamed++ < 5)
                fprintf(stderr, "vector %zu [%s]: streaming decode differs%s\n", i, v->cat,
                        broken ? " (broken UTF-8 piece)" : "");
        }
        free(text);
        free(ids);
        free(ids2);
    }
    printf("vectors: %zu strings, %zu ids; mismatches %zu (no cache %zu), round-trip failures "
           "%zu, streaming failures %zu\n",
           n_vectors, total_ids, mismatch, nocache_mismatch, roundtrip, streamed);
    CHECK(n_vectors >= 3000);
    CHECK_INT_EQ(mismatch, 0);
    CHECK_INT_EQ(nocache_mismatch, 0);
    CHECK_INT_EQ(roundtrip, 0);
    CHECK_INT_EQ(streamed, 0);
}

static void expect_ids(const tok_t *t, const char *text, size_t len, const int32_t *want,
                       size_t nwant, int line)
{
    int32_t *ids;
    size_t n;
    CHECK_INT_EQ(tok_encode(t, text, len, &ids, &n), 0);
    if (!ids_equal(ids, n, want, nwant)) {
        fprintf(stderr, "%s:%d: ids differ\n", __FILE__, line);
        print_ids("expected", want, nwant);
        print_ids("got", ids, n);
        check_failed_count++;
    }
    free(ids);
}

#define EXPECT_IDS(t, s, ...)                                                                      \
    do {                                                                                           \
        static const int32_t want_[] = {__VA_ARGS__};                                              \
        expect_ids(t, s, sizeof(s) - 1, want_, sizeof(want_) / sizeof(want_[0]), __LINE__);        \
    } while (0)

/* Where JavaScript (the vector generator's references) and GPT-2's own encoder.py (Python
 * `regex`) disagree on \s, the ids below are encoder.py's; PCRE2 agrees with it. */
static void test_disputed_whitespace(const tok_t *t)
{
    /* U+0085 NEXT LINE is \s in Python and PCRE2 (not in JavaScript). */
    EXPECT_IDS(t,
               "a\xc2\x85"
               "b",
               64, 126, 227, 65);
    EXPECT_IDS(t, " \xc2\x85 x", 1587, 227, 2124);
    EXPECT_IDS(t, "word\xc2\x85\xc2\x85 next", 4775, 126, 227, 126, 227, 1306);
    /* U+FEFF is not \s in Python or PCRE2 (it is in JavaScript). */
    EXPECT_IDS(t, "x\xef\xbb\xbfy", 87, 171, 119, 123, 88);
    EXPECT_IDS(t, "\xef\xbb\xbf hello", 171, 119, 123, 23748);
    EXPECT_IDS(t, "a \xef\xbb\xbf b", 64, 27332, 119, 123, 275);
}

static void test_special(const tok_t *t)
{
    CHECK_INT_EQ(tok_eos_id(t), 50256);
    CHECK_INT_EQ(tok_vocab_size(t), 50257);
    EXPECT_IDS(t, "<|endoftext|>", 50256);
    EXPECT_IDS(t, "a<|endoftext|>b<|endoftext|><|endoftext|>", 64, 50256, 65, 50256, 50256);
    EXPECT_IDS(t, "Hello world", 15496, 995);

    /* Nothing in, nothing out, but still an array the caller frees. */
    int32_t *ids;
    size_t n = 99;
    CHECK_INT_EQ(tok_encode(t, "", 0, &ids, &n), 0);
    CHECK(ids != NULL);
    CHECK_INT_EQ(n, 0);
    free(ids);
}

static void test_invalid_utf8(const tok_t *t)
{
    /* Invalid sequences, truncated characters, surrogates, overlong forms, code points
     * above U+10FFFF, and invalid bytes next to valid text and <|endoftext|>. */
    size_t blen;
    const char *b;
    int32_t *ids;
    size_t n;
    static const char *cases[] = {"\xff",
                                  "a\200b",
                                  "\xc3",
                                  "\xe6\x97",
                                  "x\xed\xa0\x80y",
                                  "\xf8\x88\x80\x80\x80",
                                  "  \xff  ",
                                  "\xc0\xaf",
                                  "\xf4\x90\x80\x80",
                                  "\xc3\xa9\xff\xc3\xa9",
                                  "<|endoftext|>\xff<|endoftext|>"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i]);
        char *text;
        size_t tlen;
        CHECK_INT_EQ(tok_encode(t, cases[i], len, &ids, &n), 0);
        CHECK_INT_EQ(tok_decode(t, ids, n, &text, &tlen), 0);
        CHECK_INT_EQ(tlen, len);
        CHECK(memcmp(text, cases[i], len) == 0);
        /* Streaming never emits broken UTF-8, even for broken input. */
        int broken;
        char *s = stream_all(t, ids, n, &tlen, &broken);
        CHECK(!broken);
        free(s);
        free(text);
        free(ids);
    }

    /* "\xff" alone is the token of byte 0xFF. */
    CHECK_INT_EQ(tok_encode(t, "\xff", 1, &ids, &n), 0);
    CHECK_INT_EQ(n, 1);
    b = tok_token_bytes(t, ids[0], &blen);
    CHECK(b && blen == 1 && (unsigned char)b[0] == 0xFF);
    free(ids);

    /* Random bytes (seeded): no crash, exact round trip. */
    unsigned seed = 12345;
    char buf[512];
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = (size_t)(rand_r(&seed) % (int)sizeof(buf));
        int mode = iter % 3;
        for (size_t k = 0; k < len; k++) {
            int r = rand_r(&seed);
            /* mode 0: any byte; 1: mostly ASCII letters and spaces; 2: UTF-8 lead/cont bytes */
            buf[k] = (char)(mode == 0   ? r & 0xFF
                            : mode == 1 ? (r % 5 == 0 ? 0x80 | (r >> 8 & 0x7F) : " aZ'9"[r % 5])
                                        : 0x80 | (r & 0x7F));
        }
        char *text;
        size_t tlen;
        CHECK_INT_EQ(tok_encode(t, buf, len, &ids, &n), 0);
        CHECK_INT_EQ(tok_decode(t, ids, n, &text, &tlen), 0);
        if (tlen != len || memcmp(text, buf, len) != 0) {
            fprintf(stderr, "random bytes iteration %d: round trip differs\n", iter);
            check_failed_count++;
        }
        int broken;
        char *s = stream_all(t, ids, n, &tlen, &broken);
        CHECK(!broken);
        free(s);
        free(text);
        free(ids);
    }
}

static void test_stream(const tok_t *t)
{
    tok_stream_t st;
    char out[TOK_STREAM_OUT_MAX];
    size_t olen;
    int32_t *ids;
    size_t n;

    /* An emoji is split over several tokens: nothing comes out until it is complete. */
    const char *emoji = "\xf0\x9f\xa4\xb7"; /* U+1F937 */
    CHECK_INT_EQ(tok_encode(t, emoji, 4, &ids, &n), 0);
    CHECK(n >= 2);
    tok_stream_init(&st);
    for (size_t i = 0; i + 1 < n; i++) {
        CHECK_INT_EQ(tok_stream_feed(t, &st, ids[i], out, sizeof(out), &olen), 0);
        CHECK_INT_EQ(olen, 0);
    }
    CHECK_INT_EQ(tok_stream_feed(t, &st, ids[n - 1], out, sizeof(out), &olen), 0);
    CHECK_INT_EQ(olen, 4);
    CHECK(memcmp(out, emoji, 4) == 0);
    tok_stream_flush(&st, out, sizeof(out), &olen);
    CHECK_INT_EQ(olen, 0);

    /* Cut short: the held bytes come out as one U+FFFD at the end. */
    tok_stream_init(&st);
    CHECK_INT_EQ(tok_stream_feed(t, &st, ids[0], out, sizeof(out), &olen), 0);
    CHECK_INT_EQ(olen, 0);
    tok_stream_flush(&st, out, sizeof(out), &olen);
    CHECK_INT_EQ(olen, 3);
    CHECK(memcmp(out, "\xef\xbf\xbd", 3) == 0);
    free(ids);

    /* A held lead byte followed by something that cannot continue it: U+FFFD, then text. */
    tok_stream_init(&st);
    CHECK_INT_EQ(tok_encode(t, "\xe6", 1, &ids, &n), 0);
    CHECK_INT_EQ(tok_stream_feed(t, &st, ids[0], out, sizeof(out), &olen), 0);
    CHECK_INT_EQ(olen, 0);
    free(ids);
    CHECK_INT_EQ(tok_encode(t, "a", 1, &ids, &n), 0);
    CHECK_INT_EQ(tok_stream_feed(t, &st, ids[0], out, sizeof(out), &olen), 0);
    CHECK_INT_EQ(olen, 4);
    CHECK(memcmp(out,
                 "\xef\xbf\xbd"
                 "a",
                 4) == 0);
    free(ids);

    /* Too small an output buffer: -ENOSPC and nothing consumed. */
    tok_stream_init(&st);
    CHECK_INT_EQ(tok_encode(t, " hello", 6, &ids, &n), 0);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(tok_stream_feed(t, &st, ids[0], out, 3, &olen), -ENOSPC);
    CHECK_INT_EQ(olen, 0);
    CHECK_INT_EQ(tok_stream_feed(t, &st, ids[0], out, sizeof(out), &olen), 0);
    CHECK_INT_EQ(olen, 6);
    free(ids);
}

static void test_invalid_ids(const tok_t *t)
{
    static const int32_t bad[] = {-1, 50257, INT32_MAX, INT32_MIN};
    char *text = (char *)1;
    size_t len = 99, blen;
    tok_stream_t st;
    char out[TOK_STREAM_OUT_MAX];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int32_t ids[3] = {15496, bad[i], 995};
        CHECK_INT_EQ(tok_decode(t, ids, 3, &text, &len), -EINVAL);
        CHECK(text == NULL);
        CHECK_INT_EQ(len, 0);
        CHECK(tok_token_bytes(t, bad[i], &blen) == NULL);

        tok_stream_init(&st);
        CHECK_INT_EQ(tok_stream_feed(t, &st, 171, out, sizeof(out), &len), 0); /* a lead byte */
        int held = st.npending;
        CHECK_INT_EQ(tok_stream_feed(t, &st, bad[i], out, sizeof(out), &len), -EINVAL);
        CHECK_INT_EQ(st.npending, held);
    }
    /* Decoding nothing gives an empty, NUL-terminated string. */
    CHECK_INT_EQ(tok_decode(t, NULL, 0, &text, &len), 0);
    CHECK(text && text[0] == '\0' && len == 0);
    free(text);
}

/* Long pieces: a megabyte without a space must not take quadratic time. A quadratic merge
 * loop needs ~10^11 pair scans for 1 MiB of one letter, minutes to hours; O(n log n) takes
 * well under a second here and ~10 s under ThreadSanitizer. The bound is loose on purpose: a
 * busy machine must not fail it, and it still tells the two apart. */
static double time_encode_fill(const tok_t *t, char *buf, size_t len, size_t *nids)
{
    int32_t *ids;
    char *text;
    size_t tlen;
    double t0 = clock_now_sec();
    CHECK_INT_EQ(tok_encode(t, buf, len, &ids, nids), 0);
    double dt = clock_now_sec() - t0;
    CHECK_INT_EQ(tok_decode(t, ids, *nids, &text, &tlen), 0);
    CHECK_INT_EQ(tlen, len);
    CHECK(memcmp(text, buf, len) == 0);
    free(text);
    free(ids);
    return dt;
}

static void test_long_inputs(const tok_t *t)
{
    size_t len = 1 << 20;
    char *buf = malloc(len);
    const char fill[] = {'a', ' ', '\n', '7'};
    for (size_t f = 0; f < sizeof(fill); f++) {
        size_t n;
        memset(buf, fill[f], len);
        double dt = time_encode_fill(t, buf, len, &n);
        printf("long input: 1 MiB of 0x%02x -> %zu ids in %.3f s\n", fill[f], n, dt);
        CHECK(dt < 30.0);
    }
    free(buf);
}

/* ---- error messages ---- */

static char tmpdir[256];

static void write_file(const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    fputs(content, f);
    fclose(f);
}

static void remove_files(void)
{
    static const char *names[] = {"vocab.json", "merges.txt", "tokenizer.json"};
    char path[512];
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
}

/* A tiny byte-level vocabulary: the 256 byte tokens (ids 0..255, GPT-2's byte order),
 * "ab" 256, "abc" 257, "<|endoftext|>" 258, plus extra JSON members. Returns malloc'd text. */
static char *tiny_vocab(const char *extra, int with_eot, int skip_byte)
{
    json_t *v = json_object();
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : 256 + n++;
        char k[3];
        if (cp < 0x80) {
            k[0] = (char)cp;
            k[1] = 0;
        } else {
            k[0] = (char)(0xC0 | cp >> 6);
            k[1] = (char)(0x80 | (cp & 0x3F));
            k[2] = 0;
        }
        if (b != skip_byte)
            json_object_set_new(v, k, json_integer(b));
    }
    json_object_set_new(v, "ab", json_integer(256));
    json_object_set_new(v, "abc", json_integer(257));
    if (with_eot)
        json_object_set_new(v, "<|endoftext|>", json_integer(258));
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (extra) {
        size_t l = strlen(s);
        s = realloc(s, l + strlen(extra) + 2);
        s[l - 1] = ',';
        strcpy(s + l, extra);
        strcat(s, "}");
    }
    return s;
}

static void expect_init_error(int want_rc, const char *want_msg, int line)
{
    tok_t *t = (tok_t *)1;
    char err[512] = "";
    int rc = tok_init(&t, tmpdir, err, sizeof(err));
    if (rc != want_rc || t != NULL || !strstr(err, want_msg)) {
        fprintf(stderr, "%s:%d: tok_init: rc %d (want %d), err \"%s\" (want \"%s\")\n", __FILE__,
                line, rc, want_rc, err, want_msg);
        check_failed_count++;
    }
    if (rc == 0)
        tok_free(t);
}
#define EXPECT_INIT_ERROR(rc, msg) expect_init_error(rc, msg, __LINE__)

static void test_errors(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof(tmpdir), "%s/tok-test-XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp %s failed\n", tmpdir);
        check_failed_count++;
        return;
    }
    char *good = tiny_vocab(NULL, 1, -1);
    const char *good_merges = "#version: 0.2\na b\nab c\n";

    EXPECT_INIT_ERROR(-ENOENT, "no vocab.json and no tokenizer.json");
    write_file("vocab.json", good);
    EXPECT_INIT_ERROR(-ENOENT, "no merges.txt and no tokenizer.json");

    /* The tiny files load and merge. */
    write_file("merges.txt", good_merges);
    {
        tok_t *t;
        char err[256];
        CHECK_INT_EQ(tok_init(&t, tmpdir, err, sizeof(err)), 0);
        if (t) {
            EXPECT_IDS(t, "abc", 257);
            /* "abab" merges a+b twice; " c" is two byte tokens (ids are byte values). */
            EXPECT_IDS(t, "abab c<|endoftext|>", 256, 256, ' ', 'c', 258);
            tok_free(t);
        }
    }

    write_file("vocab.json", "[1, 2, 3]");
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: not a JSON object");
    write_file("vocab.json", "{\"a\": 1,");
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json:1: ");
    write_file("vocab.json", "{}");
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: no tokens");
    write_file("vocab.json", "{\"a\": \"one\"}");
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: value of \"a\" is not an integer id");
    write_file("vocab.json", "{\"a\": -4}");
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: id -4 of \"a\" is out of range");
    write_file("vocab.json", "{\"a\": 1, \"a\": 2}");
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json:1: duplicate object key");

    char *v = tiny_vocab("\"\\u20ac\": 300", 1, -1);
    write_file("vocab.json", v);
    free(v);
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: token \"\xe2\x82\xac\" (id 300) has a character "
                               "outside GPT-2's byte alphabet");
    v = tiny_vocab("\"xyz\": 65", 1, -1);
    write_file("vocab.json", v);
    free(v);
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: id 65 is used by two tokens");
    v = tiny_vocab(NULL, 1, 'q');
    write_file("vocab.json", v);
    free(v);
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: no token for byte 0x71 (\"q\")");
    v = tiny_vocab(NULL, 0, -1);
    write_file("vocab.json", v);
    free(v);
    EXPECT_INIT_ERROR(-EINVAL, "vocab.json: no \"<|endoftext|>\" token");

    write_file("vocab.json", good);
    write_file("merges.txt", "#version: 0.2\na b\nab c d\n");
    EXPECT_INIT_ERROR(-EINVAL, "merges.txt:3: expected two symbols, got 3");
    write_file("merges.txt", "a b\nab\n");
    EXPECT_INIT_ERROR(-EINVAL, "merges.txt:2: expected two symbols, got 1");
    write_file("merges.txt", "#version: 0.2\nzz b\n");
    EXPECT_INIT_ERROR(-EINVAL, "merges.txt:2: symbol \"zz\" is not in the vocabulary");
    write_file("merges.txt", "#version: 0.2\na b\nb c\n");
    EXPECT_INIT_ERROR(-EINVAL, "merges.txt:3: merge result \"bc\" is not in the vocabulary");
    write_file("merges.txt", "#version: 0.2\r\na b\r\n\r\nab c\r\n");
    {
        tok_t *t;
        char err[256];
        CHECK_INT_EQ(tok_init(&t, tmpdir, err, sizeof(err)), 0); /* CRLF and blank lines are fine */
        tok_free(t);
    }

    /* tokenizer.json, used in preference to vocab.json/merges.txt. */
    remove_files();
    write_file("tokenizer.json", "[]");
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: not a JSON object");
    write_file("tokenizer.json", "{\"model\": 3");
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json:1: ");
    write_file("tokenizer.json", "{\"version\": \"1.0\"}");
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: no \"model\" object");
    write_file("tokenizer.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    EXPECT_INIT_ERROR(-ENOTSUP, "tokenizer.json: model.type \"WordPiece\" is not supported");
    write_file("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}");
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: model.vocab is missing, empty or not an object");

    char tj[8192];
    snprintf(tj, sizeof(tj), "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": 7}}",
             good);
    write_file("tokenizer.json", tj);
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: model.merges is missing or not an array");
    snprintf(tj, sizeof(tj),
             "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": [\"a b\", \"ab c d\"]}}",
             good);
    write_file("tokenizer.json", tj);
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: model.merges[1]: expected two symbols, got 3");
    snprintf(tj, sizeof(tj),
             "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": [[\"a\", \"b\"], 5]}}",
             good);
    write_file("tokenizer.json", tj);
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: model.merges[1]: expected a string or a pair");
    snprintf(tj, sizeof(tj),
             "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": [[\"a\", \"q\", \"b\"]]}}",
             good);
    write_file("tokenizer.json", tj);
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: model.merges[0]: expected two symbols, got 3");
    snprintf(tj, sizeof(tj),
             "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": [[\"a\", \"zz\"]]}}",
             good);
    write_file("tokenizer.json", tj);
    EXPECT_INIT_ERROR(-EINVAL, "tokenizer.json: model.merges[0]: symbol \"zz\" is not in the "
                               "vocabulary");
    free(good);
}

/* tokenizer.json built from the real GPT-2 files, merges both as "a b" and as ["a", "b"]:
 * the same ids as vocab.json + merges.txt on the whole corpus. */
static void test_tokenizer_json(const char *data_dir)
{
    char path[512];
    json_error_t jerr;
    snprintf(path, sizeof(path), "%s/vocab.json", data_dir);
    json_t *vocab = json_load_file(path, 0, &jerr);
    snprintf(path, sizeof(path), "%s/merges.txt", data_dir);
    FILE *f = fopen(path, "r");
    CHECK(vocab && f);
    if (!vocab || !f)
        return;
    json_t *as_str = json_array(), *as_pair = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0) {
        if (line[0] == '#' || got < 3)
            continue;
        line[strcspn(line, "\r\n")] = 0;
        json_array_append_new(as_str, json_string(line));
        char *sp = strchr(line, ' ');
        *sp = 0;
        json_t *pair = json_array();
        json_array_append_new(pair, json_string(line));
        json_array_append_new(pair, json_string(sp + 1));
        json_array_append_new(as_pair, pair);
    }
    free(line);
    fclose(f);

    for (int form = 0; form < 2; form++) {
        /* GPT-2's own tokenizer.json: ByteLevel pre-tokenizer and decoder, <|endoftext|>
         * an added special token. */
        json_t *root =
            json_pack("{s:s, s:[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}], s:{s:s, s:b, s:b, s:b}, "
                      "s:{s:s, s:b, s:b, s:b}, s:{s:s, s:O, s:O}}",
                      "version", "1.0", "added_tokens", "id", 50256, "content", "<|endoftext|>",
                      "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 1, "special", 1,
                      "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets",
                      1, "use_regex", 1, "decoder", "type", "ByteLevel", "add_prefix_space", 1,
                      "trim_offsets", 1, "use_regex", 1, "model", "type", "BPE", "vocab", vocab,
                      "merges", form ? as_pair : as_str);
        remove_files();
        snprintf(path, sizeof(path), "%s/tokenizer.json", tmpdir);
        CHECK_INT_EQ(json_dump_file(root, path, JSON_COMPACT), 0);
        json_decref(root);

        tok_t *t;
        char err[512];
        int rc = tok_init(&t, tmpdir, err, sizeof(err));
        CHECK_INT_EQ(rc, 0);
        if (rc != 0) {
            fprintf(stderr, "  %s\n", err);
            continue;
        }
        size_t mismatch = 0;
        for (size_t i = 0; i < n_vectors; i++) {
            int32_t *ids;
            size_t n;
            CHECK_INT_EQ(tok_encode(t, vectors[i].text, vectors[i].len, &ids, &n), 0);
            mismatch += !ids_equal(ids, n, vectors[i].ids, vectors[i].n);
            free(ids);
        }
        printf("tokenizer.json with merges as %s: %zu mismatches\n", form ? "pairs" : "strings",
               mismatch);
        CHECK_INT_EQ(mismatch, 0);
        tok_free(t);
    }
    json_decref(as_str);
    json_decref(as_pair);
    json_decref(vocab);
    remove_files();
    rmdir(tmpdir);
}

/* ---- concurrency ---- */

typedef struct worker {
    const tok_t *t;
    size_t start;
    size_t bad;
} worker_t;

static void *worker_run(void *arg)
{
    worker_t *w = arg;
    /* Every thread walks the whole corpus from a different start, twice, so threads hit the
     * same cache slots at the same time. */
    for (size_t k = 0; k < 2 * n_vectors; k++) {
        const vec_t *v = &vectors[(w->start + k) % n_vectors];
        int32_t *ids;
        size_t n;
        if (tok_encode(w->t, v->text, v->len, &ids, &n) != 0 || !ids_equal(ids, n, v->ids, v->n))
            w->bad++;
        free(ids);
    }
    return NULL;
}

static void test_concurrent(const tok_t *t)
{
    enum { NT = 4 };
    pthread_t th[NT];
    worker_t w[NT];
    for (int i = 0; i < NT; i++) {
        w[i] = (worker_t){t, (size_t)i * n_vectors / NT, 0};
        CHECK_INT_EQ(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
    }
    size_t bad = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        bad += w[i].bad;
    }
    printf("concurrent: %d threads x %zu encodes, %zu wrong\n", NT, 2 * n_vectors, bad);
    CHECK_INT_EQ(bad, 0);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DATA_DIR VECTORS\n", argv[0]);
        return 2;
    }
    tok_t *t;
    char err[512];
    int rc = tok_init(&t, argv[1], err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "tok_init(%s): %d %s\n", argv[1], rc, err);
        return 1;
    }
    load_vectors(argv[2]);

    test_vectors(t);
    test_disputed_whitespace(t);
    test_special(t);
    test_invalid_utf8(t);
    test_stream(t);
    test_invalid_ids(t);
    test_long_inputs(t);
    test_errors();
    test_tokenizer_json(argv[1]);
    test_concurrent(t);

    tok_free(t);
    tok_free(NULL);
    free_vectors();
    if (check_failures()) {
        fprintf(stderr, "%d check(s) failed\n", check_failures());
        return 1;
    }
    printf("all tokenizer checks passed\n");
    return 0;
}
