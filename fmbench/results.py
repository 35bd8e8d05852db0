"""Results: long-format rows (one per case × seed × metric), the folder that holds them, run metadata.

Layout of a results directory::

    run.json              resolved suite, its definition, git commit, versions, sessions, seeds
    cases/<case_id>.json  the rows of one finished case, written atomically
    results.csv           every row of every case file present, rebuilt after each case
    losses/  samples/     training-loss curves and saved samples (for reports)
    .fmbench.lock         held by the live run (see fmbench.storage.FolderLock)

A case file exists only once its case is complete, so an interrupted run (Ctrl-C, kill -9) resumes
by skipping the cases that have one: nothing lost, nothing duplicated. :class:`ResultsSession`
owns a folder for one run: it takes the lock, removes orphan temporary files, sets corrupt files
aside (renamed, logged, recomputed), refuses folders that fmbench did not write and resumes only
the suite that started the folder (``force`` merges deliberately), then records cases.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from fmbench.storage import (
    LOCK_NAME,
    FolderLock,
    StorageError,
    atomic_write_text,
    remove_orphans,
    set_aside,
)

__all__ = ["atomic_write_text", "ResultStore", "ResultsSession", "RunError", "summarize"]

log = logging.getLogger("fmbench")

SCHEMA_VERSION = 1

ROW_COLUMNS = [
    "schema_version", "suite", "case_id", "model_key", "task", "source", "target", "path", "path_label",
    "path_params", "coupling", "objective", "solver", "solver_label", "solver_params", "seed",
    "n_eval", "settings", "metric", "value", "unit", "higher_is_better", "metric_version",
    "metric_params",
    "status", "reason",
]
STATUSES = ("ok", "failed", "not_applicable")


class RunError(RuntimeError):
    """Unusable request: results exist without --resume, another suite's folder, a folder that
    fmbench did not write."""


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


class CorruptFile(ValueError):
    """A file fmbench wrote earlier cannot be read back (truncated, edited, other schema)."""


def _read_json_object(path: Path) -> dict:
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptFile(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CorruptFile(f"not a JSON object (a JSON {type(doc).__name__})")
    return doc


def _case_rows(path: Path) -> list[dict]:
    """The rows of a case file, checked: schema, row shape, case id = file name."""
    doc = _read_json_object(path)
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise CorruptFile(f"schema version {doc.get('schema_version')!r}, this fmbench writes "
                          f"{SCHEMA_VERSION}")
    rows = doc.get("rows")
    if not isinstance(rows, list) or not rows:
        raise CorruptFile("no rows")
    for r in rows:
        if not isinstance(r, dict) or set(ROW_COLUMNS) - set(r):
            raise CorruptFile("a row lacks columns")
        if r["case_id"] != path.stem or r["status"] not in STATUSES:
            raise CorruptFile("a row has another case id or an unknown status")
    return rows


# files fmbench writes, per sub-folder (what --overwrite may delete)
OWN_FILES = {".": ("run.json", "results.csv", "run.json.corrupt-*"),
             "cases": ("*.json", "*.json.corrupt-*"), "losses": ("*.json",),
             "samples": ("*.npz", "*.png"), "report": ("report.md", "report.html", "*.png")}


class ResultStore:
    """The files of one results folder (no policy: see ResultsSession)."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.cases_dir = self.dir / "cases"

    def case_files(self) -> list[Path]:
        return sorted(self.cases_dir.glob("*.json")) if self.cases_dir.is_dir() else []

    def has_results(self) -> bool:
        return bool(self.case_files())

    def kind(self) -> str:
        """'missing', 'empty', 'fmbench' (written by fmbench) or 'foreign'."""
        if not self.dir.exists():
            return "missing"
        if not self.dir.is_dir():
            return "foreign"
        entries = [p for p in self.dir.iterdir() if p.name != LOCK_NAME]
        if not entries:
            return "empty"
        try:
            meta = _read_json_object(self.dir / "run.json")
            if "schema_version" in meta and "suite" in meta:
                return "fmbench"
        except (CorruptFile, OSError):
            pass
        for p in self.case_files():
            try:
                _case_rows(p)
                return "fmbench"
            except (CorruptFile, OSError):
                continue
        return "foreign"

    def clear(self) -> list[Path]:
        """Remove only the files fmbench writes; returns the other files left in place."""
        for sub, patterns in OWN_FILES.items():
            folder = self.dir / sub
            for pattern in patterns:
                for p in folder.glob(pattern) if folder.is_dir() else []:
                    if p.is_file() and not p.is_symlink():
                        p.unlink()
        remove_orphans(self.dir, legacy=True)
        for sub in OWN_FILES:
            if sub != "." and (self.dir / sub).is_dir() and not any((self.dir / sub).iterdir()):
                (self.dir / sub).rmdir()
        return [p for p in self.dir.rglob("*") if p.is_file() and p.name != LOCK_NAME]

    def load_cases(self) -> dict[str, list[dict]]:
        """Rows of every readable case file; unreadable ones are set aside (and logged)."""
        out = {}
        for p in self.case_files():
            try:
                out[p.stem] = _case_rows(p)
            except CorruptFile as e:
                set_aside(p, str(e))
        return out

    def write_case(self, case_id: str, rows: list[dict]) -> None:
        atomic_write_text(self.cases_dir / f"{case_id}.json",
                          json.dumps({"schema_version": SCHEMA_VERSION, "rows": rows}))

    def read_rows(self, case_ids: set[str] | None = None) -> pd.DataFrame:
        rows = [r for cid, rs in self.load_cases().items()
                if case_ids is None or cid in case_ids for r in rs]
        return pd.DataFrame(rows, columns=ROW_COLUMNS)

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
        """run.json as a dict ({} when absent); raises CorruptFile when unreadable."""
        p = self.dir / "run.json"
        return _read_json_object(p) if p.exists() else {}

    def write_meta(self, meta: dict) -> None:
        atomic_write_text(self.dir / "run.json", json.dumps(meta, indent=2, default=str))


def definition_diff(old: object, new: object, key: str = "", limit: int = 8) -> list[str]:
    """Human-readable differences between two JSON-like definitions ('training.steps: 30 → 60')."""
    out: list[str] = []

    def walk(a, b, k):
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in dict.fromkeys([*a, *b]):
                walk(a.get(sub, "(absent)"), b.get(sub, "(absent)"), f"{k}.{sub}" if k else sub)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{k}[{i}]")
        elif a != b:
            out.append(f"{k or 'definition'}: {_short(a)} → {_short(b)}")

    walk(old, new, key)
    return out[:limit] + ([f"… and {len(out) - limit} more"] if len(out) > limit else [])


def _short(v: object, n: int = 80) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 1] + "…"


class ResultsSession:
    """One run's hold on a results folder: lock, checks, case records, run.json.

    Use :meth:`open` (a context manager): on leaving, run.json says ``complete``, or
    ``interrupted``/``failed`` with the exception, and the lock is released.
    """

    def __init__(self, store: ResultStore, lock: FolderLock, meta: dict,
                 rows_by_case: dict[str, list[dict]], case_ids: list[str]):
        self.store, self.lock, self.meta = store, lock, meta
        self.rows_by_case, self.case_ids = rows_by_case, case_ids

    @classmethod
    def open(cls, out_dir: str | Path, meta: dict, definition: dict, case_ids: Iterable[str],
             *, resume: bool = False, overwrite: bool = False, force: bool = False
             ) -> ResultsSession:
        """Take ``out_dir`` for a run whose metadata is ``meta`` and whose numbers are defined by
        ``definition`` (compared on resume). Raises RunError or StorageError before writing."""
        if resume and overwrite:
            raise RunError("--resume and --overwrite exclude each other")
        store, case_ids = ResultStore(out_dir), list(case_ids)
        kind = store.kind()
        if kind == "foreign":
            what = "is not a folder" if store.dir.exists() and not store.dir.is_dir() else \
                "is not empty and holds no fmbench results (no run.json or case files)"
            raise RunError(f"{store.dir} {what}; fmbench writes only into a new or empty folder "
                           "or one of its own runs: choose another --out")
        lock = FolderLock(store.dir).acquire()
        try:
            return cls._take(store, lock, meta, definition, case_ids, resume, overwrite, force)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _take(cls, store, lock, meta, definition, case_ids, resume, overwrite, force):
        removed = remove_orphans(store.dir, legacy=True)
        if removed:
            log.info("removed %d orphan temporary file(s) of an interrupted run in %s",
                     len(removed), store.dir)
        if overwrite:
            kept = store.clear()
            if kept:
                log.warning("--overwrite kept %d file(s) fmbench did not write in %s, e.g. %s",
                            len(kept), store.dir, kept[0])
        try:
            old = store.read_meta()
        except CorruptFile as e:
            set_aside(store.dir / "run.json", str(e))
            old = {}
        rows = store.load_cases()
        if rows and not resume:
            raise RunError(f"{store.dir} already holds results; pass --resume to finish that run, "
                           "--overwrite to replace it, or --out to write elsewhere")
        if rows or old:
            problems = cls._mismatch(old, definition, set(rows) - set(case_ids))
            if problems and resume and not force:
                raise RunError(f"{store.dir} holds another suite or other settings; --resume "
                               "would mix their numbers:\n  " + "\n  ".join(problems) +
                               "\nUse --overwrite to replace it, --out for a new folder, or "
                               "--resume --force to keep both in one table deliberately")
            if problems and resume:
                log.warning("--force: %s keeps the earlier rows beside this suite's (%s)",
                            store.dir, "; ".join(problems[:3]))
        full = dict(old) if resume else {}
        full.update(meta)
        full.update({"schema_version": SCHEMA_VERSION, "definition": definition,
                     "n_cases": len(case_ids), "status": "running"})
        full.setdefault("started", now())
        done = sum(1 for c in case_ids if c in rows)
        full["sessions"] = [*(full.get("sessions") or []),
                            {"started": now(), "resumed": resume, "forced": force,
                             "cases_already_done": done}]
        store.write_meta(full)
        return cls(store, lock, full, rows, case_ids)

    @staticmethod
    def _mismatch(old: dict, definition: dict, foreign_ids: set[str]) -> list[str]:
        if "definition" in old:
            return definition_diff(old["definition"], definition)
        if old.get("suite") not in (None, definition.get("suite", {}).get("name")):
            return [f"suite name: {old.get('suite')!r} → {definition['suite']['name']!r}"]
        if foreign_ids:
            return [f"{len(foreign_ids)} finished case(s) are not cases of this suite"]
        return []

    # ------------------------------------------------------------------ during the run
    def done_ids(self) -> set[str]:
        """Cases finished without a failed row (failed cases are retried on resume)."""
        return {cid for cid, rows in self.rows_by_case.items()
                if not any(r["status"] == "failed" for r in rows)}

    def record(self, case_id: str, rows: list[dict]) -> None:
        self.store.write_case(case_id, rows)
        self.rows_by_case[case_id] = rows
        self.store.write_table(self.table())

    def table(self) -> pd.DataFrame:
        """Every case file's rows: this suite's cases in suite order, then any others."""
        order = [c for c in self.case_ids if c in self.rows_by_case]
        order += sorted(set(self.rows_by_case) - set(order))
        return pd.DataFrame([r for c in order for r in self.rows_by_case[c]],
                            columns=ROW_COLUMNS)

    def close(self, status: str) -> None:
        self.meta["sessions"][-1]["finished"] = now()
        self.meta.update({"finished": now(), "status": status})
        try:
            if status == "complete":
                self.store.write_table(self.table())
            self.store.write_meta(self.meta)
        except StorageError:
            if status == "complete":
                raise
        finally:
            self.lock.release()

    def __enter__(self) -> ResultsSession:
        return self

    def __exit__(self, typ, exc, tb) -> None:
        self.close("complete" if typ is None else
                   "interrupted" if issubclass(typ, KeyboardInterrupt) else "failed")


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
