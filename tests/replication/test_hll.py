"""HyperLogLog and FUNCTION RESTORE on the replica, checked against bytes real servers produce.

Each test runs the same commands on a redis-server / valkey-server and through the Applier
and compares what GET (or FUNCTION LIST) returns, byte for byte.
"""

import random

import pytest
from waiting import wait_for

from greenredis.client.redis import Redis
from greenredis.errors import ReplyError
from greenredis.replication import hyperloglog as hll
from greenredis.replication.applier import Applier, ApplyError, commands
from greenredis.replication.replica import Replica
from greenredis.server import RedisServer, find_valkey_server


def b(x):
    return x if isinstance(x, bytes) else str(x).encode()


def client(server):
    return Redis.from_url(server.url, timeout=30)


class Twin:
    """A server and an Applier fed the same commands."""

    def __init__(self, server, **applier_kw):
        self.r = client(server)
        self.ap = Applier(**applier_kw)

    def run(self, *argv):
        argv = [b(a) for a in argv]
        reply = self.r.cmd(argv)
        self.ap.apply(argv)
        return reply

    def value(self, key):
        return self.ap.keyspace.db(0).data.get(b(key))

    def assert_same(self, *keys):
        for key in keys:
            want = self.r.cmd([b"GET", b(key)])
            assert self.value(key) == want, (key, len(self.value(key) or b""), len(want or b""))


def elements(rnd, n, universe=10**9):
    return [b"e%d" % rnd.randrange(universe) for _ in range(n)]


# ---- pure ----


def test_murmurhash64a_and_pattern_match_the_server(any_server):
    # One element in an empty HLL sets one register: its index and value are hllPatLen's,
    # so the server's bytes show MurmurHash64A's result (all tail lengths, 0..9 words).
    r = client(any_server)
    for n, element in enumerate(
        [b"", b"a", b"abcdefg", b"abcdefgh", b"abcdefghi", bytes(range(256)), b"x" * 77]
    ):
        key = b"m%d" % n
        r.cmd([b"PFADD", key, element])
        index, count = hll.pattern(element)
        assert hll.registers(r.cmd([b"GET", key])) == bytes(index) + bytes([count]) + bytes(
            hll.REGISTERS - index - 1
        )
        assert hll.pfadd(None, [element])[0] == r.cmd([b"GET", key])


def test_dense_packing_round_trips_every_value():
    rnd = random.Random(5)
    regs = bytes(rnd.randrange(64) for _ in range(hll.REGISTERS))
    packed = hll._pack_dense(regs)
    assert len(packed) == hll.DENSE_SIZE - hll.HEADER_SIZE
    assert hll._unpack_dense(packed) == regs
    s = bytearray(bytes(hll.HEADER_SIZE) + packed)
    expect = bytearray(regs)
    for i in (0, 1, 2, 3, 4, 5, 100, 16382, 16383):
        assert hll._dense_get(s, i) == regs[i]
        hll._dense_set(s, i, 63 - regs[i])
        expect[i] = 63 - regs[i]
        assert hll._unpack_dense(s[hll.HEADER_SIZE :]) == expect  # and the neighbours intact
    assert len(s) == hll.DENSE_SIZE


def _opcodes(s):
    """(position, first register) of every sparse opcode, by a plain walk."""
    out, p, first = [], hll.HEADER_SIZE, 0
    while p < len(s):
        out.append((p, first))
        first += hll._span(s, p)
        p += 2 if 0x40 <= s[p] < 0x80 else 1
    return out


def test_sparse_search_finds_the_opcode_and_its_two_predecessors():
    rnd = random.Random(8)
    for size in (0, 3, 40, 400, 1500):
        value, _ = hll.pfadd(None, elements(rnd, size), sparse_max_bytes=10**6)
        s = bytearray(value)
        ops = _opcodes(s)
        for _ in range(200):
            index = rnd.randrange(hll.REGISTERS)
            k = max(i for i, (_, first) in enumerate(ops) if first <= index)
            j = rnd.randrange(k + 1)  # start the search at any opcode up to the target's
            start = (ops[j][0], ops[j][1], ops[j - 1][0] if j else None)
            p, first, prev, prevprev = hll._locate(s, index, start)
            assert (p, first) == ops[k]
            assert prev == (ops[k - 1][0] if k else None)
            if k - j >= 1:
                assert prevprev == (ops[k - 2][0] if k >= 2 else None)
            else:
                assert prevprev == hll._UNKNOWN  # before the start: not seen


def test_bad_values_are_refused_with_redis_s_messages():
    with pytest.raises(hll.HLLError, match="WRONGTYPE"):
        hll.pfadd(b"not an hll at all", [b"x"])
    with pytest.raises(hll.HLLError, match="WRONGTYPE"):
        hll.pfcount(b"HYLL\x00" + bytes(20))  # dense of the wrong length
    with pytest.raises(hll.HLLError, match="INVALIDOBJ"):
        hll.pfcount(b"HYLL\x01" + bytes(10) + b"\x80\x7f\xff\x7f\xff")  # runs past 16384 registers
    corrupt_but_cached = b"HYLL\x01" + bytes(11) + b"\x7f\xff\x7f\xff"
    assert hll.pfcount(corrupt_but_cached) == 0  # a valid cache is returned as is, like Redis
    assert hll.pfcount(None) == 0 and hll.pfcount(None, None) == 0


# ---- against real servers ----


def test_new_and_empty_pfadd_bytes(any_server):
    t = Twin(any_server)
    assert t.run("PFADD", "empty") == 1
    assert t.run("PFADD", "one", "a") == 1
    assert t.run("PFADD", "one", "a") == 0  # unchanged: not propagated, nothing changes
    t.assert_same("empty", "one")
    assert t.value("one")[:5] == b"HYLL\x01" and t.value("one")[15] & 0x80  # sparse, cache stale


def test_random_pfadd_pfmerge_pfcount_match_the_server_byte_for_byte(any_server):
    rnd = random.Random(12)
    t = Twin(any_server)
    keys = [f"h{i}" for i in range(12)]
    seen_sparse = seen_dense = merged_mixed = 0
    for _ in range(700):
        key = rnd.choice(keys)
        op = rnd.random()
        if op < 0.7:
            t.run("PFADD", key, *elements(rnd, rnd.choice([0, 1, 1, 2, 3, 8, 30, 150])))
        elif op < 0.85:
            sources = rnd.sample(keys, rnd.randrange(0, 3))
            kinds = {t.value(k)[4] for k in [key, *sources] if t.value(k) is not None}
            merged_mixed += kinds == {0, 1}
            t.run("PFMERGE", key, *sources)
        else:
            count = t.run("PFCOUNT", key)  # refreshes the cache on the server: compare too
            assert count == hll.pfcount(t.value(key))
        value = t.value(key)
        if value is not None:
            seen_sparse += value[4] == 1
            seen_dense += value[4] == 0
        t.assert_same(key)
    t.assert_same(*keys)
    assert seen_sparse and seen_dense and merged_mixed  # the workload went through every case
    union = rnd.sample(keys, 4)
    assert hll.pfcount(*[t.value(k) for k in union]) == t.r.cmd([b"PFCOUNT", *map(b, union)])


def test_promotion_follows_the_master_s_hll_sparse_max_bytes(any_server):
    r = client(any_server)
    r.cmd([b"CONFIG", b"SET", b"hll-sparse-max-bytes", b"300"])
    t = Twin(any_server, hll_sparse_max_bytes=300)
    default = Applier()
    rnd = random.Random(3)
    for _ in range(60):
        argv = [b"PFADD", b"k", *elements(rnd, 5)]
        t.run(*argv)
        default.apply(argv)
        t.assert_same("k")
    assert t.value("k")[4] == 0  # dense past 300 bytes, as on the master
    assert default.keyspace.db(0).data[b"k"][4] == 1  # with Redis's default it is still sparse


def test_sparse_merges_and_many_random_sets(any_server):
    # Sparse-only PFMERGE goes register by register through the sparse editor; check it on
    # many sizes, and the estimator on every HLL made.
    rnd = random.Random(99)
    t = Twin(any_server)
    for i in range(40):
        n = rnd.choice([1, 5, 20, 80, 200, 400, 1500])
        a, c = f"a{i}", f"c{i}"
        t.run("PFADD", a, *elements(rnd, n, universe=5000))
        t.run("PFADD", c, *elements(rnd, rnd.choice([1, 10, 100]), universe=5000))
        t.run("PFMERGE", c, a)
        t.run("PFMERGE", f"new{i}", a, c, "missing")
        for key in (a, c, f"new{i}"):
            assert t.r.cmd([b"PFCOUNT", b(key)]) == hll.pfcount(t.value(key))
            t.ap.apply([b"PFCOUNT", b(key)])
            t.assert_same(key)


def test_pfdebug_todense_and_transactions(any_server):
    t = Twin(any_server)
    t.run("PFADD", "k", "a", "b", "c")
    t.run("PFDEBUG", "TODENSE", "k")
    t.assert_same("k")
    assert t.value("k")[4] == 0
    t.run("PFADD", "k", "d")
    t.assert_same("k")
    # A transaction that fails later puts the HLL back as it was.
    before = t.value("k")
    t.ap.apply([b"MULTI"])
    t.ap.apply([b"PFADD", b"k", b"zz"])
    t.ap.apply([b"PFCOUNT", b"k"])
    t.ap.apply([b"PFADD", b"k2", b"x"])
    t.ap.apply([b"LPUSH", b"k", b"x"])  # wrong type: the whole EXEC is refused
    with pytest.raises(ApplyError):
        t.ap.apply([b"EXEC"])
    assert t.value("k") == before and t.value("k2") is None


def test_pf_commands_on_values_that_are_not_hlls_are_refused():
    ap = Applier()
    ap.apply([b"SET", b"s", b"plain"])
    ap.apply([b"RPUSH", b"l", b"x"])
    for argv in (
        [b"PFADD", b"s", b"x"],
        [b"PFADD", b"l", b"x"],
        [b"PFMERGE", b"d", b"s"],
        [b"PFCOUNT", b"l"],
        [b"PFDEBUG", b"TODENSE", b"missing"],
    ):
        with pytest.raises(ApplyError):
            ap.apply(argv)
    assert ap.keyspace.db(0).data.keys() == {b"s", b"l"}
    assert b"PFADD" in commands() and b"PFMERGE" in commands() and b"PFCOUNT" in commands()


# ---- FUNCTION RESTORE ----

LIB = "#!lua name={name}\nredis.register_function('{fn}', function() return {n} end)"


def libraries(r):
    out = {}
    for lib in r.cmd([b"FUNCTION", b"LIST", b"WITHCODE"]):
        fields = dict(zip(lib[::2], lib[1::2]))
        out[fields[b"library_name"]] = fields[b"library_code"]
    return out


def applier_libraries(ap):
    return {hll_name(code): code for code in ap.keyspace.functions}


def hll_name(code):
    return code.split(b"name=", 1)[1].split()[0]


def test_function_restore_policies_match_the_server(any_server):
    t = Twin(any_server)
    t.run("FUNCTION", "LOAD", LIB.format(name="a", fn="fa", n=1))
    t.run("FUNCTION", "LOAD", LIB.format(name="b", fn="fb", n=2))
    dump_ab = t.r.cmd([b"FUNCTION", b"DUMP"])
    t.run("FUNCTION", "FLUSH")
    t.run("FUNCTION", "LOAD", LIB.format(name="c", fn="fc", n=3))
    t.run("FUNCTION", "RESTORE", dump_ab)  # APPEND by default
    assert applier_libraries(t.ap) == libraries(t.r) and len(libraries(t.r)) == 3
    t.run("FUNCTION", "LOAD", "REPLACE", LIB.format(name="a", fn="fa", n=10))
    t.run("FUNCTION", "RESTORE", dump_ab, "REPLACE")  # a back to its dumped code
    assert applier_libraries(t.ap) == libraries(t.r)
    t.run("FUNCTION", "RESTORE", dump_ab, "flush")
    assert applier_libraries(t.ap) == libraries(t.r) and set(libraries(t.r)) == {b"a", b"b"}
    t.run("FUNCTION", "FLUSH")
    empty = t.r.cmd([b"FUNCTION", b"DUMP"])
    t.run("FUNCTION", "RESTORE", dump_ab)
    t.run("FUNCTION", "RESTORE", empty, "FLUSH")
    assert applier_libraries(t.ap) == libraries(t.r) == {}
    # What the master refuses (and so never propagates) is refused here too, with no change.
    t.run("FUNCTION", "RESTORE", dump_ab)
    for argv in (
        [b"FUNCTION", b"RESTORE", dump_ab],  # APPEND onto existing libraries
        [b"FUNCTION", b"RESTORE", dump_ab, b"MERGE"],
        [b"FUNCTION", b"RESTORE", dump_ab[:-1] + bytes([dump_ab[-1] ^ 1])],  # checksum
        [b"FUNCTION", b"RESTORE", b"short"],
    ):
        with pytest.raises(ApplyError):
            t.ap.apply(argv)
        with pytest.raises(ReplyError):
            t.r.cmd(argv)
    assert applier_libraries(t.ap) == libraries(t.r)
    # A long library is LZF-compressed in the payload.
    big = "#!lua name=big\n" + "\n".join(
        f"redis.register_function('g{i}', function() return {i} end)" for i in range(200)
    )
    t.run("FUNCTION", "LOAD", big)
    dump = t.r.cmd([b"FUNCTION", b"DUMP"])
    assert len(dump) < len(big)
    t.run("FUNCTION", "RESTORE", dump, "FLUSH")
    assert applier_libraries(t.ap) == libraries(t.r) and libraries(t.r)[b"big"] == big.encode()


# ---- a real replica ----


def master_offset(r):
    for line in r.cmd([b"INFO", b"replication"]).decode().splitlines():
        if line.startswith("master_repl_offset:"):
            return int(line.split(":")[1])
    raise AssertionError("no master_repl_offset")


OPERATIONS = 300


@pytest.mark.parametrize("valkey", [False, True], ids=["redis", "valkey"])
def test_replica_pfadd_pfcount_workload_never_resyncs(valkey):
    binary = find_valkey_server() if valkey else None
    with RedisServer(binary=binary, args=["--repl-diskless-sync-delay", "0"]) as master:
        r = client(master)
        reader = client(master)
        r.cmd([b"PFADD", b"before", b"x", b"y"])  # in the snapshot
        seen = []
        rep = Replica(
            master.url, callback=lambda ev, info: seen.append(info["argv"][0]) if ev == "command" else None
        )
        try:
            rep.start(timeout=30)
            rnd = random.Random(7)
            keys = [b"hll:%d" % i for i in range(20)]
            pfadds = 0
            for _ in range(OPERATIONS):  # a count, not a time: a loaded run did 72 PFADDs in 12 s
                key = rnd.choice(keys)
                if rnd.random() < 0.6:
                    r.cmd([b"PFADD", key, *elements(rnd, rnd.choice([1, 3, 40, 300]))])
                    pfadds += 1
                elif rnd.random() < 0.5:
                    reader.cmd([b"PFCOUNT", key])  # a read that the master propagates
                else:
                    r.cmd([b"PFMERGE", rnd.choice(keys), key, rnd.choice(keys)])
            r.cmd([b"FUNCTION", b"LOAD", LIB.format(name="lib", fn="f", n=1).encode()])
            r.cmd([b"FUNCTION", b"RESTORE", r.cmd([b"FUNCTION", b"DUMP"]), b"REPLACE"])
            wait_for(lambda: rep.status()["offset"] == master_offset(r), timeout=30, what="catch-up")
            st = rep.status()
            assert st["full_syncs"] == 1 and st["last_error"] is None, st
            assert pfadds > OPERATIONS // 2 and b"PFCOUNT" in [a.upper() for a in seen]
            for key in [*keys, b"before"]:
                assert rep.get(key) == r.cmd([b"GET", key]), key
                assert rep.pfcount(key) == reader.cmd([b"PFCOUNT", key])
            assert rep.pfcount(*keys[:5]) == reader.cmd([b"PFCOUNT", *keys[:5]])
            assert rep.pfcount(b"missing") == 0
            assert [hll_name(c) for c in rep.keyspace.functions] == [b"lib"]
            r.cmd([b"SET", b"plain", b"v"])
            wait_for(lambda: rep.get(b"plain") is not None, timeout=10, what="plain")
            with pytest.raises(ReplyError, match="WRONGTYPE"):
                rep.pfcount(b"plain")
        finally:
            rep.stop()


def test_replica_uses_the_master_s_hll_sparse_max_bytes():
    # The master goes dense past 100 bytes: the copy must too, without being told.
    args = ["--repl-diskless-sync-delay", "0", "--hll-sparse-max-bytes", "100"]
    with RedisServer(args=args) as master:
        r = client(master)
        r.cmd([b"ACL", b"SETUSER", b"noconf", b"on", b">pw", b"~*", b"+@all", b"-config"])
        asked = Replica(master.url)
        told = Replica(f"redis://noconf:pw@127.0.0.1:{master.port}", hll_sparse_max_bytes=100)
        try:
            asked.start(timeout=30)
            told.start(timeout=30)
            r.cmd([b"PFADD", b"k", *[b"x%d" % i for i in range(30)]])
            want = r.cmd([b"GET", b"k"])
            assert want[4] == 0  # dense on the master
            for rep in (asked, told):
                wait_for(
                    lambda rep=rep: rep.status()["offset"] == master_offset(r), timeout=30, what="catch-up"
                )
                assert rep.get(b"k") == want
        finally:
            asked.stop()
            told.stop()


def test_pfadd_on_a_value_ending_in_half_an_xzero_matches_the_server(any_server):
    # A corrupt sparse HLL whose last byte starts an XZERO: Redis reads the string's NUL
    # terminator as the second byte and still adds (the applier raised INVALIDOBJ, so a
    # full resync, on every such PFADD the master propagated).
    t = Twin(any_server)
    rnd = random.Random(12)
    for i in range(60):
        body = bytes(rnd.choice([0x00, 0x3F, 0x85, 0x9F, 0x45, 0x4A]) for _ in range(rnd.randrange(0, 4)))
        value = b"HYLL\x01" + bytes(11) + body + bytes([rnd.choice([0x40, 0x55, 0x7D, 0x7F])])
        t.run("SET", f"k{i}", value)
        try:
            t.r.cmd([b"PFADD", b"k%d" % i, b"e%d" % i])
        except ReplyError:
            with pytest.raises(ApplyError):
                t.ap.apply([b"PFADD", b"k%d" % i, b"e%d" % i])  # the master refused it too
            continue
        t.ap.apply([b"PFADD", b"k%d" % i, b"e%d" % i])
        t.assert_same(f"k{i}")


def test_pfadd_reads_what_an_earlier_edit_left_past_the_end(any_server):
    # Within one PFADD, an edit of a trailing half XZERO writes its last byte just past the
    # string's new end, and the next element's search reads it there (not a NUL).
    value = b"HYLL\x01" + bytes(10) + b"\x80" + bytes(21) + b"IA\x80G'\x80N>\x80\r\x80G]]"
    elements = b"e654545175 e7 e375574678 e9780 e2255 e445600170 e513527801 e656858036 e7984".split()
    t = Twin(any_server)
    t.run("SET", "k", value)
    t.run("PFADD", "k", *elements)
    t.assert_same("k")


def test_the_byte_past_the_end_is_kept_between_commands(any_server):
    # An edit of a trailing half XZERO leaves the sequence's last byte just past the
    # string's end, in Redis's buffer; a later PFADD (another command) that reads past the
    # end again finds it there. PFCOUNT rewrites the header in place and keeps it too.
    t = Twin(any_server)
    rnd = random.Random(5)
    again = 0  # PFADDs on a value that an earlier PFADD left ending in half an XZERO
    for i in range(60):
        key = f"k{i}"
        t.run("SET", key, b"HYLL\x01" + bytes(11) + bytes([rnd.choice([0x7F, 0x7E, 0x6A, 0x55])]))
        for n in range(5):
            argv = [b"PFADD", b(key), b"e%d" % rnd.randrange(10**9)]
            if n == 2:
                argv = [b"PFCOUNT", b(key)]
            try:
                t.r.cmd(argv)
            except ReplyError:  # Redis found it invalid: so does the applier
                with pytest.raises(ApplyError):
                    t.ap.apply(argv)
                break
            again += n > 0 and 0x40 <= t.value(key)[-1] < 0x80
            t.ap.apply(argv)
            t.assert_same(key)
    assert again >= 5, again


def test_the_byte_past_the_end_moves_with_the_value(any_server):
    # RENAME, MOVE and SWAPDB move Redis's object, buffer and all: a later PFADD on the new
    # key or db still reads the byte an earlier edit left past the end (the applier lost it,
    # then stored other bytes than the master or refused the PFADD: a full resync).
    t = Twin(any_server)
    db1 = Redis.from_url(any_server.url.rsplit("/", 1)[0] + "/1", timeout=30)
    rnd = random.Random(5)
    moved = 0
    for i in range(150):
        key = f"k{i}"
        t.run("SET", key, b"HYLL\x01" + bytes(11) + bytes([rnd.choice([0x7F, 0x7E, 0x6A, 0x55])]))
        try:
            t.run("PFADD", key, b"e%d" % rnd.randrange(10**9))
        except ReplyError:
            continue
        if not 0x40 <= t.value(key)[-1] < 0x80:
            continue  # nothing left past the end
        how = ("RENAME", "MOVE", "SWAPDB")[moved % 3]
        moved += 1
        element = b"e%d" % rnd.randrange(10**9)
        if how == "RENAME":
            t.run("RENAME", key, key + "r")
            key += "r"
            server, apply = t.r, t.ap.apply
        else:
            if how == "MOVE":
                t.run("MOVE", key, "1")
            else:
                t.run("SWAPDB", "0", "1")
            server = db1

            def apply(argv):
                t.ap.apply([b"SELECT", b"1"])
                try:
                    t.ap.apply(argv)
                finally:
                    t.ap.apply([b"SELECT", b"0"])

        try:
            server.cmd([b"PFADD", b(key), element])
        except ReplyError:
            with pytest.raises(ApplyError):
                apply([b"PFADD", b(key), element])
        else:
            apply([b"PFADD", b(key), element])
        assert t.ap.keyspace.db(1 if server is db1 else 0).data.get(b(key)) == server.cmd([b"GET", b(key)]), (
            how
        )
        if how == "SWAPDB":
            t.run("SWAPDB", "0", "1")
    assert moved >= 9, moved
