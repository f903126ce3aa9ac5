"""Referees for the cluster tests: Redis's slot of a name, and a publisher that is not
greenredis."""

import binascii

from greenredis.errors import MovedError
from greenredis.server import admin_call


def slot(name):
    """Redis's slot of a key or sharded channel, computed here (cluster.c keyHashSlot)."""
    key = name.encode() if isinstance(name, str) else name
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % 16384


def channels_on_every_primary(rc, per_node=2, prefix="ch"):
    """``{port: [channel names]}``: ``per_node`` channels owned by each primary."""
    owners = {}
    for slot_, node in _slot_owners(rc).items():
        owners.setdefault(node, []).append(slot_)
    out = {port: [] for port in owners}
    i = 0
    by_slot = {s: p for p, slots in owners.items() for s in slots}
    while any(len(v) < per_node for v in out.values()):
        name = f"{prefix}{i}"
        i += 1
        port = by_slot[slot(name)]
        if len(out[port]) < per_node:
            out[port].append(name)
    return out


def _slot_owners(rc):
    owners, _ = rc.wait_ok()
    by_id = {rc.node_id(n): n.port for n in rc.nodes if n.running}
    return {s: by_id[node_id] for node_id, slots in owners.items() for s in slots}


class Publisher:
    """SPUBLISH/PUBLISH with plain sockets (the launcher's ``admin_call``), following
    ``-MOVED`` by hand: a referee independent of the client under test."""

    def __init__(self, rc):
        self.rc = rc
        self.owner = {}  # slot -> port

    def spublish(self, slot, channel, data):
        port = self.owner.get(slot)
        if port is None:
            port = self.owner[slot] = self.rc.node_for_slot(slot).port
        for _ in range(5):
            try:
                return admin_call(port, "SPUBLISH", channel, data)
            except MovedError as e:
                port = self.owner[slot] = e.address[1]
            except OSError:  # the node is gone: ask the cluster again
                port = self.owner[slot] = self.rc.node_for_slot(slot).port
        raise AssertionError(f"SPUBLISH {channel} kept being redirected")

    def publish(self, port, channel, data):
        return admin_call(port, "PUBLISH", channel, data)
