/* test_config.c - suite 'config': defaults, precedence (defaults < file < environment <
 * flags), every error message, --help, cfg_print round trip, the README table.
 *
 *   test_config README.md    run the suite; the README's config table must match the code
 *   test_config --markdown   print the table for pasting into the README
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/config_parse.h"
#include "tests/check.h"

static char tmpdir[256];

/* Writes a file in the test's temp dir and returns its path (static buffer per call site
 * is not needed: callers copy or use it at once). */
static const char *write_file(const char *name, const char *text, size_t len)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(text, 1, len, f);
    fclose(f);
    return path;
}

static const char *write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

/* Runs cfg_load on a fresh cfg with argv (NULL-terminated, after "serve") and envp. */
static int load(cfg_t *c, char *err, const char *const *args, const char *const *env)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "serve";
    for (int i = 0; args && args[i]; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    char *envp[64];
    int n = 0;
    for (int i = 0; env && env[i]; i++)
        envp[n++] = (char *)env[i];
    envp[n] = NULL;
    CHECK_INT_EQ(cfg_init(c), 0);
    err[0] = '\0';
    return cfg_load(c, argc, argv, envp, NULL, err, 256);
}

/* Expects cfg_load to fail with exactly msg. */
static void expect_error(int line, const char *msg, const char *const *args,
                         const char *const *env)
{
    cfg_t c;
    char err[256];
    int rc = load(&c, err, args, env);
    if (rc >= 0 || strcmp(err, msg) != 0) {
        fprintf(stderr, "test_config.c:%d: want error '%s'\n  got rc %d, '%s'\n", line, msg, rc,
                err);
        check_failed_count++;
    }
    cfg_free(&c);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NOENV ((const char *const *)NULL)
#define NOARGS ((const char *const *)NULL)

static void test_defaults(void)
{
    cfg_t c;
    char err[256];
    CHECK_INT_EQ(cfg_init(&c), 0);
    CHECK(c.model_dir == NULL);
    CHECK_STR_EQ(c.host, "127.0.0.1");
    CHECK_INT_EQ(c.port, 8000);
    CHECK_INT_EQ(c.threads, 0);
    CHECK_INT_EQ(c.max_num_seqs, 64);
    CHECK_INT_EQ(c.max_num_batched_tokens, 512);
    CHECK_INT_EQ(c.kv_cache_memory, 1024LL * 1024 * 1024);
    CHECK_INT_EQ(c.num_kv_blocks, 0);
    CHECK_INT_EQ(c.block_size, 16);
    CHECK_INT_EQ(c.max_model_len, 0);
    CHECK_INT_EQ(c.weight_dtype, CFG_DTYPE_AUTO);
    CHECK_INT_EQ(c.kv_cache_dtype, CFG_DTYPE_AUTO);
    CHECK(c.api_key == NULL);
    CHECK(c.served_model_name == NULL);
    CHECK_INT_EQ(c.max_body_bytes, 1024 * 1024);
    CHECK_INT_EQ(c.max_waiting, 256);
    CHECK(c.shutdown_timeout == 30.0);
    CHECK_INT_EQ(c.timeout_keep_alive, 5);
    CHECK_INT_EQ(c.header_timeout, 10);
    CHECK_INT_EQ(c.max_connections, 0);
    CHECK_INT_EQ(c.max_connections_per_ip, 0);
    CHECK_INT_EQ(c.log_format, CFG_LOG_TEXT);
    CHECK_INT_EQ(c.no_ui, 0);
    CHECK(c.config_file == NULL);

    CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "MODEL_DIR is required (nano-vllm serve MODEL_DIR)");
    cfg_free(&c);
    cfg_free(&c); /* twice is safe */
    cfg_free(NULL);

    CHECK_INT_EQ(load(&c, err, ARGS("models/gpt2"), NOENV), 0);
    CHECK_STR_EQ(c.model_dir, "models/gpt2");
    CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), 0);
    cfg_free(&c);
}

static void test_precedence(void)
{
    cfg_t c;
    char err[256];
    char conf[512];
    snprintf(conf, sizeof(conf), "%s",
             write_text("prec.conf", "# a comment\n"
                                     "port = 1111\n"
                                     "max_num_seqs = 11\n"
                                     "max-num-batched-tokens = 1000   # dash spelling\n"
                                     "host = 10.0.0.1\n"
                                     "model_dir = from-file\n"
                                     "\n"
                                     "   # indented comment\n"
                                     "log_format = json\n"));
    char flag_conf[600], env_conf[600];
    snprintf(flag_conf, sizeof(flag_conf), "--config=%s", conf);
    snprintf(env_conf, sizeof(env_conf), "NANO_VLLM_CONFIG=%s", conf);

    /* File only. */
    CHECK_INT_EQ(load(&c, err, ARGS("--config", conf), NOENV), 0);
    CHECK_STR_EQ(err, "");
    CHECK_INT_EQ(c.port, 1111);
    CHECK_INT_EQ(c.max_num_seqs, 11);
    CHECK_INT_EQ(c.max_num_batched_tokens, 1000);
    CHECK_STR_EQ(c.host, "10.0.0.1");
    CHECK_STR_EQ(c.model_dir, "from-file");
    CHECK_INT_EQ(c.log_format, CFG_LOG_JSON);
    CHECK_STR_EQ(c.config_file, conf);
    CHECK_INT_EQ(c.block_size, 16); /* untouched: default */
    cfg_free(&c);

    /* The file via the environment; the environment beats the file. */
    CHECK_INT_EQ(load(&c, err, NOARGS,
                   ARGS(env_conf, "NANO_VLLM_PORT=2222", "NANO_VLLM_MODEL_DIR=from-env",
                        "PATH=/bin", "NANO_VLLM_BLOCK_SIZE=32")),
              0);
    CHECK_STR_EQ(err, "");
    CHECK_INT_EQ(c.port, 2222);
    CHECK_INT_EQ(c.max_num_seqs, 11);
    CHECK_STR_EQ(c.model_dir, "from-env");
    CHECK_INT_EQ(c.block_size, 32);
    cfg_free(&c);

    /* Flags beat both; the --config flag beats NANO_VLLM_CONFIG. */
    const char *other = write_text("other.conf", "max_num_seqs = 22\n");
    char other_flag[600];
    snprintf(other_flag, sizeof(other_flag), "--config=%s", other);
    CHECK_INT_EQ(load(&c, err, ARGS(other_flag, "--port", "3333", "from-args", "--block-size=64"),
                   ARGS(env_conf, "NANO_VLLM_PORT=2222", "NANO_VLLM_MODEL_DIR=from-env",
                        "NANO_VLLM_BLOCK_SIZE=32")),
              0);
    CHECK_STR_EQ(err, "");
    CHECK_INT_EQ(c.port, 3333);
    CHECK_INT_EQ(c.max_num_seqs, 22);
    CHECK_INT_EQ(c.max_num_batched_tokens, 512); /* conf was not read */
    CHECK_STR_EQ(c.model_dir, "from-args");
    CHECK_INT_EQ(c.block_size, 64);
    cfg_free(&c);

    /* Later flags win; empty environment values are unset; "--" ends the flags. */
    CHECK_INT_EQ(load(&c, err, ARGS("--port", "1", "--port", "2", "--", "--weird-dir"),
                   ARGS("NANO_VLLM_HOST=", "NANO_VLLM_PORT=5")),
              0);
    CHECK_INT_EQ(c.port, 2);
    CHECK_STR_EQ(c.host, "127.0.0.1");
    CHECK_STR_EQ(c.model_dir, "--weird-dir");
    cfg_free(&c);

    /* Kubernetes service links for a Service named nano-vllm are not settings. */
    CHECK_INT_EQ(load(&c, err, NOARGS,
                   ARGS("NANO_VLLM_PORT=tcp://10.0.0.11:8000", "NANO_VLLM_SERVICE_HOST=10.0.0.11",
                        "NANO_VLLM_SERVICE_PORT=8000", "NANO_VLLM_SERVICE_PORT_HTTP=8000",
                        "NANO_VLLM_PORT_8000_TCP=tcp://10.0.0.11:8000",
                        "NANO_VLLM_PORT_8000_TCP_PROTO=tcp", "NANO_VLLM_PORT_8000_TCP_PORT=8000",
                        "NANO_VLLM_PORT_8000_TCP_ADDR=10.0.0.11")),
              0);
    CHECK_STR_EQ(err, "");
    CHECK_INT_EQ(c.port, 8000);
    cfg_free(&c);
    /* The matrix kernel is a setting like the others: the flag over the environment. */
    CHECK_INT_EQ(load(&c, err, ARGS("m"), ARGS("NANO_VLLM_KERNEL=avx512")), 0);
    CHECK_STR_EQ(err, "");
    CHECK_STR_EQ(c.kernel, "avx512");
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m", "--kernel", "generic"), ARGS("NANO_VLLM_KERNEL=avx512")),
                 0);
    CHECK_STR_EQ(c.kernel, "generic");
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m"), NOARGS), 0);
    CHECK_STR_EQ(c.kernel, "auto");
    cfg_free(&c);

    /* Every setting can be given each way. */
    CHECK_INT_EQ(load(&c, err,
                   ARGS("m", "--host", "::1", "--threads", "3", "--kv-cache-memory", "1.5G",
                        "--num-kv-blocks", "100", "--max-model-len", "128", "--weight-dtype",
                        "bf16", "--api-key", "sk-test", "--served-model-name", "tiny",
                        "--max-body-bytes", "64k", "--max-waiting", "7", "--shutdown-timeout",
                        "2.5", "--log-format", "json"),
                   NOENV),
              0);
    CHECK_STR_EQ(err, "");
    CHECK_STR_EQ(c.host, "::1");
    CHECK_INT_EQ(c.threads, 3);
    CHECK_INT_EQ(c.kv_cache_memory, 1536LL * 1024 * 1024);
    CHECK_INT_EQ(c.num_kv_blocks, 100);
    CHECK_INT_EQ(c.max_model_len, 128);
    CHECK_INT_EQ(c.weight_dtype, CFG_DTYPE_BF16);
    CHECK_STR_EQ(c.api_key, "sk-test");
    CHECK_STR_EQ(c.served_model_name, "tiny");
    CHECK_INT_EQ(c.max_body_bytes, 65536);
    CHECK_INT_EQ(c.max_waiting, 7);
    CHECK(c.shutdown_timeout == 2.5);
    CHECK_INT_EQ(c.log_format, CFG_LOG_JSON);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m"), ARGS("NANO_VLLM_WEIGHT_DTYPE=int8")), 0);
    CHECK_INT_EQ(c.weight_dtype, CFG_DTYPE_INT8);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m", "--weight-dtype", "int8w"), NOENV), 0);
    CHECK_INT_EQ(c.weight_dtype, CFG_DTYPE_INT8W);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m", "--weight-dtype", "bf16x3"), NOENV), 0);
    CHECK_INT_EQ(c.weight_dtype, CFG_DTYPE_BF16X3);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m"), ARGS("NANO_VLLM_WEIGHT_DTYPE=bf16x3")), 0);
    CHECK_INT_EQ(c.weight_dtype, CFG_DTYPE_BF16X3);
    cfg_free(&c);

    /* The connection settings, by flag and by environment. */
    CHECK_INT_EQ(load(&c, err,
                      ARGS("m", "--timeout-keep-alive", "75", "--header-timeout=3",
                           "--max-connections", "200"),
                      ARGS("NANO_VLLM_MAX_CONNECTIONS_PER_IP=8", "NANO_VLLM_HEADER_TIMEOUT=4")),
                 0);
    CHECK_STR_EQ(err, "");
    CHECK_INT_EQ(c.timeout_keep_alive, 75);
    CHECK_INT_EQ(c.header_timeout, 3); /* the flag beats the environment */
    CHECK_INT_EQ(c.max_connections, 200);
    CHECK_INT_EQ(c.max_connections_per_ip, 8);
    cfg_free(&c);

    /* An empty file value unsets a nullable string set by the default; quotes keep '#'. */
    const char *q = write_text("quote.conf", "\xEF\xBB\xBFserved_model_name =\r\n"
                                             "api_key = \"a #b \"  # trailing comment\r\n"
                                             "host = h#x\n");
    char qflag[600];
    snprintf(qflag, sizeof(qflag), "--config=%s", q);
    CHECK_INT_EQ(load(&c, err, ARGS(qflag, "--served-model-name", "x"), NOENV), 0);
    CHECK_STR_EQ(err, "");
    CHECK_STR_EQ(c.served_model_name, "x");
    CHECK_STR_EQ(c.api_key, "a #b ");
    CHECK_STR_EQ(c.host, "h#x");
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS(qflag), ARGS("NANO_VLLM_SERVED_MODEL_NAME=envname")), 0);
    CHECK_STR_EQ(c.served_model_name, "envname");
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS(qflag), NOENV), 0);
    CHECK(c.served_model_name == NULL);
    cfg_free(&c);

    /* A switch: "--no-ui" alone sets it and takes no value, so MODEL_DIR may follow it;
     * "--no-ui=false" clears it; the file and the environment spell it true or false. */
    CHECK_INT_EQ(load(&c, err, ARGS("--no-ui", "m"), NOENV), 0);
    CHECK_STR_EQ(err, "");
    CHECK_INT_EQ(c.no_ui, 1);
    CHECK_STR_EQ(c.model_dir, "m");
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m", "--no-ui=false"), ARGS("NANO_VLLM_NO_UI=1")), 0);
    CHECK_INT_EQ(c.no_ui, 0);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m"), ARGS("NANO_VLLM_NO_UI=yes")), 0);
    CHECK_INT_EQ(c.no_ui, 1);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m"), ARGS("NANO_VLLM_NO_UI=")), 0); /* empty = unset */
    CHECK_INT_EQ(c.no_ui, 0);
    cfg_free(&c);
    const char *nu = write_text("noui.conf", "no_ui = true\n");
    char nuflag[600];
    snprintf(nuflag, sizeof(nuflag), "--config=%s", nu);
    CHECK_INT_EQ(load(&c, err, ARGS(nuflag, "m"), NOENV), 0);
    CHECK_INT_EQ(c.no_ui, 1);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS(nuflag, "m"), ARGS("NANO_VLLM_NO_UI=off")), 0);
    CHECK_INT_EQ(c.no_ui, 0); /* the environment beats the file */
    cfg_free(&c);

    /* The chat template: unset by default, a flag beats the environment, either a file name
     * or the template text itself. */
    CHECK_INT_EQ(load(&c, err, ARGS("m"), NOENV), 0);
    CHECK(c.chat_template == NULL);
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m", "--chat-template", "{{ messages[0].content }}"),
                      ARGS("NANO_VLLM_CHAT_TEMPLATE=t.jinja")),
                 0);
    CHECK_STR_EQ(c.chat_template, "{{ messages[0].content }}");
    cfg_free(&c);
    CHECK_INT_EQ(load(&c, err, ARGS("m"), ARGS("NANO_VLLM_CHAT_TEMPLATE=t.jinja")), 0);
    CHECK_STR_EQ(c.chat_template, "t.jinja");
    cfg_free(&c);
}

static void test_value_errors(void)
{
    expect_error(__LINE__, "--no-ui: 'maybe' is not true or false (also yes/no, on/off, 1/0)",
                 ARGS("m", "--no-ui=maybe"), NOENV);
    expect_error(__LINE__, "NANO_VLLM_NO_UI: '2' is not true or false (also yes/no, on/off, 1/0)",
                 ARGS("m"), ARGS("NANO_VLLM_NO_UI=2"));
    /* Flags: each type's messages. */
    expect_error(__LINE__, "--port: 70000 is out of range (0-65535)", ARGS("--port", "70000"),
                 NOENV);
    expect_error(__LINE__, "--port: -1 is out of range (0-65535)", ARGS("--port=-1"), NOENV);
    expect_error(__LINE__, "--port: '80x' is not an integer", ARGS("--port", "80x"), NOENV);
    expect_error(__LINE__, "--port: '' is not an integer", ARGS("--port="), NOENV);
    expect_error(__LINE__, "--port: ' 80' is not an integer", ARGS("--port= 80"), NOENV);
    expect_error(__LINE__,
                 "--threads: 99999999999999999999999 is out of range (0-1024)",
                 ARGS("--threads", "99999999999999999999999"), NOENV);
    expect_error(__LINE__, "--max-num-seqs: 0 is out of range (1-65536)",
                 ARGS("--max-num-seqs", "0"), NOENV);
    expect_error(__LINE__, "--max-num-batched-tokens: 2000000 is out of range (1-1048576)",
                 ARGS("--max-num-batched-tokens", "2000000"), NOENV);
    expect_error(__LINE__, "--block-size: 512 is out of range (1-256)",
                 ARGS("--block-size", "512"), NOENV);
    expect_error(__LINE__, "--num-kv-blocks: -5 is out of range (0-16777216)",
                 ARGS("--num-kv-blocks", "-5"), NOENV);
    expect_error(__LINE__, "--max-model-len: '1.5' is not an integer",
                 ARGS("--max-model-len", "1.5"), NOENV);
    expect_error(__LINE__, "--max-waiting: 0 is out of range (1-1048576)",
                 ARGS("--max-waiting", "0"), NOENV);
    expect_error(__LINE__,
                 "--kv-cache-memory: '12Q' is not a size (bytes, or a number with K, M, G or T)",
                 ARGS("--kv-cache-memory", "12Q"), NOENV);
    expect_error(__LINE__, "--kv-cache-memory: 512 is out of range (1K-1T)",
                 ARGS("--kv-cache-memory", "512"), NOENV);
    expect_error(__LINE__, "--kv-cache-memory: 2T is out of range (1K-1T)",
                 ARGS("--kv-cache-memory", "2T"), NOENV);
    expect_error(__LINE__, "--kv-cache-memory: 99999999999T is out of range (1K-1T)",
                 ARGS("--kv-cache-memory", "99999999999T"), NOENV);
    expect_error(__LINE__, "--max-body-bytes: 100 is out of range (1K-1G)",
                 ARGS("--max-body-bytes", "100"), NOENV);
    expect_error(__LINE__, "--shutdown-timeout: 'soon' is not a number",
                 ARGS("--shutdown-timeout", "soon"), NOENV);
    expect_error(__LINE__, "--shutdown-timeout: 'nan' is not a number",
                 ARGS("--shutdown-timeout", "nan"), NOENV);
    expect_error(__LINE__, "--shutdown-timeout: '1e999' is not a number",
                 ARGS("--shutdown-timeout", "1e999"), NOENV);
    expect_error(__LINE__, "--shutdown-timeout: -1 is out of range (0-86400)",
                 ARGS("--shutdown-timeout", "-1"), NOENV);
    expect_error(__LINE__, "--timeout-keep-alive: 0 is out of range (1-86400)",
                 ARGS("--timeout-keep-alive", "0"), NOENV);
    expect_error(__LINE__, "--header-timeout: 'soon' is not an integer",
                 ARGS("--header-timeout", "soon"), NOENV);
    expect_error(__LINE__, "NANO_VLLM_MAX_CONNECTIONS: -1 is out of range (0-1048576)",
                 ARGS("m"), ARGS("NANO_VLLM_MAX_CONNECTIONS=-1"));
    expect_error(__LINE__, "--log-format: 'xml' is not one of text, json",
                 ARGS("--log-format", "xml"), NOENV);
    expect_error(__LINE__,
                 "--weight-dtype: 'f64' is not one of auto, f32, f16, bf16, int8w, bf16x3, int8",
                 ARGS("--weight-dtype", "f64"), NOENV);
    /* A choice is matched whole, not by its prefix. */
    expect_error(__LINE__,
                 "--weight-dtype: 'bf16x' is not one of auto, f32, f16, bf16, int8w, bf16x3, int8",
                 ARGS("--weight-dtype", "bf16x"), NOENV);
    expect_error(__LINE__,
                 "NANO_VLLM_KERNEL: 'sse2' is not one of auto, generic, avx2, avx512, amx",
                 ARGS("m"), ARGS("NANO_VLLM_KERNEL=sse2"));
    expect_error(__LINE__, "--kernel: 'AMX' is not one of auto, generic, avx2, avx512, amx",
                 ARGS("--kernel", "AMX"), NOENV);
    expect_error(__LINE__, "NANO_VLLM_KV_CACHE_DTYPE: 'bf16x3' is not one of auto, f32, f16",
                 ARGS("m"), ARGS("NANO_VLLM_KV_CACHE_DTYPE=bf16x3"));
    expect_error(__LINE__, "NANO_VLLM_KV_CACHE_DTYPE: 'bf16' is not one of auto, f32, f16",
                 ARGS("m"), ARGS("NANO_VLLM_KV_CACHE_DTYPE=bf16"));
    /* vLLM's name for "ignore the file" is vllm; ours is none. */
    expect_error(__LINE__, "--generation-config: 'vllm' is not one of auto, none",
                 ARGS("--generation-config", "vllm"), NOENV);
    expect_error(__LINE__, "--host: must not be empty", ARGS("--host="), NOENV);
    expect_error(__LINE__, "--config: must not be empty", ARGS("--config="), NOENV);
    /* Control characters from outside never make the message span lines. */
    expect_error(__LINE__, "--port: '1?2?' is not an integer", ARGS("--port=1\n2\r"), NOENV);

    /* Command-line shape. */
    expect_error(__LINE__, "unknown option '--max-seqs' (see --help)",
                 ARGS("--max-seqs", "3"), NOENV);
    expect_error(__LINE__, "unknown option '-p' (see --help)", ARGS("-p", "3"), NOENV);
    expect_error(__LINE__, "--port: missing value", ARGS("--port"), NOENV);
    expect_error(__LINE__, "--port: missing value", ARGS("--port", "--host", "x"), NOENV);
    expect_error(__LINE__, "unexpected argument 'b' (MODEL_DIR is already 'a')",
                 ARGS("a", "b"), NOENV);

    /* Environment. */
    expect_error(__LINE__, "NANO_VLLM_MAX_NUM_SEQS: 'abc' is not an integer", NOARGS,
                 ARGS("NANO_VLLM_MAX_NUM_SEQS=abc"));
    expect_error(__LINE__, "NANO_VLLM_KV_CACHE_MEMORY: '2X' is not a size (bytes, or a number "
                           "with K, M, G or T)",
                 NOARGS, ARGS("NANO_VLLM_KV_CACHE_MEMORY=2X"));
    expect_error(__LINE__, "NANO_VLLM_PORTS: unknown setting (see --help)", NOARGS,
                 ARGS("NANO_VLLM_PORTS=1"));
    expect_error(__LINE__, "NANO_VLLM_PORT_X: unknown setting (see --help)", NOARGS,
                 ARGS("NANO_VLLM_PORT_X=1"));
    expect_error(__LINE__, "NANO_VLLM_KERNELS: unknown setting (see --help)", NOARGS,
                 ARGS("NANO_VLLM_KERNELS=avx2"));
    expect_error(__LINE__, "NANO_VLLM_PORT: 'http://x:80' is not an integer", NOARGS,
                 ARGS("NANO_VLLM_PORT=http://x:80"));
    expect_error(__LINE__, "NANO_VLLM_LOG_FORMAT: 'JSON' is not one of text, json", NOARGS,
                 ARGS("NANO_VLLM_LOG_FORMAT=JSON"));
    /* Every source is validated, even one a flag overrides. */
    expect_error(__LINE__, "NANO_VLLM_PORT: 'x' is not an integer", ARGS("--port", "1"),
                 ARGS("NANO_VLLM_PORT=x"));
}

static void expect_file_error(int line, const char *text, size_t len, const char *msg_fmt)
{
    const char *path = write_file("bad.conf", text, len);
    char flag[600], msg[700];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    snprintf(msg, sizeof(msg), msg_fmt, path);
    expect_error(line, msg, ARGS(flag), NOENV);
}

#define FILE_ERROR(text, fmt) expect_file_error(__LINE__, text, sizeof(text) - 1, fmt)

static void test_file_errors(void)
{
    FILE_ERROR("port = 1\nmax_seqs = 3\n", "%s:2: unknown setting 'max_seqs'");
    FILE_ERROR("# c\n\nport = 70000\n", "%s:3: port: 70000 is out of range (0-65535)");
    FILE_ERROR("port 8000\n", "%s:1: expected 'key = value', got 'port 8000'");
    FILE_ERROR("= 3\n", "%s:1: expected 'key = value', got '= 3'");
    FILE_ERROR("po.rt = 3\n", "%s:1: expected 'key = value', got 'po.rt = 3'");
    FILE_ERROR("host = \"abc\n", "%s:1: host: unterminated quote");
    FILE_ERROR("host = \"abc\" d\n", "%s:1: host: unexpected text after the closing quote: 'd'");
    FILE_ERROR("port = 1\nhost = a\nport = 2\n", "%s:3: port is set again (first on line 1)");
    FILE_ERROR("host =#x\n", "%s:1: host: must not be empty"); /* a comment, not a value */
    FILE_ERROR("config = x.conf\n", "%s:1: unknown setting 'config'");
    FILE_ERROR("port = 1\nhost = a\0b\n", "%s:2: NUL byte in the line");
    FILE_ERROR("kv_cache_memory = lots # of it\n",
               "%s:1: kv_cache_memory: 'lots' is not a size (bytes, or a number with K, M, G "
               "or T)");
    FILE_ERROR("log-format = yaml\n", "%s:1: log_format: 'yaml' is not one of text, json");

    char missing[512], msg[700];
    snprintf(missing, sizeof(missing), "%s/missing.conf", tmpdir);
    snprintf(msg, sizeof(msg), "--config %s: cannot open: %s", missing, strerror(ENOENT));
    expect_error(__LINE__, msg, ARGS("--config", missing), NOENV);
    char env[600];
    snprintf(env, sizeof(env), "NANO_VLLM_CONFIG=%s", missing);
    snprintf(msg, sizeof(msg), "NANO_VLLM_CONFIG %s: cannot open: %s", missing,
             strerror(ENOENT));
    expect_error(__LINE__, msg, NOARGS, ARGS(env));
    snprintf(msg, sizeof(msg), "--config %s: is a directory", tmpdir);
    expect_error(__LINE__, msg, ARGS("--config", tmpdir), NOENV);

    cfg_t c;
    char err[256];
    CHECK_INT_EQ(load(&c, err, ARGS("--config", missing), NOENV), -ENOENT);
    cfg_free(&c);
}

static void test_validate(void)
{
    cfg_t c;
    char err[256];
    CHECK_INT_EQ(load(&c, err, ARGS("m", "--max-num-seqs", "600"), NOENV), 0);
    CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "max_num_batched_tokens 512 is less than max_num_seqs 600: every running "
                   "sequence needs one token of a step");
    c.max_num_seqs = 64;
    CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), 0);
    /* Fields set by code are range-checked too. */
    c.port = -3;
    CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "port: -3 is out of range (0-65535)");
    c.port = 80;
    c.kv_cache_memory = 1000;
    CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "kv_cache_memory: 1000 is out of range (1K-1T)");
    c.kv_cache_memory = 1 << 30;
    c.log_format = 7;
    CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "log_format: value 7 is not a known choice");
    cfg_free(&c);
}

static char *capture(void (*fn)(FILE *, void *), void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fn(f, arg);
    fclose(f);
    return buf;
}

static void print_cb(FILE *f, void *arg)
{
    cfg_print(arg, f);
}

static void markdown_cb(FILE *f, void *arg)
{
    (void)arg;
    cfg_print_markdown(f);
}

static void test_help(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    cfg_t c;
    CHECK_INT_EQ(cfg_init(&c), 0);
    char *argv[] = {"serve", "--port", "1", "--bogus", "--help", NULL};
    char err[256] = "";
    CHECK_INT_EQ(cfg_load(&c, 5, argv, NULL, out, err, sizeof(err)), 1);
    fclose(out);
    CHECK_INT_EQ(c.port, 8000); /* nothing applied */
    static const char usage[] = "usage: nano-vllm serve [OPTIONS] MODEL_DIR\n";
    CHECK(strncmp(buf, usage, sizeof(usage) - 1) == 0);
    static const char *const must[] = {"MODEL_DIR",
                                       "NANO_VLLM_MODEL_DIR",
                                       "--config FILE",
                                       "NANO_VLLM_CONFIG",
                                       "--host ADDR",
                                       "default 127.0.0.1",
                                       "NANO_VLLM_HOST",
                                       "--port N",
                                       "NANO_VLLM_PORT",
                                       "--threads N",
                                       "--max-num-seqs N",
                                       "--max-num-batched-tokens N",
                                       "--kv-cache-memory SIZE",
                                       "default 1G",
                                       "--num-kv-blocks N",
                                       "--block-size N",
                                       "--max-model-len N",
                                       "--weight-dtype auto|f32|f16|bf16|int8|int8w|bf16x3",
                                       "--api-key KEY",
                                       "NANO_VLLM_API_KEY",
                                       "--served-model-name NAME",
                                       "--max-body-bytes SIZE",
                                       "--max-waiting N",
                                       "--shutdown-timeout SECONDS",
                                       "--log-format text|json",
                                       "NANO_VLLM_LOG_FORMAT",
                                       "  --no-ui\n",
                                       "default false; env NANO_VLLM_NO_UI",
                                       "-h, --help"};
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++) {
        if (!strstr(buf, must[i])) {
            fprintf(stderr, "test_config.c:%d: --help lacks '%s'\n", __LINE__, must[i]);
            check_failed_count++;
        }
    }
    free(buf);
    cfg_free(&c);

    /* -h after "--" is a model directory, not a request for help. */
    CHECK_INT_EQ(load(&c, err, ARGS("--", "-h"), NOENV), 0);
    CHECK_STR_EQ(c.model_dir, "-h");
    cfg_free(&c);
}

static void test_print_round_trip(void)
{
    cfg_t a, b;
    char err[256];
    CHECK_INT_EQ(
        load(&a, err,
             ARGS("dir with space", "--host", "0.0.0.0", "--port", "0", "--kv-cache-memory",
                  "1536K", "--max-body-bytes", "1000000", "--served-model-name", " odd#name",
                  "--shutdown-timeout", "0.1", "--log-format", "json", "--weight-dtype", "f16",
                  "--no-ui", "--generation-config", "none"),
             NOENV),
        0);
    char *text = capture(print_cb, &a);
    CHECK(strstr(text, "model_dir = dir with space\n") != NULL);
    CHECK(strstr(text, "kv_cache_memory = 1536K\n") != NULL);
    CHECK(strstr(text, "max_body_bytes = 1000000\n") != NULL);
    CHECK(strstr(text, "served_model_name = \" odd#name\"\n") != NULL);
    CHECK(strstr(text, "api_key =\n") != NULL);
    CHECK(strstr(text, "no_ui = true\n") != NULL);
    CHECK(strstr(text, "generation_config = none\n") != NULL);
    /* --config is not a setting of the file ("generation_config" is). */
    CHECK(strncmp(text, "config", 6) != 0 && strstr(text, "\nconfig") == NULL);
    const char *path = write_text("printed.conf", text);
    char flag[600];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    CHECK_INT_EQ(load(&b, err, ARGS(flag), NOENV), 0);
    CHECK_STR_EQ(err, "");
    char *again = capture(print_cb, &b);
    CHECK_STR_EQ(again, text);
    free(text);
    free(again);
    cfg_free(&b);

    /* The key is never printed. */
    free(a.api_key);
    a.api_key = strdup("sk-secret");
    text = capture(print_cb, &a);
    CHECK(strstr(text, "sk-secret") == NULL);
    CHECK(strstr(text, "api_key = ********\n") != NULL);
    free(text);
    cfg_free(&a);
}

static void test_parsers(void)
{
    static const struct {
        const char *s;
        int rc;
        unsigned long long v;
    } sizes[] = {
        {"0", 0, 0},
        {"4096", 0, 4096},
        {"1k", 0, 1024},
        {"64KB", 0, 65536},
        {"512M", 0, 512ULL << 20},
        {"2G", 0, 2ULL << 30},
        {"2GiB", 0, 2ULL << 30},
        {"1.5G", 0, 3ULL << 29},
        {"0.1K", 0, 102},
        {"1T", 0, 1ULL << 40},
        {"16777215T", 0, 16777215ULL << 40},
        {"16777216T", -ERANGE, 0},
        {"18446744073709551615", 0, 18446744073709551615ULL},
        {"18446744073709551616", -ERANGE, 0},
        {"", -EINVAL, 0},
        {"G", -EINVAL, 0},
        {"-1M", -EINVAL, 0},
        {"1.5", -EINVAL, 0},
        {"1.G", -EINVAL, 0},
        {"1 G", -EINVAL, 0},
        {"1GG", -EINVAL, 0},
        {"1iB", -EINVAL, 0},
        {"1P", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t v = 0;
        int rc = cfg_parse_size(sizes[i].s, &v);
        if (rc != sizes[i].rc || (rc == 0 && v != sizes[i].v)) {
            fprintf(stderr, "test_config.c:%d: size '%s': got rc %d v %zu, want rc %d v %llu\n",
                    __LINE__, sizes[i].s, rc, v, sizes[i].rc, sizes[i].v);
            check_failed_count++;
        }
    }
    char buf[32];
    cfg_format_size(3ULL << 29, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "1536M");
    cfg_format_size(0, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "0");
    cfg_format_size(1ULL << 40, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "1T");

    long long iv;
    CHECK_INT_EQ(cfg_parse_int("-42", &iv), 0);
    CHECK_INT_EQ(iv, -42);
    CHECK_INT_EQ(cfg_parse_int("+7", &iv), 0);
    CHECK_INT_EQ(iv, 7);
    CHECK_INT_EQ(cfg_parse_int("0x10", &iv), -EINVAL);
    CHECK_INT_EQ(cfg_parse_int("-", &iv), -EINVAL);
    CHECK_INT_EQ(cfg_parse_int("9223372036854775808", &iv), -ERANGE);

    double d;
    CHECK_INT_EQ(cfg_parse_double("1e3", &d), 0);
    CHECK(d == 1000.0);
    CHECK_INT_EQ(cfg_parse_double("0x1p3", &d), -EINVAL);
    CHECK_INT_EQ(cfg_parse_double("inf", &d), -EINVAL);
    CHECK_INT_EQ(cfg_parse_double("1.", &d), 0);
    CHECK_INT_EQ(cfg_parse_double(".", &d), -EINVAL);

    static const char *const yes[] = {"1", "true", "YES", "On"};
    static const char *const no[] = {"0", "False", "no", "OFF"};
    for (int i = 0; i < 4; i++) {
        int b = -1;
        CHECK_INT_EQ(cfg_parse_bool(yes[i], &b), 0);
        CHECK_INT_EQ(b, 1);
        CHECK_INT_EQ(cfg_parse_bool(no[i], &b), 0);
        CHECK_INT_EQ(b, 0);
    }
    int b;
    CHECK_INT_EQ(cfg_parse_bool("2", &b), -EINVAL);
    CHECK_INT_EQ(cfg_parse_bool("", &b), -EINVAL);
}

/* The README's table between its markers must be what cfg_print_markdown writes. */
static void test_readme(const char *readme)
{
    static const char begin[] = "<!-- config-table:begin (test_config checks this) -->\n";
    static const char end[] = "<!-- config-table:end -->\n";
    FILE *f = fopen(readme, "r");
    if (!f) {
        fprintf(stderr, "test_config.c:%d: cannot open %s: %s\n", __LINE__, readme,
                strerror(errno));
        check_failed_count++;
        return;
    }
    char *text = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&text, &cap, '\0', f);
    fclose(f);
    char *table = capture(markdown_cb, NULL);
    const char *a = n > 0 ? strstr(text, begin) : NULL;
    const char *b = a ? strstr(a, end) : NULL;
    if (!a || !b) {
        fprintf(stderr, "test_config.c:%d: %s lacks the config-table markers\n", __LINE__,
                readme);
        check_failed_count++;
    } else {
        a += strlen(begin);
        size_t len = (size_t)(b - a);
        if (len != strlen(table) || memcmp(a, table, len) != 0) {
            fprintf(stderr,
                    "test_config.c:%d: the table in %s differs from the code; replace it "
                    "with the output of 'test_config --markdown':\n%s",
                    __LINE__, readme, table);
            check_failed_count++;
        }
    }
    free(table);

    /* The example config file in the README must load. */
    static const char fence[] = "```\n# nano-vllm.conf\n";
    const char *ex = n > 0 ? strstr(text, fence) : NULL;
    const char *ex_end = ex ? strstr(ex + 4, "```\n") : NULL;
    if (!ex || !ex_end) {
        fprintf(stderr, "test_config.c:%d: %s lacks the example config file\n", __LINE__,
                readme);
        check_failed_count++;
    } else {
        ex += 4;
        const char *path = write_file("readme.conf", ex, (size_t)(ex_end - ex));
        char flag[600], err[256];
        snprintf(flag, sizeof(flag), "--config=%s", path);
        cfg_t c;
        CHECK_INT_EQ(load(&c, err, ARGS(flag), NOENV), 0);
        CHECK_STR_EQ(err, "");
        CHECK_INT_EQ(cfg_validate(&c, err, sizeof(err)), 0);
        CHECK_INT_EQ(c.kv_cache_memory, 2LL << 30);
        cfg_free(&c);
    }
    free(text);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--markdown") == 0) {
        cfg_print_markdown(stdout);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: test_config README.md | test_config --markdown\n");
        return 2;
    }
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/test_config.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }

    test_defaults();
    test_precedence();
    test_value_errors();
    test_file_errors();
    test_validate();
    test_help();
    test_print_round_trip();
    test_parsers();
    test_readme(argv[1]);

    static const char *const files[] = {"prec.conf", "other.conf", "quote.conf", "bad.conf",
                                        "printed.conf", "readme.conf"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    if (check_failed_count) {
        fprintf(stderr, "%d check(s) failed\n", check_failed_count);
        return 1;
    }
    printf("config: all checks passed\n");
    return 0;
}
