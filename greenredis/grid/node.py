"""``Grid``: automatic node discovery and a health registry through Redis.

Each node keeps a hash ``redgrid:<domain>:<version>:<node>`` (``ip`` and its
meta) alive with a TTL, announces itself on the channel
``redgrid:<domain>:<version>`` and learns its peers from it, like the original
Erlang redgrid. An index (sorted set by last heartbeat) lets every node
reconcile its view once per interval and after every reconnect, so a lost
message heals by itself; peers that stop heartbeating expire from the view.
The layout and the messages are described in ``greenredis.grid.view``, which
holds the logic; this module is the gevent shell around it: one greenlet
writes (registration, heartbeat, reconcile, ping answers), one listens.
"""

import logging
import os
import socket as _stdsocket
import time

import gevent
from gevent import socket
from gevent.event import Event
from gevent.queue import Full, Queue

from greenredis.backoff import Backoff
from greenredis.client.redis import Redis
from greenredis.errors import RedisError, ReplyError
from greenredis.grid.view import GridDataError, GridView, Layout, valid_name

__all__ = ["Grid", "default_name"]

log = logging.getLogger("greenredis.grid")

_STOP = object()


def default_name():
    """Heroku's ``$DYNO`` when set, else ``hostname:pid``."""
    return os.environ.get("DYNO") or f"{_stdsocket.gethostname()}:{os.getpid()}"


def _check_meta(meta):
    for k, v in meta.items():
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise TypeError(f"meta keys and values are str (keys non-empty): {k!r}: {v!r}")
    return meta


def _routed_ip(params):
    """The local address of the interface that routes to Redis (no packet is sent)."""
    if params.unix_socket_path:
        return "127.0.0.1"
    try:
        info = socket.getaddrinfo(params.host, params.port, 0, socket.SOCK_DGRAM)[0]
        with socket.socket(info[0], socket.SOCK_DGRAM) as s:
            s.connect(info[4])
            return s.getsockname()[0]
    except OSError as e:
        log.warning("grid: cannot find the address routing to %s (%s); using 127.0.0.1", params.address, e)
        return "127.0.0.1"


class Grid:
    """One node of a grid: registers itself, discovers its peers, tracks their health.

    ``Grid(redis=None, name=None, meta=None, ttl=60, interval=10, domain=None,
    version=None, ip=None, timeout=None)``. ``redis`` is a URL (default
    ``$REDIS_URL``) or a ``greenredis.Redis`` (then it is not closed on stop).
    ``name`` defaults to ``$DYNO``, else ``hostname:pid``; ``domain``,
    ``version`` and ``ip`` to ``$DOMAIN``, ``$VERSION`` and ``$LOCAL_IP``, the
    ip then to the address of the interface that routes to Redis. Meta keys and
    values are str. A node that stops heartbeating disappears from its peers'
    views within ``ttl`` seconds; ``ttl`` must exceed ``2 * interval``.

    Callbacks ``on_join``, ``on_leave``, ``on_update`` are called with
    ``(name, meta)``; ``events()`` iterates ``GridEvent``s. ``observe=True``
    watches the grid without joining it (no key, no ping, no leave). Neither Redis going
    away nor bad data under a grid key stops the grid: it keeps its view, sets
    ``stale`` / ``stale_since`` and retries.
    """

    def __init__(
        self,
        redis=None,
        name=None,
        meta=None,
        ttl=60,
        interval=10,
        domain=None,
        version=None,
        ip=None,
        timeout=None,
        observe=False,
    ):
        if redis is None or isinstance(redis, str):
            self.redis, self._own_redis = Redis.from_url(redis), True
        else:
            self.redis, self._own_redis = redis, False
        self.observe = observe
        self.name = None if observe else (name or default_name())
        if not observe and not valid_name(self.name):
            raise ValueError(f"bad node name {self.name!r}: 1..255 printable chars, no spaces")
        self.layout = Layout(
            os.environ.get("DOMAIN", "") if domain is None else domain,
            os.environ.get("VERSION", "") if version is None else version,
        )
        self.key = None if observe else self.layout.key(self.name)
        meta = _check_meta(dict(meta or {}))
        if not observe:
            ip = ip or os.environ.get("LOCAL_IP") or meta.get("ip") or _routed_ip(self.redis.params)
            meta = {"ip": str(ip), **{k: v for k, v in meta.items() if k != "ip"}}
        self._meta = meta
        self.ttl, self.interval = float(ttl), float(interval)
        self.view = GridView(self.name, self._meta, ttl, interval, now=time.time())
        self.timeout = timeout or max(1.0, min(self.interval, 5.0))
        self.on_join = self.on_leave = self.on_update = None
        self.stats = {"batches": 0, "commands": 0, "errors": 0, "pings_answered": 0, "events_dropped": 0}
        self._announced = None  # meta last registered in Redis, None before the first time
        self._published = set()  # meta fields written (removed ones are HDEL'd)
        self._need_register = self._need_ping = not observe
        self._need_full = True
        self._answer_ping = False
        self._answered_at = 0.0
        self._ping_gap = min(0.5, self.interval / 4)
        self._trim = None
        self._clobber = False
        self._refused = False
        self._next_beat = 0.0
        self._wake = Event()
        self._ready = Event()
        self._subscribed = Event()
        self._queues = []
        self._sub = None
        self._greenlets = []
        self.started = self.stopped = False

    def __repr__(self):
        return f"<Grid {self.name!r} on {self.layout.channel!r} ({len(self.view.nodes())} nodes)>"

    # -- public API -----------------------------------------------------------

    def start(self):
        """Start the listener and heartbeat greenlets; returns at once (see ``wait``)."""
        if self.started:
            return self
        self.started = True
        self._greenlets = [gevent.spawn(self._listen), gevent.spawn(self._beat)]
        return self

    def wait(self, timeout=None):
        """Block until registered and reconciled once; False on timeout."""
        return self._ready.wait(timeout)

    def nodes(self):
        """``{name: meta}`` of the grid as this node sees it, itself included (no I/O)."""
        return self.view.nodes()

    def health(self):
        """``{name: {"state", "last_seen", "meta", "self", "gone_at", "reason"}}``.

        state is "up", "stale" (Redis unreachable, or no news for 2.5 intervals)
        or "gone" (left or expired lately); last_seen is a unix time.
        """
        return self.view.health(time.time())

    @property
    def meta(self):
        return dict(self._meta)

    @property
    def stale(self):
        """True while Redis is unreachable: the view is the last one known."""
        return self.view.stale

    @property
    def stale_since(self):
        """Unix time since which the view is stale, or None."""
        return self.view.stale_since

    def update_meta(self, meta=None, **fields):
        """Merge fields into this node's meta (a value of None removes the field);
        peers see the change within one round trip."""
        if self.observe:
            raise RuntimeError("an observing Grid has no meta of its own")
        changes = {**(meta or {}), **fields}
        new = dict(self._meta)
        for k, v in changes.items():
            if v is None:
                if k == "ip":
                    raise ValueError("ip cannot be removed")
                new.pop(k, None)
            else:
                new[k] = v
        if new == self._meta:
            return
        self._meta = _check_meta(new)
        self._emit(self.view.set_self(self._meta, time.time()))  # nodes() includes us: so do events
        self._need_register = True
        self._wake.set()

    def events(self, maxsize=10000):
        """Iterate ``GridEvent(kind, name, meta, reason)`` from now until ``stop()``.
        Events beyond ``maxsize`` unread are dropped and counted."""
        if self.stopped:
            return
        q = Queue(maxsize)
        self._queues.append(q)
        try:
            while True:
                item = q.get()
                if item is _STOP:
                    return
                yield item
        finally:
            if q in self._queues:
                self._queues.remove(q)

    def stop(self, timeout=None):
        """Leave the grid: delete the key, drop from the index, tell the peers."""
        if self.stopped:
            return
        self.stopped = True
        me = self._kill_greenlets()
        if self.started and not self.observe:
            try:
                leave = self.layout.message("leave", self.name)
                self._batch(
                    [
                        ["DEL", self.key],
                        ["ZREM", self.layout.index, self.name],
                        ["PUBLISH", self.layout.channel, leave],
                    ],
                    timeout or self.timeout,
                )
            except RedisError as e:
                log.warning("grid %s: could not announce the leave (%s); peers will expire it", self.name, e)
        self._close(me)

    def kill(self):
        """Stop without leaving, as a crash would (for tests and benchmarks)."""
        self.stopped = True
        self._close(self._kill_greenlets())

    def _kill_greenlets(self):
        """Kill our greenlets but the current one (stop() called from a callback):
        returns True if that one is ours, to end it last."""
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current])
        if self._sub is not None:
            self._sub.close()
        return current in self._greenlets

    def _close(self, end_current):
        for q in list(self._queues):
            q.put(_STOP)
        if self._own_redis:
            self.redis.close()
        if end_current:
            raise gevent.GreenletExit

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- events -----------------------------------------------------------------

    def _emit(self, events):
        for event in events:
            callback = {"join": self.on_join, "leave": self.on_leave, "update": self.on_update}[event.kind]
            if callback is not None:
                try:
                    callback(event.name, event.meta)
                except Exception:
                    log.exception("grid %s: on_%s callback failed", self.name, event.kind)
            for q in self._queues:
                try:
                    q.put_nowait(event)
                except Full:
                    self.stats["events_dropped"] += 1

    # -- Redis ------------------------------------------------------------------

    def _batch(self, commands, timeout=None):
        self.stats["batches"] += 1
        self.stats["commands"] += len(commands)
        return self.redis.cmd(commands, timeout=timeout or self.timeout)

    def _fetch(self, names, scores=None):
        """HGETALL the keys of these nodes in one round trip and feed the view."""
        if not names:
            return
        replies = self._batch([["HGETALL", self.layout.key(n)] for n in names])
        now = time.time()
        events = []
        for name, reply in zip(names, replies):
            try:
                meta = self.layout.parse_meta(reply)
            except GridDataError as e:
                self.view.bad_data(f"registration of {name!r}", e)
                continue
            if meta is not None:
                events += self.view.seen(name, meta, now, score=(scores or {}).get(name))
        self._emit(events)

    # -- the writer greenlet --------------------------------------------------

    def _beat(self):
        backoff = Backoff(0.1, min(2.0, self.interval))
        # Listen before registering and reading the index, so nothing falls in between.
        self._subscribed.wait(self.timeout)
        while True:
            try:
                self._step()
            except RedisError as e:
                self.stats["errors"] += 1
                if not self.view.stale:
                    log.warning("grid %s: Redis unreachable (%s); keeping the view, retrying", self.name, e)
                self.view.mark_stale(time.time())
                self._need_full = True
                self._need_register = self._need_ping = not self.observe
                gevent.sleep(backoff.failure())
                continue
            backoff.reset()
            if self._refused:  # Redis refused a command (OOM, ACL...): do not spin on it
                self._refused = False
                gevent.sleep(min(1.0, self.interval))
            self._emit(self.view.tick(time.time()))
            now = time.time()
            deadline = min(self._next_beat, self.view.next_deadline() or self._next_beat)
            if self._answer_ping:
                deadline = min(deadline, self._answered_at + self._ping_gap)
            self._wake.clear()
            if not (self._need_register or self._need_full):
                self._wake.wait(max(0.0, deadline - now) + 0.001)

    def _step(self):
        """One round: register or heartbeat, reconcile if due, ping if needed."""
        now = time.time()
        lay, key = self.layout, self.key
        beat_due = now >= self._next_beat
        # Pings are answered at once, but at most once per _ping_gap: when many
        # nodes start together, one registration answers all their pings.
        answer = self._answer_ping and now >= self._answered_at + self._ping_gap
        register = self._need_register or answer
        full = self._need_full
        if not (register or beat_due or full):
            return
        meta = dict(self._meta)
        cmds = []
        if self.observe:
            pass
        elif register:
            if self._clobber:  # our key holds a non-hash someone else wrote
                cmds.append(["DEL", key])
            gone = self._published - meta.keys()
            if gone:
                cmds.append(["HDEL", key, *gone])
            cmds += [
                ["HSET", key, *[x for kv in meta.items() for x in kv]],
                ["PEXPIRE", key, int(self.ttl * 1000)],
                ["ZADD", lay.index, now, self.name],
            ]
            if meta != self._announced:
                cmds.append(["PUBLISH", lay.channel, lay.message("update", self.name, meta)])
            cmds.append(["PUBLISH", lay.channel, lay.message("register", self.name)])
        else:
            cmds += [["PEXPIRE", key, int(self.ttl * 1000)], ["ZADD", lay.index, now, self.name]]
        idx = None
        if beat_due or full:
            idx = len(cmds)
            cmds.append(["ZRANGE", lay.index, 0, -1, "WITHSCORES"])
        if self._trim is not None:
            cmds.append(["ZREMRANGEBYSCORE", lay.index, "-inf", f"({self._trim}"])
        answered = register and self._answer_ping  # any registration answers pending pings
        if register:
            self._need_register = self._answer_ping = False
            self._answered_at = now if answered else self._answered_at
        try:
            replies = self._batch(cmds)
        except RedisError:
            self._need_register = True
            raise
        if self.view.stale:
            log.warning("grid %s: Redis is back; re-registering", self.name)
            self.view.recover(time.time())
        if not self.observe:
            self.view.touch_self(now)
        self._trim = None
        self._clobber = False
        for command, reply in zip(cmds, replies):
            if isinstance(reply, ReplyError):
                self._refused = True
                self.stats["errors"] += 1
                log.warning("grid %s: %s failed: %s", self.name, command[0], reply)
                if command[0] == "HSET":
                    self._clobber = self._need_register = True
        if self.observe:
            pass
        elif register:
            if not self._need_register:
                self._announced, self._published = meta, set(meta)
            self.stats["pings_answered"] += answered
        elif replies[0] == 0:  # PEXPIRE on a missing key: Redis lost it; register again
            self._need_register = True
        if idx is not None:
            self._next_beat = now + self.interval
            self._reconcile(replies[idx], full)
        if self._need_ping:
            self._batch([["PUBLISH", lay.channel, lay.message("ping")]])
            self._need_ping = False
        self._ready.set()

    def _reconcile(self, reply, full):
        self._need_full = False
        try:
            entries, bad = self.layout.parse_index(reply)
        except GridDataError as e:
            self.view.bad_data("index", e)
            return
        self.view.counters["bad_data"] += bad
        fetch, self._trim = self.view.reconcile(entries, time.time(), full=full)
        try:
            self._fetch(fetch, entries)
        except RedisError:
            self._need_full = True
            raise

    # -- the listener greenlet ------------------------------------------------

    def _listen(self):
        backoff = Backoff(0.05, min(2.0, self.interval))
        while self._sub is None:
            try:
                self._sub = self.redis.subscribe(self.layout.channel)
            except RedisError as e:
                log.debug("grid %s: subscribe failed (%s); retrying", self.name, e)
                gevent.sleep(backoff.failure())
        sub = self._sub
        self._subscribed.set()
        if self._ready.is_set():  # the writer went ahead without us: catch up on what we missed
            self._need_full = True
            self._need_ping = not self.observe
            self._wake.set()
        while True:
            message = sub.get()
            if message is None:
                return  # closed
            batch = [message]
            while len(batch) < 1000:  # take what is already queued: one fetch round trip for all
                more = sub.get(timeout=0)
                if more is None:
                    break
                batch.append(more)
            try:
                self._handle(batch)
            except RedisError as e:
                # The fetch failed: the writer notices too; reconcile all when back.
                log.debug("grid %s: fetch failed (%s)", self.name, e)
                self._need_full = True
                self._wake.set()
            except Exception:
                log.exception(
                    "grid %s: could not handle %d message(s); reconciling instead", self.name, len(batch)
                )
                self._need_full = True
                self._wake.set()

    def _handle(self, batch):
        now = time.time()
        fetch, events = [], []
        for kind, _channel, data in batch:
            if kind == b"gap":  # messages were lost: re-register, reconcile all, ping
                self._need_full = True
                self._need_register = self._need_ping = not self.observe
                self._wake.set()
                continue
            try:
                what, name, meta = self.layout.parse_message(data)
            except GridDataError as e:
                self.view.bad_data("message", e)
                continue
            if what == "ping":
                self._answer_ping = not self.observe
                self._wake.set()
                continue
            evs, need = self.view.on_message(what, name, now, meta)
            events += evs
            if need and name not in fetch:
                fetch.append(name)
            elif what in ("leave", "update") and name in fetch:
                fetch.remove(name)
        self._emit(events)
        self._fetch(fetch)
