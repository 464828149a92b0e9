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
import html.parser
import sys


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.blocks = {"script": [], "style": []}
        self.inside = None
        self.problems = []

    def handle_starttag(self, tag, attrs):
        where = "line %d: <%s>" % (self.getpos()[0], tag)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append("%s has an inline event handler (%s)" % (where, name))
            if name == "style":
                self.problems.append("%s has a style attribute" % where)
            if value and value.strip().lower().startswith("javascript:"):
                self.problems.append("%s has a javascript: URL" % where)
            if name in ("src", "href", "action", "formaction", "srcset", "data") and value and \
                    not value.startswith(("data:", "#")):
                self.problems.append("%s loads %s=%s; the page must be self-contained"
                                     % (where, name, value))
        if tag in self.blocks:
            if attrs:
                self.problems.append("%s: inline blocks take no attributes" % where)
            self.inside = tag
            self.blocks[tag].append("")

    def handle_endtag(self, tag):
        if tag == self.inside:
            self.inside = None

    def handle_data(self, data):
        if self.inside:
            self.blocks[self.inside][-1] += data


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
    page = Page()
    page.feed(text)
    page.close()
    if page.problems:
        sys.exit("%s: %s" % (src, "; ".join(page.problems)))
    scripts = " ".join(sha256_source(b) for b in page.blocks["script"]) or "'none'"
    styles = " ".join(sha256_source(b) for b in page.blocks["style"]) or "'none'"
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
