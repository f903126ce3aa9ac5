"""Client tests run against redis-server and valkey-server alike: ``redis_server``
(and so ``r``) is parametrised over both here."""

import pytest

from greenredis.server import RedisServer, find_valkey_server


@pytest.fixture(params=["redis", "valkey"])
def redis_server(request):
    """A fresh private server for one test: redis-server, then valkey-server."""
    binary = find_valkey_server() if request.param == "valkey" else None
    with RedisServer(debug=True, binary=binary) as server:
        yield server
