"""The Procfile, run the Heroku way: `honcho start` with REDIS_URL and PORT from the environment."""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from cli_helpers import ROOT
from waiting import wait_for

from greenredis.server import free_port


def test_honcho_start_runs_web_and_demo(redis_server):
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)  # the venv's `greenredis` and `honcho`
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "PORT": str(port),
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
    }
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "honcho"), "start"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:

        def instances():
            try:
                snap = json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/instances", timeout=5).read()
                )
            except (urllib.error.URLError, OSError):
                return None
            return {n["name"] for n in snap["nodes"] if n["health"] == "up" and n["metrics"]}

        up = wait_for(instances, timeout=60, interval=0.2)
        assert {"demo-web.1", "demo-worker.1"} <= up  # the demo process, through Redis, seen by web
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/instances/demo-web.1", timeout=5)
        assert page.status == 200 and b"demo-web.1" in page.read()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert "web.1" in out and "demo.1" in out, out
