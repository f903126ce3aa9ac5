"""Node discovery and a health registry through Redis hashes, TTLs and pub/sub.

``view`` is pure (the grid as one node sees it, fed registrations and messages);
``node`` is the gevent shell (``Grid``: heartbeat and listener greenlets). The shell
loads on first use, so the pure view imports without gevent.
"""

import importlib

from greenredis.grid.view import GridDataError, GridEvent, GridView, Layout

__all__ = ["Grid", "GridEvent", "GridView", "GridDataError", "Layout"]


def __getattr__(name):
    if name == "Grid":
        return importlib.import_module("greenredis.grid.node").Grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
