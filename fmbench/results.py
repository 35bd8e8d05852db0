"""Results: the folder that holds a run's rows, and what is read back from it.

Layout of a results directory::

    run.json              resolved suite, its definition, git commit, versions, sessions, seeds
    cases/<case_id>.json  the rows of one finished case, written atomically
    results.csv           every row of every case file present, rebuilt after each case
    losses/  samples/     training-loss curves and saved samples (for reports)
    inflight/             a marker per model being worked on (ResultStore.begin_unit)
    run.log               progress lines and warnings of every session (fmbench.progress)
    slurm/                submitit's job scripts and logs (the slurm executor)
    .fmbench.lock         held by the live run (see fmbench.storage.FolderLock)

A case file exists only once its case is complete, so an interrupted run (Ctrl-C, kill -9) resumes
by skipping the cases that have one: nothing lost, nothing duplicated. Rows follow
:mod:`fmbench.schema`; :class:`ResultStore` knows the files and checks what it reads back, the
policy of a run over the folder is :class:`fmbench.session.ResultsSession`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from fmbench.schema import (
    OPTIONAL_COLUMNS,
    ROW_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    BadRow,
    parse_row,
)
from fmbench.storage import (
    LOCK_NAME,
    atomic_write_text,
    is_temp_name,
    remove_orphans,
    storage_error,
)

__all__ = ["ROW_COLUMNS", "SCHEMA_VERSION", "STATUSES", "CorruptFile", "ResultStore", "RunError",
           "atomic_write_text"]


MAX_DEATHS = 2  # hard deaths of a process inside one model's work before its cases fail


class RunError(RuntimeError):
    """Unusable request: results exist without --resume, another suite's folder, a folder that
    fmbench did not write, a folder it cannot use."""


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

    from fmbench.plugins import records as plugin_records

    versions = {}
    for pkg in ("fmbench", "torch", "torchdiffeq", "POT", "numpy", "scipy", "scikit-learn",
                "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA set-up: no usable GPU
        gpus = []
    return {
        "versions": versions, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "gpus": gpus, "torch_threads": torch.get_num_threads(),
        "plugins": plugin_records(),
    }


class CorruptFile(ValueError):
    """A file fmbench wrote earlier cannot be read back (truncated, edited)."""


def read_json_object(path: Path) -> dict:
    """A JSON object from a file; CorruptFile when it is not one, RunError when unreadable."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RunError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptFile(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CorruptFile(f"not a JSON object (a JSON {type(doc).__name__})")
    return doc


def _case_rows(path: Path) -> list[dict]:
    """The rows of a case file, checked like results.csv rows (fmbench.schema), with the case id
    equal to the file name. A newer schema is a RunError (another fmbench's folder)."""
    doc = read_json_object(path)
    version = doc.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise RunError(f"{path} was written by a newer fmbench (result schema {version}, this "
                       f"one writes {SCHEMA_VERSION}): use that version or another --out")
    if version != SCHEMA_VERSION:
        raise CorruptFile(f"schema version {version!r}, this fmbench writes {SCHEMA_VERSION}")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        raise CorruptFile("no rows")
    for r in rows:
        if not isinstance(r, dict) or set(ROW_COLUMNS) - set(r) - set(OPTIONAL_COLUMNS):
            raise CorruptFile("a row lacks columns")
        for c, default in OPTIONAL_COLUMNS.items():
            r.setdefault(c, default)
        try:
            parse_row({c: r[c] for c in ROW_COLUMNS})
        except BadRow as e:
            raise CorruptFile(f"a row is malformed: {e}") from None
        if r["case_id"] != path.stem:
            raise CorruptFile(f"a row of case {str(r['case_id'])[:40]!r}")
    return rows


HEX = "[0-9a-f]{16}"
# files fmbench writes, per sub-folder: what --overwrite deletes (nothing else)
OWN_FILES = {
    ".": (r"run\.json", r"results\.csv", r"run\.json\.corrupt-.*", r"run\.log"),
    "cases": (rf"{HEX}\.json", rf"{HEX}\.json\.corrupt-.*"),
    "losses": (rf"{HEX}\.json",), "inflight": (rf"{HEX}\.json",),
    "samples": (r".*-seed\d+\.(npz|png)",),
    "slurm": (r"[0-9_]+_(submission\.sh|submitted\.pkl|result\.pkl|log\.(out|err))",),  # submitit
    "report": (r"report\.(md|html)", r".*_vs_nfe_.*\.png", r"(w2|npe)_bars\.png",
               r"loss_.*\.png", r"samples_2d\.png"),
}


def _own(sub: str, name: str) -> bool:
    return any(re.fullmatch(p, name) for p in OWN_FILES[sub])


class ResultStore:
    """The files of one results folder (no policy: see fmbench.session.ResultsSession)."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.cases_dir = self.dir / "cases"

    def case_files(self) -> list[Path]:
        return sorted(self.cases_dir.glob("*.json")) if self.cases_dir.is_dir() else []

    def has_results(self) -> bool:
        return bool(self.case_files())

    def kind(self) -> str:
        """'missing', 'empty', 'fmbench' (written by fmbench) or 'foreign'. A folder with only
        a lock and temporary files (a first run killed at once) counts as empty."""
        if not self.dir.exists():
            return "missing"
        if not self.dir.is_dir():
            return "foreign"
        entries = [p for p in self.dir.iterdir()
                   if p.name != LOCK_NAME and not is_temp_name(p.name)]
        if not entries:
            return "empty"
        try:
            meta = read_json_object(self.dir / "run.json")
            if "schema_version" in meta and "suite" in meta:
                return "fmbench"
        except (CorruptFile, RunError):
            pass
        for p in self.case_files():
            try:
                _case_rows(p)
                return "fmbench"
            except (CorruptFile, RunError):
                continue
        return "foreign"

    def check_contained(self) -> None:
        """Refuse symbolic links where fmbench writes: a run writes only inside its folder."""
        for sub in OWN_FILES:
            p = self.dir / sub
            if sub != "." and (p.is_symlink() or (p.exists() and not p.is_dir())):
                raise RunError(f"{p} is a symbolic link or not a folder; fmbench writes only "
                               "inside its output folder: remove it or choose another --out")
        for name in ("run.json", "results.csv", "run.log"):
            if (self.dir / name).is_symlink():
                raise RunError(f"{self.dir / name} is a symbolic link; fmbench writes only "
                               "inside its output folder: remove it or choose another --out")

    def clear(self) -> list[Path]:
        """Remove only the files fmbench writes; returns the other files left in place."""
        self.check_contained()
        for sub in OWN_FILES:
            folder = self.dir / sub
            for p in list(folder.iterdir()) if folder.is_dir() else []:
                if p.is_file() and not p.is_symlink() and _own(sub, p.name):
                    p.unlink()
        remove_orphans(self.dir, legacy=True)
        for sub in OWN_FILES:
            folder = self.dir / sub
            if sub != "." and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return [p for p in self.dir.rglob("*") if p.is_file() and p.name != LOCK_NAME]

    def load_cases(self) -> tuple[dict[str, list[dict]], dict[Path, str]]:
        """Rows of every readable case file, and the unreadable ones with the reason."""
        rows, corrupt = {}, {}
        for p in self.case_files():
            try:
                rows[p.stem] = _case_rows(p)
            except CorruptFile as e:
                corrupt[p] = str(e)
        return rows, corrupt

    def finished_case(self, case_id: str, partial: bool = False) -> list[dict] | None:
        """The rows of case ``case_id`` when its file exists, is readable and has no failed row
        (``partial``: at least one ok row), else None."""
        path = self.cases_dir / f"{case_id}.json"
        if not path.exists():
            return None
        try:
            rows = _case_rows(path)
        except (CorruptFile, RunError):
            return None
        ok = [r["status"] != "failed" for r in rows]
        return rows if (any(ok) if partial else all(ok)) else None

    def write_case(self, case_id: str, rows: list[dict]) -> None:
        atomic_write_text(self.cases_dir / f"{case_id}.json",
                          json.dumps({"schema_version": SCHEMA_VERSION, "rows": rows}))

    def begin_unit(self, key: str) -> int:
        """Mark the model ``key`` as in flight; returns how many times a process died inside its
        work before (0 normally). Call :meth:`end_unit` however the work ends. A marker found
        here means its worker died (out of memory, a crash in native code, kill -9); after
        MAX_DEATHS deaths the unit's cases are recorded as failed so the suite can finish
        (``--resume`` retries them like any failed case)."""
        marker = self.dir / "inflight" / f"{key}.json"
        deaths = 0
        if marker.exists():
            try:
                deaths = int(read_json_object(marker).get("deaths", 0)) + 1
            except (CorruptFile, TypeError, ValueError):
                deaths = 1
        atomic_write_text(marker, json.dumps({"deaths": deaths, "since": now()}))
        return deaths

    def end_unit(self, key: str) -> None:
        try:
            (self.dir / "inflight" / f"{key}.json").unlink(missing_ok=True)
        except OSError as e:
            raise storage_error(self.dir / "inflight", e) from e

    def write_table(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.dir / "results.csv", df.to_csv(index=False))

    def write_losses(self, model_key: str, record: dict) -> None:
        atomic_write_text(self.dir / "losses" / f"{model_key}.json", json.dumps(record))

    def read_losses(self, problems: list[str] | None = None) -> list[dict]:
        """Training-loss records ({task, path_label, seed, losses: [[step, loss], ...]}); an
        unreadable or malformed file is skipped, and described in ``problems`` when given."""
        def number(x) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool)

        def why_bad(doc) -> str | None:
            if not isinstance(doc, dict):
                return "not a JSON object"
            for key, kind in (("task", str), ("path_label", str), ("seed", int), ("losses", list)):
                if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
                    return f"{key!r} is missing or not a {kind.__name__}"
            if not all(isinstance(x, list) and len(x) == 2 and all(map(number, x))
                       for x in doc["losses"]):
                return "'losses' is not a list of [step, loss] number pairs"
            return None

        folder = self.dir / "losses"
        out = []
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
                why = why_bad(doc)
            except (OSError, ValueError, RecursionError) as e:
                why = f"not readable JSON ({e})"
            if why is None:
                out.append(doc)
            elif problems is not None:
                problems.append(f"{p}: {why} (skipped)")
        return out

    def read_meta(self) -> dict:
        """run.json as a dict ({} when absent); CorruptFile when it is not a JSON object or its
        known fields have the wrong type."""
        p = self.dir / "run.json"
        if not p.exists():
            return {}
        meta = read_json_object(p)
        for key, kind in (("sessions", list), ("definition", dict), ("suite", str),
                          ("merged_case_ids", list)):
            if key in meta and not isinstance(meta[key], kind):
                raise CorruptFile(f"{key!r} is not a JSON {kind.__name__}")
        return meta

    def write_meta(self, meta: dict) -> None:
        atomic_write_text(self.dir / "run.json", json.dumps(meta, indent=2, default=str))
