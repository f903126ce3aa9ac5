"""Set commands. SPOP reaches a replica as SREM/DEL; a client-form SPOP is random, so refused.

Sets keep Redis's encoding and iteration order (``keyspace.Set``): the *STORE commands
build their result in the order and through the conversions ``t_set.c`` does.
"""

from greenredis.replication.applier.base import ApplyError, Core
from greenredis.replication.keyspace import INTSET, LISTPACK, Set, is_int64


class SetsMixin(Core):
    def _set(self, key):
        return self._typed(key, Set)

    def cmd_sadd(self, argv):
        if len(argv) < 3:
            raise ApplyError("SADD: wrong number of arguments")
        key = argv[1]
        members = self._set(key)
        if members is None:
            members = Set.create(argv[2], len(argv) - 2)
            members.add_all(argv[2:])
            self._put(key, members)
            return [(self._db, key)]
        members.expect(len(argv) - 2)
        return [(self._db, key)] if members.add_all(argv[2:]) else []

    def cmd_srem(self, argv):
        if len(argv) < 3:
            raise ApplyError("SREM: wrong number of arguments")
        key = argv[1]
        members = self._set(key)
        if members is None:
            return []
        removed = sum(members.discard(m) for m in argv[2:])
        if not members:
            self._delete(key)
        return [(self._db, key)] if removed else []

    def cmd_smove(self, argv):
        if len(argv) != 4:
            raise ApplyError("SMOVE: wrong number of arguments")
        src, dst, member = argv[1], argv[2], argv[3]
        source = self._set(src)
        target = self._set(dst)
        if source is None or member not in source:
            return []
        if src == dst:
            return []
        source.discard(member)
        if not source:
            self._delete(src)
        if target is None:
            target = Set.create(member, 1)
            target.add(member)
            self._put(dst, target)
        else:
            target.add(member)
        return [(self._db, src), (self._db, dst)]

    def cmd_spop(self, argv):
        raise ApplyError(
            "SPOP: a client-form SPOP picks at random and cannot be replayed "
            "(masters propagate it as SREM/DEL)"
        )

    def _operands(self, keys):
        return [self._set(k) for k in keys]

    def _store(self, dest, result):
        if result:
            self._put(dest, result)
            return [(self._db, dest)]
        return [(self._db, dest)] if self._delete(dest) else []

    def cmd_sinterstore(self, argv):
        if len(argv) < 3:
            raise ApplyError("SINTERSTORE: wrong number of arguments")
        sets = self._operands(argv[2:])
        if any(s is None for s in sets):
            return self._store(argv[1], None)
        # sinterGenericCommand: smallest first (a stable sort), walk it in its order
        sets.sort(key=len)
        first = sets[0]
        out = Set(encoding=INTSET if first.encoding == INTSET else LISTPACK)
        for m in first.ordered():
            if all(m in s for s in sets[1:]):
                out.add(m)
        if out.encoding != INTSET and len(out) <= 512 and all(is_int64(m) for m in out):
            out = Set(out.ordered(), encoding=INTSET)  # maybeConvertToIntset
        return self._store(argv[1], out)

    def cmd_sunionstore(self, argv):
        if len(argv) < 3:
            raise ApplyError("SUNIONSTORE: wrong number of arguments")
        out = Set(encoding=INTSET)
        for s in self._operands(argv[2:]):
            if s is not None:
                out.add_all(s.ordered())
        return self._store(argv[1], out)

    def cmd_sdiffstore(self, argv):
        if len(argv) < 3:
            raise ApplyError("SDIFFSTORE: wrong number of arguments")
        sets = self._operands(argv[2:])
        first = sets[0]
        out = Set(encoding=INTSET)
        if first is None or any(s is first for s in sets[1:]):
            return self._store(argv[1], out)
        # sunionDiffGenericCommand picks an algorithm by cost; they differ in the
        # conversions the result goes through (2 adds all of the first set, then removes)
        present = [s for s in sets if s is not None]
        one = len(first) * len(present) // 2
        two = sum(len(s) for s in present)
        others = [s for s in sets[1:] if s is not None]
        if one <= two:
            for m in first.ordered():
                if not any(m in s for s in others):
                    out.add(m)
        else:
            out.add_all(first.ordered())
            for s in others:
                for m in s:
                    out.discard(m)
                if not out:
                    break
        return self._store(argv[1], out)
