"""Sentinel clients with passwords and ACL users on the data nodes and a password on the
sentinels: one group for the module."""

import gevent
import pytest

import greenredis
from greenredis.errors import AuthenticationError, ConnectionError
from greenredis.server import SentinelGroup
from tests.waiting import wait_for

USERS = [
    "app on >apw ~* &* +@all",
    "norole on >nrpw ~* &* +@all -role",  # may not run ROLE: the sentinels' word is taken
]


# a sentinel user that may ask but not SUBSCRIBE (no channel rights, no SUBSCRIBE command)
SENTINEL_USERS = ["user asker on >apw resetchannels -@all +sentinel +ping +auth +hello +client +role"]


@pytest.fixture(scope="module")
def group():
    with SentinelGroup(
        replicas=1,
        sentinels=3,
        password="pw",
        users=USERS,
        sentinel_password="spw",
        sentinel_args=SENTINEL_USERS,
    ) as g:
        yield g


def test_acl_users_follow_a_failover(group):
    s = greenredis.Sentinel(group.sentinel_addresses, sentinel_password="spw", failover_timeout=20)
    app = s.master_for("mymaster", username="app", password="apw", timeout=10)
    norole = s.master_for("mymaster", username="norole", password="nrpw", timeout=10)
    assert app.cmd(["SET", "k", "1"]) == b"OK" and norole.cmd(["GET", "k"]) == b"1"
    with pytest.raises(greenredis.ReplyError, match="NOPERM"):
        norole.cmd(["ROLE"])
    new = group.failover()
    assert wait_for(lambda: app.cmd(["INCR", "k"]) and app.params.port == new.port, what="app to follow")
    assert wait_for(lambda: norole.cmd(["GET", "k"]) and norole.params.port == new.port, what="norole")
    for r in (app, norole):
        r.close()
    s.close()


def test_the_url_carries_both_passwords(group):
    with greenredis.Redis.from_url(group.url, timeout=10) as r:
        assert r.cmd(["PING"]) == b"PONG" and r.params.port == group.master.port
    hosts = ",".join(f"127.0.0.1:{p}" for _, p in group.sentinel_addresses)
    url = f"redis+sentinel://app:apw@{hosts}/mymaster/1?sentinel_password=spw"
    with greenredis.Redis.from_url(url, timeout=10) as r:
        assert r.cmd(["SET", "in-db-1", "x"]) == b"OK"
    assert group.node_command(group.master, "SELECT", "1") == b"OK"


def test_a_wrong_sentinel_password_says_so(group):
    s = greenredis.Sentinel(group.sentinel_addresses, sentinel_password="wrong")
    r = s.master_for("mymaster", password="pw", timeout=5)
    with pytest.raises(ConnectionError, match="sentinel_password") as e:
        r.cmd(["PING"])
    assert "wrong" not in str(e.value)
    for _, port in group.sentinel_addresses:
        assert f"127.0.0.1:{port}" in str(e.value)
    r.close()
    s.close()


def test_no_or_a_wrong_data_password_fails_at_once(group):
    s = greenredis.Sentinel(group.sentinel_addresses, sentinel_password="spw", failover_timeout=30)
    for kwargs, says in [({}, "requires a password"), ({"password": "nope"}, "AUTH")]:
        r = s.master_for("mymaster", timeout=None, **kwargs)
        # no call timeout: a client that took this for a failover would wait failover_timeout
        with gevent.Timeout(10, AssertionError("waited as if for a failover")):
            with pytest.raises(AuthenticationError, match=says) as e:
                r.cmd(["PING"])
        assert "nope" not in str(e.value)
        r.close()
    s.close()


def test_a_sentinel_user_without_subscribe_rights_still_follows_a_failover(group):
    # the subscriptions are refused: the client asks the sentinels every health_check_interval
    s = greenredis.Sentinel(
        group.sentinel_addresses, sentinel_username="asker", sentinel_password="apw", failover_timeout=20
    )
    r = s.master_for("mymaster", password="pw", timeout=10)
    assert r.cmd(["SET", "asked", "1"]) == b"OK"
    wait_for(lambda: s.stats["subscriptions_refused"] >= 1, what="the refusals to be counted")
    new = group.failover()  # it demotes the old master: a write there would be -READONLY
    wait_for(lambda: s.view.master("mymaster") == ("127.0.0.1", new.port), what="the poll to find the switch")
    assert r.cmd(["INCR", "asked"]) == 2 and r.params.port == new.port
    r.close()
    s.close()
