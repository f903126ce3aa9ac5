"""Grid against real redis-servers: discovery, meta, leave, crash, isolation,
Redis restarts, garbage, the nodes CLI. No timing assertions: polls with generous deadlines."""

import json
import os
import signal
import socket
import sys
import textwrap
import time

import gevent
import pytest
from gevent import subprocess as gsubprocess
from waiting import wait_for

import greenredis
from greenredis.grid.node import Grid
from greenredis.server import free_port

DEADLINE = 30.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-c", "import sys; from greenredis.cli import main; sys.exit(main())"]


def test_three_grids_see_each_other_update_and_leave(redis_server, grids):
    url = redis_server.url
    seen = {"join": [], "update": [], "leave": []}
    a = grids(url, name="a", meta={"role": "web"}, domain="t", version="1")
    a.on_join = lambda n, m: seen["join"].append(n)
    a.on_update = lambda n, m: seen["update"].append((n, dict(m)))
    a.on_leave = lambda n, m: seen["leave"].append(n)
    events = []
    gevent.spawn(lambda: events.extend(a.events()))
    b = grids(url, name="b", meta={"role": "worker"}, domain="t", version="1")
    c = grids(url, name="c", meta={"role": "worker"}, domain="t", version="1")
    everyone = (a, b, c)
    wait_for(lambda: all(set(g.nodes()) == {"a", "b", "c"} for g in everyone), what="convergence")
    assert b.nodes()["a"] == {"ip": "127.0.0.1", "role": "web"}
    assert a.nodes()["c"] == {"ip": "127.0.0.1", "role": "worker"}
    assert sorted(seen["join"]) == ["b", "c"]

    b.update_meta(weight="0")
    wait_for(lambda: all(g.nodes()["b"].get("weight") == "0" for g in everyone), what="update")
    assert ("b", {"ip": "127.0.0.1", "role": "worker", "weight": "0"}) in seen["update"]
    b.update_meta(role=None)  # removing a field
    wait_for(lambda: all("role" not in g.nodes()["b"] for g in everyone), what="field removal")

    r = greenredis.Redis.from_url(url)
    assert r.cmd(["EXISTS", "redgrid:t:1:c"]) == 1
    c.stop()  # ttl is 30 s: only the leave message can remove it before the deadline
    wait_for(lambda: all("c" not in g.nodes() for g in (a, b)), timeout=15, what="leave")
    assert seen["leave"] == ["c"]
    assert a.health()["c"]["state"] == "gone" and a.health()["c"]["reason"] == "left"
    assert r.cmd(["EXISTS", "redgrid:t:1:c"]) == 0
    assert r.cmd(["ZSCORE", "redgrid-index:t:1", "c"]) is None
    kinds = [(e.kind, e.name) for e in events]
    assert ("join", "b") in kinds and ("update", "b") in kinds and ("leave", "c") in kinds
    r.close()


def test_context_manager_and_itself_in_nodes(redis_server):
    with Grid(redis_server.url, name="solo", meta={"k": "v"}, ttl=3, interval=1) as g:
        assert g.nodes() == {"solo": {"ip": "127.0.0.1", "k": "v"}}  # local, before any I/O
        assert g.wait(DEADLINE)
        r = greenredis.Redis.from_url(redis_server.url)
        assert r.cmd(["HGETALL", "redgrid:::solo"]) == [
            b"ip",
            b"127.0.0.1",
            b"k",
            b"v",
            b"_instance",
            g.instance.encode(),
        ]
        assert 0 < r.cmd(["PTTL", "redgrid:::solo"]) <= 3000
    assert r.cmd(["EXISTS", "redgrid:::solo"]) == 0
    r.close()


CHILD = textwrap.dedent("""
    import json, os, sys, gevent
    sys.path.insert(0, {root!r})
    from greenredis.grid.node import Grid
    url, name, out = sys.argv[1:4]
    g = Grid(url, name=name, meta={{"pid": str(os.getpid())}}, ttl=3, interval=0.5).start()
    while True:
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(g.nodes(), f)
        os.replace(tmp, out)
        gevent.sleep(0.05)
""")


def _child_view(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def test_separate_processes_and_sigkill(redis_server, grids, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=ROOT))
    here = grids(redis_server.url, name="parent", ttl=3, interval=0.5)
    procs, views = {}, {}
    try:
        for name in ("p1", "p2"):
            views[name] = str(tmp_path / f"{name}.json")
            procs[name] = gsubprocess.Popen(
                [sys.executable, str(script), redis_server.url, name, views[name]]
            )
        want = {"parent", "p1", "p2"}
        wait_for(lambda: set(here.nodes()) == want, what="parent sees children")
        wait_for(
            lambda: all(set(_child_view(v)) == want for v in views.values()), what="children see everyone"
        )
        assert here.nodes()["p1"]["pid"] == str(procs["p1"].pid)

        procs["p1"].send_signal(signal.SIGKILL)  # no leave: peers must expire it themselves
        procs["p1"].wait()
        wait_for(lambda: "p1" not in here.nodes(), what="killed node expired")
        assert here.health()["p1"]["reason"] == "expired"
        wait_for(
            lambda: set(_child_view(views["p2"])) == {"parent", "p2"},
            what="other child drops the killed node",
        )
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def test_domain_and_version_isolation(redis_server, grids):
    url = redis_server.url
    a1 = grids(url, name="a1", domain="d1", version="1")
    a2 = grids(url, name="a2", domain="d1", version="1")
    others = [
        grids(url, name="b", domain="d1", version="2"),
        grids(url, name="c", domain="d2", version="1"),
        grids(url, name="d", domain="", version=""),
    ]
    wait_for(lambda: set(a1.nodes()) == set(a2.nodes()) == {"a1", "a2"}, what="convergence")
    for g in others:
        g.wait(DEADLINE)
    # a few more rounds of heartbeats and reconciles, then nobody crossed over
    start = [g.stats["batches"] for g in others]
    wait_for(lambda: all(g.stats["batches"] >= s + 3 for g, s in zip(others, start)))
    for g in others:
        assert list(g.nodes()) == [g.name]
    assert set(a1.nodes()) == {"a1", "a2"}


def test_missed_message_heals_through_the_index(redis_server, grids):
    """A node registered while nobody listened is found by the next reconcile, then expires."""
    g = grids(redis_server.url, name="g", ttl=5, interval=0.5)
    assert g.wait(DEADLINE)
    r = greenredis.Redis.from_url(redis_server.url)
    r.cmd(
        [
            ["HSET", "redgrid:::quiet", "ip", "10.9.9.9", "role", "db"],
            ["PEXPIRE", "redgrid:::quiet", 5000],
            ["ZADD", "redgrid-index::", time.time(), "quiet"],
        ]
    )  # no PUBLISH
    wait_for(lambda: g.nodes().get("quiet") == {"ip": "10.9.9.9", "role": "db"}, what="heal")
    # it never heartbeats again: every peer expires it by itself
    wait_for(lambda: "quiet" not in g.nodes(), what="expiry")
    assert g.health()["quiet"]["reason"] == "expired"
    r.close()


def test_original_redgrid_node_and_ping(redis_server, grids):
    """A node that only speaks the original protocol (hash + PUBLISH key, no index) is seen and
    updated; a ``ping`` makes every node re-register at once."""
    g = grids(redis_server.url, name="g", domain="erl", version="2")
    assert g.wait(DEADLINE)
    r = greenredis.Redis.from_url(redis_server.url)
    key = "redgrid:erl:2:foo@host"
    r.cmd([["HSET", key, "ip", "10.1.1.1"], ["EXPIRE", key, 60], ["PUBLISH", "redgrid:erl:2", key]])
    wait_for(lambda: g.nodes().get("foo@host") == {"ip": "10.1.1.1"}, what="original node seen")
    r.cmd([["HSET", key, "weight", "50"], ["PUBLISH", "redgrid:erl:2", key]])
    wait_for(lambda: g.nodes()["foo@host"].get("weight") == "50", what="original node update")

    sub = r.subscribe("redgrid:erl:2")
    r.cmd(["PUBLISH", "redgrid:erl:2", "ping"])
    got = []
    end = time.monotonic() + DEADLINE
    while b"redgrid:erl:2:g" not in got and time.monotonic() < end:
        m = sub.get(timeout=1)
        if m is not None:
            got.append(m.data)
    assert got[0] == b"ping" and b"redgrid:erl:2:g" in got
    sub.close()
    r.close()


def test_redis_restart_keeps_view_then_recovers(make_server, grids):
    server = make_server()
    a = grids(server.url, name="a", meta={"role": "web"}, ttl=4, interval=0.5)
    b = grids(server.url, name="b", ttl=4, interval=0.5)
    d = grids(server.url, name="d", ttl=4, interval=0.5)
    expired = []
    a.on_leave = lambda name, meta: expired.append(name)
    wait_for(lambda: set(a.nodes()) == set(b.nodes()) == {"a", "b", "d"}, what="convergence")
    server.kill()
    wait_for(lambda: a.stale and b.stale, what="stale")
    assert a.stale_since is not None and a.stale_since <= time.time()
    d.kill()  # dies while Redis is down: must go once the others can tell
    gevent.sleep(4.5)  # longer than ttl: a stale view must not expire anybody
    assert set(a.nodes()) == set(b.nodes()) == {"a", "b", "d"}
    assert a.health()["b"]["state"] == "stale"
    server.start()  # same port, empty data
    wait_for(lambda: not a.stale and not b.stale, what="recovery")
    r = greenredis.Redis.from_url(server.url)
    wait_for(lambda: r.cmd(["EXISTS", "redgrid:::a", "redgrid:::b"]) == 2, what="re-register")
    wait_for(lambda: r.cmd(["ZCARD", "redgrid-index::"]) == 2, what="re-index")
    assert a.stale_since is None
    wait_for(lambda: "d" not in a.nodes() and "d" not in b.nodes(), what="dead node expired")
    assert expired == ["d"]
    c = grids(server.url, name="c", ttl=4, interval=0.5)
    wait_for(lambda: set(c.nodes()) == {"a", "b", "c"}, what="newcomer after restart")
    assert c.nodes()["a"]["role"] == "web"
    wait_for(lambda: set(a.nodes()) == {"a", "b", "c"})
    gevent.sleep(4.5)  # over a ttl after recovery: the live nodes' heartbeats kept them
    assert set(a.nodes()) == {"a", "b", "c"} and expired == ["d"]
    r.close()


def test_paused_redis_marks_stale_then_recovers(make_server, grids):
    server = make_server()
    a = grids(server.url, name="a", ttl=3, interval=0.5)
    b = grids(server.url, name="b", ttl=3, interval=0.5)
    wait_for(lambda: set(a.nodes()) == set(b.nodes()) == {"a", "b"}, what="convergence")
    server.pause()  # sockets stay open, nothing answers: calls time out
    try:
        wait_for(lambda: a.stale, what="stale")
        assert set(a.nodes()) == {"a", "b"}  # nodes() never blocks and keeps the view
    finally:
        server.resume()
    wait_for(lambda: not a.stale and not b.stale, what="recovery")
    a.update_meta(after="pause")
    wait_for(lambda: b.nodes()["a"].get("after") == "pause")


def test_stop_from_a_callback(redis_server, grids):
    a = grids(redis_server.url, name="a")
    b = grids(redis_server.url, name="b")
    b.on_update = lambda name, meta: b.stop()
    wait_for(lambda: set(a.nodes()) == set(b.nodes()) == {"a", "b"})
    a.update_meta(bye="1")
    wait_for(lambda: b.stopped and "b" not in a.nodes(), what="leave from a callback")
    assert a.health()["b"]["reason"] == "left"


def test_own_key_overwritten_with_garbage(redis_server, grids):
    a = grids(redis_server.url, name="a")
    b = grids(redis_server.url, name="b")
    wait_for(lambda: set(a.nodes()) == set(b.nodes()) == {"a", "b"})
    r = greenredis.Redis.from_url(redis_server.url)
    r.cmd(["SET", "redgrid:::a", "junk"])
    a.update_meta(v="2")
    wait_for(lambda: r.cmd(["TYPE", "redgrid:::a"]) == b"hash", what="key restored")
    wait_for(lambda: r.cmd(["HGET", "redgrid:::a", "v"]) == b"2")
    wait_for(lambda: b.nodes()["a"].get("v") == "2")
    r.close()


def test_redis_down_at_start_then_up(grids):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    g = grids(url, name="early", ttl=3, interval=0.5)
    wait_for(lambda: g.stale, what="stale while down")
    assert g.nodes() == {"early": {"ip": "127.0.0.1"}}
    from greenredis.server import RedisServer

    with RedisServer(port=port) as server:
        assert g.wait(DEADLINE)
        r = greenredis.Redis.from_url(server.url)
        wait_for(lambda: r.cmd(["EXISTS", "redgrid:::early"]) == 1)
        assert not g.stale
        r.close()
        g.stop(timeout=1)


def test_garbage_under_grid_keys_is_skipped(redis_server, grids):
    url = redis_server.url
    r = greenredis.Redis.from_url(url)
    now = time.time()
    r.cmd(
        [
            ["SET", "redgrid:x:1:junk1", "not a hash"],
            ["HSET", "redgrid:x:1:junk2", "foo", "bar"],  # no ip
            ["HSET", b"redgrid:x:1:bin\xff", "ip", "1.2.3.4"],
            ["ZADD", "redgrid-index:x:1", now, "junk1", now, "junk2", now, "bad name", now, b"\xff\xfe"],
        ]
    )
    g = grids(url, name="g", domain="x", version="1")
    assert g.wait(DEADLINE)
    for msg in (
        b"hello",
        b"\xff",
        b"redgrid:x:1:junk1",
        b"update redgrid:x:1:junk2",
        b"redgrid:x:1:bin\xff",
        b"leave redgrid:x:1:",
        b"redgrid:x:1:" + b"y" * 400,
        b"update redgrid:x:1:evil " + b"[" * 100000,
    ):  # JSON nested past the recursion limit
        r.cmd(["PUBLISH", "redgrid:x:1", msg])
    grids(url, name="h", domain="x", version="1")
    wait_for(lambda: set(g.nodes()) == {"g", "h"}, what="grid still works")
    wait_for(lambda: g.view.counters["bad_messages"] >= 4 and g.view.counters["bad_data"] >= 4)
    assert set(g.nodes()) == {"g", "h"}
    assert all(not gl.dead for gl in g._greenlets)

    # an index that is not a sorted set is replaced by one (see test_wrong_typed_index_heals)
    r.cmd(["SET", "redgrid-index:y:1", "garbage"])
    y1 = grids(url, name="y1", domain="y", version="1")
    y2 = grids(url, name="y2", domain="y", version="1")
    wait_for(lambda: set(y1.nodes()) == set(y2.nodes()) == {"y1", "y2"})
    wait_for(lambda: r.cmd(["TYPE", "redgrid-index:y:1"]) == b"zset", what="index repaired")
    wait_for(lambda: r.cmd(["ZCARD", "redgrid-index:y:1"]) == 2, what="index re-filled")
    r.close()


def test_commands_per_heartbeat(redis_server, grids):
    g = grids(redis_server.url, name="g", ttl=2, interval=0.2)
    assert g.wait(DEADLINE)
    gevent.sleep(0.5)  # past the start-up rounds
    r = greenredis.Redis.from_url(redis_server.url)

    def calls():
        info = r.cmd(["INFO", "commandstats"]).decode()
        total = 0
        for line in info.splitlines():
            if line.startswith("cmdstat_") and not line.startswith("cmdstat_info"):
                total += int(line.split("calls=")[1].split(",")[0])
        return total

    before, batches = calls(), g.stats["batches"]
    wait_for(lambda: g.stats["batches"] >= batches + 10, what="10 heartbeats")
    spent, beats = calls() - before, g.stats["batches"] - batches
    assert spent <= 3 * beats, (spent, beats)
    r.close()


def test_defaults_from_environment(redis_server, monkeypatch):
    monkeypatch.setenv("DYNO", "web.7")
    monkeypatch.setenv("DOMAIN", "shop")
    monkeypatch.setenv("VERSION", "v9")
    monkeypatch.setenv("LOCAL_IP", "10.2.3.4")
    g = Grid(redis_server.url)
    assert g.name == "web.7" and g.key == "redgrid:shop:v9:web.7"
    assert g.nodes() == {"web.7": {"ip": "10.2.3.4"}}
    assert (g.ttl, g.interval) == (60, 10)
    for var in ("DYNO", "LOCAL_IP"):
        monkeypatch.delenv(var)
    g = Grid(redis_server.url)
    assert g.name == f"{socket.gethostname()}:{os.getpid()}"
    assert g.meta["ip"] == "127.0.0.1"  # the interface that routes to Redis
    with pytest.raises(TypeError):
        Grid(redis_server.url, name="n", meta={"weight": [5]})
    with pytest.raises(ValueError):
        Grid(redis_server.url, name="has space")
    with pytest.raises(ValueError):
        Grid(redis_server.url, name="n", ttl=10, interval=10)
    g = Grid(greenredis.Redis.from_url(redis_server.url), name="n")
    with pytest.raises(TypeError):
        g.update_meta(weight=object())


def test_cli_nodes_table_and_watch(redis_server, grids):
    url = redis_server.url
    a = grids(url, name="web.1", meta={"role": "web"}, domain="s", version="1")
    b = grids(url, name="web.2", meta={"role": "db"}, domain="s", version="1")
    wait_for(lambda: len(a.nodes()) == len(b.nodes()) == 2)
    out = gsubprocess.run(
        CLI + ["nodes", "--url", url, "--domain", "s", "--version", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "grid redgrid:s:1: 2 node(s)"
    assert lines[1].split() == ["NAME", "IP", "STATE", "SEEN", "META"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["web.1"][1:3] == ["127.0.0.1", "up"] and rows["web.1"][-1] == "role=web"
    assert rows["web.2"][-1] == "role=db"

    watch = gsubprocess.Popen(
        CLI
        + [
            "nodes",
            "--url",
            url,
            "--domain",
            "s",
            "--version",
            "1",
            "--watch",
            "--interval",
            "0.5",
            "--ttl",
            "30",
        ],
        stdout=gsubprocess.PIPE,
        text=True,
    )
    try:
        with gevent.Timeout(DEADLINE):
            while "web.2" not in watch.stdout.readline():
                pass  # the table is printed
            a.update_meta(weight="0")
            b.stop()
            got = []
            while not (any(" update web.1 " in x for x in got) and any(" leave " in x for x in got)):
                got.append(watch.stdout.readline())
        assert any("leave  web.2" in x and "(left)" in x for x in got)
        assert any("update web.1" in x and "weight=0" in x for x in got)
    finally:
        watch.terminate()
        watch.wait()


def test_cli_nodes_unreachable():
    url = f"redis://127.0.0.1:{free_port()}/0"
    out = gsubprocess.run(
        CLI + ["nodes", "--url", url, "--timeout", "1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "connection refused" in out.stderr  # nothing listens: refused, not "no answer"


def test_own_meta_changes_are_reported_like_peers(redis_server, grids):
    g = grids(redis_server.url, name="self", meta={"role": "web"})
    assert g.wait(DEADLINE)
    updates = []
    g.on_update = lambda name, meta: updates.append((name, dict(meta)))
    g.update_meta(weight="3")
    assert updates == [("self", {"ip": g.nodes()["self"]["ip"], "role": "web", "weight": "3"})]


def test_nodes_table_escapes_control_characters():
    from greenredis.cli.nodes import format_table

    health = {
        "evil\x1b[2J": {
            "last_seen": 0.0,
            "state": "up",
            "meta": {"ip": "10.0.0.1", "role": "\x1b]0;pwned\x07web"},
        }
    }
    table = format_table(health, 1.0)
    assert "\x1b" not in table and "\x07" not in table
    assert "evil\\x1b[2J" in table and "role=\\x1b]0;pwned\\x07web" in table


@pytest.mark.parametrize(
    "bad, why",
    [(["--domain", "a:b"], "':'"), (["--ttl", "5"], "twice the interval"), (["--interval", "0"], "interval")],
)
def test_cli_nodes_bad_arguments_are_one_line(bad, why):
    """Not a traceback: one line saying what is wrong, exit status 2 (as argparse)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    out = gsubprocess.run(
        CLI + ["nodes", "--url", url, "--timeout", "1", *bad], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and why in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
