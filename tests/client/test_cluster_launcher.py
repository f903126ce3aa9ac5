"""The RedisCluster launcher: joined, agreed, and changeable under a test's hands."""

import binascii

import pytest

from greenredis.errors import AskError, MovedError
from greenredis.server import RedisCluster


def _keys_in_slot(slot, n):
    found = []
    i = 0
    while len(found) < n:
        key = b"k%d" % i
        if binascii.crc_hqx(key, 0) % 16384 == slot:
            found.append(key)
        i += 1
    return found


def test_cluster_is_joined_and_agreed(redis_cluster):
    c = redis_cluster
    assert len(c.primaries) == 3 and len(c.replicas) == 3
    assert {n.port for n in c.primaries} | {n.port for n in c.replicas} == {n.port for n in c.nodes}
    assert c.url.startswith("redis+cluster://127.0.0.1:")
    assert len(c.url.split(",")) == 6 and len(c.startup_nodes) == 6
    for node in c.nodes:
        assert b"cluster_state:ok" in c.call(node, "CLUSTER", "INFO")
    for slot in (0, 5000, 10000, 16383):
        owner = c.node_for_slot(slot)
        assert owner in c.primaries
        # every other primary redirects the slot to that owner
        for other in c.primaries:
            if other is not owner:
                key = _keys_in_slot(slot, 1)[0]
                with pytest.raises(MovedError) as e:
                    c.call(other, "GET", key)
                assert e.value.slot == slot and e.value.address == ("127.0.0.1", owner.port)
    for primary in c.primaries:
        assert len(c.replicas_of(primary)) == 1


def test_migrate_slot_moves_keys_and_ownership(redis_cluster):
    c = redis_cluster
    slot = 777
    source = c.node_for_slot(slot)
    target = next(n for n in c.primaries if n is not source)
    keys = _keys_in_slot(slot, 30)
    for key in keys:
        c.call(source, "SET", key, key)
    c.begin_migration(slot, target)
    assert c.move_keys(slot, source, target, count=10) == 10
    # mid-migration: a moved key is an ASK to the target, a remaining one still served
    asked = []
    for key in keys:
        try:
            assert c.call(source, "GET", key) == key
        except AskError as e:
            assert e.slot == slot and e.address == ("127.0.0.1", target.port)
            asked.append(key)
    assert len(asked) == 10
    while c.move_keys(slot, source, target):
        pass
    c.finish_migration(slot, target)
    assert c.node_for_slot(slot) is target
    assert c.call(target, "CLUSTER", "COUNTKEYSINSLOT", slot) == 30
    assert [c.call(target, "GET", k) for k in keys] == keys
    c.migrate_slot(slot, source)  # put it back for the other tests
    assert c.node_for_slot(slot) is source


def test_password_cluster_and_bad_arguments():
    with pytest.raises(ValueError, match="at least one primary"):
        RedisCluster(primaries=0)
    with RedisCluster(primaries=1, password="s3cret") as c:
        assert c.url.startswith("redis+cluster://:s3cret@127.0.0.1:")
        assert b"cluster_state:ok" in c.call(c.nodes[0], "CLUSTER", "INFO")
        assert c.node_for_slot(16383) is c.nodes[0]
