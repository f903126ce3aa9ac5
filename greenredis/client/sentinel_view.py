"""What a ``Sentinel`` client believes about the services it follows: pure, no sockets.

``SentinelView`` is fed the sentinels' replies (``SENTINEL GET-MASTER-ADDR-BY-NAME``,
``SENTINEL SENTINELS``, ``SENTINEL REPLICAS``, ``ROLE`` from a data node) and their
pub/sub announcements (``+switch-master``, ``+promoted-slave``, ``+sentinel``), and
answers with the master to use and the effects to carry out (``MasterChanged``: drop
every connection to the old master; ``SentinelFound``: listen to one more sentinel).

A master that an announcement replaced, or that failed a check, is *superseded*: a
sentinel that still names it is behind (the failover leader announces last, and the
others learn the new master from its hellos, up to seconds later), so its answer only
counts when no sentinel names anything better. An announcement ``old -> new`` that
arrives after ``new`` was itself replaced (a late copy from a slow sentinel during a
second failover) is ignored; one whose ``old`` is the current master (or the last one, when
none answers now) always counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

__all__ = [
    "Address",
    "MasterChanged",
    "SentinelFound",
    "Announcement",
    "SentinelView",
    "parse_address",
    "parse_announcement",
    "parse_instances",
    "role_of",
    "replica_link_problem",
    "SWITCH_CHANNELS",
]

Address = tuple[str, int]

# +promoted-slave comes from the failover leader the moment the replica it promoted
# reports ROLE master, about a second before any +switch-master; a promotion is never
# rolled back, so it is as good a signal and earlier.
SWITCH_CHANNELS = (b"+switch-master", b"+promoted-slave")
SENTINEL_CHANNEL = b"+sentinel"
CHANNELS = (*SWITCH_CHANNELS, SENTINEL_CHANNEL)


@dataclass(frozen=True, slots=True)
class MasterChanged:
    """The master of ``service`` is now ``new`` (``old`` was it, or None if unknown)."""

    service: str
    old: Optional[Address]
    new: Address
    source: str  # what told us: the channel name, or "discovery"


@dataclass(frozen=True, slots=True)
class SentinelFound:
    address: Address


@dataclass(frozen=True, slots=True)
class Announcement:
    """A parsed sentinel pub/sub message about a service."""

    kind: bytes  # the channel
    service: str
    old: Address  # the master being replaced (for +sentinel: the master it watches)
    new: Address  # the new master (for +sentinel: the sentinel's own address)


Effect = Union[MasterChanged, SentinelFound]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _address(host: Any, port: Any) -> Address:
    return (_text(host), int(port))


def parse_address(reply: Any) -> Optional[Address]:
    """``GET-MASTER-ADDR-BY-NAME``'s ``[host, port]``; None for a service it does not know."""
    if reply is None:
        return None
    if not isinstance(reply, (list, tuple)) or len(reply) != 2:
        raise ValueError(f"not a [host, port] reply: {reply!r}")
    return _address(*reply)


def parse_instances(reply: Any) -> list[dict[str, str]]:
    """``SENTINEL SENTINELS``/``REPLICAS``: one str dict per instance (RESP2 flat pairs or RESP3 maps)."""
    out = []
    for item in reply or ():
        if isinstance(item, dict):
            out.append({_text(k): _text(v) for k, v in item.items()})
        else:
            text = [_text(x) for x in item]
            out.append(dict(zip(text[::2], text[1::2])))
    return out


def healthy(instance: dict[str, str]) -> bool:
    """Not down and not disconnected in the sentinel's eyes (and, for a replica, linked)."""
    flags = set(instance.get("flags", "").split(","))
    if flags & {"s_down", "o_down", "disconnected"}:
        return False
    return instance.get("master-link-status", "ok") == "ok"


def role_of(reply: Any) -> str:
    """``ROLE``'s first element: ``"master"``, ``"slave"`` or ``"sentinel"``."""
    if not isinstance(reply, (list, tuple)) or not reply:
        raise ValueError(f"not a ROLE reply: {reply!r}")
    return _text(reply[0])


def replica_link_problem(reply: Any) -> Optional[str]:
    """Why a replica's ``ROLE`` reply (``[slave, host, port, state, offset]``) says not to read
    from it now, or None. Its link to the master must be ``connected``: in any other state
    (``connect``, ``connecting``, ``sync``, ``handshake``) it serves stale data, or an empty
    dataset while a full resync is on its way. The sentinels' own view of the link is as old
    as their last INFO of it (up to 10 s)."""
    if not isinstance(reply, (list, tuple)) or len(reply) < 4 or _text(reply[0]) != "slave":
        return None
    state = _text(reply[3])
    return None if state == "connected" else f"its link to its master is {state!r}"


def parse_announcement(channel: Any, data: Any) -> Optional[Announcement]:
    """A ``+switch-master``, ``+promoted-slave`` or ``+sentinel`` message; None for anything else
    (or a malformed one: a sentinel's message is never worth an exception).

    +switch-master ``<service> <old-ip> <old-port> <new-ip> <new-port>``;
    +promoted-slave ``slave <ip:port> <ip> <port> @ <service> <master-ip> <master-port>``;
    +sentinel ``sentinel <runid> <ip> <port> @ <service> <master-ip> <master-port>``."""
    kind = bytes(channel) if isinstance(channel, (bytes, bytearray)) else _text(channel).encode()
    words = _text(data).split()
    try:
        if kind == b"+switch-master" and len(words) == 5:
            return Announcement(kind, words[0], _address(words[1], words[2]), _address(words[3], words[4]))
        if kind in (b"+promoted-slave", SENTINEL_CHANNEL) and len(words) == 8 and words[4] == "@":
            return Announcement(kind, words[5], _address(words[6], words[7]), _address(words[2], words[3]))
    except ValueError:
        return None
    return None


@dataclass(slots=True)
class _Service:
    master: Optional[Address] = None
    last: Optional[Address] = None  # the master before ``failed`` cleared it: connections may remain
    superseded: set[Address] = field(default_factory=set)
    generation: int = 0  # counts switches: a connection opened under an older one is stale


class SentinelView:
    """The sentinels to ask (the last one that answered first) and, per service, the master."""

    def __init__(self, sentinels: Iterable[Address]) -> None:
        self.sentinels: list[Address] = []
        if isinstance(sentinels, (str, bytes)):
            raise ValueError(f"Sentinel takes a list of (host, port) pairs, not {sentinels!r}")
        for address in sentinels:
            try:
                host, port = address
                self._add_sentinel(_address(host, port))
            except (TypeError, ValueError):
                raise ValueError(f"a sentinel is a (host, port) pair, not {address!r}") from None
        if not self.sentinels:
            raise ValueError("Sentinel needs at least one (host, port) of a sentinel")
        self._services: dict[str, _Service] = {}

    # -- what the shell asks -------------------------------------------------------------

    def master(self, service: str) -> Optional[Address]:
        """The master to use now, or None: ask the sentinels."""
        state = self._services.get(service)
        return state.master if state else None

    def generation(self, service: str) -> int:
        return self._service(service).generation

    def services(self) -> list[str]:
        return list(self._services)

    # -- what the shell tells ------------------------------------------------------------

    def answered(self, sentinel: Address) -> None:
        """``sentinel`` answered: ask it first next time (as redis-py does)."""
        if sentinel in self.sentinels:
            self.sentinels.remove(sentinel)
        self.sentinels.insert(0, sentinel)

    def choose(self, service: str, answers: list[Address]) -> Optional[Address]:
        """From the sentinels' answers in the order they came: the first that is not superseded;
        if all are, the master we already hold, else the first (it may be back)."""
        state = self._service(service)
        for address in answers:
            if address not in state.superseded:
                return address
        return state.master or (answers[0] if answers else None)

    def confirmed(self, service: str, address: Address) -> list[Effect]:
        """``address`` said ROLE master: it is the master now."""
        state = self._service(service)
        state.superseded.discard(address)
        if state.master == address:
            return []
        old = state.master or state.last
        state.master = state.last = address
        if old is None or old == address:
            return []  # first discovery, or the same master back: nobody holds a connection to drop
        state.superseded.add(old)
        state.generation += 1
        return [MasterChanged(service, old, address, "discovery")]

    def failed(self, service: str, address: Address) -> None:
        """``address`` did not answer, or said it is not a master: stop using it."""
        state = self._service(service)
        state.superseded.add(address)
        if state.master == address:
            state.master = None
            state.last = address
            state.generation += 1

    def forget(self, service: str) -> None:
        """We may have missed announcements (a subscription was down): ask again next time,
        trusting no earlier conclusion."""
        state = self._services.get(service)
        if state is not None:
            state.superseded.clear()

    def announced(self, channel: Any, data: Any) -> list[Effect]:
        """A sentinel's pub/sub message."""
        message = parse_announcement(channel, data)
        if message is None:
            return []
        if message.kind == SENTINEL_CHANNEL:
            return self._found([message.new])
        state = self._services.get(message.service)
        if state is None:
            return []  # a service no client of ours follows
        if state.master == message.new:
            return []  # a copy of one we acted on
        if message.old not in (state.master, state.last) and message.new in state.superseded:
            return []  # a late copy: ``new`` has been replaced since (``last``: the master we lost)
        old = state.master or state.last
        state.master = state.last = message.new
        state.superseded.discard(message.new)
        if old is not None:
            state.superseded.add(old)
        state.superseded.add(message.old)
        state.generation += 1
        return [MasterChanged(message.service, old, message.new, _text(message.kind))]

    def sentinels_reported(self, reply: Any) -> list[Effect]:
        """``SENTINEL SENTINELS``: the others watching the service (healthy or not: a sentinel
        down now may be the one up later)."""
        found = []
        for instance in parse_instances(reply):
            try:
                found.append(_address(instance["ip"], instance["port"]))
            except (KeyError, ValueError):
                continue
        return self._found(found)

    # -- inside --------------------------------------------------------------------------

    def _found(self, addresses: list[Address]) -> list[Effect]:
        effects: list[Effect] = []
        for address in addresses:
            if address not in self.sentinels:
                self._add_sentinel(address)
                effects.append(SentinelFound(address))
        return effects

    def _add_sentinel(self, address: Address) -> None:
        if address not in self.sentinels:
            self.sentinels.append(address)

    def _service(self, service: str) -> _Service:
        state = self._services.get(service)
        if state is None:
            state = self._services[service] = _Service()
        return state


def replica_addresses(reply: Any) -> list[Address]:
    """``SENTINEL REPLICAS``: the healthy replicas' addresses, in the sentinel's order."""
    out = []
    for instance in parse_instances(reply):
        if healthy(instance):
            try:
                out.append(_address(instance["ip"], instance["port"]))
            except (KeyError, ValueError):
                continue
    return out
