/* config.h - server settings: defaults < config file < environment (NANO_VLLM_*) < flags.
 *
 * A cfg_t is filled once on the main thread before any other thread starts and is read-only
 * afterwards. Every setting has one row in the table in config.c (flag, env var, default,
 * meaning), which also produces --help and the README table.
 *
 * Config file (--config FILE or NANO_VLLM_CONFIG): UTF-8 text, one "key = value" per line,
 * keys as cfg_print writes them (max_num_seqs; max-num-seqs also works); blank lines and
 * lines starting with '#' are ignored; an unquoted value ends at a '#' that starts it or
 * follows a blank (a comment); "..." keeps
 * '#' and blanks. A key may appear once. An empty value unsets api_key / served_model_name.
 * In the environment an empty NANO_VLLM_* variable counts as unset, an unknown NANO_VLLM_*
 * name is an error, and Kubernetes service links for a Service named nano-vllm
 * (NANO_VLLM_SERVICE_*, NANO_VLLM_PORT_<n>_*, NANO_VLLM_PORT=tcp://...) are skipped.
 */
#ifndef NANO_VLLM_CONFIG_H
#define NANO_VLLM_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum cfg_log_format { CFG_LOG_TEXT = 0, CFG_LOG_JSON };
/* Where a request's sampling defaults come from: the model's generation_config.json (auto,
 * as vLLM's --generation-config auto) or OpenAI's alone (none; vLLM calls it vllm). */
enum cfg_gen_config { CFG_GEN_AUTO = 0, CFG_GEN_NONE };
/* How weights or the KV cache are kept: the values of engine.h's enum eng_dtype, in its
 * order (config depends on nothing of ours; serve.c asserts that they agree). */
enum cfg_dtype {
    CFG_DTYPE_AUTO = 0,
    CFG_DTYPE_F32,
    CFG_DTYPE_F16,
    CFG_DTYPE_BF16,
    CFG_DTYPE_INT8W, /* int8 weights multiplied as F32 (weight-only) */
    CFG_DTYPE_BF16X3,
    CFG_DTYPE_INT8 /* W8A8: int8 weights times X quantized to int8 */
};

typedef struct cfg {
    char *model_dir;         /* owned; positional MODEL_DIR */
    char *host;              /* owned; "127.0.0.1" */
    int port;                /* 8000; 0 = any free port (logged) */
    int threads;             /* 0 = one per core */
    int max_num_seqs;        /* 64 */
    int max_num_batched_tokens; /* 512 */
    int max_prefill_tokens_decoding; /* 48; 0 = no cap beyond max_num_batched_tokens */
    size_t kv_cache_memory;  /* bytes; accepts 512M, 2G ... */
    int num_kv_blocks;       /* 0 = from kv_cache_memory */
    int block_size;          /* 16 */
    int max_model_len;       /* 0 = the model's n_positions */
    int weight_dtype;        /* enum cfg_dtype; auto */
    int kv_cache_dtype;      /* enum cfg_dtype: auto, f32 or f16; auto */
    char *kernel;            /* owned; "auto" | "generic" | "avx2" | "avx512" | "amx": the
                                engine takes the kernel by name (eng_params_t) */
    char *api_key;           /* owned or NULL = no key */
    char *served_model_name; /* owned or NULL = model directory's base name */
    char *chat_template;     /* owned or NULL = the model's own (a file name or the text) */
    int generation_config;   /* enum cfg_gen_config; auto */
    size_t max_body_bytes;   /* 1 MiB */
    int timeout_keep_alive;  /* seconds without traffic before a connection closes; 5 */
    int header_timeout;      /* seconds a connection has to send a request's headers; 10 */
    int max_connections;     /* open connections in all; 0 = as the open-file limit allows */
    int max_connections_per_ip; /* 0 = no limit */
    int max_waiting;         /* 256 */
    double shutdown_timeout; /* seconds, 30 */
    int log_format;          /* enum cfg_log_format */
    int no_ui;               /* 1 = no playground page at / */
    char *config_file;       /* owned or NULL */
} cfg_t;

/* Sets every field to its default. Allocates the default strings; -ENOMEM on failure. */
int cfg_init(cfg_t *c);
void cfg_free(cfg_t *c);

/* Applies, in order, the config file named by --config (or NANO_VLLM_CONFIG), the
 * environment (envp, NULL-terminated "NAME=value" strings) and the command-line flags
 * (argv[0] is the subcommand). A bare argument is MODEL_DIR. Flags are "--flag VALUE" or
 * "--flag=VALUE"; "--" ends them. Returns 0, 1 when --help or -h was asked (usage already
 * written to out, nothing applied), or -EINVAL with one line in err naming the setting,
 * where it came from and the bad value:
 *   "--port: 70000 is out of range (0-65535)"
 *   "NANO_VLLM_MAX_NUM_SEQS: 'abc' is not an integer"
 *   "nano-vllm.conf:3: unknown setting 'max_seqs'"
 * A config file that cannot be read gives -errno (-ENOENT, -EACCES, -EISDIR, ...) with
 * "--config FILE: cannot open: REASON"; -ENOMEM when a copy fails. On failure c keeps what
 * was applied so far and must still be freed with cfg_free. */
int cfg_load(cfg_t *c, int argc, char **argv, char **envp, FILE *out, char *err, size_t errlen);

/* Checks cross-field rules (required MODEL_DIR, ranges). 0 or -EINVAL with err. */
int cfg_validate(const cfg_t *c, char *err, size_t errlen);

/* Writes the effective settings, one "name = value" per line, in the config-file format (so
 * the output read back with --config gives the same settings), the API key masked. */
void cfg_print(const cfg_t *c, FILE *out);

/* Writes the usage of `nano-vllm COMMAND`: every setting with its flag, meaning, default and
 * environment variable. */
void cfg_print_help(FILE *out, const char *command);

/* Writes the settings table in Markdown (setting, flag, environment, default, meaning), as
 * the README has it between its config-table markers. */
void cfg_print_markdown(FILE *out);

#endif
