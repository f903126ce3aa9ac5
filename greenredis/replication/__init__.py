"""A replication client: poses as a Redis replica and keeps a local copy.

Pure, fed bytes: ``protocol`` (the replica side of the replication protocol), ``rdb``
(the snapshot parser), ``applier`` (the command stream), over the data model in
``keyspace``. ``replica`` is the gevent shell (``Replica``). The shell loads on first
use, so the pure parts import without gevent.
"""

import importlib

__all__ = ["Replica"]


def __getattr__(name):
    if name == "Replica":
        return importlib.import_module("greenredis.replication.replica").Replica
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
