"""Log lines, pure: the cap on one line's length, and the log-follow protocol,
how a reader joins a ``CappedLog`` without losing or repeating a line.

The reader subscribes to the log's channel, then in one MULTI/EXEC reads the
backlog (LRANGE) and publishes a unique marker on the channel. Every append
(LPUSH + PUBLISH in one MULTI/EXEC) lands wholly before the marker (its lines
are in the backlog, so their live copies are skipped) or wholly after it (live
lines to deliver). A live line after the marker that arrives before the backlog
was delivered is held (bounded; the excess is counted in ``lost``) and released
right after it. ``CappedLog.follow`` and Tempo's hub both run this object.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from greenredis.telemetry.names import FOLLOW_MARK

__all__ = ["FollowJoin", "MARK_PREFIX", "is_mark", "truncate_line", "MAX_LINE"]

#: bytes of one log line kept by ``CappedLog.append``, ``RedisLogHandler`` and Tempo
MAX_LINE = 8192

MARK_PREFIX = FOLLOW_MARK.encode()

T = TypeVar("T")


TRUNCATED = " [... {} bytes truncated]"


def truncate_line(line: str | bytes, max_bytes: int) -> str:
    """``line`` (text, or UTF-8 bytes) cut to at most about ``max_bytes`` bytes on
    a character boundary, ending in a visible marker saying how much was cut."""
    if isinstance(line, str):
        if len(line) <= max_bytes // 4 or (line.isascii() and len(line) <= max_bytes):
            return line
        raw = line.encode("utf-8", "surrogatepass")
        if len(raw) <= max_bytes:
            return line
    else:
        raw = line
        if len(raw) <= max_bytes:
            return raw.decode("utf-8", "replace")
    keep = max(0, max_bytes - len(TRUNCATED.format(len(raw))))
    head = raw[:keep].decode("utf-8", "ignore")  # "ignore": a character split in two goes
    return head + TRUNCATED.format(len(raw) - len(head.encode("utf-8", "surrogatepass")))


def is_mark(data: bytes) -> bool:
    """Whether a channel message is a follow marker (never a log line)."""
    return data.startswith(MARK_PREFIX)


class FollowJoin(Generic[T]):
    """One reader joining one log. ``T``: whatever the reader delivers per line
    (the decoded line, an encoded message); ``size``: its byte cost when held."""

    __slots__ = ("mark", "seen_mark", "backlog_sent", "held", "held_bytes", "max_held", "max_bytes", "lost")

    def __init__(self, mark: bytes, max_held: int = 10000, max_bytes: int = 4 << 20) -> None:
        self.mark = mark
        self.seen_mark = False  # the marker came back: later lines are live
        self.backlog_sent = False
        self.held: list[T] = []
        self.held_bytes = 0
        self.max_held = max_held
        self.max_bytes = max_bytes
        self.lost = 0

    @property
    def done(self) -> bool:
        """Joined: every further line is live, nothing is held."""
        return self.seen_mark and self.backlog_sent

    def marker(self, data: bytes) -> list[T]:
        """A marker arrived on the channel; returns held lines now deliverable."""
        if data == self.mark and not self.seen_mark:
            self.seen_mark = True
            if self.backlog_sent:
                return self._release()
        return []

    def line(self, item: T, size: int = 0) -> list[T]:
        """A live line arrived; returns what to deliver now (it or nothing)."""
        if not self.seen_mark:
            return []  # published before the marker: it is in the backlog
        if self.backlog_sent:
            return [item]
        if len(self.held) < self.max_held and self.held_bytes + size <= self.max_bytes:
            self.held.append(item)
            self.held_bytes += size
        else:
            self.lost += 1
        return []

    def backlog_done(self) -> list[T]:
        """The backlog was delivered; returns the held lines to deliver after it."""
        self.backlog_sent = True
        return self._release() if self.seen_mark else []

    def abandon(self) -> list[T]:
        """The backlog cannot be read: deliver what was held and go live."""
        self.seen_mark = self.backlog_sent = True
        return self._release()

    def _release(self) -> list[T]:
        held, self.held, self.held_bytes = self.held, [], 0
        return held
