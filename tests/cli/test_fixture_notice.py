"""A fresh clone without ../shared: one notice at the top of the run; under CI, mandatory."""

import os
import shutil
import subprocess
import sys

from cli_helpers import ROOT


def run_pytest(tmp_path, ci):
    clone = tmp_path / "clone"
    (clone / "tests").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), clone / "tests" / "conftest.py")
    (clone / "tests" / "test_one.py").write_text("def test_one():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout


def test_outside_ci_one_notice_says_how_to_get_them(tmp_path):
    out = run_pytest(tmp_path, ci=False)
    assert out.count("NOTE: the RDB fixture tests skip") == 1, out
    assert "../shared" in out
    header = out.split("collected")[0]
    assert "NOTE: the RDB fixture tests skip" in header  # at the top, before the tests


def test_under_ci_they_are_mandatory(tmp_path):
    out = run_pytest(tmp_path, ci=True)
    assert "MISSING" in out and "mandatory" in out, out
