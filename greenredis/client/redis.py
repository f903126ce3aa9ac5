"""``Redis``: the pipelined client. Every greenlet that shares one ``Redis``
shares one connection; ``cmd`` takes a command or a list of commands."""

import os
import weakref
from time import monotonic

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from gevent.monkey import get_original

from greenredis.backoff import reconnect
from greenredis.client.connection import open_connection, pack
from greenredis.errors import ConnectionError, RedisError, ReplyError, TimeoutError, WatchError
from greenredis.url import ConnectionParams, is_cluster_url, is_sentinel_url, parse_url

__all__ = ["Redis", "Dedicated"]

_DEFAULT = object()

# The OS thread's id even under monkey-patching (the patched one names the greenlet).
get_ident = get_original("_thread", "get_ident")

_MAX_IDLE_DEDICATED = 8
IDLE_CHECK = 1.0  # seconds unused after which a connection is polled for EOF before a write


def _both(names):
    """Upper-case names as str and as bytes, so a lookup needs no encoding."""
    return {**names, **{n.encode(): v for n, v in names.items()}}


# Commands that would stall the shared connection: they run on a connection of their own.
_BLOCKING = _both(dict.fromkeys("BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP".split()))
_MAYBE_BLOCKING = _both(dict.fromkeys(("XREAD", "XREADGROUP")))  # with BLOCK
# Blocking only on dedicated(): their meaning is tied to the connection's own writes.
_WAITS = _both(dict.fromkeys(("WAIT", "WAITAOF")))
_USE_TRANSACTION = "use transaction([...]) or a dedicated() connection"
_USE_DEDICATED = "WATCH needs a connection of its own: use `with r.dedicated() as c:`"
_USE_WAIT_DEDICATED = (
    "it counts the replicas that acknowledged this connection's writes, and the shared "
    "connection's writes are everyone's: run the writes and the WAIT on one connection, "
    "`with r.dedicated() as c: c.cmd([...]); c.cmd(['WAIT', 1, 1000])`"
)
# Commands that would break the shared connection, and what to use instead.
_REFUSED = _both(
    {
        "MULTI": _USE_TRANSACTION,
        "EXEC": _USE_TRANSACTION,
        "DISCARD": _USE_TRANSACTION,
        "WATCH": _USE_DEDICATED,
        "UNWATCH": _USE_DEDICATED,
        "SUBSCRIBE": "use r.subscribe(...)",
        "PSUBSCRIBE": "use r.psubscribe(...)",
        "SSUBSCRIBE": "use r.subscribe(...), or on a Redis Cluster greenredis.Cluster.ssubscribe(...)",
        "UNSUBSCRIBE": "use the Subscription's unsubscribe()",
        "PUNSUBSCRIBE": "use the Subscription's punsubscribe()",
        "SUNSUBSCRIBE": "use the ShardedSubscription's sunsubscribe()",
        "MONITOR": "use r.monitor()",
        "SELECT": "the db is fixed per client: Redis(db=N) or redis://host/N",
        "RESET": "RESET would drop the shared connection's AUTH and SELECT",
        "HELLO": "the client speaks RESP2",
        "QUIT": "use r.close()",
        "AUTH": "a reconnect would forget it: Redis(username=, password=) or redis://user:pw@host",
        "SYNC": "it turns the connection into a replication stream; see greenredis.replication",
        "PSYNC": "it turns the connection into a replication stream; see greenredis.replication",
        "WAIT": _USE_WAIT_DEDICATED,
        "WAITAOF": _USE_WAIT_DEDICATED,
    }
)
# CLIENT subcommands whose state a reconnect would silently drop, or that break pairing.
_CLIENT_REFUSED = _both(
    {
        "TRACKING": "tracking needs RESP3 push messages; use a dedicated() connection",
        "NO-EVICT": "a reconnect would forget it; use a dedicated() connection",
        "NO-TOUCH": "a reconnect would forget it; use a dedicated() connection",
        "SETNAME": "a reconnect would forget it: Redis(client_name=) or ?client_name= in the URL",
        "SETINFO": "a reconnect would forget it; use a dedicated() connection",
    }
)
_CLIENT = frozenset(("CLIENT", b"CLIENT"))
_REPLY = frozenset(("REPLY", b"REPLY"))
_ON = frozenset(("ON", b"ON"))
_SPECIAL = (
    frozenset(_BLOCKING) | frozenset(_MAYBE_BLOCKING) | frozenset(_REFUSED) | frozenset(_WAITS) | _CLIENT
)


def _name(arg):
    """A command name or word as exact str/bytes (subclasses and memoryview normalised), or None."""
    if arg.__class__ is str or arg.__class__ is bytes:
        return arg
    if isinstance(arg, str):
        return str.__str__(arg)
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return bytes(arg)
    return None


def _word(command, i):
    word = _name(command[i]) if len(command) > i else None
    return word.upper() if word is not None else None


def _blocks(name, command):
    if name in _BLOCKING:
        return True
    return name in _MAYBE_BLOCKING and any(
        (w := _name(a)) is not None and w.upper() in ("BLOCK", b"BLOCK") for a in command[1:]
    )


def _route(first, command, shared):
    """True for a command that blocks (on the shared client it needs a connection of its
    own; elsewhere it suspends the dead-connection watchdog); raises ValueError for one
    that cannot run here (``shared``: on the shared connection)."""
    if first.__class__ is str or first.__class__ is bytes:
        name = first.upper()
    else:  # a str/bytes subclass (an enum) or a memoryview must not slip past the checks
        name = _name(first)
        if name is None:
            return False  # pack() says what is wrong with it
        name = name.upper()
    if name not in _SPECIAL:
        return False
    if name in _CLIENT:
        sub = _word(command, 1)
        if sub in _REPLY and _word(command, 2) not in _ON:
            raise ValueError(
                "CLIENT REPLY OFF/SKIP would leave callers without their replies: "
                "greenredis pairs every command with its reply"
            )
        if shared and sub in _CLIENT_REFUSED:
            raise ValueError(
                f"CLIENT {_text(sub)} cannot run on the shared connection: {_CLIENT_REFUSED[sub]}"
            )
        return False
    if _blocks(name, command):
        return True
    if not shared:
        return name in _WAITS
    if name in _REFUSED:
        raise ValueError(f"{_text(name)} cannot run on the shared connection: {_REFUSED[name]}")
    return False


def _text(name):
    return name.decode(errors="replace") if isinstance(name, bytes) else name


class _Commands:
    """``cmd`` and ``transaction`` over the connection ``_conn()`` gives."""

    timeout = None

    def cmd(self, command, timeout=_DEFAULT):
        """Run one command (``["GET", "k"]``) and return its reply, raising ``ReplyError``;
        or run a list of commands in one round trip and return their replies, with
        errors in place as ``ReplyError`` instances (``cmd([])`` is ``[]``)."""
        if timeout is _DEFAULT:
            timeout = self.timeout
        first = _first(command)
        if first is _EMPTY:
            return []
        if first.__class__ is list or first.__class__ is tuple:
            return self._call_many(self._pack_batch(command), timeout)
        reply = self._call_one(first, command, timeout)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def transaction(self, commands, timeout=_DEFAULT):
        """Run commands inside MULTI/EXEC as one contiguous write; return EXEC's replies
        (errors in place). Raises ``ExecAbortError`` if Redis refused to queue one, and
        ``WatchError`` if a key WATCHed on ``dedicated()`` changed."""
        if timeout is _DEFAULT:
            timeout = self.timeout
        first = _first(commands)
        if first.__class__ not in (list, tuple):
            raise ValueError("transaction() takes a list of commands")
        packed = self._pack_batch(commands)
        replies = self._call_many([_MULTI, *packed, _EXEC], timeout)
        result = replies[-1]
        if isinstance(result, ReplyError):
            queued = [f"command {i}: {r}" for i, r in enumerate(replies[1:-1]) if isinstance(r, ReplyError)]
            raise type(result)(f"{result} ({'; '.join(queued)})" if queued else str(result))
        if result is None:
            raise WatchError("EXEC aborted: a WATCHed key changed; nothing was written")
        return result

    def _pack_batch(self, commands):
        return [self._pack_in_batch(c) for c in commands]


_EMPTY = object()


def _first(command):
    try:
        return command[0]
    except IndexError:
        if command.__class__ is list or command.__class__ is tuple:
            return _EMPTY  # an empty batch
        raise ValueError(f"a command is a non-empty list of arguments, not {command!r}") from None
    except (TypeError, KeyError):
        raise ValueError(f"a command is a non-empty list of arguments, not {command!r}") from None


_MULTI = pack(("MULTI",))
_EXEC = pack(("EXEC",))
_PING = pack(("PING",))


class _Owned:
    """The connections a ``Redis`` opened, for closing them when it is dropped unclosed
    (a finalizer must not hold the client itself)."""

    __slots__ = ("conns", "__weakref__")

    def __init__(self):
        self.conns = weakref.WeakSet()

    def close(self):
        for conn in list(self.conns):
            conn.close()


_clients: "weakref.WeakSet[Redis]" = weakref.WeakSet()  # for the fork hook


class Redis(_Commands):
    """A Redis client for gevent: all greenlets share one pipelined connection.

    ``Redis(host=, port=, db=, username=, password=, ssl=, ssl_ca_certs=, ssl_cert_reqs=,
    ssl_certfile=, ssl_keyfile=, ssl_check_hostname=, unix_socket_path=, timeout=,
    connect_timeout=, dead_after=, client_name=, health_check_interval=, max_blocking=)``
    or ``Redis.from_url(url, **same)``; redis-py's ``socket_timeout`` and
    ``socket_connect_timeout`` are accepted for ``timeout`` and ``connect_timeout``.
    ``timeout`` is the default per-call timeout and covers the whole call, reconnect and
    write backpressure included (None: wait while the connection lives; a connection
    with replies outstanding and no byte moving for ``dead_after`` seconds is declared
    dead). TLS verifies the server against the system trust store (or ``ssl_ca_certs``)
    and checks its name; ``ssl_cert_reqs="none"`` turns that off.

    A client belongs to the OS thread that made it; after ``os.fork()`` it opens new
    connections in the child and leaves the parent's alone. Dropping the last reference
    closes its connections; so do ``close()`` and leaving a ``with`` block.
    """

    def __init__(
        self,
        host="127.0.0.1",
        port=6379,
        db=0,
        username=None,
        password=None,
        ssl=False,
        ssl_ca_certs=None,
        unix_socket_path=None,
        timeout=None,
        connect_timeout=5.0,
        dead_after=30.0,
        client_name=None,
        *,
        ssl_cert_reqs=None,
        ssl_certfile=None,
        ssl_keyfile=None,
        ssl_check_hostname=True,
        health_check_interval=0.0,
        socket_timeout=None,
        socket_connect_timeout=None,
        max_blocking=64,
        params=None,
    ):
        self.params = params or ConnectionParams(
            host=host,
            port=port,
            db=db,
            username=username,
            password=password,
            ssl=ssl,
            ssl_ca_certs=ssl_ca_certs,
            ssl_check_hostname=ssl_check_hostname,
            unix_socket_path=unix_socket_path,
            timeout=timeout if socket_timeout is None else socket_timeout,
            connect_timeout=connect_timeout if socket_connect_timeout is None else socket_connect_timeout,
            dead_after=dead_after,
            client_name=client_name,
            ssl_cert_reqs=ssl_cert_reqs,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            health_check_interval=health_check_interval,
        )
        if max_blocking < 1:
            raise ValueError(f"max_blocking must be at least 1, not {max_blocking!r}")
        self.timeout = self.params.timeout
        self.max_blocking = max_blocking
        hci = self.params.health_check_interval
        self._idle_check = min(IDLE_CHECK, hci) if hci else IDLE_CHECK
        self._shared = None
        self._owned = _Owned()
        self._finalizer = weakref.finalize(self, self._owned.close)
        self._reset_state()
        self.closed = False
        _clients.add(self)

    def _reset_state(self):
        """Everything tied to this process and thread (called again in a forked child)."""
        self._thread = get_ident()
        self._connecting = None  # AsyncResult of the connect attempt every caller waits for
        self._backoff = reconnect()
        self._retry_at = 0.0
        self._last_error = None
        self._idle = []  # connections kept for blocking commands
        self._busy = set()  # connections running a blocking command now
        self._blocking_slots = Semaphore(self.max_blocking)

    @classmethod
    def from_url(cls, url=None, max_blocking=64, **options):
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or ``unix:///path``;
        ``url`` defaults to ``$REDIS_URL``. Keyword options override the URL's.
        ``redis+sentinel://...`` gives the ``master_for`` client of its service, and
        ``redis+cluster://...`` a ``greenredis.Cluster`` (same interface)."""
        url = url or os.environ.get("REDIS_URL")
        if is_sentinel_url(url):
            from greenredis.client.sentinel import SentinelRedis

            return SentinelRedis.from_url(url, max_blocking=max_blocking, **options)
        if cls is Redis and is_cluster_url(url):
            from greenredis.client.cluster import Cluster

            return Cluster.from_url(url, max_blocking=max_blocking, **options)
        return cls(params=parse_url(url, **options), max_blocking=max_blocking)

    def __repr__(self):
        return f"<Redis {self.params.address} db={self.params.db}>"

    def _where(self):
        """What error messages call the server."""
        return self.params.address

    # -- routing ---------------------------------------------------------

    def _call_one(self, first, command, timeout):
        packed = pack(command)
        if _route(first, command, shared=True):
            return self._blocking_call(packed, timeout)
        conn, timeout = self._shared_conn(timeout)
        return conn.call(packed, timeout)

    def _call_many(self, packed_list, timeout):
        conn, timeout = self._shared_conn(timeout)
        return conn.call_many(packed_list, timeout)

    def _shared_conn(self, timeout):
        """The shared connection and what is left of ``timeout``: at once when it is
        open and was busy lately, else through ``_ready``. A ConnectionError here means
        nothing was sent."""
        conn = self._shared
        if conn is None or conn.error is not None or self._thread != get_ident():
            return self._ready(timeout)
        if not conn._pending and monotonic() - conn._last_io > self._idle_check:
            return self._ready(timeout)
        return conn, timeout

    def _pack_in_batch(self, command):
        packed = pack(command)
        if _route(command[0], command, shared=True):
            raise ValueError(f"{command[0]} blocks: run it alone with cmd([...]), not in a batch")
        return packed

    # -- connections -----------------------------------------------------

    def _check_thread(self):
        if self._thread != get_ident():
            raise RedisError(
                f"{self!r} belongs to the thread that made it (its gevent hub); make one "
                "client per thread: nothing was sent"
            )

    def _ready(self, timeout):
        """The shared connection, usable now: (re)connect if needed (one attempt serves
        every caller, each waiting at most its ``timeout``) or, after a quiet spell, make
        sure the server has not closed it. Returns it and what is left of ``timeout``."""
        self._check_thread()
        conn = self._shared
        if conn is not None and conn.error is None:
            idle = monotonic() - conn._last_io
            if conn.alive() and not (
                self.params.health_check_interval and idle > self.params.health_check_interval
            ):
                return conn, timeout
            if conn.error is None and self._health_check(conn):
                return conn, timeout
        start = monotonic()
        attempt = self._connecting
        if attempt is None:
            attempt = self._connecting = AsyncResult()
            gevent.spawn(self._connect_shared, attempt)
        try:
            outcome = attempt.get(timeout=timeout)
        except gevent.Timeout:
            raise TimeoutError(
                f"not connected to {self._where()} within the call's timeout of {timeout}s"
            ) from None
        if isinstance(outcome, BaseException):
            raise type(outcome)(*outcome.args)
        if timeout is not None:
            timeout = max(0.001, timeout - (monotonic() - start))
        return outcome, timeout

    def _health_check(self, conn):
        """PING a connection idle past ``health_check_interval``; close it if it fails."""
        try:
            if conn.call(_PING, self.params.connect_timeout) == b"PONG":
                return True
        except (ConnectionError, TimeoutError):
            pass
        conn.close()
        return False

    def _connect_shared(self, attempt):
        outcome = ConnectionError(f"connecting to {self._where()} was interrupted")
        try:
            conn = self._open()
            if self.closed:  # closed while we connected
                conn.close()
                raise ConnectionError("client is closed")
            if self._connecting is not attempt:  # forked meanwhile: the child forgot this attempt
                conn.close()
                raise ConnectionError(f"connecting to {self._where()} was overtaken by a fork")
            outcome = self._shared = conn
        except Exception as e:
            outcome = e
        finally:  # even if killed: nobody may wait on an attempt that never ends
            if self._connecting is attempt:  # not a newer one (a forked child's own)
                self._connecting = None
            attempt.set(outcome)

    def _conn(self):
        conn = self._shared
        if conn is not None and conn.error is None and self._thread == get_ident():
            return conn
        return self._ready(None)[0]

    def _open(self, on_push=None, blocking=False, backoff=True):
        """A new connection, honouring the reconnect backoff after failures (``backoff``:
        the shared one; a subscription keeps its own). A blocking command's connection
        has no dead-connection watchdog: silence is its job."""
        self._check_thread()
        if self.closed:
            raise ConnectionError("client is closed")
        wait = self._retry_at - monotonic()
        if backoff and wait > 0:
            raise ConnectionError(
                f"{self._where()} unreachable, next attempt in {wait:.2f}s (last error: {self._last_error})"
            )
        try:
            params = self.params.replace(dead_after=None) if blocking else self.params
            conn = self._open_connection(params, on_push)
        except ConnectionError as e:
            if backoff:
                self._last_error = e
                self._retry_at = monotonic() + self._backoff.failure()
            raise
        if backoff:
            self._backoff.reset()
            self._retry_at = 0.0
        self._owned.conns.add(conn)
        return conn

    def _open_connection(self, params, on_push):
        """Where a new connection goes: ``params``' address (``Sentinel``'s clients ask)."""
        return open_connection(params, on_push=on_push)

    def _blocking_call(self, packed, timeout):
        self._check_thread()
        start = monotonic()
        slots = self._blocking_slots  # a forked child gets new ones: release what we took
        if not slots.acquire(timeout=timeout):
            raise TimeoutError(
                f"all {self.max_blocking} connections for blocking commands are busy "
                f"(max_blocking) and none came free within {timeout}s"
            )
        try:
            if timeout is not None:
                timeout = max(0.001, timeout - (monotonic() - start))
            return self._blocking_call_on(packed, timeout)
        finally:
            slots.release()

    def _blocking_call_on(self, packed, timeout):
        conn = None
        while self._idle and conn is None:
            conn = self._idle.pop()
            if not conn.alive():  # died while idle (server restart, idle timeout)
                conn = None
        if conn is None:
            conn = self._open(blocking=True)
        self._busy.add(conn)
        try:
            reply = conn.call(packed, timeout)
        except BaseException:
            conn.close()  # it may still be blocked server-side: never reuse it
            raise
        finally:
            self._busy.discard(conn)
        if conn.error is None and len(self._idle) < _MAX_IDLE_DEDICATED and not self.closed:
            self._idle.append(conn)
        else:
            conn.close()
        return reply

    def dedicated(self):
        """A connection of its own, for WATCH/MULTI/EXEC, WAIT and other stateful use:
        ``with r.dedicated() as c: c.cmd(["WATCH", "k"]) ...``. Closed on exit."""
        return Dedicated(self)

    def subscribe(self, *channels, maxsize=10000):
        """A ``Subscription`` to channels, on its own connection; iterate it in a greenlet."""
        from greenredis.client.pubsub import Subscription

        return Subscription(self, channels=channels, maxsize=maxsize)

    def psubscribe(self, *patterns, maxsize=10000):
        """A ``Subscription`` to glob-style patterns, on its own connection."""
        from greenredis.client.pubsub import Subscription

        return Subscription(self, patterns=patterns, maxsize=maxsize)

    def monitor(self, maxsize=10000):
        """An iterator over MONITOR lines (bytes), on its own connection."""
        from greenredis.client.pubsub import Monitor

        return Monitor(self, maxsize=maxsize)

    def close(self):
        """Close the shared connection and those of blocking commands; callers still
        waiting get ConnectionError. Subscriptions end once they find the client closed;
        ``dedicated()`` connections close with their ``with`` block."""
        self.closed = True
        if self._shared is not None:
            self._shared.close()
        for conn in [*self._idle, *self._busy]:
            conn.close()
        self._idle.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Dedicated(_Commands):
    """A connection used by one greenlet at a time: any command goes, MULTI, WATCH and
    WAIT included; blocking commands on it have no dead-connection deadline."""

    def __init__(self, redis):
        self.redis = redis
        self.timeout = redis.timeout
        self._connection = None
        self._batch_blocks = False

    def _conn(self):
        self.redis._check_thread()  # refuse before sending, not after
        conn = self._connection
        if conn is None:
            conn = self._connection = self.redis._open()
        elif conn.error is not None:
            # Its state (WATCH, MULTI, SELECT) is gone with it: say so, never reconnect silently.
            raise type(conn.error)(*conn.error.args)
        return conn

    def _pack_batch(self, commands):
        self._batch_blocks = False  # not left over from a batch that failed to pack
        return [self._pack_in_batch(c) for c in commands]

    def _pack_in_batch(self, command):
        packed = pack(command)
        if _route(command[0], command, shared=False):
            self._batch_blocks = True
        return packed

    def _call_one(self, first, command, timeout):
        packed = pack(command)
        blocks = _route(first, command, shared=False)
        conn = self._conn()
        if not blocks:
            return conn.call(packed, timeout)
        conn.blocking += 1  # the caller asked to wait: silence is not death
        try:
            return conn.call(packed, timeout)
        finally:
            conn.blocking -= 1

    def _call_many(self, packed_list, timeout):
        blocks, self._batch_blocks = self._batch_blocks, False
        conn = self._conn()
        conn.blocking += blocks
        try:
            return conn.call_many(packed_list, timeout)
        finally:
            conn.blocking -= blocks

    def close(self):
        if self._connection is not None:
            self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _after_fork_in_child():
    # connection.py's hook abandons the inherited sockets; here each client forgets them.
    for client in list(_clients):
        client._shared = None
        client._reset_state()


os.register_at_fork(after_in_child=_after_fork_in_child)
