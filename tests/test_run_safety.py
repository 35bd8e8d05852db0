"""The run on hostile or broken ground: foreign folders, other suites, corrupt files, failing
cases, a full or read-only disk, a live lock. Each test reproduces the situation for real."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

import fmbench.cache as stages
import fmbench.runner as runner
from fmbench.cli import main
from fmbench.results import ResultStore
from fmbench.runner import RunError, run_suite
from fmbench.storage import LOCK_NAME, StorageError
from fmbench.suite import load_suite
from tests.conftest import TINY
from tests.test_storage import HOLDER, _dead_pid, _fail_fsync, _temps

TIMES = {"train_time", "sample_time", "coupling_time"}
ONE_SEED = TINY.replace("seeds = [0, 1]", "seeds = [0]")


def _suite(tmp_path, text=ONE_SEED, name="s.toml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def _values(df):
    df = df[~df["metric"].isin(TIMES)]
    return {(r.case_id, r.metric): r.value for r in df.itertuples()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of the one-seed suite (its numbers are what every recovery must
    reproduce)."""
    tmp = tmp_path_factory.mktemp("ref")
    return run_suite(load_suite(_suite(tmp)), tmp / "out", cache_dir=tmp / "cache")


def _corrupt_files(folder):
    return sorted(p.name for p in folder.rglob("*.corrupt-*"))


# ----------------------------------------------------------------- output containment
def test_foreign_folder_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("my own table")
    (out / "notes.txt").write_text("keep me")
    f = _suite(tmp_path)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert main(["run", str(f), "--out", str(out), *extra]) == 2
        assert "holds no fmbench results" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "results.csv"]
    assert (out / "results.csv").read_text() == "my own table"


def test_overwrite_deletes_only_what_fmbench_wrote(tmp_path, reference):
    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    (out / "notes.txt").write_text("keep me")
    (out / "samples" / "mine.txt").write_text("keep me too")
    stale = out / "cases" / "0123456789abcdef.json"  # a case file of an earlier suite
    stale.write_text((next((out / "cases").glob("*.json"))).read_text())
    assert main(["run", str(f), "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "samples" / "mine.txt").read_text() == "keep me too"
    assert not stale.exists()
    df = pd.read_csv(out / "results.csv")
    assert df["case_id"].nunique() == len(load_suite(f).cases())


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "x").write_text("a file")
    assert main(["run", str(_suite(tmp_path)), "--out", str(tmp_path / "x")]) == 2
    assert "is not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------- resume safety
def test_resume_with_other_settings_is_refused_naming_the_difference(tmp_path, capsys):
    out = tmp_path / "out"
    run_suite(load_suite(_suite(tmp_path)), out)
    before = (out / "results.csv").read_text()
    changed = _suite(tmp_path, ONE_SEED.replace("steps = 30", "steps = 31"), "changed.toml")
    assert main(["run", str(changed), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "training.steps: 30 → 31" in err and "--force" in err
    assert (out / "results.csv").read_text() == before  # nothing rewritten
    other = _suite(tmp_path, ONE_SEED.replace('name = "tiny"', 'name = "other"'), "o.toml")
    assert main(["run", str(other), "--out", str(out), "--resume"]) == 2
    assert "suite.name: tiny → other" in capsys.readouterr().err


def test_forced_resume_keeps_every_row(tmp_path):
    out = tmp_path / "out"
    a = run_suite(load_suite(_suite(tmp_path)), out)
    more = _suite(tmp_path, ONE_SEED.replace("seeds = [0]", "seeds = [0, 1]"), "more.toml")
    with pytest.raises(RunError, match=r"suite.seeds"):
        run_suite(load_suite(more), out, resume=True)
    b = run_suite(load_suite(more), out, resume=True, force=True)
    table = pd.read_csv(out / "results.csv")
    assert set(a["case_id"]) <= set(table["case_id"]) and len(table) == len(b)
    assert not table.duplicated(["case_id", "metric"]).any()
    meta = json.loads((out / "run.json").read_text())
    assert [s["forced"] for s in meta["sessions"]] == [False, True]
    assert meta["definition"]["suite"]["seeds"] == [0, 1]


def test_table_is_rebuilt_from_every_case_file(tmp_path):
    """A case file that is not one of this suite's cases (left by a forced merge) stays in
    results.csv after later resumes: no row can drop out of the table."""
    out = tmp_path / "out"
    f = _suite(tmp_path)
    run_suite(load_suite(f), out)
    two = _suite(tmp_path, ONE_SEED.replace("seeds = [0]", "seeds = [1]"), "two.toml")
    run_suite(load_suite(two), out, resume=True, force=True)
    n = pd.read_csv(out / "results.csv")["case_id"].nunique()
    assert n == 2 * len(load_suite(f).cases())
    run_suite(load_suite(two), out, resume=True)  # same suite as the last session: no --force
    assert pd.read_csv(out / "results.csv")["case_id"].nunique() == n


# ----------------------------------------------------------------- corrupt files
def test_truncated_case_file_is_set_aside_and_recomputed(tmp_path, reference):
    out = tmp_path / "out"
    run_suite(load_suite(_suite(tmp_path)), out)
    victim = sorted((out / "cases").glob("*.json"))[1]
    victim.write_text(victim.read_text()[:57])
    df = run_suite(load_suite(_suite(tmp_path)), out, resume=True)
    assert _values(df) == _values(reference)
    assert _corrupt_files(out) and _corrupt_files(out)[0].startswith(victim.name + ".corrupt-")


@pytest.mark.parametrize("content", ['{"schema_version": 1, "suite": "ti', "[1, 2]", ""])
def test_corrupt_run_json_is_set_aside_and_resume_goes_on(tmp_path, reference, content):
    out = tmp_path / "out"
    f = _suite(tmp_path)
    run_suite(load_suite(f), out)
    next((out / "cases").glob("*.json")).unlink()
    (out / "run.json").write_text(content)
    assert main(["run", str(f), "--out", str(out), "--resume"]) == 0
    assert _values(pd.read_csv(out / "results.csv")) == _values(reference)
    assert any(n.startswith("run.json.corrupt-") for n in _corrupt_files(out))
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_corrupt_run_json_with_another_suites_cases_is_refused(tmp_path):
    out = tmp_path / "out"
    run_suite(load_suite(_suite(tmp_path)), out)
    (out / "run.json").write_text("{")
    other = _suite(tmp_path, ONE_SEED.replace("steps = 30", "steps = 31"), "o.toml")
    with pytest.raises(RunError, match="not cases of this suite"):
        run_suite(load_suite(other), out, resume=True)


def _by_label(df):
    """Values keyed by what defines them (case ids change with any training setting)."""
    df = df[~df["metric"].isin(TIMES)]
    return {(r.path_label, r.solver_label, r.seed, r.metric): r.value for r in df.itertuples()}


def test_truncated_training_checkpoint_is_set_aside_and_training_starts_over(
        tmp_path, monkeypatch, reference):
    text = ONE_SEED.replace("batch_size = 64", "batch_size = 64\ncheckpoint_every = 10")
    f, cache = _suite(tmp_path, text), tmp_path / "cache"
    real = stages.train

    def stop_at_20(model, path, coupling, src, tgt, cfg, seed, on_step, **k):
        def stop(step, loss, rate):
            if step == 20:
                raise KeyboardInterrupt

        return real(model, path, coupling, src, tgt, cfg, seed, stop, **k)

    monkeypatch.setattr(stages, "train", stop_at_20)
    with pytest.raises(KeyboardInterrupt):
        run_suite(load_suite(f), tmp_path / "out", cache_dir=cache)
    monkeypatch.setattr(stages, "train", real)
    ckpts = list((cache / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1
    ckpts[0].write_bytes(ckpts[0].read_bytes()[:200])
    df = run_suite(load_suite(f), tmp_path / "out", cache_dir=cache, resume=True)
    assert (df["status"] == "ok").all()
    assert _corrupt_files(cache)[0].startswith(ckpts[0].name + ".corrupt-")
    assert _by_label(df) == _by_label(reference)  # trained from scratch: the same numbers


def test_corrupt_cached_model_is_set_aside_and_retrained(tmp_path, reference):
    f, cache = _suite(tmp_path), tmp_path / "cache"
    run_suite(load_suite(f), tmp_path / "a", cache_dir=cache)
    victim = sorted((cache / "models").glob("*.pt"))[0]
    torch.save({"state_dict": {}, "meta": {}}, victim)  # loads, but is not this model
    df = run_suite(load_suite(f), tmp_path / "b", cache_dir=cache)
    assert _values(df) == _values(reference)
    assert _corrupt_files(cache)[0].startswith(victim.name + ".corrupt-")


def test_orphan_temp_files_are_removed_at_start(tmp_path):
    out, cache, f = tmp_path / "out", tmp_path / "cache", _suite(tmp_path)
    run_suite(load_suite(f), out, cache_dir=cache)
    next((out / "cases").glob("*.json")).unlink()
    from fmbench.storage import _host

    pid = _dead_pid()
    orphans = [out / "cases" / f".abc.json.{_host()}.{pid}.0123abcd.tmp",
               out / ".results.csv.k2j4h5g6.tmp",  # an older fmbench's mkstemp name
               cache / "models" / f".m.pt.{_host()}.{pid}.0123abcd.tmp",
               cache / "models" / ".old.pt.4242.tmp"]
    young = cache / "models" / f".n.pt.{_host()}.{pid}.0123abcd.tmp"  # shared cache: kept
    for p in [*orphans, young]:
        p.write_bytes(b"x" * 1000)
    hours_ago = time.time() - 2 * 3600
    for p in orphans[2:]:
        os.utime(p, (hours_ago, hours_ago))
    run_suite(load_suite(f), out, cache_dir=cache, resume=True)
    assert not any(p.exists() for p in orphans) and young.exists()


# ----------------------------------------------------------------- failures inside a case
def test_any_exception_in_a_case_fails_that_case_only(tmp_path, monkeypatch, capsys):
    from fmbench.tasks import PointData

    real = PointData.eval_inputs

    def out_of_memory(self, n, data_seed, path, draw=0):
        if path.name == "otcfm":
            raise MemoryError("cannot allocate 10 GiB")
        return real(self, n, data_seed, path, draw)

    monkeypatch.setattr(PointData, "eval_inputs", out_of_memory)
    f = _suite(tmp_path)
    assert main(["run", str(f), "--out", str(tmp_path / "out")]) == 1
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    bad = df[df.path == "otcfm"]
    assert (bad.status == "failed").all() and bad.reason.str.contains("MemoryError").all()
    assert (df[df.path == "icfm"].status == "ok").all()


def test_absurd_learning_rate_fails_its_cases_not_the_suite(tmp_path):
    f = _suite(tmp_path, ONE_SEED.replace("batch_size = 64", "batch_size = 64\nlr = 1e300"))
    assert main(["run", str(f), "--out", str(tmp_path / "out")]) == 1
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert df["case_id"].nunique() == len(load_suite(f).cases())
    assert (df.status == "failed").all()


def test_sample_file_names_are_bounded(tmp_path, reference):
    name = "N->8gaussians " + "x" * 85
    f = _suite(tmp_path, ONE_SEED.replace('target = "8gaussians"',
                                          f'target = "8gaussians"\nname = "{name}"'))
    assert main(["run", str(f), "--out", str(tmp_path / "out")]) == 0
    files = list((tmp_path / "out" / "samples").iterdir())
    assert len(files) == len(load_suite(f).cases())
    assert all(len(p.name) <= 140 and p.name.endswith("-seed0.npz") for p in files)


# ----------------------------------------------------------------- failures of the run
def test_disk_full_stops_the_run_cleanly_and_resume_finishes(tmp_path, monkeypatch, capsys,
                                                             reference):
    out, f = tmp_path / "out", _suite(tmp_path)
    seen = {"n": 0}

    def third_case_file(name):
        if "/cases/" in name:
            seen["n"] += 1
            return seen["n"] == 3
        return False

    _fail_fsync(monkeypatch, errno.ENOSPC, third_case_file)
    assert main(["run", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert len(list((out / "cases").glob("*.json"))) == 2 and _temps(out) == []
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    monkeypatch.undo()
    assert main(["run", str(f), "--out", str(out), "--resume"]) == 0
    assert _values(pd.read_csv(out / "results.csv")) == _values(reference)


def test_read_only_folder_is_one_message(tmp_path, monkeypatch, capsys):
    _fail_fsync(monkeypatch, errno.EROFS)
    out = tmp_path / "out"
    assert main(["run", str(_suite(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and len(err.strip().splitlines()) <= 4
    assert _temps(out) == [] and not (out / "cases").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["run", str(_suite(tmp_path)), "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    assert "Permission denied" in capsys.readouterr().err


def test_a_live_run_holds_the_folder(tmp_path, capsys):
    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    before = (out / "results.csv").read_text()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        for extra in (["--overwrite"], ["--resume"]):
            assert main(["run", str(f), "--out", str(out), *extra]) == 2
            assert "in use by another fmbench run" in capsys.readouterr().err
        assert (out / "results.csv").read_text() == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main(["run", str(f), "--out", str(out), "--overwrite"]) == 0  # released by the kill


def test_concurrent_runs_on_one_folder_compute_once(tmp_path):
    """Two runs started together: one runs, the other is refused at once (exit 2)."""
    f = _suite(tmp_path, ONE_SEED.replace("steps = 30", "steps = 300"))
    env = {**os.environ, "FMBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "fmbench.cli", "run", str(f), "--out", str(tmp_path / "out")]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    errs = " ".join(p.stderr.read() for p in procs)
    assert codes == [0, 2] and ("in use" in errs or "already holds" in errs), errs
    assert not pd.read_csv(tmp_path / "out" / "results.csv").duplicated(
        ["case_id", "metric"]).any()


def test_results_files_are_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        run_suite(load_suite(_suite(tmp_path)), tmp_path / "out")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != LOCK_NAME]
    assert files and all(p.stat().st_mode & 0o777 == 0o644 for p in files)


def test_store_kind(tmp_path):
    assert ResultStore(tmp_path / "nope").kind() == "missing"
    assert ResultStore(tmp_path).kind() == "empty"
    (tmp_path / "x").write_text("1")
    assert ResultStore(tmp_path).kind() == "foreign"


def test_storage_error_is_not_swallowed_by_metrics(tmp_path, monkeypatch):
    """A metric that cannot write its cache stops the run instead of failing quietly."""
    def full(ctx):
        raise StorageError("cannot write cache: No space left on device (ENOSPC)")

    import fmbench.metrics as M

    monkeypatch.setitem(M._COMPUTE, "w2", full)
    with pytest.raises(StorageError):
        run_suite(load_suite(_suite(tmp_path)), tmp_path / "out")


KILL_DURING_TRAINING = textwrap.dedent("""
    import os, sys
    import torch

    # dies inside step 20's checkpoint write (before its rename): step 10's checkpoint resumes.
    # torch.save is patched, not fmbench's code: that would change fmbench's code digest
    real = torch.save
    def save_then_die(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        if isinstance(obj, dict) and obj.get("step") == 20:
            os.kill(os.getpid(), 9)
    torch.save = save_then_die
    from fmbench.cli import main
    main(sys.argv[1:])
""")


def test_kill_9_during_training_resumes_from_the_checkpoint(tmp_path, reference):
    text = ONE_SEED.replace("batch_size = 64", "batch_size = 64\ncheckpoint_every = 10\n"
                                               "log_every = 7")
    f, out = _suite(tmp_path, text), tmp_path / "out"
    env = {**os.environ, "FMBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_TRAINING, "run", str(f), "--out",
                           str(out)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert list((tmp_path / "cache" / "checkpoints").glob("*.pt"))
    df = run_suite(load_suite(f), out, resume=True, cache_dir=tmp_path / "cache")
    assert (df.status == "ok").all()
    ref = run_suite(load_suite(f), tmp_path / "ref", cache_dir=tmp_path / "fresh")
    assert _values(df) == _values(ref)
    losses = [json.loads(p.read_text())["losses"] for p in (out / "losses").glob("*.json")]
    ref_losses = [json.loads(p.read_text())["losses"]
                  for p in (tmp_path / "ref" / "losses").glob("*.json")]
    assert sorted(map(str, losses)) == sorted(map(str, ref_losses))


# ----------------------------------------------------------------- review reproductions
def test_symlinked_subfolders_are_refused_and_their_targets_untouched(tmp_path, capsys):
    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "photo.png").write_bytes(b"precious")
    (elsewhere / "0123456789abcdef.json").write_text("{}")
    for sub in ("report", "losses"):
        if (out / sub).exists():
            import shutil

            shutil.rmtree(out / sub)
        (out / sub).symlink_to(elsewhere)
        for extra in (["--overwrite"], ["--resume"]):
            assert main(["run", str(f), "--out", str(out), *extra]) == 2
            assert "symbolic link" in capsys.readouterr().err
        (out / sub).unlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["0123456789abcdef.json", "photo.png"]


def test_symlinked_lock_file_is_never_followed(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    assert main(["run", str(_suite(tmp_path)), "--out", str(out)]) == 2
    assert victim.read_text() == "mine"
    (out / LOCK_NAME).unlink()
    (out / LOCK_NAME).symlink_to(tmp_path / "dangling")
    assert main(["run", str(_suite(tmp_path)), "--out", str(out)]) == 2
    assert not (tmp_path / "dangling").exists()


def test_a_temp_name_with_an_absurd_pid_is_harmless(tmp_path):
    from fmbench.storage import _host

    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    next((out / "cases").glob("*.json")).unlink()
    odd = out / "cases" / f".x.json.{_host()}.{'9' * 23}.deadbeef.tmp"
    odd.write_text("x")
    big = out / f".y.json.{_host()}.9999999999.deadbeef.tmp"  # pid beyond any kernel's range
    big.write_text("x")
    df = run_suite(load_suite(f), out, resume=True)
    assert (df.status == "ok").all() and not big.exists()


def test_folder_left_with_only_a_lock_and_temp_files_is_usable(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text("")
    (out / ".run.json.somehost.1.0123abcd.tmp").write_text("{")
    assert ResultStore(out).kind() == "empty"
    assert main(["run", str(_suite(tmp_path)), "--out", str(out)]) == 0


def test_definition_resolves_data_roots(tmp_path):
    """Two copies of one suite with a relative data root in different folders define different
    numbers (other data): resume must compare resolved roots, like the model cache key does."""
    text = textwrap.dedent("""
        [suite]
        name = "img"
        [[task]]
        target = "npz"
        root = "data/train.npz"
        [model]
        kind = "unet"
        preset = "tiny"
        [[path]]
        name = "icfm"
        [[solver]]
        name = "euler"
        nfe = 2
        [metrics]
        names = ["nfe"]
    """)
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "s.toml").write_text(text)
    da, db = (runner.suite_definition(load_suite(d / "s.toml")) for d in (a, b))
    from fmbench.session import definition_diff

    diff = definition_diff(da, db)
    assert any(line.startswith("task[0].root:") for line in diff), diff
    assert runner.suite_definition(load_suite(a / "s.toml")) == da  # stable


def test_cases_of_other_training_code_are_refused_on_resume(tmp_path, monkeypatch, capsys):
    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    import fmbench.plan as P

    monkeypatch.setattr(P, "training_code", lambda *_: "another-version")
    assert main(["run", str(f), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "code.training" in err and "another version of fmbench" in err
    meta = json.loads((out / "run.json").read_text())
    del meta["definition"]  # a run.json of an older fmbench: the case ids still tell
    (out / "run.json").write_text(json.dumps(meta))
    assert main(["run", str(f), "--out", str(out), "--resume"]) == 2
    assert "not cases of this suite" in capsys.readouterr().err


def test_malformed_value_in_a_case_file_is_set_aside(tmp_path, reference):
    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    victim = sorted((out / "cases").glob("*.json"))[0]
    doc = json.loads(victim.read_text())
    doc["rows"][0]["value"] = "abc"
    victim.write_text(json.dumps(doc))
    assert main(["run", str(f), "--out", str(out), "--resume"]) == 0
    assert _values(pd.read_csv(out / "results.csv")) == _values(reference)
    assert _corrupt_files(out)[0].startswith(victim.name)


def test_case_files_of_a_newer_fmbench_are_refused(tmp_path, capsys):
    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    victim = sorted((out / "cases").glob("*.json"))[0]
    doc = json.loads(victim.read_text())
    doc["schema_version"] = 99
    victim.write_text(json.dumps(doc))
    assert main(["run", str(f), "--out", str(out), "--resume"]) == 2
    assert "newer fmbench" in capsys.readouterr().err and victim.exists()


@pytest.mark.parametrize("damage", ["out_under_a_file", "losses_is_a_file", "case_is_a_folder",
                                    "sessions_not_a_list"])
def test_odd_folder_states_are_one_message(tmp_path, capsys, damage):
    out, f = tmp_path / "out", _suite(tmp_path)
    run_suite(load_suite(f), out)
    target, resume = out, ["--resume"]
    if damage == "out_under_a_file":
        target, resume = tmp_path / "s.toml" / "x", []
    elif damage == "losses_is_a_file":
        import shutil

        shutil.rmtree(out / "losses")
        (out / "losses").write_text("not a folder")
    elif damage == "case_is_a_folder":
        (out / "cases" / "0123456789abcdef.json").mkdir()
    else:
        meta = json.loads((out / "run.json").read_text())
        meta["sessions"] = 5
        (out / "run.json").write_text(json.dumps(meta))
    code = main(["run", str(f), "--out", str(target), *resume])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a bug" not in err
    if damage == "sessions_not_a_list":  # corrupt run.json: set aside, the run goes on
        assert code == 0 and "set aside" in err
    else:
        problems = [ln for ln in err.strip().splitlines() if not PROGRESS_LINE.match(ln)]
        assert code == 2 and len(problems) <= 3, err


PROGRESS_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (run|started|training|finished|failed) ")


def test_non_finite_metric_values_are_failures(tmp_path, monkeypatch):
    import fmbench.metrics as M

    monkeypatch.setitem(M._COMPUTE, "w2", lambda ctx: {"w2": float("inf"), "w2_floor": 1.0})
    df = run_suite(load_suite(_suite(tmp_path)), tmp_path / "out")
    w2 = df[df.metric == "w2"]
    assert (w2.status == "failed").all() and w2.reason.str.contains("inf").all()
    assert main(["check", str(tmp_path / "out"), "--baseline", str(tmp_path / "out")]) == 0


DIE_IN_TRAINING = textwrap.dedent("""
    import os, sys
    import fmbench.train as T

    real = T._train
    def die(model, path, *a, **k):
        if path.name == "otcfm":
            os.kill(os.getpid(), 9)  # as the out-of-memory killer would
        return real(model, path, *a, **k)
    T._train = die
    from fmbench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow  # kills a fresh interpreter (torch import) twice
def test_a_model_that_kills_the_process_is_failed_after_two_deaths(tmp_path):
    f, out = _suite(tmp_path), tmp_path / "out"
    env = {**os.environ, "FMBENCH_CACHE": str(tmp_path / "cache")}

    def attempt(*extra):
        return subprocess.run([sys.executable, "-c", DIE_IN_TRAINING, "run", str(f), "--out",
                               str(out), *extra], env=env, capture_output=True, text=True,
                              timeout=300)

    assert attempt().returncode == -signal.SIGKILL
    assert attempt("--resume").returncode == -signal.SIGKILL
    last = attempt("--resume")
    assert last.returncode == 1, last.stderr
    df = pd.read_csv(out / "results.csv")
    bad = df[df.path == "otcfm"]
    assert (bad.status == "failed").all() and bad.reason.str.contains("died 2 times").all()
    assert (df[df.path == "icfm"].status == "ok").all()
    assert not list((out / "inflight").glob("*.json"))


def test_unreadable_cache_entries_are_set_aside_but_machine_errors_keep_them(tmp_path):
    from fmbench.artifacts import load_cached
    from fmbench.image_metrics import _read_features

    f = tmp_path / "feats.npz"
    import numpy as np

    np.savez(f, features=np.ones((4, 3), dtype=np.float32))
    assert _read_features(f, 4).shape == (4, 3)
    assert _read_features(f, 5) is None and not f.exists()  # wrong size: set aside
    f.write_bytes(b"PK\x03\x04 cut")

    def out_of_memory(path):
        raise MemoryError("no memory")

    with pytest.raises(MemoryError):
        load_cached(f, out_of_memory, "feature cache")
    assert f.exists()  # the machine's trouble: the file stays
    assert _read_features(f, 4) is None and not f.exists()
    assert len(_corrupt_files(tmp_path)) == 2
