"""The cluster executors, for real on this machine: ``slurm`` through submitit's local cluster
(a process per unit, the code path of a SLURM job array but for sbatch) and ``ray`` on a local
Ray instance. They give the numbers of a run in process; a unit that fails inside its job fails
only its cases; a job or task that dies is recorded as failed; a StorageError in a job stops the
run; a preempted unit is requeued and resumes its training; a missing extra is one line.

Failures are provoked through the suite or through a UnitJob subclass that the job unpickles:
monkeypatching would not reach the jobs' processes.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from fmbench.cli import main
from fmbench.executors import make_executor
from fmbench.plan import work_units
from fmbench.results import MAX_DEATHS, ResultStore, RunError
from fmbench.runner import run_suite
from fmbench.storage import StorageError
from fmbench.suite import load_suite
from fmbench.work import UnitJob
from tests.conftest import TINY

TIMES = {"train_time", "sample_time", "coupling_time"}
ONE_SEED = TINY.replace("seeds = [0, 1]", "seeds = [0]")
# two units: a path that trains, and one whose training fails (its loss is NaN at step 1); one
# seed, as every unit of the local cluster is a fresh interpreter importing torch (~5 s of CPU)
MIXED = ONE_SEED.replace('[[path]]\nname = "otcfm"', '[[path]]\nname = "icfm"\nsigma = 1e300')
MODULES = {"slurm": "submitit", "ray": "ray"}


def _values(df: pd.DataFrame) -> dict:
    """(case_id, metric) → (status, value, reason), wall-clock metrics left out; NaN as None so
    that failed values compare equal."""
    df = df[~df["metric"].isin(TIMES)]
    return {(r.case_id, r.metric): (r.status, None if pd.isna(r.value) else r.value,
                                     "" if pd.isna(r.reason) else r.reason)
            for r in df.itertuples()}


def _executor(name: str, **options):
    """slurm on submitit's local cluster (real processes), slurm-debug on its debug cluster (in
    this process), ray on a local instance the executor starts."""
    pytest.importorskip(MODULES[name.split("-")[0]])
    if name.startswith("slurm"):
        return make_executor("slurm", cluster=name.partition("-")[2] or "local", **options)
    return make_executor("ray", local_cpus=2, **options)


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray and ray.is_initialized())


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The mixed suite's file and its run in process (the reference)."""
    tmp = tmp_path_factory.mktemp("mixed")
    f = tmp / "mixed.toml"
    f.write_text(MIXED)
    df = run_suite(load_suite(f), tmp / "in-process", cache_dir=tmp / "cache-in-process",
                   executor=make_executor("local", workers=1))
    return f, df


@pytest.fixture(scope="module", params=["slurm", "ray"])
def cluster_run(request, tmp_path_factory, mixed):
    """The mixed suite run by a cluster executor into its own results folder and model cache."""
    name = request.param
    executor = _executor(name)
    tmp = tmp_path_factory.mktemp(name)
    ray_before = _ray_initialized()
    df = run_suite(load_suite(mixed[0]), tmp / "out", cache_dir=tmp / "cache", executor=executor)
    return {"name": name, "df": df, "out": tmp / "out", "ray_before": ray_before,
            "ray_after": _ray_initialized()}


def test_cluster_run_gives_the_numbers_of_a_run_in_process(cluster_run, mixed):
    df, ref = cluster_run["df"], mixed[1]
    assert _values(df) == _values(ref)  # every value, status and reason, bit for bit
    assert list(df["case_id"].unique()) == list(ref["case_id"].unique())  # suite order
    assert not df.duplicated(["case_id", "metric"]).any()
    log = (cluster_run["out"] / "run.log").read_text()
    units = work_units(load_suite(mixed[0]))
    kind = "slurm job" if cluster_run["name"] == "slurm" else "ray task"
    assert len(set(re.findall(rf"started .* {kind} (\S+)", log))) == len(units)
    if cluster_run["name"] == "slurm":  # submitit's logs and pickles in <results>/slurm
        assert list((cluster_run["out"] / "slurm").glob("*_log.err"))
        # the coordinator unpickles results from there: only this user may write in it
        assert (cluster_run["out"] / "slurm").stat().st_mode & 0o777 == 0o700
    else:  # the executor shut down the instance it started (and only that)
        assert cluster_run["ray_after"] == cluster_run["ray_before"]


def test_a_unit_failing_inside_its_job_fails_only_its_cases(cluster_run, mixed):
    df = cluster_run["df"]
    doomed = df["path_label"].str.contains("sigma=1e+300", regex=False)
    assert doomed.any() and (~doomed).any()
    bad = df[doomed]
    assert (bad["status"] == "failed").all()
    assert bad["reason"].str.contains("TrainingFailed: training failed: loss became nan").all()
    assert (df[~doomed]["status"] == "ok").all()
    assert df["case_id"].nunique() == len(load_suite(mixed[0]).cases())
    assert not list((cluster_run["out"] / "inflight").glob("*.json"))


# ------------------------------------------------ jobs that die, jobs that cannot write
@dataclass(frozen=True)
class Sabotaged(UnitJob):
    """A UnitJob whose otcfm units die (kill -9, as the out-of-memory killer would) or raise
    StorageError (a full disk) where they run; unpickled by the job from this module."""

    how: str = "die"

    def __call__(self, unit, report=None):
        if unit.first.path.name == "icfm":  # must reach the coordinator's run.log, once
            logging.getLogger("fmbench").warning("a warning inside the job (simulated)")
        if unit.first.path.name == "otcfm":
            if self.how == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            raise StorageError("No space left on device: cases/x.json (simulated)")
        return super().__call__(unit, report)


def _sabotaged_run(tmp_path, name: str, how: str):
    f = tmp_path / "s.toml"
    f.write_text(ONE_SEED)
    suite = load_suite(f)
    executor = _executor(name)

    class Run(type(executor)):  # the same executor, handed the sabotaged job
        def run(self, job, units, on_event):
            return super().run(Sabotaged(job.suite, job.out_dir, job.cache_dir, how), units,
                               on_event)

    sabotaged = Run(executor.options)
    return suite, lambda: run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "cache",
                                    executor=sabotaged)


@pytest.mark.parametrize("name", ["slurm", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_job_that_dies_fails_its_unit_and_the_suite_goes_on(tmp_path, name):
    """kill -9 inside the job. ray is slow (~20 s): Ray retries the task once, and every attempt
    starts a worker that imports torch."""
    suite, run = _sabotaged_run(tmp_path, name, "die")
    df = run()
    lost = df[df["path"] == "otcfm"]
    assert len(lost) and (lost["status"] == "failed").all()
    want = "ended without a result" if name == "slurm" else "its Ray task was lost"
    assert lost["reason"].str.contains(want).all(), lost["reason"].iloc[0]
    assert lost["reason"].str.contains("--resume retries it").all()
    assert (df[df["path"] == "icfm"]["status"] == "ok").all()
    assert df["case_id"].nunique() == len(suite.cases())
    assert not list((tmp_path / "out" / "inflight").glob("*.json"))
    log = (tmp_path / "out" / "run.log").read_text()
    assert log.count("a warning inside the job (simulated)") == 1, log


@pytest.mark.parametrize("name", ["slurm-debug", "ray"])
def test_storage_error_inside_a_job_stops_the_run(tmp_path, name):
    """slurm on the debug cluster (in this process: the same code path but for the pickles,
    which test_a_job_that_dies... and the cluster runs cover)."""
    _, run = _sabotaged_run(tmp_path, name, "storage")
    with pytest.raises(StorageError, match="No space left on device"):
        run()
    assert not _ray_initialized()


# ------------------------------------------------ settings, the CLI, a missing extra
def test_a_requeue_is_not_a_death_of_the_unit(tmp_path):
    """SLURM preemption or time limit: SlurmUnit.checkpoint clears the unit's in-flight marker
    before the requeue, so a unit preempted MAX_DEATHS times is not failed as a crash."""
    pytest.importorskip("submitit")
    from fmbench.executors.slurm import SlurmUnit

    f = tmp_path / "s.toml"
    f.write_text(ONE_SEED)
    suite = load_suite(f)
    unit = work_units(suite, set())[0]
    store = ResultStore(tmp_path / "out")
    job = UnitJob(suite, str(tmp_path / "out"), str(tmp_path / "cache"))
    for _ in range(MAX_DEATHS + 1):
        assert store.begin_unit(unit.key) == 0  # the preempted job was working on the unit
        resubmission = SlurmUnit(job).checkpoint(unit)
        assert resubmission.args == (unit,)
    assert not list((tmp_path / "out" / "inflight").glob("*.json"))


def test_submitit_folder_is_private_unless_it_is_yours(tmp_path, caplog):
    """The coordinator unpickles job results from the submitit folder: fmbench's own folder and
    one it creates become mode 700; a folder you named is left alone, with a warning when
    others can write to it."""
    from fmbench.executors.slurm import _private_folder

    own, new, shared = tmp_path / "out" / "slurm", tmp_path / "new", tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    _private_folder(own, own=True)
    _private_folder(new, own=False)
    with caplog.at_level("WARNING", logger="fmbench"):
        _private_folder(shared, own=False)
    assert [p.stat().st_mode & 0o777 for p in (own, new, shared)] == [0o700, 0o700, 0o777]
    assert "writable by others" in caplog.text and str(shared) in caplog.text


def test_slurm_settings_become_sbatch_parameters(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from fmbench.executors.slurm import SlurmOptions, submitit_parameters

    with pytest.raises(RunError, match=r'no srun on PATH.*cluster = "local"'):
        make_executor("slurm")  # no SLURM on this machine
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    opts = SlurmOptions(partition="gpu", account="lab", qos="high", constraint="a100",
                        gpus_per_node=1, cpus_per_task=8, mem_gb=64, timeout_min=90,
                        array_parallelism=4)
    assert "partition gpu" in make_executor("slurm", opts).describe()
    ex = submitit.AutoExecutor(folder=tmp_path / "f", cluster="slurm")
    ex.update_parameters(**submitit_parameters(opts, "fmbench-my suite"))  # submitit validates
    p = ex.parameters
    assert (p["partition"], p["account"], p["qos"], p["constraint"]) == ("gpu", "lab", "high",
                                                                         "a100")
    assert (p["gpus_per_node"], p["cpus_per_task"], p["mem"], p["time"]) == (1, 8, "64GB", 90)
    assert p["array_parallelism"] == 4 and p["job_name"] == "fmbench-my_suite"
    # no GPUs asked for: no --gpus-per-node=0 line (partitions without GPUs may refuse it)
    assert not {"gpus_per_node", "mem_gb"} & set(submitit_parameters(SlurmOptions()))
    with pytest.raises(RunError, match="slurm executor's cluster: must be one of"):
        make_executor("slurm", cluster="lsf")
    with pytest.raises(RunError, match="ray executor's num_cpus: must be > 0, got 0"):
        make_executor("ray", num_cpus=0)


@pytest.mark.parametrize("table,key,msg", [
    ('name = "slurm"\ncpus_per_task = 0', "executor.cpus_per_task", "must be >= 1, got 0"),
    ('name = "slurm"\ncluster = "lsf"', "executor.cluster", "must be one of slurm, local, debug"),
    ('name = "ray"\nnum_gpus = -1', "executor.num_gpus", "must be >= 0, got -1"),
    ('name = "local"\nworkers = -2', "executor.workers", "must be >= 0, got -2"),
    ('name = "local"\npartition = "gpu"', "executor.partition",
     "unknown key; allowed: name, threads, workers"),
])
def test_executor_table_is_checked_when_the_suite_is_read(tmp_path, capsys, table, key, msg):
    """fmbench validate refuses what the executor would refuse, naming the file and the key,
    without needing the executor's library."""
    f = tmp_path / "s.toml"
    f.write_text(ONE_SEED + f"\n[executor]\n{table}\n")
    assert main(["validate", str(f)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(f) in err and key in err and msg in err, err


@pytest.mark.parametrize("flags,msg", [
    (["--gpus-per-unit", "1"], "--gpus-per-unit is for the slurm and ray executors, not local"),
    (["--executor", "local", "--cpus-per-unit", "4"], "--cpus-per-unit is for the slurm and ray"),
    (["--executor", "slurm", "--ray-address", "auto"], "--ray-address is for the ray executor, "
                                                       "not slurm"),
    (["--executor", "ray", "--workers", "2"], "--workers is for the local executor, not ray"),
    (["--executor", "ray", "--cpus-per-unit", "0"], "--cpus-per-unit must be > 0, got 0"),
    (["--executor", "slurm", "--cpus-per-unit", "1.5"], "must be > 0 and whole for slurm"),
    (["--workers", "-1"], "local executor's workers: must be >= 0, got -1"),
])
def test_executor_flags_that_do_not_apply_are_refused(tmp_path, capsys, flags, msg):
    f = tmp_path / "s.toml"
    f.write_text(ONE_SEED)
    assert main(["run", str(f), "--out", str(tmp_path / "out"), *flags]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert msg in err, err
    assert not (tmp_path / "out").exists()


def test_cli_runs_the_suites_executor_table(tmp_path, capsys):
    """[executor] name = "slurm", cluster = "debug" (in this process): the table binds to the
    executor's options, --executor slurm keeps them, and array_parallelism = 1 submits the
    units one after another."""
    pytest.importorskip("submitit")
    f = tmp_path / "s.toml"
    f.write_text(ONE_SEED + '\n[executor]\nname = "slurm"\ncluster = "debug"\n'
                            "array_parallelism = 1\npoll_s = 0.01\n")
    out = tmp_path / "out"
    assert main(["run", str(f), "--out", str(out), "--executor", "slurm"]) == 0
    log = (out / "run.log").read_text()
    assert "submitit's debug cluster" in log
    assert re.findall(r"(started|finished) N->8gaussians (\w+) seed 0", log) == [
        ("started", "icfm"), ("finished", "icfm"), ("started", "otcfm"), ("finished", "otcfm")]
    assert "slurm job DEBUG_" in log
    assert (pd.read_csv(out / "results.csv")["status"] == "ok").all()


@pytest.mark.parametrize("name,package", [("slurm", "submitit"), ("ray", "ray")])
def test_missing_extra_is_one_line_naming_the_pip_command(tmp_path, monkeypatch, capsys, name,
                                                          package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(RunError) as e:
        make_executor(name)
    msg = str(e.value)
    assert "\n" not in msg and f'pip install -e ".[{name}]"' in msg and package in msg
    f = tmp_path / "s.toml"
    f.write_text(ONE_SEED)
    assert main(["run", str(f), "--out", str(tmp_path / "out"), "--executor", name]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f'pip install -e ".[{name}]"' in err, err
    assert not (tmp_path / "out").exists()


def test_importing_fmbench_imports_neither_submitit_nor_ray():
    """Only making (or running) a cluster executor imports its library: no module-level import
    of either in the executors' modules (importing them is what registers the executors)."""
    import ast

    import fmbench.executors.ray_cluster as ray_cluster
    import fmbench.executors.slurm as slurm

    for mod in (slurm, ray_cluster):
        tree = ast.parse(Path(mod.__file__).read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
        assert not names & {"submitit", "ray"}, mod.__name__


# ------------------------------------------------ preemption: requeued, training resumes
LONG = ONE_SEED.replace('[[path]]\nname = "otcfm"\n', "").replace(
    "steps = 30", "steps = 3000\ncheckpoint_every = 100")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_preempted_job_is_requeued_and_resumes_its_training(tmp_path):
    """SIGUSR2 (SLURM's preemption / time-limit signal as submitit sets it up) to a unit's job
    once its first training checkpoint is written: submitit calls SlurmUnit.checkpoint and
    requeues the job, which resumes training from the checkpoint; the numbers are those of an
    uninterrupted run."""
    pytest.importorskip("submitit")
    f = tmp_path / "long.toml"
    f.write_text(LONG)
    suite = load_suite(f)
    ref = run_suite(suite, tmp_path / "ref", cache_dir=tmp_path / "ref-cache",
                    executor=make_executor("local", workers=1))
    executor = make_executor("slurm", cluster="local")
    jobs: list[str] = []

    class Spy(type(executor)):  # learns the job id from the "started" event
        def run(self, job, units, on_event):
            def event(ev):
                if ev.kind == "started":
                    jobs.append(ev.info.split()[-1])
                on_event(ev)
            return super().run(job, units, event)

    cache = tmp_path / "cache"
    signalled: list[int] = []

    def preempt():
        deadline = time.time() + 120
        while time.time() < deadline and not list((cache / "checkpoints").glob("*.pt")):
            time.sleep(0.005)
        for pid in _children(int(jobs[0])):  # the controller's task process
            os.kill(pid, signal.SIGUSR2)
            signalled.append(pid)

    watcher = threading.Thread(target=preempt, daemon=True)
    watcher.start()
    df = run_suite(suite, tmp_path / "out", cache_dir=cache, executor=Spy(executor.options))
    watcher.join(timeout=5)
    assert signalled, "no job process was signalled"
    log = "".join(p.read_text() for p in (tmp_path / "out" / "slurm").glob("*_log.*"))
    assert "preempted or at its time limit; submitted again for the requeue" in log
    assert "a training checkpoint exists, training resumes from it" in log
    assert _values(df) == _values(ref)  # the resumed training is the uninterrupted one
