"""Flask and gevent-websocket are the dashboard's: the client, grid and replica load neither."""

import subprocess
import sys

import pytest

CHECK = """
import sys
{code}
names = ("flask", "geventwebsocket", "werkzeug", "jinja2")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in names)
print(",".join(heavy))
"""


@pytest.mark.parametrize(
    "code",
    [
        "import greenredis",
        "import greenredis; greenredis.Redis",
        "import greenredis; greenredis.Grid",
        "import greenredis; greenredis.Replica",
        "import greenredis; greenredis.Stats, greenredis.RedisLogHandler, greenredis.CappedLog",
        "import greenredis.cli, greenredis.cli.failures, greenredis.cli.logs, greenredis.cli.lifecycle",
    ],
)
def test_no_flask_nor_geventwebsocket(code):
    proc = subprocess.run(
        [sys.executable, "-c", CHECK.format(code=code)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"{code} imported {proc.stdout.strip()}"


def test_the_dashboard_does_load_them():  # the check above can fail
    proc = subprocess.run(
        [sys.executable, "-c", CHECK.format(code="import greenredis.tempo.app")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "flask" in proc.stdout
