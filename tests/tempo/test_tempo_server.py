"""The web process against clients that never finish a request (issue 9, item 7):
real sockets against ``greenredis web`` in a subprocess."""

import socket
import time

import pytest
from tempo_helpers import Client, WebProcess

HEADER_TIMEOUT = 1.0


@pytest.fixture
def web(redis_server):
    with WebProcess(
        redis_server.url,
        args=["--max-connections", "8"],
        TEMPO_HEADER_TIMEOUT=HEADER_TIMEOUT,
        TEMPO_IDLE_TIMEOUT=HEADER_TIMEOUT,
        TEMPO_MAX_PER_IP=0,
    ) as w:
        yield w


def connect(web):
    return socket.create_connection(("127.0.0.1", web.port), timeout=30)


def closed_by_server(sock, timeout=30):
    """True when the server closes ``sock`` within ``timeout`` (reads what it sends)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def healthz(web):
    s = connect(web)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    s.settimeout(10)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data


def test_idle_sockets_are_closed_and_do_not_lock_everyone_out(web):
    idle = [connect(web) for _ in range(8)]  # every pool slot
    half = connect(web)
    half.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a request line, headers never end
    assert all(closed_by_server(s) for s in idle + [half])
    assert healthz(web).startswith(b"HTTP/1.1 200")


def test_a_dribbled_request_is_closed_at_the_deadline(web):
    s = connect(web)
    s.sendall(b"GET / HTTP/1.1\r\n")
    sent = 0
    try:
        for _ in range(int(HEADER_TIMEOUT * 50)):  # one byte per 0.1 s: 5 deadlines' worth
            s.sendall(b"X-A: b\r\n")
            sent += 1
            time.sleep(0.1)
    except OSError:
        pass
    assert closed_by_server(s)
    assert sent < HEADER_TIMEOUT * 50  # cut off before the dribble ended


def test_header_bytes_are_capped(web):
    s = connect(web)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    reply = b""
    try:
        for _ in range(100):  # 6 MB of headers unless the server stops reading
            s.sendall(b"X-Big: " + b"a" * 60000 + b"\r\n")
    except OSError:
        pass
    s.settimeout(10)
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except OSError:
        pass
    assert reply.startswith(b"HTTP/1.1 431"), reply[:80]


def test_keep_alive_connections_time_out_when_idle(web):
    s = connect(web)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    s.settimeout(10)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    assert closed_by_server(s)


def test_upgraded_websockets_outlive_the_deadline_and_count_per_ip(redis_server):
    with WebProcess(redis_server.url, TEMPO_HEADER_TIMEOUT=0.5, TEMPO_MAX_PER_IP=3) as web:
        clients = [Client(web.ws_url) for _ in range(3)]
        extra = connect(web)
        extra.settimeout(10)
        assert extra.recv(65536).startswith(b"HTTP/1.1 503")
        time.sleep(1.5)  # three header deadlines
        for i, c in enumerate(clients):
            c.send({"op": "ping", "id": i})
            assert c.recv() == {"type": "pong", "id": i}
        clients.pop().close()
        for _ in range(100):  # the server notices the close, then has a slot again
            if healthz(web).startswith(b"HTTP/1.1 200"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("no slot freed")
        for c in clients:
            c.close()


@pytest.mark.parametrize(
    "var,bad",
    [
        ("TEMPO_HEADER_TIMEOUT", "nan"),  # silently no deadline: the slow-loris guard was off
        ("TEMPO_HEADER_TIMEOUT", "-1"),
        ("TEMPO_IDLE_TIMEOUT", "nan"),
        ("TEMPO_MAX_HEADER_BYTES", "0"),  # every request answered 431
        ("TEMPO_MAX_PER_IP", "-1"),  # every connection answered 503
        ("TEMPO_MAX_PER_IP", "ten"),
    ],
)
def test_server_limits_refuse_nonsense(var, bad):
    from greenredis.tempo.server import ServerLimits

    with pytest.raises(ValueError, match=f"{var} must be"):
        ServerLimits.from_env({var: bad})


def test_server_limits_zero_or_inf_means_none():
    from greenredis.tempo.server import ServerLimits

    limits = ServerLimits.from_env(
        {"TEMPO_HEADER_TIMEOUT": "0", "TEMPO_IDLE_TIMEOUT": "0", "TEMPO_MAX_PER_IP": "0"}
    )
    assert (limits.header_timeout, limits.idle_timeout, limits.max_per_ip) == (0.0, 0.0, 0)
    assert ServerLimits.from_env({"TEMPO_HEADER_TIMEOUT": "inf"}).header_timeout == float("inf")
