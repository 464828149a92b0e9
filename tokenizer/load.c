/* load.c - reads the vocabulary and the merges: vocab.json + merges.txt, or the "model"
 * of a Hugging Face tokenizer.json when those two are absent.
 *
 * Vocabulary keys are GPT-2's printable stand-ins for bytes (bytes_to_unicode in
 * openai/gpt-2 src/encoder.py: printable Latin-1 maps to itself, the other 68 bytes to
 * U+0100..U+0143); they are turned back into raw bytes here once, so encode and decode
 * work on bytes only. Every error names the file (and line or key) and the bad value.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tokenizer/internal.h"

#define MAX_VOCAB (1 << 24)
#define BYTE_CP_LIMIT 0x144 /* the stand-ins are all below U+0144 */

typedef struct loader {
    tok_t *t;
    const char *fname; /* the path named in error messages */
    json_t *vocab;     /* borrowed: the vocabulary object, mapped key -> id */
    int16_t cp_byte[BYTE_CP_LIMIT]; /* stand-in code point -> byte, -1 if none */
    int byte_cp[256];               /* byte -> stand-in code point */
    char *err;
    size_t errlen;
} loader_t;

static int fail(loader_t *l, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(loader_t *l, int code, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(l->err, l->errlen, "%s: ", l->fname);
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < l->errlen)
        vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

/* GPT-2's bytes_to_unicode table. */
static void byte_map_init(loader_t *l)
{
    int n = 0;
    for (int i = 0; i < BYTE_CP_LIMIT; i++)
        l->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        l->byte_cp[b] = printable ? b : 256 + n++;
        l->cp_byte[l->byte_cp[b]] = (int16_t)b;
    }
}

/* Decodes one UTF-8 code point of s[0, len); returns its length, 0 if invalid. */
static size_t utf8_next(const unsigned char *s, size_t len, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t n = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (n == 0 || n > len)
        return 0;
    uint32_t c = s[0] & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    *cp = c;
    return n;
}

/* Turns a vocabulary key into raw bytes in out (room for strlen(key) bytes); returns the
 * byte count or -1 if the key holds a character outside the byte alphabet. */
static long key_to_bytes(const loader_t *l, const char *key, size_t klen, char *out)
{
    const unsigned char *k = (const unsigned char *)key;
    long n = 0;
    for (size_t i = 0; i < klen;) {
        uint32_t cp;
        size_t step = utf8_next(k + i, klen - i, &cp);
        if (step == 0 || cp >= BYTE_CP_LIMIT || l->cp_byte[cp] < 0)
            return -1;
        out[n++] = (char)l->cp_byte[cp];
        i += step;
    }
    return n;
}

static int load_vocab(loader_t *l, const char *what)
{
    tok_t *t = l->t;
    const char *key;
    json_t *val;
    size_t total = 0;
    json_int_t max_id = -1;

    if (!json_is_object(l->vocab))
        return fail(l, -EINVAL, "%snot a JSON object", what);
    if (json_object_size(l->vocab) == 0)
        return fail(l, -EINVAL, "%sno tokens", what);
    json_object_foreach(l->vocab, key, val) {
        if (!json_is_integer(val))
            return fail(l, -EINVAL, "%svalue of \"%s\" is not an integer id", what, key);
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= MAX_VOCAB)
            return fail(l, -EINVAL, "%sid %lld of \"%s\" is out of range [0, %d)", what,
                        (long long)id, key, MAX_VOCAB);
        if (id > max_id)
            max_id = id;
        total += strlen(key);
    }

    t->n_vocab = (int32_t)max_id + 1;
    t->entries = calloc((size_t)t->n_vocab, sizeof(*t->entries));
    t->blob = malloc(total + 1);
    if (!t->entries || !t->blob)
        return fail(l, -ENOMEM, "out of memory for %d tokens", t->n_vocab);

    json_object_foreach(l->vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        long n = key_to_bytes(l, key, strlen(key), t->blob + t->blob_len);
        if (n < 0)
            return fail(l, -EINVAL, "%stoken \"%s\" (id %d) has a character outside GPT-2's "
                        "byte alphabet", what, key, id);
        if (n == 0)
            return fail(l, -EINVAL, "%stoken id %d is the empty string", what, id);
        if (n > TOK_MAX_TOKEN_BYTES)
            return fail(l, -EINVAL, "%stoken id %d is %ld bytes long, the limit is %d", what, id,
                        n, TOK_MAX_TOKEN_BYTES);
        if (t->entries[id].valid)
            return fail(l, -EINVAL, "%sid %d is used by two tokens, one is \"%s\"", what, id, key);
        t->entries[id] = (tok_entry_t){(uint32_t)t->blob_len, (uint16_t)n, 1, 0};
        t->blob_len += (size_t)n;
    }

    for (int b = 0; b < 256; b++) {
        char k[4];
        int cp = l->byte_cp[b];
        size_t klen = cp < 0x80 ? 1 : 2;
        if (klen == 1) {
            k[0] = (char)cp;
        } else {
            k[0] = (char)(0xC0 | cp >> 6);
            k[1] = (char)(0x80 | (cp & 0x3F));
        }
        json_t *v = json_object_getn(l->vocab, k, klen);
        if (!v)
            return fail(l, -EINVAL, "%sno token for byte 0x%02x (\"%.*s\")", what, b, (int)klen,
                        k);
        t->byte_id[b] = (int32_t)json_integer_value(v);
    }

    json_t *eos = json_object_get(l->vocab, "<|endoftext|>");
    if (!eos)
        return fail(l, -EINVAL, "%sno \"<|endoftext|>\" token", what);
    t->eos_id = (int32_t)json_integer_value(eos);
    return 0;
}

/* Adds the merge "a b" (symbols given by pointer and length). where names the rule in
 * errors, e.g. "merges.txt:12" or "tokenizer.json: model.merges[12]". */
static int add_merge(loader_t *l, const char *where, const char *a, size_t alen, const char *b,
                     size_t blen)
{
    char both[2 * 4 * TOK_MAX_TOKEN_BYTES + 1];
    json_t *va = json_object_getn(l->vocab, a, alen);
    json_t *vb = json_object_getn(l->vocab, b, blen);
    if (!va || !vb) {
        const char *s = va ? b : a;
        int slen = (int)(va ? blen : alen);
        snprintf(l->err, l->errlen, "%s: symbol \"%.*s\" is not in the vocabulary", where,
                 slen, s);
        return -EINVAL;
    }
    if (alen + blen >= sizeof(both)) {
        snprintf(l->err, l->errlen, "%s: merge \"%.*s %.*s\" is too long", where, (int)alen, a,
                 (int)blen, b);
        return -EINVAL;
    }
    memcpy(both, a, alen);
    memcpy(both + alen, b, blen);
    json_t *vm = json_object_getn(l->vocab, both, alen + blen);
    if (!vm) {
        snprintf(l->err, l->errlen, "%s: merge result \"%.*s\" is not in the vocabulary",
                 where, (int)(alen + blen), both);
        return -EINVAL;
    }
    bpe_merge_add(l->t, (int32_t)json_integer_value(va), (int32_t)json_integer_value(vb),
                  (int32_t)json_integer_value(vm));
    return 0;
}

/* Splits s[0, len) on spaces and tabs into at most 2 symbols; returns how many it saw. */
static int split_rule(const char *s, size_t len, const char **sym, size_t *symlen)
{
    int n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == len)
            break;
        size_t start = i;
        while (i < len && s[i] != ' ' && s[i] != '\t')
            i++;
        if (n < 2) {
            sym[n] = s + start;
            symlen[n] = i - start;
        }
        n++;
    }
    return n;
}

static int read_file(loader_t *l, const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(l, errno == ENOENT ? -ENOENT : -EIO, "%s", strerror(errno));
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf)
        return fail(l, -ENOMEM, "out of memory reading the file");
    if (bad) {
        free(buf);
        return fail(l, -EIO, "read error");
    }
    *data = buf;
    *len = n;
    return 0;
}

static int load_merges_txt(loader_t *l, const char *path)
{
    char *data = NULL;
    size_t len = 0;
    int rc = read_file(l, path, &data, &len);
    if (rc < 0)
        return rc;

    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    rc = bpe_merges_alloc(l->t, lines);
    if (rc < 0) {
        free(data);
        return fail(l, rc, "out of memory for %zu merges", lines);
    }

    size_t lineno = 0;
    for (size_t pos = 0; pos < len && rc == 0;) {
        const char *line = data + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        pos += llen + 1;
        lineno++;
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        /* The first line of GPT-2's file is "#version: 0.2"; blank lines carry nothing. */
        if (lineno == 1 && llen >= 8 && memcmp(line, "#version", 8) == 0)
            continue;
        const char *sym[2];
        size_t symlen[2];
        int nsym = split_rule(line, llen, sym, symlen);
        if (nsym == 0)
            continue;
        char where[PATH_MAX + 32];
        snprintf(where, sizeof(where), "%s:%zu", l->fname, lineno);
        if (nsym != 2) {
            snprintf(l->err, l->errlen, "%s: expected two symbols, got %d", where, nsym);
            rc = -EINVAL;
            break;
        }
        rc = add_merge(l, where, sym[0], symlen[0], sym[1], symlen[1]);
    }
    free(data);
    return rc;
}

static json_t *load_json(loader_t *l, const char *path, int *rc)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        enum json_error_code code = json_error_code(&jerr);
        if (code == json_error_cannot_open_file)
            *rc = fail(l, -EIO, "cannot open: %s", jerr.text);
        else if (code == json_error_out_of_memory)
            *rc = fail(l, -ENOMEM, "out of memory parsing JSON");
        else
            snprintf(l->err, l->errlen, "%s:%d: %s", l->fname, jerr.line, jerr.text),
                *rc = -EINVAL;
        /* jansson quotes the offending source text, which may hold a newline or other
         * control bytes; the error must stay one line. */
        for (char *p = l->err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    return root;
}

static int load_tokenizer_json(loader_t *l, json_t *root)
{
    char where[PATH_MAX + 64];
    if (!json_is_object(root))
        return fail(l, -EINVAL, "not a JSON object");
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return fail(l, -EINVAL, "no \"model\" object");
    json_t *type = json_object_get(model, "type");
    if (type && !(json_is_string(type) && strcmp(json_string_value(type), "BPE") == 0))
        return fail(l, -EINVAL, "model.type is %s, expected \"BPE\"",
                    json_is_string(type) ? json_string_value(type) : "not a string");
    l->vocab = json_object_get(model, "vocab");
    if (!l->vocab)
        return fail(l, -EINVAL, "no model.vocab");
    int rc = load_vocab(l, "model.vocab: ");
    if (rc < 0)
        return rc;

    json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges))
        return fail(l, -EINVAL, "model.merges is missing or not an array");
    if (bpe_merges_alloc(l->t, json_array_size(merges)) < 0)
        return fail(l, -ENOMEM, "out of memory for %zu merges", json_array_size(merges));
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *sym[2];
        size_t symlen[2];
        int nsym;
        snprintf(where, sizeof(where), "%s: model.merges[%zu]", l->fname, i);
        if (json_is_string(m)) {
            /* Older files: "a b". */
            nsym = split_rule(json_string_value(m), json_string_length(m), sym, symlen);
        } else if (json_is_array(m)) {
            /* Newer files: ["a", "b"]. */
            nsym = (int)json_array_size(m);
            for (int k = 0; k < 2 && k < nsym; k++) {
                json_t *s = json_array_get(m, (size_t)k);
                if (!json_is_string(s)) {
                    snprintf(l->err, l->errlen, "%s: symbol %d is not a string", where, k);
                    return -EINVAL;
                }
                sym[k] = json_string_value(s);
                symlen[k] = json_string_length(s);
            }
        } else {
            snprintf(l->err, l->errlen, "%s: expected a string or a pair of strings", where);
            return -EINVAL;
        }
        if (nsym != 2) {
            snprintf(l->err, l->errlen, "%s: expected two symbols, got %d", where, nsym);
            return -EINVAL;
        }
        rc = add_merge(l, where, sym[0], symlen[0], sym[1], symlen[1]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static int load_files(tok_t *t, const char *dir, char *err, size_t errlen)
{
    char vocab_path[PATH_MAX], merges_path[PATH_MAX], tj_path[PATH_MAX];
    loader_t l = {.t = t, .fname = dir, .err = err, .errlen = errlen};
    int rc = 0;

    byte_map_init(&l);
    if (snprintf(vocab_path, sizeof(vocab_path), "%s/vocab.json", dir) >= PATH_MAX ||
        snprintf(merges_path, sizeof(merges_path), "%s/merges.txt", dir) >= PATH_MAX ||
        snprintf(tj_path, sizeof(tj_path), "%s/tokenizer.json", dir) >= PATH_MAX)
        return fail(&l, -ENAMETOOLONG, "directory name too long");

    int have_pair = exists(vocab_path) && exists(merges_path);
    if (!have_pair && exists(tj_path)) {
        l.fname = tj_path;
        json_t *root = load_json(&l, tj_path, &rc);
        if (!root)
            return rc;
        rc = load_tokenizer_json(&l, root);
        json_decref(root);
        return rc;
    }
    if (!have_pair) {
        const char *missing = exists(vocab_path) ? "merges.txt" : "vocab.json";
        return fail(&l, -ENOENT, "no %s and no tokenizer.json", missing);
    }

    l.fname = vocab_path;
    json_t *vocab = load_json(&l, vocab_path, &rc);
    if (!vocab)
        return rc;
    l.vocab = vocab;
    rc = load_vocab(&l, "");
    if (rc == 0) {
        l.fname = merges_path;
        rc = load_merges_txt(&l, merges_path);
    }
    json_decref(vocab);
    return rc;
}

int tok_load_files(tok_t *t, const char *dir, char *err, size_t errlen)
{
    int rc = load_files(t, dir, err, errlen);
    /* Messages quote tokens and merges as the files hold them, and a JSON string may hold a
     * newline or an escape byte: keep the message one printable line. */
    if (rc && err)
        for (char *c = err; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
    return rc;
}
