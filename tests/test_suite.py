"""Suite validation: one clear error naming file, key and what is allowed; exit code 2."""

import pytest

from fmbench.cli import main
from fmbench.suite import SuiteError, load_suite
from tests.conftest import TINY


def _write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_tiny_suite_expands_grid(tiny_suite_file):
    s = load_suite(tiny_suite_file)
    cases = s.cases()
    assert len(cases) == 1 * 2 * 2 * 2  # tasks × paths × seeds × solvers
    assert len({c.model_key for c in cases}) == 4  # solvers share the trained model
    assert len({c.case_id for c in cases}) == len(cases)


@pytest.mark.parametrize("old,new,key,msg", [
    ('[model]\nwidth = 16', '[model]\nwidht = 16', "model.widht", "did you mean 'width'"),
    ('name = "icfm"', 'name = "icfn"', "path[0].name", "Did you mean 'icfm'"),
    ('sigma = 0.1', 'sigmaa = 0.1', "path[0].sigmaa", "did you mean 'sigma'"),
    ('sigma = 0.1', 'sigma = -0.1', "path[0]", "sigma must be >= 0"),
    ('sigma = 0.1', 'sigma = "big"', "path[0].sigma", "must be a number"),
    ("steps = 30", 'steps = "30"', "training.steps", "must be an integer"),
    ("steps = 30", "steps = 0", "training.steps", "must be >="),
    ("steps = 30", "steps = true", "training.steps", "must be an integer"),
    ('target = "8gaussians"', 'target = "8gausians"', "task[0].target", "8gaussians"),
    ('name = "euler"\nnfe = 8', 'name = "euler"', "solver[0]", "exactly one of 'steps'"),
    ('name = "euler"\nnfe = 8', 'name = "dopri5"\nnfe = 8', "solver[0].nfe", "adaptive"),
    ('name = "rk4"\nsteps = 2', 'name = "rk4"\nnfe = 2', "solver[1].nfe", "below one rk4"),
    ('name = "euler"', 'name = "eulr"', "solver[0].name", "Did you mean 'euler'"),
    ('"w2", "npe"', '"w3", "npe"', "metrics.names", "Did you mean 'w2'"),
    ("seeds = [0, 1]", "seeds = [0, 0]", "suite.seeds", "duplicates"),
    ("seeds = [0, 1]", "seeds = 3", "suite.seeds", "must be a list"),
    ("[metrics]", "[metric]", "metric", "unknown key"),
    ("batch_size = 64", 'batch_size = 64\noptimizer = "sgd"', "training.optimizer",
     "must be 'adam' or 'adamw'"),
])
def test_validation_errors(tmp_path, old, new, key, msg):
    assert old in TINY
    p = _write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    assert e.value.file == str(p)
    assert e.value.key == key
    assert msg in e.value.message
    assert str(p) in str(e.value) and key in str(e.value)


def test_missing_required_and_bad_toml(tmp_path):
    with pytest.raises(SuiteError, match="task.*is required|task: is required"):
        load_suite(_write(tmp_path, TINY.replace('[[task]]\nsource = "gaussian"\n'
                                                 'target = "8gaussians"\n', "")))
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(_write(tmp_path, "[suite\nname=1", "bad.toml"))
    with pytest.raises(SuiteError, match="file not found"):
        load_suite(tmp_path / "nope.toml")


def test_gaussian_only_paths_are_skipped_on_dataset_sources(tmp_path):
    text = TINY.replace('source = "gaussian"', 'source = "moons"').replace(
        'name = "otcfm"', 'name = "fm-ot"')
    s = load_suite(_write(tmp_path, text))
    assert {c.path.name for c in s.cases()} == {"icfm"}
    assert any("fm-ot" in m for m in s.skipped())


def test_cli_bad_suite_exits_2_and_writes_nothing(tmp_path, capsys):
    p = _write(tmp_path, TINY.replace("width = 16", "width = -3"))
    out = tmp_path / "out"
    assert main(["run", str(p), "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "model.width" in err and str(p) in err.replace("\n", "")
    assert main(["validate", str(p)]) == 2


def test_cli_validate_and_list(tiny_suite_file, capsys):
    assert main(["validate", str(tiny_suite_file)]) == 0
    assert "8 case(s)" in capsys.readouterr().out.replace("\n", " ")
    for kind in ("paths", "couplings", "solvers", "metrics", "datasets"):
        assert main(["list", kind]) == 0
    out = capsys.readouterr().out
    for name in ("sm-vp", "entropic-ot", "dopri5", "npe", "checkerboard"):
        assert name in out


def test_shipped_suites_validate():
    from pathlib import Path

    files = sorted(Path(__file__).parent.parent.glob("suites/*.toml"))
    assert files
    for f in files:
        assert load_suite(f).cases()


def test_cifar_cpu_solvers_reuses_the_cifar_cpu_models():
    """The solver-sweep suite says it evaluates the models cifar-cpu trained: their keys match."""
    from pathlib import Path

    root = Path(__file__).parent.parent / "suites"
    main = {c.path.name: c.model_key for c in load_suite(root / "cifar-cpu.toml").cases()}
    sweep = load_suite(root / "cifar-cpu-solvers.toml").cases()
    assert sweep and all(c.model_key == main[c.path.name] for c in sweep)


@pytest.mark.parametrize("old,new,key,msg", [
    ('"w2", "npe"', '"w2_floor", "npe"', "metrics.names", "comes with w2"),
    ("sigma = 0.1", "sigma = nan", "path[0].sigma", "finite"),
    ('name = "icfm"\nsigma = 0.1', 'name = "rf"\ncoupling = "entropic-ot"', "path[0]",
     "needs a path with sigma > 0"),
])
def test_more_validation_errors(tmp_path, old, new, key, msg):
    p = _write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    assert e.value.key == key and msg in e.value.message


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(SuiteError, match="UTF-8"):
        load_suite(bad)
    with pytest.raises(SuiteError, match="cannot be read"):
        load_suite(tmp_path)


def test_same_data_different_task_names_are_distinct_cases(tmp_path):
    text = TINY.replace('target = "8gaussians"\n', 'target = "8gaussians"\nname = "A"\n\n'
                        '[[task]]\nsource = "gaussian"\ntarget = "8gaussians"\nname = "B"\n', 1)
    cases = load_suite(_write(tmp_path, text)).cases()
    assert len({c.case_id for c in cases}) == len(cases) == 16
