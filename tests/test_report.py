"""Reports render from a small real run: tables with the expected rows/columns, figures exist;
damaged inputs are set aside, not fatal; untrusted text is escaped."""

import os
import platform
import re
import shutil

import numpy as np
import pytest

from fmbench.cli import main
from fmbench.compare import load_results, md_escape
from fmbench.figures import sample_panels
from fmbench.report import build, tables
from fmbench.runner import run_suite
from fmbench.suite import load_suite
from tests.conftest import TINY


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    f = tmp / "s.toml"
    f.write_text(TINY.replace("nfe = 8", "nfe = [4, 8]").replace("eval_draws = 1", "eval_draws = 3"))
    run_suite(load_suite(f), tmp / "out", cache_dir=tmp / "cache")
    return tmp / "out"


def test_tables_have_expected_rows_and_columns(small_run):
    df = load_results(small_run)
    t = tables(df)
    full = t["All metrics"]
    assert len(full) == 2 * 3  # paths × solver configs
    # headers carry unit and direction; a floor is not ranked, so it has no arrow
    assert {"w2 ↓", "w2_floor", "npe ↓", "nll [nats] ↓", "nfe [evals] ↓", "solver_mse ↓"} <= set(
        full.columns)
    assert list(full.index.names) == ["task", "path", "solver"]
    w2 = t["Tong et al. layout: W2 per task"]
    assert list(w2.columns) == ["N->8gaussians"] and len(w2) == 6
    # per solver configuration: one bold best, or no bold and the best tied with another
    for _, grp in w2.groupby(level=0):
        cells = [str(v) for v in grp["N->8gaussians"]]
        bold, tied = sum(c.startswith("**") for c in cells), sum(c.startswith("≈") for c in cells)
        assert (bold, tied) == (1, 0) or (bold == 0 and tied >= 2), cells
        assert all(c.rstrip("*").endswith("(2×3)") for c in cells)  # seeds × draws stated


def test_markdown_and_html_reports(small_run, tmp_path):
    md = build(small_run, "md")
    text = md.read_text()
    assert "# fmbench report: tiny" in text and "## Tong et al. layout: W2 per task" in text
    figs = {p.name for p in md.parent.glob("*.png")}
    assert {"solver_mse_vs_nfe_N-_8gaussians.png", "w2_vs_nfe_N-_8gaussians.png",
            "w2_bars.png", "npe_bars.png", "loss_N-_8gaussians.png", "samples_N-_8gaussians.png"} <= figs
    for name in figs:
        assert f"({name})" in text
    # every figure and table has a caption saying what it shows
    assert text.count("\n_") >= len(figs) + 3 and "one line per path (colour and marker)" in text
    assert main(["report", str(small_run), "--format", "html", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figs) and "<table>" in page
    # a table of contents whose every link lands on a section, and every section is listed
    toc = re.findall(r"<li><a href='#([^']+)'>", page.split("</nav>")[0])
    assert toc == re.findall(r"<section id='([^']+)'>", page) and len(toc) >= 5
    assert {"run", "all-metrics", "figures", "machine-and-versions", "where-the-time-went"} <= set(
        toc)
    # header and machine values as a reader writes them, not JSON: no quotes, no brackets
    assert "<td>seeds</td><td>0, 1</td>" in page and "<td>suite</td><td>tiny</td>" in page
    assert re.search(r"<td>torch</td><td>\d+\.\d+", page) and "&quot;" not in page
    assert f"<td>python</td><td>{platform.python_version()}</td>" in page


def test_failed_rows_are_explained_not_dropped(small_run):
    df = load_results(small_run)
    assert "Failed or not applicable (why the tables show a dash)" not in tables(df)
    hit = (df["metric"] == "w2") & (df["solver_label"] == df["solver_label"].iloc[0])
    df.loc[hit, ["status", "reason"]] = ["failed", "AssertionError: underflow in dt 0.0"]
    bad = tables(df)["Failed or not applicable (why the tables show a dash)"]
    assert len(bad) == df.loc[hit, "path_label"].nunique()
    assert set(bad["reason"]) == {"AssertionError: underflow in dt 0.0"}
    seeds = ", ".join(str(v) for v in sorted(df.loc[hit, "seed"].unique()))
    assert set(bad["metrics"]) == {"w2"} and set(bad["seeds"]) == {seeds}


# ---------------------------------------------------------------- damaged or hostile inputs
FAILED = "## Failed or not applicable (why the tables show a dash)"


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A copy of the small run (without a report of its own) to damage."""
    dst = tmp_path / "run"
    shutil.copytree(small_run, dst, ignore=shutil.ignore_patterns("report"))
    return dst


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one warning per line


def _set_aside(text: str) -> str:
    assert text.count("## Set aside") == 1
    return text.split("## Set aside", 1)[1]


def test_all_failed_run_still_reports(run_copy, tmp_path, capsys):
    df = load_results(run_copy)
    df = df.assign(status="failed", value=float("nan"), reason="RuntimeError: boom")
    df.to_csv(run_copy / "results.csv", index=False)
    assert main(["report", str(run_copy)]) == 0
    text = (run_copy / "report" / "report.md").read_text()
    assert "No ok value" in text and FAILED in text and "RuntimeError: boom" in text
    assert "## All metrics" not in text and "## Set aside" not in text
    assert main(["report", str(run_copy), "--format", "html", "--out", str(tmp_path / "h")]) == 0
    assert "RuntimeError: boom" in (tmp_path / "h" / "report.html").read_text()
    assert "warning" not in capsys.readouterr().err


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


class _Payload:
    """Pickled into an object array: loading it with pickles allowed would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_damaged_side_files_are_set_aside(run_copy, tmp_path, capsys):
    losses = sorted((run_copy / "losses").glob("*.json"))
    df = load_results(run_copy)
    npz = [p.file for p in sample_panels(run_copy, df, ".npz")]  # the files the report reads
    _truncate(losses[0])
    (losses[1]).write_text('{"task": "t", "path_label": "p", "seed": 0, "losses": [[1, "x"]]}')
    _truncate(npz[0])
    marker = tmp_path / "unpickled"
    np.savez(npz[1], samples=np.array([_Payload(marker)], dtype=object),
             trajectories=np.zeros((2, 2, 2)), test=np.zeros((2, 2)))
    np.savez(npz[2], samples=np.zeros((4, 3)), trajectories=np.zeros((2, 4, 2)),
             test=np.zeros((4, 2)))  # readable but not 2D
    grid = run_copy / "samples" / (npz[3].stem + ".png")  # as an image case's grid is named
    grid.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (run_copy / "run.json").write_text('{"suite": "tiny", "git": {"comm')
    damaged = [losses[0], losses[1], npz[0], npz[1], npz[2], grid,
               run_copy / "run.json"]
    assert main(["report", str(run_copy)]) == 0
    folder = run_copy / "report"
    text = (folder / "report.md").read_text()
    items = [ln for ln in _set_aside(text).splitlines() if ln.startswith("- ")]
    assert len(items) == len(damaged)
    for f in damaged:
        assert sum(md_escape(f.name) in item for item in items) == 1, f
    assert not marker.exists()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(damaged) and all(ln.startswith("warning: set aside: ") for ln in err)
    # what is valid still renders: the tables, the other losses and samples
    assert "## Tong et al. layout: W2 per task" in text and "**commit** unknown" in text
    assert {"loss_N-_8gaussians.png", "samples_N-_8gaussians.png"} <= {
        p.name for p in folder.glob("*.png")}
    assert grid.name not in text.split("## Set aside")[0]
    assert main(["report", str(run_copy), "--format", "html", "--out", str(tmp_path / "h")]) == 0
    page = (tmp_path / "h" / "report.html").read_text()
    problems = page.split("<ul class='problems'>")[1].split("</ul>")[0]
    assert "<h2>Set aside</h2>" in page and problems.count("<li>") == len(damaged)


def test_truncated_results_csv_sets_rows_aside(run_copy, capsys):
    csv = run_copy / "results.csv"
    lines = csv.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace(",ok,", ",o,")
    text = "".join(lines)
    csv.write_text(text[:len(text) - len(lines[-1]) // 2])  # the last row cut in its middle
    assert main(["report", str(run_copy)]) == 0
    md = (run_copy / "report" / "report.md").read_text()
    aside = _set_aside(md)
    assert "results.csv line 6: status 'o' is not ok/failed/not_applicable (row set aside)" in aside
    assert f"results.csv line {len(lines)}: " in aside and "cut short" in aside
    assert "## Tong et al. layout: W2 per task" in md and "**set aside** 2" in md
    assert capsys.readouterr().err.count("warning: set aside: ") == 2


def test_no_usable_results_table_exits_2(run_copy, tmp_path, capsys):
    csv = run_copy / "results.csv"
    header = csv.read_text().splitlines()[0]
    for content in ("", header + "\n", header + "\n1,2,3\n", "\x00\x01binary"):
        csv.write_text(content)
        assert main(["report", str(run_copy)]) == 2, content
    csv.unlink()
    assert main(["report", str(run_copy)]) == 2
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert not (run_copy / "report").exists()
    assert capsys.readouterr().err.count("error: ") == 6


def _table_widths(md: str) -> list[set[int]]:
    """Per Markdown table, the set of cell counts of its rows (pipes escaped by \\ excluded)."""
    out = []
    for block in md.split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if rows:
            out.append({re.sub(r"\\.", "", ln).count("|") - 1 for ln in rows})
    return out


def test_untrusted_text_is_escaped_and_file_names_bounded(run_copy, tmp_path):
    evil = "<script>alert(1)</script>|x"
    long = "N->" + "y" * 300
    df = load_results(run_copy)
    df["task"] = np.where(df["path"] == "icfm", evil, long)
    df["suite"] = "<i>suite</i>"
    df["path_label"] = df["path_label"] + r"|*p*_$\frac$"  # $…$ would be mathtext in figures
    hit = df["metric"] == "npe"
    df.loc[hit, ["status", "value", "reason"]] = ["failed", float("nan"), "Boom:\nsecond | line"]
    clear = (df["metric"] == "w2") & (df["solver_label"] == "rk4x2")
    df.loc[clear, "value"] /= 10  # a best that noise separates: bold
    df.to_csv(run_copy / "results.csv", index=False)
    (run_copy / "run.json").unlink()
    md = build(run_copy, "md").read_text()
    assert "<script>" not in md and "<i>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in md
    assert "Boom: second \\| line" in md
    widths = _table_widths(md)
    assert len(widths) >= 3 and all(len(w) == 1 for w in widths)
    # best cells are still bold
    assert re.search(r"\| \*\*[0-9.e+-]+ ± [0-9.e+-]+ \(2×3\)\*\* \|", md)
    names = [p.name for p in (run_copy / "report").glob("*.png")]
    assert any("yyyy" in n for n in names) and max(map(len, names)) <= 120
    page = build(run_copy, "html", tmp_path / "h").read_text()
    assert "<script>" not in page and "<i>" not in page and "&lt;script&gt;" in page
    assert "<td><b>" in page  # best cells bold in HTML too


def test_loss_caption_says_what_was_drawn(tmp_path):
    """Two seeds of one path on the same steps get a median; a one-seed path shows its seed; the
    caption describes exactly those two and nothing else."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    from fmbench.figures import LOSS_LINES, figure_losses

    df = load_results(Path(__file__).parent / "data" / "report_snapshot")
    curve = [[100, 1.0], [200, 0.5], [300, 0.4]]
    losses = [{"task": "N->8gaussians", "path_label": "icfm", "losses": curve},
              {"task": "N->8gaussians", "path_label": "icfm",
               "losses": [[100, 1.2], [200, 0.6], [300, 0.5]]},
              {"task": "N->8gaussians", "path_label": "otcfm", "losses": curve[:1]}]
    (fig,) = figure_losses(losses, {}, df, tmp_path)
    assert LOSS_LINES["median"] in fig.caption and LOSS_LINES["single"] in fig.caption
    assert LOSS_LINES["seeds"] not in fig.caption and fig.path.is_file()
    losses[1]["losses"] = [[150, 0.9], [250, 0.6]]  # steps differ: no median for icfm
    (fig,) = figure_losses(losses, {}, df, tmp_path)
    assert LOSS_LINES["seeds"] in fig.caption and LOSS_LINES["median"] not in fig.caption


def test_time_split_ignores_what_is_not_a_finite_number():
    from fmbench.document import time_split

    meta = {"time_s": {"train": 30.0, "generate": 10, "huge": 10 ** 400, "inf": float("inf"),
                       "text": "5", "flag": True, "zero": 0.0}}
    assert time_split(meta) == [("train", 30.0, 0.75), ("generate", 10.0, 0.25)]
    assert time_split({"time_s": [1, 2]}) == [] and time_split({}) == []
