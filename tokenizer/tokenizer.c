/* tokenizer.c - the tokenizer's lifetime and the table lookups: init/free, vocabulary
 * size, special ids, chat templates, token bytes.
 *
 * tok_init loads the files (load.c, hf.c) and allocates the token index and the word cache
 * (bpe.c); nothing is allocated later except per-call results.
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
    t->eos_id = t->bos_id = t->unk_id = -1;
    rc = tok_load_files(t, dir, err, errlen);
    if (rc < 0)
        goto fail;
    t->n_pre_work = t->n_pre;
    while (t->n_pre_work > 0 && t->pre[t->n_pre_work - 1].kind == PRE_BYTELEVEL &&
           !t->pre[t->n_pre_work - 1].re && !t->pre[t->n_pre_work - 1].prefix_space)
        t->n_pre_work--;
    t->added_lead = -1;
    for (int b = 0, seen = 0; b < 256; b++)
        if (t->added_first[b])
            t->added_lead = seen++ ? -1 : b;
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
    for (int i = 0; i < TOK_MAX_STEPS; i++) {
        pcre2_code_free(t->pre[i].re);
        free(t->pre[i].lit);
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].text);
    free(t->added);
    for (int i = 0; i < t->n_tpl; i++) {
        free(t->tpl_names[i]);
        free(t->tpl_texts[i]);
    }
    free(t->tpl_names);
    free(t->tpl_texts);
    free(t->chat_template);
    free(t->merges);
    free(t->blob);
    free(t->kblob);
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

int32_t tok_bos_id(const tok_t *t)
{
    return t->bos_id;
}

int tok_is_special(const tok_t *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->entries[id].valid && t->entries[id].special;
}

int32_t tok_token_id(const tok_t *t, const char *text, size_t len)
{
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->added[i].text, text, len) == 0)
            return t->added[i].id;
    return t->index ? bpe_index_lookup(t, (const unsigned char *)text, len) : -1;
}

const char *tok_chat_template(const tok_t *t, const char *name)
{
    if (!name)
        return t->chat_template;
    for (int i = 0; i < t->n_tpl; i++)
        if (strcmp(t->tpl_names[i], name) == 0)
            return t->tpl_texts[i];
    return NULL;
}

int tok_chat_template_count(const tok_t *t)
{
    return t->n_tpl;
}

const char *tok_chat_template_name(const tok_t *t, int i)
{
    return i >= 0 && i < t->n_tpl ? t->tpl_names[i] : NULL;
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
