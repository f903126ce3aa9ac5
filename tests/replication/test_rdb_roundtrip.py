"""RDB round trips through a real redis-server: every type saved by Redis, parsed
whole, in chunks and byte by byte, truncated and corrupted, and as DUMP payloads."""

import os
import random
from collections import deque
from pathlib import Path

import pytest
import redis
from test_rdb import expect_id, parse, snapshot, stream_picture

from greenredis.replication.keyspace import (
    Consumer,
    ConsumerGroup,
    Keyspace,
    PackedHash,
    PendingEntry,
    Set,
    Stream,
    ZSet,
)
from greenredis.replication.rdb.crc64 import crc64
from greenredis.replication.rdb.parser import RDBError, RDBParser, decode_dump


def fill_everything(r):
    """Every type and encoding redis-server 7.0 writes, small and large."""
    r.config_set("list-compress-depth", "1")
    r.set("str:short", "hello")
    r.set("str:int8", "12")
    r.set("str:int16", "-1234")
    r.set("str:int32", "2147483647")
    r.set("str:int64", "9223372036854775807")
    r.set("str:lzf", "compress me " * 100)
    r.set("str:big", os.urandom(100_000))
    r.set("str:empty", "")
    r.set(b"bin\x00\xff", b"\r\n\x00")
    # listpack entries of every encoding: 7-bit uint, 13/16/24/32/64-bit ints, 6/12/32-bit
    # length strings
    r.rpush(
        "list:small",
        "a",
        "b",
        1,
        -2,
        1000,
        -4000,
        30000,
        300000,
        2147483647,
        1099511627776,
        -9223372036854775808,
        "x" * 70,
        "y" * 5000,
    )
    r.rpush("list:big", *[f"element-{i}" for i in range(5000)])
    r.rpush("list:compressed", *[f"compressible-{i:06d}-" + "z" * 60 for i in range(3000)])
    r.execute_command("DEBUG", "QUICKLIST-PACKED-THRESHOLD", "100")
    r.rpush("list:plain", "small", "P" * 500, "tail")
    r.execute_command("DEBUG", "QUICKLIST-PACKED-THRESHOLD", str(1 << 30))
    r.sadd("set:intset", 1, 2, 3, -70000, 5_000_000_000)
    r.sadd("set:ints", *range(1000))
    r.sadd("set:strings", "a", "b", "c")
    r.sadd("set:big", *[f"m{i}" for i in range(1000)])
    r.hset("hash:small", mapping={"f1": "v1", "n": 42, "neg": -7, "e": ""})
    r.hset("hash:big", mapping={f"field-{i}": f"value-{i}" for i in range(1000)})
    r.hset("hash:longvalue", mapping={"a": "1", "long": "L" * 100})
    r.zadd(
        "zset:small",
        {
            "a": 1,
            "b": 2.5,
            "c": -3.25,
            "inf": float("inf"),
            "ninf": float("-inf"),
            "tiny": 1e-300,
            "third": 1 / 3,
        },
    )
    r.zadd("zset:big", {f"m{i}": i / 7 for i in range(1000)})
    r.zadd("zset:big", {"top": float("inf"), "bottom": float("-inf")})
    for i in range(1, 40):
        r.xadd("stream:s", {"i": i, "payload": "p" * (i % 7)}, id=f"1700000000000-{i}")
    r.xadd("stream:s", {"other": "fields", "here": "x"}, id="1700000000001-0")
    r.xdel("stream:s", "1700000000000-5")
    r.xgroup_create("stream:s", "g1", id="0")
    r.xgroup_create("stream:s", "g2", id="$")
    r.xreadgroup("g1", "alice", {"stream:s": ">"}, count=5)
    r.xreadgroup("g1", "bob", {"stream:s": ">"}, count=3)
    r.xack("stream:s", "g1", "1700000000000-2")
    r.xclaim("stream:s", "g1", "bob", 0, ["1700000000000-3"])
    r.execute_command("XGROUP", "CREATECONSUMER", "stream:s", "g1", "carol")
    r.xadd("stream:empty", {"a": 1}, id="5-1")
    r.xdel("stream:empty", "5-1")
    r.set("ttl:string", "v", pxat=4102444800123)
    r.rpush("ttl:list", "x")
    r.pexpireat("ttl:list", 4133980800456)
    r.select(3)
    r.set("db3:key", "three")
    r.hset("db3:hash", "f", "v")
    r.select(15)
    r.sadd("db15:set", "z")
    r.select(0)


def read_back(r):
    """The server's content in the Keyspace model, read with redis-py."""
    ks = Keyspace()
    for dbnum in range(16):
        r.select(dbnum)
        for key in r.scan_iter(count=1000):
            t = r.type(key).decode()
            if t == "string":
                v = r.get(key)
            elif t == "list":
                v = deque(r.lrange(key, 0, -1))
            elif t == "set":
                v = Set(encoding=r.object("encoding", key).decode())
                v.update(dict.fromkeys(r.execute_command("SMEMBERS", key)))
            elif t == "hash":
                v = r.hgetall(key)
            elif t == "zset":
                v = ZSet(r.zrange(key, 0, -1, withscores=True))
            else:
                v = read_stream(r, key)
            db = ks.db(dbnum)
            db.data[key] = v
            ms = r.pexpiretime(key)
            if ms > 0:
                db.expires[key] = ms
    r.select(0)
    return ks


def read_stream(r, key):
    s = Stream()
    for sid, fields in r.xrange(key):
        s.entries[expect_id(sid.decode())] = list(fields.items())
    info = r.execute_command("XINFO", "STREAM", key, "FULL", "COUNT", 0)
    s.last_id = expect_id(info[b"last-generated-id"].decode())
    s.max_deleted_id = expect_id(info[b"max-deleted-entry-id"].decode())
    s.entries_added = info[b"entries-added"]
    s.first_id = expect_id(info[b"recorded-first-entry-id"].decode())
    for g in info[b"groups"]:
        group = ConsumerGroup(
            g[b"name"],
            expect_id(g[b"last-delivered-id"].decode()),
            -1 if g[b"entries-read"] is None else g[b"entries-read"],
        )
        for sid, consumer, t, n in g[b"pending"]:
            group.pending[expect_id(sid.decode())] = PendingEntry(consumer, t, n)
        for c in g[b"consumers"]:
            group.consumers[c[b"name"]] = Consumer(
                c[b"name"], c[b"seen-time"], -1, {expect_id(p[0].decode()) for p in c[b"pending"]}
            )
        s.groups[g[b"name"]] = group
    return s


@pytest.fixture(scope="module")
def saved_dump():
    """A redis-server filled with every type, its dump.rdb and what redis-py reads back."""
    from greenredis.server import RedisServer

    with RedisServer(debug=True, persist=True) as server:
        r = redis.Redis(port=server.port)
        fill_everything(r)
        dumps = {}
        for key in [
            b"str:short",
            b"str:int8",
            b"str:lzf",
            b"str:big",
            b"list:small",
            b"list:big",
            b"list:compressed",
            b"list:plain",
            b"set:intset",
            b"set:ints",
            b"set:strings",
            b"hash:small",
            b"hash:big",
            b"zset:small",
            b"zset:big",
            b"stream:s",
            b"stream:empty",
        ]:
            dumps[key] = r.dump(key)
        expected = read_back(r)
        r.save()
        data = Path(server.dir, "dump.rdb").read_bytes()
        r.close()
    return data, expected, dumps


def test_round_trip_every_type(saved_dump):
    data, expected, _ = saved_dump
    p, ks = parse(data)
    assert p.version == 10 and p.checksum != 0
    assert sorted(ks.dbs) == sorted(expected.dbs)
    for n, want in expected.dbs.items():
        got = ks.dbs[n]
        assert set(got.data) == set(want.data)
        for key, value in want.data.items():
            if isinstance(value, Stream):
                assert stream_picture(got.data[key]) == stream_picture(value), key
            else:
                got_type = type(got.data[key])
                assert (dict if got_type is PackedHash else got_type) is type(value), key
                assert got.data[key] == value, key
        assert got.expires == want.expires
    assert ks.dbs[0].data[b"zset:small"].ordered()[0] == (b"ninf", float("-inf"))
    assert ks.dbs[0].data[b"stream:s"].groups[b"g1"].consumers[b"bob"].pending


def test_round_trip_incremental_feeding(saved_dump):
    data, _, _ = saved_dump
    whole = snapshot(parse(data)[1])
    rnd = random.Random(7)
    assert snapshot(parse(data, lambda: rnd.randint(1, 200))[1]) == whole
    assert snapshot(parse(data, 64 * 1024)[1]) == whole
    # One byte at a time, over the part of the file with the big collections.
    p = RDBParser()
    for i in range(len(data)):
        p.feed(data[i : i + 1])
    assert snapshot(p.finish()) == whole


def test_truncation_at_many_offsets_is_an_error(saved_dump):
    data, _, _ = saved_dump
    rnd = random.Random(3)
    offsets = (
        set(range(0, 40))
        | {len(data) - k for k in range(1, 20)}
        | {rnd.randrange(len(data)) for _ in range(120)}
    )
    for cut in sorted(offsets):
        p = RDBParser()
        p.feed(data[:cut])  # a prefix is never an error by itself
        assert not p.done
        with pytest.raises(RDBError, match="truncated"):
            p.finish()
        assert p.bytes_parsed <= cut


def test_flipped_byte_fails_the_checksum(saved_dump):
    data, expected, _ = saved_dump
    # A byte inside a string value: the structure stays valid, only the CRC catches it.
    at = data.index(b"hello") + 1
    bad = bytearray(data)
    bad[at] ^= 0x20
    with pytest.raises(RDBError, match="checksum mismatch"):
        parse(bytes(bad), 4096)
    # Anywhere else: always an RDBError, never a wrong dataset or another exception.
    rnd = random.Random(5)
    for _ in range(60):
        bad = bytearray(data)
        bad[rnd.randrange(9, len(data))] ^= 1 << rnd.randrange(8)
        with pytest.raises(RDBError):
            parse(bytes(bad))


def test_decode_dump_of_every_type(saved_dump):
    _, expected, dumps = saved_dump
    for key, payload in dumps.items():
        value = decode_dump(payload)
        want = expected.dbs[0].data[key]
        if isinstance(want, Stream):
            assert stream_picture(value) == stream_picture(want)
        else:
            assert type(value) is type(want) and value == want, key
    payload = bytearray(dumps[b"hash:small"])
    payload[3] ^= 0xFF
    with pytest.raises(RDBError, match="checksum"):
        decode_dump(bytes(payload))
    with pytest.raises(RDBError, match="too short"):
        decode_dump(b"\x00\x01")
    with pytest.raises(RDBError, match="truncated"):
        body = b"\x00\x05ab"
        decode_dump(body + b"\x0a\x00" + crc64(body + b"\x0a\x00").to_bytes(8, "little"))


def test_on_key_callback_and_store_false(saved_dump):
    data, expected, _ = saved_dump
    seen = {}
    p = RDBParser(store=False, on_key=lambda db, k, v, e: seen.__setitem__((db, k), (v, e)))
    for i in range(0, len(data), 5000):
        p.feed(data[i : i + 5000])
    ks = p.finish()
    assert ks.key_count() == 0
    assert p.keys_loaded == len(seen) == expected.key_count()
    assert seen[(0, b"ttl:string")] == (b"v", 4102444800123)
    assert seen[(3, b"db3:key")] == (b"three", None)
