"""A subset of ``scripts/bad_inputs.py`` (the issue-17 table) through the real entry point.

The whole table takes minutes; this runs the cases that need no store or model download, and
fails if any exits with an unexpected status or prints a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bad_input_table_subset_has_no_traceback_and_expected_statuses():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bad_inputs.py"), "--no-concurrency", "--only",
                           "layers,positions,chunk,out-file,header-only,empty-out,n-random,labels"],
                          env=env, capture_output=True, text=True, timeout=900)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `emolens")]
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(rows) == 12 and "UNEXPECTED" not in done.stdout and "Traceback" not in done.stdout
    assert all("| 2 | emolens: error:" in row for row in rows), rows
