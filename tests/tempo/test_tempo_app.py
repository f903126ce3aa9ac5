"""Tempo's pages, auth and escaping through Flask's test client (a real redis-server)."""

import base64
import json
import re

import pytest

from greenredis.grid.node import Grid
from greenredis.telemetry.stats import Stats
from greenredis.tempo import create_app
from greenredis.tempo.registry import merge


def config_of(html):
    m = re.search(r'<script id="tempo-config" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def basic(password, user="ops"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_pages_render_instances_and_404_for_unknown(r):
    Stats(r, "web.1").publish("requests_per_sec", 5)
    app = create_app(redis=r, join_grid=False, password="")
    c = app.test_client()
    index = c.get("/")
    assert index.status_code == 200
    html = index.get_data(as_text=True)
    assert 'href="/instances/web.1"' in html and 'data-metric="requests_per_sec"' in html
    page = c.get("/instances/web.1")
    assert page.status_code == 200
    cfg = config_of(page.get_data(as_text=True))
    assert cfg == {
        "ws": "/ws",
        "token": None,
        "tokenUrl": "/token",
        "auth": False,
        "live": True,
        "liveError": None,
        "page": "instance",
        "instance": "web.1",
    }
    assert c.get("/instances/web.1/logs").status_code == 200
    assert c.get("/instances/ghost").status_code == 404
    assert c.get("/instances/a%20b").status_code == 404  # not a valid name
    assert c.get("/ws").status_code == 400  # not a websocket request
    assert c.get("/api/instances").get_json()["nodes"][0]["name"] == "web.1"
    assert "script-src 'self'" in index.headers["Content-Security-Policy"]


def test_names_and_meta_are_escaped_everywhere(r):
    evil = "<b>x</b>"  # a valid instance name? no: it has a slash
    with pytest.raises(ValueError):
        Stats(r, evil)
    name = "<i>\"x'&"
    Stats(r, name).publish("rps", 1)
    grid = Grid(r, name="<svg>", meta={"role": "<script>alert(1)</script>"}, ttl=30, interval=5)
    grid.start()
    try:
        assert grid.wait(10)
        app = create_app(redis=r, join_grid=True, password="")
        c = app.test_client()
        html = c.get("/").get_data(as_text=True)
        assert "<i>" not in html and "<svg>" not in html and "<script>alert" not in html
        assert "&lt;i&gt;&#34;x&#39;&amp;" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        page = c.get("/instances/" + name.replace("&", "%26").replace('"', "%22"))
        assert page.status_code == 200
        body = page.get_data(as_text=True)
        assert "<i>" not in body
        # the JSON handed to the page escapes <, > and & so it cannot close the script tag
        raw = re.search(r'id="tempo-config" type="application/json">(.*?)</script>', body, re.S).group(1)
        assert "<" not in raw and config_of(body)["instance"] == name
    finally:
        grid.stop()


def test_basic_auth_protects_pages_and_token(r):
    Stats(r, "web.1").publish("rps", 1)
    app = create_app(redis=r, join_grid=False, password="s3cret")
    c = app.test_client()
    for path in [
        "/",
        "/instances/web.1",
        "/instances/web.1/logs",
        "/token",
        "/api/instances",
        "/static/tempo.js",
    ]:
        resp = c.get(path)
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert c.get(path, headers=basic("wrong")).status_code == 401
        assert c.get(path, headers=basic("s3cret")).status_code == 200, path
    assert c.get("/healthz").status_code == 200  # for the platform's health checks
    cfg = config_of(c.get("/instances/web.1", headers=basic("s3cret")).get_data(as_text=True))
    assert cfg["auth"] is True and cfg["token"]
    token = c.get("/token", headers=basic("s3cret")).get_json()
    assert token["token"] and token["expires_in"] == 60


def test_secret_key_comes_from_env_or_password(monkeypatch, r):
    monkeypatch.setenv("TEMPO_SECRET_KEY", "k1")
    assert create_app(redis=r, password="p").config["SECRET_KEY"] == "k1"
    monkeypatch.delenv("TEMPO_SECRET_KEY")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    a = create_app(redis=r, password="p").config["SECRET_KEY"]
    assert a == create_app(redis=r, password="p").config["SECRET_KEY"]  # same across processes
    assert a != create_app(redis=r, password="q").config["SECRET_KEY"]


def test_registry_merge_health():
    health = {
        "web.1": {"state": "up", "meta": {"role": "web"}, "last_seen": 99.0},
        "web.2": {"state": "gone", "meta": {}, "last_seen": 50.0},
    }
    seen = {"web.1": 100.0, "solo": 95.0, "old": 10.0, "mid": 60.0}
    snap = merge(health, seen, {"web.1": ["rps"]}, now=100.0)
    by = {n["name"]: n for n in snap["nodes"]}
    assert [n["name"] for n in snap["nodes"]] == ["mid", "old", "solo", "web.1", "web.2"]
    assert by["web.1"]["health"] == "up" and by["web.1"]["metrics"] == ["rps"]
    assert by["web.2"]["health"] == "gone"
    assert (by["solo"]["health"], by["mid"]["health"], by["old"]["health"]) == ("up", "stale", "gone")
    assert merge(health, {}, {}, 100.0, grid_stale=True)["stale"] is True
    assert merge(None, {}, {}, 100.0, redis_ok=False) == {"stale": True, "redis": False, "nodes": []}


def test_send_timeout_comes_from_env_and_must_be_positive():
    from greenredis.tempo.app import TempoConfig

    assert TempoConfig.from_env({}).send_timeout == 30.0
    assert TempoConfig.from_env({"TEMPO_SEND_TIMEOUT": "2.5"}).send_timeout == 2.5
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(ValueError, match="TEMPO_SEND_TIMEOUT must be a"):
            TempoConfig.from_env({"TEMPO_SEND_TIMEOUT": bad})


@pytest.mark.parametrize(
    "var,bad",
    [
        ("TEMPO_TOKEN_TTL", "nan"),  # every token check raised (math.ceil) at the first websocket
        ("TEMPO_TOKEN_TTL", "inf"),
        ("TEMPO_TOKEN_TTL", "-5"),  # a token was accepted more than once: its nonce expired at once
        ("TEMPO_TOKEN_TTL", "0"),
        ("TEMPO_QUEUE_SIZE", "0"),
        ("TEMPO_QUEUE_SIZE", "-1"),
        ("TEMPO_QUEUE_BYTES", "0"),  # every viewer closed as slow at its first message
        ("TEMPO_MAX_MESSAGE", "-1"),
        ("TEMPO_MAX_METRICS", "0"),
        ("TEMPO_HISTORY_BYTES", "-1"),
    ],
)
def test_every_numeric_setting_must_be_a_positive_number(var, bad):
    from greenredis.tempo.app import TempoConfig

    with pytest.raises(ValueError, match=f"{var} must be a positive (number|integer)"):
        TempoConfig.from_env({var: bad})


def test_a_setting_given_as_an_argument_wins_even_when_falsy():
    """``given`` values that are not None win: 0 is refused, not taken for "use the default"."""
    from greenredis.tempo.app import TempoConfig

    for name in ("token_ttl", "queue_size", "send_timeout"):
        with pytest.raises(ValueError, match="must be a positive (number|integer)"):
            TempoConfig.from_env({}, **{name: 0})
    assert TempoConfig.from_env({"TEMPO_QUEUE_SIZE": "9"}, queue_size=3).queue_size == 3


def test_a_huge_send_timeout_is_taken():
    from greenredis.tempo.app import TempoConfig

    for value, want in (("1e9", 1e9), ("inf", float("inf"))):
        assert TempoConfig.from_env({"TEMPO_SEND_TIMEOUT": value}).send_timeout == want


def test_gone_after_comes_from_the_config():
    from greenredis.tempo.app import TempoConfig

    assert TempoConfig.from_env({"TEMPO_GONE_AFTER": "60"}).gone_after == 60.0
    for bad in ("abc", "0", "nan"):
        with pytest.raises(ValueError, match="TEMPO_GONE_AFTER must be a positive number"):
            TempoConfig.from_env({"TEMPO_GONE_AFTER": bad})
