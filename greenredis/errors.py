"""The exceptions greenredis raises. Every one is a RedisError."""


class RedisError(Exception):
    """Base class of every greenredis error."""


class ReplyError(RedisError):
    """Redis answered with an error reply (``-ERR ...``).

    In a batch the error is returned in place of the reply instead of raised.
    """


class ConnectionError(RedisError):
    """The connection could not be made, or broke with the command in flight."""


class TimeoutError(RedisError):
    """No reply came within the call's timeout; a late reply is discarded."""


class ProtocolError(RedisError):
    """The peer sent bytes that are not RESP; the connection is reset."""
