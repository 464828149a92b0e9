/* tokenizer.c - the tokenizer's lifetime and the table lookups: init/free, vocabulary
 * size, end-of-text id, token bytes and whole-sequence decode.
 *
 * tok_init loads the files (load.c), compiles the pre-tokenizer pattern (encode.c) and
 * allocates the word cache (bpe.c); nothing is allocated later except per-call results.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

int tok_init(tok_t **out, const char *dir, char *err, size_t errlen)
{
    int rc;
    tok_t *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    if (!t) {
        snprintf(err, errlen, "%s: out of memory for the tokenizer", dir);
        return -ENOMEM;
    }
    rc = tok_load_files(t, dir, err, errlen);
    if (rc < 0)
        goto fail;
    rc = tok_pattern_compile(t, err, errlen);
    if (rc < 0)
        goto fail;
    rc = bpe_index_build(t);
    if (rc == 0)
        rc = bpe_cache_init(t);
    if (rc < 0) {
        snprintf(err, errlen, "%s: out of memory for the token index and word cache", dir);
        goto fail;
    }
    *out = t;
    return 0;
fail:
    tok_free(t);
    return rc;
}

void tok_free(tok_t *t)
{
    if (!t)
        return;
    bpe_cache_free(t);
    free(t->index);
    pcre2_code_free(t->re);
    free(t->merges);
    free(t->blob);
    free(t->entries);
    free(t);
}

int tok_vocab_size(const tok_t *t)
{
    return t->n_vocab;
}

int32_t tok_eos_id(const tok_t *t)
{
    return t->eos_id;
}

const char *tok_token_bytes(const tok_t *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab || !t->entries[id].valid) {
        *len = 0;
        return NULL;
    }
    *len = t->entries[id].len;
    return t->blob + t->entries[id].off;
}

int tok_decode(const tok_t *t, const int32_t *ids, size_t n, char **text, size_t *len)
{
    size_t total = 0, blen;

    *text = NULL;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        if (!tok_token_bytes(t, ids[i], &blen))
            return -EINVAL;
        total += blen;
    }
    char *s = malloc(total + 1);
    if (!s)
        return -ENOMEM;
    char *p = s;
    for (size_t i = 0; i < n; i++) {
        const char *b = tok_token_bytes(t, ids[i], &blen);
        memcpy(p, b, blen);
        p += blen;
    }
    *p = '\0';
    *text = s;
    *len = total;
    return 0;
}
