"""Apply the write commands a Redis master propagates to a local ``Keyspace``.

``Applier(keyspace).apply(argv)`` changes the data exactly as a Redis replica would, for
the forms a Redis 7 master propagates (SET ... PXAT, PEXPIREAT, XCLAIM ... FORCE, effects of
scripts inside MULTI/EXEC, ...) and the client forms older masters send where they can be
replayed. What cannot be applied exactly raises ``ApplyError``: the replica must then
resync in full rather than serve a wrong value. Keys are never expired here; a master
sends DEL/UNLINK for them.

MULTI ... EXEC is queued and applied at EXEC all or nothing (``txn.Undo`` puts the data
back if a queued command fails). Dispatch is one dict lookup from the command name to a
function; each command family lives in its own module as a mixin of ``Applier``.
"""

import functools

from greenredis.replication.applier.base import ApplyError
from greenredis.replication.applier.geo import GeoMixin
from greenredis.replication.applier.hashes import HashesMixin
from greenredis.replication.applier.hll import HyperLogLogMixin
from greenredis.replication.applier.keys import KeysMixin
from greenredis.replication.applier.lists import ListsMixin
from greenredis.replication.applier.sets import SetsMixin
from greenredis.replication.applier.sort import SortMixin
from greenredis.replication.applier.streams import StreamsMixin
from greenredis.replication.applier.strings import StringsMixin
from greenredis.replication.applier.txn import Undo
from greenredis.replication.applier.zsets import ZSetsMixin
from greenredis.replication.keyspace import Keyspace

__all__ = ["Applier", "ApplyError", "commands", "REFUSED"]

# Anything else a handler raises (bad arguments surface as IndexError, ValueError, ...; a bug
# as anything) also means the local copy cannot be trusted: it becomes an ApplyError too.
_ARG_ERRORS = Exception


class Applier(
    KeysMixin,
    StringsMixin,
    ListsMixin,
    SetsMixin,
    HashesMixin,
    ZSetsMixin,
    StreamsMixin,
    SortMixin,
    GeoMixin,
    HyperLogLogMixin,
):
    """Applies replicated commands to ``keyspace`` (a new ``Keyspace`` by default).

    ``apply(argv)`` takes one command as a list of bytes and returns the ``(db, key)``
    pairs it changed. ``db`` is the selected database. ``applied`` counts commands.
    ``hll_sparse_max_bytes`` must be the master's ``hll-sparse-max-bytes`` (Redis's
    default, 3000, unless given): it decides when PFADD/PFMERGE turn an HLL dense.
    """

    def __init__(self, keyspace=None, hll_sparse_max_bytes=None):
        self.keyspace = keyspace if keyspace is not None else Keyspace()
        if hll_sparse_max_bytes is not None:
            if int(hll_sparse_max_bytes) < 0:
                raise ValueError(f"hll_sparse_max_bytes must be >= 0, not {hll_sparse_max_bytes!r}")
            self.hll_sparse_max_bytes = int(hll_sparse_max_bytes)
        self.applied = 0
        self._queue = None  # list of (handler, argv) between MULTI and EXEC
        self._aborted = False  # a command of the open transaction was refused
        # functions, not bound methods: a dict of bound methods would be a cycle through
        # self, keeping each old Keyspace alive until a full GC after a resync
        self._handlers = _dispatch_table(type(self))
        self.select(0)

    def reset(self, keyspace=None):
        """Start over on ``keyspace`` (after a full resync): db 0, no open transaction."""
        self.keyspace = keyspace if keyspace is not None else Keyspace()
        self._queue = None
        self._aborted = False
        self.select(0)

    @property
    def db(self):
        """The selected db; setting it is SELECT."""
        return self._db

    @db.setter
    def db(self, index):
        self.select(index)

    def select(self, index):
        self._db = index
        self._bind()

    def _bind(self):
        db = self.keyspace.db(self._db)
        self.data = db.data
        self.expires = db.expires
        self.fexp = db.field_expires

    def apply(self, argv):
        """Apply one propagated command; returns ``[(db, key), ...]`` it changed."""
        try:
            handler = self._handlers[argv[0]]
        except (KeyError, IndexError, TypeError):
            try:
                handler = self._handlers.get(bytes(argv[0]).upper()) if argv else None
            except TypeError:
                handler = None
            if handler is None:
                if self._queue is not None:
                    self._aborted = True  # the whole transaction cannot be applied
                raise ApplyError(f"unknown or unsupported command {argv[:1]!r}") from None
        if self._queue is not None and handler.__name__ not in ("_exec", "_discard", "_multi"):
            self._queue.append((handler, argv))
            return []
        self.applied += 1
        try:
            return handler(self, argv)
        except ApplyError:
            raise
        except _ARG_ERRORS as e:
            raise ApplyError(f"cannot apply {argv[0]!r}: {type(e).__name__}: {e}") from e

    def apply_all(self, argvs):
        """``apply()`` each command of ``argvs`` in order, dropping what they touched (the
        replica's bulk path). Returns how many were applied; on a failure the ApplyError (or
        whatever interrupted it) has ``index``, the position of the command that failed (the
        ones before it are applied)."""
        handlers = self._handlers
        multi = _multi_function(type(self))
        slow = 0  # commands left to apply(), which counts its own
        i = -1
        try:
            for i, argv in enumerate(argvs):  # noqa: B007 (i is read after the loop)
                if self._queue is None:
                    try:
                        handler = handlers[argv[0]]
                    except (KeyError, IndexError, TypeError):
                        handler = multi  # to the general path
                    if handler is not multi:
                        try:
                            handler(self, argv)
                        except ApplyError:
                            raise
                        except _ARG_ERRORS as e:
                            raise ApplyError(f"cannot apply {argv[0]!r}: {type(e).__name__}: {e}") from e
                        continue
                slow += 1
                self.apply(argv)  # the general path: names in any case, transactions
        except BaseException as e:  # ApplyError; or an interrupt, which also applied the ones before
            e.index = i
            self.applied += i + 1 - slow
            raise
        self.applied += i + 1 - slow
        return i + 1

    # ---- transactions ----

    def _multi(self, argv):
        if self._queue is not None:
            raise ApplyError("MULTI calls can not be nested")
        self._queue = []
        self._aborted = False
        return []

    def _discard(self, argv):
        if self._queue is None:
            raise ApplyError("DISCARD without MULTI")
        self._queue = None
        self._aborted = False
        return []

    def _exec(self, argv):
        """Apply the queued commands all or nothing: on an error the data is rolled back."""
        queue = self._queue
        if queue is None:
            raise ApplyError("EXEC without MULTI")
        self._queue = None
        if self._aborted:
            self._aborted = False
            raise ApplyError("EXEC of a transaction with a command that cannot be applied")
        undo = Undo(self)
        touched = []
        try:
            for handler, args in queue:
                undo.before(args)
                self.applied += 1
                touched += handler(self, args)
        except BaseException as e:
            undo.rollback()
            if isinstance(e, _ARG_ERRORS) and not isinstance(e, ApplyError):
                raise ApplyError(f"cannot apply {args[0]!r} in EXEC: {type(e).__name__}: {e}") from e
            raise
        return list(dict.fromkeys(touched))


@functools.cache
def _multi_function(cls):
    return _dispatch_table(cls)[b"MULTI"]


@functools.cache
def _dispatch_table(cls):
    """Command name (upper and lower case) -> the function applying it, for ``cls``."""
    table = {}
    for name in dir(cls):
        if name.startswith("cmd_"):
            command = name[4:].encode()
            table[command.upper()] = table[command] = getattr(cls, name)
    table[b"RESTORE-ASKING"] = cls.cmd_restore  # cluster slot migration
    for command in (b"MULTI", b"EXEC", b"DISCARD"):
        table[command] = table[command.lower()] = getattr(cls, "_" + command.lower().decode())
    return table


# Known, and always refused: their effect cannot be reproduced exactly (a random pick, the
# master's clock, verbatim scripts, approximate trims come rewritten).
REFUSED = frozenset(
    [
        b"SPOP",
        b"EVAL",
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
        b"XREADGROUP",
        b"XAUTOCLAIM",
    ]
)


def commands():
    """The command names (upper-case bytes) the applier applies (``REFUSED`` ones excluded)."""
    names = {name[4:].upper().encode() for name in dir(Applier) if name.startswith("cmd_")}
    return sorted((names | {b"MULTI", b"EXEC", b"DISCARD", b"RESTORE-ASKING"}) - REFUSED)
