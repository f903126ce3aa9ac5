"""What the commands say: true statements, one log format, no passwords, outages in one line."""

import re
import signal
import socket

import pytest
from cli_helpers import clean_env, read_until, start_cli

from greenredis.url import redact_text, redact_url

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) greenredis\.")


@pytest.mark.unit
@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://bob:p%40ss@h:1/2?timeout=1", "redis://bob:***@h:1/2?timeout=1"),
        ("rediss://u:x@h", "rediss://u:***@h"),
        ("unix://:pw@/tmp/s?db=1", "unix://:***@/tmp/s?db=1"),
        ("redis://h:6379", "redis://h:6379"),
        ("redis://bob@h", "redis://bob@h"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.unit
def test_redact_text():
    text = "lost redis://:s3cret@h:1/0 and ConnectionParams(password='longsecret')"
    assert redact_text(text, ["longsecret"]) == "lost redis://:***@h:1/0 and ConnectionParams(password='***')"


def first_log_line(proc, needle):
    lines = []
    assert read_until(proc, needle, lines), lines
    return lines[-1], lines


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def test_web_log_line_on_a_platform_has_no_time_and_no_password(make_server):
    server = make_server(password="s3cret-web")
    url = f"redis://:s3cret-web@127.0.0.1:{server.port}/0"
    proc = start_cli("web", "--host", "0.0.0.0", "--port", "0", env=clean_env(REDIS_URL=url, DYNO="web.1"))
    line, lines = first_log_line(proc, "serving on")
    out = "".join(lines) + stop(proc)
    assert line.startswith("INFO greenredis.web: serving on http://127.0.0.1:"), line  # a URL one can open
    assert "listening on 0.0.0.0:" in line
    assert f"redis://:***@127.0.0.1:{server.port}/0" in line
    assert "s3cret-web" not in out


def test_web_log_line_off_a_platform_has_the_time(redis_server):
    proc = start_cli("web", "--port", "0", env=clean_env(REDIS_URL=redis_server.url))
    line, _ = first_log_line(proc, "serving on")
    stop(proc)
    assert STAMP.match(line), line


def test_dashboard_never_prints_the_password(make_server):
    server = make_server(password="s3cret-dash")
    url = f"redis://:s3cret-dash@127.0.0.1:{server.port}"
    proc = start_cli("dashboard", "--port", "0", "--web", "1", "--workers", "0", env=clean_env(REDIS_URL=url))
    line, lines = first_log_line(proc, "Tempo is up")
    out = "".join(lines) + stop(proc)
    assert "s3cret-dash" not in out and ":***@" in out, out
    # one timestamp per line: the dashboard's prefix, not the children's own as well
    child = [ln for ln in out.splitlines() if " | " in ln and "greenredis." in ln]
    assert child and all(not STAMP.match(ln.split(" | ", 1)[1]) for ln in child), child


def test_the_dashboard_says_when_it_moves_off_port_5000(monkeypatch):
    from greenredis.cli import dashboard

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        monkeypatch.setattr(dashboard, "DEFAULT_PORT", taken.getsockname()[1])
        port, note = dashboard.choose_port("127.0.0.1", None, None)
    assert port != dashboard.DEFAULT_PORT
    assert note == f"port {dashboard.DEFAULT_PORT} is in use by another process; using port {port}"


def test_the_demo_says_an_outage_in_one_line(redis_server):
    proc = start_cli("demo", "--web", "3", "--workers", "2", "--url", redis_server.url)
    lines = []
    try:
        assert read_until(proc, "5 instances publishing", lines), lines
        redis_server.kill()
        assert read_until(proc, "cannot publish", lines), lines
        redis_server.restart()
        assert read_until(proc, "Redis is back", lines), lines
    finally:
        out = stop(proc)
    text = "".join(lines) + out
    assert "Traceback" not in text and "<gevent" not in text, text
    outage = [ln for ln in lines if "cannot publish" in ln]
    assert len(outage) == 1 and "retrying in" in outage[0], outage  # one line, not one per greenlet
    assert "connection refused" in outage[0] or "closed" in outage[0] or "cannot" in outage[0]
