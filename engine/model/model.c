/* model.c - the model interface (model.h): config.json picks the architecture, the calls
 * every model shares, and the loader helpers the architecture files use (arch.h).
 *
 * F32 tensors are used in place from the read-only mapping. F16 and BF16 vectors (and F32
 * ones the file leaves misaligned) are converted once into one owned F32 buffer, carved in
 * order. Every tensor's shape is checked against config.json before anything is used. The
 * matrices are then packed once for engine/kernels/matmul.c in the dtype asked for, straight
 * from the file's values on the compute threads (read from the open file with pread a slab at
 * a time; a BF16 file kept as BF16 is a copy), and the mapped originals' pages are handed back
 * to the kernel. A 16-bit matrix that is not
 * packed (GPT-2's position embeddings, an untied embedding table) is converted at the end.
 * Start-up then costs about what reading the file costs; progress is reported in bytes of
 * the tensors in use as they are packed or converted.
 */
#include "engine/model/arch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/clock.h"
#include "engine/engine.h"
#include "engine/kernels/vec.h"

/* config.json's architecture (or model_type) and the file that implements it. */
static const struct {
    const char *arch, *model_type;
    model_load_fn load;
} archs[] = {
    {"GPT2LMHeadModel", "gpt2", gpt2_load},
    {"LlamaForCausalLM", "llama", llama_load},
    {"Qwen2ForCausalLM", "qwen2", llama_load},
    {"Qwen3ForCausalLM", "qwen3", llama_load},
};

const char *model_supported(void)
{
    return "GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";
}

/* Loads dir/file as a JSON object into *root. A missing file is -ENOENT (quietly when
 * optional: *root stays NULL and 0 is returned). */
static int load_json(const char *dir, const char *file, int optional, json_t **root, char *err,
                     size_t errlen)
{
    *root = NULL;
    size_t plen = strlen(dir) + strlen(file) + 2;
    char *path = malloc(plen);
    if (!path)
        return st_fail(err, errlen, -ENOMEM, "%s: out of memory", file);
    snprintf(path, plen, "%s/%s", dir, file);
    if (access(path, F_OK) != 0) {
        free(path);
        return optional ? 0 : st_fail(err, errlen, -ENOENT, "%s: not found in %s", file, dir);
    }
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    free(path);
    if (!j)
        return st_fail(err, errlen, -EINVAL, "%s: invalid JSON: %s (line %d, column %d)", file,
                       jerr.text, jerr.line, jerr.column);
    if (!json_is_object(j)) {
        json_decref(j);
        return st_fail(err, errlen, -EINVAL, "%s: not a JSON object", file);
    }
    *root = j;
    return 0;
}

/* The architecture config.json names: architectures[0], else model_type; neither names
 * GPT-2 (the first checkpoints this engine read carried no such field). */
static int pick_arch(json_t *root, int *arch, char *err, size_t errlen)
{
    json_t *a = json_object_get(root, "architectures");
    json_t *t = json_object_get(root, "model_type");
    const char *name = NULL;
    int by_type = 0;
    if (json_is_array(a) && json_array_size(a) > 0) {
        name = json_string_value(json_array_get(a, 0));
        if (!name)
            return st_fail(err, errlen, -EINVAL, "config.json: architectures[0] is not a string");
    } else if (a && !json_is_null(a)) {
        return st_fail(err, errlen, -EINVAL, "config.json: architectures is not a list of names");
    } else if (t) {
        if (!(name = json_string_value(t)))
            return st_fail(err, errlen, -EINVAL, "config.json: model_type is not a string");
        by_type = 1;
    } else {
        *arch = 0;
        return 0;
    }
    for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); i++)
        if (strcmp(name, by_type ? archs[i].model_type : archs[i].arch) == 0) {
            *arch = (int)i;
            return 0;
        }
    return st_fail(err, errlen, -EINVAL,
                   "config.json: architecture \"%s\" is not supported (supported: %s)", name,
                   model_supported());
}

/* A matrix model_get handed out: where it points, the tensor it came from, whether it is
 * waiting in the deferred range (not F32 in place) and whether it was packed or converted. */
struct model_matrix {
    const float *at;
    const st_tensor_t *t;
    size_t n;
    int deferred, done;
};

static int load_finish(model_t *m, char *err, size_t errlen);

int model_load(model_t **out, const char *dir, int dtype, const char *kernel, char *err,
               size_t errlen)
{
    return model_load_progress(out, dir, dtype, kernel, NULL, NULL, err, errlen);
}

int model_load_progress(model_t **out, const char *dir, int dtype, const char *kernel,
                        model_progress_fn fn, void *arg, char *err, size_t errlen)
{
    *out = NULL;
    const model_progress_t progress = {fn, arg};
    if (dtype != ENG_DTYPE_AUTO && dtype != ENG_DTYPE_F32 && dtype != ENG_DTYPE_F16 &&
        dtype != ENG_DTYPE_BF16 && dtype != ENG_DTYPE_I8 && dtype != ENG_DTYPE_BF16X3 &&
        dtype != ENG_DTYPE_W8A8)
        return st_fail(err, errlen, -EINVAL,
                       "weight dtype %d is not auto, f32, f16, bf16, int8, int8w or bf16x3", dtype);
    json_t *root = NULL, *gen = NULL;
    int arch = 0;
    int rc = load_json(dir, "config.json", 0, &root, err, errlen);
    rc = rc ? rc : pick_arch(root, &arch, err, errlen);
    const double t0 = clock_now_sec();
    if (!rc)
        rc = archs[arch].load(out, dir, root, archs[arch].arch, dtype, kernel, &progress, err,
                              errlen);
    rc = rc ? rc : load_finish(*out, err, errlen);
    if (!rc) /* packing is what the load spent beyond mapping and faulting */
        (*out)->times.pack_s = clock_now_sec() - t0 - (*out)->times.map_s - (*out)->times.fault_s;
    /* generation_config.json's end-of-sequence ids join config.json's (Llama 3 instruct
     * models stop on several). */
    rc = rc ? rc : load_json(dir, "generation_config.json", 1, &gen, err, errlen);
    if (!rc && gen)
        rc = model_cfg_eos(gen, "generation_config.json", &(*out)->desc, err, errlen);
    json_decref(gen);
    json_decref(root);
    if (rc) {
        model_free(*out);
        *out = NULL;
    }
    return rc;
}

void model_free(model_t *m)
{
    if (!m)
        return;
    if (m->ops)
        m->ops->free(m);
    free(m->converted);
    free(m->matrices);
    if (m->deferred)
        munmap(m->deferred, m->deferred_bytes);
    mm_free(m->mm);
    st_close(&m->st);
    free(m);
}

const model_desc_t *model_describe(const model_t *m)
{
    return &m->desc;
}

int model_reserve(model_t *m, int max_tokens, int max_logits, int max_ctx)
{
    if (max_tokens < 1 || max_logits < 0 || max_logits > max_tokens || max_ctx < 1 ||
        max_ctx > m->desc.max_pos)
        return -EINVAL;
    int rc = m->ops->reserve(m, max_tokens, max_logits, max_ctx);
    if (!rc) {
        m->max_tokens = max_tokens;
        m->max_logits = max_logits;
        m->max_ctx = max_ctx;
        m->scratch_threads = pool_threads(mm_pool(m->mm));
    }
    return rc;
}

int model_forward(model_t *m, kv_cache_t *kv, const model_batch_t *b)
{
    int rc = model_check_batch(m, kv, b);
    if (rc || b->T == 0)
        return rc;
    return m->ops->forward(m, kv, b);
}

int model_kv_init(const model_t *m, kv_cache_t *kv, int block_size, int num_blocks, int dtype)
{
    return kv_cache_init(kv, m->desc.n_layer, m->desc.n_kv_head, m->desc.head_size, block_size,
                         num_blocks, dtype);
}

size_t model_kv_block_bytes(const model_t *m, int block_size, int dtype)
{
    return kv_cache_block_bytes(m->desc.n_layer, m->desc.n_kv_head, m->desc.head_size, block_size,
                                dtype);
}

int model_set_threads(model_t *m, int threads)
{
    if (threads < 0 || threads > POOL_MAX_THREADS)
        return -EINVAL;
    char e[256];
    mm_t *mm = NULL;
    /* The same kernel as before (it passed the check, and the weights are packed for it). */
    int rc = mm_init_kernel(&mm, threads, mm_kernel_name(mm_get_kernel(m->mm)), e, sizeof(e));
    if (rc)
        return rc;
    mm_t *old = m->mm;
    m->mm = mm;
    /* The attention scratch is per compute thread: size it again for the new count. */
    if (m->max_tokens && m->scratch_threads != pool_threads(mm_pool(mm))) {
        rc = model_reserve(m, m->max_tokens, m->max_logits, m->max_ctx);
        if (rc) {
            m->mm = old;
            mm_free(mm);
            return rc;
        }
    }
    mm_free(old);
    return 0;
}

int model_threads(const model_t *m)
{
    return pool_threads(mm_pool(m->mm));
}

const char *model_kernel_name(const model_t *m)
{
    return mm_kernel_name(mm_get_kernel(m->mm));
}

/* BF16X3 weights keep F32's accuracy (1e-5 relative), which an F16 cache (1e-3) would not. */
int model_kv_dtype_auto(int weights)
{
    return weights == ENG_DTYPE_F32 || weights == ENG_DTYPE_BF16X3 ? ENG_DTYPE_F32 : ENG_DTYPE_F16;
}

int model_dtype(const model_t *m)
{
    return m->dtype;
}

const char *model_dtype_name(int dtype)
{
    return dtype == ENG_DTYPE_F16      ? "f16"
           : dtype == ENG_DTYPE_BF16   ? "bf16"
           : dtype == ENG_DTYPE_W8A8   ? "int8"
           : dtype == ENG_DTYPE_I8     ? "int8w"
           : dtype == ENG_DTYPE_BF16X3 ? "bf16x3"
                                       : "f32";
}

size_t model_weight_bytes(const model_t *m)
{
    return m->weight_bytes;
}

void model_matrix_cost(const model_t *m, double *read_bytes, double *macs_per_row,
                       double *macs_per_logit)
{
    const double head = (double)m->desc.n_embd * m->desc.vocab_size;
    *read_bytes = m->mm_read_bytes;
    *macs_per_row = m->mm_macs - head;
    *macs_per_logit = head;
}

void model_load_times(const model_t *m, model_load_times_t *t)
{
    *t = m->times;
}

/* Rejects a batch that would read or write outside the model, the scratch or the pool,
 * or whose rows' slots are not where attention will look for them. */
int model_check_batch(const model_t *m, const kv_cache_t *kv, const model_batch_t *b)
{
    const model_desc_t *d = &m->desc;
    const int BS = kv->block_size;
    if (!m->max_tokens || b->T < 0 || b->T > m->max_tokens || b->B < 0 || b->n_logits < 0 ||
        b->n_logits > m->max_logits || (b->n_logits && !b->logits) || kv->n_layer != d->n_layer ||
        kv->n_kv_head != d->n_kv_head || kv->head_size != d->head_size || !kv->data)
        return -EINVAL;
    if (b->T == 0)
        return b->n_logits == 0 ? 0 : -EINVAL;
    if (b->B < 1 || b->seq_start[0] != 0 || b->seq_start[b->B] != b->T)
        return -EINVAL;
    for (int s = 0; s < b->B; s++) {
        int n = b->ctx_len[s];
        if (b->seq_start[s + 1] < b->seq_start[s] || n < 1 || n > d->max_pos || n > m->max_ctx)
            return -EINVAL;
        const int32_t *table = b->block_table[s];
        for (int j = 0; j < (n + BS - 1) / BS; j++)
            if (table[j] < 0 || table[j] >= kv->num_blocks)
                return -EINVAL;
        /* Rows are consecutive positions ending at the context's last one. */
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t p = b->pos[t];
            if (b->tokens[t] < 0 || b->tokens[t] >= d->vocab_size ||
                p != n - (b->seq_start[s + 1] - t) || b->slot[t] != table[p / BS] * BS + p % BS)
                return -EINVAL;
        }
    }
    for (int i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->T ||
            (i && b->logit_rows[i] <= b->logit_rows[i - 1]))
            return -EINVAL;
    return 0;
}

attn_batch_t model_attn_batch(const model_batch_t *b)
{
    return (attn_batch_t){.T = b->T,
                          .B = b->B,
                          .pos = b->pos,
                          .slot = b->slot,
                          .seq_start = b->seq_start,
                          .ctx_len = b->ctx_len,
                          .block_table = b->block_table};
}

/* ---- loader helpers (arch.h) ---- */

int model_cfg_int(json_t *root, const char *key, int lo, int hi, int *v, char *err, size_t errlen)
{
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_integer(j))
        return st_fail(err, errlen, -EINVAL, "config.json: %s is not an integer", key);
    json_int_t x = json_integer_value(j);
    if (x < lo || x > hi)
        return st_fail(err, errlen, -EINVAL, "config.json: %s %lld is not in [%d, %d]", key,
                       (long long)x, lo, hi);
    *v = (int)x;
    return 0;
}

int model_cfg_float(json_t *root, const char *key, double lo, double hi, float *v, char *err,
                    size_t errlen)
{
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j))
        return 0;
    double x = json_number_value(j);
    if (!json_is_number(j) || !(x > lo && x < hi))
        return st_fail(err, errlen, -EINVAL, "config.json: %s must be a number in (%g, %g)", key,
                       lo, hi);
    *v = (float)x;
    return 0;
}

static int add_eos(model_desc_t *d, json_t *j, const char *file, char *err, size_t errlen)
{
    if (!json_is_integer(j))
        return st_fail(err, errlen, -EINVAL, "%s: eos_token_id is not an integer or a list of them",
                       file);
    json_int_t id = json_integer_value(j);
    if (id < 0 || id >= d->vocab_size)
        return 0; /* a stop id the vocabulary cannot produce never ends anything */
    for (int i = 0; i < d->n_eos; i++)
        if (d->eos[i] == id)
            return 0;
    if (d->n_eos == MODEL_MAX_EOS)
        return st_fail(err, errlen, -EINVAL, "%s: more than %d eos_token_id values", file,
                       MODEL_MAX_EOS);
    d->eos[d->n_eos++] = (int32_t)id;
    return 0;
}

int model_cfg_eos(json_t *root, const char *file, model_desc_t *d, char *err, size_t errlen)
{
    json_t *j = json_object_get(root, "eos_token_id"), *v;
    size_t i;
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_array(j))
        return add_eos(d, j, file, err, errlen);
    json_array_foreach(j, i, v)
    {
        int rc = add_eos(d, v, file, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

static void convert(float *dst, const st_tensor_t *t, size_t n)
{
    if (t->dtype == ST_F16)
        vec_f16_to_f32(dst, t->data, n);
    else if (t->dtype == ST_BF16)
        vec_bf16_to_f32(dst, t->data, n);
    else /* F32 that is not 4-byte aligned in the file */
        memcpy(dst, t->data, n * sizeof(float));
}

/* Adds bytes to the progress and tells the caller. */
static void report(model_t *m, uint64_t bytes)
{
    m->bytes_done += bytes;
    if (m->progress.fn)
        m->progress.fn(m->progress.arg, m->bytes_done, m->bytes_total);
}

static int file_dtype(const st_tensor_t *t)
{
    return t->dtype == ST_F16    ? ENG_DTYPE_F16
           : t->dtype == ST_BF16 ? ENG_DTYPE_BF16
                                 : ENG_DTYPE_F32;
}

/* A packing source for the n columns of tensor t, in the file's dtype: its mapped bytes, and
 * where they are in the open file (packing reads them from there). */
static mm_source_t file_source(const model_t *m, const st_tensor_t *t, int n)
{
    const st_file_t *f = &m->st.files[t->file];
    return (mm_source_t){.data = t->data,
                         .dtype = file_dtype(t),
                         .n = n,
                         .fd = f->fd,
                         .off = (uint64_t)((const char *)t->data - (const char *)f->map)};
}

/* Drops the resident pages of a tensor's mapped bytes (whole pages inside it only). */
static void drop_file(const model_t *m, const st_tensor_t *t)
{
    (void)m;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)t->data + page - 1) / page * page;
    uintptr_t hi = ((uintptr_t)t->data + t->nbytes) / page * page;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: failure changes nothing */
}

/* A matrix (x: model_get's, or NULL for memory of the architecture's own at src) was packed:
 * drop its file pages and count it done. */
static void packed(model_t *m, struct model_matrix *x, const float *src)
{
    (void)src;
    if (!x)
        return;
    drop_file(m, x->t);
    if (!x->done) {
        x->done = 1;
        report(m, x->t->nbytes);
    }
}

static void format_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

static const st_tensor_t *find(const model_loader_t *ld, const char *name)
{
    const st_tensor_t *t = st_find(&ld->m->st, name);
    if (!t && ld->alt_prefix) {
        char full[256];
        snprintf(full, sizeof(full), "%s%s", ld->alt_prefix, name);
        t = st_find(&ld->m->st, full);
    }
    return t;
}

int model_get(model_loader_t *ld, const char *name, int64_t d0, int64_t d1, const float **out)
{
    const st_set_t *st = &ld->m->st;
    const st_tensor_t *t = find(ld, name);
    if (!t)
        return ld->layer_prefix && strncmp(name, ld->layer_prefix, strlen(ld->layer_prefix)) == 0
                   ? st_fail(ld->err, ld->errlen, -EINVAL,
                             "%s: missing tensor %s (%s = %d in config.json)", st->source, name,
                             strcmp(ld->layer_prefix, "h.") == 0 ? "n_layer" : "num_hidden_layers",
                             ld->m->desc.n_layer)
                   : st_fail(ld->err, ld->errlen, -EINVAL, "%s: missing tensor %s", st->source,
                             name);
    const char *file = st->files[t->file].name;
    int64_t want[2] = {d0, d1};
    int ndim = d1 ? 2 : 1;
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char got[128], exp[64];
        format_shape(got, sizeof(got), t->ndim, t->shape);
        format_shape(exp, sizeof(exp), ndim, want);
        return st_fail(ld->err, ld->errlen, -EINVAL,
                       "%s: %s: shape %s disagrees with config.json (expected %s)", file, t->name,
                       got, exp);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return st_fail(ld->err, ld->errlen, -EINVAL, "%s: %s: dtype %s is not F32, F16 or BF16",
                       file, t->name, st_dtype_name(t->dtype));
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    if (d1 && !ld->matrix_dtype)
        ld->matrix_dtype = t->dtype == ST_F16    ? ENG_DTYPE_F16
                           : t->dtype == ST_BF16 ? ENG_DTYPE_BF16
                                                 : ENG_DTYPE_F32;
    int in_place = t->dtype == ST_F32 && (uintptr_t)t->data % sizeof(float) == 0;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    model_t *m = ld->m;
    if (!ld->filling) {
        ld->n_floats += n;
        m->bytes_total += t->nbytes;
        if (d1) {
            ld->n_matrices++;
            ld->n_deferred += in_place ? 0 : n;
            ld->deferred_bytes += in_place ? 0 : (n * sizeof(float) + page - 1) / page * page;
        } else {
            ld->n_convert += in_place ? 0 : n;
        }
        return 0;
    }
    if (d1) {
        if (m->n_matrices == ld->n_matrices) /* the passes must ask for the same tensors */
            return st_fail(ld->err, ld->errlen, -EINVAL, "%s: %s: not asked for when counting",
                           st->source, name);
        struct model_matrix *x = &m->matrices[m->n_matrices++];
        *x = (struct model_matrix){.at = in_place ? t->data : (const float *)ld->deferred_at,
                                   .t = t,
                                   .n = n,
                                   .deferred = !in_place};
        if (!in_place)
            ld->deferred_at += (n * sizeof(float) + page - 1) / page * page;
        *out = x->at;
        return 0;
    }
    if (in_place) {
        *out = t->data;
    } else {
        convert(ld->dst, t, n);
        *out = ld->dst;
        ld->dst += n;
    }
    report(m, t->nbytes);
    return 0;
}

int model_load_weights(model_t *m, const char *dir, model_loader_t *ld,
                       int (*get_all)(model_loader_t *ld))
{
    const double t0 = clock_now_sec();
    int rc = st_open(&m->st, dir, ld->err, ld->errlen);
    rc = rc ? rc : get_all(ld);
    m->times.map_s = clock_now_sec() - t0;
    if (rc)
        return rc;
    if (ld->n_convert) {
        m->converted = malloc(ld->n_convert * sizeof(float));
        if (!m->converted)
            return st_fail(ld->err, ld->errlen, -ENOMEM,
                           "%s: out of memory for %zu converted weights", m->st.source,
                           ld->n_convert);
    }
    /* The deferred range is reserved, not committed: its pages cost nothing until a matrix
     * that is not packed is converted into them (load_finish). */
    if (ld->deferred_bytes) {
        void *d = mmap(NULL, ld->deferred_bytes, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (d == MAP_FAILED)
            return st_fail(ld->err, ld->errlen, -ENOMEM,
                           "%s: out of address space for %zu converted weights", m->st.source,
                           ld->n_deferred);
        m->deferred = d;
        m->deferred_bytes = ld->deferred_bytes;
    }
    m->matrices = calloc((size_t)ld->n_matrices + 1, sizeof(*m->matrices));
    if (!m->matrices)
        return st_fail(ld->err, ld->errlen, -ENOMEM, "%s: out of memory", m->st.source);
    m->weight_bytes = ld->n_floats * sizeof(float);
    m->n_converted = ld->n_convert;
    ld->filling = 1;
    ld->dst = m->converted;
    ld->deferred_at = m->deferred;
    report(m, 0);
    return get_all(ld);
}

int model_kernel_init(model_t *m, int dtype, int file_dtype, const char *kernel, char *err,
                      size_t errlen)
{
    char e[256];
    int rc = mm_init_kernel(&m->mm, 0, kernel, e, sizeof(e));
    if (rc)
        return st_fail(err, errlen, rc, "%s", e);
    if (dtype == ENG_DTYPE_AUTO)
        dtype = file_dtype;
    m->dtype = dtype == ENG_DTYPE_AUTO ? ENG_DTYPE_F32 : dtype;
    /* BF16X3 pays only on AMX (three tile products for one); elsewhere F32 is as fast and
     * exact. */
    if (m->dtype == ENG_DTYPE_BF16X3 && mm_get_kernel(m->mm) != MM_KERNEL_AMX)
        m->dtype = ENG_DTYPE_F32;
    return 0;
}

/* The matrix model_get handed out at p, or NULL (memory of the architecture's own). */
static struct model_matrix *matrix_at(model_t *m, const float *p)
{
    for (int i = 0; i < m->n_matrices; i++)
        if (m->matrices[i].at == p)
            return &m->matrices[i];
    return NULL;
}

/* mm_weight_pack in the model's dtype, with the time its fresh memory took to fault in
 * counted apart (model_load_times). */
static int pack_into(model_t *m, mm_weight_t *w, const mm_source_t *parts, int n_parts, int K,
                     int N, size_t ld, int trans)
{
    const double t0 = clock_now_sec();
    int rc = mm_weight_alloc(m->mm, w, K, N, m->dtype);
    m->times.fault_s += clock_now_sec() - t0;
    return rc ? rc : mm_weight_fill(m->mm, w, parts, n_parts, ld, trans);
}

int model_pack(model_t *m, mm_weight_t *w, const float *src, int K, int N, int trans)
{
    if (trans)
        return model_pack_parts(m, w, &src, &N, 1, K);
    struct model_matrix *x = matrix_at(m, src);
    mm_source_t part = {.data = src, .dtype = ENG_DTYPE_F32, .n = N};
    if (x && x->deferred)
        part = file_source(m, x->t, N);
    int rc = pack_into(m, w, &part, 1, K, N, (size_t)N, 0);
    if (!rc) {
        packed(m, x, src);
        model_count_packed(m, w);
    }
    return rc;
}

int model_pack_parts(model_t *m, mm_weight_t *w, const float *const *parts, const int *rows, int n,
                     int K)
{
    mm_source_t src[8] = {{0}};
    struct model_matrix *x[8];
    int N = 0;
    if (n < 1 || n > 8)
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        x[i] = matrix_at(m, parts[i]);
        if (x[i] && x[i]->deferred)
            src[i] = file_source(m, x[i]->t, rows[i]);
        else
            src[i] = (mm_source_t){.data = parts[i], .dtype = ENG_DTYPE_F32, .n = rows[i]};
        N += rows[i];
    }
    int rc = pack_into(m, w, src, n, K, N, (size_t)K, 1);
    if (!rc) {
        for (int i = 0; i < n; i++)
            packed(m, x[i], parts[i]);
        model_count_packed(m, w);
    }
    return rc;
}

void model_count_packed(model_t *m, const mm_weight_t *w)
{
    const size_t K = (size_t)w->K, N = (size_t)w->N;
    m->mm_read_bytes +=
        (double)w->bytes + (w->scale ? (double)w->n_panels * MM_NR * sizeof(float) : 0);
    m->mm_macs += (double)K * (double)N;
    /* weight_bytes counts values in the dtype they are kept in (padding not counted), and
     * int8's column scales. */
    if (w->dtype == ENG_DTYPE_I8 || w->dtype == ENG_DTYPE_W8A8)
        m->weight_bytes = m->weight_bytes - K * N * 3 + N * sizeof(float);
    else if (w->dtype == ENG_DTYPE_F16 || w->dtype == ENG_DTYPE_BF16)
        m->weight_bytes -= K * N * 2;
}

void model_load_done(model_t *m, const model_loader_t *ld)
{
    m->in_place = ld->n_floats - ld->n_convert - ld->n_deferred;
}

typedef struct convert_job {
    float *dst;
    const st_tensor_t *t;
    size_t n;
} convert_job_t;

#define CONVERT_CHUNK ((size_t)1 << 20) /* values per pool part */

static void convert_cb(void *arg, int part, int n)
{
    const convert_job_t *cj = arg;
    size_t lo = (size_t)part * CONVERT_CHUNK, hi = lo + CONVERT_CHUNK;
    hi = hi > cj->n ? cj->n : hi;
    (void)n;
    st_tensor_t t = *cj->t;
    t.data = (const char *)t.data + lo * st_dtype_size(t.dtype);
    convert(cj->dst + lo, &t, hi - lo);
}

/* Converts the deferred matrices nobody packed (on the compute threads), makes their pages
 * readable, reports the end and unmaps the files when nothing points into them. */
static int load_finish(model_t *m, char *err, size_t errlen)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < m->n_matrices; i++) {
        struct model_matrix *x = &m->matrices[i];
        if (x->done)
            continue;
        if (x->deferred) {
            float *dst = (float *)x->at;
            size_t bytes = (x->n * sizeof(float) + page - 1) / page * page;
            if (mprotect(dst, bytes, PROT_READ | PROT_WRITE) != 0)
                return st_fail(err, errlen, -ENOMEM, "%s: %s: out of memory converting it",
                               m->st.files[x->t->file].name, x->t->name);
            convert_job_t cj = {dst, x->t, x->n};
            size_t parts = (x->n + CONVERT_CHUNK - 1) / CONVERT_CHUNK;
            pool_run_parts(mm_pool(m->mm), parts > POOL_MAX_PARTS ? POOL_MAX_PARTS : (int)parts,
                           convert_cb, &cj);
            drop_file(m, x->t);
        }
        x->done = 1;
        report(m, x->t->nbytes);
    }
    /* When nothing points into the files any more, unmap them. */
    if (m->in_place == 0)
        st_close(&m->st);
    free(m->matrices);
    m->matrices = NULL;
    m->n_matrices = 0;
    if (m->progress.fn && m->bytes_done != m->bytes_total) {
        m->bytes_done = m->bytes_total;
        m->progress.fn(m->progress.arg, m->bytes_done, m->bytes_total);
    }
    return 0;
}
