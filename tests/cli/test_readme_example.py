"""The README's "instrument your own app" script runs and Tempo's data shows it."""

import json
import os
import subprocess
import sys

from cli_helpers import ROOT

import greenredis


def test_the_instrument_example(redis_server):
    script = os.path.join(ROOT, "examples", "instrument.py")
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "examples/instrument.py" in readme  # the script the README shows
    env = {**os.environ, "REDIS_URL": redis_server.url}
    env.pop("DYNO", None)
    proc = subprocess.run(
        [sys.executable, script, "--name", "myapp.1", "--seconds", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    r = greenredis.Redis.from_url(redis_server.url)
    try:
        history = r.cmd(["LRANGE", "stats:{myapp.1}:h:requests_per_sec", 0, -1])
        assert len(history) == 2 and json.loads(history[0])["metric"] == "requests_per_sec"
        lines = [x.decode() for x in r.cmd(["LRANGE", "logs:{myapp.1}", 0, -1])]
        assert any("INFO myapp: myapp.1 started" in line for line in lines), lines
        assert any("myapp.1 stopping" in line for line in lines), lines
        assert r.cmd(["EXISTS", "redgrid:::myapp.1"]) == 0  # it left the grid
    finally:
        r.close()
