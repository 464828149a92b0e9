"""Every command in docs/deploy.md still matches the repository, so the page cannot rot.

The commands themselves need Docker, Kubernetes or systemd, which tests do not have (the
container test runs the same image with podman), so each command is checked against what it
names: scripts and their arguments, files and directories, `nano-vllm serve` flags and
NANO_VLLM_* variables (from the binary's --help), endpoints, make targets, the unit and
Service names, the stop timeout against the drain. A command this test does not know fails
it, so a new one gets a check too.

usage: docs_test.py SOURCE_ROOT BUILD_ROOT NANO_VLLM_BINARY
"""
import os
import re
import shlex
import subprocess
import sys

import yaml

from checks import check, exit_status

ENDPOINTS = {"/health", "/metrics", "/v1/completions", "/v1/models", "/version", "/tokenize",
             "/detokenize"}
ENTRYPOINT_ENV = {"NANO_VLLM_MODEL", "NANO_VLLM_MODEL_DIR", "HF_ENDPOINT", "HF_TOKEN"}


def commands(md):
    """The shell commands of the ```sh blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"^```sh\n(.*?)^```", md, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            out += [c.strip() for c in line.split("&&") if c.strip()]
    return out


class Facts:
    def __init__(self, root, build, binary):
        self.root, self.build = root, build
        help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True,
                                   timeout=30).stdout
        self.flags = set(re.findall(r"^  (--[a-z-]+)", help_text, re.M))
        self.env = set(re.findall(r"env (NANO_VLLM_\w+)", help_text))
        m = re.search(r"^  --shutdown-timeout .*?default ([\d.]+)", help_text, re.M | re.S)
        self.drain = float(m.group(1)) if m else None
        dl = subprocess.run([os.path.join(root, "scripts", "download-model"), "--help"],
                            capture_output=True, text=True, timeout=30).stdout
        self.models = set(re.findall(r"[\w-]+", dl.split("NAME:", 1)[1].splitlines()[0]))
        with open(os.path.join(root, "Makefile")) as f:
            self.targets = set(re.findall(r"^([\w-]+):", f.read(), re.M))
        self.services = set()
        k8s = os.path.join(root, "deploy", "k8s")
        for name in os.listdir(k8s):
            with open(os.path.join(k8s, name)) as f:
                for d in yaml.safe_load_all(f):
                    if d and d.get("kind") == "Service":
                        self.services.add(d["metadata"]["name"])

    def path(self, p):
        """Whether a path in a command exists: in the sources, or built in the build dir."""
        if p.startswith("build/"):
            return os.path.exists(os.path.join(self.build, p[len("build/"):]))
        return os.path.exists(os.path.join(self.root, p))


def check_serve_args(facts, args, what):
    for a in args:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            check(flag in facts.flags, f"{what}: {flag} is a nano-vllm serve flag", flag)


def check_command(facts, cmd):
    words = shlex.split(cmd)
    if words[0] == "sudo":
        words = words[1:]
    prog, args = words[0], words[1:]
    if prog == "scripts/download-model":
        check(args and args[0] in facts.models and len(args) <= 2,
              f"{cmd}: a model download-model knows", (args, sorted(facts.models)))
    elif prog == "docker" and args[0] == "build":
        check(args[-1] == "." and facts.path("Dockerfile"), f"{cmd}: builds ./Dockerfile")
    elif prog == "docker" and args[0] == "run":
        image = next(i for i, a in enumerate(args) if a == "nano-vllm-c")
        opts = args[1:image]
        for i, a in enumerate(opts):
            if a == "-e":
                var = opts[i + 1].split("=", 1)[0]
                check(var in facts.env | ENTRYPOINT_ENV, f"{cmd}: {var} is a known variable", var)
            if a == "-p":
                check(opts[i + 1].endswith(":8000"), f"{cmd}: publishes the image's port 8000")
        check_serve_args(facts, args[image + 1:], cmd)
    elif prog == "docker" and args[0] == "stop":
        t = float(args[args.index("-t") + 1])
        check(facts.drain is not None and t > facts.drain,
              f"{cmd}: stop timeout outlasts the drain ({facts.drain} s)", t)
    elif prog == "docker" and args[0] == "compose":
        check(facts.path(args[args.index("-f") + 1]), f"{cmd}: the compose file exists")
    elif prog == "podman-compose":
        check(facts.path(args[args.index("-f") + 1]), f"{cmd}: the compose file exists")
        if "down" in args and "-t" in args:
            t = float(args[args.index("-t") + 1])
            check(facts.drain is not None and t > facts.drain,
                  f"{cmd}: stop timeout outlasts the drain ({facts.drain} s)", t)
    elif prog == "curl":
        url = next(a for a in args if a.startswith("http"))
        check(re.sub(r"^https?://[^/]+", "", url) in ENDPOINTS, f"{cmd}: a server endpoint", url)
    elif prog == "kubectl" and args[0] == "apply" and "-f" in args:
        check(facts.path(args[args.index("-f") + 1]), f"{cmd}: the manifest exists")
    elif prog == "kubectl" and args[0] == "apply":
        check(facts.path(os.path.join(args[args.index("-k") + 1], "kustomization.yaml")),
              f"{cmd}: the kustomization exists")
    elif prog == "kubectl" and args[0] == "port-forward":
        check(args[1].removeprefix("svc/") in facts.services, f"{cmd}: the Service exists",
              facts.services)
    elif prog == "install":
        paths = [a for a in args if not a.startswith("-") and a != "0755" and a != "0644"]
        for src in paths[:-1]:
            check(facts.path(src), f"{cmd}: {src} exists")
    elif prog == "systemctl":
        units = [a for a in args if a.startswith("nano-vllm")]
        check(all(facts.path(f"deploy/{u}.service") for u in units), f"{cmd}: the unit exists")
    elif prog == "journalctl":
        check(facts.path(f"deploy/{args[args.index('-u') + 1]}.service"),
              f"{cmd}: the unit exists")
    elif prog == "make":
        check(all(t in facts.targets for t in args), f"{cmd}: Makefile targets", args)
    elif prog == "bench/loadgen.py":
        check(facts.path(prog), f"{cmd}: the load generator exists")
        help_text = subprocess.run([os.path.join(facts.root, prog), "--help"],
                                   capture_output=True, text=True, timeout=30).stdout
        for a in args:
            if a.startswith("--"):
                flag = a.split("=", 1)[0]
                check(flag in help_text, f"{cmd}: {flag} is a loadgen flag")
        check_serve_args(facts, [a.split("=", 1)[1] for a in args
                                 if a.startswith("--server-arg=")], cmd)
    else:
        check(False, f"docs_test knows how to check '{prog}'", cmd)


def main():
    root, build, binary = sys.argv[1:4]
    with open(os.path.join(root, "docs", "deploy.md")) as f:
        md = f.read()
    facts = Facts(root, build, binary)
    check(len(facts.flags) > 10 and facts.drain, "nano-vllm serve --help lists the flags")
    check(facts.models == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"},
          "download-model --help lists the five models", facts.models)
    cmds = commands(md)
    check(len(cmds) >= 10, "docs/deploy.md has its commands", cmds)
    for cmd in cmds:
        check_command(facts, cmd)
    # Commands quoted in the prose: the loadgen example spans lines there.
    for m in re.finditer(r"`(bench/loadgen\.py[^`]*)`", md, re.S):
        check_command(facts, " ".join(m.group(1).split()))
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
