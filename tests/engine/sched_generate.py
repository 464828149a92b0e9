#!/usr/bin/python3
"""`nano-vllm generate` end to end on a tiny checkpoint: several prompts batched together
give each the completion it gets alone (greedy), prompts from a file and as token ids,
--help, and one-line errors with the right exit status.

    sched_generate.py NANO_VLLM MODEL_DIR
"""
import os
import re
import subprocess
import sys
import tempfile


def run(exe, *args):
    p = subprocess.run([exe, "generate", *args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def completions(out):
    parts = re.split(r"^=== completion \d+ \(finish: (\w+), (\d+) prompt \+ (\d+) generated tokens\)\n",
                     out, flags=re.M)
    got = []
    for i in range(1, len(parts) - 1, 4):
        text = parts[i + 3]
        if i + 4 >= len(parts) - 1:
            text = text.split("\n=== ")[0]
        got.append((parts[i], int(parts[i + 1]), int(parts[i + 2]), text.rstrip("\n")))
    return got


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def main():
    exe, model = sys.argv[1], sys.argv[2]
    prompts = ["Hello world", "The quick brown fox jumps", "Once upon a time there"]
    common = ["--temperature", "0", "--max-tokens", "12", "--ignore-eos", "--threads", "1"]
    args = [model] + common
    for p in prompts:
        args += ["--prompt", p]
    rc, out, err = run(exe, *args)
    check(rc == 0, "batched run exit status %d: %s" % (rc, err))
    together = completions(out)
    check(len(together) == 3, "three completions, got %r" % out)
    check(re.search(r"^=== 3 prompts: \d+ prompt tokens, 36 generated tokens in", out, re.M),
          "final throughput line in %r" % out)
    for i, p in enumerate(prompts):
        rc, out1, err = run(exe, model, *common, "--prompt", p)
        check(rc == 0, "alone exit status %d: %s" % (rc, err))
        alone = completions(out1)
        check(alone == [together[i]], "prompt %d alone %r vs batched %r" % (i, alone, together[i]))
        check(together[i][0] == "length" and together[i][2] == 12, "finish and count %r" % (together[i],))
        check(together[i][3].startswith(p), "completion starts with its prompt")

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "prompts.txt")
        with open(path, "w") as f:
            f.write(prompts[0] + "\n\n" + prompts[1] + "\n")
        rc, out, err = run(exe, model, *common, "--prompts-file", path, "--tokens", "464,2068")
        check(rc == 0, "prompts file exit status %d: %s" % (rc, err))
        got = completions(out)
        check(len(got) == 3 and got[0] == together[0] and got[1] == together[1],
              "prompts file gives the same completions: %r" % got)
        check(got[2][1] == 2, "token prompt has 2 tokens: %r" % (got[2],))
        check(got[2][3].startswith("The quick"), "token prompt printed decoded: %r" % (got[2],))

    # generation_config.json's defaults apply where the command line sets nothing (as the
    # server applies them to requests); options given win; --generation-config none ignores it.
    with tempfile.TemporaryDirectory() as d:
        gm = os.path.join(d, "model")
        os.mkdir(gm)
        for name in os.listdir(model):
            if name != "generation_config.json":
                os.symlink(os.path.join(os.path.abspath(model), name), os.path.join(gm, name))
        with open(os.path.join(gm, "generation_config.json"), "w") as f:
            f.write('{"do_sample": true, "temperature": 0, "max_new_tokens": 5}')
        base = [gm, "--ignore-eos", "--threads", "1", "--prompt", prompts[0]]
        rc, out_a, err = run(exe, *base, "--seed", "1")
        check(rc == 0, "generation_config run exit status %d: %s" % (rc, err))
        check("sampling defaults from generation_config.json: temperature 0" in err,
              "generation_config line in %r" % err)
        rc, out_b, err = run(exe, *base, "--seed", "2")
        a, b = completions(out_a), completions(out_b)
        check(len(a) == 1 and a[0][2] == 5, "the file's max_new_tokens 5: %r" % a)
        check(a == b, "the file's temperature 0 is greedy whatever the seed: %r vs %r" % (a, b))
        check(a[0][3] == together[0][3][:len(a[0][3])], "greedy as --temperature 0: %r" % a)
        rc, out, err = run(exe, *base, "--max-tokens", "7")
        check(rc == 0 and completions(out)[0][2] == 7, "--max-tokens wins: %r %s" % (out, err))
        rc, out, err = run(exe, *base, "--generation-config", "none", "--seed", "1")
        check(rc == 0 and completions(out)[0][2] == 64, "none: the default 64 tokens: %r" % out)
        check("generation_config" not in err, "none: no defaults line: %r" % err)
        with open(os.path.join(gm, "generation_config.json"), "w") as f:
            f.write('{"top_p": 1.5}')
        rc, out, err = run(exe, *base)
        check(rc == 1 and "generation_config.json: top_p 1.5" in err, "bad file: %d %r" % (rc, err))
        rc, out, err = run(exe, *base, "--generation-config", "none", "--max-tokens", "2")
        check(rc == 0, "none ignores a bad file: %d %r" % (rc, err))
        rc, out, err = run(exe, *base, "--generation-config", "vllm")
        check(rc == 1 and "is not auto or none" in err, "bad --generation-config: %r" % err)

    rc, out, err = run(exe, "--help")
    check(rc == 0 and "--prompts-file" in out, "--help")
    for args, status, msg in [
        (["--prompt", "x"], 2, "MODEL_DIR is missing"),
        ([model, "--bogus"], 2, "unknown option '--bogus'"),
        ([model], 2, "no prompt"),
        ([model, "--prompt", "x", "--max-tokens", "zero"], 1, "--max-tokens: 'zero'"),
        ([model, "--tokens", "99999"], 1, "token id 99999 is outside the vocabulary"),
        ([model, "--prompt", "x", "--max-tokens", "300"], 1, "exceed the model's length 256"),
        (["no-such-dir", "--prompt", "x"], 1, "no-such-dir"),
    ]:
        rc, out, err = run(exe, *args)
        check(rc == status, "%r: exit status %d, expected %d (%s)" % (args, rc, status, err))
        check(msg in err, "%r: %r not in %r" % (args, msg, err))
        check(err.count("\n") <= 2, "%r: short error, got %r" % (args, err))
    print("sched_generate: ok")


main()
