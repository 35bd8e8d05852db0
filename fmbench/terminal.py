"""The run's summary on a terminal: one table per task, metric columns in blocks that fit the
console's width (values are never cut or wrapped), headers with unit and direction
(:func:`fmbench.summary.header`), floors in the task's caption rather than a column repeated
on every row, and one set of notes on what the numbers mean.
"""

from __future__ import annotations

import pandas as pd
from rich import box
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fmbench.summary import ALPHA, TIE, best_marks, cell, counts_note, headers, interval_note, summarize

LABELS = ("path", "solver")
_CELL_PAD = 3  # rich's padding (1 + 1) and the column separator


def _blocks(widths: dict[str, int], room: int) -> list[list[str]]:
    """Metric names packed in order into runs whose columns fit in ``room`` characters (a metric
    wider than the room still gets a block of its own)."""
    blocks: list[list[str]] = [[]]
    used = 0
    for m, w in widths.items():
        if blocks[-1] and used + w + _CELL_PAD > room:
            blocks.append([])
            used = 0
        blocks[-1].append(m)
        used += w + _CELL_PAD
    return blocks


def _task_cells(ts: pd.DataFrame, marks: pd.Series) -> dict[tuple[str, str], dict[str, str]]:
    """(path, solver) → metric → the cell as rich markup (best in bold, ties marked)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for i, r in ts.iterrows():
        text = escape(r["cell"])
        mark = marks[i]
        out.setdefault((r["path_label"], r["solver_label"]), {})[r["metric"]] = (
            f"[bold]{text}[/]" if mark == "best" else f"{TIE}{text}" if mark == "tie" else text)
    return out


def _floors(fs: pd.DataFrame) -> str:
    """A task's floors in one line (they depend on the task and n only, not on the model)."""
    items = dict.fromkeys(f"{r['metric']} {cell(r)}" for _, r in fs.iterrows())
    return ("floors (a perfect model's score at this n): " + "; ".join(items)) if items else ""


def _task_tables(task: str, ts: pd.DataFrame, fs: pd.DataFrame, marks: pd.Series,
                 heads: dict[str, str], width: int) -> list:
    cells = _task_cells(ts, marks)
    metrics = list(dict.fromkeys(ts["metric"]))
    label_w = [max(len(h), *(len(k[j]) for k in cells)) for j, h in enumerate(LABELS)]
    widths = {m: max(len(heads[m]), *(len(Text.from_markup(c.get(m, "–")).plain)
                                      for c in cells.values())) for m in metrics}
    blocks = _blocks(widths, width - sum(w + _CELL_PAD for w in label_w) - 1)
    tables = []
    for b, block in enumerate(blocks):
        part = f" ({b + 1}/{len(blocks)})" if len(blocks) > 1 else ""
        table = Table(title=escape(task) + part, box=box.SIMPLE_HEAD, title_justify="left")
        for h in LABELS:
            table.add_column(h, no_wrap=True)
        for m in block:
            table.add_column(escape(heads[m]), justify="right", no_wrap=True)
        for (path, solver), by in cells.items():
            table.add_row(escape(path), escape(solver), *(by.get(m, "–") for m in block))
        tables.append(table)
    floors = _floors(fs)
    return tables + ([Text(floors), Text("")] if floors else [])


def summary_tables(df: pd.DataFrame, title: str = "", width: int = 100) -> Group:
    """The summary of a results table (module docstring) for a console ``width`` wide: cells
    are fmbench.summary's mean ± 95% CI half-width; the best of a task in bold, ties ≈."""
    s = summarize(df)
    s["cell"] = [cell(r, show_n=False) for _, r in s.iterrows()]
    marks = best_marks(s, ["task", "metric"])
    heads = headers(s)
    parts: list = [Text(title, style="bold")] if title else []
    for task, ts in s.groupby("task", sort=False):
        scores = ts[ts["role"] != "floor"]
        if len(scores):
            parts += _task_tables(task, scores, ts[ts["role"] == "floor"], marks, heads, width)
    notes = [interval_note(s) + ".", f"Seeds × draws behind each mean: {counts_note(s)}."] \
        if len(s) else []
    notes.append(f"↓ lower is better, ↑ higher is better. Bold: best of its task, separated from "
                 f"the others by a paired test (alpha {ALPHA}); {TIE}: tied for best.")
    failed = df[df["status"] == "failed"]
    if len(failed):
        notes.append(f"{failed['case_id'].nunique()} case(s) with failed metrics: see below.")
    parts += [Text(n, style="dim") for n in notes]
    return Group(*parts)
