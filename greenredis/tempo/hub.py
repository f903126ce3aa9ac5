"""The websocket fan-out hub as a pure object: no sockets, no greenlets, no Redis.

Viewers send JSON requests; the hub validates them, tracks who watches what, and
answers with *effects* the shell carries out (subscribe a Redis channel when its
first viewer arrives, unsubscribe after its last leaves, read history). Redis
messages come in through ``publish``; each is encoded once and queued on every
watching viewer. Each viewer has a queue bounded in messages and in bytes: when
either cap is reached the oldest messages are dropped and counted, and the viewer
is told before its next messages. Queued texts are shared between viewers, so a
viewer's own memory is at most ``queue_bytes`` (plus one message larger than it).
Watching something already watched re-sends its history/backlog only when none
is being read or waiting in that viewer's queue (repeats are coalesced).

Wire format (server -> browser): every websocket frame is a JSON array of
messages, each an object with a ``type``:

``history``  ``{"type": "history", "instance": i, "metrics": {m: [[ts, value], ...]}}``; a
             large history comes in parts of some metrics each, all but the last
             with ``"more": true``; ``"capped": n`` when n metrics were left out
             (over the per-instance cap); ``"units": {m: u}`` for the part's metrics
             that have one (the newest point's unit)
``point``    ``{"type": "point", "instance": i, "metric": m, "ts": t, "value": v}`` (+ ``"unit"``)
``backlog``  ``{"type": "backlog", "instance": i, "lines": [...]}`` (oldest first;
             ``"omitted": n`` when the n oldest lines did not fit the byte cap)
``log``      ``{"type": "log", "instance": i, "line": s}``
``grid``     ``{"type": "grid", "stale": bool, "nodes": [{"name", "meta", "health", "metrics"}]}``
``dropped``  ``{"type": "dropped", "count": n, "total": n}``: messages lost by this viewer
``error``    ``{"type": "error", "error": code, "message": text}`` (+ the request's ``id``)
``pong``     answer to ``{"op": "ping"}``
``feed``     ``{"type": "feed", "ok": bool, "error": text or null}``: whether live
             points/lines can arrive (Redis may refuse the channels); sent when
             it changes and to a viewer that watches while it is not ok

Requests (browser -> server), one JSON object per message:
``{"op": "watch" | "unwatch", "kind": "stats" | "logs", "instance": "web.1"}``
(a stats watch may add ``"history": n``, the points per metric to start with),
``{"op": "watch" | "unwatch", "kind": "grid"}``, ``{"op": "ping"}``; any may carry an ``id``.
"""

from __future__ import annotations

import collections
import itertools
import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Union

from greenredis.telemetry import names
from greenredis.telemetry.loglines import MAX_LINE, FollowJoin, is_mark, truncate_line

__all__ = [
    "Hub",
    "Viewer",
    "KINDS",
    "ERRORS",
    "CloseCode",
    "Subscribe",
    "Unsubscribe",
    "ReadHistory",
    "ReadBacklog",
    "SendGrid",
    "Effect",
    "check_instance",
    "truncate_line",
]

KINDS = ("stats", "logs", "grid")
GRID = ("grid", None)

#: error code -> meaning; codes are stable, for clients to switch on.
ERRORS = {
    "too_large": "message larger than the size cap",
    "bad_json": "message is not JSON",
    "bad_message": "message is not a JSON object with an 'op'",
    "unknown_op": "op is not one of watch, unwatch, ping",
    "bad_kind": "kind is not one of stats, logs, grid",
    "bad_instance": "instance is not a valid instance name",
    "unknown_instance": "no such instance in the grid or in the stats",
    "too_many": "this socket watches too many things",
    "unavailable": "Redis is unavailable; retry later",
    "forbidden": "missing, expired or bad token, or a foreign Origin",
}


class CloseCode(IntEnum):
    """Websocket close codes Tempo sends (RFC 6455 section 7.4; 4000-4999 are ours)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the web process is shutting down: reconnect elsewhere
    PROTOCOL_ERROR = 1002
    UNSUPPORTED = 1003
    INVALID_DATA = 1007
    POLICY = 1008  # refused: token, Origin or Host
    TOO_BIG = 1009
    INTERNAL = 1011
    SLOW = 4000  # the viewer did not read its queue: over its byte cap

    @classmethod
    def sendable(cls, code: int) -> int:
        """``code`` if it may be sent in a close frame, else NORMAL."""
        return code if code in cls._value2member_map_ or 3000 <= code < 5000 else cls.NORMAL


# -- effects: what the hub asks its shell to do --------------------------------
@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True, slots=True, eq=False)
class ReadHistory:
    """Read the newest ``depth`` points (None: the default) of each metric of
    ``instance`` once, then feed them to ``Hub.history`` for ``viewers``."""

    viewers: tuple[Viewer, ...]
    instance: str
    depth: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ReadBacklog:
    """Read the log backlog and publish ``mark`` on its channel in one
    transaction, then call ``Hub.backlog``."""

    viewer: Viewer
    instance: str
    mark: str


@dataclass(frozen=True, slots=True, eq=False)
class SendGrid:
    """Queue a grid snapshot to ``viewer``."""

    viewer: Viewer


Effect = Union[Subscribe, Unsubscribe, ReadHistory, ReadBacklog, SendGrid]


def check_instance(name: Any) -> str:
    """``names.check_instance``, also refusing ``.`` and ``..`` (path segments:
    a link to them would not reach the instance's page)."""
    names.check_instance(name)
    if name in (".", ".."):
        raise ValueError(f"instance name {name!r} is not allowed")
    return name


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Viewer:
    """One websocket's state: its bounded outgoing queue and what it watches."""

    __slots__ = (
        "id",
        "queue",
        "maxlen",
        "maxbytes",
        "bytes",
        "dropped",
        "dropped_unreported",
        "watching",
        "wakeup",
        "closed",
        "slow",
        "joins",
        "loading",
        "refills",
    )

    def __init__(self, vid, maxlen, wakeup=None, maxbytes=4 << 20):
        self.id = vid
        self.queue = collections.deque()  # (text, size, refill topic or None)
        self.maxlen = maxlen
        self.maxbytes = maxbytes
        self.bytes = 0  # sum of the queued texts' sizes
        self.dropped = 0  # total messages this viewer lost
        self.dropped_unreported = 0  # lost since the last "dropped" notice
        self.watching = set()  # topics: (kind, instance)
        self.wakeup = wakeup or (lambda: None)
        self.closed = False
        self.slow = False  # over its byte cap: the shell closes it (CloseCode.SLOW)
        self.joins: dict[str, FollowJoin[str]] = {}  # instance -> its log join in progress
        self.loading = set()  # topics whose history/backlog is being read
        self.refills = collections.Counter()  # topic -> its history/backlog messages queued

    def push(self, text, refill=None):
        """Queue one encoded message; drops the oldest while over the message cap.

        Over the byte cap the viewer is not reading what it asked for: its queue
        is cleared and it is marked ``slow`` (the shell closes it) instead of
        holding the memory. ``refill``: the topic whose history/backlog this is."""
        if self.closed or self.slow:
            return
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        if self.bytes + size > self.maxbytes:
            self.slow = True
            self.dropped += len(self.queue) + 1
            self.clear()
            self.wakeup()
            return
        q = self.queue
        while q and len(q) >= self.maxlen:
            self._pop()
            self.dropped += 1
            self.dropped_unreported += 1
        q.append((text, size, refill))
        self.bytes += size
        if refill is not None:
            self.refills[refill] += 1
        self.wakeup()

    def room(self, size):
        """Whether a message of ``size`` bytes fits now (a history reader waits for it)."""
        return self.closed or self.slow or self.bytes + size <= self.maxbytes

    def _pop(self):
        text, size, refill = self.queue.popleft()
        self.bytes -= size
        if refill is not None:
            self.refills[refill] -= 1
            if not self.refills[refill]:
                del self.refills[refill]
        return text

    def clear(self):
        self.queue.clear()
        self.bytes = 0
        self.refills.clear()

    def send(self, obj):
        self.push(dumps(obj))

    def take(self, limit=1000):
        """Pop up to ``limit`` queued messages as one frame's text (a JSON array),
        led by a ``dropped`` notice if messages were lost; None if nothing queued."""
        if not self.queue and not self.dropped_unreported:
            return None
        items = []
        if self.dropped_unreported:
            items.append(dumps({"type": "dropped", "count": self.dropped_unreported, "total": self.dropped}))
            self.dropped_unreported = 0
        for _ in range(min(limit, len(self.queue))):
            items.append(self._pop())
        return "[" + ",".join(items) + "]"


class Hub:
    """Subscriptions and fan-out for every websocket of one process.

    ``queue_size``/``queue_bytes``: messages/bytes (UTF-8) queued per viewer
    (the oldest are dropped past the count; past the bytes the viewer is marked
    slow and closed); ``max_message``: size cap of a request in bytes;
    ``max_watch``: topics per viewer; ``is_known(instance)``: whether an instance
    may be watched; ``max_line``: bytes of one log line shown (longer ones are
    truncated with a marker); ``message_bytes``: size cap of one history or
    backlog message.

    Effects returned by ``receive``/``disconnect``/``resync`` are the dataclasses
    ``Subscribe``, ``Unsubscribe``, ``ReadHistory``, ``ReadBacklog``, ``SendGrid``.
    """

    def __init__(
        self,
        queue_size=256,
        max_message=4096,
        max_watch=256,
        is_known=None,
        queue_bytes=4 << 20,
        max_line=MAX_LINE,
        message_bytes=1 << 20,
    ):
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.max_message = max_message
        self.max_watch = max_watch
        self.max_line = max_line
        self.message_bytes = message_bytes
        self.is_known: Callable[[str], bool] = is_known or (lambda instance: True)
        self.viewers = {}
        self.topics = {}  # topic -> set of viewers
        self.feed: dict[str, Any] = {"ok": True, "error": None}
        self._ids = itertools.count(1)
        self._marks = itertools.count(1)
        # published, delivered, bad_payload, errors, coalesced, refill_failed,
        # metrics_capped, lines_truncated, slow_closed
        self.stats = collections.Counter()

    # -- viewers -------------------------------------------------------------
    def connect(self, wakeup=None):
        """A new viewer; ``wakeup()`` is called whenever its queue gets a message."""
        viewer = Viewer(next(self._ids), self.queue_size, wakeup, self.queue_bytes)
        self.viewers[viewer.id] = viewer
        return viewer

    def disconnect(self, viewer) -> list[Effect]:
        """Forget a viewer; returns the unsubscribe effects."""
        viewer.closed = True
        self.viewers.pop(viewer.id, None)
        effects: list[Effect] = []
        for topic in list(viewer.watching):
            effects += self._unwatch(viewer, topic)
        viewer.clear()
        return effects

    def error(self, viewer, code, message=None, request_id=None):
        self.stats["errors"] += 1
        msg = {"type": "error", "error": code, "message": message or ERRORS[code]}
        if request_id is not None:
            msg["id"] = request_id
        viewer.send(msg)

    def set_feed(self, ok: bool, error: str | None = None) -> None:
        """Whether the live feed works (the shell's subscriptions); tells every
        viewer when that changes."""
        feed = {"ok": bool(ok), "error": None if ok else error}
        if feed != self.feed:
            self.feed = feed
            text = dumps({"type": "feed", **feed})
            for viewer in self.viewers.values():
                viewer.push(text)

    # -- requests ------------------------------------------------------------
    def receive(self, viewer, text) -> list[Effect]:
        """Handle one request (str or bytes); errors are queued to the viewer."""
        if isinstance(text, (bytes, bytearray)):
            if len(text) > self.max_message:
                self.error(viewer, "too_large", f"message larger than {self.max_message} bytes")
                return []
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                self.error(viewer, "bad_json")
                return []
        if len(text.encode("utf-8")) > self.max_message:
            self.error(viewer, "too_large", f"message larger than {self.max_message} bytes")
            return []
        try:
            req = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            self.error(viewer, "bad_json")
            return []
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            self.error(viewer, "bad_message")
            return []
        rid = req.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            rid = None
        op = req["op"]
        if op == "ping":
            viewer.send({"type": "pong"} if rid is None else {"type": "pong", "id": rid})
            return []
        if op not in ("watch", "unwatch"):
            self.error(viewer, "unknown_op", request_id=rid)
            return []
        kind = req.get("kind")
        if kind not in KINDS:
            self.error(viewer, "bad_kind", request_id=rid)
            return []
        if kind == "grid":
            topic = GRID
        else:
            instance = req.get("instance")
            try:
                check_instance(instance)
            except ValueError:
                self.error(viewer, "bad_instance", request_id=rid)
                return []
            topic = (kind, instance)
        if op == "unwatch":
            return self._unwatch(viewer, topic)
        depth = req.get("history")
        if depth is not None and (
            not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= 100000
        ):
            self.error(viewer, "bad_message", "history must be an int from 0 to 100000", request_id=rid)
            return []
        if topic not in viewer.watching:
            if len(viewer.watching) >= self.max_watch:
                self.error(viewer, "too_many", request_id=rid)
                return []
            if topic != GRID and not self.is_known(str(topic[1])):
                self.error(viewer, "unknown_instance", request_id=rid)
                return []
        if topic != GRID and not self.feed["ok"]:
            viewer.send({"type": "feed", **self.feed})
        return self._watch(viewer, topic, depth)

    def _watch(self, viewer, topic, depth=None, force=False) -> list[Effect]:
        """Watching again re-sends the history/backlog (how a page fills a gap),
        unless one is still being read or queued for this viewer (then it is as
        fresh as a new one): a flood of repeated watches costs no memory."""
        effects: list[Effect] = []
        if (
            not force
            and topic != GRID
            and topic in viewer.watching
            and (topic in viewer.loading or viewer.refills.get(topic))
        ):
            self.stats["coalesced"] += 1
            return effects
        watchers = self.topics.setdefault(topic, set())
        if not watchers and topic != GRID:
            effects.append(Subscribe(self.channel(topic)))
        watchers.add(viewer)
        viewer.watching.add(topic)
        kind, instance = topic
        if kind == "stats":
            viewer.loading.add(topic)
            effects.append(ReadHistory((viewer,), instance, depth))
        elif kind == "logs":
            viewer.loading.add(topic)
            mark = f"{names.FOLLOW_MARK}tempo:{next(self._marks)}:{id(self):x}"
            viewer.joins[instance] = FollowJoin(mark.encode(), viewer.maxlen, viewer.maxbytes)
            effects.append(ReadBacklog(viewer, instance, mark))
        else:
            effects.append(SendGrid(viewer))
        return effects

    def _unwatch(self, viewer, topic) -> list[Effect]:
        viewer.watching.discard(topic)
        viewer.loading.discard(topic)
        if topic[0] == "logs":
            viewer.joins.pop(topic[1], None)
        watchers = self.topics.get(topic)
        if watchers is None or viewer not in watchers:
            return []
        watchers.discard(viewer)
        if watchers:
            return []
        del self.topics[topic]
        return [] if topic == GRID else [Unsubscribe(self.channel(topic))]

    @staticmethod
    def channel(topic):
        kind, instance = topic
        if kind == "stats":
            return names.stats_channel(instance)
        return names.log_channel(names.log_key(instance))

    def channels(self):
        """Every Redis channel some viewer needs."""
        return [self.channel(t) for t in self.topics if t != GRID]

    # -- data from the shell -------------------------------------------------
    def history_parts(self, instance, metrics, capped=0, final=True, units=None):
        """``{metric: [[ts, value], ...]}`` encoded as history messages of at most
        ``message_bytes`` each (a metric larger than that alone is cut to its
        newest points); all but the last (unless not ``final``) say ``"more": true``.
        ``units``: ``{metric: unit}``, sent with the part that holds the metric."""
        units = units or {}
        head = '{"type":"history","instance":' + dumps(instance) + ',"metrics":{'
        tail = "}" + (f',"capped":{int(capped)}' if capped else "")
        budget = max(1024, self.message_bytes - len(head) - len(tail) - 16)
        parts, cur, size = [], [], 0
        for metric, pts in metrics.items():
            body = dumps(pts)
            if len(body) > budget:  # keep the newest points that fit
                keep = max(1, len(pts) * budget // len(body) - 1)
                body = dumps(pts[-keep:])
            item = dumps(metric) + ":" + body
            if cur and size + len(item) + 1 > budget:
                parts.append(cur)
                cur, size = [], 0
            cur.append((metric, item))
            size += len(item) + 1 + (len(units[metric]) + len(metric) + 8 if metric in units else 0)
        parts.append(cur)
        last = len(parts) - 1 if final else len(parts)
        out = []
        for i, part in enumerate(parts):
            part_units = {m: units[m] for m, _ in part if m in units}
            text = head + ",".join(item for _, item in part) + tail
            if part_units:
                text += ',"units":' + dumps(part_units)
            out.append(text + (',"more":true}' if i < last else "}"))
        return out

    def history(self, viewers, instance, metrics, capped=0):
        """Queue ``{metric: [point dicts]}`` as history messages to each viewer
        (encoded once) that still watches the instance's stats."""
        pairs = {m: [[p["ts"], p["value"]] for p in pts] for m, pts in metrics.items()}
        units = {m: pts[-1]["unit"] for m, pts in metrics.items() if pts and pts[-1].get("unit")}
        self.history_texts(viewers, instance, self.history_parts(instance, pairs, capped, units=units))

    def history_texts(self, viewers, instance, texts, final=True):
        """Queue encoded history parts (from ``history_parts``) to each viewer
        that still watches; ``final``: the read is complete."""
        topic = ("stats", instance)
        for viewer in viewers:
            if final:
                viewer.loading.discard(topic)
            if not viewer.closed and topic in viewer.watching:
                for text in texts:
                    viewer.push(text, refill=topic)

    def refill_failed(self, viewers, kind, instance, message):
        """A history (``kind`` "stats") or backlog ("logs") read failed: tell each
        viewer, and let a log's live lines flow again (they were held for it)."""
        topic = (kind, instance)
        for viewer in viewers:
            viewer.loading.discard(topic)
            if kind == "logs":
                join = viewer.joins.pop(instance, None)
                if join is not None:
                    for text in join.abandon():
                        viewer.push(text)
            self.stats["refill_failed"] += 1
            self.error(viewer, "unavailable", message)

    def backlog(self, viewer, instance, lines):
        """Queue a log's backlog (oldest first), then any live lines held meanwhile.
        Lines are cut to ``max_line`` bytes; the oldest that do not fit in
        ``message_bytes`` are left out (counted in the message's ``omitted``)."""
        viewer.loading.discard(("logs", instance))
        join = viewer.joins.get(instance)
        if viewer.closed or join is None:
            return
        kept, size = [], 0
        for line in reversed(lines):
            line = self._cut(line)
            size += len(line) + 8  # its JSON string, escapes aside
            if size > self.message_bytes and kept:
                break
            kept.append(line)
        kept.reverse()
        msg = {"type": "backlog", "instance": instance, "lines": kept}
        if len(kept) < len(lines):
            msg["omitted"] = len(lines) - len(kept)
        text = dumps(msg)
        while len(text) > self.message_bytes and len(kept) > 1:  # escapes made it larger
            del kept[: max(1, len(kept) // 4)]
            msg["lines"], msg["omitted"] = kept, len(lines) - len(kept)
            text = dumps(msg)
        viewer.push(text, refill=("logs", instance))
        for held in join.backlog_done():
            viewer.push(held)
        if join.lost:
            viewer.dropped += join.lost
            viewer.dropped_unreported += join.lost
        if join.done:
            del viewer.joins[instance]

    def _cut(self, line):
        cut = truncate_line(line, self.max_line)
        if cut is not line:
            self.stats["lines_truncated"] += 1
        return cut

    def broadcast(self, topic, obj):
        """Queue one message to every viewer of ``topic``; returns how many."""
        watchers = self.topics.get(topic, ())
        text = dumps(obj)
        for viewer in watchers:
            viewer.push(text)
        return len(watchers)

    def publish(self, channel, data):
        """A Redis message arrived: encode it once and queue it on every watcher.

        Returns how many viewers got it. Malformed stats payloads are counted in
        ``stats["bad_payload"]`` and dropped.
        """
        parsed = names.instance_of_channel(channel)
        if parsed is None:
            return 0
        kind, instance = parsed
        watchers = self.topics.get((kind, instance))
        if not watchers:
            return 0
        self.stats["published"] += 1
        if kind == "stats":
            try:
                p = names.decode_point(data)
            except ValueError:  # decode_point turns every malformation into one
                self.stats["bad_payload"] += 1
                return 0
            point = {
                "type": "point",
                "instance": instance,
                "metric": p["metric"],
                "ts": p["ts"],
                "value": p["value"],
            }
            if "unit" in p:
                point["unit"] = p["unit"]
            text = dumps(point)
            for viewer in watchers:
                viewer.push(text)
            self.stats["delivered"] += len(watchers)
            return len(watchers)
        # logs
        if is_mark(data):
            for viewer in watchers:
                join = viewer.joins.get(instance)
                if join is not None:
                    for text in join.marker(data):
                        viewer.push(text)
                    if join.done:
                        del viewer.joins[instance]
            return 0
        if len(data) > self.max_line:
            self.stats["lines_truncated"] += 1
        text = dumps({"type": "log", "instance": instance, "line": truncate_line(data, self.max_line)})
        n = 0
        for viewer in watchers:
            join = viewer.joins.get(instance)
            for out in [text] if join is None else join.line(text, len(text)):
                viewer.push(out)
                n += 1
        self.stats["delivered"] += n
        return n

    def resync(self) -> list[Effect]:
        """After the Redis subscription had a gap: effects that refill every viewer."""
        effects: list[Effect] = []
        for (kind, instance), watchers in list(self.topics.items()):
            if kind == "stats":
                for viewer in watchers:
                    viewer.loading.add((kind, instance))
                effects.append(ReadHistory(tuple(watchers), instance, None))
            elif kind == "logs":
                for viewer in list(watchers):
                    effects += self._watch(viewer, ("logs", instance), force=True)
        return effects
