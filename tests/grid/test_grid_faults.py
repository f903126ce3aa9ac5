"""Grid against real redis-servers under hostile conditions: skewed clocks, ACLs
without channel rights, a wrong-typed index, twins, odd meta, bogus index entries."""

import json
import logging
import os
import sys
import textwrap

import gevent
import pytest
from gevent import subprocess as gsubprocess
from waiting import wait_for

import greenredis
from greenredis.grid.node import Grid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


GRID_TTL = 3  # the grids fixture's default ttl here: faults heal within a few ttl


SKEWED = textwrap.dedent("""
    import json, os, sys, time
    skew = float(sys.argv[2])
    real = time.time
    time.time = lambda: real() + skew  # this process's wall clock is off by skew seconds
    sys.path.insert(0, {root!r})
    import gevent
    from greenredis.grid.node import Grid
    url, prefix, count, out = sys.argv[1], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    leaves = []
    grids = [Grid(url, name=f"{{prefix}}{{i}}", ttl=5, interval=0.5) for i in range(count)]
    grids.append(Grid(url, observe=True, ttl=5, interval=0.5))  # an observer with the same clock
    for g in grids:
        g.on_leave = lambda name, meta, g=g: leaves.append([g.name, name])
        g.start()
    while True:
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({{"views": [sorted(g.nodes()) for g in grids], "leaves": leaves}}, f)
        os.replace(tmp, out)
        gevent.sleep(0.1)
""")


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def test_clock_skew_does_not_wipe_the_grid(redis_server, grids, tmp_path):
    """Nodes 100 s fast and 100 s slow (and observers beside them) among healthy
    ones: nobody trims or expires a live peer (the old code: hundreds of leaves)."""
    url = redis_server.url
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED.format(root=ROOT))
    leaves = []
    here = [grids(url, name=f"ok{i}", ttl=5) for i in range(8)]  # ttl 5: a loaded machine may stall us
    here.append(grids(url, observe=True, ttl=5))
    for g in here:
        g.on_leave = lambda name, meta, g=g: leaves.append([g.name, name])
    procs, outs = [], []
    try:
        for skew, prefix in (("100", "fast"), ("-100", "slow")):
            out = str(tmp_path / f"{prefix}.json")
            outs.append(out)
            procs.append(gsubprocess.Popen([sys.executable, str(script), url, skew, prefix, "8", out]))
        everyone = sorted(
            [f"ok{i}" for i in range(8)] + [f"{p}{i}" for p in ("fast", "slow") for i in range(8)]
        )

        def converged():
            views = [sorted(g.nodes()) for g in here]
            for out in outs:
                got = _read(out)
                if got is None:
                    return False
                views += got["views"]
            return all(v == everyone for v in views)

        wait_for(converged, timeout=60, what="24 nodes in 26 views")
        # Several ttls of heartbeats, reconciles and trims by everybody.
        r = greenredis.Redis.from_url(url)
        start = [g.stats["batches"] for g in here]
        wait_for(lambda: all(g.stats["batches"] >= s + 24 for g, s in zip(here, start)), timeout=60)
        assert converged()
        child_leaves = [leave for out in outs for leave in _read(out)["leaves"]]
        assert leaves == [] and child_leaves == []
        server_now = float(r.cmd(["TIME"])[0])
        scores = dict(zip(*[iter(r.cmd(["ZRANGE", "redgrid-index::", 0, -1, "WITHSCORES"]))] * 2))
        assert len(scores) == 24
        assert all(abs(float(s) - server_now) < 5 for s in scores.values())  # the server's clock
        assert here[0].status["clock_offset"] == pytest.approx(0, abs=1)
        r.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_refused_channel_is_reported_in_status(make_server, caplog):
    caplog.set_level(logging.WARNING, "greenredis.grid")
    server = make_server(users=["u on >pw ~* resetchannels +@all"])
    url = f"redis://u:pw@127.0.0.1:{server.port}/0"
    a = Grid(url, name="a", ttl=3, interval=0.5).start()
    b = Grid(url, name="b", ttl=3, interval=0.5).start()
    try:
        assert a.wait(30)
        wait_for(lambda: a.status["channel"] == "refused", what="refusal noticed")
        assert a.stats["errors"] >= 1
        assert "NOPERM" in a.status["channel_error"] or "permission" in a.status["channel_error"].lower()
        # still a grid, by the index
        wait_for(lambda: set(a.nodes()) == set(b.nodes()) == {"a", "b"}, what="index discovery")
        gevent.sleep(1.5)  # retries do not warn again
        warnings = [
            r for r in caplog.records if "refused SUBSCRIBE" in r.getMessage() and "a:" in r.getMessage()
        ]
        assert len(warnings) == 1
        assert "&redgrid::" in warnings[0].getMessage() and "allchannels" in warnings[0].getMessage()
        assert "pw" not in warnings[0].getMessage()
        # the ACL is fixed: the grid hears the channel again
        admin = greenredis.Redis.from_url(url)
        admin.cmd(["ACL", "SETUSER", "u", "allchannels"])
        wait_for(lambda: a.status["channel"] == "subscribed", timeout=30, what="subscribed after the fix")
        assert a.status["channel_error"] is None
        admin.close()
    finally:
        a.stop(timeout=1)
        b.stop(timeout=1)


def test_wrong_typed_index_heals(redis_server, grids, caplog):
    caplog.set_level(logging.WARNING, "greenredis.grid")
    url = redis_server.url
    a = grids(url, name="a")
    b = grids(url, name="b")
    obs = grids(url, observe=True)
    left = []
    for g in (a, b, obs):
        g.on_leave = lambda name, meta: left.append(name)
    wait_for(lambda: all(set(g.nodes()) == {"a", "b"} for g in (a, b, obs)))
    r = greenredis.Redis.from_url(url)
    r.cmd([["DEL", "redgrid-index::"], ["SADD", "redgrid-index::", "x"]])  # a stray SET under the name
    wait_for(lambda: r.cmd(["TYPE", "redgrid-index::"]) == b"zset", timeout=9, what="repair within 3 ttl")
    wait_for(lambda: r.cmd(["ZCARD", "redgrid-index::"]) == 2, timeout=9, what="re-filled")
    # two ttls later everybody still sees everybody: heartbeats reach the index again
    start = a.stats["batches"]
    wait_for(lambda: a.stats["batches"] >= start + 12)
    assert all(set(g.nodes()) == {"a", "b"} for g in (a, b, obs)) and left == []
    assert any("WRONGTYPE" in rec.getMessage() for rec in caplog.records)
    r.close()


def test_twins_are_detected_and_a_leave_spares_the_live_one(redis_server, grids, caplog):
    caplog.set_level(logging.WARNING, "greenredis.grid")
    url = redis_server.url
    peer = grids(url, name="peer")
    left = []
    peer.on_leave = lambda name, meta: left.append(name)
    one = grids(url, name="dup", meta={"n": "1"})
    wait_for(lambda: "dup" in peer.nodes())
    two = grids(url, name="dup", meta={"n": "2"})
    assert one.instance != two.instance
    wait_for(lambda: one.status["twins"] == [two.instance] and two.status["twins"] == [one.instance])
    one.stop()
    start = peer.stats["batches"]
    wait_for(lambda: peer.stats["batches"] >= start + 12)  # 2 ttls
    assert "dup" in peer.nodes() and left == []
    r = greenredis.Redis.from_url(url)
    assert r.cmd(["HGET", "redgrid:::dup", "_instance"]) == two.instance.encode()
    warns = [rec for rec in caplog.records if "same name" in rec.getMessage()]
    assert 2 <= len(warns) <= 3  # each twin once (rate-limited), not once per message
    two.stop()
    wait_for(lambda: "dup" not in peer.nodes(), what="the last one's leave")
    assert peer.health()["dup"]["reason"] == "left"
    r.close()


def test_meta_values_of_other_types(redis_server, grids):
    url = redis_server.url
    a = grids(url, name="a", meta={"weight": 5, "up": True, "ratio": 0.5, "raw": "é".encode()})
    b = grids(url, name="b")
    wait_for(lambda: "a" in b.nodes())
    assert b.nodes()["a"] == {"ip": "127.0.0.1", "weight": "5", "up": "true", "ratio": "0.5", "raw": "é"}
    a.update_meta(weight=0, up=False)  # redgrid's own example
    wait_for(lambda: b.nodes()["a"].get("weight") == "0")
    assert b.nodes()["a"]["up"] == "false"
    with pytest.raises(ValueError, match="UTF-8"):
        a.update_meta(raw=b"\xff")
    with pytest.raises(ValueError, match="limit"):
        a.update_meta(big="x" * (64 * 1024))
    with pytest.raises(ValueError, match="Unicode"):
        a.update_meta(bad="\udcff")
    with pytest.raises(ValueError, match="reserved"):
        a.update_meta(_instance="x")
    with pytest.raises(TypeError):
        a.update_meta(nested={"a": 1})
    assert a.meta["weight"] == "0" and "big" not in a.meta  # nothing half-applied
    a.update_meta(big="x" * 60000)  # under the cap
    wait_for(lambda: len(b.nodes()["a"].get("big", "")) == 60000)


def test_domain_or_version_with_a_colon_is_refused(redis_server):
    with pytest.raises(ValueError, match="':'"):
        Grid(redis_server.url, name="n", domain="a:b", version="c")
    with pytest.raises(ValueError, match="':'"):
        Grid(redis_server.url, name="n", domain="a", version="b:c")


def test_future_and_dead_index_entries_are_trimmed_by_the_server_clock(redis_server, grids, caplog):
    caplog.set_level(logging.WARNING, "greenredis.grid")
    url = redis_server.url
    r = greenredis.Redis.from_url(url)
    now = float(r.cmd(["TIME"])[0])
    r.cmd(["ZADD", "redgrid-index::", now + 1000, "ghost", now - 1000, "dead", now, "bad name"])
    a = grids(url, name="a")
    b = grids(url, name="b")
    wait_for(lambda: r.cmd(["ZSCORE", "redgrid-index::", "ghost"]) is None, what="future entry trimmed")
    wait_for(lambda: r.cmd(["ZSCORE", "redgrid-index::", "dead"]) is None, what="dead entry trimmed")
    assert "ghost" not in a.nodes()
    start = a.stats["batches"]
    wait_for(lambda: a.stats["batches"] >= start + 6)
    for g in (a, b):  # the bad entry is reported once per node, not every interval
        said = [
            rec
            for rec in caplog.records
            if "bad name" in rec.getMessage() and f"grid {g.name}:" in rec.getMessage()
        ]
        assert len(said) == 1, said
    r.close()


JUMPING = textwrap.dedent("""
    import json, os, sys, time
    step = [0.0]
    real = time.time
    time.time = lambda: real() + step[0]  # this process's wall clock, stepped below
    sys.path.insert(0, {root!r})
    import gevent
    from greenredis.grid.node import Grid
    url, jump, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    leaves = []
    grids = [Grid(url, name=f"jump{{i}}", ttl=5, interval=0.5) for i in range(4)]
    grids.append(Grid(url, observe=True, ttl=5, interval=0.5))
    for g in grids:
        g.on_leave = lambda name, meta, g=g: leaves.append([g.name, name])
        g.start()
    while True:
        if os.path.exists(out + ".go"):
            step[0] = jump  # NTP steps the clock, mid-run
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({{"views": [sorted(g.nodes()) for g in grids], "leaves": leaves,
                       "stepped": step[0] == jump}}, f)
        os.replace(tmp, out)
        gevent.sleep(0.1)
""")


@pytest.mark.parametrize("jump", ["-100", "100"])
def test_a_clock_stepped_mid_run_keeps_the_grid(redis_server, grids, tmp_path, jump):
    """A process whose wall clock steps ±100 s while running: its nodes keep
    beating (the old code slept 100 s after a step back: it vanished for
    everyone) and nobody, in it or beside it, sees a live node leave."""
    url = redis_server.url
    script = tmp_path / "jumping.py"
    script.write_text(JUMPING.format(root=ROOT))
    out = str(tmp_path / "jump.json")
    leaves = []
    here = [grids(url, name=f"ok{i}", ttl=5) for i in range(3)]
    here.append(grids(url, observe=True, ttl=5))
    for g in here:
        g.on_leave = lambda name, meta, g=g: leaves.append([g.name, name])
    everyone = sorted([f"ok{i}" for i in range(3)] + [f"jump{i}" for i in range(4)])
    proc = gsubprocess.Popen([sys.executable, str(script), url, jump, out])
    try:

        def converged():
            got = _read(out)
            views = [sorted(g.nodes()) for g in here] + (got["views"] if got else [None])
            return all(v == everyone for v in views)

        wait_for(converged, timeout=60, what="7 nodes in 9 views")
        open(out + ".go", "w").close()
        wait_for(lambda: (_read(out) or {}).get("stepped"), timeout=30, what="the step")
        start = [g.stats["batches"] for g in here]  # a few ttls of beats after the step
        wait_for(lambda: all(g.stats["batches"] >= s + 30 for g, s in zip(here, start)), timeout=90)
        got = _read(out)
        assert leaves == [] and got["leaves"] == []
        assert converged()
    finally:
        proc.kill()
        proc.wait()


def test_a_skewed_node_without_time_rights_keeps_the_grid(make_server, grids, tmp_path):
    """A process 100 s fast whose ACL user may not run TIME (``+@read +@write``
    has no TIME): its nodes read the server's clock from their key (PEXPIRETIME),
    its observer from a peer's key; the old code used their own clock: the nodes
    expired every healthy peer and the observer saw nobody."""
    server = make_server(users=["u on >pw ~* &* +@read +@write +@pubsub +@connection -time -eval"])
    ok_url = server.url
    url = f"redis://u:pw@127.0.0.1:{server.port}/0"
    r = greenredis.Redis.from_url(url)
    with pytest.raises(greenredis.ReplyError):
        r.cmd(["TIME"])
    r.close()
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED.format(root=ROOT))
    out = str(tmp_path / "fast.json")
    leaves = []
    here = [grids(ok_url, name=f"ok{i}", ttl=5) for i in range(3)]
    for g in here:
        g.on_leave = lambda name, meta, g=g: leaves.append([g.name, name])
    proc = gsubprocess.Popen([sys.executable, str(script), url, "100", "fast", "3", out])
    try:
        members = sorted([f"ok{i}" for i in range(3)] + [f"fast{i}" for i in range(3)])

        def converged():
            got = _read(out)
            views = [sorted(g.nodes()) for g in here] + (got["views"] if got else [None])
            return all(v == members for v in views)

        wait_for(converged, timeout=60, what="6 nodes in 7 views")
        start = [g.stats["batches"] for g in here]
        wait_for(lambda: all(g.stats["batches"] >= s + 24 for g, s in zip(here, start)), timeout=60)
        assert converged()
        child_leaves = _read(out)["leaves"]
        assert leaves == [] and child_leaves == []
    finally:
        proc.kill()
        proc.wait()


def test_meta_changes_reach_peers_without_channel_rights(make_server):
    """No channel: the update message is lost, so peers must read keys on reconcile
    (the old code fetched only unknown names: a peer's new meta was never seen)."""
    server = make_server(users=["u on >pw ~* resetchannels +@all"])
    url = f"redis://u:pw@127.0.0.1:{server.port}/0"
    a = Grid(url, name="a", ttl=3, interval=0.5).start()
    b = Grid(url, name="b", ttl=3, interval=0.5).start()
    try:
        wait_for(lambda: set(b.nodes()) == {"a", "b"} and b.status["channel"] == "refused", what="grid")
        updates = []
        b.on_update = lambda name, meta: updates.append((name, meta.get("weight")))
        a.update_meta(weight=0)
        wait_for(lambda: b.nodes()["a"].get("weight") == "0", timeout=30, what="the new meta at b")
        assert updates == [("a", "0")]
    finally:
        a.stop(timeout=1)
        b.stop(timeout=1)
