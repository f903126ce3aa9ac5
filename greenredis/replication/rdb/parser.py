"""An incremental RDB parser: bytes in, a ``Keyspace`` out. No sockets, no files.

Covers RDB versions 1 to 12 (Redis 1.x to 8.x) and Valkey 9's ``VALKEY080`` files:
every type and encoding Redis and Valkey write (strings raw/int/LZF; lists linked,
ziplist, quicklist, quicklist 2 with listpack and PLAIN nodes; sets hashtable, intset,
listpack; hashes hashtable, zipmap, ziplist, listpack and the hash-field-expiry types
of Redis 7.4+ and Valkey 9; sorted sets with text or binary scores, ziplist, listpack;
streams of all three versions with consumer groups), expiry, several databases,
AUX fields, functions, module values (skipped), and the CRC-64 trailer (verified).

Usage::

    p = RDBParser()
    for chunk in chunks:          # any sizes, even one byte at a time
        p.feed(chunk)
    keyspace = p.finish()         # raises RDBError unless the end was seen and verified

The parser keeps at most one incomplete record buffered. A record that does not fit
yet is re-parsed only once the bytes it is known to need have arrived, and big
collections (hashtable/quicklist encodings, streams down to each PEL entry) resume
element by element, so loading stays linear in the size of the file however it is
chunked. (A module value is the one record parsed as a whole.)

Module values cannot be represented without their module: they are skipped, counted
and reported to ``on_module``. The pre-GA module format of Redis 4.0 RCs (type 6) cannot
even be skipped and is an RDBError, as it is for redis-server without the module.
"""

import itertools
import struct
from collections import deque

from greenredis.replication.keyspace import (
    HASHTABLE,
    INTSET,
    LISTPACK,
    SET_INTSET_ENTRIES,
    SET_LISTPACK_ENTRIES,
    Consumer,
    ConsumerGroup,
    Keyspace,
    PackedHash,
    PendingEntry,
    Set,
    Stream,
    StreamID,
    ZSet,
)
from greenredis.replication.rdb.crc64 import crc64
from greenredis.replication.rdb.encodings import (
    EncodingError,
    intset_members,
    listpack_dict,
    listpack_entries,
    ziplist_entries,
    zipmap_pairs,
)
from greenredis.replication.rdb.lzf import LZFError, c_decompress
from greenredis.replication.rdb.lzf import decompress as _lzf_decompress
from greenredis.replication.rdb.names import (
    FIRST_OPCODE,
    Enc,
    ModuleOpcode,
    Opcode,
    QuicklistContainer,
    RDBType,
)

__all__ = [
    "RDBParser",
    "RDBError",
    "CorruptValueError",
    "decode_dump",
    "decode_function_dump",
    "load_file",
    "MAX_RDB_VERSION",
    "VALKEY_RDB_VERSION",
]

MAX_RDB_VERSION = 12  # newest Redis RDB version understood
VALKEY_RDB_VERSION = 80  # "VALKEY080": Valkey 9


class RDBError(Exception):
    """The RDB is corrupt, truncated or uses a format this parser does not support."""


class CorruptValueError(RDBError, EncodingError):
    """A value the load kept packed (a listpack hash, ``PackedHash``) is corrupt inside, found
    at its first read: the load checks what Redis checks by default (the listpack's header),
    Redis itself would crash there. ``key`` and ``db`` name it where the reader knows them
    (``Replica.get``; a ``PackedHash`` read directly does not know its key)."""

    def __init__(self, message, key=None, db=None):
        super().__init__(message)
        self.key = key
        self.db = db


class _Incomplete(Exception):
    """Internal: the record needs bytes up to ``need`` (an index into the buffer)."""

    __slots__ = ("need", "resume")

    def __init__(self, need, resume=None):
        self.need = need
        self.resume = resume


class _CallbackFailed(Exception):
    """Internal: a user callback raised; carries its exception out of the parse loop
    (where an IndexError would otherwise read as "need more bytes")."""

    def __init__(self, exc):
        self.exc = exc


class _Bad(Exception):
    """Internal: malformed input; becomes an RDBError with the byte offset."""


class _BadRecord(_Bad):
    """Internal: malformed input found after a run, at a record of it (``at`` in the buffer)."""

    def __init__(self, message, at, key):
        super().__init__(message)
        self.at = at
        self.key = key


# --- primitive readers over (buf, i) -> (value, new_i) ------------------------------

# plain ints for the hot paths (an IntEnum attribute is a slower compare)
_STRING, _HASH_LISTPACK = int(RDBType.STRING), int(RDBType.HASH_LISTPACK)
_FIRST_OPCODE, _EXPIRETIME_MS, _EOF = int(FIRST_OPCODE), int(Opcode.EXPIRETIME_MS), int(Opcode.EOF)
_32BITLEN, _64BITLEN = 0x80, 0x81  # RDB_32BITLEN, RDB_64BITLEN
_LZF_STRING = 0xC0 | int(Enc.LZF)  # RDB_ENCVAL | RDB_ENC_LZF
_ENC_INT8, _ENC_INT16, _ENC_INT32, _ENC_LZF = map(int, (Enc.INT8, Enc.INT16, Enc.INT32, Enc.LZF))

_unpack_double = struct.Struct("<d").unpack_from
_listpack_header = struct.Struct("<IH").unpack_from  # total bytes, element count


def _rlen(buf, i):
    """A length (RDB "length encoding")."""
    b = buf[i]
    t = b >> 6
    if t == 0:
        return b, i + 1
    if t == 1:
        return ((b & 0x3F) << 8) | buf[i + 1], i + 2
    if b == _32BITLEN:
        j = i + 5
        if j > len(buf):
            raise _Incomplete(j)
        return int.from_bytes(buf[i + 1 : j], "big"), j
    if b == _64BITLEN:
        j = i + 9
        if j > len(buf):
            raise _Incomplete(j)
        return int.from_bytes(buf[i + 1 : j], "big"), j
    raise _Bad(f"bad length encoding 0x{b:02x}")


def _rstr(buf, i):
    """A string: raw, integer-encoded (returned as decimal text) or LZF-compressed."""
    b = buf[i]
    t = b >> 6
    if t == 0:
        j = i + 1 + b
        if j > len(buf):
            raise _Incomplete(j)
        return buf[i + 1 : j], j
    if t == 1:
        i += 2
        j = i + (((b & 0x3F) << 8) | buf[i - 1])
        if j > len(buf):
            raise _Incomplete(j)
        return buf[i:j], j
    if t == 2:
        ln, i = _rlen(buf, i)
        j = i + ln
        if j > len(buf):
            raise _Incomplete(j)
        return buf[i:j], j
    enc = b & 0x3F
    if enc == _ENC_INT8:
        if i + 2 > len(buf):
            raise _Incomplete(i + 2)
        return b"%d" % int.from_bytes(buf[i + 1 : i + 2], "little", signed=True), i + 2
    if enc == _ENC_INT16:
        if i + 3 > len(buf):
            raise _Incomplete(i + 3)
        return b"%d" % int.from_bytes(buf[i + 1 : i + 3], "little", signed=True), i + 3
    if enc == _ENC_INT32:
        if i + 5 > len(buf):
            raise _Incomplete(i + 5)
        return b"%d" % int.from_bytes(buf[i + 1 : i + 5], "little", signed=True), i + 5
    if enc == _ENC_LZF:
        clen, i = _rlen(buf, i + 1)
        ulen, i = _rlen(buf, i)
        j = i + clen
        if ulen > 100 * clen + 64:
            # LZF expands at most ~90x; a bigger claim is corruption, not a reason to
            # allocate gigabytes.
            raise _Bad(f"LZF string claims {ulen} bytes from {clen}")
        if j > len(buf):
            raise _Incomplete(j)
        try:
            return _lzf_decompress(buf[i:j], ulen), j
        except LZFError as exc:
            raise _Bad(str(exc)) from None
    raise _Bad(f"unknown string encoding {enc}")


def _hash_value(lp):
    """A RDB_TYPE_HASH_LISTPACK value: kept packed if the listpack's header holds up (its
    size and terminator, as Redis checks it on load, and a count of at least one pair);
    else decoded now, which says what is wrong (or gives the empty dict of an empty one).
    An odd count is kept packed too: Redis loads it (its length is count / 2), so the
    master holds the key, and a read of it raises ``CorruptValueError``."""
    n = len(lp)
    if n > 6:
        size, count = _listpack_header(lp)
        if size == n and 2 <= count < 65535 and lp[n - 1] == 0xFF:  # 65535: "not known"
            return PackedHash(lp)
    return listpack_dict(lp)


def _rfixed(buf, i, width):
    j = i + width
    if j > len(buf):
        raise _Incomplete(j)
    return buf[i:j], j


def _rint64(buf, i):
    j = i + 8
    if j > len(buf):
        raise _Incomplete(j)
    return int.from_bytes(buf[i:j], "little", signed=True), j


def _rstream_id(buf, i):
    j = i + 16
    if j > len(buf):
        raise _Incomplete(j)
    return StreamID(int.from_bytes(buf[i : i + 8], "big"), int.from_bytes(buf[i + 8 : j], "big")), j


def _rdouble_text(buf, i):
    """A score of the old ZSET type: length byte + ASCII, or 253/254/255 = nan/+inf/-inf."""
    ln = buf[i]
    if ln == 253:
        return float("nan"), i + 1
    if ln == 254:
        return float("inf"), i + 1
    if ln == 255:
        return float("-inf"), i + 1
    j = i + 1 + ln
    if j > len(buf):
        raise _Incomplete(j)
    try:
        return float(buf[i + 1 : j]), j
    except ValueError:
        raise _Bad(f"bad score {buf[i + 1 : j]!r}") from None


def _as_int(raw):
    try:
        return int(raw)
    except ValueError:
        raise _Bad(f"expected an integer, got {raw!r}") from None


_MODULE_CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def module_name(module_id):
    """The 9-character module type name encoded in a 64-bit module id."""
    return "".join(_MODULE_CHARSET[(module_id >> (58 - 6 * k)) & 63] for k in range(9))


def _skip_module_payload(buf, i):
    """Skip a module value or aux payload in the opcode-annotated format (module 2)."""
    while True:
        op, i = _rlen(buf, i)
        if op == ModuleOpcode.EOF:
            return i
        if op == ModuleOpcode.SINT or op == ModuleOpcode.UINT:
            _, i = _rlen(buf, i)
        elif op == ModuleOpcode.FLOAT:
            _, i = _rfixed(buf, i, 4)
        elif op == ModuleOpcode.DOUBLE:
            _, i = _rfixed(buf, i, 8)
        elif op == ModuleOpcode.STRING:
            _, i = _rstr(buf, i)
        else:
            raise _Bad(f"unknown module opcode {op}")


# --- resumable collections -----------------------------------------------------------


class _Partial:
    """A collection being loaded element by element (so a huge one can resume)."""

    __slots__ = ("key", "remaining", "count", "value", "step", "fexp", "extra", "unique")

    def __init__(self, count, value, step, unique=False):
        self.key = None
        self.remaining = count
        self.count = count
        self.value = value
        self.step = step
        self.fexp = None  # hash field expiry: field -> ms
        self.extra = None
        self.unique = unique  # elements must be distinct (hashtable encodings)


def _step_list(st, buf, i):
    v, i = _rstr(buf, i)
    st.value.append(v)
    return i


def _step_set(st, buf, i):
    v, i = _rstr(buf, i)
    st.value.add(v)
    return i


def _step_zset_text(st, buf, i):
    m, i = _rstr(buf, i)
    s, i = _rdouble_text(buf, i)
    st.value[m] = s
    return i


def _step_zset_binary(st, buf, i):
    m, i = _rstr(buf, i)
    j = i + 8
    if j > len(buf):
        raise _Incomplete(j)
    st.value[m] = _unpack_double(buf, i)[0]
    return j


def _step_hash(st, buf, i):
    f, i = _rstr(buf, i)
    v, i = _rstr(buf, i)
    st.value[f] = v
    return i


def _step_hash_ttl_absolute(st, buf, i):
    """Redis 7.4 RC (type 22): [ttl as length (absolute ms, 0 = none)][field][value]."""
    ttl, i = _rlen(buf, i)
    f, i = _rstr(buf, i)
    v, i = _rstr(buf, i)
    st.value[f] = v
    if ttl:
        st.fexp[f] = ttl
    return i


def _step_hash_ttl_relative(st, buf, i):
    """Redis 7.4 GA (type 24): [ttl: length, min expiry + ttl - 1, or 0 = none][field][value]."""
    ttl, i = _rlen(buf, i)
    f, i = _rstr(buf, i)
    v, i = _rstr(buf, i)
    st.value[f] = v
    if ttl:
        st.fexp[f] = ttl + st.extra - 1
    return i


def _step_valkey_hash2(st, buf, i):
    """Valkey 9 (type 22 in VALKEY files): [field][value][int64 ms, -1 = none]."""
    f, i = _rstr(buf, i)
    v, i = _rstr(buf, i)
    ttl, i = _rint64(buf, i)
    st.value[f] = v
    if ttl != -1:
        st.fexp[f] = ttl
    return i


def _step_quicklist(st, buf, i):
    blob, i = _rstr(buf, i)
    st.value.extend(ziplist_entries(blob))
    return i


def _step_quicklist2(st, buf, i):
    container, i = _rlen(buf, i)
    blob, i = _rstr(buf, i)
    if container == QuicklistContainer.PACKED:  # a listpack
        st.value.extend(listpack_entries(blob))
    elif container == QuicklistContainer.PLAIN:  # one big element
        st.value.append(blob)
    else:
        raise _Bad(f"unknown quicklist container {container}")
    return i


class _StreamLoad:
    """Where a stream load stands: a stack of [unit kind, units left], and the group and
    consumer being filled. Each unit is small, so a stream with huge listpacks, groups or
    PELs resumes where the bytes ran out instead of starting over."""

    __slots__ = ("rdbtype", "todo", "group", "consumer")

    def __init__(self, rdbtype, listpacks):
        self.rdbtype = rdbtype
        self.todo = [["meta", 1]]
        if listpacks:
            self.todo.append(["listpack", listpacks])
        self.group = None
        self.consumer = None


def _step_stream(st, buf, i):
    """Load one unit of a stream. Reads everything first, then changes state, so an
    incomplete unit leaves no trace."""
    load = st.extra
    todo = load.todo
    top = todo[-1]
    kind = top[0]
    s = st.value
    push = None
    if kind == "listpack":
        master, i = _rstr(buf, i)
        lp, i = _rstr(buf, i)
        if len(master) != 16:
            raise _Bad(f"stream node key of {len(master)} bytes (expected 16)")
        _decode_stream_listpack(
            s.entries,
            int.from_bytes(master[:8], "big"),
            int.from_bytes(master[8:], "big"),
            listpack_entries(lp),
        )
    elif kind == "pel":
        sid, i = _rstream_id(buf, i)
        delivery_time, i = _rint64(buf, i)
        count, i = _rlen(buf, i)
        load.group.pending[sid] = PendingEntry(None, delivery_time, count)
    elif kind == "consumer_pel":
        sid, i = _rstream_id(buf, i)
        entry = load.group.pending.get(sid)
        if entry is None:
            raise _Bad(f"consumer {load.consumer.name!r} owns {sid}, not in the group's PEL")
        entry.consumer = load.consumer.name
        load.consumer.pending.add(sid)
    elif kind == "consumer":
        name, i = _rstr(buf, i)
        seen, i = _rint64(buf, i)
        active = -1
        if load.rdbtype >= RDBType.STREAM_LISTPACKS_3:
            active, i = _rint64(buf, i)
        n, i = _rlen(buf, i)
        load.consumer = load.group.consumers[name] = Consumer(name, seen, active)
        if n:
            push = [["consumer_pel", n]]
    elif kind == "consumers":
        n, i = _rlen(buf, i)
        if n:
            push = [["consumer", n]]
    elif kind == "group":
        name, i = _rstr(buf, i)
        ms, i = _rlen(buf, i)
        seq, i = _rlen(buf, i)
        entries_read = -1
        if load.rdbtype >= RDBType.STREAM_LISTPACKS_2:
            entries_read, i = _rlen(buf, i)
            if entries_read == (1 << 64) - 1:  # "not known" marker
                entries_read = -1
        npel, i = _rlen(buf, i)
        load.group = s.groups[name] = ConsumerGroup(name, StreamID(ms, seq), entries_read)
        push = [["consumers", 1]]
        if npel:
            push.append(["pel", npel])
    else:  # "meta": the stream's own fields, then how many groups
        length, i = _rlen(buf, i)
        ms, i = _rlen(buf, i)
        seq, i = _rlen(buf, i)
        last_id = StreamID(ms, seq)
        if load.rdbtype >= RDBType.STREAM_LISTPACKS_2:
            ms, i = _rlen(buf, i)
            seq, i = _rlen(buf, i)
            first_id = StreamID(ms, seq)
            ms, i = _rlen(buf, i)
            seq, i = _rlen(buf, i)
            s.max_deleted_id = StreamID(ms, seq)
            s.entries_added, i = _rlen(buf, i)
        else:
            first_id = next(iter(s.entries)) if s.entries else StreamID(0, 0)
            s.entries_added = length
        ngroups, i = _rlen(buf, i)
        s.last_id = last_id
        s.first_id = first_id
        # The stored length is not checked against the entries: Redis 5.0 RCs wrote
        # streams where they differ (after XTRIM), and Redis loads them as they are.
        if ngroups:
            push = [["group", ngroups]]
    top[1] -= 1
    if not top[1]:
        todo.pop()
    if push:
        todo.extend(push)
    st.remaining = 2 if todo else 1  # _run takes one off after each step
    return i


def _decode_stream_listpack(entries, base_ms, base_seq, e):
    """Add the live entries of one stream listpack node to ``entries``."""
    try:
        _decode_stream_entries(entries, base_ms, base_seq, e)
    except IndexError:  # not "need more bytes": the listpack is complete but malformed
        raise _Bad("stream listpack entry is truncated") from None


def _decode_stream_entries(entries, base_ms, base_seq, e):
    if len(e) < 4:
        raise _Bad("stream listpack node is empty")
    nmaster = _as_int(e[2])
    fields = e[3 : 3 + nmaster]
    if e[3 + nmaster : 4 + nmaster] != [b"0"]:
        raise _Bad("stream listpack master entry is not terminated")
    pos = 4 + nmaster
    end = len(e)
    while pos < end:
        flags = _as_int(e[pos])
        sid = StreamID(base_ms + _as_int(e[pos + 1]), base_seq + _as_int(e[pos + 2]))
        pos += 3
        if flags & 2:  # SAMEFIELDS: values only
            values = e[pos : pos + nmaster]
            pos += nmaster
            pairs = list(zip(fields, values))
        else:
            nf = _as_int(e[pos])
            kv = e[pos + 1 : pos + 1 + 2 * nf]
            pos += 1 + 2 * nf
            pairs = list(zip(kv[0::2], kv[1::2]))
        pos += 1  # lp-count, for backward iteration
        if pos > end:
            raise _Bad("stream listpack entry is truncated")
        if not flags & 1:  # not deleted
            entries[sid] = pairs


# --- runs of plain strings ----------------------------------------------------------

_RUN_BLOCK = range(256)
_WINDOW = 1 << 20  # bytes of a big buffer copied at a time (three copies) for string runs
_LONGEST_STRING = 129  # the longest record a run takes: type, lengths, 63 + 63 bytes


def _string_window(buf, i):
    """(buf, limit, base - 1, w, w[1:], w[2:]): a window ``w`` of ``buf`` from ``base`` (all
    of a buffer that is not too big), for the string runs that start from ``i`` up to
    ``limit``. Indexing ``w`` and its copies shifted by one and two bytes, a record costs the
    run three additions of big ints (each a new object) instead of eight."""
    if len(buf) <= _WINDOW:
        base, w, limit = 0, buf, len(buf)
    else:
        base, w = i, buf[i : i + _WINDOW]
        # a run decides on a record from its bytes and the type byte after it
        limit = len(buf) if i + _WINDOW >= len(buf) else i + _WINDOW - _LONGEST_STRING - 1
    return buf, limit, base - 1, w, w[1:], w[2:]


# --- the parser -----------------------------------------------------------------------


class RDBParser:
    """Parse an RDB stream fed in chunks into a ``Keyspace``.

    keyspace: the Keyspace whose content the RDB replaces (default: a new one). Records
    load into a private Keyspace (``p.keyspace``); only ``finish()``, after the verified
    end, moves its databases, functions and AUX fields into this one, so a truncated or
    corrupt RDB never leaves a half-loaded dataset behind.
    on_key(db, key, value, expire_ms|None): called for every loaded key as it arrives,
    before the checksum at the end is verified (``p.idle`` / ``p.freq`` hold its LRU idle
    seconds / LFU counter, or None, during the call).
    on_aux(name, value): for every AUX field. on_module(db, key|None, module_name): for
    every module value (key) or module AUX (key None); module data is skipped, counted
    in ``modules_skipped``, and never loaded. store=False: only call on_key, keep no data.
    duplicates: "error" (like redis-server, which refuses such a file) or "replace" (the
    later record wins; counted in ``duplicates_replaced``) for a key stored twice in a db.
    """

    def __init__(
        self, keyspace=None, on_key=None, on_aux=None, on_module=None, store=True, duplicates="error"
    ):
        if duplicates not in ("error", "replace"):
            raise ValueError("duplicates must be 'error' or 'replace'")
        self.keyspace = Keyspace()
        self._target = keyspace
        self.on_key = on_key
        self.on_aux = on_aux
        self.on_module = on_module
        self.store = store
        self.duplicates = duplicates
        self.duplicates_replaced = 0
        self.version = None  # int: 1..12, or 80 for VALKEY080
        self.valkey = False  # the header said VALKEY
        self.done = False
        self.trailing = b""
        self.bytes_parsed = 0
        self.keys_loaded = 0
        self.modules_skipped = 0  # module values and module AUX payloads skipped
        self.empty_keys_skipped = 0  # empty collections, which Redis drops on load too
        self.checksum = None  # the CRC-64 trailer (0 = the writer disabled it)
        self.slot_info = []  # (slot, keys, expires) from SLOT_INFO opcodes
        self.resize_hints = {}  # db -> (keys, expires) from RESIZEDB
        self.idle = None
        self.freq = None
        self._dbnum = 0
        self._db = None
        self._expire = None
        self._partial = None
        self._chunks = []
        self._buffered = 0
        self._need = 0
        self._crc = 0
        self._error = None
        self._module_pending = None
        self._need_abs = 0
        self._window = None  # the last _string_window, for the buffer being parsed

    # public API -----------------------------------------------------------------

    def feed(self, data):
        """Parse all complete records in ``data`` (plus what was buffered before).

        Raises RDBError on corrupt input; after that (or after a callback raised) the
        parser is dead and every call raises it again. Bytes fed after the end of the RDB
        are kept in ``trailing``.
        """
        if self._error is not None:
            raise self._error
        if self.done:
            if data:
                self.trailing += bytes(data)
            return
        if not data:
            return
        data = bytes(data)
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered < self._need:
            return
        chunks = self._chunks
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        try:
            if self.version is None:
                if len(buf) < 9:
                    self._keep(buf, 0, 9)
                    return
                self._header(buf)
                buf = buf[9:]
            consumed = self._parse(buf, 0)
        except RDBError as exc:
            self._error = exc
            raise
        except _CallbackFailed as wrapped:
            cause = wrapped.exc
            self._error = RDBError(f"parsing stopped by {type(cause).__name__}: {cause}")
            raise cause from None
        except BaseException as exc:
            # A callback raised (or the process is being interrupted): the buffered bytes
            # are gone, so this parser cannot go on.
            self._error = RDBError(f"parsing stopped by {type(exc).__name__}: {exc}")
            raise
        if self.done:
            return
        self._crc = crc64(memoryview(buf)[:consumed], self._crc)
        self.bytes_parsed += consumed
        self._keep(buf, consumed, self._need_abs)

    def finish(self):
        """The loaded Keyspace; raises RDBError unless the whole RDB was read and verified."""
        if self._error is not None:
            raise self._error
        if not self.done:
            where = f"{self.bytes_parsed} bytes parsed"
            if self._partial is not None:
                where += f", key {self._partial.key!r} incomplete"
            elif self.version is None:
                where = "no complete header"
            raise RDBError(f"truncated RDB: {where}, {self._buffered} more buffered, no end-of-file marker")
        target = self._target
        if target is None:
            return self.keyspace
        loaded = self.keyspace
        if target is not loaded:
            target.dbs, target.functions, target.aux = loaded.dbs, loaded.functions, loaded.aux
            self.keyspace = target
        return target

    @property
    def db(self):
        """The number of the database being loaded."""
        return self._dbnum

    # internals --------------------------------------------------------------------

    def _keep(self, buf, consumed, need_abs):
        rest = buf[consumed:] if consumed else buf
        if rest:
            self._chunks = [rest]
        self._buffered = len(rest)
        self._need = need_abs - consumed

    def _header(self, buf):
        magic = bytes(buf[:9])
        if magic[:5] == b"REDIS" and magic[5:9].isdigit():
            version = int(magic[5:9])
            if not 1 <= version <= MAX_RDB_VERSION:
                raise RDBError(
                    f"unsupported RDB version {version} (this parser reads 1 to "
                    f"{MAX_RDB_VERSION} and VALKEY080)"
                )
        elif magic[:6] == b"VALKEY" and magic[6:9].isdigit():
            version = int(magic[6:9])
            if version != VALKEY_RDB_VERSION:
                raise RDBError(
                    f"unsupported Valkey RDB version {version} (this parser reads "
                    f"VALKEY0{VALKEY_RDB_VERSION})"
                )
            self.valkey = True
        else:
            raise RDBError(f"not an RDB file: header {magic!r}")
        self.version = version
        self._crc = crc64(magic)
        self.bytes_parsed = 9

    def _select(self, dbnum):
        self._dbnum = dbnum
        self._db = self.keyspace.db(dbnum)

    def _fail(self, msg, buf_pos, key=None):
        where = self.bytes_parsed + buf_pos
        text = f"{msg} (record at byte {where}"
        if key is not None:
            text += f", key {key[:64]!r}"
        return RDBError(text + ")")

    def _parse(self, buf, i):
        """Parse records from ``buf[i:]``; return how many bytes of ``buf`` were consumed."""
        n = len(buf)
        self._need_abs = n + 1
        key = None
        start = i
        try:
            while True:
                start = i
                key = None
                st = self._partial
                if st is not None:
                    key = st.key
                    i = self._run(st, buf, i)
                    self._commit(key, self._finish_partial(st), st.fexp)
                    continue
                t = buf[i]
                if t == _STRING and self._plain():
                    i = start = self._string_run(buf, i)
                    t = buf[i]
                    if t == _STRING:  # one the run could not take (long, or encoded)
                        key, i = _rstr(buf, i + 1)
                        value, i = _rstr(buf, i)
                        self._commit(key, value, None)
                        continue
                if t == _HASH_LISTPACK:  # common, kept out of the handler table
                    if self._plain():
                        j = self._hash_run(buf, i, n)
                        if j != i:
                            i = j
                            continue
                    kl = buf[i + 1]
                    if kl < 64:
                        j = i + 2 + kl
                        key = buf[i + 2 : j]
                    else:
                        key, j = _rstr(buf, i + 1)
                    i = self._hash_listpack(key, buf, j)
                elif t < _FIRST_OPCODE:
                    if t not in _KNOWN_TYPES:
                        raise _Bad(f"unknown RDB value type {t}")
                    key, i = _rstr(buf, i + 1)
                    i = self._object(t, buf, i, key)
                elif t == _EXPIRETIME_MS:  # one per key with a TTL: kept inline
                    self._expire, i = _rint64(buf, i + 1)
                elif t == _EOF:
                    return self._eof(buf, i)
                else:
                    op = _OPCODE_HANDLERS.get(t)
                    if op is None or (t == Opcode.SLOT_IMPORT and not self.valkey):
                        raise _Bad(f"unknown RDB opcode {t}")
                    i = op(self, buf, i + 1)
        except _Incomplete as exc:
            self._need_abs = exc.need
            return exc.resume if exc.resume is not None else start
        except IndexError:
            self._need_abs = n + 1
            return start
        except (_Bad, EncodingError) as exc:
            if type(exc) is _BadRecord:
                start, key = exc.at, exc.key
            raise self._fail(str(exc), start, key) from None
        except RecursionError:  # pragma: no cover - defensive
            raise self._fail("unparseable record", start, key) from None
        finally:
            self._window = None  # its copies are of this buffer only

    def _plain(self):
        """No per-key state pending and nothing to call per key: a run of strings can
        go straight into the db. (With duplicates="replace" a run cannot tell which key
        replaced one, whose TTLs must go with it: the general path loads those.)"""
        return (
            self._expire is None
            and self.idle is None
            and self.freq is None
            and self.on_key is None
            and self.store
            and self.duplicates == "error"
        )

    def _string_run(self, buf, i):
        """Store consecutive plain string records with short key and value (6-bit lengths)
        from ``buf[i]``, a string record; return the index of the first record it did not take."""
        if self._db is None:
            self._select(0)
        data = self._db.data
        before = len(data)
        count = 0
        start = i
        while True:
            w = self._window
            if w is None or w[0] is not buf or not w[2] < i <= w[1]:
                w = self._window = _string_window(buf, i)
            _, limit, off, b0, b1, b2 = w
            x = i - off  # at the key's length byte, in the window
            c = t = 0
            try:
                while True:
                    # counted in blocks: a count below 257 is a cached int, a bigger one is allocated
                    for c in _RUN_BLOCK:  # noqa: B007 - c, the records of this block, is read after it
                        if t:  # the previous record's value is followed by another type
                            break
                        kl = b0[x]
                        if kl > 63:
                            break
                        a = x + kl  # b1[x:a] is the key
                        vl = b1[a]
                        if vl > 63:
                            break
                        b = a + vl  # b2[a:b] is the value
                        t = b2[b]  # the next record's type (IndexError at the end of the window)
                        data[b1[x:a]] = b2[a:b]
                        x = b + 3
                    else:
                        count += 256
                        continue
                    break
            except IndexError:
                pass
            count += c
            i = x + off
            if i <= limit or buf[i]:  # stopped at a record it does not take, not at the window's end
                break
        self._ran(buf, start, i, data, before, count)
        return i

    def _ran(self, buf, start, end, data, before, count):
        """Account for the run ``buf[start:end]`` of ``count`` records stored into ``data``,
        which held ``before`` keys; a key stored twice is an error at its record."""
        if len(data) - before != count:
            self._duplicate_in_run(buf, start, end, data, before)
        self.keys_loaded += count

    def _duplicate_in_run(self, buf, i, end, data, before):
        """Raise for the first record of the run ``buf[i:end]`` whose key was in ``data``
        before it (``before`` keys) or earlier in the run, as ``_commit`` would have."""
        added = len(data) - before
        new = set(itertools.islice(reversed(data), added))  # the run's own keys, added last
        seen = set()
        while i < end:
            at = i
            key, i = _rstr(buf, i + 1)
            if key in seen or key not in new:
                raise _BadRecord(f"duplicated key in db {self._dbnum}", at, key)
            seen.add(key)
            _, i = _rstr(buf, i)  # the value: a raw string, or an LZF one for a hash
        raise _Bad(f"duplicated key in db {self._dbnum}")  # pragma: no cover - not found: said anyway

    def _hash_run(self, buf, i, n):
        """Store consecutive plain RDB_TYPE_HASH_LISTPACK records with a short key and a
        raw or LZF blob, from ``buf[i]``; return the index of the first record it did not
        take. Anything unusual (a long key, a bad or empty blob, a short buffer) stops the
        run, and the general path takes that record (and reports what is wrong with it)."""
        if self._db is None:
            self._select(0)
        data = self._db.data
        before = len(data)
        count = 0
        start = i
        decompress, decode = c_decompress, _hash_value
        try:
            while buf[i] == _HASH_LISTPACK:
                kl = buf[i + 1]
                if kl > 63:
                    break
                j = i + 2 + kl
                b = buf[j]
                if b < 64:  # raw blob, 6-bit length
                    k = j + 1 + b
                    if k > n:
                        break
                    blob = buf[j + 1 : k]
                elif b == _LZF_STRING and decompress is not None:
                    c = buf[j + 1]  # compressed length: 6- or 14-bit
                    if c < 64:
                        j += 2
                    elif c < 128:
                        c = ((c & 0x3F) << 8) | buf[j + 2]
                        j += 3
                    else:
                        break
                    u = buf[j]  # uncompressed length: 6- or 14-bit
                    if u < 64:
                        j += 1
                    elif u < 128:
                        u = ((u & 0x3F) << 8) | buf[j + 1]
                        j += 2
                    else:
                        break
                    k = j + c
                    if k > n or not u or u > 100 * c + 64:
                        break
                    blob = decompress(buf[j:k], u)
                    if blob is None or len(blob) != u:
                        break
                elif 64 <= b < 128:  # raw blob, 14-bit length
                    k = j + 2 + (((b & 0x3F) << 8) | buf[j + 1])
                    if k > n:
                        break
                    blob = buf[j + 2 : k]
                else:
                    break
                value = decode(blob)
                if not value:
                    break
                data[buf[i + 2 : i + 2 + kl]] = value
                i = k
                count += 1
        except (IndexError, ValueError, SystemError):  # EncodingError, corrupt LZF: the general path says
            pass
        finally:
            self._ran(buf, start, i, data, before, count)
        return i

    def _hash_listpack(self, key, buf, i):
        """The value of a RDB_TYPE_HASH_LISTPACK record whose key is read."""
        blob, i = _rstr(buf, i)
        value = self._listpack_hash(blob)
        db = self._db
        if db is not None and self._plain() and key not in db.data and value:
            db.data[key] = value
            self.keys_loaded += 1
        else:
            self._commit(key, value, None)
        return i

    # opcode records: (self, buf, i after the opcode) -> index after the record ---------

    def _op_idle(self, buf, i):
        self.idle, i = _rlen(buf, i)
        return i

    def _op_freq(self, buf, i):
        self.freq = buf[i]
        return i + 1

    def _op_selectdb(self, buf, i):
        dbnum, i = _rlen(buf, i)
        self._select(dbnum)
        return i

    def _op_resizedb(self, buf, i):
        keys, i = _rlen(buf, i)
        expires, i = _rlen(buf, i)
        self.resize_hints[self._dbnum] = (keys, expires)
        return i

    def _op_aux(self, buf, i):
        name, i = _rstr(buf, i)
        value, i = _rstr(buf, i)
        self.keyspace.aux[name] = value
        if self.on_aux is not None:
            self._call(self.on_aux, name, value)
        return i

    def _op_expiretime(self, buf, i):
        raw, i = _rfixed(buf, i, 4)
        self._expire = int.from_bytes(raw, "little", signed=True) * 1000
        return i

    def _op_function2(self, buf, i):
        code, i = _rstr(buf, i)
        self.keyspace.functions.append(code)
        return i

    def _op_module_aux(self, buf, i):
        module_id, i = _rlen(buf, i)
        when_op, i = _rlen(buf, i)
        _, i = _rlen(buf, i)
        if when_op != ModuleOpcode.UINT:
            raise _Bad(f"module aux 'when' has opcode {when_op}, expected {int(ModuleOpcode.UINT)}")
        i = _skip_module_payload(buf, i)
        self.modules_skipped += 1
        if self.on_module is not None:
            self._call(self.on_module, self._dbnum, None, module_name(module_id))
        return i

    def _op_slot_info(self, buf, i):
        slot, i = _rlen(buf, i)
        size, i = _rlen(buf, i)
        expires, i = _rlen(buf, i)
        self.slot_info.append((slot, size, expires))
        return i

    def _op_function_pre_ga(self, buf, i):
        name, i = _rstr(buf, i)
        engine, i = _rstr(buf, i)
        has_desc, i = _rlen(buf, i)
        if has_desc:
            _, i = _rstr(buf, i)
        code, i = _rstr(buf, i)
        # As the library source FUNCTION LOAD takes since 7.0 GA.
        self.keyspace.functions.append(b"#!%s name=%s\n" % (engine.lower(), name) + code)
        return i

    def _op_slot_import(self, buf, i):
        """Valkey: a slot import job's state; skipped."""
        _, i = _rstr(buf, i)
        nranges, i = _rlen(buf, i)
        for _ in range(2 * nranges):
            _, i = _rlen(buf, i)
        return i

    def _eof(self, buf, i):
        end = i + 1
        if self.version >= 5:
            if end + 8 > len(buf):
                raise _Incomplete(end + 8)
            crc = crc64(memoryview(buf)[:end], self._crc)
            stored = int.from_bytes(buf[end : end + 8], "little")
            self.checksum = stored
            if stored and stored != crc:
                raise RDBError(
                    f"RDB checksum mismatch: file says {stored:#018x}, "
                    f"data has {crc:#018x} (byte {self.bytes_parsed + end})"
                )
            end += 8
        self._crc = 0
        self.bytes_parsed += end
        self.trailing = bytes(buf[end:])
        self.done = True
        self._need = 0
        return end

    def _object(self, t, buf, i, key):
        """Load one value of RDB type ``t`` starting at ``buf[i]``; return the new index."""
        if t == _STRING:
            value, i = _rstr(buf, i)
            self._commit(key, value, None)
            return i
        handler = _HANDLERS.get(t)
        if handler is None:
            if self.valkey:
                handler = _VALKEY_HANDLERS.get(t)
            else:
                handler = _REDIS_HFE_HANDLERS.get(t)
        if handler is None:
            if t == RDBType.MODULE_PRE_GA:
                raise _Bad(
                    "module value in the Redis 4.0 RC format (type 6) cannot be skipped without the module"
                )
            else:
                raise _Bad(f"unknown RDB value type {t}")
        result, i = handler(self, buf, i)
        if type(result) is _Partial:
            result.key = key
            i = self._run(result, buf, i)
            self._commit(key, self._finish_partial(result), result.fexp)
        elif result is not _SKIPPED:
            value, fexp = result
            self._commit(key, value, fexp)
        else:
            self._skip_key(key)
        return i

    def _run(self, st, buf, i):
        """Load the remaining elements of ``st``; on a short buffer, remember where to resume."""
        e = i
        step = st.step
        try:
            while st.remaining:
                e = i
                i = step(st, buf, i)
                st.remaining -= 1
        except _Incomplete as exc:
            self._partial = st
            exc.resume = e
            raise
        except IndexError:
            self._partial = st
            raise _Incomplete(len(buf) + 1, e) from None
        self._partial = None
        return i

    def _finish_partial(self, st):
        value = st.value
        if st.unique and len(value) != st.count:
            raise _Bad(f"duplicate elements: {st.count} stored, {len(value)} distinct")
        return value

    def _commit(self, key, value, fexp):
        expire = self._expire
        self._expire = None
        if self._db is None:
            self._select(0)
        if not value and type(value) is not bytes and type(value) is not Stream:
            self.empty_keys_skipped += 1  # Redis drops empty collections on load
            self.idle = self.freq = None
            return
        if self.store:
            db = self._db
            if key in db.data:
                if self.duplicates == "error":
                    raise _Bad(f"duplicated key in db {self._dbnum}")
                self.duplicates_replaced += 1
                self.keys_loaded -= 1
                db.expires.pop(key, None)
                db.field_expires.pop(key, None)
            db.data[key] = value
            if expire is not None:
                db.expires[key] = expire
            if fexp:
                db.field_expires[key] = fexp
        self.keys_loaded += 1
        if self.on_key is not None:
            self._call(self.on_key, self._dbnum, key, value, expire)
        self.idle = self.freq = None

    @staticmethod
    def _call(callback, *args):
        try:
            callback(*args)
        except Exception as exc:
            raise _CallbackFailed(exc) from exc

    def _skip_key(self, key):
        self._expire = None
        self.idle = self.freq = None
        name, self._module_pending = self._module_pending, None
        if name is not None and self.on_module is not None:
            self._call(self.on_module, self._dbnum, key, name)

    # value handlers: (self, buf, i) -> ((value, field_expiry) | _Partial | _SKIPPED, i) ---

    def _h_list(self, buf, i):
        n, i = _rlen(buf, i)
        return _Partial(n, deque(), _step_list), i

    def _h_set(self, buf, i):
        n, i = _rlen(buf, i)
        # rdbLoadObject: a hashtable past set-max-intset-entries, else an intset that
        # converts as the members come (so a small set iterates as Redis loaded it)
        value = Set(encoding=HASHTABLE if n > SET_INTSET_ENTRIES else INTSET)
        return _Partial(n, value, _step_set, unique=True), i

    def _h_zset(self, buf, i):
        n, i = _rlen(buf, i)
        return _Partial(n, ZSet(), _step_zset_text, unique=True), i

    def _h_zset2(self, buf, i):
        n, i = _rlen(buf, i)
        return _Partial(n, ZSet(), _step_zset_binary, unique=True), i

    def _h_hash(self, buf, i):
        n, i = _rlen(buf, i)
        return _Partial(n, {}, _step_hash, unique=True), i

    def _h_hash_metadata_pre_ga(self, buf, i):
        n, i = _rlen(buf, i)
        st = _Partial(n, {}, _step_hash_ttl_absolute, unique=True)
        st.fexp = {}
        return st, i

    def _h_hash_metadata(self, buf, i):
        min_expire, i = _rint64(buf, i)
        n, i = _rlen(buf, i)
        st = _Partial(n, {}, _step_hash_ttl_relative, unique=True)
        st.fexp = {}
        st.extra = min_expire
        return st, i

    def _h_valkey_hash2(self, buf, i):
        n, i = _rlen(buf, i)
        st = _Partial(n, {}, _step_valkey_hash2, unique=True)
        st.fexp = {}
        return st, i

    def _h_module2(self, buf, i):
        module_id, i = _rlen(buf, i)
        i = _skip_module_payload(buf, i)
        self.modules_skipped += 1
        self._module_pending = module_name(module_id)  # reported by _skip_key
        return _SKIPPED, i

    def _h_zipmap(self, buf, i):
        blob, i = _rstr(buf, i)
        flat = zipmap_pairs(blob)
        return (_pairs_dict(flat), None), i

    def _h_list_ziplist(self, buf, i):
        blob, i = _rstr(buf, i)
        return (deque(ziplist_entries(blob)), None), i

    def _h_intset(self, buf, i):
        blob, i = _rstr(buf, i)
        members = intset_members(blob)
        return (Set(members, encoding=INTSET if len(members) <= SET_INTSET_ENTRIES else HASHTABLE), None), i

    def _h_set_listpack(self, buf, i):
        blob, i = _rstr(buf, i)
        members = listpack_entries(blob)
        value = Set(encoding=LISTPACK if len(members) <= SET_LISTPACK_ENTRIES else HASHTABLE)
        value.update(dict.fromkeys(members))  # in the listpack's order
        if len(value) != len(members):
            raise _Bad("duplicate set members")
        return (value, None), i

    def _h_zset_ziplist(self, buf, i):
        blob, i = _rstr(buf, i)
        return (_pairs_zset(ziplist_entries(blob)), None), i

    def _h_zset_listpack(self, buf, i):
        blob, i = _rstr(buf, i)
        return (_pairs_zset(listpack_entries(blob)), None), i

    def _h_hash_ziplist(self, buf, i):
        blob, i = _rstr(buf, i)
        return (_pairs_dict(ziplist_entries(blob)), None), i

    def _h_hash_listpack(self, buf, i):
        blob, i = _rstr(buf, i)
        return (self._listpack_hash(blob), None), i

    def _listpack_hash(self, blob):
        # on_key gets a plain dict, what it is told a hash is; the Keyspace may keep it packed,
        # but a load that keeps nothing (store=False) has no first use to check it later
        if self.on_key is not None or not self.store:
            return listpack_dict(blob)
        return _hash_value(blob)

    def _h_hash_listpack_ex(self, buf, i, relative=False):
        blob, i = _rstr(buf, i)
        flat = listpack_entries(blob)
        if len(flat) % 3:
            raise _Bad("hash listpack with TTLs does not hold (field, value, ttl) triples")
        fields = flat[0::3]
        value = dict(zip(fields, flat[1::3]))
        if len(value) != len(fields):
            raise _Bad("duplicate hash fields")
        fexp = {}
        for f, ttl in zip(fields, flat[2::3]):
            ttl = _as_int(ttl)
            if ttl:
                fexp[f] = ttl
        return (value, fexp), i

    def _h_hash_listpack_ex_ga(self, buf, i):
        _min_expire, i = _rint64(buf, i)  # kept by Redis for a future use; not needed
        return self._h_hash_listpack_ex(buf, i)

    def _h_quicklist(self, buf, i):
        n, i = _rlen(buf, i)
        return _Partial(n, deque(), _step_quicklist), i

    def _h_quicklist2(self, buf, i):
        n, i = _rlen(buf, i)
        return _Partial(n, deque(), _step_quicklist2), i

    def _h_stream(self, buf, i, rdbtype=RDBType.STREAM_LISTPACKS):
        n, i = _rlen(buf, i)
        st = _Partial(1, Stream(), _step_stream)
        st.extra = _StreamLoad(rdbtype, n)
        return st, i

    def _h_stream2(self, buf, i):
        return self._h_stream(buf, i, RDBType.STREAM_LISTPACKS_2)

    def _h_stream3(self, buf, i):
        return self._h_stream(buf, i, RDBType.STREAM_LISTPACKS_3)


_SKIPPED = object()


def _pairs_dict(flat):
    n = len(flat)
    if n & 1:
        raise _Bad("odd number of hash elements")
    it = iter(flat)
    value = dict(zip(it, it))
    if len(value) * 2 != n:
        raise _Bad("duplicate hash fields")
    return value


def _pairs_zset(flat):
    if len(flat) % 2:
        raise _Bad("odd number of sorted set elements")
    try:
        value = ZSet(zip(flat[0::2], map(float, flat[1::2])))
    except ValueError:
        raise _Bad("bad sorted set score") from None
    if len(value) * 2 != len(flat):
        raise _Bad("duplicate sorted set members")
    return value


def _table(pairs):
    """A dispatch dict keyed by plain ints (looked up with the bytes of the buffer)."""
    return {int(k): v for k, v in pairs.items()}


_HANDLERS = _table(
    {
        RDBType.LIST: RDBParser._h_list,
        RDBType.SET: RDBParser._h_set,
        RDBType.ZSET: RDBParser._h_zset,
        RDBType.HASH: RDBParser._h_hash,
        RDBType.ZSET_2: RDBParser._h_zset2,
        RDBType.MODULE_2: RDBParser._h_module2,
        RDBType.HASH_ZIPMAP: RDBParser._h_zipmap,
        RDBType.LIST_ZIPLIST: RDBParser._h_list_ziplist,
        RDBType.SET_INTSET: RDBParser._h_intset,
        RDBType.ZSET_ZIPLIST: RDBParser._h_zset_ziplist,
        RDBType.HASH_ZIPLIST: RDBParser._h_hash_ziplist,
        RDBType.LIST_QUICKLIST: RDBParser._h_quicklist,
        RDBType.STREAM_LISTPACKS: RDBParser._h_stream,
        RDBType.HASH_LISTPACK: RDBParser._h_hash_listpack,
        RDBType.ZSET_LISTPACK: RDBParser._h_zset_listpack,
        RDBType.LIST_QUICKLIST_2: RDBParser._h_quicklist2,
        RDBType.STREAM_LISTPACKS_2: RDBParser._h_stream2,
        RDBType.SET_LISTPACK: RDBParser._h_set_listpack,
        RDBType.STREAM_LISTPACKS_3: RDBParser._h_stream3,
    }
)
_REDIS_HFE_HANDLERS = _table(
    {
        RDBType.HASH_METADATA_PRE_GA: RDBParser._h_hash_metadata_pre_ga,
        RDBType.HASH_LISTPACK_EX_PRE_GA: RDBParser._h_hash_listpack_ex,
        RDBType.HASH_METADATA: RDBParser._h_hash_metadata,
        RDBType.HASH_LISTPACK_EX: RDBParser._h_hash_listpack_ex_ga,
    }
)
_VALKEY_HANDLERS = _table({RDBType.VALKEY_HASH_2: RDBParser._h_valkey_hash2})
_KNOWN_TYPES = frozenset(_HANDLERS) | {_STRING, int(RDBType.MODULE_PRE_GA)} | frozenset(_REDIS_HFE_HANDLERS)

_OPCODE_HANDLERS = _table(
    {
        Opcode.IDLE: RDBParser._op_idle,
        Opcode.FREQ: RDBParser._op_freq,
        Opcode.SELECTDB: RDBParser._op_selectdb,
        Opcode.RESIZEDB: RDBParser._op_resizedb,
        Opcode.AUX: RDBParser._op_aux,
        Opcode.EXPIRETIME: RDBParser._op_expiretime,
        Opcode.FUNCTION2: RDBParser._op_function2,
        Opcode.MODULE_AUX: RDBParser._op_module_aux,
        Opcode.SLOT_INFO: RDBParser._op_slot_info,
        Opcode.FUNCTION_PRE_GA: RDBParser._op_function_pre_ga,
        Opcode.SLOT_IMPORT: RDBParser._op_slot_import,
    }
)


def decode_dump(payload, with_field_expiry=False, packed=False):
    """Decode a DUMP / RESTORE payload: one value + 2-byte RDB version + CRC-64 (checked).

    Returns the value in the Keyspace model (bytes, deque, set, dict, ZSet, Stream), or
    ``(value, {field: unix ms})`` with ``with_field_expiry`` (hashes with field TTLs).
    A listpack hash is decoded whole, a dict; with ``packed`` it is kept as the load keeps
    it, a ``PackedHash`` checked as Redis checks a payload (its header): the applier's
    RESTORE, which must take what the master took.
    """
    payload = bytes(payload)
    if len(payload) < 11:
        raise RDBError(f"DUMP payload of {len(payload)} bytes is too short")
    body = payload[:-8]
    stored = int.from_bytes(payload[-8:], "little")
    if stored and crc64(body) != stored:
        raise RDBError("DUMP payload checksum mismatch")
    version = int.from_bytes(payload[-10:-8], "little")
    if not (1 <= version <= MAX_RDB_VERSION or version == VALKEY_RDB_VERSION):
        raise RDBError(f"DUMP payload of unsupported RDB version {version}")
    buf = payload[:-10]
    p = RDBParser()
    p.version = version
    p.valkey = version == VALKEY_RDB_VERSION
    p.bytes_parsed = 0
    t = buf[0]
    try:
        if t >= _FIRST_OPCODE or t not in _KNOWN_TYPES:
            raise _Bad(f"unknown RDB value type {t}")
        end = p._object(t, buf, 1, b"")
        db = p.keyspace.db(0)
        value = db.data.get(b"")
        if type(value) is PackedHash and not packed:  # decoded whole: checked now, a plain dict
            value = value.unpack()
    except (_Incomplete, IndexError):
        raise RDBError("DUMP payload is truncated") from None
    except (_Bad, EncodingError) as exc:
        raise RDBError(f"bad DUMP payload: {exc}") from None
    if end != len(buf):
        raise RDBError(f"DUMP payload has {len(buf) - end} unexpected bytes after the value")
    if value is None:
        if p.modules_skipped:
            raise RDBError("DUMP payload holds a module value, which cannot be decoded")
        raise RDBError("DUMP payload holds an empty collection")
    if with_field_expiry:
        return value, db.field_expires.get(b"", {})
    return value


def decode_function_dump(payload):
    """Decode a FUNCTION DUMP / FUNCTION RESTORE payload: the library sources, in order.

    The payload is FUNCTION2 records (opcode 0xF5 + the source as an RDB string), then the
    2-byte RDB version and the CRC-64 (checked), as ``functionRestoreCommand`` reads it.
    """
    payload = bytes(payload)
    if len(payload) < 10:
        raise RDBError(f"FUNCTION DUMP payload of {len(payload)} bytes is too short")
    stored = int.from_bytes(payload[-8:], "little")
    if stored and crc64(payload[:-8]) != stored:
        raise RDBError("FUNCTION DUMP payload checksum mismatch")
    version = int.from_bytes(payload[-10:-8], "little")
    if not (1 <= version <= MAX_RDB_VERSION or version == VALKEY_RDB_VERSION):
        raise RDBError(f"FUNCTION DUMP payload of unsupported RDB version {version}")
    buf = payload[:-10]
    libraries = []
    i = 0
    try:
        while i < len(buf):
            if buf[i] == 0xF6:
                raise RDBError("FUNCTION DUMP payload in the pre-GA function format")
            if buf[i] != 0xF5:
                raise RDBError(f"FUNCTION DUMP payload holds type {buf[i]}, not a function")
            code, i = _rstr(buf, i + 1)
            libraries.append(bytes(code))
    except (_Incomplete, IndexError):
        raise RDBError("FUNCTION DUMP payload is truncated") from None
    except (_Bad, LZFError) as exc:
        raise RDBError(f"bad FUNCTION DUMP payload: {exc}") from None
    return libraries


def load_file(path, chunk_size=1 << 20, **kwargs):
    """Parse an RDB file from disk; ``kwargs`` go to RDBParser. Returns the Keyspace."""
    p = RDBParser(**kwargs)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            p.feed(chunk)
    return p.finish()
