"""Pub/sub and MONITOR, each on a connection of its own.

A ``Subscription`` is an iterator of ``Message`` tuples ``(kind, channel, data)``.
If the connection drops it reconnects with backoff (its own, not the client's),
subscribes again to everything it had, and yields ``(b"gap", None, None)`` before
anything the new connection received: what was published in between is lost, as
Redis pub/sub always loses it. If Redis refuses part of the resubscription (an ACL
changed meanwhile), the iterator raises that ``NoPermissionError`` once, after the
gap, and the refused names are dropped; iterating again goes on. Messages queue up to
``maxsize``; past that the socket is no longer read, so Redis buffers (and,
past its ``client-output-buffer-limit``, drops the connection: a gap).
"""

import logging
import os
import weakref
from collections import deque
from time import monotonic

import gevent
from gevent.event import Event

from greenredis.backoff import reconnect
from greenredis.client.connection import pack
from greenredis.errors import ConnectionError, RedisError, ReplyError

__all__ = ["Subscription", "Monitor", "Message"]

log = logging.getLogger(__name__)

WARN_EVERY = 30.0  # seconds between WARNINGs of a subscription that keeps failing to reconnect


class Message(tuple):
    """``(kind, channel, data)``; kind is ``b"message"``, ``b"pmessage"`` (then
    ``.pattern`` is the pattern that matched) or ``b"gap"``."""

    pattern = None

    def __new__(cls, kind, channel, data, pattern=None):
        message = tuple.__new__(cls, (kind, channel, data))
        if pattern is not None:
            message.pattern = pattern
        return message

    kind = property(lambda self: self[0])
    channel = property(lambda self: self[1])
    data = property(lambda self: self[2])


GAP = Message(b"gap", None, None)


class _PushStream:
    """A connection whose replies are pushed into a bounded local queue, reopened
    after it breaks. Subclasses say what to send on (re)connect and what to keep."""

    def __init__(self, redis, maxsize):
        self.redis = redis
        self.maxsize = maxsize
        self.closed = False
        self._queue = deque()
        self._ready = Event()
        self._conn = None
        self._reconnector = None
        self._confirmations = deque()  # Events set when a PING's reply arrives
        self._paused = False
        self._reconnecting = False
        self._refused = None  # the last error reply (e.g. -NOPERM), raised by the next _confirm
        self._holding = None  # during a reconnect: what arrives before the gap is announced
        self._warned_at = None
        self._connect()
        _streams.add(self)

    # -- connection ----------------------------------------------------------

    def _connect(self, resubscribe=False):
        conn = self.redis._open(on_push=self._on_reply, backoff=False)
        if self.closed:
            # close() ran while the reconnector was connecting: it closed the connection
            # it saw, and its kill lands later, so nobody else would close this one.
            conn.close()
            raise ConnectionError(f"{self} was closed while it reconnected")
        self._conn = conn
        conn.on_close = self._on_close
        self._paused = False
        for command in self._setup_commands(resubscribe):
            self._conn.send(pack(command))

    def _on_close(self, conn, exc):
        if self.closed or conn is not self._conn or self._reconnecting:
            return
        log.warning("%s lost its connection (%s); reconnecting", self, exc)
        self._start_reconnect()

    def _start_reconnect(self):
        self._reconnecting = True
        self._reconnector = gevent.spawn(self._reconnect)

    def _reconnect(self):
        backoff = reconnect()
        try:
            while not self.closed:
                if self.redis.closed:  # nothing to reconnect with: end the iteration
                    self.close()
                    return
                while self._confirmations:  # their PINGs died with the old connection
                    self._confirmations.popleft().set()
                self._holding = []  # anything the new connection hears waits for the gap
                self._refused_names = []
                try:
                    self._connect(resubscribe=True)
                    self._confirm(None, raise_refused=False)  # resubscribed before the gap
                except RedisError as e:
                    self._holding = None
                    if self.closed:
                        return
                    delay = backoff.failure()
                    self._warn_failure(e, backoff.failures, delay)
                    if self._conn is not None:
                        self._conn.close()  # never two connections feeding one queue
                    gevent.sleep(delay)
                    continue
                held, self._holding = self._holding, None
                if self._warned_at is not None:
                    log.warning("%s reconnected after %d failed attempts", self, backoff.failures)
                    self._warned_at = None
                self._put(GAP)
                for item in held:
                    self._put(item)
                self._report_refused()
                return
        finally:
            self._holding = None
            self._reconnecting = False
            if self.closed and self._conn is not None:
                self._conn.close()  # whatever close() could not see: never a subscriber left behind

    def _warn_failure(self, error, failures, delay):
        """One WARNING with the reason when reconnecting starts failing, then one per
        ``WARN_EVERY`` seconds; every attempt at DEBUG."""
        now = monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "%s cannot reconnect (%d attempts so far): %s; retrying in %.2fs",
                self,
                failures,
                error,
                delay,
            )
        else:
            log.debug("%s: reconnect attempt %d failed: %s", self, failures, error)

    def _report_refused(self):
        pass

    def _confirm(self, timeout, raise_refused=True):
        """Wait until the server has handled everything sent so far (a PING round trip)."""
        event = Event()
        self._confirmations.append(event)
        self._conn.send(self._ping)
        self._await(event, timeout)
        refused, self._refused = self._refused, None
        if refused is not None and raise_refused:
            raise refused

    def _await(self, event, timeout):
        if self._paused:  # the reply sits behind unread messages: read on until it comes
            self._paused = False
            self._conn.resume_reading()
        if not event.wait(timeout if timeout is not None else self.redis.params.connect_timeout):
            raise ConnectionError(f"{self}: no confirmation from the server")

    _ping = pack(("PING",))

    # -- incoming ------------------------------------------------------------

    def _on_reply(self, reply):
        raise NotImplementedError

    def _put(self, item):
        if self._holding is not None:
            self._holding.append(item)
            return
        self._queue.append(item)
        self._ready.set()
        if len(self._queue) >= self.maxsize and not self._paused and not self._confirmations:
            self._paused = True
            self._conn.pause_reading()  # let Redis hold (or drop) the backlog

    def _resume_reading(self):
        if self._paused and len(self._queue) <= self.maxsize // 2:
            self._paused = False
            self._conn.resume_reading()

    def get(self, timeout=None):
        """The next item, or None after ``timeout`` seconds (or when closed). Raises the
        ``NoPermissionError`` of a resubscription Redis refused, once."""
        while not self._queue:
            if self.closed:
                return None
            self.redis._check_thread()  # waiting needs the hub of the thread that made it
            conn = self._conn
            if (conn is None or conn.error is not None) and not self._reconnecting:
                self._start_reconnect()  # e.g. in a forked child: the parent's socket is not ours
            self._ready.clear()
            if not self._ready.wait(timeout):
                return None
        item = self._queue.popleft()
        if self._paused:
            self._resume_reading()
        if isinstance(item, RedisError):
            raise item
        return item

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get()
        if item is None:
            raise StopIteration
        return item

    def close(self):
        """Close the connection and end iteration."""
        self.closed = True
        if self._reconnector is not None:
            self._reconnector.kill(block=False)
        if self._conn is not None:
            self._conn.close()
        self._ready.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Subscription(_PushStream):
    """Messages from channels and patterns; made by ``Redis.subscribe``/``psubscribe``.

    ``subscribe``/``psubscribe`` return once Redis has confirmed, so a message
    published after they return is delivered.
    """

    def __init__(self, redis, channels=(), patterns=(), maxsize=10000):
        self.channels = set()
        self.patterns = set()
        self._resubscribing = deque()  # (verb, name) of each resubscription, in order
        self._refused_names = []  # [(verb, name, error)] refused on resubscribe
        try:
            super().__init__(redis, maxsize)
            if channels:
                self.subscribe(*channels)
            if patterns:
                self.psubscribe(*patterns)
        except BaseException:
            self.close()  # a subscription that failed to start leaves no connection behind
            raise

    def __repr__(self):
        def some(names):
            shown = ", ".join(n.decode(errors="replace") for n in sorted(names)[:3])
            return f"{len(names)} ({shown}{', ...' if len(names) > 3 else ''})"

        return (
            f"<Subscription {self.redis.params.address} channels={some(self.channels)} "
            f"patterns={some(self.patterns)}>"
        )

    def __str__(self):  # what log lines say: no internal repr
        names = sorted(self.channels | self.patterns)
        shown = ", ".join(n.decode(errors="replace") for n in names[:3]) + (", ..." if len(names) > 3 else "")
        return f"subscription to {self.redis.params.address} ({shown or 'nothing yet'})"

    def _setup_commands(self, resubscribe=False):
        if not resubscribe:
            if self.channels:
                yield ["SUBSCRIBE", *self.channels]
            if self.patterns:
                yield ["PSUBSCRIBE", *self.patterns]
            return
        # One command per name, so a refusal (ACL) says which name it was about.
        self._resubscribing.clear()
        for verb, names in (("SUBSCRIBE", self.channels), ("PSUBSCRIBE", self.patterns)):
            for name in list(names):
                self._resubscribing.append((verb, name))
                yield [verb, name]

    def _report_refused(self):
        refused, self._refused_names = self._refused_names, []
        self._resubscribing.clear()
        if not refused:
            return
        for verb, name, _ in refused:
            (self.channels if verb == "SUBSCRIBE" else self.patterns).discard(name)
        shown = ", ".join(f"{verb} {name.decode(errors='replace')}" for verb, name, _ in refused[:5])
        first = refused[0][2]
        log.warning("%s: Redis refused the resubscription: %s: %s", self, shown, first)
        self._put(type(first)(f"resubscribing after a reconnect: {shown}: {first}"))

    def _change(self, verb, names, target, add, timeout):
        self.redis._check_thread()  # before anything is changed or sent
        names = [n.encode() if isinstance(n, str) else n for n in names]
        if not names and add:
            raise ValueError(f"{verb} needs at least one name")
        if self.closed:
            raise ConnectionError("subscription is closed")
        (target.update if add else target.difference_update)(names)
        if not names:  # unsubscribe from all
            target.clear()
        if self._conn is None:
            raise ConnectionError(f"{self} is not connected")
        self._conn.send(pack([verb, *names]))  # ConnectionError while it reconnects
        try:
            self._confirm(timeout)
        except ReplyError as e:  # refused (ACL): not subscribed, so not resubscribed later
            if add:
                target.difference_update(names)
            shown = ", ".join(n.decode(errors="replace") for n in names[:5])
            raise type(e)(f"{verb} {shown}: {e}") from None

    def subscribe(self, *channels, timeout=None):
        self._change("SUBSCRIBE", channels, self.channels, True, timeout)

    def unsubscribe(self, *channels, timeout=None):
        """Unsubscribe from these channels, or from all when none are named."""
        self._change("UNSUBSCRIBE", channels, self.channels, False, timeout)

    def psubscribe(self, *patterns, timeout=None):
        self._change("PSUBSCRIBE", patterns, self.patterns, True, timeout)

    def punsubscribe(self, *patterns, timeout=None):
        self._change("PUNSUBSCRIBE", patterns, self.patterns, False, timeout)

    def _on_reply(self, reply):
        kind = reply[0] if reply.__class__ is list else None
        if kind == b"message":
            self._put(Message(kind, reply[1], reply[2]))
        elif kind == b"pmessage":
            self._put(Message(kind, reply[2], reply[3], reply[1]))
        elif kind == b"pong" or reply == b"PONG":
            if self._confirmations:
                self._confirmations.popleft().set()
        elif isinstance(reply, ReplyError):  # a refused (P)SUBSCRIBE: -NOPERM for a channel
            self._refused = reply
            if self._resubscribing:
                verb, name = self._resubscribing.popleft()
                self._refused_names.append((verb, name, reply))
        elif kind in (b"subscribe", b"psubscribe"):
            if self._resubscribing:
                self._resubscribing.popleft()
        elif kind not in (b"unsubscribe", b"punsubscribe"):
            log.warning("%s: unexpected reply %r", self, reply)


class Monitor(_PushStream):
    """MONITOR output, one line (bytes) per command the server runs."""

    def __init__(self, redis, maxsize=10000):
        try:
            super().__init__(redis, maxsize)
            self._confirm(None)
        except BaseException:
            self.close()  # a monitor that failed to start leaves no connection behind
            raise

    def _setup_commands(self, resubscribe=False):
        yield ["MONITOR"]

    def _on_reply(self, reply):
        if reply == b"OK" and self._confirmations:  # MONITOR's own +OK (lines never read "OK")
            self._confirmations.popleft().set()
            return
        self._put(reply)

    def _confirm(self, timeout, raise_refused=True):
        event = Event()  # set by MONITOR's +OK
        self._confirmations.append(event)
        self._await(event, timeout)

    def __repr__(self):
        return f"<Monitor {self.redis.params.address}>"

    def __str__(self):
        return f"monitor of {self.redis.params.address}"


_streams: "weakref.WeakSet[_PushStream]" = weakref.WeakSet()  # for the fork hook


def _after_fork_in_child():
    # A greenlet that was iterating when the process forked waits on _ready in the child
    # too: wake it, so that get() finds the parent's connection abandoned and reconnects.
    for stream in list(_streams):
        if not stream.closed:
            stream._ready.set()


os.register_at_fork(after_in_child=_after_fork_in_child)
