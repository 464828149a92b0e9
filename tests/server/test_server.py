#!/usr/bin/python3
"""Integration tests: the real `nano-vllm serve` on a loopback port, driven by real clients.

    test_server.py NANO_VLLM CKPT_DIR GPT2_REF [GROUP ...]

Starts the binary on 127.0.0.1 port 0 with the tiny test checkpoint (it logs "listening on
127.0.0.1:PORT"), talks to it with http.client, raw sockets and curl, and compares what the
model says with the PyTorch reference gpt2_ref.py. Groups: api (every endpoint and
parameter), stream (framing byte for byte, 32 concurrent streams, a seeded request's
logprobs alone and under load, a client killed mid-stream), errors (every error status),
auth, drain, genconfig (generation_config.json's sampling defaults). Without GROUP all run.
The exit status is the verdict; each failure prints what was expected and what came.
"""

import errno
import functools
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BIN, CKPT_DIR, GPT2_REF = sys.argv[1:4]
GROUPS = sys.argv[4:]
MODEL = os.path.join(CKPT_DIR, "tiny-f32")
FAILURES = []


def check(cond, what, got=None, want=None):
    if not cond:
        msg = what
        if got is not None or want is not None:
            msg += "\n    got:  %r\n    want: %r" % (got, want)
        where = traceback.extract_stack()[-2]
        FAILURES.append("%s:%d: %s" % (os.path.basename(where.filename), where.lineno, msg))
        print("FAIL", FAILURES[-1], file=sys.stderr)
    return cond


def check_eq(got, want, what):
    return check(got == want, what, got, want)


# ---- the server ----------------------------------------------------------------------------

class Server:
    """One `nano-vllm serve` process; its log lines are kept in self.log."""

    def __init__(self, *args, env=None, wait_ready=True, model=MODEL):
        e = dict(os.environ)
        e.update(env or {})
        # A small KV pool: the tests need few blocks, and a big one only costs start-up time.
        self.proc = subprocess.Popen([BIN, "serve", model, "--port", "0", "--kv-cache-memory",
                                      "64M"] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e)
        self.log = []
        self.port = None
        self.listening = threading.Event()
        self.ready_logged = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.listening.wait(20)
        if wait_ready and self.port:
            self.wait_health(200, 30)
            # /health can answer 200 before this thread has read the start-up lines (the
            # model's line, then "ready"), which the tests parse: wait for them too.
            if not self.ready_logged.wait(10):
                raise RuntimeError("no 'ready' line; log:\n" + "\n".join(self.log[-30:]))

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.listening.set()
            if re.search(r' srv ready$|"component":"srv","msg":"ready"}$', line):  # text, json
                self.ready_logged.set()
        self.listening.set()
        self.ready_logged.set()

    def wait_health(self, status, timeout):
        end = time.time() + timeout
        while time.time() < end:
            try:
                if request(self, "GET", "/health")[0] == status:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not healthy; log:\n" + "\n".join(self.log[-30:]))

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.reader.join(5)
        # Under the sanitizers a report does not always change the exit status: look for one.
        bad = [l for l in self.log if "runtime error" in l or "Sanitizer" in l]
        check(not bad, "no sanitizer report in the server log", bad[:5])
        if rc == 0:  # a clean exit closed every handle: uv_loop_close returned 0
            check(any(l.endswith(" stopped") or '"msg":"stopped"' in l for l in self.log),
                  "the server logged its stop")
            check(not any("handles left" in l for l in self.log), "uv_loop_close() == 0")
        return rc


def sanitized(pid):
    """True when the process runs with ASan or TSan, whose allocators hold on to freed memory."""
    with open("/proc/%d/maps" % pid) as f:
        return any("libasan" in l or "libtsan" in l for l in f)


def time_scale(srv):
    """The factor wall-clock bounds are multiplied by: 1, or 3 under ASan and 5 under TSan,
    which slow the server (as tests/time_scale.h for the C tests)."""
    if not hasattr(srv, "time_scale"):
        with open("/proc/%d/maps" % srv.proc.pid) as f:
            maps = f.read()
        srv.time_scale = 5 if "libtsan" in maps else 3 if "libasan" in maps else 1
    return srv.time_scale


def conn(srv, timeout=60):
    """A client connection; its socket timeout is scaled under the sanitizers (a request
    that waits behind others for a whole completion can take minutes under TSan)."""
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout * time_scale(srv))


def request(srv, method, path, body=None, headers=None, c=None):
    """Returns (status, headers dict (lower-case names), body bytes)."""
    own = c is None
    c = c or conn(srv)
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    if own:
        c.close()
    return r.status, hdrs, data


def complete(srv, body, headers=None):
    status, _, data = request(srv, "POST", "/v1/completions", body, headers)
    if not check_eq(status, 200, "POST /v1/completions %s: %s" % (json.dumps(body)[:200], data[:300])):
        return None
    return json.loads(data)


def reference(tokens, greedy=0, logprobs=None):
    args = [sys.executable, GPT2_REF, MODEL, "--tokens", ",".join(map(str, tokens)), "--out", "-"]
    if greedy:
        args += ["--greedy", str(greedy)]
    if logprobs is not None:
        args += ["--logprobs", str(logprobs)]
    return json.loads(subprocess.run(args, check=True, capture_output=True).stdout)


def tokenize(srv, text):
    status, _, data = request(srv, "POST", "/tokenize", {"prompt": text})
    check_eq(status, 200, "POST /tokenize")
    return json.loads(data)["tokens"]


def detokenize(srv, ids):
    status, _, data = request(srv, "POST", "/detokenize", {"tokens": ids})
    check_eq(status, 200, "POST /detokenize")
    return json.loads(data)["prompt"]


def metrics(srv):
    status, hdrs, data = request(srv, "GET", "/metrics")
    check_eq(status, 200, "GET /metrics")
    out = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def check_error(status, data, want_status, what, code=None, param=None):
    """An OpenAI error object with the right status."""
    if not check_eq(status, want_status, what + ": status (body %r)" % data[:300]):
        return
    try:
        err = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        check(False, what + ": not an error object", data[:300])
        return
    check(set(err) == {"message", "type", "param", "code"}, what + ": error fields", sorted(err))
    check(isinstance(err["message"], str) and err["message"], what + ": message", err)
    if code is not None:
        check_eq(err["code"], code, what + ": code")
    if param is not None:
        check_eq(err["param"], param, what + ": param")


# ---- SSE over a raw socket -----------------------------------------------------------------

def raw_stream(srv, body, extra_headers=b"", read_events=None):
    """POSTs body with stream true over a raw socket. Returns (status line, headers dict,
    list of chunk payloads as sent, the de-chunked body bytes). With read_events, returns
    the open socket after that many "data:" events instead of reading to the end."""
    payload = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + extra_headers + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    chunks, body_bytes = [], b""
    buf = rest
    while True:
        while b"\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return lines[0], headers, chunks, body_bytes
            buf += d
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(buf) < size + 2:
            d = s.recv(65536)
            if not d:
                return lines[0], headers, chunks, body_bytes
            buf += d
        data, buf = buf[:size], buf[size + 2:]
        if size == 0:
            break
        chunks.append(data)
        body_bytes += data
        if read_events is not None and body_bytes.count(b"data: ") >= read_events:
            return s
    s.close()
    return lines[0], headers, chunks, body_bytes


def parse_sse(body_bytes, what):
    """Splits an SSE body into its JSON events, checking the framing byte for byte."""
    check(body_bytes.endswith(b"data: [DONE]\n\n"), what + ": ends with data: [DONE]",
          body_bytes[-60:])
    events = body_bytes.split(b"\n\n")
    check_eq(events[-1], b"", what + ": nothing after the last event")
    out = []
    for ev in events[:-1]:
        if not check(ev.startswith(b"data: ") and b"\n" not in ev, what + ": one data line per event", ev[:200]):
            continue
        if ev == b"data: [DONE]":
            continue
        out.append(json.loads(ev[6:]))
    check_eq(events.count(b"data: [DONE]"), 1, what + ": one [DONE]")
    return out


# ---- group: api ----------------------------------------------------------------------------

def test_endpoints(srv):
    status, hdrs, data = request(srv, "GET", "/health")
    check_eq(status, 200, "GET /health")
    status, hdrs, data = request(srv, "HEAD", "/health")
    check_eq(status, 200, "HEAD /health")
    status, hdrs, data = request(srv, "GET", "/version")
    check_eq(status, 200, "GET /version")
    check(re.match(r"\d+\.\d+\.\d+", json.loads(data)["version"]), "version string", data)
    status, hdrs, data = request(srv, "GET", "/v1/models")
    check_eq(status, 200, "GET /v1/models")
    models = json.loads(data)
    check_eq(models["object"], "list", "models object")
    check_eq([m["id"] for m in models["data"]], ["tiny-f32"], "model ids (the directory name)")
    check_eq(models["data"][0]["object"], "model", "model object")
    check_eq(models["data"][0]["max_model_len"], 256, "model max_model_len")
    status, _, data = request(srv, "GET", "/v1/models/tiny-f32")
    check_eq(status, 200, "GET /v1/models/tiny-f32")
    check_eq(json.loads(data)["id"], "tiny-f32", "single model")
    status, _, data = request(srv, "GET", "/v1/models/nope")
    check_error(status, data, 404, "GET /v1/models/nope", code="model_not_found")
    status, hdrs, data = request(srv, "GET", "/metrics")
    check_eq(status, 200, "GET /metrics")
    check(hdrs.get("content-type", "").startswith("text/plain"), "metrics content type", hdrs)
    text = data.decode()
    for name in ["nano_vllm_num_requests_running", "nano_vllm_num_requests_waiting",
                 "nano_vllm_kv_cache_usage_perc", "nano_vllm_prefix_cache_hit_rate",
                 "nano_vllm_num_preemptions_total", "nano_vllm_prompt_tokens_total",
                 "nano_vllm_generation_tokens_total",
                 "nano_vllm_time_to_first_token_seconds_bucket",
                 "nano_vllm_inter_token_latency_seconds_bucket",
                 "nano_vllm_e2e_request_latency_seconds_bucket",
                 "nano_vllm_request_success_total", "nano_vllm_http_requests_total"]:
        check(name in text, "metric %s present" % name)
    # The scheduler thread's seconds by phase: a completion of 5 prompt and 4 new tokens
    # adds 8 forward rows (the last token is never fed back) and forward time; no phase
    # runs backwards; together they are the thread's wall time, at most the time between.
    # The server reads its counters while answering, so the clocks are taken before the
    # first read is sent and after the second one is answered: that interval holds the
    # server's, however late a loaded machine delivers the answers.
    phases = ["schedule", "forward", "sample", "handoff", "idle"]
    key = 'nano_vllm_engine_seconds_total{phase="%s"}'
    t0 = time.monotonic()
    m0 = metrics(srv)
    complete(srv, {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "ignore_eos": True})
    m1 = metrics(srv)
    t1 = time.monotonic()
    check_eq(m1.get("nano_vllm_forward_tokens_total", 0) - m0.get("nano_vllm_forward_tokens_total", 0),
             8, "forward rows of one completion")
    check(m1.get(key % "forward", 0) > m0.get(key % "forward", 0), "forward seconds grow",
          m1.get(key % "forward"))
    for p in phases:
        check(key % p in m1 and m1[key % p] >= m0.get(key % p, 0), "phase %s counted" % p)
    busy = sum(m1.get(key % p, 0) - m0.get(key % p, 0) for p in phases)
    check(busy <= (t1 - t0) + 0.05, "phases within the wall time",
          (busy, t1 - t0, {p: (m0.get(key % p), m1.get(key % p)) for p in phases}))

    ids = tokenize(srv, "Hello world, how are you?")
    check_eq(ids, [15496, 995, 11, 703, 389, 345, 30], "tokenize ids (GPT-2 BPE)")
    status, _, data = request(srv, "POST", "/tokenize", {"prompt": "Hello world"})
    tok = json.loads(data)
    check_eq((tok["count"], tok["max_model_len"]), (2, 256), "tokenize count and max_model_len")
    check_eq(detokenize(srv, ids), "Hello world, how are you?", "detokenize round trip")


PROMPT = [464, 2068, 7586, 21831, 18045]  # "The quick brown fox jumps"


@functools.lru_cache(maxsize=None)
def reference_greedy6():
    """The reference's 6 greedy tokens after PROMPT (one PyTorch run for every test)."""
    return reference(PROMPT, greedy=6)["greedy"]


def check_reference_greedy(s, what):
    """A 6-token greedy completion of PROMPT on server s is the reference's."""
    r = complete(s, greedy_body(PROMPT, 6))
    if r:
        check_eq(r["choices"][0]["text"], detokenize(s, reference_greedy6()),
                 "greedy text %s = reference greedy" % what)


def greedy_body(prompt, n_tokens, **kw):
    b = {"model": "tiny-f32", "prompt": prompt, "max_tokens": n_tokens, "temperature": 0,
         "ignore_eos": True}
    b.update(kw)
    return b


def test_greedy_and_logprobs(srv):
    prompt = PROMPT
    ref = reference(prompt, greedy=6, logprobs=3)
    status, hdrs, data = request(srv, "POST", "/v1/completions",
                                 greedy_body(prompt, 6, logprobs=3, echo=True))
    check_eq(status, 200, "completion with logprobs and echo")
    if status != 200:
        return
    r = json.loads(data)
    check_eq(hdrs.get("x-request-id"), r["id"], "X-Request-Id is the completion id")
    check(r["id"].startswith("cmpl-"), "id prefix", r["id"])
    check_eq(r["object"], "text_completion", "object")
    check(isinstance(r["created"], int) and abs(r["created"] - time.time()) < 60, "created", r["created"])
    check_eq(r["model"], "tiny-f32", "model")
    check_eq(r["usage"], {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}, "usage")
    ch = r["choices"][0]
    check_eq((ch["index"], ch["finish_reason"]), (0, "length"), "index and finish_reason")
    lp = ch["logprobs"]
    all_ids = prompt + ref["greedy"]
    check_eq(len(lp["tokens"]), 11, "logprobs over prompt (echo) and completion")
    check_eq(lp["tokens"], [detokenize(srv, [t]) for t in all_ids], "logprobs tokens are the ids' text")
    check_eq(ch["text"], detokenize(srv, all_ids), "echo text = prompt + greedy continuation")
    want = ref["logprobs"]
    check(lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None,
          "first prompt token has no logprob", lp["token_logprobs"][:1])
    for i in range(1, 11):
        got, exp = lp["token_logprobs"][i], want["token_logprobs"][i]
        check(got is not None and abs(got - exp) < 2e-3,
              "token_logprobs[%d] vs the reference's log-softmax" % i, got, exp)
        tops = lp["top_logprobs"][i]
        ref_top = {detokenize(srv, [t]): v for t, v in want["top_logprobs"][i]}
        for t, v in ref_top.items():
            check(t in tops and abs(tops[t] - v) < 2e-3, "top_logprobs[%d][%r]" % (i, t), tops.get(t), v)
    offs = lp["text_offset"]
    check_eq(offs[0], 0, "text_offset starts at 0")
    check(all(a <= b for a, b in zip(offs, offs[1:])), "text_offset ascending", offs)
    check_eq(offs[5], len(detokenize(srv, prompt)), "text_offset of the first generated token")

    # Without echo: only the completion; logprobs 0 still lists the chosen token.
    r = complete(srv, greedy_body(prompt, 6, logprobs=0))
    if r:
        ch = r["choices"][0]
        check_eq(ch["text"], detokenize(srv, ref["greedy"]), "greedy text = reference greedy")
        check_eq(len(ch["logprobs"]["tokens"]), 6, "logprobs tokens without echo")
        check(all(len(t) == 1 for t in ch["logprobs"]["top_logprobs"]), "logprobs 0: the chosen token only",
              ch["logprobs"]["top_logprobs"])
        check_eq(ch["logprobs"]["text_offset"][0], 0, "text_offset without echo starts at 0")

    # Scoring: echo with max_tokens 0.
    r = complete(srv, {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1})
    if r:
        ch = r["choices"][0]
        check_eq(ch["text"], detokenize(srv, prompt), "scoring echoes the prompt only")
        check_eq(len(ch["logprobs"]["token_logprobs"]), 5, "scoring logprobs per prompt token")
        for i in range(1, 5):
            check(abs(ch["logprobs"]["token_logprobs"][i] - want["token_logprobs"][i]) < 2e-3,
                  "scoring logprob %d" % i, ch["logprobs"]["token_logprobs"][i], want["token_logprobs"][i])
        check_eq(r["usage"]["completion_tokens"], 0, "scoring completion_tokens")

    # Echo without logprobs: the text starts with the prompt text.
    r = complete(srv, greedy_body("Once upon a time", 4, echo=True))
    if r:
        check(r["choices"][0]["text"].startswith("Once upon a time"), "echo text", r["choices"][0]["text"])
        check(len(r["choices"][0]["text"]) > len("Once upon a time"), "echo plus completion")


def kv_pool(srv):
    """(blocks, dtype) from the server's start-up line."""
    for line in srv.log:
        m = re.search(r"KV pool (\d+) blocks of \d+ tokens, (\w+),", line)
        if m:
            return int(m.group(1)), m.group(2)
    return None, None


def test_kv_f16(srv):
    """--kv-cache-dtype f16: twice the blocks in the same memory, the reference's greedy text
    and logprobs within the F16 rounding, and n = 2 (a copied partly filled block) as n = 1."""
    blocks32, dtype32 = kv_pool(srv)
    check_eq(dtype32, "f32", "the KV cache of F32 weights is F32 by default")
    kernel = [m.groups() for m in (re.search(r"; kernel (\w+), (\d+) compute threads$", l)
                                   for l in srv.log) if m]
    check(len(kernel) == 1 and kernel[0][0] in ("generic", "avx2", "avx512", "amx")
          and int(kernel[0][1]) >= 1, "the start-up line names the kernel and threads", kernel)
    s16 = Server("--kv-cache-dtype", "f16")
    try:
        blocks16, dtype16 = kv_pool(s16)
        check_eq(dtype16, "f16", "--kv-cache-dtype f16 is logged")
        check(blocks32 and blocks16 == 2 * blocks32, "an F16 pool holds twice the blocks",
              blocks16, blocks32)
        prompt = PROMPT
        ref = reference(prompt, greedy=6, logprobs=1)
        r = complete(s16, greedy_body(prompt, 6, logprobs=1, echo=True))
        if r:
            ch = r["choices"][0]
            check_eq(ch["text"], detokenize(s16, prompt + ref["greedy"]),
                     "greedy text with an F16 cache = reference greedy")
            for i in range(1, 11):
                got, exp = ch["logprobs"]["token_logprobs"][i], ref["logprobs"]["token_logprobs"][i]
                check(abs(got - exp) < 2e-2, "F16 cache token_logprobs[%d]" % i, got, exp)
        body = {"prompt": "A prompt of some tokens that ends mid-block", "max_tokens": 24,
                "temperature": 1.0, "seed": 7, "ignore_eos": True}
        one = complete(s16, body)
        two = complete(s16, dict(body, n=2))
        if one and two:
            check_eq(two["choices"][0]["text"], one["choices"][0]["text"],
                     "with an F16 cache n = 2's first completion is the n = 1 completion")
        status, _, data = request(s16, "GET", "/metrics")
        check("nano_vllm_kv_cache_blocks %d" % blocks16 in data.decode(),
              "/metrics counts the F16 pool's blocks", blocks16)
        info = ('nano_vllm_cache_config_info{block_size="16",cache_dtype="f16",num_blocks="%d",'
                'num_gpu_blocks="%d"} 1')
        check(info % (blocks16, blocks16) in data.decode(), "/metrics names the cache dtype",
              info % (blocks16, blocks16))
        status, _, data = request(srv, "GET", "/metrics")
        check(info.replace("f16", "f32") % (blocks32, blocks32) in data.decode(),
              "/metrics names the F32 cache of the main server", blocks32)
    finally:
        check_eq(s16.stop(), 0, "F16-cache server exit status")


def weights(srv):
    """(dtype, MiB) of the weights from the server's start-up line."""
    for line in srv.log:
        m = re.search(r"; weights (\w+) ([\d.]+) MiB;", line)
        if m:
            return m.group(1), float(m.group(2))
    return None, None


def kernel_of(srv):
    """The matrix kernel the start-up line names, or None."""
    found = [m.group(1) for m in (re.search(r"; kernel (\w+), \d+ compute threads$", l)
                                  for l in srv.log) if m]
    return found[0] if found else None


def test_kernel_setting(srv):
    """--kernel picks the matrix kernel (over NANO_VLLM_KERNEL, as every flag over its
    variable): the portable one serves the reference's greedy text; one the CPU lacks stops
    the start with a message that names it."""
    auto = kernel_of(srv)
    check(auto in ("generic", "avx2", "avx512", "amx"), "the main server names its kernel", auto)
    for args, env, want in ((["--kernel", "generic"], {}, "generic"),
                            (["--kernel", "auto"], {"NANO_VLLM_KERNEL": "generic"}, auto)):
        s = Server(*args, env=env)
        try:
            check_eq(kernel_of(s), want, "kernel with %s %s" % (" ".join(args), env))
            check_reference_greedy(s, "on the %s kernel" % want)
        finally:
            check_eq(s.stop(), 0, "server exit status (kernel %s)" % want)
    if auto != "amx":
        p = subprocess.run([BIN, "serve", MODEL, "--port", "0", "--kernel", "amx"],
                           capture_output=True, timeout=60)
        check_eq(p.returncode, 1, "--kernel amx on a CPU without AMX: exit status")
        err = p.stderr.decode()
        check("kernel: 'amx' is not supported by this CPU" in err,
              "--kernel amx on a CPU without AMX: the message names it", err)


def test_weight_bf16x3(srv):
    """--weight-dtype bf16x3: kept so where the kernel is AMX and as F32 elsewhere (forced with
    NANO_VLLM_KERNEL=avx512), in F32's memory, with an F32 KV cache by default, and the
    reference's greedy text."""
    f32 = weights(srv)
    check_eq(f32[0], "f32", "the main server's weights are F32")
    runs = [({}, kernel_of(srv))]
    if runs[0][1] == "amx":
        runs.append(({"NANO_VLLM_KERNEL": "avx512"}, "avx512"))
    for env, kern in runs:
        s = Server("--weight-dtype", "bf16x3", env=env)
        try:
            want = "bf16x3" if kern == "amx" else "f32"
            check_eq(weights(s), (want, f32[1]),
                     "--weight-dtype bf16x3 with the %s kernel: dtype and MiB logged" % kern)
            check_eq(kv_pool(s)[1], "f32", "the KV cache of bf16x3 weights is F32 by default")
            check_reference_greedy(s, "with bf16x3 weights (%s kernel)" % kern)
        finally:
            check_eq(s.stop(), 0, "bf16x3 server exit status")


def test_sampling_params(srv):
    base = {"prompt": "The meaning of life is", "max_tokens": 12, "temperature": 1.0,
            "ignore_eos": True}
    a = complete(srv, dict(base, seed=42))
    b = complete(srv, dict(base, seed=42))
    if a and b:
        check_eq(a["choices"][0]["text"], b["choices"][0]["text"], "same seed, same text")
    texts = set()
    for seed in (1, 2, 3):
        r = complete(srv, dict(base, seed=seed))
        if r:
            texts.add(r["choices"][0]["text"])
    check(len(texts) >= 2, "different seeds give different texts", texts)

    # n: choices 0..n-1, all reproducible with the seed.
    r = complete(srv, dict(base, n=3, seed=7))
    if r:
        check_eq([c["index"] for c in r["choices"]], [0, 1, 2], "n = 3 choice indexes")
        check_eq(r["usage"]["completion_tokens"], 36, "n = 3 completion tokens")
        check_eq(r["usage"]["prompt_tokens"], 5, "n = 3 counts the prompt once")
    # Several prompts and n: index = prompt_index * n + k; greedy choices equal the single run.
    g1 = complete(srv, greedy_body("Alpha beta", 5))
    g2 = complete(srv, greedy_body("Gamma delta", 5))
    r = complete(srv, greedy_body(["Alpha beta", "Gamma delta"], 5, n=2))
    if r and g1 and g2:
        check_eq([c["index"] for c in r["choices"]], [0, 1, 2, 3], "2 prompts x n = 2 indexes")
        texts = [c["text"] for c in r["choices"]]
        check_eq(texts, [g1["choices"][0]["text"]] * 2 + [g2["choices"][0]["text"]] * 2,
                 "choice index = prompt_index * n + k")
    # Prompt as a list of id lists.
    ids = tokenize(srv, "Alpha beta")
    r = complete(srv, greedy_body([ids], 5))
    if r and g1:
        check_eq(r["choices"][0]["text"], g1["choices"][0]["text"], "prompt as ids = prompt as text")

    # max_tokens and finish_reason length.
    r = complete(srv, greedy_body("Hello", 3))
    if r:
        check_eq(r["usage"]["completion_tokens"], 3, "max_tokens 3")
        check_eq(r["choices"][0]["finish_reason"], "length", "finish_reason length")

    # stop: the text ends right before the stop string, finish_reason stop.
    full = complete(srv, greedy_body("The quick brown fox", 24))
    if full:
        text = full["choices"][0]["text"]
        cut = None
        for i in range(4, len(text) - 3):
            frag = text[i:i + 3]
            if frag.strip() and text.find(frag) == i:
                cut = (i, frag)
                break
        if check(cut is not None, "a stop string can be picked from", text):
            r = complete(srv, greedy_body("The quick brown fox", 24, stop=["@@@@", cut[1]]))
            if r:
                check_eq(r["choices"][0]["text"], text[:cut[0]], "stop truncates before the stop string")
                check_eq(r["choices"][0]["finish_reason"], "stop", "finish_reason stop")

    # logit_bias: +100 forces the token every time.
    forced = 1169  # " the"
    r = complete(srv, {"prompt": "x", "max_tokens": 5, "temperature": 1.0, "seed": 3,
                       "logit_bias": {str(forced): 100}, "logprobs": 0, "ignore_eos": True})
    if r:
        check_eq(r["choices"][0]["text"], detokenize(srv, [forced] * 5), "logit_bias forces a token")
    # ... and -100 forbids the greedy choice.
    g = complete(srv, greedy_body("x", 1, logprobs=0))
    if g:
        first = g["choices"][0]["logprobs"]["tokens"][0]
        first_id = tokenize(srv, first)
        if len(first_id) == 1:
            r = complete(srv, greedy_body("x", 1, logprobs=0, logit_bias={str(first_id[0]): -100}))
            if r:
                check(r["choices"][0]["logprobs"]["tokens"][0] != first, "logit_bias -100 forbids",
                      r["choices"][0]["logprobs"]["tokens"][0], "not " + first)

    # Penalties, top_k/top_p/min_p and user are accepted and keep greedy deterministic.
    r = complete(srv, greedy_body("Hello", 4, top_k=5, top_p=0.9, min_p=0.01, user="u",
                                  presence_penalty=0.5, frequency_penalty=0.5,
                                  repetition_penalty=1.1))
    if r:
        check_eq(r["choices"][0]["finish_reason"], "length", "all sampling fields accepted")
    # top_k 1 is greedy whatever the temperature.
    a = complete(srv, {"prompt": "Hello", "max_tokens": 8, "temperature": 2.0, "top_k": 1, "seed": 5,
                       "ignore_eos": True})
    b = complete(srv, greedy_body("Hello", 8))
    if a and b:
        check_eq(a["choices"][0]["text"], b["choices"][0]["text"], "top_k 1 = greedy")
    # repetition_penalty changes a greedy continuation that repeats itself.
    a = complete(srv, greedy_body("a a a a a a a a", 16))
    b = complete(srv, greedy_body("a a a a a a a a", 16, repetition_penalty=2.0))
    if a and b:
        check(a["choices"][0]["text"] != b["choices"][0]["text"], "repetition_penalty has an effect",
              b["choices"][0]["text"], "not " + a["choices"][0]["text"])
    # Missing prompt means <|endoftext|>.
    r = complete(srv, {"max_tokens": 2, "temperature": 0, "echo": True, "ignore_eos": True})
    if r:
        check(r["choices"][0]["text"].startswith("<|endoftext|>"), "default prompt", r["choices"][0]["text"])
        check_eq(r["usage"]["prompt_tokens"], 1, "default prompt is one token")


# ---- group: stream -------------------------------------------------------------------------

def test_stream_framing(srv):
    body = greedy_body("The quick brown fox", 10, stream=True, stream_options={"include_usage": True})
    plain = complete(srv, greedy_body("The quick brown fox", 10))
    status, headers, chunks, data = raw_stream(srv, body)
    check_eq(status, "HTTP/1.1 200 OK", "stream status line")
    check_eq(headers.get("content-type"), "text/event-stream", "stream content type")
    check_eq(headers.get("cache-control"), "no-cache", "stream cache-control")
    check_eq(headers.get("transfer-encoding"), "chunked", "stream is chunked")
    check(headers.get("x-request-id", "").startswith("cmpl-"), "stream X-Request-Id", headers)
    events = parse_sse(data, "stream")
    if not events:
        return
    text_events, usage = events[:-1], events[-1]
    ids = {e["id"] for e in events}
    check_eq(len(ids), 1, "one id for every chunk")
    for e in text_events:
        check_eq(e["object"], "text_completion", "chunk object")
        check_eq(e["model"], "tiny-f32", "chunk model")
        check_eq(len(e["choices"]), 1, "one choice per chunk")
        check("usage" in e and e["usage"] is None, "usage null in text chunks with include_usage", e)
    finishes = [e["choices"][0]["finish_reason"] for e in text_events]
    check(all(f is None for f in finishes[:-1]) and finishes[-1] == "length",
          "finish_reason null until the last chunk", finishes)
    streamed = "".join(e["choices"][0]["text"] for e in text_events)
    if plain:
        check_eq(streamed, plain["choices"][0]["text"], "streamed text = non-streamed text")
    check_eq(usage["choices"], [], "usage chunk has no choices")
    check_eq(usage["usage"], {"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14},
             "usage chunk")
    check(len(text_events) >= 2, "text arrives in several events", len(text_events))

    # Without include_usage: no usage key at all; several prompts and n interleave by index.
    status, headers, chunks, data = raw_stream(
        srv, greedy_body(["Alpha beta", "Gamma delta"], 4, n=2, stream=True))
    events = parse_sse(data, "stream n=2 x 2 prompts")
    by_index = {}
    for e in events:
        check("usage" not in e, "no usage key without include_usage", e)
        c = e["choices"][0]
        by_index.setdefault(c["index"], []).append(c)
    check_eq(sorted(by_index), [0, 1, 2, 3], "all choice indexes stream")
    g1 = complete(srv, greedy_body("Alpha beta", 4))
    for i, cs in by_index.items():
        check_eq(cs[-1]["finish_reason"], "length", "choice %d finishes" % i)
        if g1 and i < 2:
            check_eq("".join(c["text"] for c in cs), g1["choices"][0]["text"], "choice %d text" % i)

    # Streaming with a stop string: the held-back text comes out right, up to the stop.
    full = complete(srv, greedy_body("The quick brown fox", 16))
    if full:
        text = full["choices"][0]["text"]
        frag = next((text[i:i + 2] for i in range(3, len(text) - 2)
                     if text[i:i + 2].strip() and text.find(text[i:i + 2]) == i), None)
        if frag:
            plain = complete(srv, greedy_body("The quick brown fox", 16, stop=frag))
            status, headers, chunks, data = raw_stream(
                srv, greedy_body("The quick brown fox", 16, stop=frag, stream=True))
            events = parse_sse(data, "stream with stop")
            if plain and events:
                check_eq("".join(e["choices"][0]["text"] for e in events),
                         plain["choices"][0]["text"], "streamed text with stop = non-streamed")
                check_eq(events[-1]["choices"][0]["finish_reason"], "stop", "stream finish stop")

    # Streaming with logprobs and echo.
    status, headers, chunks, data = raw_stream(srv, greedy_body([464, 2068], 3, stream=True,
                                                                logprobs=2, echo=True))
    events = parse_sse(data, "stream logprobs")
    toks = [t for e in events for t in (e["choices"][0]["logprobs"] or {}).get("tokens", [])]
    check_eq(len(toks), 5, "streamed logprobs cover the echoed prompt and the completion")

    # Text that JSON must escape (quotes, backslash, control characters) and UTF-8 that it
    # must not, echoed through the plain chunk path; keys in OpenAI's order.
    tricky = 'say "hi" \\ \t tab\nline\x01\x1f\x7f caf\u00e9 \u2603 /'
    status, headers, chunks, data = raw_stream(srv, greedy_body(tricky, 2, stream=True,
                                                                echo=True))
    events = parse_sse(data, "stream echo escapes")
    check_eq("".join(e["choices"][0]["text"] for e in events)[:len(tricky)], tricky,
             "escaped text streams back as it was")
    first = data.split(b"\n\n")[0][6:]
    keys = list(json.loads(first, object_pairs_hook=lambda kv: [k for k, _ in kv]))
    check_eq(keys, ["id", "object", "created", "model", "choices"], "chunk keys in order")

    # curl -N sees the same framing.
    out = subprocess.run(["curl", "-sN", "-H", "Content-Type: application/json", "-d",
                          json.dumps(greedy_body("Hi", 3, stream=True)),
                          "http://127.0.0.1:%d/v1/completions" % srv.port],
                         capture_output=True, timeout=60)
    check_eq(out.returncode, 0, "curl stream exit code")
    parse_sse(out.stdout, "curl stream")


def stream_text(srv, body, results, key):
    try:
        status, headers, chunks, data = raw_stream(srv, body)
        events = parse_sse(data, "concurrent stream %s" % key)
        results[key] = "".join(e["choices"][0]["text"] for e in events)
    except Exception as e:  # noqa: BLE001 - reported as a failure below
        results[key] = "exception: %r" % e


def test_concurrent_streams(srv):
    prompts = ["Stream number %d says" % i for i in range(32)]
    want = {}
    for i, p in enumerate(prompts):
        r = complete(srv, greedy_body(p, 16))
        want[i] = r["choices"][0]["text"] if r else None
    results = {}
    threads = [threading.Thread(target=stream_text, args=(srv, greedy_body(p, 16, stream=True), results, i))
               for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bad = [i for i in range(32) if results.get(i) != want[i]]
    check(not bad, "32 concurrent streams equal their one-at-a-time results",
          [(i, results.get(i), want[i]) for i in bad[:3]])


def test_seeded_under_load():
    """A seeded request's text and logprobs (top 5 and the chosen token's, as printed) are the
    same alone and while other streams of other lengths run in the same steps. A server of its
    own with a 16-token step budget, so the other streams' decodes change how its 33-token
    prompt is cut into chunks (alone: 16 + 16 + 1); echo, so the prompt's logprobs are
    compared too (and the prefix cache is not used: every run computes the whole prompt)."""
    srv = Server("--max-num-batched-tokens", "16", "--max-num-seqs", "8")
    try:
        body = {"model": "tiny-f32", "prompt": list(range(1000, 1033)), "max_tokens": 24,
                "temperature": 0.9, "top_p": 0.95, "seed": 4321, "logprobs": 5,
                "echo": True, "ignore_eos": True}
        alone = complete(srv, body)
        # Each other stream is admitted and has sent its first token before the seeded request
        # is sent, and asks for 5-7 times the seeded request's 28 or so steps: every running
        # sequence gains one token per step, so they are still running when it finishes.
        others = [raw_stream(srv, greedy_body("Other stream %d" % i + " word" * (3 * i),
                                              160 + 8 * i, stream=True), read_events=1)
                  for i in range(6)]
        loaded = complete(srv, body)
        running = metrics(srv).get("nano_vllm_num_requests_running", 0)
        for s in others:
            s.close()
        check(running >= 1, "other streams still ran when the seeded request finished", running)
        if alone and loaded:
            a, b = alone["choices"][0], loaded["choices"][0]
            check_eq(b["text"], a["text"], "seeded text under load = alone")
            check_eq(b["logprobs"]["tokens"], a["logprobs"]["tokens"], "seeded tokens under load")
            check_eq(b["logprobs"]["token_logprobs"], a["logprobs"]["token_logprobs"],
                     "seeded token_logprobs under load = alone, exactly")
            check_eq(b["logprobs"]["top_logprobs"], a["logprobs"]["top_logprobs"],
                     "seeded top_logprobs under load = alone, exactly")
    finally:
        check_eq(srv.stop(), 0, "seeded-under-load server exit status")


def wait_idle(srv, timeout=10):
    end = time.time() + timeout
    m = {}
    while time.time() < end:
        m = metrics(srv)
        if m.get("nano_vllm_num_requests_running") == 0 and m.get("nano_vllm_num_requests_waiting") == 0:
            return m
        time.sleep(0.05)
    return m


def test_client_killed(srv):
    base = wait_idle(srv)
    used0 = base.get("nano_vllm_kv_cache_blocks_used")
    aborted0 = base.get('nano_vllm_request_success_total{finished_reason="abort"}', 0)
    # A long stream; read two events, then close the socket hard (RST).
    s = raw_stream(srv, {"prompt": "Once upon a time " * 8, "max_tokens": 200, "temperature": 1.0,
                         "seed": 1, "ignore_eos": True, "stream": True}, read_events=2)
    during = metrics(srv)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    m = wait_idle(srv)
    check_eq(m.get("nano_vllm_num_requests_running"), 0, "killed stream no longer running")
    check_eq(m.get("nano_vllm_kv_cache_blocks_used"), used0, "killed stream's KV blocks are back")
    # The engine's gauges drop when it frees the sequence; the loop thread counts the abort
    # when that event reaches it, a moment later (slow under the sanitizers): wait for it.
    aborted = 'nano_vllm_request_success_total{finished_reason="abort"}'
    end = time.time() + 10
    while m.get(aborted, 0) < aborted0 + 1 and time.time() < end:
        time.sleep(0.05)
        m = metrics(srv)
    check(m.get(aborted, 0) >= aborted0 + 1, "killed stream counted as aborted", m.get(aborted))
    check(during.get("nano_vllm_kv_cache_blocks_used", 0) >= 1 and during.get("nano_vllm_num_requests_running") == 1,
          "the stream held blocks while it ran", during.get("nano_vllm_kv_cache_blocks_used"))
    # A stream whose client closes normally (FIN) after a few events, its connection having
    # been suspended and resumed for each of them: aborted too.
    s = raw_stream(srv, {"prompt": "Once upon a time " * 8, "max_tokens": 200, "temperature": 1.0,
                         "seed": 2, "ignore_eos": True, "stream": True}, read_events=4)
    s.close()
    end = time.time() + 10
    while m.get(aborted, 0) < aborted0 + 2 and time.time() < end:
        time.sleep(0.05)
        m = metrics(srv)
    check(m.get(aborted, 0) >= aborted0 + 2, "closed stream counted as aborted", m.get(aborted))
    m = wait_idle(srv)
    check_eq(m.get("nano_vllm_kv_cache_blocks_used"), used0, "closed stream's KV blocks are back")
    # A non-streaming request whose client leaves is aborted too (FIN while suspended).
    c = socket.create_connection(("127.0.0.1", srv.port))
    body = json.dumps({"prompt": "x", "max_tokens": 250, "ignore_eos": True}).encode()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.02)
    c.close()
    m = wait_idle(srv)
    check_eq(m.get("nano_vllm_kv_cache_blocks_used"), used0, "left non-streaming request's blocks are back")
    check(any("client_gone=1" in l for l in srv.log), "access log marks the client that left")


# ---- group: errors -------------------------------------------------------------------------

def test_errors(srv):
    def post(body, raw=False, path="/v1/completions", headers=None):
        return request(srv, "POST", path, body if raw else json.dumps(body), headers)

    s, _, d = post("{not json", raw=True)
    check_error(s, d, 400, "malformed JSON")
    s, _, d = post({"prompt": "x", "max_tokens": "many"})
    check_error(s, d, 400, "wrong type", param="max_tokens")
    s, _, d = post({"prompt": "x", "temperature": 5})
    check_error(s, d, 400, "out of range", param="temperature")
    s, _, d = post({"prompt": "x", "n": -1})
    check_error(s, d, 400, "negative n", param="n")
    s, _, d = post({"prompt": "x", "max_tokens": 10 ** 12})
    check_error(s, d, 400, "huge max_tokens", param="max_tokens")
    s, _, d = post({"prompt": "x", "wat": 1})
    check_error(s, d, 400, "unknown field", param="wat")
    s, _, d = post({"prompt": "x", "suffix": "y"})
    check_error(s, d, 400, "suffix unsupported", param="suffix")
    s, _, d = post({"prompt": "x", "best_of": 3})
    check_error(s, d, 400, "best_of > n unsupported", param="best_of")
    s, _, d = post({"prompt": [50257]})
    check_error(s, d, 400, "token id out of range", param="prompt")
    s, _, d = post({"prompt": ""})
    check_error(s, d, 400, "empty prompt", param="prompt")
    s, _, d = post({"prompt": "x" + " x" * 199, "max_tokens": 100})  # 200 tokens
    check_error(s, d, 400, "prompt + max_tokens beyond the context", code="context_length_exceeded")
    if s == 400:
        msg = json.loads(d)["error"]["message"]
        check("256" in msg and "300" in msg and "200" in msg and "100" in msg,
              "context error names the numbers", msg)
    s, _, d = post({"prompt": "hello world " * 20000, "max_tokens": 1})
    check_error(s, d, 400, "a prompt too long to encode", code="context_length_exceeded")
    s, _, d = post({"prompt": "x", "model": "gpt-4"})
    check_error(s, d, 404, "unknown model", code="model_not_found", param="model")
    s, _, d = request(srv, "GET", "/v1/nothing")
    check_error(s, d, 404, "unknown path")
    s, h, d = request(srv, "GET", "/v1/completions")
    check_error(s, d, 405, "GET on completions")
    check_eq(h.get("allow"), "POST", "405 Allow header")
    s, _, d = request(srv, "POST", "/health", "{}")
    check_error(s, d, 405, "POST on health")
    s, _, d = request(srv, "DELETE", "/v1/models")
    check_error(s, d, 405, "DELETE on models")
    s, _, d = post({"prompt": 5}, path="/tokenize")
    check_error(s, d, 400, "tokenize wrong type", param="prompt")
    s, _, d = post({"tokens": ["a"]}, path="/detokenize")
    check_error(s, d, 400, "detokenize wrong type", param="tokens")
    # Nothing above is a 5xx, and the server still answers.
    check_eq(request(srv, "GET", "/health")[0], 200, "healthy after bad requests")


def test_limits():
    srv = Server("--max-body-bytes", "2000", "--max-waiting", "2", "--max-num-seqs", "1",
                 "--served-model-name", "my-gpt")
    try:
        status, _, data = request(srv, "GET", "/v1/models")
        check_eq([m["id"] for m in json.loads(data)["data"]], ["my-gpt"], "--served-model-name")
        s, _, d = request(srv, "POST", "/v1/completions", {"prompt": "x", "n": 2})
        check_error(s, d, 400, "n above --max-num-seqs", param="n")
        s, _, d = request(srv, "POST", "/v1/completions", {"model": "tiny-f32", "prompt": "x"})
        check_error(s, d, 404, "the directory name is not served under another name",
                    code="model_not_found")
        big = json.dumps({"prompt": "x" * 3000})
        s, _, d = request(srv, "POST", "/v1/completions", big)
        check_error(s, d, 413, "body over --max-body-bytes (Content-Length)")
        # A chunked body that grows past the limit: 413 after it has been read.
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        piece = b"x" * 1500
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"%x\r\n" % len(piece) + piece + b"\r\n" + b"%x\r\n" % len(piece) + piece
                  + b"\r\n0\r\n\r\n")
        resp = c.recv(65536)
        c.close()
        check(resp.startswith(b"HTTP/1.1 413"), "chunked body over the limit gets 413", resp[:100])
        # 429 with Retry-After once more than --max-waiting wait.
        results = []

        def one():
            try:
                results.append(request(srv, "POST", "/v1/completions",
                                       {"prompt": "x", "max_tokens": 200, "ignore_eos": True}))
            except OSError as e:
                results.append((0, {}, repr(e).encode()))

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        statuses = sorted(r[0] for r in results)
        check(429 in statuses and 200 in statuses and set(statuses) <= {200, 429},
              "some requests get 429 over --max-waiting", statuses)
        for r in results:
            if r[0] == 429:
                check_error(r[0], r[2], 429, "queue full")
                check_eq(r[1].get("retry-after"), "1", "429 has Retry-After")
                break
    finally:
        check_eq(srv.stop(), 0, "limits server exit status")


# ---- group: auth ---------------------------------------------------------------------------

def test_auth():
    for how in ("flag", "env"):
        if how == "flag":
            srv = Server("--api-key", "s3cret-key")
        else:
            srv = Server(env={"NANO_VLLM_API_KEY": "s3cret-key", "NANO_VLLM_LOG_FORMAT": "json"})
        try:
            body = {"prompt": "hi", "max_tokens": 2}
            s, h, d = request(srv, "POST", "/v1/completions", body)
            check_error(s, d, 401, "%s: no key" % how, code="invalid_api_key")
            s, _, d = request(srv, "POST", "/v1/completions", body,
                              {"Authorization": "Bearer wrong-key!"})
            check_error(s, d, 401, "%s: wrong key" % how)
            s, _, d = request(srv, "POST", "/v1/completions", body,
                              {"Authorization": "Bearer s3cret-ke"})
            check_error(s, d, 401, "%s: a prefix of the key" % how)
            s, _, d = request(srv, "POST", "/v1/completions", body,
                              {"Authorization": "Bearer s3cret-key"})
            check_eq(s, 200, "%s: right key" % how)
            for path in ("/v1/models", "/version", "/tokenize"):
                s, _, d = request(srv, "GET" if path != "/tokenize" else "POST", path,
                                  {"prompt": "x"} if path == "/tokenize" else None)
                check_error(s, d, 401, "%s: %s needs the key" % (how, path))
            check_eq(request(srv, "GET", "/health")[0], 200, "%s: /health is open" % how)
            check_eq(request(srv, "GET", "/metrics")[0], 200, "%s: /metrics is open" % how)
            check(not any("s3cret-key" in l for l in srv.log), "%s: the key is not logged" % how)
            if how == "env":  # --log-format json: every line one JSON object
                time.sleep(0.1)
                for line in srv.log:
                    try:
                        obj = json.loads(line)
                        check({"ts", "level", "component", "msg"} <= set(obj), "json log fields", obj)
                    except ValueError:
                        check(False, "json log line", line)
                check(any(json.loads(l).get("request_id", "").startswith("cmpl-") for l in srv.log),
                      "json access lines carry the request id")
        finally:
            check_eq(srv.stop(), 0, "auth server exit status")
    # Without a key, every endpoint is open (the main server's tests cover that).


# ---- group: drain --------------------------------------------------------------------------

def wait_log(srv, text, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if any(text in l for l in srv.log):
            return True
        time.sleep(0.02)
    return False


def test_drain():
    # Long timeouts: the request held open below must not be cut by them.
    srv = Server("--max-num-seqs", "4", "--timeout-keep-alive", "60", "--header-timeout", "60")
    try:
        # A stream in flight (one event read) finishes completely after SIGTERM.
        s = raw_stream(srv, {"prompt": "Once", "max_tokens": 200, "ignore_eos": True,
                             "temperature": 0, "stream": True}, read_events=1)
        # A request whose body is still arriving holds the drain open however soon the stream
        # ends: the server cannot finish a request it has not read, so the 503 below is always
        # asked of a draining server, not of one that may already be gone.
        body = json.dumps({"prompt": "x", "max_tokens": 1}).encode()
        held = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        held.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
        keep = conn(srv)
        keep.request("GET", "/health")
        r = keep.getresponse()
        r.read()
        check_eq(r.status, 200, "healthy before SIGTERM")
        srv.proc.send_signal(signal.SIGTERM)
        check(wait_log(srv, "draining", 30), "drain is logged", srv.log[-5:])
        # An open keep-alive connection now hears 503 while the server drains.
        keep.request("GET", "/health")
        r = keep.getresponse()
        check_error(r.status, r.read(), 503, "health while draining")
        keep.close()
        # The held request, completed now, is refused as the server is shutting down.
        held.sendall(body[5:])
        resp = http.client.HTTPResponse(held, method="POST")
        resp.begin()
        data = resp.read()
        check_error(resp.status, data, 503, "a request completed during the drain")
        check("shutting down" in data.decode(), "its 503 says the server is shutting down", data)
        held.close()
        rest = b""
        s.settimeout(30)
        while True:
            d = s.recv(65536)
            if not d:
                break
            rest += d
            if rest.endswith(b"0\r\n\r\n"):
                break
        s.close()
        check(b"data: [DONE]" in rest, "the in-flight stream completes during the drain", rest[-80:])
        # Drained, the server exits on its own; a second SIGTERM from stop() while it closes
        # its handles (the signal watchers among them) would kill it instead.
        try:
            srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    finally:
        check_eq(srv.stop(timeout=30), 0, "drain exit status")
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        check(False, "the port is closed after the drain")
    except OSError:
        pass

    # Requests still running at --shutdown-timeout end with an error event.
    srv = Server("--max-num-seqs", "1", "--shutdown-timeout", "0.3")
    try:
        socks = []
        for _ in range(16):  # 16 x 250 steps one at a time: seconds even on a fast machine
            payload = json.dumps({"prompt": "Once", "max_tokens": 250, "ignore_eos": True,
                                  "stream": True}).encode()
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n"
                      % len(payload) + payload)
            socks.append(s)
        time.sleep(0.2)  # all accepted; with one sequence at a time most are still waiting
        srv.proc.send_signal(signal.SIGTERM)
        outcomes = []
        for s in socks:
            data = b""
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
                    if data.endswith(b"0\r\n\r\n"):
                        break
            except OSError:
                pass
            s.close()
            check(data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), "every drained stream ends cleanly",
                  data[-80:])
            outcomes.append(b"the server is shutting down" in data)
        check(any(outcomes), "streams past the timeout get a final error event", outcomes)
    finally:
        check_eq(srv.stop(timeout=30), 0, "timed-out drain exit status")


def test_load_progress(srv):
    """Loading logs its progress: the last line says all the weights' bytes were read, before
    "ready" (the tiny model loads too fast for the periodic lines; stderr is no terminal, so
    no progress bar is drawn)."""
    done = [i for i, l in enumerate(srv.log)
            if re.search(r" srv loaded \d+\.\d\d GB of weights in \d+\.\d s \(100%, [\d.]+ GB/s\)$", l)]
    ready = [i for i, l in enumerate(srv.log) if l.endswith(" srv ready")]
    check(len(done) == 1 and ready and done[0] < ready[0],
          "one 'loaded ... GB of weights' line before 'ready'", srv.log[:12])
    check(not any("\r" in l or "[###" in l for l in srv.log), "no progress bar off a terminal")


def test_loading():
    """While the model loads (the port is bound first), /health and the API answer 503.

    Deterministic: the model directory's merges.txt is a FIFO, so the loader blocks on it until
    the test writes the file; every answer before that is from a server that is loading."""
    with tempfile.TemporaryDirectory() as d:
        for name in os.listdir(MODEL):
            if name != "merges.txt":
                os.symlink(os.path.join(os.path.abspath(MODEL), name), os.path.join(d, name))
        fifo = os.path.join(d, "merges.txt")
        os.mkfifo(fifo)
        srv = Server(wait_ready=False, model=d)
        try:
            check(srv.port is not None, "loading server listens", srv.log[-5:])
            s, h, d_ = request(srv, "GET", "/health")
            check_error(s, d_, 503, "health while loading")
            check_eq(h.get("retry-after"), "1", "503 on /health has Retry-After")
            s, h, d_ = request(srv, "POST", "/v1/completions", {"prompt": "x"})
            check_error(s, d_, 503, "completions while loading")
            check_eq(h.get("retry-after"), "1", "503 has Retry-After")
            check("loading" in d_.decode(), "the 503 says the model is loading", d_)
            # Let the load go on: open the FIFO once the loader has (ENXIO until then).
            end = time.time() + 30
            while True:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError as e:
                    if e.errno != errno.ENXIO or time.time() > end:
                        raise
                    time.sleep(0.02)
            os.set_blocking(fd, True)
            with open(os.path.join(MODEL, "merges.txt"), "rb") as f:
                data = memoryview(f.read())
            while data:
                data = data[os.write(fd, data):]
            os.close(fd)
            srv.wait_health(200, 30)
        finally:
            check_eq(srv.stop(), 0, "loading server exit status")


def test_startup_failures():
    # A busy port: one line, exit 1.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    p = subprocess.run([BIN, "serve", MODEL, "--port", str(port)], capture_output=True, timeout=30)
    s.close()
    check_eq(p.returncode, 1, "busy port exit status")
    err = p.stderr.decode()
    check("127.0.0.1:%d" % port in err and "in use" in err, "busy port message", err)
    # A model that cannot load: /health is 503 until the load fails, then exit 1 naming the file.
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([BIN, "serve", d, "--port", "0"], capture_output=True, timeout=60)
        check_eq(p.returncode, 1, "bad model exit status")
        err = p.stderr.decode()
        check("could not load" in err and d in err, "bad model message names the directory", err)


# ---- group: genconfig ----------------------------------------------------------------------

def gen_config_model(d, gen):
    """A copy of the tiny checkpoint (by symlinks) with gen as its generation_config.json."""
    model = os.path.join(d, "gen-model")
    os.mkdir(model)
    for f in os.listdir(MODEL):
        os.symlink(os.path.join(MODEL, f), os.path.join(model, f))
    with open(os.path.join(model, "generation_config.json"), "w") as f:
        json.dump(gen, f)
    return model


def chat(srv, body):
    status, _, data = request(srv, "POST", "/v1/chat/completions", body)
    if not check_eq(status, 200, "POST /v1/chat/completions %s: %s" % (json.dumps(body)[:200],
                                                                         data[:300])):
        return None
    return json.loads(data)


def test_generation_config():
    """generation_config.json's sampling defaults, observed through the HTTP API: a greedy
    temperature 0 makes requests without temperature give the same text whatever their seed,
    max_new_tokens is the default max_tokens; a request's own fields win; with
    --generation-config none the file's defaults are ignored."""
    gen = {"bos_token_id": 50256, "eos_token_id": 50256, "do_sample": True, "temperature": 0.0,
           "top_p": 0.9, "max_new_tokens": 12, "num_beams": 2}
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    prompt = "The meaning of life is"
    with tempfile.TemporaryDirectory() as d:
        model = gen_config_model(d, gen)
        srv = Server("--chat-template", template, model=model)
        try:
            line = [l for l in srv.log if "sampling defaults" in l]
            check(len(line) == 1 and "from generation_config.json: temperature 0, top_p 0.9, "
                  "max_tokens 12" in line[0] and "not applied: num_beams" in line[0],
                  "the log names the defaults applied and the keys ignored", line)
            # No temperature, two seeds: greedy both times, max_new_tokens tokens.
            texts, counts = [], []
            for seed in (1, 2):
                r = complete(srv, {"prompt": prompt, "seed": seed, "ignore_eos": True})
                if r:
                    texts.append(r["choices"][0]["text"])
                    counts.append(r["usage"]["completion_tokens"])
            greedy = complete(srv, {"prompt": prompt, "temperature": 0, "max_tokens": 12,
                                    "ignore_eos": True})
            if greedy and len(texts) == 2:
                check_eq(texts, [greedy["choices"][0]["text"]] * 2,
                         "without temperature: the file's temperature 0, greedy text")
                check_eq(counts, [12, 12], "without max_tokens: the file's max_new_tokens")
            # null is the default too.
            r = complete(srv, {"prompt": prompt, "seed": 3, "temperature": None,
                               "max_tokens": None, "ignore_eos": True})
            if r and greedy:
                check_eq(r["choices"][0]["text"], greedy["choices"][0]["text"],
                         "temperature null: the file's default")
            # The request's own temperature and max_tokens win.
            own = set()
            for seed in (1, 2, 3):
                r = complete(srv, {"prompt": prompt, "seed": seed, "temperature": 1.0,
                                   "top_p": 1.0, "max_tokens": 12, "ignore_eos": True})
                if r:
                    own.add(r["choices"][0]["text"])
            check(len(own) >= 2, "the request's temperature 1 samples again", own)
            r = complete(srv, {"prompt": prompt, "max_tokens": 5, "ignore_eos": True})
            if r:
                check_eq(r["usage"]["completion_tokens"], 5, "the request's max_tokens wins")
            # The default max_tokens is cut to the room the prompt leaves, not refused.
            ids = tokenize(srv, prompt)
            long_prompt = (ids * 60)[:250]
            r = complete(srv, {"prompt": long_prompt, "ignore_eos": True})
            if r:
                check_eq(r["usage"]["completion_tokens"], 6,
                         "default max_tokens 12 after 250 of 256 tokens: the 6 left")
            # Chat takes the same defaults.
            msgs = [{"role": "user", "content": prompt}]
            replies = []
            for seed in (1, 2):
                r = chat(srv, {"messages": msgs, "seed": seed, "ignore_eos": True})
                if r:
                    replies.append((r["choices"][0]["message"]["content"],
                                    r["usage"]["completion_tokens"]))
            if greedy and len(replies) == 2:
                check_eq(replies, [(greedy["choices"][0]["text"], 12)] * 2,
                         "chat without temperature or max_tokens: greedy, 12 tokens")
        finally:
            check_eq(srv.stop(), 0, "generation-config server exit status")
            if FAILURES:
                print("server log (last 40 lines):\n" + "\n".join(srv.log[-40:]),
                      file=sys.stderr)
        # --generation-config none: OpenAI's defaults (temperature 1, max_tokens 16).
        srv = Server("--generation-config", "none", model=model)
        try:
            line = [l for l in srv.log if "sampling defaults" in l]
            check(len(line) == 1 and "OpenAI's (--generation-config none" in line[0],
                  "the log says the file is ignored", line)
            texts = set()
            for seed in (1, 2, 3):
                r = complete(srv, {"prompt": prompt, "seed": seed, "ignore_eos": True})
                if r:
                    texts.add(r["choices"][0]["text"])
                    check_eq(r["usage"]["completion_tokens"], 16, "OpenAI's max_tokens 16")
            check(len(texts) >= 2, "--generation-config none: temperature 1 samples", texts)
        finally:
            check_eq(srv.stop(), 0, "generation-config none server exit status")


# ---- main ----------------------------------------------------------------------------------

def main():
    want = set(GROUPS) or {"api", "stream", "errors", "auth", "drain", "genconfig"}
    t0 = time.time()
    if want & {"api", "stream", "errors"}:
        srv = Server()
        try:
            if "api" in want:
                test_endpoints(srv)
                test_load_progress(srv)
                test_greedy_and_logprobs(srv)
                test_kv_f16(srv)
                test_weight_bf16x3(srv)
                test_kernel_setting(srv)
                test_sampling_params(srv)
            if "stream" in want:
                test_stream_framing(srv)
                test_concurrent_streams(srv)
                test_client_killed(srv)
            if "errors" in want:
                test_errors(srv)
        finally:
            rc = srv.stop()
            check_eq(rc, 0, "main server exit status after SIGTERM")
            if FAILURES:
                print("server log (last 40 lines):\n" + "\n".join(srv.log[-40:]), file=sys.stderr)
        if "stream" in want:
            test_seeded_under_load()
        if "errors" in want:
            test_limits()
            test_loading()
            test_startup_failures()
    if "auth" in want:
        test_auth()
    if "drain" in want:
        test_drain()
    if "genconfig" in want:
        test_generation_config()
    print("test_server %s: %d failure(s) in %.1f s" % (" ".join(sorted(want)), len(FAILURES),
                                                       time.time() - t0))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
