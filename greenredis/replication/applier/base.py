"""What every command family of the applier shares: the error, argument parsing, key helpers."""

import time
from fractions import Fraction

from greenredis.errors import RedisError
from greenredis.replication.keyspace import _TYPE_NAMES, PackedHash, Set, Stream, ZSet, type_name

__all__ = ["ApplyError", "Core", "now_ms", "parse_int", "parse_float", "copy_value"]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class ApplyError(RedisError):
    """A replicated command could not be applied exactly as Redis would.

    Raised for unknown or unsupported commands, bad arguments, and commands that fail
    against the local data (wrong type, missing key): the local copy may have diverged
    from the master, so the replica must resync in full rather than serve it.
    """


def now_ms():
    return int(time.time() * 1000)


def parse_int(arg, what="value"):
    """A Redis integer argument (64-bit, canonical decimal like Redis's string2ll)."""
    try:
        n = int(arg)
    except (ValueError, TypeError):
        raise ApplyError(f"{what} is not an integer: {arg!r}") from None
    # int() also takes " 1", "+1", "1_0" and "01", which Redis refuses.
    if b"%d" % n != arg or not INT64_MIN <= n <= INT64_MAX:
        raise ApplyError(f"{what} is not an integer or out of range: {arg!r}")
    return n


def parse_float(arg, what="value"):
    """A Redis double argument (strtod: decimal, inf, hex floats); NaN is refused."""
    try:
        x = float(arg)
    except ValueError:
        try:
            if arg.lstrip(b"+-")[:2] not in (b"0x", b"0X"):
                raise ValueError(arg)
            x = float.fromhex(arg.decode())
        except (ValueError, UnicodeDecodeError):
            raise ApplyError(f"{what} is not a valid float: {arg!r}") from None
    if x != x or b"_" in arg or arg[:1].isspace() or arg[-1:].isspace():
        raise ApplyError(f"{what} is not a valid float: {arg!r}")
    return x


def copy_value(value):
    """A copy that shares nothing mutable with ``value`` (COPY, transaction snapshots)."""
    t = type(value)
    if t is bytes or t is PackedHash:  # immutable
        return value
    if t is Stream or t is Set:
        return value.copy()  # a Set keeps its encoding and order, as setTypeDup does
    if t is ZSet:
        z = ZSet(value)
        z.skiplist = not value.listpack()  # DUP keeps the encoding
        return z
    return t(value)  # deque, dict


# ---- INCRBYFLOAT / HINCRBYFLOAT: x86-64 long double arithmetic and "%.17Lf" formatting ----
# Redis computes these in 80-bit long double and stores "%.17Lf" with trailing zeros
# removed. No library offers that type, so it is emulated exactly with Fractions.
# (Masters propagate the result as SET/HSET; this only serves very old streams.)


def _round_ld(fr):
    """Round a Fraction to the nearest long double (64-bit significand, ties to even)."""
    if fr == 0:
        return fr
    neg = fr < 0
    a = -fr if neg else fr
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if (a.numerator << max(0, -e)) < (a.denominator << max(0, e)):
        e -= 1  # now 2**e <= a < 2**(e+1)
    shift = 63 - e
    scaled = a * (Fraction(1 << shift) if shift >= 0 else Fraction(1, 1 << -shift))
    m = round(scaled)  # Fraction.__round__ rounds half to even
    r = Fraction(m) / (Fraction(1 << shift) if shift >= 0 else Fraction(1, 1 << -shift))
    return -r if neg else r


def _parse_ld(arg, what):
    try:
        text = arg.decode("ascii")
        if text != text.strip() or "_" in text:
            raise ValueError(text)
        fr = Fraction(text)
    except (ValueError, UnicodeDecodeError, ZeroDivisionError):
        raise ApplyError(f"{what} is not a valid float: {arg!r}") from None
    return _round_ld(fr)


def incr_long_double(current, increment):
    """``current + increment`` as Redis's INCRBYFLOAT stores it (bytes in, bytes out)."""
    total = _round_ld(_parse_ld(current, "value") + _parse_ld(increment, "increment"))
    if abs(total) >= Fraction(2) ** 16384:
        raise ApplyError("increment would produce NaN or Infinity")
    scaled = round(total * 10**17)  # exact decimal rounding, ties to even (like glibc)
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(18, "0")
    text = f"{sign}{digits[:-17]}.{digits[-17:]}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0" if text == "" else "-0"
    return text.encode()


class Core:
    """State and key helpers shared by the command mixins (see ``Applier``)."""

    # Set by Applier._bind(): the selected db's number and dicts.
    data = expires = fexp = None
    _db = 0

    def _delete(self, key):
        """Remove ``key`` with its TTL and field TTLs; True if it existed."""
        if self.data.pop(key, None) is None:
            return False
        if self.expires:
            self.expires.pop(key, None)
        if self.fexp:
            self.fexp.pop(key, None)
        return True

    def _put(self, key, value):
        """Store ``value`` at ``key`` as a new value (any TTL of the old one is dropped)."""
        self.data[key] = value
        if self.expires:
            self.expires.pop(key, None)
        if self.fexp:
            self.fexp.pop(key, None)

    def _typed(self, key, cls):
        """The value at ``key`` if it is a ``cls``, None if absent; another type raises WRONGTYPE."""
        value = self.data.get(key)
        if value is not None and type(value) is not cls:
            if type(value) is PackedHash and cls is dict:
                value = self.data[key] = value.unpack()  # written next: a dict of its own
            else:
                self._wrongtype(key, value, _TYPE_NAMES[cls])
        return value

    def _wrongtype(self, key, value, wanted):
        raise ApplyError(f"WRONGTYPE key {key!r} holds a {type_name(value)}, not a {wanted}")
