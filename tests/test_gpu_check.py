"""bench/gpu_check.sh, the check a lent GPU machine runs, works before it gets there: the script parses,
installs the project without its pinned dependencies into a folder of its own, and its CPU dry run writes
the markdown table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.slow
def test_a_dry_run_installs_the_project_apart_and_writes_the_table(tmp_path):
    # The whole dry run's smoke search takes minutes on two cores; these sections exercise the install,
    # the loss check, a seam step and a default proxy training, and the table.
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "WHEELS": str(tmp_path / "none")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--only", "losses,seam,rate,ray"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the project ran from the script's own install, not from this checkout's editable one
    assert "autoloss from /tmp" in done.stdout or "autoloss from " + str(Path("/tmp")) in done.stdout
    assert f"autoloss from {ROOT}" not in done.stdout
    table = (tmp_path / "gpu_check.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| published losses, CPU vs device",
        "| seam step vs stock (fp32, --amp bf16)",
        "| default proxy trainings per hour",
        "| Ray, 2 trials at 0.5 GPU",
    ]
    assert "max relative error 0.00e+00" in rows[0]  # the CPU against itself
    assert " /h (" in rows[2] and "| error:" not in table
    assert "skipped: needs CUDA" in rows[3]


def test_an_unknown_section_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--only", "seam,warp"],
        cwd=ROOT / "bench",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "unknown section(s) ['warp']" in done.stderr
