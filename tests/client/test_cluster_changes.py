"""greenredis.Cluster while the cluster changes under load: slots move (MOVED and ASK),
a primary fails over (gracefully, and by SIGKILL), a node joins."""

import itertools

import gevent
import pytest
from waiting import wait_for

import greenredis
from greenredis.client.slots import key_slot
from greenredis.errors import ConnectionError, TimeoutError


def _tag_for(slot):
    """A hash tag whose keys all live in ``slot``."""
    for i in itertools.count():
        if key_slot(f"t{i}") == slot:
            return f"t{i}"


class Load:
    """Greenlets writing and reading their own keys through ``client``: every reply is
    checked against what that greenlet wrote; acknowledged writes are remembered."""

    def __init__(self, client, tags, per_tag=4, strict=True):
        self.client = client
        # not strict (a primary SIGKILLed): writes it had not replicated may be gone, and a
        # command that failed in flight may or may not have run; a reply must still be one
        # of this greenlet's own values
        self.strict = strict
        self.keys = [f"{{{tag}}}:w{j}" for tag in tags for j in range(per_tag)]
        self.acked = {}  # key -> the last value SET and acknowledged
        self.incrs = {}  # counter key -> acknowledged INCRs
        self.wrong = []  # replies that were not the caller's
        self.errors = []
        self.done = 0
        self.running = True
        self.greenlets = [gevent.spawn(self._work, key) for key in self.keys]

    def _work(self, key):
        counter = key + ":n"
        for seq in itertools.count():
            if not self.running:
                return
            value = f"{key}#{seq}".encode()
            try:
                if self.client.cmd(["SET", key, value]) != b"OK":
                    self.wrong.append(("SET", key))
                self.acked[key] = value
                got = self.client.cmd(["GET", key])
                if got != value and (self.strict or not self._own(key, got)):
                    self.wrong.append((key, value, got))
                n = self.client.cmd(["INCR", counter])
                self.incrs[counter] = self.incrs.get(counter, 0) + 1
                if n != self.incrs[counter]:
                    if self.strict or not isinstance(n, int):
                        self.wrong.append((counter, self.incrs[counter], n))
                    self.incrs[counter] = n
                batch = self.client.cmd([["GET", key], ["GET", counter], ["PING"]])
                failed = [r for r in batch if isinstance(r, (ConnectionError, TimeoutError))]
                if failed:  # a node's part failed in flight: its errors are in place
                    raise failed[0]
                if batch[2] != b"PONG" or (
                    batch[:2] != [value, str(self.incrs[counter]).encode()]
                    and (self.strict or not self._own(key, batch[0]) or not (batch[1] or b"0").isdigit())
                ):
                    self.wrong.append((key, "batch", batch))
                self.done += 1
            except (ConnectionError, TimeoutError) as e:
                self.errors.append(e)
                gevent.sleep(0.05)
                if not self.strict:
                    self._resync(key, counter)

    @staticmethod
    def _own(key, value):
        return value is None or value.startswith(f"{key}#".encode())

    def _resync(self, key, counter):
        try:
            self.acked.pop(key, None)
            self.incrs[counter] = int(self.client.cmd(["GET", counter]) or 0)
        except (ConnectionError, TimeoutError):
            self.incrs.pop(counter, None)

    def stop(self):
        self.running = False
        gevent.joinall(self.greenlets, raise_error=True)

    def lost(self, client):
        """Acknowledged writes that are not there now."""
        lost = [k for k, v in self.acked.items() if client.cmd(["GET", k]) != v]
        lost += [k for k, n in self.incrs.items() if int(client.cmd(["GET", k]) or 0) != n]
        return lost


@pytest.fixture(scope="module")
def c(redis_cluster):
    client = greenredis.Cluster(redis_cluster.startup_nodes[:1])
    yield client
    client.close()


def test_live_resharding_under_load(c, redis_cluster):
    rc = redis_cluster
    slots = [101, 5555, 12000]  # one on each primary
    owners = {s: rc.node_for_slot(s) for s in slots}
    assert len(set(owners.values())) == 3
    load = Load(c, [_tag_for(s) for s in slots])
    gevent.sleep(0.3)
    before = dict(c.stats)
    for slot in slots:
        source = owners[slot]
        target = next(n for n in rc.primaries if n is not source)
        rc.begin_migration(slot, target)
        while rc.move_keys(slot, source, target, count=2):
            gevent.sleep(0.05)  # callers meet half-moved slots: ASK
        gevent.sleep(0.1)
        rc.finish_migration(slot, target)
        gevent.sleep(0.2)  # callers meet the new owner: MOVED
        assert rc.node_for_slot(slot) is target
    done = load.done
    gevent.sleep(0.3)
    load.stop()
    assert load.done > done  # still working after the last move
    assert load.wrong == [] and load.errors == []
    assert load.lost(c) == []
    assert c.stats["moved"] > before["moved"] and c.stats["ask"] > before["ask"]
    assert [c.slot_map().owners[s][1] for s in slots] == [rc.node_for_slot(s).port for s in slots]
    for slot, source in owners.items():  # put the slots back for the other tests
        rc.migrate_slot(slot, source)


def test_graceful_failover_under_load(c, redis_cluster):
    rc = redis_cluster
    primary = rc.node_for_slot(2000)
    load = Load(c, [_tag_for(2000), _tag_for(9000)])
    gevent.sleep(0.3)
    new_primary = rc.failover(primary)
    assert rc.node_for_slot(2000) is new_primary
    done = load.done
    gevent.sleep(0.5)
    load.stop()
    assert load.done > done
    assert load.wrong == []
    assert load.lost(c) == []  # a coordinated failover waits for the replica: nothing lost
    assert c.slot_map().owners[2000] == ("127.0.0.1", new_primary.port)
    rc.failover(new_primary)  # and back


def test_primary_killed_under_load(c, redis_cluster):
    rc = redis_cluster
    primary = rc.node_for_slot(7000)
    (replica,) = rc.replicas_of(primary)
    load = Load(c, [_tag_for(7000), _tag_for(100)], strict=False)
    gevent.sleep(0.3)
    primary.kill()
    promoted = rc.wait_ok(timeout=60)
    try:
        assert rc.node_id(replica) in promoted[0]
        gevent.sleep(0.3)
        done, errors = load.done, len(load.errors)
        gevent.sleep(1.0)
        assert load.done > done
        load.stop()
        # calls in flight on the dead primary's connection failed; later ones found the new one
        assert load.wrong == []
        assert all(isinstance(e, (ConnectionError, TimeoutError)) for e in load.errors)
        assert len(load.errors) == errors
        assert c.slot_map().owners[7000] == ("127.0.0.1", replica.port)
    finally:
        primary.start()  # rejoins as the replica of the promoted one
        rc.wait_ok(timeout=60)
    assert rc.replicas_of(replica) == [primary]


def test_node_added_and_map_refreshed(c, redis_cluster):
    rc = redis_cluster
    node = rc.add_node()
    slot = 4242
    source = rc.node_for_slot(slot)
    key = f"{{{_tag_for(slot)}}}:added"
    c.cmd(["SET", key, "v"])
    rc.migrate_slot(slot, node)
    moved = c.stats["moved"]
    assert c.cmd(["GET", key]) == b"v"  # MOVED to the new node, then served there
    assert c.stats["moved"] == moved + 1
    assert c.slot_map().owners[slot] == ("127.0.0.1", node.port)
    gevent.sleep(0.2)  # the background refresh names the new node as a primary
    assert ("127.0.0.1", node.port) in c.slot_map().primaries()
    rc.migrate_slot(slot, source)


def test_reads_from_an_unreachable_replica_go_to_its_primary(redis_cluster):
    rc = redis_cluster
    key = f"{{{_tag_for(300)}}}:r"
    primary = rc.node_for_slot(300)
    (replica,) = rc.replicas_of(primary)
    client = greenredis.Cluster(rc.startup_nodes, read_from_replicas=True)
    try:
        client.cmd(["SET", key, "v"])
        wait_for(  # a replica that was still loading when the map was read is not read from
            lambda: client._refresh_soon().get(timeout=10).reader(300) == ("127.0.0.1", replica.port),
            what="the replica readable in the slot map",
        )
        replica.kill()
        # well before the cluster marks it failed (node timeout 2 s), and without a new map
        assert client.cmd(["GET", key], timeout=1.0) == b"v"
        assert client.cmd([["GET", key], ["GET", key]], timeout=1.0) == [b"v", b"v"]
        assert client.stats["unsent_retries"] >= 1
    finally:
        client.close()
        replica.start()
        rc.wait_ok(timeout=60)


def test_many_callers_meeting_moved_refresh_the_map_once(c, redis_cluster):
    rc = redis_cluster
    slot = 8888
    tag = _tag_for(slot)
    source = rc.node_for_slot(slot)
    target = next(n for n in rc.primaries if n is not source)
    c.cmd([["SET", f"{{{tag}}}:{i}", i] for i in range(200)])
    c.slot_map()  # loaded, and it says: source
    rc.migrate_slot(slot, target)
    try:
        moved, refreshes = c.stats["moved"], c.stats["refreshes"]
        calls = [gevent.spawn(c.cmd, ["GET", f"{{{tag}}}:{i}"]) for i in range(200)]
        gevent.joinall(calls, raise_error=True)
        assert [g.value for g in calls] == [str(i).encode() for i in range(200)]
        # those sent before the first MOVED came back all met it (gevent starts ~50 per loop turn)
        assert c.stats["moved"] - moved >= 20
        wait_for(lambda: c._refreshing is None, what="the refresh to end")
        assert c.stats["refreshes"] - refreshes == 1
        assert c.slot_map().owners[slot] == ("127.0.0.1", target.port)
    finally:
        rc.migrate_slot(slot, source)
