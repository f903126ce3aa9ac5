"""Tempo under hostile or broken input: deep JSON, floods of watches, failed reads,
foreign metric names (a real redis-server; the hub fed directly where it can be)."""

import json

import pytest
from tempo_helpers import frames
from waiting import wait_for

import greenredis
from greenredis.errors import TimeoutError as RedisTimeout
from greenredis.telemetry import names
from greenredis.telemetry.stats import Stats
from greenredis.tempo.hub import Hub, ReadBacklog, ReadHistory
from greenredis.tempo.live import Live
from greenredis.tempo.registry import Registry

DEEP = b"[" * 100000


@pytest.fixture
def live(r):
    lv = Live(r, Registry(r, None)).start()
    yield lv
    lv.stop()


def watch(live, viewer, kind, instance):
    live.run_effects(
        live.hub.receive(viewer, json.dumps({"op": "watch", "kind": kind, "instance": instance}))
    )


# -- 1: nesting too deep is bad data, never a crash ---------------------------
def test_deeply_nested_json_is_bad_data():
    with pytest.raises(ValueError):
        names.decode_point(DEEP)
    hub = Hub()
    v = hub.connect()
    hub.receive(v, '{"op":"watch","kind":"stats","instance":"w"}')
    frames(v)
    assert hub.publish(b"stats:{w}", DEEP) == 0 and hub.stats["bad_payload"] == 1
    assert hub.receive(v, "[" * 4000) == []  # within the 4096-byte request cap
    assert [m["error"] for m in frames(v)] == ["bad_json"]
    hub.receive(v, '{"op":"ping","id":1}')
    assert frames(v) == [{"type": "pong", "id": 1}]


def test_pump_survives_bad_messages_and_every_viewer_keeps_getting_points(r, live):
    stats = Stats(r, "web.1")
    stats.publish("rps", 1, ts=1.0)
    r.cmd(["LPUSH", names.history_key("web.1", "rps"), DEEP])  # a bad history entry
    v = live.hub.connect()
    watch(live, v, "stats", "web.1")
    [hist] = frames(v)
    assert hist["metrics"] == {"rps": [[1.0, 1]]}  # the bad entry skipped
    wait_for(lambda: "stats:{web.1}" in live.subscribed())
    real, fails = live.hub.publish, [1]

    def flaky(channel, data):  # any bug in fan-out, once
        if fails:
            fails.pop()
            raise RuntimeError("bug")
        return real(channel, data)

    live.hub.publish = flaky
    r.cmd(["PUBLISH", "stats:{web.1}", DEEP])  # raises in flaky
    r.cmd(["PUBLISH", "stats:{web.1}", DEEP])  # a malformed point: counted
    stats.publish("rps", 2, ts=2.0)
    wait_for(lambda: v.queue)
    assert frames(v) == [{"type": "point", "instance": "web.1", "metric": "rps", "ts": 2.0, "value": 2}]
    assert not live._pump.dead
    assert live.hub.stats["pump_errors"] == 1 and live.hub.stats["bad_payload"] == 1


# -- 2: a viewer's memory is bounded in bytes; repeated watches coalesce ------
def test_viewer_over_its_byte_cap_is_marked_slow_and_holds_nothing():
    hub = Hub(queue_size=256, queue_bytes=10000)
    v = hub.connect()
    hub.receive(v, '{"op":"watch","kind":"stats","instance":"w"}')
    frames(v)
    metrics = {"m": [{"ts": float(i), "value": 12345.678} for i in range(200)]}
    for _ in range(2):
        hub.history([v], "w", metrics)  # ~3.8 kB each: both fit
    assert not v.slow and v.bytes == sum(size for _, size, _ in v.queue) <= 10000
    hub.history([v], "w", metrics)  # a third does not: the viewer is not reading
    assert v.slow and v.bytes == 0 and not v.queue and v.dropped == 3
    hub.publish(b"stats:{w}", names.encode_point("m", 1, 1.0).encode())
    assert not v.queue  # nothing more is queued for it; the shell closes it


def test_repeated_watch_queues_one_history_until_it_is_sent():
    hub = Hub()
    v = hub.connect()
    req = '{"op":"watch","kind":"stats","instance":"w"}'
    first = hub.receive(v, req)
    assert isinstance(first[-1], ReadHistory) and first[-1].viewers == (v,)
    assert [hub.receive(v, req) for _ in range(1000)] == [[]] * 1000  # read in flight
    hub.history([v], "w", {"m": [{"ts": 1.0, "value": 1}]})
    assert [hub.receive(v, req) for _ in range(1000)] == [[]] * 1000  # still queued
    assert len(v.queue) == 1 and hub.stats["coalesced"] == 2000
    assert [m["type"] for m in frames(v)] == ["history"]
    [effect] = hub.receive(v, req)  # sent: a re-watch refills
    assert isinstance(effect, ReadHistory) and effect.viewers == (v,) and effect.instance == "w"
    # the same for a log's backlog
    logreq = '{"op":"watch","kind":"logs","instance":"w"}'
    assert isinstance(hub.receive(v, logreq)[-1], ReadBacklog)
    assert hub.receive(v, logreq) == []


def test_a_flood_of_watches_over_a_socket_holds_one_history(r, live):
    stats = Stats(r, "web.1", history=600)
    for m in range(5):
        r.cmd(
            [
                "LPUSH",
                names.history_key("web.1", f"m{m}"),
                *[names.encode_point(f"m{m}", 12345.678 + j, 1764133307.123 + j) for j in range(600)],
            ]
        )
        stats.publish(f"m{m}", 1.0)
    v = live.hub.connect()
    for _ in range(200):
        watch(live, v, "stats", "web.1")  # nobody takes the queue meanwhile
    assert [t[2] for t in v.queue] == [("stats", "web.1")]
    assert live.hub.stats["coalesced"] == 199


# -- 3: a failed backlog read does not leave the viewer deaf to live lines ----
def test_failed_backlog_read_releases_live_lines(r, live):
    log = greenredis.CappedLog.for_instance(r, "web.1")
    log.append("old line")
    Stats(r, "web.1").publish("rps", 1)
    real, fails = live.redis.transaction, [1]

    def flaky(*a, **kw):
        if fails:
            fails.pop()
            raise RedisTimeout("simulated timeout")
        return real(*a, **kw)

    live.redis.transaction = flaky
    v = live.hub.connect()
    watch(live, v, "logs", "web.1")
    [err] = frames(v)
    assert err["error"] == "unavailable"
    wait_for(lambda: "logs:{web.1}" in live.subscribed())
    log.append("live 1")
    wait_for(lambda: v.queue)
    assert frames(v) == [{"type": "log", "instance": "web.1", "line": "live 1"}]
    watch(live, v, "logs", "web.1")  # a re-watch now gets the backlog
    assert frames(v)[0] == {"type": "backlog", "instance": "web.1", "lines": ["old line", "live 1"]}


# -- 4: a foreign member of the metrics set does not hide the instance's history
def test_invalid_metric_names_are_skipped(r, live):
    stats = Stats(r, "web.1")
    stats.publish("rps", 5, ts=1.0)
    r.cmd(["SADD", names.metrics_key("web.1"), "bad name", b"\xff\xfe"])
    v = live.hub.connect()
    watch(live, v, "stats", "web.1")
    assert frames(v) == [{"type": "history", "instance": "web.1", "metrics": {"rps": [[1.0, 5]]}}]
    assert live.hub.stats["bad_metric"] == 2
