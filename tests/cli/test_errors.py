"""Everyday mistakes end in one line (and a hint), never a traceback, with a non-zero exit."""

import socket
import subprocess
import sys

import pytest
from cli_helpers import assert_one_line, clean_env, run_cli

from greenredis.server import free_port

BAD_URLS = ["foo://bar", "notaurl", ":99999", "/xyz", "redis://127.0.0.1:99999", "redis://:pw@h/notadb"]


def url_args(command, url):
    """(argv, env) giving ``command`` the Redis URL ``url``."""
    if command in ("replica", "link-status"):
        return [command, url], clean_env()
    if command in ("nodes", "demo", "bench"):
        return [command, "--url", url], clean_env()
    return [command, "--port", "0"], clean_env(REDIS_URL=url)  # web, dashboard read $REDIS_URL


REDIS_COMMANDS = ["nodes", "demo", "replica", "link-status", "bench", "web", "dashboard"]
# the one-shot commands and the dashboard stop on what the long-running ones retry
STOPPING = ["nodes", "link-status", "bench", "dashboard"]


@pytest.mark.parametrize("command", REDIS_COMMANDS)
@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_url(command, url):
    argv, env = url_args(command, url)
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, exit_code=2)
    assert "URL" in err


def test_a_bad_url_never_shows_its_password():
    code, out, err = run_cli("nodes", "--url", "redis://:hunter22@h/notadb")
    assert_one_line(code, out, err, "nodes", "***", exit_code=2)
    assert "hunter22" not in out + err


@pytest.mark.parametrize("command", STOPPING + ["demo", "web"])
def test_connection_refused(command):
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    argv, env = url_args(command, url)
    if command in ("demo", "web"):  # services ride out an outage: they say so and retry
        proc = subprocess.Popen(
            [sys.executable, "-m", "greenredis", *argv], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            line = proc.stderr.readline()
        finally:
            proc.terminate()
            proc.wait(30)
        assert "connection refused" in line and "Traceback" not in line, line
        return
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "connection refused", exit_code=1)


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def test_no_answer_is_not_connection_refused(silent_port):
    code, out, err = run_cli("nodes", "--url", f"redis://127.0.0.1:{silent_port}", "--timeout", "1")
    assert_one_line(code, out, err, "nodes", "no answer from", "within 1 s", exit_code=1)
    assert "refused" not in err


@pytest.mark.parametrize("command", REDIS_COMMANDS)
def test_wrong_and_missing_password(make_server, command):
    server = make_server(password="s3cret-pw")
    for url, word in [
        (f"redis://:wrong-pw1@127.0.0.1:{server.port}", "WRONGPASS"),
        (f"redis://127.0.0.1:{server.port}", "NOAUTH"),
    ]:
        argv, env = url_args(command, url)
        if command == "replica":  # retries, saying what to fix (item 6)
            lines = replica_lines(argv, env, 2)
            assert word in lines[-1] and "put" in lines[-1] and "next try in" in lines[-1], lines
            continue
        code, out, err = run_cli(*argv, env=env)
        assert_one_line(code, out, err, command, word, exit_code=1)
        assert "wrong-pw1" not in out + err and "s3cret-pw" not in out + err


def replica_lines(argv, env, errors):
    """The replica command's lines up to its ``errors``-th error line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenredis", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        while sum("next try in" in line for line in lines) < errors:
            line = proc.stdout.readline()
            assert line, lines
            lines.append(line)
    finally:
        proc.terminate()
        proc.wait(30)
    assert not any("Traceback" in line for line in lines), lines
    return [line for line in lines if "next try in" in line]


@pytest.fixture
def http_port():
    """An HTTP server: something that is not Redis."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from waiting import wait_for

    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(up, timeout=20)
    yield port
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("command", STOPPING + ["demo", "web"])
def test_something_that_is_not_redis(http_port, command):
    argv, env = url_args(command, f"redis://127.0.0.1:{http_port}")
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "does not speak Redis", exit_code=1)


@pytest.mark.parametrize("command", ["web", "dashboard"])
def test_a_port_in_use(redis_server, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run_cli(command, "--port", str(port), env=clean_env(REDIS_URL=redis_server.url))
    assert_one_line(code, out, err, command, f"port {port}", "in use", exit_code=1)
    assert "Tempo is up" not in out  # no false statement


@pytest.mark.parametrize("command", ["web", "dashboard"])
def test_port_env_not_a_number(redis_server, command):
    code, out, err = run_cli(command, env=clean_env(PORT="abc", REDIS_URL=redis_server.url))
    assert_one_line(code, out, err, command, "PORT='abc' is not a port number", exit_code=2)


@pytest.mark.parametrize("spec", ["nosuch:app", "os:nothing", "os:sep", ":app"])
def test_a_bad_app(redis_server, spec):
    code, out, err = run_cli("web", "--port", "0", "--app", spec, env=clean_env(REDIS_URL=redis_server.url))
    assert_one_line(code, out, err, "web", "--app", exit_code=2)


def test_an_app_that_fails_to_import(tmp_path, redis_server):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    env = clean_env(REDIS_URL=redis_server.url, PYTHONPATH=str(tmp_path))
    code, out, err = run_cli("web", "--port", "0", "--app", "broken:app", env=env)
    assert_one_line(code, out, err, "web", "boom at import")


@pytest.mark.parametrize("command", REDIS_COMMANDS)
def test_log_level_is_checked_everywhere(command):
    argv, env = url_args(command, "redis://127.0.0.1:1")
    code, out, err = run_cli(*argv, env={**env, "LOG_LEVEL": "loud"})
    assert_one_line(code, out, err, command, "unknown log level 'loud'", exit_code=2)
    code, out, err = run_cli(argv[0], "--log-level", "loud", *argv[1:], env=env)
    assert_one_line(code, out, err, command, "unknown log level 'loud'", exit_code=2)


def test_version_and_python_dash_m():
    import greenredis

    code, out, err = run_cli("--version")
    assert code == 0 and out.strip() == f"greenredis {greenredis.__version__}", (out, err)
    proc = subprocess.run(
        [sys.executable, "-m", "greenredis.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and greenredis.__version__ in proc.stdout


def test_unknown_command_is_a_usage_error():
    code, out, err = run_cli("frobnicate")
    assert code == 2 and "Traceback" not in err and "invalid choice" in err


def test_nodes_on_an_empty_grid_names_what_it_looked_at(redis_server):
    code, out, err = run_cli(
        "nodes", "--url", redis_server.url, "--domain", "shop", "--version", "v7", "--timeout", "10"
    )
    assert code == 0, err
    assert "no nodes" in out and "domain 'shop'" in out and "version 'v7'" in out, out


@pytest.mark.parametrize("value", ["abc", "0"])
def test_tempo_setting_not_a_number_is_one_line(redis_server, value):
    env = clean_env(REDIS_URL=redis_server.url, TEMPO_SEND_TIMEOUT=value)
    code, out, err = run_cli("web", "--port", "0", env=env)
    assert_one_line(code, out, err, "web", "TEMPO_SEND_TIMEOUT must be a", exit_code=2)
    assert "unexpected" not in err and "report it" not in err, err


@pytest.mark.parametrize(
    "var,value", [("TEMPO_GONE_AFTER", "abc"), ("TEMPO_TOKEN_TTL", "nan"), ("TEMPO_HEADER_TIMEOUT", "abc")]
)
def test_other_tempo_settings_are_checked_at_start(redis_server, var, value):
    """TEMPO_GONE_AFTER=abc served every page as a 500 (read at the first request);
    TEMPO_HEADER_TIMEOUT=abc was an 'unexpected error' (exit 1)."""
    env = clean_env(REDIS_URL=redis_server.url, **{var: value})
    code, out, err = run_cli("web", "--port", "0", env=env)
    assert_one_line(code, out, err, "web", f"{var} must be", exit_code=2)
