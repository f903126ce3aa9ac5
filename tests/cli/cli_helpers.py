"""Run the `greenredis` command in a subprocess, the way a user does."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-m", "greenredis"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PORT", "DYNO", "LOG_LEVEL")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(*args, env=None, timeout=60):
    """(exit code, stdout, stderr) of ``python -m greenredis ARGS``."""
    proc = subprocess.run(
        [*CLI, *args],
        cwd=ROOT,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def start_cli(*args, env=None, **kw):
    return subprocess.Popen(
        [*CLI, *args],
        cwd=ROOT,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def assert_one_line(code, out, err, command, *needles, exit_code=None):
    """The failure is one line (perhaps with a hint), no traceback, a non-zero exit."""
    assert code != 0 if exit_code is None else code == exit_code, (code, out, err)
    text = out + err
    assert "Traceback" not in text, text
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith(f"greenredis {command}: "), err
    if len(lines) == 2:
        assert lines[1].startswith("  hint: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def read_until(proc, needle, lines, limit=200):
    """Read proc's lines into ``lines`` until one contains ``needle`` (or EOF)."""
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            return False
        lines.append(line)
        if needle in line:
            return True
    return False
