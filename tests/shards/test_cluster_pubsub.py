"""Pub/sub on a 3-primary Redis Cluster: sharded channels through a slot move and a
primary failover, classic channels across nodes."""

import gevent
import pytest
from shard_helpers import channels_on_every_primary, slot
from waiting import wait_for

import greenredis
from greenredis.client.cluster_pubsub import ClusterSubscription, ShardedSubscription
from greenredis.errors import ConnectionError, NoPermissionError


@pytest.fixture
def c(rc):
    client = greenredis.Cluster(rc.startup_nodes)
    yield client
    client.close()


def drain(sub, timeout=0.5):
    out = []
    while True:
        m = sub.get(timeout=timeout)
        if m is None:
            return out
        out.append(m)


def test_sharded_channels_on_every_primary(rc, c, publisher):
    by_port = channels_on_every_primary(rc, per_node=2, prefix="orders-")
    every = [ch for chans in by_port.values() for ch in chans]
    sub = c.ssubscribe(*every)
    try:
        assert isinstance(sub, ShardedSubscription)
        assert {port for _, port in sub.nodes} == set(by_port)  # one connection per primary
        assert {ch for chans in sub.nodes.values() for ch in chans} == {ch.encode() for ch in every}
        for ch in every:
            assert publisher.spublish(slot(ch), ch, f"to {ch}") == 1  # one subscriber heard it
        got = drain(sub)
        assert sorted(got) == sorted((b"smessage", ch.encode(), f"to {ch}".encode()) for ch in every)
        sub.sunsubscribe(every[0])
        assert publisher.spublish(slot(every[0]), every[0], "late") == 0
        sub.sunsubscribe()
        assert sub.nodes == {} and sub.channels == set()
    finally:
        sub.close()
    assert sub.get(timeout=0.1) is None  # closed: iteration ends


def test_sharded_subscription_follows_a_slot_move(rc, c, publisher):
    """While a publisher keeps sending on "orders", its slot moves to another primary:
    the subscription gets exactly one gap, then every later message in order; the
    channels of other slots lose nothing."""
    s = slot("orders")
    others = {p: chans for p, chans in channels_on_every_primary(rc, 1, "other-").items()}
    other = [ch for chans in others.values() for ch in chans]
    sub = c.ssubscribe("orders", *other)
    source = rc.node_for_slot(s)
    target = next(n for n in rc.primaries if n is not source)
    sent = {"orders": 0, **dict.fromkeys(other, 0)}
    stop = False

    def publish():
        while not stop:
            for ch in sent:
                publisher.spublish(slot(ch), ch, str(sent[ch]))
                sent[ch] += 1
            gevent.sleep(0.005)

    try:
        pub = gevent.spawn(publish)
        wait_for(lambda: sent["orders"] > 20, 10, "messages before the move")
        rc.migrate_slot(s, target)
        n_moved = sent["orders"]
        wait_for(lambda: sent["orders"] > n_moved + 50, 20, "messages after the move")
        stop = True
        pub.get(timeout=10)
        got = drain(sub, 1.0)
    finally:
        sub.close()
        rc.migrate_slot(s, source)  # as it was
    kinds = [m.kind for m in got]
    assert kinds.count(b"gap") == 1
    gap = kinds.index(b"gap")
    orders = [int(m.data) for m in got if m.channel == b"orders"]
    before = [int(m.data) for m in got[:gap] if m.channel == b"orders"]
    after = [int(m.data) for m in got[gap:] if m.channel == b"orders"]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)  # in order, no repeat
    assert before == list(range(len(before))) and len(before) >= 20  # nothing lost before the move
    assert after and after == list(range(after[0], sent["orders"]))  # nothing lost once resubscribed
    assert after[0] <= n_moved + 50
    for ch in other:  # the other slots did not move: every message, in order
        assert [int(m.data) for m in got if m.channel == ch.encode()] == list(range(sent[ch]))


def test_sharded_subscription_survives_a_primary_failover(rc, c, publisher):
    """SIGKILL the primary a channel lives on: its replica takes over, the subscription
    resubscribes there (one gap) and hears what is published after."""
    s = slot("failing")
    primary = rc.node_for_slot(s)
    sub = c.ssubscribe("failing")
    try:
        publisher.spublish(s, "failing", "before")
        assert sub.get(timeout=5) == (b"smessage", b"failing", b"before")
        primary.kill()
        new = wait_for(lambda: _promoted(rc, s, primary), 60, "the replica promoted")
        assert sub.get(timeout=30).kind == b"gap"
        wait_for(lambda: sub.nodes.get(("127.0.0.1", new.port)), 10, "resubscribed on the new primary")
        publisher.owner.pop(s, None)
        publisher.spublish(s, "failing", "after")
        assert sub.get(timeout=5) == (b"smessage", b"failing", b"after")
    finally:
        sub.close()
        primary.start()  # back as a replica of the new primary
        rc.wait_ok(60)


def _promoted(rc, s, old):
    try:
        node = rc.node_for_slot(s)
    except RuntimeError:  # not settled yet
        return None
    return node if node is not old else None


def test_classic_pubsub_across_nodes(rc, c, publisher):
    """A classic subscription hears what is published on every node, and moves to
    another node when its own dies."""
    sub = c.subscribe("news")
    listening = None
    try:
        assert isinstance(sub, ClusterSubscription)
        for node in rc.nodes:  # primaries and replicas alike
            publisher.publish(node.port, "news", f"from {node.port}")
        got = drain(sub)
        assert sorted(got) == sorted((b"message", b"news", f"from {n.port}".encode()) for n in rc.nodes)
        c.cmd(["PUBLISH", "news", "through the client"])  # counts only the node it ran on
        assert sub.get(timeout=5) == (b"message", b"news", b"through the client")
        listening = next(n for n in rc.nodes if n.port == sub.address[1])
        listening.kill()
        assert sub.get(timeout=30).kind == b"gap"
        assert sub.address[1] != listening.port
        alive = next(n for n in rc.nodes if n.running)
        publisher.publish(alive.port, "news", "after")
        assert sub.get(timeout=5) == (b"message", b"news", b"after")
        sub.psubscribe("sport.*")
        publisher.publish(alive.port, "sport.ski", "x")
        m = sub.get(timeout=5)
        assert (m, m.pattern) == ((b"pmessage", b"sport.ski", b"x"), b"sport.*")
    finally:
        sub.close()
        if listening is not None and not listening.running:
            listening.start()
        rc.wait_ok(60)


def test_bad_calls_say_what_is_wrong(c):
    with pytest.raises(ValueError, match="at least one"):
        c.ssubscribe().ssubscribe()
    sub = c.ssubscribe("x")
    sub.close()
    with pytest.raises(ConnectionError, match="closed"):
        sub.ssubscribe("y")


def test_a_killed_shard_connection_resubscribes_with_a_gap(rc, c, publisher):
    by_port = channels_on_every_primary(rc, per_node=1, prefix="kill-")
    every = [ch for chans in by_port.values() for ch in chans]
    sub = c.ssubscribe(*every)
    try:
        victim = every[0]
        port = next(p for p, chans in by_port.items() if victim in chans)
        before = dict(sub.nodes)
        assert rc.call(port, "CLIENT", "KILL", "TYPE", "pubsub") >= 1
        assert sub.get(timeout=10).kind == b"gap"
        assert sub.nodes == before  # the same channels on the same nodes again
        for ch in every:
            publisher.spublish(slot(ch), ch, "after")
        assert sorted(m.channel for m in drain(sub)) == sorted(ch.encode() for ch in every)
    finally:
        sub.close()


def test_a_channel_the_acl_refuses_is_named(rc, publisher):
    rule = ["ACL", "SETUSER", "shardy", "on", ">pw", "~*", "+@all", "resetchannels", "&allowed*"]
    for node in rc.nodes:  # ACLs are per node
        rc.call(node, *rule)
    c = greenredis.Cluster(rc.startup_nodes, username="shardy", password="pw")
    try:
        with pytest.raises(NoPermissionError, match="SSUBSCRIBE forbidden: NOPERM") as info:
            c.ssubscribe("allowed-1", "forbidden")
        assert "forbidden" in str(info.value) and "allowed-1" not in str(info.value)
        sub = c.ssubscribe("allowed-1")
        with pytest.raises(NoPermissionError, match="forbidden"):
            sub.ssubscribe("forbidden")
        assert sub.channels == {b"allowed-1"}
        publisher.spublish(slot("allowed-1"), "allowed-1", "ok")
        assert sub.get(timeout=5) == (b"smessage", b"allowed-1", b"ok")
        sub.close()
    finally:
        c.close()
        for node in rc.nodes:
            rc.call(node, "ACL", "DELUSER", "shardy")


def test_a_paused_primary_is_left_for_its_replica(rc, publisher):
    """SIGSTOP the primary a channel lives on: it answers nothing (and tells nothing)
    while its replica takes over; the subscription's PING check notices, resubscribes
    on the new primary (one gap) and hears what is published there."""
    c = greenredis.Cluster(rc.startup_nodes, connect_timeout=1.0)
    s = slot("sleepy")
    primary = rc.node_for_slot(s)
    sub = c.ssubscribe("sleepy", check_every=0.5)
    other = next(n for n in rc.nodes if n is not primary)
    try:
        publisher.spublish(s, "sleepy", "before")
        assert sub.get(timeout=5) == (b"smessage", b"sleepy", b"before")
        primary.pause()
        new = wait_for(lambda: _owner_port(rc, other, s) != primary.port, 30, "the replica promoted")
        assert sub.get(timeout=30).kind == b"gap"
        new = _owner_port(rc, other, s)
        assert set(sub.nodes) == {("127.0.0.1", new)}
        publisher.owner[s] = new
        publisher.spublish(s, "sleepy", "after")
        assert sub.get(timeout=5) == (b"smessage", b"sleepy", b"after")
    finally:
        sub.close()
        c.close()
        primary.resume()
        rc.wait_ok(60)


def _owner_port(rc, asked, s):
    """The port of the primary owning slot ``s`` as ``asked`` sees it (CLUSTER SLOTS)."""
    for first, last, primary, *_ in rc.call(asked, "CLUSTER", "SLOTS"):
        if first <= s <= last:
            return primary[1]
    return None


def test_a_classic_subscription_leaves_a_paused_node(rc, publisher):
    c = greenredis.Cluster(rc.startup_nodes, connect_timeout=1.0)
    sub = c.subscribe("bulletin", check_every=0.5)
    listening = next(n for n in rc.nodes if n.port == sub.address[1])
    try:
        listening.pause()
        assert sub.get(timeout=30).kind == b"gap"
        assert sub.address[1] != listening.port
        alive = next(n for n in rc.nodes if n is not listening)
        publisher.publish(alive.port, "bulletin", "still here")
        assert sub.get(timeout=5) == (b"message", b"bulletin", b"still here")
    finally:
        sub.close()
        c.close()
        listening.resume()
        rc.wait_ok(60)


def test_unsubscribing_channels_of_several_slots_on_one_node(rc, c, publisher):
    """SUNSUBSCRIBE of channels in different slots would be CROSSSLOT: one per channel,
    and nothing of an unsubscribed channel is delivered."""
    [[a, b, keep]] = [chans for chans in channels_on_every_primary(rc, 3, "unsub-").values()][:1]
    assert len({slot(a), slot(b), slot(keep)}) == 3
    sub = c.ssubscribe(a, b, keep)
    try:
        sub.sunsubscribe(a, b)
        assert publisher.spublish(slot(a), a, "x") == 0 and publisher.spublish(slot(b), b, "x") == 0
        publisher.spublish(slot(keep), keep, "kept")
        assert drain(sub) == [(b"smessage", keep.encode(), b"kept")]
    finally:
        sub.close()


def test_a_slot_moving_to_a_node_whose_acl_refuses_the_channel(rc, publisher):
    """The channel's new owner refuses it (its ACL differs): after the gap the iterator
    raises that NoPermissionError once, drops the channel and goes on with the others."""
    allow = ["ACL", "SETUSER", "mover", "on", ">pw", "~*", "+@all", "resetchannels", "&acl-*"]
    for node in rc.nodes:
        rc.call(node, *allow)
    s = slot("acl-moving")
    source = rc.node_for_slot(s)
    target = next(n for n in rc.primaries if n is not source)
    stay = next(f"acl-stay{i}" for i in range(100) if rc.node_for_slot(slot(f"acl-stay{i}")) is source)
    c = greenredis.Cluster(rc.startup_nodes, username="mover", password="pw")
    sub = c.ssubscribe("acl-moving", stay)
    try:
        rc.call(target, "ACL", "SETUSER", "mover", "resetchannels", "&acl-stay*")
        rc.migrate_slot(s, target)
        assert sub.get(timeout=20).kind == b"gap"
        with pytest.raises(NoPermissionError, match="acl-moving"):
            sub.get(timeout=5)
        assert sub.channels == {stay.encode()}
        publisher.spublish(slot(stay), stay, "on")
        assert sub.get(timeout=5) == (b"smessage", stay.encode(), b"on")
    finally:
        sub.close()
        c.close()
        rc.migrate_slot(s, source)
        for node in rc.nodes:
            rc.call(node, "ACL", "DELUSER", "mover")


def test_channel_names_given_as_int_bytes_or_memoryview_are_their_text(rc, c):
    """A sharded channel given as an int is its decimal text (as PUBLISH/SPUBLISH send
    it), not bytes(12) (twelve NUL bytes); a bytearray/memoryview is its bytes."""
    sub = c.ssubscribe(12, bytearray(b"ba-ch"), memoryview(b"mv-ch"))
    try:
        assert {ch for chans in sub.nodes.values() for ch in chans} == {b"12", b"ba-ch", b"mv-ch"}
        assert c.cmd(["SPUBLISH", 12, "twelve"]) == 1
        assert sub.get(timeout=5) == (b"smessage", b"12", b"twelve")
        with pytest.raises(TypeError, match="NoneType"):
            sub.ssubscribe(None)
    finally:
        sub.close()


def test_closed_while_it_resubscribes_leaves_no_shard_connection(rc, c):
    """close() from another greenlet just as the resync has opened a node's new
    connection: that shard was not there for close() to close, so the resync must."""
    by_port = channels_on_every_primary(rc, per_node=1, prefix="leak-")
    victim, port = next((chans[0], p) for p, chans in by_port.items())
    sub = c.ssubscribe(victim)
    redis = next(r for r in c._clients.values() if r.params.port == port)
    real_open = redis._open

    def open_then_close(*args, **kwargs):
        conn = real_open(*args, **kwargs)
        if gevent.getcurrent() is sub._resyncer:
            sub.close()
        return conn

    redis._open = open_then_close
    try:
        assert rc.call(port, "CLIENT", "KILL", "TYPE", "pubsub") >= 1
        wait_for(lambda: sub.closed, what="closed as it resubscribed")
        wait_for(lambda: sub._resyncer is None, what="its resync ended")
        gevent.sleep(0.3)  # a leftover shard's SSUBSCRIBE is handled by now
        assert rc.call(port, "PUBSUB", "SHARDNUMSUB", victim)[1] == 0
    finally:
        del redis._open
        sub.close()
