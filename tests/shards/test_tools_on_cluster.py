"""Grid, Stats, CappedLog and the Tempo dashboard on a 3-primary Redis Cluster: each
grid's and each instance's keys in one slot, their channels sharded."""

import gevent
import pytest
from shard_helpers import slot
from tempo.tempo_helpers import Client, WebProcess
from waiting import wait_for

import greenredis
from greenredis.grid.node import Grid
from greenredis.grid.view import Layout
from greenredis.telemetry import CappedLog, Stats, names
from greenredis.telemetry.stats import instance_metrics


@pytest.fixture(scope="module")
def c(rc):
    client = greenredis.Cluster(rc.startup_nodes)
    yield client
    client.close()


def keys_by_port(rc, pattern):
    return {n.port: sorted(rc.call(n, "KEYS", pattern)) for n in rc.primaries}


def test_a_grid_of_20_nodes(rc, c):
    lay = Layout("shop", "v1", cluster=True)
    home = rc.node_for_slot(slot(lay.index))
    grids = [
        Grid(c, name=f"n{i:02}", domain="shop", version="v1", ttl=3, interval=0.5, ip="127.0.0.1").start()
        for i in range(20)
    ]
    everyone = {f"n{i:02}" for i in range(20)}
    try:
        for g in grids:
            assert g.wait(20)
        wait_for(lambda: all(set(g.nodes()) == everyone for g in grids), 20, "every node sees all 20")
        # one slot holds the grid: the 20 keys and the index, on one primary, nothing elsewhere
        where = keys_by_port(rc, "redgrid*")  # (other tests' grids have other domains)
        where = {p: [k for k in v if b"{shop:v1}" in k] for p, v in where.items()}
        assert len(where[home.port]) == 21 and not any(v for p, v in where.items() if p != home.port)
        assert rc.call(home, "CLUSTER", "COUNTKEYSINSLOT", slot(lay.index)) == 21
        assert rc.call(home, "PUBSUB", "SHARDNUMSUB", lay.channel) == [lay.channel.encode(), 20]
        assert rc.call(home, "PUBSUB", "NUMSUB", lay.channel) == [lay.channel.encode(), 0]
        assert all(g.status["channel"] == "subscribed" for g in grids)
        grids[0].stop()  # a leave is heard at once
        wait_for(lambda: all("n00" not in g.nodes() for g in grids[1:]), 10, "n00's leave")
        assert grids[5].health()["n00"]["reason"] == "left"
        grids[1].kill()  # a crash expires after ttl
        wait_for(lambda: all("n01" not in g.nodes() for g in grids[2:]), 20, "n01 expired")
        assert grids[5].health()["n01"]["reason"] == "expired"
        grids[2].update_meta(role="db")
        wait_for(lambda: all(g.nodes()["n02"].get("role") == "db" for g in grids[3:]), 10, "meta update")
    finally:
        for g in grids:
            g.stop(timeout=2)
    assert rc.call(home, "KEYS", "redgrid:{shop:v1}:*") == []  # every node that left deleted its key


def test_stats_on_a_cluster(rc, c):
    instances = ["web.1", "web.2", "worker.1", "worker.2", "cron.1"]
    assert len({rc.node_for_slot(slot(names.stats_channel(i))).port for i in instances}) > 1
    sub = c.ssubscribe(*(names.stats_channel(i) for i in instances))
    try:
        for n, inst in enumerate(instances):
            stats = Stats(c, inst, history=3)
            for k in range(5):
                assert stats.publish("rps", n * 10 + k, ts=1000.0 + k, unit="req/s") == 1  # heard once
            stats.publish("mem", n, ts=1000.0)
        for n, inst in enumerate(instances):
            stats = Stats(c, inst)
            assert stats.metrics() == ["mem", "rps"]
            assert [p["value"] for p in stats.history("rps")] == [n * 10 + 2, n * 10 + 3, n * 10 + 4]
            assert stats.snapshot()["mem"][0]["value"] == n
            home = rc.node_for_slot(slot(names.metrics_key(inst)))
            assert len(rc.call(home, "KEYS", f"stats:{{{inst}}}*")) == 3  # all in the instance's slot
        assert instance_metrics(c, instances) == {i: ["mem", "rps"] for i in instances}
        got = [sub.get(timeout=5) for _ in range(len(instances) * 6)]
        assert {m.kind for m in got} == {b"smessage"}
        assert sorted(names.decode_point(m.data)["value"] for m in got if m.channel == b"stats:{web.2}") == [
            1,
            10,
            11,
            12,
            13,
            14,
        ]
        assert c.cmd(["ZCARD", names.INSTANCES]) >= len(instances)
    finally:
        sub.close()


def test_capped_log_on_a_cluster_follows_a_slot_move(rc, c):
    """Append (one MULTI: LPUSH, LTRIM, SPUBLISH in the key's slot) while a reader
    follows; the log's slot moves to another primary meanwhile. The reader sees every
    acknowledged line once, in order."""
    log = CappedLog.for_instance(c, "mover.1", cap=10000)
    log.clear()
    log.append("zero")
    assert log.tail() == ["zero"] and len(log) == 1
    s = slot(log.key)
    seen = []

    def follow():
        for line in log.follow(timeout=10):
            seen.append(line)

    follower = gevent.spawn(follow)
    wait_for(lambda: seen == ["zero"], 10, "the backlog")
    acked, uncertain = ["zero"], []
    stop = False

    def append():
        i = 0
        while not stop:
            line = f"line {i}"
            i += 1
            try:
                log.append(line, timeout=5)
                acked.append(line)
            except greenredis.RedisError:
                uncertain.append(line)  # may or may not have landed
            gevent.sleep(0.005)

    source = rc.node_for_slot(s)
    target = next(n for n in rc.primaries if n is not source)
    writer = gevent.spawn(append)
    try:
        wait_for(lambda: len(acked) > 20, 10, "appends before the move")
        rc.migrate_slot(s, target)
        n = len(acked)
        wait_for(lambda: len(acked) > n + 50, 20, "appends after the move")
        stop = True
        writer.get(timeout=10)
        wait_for(lambda: acked[-1] in seen, 15, "the last line followed")
    finally:
        stop = True
        follower.kill()
        rc.migrate_slot(s, source)
    assert [x for x in seen if x not in uncertain] == acked  # each acknowledged line once, in order
    assert len(seen) == len(set(seen))
    assert log.tail()[-1] == acked[-1]


def test_dashboard_end_to_end(rc, c):
    """``greenredis web`` on a cluster URL: the grid, a history and live points, a log
    backlog and live lines reach a websocket."""
    node = Grid(c, name="dash.1", domain="", version="", ttl=6, interval=1, ip="127.0.0.1").start()
    stats = Stats(c, "dash.1")
    log = CappedLog.for_instance(c, "dash.1", cap=100)
    log.clear()
    try:
        assert node.wait(10)
        stats.publish("rps", 5, ts=1000.0)
        log.append("one", "two")
        with WebProcess(rc.url, TEMPO_GRID="1", GRID_TTL="6", GRID_INTERVAL="1") as web:
            v = Client(web.ws_url)
            v.send({"op": "watch", "kind": "grid"})
            grid = v.until(lambda m: m["type"] == "grid" and any(n["name"] == "dash.1" for n in m["nodes"]))[
                -1
            ]
            assert grid["feed_error"] is None
            v.send({"op": "watch", "kind": "stats", "instance": "dash.1"})
            hist = v.until(lambda m: m["type"] == "history")[-1]
            assert hist["metrics"]["rps"] == [[1000.0, 5]]
            wait_for(lambda: "stats:{dash.1}" in web.get_json("/healthz")["channels"], 10, "subscribed")
            home = rc.node_for_slot(slot("stats:{dash.1}"))
            assert rc.call(home, "PUBSUB", "SHARDNUMSUB", "stats:{dash.1}")[1] == 1
            stats.publish("rps", 6, ts=1001.0)
            point = v.until(lambda m: m["type"] == "point")[-1]
            assert (point["instance"], point["value"]) == ("dash.1", 6)
            v.send({"op": "watch", "kind": "logs", "instance": "dash.1"})
            assert v.until(lambda m: m["type"] == "backlog")[-1]["lines"] == ["one", "two"]
            log.append("three")
            assert v.until(lambda m: m["type"] == "log")[-1]["line"] == "three"
            v.close()
    finally:
        node.stop()


def test_a_grid_through_a_slot_move(rc, c):
    """The grid's slot moves to another primary: the nodes hear the gap, re-register
    on the new owner and keep seeing each other; one that leaves afterwards is seen to."""
    lay = Layout("moving", "", cluster=True)
    s = slot(lay.index)
    kw = dict(domain="moving", version="", ttl=6, interval=0.5, ip="127.0.0.1")
    grids = [Grid(c, name=f"m{i}", **kw).start() for i in range(3)]
    source = rc.node_for_slot(s)
    target = next(n for n in rc.primaries if n is not source)
    try:
        wait_for(lambda: all(len(g.nodes()) == 3 for g in grids), 20, "3 nodes")
        rc.migrate_slot(s, target)
        wait_for(lambda: rc.call(target, "PUBSUB", "SHARDNUMSUB", lay.channel)[1] == 3, 20, "resubscribed")
        late = Grid(c, name="late", **kw).start()  # joins on the new owner
        grids.append(late)
        wait_for(lambda: all(len(g.nodes()) == 4 for g in grids), 20, "the late node seen by all")
        grids[0].stop()
        wait_for(lambda: all("m0" not in g.nodes() for g in grids[1:]), 10, "m0's leave")
        assert len(rc.call(target, "KEYS", "redgrid:{moving:}:*")) == 3
    finally:
        for g in grids:
            g.stop(timeout=2)
        rc.migrate_slot(s, source)


def test_the_demo_runs_on_a_cluster(rc, c):
    """``greenredis demo --url redis+cluster://...``: its instances join the grid and
    publish stats; Ctrl-C makes them leave."""
    import signal
    import subprocess
    import sys

    from tempo.tempo_helpers import ROOT

    demo = subprocess.Popen(
        [sys.executable, "-m", "greenredis", "demo", "--url", rc.url, "--prefix", "cl-"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    observer = Grid(c, observe=True, ttl=30, interval=0.5).start()
    try:
        wait_for(lambda: sum(n.startswith("cl-") for n in observer.nodes()) == 5, 30, "the demo's 5 nodes")
        wait_for(lambda: Stats(c, "cl-web.1").metrics(), 10, "the demo's stats")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 130
        wait_for(lambda: not any(n.startswith("cl-") for n in observer.nodes()), 10, "the demo's nodes left")
    finally:
        observer.stop()
        if demo.poll() is None:
            demo.kill()
        demo.communicate()


def test_stats_and_capped_log_made_from_a_cluster_url_publish_sharded(rc, c):
    """Given a redis+cluster:// URL (not a Cluster), Stats and CappedLog still publish
    with SPUBLISH, so sharded subscribers (Tempo, follow()) hear them."""
    inst = "url.1"
    sub = c.ssubscribe(names.stats_channel(inst), names.log_channel(names.log_key(inst)))
    stats = Stats(rc.url, inst)
    log = CappedLog(rc.url, names.log_key(inst))
    try:
        assert stats.publish("rps", 1.0, ts=1000.0) == 1  # heard by the sharded subscriber
        log.append("hello")
        got = [sub.get(timeout=5) for _ in range(2)]
        assert [m.kind for m in got] == [b"smessage", b"smessage"]
        assert got[1].data == b"hello"
    finally:
        sub.close()
        stats.redis.close()
        log.redis.close()
