"""Capped log collections in Redis: a list trimmed to its newest lines, and live follow.

``CappedLog`` appends with LPUSH + LTRIM + PUBLISH (SPUBLISH on a cluster) in one MULTI/EXEC batch, reads
the newest lines with ``tail`` and follows new lines over pub/sub.
``RedisLogHandler`` sends ``logging`` records to one without ever blocking the caller.
Key and channel names for instances are in ``greenredis.telemetry.names``.
"""

import collections
import logging
import uuid

import gevent
import gevent.event

from greenredis.backoff import Backoff
from greenredis.client.cluster_pubsub import MESSAGE_KINDS, publish_verb, subscribe_channels
from greenredis.errors import RedisError, ReplyError
from greenredis.telemetry import names
from greenredis.telemetry.loglines import MAX_LINE, FollowJoin, is_mark, truncate_line
from greenredis.telemetry.stats import as_client

__all__ = ["CappedLog", "RedisLogHandler"]


def _text(raw):
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


class CappedLog:
    """A log kept in the Redis list ``key``, newest first, trimmed to ``cap`` lines.

    New lines are also published on ``names.log_channel(key)`` (the key's own
    name) so ``follow`` and Tempo see them live; ``publish=False`` turns that off.
    A line longer than ``max_line`` bytes (UTF-8) is cut to that, ending in
    ``" [... N bytes truncated]"``.
    """

    def __init__(self, redis, key, cap=1000, publish=True, max_line=MAX_LINE):
        if not isinstance(cap, int) or cap < 1:
            raise ValueError(f"cap must be a positive int, not {cap!r}")
        if not isinstance(max_line, int) or max_line < 64:
            raise ValueError(f"max_line must be an int of at least 64, not {max_line!r}")
        self.max_line = max_line
        self.redis = as_client(redis)
        self.key = key
        self.cap = cap
        self.channel = names.log_channel(key)
        self.publish = publish
        # On a cluster the channel is a sharded one: it lives in the key's slot, so the
        # MULTI of an append (LPUSH, LTRIM, SPUBLISH) stays on one node.
        self._publish = publish_verb(self.redis)  # the client, not a URL it was made from

    @classmethod
    def for_instance(cls, redis, instance, cap=1000):
        """The log Tempo shows for ``instance`` (key ``logs:{<instance>}``)."""
        return cls(redis, names.log_key(instance), cap=cap)

    def append(self, *lines, timeout=None):
        """Append lines (str) in one round trip: LPUSH, LTRIM, PUBLISH each, atomically.

        Returns the list's length after trimming. The MULTI/EXEC makes every line
        either part of a ``follow`` backlog or one of its live lines, never both.
        ``timeout``: seconds to wait for Redis (default: the client's).
        """
        if not lines:
            return None
        for line in lines:
            if not isinstance(line, str):
                raise TypeError(f"log lines are str, not {type(line).__name__}")
            if line.startswith(names.FOLLOW_MARK):
                raise ValueError("a log line cannot start with the follow marker")
        lines = tuple(truncate_line(line, self.max_line) for line in lines)
        batch = [["LPUSH", self.key, *lines], ["LTRIM", self.key, 0, self.cap - 1]]
        if self.publish:
            batch += [[self._publish, self.channel, line] for line in lines]
        replies = (
            self.redis.transaction(batch)
            if timeout is None
            else self.redis.transaction(batch, timeout=timeout)
        )
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        return min(replies[0], self.cap)

    def tail(self, n=None):
        """The newest ``n`` lines (default: all), newest last."""
        if n is not None and n <= 0:
            return []
        stop = -1 if n is None else max(int(n), 1) - 1
        return [_text(x) for x in reversed(self.redis.cmd(["LRANGE", self.key, 0, stop]))]

    def __len__(self):
        return self.redis.cmd(["LLEN", self.key])

    def clear(self):
        """Delete the log."""
        self.redis.cmd(["DEL", self.key])

    def _backlog_and_mark(self, n):
        # The marker is published in the same MULTI/EXEC as the LRANGE: every
        # append lands wholly before (in the backlog, published before the
        # marker) or wholly after (published after the marker).
        mark = names.FOLLOW_MARK + uuid.uuid4().hex
        stop = -1 if n is None else max(int(n), 1) - 1
        lines, _ = self.redis.transaction(
            [["LRANGE", self.key, 0, stop], [self._publish, self.channel, mark]]
        )
        return [_text(x) for x in reversed(lines)], mark.encode()

    def follow(self, backlog=None, timeout=None):
        """Yield the newest ``backlog`` lines (default: all kept), then live lines.

        No line is yielded twice or skipped while connected. If the pub/sub
        connection drops, follow resubscribes and resumes after the last line it
        yielded as found in the backlog (lines trimmed meanwhile are lost).
        ``timeout``: stop after that many seconds without a line (default: never).
        """
        sub = subscribe_channels(self.redis, self.channel)
        recent = collections.deque(maxlen=20)
        try:
            lines, join = self._join(backlog)
            for line in lines:
                recent.append(line)
                yield line
            while True:
                msg = sub.get(timeout=timeout) if timeout is not None else next(iter(sub))
                if msg is None:
                    return
                kind, _channel, data = msg
                if kind == b"gap":
                    # The marker must not beat the resubscription to Redis: confirm
                    # it (a round trip on the subscription's connection) first.
                    sub.subscribe(self.channel)
                    lines, join = self._join(None)
                    for line in _after(lines, list(recent)):
                        recent.append(line)
                        yield line
                    continue
                if kind not in MESSAGE_KINDS:
                    continue
                if is_mark(data):
                    join.marker(data)
                    continue
                for line in join.line(_text(data)):
                    recent.append(line)
                    yield line
        finally:
            sub.close()

    def _join(self, n):
        # the backlog is read before any live line: the join never holds one
        lines, mark = self._backlog_and_mark(n)
        join: FollowJoin[str] = FollowJoin(mark)
        join.backlog_done()
        return lines, join


def _after(lines, recent):
    """The part of ``lines`` after its longest overlap with the end of ``recent``."""
    for k in range(min(len(recent), len(lines)), 0, -1):
        tail = recent[-k:]
        for i in range(len(lines) - k, -1, -1):
            if lines[i : i + k] == tail:
                return lines[i + k :]
    return lines


class RedisLogHandler(logging.Handler):
    """A ``logging`` handler that appends formatted records to a ``CappedLog``.

    ``emit`` never blocks and never raises: it puts the line (cut to
    ``max_line`` bytes) in a bounded buffer (``maxsize`` lines) drained by a
    greenlet in batches of up to ``batch`` lines, one round trip each (given up
    after ``timeout`` seconds). After a failure the drainer retries with
    backoff; a batch whose fate is unknown (a timeout, a connection lost after
    the write) is looked up in the list first, so it is neither doubled nor
    counted lost when Redis did apply it. ``dropped`` counts only lines known
    lost (a full buffer, or still buffered at ``close``); the next successful
    write then starts with one line ``"N log lines lost"`` so a reader sees the
    hole. ``sent`` counts delivered lines; ``uncertain`` lines whose fate was
    never learned (pending at ``close``). Records the drainer itself causes (the
    client logging its reconnects) are not sent. Thread-safe: ``emit`` from any
    thread wakes the drainer of the creating thread.
    """

    def __init__(
        self,
        redis,
        key,
        cap=1000,
        maxsize=10000,
        batch=100,
        timeout=5.0,
        level=logging.NOTSET,
        max_line=MAX_LINE,
    ):
        super().__init__(level)
        self.timeout = timeout
        self.log = CappedLog(redis, key, cap=cap, max_line=max_line)
        self.maxsize = maxsize
        self.batch = batch
        self.dropped = 0
        self.sent = 0
        self.uncertain = 0
        self._lost_unreported = 0
        self._pending = None  # (batch, its log lines, the loss it reports): outcome unknown
        self._buf = collections.deque()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._wake = gevent.event.Event()
        hub = gevent.get_hub()
        self._async = hub.loop.async_()  # thread-safe wake-up of this hub
        self._async.ref = False  # a waiting handler must not keep the loop alive
        self._async.start(self._wake.set)
        self._closed = False
        self._drainer = gevent.spawn(self._drain)

    def emit(self, record):
        if gevent.getcurrent() is self._drainer or self._closed:
            return
        try:
            line = self.format(record)
            if line.startswith(names.FOLLOW_MARK):
                line = line.replace("\x00", "\\x00", 1)
            if len(self._buf) >= self.maxsize:
                self._lose(1)
                return
            self._buf.append(truncate_line(line, self.log.max_line))
            self._idle.clear()
            self._async.send()
        except Exception:
            self.handleError(record)

    def _lose(self, n):
        self.dropped += n
        self._lost_unreported += n

    def _landed(self, lines):
        """Whether a batch of uncertain fate is in the list (its newest line is)."""
        return self.log.redis.cmd(["LPOS", self.log.key, lines[-1]], timeout=self.timeout) is not None

    def _drain(self):
        backoff = Backoff(0.05, 5.0)
        while True:
            if self._pending is not None:
                batch, lines, lost = self._pending
                try:
                    landed = self._landed(batch)
                except ReplyError:  # no LPOS (Redis < 6.0.6): its fate stays unknown; never doubled
                    self._pending = None
                    self.uncertain += len(lines)
                    continue
                except (RedisError, OSError):
                    if self._closed:
                        return
                    gevent.sleep(backoff.failure())
                    continue
                self._pending = None
                if landed:
                    self.sent += len(lines)
                    backoff.reset()
                else:  # never applied: send again (with the note, if it had one)
                    self._lost_unreported += lost
                    self._buf.extendleft(reversed(lines))
                continue
            if not self._buf:
                self._idle.set()
                if self._closed:
                    return
                self._wake.wait()
                self._wake.clear()
                continue
            lines = []
            while self._buf and len(lines) < self.batch:
                lines.append(self._buf.popleft())
            lost = self._lost_unreported
            batch = [f"{lost} log lines lost", *lines] if lost else lines
            try:
                self.log.append(*batch, timeout=self.timeout)
            except ReplyError:  # refused (wrong type, ACL): these lines are known lost
                self._lose(len(lines))
                if self._closed:
                    self._lose(len(self._buf))
                    self._buf.clear()
                    continue
                gevent.sleep(backoff.failure())
            except (RedisError, OSError):
                self._pending = (batch, lines, lost)  # perhaps applied: look before sending again
                self._lost_unreported -= lost
                if not self._closed:
                    gevent.sleep(backoff.failure())
            else:
                self._lost_unreported -= lost
                self.sent += len(lines)
                backoff.reset()

    def flush(self, timeout=5.0):
        """Wait up to ``timeout`` seconds until the buffer is sent (or dropped). A closed
        (or closing) handler returns at once: ``logging.shutdown`` at exit must not wait
        on a Redis that is down."""
        if not self._closed and gevent.getcurrent() is not self._drainer:
            self._idle.wait(timeout)

    def close(self, timeout=5.0):
        """Send what is buffered (waiting up to ``timeout``), then stop the drainer."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._drainer.join(timeout)
            self._drainer.kill(block=False)
            self.dropped += len(self._buf)
            self._buf.clear()
            if self._pending is not None:
                self.uncertain += len(self._pending[1])
                self._pending = None
            self._async.stop()
        super().close()
