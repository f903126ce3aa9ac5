"""The pure side of the cluster client: key slots, the slot map, where a command's keys
are, and how a batch splits per node. No sockets: fed replies, returns plans.

- ``key_slot``: Redis's CRC16 (``binascii.crc_hqx``) of the key, or of its ``{hash tag}``,
  modulo 16384.
- ``SlotMap``: who owns each slot (and its replicas), parsed from ``CLUSTER SHARDS``
  (Redis 7+) or ``CLUSTER SLOTS``.
- ``CommandTable``: each command's key positions and flags from the server's own
  ``COMMAND`` reply (key specs on Redis 7+, first/last/step before); commands whose keys
  cannot be found from the specs are marked for ``COMMAND GETKEYS``.
- ``command_slot``/``crossslot``: the one slot of a command, or the ``CROSSSLOT`` error
  naming the slots.
- ``Route``/``split_keys``: a batch of first-key commands split per node in a few C-level
  passes (``map`` over the keys), not one Python step per command.
"""

from __future__ import annotations

import random
from binascii import crc_hqx
from dataclasses import dataclass
from itertools import compress, repeat
from operator import contains, itemgetter
from typing import Any, Iterable, Sequence

from greenredis.errors import ReplyError

__all__ = [
    "SLOTS",
    "Address",
    "key_slot",
    "key_bytes",
    "SlotMap",
    "CommandTable",
    "KeyRule",
    "GETKEYS",
    "crossslot",
    "slot_of_keys",
    "Route",
    "key_crcs",
    "split_keys",
]

SLOTS = 16384
Address = tuple  # (host, port)


def key_bytes(key: Any) -> bytes:
    """A key as the bytes Redis hashes (str as UTF-8, numbers as their decimal text, as
    ``pack`` sends them)."""
    if key.__class__ is bytes:
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, (int, float)) and not isinstance(key, bool):  # as pack sends them
        return repr(key).encode() if isinstance(key, float) else str(int(key)).encode()
    raise TypeError(f"a key is str, bytes, int or float, not {type(key).__name__}: {key!r}")


def key_slot(key: Any) -> int:
    """The cluster slot of a key: CRC16 of the key, or of the text between the first ``{``
    and the next ``}`` when that is not empty."""
    if key.__class__ is str:
        k = key.encode()
    elif key.__class__ is bytes:
        k = key
    else:
        k = key_bytes(key)
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1 : end]
    return crc_hqx(k, 0) & (SLOTS - 1)


# -- the slot map ------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """Who owns the slot of a key by its CRC: ``nodes[table[crc]]``, for any of the 65536
    CRC16 values (the table repeats every 16384 entries, so ``& 16383`` costs nothing).
    ``nodes`` are the primaries, then None: the group of slots nobody serves."""

    table: list
    nodes: tuple


class SlotMap:
    """Which primary owns each slot, and the replicas of each primary.

    ``owners[slot]`` is a ``(host, port)`` or None for a slot nobody serves;
    ``replicas[primary]`` the replicas not known to have failed; ``loading`` those still
    loading their data (not read from). Change ``owners`` through ``moved`` (which
    also drops the ``route`` made from them).
    """

    __slots__ = ("owners", "replicas", "loading", "_route")

    def __init__(self, owners: list, replicas: dict, loading: frozenset = frozenset()) -> None:
        self.owners = owners
        self.replicas = replicas
        self.loading = loading
        self._route: Route | None = None

    @classmethod
    def empty(cls) -> SlotMap:
        return cls([None] * SLOTS, {})

    @classmethod
    def from_shards(cls, reply: Sequence, asked: Address) -> SlotMap:
        """From ``CLUSTER SHARDS`` (RESP2: flat key/value lists). ``asked`` fills in a node
        that reports no address of its own."""
        owners: list = [None] * SLOTS
        replicas: dict = {}
        loading = set()
        for shard in reply:
            fields = _pairs(shard)
            primary = None
            others = []
            for node in fields.get("nodes", ()):
                info = _pairs(node)
                address = _node_address(info, asked)
                if address is None:
                    continue
                health = _text(info.get("health", "online"))
                if _text(info.get("role")) == "master":
                    primary = address
                elif health != "failed":
                    others.append(address)
                    if health != "online":
                        loading.add(address)
            ranges = list(fields.get("slots", ()))
            if primary is None:
                continue
            replicas[primary] = tuple(others)
            for i in range(0, len(ranges) - 1, 2):
                _assign(owners, int(ranges[i]), int(ranges[i + 1]), primary)
        return cls(owners, replicas, frozenset(loading))

    @classmethod
    def from_slots(cls, reply: Sequence, asked: Address) -> SlotMap:
        """From ``CLUSTER SLOTS``: ``[start, end, [host, port, id, ...], [replica...], ...]``."""
        owners: list = [None] * SLOTS
        replicas: dict = {}
        for entry in reply:
            start, end = int(entry[0]), int(entry[1])
            nodes = [_slots_address(n, asked) for n in entry[2:]]
            if not nodes or nodes[0] is None:
                continue
            primary = nodes[0]
            known = replicas.setdefault(primary, ())
            replicas[primary] = tuple(dict.fromkeys([*known, *(n for n in nodes[1:] if n is not None)]))
            _assign(owners, start, end, primary)
        return cls(owners, replicas)

    def primaries(self) -> list:
        """The primaries that own at least one slot, in slot order."""
        return list(dict.fromkeys(o for o in self.owners if o is not None))

    def nodes(self) -> list:
        """Every node named: primaries, then replicas."""
        found = self.primaries()
        for primary in found[:]:
            found.extend(self.replicas.get(primary, ()))
        return list(dict.fromkeys(found))

    def uncovered(self) -> int:
        return sum(1 for o in self.owners if o is None)

    def moved(self, slot: int, address: Address) -> bool:
        """Record a ``MOVED``: ``slot`` now lives on ``address``. True if that is news."""
        if self.owners[slot] == address:
            return False
        self.owners[slot] = address
        self.replicas.setdefault(address, ())
        self._route = None
        return True

    def route(self) -> Route:
        """The map as a ``Route`` for splitting batches (made once per map version)."""
        route = self._route
        if route is None:
            nodes = self.primaries()
            index = {address: i for i, address in enumerate(nodes)}
            unserved = len(nodes)
            per_slot = [unserved if o is None else index[o] for o in self.owners]
            route = self._route = Route(per_slot * (65536 // SLOTS), (*nodes, None))
        return route

    def reader(self, slot: int, rand: Any = random.random) -> Address | None:
        """A node to read ``slot`` from when reads may go to replicas: one of the
        primary's replicas at random, or the primary when it has none."""
        primary = self.owners[slot]
        if primary is None:
            return None
        replicas = [r for r in self.replicas.get(primary, ()) if r not in self.loading]
        if not replicas:
            return primary
        return replicas[int(rand() * len(replicas)) % len(replicas)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.owners == other.owners and self.replicas == other.replicas

    def __repr__(self) -> str:
        return f"<SlotMap {len(self.primaries())} primaries, {self.uncovered()} slots unserved>"


def _assign(owners: list, start: int, end: int, address: Address) -> None:
    if not 0 <= start <= end < SLOTS:
        raise ValueError(f"slot range {start}-{end} is outside 0-{SLOTS - 1}")
    owners[start : end + 1] = [address] * (end - start + 1)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _pairs(flat: Any) -> dict:
    """A RESP2 flat ``[key, value, key, value]`` list (or a RESP3 map) as a dict of str keys."""
    if isinstance(flat, dict):
        return {_text(k): v for k, v in flat.items()}
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _host(value: Any, asked: Address) -> str:
    host = _text(value)
    # "" (or "?"): the node does not know its own address; it is the one we asked.
    return asked[0] if host in ("", "?") else host


def _node_address(info: dict, asked: Address) -> Address | None:
    port = info.get("port") or info.get("tls-port")
    if not port:
        return None
    endpoint = _text(info.get("endpoint"))
    host = endpoint if endpoint not in ("", "?") else _text(info.get("ip"))
    return (_host(host, asked), int(port))


def _slots_address(node: Sequence, asked: Address) -> Address | None:
    if len(node) < 2 or not node[1]:
        return None
    return (_host(node[0], asked), int(node[1]))


# -- where the keys are ------------------------------------------------------

GETKEYS = "getkeys"  # a KeyRule.kind: ask the server (COMMAND GETKEYS)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key spec: where the search begins (``index`` or ``keyword``) and how the keys
    are found from there (``range`` or ``keynum``)."""

    begin: str  # "index" | "keyword"
    index: int = 0  # begin "index": the position
    keyword: bytes = b""  # begin "keyword"
    startfrom: int = 0
    find: str = "range"  # "range" | "keynum"
    lastkey: int = 0
    keystep: int = 1
    limit: int = 0
    keynumidx: int = 0
    firstkey: int = 1

    def positions(self, argv: Sequence) -> list[int]:
        argc = len(argv)
        if self.begin == "index":
            first = self.index
        else:
            first = -1
            if self.startfrom > 0:
                indices: Iterable[int] = range(self.startfrom, argc)
            else:
                indices = range(argc + self.startfrom, 0, -1)
            for i in indices:
                word = argv[i]
                if isinstance(word, (str, bytes)) and _upper(word) == self.keyword:
                    first = i + 1
                    break
            if first < 0:
                return []
        if first >= argc:
            return []
        if self.find == "range":
            step = self.keystep or 1
            if self.lastkey >= 0:
                last = first + self.lastkey
            elif not self.limit:
                last = argc + self.lastkey
            else:
                last = first + ((argc - first) // self.limit + self.lastkey)
        else:
            step = self.keystep or 1
            at = first + self.keynumidx
            if at >= argc:
                return []
            try:
                numkeys = int(argv[at])
            except (TypeError, ValueError):
                return []  # the server will say what is wrong
            if numkeys < 0:
                return []
            first += self.firstkey
            last = first + (numkeys - 1) * step
        return list(range(first, min(last, argc - 1) + 1, step))


def _upper(word: Any) -> bytes:
    return (word.encode() if isinstance(word, str) else bytes(word)).upper()


@dataclass(frozen=True, slots=True)
class KeyRule:
    """How to find a command's keys: ``kind`` "none" (keyless), "one" (the key at
    ``index``: GET, SET, INCR...), "specs" (``specs``), "getkeys" (ask the server) or
    "sub" (depends on the subcommand: ``subs``). ``readonly``: safe on a replica;
    ``blocking``: may block."""

    kind: str
    index: int = 0
    specs: tuple = ()
    subs: Any = None  # {b"ENCODING": KeyRule} for a container command
    readonly: bool = False
    blocking: bool = False

    def keys(self, argv: Sequence) -> list | None:
        """The key arguments, or None when the server must be asked (``GETKEYS``)."""
        kind = self.kind
        if kind == "one":
            return [argv[self.index]] if len(argv) > self.index else []
        if kind == "none":
            return []
        if kind == "specs":
            found: dict[int, None] = {}
            for spec in self.specs:
                found.update(dict.fromkeys(spec.positions(argv)))
            return [argv[i] for i in sorted(found)]
        if kind == "sub":
            rule = self.sub(argv)
            return [] if rule is self else rule.keys(argv)
        return None

    def sub(self, argv: Sequence) -> KeyRule:
        """The rule that applies to ``argv`` (the subcommand's, for a container)."""
        if self.kind == "sub" and len(argv) > 1 and isinstance(argv[1], (str, bytes)):
            return self.subs.get(_upper(argv[1]), self)
        return self


_KEYLESS = KeyRule("none")
_UNKNOWN = KeyRule(GETKEYS)


class CommandTable:
    """Key rules by command name, from the server's ``COMMAND`` reply.

    ``rule(name)`` takes the name as given (any case, str or bytes) and caches it so the
    hot path is one dict lookup. A name the server did not list gets the ``GETKEYS``
    rule: the server decides (and says so if the command does not exist).
    """

    def __init__(self, rules: dict[bytes, KeyRule]) -> None:
        self._rules = rules
        self._cache: dict = {}

    @classmethod
    def from_command_reply(cls, reply: Sequence) -> CommandTable:
        rules = {}
        for entry in reply:
            if entry:
                rules[_upper(entry[0])] = _rule(entry)
        return cls(rules)

    def __len__(self) -> int:
        return len(self._rules)

    def rule(self, name: Any) -> KeyRule:
        try:
            return self._cache[name]
        except (KeyError, TypeError):
            pass
        try:
            rule = self._rules.get(_upper(name), _UNKNOWN)
        except (TypeError, AttributeError):
            return _UNKNOWN
        if len(self._cache) < 4096:  # names as callers spell them; bounded
            try:
                self._cache[name] = rule
            except TypeError:
                pass
        return rule


def _rule(entry: Sequence) -> KeyRule:
    flags = {_text(f) for f in entry[2]} if len(entry) > 2 else set()
    readonly = "readonly" in flags and "write" not in flags
    blocking = "blocking" in flags
    subcommands = entry[9] if len(entry) > 9 else []
    if subcommands:
        subs = {}
        for sub in subcommands:
            name = _upper(sub[0]).partition(b"|")[2]
            subs[name] = _rule(sub)
        return KeyRule("sub", subs=subs, readonly=readonly, blocking=blocking)
    if len(entry) > 8:  # Redis 7+: key specs
        specs = []
        for raw in entry[8]:
            spec = _spec(raw)
            if spec is None:
                return KeyRule(GETKEYS, readonly=readonly, blocking=blocking)
            specs.append(spec)
        if not specs:
            return KeyRule("none", readonly=readonly, blocking=blocking)
        if len(specs) == 1:
            s = specs[0]
            if s.begin == "index" and s.find == "range" and s.lastkey == 0:
                return KeyRule("one", index=s.index, readonly=readonly, blocking=blocking)
        return KeyRule("specs", specs=tuple(specs), readonly=readonly, blocking=blocking)
    # Before key specs: first, last, step (movablekeys: only the server knows)
    first, last, step = int(entry[3]), int(entry[4]), int(entry[5])
    if "movablekeys" in flags:
        return KeyRule(GETKEYS, readonly=readonly, blocking=blocking)
    if first == 0:
        return KeyRule("none", readonly=readonly, blocking=blocking)
    if first == last:
        return KeyRule("one", index=first, readonly=readonly, blocking=blocking)
    spec = KeySpec("index", index=first, lastkey=last - first if last >= 0 else last, keystep=step)
    return KeyRule("specs", specs=(spec,), readonly=readonly, blocking=blocking)


def _spec(raw: Any) -> KeySpec | None:
    """A key spec from its RESP2 form, or None for one only the server can follow."""
    fields = _pairs(raw)
    if "incomplete" in {_text(f) for f in fields.get("flags", ())}:
        return None
    begin = _pairs(fields.get("begin_search", []))
    find = _pairs(fields.get("find_keys", []))
    bspec = _pairs(begin.get("spec", []))
    fspec = _pairs(find.get("spec", []))
    btype, ftype = _text(begin.get("type")), _text(find.get("type"))
    if btype == "index":
        kw: dict = {"begin": "index", "index": int(bspec["index"])}
    elif btype == "keyword":
        kw = {"begin": "keyword", "keyword": _upper(bspec["keyword"]), "startfrom": int(bspec["startfrom"])}
    else:
        return None
    if ftype == "range":
        kw.update(
            find="range",
            lastkey=int(fspec["lastkey"]),
            keystep=int(fspec["keystep"]),
            limit=int(fspec["limit"]),
        )
    elif ftype == "keynum":
        kw.update(
            find="keynum",
            keynumidx=int(fspec["keynumidx"]),
            firstkey=int(fspec["firstkey"]),
            keystep=int(fspec["keystep"]),
        )
    else:
        return None
    return KeySpec(**kw)


# -- one slot per command ----------------------------------------------------


def crossslot(slots: Iterable[int], what: str = "Keys in request") -> ReplyError:
    """The error for keys in more than one slot, naming the slots (as Redis's CROSSSLOT
    does, plus which slots): nothing was sent."""
    named = ", ".join(str(s) for s in sorted(set(slots)))
    return ReplyError(
        f"CROSSSLOT {what} don't hash to the same slot (slots {named}); nothing was sent "
        "(put the keys in one slot with a {hash tag})"
    )


def key_crcs(keys: Sequence) -> list[int]:
    """For each key, the CRC16 whose low 14 bits are its slot (as ``key_slot``; a
    ``Route.table`` takes it as it is). C-level passes when the keys are all str or all
    bytes (hash tags included); other bytes-likes and keys of mixed kinds one by one."""
    try:
        joined: Any = "".join(keys)
    except TypeError:
        try:
            joined = b"".join(keys)
        except TypeError:  # mixed kinds (or ints): one by one
            return list(map(key_slot, keys))
        if b"{" in joined:  # (bytes-likes with tags: not measurably faster in bulk)
            return list(map(key_slot, keys))
        return list(map(crc_hqx, keys, repeat(0)))
    if "{" in joined:
        return _tagged_crcs(keys)
    return list(map(crc_hqx, map(str.encode, keys), repeat(0)))


def _tagged_crcs(keys: Sequence[str]) -> list[int]:
    """``key_crcs`` of str keys some of which have a ``{``: the tag is the text between
    the first ``{`` and the next ``}``, when that is not empty."""
    tagged = list(compress(range(len(keys)), map(contains, keys, repeat("{"))))
    some = keys if len(tagged) == len(keys) else list(map(keys.__getitem__, tagged))
    after = map(itemgetter(2), map(str.partition, some, repeat("{")))
    hashed = [
        tag if tag and sep else key
        for key, (tag, sep, _) in zip(some, map(str.partition, after, repeat("}")))
    ]
    crcs = list(map(crc_hqx, map(str.encode, hashed), repeat(0)))
    if some is keys:
        return crcs
    every = list(map(crc_hqx, map(str.encode, keys), repeat(0)))
    for j, crc in zip(tagged, crcs):
        every[j] = crc
    return every


def split_keys(keys: Sequence, route: Route) -> list[list[int]]:
    """The positions of ``keys`` (0, 1, ...) grouped by the node that owns each key's
    slot: ``groups[i]`` belongs to ``route.nodes[i]``, in ascending order (a node runs its
    part in the caller's order)."""
    groups: list[list[int]] = [[] for _ in route.nodes]
    appends = [group.append for group in groups]
    for i, node in enumerate(map(route.table.__getitem__, key_crcs(keys))):
        appends[node](i)
    return groups


def slot_of_keys(keys: Sequence) -> int | None:
    """The one slot of ``keys`` (None for none); raises the CROSSSLOT ReplyError otherwise."""
    if not keys:
        return None
    slot = key_slot(keys[0])
    for key in keys[1:]:
        if key_slot(key) != slot:
            raise crossslot(key_slot(k) for k in keys)
    return slot
