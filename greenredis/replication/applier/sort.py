"""SORT ... STORE (SORT without STORE is a read and is never propagated)."""

import functools
from collections import deque

from greenredis.replication.applier.base import ApplyError, Core, parse_int
from greenredis.replication.keyspace import ZSet


class SortMixin(Core):
    def _by_pattern(self, pattern, member):
        """SORT's BY/GET lookup: ``#``, ``key*`` (a string) or ``key*->field`` (a hash field)."""
        if pattern == b"#":
            return member
        star = pattern.find(b"*")
        if star < 0:
            return None
        arrow = pattern.find(b"->", star + 1)
        field = None
        if arrow >= 0 and arrow + 2 < len(pattern):
            field = pattern[arrow + 2 :]
            pattern = pattern[:arrow]
        key = pattern[:star] + member + pattern[star + 1 :]
        value = self.data.get(key)
        if value is None:
            return None
        if field is not None:
            return value.get(field) if type(value) is dict else None
        return value if type(value) is bytes else None

    def cmd_sort(self, argv):
        key = argv[1]
        desc = alpha = dontsort = False
        limit_start, limit_count = 0, -1
        by = store = None
        gets = []
        i = 2
        n = len(argv)
        while i < n:
            opt = argv[i].upper()
            left = n - i - 1
            if opt == b"ASC":
                desc = False
            elif opt == b"DESC":
                desc = True
            elif opt == b"ALPHA":
                alpha = True
            elif opt == b"LIMIT" and left >= 2:
                limit_start = parse_int(argv[i + 1], "LIMIT offset")
                limit_count = parse_int(argv[i + 2], "LIMIT count")
                i += 2
            elif opt == b"STORE" and left >= 1:
                store = argv[i + 1]
                i += 1
            elif opt == b"BY" and left >= 1:
                by = argv[i + 1]
                dontsort = b"*" not in by
                i += 1
            elif opt == b"GET" and left >= 1:
                gets.append(argv[i + 1])
                i += 1
            else:
                raise ApplyError(f"SORT: syntax error at {argv[i]!r}")
            i += 1
        if store is None:
            return []  # a read
        value = self.data.get(key)
        kind = type(value)
        if value is not None and kind not in (deque, set, ZSet):
            self._wrongtype(key, value, "list, set or zset")
        if value is None:
            value, kind = deque(), deque
        if dontsort and kind is set:
            # Redis sorts a set anyway when storing, so replicas get the same order.
            dontsort, alpha, by = False, True, None

        size = len(value)
        start = max(limit_start, 0)
        end = size - 1 if limit_count < 0 else start + limit_count - 1
        if start >= size:
            start, end = size - 1, size - 2
        end = min(end, size - 1)

        if dontsort:
            if kind is ZSet:
                items = [m for m, _ in value.ordered()]
            else:
                items = list(value)
            if desc:
                items.reverse()
            picked = items[start : end + 1] if end >= start else []
        else:
            items = list(value) if kind is not ZSet else list(value.keys())
            picked = self._sorted(items, by, alpha, desc)[start : end + 1] if end >= start else []

        result = deque()
        if gets:
            for member in picked:
                for pattern in gets:
                    got = self._by_pattern(pattern, member)
                    result.append(b"" if got is None else got)
        else:
            result.extend(picked)
        if result:
            self._put(store, result)
            return [(self._db, store)]
        return [(self._db, store)] if self._delete(store) else []

    def _sorted(self, items, by, alpha, desc):
        sign = -1 if desc else 1
        if not alpha:
            scored = []
            for member in items:
                weight = self._by_pattern(by, member) if by else member
                score = 0.0 if weight is None else _strtod(weight)
                scored.append((score, member))

            def cmp(a, b):
                c = (a[0] > b[0]) - (a[0] < b[0]) or (a[1] > b[1]) - (a[1] < b[1])
                return sign * c

            return [m for _, m in sorted(scored, key=functools.cmp_to_key(cmp))]
        if by:
            keyed = [(self._by_pattern(by, m), m) for m in items]

            def cmp(a, b):
                x, y = a[0], b[0]
                if x is None or y is None:
                    c = 0 if x is y else (-1 if x is None else 1)
                else:
                    c = (x > y) - (x < y)  # STORE compares bytes, not by locale
                return sign * c

            return [m for _, m in sorted(keyed, key=functools.cmp_to_key(cmp))]
        return sorted(items, reverse=desc)


_C_SPACE = b" \t\n\v\f\r"


def _strtod(value):
    """A SORT weight as Redis reads it: C strtod over the whole C string (up to a NUL)."""
    text = value.split(b"\0", 1)[0]
    if not text:
        return 0.0  # strtod converts nothing and stops at the terminator: accepted as 0
    body = text.lstrip(_C_SPACE)
    try:
        if not body or body[-1:] in _C_SPACE or b"_" in body:
            raise ValueError(text)
        try:
            score = float(body)
        except ValueError:
            if body.lstrip(b"+-")[:2] not in (b"0x", b"0X"):
                raise
            score = float.fromhex(body.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ApplyError("One or more scores can't be converted into double") from None
    if score != score:
        raise ApplyError("One or more scores can't be converted into double")
    return score
