"""Undo for MULTI/EXEC: what lets a transaction apply all or nothing.

Before each queued command runs, the keys it may write are saved, once per transaction:
small values and strings by copy, big collections (where a copy would cost more than the
command) by recording the inverse of the common edits (pushes, pops, adds, removes, field
and score updates, XADD, TTL changes). Commands with no cheap inverse copy the value.
The Db dicts themselves (replaced by FLUSHDB/FLUSHALL, swapped by SWAPDB), the set of dbs
and the function libraries are saved up front; that is cheap.
"""

from collections import deque

from greenredis.replication.applier.base import copy_value
from greenredis.replication.keyspace import HASHTABLE, Set, Stream, ZSet

BIG = 256  # values with fewer elements than this are simply copied

_MULTI_KEY = {b"DEL", b"UNLINK", b"BLPOP", b"BRPOP", b"BZPOPMIN", b"BZPOPMAX"}
_TWO_KEYS = {b"RENAME", b"RENAMENX", b"SMOVE", b"RPOPLPUSH", b"LMOVE", b"BRPOPLPUSH", b"BLMOVE"}
_NO_KEYS = {
    b"SELECT",
    b"PING",
    b"REPLCONF",
    b"PUBLISH",
    b"SPUBLISH",
    b"FUNCTION",
    b"SCRIPT",
    b"SWAPDB",
    b"FLUSHDB",
    b"FLUSHALL",
    b"MULTI",
    b"EXEC",
    b"DISCARD",
}


def written_keys(name, argv):
    """The keys of the current db a command may change (an over-approximation is safe)."""
    if name in _NO_KEYS:
        return ()
    if name in _MULTI_KEY:
        return argv[1:]
    if name in (b"MSET", b"MSETNX"):
        return argv[1::2]
    if name in _TWO_KEYS:
        return argv[1:3]
    if name == b"BITOP":
        return argv[2:3]
    if name in (b"XGROUP", b"PFDEBUG"):
        return argv[2:3]
    if name in (
        b"LMPOP",
        b"ZMPOP",
        b"BLMPOP",
        b"BZMPOP",
        b"SORT",
        b"GEORADIUS",
        b"GEORADIUSBYMEMBER",
        b"COPY",
        b"MOVE",
    ):
        return argv[1:]  # keys after numkeys / STORE targets / the source: take every argument
    return argv[1:2]


class Undo:
    """Records what a transaction changes, and puts it back on ``rollback()``."""

    def __init__(self, applier):
        self.applier = applier
        ks = applier.keyspace
        self.db = applier._db
        self.dbs = dict(ks.dbs)
        self.dicts = {n: (d.data, d.expires, d.field_expires) for n, d in ks.dbs.items()}
        self.functions = list(ks.functions)
        self.actions = []  # undo steps, run in reverse order
        self.mark = 0  # where the steps of the command being applied start
        self.saved = set()  # (id(data dict), key) restored by a copy: nothing more to record

    def before(self, argv):
        """Call before applying ``argv`` (it has not changed anything yet)."""
        self.mark = len(self.actions)
        name = argv[0].upper()
        ap = self.applier
        keys = written_keys(name, argv)
        if name in (b"COPY", b"MOVE"):
            self._other_db(name, argv)
        for key in keys:
            self._save(ap.data, ap.expires, ap.fexp, key, name, argv, key is argv[1])

    def _other_db(self, name, argv):
        """COPY ... DB n and MOVE write a key of another db: save it there too."""
        target = None
        if name == b"MOVE" and len(argv) == 3:
            target, key = argv[2], argv[1]
        elif name == b"COPY":
            key = argv[2] if len(argv) > 2 else None
            for i in range(3, len(argv) - 1):
                if argv[i].upper() == b"DB":
                    target = argv[i + 1]
        if target is None or key is None:
            return
        try:
            index = int(target)
        except ValueError:
            return
        ks = self.applier.keyspace
        if index not in ks.dbs:
            return  # a db made during the transaction goes away as a whole
        db = ks.dbs[index]
        self._save(db.data, db.expires, db.field_expires, key, b"", argv, False)

    def _save(self, data, expires, fexp, key, name, argv, main):
        mark = (id(data), key)
        if mark in self.saved:
            return
        value = data.get(key)
        if name in (b"DEL", b"UNLINK"):
            # A deleted value is unreachable afterwards: keep the object itself, no copy.
            self.saved.add(mark)
            fields = fexp.get(key)
            self.actions.append(
                _Restore(
                    data,
                    expires,
                    fexp,
                    key,
                    value,
                    expires.get(key),
                    None if fields is None else dict(fields),
                )
            )
            return
        if main and value is not None and type(value) is not bytes and len(value) >= BIG:
            inverse = _inverse(name, argv, data, expires, fexp, key, value)
            if inverse is not None:
                self.actions.append(inverse)
                return
        self.saved.add(mark)
        fields = fexp.get(key)
        self.actions.append(
            _Restore(
                data,
                expires,
                fexp,
                key,
                None if value is None else copy_value(value),
                expires.get(key),
                None if fields is None else dict(fields),
            )
        )

    def rollback(self):
        """Undo everything; the command that failed changed nothing (handlers check first),
        so its inverse steps are dropped rather than run."""
        self.actions[self.mark :] = [a for a in self.actions[self.mark :] if type(a) is _Restore]
        ks = self.applier.keyspace
        ks.dbs.clear()
        ks.dbs.update(self.dbs)
        ks.functions[:] = self.functions
        for n, (data, expires, fexp) in self.dicts.items():
            db = ks.dbs[n]
            db.data, db.expires, db.field_expires = data, expires, fexp
        for action in reversed(self.actions):
            action()
        self.applier.select(self.db)


class _Restore:
    """Put a key back as it was (a copy of the value, its TTL and field TTLs)."""

    __slots__ = ("dicts", "key", "state")

    def __init__(self, data, expires, fexp, key, value, ttl, fields):
        self.dicts = (data, expires, fexp)
        self.key = key
        self.state = (value, ttl, fields)

    def __call__(self):
        for d, v in zip(self.dicts, self.state):
            if v is None:
                d.pop(self.key, None)
            else:
                d[self.key] = v


def _inverse(name, argv, data, expires, fexp, key, value):
    """An undo step for a common edit of a big collection, or None to copy it instead.

    The step finds the value through the dict at undo time, so it also works on a copy
    that a later step put back first.
    """
    meta = _meta_restorer(expires, fexp, key)
    if name in (b"PEXPIREAT", b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PERSIST"):
        return meta
    inverse = _INVERSES.get((type(value), name))
    return None if inverse is None else inverse(name, argv, data, key, value, meta)


def _meta_restorer(expires, fexp, key):
    """A step that puts back the key's TTL and field TTLs as they are now."""
    ttl = expires.get(key)
    fields = fexp.get(key)
    fields = None if fields is None else dict(fields)

    def meta():
        if ttl is None:
            expires.pop(key, None)
        else:
            expires[key] = ttl
        if fields is None:
            fexp.pop(key, None)
        else:
            fexp[key] = dict(fields)

    return meta


def _undo_push(name, argv, data, key, value, meta):
    n = len(argv) - 2
    left = name in (b"LPUSH", b"LPUSHX")

    def undo_push():
        lst = data[key]
        pop = lst.popleft if left else lst.pop
        for _ in range(n):
            pop()

    return undo_push


def _undo_pop(name, argv, data, key, value, meta):
    try:
        count = int(argv[2]) if len(argv) > 2 else 1
    except ValueError:
        return None
    if not 0 <= count < len(value):
        return None  # would empty the list: copy it
    left = name == b"LPOP"
    popped = [value[i] for i in range(count)] if left else [value[-1 - i] for i in range(count)]

    def undo_pop():
        lst = data[key]
        if left:
            lst.extendleft(reversed(popped))
        else:
            lst.extend(reversed(popped))

    return undo_pop


def _undo_set(name, argv, data, key, value, meta):
    members = argv[2:]
    if name == b"SREM" and sum(m in value for m in set(members)) >= len(value):
        return None  # the key goes: the whole-key path restores it, TTL included
    if value.encoding != HASHTABLE:
        # small (<= 512 members): a copy keeps its encoding and listpack order
        before = value.copy()

        def undo_small():
            data[key] = before

        return undo_small
    # a hashtable stays one and has no order to keep: invert the change
    changed = {m for m in members if (m in value) == (name == b"SREM")}

    def undo_big():
        s = data[key]
        for m in changed:
            if name == b"SADD":
                s.discard(m)
            else:
                s[m] = None

    return undo_big


def _put_back(target, old):
    """Restore ``{field: old value or None (absent)}`` in a hash or zset."""
    for k, v in old.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = v


def _undo_hash(name, argv, data, key, value, meta):
    names = argv[2::2] if name in (b"HSET", b"HMSET") else (argv[2:] if name == b"HDEL" else argv[2:3])
    old = {f: value.get(f) for f in names}
    if name == b"HDEL" and sum(v is not None for v in old.values()) >= len(value):
        return None

    def undo_hash():
        _put_back(data[key], old)
        meta()

    return undo_hash


def _undo_zset(name, argv, data, key, value, meta):
    if name == b"ZREM":
        members = argv[2:]
    elif name == b"ZINCRBY":
        members = argv[3:4]
    else:
        i = 2
        while i < len(argv) and argv[i].upper() in (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"):
            i += 1
        members = argv[i + 1 :: 2]
    old = {m: value.get(m) for m in members}
    if name == b"ZREM" and sum(v is not None for v in old.values()) >= len(value):
        return None

    def undo_zset():
        _put_back(data[key], old)

    return undo_zset


def _undo_xadd(name, argv, data, key, value, meta):
    if any(a.upper() in (b"MAXLEN", b"MINID") for a in argv[2:-2]):
        return None
    state = (value.last_id, value.first_id, value.entries_added, value.max_deleted_id)
    last = next(reversed(value.entries), None)

    def undo_xadd():
        s = data[key]
        while s.entries and next(reversed(s.entries)) != last:
            s.entries.popitem()
        s.last_id, s.first_id, s.entries_added, s.max_deleted_id = state

    return undo_xadd


# (value type, command) -> the builder of its undo step
_INVERSES = {
    **{(deque, c): _undo_push for c in (b"LPUSH", b"RPUSH", b"LPUSHX", b"RPUSHX")},
    **{(deque, c): _undo_pop for c in (b"LPOP", b"RPOP")},
    (Set, b"SADD"): _undo_set,
    (Set, b"SREM"): _undo_set,
    **{(dict, c): _undo_hash for c in (b"HSET", b"HMSET", b"HSETNX", b"HDEL", b"HINCRBY", b"HINCRBYFLOAT")},
    **{(ZSet, c): _undo_zset for c in (b"ZADD", b"ZINCRBY", b"ZREM")},
    (Stream, b"XADD"): _undo_xadd,
}
