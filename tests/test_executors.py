"""The local executor: the same numbers in process and on a worker pool; a failing unit fails only
its cases; kill -9 of a worker or of the coordinator loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import types

import pandas as pd
import pytest
import torch

from fmbench.executors import make_executor
from fmbench.executors.local import available_cores, placement, uses_gpu
from fmbench.plan import work_units
from fmbench.results import RunError
from fmbench.runner import run_suite
from fmbench.suite import load_suite, parse_suite
from tests.conftest import TINY

TIMES = {"train_time", "sample_time", "coupling_time"}


def _values(df: pd.DataFrame) -> dict:
    df = df[~df["metric"].isin(TIMES)]
    return {(r.case_id, r.metric): (r.status, r.value) for r in df.itertuples()}


def _suite(tmp_path, text=TINY):
    f = tmp_path / "s.toml"
    f.write_text(text)
    return f


def test_pool_gives_the_numbers_of_a_run_in_process(tmp_path):
    suite = load_suite(_suite(tmp_path))
    one = run_suite(suite, tmp_path / "one", cache_dir=tmp_path / "c1",
                    executor=make_executor("local", workers=1))
    two = run_suite(suite, tmp_path / "two", cache_dir=tmp_path / "c2",
                    executor=make_executor("local", workers=2))
    assert (one["status"] == "ok").all()
    assert _values(one) == _values(two)  # bit for bit, whatever the worker count
    assert list(one["case_id"].unique()) == list(two["case_id"].unique())  # suite order
    log = (tmp_path / "two" / "run.log").read_text()
    assert len(set(re.findall(r"worker pid (\d+)", log))) == 2
    assert log.count("finished ") == len(work_units(suite))
    meta = json.loads((tmp_path / "two" / "run.json").read_text())
    assert meta["executor"].startswith("local, 2 worker process(es)")
    assert meta["devices"] and meta["devices"][0].endswith(": cpu")


def _poison_one_model(suite, cache, tmp_path):
    """A cached model whose weights are NaN for the first unit: it loads, its samples are NaN."""
    from fmbench.artifacts import save_model
    from fmbench.cache import new_model
    from fmbench.tasks import load_task

    unit = work_units(suite)[0]
    model = new_model(unit, suite.model, load_task(unit.first.task))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_model(cache / "models" / f"{unit.key}.pt", model,
               {"losses": [[1, 1.0]], "train_time": 1.0, "coupling_time": 0.0})
    return unit


def test_a_failing_unit_in_a_worker_fails_its_cases_only(tmp_path):
    suite = load_suite(_suite(tmp_path))
    cache = tmp_path / "cache"
    bad = _poison_one_model(suite, cache, tmp_path)
    df = run_suite(suite, tmp_path / "out", cache_dir=cache,
                   executor=make_executor("local", workers=2))
    mine = df["model_key"] == bad.key
    failed = df[mine & df["metric"].isin(["w2", "solver_mse"])]
    assert (failed["status"] == "failed").all()
    assert failed["reason"].str.contains("NaN").all()
    assert (df[~mine]["status"] == "ok").all()
    assert df["case_id"].nunique() == len(suite.cases())


def test_worker_count_and_threads(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    monkeypatch.setattr("fmbench.executors.local.available_cores", lambda: 8)
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.0, 0.0))  # an idle machine
    monkeypatch.delenv("FMBENCH_WORKERS")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [s["threads"] for s in placement(0, 100)] == [1] * 8  # one per core
    assert [s["threads"] for s in placement(2, 100)] == [4, 4]  # cores shared, no oversubscription
    assert [s["threads"] for s in placement(1, 100)] == [8]
    assert [s["threads"] for s in placement(2, 100, threads=3)] == [3, 3]  # as asked
    monkeypatch.setattr("os.getloadavg", lambda: (5.6, 0.0, 0.0))  # 6 cores busy elsewhere
    assert [s["threads"] for s in placement(1, 100)] == [2]  # only the free cores
    assert [s["threads"] for s in placement(2, 100)] == [1, 1]
    monkeypatch.setattr("os.getloadavg", lambda: (12.0, 0.0, 0.0))
    assert [s["threads"] for s in placement(1, 100)] == [1]  # never fewer than one
    assert len(placement(0, 3)) == 3  # never more workers than units
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert [s["env"] for s in placement(0, 100)] == [{"CUDA_VISIBLE_DEVICES": "0"},
                                                    {"CUDA_VISIBLE_DEVICES": "1"}]
    assert [s["env"] for s in placement(3, 100)][2] == {"CUDA_VISIBLE_DEVICES": "0"}
    # 2D suites train on the CPU: one worker per core even on a GPU machine
    assert [s["env"] for s in placement(0, 100, gpu=False)] == [{}] * 8
    assert not uses_gpu(parse_suite(tomllib.loads(TINY), "<tiny>"))
    # pinned only to GPUs this process was given (a shared node, a SLURM allocation)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,GPU-1f2e")
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in placement(0, 100)] == ["4", "GPU-1f2e"]
    monkeypatch.setenv("FMBENCH_WORKERS", "zero")
    with pytest.raises(RunError, match="FMBENCH_WORKERS"):
        placement(0, 100)
    with pytest.raises(RunError, match="no option partition"):
        make_executor("local", partition="gpu")


def test_one_worker_runs_in_process_even_with_gpus(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    events, ran = [], []

    class Job:  # a stand-in UnitJob: records where it ran
        suite = None

        def __call__(self, unit, report):
            ran.append((unit.key, os.getpid(), torch.get_num_threads()))
            return unit.key

    units = [types.SimpleNamespace(key=k) for k in ("a", "b")]
    ex = make_executor("local", workers=1, threads=1)
    torch.set_num_threads(2)
    assert list(ex.run(Job(), units, events.append)) == ["a", "b"]
    assert ran == [("a", os.getpid(), 1), ("b", os.getpid(), 1)]  # the thread count asked for
    assert torch.get_num_threads() == 2  # and the caller's restored
    assert {e.info for e in events} == {"in process"}
    assert ex.describe() == "local, in this process, 1 torch thread(s)"
    # by default a single GPU still gets a worker process: a crash takes only its unit down
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine
    monkeypatch.delenv("FMBENCH_WORKERS")
    auto = make_executor("local")
    assert auto.describe() == "local, 1 worker process(es) (one per GPU), " \
        f"{available_cores()} torch thread(s) each"
    assert not auto._in_process(placement(0, 100))


# ------------------------------------------- kill -9 (real processes; slow: ~25 s each)
SLOW = TINY.replace("steps = 30", "steps = 1500").replace("seeds = [0, 1]", "seeds = [0, 1, 2]")


def _start(tmp_path, f, out, *extra):
    env = {**os.environ, "FMBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fmbench.cli", "run", str(f), "--out",
                             str(out), "--workers", "2", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(pattern: str, file, timeout: float = 120) -> re.Match:
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, file.read_text()) if file.exists() else None
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} never appeared in {file}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead
        return fh.read().split(")")[-1].split()[0] != "Z"


def _complete(df: pd.DataFrame, suite) -> None:
    assert df["case_id"].nunique() == len(suite.cases())
    assert not df.duplicated(["case_id", "metric"]).any()
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["metric", "reason"]]


@pytest.mark.slow
def test_kill_9_of_a_worker_retries_its_unit(tmp_path):
    f, out = _suite(tmp_path, SLOW), tmp_path / "out"
    proc = _start(tmp_path, f, out)
    pid = int(_wait_for(r"started .* worker pid (\d+)", out / "run.log")[1])
    _wait_for(r"training", out / "run.log")
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert re.search(rf"worker pid {pid} died .*retrying it", " ".join(err.split())), err
    suite = load_suite(f)
    _complete(pd.read_csv(out / "results.csv"), suite)
    assert not list((out / "inflight").glob("*.json"))


@pytest.mark.slow
def test_kill_9_of_the_coordinator_then_resume(tmp_path):
    f, out = _suite(tmp_path, SLOW), tmp_path / "out"
    proc = _start(tmp_path, f, out)
    _wait_for(r"finished ", out / "run.log")
    workers = {int(p) for p in re.findall(r"worker pid (\d+)", (out / "run.log").read_text())}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)  # the workers died with their coordinator
    assert not list((out / "inflight").glob("*.json"))  # stopped with the run: not their deaths
    before = len(list((out / "cases").glob("*.json")))
    assert before >= 1
    suite = load_suite(f)
    df = run_suite(suite, out, resume=True, cache_dir=tmp_path / "cache",
                   executor=make_executor("local", workers=2))
    _complete(df, suite)
