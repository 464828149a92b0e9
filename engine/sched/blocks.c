/* blocks.c - the KV block manager: refcounts, the free list (LRU for cached blocks) and the
 * prefix-cache hash map. See blocks.h. Scheduler thread only; no allocation after blk_init.
 */
#include "engine/sched/blocks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

uint64_t blk_hash(uint64_t parent, const int32_t *tokens, int block_size)
{
    return XXH3_64bits_withSeed(tokens, (size_t)block_size * sizeof(int32_t), parent);
}

int blk_init(blk_mgr_t *m, int num_blocks, int block_size)
{
    memset(m, 0, sizeof(*m));
    if (num_blocks <= 0 || block_size <= 0)
        return -EINVAL;
    int nb = 2;
    while (nb < 2 * num_blocks)
        nb *= 2;
    m->num_blocks = num_blocks;
    m->block_size = block_size;
    m->nbuckets = nb;
    m->ref = calloc((size_t)num_blocks, sizeof(*m->ref));
    m->prev = malloc((size_t)num_blocks * sizeof(*m->prev));
    m->next = malloc((size_t)num_blocks * sizeof(*m->next));
    m->hash = calloc((size_t)num_blocks, sizeof(*m->hash));
    m->parent = calloc((size_t)num_blocks, sizeof(*m->parent));
    m->tokens = calloc((size_t)num_blocks * (size_t)block_size, sizeof(*m->tokens));
    m->registered = calloc((size_t)num_blocks, 1);
    m->hnext = malloc((size_t)num_blocks * sizeof(*m->hnext));
    m->bucket = malloc((size_t)nb * sizeof(*m->bucket));
    if (!m->ref || !m->prev || !m->next || !m->hash || !m->parent || !m->tokens ||
        !m->registered || !m->hnext || !m->bucket) {
        blk_free(m);
        return -ENOMEM;
    }
    for (int i = 0; i < nb; i++)
        m->bucket[i] = -1;
    for (int b = 0; b < num_blocks; b++) {
        m->prev[b] = b - 1;
        m->next[b] = b + 1 < num_blocks ? b + 1 : -1;
        m->hnext[b] = -1;
    }
    m->free_head = 0;
    m->free_tail = num_blocks - 1;
    m->num_free = num_blocks;
    return 0;
}

void blk_free(blk_mgr_t *m)
{
    if (!m)
        return;
    free(m->ref);
    free(m->prev);
    free(m->next);
    free(m->hash);
    free(m->parent);
    free(m->tokens);
    free(m->registered);
    free(m->hnext);
    free(m->bucket);
    memset(m, 0, sizeof(*m));
}

static void list_unlink(blk_mgr_t *m, int32_t b)
{
    if (m->prev[b] >= 0)
        m->next[m->prev[b]] = m->next[b];
    else
        m->free_head = m->next[b];
    if (m->next[b] >= 0)
        m->prev[m->next[b]] = m->prev[b];
    else
        m->free_tail = m->prev[b];
    m->prev[b] = m->next[b] = -1;
    m->num_free--;
}

static void list_push_head(blk_mgr_t *m, int32_t b)
{
    m->prev[b] = -1;
    m->next[b] = m->free_head;
    if (m->free_head >= 0)
        m->prev[m->free_head] = b;
    else
        m->free_tail = b;
    m->free_head = b;
    m->num_free++;
}

static void list_push_tail(blk_mgr_t *m, int32_t b)
{
    m->next[b] = -1;
    m->prev[b] = m->free_tail;
    if (m->free_tail >= 0)
        m->next[m->free_tail] = b;
    else
        m->free_head = b;
    m->free_tail = b;
    m->num_free++;
}

static int32_t *bucket_of(const blk_mgr_t *m, uint64_t h)
{
    return &m->bucket[h & (uint64_t)(m->nbuckets - 1)];
}

static void unregister(blk_mgr_t *m, int32_t b)
{
    int32_t *p = bucket_of(m, m->hash[b]);
    while (*p != b)
        p = &m->hnext[*p];
    *p = m->hnext[b];
    m->hnext[b] = -1;
    m->registered[b] = 0;
    m->num_registered--;
}

int32_t blk_alloc(blk_mgr_t *m)
{
    int32_t b = m->free_head;
    if (b < 0)
        return -1;
    list_unlink(m, b);
    if (m->registered[b])
        unregister(m, b);
    m->ref[b] = 1;
    return b;
}

void blk_incref(blk_mgr_t *m, int32_t b)
{
    if (m->ref[b]++ == 0)
        list_unlink(m, b);
}

void blk_decref(blk_mgr_t *m, int32_t b)
{
    if (--m->ref[b] > 0)
        return;
    /* Unregistered blocks hold nothing worth keeping: hand them out first. Registered
     * ones queue at the tail, so the least recently freed is evicted first. */
    if (m->registered[b])
        list_push_tail(m, b);
    else
        list_push_head(m, b);
}

static int same_block(const blk_mgr_t *m, int32_t b, uint64_t parent, uint64_t h,
                      const int32_t *tokens)
{
    size_t bs = (size_t)m->block_size;
    return m->hash[b] == h && m->parent[b] == parent &&
           memcmp(&m->tokens[(size_t)b * bs], tokens, bs * sizeof(*tokens)) == 0;
}

int32_t blk_lookup(const blk_mgr_t *m, uint64_t parent, const int32_t *tokens, uint64_t *h)
{
    uint64_t hh = blk_hash(parent, tokens, m->block_size);
    *h = hh;
    for (int32_t b = *bucket_of(m, hh); b >= 0; b = m->hnext[b])
        if (same_block(m, b, parent, hh, tokens))
            return b;
    return -1;
}

void blk_register(blk_mgr_t *m, int32_t b, uint64_t parent, uint64_t h, const int32_t *tokens)
{
    if (m->registered[b])
        return;
    int32_t *head = bucket_of(m, h);
    for (int32_t o = *head; o >= 0; o = m->hnext[o])
        if (same_block(m, o, parent, h, tokens))
            return;
    size_t bs = (size_t)m->block_size;
    m->hash[b] = h;
    m->parent[b] = parent;
    memcpy(&m->tokens[(size_t)b * bs], tokens, bs * sizeof(*tokens));
    m->registered[b] = 1;
    m->hnext[b] = *head;
    *head = b;
    m->num_registered++;
}
