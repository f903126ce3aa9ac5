"""The client tried as an adversarial user would (issue 8): each test names its item."""

import enum
import gc
import logging
import socket
import threading
import time

import gevent
import gevent.socket
import pytest
import redis as redispy
from client_helpers import run_script
from waiting import wait_for

import greenredis
from greenredis.client import connection as connection_module
from greenredis.errors import (
    AuthenticationError,
    ExecAbortError,
    NoPermissionError,
    RedisError,
    WatchError,
)
from greenredis.url import parse_url


def _clients(port):
    return redispy.Redis(port=port).info("clients")["connected_clients"]


# -- 1: a write larger than the buffer bound, plus a concurrent command -------------


def test_1_huge_write_and_a_concurrent_command_both_complete(redis_server):
    out = run_script(
        """
        import sys, gevent, greenredis
        r = greenredis.Redis(port=int(sys.argv[1]))
        r.cmd(["PING"])
        big = b"x" * (50 << 20)
        jobs = [gevent.spawn(r.cmd, ["SET", "big", big]), gevent.spawn(r.cmd, ["ECHO", "small"])]
        gevent.joinall(jobs, raise_error=True)
        assert [j.value for j in jobs] == [b"OK", b"small"]
        batch = [["SET", f"k{i}", b"y" * (1 << 20)] for i in range(30)]
        jobs = [gevent.spawn(r.cmd, batch), gevent.spawn(r.cmd, ["ECHO", "after"])]
        gevent.joinall(jobs, raise_error=True)
        assert jobs[0].value == [b"OK"] * 30 and jobs[1].value == b"after"
        print(r.cmd(["STRLEN", "big"]), r.cmd(["DBSIZE"]))
        """,
        redis_server.port,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(50 << 20), "31"]


# -- 4: backpressure honours the call's timeout and serves waiters in order --------


def test_4_timeout_covers_the_wait_for_buffer_space_and_waiters_go_in_order(redis_server, monkeypatch):
    monkeypatch.setattr(connection_module, "MAX_WRITE_BUFFER", 64 << 10)
    r = greenredis.Redis(port=redis_server.port, dead_after=None)
    r.cmd(["PING"])
    redis_server.pause()
    try:
        value = b"v" * 50000
        fillers = [gevent.spawn(r.cmd, ["SET", f"fill{i}", value]) for i in range(200)]
        gevent.sleep(0.2)
        assert r._shared._wbytes > (64 << 10)  # over the bound: newcomers wait for space
        impatient = gevent.spawn(r.cmd, ["SET", "impatient", 1], timeout=0.2)
        assert gevent.joinall([impatient], timeout=3) and impatient.ready()
        assert isinstance(impatient.exception, greenredis.TimeoutError)
        first = [gevent.spawn(r.cmd, ["RPUSH", "order", f"a{i}"]) for i in range(30)]
        gevent.sleep(0.05)
    finally:
        redis_server.resume()
    later = []
    for i in range(30):  # newcomers while the early waiters are still being let in
        later.append(gevent.spawn(r.cmd, ["RPUSH", "order", f"b{i}"]))
        gevent.sleep(0.001)
    gevent.joinall(fillers + first + later, raise_error=True, timeout=30)
    order = [x.decode() for x in r.cmd(["LRANGE", "order", 0, -1])]
    assert order[:30] == [f"a{i}" for i in range(30)]
    assert sorted(order[30:]) == sorted(f"b{i}" for i in range(30))
    assert r.cmd(["EXISTS", "impatient"]) == 0  # timed out before sending: never sent
    r.close()


# -- 5: a caller's timeout bounds the reconnect; one attempt serves everyone ----------


def test_5_timeout_bounds_the_reconnect_and_one_attempt_serves_all(make_server):
    server = make_server(password="pw")
    check = redispy.Redis(port=server.port, password="pw")
    before = check.info("stats")["total_connections_received"]
    r = greenredis.Redis(port=server.port, password="pw", connect_timeout=1.5)
    server.pause()  # the TCP connect succeeds, AUTH gets no answer
    try:
        callers = [gevent.spawn(r.cmd, ["PING"], timeout=0.1) for _ in range(5)]
        gevent.joinall(callers, timeout=1.0)  # well before connect_timeout
        assert all(c.ready() for c in callers)
        assert all(isinstance(c.exception, greenredis.TimeoutError) for c in callers)
        assert wait_for(lambda: r._connecting is None, timeout=10)
        assert r._backoff.failures == 1  # the timed-out connect counts for the backoff
    finally:
        server.resume()
    assert wait_for(lambda: check.info("stats")["total_connections_received"] - before == 1)
    for _ in range(100):
        try:
            assert r.cmd(["PING"], timeout=2) == b"PONG"
            break
        except greenredis.ConnectionError:
            gevent.sleep(0.05)
    assert r._backoff.failures == 0
    r.close()


# -- 3 and 10: WAIT on the shared connection is refused; on dedicated() it tells the truth


def test_3_wait_is_refused_on_the_shared_connection_and_honest_on_dedicated(make_server):
    master = make_server()
    replica = make_server(replicaof=("127.0.0.1", master.port))
    check = redispy.Redis(port=master.port)
    assert wait_for(
        lambda: (
            check.info("replication").get("slave0", {}).get("state") == "online"
            and redispy.Redis(port=replica.port).info("replication")["master_link_status"] == "up"
        ),
        timeout=30,
    )
    r = greenredis.Redis(port=master.port, dead_after=0.2)
    with pytest.raises(ValueError, match="dedicated"):
        r.cmd(["WAIT", 1, 100])
    with pytest.raises(ValueError, match="dedicated"):
        r.cmd([b"waitaof", 1, 0, 100])
    r.cmd(["SET", "warm", 1])
    with r.dedicated() as c:
        c.cmd(["SET", "k", "v"])
        assert c.cmd(["WAIT", 1, 5000]) == 1
    replica.pause()
    try:
        with r.dedicated() as c:
            c.cmd(["SET", "k", "v2"])
            # the replica is frozen: nobody acknowledged; and WAIT outlives dead_after
            assert c.cmd(["WAIT", 1, 600]) == 0
    finally:
        replica.resume()
    r.close()


def test_10_dedicated_blocking_calls_have_no_silence_deadline(redis_server):
    r = greenredis.Redis(port=redis_server.port, dead_after=0.3)
    with r.dedicated() as c:
        assert c.cmd(["BLPOP", "nothing", 1]) is None  # 1 s of silence, asked for
        popped = gevent.spawn(c.cmd, ["BRPOP", "later", 0])
        gevent.sleep(0.8)
        r.cmd(["RPUSH", "later", "x"])
        assert popped.get(timeout=5) == [b"later", b"x"]
        assert c.cmd(["PING"]) == b"PONG"
    r.close()


# -- 8: dropped clients release their connections -----------------------------------


def test_8_dropped_clients_release_their_connections(redis_server):
    base = _clients(redis_server.port)
    for i in range(50):
        client = greenredis.Redis(port=redis_server.port)
        client.cmd(["SET", f"k{i}", i])
        client.cmd(["BLPOP", "none", 0.01])  # and a blocking-command connection
    del client
    gc.collect()
    assert wait_for(lambda: _clients(redis_server.port) == base)
    with greenredis.Redis(port=redis_server.port) as client:
        assert client.cmd(["PING"]) == b"PONG"
        assert _clients(redis_server.port) == base + 1
    assert wait_for(lambda: _clients(redis_server.port) == base)


# -- 12: every connection failure is a ConnectionError; blocking connections are capped


def test_12_out_of_file_descriptors_is_a_connection_error(make_server):
    server = make_server(unixsocket=True)
    out = run_script(
        """
        import resource, sys, gevent, greenredis
        gevent.sleep(0)  # the hub and its own pipes exist before the descriptors run out
        r = greenredis.Redis(unix_socket_path=sys.argv[1])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(open("/dev/null"))
        except OSError:
            pass
        try:
            r.cmd(["PING"])
        except greenredis.ConnectionError as e:
            print("ConnectionError", e)
        """,
        server.unix_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ConnectionError") and "Too many open files" in out.stdout


def test_12_blocking_connections_are_capped(redis_server):
    r = greenredis.Redis(port=redis_server.port, max_blocking=3)
    r.cmd(["PING"])
    base = _clients(redis_server.port)
    waiting = [gevent.spawn(r.cmd, ["BLPOP", f"q{i}", 0]) for i in range(6)]
    gevent.sleep(0.3)
    assert _clients(redis_server.port) == base + 3  # the other three wait for a slot
    with pytest.raises(greenredis.TimeoutError, match="max_blocking"):
        r.cmd(["BLPOP", "q9", 0], timeout=0.2)
    for i in range(6):
        r.cmd(["RPUSH", f"q{i}", i])
    gevent.joinall(waiting, raise_error=True, timeout=10)
    assert [w.value for w in waiting] == [[f"q{i}".encode(), str(i).encode()] for i in range(6)]
    r.close()


# -- 13: no way around the shared-connection guard ----------------------------------


class Verb(str, enum.Enum):
    SELECT = "SELECT"
    SUBSCRIBE = "SUBSCRIBE"


class Name(bytes):
    pass


def test_13_guard_normalises_the_command_name(r):
    for sneaky in (
        [memoryview(b"SUBSCRIBE"), "c"],
        [Verb.SUBSCRIBE, "c"],
        [Verb.SELECT, 1],
        [Name(b"multi")],
        [bytearray(b"Monitor")],
        ["CLIENT", memoryview(b"reply"), "off"],
    ):
        with pytest.raises(ValueError):
            r.cmd(sneaky)
        with pytest.raises(ValueError):
            r.transaction([sneaky])
    with pytest.raises(ValueError, match="blocks"):
        r.cmd([["GET", "a"], [memoryview(b"BLPOP"), "q", 0]])
    assert r.cmd([["ECHO", "a"], ["ECHO", "b"]]) == [b"a", b"b"]  # nobody got pub/sub replies


# -- 14: a username without a password ---------------------------------------------


def test_14_username_without_password_authenticates(make_server):
    server = make_server(users=["bob on nopass ~* &* +@all", "default off"])
    r = greenredis.Redis.from_url(f"redis://bob@127.0.0.1:{server.port}/0")
    assert r.cmd(["ACL", "WHOAMI"]) == b"bob"
    assert greenredis.Redis(port=server.port, username="bob").cmd(["PING"]) == b"PONG"
    r.close()


# -- 15: a connection the server closed while we were not looking --------------------


def test_15_a_connection_closed_while_idle_is_replaced_before_writing(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    assert r.cmd(["PING"]) == b"PONG"
    sock = r._shared._t.sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    first_id = r.cmd(["CLIENT", "ID"])
    redispy.Redis(port=redis_server.port).client_kill_filter(_id=first_id)
    time.sleep(1.5)  # not yielding: the close goes unnoticed until the next call
    assert r.cmd(["INCR", "n"]) == 1  # sent once, on a new connection
    assert r.cmd(["CLIENT", "ID"]) != first_id
    assert r.cmd(["GET", "n"]) == b"1"
    r.close()


def test_15_health_check_interval_pings_an_idle_connection(redis_server):
    r = greenredis.Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/0?health_check_interval=0.2")
    r.cmd(["PING"])
    check = redispy.Redis(port=redis_server.port)
    before = check.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
    gevent.sleep(0.4)
    r.cmd(["GET", "x"])
    assert check.info("commandstats")["cmdstat_ping"]["calls"] == before + 1
    r.close()


# -- 16: a call from another OS thread is refused before it is sent -------------------


def test_16_a_call_from_another_thread_is_refused_before_sending(r):
    r.cmd(["SET", "n", 0])
    errors = []

    def other():
        try:
            r.cmd(["INCR", "n"])
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], RedisError) and "thread" in str(errors[0])
    assert r.cmd(["GET", "n"]) == b"0"  # nothing was sent
    fresh = greenredis.Redis(port=r.params.port)
    thread = threading.Thread(target=other_fresh, args=(fresh, errors))
    thread.start()
    thread.join()
    assert isinstance(errors[1], RedisError) and "thread" in str(errors[1])
    fresh.close()


def other_fresh(client, errors):
    try:
        client.cmd(["PING"])  # not even the first connect may happen from here
    except BaseException as e:
        errors.append(e)


# -- 17: bytes written count as progress for the watchdog -------------------------------


def _throttled_proxy(target_port, rate):
    """A TCP proxy that forwards client->server at ``rate`` bytes/s, with small buffers."""
    listener = gevent.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def pipe(src, dst, throttle):
        try:
            while True:
                data = src.recv(16 << 10)
                if not data:
                    break
                dst.sendall(data)
                if throttle:
                    gevent.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            dst.close()

    def serve():
        while True:
            client, _ = listener.accept()
            upstream = gevent.socket.create_connection(("127.0.0.1", target_port))
            gevent.spawn(pipe, client, upstream, True)
            gevent.spawn(pipe, upstream, client, False)

    return listener, gevent.spawn(serve)


def test_17_a_slow_upload_is_progress_not_death(redis_server):
    listener, server = _throttled_proxy(redis_server.port, rate=2 << 20)
    try:
        r = greenredis.Redis(port=listener.getsockname()[1], dead_after=0.8)
        r.cmd(["PING"])
        r._shared._t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 10)
        value = b"u" * (5 << 20)  # ~2.5 s at 2 MiB/s, three times dead_after
        assert r.cmd(["SET", "upload", value], timeout=30) == b"OK"
        assert r.cmd(["STRLEN", "upload"]) == len(value)
        r.close()
    finally:
        server.kill()
        listener.close()


# -- friction: error classes -----------------------------------------------------------


def test_error_classes_at_connect_and_in_transactions(make_server, r):
    server = make_server(password="pw", args=["--maxclients", "1"])
    with pytest.raises(AuthenticationError, match="WRONGPASS"):
        greenredis.Redis(port=server.port, password="nope").cmd(["PING"])
    holder = greenredis.Redis(port=server.port, password="pw")
    assert holder.cmd(["PING"]) == b"PONG"
    crowded = greenredis.Redis(port=server.port, password="pw")
    with pytest.raises(greenredis.ConnectionError, match="max number of clients"):
        crowded.cmd(["PING"])
    holder.close()
    with pytest.raises(ExecAbortError):
        r.transaction([["SET", "a", 1], ["SET"]])
    r.cmd(["SET", "w", 1])
    with r.dedicated() as c:
        c.cmd(["WATCH", "w"])
        r.cmd(["SET", "w", 2])
        with pytest.raises(WatchError):
            c.transaction([["SET", "w", 3]])
    assert r.cmd(["GET", "w"]) == b"2"


def test_error_classes_for_acl_and_replicas(make_server):
    server = make_server(users=["default on nopass ~* &* +@all", "ro on >pw ~* &* +@read"])
    with pytest.raises(NoPermissionError):
        greenredis.Redis(port=server.port, username="ro", password="pw").cmd(["SET", "x", 1])
    replica = make_server(replicaof=("127.0.0.1", server.port))
    with pytest.raises(greenredis.errors.ReadOnlyError):
        greenredis.Redis(port=replica.port).cmd(["SET", "x", 1])


# -- friction: small inputs and connection state ------------------------------------------


def test_empty_batch_bytearray_and_client_reply_any_case(r):
    assert r.cmd([]) == []
    assert r.cmd(["SET", bytearray(b"ba"), bytearray(b"val")]) == b"OK"
    assert r.cmd(["GET", memoryview(b"ba")]) == b"val"
    for command in (["client", "Reply", "Off"], ["CLIENT", "REPLY", "sKiP"]):
        with pytest.raises(ValueError, match="CLIENT REPLY"):
            r.cmd(command)
    assert r.cmd(["CLIENT", "REPLY", "On"]) == b"OK"
    assert r.cmd(["ECHO", "still paired"]) == b"still paired"


def test_connection_state_that_a_reconnect_would_drop_is_refused(r):
    for command in (
        ["AUTH", "x"],
        ["CLIENT", "TRACKING", "on"],
        ["client", "no-evict", "on"],
        ["CLIENT", "SETNAME", "x"],
    ):
        with pytest.raises(ValueError, match="cannot run on the shared connection"):
            r.cmd(command)
    with r.dedicated() as c:  # on a connection of its own it is the caller's state
        assert c.cmd(["CLIENT", "NO-EVICT", "on"]) == b"OK"
        assert c.cmd(["CLIENT", "SETNAME", "mine"]) == b"OK"


# -- friction: URL options and keywords redis-py users type --------------------------------


def test_url_options_and_keywords_of_redis_py():
    p = parse_url(
        "rediss://h:6380/1?socket_timeout=2&socket_connect_timeout=3&health_check_interval=10"
        "&ssl_cert_reqs=none&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_ca_certs=/ca.pem"
        "&ssl_check_hostname=false&client_name=web"
    )
    assert (p.timeout, p.connect_timeout, p.health_check_interval) == (2.0, 3.0, 10.0)
    assert (p.ssl_cert_reqs, p.ssl_certfile, p.ssl_keyfile, p.ssl_ca_certs) == (
        "none",
        "/c.pem",
        "/k.pem",
        "/ca.pem",
    )
    assert p.ssl_check_hostname is False and p.client_name == "web" and p.db == 1
    assert parse_url("rediss://h").ssl_check_hostname is True  # verify by default
    assert parse_url("redis://h", socket_timeout=4).timeout == 4
    with pytest.raises(ValueError, match="'sockettimeout'"):
        parse_url("redis://h?sockettimeout=1")
    with pytest.raises(ValueError, match="ssl_check_hostname"):
        parse_url("redis://h?ssl_check_hostname=maybe")
    with pytest.raises(TypeError, match="'ssl_verify'"):
        greenredis.Redis.from_url("redis://h", ssl_verify=True)
    r = greenredis.Redis(socket_timeout=1.5, socket_connect_timeout=0.5, ssl_cert_reqs="none")
    assert (r.timeout, r.params.connect_timeout, r.params.ssl_cert_reqs) == (1.5, 0.5, "none")


def test_subscription_logs_reconnect_failures_at_warning_rate_limited(redis_server, caplog):
    r = greenredis.Redis(port=redis_server.port, connect_timeout=0.3)
    sub = r.subscribe(*[f"channel-{i}" for i in range(1000)])
    assert len(repr(sub)) < 200 and "1000" in repr(sub)
    caplog.set_level(logging.DEBUG, logger="greenredis.client.pubsub")
    redis_server.kill()
    gevent.sleep(2.0)
    assert r._backoff.failures == 0  # its own backoff, not the shared client's
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    attempts = [rec for rec in caplog.records if "reconnect" in rec.getMessage()]
    assert len(attempts) >= 4  # it kept trying ...
    assert len(warnings) <= 2  # ... and said so once (plus "lost its connection")
    assert any("cannot reconnect" in w.getMessage() for w in warnings), [w.getMessage() for w in warnings]
    redis_server.start()
    assert sub.get(timeout=10) == (b"gap", None, None)
    assert any("reconnected" in rec.getMessage() for rec in caplog.records)
    sub.close()
    r.close()


def test_16_greenlets_of_a_monkey_patched_program_are_one_thread(redis_server):
    out = run_script(
        """
        from gevent import monkey; monkey.patch_all()
        import sys, threading, gevent, greenredis
        r = greenredis.Redis(port=int(sys.argv[1]))
        jobs = [gevent.spawn(r.cmd, ["ECHO", i]) for i in range(50)]
        gevent.joinall(jobs, raise_error=True)
        print(sum(int(j.value) for j in jobs))
        """,
        redis_server.port,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sum(range(50)))
