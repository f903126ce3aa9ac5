"""TLS that verifies (issue 8 item 6), bounded TLS writes (item 18), and the shared
socket opener ``greenredis.client.sockets``."""

import os
import subprocess

import gevent
import pytest

import greenredis
from greenredis.client import sockets
from greenredis.server import RedisServer
from greenredis.url import parse_url


def test_6_tls_verifies_the_server_by_default(make_server):
    server = make_server(tls=True)
    with pytest.raises(greenredis.ConnectionError, match="certificate verify failed"):
        greenredis.Redis.from_url(server.url).cmd(["PING"])  # a self-signed CA: not trusted
    assert greenredis.Redis.from_url(server.url, ssl_ca_certs=server.ca_file).cmd(["PING"]) == b"PONG"
    assert greenredis.Redis.from_url(server.url + "?ssl_cert_reqs=none").cmd(["PING"]) == b"PONG"
    r = greenredis.Redis(port=server.port, ssl=True, ssl_cert_reqs="none")
    assert r.cmd(["PING"]) == b"PONG"


def test_6_tls_checks_the_host_name(tmp_path):
    server = RedisServer(tls=True)
    # a certificate from the same CA, but for another name
    d = server.dir
    with open(os.path.join(d, "other.cnf"), "w") as f:
        f.write("subjectAltName=DNS:other.example\n")
    for argv in (
        ["req", "-new", "-key", "server.key", "-out", "other.csr", "-subj", "/CN=other.example"],
        ["x509", "-req", "-in", "other.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
        + ["-days", "2", "-out", "server.crt", "-extfile", "other.cnf"],
    ):
        subprocess.run(["openssl", *argv], cwd=d, check=True, capture_output=True)
    with server:
        with pytest.raises(greenredis.ConnectionError, match="IP address mismatch|hostname"):
            greenredis.Redis.from_url(server.url, ssl_ca_certs=server.ca_file).cmd(["PING"])
        url = f"{server.url}?ssl_check_hostname=false&ssl_ca_certs={server.ca_file}"
        assert greenredis.Redis.from_url(url).cmd(["PING"]) == b"PONG"


def test_6_client_certificates_for_tls_auth_clients(make_server):
    server = make_server(tls=True, tls_auth_clients=True)
    with pytest.raises(greenredis.ConnectionError):
        greenredis.Redis.from_url(server.url, ssl_ca_certs=server.ca_file, connect_timeout=2).cmd(
            ["PING"], timeout=2
        )
    r = greenredis.Redis.from_url(
        server.url,
        ssl_ca_certs=server.ca_file,
        ssl_certfile=server.client_cert_file,
        ssl_keyfile=server.client_key_file,
    )
    assert r.cmd(["SET", "m", "tls"]) == b"OK" and r.cmd(["GET", "m"]) == b"tls"
    with pytest.raises(greenredis.ConnectionError, match="TLS setup"):
        greenredis.Redis.from_url(server.url, ssl_certfile="/nonexistent.pem").cmd(["PING"])


def test_sockets_connect_opens_plain_unix_and_tls(make_server):
    plain = make_server(unixsocket=True)
    for params in (parse_url(plain.url), parse_url(f"unix://{plain.unix_path}")):
        sock = sockets.connect(params, 2)
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"
        sock.close()
    tls = make_server(tls=True, tls_auth_clients=True)
    params = parse_url(
        tls.url, ssl_ca_certs=tls.ca_file, ssl_certfile=tls.client_cert_file, ssl_keyfile=tls.client_key_file
    )
    sock = sockets.connect(params)
    sock.sendall(b"PING\r\n")
    assert sock.recv(64) == b"+PONG\r\n"
    sock.close()
    with pytest.raises(greenredis.ConnectionError, match="certificate verify failed"):
        sockets.connect(parse_url(tls.url), 2)
    with pytest.raises(greenredis.ConnectionError, match="cannot connect"):
        sockets.connect(parse_url("redis://127.0.0.1:1"), 2)
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        sockets.cert_reqs("sometimes")


def test_18_tls_writes_are_encrypted_in_bounded_chunks(make_server):
    server = make_server(tls=True)
    r = greenredis.Redis.from_url(server.url, ssl_ca_certs=server.ca_file)
    r.cmd(["PING"])
    transport = r._shared._t
    server.pause()  # nothing drains: what we hold in user space must stay small
    try:
        job = gevent.spawn(r.cmd, ["SET", "big", b"b" * (32 << 20)])
        held = []
        for _ in range(10):
            gevent.sleep(0.02)
            cipher = getattr(transport, "_cipher", None)
            held.append(transport._out.pending + (len(cipher) if cipher is not None else 0))
        assert max(held) <= 2 * sockets_chunk()
    finally:
        server.resume()
    assert job.get(timeout=60) == b"OK"
    assert r.cmd(["STRLEN", "big"]) == 32 << 20
    r.close()


def sockets_chunk():
    from greenredis.client.connection import TLS_CHUNK

    return TLS_CHUNK + (64 << 10)  # a chunk plus its record overhead
