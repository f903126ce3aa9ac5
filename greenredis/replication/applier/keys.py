"""Keyspace commands: DEL, the EXPIRE family, RENAME, COPY, MOVE, SWAPDB, RESTORE, FLUSH*,
SELECT, and the non-writing commands a master sends (PING, REPLCONF, PUBLISH, ...)."""

import re

from greenredis.replication.applier.base import ApplyError, Core, copy_value, now_ms, parse_int
from greenredis.replication.rdb.parser import RDBError, decode_dump, decode_function_dump

_LIBRARY_NAME = re.compile(rb"^#!\s*(\w+)\s+(?:.*\s)?name=(\S+)", re.M)


class KeysMixin(Core):
    # ---- deleting ----

    def cmd_del(self, argv):
        if len(argv) < 2:
            raise ApplyError("DEL: wrong number of arguments")
        db = self._db
        delete = self._delete
        return [(db, key) for key in argv[1:] if delete(key)]

    cmd_unlink = cmd_del

    def cmd_delifeq(self, argv):
        """DELIFEQ key value (Valkey 9): delete a string key holding exactly ``value``."""
        if len(argv) != 3:
            raise ApplyError("DELIFEQ: wrong number of arguments")
        value = self.data.get(argv[1])
        if value is None:
            return []
        if type(value) is not bytes:
            self._wrongtype(argv[1], value, "string")
        if value != argv[2]:
            return []
        self._delete(argv[1])
        return [(self._db, argv[1])]

    # ---- expiry ----

    def _expire(self, argv, base, unit):
        if len(argv) < 3:
            raise ApplyError("EXPIRE: wrong number of arguments")
        key = argv[1]
        when = parse_int(argv[2], "expire time") * unit + base
        nx = xx = gt = lt = False
        for opt in argv[3:]:
            opt = opt.upper()
            if opt == b"NX":
                nx = True
            elif opt == b"XX":
                xx = True
            elif opt == b"GT":
                gt = True
            elif opt == b"LT":
                lt = True
            else:
                raise ApplyError(f"EXPIRE: unsupported option {opt!r}")
        if (nx and (xx or gt or lt)) or (gt and lt):
            raise ApplyError("EXPIRE: incompatible options")
        if key not in self.data:
            return []
        current = self.expires.get(key)
        if (nx and current is not None) or (xx and current is None):
            return []
        if gt and (current is None or when <= current):
            return []
        if lt and current is not None and when >= current:
            return []
        # A replica keeps a key whose time has passed: the master sends its DEL.
        self.expires[key] = when
        return [(self._db, key)]

    def cmd_pexpireat(self, argv):
        return self._expire(argv, 0, 1)

    def cmd_expireat(self, argv):
        return self._expire(argv, 0, 1000)

    def cmd_expire(self, argv):
        return self._expire(argv, now_ms(), 1000)

    def cmd_pexpire(self, argv):
        return self._expire(argv, now_ms(), 1)

    def cmd_persist(self, argv):
        if len(argv) != 2:
            raise ApplyError("PERSIST: wrong number of arguments")
        if argv[1] in self.data and self.expires.pop(argv[1], None) is not None:
            return [(self._db, argv[1])]
        return []

    # ---- moving keys around ----

    def _rename(self, argv, nx):
        if len(argv) != 3:
            raise ApplyError("RENAME: wrong number of arguments")
        src, dst = argv[1], argv[2]
        data = self.data
        if src not in data:
            raise ApplyError(f"RENAME: no such key {src!r}")
        if src == dst or (nx and dst in data):
            return []
        value = data.pop(src)
        ttl = self.expires.pop(src, None)
        fexp = self.fexp.pop(src, None)
        self._put(dst, value)
        if ttl is not None:
            self.expires[dst] = ttl
        if fexp is not None:
            self.fexp[dst] = fexp
        _carry_past_end(self.keyspace.db(self._db), src, self.keyspace.db(self._db), dst)
        return [(self._db, src), (self._db, dst)]

    def cmd_rename(self, argv):
        return self._rename(argv, False)

    def cmd_renamenx(self, argv):
        return self._rename(argv, True)

    def cmd_copy(self, argv):
        if len(argv) < 3:
            raise ApplyError("COPY: wrong number of arguments")
        src, dst = argv[1], argv[2]
        target = self._db
        replace = False
        i = 3
        while i < len(argv):
            opt = argv[i].upper()
            if opt == b"REPLACE":
                replace = True
            elif opt == b"DB" and i + 1 < len(argv):
                target = parse_int(argv[i + 1], "db index")
                i += 1
            else:
                raise ApplyError(f"COPY: syntax error at {argv[i]!r}")
            i += 1
        if target < 0:
            raise ApplyError("COPY: DB index is out of range")
        if target == self._db and src == dst:
            raise ApplyError("COPY: source and destination objects are the same")
        value = self.data.get(src)
        if value is None:
            return []
        to = self.keyspace.db(target)
        if dst in to.data and not replace:
            return []
        to.data[dst] = copy_value(value)
        to.expires.pop(dst, None)
        to.field_expires.pop(dst, None)
        if src in self.expires:
            to.expires[dst] = self.expires[src]
        if src in self.fexp:
            to.field_expires[dst] = dict(self.fexp[src])
        return [(target, dst)]

    def cmd_move(self, argv):
        if len(argv) != 3:
            raise ApplyError("MOVE: wrong number of arguments")
        key = argv[1]
        target = parse_int(argv[2], "db index")
        if target < 0:
            raise ApplyError("MOVE: DB index is out of range")
        if target == self._db:
            raise ApplyError("MOVE: source and destination objects are the same")
        to = self.keyspace.db(target)
        if key not in self.data or key in to.data:
            return []
        to.data[key] = self.data.pop(key)
        ttl = self.expires.pop(key, None)
        fexp = self.fexp.pop(key, None)
        to.expires.pop(key, None)
        to.field_expires.pop(key, None)
        if ttl is not None:
            to.expires[key] = ttl
        if fexp is not None:
            to.field_expires[key] = fexp
        _carry_past_end(self.keyspace.db(self._db), key, to, key)
        return [(self._db, key), (target, key)]

    def cmd_swapdb(self, argv):
        if len(argv) != 3:
            raise ApplyError("SWAPDB: wrong number of arguments")
        a = parse_int(argv[1], "db index")
        b = parse_int(argv[2], "db index")
        if a < 0 or b < 0:
            raise ApplyError("SWAPDB: DB index is out of range")
        if a == b:
            return []
        da, db_ = self.keyspace.db(a), self.keyspace.db(b)
        touched = [(a, k) for k in da.data] + [(b, k) for k in db_.data]
        # Swap the contents, not the Db objects, so references to them stay valid.
        da.data, db_.data = db_.data, da.data
        da.expires, db_.expires = db_.expires, da.expires
        da.field_expires, db_.field_expires = db_.field_expires, da.field_expires
        da.hll_past_end, db_.hll_past_end = db_.hll_past_end, da.hll_past_end
        self._bind()
        return touched

    def cmd_restore(self, argv):
        if len(argv) < 4:
            raise ApplyError("RESTORE: wrong number of arguments")
        key, payload = argv[1], argv[3]
        ttl = parse_int(argv[2], "TTL")
        replace = absttl = False
        i = 4
        while i < len(argv):
            opt = argv[i].upper()
            if opt == b"REPLACE":
                replace = True
            elif opt == b"ABSTTL":
                absttl = True
            elif opt in (b"IDLETIME", b"FREQ") and i + 1 < len(argv):
                parse_int(argv[i + 1], opt.decode())  # LRU/LFU hints: not modelled
                i += 1
            else:
                raise ApplyError(f"RESTORE: syntax error at {argv[i]!r}")
            i += 1
        if ttl < 0:
            raise ApplyError("RESTORE: invalid TTL value, must be >= 0")
        if key in self.data and not replace:
            raise ApplyError(f"BUSYKEY RESTORE: target key {key!r} already exists")
        try:
            value, fields = decode_dump(payload, with_field_expiry=True, packed=True)
        except RDBError as e:
            raise ApplyError(f"RESTORE: bad DUMP payload for {key!r}: {e}") from e
        self._put(key, value)
        if ttl:
            self.expires[key] = ttl if absttl else now_ms() + ttl
        if fields:
            self.fexp[key] = fields
        return [(self._db, key)]

    # ---- databases ----

    def cmd_select(self, argv):
        if len(argv) != 2:
            raise ApplyError("SELECT: wrong number of arguments")
        index = parse_int(argv[1], "db index")
        if index < 0:
            raise ApplyError("SELECT: DB index is out of range")
        self.select(index)
        return []

    def _flush_mode(self, argv):
        for opt in argv[1:]:
            if opt.upper() not in (b"ASYNC", b"SYNC"):
                raise ApplyError(f"{argv[0].upper().decode()}: syntax error at {opt!r}")

    def cmd_flushdb(self, argv):
        self._flush_mode(argv)
        touched = self._flush(self._db)
        self._bind()
        return touched

    def cmd_flushall(self, argv):
        self._flush_mode(argv)
        touched = []
        for index in sorted(self.keyspace.dbs):
            touched += self._flush(index)
        self._bind()
        return touched

    def _flush(self, index):
        db = self.keyspace.db(index)
        touched = [(index, key) for key in db.data]
        # New dicts rather than clear(): a transaction snapshot may hold the old ones.
        db.data, db.expires, db.field_expires = {}, {}, {}
        return touched

    # ---- what a master sends that changes no key ----

    def _noop(self, argv):
        return []

    # PUBLISH is propagated so a replica's own subscribers get the message.
    cmd_ping = cmd_replconf = cmd_publish = cmd_spublish = _noop

    def cmd_script(self, argv):
        # Pre-7 masters propagate SCRIPT LOAD/FLUSH; the script cache is not part of the data.
        if len(argv) >= 2 and argv[1].upper() in (b"LOAD", b"FLUSH"):
            return []
        raise ApplyError(f"SCRIPT {argv[1:2]!r}: not a replicated subcommand")

    def _script_verbatim(self, argv):
        raise ApplyError(
            f"{argv[0].upper().decode(errors='replace')}: verbatim script replication "
            "is not supported (Redis 7 replicates script effects)"
        )

    cmd_eval = cmd_evalsha = cmd_fcall = cmd_eval_ro = cmd_evalsha_ro = cmd_fcall_ro = _script_verbatim

    def cmd_function(self, argv):
        if len(argv) < 2:
            raise ApplyError("FUNCTION: wrong number of arguments")
        sub = argv[1].upper()
        functions = self.keyspace.functions
        if sub == b"LOAD":
            replace = len(argv) == 4 and argv[2].upper() == b"REPLACE"
            if len(argv) != 3 and not replace:
                raise ApplyError("FUNCTION LOAD: syntax error")
            code = argv[-1]
            name = _library_name(code)
            for i, old in enumerate(functions):
                if _library_name(old) == name:
                    if not replace:
                        raise ApplyError(f"FUNCTION LOAD: library {name!r} already exists")
                    functions[i] = code
                    return []
            functions.append(code)
            return []
        if sub == b"DELETE" and len(argv) == 3:
            for i, old in enumerate(functions):
                if _library_name(old) == argv[2]:
                    del functions[i]
                    return []
            raise ApplyError(f"FUNCTION DELETE: no such library {argv[2]!r}")
        if sub == b"FLUSH":
            self._flush_mode(argv[1:])
            functions.clear()
            return []
        if sub == b"RESTORE" and len(argv) in (3, 4):
            self._function_restore(argv[2], argv[3].upper() if len(argv) == 4 else b"APPEND")
            return []
        raise ApplyError(f"FUNCTION {argv[1]!r}: not supported by the applier")

    def _function_restore(self, payload, policy):
        """FUNCTION RESTORE: all the payload's libraries or none (FLUSH/APPEND/REPLACE)."""
        if policy not in (b"FLUSH", b"APPEND", b"REPLACE"):
            raise ApplyError(f"FUNCTION RESTORE: wrong restore policy {policy!r}")
        try:
            libraries = decode_function_dump(payload)
        except RDBError as e:
            raise ApplyError(f"FUNCTION RESTORE: {e}") from e
        new = {}
        for code in libraries:
            name = _library_name(code)
            if name in new:
                raise ApplyError(f"FUNCTION RESTORE: library {name!r} twice in the payload")
            new[name] = code
        functions = self.keyspace.functions
        if policy == b"FLUSH":
            functions[:] = new.values()
            return
        kept = []
        for old in functions:
            name = _library_name(old)
            if name in new and policy == b"APPEND":
                raise ApplyError(f"FUNCTION RESTORE: library {name!r} already exists")
            if name not in new:
                kept.append(old)
        functions[:] = kept + list(new.values())


def _library_name(code):
    m = _LIBRARY_NAME.match(code)
    if m is None:
        raise ApplyError("FUNCTION LOAD: missing library metadata")
    return m.group(2)


def _carry_past_end(src_db, src, dst_db, dst):
    """RENAME and MOVE move Redis's object, and so the byte past a corrupt HLL's end
    (``Db.hll_past_end``) goes with the value."""
    entry = src_db.hll_past_end.pop(src, None)
    if entry is not None:
        dst_db.hll_past_end[dst] = entry
