"""The exceptions greenredis raises. Every one is a RedisError.

A Redis error reply becomes a ``ReplyError``, or the subclass its first word names
(``reply_error`` picks it), so callers can tell a read-only replica from a missing
permission without parsing messages.
"""

from __future__ import annotations


class RedisError(Exception):
    """Base class of every greenredis error."""


class ReplyError(RedisError):
    """Redis answered with an error reply (``-ERR ...``).

    In a batch the error is returned in place of the reply instead of raised.
    """

    @property
    def prefix(self) -> str:
        """The error code Redis put first: ``"ERR"``, ``"WRONGTYPE"``, ``"NOPERM"``, ..."""
        message = str(self.args[0]) if self.args else ""
        return message.split(" ", 1)[0]


class ConnectionError(RedisError):
    """The connection could not be made, or broke with the command in flight."""


class TimeoutError(RedisError):
    """No reply came within the call's timeout; a late reply is discarded."""


class ProtocolError(RedisError):
    """The peer sent bytes that are not RESP; the connection is reset."""


class DataError(RedisError, TypeError):
    """An argument Redis has no form for (a bool, as redis-py's ``DataError``): nothing
    was sent. A ``TypeError`` too, as greenredis raised before it had this name."""


class AuthenticationError(ConnectionError):
    """AUTH failed at connect (``WRONGPASS``, ``NOAUTH``): the connection is unusable."""


class SetupRefusedError(ConnectionError):
    """A new connection's ``SELECT`` or ``CLIENT SETNAME`` was refused (a db out of range, an
    ACL without SELECT): the options are wrong, so no other server or retry would help."""


class MasterNotFoundError(ConnectionError):
    """No sentinel knows a master by that name (or none could be reached that does)."""


class NoPermissionError(ReplyError):
    """``-NOPERM``: the ACL user may not run this command or touch this key or channel."""


class ReadOnlyError(ReplyError):
    """``-READONLY``: a write reached a replica (after a failover, the old master)."""


class BusyLoadingError(ReplyError):
    """``-LOADING``: the server is loading its dataset; try again later."""


class BusyError(ReplyError):
    """``-BUSY``: a script or function is running too long."""


class ExecAbortError(ReplyError):
    """``-EXECABORT``: a transaction was discarded because a command in it was refused."""


class ClusterRedirect(ReplyError):
    """``-MOVED``/``-ASK``: the slot lives on another node (``slot``, ``host``, ``port``)."""

    @property
    def slot(self) -> int:
        return int(str(self.args[0]).split()[1])

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = str(self.args[0]).split()[2].rpartition(":")
        return host, int(port)


class MovedError(ClusterRedirect):
    """``-MOVED slot host:port``: the slot moved for good; update the slot map."""


class AskError(ClusterRedirect):
    """``-ASK slot host:port``: the slot is migrating; ask the target once."""


class TooManyClientsError(ConnectionError, ReplyError):
    """``-ERR max number of clients reached``: the server refused the connection (and closed it)."""


class WatchError(RedisError):
    """A transaction on ``dedicated()`` was aborted: a WATCHed key changed (EXEC gave nil)."""


_BY_PREFIX: dict[str, type[ReplyError]] = {
    "NOPERM": NoPermissionError,
    "READONLY": ReadOnlyError,
    "LOADING": BusyLoadingError,
    "BUSY": BusyError,
    "EXECABORT": ExecAbortError,
    "MOVED": MovedError,
    "ASK": AskError,
}


def reply_error(message: str) -> ReplyError:
    """The ``ReplyError`` (or subclass, by the message's first word) for an error reply."""
    prefix = message.split(" ", 1)[0]
    if prefix == "ERR" and message.startswith("ERR max number of clients"):
        return TooManyClientsError(message)
    return _BY_PREFIX.get(prefix, ReplyError)(message)
