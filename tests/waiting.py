"""Waiting for a condition in tests: the one helper every test module shares."""

import time

import gevent


def wait_for(cond, timeout=30.0, what="condition", interval=0.02):
    """Poll ``cond()`` until it returns something truthy and return that; AssertionError
    after ``timeout`` seconds. Sleeps with gevent, so other greenlets run meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        gevent.sleep(interval)
