"""Test helpers: read a real master's replication stream, and compare datasets.

``MasterStream`` connects to a redis-server like a replica does (PSYNC ? -1), skips the
initial RDB and hands out the propagated commands, so tests apply exactly what a master
sends. ``assert_same_dataset`` compares a Keyspace with a live server key by key.
"""

import socket
import time

import hiredis
import redis
from waiting import wait_for

from greenredis.replication.keyspace import Stream, ZSet, type_name


class MasterStream:
    """A fake replica's link: ``commands()`` returns the argv lists propagated so far."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n")
        self.buf = b""
        line = self._line()
        while not line.startswith(b"+FULLRESYNC"):  # "\n" keepalives may come first
            line = self._line()
        self.start_offset = int(line.split()[2])
        line = self._line()
        while not line.startswith(b"$"):
            line = self._line()
        if line.startswith(b"$EOF:"):
            raise AssertionError("diskless sync: set repl-diskless-sync no on the master")
        size = int(line[1:])
        while len(self.buf) < size:
            self._recv()
        self.rdb = self.buf[:size]
        self.buf = self.buf[size:]
        self.reader = hiredis.Reader()
        self.received = 0  # stream bytes after the RDB

    def _recv(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise AssertionError("master closed the replication link")
        self.buf += data

    def _line(self):
        while b"\n" not in self.buf:
            self._recv()
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def _feed(self, data):
        self.received += len(data)
        self.reader.feed(data)

    def commands(self, master, timeout=20.0):
        """Every command propagated until now: reads until our offset is the master's."""
        if self.buf:
            self._feed(self.buf)
            self.buf = b""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            target = _info_int(master, "master_repl_offset") - self.start_offset
            while self.received < target:
                self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                data = self.sock.recv(1 << 16)
                if not data:
                    raise AssertionError("master closed the replication link")
                self._feed(data)
            while True:
                cmd = self.reader.gets()
                if cmd is False:
                    break
                out.append(cmd)
            if self.received >= _info_int(master, "master_repl_offset") - self.start_offset:
                return out
            if time.monotonic() > deadline:
                raise AssertionError("replication stream did not catch up")

    def close(self):
        self.sock.close()


def _info(r, section="replication"):
    text = r.execute_command("INFO", section)
    text = text.decode() if isinstance(text, bytes) else text
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _info_int(r, field):
    return int(_info(r)[field])


def raw_client(port, db=0):
    """A redis-py client that returns replies as the server sent them (no callbacks)."""
    r = redis.Redis(port=port, db=db, protocol=2)
    r.response_callbacks.clear()
    return r


def apply_all(applier, commands):
    for argv in commands:
        applier.apply(argv)


def _visible(db, now):
    return {k: v for k, v in db.data.items() if db.expires.get(k, now + 1) > now}


def _pairs(flat):
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def assert_same_dataset(keyspace, r, dbs=range(16), replica=None):
    """Compare every key of ``keyspace`` with the server behind redis-py client ``r``.

    ``replica``: a client of a real Redis replica of the same master, to compare what
    only a replica shows (a group's entries-read, which XCLAIM does not propagate).
    """
    for index in dbs:
        r.execute_command("SELECT", index)
        if replica is not None:
            replica.execute_command("SELECT", index)
        now = int(time.time() * 1000)
        local = _visible(keyspace.db(index), now)
        remote = set(r.execute_command("KEYS", "*"))
        # A key whose TTL just ran out may be gone on one side only.
        db = keyspace.db(index)
        near = {k for k, t in db.expires.items() if abs(t - now) < 2000}
        assert set(local) - near == remote - near, (index, sorted(set(local) ^ remote)[:10])
        for key in remote:
            if key not in local:
                continue
            _assert_same_value(index, key, local[key], r, replica)
            pttl = r.execute_command("PTTL", key)
            expire = db.expires.get(key)
            if pttl == -1:
                assert expire is None, (index, key, expire)
            elif pttl >= 0:
                assert expire is not None, (index, key, pttl)
                assert abs((expire - now) - pttl) < 1000, (index, key, expire - now, pttl)


def _assert_same_value(index, key, value, r, replica):
    where = (index, key)
    kind = r.execute_command("TYPE", key)
    assert type_name(value) == kind.decode(), (where, type_name(value), kind)
    if kind == b"string":
        assert value == r.execute_command("GET", key), where
    elif kind == b"list":
        assert list(value) == r.execute_command("LRANGE", key, 0, -1), where
    elif kind == b"set":
        assert value == set(r.execute_command("SMEMBERS", key)), where
    elif kind == b"hash":
        got = r.execute_command("HGETALL", key)
        got = dict(got) if isinstance(got, dict) else dict(_pairs(got))
        assert value == got, where
    elif kind == b"zset":
        got = r.execute_command("ZRANGE", key, 0, -1, "WITHSCORES")
        got = [(m, float(s)) for m, s in (got if got and isinstance(got[0], tuple) else _pairs(got))]
        assert isinstance(value, ZSet)
        assert value.ordered() == got, (where, value.ordered()[:5], got[:5])
    elif kind == b"stream":
        _assert_same_stream(where, key, value, r, replica)
    else:
        raise AssertionError(f"unexpected type {kind!r}")


def _assert_same_stream(where, key, s, r, replica):
    assert isinstance(s, Stream)
    got = r.execute_command("XRANGE", key, "-", "+")
    assert [(sid.encode(), [x for fv in fields for x in fv]) for sid, fields in s.entries.items()] == [
        (sid, list(fields)) for sid, fields in got
    ], where
    info = _pairs(r.execute_command("XINFO", "STREAM", key))
    info = {k.decode(): v for k, v in info}
    assert info["length"] == len(s), where
    assert info["last-generated-id"] == s.last_id.encode(), where
    assert info["max-deleted-entry-id"] == s.max_deleted_id.encode(), where
    assert info["entries-added"] == s.entries_added, where
    assert info["recorded-first-entry-id"] == s.first_id.encode(), where
    groups = r.execute_command("XINFO", "GROUPS", key)
    assert len(groups) == len(s.groups), where
    for g in groups:
        g = {k.decode(): v for k, v in _pairs(g)}
        group = s.groups[g["name"]]
        assert g["last-delivered-id"] == group.last_id.encode(), (where, g, group)
        assert g["pending"] == len(group.pending), (where, g)
        # Consumers are compared with the replica: a master does not propagate the creation
        # of a consumer by an XREADGROUP that read nothing.
        if replica is not None:
            consumers = replica.execute_command("XINFO", "CONSUMERS", key, g["name"])
            assert sorted(dict(_pairs(c))[b"name"] for c in consumers) == sorted(group.consumers), where
            for c in consumers:
                c = {k.decode(): v for k, v in _pairs(c)}
                consumer = group.consumers[c["name"]]
                assert c["pending"] == len(consumer.pending), (where, c)
        for name, consumer in group.consumers.items():
            assert sorted(consumer.pending) == sorted(
                sid for sid, p in group.pending.items() if p.consumer == name
            ), where
        if replica is not None:
            rg = {
                k.decode(): v
                for k, v in _pairs(
                    next(
                        x
                        for x in replica.execute_command("XINFO", "GROUPS", key)
                        if dict(_pairs(x))[b"name"] == g["name"]
                    )
                )
            }
            expected = -1 if rg["entries-read"] is None else rg["entries-read"]
            assert group.entries_read == expected, (where, group.entries_read, rg)


# ---------------------------------------------------------------------------
# The tests: a real master's replication stream, applied and compared
# ---------------------------------------------------------------------------

import random  # noqa: E402
import threading  # noqa: E402
from collections import deque  # noqa: E402

import pytest  # noqa: E402

from greenredis.replication.applier import Applier  # noqa: E402

LIB = b"""#!lua name=applib
redis.register_function('push2', function(keys, args)
  redis.call('LPUSH', keys[1], args[1])
  return redis.call('INCRBYFLOAT', keys[2], '0.1')
end)
"""

SCRIPT = """
local n = redis.call('SCARD', KEYS[1])
redis.call('SPOP', KEYS[1])
redis.call('INCRBYFLOAT', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1], 'EX', 500)
redis.call('XADD', KEYS[4], '*', 'n', n)
return n
"""


@pytest.fixture
def master(make_server):
    server = make_server(args=["--repl-diskless-sync", "no"])
    r = raw_client(server.port)
    yield server, r
    r.close()


def _stream(server):
    link = MasterStream(server.port)
    return link


def _values(rnd):
    return rnd.choice(
        [b"1", b"2", b"17", b"-5", b"3.5", b"abc", b"zz", b"", b"\x00\xff", b"x" * rnd.randint(1, 40)]
    )


class Workload:
    """Random commands of every type through redis-py, errors ignored (not propagated)."""

    def __init__(self, r, seed):
        self.r = r
        self.rnd = random.Random(seed)
        self.n = 0

    def k(self, prefix, n=5):
        return f"{prefix}:{self.rnd.randint(0, n)}"

    def any_key(self):
        return self.k(self.rnd.choice(["s", "l", "st", "h", "z", "x", "g"]))

    def v(self):
        return _values(self.rnd)

    def run(self, count):
        ops = [m for m in dir(self) if m.startswith("op_")]
        weights = [getattr(self, m).__doc__ and int(getattr(self, m).__doc__) or 3 for m in ops]
        for _ in range(count):
            name = self.rnd.choices(ops, weights)[0]
            try:
                getattr(self, name)()
            except redis.ResponseError:
                pass
            self.n += 1

    def x(self, *args):
        return self.r.execute_command(*args)

    # strings
    def op_set(self):
        """8"""
        rnd = self.rnd
        extra = rnd.choice(
            [
                [],
                ["EX", rnd.randint(100, 900)],
                ["PX", rnd.randint(100000, 900000)],
                ["EXAT", int(time.time()) + 500],
                ["PXAT", int(time.time() * 1000) + 400000],
                ["KEEPTTL"],
                ["NX"],
                ["XX"],
                ["GET"],
                ["XX", "GET", "KEEPTTL"],
                ["PX", rnd.randint(1, 30)],
            ]
        )
        self.x("SET", self.k("s"), self.v(), *extra)

    def op_setmisc(self):
        rnd = self.rnd
        c = rnd.randint(0, 6)
        if c == 0:
            self.x("SETNX", self.k("s"), self.v())
        elif c == 1:
            self.x("SETEX", self.k("s"), rnd.randint(100, 900), self.v())
        elif c == 2:
            self.x("PSETEX", self.k("s"), rnd.randint(100000, 900000), self.v())
        elif c == 3:
            self.x("MSET", self.k("s"), self.v(), self.k("s"), self.v())
        elif c == 4:
            self.x("MSETNX", self.k("s"), self.v(), self.k("s"), self.v())
        elif c == 5:
            self.x("GETSET", self.k("s"), self.v())
        else:
            self.x("GETDEL", self.k("s"))

    def op_getex(self):
        self.x(
            "GETEX",
            self.k("s"),
            *self.rnd.choice([["EX", 300], ["PERSIST"], ["PXAT", int(time.time() * 1000) + 99000]]),
        )

    def op_counters(self):
        """6"""
        rnd = self.rnd
        c = rnd.randint(0, 5)
        key = self.k("s")
        if c == 0:
            self.x("INCR", key)
        elif c == 1:
            self.x("DECR", key)
        elif c == 2:
            self.x("INCRBY", key, rnd.randint(-100, 100))
        elif c == 3:
            self.x("DECRBY", key, rnd.randint(-100, 100))
        else:
            self.x("INCRBYFLOAT", key, rnd.choice(["0.1", "1.5", "-2.25", "1e3", "3"]))

    def op_bytes(self):
        """4"""
        rnd = self.rnd
        c = rnd.randint(0, 4)
        key = self.k("s")
        if c == 0:
            self.x("APPEND", key, self.v())
        elif c == 1:
            self.x("SETRANGE", key, rnd.randint(0, 20), self.v())
        elif c == 2:
            self.x("SETBIT", key, rnd.randint(0, 100), rnd.randint(0, 1))
        elif c == 3:
            self.x(
                "BITFIELD",
                key,
                "OVERFLOW",
                rnd.choice(["WRAP", "SAT", "FAIL"]),
                "INCRBY",
                rnd.choice(["i5", "u4", "i8", "u63", "i64"]),
                rnd.choice(["#1", "3", "100"]),
                rnd.randint(-40, 40),
                "SET",
                "u8",
                rnd.randint(0, 30),
                rnd.randint(-300, 300),
                "GET",
                "i4",
                0,
            )
        else:
            self.x(
                "BITOP",
                rnd.choice(["AND", "OR", "XOR", "NOT"]),
                key,
                self.k("s"),
                *([] if rnd.random() < 0.5 else [self.k("s")]),
            )

    # keys
    def op_del(self):
        self.x(self.rnd.choice(["DEL", "UNLINK"]), self.any_key(), self.any_key())

    def op_expire(self):
        """5"""
        rnd = self.rnd
        c = rnd.randint(0, 6)
        key = self.any_key()
        flags = rnd.choice([[], [], ["NX"], ["XX"], ["GT"], ["LT"]])
        if c == 0:
            self.x("EXPIRE", key, rnd.randint(100, 900), *flags)
        elif c == 1:
            self.x("PEXPIRE", key, rnd.randint(100000, 900000), *flags)
        elif c == 2:
            self.x("EXPIREAT", key, int(time.time()) + rnd.randint(100, 900), *flags)
        elif c == 3:
            self.x("PEXPIREAT", key, int(time.time() * 1000) + rnd.randint(100000, 900000), *flags)
        elif c == 4:
            self.x("PERSIST", key)
        elif c == 5:
            self.x("EXPIRE", key, rnd.choice([-1, 0]))  # propagated as DEL
        else:
            self.x("PEXPIRE", key, rnd.randint(1, 20))  # expires soon: DEL comes later

    def op_rename(self):
        rnd = self.rnd
        c = rnd.randint(0, 4)
        if c == 0:
            self.x("RENAME", self.any_key(), self.any_key())
        elif c == 1:
            self.x("RENAMENX", self.any_key(), self.any_key())
        elif c == 2:
            self.x(
                "COPY",
                self.any_key(),
                self.any_key(),
                *rnd.choice([[], ["REPLACE"], ["DB", 1, "REPLACE"], ["DB", 2]]),
            )
        elif c == 3:
            self.x("MOVE", self.any_key(), rnd.choice([1, 2]))
        else:
            key = self.any_key()
            dump = self.x("DUMP", key)
            if dump is not None:
                self.x(
                    "RESTORE",
                    self.any_key(),
                    rnd.choice([0, 500000]),
                    dump,
                    "REPLACE",
                    *rnd.choice([[], ["ABSTTL"], ["IDLETIME", 10], ["FREQ", 5]])[:0],
                )

    def op_db(self):
        """1"""
        rnd = self.rnd
        c = rnd.randint(0, 20)
        if c == 0:
            self.x("SWAPDB", 0, rnd.choice([1, 2]))
        elif c == 1:
            r2 = raw_client(self.r.connection_pool.connection_kwargs["port"], 2)
            r2.execute_command("FLUSHDB")
            r2.close()
        else:
            r1 = raw_client(self.r.connection_pool.connection_kwargs["port"], rnd.choice([1, 2]))
            r1.execute_command("SET", self.k("s"), self.v())
            r1.execute_command("LPUSH", self.k("l"), self.v())
            r1.close()

    # lists
    def op_push(self):
        """8"""
        rnd = self.rnd
        self.x(
            rnd.choice(["LPUSH", "RPUSH", "LPUSHX", "RPUSHX"]),
            self.k("l"),
            *[self.v() for _ in range(rnd.randint(1, 4))],
        )

    def op_listedit(self):
        """5"""
        rnd = self.rnd
        c = rnd.randint(0, 5)
        key = self.k("l")
        if c == 0:
            self.x("LSET", key, rnd.randint(-3, 3), self.v())
        elif c == 1:
            self.x("LINSERT", key, rnd.choice(["BEFORE", "AFTER"]), self.v(), self.v())
        elif c == 2:
            self.x("LREM", key, rnd.randint(-2, 2), self.v())
        elif c == 3:
            self.x("LTRIM", key, rnd.randint(-5, 3), rnd.randint(-5, 8))
        elif c == 4:
            self.x(rnd.choice(["LPOP", "RPOP"]), key, *rnd.choice([[], [rnd.randint(0, 3)]]))
        else:
            self.x("LMOVE", key, self.k("l"), rnd.choice(["LEFT", "RIGHT"]), rnd.choice(["LEFT", "RIGHT"]))

    def op_listblock(self):
        rnd = self.rnd
        c = rnd.randint(0, 5)
        if c == 0:
            self.x(rnd.choice(["BLPOP", "BRPOP"]), self.k("l"), self.k("l"), "0.01")
        elif c == 1:
            self.x("BLMOVE", self.k("l"), self.k("l"), "LEFT", "RIGHT", "0.01")
        elif c == 2:
            self.x("BRPOPLPUSH", self.k("l"), self.k("l"), "0.01")
        elif c == 3:
            self.x(
                "LMPOP",
                2,
                self.k("l"),
                self.k("l"),
                rnd.choice(["LEFT", "RIGHT"]),
                "COUNT",
                rnd.randint(1, 3),
            )
        elif c == 4:
            self.x("BLMPOP", "0.01", 1, self.k("l"), "RIGHT")
        else:
            self.x("RPOPLPUSH", self.k("l"), self.k("l"))

    # sets
    def op_sets(self):
        """7"""
        rnd = self.rnd
        c = rnd.randint(0, 6)
        key = self.k("st")
        if c <= 1:
            self.x("SADD", key, *[self.v() for _ in range(rnd.randint(1, 5))])
        elif c == 2:
            self.x("SREM", key, self.v(), self.v())
        elif c == 3:
            self.x("SMOVE", key, self.k("st"), self.v())
        elif c == 4:
            self.x("SPOP", key, *rnd.choice([[], [1], [2], [10]]))
        elif c == 5:
            self.x(rnd.choice(["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]), self.k("st"), key, self.k("st"))
        else:
            self.x("SRANDMEMBER", key, 2)

    # hashes
    def op_hashes(self):
        """6"""
        rnd = self.rnd
        c = rnd.randint(0, 5)
        key = self.k("h")
        f = rnd.choice(["a", "b", "c", "n", "f"])
        if c <= 1:
            self.x("HSET", key, f, self.v(), *rnd.choice([[], ["b", self.v()]]))
        elif c == 2:
            self.x("HSETNX", key, f, self.v())
        elif c == 3:
            self.x("HDEL", key, f, "c")
        elif c == 4:
            self.x("HINCRBY", key, "n", rnd.randint(-9, 9))
        else:
            self.x("HINCRBYFLOAT", key, "f", rnd.choice(["0.1", "2.5", "-1.3e2"]))

    # sorted sets
    def op_zadd(self):
        """7"""
        rnd = self.rnd
        flags = rnd.choice([[], [], ["NX"], ["XX"], ["GT"], ["LT"], ["CH"], ["XX", "GT", "CH"]])
        if rnd.random() < 0.2:
            self.x(
                "ZADD", self.k("z"), *flags, "INCR", rnd.choice(["1.5", "-2", "0.1"]), rnd.choice("abcdef")
            )
            return
        pairs = []
        for _ in range(rnd.randint(1, 4)):
            pairs += [
                rnd.choice(["1", "2.5", "-3", "0.1", "0.2", "inf", "-inf", "1e10", "7"]),
                rnd.choice("abcdefg"),
            ]
        self.x("ZADD", self.k("z"), *flags, *pairs)

    def op_zedit(self):
        """6"""
        rnd = self.rnd
        c = rnd.randint(0, 9)
        key = self.k("z")
        if c == 0:
            self.x("ZINCRBY", key, rnd.choice(["0.1", "2", "-0.7"]), rnd.choice("abcdefg"))
        elif c == 1:
            self.x("ZREM", key, rnd.choice("abcdefg"), rnd.choice("abcdefg"))
        elif c == 2:
            self.x(
                "ZREMRANGEBYSCORE", key, rnd.choice(["-inf", "(0", "1"]), rnd.choice(["+inf", "(2.5", "2.5"])
            )
        elif c == 3:
            self.x("ZREMRANGEBYRANK", key, rnd.randint(-3, 2), rnd.randint(-2, 3))
        elif c == 4:
            self.x("ZREMRANGEBYLEX", key, rnd.choice(["-", "[b", "(c"]), rnd.choice(["+", "[d", "(e"]))
        elif c == 5:
            self.x(rnd.choice(["ZPOPMIN", "ZPOPMAX"]), key, *rnd.choice([[], [2]]))
        elif c == 6:
            self.x(rnd.choice(["BZPOPMIN", "BZPOPMAX"]), key, "0.01")
        elif c == 7:
            self.x("ZMPOP", 2, key, self.k("z"), rnd.choice(["MIN", "MAX"]), "COUNT", 2)
        elif c == 8:
            self.x(
                "GEOADD",
                self.k("z"),
                *rnd.choice([[], ["NX"], ["XX", "CH"]]),
                rnd.uniform(-180, 180),
                rnd.uniform(-85, 85),
                rnd.choice("abcdefg"),
            )
        else:
            self.x("BZMPOP", "0.01", 1, key, "MAX")

    def op_zstore(self):
        """4"""
        rnd = self.rnd
        c = rnd.randint(0, 3)
        if c == 0:
            self.x(
                rnd.choice(["ZUNIONSTORE", "ZINTERSTORE"]),
                self.k("z"),
                3,
                self.k("z"),
                self.k("z"),
                self.k("st"),
                *rnd.choice(
                    [
                        [],
                        ["WEIGHTS", 1, 2.5, -1],
                        ["AGGREGATE", "MIN"],
                        ["WEIGHTS", 0, 1, 2, "AGGREGATE", "MAX"],
                    ]
                ),
            )
        elif c == 1:
            self.x("ZDIFFSTORE", self.k("z"), 2, self.k("z"), self.k("z"))
        elif c == 2:
            self.x(
                "ZRANGESTORE",
                self.k("z"),
                self.k("z"),
                *rnd.choice(
                    [
                        [0, -1],
                        [1, 2],
                        ["-inf", "(2.5", "BYSCORE"],
                        ["+inf", "0", "BYSCORE", "REV", "LIMIT", 1, 2],
                        ["[a", "(f", "BYLEX"],
                        ["+", "-", "BYLEX", "REV", "LIMIT", 0, 3],
                    ]
                ),
            )
        else:
            src = rnd.choice([self.k("l"), self.k("st"), self.k("z")])
            self.x(
                "SORT",
                src,
                *rnd.choice(
                    [
                        ["ALPHA"],
                        ["ALPHA", "DESC", "LIMIT", 1, 3],
                        ["BY", "nosort"],
                        ["BY", "h:*->n"],
                        ["BY", "s:*", "GET", "#", "GET", "h:*->a"],
                        ["BY", "nosort", "DESC", "LIMIT", 0, 2],
                        [],
                    ]
                ),
                "STORE",
                self.k("l"),
            )

    def op_geo(self):
        """2"""
        rnd = self.rnd
        # Geo sets of their own: a member scored like "inf" has no position Redis can replay.
        src, dst = self.k("geo", 2), rnd.choice([self.k("geo", 2), self.k("z")])
        c = rnd.randint(0, 2)
        if c == 0:
            self.x("GEOADD", src, rnd.uniform(13, 14), rnd.uniform(52, 53), rnd.choice("abcdefg"))
        elif c == 1:
            self.x(
                "GEOSEARCHSTORE",
                dst,
                src,
                "FROMLONLAT",
                13.5,
                52.5,
                *rnd.choice([["BYRADIUS", 50, "km"], ["BYBOX", 80, 40, "km"]]),
                *rnd.choice([[], ["COUNT", 2], ["COUNT", 2, "ANY"], ["DESC", "STOREDIST"]]),
            )
        else:
            self.x(
                "GEORADIUSBYMEMBER",
                src,
                rnd.choice("abcdefg"),
                100,
                "km",
                rnd.choice(["STORE", "STOREDIST"]),
                dst,
            )

    # streams
    def op_xadd(self):
        """6"""
        rnd = self.rnd
        trim = rnd.choice(
            [
                [],
                [],
                ["MAXLEN", "~", 3],
                ["MAXLEN", "=", 8],
                ["MAXLEN", 6],
                ["MINID", "~", "0-0"],
                ["MAXLEN", "~", 2, "LIMIT", 1],
                ["NOMKSTREAM"],
            ]
        )
        self.x("XADD", self.k("x", 3), *trim, "*", "f", self.v(), *rnd.choice([[], ["g", self.v()]]))

    def op_xedit(self):
        """3"""
        rnd = self.rnd
        key = self.k("x", 3)
        c = rnd.randint(0, 4)
        if c == 0:
            self.x("XTRIM", key, *rnd.choice([["MAXLEN", 4], ["MAXLEN", "~", 1], ["MINID", "=", "1-0"]]))
        elif c == 1:
            ids = [e[0] for e in self.x("XRANGE", key, "-", "+")]
            if ids:
                self.x("XDEL", key, rnd.choice(ids), "1-1")
        elif c == 2:
            info = self.x("XINFO", "STREAM", key)
            last = dict(_pairs(info))[b"last-generated-id"]
            ms, seq = map(int, last.split(b"-"))
            self.x(
                "XSETID",
                key,
                f"{ms}-{seq + 5}",
                *rnd.choice([[], ["ENTRIESADDED", 100, "MAXDELETEDID", f"{ms}-{seq}"]]),
            )
        else:
            self.x("XADD", key, "*", "a", "b")

    def op_xgroup(self):
        """4"""
        rnd = self.rnd
        key = self.k("x", 3)
        g = rnd.choice(["g1", "g2"])
        c = rnd.randint(0, 6)
        if c <= 1:
            self.x(
                "XGROUP",
                "CREATE",
                key,
                g,
                rnd.choice(["$", "0", "0-0"]),
                *rnd.choice([["MKSTREAM"], [], ["ENTRIESREAD", 1]]),
            )
        elif c == 2:
            self.x("XGROUP", "SETID", key, g, rnd.choice(["$", "0"]), *rnd.choice([[], ["ENTRIESREAD", 0]]))
        elif c == 3:
            self.x("XGROUP", "CREATECONSUMER", key, g, rnd.choice(["c1", "c2", "c3"]))
        elif c == 4:
            self.x("XGROUP", "DELCONSUMER", key, g, rnd.choice(["c1", "c2", "c3"]))
        elif c == 5 and rnd.random() < 0.3:
            self.x("XGROUP", "DESTROY", key, g)
        else:
            self.x("XGROUP", "CREATE", key, g, "$", "MKSTREAM")

    def op_xread(self):
        """8"""
        rnd = self.rnd
        key = self.k("x", 3)
        g = rnd.choice(["g1", "g2"])
        c = rnd.randint(0, 5)
        if c <= 1:
            self.x(
                "XREADGROUP",
                "GROUP",
                g,
                rnd.choice(["c1", "c2", "c3"]),
                "COUNT",
                rnd.randint(1, 3),
                *rnd.choice([[], ["NOACK"]]),
                "STREAMS",
                key,
                ">",
            )
        elif c == 2:
            pending = self.x("XPENDING", key, g, "-", "+", 10)
            if pending:
                self.x("XACK", key, g, rnd.choice(pending)[0], "9-9")
        elif c == 3:
            self.x(
                "XAUTOCLAIM",
                key,
                g,
                rnd.choice(["c1", "c2", "c3"]),
                0,
                "0-0",
                "COUNT",
                2,
                *rnd.choice([[], ["JUSTID"]]),
            )
        elif c == 4:
            pending = self.x("XPENDING", key, g, "-", "+", 10)
            if pending:
                self.x(
                    "XCLAIM",
                    key,
                    g,
                    rnd.choice(["c1", "c2", "c4"]),
                    0,
                    rnd.choice(pending)[0],
                    *rnd.choice([[], ["JUSTID"], ["IDLE", 5000], ["RETRYCOUNT", 7], ["FORCE"]]),
                )
        else:
            self.x("XREADGROUP", "GROUP", g, "c1", "STREAMS", key, "0")

    # scripts, functions, transactions
    def op_script(self):
        """3"""
        rnd = self.rnd
        if rnd.random() < 0.5:
            self.x(
                "EVAL",
                SCRIPT,
                4,
                self.k("st"),
                self.k("s"),
                self.k("s"),
                self.k("x", 3),
                rnd.choice(["1.5", "2"]),
            )
        else:
            try:
                self.x("FCALL", "push2", 2, self.k("l"), self.k("s"), self.v())
            except redis.ResponseError as e:
                if "not found" not in str(e).lower():
                    raise
                self.x("FUNCTION", "LOAD", "REPLACE", LIB)

    def op_multi(self):
        """3"""
        rnd = self.rnd
        p = self.r.pipeline(transaction=True)
        p.execute_command("INCR", self.k("s"))
        p.execute_command("LPUSH", self.k("l"), self.v())
        p.execute_command("SET", self.k("s"), self.v(), "EX", 600)
        p.execute_command("SPOP", self.k("st"))
        if rnd.random() < 0.3:
            p.execute_command("HSET", self.k("s"), "f", "v")  # may fail with WRONGTYPE inside EXEC
        try:
            p.execute()
        except redis.ResponseError:
            pass


def _replica_caught_up(master_r, replica_r, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = _info(master_r)["master_repl_offset"]
        info = _info(replica_r)
        if info.get("master_link_status") == "up" and info.get("slave_repl_offset") == m:
            return
        time.sleep(0.05)
    raise AssertionError("replica did not catch up")


@pytest.mark.parametrize("seed", [1, 2])
def test_random_workload_matches_master(master, make_server, seed):
    server, r = master
    link = MasterStream(server.port)
    real = make_server(replicaof=("127.0.0.1", server.port))
    rr = raw_client(real.port)
    applier = Applier()
    work = Workload(r, seed)
    try:
        for _ in range(8):
            work.run(250)
            apply_all(applier, link.commands(r))
        time.sleep(0.3)  # let the short TTLs run out: the master then propagates DELs
        apply_all(applier, link.commands(r))
        _replica_caught_up(r, rr)
        assert_same_dataset(applier.keyspace, r, dbs=range(3), replica=rr)
        assert applier.applied > 1000
    finally:
        link.close()
        rr.close()


def _blocked(port, *argv):
    """Run a blocking command on its own connection in a thread; returns the thread."""

    def run():
        c = raw_client(port)
        try:
            out.append(c.execute_command(*argv))
        finally:
            c.close()

    out = []
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.out = out
    return t


def _wait_blocked(r, n):
    wait_for(lambda: int(_info(r, "clients")["blocked_clients"]) >= n, 10, "clients blocked", 0.01)


def test_blocked_clients_served_later(master, make_server):
    """A blocked client served by a later write: the master propagates the pop it did."""
    server, r = master
    link = MasterStream(server.port)
    applier = Applier()
    r.execute_command("XGROUP", "CREATE", "x", "g", "$", "MKSTREAM")
    threads = [
        _blocked(server.port, "BLPOP", "l1", 0),
        _blocked(server.port, "BLMOVE", "l2", "l3", "RIGHT", "LEFT", 0),
        _blocked(server.port, "BRPOPLPUSH", "l4", "l5", 0),
        _blocked(server.port, "BLMPOP", 0, 2, "nol", "l6", "LEFT", "COUNT", 2),
        _blocked(server.port, "BZPOPMIN", "z1", 0),
        _blocked(server.port, "BZMPOP", 0, 1, "z2", "MAX", "COUNT", 2),
        _blocked(server.port, "XREADGROUP", "GROUP", "g", "c1", "BLOCK", 0, "STREAMS", "x", ">"),
    ]
    _wait_blocked(r, len(threads))
    r.execute_command("RPUSH", "l1", "a", "b")
    r.execute_command("RPUSH", "l2", "a", "b")
    r.execute_command("RPUSH", "l4", "a", "b")
    r.execute_command("RPUSH", "l6", "a", "b", "c")
    r.execute_command("ZADD", "z1", 1, "a", 2, "b")
    r.execute_command("ZADD", "z2", 1, "a", 2, "b", 3, "c")
    r.execute_command("XADD", "x", "*", "f", "v")
    for t in threads:
        t.join(10)
        assert t.out, "blocked client was not served"
    commands = link.commands(r)
    names = {c[0].upper() for c in commands}
    assert {b"LPOP", b"LMOVE", b"RPOPLPUSH", b"ZPOPMIN", b"ZPOPMAX", b"XCLAIM"} <= names, names
    apply_all(applier, commands)
    assert applier.keyspace.db(0).data[b"l1"] == deque([b"b"])
    assert applier.keyspace.db(0).data[b"l6"] == deque([b"c"])
    assert_same_dataset(applier.keyspace, r, dbs=[0])
    link.close()


def test_databases_scripts_and_expiry(master):
    server, r = master
    link = MasterStream(server.port)
    applier = Applier()
    r1 = raw_client(server.port, 1)
    r.execute_command("SET", "a", "0")
    r.execute_command("LPUSH", "l", "x", "y")
    r1.execute_command("SADD", "s", "m1", "m2")
    r1.execute_command("SET", "b", "1", "EX", 1000)
    r.execute_command("SWAPDB", 0, 1)
    r.execute_command("SET", "c", "in db0 after swap")
    r.execute_command("COPY", "b", "b2", "DB", 3)
    r.execute_command("MOVE", "s", 4)
    # A script that changes databases: replicated as effects with SELECTs inside MULTI/EXEC.
    r.execute_command(
        "EVAL",
        "redis.call('SELECT', 5); redis.call('SET', 'k5', 'v');"
        "redis.call('SELECT', 6); redis.call('INCRBYFLOAT', 'f', '0.1');"
        "redis.call('INCRBYFLOAT', 'f', '0.2'); return 1",
        0,
    )
    r.execute_command("SET", "after-script", "db0")
    # A key expiring by itself: the master sends its DEL.
    r.execute_command("SET", "short", "1", "PX", 20)
    r.execute_command("HSET", "h", "f", "v")
    r.execute_command("PEXPIRE", "h", 30)
    deadline = time.monotonic() + 10
    while r.execute_command("DBSIZE") > 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    r.execute_command("RESTORE", "restored", 0, r1.execute_command("DUMP", "l"))
    r.execute_command("RESTORE", "restored-ttl", 90000, r1.execute_command("DUMP", "l"))
    commands = link.commands(r)
    assert [b"SWAPDB", b"0", b"1"] in commands
    assert [b"DEL", b"short"] in commands or [b"UNLINK", b"short"] in commands
    apply_all(applier, commands)
    ks = applier.keyspace
    assert ks.db(6).data[b"f"] == b"0.3"
    assert ks.db(0).data[b"b"] == b"1" and b"b" in ks.db(0).expires
    assert b"short" not in ks.db(0).data and b"h" not in ks.db(0).data
    assert ks.db(0).data[b"restored"] == deque([b"y", b"x"])
    assert_same_dataset(ks, r, dbs=range(8))
    r.execute_command("FLUSHALL")
    apply_all(applier, link.commands(r))
    assert ks.key_count() == 0
    r1.close()
    link.close()
