"""HyperLogLog commands: PFADD, PFMERGE, the PFCOUNT a master propagates when it refreshes
the cached cardinality, and PFDEBUG's encoding change (see ``replication.hyperloglog``)."""

from greenredis.replication import hyperloglog as hll
from greenredis.replication.applier.base import ApplyError, Core


class HyperLogLogMixin(Core):
    # Redis's hll-sparse-max-bytes on the master; Applier(hll_sparse_max_bytes=...) sets it.
    hll_sparse_max_bytes = hll.DEFAULT_SPARSE_MAX_BYTES

    def _hll_value(self, key):
        """The HLL string at ``key`` or None; anything PF* would refuse raises."""
        value = self.data.get(key)
        if value is None:
            return None
        if type(value) is not bytes:
            self._wrongtype(key, value, "string")
        if not hll.is_hll(value):
            raise ApplyError(f"{hll.WRONGTYPE} (key {key!r})")
        return value

    def _past_end(self, key, value):
        """The byte past the end of ``value`` (the value at ``key``) in Redis's buffer."""
        entry = self.keyspace.db(self._db).hll_past_end.get(key)
        return entry[1] if entry is not None and entry[0] is value else 0

    def _set_past_end(self, key, value, byte):
        kept = self.keyspace.db(self._db).hll_past_end
        if byte:
            kept[key] = (value, byte)
        else:
            kept.pop(key, None)

    def cmd_pfadd(self, argv):
        if len(argv) < 2:
            raise ApplyError("PFADD: wrong number of arguments")
        key = argv[1]
        old = self._hll_value(key)
        try:
            value, changed, past_end = hll.pfadd_tail(
                old, argv[2:], self.hll_sparse_max_bytes, self._past_end(key, old)
            )
        except hll.HLLError as e:
            raise ApplyError(f"PFADD {key!r}: {e}") from None
        if not changed:
            return []
        if old is None:
            self._put(key, value)
        else:
            self.data[key] = value  # the TTL stays
        self._set_past_end(key, value, past_end)
        return [(self._db, key)]

    def cmd_pfmerge(self, argv):
        if len(argv) < 2:
            raise ApplyError("PFMERGE: wrong number of arguments")
        key = argv[1]
        old = self._hll_value(key)
        sources = [self._hll_value(k) for k in argv[2:]]
        try:
            value, past_end = hll.pfmerge_tail(
                old, sources, self.hll_sparse_max_bytes, self._past_end(key, old)
            )
        except hll.HLLError as e:
            raise ApplyError(f"PFMERGE {key!r}: {e}") from None
        if old is None:
            self._put(key, value)
        else:
            self.data[key] = value
        self._set_past_end(key, value, past_end)
        return [(self._db, key)]

    def cmd_pfcount(self, argv):
        # Propagated for one key whose cached cardinality was stale: store the fresh one.
        # Several keys only read (Redis never propagates that form); check them anyway.
        if len(argv) < 2:
            raise ApplyError("PFCOUNT: wrong number of arguments")
        values = [self._hll_value(k) for k in argv[1:]]
        if len(argv) != 2 or values[0] is None:
            return []
        try:
            value = hll.refresh_cache(values[0])
        except hll.HLLError as e:
            raise ApplyError(f"PFCOUNT {argv[1]!r}: {e}") from None
        if value is values[0]:
            return []
        # the cache is written into the header in place: the byte past the end stays
        self._set_past_end(argv[1], value, self._past_end(argv[1], values[0]))
        self.data[argv[1]] = value
        return [(self._db, argv[1])]

    def cmd_pfdebug(self, argv):
        # Masters propagate GETREG and TODENSE when they convert a sparse HLL to dense.
        if len(argv) != 3:
            raise ApplyError("PFDEBUG: wrong number of arguments")
        sub = argv[1].upper()
        key = argv[2]
        value = self._hll_value(key)
        if value is None:
            raise ApplyError(f"PFDEBUG: no such key {key!r}")
        if sub in (b"DECODE", b"ENCODING"):
            return []
        if sub not in (b"GETREG", b"TODENSE"):
            raise ApplyError(f"PFDEBUG: unknown subcommand {argv[1]!r}")
        try:
            dense, converted = hll.to_dense(value)
        except hll.HLLError as e:
            raise ApplyError(f"PFDEBUG {key!r}: {e}") from None
        if not converted:
            return []
        self.data[key] = dense
        return [(self._db, key)]
