"""The pipeline's stages: one solve per case, sample sets independent of how they are split, the
model cache trains a model once however many processes ask for it."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import fmbench.cache as stages
import fmbench.generate as G
import fmbench.work as W
from fmbench.generate import generate, velocity_field
from fmbench.paths import make_path
from fmbench.plan import work_units
from fmbench.results import ResultStore
from fmbench.runner import run_suite
from fmbench.solvers import SolverSpec
from fmbench.suite import load_suite
from fmbench.tasks import load_task, per_sample_normal
from fmbench.work import UnitJob
from tests.conftest import TINY

TIMES = {"train_time", "sample_time", "coupling_time"}


def _suite(tmp_path, text=TINY):
    f = tmp_path / "s.toml"
    f.write_text(text)
    return load_suite(f)


class Swirl(torch.nn.Module):
    def forward(self, x, t):
        return torch.stack([-x[:, 1], x[:, 0]], 1) + t[:, None]


@pytest.mark.parametrize("spec", [SolverSpec("euler", steps=7), SolverSpec("dopri5", rtol=1e-4,
                                                                             atol=1e-4)])
def test_keeping_trajectories_does_not_change_the_solve(spec):
    path = make_path("icfm")
    field = velocity_field(Swirl(), path)
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    plain = generate(field, x0, spec, path, batch=50)
    kept = generate(field, x0, spec, path, batch=50, keep_trajectories=5)
    assert torch.equal(plain.samples, kept.samples) and plain.nfe == kept.nfe
    assert kept.trajectories.shape[1:] == (5, 2)
    assert torch.equal(kept.trajectories[-1], kept.samples[:5])  # the same solve's end points


def test_one_solve_per_case_feeds_metrics_and_saved_samples(tmp_path, monkeypatch):
    text = TINY.replace('names = ["w2", "npe", "nll", "nfe", "solver_mse", "train_time", '
                        '"sample_time"]', 'names = ["w2", "nfe", "sample_time"]')
    suite = _suite(tmp_path, text)
    calls = []
    real = G.solve

    def counted(*a, **k):
        calls.append(k.get("trajectory", False))
        return real(*a, **k)

    monkeypatch.setattr(G, "solve", counted)
    df = run_suite(suite, tmp_path / "out")
    assert (df["status"] == "ok").all()
    n_cases = len(suite.cases())
    assert len(calls) == n_cases  # not one more for the saved trajectories
    assert sum(calls) == n_cases  # each kept its trajectories (2D tasks save them)
    assert len(list((tmp_path / "out" / "samples").glob("*.npz"))) == n_cases


def test_source_noise_is_drawn_per_sample():
    a = per_sample_normal(10, (3, 2), 7, "task", "source")
    b = per_sample_normal(25, (3, 2), 7, "task", "source")
    assert torch.equal(a, b[:10])  # sample i never depends on how many are drawn
    assert not torch.equal(a[0], a[1])
    c = per_sample_normal(10, (3, 2), 8, "task", "source")
    assert not torch.equal(a, c)
    assert abs(float(b.mean())) < 0.3 and 0.7 < float(b.std()) < 1.3


def test_numbers_do_not_depend_on_the_evaluation_batch(tmp_path):
    big = _suite(tmp_path, TINY.replace("n_eval = 64", "n_eval = 64\neval_batch = 64"))
    small = _suite(tmp_path, TINY.replace("n_eval = 64", "n_eval = 64\neval_batch = 16"))
    a = run_suite(big, tmp_path / "a", cache_dir=tmp_path / "c")
    b = run_suite(small, tmp_path / "b", cache_dir=tmp_path / "c")

    def values(df):
        df = df[~df["metric"].isin(TIMES)]
        return {(r.path_label, r.solver_label, r.seed, r.metric): r.value
                for r in df.itertuples()}

    va, vb = values(a), values(b)
    assert va.keys() == vb.keys()
    for k in va:  # the same points, solved in other chunks (float rounding at most)
        assert vb[k] == pytest.approx(va[k], rel=1e-5, abs=1e-9), k


def test_the_model_cache_trains_a_model_once_for_concurrent_askers(tmp_path, monkeypatch):
    suite = _suite(tmp_path)
    unit = work_units(suite)[0]
    data = load_task(unit.first.task)
    real, trained = stages.train, []

    def slow_train(*a, **k):
        trained.append(threading.get_ident())
        time.sleep(0.5)  # the other asker arrives while this one trains
        return real(*a, **k)

    monkeypatch.setattr(stages, "train", slow_train)
    out: list = [None, None]

    def ask(i):
        out[i] = stages.trained_model(unit, suite, data, tmp_path / "cache")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained) == 1
    assert sorted(o[2] for o in out) == [False, True]  # one trained it, one loaded it
    (m1, _, _), (m2, _, _) = out
    for p, q in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_a_retried_unit_keeps_the_cases_an_earlier_attempt_saved(tmp_path, monkeypatch):
    """A unit whose worker (or SLURM job) died after saving some cases: the retry computes only
    the others, and losing the unit for good fails only the cases not saved."""
    suite = _suite(tmp_path)
    unit = work_units(suite, set())[0]
    assert len(unit.cases) == 2
    out = tmp_path / "out"
    job = UnitJob(suite, str(out), str(tmp_path / "c"))
    first = job(unit)
    last = unit.cases[-1].case_id
    store = ResultStore(out)
    (store.cases_dir / f"{last}.json").unlink()  # died while on the last case
    scored: list[str] = []
    real = W.score_case
    monkeypatch.setattr(W, "score_case",
                        lambda job, case, *a: scored.append(case.case_id) or real(job, case, *a))
    second = job(unit)
    assert scored == [last]
    kept = unit.cases[0].case_id
    assert second.rows[kept] == first.rows[kept] == store.finished_case(kept)

    def values(rows):
        return {r["metric"]: r["value"] for r in rows if r["metric"] not in TIMES}

    assert values(second.rows[last]) == values(first.rows[last])
    (store.cases_dir / f"{last}.json").unlink()
    lost = job.fail(unit, "its worker process died 2 times")
    assert lost.rows[kept] == first.rows[kept]  # not overwritten with failed rows
    assert {r["status"] for r in lost.rows[last]} == {"failed"}
    assert store.finished_case(last) is None and store.finished_case(kept) is not None
    # every case saved, then the worker died before reporting: nothing recomputed, no marker
    job(unit)
    store.begin_unit(unit.key)
    scored.clear()
    again = job(unit)
    assert scored == [] and again.device == "" and set(again.rows) == {kept, last}
    assert not list((out / "inflight").glob("*.json"))
    # a case with one failed metric keeps its values and reason when the unit is lost later
    rows = store.finished_case(last)
    rows[0] = {**rows[0], "status": "failed", "value": None, "reason": "w2 was inf"}
    store.write_case(last, rows)
    assert store.finished_case(last) is None  # a retry recomputes it ...
    assert job.fail(unit, "its worker process died 2 times").rows[last] == rows  # ... a loss not
    assert store.finished_case(last, partial=True) == rows
