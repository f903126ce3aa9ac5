"""The grid's heartbeat protocol as pure code: what to send, and what the replies mean.

``Heartbeat`` decides each round's pipelined batch (``plan``) and turns the
replies into actions (``on_replies``): registrations to fetch and events to
emit. It also reads channel messages (``on_messages``) and fetched keys
(``fetched``). It holds the flags the gevent shell (``greenredis.grid.node``)
used to keep, sends nothing and reads no clock: every method takes ``now``
(the caller's unix time) and ``mono`` (a monotonic clock), so tests drive it
with a fake clock.

Index scores are the Redis server's time: ``ServerClock`` keeps the offset
between the server's ``TIME`` and the local clock, measured at start, after
every reconnect, every ``resync`` seconds and when the local clock jumps; a
node whose own clock is off by minutes still scores and trims correctly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from greenredis.errors import ReplyError
from greenredis.grid.view import INSTANCE_FIELD, GridDataError, GridEvent, GridView, Layout, valid_instance

__all__ = ["Heartbeat", "ServerClock", "Plan", "Fetch", "Emit", "Resubscribe"]

log = logging.getLogger("greenredis.grid")

Command = Tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """One pipelined batch: ``commands`` to send, ``roles`` naming what each is for."""

    commands: Tuple[Command, ...]
    roles: Tuple[str, ...]
    now: float
    mono: float
    register: bool = False
    answered: bool = False
    meta: Mapping[str, str] = field(default_factory=dict)
    #: a full reconcile: it answers the requests for one made before it (``full_asked``)
    full: bool = False
    full_asked: int = 0


@dataclass(frozen=True, slots=True)
class Fetch:
    """HGETALL these nodes' keys and hand the replies to ``Heartbeat.fetched``.
    scores: their index scores (local clock) when they come from a reconcile."""

    names: Tuple[str, ...]
    scores: Optional[Mapping[str, float]] = None


@dataclass(frozen=True, slots=True)
class Emit:
    """Tell the callbacks and ``events()`` iterators."""

    events: Tuple[GridEvent, ...]


@dataclass(frozen=True, slots=True)
class Resubscribe:
    """Open the listener's subscription anew: Redis lost our key, or the writer is back
    from an error while the listener heard no gap, so the client may reach another
    server now (a failover), one whose channel the old subscription does not hear."""


Action = Any  # Fetch | Emit | Resubscribe

#: peers whose latest message is remembered to judge reads out at the time (``heard_since``)
_HEARD_KEPT = 4096


class ServerClock:
    """The offset from the local clock to the Redis server's.

    ``sync(server, sent, received, mono)`` after a ``TIME`` round trip (``mono``
    read with ``sent``; the server read its clock about half-way); ``server(now)`` / ``local(t)``
    convert. ``due`` says when to measure again: never measured, ``resync``
    seconds gone (monotonic), or the local wall clock jumped against the
    monotonic one (an NTP step, a suspended laptop).
    """

    __slots__ = ("offset", "resync", "max_rtt", "source", "_wall", "_mono", "_again")

    def __init__(self, resync: float = 300.0, max_rtt: float = 0.5) -> None:
        self.offset: Optional[float] = None
        #: how the server's clock is read: "time" (TIME), "key" (TIME refused:
        #: PEXPIRETIME of our key just PEXPIREd; an observer: a peer's key's
        #: PEXPIRETIME less its PTTL) or "local" (neither: our own clock)
        self.source = "time"
        self.resync = resync
        self.max_rtt = max_rtt  # a slower round trip says little about when the server read its clock
        self._wall = self._mono = 0.0
        self._again = False

    @property
    def synced(self) -> bool:
        return self.offset is not None

    def sync(self, server: float, sent: float, received: float, mono: float) -> None:
        """A TIME reply. After a slow round trip (a stalled server) the measure is
        kept only if there is none, and taken again at the next beat."""
        slow = received - sent > self.max_rtt
        if slow and self.offset is not None:
            self._again = True
            return
        self.offset = server - (sent + received) / 2
        self._wall, self._mono, self._again = sent, mono, slow  # mono: read with sent

    def step(self, now: float, mono: float) -> float:
        """How far the local wall clock stepped against the monotonic one since the
        last look (0.0 below a second, or before a first measure). A step is
        taken into the offset at once (scores stay right) and measured again."""
        if self.offset is None:
            return 0.0
        delta = (now - self._wall) - (mono - self._mono)
        if abs(delta) <= 1.0:
            return 0.0
        self.offset -= delta
        self._wall, self._mono, self._again = now, mono, True
        return delta

    def guess(self, now: float, mono: float) -> None:
        """No measure possible now: use the local clock until one is (``due`` stays True)."""
        if self.offset is None:
            self.offset = 0.0
            self._wall, self._mono = now, mono
        self._again = self.source != "local"

    def remeasure(self) -> None:
        """Measure again at the next beat, keeping the offset till then."""
        self._again = True

    def forget(self) -> None:
        """Measure again before the next score (Redis may be another server now)."""
        self.offset = None

    def due(self, now: float, mono: float) -> bool:
        if self.offset is None or self._again:
            return True
        elapsed = mono - self._mono
        return elapsed >= self.resync or abs((now - self._wall) - elapsed) > 1.0

    def server(self, now: float) -> float:
        return now + (self.offset or 0.0)

    def local(self, t: float) -> float:
        return t - (self.offset or 0.0)


def parse_time(reply: Any) -> float:
    """A ``TIME`` reply ``[seconds, microseconds]`` -> unix seconds."""
    seconds, micros = reply
    return int(seconds) + int(micros) / 1e6


class Heartbeat:
    """What one grid member sends each round, and what the replies mean.

    ``name``/``instance`` are None for an observer (``observe=True``), which
    only reads: no registration, no ping, no trimming, no repair.
    """

    def __init__(
        self,
        layout: Layout,
        view: GridView,
        name: Optional[str],
        instance: str,
        meta: Mapping[str, str],
        ttl: float,
        interval: float,
        observe: bool = False,
        resync: float = 300.0,
    ) -> None:
        self.layout, self.view = layout, view
        self.name, self.instance, self.observe = name, instance, observe
        self.who = name if name is not None else f"observer of {layout.channel}"  # for log lines
        self.key = None if observe or name is None else layout.key(name)
        self.meta: Dict[str, str] = dict(meta)
        self.ttl, self.interval = float(ttl), float(interval)
        self.clock = ServerClock(resync)
        # batches/commands/events_dropped are the shell's to count
        self.stats: Dict[str, int] = {
            "batches": 0,
            "commands": 0,
            "errors": 0,
            "pings_answered": 0,
            "events_dropped": 0,
            "reregistered": 0,
            "rereads": 0,  # registrations read again: a message overtook the read
        }
        self.ready = False  # registered (if a member) and reconciled once
        self.twins: Dict[str, float] = {}  # other process ids seen under our name -> when (local)
        self.twin_keep = max(3 * self.ttl, 2 * resync)
        self._twin_warned = self._told_twin_at = -1e18
        self._announced: Optional[Dict[str, str]] = None  # meta last registered
        self._published: set = set()  # meta fields written (removed ones are HDEL'd)
        self.need_register = self.need_ping = not observe
        # requests for a full reconcile so far (one at start), and how many of them the last
        # full reconcile answered: those made before it was planned
        self._full_asked, self._full_answered = 1, 0
        self._force_update = False
        self._answer_ping = False
        self._answered_at = -1e18
        self.ping_gap = min(0.5, self.interval / 4)
        self._trim: Tuple[Optional[float], Optional[float]] = (None, None)  # server clock
        self._clobber = False  # our key holds a non-hash
        self._index_clobber = False  # the index holds a non-zset
        self._index_warned = -1e18
        self._not_before = -1e18  # after a refused command: do not spin on it
        self._next_beat = -1e18
        self._probe: Optional[str] = None
        self.deaf = False  # the channel is refused: reconcile in full every time
        # Redis failed us and the listener has not reconnected since: when Redis is back
        # (maybe another server: a failover), the listener must move too
        self._relisten = False
        #: messages about peers handled so far: a mark taken when a read is sent (``fetched``)
        self.heard = 0
        self._heard_of: Dict[str, int] = {}  # peer -> ``heard`` at its latest message
        self._heard_floor = 0  # ``_heard_of`` was forgotten at this mark: older reads are overtaken

    @property
    def need_full(self) -> bool:
        """A full reconcile is due: every fresh registration read again (after a gap, a
        resubscription, an error...). Asking again while one is out keeps it due: that one's
        ZRANGE may have run before the reason for asking (a SUBSCRIBE confirmed meanwhile)."""
        return self._full_answered < self._full_asked

    def ask_full(self) -> None:
        """Ask for a full reconcile (``need_full``): one planned from now on answers it."""
        self._full_asked += 1

    # -- the writer -------------------------------------------------------------

    def set_meta(self, meta: Mapping[str, str]) -> None:
        self.meta = dict(meta)
        self.need_register = True

    def clock_step(self, now: float, mono: float) -> None:
        """Notice a step of the local wall clock (NTP, a resumed laptop) and move
        every local time we keep by it, so nothing expires, or lingers, for it."""
        delta = self.clock.step(now, mono)
        if not delta:
            return
        log.warning("grid %s: the local clock stepped %+.1f s; adjusting", self.who, delta)
        self.view.shift(delta)
        self._next_beat += delta
        self._not_before += delta
        self._answered_at += delta
        self._told_twin_at += delta
        self._twin_warned += delta
        self._index_warned += delta
        self.twins = {i: t + delta for i, t in self.twins.items()}

    def plan(self, now: float, mono: float) -> Optional[Plan]:
        """The batch to send now, or None (then sleep until ``next_wake``)."""
        self.clock_step(now, mono)
        if now < self._not_before:
            return None
        if not self.clock.synced:  # nothing is scored before we know the server's time
            if self.clock.source == "time":
                return Plan((("TIME",),), ("time",), now, mono)
            self.clock.guess(now, mono)  # TIME is refused: measured with the next PEXPIRE
        beat_due = now >= self._next_beat
        # Pings are answered at once, but at most once per ping_gap: when many
        # nodes start together, one registration answers all their pings.
        answer = self._answer_ping and now >= self._answered_at + self.ping_gap
        register = not self.observe and (self.need_register or answer)
        full = self.need_full
        if not (register or beat_due or full):
            if self.need_ping and self.ready:
                self.need_ping = False
                return Plan(
                    ((self.layout.publish, self.layout.channel, self.layout.message("ping")),),
                    ("ping",),
                    now,
                    mono,
                )
            return None
        lay, key, meta = self.layout, self.key, dict(self.meta)
        cmds: List[Command] = []
        roles: List[str] = []

        def add(role: str, *command: Any) -> None:
            roles.append(role)
            cmds.append(command)

        due = self.clock.due(now, mono)
        by_key = due and self.clock.source == "key" and not self.observe
        if due:
            if self.clock.source == "time":
                add("time", "TIME")
            if not self.observe:
                add("whoami", "HGET", key, INSTANCE_FIELD)
            elif self.clock.source == "key":  # any node's key: its expiry less its TTL is "now"
                peer = self._probe or next(iter(self.view.nodes()), None)
                if peer is not None:
                    add("keytime", "PEXPIRETIME", lay.key(peer))
                    add("keyttl", "PTTL", lay.key(peer))
        if self._index_clobber and not self.observe:
            add("repair", "DEL", lay.index)
        score = self.clock.server(now)
        twin = self._has_twin(now)
        if self.observe:
            pass
        elif register:
            if self._clobber:
                add("del", "DEL", key)
            gone = self._published - meta.keys()
            if gone:
                add("hdel", "HDEL", key, *sorted(gone))
            add("hset", "HSET", key, *[x for kv in meta.items() for x in kv], INSTANCE_FIELD, self.instance)
            add("pexpire", "PEXPIRE", key, int(self.ttl * 1000))
            if by_key:
                add("keytime", "PEXPIRETIME", key)
            add("zadd", "ZADD", lay.index, score, self.name)
            if meta != self._announced or self._force_update or twin:
                add("update", lay.publish, lay.channel, lay.message("update", self.name, meta, self.instance))
            add("register", lay.publish, lay.channel, lay.message("register", self.name))
        else:
            add("pexpire", "PEXPIRE", key, int(self.ttl * 1000))
            if by_key:
                add("keytime", "PEXPIRETIME", key)
            add("zadd", "ZADD", lay.index, score, self.name)
            if twin:  # keep the twin and the peers told which process is which
                add("update", lay.publish, lay.channel, lay.message("update", self.name, meta, self.instance))
        if beat_due or full:
            add("zrange", "ZRANGE", lay.index, 0, -1, "WITHSCORES")
        below, above = self._trim
        if not self.observe:
            if below is not None:
                add("trim", "ZREMRANGEBYSCORE", lay.index, "-inf", f"({below}")
            if above is not None:
                add("trim", "ZREMRANGEBYSCORE", lay.index, f"({above}", "+inf")
        answered = register and self._answer_ping  # any registration answers pending pings
        if register:
            self.need_register = self._answer_ping = self._force_update = False
            if answered:
                self._answered_at = now
        return Plan(tuple(cmds), tuple(roles), now, mono, register, answered, meta, full, self._full_asked)

    def on_replies(self, plan: Plan, replies: Sequence[Any], now: float) -> List[Action]:
        """The replies of ``plan``'s batch, received at ``now`` -> actions."""
        actions: List[Action] = []
        if self.view.stale:
            log.warning(
                "grid %s: Redis is back; %s", self.who, "re-reading" if self.observe else "re-registering"
            )
            self.view.recover(now)
            if self._relisten:  # the writer reconnected, the listener did not: it may hear another server
                self._relisten = False
                actions.append(Resubscribe())
        if not self.observe:
            self.view.touch_self(now)
        self._trim = (None, None)
        self._clobber = self._index_clobber = False
        zrange = expire_at = None
        refused = False
        for role, command, reply in zip(plan.roles, plan.commands, replies):
            if isinstance(reply, ReplyError):
                self.stats["errors"] += 1
                if role == "time":  # TIME refused (ACL): a key's expiry tells the server's time
                    self._clock_fallback("key", f"TIME failed ({reply})")
                    self.clock.guess(plan.now, plan.mono)
                    continue
                if role in ("keytime", "keyttl"):  # Redis < 7 or refused too: our own clock it is
                    self._clock_fallback("local", f"PEXPIRETIME failed ({reply})")
                    self.clock.guess(plan.now, plan.mono)
                    continue
                if role in ("zadd", "zrange", "trim") and str(reply).startswith("WRONGTYPE"):
                    self._wrong_index(now)
                    refused = True
                    continue
                if self.deaf and role in ("update", "register", "ping") and str(reply).startswith("NOPERM"):
                    continue  # the channel is refused: said once already, the index does without
                refused = True
                log.warning("grid %s: %s failed: %s", self.who, command[0], reply)
                if role == "hset":
                    self._clobber = self.need_register = True
                continue
            if role == "time":
                try:
                    self.clock.sync(parse_time(reply), plan.now, now, plan.mono)
                except (TypeError, ValueError):
                    log.warning("grid %s: bad TIME reply %r; scoring by the local clock", self.who, reply)
                    self.clock.sync(plan.now, plan.now, plan.now, plan.mono)
            elif role == "keytime" and self.observe:
                expire_at = reply
            elif role == "keyttl":  # ms: a peer's key expires at expire_at, reply ms from now
                if isinstance(reply, int) and reply > 0 and isinstance(expire_at, int) and expire_at > 0:
                    self.clock.sync((expire_at - reply) / 1000, plan.now, now, plan.mono)
                else:
                    self.clock.guess(plan.now, plan.mono)
            elif role == "keytime":
                if isinstance(reply, int) and reply > 0:  # ms: the server's time at PEXPIRE + ttl
                    self.clock.sync(reply / 1000 - int(self.ttl * 1000) / 1000, plan.now, now, plan.mono)
                else:  # no key or no expiry (lost meanwhile): measure at the next beat
                    self.clock.guess(plan.now, plan.mono)
            elif role == "whoami":
                owner = reply.decode(errors="replace") if isinstance(reply, bytes) else None
                if owner is not None and owner != self.instance:
                    if valid_instance(owner):
                        self._twin(owner, now, "our key")
                    self.need_register = True  # the key is another's now: write ours again
            elif role == "pexpire" and not plan.register and reply == 0:
                actions += self._lost_key()
            elif role == "zrange":
                zrange = reply
        if refused:  # Redis refused a command (OOM, ACL...): do not spin on it
            self._not_before = now + min(1.0, self.interval)
        if plan.register:
            if not self.need_register:
                self._announced, self._published = dict(plan.meta), set(plan.meta)
            self.stats["pings_answered"] += plan.answered
        if "zrange" in plan.roles:
            self._next_beat = plan.now + self.interval
            if zrange is not None:
                if plan.full:  # answers the requests made before it was planned, not those since
                    self._full_answered = max(self._full_answered, plan.full_asked)
                actions += self._reconcile(zrange, plan.full or self.deaf, now)
        self.ready = self.ready or "zrange" in plan.roles
        return actions

    def _lost_key(self) -> List[Action]:
        """Redis lost our key (it expired while we stalled, or a failover lost the
        latest writes, or this is another server now): register again, re-read
        everyone, ask the peers to re-register, measure the clock again (in the same
        batch) and listen anew, as after a reconnect."""
        self.stats["reregistered"] += 1
        log.warning("grid %s: Redis lost our key %s; registering again", self.who, self.key)
        self.need_register = self.need_ping = True
        self.ask_full()
        self.clock.remeasure()
        self._relisten = False
        self._announced = None  # peers may have re-read the old meta: send ours again
        return [Resubscribe()]

    def _clock_fallback(self, source: str, why: str) -> None:
        if self.clock.source == source:
            return
        self.clock.source = source
        how = (
            "reading the server's clock from PEXPIRETIME of our key"
            if source == "key"
            else "using the local clock (a skewed clock here misjudges peers)"
        )
        log.warning("grid %s: %s; %s", self.who, why, how)

    def _reconcile(self, reply: Any, full: bool, now: float) -> List[Action]:
        try:
            entries, bad = self.layout.parse_index(reply)
        except GridDataError as e:
            self.view.bad_data("index", e)
            return []
        for err in bad:
            self.view.bad_data("index entry", err)
        if entries:  # the newest entry's key: where an observer without TIME reads the clock
            self._probe = max(entries, key=entries.__getitem__)
        local = {n: self.clock.local(s) for n, s in entries.items()}
        fetch, (below, above) = self.view.reconcile(local, now, full=full)
        self._trim = (
            None if below is None else self.clock.server(below),
            None if above is None else self.clock.server(above),
        )
        return [Fetch(tuple(fetch), local)] if fetch else []

    def _wrong_index(self, now: float) -> None:
        self.ask_full()
        if self.observe:
            if now - self._index_warned >= 60:
                self._index_warned = now
                log.warning(
                    "grid: the index %s is not a sorted set (WRONGTYPE); a member node will replace it",
                    self.layout.index,
                )
            return
        self._index_clobber = True
        if now - self._index_warned >= 60:
            self._index_warned = now
            log.warning(
                "grid %s: the index %s holds another type (WRONGTYPE); replacing it with a sorted set",
                self.name,
                self.layout.index,
            )

    def on_error(self, now: float, err: Exception) -> None:
        """The batch (or a fetch) failed: Redis is unreachable or timed out."""
        self.stats["errors"] += 1
        if not self.view.stale:
            log.warning("grid %s: Redis unreachable (%s); keeping the view, retrying", self.who, err)
        self.view.mark_stale(now)
        self.ask_full()
        self.need_register = self.need_ping = not self.observe
        self.clock.forget()
        self._relisten = True
        self._announced = None  # Redis may have lost our last meta, peers may read the old one

    def next_wake(self, now: float, mono: Optional[float] = None) -> float:
        """When ``plan`` has something to do next (local time)."""
        if mono is not None:
            self.clock_step(now, mono)
        if not self.clock.synced or (not self.observe and self.need_register) or self.need_full:
            return max(now, self._not_before)
        if self.need_ping and self.ready:
            return max(now, self._not_before)
        deadline = min(self._next_beat, self.view.next_deadline() or self._next_beat)
        if self._answer_ping:
            deadline = min(deadline, self._answered_at + self.ping_gap)
        return max(deadline, self._not_before)

    # -- the listener -----------------------------------------------------------

    def on_channel_refused(self) -> None:
        """Redis refused our SUBSCRIBE (ACL): no update will be heard, so every
        reconcile fetches every live node's key (meta changes arrive within an interval)."""
        self.deaf = True

    def on_subscribed(self) -> bool:
        """The listener (re)subscribed; True if the writer must be woken to catch up.

        A full reconcile is asked for in any case: only one whose ZRANGE is sent after
        the SUBSCRIBE was confirmed sees every change published before it (one planned
        later answers this; the first one does, at start)."""
        self.deaf = self._relisten = False
        self.ask_full()
        if self.ready:  # the writer went ahead without us: catch up on what we missed
            self.need_ping = not self.observe
            return True
        return False

    def on_messages(
        self, batch: Sequence[Any], now: float, mono: Optional[float] = None
    ) -> Tuple[List[GridEvent], List[str], bool]:
        """Channel messages ``(kind, channel, data)`` -> (events, names to fetch, wake the writer)."""
        if mono is not None:
            self.clock_step(now, mono)
        fetch: List[str] = []
        events: List[GridEvent] = []
        wake = False
        for kind, _channel, data in batch:
            if kind == b"gap":  # messages were lost: re-register, reconcile all, ping
                self._relisten = False
                self.ask_full()
                self.need_register = self.need_ping = not self.observe
                self._announced = None  # a peer may have re-read an older meta meanwhile
                # Redis may be another server now (a failover the writer did not see
                # fail): its clock may not be the old one's
                self.clock.remeasure()
                wake = True
                continue
            try:
                what, name, meta, instance = self.layout.parse_message(data)
            except GridDataError as e:
                self.view.bad_data("message", e)
                continue
            if what == "ping":
                if not self.observe:
                    self._answer_ping = wake = True
                continue
            if name == self.name and name is not None:
                wake |= self._own_message(what, instance, now)
                continue
            evs, need = self.view.on_message(what, name, now, meta, instance)
            if need or what != "register":  # news of the peer's registration: a read out now is older
                self._heard_news(name)
            events += evs
            if need and name not in fetch:
                fetch.append(name)
            elif what in ("leave", "update") and name in fetch:
                fetch.remove(name)
        return events, fetch, wake

    def _own_message(self, what: str, instance: Optional[str], now: float) -> bool:
        if instance is None or instance == self.instance:
            return False
        if what == "leave":
            self.twins.pop(instance, None)
            self.need_register = True  # the key may be gone with it: write ours
            return True
        new = instance not in self.twins
        self._twin(instance, now, "the channel")
        # Let a new twin hear of us at once (then every beat while it lives); at most
        # once per ping_gap, so forged ids on the channel cannot make us spin.
        if new and now - self._told_twin_at >= self.ping_gap:
            self._told_twin_at = now
            self.need_register = self._force_update = True
            return True
        return False

    def _twin(self, instance: str, now: float, where: str) -> None:
        if instance not in self.twins and len(self.twins) >= 100:  # forged ids: stay bounded
            del self.twins[min(self.twins, key=self.twins.__getitem__)]
        self.twins[instance] = now
        if now - self._twin_warned >= 60:
            self._twin_warned = now
            log.warning(
                "grid %s: another process (instance %s, we are %s) registers under the same name "
                "(seen on %s); give each process its own name",
                self.name,
                instance,
                self.instance,
                where,
            )

    def _has_twin(self, now: float) -> bool:
        if self.twins:
            self.twins = {i: t for i, t in self.twins.items() if now - t < self.twin_keep}
        return bool(self.twins) and now - max(self.twins.values()) < self.ttl

    def live_twins(self, now: float) -> Dict[str, float]:
        """Other process ids seen under our name lately -> when (local time)."""
        self._has_twin(now)
        return dict(self.twins)

    # -- fetched keys -----------------------------------------------------------

    def _heard_news(self, name: Optional[str]) -> None:
        if name is None:
            return
        self.heard += 1
        if name not in self._heard_of and len(self._heard_of) >= _HEARD_KEPT:
            self._heard_of.clear()  # reads out now are taken as overtaken for every name
            self._heard_floor = self.heard
        self._heard_of[name] = self.heard

    def heard_since(self, since: int, names: Sequence[str]) -> List[str]:
        """Those of ``names`` a message told of after the mark ``since`` (``heard`` when a
        read was sent): the read may be older than what the view has now. Read them again."""
        if since < self._heard_floor:
            return list(names)
        return [n for n in names if self._heard_of.get(n, -1) > since]

    def fetched(
        self,
        names: Sequence[str],
        replies: Sequence[Any],
        now: float,
        scores: Optional[Mapping[str, float]] = None,
        since: Optional[int] = None,
    ) -> List[GridEvent]:
        """HGETALL replies of these nodes' keys -> events. ``since``: ``heard`` when the
        read was sent; the replies of nodes heard of since (``heard_since``) are skipped:
        the read and the message come on two connections, so the message may be the newer."""
        events: List[GridEvent] = []
        overtaken = set() if since is None else set(self.heard_since(since, names))
        for name, reply in zip(names, replies):
            if name in overtaken:
                continue
            try:
                got = self.layout.parse_registration(reply)
            except GridDataError as e:
                self.view.bad_data(f"registration of {name!r}", e)
                continue
            if got is not None:
                meta, instance = got
                score = None if scores is None else scores.get(name)
                events += self.view.seen(name, meta, now, score=score, instance=instance)
        return events

    # -- leaving ----------------------------------------------------------------

    def leave_commands(self, now: float) -> List[Command]:
        """What ``stop()`` sends. With a live twin the key and index entry stay
        (they are the twin's too); the leave names our instance only."""
        lay = self.layout
        leave = (lay.publish, lay.channel, lay.message("leave", self.name, instance=self.instance))
        if self._has_twin(now):
            return [leave]
        return [("DEL", self.key), ("ZREM", lay.index, self.name), leave]
