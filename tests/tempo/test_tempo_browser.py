"""A real headless Chromium on Tempo's pages while points and log lines are published.

The app runs as `greenredis web` in a subprocess and the browser is driven by
tests/tempo/browser_check.py in another, unpatched, Python process. Screenshots go
to test-artifacts/ (git-ignored); docs/tempo-*.png are copies of them.
"""

import json
import math
import os
import shutil
import sys
import time

import pytest
from gevent import subprocess
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

RPS = '.chart[data-metric="requests_per_sec"]'
PILL = "document.querySelector('#status')"
WIDE = "document.documentElement.scrollWidth"


class Browser:
    """browser_check.py: one command per line, one answer per line (gevent's subprocess, so
    the grid nodes of this test keep beating while it waits for the browser)."""

    def __init__(self, base):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "tempo", "browser_check.py"), base, ARTIFACTS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def do(self, *words):
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"browser_check exited ({self.proc.wait()}): {self.proc.stderr.read()}")
        assert not line.startswith("FAIL"), f"{words}: {line}"
        return json.loads(line[6:]) if line.startswith("VALUE ") else line.strip()

    def goto(self, w, h, path):
        return self.do("GOTO", w, h, path)

    def wait(self, js):
        return self.do("WAIT", js)

    def pill(self, text):
        try:
            self.wait(f"{PILL}.textContent === '{text}'")
        except AssertionError:
            raise AssertionError(f"pill: {self.eval(f'[{PILL}.textContent, {PILL}.title]')}") from None

    def eval(self, js):
        return self.do("EVAL", js)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("QUIT\n")
            self.proc.stdin.flush()
        return self.proc.wait(30), self.proc.stderr.read()


def _history(stats, now):
    """Three minutes of history with a 15 s hole 60 s ago (the publisher was stopped)."""
    for i in range(180):
        if 105 <= i < 120:
            continue
        t = now - 180 + i
        stats.publish("requests_per_sec", round(200 + 60 * math.sin(i / 20) + (i % 7), 1), ts=t, unit="req/s")
        stats.publish("memory", round(120 + i * 0.3, 1), ts=t, unit="MB")


def test_browser_pages(redis_server):
    r = greenredis.Redis.from_url(redis_server.url)
    grids = [
        Grid(r, name=f"web.{n}", meta={"role": "web", "region": "eu-west"}, ttl=30, interval=5).start()
        for n in (1, 2)
    ]
    stats = Stats(r, "web.1")
    other = Stats(r, "web.2")
    now = time.time()
    _history(stats, now)
    for i in range(0, 180, 2):
        other.publish(
            "requests_per_sec", round(150 + 40 * math.cos(i / 25), 1), ts=now - 180 + i, unit="req/s"
        )
    stats.publish("requests_per_sec", 123, ts=now, unit="req/s")
    log = CappedLog.for_instance(r, "web.1")
    log.append(*[f"GET /apps/{1000 + i} 200 {5 + i % 40}ms" for i in range(40)])
    log.append("WARNING slow request /apps/1040 took 1,204ms", "ERROR upstream timed out /apps/1041")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    web = WebProcess(redis_server.url, TEMPO_GRID="1").start()
    b = Browser(web.url)
    try:
        # -- the instance page: value with unit, a break in the line, crosshair
        b.goto(1280, 800, "/instances/web.1")
        b.wait(f"document.querySelector('{RPS} .chart-num')?.textContent === '123'")
        assert b.eval(f"document.querySelector('{RPS} .chart-unit').textContent") == " req/s"
        assert b.eval(f"Number(document.querySelector('{RPS} .plot').getAttribute('data-gaps'))") == 1
        assert (
            b.eval("document.querySelector('.chart[data-metric=\"memory\"] .plot').getAttribute('data-gaps')")
            == "1"
        )
        b.pill("live")
        assert b.eval("document.querySelector('#health').textContent") == "up"
        stats.publish("requests_per_sec", 987, unit="req/s")
        b.wait(f"document.querySelector('{RPS} .chart-num').textContent === '987'")
        sub = b.eval(f"document.querySelector('{RPS} .chart-sub').textContent")
        assert "last 5 min" in sub and "UTC" in sub, sub
        b.do("HOVER", f"{RPS} .u-over")
        tip = b.eval(f"document.querySelector('{RPS} .chart-tip').textContent")
        assert "UTC" in tip and "req/s" in tip, tip
        b.do("SHOT", "tempo-instance-1280")
        b.do("GOTO", 390, 844, "/instances/web.1")
        b.wait(f"document.querySelector('{RPS} .chart-num')?.textContent === '987'")
        assert b.eval(WIDE) <= 390
        # the newest data and the current value are on screen
        assert b.eval(f"document.querySelector('{RPS} .plot').getBoundingClientRect().right") <= 390
        assert b.eval(f"document.querySelector('{RPS} .chart-value').getBoundingClientRect().right") <= 390
        b.do("SHOT", "tempo-instance-390")

        # -- the index: sparklines, the role chart; then on a phone
        for w, h in ((1280, 800), (390, 844)):
            b.goto(w, h, "/")
            b.wait("[...document.querySelectorAll('.metric .v')].some(e => e.textContent.includes('req/s'))")
            b.wait(
                "!document.querySelector('#roles').hidden && "
                "document.querySelector('#role-plot .u-legend')?.textContent.includes('web.2')"
            )
            assert b.eval("document.querySelector('#role-title').textContent") == (
                "requests_per_sec across role web (2)"
            )
            assert b.eval(WIDE) <= w
            b.do("SHOT", f"tempo-index-{w}")

        # -- logs: a resync keeps what is on screen and marks the seam
        b.goto(1280, 800, "/instances/web.1/logs")
        b.wait("document.querySelectorAll('#log li').length === 42")
        web.stop()
        log.append(*[f"GET /after/{i} 200 3ms" for i in range(5)])
        web = WebProcess(redis_server.url, port=web.port, TEMPO_GRID="1").start()
        b.wait("document.querySelectorAll('#log li.gap').length === 1")
        assert b.eval("document.querySelectorAll('#log li:not(.sep)').length") == 47
        assert "5 new lines" in b.eval("document.querySelector('#log li.gap').textContent")
        assert b.eval("document.querySelector('#log li:last-child').textContent") == "GET /after/4 200 3ms"
        b.do("SHOT", "tempo-logs-1280")
        b.goto(390, 844, "/instances/web.1/logs")
        b.wait("document.querySelectorAll('#log li').length === 47")
        assert b.eval(WIDE) <= 390
        b.do("SHOT", "tempo-logs-390")

        # -- Redis down: the pill says so on the instance page and on the index
        b.goto(1280, 800, "/instances/web.1")
        b.pill("live")
        redis_server.kill()
        b.wait(f"{PILL}.textContent === 'Redis down'")
        assert not b.eval("document.querySelector('#server-banner').hidden")
        b.do("SHOT", "redis-down-instance")
        b.goto(1280, 800, "/")
        b.wait(f"{PILL}.textContent === 'Redis down' && !document.querySelector('#stale-banner').hidden")
        assert "No instances yet" not in b.eval("document.querySelector('#instances').textContent")
        redis_server.start()
        b.pill("live")
        code, err = b.close()
        assert code == 0, err
    finally:
        if b.proc.poll() is None:
            b.proc.kill()
        web.stop()
        for g in grids:
            g.stop()
        r.close()
    for w in (1280, 390):
        for page in ("index", "instance", "logs"):
            assert os.path.getsize(os.path.join(ARTIFACTS, f"tempo-{page}-{w}.png")) > 10000


def test_browser_hostile_data_on_a_small_phone(redis_server):
    """320 px: a value of 1e300, a 300-metric instance, a metric that stopped, a long role legend;
    then the page of an instance that has not joined yet."""
    r = greenredis.Redis.from_url(redis_server.url)
    long_name = "w" * 120 + ".example"
    grids = [
        Grid(r, name=n, meta={"role": "web", "note": "n" * 300}, ttl=30, interval=5).start()
        for n in ("many", long_name)
    ]
    many = Stats(r, "many")
    now = time.time()
    for i in range(60):
        many.publish("old", i, ts=now - 240 + i, unit="ms")  # stopped 3 min ago
    for k in range(300):
        many.publish(f"metric_{k:03d}.with.a.long.name", k, ts=now, unit="ms")
    Stats(r, long_name).publish("huge", 1e300, ts=now, unit="B")
    web = WebProcess(redis_server.url, TEMPO_GRID="1").start()
    b = Browser(web.url)
    try:
        b.goto(320, 700, "/")
        b.wait("document.querySelector('#role-plot .u-legend')?.textContent.includes('example')")
        b.wait("document.querySelector('tr[data-name=\"many\"] .more')")
        assert b.eval("document.querySelectorAll('tr[data-name=\"many\"] .metric').length") == 12
        assert b.eval("document.querySelector('tr[data-name=\"many\"] .more').textContent") == "+ 289 more"
        assert b.eval(WIDE) <= 320
        b.do("SHOT", "hostile-index-320")

        # a phone turned sideways (and any screen narrower than a long meta value)
        for path in ("/", "/instances/many"):
            b.goto(844, 390, path)
            b.wait("document.querySelector('#status').textContent === 'live'")
            assert b.eval(WIDE) <= 844, path

        b.goto(320, 700, "/instances/" + long_name)
        b.wait(
            "document.querySelector('.chart[data-metric=\"huge\"] .chart-num')?.textContent === '1.00e+300'"
        )
        assert b.eval(WIDE) <= 320
        b.do("SHOT", "hostile-instance-320")

        b.goto(320, 700, "/instances/many")
        b.wait("document.querySelector('.chart[data-metric=\"old\"] .plot[data-end]')")
        many.publish("metric_000.with.a.long.name", 1, unit="ms")  # a live point: the page knows "now"
        end = "Number(document.querySelector('.chart[data-metric=\"{}\"] .plot').getAttribute('data-end'))"
        live, old = end.format("metric_000.with.a.long.name"), end.format("old")
        num = "document.querySelector('.chart[data-metric=\"metric_000.with.a.long.name\"] .chart-num')"
        b.wait(f"{num}.textContent === '1' && Math.abs({live} - {old}) <= 2")

        # an instance page opened before the instance joined shows its health once it does
        b.goto(390, 844, "/instances/later.1")
        b.wait(
            "document.querySelector('#wait-note') && document.querySelector('#status').textContent === 'live'"
        )
        grids.append(Grid(r, name="later.1", meta={"role": "web"}, ttl=30, interval=5).start())
        b.wait("document.querySelector('#health')?.textContent === 'up'")
        code, err = b.close()
        # the one console error: the 404 of /instances/later.1 itself (no asset failed)
        errors = [e for e in err.splitlines()[1:] if e.strip()]
        assert (code, errors) == (
            2,
            ["error: Failed to load resource: the server responded with a status of 404 (NOT FOUND)"],
        ), err
    finally:
        if b.proc.poll() is None:
            b.proc.kill()
        web.stop()
        for g in grids:
            g.stop()
        r.close()
