"""scripts/check_bad_inputs.py end to end on a few cases (slow: each case runs the CLI as a
subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_bad_inputs.py"


@pytest.mark.slow
def test_the_battery_reports_each_case():
    only = "--num 0,NaN weights,--out x.jpg writes JPEG"
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", only], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 4 and all(row.rstrip().endswith("| pass |") for row in rows), done.stdout
    assert "error: checkpoint ckpt_nan: 1 weight tensor(s) hold NaN or inf" in done.stdout
