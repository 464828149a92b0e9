/* config.c - the settings table, and reading it: defaults, the config file, the environment,
 * command-line flags, validation. config_print.c writes the same rows out.
 *
 * Every setting is one row of cfg_opts[]; nothing else in the module names a setting, so a
 * new setting is one row (and a field in cfg_t). Main thread only, before other threads
 * start. Library rules: no printing except to the FILE the caller passes, no exit; errors
 * are one line in (err, errlen) naming the setting, where the value came from and the value.
 */
#include "config/config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_parse.h"
#include "config/config_table.h"

static const char *const log_formats[] = {"text", "json", NULL};
/* Indexed by enum cfg_dtype (kv_dtypes: its first three). */
static const char *const weight_dtypes[] = {"auto",  "f32",    "f16",  "bf16",
                                            "int8w", "bf16x3", "int8", NULL};
static const char *const kv_dtypes[] = {"auto", "f32", "f16", NULL};
static const char *const kernels[] = {"auto", "generic", "avx2", "avx512", "amx", NULL};
/* Indexed by enum cfg_gen_config. */
static const char *const gen_configs[] = {"auto", "none", NULL};

#define OFF(field) offsetof(cfg_t, field)
#define KIB 1024.0
#define GIB (1024.0 * 1024.0 * 1024.0)
#define TIB (1024.0 * 1024.0 * 1024.0 * 1024.0)

/* The one table. Ranges: what the engine and server can honour and a human could mean.
 * Laid out by hand (a row's fields grouped as they read), so clang-format leaves it. */
/* clang-format off */
const cfg_opt_t cfg_opts[] = {
    {"model_dir", "MODEL_DIR", "NANO_VLLM_MODEL_DIR", "DIR", CFG_T_STR, CFG_F_POSITIONAL | CFG_F_NULLABLE,
     OFF(model_dir), NULL, 0, 0, NULL,
     "Hugging Face GPT-2 directory (config.json, model.safetensors, vocab.json, merges.txt)"},
    {"config", "--config", "NANO_VLLM_CONFIG", "FILE", CFG_T_STR, CFG_F_NOFILE | CFG_F_NULLABLE,
     OFF(config_file), NULL, 0, 0, NULL,
     "settings file: one 'key = value' per line, # comments (see the README)"},
    {"host", "--host", "NANO_VLLM_HOST", "ADDR", CFG_T_STR, 0, OFF(host), "127.0.0.1", 0, 0, NULL,
     "address to listen on (0.0.0.0 for all interfaces)"},
    {"port", "--port", "NANO_VLLM_PORT", "N", CFG_T_INT, 0, OFF(port), "8000", 0, 65535, NULL,
     "TCP port; 0 = any free port (logged at start)"},
    {"threads", "--threads", "NANO_VLLM_THREADS", "N", CFG_T_INT, 0, OFF(threads), "0", 0, 1024,
     NULL, "compute threads for the model; 0 = one per core"},
    {"max_num_seqs", "--max-num-seqs", "NANO_VLLM_MAX_NUM_SEQS", "N", CFG_T_INT, 0,
     OFF(max_num_seqs), "64", 1, 65536, NULL, "most sequences in one scheduler step"},
    {"max_num_batched_tokens", "--max-num-batched-tokens", "NANO_VLLM_MAX_NUM_BATCHED_TOKENS",
     "N", CFG_T_INT, 0, OFF(max_num_batched_tokens), "512", 1, 1048576, NULL,
     "most tokens in one scheduler step (longer prompts are prefilled in chunks)"},
    {"max_prefill_tokens_decoding", "--max-prefill-tokens-decoding",
     "NANO_VLLM_MAX_PREFILL_TOKENS_DECODING", "N", CFG_T_INT, 0,
     OFF(max_prefill_tokens_decoding), "48", 0, 1048576, NULL,
     "N: the most prompt tokens a step that also decodes takes: fewer the more sequences "
     "decode (down to N/4), more while prompts queue up, so new prompts neither stall "
     "running streams nor queue without end; 0 = only max_num_batched_tokens"},
    {"kv_cache_memory", "--kv-cache-memory", "NANO_VLLM_KV_CACHE_MEMORY", "SIZE", CFG_T_SIZE, 0,
     OFF(kv_cache_memory), "1G", KIB, TIB, NULL,
     "memory for the KV-cache block pool, e.g. 512M, 2G"},
    {"num_kv_blocks", "--num-kv-blocks", "NANO_VLLM_NUM_KV_BLOCKS", "N", CFG_T_INT, 0,
     OFF(num_kv_blocks), "0", 0, 16777216, NULL,
     "KV-cache blocks; overrides kv_cache_memory when > 0"},
    {"block_size", "--block-size", "NANO_VLLM_BLOCK_SIZE", "N", CFG_T_INT, 0, OFF(block_size), "16",
     1, 256, NULL, "tokens per KV-cache block"},
    {"max_model_len", "--max-model-len", "NANO_VLLM_MAX_MODEL_LEN", "N", CFG_T_INT, 0,
     OFF(max_model_len), "0", 0, 1048576, NULL,
     "longest prompt + completion in tokens; 0 = the model's n_positions"},
    {"weight_dtype", "--weight-dtype", "NANO_VLLM_WEIGHT_DTYPE",
     "auto|f32|f16|bf16|int8|int8w|bf16x3", CFG_T_ENUM, 0, OFF(weight_dtype), "auto", 0, 0,
     weight_dtypes,
     "how weights are kept in memory; auto = as the checkpoint stores them; int8 = one byte "
     "per weight with a scale per output channel, multiplied by activations quantized to int8 "
     "(W8A8: faster in batches); int8w = the same weights multiplied as F32 (weight-only, "
     "more accurate where activations have outliers); bf16x3 = each weight as two BF16 (hi + lo) "
     "multiplied on AMX as three BF16 products: F32's memory, nearly F32's accuracy, faster "
     "in batches (f32 where the kernel is not AMX)"},
    {"kv_cache_dtype", "--kv-cache-dtype", "NANO_VLLM_KV_CACHE_DTYPE", "auto|f32|f16", CFG_T_ENUM,
     0, OFF(kv_cache_dtype), "auto", 0, 0, kv_dtypes,
     "how K and V are kept in the KV cache; f16 halves its memory and the attention's memory "
     "traffic; auto = f16 with 16-bit or int8 weights, f32 with f32 or bf16x3 weights"},
    {"kernel", "--kernel", "NANO_VLLM_KERNEL", "auto|generic|avx2|avx512|amx", CFG_T_STR, 0,
     OFF(kernel), "auto", 0, 0, kernels,
     "matrix kernel; auto = the fastest this CPU runs (amx, avx512, avx2, then the portable "
     "generic); one this CPU cannot run stops the start"},
    {"api_key", "--api-key", "NANO_VLLM_API_KEY", "KEY", CFG_T_STR, CFG_F_NULLABLE | CFG_F_SECRET,
     OFF(api_key), NULL, 0, 0, NULL,
     "require 'Authorization: Bearer KEY' on every endpoint but /health and /metrics; "
     "unset = no key"},
    {"served_model_name", "--served-model-name", "NANO_VLLM_SERVED_MODEL_NAME", "NAME", CFG_T_STR,
     CFG_F_NULLABLE, OFF(served_model_name), NULL, 0, 0, NULL,
     "model name in the API; unset = the base name of MODEL_DIR"},
    {"chat_template", "--chat-template", "NANO_VLLM_CHAT_TEMPLATE", "FILE|STRING", CFG_T_STR,
     CFG_F_NULLABLE, OFF(chat_template), NULL, 0, 0, NULL,
     "the Jinja chat template for /v1/chat/completions: a file, or the template itself when "
     "no such file exists (a value holding '{' is always the template); overrides the "
     "model's own; unset = tokenizer_config.json's chat_template or chat_template.jinja"},
    {"generation_config", "--generation-config", "NANO_VLLM_GENERATION_CONFIG", "auto|none",
     CFG_T_ENUM, 0, OFF(generation_config), "auto", 0, 0, gen_configs,
     "auto = the model's generation_config.json sets the defaults of temperature, top_p, "
     "top_k, min_p, repetition_penalty and max_tokens (max_new_tokens) for requests that "
     "leave them out, as vLLM's --generation-config auto (do_sample false: greedy); none = "
     "OpenAI's defaults only (vLLM's --generation-config vllm)"},
    {"max_body_bytes", "--max-body-bytes", "NANO_VLLM_MAX_BODY_BYTES", "SIZE", CFG_T_SIZE, 0,
     OFF(max_body_bytes), "1M", KIB, GIB, NULL,
     "largest request body; bigger ones get 413"},
    {"timeout_keep_alive", "--timeout-keep-alive", "NANO_VLLM_TIMEOUT_KEEP_ALIVE", "SECONDS",
     CFG_T_INT, 0, OFF(timeout_keep_alive), "5", 1, 86400, NULL,
     "close a connection after this long without traffic: idle between requests, or a client "
     "that stops sending mid-request (as uvicorn's --timeout-keep-alive)"},
    {"header_timeout", "--header-timeout", "NANO_VLLM_HEADER_TIMEOUT", "SECONDS", CFG_T_INT, 0,
     OFF(header_timeout), "10", 1, 3600, NULL,
     "a connection must send a request's complete headers within this long of opening or of "
     "its previous response, however slowly it trickles them, or it is closed"},
    {"max_connections", "--max-connections", "NANO_VLLM_MAX_CONNECTIONS", "N", CFG_T_INT, 0,
     OFF(max_connections), "0", 0, 1048576, NULL,
     "open client connections in all; more wait in the listen backlog; 0 = as many as the "
     "open-file limit allows"},
    {"max_connections_per_ip", "--max-connections-per-ip", "NANO_VLLM_MAX_CONNECTIONS_PER_IP",
     "N", CFG_T_INT, 0, OFF(max_connections_per_ip), "0", 0, 1048576, NULL,
     "open connections from one client address; more are closed at once; 0 = no limit"},
    {"max_waiting", "--max-waiting", "NANO_VLLM_MAX_WAITING", "N", CFG_T_INT, 0, OFF(max_waiting),
     "256", 1, 1048576, NULL, "requests allowed to wait for a slot; more get 429"},
    {"shutdown_timeout", "--shutdown-timeout", "NANO_VLLM_SHUTDOWN_TIMEOUT", "SECONDS", CFG_T_DOUBLE,
     0, OFF(shutdown_timeout), "30", 0, 86400, NULL,
     "on SIGINT/SIGTERM, how long in-flight requests may finish before they are aborted"},
    {"log_format", "--log-format", "NANO_VLLM_LOG_FORMAT", "text|json", CFG_T_ENUM, 0,
     OFF(log_format), "text", 0, 0, log_formats, "log lines as plain text or one JSON object"},
    {"no_ui", "--no-ui", "NANO_VLLM_NO_UI", NULL, CFG_T_BOOL, 0, OFF(no_ui), "false", 0, 0, NULL,
     "do not serve the playground page at / (then / is a 404); in a file or the environment: "
     "true or false"},
};
/* clang-format on */

const size_t cfg_n_opts = sizeof(cfg_opts) / sizeof(cfg_opts[0]);
#define N_OPTS (sizeof(cfg_opts) / sizeof(cfg_opts[0]))

static const cfg_opt_t *opt_by_key(const char *key)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(cfg_opts[i].key, key) == 0)
            return &cfg_opts[i];
    return NULL;
}

static void *field(cfg_t *c, const cfg_opt_t *o)
{
    return (char *)c + o->offset;
}

static const void *cfield(const cfg_t *c, const cfg_opt_t *o)
{
    return (const char *)c + o->offset;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* Writes a range bound as it would be typed: 1M rather than 1048576. */
static void format_number(const cfg_opt_t *o, double v, char *buf, size_t n)
{
    if (o->type == CFG_T_SIZE)
        cfg_format_size((size_t)v, buf, n);
    else
        snprintf(buf, n, "%.15g", v);
}

static int range_error(const cfg_opt_t *o, const char *where, const char *val, char *err,
                       size_t errlen)
{
    char lo[32], hi[32];
    format_number(o, o->min, lo, sizeof(lo));
    format_number(o, o->max, hi, sizeof(hi));
    return fail(err, errlen, "%s: %s is out of range (%s-%s)", where, val, lo, hi);
}

static int choice_index(const cfg_opt_t *o, const char *val)
{
    for (int i = 0; o->choices[i]; i++)
        if (strcmp(o->choices[i], val) == 0)
            return i;
    return -1;
}

int cfg_opt_n_choices(const cfg_opt_t *o)
{
    int n = 0;
    while (o->choices[n])
        n++;
    return n;
}

static int choice_error(const cfg_opt_t *o, const char *where, const char *val, char *err,
                        size_t errlen)
{
    char list[128] = "";
    for (int i = 0; o->choices[i]; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", o->choices[i]);
    }
    return fail(err, errlen, "%s: '%s' is not one of %s", where, val, list);
}

/* Parses val for setting o and stores it. where names the source ("--port",
 * "NANO_VLLM_PORT", "file.conf:3: port"); it starts every error line. */
static int set_value(cfg_t *c, const cfg_opt_t *o, const char *val, const char *where,
                     char *err, size_t errlen)
{
    switch (o->type) {
    case CFG_T_STR: {
        char **dst = field(c, o);
        if (val[0] == '\0' && !(o->flags & CFG_F_NULLABLE))
            return fail(err, errlen, "%s: must not be empty", where);
        if (o->choices && choice_index(o, val) < 0)
            return choice_error(o, where, val, err, errlen);
        char *copy = NULL;
        if (val[0] != '\0' && !(copy = strdup(val))) {
            fail(err, errlen, "%s: out of memory", where);
            return -ENOMEM;
        }
        free(*dst);
        *dst = copy;
        return 0;
    }
    case CFG_T_INT: {
        long long v;
        int rc = cfg_parse_int(val, &v);
        if (rc == -EINVAL)
            return fail(err, errlen, "%s: '%s' is not an integer", where, val);
        if (rc == -ERANGE || v < o->min || v > o->max)
            return range_error(o, where, val, err, errlen);
        *(int *)field(c, o) = (int)v;
        return 0;
    }
    case CFG_T_SIZE: {
        size_t v;
        int rc = cfg_parse_size(val, &v);
        if (rc == -EINVAL)
            return fail(err, errlen,
                        "%s: '%s' is not a size (bytes, or a number with K, M, G or T)", where,
                        val);
        if (rc == -ERANGE || (double)v < o->min || (double)v > o->max)
            return range_error(o, where, val, err, errlen);
        *(size_t *)field(c, o) = v;
        return 0;
    }
    case CFG_T_DOUBLE: {
        double v;
        if (cfg_parse_double(val, &v) < 0)
            return fail(err, errlen, "%s: '%s' is not a number", where, val);
        if (!(v >= o->min && v <= o->max))
            return range_error(o, where, val, err, errlen);
        *(double *)field(c, o) = v;
        return 0;
    }
    case CFG_T_ENUM: {
        int i = choice_index(o, val);
        if (i < 0)
            return choice_error(o, where, val, err, errlen);
        *(int *)field(c, o) = i;
        return 0;
    }
    case CFG_T_BOOL: {
        int b;
        if (cfg_parse_bool(val, &b) < 0)
            return fail(err, errlen, "%s: '%s' is not true or false (also yes/no, on/off, 1/0)",
                        where, val);
        *(int *)field(c, o) = b;
        return 0;
    }
    }
    return fail(err, errlen, "%s: setting of unknown type", where);
}

int cfg_init(cfg_t *c)
{
    char err[256];
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < N_OPTS; i++) {
        const cfg_opt_t *o = &cfg_opts[i];
        if (!o->def)
            continue;
        int rc = set_value(c, o, o->def, o->key, err, sizeof(err));
        if (rc < 0) {
            /* The defaults are ours; only strdup can fail here. */
            cfg_free(c);
            return rc == -EINVAL ? -EINVAL : -ENOMEM;
        }
    }
    return 0;
}

void cfg_free(cfg_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < N_OPTS; i++) {
        if (cfg_opts[i].type == CFG_T_STR) {
            char **s = field(c, &cfg_opts[i]);
            free(*s);
            *s = NULL;
        }
    }
}

/* ---- sources ----------------------------------------------------------------------------- */

/* The setting arg ("--flag" or "--flag=value") names; *val is the inline value or NULL. */
static const cfg_opt_t *match_flag(const char *arg, const char **val)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const cfg_opt_t *o = &cfg_opts[i];
        if (o->flags & CFG_F_POSITIONAL)
            continue;
        size_t n = strlen(o->flag);
        if (strncmp(arg, o->flag, n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
            *val = arg[n] == '=' ? arg + n + 1 : NULL;
            return o;
        }
    }
    return NULL;
}

static int is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* Walks argv. With apply == 0 only finds the --config value (syntax errors are left to the
 * applying pass, so they are reported once and in order). */
static int scan_args(cfg_t *c, int argc, char **argv, int apply, const char **config,
                     char *err, size_t errlen)
{
    int only_positional = 0;
    const cfg_opt_t *pos = opt_by_key("model_dir");
    int have_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (!apply)
                continue;
            if (have_pos)
                return fail(err, errlen, "unexpected argument '%s' (MODEL_DIR is already '%s')",
                            arg, c->model_dir ? c->model_dir : "");
            have_pos = 1;
            int rc = set_value(c, pos, arg, pos->flag, err, errlen);
            if (rc < 0)
                return rc;
            continue;
        }
        const char *val;
        const cfg_opt_t *o = match_flag(arg, &val);
        if (!o) {
            if (!apply)
                continue;
            return fail(err, errlen, "unknown option '%s' (see --help)", arg);
        }
        if (!val && o->type == CFG_T_BOOL) {
            val = "true"; /* a bare "--no-ui" sets it; the next argument is not its value */
        } else if (!val) {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                if (!apply)
                    continue;
                return fail(err, errlen, "%s: missing value", o->flag);
            }
            val = argv[++i];
        }
        if (!apply) {
            if (strcmp(o->key, "config") == 0)
                *config = val;
            continue;
        }
        int rc = set_value(c, o, val, o->flag, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Kubernetes gives every pod variables for each Service in its namespace ("service links"):
 * a Service named nano-vllm yields NANO_VLLM_SERVICE_HOST, NANO_VLLM_SERVICE_PORT[_NAME],
 * NANO_VLLM_PORT=tcp://10.0.0.1:8000 and NANO_VLLM_PORT_8000_TCP[_PROTO|_PORT|_ADDR].
 * They are not settings and must not stop the server, so they are skipped; any other
 * unknown NANO_VLLM_* name is an error, to catch typos. */
static int is_service_link(const char *entry)
{
    static const char *const schemes[] = {"tcp://", "udp://", "sctp://"};
    if (strncmp(entry, "NANO_VLLM_SERVICE_", 18) == 0)
        return 1;
    if (strncmp(entry, "NANO_VLLM_PORT_", 15) == 0 && entry[15] >= '0' && entry[15] <= '9')
        return 1;
    if (strncmp(entry, "NANO_VLLM_PORT=", 15) == 0)
        for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
            if (strncmp(entry + 15, schemes[i], strlen(schemes[i])) == 0)
                return 1;
    return 0;
}

static int apply_env(cfg_t *c, char **envp, char *err, size_t errlen)
{
    static const char prefix[] = "NANO_VLLM_";
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, sizeof(prefix) - 1) != 0 || is_service_link(*e))
            continue;
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        const cfg_opt_t *o = NULL;
        for (size_t i = 0; i < N_OPTS && !o; i++)
            if (strlen(cfg_opts[i].env) == n && strncmp(cfg_opts[i].env, *e, n) == 0)
                o = &cfg_opts[i];
        if (!o)
            return fail(err, errlen, "%.*s: unknown setting (see --help)", (int)(n > 64 ? 64 : n),
                        *e);
        /* Unset and empty are the same in the environment (containers often pass VAR=). */
        if (!eq || eq[1] == '\0' || strcmp(o->key, "config") == 0)
            continue;
        int rc = set_value(c, o, eq + 1, o->env, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static const char *env_value(char **envp, const char *name)
{
    size_t n = strlen(name);
    const char *v = NULL;
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            v = *e + n + 1; /* the last one wins, as for every other variable */
    return v && *v ? v : NULL;
}

typedef struct file_state {
    cfg_t *c;
    int line_of[N_OPTS]; /* where each setting was set in the file; 0 = not yet */
} file_state_t;

/* Called by the file reader for every "key = value" line. */
static int file_setting(void *arg, const char *path, int line, const char *key,
                        const char *val, char *err, size_t errlen)
{
    file_state_t *fs = arg;
    char name[64];
    size_t n = strlen(key);
    if (n >= sizeof(name))
        return fail(err, errlen, "%s:%d: unknown setting '%.40s...'", path, line, key);
    /* Flag spelling (max-num-seqs) is accepted too. */
    for (size_t i = 0; i <= n; i++)
        name[i] = key[i] == '-' ? '_' : key[i];
    const cfg_opt_t *o = opt_by_key(name);
    if (!o || (o->flags & CFG_F_NOFILE))
        return fail(err, errlen, "%s:%d: unknown setting '%s'", path, line, key);
    size_t idx = (size_t)(o - cfg_opts);
    if (fs->line_of[idx])
        return fail(err, errlen, "%s:%d: %s is set again (first on line %d)", path, line, o->key,
                    fs->line_of[idx]);
    fs->line_of[idx] = line;
    char where[512];
    snprintf(where, sizeof(where), "%s:%d: %s", path, line, o->key);
    return set_value(fs->c, o, val, where, err, errlen);
}

/* Values quoted in an error come from outside and may hold control characters; the message
 * must stay one printable line for the log. */
static int one_line(int rc, char *err, size_t errlen)
{
    for (size_t i = 0; err && i < errlen && err[i]; i++)
        if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
            err[i] = '?';
    return rc;
}

static int load_sources(cfg_t *c, int argc, char **argv, char **envp, FILE *out, char *err,
                        size_t errlen)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (is_help(argv[i])) {
            if (out)
                cfg_print_help(out, argc > 0 ? argv[0] : "serve");
            return 1;
        }
    }

    /* The file named by --config, else by NANO_VLLM_CONFIG. */
    const char *config = NULL;
    scan_args(c, argc, argv, 0, &config, err, errlen);
    const char *source = "--config";
    if (!config) {
        config = env_value(envp, "NANO_VLLM_CONFIG");
        source = "NANO_VLLM_CONFIG";
    }
    if (config) {
        if (config[0] == '\0')
            return fail(err, errlen, "%s: must not be empty", source);
        int rc = set_value(c, opt_by_key("config"), config, source, err, errlen);
        if (rc < 0)
            return rc;
        file_state_t fs = {.c = c};
        rc = cfg_read_file(c->config_file, source, file_setting, &fs, err, errlen);
        if (rc < 0)
            return rc;
    }

    int rc = apply_env(c, envp, err, errlen);
    if (rc < 0)
        return rc;
    return scan_args(c, argc, argv, 1, NULL, err, errlen);
}

int cfg_load(cfg_t *c, int argc, char **argv, char **envp, FILE *out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    return one_line(load_sources(c, argc, argv, envp, out, err, errlen), err, errlen);
}

static int validate(const cfg_t *c, char *err, size_t errlen)
{
    if (!c->model_dir)
        return fail(err, errlen, "MODEL_DIR is required (nano-vllm serve MODEL_DIR)");
    for (size_t i = 0; i < N_OPTS; i++) {
        const cfg_opt_t *o = &cfg_opts[i];
        double v;
        if (o->type == CFG_T_INT)
            v = *(const int *)cfield(c, o);
        else if (o->type == CFG_T_SIZE)
            v = (double)*(const size_t *)cfield(c, o);
        else if (o->type == CFG_T_DOUBLE)
            v = *(const double *)cfield(c, o);
        else if (o->type == CFG_T_ENUM) {
            int k = *(const int *)cfield(c, o), n = 0;
            while (o->choices[n])
                n++;
            if (k < 0 || k >= n)
                return fail(err, errlen, "%s: value %d is not a known choice", o->key, k);
            continue;
        } else if (o->type == CFG_T_BOOL) {
            int b = *(const int *)cfield(c, o);
            if (b != 0 && b != 1)
                return fail(err, errlen, "%s: value %d is not 0 or 1", o->key, b);
            continue;
        } else {
            const char *s = *(char *const *)cfield(c, o);
            if (!s && !(o->flags & CFG_F_NULLABLE))
                return fail(err, errlen, "%s: must be set", o->key);
            if (s && o->choices && choice_index(o, s) < 0)
                return choice_error(o, o->key, s, err, errlen);
            continue;
        }
        if (!(v >= o->min && v <= o->max)) {
            char val[32];
            format_number(o, v, val, sizeof(val));
            return range_error(o, o->key, val, err, errlen);
        }
    }
    /* Every running sequence needs a token of the step budget to decode (vLLM's rule). */
    if (c->max_num_batched_tokens < c->max_num_seqs)
        return fail(err, errlen,
                    "max_num_batched_tokens %d is less than max_num_seqs %d: every running "
                    "sequence needs one token of a step",
                    c->max_num_batched_tokens, c->max_num_seqs);
    return 0;
}

int cfg_validate(const cfg_t *c, char *err, size_t errlen)
{
    return one_line(validate(c, err, errlen), err, errlen);
}
