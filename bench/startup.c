/* bench/startup.c - start-up time against the time to read the weights, measured in the same
 * run.
 *
 *   bench/startup [--shapes gpt2-xl,llama-3.2-1b] [--dir DIR] [--keep] [--runs N] [--trace]
 *
 * For each shape it writes a seeded random BF16 checkpoint with scripts/make-checkpoint into
 * DIR/<shape> (default: a directory in the build tree) unless one is there, reads its
 * safetensors files once (into the page cache), then times a read loop over them (the bound:
 * what reading the weights from the page cache costs) and eng_init (the engine's whole
 * start-up: checkpoint, packing, KV pool, step buffers), each the best of --runs (default 2),
 * and prints the ratio load / read, and the time to fault in as much fresh memory as the
 * packed weights take (the part of start-up that reading does not pay; --trace prints the
 * progress callback's times), where the best load's time went (eng_info_t's init_*_s: map,
 * fault, pack, rest) and the CPU seconds of the read and the load (all threads). A checkpoint it
 * wrote is deleted afterwards unless
 * --keep: they are GBs. Not a test: run it by hand; on a shared machine, compare the ratios
 * of one run.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bounds.h"
#include "engine/engine.h"

/* A bench shape: its name and the make-checkpoint arguments that write it. */
static const struct {
    const char *name;
    const char *arch, *shape;
} shapes[] = {
    {"gpt2-xl", "gpt2", "xl"},
    {"llama-3.2-1b", "llama", "llama-3.2-1b"},
    {"qwen3-0.6b", "qwen3", "qwen3-0.6b"},
    {"smollm2-360m", "llama", "smollm2-360m"},
};

static int make_checkpoint(const char *dir, const char *arch, const char *shape)
{
    printf("writing a random %s BF16 checkpoint to %s ...\n", shape, dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* GPT-2's shapes are make-checkpoint's default family: it takes no --arch for them. */
        if (strcmp(arch, "gpt2") == 0)
            execl(BENCH_PYTHON3, BENCH_PYTHON3, BENCH_MAKE_CHECKPOINT, "--out", dir, "--shape",
                  shape, "--dtype", "bf16", "--seed", "1", (char *)NULL);
        else
            execl(BENCH_PYTHON3, BENCH_PYTHON3, BENCH_MAKE_CHECKPOINT, "--arch", arch, "--out", dir,
                  "--shape", shape, "--dtype", "bf16", "--seed", "1", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        return -1;
    return 0;
}

/* Reads every *.safetensors file of dir through a 4 MiB buffer; returns the bytes read. */
static size_t read_all(const char *dir, char *buf, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 12 || strcmp(de->d_name + n - 12, ".safetensors") != 0)
            continue;
        char path[4600];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t r;
        while ((r = read(fd, buf, cap)) > 0)
            total += (size_t)r;
        close(fd);
    }
    closedir(d);
    return total;
}

/* What the progress callback saw of one load. */
typedef struct progress {
    double start, first, last; /* clocks: eng_init called, first bytes done, done == total */
    uint64_t prev, total;
    int calls, monotonic;
    int trace; /* --trace: print the time at every 5% */
} progress_t;

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
    progress_t *p = arg;
    double now = clock_now_sec();
    if (p->calls++ == 0)
        p->monotonic = 1;
    if (done < p->prev || total != (p->total ? p->total : total))
        p->monotonic = 0;
    if (!p->first && done > 0)
        p->first = now;
    if (done == total)
        p->last = now;
    if (p->trace && (done * 20 / total != p->prev * 20 / total || done == total))
        fprintf(stderr, "  %.2f s %llu of %llu\n", now - p->start, (unsigned long long)done,
                (unsigned long long)total);
    p->prev = done;
    p->total = total;
}

/* Seconds to fault in `bytes` of fresh memory as the packed weights get it (2 MiB aligned,
 * advised as huge pages), a byte per 4 KiB: the other cost of start-up that reading the
 * file does not have. On a virtual machine whose host backs guest memory lazily it can
 * exceed the read by far. */
static double fresh_memory(size_t bytes)
{
    void *p = NULL;
    const size_t huge = (size_t)2 << 20;
    if (posix_memalign(&p, huge, bytes))
        return 0;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes / huge * huge, MADV_HUGEPAGE);
#endif
    double t0 = clock_now_sec();
    for (size_t i = 0; i < bytes; i += 4096)
        ((volatile char *)p)[i] = 1;
    double t = clock_now_sec() - t0;
    free(p);
    return t;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[4600];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    const char *list = "gpt2-xl,llama-3.2-1b", *base = BENCH_DEFAULT_DIR;
    int keep = 0, runs = 2, trace = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--shapes") == 0 && i + 1 < argc)
            list = argv[++i];
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            base = argv[++i];
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--keep") == 0)
            keep = 1;
        else if (strcmp(argv[i], "--trace") == 0)
            trace = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--shapes gpt2-xl,llama-3.2-1b,qwen3-0.6b,smollm2-360m] [--dir DIR] "
                    "[--keep] [--runs N] [--trace]\n",
                    argv[0]);
            return 2;
        }
    }
    runs = runs < 1 ? 1 : runs;
    const size_t cap = (size_t)4 << 20;
    char *buf = malloc(cap);
    if (!buf)
        return 1;
    mkdir(base, 0755);
    int failed = 0;
    printf("%-14s %6s %7s %6s %8s %8s %6s %7s | %6s %7s %6s %6s\n", "shape", "GB", "read s", "GB/s",
           "fresh s", "load s", "ratio", "first s", "map s", "fault s", "pack s", "rest s");
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        if (!bench_in_list(list, shapes[s].name))
            continue;
        char dir[4096], cfg[4200];
        snprintf(dir, sizeof(dir), "%s/%s", base, shapes[s].name);
        snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
        int made = 0;
        if (access(cfg, F_OK) != 0) {
            if (make_checkpoint(dir, shapes[s].arch, shapes[s].shape) != 0) {
                fprintf(stderr, "%s: make-checkpoint failed\n", shapes[s].name);
                failed = 1;
                continue;
            }
            made = 1;
        }
        int bad = 0;                            /* this shape failed (the others still run) */
        size_t bytes = read_all(dir, buf, cap); /* into the page cache */
        double read_s = 1e30, load_s = 1e30, first_s = 0, fresh_s = fresh_memory(bytes);
        eng_info_t best = {0}; /* of the best load: its phases */
        double read_cpu = 0, load_cpu = 0;
        for (int r = 0; r < runs; r++) {
            double t0 = clock_now_sec(), c0 = proc_cpu_sec();
            read_all(dir, buf, cap);
            double t = clock_now_sec() - t0;
            if (t < read_s) {
                read_s = t;
                read_cpu = proc_cpu_sec() - c0;
            }
        }
        for (int r = 0; r < runs && !bad; r++) {
            char err[512];
            progress_t p = {.trace = trace};
            eng_params_t ep = {
                .model_dir = dir, .load_progress = on_progress, .load_progress_arg = &p};
            eng_t *e = NULL;
            eng_info_t info = {0};
            const double c0 = proc_cpu_sec();
            p.start = clock_now_sec();
            int rc = eng_init(&e, &ep, NULL, err, sizeof(err));
            double t = clock_now_sec() - p.start, c = proc_cpu_sec() - c0;
            if (e)
                eng_get_info(e, &info);
            eng_free(e);
            if (rc) {
                fprintf(stderr, "%s: %s\n", shapes[s].name, err);
                bad = 1;
                break;
            }
            if (!p.monotonic || p.prev != p.total || p.total == 0) {
                fprintf(stderr, "%s: progress did not rise to the total (%llu of %llu)\n",
                        shapes[s].name, (unsigned long long)p.prev, (unsigned long long)p.total);
                bad = 1;
            }
            if (t < load_s) {
                load_s = t;
                load_cpu = c;
                first_s = p.first - p.start;
                best = info;
            }
            if (trace)
                fprintf(stderr,
                        "  load %.2f s (cpu %.2f s): map %.2f fault %.2f pack %.2f rest %.2f\n", t,
                        c, info.init_map_s, info.init_fault_s, info.init_pack_s, info.init_rest_s);
        }
        failed |= bad;
        if (!bad)
            printf("%-14s %6.2f %7.2f %6.2f %8.2f %8.2f %6.2f %7.2f | %6.2f %7.2f %6.2f %6.2f | "
                   "%6.2f %6.2f\n",
                   shapes[s].name, (double)bytes / 1e9, read_s, (double)bytes / 1e9 / read_s,
                   fresh_s, load_s, load_s / read_s, first_s, best.init_map_s, best.init_fault_s,
                   best.init_pack_s, best.init_rest_s, read_cpu, load_cpu);
        fflush(stdout);
        if (made && !keep)
            remove_dir(dir);
    }
    printf(
        "read s: best read loop over the safetensors files (page cache); fresh s: faulting in "
        "as many bytes of fresh memory; load s: best eng_init; ratio = load / read; first s: "
        "eng_init to the first weight bytes done;\nthe best load's phases: map s: mapping the "
        "checkpoint and checking it; fault s: faulting in the packed weights' fresh memory; "
        "pack s: packing the weights into it; rest s: KV pool, scheduler, step buffers;\ncpu rd, "
        "cpu ld: CPU seconds (all threads, user + system) of the best read and load\n");
    free(buf);
    return failed;
}
