"""Every Redis key and pub/sub channel that stats, logs and Tempo use, in one place.

An instance is a process that publishes stats and writes logs (``web.1``,
``host:1234``). Its name sits inside ``{...}`` in every key, which makes the
layout unambiguous (names may contain ``:``) and keeps all of one instance's
keys in one Redis Cluster slot.

=================================  =======  =============================================
name                               type     holds
=================================  =======  =============================================
``stats:{<instance>}``             channel  every point the instance publishes (JSON)
``stats:{<instance>}:metrics``     set      the instance's metric names
``stats:{<instance>}:h:<metric>``  list     the metric's recent points, newest first, capped
``stats:instances``                zset     instance -> unix time of its last point
``logs:{<instance>}``              list     the instance's log lines, newest first, capped
``logs:{<instance>}``              channel  the same lines as they are appended (``follow``)
=================================  =======  =============================================

Keys and channels live in separate namespaces in Redis, so a log list and its
live channel share one name.

A point is a JSON object ``{"metric": "rps", "ts": 1764133307.25, "value": 231.5}``:
``ts`` is unix time in seconds (float), ``value`` a finite number; an optional
``"unit"`` (``"MB"``, ``"ms"``, ``"req/s"``: 1-16 of ``A-Z a-z 0-9 _ . / % - µ``)
labels the value. History entries are the same objects.
"""

import json
import math
import re

__all__ = [
    "INSTANCES",
    "stats_channel",
    "metrics_key",
    "history_key",
    "log_key",
    "log_channel",
    "check_instance",
    "check_metric",
    "check_unit",
    "encode_point",
    "decode_point",
    "instance_of_channel",
    "FOLLOW_MARK",
]

#: zset of every instance that published a point: member = name, score = unix time.
INSTANCES = "stats:instances"

#: Payload prefix of the markers ``CappedLog.follow`` publishes on a log channel to
#: line its backlog up with the live lines; readers skip payloads that start with it.
FOLLOW_MARK = "\x00follow:"

MAX_NAME = 200
# printable, no whitespace, no braces (they delimit the name inside keys), no
# slash (a name is one segment of the dashboard's URLs)
_INSTANCE_RE = re.compile(rf"[^\s{{}}/\x00-\x1f\x7f]{{1,{MAX_NAME}}}")
_METRIC_RE = re.compile(r"[A-Za-z0-9_.:/%-]{1,100}")
UNIT_RE = re.compile(r"[A-Za-z0-9_./%µ-]{1,16}")


def check_instance(name):
    """Return ``name`` if it is a valid instance name, else raise ValueError.

    Valid: 1-200 printable characters without whitespace, ``{}`` or ``/``.
    """
    if not isinstance(name, str) or not _INSTANCE_RE.fullmatch(name):
        raise ValueError(
            f"bad instance name {name!r}: 1-{MAX_NAME} printable characters, no whitespace, braces or slash"
        )
    return name


def check_metric(name):
    """Return ``name`` if it is a valid metric name, else raise ValueError.

    Valid: 1-100 of ``A-Z a-z 0-9 _ . : / % -``.
    """
    if not isinstance(name, str) or not _METRIC_RE.fullmatch(name):
        raise ValueError(f"bad metric name {name!r}: 1-100 of A-Z a-z 0-9 _ . : / % -")
    return name


def check_unit(unit):
    """Return ``unit`` if it is a valid unit label (or None), else raise ValueError.

    Valid: 1-16 of ``A-Z a-z 0-9 _ . / % - µ`` (``MB``, ``ms``, ``req/s``, ``%``).
    """
    if unit is not None and (not isinstance(unit, str) or not UNIT_RE.fullmatch(unit)):
        raise ValueError(f"bad unit {unit!r}: 1-16 of A-Z a-z 0-9 _ . / % - µ")
    return unit


def stats_channel(instance):
    """The channel every point of ``instance`` is published on."""
    return f"stats:{{{check_instance(instance)}}}"


def metrics_key(instance):
    """The set of metric names of ``instance``."""
    return f"stats:{{{check_instance(instance)}}}:metrics"


def history_key(instance, metric):
    """The capped list of recent points of one metric, newest first."""
    return f"stats:{{{check_instance(instance)}}}:h:{check_metric(metric)}"


def log_key(instance):
    """The capped list of log lines of ``instance``, newest first."""
    return f"logs:{{{check_instance(instance)}}}"


def log_channel(key):
    """The channel a log list's new lines are published on: the key's own name."""
    return key


_CHANNEL_RE = re.compile(r"(stats|logs):\{([^{}]+)\}")


def instance_of_channel(channel):
    """``b"stats:{web.1}"`` -> ``("stats", "web.1")``; None for any other channel."""
    if isinstance(channel, bytes):
        channel = channel.decode("utf-8", "replace")
    m = _CHANNEL_RE.fullmatch(channel)
    return (m.group(1), m.group(2)) if m else None


def encode_point(metric, value, ts, unit=None):
    """The JSON text of one point; raises ValueError for a bad metric, value or unit."""
    check_metric(metric)
    check_unit(unit)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"value of {metric!r} must be a number, not {value!r}")
    try:
        finite = math.isfinite(value) and math.isfinite(ts)
    except OverflowError:  # an int beyond a float's range (10**400)
        finite = False
    if not finite:
        raise ValueError(f"value and ts of {metric!r} must be finite")
    point = {"metric": metric, "ts": round(float(ts), 6), "value": value}
    if unit is not None:
        point["unit"] = unit
    return json.dumps(point, separators=(",", ":"), ensure_ascii=False)


def decode_point(data):
    """Parse a point published or stored by ``encode_point``; ValueError if malformed."""
    try:
        point = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # "[[[[..." nests too deep
        raise ValueError(f"point is not JSON: {e}") from None
    if not isinstance(point, dict):
        raise ValueError("point is not a JSON object")
    metric, ts, value = point.get("metric"), point.get("ts"), point.get("value")
    check_metric(metric)
    for v in (ts, value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"point has a bad ts or value: {point!r}")
    out = {"metric": metric, "ts": ts, "value": value}
    unit = point.get("unit")
    if unit is not None:
        check_unit(unit)
        out["unit"] = unit
    return out
