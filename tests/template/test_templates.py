"""Chat templates rendered by the C engine against Jinja2 configured as transformers does.

    test_templates.py TPL_RENDER TEMPLATES_DIR NODE_SRC_DIR WORK_DIR [CASES]

First the one-line templates of snippets.txt (next to this script), each rendered once with a
fixed conversation: the language's corners (undefined values, printing, filters, whitespace
control, errors) must come out as Jinja2's, or fail where Jinja2 fails.

The templates are the checked-in TEMPLATES_DIR/*.jinja and the chat_template of every npm
package in NODE_SRC_DIR/package.json that has one (installed with `npm ci` into WORK_DIR;
skipped, with a note, when npm is missing). For each template CASES (default 250) seeded
random conversations are rendered by Jinja2 (ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and loopcontrols; transformers' tojson, raise_exception and strftime_now) and by
tpl_render; the outputs must be byte-identical, and where Jinja2 raises, the engine must fail
too (with the same message for raise_exception). Fails when jinja2 is missing: it is the
reference, and scripts/install-deps installs it.
"""

import json
import os
import random
import shutil
import subprocess
import sys
from datetime import datetime

try:
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.exit("python3-jinja2 is not installed: the reference cannot run (scripts/install-deps)")

DRIVER, TEMPLATES_DIR, NODE_SRC, WORK = sys.argv[1:5]
NCASES = int(sys.argv[5]) if len(sys.argv) > 5 else 250


# ---- the reference: transformers' _compile_jinja_template ----

def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class AssistantTracker(jinja2.ext.Extension):
    """transformers' {% generation %} tag; it renders its body (the masks it also computes
    are no concern of a server)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_render", [])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def compile_reference(source, now):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.fromtimestamp(now).strftime(fmt)
    return env.from_string(source)


def reference_render(template, case):
    variables = {}
    if case.get("bos_token") is not None:
        variables["bos_token"] = case["bos_token"]
    if case.get("eos_token") is not None:
        variables["eos_token"] = case["eos_token"]
    variables["tools"] = None  # transformers' render(tools=None, documents=None, ...)
    variables["documents"] = None
    variables.update(case.get("kwargs") or {})
    variables["messages"] = case["messages"]
    variables["add_generation_prompt"] = case["add_generation_prompt"]
    try:
        return {"out": template.render(**variables)}
    except jinja2.exceptions.TemplateError as e:
        raised = type(e) is jinja2.exceptions.TemplateError
        return {"error": str(e), "raised": raised}
    except Exception as e:  # TypeError and the like: the engine must fail as well
        return {"error": "%s: %s" % (type(e).__name__, e), "raised": False}


# ---- generated conversations ----

TEXTS = [
    "Hello!", "", " ", "What is 2 + 2?", "  leading and trailing spaces  ", "line one\nline two\n",
    "\n\nnewlines around\n\n", "Ünïcödé: 日本語のテキスト, emoji 🦙🚀👍🏽, עברית, Ελληνικά",
    "tabs\tand\r\ncarriage returns\r", "quotes ' and \" and a backslash \\ and a slash /",
    "{{ not a tag }} {% nor this %} {# nor a comment #}", "<think>\nLet me think.\n</think>\n\nIt is 4.",
    "<think>short</think>answer", "<tool_response>\n42\n</tool_response>", "x" * 300,
    "a\u00a0non-breaking space and a\u2028line separator", "\u3000ideographic spaces\u3000",
    "control \u0001 \u001f chars", "Done.", "Sure, here you go: {\"a\": [1, 2]}", "ß straße ǅ ﬁ",
    "   ", "tail newline\n", "<|im_end|> <|eot_id|> [INST] special-looking text",
]
ROLES_ODD = ["tool", "developer", "function", "ipython", "System", ""]


def text(rng):
    if rng.random() < 0.25:
        return rng.choice(TEXTS) + rng.choice(TEXTS)
    return rng.choice(TEXTS)


def tool_call(rng):
    args = {"city": rng.choice(["Paris", "東京", "São Paulo"]), "days": rng.randint(1, 9),
            "units": None, "ok": rng.random() < 0.5, "nested": {"list": [1, 2.5, "x"]}}
    if rng.random() < 0.3:
        args = json.dumps(args, ensure_ascii=False)
    call = {"name": rng.choice(["get_weather", "search"]), "arguments": args}
    return {"type": "function", "function": call} if rng.random() < 0.8 else call


def message(rng, role, odd_content):
    m = {"role": role, "content": text(rng)}
    r = rng.random()
    if role == "assistant" and r < 0.1:
        m["tool_calls"] = [tool_call(rng) for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.5:
            m["content"] = None if rng.random() < 0.5 else ""
    elif role == "assistant" and r < 0.15:
        m["reasoning_content"] = text(rng)
    elif odd_content and r < 0.5:
        m["content"] = [{"type": "text", "text": text(rng)}] + (
            [{"type": "image"}] if rng.random() < 0.5 else [])
    elif odd_content and r < 0.6:
        m["content"] = rng.choice([None, 42, 1.5, True, {"k": "v"}])
    if rng.random() < 0.03:
        m["name"] = "bob"
    return m


def conversation(rng):
    msgs = []
    odd = rng.random() < 0.1  # content parts or other types in some messages
    if rng.random() < 0.4:
        msgs.append(message(rng, "system", odd))
    turns = rng.choice([1, 1, 2, 3, 4, 6, 9, 15])
    for i in range(turns):
        msgs.append(message(rng, "user" if i % 2 == 0 else "assistant", odd))
    r = rng.random()
    if r < 0.1 and msgs:  # a tool turn after an assistant's call
        msgs.append(message(rng, "tool", odd))
    elif r < 0.18:  # break the alternation or use another role somewhere
        i = rng.randrange(len(msgs) + 1)
        msgs.insert(i, message(rng, rng.choice(["user", "assistant"] + ROLES_ODD), odd))
    elif r < 0.2:
        msgs = []
    return msgs


def case(rng, name):
    c = {"messages": conversation(rng), "add_generation_prompt": rng.random() < 0.5,
         "now": 1700000000 + rng.randrange(10 ** 7)}
    kwargs = {}
    if rng.random() < 0.5:
        kwargs["enable_thinking"] = rng.random() < 0.5
    if rng.random() < 0.1:
        kwargs["tools"] = [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city — «quoted»",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}]
    if rng.random() < 0.1:
        kwargs["custom_flag"] = rng.choice([True, 3, "text", None])
    if kwargs:
        c["kwargs"] = kwargs
    return c


# ---- templates ----

def npm_templates():
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        print("note: npm or node missing, only the checked-in templates run")
        return {}
    os.makedirs(WORK, exist_ok=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(NODE_SRC, f), os.path.join(WORK, f))
    stamp = os.path.join(WORK, "node_modules", ".installed-lock")
    lock = open(os.path.join(WORK, "package-lock.json"), "rb").read()
    if not (os.path.exists(stamp) and open(stamp, "rb").read() == lock):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WORK,
                       check=True, timeout=300)
        with open(stamp, "wb") as f:
            f.write(lock)
    found = {}
    deps = json.load(open(os.path.join(WORK, "package.json")))["dependencies"]
    for pkg in sorted(deps):
        cfg_path = os.path.join(WORK, "node_modules", pkg, "models", "tokenizer_config.json")
        if not os.path.exists(cfg_path):
            continue
        cfg = json.load(open(cfg_path))
        tpl = cfg.get("chat_template")
        if isinstance(tpl, list):
            tpl = next((t["template"] for t in tpl if t.get("name") == "default"), None)
        if not tpl:
            print("note: %s has no chat_template" % pkg)
            continue

        def token(v):
            return v.get("content") if isinstance(v, dict) else v
        found[pkg.split("tokenizer-")[-1]] = (tpl, token(cfg.get("bos_token")),
                                             token(cfg.get("eos_token")))
    return found


def checked_in_templates():
    found = {}
    for f in sorted(os.listdir(TEMPLATES_DIR)):
        if f.endswith(".jinja"):
            found[f[:-6]] = (open(os.path.join(TEMPLATES_DIR, f)).read(), "<s>", "</s>")
    return found


def check(name, source, bos, eos):
    rng = random.Random("tpl-" + name)
    cases = []
    for _ in range(NCASES):
        c = case(rng, name)
        if bos is not None and rng.random() < 0.95:
            c["bos_token"] = bos
        if eos is not None:
            c["eos_token"] = eos
        cases.append(c)
    ref = compile_reference(source, 0)
    expected = []
    for c in cases:
        t = compile_reference(source, c["now"]) if "strftime_now" in source else ref
        expected.append(reference_render(t, c))
    try:
        got = run_driver(name, source, cases)
    except RuntimeError as e:
        print(e)
        return 1
    bad = 0
    for i, (c, want, have) in enumerate(zip(cases, expected, got)):
        ok = ("out" in want and have.get("out") == want["out"]) or (
            "error" in want and "error" in have and
            (not want["raised"] or have["error"] == want["error"]))
        if not ok:
            bad += 1
            if bad <= 3:
                print("%s case %d differs\n  messages: %s\n  want: %r\n  got:  %r" % (
                    name, i, json.dumps(c, ensure_ascii=False)[:600],
                    want.get("out", want.get("error"))[:1500],
                    have.get("out", have.get("error"))[:1500]))
    nerr = sum("error" in w for w in expected)
    print("%s: %d cases, %d rendered, %d errors (raise_exception: %d), %d differ" % (
        name, len(cases), len(cases) - nerr, nerr, sum(w.get("raised", False) for w in expected),
        bad))
    return 1 if bad else 0


SNIPPET_CASE = {
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": " Hi é 🦙\n"},
                 {"role": "assistant", "content": "", "tool_calls": [
                     {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
                 {"role": "user", "content": "Bye"}],
    "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>",
    "kwargs": {"enable_thinking": False}, "now": 1700000000}


def run_driver(name, source, cases):
    tpl_path = os.path.join(WORK, name + ".jinja")
    cases_path = os.path.join(WORK, name + ".cases.json")
    out_path = os.path.join(WORK, name + ".out.json")
    with open(tpl_path, "w") as f:
        f.write(source)
    with open(cases_path, "w") as f:
        json.dump(cases, f, ensure_ascii=False)
    p = subprocess.run([DRIVER, tpl_path, cases_path, out_path], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, TZ="UTC"))
    if p.returncode == 3:  # the template did not compile: every case fails with that error
        return [{"error": p.stdout.strip(), "code": -22} for _ in cases]
    if p.returncode != 0:
        raise RuntimeError("%s: tpl_render failed (%d): %s%s" % (name, p.returncode, p.stdout,
                                                                p.stderr))
    return json.load(open(out_path))


def check_snippets():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "snippets.txt")
    snippets = []
    for n, line in enumerate(open(path, encoding="utf-8").read().split("\n"), 1):
        if line and not line.startswith("#"):
            limit = line.startswith("!")
            source = (line[1:] if limit else line).replace("\u23ce", "\n")
            snippets.append((n, line, limit, source))
    cases, expected = [], []
    for n, line, limit, source in snippets:
        try:
            want = reference_render(compile_reference(source, SNIPPET_CASE["now"]), SNIPPET_CASE)
        except jinja2.exceptions.TemplateSyntaxError as e:
            want = {"error": "syntax: %s" % e, "raised": False}
        expected.append(want)
        cases.append(dict(SNIPPET_CASE, template=source))
    got = run_driver("snippets", "", cases)
    bad = 0
    for (n, line, limit, source), want, have in zip(snippets, expected, got):
        if limit:
            ok = "out" in want and "error" in have
        else:
            ok = ("out" in want and have.get("out") == want["out"]) or (
                "error" in want and "error" in have and
                (not want["raised"] or have["error"] == want["error"]))
        if not ok:
            bad += 1
            print("snippets.txt:%d differs: %s\n  want: %r\n  got:  %r" % (
                n, line, want.get("out", want.get("error")), have.get("out", have.get("error"))))
    print("snippets: %d templates, %d differ" % (len(snippets), bad))
    return 1 if bad else 0


def main():
    os.makedirs(WORK, exist_ok=True)
    failed = check_snippets()
    templates = checked_in_templates()
    templates.update(npm_templates())
    for name, (src, bos, eos) in sorted(templates.items()):
        failed += check(name, src, bos, eos)
    print("snippets and %d templates: %d failed" % (len(templates), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
