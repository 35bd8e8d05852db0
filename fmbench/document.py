"""What a report says, whatever its format: the run's header, the machine it ran on, how to read
the tables, the tables with captions, the figures and what was set aside. ``fmbench.report``
assembles a :class:`Document` from a results directory and writes it as Markdown;
``fmbench.report_html`` writes it as one self-contained HTML page."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from fmbench.figures import Figure, meta_value

FAILED_TITLE = "Failed or not applicable (why the tables show a dash)"
SET_ASIDE_TITLE = "Set aside"
MACHINE_TITLE = "Machine and versions"
TIME_TITLE = "Where the time went"
TITLE = "fmbench report: "  # + the suite's name
NO_VALUES = "No ok value: every measurement failed or was not applicable."
SET_ASIDE_INTRO = "Unusable input, left out of the tables and figures:"
TIME_CAPTION = ("Seconds by stage, summed over every work unit of every session (units that ran "
                "in parallel add up, so the total can exceed the wall time).")


@dataclass
class Document:
    header: dict[str, object]  # the run: suite, commit, seeds, n_eval, … (values as in run.json)
    reading: list[str]  # how to read the tables
    tables: dict[str, pd.DataFrame]  # title → table (index: the row labels)
    captions: dict[str, str]  # title → what the table shows
    figures: list[Figure] = field(default_factory=list)
    machine: dict[str, object] = field(default_factory=dict)
    time_split: list[tuple[str, float, float]] = field(default_factory=list)  # stage, s, share
    problems: list[str] = field(default_factory=list)

    @property
    def suite(self) -> str:
        return str(self.header["suite"])

    @property
    def has_values(self) -> bool:
        """Whether any table shows values (with no ok row, only the failures table is left)."""
        return any(title != FAILED_TITLE for title in self.tables)


def text(v: object) -> str:
    """A header or machine value as a reader writes it: no JSON quotes or brackets, yes/no for
    booleans, a dash where run.json had nothing."""
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(text(x) for x in v) if v else "none"
    if isinstance(v, dict):
        return ", ".join(f"{k} {text(x)}" for k, x in v.items()) if v else "none"
    return str(v)


def seconds(v: float) -> str:
    """A duration in seconds at a useful precision: 13,205 · 40.3 · 0.114."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.3f}"


def split_bold(v: object, ranked: bool) -> tuple[str, bool]:
    """A value cell's text and whether the table marked it best (``**…**``; only in ranked
    tables, whose value cells are numbers formatted by fmbench: untrusted text never counts)."""
    v = str(v)
    if ranked and len(v) > 4 and v.startswith("**") and v.endswith("**"):
        return v[2:-2], True
    return v, False


def _finite(v: object) -> float:
    """A run.json number as a float; nan for anything else (text, booleans, inf, 10**400)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    try:
        f = float(v)
    except OverflowError:
        return math.nan
    return f if math.isfinite(f) else math.nan


def machine(meta: dict) -> dict[str, object]:
    """Where the run ran, from run.json: executor, devices, Python, platform, cores, GPUs, torch
    threads, plug-ins, the packages' versions and the sessions (a resumed run has several)."""
    env = meta_value(meta, "environment") or {}
    env = env if isinstance(env, dict) else {}
    out: dict[str, object] = {
        "executor": meta_value(meta, "executor"), "devices": meta_value(meta, "devices"),
        "python": env.get("python"), "platform": env.get("platform"),
        "CPU cores": env.get("cpu_count"), "GPUs": env.get("gpus"),
        "torch threads": env.get("torch_threads"), "plug-ins": env.get("plugins"),
    }
    versions = env.get("versions")
    if isinstance(versions, dict):
        out.update({name: v for name, v in versions.items()})
    sessions = meta_value(meta, "sessions")
    if isinstance(sessions, list) and sessions:
        out["sessions"] = "; ".join(
            f"{text(meta_value(s, 'started'))} → {text(meta_value(s, 'finished'))}"
            + (" (resumed)" if meta_value(s, "resumed") else "") for s in sessions)
    return {k: v for k, v in out.items() if v is not None}


def time_split(meta: dict) -> list[tuple[str, float, float]]:
    """run.json's ``time_s`` (data, train, generate, each metric) as (stage, seconds, share of
    the total), largest first; stages that took no measurable time are left out."""
    times = meta_value(meta, "time_s")
    if not isinstance(times, dict):
        return []
    rows = [(str(k), _finite(v)) for k, v in times.items()]
    rows = [(k, v) for k, v in rows if v > 0]  # nan (not a finite number) fails this too
    total = sum(v for _, v in rows)
    return [(k, v, v / total) for k, v in sorted(rows, key=lambda kv: -kv[1])] if total else []
