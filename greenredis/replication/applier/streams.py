"""Stream commands in the forms a master propagates.

XADD arrives with the id the master chose and approximate trims rewritten to exact ones;
XREADGROUP and XAUTOCLAIM arrive as XCLAIM ... FORCE JUSTID LASTID and XGROUP SETID /
CREATECONSUMER, so the client forms of those (which depend on the master's clock or
on a random choice) are refused.
"""

from greenredis.replication.applier.base import ApplyError, Core, now_ms, parse_int
from greenredis.replication.keyspace import Consumer, ConsumerGroup, PendingEntry, Stream, StreamID

_U64 = (1 << 64) - 1
_ZERO = StreamID(0, 0)
_MAX_ID = StreamID(_U64, _U64)


def _u64(text, arg):
    if not text.isdigit():
        raise ApplyError(f"Invalid stream ID specified as stream command argument: {arg!r}")
    n = int(text)
    if n > _U64:
        raise ApplyError(f"Invalid stream ID specified as stream command argument: {arg!r}")
    return n


def parse_id(arg, strict=True):
    """A stream id: "ms-seq" or "ms" (seq 0); "-"/"+" only when not strict."""
    if not strict:
        if arg == b"-":
            return _ZERO
        if arg == b"+":
            return _MAX_ID
    ms, dash, seq = arg.partition(b"-")
    return StreamID(_u64(ms, arg), _u64(seq, arg) if dash else 0)


def _parse_trim(argv, i, xadd):
    """Parse XADD/XTRIM options from ``argv[i]``; returns (index of the id or end, trim, nomk)."""
    trim = None
    nomkstream = False
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        more = n - 1 - i
        if opt in (b"MAXLEN", b"MINID") and more:
            if trim is not None:
                raise ApplyError("syntax error, MAXLEN and MINID options at the same time are not compatible")
            j = i + 1
            if argv[j] in (b"~", b"=") and more >= 2:
                if argv[j] == b"~":
                    # Masters rewrite "~" to "=" with the resulting length or first id.
                    raise ApplyError("approximate stream trimming (~) cannot be replayed exactly")
                j += 1
            if opt == b"MAXLEN":
                value = parse_int(argv[j], "MAXLEN")
                if value < 0:
                    raise ApplyError("The MAXLEN argument must be >= 0.")
            else:
                value = parse_id(argv[j])
            trim = (opt, value)
            i = j + 1
        elif opt == b"LIMIT" and more:
            # A replica ignores LIMIT: the master rewrote the threshold to what it really trimmed.
            if parse_int(argv[i + 1], "LIMIT") < 0:
                raise ApplyError("The LIMIT argument must be >= 0.")
            i += 2
        elif xadd and opt == b"NOMKSTREAM":
            nomkstream = True
            i += 1
        elif xadd:
            break
        else:
            raise ApplyError(f"syntax error at {argv[i]!r}")
    return i, trim, nomkstream


def _trim(s, trim):
    """Exact trim; returns the number of entries removed."""
    kind, value = trim
    entries = s.entries
    doomed = []
    if kind == b"MAXLEN":
        extra = len(entries) - value
        if extra > 0:
            it = iter(entries)
            doomed = [next(it) for _ in range(extra)]
    else:
        for sid in entries:
            if sid >= value:
                break
            doomed.append(sid)
    for sid in doomed:
        del entries[sid]
    if doomed:
        s.first_id = next(iter(entries)) if entries else _ZERO
    return len(doomed)


class StreamsMixin(Core):
    def _stream(self, key):
        return self._typed(key, Stream)

    def _group(self, key, name):
        s = self._stream(key)
        group = s.groups.get(name) if s is not None else None
        if group is None:
            raise ApplyError(f"NOGROUP No such key {key!r} or consumer group {name!r}")
        return s, group

    def cmd_xadd(self, argv):
        key = argv[1]
        i, trim, nomkstream = _parse_trim(argv, 2, True)
        if i >= len(argv):
            raise ApplyError("XADD: wrong number of arguments")
        idarg = argv[i]
        fields = argv[i + 1 :]
        if not fields or len(fields) % 2:
            raise ApplyError("XADD: wrong number of arguments")
        if idarg == b"*" or idarg.endswith(b"-*"):
            raise ApplyError(
                "XADD with an auto-generated id cannot be replayed (masters propagate the id they chose)"
            )
        sid = parse_id(idarg)
        if sid == _ZERO:
            raise ApplyError("The ID specified in XADD must be greater than 0-0")
        s = self._stream(key)
        if s is None:
            if nomkstream:
                return []
            s = Stream()
            self._put(key, s)
        if sid <= s.last_id:
            raise ApplyError("The ID specified in XADD is equal or smaller than the target stream top item")
        s.entries[sid] = list(zip(fields[::2], fields[1::2]))
        s.last_id = sid
        s.entries_added += 1
        if len(s.entries) == 1:
            s.first_id = sid
        if trim is not None:
            _trim(s, trim)
        return [(self._db, key)]

    def cmd_xtrim(self, argv):
        key = argv[1]
        _, trim, _ = _parse_trim(argv, 2, False)
        if trim is None:
            raise ApplyError("syntax error, XTRIM must be called with a trimming strategy")
        s = self._stream(key)
        if s is None:
            return []
        return [(self._db, key)] if _trim(s, trim) else []

    def cmd_xdel(self, argv):
        if len(argv) < 3:
            raise ApplyError("XDEL: wrong number of arguments")
        key = argv[1]
        ids = [parse_id(a) for a in argv[2:]]
        s = self._stream(key)
        if s is None:
            return []
        deleted = 0
        for sid in ids:
            if s.entries.pop(sid, None) is not None:
                deleted += 1
                if sid > s.max_deleted_id:
                    s.max_deleted_id = sid
        if not deleted:
            return []
        s.first_id = next(iter(s.entries)) if s.entries else _ZERO
        return [(self._db, key)]

    def cmd_xsetid(self, argv):
        if len(argv) < 3:
            raise ApplyError("XSETID: wrong number of arguments")
        key = argv[1]
        sid = parse_id(argv[2])
        added = None
        max_deleted = _ZERO
        i = 3
        while i < len(argv):
            opt = argv[i].upper()
            if opt == b"ENTRIESADDED" and i + 1 < len(argv):
                added = parse_int(argv[i + 1], "entries_added")
                if added < 0:
                    raise ApplyError("entries_added must be positive")
            elif opt == b"MAXDELETEDID" and i + 1 < len(argv):
                max_deleted = parse_id(argv[i + 1])
                if sid < max_deleted:
                    raise ApplyError(
                        "The ID specified in XSETID is smaller than the provided max_deleted_entry_id"
                    )
            else:
                raise ApplyError(f"XSETID: syntax error at {argv[i]!r}")
            i += 2
        s = self._stream(key)
        if s is None:
            raise ApplyError(f"XSETID: no such key {key!r}")
        if s.entries:
            if sid < next(reversed(s.entries)):
                raise ApplyError("The ID specified in XSETID is smaller than the target stream top item")
            if added is not None and len(s.entries) > added:
                raise ApplyError(
                    "The entries_added specified in XSETID is smaller than the target stream length"
                )
        s.last_id = sid
        if added is not None:
            s.entries_added = added
        if max_deleted != _ZERO:
            s.max_deleted_id = max_deleted
        return [(self._db, key)]

    def cmd_xgroup(self, argv):
        if len(argv) < 4:
            raise ApplyError("XGROUP: wrong number of arguments")
        sub = argv[1].upper()
        key, name = argv[2], argv[3]
        mkstream = False
        entries_read = -1
        if sub in (b"CREATE", b"SETID"):
            if len(argv) < 5:
                raise ApplyError("XGROUP: wrong number of arguments")
            i = 5
            while i < len(argv):
                opt = argv[i].upper()
                if sub == b"CREATE" and opt == b"MKSTREAM":
                    mkstream = True
                    i += 1
                elif opt == b"ENTRIESREAD" and i + 1 < len(argv):
                    entries_read = parse_int(argv[i + 1], "ENTRIESREAD")
                    if entries_read < -1:
                        raise ApplyError("value for ENTRIESREAD must be positive or -1")
                    i += 2
                else:
                    raise ApplyError(f"XGROUP {sub.decode()}: syntax error at {argv[i]!r}")
        s = self._stream(key)
        if s is None and not mkstream:
            raise ApplyError(f"XGROUP {sub.decode()}: the key {key!r} does not exist")
        group = s.groups.get(name) if s is not None else None
        if sub == b"CREATE":
            if len(argv) > 8:
                raise ApplyError("XGROUP CREATE: wrong number of arguments")
            if argv[4] == b"$":
                sid = s.last_id if s is not None else _ZERO
            else:
                sid = parse_id(argv[4])
            if group is not None:
                raise ApplyError(f"BUSYGROUP Consumer Group name {name!r} already exists")
            if s is None:
                s = Stream()
                self._put(key, s)
            s.groups[name] = ConsumerGroup(name, sid, entries_read)
            return [(self._db, key)]
        if group is None:
            raise ApplyError(f"NOGROUP No such consumer group {name!r} for key name {key!r}")
        if sub == b"SETID":
            if len(argv) not in (5, 7):
                raise ApplyError("XGROUP SETID: wrong number of arguments")
            group.last_id = s.last_id if argv[4] == b"$" else parse_id(argv[4], strict=False)
            group.entries_read = entries_read
            return [(self._db, key)]
        if sub == b"DESTROY" and len(argv) == 4:
            del s.groups[name]
            return [(self._db, key)]
        if sub == b"CREATECONSUMER" and len(argv) == 5:
            if argv[4] in group.consumers:
                return []
            group.consumers[argv[4]] = Consumer(argv[4], now_ms())
            return [(self._db, key)]
        if sub == b"DELCONSUMER" and len(argv) == 5:
            consumer = group.consumers.pop(argv[4], None)
            if consumer is None:
                return []
            for sid in consumer.pending:
                group.pending.pop(sid, None)
            return [(self._db, key)]
        raise ApplyError(f"XGROUP {argv[1]!r}: unknown subcommand or wrong number of arguments")

    def cmd_xack(self, argv):
        if len(argv) < 4:
            raise ApplyError("XACK: wrong number of arguments")
        key, name = argv[1], argv[2]
        ids = [parse_id(a) for a in argv[3:]]
        s = self._stream(key)
        group = s.groups.get(name) if s is not None else None
        if group is None:
            return []
        acked = 0
        for sid in ids:
            nack = group.pending.pop(sid, None)
            if nack is not None:
                acked += 1
                consumer = group.consumers.get(nack.consumer)
                if consumer is not None:
                    consumer.pending.discard(sid)
        return [(self._db, key)] if acked else []

    def cmd_xclaim(self, argv):
        if len(argv) < 6:
            raise ApplyError("XCLAIM: wrong number of arguments")
        key, name, cname = argv[1], argv[2], argv[3]
        s, group = self._group(key, name)
        minidle = max(parse_int(argv[4], "min-idle-time"), 0)
        ids = []
        j = 5
        while j < len(argv):
            try:
                ids.append(parse_id(argv[j]))
            except ApplyError:
                break
            j += 1
        now = now_ms()
        delivery = retrycount = None
        force = justid = False
        last_id = _ZERO
        while j < len(argv):
            opt = argv[j].upper()
            more = j + 1 < len(argv)
            if opt == b"FORCE":
                force = True
            elif opt == b"JUSTID":
                justid = True
            elif opt == b"IDLE" and more:
                j += 1
                delivery = now - parse_int(argv[j], "IDLE")
            elif opt == b"TIME" and more:
                j += 1
                delivery = parse_int(argv[j], "TIME")
            elif opt == b"RETRYCOUNT" and more:
                j += 1
                retrycount = parse_int(argv[j], "RETRYCOUNT")
            elif opt == b"LASTID" and more:
                j += 1
                last_id = parse_id(argv[j])
            else:
                raise ApplyError(f"Unrecognized XCLAIM option {argv[j]!r}")
            j += 1
        if last_id > group.last_id:
            group.last_id = last_id
        if delivery is None or delivery < 0 or delivery > now:
            delivery = now
        pending = group.pending
        consumer = None
        for sid in ids:
            nack = pending.get(sid)
            if sid not in s.entries:
                if nack is not None:  # the entry was deleted: its PEL entry goes too
                    del pending[sid]
                    owner = group.consumers.get(nack.consumer)
                    if owner is not None:
                        owner.pending.discard(sid)
                continue
            if nack is None:
                if not force:
                    continue
                nack = PendingEntry(None, now, 1)  # as Redis creates one; updated below
                in_order = not pending or next(reversed(pending)) < sid
                pending[sid] = nack
                if not in_order:
                    ordered = sorted(pending.items())
                    pending.clear()
                    pending.update(ordered)
            elif nack.consumer is not None and minidle and now - nack.delivery_time < minidle:
                continue
            if consumer is None:
                consumer = group.consumers.get(cname)
                if consumer is None:
                    consumer = group.consumers[cname] = Consumer(cname, now)
                consumer.seen_time = now
                consumer.active_time = now
            if nack.consumer != cname:
                old = group.consumers.get(nack.consumer) if nack.consumer is not None else None
                if old is not None:
                    old.pending.discard(sid)
                nack.consumer = cname
                consumer.pending.add(sid)
            nack.delivery_time = delivery
            if retrycount is not None and retrycount >= 0:
                nack.delivery_count = retrycount
            elif not justid:
                nack.delivery_count += 1
        return [(self._db, key)]

    def _not_replayable(self, argv):
        raise ApplyError(
            f"{argv[0].upper().decode()}: the client form depends on the master's "
            "clock and state (masters propagate it as XCLAIM/XGROUP SETID)"
        )

    cmd_xautoclaim = cmd_xreadgroup = _not_replayable
