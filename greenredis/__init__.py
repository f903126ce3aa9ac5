"""greenredis: Redis as the glue of a distributed system, for gevent.

Nothing here monkey-patches: scripts and apps call ``gevent.monkey.patch_all()`` first.
"""

from .errors import ConnectionError, ProtocolError, RedisError, ReplyError, TimeoutError

__all__ = ["RedisError", "ReplyError", "ConnectionError", "TimeoutError", "ProtocolError"]
__version__ = "0.1.0"
