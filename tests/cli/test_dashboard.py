"""`greenredis dashboard` on a machine without REDIS_URL: embedded Redis, web and demo."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from cli_helpers import CLI, ROOT
from waiting import wait_for

from greenredis.server import free_port


def test_dashboard_brings_everything_up_and_down():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PORT")}
    proc = subprocess.Popen(
        [*CLI, "dashboard", "--port", str(port), "--web", "2", "--workers", "1"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = []
    try:
        deadline = time.monotonic() + 60
        while not any("Tempo is up" in line for line in out):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(out)
            out.append(line)
        assert f"http://127.0.0.1:{port}/" in out[-1]
        redis_line = next(line for line in out if "embedded redis-server" in line)

        def instances():
            snap = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/instances", timeout=5).read()
            )
            return {n["name"]: n for n in snap["nodes"] if n["health"] == "up" and n["metrics"]}

        nodes = wait_for(lambda: len(instances()) == 3 and instances(), timeout=30)
        assert set(nodes) == {"demo-web.1", "demo-web.2", "demo-worker.1"}
        assert nodes["demo-web.1"]["meta"]["role"] == "web" and nodes["demo-web.1"]["grid"]
        assert "requests_per_sec" in nodes["demo-web.1"]["metrics"]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, rest  # Ctrl-C
        assert "the instances left the grid" in rest
        assert "KeyboardInterrupt" not in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    redis_port = int(redis_line.split("127.0.0.1:")[1].split("/")[0])
    with socket.socket() as sock:  # the embedded redis-server is gone too
        assert sock.connect_ex(("127.0.0.1", redis_port)) != 0
