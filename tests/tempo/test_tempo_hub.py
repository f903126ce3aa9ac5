"""The pure fan-out hub and the channel layout: fed directly, no sockets, no Redis."""

import pytest
from tempo_helpers import frames

from greenredis.telemetry import names
from greenredis.tempo.hub import Hub, ReadBacklog, ReadHistory, SendGrid, Subscribe, Unsubscribe

pytestmark = pytest.mark.unit  # pure: no server, no sockets


def point(metric, ts, value):
    return names.encode_point(metric, value, ts).encode()


def test_channel_layout_is_unambiguous_and_validated():
    assert names.stats_channel("web.1") == "stats:{web.1}"
    assert names.history_key("host:12", "a:b") == "stats:{host:12}:h:a:b"
    assert names.metrics_key("web.1") == "stats:{web.1}:metrics"
    assert names.log_key("web.1") == "logs:{web.1}"
    assert names.instance_of_channel(b"stats:{host:12}") == ("stats", "host:12")
    assert names.instance_of_channel("logs:{web.1}") == ("logs", "web.1")
    assert names.instance_of_channel("other") is None
    for bad in ["", "a b", "a{b", "x}", "a/b", "a\nb", "x" * 201, None, 3]:
        with pytest.raises(ValueError):
            names.check_instance(bad)
    for bad in ["", "a b", "<script>", "x" * 101]:
        with pytest.raises(ValueError):
            names.check_metric(bad)
    with pytest.raises(ValueError):
        names.encode_point("rps", float("nan"), 1.0)
    with pytest.raises(ValueError):
        names.encode_point("rps", True, 1.0)
    assert names.decode_point(point("rps", 5.5, 2)) == {"metric": "rps", "ts": 5.5, "value": 2}
    for bad in [b"nope", b"[]", b'{"metric":"rps","ts":1,"value":NaN}', b'{"metric":"a b","ts":1,"value":1}']:
        with pytest.raises(ValueError):
            names.decode_point(bad)


def test_watch_subscribes_once_and_fans_out():
    hub = Hub()
    a, b = hub.connect(), hub.connect()
    eff = hub.receive(a, '{"op":"watch","kind":"stats","instance":"web.1"}')
    assert eff[0] == Subscribe("stats:{web.1}") and len(eff) == 2
    assert (eff[1].viewers, eff[1].instance, eff[1].depth) == ((a,), "web.1", None)
    [eff] = hub.receive(b, '{"op":"watch","kind":"stats","instance":"web.1","history":5}')
    assert isinstance(eff, ReadHistory) and (eff.viewers, eff.depth) == ((b,), 5)  # no second subscription
    assert hub.channels() == ["stats:{web.1}"]
    assert hub.publish(b"stats:{web.1}", point("rps", 10.0, 3)) == 2
    assert hub.publish(b"stats:{web.2}", point("rps", 10.0, 3)) == 0
    for v in (a, b):
        assert frames(v) == [{"type": "point", "instance": "web.1", "metric": "rps", "ts": 10.0, "value": 3}]
    assert hub.receive(a, '{"op":"unwatch","kind":"stats","instance":"web.1"}') == []
    assert hub.disconnect(b) == [Unsubscribe("stats:{web.1}")]
    assert hub.channels() == []


def test_history_goes_only_to_current_watchers():
    hub = Hub()
    a, b = hub.connect(), hub.connect()
    hub.receive(a, '{"op":"watch","kind":"stats","instance":"w"}')
    hub.history([a, b], "w", {"rps": [{"metric": "rps", "ts": 1.0, "value": 2}]})
    assert frames(a) == [{"type": "history", "instance": "w", "metrics": {"rps": [[1.0, 2]]}}]
    assert frames(b) == []


@pytest.mark.parametrize(
    "text,code",
    [
        ("not json", "bad_json"),
        ("[1,2]", "bad_message"),
        ('{"op":"subscribe","channel":"secret"}', "unknown_op"),
        ('{"op":"watch","kind":"channel","instance":"x"}', "bad_kind"),
        ('{"op":"watch","kind":"stats","instance":"a b"}', "bad_instance"),
        ('{"op":"watch","kind":"stats","instance":"ghost"}', "unknown_instance"),
        ('{"op":"watch","kind":"stats","instance":"w","history":-1}', "bad_message"),
        ('{"op":"watch","kind":"stats","instance":"' + "x" * 5000 + '"}', "too_large"),
        (b"\xff\xfe", "bad_json"),
    ],
)
def test_bad_requests_get_json_errors_and_the_viewer_stays_usable(text, code):
    hub = Hub(max_message=4096, is_known=lambda name: name != "ghost")
    v = hub.connect()
    assert hub.receive(v, text) == []
    [err] = frames(v)
    assert err["type"] == "error" and err["error"] == code and err["message"]
    assert hub.channels() == []
    hub.receive(v, '{"op":"ping","id":7}')
    assert frames(v) == [{"type": "pong", "id": 7}]


def test_error_echoes_request_id_and_watch_limit():
    hub = Hub(max_watch=2)
    v = hub.connect()
    hub.receive(v, '{"op":"watch","kind":"stats","instance":"a"}')
    hub.receive(v, '{"op":"watch","kind":"logs","instance":"a"}')
    hub.receive(v, '{"op":"watch","kind":"stats","instance":"b","id":"x1"}')
    errs = [m for m in frames(v) if m["type"] == "error"]
    assert errs == [{"type": "error", "error": "too_many", "message": errs[0]["message"], "id": "x1"}]


def test_slow_viewer_loses_oldest_and_is_told():
    hub = Hub(queue_size=5)
    slow, fast = hub.connect(), hub.connect()
    for v in (slow, fast):
        hub.receive(v, '{"op":"watch","kind":"stats","instance":"w"}')
    got_fast = []
    for i in range(12):
        hub.publish(b"stats:{w}", point("n", float(i), i))
        got_fast += frames(fast)
    assert [m["value"] for m in got_fast] == list(range(12))  # not slowed by the other
    assert len(slow.queue) == 5 and slow.dropped == 7
    msgs = frames(slow)
    assert msgs[0] == {"type": "dropped", "count": 7, "total": 7}
    assert [m["value"] for m in msgs[1:]] == [7, 8, 9, 10, 11]  # the newest survive
    hub.publish(b"stats:{w}", point("n", 12.0, 12))
    assert frames(slow) == [{"type": "point", "instance": "w", "metric": "n", "ts": 12.0, "value": 12}]


def test_bad_payload_on_a_stats_channel_is_counted_not_sent():
    hub = Hub()
    v = hub.connect()
    hub.receive(v, '{"op":"watch","kind":"stats","instance":"w"}')
    assert hub.publish(b"stats:{w}", b"garbage") == 0
    assert hub.stats["bad_payload"] == 1 and frames(v) == []


def test_log_join_lines_up_backlog_and_live_lines():
    hub = Hub()
    old, new = hub.connect(), hub.connect()
    eff = hub.receive(old, '{"op":"watch","kind":"logs","instance":"w"}')
    assert eff[0] == Subscribe("logs:{w}")
    [backlog] = eff[1:]
    old_mark = backlog.mark
    hub.backlog(old, "w", [])
    hub.publish(b"logs:{w}", old_mark.encode())
    eff = hub.receive(new, '{"op":"watch","kind":"logs","instance":"w"}')
    [backlog] = eff
    viewer, instance, mark = backlog.viewer, backlog.instance, backlog.mark
    assert viewer is new and instance == "w" and mark.startswith(names.FOLLOW_MARK)
    ch = b"logs:{w}"
    hub.publish(ch, b"one")  # before the marker: in new's backlog
    hub.publish(ch, mark.encode())  # the marker
    hub.publish(ch, b"two")  # after: held until the backlog is queued
    hub.backlog(new, "w", ["zero", "one"])
    hub.publish(ch, b"three")
    assert frames(new) == [
        {"type": "backlog", "instance": "w", "lines": ["zero", "one"]},
        {"type": "log", "instance": "w", "line": "two"},
        {"type": "log", "instance": "w", "line": "three"},
    ]
    assert [m.get("line") for m in frames(old)] == [None, "one", "two", "three"]  # no markers


def test_log_backlog_before_marker():
    hub = Hub()
    v = hub.connect()
    [mark] = [
        e.mark
        for e in hub.receive(v, '{"op":"watch","kind":"logs","instance":"w"}')
        if isinstance(e, ReadBacklog)
    ]
    hub.backlog(v, "w", ["a"])
    hub.publish(b"logs:{w}", b"a")  # published before the marker: skip
    hub.publish(b"logs:{w}", mark.encode())
    hub.publish(b"logs:{w}", b"b")
    assert frames(v) == [
        {"type": "backlog", "instance": "w", "lines": ["a"]},
        {"type": "log", "instance": "w", "line": "b"},
    ]


def test_resync_refills_every_viewer_with_one_read_per_stats_topic():
    hub = Hub()
    a, b, c = hub.connect(), hub.connect(), hub.connect()
    for v in (a, b):
        hub.receive(v, '{"op":"watch","kind":"stats","instance":"w"}')
    hub.receive(c, '{"op":"watch","kind":"logs","instance":"w"}')
    eff = hub.resync()
    hist = [e for e in eff if isinstance(e, ReadHistory)]
    assert len(hist) == 1 and set(hist[0].viewers) == {a, b}
    assert [type(e) for e in eff if not isinstance(e, ReadHistory)] == [ReadBacklog]


def test_grid_topic_needs_no_redis_channel():
    hub = Hub()
    v = hub.connect()
    [eff] = hub.receive(v, '{"op":"watch","kind":"grid"}')
    assert isinstance(eff, SendGrid) and eff.viewer is v
    assert hub.channels() == []
    assert hub.broadcast(("grid", None), {"type": "grid", "nodes": []}) == 1
    assert frames(v) == [{"type": "grid", "nodes": []}]
    assert hub.disconnect(v) == []
