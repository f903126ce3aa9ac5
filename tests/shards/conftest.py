"""A 3-primary Redis Cluster per test module, and a publisher that is not greenredis."""

import pytest
from shard_helpers import Publisher

from greenredis.server import RedisCluster


@pytest.fixture(scope="module")
def rc():
    """3 primaries, one replica each (so a primary can fail over); tests that change it
    leave it serving every slot."""
    with RedisCluster(primaries=3, replicas_per_primary=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def publisher(rc):
    return Publisher(rc)
