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
def redis_cluster():
    """One 3-primary cluster (one replica each) per test module; tests that change it
    (move a slot, fail over) leave it serving every slot."""
    with RedisCluster(primaries=3, replicas_per_primary=1) as cluster:
        yield cluster
