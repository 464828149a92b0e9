"""The inference gateway example (deploy/k8s/inference-gateway.yaml) against a real server.

The Gateway API Inference Extension's endpoint picker (EPP) scrapes each model server's
/metrics and reads, by the names its flags give, three gauges (queued requests, running
requests, KV-cache utilization from 0 to 1) and an info gauge whose `block_size` and
`num_gpu_blocks` labels give the KV pool. It parses the Prometheus text format and takes the
value of a *gauge* sample, so a metric typed anything else reads as 0 without an error.

This test checks, first, that the manifest hangs together: the pool selects the Deployment's
pods on the server's port, names the picker's Service and port, the picker is told that pool,
its Service reaches its gRPC port, its service account is the one its Role is bound to, and
the HTTPRoute sends to the pool. Then it starts `nano-vllm serve` on the tiny checkpoint with
one sequence at a time and a 64-block pool, sends eight completions at once, and polls
/metrics meanwhile: every metric the picker's flags name exists with type gauge; running
never exceeds --max-num-seqs and is 1 while the other requests are counted as queued; the
KV utilization is the used share of the pool, above 0 while a sequence runs; the info gauge
gives block_size 16 and num_gpu_blocks 64; afterwards all three are 0.

usage: gateway_test.py SOURCE_ROOT NANO_VLLM_BINARY
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import yaml

from checks import check, exit_status
from prometheus_test import http, start_server

MAX_NUM_SEQS, NUM_BLOCKS, BLOCK_SIZE = 1, 64, 16
# The picker's flag for each part of the model server protocol.
FLAGS = {
    "queued": "--total-queued-requests-metric",
    "running": "--total-running-requests-metric",
    "kv": "--kv-cache-usage-percentage-metric",
    "info": "--cache-info-metric",
}


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def flag_values(args):
    """--flag value pairs of a container's args."""
    out = {}
    for i, a in enumerate(args):
        if a.startswith("-") and i + 1 < len(args) and not str(args[i + 1]).startswith("--"):
            out[a] = args[i + 1]
    return out


def parse_exposition(text):
    """Prometheus text format -> {name: (type, [(labels dict, value)])}; raises on a sample
    line before its family's TYPE, as a strict reader of the picker's kind would mind."""
    fams = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            fams[name] = (typ, [])
        elif line and not line.startswith("#"):
            m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
            if not m:
                raise ValueError(f"bad sample line {line!r}")
            name = m.group(1)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            fam = fams.get(name) or fams.get(base)
            if fam is None:
                raise ValueError(f"sample {name} before its # TYPE line")
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            fam[1].append((labels, float(m.group(3))))
    return fams


def gauge(fams, spec):
    """The value the picker reads for a metric spec 'name' or 'name{label="v"}'."""
    name, _, sel = spec.partition("{")
    want = dict(re.findall(r'(\w+)="?([^",}]*)"?', sel))
    typ, rows = fams.get(name, (None, []))
    if typ != "gauge":
        return None
    rows = [v for labels, v in rows if all(labels.get(k) == x for k, x in want.items())]
    return rows[-1] if rows else None


def test_manifest(root):
    docs = load_all(os.path.join(root, "deploy", "k8s", "inference-gateway.yaml"))
    server = load_all(os.path.join(root, "deploy", "k8s", "deployment.yaml"))[0]
    pod = server["spec"]["template"]
    port = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    pools = by_kind(docs, "InferencePool")
    if not check(len(pools) == 1, "one InferencePool", len(pools)):
        return None
    pool = pools[0]
    check(pool["apiVersion"] == "inference.networking.k8s.io/v1", "InferencePool is the v1 API",
          pool["apiVersion"])
    check(matches(pool["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]),
          "the pool selects the nano-vllm pods", pool["spec"]["selector"])
    check([p["number"] for p in pool["spec"]["targetPorts"]] == [port.get("http")],
          "the pool's target port is the server's port", pool["spec"]["targetPorts"])

    epp = [d for d in by_kind(docs, "Deployment")
           if d["metadata"]["name"] == pool["spec"]["endpointPickerRef"]["name"]]
    svc = [d for d in by_kind(docs, "Service")
           if d["metadata"]["name"] == pool["spec"]["endpointPickerRef"]["name"]]
    if not check(len(svc) == 1 and len(epp) == 1,
                 "the picker's Service and Deployment are named by endpointPickerRef",
                 (len(svc), len(epp))):
        return None
    svc, epp = svc[0], epp[0]
    epod = epp["spec"]["template"]
    container = epod["spec"]["containers"][0]
    eport = {p["name"]: p["containerPort"] for p in container["ports"]}
    sport = svc["spec"]["ports"][0]
    check(matches(svc["spec"]["selector"], epod["metadata"]["labels"]),
          "the picker's Service selects the picker's pod", svc["spec"]["selector"])
    check(sport["port"] == pool["spec"]["endpointPickerRef"]["port"]["number"] and
          sport["targetPort"] in eport, "endpointPickerRef's port reaches the picker's gRPC port",
          (sport, eport))
    flags = flag_values(container["args"])
    check(flags.get("--pool-name") == pool["metadata"]["name"], "the picker is told the pool",
          flags.get("--pool-name"))
    check(eport.get("grpc") == int(flags.get("--grpc-port", 0)), "the picker's --grpc-port is "
          "its container port", (flags.get("--grpc-port"), eport))
    check(epod["spec"].get("terminationGracePeriodSeconds", 30) >=
          pod["spec"]["terminationGracePeriodSeconds"],
          "the picker's grace period covers the pool's", epod["spec"])
    sa = epod["spec"].get("serviceAccountName")
    bindings = [b for b in by_kind(docs, "RoleBinding")
                if any(s["name"] == sa for s in b["subjects"])]
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "Role")}
    granted = [rule for b in bindings for rule in roles.get(b["roleRef"]["name"], {})
               .get("rules", [])]
    for group, res in [("inference.networking.k8s.io", "inferencepools"), ("", "pods")]:
        check(any(group in r["apiGroups"] and res in r["resources"] and "watch" in r["verbs"]
                  for r in granted), f"the picker's account may watch {res}", granted)
    routes = by_kind(docs, "HTTPRoute")
    refs = [b for r in routes for rule in r["spec"]["rules"] for b in rule["backendRefs"]]
    check(any(b.get("kind") == "InferencePool" and b["name"] == pool["metadata"]["name"] and
              b.get("group") == "inference.networking.k8s.io" for b in refs),
          "an HTTPRoute sends to the pool", refs)
    specs = {k: flags.get(f) for k, f in FLAGS.items()}
    check(all(specs.values()), "the picker's flags name our metrics", specs)
    return specs


def test_metrics(root, binary, specs):
    tmp = tempfile.mkdtemp(prefix="gateway-test.")
    server = None
    try:
        model = os.path.join(tmp, "tiny")
        subprocess.run([os.path.join(root, "scripts", "make-checkpoint"), "--shape", "tiny",
                        "--out", model], check=True, capture_output=True, timeout=120)
        server, port = start_server(binary, model, os.path.join(tmp, "server.log"),
                                    ["--max-num-seqs", str(MAX_NUM_SEQS),
                                     "--num-kv-blocks", str(NUM_BLOCKS)])
        base = f"http://127.0.0.1:{port}"

        def scrape():
            return parse_exposition(http(base + "/metrics")[1])

        fams = scrape()
        for what, spec in specs.items():
            check(gauge(fams, spec) is not None, f"{spec} ({what}) is exported as a gauge",
                  fams.get(spec.partition("{")[0], (None,))[0])
        info = [labels for labels, v in fams.get(specs["info"], ("", []))[1] if v == 1]
        check(len(info) == 1 and info[0].get("block_size") == str(BLOCK_SIZE) and
              info[0].get("num_gpu_blocks") == str(NUM_BLOCKS),
              f"{specs['info']} has block_size {BLOCK_SIZE} and num_gpu_blocks {NUM_BLOCKS}",
              info)
        idle = [gauge(fams, specs[k]) for k in ("queued", "running", "kv")]
        check(idle == [0, 0, 0], "idle: nothing queued or running, KV cache empty", idle)

        # Eight requests for one sequence slot: one runs, the rest queue.
        n_req, results = 8, []

        def one(i):
            try:
                results.append(http(base + "/v1/completions",
                                    {"prompt": "request %d" % i, "max_tokens": 200,
                                     "ignore_eos": True}, timeout=120)[0])
            except OSError as e:
                results.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n_req)]
        for t in threads:
            t.start()
        seen, bad = [], []
        t0 = time.monotonic()
        while any(t.is_alive() for t in threads) and time.monotonic() - t0 < 90:
            fams = scrape()
            q, r, kv = (gauge(fams, specs[k]) for k in ("queued", "running", "kv"))
            used = gauge(fams, "nano_vllm_kv_cache_blocks_used")
            if r > MAX_NUM_SEQS or abs(kv - used / NUM_BLOCKS) > 1e-9 or not 0 <= kv <= 1:
                bad.append((q, r, kv, used))
            seen.append((q, r, kv))
            time.sleep(0.02)
        for t in threads:
            t.join(timeout=60)
        check(results == [200] * n_req, "the eight completions succeed", results)
        check(not bad, "running <= --max-num-seqs and KV utilization = used / pool blocks, in "
              "[0, 1], at every scrape", bad[:5])
        busy = [s for s in seen if s[0] >= 1 and s[1] == 1 and s[2] > 0]
        check(busy, "while one request runs the others are queued and the KV cache is in use "
              f"({len(seen)} scrapes)", seen[:10])
        check(max((s[0] for s in seen), default=0) <= n_req - 1,
              "never more queued than were sent", max((s[0] for s in seen), default=None))
        fams = scrape()
        after = [gauge(fams, specs[k]) for k in ("queued", "running", "kv")]
        check(after == [0, 0, 0], "afterwards: nothing queued or running, KV cache empty", after)
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    root, binary = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    specs = test_manifest(root)
    if specs and all(specs.values()):
        test_metrics(root, binary, specs)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
