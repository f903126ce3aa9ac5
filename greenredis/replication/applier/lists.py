"""List commands, including the blocking ones in the non-blocking form masters propagate."""

from collections import deque

from greenredis.replication.applier.base import ApplyError, Core, parse_int


class ListsMixin(Core):
    def _list(self, key):
        return self._typed(key, deque)

    def _push(self, argv, left, only_existing):
        if len(argv) < 3:
            raise ApplyError("PUSH: wrong number of arguments")
        key = argv[1]
        lst = self.data.get(key)
        if lst is None:
            if only_existing:
                return []
            lst = deque()
            self._put(key, lst)
        elif type(lst) is not deque:
            self._wrongtype(key, lst, "list")
        if left:
            lst.extendleft(argv[2:])
        else:
            lst.extend(argv[2:])
        return [(self._db, key)]

    def cmd_lpush(self, argv):
        key = argv[1] if len(argv) == 3 else None
        lst = self.data.get(key) if key is not None else None
        if type(lst) is not deque:  # a new key, another type, more items: the general path
            return self._push(argv, True, False)
        lst.appendleft(argv[2])  # the hot path, inline
        return [(self._db, key)]

    def cmd_rpush(self, argv):
        key = argv[1] if len(argv) == 3 else None
        lst = self.data.get(key) if key is not None else None
        if type(lst) is not deque:
            return self._push(argv, False, False)
        lst.append(argv[2])
        return [(self._db, key)]

    def cmd_lpushx(self, argv):
        return self._push(argv, True, True)

    def cmd_rpushx(self, argv):
        return self._push(argv, False, True)

    def _pop(self, key, left, count):
        """Pop up to ``count`` items; deletes the key when it empties. True if anything changed."""
        lst = self._list(key)
        if lst is None or count == 0:
            return False
        pop = lst.popleft if left else lst.pop
        for _ in range(min(count, len(lst))):
            pop()
        if not lst:
            self._delete(key)
        return True

    def _pop_cmd(self, argv, left):
        if len(argv) not in (2, 3):
            raise ApplyError("POP: wrong number of arguments")
        count = 1
        if len(argv) == 3:
            count = parse_int(argv[2], "count")
            if count < 0:
                raise ApplyError("POP: count must be positive")
        return [(self._db, argv[1])] if self._pop(argv[1], left, count) else []

    def cmd_lpop(self, argv):
        return self._pop_cmd(argv, True)

    def cmd_rpop(self, argv):
        return self._pop_cmd(argv, False)

    def _move(self, src, dst, from_left, to_left):
        lst = self._list(src)
        if lst is None:
            return []
        target = self._list(dst)  # checked before anything changes, like Redis
        value = lst.popleft() if from_left else lst.pop()
        # Redis pushes before it deletes an emptied source: a list moved onto itself
        # is never deleted, and keeps its TTL.
        if not lst and src != dst:
            self._delete(src)
        if target is None:
            target = deque()
            self._put(dst, target)
        if to_left:
            target.appendleft(value)
        else:
            target.append(value)
        return [(self._db, src), (self._db, dst)]

    def cmd_rpoplpush(self, argv):
        if len(argv) != 3:
            raise ApplyError("RPOPLPUSH: wrong number of arguments")
        return self._move(argv[1], argv[2], False, True)

    def cmd_lmove(self, argv):
        if len(argv) != 5:
            raise ApplyError("LMOVE: wrong number of arguments")
        return self._move(argv[1], argv[2], _side(argv[3]), _side(argv[4]))

    # Client forms (older masters, or MULTI bodies written by hand): apply as if non-blocking.

    def _bpop(self, argv, left):
        for key in argv[1:-1]:
            lst = self._list(key)
            if lst:
                self._pop(key, left, 1)
                return [(self._db, key)]
        return []

    def cmd_blpop(self, argv):
        return self._bpop(argv, True)

    def cmd_brpop(self, argv):
        return self._bpop(argv, False)

    def cmd_brpoplpush(self, argv):
        if len(argv) != 4:
            raise ApplyError("BRPOPLPUSH: wrong number of arguments")
        return self._move(argv[1], argv[2], False, True)

    def cmd_blmove(self, argv):
        if len(argv) != 6:
            raise ApplyError("BLMOVE: wrong number of arguments")
        return self._move(argv[1], argv[2], _side(argv[3]), _side(argv[4]))

    def _mpop(self, argv, first):
        numkeys = parse_int(argv[first], "numkeys")
        if numkeys <= 0:
            raise ApplyError("LMPOP: numkeys should be greater than 0")
        keys = argv[first + 1 : first + 1 + numkeys]
        rest = argv[first + 1 + numkeys :]
        if len(keys) != numkeys or not rest:
            raise ApplyError("LMPOP: syntax error")
        left = _side(rest[0])
        count = 1
        if len(rest) == 3 and rest[1].upper() == b"COUNT":
            count = parse_int(rest[2], "count")
            if count <= 0:
                raise ApplyError("LMPOP: count should be greater than 0")
        elif len(rest) != 1:
            raise ApplyError("LMPOP: syntax error")
        for key in keys:
            if self._list(key):
                self._pop(key, left, count)
                return [(self._db, key)]
        return []

    def cmd_lmpop(self, argv):
        return self._mpop(argv, 1)

    def cmd_blmpop(self, argv):
        return self._mpop(argv, 2)

    # ---- edits in place ----

    def cmd_lset(self, argv):
        if len(argv) != 4:
            raise ApplyError("LSET: wrong number of arguments")
        lst = self._list(argv[1])
        if lst is None:
            raise ApplyError(f"LSET: no such key {argv[1]!r}")
        index = parse_int(argv[2], "index")
        if not -len(lst) <= index < len(lst):
            raise ApplyError("LSET: index out of range")
        lst[index] = argv[3]
        return [(self._db, argv[1])]

    def cmd_linsert(self, argv):
        if len(argv) != 5:
            raise ApplyError("LINSERT: wrong number of arguments")
        where = argv[2].upper()
        if where not in (b"BEFORE", b"AFTER"):
            raise ApplyError("LINSERT: syntax error")
        lst = self._list(argv[1])
        if lst is None:
            return []
        try:
            index = lst.index(argv[3])
        except ValueError:
            return []
        lst.insert(index if where == b"BEFORE" else index + 1, argv[4])
        return [(self._db, argv[1])]

    def cmd_lrem(self, argv):
        if len(argv) != 4:
            raise ApplyError("LREM: wrong number of arguments")
        key, value = argv[1], argv[3]
        count = parse_int(argv[2], "count")
        lst = self._list(key)
        if lst is None:
            return []
        items = list(lst)
        limit = abs(count) or len(items)
        removed = 0
        if count >= 0:
            kept = []
            for item in items:
                if removed < limit and item == value:
                    removed += 1
                else:
                    kept.append(item)
        else:
            kept = []
            for item in reversed(items):
                if removed < limit and item == value:
                    removed += 1
                else:
                    kept.append(item)
            kept.reverse()
        if not removed:
            return []
        if kept:
            lst.clear()
            lst.extend(kept)
        else:
            self._delete(key)
        return [(self._db, key)]

    def cmd_ltrim(self, argv):
        if len(argv) != 4:
            raise ApplyError("LTRIM: wrong number of arguments")
        key = argv[1]
        start = parse_int(argv[2], "start")
        end = parse_int(argv[3], "end")
        lst = self._list(key)
        if lst is None:
            return []
        n = len(lst)
        if start < 0:
            start = max(n + start, 0)
        if end < 0:
            end = n + end
        if start > end or start >= n:
            self._delete(key)
            return [(self._db, key)]
        end = min(end, n - 1)
        left, right = start, n - 1 - end
        if not left and not right:
            return []
        for _ in range(left):
            lst.popleft()
        for _ in range(right):
            lst.pop()
        return [(self._db, key)]


def _side(arg):
    side = arg.upper()
    if side == b"LEFT":
        return True
    if side == b"RIGHT":
        return False
    raise ApplyError(f"syntax error: {arg!r} is not LEFT or RIGHT")
