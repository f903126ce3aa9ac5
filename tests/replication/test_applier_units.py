"""Applier unit tests: argv lists fed directly, and client forms checked against a real server."""

import random
from collections import deque

import pytest
import redis
from test_applier import assert_same_dataset, raw_client

from greenredis.replication.applier import REFUSED, Applier, ApplyError, commands
from greenredis.replication.applier.base import copy_value
from greenredis.replication.keyspace import Keyspace, PackedHash, Set, Stream, StreamID, ZSet


def A(*argv):
    return [a if isinstance(a, bytes) else str(a).encode() for a in argv]


@pytest.fixture
def ap():
    return Applier()


def run(ap, *argv):
    return ap.apply(A(*argv))


def data(ap, db=0):
    return ap.keyspace.db(db).data


# ---- dispatch, errors ----


def test_unknown_and_unsupported_commands_raise(ap):
    for argv in (
        ["NOSUCHCMD", "k"],
        ["EVAL", "return 1", 0],
        ["FCALL", "f", 0],
        ["SPOP", "s"],
        ["XREADGROUP", "GROUP", "g", "c"],
        ["XAUTOCLAIM", "x", "g", "c", 0, 0],
        ["XADD", "x", "*", "f", "v"],
        ["XADD", "x", "MAXLEN", "~", 5, "1-1", "f", "v"],
        ["GEOSEARCHSTORE", "d", "s"],
    ):
        with pytest.raises(ApplyError):
            run(ap, *argv)
    with pytest.raises(ApplyError):
        ap.apply([])
    assert ap.keyspace.key_count() == 0


def test_case_insensitive_names_and_touched_keys(ap):
    assert run(ap, "set", "k", "v") == [(0, b"k")]
    assert run(ap, "Set", "k", "w") == [(0, b"k")]
    assert run(ap, "PING") == [] and run(ap, "REPLCONF", "GETACK", "*") == []
    assert run(ap, "PUBLISH", "ch", "msg") == []
    assert run(ap, "SELECT", 2) == [] and ap.db == 2
    assert run(ap, "SET", "k", "v") == [(2, b"k")]
    assert run(ap, "DEL", "k", "missing") == [(2, b"k")]
    assert b"SET" in commands() and b"XCLAIM" in commands() and b"EXEC" in commands()
    assert b"SPOP" in REFUSED and b"SPOP" not in commands() and b"PFADD" in commands()


def test_wrong_type_and_bad_arguments_raise_and_change_nothing(ap):
    run(ap, "LPUSH", "l", "a")
    run(ap, "SET", "s", "notanumber")
    for argv in (
        ["SADD", "l", "x"],
        ["INCR", "l"],
        ["HSET", "l", "f", "v"],
        ["ZADD", "l", 1, "m"],
        ["XADD", "l", "1-1", "f", "v"],
        ["INCR", "s"],
        ["APPEND", "l", "x"],
        ["SET"],
        ["ZADD", "z", "notafloat", "m"],
        ["ZADD", "z", "nan", "m"],
        ["EXPIRE", "l", "x"],
        ["RENAME", "missing", "x"],
        ["LSET", "l", 5, "x"],
        ["LSET", "nolist", 0, "x"],
        ["SETBIT", "s", -1, 1],
        ["SETBIT", "s", 0, 2],
        ["INCRBY", "s", "1.5"],
        ["INCRBY", "n", "01"],
    ):
        with pytest.raises(ApplyError):
            run(ap, *argv)
    assert data(ap) == {b"l": deque([b"a"]), b"s": b"notanumber"}


def test_setting_db_selects_it(ap):
    ap.db = 3
    run(ap, "SET", "k", "v")
    assert data(ap, 3) == {b"k": b"v"} and data(ap, 0) == {}


# ---- strings ----


def test_set_options(ap):
    run(ap, "SET", "k", "v", "PXAT", 4102444800000)
    assert ap.keyspace.db(0).expires[b"k"] == 4102444800000
    run(ap, "SET", "k", "v2", "KEEPTTL")
    assert ap.keyspace.db(0).expires[b"k"] == 4102444800000
    run(ap, "SET", "k", "v3")
    assert b"k" not in ap.keyspace.db(0).expires
    assert run(ap, "SET", "k", "x", "NX") == [] and data(ap)[b"k"] == b"v3"
    assert run(ap, "SET", "new", "x", "XX") == [] and b"new" not in data(ap)
    run(ap, "SET", "past", "v", "PXAT", 1)  # a replica keeps it: the master sends DEL
    assert data(ap)[b"past"] == b"v"
    run(ap, "LPUSH", "l", "a")
    with pytest.raises(ApplyError):
        run(ap, "SET", "l", "v", "GET")
    run(ap, "SET", "l", "v")  # SET overwrites any type
    assert data(ap)[b"l"] == b"v"


def test_counters_and_overflow(ap):
    run(ap, "INCRBY", "n", 9223372036854775806)
    run(ap, "INCR", "n")
    assert data(ap)[b"n"] == b"9223372036854775807"
    with pytest.raises(ApplyError):
        run(ap, "INCR", "n")
    run(ap, "DECRBY", "m", -5)
    assert data(ap)[b"m"] == b"5"
    run(ap, "SET", "t", "7", "PXAT", 4102444800000)
    run(ap, "INCR", "t")
    assert data(ap)[b"t"] == b"8" and b"t" in ap.keyspace.db(0).expires  # INCR keeps the TTL


@pytest.mark.parametrize(
    "start,by,expected",
    [
        ("10.50", "0.1", "10.6"),
        ("10.6", "-5", "5.6"),
        ("5.0e3", "2.0e2", "5200"),
        ("0.1", "0.2", "0.3"),
        ("3", "1.5", "4.5"),
        (None, "1.1", "1.1"),
        ("1", "-1", "0"),
        ("1e17", "1", "100000000000000001"),
    ],
)
def test_incrbyfloat_formats_like_redis(ap, start, by, expected):
    if start is not None:
        run(ap, "SET", "f", start)
    run(ap, "INCRBYFLOAT", "f", by)
    assert data(ap)[b"f"] == expected.encode()


def test_incrbyfloat_matches_server_on_random_values(ap, redis_server):
    """80-bit long double sums and "%.17Lf" output, as the server computes them."""
    r = raw_client(redis_server.port)
    rnd = random.Random(3)
    for i in range(300):
        start = rnd.choice(
            [
                f"{rnd.uniform(-1e6, 1e6):.{rnd.randint(0, 12)}f}",
                str(rnd.randint(-99, 99)),
                f"{rnd.uniform(0, 1):.3e}",
                "0.1",
                "1e20",
                "-7.77",
            ]
        )
        by = rnd.choice([f"{rnd.uniform(-100, 100):.{rnd.randint(0, 17)}f}", "0.1", "0.2", "1e-5", "3"])
        r.execute_command("SET", f"f{i}", start)
        r.execute_command("INCRBYFLOAT", f"f{i}", by)
        r.execute_command("HINCRBYFLOAT", "h", f"f{i}", by)
        run(ap, "SET", f"f{i}", start)
        run(ap, "INCRBYFLOAT", f"f{i}", by)
        run(ap, "HINCRBYFLOAT", "h", f"f{i}", by)
    assert_same_dataset(ap.keyspace, r, dbs=[0])
    r.close()


def test_setrange_setbit_bitfield_bitop(ap):
    assert run(ap, "SETRANGE", "s", 3, "") == [] and b"s" not in data(ap)
    run(ap, "SETRANGE", "s", 3, "ab")
    assert data(ap)[b"s"] == b"\0\0\0ab"
    run(ap, "SETRANGE", "s", 1, "XYZW")
    assert data(ap)[b"s"] == b"\0XYZW"
    run(ap, "SETBIT", "b", 9, 1)
    assert data(ap)[b"b"] == b"\x00\x40"
    run(ap, "BITFIELD", "bf", "SET", "u8", "#1", 255, "INCRBY", "u8", "#1", 1)
    assert data(ap)[b"bf"] == b"\x00\x00"  # WRAP
    run(ap, "BITFIELD", "bf", "OVERFLOW", "SAT", "INCRBY", "i8", 0, -200)
    assert data(ap)[b"bf"] == b"\x80\x00"
    run(ap, "BITFIELD", "bf", "OVERFLOW", "FAIL", "INCRBY", "i8", 0, -1, "SET", "u4", 100, 1)
    assert data(ap)[b"bf"][:2] == b"\x80\x00" and len(data(ap)[b"bf"]) == 13  # grown, no write
    assert run(ap, "BITFIELD", "ro", "GET", "u8", 0) == [] and b"ro" not in data(ap)
    run(ap, "SET", "a", b"\x0f\xf0")
    run(ap, "SET", "c", b"\xff")
    run(ap, "BITOP", "AND", "d", "a", "c")
    assert data(ap)[b"d"] == b"\x0f\x00"
    run(ap, "BITOP", "NOT", "d", "a")
    assert data(ap)[b"d"] == b"\xf0\x0f"
    run(ap, "BITOP", "OR", "d", "missing1", "missing2")
    assert b"d" not in data(ap)


# ---- keys ----


def test_expire_family_and_flags(ap):
    run(ap, "SET", "k", "v")
    assert run(ap, "PEXPIREAT", "k", 5000, "XX") == []
    assert run(ap, "PEXPIREAT", "k", 5000, "NX") == [(0, b"k")]
    assert run(ap, "PEXPIREAT", "k", 4000, "GT") == []
    assert run(ap, "PEXPIREAT", "k", 6000, "GT") == [(0, b"k")]
    assert run(ap, "PEXPIREAT", "k", 7000, "LT") == []
    assert run(ap, "EXPIREAT", "k", 3, "LT") == [(0, b"k")]
    assert ap.keyspace.db(0).expires[b"k"] == 3000
    assert data(ap)[b"k"] == b"v"  # never expired here
    assert run(ap, "PERSIST", "k") == [(0, b"k")] and run(ap, "PERSIST", "k") == []
    assert run(ap, "PEXPIREAT", "missing", 5000) == []
    with pytest.raises(ApplyError):
        run(ap, "PEXPIREAT", "k", 5000, "NX", "XX")


def test_rename_copy_move_swapdb_flush(ap):
    run(ap, "RPUSH", "l", "a", "b")
    run(ap, "PEXPIREAT", "l", 4102444800000)
    run(ap, "SET", "dst", "x", "PXAT", 5)
    run(ap, "RENAME", "l", "dst")
    db0 = ap.keyspace.db(0)
    assert data(ap) == {b"dst": deque([b"a", b"b"])} and db0.expires == {b"dst": 4102444800000}
    run(ap, "COPY", "dst", "cp", "DB", 1)
    data(ap)[b"dst"].append(b"c")
    assert data(ap, 1)[b"cp"] == deque([b"a", b"b"])  # a copy, not the same object
    assert ap.keyspace.db(1).expires[b"cp"] == 4102444800000
    assert run(ap, "COPY", "dst", "cp", "DB", 1) == []  # exists, no REPLACE
    run(ap, "MOVE", "dst", 1)
    assert data(ap) == {} and data(ap, 1)[b"dst"] == deque([b"a", b"b", b"c"])
    run(ap, "SET", "zero", "0")
    run(ap, "SWAPDB", 0, 1)
    assert set(data(ap)) == {b"cp", b"dst"} and set(data(ap, 1)) == {b"zero"}
    assert ap.keyspace.db(0).expires == {b"cp": 4102444800000, b"dst": 4102444800000}
    touched = run(ap, "FLUSHDB")
    assert sorted(touched) == [(0, b"cp"), (0, b"dst")] and data(ap) == {}
    run(ap, "SET", "x", "y")
    assert data(ap) == {b"x": b"y"}  # still bound to the live dict after the flush
    run(ap, "FLUSHALL", "ASYNC")
    assert ap.keyspace.key_count() == 0


def test_restore(ap, redis_server):
    r = raw_client(redis_server.port)
    r.execute_command("ZADD", "z", 1, "a", 2.5, "b")
    payload = r.execute_command("DUMP", "z")
    run(ap, "RESTORE", "z", 0, payload)
    assert data(ap)[b"z"] == ZSet({b"a": 1.0, b"b": 2.5})
    with pytest.raises(ApplyError):
        run(ap, "RESTORE", "z", 0, payload)  # BUSYKEY
    run(ap, "RESTORE", "z", 4102444800000, payload, "REPLACE", "ABSTTL", "IDLETIME", 5)
    assert ap.keyspace.db(0).expires[b"z"] == 4102444800000
    with pytest.raises(ApplyError):
        run(ap, "RESTORE", "bad", 0, payload[:-1] + b"X")
    r.close()


def test_functions(ap):
    lib = b"#!lua name=mylib\nredis.register_function('f', function() return 1 end)"
    run(ap, "FUNCTION", "LOAD", lib)
    assert ap.keyspace.functions == [lib]
    with pytest.raises(ApplyError):
        run(ap, "FUNCTION", "LOAD", lib)
    run(ap, "FUNCTION", "LOAD", "REPLACE", lib + b" ")
    assert ap.keyspace.functions == [lib + b" "]
    run(ap, "FUNCTION", "DELETE", "mylib")
    assert ap.keyspace.functions == []
    run(ap, "FUNCTION", "LOAD", lib)
    run(ap, "FUNCTION", "FLUSH")
    assert ap.keyspace.functions == []


# ---- transactions ----


def test_multi_exec_applies_at_exec(ap):
    run(ap, "MULTI")
    assert run(ap, "SET", "a", "1") == []
    assert run(ap, "SELECT", 1) == []
    assert run(ap, "INCR", "a") == []
    assert data(ap) == {}
    assert run(ap, "EXEC") == [(0, b"a"), (1, b"a")]
    assert data(ap) == {b"a": b"1"} and data(ap, 1) == {b"a": b"1"}
    assert ap.db == 1


def test_failed_exec_rolls_everything_back(ap):
    run(ap, "RPUSH", "l", "a")
    run(ap, "SET", "s", "v", "PXAT", 4102444800000)
    run(ap, "SELECT", 1)
    run(ap, "SADD", "set", "m")
    run(ap, "SELECT", 0)
    before = {
        n: ({k: copy_value(v) for k, v in db.data.items()}, dict(db.expires))
        for n, db in ap.keyspace.dbs.items()
    }
    run(ap, "MULTI")
    run(ap, "RPUSH", "l", "b")
    run(ap, "DEL", "s")
    run(ap, "SET", "new", "x")
    run(ap, "SWAPDB", 0, 1)
    run(ap, "SELECT", 7)
    run(ap, "SET", "far", "x")
    run(ap, "SELECT", 0)
    run(ap, "FLUSHDB")
    run(ap, "SET", "set", "x")
    run(ap, "SELECT", 1)
    run(ap, "INCR", "l")  # db 1 now holds the list: WRONGTYPE
    with pytest.raises(ApplyError):
        run(ap, "EXEC")
    after = {n: (dict(db.data), dict(db.expires)) for n, db in ap.keyspace.dbs.items()}
    assert after == before
    assert data(ap)[b"l"] == deque([b"a"]) and ap.db == 0
    run(ap, "SET", "ok", "1")  # the applier goes on working on the restored dicts
    assert ap.keyspace.db(0).data[b"ok"] == b"1"


def test_refused_command_inside_multi_aborts_the_transaction(ap):
    lib = b"#!lua name=l1\nredis.register_function('f', function() return 1 end)"
    run(ap, "MULTI")
    run(ap, "SET", "a", "1")
    run(ap, "FUNCTION", "LOAD", lib)
    with pytest.raises(ApplyError):
        run(ap, "NOSUCHCMD", "x")
    with pytest.raises(ApplyError):
        run(ap, "EXEC")
    assert data(ap) == {} and ap.keyspace.functions == []
    run(ap, "MULTI")
    run(ap, "FUNCTION", "LOAD", lib)
    run(ap, "INCR", "a")
    run(ap, "PFADD", "a", "x")  # "a" holds "1", not an HLL: refused when run
    with pytest.raises(ApplyError):
        run(ap, "EXEC")
    assert data(ap) == {} and ap.keyspace.functions == []  # rolled back, functions too
    run(ap, "MULTI")
    run(ap, "SET", "a", "1")
    assert run(ap, "EXEC") == [(0, b"a")]


def test_transaction_errors(ap):
    with pytest.raises(ApplyError):
        run(ap, "EXEC")
    run(ap, "MULTI")
    with pytest.raises(ApplyError):
        run(ap, "MULTI")
    run(ap, "SET", "a", "1")
    run(ap, "DISCARD")
    assert data(ap) == {}
    with pytest.raises(ApplyError):
        run(ap, "DISCARD")


# ---- lists, sets, hashes ----


def test_list_edits(ap):
    run(ap, "RPUSH", "l", "a", "b", "a", "c", "a")
    run(ap, "LREM", "l", -2, "a")
    assert data(ap)[b"l"] == deque([b"a", b"b", b"c"])
    run(ap, "LINSERT", "l", "AFTER", "b", "x")
    run(ap, "LSET", "l", -1, "z")
    assert data(ap)[b"l"] == deque([b"a", b"b", b"x", b"z"])
    run(ap, "LTRIM", "l", 1, -2)
    assert data(ap)[b"l"] == deque([b"b", b"x"])
    run(ap, "LMOVE", "l", "l", "LEFT", "RIGHT")
    assert data(ap)[b"l"] == deque([b"x", b"b"])
    run(ap, "LPOP", "l", 5)
    assert b"l" not in data(ap)
    run(ap, "RPUSH", "one", "v")
    run(ap, "LMOVE", "one", "one", "LEFT", "LEFT")
    assert data(ap)[b"one"] == deque([b"v"])
    run(ap, "LTRIM", "one", 5, 10)
    assert b"one" not in data(ap)
    assert run(ap, "LPUSHX", "none", "v") == []


def test_sets_and_hashes(ap):
    run(ap, "SADD", "a", 1, 2, 3)
    run(ap, "SADD", "b", 2, 3, 4)
    run(ap, "SINTERSTORE", "i", "a", "b")
    run(ap, "SDIFFSTORE", "d", "a", "b", "missing")
    assert data(ap)[b"i"] == {b"2", b"3"} and data(ap)[b"d"] == {b"1"}
    run(ap, "SINTERSTORE", "i", "a", "missing")
    assert b"i" not in data(ap)
    run(ap, "SMOVE", "d", "b", 1)
    assert b"d" not in data(ap) and b"1" in data(ap)[b"b"]
    run(ap, "HSET", "h", "f", "1", "g", "2")
    run(ap, "HINCRBY", "h", "f", 41)
    assert data(ap)[b"h"] == {b"f": b"42", b"g": b"2"}
    assert run(ap, "HSETNX", "h", "f", "x") == []
    run(ap, "HDEL", "h", "f", "g")
    assert b"h" not in data(ap)


def test_hash_field_expiry(ap):
    fexp = ap.keyspace.db(0).field_expires
    run(ap, "HSET", "h", "a", "1", "b", "2", "c", "3")
    assert run(ap, "HPEXPIREAT", "h", 5000, "FIELDS", 2, "a", "b") == [(0, b"h")]
    assert fexp[b"h"] == {b"a": 5000, b"b": 5000}
    run(ap, "HPEXPIREAT", "h", 4000, "GT", "FIELDS", 1, "a")
    run(ap, "HPEXPIREAT", "h", 4000, "LT", "FIELDS", 1, "b")
    run(ap, "HPEXPIREAT", "h", 4000, "NX", "FIELDS", 2, "a", "zz")
    assert fexp[b"h"] == {b"a": 5000, b"b": 4000}
    run(ap, "HSET", "h", "a", "new")  # HSET drops the field's TTL
    assert fexp[b"h"] == {b"b": 4000}
    run(ap, "HPERSIST", "h", "FIELDS", 1, "b")
    assert b"h" not in fexp
    run(ap, "HPEXPIREAT", "h", 9000, "FIELDS", 1, "c")
    run(ap, "RENAME", "h", "h2")
    assert fexp == {b"h2": {b"c": 9000}}
    run(ap, "HDEL", "h2", "a", "b", "c")
    assert fexp == {} and data(ap) == {}
    with pytest.raises(ApplyError):
        run(ap, "HPEXPIREAT", "h", 1, "FIELDS", 2, "a")


# ---- sorted sets ----


def test_zadd_flags_and_incr(ap):
    run(ap, "ZADD", "z", 1, "a", 2, "b")
    assert run(ap, "ZADD", "z", "XX", 5, "c") == [] and b"c" not in data(ap)[b"z"]
    run(ap, "ZADD", "z", "GT", "CH", 0, "a", 3, "b", 9, "new")
    assert data(ap)[b"z"] == {b"a": 1.0, b"b": 3.0, b"new": 9.0}
    run(ap, "ZADD", "z", "LT", 5, "a", 0.5, "b")
    run(ap, "ZADD", "z", "INCR", "-inf", "new")
    assert data(ap)[b"z"] == {b"a": 1.0, b"b": 0.5, b"new": float("-inf")}
    with pytest.raises(ApplyError):
        run(ap, "ZINCRBY", "z", "+inf", "new")  # -inf + inf is NaN
    run(ap, "ZINCRBY", "z", "0.1", "a")
    run(ap, "ZINCRBY", "z", "0.2", "a")
    assert data(ap)[b"z"][b"a"] == 1.0 + 0.1 + 0.2
    assert run(ap, "ZADD", "missing", "XX", 1, "a") == [] and b"missing" not in data(ap)
    with pytest.raises(ApplyError):
        run(ap, "ZADD", "z", "NX", "GT", 1, "a")


def test_zset_ranges_and_stores(ap):
    run(ap, "ZADD", "z", 1, "a", 2, "b", 3, "c", 4, "d", 5, "e")
    run(ap, "ZRANGESTORE", "r", "z", "(1", 4, "BYSCORE", "LIMIT", 1, 2)
    assert data(ap)[b"r"].ordered() == [(b"c", 3.0), (b"d", 4.0)]
    run(ap, "ZRANGESTORE", "r", "z", 0, 1, "REV")
    assert data(ap)[b"r"].ordered() == [(b"d", 4.0), (b"e", 5.0)]
    run(ap, "ZRANGESTORE", "r", "z", "[d", "-", "BYLEX", "REV")
    assert sorted(data(ap)[b"r"]) == [b"a", b"b", b"c", b"d"]
    run(ap, "ZRANGESTORE", "r", "z", 10, 20)
    assert b"r" not in data(ap)
    run(ap, "SADD", "s", "a", "x")
    run(ap, "ZUNIONSTORE", "u", 2, "z", "s", "WEIGHTS", 2, 3, "AGGREGATE", "MAX")
    assert data(ap)[b"u"][b"a"] == 3.0 and data(ap)[b"u"][b"e"] == 10.0 and data(ap)[b"u"][b"x"] == 3.0
    run(ap, "ZINTERSTORE", "i", 2, "z", "s")
    assert data(ap)[b"i"] == {b"a": 2.0}
    run(ap, "ZREMRANGEBYLEX", "z", "[b", "(d")
    run(ap, "ZREMRANGEBYRANK", "z", -1, -1)
    run(ap, "ZREMRANGEBYSCORE", "z", "-inf", "(1.5")
    assert data(ap)[b"z"].ordered() == [(b"d", 4.0)]
    run(ap, "ZPOPMAX", "z", 3)
    assert b"z" not in data(ap)


def test_geoadd_score_matches_redis(ap, redis_server):
    r = raw_client(redis_server.port)
    rnd = random.Random(7)
    points = [(rnd.uniform(-180, 180), rnd.uniform(-85.05, 85.05), f"p{i}") for i in range(50)]
    points += [(180, 85.05112878, "edge1"), (-180, -85.05112878, "edge2"), (0, 0, "zero")]
    for lon, lat, name in points:
        r.execute_command("GEOADD", "g", lon, lat, name)
        run(ap, "GEOADD", "g", repr(lon), repr(lat), name)
    assert_same_dataset(ap.keyspace, r, dbs=[0])
    with pytest.raises(ApplyError):
        run(ap, "GEOADD", "g", 0, 86, "x")
    r.close()


# ---- streams ----


def test_stream_add_trim_delete_setid(ap):
    for i in range(1, 6):
        run(ap, "XADD", "x", f"{i}-0", "f", i)
    s = data(ap)[b"x"]
    assert isinstance(s, Stream) and s.entries_added == 5 and s.first_id == StreamID(1, 0)
    with pytest.raises(ApplyError):
        run(ap, "XADD", "x", "5-0", "f", "v")
    run(ap, "XDEL", "x", "1-0", "3-0", "9-9")
    assert s.first_id == StreamID(2, 0) and s.max_deleted_id == StreamID(3, 0)
    run(ap, "XTRIM", "x", "MAXLEN", "=", 2)
    assert list(s.entries) == [StreamID(4, 0), StreamID(5, 0)] and s.first_id == StreamID(4, 0)
    run(ap, "XADD", "x", "MINID", "=", "5-0", "LIMIT", "100", "6-1", "a", "b")
    assert list(s.entries) == [StreamID(5, 0), StreamID(6, 1)]
    run(ap, "XSETID", "x", "10-0", "ENTRIESADDED", 20, "MAXDELETEDID", "7-0")
    assert (s.last_id, s.entries_added, s.max_deleted_id) == (StreamID(10, 0), 20, StreamID(7, 0))
    with pytest.raises(ApplyError):
        run(ap, "XSETID", "x", "6-0")
    assert run(ap, "XADD", "nomk", "NOMKSTREAM", "1-1", "a", "b") == [] and b"nomk" not in data(ap)
    run(ap, "XDEL", "x", "5-0", "6-1")
    assert s.first_id == StreamID(0, 0) and len(s) == 0


def test_stream_groups_as_propagated(ap):
    run(ap, "XADD", "x", "1-0", "f", "v")
    run(ap, "XADD", "x", "2-0", "f", "v")
    run(ap, "XADD", "x", "3-0", "f", "v")
    run(ap, "XGROUP", "CREATE", "x", "g", "0", "ENTRIESREAD", 0)
    # XREADGROUP GROUP g c1 COUNT 2 STREAMS x > as a master propagates it:
    run(
        ap,
        "XCLAIM",
        "x",
        "g",
        "c1",
        0,
        "1-0",
        "TIME",
        1000,
        "RETRYCOUNT",
        1,
        "FORCE",
        "JUSTID",
        "LASTID",
        "1-0",
    )
    run(
        ap,
        "XCLAIM",
        "x",
        "g",
        "c1",
        0,
        "2-0",
        "TIME",
        1000,
        "RETRYCOUNT",
        1,
        "FORCE",
        "JUSTID",
        "LASTID",
        "2-0",
    )
    g = data(ap)[b"x"].groups[b"g"]
    assert g.last_id == StreamID(2, 0) and list(g.pending) == [StreamID(1, 0), StreamID(2, 0)]
    assert g.pending[StreamID(1, 0)].delivery_time == 1000 and g.consumers[b"c1"].pending == set(g.pending)
    # XGROUP SETID back, then a re-read of an older id by another consumer (FORCE, out of order)
    run(ap, "XACK", "x", "g", "1-0")
    run(
        ap,
        "XCLAIM",
        "x",
        "g",
        "c2",
        0,
        "1-0",
        "TIME",
        2000,
        "RETRYCOUNT",
        3,
        "FORCE",
        "JUSTID",
        "LASTID",
        "2-0",
    )
    assert list(g.pending) == [StreamID(1, 0), StreamID(2, 0)]  # kept in id order
    run(ap, "XCLAIM", "x", "g", "c2", 0, "2-0", "JUSTID")  # a claim moves ownership
    assert g.pending[StreamID(2, 0)].consumer == b"c2" and g.consumers[b"c1"].pending == set()
    assert g.pending[StreamID(2, 0)].delivery_count == 1  # JUSTID does not count a delivery
    run(ap, "XCLAIM", "x", "g", "c1", 0, "3-0", "FORCE", "JUSTID")
    assert g.pending[StreamID(3, 0)].delivery_count == 1  # a new PEL entry starts at 1
    run(ap, "XACK", "x", "g", "3-0")
    run(ap, "XDEL", "x", "1-0")
    run(ap, "XCLAIM", "x", "g", "c3", 0, "1-0", "FORCE", "JUSTID")  # deleted entry: PEL entry dropped
    assert list(g.pending) == [StreamID(2, 0)] and b"c3" not in g.consumers
    run(ap, "XGROUP", "SETID", "x", "g", "$", "ENTRIESREAD", 3)
    assert g.last_id == StreamID(3, 0) and g.entries_read == 3
    run(ap, "XGROUP", "CREATECONSUMER", "x", "g", "c9")
    assert run(ap, "XGROUP", "CREATECONSUMER", "x", "g", "c9") == []
    run(ap, "XGROUP", "DELCONSUMER", "x", "g", "c2")
    assert g.pending == {} and set(g.consumers) == {b"c1", b"c9"}
    with pytest.raises(ApplyError):
        run(ap, "XGROUP", "CREATE", "x", "g", "$")
    with pytest.raises(ApplyError):
        run(ap, "XCLAIM", "x", "nogroup", "c", 0, "1-0")
    run(ap, "XGROUP", "DESTROY", "x", "g")
    assert data(ap)[b"x"].groups == {}
    run(ap, "XGROUP", "CREATE", "new", "g", "$", "MKSTREAM")
    assert data(ap)[b"new"].groups[b"g"].last_id == StreamID(0, 0)


# ---- client forms, checked against a real server ----

CLIENT_FORMS = [
    ["SET", "s1", "v", "EX", 500],
    ["SETEX", "s2", 500, "v"],
    ["PSETEX", "s3", 500000, "v"],
    ["SET", "s4", "10.5"],
    ["INCRBYFLOAT", "s4", "0.1"],
    ["INCRBYFLOAT", "s5", "-3.25e2"],
    ["GETEX", "s1", "PERSIST"],
    ["GETEX", "s2", "PX", 400000],
    ["GETDEL", "s3"],
    ["EXPIRE", "s4", 300],
    ["PEXPIRE", "s4", 200000, "LT"],
    ["EXPIREAT", "s2", 4102444800],
    ["HSET", "h", "f", "1.5"],
    ["HINCRBYFLOAT", "h", "f", "0.25"],
    ["HINCRBYFLOAT", "h", "g", "1e2"],
    ["RPUSH", "l", "a", "b", "c"],
    ["BLPOP", "nol", "l", 1],
    ["BRPOP", "l", 1],
    ["RPUSH", "l", "x", "y"],
    ["BLMOVE", "l", "l2", "LEFT", "RIGHT", 1],
    ["BRPOPLPUSH", "l", "l2", 1],
    ["LMPOP", 2, "nol", "l2", "RIGHT", "COUNT", 5],
    ["BLMPOP", 1, 1, "l", "LEFT"],
    ["ZADD", "z", 1, "a", 2, "b", 3, "c"],
    ["BZPOPMIN", "z", 1],
    ["BZPOPMAX", "z", 1],
    ["ZADD", "z", 1, "a", 2, "b", 3, "c"],
    ["ZMPOP", 1, "z", "MIN", "COUNT", 2],
    ["BZMPOP", 1, 1, "z", "MAX"],
    ["SET", "s6", "v"],
    ["EXPIRE", "s6", -1],
    ["ZADD", "z2", 1, "x", 2, "y"],
    ["SORT", "z2", "BY", "nosort", "DESC", "STORE", "sorted"],
    ["SADD", "st", 3, 1, 2, "10"],
    ["SORT", "st", "STORE", "sorted2"],
    ["SORT", "st", "BY", "nosort", "STORE", "sorted3"],
]


def test_client_forms_match_server(ap, redis_server):
    r = raw_client(redis_server.port)
    for argv in CLIENT_FORMS:
        r.execute_command(*argv)
        run(ap, *argv)
    assert_same_dataset(ap.keyspace, r, dbs=[0])
    assert data(ap)[b"s4"] == b"10.6"
    r.close()


def test_apply_into_a_given_keyspace():
    ks = Keyspace()
    ks.db(0).data[b"pre"] = b"loaded"
    ap = Applier(ks)
    run(ap, "APPEND", "pre", "+more")
    assert ks.db(0).data[b"pre"] == b"loaded+more"
    ap.reset(Keyspace())
    assert ap.keyspace is not ks and ap.db == 0


def test_sort_store_weights_read_like_strtod(ap, redis_server):
    r = raw_client(redis_server.port)
    setup = [
        ["RPUSH", "l", "a", "b", "c", "d", "e", "f", "g"],
        ["SET", "w:a", ""],
        ["SET", "w:b", b"7\x00junk"],
        ["SET", "w:c", "  2.5"],
        ["SET", "w:d", "0x10"],
        ["SET", "w:e", "-inf"],
        ["HSET", "h:a", "n", "3"],
        ["HSET", "h:b", "n", "1e1"],
    ]
    for argv in setup:
        r.execute_command(*argv)
        run(ap, *argv)
    for by in ("w:*", "h:*->n", "nosuch:*"):
        for extra in ([], ["DESC"], ["LIMIT", 1, 3], ["GET", "#", "GET", "w:*", "GET", "h:*->n"]):
            argv = ["SORT", "l", "BY", by, *extra, "STORE", f"out:{by}:{len(extra)}"]
            r.execute_command(*argv)
            run(ap, *argv)
    assert_same_dataset(ap.keyspace, r, dbs=[0])
    for bad in ("abc", "1 ", "nan", "1_0"):
        r.execute_command("SET", "w:a", bad)
        run(ap, "SET", "w:a", bad)
        with pytest.raises(redis.ResponseError):
            r.execute_command("SORT", "l", "BY", "w:*", "STORE", "bad")
        with pytest.raises(ApplyError):
            run(ap, "SORT", "l", "BY", "w:*", "STORE", "bad")
    r.close()


def test_newer_hash_and_set_forms(ap):
    fexp = ap.keyspace.db(0).field_expires
    run(ap, "HSETEX", "h", "PXAT", 9000, "FIELDS", 2, "a", "1", "b", "2")
    assert data(ap)[b"h"] == {b"a": b"1", b"b": b"2"} and fexp[b"h"] == {b"a": 9000, b"b": 9000}
    assert run(ap, "HSETEX", "h", "FNX", "FIELDS", 1, "a", "x") == []
    assert run(ap, "HSETEX", "h", "FXX", "FIELDS", 2, "a", "x", "c", "3") == []
    run(ap, "HSETEX", "h", "KEEPTTL", "FIELDS", 1, "a", "new")
    assert fexp[b"h"][b"a"] == 9000 and data(ap)[b"h"][b"a"] == b"new"
    run(ap, "HSETEX", "h", "FIELDS", 1, "a", "newer")
    assert fexp[b"h"] == {b"b": 9000}
    run(ap, "HGETEX", "h", "PXAT", 7000, "FIELDS", 1, "a")
    assert fexp[b"h"] == {b"a": 7000, b"b": 9000}
    run(ap, "HGETEX", "h", "PERSIST", "FIELDS", 1, "a")
    assert fexp[b"h"] == {b"b": 9000}
    run(ap, "HGETDEL", "h", "FIELDS", 2, "a", "b")
    assert data(ap) == {} and fexp == {}
    run(ap, "SET", "k", "v1")
    assert run(ap, "SET", "k", "v2", "IFEQ", "other") == []
    run(ap, "SET", "k", "v2", "IFEQ", "v1")
    assert data(ap)[b"k"] == b"v2"
    assert run(ap, "SET", "k", "v3", "IFNE", "v2") == []
    assert run(ap, "SET", "absent", "v", "IFEQ", "x") == [] and b"absent" not in data(ap)
    assert run(ap, "HSETEX", "h2", "XX", "FIELDS", 1, "a", "1") == [] and b"h2" not in data(ap)
    run(ap, "HSETEX", "h2", "NX", "FIELDS", 1, "a", "1")
    assert run(ap, "HSETEX", "h2", "NX", "FIELDS", 1, "b", "2") == [] and data(ap)[b"h2"] == {b"a": b"1"}
    assert run(ap, "DELIFEQ", "k", "other") == [] and run(ap, "DELIFEQ", "k", "v2") == [(0, b"k")]
    with pytest.raises(ApplyError):
        run(ap, "DELIFEQ", "h2", "x")


def test_geo_searches_with_store_match_server(ap, redis_server):
    """GEOSEARCHSTORE / GEORADIUS STORE are propagated verbatim: replay Redis's search."""
    r = raw_client(redis_server.port)
    rnd = random.Random(11)
    centres = [(13.4, 52.5), (-179.9, 10.0), (179.95, -20.0), (0.0, 84.9), (100.0, -84.0), (0.0, 0.0)]

    def both(*argv):
        try:
            r.execute_command(*argv)
        except Exception:
            with pytest.raises(ApplyError):
                run(ap, *argv)
            return
        run(ap, *argv)

    for i in range(400):
        lon0, lat0 = rnd.choice(centres)
        spread = rnd.choice([0.01, 0.5, 5, 40])
        lon = max(-180, min(180, lon0 + rnd.uniform(-spread, spread)))
        lat = max(-85.05, min(85.05, lat0 + rnd.uniform(-spread, spread)))
        both("GEOADD", "pts", repr(lon), repr(lat), f"m{i}")
    both("GEOADD", "pts", 13.4, 52.5, "dup1", 13.4, 52.5, "dup2")  # equal distances
    for i in range(300):
        lon0, lat0 = rnd.choice(centres)
        lon = max(-180, min(180, lon0 + rnd.uniform(-1, 1)))
        lat = max(-85.05, min(85.05, lat0 + rnd.uniform(-1, 1)))
        unit = rnd.choice(["m", "km", "mi", "ft"])
        size = {"m": 200000, "km": 300, "mi": 150, "ft": 500000}[unit] * rnd.choice([0.001, 0.1, 1, 5])
        extra = rnd.choice(
            [[], ["COUNT", 3], ["COUNT", 5, "ANY"], ["DESC"], ["ASC", "COUNT", 2], ["COUNT", 1, "ANY"]]
        )
        dest = f"out{i % 7}"
        c = rnd.randint(0, 3)
        if c == 0:
            both(
                "GEORADIUS",
                "pts",
                repr(lon),
                repr(lat),
                size,
                unit,
                *extra,
                rnd.choice(["STORE", "STOREDIST"]),
                dest,
            )
        elif c == 1:
            both(
                "GEORADIUSBYMEMBER",
                "pts",
                f"m{rnd.randint(0, 399)}",
                size,
                unit,
                *extra,
                rnd.choice(["STORE", "STOREDIST"]),
                dest,
            )
        elif c == 2:
            both(
                "GEOSEARCHSTORE",
                dest,
                "pts",
                "FROMLONLAT",
                repr(lon),
                repr(lat),
                "BYBOX",
                size,
                size * rnd.choice([0.2, 1, 3]),
                unit,
                *extra,
                *rnd.choice([[], ["STOREDIST"]]),
            )
        else:
            both(
                "GEOSEARCHSTORE",
                dest,
                "pts",
                "FROMMEMBER",
                f"m{rnd.randint(0, 399)}",
                "BYRADIUS",
                size,
                unit,
                *extra,
                *rnd.choice([[], ["STOREDIST"]]),
            )
    assert_same_dataset(ap.keyspace, r, dbs=[0])
    assert sum(len(data(ap).get(f"out{i}".encode(), ())) for i in range(7)) > 10  # searches found points
    both("GEOSEARCHSTORE", "out0", "nosuchkey", "FROMLONLAT", 0, 0, "BYRADIUS", 1, "km")
    assert b"out0" not in data(ap)
    r.close()


def test_copy_of_a_stream_is_independent(ap):
    run(ap, "XADD", "x", "1-0", "f", "v")
    run(ap, "XGROUP", "CREATE", "x", "g", "0")
    run(ap, "XCLAIM", "x", "g", "c", 0, "1-0", "FORCE", "JUSTID")
    run(ap, "COPY", "x", "y")
    run(ap, "XADD", "x", "2-0", "f", "v")
    run(ap, "XCLAIM", "x", "g", "d", 0, "1-0", "RETRYCOUNT", 5)
    y = data(ap)[b"y"]
    assert list(y.entries) == [StreamID(1, 0)] and y.last_id == StreamID(1, 0)
    p = y.groups[b"g"].pending[StreamID(1, 0)]
    assert (p.consumer, p.delivery_count) == (b"c", 1) and set(y.groups[b"g"].consumers) == {b"c"}
    assert y.groups[b"g"].consumers[b"c"].pending == {StreamID(1, 0)}


def _canon(v):
    t = type(v)
    if t is bytes:
        return v
    if t is deque:
        return ("l", tuple(v))
    if t is Set:  # a small set's order and every set's encoding must come back too
        return ("s", v.encoding, frozenset(v) if v.encoding == "hashtable" else tuple(v.ordered()))
    if t is ZSet:
        return ("z", tuple(sorted(v.items())))
    if t is dict or t is PackedHash:
        return ("h", tuple(sorted(v.items())))
    groups = tuple(
        sorted(
            (
                n,
                g.last_id,
                g.entries_read,
                tuple((sid, p.consumer, p.delivery_time, p.delivery_count) for sid, p in g.pending.items()),
                tuple(sorted((c, frozenset(k.pending)) for c, k in g.consumers.items())),
            )
            for n, g in v.groups.items()
        )
    )
    return (
        "x",
        tuple((sid, tuple(f)) for sid, f in v.entries.items()),
        v.last_id,
        v.first_id,
        v.entries_added,
        v.max_deleted_id,
        groups,
    )


def _state(ks):
    return {
        n: (
            {k: _canon(v) for k, v in db.data.items()},
            dict(db.expires),
            {k: dict(f) for k, f in db.field_expires.items()},
        )
        for n, db in ks.dbs.items()
    }, list(ks.functions)


def _big_dataset(seed):
    ap = Applier()
    rnd = random.Random(seed)
    for db in (0, 1):
        ap.select(db)
        for i in range(3):
            size = rnd.choice([5, 300, 700])
            run(ap, "RPUSH", f"l{i}", *[f"e{j}" for j in range(size)])
            run(ap, "SADD", f"s{i}", *[f"m{j}" for j in range(size)])
            run(ap, "HSET", f"h{i}", *[x for j in range(size) for x in (f"f{j}", str(j))])
            run(ap, "ZADD", f"z{i}", *[x for j in range(size) for x in (str(j / 3), f"m{j}")])
            for j in range(size):
                run(ap, "XADD", f"x{i}", f"{j + 1}-0", "f", str(j))
            run(ap, "XGROUP", "CREATE", f"x{i}", "g", "0")
            run(ap, "SET", f"str{i}", str(i))
            run(ap, "PEXPIREAT", f"l{i}", 4102444800000 + i)
            run(ap, "HPEXPIREAT", f"h{i}", 4102444800000, "FIELDS", 1, "f1")
    ap.select(0)
    return ap


def _random_command(rnd):
    i = rnd.randint(0, 2)
    k = lambda p: f"{p}{rnd.randint(0, 2)}"
    return rnd.choice(
        [
            ["LPUSH", f"l{i}", "a", "b"],
            ["RPUSH", f"l{i}", "c"],
            ["LPOP", f"l{i}", rnd.randint(0, 3)],
            ["RPOP", f"l{i}"],
            ["LSET", f"l{i}", 0, "z"],
            ["LTRIM", f"l{i}", 1, -2],
            ["LPUSHX", f"l{i}", "q"],
            ["SADD", f"s{i}", "m1", "new"],
            ["SREM", f"s{i}", "m2", "m3"],
            ["SINTERSTORE", k("s"), f"s{i}", k("s")],
            ["HSET", f"h{i}", "f1", "x", "new", "y"],
            ["HDEL", f"h{i}", "f2"],
            ["HINCRBY", f"h{i}", "f3", 5],
            ["ZADD", f"z{i}", "GT", 100, "m1", 1, "new"],
            ["ZINCRBY", f"z{i}", 2, "m4"],
            ["ZREM", f"z{i}", "m5"],
            ["XADD", f"x{i}", f"{10**6 + rnd.randint(0, 10**6)}-0", "f", "v"],
            ["XDEL", f"x{i}", "3-0"],
            ["XADD", f"x{i}", "MAXLEN", "=", 100, f"{10**7 + rnd.randint(0, 10**6)}-0", "f", "v"],
            ["XCLAIM", f"x{i}", "g", "c", 0, "5-0", "TIME", 1000, "FORCE", "JUSTID"],
            ["PEXPIREAT", k("l"), 4102444800999],
            ["PERSIST", k("l")],
            ["DEL", k("l"), k("s")],
            ["UNLINK", k("z")],
            ["RENAME", k("h"), k("h")],
            ["SET", k("str"), "v"],
            ["INCR", k("str")],
            ["SELECT", rnd.randint(0, 2)],
            ["SWAPDB", 0, 1],
            ["FLUSHDB"],
            ["MOVE", k("s"), 1],
            ["COPY", k("z"), k("z"), "DB", 1, "REPLACE"],
            ["HPEXPIREAT", f"h{i}", 5, "FIELDS", 1, "f2"],
            ["FUNCTION", "LOAD", "REPLACE", "#!lua name=t\nredis.register_function('f', function() end)"],
        ]
    )


@pytest.mark.parametrize("seed", range(12))
def test_transactions_on_big_values_apply_or_roll_back_exactly(seed):
    rnd = random.Random(seed)
    reference, subject = _big_dataset(seed), _big_dataset(seed)
    for _ in range(15):
        body = []
        for _ in range(rnd.randint(1, 8)):
            argv = A(*_random_command(rnd))
            try:
                reference.apply(argv)
            except ApplyError:
                continue  # a handler checks before it changes anything
            body.append(argv)
        fail = rnd.random() < 0.5
        before = _state(subject.keyspace), subject.db
        subject.apply([b"MULTI"])
        for argv in body:
            subject.apply(argv)
        if fail:
            subject.apply(A("LSET", "nosuchkey", 0, "x"))
            with pytest.raises(ApplyError):
                subject.apply([b"EXEC"])
            assert (_state(subject.keyspace), subject.db) == before
            for argv in body:  # now without the failure, to stay in step with the reference
                subject.apply(argv)
        else:
            subject.apply([b"EXEC"])
        assert (_state(subject.keyspace), subject.db) == (_state(reference.keyspace), reference.db)


def test_apply_all_is_apply_in_order_and_says_where_it_failed():
    stream = [
        A("SET", "s", "1"),
        A("lpush", "l", "a", "b"),
        A("HSET", "h", "f", "v", "g", "w"),
        A("MuLtI"),
        A("set", "t", "2"),
        A("rpush", "l", "c"),
        A("exec"),
        A("SELECT", "1"),
        A("Set", "s", "3"),
    ]
    one, bulk = Applier(), Applier()
    for argv in stream:
        one.apply(argv)
    assert bulk.apply_all(stream) == len(stream)
    assert one.keyspace.dbs.keys() == bulk.keyspace.dbs.keys()
    for n in one.keyspace.dbs:
        assert data(one, n) == data(bulk, n)
    assert data(bulk)[b"l"] == deque([b"b", b"a", b"c"])
    assert bulk.applied == one.applied

    ap = Applier()
    with pytest.raises(ApplyError) as e:
        ap.apply_all([A("SET", "s", "x"), A("LPUSH", "s", "a"), A("SET", "u", "y")])
    assert e.value.index == 1 and "WRONGTYPE" in str(e.value)
    assert data(ap) == {b"s": b"x"}  # nothing after the failed command
    with pytest.raises(ApplyError) as e:
        ap.apply_all([A("DEL", "s"), A("NOSUCHCOMMAND", "s"), A("SET", "u", "y")])
    assert e.value.index == 1 and data(ap) == {}
    with pytest.raises(ApplyError) as e:
        ap.apply_all([A("HSET", "h", "f")])  # wrong number of arguments
    assert e.value.index == 0


def test_apply_all_tells_how_far_it_got_when_interrupted():
    class Interrupted(Applier):
        def cmd_boom(self, argv):
            raise KeyboardInterrupt

    ap = Interrupted()
    with pytest.raises(KeyboardInterrupt) as e:
        ap.apply_all([A("SET", "a", "1"), A("SET", "b", "2"), A("BOOM"), A("SET", "c", "3")])
    assert e.value.index == 2 and data(ap) == {b"a": b"1", b"b": b"2"}
