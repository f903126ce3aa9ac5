"""Key and channel names on a cluster (hash tags: one slot per grid, per instance) and
on a single server (unchanged from 0.2: data written by 0.2 is read as it is)."""

import pytest
from shard_helpers import slot
from waiting import wait_for

from greenredis.client.redis import Redis
from greenredis.grid.node import Grid
from greenredis.grid.view import Layout
from greenredis.server import RedisServer
from greenredis.telemetry import CappedLog, Stats, names
from greenredis.tempo.registry import Registry


@pytest.mark.parametrize("domain,version", [("", ""), ("shop", "v2"), ("a}b", "1"), ("{x", "y}"), ("é", "")])
def test_a_cluster_grid_lives_in_one_slot(domain, version):
    lay = Layout(domain, version, cluster=True)
    names_ = [lay.channel, lay.index, lay.key("web.1"), lay.key("{other}"), lay.key("x}y{z")]
    assert len({slot(n) for n in names_}) == 1, names_
    assert lay.publish == "SPUBLISH"
    assert lay.name_of(lay.key("{other}").encode()) == "{other}"
    assert lay.parse_message(lay.message("register", "n1")).name == "n1"


def test_different_grids_spread_over_slots():
    slots = {slot(Layout(f"d{i}", "v", cluster=True).index) for i in range(50)}
    assert len(slots) > 40


def test_single_server_grid_names_are_the_original_redgrid_ones():
    lay = Layout("shop", "v2")
    assert (lay.channel, lay.index, lay.key("web.1")) == (
        "redgrid:shop:v2",
        "redgrid-index:shop:v2",
        "redgrid:shop:v2:web.1",
    )
    assert lay.publish == "PUBLISH"


def test_one_instances_stats_and_log_share_a_slot():
    inst = "web.1:{weird}"[:5]  # braces are refused in instance names; this is "web.1"
    every = [
        names.stats_channel(inst),
        names.metrics_key(inst),
        names.history_key(inst, "rps"),
        names.history_key(inst, "mem:rss"),
        names.log_key(inst),
        names.log_channel(names.log_key(inst)),
    ]
    assert len({slot(n) for n in every}) == 1
    with pytest.raises(ValueError):
        names.check_instance("a{b}")


@pytest.fixture(scope="module")
def server():
    with RedisServer() as s:
        yield s


def test_data_written_by_0_2_is_read(server):
    """Keys laid out by 0.2 (written here raw, with their literal names) are found by
    this version's Grid, Stats, CappedLog and Tempo's registry on a single server."""
    r = Redis(port=server.port)
    now = float(r.cmd(["TIME"])[0])
    point = f'{{"metric":"rps","ts":{now},"value":7}}'
    r.cmd(
        [
            ["HSET", "redgrid:old:v1:legacy-node", "ip", "10.1.2.3", "role", "web", "_instance", "ab12"],
            ["PEXPIRE", "redgrid:old:v1:legacy-node", 30000],
            ["ZADD", "redgrid-index:old:v1", now, "legacy-node"],
            ["LPUSH", "stats:{web.7}:h:rps", point],
            ["SADD", "stats:{web.7}:metrics", "rps"],
            ["ZADD", "stats:instances", now, "web.7"],
            ["LPUSH", "logs:{web.7}", "first line", "second line"],
        ]
    )
    observer = Grid(r, observe=True, domain="old", version="v1", ttl=30, interval=0.5).start()
    try:
        assert observer.wait(10)
        wait_for(lambda: "legacy-node" in observer.nodes(), 10, "the 0.2 node in the view")
        assert observer.nodes()["legacy-node"] == {"ip": "10.1.2.3", "role": "web"}
    finally:
        observer.stop()
    stats = Stats(r, "web.7")
    assert stats.metrics() == ["rps"]
    assert [p["value"] for p in stats.history("rps")] == [7]
    assert CappedLog.for_instance(r, "web.7").tail() == ["first line", "second line"]
    registry = Registry(r, grid=None)
    assert registry.is_known("web.7") and not registry.is_known("web.8")
    r.close()


def test_a_single_server_grid_still_publishes_classic(server):
    """A 0.2 peer (SUBSCRIBE on the plain channel) hears a new node join."""
    r = Redis(port=server.port)
    sub = r.subscribe("redgrid:compat:")
    g = Grid(r, name="new-node", domain="compat", version="", ttl=30, interval=0.5).start()
    try:
        heard = wait_for(lambda: sub.get(timeout=0.1), 10, "a message on the 0.2 channel")
        assert heard.kind == b"message"
    finally:
        g.stop()
        sub.close()
        r.close()
