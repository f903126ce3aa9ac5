"""Publish an instance's metrics for live graphs, with a capped history.

Key and channel names are in ``greenredis.telemetry.names``.
"""

import time

from greenredis.client.cluster_pubsub import publish_verb
from greenredis.errors import ReplyError
from greenredis.telemetry import names

__all__ = ["Stats"]


def as_client(redis):
    """A ``greenredis.Redis`` as given, or made from a URL (``redis+sentinel://`` too)."""
    if isinstance(redis, str):
        from greenredis.client.redis import Redis

        return Redis.from_url(redis)
    return redis


class Stats:
    """The metrics of one instance.

    ``history``: points kept per metric (oldest trimmed); ``ttl``: seconds the
    history keys live after the last point (None: forever), so instances that
    went away do not leave keys behind for good.

    ``redis``: a ``greenredis.Redis`` or a URL (``redis+sentinel://`` too).

    >>> stats = Stats(r, instance="web.1")
    >>> stats.publish("requests_per_sec", 231.5)
    >>> stats.publish("memory", 512, unit="MB")
    """

    def __init__(self, redis, instance, history=600, ttl=86400):
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive int, not {history!r}")
        self.redis = as_client(redis)
        self.instance = names.check_instance(instance)
        self.history_len = history
        self.ttl = ttl
        self.channel = names.stats_channel(instance)
        self._publish = publish_verb(
            self.redis
        )  # SPUBLISH on a cluster: the channel is in the instance's slot

    def publish(self, metric, value, ts=None, unit=None):
        """Publish one point and append it to the metric's capped history.

        ``unit``: an optional label (``"MB"``, ``"ms"``, ``"%"``) stored with the
        point, so live points and the history carry it and Tempo shows it.

        One pipelined batch (one round trip): PUBLISH (SPUBLISH on a cluster), LPUSH, LTRIM, SADD, ZADD
        (and EXPIREs). Returns how many subscribers got the point. Raises
        ValueError for a bad name, value or unit, ``greenredis.RedisError`` when Redis
        cannot be reached.
        """
        ts = time.time() if ts is None else ts
        data = names.encode_point(metric, value, ts, unit)
        hkey = names.history_key(self.instance, metric)
        mkey = names.metrics_key(self.instance)
        batch = [
            [self._publish, self.channel, data],
            ["LPUSH", hkey, data],
            ["LTRIM", hkey, 0, self.history_len - 1],
            ["SADD", mkey, metric],
            ["ZADD", names.INSTANCES, repr(float(ts)), self.instance],
        ]
        if self.ttl:
            batch += [["EXPIRE", hkey, int(self.ttl)], ["EXPIRE", mkey, int(self.ttl)]]
        replies = self.redis.cmd(batch)
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        return replies[0]

    def metrics(self):
        """The sorted metric names this instance has published."""
        return sorted(m.decode() for m in self.redis.cmd(["SMEMBERS", names.metrics_key(self.instance)]))

    def history(self, metric, n=None):
        """Up to ``n`` (default: all kept) recent points of ``metric``, oldest first."""
        return read_history(self.redis, self.instance, [metric], n)[metric]

    def snapshot(self, n=None):
        """``{metric: [points, oldest first]}`` for every metric: two round trips."""
        return read_history(self.redis, self.instance, self.metrics(), n)


def read_history(redis, instance, metrics, n=None):
    """``{metric: [point dicts oldest first]}`` in one batch; malformed entries skipped."""
    metrics = list(metrics)
    if not metrics:
        return {}
    if n is not None and n <= 0:
        return {m: [] for m in metrics}
    stop = -1 if n is None else max(int(n), 1) - 1
    replies = redis.cmd([["LRANGE", names.history_key(instance, m), 0, stop] for m in metrics])
    out = {}
    for metric, reply in zip(metrics, replies):
        if isinstance(reply, ReplyError):  # not a list: someone else's key
            out[metric] = []
            continue
        points = []
        for raw in reversed(reply):
            try:
                points.append(names.decode_point(raw))
            except ValueError:
                continue
        out[metric] = points
    return out


def instance_metrics(redis, instances):
    """``{instance: [metric names]}`` for many instances in one batch."""
    instances = list(instances)
    if not instances:
        return {}
    replies = redis.cmd([["SMEMBERS", names.metrics_key(i)] for i in instances])
    return {
        i: sorted(m.decode() for m in r) if not isinstance(r, ReplyError) else []
        for i, r in zip(instances, replies)
    }
