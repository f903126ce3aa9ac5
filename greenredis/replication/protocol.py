"""The replica side of Redis's replication protocol, as a state machine over bytes.

No sockets here (like h11 or hiredis): the caller sends ``data_to_send()`` to the
master, passes every byte it receives to ``receive_data()`` and acts on the events
that come back::

    proto = ReplicaProtocol(password="pw", replid=None, offset=-1)
    sock.sendall(proto.data_to_send())          # PING
    while True:
        for event in proto.receive_data(sock.recv(65536)):
            ...                                 # FullResync, RdbStart, RdbData, RdbEnd, Commands, ...
        sock.sendall(proto.data_to_send())      # handshake steps, REPLCONF ACK replies

The conversation, as a Redis replica has it:

1. ``PING`` (``+PONG``; ``-NOAUTH`` is fine), ``AUTH [user] password`` (``+OK``),
   ``REPLCONF listening-port <port>`` and ``REPLCONF capa eof capa psync2`` (errors
   ignored: old masters do not know them), then ``PSYNC <replid> <offset+1>`` or
   ``PSYNC ? -1``.
2. ``+FULLRESYNC <replid> <offset>``: a snapshot follows, as ``$<len>\\r\\n<len bytes>``
   or, diskless, as ``$EOF:<40-byte mark>\\r\\n<rdb><mark>``. Before it the master sends
   bare ``\\n`` keepalives while it forks and writes. ``+CONTINUE [<new replid>]``: the
   command stream resumes at our offset. ``-NOMASTERLINK`` / ``-LOADING``: try again
   later. Any other error: an old master without PSYNC, so ``SYNC`` (snapshot with no
   replid/offset).
3. The command stream: RESP arrays, every byte of which (PING and REPLCONF GETACK
   included) advances the replica offset. ``REPLCONF GETACK`` is answered here with
   ``REPLCONF ACK <offset>``.

Offsets are byte-exact: hiredis gives argv lists, not their sizes, so each command's
size is computed from its argv (a master always writes canonical multibulk), and the
sum is checked against hiredis's own buffer bookkeeping each time it drops consumed
bytes (``Reader.len()`` shrinks by exactly what was parsed), and at the end of each read
the last command must end where the next one starts; a mismatch (a simple string or a
RESP3 element in a command, which no master sends) is an error before that read delivers
anything, never a silently wrong offset. Like Redis, the offset does not advance inside
MULTI ... EXEC, so a reconnect resumes before an incomplete transaction.

Besides ``offset``, the protocol tracks ``data_offset``: the offset just after the last
command that changed data (anything but PING, REPLCONF, SELECT, PUBLISH, SPUBLISH, or a
transaction of only those), and ``db``/``data_db``, the db selected at each. A master
goes on propagating PINGs and sentinel hellos (PUBLISH, after a SELECT) when nobody
writes, also after one of its replicas was promoted; that replica only knows the old
history (its ``replid2``) up to the offset it had reached. Asking the new master for
``PSYNC <replid> <data_offset+1>`` gets ``+CONTINUE`` where ``offset+1`` gets a full
resync; re-receiving a tail of PINGs, PUBLISHes and SELECTs changes nothing.
"""

import reprlib

import hiredis

__all__ = [
    "ReplicaProtocol",
    "Event",
    "FullResync",
    "Continue",
    "RdbStart",
    "RdbData",
    "RdbEnd",
    "Commands",
    "Error",
    "ReplicationError",
    "State",
    "encode_command",
    "multibulk_size",
]


class ReplicationError(Exception):
    """What ended the link: ``retry_later`` says the master asked us to come back later."""

    def __init__(self, message, retry_later=False):
        super().__init__(message)
        self.retry_later = retry_later


class State:
    PING = "ping"
    AUTH = "auth"
    PORT = "port"
    CAPA = "capa"
    PSYNC = "psync"
    WAIT_PAYLOAD = "wait_payload"  # after +FULLRESYNC / SYNC: keepalives, then $...
    RDB = "rdb"
    STREAM = "stream"
    CLOSED = "closed"  # after an error: further input is ignored


class Event:
    __slots__ = ()

    def __repr__(self):
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )


class FullResync(Event):
    """The master will send a snapshot. ``replid``/``offset`` are None after ``SYNC``."""

    __slots__ = ("replid", "offset")

    def __init__(self, replid, offset):
        self.replid, self.offset = replid, offset


class Continue(Event):
    """Partial resync accepted: the stream resumes at ``offset``; ``replid`` may be new."""

    __slots__ = ("replid", "offset")

    def __init__(self, replid, offset):
        self.replid, self.offset = replid, offset


class RdbStart(Event):
    """The snapshot begins; ``size`` in bytes, or None for the diskless EOF-mark form."""

    __slots__ = ("size",)

    def __init__(self, size):
        self.size = size


class RdbData(Event):
    """A chunk of the snapshot, in order (the EOF mark is never included)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class RdbEnd(Event):
    """All of the snapshot's bytes were delivered; the command stream follows."""

    __slots__ = ("size",)

    def __init__(self, size):
        self.size = size


class Commands(Event):
    """Commands from the stream, in order: ``argvs[i]`` (a list of bytes) brings the
    replica offset to ``offsets[i]``. PING and REPLCONF are consumed by the protocol
    (they count toward the offset but are not listed)."""

    __slots__ = ("argvs", "offsets")

    def __init__(self, argvs, offsets):
        self.argvs, self.offsets = argvs, offsets


class Error(Event):
    """The link is unusable (``error`` is a ReplicationError); reconnect."""

    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


def encode_command(*args):
    """A RESP multibulk command from str/bytes/int arguments."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


# Bytes of "$<len>\r\n<arg>\r\n" for an argument of the common lengths, and of "*<n>\r\n".
_BULK_SIZE = [n + len(b"$%d\r\n\r\n" % n) for n in range(10000)]
_ARRAY_HEADER = [len(b"*%d\r\n" % n) for n in range(1000)]


def multibulk_size(argv):
    """Bytes of ``argv`` encoded as a canonical RESP array of bulk strings."""
    if not all(type(a) is bytes for a in argv):
        raise TypeError("a command's arguments are bytes, not a nested array, an integer or nil")
    lens = list(map(len, argv))
    try:
        size = _ARRAY_HEADER[len(lens)]
        for n in lens:
            size += _BULK_SIZE[n]
        return size
    except IndexError:  # 1000+ arguments, or one of 10000+ bytes
        return len(b"*%d\r\n" % len(lens)) + sum(n + len(b"$%d\r\n\r\n" % n) for n in lens)


_EOF_MARK_LEN = 40
# Commands the protocol itself interprets (upper-cased argv[0]).
_PING, _REPLCONF, _MULTI, _EXEC, _DISCARD = b"PING", b"REPLCONF", b"MULTI", b"EXEC", b"DISCARD"
# ... and those that change no data (see data_offset)
_SELECT, _PUBLISH, _SPUBLISH = b"SELECT", b"PUBLISH", b"SPUBLISH"
_SPECIAL = {_PING, _REPLCONF, _MULTI, _EXEC, _DISCARD, _SELECT, _PUBLISH, _SPUBLISH}
_SPECIAL_LENS = {len(name) for name in _SPECIAL}


class ReplicaProtocol:
    """One replication link, from the first PING to the end of the connection.

    password/username: AUTH; listening_port: what ``REPLCONF listening-port`` announces
    (the master lists it in ``INFO replication``; None: skip); ip_address: ``REPLCONF
    ip-address``; replid/offset: the dataset we hold, to ask for a partial resync
    (``PSYNC replid offset+1``); None/-1 asks for a full one; db: the db selected at
    ``offset`` (where the master's stream resumes after ``+CONTINUE``).
    """

    def __init__(
        self,
        password=None,
        username=None,
        listening_port=None,
        ip_address=None,
        replid=None,
        offset=-1,
        db=0,
    ):
        self.password = password
        self.username = username
        self.listening_port = listening_port
        self.ip_address = ip_address
        self.replid = replid
        self.offset = offset  # committed: outside any MULTI, as PSYNC/ACK use it
        self.db = db  # selected at offset
        self.data_offset = offset  # just after the last data-changing command
        self.data_db = db  # selected at data_offset
        self.psync = True  # False after falling back to SYNC
        self.replconf = False  # the master accepted REPLCONF capa (so knows ACK)
        self.state = State.PING
        self.rdb_size = None  # bulk form: payload size; None for the EOF form
        self.rdb_received = 0
        self._outbox = [encode_command("PING")]
        self._buf = b""  # handshake / payload header bytes
        self._pending_replies = 0
        self._eof_mark = None
        self._tail = b""  # EOF form: bytes that might be the start of the mark
        self._reader = None
        self._parsed = offset  # offset of the end of the last parsed command
        self._stream_start = offset  # offset where the command stream began
        self._reader_base = 0  # stream bytes hiredis has dropped from its buffer
        self._reader_len = 0  # hiredis buffer length we expect
        self._in_multi = False
        self._multi_data = False
        self._cur_db = db
        self._held = []  # chunks from the start of the command being parsed, for errors
        self._held_base = 0  # the stream offset of the first (-1: too many to keep)
        self._held_size = 0
        self._last2 = b""  # the stream's last two bytes so far
        self.error = None

    # -- output ------------------------------------------------------------------

    def data_to_send(self):
        """Bytes to write to the master now (possibly empty)."""
        if not self._outbox:
            return b""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    def ack(self):
        """``REPLCONF ACK <offset>``: send once a second while streaming. Returns b"" when
        not due: before the stream, or to a master that does not know REPLCONF (one old
        enough to need SYNC; a newer one refusing PSYNC still gets ACKs, and needs them
        to start the stream after a diskless transfer)."""
        if self.state != State.STREAM or not (self.psync or self.replconf):
            return b""
        return encode_command("REPLCONF", "ACK", self.offset)

    @property
    def streaming(self):
        return self.state == State.STREAM

    # -- input -------------------------------------------------------------------

    def receive_data(self, data):
        """Feed bytes from the master; returns the events they complete."""
        events = []
        if not data or self.state == State.CLOSED:
            return events
        try:
            if self.state == State.STREAM:
                self._stream(data, events)
            elif self.state == State.RDB:
                self._rdb(data, events)
            else:
                self._buf += data
                self._handshake(events)
        except ReplicationError as e:
            self.state = State.CLOSED
            self.error = e
            events.append(Error(e))
        return events

    def _fail(self, message, retry_later=False):
        raise ReplicationError(message, retry_later)

    def _not_a_command(self, reply, offset):
        self._fail(
            f"unexpected {reprlib.repr(reply)} in the replication stream at offset {offset}: not a command"
        )

    def _line(self):
        # Handshake replies are single status lines and the payload follows them raw,
        # so they are split here: a RESP parser would swallow the snapshot's bytes.
        i = self._buf.find(b"\r\n")
        if i < 0:
            if len(self._buf) > 65536:
                self._fail(
                    f"no line end in {len(self._buf)} bytes during the handshake: "
                    f"not a Redis master? ({self._buf[:60]!r})"
                )
            return None
        line, self._buf = self._buf[:i], self._buf[i + 2 :]
        return line

    def _send(self, *args):
        self._outbox.append(encode_command(*args))

    def _handshake(self, events):
        while self.state not in (State.RDB, State.STREAM, State.CLOSED):
            if self.state in (State.PSYNC, State.WAIT_PAYLOAD):
                # newline keepalives while the master prepares the snapshot
                self._buf = self._buf.lstrip(b"\n")
            line = self._line()
            if line is None:
                return
            text = line.decode("utf-8", "replace")
            if not line:
                self._fail("empty line from the master during the handshake")
            _REPLY_HANDLERS[self.state](self, line, text, events)
        if self.state == State.RDB and self._buf:
            data, self._buf = self._buf, b""
            self._rdb(data, events)
        elif self.state == State.STREAM and self._buf:
            data, self._buf = self._buf, b""
            self._stream(data, events)

    def _on_ping(self, line, text, events):
        if line.startswith(b"-LOADING"):  # a master loading its dataset: as after PSYNC
            self._fail(f"master cannot sync now, retry later: {text}", retry_later=True)
        # -NOAUTH / -NOPERM / -ERR operation not permitted: the master wants AUTH first.
        if line[:1] == b"-" and not (
            line.startswith((b"-NOAUTH", b"-NOPERM")) or b"operation not permitted" in line
        ):
            self._fail(f"master answered PING with {text}")
        if line[:1] not in (b"+", b"-"):
            self._fail(f"not a Redis master: {text[:80]!r} in reply to PING")
        if self.password is not None:
            self.state = State.AUTH
            if self.username:
                self._send("AUTH", self.username, self.password)
            else:
                self._send("AUTH", self.password)
        else:
            self._after_auth()

    def _on_auth(self, line, text, events):
        if line[:1] != b"+":
            self._fail(f"AUTH failed: {text}")
        self._after_auth()

    def _after_auth(self):
        if self.listening_port is not None:
            self.state = State.PORT
            self._send("REPLCONF", "listening-port", self.listening_port)
            self._pending_replies = 1
            if self.ip_address:
                self._send("REPLCONF", "ip-address", self.ip_address)
                self._pending_replies = 2
        else:
            self._send_capa()

    def _on_port(self, line, text, events):
        # errors ignored, as Redis does: masters before 2.8 do not know REPLCONF
        self._pending_replies -= 1
        if self._pending_replies <= 0:
            self._send_capa()

    def _send_capa(self):
        self.state = State.CAPA
        self._send("REPLCONF", "capa", "eof", "capa", "psync2")

    def _on_capa(self, line, text, events):
        self.replconf = line[:1] == b"+"
        self.state = State.PSYNC
        if self.replid and self.offset is not None and self.offset >= 0:
            self._send("PSYNC", self.replid, self.offset + 1)
        else:
            self._send("PSYNC", "?", -1)

    def _on_psync(self, line, text, events):
        if line.startswith(b"+FULLRESYNC"):
            parts = text.split()
            if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
                self._fail(f"bad reply to PSYNC: {text!r}")
            self.replid, self.offset = parts[1], int(parts[2])
            self.data_offset, self.db, self.data_db = self.offset, 0, 0
            self.state = State.WAIT_PAYLOAD
            events.append(FullResync(self.replid, self.offset))
        elif line.startswith(b"+CONTINUE"):
            parts = text.split()
            if len(parts) > 1:
                self.replid = parts[1]
            self._start_stream()
            events.append(Continue(self.replid, self.offset))
        elif line.startswith((b"-NOMASTERLINK", b"-LOADING")):
            self._fail(f"master cannot sync now, retry later: {text}", retry_later=True)
        elif line[:1] == b"-":
            # a master before 2.8: no PSYNC, so SYNC, with no replid and no offsets
            self.psync = False
            self.replid, self.offset = None, 0
            self.data_offset, self.db, self.data_db = 0, 0, 0
            self.state = State.WAIT_PAYLOAD
            self._send("SYNC")
            events.append(FullResync(None, None))
        else:
            self._fail(f"unexpected reply to PSYNC: {text!r}")

    def _on_wait_payload(self, line, text, events):
        if line[:1] != b"$":
            if line[:1] == b"-":
                self._fail(f"master could not send the snapshot: {text}")
            self._fail(f"expected the snapshot's $<length>, got {text[:80]!r}")
        if line.startswith(b"$EOF:"):
            mark = line[5:]
            if len(mark) != _EOF_MARK_LEN:
                self._fail(f"bad diskless EOF mark {text!r}")
            self._eof_mark = mark
            self.rdb_size = None
        else:
            size = line[1:]
            if not size.isdigit():
                self._fail(f"bad snapshot length {text!r}")
            self.rdb_size = int(size)
        self.rdb_received = 0
        self.state = State.RDB
        events.append(RdbStart(self.rdb_size))
        if self.rdb_size == 0:
            self._end_rdb(events)

    def _rdb(self, data, events):
        if self._eof_mark is None:
            need = self.rdb_size - self.rdb_received
            if len(data) < need:
                self.rdb_received += len(data)
                events.append(RdbData(data))
                return
            if need:
                events.append(RdbData(data[:need]))
            self.rdb_received += need
            rest = data[need:]
            self._end_rdb(events)
        else:
            if self._tail:
                data = self._tail + data
            i = data.find(self._eof_mark)
            if i < 0:
                keep = _EOF_MARK_LEN - 1
                if len(data) > keep:
                    events.append(RdbData(data[:-keep]))
                    self.rdb_received += len(data) - keep
                    self._tail = data[-keep:]
                else:
                    self._tail = data
                return
            if i:
                events.append(RdbData(data[:i]))
                self.rdb_received += i
            self._tail = b""
            rest = data[i + _EOF_MARK_LEN :]
            self._end_rdb(events)
        if rest:
            self._stream(rest, events)

    def _end_rdb(self, events):
        events.append(RdbEnd(self.rdb_received))
        self._start_stream()
        if self.psync or self.replconf:
            # an ACK at once, as Redis replicas do: after a diskless transfer the master
            # holds the stream back until the replica's first ACK
            self._send("REPLCONF", "ACK", self.offset)

    def _start_stream(self):
        self.state = State.STREAM
        self._reader = hiredis.Reader()
        self._parsed = self._stream_start = self.offset
        self._reader_base = self._reader_len = 0
        self._in_multi = False
        self._multi_data = False  # the open transaction holds a data-changing command
        self._cur_db = self.db  # selected by the last SELECT parsed (inside a MULTI too)
        self._held = []
        self._held_base = self.offset
        self._held_size = 0
        self._last2 = b""

    def _stream(self, data, events):
        """Parse the commands in ``data``. Each is sized as canonical RESP (an array of bulk
        strings), and the sizes are checked against hiredis's bookkeeping at each 1 KiB it
        drops and at the end of each call: the last command parsed must end where the next
        one starts ("\\r\\n*", or the end of the bytes). A simple string in a command is
        shorter than sized (hiredis gives "+v" the bytes of "$1 v"), so it fails that check
        before the call returns: the call's commands are not delivered, its ACKs not sent,
        the offsets stay where the call began, and the error says which command it was."""
        reader = self._reader
        parsed0 = self._parsed  # where this call's first command starts
        base = self._stream_start + self._reader_base + self._reader_len  # data[0]'s offset
        outbox0 = len(self._outbox)
        # fed in pieces: hiredis moves its whole unread buffer each time it drops 1 KiB, so
        # a 64 KiB chunk fed at once costs ~32 bytes moved per byte parsed
        fed, total = min(len(data), _FEED), len(data)
        reader.feed(data, 0, fed)
        self._reader_len += fed
        gets = reader.gets
        argvs, offsets = [], []
        add_argv, add_offset = argvs.append, offsets.append
        bulk_size, array_header, kinds = _BULK_SIZE, _ARRAY_HEADER, _NAME_KIND
        off = self._parsed  # replica offset of the end of the last parsed command
        # hiredis drops the bytes it consumed once they reach 1 KiB (in gets(), leaving
        # its buffer at the end of the reply): past this offset, look whether it did
        trim_at = self._stream_start + self._reader_base + _READER_TRIM
        in_multi, multi_data, cur_db = self._in_multi, self._multi_data, self._cur_db
        # the committed positions, as locals in the loop (written back in finally)
        committed, db, data_offset, data_db = self.offset, self.db, self.data_offset, self.data_db
        try:
            while True:
                argv = gets()
                if argv is False:
                    if fed == total:
                        break
                    self._count_dropped()
                    trim_at = self._stream_start + self._reader_base + _READER_TRIM
                    n = min(total - fed, _FEED)
                    reader.feed(data, fed, n)
                    fed += n
                    self._reader_len += n
                    continue
                if type(argv) is not list or not argv:
                    self._not_a_command(argv, off)
                before = off
                try:  # off += multibulk_size(argv), inline
                    # summed apart from off: a command's size is mostly a cached small int,
                    # where every addition to the big offset would allocate one
                    n = array_header[len(argv)]
                    for a in argv:
                        if type(a) is not bytes:  # an integer, nil or array: not what a master sends
                            self._not_a_command(argv, before)
                        n += bulk_size[len(a)]
                    off += n
                except IndexError:  # 1000+ arguments, or one of 10000+ bytes
                    try:
                        off = before + multibulk_size(argv)
                    except TypeError:
                        self._not_a_command(argv, before)
                if off >= trim_at:
                    n = reader.len()
                    if n != self._reader_len:  # each step must match our count
                        self._reader_base += self._reader_len - n
                        self._reader_len = n
                        if self._stream_start + self._reader_base != off:
                            raise _Refused(
                                f"replication offset out of step: computed {off}, the parser "
                                f"consumed up to {self._stream_start + self._reader_base}"
                            )
                    trim_at = self._stream_start + self._reader_base + _READER_TRIM
                name = argv[0]
                try:
                    kind = kinds[name]
                except KeyError:
                    kind = _name_kind(name)
                if kind is None:  # the common case: a command that changes data
                    add_argv(argv)
                    add_offset(off)
                    if in_multi:
                        multi_data = True
                    else:
                        committed = data_offset = off
                        db = data_db = cur_db
                    continue
                changes = True  # data: what a PSYNC after a promotion must not skip
                if kind == _REPLCONF:
                    if len(argv) > 1 and argv[1].upper() == b"GETACK":
                        # like Redis: the ACK does not count the GETACK itself
                        self._send("REPLCONF", "ACK", committed if in_multi else before)
                    if not in_multi:
                        committed, db = off, cur_db
                    continue
                if kind == _PING:
                    if not in_multi:
                        committed, db = off, cur_db
                    continue
                if kind == _SELECT:
                    changes = False
                    if len(argv) == 2 and argv[1].isdigit():  # else the applier refuses it
                        cur_db = int(argv[1])
                elif kind == _PUBLISH or kind == _SPUBLISH:
                    changes = False
                elif kind == _MULTI:
                    in_multi, multi_data, changes = True, False, False
                elif kind == _EXEC:
                    in_multi, changes = False, multi_data
                elif kind == _DISCARD:
                    in_multi, changes = False, False
                add_argv(argv)
                add_offset(off)
                if in_multi:
                    multi_data = multi_data or changes
                else:
                    committed, db = off, cur_db
                    if changes:
                        data_offset, data_db = off, cur_db
            if off != parsed0:  # a command ended in this call: does the next one start there?
                i = off - base  # where it ends in data: past its first byte (counted short: not)
                if (
                    not 0 < i <= total
                    or (i < total and data[i] != 42)
                    or (data[i - 2 : i] if i > 1 else (self._last2 + data[:i])[-2:]) != b"\r\n"
                ):
                    raise _Refused(f"the commands are sized to end at offset {off}, where no command starts")
        except _Refused as e:  # nothing of this call is delivered, and its offsets are undone
            argvs.clear()
            committed, db, data_offset, data_db = self.offset, self.db, self.data_offset, self.data_db
            off = parsed0
            self._refuse(data, base, outbox0, str(e))
        except hiredis.ProtocolError as e:
            self._fail(f"the replication stream is not RESP after offset {off}: {e}")
        finally:
            if off != parsed0:  # keep the bytes from the start of the command in progress
                self._held, self._held_base, self._held_size = [data], base, total
            elif self._held_size < _HOLD:
                self._held.append(data)
                self._held_size += total
            else:
                self._held_base = -1  # a huge command: an error would say less
            self._last2 = data[-2:] if total > 1 else (self._last2 + data)[-2:]
            self._parsed = off
            self._in_multi, self._multi_data, self._cur_db = in_multi, multi_data, cur_db
            self.offset, self.db, self.data_offset, self.data_db = committed, db, data_offset, data_db
            self._count_dropped()
            if argvs:
                events.append(Commands(argvs, offsets))

    def _refuse(self, data, base, outbox0, why):
        """Fail on a stream whose commands were sized wrong since ``self._parsed``: drop the
        ACKs this call queued (sized wrong too) and say which command is not canonical."""
        del self._outbox[outbox0:]
        where = None
        if self._held_base >= 0:
            where = _non_canonical(b"".join([*self._held, data]), self._parsed - self._held_base)
        if where is None:
            self._fail(f"{why}: a non-canonical encoding after offset {self._parsed}")
        at, what = where
        self._fail(
            f"{what} in the command at offset {self._held_base + at} of the replication stream: "
            "a master sends a command as an array of bulk strings"
        )

    def _count_dropped(self):
        """Count the bytes hiredis dropped after an incomplete reply (its buffer shrank)."""
        n = self._reader.len()
        self._reader_base += self._reader_len - n
        self._reader_len = n


class _Refused(Exception):
    """Internal: the commands of a call were sized wrong (a non-canonical encoding)."""


_READER_TRIM = 1024  # hiredis's read.c: "Discard part of the buffer when we've read more than 1k"
_FEED = 4096  # bytes given to hiredis at a time
_HOLD = 1 << 20  # bytes of a command in progress kept to say what is wrong with it
_NAME_KIND: dict = {}  # argv[0] as sent -> its upper-case name if in _SPECIAL, else None


def _non_canonical(buf, i):
    """(where, what) of the first command from ``buf[i]`` that is not an array of bulk
    strings, or None if none is (or ``buf`` does not hold enough to tell)."""
    try:
        while i < len(buf):
            start = i
            if buf[i] != 42:
                return start, f"{reprlib.repr(buf[i : i + 1])} where a command starts"
            j = buf.index(b"\r\n", i)
            n, i = int(buf[i + 1 : j]), j + 2
            for _ in range(n):
                t = buf[i]
                if t == 43:
                    return start, "a simple string (+...)"
                if t != 36:
                    return start, f"a {reprlib.repr(buf[i : i + 1])} element (not a bulk string)"
                j = buf.index(b"\r\n", i)
                i = j + 2 + int(buf[i + 1 : j]) + 2
    except (ValueError, IndexError):
        pass
    return None


def _name_kind(name):
    """``_NAME_KIND``'s entry for ``name``, computed (and cached, up to a bound)."""
    kind = None
    if len(name) in _SPECIAL_LENS:
        upper = name.upper()
        if upper in _SPECIAL:
            kind = upper
    if len(_NAME_KIND) < 1024:
        _NAME_KIND[name] = kind
    return kind


# What a handshake reply means depends on the state it arrives in.
_REPLY_HANDLERS = {
    State.PING: ReplicaProtocol._on_ping,
    State.AUTH: ReplicaProtocol._on_auth,
    State.PORT: ReplicaProtocol._on_port,
    State.CAPA: ReplicaProtocol._on_capa,
    State.PSYNC: ReplicaProtocol._on_psync,
    State.WAIT_PAYLOAD: ReplicaProtocol._on_wait_payload,
}
