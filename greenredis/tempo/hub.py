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

``history``  ``{"type": "history", "instance": i, "metrics": {m: [[ts, value], ...]}, "units": {m: u}}``
             (``units``, when any metric has one: the newest point's unit)
``point``    ``{"type": "point", "instance": i, "metric": m, "ts": t, "value": v}`` (+ ``"unit"``)
``backlog``  ``{"type": "backlog", "instance": i, "lines": [...]}`` (oldest first)
``log``      ``{"type": "log", "instance": i, "line": s}``
``grid``     ``{"type": "grid", "stale": bool, "nodes": [{"name", "meta", "health", "metrics"}]}``
``dropped``  ``{"type": "dropped", "count": n, "total": n}``: messages lost by this viewer
``error``    ``{"type": "error", "error": code, "message": text}`` (+ the request's ``id``)
``pong``     answer to ``{"op": "ping"}``

Requests (browser -> server), one JSON object per message:
``{"op": "watch" | "unwatch", "kind": "stats" | "logs", "instance": "web.1"}``
(a stats watch may add ``"history": n``, the points per metric to start with),
``{"op": "watch" | "unwatch", "kind": "grid"}``, ``{"op": "ping"}``; any may carry an ``id``.
"""

import collections
import itertools
import json

from greenredis.telemetry import names

__all__ = ["Hub", "Viewer", "KINDS", "ERRORS"]

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
        "_logsync",
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
        self._logsync = {}  # instance -> _LogSync while joining a log
        self.loading = set()  # topics whose history/backlog is being read
        self.refills = collections.Counter()  # topic -> its history/backlog messages queued

    def push(self, text, refill=None):
        """Queue one encoded message; drops the oldest while over the message or
        byte cap (the newest message is always kept). ``refill``: the topic whose
        history/backlog this is."""
        if self.closed:
            return
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        q = self.queue
        while q and (len(q) >= self.maxlen or self.bytes + size > self.maxbytes):
            self._pop()
            self.dropped += 1
            self.dropped_unreported += 1
        q.append((text, size, refill))
        self.bytes += size
        if refill is not None:
            self.refills[refill] += 1
        self.wakeup()

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


class _LogSync:
    """A viewer joining a log: live lines before its marker are in its backlog;
    lines after the marker wait until the backlog has been queued."""

    __slots__ = ("mark", "seen_mark", "backlog_sent", "held", "held_bytes")

    def __init__(self, mark):
        self.mark = mark
        self.seen_mark = False
        self.backlog_sent = False
        self.held = []
        self.held_bytes = 0


class Hub:
    """Subscriptions and fan-out for every websocket of one process.

    ``queue_size``/``queue_bytes``: messages/bytes (UTF-8) queued per viewer
    before the oldest are dropped; ``max_message``: size cap of a request in bytes; ``max_watch``: topics per
    viewer; ``is_known(instance)``: whether an instance may be watched.

    Effects returned by ``receive``/``disconnect``/``resync``, for the shell:
    ``("subscribe", channel)``, ``("unsubscribe", channel)``,
    ``("history", [viewers], instance, n)``: read the newest ``n`` points (None: the
    default) of each metric once, then ``history()``;
    ``("backlog", viewer, instance, mark)``: read the log backlog and publish
    ``mark`` on its channel in one transaction, then call ``backlog()``;
    ``("grid", viewer)``: queue a grid snapshot.
    """

    def __init__(self, queue_size=256, max_message=4096, max_watch=256, is_known=None, queue_bytes=4 << 20):
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.max_message = max_message
        self.max_watch = max_watch
        self.is_known = is_known or (lambda instance: True)
        self.viewers = {}
        self.topics = {}  # topic -> set of viewers
        self._ids = itertools.count(1)
        self._marks = itertools.count(1)
        # published, delivered, bad_payload, errors, coalesced, refill_failed
        self.stats = collections.Counter()

    # -- viewers -------------------------------------------------------------
    def connect(self, wakeup=None):
        """A new viewer; ``wakeup()`` is called whenever its queue gets a message."""
        viewer = Viewer(next(self._ids), self.queue_size, wakeup, self.queue_bytes)
        self.viewers[viewer.id] = viewer
        return viewer

    def disconnect(self, viewer):
        """Forget a viewer; returns the unsubscribe effects."""
        viewer.closed = True
        self.viewers.pop(viewer.id, None)
        effects = []
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

    # -- requests ------------------------------------------------------------
    def receive(self, viewer, text):
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
                names.check_instance(instance)
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
            if topic != GRID and not self.is_known(topic[1]):
                self.error(viewer, "unknown_instance", request_id=rid)
                return []
        return self._watch(viewer, topic, depth)

    def _watch(self, viewer, topic, depth=None, force=False):
        """Watching again re-sends the history/backlog (how a page fills a gap),
        unless one is still being read or queued for this viewer (then it is as
        fresh as a new one): a flood of repeated watches costs no memory."""
        effects = []
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
            effects.append(("subscribe", self.channel(topic)))
        watchers.add(viewer)
        viewer.watching.add(topic)
        kind, instance = topic
        if kind == "stats":
            viewer.loading.add(topic)
            effects.append(("history", [viewer], instance, depth))
        elif kind == "logs":
            viewer.loading.add(topic)
            mark = f"{names.FOLLOW_MARK}tempo:{next(self._marks)}:{id(self):x}"
            viewer._logsync[instance] = _LogSync(mark.encode())
            effects.append(("backlog", viewer, instance, mark))
        else:
            effects.append(("grid", viewer))
        return effects

    def _unwatch(self, viewer, topic):
        viewer.watching.discard(topic)
        viewer.loading.discard(topic)
        if topic[0] == "logs":
            viewer._logsync.pop(topic[1], None)
        watchers = self.topics.get(topic)
        if watchers is None or viewer not in watchers:
            return []
        watchers.discard(viewer)
        if watchers:
            return []
        del self.topics[topic]
        return [] if topic == GRID else [("unsubscribe", self.channel(topic))]

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
    def history(self, viewers, instance, metrics):
        """Queue ``{metric: [point dicts]}`` as one history message to each viewer
        (encoded once) that still watches the instance's stats."""
        msg = {
            "type": "history",
            "instance": instance,
            "metrics": {m: [[p["ts"], p["value"]] for p in pts] for m, pts in metrics.items()},
        }
        units = {m: pts[-1]["unit"] for m, pts in metrics.items() if pts and pts[-1].get("unit")}
        if units:
            msg["units"] = units
        text = dumps(msg)
        topic = ("stats", instance)
        for viewer in viewers:
            viewer.loading.discard(topic)
            if not viewer.closed and topic in viewer.watching:
                viewer.push(text, refill=topic)

    def refill_failed(self, viewers, kind, instance, message):
        """A history (``kind`` "stats") or backlog ("logs") read failed: tell each
        viewer, and let a log's live lines flow again (they were held for it)."""
        topic = (kind, instance)
        for viewer in viewers:
            viewer.loading.discard(topic)
            if kind == "logs":
                sync = viewer._logsync.pop(instance, None)
                if sync is not None:
                    for text in sync.held:
                        viewer.push(text)
            self.stats["refill_failed"] += 1
            self.error(viewer, "unavailable", message)

    def backlog(self, viewer, instance, lines):
        """Queue a log's backlog (oldest first), then any live lines held meanwhile."""
        viewer.loading.discard(("logs", instance))
        sync = viewer._logsync.get(instance)
        if viewer.closed or sync is None:
            return
        viewer.push(
            dumps({"type": "backlog", "instance": instance, "lines": lines}), refill=("logs", instance)
        )
        sync.backlog_sent = True
        if sync.seen_mark:
            for text in sync.held:
                viewer.push(text)
            del viewer._logsync[instance]

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
        if data.startswith(names.FOLLOW_MARK.encode()):
            for viewer in watchers:
                sync = viewer._logsync.get(instance)
                if sync is not None and data == sync.mark:
                    sync.seen_mark = True
                    if sync.backlog_sent:
                        del viewer._logsync[instance]
            return 0
        text = dumps({"type": "log", "instance": instance, "line": data.decode("utf-8", "replace")})
        n = 0
        for viewer in watchers:
            sync = viewer._logsync.get(instance)
            if sync is None:
                viewer.push(text)
                n += 1
            elif sync.seen_mark:  # after the marker, before the backlog went out
                if len(sync.held) < viewer.maxlen and sync.held_bytes + len(text) <= viewer.maxbytes:
                    sync.held.append(text)
                    sync.held_bytes += len(text)
                else:
                    viewer.dropped += 1
                    viewer.dropped_unreported += 1
            # before the marker: the line is in this viewer's backlog
        self.stats["delivered"] += n
        return n

    def resync(self):
        """After the Redis subscription had a gap: effects that refill every viewer."""
        effects = []
        for (kind, instance), watchers in list(self.topics.items()):
            if kind == "stats":
                for viewer in watchers:
                    viewer.loading.add((kind, instance))
                effects.append(("history", list(watchers), instance, None))
            elif kind == "logs":
                for viewer in list(watchers):
                    effects += self._watch(viewer, ("logs", instance), force=True)
        return effects
