"""Retry delays: exponential with jitter, the one policy every reconnect loop uses.

Jitter matters: after a Redis restart, 200 grid nodes that all doubled from the
same start would otherwise reconnect in lock-step.
"""

from __future__ import annotations

import random
from typing import Callable

__all__ = ["delay", "Backoff", "RECONNECT_LONGEST", "reconnect"]


def delay(
    failures: int, first: float, most: float, jitter: float = 0.2, rand: Callable[[], float] = random.random
) -> float:
    """The wait after ``failures`` consecutive failures (1 for the first):
    ``first * 2 ** (failures - 1)``, capped at ``most``, then scaled by a random
    factor in ``[1 - jitter, 1 + jitter)``. 0 when ``failures < 1``."""
    if failures < 1:
        return 0.0
    base = min(most, first * 2.0 ** min(failures - 1, 64))
    return base * (1.0 - jitter + 2.0 * jitter * rand())


class Backoff:
    """Consecutive failures and the delay they call for.

    ``failure()`` counts one and returns how long to wait; ``reset()`` after a success.
    """

    __slots__ = ("first", "most", "jitter", "failures")

    def __init__(self, first: float = 0.05, most: float = 2.0, jitter: float = 0.2) -> None:
        self.first, self.most, self.jitter = first, most, jitter
        self.failures = 0

    def failure(self) -> float:
        self.failures += 1
        return delay(self.failures, self.first, self.most, self.jitter)

    def reset(self) -> None:
        self.failures = 0

    def __repr__(self) -> str:
        return f"Backoff(failures={self.failures}, first={self.first}, most={self.most})"


#: The clients' reconnect policy (a connection, a subscription): first and longest base wait.
RECONNECT_FIRST, RECONNECT_MOST = 0.05, 2.0
#: Its longest wait, jitter included: how long a live peer may take to notice Redis is back.
RECONNECT_LONGEST = RECONNECT_MOST * 1.2


def reconnect() -> Backoff:
    """A fresh Backoff with the clients' reconnect policy."""
    return Backoff(RECONNECT_FIRST, RECONNECT_MOST)
