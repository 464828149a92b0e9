#!/usr/bin/python3
"""Turns the playground page into C: its bytes and its Content-Security-Policy.

    embed.py index.html out.c

The page keeps its CSS and JavaScript in inline <style> and <script> blocks; the policy
allows exactly those blocks by their SHA-256 (CSP Level 2 hashes) and nothing else, so no
'unsafe-inline' is needed. What such a policy would block in a browser is refused here, at
build time: inline event handlers (onclick=...), style attributes, javascript: URLs, and
scripts, styles or other resources from elsewhere.
"""

import base64
import hashlib
import re
import sys

# Only what Debian's python3-minimal has (the container's build stage): no html.parser.
BLOCK = re.compile(r"<(script|style)(\s[^>]*)?>(.*?)</\1\s*>", re.S | re.I)
TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*?)?/?>")
ATTR = re.compile(r"""([^\s=/>]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")
URL_ATTRS = ("src", "href", "action", "formaction", "srcset", "data", "poster")


def check_page(text):
    """The inline blocks' texts {"script": [...], "style": [...]} and the problems found."""
    blocks = {"script": [], "style": []}
    problems = []
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(2) and m.group(2).strip():
            problems.append("line %d: <%s> takes no attributes" % (line, m.group(1)))
        blocks[m.group(1).lower()].append(m.group(3))
    # The markup outside the blocks and comments: every tag's attributes.
    rest = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"),
                  BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text), flags=re.S)
    for m in TAG.finditer(rest):
        where = "line %d: <%s>" % (rest.count("\n", 0, m.start()) + 1, m.group(1))
        for name, value in ATTR.findall(m.group(2) or ""):
            name = name.lower()
            value = value[1:-1] if value[:1] in "\"'" else value
            if name.startswith("on"):
                problems.append("%s has an inline event handler (%s)" % (where, name))
            if name == "style":
                problems.append("%s has a style attribute" % where)
            if value.strip().lower().startswith("javascript:"):
                problems.append("%s has a javascript: URL" % where)
            if name in URL_ATTRS and value and not value.startswith(("data:", "#")):
                problems.append("%s loads %s=%s; the page must be self-contained"
                                % (where, name, value))
    return blocks, problems


def sha256_source(text):
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-%s'" % base64.b64encode(digest).decode("ascii")


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    src, out = sys.argv[1:3]
    with open(src, "rb") as f:
        data = f.read()
    # The browser's HTML parser turns CRLF into LF before it hashes a block: serve what it sees.
    data = data.replace(b"\r\n", b"\n")
    text = data.decode("utf-8")
    blocks, problems = check_page(text)
    if problems:
        sys.exit("%s: %s" % (src, "; ".join(problems)))
    scripts = " ".join(sha256_source(b) for b in blocks["script"]) or "'none'"
    styles = " ".join(sha256_source(b) for b in blocks["style"]) or "'none'"
    csp = ("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
           % (scripts, styles))
    lines = ["/* Generated from server/ui/index.html by server/ui/embed.py; do not edit. */",
             '#include "server/ui/ui.h"', "", "const unsigned char ui_page[] = {"]
    for i in range(0, len(data), 16):
        lines.append("    " + ", ".join("0x%02x" % b for b in data[i:i + 16]) + ",")
    lines += ["};", "const size_t ui_page_len = sizeof(ui_page);",
              "const char ui_csp[] = %s;" % c_string(csp), ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
