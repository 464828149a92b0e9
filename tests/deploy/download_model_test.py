"""Tests scripts/download-model without the internet.

Offline: an unresolvable and a refused endpoint give one clean message, exit status 1 and no
target directory. Online: a loopback server that answers like Hugging Face (resolve/main URLs,
Git LFS files redirected to a CDN path with X-Linked-Size and X-Linked-Etag, HEAD, byte
ranges) serves a checkpoint; the script must produce exactly the files the loader reads, with
the same bytes, resume an interrupted transfer with a Range request, start over from a stale
.part, reject a file whose SHA-256 differs from the published one, and keep complete files.

usage: download_model_test.py SCRIPT TOKENIZER_DIR
The checkpoint served is config.json and a model.safetensors of seeded random bytes in the
safetensors format (the loader is not under test here), plus the real vocab.json and
merges.txt from TOKENIZER_DIR.
"""
import hashlib
import http.server
import json
import random
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from checks import check, exit_status

LAYOUT = ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
LFS = {"model.safetensors"}


class Mirror(http.server.ThreadingHTTPServer):
    """Files of one repository under /REPO/resolve/main/, the way Hugging Face serves them."""

    def __init__(self, repo, files):
        super().__init__(("127.0.0.1", 0), Handler)
        self.repo = repo
        self.files = files          # name -> bytes
        self.published_sha = {}     # name -> sha256 announced in X-Linked-Etag (default: true one)
        self.cut_after = {}         # name -> bytes sent before the next GET is cut off (once)
        self.token = None           # when set, resolve URLs need "Authorization: Bearer TOKEN"
        self.cdn_head_length = True  # False: the CDN answers HEAD without Content-Length
        self.log = []               # (method, path, Range header or None)
        self.lock = threading.Lock()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.serve(body=False)

    def do_GET(self):
        self.serve(body=True)

    def serve(self, body):
        m = self.server
        with m.lock:
            m.log.append((self.command, self.path, self.headers.get("Range")))
        prefix = f"/{m.repo}/resolve/main/"
        cdn = f"/cdn/{m.repo}/"
        if (self.path.startswith(prefix) and m.token is not None and
                self.headers.get("Authorization") != f"Bearer {m.token}"):
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith(prefix) and self.path[len(prefix):] in m.files:
            name = self.path[len(prefix):]
            data = m.files[name]
            if name in LFS or name.endswith(".safetensors"):
                sha = m.published_sha.get(name, hashlib.sha256(data).hexdigest())
                self.send_response(302)
                self.send_header("Location", cdn + name)
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_file(name, data, body)
        elif self.path.startswith(cdn) and self.path[len(cdn):] in m.files:
            name = self.path[len(cdn):]
            self.send_file(name, m.files[name], body)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def send_file(self, name, data, body):
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        if body or self.server.cdn_head_length or not self.path.startswith("/cdn/"):
            self.send_header("Content-Length", str(len(data) - start))
        else:
            self.close_connection = True
        self.end_headers()
        if not body:
            return
        cut = self.server.cut_after.pop(name, None) if self.command == "GET" else None
        if cut is not None:
            self.wfile.write(data[start:start + cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data[start:])


def run(script, name, target, endpoint, extra_env=None):
    env = dict(os.environ, HF_ENDPOINT=endpoint)
    env.pop("HF_TOKEN", None)
    env.update(extra_env or {})
    p = subprocess.run([script, name, target], env=env, capture_output=True, text=True,
                       timeout=120)
    return p.returncode, p.stdout, p.stderr


def listing(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else None


def same_files(d, files):
    return all(open(os.path.join(d, f), "rb").read() == files[f] for f in files)


def test_offline(script, tmp):
    for endpoint, why in [("http://nonexistent.invalid", "Could not resolve host"),
                          ("http://127.0.0.1:1", "Failed to connect")]:
        target = os.path.join(tmp, "offline")
        rc, out, err = run(script, "gpt2", target, endpoint)
        check(rc == 1, f"offline {endpoint}: exit status 1", rc, 1)
        check(f"cannot reach {endpoint}" in err and why in err,
              f"offline {endpoint}: says it cannot reach the endpoint and why", err)
        check("Traceback" not in err and "%" not in err and len(err.splitlines()) <= 4,
              f"offline {endpoint}: a short message, no progress output", err)
        check(not os.path.exists(target), f"offline {endpoint}: no target directory left behind")


def test_usage(script, tmp):
    rc, _, err = run(script, "gpt-5", os.path.join(tmp, "x"), "http://127.0.0.1:1")
    check(rc == 2 and "unknown model 'gpt-5'" in err and "distilgpt2" in err,
          "unknown model: exit status 2 and the list of names", (rc, err))
    rc, out, _ = run(script, "--help", os.path.join(tmp, "x"), "http://127.0.0.1:1")
    check(rc == 0 and "gpt2-xl" in out, "--help: exit status 0, names on stdout", (rc, out))


def test_mirror(script, tmp, files):
    for name, repo in [("gpt2", "openai-community/gpt2"), ("distilgpt2", "distilbert/distilgpt2")]:
        m = Mirror(repo, files)
        threading.Thread(target=m.serve_forever, daemon=True).start()
        try:
            target = os.path.join(tmp, name)
            rc, out, err = run(script, name, target, m.endpoint)
            check(rc == 0, f"{name}: download succeeds", (rc, out, err), 0)
            check(listing(target) == LAYOUT, f"{name}: exactly the loader's files", listing(target),
                  LAYOUT)
            check(rc == 0 and same_files(target, files), f"{name}: identical bytes")
            check(any(method == "HEAD" for method, _, _ in m.log), f"{name}: sizes asked first")

            # Complete files are kept: a second run downloads nothing.
            m.log.clear()
            rc, out, _ = run(script, name, target, m.endpoint)
            gets = [p for method, p, _ in m.log if method == "GET"]
            check(rc == 0 and gets == [] and out.count("already complete") == 4,
                  f"{name}: second run keeps complete files", (rc, gets, out))
        finally:
            m.shutdown()
            m.server_close()


def test_resume(script, tmp, files):
    m = Mirror("openai-community/gpt2", files)
    threading.Thread(target=m.serve_forever, daemon=True).start()
    model = files["model.safetensors"]
    try:
        # A transfer cut off midway is resumed with a Range request in the same run.
        target = os.path.join(tmp, "resume")
        m.cut_after["model.safetensors"] = len(model) // 3
        rc, out, err = run(script, "gpt2", target, m.endpoint)
        ranges = [r for method, p, r in m.log if method == "GET" and r and
                  p.startswith("/cdn/")]
        check(rc == 0 and same_files(target, files), "cut transfer: finished, identical bytes",
              (rc, out, err))
        check(ranges == [f"bytes={len(model) // 3}-"], "cut transfer: resumed where it stopped",
              ranges, [f"bytes={len(model) // 3}-"])
        check("resuming" in out, "cut transfer: says it resumes", out)

        # A .part left by an earlier run is continued, not restarted.
        target = os.path.join(tmp, "part")
        os.makedirs(target)
        with open(os.path.join(target, "model.safetensors.part"), "wb") as f:
            f.write(model[:1000])
        m.log.clear()
        rc, out, err = run(script, "gpt2", target, m.endpoint)
        ranges = [r for method, p, r in m.log if method == "GET" and p.startswith("/cdn/")]
        check(rc == 0 and same_files(target, files) and listing(target) == LAYOUT,
              "earlier .part: finished, identical bytes, no .part left", (rc, listing(target), err))
        check(ranges == ["bytes=1000-"], "earlier .part: continued at its size", ranges,
              ["bytes=1000-"])

        # A .part longer than the file is stale: it starts over.
        target = os.path.join(tmp, "stale")
        os.makedirs(target)
        with open(os.path.join(target, "model.safetensors.part"), "wb") as f:
            f.write(b"x" * (len(model) + 10))
        rc, out, err = run(script, "gpt2", target, m.endpoint)
        check(rc == 0 and same_files(target, files), "stale .part: replaced", (rc, err))

        # Bytes that do not hash to the published SHA-256 are rejected and removed.
        target = os.path.join(tmp, "corrupt")
        m.published_sha["model.safetensors"] = "0" * 64
        rc, out, err = run(script, "gpt2", target, m.endpoint)
        check(rc == 1 and "SHA-256" in err and "does not match" in err,
              "wrong SHA-256: exit status 1 and says so", (rc, err))
        check("model.safetensors" not in (listing(target) or []) and
              "model.safetensors.part" not in (listing(target) or []),
              "wrong SHA-256: nothing kept", listing(target))
        del m.published_sha["model.safetensors"]

        # A gated repository: without HF_TOKEN a clean 401 naming the variable; with it, the
        # download, and the token never on a command line (ps would show it).
        m.token = "hf_test_secret"
        target = os.path.join(tmp, "gated")
        rc, out, err = run(script, "gpt2", target, m.endpoint)
        check(rc == 1 and "HTTP 401" in err and "HF_TOKEN" in err and not os.path.exists(target),
              "gated, no token: HTTP 401 and says to set HF_TOKEN", (rc, err))
        env = dict(os.environ, HF_ENDPOINT=m.endpoint, HF_TOKEN=m.token)
        p = subprocess.Popen([script, "gpt2", target], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        argv_seen = []
        while p.poll() is None:
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv_seen.append(f.read())
                except OSError:
                    pass
        out, err = p.communicate()
        check(p.returncode == 0 and same_files(target, files), "gated, HF_TOKEN: downloaded",
              (p.returncode, err))
        check(not any(m.token.encode() in a for a in argv_seen),
              "gated, HF_TOKEN: the token is on no command line")
        m.token = None

        # A CDN that sends no Content-Length for HEAD: the size comes from X-Linked-Size.
        m.cdn_head_length = False
        target = os.path.join(tmp, "nolength")
        rc, out, err = run(script, "gpt2", target, m.endpoint)
        check(rc == 0 and same_files(target, files), "CDN without Content-Length: X-Linked-Size "
              "gives the size", (rc, err))
        m.cdn_head_length = True

        # A repository file missing on the server is a clean 404 message.
        del m.files["merges.txt"]
        target = os.path.join(tmp, "missing")
        rc, out, err = run(script, "gpt2", target, m.endpoint)
        check(rc == 1 and "HTTP 404" in err and "merges.txt" in err and
              not os.path.exists(target), "missing file: HTTP 404 named, nothing written",
              (rc, err))
    finally:
        m.shutdown()
        m.server_close()


def test_llama_family(script, tmp, files):
    """A Llama-family repository: tokenizer.json and the optional files it has; weights single
    (SmolLM2, with vocab.json and merges.txt) or sharded through the index (Llama 3.2 3B,
    gated, without them)."""
    tok = {"tokenizer.json": b'{"model": {"type": "BPE"}}',
           "tokenizer_config.json": b'{"eos_token": "<|end_of_text|>"}',
           "generation_config.json": b'{"eos_token_id": [128001, 128009]}',
           "config.json": b'{"architectures": ["LlamaForCausalLM"]}'}
    single = dict(tok, **{f: files[f] for f in ["vocab.json", "merges.txt", "model.safetensors"]})
    w = files["model.safetensors"]
    shards = {"model-00001-of-00002.safetensors": w[:len(w) // 2],
              "model-00002-of-00002.safetensors": w[len(w) // 2:]}
    index = {"metadata": {"total_size": len(w)},
             "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                            "model.norm.weight": "model-00002-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    sharded = dict(tok, **shards)
    sharded["model.safetensors.index.json"] = json.dumps(index).encode()
    for name, repo, served, token in [
            ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", single, None),
            ("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", sharded, "hf_test")]:
        m = Mirror(repo, served)
        m.token = token
        threading.Thread(target=m.serve_forever, daemon=True).start()
        try:
            target = os.path.join(tmp, name)
            env = {"HF_TOKEN": token} if token else None
            rc, out, err = run(script, name, target, m.endpoint, env)
            check(rc == 0, f"{name}: download succeeds", (rc, out, err), 0)
            check(listing(target) == sorted(served), f"{name}: exactly the repository's files",
                  listing(target), sorted(served))
            check(rc == 0 and same_files(target, served), f"{name}: identical bytes")
        finally:
            m.shutdown()
            m.server_close()


def checkpoint(tokenizer_dir):
    """The four files of a checkpoint: 0.5 MB of random tensors, a GPT-2 config.json."""
    shapes = {"a": [256, 256], "b": [64, 1000]}
    rng = random.Random(1234)
    header, blobs, off = {}, [], 0
    for name, shape in shapes.items():
        n = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + n]}
        blobs.append(rng.randbytes(n))
        off += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    files = {
        "config.json": json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 64,
                                   "n_positions": 64, "vocab_size": 50257}).encode(),
        "model.safetensors": len(head).to_bytes(8, "little") + head + b"".join(blobs),
    }
    for f in ["vocab.json", "merges.txt"]:
        with open(os.path.join(tokenizer_dir, f), "rb") as fh:
            files[f] = fh.read()
    return files


def main():
    script = os.path.abspath(sys.argv[1])
    files = checkpoint(sys.argv[2])
    tmp = tempfile.mkdtemp(prefix="download-model-test.")
    try:
        test_usage(script, tmp)
        test_offline(script, tmp)
        test_mirror(script, tmp, files)
        test_resume(script, tmp, files)
        test_llama_family(script, tmp, checkpoint(sys.argv[2]))  # test_resume cut files
    finally:
        shutil.rmtree(tmp)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
