#!/usr/bin/python3
"""Every function docs/architecture.md names still exists where it says, so the walk through
the code cannot rot.

    test_docs_names.py SOURCE_ROOT [DOC ...]   (default DOC: docs/architecture.md)

A name is written `name()`. When a path follows it in parentheses, `name()` (dir/file.c),
the function must be defined in that file; otherwise it must be defined in some C file of
the project (tests and benchmarks excluded). Every path written dir/file.c or dir/file.h must
exist, and a folder written `dir/` too. The exit status is the verdict.
"""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1])
DOCS = sys.argv[2:] or ["docs/architecture.md"]
SKIP_DIRS = {"build", "tests", "bench", ".git", "node_modules"}
FAILURES = []

NAME_RE = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)\(\)`(\s*\(([\w./-]+\.[ch])\))?")
PATH_RE = re.compile(r"(?<![\w./-])((?:[a-z_]+/)+[\w-]+\.[ch])\b")
DIR_RE = re.compile(r"`((?:[a-z_]+/)+)`")


def sources():
    out = {}
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith("build")]
        for f in files:
            if f.endswith((".c", ".h")):
                p = os.path.join(d, f)
                with open(p, encoding="utf-8", errors="replace") as fh:
                    out[os.path.relpath(p, ROOT)] = fh.read()
    return out


def defines(text, name):
    """True when text has a file-scope definition of function name: a line starting at
    column 0 with name( whose parameter list is followed by '{', not ';'."""
    for m in re.finditer(r"^[A-Za-z].*?\b" + re.escape(name) + r"\(", text, re.M):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        rest = re.sub(r"^(\s|/\*.*?\*/)*", "", text[i:i + 400], flags=re.S)
        if rest.startswith("{"):
            return True
    return False


def main():
    src = sources()
    n_names = 0
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            md = f.read()
        for m in NAME_RE.finditer(md):
            name, path = m.group(1), m.group(3)
            n_names += 1
            if path:
                if path not in src:
                    FAILURES.append(f"{doc}: `{name}()` ({path}): no such file")
                elif not defines(src[path], name):
                    FAILURES.append(f"{doc}: `{name}()` is not defined in {path}")
            elif not any(defines(t, name) for t in src.values()):
                FAILURES.append(f"{doc}: `{name}()` is not defined in any source file")
        for p in set(PATH_RE.findall(md)):
            if not os.path.isfile(os.path.join(ROOT, p)):
                FAILURES.append(f"{doc}: {p}: no such file")
        for p in set(DIR_RE.findall(md)):
            if not os.path.isdir(os.path.join(ROOT, p)):
                FAILURES.append(f"{doc}: {p}: no such folder")
    for f in FAILURES:
        print("FAIL " + f)
    print(f"{n_names} function names checked in {', '.join(DOCS)}: {len(FAILURES)} failure(s)")
    if n_names < 20:
        print("FAIL fewer than 20 names found: has the notation changed?")
        return 1
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
