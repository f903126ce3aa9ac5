"""Batches on a cluster at their edges: empty, one command, keyless and multi-key and
CROSSSLOT commands among first-key ones, keys of every kind, bad input, and a batch that
meets MOVED. Every batch's replies equal those of its commands run one at a time."""

import enum

import pytest

import greenredis
from greenredis.client.slots import key_slot
from greenredis.errors import DataError, ReplyError
from greenredis.server import RedisCluster


@pytest.fixture(scope="module")
def rc():
    with RedisCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def c(rc):
    client = greenredis.Cluster(rc.startup_nodes[:1])
    yield client
    client.close()


def _one_by_one(c, batch):
    replies = []
    for command in batch:
        try:
            replies.append(c.cmd(command))
        except ReplyError as e:
            replies.append(e)
    return replies


def _same(a, b):
    """Replies equal, errors by class and message."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, ReplyError) or isinstance(y, ReplyError):
            assert (type(x), str(x)) == (type(y), str(y))
        else:
            assert x == y


def test_an_empty_batch_and_a_batch_of_one(c):
    assert c.cmd([]) == []
    assert c.cmd([["SET", "one", "1"]]) == [b"OK"]
    assert c.cmd((("GET", "one"),)) == [b"1"]
    assert c.cmd([["PING"]]) == [b"PONG"]
    (alone,) = c.cmd([["GET"]])  # no key: the server says what is wrong, in place
    assert isinstance(alone, ReplyError) and "wrong number of arguments" in str(alone)


def test_a_mixed_batch_keeps_order_and_errors_in_place(c, rc):
    c.cmd(["MSET", "{m}1", "x", "{m}2", "y"])
    batch = [
        ["SET", "m:a", "A"],
        ["PING"],
        ["GET", b"m:a"],
        ["MGET", "m:a", "m:b"],  # CROSSSLOT: refused in place, not sent
        ["SET", 42, "int key"],
        ["GET", 42],
        ["get", "{m}1"],
        ["ECHO", "hi"],
        ["MGET", "{m}1", "{m}2"],
        ["GET", memoryview(b"m:a")],
        ["GET", bytearray(b"{m}2")],
        ["INCR", "m:a"],  # not an integer: the server's error, in place
        ["GET", "m:missing"],
        ["GET", "{}m:a"],  # an empty tag: the whole key is hashed
        ["GET", "m:{a"],  # no closing brace
        ["EXISTS", "m:a", "m:a"],
        ["GET"],
    ]
    replies = c.cmd(batch)
    assert replies[:3] == [b"OK", b"PONG", b"A"]
    assert isinstance(replies[3], ReplyError) and str(replies[3]).startswith("CROSSSLOT")
    assert replies[4:11] == [b"OK", b"int key", b"x", b"hi", [b"x", b"y"], b"A", b"y"]
    assert isinstance(replies[11], ReplyError) and "not an integer" in str(replies[11])
    assert replies[12:16] == [None, None, None, 2]
    assert isinstance(replies[16], ReplyError)
    _same(replies[2:], _one_by_one(c, batch[2:]))  # (SET and PING once are enough)
    owners = rc.slot_owners()
    assert len({owners[key_slot(k)].port for k in ("m:a", 42, "{m}1", "{}m:a", "m:{a")}) > 1


def test_int_subclass_keys_go_to_their_slot_without_a_redirect(c, rc):
    class Code(int):
        def __str__(self):
            return "code"

    class Level(enum.IntEnum):
        HIGH = 3

    owners = rc.slot_owners()
    n = next(i for i in range(100) if owners[key_slot(str(i))] is not owners[key_slot("code")])
    c.cmd(["PING"])
    before = c.stats["moved"]
    assert c.cmd([["SET", Code(n), "n"], ["SET", Level.HIGH, "three"], ["GET", Code(n)]]) == [
        b"OK",
        b"OK",
        b"n",
    ]
    assert c.cmd(["SET", Code(n), "again"]) == b"OK"
    assert c.cmd(["GET", n]) == b"again" and c.cmd(["GET", "3"]) == b"three"
    assert c.stats["moved"] == before  # sent to the slot of str(n), not of "code"


def test_bad_input_in_a_batch_sends_none_of_it(c):
    for bad, error in [
        ([["SET", "bad:1", "1"], ["SET", "bad:2", None]], TypeError),
        ([["SET", "bad:1", "1"], ["SET", "bad:2", True]], DataError),
        ([["SET", "bad:1", "1"], []], ValueError),
        ([["SET", "bad:1", "1"], "GET bad:1"], TypeError),
        ([["SET", "bad:1", "1"], ["BLPOP", "bad:q", 0]], ValueError),
        ([["SET", "bad:1", "1"], ["SUBSCRIBE", "ch"]], ValueError),
    ]:
        with pytest.raises(error):
            c.cmd(bad)
    assert c.cmd(["EXISTS", "bad:1", "bad:1"]) == 0


def test_a_batch_meeting_moved_is_resent_and_keeps_its_order(c, rc):
    keys = [f"mv:{i}" for i in range(600)]
    moving = key_slot(keys[0])
    source = rc.node_for_slot(moving)
    target = next(n for n in rc.primaries if n is not source)
    c.cmd([["SET", k, k] for k in keys])
    rc.migrate_slot(moving, target)  # c's map still says source
    try:
        before = c.stats["moved"]
        batch = [command for k in keys for command in (["APPEND", k, "+"], ["GET", k])]
        replies = c.cmd(batch)
        assert replies == [r for k in keys for r in (len(k) + 1, f"{k}+".encode())]
        assert c.stats["moved"] > before
        assert c.slot_map().owners[moving][1] == target.port
    finally:
        rc.migrate_slot(moving, source)
