"""Tests of the RDB parser on bytes alone: public fixtures from many Redis versions,
incremental feeding, truncation and corruption, DUMP payloads. Round trips through a
real redis-server are in test_rdb_roundtrip.py."""

import base64
import json
import math
import os
import random
import re
from collections import deque
from pathlib import Path

import pytest

from greenredis.replication.keyspace import (
    Keyspace,
    PackedHash,
    Set,
    Stream,
    StreamID,
    ZSet,
)
from greenredis.replication.rdb.crc64 import crc64
from greenredis.replication.rdb.encodings import EncodingError, listpack_dict, listpack_entries
from greenredis.replication.rdb.parser import RDBError, RDBParser, decode_dump, load_file

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "rdb"
ALL_RDB = (
    sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.rdb")) if FIXTURES.is_dir() else []
)

# Skipped only outside CI: CI has ../shared beside the clone, so there they must run.
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir() and not os.environ.get("CI"), reason=f"shared RDB fixtures not found at {FIXTURES}"
)

pytestmark = pytest.mark.unit  # pure: no server, no sockets

# Files the MANIFEST marks as broken or unsupported, and the error each must give.
EXPECTED_ERRORS = {
    "redis-librdb/future_v19.rdb": "unsupported RDB version 99",
    "redis-librdb/invalid_chksum_v8.rdb": "checksum mismatch",
    "redis-librdb/redis_ent_opcode_ram_lru.rdb": "unknown RDB value type 107",
    "valkey-io-valkey/corrupt_ziplist.rdb": "ziplist",
    "leonchen83-redis-replicator/module.rdb": r"type 6\)",
}
# Synthetic merges by redis-rdb-cli hold the same key twice in a db: redis-server refuses
# them ("Duplicated key"), so do we, unless asked to let the later record win.
DUPLICATE_KEY_FILES = {
    "leonchen83-redis-rdb-cli/rct/all.rdb",
    "leonchen83-redis-rdb-cli/rdt/12.rdb",
    "leonchen83-redis-rdb-cli/rdt/34.rdb",
    "leonchen83-redis-rdb-cli/rdt/89.rdb",
    "leonchen83-redis-rdb-cli/rdt/dump.rdb",
    "leonchen83-redis-rdb-cli/rdt/filter.rdb",
}


def parse(data, chunk=None, **kwargs):
    p = RDBParser(**kwargs)
    if chunk is None:
        p.feed(data)
    else:
        sizes = chunk if callable(chunk) else (lambda: chunk)
        i = 0
        while i < len(data):
            n = sizes()
            p.feed(data[i : i + n])
            i += n
    return p, p.finish()


def fixture(rel):
    return (FIXTURES / rel).read_bytes()


def snapshot(ks):
    """A comparable plain-data picture of a Keyspace."""
    out = {}
    for n, db in ks.dbs.items():
        data = {}
        for k, v in db.data.items():
            data[k] = stream_picture(v) if isinstance(v, Stream) else (type(v).__name__, v)
        out[n] = (data, dict(db.expires), {k: dict(v) for k, v in db.field_expires.items()})
    return out, list(ks.functions), dict(ks.aux)


def stream_picture(s):
    groups = {}
    for name, g in s.groups.items():
        groups[name] = (
            g.last_id,
            g.entries_read,
            {i: (e.consumer, e.delivery_time, e.delivery_count) for i, e in g.pending.items()},
            {c.name: (c.seen_time, c.active_time, sorted(c.pending)) for c in g.consumers.values()},
        )
    return (
        "stream",
        list(s.entries.items()),
        s.last_id,
        s.first_id,
        s.max_deleted_id,
        s.entries_added,
        groups,
    )


# --- text normalisation for expectation files written by other tools ----------------


def same_text(expected, got):
    """Does the JSON string ``expected`` (from another tool) denote the bytes ``got``?"""
    if isinstance(expected, dict) and "b64" in expected:
        return base64.b64decode(expected["b64"]) == got
    if not isinstance(expected, str):
        expected = str(expected)
    if got.decode("utf-8", "replace") == expected or got.decode("latin-1") == expected:
        return True
    try:
        return got.decode("utf-8") == expected
    except UnicodeDecodeError:
        # Tools differ in how many U+FFFD they write per invalid sequence.
        return re.sub("\ufffd+", "?", got.decode("utf-8", "replace")) == re.sub("\ufffd+", "?", expected)


def find_key(db_data, expected_name):
    for k in db_data:
        if same_text(expected_name, k):
            return k
    raise AssertionError(f"key {expected_name!r} not loaded")


def same_score(expected, got):
    if isinstance(expected, str):
        expected = float(expected)
    if math.isnan(got):
        return math.isnan(expected)
    return expected == got or math.isclose(expected, got, rel_tol=1e-15)


def same_set(expected, got):
    assert len(expected) == len(got), (len(expected), len(got))
    remaining = set(got)
    for e in expected:
        match = next((g for g in remaining if same_text(e, g)), None)
        assert match is not None, f"{e!r} not in the loaded set"
        remaining.discard(match)


def same_hash(expected, got):
    assert len(expected) == len(got)
    for f, v in expected.items():
        k = find_key(got, f)
        assert same_text(v, got[k]), (f, v, got[k])


def same_zset(expected, got):
    """expected: {member: score} in any form."""
    assert len(expected) == len(got)
    for m, s in expected.items():
        k = find_key(got, m)
        assert same_score(s, got[k]), (m, s, got[k])


# --- every fixture ---------------------------------------------------------------------


@needs_fixtures
def test_fixture_folder_is_complete():
    assert len(ALL_RDB) >= 140
    for rel in list(EXPECTED_ERRORS) + list(DUPLICATE_KEY_FILES):
        assert rel in ALL_RDB, rel


@needs_fixtures
@pytest.mark.parametrize("rel", ALL_RDB)
def test_fixture(rel):
    data = fixture(rel)
    if rel in EXPECTED_ERRORS:
        with pytest.raises(RDBError, match=EXPECTED_ERRORS[rel]):
            parse(data)
        # The same error when fed in pieces (the error is sticky afterwards).
        p = RDBParser()
        with pytest.raises(RDBError, match=EXPECTED_ERRORS[rel]):
            for i in range(0, len(data), 97):
                p.feed(data[i : i + 97])
            p.finish()
        with pytest.raises(RDBError):
            p.finish()
        return
    kwargs = {}
    if rel in DUPLICATE_KEY_FILES:
        with pytest.raises(RDBError, match="duplicated key"):
            parse(data)
        kwargs["duplicates"] = "replace"
    p, ks = parse(data, **kwargs)
    assert p.done and p.version in (*range(1, 13), 80)
    assert p.bytes_parsed + len(p.trailing) == len(data)
    if rel in DUPLICATE_KEY_FILES:
        assert p.duplicates_replaced > 0
    whole = snapshot(ks)
    # Incremental feeding gives the very same dataset, whatever the chunking.
    if len(data) <= 60_000:
        assert snapshot(parse(data, 1, **kwargs)[1]) == whole
    rnd = random.Random(rel)
    assert snapshot(parse(data, lambda: rnd.randint(1, 3000), **kwargs)[1]) == whole


@needs_fixtures
def test_fixture_with_empty_collections_skips_them_like_redis():
    p, ks = parse(fixture("valkey-io-valkey/corrupt_empty_keys.rdb"))
    assert ks.key_count() == 0
    assert p.empty_keys_skipped == 9  # one per record: 8 types, 2 quicklists


@needs_fixtures
def test_fixture_trailing_bytes_are_kept():
    data = fixture("sripathikrishnan-redis-rdb-tools/redis_40_with_module.rdb")
    p, ks = parse(data)
    assert len(p.trailing) == 40
    assert p.checksum == 0  # rdbchecksum no
    assert p.modules_skipped == 1


# --- expectation files ------------------------------------------------------------------

GENERATED = ["redis-7.0.15-all-types", "redis-7.0.15-lfu-nocompress-nochecksum", "redis-7.0.15-lru"]


def expect_bytes(v):
    return base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()


def expect_id(text):
    ms, seq = text.split("-")
    return StreamID(int(ms), int(seq))


@needs_fixtures
@pytest.mark.parametrize("name", GENERATED)
def test_generated_fixture_content(name):
    expect = json.loads(fixture(f"generated/{name}.json"))
    p, ks = parse(fixture(f"generated/{name}.rdb"))
    assert ks.key_count() == len(expect["keys"])
    for entry in expect["keys"].values():
        db = ks.dbs[entry["db"]]
        key = expect_bytes(entry["key"])
        got = db.data[key]
        want = entry["value"]
        assert db.expires.get(key) == entry["expire_ms"], key
        t = entry["type"]
        if t == "string":
            assert got == expect_bytes(want)
        elif t == "list":
            assert isinstance(got, deque) and list(got) == [expect_bytes(x) for x in want]
        elif t == "set":
            assert isinstance(got, Set) and got == {expect_bytes(x) for x in want}
        elif t == "hash":
            assert type(got) in (dict, PackedHash)  # PackedHash: a listpack, read on first use
            assert got == {expect_bytes(f): expect_bytes(v) for f, v in want}
        elif t == "zset":
            assert isinstance(got, ZSet)
            assert got.ordered() == [(expect_bytes(m), float(s)) for m, s in want]
        else:
            check_stream(got, want)
    assert sorted(ks.functions) == sorted(f["code"].encode() for f in expect["functions"])
    assert ks.aux[b"redis-ver"] == b"7.0.15"
    if "lfu" in name:
        assert p.checksum == 0


def check_stream(got, want):
    assert isinstance(got, Stream)
    assert len(got) == want["length"]
    assert got.last_id == expect_id(want["last_generated_id"])
    assert got.max_deleted_id == expect_id(want["max_deleted_entry_id"])
    assert got.entries_added == want["entries_added"]
    assert got.first_id == expect_id(want["recorded_first_entry_id"])
    assert list(got.entries.items()) == [
        (expect_id(i), [(expect_bytes(f), expect_bytes(v)) for f, v in fields])
        for i, fields in want["entries"]
    ]
    assert list(got.groups) == [expect_bytes(g["name"]) for g in want["groups"]]
    for g in want["groups"]:
        group = got.groups[expect_bytes(g["name"])]
        assert group.last_id == expect_id(g["last_delivered_id"])
        assert group.entries_read == (-1 if g["entries_read"] is None else g["entries_read"])
        assert [(i, e.consumer, e.delivery_time, e.delivery_count) for i, e in group.pending.items()] == [
            (expect_id(i), expect_bytes(c), t, n) for i, c, t, n in g["pel"]
        ]
        assert list(group.consumers) == [expect_bytes(c["name"]) for c in g["consumers"]]
        for c in g["consumers"]:
            consumer = group.consumers[expect_bytes(c["name"])]
            assert consumer.seen_time == c["seen_time_ms"]
            assert consumer.active_time == -1  # RDB v10: not stored
            assert sorted(consumer.pending) == sorted(expect_id(i) for i, _, _ in c["pel"])


@needs_fixtures
@pytest.mark.parametrize("mode", ["disk", "diskless"])
def test_generated_fullresync_capture(mode):
    """The bytes a replica gets after PSYNC: strip the preamble, feed the rest."""
    raw = fixture(f"generated/redis-7.0.15-all-types.fullresync-{mode}.bin")
    head_end = raw.index(b"\r\n", raw.index(b"$")) + 2
    preamble = raw[raw.index(b"$") : head_end]
    p = RDBParser(on_aux=lambda n, v: None)
    for i in range(head_end, len(raw), 1000):
        p.feed(raw[i : i + 1000])
    ks = p.finish()
    assert ks.key_count() == 47
    assert b"repl-id" in ks.aux and b"repl-offset" in ks.aux
    if mode == "diskless":
        assert p.trailing == preamble[len(b"$EOF:") : -2]  # the 40-byte EOF mark
    else:
        assert int(preamble[1:-2]) == p.bytes_parsed and p.trailing == b""


def hdt_files():
    return sorted(p.stem for p in (FIXTURES / "HDT3213-rdb").glob("*.json")) if FIXTURES.is_dir() else []


@needs_fixtures
@pytest.mark.parametrize("stem", hdt_files())
def test_hdt3213_expectations(stem):
    expect = json.loads(fixture(f"HDT3213-rdb/{stem}.json"))
    p, ks = parse(fixture(f"HDT3213-rdb/{stem}.rdb"))
    checked = 0
    for obj in expect:
        t = obj["type"]
        if t == "aux":
            assert same_text(obj["value"], ks.aux[obj["key"].encode()])
            continue
        if t == "functions":
            assert obj["functionsLua"].encode() in ks.functions
            continue
        db = ks.dbs[obj["db"]].data
        key = find_key(db, obj["key"])
        got = db[key]
        if t == "string":
            assert same_text(obj["value"], got)
        elif t == "list":
            assert len(got) == len(obj["values"])
            assert all(same_text(e, g) for e, g in zip(obj["values"], got))
        elif t == "set":
            same_set(obj["members"], got)
        elif t == "hash":
            same_hash(obj["hash"], got)
            fexp = ks.dbs[obj["db"]].field_expires.get(key, {})
            for f, ms in (obj.get("expire") or {}).items():
                assert fexp.get(f.encode(), 0) == ms, f
        elif t == "zset":
            same_zset({e["member"]: e["score"] for e in obj["entries"]}, got)
        elif t == "stream":
            # (len is the stored length; Redis 5.0 RCs could store one that differs)
            assert str(got.last_id) == obj["lastId"]
            msgs = [m for node in obj["entries"] for m in node["msgs"] if not m["deleted"]]
            assert [str(i) for i in got.entries] == [m["id"] for m in msgs]
            for m in msgs:
                fields = dict(got.entries[expect_id(m["id"])])
                same_hash(m["fields"], fields)
            assert [g.name.decode() for g in got.groups.values()] == [
                g["name"] for g in obj.get("groups") or []
            ]
            for g in obj.get("groups") or []:
                group = got.groups[g["name"].encode()]
                assert str(group.last_id) == g["lastId"]
                assert {str(i): (e.delivery_time, e.delivery_count) for i, e in group.pending.items()} == {
                    e["id"]: (e["deliveryTime"], e["deliveryCount"]) for e in g.get("pending") or []
                }
                for c in g.get("consumers") or []:
                    consumer = group.consumers[c["name"].encode()]
                    assert consumer.seen_time == c["seenTime"]
                    assert sorted(map(str, consumer.pending)) == sorted(c.get("pending") or [])
                    if obj.get("version") == 3:  # older types do not store it: -1
                        assert consumer.active_time == c["activeTime"]
                    else:
                        assert consumer.active_time == -1
        checked += 1
    assert checked == ks.key_count() or stem == "empty_database"


def badboy_files():
    return (
        sorted(p.stem for p in (FIXTURES / "badboy-rdb-rs" / "json").glob("*.json"))
        if FIXTURES.is_dir()
        else []
    )


@needs_fixtures
@pytest.mark.parametrize("stem", badboy_files())
def test_badboy_expectations(stem):
    expect = json.loads(fixture(f"badboy-rdb-rs/json/{stem}.json"))
    p, ks = parse(fixture(f"badboy-rdb-rs/{stem}.rdb"))
    dbs = [ks.dbs[n] for n in sorted(ks.dbs) if ks.dbs[n].data]
    assert len(dbs) == len(expect)
    for want, db in zip(expect, dbs):
        assert len(want) == len(db.data)
        for name, value in want.items():
            got = db.data[find_key(db.data, name)]
            if isinstance(got, bytes):
                assert same_text(value, got)
            elif isinstance(got, deque):
                assert len(got) == len(value) and all(map(same_text, value, got))
            elif isinstance(got, Set):
                same_set(value, got)
            elif isinstance(got, ZSet):
                same_zset(value, got)
            else:
                same_hash(value, got)


LIBRDB_DATA = {
    "hash_v3": "hash_data",
    "hash_lp_v11": "hash_lp_v11_data",
    "hash_zl_v6": "hash_zl_v6_data",
    "hash_zm_v2": "hash_zm_v2_data",
    "hash_lp_with_hexpire_v12": "hash_lp_ex_v12_data",
    "hash_with_expire_v12": "hash_ex_v12_data",
    "multiple_lists_strings": "multiple_lists_strings_data",
    "plain_list_v6": "plain_list_v6_data",
    "plain_set_v6": "plain_set_v6_data",
    "plain_zset_2_v11": "plain_zset_2_v11_data",
    "plain_zset_v6": "plain_zset_v6_data",
    "quicklist": "quicklist_data",
    "set_is_v11": "set_is_v11_data",
    "set_lp_v11": "set_lp_v11_data",
    "single_key": "single_key_data",
    "quicklist2_v11": "single_list_data",
    "stream_v11": "stream_data",
    "ziplist_v3": "ziplist_data",
    "zset_lp_v11": "zset_lp_v11_data",
    "zset_zl_v6": "zset_zl_v6_data",
    "multiple_dbs": "multiple_dbs_data",
    "string_int_encoded": "string_int_encoded",
    "set_not_expired_v11": "set_not_expired",
    "mem_policy_lfu": "mem_policy_lfu",
    "mem_policy_lru": "mem_policy_lru",
    "function2": "function2",
    "cluster_slot_info": "cluster_slot_info",
}


def librdb_json(stem):
    text = fixture(f"redis-librdb/{stem}.json").decode().strip()
    if not text.startswith("["):
        text = "[{" + text.rstrip(",") + "}]"
    return json.loads(text)


@needs_fixtures
@pytest.mark.parametrize("rdb", sorted(LIBRDB_DATA))
def test_librdb_expectations(rdb):
    expect = librdb_json(LIBRDB_DATA[rdb])
    p, ks = parse(fixture(f"redis-librdb/{rdb}.rdb"))
    dbs = [ks.dbs[n] for n in sorted(ks.dbs)]
    assert len([d for d in expect if any(not k.startswith("__") for k in d)]) <= len(dbs)
    for want, db in zip(expect, dbs):
        for name, value in want.items():
            if name == "__aux__":
                for k, v in value.items():
                    assert same_text(v, ks.aux[k.encode()])
                continue
            if name == "__func__":
                assert sorted(value.values()) == sorted(f.decode() for f in ks.functions)
                continue
            if name.startswith("__"):
                continue
            got = db.data[find_key(db.data, name)]
            if isinstance(got, bytes):
                assert same_text(value, got)
            elif isinstance(got, deque):
                assert len(got) == len(value) and all(map(same_text, value, got))
            elif isinstance(got, Set):
                same_set(value, got)
            elif isinstance(got, ZSet):
                same_zset(value, got)
            elif isinstance(got, Stream):
                assert [e["id"] for e in value["entries"]] == [str(i) for i in got.entries]
                for e in value["entries"]:
                    same_hash(e["items"], dict(got.entries[expect_id(e["id"])]))
            else:
                same_hash(value, got)
    if rdb == "cluster_slot_info":
        assert p.slot_info


@needs_fixtures
def test_redis_rdb_cli_type_counts():
    counts = {"string": 0, "list": 0, "set": 0, "sortedset": 0, "hash": 0, "stream": 0, "module": 0}
    names = {bytes: "string", deque: "list", Set: "set", ZSet: "sortedset", dict: "hash", Stream: "stream"}
    p = RDBParser(
        store=False,
        duplicates="replace",
        on_key=lambda db, k, v, e: counts.__setitem__(names[type(v)], counts[names[type(v)]] + 1),
        on_module=lambda db, k, name: counts.__setitem__("module", counts["module"] + 1),
    )
    p.feed(fixture("leonchen83-redis-rdb-cli/rct/all.rdb"))
    p.finish()
    header, values = fixture("leonchen83-redis-rdb-cli/rct/all.rdb.count").decode().split()[:2]
    want = dict(zip(header.split(","), map(int, values.split(","))))
    assert counts == {k: want[k] for k in counts}
    assert sum(counts.values()) == want["summary"]


@needs_fixtures
def test_hash_field_expiry_fixtures():
    _, ks = parse(fixture("HDT3213-rdb/valkey_hash2_with_hfe.rdb"))
    assert ks.dbs[0].field_expires[b"hash2-hfe"] == {b"F1": 2715785640000, b"F2": 2400425640000}
    assert ks.dbs[0].data[b"hash2-hfe"] == {b"F1": b"V1", b"F2": b"V2", b"F3": b"V3"}
    _, ks = parse(fixture("HDT3213-rdb/hash_with_hfe.rdb"))
    assert ks.dbs[0].field_expires[b"hash-hfe"] == {
        b"F1": 2755482424661,
        b"F2": 2755483429282,
        b"F3": 2755484433842,
    }
    for rel in (
        "redis-librdb/hash_lp_with_hexpire_v12.rdb",
        "redis-librdb/hash_with_expire_v12.rdb",
        "leonchen83-redis-replicator/dump-ttlhash.rdb",
    ):
        _, ks = parse(fixture(rel))
        assert ks.dbs[0].field_expires, rel
        for key, fexp in ks.dbs[0].field_expires.items():
            assert set(fexp) <= set(ks.dbs[0].data[key])
            assert all(ms > 1_600_000_000_000 for ms in fexp.values())


@needs_fixtures
def test_modules_functions_and_opcodes():
    seen = []
    p, ks = parse(
        fixture("redis-librdb/module.rdb"), on_module=lambda db, key, name: seen.append((db, key, name))
    )
    assert seen == [(0, b"key1", "test__rdb")] and p.modules_skipped == 1
    assert ks.key_count() == 0
    seen.clear()
    p, ks = parse(
        fixture("redis-librdb/module_aux.rdb"), on_module=lambda db, key, name: seen.append((key, name))
    )
    assert (None, "test__rdb") in seen and ks.key_count() == 1
    # 7.0 release-candidate functions become loadable 7.0 GA library sources.
    _, ks = parse(fixture("leonchen83-redis-replicator/function.rdb"))
    assert [f.split(b"\n")[0] for f in ks.functions] == [b"#!lua name=lib2", b"#!lua name=lib1"]
    assert b"register_function" in ks.functions[0]
    for rel, attr in (
        ("redis-librdb/mem_policy_lru.rdb", "idle"),
        ("redis-librdb/mem_policy_lfu.rdb", "freq"),
    ):
        meta = []
        p = RDBParser()
        p.on_key = lambda db, k, v, e, p=p, meta=meta: meta.append((p.idle, p.freq))
        p.feed(fixture(rel))
        p.finish()
        assert meta and all((m[0] if attr == "idle" else m[1]) is not None for m in meta)
        assert p.idle is None and p.freq is None
    p, _ = parse(fixture("leonchen83-redis-replicator/dump-slot.rdb"))
    assert p.slot_info


# --- hand-made files: what no fixture covers -------------------------------------------


def rdb_bytes(version, body, checksum=True):
    head = b"REDIS%04d" % version
    data = head + body + b"\xff"
    if version >= 5:
        data += crc64(data).to_bytes(8, "little") if checksum else bytes(8)
    return data


def s(b):
    assert len(b) < 64
    return bytes([len(b)]) + b


def test_rdb_version_1_and_expiry_in_seconds():
    body = (
        b"\xfe\x00"
        + b"\x00"
        + s(b"k")
        + s(b"v")
        + b"\xfd"
        + (2_000_000_000).to_bytes(4, "little")
        + b"\x00"
        + s(b"t")
        + s(b"x")
    )
    for version in (1, 4, 6):
        _, ks = parse(rdb_bytes(version, body))
        assert ks.dbs[0].data == {b"k": b"v", b"t": b"x"}
        assert ks.dbs[0].expires == {b"t": 2_000_000_000_000}


# LZF by hand: a 3-byte literal run, then a 100-byte back reference to 3 bytes back.
LZF_SAMPLE = (b"\x02abc" + b"\xe0\x5b\x02", (b"abc" * 35)[:103])


def test_lzf_decoders():
    from greenredis.replication.rdb import lzf as glzf

    comp, raw = LZF_SAMPLE
    assert glzf.decompress(comp, len(raw)) == raw
    assert glzf._py_decompress(comp, len(raw)) == raw
    for bad_len in (102, 104):
        with pytest.raises(glzf.LZFError):
            glzf.decompress(comp, bad_len)
        with pytest.raises(glzf.LZFError):
            glzf._py_decompress(comp, bad_len)
    with pytest.raises(glzf.LZFError):
        glzf._py_decompress(b"\x20\x05", 10)  # reference before the start
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    from greenredis.replication.rdb import crc64 as gcrc

    assert gcrc._py_crc64(b"123456789") == 0xE9C6D914C4B8D9CA


def test_int_and_lzf_strings():
    comp, raw = LZF_SAMPLE
    body = (
        b"\xfe\x00"
        + b"\x00"
        + s(b"i8")
        + b"\xc0\x85"  # -123
        + b"\x00"
        + s(b"i16")
        + b"\xc1"
        + (-30000).to_bytes(2, "little", signed=True)
        + b"\x00"
        + s(b"i32")
        + b"\xc2"
        + (2**31 - 1).to_bytes(4, "little", signed=True)
        + b"\x00"
        + b"\xc0\x07"
        + s(b"int key")
        + b"\x00"
        + s(b"lzf")
        + b"\xc3"
        + bytes([len(comp)])
        + b"\x40"
        + bytes([len(raw)])
        + comp
    )
    _, ks = parse(rdb_bytes(9, body))
    assert ks.dbs[0].data == {
        b"i8": b"-123",
        b"i16": b"-30000",
        b"i32": b"2147483647",
        b"7": b"int key",
        b"lzf": raw,
    }


def test_bad_inputs_give_clear_errors():
    with pytest.raises(RDBError, match="not an RDB file"):
        RDBParser().feed(b"HELLO0009\xff")
    with pytest.raises(RDBError, match="unknown RDB opcode 243"):
        parse(rdb_bytes(9, b"\xf3\x00"))
    with pytest.raises(RDBError, match="unknown RDB value type 8"):
        parse(rdb_bytes(9, b"\x08" + s(b"k")))
    with pytest.raises(RDBError, match="bad length encoding"):
        parse(rdb_bytes(9, b"\x01" + s(b"k") + b"\x82"))
    with pytest.raises(RDBError, match=r"record at byte 9, key b'k'"):
        parse(rdb_bytes(9, b"\x0d" + s(b"k") + s(b"not a ziplist")))
    with pytest.raises(RDBError, match="duplicate"):
        parse(rdb_bytes(9, b"\x02" + s(b"k") + b"\x02" + s(b"a") + s(b"a")))
    with pytest.raises(RDBError, match="truncated"):
        RDBParser().finish()
    p = RDBParser()
    p.feed(rdb_bytes(9, b"") + b"more")
    assert p.done and p.trailing == b"more"
    p.feed(b"!")
    assert p.trailing == b"more!"
    with pytest.raises(EncodingError):
        listpack_entries(b"\x07\x00\x00\x00\x01\x00\xff")
    assert listpack_dict(b"\x07\x00\x00\x00\x00\x00\xff") == {}


def test_load_file_and_huge_values(tmp_path):
    """A big hashtable set and a big string in tiny chunks: resumed, not restarted."""
    members = [b"member-%06d" % i for i in range(20000)]
    body = b"\xfe\x00\x02" + s(b"bigset") + b"\x80" + len(members).to_bytes(4, "big")
    body += b"".join(s(m) for m in members)
    big = os.urandom(300_000)
    body += b"\x00" + s(b"bigstr") + b"\x80" + len(big).to_bytes(4, "big") + big
    data = rdb_bytes(9, body)
    p = RDBParser()
    calls = 0
    for i in range(0, len(data), 50):
        p.feed(data[i : i + 50])
        calls += 1
    ks = p.finish()
    assert ks.dbs[0].data[b"bigset"] == set(members)
    assert ks.dbs[0].data[b"bigstr"] == big
    path = tmp_path / "x.rdb"
    path.write_bytes(data)
    assert load_file(path).dbs[0].data[b"bigstr"] == big


def test_resume_is_linear_in_the_size_of_a_big_collection(monkeypatch):
    """Feeding a 20000-member set in 64-byte chunks decodes each member once (plus the
    few that straddle a chunk boundary), not once per chunk."""
    import greenredis.replication.rdb.parser as rdb

    members = [b"m%05d" % i for i in range(20000)]
    body = b"\xfe\x00\x02" + s(b"k") + b"\x80" + len(members).to_bytes(4, "big")
    body += b"".join(s(m) for m in members)
    data = rdb_bytes(9, body)
    steps = 0
    real = rdb._step_set

    def counting(st, buf, i):
        nonlocal steps
        steps += 1
        return real(st, buf, i)

    monkeypatch.setattr(rdb, "_step_set", counting)
    p = RDBParser()
    for i in range(0, len(data), 64):
        p.feed(data[i : i + 64])
    assert len(p.finish().dbs[0].data[b"k"]) == 20000
    assert steps < 20000 + len(data) // 64 + 10


def dump_payload(body, version):
    body += version.to_bytes(2, "little")
    return body + crc64(body).to_bytes(8, "little")


def test_decode_dump_with_field_expiry():
    # Valkey 9 hash2: [field][value][int64 ms or -1]
    body = (
        b"\x16\x02"
        + s(b"a")
        + s(b"1")
        + (1_900_000_000_000).to_bytes(8, "little")
        + s(b"b")
        + s(b"2")
        + (-1).to_bytes(8, "little", signed=True)
    )
    value, fexp = decode_dump(dump_payload(body, 80), with_field_expiry=True)
    assert value == {b"a": b"1", b"b": b"2"} and fexp == {b"a": 1_900_000_000_000}
    # The same type number means Redis 7.4 RC's layout in a Redis payload.
    body = b"\x16\x02" + b"\x00" + s(b"a") + s(b"1") + b"\x00" + s(b"b") + s(b"2")
    assert decode_dump(dump_payload(body, 12), with_field_expiry=True) == ({b"a": b"1", b"b": b"2"}, {})
    # Redis 7.4 GA: min expiry, then TTLs relative to it (+1; 0 = none).
    body = (
        b"\x18"
        + (1_800_000_000_000).to_bytes(8, "little")
        + b"\x02"
        + b"\x0b"
        + s(b"a")
        + s(b"1")
        + b"\x00"
        + s(b"b")
        + s(b"2")
    )
    assert decode_dump(dump_payload(body, 12), with_field_expiry=True) == (
        {b"a": b"1", b"b": b"2"},
        {b"a": 1_800_000_000_010},
    )
    with pytest.raises(RDBError, match="unknown RDB value type 24"):
        decode_dump(dump_payload(body, 80))


def test_a_raising_callback_stops_the_parser():
    data = rdb_bytes(9, b"\xfe\x00\x00" + s(b"k") + s(b"v"))

    calls = []

    def boom(db, key, value, expire):
        calls.append(key)
        raise IndexError("from the callback")  # must not pass for "need more bytes"

    p = RDBParser(on_key=boom)
    with pytest.raises(IndexError, match="from the callback"):
        p.feed(data)
    assert calls == [b"k"]
    with pytest.raises(RDBError, match="stopped by IndexError"):
        p.feed(b"")
    with pytest.raises(RDBError, match="stopped by IndexError"):
        p.finish()


def test_given_keyspace_is_replaced_only_after_a_verified_end():
    ks = Keyspace()
    ks.db(5).data[b"old"] = b"data"
    good = rdb_bytes(9, b"\xfe\x00\x00" + s(b"k") + s(b"v"))
    p = RDBParser(keyspace=ks)
    p.feed(good[:-3])
    assert ks.dbs[5].data == {b"old": b"data"}  # untouched while loading
    with pytest.raises(RDBError, match="truncated"):
        p.finish()
    assert ks.dbs[5].data == {b"old": b"data"}  # and after a failed load
    p = RDBParser(keyspace=ks)
    p.feed(good)
    assert p.finish() is ks and p.finish() is ks
    assert list(ks.dbs) == [0] and ks.dbs[0].data == {b"k": b"v"}


def test_valkey_header_and_slot_import_opcode():
    body = (
        b"VALKEY080"
        + b"\xfa"
        + s(b"valkey-ver")
        + s(b"9.0.0")
        + b"\xf3"
        + s(b"j" * 40)
        + b"\x02"
        + b"\x00"
        + b"\x40\x64"
        + b"\x41\x00"
        + b"\x41\x10"
        + b"\xfe\x00"
        + b"\x16"
        + s(b"h")
        + b"\x01"
        + s(b"f")
        + s(b"v")
        + (-1).to_bytes(8, "little", signed=True)
        + b"\xff"
    )
    data = body + crc64(body).to_bytes(8, "little")
    p, ks = parse(data, 1)
    assert p.valkey and p.version == 80
    assert ks.dbs[0].data == {b"h": {b"f": b"v"}} and ks.dbs[0].field_expires == {}
    with pytest.raises(RDBError, match="unsupported Valkey RDB version 81"):
        parse(b"VALKEY081" + data[9:])


def test_duplicate_keys():
    body = (
        b"\xfe\x00"
        + b"\x00"
        + s(b"a")
        + s(b"1")
        + b"\x00"
        + s(b"b")
        + s(b"2")
        + b"\x00"
        + s(b"a")
        + s(b"3")
        + b"\xfc"
        + (5).to_bytes(8, "little")
        + b"\x02"
        + s(b"b")
        + b"\x01"
        + s(b"m")
    )
    with pytest.raises(RDBError, match="duplicated key"):
        parse(rdb_bytes(9, body))
    p, ks = parse(rdb_bytes(9, body), duplicates="replace")
    assert ks.dbs[0].data == {b"a": b"3", b"b": {b"m"}} and ks.dbs[0].expires == {b"b": 5}
    assert p.duplicates_replaced == 2 and p.keys_loaded == 2


def test_the_format_numbers_carry_rdb_h_names():
    from greenredis.replication.rdb.names import Enc, ModuleOpcode, Opcode, QuicklistContainer, RDBType

    assert (Opcode.EOF, Opcode.SELECTDB, Opcode.EXPIRETIME_MS, Opcode.AUX, Opcode.FUNCTION2) == (
        255,
        254,
        252,
        250,
        245,
    )
    assert (RDBType.HASH_LISTPACK, RDBType.STREAM_LISTPACKS_3, RDBType.HASH_LISTPACK_EX) == (16, 21, 25)
    assert (ModuleOpcode.STRING, Enc.LZF, QuicklistContainer.PACKED) == (5, 3, 2)
    # every type byte is below every opcode: the parser tells them apart by that
    assert max(RDBType) < min(Opcode)
