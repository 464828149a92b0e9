/* sched_blocks.c - the block manager alone: refcounts, free list, prefix lookup, LRU eviction,
 * and a randomized run of owners that checks the invariants after every operation.
 */
#include <stdint.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>

#include "engine/sched/blocks.h"
#include "tests/engine/sched_assert.h"
#include "tests/engine/sched_check.h"

#define BS 4

static void check(const blk_mgr_t *m)
{
    char err[256];
    if (blk_check(m, err, sizeof(err)) != 0) {
        fprintf(stderr, "blk_check: %s\n", err);
        exit(1);
    }
}

static void test_alloc_free(void)
{
    blk_mgr_t m;
    ASSERT_EQ(blk_init(&m, 8, BS), 0);
    int32_t got[8];
    for (int i = 0; i < 8; i++) {
        got[i] = blk_alloc(&m);
        ASSERT_GE(got[i], 0);
        check(&m);
    }
    ASSERT_EQ(blk_alloc(&m), -1);
    ASSERT_EQ(m.num_free, 0);
    blk_incref(&m, got[3]);
    blk_decref(&m, got[3]);
    ASSERT_EQ(m.num_free, 0);
    blk_decref(&m, got[3]);
    ASSERT_EQ(m.num_free, 1);
    ASSERT_EQ(blk_alloc(&m), got[3]);
    for (int i = 0; i < 8; i++)
        blk_decref(&m, got[i]);
    ASSERT_EQ(m.num_free, 8);
    check(&m);
    blk_free(&m);
    blk_free(&m); /* twice is safe */
    ASSERT_EQ(blk_init(&m, 0, BS), -EINVAL);
    blk_free(&m);
}

static void test_prefix_and_lru(void)
{
    blk_mgr_t m;
    ASSERT_EQ(blk_init(&m, 4, BS), 0);
    int32_t a[BS] = {1, 2, 3, 4}, b[BS] = {5, 6, 7, 8}, c[BS] = {9, 9, 9, 9};
    uint64_t ha, hb, hc, h;
    ASSERT_EQ(blk_lookup(&m, BLK_ROOT_HASH, a, &ha), -1);
    int32_t ba = blk_alloc(&m);
    blk_register(&m, ba, BLK_ROOT_HASH, ha, a);
    ASSERT_EQ(blk_lookup(&m, BLK_ROOT_HASH, a, &h), ba);
    ASSERT_EQ(h, ha);
    /* The same tokens after another prefix are another block. */
    ASSERT_EQ(blk_lookup(&m, ha, a, &h), -1);
    ASSERT_EQ(blk_lookup(&m, BLK_ROOT_HASH, b, &hb), -1);
    int32_t bb = blk_alloc(&m);
    blk_register(&m, bb, ha, blk_hash(ha, b, BS), b);
    hb = blk_hash(ha, b, BS);
    /* A second block with the same content is not registered twice. */
    int32_t dup = blk_alloc(&m);
    blk_register(&m, dup, BLK_ROOT_HASH, ha, a);
    ASSERT_EQ(m.registered[dup], 0);
    check(&m);
    /* Freed: cached blocks stay findable, the unregistered one goes first. */
    blk_decref(&m, ba);
    blk_decref(&m, bb);
    blk_decref(&m, dup);
    ASSERT_EQ(m.num_free, 4);
    ASSERT_EQ(blk_lookup(&m, BLK_ROOT_HASH, a, &h), ba);
    ASSERT_EQ(blk_lookup(&m, ha, b, &h), bb);
    int32_t x = blk_alloc(&m), y = blk_alloc(&m);
    ASSERT_TRUE(x != ba && x != bb && y != ba && y != bb);
    /* Reusing ba refreshes nothing until it is freed again; then bb (freed earlier) is the
     * least recently freed and is evicted first. */
    blk_incref(&m, ba);
    blk_decref(&m, ba);
    int32_t z = blk_alloc(&m);
    ASSERT_EQ(z, bb);
    ASSERT_EQ(blk_lookup(&m, ha, b, &h), -1);
    ASSERT_EQ(blk_lookup(&m, BLK_ROOT_HASH, a, &h), ba);
    hc = blk_hash(BLK_ROOT_HASH, c, BS);
    blk_register(&m, z, BLK_ROOT_HASH, hc, c);
    ASSERT_EQ(blk_lookup(&m, BLK_ROOT_HASH, c, &h), z);
    (void)hb;
    check(&m);
    blk_free(&m);
}

/* Random owners take, share and drop blocks; the manager's refcounts must equal the number
 * of owners holding each block at every point. */
static void test_random(void)
{
    enum { NB = 37, OWNERS = 9, CAP = 16, OPS = 20000 };
    blk_mgr_t m;
    ASSERT_EQ(blk_init(&m, NB, BS), 0);
    int32_t held[OWNERS][CAP];
    int nheld[OWNERS] = {0};
    uint64_t s = 12345;
    for (int op = 0; op < OPS; op++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned r = (unsigned)(s >> 33);
        int o = (int)(r % OWNERS);
        int kind = (int)((r >> 8) % 4);
        if (kind == 0 && nheld[o] < CAP) {
            int32_t b = blk_alloc(&m);
            if (b >= 0) {
                int32_t t[BS] = {(int32_t)(r % 5), 1, 2, 3};
                uint64_t h;
                if (blk_lookup(&m, BLK_ROOT_HASH, t, &h) < 0)
                    blk_register(&m, b, BLK_ROOT_HASH, h, t);
                held[o][nheld[o]++] = b;
            } else {
                ASSERT_EQ(m.num_free, 0);
            }
        } else if (kind == 1 && nheld[o] < CAP) {
            int32_t t[BS] = {(int32_t)(r % 5), 1, 2, 3};
            uint64_t h;
            int32_t b = blk_lookup(&m, BLK_ROOT_HASH, t, &h);
            if (b >= 0) {
                blk_incref(&m, b);
                held[o][nheld[o]++] = b;
            }
        } else if (nheld[o] > 0) {
            int i = (int)((r >> 12) % (unsigned)nheld[o]);
            blk_decref(&m, held[o][i]);
            held[o][i] = held[o][--nheld[o]];
        }
        int count[NB] = {0};
        for (int k = 0; k < OWNERS; k++)
            for (int i = 0; i < nheld[k]; i++)
                count[held[k][i]]++;
        for (int b = 0; b < NB; b++)
            ASSERT_EQ(m.ref[b], count[b]);
        check(&m);
    }
    for (int k = 0; k < OWNERS; k++)
        for (int i = 0; i < nheld[k]; i++)
            blk_decref(&m, held[k][i]);
    ASSERT_EQ(m.num_free, NB);
    check(&m);
    blk_free(&m);
}

int main(void)
{
    test_alloc_free();
    test_prefix_and_lru();
    test_random();
    puts("sched_blocks: ok");
    return 0;
}
