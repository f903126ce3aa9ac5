"""The SentinelGroup launcher: a master, two replicas and three sentinels that fail over."""

from waiting import wait_for

from greenredis.server import SENTINEL_RECONNECT_PERIOD_MS, RedisSentinel, SentinelGroup


def test_group_fails_over_on_request_and_after_a_kill(sentinel_healed):
    group = sentinel_healed
    old = group.master
    assert group.current_master() == ("127.0.0.1", old.port)
    assert len(group.replicas) == 2 and old not in group.replicas
    assert len({s.port for s in group.servers + group.sentinels}) == 6
    group.node_command(old, "SET", "k", "v")
    group.node_command(old, "WAIT", "2", "1000")

    new = group.failover()
    assert new is not old and new is group.master
    for sentinel in group.sentinels:
        reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        assert reply == [b"127.0.0.1", str(new.port).encode()]
    role = group.node_command(old, "ROLE")
    assert role[0] == b"slave" and int(role[2]) == new.port
    assert group.node_command(new, "GET", "k") == b"v"

    epoch = group.config_epoch()
    new.kill()
    third = group.wait_failed_over(epoch)
    assert third is not new and third.running and group.config_epoch() > epoch
    assert group.node_command(third, "GET", "k") == b"v"
    group.heal()
    assert new.running and group.node_command(new, "ROLE")[0] == b"slave"


def test_group_with_passwords_and_its_url():
    with SentinelGroup(replicas=1, sentinels=2, quorum=1, password="pw", sentinel_password="spw") as group:
        assert group.url == (
            f"redis+sentinel://:pw@127.0.0.1:{group.sentinels[0].port},"
            f"127.0.0.1:{group.sentinels[1].port}/mymaster?sentinel_password=spw"
        )
        assert group.sentinel_addresses == [("127.0.0.1", s.port) for s in group.sentinels]
        old = group.master
        assert group.failover() is not old


def test_the_url_of_a_group_quotes_its_passwords():
    from greenredis.url import parse_sentinel_url, parse_url

    group = SentinelGroup(replicas=0, sentinels=1, password="p@s/s#w?%", sentinel_password="s&x=1+2")
    try:  # not started: the URL is all this looks at
        parsed = parse_sentinel_url(group.url)
        assert parsed.params.password == "p@s/s#w?%"
        assert parsed.sentinel_password == "s&x=1+2"
        assert parsed.sentinels == (("127.0.0.1", group.sentinels[0].port),) and parsed.service == "mymaster"
        assert parse_url(group.sentinels[0].url).password == "s&x=1+2"
        assert parse_url(group.master.url).password == "p@s/s#w?%"
    finally:
        group.close()


def test_the_sentinels_leave_their_reconnect_a_second_of_slack():
    # A sentinel first reaches a new master up to SENTINEL_RECONNECT_PERIOD_MS after a
    # +switch-master (see greenredis.server); a down-after no longer than that fails it over again.
    text = RedisSentinel(("127.0.0.1", 1)).config_text()
    down_after = int(text.split("down-after-milliseconds mymaster ")[1].split()[0])
    assert down_after >= 2 * SENTINEL_RECONNECT_PERIOD_MS
    assert SentinelGroup(replicas=0, sentinels=1).down_after_ms == down_after


def test_a_killed_master_is_failed_over_once(sentinel_healed):
    """After a failover away from a killed master, no sentinel judges the new master down
    before it has reached it (with down-after 1000 ms they did: a second, spurious failover)."""
    group = sentinel_healed
    old, epoch = group.master, group.config_epoch()
    earlier = set(group.events("+sdown master") + group.events("+switch-master"))
    old.kill()
    new = group.wait_failed_over(epoch)

    def pinged():  # every sentinel has had a PONG from it since its switch: the race is over
        for sentinel in group.sentinels:
            info = dict(zip(*[iter(sentinel.command("SENTINEL", "MASTER", group.service))] * 2))
            if int(info[b"port"]) != new.port or info[b"last-ping-sent"] != b"0":
                return False
        return True

    wait_for(pinged, what="every sentinel to hear from the new master")
    downs = [line for line in group.events("+sdown master") if line not in earlier]
    assert all(line.endswith(f" 127.0.0.1 {old.port}") for line in downs), downs
    switches = [line for line in group.events("+switch-master") if line not in earlier]
    assert len(switches) == len(group.sentinels), switches
    assert all(line.endswith(f" 127.0.0.1 {old.port} 127.0.0.1 {new.port}") for line in switches), switches
