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


def run_honcho(honcho, env, port, timeout):
    """``honcho start`` in the repo until the web process shows both demo instances up
    with metrics (or ``timeout``); then Ctrl-C; its output."""
    proc = subprocess.Popen(
        [honcho, "start"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def instances():
        try:
            snap = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/instances", timeout=5).read()
            )
        except (urllib.error.URLError, OSError):
            return None
        return {n["name"] for n in snap["nodes"] if n["health"] == "up" and n["metrics"]}

    try:
        up = wait_for(instances, timeout=timeout, interval=0.2)
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
    return out


def test_honcho_start_runs_web_and_demo(redis_server):
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)  # the venv's `greenredis` and `honcho`
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "PORT": str(port),
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
    }
    out = run_honcho(os.path.join(bin_dir, "honcho"), env, port, timeout=60)
    assert "web.1" in out and "demo.1" in out, out


def test_a_fresh_venv_from_requirements_txt_serves_under_honcho(tmp_path, make_server):
    """The Heroku way: requirements.txt alone, then the Procfile with PORT, REDIS_URL
    (with a password) and DYNO set; no compiler-only dependency, no password in the logs,
    one timestamp per line (honcho's)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    server = make_server(password="s3cret-deploy")
    port = free_port()
    honcho = os.path.join(os.path.dirname(sys.executable), "honcho")  # the dev tool; the app is the venv's
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "VIRTUAL_ENV")},
        "REDIS_URL": server.url,
        "PORT": str(port),
        "DYNO": "web.1",
        "PATH": str(venv / "bin") + os.pathsep + os.environ["PATH"],
    }
    out = run_honcho(honcho, env, port, timeout=90)
    assert "s3cret-deploy" not in out, out
    assert ":***@" in out, out  # the URL is shown, masked
    ours = [line.split("| ", 1)[1] for line in out.splitlines() if "| " in line]
    logged = [line for line in ours if " greenredis." in line]
    assert logged and all(line.startswith(("INFO ", "WARNING ", "ERROR ")) for line in logged), logged
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import greenredis.replication.rdb.lzf as m; print(m.HAVE_C_LZF)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "False"  # python-lzf (no wheel) is not needed: the fallback serves
