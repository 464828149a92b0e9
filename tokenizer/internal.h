/* internal.h - private to tokenizer/: the layout of tok_t and the calls its files share.
 *
 * Everything in struct tok is written by tok_init and read-only afterwards, except the
 * word cache, whose slots are guarded by striped mutexes (see bpe.c).
 */
#ifndef NANO_VLLM_TOKENIZER_INTERNAL_H
#define NANO_VLLM_TOKENIZER_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/tokenizer.h"

/* One vocabulary entry: its bytes live in tok->blob[off, off + len). */
typedef struct tok_entry {
    uint32_t off;
    uint16_t len;
    uint8_t valid; /* 0 for ids the vocabulary leaves unused */
    uint8_t whole; /* BPE of exactly these bytes gives this one token (checked at load) */
} tok_entry_t;

/* One merge rule: the pair (left, right) becomes token merged; lower rank merges first. */
typedef struct bpe_merge {
    uint64_t key; /* (uint64_t)left << 32 | right; BPE_KEY_EMPTY when the slot is free */
    int32_t rank;
    int32_t merged;
} bpe_merge_t;

#define BPE_KEY_EMPTY UINT64_MAX

/* The word cache: a fixed, direct-mapped table allocated once in tok_init. A word (one
 * pre-tokenized piece) of at most BPE_CACHE_WORD bytes whose BPE gives at most
 * BPE_CACHE_IDS ids is remembered in the slot its hash selects, replacing what was there.
 * The sizes cover ordinary words; longer ones are simply recomputed. */
#define BPE_CACHE_WORD 22
#define BPE_CACHE_IDS 8
#define BPE_CACHE_SLOTS (1u << 16)
#define BPE_CACHE_LOCKS 64u

typedef struct bpe_cache_slot {
    uint64_t hash; /* XXH3 of the word; 0 with len 0 marks an empty slot */
    uint8_t len;   /* bytes in word */
    uint8_t nids;  /* ids in ids */
    char word[BPE_CACHE_WORD];
    int32_t ids[BPE_CACHE_IDS];
} bpe_cache_slot_t;

struct tok {
    int32_t n_vocab;       /* highest id + 1 */
    int32_t eos_id;        /* id of <|endoftext|> */
    tok_entry_t *entries;  /* (n_vocab) owned */
    char *blob;            /* all token bytes, owned */
    size_t blob_len;
    int32_t byte_id[256];  /* the token of each single byte */

    int32_t *index;        /* token bytes -> id, open addressing, -1 free; owned */
    size_t index_mask;     /* capacity - 1 */

    bpe_merge_t *merges;   /* open-addressing table, owned */
    size_t merge_mask;     /* capacity - 1 (capacity is a power of two) */
    size_t n_merges;

    pcre2_code *re;        /* the GPT-2 pre-tokenizer pattern, owned */
    int re_jit;            /* re is JIT-compiled: match with pcre2_jit_match */

    bpe_cache_slot_t *cache;                 /* (BPE_CACHE_SLOTS) owned */
    pthread_mutex_t cache_lock[BPE_CACHE_LOCKS];
    int n_cache_locks;                       /* how many of cache_lock are initialised */
};

/* Per-call scratch for BPE; zero-initialise, grown as needed, released by bpe_scratch_free. */
typedef struct bpe_scratch {
    struct bpe_sym *syms;
    struct bpe_cand *heap;
    size_t cap;
} bpe_scratch_t;

/* A growing id array owned by the encode call. */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids_t;

int tok_ids_push(tok_ids_t *ids, int32_t id);

/* bpe.c */
int bpe_merges_alloc(tok_t *t, size_t n_merges);
/* Adds a merge with the next rank; a pair that is already present keeps its first rank. */
void bpe_merge_add(tok_t *t, int32_t left, int32_t right, int32_t merged);
/* Builds the bytes -> id index and marks the tokens that BPE reaches whole. */
int bpe_index_build(tok_t *t);
int bpe_cache_init(tok_t *t);
void bpe_cache_free(tok_t *t);
/* Appends the ids of one pre-tokenized piece to out. use_cache 0 bypasses the word cache
 * (benchmarks measure cold encoding with it). Returns 0 or -ENOMEM. */
int bpe_encode_word(const tok_t *t, const unsigned char *w, size_t len, int use_cache,
                    bpe_scratch_t *s, tok_ids_t *out);
void bpe_scratch_free(bpe_scratch_t *s);

/* load.c: fills vocab, merges and eos of t from dir. */
int tok_load_files(tok_t *t, const char *dir, char *err, size_t errlen);

/* encode.c */
int tok_pattern_compile(tok_t *t, char *err, size_t errlen);
/* tok_encode with the word cache on or off (bench/tokenizer measures both). */
int tok_encode_ex(const tok_t *t, const char *text, size_t len, int use_cache, int32_t **ids,
                  size_t *n);

#endif
