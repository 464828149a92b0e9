/* bpe.c - byte-pair merges of one pre-tokenized piece, the merge table and the word cache.
 *
 * A piece starts as one token per byte; the adjacent pair with the lowest merge rank is
 * merged (the leftmost one when a rank occurs several times) until no pair has a rank.
 * That is the rule of GPT-2's encoder.py, which merges every occurrence of the best pair
 * left to right before looking again: in a merge list learned by BPE training (GPT-2's), a
 * pair created by a merge of rank r always has a rank above r (a merge can only use tokens
 * made by earlier merges), so taking the leftmost lowest pair one at a time gives the same
 * result. It is also exactly what Hugging Face's tokenizers does (a heap ordered by rank,
 * then position), for any merge list. The min-heap of candidate pairs keeps long pieces
 * (a megabyte without a space) at O(n log n) instead of O(n^2).
 *
 * DESIGN (threads): the merge table is read-only after tok_init. The word cache is shared
 * by every thread that encodes; each slot is guarded by one of BPE_CACHE_LOCKS mutexes
 * (slot index modulo the lock count), held only to compare or copy one slot.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "tokenizer/internal.h"

struct bpe_sym {
    int32_t id;   /* token id, -1 once merged into its left neighbour */
    int32_t prev; /* index of the left neighbour, -1 at the start */
    int32_t next; /* index of the right neighbour, -1 at the end */
};

/* A pair that may be merged: the symbols at pos and its right neighbour, which held ids
 * left and right when the candidate was pushed. Stale candidates are skipped on pop. */
struct bpe_cand {
    int32_t rank;
    int32_t pos;
    int32_t left;
    int32_t right;
};

int tok_ids_push(tok_ids_t *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

/* ---- merge table ---- */

static size_t pair_hash(uint64_t key)
{
    /* Fibonacci hashing: the ids are small and dense, the multiply spreads them over all
     * 64 bits and the high half indexes the table. */
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32);
}

int bpe_merges_alloc(tok_t *t, size_t n_merges)
{
    size_t cap = 1024;
    while (cap < n_merges * 2)
        cap *= 2;
    t->merges = malloc(cap * sizeof(*t->merges));
    if (!t->merges)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        t->merges[i].key = BPE_KEY_EMPTY;
    t->merge_mask = cap - 1;
    t->n_merges = 0;
    return 0;
}

static const bpe_merge_t *merge_find(const tok_t *t, int32_t left, int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = pair_hash(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const bpe_merge_t *m = &t->merges[i];
        if (m->key == key)
            return m;
        if (m->key == BPE_KEY_EMPTY)
            return NULL;
    }
}

void bpe_merge_add(tok_t *t, int32_t left, int32_t right, int32_t merged)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    int32_t rank = (int32_t)t->n_merges++;
    /* bpe_merges_alloc sized the table to at least twice the merges: it never fills. */
    for (size_t i = pair_hash(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        bpe_merge_t *m = &t->merges[i];
        if (m->key == key)
            return;
        if (m->key == BPE_KEY_EMPTY) {
            m->key = key;
            m->rank = rank;
            m->merged = merged;
            return;
        }
    }
}

/* ---- whole-token index ----
 * Most pieces of ordinary text are one token. When a piece's bytes are a vocabulary token
 * and BPE of those bytes really ends in that one token (checked here for every token at
 * load, because a token made by merges need not be reachable from its own bytes), the
 * piece is that token and no merging is needed. */

static int32_t index_find(const tok_t *t, const unsigned char *w, size_t len, uint64_t h)
{
    for (size_t i = h & t->index_mask;; i = (i + 1) & t->index_mask) {
        int32_t id = t->index[i];
        if (id < 0)
            return -1;
        const tok_entry_t *e = &t->entries[id];
        if (e->klen == len && memcmp(t->kblob + e->koff, w, len) == 0)
            return id;
    }
}

int32_t bpe_index_lookup(const tok_t *t, const unsigned char *w, size_t len)
{
    if (len == 0 || len > UINT16_MAX)
        return -1;
    return index_find(t, w, len, XXH3_64bits(w, len));
}

static int bpe_merge_loop(const tok_t *t, const unsigned char *w, size_t len, bpe_scratch_t *s,
                          tok_ids_t *out);

int bpe_index_build(tok_t *t)
{
    size_t cap = 1024;
    while (cap < (size_t)t->n_vocab * 2)
        cap *= 2;
    t->index = malloc(cap * sizeof(*t->index));
    if (!t->index)
        return -ENOMEM;
    memset(t->index, 0xFF, cap * sizeof(*t->index));
    t->index_mask = cap - 1;

    for (int32_t id = 0; id < t->n_vocab; id++) {
        const tok_entry_t *e = &t->entries[id];
        if (!e->valid || e->klen == 0)
            continue;
        const unsigned char *w = (const unsigned char *)t->kblob + e->koff;
        if (index_find(t, w, e->klen, XXH3_64bits(w, e->klen)) >= 0)
            continue; /* two ids for the same key: the first one is the index's */
        size_t i = XXH3_64bits(w, e->klen) & t->index_mask;
        while (t->index[i] >= 0)
            i = (i + 1) & t->index_mask;
        t->index[i] = id;
    }

    bpe_scratch_t s = {0};
    tok_ids_t ids = {0};
    int rc = 0;
    for (int32_t id = 0; id < t->n_vocab && rc == 0; id++) {
        tok_entry_t *e = &t->entries[id];
        if (!e->valid || e->klen == 0)
            continue;
        ids.n = 0;
        rc = bpe_merge_loop(t, (const unsigned char *)t->kblob + e->koff, e->klen, &s, &ids);
        e->whole = rc == 0 && ids.n == 1 && ids.v[0] == id;
    }
    free(ids.v);
    bpe_scratch_free(&s);
    return rc;
}

/* ---- word cache ---- */

int bpe_cache_init(tok_t *t)
{
    t->cache = calloc(BPE_CACHE_SLOTS, sizeof(*t->cache));
    if (!t->cache)
        return -ENOMEM;
    for (unsigned i = 0; i < BPE_CACHE_LOCKS; i++) {
        if (pthread_mutex_init(&t->cache_lock[i], NULL) != 0)
            return -ENOMEM;
        t->n_cache_locks++;
    }
    return 0;
}

void bpe_cache_free(tok_t *t)
{
    for (int i = 0; i < t->n_cache_locks; i++)
        pthread_mutex_destroy(&t->cache_lock[i]);
    t->n_cache_locks = 0;
    free(t->cache);
    t->cache = NULL;
}

/* The cache is logically part of the immutable tokenizer: it only remembers results, so a
 * const tok_t may update it. The cast is confined to these two functions. */
static pthread_mutex_t *cache_lock(const tok_t *t, size_t slot)
{
    return (pthread_mutex_t *)&t->cache_lock[slot % BPE_CACHE_LOCKS];
}

static int cache_get(const tok_t *t, uint64_t h, const unsigned char *w, size_t len, tok_ids_t *out)
{
    size_t slot = h & (BPE_CACHE_SLOTS - 1);
    const bpe_cache_slot_t *c = &t->cache[slot];
    int32_t ids[BPE_CACHE_IDS];
    int nids = 0;

    pthread_mutex_lock(cache_lock(t, slot));
    if (c->hash == h && c->len == len && memcmp(c->word, w, len) == 0) {
        nids = c->nids;
        memcpy(ids, c->ids, (size_t)nids * sizeof(ids[0]));
    }
    pthread_mutex_unlock(cache_lock(t, slot));

    for (int i = 0; i < nids; i++)
        if (tok_ids_push(out, ids[i]) < 0)
            return -ENOMEM;
    return nids;
}

static void cache_put(const tok_t *t, uint64_t h, const unsigned char *w, size_t len,
                      const int32_t *ids, size_t nids)
{
    size_t slot = h & (BPE_CACHE_SLOTS - 1);
    bpe_cache_slot_t *c = (bpe_cache_slot_t *)&t->cache[slot];

    pthread_mutex_lock(cache_lock(t, slot));
    c->hash = h;
    c->len = (uint8_t)len;
    c->nids = (uint8_t)nids;
    memcpy(c->word, w, len);
    memcpy(c->ids, ids, nids * sizeof(ids[0]));
    pthread_mutex_unlock(cache_lock(t, slot));
}

/* ---- the merge loop ---- */

static int scratch_reserve(bpe_scratch_t *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n)
        cap *= 2;
    struct bpe_sym *syms = realloc(s->syms, cap * sizeof(*syms));
    if (!syms)
        return -ENOMEM;
    s->syms = syms;
    struct bpe_cand *heap = realloc(s->heap, cap * 2 * sizeof(*heap));
    if (!heap)
        return -ENOMEM;
    s->heap = heap;
    s->cap = cap;
    return 0;
}

void bpe_scratch_free(bpe_scratch_t *s)
{
    free(s->syms);
    free(s->heap);
    s->syms = NULL;
    s->heap = NULL;
    s->cap = 0;
}

static int cand_less(const struct bpe_cand *a, const struct bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct bpe_cand *h, size_t *n, struct bpe_cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static struct bpe_cand heap_pop(struct bpe_cand *h, size_t *n)
{
    struct bpe_cand top = h[0];
    struct bpe_cand last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c]))
            c++;
        if (!cand_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* Pushes the pair starting at symbol pos, if it has a right neighbour and a merge. */
static void push_pair(const tok_t *t, const struct bpe_sym *sy, int32_t pos, struct bpe_cand *heap,
                      size_t *nheap)
{
    int32_t r = sy[pos].next;
    if (r < 0)
        return;
    const bpe_merge_t *m = merge_find(t, sy[pos].id, sy[r].id);
    if (m)
        heap_push(heap, nheap, (struct bpe_cand){m->rank, pos, sy[pos].id, sy[r].id});
}

/* Byte-level BPE starts from one symbol per byte. */
static size_t byte_symbols(const tok_t *t, const unsigned char *w, size_t len, struct bpe_sym *sy)
{
    for (size_t i = 0; i < len; i++)
        sy[i].id = t->byte_id[w[i]];
    return len;
}

/* The length of the UTF-8 character at w[0] (1 for a byte that starts none). */
static size_t char_len(const unsigned char *w, size_t len)
{
    size_t n = w[0] < 0xC0 ? 1 : w[0] < 0xE0 ? 2 : w[0] < 0xF0 ? 3 : 4;
    if (n > len)
        return 1;
    for (size_t i = 1; i < n; i++)
        if ((w[i] & 0xC0) != 0x80)
            return 1;
    return n;
}

/* SentencePiece-style BPE starts from one symbol per character; a character without a
 * token becomes its <0xNN> byte pieces (byte_fallback) or the unk token (consecutive ones
 * fused with fuse_unk), or is dropped when there is neither, as Hugging Face's
 * BPE::merge_word does. */
static size_t char_symbols(const tok_t *t, const unsigned char *w, size_t len, struct bpe_sym *sy)
{
    size_t n = 0;
    int unk_pending = 0;
    for (size_t i = 0; i < len;) {
        size_t cl = char_len(w + i, len - i);
        int32_t id = bpe_index_lookup(t, w + i, cl);
        if (id >= 0) {
            if (unk_pending)
                sy[n++].id = t->unk_id;
            unk_pending = 0;
            sy[n++].id = id;
        } else {
            int all = t->byte_fallback;
            for (size_t k = 0; all && k < cl; k++)
                all = t->fallback_id[w[i + k]] >= 0;
            if (all) {
                for (size_t k = 0; k < cl; k++)
                    sy[n++].id = t->fallback_id[w[i + k]];
            } else if (t->unk_id >= 0) {
                if (unk_pending && !t->fuse_unk)
                    sy[n++].id = t->unk_id;
                unk_pending = 1;
            }
        }
        i += cl;
    }
    if (unk_pending)
        sy[n++].id = t->unk_id;
    return n;
}

static int bpe_merge_loop(const tok_t *t, const unsigned char *w, size_t len, bpe_scratch_t *s,
                          tok_ids_t *out)
{
    /* Each merge pushes at most two candidates, so 2 * len bounds the heap. */
    if (scratch_reserve(s, len) < 0)
        return -ENOMEM;
    struct bpe_sym *sy = s->syms;
    struct bpe_cand *heap = s->heap;
    size_t nheap = 0;

    size_t nsym = t->byte_level ? byte_symbols(t, w, len, sy) : char_symbols(t, w, len, sy);
    if (nsym == 0)
        return 0;
    for (size_t i = 0; i < nsym; i++) {
        sy[i].prev = (int32_t)i - 1;
        sy[i].next = i + 1 < nsym ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < nsym; i++)
        push_pair(t, sy, (int32_t)i, heap, &nheap);

    while (nheap > 0) {
        struct bpe_cand c = heap_pop(heap, &nheap);
        int32_t r = sy[c.pos].next;
        if (sy[c.pos].id != c.left || r < 0 || sy[r].id != c.right)
            continue; /* one of its symbols was merged since it was pushed */
        const bpe_merge_t *m = merge_find(t, c.left, c.right);
        sy[c.pos].id = m->merged;
        sy[c.pos].next = sy[r].next;
        if (sy[r].next >= 0)
            sy[sy[r].next].prev = c.pos;
        sy[r].id = -1;
        if (sy[c.pos].prev >= 0)
            push_pair(t, sy, sy[c.pos].prev, heap, &nheap);
        push_pair(t, sy, c.pos, heap, &nheap);
    }

    for (int32_t i = 0; i >= 0; i = sy[i].next)
        if (tok_ids_push(out, sy[i].id) < 0)
            return -ENOMEM;
    return 0;
}

int bpe_encode_word(const tok_t *t, const unsigned char *w, size_t len, int use_cache,
                    bpe_scratch_t *s, tok_ids_t *out)
{
    if (len == 0)
        return 0;
    if (len == 1 && t->byte_level)
        return tok_ids_push(out, t->byte_id[w[0]]);

    uint64_t h = XXH3_64bits(w, len);
    int cacheable = use_cache && len <= BPE_CACHE_WORD;
    if (cacheable) {
        int got = cache_get(t, h, w, len, out);
        if (got != 0)
            return got < 0 ? got : 0;
    }

    size_t first = out->n;
    /* With ignore_merges (Llama 3) a piece that is a token is that token, reachable by
     * merges or not; otherwise only when the merges reach it whole. */
    int32_t id = len <= UINT16_MAX ? index_find(t, w, len, h) : -1;
    int rc = id >= 0 && (t->ignore_merges || t->entries[id].whole)
                 ? tok_ids_push(out, id)
                 : bpe_merge_loop(t, w, len, s, out);
    if (rc < 0)
        return rc;
    if (cacheable && out->n - first <= BPE_CACHE_IDS)
        cache_put(t, h, w, len, out->v + first, out->n - first);
    return 0;
}
