"""Pub/sub on its own connection, against real redis-servers."""

import gevent
import pytest
import redis as redispy
from waiting import wait_for

import greenredis


def test_subscribe_iterate_and_close(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    sub = r.subscribe("chfoo")
    received = []

    def consume():
        for kind, channel, data in sub:
            received.append((kind, channel, data))

    consumer = gevent.spawn(consume)
    for i in range(100):
        assert r.cmd(["PUBLISH", "chfoo", f"hello {i}"]) == 1
    assert wait_for(lambda: len(received) == 100)
    assert received[0] == (b"message", b"chfoo", b"hello 0")
    assert [d for _, _, d in received] == [f"hello {i}".encode() for i in range(100)]
    sub.close()
    consumer.join(timeout=5)
    assert consumer.successful()
    assert r.cmd(["PUBSUB", "NUMSUB", "chfoo"]) == [b"chfoo", 0] or wait_for(
        lambda: r.cmd(["PUBSUB", "NUMSUB", "chfoo"]) == [b"chfoo", 0]
    )


def test_patterns_and_changing_subscriptions(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    sub = r.psubscribe("news.*")
    r.cmd(["PUBLISH", "news.art", "paint"])
    message = sub.get(timeout=5)
    assert message == (b"pmessage", b"news.art", b"paint") and message.pattern == b"news.*"
    sub.subscribe("plain", "other")
    sub.punsubscribe("news.*")
    r.cmd(["PUBLISH", "news.art", "lost"])
    r.cmd(["PUBLISH", "plain", "kept"])
    assert sub.get(timeout=5) == (b"message", b"plain", b"kept")
    sub.unsubscribe("plain")
    assert sub.channels == {b"other"}
    assert r.cmd(["PUBLISH", "plain", "x"]) == 0
    assert sub.get(timeout=0.2) is None
    sub.close()
    assert sub.get(timeout=0.2) is None


def test_resubscribes_after_a_server_restart_and_reports_the_gap(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    sub = r.subscribe("events")
    sub.psubscribe("ev*")
    r.cmd(["PUBLISH", "events", "before"])
    assert sub.get(timeout=5)[2] == b"before"
    assert sub.get(timeout=5)[2] == b"before"  # once more through the pattern
    redis_server.kill()
    redis_server.start()
    assert sub.get(timeout=10) == (b"gap", None, None)
    check = redispy.Redis(port=redis_server.port)
    assert wait_for(lambda: check.pubsub_numsub("events") == [(b"events", 1)])
    assert check.pubsub_numpat() == 1
    check.publish("events", "after")
    assert sub.get(timeout=5) == (b"message", b"events", b"after")
    sub.close()


def test_slow_consumer_stops_reading_instead_of_growing(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    sub = r.subscribe("firehose", maxsize=100)
    payload = "x" * 100
    r.cmd([["PUBLISH", "firehose", payload]] * 5000)
    gevent.sleep(0.3)
    assert len(sub._queue) <= 100  # the rest waits in the socket and in Redis
    got = sum(1 for _ in iter(lambda: sub.get(timeout=2), None))
    assert got == 5000  # nothing lost: reading resumed as the queue drained
    sub.close()


def test_subscription_errors(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    sub = r.subscribe()
    with pytest.raises(ValueError):
        sub.subscribe()
    sub.close()
    with pytest.raises(greenredis.ConnectionError):
        sub.subscribe("late")


def test_a_failed_reconnect_never_leaves_a_second_connection(redis_server):
    r = greenredis.Redis(port=redis_server.port, connect_timeout=0.5)
    sub = r.subscribe("c")
    check = redispy.Redis(port=redis_server.port)
    check.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    redis_server.pause()  # reconnects connect, but their confirmations time out
    gevent.sleep(2.5)
    redis_server.resume()
    assert sub.get(timeout=10) == (b"gap", None, None)
    assert wait_for(lambda: check.pubsub_numsub("c") == [(b"c", 1)])
    gevent.sleep(0.5)  # any leftover connection would have subscribed by now
    assert check.pubsub_numsub("c") == [(b"c", 1)]
    check.publish("c", "once")
    assert sub.get(timeout=5) == (b"message", b"c", b"once")
    assert sub.get(timeout=0.5) is None  # delivered exactly once
    sub.close()


def test_subscribe_works_while_a_slow_consumer_has_paused_reading(redis_server):
    r = greenredis.Redis(port=redis_server.port, connect_timeout=2)
    sub = r.subscribe("a", maxsize=10)
    r.cmd([["PUBLISH", "a", i] for i in range(100)])
    assert wait_for(lambda: len(sub._queue) >= 10)
    sub.subscribe("b")  # its confirmation sits behind unread messages
    r.cmd(["PUBLISH", "b", "hello"])
    got = [sub.get(timeout=5) for _ in range(101)]
    assert [m[2] for m in got[:100]] == [str(i).encode() for i in range(100)]
    assert got[100] == (b"message", b"b", b"hello")
    sub.close()


def test_a_subscribe_refused_by_acl_raises_and_leaves_no_connection(make_server):
    server = make_server(users=["default on nopass ~* &* +@all", "nochan on >pw ~* resetchannels +@all"])
    r = greenredis.Redis(port=server.port, username="nochan", password="pw")
    check = redispy.Redis(port=server.port)
    with pytest.raises(greenredis.errors.NoPermissionError, match="SUBSCRIBE orders"):
        r.subscribe("orders")
    with pytest.raises(greenredis.errors.NoPermissionError, match="PSUBSCRIBE ord"):
        r.psubscribe("ord*")
    # the refused subscriptions' connections are closed: only the check client remains
    assert wait_for(lambda: len(check.client_list()) == 1)
    # an allowed user on the same server still subscribes
    sub = greenredis.Redis(port=server.port).subscribe("orders")
    check.publish("orders", "x")
    assert sub.get(timeout=5) == (b"message", b"orders", b"x")
    sub.close()
    r.close()


def test_log_lines_name_a_subscription_without_its_repr(redis_server, caplog):
    r = greenredis.Redis(port=redis_server.port)
    sub = r.subscribe("orders")
    redispy.Redis(port=redis_server.port).client_kill_filter(_type="pubsub")
    assert wait_for(lambda: "lost its connection" in caplog.text)
    line = next(rec.getMessage() for rec in caplog.records if "lost its connection" in rec.getMessage())
    assert line.startswith(f"subscription to 127.0.0.1:{redis_server.port} (orders)"), line
    assert "<Subscription" not in caplog.text
    sub.close()
    r.close()


@pytest.mark.parametrize("kind", ["subscription", "monitor"])
def test_closed_while_its_reconnector_connects_leaves_no_connection(redis_server, kind):
    """close() from another greenlet just as the reconnector has opened the new
    connection: close() cannot see that one and its kill of the reconnector lands later,
    so the reconnector must close it itself (it stayed open, subscribed, forever)."""
    r = greenredis.Redis(port=redis_server.port)
    stream = r.subscribe("c") if kind == "subscription" else r.monitor()
    check = redispy.Redis(port=redis_server.port)
    real_open = r._open

    def open_then_close(*args, **kwargs):
        conn = real_open(*args, **kwargs)
        if gevent.getcurrent() is stream._reconnector:
            stream.close()
        return conn

    r._open = open_then_close
    flag = "P" if kind == "subscription" else "O"  # CLIENT LIST flags: pubsub, monitor
    theirs = lambda: [c for c in check.client_list() if flag in c["flags"]]
    check.execute_command("CLIENT", "KILL", "TYPE", "pubsub" if kind == "subscription" else "normal")
    wait_for(lambda: stream.closed, what="closed as it reconnected")
    wait_for(lambda: stream._reconnector.dead, what="its reconnector ended")
    gevent.sleep(0.3)  # a leftover connection's SUBSCRIBE/MONITOR is handled by now
    assert theirs() == []
    del r._open
    r.close()
