"""Logins, tokens and headers (issue 9, item 14): the Guard fed directly, then
through the Flask app and a real web process."""

import base64

import pytest
from tempo_helpers import Client, WebProcess

from greenredis.tempo import create_app
from greenredis.tempo.guard import Guard


def basic(password):
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.unit
def test_failed_logins_are_rate_limited_per_address():
    clock = Clock()
    g = Guard("pw", "k", login_burst=10, login_every=6.0, clock=clock)
    assert [g.login("1.2.3.4", "wrong").status for _ in range(10)] == [401] * 10
    limited = g.login("1.2.3.4", "wrong")
    assert limited.status == 429 and 1 <= limited.retry_after <= 6
    assert g.login("1.2.3.4", "pw").status == 429  # not even checked while limited
    assert g.login("5.6.7.8", "pw").ok  # other addresses unaffected
    assert g.login("1.2.3.4", None).status == 429
    clock.now += limited.retry_after
    assert g.login("1.2.3.4", "pw").ok
    assert g.login("9.9.9.9", None).status == 401  # no password sent: a prompt, not a guess
    assert [g.login("9.9.9.9", None).status for _ in range(50)] == [401] * 50


@pytest.mark.unit
def test_tokens_are_single_use_and_bound_to_their_host():
    clock = Clock()
    g = Guard("pw", "k", token_ttl=60, clock=clock)
    tok = g.issue_token("tempo.example:5000")
    assert g.websocket_problem("evil.example", None, tok) == "token issued for another host"
    assert g.websocket_problem("tempo.example:5000", None, tok) is None
    assert g.websocket_problem("tempo.example:5000", None, tok) == "token already used"
    assert g.websocket_problem("tempo.example:5000", None, "garbage") == "bad token"
    assert g.websocket_problem("tempo.example:5000", None, None) == "token required"
    for _ in range(100):  # used nonces are forgotten once their tokens expired
        assert g.websocket_problem("h", None, g.issue_token("h")) is None
    clock.now += 200
    g.websocket_problem("h", None, g.issue_token("h"))
    assert len(g._used) == 1


def test_app_answers_429_with_retry_after_and_strict_headers(r):
    c = create_app(redis=r, join_grid=False, password="pw").test_client()
    statuses = [c.get("/", headers=basic(f"guess{i}")).status_code for i in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    resp = c.get("/", headers=basic("pw"))
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "viewers" not in c.get("/healthz", headers=basic("pw")).get_json()  # no oracle either
    c2 = create_app(redis=r, join_grid=False, password="").test_client()
    resp = c2.get("/", headers={"Host": "127.0.0.1"})
    csp = resp.headers["Content-Security-Policy"]
    assert "connect-src 'self';" in csp and "ws:" not in csp
    assert "base-uri 'none'" in csp and "form-action 'self'" in csp
    assert "Strict-Transport-Security" not in resp.headers
    resp = c2.get("/", headers={"Host": "127.0.0.1", "X-Forwarded-Proto": "https"})
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


def test_a_token_opens_one_websocket_on_its_own_host(redis_server):
    with WebProcess(redis_server.url, TEMPO_PASSWORD="pw") as web:
        tok = web.get_json("/token", auth="ops:pw")["token"]
        c = Client(f"{web.ws_url}?token={tok}")
        c.send({"op": "ping"})
        assert c.recv() == {"type": "pong"}
        c.close()
        again = Client(f"{web.ws_url}?token={tok}")  # replayed
        m = again.recv()
        assert m["error"] == "forbidden" and m["message"] == "token already used"
        tok = web.get_json("/token", auth="ops:pw")["token"]
        other = Client(
            f"{web.ws_url}?token={tok}", host=f"localhost:{web.port}", origin=f"http://localhost:{web.port}"
        )
        assert other.recv()["message"] == "token issued for another host"
