/* pack_test.c - packing weights straight from 16-bit sources (mm_weight_pack): the packed
 * bytes equal those of packing the same values widened to F32 (mm_weight_init), bit for bit,
 * for BF16 and F16 sources kept in their dtype (the copying paths) and converted to the other
 * dtypes (the widening path); transposed or not, split into several sources, with K odd or
 * even and N not a multiple of the panel width, sources at odd 2-byte offsets, special values
 * (NaNs, infinities, subnormals, zeros of both signs), on 1 and 3 threads, with the best
 * kernel's copies and the portable ones; and the sources given as a file too (packing reads
 * slabs of it with pread), whole or cut short (the reads that fail fall back to the memory).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"
#include "tests/check.h"
#include "tests/rand.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* A 16-bit value of dtype: mostly ordinary numbers, now and then a special one. */
static uint16_t value16(int dtype)
{
    static const uint16_t bf16_special[] = {0x7fc0, 0xffc1, 0x7f81, 0xff80, 0x7f80,
                                            0x0001, 0x8000, 0x0000, 0x007f, 0x7f7f};
    static const uint16_t f16_special[] = {0x7e00, 0xfc01, 0x7c01, 0xfc00, 0x7c00,
                                           0x0001, 0x8000, 0x0000, 0x03ff, 0x7bff};
    uint32_t r = (uint32_t)(rand_next(&rng_state) >> 11);
    if (r % 16 == 0)
        return dtype == ENG_DTYPE_BF16 ? bf16_special[(r >> 4) % 10] : f16_special[(r >> 4) % 10];
    float f = ((float)(r >> 8 & 0xffff) / 32768.0f - 1.0f) * 3.0f;
    return dtype == ENG_DTYPE_BF16 ? mm_f32_to_bf16(f) : mm_f32_to_f16(f);
}

static float widen(int dtype, uint16_t h)
{
    return dtype == ENG_DTYPE_BF16 ? mm_bf16_to_f32(h) : mm_f16_to_f32(h);
}

/* Whether two packed weights hold the same bytes (NaNs included: they are compared as bits). */
static int same_packed(const mm_weight_t *a, const mm_weight_t *b)
{
    if (a->bytes != b->bytes || a->n_panels != b->n_panels || a->dtype != b->dtype)
        return 0;
    if (memcmp(a->data, b->data, a->bytes) != 0)
        return 0;
    return !a->scale || memcmp(a->scale, b->scale, (size_t)a->n_panels * MM_NR * 4) == 0;
}

/* How check_case gives the sources: memory only, also as a file, as a file cut short. */
enum { IN_MEMORY, IN_FILE, IN_SHORT_FILE };

/* A temporary file holding bytes [0, keep) of mem (0 <= keep <= len), or -1. */
static int temp_file(const char *mem, size_t len, size_t keep)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/pack_test.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path);
    (void)len;
    if (write(fd, mem, keep) != (ssize_t)keep) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Packs W (K x N) from n_parts 16-bit sources of src_dtype into dtype and from the same values
 * widened to F32, and compares. */
static void check_case(mm_t *mm, int src_dtype, int dtype, int K, int N, int trans, int n_parts,
                       int how)
{
    const size_t ld = (size_t)(trans ? K : N), n = (size_t)K * N;
    /* One buffer for all sources, starting 2 bytes past an aligned address: checkpoints place
     * tensors at any even offset. */
    char *mem = malloc(n * 2 + 2);
    float *f32 = malloc(n * sizeof(float));
    if (!mem || !f32) {
        CHECK(!"out of memory");
        free(mem);
        free(f32);
        return;
    }
    uint16_t *src = (uint16_t *)(void *)(mem + 2);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = value16(src_dtype);
        memcpy(&src[i], &h, 2);
        f32[i] = widen(src_dtype, h);
    }
    mm_source_t parts[3];
    int rows[3] = {N, 0, 0};
    if (n_parts > 1) { /* transposed only: W's columns are the file's rows, split in parts */
        rows[0] = N / 2;
        rows[1] = n_parts == 3 ? N / 4 : N - N / 2;
        rows[2] = N - rows[0] - rows[1];
    }
    /* The file holds mem's bytes at the same offsets (fd 0 is stdin: the test asks for more). */
    int fd = how == IN_MEMORY ? -1 : temp_file(mem, n * 2 + 2, how == IN_FILE ? n * 2 + 2 : n + 1);
    if (how != IN_MEMORY && fd <= 0) {
        CHECK(!"cannot write a temporary file");
        free(mem);
        free(f32);
        return;
    }
    for (int i = 0, at = 0; i < n_parts; at += rows[i], i++)
        parts[i] = (mm_source_t){.data = src + (size_t)at * ld,
                                 .dtype = src_dtype,
                                 .n = rows[i],
                                 .fd = fd,
                                 .off = 2 + (uint64_t)at * ld * 2};
    mm_weight_t got, want;
    int rc = mm_weight_pack(mm, &got, parts, n_parts, K, N, ld, trans, dtype);
    int rc2 = mm_weight_init(&want, f32, K, N, ld, trans, dtype);
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(rc2, 0);
    if (!rc && !rc2 && !same_packed(&got, &want)) {
        fprintf(stderr,
                "pack_test: %s source -> dtype %d, K %d N %d trans %d parts %d (%s, %s) differs\n",
                src_dtype == ENG_DTYPE_BF16 ? "bf16" : "f16", dtype, K, N, trans, n_parts,
                mm_kernel_name(mm_get_kernel(mm)),
                how == IN_MEMORY ? "memory"
                : how == IN_FILE ? "file"
                                 : "short file");
        check_failed_count++;
    }
    mm_weight_free(&got);
    mm_weight_free(&want);
    if (fd > 0)
        close(fd);
    free(mem);
    free(f32);
}

int main(void)
{
    static const int shapes[][2] = {
        {1, 1},     {2, 16},  {3, 17},    {31, 33},     {64, 48},
        {65, 100},  {130, 7}, {257, 160}, {1030, 1100}, /* over 2 MiB: prefaulted */
        {12000, 40}}; /* transposed, a slab holds two panels' rows: a part reads two */
    static const int dtypes[] = {ENG_DTYPE_BF16, ENG_DTYPE_F16, ENG_DTYPE_F32, ENG_DTYPE_I8};
    /* The best kernel on 1 and 3 threads, the portable copies on 3. */
    static const struct {
        int threads;
        const char *kernel;
    } runs[] = {{1, "auto"}, {3, "auto"}, {3, "generic"}};
    for (size_t r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
        char err[256];
        mm_t *mm = NULL;
        if (mm_init_kernel(&mm, runs[r].threads, runs[r].kernel, err, sizeof(err)) != 0) {
            fprintf(stderr, "pack_test: %s\n", err);
            return 1;
        }
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
            for (int src = ENG_DTYPE_F16; src <= ENG_DTYPE_BF16; src++)
                for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++)
                    for (int trans = 0; trans < 2; trans++)
                        for (int parts = 1; parts <= (trans && shapes[s][1] >= 4 ? 3 : 1); parts++)
                            for (int how = IN_MEMORY; how <= IN_SHORT_FILE; how++)
                                if (how != IN_SHORT_FILE || dtypes[d] == src)
                                    check_case(mm, src, dtypes[d], shapes[s][0], shapes[s][1],
                                               trans, parts, how);
        mm_free(mm);
    }
    if (check_failures()) {
        fprintf(stderr, "pack_test: %d failures\n", check_failures());
        return 1;
    }
    printf("pack_test: ok\n");
    return 0;
}
