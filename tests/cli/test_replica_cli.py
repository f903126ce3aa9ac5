"""`greenredis replica` as a user sees it: the progress bar of a short load, the wait for
a diskless master's snapshot, a server that cannot sync (NOMASTERLINK) and the real
wait before each next try."""

import re
import time

import pytest
from cli_helpers import clean_env, read_until, start_cli

from greenredis.client.redis import Redis
from greenredis.server import free_port

NEXT_TRY = re.compile(r"next try in (\d+\.\d)s")


@pytest.fixture
def cli():
    """Start ``greenredis replica ARGS``; each process is stopped after the test."""
    procs = []

    def start(*args):
        proc = start_cli("replica", *args, env=clean_env())
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def fill(server, n):
    r = Redis.from_url(server.url)
    for i in range(n):
        r.cmd(["SET", f"k{i}", "v"])
    r.close()


@pytest.mark.parametrize("sync", ["disk", "diskless"])
def test_a_short_load_still_shows_its_progress_bar(make_server, cli, sync):
    """A load shorter than one progress update still gets its (complete) bar line,
    before the status line that says the replica is streaming."""
    args = ["--repl-diskless-sync", "no"] if sync == "disk" else ["--repl-diskless-sync-delay", "0"]
    server = make_server(args=args)
    fill(server, 10)
    proc = cli(server.url, "--interval", "2")  # longer than the whole load
    lines = []
    assert read_until(proc, "state=streaming", lines), lines
    bars = [line for line in lines if "keys" in line and "/s" in line and "state=" not in line]
    assert len(bars) == 1, lines
    assert "100.0%" in bars[0] and "10 keys" in bars[0], bars  # "10 keys" or "10/10 keys"
    assert "keys=10" in lines[-1], lines
    assert not any("Traceback" in line for line in lines), lines


def test_it_says_when_the_master_waits_out_its_diskless_delay(make_server, cli):
    server = make_server(args=["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "3"])
    fill(server, 3)
    proc = cli(server.url)
    lines = []
    assert read_until(proc, "state=streaming", lines), lines
    waits = [i for i, line in enumerate(lines) if "waiting for the master's snapshot" in line]
    assert len(waits) == 1, lines
    assert "waits out repl-diskless-sync-delay (3s)" in lines[waits[0]], lines
    bar = next(i for i, line in enumerate(lines) if "keys" in line and "state=" not in line and "/s" in line)
    assert waits[0] < bar, lines  # said before the snapshot arrives


def test_a_disk_master_is_not_said_to_wait_out_a_delay(make_server, cli):
    server = make_server(args=["--repl-diskless-sync", "no"])
    fill(server, 3)
    proc = cli(server.url)
    lines = []
    assert read_until(proc, "state=streaming", lines), lines
    assert not any("repl-diskless-sync-delay" in line for line in lines), lines


def nomasterlink_lines(make_server, cli, errors, *args):
    """``errors`` error lines (with the time each was read) of the replica command pointed
    at a replica whose own master is down."""
    orphan = make_server(replicaof=("127.0.0.1", free_port()))
    proc = cli(orphan.url, *args)
    got = []
    while len(got) < errors:
        line = proc.stdout.readline()
        assert line, got
        assert "Traceback" not in line, line
        if "next try in" in line or "trying again" in line:
            got.append((time.monotonic(), line))
    return got


def test_a_replica_without_its_master_says_to_point_at_the_master(make_server, cli):
    ((_, line),) = nomasterlink_lines(make_server, cli, 1)
    assert "NOMASTERLINK" in line and "point at the master" in line, line
    assert NEXT_TRY.search(line), line


def test_the_next_try_is_the_real_wait(make_server, cli):
    """The figure is the replica's own jittered wait (not a whole-second guess), and the
    next error comes no sooner than it said."""
    got = nomasterlink_lines(make_server, cli, 4, "--max-backoff", "2", "--interval", "0.1")
    waits = []
    for _, line in got:
        m = NEXT_TRY.search(line)
        assert m, line
        waits.append(float(m.group(1)))
    assert all(0 < w <= 2.4 for w in waits), waits  # 1 s, then 2 s, with +-20 % jitter
    assert len(set(waits)) > 1, waits  # jittered and doubling, not one rounded figure
    for (at, _), (next_at, _), wait in zip(got, got[1:], waits):
        assert next_at - at >= wait - 0.05, (next_at - at, wait)


def test_a_user_who_may_not_read_config_gets_no_guess(make_server, cli):
    """An ACL user with only the replication commands cannot CONFIG GET: the line must not
    claim the diskless master is writing its snapshot to disk."""
    server = make_server(
        users=["repl on >pw +psync +replconf +ping"],
        args=["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "3"],
    )
    fill_as_default = Redis.from_url(server.url)
    fill_as_default.cmd(["SET", "k", "v"])
    fill_as_default.close()
    proc = cli(f"redis://repl:pw@127.0.0.1:{server.port}/0")
    lines = []
    assert read_until(proc, "state=streaming", lines), lines
    (wait,) = [line for line in lines if "waiting for the master's snapshot" in line]
    assert "forks and writes it first" not in wait, wait
    assert "repl-diskless-sync-delay" in wait and "or" in wait, wait
    assert "keys=1" in lines[-1], lines


@pytest.mark.parametrize("hosts", ["127.0.0.1:26379", "127.0.0.1:26379,127.0.0.1:26380"])
def test_a_sentinel_url_is_checked_as_sentinels_not_one_server(hosts):
    # with two sentinels the message was urllib's "Port could not be cast to integer value
    # as '26379,127.0.0.1:26380'"; the CLI's commands take the URL as the sentinels it names
    from greenredis.cli.failures import check_url
    from greenredis.url import SentinelURL

    checked = check_url(f"redis+sentinel://:s3cret@{hosts}/mymaster")
    assert isinstance(checked, SentinelURL) and checked.service == "mymaster"
    assert [f"{h}:{p}" for h, p in checked.sentinels] == hosts.split(",")
    assert "s3cret" not in repr(checked)
