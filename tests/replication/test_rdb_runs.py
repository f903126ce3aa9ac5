"""The parser's fast paths for runs of plain records (short strings, listpack hashes) give
exactly what its general path gives, on every input: odd, corrupt, duplicated, truncated.

The general path is forced with an ``on_key`` callback (which the fast paths leave alone)."""

import random

import lzf
import pytest

from greenredis.replication.rdb.crc64 import crc64
from greenredis.replication.rdb.parser import RDBError, RDBParser

pytestmark = pytest.mark.unit


def rlen(n):
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | n >> 8, n & 0xFF])
    return b"\x80" + n.to_bytes(4, "big")


def rstr(b):
    return rlen(len(b)) + b


def rlzf(b):
    c = lzf.compress(b)  # None: it does not compress, and Redis stores it raw
    return rstr(b) if c is None else b"\xc3" + rlen(len(c)) + rlen(len(b)) + c


def listpack(items):
    body = b""
    for x in items:
        if isinstance(x, int):  # 7-bit unsigned int
            body += bytes([x, 1])
        else:
            assert len(x) < 64
            body += bytes([0x80 | len(x)]) + x + bytes([len(x) + 1])
    total = 6 + len(body) + 1
    return total.to_bytes(4, "little") + len(items).to_bytes(2, "little") + body + b"\xff"


def hash_record(key, pairs, how="raw"):
    lp = listpack([x for pair in pairs for x in pair])
    value = rlzf(lp) if how == "lzf" else rstr(lp)
    return b"\x10" + rstr(key) + value


def rdb(body):
    data = b"REDIS0011" + b"\xfe\x00" + body + b"\xff"
    return data + crc64(data).to_bytes(8, "little")


def parse(data, chunk=None, general=False, **kwargs):
    p = RDBParser(on_key=(lambda *a: None) if general else None, **kwargs)
    step = chunk or len(data)
    for i in range(0, len(data), step):
        p.feed(data[i : i + step])
    return p, p.finish()


def outcome(data, **kwargs):
    """What parsing gives: (data, expires, keys_loaded, skipped, replaced) or the error text."""
    try:
        p, ks = parse(data, **kwargs)
    except RDBError as e:
        return str(e)
    db = ks.dbs[0]
    return db.data, db.expires, p.keys_loaded, p.empty_keys_skipped, p.duplicates_replaced


def mixed_body(rnd, n=60):
    body = b""
    for k in range(n):
        pairs = [(b"f%d" % f, b"v" * rnd.randint(0, 40)) for f in range(rnd.randint(1, 12))]
        how = rnd.choice(["raw", "raw", "lzf"])
        if k % 7 == 3:
            body += b"\x00" + rstr(b"s%d" % k) + rstr(b"x" * rnd.randint(0, 70))
        elif k % 11 == 5:
            body += b"\xfc" + (4102444800000 + k).to_bytes(8, "little") + hash_record(b"h%d" % k, pairs, how)
        elif k % 13 == 7:
            pairs = [(b"n%d" % f, f) for f in range(5)]  # integers: not the short-string form
            body += hash_record(b"h%d" % k, pairs, how)
        elif k % 19 == 9 and k > 20:  # a hash past the listpack limits: the hashtable encoding
            big = [(b"f%d" % f, b"v") for f in range(600)]
            body += b"\x04" + rstr(b"h%d" % k) + rlen(len(big)) + b"".join(rstr(f) + rstr(v) for f, v in big)
        elif k % 17 == 8:
            long_pairs = [(b"f%d" % f, b"w" * 60) for f in range(20)]  # a 14-bit raw length
            body += hash_record(b"h%d" % k, long_pairs)
        else:
            body += hash_record(b"h%d" % k, pairs, how)
    return body


@pytest.mark.parametrize("seed", range(3))
def test_runs_of_hashes_and_strings_load_as_the_general_path_does(seed):
    data = rdb(mixed_body(random.Random(seed)))
    want = outcome(data, general=True)
    assert not isinstance(want, str), want
    assert len(want[0]) == 60 and want[1]
    for chunk in (None, 1, 7, 64, 1000):
        assert outcome(data, chunk=chunk) == want


def test_a_duplicated_hash_key_in_a_run():
    body = b"".join(hash_record(b"h%d" % (k % 3), [(b"f", b"%d" % k)]) for k in range(5))
    data = rdb(body)
    assert "duplicated key" in outcome(data)
    assert "duplicated key" in outcome(data, general=True)
    got = outcome(data, duplicates="replace")
    assert got == outcome(data, general=True, duplicates="replace")
    assert got[0] == {b"h0": {b"f": b"3"}, b"h1": {b"f": b"4"}, b"h2": {b"f": b"2"}} and got[4] == 2


@pytest.mark.parametrize("kind", ["string", "hash"])
def test_a_key_replaced_in_a_run_loses_the_ttl_of_the_record_it_replaces(kind):
    # duplicates="replace" deletes the earlier key whole, as Redis's RDBFLAGS_ALLOW_DUP load
    # does: the later record, which has no TTL, must not inherit the earlier one's
    def record(value):
        if kind == "string":
            return b"\x00" + rstr(b"k") + rstr(value)
        return hash_record(b"k", [(b"f", value)])

    ttl = b"\xfc" + (4102444800000).to_bytes(8, "little")
    data = rdb(ttl + record(b"old") + record(b"new") + record(b"newer"))
    got = outcome(data, duplicates="replace")
    assert got == outcome(data, general=True, duplicates="replace")
    assert got[1:] == ({}, 1, 0, 2)
    assert got[0] == {b"k": b"newer" if kind == "string" else {b"f": b"newer"}}


def test_an_empty_hash_listpack_in_a_run_is_skipped_and_counted():
    body = hash_record(b"a", [(b"f", b"1")]) + hash_record(b"e", []) + hash_record(b"b", [(b"f", b"2")])
    got = outcome(rdb(body))
    assert got == outcome(rdb(body), general=True)
    assert got[0] == {b"a": {b"f": b"1"}, b"b": {b"f": b"2"}} and got[3] == 1


@pytest.mark.parametrize("how", ["raw", "lzf"])
def test_a_corrupt_listpack_mid_run_is_reported_at_its_own_record(how):
    good = b"".join(hash_record(b"h%d" % k, [(b"f", b"v")], how) for k in range(4))
    lp = bytearray(listpack([b"f", b"v", b"g", b"w"]))
    lp[-2] = 9  # a wrong back-length byte is not checked (nor by Redis); a wrong size is
    lp[0] += 1
    bad = b"\x10" + rstr(b"bad") + (rlzf(bytes(lp)) if how == "lzf" else rstr(bytes(lp)))
    data = rdb(good + bad + good.replace(b"h", b"k"))
    msg = outcome(data)
    assert msg == outcome(data, general=True)
    assert f"listpack header says {len(lp) + 1} bytes" in msg and "key b'bad'" in msg
    assert f"record at byte {11 + len(good)}" in msg


def test_corrupt_lzf_mid_run_is_reported_at_its_own_record():
    good = b"".join(hash_record(b"h%d" % k, [(b"field", b"value" * 5)], "lzf") for k in range(3))
    rec = bytearray(hash_record(b"bad", [(b"field", b"value" * 5)], "lzf"))
    rec[-3] ^= 0xFF  # inside the compressed data
    for variant in (bytes(rec), bytes(rec[:8]) + bytes([rec[8] + 1]) + bytes(rec[9:])):
        data = rdb(good + variant + good.replace(b"h", b"k"))
        msg = outcome(data)
        assert msg == outcome(data, general=True)
        assert isinstance(msg, str) and "key b'bad'" in msg


def test_a_dump_cut_anywhere_in_a_run_is_refused_whole():
    data = rdb(mixed_body(random.Random(5), n=12))
    for cut in range(9, len(data)):
        p = RDBParser()
        p.feed(data[:cut])
        with pytest.raises(RDBError, match="truncated|checksum"):
            p.finish()
    assert not isinstance(outcome(data), str)


@pytest.mark.parametrize("kind", ["string", "hash", "lzf hash"])
def test_a_duplicated_key_in_a_run_is_reported_at_its_own_record_with_the_key(kind):
    # as the general path reports it: the record that repeats a key, and that key (cut to 64
    # bytes), whether it repeats one of the same run or one loaded before it
    def record(key, value):
        if kind == "string":
            return b"\x00" + rstr(key) + rstr(value)
        return hash_record(key, [(b"f", value)], "lzf" if kind == "lzf hash" else "raw")

    long_key = b"long:" + b"k" * 58  # 63 bytes: still a run's key
    head = b"\x01" + rstr(b"list") + rlen(1) + rstr(b"e")  # a record no run takes
    before = record(b"early", b"x" * 30)
    runs = b"".join(record(b"k%d" % k, b"v" * 30) for k in range(300))
    for dup in (b"k7", b"early", long_key):
        body = before + head + runs + record(long_key, b"first" * 6)
        at = len(body) if dup != long_key else len(body) + len(record(b"k300", b"x"))
        body += b"" if dup != long_key else record(b"k300", b"x")
        data = rdb(body + record(dup, b"again" * 6) + record(b"after", b"z"))
        msg = outcome(data)
        assert msg == outcome(data, general=True), dup
        assert f"duplicated key in db 0 (record at byte {11 + at}, key {dup[:64]!r})" == msg, dup
        for chunk in (7, 4096):
            assert outcome(data, chunk=chunk) == msg, (dup, chunk)
