"""greenredis.Sentinel against a real master, two replicas and three sentinels.

One group serves the module (``sentinel_healed`` restarts what a test killed). The load
tests run 500 greenlets doing SET/GET/INCR on keys of their own through a failover: no
reply may reach the wrong caller, every failure is a ConnectionError/TimeoutError, and
new calls succeed after the switch. Writes that Redis itself lost (acknowledged by the
old master after the promotion, or not yet replicated when it was killed) are counted
and printed, not failed: ``test_wait_on_dedicated_keeps_writes_through_a_kill`` shows
how to avoid losing them.
"""

import gc
import time

import gevent
import pytest

import greenredis
from greenredis.client.sentinel import SentinelRedis
from greenredis.errors import AuthenticationError, ConnectionError, MasterNotFoundError, TimeoutError
from tests.waiting import wait_for

LOAD = 500


class Load:
    """``n`` greenlets, each on its own keys: SET then GET its value, INCR its counter."""

    def __init__(self, r, n=LOAD, prefix="load"):
        self.r, self.n, self.prefix = r, n, prefix
        self.acked = [0] * n  # the last INCR value acknowledged
        self.uncertain = [0] * n  # INCRs that failed: they may or may not have run
        self.misattributed = []
        self.failures = []
        self.successes = []  # (monotonic time, worker) of each success
        self.stop = False
        self.greenlets = [gevent.spawn(self._run, i) for i in range(n)]

    def _run(self, i):
        key, counter = f"{self.prefix}:{i}:v", f"{self.prefix}:{i}:n"
        step = 0
        while not self.stop:
            step += 1
            value = f"{i}:{step}"
            try:
                if self.r.cmd(["SET", key, value]) != b"OK":
                    self.misattributed.append((i, "SET"))
                got = self.r.cmd(["GET", key])
                if got != value.encode():
                    self.misattributed.append((i, "GET", got))
                try:
                    n = self.r.cmd(["INCR", counter])
                except BaseException:
                    self.uncertain[i] += 1
                    raise
                # the reply is ours if it lies between what we knew and what we may have run
                if not isinstance(n, int) or n > self.acked[i] + self.uncertain[i] + 1:
                    self.misattributed.append((i, "INCR", n, self.acked[i]))
                self.acked[i] = max(self.acked[i], n)
                self.successes.append((time.monotonic(), i))
            except (ConnectionError, TimeoutError) as e:
                self.failures.append(e)
                gevent.sleep(0.01)
            except Exception as e:  # any other error is a defect: record it
                self.failures.append(e)
                gevent.sleep(0.01)

    def finish(self):
        self.stop = True
        gevent.joinall(self.greenlets, timeout=60)
        assert all(g.dead for g in self.greenlets)

    def lost(self, master_cmd):
        """Workers whose counter on ``master_cmd`` is below the last value acknowledged."""
        values = master_cmd(["MGET", *[f"{self.prefix}:{i}:n" for i in range(self.n)]])
        return sum(1 for i, v in enumerate(values) if int(v or 0) < self.acked[i])


class Announcements:
    """When each sentinel first announced +switch-master (our referee's clock)."""

    def __init__(self, group):
        self.first = None
        self.subs = []
        for s in group.sentinels:
            if s.running:
                client = greenredis.Redis(port=s.port, password=s.password)
                self.subs.append((client, client.subscribe("+switch-master")))
        self.greenlets = [gevent.spawn(self._listen, sub) for _, sub in self.subs]

    def _listen(self, sub):
        for message in sub:
            if message.kind == b"message" and self.first is None:
                self.first = time.monotonic()

    def close(self):
        for client, sub in self.subs:
            sub.close()
            client.close()
        gevent.killall(self.greenlets)


@pytest.fixture
def sentinel(sentinel_group):
    s = greenredis.Sentinel(sentinel_group.sentinel_addresses, failover_timeout=20)
    yield s
    s.close()


def _flush(group):
    group.node_command(group.master, "FLUSHALL")


def test_master_for_talks_to_the_master_and_says_so(sentinel_healed, sentinel):
    group = sentinel_healed
    r = sentinel.master_for("mymaster", timeout=5)
    assert isinstance(r, greenredis.Redis)
    assert r.cmd(["SET", "hello", "world"]) == b"OK"
    assert r.cmd(["ROLE"])[0] == b"master"
    assert (r.params.host, r.params.port) == ("127.0.0.1", group.master.port)
    assert "mymaster" in repr(r)
    with greenredis.Redis.from_url(group.url) as u:
        assert isinstance(u, SentinelRedis) and u.cmd(["GET", "hello"]) == b"world"
    r.close()


def test_a_bad_service_name_is_a_clear_error(sentinel):
    r = sentinel.master_for("nosuchservice", timeout=5)
    with pytest.raises(MasterNotFoundError, match="no sentinel knows a master named 'nosuchservice'") as e:
        r.cmd(["PING"])
    assert isinstance(e.value, ConnectionError)
    r.close()


def _follow_under_load(group, sentinel, act):
    """Run ``act()`` (which fails the master over and returns the new master) under load."""
    _flush(group)
    r = sentinel.master_for("mymaster")
    assert r.cmd(["PING"]) == b"PONG"
    heard = Announcements(group)
    load = Load(r)
    wait_for(lambda: len(load.successes) > 2 * LOAD, what="the load to run")
    old = group.master
    new = act()
    assert new is not old
    wait_for(lambda: heard.first is not None, what="a +switch-master")
    after = wait_for(
        lambda: {i for t, i in load.successes if t > heard.first} >= set(range(LOAD)),
        what="every worker to succeed after the switch",
    )
    load.finish()
    heard.close()
    others = [e for e in load.failures if not isinstance(e, (ConnectionError, TimeoutError))]
    assert load.misattributed == []
    assert others == []
    assert after
    times = sorted(t for t, _ in load.successes)
    gap, at = max((b - a, a) for a, b in zip(times, times[1:]))
    lost = load.lost(lambda c: group.node_command(new, *c))
    print(
        f"\n{len(load.failures)} failed calls, {lost} of {LOAD} workers lost acknowledged INCRs "
        f"(Redis lost them); longest gap between successes {gap:.3f}s, ending "
        f"{at + gap - heard.first:+.3f}s from the first +switch-master"
    )
    # in the same run, the new master answers the client: it switched
    assert (r.params.host, r.params.port) == ("127.0.0.1", new.port)
    assert r.cmd(["ROLE"])[0] == b"master"
    r.close()
    return load


def test_forced_failover_under_load(sentinel_healed, sentinel, caplog):
    group = sentinel_healed
    switches = []

    def broken(*switch):
        raise RuntimeError("a broken on_switch callback")

    sentinel.on_switch(broken)  # logged, and the others still run
    sentinel.on_switch(lambda *switch: switches.append(switch))
    old = group.master
    _follow_under_load(group, sentinel, group.failover)
    assert switches[0] == ("mymaster", ("127.0.0.1", old.port), ("127.0.0.1", group.master.port))
    logged = [r for r in caplog.records if r.name == "greenredis.client.sentinel" and r.exc_info]
    assert logged and "on_switch" in logged[0].getMessage()
    assert "a broken on_switch callback" in str(logged[0].exc_info[1])


def test_sigkilled_master_under_load(sentinel_healed, sentinel):
    group = sentinel_healed

    def kill():
        epoch = group.config_epoch()
        group.master.kill()
        return group.wait_failed_over(epoch)

    load = _follow_under_load(group, sentinel, kill)
    assert load.failures  # the calls in flight on the killed master failed, as they must


def test_wait_on_dedicated_keeps_writes_through_a_kill(sentinel_healed, sentinel):
    group = sentinel_healed
    r = sentinel.master_for("mymaster", timeout=10)
    with r.dedicated() as c:
        for i in range(200):
            c.cmd(["SET", f"waited:{i}", i])
        assert c.cmd(["WAIT", 2, 5000]) == 2
    epoch = group.config_epoch()
    group.master.kill()
    new = group.wait_failed_over(epoch)
    values = r.cmd(["MGET", *[f"waited:{i}" for i in range(200)]])
    assert values == [str(i).encode() for i in range(200)]
    assert r.params.port == new.port
    r.close()


def test_a_spurious_second_failover_is_followed(sentinel_healed, sentinel):
    group = sentinel_healed
    r = sentinel.master_for("mymaster", timeout=10)
    r.cmd(["SET", "spurious", "0"])
    first = group.failover()
    second = group.failover()
    assert second is not first
    assert r.cmd(["INCR", "spurious"]) >= 1
    assert r.params.port == second.port and r.cmd(["ROLE"])[0] == b"master"
    r.close()


def test_readonly_from_a_demoted_master_rediscovers(sentinel_healed, sentinel):
    group = sentinel_healed
    deaf = greenredis.Sentinel(group.sentinel_addresses, failover_timeout=20)
    deaf._watch = lambda: None  # hears no announcement: as if every subscription were down
    r = deaf.master_for("mymaster", timeout=10)
    other = deaf.master_for("mymaster", timeout=10)
    r.cmd(["SET", "ro", "1"])
    other.cmd(["SET", "ro", "1"])
    old = group.master
    new = group.failover(demote=True)  # the old master is a replica before r hears of it
    assert new is not old
    with pytest.raises(ConnectionError, match="no longer the master") as e:
        r.cmd(["SET", "ro", "2"])
    assert "READONLY" in str(e.value)
    assert r.cmd(["SET", "ro", "3"]) == b"OK" and r.params.port == new.port
    # the other client of the same Sentinel no longer writes to the demoted node either
    assert other.cmd(["SET", "ro", "4"]) == b"OK" and other.params.port == new.port
    r.close()
    other.close()
    deaf.close()


def test_a_killed_sentinel_the_others_serve(sentinel_healed):
    group = sentinel_healed
    group.sentinels[0].kill()
    s = greenredis.Sentinel(group.sentinel_addresses, failover_timeout=20)
    r = s.master_for("mymaster", timeout=10)
    assert r.cmd(["PING"]) == b"PONG"
    new = group.failover()  # two of three sentinels: still a quorum
    assert wait_for(lambda: r.cmd(["PING"]) == b"PONG" and r.params.port == new.port, what="the switch")
    r.close()
    s.close()


def test_all_sentinels_down_is_an_error_naming_them(sentinel_healed):
    group = sentinel_healed
    s = greenredis.Sentinel(group.sentinel_addresses)
    connected = s.master_for("mymaster", timeout=5)
    assert connected.cmd(["PING"]) == b"PONG"
    for sentinel in group.sentinels:
        sentinel.kill()
    fresh = greenredis.Sentinel(group.sentinel_addresses).master_for("mymaster", timeout=5)
    with pytest.raises(ConnectionError) as e:
        fresh.cmd(["PING"])
    for address in group.sentinel_addresses:
        assert f"127.0.0.1:{address[1]}" in str(e.value)
    assert "no sentinel of 'mymaster' answered" in str(e.value)
    # a client that found its master keeps using it while the sentinels are away
    assert connected.cmd(["PING"]) == b"PONG"
    connected.close()
    fresh.close()
    s.close()


def test_replica_for_reads_while_a_replica_is_killed(sentinel_healed, sentinel):
    group = sentinel_healed
    master = sentinel.master_for("mymaster", timeout=10)
    master.cmd(["SET", "shared", "x"])
    with master.dedicated() as c:
        c.cmd(["WAIT", 2, 5000])
    ro = sentinel.replica_for("mymaster", timeout=5)
    assert ro.cmd(["GET", "shared"]) == b"x"
    assert ro.cmd(["ROLE"])[0] == b"slave"
    first = ro.params.port
    failures, reads = [], []

    def reader():
        while len(reads) < 2000:
            try:
                reads.append(ro.cmd(["GET", "shared"]))
            except (ConnectionError, TimeoutError) as e:
                failures.append(e)
                gevent.sleep(0.01)

    workers = [gevent.spawn(reader) for _ in range(20)]
    wait_for(lambda: len(reads) > 100, what="reads")
    next(s for s in group.replicas if s.port == first).kill()
    gevent.joinall(workers, timeout=60)
    assert set(reads) == {b"x"}
    assert all(isinstance(e, (ConnectionError, TimeoutError)) for e in failures)
    assert ro.params.port != first and ro.cmd(["ROLE"])[0] == b"slave"
    # with no replica left, reads go to the master
    for replica in group.replicas:
        replica.kill()
    assert wait_for(lambda: _read_master(ro) == b"x", what="a read from the master")
    assert ro.params.port == group.master.port
    ro.close()
    master.close()


def _read_master(ro):
    try:
        return ro.cmd(["GET", "shared"])
    except ConnectionError:
        return None


def test_wrong_data_password_is_an_authentication_error(sentinel_group, sentinel):
    # the group's data nodes have no password: a user that does not exist is refused
    r = sentinel.master_for("mymaster", username="nobody", password="wrong", timeout=5)
    with pytest.raises(AuthenticationError):
        r.cmd(["PING"])
    r.close()


def test_a_db_the_master_refuses_is_raised_at_once_and_the_master_still_trusted(sentinel_group, sentinel):
    """SELECT 99 refused by the master is the caller's mistake, not a failover: raised as the
    SELECT's error, not retried until failover_timeout, and the master not marked failed
    (its other clients must not go looking for another one)."""
    good = sentinel.master_for("mymaster", timeout=5)
    assert good.cmd(["PING"]) == b"PONG"
    for role in ("master", "replica"):
        r = getattr(sentinel, f"{role}_for")("mymaster", db=99)
        with pytest.raises(ConnectionError, match="DB index is out of range") as e:
            r.cmd(["PING"])
        assert "failover_timeout" not in str(e.value)
        r.close()
    assert sentinel.view.master("mymaster") == ("127.0.0.1", sentinel_group.master.port)
    good.close()


def test_a_dropped_url_client_ends_the_subscriptions_of_its_sentinel(sentinel_group):
    # Redis.from_url(...) made and dropped without close() (a redis-py habit) must not
    # leave its own Sentinel's subscription greenlets and connections behind for good
    r = greenredis.Redis.from_url(sentinel_group.url)
    assert r.cmd(["PING"]) == b"PONG"
    s = r.sentinel
    wait_for(lambda: len(s._watch_conns) == len(sentinel_group.sentinels), what="the subscriptions")
    del r
    gc.collect()
    assert s.closed
    wait_for(lambda: not s._watch_conns, what="the subscriptions to end")


def test_an_unknown_service_is_master_not_found_for_replicas_too(sentinel):
    # every sentinel answered (ERR No such master with that name): none was unreachable
    with pytest.raises(MasterNotFoundError, match="no sentinel knows a master named 'nosuch'"):
        sentinel.discover_replicas("nosuch")


def test_a_forked_child_ends_the_parents_subscription_greenlets(sentinel_group, sentinel):
    from tests.client.test_fork import _child, _exit_code

    r = sentinel.master_for("mymaster", timeout=5)
    assert r.cmd(["PING"]) == b"PONG"
    wait_for(lambda: len(sentinel._watch_conns) == len(sentinel_group.sentinels), what="the subscriptions")
    inherited = list(sentinel._watchers.values())

    def work():
        assert r.cmd(["PING"]) == b"PONG"  # the child listens on subscriptions of its own
        wait_for(lambda: all(g.dead for g in inherited), what="the parent's greenlets to end", timeout=10)
        assert len(sentinel._watchers) == len(sentinel_group.sentinels)
        assert not set(sentinel._watchers.values()) & set(inherited)
        wait_for(
            lambda: len(sentinel._watch_conns) == len(sentinel_group.sentinels), what="new subscriptions"
        )
        return 0

    assert _exit_code(_child(work)) == 0
    assert all(not g.dead for g in inherited)  # the parent's go on
    assert r.cmd(["PING"]) == b"PONG"
    r.close()


def test_a_closed_sentinel_answers_nothing_from_its_cache(sentinel_group):
    s = greenredis.Sentinel(sentinel_group.sentinel_addresses)
    r = s.master_for("mymaster", timeout=5)
    assert r.cmd(["PING"]) == b"PONG"  # the master is confirmed: in the Sentinel's view now
    assert s.master_address("mymaster") == ("127.0.0.1", sentinel_group.master.port)
    s.close()
    r.close()
    s.close()  # twice: nothing more
    for ask in (s.master_address, s.discover_master, s.discover_replicas):
        with pytest.raises(ConnectionError, match="is closed"):
            ask("mymaster")


def test_a_db_without_the_password_a_master_needs_is_an_authentication_error():
    """No password for a master that needs one, and a db: its SELECT meets NOAUTH first
    (before ROLE does): an AuthenticationError at once, as for the ROLE of db 0."""
    from greenredis.server import SentinelGroup

    with SentinelGroup(service="locked", replicas=0, sentinels=1, password="data-pw-1") as group:
        s = greenredis.Sentinel(group.sentinel_addresses, failover_timeout=20)
        r = s.master_for("locked", db=3)
        try:
            with pytest.raises(AuthenticationError, match="NOAUTH") as e:
                r.cmd(["PING"])
            assert "failover_timeout" not in str(e.value)
        finally:
            r.close()
            s.close()


def _numsub(group, server, channel):
    return group.node_command(server, "PUBSUB", "NUMSUB", channel)[1]


def _fail_over_closing_one(group, client, steady, channel):
    """SIGKILL the master while two subscriptions of ``client`` listen on ``channel``;
    one of them is closed the instant its reconnector has opened the new master's
    connection. The new master."""
    doomed = client.subscribe(channel)
    old = group.master
    wait_for(lambda: _numsub(group, old, channel) == 2, what="both subscribed")
    real_open = client._open

    def open_then_close(*args, **kwargs):
        conn = real_open(*args, **kwargs)
        mine = gevent.getcurrent() is doomed._reconnector
        if mine and conn.params.port != old.port and not doomed.closed:
            doomed.close()  # as the grid's resubscribe does, from another greenlet, just then
        return conn

    client._open = open_then_close
    try:
        epoch = group.config_epoch()
        old.kill()
        new = group.wait_failed_over(epoch, timeout=60)
        wait_for(lambda: doomed.closed, timeout=30, what="the doomed subscription closed")
        wait_for(lambda: doomed._reconnector.dead, what="its reconnector ended")
    finally:
        del client._open
    wait_for(
        lambda: not steady._reconnecting and steady._conn.params.port == new.port,
        timeout=30,
        what="the steady one resubscribed on the new master",
    )
    return new


def test_a_subscription_closed_while_it_reconnects_through_a_failover_leaves_no_subscriber(
    sentinel_healed, sentinel
):
    """A subscription closed (from another greenlet: the grid's resubscribe) while its
    reconnector is opening the new master's connection must not leave that connection
    subscribed there: close() closes the connection it sees, and its kill of the
    reconnector lands later. A subscription left alone ends on exactly one connection.
    Two failovers: each one leaked one more subscriber."""
    group = sentinel_healed
    channel = "leak-check"
    client = sentinel.master_for(group.service, connect_timeout=1)
    steady = client.subscribe(channel)
    try:
        for round_ in range(2):
            new = _fail_over_closing_one(group, client, steady, channel)
            gevent.sleep(0.2)  # a leaked connection's SUBSCRIBE is answered by now
            assert _numsub(group, new, channel) == 1, (
                f"failover {round_}: a closed subscription left a subscriber"
            )
            group.heal()  # the killed master is back, as a replica; the next round kills the new one
    finally:
        steady.close()
        client.close()
