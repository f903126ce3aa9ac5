"""A grid of 20 nodes (and an observer, as the dashboard runs one) on a Sentinel service
through a forced failover and a SIGKILLed master: every node follows the new master by
itself, registers there (even when the failover lost its last writes), the listeners
resubscribe there, the views converge and no view ever drops (emits ``leave`` for) a
node that is alive. One sentinel group per module; counts and orders, no timings."""

import gevent
import pytest
from waiting import wait_for
from watching import Watch

import greenredis
from greenredis.grid.node import Grid

NAMES = [f"n{i:02d}" for i in range(20)]
TTL, INTERVAL = 12, 1.0


SENTINEL_GROUP = {"service": "grid"}  # the shape of this module's sentinel_group


@pytest.fixture
def grid(sentinel_group):
    """20 nodes and an observer, all made from the group's redis+sentinel:// URL."""
    nodes = [Grid(sentinel_group.url, name=n, meta={"v": "1"}, ttl=TTL, interval=INTERVAL) for n in NAMES]
    observer = Grid(sentinel_group.url, observe=True, ttl=TTL, interval=INTERVAL)
    views = nodes + [observer]
    for g in views:
        g.start()
    try:
        wait_for(
            lambda: all(set(g.nodes()) == set(NAMES) for g in views), timeout=60, what="20 nodes in 21 views"
        )
        yield nodes, observer
    finally:
        for g in views:
            g.stop(timeout=1)


def _master_client(sentinel_group):
    return greenredis.Redis(port=sentinel_group.master.port, password=sentinel_group.password, timeout=2)


def _settled_on_the_new_master(sentinel_group, nodes, observer, marker):
    """Every node registered and indexed on the master the sentinels agree on, every
    listener subscribed there, and a meta change published there heard by every view."""
    r = _master_client(sentinel_group)
    try:
        keys = [f"redgrid:::{n}" for n in NAMES]
        wait_for(lambda: r.cmd(["EXISTS", *keys]) == 20, timeout=60, what="registered on the new master")
        wait_for(lambda: r.cmd(["ZCARD", "redgrid-index::"]) == 20, timeout=60, what="indexed there")
        try:
            wait_for(lambda: r.cmd(["PUBSUB", "NUMSUB", "redgrid::"])[1] == 21, timeout=60, what="listeners")
        except AssertionError:
            channels = [g.status["channel"] for g in nodes + [observer]]
            count = r.cmd(["PUBSUB", "NUMSUB", "redgrid::"])[1]
            raise AssertionError(f"{count} listeners on the new master (not 21): {channels}") from None
        nodes[7].update_meta(v=marker)
        views = nodes + [observer]
        wait_for(lambda: all(g.nodes()["n07"]["v"] == marker for g in views), timeout=60, what="update heard")
        wait_for(lambda: not any(g.stale for g in views), timeout=60, what="no view stale")
        assert r.cmd(["HGET", "redgrid:::n07", "v"]) == marker.encode()
        # two more reconciles by everybody on the new master
        start = [g.stats["batches"] for g in views]
        wait_for(lambda: all(g.stats["batches"] >= s + 2 for g, s in zip(views, start)), timeout=60)
    finally:
        r.close()


def test_twenty_nodes_through_a_forced_failover(sentinel_healed, grid):
    sentinel_group = sentinel_healed
    nodes, observer = grid
    watch = Watch(nodes + [observer], NAMES, every=0.05)
    old = sentinel_group.master
    new = sentinel_group.failover()
    assert new.port != old.port
    _settled_on_the_new_master(sentinel_group, nodes, observer, "forced")
    watch.stop()
    assert watch.leaves == [] and watch.short == []
    assert all(set(g.nodes()) == set(NAMES) for g in nodes + [observer])


def test_twenty_nodes_through_a_sigkilled_master_that_lost_their_last_writes(sentinel_healed, grid):
    """The replicas' links are cut just before the last writes (a node's meta change
    and every node's next heartbeat), then the master is SIGKILLed: the promoted replica
    never got them. Each node finds its key lost or its writes refused, registers again on
    the new master with its current meta, and no view drops a live node."""
    sentinel_group = sentinel_healed
    nodes, observer = grid
    watch = Watch(nodes + [observer], NAMES, every=0.05)
    old = sentinel_group.master
    epoch = sentinel_group.config_epoch()
    r = _master_client(sentinel_group)
    try:
        # connections open now stay authenticated; the replicas' new ones are refused
        r.cmd(["CONFIG", "SET", "requirepass", "replicas-cannot-reconnect"])
        r.cmd(["CLIENT", "KILL", "TYPE", "replica"])
        wait_for(lambda: r.cmd(["ROLE"])[2] == [], what="replicas cut off")
        nodes[3].update_meta(v="lost?")
        r.cmd(["SET", "lost-marker", "1"])
        start = [g.stats["batches"] for g in nodes]
        wait_for(lambda: all(g.stats["batches"] > s for g, s in zip(nodes, start)), what="one more beat each")
    finally:
        r.close()
    old.kill()
    new = sentinel_group.wait_failed_over(epoch, timeout=60)
    assert new.port != old.port
    probe = _master_client(sentinel_group)
    assert probe.cmd(["EXISTS", "lost-marker"]) == 0  # the new master never got the last writes
    probe.close()
    _settled_on_the_new_master(sentinel_group, nodes, observer, "killed")
    views = nodes + [observer]
    wait_for(lambda: all(g.nodes()["n03"]["v"] == "lost?" for g in views), timeout=60, what="n03's meta")
    watch.stop()
    assert watch.leaves == [] and watch.short == []


def test_twenty_nodes_through_a_paused_master(sentinel_healed, grid):
    """SIGSTOP the master mid-heartbeat: calls on it time out, the sentinels fail over, every
    node follows and settles there while the old master is still stopped, then again once it
    resumes (a master with the old data until the sentinels demote it); no view drops a live
    node meanwhile."""
    sentinel_group = sentinel_healed
    nodes, observer = grid
    watch = Watch(nodes + [observer], NAMES, every=0.05)
    old = sentinel_group.master
    epoch = sentinel_group.config_epoch()
    old.pause()
    wait_for(
        lambda: (
            sentinel_group.config_epoch() > epoch and sentinel_group._agreed_master() not in (None, old.port)
        ),
        timeout=60,
        what="the sentinels to promote a replica",
    )
    _settled_on_the_new_master_at(sentinel_group, sentinel_group._agreed_master(), nodes, observer, "paused")
    old.resume()
    new = sentinel_group.wait_failed_over(epoch, timeout=60)
    assert new.port != old.port
    _settled_on_the_new_master(sentinel_group, nodes, observer, "resumed")
    watch.stop()
    assert watch.leaves == [] and watch.short == []


def _settled_on_the_new_master_at(sentinel_group, port, nodes, observer, marker):
    r = greenredis.Redis(port=port, password=sentinel_group.password, timeout=2)
    try:
        keys = [f"redgrid:::{n}" for n in NAMES]
        wait_for(lambda: r.cmd(["EXISTS", *keys]) == 20, timeout=60, what="registered on the new master")
        wait_for(lambda: r.cmd(["PUBSUB", "NUMSUB", "redgrid::"])[1] == 21, timeout=60, what="listeners")
        nodes[5].update_meta(v=marker)
        views = nodes + [observer]
        wait_for(lambda: all(g.nodes()["n05"]["v"] == marker for g in views), timeout=60, what="update heard")
    finally:
        r.close()


def test_twenty_nodes_through_two_failovers_in_a_row(sentinel_healed, grid):
    """A second failover right after the first (a spurious one on a loaded machine)."""
    sentinel_group = sentinel_healed
    nodes, observer = grid
    watch = Watch(nodes + [observer], NAMES, every=0.05)
    first = sentinel_group.failover(demote=False)
    second = sentinel_group.failover(demote=False)
    assert second.port != first.port
    _settled_on_the_new_master(sentinel_group, nodes, observer, "twice")
    watch.stop()
    assert watch.leaves == [] and watch.short == []


def test_a_failover_while_the_nodes_register(sentinel_healed):
    """Nodes start and the master fails over before they are all registered."""
    sentinel_group = sentinel_healed
    views = [Grid(sentinel_group.url, name=n, meta={"v": "1"}, ttl=TTL, interval=INTERVAL) for n in NAMES]
    observer = Grid(sentinel_group.url, observe=True, ttl=TTL, interval=INTERVAL)
    leaves = []
    try:
        for g in views + [observer]:
            g.on_leave = lambda name, meta, g=g: leaves.append((g.name, name))
        for g in views[:10] + [observer]:
            g.start()
        epoch = sentinel_group.config_epoch()
        gevent.sleep(0.05)
        sentinel_group._wait(sentinel_group._ask_failover, 30, "failover accepted")
        for g in views[10:]:
            g.start()
        sentinel_group.wait_failed_over(epoch, timeout=60)
        everyone = views + [observer]
        wait_for(lambda: all(set(g.nodes()) == set(NAMES) for g in everyone), timeout=60, what="converged")
        _settled_on_the_new_master(sentinel_group, views, observer, "registering")
        assert leaves == []
    finally:
        for g in views + [observer]:
            g.stop(timeout=1)
