"""``Grid``: automatic node discovery and a health registry through Redis.

Each node keeps a hash ``redgrid:<domain>:<version>:<node>`` (``ip`` and its
meta) alive with a TTL, announces itself on the channel
``redgrid:<domain>:<version>`` and learns its peers from it, like the original
Erlang redgrid. An index (sorted set by last heartbeat) lets every node
reconcile its view once per interval and after every reconnect, so a lost
message heals by itself; peers that stop heartbeating expire from the view.
The layout and the messages are described in ``greenredis.grid.view``; what
to send each round and what the replies mean is ``greenredis.grid.heartbeat``.
This module is the gevent shell around them: one greenlet writes (sends the
heartbeat's plans, fetches), one listens.
"""

import logging
import os
import socket as _stdsocket
import time
from typing import Any, Dict

import gevent
from gevent import socket
from gevent.event import Event
from gevent.queue import Full, Queue

from greenredis.backoff import Backoff
from greenredis.client.cluster_pubsub import is_cluster, subscribe_channels
from greenredis.client.redis import Redis
from greenredis.errors import NoPermissionError, RedisError
from greenredis.grid.heartbeat import Fetch, Heartbeat, Resubscribe
from greenredis.grid.view import GridView, Layout, clean_meta, valid_name

__all__ = ["Grid", "default_name"]

log = logging.getLogger("greenredis.grid")

_STOP = object()
_READS = 4  # reads of one registration at most in _fetch: one overtaken by a message is sent again


def _elapsed():
    """A clock that no one steps. Linux's CLOCK_BOOTTIME also runs while the machine
    sleeps (CLOCK_MONOTONIC does not), so a resumed laptop is not taken for a step
    of the wall clock (elsewhere it is: peers gone meanwhile expire ttl late)."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def default_name():
    """Heroku's ``$DYNO`` when set, else ``hostname:pid``."""
    return os.environ.get("DYNO") or f"{_stdsocket.gethostname()}:{os.getpid()}"


def _routed_ip(redis):
    """The local address of the interface that routes to Redis (no packet is sent);
    for a Sentinel client, to its first sentinel (the master is not known before a
    question, and lives on the same network); for a Cluster, to its first startup node."""
    params = redis.params
    if params.unix_socket_path:
        return "127.0.0.1"
    sentinel = getattr(redis, "sentinel", None)
    if sentinel is not None:
        host, port = sentinel.view.sentinels[0]
    elif is_cluster(redis):
        host, port = redis.startup_nodes[0]
    else:
        host, port = params.host, params.port
    try:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        with socket.socket(info[0], socket.SOCK_DGRAM) as s:
            s.connect(info[4])
            return s.getsockname()[0]
    except OSError as e:
        log.warning("grid: cannot find the address routing to %s:%s (%s); using 127.0.0.1", host, port, e)
        return "127.0.0.1"


class Grid:
    """One node of a grid: registers itself, discovers its peers, tracks their health.

    ``Grid(redis=None, name=None, meta=None, ttl=60, interval=10, domain=None,
    version=None, ip=None, timeout=None)``. ``redis`` is a URL (default
    ``$REDIS_URL``) or a ``greenredis.Redis`` (then it is not closed on stop).
    ``name`` defaults to ``$DYNO``, else ``hostname:pid``; ``domain``,
    ``version`` and ``ip`` to ``$DOMAIN``, ``$VERSION`` and ``$LOCAL_IP``, the
    ip then to the address of the interface that routes to Redis. Meta values
    are str, int, float, bool or UTF-8 bytes, stored as str (see
    ``greenredis.grid.view.meta_value``), 64 KiB in all. A node that stops
    heartbeating disappears from its peers' views within ``ttl`` seconds;
    ``ttl`` must exceed ``2 * interval``.

    Callbacks ``on_join``, ``on_leave``, ``on_update`` are called with
    ``(name, meta)``; ``events()`` iterates ``GridEvent``s. ``observe=True``
    watches the grid without joining it (no key, no ping, no leave, no trim). Neither Redis going
    away nor bad data under a grid key stops the grid: it keeps its view, sets
    ``stale`` / ``stale_since`` and retries. ``status`` says whether the node
    hears the channel (an ACL may refuse it) and whether another process uses
    its name.
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
            cluster=is_cluster(self.redis),
        )
        self.key = None if observe else self.layout.key(self.name)
        #: this process's id in the hash and the messages: tells twins (one name, two processes) apart
        self.instance = os.urandom(8).hex()
        meta = clean_meta(dict(meta or {}))
        if not observe:
            ip = ip or os.environ.get("LOCAL_IP") or meta.get("ip") or _routed_ip(self.redis)
            meta = {"ip": str(ip), **{k: v for k, v in meta.items() if k != "ip"}}
        self._meta = meta
        self.ttl, self.interval = float(ttl), float(interval)
        self.view = GridView(self.name, self._meta, ttl, interval, now=time.time())
        self.timeout = timeout or max(1.0, min(self.interval, 5.0))
        self.on_join = self.on_leave = self.on_update = None
        self._hb = Heartbeat(
            self.layout, self.view, self.name, self.instance, self._meta, self.ttl, self.interval, observe
        )
        self.stats = self._hb.stats
        self._channel = "subscribing"
        self._channel_error = None
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
        now = time.time()
        self._hb.clock_step(now, _elapsed())
        return self.view.health(now)

    @property
    def meta(self):
        return dict(self._meta)

    @property
    def status(self) -> Dict[str, Any]:
        """What this node knows about itself (no I/O):

        ``instance``: this process's id; ``ready``: registered and reconciled
        once; ``stale``/``stale_since``: Redis unreachable; ``channel``:
        "subscribing", "subscribed" or "refused" (the ACL user may not
        subscribe: joins and leaves are then only seen by the index, within an
        interval, and by ttl); ``channel_error``: why; ``twins``: ids of other
        processes seen registering under this node's name lately;
        ``clock_offset``: seconds from the local clock to Redis's;
        ``clock_source``: "time" (``TIME``), "key" (TIME refused by the ACL:
        ``PEXPIRETIME`` of our key) or "local" (neither: our own clock).
        """
        return {
            "instance": self.instance,
            "ready": self._ready.is_set(),
            "stale": self.view.stale,
            "stale_since": self.view.stale_since,
            "channel": self._channel,
            "channel_error": self._channel_error,
            "twins": sorted(self._hb.live_twins(time.time())),
            "clock_offset": self._hb.clock.offset,
            "clock_source": self._hb.clock.source,
        }

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
        new = clean_meta(new)
        if new == self._meta:
            return
        self._meta = new
        self._emit(self.view.set_self(self._meta, time.time()))  # nodes() includes us: so do events
        self._hb.set_meta(new)
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
                self._batch(self._hb.leave_commands(time.time()), timeout or self.timeout)
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
        """HGETALL the keys of these nodes in one round trip and feed the view. A node
        whose message the listener handled while the read was out is read again (its
        reply may be older than the message); a few times at most, then its messages
        alone tell (a node changing its meta faster than a round trip)."""
        if not names:
            return
        for attempt in range(_READS):
            if attempt:
                self.stats["rereads"] += len(names)
            since = self._hb.heard
            replies = self._batch([["HGETALL", self.layout.key(n)] for n in names])
            self._emit(self._hb.fetched(names, replies, time.time(), scores, since=since))
            names = self._hb.heard_since(since, names)
            if not names:
                return
        log.debug(
            "grid %s: %d registration(s) change faster than a read; their messages tell",
            self._hb.who,
            len(names),
        )

    # -- the writer greenlet --------------------------------------------------

    def _beat(self):
        backoff = Backoff(0.1, min(2.0, self.interval))
        hb = self._hb
        # Listen before registering and reading the index, so nothing falls in between.
        self._subscribed.wait(self.timeout)
        while True:
            try:
                plan = hb.plan(time.time(), _elapsed())
                if plan is not None:
                    replies = self._batch(plan.commands)
                    for action in hb.on_replies(plan, replies, time.time()):
                        if isinstance(action, Fetch):
                            self._fetch(action.names, action.scores)
                        elif isinstance(action, Resubscribe):
                            self._resubscribe()
            except RedisError as e:
                hb.on_error(time.time(), e)
                gevent.sleep(backoff.failure())
                continue
            backoff.reset()
            if hb.ready:
                self._ready.set()
            now = time.time()
            hb.clock_step(now, _elapsed())  # before expiring anyone by that clock
            self._emit(self.view.tick(now))
            self._wake.clear()
            wake = hb.next_wake(now, _elapsed())
            if wake > now:
                self._wake.wait(wake - now + 0.001)

    # -- the listener greenlet ------------------------------------------------

    def _listen(self):
        backoff = Backoff(0.05, min(2.0, self.interval))
        while not self.stopped:
            if self._listen_once():
                backoff.reset()
                continue
            # the subscription ended by itself (its client was closed): a new one, after
            # a pause, so a client that stays closed cannot make this loop spin
            self._sub = None
            gevent.sleep(backoff.failure())

    def _resubscribe(self):
        """Drop the subscription; the listener opens a new one (on the server the
        client reaches now) and, once there, the writer reconciles in full."""
        sub, self._sub = self._sub, None
        if sub is not None:
            self._channel = "subscribing"
            sub.close()

    def _listen_once(self):
        """Subscribe (if need be) and handle messages until the subscription ends; False
        if it ended by itself rather than by ``_resubscribe``."""
        backoff = Backoff(0.05, min(2.0, self.interval))
        while self._sub is None:
            try:
                self._sub = subscribe_channels(self.redis, self.layout.channel)
            except NoPermissionError as e:
                self._refused_channel(e)
                gevent.sleep(_refused_delay(backoff, self.interval))
            except RedisError as e:
                log.debug("grid %s: subscribe failed (%s); retrying", self.name, e)
                gevent.sleep(backoff.failure())
        sub = self._sub
        if self._channel == "refused":
            log.warning(
                "grid %s: may subscribe to %s now; hearing the channel", self.name, self.layout.channel
            )
        self._channel, self._channel_error = "subscribed", None
        self._subscribed.set()
        if self._hb.on_subscribed():
            self._wake.set()
        while True:
            try:
                message = sub.get()
            except NoPermissionError as e:  # an ACL change refused the resubscription
                self._resubscribe()
                self._refused_channel(e)
                gevent.sleep(_refused_delay(backoff, self.interval))
                return True
            if message is None:
                return sub is not self._sub  # True: _resubscribe() closed it (or stop())
            batch = [message]
            while len(batch) < 1000:  # take what is already queued: one fetch round trip for all
                more = sub.get(timeout=0)
                if more is None:
                    break
                batch.append(more)
            try:
                events, fetch, wake = self._hb.on_messages(batch, time.time(), _elapsed())
                if wake:
                    self._wake.set()
                self._emit(events)
                self._fetch(fetch)
            except RedisError as e:
                # The fetch failed: the writer notices too; reconcile all when back.
                log.debug("grid %s: fetch failed (%s)", self.name, e)
                self._hb.ask_full()
                self._wake.set()
            except Exception:
                log.exception(
                    "grid %s: could not handle %d message(s); reconciling instead", self.name, len(batch)
                )
                self._hb.ask_full()
                self._wake.set()

    def _refused_channel(self, err):
        if self._channel != "refused":
            self.stats["errors"] += 1
            user = self.redis.params.username or "default"
            log.warning(
                "grid %s: Redis refused SUBSCRIBE %s (%s): joins and leaves are seen only through "
                "the index (every interval) and ttl; allow the channel in the ACL, e.g. "
                "ACL SETUSER %s '&%s' (or allchannels)",
                self.name or "observer",
                self.layout.channel,
                err,
                user,
                self.layout.channel,
            )
        self._channel, self._channel_error = "refused", str(err)
        self._hb.on_channel_refused()
        self._subscribed.set()  # the writer need not wait for us


def _refused_delay(backoff, interval):
    """Retry a refused subscription slowly: the ACL may change, but not every 50 ms."""
    return max(backoff.failure(), min(interval, 5.0))
