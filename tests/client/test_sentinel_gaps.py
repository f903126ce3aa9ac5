"""Sentinel clients at the edges issue 13 left open: a replica still LOADING, a paused
sentinel's subscription. One group (DEBUG allowed on its data nodes) serves the module."""

import time

import gevent
import hiredis
import pytest
import redis

import greenredis
from greenredis.server import _command, free_port
from tests.waiting import wait_for

SENTINEL_GROUP = {"debug": True}


@pytest.fixture
def sentinel(sentinel_group):
    s = greenredis.Sentinel(sentinel_group.sentinel_addresses, failover_timeout=20)
    yield s
    s.close()


def _loading(server):
    try:
        _command(server.port, "PING", timeout=10)
    except hiredis.ReplyError as e:
        return str(e).startswith("LOADING")
    except TimeoutError:  # a loaded machine: the slowed reload answers between keys, late
        return True
    return False


class Reloading:
    """``DEBUG RELOAD`` on ``server``, slowed so that it answers -LOADING for seconds
    (its master link stays up, so the sentinels still call it a healthy replica)."""

    def __init__(self, group, server, keys=1000, delay_us=20000):
        self.server = server
        master = group.master
        # values of ~1 KB: the loading node answers between any two keys (every 1024 bytes)
        pairs = [part for i in range(keys) for part in (f"bulk:{i}", "x" * 1000)]
        group.node_command(master, "MSET", *pairs)
        group.node_command(master, "WAIT", "2", "5000", timeout=6)
        _command(server.port, "CONFIG", "SET", "key-load-delay", str(delay_us))
        _command(server.port, "CONFIG", "SET", "loading-process-events-interval-bytes", "1024")
        self.greenlet = gevent.spawn(_command, server.port, "DEBUG", "RELOAD", timeout=60)
        try:
            wait_for(lambda: _loading(server), what=f"{server} to be LOADING")
        except BaseException:
            self.finish()  # never leave the next test a replica that loads for minutes
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()

    def finish(self):
        _command(
            self.server.port, "CONFIG", "SET", "key-load-delay", "0", timeout=10
        )  # allowed while loading
        self.greenlet.join(60)


def _reading_a_replica(group, sentinel, value):
    """``shared`` set to ``value`` on every replica; a replica_for client that read it, and its server."""
    group.node_command(group.master, "SET", "shared", value)
    group.node_command(group.master, "WAIT", "2", "5000", timeout=6)
    ro = sentinel.replica_for("mymaster", timeout=10)
    assert ro.cmd(["GET", "shared"]) == value.encode()
    return ro, next(s for s in group.replicas if s.port == ro.params.port)


def test_replica_for_moves_off_a_loading_replica(sentinel_healed, sentinel):
    group = sentinel_healed
    ro, first = _reading_a_replica(group, sentinel, "x")
    with Reloading(group, first):
        # the connected client gets -LOADING from its replica: it moves, the call succeeds
        assert ro.cmd(["GET", "shared"]) == b"x"
        assert ro.params.port != first.port
        # new clients never settle on the loading replica (its sentinel flags are clean)
        for _ in range(8):
            fresh = sentinel.replica_for("mymaster", timeout=10)
            assert fresh.cmd(["GET", "shared"]) == b"x"
            assert fresh.params.port != first.port, (_loading(first), sentinel.stats)
            fresh.close()
        assert _loading(first), "the replica stopped loading before the test was done: slow it more"
        assert sentinel.stats["replicas_loading"] >= 1
    ro.close()


def test_a_batch_on_a_loading_replica_moves_too(sentinel_healed, sentinel):
    group = sentinel_healed
    ro, first = _reading_a_replica(group, sentinel, "y")
    with Reloading(group, first):
        assert ro.cmd([["GET", "shared"], ["EXISTS", "shared"]]) == [b"y", 1]
        assert ro.params.port != first.port
    ro.close()


def test_a_batch_that_moves_off_a_loading_replica_resends_only_what_was_refused(sentinel_healed, sentinel):
    # PUBLISH runs on a loading replica (its LOADING flag); the GET beside it is refused.
    # Only the GET may go to the next replica: the whole batch again published twice.
    group = sentinel_healed
    ro, first = _reading_a_replica(group, sentinel, "z")
    listeners = []
    for server in group.replicas:  # a subscriber on each replica, made before the reload
        listener = redis.Redis(port=server.port, socket_timeout=10).pubsub()
        listener.subscribe("review2")
        assert listener.get_message(timeout=5)["type"] == "subscribe"
        listeners.append(listener)
    try:
        with Reloading(group, first):
            assert ro.cmd([["PUBLISH", "review2", "once"], ["GET", "shared"]]) == [1, b"z"]
            assert ro.params.port != first.port
            gevent.sleep(0.5)  # (a second copy would arrive by now)
            got = []
            for listener in listeners:
                while (message := listener.get_message(timeout=0.5)) is not None:
                    got.append(message["data"])
            assert got == [b"once"]
    finally:
        for listener in listeners:
            listener.close()
    ro.close()


def test_a_transaction_on_a_loading_replica_moves_whole(sentinel_healed, sentinel):
    # its queued commands are refused, so EXEC aborts: nothing ran, all of it goes again
    group = sentinel_healed
    ro, first = _reading_a_replica(group, sentinel, "t")
    with Reloading(group, first):
        assert ro.transaction([["GET", "shared"], ["EXISTS", "shared"]]) == [b"t", 1]
        assert ro.params.port != first.port
    ro.close()


def test_concurrent_calls_on_a_replica_that_begins_loading_all_move(sentinel_healed, sentinel):
    # The first caller to get -LOADING closed the shared connection at once: the other calls in
    # flight on it (refused too, nothing ran) failed with ConnectionError instead of moving.
    group = sentinel_healed
    ro, first = _reading_a_replica(group, sentinel, "p")
    outcomes = []
    stop = []

    def reader():
        while not stop:
            try:
                outcomes.append(ro.cmd(["GET", "shared"]))
            except Exception as e:
                outcomes.append(repr(e))
            gevent.sleep(0)

    readers = [gevent.spawn(reader) for _ in range(30)]
    wait_for(lambda: len(outcomes) > 300, what="the readers to run")
    with Reloading(group, first):
        try:
            wait_for(lambda: ro.params.port != first.port, what="the client to move")
            counted = len(outcomes)
            wait_for(lambda: len(outcomes) > counted + 300, what="the readers to go on elsewhere")
        finally:
            stop.append(True)
            gevent.joinall(readers, timeout=20)
    ro.close()
    assert sentinel.stats["replicas_loading"] >= 1
    assert [o for o in outcomes if o != b"p"] == []


def _subscribers(sentinel_server):
    """Ages (s) of the sentinel's clients subscribed to our three channels."""
    listing = sentinel_server.command("CLIENT", "LIST").decode()
    ages = []
    for line in listing.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("sub") == "3":
            ages.append(int(fields["age"]))
    return ages


def test_a_paused_sentinels_subscription_is_noticed_and_renewed(sentinel_healed, sentinel):
    group = sentinel_healed
    r = sentinel.master_for("mymaster", timeout=10)
    assert r.cmd(["PING"]) == b"PONG"
    wait_for(lambda: len(sentinel._watch_conns) == len(group.sentinels), what="the subscriptions")
    paused = group.sentinels[0]
    before = sentinel._watch_conns[paused.address]
    gevent.sleep(1.1)  # CLIENT LIST ages are whole seconds: the first subscription is >= 1 s old
    paused.pause()
    # the dead subscription is noticed while the sentinel is still stopped
    wait_for(lambda: sentinel.stats["subscriptions_lost"] >= 1, what="the paused sentinel to be noticed")
    assert before.error is not None
    # the other two still fail the master over, and the client follows them
    new = group.failover()
    assert wait_for(lambda: r.cmd(["PING"]) == b"PONG" and r.params.port == new.port, what="the switch")
    resumed_at = time.monotonic()
    paused.resume()
    renewed = wait_for(
        lambda: (
            (c := sentinel._watch_conns.get(paused.address)) is not None
            and c is not before
            and c.error is None
        ),
        what="a new subscription to the resumed sentinel",
    )
    assert renewed
    # the resumed sentinel itself sees a subscriber younger than its pause
    wait_for(
        lambda: any(age <= time.monotonic() - resumed_at + 1 for age in _subscribers(paused)),
        what="the resumed sentinel to hold a new subscription",
    )
    assert sentinel.stats["subscriptions_lost"] >= 1
    r.close()


def test_replica_for_moves_off_a_replica_that_answers_masterdown(sentinel_healed, sentinel):
    # replica-serve-stale-data no and its link down: -MASTERDOWN, which the sentinels take
    # for a healthy answer to their PING (sentinel.c) and which nothing ran behind
    group = sentinel_healed
    ro, first = _reading_a_replica(group, sentinel, "z")
    group.node_command(first, "CONFIG", "SET", "replica-serve-stale-data", "no")
    try:
        group.node_command(first, "REPLICAOF", "127.0.0.1", str(free_port()))  # nothing listens there
        wait_for(lambda: _masterdown(group, first), what="-MASTERDOWN")
        assert ro.cmd(["GET", "shared"]) == b"z"
        assert ro.params.port != first.port
        assert ro.cmd([["GET", "shared"], ["EXISTS", "shared"]]) == [b"z", 1]
        assert sentinel.stats["replicas_unlinked"] >= 1
    finally:
        group.node_command(first, "CONFIG", "SET", "replica-serve-stale-data", "yes")
        group.node_command(first, "REPLICAOF", "127.0.0.1", str(group.master.port))
    ro.close()


def _masterdown(group, server):
    try:
        group.node_command(server, "GET", "shared")
    except hiredis.ReplyError as e:
        return str(e).startswith("MASTERDOWN")
    return False


def test_a_connect_hung_on_a_paused_master_gives_way_to_the_announced_one(sentinel_healed, sentinel):
    # a fresh client connects while the master is SIGSTOPped: the TCP handshake succeeds (the
    # kernel answers it) and ROLE hangs. When the sentinels announce the new master, the
    # connect must go there at once, not wait out connect_timeout on the stopped node.
    group = sentinel_healed
    old = group.master
    r = sentinel.master_for("mymaster", connect_timeout=30, timeout=60)
    switched = []
    sentinel.on_switch(lambda *switch: switched.append(time.monotonic()))
    sentinel.master_address("mymaster")  # the view follows the service: the listeners start
    epoch = group.config_epoch()
    old.pause()
    try:
        assert r.cmd(["SET", "paused", "1"]) == b"OK"
        done = time.monotonic()
        new = group.wait_failed_over(epoch)
        assert r.params.port == new.port != old.port
        assert switched and done - switched[0] < 10  # connect_timeout (30 s) was not waited out
    finally:
        old.resume()
        group.node_command(old, "REPLICAOF", "127.0.0.1", str(group.current_master()[1]))
    r.close()
