"""``Redis``: the pipelined client. Every greenlet that shares one ``Redis``
shares one connection; ``cmd`` takes a command or a list of commands."""

from time import monotonic

from gevent.lock import Semaphore

from greenredis.backoff import Backoff
from greenredis.client.connection import open_connection, pack
from greenredis.errors import ConnectionError, ReplyError
from greenredis.url import ConnectionParams, parse_url

__all__ = ["Redis", "Dedicated"]

_DEFAULT = object()

_MAX_IDLE_DEDICATED = 8


def _both(names):
    """Upper-case names as str and as bytes, so a lookup needs no encoding."""
    return {**names, **{n.encode(): v for n, v in names.items()}}


# Commands that would stall the shared connection: they run on a dedicated one.
_BLOCKING = _both(
    dict.fromkeys("BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP WAIT WAITAOF".split())
)
_MAYBE_BLOCKING = _both(dict.fromkeys(("XREAD", "XREADGROUP")))  # with BLOCK
_USE_TRANSACTION = "use transaction([...]) or a dedicated() connection"
_USE_DEDICATED = "WATCH needs a connection of its own: use `with r.dedicated() as c:`"
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
        "SSUBSCRIBE": "sharded pub/sub is not supported; use r.subscribe(...)",
        "UNSUBSCRIBE": "use the Subscription's unsubscribe()",
        "PUNSUBSCRIBE": "use the Subscription's punsubscribe()",
        "MONITOR": "use r.monitor()",
        "SELECT": "the db is fixed per client: Redis(db=N) or redis://host/N",
        "RESET": "RESET would drop the shared connection's AUTH and SELECT",
        "HELLO": "the client speaks RESP2",
        "QUIT": "use r.close()",
    }
)
_CLIENT = frozenset(("CLIENT", b"CLIENT"))
_REPLY = frozenset(("REPLY", b"REPLY"))
_ON = frozenset(("ON", b"ON", "on", b"on"))
_SPECIAL = frozenset(_BLOCKING) | frozenset(_MAYBE_BLOCKING) | frozenset(_REFUSED) | _CLIENT


def _blocks(name, command):
    if name in _BLOCKING:
        return True
    return name in _MAYBE_BLOCKING and any(
        a.__class__ in (str, bytes) and a.upper() in ("BLOCK", b"BLOCK") for a in command[1:]
    )


def _route(first, command, shared):
    """True for a command that blocks (it needs a connection of its own); raises
    ValueError for one that cannot run here (``shared``: on the shared connection)."""
    if first.__class__ is not str and first.__class__ is not bytes:
        return False  # pack() says what is wrong with it
    name = first.upper()
    if name not in _SPECIAL:
        return False
    if (
        name in _CLIENT
        and len(command) > 2
        and command[1].__class__ in (str, bytes)
        and command[1].upper() in _REPLY
        and command[2] not in _ON
    ):
        raise ValueError(
            "CLIENT REPLY OFF/SKIP would leave callers without their replies: "
            "greenredis pairs every command with its reply"
        )
    if not shared:
        return False
    if _blocks(name, command):
        return True
    if name in _REFUSED:
        raise ValueError(f"{first} cannot run on the shared connection: {_REFUSED[name]}")  # type: ignore[str-bytes-safe]
    return False


class _Commands:
    """``cmd`` and ``transaction`` over the connection ``_conn()`` gives."""

    timeout = None

    def cmd(self, command, timeout=_DEFAULT):
        """Run one command (``["GET", "k"]``) and return its reply, raising ``ReplyError``;
        or run a list of commands in one round trip and return their replies, with
        errors in place as ``ReplyError`` instances."""
        if timeout is _DEFAULT:
            timeout = self.timeout
        first = _first(command)
        if first.__class__ is list or first.__class__ is tuple:
            return self._conn().call_many([self._pack_in_batch(c) for c in command], timeout)
        reply = self._call_one(first, command, timeout)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def transaction(self, commands, timeout=_DEFAULT):
        """Run commands inside MULTI/EXEC as one contiguous write; return EXEC's replies
        (errors in place). Raises ``ReplyError`` if Redis refused to queue one (EXECABORT)."""
        if timeout is _DEFAULT:
            timeout = self.timeout
        if _first(commands).__class__ not in (list, tuple):
            raise ValueError("transaction() takes a list of commands")
        packed = [self._pack_in_batch(c) for c in commands]
        replies = self._conn().call_many([_MULTI, *packed, _EXEC], timeout)
        result = replies[-1]
        if isinstance(result, ReplyError):
            queued = [f"command {i}: {r}" for i, r in enumerate(replies[1:-1]) if isinstance(r, ReplyError)]
            raise type(result)(f"{result} ({'; '.join(queued)})" if queued else str(result))
        if result is None:
            raise ReplyError("EXEC aborted: a WATCHed key changed")
        return result

    def _pack_in_batch(self, command):
        packed = pack(command)
        _route(command[0], command, shared=False)
        return packed

    def _call_one(self, first, command, timeout):
        packed = pack(command)
        _route(first, command, shared=False)
        return self._conn().call(packed, timeout)


def _first(command):
    try:
        return command[0]
    except (IndexError, TypeError, KeyError):
        raise ValueError(f"a command is a non-empty list of arguments, not {command!r}") from None


_MULTI = pack(("MULTI",))
_EXEC = pack(("EXEC",))


class Redis(_Commands):
    """A Redis client for gevent: all greenlets share one pipelined connection.

    ``Redis(host=, port=, db=, username=, password=, ssl=, ssl_ca_certs=,
    unix_socket_path=, timeout=, connect_timeout=, dead_after=, client_name=)``
    or ``Redis.from_url(url, **same)``. ``timeout`` is the default per-call timeout
    (None: wait while the connection lives; a connection with replies outstanding
    and silent for ``dead_after`` seconds is declared dead).
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
            unix_socket_path=unix_socket_path,
            timeout=timeout,
            connect_timeout=connect_timeout,
            dead_after=dead_after,
            client_name=client_name,
        )
        self.timeout = self.params.timeout
        self._shared = None
        self._connecting = Semaphore()
        self._backoff = Backoff(0.05, 2.0)
        self._retry_at = 0.0
        self._last_error = None
        self._idle = []  # connections kept for blocking commands
        self._busy = set()  # connections running a blocking command now
        self.closed = False

    @classmethod
    def from_url(cls, url=None, **options):
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or ``unix:///path``;
        ``url`` defaults to ``$REDIS_URL``. Keyword options override the URL's."""
        return cls(params=parse_url(url, **options))

    def __repr__(self):
        return f"<Redis {self.params.address} db={self.params.db}>"

    # -- routing ---------------------------------------------------------

    def _call_one(self, first, command, timeout):
        packed = pack(command)
        if _route(first, command, shared=True):
            return self._blocking_call(packed, timeout)
        return self._conn().call(packed, timeout)

    def _pack_in_batch(self, command):
        packed = pack(command)
        if _route(command[0], command, shared=True):
            raise ValueError(f"{command[0]} blocks: run it alone with cmd([...]), not in a batch")
        return packed

    # -- connections -----------------------------------------------------

    def _conn(self):
        conn = self._shared
        if conn is not None and conn.error is None:
            return conn
        with self._connecting:
            conn = self._shared
            if conn is None or conn.error is not None:
                conn = self._shared = self._open()
        return conn

    def _open(self, on_push=None, blocking=False):
        """A new connection, honouring the reconnect backoff after failures. A blocking
        command's connection has no dead-connection watchdog: silence is its job."""
        if self.closed:
            raise ConnectionError("client is closed")
        wait = self._retry_at - monotonic()
        if wait > 0:
            raise ConnectionError(
                f"{self.params.address} unreachable, next attempt in {wait:.2f}s "
                f"(last error: {self._last_error})"
            )
        try:
            params = self.params.replace(dead_after=None) if blocking else self.params
            conn = open_connection(params, on_push=on_push)
        except ConnectionError as e:
            self._last_error = e
            self._retry_at = monotonic() + self._backoff.failure()
            raise
        self._backoff.reset()
        self._retry_at = 0.0
        return conn

    def _blocking_call(self, packed, timeout):
        conn = None
        while self._idle and conn is None:
            conn = self._idle.pop()
            if conn.error is not None:  # died while idle (server restart, idle timeout)
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
        """A connection of its own, for WATCH/MULTI/EXEC and other stateful use:
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
    """A connection used by one greenlet at a time: any command goes, MULTI and WATCH included."""

    def __init__(self, redis):
        self.redis = redis
        self.timeout = redis.timeout
        self._connection = None

    def _conn(self):
        conn = self._connection
        if conn is None:
            conn = self._connection = self.redis._open()
        elif conn.error is not None:
            # Its state (WATCH, MULTI, SELECT) is gone with it: say so, never reconnect silently.
            raise type(conn.error)(*conn.error.args)
        return conn

    def close(self):
        if self._connection is not None:
            self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
