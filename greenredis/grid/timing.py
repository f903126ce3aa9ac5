"""Grid timing from the environment, shared by instances and Tempo's observer."""

import math
import os

__all__ = ["GRID_TTL", "GRID_INTERVAL", "grid_timing"]

#: Default grid timing shared by the instances and Tempo's observer: a node is
#: gone GRID_TTL seconds after its last beat; it beats every GRID_INTERVAL.
GRID_TTL = 30.0
GRID_INTERVAL = 5.0


def grid_timing(env=None):
    """``(ttl, interval)`` from ``$GRID_TTL``/``$GRID_INTERVAL`` (default 30, 5).

    Instances and the dashboard both read this, so a crashed node leaves every
    view after the same ``ttl``. ValueError unless ``ttl > 2 * interval > 0``.
    """
    env = os.environ if env is None else env
    try:
        ttl = float(env.get("GRID_TTL") or GRID_TTL)
        interval = float(env.get("GRID_INTERVAL") or GRID_INTERVAL)
    except ValueError:
        raise ValueError(
            f"GRID_TTL={env.get('GRID_TTL')!r} and GRID_INTERVAL={env.get('GRID_INTERVAL')!r} must be numbers"
        ) from None
    if not (interval > 0 and math.isfinite(ttl) and ttl > 2 * interval):
        raise ValueError(f"need GRID_TTL > 2 * GRID_INTERVAL > 0, not ttl={ttl:g} interval={interval:g}")
    return ttl, interval
