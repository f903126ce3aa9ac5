"""Defects found by an adversarial review after issue 8: each test failed before its fix."""

import os
import socket
import time

import gevent
import pytest
from gevent import socket as gsocket

import greenredis
from greenredis.url import parse_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cr%40t@h:99999/0",
        "redis://:s3cr%40t@h/x",
        "redis://user:s3cr%40t@h/0?nosuch=1",
        "redis://:s3cr%40t@h/0?timeout=abc",
        "rediss://user:s3cr%40t@[::1]:6380/0?ssl_check_hostname=maybe",
        "redis://h/0?password=s3cr%40t",  # redis-py users put it there too
        "redis://:s3cr@t@h/x",  # an unencoded @ in the password
    ],
)
def test_url_errors_never_show_the_password(url):
    with pytest.raises(ValueError) as e:
        parse_url(url)
    assert "s3cr" not in str(e.value) and "***" in str(e.value)


def test_params_repr_never_shows_the_password():
    params = parse_url("redis://user:s3cret@h:1/0")
    assert params.password == "s3cret"
    assert "s3cret" not in repr(params) and "s3cret" not in repr(greenredis.Redis(params=params).params)


def _pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass


def test_fork_while_the_tcp_connect_is_pending_leaves_the_socket_to_the_parent(redis_server):
    """A fork while the shared connection's TCP connect waits for its SYN-ACK: the child
    must not finish that connect and use the parent's socket (it read the parent's replies)."""
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # an accept queue of one: a second connect waits for a retransmitted SYN
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    filler2 = socket.socket()
    filler2.setblocking(False)
    filler2.connect_ex(("127.0.0.1", port))
    time.sleep(0.2)
    r = greenredis.Redis(port=port, connect_timeout=10)
    first = gevent.spawn(r.cmd, ["ECHO", "first"], timeout=10)
    gevent.sleep(0.3)
    assert r._connecting is not None  # the connect is in progress
    pid = os.fork()
    if pid == 0:  # the child: its copy of the pending call must fail, and nothing more
        code = 1
        try:
            first.join(8)
            code = 0 if isinstance(first.exception, greenredis.ConnectionError) else 3
            gevent.sleep(3)  # stay alive while the parent works: a stolen socket would show
        finally:
            os._exit(code)
    links = []

    def accept():
        while True:
            client, _ = listener.accept()
            upstream = gsocket.create_connection(("127.0.0.1", redis_server.port))
            links.extend((client, upstream))
            gevent.spawn(_pipe, client, upstream)
            gevent.spawn(_pipe, upstream, client)

    acceptor = gevent.spawn(accept)
    try:
        assert first.get(timeout=10) == b"first"
        replies = []
        for i in range(10):
            try:
                replies.append(r.cmd(["ECHO", f"p{i}"], timeout=1))
            except greenredis.RedisError as e:
                replies.append(e)
        assert replies == [f"p{i}".encode() for i in range(10)]
    finally:
        _, status = os.waitpid(pid, 0)
        acceptor.kill()
        r.close()
        for s in [*links, listener, filler, filler2]:
            s.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_dedicated_and_subscription_refuse_another_thread_before_sending(redis_server):
    import threading

    r = greenredis.Redis(port=redis_server.port)
    d = r.dedicated()
    d.cmd(["SET", "k", "0"])
    sub = r.subscribe("c")
    errors = []

    def other():
        for call in (lambda: d.cmd(["INCR", "k"]), lambda: sub.subscribe("d"), lambda: sub.get(0.01)):
            try:
                call()
            except BaseException as e:
                errors.append(e)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert [type(e) for e in errors] == [greenredis.RedisError] * 3, errors
    assert all("belongs to the thread" in str(e) for e in errors)
    assert d.cmd(["GET", "k"]) == b"0"  # the INCR was never sent
    assert r.cmd(["PUBSUB", "NUMSUB", "d"]) == [b"d", 0]
    r.cmd(["PUBLISH", "c", "hi"])
    assert tuple(sub.get(5)) == (b"message", b"c", b"hi")
    sub.close()
    d.close()
    r.close()


def test_sync_and_psync_are_refused_on_the_shared_connection(redis_server):
    """PSYNC made the shared connection a replication stream: everyone else's calls then
    failed (or would read the RDB as their reply)."""
    r = greenredis.Redis(port=redis_server.port)
    r.cmd(["SET", "k", "v"])
    for command in (["PSYNC", "?", -1], [b"sync"], [memoryview(b"PSync"), "?", -1]):
        with pytest.raises(ValueError, match="replication stream"):
            r.cmd(command, timeout=3)
    gevent.sleep(0.3)
    assert [r.cmd(["GET", "k"], timeout=3) for _ in range(3)] == [b"v"] * 3
    r.close()


def test_a_batch_that_failed_to_pack_does_not_switch_off_the_next_batchs_watchdog(redis_server):
    r = greenredis.Redis(port=redis_server.port, dead_after=0.5)
    with r.dedicated() as d:
        with pytest.raises(TypeError):
            d.cmd([["BLPOP", "q", 1], ["GET", object()]])  # BLPOP packed, then GET failed
        redis_server.pause()
        try:
            with gevent.Timeout(10, AssertionError("the watchdog never fired")):
                with pytest.raises(greenredis.ConnectionError, match="declared dead"):
                    d.cmd([["GET", "k"], ["GET", "k"]])
        finally:
            redis_server.resume()
    r.close()


@pytest.mark.parametrize("option", ["timeout", "connect_timeout", "dead_after", "health_check_interval"])
@pytest.mark.parametrize("value", ["nan", "-1"])
def test_bad_durations_are_refused_with_the_options_name(option, value):
    with pytest.raises(ValueError, match=option):
        parse_url(f"redis://h/0?{option}={value}")
    with pytest.raises(ValueError, match=option):
        greenredis.Redis(**{option: float(value)})


def test_ipv6_address_is_bracketed_in_messages():
    assert parse_url("redis://[::1]:7000/0").address == "[::1]:7000"


def test_a_subscription_iterated_at_fork_time_hears_the_childs_messages(redis_server):
    """The child inherits the greenlet iterating the subscription: it waited forever on
    the parent's abandoned connection (no reconnect, nothing heard)."""
    r = greenredis.Redis(port=redis_server.port)
    sub = r.subscribe("ch")
    got = []
    listener = gevent.spawn(lambda: got.extend(tuple(m) for m in sub))
    gevent.sleep(0.2)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(100):
                r.cmd(["PUBLISH", "ch", f"c{i}"], timeout=5)
                gevent.sleep(0.05)
                if (b"message", b"ch", b"c%d" % i) in got:
                    code = 0 if got[0] == (b"gap", None, None) else 2
                    break
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    r.cmd(["PUBLISH", "ch", "parent"])
    gevent.sleep(0.3)
    assert got[-1] == (b"message", b"ch", b"parent")  # the parent's stays as it was
    assert (b"gap", None, None) not in got and got[0] == (b"message", b"ch", b"c0")
    sub.close()
    listener.join(5)
    r.close()


def test_an_empty_password_is_no_password_as_in_redis_py(redis_server):
    for client in (
        greenredis.Redis.from_url(f"redis://:@127.0.0.1:{redis_server.port}/0"),
        greenredis.Redis(port=redis_server.port, password=""),
        greenredis.Redis.from_url(f"redis://default:@127.0.0.1:{redis_server.port}/0"),
    ):
        assert client.cmd(["PING"], timeout=5) == b"PONG"
        client.close()


def test_a_bad_ssl_cert_reqs_is_refused_when_the_client_is_made():
    """It used to pass, then every call failed with ValueError from its connect attempt."""
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        greenredis.Redis.from_url("rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus")
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        greenredis.Redis(ssl=True, ssl_cert_reqs="requierd")
    assert (
        greenredis.Redis.from_url("rediss://127.0.0.1:1/0?ssl_cert_reqs=NONE").params.ssl_cert_reqs == "NONE"
    )


def test_a_blocking_call_cut_by_a_fork_does_not_raise_the_childs_cap(redis_server):
    """The inherited BLPOP released the child's fresh semaphore: max_blocking + 1 slots."""
    r = greenredis.Redis(port=redis_server.port, max_blocking=1)
    call = gevent.spawn(r.cmd, ["BLPOP", "never", 30])
    gevent.sleep(0.3)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            call.join(5)
            failed = isinstance(call.exception, greenredis.ConnectionError)
            code = 0 if failed and r._blocking_slots.counter == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    call.kill()
    r.close()
