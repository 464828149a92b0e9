"""Prometheus reads our metrics back: deploy/prometheus.yml against a real server.

First `promtool check config` on deploy/prometheus.yml and `promtool test rules` on the unit
tests of deploy/prometheus-rules.yml (tests/deploy/prometheus-rules.test.yml), then
`promtool check metrics` on the server's /metrics.

Starts `nano-vllm serve` with the tiny test checkpoint on a loopback port, makes one
completion so the token counters move, then starts Debian's `prometheus` with the scrape
job of deploy/prometheus.yml (same job name and path, the target and interval pointed at
this server) and asks Prometheus' HTTP API for the job's `up` and for our generation-token
counter, whose value must be the one the server's own /metrics reports, and for a recording
rule of deploy/prometheus-rules.yml; every metric the rules name must be exported.
Exit status 77 (skipped) when prometheus is not installed (scripts/install-deps --container).

usage: prometheus_test.py SOURCE_ROOT NANO_VLLM_BINARY
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

from checks import check, exit_status


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def start_server(binary, model, log_path, extra=()):
    """Starts the server (with the extra arguments) on a free loopback port; returns (process,
    port) once /health is 200."""
    log = open(log_path, "w")
    proc = subprocess.Popen([binary, "serve", model, "--host", "127.0.0.1", "--port", "0",
                             *extra], stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    port = None
    while time.monotonic() - t0 < 60:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{open(log_path).read()}")
        if port is None:
            m = re.search(r"listening on [\d.]+:(\d+)", open(log_path).read())
            port = int(m.group(1)) if m else None
        if port is not None:
            try:
                if http(f"http://127.0.0.1:{port}/health", timeout=2)[0] == 200:
                    return proc, port
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError("server not ready after 60 s:\n" + open(log_path).read())


def samples(text):
    """name{labels} -> value for every sample line of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def query(prom_port, expr):
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        status, body = http(url, timeout=5)
    except OSError:
        return None
    r = json.loads(body)
    return r["data"]["result"] if status == 200 and r.get("status") == "success" else None


def main():
    root, binary = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    prometheus = shutil.which("prometheus")
    if not prometheus:
        print("prometheus is not installed (scripts/install-deps --container)")
        return 77
    promtool = shutil.which("promtool")
    p = subprocess.run([promtool, "check", "config", "prometheus.yml"], capture_output=True,
                       text=True, cwd=os.path.join(root, "deploy"), timeout=60)
    check(p.returncode == 0, "promtool check config deploy/prometheus.yml (and its rules)",
          p.stdout + p.stderr)
    p = subprocess.run([promtool, "test", "rules", "prometheus-rules.test.yml"],
                       capture_output=True, text=True, timeout=60,
                       cwd=os.path.join(root, "tests", "deploy"))
    check(p.returncode == 0, "promtool test rules: the alerts fire when they should",
          p.stdout + p.stderr)
    tmp = tempfile.mkdtemp(prefix="prometheus-test.")
    procs = []
    try:
        model = os.path.join(tmp, "tiny")
        subprocess.run([os.path.join(root, "scripts", "make-checkpoint"), "--shape", "tiny",
                        "--out", model], check=True, capture_output=True, timeout=120)
        server, port = start_server(binary, model, os.path.join(tmp, "server.log"))
        procs.append(server)
        status, body = http(f"http://127.0.0.1:{port}/v1/completions",
                            {"prompt": "Hello", "max_tokens": 5, "ignore_eos": True})
        check(status == 200, "a completion to move the counters", body)

        status, body = http(f"http://127.0.0.1:{port}/metrics")
        # Prometheus' own linter on the exposition (names, suffixes, HELP and TYPE lines).
        lint = subprocess.run([promtool, "check", "metrics"], input=body.encode(),
                              capture_output=True, timeout=60)
        check(lint.returncode == 0, "promtool check metrics on /metrics",
              (lint.stdout + lint.stderr).decode(errors="replace"))
        ours = samples(body)
        gen = [k for k in ours
               if re.fullmatch(r"[\w:]*generation_tokens_total", k.split("{")[0])]
        if not check(len(gen) == 1 and ours[gen[0]] >= 5,
                     "/metrics has one generation-token counter, at least 5", gen):
            return 1
        metric, want = gen[0], ours[gen[0]]

        # Every metric the rules use is one the server exports.
        with open(os.path.join(root, "deploy", "prometheus-rules.yml")) as f:
            rules_text = f.read()
        exported = {k.split("{")[0] for k in ours}
        # Names of series, not of the recording rules built from them ("instance:nano_...").
        used = set(re.findall(r"(?<![:\w])nano_vllm_\w+", rules_text))
        check(used and all(u in exported for u in used),
              "every nano_vllm_ metric in the rules is exported", sorted(used - exported))

        # The shipped scrape job and rules, aimed at this server.
        with open(os.path.join(root, "deploy", "prometheus.yml")) as f:
            cfg = yaml.safe_load(f)
        job = cfg["scrape_configs"][0]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        job["scrape_interval"] = "1s"
        cfg["global"]["scrape_interval"] = "1s"
        cfg["global"]["evaluation_interval"] = "1s"
        cfg["rule_files"] = [os.path.join(root, "deploy", r) for r in cfg["rule_files"]]
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            yaml.safe_dump(cfg, f)
        prom_port = free_port()
        prom_log = open(os.path.join(tmp, "prometheus.log"), "w")
        procs.append(subprocess.Popen(
            [prometheus, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=prom_log, stderr=subprocess.STDOUT))

        t0 = time.monotonic()
        up = got = rec = None
        while time.monotonic() - t0 < 30:
            rec = rec or query(prom_port, "instance:nano_vllm_generation_tokens:rate1m")
            up = query(prom_port, f'up{{job="{job["job_name"]}"}}')
            # The same series: its own labels plus the job's.
            name, _, labels = metric.partition("{")
            labels = ",".join(filter(None, [labels.rstrip("}"), f'job="{job["job_name"]}"']))
            got = query(prom_port, f"{name}{{{labels}}}")
            if up and got and rec:
                break
            time.sleep(0.5)
        check(up and up[0]["value"][1] == "1", f"Prometheus: up{{job=\"{job['job_name']}\"}} is 1",
              up)
        check(got and float(got[0]["value"][1]) == want,
              f"Prometheus: {metric} reads back {want:g}", got)
        check(rec, "Prometheus: the recording rule instance:nano_vllm_generation_tokens:rate1m "
              "has a value", rec)
        if not (up and got and rec):
            print(open(os.path.join(tmp, "prometheus.log")).read()[-2000:])
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log = os.path.join(tmp, "server.log")
        if os.path.exists(log):
            text = open(log, errors="replace").read()
            # Under -Db_sanitize the server reports there; a report is a failure.
            check(procs and procs[0].returncode == 0 and
                  not re.search(r"Sanitizer|runtime error:", text),
                  "the server drains and exits 0 on SIGTERM, no sanitizer report",
                  (procs and procs[0].returncode, text[-1500:]))
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
