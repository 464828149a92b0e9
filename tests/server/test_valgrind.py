#!/usr/bin/python3
"""Valgrind memcheck on a server run: start, serve a few requests of each kind (plain,
streaming, n > 1 with stop strings, a client that leaves mid-stream, errors), then drain on
SIGTERM. Passes when the server exits 0 and memcheck reports no errors and no definite,
indirect or possible leaks.

    test_valgrind.py NANO_VLLM CKPT_DIR GPT2_REF

The command it runs (print with -v):
    OPENBLAS_NUM_THREADS=1 valgrind --error-exitcode=99 --leak-check=full
        --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible
        NANO_VLLM serve CKPT_DIR/tiny-f32 --port 0 --kv-cache-memory 4M --threads 1
"""

import json
import os
import shutil
import stat
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402

VALGRIND = ["valgrind", "--error-exitcode=99", "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible", "--num-callers=30"]


def main():
    if not shutil.which("valgrind"):
        print("valgrind not installed (scripts/install-deps installs it)")
        return 77
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        wrapper = os.path.join(d, "nano-vllm")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (" ".join(VALGRIND), ts.BIN))
        os.chmod(wrapper, stat.S_IRWXU)
        ts.BIN = wrapper
        srv = ts.Server("--kv-cache-memory", "4M", "--threads", "1",
                        env={"OPENBLAS_NUM_THREADS": "1"}, wait_ready=False)
        try:
            srv.wait_health(200, 600)
            body = {"prompt": "Hello, my name is", "max_tokens": 8, "temperature": 0}
            s, _, data = ts.request(srv, "POST", "/v1/completions", body)
            ts.check_eq(s, 200, "plain request")
            s, _, data = ts.request(srv, "POST", "/v1/completions",
                                    {"prompt": ["a b", "c"], "n": 2, "max_tokens": 6,
                                     "stop": [" the", "."], "logprobs": 2, "seed": 3})
            ts.check_eq(s, 200, "n > 1 with stops and logprobs")
            status, _, _, sse = ts.raw_stream(srv, dict(body, stream=True,
                                                        stream_options={"include_usage": True}))
            ts.check(sse.endswith(b"data: [DONE]\n\n"), "stream completes", sse[-60:])
            sock = ts.raw_stream(srv, {"prompt": "Once", "max_tokens": 100, "ignore_eos": True,
                                       "stream": True}, read_events=2)
            sock.close()  # leaves mid-stream
            s, _, data = ts.request(srv, "POST", "/v1/completions", "{bad json")
            ts.check_error(s, data, 400, "bad JSON")
            s, _, data = ts.request(srv, "POST", "/tokenize", {"prompt": "héllo"})
            ts.check_eq(s, 200, "tokenize")
            ts.check_eq(ts.request(srv, "GET", "/metrics")[0], 200, "metrics")
            # One stream still running when SIGTERM arrives: the drain finishes it.
            sock = ts.raw_stream(srv, {"prompt": "Once", "max_tokens": 30, "ignore_eos": True,
                                       "stream": True}, read_events=1)
        finally:
            rc = srv.stop(timeout=600)
        try:
            sock.settimeout(60)
            while sock.recv(65536):
                pass
            sock.close()
        except (OSError, NameError):
            pass
    vg = [l for l in srv.log if l.startswith("==")]
    heap = [i for i, l in enumerate(vg) if "HEAP SUMMARY" in l]
    summary = vg[heap[-1]:] if heap else vg[-12:]
    print("\n".join(summary))
    ts.check_eq(rc, 0, "server exit status under valgrind (99 = memcheck errors or leaks)")
    ts.check(any("ERROR SUMMARY: 0 errors" in l for l in srv.log), "memcheck: 0 errors", summary)
    if ts.FAILURES:
        print("\n".join([l for l in srv.log if l.startswith("==")][-80:]), file=sys.stderr)
    print("test_valgrind: %d failure(s) in %.1f s" % (len(ts.FAILURES), time.time() - t0))
    return 1 if ts.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
