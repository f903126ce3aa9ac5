"""Review findings on the cluster client that need no cluster: a startup node that
accepts connections and never answers (a socket opened and never read)."""

import re
import socket

import pytest

from greenredis import Cluster
from greenredis.errors import TimeoutError


@pytest.fixture
def silent_node():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()
    finally:
        listener.close()


def test_slot_map_timeout_says_the_callers_timeout_not_float_noise(silent_node):
    c = Cluster([silent_node], connect_timeout=5.0)
    try:
        with pytest.raises(TimeoutError) as raised:
            c.cmd(["GET", "a"], timeout=0.3)
    finally:
        c.close()
    message = str(raised.value)
    assert "slot map" in message
    # the time left of the call's 0.3 s, in 3 digits at most: "0.3s", or "0.293s" on a busy
    # machine where the call spent some before the wait; not "within the call's 0.29987...s"
    left = re.search(r"within the (\d(?:\.\d{1,3})?)s left of the call's timeout", message)
    assert left and float(left.group(1)) <= 0.3, message


def test_an_acl_user_refused_asking_gets_the_noperm_not_ask(redis_cluster):
    """Mid-migration a key that moved answers -ASK; a user whose ACL refuses ASKING
    gets that NOPERM (alone and in a batch), not a bare ASK after 16 hops."""
    from greenredis.client.slots import key_slot
    from greenredis.errors import NoPermissionError

    rc = redis_cluster
    for node in rc.primaries:
        rc.call(node, "ACL", "SETUSER", "noask", "on", ">pw", "~*", "+@all", "-asking")
    key = "{review-ask}k"
    slot = key_slot(key)
    admin = Cluster(rc.startup_nodes)
    c = Cluster(rc.startup_nodes, username="noask", password="pw")
    admin.cmd(["SET", key, "v"])
    target = next(n for n in rc.primaries if n is not rc.node_for_slot(slot))
    source = rc.begin_migration(slot, target)
    try:
        rc.move_keys(slot, source, target)
        with pytest.raises(NoPermissionError, match="asking"):
            c.cmd(["GET", key])
        reply = c.cmd([["GET", key], ["PING"]])
        assert isinstance(reply[0], NoPermissionError) and "asking" in str(reply[0]), reply
        assert reply[1] == b"PONG"
        assert admin.cmd(["GET", key]) == b"v"  # the admin's ASKING goes through
    finally:
        rc.finish_migration(slot, target)
        rc.migrate_slot(slot, source)
        admin.close()
        c.close()
