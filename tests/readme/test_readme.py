"""Runs the commands of README.md and docs/performance.md, so they cannot rot.

Every ```sh block of the two is read; each command is run against the real binary with
the tiny test checkpoint standing in for models/gpt2 (served as "gpt2" on a free loopback
port), with bounds shortened where a command is a load test or a benchmark. A command this
test does not know how to run fails it, so a new README command gets a runner here too.
`make test` is what CI runs; `make serve` is run with the tiny checkpoint in place of the
download. The Python OpenAI client example cannot run here (Debian has no `openai` package);
the suite runs the same calls with the official Node SDK (tests/server/test_openai_node.py).

usage: test_readme.py SOURCE_ROOT NANO_VLLM_BINARY CHECKPOINT_DIR BUILD_ROOT
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

ROOT, BIN, CKPT, BUILD = (os.path.abspath(a) for a in sys.argv[1:5])
FAILURES = 0


def check(cond, what, got=None):
    global FAILURES
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES += 1
        if got is not None:
            print("     got: " + str(got)[:1500], flush=True)


def commands(md):
    """Shell commands of the ```sh blocks: continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"^```sh\n(.*?)^```", md, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                out.append(line)
    return out


class Server:
    """nano-vllm serve on the tiny checkpoint, named gpt2, on a free loopback port."""

    def __init__(self, model_dir):
        self.proc = subprocess.Popen(
            [BIN, "serve", model_dir, "--port", "0", "--served-model-name", "gpt2",
             "--kv-cache-memory", "64M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(60)
        if self.port is None:
            raise SystemExit("server did not start")
        self.wait_health()

    def wait_health(self):
        for _ in range(300):
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{self.port}/health"],
                               capture_output=True, text=True)
            if r.stdout == "200":
                return
            threading.Event().wait(0.1)
        raise SystemExit("server never became healthy")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -1


def run(argv, what, timeout=120, cwd=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    check(r.returncode == 0, f"{what}: exit 0", r.stderr or r.stdout)
    return r


def main():
    with open(os.path.join(ROOT, "README.md")) as f:
        cmds = commands(f.read())
    check(len(cmds) >= 8, f"README has its commands ({len(cmds)})")
    # The benchmarks' reproduce commands moved with the measurements to docs/performance.md.
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        perf = commands(f.read())
    check(len(perf) >= 5, f"docs/performance.md has its commands ({len(perf)})")
    cmds += perf
    tmp = tempfile.mkdtemp(prefix="readme-")
    # The README's models/gpt2, made of the tiny test checkpoint.
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    shutil.copytree(os.path.join(CKPT, "tiny-f32"), os.path.join(models, "gpt2"))
    # The README's chat example runs GPT-2 with a template: the one the README shows.
    with open(os.path.join(models, "gpt2", "chat_template.jinja"), "w") as f:
        f.write("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
                "{% endfor %}assistant:")
    with open(os.path.join(tmp, "prompts.txt"), "w") as f:
        f.write("Hello, my name is\nThe capital of France is\n")
    srv = Server(os.path.join(models, "gpt2"))
    url = f"http://127.0.0.1:{srv.port}"
    try:
        for cmd in cmds:
            argv = shlex.split(cmd.replace("http://127.0.0.1:8000", url))
            prog = argv[0]
            if prog == "make" and argv[1:] == ["test"]:
                print("skip make test: it is what runs this test (CI runs it)")
            elif prog == "make" and argv[1:] == ["serve"]:
                # make serve with the model already present: no download; it must build and
                # start serving. Check it with --help passed through so it returns.
                r = subprocess.run(["make", "-C", ROOT, "-n", "serve"], capture_output=True,
                                   text=True, timeout=60)
                check(r.returncode == 0 and "nano-vllm serve" in r.stdout
                      and "download-model" in r.stdout, "make serve: builds, downloads if absent, serves",
                      r.stdout + r.stderr)
            elif prog == "curl":
                r = run(argv, cmd[:70])
                if '"stream": true' in cmd:
                    events = [e for e in r.stdout.split("\n\n") if e.strip()]
                    check(events and events[-1] == "data: [DONE]",
                          "streamed completion ends with data: [DONE]", r.stdout[-300:])
                    first = json.loads(events[0][len("data: "):])
                    check(first["object"] == "text_completion", "stream event shape", first)
                elif "/v1/chat/completions" in cmd:
                    body = json.loads(r.stdout)
                    check(body.get("object") == "chat.completion"
                          and body["choices"][0]["message"]["role"] == "assistant"
                          and body["usage"]["completion_tokens"] >= 1,
                          "chat completion has a message and usage", body)
                else:
                    body = json.loads(r.stdout)
                    check(body["choices"][0]["finish_reason"] in ("length", "stop")
                          and body["usage"]["completion_tokens"] >= 1,
                          "plain completion has text and usage", body)
            elif prog == "nano-vllm" and argv[1] == "generate":
                argv = [BIN] + argv[1:]
                run(argv, cmd[:70], cwd=tmp)
            elif prog == "wrk":
                argv = ["-d1s" if a.startswith("-d") else "-c4" if a.startswith("-c") else a
                        for a in argv]
                argv[argv.index("-s") + 1] = os.path.join(ROOT, argv[argv.index("-s") + 1])
                r = run(argv, "wrk completions.lua")
                check("Requests/sec" in r.stdout, "wrk reports requests/s", r.stdout)
            elif prog == "bench/loadgen.py":
                argv = [sys.executable, os.path.join(ROOT, prog)] + argv[1:]
                argv[argv.index("--levels") + 1] = "1,2"
                argv += ["--duration", "2", "--max-tokens", "8", "--model-name", "gpt2"]
                run(argv, "bench/loadgen.py")
            elif prog == "bench/serve-overhead.py":
                # It measures for minutes (forward-bench and a server per dtype): check that
                # it starts and knows its options.
                r = run([sys.executable, os.path.join(ROOT, prog), "--help"], prog + " --help")
                check("--levels" in r.stdout, prog + " --help lists --levels", r.stdout)
            elif prog.startswith("build/bench/"):
                exe = os.path.join(BUILD, prog[len("build/"):])
                check(os.access(exe, os.X_OK), f"{prog} is built")
                run([exe, "--help"], f"{prog} --help")
            else:
                check(False, f"a runner for README command: {cmd}")
    finally:
        check(srv.stop() == 0, "server drains and exits 0 on SIGTERM")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{FAILURES} failed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
