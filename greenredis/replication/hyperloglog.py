"""Redis's HyperLogLog string representation, reproduced byte for byte (pure, no I/O).

An HLL is a Redis string: a 16-byte header (``HYLL``, the encoding byte, 3 zero bytes, the
cached cardinality as 8 little-endian bytes whose top bit says "stale") and then either
16384 six-bit registers packed LSB first (dense, 12288 bytes) or run-length opcodes
(sparse: ZERO ``00xxxxxx``, XZERO ``01xxxxxx yyyyyyyy``, VAL ``1vvvvvxx``). Written from
Redis's ``hyperloglog.c``; the sparse edits follow its in-place split and merge steps, so the
bytes depend on the order of the updates exactly as on the master.

Registers are handled as a ``bytes`` of 16384 values (one byte each): dense packing and
unpacking, merging and the register histogram use ``bytes.translate``/``count``, slicing and
big-int arithmetic rather than a Python loop per register.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable

__all__ = [
    "DEFAULT_SPARSE_MAX_BYTES",
    "HLLError",
    "REGISTERS",
    "is_hll",
    "murmurhash64a",
    "pattern",
    "new_hll",
    "pfadd",
    "pfmerge",
    "pfcount",
    "refresh_cache",
    "registers",
    "estimate",
    "to_dense",
]

P = 14
Q = 64 - P
REGISTERS = 1 << P  # 16384
BITS = 6
HEADER_SIZE = 16
DENSE_SIZE = HEADER_SIZE + (REGISTERS * BITS + 7) // 8  # 12304
DENSE, SPARSE = 0, 1
DEFAULT_SPARSE_MAX_BYTES = 3000  # Redis's hll-sparse-max-bytes default
SEED = 0xADC83B19
SPARSE_VAL_MAX_VALUE = 32
SPARSE_VAL_MAX_LEN = 4
SPARSE_ZERO_MAX_LEN = 64
SPARSE_XZERO_MAX_LEN = 16384
ALPHA_INF = 0.721347520444481703680  # 0.5 / ln(2)

_M64 = (1 << 64) - 1
_MURMUR_M = 0xC6A4A7935BD1E995
_STALE = 0x80  # top bit of the cached cardinality's last byte

_XZERO = re.compile(rb"[\x40-\x7f]")  # the first byte of an XZERO opcode

WRONGTYPE = "WRONGTYPE Key is not a valid HyperLogLog string value."
INVALIDOBJ = "INVALIDOBJ Corrupted HLL object detected"


class HLLError(ValueError):
    """The value is not a valid HLL (the message is Redis's error reply for it)."""


# ---- hashing ----


def murmurhash64a(data: bytes, seed: int = SEED) -> int:
    """MurmurHash2, 64-bit version, little-endian words: Redis's ``MurmurHash64A``."""
    n = len(data)
    m = _MURMUR_M
    h = (seed ^ (n * m)) & _M64
    words = n >> 3
    if words:
        for k in struct.unpack_from(f"<{words}Q", data):
            k = (k * m) & _M64
            k ^= k >> 47
            k = (k * m) & _M64
            h = ((h ^ k) * m) & _M64
    tail = n & 7
    if tail:
        h = ((h ^ int.from_bytes(data[n - tail :], "little")) * m) & _M64
    h ^= h >> 47
    h = (h * m) & _M64
    return h ^ (h >> 47)


def pattern(element: bytes) -> tuple[int, int]:
    """``(register index, run length of 0...1)`` for an element, as ``hllPatLen``."""
    h = murmurhash64a(element)
    rest = (h >> P) | (1 << Q)
    return h & (REGISTERS - 1), (rest & -rest).bit_length()


# ---- validation and the header ----


def is_hll(value: bytes) -> bool:
    """Whether Redis's PF* commands accept ``value`` (``isHLLObjectOrReply``)."""
    if len(value) < HEADER_SIZE or value[:4] != b"HYLL" or value[4] > SPARSE:
        return False
    return value[4] == SPARSE or len(value) == DENSE_SIZE


def _check(value: bytes) -> int:
    if not is_hll(value):
        raise HLLError(WRONGTYPE)
    return value[4]


def new_hll() -> bytes:
    """An empty HLL as PFADD/PFMERGE create it: sparse, one XZERO opcode, cache 0 (valid)."""
    return b"HYLL\x01" + bytes(11) + _xzero(REGISTERS)


def _cache_valid(value) -> bool:
    return not value[15] & _STALE


# ---- the dense encoding: 6-bit registers packed LSB first, 4 registers in 3 bytes ----


def _table(f) -> bytes:
    return bytes(f(b) & 0xFF for b in range(256))


_LOW6 = _table(lambda b: b & 63)
_HIGH2 = _table(lambda b: b >> 6)
_LOW4_SHL2 = _table(lambda b: (b & 15) << 2)
_HIGH4 = _table(lambda b: b >> 4)
_LOW2_SHL4 = _table(lambda b: (b & 3) << 4)
_HIGH6 = _table(lambda b: b >> 2)
_SHL6 = _table(lambda b: b << 6)
_SHR2 = _table(lambda b: b >> 2)
_SHL4 = _table(lambda b: b << 4)
_SHR4 = _table(lambda b: b >> 4)
_SHL2 = _table(lambda b: b << 2)


def _or(a: bytes, b: bytes) -> bytes:
    """Bytewise OR of two equally long byte strings (one big-int operation)."""
    n = len(a)
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(n, "little")


def _unpack_dense(packed) -> bytes:
    """12288 packed bytes -> 16384 register bytes."""
    b0, b1, b2 = bytes(packed[0::3]), bytes(packed[1::3]), bytes(packed[2::3])
    out = bytearray(REGISTERS)
    out[0::4] = b0.translate(_LOW6)
    out[1::4] = _or(b0.translate(_HIGH2), b1.translate(_LOW4_SHL2))
    out[2::4] = _or(b1.translate(_HIGH4), b2.translate(_LOW2_SHL4))
    out[3::4] = b2.translate(_HIGH6)
    return bytes(out)


def _pack_dense(regs: bytes) -> bytes:
    """16384 register bytes (each < 64) -> 12288 packed bytes."""
    r0, r1, r2, r3 = regs[0::4], regs[1::4], regs[2::4], regs[3::4]
    out = bytearray(DENSE_SIZE - HEADER_SIZE)
    out[0::3] = _or(r0, r1.translate(_SHL6))
    out[1::3] = _or(r1.translate(_SHR2), r2.translate(_SHL4))
    out[2::3] = _or(r2.translate(_SHR4), r3.translate(_SHL2))
    return bytes(out)


def _dense_get(s, index: int) -> int:
    bit = index * BITS
    i = HEADER_SIZE + (bit >> 3)
    word = s[i] | (s[i + 1] << 8) if i + 1 < len(s) else s[i]
    return (word >> (bit & 7)) & 63


def _dense_set(s: bytearray, index: int, count: int) -> None:
    bit = index * BITS
    i = HEADER_SIZE + (bit >> 3)
    fb = bit & 7
    s[i] = (s[i] & ~(63 << fb) & 0xFF) | ((count << fb) & 0xFF)
    if fb > 2:  # the register spills into the next byte
        s[i + 1] = (s[i + 1] & ~(63 >> (8 - fb)) & 0xFF) | (count >> (8 - fb))


# ---- the sparse encoding ----


def _xzero(n: int) -> bytes:
    return bytes((0x40 | ((n - 1) >> 8), (n - 1) & 0xFF))


def _zero_run(n: int) -> bytes:
    return _xzero(n) if n > SPARSE_ZERO_MAX_LEN else bytes((n - 1,))


def _val(value: int, n: int) -> int:
    return 0x80 | ((value - 1) << 2) | (n - 1)


# What each one-byte opcode (ZERO, VAL) expands to, one byte per register.
_EXPANSIONS = [
    bytes(b + 1) if b < 0x40 else bytes((((b >> 2) & 31) + 1,)) * ((b & 3) + 1) for b in range(256)
]


def _sparse_registers(s) -> bytes:
    """16384 register bytes of a sparse HLL; HLLError if the runs do not cover exactly 16384."""
    parts = []
    pos = HEADER_SIZE
    end = len(s)
    expand = _EXPANSIONS.__getitem__
    while pos < end:
        m = _XZERO.search(s, pos)
        stop = m.start() if m is not None else end
        parts.append(b"".join(map(expand, s[pos:stop])))
        if m is None:
            break
        parts.append(bytes(_xzero_span(s, stop)))
        if sum(map(len, parts)) > REGISTERS:
            raise HLLError(INVALIDOBJ)
        pos = stop + 2
    regs = b"".join(parts)
    if len(regs) != REGISTERS:
        raise HLLError(INVALIDOBJ)
    return regs


class _Promote(Exception):
    """The sparse update needs the dense encoding (a value > 32, or the size limit)."""


def _sparse_set(s: bytearray, index: int, count: int, max_bytes: int, start=(HEADER_SIZE, 0, None)):
    """``hllSparseSet`` on ``s`` in place: 1 if the register grew, 0 if not.

    ``start`` is ``(position, first register, previous opcode position)`` of an opcode at or
    before the one holding ``index``; the return value's second item is such a start for a
    later call with a larger index. Raises ``_Promote`` when Redis would go dense.
    """
    if count > SPARSE_VAL_MAX_VALUE:
        raise _Promote
    p, first, prev, prevprev = _locate(s, index, start)
    end = len(s)
    op = s[p]
    if op < 0x40:
        span, oplen = op + 1, 1
    elif op >= 0x80:
        span, oplen = (op & 3) + 1, 1
    else:
        span, oplen = _xzero_span(s, p), 2
    is_val = op >= 0x80
    # Nothing before ``prev`` changes below, so a later search may start there.
    if prev is None or prevprev == _UNKNOWN:
        hint = (HEADER_SIZE, 0, None)
    else:
        hint = (prev, first - _span(s, prev), prevprev)
    # Step 2: the cases that need no split.
    if is_val:
        if ((op >> 2) & 31) + 1 >= count:
            return 0, hint
        if span == 1:
            s[p] = _val(count, 1)
            _merge_vals(s, prev)
            _invalidate(s)
            return 1, hint
    elif op < 0x40 and span == 1:
        s[p] = _val(count, 1)
        _merge_vals(s, prev)
        _invalidate(s)
        return 1, hint
    # Step 3: split the opcode in (up to) three.
    last = first + span - 1
    seq = bytearray()
    if not is_val:
        if index != first:
            seq += _zero_run(index - first)
        seq.append(_val(count, 1))
        if index != last:
            seq += _zero_run(last - index)
    else:
        current = ((op >> 2) & 31) + 1
        if index != first:
            seq.append(_val(current, index - first))
        seq.append(_val(count, 1))
        if index != last:
            seq.append(_val(current, last - index))
    if len(seq) > oplen and end + len(seq) - oplen > max_bytes:
        raise _Promote
    if p + oplen > end:
        # a truncated trailing XZERO: Redis writes the sequence there but the string's
        # length only changes by len(seq) - 2, so its last byte is cut off
        s[p:] = seq
        del s[end + len(seq) - oplen :]
        if isinstance(s, _Sparse):
            s.after_end = seq[-1]  # written past the new end, where the NUL was
    else:
        s[p : p + oplen] = seq
        if isinstance(s, _Sparse):
            s.after_end = 0  # sdsIncrLen wrote the terminator at the (new) end
    _merge_vals(s, prev)
    _invalidate(s)
    return 1, hint


_UNKNOWN = -1  # an opcode position the search did not see
# Registers covered by a one-byte opcode (ZERO or VAL); XZERO first bytes never reach it.
_SPANS = bytes((b + 1) if b < 0x40 else ((b & 3) + 1) if b >= 0x80 else 0 for b in range(256))
_CHUNK = 128
_SHORT = 800  # bytes of opcodes below which the plain walk is faster (measured)


def _span(s, p: int) -> int:
    op = s[p]
    if op < 0x40:
        return op + 1
    if op >= 0x80:
        return (op & 3) + 1
    return _xzero_span(s, p)


def _xzero_span(s, p: int) -> int:
    """Registers of the XZERO at ``p``. A string ending in the first byte of one (a corrupt
    value PFADD still takes) reads the byte past its end: the C string's NUL terminator, or
    what an earlier edit of this command left there (``_Sparse.after_end``)."""
    return (((s[p] & 0x3F) << 8) | (s[p + 1] if p + 1 < len(s) else getattr(s, "after_end", 0))) + 1


class _Sparse(bytearray):
    """A sparse HLL being edited, with the byte Redis's buffer holds just past its end."""

    after_end = 0


def _locate(s, index: int, start):
    """Step 1 of ``hllSparseSet``: ``(position, first register, prev, prevprev)`` of the
    opcode covering ``index``, searching from ``start`` (see ``_sparse_set``).

    The opcodes between two XZEROs are one byte each, so the search jumps from XZERO to
    XZERO (a regex) and sums the spans of the bytes in between in chunks (``translate``),
    instead of a Python step per opcode (short bodies, where XZEROs are many, are walked).
    ``prevprev`` is ``_UNKNOWN`` when it lies before ``start``.
    """
    if len(s) - start[0] < _SHORT:
        return _locate_walk(s, index, start)
    pos, first, pa = start
    ppa = _UNKNOWN  # pa and ppa: the two opcodes before the segment starting at ``a``
    a = pos
    end = len(s)
    search = _XZERO.search
    while pos < end:
        m = search(s, pos)
        stop = m.start() if m is not None else end
        while pos < stop:  # one-byte opcodes, a chunk at a time
            chunk_end = pos + _CHUNK
            if chunk_end > stop:
                chunk_end = stop
            spans = s[pos:chunk_end].translate(_SPANS)
            total = sum(spans)
            if index < first + total:
                for k, n in enumerate(spans):
                    if index < first + n:
                        p = pos + k
                        return p, first, _before(p, a, pa), _before(p - 1, a, pa) if p > a else ppa
                    first += n
            first += total
            pos = chunk_end
        if m is None:
            break
        prev_q = _before(stop, a, pa)
        prevprev_q = _before(stop - 1, a, pa) if stop > a else ppa
        span = _xzero_span(s, stop)
        if index < first + span:
            return stop, first, prev_q, prevprev_q
        first += span
        pos = a = stop + 2
        pa, ppa = stop, prev_q
    raise HLLError(INVALIDOBJ)


def _locate_walk(s, index: int, start):
    """``_locate`` one opcode at a time: faster on short bodies, where XZEROs are many."""
    p, first, prev = start
    prevprev = _UNKNOWN
    end = len(s)
    while p < end:
        op = s[p]
        if op < 0x40:
            span, oplen = op + 1, 1
        elif op >= 0x80:
            span, oplen = (op & 3) + 1, 1
        else:
            span, oplen = _xzero_span(s, p), 2
        if index < first + span:
            return p, first, prev, prevprev
        prevprev, prev = prev, p
        p += oplen
        first += span
    raise HLLError(INVALIDOBJ)


def _before(p: int, a: int, pa):
    """The opcode before ``p`` in a run of one-byte opcodes starting at ``a`` (``pa`` before it)."""
    return p - 1 if p > a else pa


def _merge_vals(s: bytearray, prev) -> None:
    """Step 4: merge adjacent VAL opcodes of equal value, up to 5 opcodes from ``prev``."""
    p = HEADER_SIZE if prev is None else prev
    end = len(s)
    scan = 5
    while p < end and scan > 0:
        scan -= 1
        op = s[p]
        if op < 0x40:
            p += 1
            continue
        if op < 0x80:
            p += 2
            continue
        if p + 1 < end and s[p + 1] >= 0x80:
            nxt = s[p + 1]
            value = ((op >> 2) & 31) + 1
            if value == ((nxt >> 2) & 31) + 1:
                n = (op & 3) + (nxt & 3) + 2
                if n <= SPARSE_VAL_MAX_LEN:
                    s[p + 1] = _val(value, n)
                    del s[p]
                    if isinstance(s, _Sparse):
                        s.after_end = 0  # the shorter string's new NUL terminator
                    end -= 1
                    continue
        p += 1


def _invalidate(s: bytearray) -> None:
    s[15] |= _STALE


def _to_dense_array(s) -> bytearray:
    """``hllSparseToDense``: the header kept (cached cardinality included), encoding dense."""
    regs = _sparse_registers(s)
    out = bytearray(s[:HEADER_SIZE])
    out[4] = DENSE
    out += _pack_dense(regs)
    return out


# ---- registers and the estimator ----


def registers(value: bytes) -> bytes:
    """The 16384 registers of an HLL, one byte each. HLLError if it is not a valid HLL."""
    if _check(value) == DENSE:
        return _unpack_dense(memoryview(value)[HEADER_SIZE:])
    return _sparse_registers(value)


def _histogram(regs: bytes) -> list[int]:
    """How many registers hold each value 0..63 (one C-level count per value present)."""
    histo = [0] * 64
    left = len(regs)
    for v in range(64):
        n = regs.count(v)
        histo[v] = n
        left -= n
        if not left:
            break
    return histo


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y = 1.0
    z = x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if previous == z:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y = 1.0
    z = 1 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= math.pow(1 - x, 2) * y
        if previous == z:
            return z / 3


def _round_half_away(x: float) -> int:
    n = math.floor(x)
    return n + 1 if x - n >= 0.5 else n


def estimate(regs: bytes) -> int:
    """The cardinality of 16384 registers: Redis's ``hllCount`` (Ertl's improved estimator)."""
    histo = _histogram(regs)
    m = float(REGISTERS)
    z = m * _tau((m - histo[Q + 1]) / m)
    for j in range(Q, 0, -1):
        z += histo[j]
        z *= 0.5
    z += m * _sigma(histo[0] / m)
    return _round_half_away(ALPHA_INF * m * m / z)


def pfcount(*values: bytes | None) -> int:
    """What PFCOUNT replies for these values (None for a missing key).

    One value: its cached cardinality when valid, else the estimate. Several: the estimate of
    their union (Redis ignores the caches then).
    """
    present = [v for v in values if v is not None]
    if len(values) == 1:
        if not present:
            return 0
        value = present[0]
        _check(value)
        if _cache_valid(value):
            return int.from_bytes(value[8:16], "little")
        return estimate(registers(value))
    return estimate(_max_registers(present)) if present else 0


def refresh_cache(value: bytes) -> bytes:
    """The value after a single-key PFCOUNT: a stale cached cardinality is recomputed."""
    _check(value)
    if _cache_valid(value):
        return value
    card = estimate(registers(value))
    return value[:8] + card.to_bytes(8, "little") + value[16:]


# ---- the commands ----

_HIGH_BITS = int.from_bytes(b"\x80" * REGISTERS, "little")
_ALL_BITS = (1 << (8 * REGISTERS)) - 1


def _max2(a: bytes, b: bytes) -> bytes:
    """Bytewise max of two register strings (values < 128) with SWAR big-int arithmetic."""
    x = int.from_bytes(a, "little")
    y = int.from_bytes(b, "little")
    ge = (((x | _HIGH_BITS) - y) & _HIGH_BITS) >> 7  # 1 in each byte where a >= b
    mask = ge * 0xFF
    return ((x & mask) | (y & ~mask & _ALL_BITS)).to_bytes(REGISTERS, "little")


def _max_registers(values) -> bytes:
    out = None
    for value in values:
        regs = registers(value)
        out = regs if out is None else _max2(out, regs)
    return out if out is not None else bytes(REGISTERS)


def pfadd(
    value: bytes | None, elements: Iterable[bytes], sparse_max_bytes: int = DEFAULT_SPARSE_MAX_BYTES
) -> tuple[bytes, bool]:
    """PFADD: ``(new value, changed)``; a missing key (None) is created (that is a change)."""
    value, changed, _ = pfadd_tail(value, elements, sparse_max_bytes)
    return value, changed


def pfadd_tail(
    value: bytes | None,
    elements: Iterable[bytes],
    sparse_max_bytes: int = DEFAULT_SPARSE_MAX_BYTES,
    after_end: int = 0,
) -> tuple[bytes, bool, int]:
    """``pfadd`` with the byte just past the value's end in Redis's buffer: ``after_end``
    before, and after, the command (``(value, changed, after_end)``).

    It matters only for a corrupt sparse value ending in the first byte of an XZERO: Redis
    reads that byte as the second one. It is the terminator (0) of a fresh string, but an
    edit of such a trailing XZERO writes its sequence's last byte there, and Redis keeps it
    until the next edit that moves the end.
    """
    created = value is None
    if value is None:
        value = new_hll()
    encoding = _check(value)
    sparse = _Sparse(value)
    sparse.after_end = after_end
    s: bytearray = sparse
    changed = created
    for element in elements:
        index, count = pattern(element)
        if encoding == SPARSE:
            try:
                if _sparse_set(s, index, count, sparse_max_bytes)[0]:
                    changed = True
                continue
            except _Promote:
                s = _to_dense_array(s)
                encoding = DENSE
        if count > _dense_get(s, index):
            _dense_set(s, index, count)
            changed = True
    if not changed:
        return value, False, after_end
    _invalidate(s)
    return bytes(s), True, getattr(s, "after_end", 0)


def pfmerge(
    dest: bytes | None, sources: Iterable[bytes | None], sparse_max_bytes: int = DEFAULT_SPARSE_MAX_BYTES
) -> bytes:
    """PFMERGE: the new value of ``dest`` (None if missing) merged with ``sources``
    (None entries are missing keys). ``dest`` itself is one of the inputs, as in Redis."""
    return pfmerge_tail(dest, sources, sparse_max_bytes)[0]


def pfmerge_tail(
    dest: bytes | None,
    sources: Iterable[bytes | None],
    sparse_max_bytes: int = DEFAULT_SPARSE_MAX_BYTES,
    after_end: int = 0,
) -> tuple[bytes, int]:
    """``pfmerge`` with the byte past the end of ``dest`` before and after (see ``pfadd_tail``)."""
    inputs = [v for v in (dest, *sources) if v is not None]
    use_dense = any(_check(v) == DENSE for v in inputs)
    merged = _max_registers(inputs)
    sparse = _Sparse(dest if dest is not None else new_hll())
    sparse.after_end = after_end if dest is not None else 0
    s: bytearray = sparse
    if s[4] == SPARSE and not use_dense:
        start = (HEADER_SIZE, 0, None)
        try:
            # Registers ascend, so each search resumes just before the last edit.
            for index in [i for i, v in enumerate(merged) if v]:
                start = _sparse_set(s, index, merged[index], sparse_max_bytes, start)[1]
        except _Promote:
            s = _to_dense_array(s)
        else:
            _invalidate(s)
            return bytes(s), getattr(s, "after_end", 0)
    elif s[4] == SPARSE:
        s = _to_dense_array(s)
    # Dense: every register ends at the maximum (dest is one of the inputs).
    out = bytearray(s[:HEADER_SIZE])
    out += _pack_dense(merged)
    _invalidate(out)
    return bytes(out), 0


def to_dense(value: bytes) -> tuple[bytes, bool]:
    """PFDEBUG TODENSE/GETREG: ``(value, converted)``; a dense value is returned as is."""
    if _check(value) == DENSE:
        return value, False
    return bytes(_to_dense_array(value)), True
