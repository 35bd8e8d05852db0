"""Progress of a run, wherever it runs.

- On a terminal: a rich progress bar over the cases and one bar per model in training.
- Otherwise (CI, nohup, SLURM logs): plain, timestamped lines — a unit started, its training at
  every tenth of the steps, a unit finished (cases, wall time, headline metrics) or failed.
- Always: the same lines appended to ``run.log`` in the results folder, with fmbench's warnings
  (files set aside, workers lost), workers' included.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fmbench.plan import WorkUnit
from fmbench.storage import storage_error
from fmbench.work import UnitEvent, UnitOutcome

LOG_NAME = "run.log"
HEADLINE = ("w2", "fid", "bpd", "nll", "nfe")  # metrics shown on a finished unit's line


def headline(rows: dict[str, list[dict]], limit: int = 3) -> str:
    """'w2 0.712 · nfe 20' from the first case's ok rows (the mean over its evaluation draws)."""
    first = next(iter(rows.values()), [])
    ok: dict[str, list[float]] = {}
    for r in first:
        if r["status"] == "ok":
            ok.setdefault(r["metric"], []).append(float(r["value"]))
    shown = [m for m in HEADLINE if m in ok][:limit]
    return " · ".join(f"{m} {sum(ok[m]) / len(ok[m]):.4g}" for m in shown)


class RunProgress:
    """Receives the executor's events and outcomes; a context manager."""

    def __init__(self, console: Console, out_dir: Path, units: list[WorkUnit], total: int,
                 done: int, executor: str):
        self.console, self.units = console, {u.key: u for u in units}
        self.total, self.done, self.executor = total, done, executor
        self.log = logging.getLogger("fmbench.progress")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        try:
            self.handlers: list[logging.Handler] = [logging.FileHandler(out_dir / LOG_NAME)]
        except OSError as e:
            raise storage_error(out_dir / LOG_NAME, e) from e
        if not console.is_terminal:
            self.handlers.append(logging.StreamHandler(console.file))
        for h in self.handlers:
            h.setFormatter(fmt)
            self.log.addHandler(h)
        self.warnings = logging.getLogger("fmbench")  # files set aside, workers lost, …
        self.warnings.addHandler(self.handlers[0])
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                            transient=False, disable=not console.is_terminal)
        self.overall = None
        self.training: dict[str, object] = {}
        self.tenth: dict[str, int] = {}
        self.time_s: dict[str, float] = {}  # where this session's units spent their time
        self.start = time.perf_counter()

    def __enter__(self) -> RunProgress:
        self.bar.__enter__()
        self.overall = self.bar.add_task("cases", total=self.total, completed=self.done, info="")
        self.log.info("run: %d unit(s) with %d pending case(s) of %d, executor %s",
                      len(self.units), self.total - self.done, self.total, self.executor)
        return self

    def __exit__(self, *exc) -> None:
        if self.time_s:
            self.log.info("session: %.1f s wall%s (summed over the units, which may run at "
                          "once)", time.perf_counter() - self.start, time_note(self.time_s))
        self.bar.__exit__(*exc)
        self.warnings.removeHandler(self.handlers[0])
        for h in self.handlers:
            self.log.removeHandler(h)
            h.close()

    def event(self, ev: UnitEvent) -> None:
        unit = self.units.get(ev.key)
        label = unit.label if unit else ev.key
        if ev.kind == "started":
            self.log.info("started %s (%d case(s)) %s", label, len(unit.cases) if unit else 0,
                          ev.info)
        elif ev.kind == "train":
            if ev.key not in self.training:
                self.training[ev.key] = self.bar.add_task(f"train {label}", total=ev.total,
                                                          info="")
            self.bar.update(self.training[ev.key], completed=ev.done, info=ev.info)
            tenth = math.floor(10 * ev.done / max(ev.total, 1))
            if tenth > self.tenth.get(ev.key, 0):
                self.tenth[ev.key] = tenth
                self.log.info("training %s: step %d/%d, %s", label, ev.done, ev.total, ev.info)
        elif ev.kind == "case":
            self.bar.update(self.overall, info=f"{label} {ev.info}")

    def finished(self, out: UnitOutcome) -> None:
        for what, sec in out.timings.items():
            self.time_s[what] = self.time_s.get(what, 0.0) + sec
        unit = self.units.get(out.key)
        label = unit.label if unit else out.key
        if out.key in self.training:
            self.bar.remove_task(self.training.pop(out.key))
        self.bar.advance(self.overall, len(out.rows))
        if out.failure:
            if self.console.is_terminal:
                self.console.print(f"[red]failed[/] {escape(label)}: {escape(out.failure)}",
                                   highlight=False)
            self.log.info("failed %s: %s", label, out.failure)
            return
        self.log.info("finished %s: %d case(s) in %.1f s %s%s; %s%s", label, len(out.rows),
                      out.seconds, f"on {out.device}" if out.device else "(saved before)",
                      " (model from the cache)" if out.cached else "",
                      headline(out.rows) or "no ok metric", time_note(out.timings))


def time_note(timings: dict[str, float]) -> str:
    """`` · time: train 55.1 s, generate 0.4 s, metric w2 1.2 s`` (largest first; empty when
    nothing was timed)."""
    if not timings:
        return ""
    parts = sorted(timings.items(), key=lambda kv: -kv[1])
    return " · time: " + ", ".join(f"{k} {v:.1f} s" for k, v in parts)
