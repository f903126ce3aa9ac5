"""Every name the README shows users importing keeps working."""

import importlib
import subprocess
import sys

import pytest

UNIT = pytest.mark.unit

TOP_LEVEL = [
    "Redis", "Cluster", "Dedicated", "Subscription", "Monitor", "Message", "RedisServer", "RedisCluster",
    "Grid", "GridEvent",
    "Replica", "Stats", "CappedLog", "RedisLogHandler",
    "RedisError", "ReplyError", "ConnectionError", "TimeoutError", "ProtocolError",
]  # fmt: skip

MODULES = {
    "greenredis.server": ["RedisServer", "RedisCluster"],
    "greenredis.backoff": ["Backoff", "delay"],
    "greenredis.client": ["Redis", "Cluster", "Dedicated", "Subscription", "Monitor"],
    "greenredis.client.slots": ["key_slot", "SlotMap", "CommandTable"],
    "greenredis.grid": ["Grid", "GridView", "GridEvent"],
    "greenredis.replication": ["Replica"],
    "greenredis.replication.protocol": ["ReplicaProtocol"],
    "greenredis.replication.rdb": ["RDBParser", "RDBError", "decode_dump", "load_file"],
    "greenredis.replication.applier": ["Applier", "ApplyError"],
    "greenredis.telemetry": ["Stats", "CappedLog", "RedisLogHandler"],
    "greenredis.tempo": ["create_app"],
}


@UNIT
def test_top_level_names():
    import greenredis

    for name in TOP_LEVEL:
        assert getattr(greenredis, name) is not None, name
    assert set(TOP_LEVEL) <= set(greenredis.__all__)
    with pytest.raises(AttributeError):
        greenredis.NoSuchThing  # noqa: B018


@UNIT
@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_paths(module):
    m = importlib.import_module(module)
    for name in MODULES[module]:
        assert hasattr(m, name), f"{module}.{name}"


@UNIT
def test_pure_parts_import_without_gevent_or_flask():
    code = (
        "import sys; import greenredis.replication.rdb, greenredis.replication.protocol, "
        "greenredis.replication.applier, greenredis.grid.view, greenredis.backoff; "
        "print(sorted(m for m in ('gevent', 'flask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_any_server_runs_redis_and_valkey(any_server):
    import redis

    info = redis.Redis(port=any_server.port).info("server")
    assert ("valkey_version" in info) == ("valkey" in (any_server.binary or ""))
