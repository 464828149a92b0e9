/* safetensors.c - maps safetensors files (single or sharded) and validates their headers.
 *
 * Nothing in a file is trusted: the header length, the JSON, every dtype, shape and offset
 * are checked against the file before a tensor is handed out, and every failure names the
 * file and the tensor. Files are mapped read-only and stay mapped until st_close.
 */
#include "engine/model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format's own limit on the JSON header (safetensors MAX_HEADER_SIZE). */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_DTYPE_COUNT] = {
    [ST_F32] = {"F32", 4},   [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},         [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},           [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1}, [ST_U16] = {"U16", 2},         [ST_U32] = {"U32", 4},
    [ST_U64] = {"U64", 8},   [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(int dtype)
{
    return dtype >= 0 && dtype < ST_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

size_t st_dtype_size(int dtype)
{
    return dtype >= 0 && dtype < ST_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

int st_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        /* Messages quote the file (jansson's "near '...'" text): keep them one printable line
         * even when the file holds newlines, escape sequences or other control bytes. */
        for (char *c = err; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
    }
    return code;
}

static int add_tensor(st_set_t *s, int *cap, st_tensor_t *t)
{
    if (s->n_tensors == *cap) {
        int ncap = *cap ? *cap * 2 : 256;
        st_tensor_t *nt = realloc(s->tensors, (size_t)ncap * sizeof(*nt));
        if (!nt)
            return -ENOMEM;
        s->tensors = nt;
        *cap = ncap;
    }
    s->tensors[s->n_tensors++] = *t;
    return 0;
}

/* Reads one tensor entry of the header; on success t is filled (name not yet set). */
static int parse_entry(const char *fname, const char *name, json_t *v, const uint8_t *data,
                       size_t data_size, st_tensor_t *t, char *err, size_t errlen)
{
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
        return st_fail(err, errlen, -EINVAL,
                       "%s: %s: entry needs dtype (string), shape and data_offsets (arrays)", fname,
                       name);
    t->dtype = -1;
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (strcmp(json_string_value(jd), dtypes[d].name) == 0)
            t->dtype = d;
    if (t->dtype < 0)
        return st_fail(err, errlen, -EINVAL, "%s: %s: unknown dtype \"%s\"", fname, name,
                       json_string_value(jd));

    size_t ndim = json_array_size(js);
    if (ndim > ST_MAX_DIMS)
        return st_fail(err, errlen, -EINVAL, "%s: %s: %zu dimensions (at most %d)", fname, name,
                       ndim, ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t count = 1;
    int overflow = 0;
    for (size_t i = 0; i < ndim; i++) {
        json_t *e = json_array_get(js, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return st_fail(err, errlen, -EINVAL, "%s: %s: shape[%zu] is not a non-negative integer",
                           fname, name, i);
        t->shape[i] = json_integer_value(e);
        if (t->shape[i] != 0 && count > UINT64_MAX / (uint64_t)t->shape[i])
            overflow = 1;
        count *= (uint64_t)t->shape[i];
    }

    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (json_array_size(jo) != 2 || !json_is_integer(jb) || !json_is_integer(je) ||
        json_integer_value(jb) < 0 || json_integer_value(je) < json_integer_value(jb))
        return st_fail(err, errlen, -EINVAL,
                       "%s: %s: data_offsets must be [begin, end] with 0 <= begin <= end", fname,
                       name);
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (end > data_size)
        return st_fail(err, errlen, -EINVAL,
                       "%s: %s: data_offsets [%llu,%llu] out of range (the data is %zu bytes)",
                       fname, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    size_t es = dtypes[t->dtype].size;
    if (overflow || count > UINT64_MAX / es || count * es != end - begin)
        return st_fail(err, errlen, -EINVAL,
                       "%s: %s: data_offsets [%llu,%llu] hold %llu bytes, but shape x %s needs "
                       "%llu%s",
                       fname, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(end - begin), dtypes[t->dtype].name,
                       (unsigned long long)(count * es), overflow ? " (overflow)" : "");
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const st_tensor_t *x = *(st_tensor_t *const *)a, *y = *(st_tensor_t *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Rejects two non-empty tensors of file f sharing bytes. */
static int check_overlap(st_set_t *s, int first, const char *fname, char *err, size_t errlen)
{
    int n = s->n_tensors - first;
    if (n < 2)
        return 0;
    st_tensor_t **by = malloc((size_t)n * sizeof(*by));
    if (!by)
        return st_fail(err, errlen, -ENOMEM, "%s: out of memory", fname);
    int m = 0;
    for (int i = first; i < s->n_tensors; i++)
        if (s->tensors[i].nbytes)
            by[m++] = &s->tensors[i];
    qsort(by, (size_t)m, sizeof(*by), cmp_by_offset);
    int rc = 0;
    for (int i = 1; i < m && !rc; i++) {
        const uint8_t *prev_end = (const uint8_t *)by[i - 1]->data + by[i - 1]->nbytes;
        if ((const uint8_t *)by[i]->data < prev_end)
            rc = st_fail(err, errlen, -EINVAL, "%s: %s: data overlaps tensor %s", fname,
                         by[i]->name, by[i - 1]->name);
    }
    free(by);
    return rc;
}

static int parse_header(st_set_t *s, int *cap, int fi, char *err, size_t errlen)
{
    const st_file_t *f = &s->files[fi];
    const uint8_t *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen > f->size - 8)
        return st_fail(err, errlen, -EINVAL,
                       "%s: header length %llu is beyond the file (%zu bytes)", f->name,
                       (unsigned long long)hlen, f->size);
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        return st_fail(err, errlen, -EINVAL, "%s: header length %llu is not in [2, %u]", f->name,
                       (unsigned long long)hlen, ST_MAX_HEADER);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_fail(err, errlen, -EINVAL, "%s: invalid JSON header: %s (line %d, column %d)",
                       f->name, jerr.text, jerr.line, jerr.column);
    if (!json_is_object(root)) {
        json_decref(root);
        return st_fail(err, errlen, -EINVAL, "%s: JSON header is not an object", f->name);
    }

    const uint8_t *data = p + 8 + hlen;
    size_t data_size = f->size - 8 - (size_t)hlen;
    int first = s->n_tensors, rc = 0;
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v)
    {
        if (strcmp(name, "__metadata__") == 0)
            continue;
        st_tensor_t t = {0};
        rc = parse_entry(f->name, name, v, data, data_size, &t, err, errlen);
        if (rc)
            break;
        t.file = fi;
        t.name = strdup(name);
        if (!t.name || add_tensor(s, cap, &t)) {
            free(t.name);
            rc = st_fail(err, errlen, -ENOMEM, "%s: out of memory", f->name);
            break;
        }
    }
    json_decref(root);
    return rc ? rc : check_overlap(s, first, f->name, err, errlen);
}

/* Maps dir/fname as file number s->n_files and parses its header. */
static int open_file(st_set_t *s, int *cap, const char *dir, const char *fname, char *err,
                     size_t errlen)
{
    st_file_t *nf = realloc(s->files, (size_t)(s->n_files + 1) * sizeof(*nf));
    if (!nf)
        return st_fail(err, errlen, -ENOMEM, "%s: out of memory", fname);
    s->files = nf;
    st_file_t *f = &s->files[s->n_files];
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    f->name = strdup(fname);
    if (!f->name)
        return st_fail(err, errlen, -ENOMEM, "%s: out of memory", fname);
    s->n_files++; /* from here st_close releases it */

    size_t plen = strlen(dir) + strlen(fname) + 2;
    char *path = malloc(plen);
    if (!path)
        return st_fail(err, errlen, -ENOMEM, "%s: out of memory", fname);
    snprintf(path, plen, "%s/%s", dir, fname);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return st_fail(err, errlen, errno == ENOENT ? -ENOENT : -EIO, "%s: cannot open: %s", fname,
                       strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return st_fail(err, errlen, -EIO, "%s: not a regular file", fname);
    }
    if (st.st_size < 8) {
        close(fd);
        return st_fail(err, errlen, -EINVAL,
                       "%s: truncated file: %lld bytes, shorter than the 8-byte header length",
                       fname, (long long)st.st_size);
    }
    /* Not populated: the matrices are read with pread (below), and mapping every page of a
     * file of GBs took longer than a tenth of reading it. The few small tensors read
     * through the mapping fault their pages in as they are read. */
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    if (map == MAP_FAILED) {
        close(fd);
        return st_fail(err, errlen, -EIO, "%s: mmap failed: %s", fname, strerror(map_errno));
    }
    /* The descriptor stays open: the weights are packed from pread copies of the file, which
     * the kernel makes through its own linear map, about twice as fast as loads through
     * this mapping's 4 KiB pages. */
    f->fd = fd;
    f->map = map;
    f->size = (size_t)st.st_size;
    return parse_header(s, cap, s->n_files - 1, err, errlen);
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor_t *)a)->name, ((const st_tensor_t *)b)->name);
}

/* A shard name from the index must stay inside the model directory. */
static int shard_name_ok(const char *n)
{
    return n[0] && !strchr(n, '/') && strcmp(n, ".") != 0 && strcmp(n, "..") != 0;
}

static int open_sharded(st_set_t *s, int *cap, const char *dir, const char *index, char *err,
                        size_t errlen)
{
    size_t plen = strlen(dir) + strlen(index) + 2;
    char *path = malloc(plen);
    if (!path)
        return st_fail(err, errlen, -ENOMEM, "%s: out of memory", index);
    snprintf(path, plen, "%s/%s", dir, index);
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    free(path);
    if (!root)
        return st_fail(err, errlen, -EINVAL, "%s: invalid JSON: %s (line %d, column %d)", index,
                       jerr.text, jerr.line, jerr.column);
    json_t *map = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(map) || json_object_size(map) == 0)
        rc = st_fail(err, errlen, -EINVAL, "%s: no weight_map object", index);

    const char *name;
    json_t *v;
    /* Open each shard the first time the map names it. */
    json_object_foreach(map, name, v)
    {
        if (rc)
            break;
        if (!json_is_string(v) || !shard_name_ok(json_string_value(v))) {
            rc = st_fail(err, errlen, -EINVAL,
                         "%s: %s: shard must be a file name in the model "
                         "directory",
                         index, name);
            break;
        }
        int known = 0;
        for (int i = 0; i < s->n_files && !known; i++)
            known = strcmp(s->files[i].name, json_string_value(v)) == 0;
        if (!known)
            rc = open_file(s, cap, dir, json_string_value(v), err, errlen);
    }
    if (!rc) {
        if (s->n_tensors > 1) /* tensors is NULL when no shard lists any */
            qsort(s->tensors, (size_t)s->n_tensors, sizeof(*s->tensors), cmp_by_name);
        json_object_foreach(map, name, v)
        {
            const st_tensor_t *t = st_find(s, name);
            if (!t || strcmp(s->files[t->file].name, json_string_value(v)) != 0) {
                rc = st_fail(err, errlen, -EINVAL, "%s: %s: listed in %s but not found there",
                             index, name, json_string_value(v));
                break;
            }
        }
    }
    json_decref(root);
    return rc;
}

int st_open(st_set_t *s, const char *dir, char *err, size_t errlen)
{
    static const char single[] = "model.safetensors", index[] = "model.safetensors.index.json";
    memset(s, 0, sizeof(*s));
    int cap = 0, rc;
    size_t plen = strlen(dir) + sizeof(index) + 1;
    char *path = malloc(plen);
    if (!path)
        return st_fail(err, errlen, -ENOMEM, "%s: out of memory", single);
    snprintf(path, plen, "%s/%s", dir, single);
    int have_single = access(path, F_OK) == 0;
    snprintf(path, plen, "%s/%s", dir, index);
    int have_index = access(path, F_OK) == 0;
    free(path);

    if (have_single || !have_index) {
        s->source = strdup(single);
        rc = s->source ? open_file(s, &cap, dir, single, err, errlen) : -ENOMEM;
        if (rc == -ENOENT)
            st_fail(err, errlen, rc, "%s: not found in %s (nor %s)", single, dir, index);
    } else {
        s->source = strdup(index);
        rc = s->source ? open_sharded(s, &cap, dir, index, err, errlen) : -ENOMEM;
    }
    if (rc == -ENOMEM)
        st_fail(err, errlen, rc, "%s: out of memory", single);
    if (rc)
        goto fail;

    /* A header may list no tensors at all (only __metadata__): then tensors is NULL, which
     * qsort must not be given even with a count of 0. */
    if (s->n_tensors > 1)
        qsort(s->tensors, (size_t)s->n_tensors, sizeof(*s->tensors), cmp_by_name);
    for (int i = 1; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i - 1].name, s->tensors[i].name) == 0) {
            rc = st_fail(err, errlen, -EINVAL, "%s: %s: in both %s and %s", s->source,
                         s->tensors[i].name, s->files[s->tensors[i - 1].file].name,
                         s->files[s->tensors[i].file].name);
            goto fail;
        }
    return 0;
fail:
    st_close(s);
    return rc;
}

void st_close(st_set_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_files; i++) {
        if (s->files[i].map)
            munmap(s->files[i].map, s->files[i].size);
        if (s->files[i].fd >= 0)
            close(s->files[i].fd);
        free(s->files[i].name);
    }
    for (int i = 0; i < s->n_tensors; i++)
        free(s->tensors[i].name);
    free(s->files);
    free(s->tensors);
    free(s->source);
    memset(s, 0, sizeof(*s));
}

const st_tensor_t *st_find(const st_set_t *s, const char *name)
{
    st_tensor_t key = {.name = (char *)name};
    if (s->n_tensors == 0) /* tensors may be NULL, which bsearch must not be given */
        return NULL;
    return bsearch(&key, s->tensors, (size_t)s->n_tensors, sizeof(key), cmp_by_name);
}
