"""What the pages read: units on points, the live feed's state, gone instances
leaving the index, styled 404 pages (real redis-servers, no browser)."""

import json
import time

import pytest
from tempo_helpers import Client, WebProcess
from waiting import wait_for

from greenredis.telemetry import names
from greenredis.telemetry.stats import Stats, read_history
from greenredis.tempo import create_app
from greenredis.tempo.hub import Hub
from greenredis.tempo.registry import Registry, merge


def test_a_unit_travels_with_live_points_and_history(r):
    stats = Stats(r, "web.1")
    stats.publish("memory", 512, ts=100.0, unit="MB")
    stats.publish("rps", 3, ts=100.0)
    hist = read_history(r, "web.1", ["memory", "rps"])
    assert hist["memory"] == [{"metric": "memory", "ts": 100.0, "value": 512, "unit": "MB"}]
    assert hist["rps"] == [{"metric": "rps", "ts": 100.0, "value": 3}]  # no unit: no key
    hub = Hub()
    viewer = hub.connect()
    hub.receive(viewer, json.dumps({"op": "watch", "kind": "stats", "instance": "web.1"}))
    hub.history([viewer], "web.1", hist)
    hub.publish(b"stats:{web.1}", names.encode_point("memory", 640, 101.0, "MB"))
    msgs = json.loads(viewer.take())
    assert msgs[0]["units"] == {"memory": "MB"}
    assert msgs[1] == {
        "type": "point",
        "instance": "web.1",
        "metric": "memory",
        "ts": 101.0,
        "value": 640,
        "unit": "MB",
    }


@pytest.mark.parametrize("unit", ["", "a b", "<b>", "x" * 17, 5])
def test_a_bad_unit_is_refused_clearly(r, unit):
    with pytest.raises(ValueError, match="bad unit"):
        Stats(r, "web.1").publish("memory", 1, unit=unit)
    assert r.cmd(["EXISTS", names.history_key("web.1", "memory")]) == 0  # nothing half-written


def test_instances_gone_longer_than_tempo_gone_after_leave_the_index(monkeypatch):
    now = 10000.0
    health = {
        "old": {"state": "gone", "last_seen": now - 7200, "gone_at": now - 7100, "meta": {}},
        "recent": {"state": "gone", "last_seen": now - 100, "gone_at": now - 60, "meta": {}},
        "up": {"state": "up", "last_seen": now - 2, "meta": {}},
    }
    seen = {"stats-only-old": now - 5000, "stats-only": now - 120}
    snap = merge(health, seen, {}, now, gone_after=3600)
    assert [n["name"] for n in snap["nodes"]] == ["recent", "stats-only", "up"]
    assert len(merge(health, seen, {}, now)["nodes"]) == 5  # without a retention all stay
    monkeypatch.setenv("TEMPO_GONE_AFTER", "90")
    assert Registry(None).gone_after == 90.0
    monkeypatch.setenv("TEMPO_GONE_AFTER", "soon")
    with pytest.raises(ValueError, match="TEMPO_GONE_AFTER"):
        Registry(None)


def test_404_pages_are_styled_with_the_header_and_a_way_back(r):
    Stats(r, "web.1").publish("rps", 1)
    c = create_app(redis=r, join_grid=False, password="").test_client()
    for path, says in (("/nope", "There is no page at"), ("/instances/ghost", "No instance named")):
        resp = c.get(path)
        html = resp.get_data(as_text=True)
        assert resp.status_code == 404 and resp.mimetype == "text/html"
        assert says in html and 'class="brand"' in html and "Back to all instances" in html
        assert 'id="status"' in html  # the pill, as on every page
    assert "&lt;b&gt;" in c.get("/instances/%3Cb%3E").get_data(as_text=True)  # escaped


def test_names_wrap_at_word_boundaries(r):
    Stats(r, "worker-queue.eu-west-1").publish("rps", 1)
    c = create_app(redis=r, join_grid=False, password="").test_client()
    html = c.get("/instances/worker-queue.eu-west-1").get_data(as_text=True)
    assert "worker-<wbr>queue.<wbr>eu-<wbr>west-<wbr>1" in html


def test_the_page_hears_when_the_live_feed_is_refused(make_server):
    server = make_server(users=["default on nopass ~* &* +@all", "nochan on >pw ~* resetchannels +@all"])
    import greenredis

    admin = greenredis.Redis.from_url(server.url)
    Stats(admin, "web.1").publish("rps", 1)
    url = f"redis://nochan:pw@127.0.0.1:{server.port}/0"
    with WebProcess(url) as web:
        c = Client(web.ws_url)
        try:
            c.send({"op": "watch", "kind": "grid"})
            c.send({"op": "watch", "kind": "stats", "instance": "web.1"})
            deadline = time.monotonic() + 20
            while True:
                m = c.recv()
                if m["type"] == "grid" and m.get("feed_error"):
                    break
                assert time.monotonic() < deadline, "no feed_error in any grid message"
            assert "NOPERM" in m["feed_error"] or "permission" in m["feed_error"].lower()
            assert m["redis"] is True  # Redis itself is fine: it is the feed that is refused
        finally:
            c.close()
    admin.close()


def test_a_paused_redis_shows_as_down_within_the_read_timeout(redis_server, r):
    """SIGSTOP: the server keeps its socket open and answers nothing. The snapshot (and so
    every page's pill) must say Redis is down after the registry's read timeout, not stay
    "live" until the client's 30 s dead_after; it says up again once Redis answers."""
    reg = Registry(r, refresh=0.5, read_timeout=1.0).start()
    try:
        assert reg.snapshot()["redis"] is True
        redis_server.pause()
        try:
            wait_for(lambda: not reg.snapshot()["redis"], 10, "Redis down in the snapshot", 0.2)
            assert reg.snapshot()["redis"] is False and reg.snapshot()["stale"] is True
        finally:
            redis_server.resume()
        wait_for(lambda: reg.snapshot()["redis"], 10, "Redis up in the snapshot", 0.2)
        assert reg.snapshot()["redis"] is True
    finally:
        reg.stop()


@pytest.mark.parametrize("value", [10**400, -(10**400), float("nan"), float("inf")])
def test_a_value_no_float_can_hold_is_refused_clearly(r, value):
    with pytest.raises(ValueError, match="'memory' must be finite"):
        Stats(r, "web.1").publish("memory", value)
