"""greenredis.Cluster against a real 3-primary cluster (one replica each)."""

import gevent
import pytest

import greenredis
from greenredis.client.slots import key_slot
from greenredis.errors import ReplyError


@pytest.fixture(scope="module")
def c(redis_cluster):
    client = greenredis.Cluster(redis_cluster.startup_nodes[:1])
    yield client
    client.close()


def _calls(cluster, name):
    """How many times every primary ran ``name`` (INFO commandstats)."""
    total = 0
    for node in cluster.primaries:
        info = cluster.call(node, "INFO", "commandstats").decode()
        for line in info.splitlines():
            if line.startswith(f"cmdstat_{name}:"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def test_keys_over_all_slots_from_1000_greenlets(c, redis_cluster):
    wrong = []

    def work(i):
        key = f"g:{i}"
        if c.cmd(["SET", key, i]) != b"OK" or c.cmd(["GET", key]) != str(i).encode():
            wrong.append(i)
        if c.cmd(["INCR", key]) != i + 1:
            wrong.append(i)

    gevent.joinall([gevent.spawn(work, i) for i in range(1000)], raise_error=True)
    assert wrong == []
    # the keys really are spread over every primary, each on the owner of its slot
    per_node = {}
    owners = redis_cluster.slot_owners()
    for i in range(1000):
        owner = owners[key_slot(f"g:{i}")]
        per_node[owner.port] = per_node.get(owner.port, 0) + 1
    assert len(per_node) == 3
    for node in redis_cluster.primaries:
        assert redis_cluster.call(node, "DBSIZE") >= per_node[node.port]


def test_batch_spanning_all_nodes_keeps_order_and_errors_in_place(c, redis_cluster):
    c.cmd(["DEL", "b:list"])
    c.cmd(["RPUSH", "b:list", "x"])
    batch = []
    for i in range(300):
        batch.append(["SET", f"b:{i}", i])
        batch.append(["GET", f"b:{i}"])
    batch.insert(17, ["INCR", "b:list"])  # WRONGTYPE, in place
    batch.insert(200, ["MGET", "b:1", "b:2"])  # CROSSSLOT, in place
    replies = c.cmd(batch)
    assert len(replies) == len(batch)
    assert isinstance(replies[17], ReplyError) and replies[17].prefix == "WRONGTYPE"
    assert isinstance(replies[200], ReplyError) and str(replies[200]).startswith("CROSSSLOT")
    rest = replies[:17] + replies[18:200] + replies[201:]
    assert rest == [r for i in range(300) for r in (b"OK", str(i).encode())]
    owners = redis_cluster.slot_owners()
    assert len({owners[key_slot(f"b:{i}")].port for i in range(300)}) == 3


def test_crossslot_is_refused_before_sending_and_names_the_slots(c, redis_cluster):
    a, b = key_slot("x:1"), key_slot("x:2")
    assert a != b
    before = _calls(redis_cluster, "mset")
    with pytest.raises(ReplyError, match=rf"^CROSSSLOT .*slots {min(a, b)}, {max(a, b)}"):
        c.cmd(["MSET", "x:1", "1", "x:2", "2"])
    with pytest.raises(ReplyError, match="^CROSSSLOT"):
        c.transaction([["SET", "x:1", 1], ["SET", "x:2", 2]])
    assert _calls(redis_cluster, "mset") == before
    assert c.cmd(["MSET", "{x}:1", "1", "{x}:2", "2"]) == b"OK"
    assert c.cmd(["MGET", "{x}:1", "{x}:2"]) == [b"1", b"2"]


def test_transaction_on_one_slot(c):
    c.cmd(["DEL", "{u1}:n"])
    assert c.transaction([["INCR", "{u1}:n"], ["INCR", "{u1}:n"], ["GET", "{u1}:n"]]) == [1, 2, b"2"]


def test_keys_found_from_the_servers_key_specs(c):
    # keynum (EVAL, ZUNIONSTORE), keyword (XREAD STREAMS), subcommand (OBJECT ENCODING)
    c.cmd(["SET", "{k}a", "v"])
    assert c.cmd(["EVAL", "return redis.call('GET', KEYS[1])", 1, "{k}a"]) == b"v"
    assert c.cmd(["OBJECT", "ENCODING", "{k}a"]) in (b"embstr", b"raw")
    c.cmd(["ZADD", "{z}1", 1, "m"])
    assert c.cmd(["ZUNIONSTORE", "{z}out", 1, "{z}1"]) == 1
    c.cmd(["XADD", "{s}1", "*", "f", "v"])
    assert c.cmd(["XREAD", "COUNT", 1, "STREAMS", "{s}1", "0"])[0][0] == b"{s}1"
    with pytest.raises(ReplyError, match="^CROSSSLOT"):
        c.cmd(["XREAD", "STREAMS", "s:1", "s:2", "0", "0"])


def test_keyless_commands_and_node_option(c, redis_cluster):
    assert c.cmd(["PING"]) == b"PONG"
    every = c.cmd(["PING"], node="all")
    assert sorted(every) == sorted(redis_cluster.startup_nodes) and set(every.values()) == {b"PONG"}
    assert len(c.cmd(["PING"], node="primaries")) == 3
    one = redis_cluster.primaries[0]
    assert c.cmd(["CLUSTER", "MYID"], node=("127.0.0.1", one.port)).decode() == redis_cluster.node_id(one)
    with pytest.raises(ValueError, match="node="):
        c.cmd(["PING"], node="some")


def test_from_url_and_redis_from_url_give_a_cluster(redis_cluster):
    for client in (
        greenredis.Cluster.from_url(redis_cluster.url),
        greenredis.Redis.from_url(redis_cluster.url),
    ):
        assert isinstance(client, greenredis.Cluster)
        assert len(client.startup_nodes) == 6
        client.cmd(["SET", "url:k", "v"])
        assert client.cmd(["GET", "url:k"]) == b"v"
        client.close()
