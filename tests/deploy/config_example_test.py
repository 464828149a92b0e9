"""deploy/nano-vllm.conf is a settings file the server accepts, and means what it says.

Starts `nano-vllm serve --config deploy/nano-vllm.conf --port 0` on the tiny test checkpoint
(flags override the file, so the port is a free one) and compares the effective settings the
server logs at start with every `key = value` line of the file. A copy with a misspelt key
must be refused with the file's line number.

usage: config_example_test.py SOURCE_ROOT NANO_VLLM_BINARY
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

FAILURES = 0


def check(cond, what, got=None, want=None):
    global FAILURES
    if cond:
        print(f"ok   {what}", flush=True)
        return
    FAILURES += 1
    print(f"FAIL {what} (config_example_test.py:{sys._getframe(1).f_lineno})", flush=True)
    if got is not None or want is not None:
        print(f"     got:  {got!r}\n     want: {want!r}", flush=True)


def file_settings(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip()
    return out


def main():
    root, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    conf = os.path.join(root, "deploy", "nano-vllm.conf")
    want = file_settings(conf)
    check(len(want) >= 10, "the example sets the settings that matter", sorted(want))
    tmp = tempfile.mkdtemp(prefix="config-example-test.")
    try:
        model = os.path.join(tmp, "tiny")
        subprocess.run([os.path.join(root, "scripts", "make-checkpoint"), "--shape", "tiny",
                        "--out", model], check=True, capture_output=True, timeout=120)
        log_path = os.path.join(tmp, "server.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([binary, "serve", "--config", conf, "--port", "0",
                                     "--log-format", "text", model],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            t0 = time.monotonic()
            text = ""
            while time.monotonic() - t0 < 30 and proc.poll() is None:
                text = open(log_path).read()
                if "listening on" in text:
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        text = open(log_path).read()
        got = dict(re.findall(r" config (\w+) = (.*)$", text, re.M))
        check(rc == 0 and "listening on" in text, "the server starts with the file and stops on "
              "SIGTERM with status 0", (rc, text[-1500:]))
        check(not re.search(r"Sanitizer|runtime error:", text), "no sanitizer report",
              text[-1500:])
        for key, value in want.items():
            expect = {"port": "0", "log_format": "text"}.get(key, value)
            check(got.get(key) == expect, f"{key} = {expect} in effect", got.get(key), expect)

        bad = os.path.join(tmp, "bad.conf")
        with open(conf) as f:
            lines = f.read().splitlines()
        n = next(i for i, line in enumerate(lines) if line.startswith("max_num_seqs"))
        lines[n] = lines[n].replace("max_num_seqs", "max_seqs")
        with open(bad, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = subprocess.run([binary, "serve", "--config", bad, "--port", "0", model],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode != 0 and f"bad.conf:{n + 1}" in p.stderr + p.stdout and
              "max_seqs" in p.stderr + p.stdout,
              "a misspelt key is refused with its line number", (p.returncode, p.stderr[-500:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILURES:
        print(f"{FAILURES} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
