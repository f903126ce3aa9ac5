"""Drive a real headless Chromium at Tempo's pages for tests/tempo/test_tempo_browser.py
(run as a plain, unpatched process: playwright's sync API does not work under
gevent's monkey-patching).

Usage: browser_check.py BASE_URL ARTIFACT_DIR

One command per line on stdin, one answer per line on stdout:
  GOTO <width> <height> <path>   open BASE_URL+path in a fresh page of that viewport -> OK
  WAIT <js expression>           wait (30 s) until it is truthy                      -> OK
  EVAL <js expression>           its value                                    -> VALUE <json>
  HOVER <css selector>           move the mouse to the element's centre              -> OK
  SHOT <name>                    full-page screenshot to ARTIFACT_DIR/<name>.png     -> OK
  QUIT
A failed command answers "FAIL <reason>" (and the script goes on). At the end,
console errors other than websocket ones are printed to stderr and the exit code is 2.
"""

import json
import os
import sys

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main(base, outdir):
    os.makedirs(outdir, exist_ok=True)
    console = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        context = None
        page = None
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            try:
                if cmd == "GOTO":
                    w, h, path = arg.split(" ", 2)
                    if context is not None:
                        context.close()
                    # bypass_csp: wait_for_function evaluates strings; the page itself keeps its CSP
                    context = browser.new_context(
                        viewport={"width": int(w), "height": int(h)}, device_scale_factor=1, bypass_csp=True
                    )
                    page = context.new_page()
                    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                    page.goto(base + path)
                    answer = "OK"
                elif cmd == "WAIT":
                    page.wait_for_function(arg, timeout=30000)
                    answer = "OK"
                elif cmd == "EVAL":
                    answer = "VALUE " + json.dumps(page.evaluate(arg))
                elif cmd == "HOVER":
                    page.hover(arg)
                    page.wait_for_timeout(100)
                    answer = "OK"
                elif cmd == "SHOT":
                    page.wait_for_timeout(300)  # let the charts draw the frame
                    page.screenshot(path=os.path.join(outdir, arg + ".png"), full_page=True)
                    answer = "OK"
                elif cmd == "QUIT":
                    break
                else:
                    answer = f"FAIL unknown command {cmd!r}"
            except PlaywrightError as e:
                answer = "FAIL " + " ".join(str(e).split())[:500]
            print(answer, flush=True)
        browser.close()
    errors = [c for c in console if c.startswith(("error", "pageerror")) and "WebSocket" not in c]
    if errors:
        sys.stderr.write("browser console errors:\n" + "\n".join(errors) + "\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
