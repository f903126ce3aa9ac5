"""SORT ... STORE (SORT without STORE is a read and is never propagated)."""

import functools
from collections import deque

from greenredis.replication.applier.base import ApplyError, Core, parse_int
from greenredis.replication.keyspace import PackedHash, Set, ZSet


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
            return value.get(field) if type(value) in (dict, PackedHash) else None
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
        if value is not None and kind not in (deque, Set, ZSet):
            self._wrongtype(key, value, "list, set or zset")
        if value is None:
            value, kind = deque(), deque
        if dontsort and kind is Set:
            # Redis sorts a set anyway when storing, so replicas get the same order.
            dontsort, alpha, by = False, True, None

        if kind is ZSet:
            value.skiplist = True  # Redis converts a sorted set it sorts, for good
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
            picked = self._sorted(_members(value, kind), by, alpha, desc, start, end)
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

    def _sorted(self, items, by, alpha, desc, start, end):
        """``items[start:end+1]`` once sorted as Redis's sortCompare orders them.

        Ties are left only by ALPHA with BY (equal or missing weights). With LIMIT and BY
        Redis sorts with its partial quicksort (unstable), otherwise with glibc's qsort,
        a merge sort (stable): both are reproduced, so ties come out in Redis's order.
        """
        if end < start:
            return []
        if not alpha:
            weights = [self._by_pattern(by, m) if by else m for m in items]
            vector = [(0.0 if w is None else _strtod(w), m) for w, m in zip(weights, items)]
        elif by:
            vector = [(self._by_pattern(by, m), m) for m in items]
        else:
            vector = [(m, m) for m in items]
        sign = -1 if desc else 1
        if not alpha:

            def cmp(a, b):
                x, y = a[0], b[0]
                c = (x > y) - (x < y) or (a[1] > b[1]) - (a[1] < b[1])
                return sign * c
        else:

            def cmp(a, b):
                x, y = a[0], b[0]
                if x is None or y is None:
                    c = 0 if x is y else (-1 if x is None else 1)
                else:
                    c = (x > y) - (x < y)  # STORE compares bytes, not by locale
                return sign * c

        if alpha and by and (start != 0 or end != len(vector) - 1):
            # Only ALPHA BY leaves ties (numeric weights fall back to comparing the
            # elements): there the partial quicksort's order shows.
            pqsort(vector, cmp, start, end)
        else:
            vector.sort(key=functools.cmp_to_key(cmp))
        return [m for _, m in vector[start : end + 1]]


def _members(value, kind):
    """The elements in the order Redis loads them into its sort vector."""
    if kind is Set:
        return value.ordered()  # an intset in numeric order, a 7.2+ listpack as inserted
    # A list in its order. A hashtable set or a sorted set iterates in hash order, seeded
    # at random per process: no replica reproduces it, so the order of ties is arbitrary.
    return list(value)


def pqsort(v, cmp, lrange, rrange):
    """Sort ``v`` in place enough that ``v[lrange:rrange+1]`` is right, as Redis's pqsort.

    Bentley & McIlroy's quicksort (NetBSD's qsort) that skips the partitions outside
    [lrange, rrange]: insertion sort below 7 elements, median of three (of nine above 40)
    as the pivot, three-way partitioning; equal elements end up in its particular order.
    """
    todo = [(0, len(v))]  # partitions are independent: a stack instead of C's recursion
    while todo:
        a, n = todo.pop()
        todo += _partition(v, a, n, cmp, lrange, rrange)


def _med3(v, a, b, c, cmp):
    if cmp(v[a], v[b]) < 0:
        return b if cmp(v[b], v[c]) < 0 else (c if cmp(v[a], v[c]) < 0 else a)
    return b if cmp(v[b], v[c]) > 0 else (a if cmp(v[a], v[c]) < 0 else c)


def _partition(v, a, n, cmp, lrange, rrange):
    """One step of pqsort on ``v[a:a+n]``: the partitions left to sort."""
    if n < 7:
        for m in range(a + 1, a + n):
            j = m
            while j > a and cmp(v[j - 1], v[j]) > 0:
                v[j], v[j - 1] = v[j - 1], v[j]
                j -= 1
        return []
    m = a + n // 2
    if n > 7:
        lo, hi = a, a + n - 1
        if n > 40:
            d = n // 8
            lo = _med3(v, lo, lo + d, lo + 2 * d, cmp)
            m = _med3(v, m - d, m, m + d, cmp)
            hi = _med3(v, hi - 2 * d, hi - d, hi, cmp)
        m = _med3(v, lo, m, hi, cmp)
    v[a], v[m] = v[m], v[a]
    pivot = v[a]
    pa = pb = a + 1
    pc = pd = a + n - 1
    while True:  # [a, pa) == pivot, [pa, pb) < pivot, (pc, pd] > pivot, (pd, end) == pivot
        while pb <= pc:
            c = cmp(v[pb], pivot)
            if c > 0:
                break
            if c == 0:
                v[pa], v[pb] = v[pb], v[pa]
                pa += 1
            pb += 1
        while pb <= pc:
            c = cmp(v[pc], pivot)
            if c < 0:
                break
            if c == 0:
                v[pc], v[pd] = v[pd], v[pc]
                pd -= 1
            pc -= 1
        if pb > pc:
            break
        v[pb], v[pc] = v[pc], v[pb]
        pb += 1
        pc -= 1
    pn = a + n
    r = min(pa - a, pb - pa)
    _vecswap(v, a, pb - r, r)
    r = min(pd - pc, pn - pd - 1)
    _vecswap(v, pb, pn - r, r)
    parts = []
    r = pb - pa
    if r > 1 and _overlaps(a, r, lrange, rrange):
        parts.append((a, r))
    r = pd - pc
    if r > 1 and _overlaps(pn - r, r, lrange, rrange):
        parts.append((pn - r, r))
    return parts


def _vecswap(v, i, j, n):
    for k in range(n):
        v[i + k], v[j + k] = v[j + k], v[i + k]


def _overlaps(a, n, lrange, rrange):
    """Does the partition ``[a, a+n)`` hold a position of the wanted range?"""
    return not ((lrange < a and rrange < a) or (lrange >= a + n and rrange >= a + n))


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
