"""The instances Tempo shows: the grid's registry merged with who publishes stats.

``merge`` is pure: it turns the grid's health map, the stats instances and
their metric names into the snapshot the pages show. ``Registry`` is the
gevent shell: it re-reads the stats side from Redis every ``refresh`` seconds
(the grid side is local, no I/O), wakes up early on grid events, and calls
``on_change(snapshot)`` when the snapshot changed.
"""

import logging
import os
import time

import gevent
import gevent.event

from greenredis.errors import RedisError
from greenredis.errors import TimeoutError as NoAnswer
from greenredis.telemetry import names
from greenredis.telemetry.stats import instance_metrics

__all__ = ["Registry", "merge"]

log = logging.getLogger("greenredis.tempo")

HEALTH = ("up", "stale", "gone")


def merge(
    health,
    stats_seen,
    metrics,
    now,
    grid_stale=False,
    redis_ok=True,
    up_within=15.0,
    stale_within=60.0,
    gone_after=None,
):
    """The snapshot: ``{"stale", "redis", "nodes": [...]}``, nodes sorted by name.

    health: ``Grid.health()`` (``{name: {"state", "meta", ...}}``) or None without a
    grid; stats_seen: ``{instance: unix time of its last point}``; metrics:
    ``{instance: [names]}``. Grid nodes take their state from the grid. An
    instance that only publishes stats is "up" if its last point is newer than
    ``up_within`` seconds, "stale" within ``stale_within``, else "gone".
    ``gone_after``: a "gone" node whose last sign of life (``gone_at``, last beat or
    point) is older than this many seconds is left out (None: kept).
    """
    nodes = {}
    for name, h in (health or {}).items():
        nodes[name] = {
            "name": name,
            "meta": dict(h.get("meta") or {}),
            "health": h.get("state", "up"),
            "grid": True,
            "last_seen": h.get("last_seen"),
            "gone_at": h.get("gone_at"),
        }
    for name, ts in stats_seen.items():
        node = nodes.get(name)
        if node is None:
            age = now - ts
            state = "up" if age <= up_within else "stale" if age <= stale_within else "gone"
            node = nodes[name] = {"name": name, "meta": {}, "health": state, "grid": False, "last_seen": ts}
        node["last_point"] = ts
    for name, node in nodes.items():
        node["metrics"] = list(metrics.get(name, ()))
        node.setdefault("last_point", None)
        if node["health"] not in HEALTH:
            node["health"] = "up"
    if gone_after is not None:
        for name in [n for n, node in nodes.items() if node["health"] == "gone"]:
            node = nodes[name]
            signs = [t for t in (node.get("gone_at"), node["last_seen"], node["last_point"]) if t]
            if not signs or now - max(signs) > gone_after:
                del nodes[name]
    return {
        "stale": bool(grid_stale) or not redis_ok,
        "redis": bool(redis_ok),
        "nodes": [nodes[n] for n in sorted(nodes)],
    }


class Registry:
    """What ``/`` lists, kept current in a greenlet. ``grid``: a started ``Grid``
    (or None: instances come from the stats alone). ``recent``: how far back a
    stats-only instance is still listed (seconds). ``gone_after``: seconds a gone
    instance stays listed (default ``$TEMPO_GONE_AFTER`` or 3600). ``read_timeout``: a
    read that gets no answer within it counts as Redis being down (a hung or paused
    server would otherwise keep the pages "live" until the client's dead_after)."""

    def __init__(
        self,
        redis,
        grid=None,
        refresh=2.0,
        recent=3600.0,
        max_instances=1000,
        forget_after=86400.0,
        gone_after=None,
        read_timeout=5.0,
    ):
        if gone_after is None:
            raw = os.environ.get("TEMPO_GONE_AFTER") or "3600"
            try:
                gone_after = float(raw)
            except ValueError:
                raise ValueError(f"TEMPO_GONE_AFTER must be a number of seconds, not {raw!r}") from None
        if not gone_after > 0:
            raise ValueError(f"gone_after must be positive seconds, not {gone_after!r}")
        self.gone_after = float(gone_after)
        self.read_timeout = read_timeout
        self.redis = redis
        self.grid = grid
        self.refresh = refresh
        self.recent = recent
        self.max_instances = max_instances
        self.forget_after = forget_after  # drop from stats:instances (Stats' default ttl)
        self._next_trim = 0.0
        self.on_change = None
        self._stats_seen = {}
        self._metrics = {}
        self._redis_ok = True
        self._snapshot = merge({}, {}, {}, time.time())
        self._wake = gevent.event.Event()
        self._greenlets = []

    def start(self):
        if not self._greenlets:
            if self.grid is not None and hasattr(self.grid, "wait"):
                self.grid.wait(2.0)  # the first page shows the grid, not a half-loaded view
            self._update(read=True)
            self._greenlets.append(gevent.spawn(self._loop))
            if self.grid is not None:
                self._greenlets.append(gevent.spawn(self._grid_events))
        return self

    def stop(self):
        gevent.killall(self._greenlets)
        self._greenlets = []

    def snapshot(self):
        """The latest snapshot (no I/O)."""
        return self._snapshot

    def message(self):
        return {"type": "grid", **self._snapshot}

    def is_known(self, name):
        """Whether ``name`` is in the grid or has published stats (asks Redis if unsure;
        True when Redis cannot be asked)."""
        if self.grid is not None and name in self.grid.nodes():
            return True
        if name in self._stats_seen:
            return True
        try:
            # bounded: a Sentinel client waits out a failover, a page must not
            return self.redis.cmd(["ZSCORE", names.INSTANCES, name], timeout=self.read_timeout) is not None
        except RedisError:
            # Cannot tell while Redis is away: let the page watch (still only this
            # instance's stats/logs channels); it fills in once Redis is back.
            return True

    def _grid_events(self):
        for _event in self.grid.events():
            self._wake.set()

    def _loop(self):
        next_read = time.monotonic() + self.refresh
        while True:
            self._wake.wait(max(0.0, min(1.0, next_read - time.monotonic())))
            self._wake.clear()
            read = time.monotonic() >= next_read
            if read:
                next_read = time.monotonic() + self.refresh
            try:
                self._update(read)
            except Exception:
                log.exception("tempo registry update failed")

    def _update(self, read):
        if read:
            timer = gevent.Timeout(
                self.read_timeout, NoAnswer(f"no answer from Redis within {self.read_timeout:g} s")
            )
            timer.start()
            try:
                since = time.time() - max(self.recent, self.gone_after)
                reply = self.redis.cmd(
                    [
                        "ZRANGE",
                        names.INSTANCES,
                        "+inf",
                        since,
                        "BYSCORE",
                        "REV",
                        "LIMIT",
                        0,
                        self.max_instances,
                        "WITHSCORES",
                    ]
                )
                seen = {}
                for i in range(0, len(reply), 2):
                    name = reply[i].decode("utf-8", "replace")
                    try:
                        names.check_instance(name)
                    except ValueError:
                        continue
                    seen[name] = float(reply[i + 1])
                known = set(seen) | set(self.grid.nodes() if self.grid is not None else ())
                known = {n for n in known if _valid(n)}
                self._metrics = instance_metrics(self.redis, sorted(known))
                if time.monotonic() >= self._next_trim:
                    # instances silent for longer than the history TTL have no keys left
                    self.redis.cmd(
                        ["ZREMRANGEBYSCORE", names.INSTANCES, "-inf", time.time() - self.forget_after]
                    )
                    self._next_trim = time.monotonic() + 60.0
                self._stats_seen = seen
                self._redis_ok = True
            except RedisError as e:
                if self._redis_ok:
                    log.warning("tempo: cannot read the stats instances: %s", e)
                self._redis_ok = False
            finally:
                timer.close()
        health = self.grid.health() if self.grid is not None else None
        snap = merge(
            health,
            self._stats_seen,
            self._metrics,
            time.time(),
            grid_stale=self.grid is not None and self.grid.stale,
            redis_ok=self._redis_ok,
            gone_after=self.gone_after,
        )
        if _comparable(snap) != _comparable(self._snapshot):
            self._snapshot = snap
            if self.on_change is not None:
                self.on_change(snap)
        else:
            self._snapshot = snap


def _valid(name):
    try:
        names.check_instance(name)
        return True
    except ValueError:
        return False


def _comparable(snap):
    # last_seen / last_point move every second; health changes are what matter
    return (
        snap["stale"],
        snap["redis"],
        [(n["name"], n["health"], sorted(n["meta"].items()), n["metrics"]) for n in snap["nodes"]],
    )
