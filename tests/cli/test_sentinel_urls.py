"""Every command that takes a Redis URL takes ``redis+sentinel://`` too; its everyday
mistakes (a malformed URL, no sentinel running, an unknown service, an address that is a
Redis and not a sentinel, a wrong password) end in one line, never a traceback."""

import subprocess
import sys

import pytest
from cli_helpers import assert_one_line, clean_env, read_until, run_cli, start_cli
from test_errors import url_args

from greenredis.server import RedisServer, SentinelGroup, free_port

# replica and link-status on redis+sentinel:// (following the replicas of a service) are
# the Replica's part of issue 13 (branch failover), tested there
BAD_URL_COMMANDS = COMMANDS = ["nodes", "demo", "web", "dashboard"]
STOPPING = ["nodes", "dashboard"]

BAD_SENTINEL_URLS = [  # (URL, what the line says)
    ("redis+sentinel://127.0.0.1:26379", "names no service"),
    ("redis+sentinel://127.0.0.1:99999/mymaster", "bad port in sentinel address"),
    ("redis+sentinel://127.0.0.1:26379,:26380/mymaster", "bad sentinel address ':26380'"),
    ("redis+sentinel://127.0.0.1:26379/mymaster/notadb", "bad db 'notadb'"),
    ("redis+sentinel://127.0.0.1:26379/a/0/extra", "the path is /<service>[/db]"),
    ("redis+sentinel://127.0.0.1:26379/mymaster?sentinel_timeout=soon", "bad sentinel_timeout 'soon'"),
    ("redis+sentinel://127.0.0.1:26379/mymaster?nosuchoption=1", "unknown URL option 'nosuchoption'"),
    ("redis+sentinel://127.0.0.1:26379;127.0.0.1:26380/mymaster", "bad sentinel address"),
    ("redis+sentinels://127.0.0.1:26379/mymaster", "redis+sentinel://"),
    ("sentinel://127.0.0.1:26379/mymaster", "redis+sentinel://"),
]


@pytest.fixture(scope="module")
def group():
    with SentinelGroup(service="cli", replicas=1, sentinels=1, password="data-pw-123") as g:
        yield g


@pytest.mark.parametrize("command", BAD_URL_COMMANDS)
@pytest.mark.parametrize("url, why", BAD_SENTINEL_URLS)
def test_a_bad_sentinel_url(command, url, why):
    argv, env = url_args(command, url)
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "bad Redis URL", why, exit_code=2)


@pytest.mark.parametrize("command", ["nodes", "web"])
def test_a_bad_sentinel_url_never_shows_its_passwords(command):
    url = "redis+sentinel://:hunter22@127.0.0.1:26379/mm/notadb?sentinel_password=hunter33"
    argv, env = url_args(command, url)
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "***", exit_code=2)
    assert "hunter22" not in out + err and "hunter33" not in out + err


def _first_line(argv, env):
    """A service's first line on stderr; it keeps running (a transient failure)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenredis", *argv], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        return proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_sentinel_running(command):
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster"
    argv, env = url_args(command, url)
    if command in ("demo", "web"):  # services ride it out, as for one Redis
        line = _first_line(argv, env)
        assert "no sentinel of 'mymaster' answered" in line and "Traceback" not in line, line
        assert all(str(p) in line for p in ports), line
        return
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "no sentinel of 'mymaster' answered", exit_code=1)
    assert all(str(p) in err for p in ports) and "sentinels running" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_service_stops_every_command(group, command):
    """No sentinel watches that name: a typo to fix, so the services stop too."""
    url = group.url.replace("/cli", "/nosuch")
    argv, env = url_args(command, url)
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "no sentinel knows a master named 'nosuch'", exit_code=1)
    assert "data-pw-123" not in out + err


@pytest.mark.parametrize("command", STOPPING + ["web"])
def test_a_redis_listed_as_a_sentinel(command):
    with RedisServer() as server:
        argv, env = url_args(command, f"redis+sentinel://127.0.0.1:{server.port}/mymaster")
        code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "not a sentinel", exit_code=1)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_data_password(group, command):
    url = group.url.replace(":data-pw-123@", ":wrong-pw-9@")
    argv, env = url_args(command, url)
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "WRONGPASS", "the master of 'cli'", exit_code=1)
    assert "wrong-pw-9" not in out + err


def test_nodes_through_sentinels(group):
    from greenredis.grid.node import Grid

    g = Grid(group.url, name="seen.1", meta={"role": "web"}, ttl=10, interval=1).start()
    try:
        assert g.wait(30)
        code, out, err = run_cli("nodes", "--url", group.url)
        assert code == 0, err
        assert "seen.1" in out and "role=web" in out
    finally:
        g.stop()


def test_bench_refuses_a_sentinel_url():
    code, out, err = run_cli("bench", "--url", "redis+sentinel://127.0.0.1:26379/mm", env=clean_env())
    assert_one_line(code, out, err, "bench", "redis+sentinel://", exit_code=2)


@pytest.mark.parametrize(
    "argv",
    [
        ["web", "--url", "redis+sentinel://:hunter22@127.0.0.1:26379/mm?sentinel_password=hunter33"],
        [
            "replica",
            "redis://:hunter22@127.0.0.1:6379",
            "redis+sentinel://:hunter22@h:1/mm?sentinel_password=hunter33",
        ],
        ["nodes", "--url", "redis://:hunter22@127.0.0.1:6379/0", "--bogus", "redis://:hunter33@h:1"],
    ],
)
def test_a_misplaced_url_argument_never_shows_its_passwords(argv):
    """argparse echoes what it does not recognise: the URL a user put where it is not
    taken (web reads $REDIS_URL) is shown masked."""
    code, out, err = run_cli(*argv, env=clean_env())
    assert code == 2, (code, out, err)
    assert "unrecognized arguments" in err and "***" in err, err
    assert "hunter22" not in out + err and "hunter33" not in out + err, err


@pytest.mark.parametrize("option", ["sentinel_pasword", "sentinelpassword", "passwd", "auth"])
def test_a_misspelt_password_option_never_shows_its_value(option):
    url = f"redis+sentinel://127.0.0.1:26379/mm?{option}=hunter33"
    code, out, err = run_cli("nodes", "--url", url, env=clean_env())
    assert_one_line(code, out, err, "nodes", f"unknown URL option {option!r}", exit_code=2)
    assert "hunter33" not in out + err, err
    code, out, err = run_cli("nodes", "--url", f"redis://127.0.0.1:6379/0?{option}=hunter33", env=clean_env())
    assert_one_line(code, out, err, "nodes", f"unknown URL option {option!r}", exit_code=2)
    assert "hunter33" not in out + err, err


@pytest.mark.parametrize("command", COMMANDS)
def test_a_db_the_master_refuses_stops_every_command(group, command):
    """/99 on a Redis of 16 dbs: the master refuses the SELECT, which is the URL's fault and
    not a failover: said at once (not "no answer within 5 s"), and the services stop too."""
    argv, env = url_args(command, group.url.replace("/cli", "/cli/99"))
    code, out, err = run_cli(*argv, env=env, timeout=30)
    assert_one_line(code, out, err, command, "DB index is out of range", exit_code=1)
    assert "data-pw-123" not in out + err


@pytest.fixture(scope="module")
def locked_group():
    """Sentinels with a password of their own."""
    with SentinelGroup(service="locked", replicas=0, sentinels=1, sentinel_password="sent-pw-456") as g:
        yield g


@pytest.mark.parametrize("command", STOPPING)
def test_sentinels_that_need_a_password_say_which_option(locked_group, command):
    """No ?sentinel_password= for sentinels that need one: one line naming the option (no
    WARNING per sentinel subscription before it)."""
    url = locked_group.url.partition("?")[0]
    argv, env = url_args(command, url)
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "NOAUTH", "sentinel_password", exit_code=1)
    wrong = locked_group.url.replace("sent-pw-456", "wrong-pw-789")
    argv, env = url_args(command, wrong)
    code, out, err = run_cli(*argv, env=env)
    assert_one_line(code, out, err, command, "WRONGPASS", "sentinel_password", exit_code=1)
    assert "wrong-pw-789" not in out + err


def test_replica_says_which_password_and_which_setup_was_refused(group, locked_group):
    """The replica retries, saying what to fix: the sentinels' password (not "the master
    refused the password"), a db the master refuses (not "connection refused")."""
    cases = [
        (locked_group.url.replace("sent-pw-456", "wrong-pw-789"), "sentinel_password", "the master refused"),
        (group.url.replace("/cli", "/cli/99"), "DB index is out of range", "connection refused"),
    ]
    for url, needle, wrong in cases:
        proc = start_cli("replica", url)
        lines = []
        try:
            read_until(proc, "next try in", lines)
        finally:
            proc.terminate()
            proc.wait(30)
        said = [line for line in lines if "next try in" in line]
        assert said and needle in said[0] and wrong not in said[0], lines
        assert "wrong-pw-789" not in "".join(lines) and "data-pw-123" not in "".join(lines)


def test_link_status_stops_when_no_sentinel_answers_at_the_start():
    """As for one server (its probe stops on a refused connection): sentinels that do not
    answer at the start are most likely a wrong address; one line naming them."""
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster"
    code, out, err = run_cli("link-status", url, timeout=30)
    assert_one_line(code, out, err, "link-status", "no sentinel of 'mymaster' answered", exit_code=1)
    assert all(str(p) in err for p in ports)
