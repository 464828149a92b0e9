#!/usr/bin/python3
"""Soak: a bounded mixed load against the real `nano-vllm serve`, and what must hold after it.

    soak.py NANO_VLLM MODEL_DIR [--seconds 600] [--concurrency 48] [--warmup 0.2]
            [--kv-cache-memory 32M] [--seed 1]

Starts the server on 127.0.0.1 port 0, then CONCURRENCY client threads send requests for
SECONDS: streaming and not, short and long prompts, stop strings, n > 1, logprobs and echo,
and cancels (a streaming client that leaves after a few events). Every request is checked
to get exactly one complete answer (a JSON body whose choices, finish reasons and usage
agree; or an SSE stream ending in data: [DONE] and the last chunk), or a clean 4xx error
object (429 when the queue is full). RSS is sampled every 5 s.

Passes (exit 0) when: zero 5xx, zero lost or malformed answers, RSS at the end within 1%
of RSS at the end of the warm-up (the first WARMUP fraction of the run), and afterwards
nothing runs or waits and every KV block is free. Prints one summary with the figures.
"""

import argparse
import http.client
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time

WORDS = ("the of and to in is was for on that with as by at from his her it an were are "
         "which this be or has had not but one their they new first after who two all "
         "time year city during world people").split()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {}
        self.problems = []

    def add(self, key, problem=None):
        with self.lock:
            self.n[key] = self.n.get(key, 0) + 1
            if problem and len(self.problems) < 20:
                self.problems.append(problem)


def start_server(args):
    cmd = [args.bin, "serve", args.model, "--port", "0", "--kv-cache-memory",
           args.kv_cache_memory, "--max-waiting", "256"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    port, log = None, []
    ready = threading.Event()

    def read():
        nonlocal port
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(log) < 200 or " error " in line or "warn" in line:
                log.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(30)
    if not port:
        sys.exit("server did not start:\n" + "\n".join(log[-20:]))
    end = time.time() + 60
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    return proc, port, log


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    out = {}
    for line in c.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def mappings_kb(pid):
    """Resident kB per mapping ("[heap]", a file, or the start address of an anonymous one)."""
    out, cur = {}, None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            w = line.split()
            if "-" in w[0] and not w[0].endswith(":"):
                cur = w[5] if len(w) > 5 else "anon@" + w[0].split("-")[0]
            elif w[0] == "Rss:" and cur:
                out[cur] = out.get(cur, 0) + int(w[1])
    return out


def make_request(rng):
    """A random request body and what kind of client sends it."""
    long_prompt = rng.random() < 0.25
    n_words = rng.randint(100, 180) if long_prompt else rng.randint(1, 20)
    prompt = " ".join(rng.choice(WORDS) for _ in range(n_words))
    body = {"prompt": prompt, "max_tokens": rng.randint(1, 40 if long_prompt else 64),
            "temperature": rng.choice([0, 0.7, 1.0]), "seed": rng.randint(0, 1 << 30)}
    if rng.random() < 0.3:
        body["stop"] = rng.sample([" the", "\n", ".", " and", ","], rng.randint(1, 3))
    if rng.random() < 0.25:
        body["n"] = rng.randint(2, 4)
        body["temperature"] = 0.8
    if rng.random() < 0.15:
        body["logprobs"] = rng.randint(0, 5)
        body["echo"] = rng.random() < 0.5
    if rng.random() < 0.1:
        body["prompt"] = [prompt, prompt[: len(prompt) // 2] or "x"]
    if rng.random() < 0.2:
        body["ignore_eos"] = True
    kind = rng.choices(["plain", "stream", "cancel"], [0.45, 0.4, 0.15])[0]
    if kind != "plain":
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
    return kind, body


def n_choices(body):
    return (len(body["prompt"]) if isinstance(body["prompt"], list) else 1) * body.get("n", 1)


def check_json(status, data, body, st):
    if status >= 500:
        st.add("5xx", "status %d: %r" % (status, data[:200]))
        return
    if status != 200:
        try:
            err = json.loads(data)["error"]
            assert set(err) == {"message", "type", "param", "code"}
            st.add("4xx-%d" % status)
        except (ValueError, KeyError, TypeError, AssertionError):
            st.add("bad", "status %d without an error object: %r" % (status, data[:200]))
        return
    try:
        out = json.loads(data)
        ch = out["choices"]
        assert len(ch) == n_choices(body), "choices %d" % len(ch)
        assert sorted(c["index"] for c in ch) == list(range(len(ch)))
        assert all(c["finish_reason"] in ("length", "stop") for c in ch)
        u = out["usage"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        assert u["completion_tokens"] <= body["max_tokens"] * len(ch)
        st.add("ok-plain")
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        st.add("bad", "malformed answer (%s): %r" % (e, data[:300]))


def read_stream(sock, leave_after, body, st):
    """Reads a chunked SSE answer; returns when complete, or after leave_after events."""
    buf, events, done_seen, finished = b"", 0, False, set()
    head = b""
    while b"\r\n\r\n" not in head:
        d = sock.recv(65536)
        if not d:
            st.add("bad", "closed before the status line")
            return
        head += d
    head, _, buf = head.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        # A plain JSON error (Content-Length) follows.
        m = re.search(rb"content-length: *(\d+)", head, re.I)
        want = int(m.group(1)) if m else 0
        while len(buf) < want:
            d = sock.recv(65536)
            if not d:
                break
            buf += d
        check_json(status, buf, body, st)
        return
    data = b""
    while True:
        while b"\r\n" not in buf:
            d = sock.recv(65536)
            if not d:
                st.add("bad", "stream cut after %d events" % events)
                return
            buf += d
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(buf) < size + 2:
            d = sock.recv(65536)
            if not d:
                st.add("bad", "stream cut inside a chunk")
                return
            buf += d
        chunk, buf = buf[:size], buf[size + 2:]
        if size == 0:
            break
        data += chunk
        while b"\n\n" in data:
            ev, _, data = data.partition(b"\n\n")
            if ev.startswith(b":"):
                continue
            if ev == b"data: [DONE]":
                done_seen = True
                continue
            events += 1
            try:
                obj = json.loads(ev[6:])
                if "error" in obj:
                    st.add("bad", "error event: %r" % ev[:200])
                for c in obj.get("choices", []):
                    if c.get("finish_reason"):
                        finished.add(c["index"])
            except ValueError:
                st.add("bad", "malformed event %r" % ev[:200])
            if leave_after is not None and events >= leave_after:
                st.add("cancelled")
                return
    if not done_seen or len(finished) != n_choices(body):
        st.add("bad", "stream ended without [DONE] or finish reasons (%d of %d)"
               % (len(finished), n_choices(body)))
    else:
        st.add("ok-stream")


def client(port, rng, deadline, st):
    while time.time() < deadline:
        kind, body = make_request(rng)
        payload = json.dumps(body).encode()
        try:
            if kind == "plain":
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                c.request("POST", "/v1/completions", payload,
                          {"Content-Type": "application/json"})
                r = c.getresponse()
                check_json(r.status, r.read(), body, st)
                c.close()
            else:
                s = socket.create_connection(("127.0.0.1", port), timeout=120)
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
                          + payload)
                read_stream(s, rng.randint(1, 8) if kind == "cancel" else None, body, st)
                s.close()
        except (OSError, http.client.HTTPException) as e:
            st.add("bad", "%s request failed: %r" % (kind, e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=48)
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--kv-cache-memory", default="8M")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    proc, port, log = start_server(args)
    st = Stats()
    t0 = time.time()
    deadline = t0 + args.seconds
    rng = random.Random(args.seed)
    threads = [threading.Thread(target=client, args=(port, random.Random(rng.random()), deadline,
                                                     st), daemon=True)
               for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    samples, rss_warm, maps_warm = [], None, {}
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        el = time.time() - t0
        samples.append((el, rss_kb(proc.pid)))
        if rss_warm is None and el >= args.warmup * args.seconds:
            rss_warm = samples[-1][1]
            maps_warm = mappings_kb(proc.pid)
    for t in threads:
        t.join(180)
    elapsed = time.time() - t0

    # Idle afterwards: nothing runs or waits, every block free.
    end = time.time() + 30
    m = {}
    while time.time() < end:
        m = metrics(port)
        if (m.get("nano_vllm_num_requests_running") == 0 and
                m.get("nano_vllm_num_requests_waiting") == 0 and
                m.get("nano_vllm_kv_cache_blocks_used") == 0):
            break
        time.sleep(0.2)
    rss_end = rss_kb(proc.pid)
    maps_end = mappings_kb(proc.pid)
    grew = sorted(((maps_end[k] - maps_warm.get(k, 0), k) for k in maps_end), reverse=True)[:3]
    fivexx = sum(v for k, v in m.items()
                 if k.startswith('nano_vllm_http_requests_total{status="5') and '"503"' not in k)
    proc.terminate()
    rc = proc.wait(60)

    total = sum(st.n.values())
    growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm else float("nan")
    print("soak: %.0f s, %d clients, %d requests (%.1f/s): %s" % (
        elapsed, args.concurrency, total, total / elapsed,
        ", ".join("%s %d" % kv for kv in sorted(st.n.items()))))
    print("soak: generation tokens %d, preemptions %d, 5xx (server count) %d" % (
        m.get("nano_vllm_generation_tokens_total", 0), m.get("nano_vllm_num_preemptions_total", 0),
        fivexx))
    print("soak: RSS kB start %d, after warm-up (%.0f s) %d, end %d: growth %.2f%% after warm-up"
          % (samples[0][1] if samples else 0, args.warmup * args.seconds, rss_warm or 0, rss_end,
             growth))
    print("soak: RSS growth after warm-up by mapping: " +
          ", ".join("%s %+d kB" % (k, d) for d, k in grew))
    print("soak: RSS kB every 5 s: " + " ".join(str(r) for _, r in samples))
    print("soak: at the end running %d, waiting %d, KV blocks used %d of %d; server exit %d" % (
        m.get("nano_vllm_num_requests_running", -1), m.get("nano_vllm_num_requests_waiting", -1),
        m.get("nano_vllm_kv_cache_blocks_used", -1), m.get("nano_vllm_kv_cache_blocks", -1),
        rc))
    fails = []
    if st.n.get("5xx") or fivexx:
        fails.append("5xx answers")
    if st.n.get("bad"):
        fails.append("%d lost or malformed answers" % st.n["bad"])
    if not (growth < 1.0):
        fails.append("RSS grew %.2f%% after warm-up" % growth)
    if (m.get("nano_vllm_num_requests_running") != 0 or m.get("nano_vllm_num_requests_waiting")
            != 0 or m.get("nano_vllm_kv_cache_blocks_used") != 0):
        fails.append("not idle at the end")
    if rc != 0:
        fails.append("server exit status %d" % rc)
    for p in st.problems:
        print("  problem:", p)
    print("soak: " + ("PASS" if not fails else "FAIL: " + "; ".join(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
