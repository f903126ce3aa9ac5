"""Drive a real headless Chromium at a Tempo page (run as a plain, unpatched process:
playwright's sync API does not work under gevent's monkey-patching).

Usage: browser_check.py BASE_URL INSTANCE METRIC ARTIFACT_DIR

Protocol on stdin/stdout, one line each, for the test that runs this script:
  -> "READY <text>"    the instance page shows METRIC's latest value <text>
  <- "EXPECT <text>"   wait until the latest value reads <text>, then
  -> "SEEN <text>"     (screenshot saved) ...repeat...
  <- "SHOTS"           screenshot the index and logs pages too, then
  -> "DONE"
Errors go to stderr and exit non-zero.
"""

import os
import sys

from playwright.sync_api import sync_playwright

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main(base, instance, metric, outdir):
    os.makedirs(outdir, exist_ok=True)
    console = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(f"{base}/instances/{instance}")
        value = page.locator(f'.chart[data-metric="{metric}"] .chart-value')
        value.wait_for(timeout=30000)
        page.wait_for_function(
            "(sel) => { const e = document.querySelector(sel); return e && e.textContent !== '–'; }",
            arg=f'.chart[data-metric="{metric}"] .chart-value',
            timeout=30000,
        )
        print("READY", value.text_content(), flush=True)
        n = 0
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "EXPECT":
                page.wait_for_function(
                    "([sel, want]) => { const e = document.querySelector(sel); "
                    "return e && e.textContent === want; }",
                    arg=[f'.chart[data-metric="{metric}"] .chart-value', arg],
                    timeout=60000,
                )
                n += 1
                page.wait_for_timeout(300)  # let the canvas draw the frame
                page.screenshot(path=os.path.join(outdir, f"tempo-instance-{n}.png"), full_page=True)
                print("SEEN", value.text_content(), page.locator("#status").text_content(), flush=True)
            elif cmd == "SHOTS":
                page.goto(f"{base}/")
                page.wait_for_function("document.querySelector('#status').textContent === 'live'")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.metric .v')].some(e => e.textContent !== '…')",
                    timeout=30000,
                )
                page.locator("td.meta .chip").first.wait_for(timeout=30000)  # grid meta shown
                page.screenshot(path=os.path.join(outdir, "tempo-index.png"), full_page=True)
                page.goto(f"{base}/instances/{instance}/logs")
                page.wait_for_function("document.querySelectorAll('#log li').length > 0", timeout=30000)
                page.screenshot(path=os.path.join(outdir, "tempo-logs.png"), full_page=True)
                print("DONE", flush=True)
                break
        browser.close()
    if any(c.startswith(("error", "pageerror")) and "WebSocket" not in c for c in console):
        sys.stderr.write("browser console errors:\n" + "\n".join(console) + "\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
