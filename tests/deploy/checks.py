"""The deploy tests' one assertion helper.

check() prints "ok" or "FAIL" with the calling file and line (and what was got and wanted),
counts the failures and returns whether the condition held; exit_status() turns the count
into the script's exit code.
"""

import os
import sys

failures = 0


def _show(value):
    return repr(value)[:2000]


def check(cond, what, got=None, want=None):
    global failures
    if cond:
        print(f"ok   {what}", flush=True)
        return True
    failures += 1
    frame = sys._getframe(1)
    print(f"FAIL {what} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})",
          flush=True)
    if got is not None or want is not None:
        print(f"     got:  {_show(got)}\n     want: {_show(want)}", flush=True)
    return False


def exit_status():
    if failures:
        print(f"{failures} check(s) failed")
        return 1
    return 0
