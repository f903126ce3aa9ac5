"""The replica's in-memory data model: what an RDB load builds and replicated commands change.

Values are plain Python objects, chosen so a reader gets what Redis holds:

=========  ===========================================================
string     ``bytes`` (int-encoded strings become their decimal bytes)
list       ``collections.deque`` of ``bytes``
set        ``Set``: a ``dict`` ``member -> None`` in Redis's iteration order
           where Redis has one (intset, listpack), with Redis's encoding
hash       ``dict`` ``bytes -> bytes``, or ``PackedHash`` as loaded (a read-only
           mapping over Redis's listpack bytes, decoded on first read)
zset       ``ZSet``: a ``dict`` ``member -> float score``, ordered on demand
stream     ``Stream``
=========  ===========================================================

Expiry is kept per db as absolute unix time in milliseconds, like Redis does.
Hash field expiry (Redis 7.4 / Valkey 9) is kept per key as ``field -> ms``.
"""

import functools
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "Keyspace",
    "Db",
    "ZSet",
    "Set",
    "PackedHash",
    "Stream",
    "StreamID",
    "ConsumerGroup",
    "Consumer",
    "PendingEntry",
    "type_name",
]


# Redis's defaults for zset-max-listpack-entries / zset-max-listpack-value.
ZSET_LISTPACK_ENTRIES = 128
ZSET_LISTPACK_VALUE = 64


# Redis's defaults for set-max-intset-entries, set-max-listpack-entries / -value (7.2+).
SET_INTSET_ENTRIES = 512
SET_LISTPACK_ENTRIES = 128
SET_LISTPACK_VALUE = 64
INTSET, LISTPACK, HASHTABLE = "intset", "listpack", "hashtable"


def is_int64(member: bytes) -> bool:
    """Whether Redis's ``string2ll`` takes ``member``: what an intset may hold."""
    if not 0 < len(member) <= 20:
        return False
    try:
        n = int(member)
    except ValueError:
        return False
    return b"%d" % n == member and -(1 << 63) <= n < (1 << 63)


class Set(dict):
    """A set: ``member -> None``, with the encoding Redis gives it (``encoding``).

    Redis 7.2+ (and Valkey) iterate a listpack set in insertion order and an intset in
    numeric order, so SORT's ties and the *STORE commands show that order; ``ordered()``
    gives it. ``add`` follows ``setTypeAddAux``'s conversions (intset -> listpack when a
    non-integer comes and it fits, intset/listpack -> hashtable past the limits, never
    back); ``discard`` never converts. A hashtable's order is Redis's hash order, which
    no replica reproduces: ``ordered()`` then returns insertion order, arbitrary as Redis's.
    (Before 7.2 a set that is not an intset is always a hashtable.)
    """

    __slots__ = ("encoding",)

    def __init__(self, members=(), encoding=INTSET):
        super().__init__()
        self.encoding = encoding
        for m in members:
            self.add(m)

    def __eq__(self, other):
        if isinstance(other, (set, frozenset)):
            return self.keys() == other
        return dict.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def add(self, member: bytes) -> bool:
        """Add ``member`` as ``setTypeAdd`` does; True if it was not there."""
        if member in self:
            return False
        enc = self.encoding
        if enc == INTSET:
            if is_int64(member):
                if len(self) + 1 > SET_INTSET_ENTRIES:
                    self.encoding = HASHTABLE
            elif len(self) < SET_LISTPACK_ENTRIES and len(member) <= SET_LISTPACK_VALUE:
                # the listpack starts as the intset's numeric order, then appends
                ordered = sorted(self, key=int)
                self.clear()
                self.update(dict.fromkeys(ordered))
                self.encoding = LISTPACK
            else:
                self.encoding = HASHTABLE
        elif enc == LISTPACK:
            if len(self) >= SET_LISTPACK_ENTRIES or len(member) > SET_LISTPACK_VALUE:
                self.encoding = HASHTABLE
        self[member] = None
        return True

    def add_all(self, members) -> int:
        """``add`` each; how many were new."""
        return sum(self.add(m) for m in members)

    def discard(self, member: bytes) -> bool:
        """Remove ``member`` if there (the encoding stays); True if it was there."""
        try:
            del self[member]
        except KeyError:
            return False
        return True

    def expect(self, size_hint: int) -> None:
        """``setTypeMaybeConvert``: a hashtable now if ``size_hint`` members would not fit."""
        if (self.encoding == LISTPACK and size_hint > SET_LISTPACK_ENTRIES) or (
            self.encoding == INTSET and size_hint > SET_INTSET_ENTRIES
        ):
            self.encoding = HASHTABLE

    @classmethod
    def create(cls, first: bytes, size_hint: int) -> "Set":
        """An empty set as ``setTypeCreate(first, size_hint)`` makes it for SADD/SMOVE."""
        if is_int64(first) and size_hint <= SET_INTSET_ENTRIES:
            return cls(encoding=INTSET)
        if size_hint <= SET_LISTPACK_ENTRIES:
            return cls(encoding=LISTPACK)
        return cls(encoding=HASHTABLE)

    def ordered(self) -> list:
        """The members in Redis's iteration order (see the class docstring)."""
        if self.encoding == INTSET:
            return sorted(self, key=int)
        return list(self)

    def copy(self) -> "Set":
        c = Set(encoding=self.encoding)
        c.update(self)
        return c

    def __repr__(self):
        return f"Set({list(self)!r}, {self.encoding})"


class ZSet(dict):
    """A sorted set: ``member -> score``. ``ordered()`` gives Redis's order.

    ``skiplist`` mirrors Redis's encoding where it shows in the data (a listpack stores
    an integral score as an integer, so -0 loses its sign): True once the set outgrew a
    listpack (Redis never converts back). Unset until known; ``listpack()`` then decides
    by size, as Redis does for a set it loads from an RDB or a RESTORE payload.
    """

    __slots__ = ("skiplist",)

    def listpack(self):
        """True if Redis holds this set as a listpack (default size limits assumed)."""
        try:
            return not self.skiplist
        except AttributeError:
            big = len(self) > ZSET_LISTPACK_ENTRIES or any(len(m) > ZSET_LISTPACK_VALUE for m in self)
            self.skiplist = big
            return not big

    def ordered(self):
        """``[(member, score), ...]`` by score, then member, as ZRANGE returns them."""
        return sorted(self.items(), key=lambda ms: (ms[1], ms[0]))

    def __repr__(self):
        return f"ZSet({dict.__repr__(self)})"


class PackedHash(Mapping):
    """A hash as the RDB stored it: Redis's listpack bytes, decoded on first read.

    Redis itself serves a small hash from its listpack; keeping the bytes makes a full sync
    of listpack hashes several times faster than building their dicts, and an unread hash
    costs only its blob. It is a read-only ``Mapping`` of ``bytes -> bytes``, read like a
    ``types.MappingProxyType`` of the fields: ``h[f]``, ``get``, ``in``, ``len``, iteration
    and ``reversed()`` in the listpack's order, ``keys()``/``items()``/``values()``, ``==`` a
    dict of the same fields, ``copy()`` (a plain ``dict``, to change) and ``h | other`` (a
    new dict). It is not a ``dict`` (``isinstance(h, dict)`` is False) and cannot be changed:
    the applier replaces it with a dict (``unpack()``) at the first command that changes the
    hash. The load checks the header (size, element count, terminator); a blob that is
    corrupt inside raises ``CorruptValueError`` (an ``RDBError`` and an ``EncodingError``) on
    every read, where Redis, which checks no more by default, would crash.
    """

    __slots__ = ("_listpack", "_fields")
    _listpack: bytes | None  # dropped once decoded
    _fields: dict | None

    def __init__(self, listpack: bytes):
        self._listpack = listpack
        self._fields = None

    def fields(self) -> dict:
        """The decoded fields, cached (shared: do not change them)."""
        f = self._fields
        if f is None:
            lp = self._listpack
            try:
                f = _listpack_dict()(lp)
            except ValueError as exc:  # EncodingError
                from greenredis.replication.rdb.parser import CorruptValueError

                raise CorruptValueError(f"corrupt listpack hash of {len(lp or b'')} bytes: {exc}") from None
            self._fields = f
            self._listpack = None
        return f

    def unpack(self) -> dict:
        """A new dict of the fields, to change."""
        return dict(self.fields())

    copy = unpack

    def __reversed__(self):
        return reversed(self.fields())

    def __or__(self, other):  # with the operator, as a mappingproxy: other.__ror__ gets its turn
        return self.fields() | (other.fields() if isinstance(other, PackedHash) else other)

    def __ror__(self, other):
        return other | self.fields()

    def __getitem__(self, field):
        return self.fields()[field]

    def __iter__(self):
        return iter(self.fields())

    def __len__(self):
        return len(self.fields())

    def __bool__(self):
        return True  # the load packs only listpacks that hold fields

    def __contains__(self, field):
        return field in self.fields()

    def get(self, field, default=None):
        return self.fields().get(field, default)

    def keys(self):
        return self.fields().keys()

    def items(self):
        return self.fields().items()

    def values(self):
        return self.fields().values()

    def __eq__(self, other):
        if isinstance(other, PackedHash):
            other = other.fields()
        return self.fields() == other if isinstance(other, dict) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self):
        if self._fields is None:
            return f"PackedHash(<{len(self._listpack or b'')} bytes, not read yet>)"
        return f"PackedHash({self._fields!r})"


@functools.cache
def _listpack_dict():
    """The decoder, imported once (an import in ``fields()`` cost a fifth of a decode);
    not at the top because greenredis.replication.rdb imports this module."""
    from greenredis.replication.rdb.encodings import listpack_dict

    return listpack_dict


class StreamID(NamedTuple):
    ms: int
    seq: int

    def __str__(self):
        return f"{self.ms}-{self.seq}"

    def encode(self):
        return f"{self.ms}-{self.seq}".encode()


class PendingEntry:
    """One entry of a consumer group's PEL."""

    __slots__ = ("consumer", "delivery_time", "delivery_count")

    def __init__(self, consumer, delivery_time, delivery_count):
        self.consumer = consumer  # bytes: the consumer's name
        self.delivery_time = delivery_time  # ms
        self.delivery_count = delivery_count

    def __eq__(self, other):
        return isinstance(other, PendingEntry) and (
            self.consumer,
            self.delivery_time,
            self.delivery_count,
        ) == (other.consumer, other.delivery_time, other.delivery_count)

    def __repr__(self):
        return f"PendingEntry({self.consumer!r}, {self.delivery_time}, {self.delivery_count})"


class Consumer:
    __slots__ = ("name", "seen_time", "active_time", "pending")

    def __init__(self, name, seen_time=0, active_time=-1, pending=None):
        self.name = name
        self.seen_time = seen_time  # ms
        self.active_time = active_time  # ms, -1 when unknown (RDB before v11)
        self.pending = pending if pending is not None else set()  # StreamIDs

    def __repr__(self):
        return f"Consumer({self.name!r}, pending={len(self.pending)})"


class ConsumerGroup:
    __slots__ = ("name", "last_id", "entries_read", "pending", "consumers")

    def __init__(self, name, last_id, entries_read=-1):
        self.name = name
        self.last_id = last_id  # StreamID
        self.entries_read = entries_read  # -1 when unknown
        self.pending = {}  # StreamID -> PendingEntry, in id order
        self.consumers = {}  # name -> Consumer

    def __repr__(self):
        return (
            f"ConsumerGroup({self.name!r}, last_id={self.last_id}, "
            f"pending={len(self.pending)}, consumers={list(self.consumers)})"
        )


class Stream:
    """A stream: entries in id order, plus its metadata and consumer groups."""

    __slots__ = ("entries", "last_id", "first_id", "max_deleted_id", "entries_added", "groups")

    def __init__(self):
        self.entries = {}  # StreamID -> [(field, value), ...], kept in id order
        self.last_id = StreamID(0, 0)
        self.first_id = StreamID(0, 0)
        self.max_deleted_id = StreamID(0, 0)
        self.entries_added = 0
        self.groups = {}  # name -> ConsumerGroup

    def __len__(self):
        return len(self.entries)

    def copy(self):
        """An independent copy (ids and bytes are immutable and shared); by hand,
        because deepcopy is ~100x slower on big streams."""
        c = Stream()
        c.entries = {sid: list(fields) for sid, fields in self.entries.items()}
        c.last_id, c.first_id, c.max_deleted_id = self.last_id, self.first_id, self.max_deleted_id
        c.entries_added = self.entries_added
        for name, g in self.groups.items():
            cg = c.groups[name] = ConsumerGroup(g.name, g.last_id, g.entries_read)
            cg.pending = {
                sid: PendingEntry(p.consumer, p.delivery_time, p.delivery_count)
                for sid, p in g.pending.items()
            }
            cg.consumers = {
                n: Consumer(k.name, k.seen_time, k.active_time, set(k.pending))
                for n, k in g.consumers.items()
            }
        return c

    def __repr__(self):
        return f"Stream({len(self.entries)} entries, last_id={self.last_id}, groups={list(self.groups)})"


_TYPE_NAMES = {
    bytes: "string",
    deque: "list",
    Set: "set",
    dict: "hash",
    PackedHash: "hash",
    ZSet: "zset",
    Stream: "stream",
}


def type_name(value):
    """Redis's TYPE name of a value of this model ("none" for None)."""
    if value is None:
        return "none"
    return _TYPE_NAMES[type(value)]


class Db:
    """One numbered database: keys, their expiry (ms) and hash field expiry."""

    __slots__ = ("data", "expires", "field_expires", "hll_past_end")

    def __init__(self):
        self.data = {}  # key -> value
        self.expires = {}  # key -> unix ms
        self.field_expires = {}  # key -> {field: unix ms}, hashes with HFE only
        # key -> (value, byte): the non-zero byte Redis's buffer holds just past the end of
        # a corrupt sparse HLL (see hyperloglog.pfadd_tail); only while ``value`` is still
        # the key's value (the same object), so every other write forgets it
        self.hll_past_end = {}

    def __len__(self):
        return len(self.data)


class Keyspace:
    """All databases of one dataset, plus server-wide state an RDB carries."""

    __slots__ = ("dbs", "functions", "aux", "__weakref__")  # weakref: tests see old copies freed

    def __init__(self):
        self.dbs = {}  # db number -> Db, created on first use
        self.functions = []  # FUNCTION library sources (bytes)
        self.aux = {}  # RDB AUX fields: bytes -> bytes

    def db(self, index):
        db = self.dbs.get(index)
        if db is None:
            db = self.dbs[index] = Db()
        return db

    def key_count(self):
        return sum(len(db) for db in self.dbs.values())
