"""Decoders of Redis's compact blob encodings, as stored inside RDB strings.

listpack (Redis 5+), ziplist (up to 6.2), intset and zipmap (up to 2.4). Each takes
the whole blob (``bytes``) and returns a flat list of ``bytes`` elements (integers
become their decimal text, as Redis returns them); on a blob that does not follow
the format they raise ``EncodingError``. Written by hand: no maintained Python
package decodes these formats. Checks are the cheap structural ones (declared
sizes, element counts, terminators), which catch truncation and misalignment
without slowing the common path.
"""

from array import array

__all__ = [
    "EncodingError",
    "listpack_entries",
    "listpack_dict",
    "ziplist_entries",
    "intset_members",
    "zipmap_pairs",
]


class EncodingError(ValueError):
    """A listpack/ziplist/intset/zipmap blob is malformed."""


def _backlen_size(size):
    """Bytes of a listpack entry's trailing back-length for an entry of ``size`` bytes."""
    if size < 128:
        return 1
    if size < 16384:
        return 2
    if size < 2097152:
        return 3
    if size < 268435456:
        return 4
    return 5


def listpack_entries(lp):
    """The elements of a listpack, in order, as ``bytes``."""
    n = len(lp)
    if n < 7:
        raise EncodingError(f"listpack of {n} bytes is too short")
    if int.from_bytes(lp[0:4], "little") != n:
        raise EncodingError(f"listpack header says {int.from_bytes(lp[0:4], 'little')} bytes, blob has {n}")
    out = []
    append = out.append
    i = 6
    try:
        while True:
            b = lp[i]
            if b < 0xC0:
                if b >= 0x80:  # string, 6-bit length: the common case
                    j = i + b - 127  # i + 1 + (b & 0x3F)
                    append(lp[i + 1 : j])
                    i = j + 1
                else:  # 7-bit unsigned int
                    append(b"%d" % b)
                    i += 2
            elif b < 0xE0:  # 13-bit signed int
                v = ((b & 0x1F) << 8) | lp[i + 1]
                append(b"%d" % (v - 8192 if v >= 4096 else v))
                i += 3
            elif b < 0xF0:  # string, 12-bit length
                ln = ((b & 0x0F) << 8) | lp[i + 1]
                j = i + 2 + ln
                append(lp[i + 2 : j])
                i = j + _backlen_size(2 + ln)
            elif b == 0xFF:
                break
            elif b == 0xF0:  # string, 32-bit length
                ln = int.from_bytes(lp[i + 1 : i + 5], "little")
                j = i + 5 + ln
                if j > n:
                    raise EncodingError("listpack string runs past the end")
                append(lp[i + 5 : j])
                i = j + _backlen_size(5 + ln)
            elif b <= 0xF4:  # 16/24/32/64-bit signed int
                w = (2, 3, 4, 8)[b - 0xF1]
                append(b"%d" % int.from_bytes(lp[i + 1 : i + 1 + w], "little", signed=True))
                i += 2 + w  # encoding byte + w + 1-byte backlen
            else:
                raise EncodingError(f"unknown listpack encoding byte 0x{b:02x} at {i}")
    except IndexError:
        raise EncodingError("listpack has no terminator") from None
    if i != n - 1:
        raise EncodingError(f"listpack terminator at {i}, expected at {n - 1}")
    declared = lp[4] | (lp[5] << 8)
    if declared != 65535 and declared != len(out):
        raise EncodingError(f"listpack header says {declared} elements, found {len(out)}")
    return out


def listpack_dict(lp):
    """A listpack of (field, value) pairs as a dict.

    Fast path for listpacks made only of short strings (the usual small hash);
    anything else, or anything odd (duplicates, bad counts), goes through
    ``listpack_entries``, which decodes every encoding and raises on corruption.
    """
    end = len(lp) - 1
    d = {}
    i = 6
    try:
        while i < end:
            b = lp[i]
            if not 0x80 <= b < 0xC0:
                break
            j = i + b - 127  # field: 6-bit string at i, data up to j
            f = lp[i + 1 : j]
            b = lp[j + 1]
            if not 0x80 <= b < 0xC0:
                break
            i = j + b - 126  # value: 6-bit string at j + 1
            d[f] = lp[j + 2 : i]
            i += 1
        else:
            if (
                i == end
                and lp[end] == 0xFF
                and (lp[4] | (lp[5] << 8)) == 2 * len(d)
                and int.from_bytes(lp[0:4], "little") == end + 1
            ):
                return d
    except IndexError:
        pass
    flat = listpack_entries(lp)
    if len(flat) & 1:
        raise EncodingError("odd number of elements in a listpack of pairs")
    it = iter(flat)
    d = dict(zip(it, it))
    if 2 * len(d) != len(flat):
        raise EncodingError("duplicate fields in a listpack of pairs")
    return d


def ziplist_entries(zl):
    """The elements of a ziplist, in order, as ``bytes``."""
    n = len(zl)
    if n < 11:
        raise EncodingError(f"ziplist of {n} bytes is too short")
    if int.from_bytes(zl[0:4], "little") != n:
        raise EncodingError(f"ziplist header says {int.from_bytes(zl[0:4], 'little')} bytes, blob has {n}")
    out = []
    append = out.append
    i = 10
    prev_start = -1
    try:
        while True:
            b = zl[i]
            if b == 0xFF:
                break
            prev_start = i
            i += 1 if b < 0xFE else 5  # prevlen: 1 byte, or 0xFE + 4 bytes
            e = zl[i]
            t = e >> 6
            if t == 0:
                j = i + 1 + (e & 0x3F)
                append(zl[i + 1 : j])
                i = j
            elif t == 1:
                j = i + 2 + (((e & 0x3F) << 8) | zl[i + 1])
                append(zl[i + 2 : j])
                i = j
            elif e == 0x80:
                j = i + 5 + int.from_bytes(zl[i + 1 : i + 5], "big")
                append(zl[i + 5 : j])
                i = j
            elif e == 0xC0:
                append(b"%d" % int.from_bytes(zl[i + 1 : i + 3], "little", signed=True))
                i += 3
            elif e == 0xD0:
                append(b"%d" % int.from_bytes(zl[i + 1 : i + 5], "little", signed=True))
                i += 5
            elif e == 0xE0:
                append(b"%d" % int.from_bytes(zl[i + 1 : i + 9], "little", signed=True))
                i += 9
            elif e == 0xF0:
                append(b"%d" % int.from_bytes(zl[i + 1 : i + 4], "little", signed=True))
                i += 4
            elif e == 0xFE:
                append(b"%d" % int.from_bytes(zl[i + 1 : i + 2], "little", signed=True))
                i += 2
            elif 0xF1 <= e <= 0xFD:
                append(b"%d" % ((e & 0x0F) - 1))
                i += 1
            else:
                raise EncodingError(f"unknown ziplist encoding byte 0x{e:02x} at {i}")
    except IndexError:
        raise EncodingError("ziplist has no terminator") from None
    if i != n - 1:
        raise EncodingError(f"ziplist terminator at {i}, expected at {n - 1}")
    tail = int.from_bytes(zl[4:8], "little")
    if out and tail != prev_start:
        raise EncodingError(f"ziplist tail offset {tail} does not point at the last entry")
    declared = zl[8] | (zl[9] << 8)
    if declared != 65535 and declared != len(out):
        raise EncodingError(f"ziplist header says {declared} elements, found {len(out)}")
    return out


_INTSET_TYPECODES: dict[int, str] = {}
for _code in "hilq":
    _INTSET_TYPECODES.setdefault(array(_code).itemsize, _code)


def intset_members(blob):
    """The members of an intset as decimal ``bytes``, in ascending order."""
    if len(blob) < 8:
        raise EncodingError("intset header is truncated")
    width = int.from_bytes(blob[0:4], "little")
    count = int.from_bytes(blob[4:8], "little")
    if width not in (2, 4, 8):
        raise EncodingError(f"intset with element width {width}")
    if len(blob) != 8 + width * count:
        raise EncodingError(f"intset of {count} x {width} bytes has {len(blob) - 8} bytes")
    values = array(_INTSET_TYPECODES[width], blob[8:])
    if array("h", b"\x01\x00")[0] != 1:  # pragma: no cover - big-endian hosts
        values.byteswap()
    return [b"%d" % v for v in values]


def zipmap_pairs(zm):
    """A zipmap (Redis <= 2.4 small hash) as a flat ``[field, value, ...]`` list."""
    out = []
    append = out.append
    n = len(zm)
    i = 1  # byte 0: count (< 254) or 254 = unknown
    try:
        while True:
            b = zm[i]
            if b == 0xFF:
                break
            if b == 0xFE:
                ln = int.from_bytes(zm[i + 1 : i + 5], "little")
                i += 5
            else:
                ln = b
                i += 1
            j = i + ln
            append(zm[i:j])
            i = j
            b = zm[i]
            if b == 0xFE:
                ln = int.from_bytes(zm[i + 1 : i + 5], "little")
                i += 5
            elif b == 0xFF:
                raise EncodingError("zipmap field without a value")
            else:
                ln = b
                i += 1
            free = zm[i]
            i += 1
            j = i + ln
            append(zm[i:j])
            i = j + free
            if i > n:
                raise EncodingError("zipmap value runs past the end")
    except IndexError:
        raise EncodingError("zipmap has no terminator") from None
    if i != n - 1:
        raise EncodingError(f"zipmap terminator at {i}, expected at {n - 1}")
    if zm[0] < 254 and zm[0] * 2 != len(out):
        raise EncodingError(f"zipmap header says {zm[0]} pairs, found {len(out) // 2}")
    return out
