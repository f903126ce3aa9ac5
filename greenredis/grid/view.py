"""The grid's view of its nodes, as pure code: no sockets, no gevent, no clock.

``Layout`` names the Redis keys and channel of one grid and parses what comes
back; ``GridView`` holds the nodes and turns what the shell saw (a registration
fetched, a sign of life, a leave, an index snapshot, the passing of time) into
``GridEvent``s. ``greenredis.grid.Grid`` feeds it from Redis; tests feed it
directly. Times are unix seconds (floats) given by the caller.

Redis layout (compatible with the original Erlang redgrid, plus an index):

``redgrid:<domain>:<version>:<node>``
    hash: ``ip`` and the node's meta, all str; TTL ``ttl``, refreshed every
    ``interval``.
``redgrid:<domain>:<version>`` (channel)
    ``<key>``: the node registered (joined, re-registered, or answered a ping);
    ``ping``: a newcomer asks every node to re-register now;
    ``update <key> <json meta>``: the node's meta (with ``ip``) as just written to
    its key, sent before ``<key>`` when a greenredis node joins or changes its
    meta, so peers need no HGETALL; a plain ``<key>`` from a node known to
    speak ``update`` is then only a sign of life (every node re-registers on
    each ping), while other nodes' plain keys are fetched (HGETALL) as the
    original did;
    ``leave <key> <instance>``: the node left on purpose; peers drop it at once
    (unless the instance is not the one they know under that name: a twin).
    An original redgrid peer would HGETALL ``update``/``leave`` messages as
    keys, find nothing and skip them. A node answers pings at most once per
    ``min(0.5, interval / 4)`` seconds, so a burst of newcomers costs one
    answer per node, not one per newcomer.

Each registration carries ``_instance``, a random id per process (in the hash
and in ``update``'s JSON; peers strip it from the meta): two live processes with
one name (twins) tell each other apart, and a leave removes only its own.

A heartbeat is one pipelined batch of three commands: ``PEXPIRE`` of the key
(0 means Redis lost it: register again), ``ZADD`` to the index, and the
reconcile read ``ZRANGE index 0 -1 WITHSCORES``.
``redgrid-index:<domain>:<version>`` (sorted set)
    member: node name, score: the Redis server's unix time of its last
    heartbeat (``TIME``, never a node's own clock). Read whole once per interval
    (O(nodes)) to reconcile; entries older than 2 * ttl, or more than ttl in the
    future, are trimmed by whichever member node sees them (observers never
    write). It lives outside the ``redgrid:`` prefix so it can never clash with a
    node's key.

On a Redis Cluster (``Layout(cluster=True)``) the same names carry a hash tag,
``redgrid:{<domain>:<version>}:<node>``, ``redgrid:{<domain>:<version>}`` (a sharded
channel: SPUBLISH/SSUBSCRIBE) and ``redgrid-index:{<domain>:<version>}``: one slot
holds the whole grid.

Domain and version may not contain ``:`` (``a:b``/``c`` and ``a``/``b:c`` would be
one grid). Times given to ``GridView`` are the caller's unix seconds; the shell
converts index scores from the server's clock to its own.
"""

import json
import logging
import string
from collections import namedtuple
from typing import NamedTuple, Optional

from greenredis.backoff import RECONNECT_LONGEST

__all__ = [
    "Layout",
    "GridView",
    "GridEvent",
    "Message",
    "valid_name",
    "valid_instance",
    "clean_meta",
    "meta_value",
    "GridDataError",
    "MAX_META_BYTES",
]

log = logging.getLogger("greenredis.grid")

#: What happened to a node. kind: "join" | "update" | "leave"; meta: a dict copy
#: (for a leave, the last meta known); reason: "joined", "rejoined", "updated",
#: "left" (graceful) or "expired" (not heard of within ttl).
GridEvent = namedtuple("GridEvent", "kind name meta reason")

_MAX_NAME = 255

#: The hash field (and ``update`` JSON key) holding the registering process's id.
INSTANCE_FIELD = "_instance"


class Message(NamedTuple):
    """A parsed channel message. kind: "register" | "update" | "leave" | "ping";
    meta only for "update"; instance (the sender's process id) for "update" and
    "leave" from greenredis nodes, else None."""

    kind: str
    name: Optional[str]
    meta: Optional[dict]
    instance: Optional[str] = None


class GridDataError(ValueError):
    """Data under a grid key that is not a registration (logged and skipped)."""


def valid_name(name):
    """True when ``name`` can be a node name: printable, no spaces, 1..255 chars."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= _MAX_NAME
        and name.isprintable()
        and not any(c.isspace() for c in name)
    )


_HEX = frozenset(string.hexdigits)


def valid_instance(instance):
    """True for an instance id: 1..64 hex digits."""
    return isinstance(instance, str) and 0 < len(instance) <= 64 and set(instance) <= _HEX


#: The most meta one node may carry: keys and values, UTF-8 bytes, in all.
MAX_META_BYTES = 64 * 1024
# A peer's message or registration bigger than these is skipped as bad data (JSON's
# \uXXXX escapes make a 2-byte UTF-8 char 6 bytes; the rest is the key and the id).
_MAX_MESSAGE = 3 * MAX_META_BYTES + 4096
_MAX_REGISTRATION = MAX_META_BYTES + 4096  # chars


def meta_value(key, value):
    """One meta value as stored and seen by peers: str as is, bytes decoded as
    UTF-8, bool as ``"true"``/``"false"``, int and float as their ``str()``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise ValueError(f"meta {key!r}: bytes that are not UTF-8: {bytes(value)[:40]!r}") from None
    raise TypeError(f"meta {key!r}: a str, int, float, bool or UTF-8 bytes, not {type(value).__name__}")


def clean_meta(meta):
    """A copy of ``meta`` with every value as ``meta_value`` makes it; TypeError or
    ValueError for keys that are not non-empty str, the reserved ``_instance``, text
    that is not valid Unicode, or more than ``MAX_META_BYTES`` in all."""
    out, size = {}, 0
    for key, value in meta.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"meta keys are non-empty str, not {key!r}")
        if key == INSTANCE_FIELD:
            raise ValueError(f"meta key {INSTANCE_FIELD!r} is reserved for the grid")
        text = meta_value(key, value)
        try:
            size += len(key.encode()) + len(text.encode())
        except UnicodeEncodeError:
            raise ValueError(f"meta {key!r}: not valid Unicode (lone surrogates)") from None
        out[key] = text
    if size > MAX_META_BYTES:
        raise ValueError(f"meta is {size} bytes, over the {MAX_META_BYTES}-byte limit")
    return out


def _text(value, what):
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise GridDataError(f"{what} is not UTF-8: {value[:60]!r}") from None
    if isinstance(value, str):
        return value
    raise GridDataError(f"{what} is not a string: {value!r:.60}")


class Layout:
    """Key, channel and message names of one grid (domain, version).

    ``cluster=True`` (a Redis Cluster): every name carries the hash tag
    ``{<domain>:<version>}``, so the grid's keys, index and channel share one slot
    (a heartbeat is one node's batch), and the channel is a sharded one
    (``publish`` is ``SPUBLISH``). On a single server the names are the original
    redgrid's, unchanged.
    """

    def __init__(self, domain="", version="", cluster=False):
        self.domain = str(domain)
        self.version = str(version)
        for what, value in (("domain", self.domain), ("version", self.version)):
            if ":" in value:
                raise ValueError(
                    f"grid {what} {value!r} contains ':' (it would share keys with another grid)"
                )
        self.cluster = bool(cluster)
        # "redgrid:" has no brace, so the first "{" is the tag's on every name of the grid
        grid = f"{{{self.domain}:{self.version}}}" if self.cluster else f"{self.domain}:{self.version}"
        self.channel = f"redgrid:{grid}"
        self.prefix = self.channel + ":"
        self.index = f"redgrid-index:{grid}"
        #: the command that publishes on ``channel``
        self.publish = "SPUBLISH" if self.cluster else "PUBLISH"
        self._names = {}  # index member (bytes) -> checked name; the index is read every interval
        self._bad = set()  # index members already reported as bad (reported once, not every interval)

    def key(self, name):
        return self.prefix + name

    def name_of(self, key):
        """The node name in a grid key; GridDataError if it is not one of this grid."""
        key = _text(key, "key")
        if not key.startswith(self.prefix):
            raise GridDataError(f"not a key of grid {self.channel!r}: {key[:120]!r}")
        name = key[len(self.prefix) :]
        if not valid_name(name):
            raise GridDataError(f"bad node name in key {key[:120]!r}")
        return name

    def message(self, kind, name=None, meta=None, instance=None):
        """The bytes to PUBLISH: kind "register" | "update" (with meta) | "leave" | "ping";
        ``instance`` goes into "update" and "leave"."""
        if kind == "ping":
            return b"ping"
        key = self.key(name)
        if kind == "register":
            return key.encode()
        if kind == "update":
            if instance is not None:
                meta = {**meta, INSTANCE_FIELD: instance}
            return f"update {key} {json.dumps(meta, separators=(',', ':'))}".encode()
        return (f"{kind} {key} {instance}" if instance else f"{kind} {key}").encode()

    def parse_message(self, data):
        """A channel message -> ``Message(kind, name, meta, instance)``.

        Raises GridDataError for anything else.
        """
        if len(data) > _MAX_MESSAGE:
            raise GridDataError(f"message of {len(data)} bytes (over {_MAX_MESSAGE}): {data[:60]!r}")
        text = _text(data, "message")
        if text == "ping":
            return Message("ping", None, None)
        if text.startswith("leave "):
            key, _, instance = text[6:].rpartition(" ")
            if key and valid_instance(instance):  # names have no spaces: the id is the last word
                return Message("leave", self.name_of(key), None, instance)
            return Message("leave", self.name_of(text[6:]), None)
        if text.startswith("update "):
            rest = text[7:]
            if not rest.startswith(self.prefix):
                raise GridDataError(f"update for another grid: {text[:120]!r}")
            key, _, payload = rest[len(self.prefix) :].partition(" ")
            name = self.name_of(self.prefix + key)
            try:
                meta = json.loads(payload)
            except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
                raise GridDataError(f"update with bad meta: {text[:120]!r}") from None
            if not (
                isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()) and "ip" in meta
            ):
                raise GridDataError(f"update with bad meta: {text[:120]!r}")
            instance = meta.pop(INSTANCE_FIELD, None)
            if instance is not None and not valid_instance(instance):
                raise GridDataError(f"update with a bad instance id: {text[:120]!r}")
            return Message("update", name, meta, instance)
        return Message("register", self.name_of(text), None)

    def parse_meta(self, reply):
        """An HGETALL reply (flat list or dict) -> meta dict of str, or None if the key is gone.

        GridDataError if it is not a registration (no ``ip``, not UTF-8, an error reply...).
        """
        got = self.parse_registration(reply)
        return None if got is None else got[0]

    def parse_registration(self, reply):
        """An HGETALL reply -> ``(meta, instance)`` (instance None from other
        implementations), or None if the key is gone. GridDataError as ``parse_meta``."""
        if isinstance(reply, Exception):
            raise GridDataError(f"not a hash: {reply}")
        if reply is None or len(reply) == 0:
            return None
        if isinstance(reply, dict):
            pairs = reply.items()
        elif isinstance(reply, list) and len(reply) % 2 == 0:
            pairs = zip(reply[::2], reply[1::2])
        else:
            raise GridDataError(f"unexpected HGETALL reply: {reply!r:.120}")
        meta = {_text(k, "meta key"): _text(v, "meta value") for k, v in pairs}
        size = sum(len(k) + len(v) for k, v in meta.items())
        if size > _MAX_REGISTRATION:
            raise GridDataError(
                f"registration of {size} chars (over {_MAX_REGISTRATION}): {str(meta)[:60]!r}"
            )
        if "ip" not in meta:
            raise GridDataError(f"registration without ip: {meta!r:.120}")
        instance = meta.pop(INSTANCE_FIELD, None)
        if instance is not None and not valid_instance(instance):
            instance = None  # not ours to judge: another writer's field
        return meta, instance

    def parse_index(self, reply):
        """A ``ZRANGE index 0 -1 WITHSCORES`` reply -> ({name: score}, new_bad).

        new_bad: a GridDataError for each bad entry not reported before (the index
        is read every interval; the same bad entry is reported once)."""
        if isinstance(reply, Exception):
            raise GridDataError(f"index is not a sorted set: {reply}")
        if isinstance(reply, dict):
            pairs = list(reply.items())
        else:
            reply = reply or []
            if reply and isinstance(reply[0], (list, tuple)):  # RESP3 shape
                pairs = [tuple(p) for p in reply]
            else:
                pairs = list(zip(reply[::2], reply[1::2]))
        entries, new_bad = {}, []
        names, bad = self._names, self._bad
        for member, score in pairs:
            try:
                name = names.get(member)
                if name is None:
                    name = _text(member, "index member")
                    if not valid_name(name):
                        raise GridDataError(f"bad node name in index: {name[:120]!r}")
                    if len(names) >= 100_000:  # names come and go: do not grow forever
                        names.clear()
                    names[member] = name
                entries[name] = float(score)
            except (GridDataError, ValueError, TypeError) as e:
                key = (member, score) if isinstance(member, bytes) else repr(member)
                if key not in bad:
                    if len(bad) >= 10_000:
                        bad.clear()
                    bad.add(key)
                    new_bad.append(
                        e if isinstance(e, GridDataError) else GridDataError(f"bad index entry: {e}")
                    )
        return entries, new_bad


class _Node:
    __slots__ = ("meta", "last_seen", "score", "ours", "gone_at", "reason", "instance", "instances")

    def __init__(self, meta, last_seen):
        self.meta = meta
        self.last_seen = last_seen  # unix time we last had a sign of life
        self.score = None  # its latest heartbeat score seen in the index
        self.ours = False  # speaks greenredis: heartbeats in the index, sends update
        self.gone_at = None  # when it left or expired (kept a while for health())
        self.reason = None
        self.instance = None  # the process id last seen registering this name
        self.instances = {}  # process id -> (first, last) heard of: more than one live is a twin


class GridView:
    """The nodes one grid member knows, and when it last heard of each.

    Feeding methods return lists of GridEvent. ``self_name`` is always in the
    view and never expires (None: an observer that is not a node). A node not
    heard of within ``ttl`` expires (``tick``); while the view is ``stale``
    (Redis unreachable) nothing expires, and on ``recover`` every node gets
    ``grace`` seconds to show up again.
    """

    def __init__(self, self_name, meta, ttl=60.0, interval=10.0, now=0.0, keep_gone=None):
        if self_name is not None and not valid_name(self_name):
            raise ValueError(f"bad node name {self_name!r}: 1..255 printable chars, no spaces")
        if not ttl > 2 * interval > 0:
            raise ValueError(f"ttl ({ttl}) must be more than twice the interval ({interval})")
        self.self_name = self_name
        self.ttl = float(ttl)
        self.interval = float(interval)
        self.keep_gone = float(10 * ttl if keep_gone is None else keep_gone)
        self.stale_after = 2.5 * self.interval  # no sign of life for longer: health says "stale"
        # after Redis is back, a live peer may still wait out its client's reconnect backoff,
        # then its writer's (<= 1.2 interval), then its next beat
        self.grace = min(self.ttl, 2 * self.interval + 1.0 + RECONNECT_LONGEST)
        self.stale_since = None
        self.counters = {"bad_data": 0, "bad_messages": 0, "expired": 0, "left": 0, "twin_leaves": 0}
        self._nodes = {} if self_name is None else {self_name: _Node(dict(meta), now)}

    # -- reading ------------------------------------------------------------

    @property
    def stale(self):
        return self.stale_since is not None

    def nodes(self):
        """{name: meta} of the nodes in the grid (copies), itself included."""
        return {n: dict(s.meta) for n, s in self._nodes.items() if s.gone_at is None}

    def get(self, name):
        s = self._nodes.get(name)
        return None if s is None or s.gone_at is not None else dict(s.meta)

    def health(self, now):
        """{name: {"state", "last_seen", "meta", "self"}} including nodes gone lately.

        state: "up"; "stale" (the view is stale, or no sign of life for
        2.5 intervals); "gone" (left or expired; ``reason`` says which).
        """
        out = {}
        for name, s in self._nodes.items():
            if s.gone_at is not None:
                state = "gone"
            elif self.stale or (name != self.self_name and now - s.last_seen > self.stale_after):
                state = "stale"
            else:
                state = "up"
            out[name] = {
                "state": state,
                "last_seen": s.last_seen,
                "meta": dict(s.meta),
                "self": name == self.self_name,
                "gone_at": s.gone_at,
                "reason": s.reason,
            }
        return out

    def next_deadline(self):
        """The earliest time at which ``tick`` has something to do, or None."""
        times = [
            s.last_seen + self.ttl
            for n, s in self._nodes.items()
            if s.gone_at is None and n != self.self_name
        ]
        times += [s.gone_at + self.keep_gone for s in self._nodes.values() if s.gone_at is not None]
        return min(times, default=None)

    # -- feeding ------------------------------------------------------------

    def set_self(self, meta, now):
        """Our own meta changed."""
        s = self._nodes[self.self_name]
        s.meta, s.last_seen = dict(meta), now
        return [GridEvent("update", self.self_name, dict(meta), "updated")]

    def touch_self(self, now):
        self._nodes[self.self_name].last_seen = now

    def seen(self, name, meta, now, score=None, ours=False, instance=None):
        """A registration was fetched (HGETALL of its key) or announced: join or update.

        score: its index score when the fetch came from a reconcile; ours: it
        came in an ``update`` message; instance: the registering process's id.
        """
        if name == self.self_name:
            return []
        events = self._seen(name, meta, now, score, ours)
        if instance is not None:
            s = self._nodes[name]
            s.instance = instance
            s.instances[instance] = (s.instances.get(instance, (now,))[0], now)
            if len(s.instances) > 1:  # forget process ids not heard of within ttl
                s.instances = {i: t for i, t in s.instances.items() if now - t[1] < self.ttl or i == instance}
                while len(s.instances) > 100:  # forged ids: stay bounded
                    del s.instances[min(s.instances, key=lambda i: s.instances[i][1])]
        return events

    def _seen(self, name, meta, now, score, ours):
        s = self._nodes.get(name)
        if score is not None and (s is None or s.gone_at is not None or s.score is None):
            s_score, indexed = score, True
        else:
            s_score, indexed = None, False
        if indexed:
            now = min(now, score)  # it was alive at its heartbeat, maybe not since
        if s is None or s.gone_at is not None:
            reason = "joined" if s is None else "rejoined"
            s = self._nodes[name] = _Node(dict(meta), now)
            s.ours = indexed or ours
            if indexed:
                s.score = s_score
            return [GridEvent("join", name, dict(meta), reason)]
        s.last_seen = max(s.last_seen, now)
        s.ours = s.ours or indexed or ours
        if indexed:
            s.score = s_score
        if s.meta != meta:
            s.meta = dict(meta)
            return [GridEvent("update", name, dict(meta), "updated")]
        return []

    def on_message(self, kind, name, now, meta=None, instance=None):
        """A channel message (from Layout.parse_message) -> (events, fetch).

        fetch: True when the shell must HGETALL the node's key and call ``seen``.
        ``update`` carries the meta. A plain registration of a greenredis node
        we know is only a sign of life (nodes re-register in bulk on every
        ping). Other nodes (the original redgrid) are fetched every time, as
        they announce changes with the plain key.
        """
        if kind == "leave":
            return self.leave(name, now, instance=instance), False
        if kind == "ping" or name == self.self_name:
            return [], False
        if kind == "update" and meta is not None:
            return self.seen(name, meta, now, ours=True, instance=instance), False
        s = self._nodes.get(name)
        if kind == "register" and s is not None and s.gone_at is None and s.ours:
            s.last_seen = max(s.last_seen, now)
            return [], False
        return [], True

    def leave(self, name, now, reason="left", instance=None):
        """The node left (graceful) or expired: drop it from nodes().

        A leave from process ``instance`` while another process registered under
        the same name was heard of within ttl, and since ``instance`` first was
        (a twin, not a crashed predecessor), drops only that process id.
        """
        s = self._nodes.get(name)
        if name == self.self_name or s is None or s.gone_at is not None:
            return []
        if instance is not None:
            # Another id is a live twin if heard of since the leaving one first was:
            # a crashed predecessor under the same name (a restarted dyno) is not.
            since = s.instances.pop(instance, (-float("inf"),))[0]
            live = [(t, i) for i, (_, t) in s.instances.items() if now - t < self.ttl and t >= since]
            if live:
                s.instance = max(live)[1]
                self.counters["twin_leaves"] += 1
                return []
        s.gone_at, s.reason = now, reason
        s.ours, s.score = False, None
        s.instance, s.instances = None, {}
        self.counters[reason] += 1
        return [GridEvent("leave", name, dict(s.meta), reason)]

    def reconcile(self, entries, now, full=False):
        """An index snapshot {name: score} -> (fetch_names, (trim_below, trim_above)).

        A known node whose score went up heartbeated: it is alive as of that
        score (capped at ``now``). Unknown names with a fresh score are to be
        fetched; with ``full`` (after a reconnect, when messages may have been
        lost) every fresh name is. Known nodes missing from the index are not
        dropped: they expire by ttl, since a restarted Redis forgets the index
        while the nodes are alive and about to re-register. trim_below: a score
        below which entries are dead, trim_above: one above which they are more
        than ttl in the future (a bogus writer); either None when nothing is to
        be trimmed. Such entries are otherwise ignored.
        """
        fetch, below, above = [], None, None
        dead_before, future_after = now - 2 * self.ttl, now + self.ttl
        for name, score in entries.items():
            if score < dead_before:
                below = dead_before
                continue
            if score > future_after:
                above = future_after
                continue
            if name == self.self_name:
                continue
            s = self._nodes.get(name)
            fresh = now - score < self.ttl
            if s is None or s.gone_at is not None:
                if fresh:
                    fetch.append(name)
                continue
            s.ours = True
            if s.score is None or score > s.score:
                if s.score is not None or fresh:
                    s.last_seen = max(s.last_seen, min(score, now))
                s.score = score
            if full and fresh:
                fetch.append(name)
        for name, s in self._nodes.items():
            # Nodes that do not heartbeat in the index (original redgrid): look at their key.
            if s.gone_at is None and not s.ours and name != self.self_name and name not in entries:
                fetch.append(name)
        return fetch, (below, above)

    def tick(self, now):
        """Expire nodes not heard of within ttl; forget long-gone ones."""
        events = []
        if self.stale:
            return events
        for name, s in list(self._nodes.items()):
            if name == self.self_name:
                continue
            if s.gone_at is None:
                if now - s.last_seen >= self.ttl:
                    events += self.leave(name, now, "expired")
            elif now - s.gone_at >= self.keep_gone:
                del self._nodes[name]
        return events

    def shift(self, delta):
        """The caller's clock stepped by ``delta`` seconds: move every time kept."""
        if self.stale_since is not None:
            self.stale_since += delta
        for s in self._nodes.values():
            s.last_seen += delta
            if s.score is not None:
                s.score += delta
            if s.gone_at is not None:
                s.gone_at += delta
            s.instances = {i: (a + delta, b + delta) for i, (a, b) in s.instances.items()}

    def mark_stale(self, now):
        """Redis is unreachable: keep the view, stop expiring nodes."""
        if self.stale_since is None:
            self.stale_since = now

    def recover(self, now):
        """Redis answers again: give every node ``grace`` seconds to re-register."""
        if self.stale_since is None:
            return
        self.stale_since = None
        floor = now - self.ttl + self.grace
        for s in self._nodes.values():
            if s.gone_at is None:
                s.last_seen = max(s.last_seen, floor)

    def bad_data(self, what, err):
        """Count and log a registration, index entry or message that was skipped."""
        counter = "bad_messages" if what == "message" else "bad_data"
        self.counters[counter] += 1
        n = self.counters[counter]
        # the first few in full, then one in a thousand: garbage must not flood the log
        level = logging.WARNING if n <= 10 or n % 1000 == 0 else logging.DEBUG
        log.log(
            level,
            "grid %s: skipped %s (%d %s so far): %s",
            self.self_name or "observer",
            what,
            n,
            counter.replace("_", " "),
            err,
        )
