"""Replica through a promotion: the partial resync (PSYNC2's replid2) with plain servers.

A master M, a real replica R of M and our Replica on M. R is promoted (REPLICAOF NO ONE),
M goes on propagating what a master propagates when nobody writes (PUBLISH, the SELECT
before it, PINGs), then is demoted or killed, and the Replica is pointed at R. R holds M's
replid as replid2 up to the offset it had reached, so a PSYNC from the offset just after
the last data-changing command is answered +CONTINUE.
"""

import random

import gevent
import pytest
from test_replica import FAST_SYNC, assert_same, client, master_offset, random_workload
from waiting import wait_for

from greenredis.replication.replica import Replica
from greenredis.server import find_valkey_server

COUNTERS = 20


def info(r):
    text = r.cmd(["INFO", "replication"]).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class CounterReader:
    """A greenlet sampling counters on the replica throughout: a read must never fail and a
    counter never go back (it only ever grows on the master)."""

    def __init__(self, rep, db=0):
        self.rep, self.db = rep, db
        self.last = {}
        self.errors, self.backwards = [], []
        self.reads = 0
        self.greenlet = gevent.spawn(self._run)

    def _run(self):
        while True:
            try:
                for i in range(COUNTERS):
                    value = self.rep.get(f"c:{i}", db=self.db)
                    n = int(value) if value is not None else 0
                    if n < self.last.get(i, 0):
                        self.backwards.append((i, self.last[i], n))
                    self.last[i] = n
                self.reads += 1
            except Exception as e:  # any error is a failure of the test
                self.errors.append(repr(e))
            gevent.sleep(0.002)

    def stop(self):
        self.greenlet.kill()
        assert self.errors == []
        assert self.backwards == []
        assert self.reads > 0


def bump(r, times=1):
    r.cmd([["INCR", f"c:{i}"] for i in range(COUNTERS) for _ in range(times)])


def caught_up_with(rep, r):
    return lambda: rep.status()["offset"] == master_offset(r)


def start_pair(make_server, binary):
    """A master and a real replica of it, in sync before anything else talks to the master.

    R connects from its once-a-second cron: if the Replica synced first and M sent a PING
    before R did, R's backlog starts past the Replica's last data offset, and a PSYNC from
    there can only be answered +FULLRESYNC (seen on a loaded machine)."""
    m = make_server(args=FAST_SYNC, binary=binary)
    rs = make_server(args=FAST_SYNC, binary=binary, replicaof=("127.0.0.1", m.port))
    rr = client(rs)
    try:
        wait_for(lambda: info(rr)["master_link_status"] == "up", what="R in sync with M")
    finally:
        rr.close()
    return m, rs


def promote(r_new, r_old, rep, trap):
    """REPLICAOF NO ONE on the new master; then, with ``trap``, the old master propagates
    PUBLISH (from db 0 and db 5: SELECTs too) that the replica applies past the new master's
    replid2 limit."""
    r_new.cmd(["REPLICAOF", "NO", "ONE"])
    wait_for(lambda: info(r_new)["role"] == "master", what="promotion")
    limit = int(info(r_new)["second_repl_offset"]) - 1  # the last offset of the old history
    if trap:
        for db in (5, 0, 5):
            c = client_of(r_old, db)
            c.cmd(["PUBLISH", "__sentinel__:hello", "127.0.0.1,26379,x,0,mymaster,127.0.0.1,1,0"])
            c.close()
        wait_for(caught_up_with(rep, r_old), what="the replica received the PUBLISHes")
        assert rep.status()["offset"] > limit  # the trap is set: past the replid2 limit
    return limit


def client_of(r, db):
    from greenredis.client.redis import Redis

    host, port = r.params.host, r.params.port
    return Redis.from_url(f"redis://{host}:{port}/{db}", timeout=30)


@pytest.mark.parametrize("binary", ["redis", "valkey"])
@pytest.mark.parametrize("old_master", ["demoted", "killed"])
@pytest.mark.parametrize("trap", [True, False], ids=["publish-after-promotion", "quiet"])
def test_promoted_replica_continues_partially(make_server, binary, old_master, trap):
    binary = find_valkey_server() if binary == "valkey" else None
    m, rs = start_pair(make_server, binary)
    rm, rr = client(m), client(rs)
    rnd = random.Random(13)
    dbs = [client(m, 3)]
    random_workload(rnd, rm, 400, dbs)
    # its "gone" key (PX 1) expires now, not by chance after the promotion: the old master's
    # DEL would be a write the new master never had (a full resync, and rightly so)
    wait_for(lambda: rm.cmd(["EXISTS", "gone"]) == 0, what="the PX 1 key to expire")
    bump(rm, 3)
    rep = Replica(m.url, backoff=(0.05, 0.5))
    try:
        rep.start(timeout=60)
        reader = CounterReader(rep)
        bump(rm)
        wait_for(caught_up_with(rep, rm), what="replica caught up")
        wait_for(lambda: master_offset(rr) == master_offset(rm), what="R caught up")
        before = rep.status()
        assert before["master"] == f"127.0.0.1:{m.port}"
        promote(rr, rm, rep, trap)
        if old_master == "demoted":
            rm.cmd(["REPLICAOF", "127.0.0.1", rs.port])
        else:
            m.kill()
        rep.follow("127.0.0.1", rs.port)
        wait_for(lambda: rep.status()["master"] == f"127.0.0.1:{rs.port}", what="status names R")
        bump(rr, 2)
        random_workload(rnd, rr, 200, [client(rs, 3)])
        wait_for(caught_up_with(rep, rr), what="replica caught up with R")
        st = rep.status()
        assert (st["partial_resyncs"], st["full_syncs"]) == (before["partial_resyncs"] + 1, 1), st
        assert st["replid"] == info(rr)["master_replid"]
        assert st["link"] == "up" and st["state"] == "streaming"
        gevent.sleep(0.05)  # a few more samples after the switch
        reader.stop()
        assert_same(rep, rs, dbs=(0, 3, 5))
    finally:
        rep.stop()
        for c in (rm, rr, *dbs):
            c.close()


def test_a_write_on_the_old_master_after_the_promotion_is_a_full_resync(make_server):
    """Data the new master never had: no +CONTINUE is possible, and the full resync makes the
    copy equal to the new master (the write Redis lost is gone here too)."""
    m, rs = start_pair(make_server, None)
    rm, rr = client(m), client(rs)
    bump(rm, 2)
    rep = Replica(m.url, backoff=(0.05, 0.5))
    try:
        rep.start(timeout=60)
        wait_for(lambda: master_offset(rr) == master_offset(rm), what="R caught up")
        promote(rr, rm, rep, trap=True)
        rm.cmd(["SET", "lost", "on the old master only"])
        wait_for(caught_up_with(rep, rm), what="replica got the lost write")
        assert rep.get("lost") is not None
        rep.follow("127.0.0.1", rs.port)
        rr.cmd(["SET", "after", "1"])
        wait_for(lambda: rep.get("after") == b"1", what="replica follows R")
        st = rep.status()
        assert (st["full_syncs"], st["partial_resyncs"]) == (2, 0), st
        assert rep.get("lost") is None
        assert_same(rep, rs, dbs=(0,))
    finally:
        rep.stop()
        rm.close()
        rr.close()


class Locator:
    """What a Sentinel tells: the master's address, and switches to those watching."""

    def __init__(self, port, watchable):
        self.address = ("127.0.0.1", port)
        self.asked = 0
        self.watchers = []
        if watchable:
            self.watch = self._watch

    def master_address(self):
        self.asked += 1
        return self.address

    def _watch(self, callback):
        self.watchers.append(callback)
        return lambda: self.watchers.remove(callback)

    def switch(self, port):
        self.address = ("127.0.0.1", port)
        for callback in list(self.watchers):
            callback(*self.address)


@pytest.mark.parametrize("how", ["watch", "rediscover"])
def test_a_locator_moves_the_replica_to_the_new_master(make_server, how):
    """watch: the old master stays up (sending PUBLISHes) and only the switch callback moves
    the replica; rediscover: the old master is killed and the replica, reconnecting, asks the
    locator again."""
    m, rs = start_pair(make_server, None)
    rm, rr = client(m), client(rs)
    bump(rm, 2)
    locator = Locator(m.port, watchable=how == "watch")
    rep = Replica("redis://127.0.0.1:1", locator=locator, backoff=(0.05, 0.2))  # the URL's address: unused
    try:
        rep.start(timeout=60)
        assert rep.status()["master"] == f"127.0.0.1:{m.port}"
        reader = CounterReader(rep)
        wait_for(lambda: master_offset(rr) == master_offset(rm), what="R caught up")
        promote(rr, rm, rep, trap=True)
        if how == "watch":
            locator.switch(rs.port)
        else:
            m.kill()
            wait_for(lambda: rep.status()["link"] == "down", what="link down")
            locator.switch(rs.port)
        bump(rr)
        wait_for(caught_up_with(rep, rr), what="replica follows R")
        st = rep.status()
        assert (st["partial_resyncs"], st["full_syncs"]) == (1, 1), st
        assert st["master"] == f"127.0.0.1:{rs.port}"
        reader.stop()
        assert_same(rep, rs, dbs=(0,))
    finally:
        rep.stop()
        assert locator.watchers == []  # stop() stopped watching
        rm.close()
        rr.close()


def test_follow_cuts_a_backoff_wait_short(make_server):
    m, rs = start_pair(make_server, None)
    rm, rr = client(m), client(rs)
    bump(rm)
    rep = Replica(m.url, backoff=(60.0, 60.0))
    try:
        rep.start(timeout=60)
        wait_for(lambda: master_offset(rr) == master_offset(rm), what="R caught up")
        promote(rr, rm, rep, trap=False)
        m.kill()
        wait_for(lambda: rep.status()["state"] == "down", what="the replica waits out its backoff")
        rep.follow("127.0.0.1", rs.port)
        wait_for(lambda: rep.status()["state"] == "streaming", timeout=20, what="streaming at once")
        assert rep.status()["partial_resyncs"] == 1
        for bad in [("127.0.0.1", 0), ("127.0.0.1", "x"), ("", 6379), (None, 6379)]:
            with pytest.raises(ValueError, match="master's"):
                rep.follow(*bad)
        rep.follow(b"127.0.0.1", str(rs.port))  # as a Sentinel reply has them: the same master
        assert rep.status()["master"] == f"127.0.0.1:{rs.port}" and rep.status()["state"] == "streaming"
    finally:
        rep.stop()
        rm.close()
        rr.close()
