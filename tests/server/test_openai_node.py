#!/usr/bin/python3
"""The official OpenAI Node SDK (npm `openai`) as a client of the real server.

    test_openai_node.py NANO_VLLM CKPT_DIR NODE_SRC_DIR WORK_DIR

Copies tests/server/node (package.json, package-lock.json, openai_client.mjs) into WORK_DIR
in the build directory, installs the locked SDK there with `npm ci` (skipped when the same
lock is already installed), starts `nano-vllm serve` on a free loopback port with an API key
and a chat template and runs the client: one non-streaming and one streaming completion, the
same for chat completions, a refused chat request, and models.list.
"""

import os
import re
import shutil
import subprocess
import sys
import threading

BIN, CKPT_DIR, SRC, WORK = sys.argv[1:5]
FILES = ["package.json", "package-lock.json", "openai_client.mjs"]
# A ChatML-style template for the GPT-2 test model, which has none of its own.
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                 "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def install():
    os.makedirs(WORK, exist_ok=True)
    stamp = os.path.join(WORK, "node_modules", ".installed-lock")
    with open(os.path.join(SRC, "package-lock.json"), "rb") as f:
        lock = f.read()
    for name in FILES:
        shutil.copyfile(os.path.join(SRC, name), os.path.join(WORK, name))
    if os.path.exists(stamp):
        with open(stamp, "rb") as f:
            if f.read() == lock:
                return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WORK,
                   check=True, timeout=300)
    with open(stamp, "wb") as f:
        f.write(lock)


def main():
    install()
    proc = subprocess.Popen([BIN, "serve", os.path.join(CKPT_DIR, "tiny-f32"), "--port", "0",
                             "--kv-cache-memory", "64M", "--api-key", "sdk-test-key",
                             "--chat-template", CHAT_TEMPLATE],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    port, log = [], []
    ready = threading.Event()

    def read():
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port.append(int(m.group(1)))
            if line.endswith(" ready"):
                ready.set()
        ready.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        if not ready.wait(60) or not port:
            print("server did not start:\n" + "\n".join(log), file=sys.stderr)
            return 1
        base = "http://127.0.0.1:%d/v1" % port[0]
        r = subprocess.run(["node", os.path.join(WORK, "openai_client.mjs"), base, "tiny-f32"],
                           cwd=WORK, timeout=120)
        rc = r.returncode
    finally:
        proc.terminate()
        src = proc.wait(30)
        t.join(5)
    if src != 0:
        print("server exit status %d" % src, file=sys.stderr)
        rc = rc or 1
    if rc:
        print("server log:\n" + "\n".join(log[-30:]), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
