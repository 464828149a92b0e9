"""Checks that the deployment files agree with each other and with the image.

yamllint checks the form; this checks the content a typo would break without any linter
noticing: selectors that match no pod, a probe on a port that does not exist, an autoscaler
aimed at another Deployment, a grace period shorter than the drain, a memory request smaller
than the weights plus the KV pool, a Prometheus target that is not the compose service.

usage: manifests_test.py SOURCE_ROOT NANO_VLLM_BINARY
"""
import os
import re
import subprocess
import sys

import yaml

from checks import check, exit_status

# The server's default --shutdown-timeout (read from `nano-vllm serve --help` in main) and
# the image's port.
SHUTDOWN_TIMEOUT = None
PORT = 8000
# GPT-2 124M: parameters (the LM head is tied to wte) and float32 bytes.
GPT2_PARAMS = 124_439_808


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def quantity(q):
    """Bytes in a Kubernetes memory quantity or a nano-vllm size (512M, 2G are binary)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(q))
    if not m:
        raise ValueError(f"bad quantity {q!r}")
    mult = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    unit = m.group(2)
    return float(m.group(1)) * mult[unit.rstrip("i") if unit else None]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def dockerfile_facts(root):
    facts = {}
    with open(os.path.join(root, "Dockerfile")) as f:
        text = f.read()
    m = re.findall(r"^USER (\d+)(?::(\d+))?", text, re.M)
    facts["uid"] = int(m[-1][0]) if m else None
    m = re.findall(r"^EXPOSE (\d+)", text, re.M)
    facts["expose"] = int(m[-1]) if m else None
    facts["heredoc"] = re.search(r"<<-?\s*['\"]?\w", text) is not None
    facts["copy_link"] = "--link" in text
    facts["base"] = re.findall(r"^FROM (\S+)", text, re.M)
    return facts


def test_k8s(root, docker):
    k8s = os.path.join(root, "deploy", "k8s")
    objs = {}
    for name in sorted(os.listdir(k8s)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for d in load_all(os.path.join(k8s, name)):
                check(all(k in d for k in ("apiVersion", "kind", "metadata")),
                      f"{name}: {d.get('kind')} has apiVersion, kind, metadata")
                # The inference gateway's objects (its own Deployment and Service among them)
                # are checked by gateway_test.py.
                if name != "inference-gateway.yaml":
                    objs[d["kind"]] = d

    kust = load_all(os.path.join(k8s, "kustomization.yaml"))[0]
    for r in kust["resources"]:
        check(os.path.isfile(os.path.join(k8s, r)), f"kustomization: {r} exists")

    dep = objs["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    check(matches(dep["spec"]["selector"]["matchLabels"], labels),
          "Deployment: selector matches its pods")
    server = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    check(ports.get("http") == PORT == docker["expose"], "Deployment: port http is the image's",
          ports, PORT)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = server.get(probe, {}).get("httpGet", {})
        check(p.get("path") == "/health" and p.get("port") in ports,
              f"Deployment: {probe} is GET /health on a declared port", p)
    env = {e["name"]: e.get("value") for e in server.get("env", [])}
    drain = float(env.get("NANO_VLLM_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT))
    pre = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = float(pre[1]) if pre[:1] == ["sleep"] else 0.0
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace > pre_s + drain, "Deployment: grace period outlasts preStop + drain",
          grace, f"> {pre_s + drain}")
    ctx = spec.get("securityContext", {})
    check(ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") == docker["uid"] != 0,
          "Deployment: non-root, the image's uid", ctx, docker["uid"])
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem"),
              f"Deployment: {c['name']} cannot escalate, read-only root")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        check("/tmp" in mounts and "/models" in mounts,
              f"Deployment: {c['name']} has /models and a writable /tmp", mounts)
    res = server["resources"]
    need = GPT2_PARAMS * 4 + quantity(env["NANO_VLLM_KV_CACHE_MEMORY"])
    req = quantity(res["requests"]["memory"])
    check(req >= need and quantity(res["limits"]["memory"]) >= req,
          "Deployment: memory request covers weights + KV pool, limit >= request",
          (req, quantity(res["limits"]["memory"])), f">= {need}")
    check(str(res["requests"]["cpu"]) == str(res["limits"]["cpu"]) == env["NANO_VLLM_THREADS"],
          "Deployment: cpu request = limit = threads", res, env["NANO_VLLM_THREADS"])
    ann = pod["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") ==
          str(PORT) and ann.get("prometheus.io/path") == "/metrics",
          "Deployment: scrape annotations point at /metrics", ann)
    init = spec.get("initContainers", [])
    check(init and init[0]["command"][:2] == ["download-model", env["NANO_VLLM_MODEL"]] and
          init[0]["command"][2] == f"/models/{env['NANO_VLLM_MODEL']}",
          "Deployment: the init container downloads the served model into /models/NAME",
          init and init[0]["command"])

    svc = objs["Service"]
    check(matches(svc["spec"]["selector"], labels), "Service: selects the Deployment's pods")
    sp = svc["spec"]["ports"][0]
    check(sp["targetPort"] in ports or sp["targetPort"] in ports.values(),
          "Service: targets a declared container port", sp)

    hpa = objs["HorizontalPodAutoscaler"]
    ref = hpa["spec"]["scaleTargetRef"]
    check(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"],
          "HPA: scales the Deployment", ref)
    check(1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], "HPA: min <= max")

    pdb = objs["PodDisruptionBudget"]
    check(matches(pdb["spec"]["selector"]["matchLabels"], labels), "PDB: selects the pods")
    check(pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"],
          "PDB: leaves room to drain a node at the minimum replica count")

    sm = objs["ServiceMonitor"]
    check(matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]),
          "ServiceMonitor: selects the Service")
    check(sm["spec"]["endpoints"][0]["port"] == sp["name"] and
          sm["spec"]["endpoints"][0]["path"] == "/metrics",
          "ServiceMonitor: scrapes the Service's port at /metrics")


def test_compose(root):
    compose = load_all(os.path.join(root, "deploy", "compose.yaml"))[0]
    services = compose["services"]
    srv = services["nano-vllm"]
    check(os.path.isfile(os.path.join(root, "deploy", srv["build"]["context"],
                                      srv["build"]["dockerfile"])),
          "compose: builds the repository's Dockerfile")
    check(any(p.endswith(f":{PORT}") for p in srv["ports"]), "compose: publishes the port",
          srv["ports"])
    grace = srv.get("stop_grace_period", "10s")
    check(grace.endswith("s") and float(grace[:-1]) > SHUTDOWN_TIMEOUT,
          "compose: stop grace period outlasts the drain", grace)
    prom = services["prometheus"]
    mounted = [v.split(":")[0] for v in prom["volumes"]]
    check("./prometheus.yml" in mounted, "compose: Prometheus reads deploy/prometheus.yml")
    cfg = load_all(os.path.join(root, "deploy", "prometheus.yml"))[0]
    targets = [t for job in cfg["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    check(targets == [f"nano-vllm:{PORT}"], "prometheus.yml: scrapes the compose service",
          targets)
    for rules in cfg.get("rule_files", []):
        check(os.path.isfile(os.path.join(root, "deploy", rules)) and f"./{rules}" in mounted,
              f"compose: Prometheus gets the rule file {rules} next to its config", mounted)


def test_dockerfile(docker):
    check(docker["base"] and all(b.startswith("docker.io/library/debian:bookworm-slim")
                                 for b in docker["base"]),
          "Dockerfile: every stage on debian:bookworm-slim", docker["base"])
    check(not docker["heredoc"] and not docker["copy_link"],
          "Dockerfile: no RUN heredocs, no COPY --link (podman 4.3 rejects them)")


def test_unit(root):
    with open(os.path.join(root, "deploy", "nano-vllm.service")) as f:
        unit = f.read()
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    check(stop and int(stop.group(1)) > SHUTDOWN_TIMEOUT,
          "nano-vllm.service: stop timeout outlasts the drain", stop and stop.group(1))
    for opt in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        check(re.search(rf"^{opt}$", unit, re.M) is not None, f"nano-vllm.service: {opt}")


def default_of(binary, flag):
    """The default `nano-vllm serve --help` prints for flag."""
    text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True,
                          timeout=30).stdout
    m = re.search(rf"^  {re.escape(flag)} .*?\n(?:\s{{8}}.*\n)*?\s{{8}}default ([^;\n]+)", text,
                  re.M)
    return m.group(1) if m else None


def main():
    global SHUTDOWN_TIMEOUT
    root = sys.argv[1]
    d = default_of(sys.argv[2], "--shutdown-timeout")
    check(d is not None and float(d) > 0, "nano-vllm serve --help: default --shutdown-timeout", d)
    SHUTDOWN_TIMEOUT = float(d or 30)
    docker = dockerfile_facts(root)
    test_dockerfile(docker)
    test_k8s(root, docker)
    test_compose(root)
    test_unit(root)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
