"""Evaluation draws end to end: R draws per case, fixed by data_seed and shared by every path,
solver and seed; draw 0 is the single draw of a one-draw run; per-model metrics once."""

import textwrap

import numpy as np
import pytest
import torch

from fmbench.metrics import w2_exact
from fmbench.paths import make_path
from fmbench.runner import run_suite
from fmbench.suite import load_suite
from fmbench.tasks import load_task
from tests.conftest import TINY

TIMES = {"train_time", "sample_time", "coupling_time"}


def _suite(tmp_path, draws: int, name: str = "s.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(TINY).replace("eval_draws = 1", f"eval_draws = {draws}"))
    return load_suite(p)


@pytest.fixture(scope="module")
def draws_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("draws")


@pytest.fixture(scope="module")
def runs(draws_dir):
    tmp = draws_dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMBENCH_CACHE", str(tmp / "cache"))
        mp.setenv("FMBENCH_WORKERS", "1")
        three = run_suite(_suite(tmp, 3), tmp / "three")
        one = run_suite(_suite(tmp, 1, "one.toml"), tmp / "one")
    return one, three


def test_every_per_draw_metric_has_a_row_per_draw_and_per_model_ones_only_draw_0(runs):
    _, df = runs
    assert (df["status"] == "ok").all()
    per_case = df.groupby(["case_id", "metric"])["draw"].apply(lambda d: sorted(d))
    for (_, metric), draws in per_case.items():
        assert draws == ([0] if metric == "train_time" else [0, 1, 2]), metric


def test_draw_0_is_the_one_draw_run_and_other_draws_differ(runs):
    one, three = runs
    key = ["task", "path_label", "solver_label", "seed", "metric"]
    a = one[~one["metric"].isin(TIMES)].set_index(key)["value"]
    b = three[(three["draw"] == 0) & ~three["metric"].isin(TIMES)].set_index(key)["value"]
    assert a.sort_index().equals(b.sort_index())
    w2 = three[three["metric"] == "w2"].pivot_table(index="case_id", columns="draw",
                                                    values="value")
    assert (w2[1] != w2[0]).all() and (w2[2] != w2[1]).all()


def test_draws_are_shared_by_paths_solvers_and_seeds(runs):
    _, df = runs
    floors = df[df["metric"] == "w2_floor"].groupby("draw")["value"].nunique()
    assert (floors == 1).all()  # the floor of draw r: one value whatever the case
    per_draw = df[df["metric"] == "w2_floor"].groupby("draw")["value"].first()
    assert per_draw.nunique() == 3  # independent pairs of draws


def test_the_floor_of_each_draw_is_w2_between_that_draws_target_sets(tmp_path):
    suite = _suite(tmp_path, 3)
    task = suite.tasks[0]
    data = load_task(task)
    path = make_path("icfm")
    for r in range(3):
        x = data.eval_inputs(64, suite.data_seed, path, r)
        assert x.x1_test.shape == (64, 2)
        # the same draw twice is identical; another draw differs
        y = data.eval_inputs(64, suite.data_seed, path, r)
        assert torch.equal(x.x0, y.x0) and torch.equal(x.x1_floor, y.x1_floor)
    x0, x1 = (data.eval_inputs(64, suite.data_seed, path, r) for r in (0, 1))
    assert not torch.equal(x0.x0, x1.x0) and not torch.equal(x0.x1_test, x1.x1_test)
    assert w2_exact(x0.x1_test, x0.x1_floor) != pytest.approx(w2_exact(x1.x1_test, x1.x1_floor))


def test_draw_0_keeps_the_single_draw_seeds(tmp_path):
    # the seeds of the one-draw design: (data_seed, task, role), per sample for Gaussian noise
    from fmbench.plan import derived_seed
    from fmbench.tasks import per_sample_normal

    suite = _suite(tmp_path, 3)
    task = suite.tasks[0]
    x = load_task(task).eval_inputs(64, suite.data_seed, make_path("icfm"), 0)
    assert torch.equal(x.x0, per_sample_normal(64, (2,), suite.data_seed, task.name, "source"))
    from fmbench import data as D

    g = torch.Generator().manual_seed(derived_seed(suite.data_seed, task.name, "test"))
    assert torch.equal(x.x1_test, D.DATASETS.get(task.target)(64, g))


def test_point_tasks_default_to_five_draws_and_the_setting_is_checked(tmp_path):
    suite = _suite(tmp_path, 0)
    data = load_task(suite.tasks[0])
    assert data.eval_draws(suite.metrics.eval_draws) == 5
    assert data.eval_draws(2) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent(TINY).replace("eval_draws = 1", "eval_draws = -1"))
    with pytest.raises(Exception, match="eval_draws"):
        load_suite(bad)


def test_summary_and_report_state_seeds_times_draws(runs, tmp_path):
    from fmbench.summary import summarize

    _, df = runs
    s = summarize(df)
    w2 = s[s["metric"] == "w2"]
    assert set(w2["n_seeds"]) == {2} and set(w2["n_draws"]) == {3}
    assert (w2["covers"] == "seeds and draws").all()
    t = s[s["metric"] == "train_time"]
    assert set(t["n_draws"]) == {1}
    floor = s[s["metric"] == "w2_floor"].iloc[0]
    values = df[(df["metric"] == "w2_floor")].groupby("draw")["value"].first()
    assert floor["sd"] == pytest.approx(np.std(values, ddof=1))


def test_resume_with_draws_redoes_a_lost_case_with_every_draw(runs, draws_dir, tmp_path):
    import shutil

    from fmbench.compare import load_results

    _, full = runs
    src = draws_dir / "three"
    out = tmp_path / "three"
    shutil.copytree(src, out)
    lost = sorted((out / "cases").glob("*.json"))[0]
    lost.unlink()
    suite = _suite(src.parent, 3)
    df = run_suite(suite, out, resume=True, cache_dir=src.parent / "cache")
    key = ["case_id", "draw", "metric"]
    a = full[~full["metric"].isin(TIMES)].set_index(key)["value"].sort_index()
    b = df[~df["metric"].isin(TIMES)].set_index(key)["value"].sort_index()
    assert a.equals(b)  # every draw of the lost case back, nothing duplicated
    assert len(load_results(out)) == len(full)


def test_progress_headline_is_the_mean_over_draws():
    from fmbench.progress import headline

    rows = [{"metric": "w2", "value": v, "status": "ok", "draw": r} for r, v in enumerate([1, 3])]
    rows.append({"metric": "nfe", "value": 20.0, "status": "ok", "draw": 0})
    assert headline({"case": rows}) == "w2 2 · nfe 20"
