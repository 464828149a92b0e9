/* arch.h - private to engine/model/: what every architecture file shares: the inside of
 * model_t (which an architecture's own struct embeds first), the table of its entry points,
 * and the loader helpers (config.json fields, tensors checked against their expected shape,
 * packing for the matrix kernels). Everything outside engine/model/ uses model.h.
 */
#ifndef NANO_VLLM_MODEL_ARCH_H
#define NANO_VLLM_MODEL_ARCH_H

#include <jansson.h>

#include "engine/kernels/matmul.h"
#include "engine/model/model.h"
#include "engine/model/safetensors.h"

/* Where a load reports its progress (model_load_progress). */
typedef struct model_progress {
    model_progress_fn fn; /* NULL: none */
    void *arg;
} model_progress_t;

typedef struct model_ops {
    int (*reserve)(model_t *m, int max_tokens, int max_logits, int max_ctx);
    int (*forward)(model_t *m, kv_cache_t *kv, const model_batch_t *b);
    void (*free)(model_t *m); /* the architecture's part; model_free does the rest */
} model_ops_t;

struct model {
    const model_ops_t *ops;
    model_desc_t desc;
    st_set_t st;         /* owned: the mapped checkpoint; F32 tensors point into it
                          * (closed after loading when every weight was converted) */
    float *converted;    /* owned: F16/BF16 (and misaligned F32) weights as F32 */
    size_t n_converted;  /* floats in converted */
    size_t weight_bytes; /* bytes of weights as used, a tied LM head counted once */
    double mm_read_bytes; /* bytes a step streams from the packed matrices (model_matrix_cost) */
    double mm_macs;       /* multiply-adds of one row through every packed matrix */
    mm_t *mm;            /* owned: matmul kernels and the compute thread pool */
    int dtype;           /* enum eng_dtype the matrices are kept in */
    /* The last reservation (model_set_threads sizes it again for a new thread count). */
    int max_tokens, max_logits, max_ctx, scratch_threads;
    /* Loading: every matrix model_get handed out (model.c), the reserved range the 16-bit
     * ones point into until they are packed straight from the file or converted, and the
     * progress reported so far. */
    struct model_matrix *matrices;
    int n_matrices;
    void *deferred; /* owned mapping (deferred_bytes) */
    size_t deferred_bytes;
    size_t in_place; /* floats of weights used in place from the files */
    model_progress_t progress;
    uint64_t bytes_done, bytes_total;
    model_load_times_t times; /* of the load, see model_load_times */
};

/* The loader of each architecture: sets *out to what it allocated (base first, ops set) as
 * soon as it has it, fills it from the parsed config.json root (borrowed) and the weights in
 * dir, and on failure returns the error leaving *out for model_free. */
/* progress goes into the model's base before model_load_weights. */
typedef int (*model_load_fn)(model_t **out, const char *dir, json_t *root, const char *arch,
                             int dtype, const char *kernel, const model_progress_t *progress,
                             char *err, size_t errlen);
int gpt2_load(model_t **out, const char *dir, json_t *root, const char *arch, int dtype,
              const char *kernel, const model_progress_t *progress, char *err, size_t errlen);
int llama_load(model_t **out, const char *dir, json_t *root, const char *arch, int dtype,
               const char *kernel, const model_progress_t *progress, char *err, size_t errlen);

/* Reads an integer field of config.json; an absent (or null) field keeps *v (the Hugging
 * Face default). */
int model_cfg_int(json_t *root, const char *key, int lo, int hi, int *v, char *err, size_t errlen);
/* Reads a number field in (lo, hi); absent keeps *v. */
int model_cfg_float(json_t *root, const char *key, double lo, double hi, float *v, char *err,
                    size_t errlen);
/* Appends the ids of an "eos_token_id" field (an integer or a list) of file's root to
 * d->eos, skipping ones already there and ids outside [0, V). */
int model_cfg_eos(json_t *root, const char *file, model_desc_t *d, char *err, size_t errlen);

/* Weight loading runs twice over the same calls: first to validate and count the floats
 * that need a converted copy, then to fill that copy and the pointers. */
typedef struct model_loader {
    model_t *m;
    int filling;              /* 0: the counting pass; 1: the filling pass */
    float *dst;               /* filling pass: the next free float of converted */
    size_t n_convert;         /* floats of vectors needing conversion (counting pass) */
    size_t n_deferred;        /* floats of 16-bit (or misaligned) matrices (counting pass) */
    size_t deferred_bytes;    /* their page-aligned room in model_t.deferred */
    int n_matrices;           /* matrices handed out (counting pass) */
    char *deferred_at;        /* filling pass: the next free byte of model_t.deferred */
    size_t n_floats;          /* floats of all weights used */
    int matrix_dtype;         /* enum eng_dtype of the first matrix read (what "auto" keeps) */
    const char *alt_prefix;   /* tried before a name that is not found ("transformer.") */
    const char *layer_prefix; /* names of per-layer tensors start so ("h.", "model.layers.") */
    char *err;
    size_t errlen;
} model_loader_t;

/* Points *out at tensor name of shape [d0] or [d0, d1] (d1 = 0 for a vector), as F32.
 * A missing tensor, a wrong shape or dtype fail naming the file and the tensor.
 * A vector is converted at once. A matrix that is not F32 in place points into a reserved
 * range that is filled only if the matrix is not packed by the end of loading: one that is
 * packed (model_pack, model_pack_parts) is read straight from the file, never converted,
 * and its pointer must not be read afterwards (its pages are inaccessible). */
int model_get(model_loader_t *ld, const char *name, int64_t d0, int64_t d1, const float **out);
/* Opens the checkpoint and runs get_all twice (count, then fill) as model_loader_t says. */
int model_load_weights(model_t *m, const char *dir, model_loader_t *ld,
                       int (*get_all)(model_loader_t *ld));
/* Starts the matrix kernel (mm_init_kernel) and settles the kept dtype: ENG_DTYPE_AUTO keeps
 * file_dtype; BF16X3 is F32 off AMX. */
int model_kernel_init(model_t *m, int dtype, int file_dtype, const char *kernel, char *err,
                      size_t errlen);
/* Packs W (K x N) read from src (transposed when trans) in m->dtype, drops src's mapped pages
 * and counts the kept bytes. src is a pointer model_get gave (or any F32 memory). Returns 0,
 * -EINVAL or -ENOMEM. */
int model_pack(model_t *m, mm_weight_t *w, const float *src, int K, int N, int trans);
/* Packs n matrices as one product W (K, sum rows[i]): parts[i] is rows[i] x K ([out, in], as
 * Hugging Face stores q, k and v), their outputs side by side. As model_pack otherwise. */
int model_pack_parts(model_t *m, mm_weight_t *w, const float *const *parts, const int *rows, int n,
                     int K);
/* Counts a packed weight's kept bytes in m->weight_bytes (it was counted as F32). */
void model_count_packed(model_t *m, const mm_weight_t *w);
/* Ends an architecture's loading; model_load then converts the matrices that were not packed
 * (embeddings read by row), reports the last progress and unmaps the checkpoint when nothing
 * points into it any more. */
void model_load_done(model_t *m, const model_loader_t *ld);

/* The common checks of a batch against the reservation, the model and the pool. */
int model_check_batch(const model_t *m, const kv_cache_t *kv, const model_batch_t *b);
/* The attention view of a batch. */
attn_batch_t model_attn_batch(const model_batch_t *b);

/* Parts to split `rows` per-row jobs into (norms, embeddings, rotations): one per row, at most
 * four per compute thread. A part of one row still costs several times what handing it to a
 * spinning worker does; more parts than that only add hand-offs. */
static inline int model_row_parts(pool_t *pool, int rows)
{
    int most = pool_threads(pool) * 4;
    return rows < 1 ? 1 : rows > most ? most : rows;
}

#endif
