"""Stats, CappedLog and RedisLogHandler against a real redis-server."""

import json
import logging

import gevent
import pytest
from waiting import wait_for

import greenredis
from greenredis.telemetry import names
from greenredis.telemetry.caplog import CappedLog, RedisLogHandler
from greenredis.telemetry.stats import Stats


def test_stats_publish_sends_a_point_and_keeps_a_capped_history(r):
    sub = r.subscribe(names.stats_channel("web.1"))
    stats = Stats(r, "web.1", history=3)
    assert stats.publish("rps", 1.5, ts=100.0) == 1
    for i in range(5):
        stats.publish("rps", i, ts=101.0 + i)
    stats.publish("mem_mb", 70, ts=200.0)
    kind, channel, data = sub.get(timeout=5)
    assert (kind, channel) == (b"message", b"stats:{web.1}")
    assert json.loads(data) == {"metric": "rps", "ts": 100.0, "value": 1.5}
    assert [p["value"] for p in stats.history("rps")] == [2, 3, 4]  # capped, oldest first
    assert stats.metrics() == ["mem_mb", "rps"]
    assert stats.snapshot(n=1) == {
        "mem_mb": [{"metric": "mem_mb", "ts": 200.0, "value": 70}],
        "rps": [{"metric": "rps", "ts": 105.0, "value": 4}],
    }
    assert r.cmd(["ZSCORE", names.INSTANCES, "web.1"]) == b"200"
    assert 0 < r.cmd(["TTL", names.history_key("web.1", "rps")]) <= 86400
    with pytest.raises(ValueError):
        stats.publish("bad name", 1)
    with pytest.raises(ValueError):
        stats.publish("rps", "12")
    sub.close()


def test_capped_log_keeps_cap_and_order(r):
    log = CappedLog(r, names.log_key("web.1"), cap=5)
    for i in range(4):
        log.append(f"line {i}")
    log.append("line 4", "line 5", "line 6")
    assert log.tail() == [f"line {i}" for i in range(2, 7)]  # newest last, capped at 5
    assert log.tail(2) == ["line 5", "line 6"]
    assert log.tail(0) == []
    assert len(log) == 5
    assert r.cmd(["LINDEX", "logs:{web.1}", 0]) == b"line 6"  # newest first in Redis
    with pytest.raises(ValueError):
        log.append(names.FOLLOW_MARK + "x")


def test_follow_yields_backlog_then_live_lines_exactly_once(r):
    log = CappedLog(r, "logs:{w}", cap=100)
    log.append("a", "b")
    got = []

    def follow():
        for line in log.follow(timeout=5):
            got.append(line)
            if line == "end":
                return

    g = gevent.spawn(follow)
    writer = greenredis.Redis.from_url(f"redis://127.0.0.1:{r.params.port}")
    wlog = CappedLog(writer, "logs:{w}", cap=100)
    for i in range(50):  # races with follow's start: no loss, no duplicate
        wlog.append(f"x{i}")
        gevent.sleep(0)
    wait_for(lambda: len(got) >= 3)
    wlog.append("end")
    g.join(10)
    assert got == ["a", "b"] + [f"x{i}" for i in range(50)] + ["end"]
    writer.close()


def test_follow_resyncs_after_a_gap(redis_server):
    r = greenredis.Redis.from_url(redis_server.url)
    log = CappedLog(r, "logs:{w}", cap=100)
    log.append("one")
    it = log.follow(timeout=10)
    assert next(it) == "one"
    log.append("two")
    assert next(it) == "two"
    r.cmd(["CLIENT", "KILL", "TYPE", "pubsub"])  # the follower loses its connection
    log.append("three")  # maybe lost by pub/sub: resync finds it
    assert next(it) == "three"
    log.append("four")
    assert next(it) == "four"
    it.close()
    r.close()


def test_log_handler_sends_records(r):
    handler = RedisLogHandler(r, "logs:{h}", cap=10)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_tempo_logs.send")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(15):
            logger.warning("hello %d", i)
        handler.flush()
        assert CappedLog(r, "logs:{h}").tail() == [f"WARNING hello {i}" for i in range(5, 15)]
        assert handler.sent == 15 and handler.dropped == 0
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_log_handler_never_blocks_when_redis_is_down(make_server):
    server = make_server()
    r = greenredis.Redis.from_url(server.url, connect_timeout=2.0)
    handler = RedisLogHandler(r, "logs:{down}", cap=1000, maxsize=50)
    logger = logging.getLogger("test_tempo_logs.down")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.error("before")
        handler.flush()
        assert handler.sent == 1
        server.pause()  # SIGSTOP: connections hang, nothing answers
        switches = []
        watcher = gevent.spawn(lambda: [switches.append(1) or gevent.sleep(0) for _ in range(10**9)])
        for i in range(500):  # emit must return at once: it never yields to the hub
            before = len(switches)
            logger.error("while down %d", i)
            assert len(switches) == before
        watcher.kill()
        assert handler.dropped >= 500 - 50 - 100  # the bounded buffer overflowed: counted
        lost = handler.dropped
        server.kill()  # refused now: nothing is known lost, nothing is dropped
        gevent.sleep(1.0)
        assert handler.dropped == lost and handler.sent == 1
        server.restart()  # empty: the batch in flight never landed, so it is sent again
        wait_for(lambda: _reachable(r), timeout=30)
        wait_for(lambda: handler.dropped + handler.sent == 501, timeout=60)
        assert handler.dropped == lost  # only the overflow was lost
        logger.error("after")  # the drainer recovers by itself
        wait_for(lambda: CappedLog(r, "logs:{down}").tail(1) == ["after"], timeout=30)
        lines = CappedLog(r, "logs:{down}").tail()
        assert lines[0] == f"{lost} log lines lost"  # the hole, where it is ("before" went with Redis)
        numbers = [int(x.rsplit(" ", 1)[1]) for x in lines[1:-1]]
        assert numbers == sorted(set(numbers)) and len(numbers) == 500 - lost
    finally:
        logger.removeHandler(handler)
        handler.close(timeout=1)
        r.close()


def _reachable(r):
    try:
        r.cmd(["PING"], timeout=1)
        return True
    except greenredis.RedisError:
        return False


def test_log_handler_accepts_records_from_other_threads(r):
    import threading

    handler = RedisLogHandler(r, "logs:{t}", cap=100)
    logger = logging.getLogger("test_tempo_logs.threads")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        threads = [
            threading.Thread(target=lambda k=k: [logger.warning("t%d %d", k, i) for i in range(10)])
            for k in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: handler.sent == 30)  # the drainer was woken from those threads
        lines = CappedLog(r, "logs:{t}").tail()
        assert sorted(lines) == sorted(f"t{k} {i}" for k in range(3) for i in range(10))
        for k in range(3):  # each thread's lines in its order
            assert [x for x in lines if x.startswith(f"t{k} ")] == [f"t{k} {i}" for i in range(10)]
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_log_handler_does_not_count_a_timed_out_batch_that_redis_applied(make_server):
    server = make_server()
    r = greenredis.Redis.from_url(server.url)
    handler = RedisLogHandler(r, "logs:{late}", timeout=0.3)
    logger = logging.getLogger("test_tempo_logs.late")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        server.pause()
        logger.error("late line")
        gevent.sleep(1.0)  # the batch timed out; Redis has it in its socket buffer
        server.resume()  # and applies it now
        wait_for(lambda: handler.sent == 1, timeout=30)
        assert handler.dropped == 0
        assert CappedLog(r, "logs:{late}").tail() == ["late line"]  # once, not twice
    finally:
        logger.removeHandler(handler)
        handler.close(timeout=1)
        r.close()


def test_long_lines_are_cut_with_a_visible_marker(r):
    log = CappedLog(r, "logs:{long}")
    log.append("x" * 100000, "é" * 10000, "short")
    first, second, third = log.tail()
    assert len(first.encode()) <= 8192 and first.endswith(" bytes truncated]")
    assert first.startswith("x" * 8000) and "91" in first.rsplit("[", 1)[1]
    assert len(second.encode()) <= 8192 and second.startswith("é" * 4000)  # no split character
    assert third == "short"
    handler = RedisLogHandler(r, "logs:{long2}")
    logger = logging.getLogger("test_tempo_logs.long")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.error("y" * 70000)
        handler.flush()
        [line] = CappedLog(r, "logs:{long2}").tail()
        assert len(line) <= 8192 and line.endswith(" bytes truncated]")
    finally:
        logger.removeHandler(handler)
        handler.close()
