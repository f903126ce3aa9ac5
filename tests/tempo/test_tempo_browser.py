"""A real headless Chromium watches an instance page while points are published.

The app runs as `greenredis web` in a subprocess and the browser is driven by
tests/browser_check.py in another, unpatched, Python process. Screenshots go to
test-artifacts/ (git-ignored).
"""

import math
import os
import shutil
import subprocess
import sys
import time

import pytest
from tempo_helpers import ROOT, WebProcess

import greenredis
from greenredis.grid.node import Grid
from greenredis.telemetry.caplog import CappedLog
from greenredis.telemetry.stats import Stats

ARTIFACTS = os.path.join(ROOT, "test-artifacts")

# Skipped only outside CI: under CI the test command has installed chromium, so it must run.
pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/chromium") and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (scripts/setup.sh --test installs it)",
)


def _line(proc):
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read()
        raise AssertionError(f"browser_check exited ({proc.wait()}): {err}")
    return line.split()


def test_browser_sees_the_latest_value_change_and_reconnects(redis_server):
    r = greenredis.Redis.from_url(redis_server.url)
    grid = Grid(r, name="web.1", meta={"role": "web", "region": "eu-west"}, ttl=30, interval=5)
    grid.start()
    stats = Stats(r, "web.1")
    now = time.time()
    for i in range(180):  # three minutes of history, as if it had been running
        t = now - 180 + i
        stats.publish("requests_per_sec", round(200 + 60 * math.sin(i / 20) + (i % 7), 1), ts=t)
        stats.publish("memory_mb", round(120 + i * 0.3, 1), ts=t)
    stats.publish("requests_per_sec", 123, ts=now)
    log = CappedLog.for_instance(r, "web.1")
    log.append(*[f"GET /apps/{1000 + i} 200 {5 + i % 40}ms" for i in range(40)])
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    web = WebProcess(redis_server.url, TEMPO_GRID="1").start()
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "tests", "tempo", "browser_check.py"),
            web.url,
            "web.1",
            "requests_per_sec",
            ARTIFACTS,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        assert _line(proc) == ["READY", "123"]
        stats.publish("requests_per_sec", 987)
        proc.stdin.write("EXPECT 987\n")
        assert _line(proc) == ["SEEN", "987", "live"]
        # the web process restarts: the page reconnects by itself and catches up
        web.stop()
        web = WebProcess(redis_server.url, port=web.port, TEMPO_GRID="1").start()
        stats.publish("requests_per_sec", 555)  # maybe before the page is back: from history
        proc.stdin.write("EXPECT 555\n")
        assert _line(proc) == ["SEEN", "555", "live"]
        proc.stdin.write("SHOTS\n")
        assert _line(proc) == ["DONE"]
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        web.stop()
        grid.stop()
        r.close()
    for name in ("tempo-instance-1.png", "tempo-instance-2.png", "tempo-index.png", "tempo-logs.png"):
        assert os.path.getsize(os.path.join(ARTIFACTS, name)) > 10000
