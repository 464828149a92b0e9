/* load.c - reads GPT-2's vocab.json + merges.txt, or hands tokenizer.json to hf.c, and the
 * helpers both share.
 *
 * Byte-level vocabulary keys are GPT-2's printable stand-ins for bytes (bytes_to_unicode in
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

#include "tokenizer/load.h"

#define MAX_VOCAB (1 << 24)

int load_fail(loader_t *l, int code, const char *fmt, ...)
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

/* Turns a byte-level key into raw bytes in out (room for klen bytes); returns the byte
 * count or -1 if the key holds a character outside the byte alphabet. */
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

static int blob_reserve(char **blob, size_t *cap, size_t used, size_t more)
{
    if (used + more <= *cap)
        return 0;
    size_t c = *cap ? *cap : 1 << 16;
    while (c < used + more)
        c *= 2;
    char *b = realloc(*blob, c);
    if (!b)
        return -ENOMEM;
    *blob = b;
    *cap = c;
    return 0;
}

int load_entries(loader_t *l, int32_t n_vocab)
{
    tok_t *t = l->t;
    t->n_vocab = n_vocab;
    t->entries = calloc((size_t)n_vocab, sizeof(*t->entries));
    if (!t->entries)
        return load_fail(l, -ENOMEM, "out of memory for %d tokens", n_vocab);
    return 0;
}

/* Applies the decoder's Replace steps to text into out (a malloc'd buffer). */
static int apply_replaces(const loader_t *l, const char *text, size_t len, char **out,
                          size_t *outlen)
{
    char *cur = malloc(len + 1);
    if (!cur)
        return -ENOMEM;
    memcpy(cur, text, len);
    size_t n = len;
    for (int r = 0; r < l->n_rep; r++) {
        size_t fl = strlen(l->rep_from[r]), tl = strlen(l->rep_to[r]);
        size_t count = 0;
        for (const char *p = cur; fl && (p = memmem(p, n - (size_t)(p - cur), l->rep_from[r], fl));
             p += fl)
            count++;
        if (count == 0)
            continue;
        char *nb = malloc(n + count * tl + 1), *o = nb;
        if (!nb) {
            free(cur);
            return -ENOMEM;
        }
        const char *p = cur, *end = cur + n;
        for (const char *m; (m = memmem(p, (size_t)(end - p), l->rep_from[r], fl)); p = m + fl) {
            memcpy(o, p, (size_t)(m - p));
            o += m - p;
            memcpy(o, l->rep_to[r], tl);
            o += tl;
        }
        memcpy(o, p, (size_t)(end - p));
        o += end - p;
        free(cur);
        cur = nb;
        n = (size_t)(o - nb);
    }
    *out = cur;
    *outlen = n;
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* "<0xNN>" (upper-case hex, as Hugging Face writes byte pieces) -> NN, else -1. */
static int byte_piece(const char *s, size_t len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

int load_token(loader_t *l, int32_t id, const char *text, size_t len, int strict, const char *what)
{
    tok_t *t = l->t;
    tok_entry_t *e = &t->entries[id];
    if (len == 0)
        return load_fail(l, -EINVAL, "%stoken id %d is the empty string", what, id);
    if (len > UINT16_MAX)
        return load_fail(l, -EINVAL, "%stoken id %d is %zu bytes long", what, id, len);
    if (blob_reserve(&t->blob, &l->blob_cap, t->blob_len, 3 * len + 8) < 0 ||
        blob_reserve(&t->kblob, &l->kblob_cap, t->kblob_len, len + 8) < 0)
        return load_fail(l, -ENOMEM, "out of memory for the tokens");
    e->valid = 1;
    e->off = (uint32_t)t->blob_len;
    e->koff = (uint32_t)t->kblob_len;
    if (t->byte_level) {
        long n = key_to_bytes(l, text, len, t->kblob + t->kblob_len);
        if (n < 0 && strict)
            return load_fail(l, -EINVAL,
                             "%stoken \"%.*s\" (id %d) has a character outside GPT-2's byte "
                             "alphabet",
                             what, (int)len, text, id);
        if (n < 0) {
            /* Hugging Face's ByteLevel decoder gives such a token its own UTF-8. */
            memcpy(t->blob + t->blob_len, text, len);
            e->len = (uint16_t)len;
        } else {
            memcpy(t->blob + t->blob_len, t->kblob + t->kblob_len, (size_t)n);
            e->len = (uint16_t)n;
            e->klen = (uint16_t)n;
        }
    } else {
        memcpy(t->kblob + t->kblob_len, text, len);
        e->klen = (uint16_t)len;
        int b = l->byte_pieces ? byte_piece(text, len) : -1;
        if (b >= 0) {
            t->blob[t->blob_len] = (char)b;
            e->len = 1;
            e->byte = 1;
        } else {
            char *dec;
            size_t dlen;
            if (apply_replaces(l, text, len, &dec, &dlen) < 0)
                return load_fail(l, -ENOMEM, "out of memory for the tokens");
            if (blob_reserve(&t->blob, &l->blob_cap, t->blob_len, dlen + 1) < 0) {
                free(dec);
                return load_fail(l, -ENOMEM, "out of memory for the tokens");
            }
            memcpy(t->blob + t->blob_len, dec, dlen);
            free(dec);
            e->len = (uint16_t)dlen;
        }
    }
    if (e->len > TOK_MAX_TOKEN_BYTES)
        return load_fail(l, -EINVAL, "%stoken id %d is %u bytes long, the limit is %d", what, id,
                         e->len, TOK_MAX_TOKEN_BYTES);
    t->blob_len += e->len;
    t->kblob_len += e->klen;
    return 0;
}

int load_byte_ids(loader_t *l, const char *what)
{
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
            return load_fail(l, -EINVAL, "%sno token for byte 0x%02x (\"%.*s\")", what, b,
                             (int)klen, k);
        l->t->byte_id[b] = (int32_t)json_integer_value(v);
    }
    return 0;
}

/* vocab.json: checks the ids, sizes the tables, and loads every token strictly. */
static int load_vocab_json(loader_t *l)
{
    const char *key;
    json_t *val;
    json_int_t max_id = -1;

    if (!json_is_object(l->vocab))
        return load_fail(l, -EINVAL, "not a JSON object");
    if (json_object_size(l->vocab) == 0)
        return load_fail(l, -EINVAL, "no tokens");
    json_object_foreach(l->vocab, key, val)
    {
        if (!json_is_integer(val))
            return load_fail(l, -EINVAL, "value of \"%s\" is not an integer id", key);
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= MAX_VOCAB)
            return load_fail(l, -EINVAL, "id %lld of \"%s\" is out of range [0, %d)", (long long)id,
                             key, MAX_VOCAB);
        if (id > max_id)
            max_id = id;
    }
    int rc = load_entries(l, (int32_t)max_id + 1);
    json_object_foreach(l->vocab, key, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        if (rc == 0 && l->t->entries[id].valid)
            return load_fail(l, -EINVAL, "id %d is used by two tokens, one is \"%s\"", id, key);
        if (rc == 0)
            rc = load_token(l, id, key, strlen(key), 1, "");
    }
    if (rc == 0)
        rc = load_byte_ids(l, "");
    if (rc < 0)
        return rc;

    json_t *eos = json_object_get(l->vocab, "<|endoftext|>");
    if (!eos)
        return load_fail(l, -EINVAL, "no \"<|endoftext|>\" token");
    tok_t *t = l->t;
    t->eos_id = (int32_t)json_integer_value(eos);
    /* <|endoftext|> is an added, special token in Hugging Face's GPT-2 tokenizer. */
    t->added = calloc(1, sizeof(*t->added));
    if (!t->added || !(t->added[0].text = strdup("<|endoftext|>")))
        return load_fail(l, -ENOMEM, "out of memory");
    t->added[0].len = strlen(t->added[0].text);
    t->added[0].id = t->eos_id;
    t->added[0].special = 1;
    t->n_added = 1;
    t->added_first['<'] = 1;
    t->entries[t->eos_id].special = 1;
    t->entries[t->eos_id].added = 1;
    return 0;
}

int load_merge(loader_t *l, const char *where, const char *a, size_t alen, const char *b,
               size_t blen)
{
    char both[2 * 4 * TOK_MAX_TOKEN_BYTES + 1];
    json_t *va = json_object_getn(l->vocab, a, alen);
    json_t *vb = json_object_getn(l->vocab, b, blen);
    if (!va || !vb) {
        const char *s = va ? b : a;
        int slen = (int)(va ? blen : alen);
        snprintf(l->err, l->errlen, "%s: symbol \"%.*s\" is not in the vocabulary", where, slen, s);
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
        snprintf(l->err, l->errlen, "%s: merge result \"%.*s\" is not in the vocabulary", where,
                 (int)(alen + blen), both);
        return -EINVAL;
    }
    bpe_merge_add(l->t, (int32_t)json_integer_value(va), (int32_t)json_integer_value(vb),
                  (int32_t)json_integer_value(vm));
    return 0;
}

int load_split_rule(const char *s, size_t len, const char **sym, size_t *symlen)
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
        return load_fail(l, errno == ENOENT ? -ENOENT : -EIO, "%s", strerror(errno));
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
        return load_fail(l, -ENOMEM, "out of memory reading the file");
    if (bad) {
        free(buf);
        return load_fail(l, -EIO, "read error");
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
        return load_fail(l, rc, "out of memory for %zu merges", lines);
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
        int nsym = load_split_rule(line, llen, sym, symlen);
        if (nsym == 0)
            continue;
        char where[PATH_MAX + 32];
        snprintf(where, sizeof(where), "%s:%zu", l->fname, lineno);
        if (nsym != 2) {
            snprintf(l->err, l->errlen, "%s: expected two symbols, got %d", where, nsym);
            rc = -EINVAL;
            break;
        }
        rc = load_merge(l, where, sym[0], symlen[0], sym[1], symlen[1]);
    }
    free(data);
    return rc;
}

json_t *load_json(loader_t *l, const char *path, size_t flags, int *rc)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES | flags, &jerr);
    if (!root) {
        enum json_error_code code = json_error_code(&jerr);
        if (code == json_error_cannot_open_file)
            *rc = load_fail(l, -EIO, "cannot open: %s", jerr.text);
        else if (code == json_error_out_of_memory)
            *rc = load_fail(l, -ENOMEM, "out of memory parsing JSON");
        else
            snprintf(l->err, l->errlen, "%s:%d: %s", l->fname, jerr.line, jerr.text), *rc = -EINVAL;
    }
    return root;
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* GPT-2's pipeline: ByteLevel pre-tokenization with its pattern, <|endoftext|> added. */
static int gpt2_pipeline(loader_t *l)
{
    tok_t *t = l->t;
    t->pre[0].kind = PRE_BYTELEVEL;
    t->n_pre = 1;
    t->bos_id = -1;
    t->unk_id = -1;
    return tok_pattern_compile(&t->pre[0], tok_gpt2_pattern, strlen(tok_gpt2_pattern), l->err,
                               l->errlen);
}

static int load_files(tok_t *t, const char *dir, char *err, size_t errlen)
{
    char vocab_path[PATH_MAX], merges_path[PATH_MAX], tj_path[PATH_MAX];
    loader_t l = {.t = t, .fname = dir, .err = err, .errlen = errlen};
    int rc = 0;

    byte_map_init(&l);
    for (int b = 0; b < 256; b++)
        t->fallback_id[b] = -1;
    if (snprintf(vocab_path, sizeof(vocab_path), "%s/vocab.json", dir) >= PATH_MAX ||
        snprintf(merges_path, sizeof(merges_path), "%s/merges.txt", dir) >= PATH_MAX ||
        snprintf(tj_path, sizeof(tj_path), "%s/tokenizer.json", dir) >= PATH_MAX)
        return load_fail(&l, -ENAMETOOLONG, "directory name too long");

    if (exists(tj_path))
        return hf_load(&l, dir);
    int have_pair = exists(vocab_path) && exists(merges_path);
    if (!have_pair) {
        const char *missing = exists(vocab_path) ? "merges.txt" : "vocab.json";
        return load_fail(&l, -ENOENT, "no %s and no tokenizer.json", missing);
    }

    t->byte_level = 1;
    l.fname = vocab_path;
    json_t *vocab = load_json(&l, vocab_path, 0, &rc);
    if (!vocab)
        return rc;
    l.vocab = vocab;
    rc = load_vocab_json(&l);
    if (rc == 0) {
        l.fname = merges_path;
        rc = load_merges_txt(&l, merges_path);
    }
    json_decref(vocab);
    if (rc == 0)
        rc = gpt2_pipeline(&l);
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
