"""Pub/sub on a Redis Cluster, and the one place the tools ask which pub/sub to use.

``ShardedSubscription`` (``Cluster.ssubscribe``): sharded channels (SSUBSCRIBE), one
connection per primary owning one of them, each a ``Subscription`` of
``greenredis.client.pubsub`` speaking the sharded verbs. It yields
``(b"smessage", channel, data)``, and ``(b"gap", None, None)`` after a connection
was lost or a slot moved: it then resubscribes each channel on its slot's owner
(found from the slot map, or from the ``-MOVED`` of a node that lost it) before
yielding anything heard on the new connection.

``ClusterSubscription`` (``Cluster.subscribe``/``psubscribe``): classic pub/sub.
A cluster relays every PUBLISH to every node, so this is a ``Subscription`` on one
node, which moves to another node when its own cannot be reached.

``is_cluster``, ``publish_verb`` and ``subscribe_channels`` let Grid, Stats,
CappedLog and Tempo use sharded channels on a cluster (a channel then lives in the
slot of its keys) and classic ones on a single server.
"""

from __future__ import annotations

import logging
import os
import random
import weakref
from collections import deque
from time import monotonic

import gevent
from gevent.event import Event
from gevent.lock import RLock

from greenredis.backoff import reconnect
from greenredis.client.cluster_pubsub_routes import Routes, plan_shards
from greenredis.client.connection import pack
from greenredis.client.pubsub import GAP, Message, Subscription
from greenredis.client.slots import key_bytes, key_slot
from greenredis.errors import ConnectionError, MovedError, RedisError, ReplyError

__all__ = [
    "ShardedSubscription",
    "ClusterSubscription",
    "is_cluster",
    "publish_verb",
    "subscribe_channels",
    "MESSAGE_KINDS",
]

log = logging.getLogger("greenredis.client.pubsub")

#: the kinds of a message published on a channel: classic and sharded
MESSAGE_KINDS = (b"message", b"smessage")


def is_cluster(client) -> bool:
    """Whether ``client`` is a ``greenredis.Cluster`` (else a single server's client)."""
    try:
        from greenredis.client.cluster import Cluster
    except ImportError:  # pragma: no cover - a build without the cluster client
        return False
    return isinstance(client, Cluster)


def publish_verb(client) -> str:
    """``"SPUBLISH"`` on a cluster (the channel lives in its slot, beside its keys:
    one MULTI may hold both), ``"PUBLISH"`` on a single server."""
    return "SPUBLISH" if is_cluster(client) else "PUBLISH"


def subscribe_channels(client, *channels, maxsize=10000):
    """A subscription to channels that ``publish_verb(client)`` publishes on: sharded
    on a cluster, classic on a single server. Both have ``subscribe``/``unsubscribe``,
    ``channels``, ``get``, iteration and ``close``; messages are ``MESSAGE_KINDS``."""
    if is_cluster(client):
        return client.ssubscribe(*channels, maxsize=maxsize)
    return client.subscribe(*channels, maxsize=maxsize)


def _encode(names):
    # as pack() sends them: an int is its decimal text, not bytes(n) (n NUL bytes)
    return [key_bytes(n) for n in names]


class _Nodes:
    """What a cluster subscription needs of its ``Cluster``, in one place."""

    def __init__(self, cluster):
        self.cluster = cluster

    @property
    def closed(self):
        return self.cluster.closed

    def check_thread(self):
        for client in list(self.cluster._clients.values())[:1]:  # they all belong to the cluster's thread
            client._check_thread()

    def slot_of(self, channel):
        return key_slot(channel)

    def owner_of_slot(self, slot):
        return self.cluster.slot_map().owners[slot]

    def primaries(self):
        return self.cluster.slot_map().primaries()

    def moved(self, error):
        self.cluster._moved(error)  # the client's map learns it too

    def refresh(self):
        """Read the slot map again now (RedisError if no node answers in time)."""
        outcome = self.cluster._wait_refresh(monotonic() + self.cluster.params.connect_timeout)
        if isinstance(outcome, BaseException):
            raise type(outcome)(*outcome.args)

    def redis(self, address):
        """The cluster's client of the node at ``address`` (its credentials, TLS): a
        subscription opens connections of its own through it."""
        return self.cluster.node_client(address)


class _Shard(Subscription):
    """One node's share of a ``ShardedSubscription``: SSUBSCRIBE on a connection of its
    own. It does not reconnect by itself and keeps no queue: its messages, and the loss
    of its connection or of a channel (a slot moved away), go to its parent."""

    def __init__(self, parent, redis, address):
        self.parent = parent
        self.address = address
        self._unsubscribing = {}  # channel -> SUNSUBSCRIBEs sent and not yet confirmed
        self._lost_channels = []  # taken from us by the server (the slot moved)
        super().__init__(redis, maxsize=parent.maxsize)

    def __str__(self):
        return f"shard {self.address[0]}:{self.address[1]} of {self.parent}"

    def _setup_commands(self, resubscribe=False):
        return ()  # the parent subscribes each channel itself

    def _on_close(self, conn, exc):
        if self.closed or conn is not self._conn:
            return
        while self._confirmations:  # their PINGs died with the connection: wake the waiters
            self._confirmations.popleft().set()
        self.parent._shard_lost(self, exc)

    def _confirm(self, timeout, raise_refused=True):
        super()._confirm(timeout, raise_refused)
        if self._conn.error is not None:
            raise ConnectionError(f"{self} lost its connection: {self._conn.error}")

    def _put(self, item):
        if self._holding is not None:
            self._holding.append(item)
        else:
            self.parent._deliver(self, item)

    def add(self, channels, timeout):
        """SSUBSCRIBE each channel (one command each: a refusal names its channel) in one
        round trip; returns ``[(channel, error)]`` for those Redis refused."""
        self._refused_names = []
        self._resubscribing.clear()
        for channel in channels:
            self.channels.add(channel)
            self._resubscribing.append(("SSUBSCRIBE", channel))
            self._conn.send(pack(["SSUBSCRIBE", channel]))
        self._confirm(timeout, raise_refused=False)
        refused, self._refused_names = self._refused_names, []
        self._resubscribing.clear()
        for _verb, channel, _error in refused:
            self.channels.discard(channel)
        return [(channel, error) for _verb, channel, error in refused]

    def remove(self, channels, timeout):
        """SUNSUBSCRIBE each channel (one command each: channels of two slots in one
        would be CROSSSLOT) in one round trip."""
        for channel in channels:
            self.channels.discard(channel)
            self._unsubscribing[channel] = self._unsubscribing.get(channel, 0) + 1
            self._conn.send(pack(["SUNSUBSCRIBE", channel]))
        self._confirm(timeout, raise_refused=False)

    def _on_reply(self, reply):
        kind = reply[0] if reply.__class__ is list else None
        if kind == b"smessage":
            self._put(Message(kind, reply[1], reply[2]))
        elif kind == b"pong" or reply == b"PONG":
            if self._confirmations:
                self._confirmations.popleft().set()
        elif isinstance(reply, ReplyError):  # -MOVED (not the owner) or -NOPERM
            self._refused = reply
            if self._resubscribing:
                verb, name = self._resubscribing.popleft()
                self._refused_names.append((verb, name, reply))
        elif kind == b"ssubscribe":
            if self._resubscribing:
                self._resubscribing.popleft()
        elif kind == b"sunsubscribe":
            channel = reply[1]
            pending = self._unsubscribing.get(channel, 0)
            if pending > 1:
                self._unsubscribing[channel] = pending - 1
            elif pending == 1:
                del self._unsubscribing[channel]
            elif channel is not None and channel in self.channels:
                # Not asked for: the server dropped it because its slot moved away.
                self.channels.discard(channel)
                self.parent._channel_lost(self, channel)
        else:
            log.warning("%s: unexpected reply %r", self, reply)


class _PubSubShell:
    """The bounded queue, iteration and close of a cluster subscription."""

    def _init_queue(self, maxsize):
        self.maxsize = maxsize
        self.closed = False
        self._queue = deque()
        self._ready = Event()
        self._holding = None  # while resubscribing: what arrives waits for the gap
        _streams.add(self)

    def _put(self, item):
        if self._holding is not None:
            self._holding.append(item)
            return
        self._queue.append(item)
        self._ready.set()

    def get(self, timeout=None):
        """The next message, or None after ``timeout`` seconds (or when closed). Raises
        the ``NoPermissionError`` of a resubscription Redis refused, once."""
        while not self._queue:
            if self.closed:
                return None
            self._nodes.check_thread()
            self._check_alive()
            self._ready.clear()
            if not self._ready.wait(timeout):
                return None
        item = self._queue.popleft()
        self._drained()
        if isinstance(item, RedisError):
            raise item
        return item

    def _check_alive(self):
        pass

    def _drained(self):
        pass

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get()
        if item is None:
            raise StopIteration
        return item

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShardedSubscription(_PubSubShell):
    """Sharded channels of a cluster (``Cluster.ssubscribe``); iterate it in a greenlet.

    ``ssubscribe``/``sunsubscribe`` return once every node concerned has confirmed, so
    a message published after they return is delivered. ``subscribe``/``unsubscribe``
    are the same calls (every channel here is a sharded one), so code written for a
    ``Subscription`` runs on either. After a connection is lost or a slot moves away
    from the node a channel was subscribed on, every channel is resubscribed on the
    owner of its slot (retrying with backoff while the cluster settles) and the
    iterator yields ``(b"gap", None, None)`` before anything heard since. A channel
    Redis refuses on resubscription (``-NOPERM``) is dropped and its error raised once,
    after the gap. Every ``check_every`` seconds each node is PINGed (one that does not
    answer within ``connect_timeout``, paused or cut off, is left for the slot's new
    owner) and the client's slot map is compared with where the channels are. Up to
    ``maxsize`` messages queue up; past that the sockets are no longer read, so Redis
    buffers (and past its output buffer limit drops: a gap).
    """

    def __init__(self, cluster, channels=(), maxsize=10000, check_every=5.0):
        self._nodes = _Nodes(cluster)
        self.check_every = check_every
        self._routes = Routes(self._nodes.slot_of, self._nodes.owner_of_slot)
        self.channels: set[bytes] = set()
        self._shards: dict = {}  # address -> _Shard
        self._lock = RLock()
        self._resyncer = None
        self._refused: list = []  # (channel, error) refused while resubscribing
        self._paused = False
        self._again = False
        self._warned_at = None
        self._init_queue(maxsize)
        self._watcher = gevent.spawn(_watch, weakref.ref(self)) if check_every else None
        try:
            if channels:
                self.ssubscribe(*channels)
        except BaseException:
            self.close()
            raise

    def __repr__(self):
        return f"<ShardedSubscription channels={len(self.channels)} nodes={sorted(self._shards)}>"

    def __str__(self):
        shown = ", ".join(c.decode(errors="replace") for c in sorted(self.channels)[:3])
        more = ", ..." if len(self.channels) > 3 else ""
        return f"sharded subscription ({shown or 'nothing yet'}{more})"

    @property
    def nodes(self):
        """``{(host, port): {channels subscribed there}}`` now."""
        return {a: set(s.channels) for a, s in self._shards.items()}

    # -- changes -------------------------------------------------------------

    def ssubscribe(self, *channels, timeout=None):
        """Subscribe to sharded channels, each on the primary owning its slot."""
        self._nodes.check_thread()
        names = _encode(channels)
        if not names:
            raise ValueError("SSUBSCRIBE needs at least one channel")
        if self.closed:
            raise ConnectionError("subscription is closed")
        with self._lock:
            self.channels.update(names)
            try:
                refused = self._route(timeout)
            except RedisError:
                self._start_resync(refresh=True)  # they stay wanted: subscribed once the cluster answers
                raise
        if refused:
            shown = ", ".join(c.decode(errors="replace") for c, _ in refused[:5])
            error = refused[0][1]
            raise type(error)(f"SSUBSCRIBE {shown}: {error}") from None

    def sunsubscribe(self, *channels, timeout=None):
        """Unsubscribe from these channels, or from all when none are named."""
        self._nodes.check_thread()
        names = _encode(channels) if channels else set(self.channels)
        if self.closed:
            raise ConnectionError("subscription is closed")
        with self._lock:
            self.channels.difference_update(names)
            for shard in list(self._shards.values()):
                mine = [c for c in names if c in shard.channels]
                if mine and shard._conn is not None and shard._conn.error is None:
                    try:
                        shard.remove(mine, timeout)
                    except ConnectionError:
                        pass  # its connection is gone: so is the subscription there
                if not shard.channels:
                    self._drop_shard(shard)

    subscribe = ssubscribe
    unsubscribe = sunsubscribe

    def _route(self, timeout):
        """Subscribe every channel on its owner, drop it where it no longer belongs.
        Raises RedisError when a node cannot be reached or the map is not settled;
        returns ``[(channel, error)]`` for the channels Redis refused (dropped)."""
        refused = []
        for _attempt in range(4):
            owners, unowned = self._routes.owners(self.channels)
            if unowned:
                raise ConnectionError(
                    f"no node serves the slot of {unowned[0].decode(errors='replace')!r} "
                    f"(slot {self._routes.slot_of(unowned[0])}) now"
                )
            for shard in [s for s in self._shards.values() if s._conn is None or s._conn.error is not None]:
                self._drop_shard(shard)
            plan = plan_shards(owners, {a: s.channels for a, s in self._shards.items()})
            for address in plan.close:
                self._drop_shard(self._shards[address])
            for address, names in plan.unsubscribe.items():
                shard = self._shards[address]
                try:
                    shard.remove(list(names), timeout)
                except RedisError:
                    self._drop_shard(shard)  # no answer: nothing it holds can be trusted
                    raise
            moved = False
            for address, names in plan.subscribe.items():
                shard = self._shards.get(address)
                if shard is None:
                    shard = self._shards[address] = _Shard(self, self._nodes.redis(address), address)
                try:
                    refusals = shard.add(list(names), timeout)
                except RedisError:
                    self._drop_shard(shard)  # not confirmed: it may or may not hear them
                    raise
                for channel, error in refusals:
                    if isinstance(error, MovedError):  # that node no longer owns it: it names who does
                        self._routes.moved(error.slot, error.address)
                        self._nodes.moved(error)
                        moved = True
                    else:
                        refused.append((channel, error))
                        self.channels.discard(channel)
                if not shard.channels:
                    self._drop_shard(shard)
            if not moved:
                return refused
        raise ConnectionError(f"{self}: the cluster keeps redirecting (a slot is moving); retrying")

    def _refresh_map(self):
        try:
            self._nodes.refresh()
            self._routes.forget()
        except RedisError as e:
            log.debug("%s: cannot refresh the slot map (%s)", self, e)

    def _drop_shard(self, shard):
        if self._shards.get(shard.address) is shard:
            del self._shards[shard.address]
        shard.close()

    # -- from the shards -----------------------------------------------------

    def _deliver(self, shard, item):
        if self._shards.get(shard.address) is not shard:
            return  # a shard being replaced
        if item.__class__ is Message and item[0] == b"smessage" and item[1] not in self.channels:
            return  # sent before our SUNSUBSCRIBE reached the node
        self._put(item)
        if len(self._queue) >= self.maxsize:
            self._paused = True
            for s in self._shards.values():
                if not s._paused and not s._confirmations and s._conn is not None:
                    s._paused = True
                    s._conn.pause_reading()  # let Redis hold (or drop) the backlog

    def _drained(self):
        if self._paused and len(self._queue) <= self.maxsize // 2:
            self._paused = False
            for s in self._shards.values():
                if s._paused and s._conn is not None:
                    s._paused = False
                    s._conn.resume_reading()

    def _shard_lost(self, shard, exc):
        if self.closed or self._shards.get(shard.address) is not shard:
            return
        log.warning("%s lost its connection to %s:%s (%s); resubscribing", self, *shard.address, exc)
        self._start_resync(refresh=True)

    def _channel_lost(self, shard, channel):
        if self.closed or self._shards.get(shard.address) is not shard:
            return
        log.info(
            "%s: %s:%s dropped %s (its slot moved); resubscribing on the new owner",
            self,
            *shard.address,
            channel.decode(errors="replace"),
        )
        self._start_resync(refresh=True)

    def _check_alive(self):
        if self._resyncer is None and any(
            s._conn is None or s._conn.error is not None for s in self._shards.values()
        ):
            self._start_resync(refresh=False)  # e.g. in a forked child: the sockets are the parent's

    # -- resubscribing -------------------------------------------------------

    def _start_resync(self, refresh):
        if self.closed:
            return
        self._again = True  # a resync under way looks again before it announces the gap
        if self._resyncer is None:
            if self._holding is None:
                self._holding = []
            self._resyncer = gevent.spawn(self._resync, refresh)

    def _resync(self, refresh):
        backoff = reconnect()
        refused = []
        try:
            while not self.closed:
                if self._nodes.closed:  # nothing to reconnect with: end the iteration
                    self.close()
                    return
                if refresh:
                    self._refresh_map()
                refresh = True
                self._again = False
                try:
                    with self._lock:
                        refused += self._route(None)
                except RedisError as e:
                    delay = backoff.failure()
                    self._warn_failure(e, backoff.failures, delay)
                    gevent.sleep(delay)
                    continue
                if self._again:  # lost another connection or channel meanwhile
                    continue
                if self._warned_at is not None:
                    log.warning("%s resubscribed after %d failed attempts", self, backoff.failures)
                    self._warned_at = None
                held, self._holding = self._holding or [], None
                self._put(GAP)
                for item in held:
                    self._put(item)
                if refused:
                    self._report_refused(refused)
                return
        finally:
            self._resyncer = None
            self._holding = None
            if self.closed:  # close() ran meanwhile: it could not close a shard made after it
                for shard in list(self._shards.values()):
                    shard.close()
                self._shards.clear()

    def _warn_failure(self, error, failures, delay):
        now = gevent.get_hub().loop.now()
        if self._warned_at is None or now - self._warned_at >= 30.0:
            self._warned_at = now
            log.warning(
                "%s cannot resubscribe (%d attempts so far): %s; retrying in %.2fs",
                self,
                failures,
                error,
                delay,
            )
        else:
            log.debug("%s: resubscribe attempt %d failed: %s", self, failures, error)

    def _report_refused(self, refused):
        shown = ", ".join(f"SSUBSCRIBE {c.decode(errors='replace')}" for c, _ in refused[:5])
        first = refused[0][1]
        log.warning("%s: Redis refused the resubscription: %s: %s", self, shown, first)
        self._put(type(first)(f"resubscribing after a reconnect or a slot move: {shown}: {first}"))

    def _check(self):
        """PING every node (a paused or silently dead one answers nothing: its channels
        move on), and look whether the client's slot map has a channel elsewhere now."""
        if self._resyncer is not None or self._paused or not self._lock.acquire(blocking=False):
            return
        try:
            owners, _ = self._routes.owners(self.channels)
            if any(owners.get(c) != a for a, s in self._shards.items() for c in s.channels):
                self._start_resync(refresh=False)
                return
            for shard in list(self._shards.values()):
                try:
                    shard._confirm(self._nodes.cluster.params.connect_timeout, raise_refused=False)
                except ConnectionError as e:
                    log.warning("%s: %s:%s does not answer (%s); resubscribing", self, *shard.address, e)
                    self._drop_shard(shard)
                    self._start_resync(refresh=True)
                    return
        except RedisError as e:  # no slot map now: the next check will tell
            log.debug("%s: check failed: %s", self, e)
        finally:
            self._lock.release()

    def close(self):
        """Close every connection and end iteration."""
        self.closed = True
        if self._resyncer is not None:
            self._resyncer.kill(block=False)
        if self._watcher is not None:
            self._watcher.kill(block=False)
        for shard in list(self._shards.values()):
            shard.close()
        self._shards.clear()
        self._ready.set()


def _watch(ref):
    """Check a subscription every ``check_every`` seconds while it lives (a weak
    reference: a subscription dropped without ``close`` is not kept alive by this)."""
    while True:
        sub = ref()
        if sub is None or sub.closed:
            return
        every = sub.check_every
        del sub
        gevent.sleep(every)
        sub = ref()
        if sub is None or sub.closed:
            return
        sub._check()
        del sub


class _AnyNode:
    """The ``redis`` of a ``ClusterSubscription``: opens its connection on the node it
    last used, else on another primary of the cluster."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.address = None
        self.suspect = None  # a node that stopped answering: tried last

    @property
    def params(self):
        address = self.address
        if address is None:
            primaries = self.nodes.primaries()
            address = primaries[0] if primaries else ("?", 0)
        return self.nodes.redis(address).params

    @property
    def closed(self):
        return self.nodes.closed

    def _check_thread(self):
        self.nodes.check_thread()

    def _open(self, on_push=None, blocking=False, backoff=False):
        others = [a for a in self.nodes.primaries() if a != self.address]
        random.shuffle(others)
        candidates = ([self.address] if self.address is not None else []) + others
        if self.suspect in candidates:
            candidates.remove(self.suspect)
            candidates.append(self.suspect)
        error = ConnectionError("the cluster has no known node")
        for address in candidates:
            try:
                conn = self.nodes.redis(address)._open(on_push=on_push, blocking=blocking, backoff=False)
            except ConnectionError as e:
                error = e
                continue
            if address != self.address and self.address is not None:
                log.info("classic subscription moves from %s:%s to %s:%s", *self.address, *address)
            self.address = address
            return conn
        raise error


class ClusterSubscription(Subscription):
    """Classic channels and patterns on a cluster (``Cluster.subscribe``/``psubscribe``).

    The cluster relays every PUBLISH to every node, so one connection to any node hears
    them all; when that node cannot be reached, or does not answer a PING within
    ``connect_timeout`` (checked every ``check_every`` seconds: a paused node), the
    subscription reconnects to another (with the usual ``(b"gap", None, None)``)."""

    def __init__(self, cluster, channels=(), patterns=(), maxsize=10000, check_every=5.0):
        self._nodes = _Nodes(cluster)
        self.check_every = check_every
        super().__init__(_AnyNode(self._nodes), channels=channels, patterns=patterns, maxsize=maxsize)
        self._watcher = gevent.spawn(_watch, weakref.ref(self)) if check_every else None

    def __repr__(self):
        return "<Cluster" + super().__repr__()[1:]

    @property
    def address(self):
        """The node this subscription listens on now."""
        return self.redis.address

    def _check(self):
        conn = self._conn
        if self._reconnecting or self._paused or conn is None or conn.error is not None:
            return
        event = Event()  # a PING of our own: a caller's confirmation (and refusal) is left alone
        self._confirmations.append(event)
        try:
            conn.send(self._ping)
            self._await(event, None)
        except ConnectionError as e:
            if conn is self._conn and conn.error is None:
                log.warning("%s: the node does not answer (%s); moving to another", self, e)
                self.redis.suspect = self.redis.address
                conn.close()  # reconnects elsewhere, with a gap

    def _warn_failure(self, error, failures, delay):
        self.redis.suspect = self.redis.address  # this one did not take us back: try others first
        super()._warn_failure(error, failures, delay)

    def close(self):
        super().close()
        if getattr(self, "_watcher", None) is not None:
            self._watcher.kill(block=False)


_streams: weakref.WeakSet[_PubSubShell] = weakref.WeakSet()


def _after_fork_in_child():
    for stream in list(_streams):
        if not stream.closed:
            stream._ready.set()


os.register_at_fork(after_in_child=_after_fork_in_child)
