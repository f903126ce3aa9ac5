"""String commands: SET and friends, counters, byte and bit edits."""

from greenredis.replication.applier.base import (
    INT64_MAX,
    INT64_MIN,
    ApplyError,
    Core,
    incr_long_double,
    now_ms,
    parse_int,
)

MAX_STRING = 512 * 1024 * 1024


def _expire_arg(option, arg):
    """Absolute unix ms for a SET/GETEX EX|PX|EXAT|PXAT argument."""
    n = parse_int(arg, "expire time")
    if n <= 0:
        raise ApplyError(f"invalid expire time {arg!r}")
    if option == b"EX":
        return now_ms() + n * 1000
    if option == b"PX":
        return now_ms() + n
    if option == b"EXAT":
        return n * 1000
    return n  # PXAT


class StringsMixin(Core):
    def _string(self, key):
        return self._typed(key, bytes)

    def cmd_set(self, argv):
        key = argv[1]
        if len(argv) == 3:  # the hot path: _put, inline
            self.data[key] = argv[2]
            if self.expires:
                self.expires.pop(key, None)
            if self.fexp:
                self.fexp.pop(key, None)
            return [(self._db, key)]
        nx = xx = get = keepttl = False
        expire = ifeq = ifne = None
        i = 3
        n = len(argv)
        while i < n:
            opt = argv[i].upper()
            if opt == b"IFEQ" and i + 1 < n:  # Valkey 8.1, Redis 8.4
                ifeq = argv[i + 1]
                i += 1
            elif opt == b"IFNE" and i + 1 < n:  # Redis 8.4
                ifne = argv[i + 1]
                i += 1
            elif opt == b"NX":
                nx = True
            elif opt == b"XX":
                xx = True
            elif opt == b"GET":
                get = True
            elif opt == b"KEEPTTL":
                keepttl = True
            elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < n:
                expire = _expire_arg(opt, argv[i + 1])
                i += 1
            else:
                raise ApplyError(f"SET: syntax error at {argv[i]!r}")
            i += 1
        if (nx and xx) or (keepttl and expire is not None):
            raise ApplyError("SET: syntax error")
        old = self._string(key) if (get or ifeq is not None or ifne is not None) else self.data.get(key)
        if (nx and old is not None) or (xx and old is None):
            return []
        if (ifeq is not None and old != ifeq) or (ifne is not None and old == ifne):
            return []
        if keepttl:
            self.data[key] = argv[2]
            if self.fexp:
                self.fexp.pop(key, None)
        else:
            self._put(key, argv[2])
        if expire is not None:
            self.expires[key] = expire
        return [(self._db, key)]

    def cmd_setnx(self, argv):
        key = argv[1]
        if len(argv) != 3:
            raise ApplyError("SETNX: wrong number of arguments")
        if key in self.data:
            return []
        self._put(key, argv[2])
        return [(self._db, key)]

    def _setex(self, argv, option):
        if len(argv) != 4:
            raise ApplyError("SETEX: wrong number of arguments")
        when = _expire_arg(option, argv[2])
        key = argv[1]
        self._put(key, argv[3])
        self.expires[key] = when
        return [(self._db, key)]

    def cmd_setex(self, argv):
        return self._setex(argv, b"EX")

    def cmd_psetex(self, argv):
        return self._setex(argv, b"PX")

    def cmd_mset(self, argv):
        if len(argv) < 3 or len(argv) % 2 == 0:
            raise ApplyError("MSET: wrong number of arguments")
        touched = []
        for i in range(1, len(argv), 2):
            self._put(argv[i], argv[i + 1])
            touched.append((self._db, argv[i]))
        return touched

    def cmd_msetnx(self, argv):
        if len(argv) < 3 or len(argv) % 2 == 0:
            raise ApplyError("MSETNX: wrong number of arguments")
        data = self.data
        if any(argv[i] in data for i in range(1, len(argv), 2)):
            return []
        return self.cmd_mset(argv)

    def cmd_getset(self, argv):
        if len(argv) != 3:
            raise ApplyError("GETSET: wrong number of arguments")
        self._string(argv[1])
        self._put(argv[1], argv[2])
        return [(self._db, argv[1])]

    def cmd_getdel(self, argv):
        if len(argv) != 2:
            raise ApplyError("GETDEL: wrong number of arguments")
        if self._string(argv[1]) is None:
            return []
        self._delete(argv[1])
        return [(self._db, argv[1])]

    def cmd_getex(self, argv):
        key = argv[1]
        expire = None
        persist = False
        i, n = 2, len(argv)
        while i < n:
            opt = argv[i].upper()
            if opt == b"PERSIST" and not persist and expire is None:
                persist = True
            elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < n and not persist and expire is None:
                expire = _expire_arg(opt, argv[i + 1])
                i += 1
            else:
                raise ApplyError(f"GETEX: syntax error at {argv[i]!r}")
            i += 1
        if self._string(key) is None or (expire is None and not persist):
            return []
        if persist:
            if self.expires.pop(key, None) is None:
                return []
        else:
            self.expires[key] = expire
        return [(self._db, key)]

    def cmd_append(self, argv):
        if len(argv) != 3:
            raise ApplyError("APPEND: wrong number of arguments")
        key = argv[1]
        old = self._string(key)
        if old is None:
            self._put(key, argv[2])
        else:
            if len(old) + len(argv[2]) > MAX_STRING:
                raise ApplyError("APPEND: string exceeds maximum allowed size")
            self.data[key] = old + argv[2]
        return [(self._db, key)]

    def cmd_setrange(self, argv):
        if len(argv) != 4:
            raise ApplyError("SETRANGE: wrong number of arguments")
        key, value = argv[1], argv[3]
        offset = parse_int(argv[2], "offset")
        if offset < 0:
            raise ApplyError("SETRANGE: offset is out of range")
        old = self._string(key)
        if not value:
            return []  # Redis neither creates nor changes anything
        if offset + len(value) > MAX_STRING:
            raise ApplyError("SETRANGE: string exceeds maximum allowed size")
        if old is None:
            self._put(key, b"\0" * offset + value)
        else:
            if len(old) < offset:
                old += b"\0" * (offset - len(old))
            self.data[key] = old[:offset] + value + old[offset + len(value) :]
        return [(self._db, key)]

    # ---- counters ----

    def _incr(self, key, by):
        old = self._string(key)
        if old is None:
            value = by
        else:
            value = parse_int(old, "value") + by
            if not INT64_MIN <= value <= INT64_MAX:
                raise ApplyError("increment or decrement would overflow")
        if old is None:
            self._put(key, b"%d" % value)
        else:
            self.data[key] = b"%d" % value  # keeps the TTL
        return [(self._db, key)]

    def cmd_incr(self, argv):
        if len(argv) != 2:
            raise ApplyError("INCR: wrong number of arguments")
        return self._incr(argv[1], 1)

    def cmd_decr(self, argv):
        if len(argv) != 2:
            raise ApplyError("DECR: wrong number of arguments")
        return self._incr(argv[1], -1)

    def cmd_incrby(self, argv):
        if len(argv) != 3:
            raise ApplyError("INCRBY: wrong number of arguments")
        return self._incr(argv[1], parse_int(argv[2], "increment"))

    def cmd_decrby(self, argv):
        if len(argv) != 3:
            raise ApplyError("DECRBY: wrong number of arguments")
        by = parse_int(argv[2], "decrement")
        if by == INT64_MIN:
            raise ApplyError("decrement would overflow")
        return self._incr(argv[1], -by)

    def cmd_incrbyfloat(self, argv):
        if len(argv) != 3:
            raise ApplyError("INCRBYFLOAT: wrong number of arguments")
        key = argv[1]
        old = self._string(key)
        value = incr_long_double(b"0" if old is None else old, argv[2])
        if old is None:
            self._put(key, value)
        else:
            self.data[key] = value
        return [(self._db, key)]

    # ---- bits ----

    def cmd_setbit(self, argv):
        if len(argv) != 4:
            raise ApplyError("SETBIT: wrong number of arguments")
        key = argv[1]
        offset = parse_int(argv[2], "bit offset")
        if not 0 <= offset < MAX_STRING * 8:
            raise ApplyError("bit offset is not an integer or out of range")
        if argv[3] not in (b"0", b"1"):
            raise ApplyError("bit is not an integer or out of range")
        old = self._string(key)
        buf = bytearray(old or b"")
        byte = offset >> 3
        if len(buf) <= byte:
            buf.extend(bytes(byte + 1 - len(buf)))
        mask = 0x80 >> (offset & 7)
        if argv[3] == b"1":
            buf[byte] |= mask
        else:
            buf[byte] &= ~mask & 0xFF
        if old is None:
            self._put(key, bytes(buf))
        else:
            self.data[key] = bytes(buf)
        return [(self._db, key)]

    def cmd_bitfield(self, argv):
        key = argv[1]
        ops = []  # (op, signed, bits, offset, value)
        overflow = b"WRAP"
        highest = -1
        i, n = 2, len(argv)
        while i < n:
            op = argv[i].upper()
            if op == b"OVERFLOW" and i + 1 < n:
                overflow = argv[i + 1].upper()
                if overflow not in (b"WRAP", b"SAT", b"FAIL"):
                    raise ApplyError("BITFIELD: invalid OVERFLOW type")
                ops.append((b"OVERFLOW", overflow, 0, 0, 0))
                i += 2
                continue
            if op == b"GET" and i + 2 < n:
                nargs = 2
            elif op in (b"SET", b"INCRBY") and i + 3 < n:
                nargs = 3
            else:
                raise ApplyError(f"BITFIELD: syntax error at {argv[i]!r}")
            signed, bits = _bitfield_type(argv[i + 1])
            offset = _bitfield_offset(argv[i + 2], bits)
            value = parse_int(argv[i + 3], "value") if nargs == 3 else 0
            if nargs == 3:
                highest = max(highest, offset + bits - 1)
            ops.append((op, signed, bits, offset, value))
            i += 1 + nargs
        if highest < 0:
            return []  # only GETs: a read
        old = self._string(key)
        buf = bytearray(old or b"")
        need = (highest >> 3) + 1
        if len(buf) < need:
            buf.extend(bytes(need - len(buf)))
        overflow = b"WRAP"
        for op, signed, bits, offset, value in ops:
            if op == b"OVERFLOW":
                overflow = signed
                continue
            if op == b"GET":
                continue
            if signed:
                if op == b"INCRBY":
                    value = _fit_signed(_get_bits(buf, offset, bits, True), value, bits, overflow)
                else:
                    value = _fit_signed(value, 0, bits, overflow)
            else:
                if op == b"INCRBY":
                    value = _get_bits(buf, offset, bits, False) + value
                else:
                    value &= (1 << 64) - 1  # Redis reads the argument as a uint64
                value = _fit(value, bits, False, overflow)
            if value is None:
                continue  # FAIL: nothing written
            _set_bits(buf, offset, bits, value)
        if old is None:
            self._put(key, bytes(buf))
        else:
            self.data[key] = bytes(buf)
        return [(self._db, key)]

    def cmd_bitop(self, argv):
        if len(argv) < 4:
            raise ApplyError("BITOP: wrong number of arguments")
        op = argv[1].upper()
        dest = argv[2]
        sources = [self._string(k) or b"" for k in argv[3:]]
        if op == b"NOT":
            if len(sources) != 1:
                raise ApplyError("BITOP NOT must be called with a single source key.")
            result = bytes(b ^ 0xFF for b in sources[0])
        elif op in (b"AND", b"OR", b"XOR"):
            size = max(len(s) for s in sources)
            acc = int.from_bytes(sources[0].ljust(size, b"\0"), "big")
            for s in sources[1:]:
                x = int.from_bytes(s.ljust(size, b"\0"), "big")
                if op == b"AND":
                    acc &= x
                elif op == b"OR":
                    acc |= x
                else:
                    acc ^= x
            result = acc.to_bytes(size, "big") if size else b""
        else:
            raise ApplyError(f"BITOP: unknown operation {argv[1]!r}")
        if not result:
            return [(self._db, dest)] if self._delete(dest) else []
        self._put(dest, result)
        return [(self._db, dest)]


def _bitfield_type(arg):
    if arg[:1] in (b"i", b"I", b"u", b"U"):
        signed = arg[:1] in (b"i", b"I")
        try:
            bits = int(arg[1:])
        except ValueError:
            bits = 0
        if (signed and 1 <= bits <= 64) or (not signed and 1 <= bits <= 63):
            return signed, bits
    raise ApplyError(f"BITFIELD: invalid bitfield type {arg!r}")


def _bitfield_offset(arg, bits):
    mul = arg[:1] == b"#"
    offset = parse_int(arg[1:] if mul else arg, "bit offset")
    if mul:
        offset *= bits
    if not 0 <= offset < MAX_STRING * 8:
        raise ApplyError("bit offset is not an integer or out of range")
    return offset


def _get_bits(buf, offset, bits, signed):
    first, last = offset >> 3, (offset + bits - 1) >> 3
    chunk = int.from_bytes(bytes(buf[first : last + 1]).ljust(last + 1 - first, b"\0"), "big")
    total = (last + 1 - first) * 8
    value = (chunk >> (total - (offset - first * 8) - bits)) & ((1 << bits) - 1)
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value


def _set_bits(buf, offset, bits, value):
    first, last = offset >> 3, (offset + bits - 1) >> 3
    total = (last + 1 - first) * 8
    chunk = int.from_bytes(buf[first : last + 1], "big")
    shift = total - (offset - first * 8) - bits
    mask = ((1 << bits) - 1) << shift
    chunk = (chunk & ~mask) | ((value & ((1 << bits) - 1)) << shift)
    buf[first : last + 1] = chunk.to_bytes(last + 1 - first, "big")


def _wrap64(n):
    """``n`` as a C int64_t computed with wrap-around."""
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >> 63 else n


def _fit_signed(value, incr, bits, overflow):
    """``value + incr`` in a signed field as Redis's checkSignedBitfieldOverflow decides it.

    Redis computes the room left (``max - value``, ``min - value``) in int64 with
    wrap-around, so a SET of a value near INT64_MIN into a short field counts as an
    overflow upwards and saturates to the maximum. None means FAIL.
    """
    hi = (1 << (bits - 1)) - 1
    lo = -hi - 1
    up, down = _wrap64(hi - value), _wrap64(lo - value)
    if value > hi or (bits != 64 and incr > up) or (value >= 0 and incr > 0 and incr > up):
        limit = hi
    elif value < lo or (bits != 64 and incr < down) or (value < 0 and incr < 0 and incr < down):
        limit = lo
    else:
        return value + incr
    if overflow == b"FAIL":
        return None
    if overflow == b"SAT":
        return limit
    return _fit(value + incr, bits, True, b"WRAP")


def _fit(value, bits, signed, overflow):
    """Apply BITFIELD's OVERFLOW policy; None means FAIL (skip the write)."""
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if lo <= value <= hi:
        return value
    if overflow == b"FAIL":
        return None
    if overflow == b"SAT":
        return hi if value > hi else lo
    value &= (1 << bits) - 1  # WRAP
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value
