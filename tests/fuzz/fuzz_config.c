/* fuzz_config.c - libFuzzer harness for the config file, environment and flag parsers.
 *
 * The input is up to three sections separated by a line "@@": the config file's bytes, the
 * environment (one NAME=value per line) and the flags (one argument per line, after
 * "serve --config=FILE"). Checks, beyond "no crash, no leak": every failure leaves one
 * non-empty printable error line, and when the settings came from the file alone, writing
 * them with cfg_print and reading that back gives the same settings.
 * The file is a memfd so that each run writes no disk. Built by tests/fuzz/meson.build with
 * -Dfuzz=true (clang), and linked with replay.c into a plain test that runs the corpus.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_tmpdir.h"
#include "config/config.h"

#define MAX_LINES 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One malloc'd string per line of text (at most max), NULL-terminated, after skip slots. */
static size_t split_lines(const char *text, size_t len, char **out, size_t skip, size_t max)
{
    size_t n = skip;
    const char *p = text, *end = text + len;
    while (p < end && n < max) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        out[n++] = strndup(p, (size_t)(e - p));
        p = nl ? nl + 1 : end;
    }
    out[n] = NULL;
    return n;
}

static int write_memfd(const char *name, const char *text, size_t len, char *path, size_t cap)
{
    int fd = memfd_create(name, 0);
    if (fd < 0 || (len && write(fd, text, len) != (ssize_t)len)) {
        perror("memfd");
        abort();
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

static char *print_settings(const cfg_t *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_print(c, f);
    fclose(f);
    return buf;
}

static void check_error(int rc, const char *err, const char *what)
{
    if (rc >= 0)
        return;
    int bad = err[0] == '\0';
    for (const char *p = err; *p; p++)
        bad |= (unsigned char)*p < 0x20 || *p == 0x7f;
    if (bad) {
        fprintf(stderr, "%s: rc %d with error '%s'\n", what, rc, err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *sec[3];
    size_t seclen[3];
    size_t nsec = fuzz_split((const char *)data, size, sec, seclen, 3);

    char path[64], flag[80];
    int fd = write_memfd("fuzz.conf", sec[0], seclen[0], path, sizeof(path));
    snprintf(flag, sizeof(flag), "--config=%s", path);

    char *envp[MAX_LINES + 1] = {NULL};
    char *argv[MAX_LINES + 3] = {"serve", flag, NULL};
    size_t nenv = nsec > 1 ? split_lines(sec[1], seclen[1], envp, 0, MAX_LINES) : 0;
    size_t argc = nsec > 2 ? split_lines(sec[2], seclen[2], argv, 2, MAX_LINES + 2) : 2;

    FILE *devnull = fopen("/dev/null", "w");
    cfg_t c;
    char err[256];
    if (cfg_init(&c) != 0)
        abort();
    int rc = cfg_load(&c, (int)argc, argv, envp, devnull, err, sizeof(err));
    check_error(rc, err, "cfg_load");
    if (rc == 0) {
        check_error(cfg_validate(&c, err, sizeof(err)), err, "cfg_validate");
        char *printed = print_settings(&c);
        if (nenv == 0 && argc == 2) {
            /* The file alone: cfg_print's output must read back to the same settings. */
            char path2[64], flag2[80];
            int fd2 = write_memfd("printed.conf", printed, strlen(printed), path2,
                                  sizeof(path2));
            snprintf(flag2, sizeof(flag2), "--config=%s", path2);
            char *argv2[] = {"serve", flag2, NULL};
            cfg_t d;
            if (cfg_init(&d) != 0)
                abort();
            int rc2 = cfg_load(&d, 2, argv2, NULL, devnull, err, sizeof(err));
            char *again = rc2 == 0 ? print_settings(&d) : NULL;
            if (rc2 != 0 || strcmp(printed, again) != 0) {
                fprintf(stderr, "round trip failed (rc %d, '%s'):\n%s\n--- read back:\n%s\n",
                        rc2, rc2 ? err : "", printed, again ? again : "");
                abort();
            }
            free(again);
            cfg_free(&d);
            close(fd2);
        }
        free(printed);
    }
    cfg_free(&c);
    fclose(devnull);
    for (size_t i = 0; i < nenv; i++)
        free(envp[i]);
    for (size_t i = 2; i < argc; i++)
        free(argv[i]);
    close(fd);
    return 0;
}
