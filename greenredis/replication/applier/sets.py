"""Set commands. SPOP reaches a replica as SREM/DEL; a client-form SPOP is random, so refused."""

from greenredis.replication.applier.base import ApplyError, Core


class SetsMixin(Core):
    def _set(self, key):
        return self._typed(key, set)

    def cmd_sadd(self, argv):
        if len(argv) < 3:
            raise ApplyError("SADD: wrong number of arguments")
        key = argv[1]
        members = self._set(key)
        if members is None:
            self._put(key, set(argv[2:]))
            return [(self._db, key)]
        size = len(members)
        members.update(argv[2:])
        return [(self._db, key)] if len(members) != size else []

    def cmd_srem(self, argv):
        if len(argv) < 3:
            raise ApplyError("SREM: wrong number of arguments")
        key = argv[1]
        members = self._set(key)
        if members is None:
            return []
        size = len(members)
        members.difference_update(argv[2:])
        if not members:
            self._delete(key)
        return [(self._db, key)] if len(members) != size else []

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
            self._put(dst, {member})
        else:
            target.add(member)
        return [(self._db, src), (self._db, dst)]

    def cmd_spop(self, argv):
        raise ApplyError(
            "SPOP: a client-form SPOP picks at random and cannot be replayed "
            "(masters propagate it as SREM/DEL)"
        )

    def _operands(self, keys):
        return [self._set(k) or set() for k in keys]

    def _store(self, dest, result):
        if result:
            self._put(dest, result)
            return [(self._db, dest)]
        return [(self._db, dest)] if self._delete(dest) else []

    def cmd_sinterstore(self, argv):
        if len(argv) < 3:
            raise ApplyError("SINTERSTORE: wrong number of arguments")
        sets = self._operands(argv[2:])
        return self._store(argv[1], set.intersection(*sets))

    def cmd_sunionstore(self, argv):
        if len(argv) < 3:
            raise ApplyError("SUNIONSTORE: wrong number of arguments")
        sets = self._operands(argv[2:])
        return self._store(argv[1], set().union(*sets))

    def cmd_sdiffstore(self, argv):
        if len(argv) < 3:
            raise ApplyError("SDIFFSTORE: wrong number of arguments")
        sets = self._operands(argv[2:])
        return self._store(argv[1], sets[0].difference(*sets[1:]))
