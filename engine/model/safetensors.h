/* safetensors.h - private to engine/: read-only access to Hugging Face safetensors files.
 *
 * A file is an 8-byte little-endian header length, a JSON header mapping tensor names to
 * {dtype, shape, data_offsets}, then the data. st_open maps the file(s) and validates every
 * entry before anything is used, so a tensor handed out always lies inside its file with
 * exactly shape x dtype bytes.
 */
#ifndef NANO_VLLM_SAFETENSORS_H
#define NANO_VLLM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

/* The dtypes of the safetensors format; the engine computes with the first three. */
enum st_dtype {
    ST_F32 = 0,
    ST_F16,
    ST_BF16,
    ST_F64,
    ST_I64,
    ST_I32,
    ST_I16,
    ST_I8,
    ST_U8,
    ST_BOOL,
    ST_U16,
    ST_U32,
    ST_U64,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_DTYPE_COUNT
};

typedef struct st_tensor {
    char *name; /* owned */
    int dtype;  /* enum st_dtype */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* borrowed: points into the file's mapping */
    size_t nbytes;
    int file; /* index into st_set_t.files */
} st_tensor_t;

typedef struct st_file {
    char *name; /* owned: file name as the user knows it (relative to the model dir) */
    void *map;  /* owned: read-only mapping of the whole file */
    size_t size;
    int fd; /* owned: the file, open for pread (packing reads the weights with it); -1 if not */
} st_file_t;

typedef struct st_set {
    st_file_t *files; /* owned (n_files) */
    int n_files;
    st_tensor_t *tensors; /* owned (n_tensors), sorted by name */
    int n_tensors;
    char *source; /* owned: "model.safetensors" or "model.safetensors.index.json" */
} st_set_t;

/* Opens dir/model.safetensors, or when it is absent the shards listed in
 * dir/model.safetensors.index.json. Returns 0, or -ENOENT (no checkpoint), -EINVAL (a
 * malformed file or index), -EIO, -ENOMEM, with one line in err naming the file and, where
 * there is one, the tensor. On failure *s is left empty (st_close is still safe). */
int st_open(st_set_t *s, const char *dir, char *err, size_t errlen);
/* Unmaps and frees everything; safe on a zeroed or already closed set. */
void st_close(st_set_t *s);
/* The tensor called name, or NULL. */
const st_tensor_t *st_find(const st_set_t *s, const char *name);
/* "F32", "BF16", ... */
const char *st_dtype_name(int dtype);
size_t st_dtype_size(int dtype);

/* Writes one error line (printf-style) into err, with control bytes from quoted file text
 * replaced by '?' so it stays one printable line, and returns code. For the engine's
 * loaders (safetensors.c, gpt2_load.c). */
int st_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
