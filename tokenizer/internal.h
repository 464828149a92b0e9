/* internal.h - private to tokenizer/: the layout of tok_t and the calls its files share.
 *
 * Everything in struct tok is written by tok_init and read-only afterwards, except the
 * word cache, whose slots are guarded by striped mutexes (see bpe.c).
 *
 * The pipeline is Hugging Face's: added tokens are split off the text, the rest is
 * normalized (norm), pre-tokenized (pretok) into pieces, and each piece goes through BPE;
 * a post-processor adds its special ids around the result. GPT-2's vocab.json + merges.txt
 * load into the same pipeline (one ByteLevel pre-tokenizer, <|endoftext|> as added token).
 */
#ifndef NANO_VLLM_TOKENIZER_INTERNAL_H
#define NANO_VLLM_TOKENIZER_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/tokenizer.h"

/* One vocabulary entry. Its decoded bytes (what decode emits for it) live in
 * tok->blob[off, off + len); its key (the bytes BPE builds it from) in
 * tok->kblob[koff, koff + klen), klen 0 when BPE can never produce it. */
typedef struct tok_entry {
    uint32_t off;
    uint32_t koff;
    uint16_t len;
    uint16_t klen;
    uint8_t valid;   /* 0 for ids the vocabulary leaves unused */
    uint8_t whole;   /* BPE of exactly the key gives this one token (checked at load) */
    uint8_t special; /* an added token marked special (skip_special_tokens drops it) */
    uint8_t added;   /* an added token */
    uint8_t byte;    /* a byte-fallback piece <0xNN>: its one decoded byte is raw */
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

/* Normalizer steps, applied in order to the text between added tokens. */
enum { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_PREPEND, NORM_REPLACE };
typedef struct tok_norm {
    int kind;
    char *a; /* Prepend: the prefix; Replace: the literal pattern (owned) */
    size_t alen;
    char *b; /* Replace: the replacement (owned) */
    size_t blen;
} tok_norm_t;

/* Pre-tokenizer steps: each splits every piece of the step before. */
enum { PRE_SPLIT, PRE_BYTELEVEL };
enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
typedef struct tok_pretok {
    int kind;
    pcre2_code *re; /* Split's pattern or ByteLevel's GPT-2 pattern (owned); NULL: none */
    int jit;        /* re is JIT-compiled */
    char *lit;      /* Split with a literal String pattern (owned), used instead of re */
    size_t litlen;
    int behavior; /* SPLIT_* */
    int invert;
    int prefix_space; /* ByteLevel add_prefix_space */
} tok_pretok_t;

/* An added token: matched in the text before pre-tokenization. */
typedef struct tok_added {
    char *text; /* owned */
    size_t len;
    int32_t id;
    uint8_t special, single_word, lstrip, rstrip, normalized;
} tok_added_t;

#define TOK_MAX_STEPS 8

struct tok {
    int32_t n_vocab;      /* highest id + 1 */
    int32_t eos_id;       /* -1 if none */
    int32_t bos_id;       /* -1 if none */
    tok_entry_t *entries; /* (n_vocab) owned */
    char *blob;           /* all decoded token bytes, owned */
    size_t blob_len;
    char *kblob; /* all token keys, owned */
    size_t kblob_len;
    int byte_level;           /* keys are bytes (GPT-2 style); else UTF-8 text (SentencePiece) */
    int32_t byte_id[256];     /* byte level: the token of each single byte */
    int32_t fallback_id[256]; /* byte_fallback: the <0xNN> tokens, -1 if absent */
    int byte_fallback;
    int ignore_merges;
    int fuse_unk;
    int32_t unk_id; /* -1 if none */

    int32_t *index;    /* token key -> id, open addressing, -1 free; owned */
    size_t index_mask; /* capacity - 1 */

    bpe_merge_t *merges; /* open-addressing table, owned */
    size_t merge_mask;   /* capacity - 1 (capacity is a power of two) */
    size_t n_merges;

    tok_norm_t norm[TOK_MAX_STEPS];
    int n_norm;
    tok_pretok_t pre[TOK_MAX_STEPS];
    int n_pre;
    int n_pre_work; /* steps before the trailing ones that change nothing (ByteLevel
                     * without regex or prefix space: the vocabulary is bytes already) */

    tok_added_t *added; /* (n_added) owned, sorted longest first */
    int n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */
    int added_lead;           /* the byte every added token starts with, or -1 */

    int32_t post_pre[4]; /* post-processor ids before the sequence */
    int n_post_pre;
    int32_t post_suf[4]; /* and after it */
    int n_post_suf;

    int strip_start; /* decoder Strip: leading strip_char count removed */
    char strip_char;
    int clean_up;       /* tokenizer_config clean_up_tokenization_spaces */
    int spaces_between; /* tokenizer_config spaces_between_special_tokens */

    char *chat_template; /* the default chat template, owned; NULL if none */
    char **tpl_names;    /* named templates (n_tpl), owned */
    char **tpl_texts;
    int n_tpl;

    bpe_cache_slot_t *cache; /* (BPE_CACHE_SLOTS) owned */
    pthread_mutex_t cache_lock[BPE_CACHE_LOCKS];
    int n_cache_locks; /* how many of cache_lock are initialised */
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
/* Builds the key -> id index and marks the tokens that BPE reaches whole. */
int bpe_index_build(tok_t *t);
/* The id whose key is exactly w[0, len), or -1. */
int32_t bpe_index_lookup(const tok_t *t, const unsigned char *w, size_t len);
int bpe_cache_init(tok_t *t);
void bpe_cache_free(tok_t *t);
/* Appends the ids of one pre-tokenized piece to out. use_cache 0 bypasses the word cache
 * (benchmarks measure cold encoding with it). Returns 0, -ENOMEM, or -EINVAL when a
 * character has no token, no byte fallback and there is no unk token. */
int bpe_encode_word(const tok_t *t, const unsigned char *w, size_t len, int use_cache,
                    bpe_scratch_t *s, tok_ids_t *out);
void bpe_scratch_free(bpe_scratch_t *s);

/* load.c: fills t from dir (tokenizer.json, else vocab.json + merges.txt). */
int tok_load_files(tok_t *t, const char *dir, char *err, size_t errlen);

/* hf.c: the pipeline of a parsed tokenizer.json and tokenizer_config.json. */
struct loader;
int hf_load(struct loader *l, const char *dir);

/* encode.c */
/* Compiles pattern into step p (PCRE2 with Unicode properties, JIT when available). */
int tok_pattern_compile(tok_pretok_t *p, const char *pattern, size_t len, char *err, size_t errlen);
/* The GPT-2 (and ByteLevel pre-tokenizer) pattern. */
extern const char tok_gpt2_pattern[];
/* tok_encode_with with the word cache on or off (bench/tokenizer measures both). */
int tok_encode_ex(const tok_t *t, const char *text, size_t len, unsigned flags, int use_cache,
                  int32_t **ids, size_t *n);

/* stream.c: the length of the UTF-8 character at s[0] (n bytes available) when complete
 * and valid, 0 when valid but unfinished, -k when the first k bytes are a maximal
 * ill-formed subpart. */
int utf8_check(const unsigned char *s, size_t n);

/* norm.c: applies t's normalizers to s[0, len); *out is s itself (unchanged) or a malloc'd
 * buffer the caller frees (*owned set). Returns 0 or -ENOMEM. */
int tok_normalize(const tok_t *t, const char *s, size_t len, char **out, size_t *outlen,
                  int *owned);

#endif
