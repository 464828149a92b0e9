#!/usr/bin/python3
"""server/ui/embed.py: the page it embeds and the policy it writes, and what it refuses.

    test_ui_embed.py EMBED_PY INDEX_HTML

The real page embeds byte for byte (CRLF read as LF), its policy names the SHA-256 of each
inline block and nothing 'unsafe'; a page with an inline handler, a style attribute, a
javascript: URL, a resource from elsewhere or an attribute on an inline block is refused with
a message naming the line and the problem. The browser test (test_ui.py) checks that
Chromium runs the page under the policy without a violation.
"""

import base64
import hashlib
import os
import re
import subprocess
import sys
import tempfile

EMBED, PAGE = sys.argv[1:3]
FAILURES = []


def check(cond, what, got=None):
    if not cond:
        FAILURES.append(what)
        print("FAIL %s: got %r" % (what, got), file=sys.stderr)


def embed(html, tmp):
    src, out = os.path.join(tmp, "page.html"), os.path.join(tmp, "page.c")
    with open(src, "wb") as f:
        f.write(html)
    r = subprocess.run([sys.executable, EMBED, src, out], capture_output=True, text=True)
    c = open(out).read() if r.returncode == 0 else None
    return r.returncode, r.stderr, c


def main():
    page = open(PAGE, "rb").read()
    with tempfile.TemporaryDirectory() as tmp:
        for name, html in [("as is", page), ("with CRLF", page.replace(b"\n", b"\r\n"))]:
            rc, err, c = embed(html, tmp)
            check(rc == 0, "the page embeds (%s)" % name, err)
            if rc:
                continue
            data = bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", c))
            check(data == page, "the embedded bytes are the page's (%s)" % name, len(data))
            csp = re.search(r'ui_csp\[\] = "(.*)";', c).group(1)
            text = page.decode()
            for kind in ["script", "style"]:
                blocks = re.findall(r"<%s>(.*?)</%s>" % (kind, kind), text, re.S)
                hashes = " ".join("'sha256-%s'" % base64.b64encode(
                    hashlib.sha256(b.encode()).digest()).decode() for b in blocks)
                check(len(blocks) >= 1 and ("%s-src %s;" % (kind, hashes)) in csp,
                      "%s-src is the hash of each inline %s (%s)" % (kind, kind, name), csp)
            check("unsafe" not in csp and "default-src 'none'" in csp, "a strict policy", csp)

        bad = [
            ('<button onclick="go()">', "inline event handler (onclick)"),
            ("<p style='color: red'>", "style attribute"),
            ('<a href="javascript:void(0)">', "javascript: URL"),
            ('<img src="https://example.com/x.png">', "must be self-contained"),
            ('<link rel="stylesheet" href="/x.css">', "must be self-contained"),
            ('<script src="/app.js"></script>', "takes no attributes"),
            ('<style media="print">p {}</style>', "takes no attributes"),
        ]
        line = page[:page.index(b"<main>")].count(b"\n") + 2  # where the markup goes
        for markup, want in bad:
            html = page.replace(b"<main>", b"<main>\n" + markup.encode(), 1)
            rc, err, _ = embed(html, tmp)
            check(rc != 0 and want in err and ("line %d:" % line) in err,
                  "refused: %s" % markup, (rc, err))
    if FAILURES:
        print("%d failure(s)" % len(FAILURES), file=sys.stderr)
        return 1
    print("ui-embed: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
