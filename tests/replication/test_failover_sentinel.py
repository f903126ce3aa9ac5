"""Replica("redis+sentinel://...") through real Sentinel failovers: a master, two replicas and
three sentinels (one group shared by the module), writers and readers running throughout.

The writers hold off while the old master could still take writes the new one never gets
(Redis loses those: a forced failover keeps the old master writable until the sentinels
demote it; a killed master loses what it had not sent). Then a partial resync is the only
right outcome; with such writes, the full resync in test_failover.py is.
"""

import gevent
import gevent.event
import pytest
from test_failover import info
from test_replica import assert_same, master_offset
from waiting import wait_for

from greenredis.client.redis import Redis
from greenredis.errors import ConnectionError as GreenConnectionError
from greenredis.errors import ReadOnlyError
from greenredis.errors import TimeoutError as GreenTimeoutError
from greenredis.replication.replica import Replica

WRITERS = 50


def node_client(server, db=0):
    return Redis.from_url(f"redis://127.0.0.1:{server.port}/{db}", timeout=5, connect_timeout=1)


class Load:
    """WRITERS greenlets INCR their own counter on the current master (behind ``gate``), and
    a reader greenlet samples every counter on the replica: no read may fail and no counter
    go back."""

    def __init__(self, sentinel_group, rep):
        self.sentinel_group, self.rep = sentinel_group, rep
        self.gate = gevent.event.Event()
        self.gate.set()
        self.busy = 0  # writes in flight
        self.acked = {}  # counter -> highest value the master acknowledged
        self.write_errors = []
        self.read_errors, self.backwards = [], []
        self.reads = 0
        self.client = node_client(sentinel_group.master)
        self.greenlets = [gevent.spawn(self._write, i) for i in range(WRITERS)]
        self.greenlets.append(gevent.spawn(self._read))

    def _write(self, i):
        while True:
            self.gate.wait()
            client = self.client
            self.busy += 1
            try:
                self.acked[i] = client.cmd(["INCR", f"c:{i}"])
            except (GreenConnectionError, GreenTimeoutError, ReadOnlyError) as e:
                self.write_errors.append(type(e).__name__)
                gevent.sleep(0.05)
            finally:
                self.busy -= 1
            gevent.sleep(0.005)

    def _read(self):
        last = {}
        while True:
            try:
                for i in range(WRITERS):
                    value = self.rep.get(f"c:{i}")
                    n = int(value) if value is not None else 0
                    if n < last.get(i, 0):
                        self.backwards.append((i, last[i], n))
                    last[i] = n
                self.reads += 1
            except Exception as e:  # any error is a failure of the test
                self.read_errors.append(repr(e))
            gevent.sleep(0.002)

    def hold(self):
        """Stop issuing writes and wait for those in flight."""
        self.gate.clear()
        wait_for(lambda: self.busy == 0, what="writes in flight to end")

    def release(self, master):
        old, self.client = self.client, node_client(master)
        old.close()
        self.gate.set()

    def stop(self):
        gevent.killall(self.greenlets)
        self.client.close()
        assert self.read_errors == []
        assert self.backwards == []
        assert self.reads > 0


class OffsetsFrom:
    """The highest offset the replica reached while it followed ``server``."""

    def __init__(self, rep, server):
        self.highest = -1
        address = f"127.0.0.1:{server.port}"

        def sample():
            while True:
                st = rep.status()
                if st["master"] == address:
                    self.highest = max(self.highest, st["offset"])
                gevent.sleep(0.001)

        self.greenlet = gevent.spawn(sample)

    def stop(self):
        self.greenlet.kill()


def switched_to(rep, server):
    def cond():
        st = rep.status()
        return st["master"] == f"127.0.0.1:{server.port}" and st["state"] == "streaming"

    return cond


def check_after(rep, load, new, before):
    gevent.sleep(0.3)  # writes to the new master
    load.hold()
    r = node_client(new)
    try:
        wait_for(lambda: rep.status()["offset"] == master_offset(r), what="caught up with the new master")
        st = rep.status()
        assert (st["partial_resyncs"], st["full_syncs"]) == (before["partial_resyncs"] + 1, 1), st
        assert st["replid"] == info(r)["master_replid"]
        for i, value in load.acked.items():  # what the master acknowledged is here
            assert int(rep.get(f"c:{i}") or 0) >= value, i
        assert_same(rep, new, dbs=(0,))
    finally:
        r.close()
    load.stop()


def start(sentinel_group):
    sentinel_group.wait_settled()  # the master now (a loaded machine sees spurious failovers)
    rep = Replica(sentinel_group.url, backoff=(0.05, 0.5))
    rep.start(timeout=60)
    assert rep.status()["master"] == f"127.0.0.1:{sentinel_group.master.port}"
    return rep


def test_forced_failover_continues_partially(sentinel_healed):
    sentinel_group = sentinel_healed
    rep = start(sentinel_group)
    load = Load(sentinel_group, rep)
    try:
        gevent.sleep(0.5)
        wait_for(lambda: len(load.acked) == WRITERS, what="every writer wrote")
        before = rep.status()
        load.hold()  # from here the old master would lose writes: hold them
        old = sentinel_group.master
        seen = OffsetsFrom(rep, old)
        new = sentinel_group.failover(demote=False)  # the old master stays a master, sending hellos
        assert new is not old
        wait_for(switched_to(rep, new), what="the replica to follow the new master")
        seen.stop()
        r = node_client(new)
        limit = int(info(r)["second_repl_offset"]) - 1
        r.close()
        # the replica had all the new master had of the old history (and maybe hellos past it)
        assert seen.highest >= limit, (seen.highest, limit)
        load.release(new)
        check_after(rep, load, new, before)
    finally:
        rep.stop()


def test_killed_master_continues_partially(sentinel_healed):
    sentinel_group = sentinel_healed
    rep = start(sentinel_group)
    load = Load(sentinel_group, rep)
    try:
        gevent.sleep(0.5)
        wait_for(lambda: len(load.acked) == WRITERS, what="every writer wrote")
        before = rep.status()
        old, epoch = sentinel_group.master, sentinel_group.config_epoch()
        earlier = set(sentinel_group.events("+switch-master"))
        # The pause only freezes the old master's stream until the replicas hold it; with the
        # sentinels' down-after running, a loaded machine saw them fail over to a replica
        # while this still waited (a failover from the pause, before the kill).
        set_down_after(sentinel_group, 600_000)
        others = [node_client(s) for s in sentinel_group.replicas]
        try:
            old.pause()  # writes in flight stay in flight; what it sent reaches every replica
            wait_for(
                lambda: all(replica_offset(c, old) >= rep.status()["data_offset"] for c in others),
                what="the replicas to hold what the replica has",
            )
        finally:
            for c in others:
                c.close()
            set_down_after(sentinel_group, sentinel_group.down_after_ms)
        old.kill()
        new = sentinel_group.wait_failed_over(epoch)
        # A second failover (the sentinels judging the new master down too early) would break
        # the precondition: the next master need not hold the history the replica took from
        # the first, so Redis may answer +FULLRESYNC. Say so rather than count resyncs.
        switches = [line for line in sentinel_group.events("+switch-master") if line not in earlier]
        assert all(line.endswith(f" {old.port} 127.0.0.1 {new.port}") for line in switches), (
            f"more than one failover after the kill: {switches}"
        )
        wait_for(switched_to(rep, new), what="the replica to follow the new master")
        load.release(new)
        check_after(rep, load, new, before)
        assert load.write_errors  # the writes in flight at the kill failed, as they should
    finally:
        rep.stop()


def set_down_after(group, ms):
    """``SENTINEL SET <service> down-after-milliseconds`` on every live sentinel."""
    for sentinel in group.sentinels:
        if sentinel.answering:
            sentinel.command("SENTINEL", "SET", group.service, "down-after-milliseconds", str(ms))


def every_replica_healthy(group):
    from greenredis.client.sentinel_view import healthy, parse_instances

    for sentinel in group.sentinels:
        known = {
            int(r["port"]): r
            for r in parse_instances(sentinel.command("SENTINEL", "REPLICAS", group.service))
        }
        if not all(healthy(known.get(s.port, {"flags": "s_down"})) for s in group.replicas):
            return False
    return True


def replica_offset(c, master):
    """The replication offset of a replica of ``master``; AssertionError if it is not one."""
    fields = info(c)
    where = f"{c.params.host}:{c.params.port}"
    assert fields["role"] == "slave" and int(fields["master_port"]) == master.port, (
        f"{where} is no replica of {master.port} (a spurious failover?): {fields['role']}"
    )
    return int(fields["slave_repl_offset"])


def test_replica_and_link_status_cli_take_the_sentinel_url(sentinel_group, capsys):
    from greenredis.cli import link_status
    from greenredis.cli import replica as cli

    class Args:
        url = sentinel_group.url
        interval = 0.05
        every = 0
        port = None
        timeout = 60

    # link-status lists the replicas the sentinels call healthy, from their INFO of each
    # replica, refreshed every 10 s: after a heal that made a node a replica, it can be left
    # out for that long (a loaded run listed only one)
    wait_for(
        lambda: every_replica_healthy(sentinel_group), what="the sentinels to call every replica healthy"
    )
    g = gevent.spawn(cli.run, Args)
    try:
        master = f"master=127.0.0.1:{sentinel_group.master.port}"
        wait_for(lambda: any("state=streaming" in s and master in s for s in [capsys.readouterr().out]))
    finally:
        g.kill()
    lines = []
    assert link_status.run(Args, out=lambda s, flush=False: lines.append(s)) == 0
    for server in sentinel_group.replicas:
        assert any(f"127.0.0.1:{server.port} STATUS: master_link_status:up" in s for s in lines), lines
    assert "every replica of 'mymaster' (2) has master_link_status:up" in lines[-1]


def test_cli_sentinel_url_mistakes(sentinel_group, capsys):
    from greenredis.cli import link_status
    from greenredis.cli import replica as cli
    from greenredis.cli.failures import Fatal

    hosts = sentinel_group.url.split("://", 1)[1].split("/", 1)[0]

    class Args:
        url = f"redis+sentinel://:s3cret@{hosts}/nosuchservice"
        interval = 0.05
        every = 0
        port = None
        timeout = 5

    with pytest.raises(Fatal) as e:
        link_status.run(Args, out=lambda s, flush=False: None)
    assert "nosuchservice" in e.value.message and "s3cret" not in e.value.message
    g = gevent.spawn(cli.run, Args)
    try:
        wait_for(lambda: "check the service name" in capsys.readouterr().out, what="the hint")
    finally:
        g.kill()
    for bad in [f"redis+sentinel://:s3cret@{hosts}", "redis+sentinel://:s3cret@127.0.0.1:99999/mymaster"]:
        Args.url = bad
        for run in (cli.run, link_status.run):
            with pytest.raises(Fatal) as e:
                run(Args)
            assert e.value.code == 2 and "s3cret" not in e.value.message, e.value.message
            assert "redis+sentinel://" in e.value.hint  # not the redis:// example


def test_before_the_first_answer_status_names_the_service_not_the_password():
    rep = Replica("redis+sentinel://alice:s3cret@127.0.0.1:1,[::1]:2/mymaster")
    st = rep.status()
    assert st["master"] == "'mymaster' via sentinels 127.0.0.1:1,[::1]:2"
    assert "s3cret" not in repr(st)
    with pytest.raises(ValueError, match="names no service"):
        Replica("redis+sentinel://127.0.0.1:1")
