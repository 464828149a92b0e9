/* fuzz_tmpdir.h - a private directory for harnesses whose parser reads a directory
 * (a checkpoint): made once per process under $TMPDIR, removed with its files at exit.
 */
#ifndef NANO_VLLM_FUZZ_TMPDIR_H
#define NANO_VLLM_FUZZ_TMPDIR_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir_path[256];

/* Removes the directory with every file a harness put in it. */
static inline void fuzz_dir_remove(void)
{
    DIR *d = opendir(fuzz_dir_path);
    if (d) {
        char p[512];
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof(p), "%s/%s", fuzz_dir_path, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(fuzz_dir_path);
}

/* The directory's path; aborts when it cannot be made (the harness cannot run at all). */
static inline const char *fuzz_dir(void)
{
    if (!fuzz_dir_path[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_dir_path, sizeof(fuzz_dir_path), "%s/nv-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_dir_path)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

/* Writes (or with len == (size_t)-1, removes) dir/name. */
static inline void fuzz_dir_put(const char *name, const void *data, size_t len)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", fuzz_dir(), name);
    unlink(p);
    if (len == (size_t)-1)
        return;
    FILE *f = fopen(p, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(p);
        abort();
    }
}

/* Aborts unless err is one non-empty line of printable bytes (UTF-8 above 0x7f allowed). */
static inline void fuzz_check_err(int rc, const char *err, const char *what)
{
    if (rc == 0)
        return;
    int bad = rc > 0 || err[0] == '\0';
    for (const char *p = err; *p; p++)
        bad |= (unsigned char)*p < 0x20 || *p == 0x7f;
    if (bad) {
        fprintf(stderr, "%s: rc %d with error '%s'\n", what, rc, err);
        abort();
    }
}

/* Splits text at "\n@@\n" into up to n sections; returns how many were found. */
static inline size_t fuzz_split(const char *text, size_t len, const char **sec, size_t *seclen,
                         size_t n)
{
    size_t k = 0;
    const char *p = text, *end = text + len;
    while (k + 1 < n) {
        const char *q = memmem(p, (size_t)(end - p), "\n@@\n", 4);
        if (!q)
            break;
        sec[k] = p;
        seclen[k++] = (size_t)(q - p);
        p = q + 4;
    }
    sec[k] = p;
    seclen[k++] = (size_t)(end - p);
    return k;
}

#endif
