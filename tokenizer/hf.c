/* hf.c - a Hugging Face tokenizer.json (and tokenizer_config.json) into a tok_t.
 *
 * Supported: model BPE (vocab; merges as "a b" or ["a", "b"]; ignore_merges, byte_fallback,
 * unk_token, fuse_unk); normalizers NFC/NFD/NFKC/NFKD (utf8proc), Prepend, Replace with a
 * String pattern, Sequence; pre-tokenizers Split (Regex or String pattern, every behavior,
 * invert), ByteLevel (add_prefix_space, use_regex), Sequence; decoders ByteLevel, Replace,
 * ByteFallback, Fuse, Strip (leading), Sequence; post-processors TemplateProcessing,
 * ByteLevel, Sequence; added_tokens with their flags. Anything else stops the load with one
 * line naming the file and the construct, e.g. "tokenizer.json: model.type "Unigram" is not
 * supported", rather than tokenizing differently from the reference.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/load.h"

#define MAX_VOCAB (1 << 24)

static const char *type_of(json_t *o)
{
    json_t *ty = json_object_get(o, "type");
    return json_is_string(ty) ? json_string_value(ty) : NULL;
}

static int unsupported(loader_t *l, const char *what, json_t *o)
{
    const char *ty = json_is_object(o) ? type_of(o) : NULL;
    if (!ty)
        return load_fail(l, -EINVAL, "%s is not an object with a string \"type\"", what);
    return load_fail(l, -ENOTSUP, "%s type \"%s\" is not supported", what, ty);
}

static int bool_of(json_t *o, const char *key, int dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* A Replace/Split "pattern": {"String": s} or {"Regex": r}; sets *is_regex. */
static const char *pattern_of(json_t *o, int *is_regex, size_t *len)
{
    json_t *p = json_object_get(o, "pattern");
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    *is_regex = json_is_string(r);
    json_t *v = json_is_string(s) ? s : r;
    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

/* ---- decoder ---- */

static int decoder_step(loader_t *l, json_t *d, int *fused, int *bytelevel)
{
    tok_t *t = l->t;
    const char *ty = type_of(d);
    if (!ty)
        return unsupported(l, "decoder", d);
    if (strcmp(ty, "ByteLevel") == 0) {
        *bytelevel = 1;
    } else if (strcmp(ty, "ByteFallback") == 0) {
        l->byte_pieces = 1;
    } else if (strcmp(ty, "Fuse") == 0) {
        *fused = 1;
    } else if (strcmp(ty, "Replace") == 0) {
        int re;
        size_t plen;
        const char *p = pattern_of(d, &re, &plen);
        json_t *c = json_object_get(d, "content");
        if (!p || re || !json_is_string(c) || plen == 0)
            return load_fail(l, -ENOTSUP,
                             "decoder Replace: only a non-empty String pattern "
                             "with a string content is supported");
        if (l->n_rep == TOK_MAX_STEPS)
            return load_fail(l, -ENOTSUP, "decoder: more than %d Replace steps", TOK_MAX_STEPS);
        l->rep_from[l->n_rep] = p;
        l->rep_to[l->n_rep++] = json_string_value(c);
    } else if (strcmp(ty, "Strip") == 0) {
        json_t *c = json_object_get(d, "content");
        json_t *start = json_object_get(d, "start"), *stop = json_object_get(d, "stop");
        if (!json_is_string(c) || json_string_length(c) != 1 || !json_is_integer(start) ||
            json_integer_value(start) < 0 || json_integer_value(start) > 64)
            return load_fail(l, -EINVAL, "decoder Strip: content, start or stop is malformed");
        if (json_integer_value(stop) != 0 || !*fused)
            return load_fail(l, -ENOTSUP,
                             "decoder Strip: only a leading strip after Fuse is "
                             "supported");
        t->strip_char = json_string_value(c)[0];
        t->strip_start = (int)json_integer_value(start);
    } else {
        return unsupported(l, "decoder", d);
    }
    return 0;
}

static int load_decoder(loader_t *l, json_t *d, int *bytelevel)
{
    int fused = 0;
    if (!d || json_is_null(d))
        return 0;
    if (type_of(d) && strcmp(type_of(d), "Sequence") == 0) {
        json_t *list = json_object_get(d, "decoders");
        if (!json_is_array(list))
            return load_fail(l, -EINVAL, "decoder Sequence: no \"decoders\" array");
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s)
        {
            int rc = decoder_step(l, s, &fused, bytelevel);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    return decoder_step(l, d, &fused, bytelevel);
}

/* ---- pre-tokenizer ---- */

static const char *behaviors[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};

static int pretok_step(loader_t *l, json_t *p)
{
    tok_t *t = l->t;
    const char *ty = type_of(p);
    if (!ty)
        return unsupported(l, "pre_tokenizer", p);
    if (t->n_pre == TOK_MAX_STEPS)
        return load_fail(l, -ENOTSUP, "pre_tokenizer: more than %d steps", TOK_MAX_STEPS);
    tok_pretok_t *s = &t->pre[t->n_pre];
    if (strcmp(ty, "ByteLevel") == 0) {
        s->kind = PRE_BYTELEVEL;
        s->prefix_space = bool_of(p, "add_prefix_space", 1);
        t->byte_level = 1;
        t->n_pre++;
        if (!bool_of(p, "use_regex", 1))
            return 0;
        return tok_pattern_compile(s, tok_gpt2_pattern, strlen(tok_gpt2_pattern), l->err,
                                   l->errlen);
    }
    if (strcmp(ty, "Split") != 0)
        return unsupported(l, "pre_tokenizer", p);
    s->kind = PRE_SPLIT;
    t->n_pre++;
    json_t *b = json_object_get(p, "behavior");
    s->behavior = -1;
    for (int i = 0; i < 5 && json_is_string(b); i++)
        if (strcmp(json_string_value(b), behaviors[i]) == 0)
            s->behavior = i;
    if (s->behavior < 0)
        return load_fail(l, -ENOTSUP, "pre_tokenizer Split: behavior %s is not supported",
                         json_is_string(b) ? json_string_value(b) : "(missing)");
    s->invert = bool_of(p, "invert", 0);
    int re;
    size_t plen;
    const char *pat = pattern_of(p, &re, &plen);
    if (!pat || plen == 0)
        return load_fail(l, -EINVAL, "pre_tokenizer Split: no String or Regex pattern");
    if (!re) {
        s->lit = malloc(plen);
        if (!s->lit)
            return load_fail(l, -ENOMEM, "out of memory");
        memcpy(s->lit, pat, plen);
        s->litlen = plen;
        return 0;
    }
    char msg[200];
    int rc = tok_pattern_compile(s, pat, plen, msg, sizeof(msg));
    if (rc < 0)
        return load_fail(l, rc, "pre_tokenizer Split: %s", msg);
    return 0;
}

static int load_pretok(loader_t *l, json_t *p)
{
    if (!p || json_is_null(p))
        return 0;
    if (type_of(p) && strcmp(type_of(p), "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return load_fail(l, -EINVAL, "pre_tokenizer Sequence: no \"pretokenizers\" array");
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s)
        {
            if (type_of(s) && strcmp(type_of(s), "Sequence") == 0)
                return load_fail(l, -ENOTSUP, "pre_tokenizer: nested Sequence");
            int rc = pretok_step(l, s);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    return pretok_step(l, p);
}

/* ---- normalizer ---- */

static int norm_step(loader_t *l, json_t *n)
{
    tok_t *t = l->t;
    const char *ty = type_of(n);
    static const char *forms[] = {"NFC", "NFD", "NFKC", "NFKD"};
    if (!ty)
        return unsupported(l, "normalizer", n);
    if (t->n_norm == TOK_MAX_STEPS)
        return load_fail(l, -ENOTSUP, "normalizer: more than %d steps", TOK_MAX_STEPS);
    tok_norm_t *s = &t->norm[t->n_norm];
    for (int i = 0; i < 4; i++)
        if (strcmp(ty, forms[i]) == 0) {
            s->kind = NORM_NFC + i;
            t->n_norm++;
            return 0;
        }
    const char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    if (strcmp(ty, "Prepend") == 0) {
        json_t *p = json_object_get(n, "prepend");
        if (!json_is_string(p))
            return load_fail(l, -EINVAL, "normalizer Prepend: no \"prepend\" string");
        s->kind = NORM_PREPEND;
        a = json_string_value(p);
        alen = json_string_length(p);
    } else if (strcmp(ty, "Replace") == 0) {
        int re;
        const char *p = pattern_of(n, &re, &alen);
        json_t *c = json_object_get(n, "content");
        if (!p || re || alen == 0 || !json_is_string(c))
            return load_fail(l, -ENOTSUP,
                             "normalizer Replace: only a non-empty String "
                             "pattern with a string content is supported");
        s->kind = NORM_REPLACE;
        a = p;
        b = json_string_value(c);
        blen = json_string_length(c);
    } else {
        return unsupported(l, "normalizer", n);
    }
    t->n_norm++;
    s->a = malloc(alen + 1);
    s->b = malloc(blen + 1);
    if (!s->a || !s->b)
        return load_fail(l, -ENOMEM, "out of memory");
    memcpy(s->a, a, alen);
    s->alen = alen;
    if (b)
        memcpy(s->b, b, blen);
    s->blen = blen;
    return 0;
}

static int load_norm(loader_t *l, json_t *n)
{
    if (!n || json_is_null(n))
        return 0;
    if (type_of(n) && strcmp(type_of(n), "Sequence") == 0) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
            return load_fail(l, -EINVAL, "normalizer Sequence: no \"normalizers\" array");
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s)
        {
            if (type_of(s) && strcmp(type_of(s), "Sequence") == 0)
                return load_fail(l, -ENOTSUP, "normalizer: nested Sequence");
            int rc = norm_step(l, s);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    return norm_step(l, n);
}

/* ---- post-processor ---- */

static int template_ids(loader_t *l, json_t *tp)
{
    tok_t *t = l->t;
    json_t *single = json_object_get(tp, "single");
    json_t *specials = json_object_get(tp, "special_tokens");
    int seen_seq = 0;
    size_t i;
    json_t *item;
    if (!json_is_array(single))
        return load_fail(l, -EINVAL, "post_processor TemplateProcessing: no \"single\" array");
    json_array_foreach(single, i, item)
    {
        json_t *st = json_object_get(item, "SpecialToken");
        if (json_object_get(item, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        json_t *name = json_object_get(st, "id");
        json_t *spec =
            json_is_string(name) ? json_object_get(specials, json_string_value(name)) : NULL;
        json_t *ids = json_object_get(spec, "ids");
        if (!json_is_array(ids))
            return load_fail(l, -EINVAL,
                             "post_processor TemplateProcessing: single[%zu] names "
                             "no special token with ids",
                             i);
        size_t k;
        json_t *id;
        json_array_foreach(ids, k, id)
        {
            json_int_t v = json_integer_value(id);
            int *n = seen_seq ? &t->n_post_suf : &t->n_post_pre;
            int32_t *dst = seen_seq ? t->post_suf : t->post_pre;
            if (!json_is_integer(id) || v < 0 || v >= t->n_vocab || !t->entries[v].valid)
                return load_fail(l, -EINVAL,
                                 "post_processor TemplateProcessing: special "
                                 "token id is not in the vocabulary");
            if (*n == 4)
                return load_fail(l, -ENOTSUP, "post_processor: more than 4 special ids");
            dst[(*n)++] = (int32_t)v;
        }
    }
    return 0;
}

static int load_post(loader_t *l, json_t *p)
{
    if (!p || json_is_null(p))
        return 0;
    const char *ty = type_of(p);
    if (ty && strcmp(ty, "ByteLevel") == 0)
        return 0; /* offsets only */
    if (ty && strcmp(ty, "TemplateProcessing") == 0)
        return template_ids(l, p);
    if (ty && strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(p, "processors");
        size_t i;
        json_t *s;
        if (!json_is_array(list))
            return load_fail(l, -EINVAL, "post_processor Sequence: no \"processors\" array");
        json_array_foreach(list, i, s)
        {
            if (type_of(s) && strcmp(type_of(s), "Sequence") == 0)
                return load_fail(l, -ENOTSUP, "post_processor: nested Sequence");
            int rc = load_post(l, s);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    return unsupported(l, "post_processor", p);
}

/* ---- model and added tokens ---- */

static int check_model(loader_t *l, json_t *model)
{
    const char *ty = type_of(model);
    if (!json_is_object(model))
        return load_fail(l, -EINVAL, "no \"model\" object");
    if (ty && strcmp(ty, "BPE") != 0)
        return load_fail(l, -ENOTSUP, "model.type \"%s\" is not supported", ty);
    if (!ty && json_object_get(model, "type"))
        return load_fail(l, -EINVAL, "model.type is not a string");
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return load_fail(l, -ENOTSUP, "model.dropout is not supported");
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(model, keys[i]);
        if (json_is_string(v) && json_string_length(v) > 0)
            return load_fail(l, -ENOTSUP, "model.%s is not supported", keys[i]);
    }
    l->vocab = json_object_get(model, "vocab");
    if (!json_is_object(l->vocab) || json_object_size(l->vocab) == 0)
        return load_fail(l, -EINVAL, "model.vocab is missing, empty or not an object");
    return 0;
}

static int max_id(loader_t *l, json_t *added, int32_t *out)
{
    const char *key;
    json_t *val;
    json_int_t mx = -1;
    json_object_foreach(l->vocab, key, val)
    {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= MAX_VOCAB)
            return load_fail(l, -EINVAL,
                             "model.vocab: id of \"%s\" is not an integer in "
                             "[0, %d)",
                             key, MAX_VOCAB);
        if (id > mx)
            mx = id;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        json_t *id = json_object_get(a, "id");
        json_int_t v = json_integer_value(id);
        if (!json_is_integer(id) || v < 0 || v >= MAX_VOCAB ||
            !json_is_string(json_object_get(a, "content")))
            return load_fail(l, -EINVAL,
                             "added_tokens[%zu]: no integer id in [0, %d) or no "
                             "string content",
                             i, MAX_VOCAB);
        if (v > mx)
            mx = v;
    }
    *out = (int32_t)mx + 1;
    return 0;
}

static int load_model_vocab(loader_t *l)
{
    const char *key;
    json_t *val;
    json_object_foreach(l->vocab, key, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        if (l->t->entries[id].valid)
            return load_fail(l, -EINVAL,
                             "model.vocab: id %d is used by two tokens, one is "
                             "\"%s\"",
                             id, key);
        int rc = load_token(l, id, key, strlen(key), 0, "model.vocab: ");
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int cmp_added(const void *a, const void *b)
{
    const tok_added_t *x = a, *y = b;
    return x->len < y->len ? 1 : x->len > y->len ? -1 : 0;
}

static int load_added(loader_t *l, json_t *added)
{
    tok_t *t = l->t;
    size_t n = json_array_size(added), i;
    json_t *a;
    if (n == 0)
        return 0;
    t->added = calloc(n, sizeof(*t->added));
    if (!t->added)
        return load_fail(l, -ENOMEM, "out of memory");
    json_array_foreach(added, i, a)
    {
        json_t *c = json_object_get(a, "content");
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        size_t len = json_string_length(c);
        tok_added_t *x = &t->added[t->n_added];
        if (len == 0 || len > TOK_MAX_TOKEN_BYTES)
            return load_fail(l, -EINVAL,
                             "added_tokens[%zu]: content is empty or longer than "
                             "%d bytes",
                             i, TOK_MAX_TOKEN_BYTES);
        x->text = malloc(len);
        if (!x->text)
            return load_fail(l, -ENOMEM, "out of memory");
        t->n_added++;
        memcpy(x->text, json_string_value(c), len);
        x->len = len;
        x->id = id;
        x->special = (uint8_t)bool_of(a, "special", 0);
        x->single_word = (uint8_t)bool_of(a, "single_word", 0);
        x->lstrip = (uint8_t)bool_of(a, "lstrip", 0);
        x->rstrip = (uint8_t)bool_of(a, "rstrip", 0);
        x->normalized = (uint8_t)bool_of(a, "normalized", !x->special);
        t->added_first[(unsigned char)x->text[0]] = 1;
        /* An added token decodes as its content (through the decoder), whatever the model's
         * vocabulary holds for its id. */
        tok_entry_t keep = t->entries[id];
        if (keep.valid)
            t->entries[id].valid = 0;
        int rc = load_token(l, id, x->text, len, 0, "added_tokens: ");
        if (rc < 0)
            return rc;
        /* BPE reaches an added token only if the model's vocabulary has it. */
        t->entries[id].koff = keep.valid ? keep.koff : 0;
        t->entries[id].klen = keep.valid ? keep.klen : 0;
        t->entries[id].special = x->special;
        t->entries[id].added = 1;
        t->entries[id].byte = 0;
    }
    /* Leftmost-longest matching tries the longest token first. */
    qsort(t->added, (size_t)t->n_added, sizeof(*t->added), cmp_added);
    return 0;
}

static int load_merges(loader_t *l, json_t *merges)
{
    char where[PATH_MAX + 64];
    if (!json_is_array(merges))
        return load_fail(l, -EINVAL, "model.merges is missing or not an array");
    if (bpe_merges_alloc(l->t, json_array_size(merges)) < 0)
        return load_fail(l, -ENOMEM, "out of memory for %zu merges", json_array_size(merges));
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m)
    {
        const char *sym[2];
        size_t symlen[2];
        int nsym;
        snprintf(where, sizeof(where), "%s: model.merges[%zu]", l->fname, i);
        if (json_is_string(m)) {
            nsym = load_split_rule(json_string_value(m), json_string_length(m), sym, symlen);
        } else if (json_is_array(m)) {
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
        int rc = load_merge(l, where, sym[0], symlen[0], sym[1], symlen[1]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int load_model_flags(loader_t *l, json_t *model)
{
    tok_t *t = l->t;
    t->ignore_merges = bool_of(model, "ignore_merges", 0);
    t->byte_fallback = bool_of(model, "byte_fallback", 0);
    t->fuse_unk = bool_of(model, "fuse_unk", 0);
    t->unk_id = -1;
    json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) {
        json_t *id = json_object_get(l->vocab, json_string_value(unk));
        if (!id)
            return load_fail(l, -EINVAL, "model.unk_token \"%s\" is not in the vocabulary",
                             json_string_value(unk));
        t->unk_id = (int32_t)json_integer_value(id);
    }
    for (int b = 0; b < 256; b++) {
        char k[8];
        snprintf(k, sizeof(k), "<0x%02X>", b);
        json_t *id = json_object_get(l->vocab, k);
        t->fallback_id[b] = id ? (int32_t)json_integer_value(id) : -1;
    }
    if (t->byte_level)
        return load_byte_ids(l, "model.vocab: ");
    return 0;
}

/* ---- tokenizer_config.json ---- */

/* A special token given as "text" or {"content": "text"}: its id (an added token's or the
 * model vocabulary's), or -1. */
static int32_t config_token(loader_t *l, json_t *v)
{
    tok_t *t = l->t;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return -1;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == json_string_length(v) &&
            memcmp(t->added[i].text, json_string_value(v), t->added[i].len) == 0)
            return t->added[i].id;
    json_t *id = json_object_get(l->vocab, json_string_value(v));
    return id ? (int32_t)json_integer_value(id) : -1;
}

static int load_templates(loader_t *l, json_t *ct)
{
    tok_t *t = l->t;
    if (json_is_string(ct)) {
        t->chat_template = strdup(json_string_value(ct));
        return t->chat_template ? 0 : load_fail(l, -ENOMEM, "out of memory");
    }
    if (!json_is_array(ct))
        return json_is_null(ct) || !ct ? 0
                                       : load_fail(l, -EINVAL,
                                                   "chat_template is not a string "
                                                   "or a list");
    size_t n = json_array_size(ct), i;
    json_t *e;
    t->tpl_names = calloc(n + 1, sizeof(char *));
    t->tpl_texts = calloc(n + 1, sizeof(char *));
    if (!t->tpl_names || !t->tpl_texts)
        return load_fail(l, -ENOMEM, "out of memory");
    json_array_foreach(ct, i, e)
    {
        json_t *name = json_object_get(e, "name"), *tpl = json_object_get(e, "template");
        if (!json_is_string(name) || !json_is_string(tpl))
            return load_fail(l, -EINVAL, "chat_template[%zu]: no string name and template", i);
        t->tpl_names[t->n_tpl] = strdup(json_string_value(name));
        t->tpl_texts[t->n_tpl] = strdup(json_string_value(tpl));
        if (!t->tpl_names[t->n_tpl++] || !t->tpl_texts[t->n_tpl - 1])
            return load_fail(l, -ENOMEM, "out of memory");
        if (strcmp(json_string_value(name), "default") == 0 && !t->chat_template &&
            !(t->chat_template = strdup(json_string_value(tpl))))
            return load_fail(l, -ENOMEM, "out of memory");
    }
    return 0;
}

/* transformers' Llama and Gemma tokenizer classes rebuild the post-processor from
 * add_bos_token / add_eos_token (LlamaTokenizerFast.update_post_processor), so for them
 * the config decides the BOS and EOS of an encoded text; other classes keep the file's. */
static void llama_post(tok_t *t, json_t *c)
{
    static const char *const classes[] = {"LlamaTokenizer",     "LlamaTokenizerFast",
                                          "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
                                          "GemmaTokenizer",     "GemmaTokenizerFast"};
    json_t *cls = json_object_get(c, "tokenizer_class");
    int known = 0;
    for (size_t i = 0; json_is_string(cls) && i < sizeof(classes) / sizeof(classes[0]); i++)
        known |= strcmp(json_string_value(cls), classes[i]) == 0;
    if (!known)
        return;
    int bos = bool_of(c, "add_bos_token", 1) && t->bos_id >= 0;
    int eos = bool_of(c, "add_eos_token", 0) && t->eos_id >= 0;
    t->n_post_pre = bos;
    t->post_pre[0] = t->bos_id;
    t->n_post_suf = eos;
    t->post_suf[0] = t->eos_id;
}

static int load_config(loader_t *l, const char *dir)
{
    char path[PATH_MAX];
    tok_t *t = l->t;
    int rc = 0;
    json_t *eot = json_string("<|endoftext|>");
    t->eos_id = eot ? config_token(l, eot) : -1;
    json_decref(eot);
    t->bos_id = -1;
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    fclose(f);
    l->fname = path;
    /* model_max_length is often 1e30 written as an integer, too big for jansson's. */
    json_t *c = load_json(l, path, JSON_DECODE_INT_AS_REAL, &rc);
    if (!c)
        return rc;
    if (!json_is_object(c)) {
        json_decref(c);
        return load_fail(l, -EINVAL, "not a JSON object");
    }
    json_t *eos = json_object_get(c, "eos_token"), *bos = json_object_get(c, "bos_token");
    if (eos && !json_is_null(eos)) {
        t->eos_id = config_token(l, eos);
        if (t->eos_id < 0)
            rc = load_fail(l, -EINVAL, "eos_token is not a token of tokenizer.json");
    }
    if (rc == 0 && bos && !json_is_null(bos)) {
        t->bos_id = config_token(l, bos);
        if (t->bos_id < 0)
            rc = load_fail(l, -EINVAL, "bos_token is not a token of tokenizer.json");
    }
    if (rc == 0)
        llama_post(t, c);
    t->clean_up = bool_of(c, "clean_up_tokenization_spaces", 0);
    t->spaces_between = bool_of(c, "spaces_between_special_tokens", 0);
    if (rc == 0)
        rc = load_templates(l, json_object_get(c, "chat_template"));
    json_decref(c);
    return rc;
}

int hf_load(loader_t *l, const char *dir)
{
    char path[PATH_MAX];
    tok_t *t = l->t;
    int rc = 0, dec_bytelevel = 0;
    int32_t n_vocab = 0;

    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    l->fname = path;
    json_t *root = load_json(l, path, 0, &rc);
    if (!root)
        return rc;
    json_t *model = json_object_get(root, "model");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(root))
        rc = load_fail(l, -EINVAL, "not a JSON object");
    if (rc == 0 && added && !json_is_null(added) && !json_is_array(added))
        rc = load_fail(l, -EINVAL, "added_tokens is not an array");
    if (rc == 0)
        rc = check_model(l, model);
    if (rc == 0)
        rc = load_decoder(l, json_object_get(root, "decoder"), &dec_bytelevel);
    if (rc == 0)
        rc = load_pretok(l, json_object_get(root, "pre_tokenizer"));
    if (rc == 0 && dec_bytelevel)
        t->byte_level = 1;
    if (rc == 0 && t->byte_level && (l->byte_pieces || l->n_rep))
        rc = load_fail(l, -ENOTSUP, "decoder: ByteLevel mixed with ByteFallback or Replace");
    if (rc == 0)
        rc = max_id(l, added, &n_vocab);
    if (rc == 0)
        rc = load_entries(l, n_vocab);
    if (rc == 0)
        rc = load_model_vocab(l);
    if (rc == 0)
        rc = load_added(l, added);
    if (rc == 0)
        rc = load_model_flags(l, model);
    if (rc == 0)
        rc = load_merges(l, json_object_get(model, "merges"));
    if (rc == 0)
        rc = load_norm(l, json_object_get(root, "normalizer"));
    if (rc == 0)
        rc = load_post(l, json_object_get(root, "post_processor"));
    if (rc == 0)
        rc = load_config(l, dir);
    json_decref(root);
    return rc;
}
