"""greenredis: Redis as the glue of a distributed system, for gevent.

Nothing here monkey-patches: scripts and apps call ``gevent.monkey.patch_all()`` first.
"""

import importlib

from .client import Dedicated, Redis
from .errors import ConnectionError, ProtocolError, RedisError, ReplyError, TimeoutError
from .pubsub import Message, Monitor, Subscription
from .server import RedisServer

# The larger parts load on first use, so `import greenredis` stays light.
_LAZY = {
    "Grid": ".grid",
    "GridEvent": ".gridview",
    "Replica": ".replica",
    "Stats": ".stats",
    "CappedLog": ".caplog",
    "RedisLogHandler": ".caplog",
}

__all__ = ["Redis", "Dedicated", "Subscription", "Monitor", "Message", "RedisServer",
           "RedisError", "ReplyError", "ConnectionError", "TimeoutError", "ProtocolError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'greenredis' has no attribute {name!r}")
