"""Ctrl-C stops every command at once with exit 130 and nothing from gevent's hub; SIGTERM
stops children; a SIGKILLed dashboard does not leave its web child holding the port."""

import os
import signal
import socket

import pytest
from cli_helpers import clean_env, read_until, start_cli
from waiting import wait_for

from greenredis.server import free_port


def stop_with(proc, sig, timeout=20):
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=timeout)  # bounded: "at once" is well within this
    return proc.returncode, out


def assert_quiet(out):
    assert "KeyboardInterrupt" not in out and "Traceback" not in out, out


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_while_the_dashboard_waits_for_its_web(make_server):
    # a paused Redis: the dashboard's check of REDIS_URL waits for an answer
    server = make_server()
    server.pause()
    try:
        proc = start_cli("dashboard", "--port", "0", env=clean_env(REDIS_URL=server.url))
        wait_for(lambda: proc.poll() is None, timeout=5)
        import time

        time.sleep(1.0)  # well inside the 5 s the check would wait
        code, out = stop_with(proc, signal.SIGINT)
    finally:
        server.resume()
    assert code == 130, out
    assert_quiet(out)


def test_ctrl_c_while_the_demo_cannot_reach_redis():
    proc = start_cli("demo", "--url", f"redis://127.0.0.1:{free_port()}")
    lines = []
    assert read_until(proc, "cannot publish", lines), lines
    code, out = stop_with(proc, signal.SIGINT)
    assert code == 130, out
    assert_quiet("".join(lines) + out)
    assert "could not tell the grid" in out  # not "left the grid": it could not


@pytest.mark.parametrize(
    "argv",
    [["nodes", "--watch"], ["replica"], ["link-status"], ["web", "--port", "0"], ["demo", "--web", "1"]],
)
def test_ctrl_c_exits_130_quietly(redis_server, make_server, argv):
    if argv[0] == "replica":
        argv = [argv[0], redis_server.url]
    elif argv[0] == "link-status":  # a replica whose master never answers: it waits
        argv = [argv[0], make_server(replicaof=("127.0.0.1", free_port())).url]
    elif argv[0] in ("nodes", "demo"):
        argv = [*argv, "--url", redis_server.url]
    proc = start_cli(*argv, env=clean_env(REDIS_URL=redis_server.url))
    lines = []
    first = {
        "nodes": "grid",
        "replica": "state=",
        "link-status": "STATUS",
        "web": "serving on",
        "demo": "publishing",
    }
    assert read_until(proc, first[argv[0]], lines), lines
    code, out = stop_with(proc, signal.SIGINT)
    assert code == 130, "".join(lines) + out
    assert_quiet("".join(lines) + out)


def test_sigterm_stops_web_and_frees_the_port(redis_server):
    port = free_port()
    proc = start_cli("web", "--port", str(port), env=clean_env(REDIS_URL=redis_server.url))
    lines = []
    assert read_until(proc, "serving on", lines), lines
    code, out = stop_with(proc, signal.SIGTERM)
    assert code == 0, out
    assert not listening(port)


def test_a_sigkilled_dashboard_takes_its_children_with_it():
    port = free_port()
    proc = start_cli("dashboard", "--port", str(port), "--web", "1", "--workers", "0")
    lines = []
    try:
        assert read_until(proc, "Tempo is up", lines), lines
        assert listening(port)
        redis_line = next(line for line in lines if "embedded redis-server at" in line)
        redis_port = int(redis_line.split("127.0.0.1:")[1].split("/")[0])
        assert listening(redis_port)
        proc.kill()  # SIGKILL: no cleanup of its own
        proc.wait()
        wait_for(lambda: not listening(port), timeout=20, what="the web child to let go of the port")
        wait_for(lambda: not listening(redis_port), timeout=20, what="the embedded redis-server to stop")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_stops_the_dashboard_and_its_children():
    port = free_port()
    proc = start_cli("dashboard", "--port", str(port), "--web", "1", "--workers", "0", start_new_session=True)
    lines = []
    assert read_until(proc, "Tempo is up", lines), lines
    # "Tempo is up" means the web answers; the demo starts beside it and, on a loaded
    # machine, may still be importing (then SIGTERM ends it before it has joined the grid)
    if not any("instances publishing every" in line for line in lines):
        assert read_until(proc, "instances publishing every", lines), lines
    code, out = stop_with(proc, signal.SIGTERM, timeout=30)
    assert code == 0, out
    assert "the instances left the grid" in out
    assert not listening(port)
    # nothing of its process group is left
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
