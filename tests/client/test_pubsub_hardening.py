"""Pub/sub and MONITOR tried as an adversarial user would (issue 8 items 0, 7, 9, 11)."""

import gevent
import pytest
import redis as redispy
from client_helpers import start_script
from waiting import wait_for

import greenredis
from greenredis.errors import NoPermissionError

GAP = (b"gap", None, None)


def test_0_a_subscription_keeps_a_standalone_process_alive_with_password_and_db(make_server):
    server = make_server(password="pw")
    child = start_script(
        """
        import sys, greenredis
        r = greenredis.Redis.from_url(sys.argv[1])
        sub = r.subscribe("news")
        print("ready", flush=True)
        for kind, channel, data in sub:
            print(data.decode(), flush=True)
            if data == b"stop":
                break
        """,
        f"redis://:pw@127.0.0.1:{server.port}/2",
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        publisher = redispy.Redis(port=server.port, password="pw")
        assert publisher.publish("news", "hello") == 1
        publisher.publish("news", "stop")
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert out.split() == ["hello", "stop"]


def test_7_a_refused_resubscription_is_raised_by_the_iterator(make_server):
    server = make_server(users=["default on nopass ~* &* +@all", "u on >pw ~* &* +@all"])
    r = greenredis.Redis(port=server.port, username="u", password="pw")
    sub = r.subscribe("orders", "news")
    sub.psubscribe("ord*")
    check = redispy.Redis(port=server.port)
    # Redis drops the subscriber whose channel rights shrank; the resubscription meets the ACL
    check.execute_command("ACL", "SETUSER", "u", "resetchannels", "&news")
    assert sub.get(timeout=10) == GAP
    with pytest.raises(NoPermissionError, match="orders") as refused:
        sub.get(timeout=5)
    assert "ord*" in str(refused.value)
    assert sub.channels == {b"news"} and sub.patterns == set()
    check.publish("news", "still here")
    assert sub.get(timeout=5) == (b"message", b"news", b"still here")
    received = []
    consumer = gevent.spawn(lambda: received.extend(sub))
    check.publish("news", "more")
    assert wait_for(lambda: received == [(b"message", b"news", b"more")])
    sub.close()
    consumer.join(timeout=5)
    r.close()


def test_9_a_failed_subscribe_or_monitor_leaves_no_connection(redis_server):
    r = greenredis.Redis(port=redis_server.port, connect_timeout=0.5)
    check = redispy.Redis(port=redis_server.port)
    check.ping()
    redis_server.pause()
    try:
        with pytest.raises(greenredis.ConnectionError):
            r.subscribe("c")
        with pytest.raises(greenredis.ConnectionError):
            r.monitor()
    finally:
        redis_server.resume()
    gevent.sleep(0.5)  # an orphan would have been accepted and subscribed by now
    clients = check.client_list()
    assert len(clients) == 1, clients
    assert check.pubsub_numsub("c") == [(b"c", 0)]
    r.close()


def test_11_the_gap_comes_before_anything_from_the_new_connection(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    sub = r.subscribe("seq", maxsize=1000000)
    publisher = greenredis.Redis(port=redis_server.port)
    check = redispy.Redis(port=redis_server.port)
    running = True

    def publish():
        n = 0
        while running:
            publisher.cmd([["PUBLISH", "seq", n + i] for i in range(50)])
            n += 50
            gevent.sleep(0)

    pub = gevent.spawn(publish)
    items = []
    for _ in range(5):
        gevent.sleep(0.1)
        check.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        while True:
            item = sub.get(timeout=10)
            items.append(item)
            if item == GAP:
                break
    running = False
    pub.join(timeout=5)
    # Before each gap: an unbroken run (what the old connection delivered); the first
    # message after it is new. A jump before a gap is a new message that overtook it.
    previous = None
    for item in items:
        if item == GAP:
            previous = None
            continue
        n = int(item[2])
        assert previous is None or n == previous + 1, "a message from the new connection preceded the gap"
        previous = n
    sub.close()
    r.close()
    publisher.close()


def test_changing_a_subscription_while_it_reconnects_is_a_connection_error(redis_server):
    r = greenredis.Redis(port=redis_server.port, connect_timeout=0.5)
    sub = r.subscribe("a")
    redis_server.kill()
    assert wait_for(lambda: sub._reconnecting)
    for _ in range(5):  # whichever moment of the reconnect loop it meets
        with pytest.raises(greenredis.ConnectionError):
            sub.subscribe("b")
        gevent.sleep(0.03)
    redis_server.start()
    assert sub.get(timeout=10) == GAP
    sub.subscribe("b")
    redispy.Redis(port=redis_server.port).publish("b", "x")
    assert sub.get(timeout=5) == (b"message", b"b", b"x")
    sub.close()
