"""The pure half of Sentinel: announcements, stale answers and redis+sentinel:// URLs."""

import pytest

from greenredis.client.sentinel_view import (
    MasterChanged,
    SentinelFound,
    SentinelView,
    parse_address,
    parse_announcement,
    replica_addresses,
    replica_link_problem,
)
from greenredis.url import parse_sentinel_url, redact_text, redact_url

pytestmark = pytest.mark.unit

A, B, C = ("10.0.0.1", 6379), ("10.0.0.2", 6379), ("10.0.0.3", 6379)
S1, S2 = ("10.0.1.1", 26379), ("10.0.1.2", 26379)


def switch(old, new, service="mymaster"):
    return b"+switch-master", f"{service} {old[0]} {old[1]} {new[0]} {new[1]}".encode()


def promoted(old, new, service="mymaster"):
    return (
        b"+promoted-slave",
        f"slave {new[0]}:{new[1]} {new[0]} {new[1]} @ {service} {old[0]} {old[1]}".encode(),
    )


def following(master=A):
    view = SentinelView([S1, S2])
    assert view.choose("mymaster", [master]) == master
    assert view.confirmed("mymaster", master) == []  # first discovery: nothing to drop
    return view


def test_parsing_replies_and_messages():
    assert parse_address([b"10.0.0.1", b"6379"]) == A
    assert parse_address(None) is None
    with pytest.raises(ValueError):
        parse_address([b"x"])
    m = parse_announcement(*switch(A, B))
    assert (m.service, m.old, m.new) == ("mymaster", A, B)
    m = parse_announcement(*promoted(A, B))
    assert (m.kind, m.old, m.new) == (b"+promoted-slave", A, B)
    assert parse_announcement(b"+switch-master", b"mymaster 1 2") is None  # malformed: ignored
    assert parse_announcement(b"+switch-master", b"m h notaport h 1") is None
    reply = [
        [b"ip", b"10.0.0.2", b"port", b"6379", b"flags", b"slave", b"master-link-status", b"ok"],
        [b"ip", b"10.0.0.3", b"port", b"6379", b"flags", b"slave,s_down", b"master-link-status", b"ok"],
        [b"ip", b"10.0.0.4", b"port", b"6379", b"flags", b"slave", b"master-link-status", b"err"],
    ]
    assert replica_addresses(reply) == [B]


def test_replicas_down_disconnected_or_unlinked_are_skipped():
    # the flags SENTINEL REPLICAS uses (sentinel.c): s_down, o_down, disconnected
    def replica(ip, flags, link="ok"):
        return [b"ip", ip, b"port", b"6379", b"flags", flags, b"master-link-status", link]

    reply = [
        replica(b"10.0.0.5", b"slave,o_down"),
        replica(b"10.0.0.6", b"slave,disconnected"),
        replica(b"10.0.0.2", b"slave"),
        {b"ip": b"10.0.0.3", b"port": b"6379", b"flags": b"slave", b"master-link-status": b"ok"},  # RESP3
    ]
    assert replica_addresses(reply) == [B, C]


def test_a_replica_whose_role_says_its_link_is_down_is_refused():
    assert replica_link_problem([b"slave", b"10.0.0.1", 6379, b"connected", 100]) is None
    for state in (b"connect", b"connecting", b"sync", b"handshake"):
        problem = replica_link_problem([b"slave", b"10.0.0.1", 6379, state, -1])
        assert problem and state.decode() in problem
    assert replica_link_problem([b"master", 100, []]) is None  # not a replica: not its business


def test_an_announcement_moves_the_master_once():
    view = following()
    g = view.generation("mymaster")
    effects = view.announced(*promoted(A, B))
    assert effects == [MasterChanged("mymaster", A, B, "+promoted-slave")]
    assert view.master("mymaster") == B and view.generation("mymaster") == g + 1
    # the other sentinels' +switch-master for the same failover: nothing more to do
    assert view.announced(*switch(A, B)) == []
    assert view.generation("mymaster") == g + 1


def test_a_late_copy_after_a_second_failover_is_ignored():
    view = following()
    view.announced(*switch(A, B))
    assert view.announced(*switch(B, C)) == [MasterChanged("mymaster", B, C, "+switch-master")]
    # a slow sentinel only now tells of the first failover: B has been replaced since
    assert view.announced(*switch(A, B)) == []
    assert view.master("mymaster") == C


def test_failing_back_to_an_old_master_counts():
    view = following()
    view.announced(*switch(A, B))
    assert view.announced(*switch(B, A)) == [MasterChanged("mymaster", B, A, "+switch-master")]
    assert view.master("mymaster") == A


def test_failing_back_after_the_second_master_died_counts():
    # A -> B, then B is killed (a failed connect: no master now) and the sentinels
    # promote A, a replica again: the announcement is the news we wait for, not a late copy
    view = following()
    view.announced(*switch(A, B))
    view.failed("mymaster", B)
    assert view.master("mymaster") is None
    assert view.announced(*promoted(B, A)) == [MasterChanged("mymaster", B, A, "+promoted-slave")]
    assert view.master("mymaster") == A


def test_a_late_copy_while_no_master_answers_is_ignored():
    view = following()
    view.announced(*switch(A, B))
    view.announced(*switch(B, C))
    view.failed("mymaster", C)
    assert view.announced(*switch(A, B)) == []  # B was replaced since, and A is not what we lost
    assert view.master("mymaster") is None


def test_a_sentinel_still_naming_the_replaced_master_is_behind():
    view = following()
    view.announced(*switch(A, B))
    assert view.choose("mymaster", [A]) == B  # the stale answer loses to the announcement
    assert view.choose("mymaster", [A, B]) == B
    view.failed("mymaster", B)  # B did not answer either
    assert view.master("mymaster") is None
    assert view.choose("mymaster", [A]) == A  # nothing better: try it, it may be back
    # A it is: clients still holding connections to B (a paused B) must drop them
    assert view.confirmed("mymaster", A) == [MasterChanged("mymaster", B, A, "discovery")]


def test_the_master_back_after_a_failed_connect_drops_nothing():
    view = following()
    view.failed("mymaster", A)  # one connect timed out on a loaded machine
    assert view.choose("mymaster", [A]) == A
    assert view.confirmed("mymaster", A) == []


def test_discovery_of_a_new_master_drops_connections_to_the_old():
    view = following()
    assert view.confirmed("mymaster", B) == [MasterChanged("mymaster", A, B, "discovery")]
    assert view.choose("mymaster", [A]) == B


def test_other_services_and_sentinels():
    view = following()
    assert view.announced(*switch(B, C, service="other")) == []
    assert view.master("mymaster") == A
    hello = (b"+sentinel", b"sentinel 0123abcd 10.0.1.3 26379 @ mymaster 10.0.0.1 6379")
    assert view.announced(*hello) == [SentinelFound(("10.0.1.3", 26379))]
    assert view.announced(*hello) == []
    reply = [
        [b"ip", b"10.0.1.4", b"port", b"26380", b"flags", b"sentinel"],
        [b"ip", b"10.0.1.1", b"port", b"26379"],
    ]
    assert view.sentinels_reported(reply) == [SentinelFound(("10.0.1.4", 26380))]
    view.answered(("10.0.1.4", 26380))
    assert view.sentinels[0] == ("10.0.1.4", 26380)
    for bad in ([], "10.0.1.1:26379", [("10.0.1.1",)], [("h", "port")]):
        with pytest.raises(ValueError):
            SentinelView(bad)


def test_sentinel_url():
    u = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@10.0.1.1:26379,10.0.1.2,[::1]:5000/mymaster/2"
        "?sentinel_password=spw&timeout=2&failover_timeout=5"
    )
    assert u.sentinels == (S1, S2, ("::1", 5000))
    assert (u.service, u.params.db, u.params.username, u.params.password) == ("mymaster", 2, "app", "p@ss")
    assert (u.sentinel_password, u.params.timeout, u.failover_timeout) == ("spw", 2.0, 5.0)
    assert "spw" not in repr(u) and "p@ss" not in repr(u)
    u = parse_sentinel_url("redis+sentinel://h:1/m", sentinel_timeout=0.2, db=1)
    assert (u.sentinel_timeout, u.params.db, u.params.password) == (0.2, 1, None)
    for bad, says in [
        ("redis+sentinel://:pw@h:1", "names no service"),
        ("redis+sentinel://:pw@h:x/m", "bad port"),
        ("redis+sentinel://:pw@h:1/m/x", "bad db"),
        ("redis+sentinel://:pw@h:1/m/0/9", "the path is"),
        ("redis+sentinel://:pw@h:1/m?nosuch=1&sentinel_password=spw", "unknown URL option"),
        ("redis+sentinel://:pw@h:1/m?sentinel_timeout=0", "sentinel_timeout"),
        ("redis+sentinel://:pw@,h:1/m", "bad sentinel address"),
    ]:
        with pytest.raises(ValueError, match=says) as e:
            parse_sentinel_url(bad)
        assert "pw" not in str(e.value).replace("password", "")
    shown = redact_url("redis+sentinel://app:secret@h:1,h:2/m?sentinel_password=spw&timeout=1")
    assert shown == "redis+sentinel://app:***@h:1,h:2/m?sentinel_password=***&timeout=1"
    assert (
        redact_text("REDIS_URL=redis+sentinel://:secret@h:1,h:2/m")
        == "REDIS_URL=redis+sentinel://:***@h:1,h:2/m"
    )


def test_rediss_sentinel_url_and_sentinel_ssl():
    from greenredis.url import is_sentinel_url, parse_url

    u = parse_sentinel_url("rediss+sentinel://:pw@h:1,h:2/m/3?ssl_ca_certs=/ca.pem&ssl_cert_reqs=optional")
    assert u.params.ssl and u.params.ssl_ca_certs == "/ca.pem" and u.params.db == 3
    assert not u.sentinel_ssl and "sentinel_kwargs" not in u.sentinel_options()
    assert not parse_sentinel_url("redis+sentinel://h:1/m").params.ssl
    assert is_sentinel_url("rediss+sentinel://h:1/m") and is_sentinel_url("REDISS+SENTINEL://h:1/m")
    u = parse_sentinel_url(
        "rediss+sentinel://h:1/m?sentinel_ssl=yes&ssl_ca_certs=/ca.pem&sentinel_password=s"
    )
    options = u.sentinel_options()
    assert options["sentinel_password"] == "s"
    assert (
        options["sentinel_kwargs"]["ssl"] is True and options["sentinel_kwargs"]["ssl_ca_certs"] == "/ca.pem"
    )
    assert parse_sentinel_url("redis+sentinel://h:1/m", sentinel_ssl=True).sentinel_ssl
    with pytest.raises(ValueError, match="bad sentinel_ssl 'maybe'"):
        parse_sentinel_url("rediss+sentinel://:pw@h:1/m?sentinel_ssl=maybe")
    with pytest.raises(ValueError, match="names sentinels"):
        parse_url("rediss+sentinel://:pw@h:1/m")
    assert redact_url("rediss+sentinel://:secret@h:1/m") == "rediss+sentinel://:***@h:1/m"
    assert redact_text("x rediss+sentinel://:secret@h:1/m") == "x rediss+sentinel://:***@h:1/m"


def test_sentinel_ssl_takes_the_data_nodes_tls_options():
    from greenredis.client.sentinel import Sentinel

    s = Sentinel([S1], sentinel_ssl=True, ssl=True, ssl_ca_certs="/ca.pem", ssl_check_hostname=False)
    p = s._sentinel_params
    assert p.ssl and p.ssl_ca_certs == "/ca.pem" and p.ssl_check_hostname is False
    assert not Sentinel([S1], ssl=True)._sentinel_params.ssl  # TLS to the data nodes only
