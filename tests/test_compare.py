"""compare / check / merge on hand-made result sets."""

import json
import re

import pandas as pd
import pytest

from fmbench.cli import main
from fmbench.compare import (
    CompareConfig,
    ResultsError,
    check_config,
    classify,
    load_results,
    merge,
    render_markdown,
)
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
            "objective": "velocity", "solver": solver, "solver_label": f"{solver}x100",
            "solver_params": json.dumps({"steps": 100}), "seed": seed, "draw": 0,
            "n_eval": n_eval,
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
    # the labels of fmbench run's table and the report
    assert lines[4] == ("| N-&gt;8gaussians / icfm / eulerx100 | acc ↑ | worse | "
                        "0.5 (3×1) | 0.3 (3×1) | -40.0% | Welch over seeds (1 draw); covers "
                        "seeds |")
    assert "| not comparable |" in md
    timed = render_markdown(classify(BASE, CAND, CompareConfig(include_times=True)))
    assert r"| train_time \[s\] ↓ | worse |" in timed  # unit and direction, as the report heads it
    assert 'differs in metric_params {"n_eval": 500} → {"n_eval": 1000}; n_eval 500 → 1000' in md


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
    (c,) = classify(a, b)  # rows without settings_json (written before it): the digests
    assert c.status == "not comparable" and "settings (digest aaa → bbb;" in c.note
    assert len(merge([a, b])) == 6  # different measurements: both kept
    # with the settings stored readably, the note names each key that differs and both values
    common = {"data_seed": 1, "model": {"kind": "mlp", "options": {"width": 64}}}
    ja = json.dumps({**common, "training": {"steps": 600, "lr": 0.001}})
    jb = json.dumps({**common, "training": {"steps": 1200, "lr": 0.001}, "task_options": {"k": 1}})
    (c,) = classify(a.assign(settings_json=ja), b.assign(settings_json=jb))
    assert c.note == "differs in settings: training.steps 600 → 1200, task_options.k (unset) → 1"
    # several settings within one side, or the same stored settings: the note says so, it does
    # not blame old rows
    a2 = pd.concat([a.assign(settings_json=ja), a.assign(settings="ccc", settings_json=jb)])
    (c,) = classify(a2, b.assign(settings_json=jb))
    assert c.note == "differs in settings (digest aaa/ccc → bbb: more than one setting within a side)"
    (c,) = classify(a.assign(settings_json=ja), b.assign(settings_json=ja))
    assert c.note == "differs in settings (digest aaa → bbb; the stored settings agree)"


def test_check_names_the_setting_that_differs(tmp_path, capsys):
    """End to end: a suite run twice with another step count; check says which key changed."""
    from fmbench.runner import run_suite
    from fmbench.suite import load_suite
    from tests.conftest import TINY

    suite = TINY.replace('[[path]]\nname = "otcfm"\n', "").replace("nfe = 8", "nfe = 4")
    for name, steps in (("a", 30), ("b", 40)):
        f = tmp_path / f"{name}.toml"
        f.write_text(suite.replace("steps = 30", f"steps = {steps}"))
        run_suite(load_suite(f), tmp_path / name, cache_dir=tmp_path / "cache")
    capsys.readouterr()
    assert main(["check", str(tmp_path / "b"), "--baseline", str(tmp_path / "a")]) == 2
    out = capsys.readouterr().out
    assert "nothing comparable" in out and "digest" not in out
    assert "every row: differs in settings: training.steps 30 → 40" in out


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


def test_merged_folder_carries_run_metadata_and_check_settings(tmp_path, capsys):
    a = frame(rows("icfm", "w2", [1.0, 2.0, 3.0]))
    shards = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        a.to_csv(d / "results.csv", index=False)
        (d / "run.json").write_text(json.dumps({
            "suite": "toy", "git": {"commit": name * 40}, "status": "complete",
            "check": {"threshold": 0.5, "alpha": 0.01, "thresholds": {"w2": 0.2}}}))
        shards.append(str(d))
    assert main(["merge", *shards, "--out", str(tmp_path / "m")]) == 0
    meta = json.loads((tmp_path / "m" / "run.json").read_text())
    assert meta["suite"] == "toy" and meta["status"] == "merged"
    assert [s["git"]["commit"][0] for s in meta["sources"]] == ["a", "b"]
    cfg = check_config(tmp_path / "m")
    assert (cfg.threshold, cfg.alpha, cfg.thresholds) == (0.5, 0.01, {"w2": 0.2})
    other = json.loads((tmp_path / "b" / "run.json").read_text())
    other["check"]["alpha"] = 0.2
    (tmp_path / "b" / "run.json").write_text(json.dumps(other))
    assert main(["merge", *shards, "--out", str(tmp_path / "m2")]) == 0
    assert "check" not in json.loads((tmp_path / "m2" / "run.json").read_text())  # disagree
    assert main(["merge", *shards, "--out", str(tmp_path / "m")]) == 0  # over an earlier merge
    run = tmp_path / "run"  # a run's folder: its run.json and case files must keep agreeing
    (run / "cases").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "suite": "toy",
                                              "status": "complete"}))
    capsys.readouterr()
    c = tmp_path / "c.csv"  # CSV inputs: the merged run.json names no suite
    a.to_csv(c, index=False)
    for _ in range(2):  # and merging over that merge again
        assert main(["merge", str(c), "--out", str(tmp_path / "m3")]) == 0
    assert main(["merge", str(c), "--out", str(tmp_path / "m3" / "table.csv")]) == 0
    for target, what in ((run, "holds an fmbench run"), (tmp_path / "a", "did not write"),
                         (run / "results.csv", "holds an fmbench run")):
        folder = target.parent if target.suffix else target
        before = sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.is_file())
        assert main(["merge", *shards, "--out", str(target)]) == 2
        assert what in capsys.readouterr().err
        assert sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.is_file()) == before


# ------------------------------------------------------------------- unusable input: exit 2
@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # error messages on one line each


def _exit_codes(base, cand, capsys):
    """check, compare (both directions) and merge on a corrupted candidate: all must say 2."""
    codes = [main(["check", str(cand), "--baseline", str(base)]),
             main(["compare", str(base), str(cand)]), main(["compare", str(cand), str(base)]),
             main(["merge", str(base), str(cand), "--out", str(cand.parent / "merged.csv")])]
    return codes, capsys.readouterr().err


def test_truncated_results_csv_is_refused_at_every_offset(tmp_path, capsys):
    base = _write(tmp_path, "base", BASE)
    cand = _write(tmp_path, "cand", CAND)
    data = (cand / "results.csv").read_bytes()
    cuts = [n for n in range(len(data) - 200, len(data)) if not data[:n].endswith(b"\n")]
    assert len(cuts) > 190  # the cuts fall inside rows, and into the last two rows at least
    for n in cuts:
        (cand / "results.csv").write_bytes(data[:n])
        assert main(["check", str(cand), "--baseline", str(base)]) == 2, n
        assert main(["compare", str(base), str(cand)]) == 2, n
        err = capsys.readouterr().err
        assert err.count("results.csv line") == 2 and err.count("\n") == 2, (n, err)
    assert not (tmp_path / "merged.csv").exists()


@pytest.mark.parametrize("column, bad, says", [
    ("value", "abc", "value 'abc' is not a number"),
    ("value", "", "value '' is not a finite number in an ok row"),
    ("value", "inf", "value 'inf' is not a finite number in an ok row"),
    ("path_params", "{not json", "path_params '{not json' is not valid JSON"),
    ("solver_params", "[1, 2]", "solver_params '[1, 2]' is not a JSON object"),
    ("metric_params", '{"n_eval": ', "metric_params '{\"n_eval\": ' is not valid JSON"),
    ("seed", "x", "seed 'x' is not an integer"),
    ("seed", "1.5", "seed '1.5' is not an integer"),
    ("higher_is_better", "maybe", "higher_is_better 'maybe' is not true/false"),
    ("status", "o", "status 'o' is not ok/failed/not_applicable"),
    ("metric", "", "metric is empty"),
])
def test_malformed_cell_is_refused_naming_line_and_column(tmp_path, capsys, column, bad, says):
    base = _write(tmp_path, "base", BASE)
    df = CAND.astype(object)
    df.loc[7, column] = bad  # an ok row; line 9 of the file (header is line 1)
    cand = _write(tmp_path, "cand", df)
    codes, err = _exit_codes(base, cand, capsys)
    assert codes == [2, 2, 2, 2]
    assert err.count(f"results.csv line 9: {says}") == 4, err
    problems = []
    kept = load_results(cand, problems)  # lenient: the row set aside, the rest kept
    assert len(kept) == len(CAND) - 1 and len(problems) == 1
    assert "line 9" in problems[0] and "set aside" in problems[0]


@pytest.mark.parametrize("run_json, says", [
    ('{"resolved_suite": {"check": {"thresh', "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"check": {"threshold": "big"}}', "check.threshold must be a finite number"),
    ('{"check": {"threshold": NaN}}', "check.threshold"),
    ('{"check": {"alpha": 1.5}}', "check.alpha must be a number in (0, 1)"),
    ('{"check": {"alpha": true}}', "check.alpha"),
    ('{"check": {"thresholds": {"w2": -1}}}', "check.thresholds.w2"),
    ('{"check": {"thresholds": [0.1]}}', "check.thresholds must be a JSON object"),
    ('{"check": "strict"}', "check must be a JSON object"),
    ('{"resolved_suite": {"check": {"threshold": "big"}}}', "resolved_suite.check.threshold"),
])
def test_bad_run_json_is_refused(tmp_path, capsys, run_json, says):
    base = _write(tmp_path, "base", BASE)
    cand = _write(tmp_path, "cand", CAND)  # worse than the baseline: exit 1 when usable
    (cand / "run.json").write_text(run_json)
    assert main(["check", str(cand), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert f"{cand / 'run.json'}: " in err and says in err


def test_check_table_from_run_json_preferred_and_optional(tmp_path):
    base = _write(tmp_path, "base", BASE)
    cand = _write(tmp_path, "cand", CAND)
    # the new top-level "check" wins over the older resolved_suite.check
    (cand / "run.json").write_text(json.dumps({"check": {"threshold": 10.0},
                                               "resolved_suite": {"check": {"threshold": 0.01}}}))
    lost_ok = ["check", str(cand), "--baseline", str(_write(tmp_path, "b2", CAND))]
    assert main(lost_ok) == 0
    (cand / "run.json").write_text(json.dumps({"check": {"thresholds": {"w2": 10.0, "fid": 10.0,
                                                                        "acc": 10.0}}}))
    assert main(["check", str(cand), "--baseline", str(base)]) == 1  # trig lost: still a regression
    (cand / "run.json").unlink()  # no run.json: defaults
    assert main(["check", str(_write(tmp_path, "same", BASE)), "--baseline", str(base)]) == 0
    assert main(["check", str(cand), "--baseline", str(base)]) == 1
    assert main(["check", str(cand), "--baseline", str(base), "--alpha", "2"]) == 2


def test_files_that_are_not_results_tables(tmp_path, capsys):
    base = _write(tmp_path, "base", BASE)
    header_less = tmp_path / "noheader.csv"
    BASE.to_csv(header_less, index=False, header=False)
    cases = {"binary": bytes(range(256)) * 8, "empty": b"", "blank": b"\n \n",
             "latin1": "schema_version,task\n1,caf\xe9\n".encode("latin-1"),
             "other": b"a,b,c\n1,2,3\n", "partial": b'schema_version,task\n1,"N->8\n',
             "zeros": b"\0" * 64}
    paths = [header_less, tmp_path / "emptydir"]
    (tmp_path / "emptydir").mkdir()
    for name, data in cases.items():
        paths.append(tmp_path / f"{name}.csv")
        paths[-1].write_bytes(data)
    for p in paths:
        codes, err = _exit_codes(base, p, capsys)
        assert codes == [2, 2, 2, 2], p
        assert err.count(f"error: {p}") == 4 and err.count("\n") == 4, (p, err)
        assert p.name not in ("binary.csv", "zeros.csv") or "binary" in err
        with pytest.raises(ResultsError):
            load_results(p, [])  # not a table at all: refused in lenient mode too


def test_lenient_and_strict_loading_of_a_cut_file(tmp_path):
    d = _write(tmp_path, "cand", CAND)
    text = (d / "results.csv").read_text()
    lines = text.splitlines(keepends=True)
    lines[3] = lines[3].replace(",ok,", ",o,")
    (d / "results.csv").write_text("".join(lines)[:-10])  # and the last row cut short
    problems = []
    df = load_results(d, problems)
    assert len(df) == len(CAND) - 2 and df["value"].dtype == float and df["seed"].dtype == int
    assert [p.split(": ", 1)[0].rsplit(" ", 2)[-2:] for p in problems] == [
        ["line", "4"], ["line", str(len(lines))]]
    with pytest.raises(ResultsError, match=r"2 malformed rows: line 4: status 'o'.*; line \d+"):
        load_results(d)


def test_untrusted_text_in_compare_output(tmp_path, capsys):
    odd = "<script>alert(1)</script>|x [/red] *"
    acc = rows("icfm", "acc", [0.5, 0.5, 0.5], hib=True)
    a = frame(rows("icfm", "w2", [1.0, 1.0, 1.0]), acc).assign(task=odd)
    b = frame(rows("icfm", "w2", [float("nan")] * 3, status="failed"), acc).assign(
        task=odd, reason="Error:\nline | two [/bold]")
    md = render_markdown(classify(a, b))
    assert "<script>" not in md and "&lt;script&gt;" in md
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == 4 and {_cells(ln) for ln in table} == {7}
    # rich markup in names is shown, not interpreted (a stray closing tag used to crash rich)
    assert main(["check", str(_write(tmp_path, "b", b)), "--baseline", str(_write(tmp_path, "a", a))
                 ]) == 1
    assert "[/red]" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0


def _cells(line: str) -> int:
    """Cells of a Markdown table row: pipes not escaped by a backslash, minus the outer ones."""
    return re.sub(r"\\.", "", line).count("|") - 1


def test_check_settings_round_trip_through_run_json(tmp_path):
    from fmbench.compare import CheckSettings, check_config

    d = _write(tmp_path, "run", BASE)
    settings = CheckSettings(threshold=0.3, alpha=0.01, thresholds={"w2": 0.5})
    (d / "run.json").write_text(json.dumps({"check": settings.to_json()}))
    cfg = check_config(d)
    assert (cfg.threshold, cfg.alpha, cfg.thresholds) == (0.3, 0.01, {"w2": 0.5})
    assert check_config(d, threshold=0.2).thresholds == {}  # --threshold replaces per-metric ones
    (d / "run.json").write_text(json.dumps({"check": {"alpha": 0.2, "future_key": 1}}))
    cfg = check_config(d)  # missing keys: the defaults; unknown keys: ignored
    assert (cfg.threshold, cfg.alpha) == (CheckSettings().threshold, 0.2)
    with pytest.raises(ResultsError, match="--alpha must be a number in"):
        check_config(d, alpha=1.0)


def test_suite_check_table_is_stored_in_run_json_and_used_by_check(tmp_path, capsys):
    """[check] → Suite.check → run.json "check" (resolved, defaults included) → fmbench check."""
    from fmbench.runner import run_suite
    from fmbench.suite import load_suite
    from tests.conftest import TINY

    text = (TINY.replace("seeds = [0, 1]", "seeds = [0]")
            .replace('[[path]]\nname = "otcfm"\n', "")
            .replace('[[solver]]\nname = "rk4"\nsteps = 2\n', "")
            .replace('"w2", "npe", "nll", "nfe", "solver_mse", "train_time", "sample_time"', '"w2"')
            + "\n[check]\nthreshold = 50.0\nthresholds = {nfe = 0.5}\n")
    f = tmp_path / "s.toml"
    f.write_text(text)
    suite = load_suite(f)
    run_suite(suite, tmp_path / "out")
    stored = json.loads((tmp_path / "out" / "run.json").read_text())["check"]
    assert stored == {"threshold": 50.0, "alpha": 0.05, "thresholds": {"nfe": 0.5}}
    assert stored == suite.check.to_json()
    base = tmp_path / "base"
    base.mkdir()
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    df.loc[df.metric == "w2", "value"] /= 10  # the run is 10x worse than this baseline
    df.to_csv(base / "results.csv", index=False)
    capsys.readouterr()
    assert main(["check", str(tmp_path / "out"), "--baseline", str(base)]) == 0  # threshold 50
    assert main(["check", str(tmp_path / "out"), "--baseline", str(base), "--threshold", "0.1"]
                ) == 1


def test_identical_results_say_identical_and_rich_has_a_summary():
    from rich.console import Console

    from fmbench.compare import render_rich

    same = classify(BASE, BASE)
    md = render_markdown(same)
    assert "| identical |" in md and "worse" not in md.splitlines()[0]
    console = Console(width=250, record=True)
    console.print(render_rich(classify(BASE, CAND)))
    text = console.export_text()
    assert "3 worse · 1 better · 1 within noise · 1 not comparable · 2 missing (worst first)" \
        in " ".join(text.split())
    body = [line for line in text.splitlines() if "│" in line]
    assert "worse" in body[1]  # the first row under the header: worst news first


def test_check_says_every_row_only_when_every_row_has_that_reason(tmp_path, capsys):
    base = frame(rows("icfm", "w2", [1.0, 1.0]), rows("otcfm", "w2", [1.0, 1.0]))
    cand = frame(rows("icfm", "w2", [1.0, 1.0]))
    a = _write(tmp_path, "a", base.assign(settings="aaa"))
    b = _write(tmp_path, "b", cand.assign(settings="bbb"))
    assert main(["check", str(b), "--baseline", str(a)]) == 2  # one not comparable, one missing
    assert "every row" not in capsys.readouterr().out
    c = _write(tmp_path, "c", base.assign(settings="bbb"))
    assert main(["check", str(c), "--baseline", str(a)]) == 2
    assert "every row: differs in settings (digest aaa → bbb;" in capsys.readouterr().out
