"""Results store: long-format rows (one per case × seed × metric) plus run metadata.

Layout of a results directory::

    run.json              resolved suite, git commit, package versions, device, times, seeds
    cases/<case_id>.json  the rows of one finished case, written atomically
    results.csv           every row of the suite's cases, rewritten atomically after each case

A case file exists only once its case is complete, so an interrupted run (Ctrl-C, kill -9) resumes
by skipping the cases that have one: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

SCHEMA_VERSION = 1

ROW_COLUMNS = [
    "schema_version", "suite", "case_id", "model_key", "task", "source", "target", "path", "path_label",
    "path_params", "coupling", "objective", "solver", "solver_label", "solver_params", "seed",
    "n_eval", "settings", "metric", "value", "unit", "higher_is_better", "metric_version",
    "metric_params",
    "status", "reason",
]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit(cwd: str | None = None) -> dict:
    def _git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        return {"commit": _git("rev-parse", "HEAD") or None,
                "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict:
    import torch

    versions = {}
    for pkg in ("fmbench", "torch", "torchdiffeq", "POT", "numpy", "scipy", "scikit-learn",
                "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions, "python": platform.python_version(), "platform": platform.platform(),
        "device": "cpu", "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }


class ResultStore:
    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.cases_dir = self.dir / "cases"

    def has_results(self) -> bool:
        return self.cases_dir.is_dir() and any(self.cases_dir.glob("*.json"))

    def clear(self) -> None:
        """Remove this store's own files (cases, losses, samples, report, results.csv, run.json)."""
        for sub, pattern in (("cases", "*.json"), ("losses", "*.json"), ("samples", "*.*"),
                             ("report", "*.*")):
            folder = self.dir / sub
            for p in folder.glob(pattern) if folder.is_dir() else []:
                p.unlink()
        for name in ("results.csv", "run.json"):
            (self.dir / name).unlink(missing_ok=True)

    def done_ids(self) -> set[str]:
        """Cases finished without a failed row (failed cases are retried on resume)."""
        if not self.cases_dir.is_dir():
            return set()
        done = set()
        for p in self.cases_dir.glob("*.json"):
            try:
                rows = json.loads(p.read_text())["rows"]
            except (ValueError, KeyError):
                continue
            if not any(r["status"] == "failed" for r in rows):
                done.add(p.stem)
        return done

    def write_case(self, case_id: str, rows: list[dict]) -> None:
        atomic_write_text(self.cases_dir / f"{case_id}.json",
                          json.dumps({"schema_version": SCHEMA_VERSION, "rows": rows}))

    def read_rows(self, case_ids: set[str] | None = None) -> pd.DataFrame:
        rows = []
        for p in sorted(self.cases_dir.glob("*.json")) if self.cases_dir.is_dir() else []:
            if case_ids is not None and p.stem not in case_ids:
                continue
            doc = json.loads(p.read_text())
            if doc.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"{p}: schema version {doc.get('schema_version')} is not "
                                 f"{SCHEMA_VERSION}; re-run the suite with this fmbench")
            rows += doc["rows"]
        return pd.DataFrame(rows, columns=ROW_COLUMNS)

    def write_table(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.dir / "results.csv", df.to_csv(index=False))

    def write_losses(self, model_key: str, record: dict) -> None:
        atomic_write_text(self.dir / "losses" / f"{model_key}.json", json.dumps(record))

    def read_losses(self) -> list[dict]:
        folder = self.dir / "losses"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] \
            if folder.is_dir() else []

    def read_meta(self) -> dict:
        p = self.dir / "run.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def write_meta(self, meta: dict) -> None:
        atomic_write_text(self.dir / "run.json", json.dumps(meta, indent=2, default=str))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and seed count per task × path × solver × metric over ok rows, with the
    metric's direction (``higher_is_better``)."""
    ok = df[df["status"] == "ok"].copy()
    ok["value"] = ok["value"].astype(float)
    keys = ["task", "path_label", "solver_label", "metric"]
    g = ok.groupby(keys, sort=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    hib = ok.groupby("metric")["higher_is_better"].first().astype(str) == "True"
    out["higher_is_better"] = out["metric"].map(hib)
    return out
