"""The dashboard on a Sentinel service, end to end: ``greenredis dashboard`` (web process
and demo instances) with ``REDIS_URL=redis+sentinel://...`` through a forced failover and
a SIGKILLed master. The web process and the demo follow the new master by themselves;
viewers see a short gap in the points, never an error page, a closed websocket or an
error message. Stats and CappedLog take the URL too."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import websocket
from waiting import wait_for

import greenredis
from greenredis.server import free_port
from greenredis.telemetry import names
from greenredis.telemetry.caplog import CappedLog
from greenredis.telemetry.stats import Stats

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-m", "greenredis"]


SENTINEL_GROUP = {"service": "tempo", "replicas": 1}  # the shape of this module's sentinel_group


class Pages(threading.Thread):
    """Fetches the dashboard's pages over and over: every status code or failure seen."""

    PATHS = ["/", "/instances/demo-web.1", "/api/instances", "/healthz", "/instances/not-there-yet"]

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base, self.results, self.running = base, [], True

    def run(self):
        while self.running:
            for path in self.PATHS:
                try:
                    with urllib.request.urlopen(self.base + path, timeout=30) as resp:
                        resp.read()
                        self.results.append((path, resp.status))
                except urllib.error.HTTPError as e:
                    self.results.append((path, e.code))
                except Exception as e:  # refused, reset, timed out: the viewer would see it
                    self.results.append((path, repr(e)))
            time.sleep(0.05)


class Viewer(threading.Thread):
    """A websocket watching demo-web.1's stats: its messages with when they came."""

    def __init__(self, ws_url):
        super().__init__(daemon=True)
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.ws.send(json.dumps({"op": "watch", "kind": "stats", "instance": "demo-web.1"}))
        self.messages, self.error = [], None

    def run(self):
        try:
            while True:
                frame = self.ws.recv()
                if not frame:
                    self.error = "closed"
                    return
                now = time.monotonic()
                self.messages += [(now, m) for m in json.loads(frame)]
        except Exception as e:
            self.error = repr(e)

    def points_after(self, t):
        return [m for at, m in self.messages if at > t and m["type"] == "point"]


def _up(base):
    snap = json.loads(urllib.request.urlopen(base + "/api/instances", timeout=10).read())
    nodes = {n["name"] for n in snap["nodes"] if n["health"] == "up" and n["metrics"]}
    return snap["redis"] and nodes == {"demo-web.1", "demo-worker.1"}


def _followed(sentinel_group, viewer, base, how):
    """After the switch: the demo publishes on the new master and the web process hears it."""
    switched = time.monotonic()
    wait_for(lambda: len(viewer.points_after(switched)) >= 4, timeout=60, what=f"points after {how}")
    wait_for(lambda: _up(base), timeout=60, what=f"instances up after {how}")
    r = greenredis.Redis(port=sentinel_group.master.port, timeout=5)
    try:
        before = float(r.cmd(["ZSCORE", names.INSTANCES, "demo-web.1"]))
        wait_for(
            lambda: float(r.cmd(["ZSCORE", names.INSTANCES, "demo-web.1"])) > before, what="on the new master"
        )
    finally:
        r.close()


def test_dashboard_follows_a_failover_and_a_killed_master(sentinel_healed):
    sentinel_group = sentinel_healed
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "DYNO")}
    env.update(REDIS_URL=sentinel_group.url, GRID_TTL="10", GRID_INTERVAL="1")
    proc = subprocess.Popen(
        [*CLI, "dashboard", "--port", str(port), "--web", "1", "--workers", "1"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    pages = viewer = None
    try:
        wait_for(lambda: any("Tempo is up" in line for line in out), timeout=60, what="dashboard up")
        wait_for(lambda: _up(base), timeout=60, what="both demo instances up")
        viewer = Viewer(f"ws://127.0.0.1:{port}/ws")
        viewer.start()
        pages = Pages(base)
        pages.start()
        wait_for(lambda: viewer.points_after(0), timeout=30, what="live points")
        for how in ("forced", "killed"):
            old = sentinel_group.master
            if how == "forced":
                sentinel_group.failover()
            else:
                epoch = sentinel_group.config_epoch()
                old.kill()
                sentinel_group.wait_failed_over(epoch, timeout=60)
            assert sentinel_group.master.port != old.port
            _followed(sentinel_group, viewer, base, how)
        pages.running = False
        pages.join(60)
        assert proc.poll() is None, "".join(out)
        assert viewer.error is None, viewer.error
        kinds = {m["type"] for _, m in viewer.messages}
        assert "error" not in kinds, [m for _, m in viewer.messages if m["type"] == "error"]
        # an unknown name is 404, or 200 while Redis cannot be asked (the page waits for it to join)
        bad = [(p, s) for p, s in pages.results if s not in (200, 404) or (s == 404 and "not-there" not in p)]
        assert bad == [] and len(pages.results) > 20, bad[:10]
        # a short gap: the points stopped during each switch, then came back
        times = [
            at for at, m in viewer.messages if m["type"] == "point" and m["metric"] == "requests_per_sec"
        ]
        gaps = sorted(b - a for a, b in zip(times, times[1:]))
        assert gaps[-1] > gaps[len(gaps) // 2]  # the longest gap is a switch, not the usual beat
        assert not any("Traceback" in line for line in out), "".join(out)
    finally:
        if pages is not None:
            pages.running = False
        if viewer is not None:
            viewer.ws.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_stats_and_capped_log_take_a_sentinel_url(sentinel_healed):
    sentinel_group = sentinel_healed
    stats = Stats(sentinel_group.url, "svc.1")
    log = CappedLog(sentinel_group.url, "logs:{svc.1}", cap=10)
    assert stats.publish("rps", 1) == 0
    assert log.append("one") == 1
    # replication is asynchronous: a failover may drop what the replicas had not yet received
    hkey = names.history_key("svc.1", "rps")
    for replica in sentinel_group.replicas:
        with greenredis.Redis(port=replica.port, timeout=5) as rr:
            wait_for(
                lambda: rr.cmd([["LLEN", hkey], ["LLEN", "logs:{svc.1}"]]) == [1, 1],
                what=f"the writes on replica {replica.port}",
            )
    sentinel_group.failover()
    # the first call after the switch may fail (its connection was the old master's); then on
    for write in (lambda: stats.publish("rps", 2), lambda: log.append("two")):
        for _ in range(50):
            try:
                write()
                break
            except greenredis.ConnectionError:  # not written on the new master: the next try writes it once
                time.sleep(0.1)
    r = greenredis.Redis(port=sentinel_group.master.port, timeout=5)
    assert r.cmd(["LRANGE", "logs:{svc.1}", 0, -1]) == [b"two", b"one"]
    assert [p["value"] for p in stats.history("rps")] == [1, 2]
    r.close()
    stats.redis.close()
    log.redis.close()
