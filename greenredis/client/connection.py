"""One socket to Redis shared by many greenlets: commands are coalesced into
one write and replies handed back in order.

The I/O runs in gevent's event loop (hub) callbacks, not in greenlets of its
own: a read watcher feeds bytes to hiredis and switches each reply straight
into the greenlet waiting for it, and writes are flushed by a loop callback
that joins everything queued since the last flush. No thread, no extra
greenlet per call, no per-call object beyond a gevent ``Waiter``.

``open_connection`` connects (TCP, unix socket or TLS through an ``ssl``
memory BIO, so the socket itself stays a plain non-blocking one) and does
AUTH, SELECT and CLIENT SETNAME one at a time before anyone may pipeline.

A connection belongs to the process that opened it: in a child made by
``os.fork()`` every inherited connection is abandoned (its watchers stopped, its
copy of the descriptor closed, which sends nothing) so that the child never reads
the parent's replies; clients open new connections there.
"""

import errno
import itertools
import os
import ssl
import weakref
from collections import deque
from time import monotonic

import hiredis
from gevent import Timeout, get_hub
from gevent.hub import Waiter
from gevent.socket import wait_read, wait_write
from greenlet import getcurrent

from greenredis.client.sockets import open_socket, tls_context
from greenredis.errors import (
    AuthenticationError,
    BusyError,
    BusyLoadingError,
    ConnectionError,
    DataError,
    ProtocolError,
    ReplyError,
    SetupRefusedError,
    TimeoutError,
    reply_error,
)

__all__ = ["Connection", "open_connection", "pack", "pack_many", "MAX_WRITE_BUFFER"]

MAX_WRITE_BUFFER = 8 << 20  # bytes queued but unsent before callers wait for the socket
READ_SIZE = 256 << 10
TLS_CHUNK = 256 << 10  # plaintext encrypted per step: a large write is never re-copied whole

_live: "weakref.WeakSet[Connection]" = weakref.WeakSet()  # open connections, for the fork hook


def pack(command):
    """Encode one command (a list or tuple of str, bytes, int or float) as RESP."""
    if command.__class__ is not tuple:
        if command.__class__ is not list:
            raise TypeError(f"a command is a list of arguments, not {type(command).__name__}: {command!r}")
        command = tuple(command)
    if not command:
        raise ValueError("empty command")
    try:
        return hiredis.pack_command(command)
    except TypeError:
        return hiredis.pack_command(tuple(_arg(command, i) for i in range(len(command))))


def pack_many(commands):
    """``[pack(c) for c in commands]``, in C-level passes when every command is a list or
    tuple of str, bytes, int and float; raises as ``pack`` does (nothing is sent)."""
    try:
        if set(map(type, commands)) <= _SEQUENCES and all(commands):
            return list(map(hiredis.pack_command, map(tuple, commands)))
    except TypeError:  # an argument hiredis does not take (or cannot tell what is wrong with)
        pass
    return [pack(c) for c in commands]


_SEQUENCES = frozenset((list, tuple))


def _arg(command, i):
    """Argument ``i`` as hiredis takes it: a bytes-like as bytes, an int or float subclass
    (an ``IntEnum``) as its number; a bool or anything else refused, saying which."""
    arg = command[i]
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, bool):
        raise DataError(
            f"argument {i} of {command[0]!r} is bool {arg!r}: Redis has no booleans; "
            "send 1/0 or 'true'/'false' (as redis-py, which raises DataError too)"
        )
    if isinstance(arg, int):
        return int(arg)
    if isinstance(arg, float):
        return float(arg)
    if isinstance(arg, (str, bytes)):
        return arg
    raise TypeError(
        f"argument {i} of {command[0]!r} is {type(arg).__name__} {arg!r}: "
        "arguments must be str, bytes, bytearray, memoryview, int or float"
    )


class _Batch:
    """Collects the replies of a batch and wakes its caller once with all of them."""

    __slots__ = ("n", "replies", "waiter", "thrown")

    def __init__(self, n, waiter):
        self.n = n
        self.replies = []
        self.waiter = waiter
        self.thrown = False

    def switch(self, reply):
        replies = self.replies
        replies.append(reply)
        if len(replies) == self.n:
            self.waiter.switch(replies)

    def throw(self, exc):
        if not self.thrown:
            self.thrown = True
            self.waiter.throw(exc)


class _Sink:
    """The pending entry of every reply but the last of a ``submit_many``: a builtin
    ``list.append`` per reply; a failure goes to the last entry's ``throw``."""

    __slots__ = ("switch", "throw")

    def __init__(self, switch, throw):
        self.switch = switch
        self.throw = throw


class _Last:
    """The last reply of a ``submit_many``: calls ``done`` once, with the replies or the error."""

    __slots__ = ("replies", "done", "over")

    def __init__(self, replies, done):
        self.replies = replies
        self.done = done
        self.over = False

    def switch(self, reply):
        self.replies.append(reply)
        self.over = True
        self.done(self.replies, None)

    def throw(self, exc):
        if not self.over:
            self.over = True
            self.done(self.replies, exc)


class Connection:
    """A connected socket with pipelined callers. Use ``open_connection`` to make one.

    ``call``/``call_many`` block the calling greenlet until its replies arrive.
    With ``on_push`` set (pub/sub, MONITOR) every reply goes to that callback
    instead, and commands are sent with ``send``.
    """

    def __init__(self, transport, params, on_push=None, on_close=None):
        self._t = transport
        self.params = params
        self.on_push = on_push
        self.on_close = on_close
        self.error = None  # the ConnectionError/ProtocolError that ended it
        self._reader = hiredis.Reader(protocolError=ProtocolError, replyError=reply_error)
        self._pending = deque()  # one entry per reply expected, in order
        self._wbuf = []  # packed commands waiting for the next flush
        self._wbytes = 0  # queued + partially written bytes
        self._out = None  # memoryview of a partial write in progress
        self._flush_scheduled = False
        self._paused = False
        self._space = deque()  # Waiters for write-buffer space, in arrival order
        self._last_io = monotonic()  # the last byte read or written, or the start of a call
        self.blocking = 0  # calls in flight that may stay silent (BLPOP, WAIT): no deadline
        self._hub = hub = get_hub()
        loop = hub.loop
        self._loop = loop
        fd = transport.fileno()
        # An idle connection must not keep gevent's loop alive (gevent.wait() would hang),
        # so the read watcher holds a reference only while replies are awaited.
        self._rw = loop.io(fd, 1, ref=False)
        self._ww = loop.io(fd, 2)
        self._rw.start(self._on_readable)
        self._watchdog = None
        if params.dead_after:
            self._watchdog = loop.timer(params.dead_after / 4, params.dead_after / 4, ref=False)
            self._watchdog.start(self._check_alive)
        _live.add(self)

    # -- callers' side ---------------------------------------------------

    def call(self, packed, timeout=None):
        """Send one packed command and return its reply (a ReplyError is returned, not raised).
        ``timeout`` covers the wait for write-buffer space and for the reply."""
        waiter = Waiter(self._hub)
        if timeout is None:
            self._enqueue(packed, waiter)
            return waiter.get()
        timer = self._timer(timeout)
        try:
            self._enqueue(packed, waiter)
            return waiter.get()
        finally:
            timer.close()

    def call_many(self, packed_list, timeout=None):
        """Send packed commands as one contiguous write; return their replies in order."""
        n = len(packed_list)
        if n == 0:
            return []
        waiter = Waiter(self._hub)
        batch = _Batch(n, waiter)
        if timeout is None:
            self._enqueue(b"".join(packed_list), batch, n)
            return waiter.get()
        timer = self._timer(timeout)
        try:
            self._enqueue(b"".join(packed_list), batch, n)
            return waiter.get()
        finally:
            timer.close()

    def submit_many(self, packed_list, done):
        """Send packed commands as one contiguous write without waiting for their replies:
        ``done(replies, error)`` is called once, in the hub, with all the replies in order
        (``error`` None), or with those that came and the ConnectionError that ended the
        connection. May wait for write-buffer space (within the caller's Timeout)."""
        n = len(packed_list)
        if n == 0:
            return
        replies = []
        last = _Last(replies, done)
        self._enqueue(b"".join(packed_list), _Sink(replies.append, last.throw), n - 1, last)

    def alive(self):
        """Poll the socket without blocking, for a connection nobody has read in a while:
        False if the server closed it meanwhile (its idle ``timeout``, a NAT drop)."""
        if self.error is None and not self._pending and not self._paused:
            self._on_readable()
        return self.error is None

    def send(self, packed):
        """Queue bytes whose replies go to ``on_push``."""
        self._check_usable()
        self._queue_write(packed)

    def pause_reading(self):
        """Stop handing out replies and reading the socket (flow control for ``on_push``)."""
        self._paused = True
        self._rw.stop()

    def resume_reading(self):
        self._paused = False
        if self.error is None:
            self._rw.start(self._on_readable)
            self._loop.run_callback(self._dispatch)  # replies already read and parsed

    def _timer(self, timeout):
        return Timeout._start_new_or_dummy(
            timeout, TimeoutError(f"no reply from {self.params.address} within {timeout}s")
        )

    def _enqueue(self, packed, entry, n=1, last=None):
        if self.error is not None:
            raise type(self.error)(*self.error.args)
        if self._wbytes > MAX_WRITE_BUFFER or self._space:
            self._wait_space()  # backpressure, first come first served
        pending = self._pending
        idle = not pending
        if idle and self.on_push is None:
            self._rw.ref = True
        if n == 1:
            pending.append(entry)
        else:
            pending.extend(itertools.repeat(entry, n))
        if last is not None:
            pending.append(last)
        if idle and self._out is None and not self._wbuf:
            # Nothing in flight: write now and save a loop iteration. Commands issued
            # while this one is in flight coalesce into the next flush.
            self._last_io = monotonic()  # the dead-connection clock starts here
            self._wbytes += len(packed)
            self._write(packed)
        else:
            self._queue_write(packed)

    def _wait_space(self):
        """Wait (within the caller's Timeout) until the buffer is below the bound and
        everyone who came earlier has had their turn."""
        waiter = Waiter(self._hub)
        space = self._space
        space.append(waiter)
        try:
            waiter.get()
        except BaseException:
            try:
                space.remove(waiter)
            except ValueError:  # woken and timed out at once: pass the turn on
                self._loop.run_callback(self._wake_space)
            raise
        self._check_usable()

    def _wake_space(self):
        """In the hub: let waiters in, in order, while the buffer is below the bound
        (each one switched to queues its bytes and blocks on its reply)."""
        space = self._space
        while space and self._wbytes <= MAX_WRITE_BUFFER and self.error is None:
            space.popleft().switch(None)

    def _check_usable(self):
        if self.error is not None:
            raise type(self.error)(*self.error.args)

    def _queue_write(self, packed):
        self._wbuf.append(packed)
        self._wbytes += len(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)

    # -- event-loop side -------------------------------------------------

    def _flush(self):
        self._flush_scheduled = False
        if self.error is not None or self._out is not None or not self._wbuf:
            return
        wbuf = self._wbuf
        data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
        wbuf.clear()
        self._write(data)
        if self._space and self._wbytes <= MAX_WRITE_BUFFER:
            self._wake_space()

    def _write(self, data):
        try:
            sent = self._t.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            sent = 0
        except OSError as e:
            self._fail(ConnectionError(f"write to {self.params.address} failed: {e}"))
            return
        self._wbytes -= sent
        if sent < len(data) or self._t.backlog:
            self._out = memoryview(data)[sent:]
            self._ww.start(self._on_writable)

    def _on_writable(self):
        out = self._out
        try:
            sent = self._t.send(out)
        except (BlockingIOError, ssl.SSLWantWriteError):
            return
        except OSError as e:
            self._fail(ConnectionError(f"write to {self.params.address} failed: {e}"))
            return
        if sent:
            self._last_io = monotonic()  # an upload in progress is progress: not dead
            self._wbytes -= sent
        if sent < len(out) or self._t.backlog:
            self._out = out[sent:]
        else:
            self._out = None
            self._ww.stop()
            if self._wbuf:
                self._flush()
                return
        if self._space and self._wbytes <= MAX_WRITE_BUFFER:
            self._wake_space()

    def _on_readable(self):
        try:
            n = self._t.read_into(self._reader)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except OSError as e:
            self._fail(ConnectionError(f"read from {self.params.address} failed: {e}"))
            return
        if not n:
            self._fail(ConnectionError(f"{self.params.address} closed the connection"))
            return
        self._last_io = monotonic()
        self._dispatch()

    def _dispatch(self):
        """Hand every complete reply to its waiter (or to ``on_push``)."""
        pending = self._pending
        push = self.on_push
        gets = self._reader.gets
        while not self._paused:
            try:
                reply = gets()
            except ProtocolError as e:
                self._fail(ProtocolError(f"{self.params.address} sent bytes that are not RESP: {e}"))
                return
            if reply is False:
                # on_push, not push: a woken caller may have made this a push connection
                if not pending and self.on_push is None:
                    self._rw.ref = False
                return
            if push is not None:
                push(reply)
            elif pending:
                pending.popleft().switch(reply)
            else:
                self._fail(ProtocolError(f"{self.params.address} sent a reply nobody asked for: {reply!r}"))
                return
            if self.error is not None:  # a woken caller closed us
                return

    def _check_alive(self):
        if self._pending and not self.blocking and monotonic() - self._last_io > self.params.dead_after:
            # The loop runs due timers before ready sockets: after a stall of this process (CPU
            # starvation), the replies may be waiting in the socket. Read them first.
            self._on_readable()
            if self.error is not None or monotonic() - self._last_io <= self.params.dead_after:
                return
            self._fail(
                ConnectionError(
                    f"{self.params.address} sent nothing for {self.params.dead_after}s "
                    f"with {len(self._pending)} replies outstanding: connection declared dead"
                )
            )

    # -- ending ----------------------------------------------------------

    def close(self, error=None):
        """Close the socket; callers still waiting get ConnectionError (``error``, if given:
        one that says why)."""
        self._fail(error or ConnectionError(f"connection to {self.params.address} closed"))

    def _fail(self, exc):
        if self.error is not None:
            return
        self.error = exc
        self._rw.stop()
        self._ww.stop()
        if self._watchdog is not None:
            self._watchdog.stop()
        self._t.close()
        _live.discard(self)
        if getcurrent() is self._hub:
            self._fail_waiters(exc)
        else:  # waiters can only be woken from the hub
            self._loop.run_callback(self._fail_waiters, exc)
        if self.on_close is not None:
            self.on_close(self, exc)

    def _fail_waiters(self, exc):
        pending, self._pending = self._pending, deque()
        space, self._space = self._space, deque()
        for waiter in space:
            waiter.throw(type(exc)(*exc.args))
        for entry in pending:
            if entry.__class__ is _Batch:
                if not entry.thrown:
                    entry.throw(type(exc)(*exc.args))
            elif entry.__class__ is _Sink:
                entry.throw(exc)  # one part, told once: no exception made per reply
            else:
                entry.throw(type(exc)(*exc.args))

    def _abandon_after_fork(self, pid):
        """In a forked child: stop watching the parent's socket and drop our copy of it
        (a close of a copy sends nothing); callers that were waiting get ConnectionError."""
        if self.error is not None:
            return
        self.error = ConnectionError(
            f"connection to {self.params.address} belongs to process {pid} (this process forked from it)"
        )
        self._rw.stop()
        self._ww.stop()
        if self._watchdog is not None:
            self._watchdog.stop()
        self._t.close()
        if self._pending or self._space:
            self._loop.run_callback(self._fail_waiters, self.error)

    def __repr__(self):
        state = "open" if self.error is None else f"closed ({self.error})"
        return f"<Connection {self.params.address} {state}, {len(self._pending)} in flight>"


# -- connecting ------------------------------------------------------------


class _Plain:
    """A non-blocking socket."""

    __slots__ = ("sock", "send", "fileno", "_buf", "_recv_into")
    backlog = False

    def __init__(self, sock):
        self.sock = sock
        self.send = sock.send
        self.fileno = sock.fileno
        # One buffer for every read: a fresh 256 KiB bytes object per read costs malloc
        # three syscalls (mmap, mremap, munmap) on top of the recv.
        self._buf = bytearray(READ_SIZE)
        self._recv_into = sock.recv_into

    def read_into(self, reader):
        """Feed what the socket has to the hiredis reader; 0 means EOF."""
        n = self._recv_into(self._buf)
        if n:
            reader.feed(self._buf, 0, n)
        return n

    def close(self):
        self.sock.close()


class _TLS:
    """TLS over a non-blocking socket through ssl memory BIOs, so the event loop
    watches the plain socket and never misses bytes buffered inside OpenSSL."""

    def __init__(self, sock, context, server_hostname):
        self.sock = sock
        self.fileno = sock.fileno
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._cipher = None  # memoryview of ciphertext the socket has not taken yet

    def handshake(self, timeout):
        deadline = monotonic() + timeout
        while True:
            try:
                self.tls.do_handshake()
                self._push_out(deadline)
                return
            except ssl.SSLWantReadError:
                self._push_out(deadline)
                wait_read(
                    self.sock.fileno(),
                    max(0.0, deadline - monotonic()),
                    TimeoutError("TLS handshake timed out"),
                )
                data = self.sock.recv(READ_SIZE)
                if not data:
                    raise ConnectionError("server closed the connection during the TLS handshake") from None
                self._in.write(data)

    def _push_out(self, deadline):
        data = self._out.read()
        while data:
            try:
                sent = self.sock.send(data)
                data = data[sent:]
            except BlockingIOError:
                wait_write(
                    self.sock.fileno(), max(0.0, deadline - monotonic()), TimeoutError("TLS write timed out")
                )

    @property
    def backlog(self):
        return self._cipher is not None

    def _send_cipher(self):
        """Send the ciphertext waiting; True once all of it is gone."""
        cipher = self._cipher
        try:
            sent = self.sock.send(cipher)
        except BlockingIOError:
            return False
        if sent < len(cipher):
            self._cipher = cipher[sent:]  # a view: the remainder is never copied
            return False
        self._cipher = None
        return True

    def send(self, data):
        """Encrypt ``TLS_CHUNK`` bytes at a time and send them; return the plaintext bytes
        taken (0 while earlier ciphertext still waits for the socket)."""
        if self._cipher is not None and not self._send_cipher():
            return 0
        view = data if data.__class__ is memoryview else memoryview(data)
        taken, n = 0, len(view)
        while taken < n:
            taken += self.tls.write(view[taken : taken + TLS_CHUNK])
            self._cipher = memoryview(self._out.read())
            if not self._send_cipher():
                break
        return taken

    def read_into(self, reader):
        data = self.recv(READ_SIZE)
        if data:
            reader.feed(data)
        return len(data)

    def recv(self, size):
        """All the plaintext that has arrived (the fd is level-triggered, OpenSSL's buffer is not)."""
        eof = False
        try:
            while True:
                data = self.sock.recv(size)
                if not data:
                    eof = True
                    break
                self._in.write(data)
                if len(data) < size:
                    break
        except BlockingIOError:
            pass
        chunks = []
        while True:
            try:
                chunk = self.tls.read(size)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            if not chunk:
                break
            chunks.append(chunk)
        if chunks:
            return b"".join(chunks)
        if eof:
            return b""
        raise BlockingIOError(errno.EAGAIN, "no complete TLS record yet")

    def close(self):
        self.sock.close()


def open_connection(params, on_push=None, on_close=None, check=None):
    """Connect, authenticate, select the db and name the client; return a ready ``Connection``.
    ``params.connect_timeout`` bounds all of it; every failure is a ``ConnectionError``
    (``AuthenticationError`` for a refused AUTH). ``check(conn, timeout)`` runs last,
    before anyone may use the connection (Sentinel's ROLE); it raises to refuse it."""
    timeout = params.connect_timeout
    deadline = None if timeout is None else monotonic() + timeout
    pid = os.getpid()
    sock = open_socket(params, timeout)
    try:
        if params.ssl:
            context = tls_context(params)
            transport = _TLS(sock, context, params.host if not params.unix_socket_path else None)
            try:
                transport.handshake(timeout if deadline is None else max(0.0, deadline - monotonic()))
            except (OSError, ssl.SSLError, TimeoutError) as e:
                raise ConnectionError(f"TLS handshake with {params.address} failed: {e}") from None
        else:
            transport = _Plain(sock)
        if os.getpid() != pid:
            # Forked while connecting: the socket is the parent's too (its close sends nothing).
            raise ConnectionError(
                f"connecting to {params.address} began in process {pid}, which forked meanwhile"
            )
        conn = Connection(transport, params, on_close=on_close)
    except BaseException:
        sock.close()
        raise
    setup = []
    if params.password or params.username:
        # A username alone is an ACL user with nopass, whatever password is sent; an empty
        # password alone is no password (as redis-py does: redis://:@host works).
        setup.append(
            ["AUTH", params.username, params.password or ""] if params.username else ["AUTH", params.password]
        )
    if params.db:
        setup.append(["SELECT", params.db])
    if params.client_name:
        setup.append(["CLIENT", "SETNAME", params.client_name])
    try:
        # One at a time: nothing may be pipelined behind a failing AUTH.
        for command in setup:
            left = None if deadline is None else max(0.001, deadline - monotonic())
            try:
                reply = conn.call(pack(command), left)
            except TimeoutError:
                raise ConnectionError(
                    f"{params.address} accepted the connection but did not answer {command[0]} "
                    f"within connect_timeout={timeout}s"
                ) from None
            if isinstance(reply, ReplyError):
                if isinstance(reply, ConnectionError):  # -ERR max number of clients reached
                    raise reply
                if command[0] == "AUTH" or reply.prefix == "NOAUTH":  # NOAUTH: SELECT without AUTH
                    cls = AuthenticationError
                elif isinstance(reply, (BusyError, BusyLoadingError)):
                    cls = ConnectionError  # it may pass by itself
                else:
                    cls = SetupRefusedError
                raise cls(f"{command[0]} on {params.address} failed: {reply}")
        if check is not None:
            check(conn, None if deadline is None else max(0.001, deadline - monotonic()))
    except BaseException:
        conn.close()
        raise
    conn.on_push = on_push
    if on_push is not None:
        conn._rw.ref = True  # a subscriber is waiting for whatever arrives
    return conn


def _after_fork_in_child():
    parent = os.getppid()
    for conn in list(_live):
        conn._abandon_after_fork(parent)
    _live.clear()
    try:
        from gevent._hub_local import get_hub_if_exists

        hub = get_hub_if_exists()
        if hub is not None:
            # Without this (gevent.os.fork does it; a bare os.fork does not) the child's
            # loop would share the parent's epoll set and steal its events.
            hub.loop.reinit()
    except Exception:  # pragma: no cover - never let a fork fail because of us
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)
