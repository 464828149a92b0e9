#!/usr/bin/python3
"""The playground page at / in a real browser: Debian's headless Chromium driven by npm
puppeteer-core against the real server.

    test_ui.py NANO_VLLM CKPT_DIR NODE_SRC_DIR WORK_DIR

Copies tests/server/ui (package.json, package-lock.json, ui_test.mjs) into WORK_DIR in the
build directory and installs the locked puppeteer-core there with `npm ci` (skipped when the
same lock is already installed). Writes tiny-long, the tiny checkpoint with its 256 position
embeddings repeated to 8192 positions, so a generation can run long enough for the Stop
button to meet it running. Then ui_test.mjs starts the servers, drives the page and leaves its
screenshots in WORK_DIR/artifacts. Skips (exit 77) without node, npm or Chromium.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

BIN, CKPT_DIR, SRC, WORK = (os.path.abspath(a) for a in sys.argv[1:5])
FILES = ["package.json", "package-lock.json", "ui_test.mjs"]
LONG_POSITIONS = 8192


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


def chromium():
    for name in ["chromium", "chromium-browser"]:
        path = shutil.which(name)
        if path:
            return path
    return None


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


def write_long_checkpoint(src, dst):
    """tiny-f32 with n_positions = LONG_POSITIONS: wpe's rows repeated, all else as is."""
    os.makedirs(dst)
    for name in ["vocab.json", "merges.txt"]:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    n_pos = config["n_positions"]
    config["n_positions"] = config["n_ctx"] = LONG_POSITIONS
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = data[b:e]
        if name == "wpe.weight":
            assert t["shape"][0] == n_pos and t["dtype"] == "F32", t
            raw = raw * (LONG_POSITIONS // n_pos)
            t = dict(t, shape=[LONG_POSITIONS, t["shape"][1]])
        tensors.append((name, t, raw))
    out_header, blobs, offset = {"__metadata__": header.get("__metadata__", {})}, [], 0
    for name, t, raw in tensors:
        out_header[name] = dict(t, data_offsets=[offset, offset + len(raw)])
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(out_header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for raw in blobs:
            f.write(raw)


def main():
    if not shutil.which("node") or not shutil.which("npm"):
        skip("node or npm not found")
    browser = chromium()
    if not browser:
        skip("chromium not found (Debian package chromium)")
    install()
    with tempfile.TemporaryDirectory(prefix="nano-vllm-ui-") as tmp:
        long_dir = os.path.join(tmp, "tiny-long")
        write_long_checkpoint(os.path.join(CKPT_DIR, "tiny-f32"), long_dir)
        artifacts = os.path.join(WORK, "artifacts")
        os.makedirs(artifacts, exist_ok=True)
        r = subprocess.run(["node", os.path.join(WORK, "ui_test.mjs"), BIN,
                            os.path.join(CKPT_DIR, "tiny-f32"), long_dir, artifacts, browser,
                            tmp], cwd=WORK, timeout=170)
        return r.returncode


if __name__ == "__main__":
    sys.exit(main())
