"""Grid when Redis loses its latest writes, as a failover may (the promoted replica had not
received them yet), simulated without Sentinel: keys deleted under live nodes, the data set
rolled back to an earlier snapshot, the grid moved to a fresh server. Live nodes must
re-register by themselves within one heartbeat, views must never drop (emit ``leave`` for) a
node that keeps beating, and the listener must resubscribe. Counts and orders, no timings."""

import gevent
import gevent.server
from gevent import socket
from waiting import wait_for
from watching import Watch

import greenredis

GRID_TTL = 20  # long: a node may only leave a view here by a bug, never by a slow machine
KEYS = ["redgrid:::a", "redgrid:::b", "redgrid:::c"]


class SwitchProxy:
    """A loopback TCP proxy whose target can be switched to another server: new connections
    go to the new target, and ``switch(port, cut=True)`` drops the ones open now (what a
    failover does to a client that follows it)."""

    def __init__(self, port):
        self.target = port
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = f"redis://127.0.0.1:{self.server.server_port}/0"
        self.socks = []

    def _handle(self, down, _addr):
        try:
            up = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            down.close()
            return
        self.socks += [down, up]
        gevent.spawn(self._pipe, down, up)
        self._pipe(up, down)

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()

    def switch(self, port, cut=True):
        self.target = port
        if cut:
            for s in self.socks:
                s.close()
            self.socks = []

    def close(self):
        self.switch(self.target)
        self.server.stop()


def _grid(grids, url):
    nodes = [grids(url, name=n, meta={"v": "1"}) for n in ("a", "b", "c")]
    observer = grids(url, observe=True)
    wait_for(lambda: all(set(g.nodes()) == {"a", "b", "c"} for g in nodes + [observer]), what="convergence")
    gevent.sleep(1.0)  # the start-up pings answered: only heartbeats from here on
    return nodes, observer


def _commands(lines, key):
    """The command names MONITOR showed on ``key``, in order."""
    out = []
    for line in lines:
        words = line.split(b'"')[1::2]  # '<ts> [0 addr] "CMD" "arg" ...'
        if len(words) >= 2 and words[1] == key.encode():
            out.append(words[0].upper().decode())
    return out


def test_nodes_reregister_within_one_heartbeat_when_their_keys_are_lost(redis_server, grids):
    """Every grid key and the index deleted under live nodes (a failover that lost all
    their writes, on a connection that stayed up): each node registers again at the
    heartbeat after the one that found its key gone, and no view drops anyone."""
    nodes, observer = _grid(grids, redis_server.url)
    watch = Watch(nodes + [observer], "abc")
    r = greenredis.Redis.from_url(redis_server.url)
    mon = r.monitor()
    lines = []
    reader = gevent.spawn(lambda: [lines.append(line) for line in mon])
    r.cmd(["DEL", *KEYS, "redgrid-index::"])
    wait_for(lambda: r.cmd(["EXISTS", *KEYS]) == 3, what="keys written again")
    wait_for(lambda: r.cmd(["ZCARD", "redgrid-index::"]) == 3, what="index written again")
    wait_for(lambda: all(_commands(lines, k).count("HSET") >= 1 for k in KEYS), what="HSETs seen")
    reader.kill()
    mon.close()
    cut = next(i for i, line in enumerate(lines) if b'"DEL"' in line and b"redgrid:::a" in line)
    for key in KEYS:
        after = _commands(lines[cut + 1 :], key)
        before_hset = after[: after.index("HSET")]
        # at most the one heartbeat whose PEXPIRE answered 0 (a ping or the pubsub may come first)
        assert before_hset.count("PEXPIRE") <= 1, (key, after)
    assert r.cmd(["HGET", "redgrid:::a", "v"]) == b"1"
    gevent.sleep(1.5)  # three more intervals of heartbeats and reconciles
    watch.stop()
    assert watch.leaves == [] and watch.short == []
    assert sum(g.stats["reregistered"] for g in nodes) >= 1  # the others may answer its ping first
    r.close()


def test_rollback_to_an_earlier_snapshot_heals(redis_server, grids):
    """The data set rolled back a few heartbeats (older index scores, an older meta
    in a node's key: the failover lost a meta change) and every client dropped, as
    Sentinel's reconfiguration does: the node writes its current meta again, a
    newcomer sees it, and no view drops anyone."""
    nodes, observer = _grid(grids, redis_server.url)
    a = nodes[0]
    watch = Watch(nodes + [observer], "abc")
    r = greenredis.Redis.from_url(redis_server.url)
    index = r.cmd(["ZRANGE", "redgrid-index::", 0, -1, "WITHSCORES"])
    keys = {k: r.cmd(["HGETALL", k]) for k in KEYS}
    a.update_meta(v="2")
    wait_for(lambda: all(g.nodes()["a"]["v"] == "2" for g in nodes + [observer]), what="update seen")
    gevent.sleep(1.0)  # two heartbeats after the snapshot: the rollback loses them
    batch = [["DEL", "redgrid-index::", *KEYS]]
    batch.append(["ZADD", "redgrid-index::", *[x for pair in zip(index[1::2], index[::2]) for x in pair]])
    for k, flat in keys.items():
        batch += [["HSET", k, *flat], ["PEXPIRE", k, GRID_TTL * 1000]]
    batch += [["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"], ["CLIENT", "KILL", "TYPE", "pubsub"]]
    r.transaction(batch)
    assert r.cmd(["HGET", "redgrid:::a", "v"]) == b"1"
    wait_for(lambda: r.cmd(["HGET", "redgrid:::a", "v"]) == b"2", what="current meta written again")
    wait_for(lambda: all(g.status["channel"] == "subscribed" for g in nodes), what="resubscribed")
    d = greenredis.Grid(redis_server.url, name="d", ttl=GRID_TTL, interval=0.5).start()
    try:
        wait_for(lambda: set(d.nodes()) == {"a", "b", "c", "d"}, what="newcomer")
        assert d.nodes()["a"]["v"] == "2"
        wait_for(lambda: all("d" in g.nodes() for g in nodes + [observer]), what="newcomer seen")
        gevent.sleep(1.5)
        assert all(g.nodes()["a"]["v"] == "2" for g in nodes + [observer, d])
    finally:
        watch.stop()  # before d leaves: its own stop is a real leave, seen by the others
        d.stop(timeout=1)
    assert watch.leaves == [] and watch.short == []
    r.close()


def test_grid_moved_to_a_fresh_server(make_server, grids):
    """The grid's address starts leading to another, empty server and the open
    connections drop (a failover to a replica that had none of the grid's writes):
    every node registers on the new server, the listeners resubscribe there (a meta
    change reaches the peers through its channel), and no view drops anyone."""
    old, new = make_server(), make_server()
    proxy = SwitchProxy(old.port)
    try:
        nodes, observer = _grid(grids, proxy.url)
        watch = Watch(nodes + [observer], "abc")
        r = greenredis.Redis.from_url(new.url)
        proxy.switch(new.port)
        wait_for(lambda: r.cmd(["EXISTS", *KEYS]) == 3, what="registered on the new server")
        wait_for(lambda: r.cmd(["ZCARD", "redgrid-index::"]) == 3, what="indexed on the new server")
        wait_for(lambda: r.cmd(["PUBSUB", "NUMSUB", "redgrid::"])[1] == 4, what="resubscribed")
        nodes[1].update_meta(v="3")
        wait_for(lambda: all(g.nodes()["b"]["v"] == "3" for g in nodes + [observer]), what="update heard")
        gevent.sleep(1.5)
        watch.stop()
        assert watch.leaves == [] and watch.short == []
        assert not any(g.stale for g in nodes + [observer])
        r.close()
    finally:
        proxy.close()


def test_grid_moved_to_a_fresh_server_without_a_dropped_connection(make_server, grids):
    """As above, but only the writers' connections are replaced (idle) and the old
    server's pub/sub stays up, so no listener hears a gap: each node notices from its
    heartbeat that its key is gone, registers on the new server and moves its listener
    there too, so a meta change published on the new server reaches the peers."""
    old, new = make_server(), make_server()
    proxy = SwitchProxy(old.port)
    try:
        nodes, observer = _grid(grids, proxy.url)
        watch = Watch(nodes + [observer], "abc")
        r = greenredis.Redis.from_url(new.url)
        proxy.switch(new.port, cut=False)
        for g in nodes + [observer]:
            g.redis._shared.close()  # the next call connects anew: to the new server
        wait_for(lambda: r.cmd(["EXISTS", *KEYS]) == 3, what="registered on the new server")
        wait_for(lambda: r.cmd(["ZCARD", "redgrid-index::"]) == 3, what="indexed on the new server")
        wait_for(lambda: r.cmd(["PUBSUB", "NUMSUB", "redgrid::"])[1] >= 3, what="listeners moved")
        nodes[1].update_meta(v="3")
        wait_for(lambda: all(g.nodes()["b"]["v"] == "3" for g in nodes), what="update heard")
        gevent.sleep(1.5)
        watch.stop()
        assert watch.leaves == [] and watch.short == []
        r.close()
    finally:
        proxy.close()


CLOSED_CLIENT = """
import sys, gevent, greenredis
from greenredis.grid.node import Grid
url = sys.argv[1]
r = greenredis.Redis.from_url(url)
g = Grid(r, name="a", ttl=20, interval=0.5).start()
assert g.wait(10)
listened = []
listen_once = g._listen_once
g._listen_once = lambda: listened.append(1) or listen_once()
r.close()
admin = greenredis.Redis.from_url(url)
admin.cmd(["CLIENT", "KILL", "TYPE", "pubsub"])  # the subscription finds its client closed
admin.close()
gevent.sleep(1.0)
print(len(listened))
"""


def test_a_closed_client_does_not_make_the_listener_spin(redis_server):
    """The client given to the Grid is closed under it and its subscription ends by
    itself: the listener tries again with backoff. (It spun on the ended subscription,
    starving every other greenlet, once it learnt to reopen subscriptions: in a child
    process, so that a spin fails this test instead of hanging the suite.)"""
    import subprocess
    import sys

    try:
        proc = subprocess.run(
            [sys.executable, "-c", CLOSED_CLIENT, redis_server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the listener spun: the process never got past gevent.sleep(1)") from None
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) < 40


def _wait_listening(r, count):
    """Until ``count`` subscribers listen on the grid's channel (the observer's is back)."""
    wait_for(lambda: r.cmd(["PUBSUB", "NUMSUB", "redgrid::"])[1] == count, what=f"{count} listeners")


def test_a_reread_answered_after_a_newer_update_does_not_undo_it(redis_server, grids):
    """The observer's listener reconnects (a gap) and it re-reads every registration; a
    node's meta changes on the server just after that read ran, and the change's update
    message reaches the observer before the read's older reply does (two connections:
    nothing orders them). The view must end with the new meta, not go back to the old one
    for good (nothing re-announces an unchanged meta). The order is forced: the re-read's
    reply is held until the update was heard. Only the observer's subscription is killed
    (its own ACL user), so no node re-announces its meta by itself."""
    r = greenredis.Redis.from_url(redis_server.url)
    r.cmd(["ACL", "SETUSER", "watcher", "on", ">pw", "~*", "&*", "+@all"])
    nodes = [grids(redis_server.url, name=n, meta={"v": "1"}) for n in ("a", "b", "c")]
    observer = grids(f"redis://watcher:pw@127.0.0.1:{redis_server.port}/0", observe=True)
    views = nodes + [observer]
    wait_for(lambda: all(set(g.nodes()) == {"a", "b", "c"} for g in views), what="convergence")
    a = nodes[0]
    held, updates, killed = [], [], []
    send = observer._batch

    def hold_the_reread(commands, timeout=None):
        after_the_kill = bool(killed)
        replies = send(commands, timeout)
        if after_the_kill and not held and all(["HGETALL", k] in commands for k in KEYS):  # the gap's re-read
            held.append(replies[commands.index(["HGETALL", "redgrid:::a"])])
            _wait_listening(r, 4)
            a.update_meta(v="2")  # written after the read ran
            wait_for(lambda: observer.nodes()["a"]["v"] == "2", what="the update heard before the reply")
        return replies

    observer._batch = hold_the_reread
    observer.on_update = lambda name, meta: updates.append((name, meta["v"]))
    assert r.cmd(["CLIENT", "KILL", "TYPE", "pubsub", "USER", "watcher"]) == 1
    killed.append(True)
    wait_for(lambda: held, what="the observer's re-read after its gap")
    assert held[0] == [b"ip", b"127.0.0.1", b"v", b"1", b"_instance", a.instance.encode()]  # the old meta
    start = observer.stats["batches"]
    wait_for(lambda: observer.stats["batches"] >= start + 3, what="three more batches")
    assert observer.nodes()["a"]["v"] == "2", updates
    assert updates[-1] == ("a", "2")
    assert observer.stats["rereads"] >= 1  # the overtaken read was sent again
    assert r.cmd(["HGET", "redgrid:::a", "v"]) == b"2"
    r.close()


def test_a_listener_back_while_a_beat_is_out_gets_its_own_reread(make_server, grids):
    """The grid's address leads to an empty server now. The observer's beat is out there
    (its ZRANGE finds nobody yet) when a node registers there with a new meta, published
    before the observer listens there; then the observer's subscription drops, reconnects
    there and asks for a re-read (a gap), still before the beat's reply is in. That
    reply must not answer the request: its ZRANGE ran before the SUBSCRIBE. The order is
    forced by holding the beat's reply; only the observer's subscription is killed (its
    own ACL user), so no node re-announces its meta by itself."""
    old, new = make_server(), make_server()
    for server in (old, new):
        admin = greenredis.Redis.from_url(server.url)
        admin.cmd(["ACL", "SETUSER", "watcher", "on", ">pw", "~*", "&*", "+@all"])
        admin.close()
    nodes_proxy, observer_proxy = SwitchProxy(old.port), SwitchProxy(old.port)
    r = greenredis.Redis.from_url(new.url)
    try:
        nodes = [grids(nodes_proxy.url, name=n, meta={"v": "1"}) for n in ("a", "b", "c")]
        url = observer_proxy.url.replace("redis://", "redis://watcher:pw@")
        observer = grids(url, observe=True)
        wait_for(
            lambda: all(set(g.nodes()) == {"a", "b", "c"} for g in nodes + [observer]), what="convergence"
        )
        a = nodes[0]
        send = observer._batch

        def hold_the_beat(commands, timeout=None):
            if held or not any(c[0] == "ZRANGE" for c in commands):
                return send(commands, timeout)
            observer_proxy.switch(new.port, cut=False)
            observer.redis._shared.close()  # idle (we are its writer): this beat goes to the new server
            replies = send(commands, timeout)
            held.append(replies)
            try:
                nodes_proxy.switch(new.port, cut=False)
                a.redis._shared.close()  # a's next call goes to the new server
                a.update_meta(v="3")
                wait_for(lambda: r.cmd(["HGET", "redgrid:::a", "v"]) == b"3", what="a registered there")
                old_admin = greenredis.Redis.from_url(old.url)
                killed = old_admin.cmd(["CLIENT", "KILL", "TYPE", "pubsub", "USER", "watcher"])
                old_admin.close()
                assert killed == 1, "the observer's subscription was not on the old server"
                wait_for(
                    lambda: observer._hb.need_full, what="the observer's listener back, asking for a re-read"
                )
                done.append(True)
            except Exception as e:
                problems.append(e)
            return replies

        held, problems, done = [], [], []
        observer._batch = hold_the_beat
        wait_for(lambda: held, what="the observer's beat on the new server")
        wait_for(lambda: problems or done, what="the order forced")
        assert not problems
        assert held[0][-1] == []  # its ZRANGE: nobody there yet
        wait_for(
            lambda: observer.nodes()["a"]["v"] == "3", timeout=10, what="a's new meta in the observer's view"
        )
    finally:
        r.close()
        nodes_proxy.close()
        observer_proxy.close()


def test_a_node_changing_its_meta_faster_than_a_read_costs_a_few_reads(redis_server, grids):
    """Every read of a's key is overtaken by a's next update (forced: each read's reply is
    held until the observer heard the next one): the observer reads it again a few times,
    then lets a's messages alone tell, and beats on; it never spins on the reads."""
    r = greenredis.Redis.from_url(redis_server.url)
    r.cmd(["ACL", "SETUSER", "watcher", "on", ">pw", "~*", "&*", "+@all"])
    nodes = [grids(redis_server.url, name=n, meta={"v": "1"}) for n in ("a", "b", "c")]
    observer = grids(f"redis://watcher:pw@127.0.0.1:{redis_server.port}/0", observe=True)
    wait_for(lambda: all(set(g.nodes()) == {"a", "b", "c"} for g in nodes + [observer]), what="convergence")
    a = nodes[0]
    reads, killed = [], []
    send = observer._batch

    def overtake(commands, timeout=None):
        after_the_kill = bool(killed)
        replies = send(commands, timeout)
        # the gap's re-read of everyone, then its reads of a again
        first = all(["HGETALL", k] in commands for k in KEYS)
        if after_the_kill and (reads or first) and ["HGETALL", "redgrid:::a"] in commands and len(reads) < 10:
            reads.append(commands)
            _wait_listening(r, 4)
            v = f"x{len(reads)}"
            a.update_meta(v=v)
            wait_for(lambda: observer.nodes()["a"]["v"] == v, what=f"the update to {v} heard")
        return replies

    observer._batch = overtake
    before = observer.stats["rereads"]  # the start-up's updates may have overtaken its first reads
    assert r.cmd(["CLIENT", "KILL", "TYPE", "pubsub", "USER", "watcher"]) == 1  # a gap: a full re-read
    killed.append(True)
    wait_for(lambda: len(reads) >= 4, what="four reads of a")
    start = observer.stats["batches"]
    wait_for(lambda: observer.stats["batches"] >= start + 3, what="three more batches")
    assert len(reads) == 4 and observer.stats["rereads"] - before == 3
    assert observer.nodes()["a"]["v"] == "x4" and r.cmd(["HGET", "redgrid:::a", "v"]) == b"x4"
    r.close()
