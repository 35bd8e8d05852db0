"""report.md of a committed results folder (``tests/data/report_snapshot``: a real 2-path ×
3-solver × 2-seed × 2-draw run, one w2 value set to failed) against its committed snapshot: the
tables' values, intervals and bold/≈ marks, headers with units and direction, captions, the failures
table, figure list, machine and time sections. Any change to what a report says shows up here as a
diff to review. After an intended change, rewrite the snapshot with
``FMBENCH_UPDATE_SNAPSHOTS=1 pytest tests/test_report_snapshot.py`` and commit it with the change."""

import os
import shutil
from pathlib import Path

from fmbench.report import build

DATA = Path(__file__).parent / "data" / "report_snapshot"
SNAPSHOT = Path(__file__).parent / "snapshots" / "report.md"


def test_report_markdown_matches_snapshot(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DATA, run)
    text = build(run, "md").read_text()
    if os.environ.get("FMBENCH_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    want = SNAPSHOT.read_text()
    assert text == want, _first_difference(want, text)


def _first_difference(want: str, got: str) -> str:
    """Where report.md first departs from the snapshot (pytest shows the full diff after it)."""
    a, b = want.splitlines(), got.splitlines()
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return (f"report.md differs from {SNAPSHOT.name} at line {i + 1}:\n"
            f"  snapshot: {a[i] if i < len(a) else '(end)'}\n"
            f"  now:      {b[i] if i < len(b) else '(end)'}\n"
            "(an intended change? FMBENCH_UPDATE_SNAPSHOTS=1, see the module docstring)")
