"""What instances import to be seen on the dashboard: ``Stats`` (metric points with a
capped history), ``CappedLog`` and ``RedisLogHandler``, and the key and channel names
they share with Tempo (``names``). No Flask here."""

from greenredis.telemetry.caplog import CappedLog, RedisLogHandler
from greenredis.telemetry.stats import Stats

__all__ = ["Stats", "CappedLog", "RedisLogHandler"]
