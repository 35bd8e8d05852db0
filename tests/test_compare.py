"""compare / check / merge on hand-made result sets."""

import json

import pandas as pd
import pytest

from fmbench.cli import main
from fmbench.compare import CompareConfig, ResultsError, classify, load_results, merge, render_markdown
from fmbench.results import ROW_COLUMNS, SCHEMA_VERSION


def rows(path, metric, values, *, hib=False, params=None, n_eval=1000, status="ok",
         solver="euler", unit=""):
    out = []
    for seed, v in enumerate(values):
        out.append({
            "schema_version": SCHEMA_VERSION, "suite": "s", "case_id": f"{path}-{seed}",
            "model_key": "m", "task": "N->8gaussians", "source": "gaussian",
            "target": "8gaussians", "path": path, "path_label": path,
            "path_params": json.dumps({"sigma": 0.1}), "coupling": "independent",
            "objective": "velocity", "solver": solver, "solver_label": solver,
            "solver_params": json.dumps({"steps": 100}), "seed": seed, "n_eval": n_eval,
            "metric": metric, "value": v, "unit": unit, "higher_is_better": hib,
            "metric_version": 1, "metric_params": json.dumps(params or {"n_eval": n_eval}),
            "status": status, "reason": "" if status == "ok" else "boom"})
    return out


def frame(*groups):
    return pd.DataFrame([r for g in groups for r in g], columns=ROW_COLUMNS)


BASE = frame(
    rows("icfm", "w2", [1.00, 1.02, 0.98]),          # worse in B (big, significant)
    rows("otcfm", "w2", [1.00, 1.02, 0.98]),         # better in B
    rows("fm-ot", "w2", [1.00, 1.10, 0.90]),         # within noise (small shift, big spread)
    rows("rf", "w2", [1.0, 1.0, 1.0], n_eval=500),   # not comparable: n_eval differs
    rows("trig", "w2", [1.0, 1.0, 1.0]),             # missing in B
    rows("icfm", "fid", [10.0], hib=False),          # 1 seed: threshold rule → worse
    rows("icfm", "acc", [0.5, 0.5, 0.5], hib=True),  # higher is better: drop is worse
    rows("icfm", "train_time", [10.0], unit="s"),    # timing: skipped by default
)
CAND = frame(
    rows("icfm", "w2", [1.30, 1.32, 1.28]),
    rows("otcfm", "w2", [0.70, 0.72, 0.68]),
    rows("fm-ot", "w2", [1.05, 1.15, 0.95]),
    rows("rf", "w2", [1.0, 1.0, 1.0], n_eval=1000),
    rows("sbcfm", "w2", [1.0]),                      # missing in A
    rows("icfm", "fid", [20.0], hib=False),
    rows("icfm", "acc", [0.3, 0.3, 0.3], hib=True),
    rows("icfm", "train_time", [99.0], unit="s"),
)


def _status(comps):
    return {(c.label.split(" / ")[1].split("(")[0], c.metric): c.status for c in comps}


def test_each_classification():
    got = _status(classify(BASE, CAND))
    assert got == {
        ("icfm", "w2"): "worse", ("otcfm", "w2"): "better", ("fm-ot", "w2"): "within noise",
        ("rf", "w2"): "not comparable", ("trig", "w2"): "missing",
        ("sbcfm", "w2"): "missing", ("icfm", "fid"): "worse", ("icfm", "acc"): "worse",
    }
    with_times = _status(classify(BASE, CAND, CompareConfig(include_times=True)))
    assert with_times[("icfm", "train_time")] == "worse"


def test_threshold_and_failed_rows():
    # a 30% worse w2 passes a 50% threshold
    assert _status(classify(BASE, CAND, CompareConfig(thresholds={"w2": 0.5})))[
        ("icfm", "w2")] == "within noise"
    failed = frame(rows("icfm", "w2", [float("nan")] * 3, status="failed"))
    comps = classify(frame(rows("icfm", "w2", [1, 1, 1])), failed)
    assert comps[0].status == "missing" and "boom" in comps[0].note


def test_markdown_snapshot():
    md = render_markdown(classify(BASE, CAND))
    lines = md.splitlines()
    assert lines[0] == ("**3** worse · **1** better · **1** within noise · **1** not comparable · "
                        "**2** missing")
    assert lines[2] == "| case | metric | status | A | B | change | note |"
    assert lines[4] == ("| N->8gaussians / icfm(sigma=0.1) / euler(steps=100) | acc | worse | "
                        "0.5 ± 0 (n=3) | 0.3 ± 0 (n=3) | -40.0% | Welch t-test |")
    assert "| not comparable |" in md and "differs in metric_params, n_eval" in md


def _write(tmp_path, name, df, suite_check=None):
    d = tmp_path / name
    d.mkdir()
    df.to_csv(d / "results.csv", index=False)
    (d / "run.json").write_text(json.dumps({"resolved_suite": {"check": suite_check or {}}}))
    return d


def test_check_exit_codes(tmp_path, capsys):
    base = _write(tmp_path, "base", BASE)
    same = _write(tmp_path, "same", BASE)
    cand = _write(tmp_path, "cand", CAND)
    assert main(["check", str(same), "--baseline", str(base)]) == 0
    assert main(["check", str(cand), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "icfm" in out
    lenient = _write(tmp_path, "lenient", frame(*[CAND[CAND.path != "x"].to_dict("records")],
                                                 rows("trig", "w2", [1.0, 1.0, 1.0])),
                     {"threshold": 10.0})
    assert main(["check", str(lenient), "--baseline", str(base)]) == 0
    lost = _write(tmp_path, "lost", BASE[BASE.path != "trig"])  # same numbers, one metric gone
    assert main(["check", str(lost), "--baseline", str(base)]) == 1
    assert "lost" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "nope"), "--baseline", str(base)]) == 2
    other = _write(tmp_path, "other", frame(rows("x", "w2", [1.0])))
    assert main(["check", str(other), "--baseline", str(base)]) == 2
    assert main(["compare", str(base), str(cand), "--format", "md"]) == 0
    assert "| worse |" in capsys.readouterr().out


def test_different_training_settings_are_not_comparable():
    a = frame(rows("icfm", "w2", [1.0, 1.0, 1.0])).assign(settings="aaa")
    b = frame(rows("icfm", "w2", [2.0, 2.0, 2.0])).assign(settings="bbb")
    (c,) = classify(a, b)
    assert c.status == "not comparable" and "settings" in c.note
    assert len(merge([a, b])) == 6  # different measurements: both kept


def test_schema_version_refusal(tmp_path):
    old = BASE.drop(columns=["schema_version"])
    old.to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(ResultsError, match="schema"):
        load_results(tmp_path / "old.csv")
    future = BASE.assign(schema_version=SCHEMA_VERSION + 1)
    future.to_csv(tmp_path / "future.csv", index=False)
    with pytest.raises(ResultsError, match="re-run"):
        load_results(tmp_path / "future.csv")
    assert main(["check", str(tmp_path / "future.csv"), "--baseline", str(tmp_path / "old.csv")
                 ]) == 2


def test_merge_deduplicates_on_case_key(tmp_path):
    a = frame(rows("icfm", "w2", [1.0, 2.0]))
    b = frame(rows("icfm", "w2", [9.0, 9.0, 3.0]))  # seeds 0, 1 again and a new seed 2
    failed = frame(rows("icfm", "w2", [float("nan")], status="failed"))
    m = merge([a, b, failed])
    assert len(m) == 3
    assert m.sort_values("seed")["value"].tolist() == [9.0, 9.0, 3.0]  # later ok wins, failed not
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    assert main(["merge", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out",
                 str(tmp_path / "m")]) == 0
    assert len(load_results(tmp_path / "m")) == 3
