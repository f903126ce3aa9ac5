"""Where a ``Replica``'s master is, from Redis Sentinel: a locator on ``greenredis.Sentinel``.

``Replica("redis+sentinel://...")`` makes one. Before each connection it asks the
Sentinel for the master, confirmed with ``ROLE`` (waiting through a failover up to
``failover_timeout``), and it passes every switch the Sentinel applies (``+switch-master``
from any sentinel, the leader's earlier ``+promoted-slave``, a re-discovery; its
``on_switch``) to the replica, which then continues from the new master with a partial
resync.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from greenredis.client.sentinel import Sentinel
from greenredis.url import ConnectionParams, parse_sentinel_url

__all__ = ["SentinelLocator"]

log = logging.getLogger("greenredis.replica")

Watcher = Callable[[str, int], Any]


class SentinelLocator:
    """The master of a ``redis+sentinel://`` URL's service, for ``Replica(locator=...)``.

    ``params``: the data nodes' connection options from the URL (password, TLS...).
    The sentinel connections are made at first use and ended by ``close()`` (a later use
    makes them again).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = parse_sentinel_url(url)
        self.service = parsed.service
        self.params: ConnectionParams = parsed.params
        self._parsed = parsed
        self._sentinel: Optional[Sentinel] = None
        self._watchers: list[Watcher] = []
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parsed.sentinels)
        self.name = f"{self.service!r} via sentinels {hosts}"

    @property
    def sentinel(self) -> Sentinel:
        if self._sentinel is None:
            p = self._parsed
            sentinel = self._sentinel = Sentinel(p.sentinels, **p.sentinel_options())
            # the subscriptions start: a switch must reach the watch() callbacks
            sentinel.on_switch(lambda service, old, new: self._switched(sentinel, service, new))
        return self._sentinel

    def _switched(self, sentinel: Sentinel, service: str, new: tuple[str, int]) -> None:
        if service != self.service or sentinel is not self._sentinel:
            return  # another service, or a switch a closed Sentinel applied
        for callback in list(self._watchers):
            try:
                callback(*new)
            except Exception:
                log.exception("a watcher of %r failed on a switch; ignored", service)

    def master_address(self) -> tuple[str, int]:
        """The master's ``(host, port)``, confirmed with ROLE; ConnectionError when no
        sentinel answers (naming them) or no master answers within failover_timeout."""
        sentinel = self.sentinel
        sentinel._watch()  # listening again in a forked child
        conn = sentinel._connect_master(self.service, self.params, None)
        try:
            return conn.params.host, conn.params.port
        finally:
            conn.close()

    def watch(self, callback: Watcher) -> Callable[[], None]:
        """Call ``callback(host, port)`` on each switch of master; returns the unwatch."""
        sentinel = self.sentinel
        self._watchers.append(callback)

        def unwatch() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)
            if not self._watchers and sentinel is self._sentinel:
                self.close()

        return unwatch

    def close(self) -> None:
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            sentinel.close()

    def __repr__(self) -> str:
        return f"<SentinelLocator {self.name}>"
