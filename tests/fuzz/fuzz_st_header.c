/* fuzz_st_header.c - libFuzzer harness for the safetensors loader (st_open): the 8-byte
 * length, the JSON header, the tensor table and the sharded index.
 *
 * The first byte picks what the rest is:
 *   'R'  the whole model.safetensors file, byte for byte (the length prefix is fuzzed too);
 *   'I'  model.safetensors.index.json, then "\n@@\n" and shard a.safetensors, then "\n@@\n"
 *        and shard b.safetensors, each shard in the form below;
 *   else model.safetensors in the form "[DATA_BYTES\n]HEADER_JSON": the harness writes the
 *        length, the header and DATA_BYTES (default 64, at most 1 MiB) bytes of data, so
 *        the fuzzer works on the JSON rather than on getting the length right.
 * Checks, beyond "no crash, no leak": a failure leaves one printable error line and an
 * empty set; a success hands out only tensors that lie inside their file with exactly
 * shape x dtype bytes, sorted by name with no duplicates, each found by st_find.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model/safetensors.h"
#include "fuzz_tmpdir.h"

#define MAX_DATA (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes name as length + header + data from "[DATA_BYTES\n]HEADER_JSON". */
static void put_shard(const char *name, const char *s, size_t n)
{
    size_t dbytes = 64;
    const char *nl = memchr(s, '\n', n);
    if (nl && nl > s && nl - s < 9 && strspn(s, "0123456789") == (size_t)(nl - s)) {
        dbytes = (size_t)strtoul(s, NULL, 10);
        if (dbytes > MAX_DATA)
            dbytes = MAX_DATA;
        n -= (size_t)(nl + 1 - s);
        s = nl + 1;
    }
    size_t total = 8 + n + dbytes;
    uint8_t *buf = malloc(total);
    if (!buf)
        abort();
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, s, n);
    for (size_t i = 0; i < dbytes; i++)
        buf[8 + n + i] = (uint8_t)(i * 37u + 11u);
    fuzz_dir_put(name, buf, total);
    free(buf);
}

static void check_set(const st_set_t *s)
{
    for (int i = 0; i < s->n_tensors; i++) {
        const st_tensor_t *t = &s->tensors[i];
        if (t->file < 0 || t->file >= s->n_files || t->dtype < 0 || t->dtype >= ST_DTYPE_COUNT ||
            t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            fprintf(stderr, "tensor %s: file %d dtype %d ndim %d\n", t->name, t->file,
                    t->dtype, t->ndim);
            abort();
        }
        size_t want = st_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || __builtin_mul_overflow(want, (size_t)t->shape[d], &want)) {
                fprintf(stderr, "tensor %s: shape[%d] %lld overflows\n", t->name, d,
                        (long long)t->shape[d]);
                abort();
            }
        }
        const st_file_t *f = &s->files[t->file];
        const uint8_t *lo = f->map, *p = t->data;
        if (want != t->nbytes || (t->nbytes && (p < lo || (size_t)(p - lo) > f->size ||
                                               t->nbytes > f->size - (size_t)(p - lo)))) {
            fprintf(stderr, "tensor %s: %zu bytes at offset %td of a %zu-byte file\n", t->name,
                    t->nbytes, p - lo, f->size);
            abort();
        }
        if (i > 0 && strcmp(s->tensors[i - 1].name, t->name) >= 0) {
            fprintf(stderr, "tensors not sorted or duplicated: %s, %s\n", s->tensors[i - 1].name,
                    t->name);
            abort();
        }
        if (st_find(s, t->name) != t)
            abort();
        /* Touch the first and last byte: a tensor outside the mapping faults here. */
        if (t->nbytes) {
            volatile uint8_t x = p[0] ^ p[t->nbytes - 1];
            (void)x;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    fuzz_dir_put("model.safetensors", NULL, (size_t)-1);
    fuzz_dir_put("model.safetensors.index.json", NULL, (size_t)-1);
    fuzz_dir_put("a.safetensors", NULL, (size_t)-1);
    fuzz_dir_put("b.safetensors", NULL, (size_t)-1);
    if (data[0] == 'R') {
        fuzz_dir_put("model.safetensors", in, n);
    } else if (data[0] == 'I') {
        const char *sec[3];
        size_t len[3];
        size_t k = fuzz_split(in, n, sec, len, 3);
        fuzz_dir_put("model.safetensors.index.json", sec[0], len[0]);
        if (k > 1)
            put_shard("a.safetensors", sec[1], len[1]);
        if (k > 2)
            put_shard("b.safetensors", sec[2], len[2]);
    } else {
        put_shard("model.safetensors", in, n);
    }

    st_set_t s;
    memset(&s, 0xa5, sizeof(s)); /* st_open must not rely on a zeroed set */
    char err[512] = "";
    int rc = st_open(&s, fuzz_dir(), err, sizeof(err));
    fuzz_check_err(rc, err, "st_open");
    if (rc == 0)
        check_set(&s);
    else if (s.n_tensors != 0 || s.n_files != 0 || s.tensors || s.files)
        abort();
    st_close(&s);
    st_close(&s); /* closing twice is safe */
    return 0;
}
