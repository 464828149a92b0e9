#!/usr/bin/python3
"""What serving costs: served tokens/s against the forward pass of the same steps, one run.

    bench/serve-overhead.py [--build build] [--dtypes f32,f16] [--levels 1,32,64]
                            [--duration 30] [--model DIR] [--one-stream lean|asyncio]
                            [--client lean|asyncio]

For each weight dtype it runs build/bench/forward-bench on the same checkpoint (decode of
1, 32 and 64 sequences at context --ctx, 32 decodes beside a 32-row prompt chunk, and a
64-row prompt step from position 0 with one logit row) before and after the server, keeping
each step's better figure, and in between starts the server
(`serve --weight-dtype D`, the K/V cache at its default for D, as forward-bench keeps it too)
and drives it with streaming requests, each a 64-token prompt (distinct ids, nothing cached)
and 128 new tokens, ignore_eos, temperature 0, the first 30% of --duration left out as warm-up:
  1 stream         loadgen.py's lean one-stream client (run_lean): one keep-alive connection,
                   requests back to back, each stream read in bulk between naps and parsed
                   only after the window, so that it takes next to nothing of the cores the
                   server computes on (a real client runs on another machine). Its window
                   is whole requests, prompts and the gaps between them included.
                   --one-stream asyncio uses the load generator below instead;
  N streams        loadgen.py's lean N-stream client (run_lean_n): one thread, N keep-alive
                   sockets, first requests ramped over the warm-up, then back to back; it
                   naps and reads each socket every 0.2 s and near its predicted end, keeps
                   the bytes with the read's time and parses them after the level (about
                   0.01 ms of CPU per token, 0.3-0.4% of the wall time at 32 and 64 streams
                   with F32 weights). The tokens it got over the level must be the tokens the
                   server generated (its counter), max_tokens a request; an HTTP or stream
                   error stops the script. --client asyncio uses loadgen.py's steady phase
                   instead: N asyncio clients parsing every event as it comes (2-4 times the
                   lean client's CPU per token, taken from the server's cores).
At both ends of the measured window it reads the server's /metrics (its scheduler thread's
seconds by phase, steps, rows run through the model) and every server thread's CPU time
(/proc), so the window's figures are differences of counters.

Printed per level:
  served tok/s     completion tokens streamed per second (client side);
  fwd share        the scheduler thread's seconds in the forward pass over wall seconds:
                   served tok/s over what the same steps give with nothing else around
                   them (tokens / forward seconds) - the cost of serving is 1 - this;
  of bench         forward-bench's time for the window's steps over the wall time. At one
                   stream they are 1-row decodes and one 64-row prompt step per request, each
                   at forward-bench's time for that step; with more streams each step's time
                   is interpolated linearly in its rows between the forward-bench steps (1, 32
                   and 64 decode rows, 64 mixed rows). Slower forward passes in the server
                   (the loop thread taking a core) count as serving cost too;
  cpu              the same in CPU seconds: forward-bench's CPU time for the window's steps
                   over the CPU time of every server thread in the window. Other tenants of a
                   shared host change wall times but hardly CPU times: on a busy host this is
                   the figure to read;
  schedule/sample/handoff/idle  the scheduler thread's other seconds over wall seconds;
  loop cpu         the loop thread's CPU seconds over wall seconds (HTTP, JSON, SSE);
  client cpu       the client's CPU seconds over wall seconds (the lean clients: their
                   thread's; the asyncio load generator: this process's): it runs on the
                   same cores, so what it takes is taken from the server too;
  rows/step, fwd ms/step  the server's own steps, against forward-bench's ms per step for
                   the same steps.
Then for batch 1: milliseconds per generated token served, in the server's forward pass,
in forward-bench for the same steps, of which its decode step and the prompt's share; two
bounds: (a) the read-bandwidth bound of a decode step, (b) the bound of the window's own
steps (its decodes at (a), its 64-row prompt steps at the full roofline forward-bench prints
for them), each as a share of the served figure; the server's own time outside the forward
pass; and the CPU milliseconds per token of the loop thread and of the client. Every time
and bound of a step is forward-bench's, as it prints them (--cpu-ms for the CPU times).

Run it alone on the machine: it measures speed. Every phase is bounded by
loadgen's limits; servers listen on 127.0.0.1 port 0 and are stopped by their pid. After
it starts, the server is left idle until its memory stops growing (--settle, at most 30 s):
the idle scheduler thread maps the KV pool then, as in a server that has been up a while.
"""

import argparse
import asyncio
import collections
import os
import re
import resource
import subprocess
import sys
import time
import types
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402

PHASES = ("schedule", "forward", "sample", "handoff", "idle")
PROMPT_TOKENS, MAX_TOKENS = 64, 128
# The forward-bench steps read, by key: their --steps word and their name in its table. A
# request's prompt is one step of PROMPT_TOKENS rows from position 0 with one logit row.
BENCH_STEPS = {"dec1": ("dec1", "decode 1"), "dec32": ("dec32", "decode 32"),
               "dec64": ("dec64", "decode 64"), "mixed": ("mixed", "dec 32+prompt 32"),
               "prompt": ("prefill:%d" % PROMPT_TOKENS, "prefill %d" % PROMPT_TOKENS)}
# A step's figures as forward-bench prints them: ms per step (its best round), rows/s, the
# rows/s of its full roofline and CPU ms per step.
Step = collections.namedtuple("Step", "ms rate bound cpu")


def forward_bench(path, model, dtype, ctx, rounds):
    """{key: Step} from one forward-bench run."""
    # Without a model, forward-bench writes its default checkpoint (the server's then) first.
    cmd = [path] + ([model] if model else []) + [
        "--dtype", dtype, "--steps", ",".join(a for a, _ in BENCH_STEPS.values()),
        "--ctx", str(ctx), "--rounds", str(rounds), "--cpu-ms"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900).stdout
    res = {}
    for line in out.splitlines():
        for key, (_, name) in BENCH_STEPS.items():
            # dtype, step, ctx, ms/step, tokens/s, bound t/s, ..., CPU ms/step (the last).
            m = re.match(r"%s\s+%s\s+\S+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s.*\s([\d.]+)$"
                         % (dtype, re.escape(name)), line)
            if m:
                res[key] = Step(*(float(x) for x in m.groups()))
    if len(res) != len(BENCH_STEPS):
        sys.exit("serve-overhead: forward-bench gave no figures:\n" + out)
    return res


def step_rows(step):
    """A forward-bench step's rows: its rows/s times its time."""
    return round(step.rate * step.ms / 1e3)


def interp_ms(bench, rows, field):
    """forward-bench's ms (field "cpu": CPU ms) for a step of `rows` rows: linear between
    its decode steps (at 64 rows the mean of 64 decodes and 32 decodes + 32 prompt rows, as
    served steps mix both)."""
    def at(k):
        return getattr(bench[k], field)
    pts = [(step_rows(bench["dec1"]), at("dec1")), (step_rows(bench["dec32"]), at("dec32")),
           (step_rows(bench["dec64"]), (at("dec64") + at("mixed")) / 2)]
    for (r0, t0), (r1, t1) in zip(pts, pts[1:]):
        if rows <= r1:
            return t0 + (t1 - t0) * (rows - r0) / (r1 - r0)
    (r0, t0), (r1, t1) = pts[-2], pts[-1]
    return t1 + (t1 - t0) * (rows - r1) / (r1 - r0)


def prompt_steps(w):
    """The window's prompt steps at one stream: each request runs its prompt as one step of
    PROMPT_TOKENS rows, then 1-row decodes."""
    steps = max(w.get("scheduler_steps", 0), 1)
    return max(w.get("forward_tokens", 0) - steps, 0) / (PROMPT_TOKENS - 1)


def bench_window_ms(bench, w, conc, field="ms"):
    """forward-bench's ms (field "cpu": CPU ms) for the window's steps: at one stream its
    decode and prompt steps at forward-bench's figures for those steps, with more streams
    every step interpolated in its rows (interp_ms)."""
    steps = max(w.get("scheduler_steps", 0), 1)
    if conc == 1:
        p = prompt_steps(w)
        return (steps - p) * getattr(bench["dec1"], field) + p * getattr(bench["prompt"], field)
    return steps * interp_ms(bench, w.get("forward_tokens", 0) / steps, field)


def scrape(url, pid):
    """The server's engine counters and each thread's CPU seconds, now."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    m = {}
    for line in text.splitlines():
        g = re.match(r'nano_vllm_engine_seconds_total\{phase="(\w+)"\} ([\d.e+-]+)', line)
        if g:
            m[g.group(1)] = float(g.group(2))
        g = re.match(r"nano_vllm_(scheduler_steps|forward_tokens|generation_tokens)_total "
                     r"([\d.e+-]+)", line)
        if g:
            m[g.group(1)] = float(g.group(2))
    cpu, hz = {}, os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                head, rest = f.read().rsplit(")", 1)
            name = "loop" if int(tid) == pid else head.split("(", 1)[1]
            v = rest.split()
            # Nanoseconds on a CPU where the kernel keeps them (schedstat), else clock ticks
            # (10 ms: a few percent of a window's loop thread time).
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    secs = int(f.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                secs = (int(v[11]) + int(v[12])) / hz
            cpu[name] = cpu.get(name, 0.0) + secs
            if name == "nv-scheduler":
                with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                    for line in f:
                        if line.startswith("nonvoluntary_ctxt_switches"):
                            m["preempted"] = float(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    m["cpu"] = cpu
    # The host's CPU seconds by kind (every core): what the other tenants took shows as
    # busy time that is neither the server's nor the client's, idle time as idle.
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    m["host_idle"] = (v[3] + v[4]) / hz
    m["host_all"] = sum(v[:8]) / hz
    # The client's (this process's: loadgen's asyncio loop) CPU seconds: it shares the cores
    # with the server, so what it takes per token is taken from the forward passes too.
    ru = resource.getrusage(resource.RUSAGE_SELF)
    m["client"] = ru.ru_utime + ru.ru_stime
    m["t"] = time.monotonic()
    return m


def settle(pid, limit):
    """Waits (at most limit seconds) while the idle server's memory still grows: its
    scheduler thread maps the KV pool when it has nothing to do, which a server that has
    been up for a few seconds has done. Measuring at once would add the pool's first-touch
    page faults (a one-time cost spread over the first ~100 requests) to the window."""
    def rss():
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")
    t0, last = time.monotonic(), rss()
    while time.monotonic() - t0 < limit:
        time.sleep(1.0)
        now = rss()
        if now - last < (1 << 20):
            break
        last = now
    print("server settled after %.1f s, RSS %d MiB" % (time.monotonic() - t0, rss() >> 20),
          flush=True)


def window(a, b):
    d = {k: b[k] - a.get(k, 0.0) for k in b if k not in ("cpu",)}
    d["cpu"] = {k: v - a["cpu"].get(k, 0.0) for k, v in b["cpu"].items()}
    return d


def run_level(url, pid, conc, args):
    u = urllib.parse.urlparse(url)
    la = types.SimpleNamespace(duration=args.duration, ramp=None, warmup=None,
                               max_requests=args.max_requests, max_tokens=MAX_TOKENS,
                               prompt_tokens=PROMPT_TOKENS, model_name=None, api_key=None)
    lean = conc == 1 and args.one_stream == "lean"
    lean_n = conc > 1 and args.client == "lean"
    if lean:
        s = loadgen.run_lean(u.hostname, u.port, la, pid, [conc * 100000],
                             on_mark=lambda name: scrape(url, pid))
    elif lean_n:
        s = loadgen.run_lean_n(u.hostname, u.port, conc, la, pid, [conc * 100000],
                               on_mark=lambda name: scrape(url, pid))
    else:
        s = asyncio.run(loadgen.run_phase(u.hostname, u.port, conc, la, False, pid,
                                          [conc * 100000],
                                          on_mark=lambda name: scrape(url, pid)))
    if "w0" not in s["marks"] or "w1" not in s["marks"]:
        sys.exit("serve-overhead: the window's metrics were not read: %s" % s["errors"])
    if s["errors"]:
        sys.exit("serve-overhead: %d streams: errors %s" % (conc, s["errors"]))
    w = window(s["marks"]["w0"], s["marks"]["w1"])
    if lean:
        # The window is the requests' own span, and the client's CPU its thread's in it.
        w["t"], w["client"] = s["wall"], s["client_cpu"]
    if lean_n:
        # The client's CPU: its thread's in the window (the scrapes at its ends left out).
        w["client"] = s["client_cpu"]
        # Every request ran to its end: the tokens the client got (usage) must be the
        # tokens the server generated over the level, and max_tokens each (ignore_eos).
        a, b = s["marks"]["start"], s["marks"]["end"]
        gen = b.get("generation_tokens", 0) - a.get("generation_tokens", 0)
        if (s["total_tokens"] != gen or s["requests"] != s["sent"]
                or s["total_tokens"] != s["requests"] * MAX_TOKENS):
            sys.exit("serve-overhead: %d streams: the client counted %d tokens in %d of %d "
                     "requests, the server generated %d" % (
                         conc, s["total_tokens"], s["requests"], s["sent"], gen))
    print("  client: %.0f tokens in the window, the server generated %.0f in it; %s" % (
        s["tokens"], w.get("generation_tokens", 0),
        "whole level %d tokens in %d requests, as the server counted" % (
            s["total_tokens"], s["requests"]) if lean_n else "client %s" % (
            "lean" if lean else "asyncio")), flush=True)
    return s, w


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(os.path.dirname(here), "build"))
    ap.add_argument("--model", help="GPT-2 checkpoint (default: the benches' random 124M one)")
    ap.add_argument("--dtypes", default="f32,f16")
    ap.add_argument("--levels", default="1,32,64")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per level (bound)")
    ap.add_argument("--ctx", type=int, default=128,
                    help="forward-bench's decode context (served contexts run 64..192)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-requests", type=int, default=2000)
    ap.add_argument("--one-stream", choices=("lean", "asyncio"), default="lean",
                    help="the client of the 1-stream level: loadgen's lean one (default) or its "
                    "asyncio load generator, as the other levels")
    ap.add_argument("--client", choices=("lean", "asyncio"), default="lean",
                    help="the client of the levels above 1 stream: loadgen's lean N-stream one "
                    "(run_lean_n, default) or its asyncio load generator")
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--settle", type=float, default=30.0, help="seconds at most to let the "
                    "idle server map its KV pool before measuring (0: measure at once)")
    args = ap.parse_args()
    fb = os.path.join(args.build, "bench", "forward-bench")
    server = os.path.join(args.build, "server", "nano-vllm")
    model = args.model or os.path.join(args.build, "bench", "gpt2-124m-random")
    for p in (fb, server):
        if not os.access(p, os.X_OK):
            sys.exit("serve-overhead: %s not built (meson compile -C %s)" % (p, args.build))
    levels = [int(c) for c in args.levels.split(",")]
    rows = []
    for dt in args.dtypes.split(","):
        print("%s: forward-bench (context %d) ..." % (dt, args.ctx), flush=True)
        bench = forward_bench(fb, args.model, dt, args.ctx, args.rounds)
        level_rows = []
        sa = types.SimpleNamespace(server=server, model=model,
                                   server_arg=["--weight-dtype", dt] + args.server_arg)
        proc, url = loadgen.start_server(sa)
        settle(proc.pid, args.settle)
        try:
            for conc in levels:
                print("%s: %d streams, %.0f s ..." % (dt, conc, args.duration), flush=True)
                s, w = run_level(url, proc.pid, conc, args)
                level_rows.append((dt, conc, s, w))
        finally:
            proc.terminate()
            proc.wait(60)
        # Again after the server: other tenants of a shared host only ever slow a run down,
        # so each step keeps its better figure (as forward-bench keeps its best round).
        print("%s: forward-bench again ..." % dt, flush=True)
        again = forward_bench(fb, args.model, dt, args.ctx, args.rounds)
        for k, a in again.items():
            b = bench[k]
            bench[k] = Step(min(b.ms, a.ms), max(b.rate, a.rate), max(b.bound, a.bound),
                            min(b.cpu, a.cpu))
        rows += [r + (bench,) for r in level_rows]
    report(rows)


def report(rows):
    print("\n%-4s %4s %9s %9s %6s %6s %6s %6s %6s %6s %6s %6s %6s %6s %7s %7s %7s %6s %6s" % (
        "dtype", "str", "served/s", "fwd tok/s", "fwd", "bench", "cpu", "sched", "sample",
        "handof", "idle", "loop", "client", "other", "rows/st", "fwd ms", "bench", "tenant",
        "hidle"))
    for dt, conc, s, w, bench in rows:
        wall, steps = w["t"], max(w.get("scheduler_steps", 0), 1)
        rps = w.get("forward_tokens", 0) / steps
        gen = max(w.get("generation_tokens", 0), 1)
        pct = {p: 100.0 * w.get(p, 0) / wall for p in PHASES}
        bench_s = bench_window_ms(bench, w, conc) / 1e3
        other = sum(v for k, v in w["cpu"].items() if k not in ("loop", "nv-scheduler"))
        cpu_all = max(sum(w["cpu"].values()), 1e-9)
        bench_cpu = bench_window_ms(bench, w, conc, "cpu") / 1e3
        host = max(w.get("host_all", 0), 1e-9)
        tenant = host - w.get("host_idle", 0) - sum(w["cpu"].values()) - w.get("client", 0)
        print("%-4s %4d %9.1f %9.1f %5.0f%% %5.0f%% %5.0f%% %5.1f%% %5.1f%% %5.1f%% %5.1f%% "
              "%5.1f%% %5.1f%% %5.0f%% %7.1f %7.2f %7.2f %5.0f%% %5.0f%%" % (
                  dt, conc, s["tps"], gen / max(w.get("forward", 0), 1e-9), pct["forward"],
                  100.0 * bench_s / wall, 100.0 * bench_cpu / cpu_all, pct["schedule"],
                  pct["sample"], pct["handoff"],
                  pct["idle"], 100.0 * w["cpu"].get("loop", 0) / wall,
                  100.0 * w.get("client", 0) / wall, 100.0 * other / wall,
                  rps, 1e3 * w.get("forward", 0) / steps, 1e3 * bench_s / steps,
                  100.0 * tenant / host, 100.0 * w.get("host_idle", 0) / host))
    print("served/s: completion tokens/s at the client; fwd tok/s: the window's tokens over its "
          "forward seconds; fwd: forward seconds / wall = served over forward; bench: "
          "forward-bench's time for the same steps / wall; cpu: forward-bench's CPU seconds for "
          "the same steps / the server's (every thread); sched..idle: the scheduler thread's "
          "other phases / wall; loop: the loop thread's CPU / wall; client: the load "
          "generator's CPU / wall (it shares the cores); other: the compute and "
          "other threads' CPU / wall; rows/st: rows per step; fwd ms: the server's forward "
          "ms per step; bench: forward-bench's ms per step for the same steps; tenant: the host's "
          "CPU time that was neither the server's nor the client's (other tenants) over the "
          "host's (every core); hidle: the host's idle time over it")
    print("\nbatch 1, ms per generated token:")
    print("%-5s %7s %7s %7s %7s %7s %7s %7s %7s %6s %6s %7s %7s %7s %7s %7s %8s %7s" % (
        "dtype", "served", "srv p50", "srv fwd", "bench", "dec 1", "prompt", "bound", "b same",
        "of b", "of bs", "own", "idle", "loop", "client", "cpu", "preempt", "tok/s"))
    for dt, conc, s, w, bench in rows:
        if conc != 1 or not s["tps"]:
            continue
        gen = max(w.get("generation_tokens", 0), 1)
        steps = max(w.get("scheduler_steps", 0), 1)
        served = 1e3 / s["tps"]
        fwd = 1e3 * w.get("forward", 0) / gen
        same = bench_window_ms(bench, w, conc) / gen
        # The window's steps: prompts (PROMPT_TOKENS rows each) and 1-row decodes, each at
        # forward-bench's bound for that step.
        prompts = prompt_steps(w)
        dec_bound = 1e3 / bench["dec1"].bound
        prompt_bound = 1e3 * PROMPT_TOKENS / bench["prompt"].bound
        same_bound = ((steps - prompts) * dec_bound + prompts * prompt_bound) / gen
        spt = sorted(s.get("req_spt", []))
        p50 = "%7.2f" % (1e3 * spt[len(spt) // 2]) if spt else "%7s" % "-"
        print("%-5s %7.2f %s %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %5.0f%% %5.0f%% %7.2f %7.2f "
              "%7.3f %7.3f %7.2f %8.2f %7.1f" % (
                  dt, served, p50, fwd, same, bench["dec1"].ms, same - bench["dec1"].ms, dec_bound,
                  same_bound, 100.0 * dec_bound / served, 100.0 * same_bound / served,
                  served - fwd, 1e3 * w.get("idle", 0) / gen,
                  1e3 * w["cpu"].get("loop", 0) / gen, 1e3 * w.get("client", 0) / gen,
                  1e3 * sum(w["cpu"].values()) / gen, w.get("preempted", 0) / steps, s["tps"]))
    print("served: wall / tokens (lean client: the window is whole requests, prompts and the "
          "gaps between them included); srv p50: the median request's ms per token (sent to "
          "the next one sent; lean client only): bursts of other load on a shared host raise "
          "the mean, not this; srv fwd: the server's forward seconds per token; bench: "
          "forward-bench's time for the same steps per token (srv fwd - bench: the served "
          "forward passes' slowdown, e.g. the loop thread and the client taking a compute "
          "thread's core); dec 1: forward-bench's batch-1 decode step; prompt: bench - dec 1, "
          "the prompt's share (a %d-row step per request, at forward-bench's time for it); bound: "
          "the read-bandwidth bound of a decode step; b same: the bound of the same steps, the "
          "decodes' read bound plus the prompt steps' full roofline (forward-bench's), per "
          "token; of b, of bs: bound / served and b same / "
          "served; own: served - srv fwd, the server's time outside the forward pass "
          "(scheduling, sampling, detokenizing, events, hand-off, and idle: waiting for the "
          "client's next request); loop, client: CPU ms per token of the loop thread and of "
          "the client (lean: its reading thread in the window; asyncio: the whole load "
          "generator); cpu: CPU ms of every server thread per token; preempt: times "
          "the scheduler thread lost its core involuntarily, per step" % PROMPT_TOKENS)


if __name__ == "__main__":
    main()
