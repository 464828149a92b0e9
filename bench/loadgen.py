#!/usr/bin/python3
"""Streaming load generator for `nano-vllm serve`: tokens/s, TTFT and inter-token latency.

    bench/loadgen.py --url http://127.0.0.1:8000 [options]
    bench/loadgen.py --server build/server/nano-vllm --model models/gpt2 [options]

For each concurrency level (default 1, 8, 32, 64) it keeps that many streaming completions
(stream: true, include_usage) in flight for --duration seconds (at most --max-requests per
level), each a greedy continuation (ignore_eos) of --max-tokens tokens after a prompt of
--prompt-tokens token ids (distinct per request, so no prefix is cached), and reports:
  - aggregate completion tokens/s (the usage chunk's completion_tokens over wall time),
  - time to first token (request sent -> first text event) p50/p90/p99,
  - inter-token latency (gap between text events / tokens in the later one) p50/p90/p99,
  - the ratio of tokens/s to the linear bound: level x tokens/s at the first level, measured
    in the same run (1.0 = perfect scaling),
  - the server's RSS (VmRSS, and VmHWM at the end) when it was started here or --pid is given.
Every level is bounded in time and count. One asyncio loop drives all clients over raw
sockets, so the client costs little next to the server.
"""

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "The quick brown fox", "Once upon a time", "In a hole in the ground there lived",
    "It was the best of times", "The meaning of life is", "Call me Ishmael.",
    "A long time ago in a galaxy far, far away", "To be, or not to be",
]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


async def one_stream(host, port, body, key, stats):
    payload = json.dumps(body).encode()
    auth = ("Authorization: Bearer %s\r\n" % key).encode() if key else b""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     % host.encode() + auth + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            stats["errors"][status.decode().strip()] = stats["errors"].get(status.decode().strip(), 0) + 1
            return
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        buf, last, first = b"", None, None
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            buf += data[:-2]
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
                    continue
                obj = json.loads(ev[6:])
                now = time.monotonic()
                if obj.get("usage"):
                    stats["tokens"] += obj["usage"]["completion_tokens"]
                for c in obj.get("choices", []):
                    if not c["text"] and not c["finish_reason"]:
                        continue
                    if first is None:
                        first = now
                        stats["ttft"].append(now - t0)
                    elif last is not None:
                        stats["itl"].append(now - last)
                    last = now
        stats["done"] += 1
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        stats["errors"][type(e).__name__] = stats["errors"].get(type(e).__name__, 0) + 1
    finally:
        writer.close()


def prompt(i, n):
    """Request i's prompt: n token ids when n > 0 (seeded by i, so no two requests share a
    prefix the server could cache), else one of PROMPTS as text."""
    if n <= 0:
        return PROMPTS[i % len(PROMPTS)]
    x = (i + 1) * 2654435761 % 2**32
    ids = []
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        ids.append(x % 50000)
    return ids


async def level(host, port, conc, args):
    stats = {"tokens": 0, "ttft": [], "itl": [], "done": 0, "errors": {}}
    end = time.monotonic() + args.duration
    started = [0]

    async def worker(w):
        i = w
        while time.monotonic() < end and started[0] < args.max_requests:
            started[0] += 1
            body = {"prompt": prompt(i, args.prompt_tokens), "max_tokens": args.max_tokens,
                    "temperature": 0, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            if args.model_name:
                body["model"] = args.model_name
            await one_stream(host, port, body, args.api_key, stats)
            i += conc

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(conc)))
    stats["wall"] = time.monotonic() - t0
    return stats


def rss(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) // 1024
    except OSError:
        pass
    return out


def start_server(args):
    cmd = [args.server, "serve", args.model, "--port", "0"] + args.server_arg
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    port, ready = [], threading.Event()

    def read():
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            m = re.search(r"listening on [0-9.]+:(\d+)", line)
            if m:
                port.append(int(m.group(1)))
            if line.rstrip().endswith(" ready"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120) or not port or proc.poll() is not None:
        proc.kill()
        sys.exit("loadgen: the server did not start")
    return proc, "http://127.0.0.1:%d" % port[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server")
    ap.add_argument("--server", help="the nano-vllm binary to start (with --model)")
    ap.add_argument("--model", help="model directory for --server")
    ap.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    ap.add_argument("--pid", type=int, help="pid of the running server, for its RSS")
    ap.add_argument("--model-name", help="the 'model' field to send")
    ap.add_argument("--api-key", default=os.environ.get("NANO_VLLM_API_KEY"))
    ap.add_argument("--levels", default="1,8,32,64", help="concurrency levels")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=64,
                    help="prompt length in tokens (ids, distinct per request); 0 = short text")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per level (bound)")
    ap.add_argument("--max-requests", type=int, default=2000, help="requests per level (bound)")
    args = ap.parse_args()

    proc = None
    if args.server:
        if not args.model:
            sys.exit("loadgen: --server needs --model")
        proc, args.url = start_server(args)
        args.pid = proc.pid
    if not args.url:
        sys.exit("loadgen: give --url or --server and --model")
    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port or 80

    print("%6s %9s %7s %8s %8s %8s %8s %8s %8s %7s %8s" % (
        "conc", "tokens/s", "vs lin", "ttft p50", "p90", "p99", "itl p50", "p90", "p99", "done",
        "RSS MiB"))
    base = None
    try:
        for conc in [int(c) for c in args.levels.split(",")]:
            s = asyncio.run(level(host, port, conc, args))
            tps = s["tokens"] / s["wall"] if s["wall"] else 0.0
            if base is None:
                base = tps / conc if conc else 0.0
            ratio = tps / (base * conc) if base else float("nan")
            mem = rss(args.pid) if args.pid else {}
            print("%6d %9.1f %7.2f %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f %7d %8s" % (
                conc, tps, ratio, 1e3 * pct(s["ttft"], 50), 1e3 * pct(s["ttft"], 90),
                1e3 * pct(s["ttft"], 99), 1e3 * pct(s["itl"], 50), 1e3 * pct(s["itl"], 90),
                1e3 * pct(s["itl"], 99), s["done"], mem.get("VmRSS", "-")), flush=True)
            if s["errors"]:
                print("       errors: %s" % s["errors"], flush=True)
        if args.pid:
            print("server peak RSS (VmHWM): %s MiB" % rss(args.pid).get("VmHWM", "-"))
        print("(latencies in ms; 'vs lin' = tokens/s over level x the first level's per-stream "
              "tokens/s)")
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
