"""A Llama-family checkpoint served end to end over HTTP.

usage: test_llama_http.py NANO_VLLM MODEL_DIR LLAMA_REF_PY

MODEL_DIR is a tiny LlamaForCausalLM checkpoint (grouped-query attention, llama3 rope
scaling) with GPT-2's tokenizer files (make-checkpoint --arch llama --gpt2-tokenizer). The
real binary serves it on a loopback port; a greedy /v1/completions answer must be the
float64 reference's greedy continuation token for token, a streamed one the same text, and
the start-up log must name the architecture, its KV heads and where the context came from.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[3])))
import llama_ref  # noqa: E402
import torch  # noqa: E402

FAILURES = 0


def check(cond, what, got=None):
    global FAILURES
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES += 1
        if got is not None:
            print("     got: " + str(got)[:1500], flush=True)


def post(port, body, stream=False):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        data = r.read().decode()
    if not stream:
        return json.loads(data)
    chunks = [json.loads(line[6:]) for line in data.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))


def main():
    binary, model_dir = sys.argv[1], sys.argv[2]
    proc = subprocess.Popen([binary, "serve", model_dir, "--port", "0", "--kv-cache-memory",
                             "16M"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    lines, port, ready = [], [None], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port[0] = int(m.group(1))
            if re.search(r" srv ready$", line):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        ready.wait(120)
        check(port[0] is not None and proc.poll() is None, "server starts", lines[-5:])
        if port[0] is None:
            return 1
        arch = [l for l in lines if "architecture LlamaForCausalLM" in l]
        check(len(arch) == 1 and "2 KV heads of 64" in arch[0] and
              "context 256 is the model's maximum positions" in arch[0],
              "log names the architecture, the KV shape and the context's origin", lines)

        prompt_ids = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]  # 10 ids
        n = 24
        r = post(port[0], {"model": os.path.basename(model_dir.rstrip("/")),
                           "prompt": prompt_ids, "max_tokens": n, "temperature": 0,
                           "ignore_eos": True, "logprobs": 1})
        got = r["choices"][0]["logprobs"]["tokens"] if r["choices"][0].get("logprobs") else None
        with torch.no_grad():
            want = llama_ref.Llama(model_dir).greedy(prompt_ids, n)
        # The response names tokens by text: compare the count, and the text with what the
        # server's own detokenizer makes of the reference's ids (echoed as a prompt).
        check(r["usage"]["completion_tokens"] == n, "greedy completion: %d tokens" % n, r["usage"])
        echo = post(port[0], {"model": os.path.basename(model_dir.rstrip("/")),
                              "prompt": want, "max_tokens": 0, "echo": True})
        want_text = echo["choices"][0]["text"]
        check(r["choices"][0]["text"] == want_text,
              "greedy completion equals the float64 reference's greedy ids",
              (r["choices"][0]["text"], want_text, got))
        streamed = post(port[0], {"model": os.path.basename(model_dir.rstrip("/")),
                                  "prompt": prompt_ids, "max_tokens": n, "temperature": 0,
                                  "ignore_eos": True, "stream": True}, stream=True)
        check(streamed == want_text, "streamed completion: the same text", (streamed, want_text))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -1
        check(rc == 0, "server stops cleanly on SIGTERM", rc)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
