"""greenredis.Cluster against a real 3-primary cluster (one replica each)."""

import gevent
import pytest
from waiting import wait_for

import greenredis
from greenredis.client.slots import key_slot
from greenredis.errors import (
    AuthenticationError,
    ConnectionError,
    NoPermissionError,
    ReplyError,
    TimeoutError,
    WatchError,
)
from greenredis.server import RedisCluster, free_port


@pytest.fixture(scope="module")
def c(redis_cluster):
    client = greenredis.Cluster(redis_cluster.startup_nodes[:1])
    yield client
    client.close()


def _calls(cluster, name):
    """How many times every primary ran ``name`` (INFO commandstats)."""
    return _calls_on(cluster, cluster.primaries, name)


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


def test_dedicated_watch_multi_on_the_keys_node(c):
    key = "{acct}:balance"
    c.cmd(["SET", key, 10])
    with c.dedicated(key) as d:
        d.cmd(["WATCH", key])
        balance = int(d.cmd(["GET", key]))
        assert d.transaction([["SET", key, balance - 3]]) == [b"OK"]
    assert c.cmd(["GET", key]) == b"7"
    with c.dedicated(key) as d:
        d.cmd(["WATCH", key])
        c.cmd(["SET", key, 100])  # someone else writes in between
        with pytest.raises(WatchError):
            d.transaction([["SET", key, 0]])
    assert c.cmd(["GET", key]) == b"100"


def test_blocking_commands_go_to_the_slots_node_on_their_own_connection(c):
    c.cmd(["DEL", "{q}:jobs"])
    waiter = gevent.spawn(c.cmd, ["BLPOP", "{q}:jobs", 5])
    gevent.sleep(0.1)
    assert c.cmd(["GET", "{q}:other"]) is None  # the shared connection is not stuck behind it
    c.cmd(["RPUSH", "{q}:jobs", "job1"])
    assert waiter.get(timeout=5) == [b"{q}:jobs", b"job1"]
    with pytest.raises(ValueError, match="blocks: run it alone"):
        c.cmd([["BLPOP", "{q}:jobs", 1]])


def test_timeouts_per_call_and_for_a_batch(c, redis_cluster):
    key = "slow:1"
    owner = redis_cluster.node_for_slot(key_slot(key))
    c.cmd(["SET", key, "v"])
    owner.pause()
    try:
        with pytest.raises(TimeoutError, match="within 0.2s"):
            c.cmd(["GET", key], timeout=0.2)
        with pytest.raises(TimeoutError):
            c.cmd([["GET", f"slow:{i}"] for i in range(50)], timeout=0.2)  # spans every node
    finally:
        owner.resume()
    assert c.cmd(["GET", key], timeout=2) == b"v"  # the late replies went nowhere
    assert c.cmd([["GET", key], ["PING"]], timeout=2) == [b"v", b"PONG"]


def test_close_fails_callers_in_flight_and_refuses_new_calls(redis_cluster):
    client = greenredis.Cluster(redis_cluster.startup_nodes)
    key = "close:1"
    client.cmd(["SET", key, "v"])
    owner = redis_cluster.node_for_slot(key_slot(key))
    owner.pause()
    try:
        inflight = gevent.spawn(client.cmd, ["GET", key])
        gevent.sleep(0.1)
        client.close()
        with pytest.raises(ConnectionError):
            inflight.get(timeout=5)
    finally:
        owner.resume()
    with pytest.raises(ConnectionError, match="closed"):
        client.cmd(["GET", key])
    with pytest.raises(ConnectionError, match="closed"):
        client.cmd([["GET", key], ["GET", "other"]])


def test_unreachable_and_wrong_nodes_say_what_is_wrong(redis_server):
    port = free_port()
    nowhere = greenredis.Cluster([("127.0.0.1", port)], connect_timeout=1)
    with pytest.raises(ConnectionError, match=rf"no cluster node answered .*127.0.0.1:{port}"):
        nowhere.cmd(["GET", "k"])
    nowhere.close()
    single = greenredis.Cluster([("127.0.0.1", redis_server.port)])
    with pytest.raises(ConnectionError, match="is not a cluster node .*use greenredis.Redis"):
        single.cmd(["GET", "k"])
    single.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis+cluster://", "empty host"),
        ("redis+cluster://127.0.0.1:7000,,127.0.0.1:7001", "empty host"),
        ("redis+cluster://:secret@127.0.0.1:notaport", "bad host:port"),
        ("redis+cluster://127.0.0.1:7000/2", "only db 0"),
        ("redis+cluster://127.0.0.1:7000?nosuch=1", "unknown URL option 'nosuch'"),
        ("redis+clusterx://127.0.0.1:7000", "not a cluster URL"),
    ],
)
def test_bad_cluster_urls(url, message):
    with pytest.raises(ValueError, match=message) as e:
        greenredis.Cluster.from_url(url)
    assert "secret" not in str(e.value)


def test_bad_startup_nodes():
    with pytest.raises(ValueError, match="at least one startup node"):
        greenredis.Cluster([])
    with pytest.raises(ValueError, match="a startup node is"):
        greenredis.Cluster(["localhost"])
    with pytest.raises(ValueError, match="does not take db"):
        greenredis.Cluster([("127.0.0.1", 7000)], db=1)


def test_read_from_replicas(redis_cluster):
    client = greenredis.Cluster(redis_cluster.startup_nodes, read_from_replicas=True)
    try:
        client.cmd(["SET", "r:1", "v"])
        slot = key_slot("r:1")

        def readable():  # a replica still loading when the map was read is not read from
            smap = client.slot_map()
            if smap.reader(slot) != smap.owners[slot]:
                return True
            client._refresh_soon()
            return False

        wait_for(readable, what="a readable replica in the slot map")
        before = _calls_on(redis_cluster, redis_cluster.replicas, "get")
        for _ in range(20):
            got = client.cmd(["GET", "r:1"])
            assert got in (b"v", None)  # a replica may lag a moment behind its primary
        assert _calls_on(redis_cluster, redis_cluster.replicas, "get") > before
        assert client.cmd(["INCR", "r:n"]) >= 1  # writes still go to the primary
        before = _calls_on(redis_cluster, redis_cluster.replicas, "get")
        replies = client.cmd([["GET", "r:1"]] * 20 + [["INCR", "r:n"], ["SET", "r:2", "w"]])
        assert set(replies[:20]) <= {b"v", None} and replies[20] >= 2 and replies[21] == b"OK"
        assert _calls_on(redis_cluster, redis_cluster.replicas, "get") > before  # a batch's reads too
    finally:
        client.close()


def _calls_on(cluster, nodes, name):
    total = 0
    for node in nodes:
        info = cluster.call(node, "INFO", "commandstats").decode()
        for line in info.splitlines():
            if line.startswith(f"cmdstat_{name}:"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def test_password_and_acl_users():
    with RedisCluster(primaries=1, password="s3cret-pw") as rc:
        good = greenredis.Cluster.from_url(rc.url)
        assert good.cmd(["SET", "p:1", "v"]) == b"OK"
        good.close()
        bad = greenredis.Cluster(rc.startup_nodes, password="wrong-pw")
        with pytest.raises(AuthenticationError) as e:
            bad.cmd(["GET", "p:1"])
        assert "wrong-pw" not in str(e.value) and "s3cret" not in str(e.value)
        bad.close()
        node = rc.nodes[0]
        rc.call(node, "ACL", "SETUSER", "app", "on", ">app-pw", "~app:*", "+@all")
        rc.call(node, "ACL", "SETUSER", "nocluster", "on", ">nc-pw", "~*", "+@all", "-cluster")
        app = greenredis.Cluster(rc.startup_nodes, username="app", password="app-pw")
        assert app.cmd(["SET", "app:1", "v"]) == b"OK"
        with pytest.raises(NoPermissionError):
            app.cmd(["SET", "other:1", "v"])  # the server's own refusal, raised as it is
        app.close()
        blind = greenredis.Cluster(rc.startup_nodes, username="nocluster", password="nc-pw")
        with pytest.raises(NoPermissionError, match="needs CLUSTER SHARDS"):
            blind.cmd(["GET", "k"])
        blind.close()


def test_a_slot_nobody_serves_is_waited_for_within_the_timeout(c, redis_cluster):
    rc = redis_cluster
    key = "unserved:1"
    slot = key_slot(key)
    owner = rc.node_for_slot(slot)
    c.cmd(["SET", key, "v"])
    for node in rc.nodes:
        rc.call(node, "CONFIG", "SET", "cluster-require-full-coverage", "no")
    for node in rc.nodes:  # every view: a node keeps another's claim to a slot otherwise
        rc.call(node, "CLUSTER", "DELSLOTS", slot)
    try:
        wait_for(
            lambda: c._refresh_soon().get(timeout=10).owners[slot] is None, what="the map without the slot"
        )
        before = c.stats["clusterdown"]
        call = gevent.spawn(c.cmd, ["GET", key], timeout=20)
        batch = gevent.spawn(c.cmd, [["GET", "served:1"], ["GET", key], ["PING"]], timeout=20)
        wait_for(lambda: c.stats["clusterdown"] > before, what="the caller waiting for the slot")
        assert not call.ready() and not batch.ready()
    finally:
        rc.call(owner, "CLUSTER", "ADDSLOTS", slot)
        for node in rc.nodes:
            rc.call(node, "CONFIG", "SET", "cluster-require-full-coverage", "yes")
    assert call.get(timeout=20) == b"v"
    assert batch.get(timeout=20) == [None, b"v", b"PONG"]
    rc.wait_ok()


def test_parse_url_points_cluster_urls_to_cluster():
    from greenredis.url import parse_url

    with pytest.raises(ValueError, match="names a Redis Cluster: use greenredis.Cluster.from_url"):
        parse_url("redis+cluster://127.0.0.1:7000")
