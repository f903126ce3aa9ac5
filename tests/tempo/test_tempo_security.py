"""Tempo's token key, Host allowlist (DNS rebinding), /healthz and grid timing."""

import base64
import hashlib
import json
import urllib.request

import pytest
from itsdangerous import BadSignature, URLSafeTimedSerializer
from tempo_helpers import Client, WebProcess

from greenredis.cli.demo import SimInstance
from greenredis.grid.timing import grid_timing
from greenredis.tempo import create_app
from greenredis.tempo.app import WS_SALT, host_allowed


def basic(password):
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


def test_token_key_is_a_slow_derivation_of_the_password(monkeypatch, r):
    monkeypatch.delenv("TEMPO_SECRET_KEY", raising=False)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app(redis=r, join_grid=False, password="sunshine1")
    tok = app.test_client().get("/token", headers=basic("sunshine1")).get_json()["token"]
    fast = hashlib.sha256(b"greenredis.tempo:sunshine1").hexdigest()
    with pytest.raises(BadSignature):  # a cheap guess no longer checks against a token
        URLSafeTimedSerializer(fast, salt=WS_SALT).loads(tok)
    slow = hashlib.scrypt(
        b"sunshine1", salt=b"greenredis.tempo.token-key.v1", n=2**16, r=8, p=1, maxmem=128 << 20, dklen=32
    ).hex()
    assert URLSafeTimedSerializer(slow, salt=WS_SALT).loads(tok)["h"] == "localhost"


def test_host_allowlist():
    for host in ["127.0.0.1", "127.0.0.1:5000", "localhost:80", "LOCALHOST", "[::1]:8080"]:
        assert host_allowed(host, frozenset()), host
    for host in ["evil.example", "evil.example:5000", "127.0.0.1.evil.example", "", "[::1", "10.0.0.5:5000"]:
        assert not host_allowed(host, frozenset()), host
    assert host_allowed("myapp.herokuapp.com", frozenset({"myapp.herokuapp.com"}))
    assert host_allowed("tempo:8000", frozenset({"tempo:8000"}))
    assert not host_allowed("tempo:9000", frozenset({"tempo:8000"}))
    assert host_allowed("anything", frozenset({"*"}))


def test_pages_without_password_answer_only_allowed_hosts(monkeypatch, r):
    monkeypatch.delenv("TEMPO_HOSTS", raising=False)
    c = create_app(redis=r, join_grid=False, password="").test_client()
    assert c.get("/", headers={"Host": "127.0.0.1:5000"}).status_code == 200
    resp = c.get("/api/instances", headers={"Host": "evil.example:5000"})
    assert resp.status_code == 403 and b"TEMPO_HOSTS" in resp.data
    assert c.get("/healthz", headers={"Host": "evil.example"}).get_json() == {
        "ok": True,
        "redis": True,
        "live": True,
    }
    assert "viewers" in c.get("/healthz", headers={"Host": "localhost"}).get_json()
    monkeypatch.setenv("TEMPO_HOSTS", "tempo.example.com, evil.example")
    c = create_app(redis=r, join_grid=False, password="").test_client()
    assert c.get("/", headers={"Host": "evil.example:5000"}).status_code == 200
    # with a password, pages are guarded by it (and not by Host)
    c = create_app(redis=r, join_grid=False, password="pw", hosts=[]).test_client()
    assert c.get("/", headers={"Host": "other.example", **basic("pw")}).status_code == 200


def test_healthz_without_auth_is_minimal(r):
    c = create_app(redis=r, join_grid=False, password="pw").test_client()
    assert c.get("/healthz").get_json() == {"ok": True, "redis": True, "live": True}
    assert c.get("/healthz", headers=basic("wrong")).get_json() == {"ok": True, "redis": True, "live": True}
    full = c.get("/healthz", headers=basic("pw")).get_json()
    assert full["viewers"] == 0 and full["channels"] == []


def test_websocket_refuses_a_rebound_host(redis_server):
    with WebProcess(redis_server.url) as web:
        foreign = f"evil.example:{web.port}"
        c = Client(web.ws_url, host=foreign, origin=f"http://{foreign}")
        m = c.recv()
        assert m["error"] == "forbidden" and "TEMPO_HOSTS" in m["message"]
        c.close()
        c = Client(web.ws_url, origin=web.url)  # loopback still works
        c.send({"op": "ping"})
        assert c.recv() == {"type": "pong"}
        c.close()
    with WebProcess(redis_server.url, TEMPO_HOSTS="evil.example") as web:
        foreign = f"evil.example:{web.port}"
        c = Client(web.ws_url, host=foreign, origin=f"http://{foreign}")
        c.send({"op": "ping"})
        assert c.recv() == {"type": "pong"}
        c.close()


def test_with_a_password_a_public_host_name_needs_no_allowlist(redis_server):
    # Heroku-style: only TEMPO_PASSWORD set, the app reached by its public name.
    with WebProcess(redis_server.url, TEMPO_PASSWORD="pw") as web:
        public = f"myapp.example:{web.port}"
        req = urllib.request.Request(web.url + "/token", headers={"Host": public, **basic("pw")})
        token = json.loads(urllib.request.urlopen(req, timeout=5).read())["token"]
        c = Client(f"{web.ws_url}?token={token}", host=public, origin=f"http://{public}")
        c.send({"op": "ping"})
        assert c.recv() == {"type": "pong"}
        c.close()
        c = Client(web.ws_url, host=public, origin=f"http://{public}")  # no token: refused
        assert c.recv()["error"] == "forbidden"
        c.close()


def test_grid_timing_is_shared_by_the_dashboard_and_the_demo(monkeypatch, r):
    assert grid_timing({}) == (30.0, 5.0)
    assert grid_timing({"GRID_TTL": "9", "GRID_INTERVAL": "2"}) == (9.0, 2.0)
    for bad in [
        {"GRID_TTL": "x"},
        {"GRID_TTL": "10", "GRID_INTERVAL": "5"},
        {"GRID_INTERVAL": "-1"},
        {"GRID_TTL": "inf"},
    ]:
        with pytest.raises(ValueError):
            grid_timing(bad)
    monkeypatch.setenv("GRID_TTL", "9")
    monkeypatch.setenv("GRID_INTERVAL", "2")
    sim = SimInstance(r, "demo-web.1", "web", 0)
    assert (sim.grid.ttl, sim.grid.interval) == (9.0, 2.0)
    sim.handler.close(timeout=2)
    live = create_app(redis=r, join_grid=True).extensions["tempo"]()
    try:
        assert (live.registry.grid.ttl, live.registry.grid.interval) == (9.0, 2.0)
    finally:
        live.stop()
        live.registry.grid.stop()
