"""A request that fails inside `greenredis web` is one masked log line on stderr: not
gevent's raw traceback (with the request's environ), not a password."""

import socket
import subprocess
import textwrap
import time

import pytest
from cli_helpers import CLI, ROOT, clean_env
from waiting import wait_for

from greenredis.server import free_port

SECRETS = ("s3cret-pw", "hunter2-query", "tok-in-a-header")

APP = textwrap.dedent(
    """
    from flask import Flask

    def raw(environ, start_response):  # a bare WSGI app: errors reach gevent's handler
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("cannot reach redis://:s3cret-pw@10.0.0.1:6379/0")
        if environ["PATH_INFO"].startswith("/multi"):
            raise RuntimeError("first line\\r\\nERROR forged: second line")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    flask_app = Flask("failing")

    def crash_later():
        import gevent

        def background():
            gevent.sleep(0.2)
            raise RuntimeError("lost redis://:s3cret-pw@10.0.0.1:6379/0")

        gevent.spawn(background)
        return raw

    @flask_app.route("/boom")
    def boom():
        raise RuntimeError("cannot reach redis://:s3cret-pw@10.0.0.1:6379/0")
    """
)


def get(port, path, headers=""):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n", 1)[0]


def run_web(tmp_path, app, during, *extra, **env):
    """(stdout, stderr) of ``greenredis web --app failing:APP`` (``env`` added to a clean
    one) once it listens and ``during(port)`` has run."""
    (tmp_path / "failing.py").write_text(APP)
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "web", "--app", f"failing:{app}", "--port", str(port), "--no-access-log", *extra],
        cwd=ROOT,
        env=clean_env(PYTHONPATH=tmp_path, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, timeout=30, what="web to listen")
        during(port)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    return out, err


def failing_request(tmp_path, app, *extra, path="/boom?password=hunter2-query"):
    """(stdout, stderr) of ``greenredis web --app failing:APP`` that served one /boom."""

    def boom(port):
        status = get(port, path, "Authorization: Bearer tok-in-a-header\r\n")
        assert b"500" in status, status
        time.sleep(0.5)  # let the error line be written

    return run_web(tmp_path, app, boom, *extra, REDIS_URL="redis://:s3cret-pw@127.0.0.1:1/0")


@pytest.mark.parametrize("app", ["raw", "flask_app"])
def test_a_failing_request_is_one_masked_line(tmp_path, app):
    out, err = failing_request(tmp_path, app)
    text = out + err
    for secret in SECRETS:
        assert secret not in text, (secret, text)
    assert "Traceback" not in text, text
    failed = [line for line in err.splitlines() if "/boom" in line or "RuntimeError" in line]
    assert len(failed) == 1, err
    assert "ERROR" in failed[0] and "RuntimeError" in failed[0] and "***" in failed[0], failed


def test_a_client_cannot_forge_log_lines(tmp_path):
    # The path (percent-decoded) and the exception's text are the client's or the app's: a
    # CR/LF or a terminal escape in them stays inside the one line, escaped.
    out, err = failing_request(tmp_path, "raw", path="/multi%0d%0aERROR%20forged:%20path%1b[2J%9b")
    lines = [line for line in err.splitlines() if "forged" in line]
    assert len(lines) == 1, err
    assert "\x1b" not in err and "\x9b" not in err and "\r" not in err, repr(err)
    assert (
        "ERROR greenredis.tempo: tempo: GET /multi\\r\\nERROR forged: path\\x1b[2J\\x9b failed" in lines[0]
    ), lines
    assert "first line\\r\\nERROR forged: second line" in lines[0], lines


@pytest.mark.parametrize("app", ["raw", "flask_app"])
def test_debug_level_shows_the_traceback_masked(tmp_path, app):
    out, err = failing_request(tmp_path, app, "--log-level", "debug")
    assert "Traceback" in err, err
    for secret in SECRETS:
        assert secret not in out + err, (secret, err)


def test_a_bad_request_is_one_warning_line(tmp_path):
    def bad_length(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
            assert b"400" in s.recv(65536).split(b"\r\n", 1)[0]
        time.sleep(0.5)

    _, err = run_web(tmp_path, "raw", bad_length)
    bad = [line for line in err.splitlines() if "abc" in line]
    assert len(bad) == 1 and "WARNING greenredis.tempo.http: tempo: " in bad[0], err
    assert "<gevent" not in err and "Traceback" not in err, err  # no socket repr, no traceback


def test_a_greenlet_that_dies_is_one_masked_line(tmp_path):
    # gevent's hub printed the traceback of any greenlet that died of an exception (the
    # app's or ours) to stderr, unmasked, with a "<Greenlet at 0x...>" line
    _, err = run_web(tmp_path, "crash_later()", lambda port: time.sleep(1.0))  # the background greenlet died
    assert "s3cret-pw" not in err and "Traceback" not in err and "<Greenlet" not in err, err
    failed = [line for line in err.splitlines() if "RuntimeError" in line]
    assert len(failed) == 1 and " ERROR " in failed[0] and "background" in failed[0], err
