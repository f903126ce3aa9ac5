"""greenredis: Redis as the glue of a distributed system, for gevent.

Nothing here monkey-patches: scripts and apps call ``gevent.monkey.patch_all()`` first.
"""

from .client import Dedicated, Redis
from .errors import ConnectionError, ProtocolError, RedisError, ReplyError, TimeoutError
from .pubsub import Message, Monitor, Subscription
from .server import RedisServer

__all__ = ["Redis", "Dedicated", "Subscription", "Monitor", "Message", "RedisServer",
           "RedisError", "ReplyError", "ConnectionError", "TimeoutError", "ProtocolError"]
__version__ = "0.1.0"
