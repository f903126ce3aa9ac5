"""The pure part of cluster pub/sub: which channel goes to which node."""

from greenredis.client.cluster_pubsub_routes import Routes, plan_shards

A, B, C = ("127.0.0.1", 7000), ("127.0.0.1", 7001), ("127.0.0.1", 7002)


def test_new_channels_go_to_their_owners():
    plan = plan_shards({b"x": A, b"y": B, b"z": A}, {})
    assert plan.subscribe == {A: (b"x", b"z"), B: (b"y",)}
    assert plan.unsubscribe == {} and plan.close == ()


def test_a_moved_channel_leaves_its_old_node_and_an_unneeded_node_closes():
    current = {A: {b"x", b"z"}, B: {b"y"}, C: {b"w"}}
    plan = plan_shards({b"x": A, b"z": B, b"y": B}, current)
    assert plan.subscribe == {B: (b"z",)}
    assert plan.unsubscribe == {A: (b"z",)}
    assert plan.close == (C,)


def test_nothing_to_do_when_settled():
    assert plan_shards({b"x": A}, {A: {b"x"}}).empty


def test_moved_beats_the_slot_map_until_forgotten():
    slots = {b"x": 1, b"y": 2}
    routes = Routes(slots.__getitem__, {1: A, 2: None}.get)
    assert routes.owners({b"x", b"y"}) == ({b"x": A}, [b"y"])
    routes.moved(1, B)
    routes.moved(2, C)
    assert routes.owners({b"x", b"y"}) == ({b"x": B, b"y": C}, [])
    routes.forget()
    assert routes.owners({b"x"}) == ({b"x": A}, [])
