"""greenredis: Redis as the glue of a distributed system, for gevent.

Nothing here monkey-patches: scripts and apps call ``gevent.monkey.patch_all()`` first.
Every tool loads on first use, so ``import greenredis`` stays light and the pure parts
(``greenredis.replication.rdb``, ``.protocol``, ``.applier``, ``greenredis.grid.view``)
import without gevent.
"""

import importlib

from greenredis.errors import ConnectionError, DataError, ProtocolError, RedisError, ReplyError, TimeoutError

__version__ = "0.3.0"

# public name -> the module that defines it
_LAZY = {
    "Redis": "greenredis.client",
    "Cluster": "greenredis.client",
    "Dedicated": "greenredis.client",
    "Subscription": "greenredis.client",
    "Monitor": "greenredis.client",
    "Message": "greenredis.client",
    "Sentinel": "greenredis.client",
    "RedisServer": "greenredis.server",
    "RedisCluster": "greenredis.server",
    "Grid": "greenredis.grid",
    "GridEvent": "greenredis.grid",
    "Replica": "greenredis.replication",
    "Stats": "greenredis.telemetry",
    "CappedLog": "greenredis.telemetry",
    "RedisLogHandler": "greenredis.telemetry",
}

__all__ = [
    "RedisError", "ReplyError", "ConnectionError", "TimeoutError", "ProtocolError", "DataError", *_LAZY
]  # fmt: skip


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'greenredis' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
