"""Reports render from a small real run: tables with the expected rows/columns, figures exist."""

import pytest

from fmbench.cli import main
from fmbench.compare import load_results
from fmbench.report import build, tables
from fmbench.runner import run_suite
from fmbench.suite import load_suite
from tests.conftest import TINY


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    f = tmp / "s.toml"
    f.write_text(TINY.replace("nfe = 8", "nfe = [4, 8]"))
    run_suite(load_suite(f), tmp / "out", cache_dir=tmp / "cache")
    return tmp / "out"


def test_tables_have_expected_rows_and_columns(small_run):
    df = load_results(small_run)
    t = tables(df)
    full = t["All metrics (mean ± std over seeds; best per column in bold)"]
    assert len(full) == 2 * 3  # paths × solver configs
    assert {"w2", "w2_floor", "npe", "nll", "nfe", "solver_mse"} <= set(full.columns)
    w2 = t["Tong et al. layout: W2 per task"]
    assert list(w2.columns) == ["N->8gaussians"] and len(w2) == 6
    # exactly one best (bold) W2 per solver configuration
    for _, grp in w2.groupby(level=0):
        assert sum(str(v).startswith("**") for v in grp["N->8gaussians"]) == 1


def test_markdown_and_html_reports(small_run, tmp_path):
    md = build(small_run, "md")
    text = md.read_text()
    assert "# fmbench report: tiny" in text and "## Tong et al. layout: W2 per task" in text
    figs = {p.name for p in md.parent.glob("*.png")}
    assert {"solver_mse_vs_nfe_N-_8gaussians.png", "w2_vs_nfe_N-_8gaussians.png",
            "w2_bars.png", "npe_bars.png", "loss_N-_8gaussians.png", "samples_2d.png"} <= figs
    for name in figs:
        assert f"({name})" in text
    assert main(["report", str(small_run), "--format", "html", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figs) and "<table>" in page


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
