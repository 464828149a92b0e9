"""deploy/nano-vllm.conf and the manifests' NANO_VLLM_* variables are settings the server
accepts, and mean what they say.

Starts `nano-vllm serve --config deploy/nano-vllm.conf --port 0` on the tiny test checkpoint
(flags override the file, so the port is a free one) and compares the effective settings the
server logs at start with every `key = value` line of the file. A copy with a misspelt key
must be refused with the file's line number. Then the same for the environment that
deploy/k8s/deployment.yaml, deploy/compose.yaml and the Dockerfile give the server (host and
port overridden by flags, so the server stays on a free loopback port).

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

import yaml

from checks import check, exit_status


def file_settings(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip()
    return out


def effective(binary, args, env, log_path):
    """Starts the server, waits for its listening line, stops it with SIGTERM.
    Returns (exit status, log text, {setting: value} as the server logged them)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([binary, "serve", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **env))
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30 and proc.poll() is None:
            if "listening on" in open(log_path).read():
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    text = open(log_path).read()
    return rc, text, dict(re.findall(r" config (\w+) = (.*)$", text, re.M))


def check_run(what, rc, text):
    check(rc == 0 and "listening on" in text,
          f"{what}: the server starts and stops on SIGTERM with status 0", (rc, text[-1500:]))
    check(not re.search(r"Sanitizer|runtime error:", text), f"{what}: no sanitizer report",
          text[-1500:])


def deployment_env(root):
    """NANO_VLLM_* of the Kubernetes Deployment, compose.yaml and the Dockerfile's ENV, less
    the entrypoint's own variables (it consumes them before the server starts)."""
    own = {"NANO_VLLM_MODEL", "NANO_VLLM_MODEL_DIR"}
    out = {}
    with open(os.path.join(root, "deploy", "k8s", "deployment.yaml")) as f:
        dep = next(d for d in yaml.safe_load_all(f) if d)
    env = dep["spec"]["template"]["spec"]["containers"][0].get("env", [])
    out["deploy/k8s/deployment.yaml"] = {e["name"]: e["value"] for e in env if "value" in e}
    with open(os.path.join(root, "deploy", "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    out["deploy/compose.yaml"] = dict(compose["services"]["nano-vllm"].get("environment", {}))
    with open(os.path.join(root, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    out["Dockerfile"] = dict(re.findall(r"(NANO_VLLM_\w+)=(\S+)",
                                        " ".join(re.findall(r"^ENV (.*)$", text, re.M))))
    return {src: {k: str(v) for k, v in env.items() if k.startswith("NANO_VLLM_") and
                  k not in own} for src, env in out.items()}


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
        rc, text, got = effective(binary, ["--config", conf, "--port", "0", "--log-format",
                                           "text", model], {}, log_path)
        check_run("deploy/nano-vllm.conf", rc, text)
        for key, value in want.items():
            expect = {"port": "0", "log_format": "text"}.get(key, value)
            check(got.get(key) == expect, f"{key} = {expect} in effect", got.get(key), expect)

        # The settings the container manifests pass through the environment.
        envs = deployment_env(root)
        check(sum(len(e) for e in envs.values()) >= 4, "the manifests set NANO_VLLM_* settings",
              envs)
        for src, env in envs.items():
            if not env:
                continue
            flags = ["--host", "127.0.0.1", "--port", "0", "--log-format", "text"]
            rc, text, got = effective(binary, flags + [model], env, log_path)
            check_run(src, rc, text)
            for var, value in env.items():
                key = var[len("NANO_VLLM_"):].lower()
                # A variable that a flag here overrides is still parsed and checked first.
                flagged = {"host": "127.0.0.1", "port": "0", "log_format": "text"}
                expect = flagged.get(key, value)
                what = "accepted" if key in flagged else "in effect"
                check(got.get(key) == expect, f"{src}: {var}={value} {what}", got.get(key),
                      expect)

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
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
