/* blocks.h - private to engine/: the KV block manager (which block belongs to whom).
 *
 * It hands out the ids of the num_blocks blocks of the KV pool (attention.h kv_cache_t holds
 * their memory). Each block has a refcount: the number of sequences whose block table holds
 * it. A full block can be registered under a hash chained over the whole prefix up to its
 * end; a later sequence with the same prefix finds it with blk_lookup and shares it instead
 * of computing it again (prefix caching). A block whose refcount drops to 0 is free; if it
 * is registered it stays findable until it is handed out again. Free blocks are handed out
 * unregistered ones first, then registered ones least recently freed first (LRU eviction).
 *
 * Only the scheduler thread touches a blk_mgr_t. Nothing here allocates after blk_init.
 */
#ifndef NANO_VLLM_BLOCKS_H
#define NANO_VLLM_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

typedef struct blk_mgr {
    int num_blocks;
    int block_size; /* BS: tokens per block */
    int num_free;   /* blocks with refcount 0 (registered or not) */
    int32_t *ref;   /* (num_blocks) owners of each block */
    /* The free list, doubly linked through prev/next (-1 ends it): unregistered blocks
     * at the head, registered ones appended at the tail as they are freed. */
    int32_t *prev, *next; /* (num_blocks) */
    int32_t free_head, free_tail;
    /* Prefix cache: hash -> block, chained through hnext in nbuckets buckets. */
    uint64_t *hash;        /* (num_blocks) valid when registered[b] */
    uint64_t *parent;      /* (num_blocks) the hash of the block before it (chain check) */
    int32_t *tokens;       /* (num_blocks, BS) the tokens a registered block holds */
    unsigned char *registered; /* (num_blocks) 1 when in the hash map */
    int32_t *bucket;       /* (nbuckets) first block of each chain, -1 if empty */
    int32_t *hnext;        /* (num_blocks) next block in the same bucket */
    int nbuckets;          /* a power of two >= 2 * num_blocks */
    int num_registered;
} blk_mgr_t;

/* The hash of a full block of BS tokens whose prefix hashes to parent (BLK_ROOT_HASH for the
 * first block of a sequence): XXH3 64-bit of the token ids with the parent hash as seed. */
#define BLK_ROOT_HASH UINT64_C(0x6e616e6f2d766c6d)
uint64_t blk_hash(uint64_t parent, const int32_t *tokens, int block_size);

/* Sizes the manager for num_blocks blocks of block_size tokens, all free. Returns 0,
 * -EINVAL for a non-positive size, or -ENOMEM. blk_free on a zeroed struct is safe. */
int blk_init(blk_mgr_t *m, int num_blocks, int block_size);
void blk_free(blk_mgr_t *m);

/* Takes a free block (refcount 1), evicting its cache entry if it had one; -1 if none. */
int32_t blk_alloc(blk_mgr_t *m);
/* One more owner of block b (which may be free: it leaves the free list). */
void blk_incref(blk_mgr_t *m, int32_t b);
/* One owner less; at 0 the block is free again (and stays findable if registered). */
void blk_decref(blk_mgr_t *m, int32_t b);

/* The registered block holding exactly tokens (BS of them) after the prefix hashed to
 * parent, or -1. h receives blk_hash(parent, tokens). Does not change refcounts. */
int32_t blk_lookup(const blk_mgr_t *m, uint64_t parent, const int32_t *tokens, uint64_t *h);
/* Registers full block b (owned, refcount >= 1) under h = blk_hash(parent, tokens). If
 * another block already holds that prefix, b stays unregistered (both stay valid). */
void blk_register(blk_mgr_t *m, int32_t b, uint64_t parent, uint64_t h, const int32_t *tokens);

/* Checks the manager's own invariants: the free list holds exactly the refcount-0 blocks,
 * once each, num_free matches, every registered block is findable. Returns 0 or -1 with
 * the first broken rule in err. For tests and debugging. */
int blk_check(const blk_mgr_t *m, char *err, size_t errlen);

#endif
