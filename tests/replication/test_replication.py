"""The replication protocol state machine, fed bytes directly (no sockets, no server)."""

import random

import hiredis
import pytest

from greenredis.replication.protocol import (
    Commands,
    Continue,
    Error,
    FullResync,
    RdbData,
    RdbEnd,
    RdbStart,
    ReplicaProtocol,
    State,
    encode_command,
    multibulk_size,
)

pytestmark = pytest.mark.unit  # pure: no server, no sockets

REPLID = "8f1f7e9b3c1d4a6e8f1f7e9b3c1d4a6e8f1f7e9b"


def cmd(*args):
    return encode_command(*args)


def handshake(proto, psync_reply=b"+FULLRESYNC " + REPLID.encode() + b" 100\r\n"):
    """Drive a protocol through PING .. PSYNC; returns the events of the PSYNC reply."""
    assert proto.data_to_send() == cmd("PING")
    assert proto.receive_data(b"+PONG\r\n") == []
    if proto.password is not None:
        assert proto.data_to_send().startswith(b"*")
        assert proto.receive_data(b"+OK\r\n") == []
    if proto.listening_port is not None:
        assert proto.data_to_send() == cmd("REPLCONF", "listening-port", proto.listening_port)
        assert proto.receive_data(b"+OK\r\n") == []
    assert proto.data_to_send() == cmd("REPLCONF", "capa", "eof", "capa", "psync2")
    assert proto.receive_data(b"+OK\r\n") == []
    assert proto.data_to_send().startswith(b"*3\r\n$5\r\nPSYNC\r\n")
    return proto.receive_data(psync_reply)


def collect(proto, data, chunk_sizes):
    """Feed ``data`` in chunks of the given sizes (cycled); all events, RdbData joined."""
    events, i, k = [], 0, 0
    while i < len(data):
        n = chunk_sizes[k % len(chunk_sizes)]
        k += 1
        events += proto.receive_data(data[i : i + n])
        i += n
    return events


def rdb_bytes(events):
    return b"".join(e.data for e in events if isinstance(e, RdbData))


def commands(events):
    argvs, offsets = [], []
    for e in events:
        if isinstance(e, Commands):
            argvs += e.argvs
            offsets += e.offsets
    return argvs, offsets


# -- handshake -------------------------------------------------------------------------


def test_handshake_without_auth_asks_for_full_sync():
    p = ReplicaProtocol()
    assert p.data_to_send() == cmd("PING")
    assert p.receive_data(b"+PONG\r\n") == []
    assert p.data_to_send() == cmd("REPLCONF", "capa", "eof", "capa", "psync2")
    assert p.receive_data(b"+OK\r\n") == []
    assert p.data_to_send() == cmd("PSYNC", "?", "-1")
    assert p.receive_data(b"+FULLRESYNC " + REPLID.encode() + b" 1234\r\n") == [FullResync(REPLID, 1234)]
    assert (p.replid, p.offset, p.state) == (REPLID, 1234, State.WAIT_PAYLOAD)


def test_handshake_with_password_user_and_port():
    p = ReplicaProtocol(password="s3cret", username="repl", listening_port=7001, ip_address="10.0.0.9")
    assert p.data_to_send() == cmd("PING")
    p.receive_data(b"-NOAUTH Authentication required.\r\n")
    assert p.data_to_send() == cmd("AUTH", "repl", "s3cret")
    p.receive_data(b"+OK\r\n")
    assert p.data_to_send() == (
        cmd("REPLCONF", "listening-port", "7001") + cmd("REPLCONF", "ip-address", "10.0.0.9")
    )
    p.receive_data(b"+OK\r\n")
    assert p.data_to_send() == b""  # waits for the second reply
    p.receive_data(b"-ERR unknown option\r\n")  # ignored, as Redis does
    assert p.data_to_send() == cmd("REPLCONF", "capa", "eof", "capa", "psync2")


def test_password_only_auth_and_failure_is_an_error():
    p = ReplicaProtocol(password="wrong")
    p.data_to_send()
    p.receive_data(b"+PONG\r\n")
    assert p.data_to_send() == cmd("AUTH", "wrong")
    (ev,) = p.receive_data(b"-WRONGPASS invalid username-password pair\r\n")
    assert isinstance(ev, Error) and "AUTH failed" in str(ev.error)
    assert "WRONGPASS" in str(ev.error)
    assert p.state == State.CLOSED
    assert p.receive_data(b"+OK\r\n") == []  # ignored once closed


def test_ping_error_other_than_noauth_fails():
    p = ReplicaProtocol()
    (ev,) = p.receive_data(b"-ERR something broke\r\n")
    assert isinstance(ev, Error) and "PING" in str(ev.error)


def test_not_redis_at_all():
    p = ReplicaProtocol()
    (ev,) = p.receive_data(b"HTTP/1.1 400 Bad Request\r\n")
    assert isinstance(ev, Error) and "not a Redis master" in str(ev.error)


def test_partial_resync_request_and_continue():
    p = ReplicaProtocol(replid=REPLID, offset=5000)
    assert p.data_to_send() == cmd("PING")
    p.receive_data(b"+PONG\r\n")
    p.receive_data(b"+OK\r\n")
    assert p.data_to_send() == cmd("REPLCONF", "capa", "eof", "capa", "psync2") + cmd("PSYNC", REPLID, "5001")
    assert p.receive_data(b"+CONTINUE\r\n") == [Continue(REPLID, 5000)]
    assert p.streaming and p.offset == 5000
    events = p.receive_data(cmd("SET", "a", "1"))
    assert commands(events) == ([[b"SET", b"a", b"1"]], [5000 + len(cmd("SET", "a", "1"))])


def test_continue_with_new_replid():
    new = "a" * 40
    p = ReplicaProtocol(replid=REPLID, offset=10)
    events = handshake(p, b"+CONTINUE " + new.encode() + b"\r\n" + cmd("DEL", "k"))
    assert events[0] == Continue(new, 10)
    assert p.replid == new
    assert commands(events)[1] == [10 + len(cmd("DEL", "k"))]


@pytest.mark.parametrize(
    "reply",
    [
        b"-NOMASTERLINK Can't SYNC while not connected with my master",
        b"-LOADING Redis is loading the dataset in memory",
    ],
)
def test_try_later_replies(reply):
    p = ReplicaProtocol()
    (ev,) = handshake(p, reply + b"\r\n")
    assert isinstance(ev, Error) and ev.error.retry_later


def test_loading_in_reply_to_ping_is_retry_later():
    # a master still loading its dataset answers the handshake's first PING with -LOADING
    p = ReplicaProtocol(password="pw")
    (ev,) = p.receive_data(b"-LOADING Redis is loading the dataset in memory\r\n")
    assert isinstance(ev, Error) and ev.error.retry_later
    assert "retry later" in str(ev.error) and p.state == State.CLOSED
    assert p.data_to_send() == cmd("PING")  # no AUTH sent to a master that is loading


def test_old_master_falls_back_to_sync():
    p = ReplicaProtocol()
    p.receive_data(b"+PONG\r\n")
    p.receive_data(b"-ERR unknown command 'REPLCONF'\r\n")
    (ev,) = p.receive_data(b"-ERR unknown command 'PSYNC'\r\n")
    assert ev == FullResync(None, None)
    assert p.data_to_send().endswith(cmd("PSYNC", "?", "-1") + cmd("SYNC"))
    events = p.receive_data(b"\n\n$5\r\nREDIS" + cmd("SET", "x", "y"))
    assert rdb_bytes(events) == b"REDIS"
    assert commands(events)[0] == [[b"SET", b"x", b"y"]]
    assert p.ack() == b""  # no REPLCONF ACK for a master without REPLCONF
    assert b"ACK" not in p.data_to_send()


def test_psync_refused_by_a_master_that_knows_replconf_still_acks():
    p = ReplicaProtocol()
    (ev,) = handshake(p, b"-NOPERM this user has no permissions to run the 'psync' command\r\n")
    assert ev == FullResync(None, None) and p.data_to_send() == cmd("SYNC")
    p.receive_data(b"$EOF:" + b"m" * 40 + b"\r\nREDIS" + b"m" * 40)
    assert p.data_to_send() == cmd("REPLCONF", "ACK", 0)  # a diskless master waits for it
    p.receive_data(cmd("SET", "a", "b"))
    assert p.ack() == cmd("REPLCONF", "ACK", len(cmd("SET", "a", "b")))


def test_keepalive_newlines_before_psync_reply_and_payload():
    p = ReplicaProtocol()
    events = handshake(p, b"\n\n+FULLRESYNC " + REPLID.encode() + b" 7\r\n\n\n\n")
    assert events == [FullResync(REPLID, 7)]
    assert p.receive_data(b"\n") == []
    events = p.receive_data(b"\n$3\r\nabc")
    assert [type(e) for e in events] == [RdbStart, RdbData, RdbEnd]


def test_bad_payload_header():
    p = ReplicaProtocol()
    handshake(p)
    (ev,) = p.receive_data(b"+what\r\n")
    assert isinstance(ev, Error) and "$<length>" in str(ev.error)


# -- the snapshot ----------------------------------------------------------------------


def payload(n, seed=1):
    rnd = random.Random(seed)
    return bytes(rnd.getrandbits(8) for _ in range(n))


@pytest.mark.parametrize("chunks", [[1], [7], [39, 40, 41], [4096], [100000]])
def test_bulk_payload_any_chunking(chunks):
    rdb = payload(3000)
    stream = cmd("SET", "k", "v") + cmd("PING") + cmd("INCR", "n")
    p = ReplicaProtocol()
    handshake(p)
    events = collect(p, b"\n\n$3000\r\n" + rdb + stream, chunks)
    assert events[0] == RdbStart(3000)
    assert rdb_bytes(events) == rdb
    assert [e for e in events if isinstance(e, RdbEnd)] == [RdbEnd(3000)]
    argvs, offsets = commands(events)
    assert argvs == [[b"SET", b"k", b"v"], [b"INCR", b"n"]]
    assert offsets == [100 + len(cmd("SET", "k", "v")), 100 + len(stream)]
    assert p.offset == 100 + len(stream)


@pytest.mark.parametrize("chunks", [[1], [13], [39, 40, 41], [4096], [100000]])
def test_diskless_eof_mark_any_chunking(chunks):
    mark = b"0123456789abcdef0123456789abcdef01234567"
    rdb = payload(5000, seed=2) + mark[:39]  # a near-miss of the mark inside the payload
    stream = cmd("LPUSH", "l", "a", "b")
    p = ReplicaProtocol()
    handshake(p)
    events = collect(p, b"$EOF:" + mark + b"\r\n" + rdb + mark + stream, chunks)
    assert events[0] == RdbStart(None)
    assert rdb_bytes(events) == rdb
    assert [e for e in events if isinstance(e, RdbEnd)] == [RdbEnd(len(rdb))]
    assert commands(events)[0] == [[b"LPUSH", b"l", b"a", b"b"]]
    assert p.offset == 100 + len(stream)


def test_bad_eof_mark_length():
    p = ReplicaProtocol()
    handshake(p)
    (ev,) = p.receive_data(b"$EOF:short\r\n")
    assert isinstance(ev, Error) and "EOF mark" in str(ev.error)


def test_empty_bulk_payload():
    p = ReplicaProtocol()
    handshake(p)
    events = p.receive_data(b"$0\r\n")
    assert events == [RdbStart(0), RdbEnd(0)]
    assert p.streaming


# -- the command stream ----------------------------------------------------------------


def streaming(offset=0):
    p = ReplicaProtocol(replid=REPLID, offset=offset)
    handshake(p, b"+CONTINUE\r\n")
    return p


def random_command(rnd):
    kind = rnd.randrange(4)
    if kind == 0:
        return [b"SET", b"key:%d" % rnd.randrange(1000), b"x" * rnd.choice([0, 1, 9, 10, 99, 100, 20000])]
    if kind == 1:
        return [b"HSET", b"h"] + [b"f%d" % i for i in range(rnd.randrange(2, 30))]
    if kind == 2:
        return [b"SELECT", str(rnd.randrange(16)).encode()]
    return [b"RPUSH", b"l"] + [bytes([rnd.randrange(256)]) * rnd.randrange(50) for _ in range(1200)]


@pytest.mark.parametrize("seed", range(5))
def test_offsets_are_byte_exact_under_random_chunking(seed):
    rnd = random.Random(seed)
    argvs = [random_command(rnd) for _ in range(400)]
    wire = b"".join(encode_command(*a) for a in argvs)
    p = streaming(offset=1000)
    events = []
    i = 0
    while i < len(wire):
        n = rnd.choice([1, 2, 100, 1023, 1024, 1025, 5000, 70000])
        events += p.receive_data(wire[i : i + n])
        i += n
    assert not any(isinstance(e, Error) for e in events)
    got, offsets = commands(events)
    assert got == argvs
    expected, total = [], 1000
    for a in argvs:
        total += len(encode_command(*a))
        expected.append(total)
    assert offsets == expected
    assert p.offset == 1000 + len(wire)


def test_multibulk_size_matches_encoding():
    for argv in ([b""], [b"a" * 9], [b"a" * 10], [b"b" * 99999], [b"x"] * 1500, [b"y"] * 10):
        assert multibulk_size(argv) == len(encode_command(*argv))


def test_ping_and_getack_count_but_are_not_listed():
    p = streaming(offset=0)
    set_cmd = cmd("SET", "a", "b")
    getack = cmd("REPLCONF", "GETACK", "*")
    events = p.receive_data(set_cmd + cmd("PING") + getack + cmd("DEL", "a"))
    argvs, offsets = commands(events)
    assert argvs == [[b"SET", b"a", b"b"], [b"DEL", b"a"]]
    total = len(set_cmd) + len(cmd("PING")) + len(getack) + len(cmd("DEL", "a"))
    assert offsets[-1] == total == p.offset
    # the ACK answers with the offset before the GETACK itself, like Redis
    assert p.data_to_send() == cmd("REPLCONF", "ACK", len(set_cmd) + len(cmd("PING")))
    assert p.ack() == cmd("REPLCONF", "ACK", total)


def test_offset_holds_inside_multi():
    p = streaming(offset=50)
    multi = cmd("MULTI") + cmd("INCR", "a") + cmd("INCR", "b")
    p.receive_data(multi)
    assert p.offset == 50  # a reconnect now resumes before the transaction
    events = p.receive_data(cmd("EXEC"))
    assert p.offset == 50 + len(multi) + len(cmd("EXEC"))
    assert commands(events)[0] == [[b"EXEC"]]


def test_not_resp_is_an_error_after_the_good_commands():
    p = streaming(offset=0)
    good = cmd("SET", "a", "1")
    events = p.receive_data(good + b"*2\r\n$3\r\nGET\r\n$x\r\n")
    assert isinstance(events[0], Commands) and events[0].argvs == [[b"SET", b"a", b"1"]]
    assert isinstance(events[1], Error)
    assert "not RESP" in str(events[1].error)
    assert p.offset == len(good)


def test_a_reply_that_is_not_a_command_is_an_error():
    p = streaming(offset=0)
    (ev,) = p.receive_data(b"+OK\r\n")
    assert isinstance(ev, Error) and "not a command" in str(ev.error)


def test_non_canonical_encoding_is_caught_not_miscounted():
    # A RESP3 big number inside the array parses to bytes too, shorter than we count as a
    # bulk string; the parser's own bookkeeping exposes it once it drops the consumed bytes
    # (every >= 1 KiB), before the call delivers anything, and the error says where it is
    p = streaming(offset=0)
    good = cmd("DEL", "k") * 10
    odd = b"*2\r\n$3\r\nDEL\r\n(5\r\n"
    events = p.receive_data(good + odd * 200)
    assert [type(e) for e in events] == [Error] and p.offset == 0
    assert f"not a bulk string) in the command at offset {len(good)}" in str(events[0].error)


def test_a_longer_non_canonical_encoding_is_refused():
    # "$03" would be 1 byte longer than we count: hiredis refuses it
    p = streaming(offset=0)
    good = cmd("DEL", "k") * 200
    events = p.receive_data(good + b"*2\r\n$03\r\nDEL\r\n$1\r\nk\r\n")
    assert isinstance(events[-1], Error)
    assert "not RESP" in str(events[-1].error)
    assert p.offset == len(good)


def test_hiredis_drops_consumed_bytes_exactly_at_1_kib():
    """The stream parser looks at hiredis's buffer only once 1 KiB has been consumed
    since it last dropped bytes (read.c's rule); this is the rule it relies on."""
    rnd = random.Random(7)
    wire = b"".join(cmd("SET", "k" * rnd.randint(1, 300), "v" * rnd.randint(0, 50)) for _ in range(2000))
    reader = hiredis.Reader()
    fed = consumed = base = drops = 0
    i = 0
    while i < len(wire):
        chunk = wire[i : i + rnd.randint(1, 3000)]
        i += len(chunk)
        reader.feed(chunk)
        fed += len(chunk)
        while (argv := reader.gets()) is not False:
            consumed += len(encode_command(*argv))
            dropped = fed - base - reader.len()
            if consumed - base >= 1024:
                assert dropped == consumed - base  # dropped exactly what was consumed
                base, drops = consumed, drops + 1
            else:
                assert dropped == 0
        base = fed - reader.len()  # an incomplete reply may drop bytes too
    assert drops > 100


def test_special_commands_in_any_case_and_a_big_stream_offsets():
    p = streaming(offset=0)
    wire, expected, total = b"", [], 0
    rnd = random.Random(11)
    for n in range(3000):
        c = cmd(*rnd.choice([["SET", f"k{n}", "v" * rnd.randint(0, 40)], ["MuLtI"], ["exec"], ["Ping"]]))
        wire += c
        total += len(c)
        if b"Ping" not in c:
            expected.append(total)
    offsets = []
    for i in range(0, len(wire), 997):
        for ev in p.receive_data(wire[i : i + 997]):
            assert isinstance(ev, Commands), ev
            offsets += ev.offsets
    assert offsets == expected


def test_a_nested_array_as_the_command_name_is_an_error():
    p = streaming(offset=0)
    (ev,) = p.receive_data(b"*2\r\n*1\r\n$3\r\nDEL\r\n$1\r\nk\r\n")
    assert isinstance(ev, Error) and "not a command" in str(ev.error)


def test_an_integer_argument_is_an_error():
    p = streaming(offset=0)
    (ev,) = p.receive_data(b"*2\r\n$3\r\nDEL\r\n:5\r\n")
    assert isinstance(ev, Error) and "not a command" in str(ev.error)


def test_ack_only_while_streaming():
    p = ReplicaProtocol()
    assert p.ack() == b""
    handshake(p)
    assert p.ack() == b""
    p.receive_data(b"$0\r\n")
    assert p.ack() == cmd("REPLCONF", "ACK", 100)


def test_data_offset_skips_pings_publish_and_select():
    p = streaming(offset=100)
    write = cmd("SELECT", "3") + cmd("SET", "a", "1")
    tail = cmd("PING") + cmd("SELECT", "0") + cmd("PUBLISH", "__sentinel__:hello", "x") + cmd("PING")
    tail += cmd("REPLCONF", "GETACK", "*") + cmd("SPUBLISH", "s", "x")
    p.receive_data(write + tail)
    assert p.offset == 100 + len(write) + len(tail)
    assert (p.data_offset, p.data_db) == (100 + len(write), 3)  # the db of the last data command
    assert p.db == 0  # the last SELECT, at offset
    p.receive_data(cmd("DEL", "a"))
    assert p.data_offset == p.offset and p.data_db == 0


def test_data_offset_of_a_transaction_counts_at_its_exec():
    p = streaming(offset=0)
    only_publish = cmd("MULTI") + cmd("PUBLISH", "c", "m") + cmd("EXEC")
    p.receive_data(only_publish)
    assert p.offset == len(only_publish) and p.data_offset == 0
    tx = cmd("MULTI") + cmd("SELECT", "2") + cmd("INCR", "n")
    p.receive_data(tx)
    assert p.data_offset == 0 and p.offset == len(only_publish)  # inside: nothing committed
    p.receive_data(cmd("EXEC"))
    assert p.data_offset == p.offset == len(only_publish) + len(tx) + len(cmd("EXEC"))
    assert p.data_db == p.db == 2


def test_continue_from_a_data_offset_resumes_its_db():
    p = ReplicaProtocol(replid=REPLID, offset=700, db=4)
    handshake(p, b"+CONTINUE\r\n")
    assert (p.offset, p.db, p.data_offset, p.data_db) == (700, 4, 700, 4)
    p.receive_data(cmd("PING"))
    assert (p.data_offset, p.data_db) == (700, 4)


def test_full_resync_resets_the_data_offset_and_db():
    p = ReplicaProtocol(replid=REPLID, offset=700, db=4)
    handshake(p)  # +FULLRESYNC <replid> 100
    assert (p.offset, p.db, p.data_offset, p.data_db) == (100, 0, 100, 0)


@pytest.mark.parametrize(
    "wire",
    [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n*1\r\n$1\r\nv\r\n",  # a nested array as the value
        b"*2\r\n$3\r\nDEL\r\n*0\r\n",  # an empty one
    ],
)
def test_a_nested_array_as_an_argument_is_an_error_at_once(wire):
    # Its size is not what we count, and hiredis's bookkeeping would only show that at
    # its next 1 KiB drop: meanwhile a GETACK would be answered with a wrong offset and
    # the applier would store a list as the value.
    p = streaming(offset=0)
    events = p.receive_data(wire + cmd("REPLCONF", "GETACK", "*"))
    assert [type(e) for e in events] == [Error]
    assert "not a command" in str(events[0].error)
    assert p.offset == 0 and p.data_to_send() == b""


def test_a_nested_array_in_a_long_or_huge_command_is_an_error_in_one_short_line():
    # 1000+ arguments, or one over 1 MiB, take the slower size path: it refuses it too,
    # and the error does not carry the whole command
    many = b"".join(encode_command(b"RPUSH", b"l", *[b"x"] * 1500).split(b"\r\n", 1)[1:])
    huge = b"".join(encode_command(b"SET", b"k", b"v" * (1 << 20 | 1)).split(b"\r\n", 1)[1:])
    for argv_wire in (b"*1503\r\n" + many + b"*0\r\n", b"*4\r\n" + huge + b"*1\r\n$1\r\nv\r\n"):
        p = streaming(offset=0)
        events = []
        for i in range(0, len(argv_wire), 65536):  # in chunks, as a socket gives it
            events += p.receive_data(argv_wire[i : i + 65536])
        assert [type(e) for e in events] == [Error]
        assert "not a command" in str(events[0].error) and len(str(events[0].error)) < 500
        assert p.offset == 0


@pytest.mark.parametrize("sizes", ["64k", "random"])
def test_big_reads_are_parsed_in_pieces_with_exact_offsets_and_acks(sizes):
    # hiredis is fed a read in pieces (it moves its unread buffer at every 1 KiB it drops):
    # offsets, GETACK replies and MULTI positions stay exact across the pieces' borders,
    # for commands of any size, however the reads fall
    rnd = random.Random(5)
    p = streaming(offset=0)
    parts, expected, acks, total, in_multi, committed = [], [], [], 0, False, 0
    for n in range(3000):
        kind = rnd.random()
        if kind < 0.02:
            c = cmd("REPLCONF", "GETACK", "*")
            acks.append(committed if in_multi else total)
        elif kind < 0.04:
            c = cmd("MULTI" if not in_multi else "EXEC")
            in_multi = not in_multi
        else:
            size = rnd.choice([5000, 12000]) if kind > 0.98 else rnd.choice([1, 10, 40, 300])
            c = cmd("SET", f"k{n}", "v" * size)
        parts.append(c)
        total += len(c)
        if b"GETACK" not in c:
            expected.append(total)
        if not in_multi:
            committed = total
    wire, offsets, i = b"".join(parts), [], 0
    while i < len(wire):
        n = 65536 if sizes == "64k" else rnd.randint(1, 70000)
        for ev in p.receive_data(wire[i : i + n]):
            assert isinstance(ev, Commands), ev
            offsets += ev.offsets
        i += n
    assert offsets == expected
    assert p.offset == committed and p.data_to_send() == b"".join(cmd("REPLCONF", "ACK", a) for a in acks)


def expected_positions(start, argvs):
    """What a replica at ``start`` must make of ``argvs`` (Redis's rules, written out plainly):
    (each returned command's end offset, GETACK replies, offset, db, data_offset, data_db)."""
    off, ends, acks = start, [], []
    committed, db, data_offset, data_db, cur_db = start, 0, start, 0, 0
    in_multi = multi_data = False
    for argv in argvs:
        before, off, name = off, off + len(cmd(*argv)), argv[0].upper()
        if name in (b"REPLCONF", b"PING"):
            if name == b"REPLCONF":
                acks.append(committed if in_multi else before)
            if not in_multi:
                committed, db = off, cur_db
            continue
        ends.append(off)
        changes = name not in (b"SELECT", b"PUBLISH", b"MULTI", b"DISCARD")
        if name == b"SELECT":
            cur_db = int(argv[1])
        elif name == b"MULTI":
            in_multi, multi_data = True, False
        elif name in (b"EXEC", b"DISCARD"):
            in_multi, changes = False, changes and multi_data
        if in_multi:
            multi_data = multi_data or changes
        else:
            committed, db = off, cur_db
            if changes:
                data_offset, data_db = off, cur_db
    return ends, acks, committed, db, data_offset, data_db


@pytest.mark.parametrize("seed", range(6))
def test_every_position_is_byte_exact_across_the_pieces_hiredis_is_fed(seed):
    """PING, SELECT, PUBLISH, GETACK, MULTI/EXEC/DISCARD in any case, among arguments of
    4 KiB +-1, 10000 +-1 bytes and 1000 +-1 of them, in reads of 1 byte to 100 KB: the
    command ends, the ACKs, offset/db and data_offset/data_db are all those Redis counts."""
    rnd = random.Random(seed)
    argvs, in_multi = [], False
    for _ in range(300):
        r = rnd.random()
        if r < 0.05:
            argv = [b"SELECT", b"%d" % rnd.randrange(16)]
        elif r < 0.1:
            argv = [rnd.choice([b"PING", b"ping"])]
        elif r < 0.15:
            argv = [b"REPLCONF", rnd.choice([b"GETACK", b"getack"]), b"*"]
        elif r < 0.22:
            argv = [
                rnd.choice([b"EXEC", b"DISCARD", b"exec"]) if in_multi else rnd.choice([b"MULTI", b"multi"])
            ]
            in_multi = not in_multi
        elif r < 0.25:
            argv = [b"PUBLISH", b"ch", b"m"]
        elif r < 0.29:
            argv = [b"SET", b"big", b"x" * rnd.choice([4095, 4096, 4097, 9999, 10000, 10001, 70000])]
        elif r < 0.3:
            argv = [b"RPUSH", b"l"] + [b"e"] * rnd.choice([997, 998, 999, 1000])
        else:
            argv = [rnd.choice([b"SET", b"set"]), b"k%d" % rnd.randrange(100), b"v" * rnd.randrange(50)]
        argvs.append(argv)
    wire = b"".join(cmd(*a) for a in argvs)
    start = rnd.choice([0, 12345, 2**40])
    want = expected_positions(start, argvs)
    sizes = [1, 2, 1023, 1024, 1025, 4095, 4096, 4097, 65536, 100_000]
    for reads in ("64k", "random"):
        p = streaming(offset=start)
        p.data_to_send()
        ends, acks, i = [], [], 0
        while i < len(wire):
            n = 65536 if reads == "64k" else rnd.choice(sizes)
            for ev in p.receive_data(wire[i : i + n]):
                assert isinstance(ev, Commands), ev
                ends += ev.offsets
            out = p.data_to_send()
            while out:
                reply = hiredis.Reader()
                reply.feed(out)
                argv = reply.gets()
                assert argv[:2] == [b"REPLCONF", b"ACK"], argv
                acks.append(int(argv[2]))
                out = out[len(cmd(*argv)) :]
            i += n
        assert (ends, acks, p.offset, p.db, p.data_offset, p.data_db) == want, reads


@pytest.mark.parametrize(
    "wire",
    [
        b"*2\r\n+DEL\r\n$1\r\nk\r\n",  # a simple string as the command name
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n+v\r\n",  # ... as an argument
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n+\r\n",  # an empty one
    ],
)
def test_a_simple_string_in_a_command_is_an_error_at_once(wire):
    # hiredis gives "+v" the bytes of "$1 v": counted as a bulk string, the offset would run
    # ahead and show only at hiredis's next 1 KiB drop (a GETACK answered wrong meanwhile)
    before = cmd("SET", "a", "1")
    for cut in range(len(before), len(before) + len(wire) + 1):  # however the reads fall
        p = streaming(offset=0)
        stream = before + wire + cmd("REPLCONF", "GETACK", "*") + cmd("SET", "b", "2")
        events = p.receive_data(stream[:cut]) + p.receive_data(stream[cut:])
        got, offsets = commands([e for e in events if isinstance(e, Commands)])
        # the call that holds it delivers nothing (the command before it, if it came in that
        # call, too: a partial resync from the offset, which stays where the call began, gets it)
        assert got in ([], [[b"SET", b"a", b"1"]]) and isinstance(events[-1], Error), cut
        assert p.offset == (offsets or [0])[-1] and offsets in ([], [len(before)])
        msg = str(events[-1].error)
        assert "simple string" in msg and f"command at offset {len(before)}" in msg, (cut, msg)
        assert p.data_to_send() == b""  # no ACK of a wrong offset


def test_values_holding_crlf_plus_are_counted_as_bulk_strings():
    # "\r\n+" inside a bulk string is data, not a simple string: exact offsets, in any chunking
    argvs = [[b"SET", b"k%d" % i, b"a\r\n+b" * i + b"\r\n+"] for i in range(300)] + [[b"DEL", b"\r\n+OK"]]
    wire = b"".join(encode_command(*a) for a in argvs)
    for step in (1, 2, 3, 1000, len(wire)):
        p = streaming(offset=0)
        events = []
        for i in range(0, len(wire), step):
            events += p.receive_data(wire[i : i + step])
        assert not any(isinstance(e, Error) for e in events), step
        got, offsets = commands(events)
        assert got == argvs and offsets[-1] == len(wire) == p.offset


@pytest.mark.parametrize("seed", range(4))
def test_the_first_simple_string_of_a_long_stream_is_refused_where_it_is(seed):
    # among values holding "\r\n+" and commands of every size (1000+ arguments, 10000+ bytes
    # take the slower size path), read in random pieces: every command before it is delivered
    # with its exact offset, nothing after it
    rnd = random.Random(seed)
    argvs = []
    for _ in range(rnd.randrange(50, 400)):
        argv = random_command(rnd)
        if rnd.random() < 0.3:
            argv[-1] += b"\r\n+x" * rnd.randrange(1, 4)
        argvs.append(argv)
    wire = b"".join(encode_command(*a) for a in argvs)
    bad = random_command(rnd)
    i = rnd.randrange(len(bad))
    bad[i] = bad[i].replace(b"\r", b"r").replace(b"\n", b"n")  # what a simple string can hold
    bad_wire = b"*%d\r\n" % len(bad) + b"".join(
        (b"+%s\r\n" if j == i else b"$%d\r\n%%s\r\n" % len(a)) % a for j, a in enumerate(bad)
    )
    stream = wire + bad_wire + encode_command("SET", "after", "1") * 50
    p = streaming(offset=10)
    events, at = [], 0
    while at < len(stream) and not (events and isinstance(events[-1], Error)):
        n = rnd.choice([1, 3, 1024, 4096, 65536])
        events += p.receive_data(stream[at : at + n])
        at += n
    got, offsets = commands([e for e in events if isinstance(e, Commands)])
    assert got == argvs[: len(got)] and p.offset == (offsets or [10])[-1]  # a prefix, exact offsets
    assert offsets == [10 + sum(len(encode_command(*a)) for a in argvs[: k + 1]) for k in range(len(got))]
    msg = str(events[-1].error)
    assert isinstance(events[-1], Error) and len(msg) < 500
    if len(bad_wire) < 1 << 19:  # up to a huge command, the error says which one
        assert "simple string" in msg and f"command at offset {10 + len(wire)}" in msg, msg


@pytest.mark.parametrize(
    "wire",
    [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n=5\r\ntxt:v\r\n",  # RESP3 verbatim: 4 bytes over the count
        b"*3\r\n$3\r\nSET\r\n=5\r\ntxt:k\r\n=5\r\ntxt:v\r\n",  # two: counted 8 short
    ],
)
def test_a_command_longer_than_counted_is_an_error_however_the_reads_fall(wire):
    # counted short, the command "ends" before the read that completes it begins: an Error
    # event at the command's offset, not an IndexError out of receive_data with the offset moved
    before = cmd("SET", "a", "1")
    stream = before + cmd("REPLCONF", "GETACK", "*") + wire + cmd("SET", "b", "2")
    ends = (0, len(before), len(before) + 37)  # the good commands' ends (37: the GETACK)
    for step in range(1, len(stream) + 1):
        p = streaming(offset=0)
        events = []
        for i in range(0, len(stream), step):
            if not events or not isinstance(events[-1], Error):
                refused = i  # where the read that failed began
                events += p.receive_data(stream[i : i + step])
        got, offsets = commands(events)
        assert isinstance(events[-1], Error), step
        assert got in ([], [[b"SET", b"a", b"1"]]) and offsets in ([], [len(before)]), step
        assert p.offset == max(e for e in ends if e <= refused), step  # the last good command's end
        assert f"element (not a bulk string) in the command at offset {len(before) + 37}" in str(
            events[-1].error
        )
