"""Where a cluster's sharded subscriptions belong, as pure code: no sockets, no gevent.

A sharded channel lives in its slot, so a ``ShardedSubscription`` keeps one
connection per primary that owns one of its channels. ``plan_shards`` compares
where each channel should be (its slot's owner) with where it is subscribed now
and says what to change; ``Routes`` holds the owners learned from ``-MOVED``
replies, which beat a slot map that may not have caught up with a slot move yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Callable, Dict, List, Mapping, Optional, Tuple

__all__ = ["Address", "ShardPlan", "plan_shards", "Routes"]

Address = Tuple[str, int]


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """``close``: connections no channel needs; ``subscribe``/``unsubscribe``: the
    channels to (un)subscribe on each node, sorted."""

    close: Tuple[Address, ...] = ()
    subscribe: Mapping[Address, Tuple[bytes, ...]] = field(default_factory=dict)
    unsubscribe: Mapping[Address, Tuple[bytes, ...]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.close or self.subscribe or self.unsubscribe)


def plan_shards(owners: Mapping[bytes, Address], current: Mapping[Address, AbstractSet[bytes]]) -> ShardPlan:
    """``owners``: each wanted channel -> the node that owns its slot; ``current``:
    each open connection -> the channels subscribed on it. A channel subscribed on a
    node that no longer owns it is unsubscribed there (unless that connection closes
    anyway) and subscribed on its owner."""
    subscribe: Dict[Address, List[bytes]] = {}
    unsubscribe: Dict[Address, List[bytes]] = {}
    needed = set(owners.values())
    for channel, owner in owners.items():
        if channel not in current.get(owner, ()):
            subscribe.setdefault(owner, []).append(channel)
    for address, channels in current.items():
        if address not in needed:
            continue
        extra = [c for c in channels if owners.get(c) != address]
        if extra:
            unsubscribe[address] = extra
    return ShardPlan(
        close=tuple(sorted(a for a in current if a not in needed)),
        subscribe={a: tuple(sorted(c)) for a, c in sorted(subscribe.items())},
        unsubscribe={a: tuple(sorted(c)) for a, c in sorted(unsubscribe.items())},
    )


class Routes:
    """Channel -> owner, from the slot map (``slot_of``, ``owner_of_slot``) unless a
    ``-MOVED`` named a newer owner of the slot (``moved``). ``forget`` drops those once
    the slot map is fresh again."""

    __slots__ = ("slot_of", "owner_of_slot", "_moved")

    def __init__(
        self, slot_of: Callable[[bytes], int], owner_of_slot: Callable[[int], Optional[Address]]
    ) -> None:
        self.slot_of = slot_of
        self.owner_of_slot = owner_of_slot
        self._moved: Dict[int, Address] = {}

    def moved(self, slot: int, address: Address) -> None:
        self._moved[slot] = address

    def forget(self) -> None:
        self._moved.clear()

    def owners(self, channels: AbstractSet[bytes]) -> Tuple[Dict[bytes, Address], List[bytes]]:
        """``({channel: owner}, [channels whose slot has no owner now])``."""
        out: Dict[bytes, Address] = {}
        unowned: List[bytes] = []
        for channel in channels:
            slot = self.slot_of(channel)
            owner = self._moved.get(slot) or self.owner_of_slot(slot)
            if owner is None:
                unowned.append(channel)
            else:
                out[channel] = owner
        return out, sorted(unowned)
