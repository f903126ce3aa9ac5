"""rediss+sentinel://: TLS data nodes found through sentinels, and TLS to the sentinels
(sentinel_ssl). One group serves the module: a master and two replicas serving TLS only
(one CA), three sentinels that speak TLS to them and to each other, serving TLS on their
``tls_address`` beside a plain port."""

import gevent
import pytest

import greenredis
from greenredis.errors import ConnectionError
from tests.waiting import wait_for

SENTINEL_GROUP = {"tls": True}


def _hosts(addresses):
    return ",".join(f"{h}:{p}" for h, p in addresses)


def test_a_rediss_sentinel_url_reaches_the_tls_master_through_plain_sentinels(sentinel_group):
    group = sentinel_group
    url = f"rediss+sentinel://{_hosts(group.sentinel_addresses)}/mymaster?ssl_ca_certs={group.ca_file}"
    with greenredis.Redis.from_url(url, timeout=10) as r:
        assert r.cmd(["SET", "tls", "1"]) == b"OK"
        assert r.params.ssl and r.params.port == group.master.port
        assert r.cmd(["ROLE"])[0] == b"master"
        assert not r.sentinel._sentinel_params.ssl  # the sentinels themselves are plain here
    s = greenredis.Sentinel(group.sentinel_addresses, ssl=True, ssl_ca_certs=group.ca_file)
    ro = s.replica_for("mymaster", timeout=10)
    assert ro.cmd(["ROLE"])[0] == b"slave" and ro.params.ssl
    ro.close()
    s.close()


def test_an_unverifiable_certificate_fails_at_once_and_says_why(sentinel_group):
    group = sentinel_group
    # no ssl_ca_certs: the system trust store does not know the group's CA
    url = f"rediss+sentinel://{_hosts(group.sentinel_addresses)}/mymaster?failover_timeout=30"
    with greenredis.Redis.from_url(url, timeout=None) as r:
        # a client that took this for a failover would wait failover_timeout
        with gevent.Timeout(10, AssertionError("waited as if for a failover")):
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                r.cmd(["PING"])


def test_tls_to_the_sentinels_follows_a_failover(sentinel_group, sentinel_healed):
    group = sentinel_group
    tls_hosts = _hosts(s.tls_address for s in group.sentinels)
    url = f"rediss+sentinel://{tls_hosts}/mymaster?sentinel_ssl=true&ssl_ca_certs={group.ca_file}"
    r = greenredis.Redis.from_url(url, timeout=10)
    assert r.cmd(["SET", "tls", "2"]) == b"OK"
    s = r.sentinel
    assert s._sentinel_params.ssl and s._sentinel_params.ssl_ca_certs == group.ca_file
    wait_for(lambda: len(s._watch_conns) == len(group.sentinels), what="the TLS subscriptions")
    switches = []
    s.on_switch(lambda *switch: switches.append(switch))
    new = group.failover()
    assert wait_for(lambda: switches, what="an announcement over a TLS subscription")
    assert switches[0][2] == ("127.0.0.1", new.port)
    assert wait_for(lambda: r.cmd(["INCR", "tls:n"]) and r.params.port == new.port, what="the switch")
    assert s.stats["subscriptions_lost"] == 0
    r.close()
