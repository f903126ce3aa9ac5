"""The parser's fast path for runs of plain string records gives exactly what its general
path gives: at every key and value length around the 6-bit limit, next to every kind of
record, at every cut of the input, with duplicates and over its count blocks.

The general path is forced with an ``on_key`` callback (which the fast path leaves alone)."""

import random

import lzf
import pytest
from test_rdb_runs import rdb, rlen, rstr

from greenredis.replication.rdb import parser
from greenredis.replication.rdb.parser import RDBError, RDBParser

pytestmark = pytest.mark.unit


def string(key, value):
    return b"\x00" + rstr(key) + rstr(value)


def outcome(data, chunk=None, general=False, **kwargs):
    """(data, expires, keys_loaded, duplicates_replaced), or the error text."""
    p = RDBParser(on_key=(lambda *a: None) if general else None, **kwargs)
    step = chunk or len(data)
    try:
        for i in range(0, len(data), step):
            p.feed(data[i : i + step])
        ks = p.finish()
    except RDBError as e:
        return str(e)
    db = ks.dbs[0]
    return db.data, db.expires, p.keys_loaded, p.duplicates_replaced


def odd_records(rnd, n):
    """Strings of every length class mixed with the records that end a run."""
    body = b""
    for k in range(n):
        key = b"k%d:" % k + b"x" * rnd.choice([0, 1, 50, 58, 59, 60, 61, 70])
        kind = rnd.randrange(12)
        if kind == 0:  # 14-bit value length
            body += string(key, b"v" * rnd.choice([64, 65, 200, 16383]))
        elif kind == 1:  # integer-encoded values: 8, 16, 32 bits
            enc = rnd.choice([b"\xc0\x7f", b"\xc1\x00\x80", b"\xc2\xff\xff\xff\x7f"])
            body += b"\x00" + rstr(key) + enc
        elif kind == 2:  # LZF value
            raw = b"abc" * 40
            c = lzf.compress(raw)
            body += b"\x00" + rstr(key) + b"\xc3" + rlen(len(c)) + rlen(len(raw)) + c
        elif kind == 3:  # a TTL: the next string is not plain
            body += b"\xfc" + (4102444800000 + k).to_bytes(8, "little") + string(key, b"ttl")
        elif kind == 4:  # a list between strings
            body += b"\x01" + rstr(key) + rlen(2) + rstr(b"a") + rstr(b"b")
        elif kind == 5:  # LRU idle / LFU freq before a string
            body += (b"\xf8\x05" if k % 2 else b"\xf9\x07") + string(key, b"x")
        else:
            vl = rnd.choice([0, 1, 2, 62, 63, 63, 64])
            body += string(key, bytes(rnd.randrange(256) for _ in range(vl)))
    return body


@pytest.mark.parametrize("seed", range(4))
def test_string_runs_load_as_the_general_path_does(seed):
    data = rdb(odd_records(random.Random(seed), 80))
    want = outcome(data, general=True)
    assert not isinstance(want, str), want
    assert want[2] == 80 and want[1]
    for chunk in (None, 1, 2, 3, 5, 64, 127, 1000):
        assert outcome(data, chunk=chunk) == want, chunk


def test_every_cut_of_a_run_resumes_where_it_stopped():
    body = b"".join(string(b"key%d" % k, b"value" * (k % 13)) for k in range(40))
    data = rdb(body + b"\x01" + rstr(b"list") + rlen(1) + rstr(b"e") + string(b"last", b"z"))
    want = outcome(data, general=True)
    for cut in range(1, len(data)):
        p = RDBParser()
        p.feed(data[:cut])
        parsed = p.bytes_parsed
        p.feed(data[cut:])
        assert (p.finish().dbs[0].data, p.keys_loaded) == (want[0], want[2]), cut
        # only whole records are taken: a cut inside one leaves it all for later
        assert parsed <= cut


def test_a_run_ending_at_the_end_of_the_bytes_takes_its_last_record():
    head = b"REDIS0011\xfe\x00"
    body = b"".join(string(b"k%d" % k, b"v%d" % k) for k in range(3))
    p = RDBParser()
    p.feed(head + body)
    assert p.bytes_parsed == len(head + body) and p.keys_loaded == 3


def test_keys_and_values_of_zero_bytes():
    data = rdb(string(b"", b"") + string(b"a", b"") + string(b"b", b"1"))
    got = outcome(data)
    assert got == outcome(data, general=True)
    assert got[0] == {b"": b"", b"a": b"", b"b": b"1"}


@pytest.mark.parametrize("n", [1, 255, 256, 257, 511, 512, 513, 1000])
def test_runs_count_their_records_across_blocks(n):
    """The run counts in blocks of 256: duplicates anywhere in long runs are seen."""
    body = b"".join(string(b"k%d" % k, b"v%d" % k) for k in range(n))
    data = rdb(body)
    got = outcome(data)
    assert got[2] == n and got[3] == 0 and len(got[0]) == n
    for dup in sorted({0, n // 2, n - 1, 255, 256, 511, 512} & set(range(n))):
        # the record after position dup repeats key dup: a duplicate at every place of a block
        dup_body = body + string(b"k%d" % dup, b"again")
        for chunk in (None, 97):
            msg = outcome(rdb(dup_body), chunk=chunk)
            assert isinstance(msg, str) and "duplicated key" in msg, (dup, chunk)
            got = outcome(rdb(dup_body), chunk=chunk, duplicates="replace")
            assert got == outcome(rdb(dup_body), general=True, duplicates="replace")
            assert got[2] == n and got[3] == 1 and got[0][b"k%d" % dup] == b"again"


def test_a_corrupt_record_after_a_run_is_reported_at_its_own_offset():
    good = b"".join(string(b"k%d" % k, b"v") for k in range(300))
    bad = b"\x00" + rstr(b"bad") + b"\xc5"  # an unknown string encoding
    data = rdb(good + bad + string(b"after", b"x"))
    msg = outcome(data)
    assert msg == outcome(data, general=True)
    assert "unknown string encoding" in msg and f"record at byte {11 + len(good)}" in msg


def test_a_dump_cut_anywhere_in_a_run_is_refused_whole():
    data = rdb(b"".join(string(b"k%d" % k, b"v" * k) for k in range(20)))
    for cut in range(9, len(data)):
        p = RDBParser()
        p.feed(data[:cut])
        with pytest.raises(RDBError, match="truncated|checksum"):
            p.finish()


@pytest.mark.parametrize("window", [131, 132, 200, 257, 1000])
def test_a_buffer_bigger_than_the_run_window_is_taken_window_by_window(monkeypatch, window):
    """Runs copy a bounded window of a big buffer (not all of it): records that straddle a
    window's end are taken from the next window, whatever their length."""
    rnd = random.Random(window)
    body = b"".join(
        string(b"k%d" % k + b"x" * rnd.choice([0, 5, 61]), b"v" * rnd.choice([0, 1, 62, 63]))
        for k in range(300)
    )
    data = rdb(body + odd_records(rnd, 40) + body.replace(b"k", b"j"))
    want = outcome(data, general=True)
    monkeypatch.setattr(parser, "_WINDOW", window)
    assert outcome(data) == want
    assert outcome(data, chunk=window * 3 + 1) == want
    copied = []
    real = parser._string_window
    monkeypatch.setattr(parser, "_string_window", lambda buf, i: copied.append(i) or real(buf, i))
    assert outcome(data) == want
    assert len(copied) >= len(data) // window // 2  # one window after another, not one copy


def test_a_run_replacing_a_key_with_a_ttl_drops_the_ttl():
    """duplicates="replace": a key the run stores again is the run's plain value, no longer
    the earlier record's TTL (or field TTLs), as the general path gives."""
    from test_rdb_runs import hash_record

    ttl = b"\xfc" + (4102444800000).to_bytes(8, "little")
    head = b"".join(string(b"k%d" % k, b"v") for k in range(300))
    for run in (
        head + string(b"t", b"plain") + head.replace(b"k", b"j"),
        hash_record(b"h0", [(b"f", b"v")]) + hash_record(b"t", [(b"f", b"new")]),
    ):
        data = rdb(ttl + string(b"t", b"old") + run)
        want = outcome(data, general=True, duplicates="replace")
        assert want[1] == {} and want[3] == 1
        for chunk in (None, 7):
            assert outcome(data, chunk=chunk, duplicates="replace") == want, chunk
