"""End-to-end runs of a tiny suite: rows, determinism, resume, model cache, failures."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import fmbench.cache as stages
import fmbench.work as work
from fmbench.cli import main
from fmbench.paths import make_coupling, make_path
from fmbench.runner import RunError, run_suite
from fmbench.suite import load_suite
from fmbench.train import TrainConfig, TrainingFailed, train
from tests.conftest import TINY

TIMES = {"train_time", "sample_time", "coupling_time"}


def _fail_otcfm_training(monkeypatch, reason: str):
    """Make training fail for the otcfm path only; returns the real train function."""
    real = stages.train

    def failing(model, path, *a, **k):
        if path.name == "otcfm":
            raise TrainingFailed(reason)
        return real(model, path, *a, **k)

    monkeypatch.setattr(stages, "train", failing)
    return real


def _values(df: pd.DataFrame) -> dict:
    df = df[~df["metric"].isin(TIMES)]
    return {(r.case_id, r.metric): r.value for r in df.itertuples()}


def test_end_to_end_rows_and_metadata(tiny_suite_file, tmp_path):
    suite = load_suite(tiny_suite_file)
    df = run_suite(suite, tmp_path / "out")
    n_cases = len(suite.cases())
    n_outputs = len(suite.metrics.names) + 1  # w2 also reports w2_floor
    assert len(df) == n_cases * n_outputs
    assert not df.duplicated(["case_id", "metric"]).any()
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["metric", "reason"]]
    assert set(df["unit"][df["metric"] == "nll"]) == {"nats"}
    nfe = df[df["metric"] == "nfe"]
    assert set(nfe["value"]) == {8.0}  # euler@8 and rk4 x 2 steps: both 8 evaluations
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(csv) == len(df)
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["status"] == "complete" and meta["seeds"] == [0, 1]
    assert meta["resolved_suite"]["suite"]["name"] == "tiny"
    assert "torch" in meta["environment"]["versions"] and "commit" in meta["git"]


def test_same_suite_same_seed_identical_numbers(tiny_suite_file, tmp_path):
    suite = load_suite(tiny_suite_file)
    a = run_suite(suite, tmp_path / "a", cache_dir=tmp_path / "c1")
    b = run_suite(suite, tmp_path / "b", cache_dir=tmp_path / "c2")  # retrains from scratch
    assert _values(a) == _values(b)
    # and different seeds give different models
    w2 = a[a["metric"] == "w2"].groupby("seed")["value"].apply(tuple)
    assert w2.loc[0] != w2.loc[1]


def test_resume_after_interrupt_loses_and_duplicates_nothing(tiny_suite_file, tmp_path,
                                                             monkeypatch):
    suite = load_suite(tiny_suite_file)
    ref = run_suite(suite, tmp_path / "ref", cache_dir=tmp_path / "refcache")
    real = work.evaluate
    calls = {"n": 0}

    def flaky(ctx, names, seconds=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(ctx, names, seconds)

    monkeypatch.setattr(work, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path / "out")
    assert len(list((tmp_path / "out" / "cases").glob("*.json"))) == 2
    with pytest.raises(RunError, match="--resume"):
        run_suite(suite, tmp_path / "out")
    monkeypatch.setattr(work, "evaluate", real)
    df = run_suite(suite, tmp_path / "out", resume=True)
    assert not df.duplicated(["case_id", "metric"]).any()
    assert _values(df) == _values(ref)
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["resumed"] for s in meta["sessions"]] == [False, True]


@pytest.mark.slow  # a subprocess run killed with SIGKILL, then resumed
def test_resume_after_kill_9(tmp_path):
    text = TINY.replace("steps = 30", "steps = 400").replace("seeds = [0, 1]", "seeds = [0, 1, 2]")
    f = tmp_path / "s.toml"
    f.write_text(text)
    out = tmp_path / "out"
    env = {**os.environ, "FMBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "fmbench.cli", "run", str(f), "--out",
                             str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "cases").glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(list((out / "cases").glob("*.json")))
    assert before >= 1
    suite = load_suite(f)
    df = run_suite(suite, out, resume=True, cache_dir=tmp_path / "cache")
    assert df["case_id"].nunique() == len(suite.cases())
    assert not df.duplicated(["case_id", "metric"]).any()
    assert (df["status"] == "ok").all()


def test_model_cache_reused_for_new_solvers(tiny_suite_file, tmp_path, monkeypatch):
    run_suite(load_suite(tiny_suite_file), tmp_path / "a")

    def no_training(*a, **k):
        raise AssertionError("should have reused the cached model")

    monkeypatch.setattr(stages, "train", no_training)
    f2 = tmp_path / "more.toml"
    f2.write_text(TINY.replace('name = "rk4"\nsteps = 2', 'name = "midpoint"\nnfe = [4, 16]'))
    df = run_suite(load_suite(f2), tmp_path / "b")
    assert set(df["solver_label"]) == {"euler@nfe8", "midpoint@nfe4", "midpoint@nfe16"}
    assert (df["status"] == "ok").all()


def test_failed_training_is_recorded_and_suite_goes_on(tiny_suite_file, tmp_path, monkeypatch,
                                                       capsys):
    _fail_otcfm_training(monkeypatch, "loss became nan at step 3")
    code = main(["run", str(tiny_suite_file), "--out", str(tmp_path / "out")])
    assert code == 1
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    bad = df[df["path"] == "otcfm"]
    assert (bad["status"] == "failed").all() and bad["reason"].str.contains("nan").all()
    assert (df[df["path"] == "icfm"]["status"] == "ok").all()
    assert "had failures" in capsys.readouterr().out


def test_train_raises_on_nan_loss():
    class NaNNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, t):
            return x * self.w * float("nan")

    with pytest.raises(TrainingFailed, match="nan"):
        train(NaNNet(), make_path("icfm"), make_coupling("independent"),
              lambda n, g: torch.randn(n, 2, generator=g),
              lambda n, g: torch.randn(n, 2, generator=g), TrainConfig(steps=5, batch_size=8), 0)


def test_training_reduces_loss_and_beats_untrained_model(tmp_path):
    """A trained I-CFM on N→8gaussians gets W2 well below an untrained network's."""
    text = TINY.replace("steps = 30", "steps = 600").replace("width = 16", "width = 64")
    text = text.replace("seeds = [0, 1]", "seeds = [0]").replace("n_eval = 64", "n_eval = 300")
    f = tmp_path / "s.toml"
    f.write_text(text.replace('[[path]]\nname = "otcfm"\n', ""))
    trained = run_suite(load_suite(f), tmp_path / "t")
    untrained_text = f.read_text().replace("steps = 600", "steps = 1")
    f.write_text(untrained_text)
    untrained = run_suite(load_suite(f), tmp_path / "u")

    def w2(df):
        return df[(df.metric == "w2") & (df.solver == "euler")]["value"].iloc[0]

    assert w2(trained) < 0.5 * w2(untrained)


def test_overwrite_replaces_results(tiny_suite_file, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(tiny_suite_file), "--out", str(out)]) == 0
    assert main(["run", str(tiny_suite_file), "--out", str(out)]) == 2
    assert main(["run", str(tiny_suite_file), "--out", str(out), "--overwrite"]) == 0
    df = pd.read_csv(out / "results.csv")
    assert not df.duplicated(["case_id", "metric"]).any()


def test_failed_cases_are_retried_on_resume(tiny_suite_file, tmp_path, monkeypatch):
    real = _fail_otcfm_training(monkeypatch, "transient")
    suite = load_suite(tiny_suite_file)
    df = run_suite(suite, tmp_path / "out")
    assert (df[df.path == "otcfm"]["status"] == "failed").all()
    monkeypatch.setattr(stages, "train", real)
    df = run_suite(suite, tmp_path / "out", resume=True)
    assert (df["status"] == "ok").all()
    assert not df.duplicated(["case_id", "metric"]).any()


def test_truncated_model_cache_is_retrained(tiny_suite_file, tmp_path):
    suite = load_suite(tiny_suite_file)
    a = run_suite(suite, tmp_path / "a", cache_dir=tmp_path / "c")
    for f in (tmp_path / "c" / "models").glob("*.pt"):
        f.write_bytes(f.read_bytes()[:100])
    b = run_suite(suite, tmp_path / "b", cache_dir=tmp_path / "c")
    assert _values(a) == _values(b)


def test_run_records_where_its_time_goes(tiny_suite_file, tmp_path):
    suite = load_suite(tiny_suite_file)
    run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "cache")
    t = json.loads((tmp_path / "out" / "run.json").read_text())["time_s"]
    assert set(t) >= {"data", "train", "generate", *(f"metric {m}" for m in suite.metrics.names)}
    assert all(v >= 0 for v in t.values()) and t["train"] > 0 and t["generate"] > 0
    log = (tmp_path / "out" / "run.log").read_text()
    finished = [line for line in log.splitlines() if " finished " in line]
    assert len(finished) == len({c.model_key for c in suite.cases()})
    assert all("· time: " in line and "train " in line for line in finished)
    assert "session: " in log and "summed over the units" in log
    again = run_suite(suite, tmp_path / "again", cache_dir=tmp_path / "cache")  # cached models
    assert len(again)
    t2 = json.loads((tmp_path / "again" / "run.json").read_text())["time_s"]
    assert "model: cache" in t2 and "train" not in t2
