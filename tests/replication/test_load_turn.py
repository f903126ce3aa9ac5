"""The turn a loading replica gives the loop every TIME_SLICE: due timers run in it, and it
does not wait libev's minimum for a timer not yet due (1 ms, which the turn used to cost)."""

import time

import gevent
import pytest

from greenredis.replication import replica

pytestmark = pytest.mark.unit


def test_a_turn_runs_the_timers_that_are_due():
    ran = []
    gevent.spawn(lambda: (gevent.sleep(0.001), ran.append(1)))
    gevent.sleep(0)  # the greenlet starts its timer
    time.sleep(0.005)  # computing, as a load does: the timer is due now
    gevent.sleep(0)  # a greenlet's turn alone does not run timers
    assert not ran
    gevent.sleep(replica._TIMER_TURN)
    assert ran


def test_a_turn_does_not_wait_for_the_loops_minimum():
    def seconds(wait, n=20):
        t = time.perf_counter()
        for _ in range(n):
            gevent.sleep(wait)
        return time.perf_counter() - t

    # the best of a few tries: a busy machine can take the CPU away during any of them
    turns = min(seconds(replica._TIMER_TURN) for _ in range(5))
    millisecond_sleeps = seconds(0.001)  # at least 20 ms
    assert turns < millisecond_sleeps / 2, (turns, millisecond_sleeps)
