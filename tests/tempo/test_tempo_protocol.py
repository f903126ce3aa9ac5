"""Websocket protocol details and names (issue 9, item 15): unmasked client frames
are refused, shutdown closes with 1001, ``.`` and ``..`` are not instances."""

import base64
import json
import os
import socket
import struct

import pytest
from tempo_helpers import Client, WebProcess, frames

from greenredis.telemetry.stats import Stats
from greenredis.tempo import create_app
from greenredis.tempo.hub import Hub


def handshake(web):
    s = socket.create_connection(("127.0.0.1", web.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 101")
    return s, data.split(b"\r\n\r\n", 1)[1]


def read_close_code(s, buffered):
    data = buffered
    while True:
        while len(data) >= 2:
            op, n = data[0] & 0x0F, data[1] & 0x7F
            head = 2 + (2 if n == 126 else 8 if n == 127 else 0)
            if n >= 126:
                n = int.from_bytes(data[2:head], "big")
            if len(data) < head + n:
                break
            payload, data = data[head : head + n], data[head + n :]
            if op == 8:
                return struct.unpack("!H", payload[:2])[0]
        chunk = s.recv(65536)
        if not chunk:
            return None
        data += chunk


def test_unmasked_client_frame_closes_with_protocol_error(redis_server):
    with WebProcess(redis_server.url) as web:
        s, rest = handshake(web)
        body = b'{"op":"ping"}'
        s.sendall(bytes([0x81, len(body)]) + body)  # FIN + text, no mask bit
        assert read_close_code(s, rest) == 1002  # CloseCode.PROTOCOL_ERROR
        s.close()
        c = Client(web.ws_url)  # masked frames (every real client) still work
        c.send({"op": "ping"})
        assert c.recv() == {"type": "pong"}
        c.close()


def test_shutdown_closes_websockets_with_going_away(redis_server):
    web = WebProcess(redis_server.url).start()
    try:
        c = Client(web.ws_url)
        c.send({"op": "ping"})
        assert c.recv() == {"type": "pong"}
        web.proc.terminate()  # SIGTERM, as a platform sends
        opcode, data = c.ws.recv_data(control_frame=True)
        while opcode != 8:
            opcode, data = c.ws.recv_data(control_frame=True)
        assert struct.unpack("!H", data[:2])[0] == 1001  # CloseCode.GOING_AWAY
    finally:
        web.stop()


@pytest.mark.unit
@pytest.mark.parametrize("name", [".", ".."])
def test_dot_names_are_not_instances(name):
    hub = Hub()
    v = hub.connect()
    assert hub.receive(v, json.dumps({"op": "watch", "kind": "stats", "instance": name})) == []
    assert frames(v)[0]["error"] == "bad_instance"


def test_dot_names_are_404_and_not_links(r):
    for name in (".", "..", "ok.1"):
        Stats(r, "x").redis.cmd(["ZADD", "stats:instances", "+inf", name])
    c = create_app(redis=r, join_grid=False, password="").test_client()
    html = c.get("/", headers={"Host": "127.0.0.1"}).get_data(as_text=True)
    assert 'href="/instances/ok.1"' in html
    assert 'href="/instances/."' not in html and 'href="/instances/.."' not in html
    assert c.get("/instances/%2E%2E", headers={"Host": "127.0.0.1"}).status_code == 404
