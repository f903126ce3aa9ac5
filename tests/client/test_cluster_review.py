"""Review findings on the cluster client that need no cluster: a startup node that
accepts connections and never answers (a socket opened and never read)."""

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
    assert "0.3s" in message, message  # not "within the call's 0.29987...s"
