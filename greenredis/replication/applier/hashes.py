"""Hash commands, with hash field expiry (Redis 7.4: HPEXPIREAT/HPERSIST as propagated)."""

from greenredis.replication.applier.base import (
    INT64_MAX,
    INT64_MIN,
    ApplyError,
    Core,
    incr_long_double,
    now_ms,
    parse_int,
)
from greenredis.replication.keyspace import PackedHash


class HashesMixin(Core):
    def _hash(self, key):
        """The hash at ``key`` to change (a ``PackedHash`` becomes a dict), None if absent."""
        return self._typed(key, dict)

    def _hash_read(self, key):
        """The hash at ``key`` as it is, None if absent: for a command that may change
        nothing, which leaves a ``PackedHash`` packed (Redis writes nothing then either)."""
        value = self.data.get(key)
        if value is not None and type(value) is not dict and type(value) is not PackedHash:
            self._wrongtype(key, value, "hash")
        return value

    def _hash_with_any(self, key, fields):
        """The hash at ``key`` to change if it holds one of ``fields``, else None."""
        h = self._hash_read(key)
        if h is None or (type(h) is PackedHash and not any(f in h for f in fields)):
            return None
        return self._hash(key)

    def cmd_hset(self, argv):
        n = len(argv)
        if n < 4 or n % 2:
            raise ApplyError("HSET: wrong number of arguments")
        key = argv[1]
        h = self.data.get(key)
        if h is None:
            h = {}
            self._put(key, h)
        elif type(h) is not dict:
            h = self._hash(key)
        if n == 4:
            h[argv[2]] = argv[3]
        else:
            it = iter(argv[2:])
            h.update(zip(it, it))
        if self.fexp:
            fields = self.fexp.get(key)
            if fields:  # a value written by HSET has no TTL
                for i in range(2, n, 2):
                    fields.pop(argv[i], None)
                if not fields:
                    del self.fexp[key]
        return [(self._db, key)]

    cmd_hmset = cmd_hset

    def cmd_hsetnx(self, argv):
        if len(argv) != 4:
            raise ApplyError("HSETNX: wrong number of arguments")
        h = self._hash_read(argv[1])
        if h is not None and argv[2] in h:
            return []
        return self.cmd_hset(argv)

    def _drop_fields(self, key, h, fields):
        """Remove ``fields`` from hash ``h`` (with their TTLs); deletes an emptied key."""
        removed = 0
        for f in fields:
            if h.pop(f, None) is not None:
                removed += 1
        ttl = self.fexp.get(key) if self.fexp else None
        if ttl:
            for f in fields:
                ttl.pop(f, None)
            if not ttl:
                del self.fexp[key]
        if not h:
            self._delete(key)
        return removed

    def cmd_hdel(self, argv):
        if len(argv) < 3:
            raise ApplyError("HDEL: wrong number of arguments")
        key = argv[1]
        h = self._hash_with_any(key, argv[2:])
        if h is None:
            return []
        return [(self._db, key)] if self._drop_fields(key, h, argv[2:]) else []

    def cmd_hincrby(self, argv):
        if len(argv) != 4:
            raise ApplyError("HINCRBY: wrong number of arguments")
        key, field = argv[1], argv[2]
        by = parse_int(argv[3], "increment")
        h = self._hash(key)
        old = None if h is None else h.get(field)
        value = by if old is None else parse_int(old, "hash value") + by
        if not INT64_MIN <= value <= INT64_MAX:
            raise ApplyError("increment or decrement would overflow")
        if h is None:
            h = {}
            self._put(key, h)
        h[field] = b"%d" % value
        return [(self._db, key)]

    def cmd_hincrbyfloat(self, argv):
        if len(argv) != 4:
            raise ApplyError("HINCRBYFLOAT: wrong number of arguments")
        key, field = argv[1], argv[2]
        h = self._hash(key)
        old = None if h is None else h.get(field)
        value = incr_long_double(b"0" if old is None else old, argv[3])
        if h is None:
            h = {}
            self._put(key, h)
        h[field] = value
        return [(self._db, key)]

    # ---- hash field expiry (Redis 7.4+) ----

    def _fields_arg(self, argv, i):
        if i + 1 >= len(argv) or argv[i].upper() != b"FIELDS":
            raise ApplyError(f"{argv[0].upper().decode()}: missing FIELDS")
        count = parse_int(argv[i + 1], "numfields")
        fields = argv[i + 2 :]
        if count <= 0 or count != len(fields):
            raise ApplyError(f"{argv[0].upper().decode()}: numfields does not match the fields")
        return fields

    def _hexpire(self, argv, base, unit):
        key = argv[1]
        when = parse_int(argv[2], "expire time") * unit + base
        i = 3
        cond = None
        if i < len(argv) and argv[i].upper() in (b"NX", b"XX", b"GT", b"LT"):
            cond = argv[i].upper()
            i += 1
        fields = self._fields_arg(argv, i)
        h = self._hash_read(key)  # the TTLs are kept beside the hash: it stays as it is
        if h is None:
            return []
        ttl = self.fexp.get(key)
        if ttl is None:
            ttl = {}
        changed = False
        for f in fields:
            if f not in h:
                continue
            current = ttl.get(f)
            if cond == b"NX" and current is not None:
                continue
            if cond == b"XX" and current is None:
                continue
            if cond == b"GT" and (current is None or when <= current):
                continue
            if cond == b"LT" and current is not None and when >= current:
                continue
            ttl[f] = when  # a replica keeps a field whose time has passed: HDEL follows
            changed = True
        if ttl:
            self.fexp[key] = ttl
        return [(self._db, key)] if changed else []

    def cmd_hpexpireat(self, argv):
        return self._hexpire(argv, 0, 1)

    def cmd_hexpireat(self, argv):
        return self._hexpire(argv, 0, 1000)

    def cmd_hpexpire(self, argv):
        return self._hexpire(argv, now_ms(), 1)

    def cmd_hexpire(self, argv):
        return self._hexpire(argv, now_ms(), 1000)

    def cmd_hsetex(self, argv):
        """HSETEX key [NX|XX] [FNX|FXX] [EX|PX|EXAT|PXAT t|KEEPTTL] FIELDS n field value ...

        (Redis 8; NX/XX on the key are Valkey 9's.)
        """
        key = argv[1]
        fnx = fxx = keepttl = nx = xx = False
        when = None
        i = 2
        while i < len(argv) and argv[i].upper() != b"FIELDS":
            opt = argv[i].upper()
            if opt == b"NX":
                nx = True
            elif opt == b"XX":
                xx = True
            elif opt == b"FNX":
                fnx = True
            elif opt == b"FXX":
                fxx = True
            elif opt == b"KEEPTTL":
                keepttl = True
            elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < len(argv):
                t = parse_int(argv[i + 1], "expire time")
                unit = 1000 if opt in (b"EX", b"EXAT") else 1
                when = t * unit + (now_ms() if opt in (b"EX", b"PX") else 0)
                i += 1
            else:
                raise ApplyError(f"HSETEX: syntax error at {argv[i]!r}")
            i += 1
        if i + 1 >= len(argv) or (fnx and fxx) or (nx and xx) or (keepttl and when is not None):
            raise ApplyError("HSETEX: syntax error")
        count = parse_int(argv[i + 1], "numfields")
        pairs = argv[i + 2 :]
        if count <= 0 or len(pairs) != 2 * count:
            raise ApplyError("HSETEX: numfields does not match the arguments")
        fields = pairs[::2]
        h = self._hash_read(key)
        if (nx and h is not None) or (xx and h is None):
            return []
        present = [h is not None and f in h for f in fields]
        if (fnx and any(present)) or (fxx and not all(present)):
            return []
        if h is None:
            h = {}
            self._put(key, h)
        elif type(h) is not dict:
            h = self._hash(key)
        h.update(zip(fields, pairs[1::2]))
        ttl = self.fexp.get(key)
        if when is not None:
            if ttl is None:
                ttl = self.fexp[key] = {}
            ttl.update(dict.fromkeys(fields, when))
        elif not keepttl and ttl:
            for f in fields:
                ttl.pop(f, None)
            if not ttl:
                del self.fexp[key]
        return [(self._db, key)]

    def cmd_hgetdel(self, argv):
        """HGETDEL key FIELDS n field ... (Redis 8; masters propagate HDEL)."""
        fields = self._fields_arg(argv, 2)
        h = self._hash_with_any(argv[1], fields)
        if h is None:
            return []
        return [(self._db, argv[1])] if self._drop_fields(argv[1], h, fields) else []

    def cmd_hgetex(self, argv):
        """HGETEX key [EX|PX|EXAT|PXAT t|PERSIST] FIELDS n field ... (Redis 8)."""
        key = argv[1]
        opt = argv[2].upper()
        if opt == b"FIELDS":
            return []  # a read
        if opt == b"PERSIST":
            return self.cmd_hpersist([b"HPERSIST", key] + argv[3:])
        if opt not in (b"EX", b"PX", b"EXAT", b"PXAT"):
            raise ApplyError(f"HGETEX: syntax error at {argv[2]!r}")
        unit = 1000 if opt in (b"EX", b"EXAT") else 1
        base = now_ms() if opt in (b"EX", b"PX") else 0
        return self._hexpire([b"HPEXPIREAT", key, argv[3]] + argv[4:], base, unit)

    def cmd_hpersist(self, argv):
        key = argv[1]
        fields = self._fields_arg(argv, 2)
        if self._hash_read(key) is None:
            return []
        ttl = self.fexp.get(key)
        if not ttl:
            return []
        changed = False
        for f in fields:
            if ttl.pop(f, None) is not None:
                changed = True
        if not ttl:
            del self.fexp[key]
        return [(self._db, key)] if changed else []
