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
"""

import _socket
import errno
import itertools
import ssl
from collections import deque
from time import monotonic

import hiredis
from gevent import Timeout, get_hub
from gevent.event import Event
from gevent.hub import Waiter
from gevent.socket import getaddrinfo, wait_read, wait_write
from greenlet import getcurrent

from greenredis.errors import ConnectionError, ProtocolError, ReplyError, TimeoutError, reply_error

__all__ = ["Connection", "open_connection", "pack", "MAX_WRITE_BUFFER"]

MAX_WRITE_BUFFER = 8 << 20  # bytes queued but unsent before callers wait for the socket
READ_SIZE = 256 << 10


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
        for i, arg in enumerate(command):
            if not isinstance(arg, (str, bytes, int, float, memoryview)) or isinstance(arg, bool):
                raise TypeError(
                    f"argument {i} of {command[0]!r} is {type(arg).__name__} {arg!r}: "
                    "arguments must be str, bytes, int or float"
                ) from None
        raise


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
        self._drained = Event()
        self._drained.set()
        self._last_rx = monotonic()
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

    # -- callers' side ---------------------------------------------------

    def call(self, packed, timeout=None):
        """Send one packed command and return its reply (a ReplyError is returned, not raised)."""
        waiter = Waiter(self._hub)
        self._enqueue(packed, waiter)
        if timeout is None:
            return waiter.get()
        return self._wait(waiter, timeout)

    def call_many(self, packed_list, timeout=None):
        """Send packed commands as one contiguous write; return their replies in order."""
        n = len(packed_list)
        if n == 0:
            return []
        waiter = Waiter(self._hub)
        batch = _Batch(n, waiter)
        self._enqueue(b"".join(packed_list), batch, n)
        if timeout is None:
            return waiter.get()
        return self._wait(waiter, timeout)

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

    def _wait(self, waiter, timeout):
        timer = Timeout._start_new_or_dummy(
            timeout, TimeoutError(f"no reply from {self.params.address} within {timeout}s")
        )
        try:
            return waiter.get()
        finally:
            timer.close()

    def _enqueue(self, packed, entry, n=1):
        if self.error is not None:
            raise type(self.error)(*self.error.args)
        while self._wbytes > MAX_WRITE_BUFFER:  # backpressure: wait for the socket
            self._drained.wait()
            self._check_usable()
        pending = self._pending
        idle = not pending
        if idle and self.on_push is None:
            self._rw.ref = True
        if n == 1:
            pending.append(entry)
        else:
            pending.extend(itertools.repeat(entry, n))
        if idle and self._out is None and not self._wbuf:
            # Nothing in flight: write now and save a loop iteration. Commands issued
            # while this one is in flight coalesce into the next flush.
            self._last_rx = monotonic()  # the dead-connection clock starts here
            self._wbytes += len(packed)
            self._write(packed)
        else:
            self._queue_write(packed)

    def _check_usable(self):
        if self.error is not None:
            raise type(self.error)(*self.error.args)

    def _queue_write(self, packed):
        self._wbuf.append(packed)
        self._wbytes += len(packed)
        if self._wbytes > MAX_WRITE_BUFFER:
            self._drained.clear()
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
        elif self._wbytes <= MAX_WRITE_BUFFER and not self._drained.is_set():
            self._drained.set()

    def _on_writable(self):
        out = self._out
        try:
            sent = self._t.send(out)
        except (BlockingIOError, ssl.SSLWantWriteError):
            return
        except OSError as e:
            self._fail(ConnectionError(f"write to {self.params.address} failed: {e}"))
            return
        self._wbytes -= sent
        if sent < len(out) or self._t.backlog:
            self._out = out[sent:]
            return
        self._out = None
        self._ww.stop()
        if self._wbuf:
            self._flush()
        elif not self._drained.is_set():
            self._drained.set()

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
        self._last_rx = monotonic()
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
                if not pending and push is None:
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
        if self._pending and monotonic() - self._last_rx > self.params.dead_after:
            self._fail(
                ConnectionError(
                    f"{self.params.address} sent nothing for {self.params.dead_after}s "
                    f"with {len(self._pending)} replies outstanding: connection declared dead"
                )
            )

    # -- ending ----------------------------------------------------------

    def close(self):
        """Close the socket; callers still waiting get ConnectionError."""
        self._fail(ConnectionError(f"connection to {self.params.address} closed"))

    def _fail(self, exc):
        if self.error is not None:
            return
        self.error = exc
        self._rw.stop()
        self._ww.stop()
        if self._watchdog is not None:
            self._watchdog.stop()
        self._t.close()
        self._drained.set()
        if getcurrent() is self._hub:
            self._fail_waiters(exc)
        else:  # waiters can only be woken from the hub
            self._loop.run_callback(self._fail_waiters, exc)
        if self.on_close is not None:
            self.on_close(self, exc)

    def _fail_waiters(self, exc):
        pending, self._pending = self._pending, deque()
        for entry in pending:
            if entry.__class__ is _Batch:
                if not entry.thrown:
                    entry.throw(type(exc)(*exc.args))
            else:
                entry.throw(type(exc)(*exc.args))

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
        return self._out.pending > 0

    def _flush_out(self):
        data = self._out.read()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self._out.write(data[sent:])  # the BIO was just emptied, so order is kept

    def send(self, data):
        """Encrypt and send; returns the plaintext bytes taken (0 while old ciphertext waits)."""
        if self._out.pending:
            self._flush_out()
            if self._out.pending:
                return 0
        n = self.tls.write(data) if len(data) else 0
        self._flush_out()
        return n

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


def _connect_socket(params):
    timeout = params.connect_timeout
    if params.unix_socket_path:
        addrs = [(_socket.AF_UNIX, params.unix_socket_path)]
    else:
        try:
            infos = getaddrinfo(params.host, params.port, 0, _socket.SOCK_STREAM)
        except OSError as e:
            raise ConnectionError(f"cannot resolve {params.host}: {e}") from None
        addrs = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
    last = None
    for family, sockaddr in addrs:
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            err = sock.connect_ex(sockaddr)
            if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                wait_write(
                    sock.fileno(),
                    timeout,
                    TimeoutError(f"connecting to {params.address} timed out after {timeout}s"),
                )
                err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if err:
                raise OSError(err, errno.errorcode.get(err, str(err)))
            if family != _socket.AF_UNIX:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except (OSError, TimeoutError) as e:
            sock.close()
            last = e
    raise ConnectionError(f"cannot connect to {params.address}: {last}")


def open_connection(params, on_push=None, on_close=None):
    """Connect, authenticate, select the db and name the client; return a ready ``Connection``."""
    sock = _connect_socket(params)
    if params.ssl:
        context = ssl.create_default_context(cafile=params.ssl_ca_certs)
        context.check_hostname = params.ssl_check_hostname
        if not params.ssl_ca_certs and not params.ssl_check_hostname:
            context.verify_mode = ssl.CERT_NONE
        transport = _TLS(sock, context, params.host if params.ssl_check_hostname else None)
        try:
            transport.handshake(params.connect_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as e:
            sock.close()
            raise ConnectionError(f"TLS handshake with {params.address} failed: {e}") from None
    else:
        transport = _Plain(sock)
    conn = Connection(transport, params, on_close=on_close)
    setup = []
    if params.password is not None or params.username:
        setup.append(
            ["AUTH", params.username, params.password] if params.username else ["AUTH", params.password]
        )
    if params.db:
        setup.append(["SELECT", params.db])
    if params.client_name:
        setup.append(["CLIENT", "SETNAME", params.client_name])
    try:
        # One at a time: nothing may be pipelined behind a failing AUTH.
        for command in setup:
            reply = conn.call(pack(command), params.connect_timeout)
            if isinstance(reply, ReplyError):
                raise ConnectionError(f"{command[0]} on {params.address} failed: {reply}")
    except BaseException:
        conn.close()
        raise
    conn.on_push = on_push
    if on_push is not None:
        conn._rw.ref = True  # a subscriber is waiting for whatever arrives
    return conn
