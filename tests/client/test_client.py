"""The pipelined client against real redis-servers."""

import enum
import gc
import random
import socket
import threading
import time

import gevent
import pytest
import redis as redispy

import greenredis
from greenredis.client import connection as connection_module
from greenredis.url import parse_url


def test_every_reply_type(r):
    assert r.cmd(["SET", "s", "abc"]) == b"OK"  # status
    assert r.cmd(["GET", "s"]) == b"abc"  # bulk
    assert r.cmd(["GET", "missing"]) is None  # nil bulk
    assert r.cmd(["INCR", "n"]) == 1  # integer
    assert r.cmd(["RPUSH", "l", "a", b"\x00\xff", 3, 1.5]) == 4  # str, bytes, int, float args
    assert r.cmd(["LRANGE", "l", 0, -1]) == [b"a", b"\x00\xff", b"3", b"1.5"]
    assert r.cmd(["LRANGE", "nothing", 0, -1]) == []  # empty array
    r.cmd(["XADD", "st", "1-1", "f", "v"])
    assert r.cmd(["XRANGE", "st", "-", "+"]) == [[b"1-1", [b"f", b"v"]]]  # nested arrays
    big = b"x" * (3 << 20)
    r.cmd(["SET", "big", big])
    assert r.cmd(["GET", "big"]) == big  # larger than one read
    with pytest.raises(greenredis.ReplyError, match="WRONGTYPE"):
        r.cmd(["LPUSH", "s", "x"])
    assert r.cmd(["EVAL", "return nil", 0]) is None
    assert r.cmd(["EVAL", "return {1, 'a', {2}}", 0]) == [1, b"a", [2]]


def test_batch_returns_errors_in_place(r):
    r.cmd(["SET", "one", "abc"])
    replies = r.cmd([["SET", "foo"], ["GET", "one"], ["LPUSH", "one", "x"], ["GET", "two"]])
    assert isinstance(replies[0], greenredis.ReplyError)
    assert "wrong number of arguments" in str(replies[0])
    assert replies[1] == b"abc"
    assert isinstance(replies[2], greenredis.ReplyError) and "WRONGTYPE" in str(replies[2])
    assert replies[3] is None
    assert r.cmd([["PING"]]) == [b"PONG"]


def test_bad_input_is_refused_and_the_connection_stays_usable(r):
    for bad, exc in [
        (["GET", None], TypeError),
        ("GET", TypeError),
        ([["GET", ["x"]]], TypeError),
        ([["GET", "a"], "GET"], TypeError),
        (["SET", "k", True], TypeError),
        (None, ValueError),
    ]:
        with pytest.raises(exc):
            r.cmd(bad)
    # A bad command inside a batch sends nothing of the batch.
    with pytest.raises(TypeError):
        r.cmd([["SET", "partial", "1"], ["SET", "x", None]])
    assert r.cmd(["EXISTS", "partial"]) == 0
    for refused in (["MULTI"], ["exec"], ["WATCH", "k"], ["SUBSCRIBE", "c"], ["SELECT", 1], ["MONITOR"]):
        with pytest.raises(ValueError, match="cannot run"):
            r.cmd(refused)
    with pytest.raises(ValueError, match="blocks"):
        r.cmd([["GET", "a"], ["BLPOP", "q", 0]])
    assert r.cmd(["PING"]) == b"PONG"


def test_int_and_float_subclasses_go_as_their_numbers_and_bools_are_refused(r):
    # as redis-py: an IntEnum is an int (it sends the number), a bool is a DataError
    class Level(enum.IntEnum):
        HIGH = 3

    class Code(int):
        def __str__(self):
            return "code"

    assert connection_module.pack(["SET", "k", Level.HIGH]) == connection_module.pack(["SET", "k", 3])
    assert r.cmd(["SET", "lvl", Level.HIGH]) == b"OK"
    assert r.cmd(["GET", "lvl"]) == b"3"
    assert r.cmd([["SET", "c", Code(7)], ["INCRBY", "c", Level.HIGH]]) == [b"OK", 10]
    for bad in (["SET", "k", True], [["SET", "k", "1"], ["SET", "k", False]]):
        with pytest.raises(greenredis.DataError, match="argument 2 of 'SET' is bool") as e:
            r.cmd(bad)
        assert isinstance(e.value, TypeError)  # what it raised before it had a name
    assert r.cmd(["GET", "k"]) is None  # nothing of the refused batch was sent


def test_client_reply_off_is_refused_everywhere(r):
    # The server would skip replies: every later caller would get its neighbour's.
    for command in (["CLIENT", "REPLY", "SKIP"], ["client", "reply", "off"]):
        with pytest.raises(ValueError, match="CLIENT REPLY"):
            r.cmd(command)
        with pytest.raises(ValueError, match="CLIENT REPLY"):
            r.cmd([["GET", "a"], command])
        with r.dedicated() as c:
            with pytest.raises(ValueError, match="CLIENT REPLY"):
                c.cmd(command)
    r.cmd(["SET", "a", "A"])
    assert r.cmd(["CLIENT", "REPLY", "ON"]) == b"OK"
    assert r.cmd([["GET", "a"], ["ECHO", "b"]]) == [b"A", b"b"]


def test_thousand_greenlets_each_get_their_own_replies(r):
    errors = []

    def worker(i):
        rnd = random.Random(i)
        key, counter, value = f"k:{i}", f"c:{i}", None
        total = 0
        for step in range(60):
            op = rnd.choice(("set", "get", "incr", "batch"))
            if op == "set":
                value = f"{i}:{step}:{rnd.random()}".encode()
                assert r.cmd(["SET", key, value]) == b"OK"
            elif op == "get":
                got = r.cmd(["GET", key])
                if got != value:
                    errors.append((i, got, value))
            elif op == "incr":
                by = rnd.randint(1, 9)
                total += by
                got = r.cmd(["INCRBY", counter, by])
                if got != total:
                    errors.append((i, got, total))
            else:
                got = r.cmd([["GET", key], ["INCRBY", counter, 0], ["ECHO", f"me:{i}"]])
                if got != [value, total, f"me:{i}".encode()]:
                    errors.append((i, got))
            gevent.sleep(0) if rnd.random() < 0.2 else None

    gevent.joinall([gevent.spawn(worker, i) for i in range(1000)], raise_error=True)
    assert errors == []


def test_transaction_is_atomic_under_concurrent_load(r):
    seen = []

    def incr_both():
        for _ in range(50):
            a, b = r.transaction([["INCR", "a"], ["INCR", "b"]])
            seen.append((a, b))

    def watcher():
        for _ in range(200):
            a, b = r.cmd([["GET", "a"], ["GET", "b"]])
            assert a == b  # a MULTI/EXEC is never split by other callers' commands
            gevent.sleep(0)

    jobs = [gevent.spawn(incr_both) for _ in range(40)] + [gevent.spawn(watcher) for _ in range(5)]
    gevent.joinall(jobs, raise_error=True)
    assert all(a == b for a, b in seen)
    assert r.cmd(["GET", "a"]) == b"2000"
    assert r.transaction([["SET", "t", "1"], ["GET", "t"]]) == [b"OK", b"1"]
    # An error at EXEC time stays in place; a refused command aborts the transaction.
    replies = r.transaction([["SET", "s", "x"], ["INCR", "s"], ["GET", "s"]])
    assert replies[0] == b"OK" and isinstance(replies[1], greenredis.ReplyError) and replies[2] == b"x"
    with pytest.raises(greenredis.ReplyError, match="EXECABORT"):
        r.transaction([["SET", "s", "y"], ["SET", "bad"]])
    assert r.cmd(["GET", "s"]) == b"x"


def test_blocking_commands_do_not_stall_other_callers(r):
    popped = gevent.spawn(r.cmd, ["BLPOP", "queue", 5])
    xread = gevent.spawn(r.cmd, ["XREAD", "BLOCK", 5000, "STREAMS", "stream", "$"])
    gevent.sleep(0.2)
    for i in range(100):  # the shared connection keeps serving while both block
        assert r.cmd(["ECHO", i]) == str(i).encode()
    assert not popped.ready() and not xread.ready()
    r.cmd(["RPUSH", "queue", "job"])
    r.cmd(["XADD", "stream", "*", "f", "v"])
    assert popped.get(timeout=5) == [b"queue", b"job"]
    assert xread.get(timeout=5)[0][0] == b"stream"


def test_blocking_commands_outlive_the_dead_connection_watchdog(redis_server):
    r = greenredis.Redis(port=redis_server.port, dead_after=0.3)
    popped = gevent.spawn(r.cmd, ["BLPOP", "slow", 2])
    gevent.sleep(1.0)  # silence on a blocking command's connection is not death
    assert not popped.ready()
    r.cmd(["RPUSH", "slow", "late"])
    assert popped.get(timeout=5) == [b"slow", b"late"]
    r.close()


def test_close_ends_blocking_calls_in_flight(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    waiting = [gevent.spawn(r.cmd, ["BLPOP", f"never{i}", 0]) for i in range(3)]
    gevent.sleep(0.3)
    r.close()
    gevent.joinall(waiting, timeout=5)
    assert all(isinstance(w.exception, greenredis.ConnectionError) for w in waiting)
    check = redispy.Redis(port=redis_server.port)
    deadline = gevent.get_hub().loop.now() + 5
    while check.info("clients")["blocked_clients"] and gevent.get_hub().loop.now() < deadline:
        gevent.sleep(0.05)
    assert check.info("clients")["blocked_clients"] == 0


def test_timeout_then_late_reply_never_reaches_another_caller(r):
    with pytest.raises(greenredis.TimeoutError):
        r.cmd(["DEBUG", "SLEEP", "0.5"], timeout=0.05)
    # These are pipelined behind the sleeping command; each must get its own reply.
    results = gevent.joinall([gevent.spawn(r.cmd, ["ECHO", f"msg{i}"]) for i in range(20)])
    assert [g.get() for g in results] == [f"msg{i}".encode() for i in range(20)]
    client = greenredis.Redis(port=r.params.port, timeout=0.05)
    with pytest.raises(greenredis.TimeoutError):
        client.cmd(["DEBUG", "SLEEP", "0.3"])
    assert client.cmd(["ECHO", "after"], timeout=5) == b"after"
    with pytest.raises(greenredis.TimeoutError):
        client.cmd([["DEBUG", "SLEEP", "0.3"], ["ECHO", "batched"]])
    assert client.cmd([["ECHO", "a"], ["ECHO", "b"]], timeout=5) == [b"a", b"b"]
    client.close()


def test_server_killed_under_load_fails_every_in_flight_caller(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    r.cmd(["SET", "counter", 0])
    outcomes = []

    def worker():
        try:
            while True:
                r.cmd(["INCR", "counter"])
        except greenredis.ConnectionError:
            outcomes.append("connection error")
        except Exception as e:
            outcomes.append(repr(e))

    workers = [gevent.spawn(worker) for _ in range(300)]
    gevent.sleep(0.3)
    redis_server.kill()
    gevent.joinall(workers, timeout=10)
    assert all(w.ready() for w in workers), "a caller hung after the server died"
    assert outcomes == ["connection error"] * 300
    # The next command reconnects (after a short backoff) and no write was replayed.
    redis_server.start()
    for _ in range(100):
        try:
            r.cmd(["SET", "alive", 1])
            break
        except greenredis.ConnectionError:
            gevent.sleep(0.05)
    assert r.cmd(["GET", "alive"]) == b"1"
    assert r.cmd(["GET", "counter"]) is None  # fresh server: nothing replayed into it
    r.close()


def test_silent_server_is_declared_dead(redis_server):
    r = greenredis.Redis(port=redis_server.port, dead_after=0.5)
    r.cmd(["PING"])
    redis_server.pause()
    try:
        jobs = [gevent.spawn(r.cmd, ["PING"]) for _ in range(10)]
        gevent.joinall(jobs, timeout=10)
        assert all(isinstance(j.exception, greenredis.ConnectionError) for j in jobs)
        assert "declared dead" in str(jobs[0].exception)
    finally:
        redis_server.resume()
    assert r.cmd(["PING"]) == b"PONG"  # a new connection
    r.close()


def test_write_buffer_is_bounded(redis_server, monkeypatch):
    monkeypatch.setattr(connection_module, "MAX_WRITE_BUFFER", 64 << 10)
    r = greenredis.Redis(port=redis_server.port)
    r.cmd(["PING"])
    conn = r._shared
    redis_server.pause()  # nothing drains: the socket buffers fill, then ours must stop growing
    value = b"v" * 10000
    peak = []
    jobs = [gevent.spawn(r.cmd, ["SET", f"k{i}", value]) for i in range(2000)]
    for _ in range(20):
        gevent.sleep(0.02)
        peak.append(conn._wbytes)
    waiting = sum(not j.ready() for j in jobs)
    redis_server.resume()
    gevent.joinall(jobs, raise_error=True)
    assert waiting == 2000
    assert max(peak) <= (64 << 10) + 2 * 10100  # the bound plus the commands let through
    assert r.cmd(["DBSIZE"]) == 2000
    r.close()


def test_a_burst_of_callers_leaves_nothing_behind(r):
    r.cmd(["SET", "k", "v"])
    gevent.joinall([gevent.spawn(r.cmd, ["GET", "k"]) for _ in range(100000)], raise_error=True)
    conn = r._shared
    assert len(conn._pending) == 0 and conn._wbuf == [] and conn._wbytes == 0
    gc.collect()
    from gevent.hub import Waiter

    assert sum(isinstance(o, Waiter) for o in gc.get_objects()) < 50


def test_auth_with_password_and_acl_user(make_server):
    server = make_server(password="s3cret", users=["alice on >wonder ~app:* +@all"])
    assert greenredis.Redis.from_url(server.url).cmd(["PING"]) == b"PONG"
    alice = greenredis.Redis.from_url(f"redis://alice:wonder@127.0.0.1:{server.port}/0")
    assert alice.cmd(["SET", "app:x", "1"]) == b"OK"
    with pytest.raises(greenredis.ReplyError, match="NOPERM"):
        alice.cmd(["SET", "other", "1"])
    assert alice.cmd(["ACL", "WHOAMI"]) == b"alice"
    with pytest.raises(greenredis.ConnectionError, match="WRONGPASS"):
        greenredis.Redis(port=server.port, password="wrong").cmd(["PING"])
    with pytest.raises(greenredis.ReplyError, match="NOAUTH"):
        greenredis.Redis(port=server.port).cmd(["PING"])


def test_db_and_client_name_are_set_before_any_command(redis_server):
    r = greenredis.Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/3?client_name=tester")
    jobs = [gevent.spawn(r.cmd, ["SET", f"k{i}", i]) for i in range(50)]  # racing the handshake
    gevent.joinall(jobs, raise_error=True)
    assert r.cmd(["CLIENT", "GETNAME"]) == b"tester"
    check = redispy.Redis(port=redis_server.port, db=3)
    assert check.dbsize() == 50 and redispy.Redis(port=redis_server.port).dbsize() == 0


def test_unix_socket_and_url_parsing(make_server, monkeypatch):
    server = make_server(unixsocket=True)
    r = greenredis.Redis.from_url(f"unix://{server.unix_path}?db=2")
    assert r.cmd(["SET", "u", "1"]) == b"OK"
    assert redispy.Redis(port=server.port, db=2).get("u") == b"1"
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{server.port}/2")
    assert greenredis.Redis.from_url().cmd(["GET", "u"]) == b"1"
    p = parse_url("rediss://bob:p%40ss@example.com:7000/5?timeout=1.5")
    assert (p.ssl, p.username, p.password, p.host, p.port, p.db, p.timeout) == (
        True,
        "bob",
        "p@ss",
        "example.com",
        7000,
        5,
        1.5,
    )
    for bad in ("http://x", "redis://h/notanumber", "redis://h?bogus=1", "unix://"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_tls(make_server):
    server = make_server(tls=True)
    r = greenredis.Redis.from_url(server.url, ssl_ca_certs=server.ca_file)
    assert r.cmd(["SET", "secure", "yes"]) == b"OK"
    big = b"z" * (1 << 20)
    jobs = [gevent.spawn(r.cmd, ["SET", f"t{i}", big]) for i in range(8)]
    gevent.joinall(jobs, raise_error=True)
    assert r.cmd([["GET", "t7"], ["GET", "secure"]]) == [big, b"yes"]
    with pytest.raises(greenredis.ConnectionError):  # plain text to a TLS port
        greenredis.Redis(port=server.port, connect_timeout=1).cmd(["PING"], timeout=1)


def test_dedicated_connection_for_watch(r):
    r.cmd(["SET", "balance", 10])
    with r.dedicated() as c:
        c.cmd(["WATCH", "balance"])
        value = int(c.cmd(["GET", "balance"]))
        r.cmd(["SET", "balance", 99])  # someone else writes: the transaction must fail
        with pytest.raises(greenredis.errors.WatchError, match="WATCH"):
            c.transaction([["SET", "balance", value - 1]])
    assert r.cmd(["GET", "balance"]) == b"99"
    with r.dedicated() as c:
        c.cmd(["WATCH", "balance"])
        assert c.transaction([["DECR", "balance"]]) == [98]


def test_garbage_from_the_server_is_a_protocol_error():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    r = greenredis.Redis(port=listener.getsockname()[1])
    with pytest.raises(greenredis.ProtocolError, match="not RESP"):
        r.cmd(["PING"], timeout=5)
    assert r._shared.error is not None  # the connection was reset
    listener.close()


def test_monitor_sees_commands(r):
    with r.monitor() as mon:
        r.cmd(["SET", "watched", "1"])
        line = mon.get(timeout=5)
        while line is not None and b"watched" not in line:
            line = mon.get(timeout=5)
        assert line is not None and b'"SET" "watched" "1"' in line


def test_a_stalled_process_does_not_take_a_reply_in_its_socket_for_a_dead_server(redis_server):
    # after a stall (CPU starvation) the loop runs the dead-connection timer before the ready
    # socket: a loaded run declared a connection dead with 64949 replies waiting in it
    r = greenredis.Redis(port=redis_server.port, dead_after=0.4)
    r.cmd(["SET", "k", "v"])
    g = gevent.spawn(r.cmd, ["GET", "k"])
    gevent.sleep(0)  # g sends its GET
    time.sleep(1.0)  # the whole process stalls (not gevent's sleep): the reply waits in the socket
    assert g.get(timeout=5) == b"v"
    r.close()
