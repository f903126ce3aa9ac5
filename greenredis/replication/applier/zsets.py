"""Sorted set commands and their *STORE forms."""

import heapq

from greenredis.replication.applier.base import ApplyError, Core, parse_float, parse_int
from greenredis.replication.keyspace import ZSET_LISTPACK_ENTRIES, ZSET_LISTPACK_VALUE, Set, ZSet


def _score_bound(arg):
    """A ZRANGEBYSCORE bound: (value, exclusive)."""
    if arg[:1] == b"(":
        return parse_float(arg[1:], "min or max"), True
    return parse_float(arg, "min or max"), False


def _lex_bound(arg):
    """A ZRANGEBYLEX bound: (value, exclusive); value None for -/+ (infinities)."""
    if arg == b"-":
        return b"-", None
    if arg == b"+":
        return b"+", None
    if arg[:1] == b"(":
        return arg[1:], True
    if arg[:1] == b"[":
        return arg[1:], False
    raise ApplyError(f"min or max not valid string range item: {arg!r}")


def _in_score(score, lo, lo_ex, hi, hi_ex):
    return (score > lo if lo_ex else score >= lo) and (score < hi if hi_ex else score <= hi)


def _gte_min(member, lo, lo_ex):
    if lo_ex is None:
        return lo == b"-"
    return member > lo if lo_ex else member >= lo


def _lte_max(member, hi, hi_ex):
    if hi_ex is None:
        return hi == b"+"
    return member < hi if hi_ex else member <= hi


def _lex_cmp(a, a_ex, b, b_ex):
    """Redis's sdscmplex of two bounds: ``-`` and ``+`` (ex None) sort before/after all."""
    if a_ex is None and b_ex is None and a == b:
        return 0
    if (a_ex is None and a == b"-") or (b_ex is None and b == b"+"):
        return -1
    if a_ex is None or b_ex is None:
        return 1
    return (a > b) - (a < b)


def _lex_range(ordered, lo, lo_ex, hi, hi_ex, rev=False):
    """Members in a lex range, in walk order, as Redis walks a listpack zset.

    Like zzlIsInLexRange the range is empty unless the last member is >= min and the first
    <= max; then the walk starts at the first member >= min (the last <= max for REV) and
    stops at the first one out of range, whatever the scores in between.
    """
    cmp = _lex_cmp(lo, lo_ex, hi, hi_ex)
    if cmp > 0 or (cmp == 0 and (lo_ex or hi_ex)):
        return []
    if not ordered or not _gte_min(ordered[-1][0], lo, lo_ex) or not _lte_max(ordered[0][0], hi, hi_ex):
        return []
    if rev:
        walk, first, keep = (
            reversed(ordered),
            lambda m: _lte_max(m, hi, hi_ex),
            lambda m: _gte_min(m, lo, lo_ex),
        )
    else:
        walk, first, keep = iter(ordered), lambda m: _gte_min(m, lo, lo_ex), lambda m: _lte_max(m, hi, hi_ex)
    out = []
    for item in walk:
        if first(item[0]):
            if not keep(item[0]):
                return []
            out.append(item)
            break
    for item in walk:
        if not keep(item[0]):
            break
        out.append(item)
    return out


def _rank_range(n, start, stop):
    if start < 0:
        start = max(n + start, 0)
    if stop < 0:
        stop = n + stop
    stop = min(stop, n - 1)
    return start, stop


class ZSetsMixin(Core):
    def _zset(self, key):
        return self._typed(key, ZSet)

    def _zadd(self, key, pairs, nx=False, xx=False, gt=False, lt=False, incr=False):
        """Apply parsed (score, member) pairs; True if the zset changed."""
        z = self._zset(key)
        if z is None:
            if xx:
                return False
            z = ZSet()
            z.skiplist = self._born_skiplist(pairs)
            created = True
        else:
            created = False
        listpack = z.listpack()
        changed = False
        for score, member in pairs:
            current = z.get(member)
            if current is not None:
                if nx:
                    continue
                if incr:
                    score = current + score
                    if score != score:
                        raise ApplyError("resulting score is not a number (NaN)")
                if (gt and score <= current) or (lt and score >= current):
                    continue
                if score != current:
                    z[member] = 0.0 if listpack and score == 0 else score
                    changed = True
            elif not xx:
                if listpack and (len(z) >= ZSET_LISTPACK_ENTRIES or len(member) > ZSET_LISTPACK_VALUE):
                    z.skiplist, listpack = True, False  # converted before the insert, like Redis
                z[member] = 0.0 if listpack and score == 0 else score
                changed = True
        if created and z:
            self._put(key, z)
        return changed

    def _born_skiplist(self, pairs):
        """The encoding ZADD gives a new key: Redis 7.2+ (and Valkey) size it from all the
        pairs, 7.0 from the first member only."""
        version = self.keyspace.aux.get(b"redis-ver", b"")
        try:
            old = tuple(int(part) for part in version.split(b".")[:2]) < (7, 2)
        except ValueError:
            old = False
        if old:
            return len(pairs[0][1]) > ZSET_LISTPACK_VALUE
        return len(pairs) > ZSET_LISTPACK_ENTRIES or any(len(m) > ZSET_LISTPACK_VALUE for _, m in pairs)

    def cmd_zadd(self, argv):
        key = argv[1]
        nx = xx = gt = lt = incr = False
        i = 2
        while i < len(argv):
            opt = argv[i].upper()
            if opt == b"NX":
                nx = True
            elif opt == b"XX":
                xx = True
            elif opt == b"GT":
                gt = True
            elif opt == b"LT":
                lt = True
            elif opt == b"CH":
                pass
            elif opt == b"INCR":
                incr = True
            else:
                break
            i += 1
        rest = argv[i:]
        if not rest or len(rest) % 2:
            raise ApplyError("ZADD: syntax error")
        if (nx and xx) or (gt and lt) or (nx and (gt or lt)):
            raise ApplyError("ZADD: incompatible options")
        if incr and len(rest) != 2:
            raise ApplyError("ZADD: INCR option supports a single increment-element pair")
        pairs = [(parse_float(rest[j], "score"), rest[j + 1]) for j in range(0, len(rest), 2)]
        return [(self._db, key)] if self._zadd(key, pairs, nx, xx, gt, lt, incr) else []

    def cmd_zincrby(self, argv):
        if len(argv) != 4:
            raise ApplyError("ZINCRBY: wrong number of arguments")
        pairs = [(parse_float(argv[2], "increment"), argv[3])]
        return [(self._db, argv[1])] if self._zadd(argv[1], pairs, incr=True) else []

    def _zremove(self, key, z, members):
        n = 0
        for m in members:
            if z.pop(m, None) is not None:
                n += 1
        if not z:
            self._delete(key)
        return n

    def cmd_zrem(self, argv):
        if len(argv) < 3:
            raise ApplyError("ZREM: wrong number of arguments")
        z = self._zset(argv[1])
        if z is None:
            return []
        return [(self._db, argv[1])] if self._zremove(argv[1], z, argv[2:]) else []

    def cmd_zremrangebyscore(self, argv):
        if len(argv) != 4:
            raise ApplyError("ZREMRANGEBYSCORE: wrong number of arguments")
        lo, lo_ex = _score_bound(argv[2])
        hi, hi_ex = _score_bound(argv[3])
        z = self._zset(argv[1])
        if z is None:
            return []
        doomed = [m for m, s in z.items() if _in_score(s, lo, lo_ex, hi, hi_ex)]
        return [(self._db, argv[1])] if self._zremove(argv[1], z, doomed) else []

    def cmd_zremrangebyrank(self, argv):
        if len(argv) != 4:
            raise ApplyError("ZREMRANGEBYRANK: wrong number of arguments")
        start = parse_int(argv[2], "start")
        stop = parse_int(argv[3], "stop")
        z = self._zset(argv[1])
        if z is None:
            return []
        start, stop = _rank_range(len(z), start, stop)
        if start > stop or start >= len(z):
            return []
        doomed = [m for m, _ in z.ordered()[start : stop + 1]]
        return [(self._db, argv[1])] if self._zremove(argv[1], z, doomed) else []

    def cmd_zremrangebylex(self, argv):
        if len(argv) != 4:
            raise ApplyError("ZREMRANGEBYLEX: wrong number of arguments")
        lo, lo_ex = _lex_bound(argv[2])
        hi, hi_ex = _lex_bound(argv[3])
        z = self._zset(argv[1])
        if z is None:
            return []
        doomed = [m for m, _ in _lex_range(z.ordered(), lo, lo_ex, hi, hi_ex)]
        return [(self._db, argv[1])] if self._zremove(argv[1], z, doomed) else []

    def _zpop(self, key, count, maximum):
        z = self._zset(key)
        if z is None or count <= 0:
            return False
        order = lambda ms: (ms[1], ms[0])
        if count == 1:
            pick = [(max if maximum else min)(z.items(), key=order)]
        elif maximum:
            pick = heapq.nlargest(count, z.items(), key=order)
        else:
            pick = heapq.nsmallest(count, z.items(), key=order)
        self._zremove(key, z, [m for m, _ in pick])
        return True

    def _zpop_cmd(self, argv, maximum):
        if len(argv) not in (2, 3):
            raise ApplyError("ZPOP: wrong number of arguments")
        count = 1
        if len(argv) == 3:
            count = parse_int(argv[2], "count")
            if count < 0:
                raise ApplyError("ZPOP: value is out of range, must be positive")
        return [(self._db, argv[1])] if self._zpop(argv[1], count, maximum) else []

    def cmd_zpopmin(self, argv):
        return self._zpop_cmd(argv, False)

    def cmd_zpopmax(self, argv):
        return self._zpop_cmd(argv, True)

    def _bzpop(self, argv, maximum):
        for key in argv[1:-1]:
            if self._zset(key):
                self._zpop(key, 1, maximum)
                return [(self._db, key)]
        return []

    def cmd_bzpopmin(self, argv):
        return self._bzpop(argv, False)

    def cmd_bzpopmax(self, argv):
        return self._bzpop(argv, True)

    def _zmpop(self, argv, first):
        numkeys = parse_int(argv[first], "numkeys")
        keys = argv[first + 1 : first + 1 + numkeys]
        rest = argv[first + 1 + numkeys :]
        if numkeys <= 0 or len(keys) != numkeys or not rest:
            raise ApplyError("ZMPOP: syntax error")
        where = rest[0].upper()
        if where not in (b"MIN", b"MAX"):
            raise ApplyError("ZMPOP: syntax error")
        count = 1
        if len(rest) == 3 and rest[1].upper() == b"COUNT":
            count = parse_int(rest[2], "count")
            if count <= 0:
                raise ApplyError("ZMPOP: count should be greater than 0")
        elif len(rest) != 1:
            raise ApplyError("ZMPOP: syntax error")
        for key in keys:
            if self._zset(key):
                self._zpop(key, count, where == b"MAX")
                return [(self._db, key)]
        return []

    def cmd_zmpop(self, argv):
        return self._zmpop(argv, 1)

    def cmd_bzmpop(self, argv):
        return self._zmpop(argv, 2)

    # ---- stores ----

    def _zstore(self, dest, z):
        if z:
            # A stored result is a listpack when it fits one, and a listpack keeps
            # integral scores as integers: -0 becomes 0.
            z.skiplist = len(z) > ZSET_LISTPACK_ENTRIES or any(len(m) > ZSET_LISTPACK_VALUE for m in z)
            if not z.skiplist:
                for member, score in z.items():
                    if score == 0:
                        z[member] = 0.0
            self._put(dest, z)
            return [(self._db, dest)]
        return [(self._db, dest)] if self._delete(dest) else []

    def _zsource(self, key):
        """A *STORE input: zset, or set (every score 1), or empty when missing."""
        value = self.data.get(key)
        if value is None:
            return {}
        if type(value) is ZSet:
            return value
        if type(value) is Set:
            return dict.fromkeys(value, 1.0)
        self._wrongtype(key, value, "zset or set")

    def _setop(self, argv, op):
        dest = argv[1]
        numkeys = parse_int(argv[2], "numkeys")
        if numkeys <= 0:
            raise ApplyError("at least 1 input key is needed")
        keys = argv[3 : 3 + numkeys]
        if len(keys) != numkeys:
            raise ApplyError("syntax error")
        weights = [1.0] * numkeys
        aggregate = b"SUM"
        i = 3 + numkeys
        while i < len(argv):
            opt = argv[i].upper()
            if opt == b"WEIGHTS" and op != "diff" and i + numkeys < len(argv):
                weights = [parse_float(w, "weight") for w in argv[i + 1 : i + 1 + numkeys]]
                i += 1 + numkeys
            elif opt == b"AGGREGATE" and op != "diff" and i + 1 < len(argv):
                aggregate = argv[i + 1].upper()
                if aggregate not in (b"SUM", b"MIN", b"MAX"):
                    raise ApplyError("syntax error")
                i += 2
            else:
                raise ApplyError(f"syntax error at {argv[i]!r}")
        sources = [self._zsource(k) for k in keys]
        result = ZSet()
        if op == "diff":
            first = sources[0]
            result.update((m, s) for m, s in first.items() if not any(m in other for other in sources[1:]))
            return self._zstore(dest, result)
        # Like Redis: inputs from the smallest, so float sums add up in the same order.
        order = sorted(range(numkeys), key=lambda j: len(sources[j]))
        srcs = [(sources[j], weights[j]) for j in order]

        def agg(acc, value):
            if aggregate == b"SUM":
                acc += value
                return 0.0 if acc != acc else acc
            if aggregate == b"MIN":
                return value if value < acc else acc
            return value if value > acc else acc

        if op == "inter":
            base, w0 = srcs[0]
            for member, score in base.items():
                total = score * w0
                if total != total:
                    total = 0.0
                for other, w in srcs[1:]:
                    s = other.get(member)
                    if s is None:
                        break
                    total = agg(total, s * w)
                else:
                    result[member] = total
        else:
            for src, w in srcs:
                for member, score in src.items():
                    value = score * w
                    if value != value:
                        value = 0.0
                    if member in result:
                        result[member] = agg(result[member], value)
                    else:
                        result[member] = value
        return self._zstore(dest, result)

    def cmd_zunionstore(self, argv):
        return self._setop(argv, "union")

    def cmd_zinterstore(self, argv):
        return self._setop(argv, "inter")

    def cmd_zdiffstore(self, argv):
        return self._setop(argv, "diff")

    def cmd_zrangestore(self, argv):
        if len(argv) < 5:
            raise ApplyError("ZRANGESTORE: wrong number of arguments")
        dest, src, a, b = argv[1:5]
        by = None
        rev = False
        offset, count = 0, -1
        limit = False
        i = 5
        while i < len(argv):
            opt = argv[i].upper()
            if opt in (b"BYSCORE", b"BYLEX"):
                by = opt
            elif opt == b"REV":
                rev = True
            elif opt == b"LIMIT" and i + 2 < len(argv):
                offset = parse_int(argv[i + 1], "offset")
                count = parse_int(argv[i + 2], "count")
                limit = True
                i += 2
            else:
                raise ApplyError(f"ZRANGESTORE: syntax error at {argv[i]!r}")
            i += 1
        if limit and by is None:
            raise ApplyError("ZRANGESTORE: LIMIT is only supported with BYSCORE or BYLEX")
        z = self._zset(src)
        ordered = z.ordered() if z else []
        if rev and by != b"BYLEX":
            ordered.reverse()
        if by is None:
            start, stop = _rank_range(len(ordered), parse_int(a, "start"), parse_int(b, "stop"))
            picked = ordered[start : stop + 1] if start <= stop else []
        else:
            if by == b"BYSCORE":
                (lo, lo_ex), (hi, hi_ex) = _score_bound(a), _score_bound(b)
                if rev:
                    (lo, lo_ex), (hi, hi_ex) = (hi, hi_ex), (lo, lo_ex)
                picked = [ms for ms in ordered if _in_score(ms[1], lo, lo_ex, hi, hi_ex)]
            else:
                (lo, lo_ex), (hi, hi_ex) = _lex_bound(a), _lex_bound(b)
                if rev:
                    (lo, lo_ex), (hi, hi_ex) = (hi, hi_ex), (lo, lo_ex)
                picked = _lex_range(ordered, lo, lo_ex, hi, hi_ex, rev)
            if offset < 0:
                picked = []
            else:
                picked = picked[offset:] if count < 0 else picked[offset : offset + count]
        return self._zstore(dest, ZSet(picked))
