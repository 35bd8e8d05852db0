"""Suite validation: one clear error naming file, key and what is allowed; exit code 2."""

import textwrap

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
    ('name = "euler"\nnfe = 8', 'name = "euler"', "solver[0]", "exactly one of steps or nfe"),
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
    from fmbench.cli import LIST_KINDS, _registries

    assert main(["validate", str(tiny_suite_file)]) == 0
    assert "8 case(s)" in capsys.readouterr().out.replace("\n", " ")
    regs = _registries()
    assert set(LIST_KINDS) == {*regs, "plugins"}
    listed = {}
    for kind, registries in regs.items():
        assert main(["list", kind]) == 0
        listed[kind] = {line.split("│")[1].strip()
                        for line in capsys.readouterr().out.splitlines() if line.startswith("│")}
        for reg in registries:  # every registered component is listed
            assert set(reg.names()) <= listed[kind], (kind, set(reg.names()) - listed[kind])
    # the registries list cannot leave a kind out either: image datasets, model kinds, executors
    assert {"cifar10", "npz", "image-folder", "moons"} <= listed["datasets"]
    assert {"mlp", "unet", "checkpoint"} <= listed["models"] and "slurm" in listed["executors"]


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


# ------------------------------------------------------------------ malformed suites: exit 2, short
MODEL = "[model]\nwidth = 16\ndepth = 2\n"
TASK = '[[task]]\nsource = "gaussian"\ntarget = "8gaussians"\n'
PATHS = '[[path]]\nname = "icfm"\nsigma = 0.1\n\n[[path]]\nname = "otcfm"\n'
SOLVERS = '[[solver]]\nname = "euler"\nnfe = 8\n\n[[solver]]\nname = "rk4"\nsteps = 2\n'
DEEP = "[" * 3000 + "]" * 3000
HUGE = "1" + "0" * 400  # beyond float range: float() raised OverflowError
CHECK = "reference_steps = 20\n"


@pytest.mark.parametrize("top,old,new,expect", [
    ("model = 5", MODEL, "", "model:"),  # a scalar where a table belongs
    ("task = [1]", TASK, "", "task[0]:"),
    ("path = [1]", PATHS, "", "path[0]:"),
    ("solver = [1]", SOLVERS, "", "solver[0]:"),
    ("", TASK, TASK.replace("[[task]]", "[task]"), "task:"),  # a table where a list belongs
    ("", MODEL, '[model]\nkind = "unet"\npreset = [1, 2]\n', "model.preset:"),  # unhashable
    ("", MODEL, "[model]\nkind = [1]\n", "model.kind:"),
    ("", CHECK, CHECK + "feature_extractor = [1]\n", "metrics.feature_extractor:"),
    ("", CHECK, CHECK + "\n[check]\nthresholds = [1]\n", "check.thresholds:"),
    ("", CHECK, CHECK + "\n[check]\nthresholds = {w2 = [1]}\n", "check.thresholds.w2:"),
    ("", CHECK, CHECK + f"\n[check]\nthreshold = {HUGE}\n", "check.threshold:"),
    ("", 'target = "8gaussians"', 'target = "cifar10"\nroot = [1]', "task[0].root:"),
    ("", 'target = "8gaussians"', 'target = "cifar10"\nroot = "d"\nhflip = [1]', "task[0].hflip:"),
    ("", 'target = "8gaussians"', 'target = "cifar10"\nroot = "~no-such-user-fmbench/d"',
     "task[0].root:"),  # Path.expanduser raised RuntimeError
    ("", "steps = 30", "steps = [1]", "training.steps:"),
    ("", "steps = 30", f"lr = {HUGE}", "training.lr:"),
    ("", "sigma = 0.1", f"sigma = {HUGE}", "path[0].sigma:"),
    ("", "seeds = [0, 1]", "seeds = [9223372036854775807]", "suite.seeds:"),
    ("", 'name = "tiny"', 'name = "../x"', "suite.name:"),
    (f"x = {DEEP}", "", "", ": nesting too deep"),  # tomllib: RecursionError, 3002 lines
    ("", "steps = 30", "steps = 1" + "0" * 5000, ": not valid TOML"),  # ValueError: > 4300 digits
])
def test_cli_malformed_suite_exits_2_with_a_short_message(tmp_path, capsys, top, old, new, expect):
    assert old in TINY
    p = _write(tmp_path, f"{top}\n{TINY.replace(old, new, 1)}")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err) < 2000 and len(err.splitlines()) <= 6, err
    flat = err.replace("\n", "")
    assert str(p) in flat and expect in flat


@pytest.mark.parametrize("old,new,key,msg", [
    ('name = "tiny"', 'name = "../x"', "suite.name", "letters, digits"),
    ('name = "tiny"', 'name = "/tmp/x"', "suite.name", "results/<name>"),
    ('name = "tiny"', 'name = "a/b"', "suite.name", "at most 64 characters"),
    ('name = "tiny"', 'name = ""', "suite.name", "starting with a letter or digit"),
    ('name = "tiny"', 'name = "a\\\\b"', "suite.name", "'a\\\\b'"),
    ('name = "tiny"', 'name = ".hidden"', "suite.name", "starting with a letter or digit"),
    ('name = "tiny"', 'name = "ok\\n"', "suite.name", "letters, digits"),
    ('name = "tiny"', f'name = "{"a" * 300}"', "suite.name", "at most 64"),
    ('name = "tiny"', "name = 3", "suite.name", "must be a string"),
    ('target = "8gaussians"', 'target = "8gaussians"\nname = "a\\nb"', "task[0].name",
     "control characters"),
    ('target = "8gaussians"', 'target = "8gaussians"\nname = "a\\tb"', "task[0].name",
     "control characters"),
    ('target = "8gaussians"', 'target = "8gaussians"\nname = "a\\u0000"', "task[0].name",
     "control characters"),
    ('target = "8gaussians"', f'target = "8gaussians"\nname = "{"t" * 101}"', "task[0].name",
     "1 to 100 characters"),
    ('target = "8gaussians"', 'target = "8gaussians"\nname = ""', "task[0].name",
     "1 to 100 characters"),
    ("seeds = [0, 1]", "seeds = [0, 9223372036854775807]", "suite.seeds", "[0, 4294967295]"),
    ("seeds = [0, 1]", "seeds = [4294967296]", "suite.seeds", "[0, 4294967295]"),
    ("seeds = [0, 1]", "seeds = [-1]", "suite.seeds", "[0, 4294967295]"),
    ("seeds = [0, 1]", "seeds = [0]\ndata_seed = 4294967296", "suite.data_seed",
     "[0, 4294967295]"),
    ("width = 16", "width = 1180591620717411303424", "model.width", "64-bit integer"),
    ("steps = 30", "steps = 30\nlr = 0", "training.lr", "must be > 0"),
    ("[[task]]", "[task]", "task", "write [[task]], not [task]"),
])
def test_names_seeds_and_shapes(tmp_path, old, new, key, msg):
    assert old in TINY
    p = _write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    assert e.value.key == key and msg in e.value.message, str(e.value)


@pytest.mark.parametrize("old,new", [
    ('name = "tiny"', 'name = "A-1.b_c"'),
    ('name = "tiny"', f'name = "{"n" * 64}"'),
    ("seeds = [0, 1]", "seeds = [0, 4294967295]\ndata_seed = 4294967295"),
    ('target = "8gaussians"', f'target = "8gaussians"\nname = "ünï cödé {"t" * 89}"'),
])
def test_names_and_seeds_at_the_limits_are_accepted(tmp_path, old, new):
    assert load_suite(_write(tmp_path, TINY.replace(old, new, 1))).cases()


def test_messages_stay_short_for_huge_or_deep_values():
    import tomllib

    from fmbench.suite import parse_suite

    deep: list = []
    for _ in range(3000):
        deep = [deep]
    for value in (deep, "x" * 100_000, list(range(100_000)), {"k" * 5000: 1}, 10**5000):
        data = tomllib.loads(TINY)
        data["suite"]["name"] = value
        with pytest.raises(SuiteError) as e:
            parse_suite(data, "f.toml")
        assert e.value.key == "suite.name" and len(str(e.value)) < 300
    data = tomllib.loads(TINY)
    data["model"]["x\n" * 5000] = 1  # an unknown key with newlines: quoted and clipped
    with pytest.raises(SuiteError) as e:
        parse_suite(data, "f.toml")
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_unexpected_exception_is_a_bug_report_unless_strict(monkeypatch):
    import tomllib

    import fmbench.suite as S

    def boom(*_):
        raise KeyError("oops")

    monkeypatch.setattr(S, "_build_model", boom)
    monkeypatch.delenv(S.STRICT_ENV, raising=False)
    with pytest.raises(SuiteError) as e:
        S.parse_suite(tomllib.loads(TINY), "f.toml")
    assert str(e.value).startswith("f.toml: ") and "bug in fmbench" in str(e.value)
    assert "KeyError: 'oops'" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv(S.STRICT_ENV, "1")
    with pytest.raises(KeyError):
        S.parse_suite(tomllib.loads(TINY), "f.toml")


# ------------------------------------------------- rules owned by the components, named at the key
UNET_SUITE = (TINY.replace("width = 16\ndepth = 2\n", 'kind = "unet"\npreset = "tiny"\n')
              .replace('target = "8gaussians"', 'target = "cifar10"\nroot = "d"')
              .replace('"w2", "npe", "nll", "nfe", "solver_mse", "train_time", "sample_time"',
                       '"fid", "nfe"'))
WITH_CHECK = TINY + "\n[check]\n"


@pytest.mark.parametrize("base,old,new,key,msg", [
    # fmbench/unet.py: UNetConfig
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\nchannels = 48', "model.channels",
     "multiple of 32 (GroupNorm), got 48"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\nchannels = 0', "model.channels",
     "multiple of 32"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\ndropout = 1.0', "model.dropout",
     "must be in [0, 1), got 1.0"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\ndropout = -0.1', "model.dropout",
     "must be in [0, 1)"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\nchannel_mult = []', "model.channel_mult",
     "must not be empty"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\nchannel_mult = 2', "model.channel_mult",
     "must be a list of integers, got 2"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\nattention_resolutions = [8, 0]',
     "model.attention_resolutions", "integers >= 1, got [8, 0]"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\nnum_res_blocks = -1', "model.num_res_blocks",
     "must be >= 0"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "huge"', "model.preset",
     "must be 'cifar-tong', 'small' or 'tiny', got 'huge'"),
    (UNET_SUITE, 'preset = "tiny"', 'preset = "tiny"\nwidth = 64', "model.width",
     "unknown key; allowed: attention_resolutions, channel_mult, channels, dropout, kind, "
     "num_head_channels, num_res_blocks, preset"),
    # fmbench/models.py: the MODELS registry and MLPConfig
    (TINY, "width = 16", 'kind = "resnet"', "model.kind",
     "unknown model kind 'resnet'. Did you mean 'unet'? Known model kinds: checkpoint, "
     "in-memory, mlp, torchcfm-unet, unet."),
    (TINY, "width = 16", 'kind = "unet"', "model.depth", "unknown key"),
    (TINY, "depth = 2", "depth = 0", "model.depth", "must be >= 1, got 0"),
    (TINY, "depth = 2", 'activation = "seluu"', "model.activation", "Did you mean 'selu'"),
    (TINY, "depth = 2", "preset = 'tiny'", "model.preset", "allowed: activation, depth, kind, width"),
    # fmbench/train.py: TrainConfig
    (TINY, "steps = 30", "steps = 30\nema_decay = 1.0", "training.ema_decay",
     "must be in [0, 1), got 1.0"),
    (TINY, "steps = 30", "steps = 30\nema_decay = -0.5", "training.ema_decay", "in [0, 1)"),
    (TINY, "steps = 30", "steps = 30\nwarmup_steps = -1", "training.warmup_steps", "must be >= 0"),
    (TINY, "steps = 30", "steps = 30\nlog_every = 0", "training.log_every", "must be >= 1"),
    (TINY, "steps = 30", "steps = 30\noptimizer = 'x'", "training.optimizer",
     "must be 'adam' or 'adamw', got 'x'"),
    # fmbench/solvers.py: SolverSpec
    (TINY, 'name = "euler"\nnfe = 8', 'name = "euler"\nnfe = 8\natol = 1e-3', "solver[0].atol",
     "euler is fixed-step: give steps or nfe instead"),
    (TINY, 'name = "euler"\nnfe = 8', 'name = "euler"\nnfe = 0', "solver[0].nfe",
     "below one euler step"),
    (TINY, 'name = "euler"\nnfe = 8', 'name = "euler"\nsteps = 0', "solver[0].steps",
     "must be >= 1, got 0"),
    (TINY, 'name = "euler"\nnfe = 8', 'name = "euler"\nsteps = 2\nnfe = 8', "solver[0]",
     "exactly one of steps or nfe"),
    (TINY, 'name = "euler"\nnfe = 8', 'name = "dopri5"\nrtol = 0', "solver[0].rtol",
     "must be > 0, got 0.0"),
    (TINY, 'name = "euler"\nnfe = 8', 'name = ["euler", "dopri5"]\nnfe = 8', "solver[0].nfe",
     "dopri5 is adaptive: give rtol/atol instead"),
    (TINY, 'name = "euler"\nnfe = 8', 'name = "dopri5"\nrtol = [1e-3, 1e-4]\natol = [1, 2, 3]',
     "solver[0].atol", "a list as long as rtol (2 values)"),
    # fmbench/compare.py: CheckSettings (alpha = 1 used to pass here and fail in fmbench check)
    (WITH_CHECK, "[check]", "[check]\nalpha = 1", "check.alpha", "must be a number in (0, 1)"),
    (WITH_CHECK, "[check]", "[check]\nalpha = 0", "check.alpha", "must be a number in (0, 1)"),
    (WITH_CHECK, "[check]", "[check]\nthreshold = -1", "check.threshold",
     "must be a finite number >= 0"),
    (WITH_CHECK, "[check]", "[check]\nthresholds = {w2 = -1}", "check.thresholds.w2", ">= 0"),
    (WITH_CHECK, "[check]", "[check]\nthresholds = {w3 = 1}", "check.thresholds.w3",
     "Did you mean 'w2'"),
    (WITH_CHECK, "[check]", "[check]\nthresholds = 3", "check.thresholds",
     "must be a table of metric = relative threshold, got 3"),
    (WITH_CHECK, "[check]", "[check]\nthreshhold = 3", "check.threshhold",
     "did you mean 'threshold'"),
])
def test_component_rules_are_named_at_their_key(tmp_path, base, old, new, key, msg):
    assert old in base
    p = _write(tmp_path, base.replace(old, new, 1))
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    assert e.value.file == str(p) and e.value.key == key and msg in e.value.message, str(e.value)
    assert str(e.value).count(str(p)) == 1


def test_model_kinds_come_from_the_registry(tmp_path):
    import json
    from dataclasses import asdict

    import torch

    from fmbench.models import MODELS, MLPConfig, ModelConfig, build_model
    from fmbench.unet import PRESETS, UNetConfig

    mlp = load_suite(_write(tmp_path, TINY)).model
    assert mlp == ModelConfig("mlp", MLPConfig(width=16, depth=2))
    assert json.loads(json.dumps(asdict(mlp))) == {
        "kind": "mlp", "options": {"width": 16, "depth": 2, "activation": "selu"}}
    assert build_model(mlp, (2,))(torch.zeros(3, 2), 0.5).shape == (3, 2)
    unet = load_suite(_write(tmp_path, UNET_SUITE.replace(
        'preset = "tiny"', 'preset = "tiny"\ndropout = 0.2\nchannel_mult = [1, 1]'))).model
    assert unet.kind == "unet" and unet.options == UNetConfig(
        **{**asdict(PRESETS["tiny"]), "dropout": 0.2, "channel_mult": (1, 1)})
    assert json.loads(json.dumps(asdict(unet)))["options"]["channel_mult"] == [1, 1]
    assert load_suite(_write(tmp_path, UNET_SUITE.replace('preset = "tiny"', ""))
                      ).model.options == PRESETS["cifar-tong"]  # no preset: the defaults
    assert set(MODELS) == {"mlp", "unet", "checkpoint", "in-memory", "torchcfm-unet"}
    assert ModelConfig().options == MLPConfig()


def test_check_settings_are_resolved_with_defaults(tmp_path):
    from fmbench.compare import CheckSettings

    assert load_suite(_write(tmp_path, TINY)).check == CheckSettings(0.10, 0.05, {})
    s = load_suite(_write(tmp_path, WITH_CHECK + "threshold = 0.2\nthresholds = {w2 = 1}\n"))
    assert s.check.to_json() == {"threshold": 0.2, "alpha": 0.05, "thresholds": {"w2": 1.0}}


def test_solver_sweeps(tmp_path):
    text = TINY.replace('name = "rk4"\nsteps = 2', 'name = ["dopri5", "bosh3"]\n'
                        'rtol = [1e-3, 1e-4]\natol = 1e-6')
    labels = [s.label() for s in load_suite(_write(tmp_path, text)).solvers]
    assert labels == ["euler@nfe8", "dopri5(rtol=0.001,atol=1e-06)",
                      "dopri5(rtol=0.0001,atol=1e-06)", "bosh3(rtol=0.001,atol=1e-06)",
                      "bosh3(rtol=0.0001,atol=1e-06)"]
    text = TINY.replace('name = "rk4"\nsteps = 2', 'name = "dopri5"')
    assert load_suite(_write(tmp_path, text)).solvers[1].label() == "dopri5(rtol=1e-05,atol=1e-05)"


def test_solver_time_grids_and_sweeps(tmp_path):
    base = TINY.split("[[solver]]")[0]
    text = base + textwrap.dedent("""
        [[solver]]
        name = "euler"
        times = [0, 0.5, 1]
        [[solver]]
        name = "heun2"
        times = [[0, 0.5, 1], [0, 0.25, 1]]
        [[solver]]
        name = ["edm_heun", "euler"]
        steps = 6
        grid = "edm"
        rho = [7.0, 3.0]
        [metrics]
        names = ["w2", "nfe"]
        """)
    specs = load_suite(_write(tmp_path, text)).solvers
    assert [s.label() for s in specs] == [
        "euler@times[0,0.5,1]", "heun2@times[0,0.5,1]", "heun2@times[0,0.25,1]",
        "edm_heunx6-edm(rho=7)", "edm_heunx6-edm(rho=3)", "eulerx6-edm(rho=7)",
        "eulerx6-edm(rho=3)"]
    bad = base + '[[solver]]\nname = "euler"\ntimes = [0, 0.6, 0.5, 1]\n'
    with pytest.raises(SuiteError) as e:
        load_suite(_write(tmp_path, bad))
    assert e.value.key == "solver[0].times" and "increase strictly" in e.value.message
