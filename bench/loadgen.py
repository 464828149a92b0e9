#!/usr/bin/python3
"""Streaming load generator for `nano-vllm serve`: tokens/s, TTFT and inter-token latency.

    bench/loadgen.py --url http://127.0.0.1:8000 [options]
    bench/loadgen.py --server build/server/nano-vllm --model models/gpt2 [options]

Every request is a streaming completion (stream: true, include_usage), a greedy continuation
(ignore_eos) of --max-tokens tokens after a prompt of --prompt-tokens token ids (distinct per
request, so no prefix is cached). Each concurrency level (default 1, 8, 32, 64) runs two
phases, each bounded in time and count, and prints one row for each:

  burst   all N requests arrive in the same instant (one wave, N requests). Its time to
          first token includes waiting behind the other N - 1 prompts: with N x 64 prompt
          tokens that is arithmetic, not scheduling.
  steady  N clients keep one request each in flight for --duration seconds; client k sends
          its first request at k x ramp / N (--ramp), so arrivals are spread as they are in
          service. Only the window after the warm-up (--warmup, default the ramp) counts:
          requests sent in it give TTFT, gaps between text events in it give inter-token
          latency, and tokens streamed in it over its length give tokens/s.

Columns: aggregate completion tokens/s (per request, usage.completion_tokens spread over its
text events), TTFT (request sent -> first text event) and inter-token latency (gap between
text events) p50/p90/p99 in ms, requests done, the server's RSS (when started here or given
--pid), and "of bound": tokens/s over the bound for this workload measured in the same run,
the FMA peak (bench/peak, run before and after the levels, the better taken) over the
matrix FLOP per generated token including its share of the prompt:
  ((prompt + max_tokens - 1) x 24 L C^2 + max_tokens x 2 C V) / max_tokens
(attention left out; L, C, V from --model's config.json, else GPT-2 124M). With --pid or
--server, "cpu" is the same ratio per CPU-second of the server against one core's FMA peak
per CPU-second, which holds on a busy host too. One asyncio loop drives all clients over raw
sockets, so the client costs little next to the server: at one stream still about 0.25 ms of
CPU per token, taken from the server's cores on a small machine. --lean runs level 1's steady
phase with run_lean instead, a client that reads in bulk and parses after the window (next
to no CPU per token; tokens/s only), and the other levels' steady phases with run_lean_n,
the same for N streams in one thread (about 0.01 ms of CPU per token).
"""

import argparse
import asyncio
import bisect
import json
import os
import re
import select
import socket
import struct
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
PHASE_SLACK = 120.0  # seconds a phase may run past its nominal length before it is cut


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


class Req:
    """One request's timeline: when it was sent, its text events, its completion tokens."""

    def __init__(self):
        self.sent = time.monotonic()
        self.events = []
        self.tokens = 0
        self.ok = False


def take_event(req, ev, now):
    """One server-sent event of a completions stream into req: the time `now` when a choice
    brings text or finishes, the completion tokens when it carries usage."""
    if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
        return
    obj = json.loads(ev[6:])
    if obj.get("usage"):
        req.tokens = obj["usage"]["completion_tokens"]
    for c in obj.get("choices", []):
        if c["text"] or c["finish_reason"]:
            req.events.append(now)


def steady_times(args):
    """The steady phase's ramp (seconds over which its clients start) and warm-up (seconds
    left out of its figures)."""
    ramp = args.ramp if args.ramp is not None else 0.3 * args.duration
    return ramp, args.warmup if args.warmup is not None else ramp


def stream_body(args, i):
    """The body of request i: prompt i (distinct ids), greedy, ignore_eos, streamed with usage."""
    body = {"prompt": prompt(i, args.prompt_tokens), "max_tokens": args.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    if args.model_name:
        body["model"] = args.model_name
    return body


def completion_request(host, body, key):
    """The bytes of a POST /v1/completions with body (JSON) and, if key, its bearer token."""
    payload = json.dumps(body).encode()
    auth = ("Authorization: Bearer %s\r\n" % key).encode() if key else b""
    return (b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            % host.encode() + auth + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)


async def one_stream(host, port, body, key, req, errors):
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(completion_request(host, body, key))
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            k = status.decode().strip()
            errors[k] = errors.get(k, 0) + 1
            return
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        buf = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            buf += data[:-2]
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                take_event(req, ev, time.monotonic())
        req.ok = True
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    finally:
        if writer:
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


def cpu_seconds(pid):
    """User + system CPU seconds of process pid (all its threads), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def summarize(reqs, w0, w1, cpu):
    """Figures of the requests over the window [w0, w1]: TTFT of requests sent in it, gaps
    whose later event falls in it, tokens streamed in it."""
    ttft, itl, tokens, done = [], [], 0.0, 0
    for r in reqs:
        done += r.ok
        if r.events and w0 <= r.sent <= w1:
            ttft.append(r.events[0] - r.sent)
        per_event = r.tokens / len(r.events) if r.events and r.tokens else 1.0
        for k, t in enumerate(r.events):
            if w0 <= t <= w1:
                tokens += per_event
                if k > 0:
                    itl.append(t - r.events[k - 1])
    wall = w1 - w0
    return {"tps": tokens / wall if wall > 0 else 0.0, "tokens": tokens, "ttft": ttft,
            "itl": itl, "done": done, "sent": len(reqs), "cpu": cpu, "wall": wall}


async def run_phase(host, port, conc, args, burst, pid, next_id, on_mark=None):
    """Runs one phase; on_mark(name), if given, is called (in a worker thread) at the
    steady window's two ends, "w0" and "w1", and what it returns is kept in s["marks"]."""
    reqs, errors = [], {}
    t0 = time.monotonic()
    ramp, warm = (0.0, 0.0) if burst else steady_times(args)
    end = t0 + (0.0 if burst else args.duration)
    marks = {}

    async def client(k):
        await asyncio.sleep(k * ramp / conc)
        while True:
            if len(reqs) >= args.max_requests:
                break
            r = Req()
            reqs.append(r)
            body = stream_body(args, next_id[0] + len(reqs))
            await one_stream(host, port, body, args.api_key, r, errors)
            if burst or time.monotonic() >= end:
                break

    extra = {}

    async def mark(name, at):
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        marks[name] = (time.monotonic(), cpu_seconds(pid) if pid else None)
        if on_mark:
            extra[name] = await asyncio.get_running_loop().run_in_executor(None, on_mark, name)

    tasks = [client(k) for k in range(conc)]
    if not burst:
        tasks += [mark("w0", t0 + warm), mark("w1", end)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.duration + ramp + PHASE_SLACK)
    except asyncio.TimeoutError:
        errors["phase cut at its time bound"] = 1
    t_end = time.monotonic()
    next_id[0] += len(reqs)
    if burst:
        s = summarize(reqs, t0, t_end, None)
    else:
        (w0, c0), (w1, c1) = marks["w0"], marks["w1"]
        cpu = c1 - c0 if c0 is not None and c1 is not None else None
        s = summarize(reqs, w0, w1, cpu)
    s["errors"] = errors
    s["marks"] = extra
    return s


# The lean client reads a stream in bulk, napping between reads, until LEAN_TAIL events are
# still due; it then reads them as they come, to see the end at once. A nap lasts half the time
# the events due before the tail take at the rate seen so far, at most LEAN_NAP seconds
# (LEAN_FIRST_NAP until a rate is seen): it ends before the tail, even if the stream speeds up
# twofold.
LEAN_NAP = 0.2
LEAN_FIRST_NAP = 0.02
LEAN_TAIL = 8


def lean_request(sock, req, pieces, max_events):
    """Sends one request (bytes) on blocking sock and reads its response to the end, keeping
    each read with its time in pieces and doing nothing else with it. Until the last
    LEAN_TAIL of about max_events events it naps between reads and takes what has come, so
    that the server's sends wake nobody (a client on another machine costs the server's cores
    nothing); then it waits on the socket. Returns "ok", or an error's name (the connection
    is then unusable)."""
    sock.sendall(req)
    events, tail, first = 0, b"", None  # first: (time, events) at the first read with events

    def take(data):
        nonlocal tail
        pieces.append((time.monotonic(), data))
        if len(pieces) == 1 and not data.startswith(b"HTTP/1.1 200 "):
            return data.split(b"\r\n", 1)[0].decode("latin-1")
        # The end of a chunked body: JSON escapes CR and LF, so CR LF "0" CR LF CR LF appears
        # only there (a data chunk ends in "\n\n\r\n").
        tail = (tail + data)[-7:]
        return "ok" if tail == b"\r\n0\r\n\r\n" else None

    while events < max_events - LEAN_TAIL:
        nap = LEAN_FIRST_NAP
        if first and events > first[1]:
            per_event = (pieces[-1][0] - first[0]) / (events - first[1])
            nap = min(LEAN_NAP, 0.5 * (max_events - LEAN_TAIL - events) * per_event)
        time.sleep(nap)
        while True:
            try:
                data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not data:
                return "connection closed"
            res = take(data)
            if res:
                return res
            events += data.count(b"\n\n")
            if events and not first:
                first = (pieces[-1][0], events)
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return "connection closed"
        res = take(data)
        if res:
            return res


def parse_response(req, pieces):
    """Fills req (events' times, completion tokens) from one streamed response's reads: each
    event gets the time of the read that completed the chunk it came in."""
    raw = b"".join(d for _, d in pieces)
    ends, n = [], 0
    for _, d in pieces:
        n += len(d)
        ends.append(n)
    pos = raw.find(b"\r\n\r\n") + 4
    buf = b""
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        if size == 0:
            break
        pos = eol + 2
        buf += raw[pos:pos + size]
        now = pieces[bisect.bisect_right(ends, pos + size - 1)][0]
        pos += size + 2
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            take_event(req, ev, now)
    req.ok = True


def run_lean(host, port, args, pid, next_id, on_mark=None):
    """One stream, its client as lean as a client can be: one socket kept alive, requests
    back to back, read in bulk (lean_request), each read kept with its time and nothing else
    done with it until the window has ended (then the streams are parsed). On a machine
    whose cores the server needs, a client's CPU is taken from the server's forward passes;
    a real client runs elsewhere, so the measurement should cost the server as little as
    possible.
    The window is whole requests: from sending the first request after the warm-up to the
    end of the last one sent before --duration ran out, so its tokens are every token of
    its requests and its time includes their prompts and the gaps between them. on_mark,
    if given, is called just before and just after it ("w0", "w1"); what it returns is kept
    in s["marks"]. Besides run_phase's figures, s["client_cpu"] is this client's CPU
    seconds in the window (its thread's; reading and timing only) and s["req_spt"] each
    request's seconds per token but the last's (from its sending to the next one's)."""
    _, warm = steady_times(args)
    t_start = time.monotonic()
    end, errors, marks, reqs = t_start + args.duration, {}, {}, []
    w0 = w1 = c0 = c1 = None
    window = []
    sock = None
    while len(reqs) < args.max_requests and time.monotonic() < t_start + args.duration + \
            PHASE_SLACK:
        if w0 is None and time.monotonic() >= t_start + warm:
            if on_mark:
                marks["w0"] = on_mark("w0")
            cpu0 = cpu_seconds(pid) if pid else None
            w0, c0 = time.monotonic(), time.thread_time()
        req = completion_request(host, stream_body(args, next_id[0] + len(reqs) + 1),
                                 args.api_key)
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=PHASE_SLACK)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Blocking (MSG_DONTWAIT reads return at once), with the kernel's own time
                # bound on a read and a write.
                sock.settimeout(None)
                bound = struct.pack("ll", int(PHASE_SLACK), 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bound)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bound)
            r, pieces = Req(), []
            reqs.append(r)
            res = lean_request(sock, req, pieces, args.max_tokens)
        except OSError as e:
            res = type(e).__name__
        if res != "ok":
            errors[res] = errors.get(res, 0) + 1
            if sock:
                sock.close()
            sock = None
            continue
        if w0 is not None:
            window.append((r, pieces))
        else:
            parse_response(r, pieces)
        if time.monotonic() >= end:
            if w0 is not None:
                w1, c1 = time.monotonic(), time.thread_time()
                cpu1 = cpu_seconds(pid) if pid else None
                if on_mark:
                    marks["w1"] = on_mark("w1")
            break
    if sock:
        sock.close()
    next_id[0] += len(reqs)
    for r, pieces in window:
        try:
            parse_response(r, pieces)
        except (ValueError, KeyError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    if w1 is None:
        errors["no window"] = 1
        w0 = w1 = time.monotonic()
        c0 = c1 = 0.0
        cpu0 = cpu1 = None
    s = summarize([r for r, _ in window], w0, w1,
                  cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None)
    # Every token of the window's requests counts, however their events fell in time.
    s["tokens"] = float(sum(r.tokens or len(r.events) for r, _ in window))
    s["tps"] = s["tokens"] / s["wall"] if s["wall"] > 0 else 0.0
    s["done"] += sum(r.ok for r in reqs) - sum(r.ok for r, _ in window)
    s["sent"] = len(reqs)
    s["client_cpu"] = c1 - c0
    # Each request's seconds per token, from its sending to the next one's: the stream's rate
    # request by request (its median is what a burst of other load on the host leaves alone).
    s["req_spt"] = [(b.sent - a.sent) / a.tokens for (a, _), (b, _) in zip(window, window[1:])
                    if a.tokens]
    # Reads come in bulk: the times of single events say little (time to first token and
    # inter-token latency are the asyncio client's to measure).
    s["ttft"], s["itl"] = [], []
    s["errors"] = errors
    s["marks"] = marks
    return s


# The N-stream lean client's naps: at most LEAN_N_NAP, at least LEAN_N_MIN_NAP, and in between
# until just after the predicted end of the stream nearest to its end (at its rate so far),
# so that it wakes once or twice per request near each end and sends the next request a few
# ms late at most. A stream is read when LEAN_NAP (run_lean's nap) has passed since its last
# read, or near its end: a read costs more than a nap (each is a system call on a virtual
# machine), so each is made to take several events.
LEAN_N_NAP = 0.1
LEAN_N_MIN_NAP = 0.005


def run_lean_n(host, port, conc, args, pid, next_id, on_mark=None):
    """N streams as leanly as run_lean drives one: one process, N sockets kept alive, each
    stream's requests back to back (stream k sends its first at k x ramp / N, as run_phase's
    clients do). It naps, then takes what has come on any socket (epoll, no waiting): one
    read per socket with data, kept with the look's time, and nothing else done with the
    bytes but counting their events (blank lines) and spotting a response's end (to send the
    next request), so the server's sends wake nobody. A stream is read every LEAN_NAP, and
    from two events before its predicted end (at its own rate so far, about max_tokens + 2
    events) at every look; a nap lasts LEAN_N_NAP, or until just after the nearest predicted
    end, or the next stream's first request during the ramp. The streams are parsed after the
    phase. The window is run_phase's: events (at their read's time) in [w0, w1] = [warm-up,
    --duration]; requests in flight at its end run to completion, none is sent after it. on_mark(name), if given, is called at "start"
    (before the first request), "w0", "w1" and "end" (after the last response); what it
    returns is kept in s["marks"]. Besides run_phase's figures: s["client_cpu"] is this
    thread's CPU seconds in the window, s["total_tokens"] the completion tokens (usage) of
    every request, s["requests"] the requests done, s["wakes"] the naps in the window. Any
    HTTP status but 200, a connection closed or failing mid-response, an unparsable stream
    or a phase past its time bound is counted in s["errors"]."""
    ramp, warm = steady_times(args)
    t0 = time.monotonic()
    end, hard = t0 + args.duration, t0 + args.duration + ramp + PHASE_SLACK
    errors, marks, done_reqs = {}, {}, []
    w0 = w1 = c0 = c1 = cpu0 = cpu1 = None
    ep = select.epoll()
    by_fd = {}
    nreq, wakes = 0, 0
    expect = args.max_tokens + 2  # text events, then usage and [DONE]
    # One read buffer for every socket (a bytes object of 256 KiB per read would be mapped
    # and unmapped each time); what is read is copied out at its length.
    rbuf = bytearray(1 << 18)

    class Stream:
        __slots__ = ("sock", "req", "pieces", "tail", "start", "events", "first", "eta",
                     "per_event", "read")

        def __init__(self, start):
            self.sock, self.req, self.start = None, None, start

    def err(name):
        errors[name] = errors.get(name, 0) + 1

    def send(st):
        nonlocal nreq
        if st.sock is None:
            so = socket.create_connection((host, port), timeout=PHASE_SLACK)
            so.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Blocking, as in run_lean: with a Python timeout a MSG_DONTWAIT read would still
            # wait for data. The kernel bounds a write.
            so.settimeout(None)
            so.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                          struct.pack("ll", int(PHASE_SLACK), 0))
            ep.register(so.fileno(), select.EPOLLIN)
            by_fd[so.fileno()] = st
            st.sock = so
        nreq += 1
        st.req, st.pieces, st.tail, st.events, st.first = Req(), [], b"", 0, None
        st.eta, st.per_event, st.read = 0.0, 0.0, time.monotonic()
        st.sock.sendall(completion_request(host, stream_body(args, next_id[0] + nreq),
                                           args.api_key))

    def drop(st, name):
        if name:
            err(name)
        ep.unregister(st.sock.fileno())
        del by_fd[st.sock.fileno()]
        st.sock.close()
        st.sock, st.req = None, None

    def look(every):
        """Reads the sockets with data (every one of them if every, else those due)."""
        now = time.monotonic()
        for fd, _ in ep.poll(0):
            st = by_fd[fd]
            if (not every and st.req is not None and now - st.read < LEAN_NAP
                    and (not st.eta or now < st.eta - 2 * st.per_event)):
                continue
            try:
                n = st.sock.recv_into(rbuf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError as e:
                drop(st, type(e).__name__)
                continue
            data = bytes(rbuf[:n])
            st.read = now
            if not data:
                # Between requests the server may close a kept-alive connection (its
                # keep-alive time out); the next request opens a new one.
                drop(st, "connection closed" if st.req is not None else None)
                continue
            if st.req is None:
                drop(st, "bytes after a response")
                continue
            st.pieces.append((now, data))
            if len(st.pieces) == 1 and not data.startswith(b"HTTP/1.1 200 "):
                drop(st, data.split(b"\r\n", 1)[0].decode("latin-1"))
                continue
            st.events += data.count(b"\n\n")
            if st.first is None and st.events:
                st.first = (now, st.events)
            elif st.first and st.events > st.first[1]:
                # The stream's rate so far, and when its last event should come.
                st.per_event = (now - st.first[0]) / (st.events - st.first[1])
                st.eta = now + (expect - st.events) * st.per_event
            # The end of a chunked body (see lean_request). Anything longer than one
            # read waits for the next look (epoll is level-triggered).
            st.tail = (st.tail + data)[-7:]
            if st.tail == b"\r\n0\r\n\r\n":
                done_reqs.append((st.req, st.pieces))
                st.req = None

    if on_mark:
        marks["start"] = on_mark("start")
    streams = [Stream(t0 + k * ramp / conc) for k in range(conc)]
    try:
        while True:
            now = time.monotonic()
            if w0 is None and now >= t0 + warm:
                look(True)  # what came before the mark is counted before it
                if on_mark:
                    marks["w0"] = on_mark("w0")
                cpu0 = cpu_seconds(pid) if pid else None
                w0, c0, wakes = time.monotonic(), time.thread_time(), 0
            if w1 is None and now >= end:
                look(True)
                w1, c1 = time.monotonic(), time.thread_time()
                cpu1 = cpu_seconds(pid) if pid else None
                if on_mark:
                    marks["w1"] = on_mark("w1")
            nap, busy = LEAN_N_NAP, 0
            for st in streams:
                if st.req is None:
                    if now < end and nreq < args.max_requests:
                        if now >= st.start:
                            try:
                                send(st)
                            except OSError as e:
                                if st.sock is not None:
                                    drop(st, type(e).__name__)
                                else:
                                    err(type(e).__name__)
                                continue
                        else:
                            nap = min(nap, st.start - now)
                            continue
                    else:
                        continue
                busy += 1
                if st.eta:
                    # Wake just after its predicted end; past it, a quarter event later.
                    nap = min(nap, st.eta + LEAN_N_MIN_NAP - now if st.eta > now else
                              0.25 * st.per_event)
            if not busy and now >= end:
                break
            if now > hard:
                err("phase cut at its time bound")
                break
            time.sleep(max(nap, LEAN_N_MIN_NAP))
            wakes += 1
            look(False)
    finally:
        for st in streams:
            if st.sock is not None:
                st.sock.close()
        ep.close()
    if on_mark:
        marks["end"] = on_mark("end")
    next_id[0] += nreq
    reqs = []
    for r, pieces in done_reqs:
        try:
            parse_response(r, pieces)
            reqs.append(r)
        except (ValueError, KeyError) as e:
            err("unparsable stream: " + type(e).__name__)
    if w1 is None:
        err("no window")
        w0 = w1 = time.monotonic()
        c0 = c1 = 0.0
    s = summarize(reqs, w0, w1, cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None)
    s["sent"] = nreq
    s["client_cpu"] = c1 - c0
    s["total_tokens"] = sum(r.tokens for r in reqs)
    s["requests"] = len(reqs)
    s["wakes"] = wakes
    # Reads come in bulk: the times of single events say little.
    s["ttft"], s["itl"] = [], []
    s["errors"] = errors
    s["marks"] = marks
    return s

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


def model_shape(model_dir):
    """(n_layer, n_embd, vocab_size) from model_dir's config.json; GPT-2 124M without one."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        return c["n_layer"], c["n_embd"], c["vocab_size"], "config.json"
    except (OSError, TypeError, ValueError, KeyError):
        return 12, 768, 50257, "GPT-2 124M assumed"


def flop_per_token(shape, prompt_tokens, max_tokens):
    L, C, V = shape[:3]
    rows = max(prompt_tokens, 1) + max_tokens - 1
    return (rows * 24.0 * L * C * C + max_tokens * 2.0 * C * V) / max_tokens


def peak(path):
    """(FLOP/s on every core, FLOP per CPU-second of one core) from bench/peak, or None."""
    if not path or not os.access(path, os.X_OK):
        return None
    try:
        out = subprocess.run([path], capture_output=True, text=True, timeout=60).stdout
        kv = dict(f.split("=", 1) for f in out.split())
        return float(kv["fma_gflops"]) * 1e9, float(kv["core_gflops_cpu"]) * 1e9
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server")
    ap.add_argument("--server", help="the nano-vllm binary to start (with --model)")
    ap.add_argument("--model", help="model directory for --server (and its shape for the bound)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    ap.add_argument("--pid", type=int, help="pid of the running server, for its RSS and CPU")
    ap.add_argument("--model-name", help="the 'model' field to send")
    ap.add_argument("--api-key", default=os.environ.get("NANO_VLLM_API_KEY"))
    ap.add_argument("--levels", default="1,8,32,64", help="concurrency levels")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=64,
                    help="prompt length in tokens (ids, distinct per request); 0 = short text")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds of the steady phase per level (bound)")
    ap.add_argument("--ramp", type=float, help="seconds over which the steady phase's clients "
                    "send their first request (default 0.3 x duration)")
    ap.add_argument("--warmup", type=float, help="seconds at the start of the steady phase "
                    "left out of its figures (default the ramp)")
    ap.add_argument("--no-burst", action="store_true", help="skip the burst phase")
    ap.add_argument("--lean", action="store_true", help="the steady phases use the lean clients "
                    "(run_lean for one stream, run_lean_n for more): tokens/s with next to no "
                    "client CPU, no latencies")
    ap.add_argument("--max-requests", type=int, default=2000, help="requests per phase (bound)")
    ap.add_argument("--peak", help="the bench/peak binary (default: next to --server's build "
                    "tree, else build/bench/peak)")
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

    here = os.path.dirname(os.path.abspath(__file__))
    peak_path = args.peak or (
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.server))), "bench", "peak")
        if args.server else os.path.join(os.path.dirname(here), "build", "bench", "peak"))
    shape = model_shape(args.model) if args.model else model_shape("")
    fpt = flop_per_token(shape, args.prompt_tokens, args.max_tokens)
    pk = peak(peak_path)

    print("%-6s %5s %9s %8s %8s %8s %8s %8s %8s %8s %6s %6s %8s" % (
        "phase", "conc", "tokens/s", "ttft p50", "p90", "p99", "itl p50", "p90", "p99", "done",
        "ofbnd", "cpu", "RSS MiB"), flush=True)
    rows = []
    next_id = [0]
    try:
        for conc in [int(c) for c in args.levels.split(",")]:
            for burst in ([True] if not args.no_burst else []) + [False]:
                if conc == 1 and not burst and args.lean:
                    s = run_lean(host, port, args, args.pid, next_id)
                elif not burst and args.lean:
                    s = run_lean_n(host, port, conc, args, args.pid, next_id)
                else:
                    s = asyncio.run(run_phase(host, port, conc, args, burst, args.pid, next_id))
                mem = rss(args.pid) if args.pid else {}
                rows.append((burst, conc, s, mem))
                print_row(burst, conc, s, mem, pk, fpt, None)
        if args.pid:
            print("server peak RSS (VmHWM): %s MiB" % rss(args.pid).get("VmHWM", "-"))
        pk2 = peak(peak_path)
        if pk and pk2:
            pk = (max(pk[0], pk2[0]), max(pk[1], pk2[1]))
        if pk:
            print("bound: FMA peak %.1f GFLOP/s (%.1f per CPU-second of one core) over %.1f "
                  "MFLOP per generated token (%s: L %d, C %d, V %d) = %.1f tokens/s" % (
                      pk[0] / 1e9, pk[1] / 1e9, fpt / 1e6, shape[3], shape[0], shape[1],
                      shape[2], pk[0] / fpt))
            print("ofbnd: tokens/s over that bound; cpu: tokens per server CPU-second over "
                  "one core's FMA peak per CPU-second / FLOP per token")
        else:
            print("bound: %s not found or failed (build it: meson compile -C build); no ratios"
                  % peak_path)
        print("(latencies in ms; burst: all requests of a level at once, one wave; steady: "
              "arrivals ramped, warm-up left out)")
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)


def print_row(burst, conc, s, mem, pk, fpt, _):
    tps = s["tps"]
    ofb = "%5.0f%%" % (100.0 * tps * fpt / pk[0]) if pk else "-"
    cpu = ("%5.0f%%" % (100.0 * s["tokens"] * fpt / (s["cpu"] * pk[1]))
           if pk and s.get("cpu") else "-")
    print("%-6s %5d %9.1f %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f %8s %6s %6s %8s" % (
        "burst" if burst else "steady", conc, tps, 1e3 * pct(s["ttft"], 50),
        1e3 * pct(s["ttft"], 90), 1e3 * pct(s["ttft"], 99), 1e3 * pct(s["itl"], 50),
        1e3 * pct(s["itl"], 90), 1e3 * pct(s["itl"], 99), "%d/%d" % (s["done"], s["sent"]),
        ofb, cpu, mem.get("VmRSS", "-")), flush=True)
    if s["errors"]:
        print("       errors: %s" % s["errors"], flush=True)


if __name__ == "__main__":
    main()
