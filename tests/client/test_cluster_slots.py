"""The pure half of the cluster client (greenredis.client.slots), checked against the
server as referee: its KEYSLOT, its COMMAND GETKEYS, its CLUSTER SHARDS and SLOTS."""

import pytest

from greenredis.client.slots import (
    GETKEYS,
    CommandTable,
    SlotMap,
    crossslot,
    key_crcs,
    key_slot,
    slot_of_keys,
    split_keys,
)
from greenredis.errors import ReplyError
from greenredis.server import RedisServer, admin_call, find_valkey_server, free_port


@pytest.fixture(scope="module", params=["redis", "valkey"])
def server(request):
    binary = find_valkey_server() if request.param == "valkey" else None
    # an explicit bus port: the default, port + 10000, may be past 65535
    args = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    with RedisServer(binary=binary, args=args) as s:
        yield s


@pytest.fixture(scope="module")
def table(server):
    return CommandTable.from_command_reply(admin_call(server.port, "COMMAND"))


KEYS = [
    "", "a", "foo", "user:1000", "{user1000}.following", "{user1000}.followers", "foo{}{bar}",
    "foo{{bar}}zap", "foo{bar}{zap}", "{}", "}{", "{a", "a}", "ключ", "x" * 300, 12345, 3.5,
    b"\x00\xff{\x01}",
]  # fmt: skip


def test_key_slot_matches_cluster_keyslot(server):
    for key in KEYS:
        assert key_slot(key) == admin_call(server.port, "CLUSTER", "KEYSLOT", key), key
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    with pytest.raises(TypeError, match="a key is"):
        key_slot(None)


COMMANDS = [
    ["GET", "k"], ["set", "k", "v", "EX", 10], ["MSET", "a", 1, "b", 2, "c", 3], ["MGET", "a", "b", "c"],
    ["DEL", "a", "b"], ["ZUNIONSTORE", "dst", 2, "z1", "z2", "WEIGHTS", 1, 2],
    ["EVAL", "return 1", 2, "k1", "k2", "x"], ["EVALSHA", "abc", 0],
    ["XREAD", "COUNT", 2, "STREAMS", "s1", "s2", "0", "0"],
    ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s1", ">"], ["OBJECT", "ENCODING", "k"],
    ["BLPOP", "l1", "l2", 0], ["BLMOVE", "a", "b", "LEFT", "RIGHT", 0], ["LMPOP", 2, "l1", "l2", "LEFT"],
    ["RENAME", "a", "b"], ["SINTERCARD", 2, "s1", "s2", "LIMIT", 1],
    ["GEOSEARCHSTORE", "d", "s", "FROMLONLAT", 0, 0, "BYRADIUS", 1, "km"], ["XINFO", "STREAM", "s"],
    ["MEMORY", "USAGE", "k"], ["BITOP", "AND", "d", "a", "b"], ["PFCOUNT", "h1", "h2"],
    ["SMOVE", "a", "b", "m"], ["FCALL", "f", 1, "k", "arg"], ["COPY", "a", "b"],
    ["ZRANGESTORE", "d", "s", 0, -1], ["WATCH", "a", "b"], ["ZDIFF", 2, "a", "b"],
]  # fmt: skip


def test_key_positions_match_command_getkeys(server, table):
    assert len(table) > 150
    for command in COMMANDS:
        rule = table.rule(command[0]).sub(command)
        keys = rule.keys(command)
        assert keys is not None, command
        expected = admin_call(server.port, "COMMAND", "GETKEYS", *command)
        assert [str(k).encode() if not isinstance(k, bytes) else k for k in keys] == expected, command


def test_rules_for_what_only_the_server_knows_and_keyless(table):
    assert table.rule("SORT").kind == table.rule("SORT_RO").kind == GETKEYS  # BY/GET: "unknown" specs
    assert table.rule("MIGRATE").kind == GETKEYS  # an "incomplete" key spec
    assert table.rule("NOSUCHCOMMAND").kind == GETKEYS  # the server will say it does not exist
    assert table.rule("PING").keys(["PING"]) == []
    assert table.rule(b"get").keys([b"get", b"k"]) == [b"k"]  # any case, bytes too
    assert table.rule("GET").readonly and not table.rule("SET").readonly
    assert table.rule("BLPOP").blocking
    assert table.rule("EVAL").keys(["EVAL", "s", "x"]) == []  # a bad numkeys: the server says so


def test_crossslot_names_the_slots():
    assert slot_of_keys([]) is None
    assert slot_of_keys(["{a}1", "{a}2"]) == key_slot("a")
    with pytest.raises(ReplyError, match=r"^CROSSSLOT .*\(slots (\d+), (\d+)\); nothing was sent") as e:
        slot_of_keys(["a", "b", "a"])
    assert f"slots {min(key_slot('a'), key_slot('b'))}, {max(key_slot('a'), key_slot('b'))}" in str(e.value)
    assert str(crossslot([5, 3, 5])).startswith(
        "CROSSSLOT Keys in request don't hash to the same slot (slots 3, 5)"
    )


SHARDS = [
    [b"slots", [0, 5460, 10923, 10930], b"nodes", [
        [b"id", b"1", b"port", 7000, b"ip", b"10.0.0.1", b"endpoint", b"10.0.0.1", b"role", b"master",
         b"health", b"online"],
        [b"id", b"2", b"port", 7003, b"ip", b"10.0.0.2", b"endpoint", b"", b"role", b"replica", b"health",
         b"loading"],
        [b"id", b"5", b"port", 7004, b"ip", b"10.0.0.5", b"endpoint", b"10.0.0.5", b"role", b"replica",
         b"health", b"online"],
    ]],
    [b"slots", [5461, 10922, 10931, 16383], b"nodes", [
        [b"id", b"3", b"port", 7001, b"ip", b"10.0.0.3", b"endpoint", b"?", b"role", b"master", b"health",
         b"online"],
        [b"id", b"4", b"port", 7005, b"ip", b"10.0.0.4", b"endpoint", b"10.0.0.4", b"role", b"replica",
         b"health", b"failed"],
    ]],
]  # fmt: skip


def test_slot_map_from_shards():
    m = SlotMap.from_shards(SHARDS, ("10.9.9.9", 7000))
    assert m.owners[0] == m.owners[5460] == m.owners[10930] == ("10.0.0.1", 7000)
    assert m.owners[5461] == m.owners[10922] == m.owners[16383] == ("10.0.0.3", 7001)
    assert m.uncovered() == 0
    assert m.replicas[("10.0.0.1", 7000)] == (("10.0.0.2", 7003), ("10.0.0.5", 7004))
    assert m.replicas[("10.0.0.3", 7001)] == ()  # the failed one is not listed
    assert m.reader(0) == ("10.0.0.5", 7004)  # never the replica still loading
    assert m.reader(6000) == ("10.0.0.3", 7001)  # no replica: the primary
    assert m.moved(6000, ("10.0.0.1", 7000)) and not m.moved(6000, ("10.0.0.1", 7000))
    assert m.owners[6000] == ("10.0.0.1", 7000)


def test_keys_split_per_node_in_bulk_as_one_by_one():
    str_keys = [k for k in KEYS if isinstance(k, str)]
    kinds = [
        str_keys,
        [k.encode() for k in str_keys],
        [k.encode() for k in str_keys[:6]] + [memoryview(b"{user1000}x"), bytearray(b"a{b}c")],
        KEYS,  # mixed: str, bytes, int, float
        [f"k:{i}" for i in range(2000)],
        [f"{{u{i}}}:x" for i in range(500)] + ["{}", "{a", "a}{b}"],  # every one with a "{"
    ]
    for keys in kinds:
        assert [crc & 16383 for crc in key_crcs(keys)] == [key_slot(k) for k in keys]
    m = SlotMap.from_shards(SHARDS, ("10.9.9.9", 7000))
    m.owners[100:200] = [None] * 100  # nobody serves these
    m.moved(300, ("10.0.0.3", 7001))
    route = m.route()
    assert route.nodes == (("10.0.0.1", 7000), ("10.0.0.3", 7001), None)
    keys = KEYS + [f"k:{i}" for i in range(2000)]
    groups = split_keys(keys, route)
    assert sorted(i for g in groups for i in g) == list(range(len(keys)))
    for node, positions in zip(route.nodes, groups):
        assert positions == sorted(positions)
        assert all(m.owners[key_slot(keys[i])] == node for i in positions)
    assert groups[2]  # some keys in the unserved slots
    assert m.moved(0, ("10.0.0.3", 7001)) and m.route() is not route  # a new route after a move
    assert m.route().nodes[m.route().table[0]] == ("10.0.0.3", 7001)


def test_slot_map_from_slots_and_the_address_asked():
    reply = [
        [0, 8191, [b"", 7000, b"id1"], [b"10.0.0.2", 7002, b"id2"]],
        [8192, 16000, [b"10.0.0.3", 7001, b"id3"]],
    ]
    m = SlotMap.from_slots(reply, ("10.0.0.1", 7000))
    assert m.owners[0] == ("10.0.0.1", 7000)  # an empty host: the node we asked
    assert m.replicas[("10.0.0.1", 7000)] == (("10.0.0.2", 7002),)
    assert m.uncovered() == 16384 - 16001 and m.owners[16001] is None
    assert m.primaries() == [("10.0.0.1", 7000), ("10.0.0.3", 7001)]


def test_slot_maps_of_a_live_node_agree(server):
    # a one-node cluster of our own making: both replies name the same owner of every slot
    admin_call(server.port, "CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    asked = ("127.0.0.1", server.port)
    shards = SlotMap.from_shards(admin_call(server.port, "CLUSTER", "SHARDS"), asked)
    slots = SlotMap.from_slots(admin_call(server.port, "CLUSTER", "SLOTS"), asked)
    assert shards.owners == slots.owners == [asked] * 16384
