"""A run's hold on its results folder: the record stage of the pipeline.

:meth:`ResultsSession.open` decides whether a run may use a folder and prepares it:

- only a new or empty folder or one of fmbench's own runs, never a symbolic link where fmbench
  writes (``--overwrite`` deletes only the files fmbench writes);
- an exclusive lock for the run's lifetime (a second run on the folder is refused);
- ``--resume`` only of the suite that started the folder: the suite's *definition* (everything
  that defines its numbers) is compared with run.json's and every difference is named; the
  finished case files must be this suite's cases (or ones adopted by an earlier ``--force``).
  ``force`` continues anyway and adopts the other cases: their rows stay in the table;
- orphan temporary files are removed and corrupt run.json/case files set aside (renamed, logged,
  recomputed) — only once the folder is accepted.

During the run it takes in finished cases (their case files written by the workers) and rebuilds
results.csv from every case file. In-flight markers (a model whose worker died) are kept by
:class:`fmbench.results.ResultStore`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from fmbench.results import (
    ROW_COLUMNS,
    SCHEMA_VERSION,
    CorruptFile,
    ResultStore,
    RunError,
    now,
)
from fmbench.storage import (
    FolderLock,
    StorageError,
    remove_orphans,
    set_aside,
    storage_error,
)

log = logging.getLogger("fmbench")

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


def _mismatch(old: dict, definition: dict, foreign_ids: set[str]) -> list[str]:
    """What differs between the folder's run and this suite (empty: the same suite)."""
    problems = definition_diff(old["definition"], definition) if "definition" in old else []
    if not problems and old.get("suite") not in (None, definition["suite"]["name"]):
        problems = [f"suite.name: {old.get('suite')} → {definition['suite']['name']}"]
    if not problems and foreign_ids:
        problems = [f"{len(foreign_ids)} finished case(s) are not cases of this suite (other "
                    "settings, other data, or another fmbench version)"]
    if any(p.startswith("code.") for p in problems):
        problems.append("(code.*: written by another version of fmbench's training or metric "
                        "code, whose models and numbers cannot be reused)")
    return problems


class ResultsSession:
    """One run's hold on a results folder: lock, checks, case records, run.json.

    Use :meth:`open` (a context manager): on leaving, run.json says ``complete``, or
    ``interrupted``/``failed``, and the lock is released.
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
        ``definition`` (compared on resume). Raises RunError or StorageError, having changed
        nothing in the folder but its lock file and orphan temporary files."""
        if resume and overwrite:
            raise RunError("--resume and --overwrite exclude each other")
        store = ResultStore(out_dir)
        try:
            kind = store.kind()
            if kind == "foreign":
                what = "is not a folder" if not store.dir.is_dir() else \
                    "is not empty and holds no fmbench results (no run.json or case files)"
                raise RunError(f"{store.dir} {what}; fmbench writes only into a new or empty "
                               "folder or one of its own runs: choose another --out")
            store.check_contained()
            lock = FolderLock(store.dir).acquire()
        except OSError as e:
            raise storage_error(store.dir, e) from e
        try:
            return cls._take(store, lock, meta, definition, list(case_ids), resume, overwrite,
                             force)
        except OSError as e:
            lock.release()
            raise storage_error(store.dir, e) from e
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
            old, bad_meta = store.read_meta(), None
        except CorruptFile as e:
            old, bad_meta = {}, str(e)
        rows, corrupt = store.load_cases()
        if rows and not resume:
            raise RunError(f"{store.dir} already holds results; pass --resume to finish that run, "
                           "--overwrite to replace it, or --out to write elsewhere")
        adopted = set(old.get("merged_case_ids", [])) if resume else set()
        foreign = set(rows) - set(case_ids) - adopted
        problems = _mismatch(old, definition, foreign) if (rows or old) and resume else []
        if problems and not force:
            raise RunError(f"{store.dir} holds another suite or other settings; --resume "
                           "would mix their numbers:\n  " + "\n  ".join(problems) +
                           "\nUse --overwrite to replace it, --out for a new folder, or "
                           "--resume --force to keep both in one table deliberately")
        if problems:
            log.warning("--force: %s keeps the earlier rows beside this suite's (%s)",
                        store.dir, "; ".join(problems[:3]))
        if bad_meta is not None:
            set_aside(store.dir / "run.json", bad_meta)
        for p, why in corrupt.items():
            set_aside(p, why)
        full = dict(old) if resume else {}
        full.update(meta)
        full.update({"schema_version": SCHEMA_VERSION, "definition": definition,
                     "n_cases": len(case_ids), "status": "running",
                     "merged_case_ids": sorted(adopted | (foreign if force else set()))})
        full.setdefault("started", now())
        done = sum(1 for c in case_ids if c in rows)
        full["sessions"] = [*(full.get("sessions") or []),
                            {"started": now(), "resumed": resume, "forced": force,
                             "cases_already_done": done}]
        store.write_meta(full)
        return cls(store, lock, full, rows, case_ids)

    # ------------------------------------------------------------------ during the run
    def done_ids(self) -> set[str]:
        """Cases finished without a failed row (failed cases are retried on resume)."""
        return {cid for cid, rows in self.rows_by_case.items()
                if not any(r["status"] == "failed" for r in rows)}

    def record(self, case_id: str, rows: list[dict]) -> None:
        """Take a finished case into the table; its case file is already written (by the
        worker that ran it: :meth:`ResultStore.write_case`)."""
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
