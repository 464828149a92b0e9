/* load.h - private to tokenizer/: what load.c (GPT-2 files) and hf.c (tokenizer.json)
 * share while loading. */
#ifndef NANO_VLLM_TOKENIZER_LOAD_H
#define NANO_VLLM_TOKENIZER_LOAD_H

#include <jansson.h>

#include "tokenizer/internal.h"

#define BYTE_CP_LIMIT 0x144 /* GPT-2's byte stand-ins are all below U+0144 */

typedef struct loader {
    tok_t *t;
    const char *fname;              /* the path named in error messages */
    json_t *vocab;                  /* borrowed: the vocabulary object, mapped key -> id */
    int16_t cp_byte[BYTE_CP_LIMIT]; /* stand-in code point -> byte, -1 if none */
    int byte_cp[256];               /* byte -> stand-in code point */
    size_t blob_cap, kblob_cap;
    /* Decoder Replace steps applied to each token's text (SentencePiece style). */
    const char *rep_from[TOK_MAX_STEPS], *rep_to[TOK_MAX_STEPS];
    int n_rep;
    int byte_pieces; /* the decoder has ByteFallback: <0xNN> decodes to a byte */
    char *err;
    size_t errlen;
} loader_t;

int load_fail(loader_t *l, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* flags: jansson decoding flags besides JSON_REJECT_DUPLICATES. */
json_t *load_json(loader_t *l, const char *path, size_t flags, int *rc);
/* Allocates entries for n_vocab ids. */
int load_entries(loader_t *l, int32_t n_vocab);
/* Sets id's decoded bytes and key from its text as the file spells it. strict: a
 * byte-level text outside GPT-2's byte alphabet is an error (else it is decoded as its
 * own UTF-8 and BPE never produces it). what prefixes messages. */
int load_token(loader_t *l, int32_t id, const char *text, size_t len, int strict, const char *what);
/* Adds the merge "a b"; where names the rule in errors. */
int load_merge(loader_t *l, const char *where, const char *a, size_t alen, const char *b,
               size_t blen);
/* Splits s[0, len) on spaces and tabs into at most 2 symbols; returns how many it saw. */
int load_split_rule(const char *s, size_t len, const char **sym, size_t *symlen);
/* Finds the byte tokens (byte_id) of a byte-level vocabulary. */
int load_byte_ids(loader_t *l, const char *what);

#endif
