"""Client tests run against redis-server and valkey-server alike: ``redis_server``
(and so ``r``) is parametrised over both here."""

import pytest

from greenredis.server import RedisCluster, RedisServer, find_valkey_server


@pytest.fixture(params=["redis", "valkey"])
def redis_server(request):
    """A fresh private server for one test: redis-server, then valkey-server."""
    binary = find_valkey_server() if request.param == "valkey" else None
    with RedisServer(debug=True, binary=binary) as server:
        yield server


@pytest.fixture(scope="module")
def sentinel_group():
    """One master, two replicas and three sentinels shared by a test module; see
    ``sentinel_healed`` for a test that kills or pauses some of them."""
    from greenredis.server import SentinelGroup

    with SentinelGroup(service="mymaster", replicas=2, sentinels=3) as group:
        yield group


@pytest.fixture
def sentinel_healed(sentinel_group):
    """``sentinel_group``, restarted/resumed and settled again after the test."""
    yield sentinel_group
    sentinel_group.heal()


@pytest.fixture(scope="module")
def redis_cluster():
    """One 3-primary cluster (one replica each) per test module; tests that change it
    (move a slot, fail over) leave it serving every slot."""
    with RedisCluster(primaries=3, replicas_per_primary=1) as cluster:
        yield cluster
