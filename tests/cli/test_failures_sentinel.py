"""``describe`` on what a Sentinel client raises mid-failover (pure: no Redis)."""

import pytest

from greenredis.cli.failures import describe, transient
from greenredis.errors import ConnectionError

pytestmark = pytest.mark.unit


def test_a_call_cut_by_a_failover_is_said_to_be_one():
    # what Sentinel._apply closes the old master's connections with
    e = ConnectionError(
        "'mymaster' failed over to 127.0.0.1:6380 (+switch-master): "
        "this call's connection to the old master was closed; it may or may not have run"
    )
    message, hint = describe(e, "the master of 'mymaster'")
    assert "failed over to 127.0.0.1:6380" in message, message
    assert "is it Redis" not in message and hint is None
    assert transient(e)


def test_a_write_refused_by_a_demoted_master_is_said_to_be_one():
    # what SentinelRedis._demoted raises on -READONLY
    e = ConnectionError(
        "127.0.0.1:6379 is no longer the master of 'mymaster' (READONLY You can't write against a read "
        "only replica.): nothing was written; the next call goes to the new master"
    )
    message, hint = describe(e, "the master of 'mymaster'")
    assert "no longer the master" in message and hint is None, message
