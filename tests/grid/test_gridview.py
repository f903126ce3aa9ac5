"""GridView and Layout: the grid's pure logic, fed directly (no Redis needed)."""

import json

import pytest

from greenredis.backoff import RECONNECT_LONGEST
from greenredis.grid.view import GridDataError, GridView, Layout, clean_meta, valid_name

pytestmark = pytest.mark.unit  # pure: no server, no sockets

ME = {"ip": "10.0.0.1", "role": "web"}
A = {"ip": "10.0.0.2", "role": "worker"}


def view(**kw):
    kw.setdefault("ttl", 6)
    kw.setdefault("interval", 2)
    return GridView("me", ME, now=100.0, **kw)


# -- Layout ---------------------------------------------------------------------


def test_layout_names_match_original_redgrid():
    lay = Layout("prod", "v2")
    assert lay.channel == "redgrid:prod:v2"
    assert lay.key("web.1") == "redgrid:prod:v2:web.1"
    assert lay.index == "redgrid-index:prod:v2"
    assert lay.name_of(b"redgrid:prod:v2:web.1") == "web.1"
    assert lay.message("register", "web.1") == b"redgrid:prod:v2:web.1"
    assert lay.message("ping") == b"ping"
    assert lay.message("leave", "a") == b"leave redgrid:prod:v2:a"
    assert lay.message("update", "a", {"ip": "1.2.3.4"}) == b'update redgrid:prod:v2:a {"ip":"1.2.3.4"}'


def test_layout_parses_messages_and_rejects_garbage():
    lay = Layout("d", "1")
    assert lay.parse_message(b"ping") == ("ping", None, None, None)
    assert lay.parse_message(b"redgrid:d:1:host:42") == ("register", "host:42", None, None)
    assert lay.parse_message(b"leave redgrid:d:1:n") == ("leave", "n", None, None)
    meta = {"ip": "1.2.3.4", "note": "a {b} c"}
    assert lay.parse_message(lay.message("update", "n", meta)) == ("update", "n", meta, None)
    spaced = Layout("my app", "1")  # a domain with a space still parses
    assert spaced.parse_message(spaced.message("update", "n", meta)) == ("update", "n", meta, None)
    for bad in (
        b"redgrid:d:2:n",
        b"hello",
        b"redgrid:d:1:",
        b"\xff\xfe",
        b"redgrid:d:1:a b",
        b"leave redgrid:other:1:n",
        b"redgrid:d:1:" + b"x" * 300,
        b"update redgrid:d:1:n",
        b"update redgrid:d:1:n {bad",
        b'update redgrid:d:1:n {"a":"b"}',
        b'update redgrid:d:1:n {"ip":1}',
        b'update redgrid:d:2:n {"ip":"x"}',
    ):
        with pytest.raises(GridDataError):
            lay.parse_message(bad)


def test_layout_domain_version_isolation():
    a, b = Layout("d", "1"), Layout("d", "2")
    with pytest.raises(GridDataError):
        b.name_of(a.key("n"))
    assert Layout("x", "").channel != Layout("", "x").channel


def test_parse_meta():
    lay = Layout()
    assert lay.parse_meta([b"ip", b"1.2.3.4", b"role", b"web"]) == {"ip": "1.2.3.4", "role": "web"}
    assert lay.parse_meta({b"ip": b"1.2.3.4"}) == {"ip": "1.2.3.4"}
    assert lay.parse_meta([]) is None
    assert lay.parse_meta(None) is None
    with pytest.raises(GridDataError, match="without ip"):
        lay.parse_meta([b"foo", b"bar"])
    with pytest.raises(GridDataError, match="UTF-8"):
        lay.parse_meta([b"ip", b"\xff"])
    with pytest.raises(GridDataError, match="not a hash"):
        lay.parse_meta(ValueError("WRONGTYPE Operation against a key holding the wrong kind"))


def test_parse_index_skips_bad_entries():
    lay = Layout()
    entries, bad = lay.parse_index([b"a", b"100.5", b"\xff", b"1", b"b c", b"2", b"c", b"nan?"])
    assert entries == {"a": 100.5}
    assert len(bad) == 3 and all(isinstance(e, GridDataError) for e in bad)
    assert lay.parse_index([[b"a", 1.0]]) == ({"a": 1.0}, [])  # RESP3 pairs


def test_valid_name():
    assert valid_name("web.1") and valid_name("host:123") and valid_name("é")
    assert not any(valid_name(n) for n in ("", "a b", "a\nb", "x" * 256, None, b"a"))


# -- GridView -------------------------------------------------------------------


def test_view_includes_itself_and_validates():
    v = view()
    assert v.nodes() == {"me": ME}
    with pytest.raises(ValueError):
        GridView("bad name", ME)
    with pytest.raises(ValueError, match="twice the interval"):
        GridView("me", ME, ttl=10, interval=5)


def test_join_update_leave_events():
    v = view()
    (e,) = v.seen("a", A, 101)
    assert (e.kind, e.name, e.meta, e.reason) == ("join", "a", A, "joined")
    assert v.seen("a", A, 102) == []  # same registration: nothing new
    (e,) = v.seen("a", dict(A, weight="0"), 103)
    assert (e.kind, e.meta["weight"]) == ("update", "0")
    assert v.nodes()["a"]["weight"] == "0"
    (e,) = v.leave("a", 104)
    assert (e.kind, e.reason) == ("leave", "left")
    assert "a" not in v.nodes()
    assert v.leave("a", 105) == []
    (e,) = v.seen("a", A, 106)
    assert (e.kind, e.reason) == ("join", "rejoined")


def test_nodes_returns_copies():
    v = view()
    v.seen("a", A, 101)
    v.nodes()["a"]["ip"] = "x"
    assert v.nodes()["a"]["ip"] == "10.0.0.2"


def test_self_is_never_expired_nor_replaced():
    v = view()
    assert v.seen("me", A, 101) == []
    assert v.leave("me", 101) == []
    assert v.tick(10_000) == []
    assert v.nodes() == {"me": ME}
    (e,) = v.set_self(dict(ME, weight="1"), 102)
    assert e.kind == "update" and v.nodes()["me"]["weight"] == "1"


def test_expiry_within_ttl_from_last_sign_of_life():
    v = view()
    v.seen("a", A, 101)
    assert v.next_deadline() == 107
    assert v.tick(106.9) == []
    (e,) = v.tick(107)
    assert (e.kind, e.name, e.reason) == ("leave", "a", "expired")
    assert v.nodes() == {"me": ME}
    assert v.counters["expired"] == 1


def test_reconcile_score_going_up_keeps_node_alive():
    v = view()
    v.seen("a", A, 101)
    fetch, trim = v.reconcile({"a": 101.0, "me": 101.0}, 102)
    assert fetch == [] and trim == (None, None)
    fetch, _ = v.reconcile({"a": 105.0}, 106)
    assert v.next_deadline() == 111  # last seen at its heartbeat score
    assert v.tick(110) == []
    # score stops moving: the node died after its heartbeat at 105
    v.reconcile({"a": 105.0}, 108)
    assert [e.kind for e in v.tick(111)] == ["leave"]


def test_reconcile_caps_future_scores_at_now():
    v = view()
    v.seen("a", A, 101)
    v.reconcile({"a": 101.0}, 101)
    v.reconcile({"a": 105.0}, 102)  # ahead, within ttl: alive as of now, not later
    assert v.next_deadline() == 108


def test_reconcile_ignores_and_trims_scores_far_in_the_future():
    v = view()
    v.seen("a", A, 101)
    v.reconcile({"a": 101.0}, 101)
    fetch, trim = v.reconcile({"a": 500.0, "ghost": 900.0}, 102)  # more than ttl ahead
    assert fetch == [] and trim == (None, 102 + 6)
    assert v.next_deadline() == 107  # no sign of life from a bogus score


def test_reconcile_fetches_unknown_fresh_nodes_only():
    v = view()
    fetch, trim = v.reconcile({"b": 99.0, "old": 93.0, "dead": 80.0, "me": 100.0}, 100)
    assert fetch == ["b"]  # "old" is older than ttl: not alive
    assert trim == (100 - 12, None)  # "dead" is older than 2 * ttl: trim it


def test_full_reconcile_refetches_known_nodes():
    v = view()
    v.seen("a", A, 100)
    assert v.reconcile({"a": 100.0}, 100)[0] == []
    assert v.reconcile({"a": 100.0}, 100, full=True)[0] == ["a"]


def test_missing_from_index_is_not_death():
    """A restarted Redis forgets the index; nodes expire by ttl, not at once."""
    v = view()
    v.seen("a", A, 100)
    v.reconcile({"a": 100.0}, 100)
    fetch, _ = v.reconcile({}, 101)
    assert fetch == [] and "a" in v.nodes()


def test_foreign_nodes_are_fetched_on_each_reconcile_and_on_each_message():
    v = view()
    v.seen("erl", A, 100)  # learned from its key, never seen in the index
    assert v.reconcile({}, 101)[0] == ["erl"]
    assert v.on_message("register", "erl", 101) == ([], True)


def test_messages():
    v = view()
    assert v.on_message("register", "a", 100) == ([], True)  # unknown: fetch
    v.seen("a", A, 100)
    assert v.on_message("register", "a", 100)[1] is True  # not known to speak greenredis yet
    v.reconcile({"a": 100.0}, 100)
    assert v.on_message("register", "a", 103) == ([], False)  # sign of life only
    assert v.next_deadline() == 109
    assert v.on_message("update", "a", 103) == ([], True)  # no meta in it: fetch
    events, fetch = v.on_message("update", "a", 103, dict(A, w="1"))
    assert [(e.kind, e.meta["w"]) for e in events] == [("update", "1")] and not fetch
    events, fetch = v.on_message("update", "b", 103, A)  # a greenredis newcomer
    assert [e.kind for e in events] == ["join"] and not fetch
    assert v.on_message("register", "b", 103) == ([], False)
    assert v.on_message("ping", None, 103) == ([], False)
    assert v.on_message("register", "me", 103) == ([], False)
    events, fetch = v.on_message("leave", "a", 104)
    assert [e.kind for e in events] == ["leave"] and not fetch


def test_stale_view_does_not_expire_and_recovery_gives_grace():
    v = view()
    v.seen("a", A, 100)
    v.mark_stale(101)
    v.mark_stale(102)
    assert v.stale and v.stale_since == 101
    assert v.tick(1000) == []
    assert "a" in v.nodes()
    assert {h["state"] for h in v.health(1000).values()} == {"stale"}
    v.recover(1000)
    assert not v.stale
    assert v.tick(1000 + v.grace - 0.1) == []
    assert [e.name for e in v.tick(1000 + v.grace)] == ["a"]


def test_recovery_grace_covers_a_live_node_s_longest_reconnect_wait():
    """A live node's client may be in its longest reconnect wait (the client's backoff, with
    jitter) when Redis comes back, then in its writer's backoff, then due a beat: the view
    that recovered first must not expire it meanwhile (it did with a short interval)."""
    v = GridView("me", {}, ttl=4, interval=0.5, now=100)
    v.seen("b", A, 100)
    v.mark_stale(101)
    v.recover(110)
    back = RECONNECT_LONGEST + min(2.0, v.interval) * 1.2 + v.interval
    assert v.tick(110 + back) == []
    assert "b" in v.nodes()


def test_health_states_and_gone_nodes_kept_a_while():
    v = view(keep_gone=30)
    v.seen("a", A, 100)
    v.seen("b", A, 100)
    h = v.health(101)
    assert h["a"]["state"] == "up" and h["me"]["self"] and h["a"]["last_seen"] == 100
    assert v.health(106)["a"]["state"] == "stale"  # 2.5 intervals without news
    v.leave("b", 102)
    h = v.health(102)
    assert h["b"]["state"] == "gone" and h["b"]["reason"] == "left" and h["b"]["gone_at"] == 102
    v.seen("a", A, 130)
    v.tick(131)
    v.tick(133)
    assert "b" not in v.health(133)  # forgotten after keep_gone
    assert v.health(133)["a"]["state"] == "up"


def test_bad_data_is_counted():
    v = view()
    v.bad_data("message", "junk")
    v.bad_data("registration", "junk")
    assert v.counters["bad_messages"] == 1 and v.counters["bad_data"] == 1


def test_a_leave_after_a_crash_and_restart_under_the_same_name_drops_the_node():
    """A crashes, its successor B (same name: a restarted dyno) joins and then
    stops gracefully: A is not a live twin (not heard of since B came), so
    peers drop the node at once instead of keeping it for ttl."""
    v = GridView("me", {"ip": "1"}, ttl=30, interval=5, now=0)
    v.on_message("update", "t", 0.0, {"ip": "2"}, instance="aaaa")
    v.on_message("update", "t", 1.0, {"ip": "2"}, instance="bbbb")  # A crashed; B took over
    events = v.leave("t", 2.0, instance="bbbb")
    assert [e.kind for e in events] == ["leave"] and "t" not in v.nodes()
    # real twins (both announce every beat) still spare each other
    v.on_message("update", "u", 10.0, {"ip": "3"}, instance="aaaa")
    v.on_message("update", "u", 11.0, {"ip": "3"}, instance="bbbb")
    v.on_message("update", "u", 11.5, {"ip": "3"}, instance="aaaa")  # A told of B: still alive
    assert v.leave("u", 12.0, instance="bbbb") == [] and "u" in v.nodes()
    assert [e.kind for e in v.leave("u", 13.0, instance="aaaa")] == ["leave"]


def test_oversized_messages_and_registrations_are_bad_data():
    """A peer's meta is capped at 64 KiB when set; what arrives far beyond that (a
    forged 10 MB update, a hash of 100,000 fields) is skipped, not kept in every view."""
    lay = Layout("d", "1")
    big = {"ip": "1", "x": "y" * 10_000_000}
    with pytest.raises(GridDataError):
        lay.parse_message(f"update redgrid:d:1:n {json.dumps(big)}".encode())
    with pytest.raises(GridDataError):
        lay.parse_registration([b"ip", b"1"] + [x for i in range(100_000) for x in (b"k%d" % i, b"v")])
    # the largest meta a node may set still passes, even with every char escaped in JSON
    for most in ({"ip": "1", "x": "\n" * (64 * 1024 - 4)}, {"ip": "1", "x": "é" * (32 * 1024 - 2)}):
        assert len(clean_meta(most)) == 2
        assert lay.parse_message(lay.message("update", "n", most, "abcd")).meta == most
        flat = [x.encode() for kv in most.items() for x in kv] + [b"_instance", b"abcd"]
        assert lay.parse_registration(flat) == (most, "abcd")
