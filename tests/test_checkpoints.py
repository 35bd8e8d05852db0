"""The checkpoint model kind: models written locally in each format are scored like trained ones.

The reference is independent of the loader: a model fmbench trains is scored once from the model
cache and again from files written from it (TorchScript, a state dict, a reversed-time rescaled
TorchScript wrapper), on the same evaluation draws; the numbers must agree."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from fmbench.checkpoints import Adapted, CheckpointConfig, CheckpointError, load
from fmbench.models import MLP, MODELS, ModelConfig
from fmbench.runner import run_suite
from fmbench.storage import file_digest
from fmbench.suite import SuiteError, load_suite

TRAIN = """
[suite]
name = "trained"
seeds = [3]

[[task]]
target = "8gaussians"

[model]
width = 16
depth = 2

[training]
steps = 60
batch_size = 64
"""

# the same path, solvers and evaluation for the trained model and its checkpoints
EVALUATION = """
[[path]]
name = "icfm"

[[solver]]
name = ["euler", "rk4"]
steps = [10, 3]

[metrics]
names = ["w2", "npe", "nfe", "train_time"]
n_eval = 128
eval_draws = 2
"""
TRAIN += EVALUATION

CKPT = """
[suite]
name = "ckpt"

[[task]]
target = "8gaussians"

[model]
kind = "checkpoint"
{model}
""" + EVALUATION


def _write(folder: Path, name: str, text: str) -> Path:
    f = folder / name
    f.write_text(textwrap.dedent(text))
    return f


class Reversed(nn.Module):
    """The trained network in the diffusion convention: τ = 999·(1 − t), velocity along τ."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return -self.net(x, 1 - tau / 999)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model fmbench trains, its rows, and that network written in each format."""
    d = tmp_path_factory.mktemp("ckpt")
    cache = d / "cache"
    df = run_suite(load_suite(_write(d, "train.toml", TRAIN)), d / "trained", cache_dir=cache)
    (model_file,) = (cache / "models").glob("*.pt")
    net = MLP(2, 16, 2)
    net.load_state_dict(torch.load(model_file, weights_only=True)["state_dict"])
    net.eval()
    torch.jit.script(net).save(str(d / "net.ts"))
    torch.jit.script(Reversed(net)).save(str(d / "reversed.ts"))
    torch.save({"net_model": {"module." + k: v for k, v in net.state_dict().items()},
                "step": 60}, d / "weights.pt")
    return d, df, model_file


def _by_case(df: pd.DataFrame) -> dict:
    ok = df[df["status"] == "ok"]
    return {(r.solver_label, r.draw, r.metric): r.value for r in ok.itertuples()}


@pytest.mark.parametrize("model", [
    'file = "net.ts"',
    'file = "reversed.ts"\ntime = "data-at-0"\ntime_scale = 999',
    'file = "weights.pt"\nformat = "state-dict"\nkey = "net_model"\n'
    '[model.network]\nkind = "mlp"\nwidth = 16\ndepth = 2',
])
def test_checkpoint_scores_like_the_trained_model(trained, tmp_path, model):
    d, ref, model_file = trained
    suite = load_suite(_write(d, "ckpt.toml", CKPT.format(model=model)))
    cache = tmp_path / "cache"
    df = run_suite(suite, tmp_path / "out", cache_dir=cache)
    want, got = _by_case(ref), _by_case(df)
    assert {k for k in want if k[2] != "train_time"} == set(got)
    for k, v in got.items():
        assert v == pytest.approx(want[k], rel=1e-5, abs=1e-6), k
    times = df[df["metric"] == "train_time"]
    assert set(times["status"]) == {"not_applicable"}
    assert "read from a file" in times["reason"].iloc[0]
    assert not cache.exists() or not any(cache.rglob("*.pt"))  # the model cache is not touched
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    recorded = {json.dumps(json.loads(m)["options"], sort_keys=True) for m in rows["model"]}
    assert len(recorded) == 1
    options = json.loads(recorded.pop())
    assert options["sha256"] == file_digest(Path(suite.model.options.file), 64)
    assert options["format"] == suite.model.options.format


def test_reversed_time_without_declaring_it_gives_other_numbers(trained, tmp_path):
    """The check above would pass with the adapter doing nothing only if the conventions did
    not matter: reading the reversed file as fmbench's convention changes the samples."""
    d, ref, _ = trained
    suite = load_suite(_write(d, "wrong.toml", CKPT.format(model='file = "reversed.ts"')))
    got = _by_case(run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "c"))
    want = _by_case(ref)
    assert all(abs(got[k] - want[k]) > 1e-3 for k in got if k[2] == "w2")


def test_adapter_time_direction_scale_and_argument_order():
    seen = {}

    class Probe(nn.Module):
        def forward(self, a, b):
            seen["args"] = (a, b)
            return torch.ones(3, 2)

    x, t = torch.zeros(3, 2), torch.tensor([0.0, 0.25, 1.0])
    cfg = CheckpointConfig(file="f", time="data-at-0", time_scale=1000.0, arguments="t, x")
    out = Adapted(Probe(), cfg)(x, t)
    assert torch.equal(seen["args"][0], torch.tensor([1000.0, 750.0, 0.0]))
    assert seen["args"][1] is x and torch.equal(out, -torch.ones(3, 2))  # velocity flips
    noise = CheckpointConfig(file="f", time="data-at-0", prediction="noise")
    assert torch.equal(Adapted(Probe(), noise)(x, t), torch.ones(3, 2))  # ε does not
    assert torch.equal(Adapted(Probe(), CheckpointConfig(file="f"))(x, t), torch.ones(3, 2))
    assert seen["args"][0] is x and torch.equal(seen["args"][1], t)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PAYLOAD_RAN",))


def test_pickled_objects_are_refused_and_do_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"ema_model": _Payload()}, tmp_path / "evil.pt")
    cfg = CheckpointConfig(file=str(tmp_path / "evil.pt"), format="state-dict", key="ema_model",
                           network=ModelConfig("mlp"),
                           sha256=file_digest(tmp_path / "evil.pt", 64))
    with pytest.raises(CheckpointError, match="not readable as weights only"):
        load(cfg, (2,), torch.device("cpu"))
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_torchcfm_format_reads_ema_or_net_weights_into_torchcfm_unet(tmp_path):
    pytest.importorskip("torchcfm")
    from torchcfm.models.unet.unet import UNetModelWrapper

    settings = dict(num_channels=32, num_res_blocks=1, channel_mult=[1, 2],
                    attention_resolutions="8", num_heads=2, num_head_channels=16, dropout=0.1)
    nets = {}
    for k, seed in (("net_model", 0), ("ema_model", 1)):
        torch.manual_seed(seed)
        nets[k] = UNetModelWrapper(dim=(3, 16, 16), **settings).eval()
    torch.save({k: {"module." + n: v for n, v in m.state_dict().items()}
                for k, m in nets.items()} | {"step": 7}, tmp_path / "cfm.pt")
    f = _write(tmp_path, "s.toml", """
        [suite]
        name = "cfm"
        [[task]]
        target = "npz"
        root = "train.npz"
        [model]
        kind = "checkpoint"
        file = "cfm.pt"
        format = "torchcfm"
        KEY
        [model.network]
        kind = "torchcfm-unet"
        num_channel = 32
        num_res_blocks = 1
        channel_mult = [1, 2]
        attention_resolutions = "8"
        num_heads = 2
        num_head_channels = 16
        [[path]]
        name = "icfm"
        sigma = 0.0
        [[solver]]
        name = "euler"
        steps = 2
        """)
    import numpy as np

    np.savez(tmp_path / "train.npz", x=np.zeros((4, 16, 16, 3), np.uint8))
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([0.3, 0.7])
    template = f.read_text()
    for key, name in (("", "ema_model"), ('key = "net_model"', "net_model")):
        f.write_text(template.replace("KEY", key))
        model = load(load_suite(f).model.options, (3, 16, 16), torch.device("cpu"))
        with torch.no_grad():
            assert torch.allclose(model(x, t), nets[name](t, x), atol=1e-6), name


def test_checkpoint_suite_errors(tmp_path, trained):
    d, _, _ = trained
    cases = [
        ('file = "missing.pt"', "model.file", "no such file"),
        ('file = "weights.pt"\nformat = "state-dict"', "model.network", "is required"),
        ('file = "net.ts"\nformat = "onnx"', "model.format", "'torchscript'"),
        ('file = "net.ts"\nsha256 = "' + "0" * 64 + '"', "model.sha256", "not the 000"),
        ('file = "net.ts"\nprediction = "noise"', "path[0].objective", "objective = 'noise'"),
        ('file = "weights.pt"\nformat = "state-dict"\n[model.network]\nkind = "mlp"\nwidth = 0',
         "model.network.width", ">= 1"),
    ]
    for model, key, message in cases:
        f = _write(d, "bad.toml", CKPT.format(model=model))
        with pytest.raises(SuiteError) as e:
            load_suite(f)
        assert e.value.key == key and message in e.value.message, (model, str(e.value))
    f = _write(d, "bad.toml", CKPT.format(model='file = "net.ts"') + "[training]\nsteps = 5\n")
    with pytest.raises(SuiteError, match="leave \\[training\\] out"):
        load_suite(f)
    f = _write(d, "bad.toml", CKPT.format(model='file = "net.ts"').replace(
        'name = "ckpt"', 'name = "ckpt"\nseeds = [0, 1]'))
    with pytest.raises(SuiteError, match="give one seed"):
        load_suite(f)


def test_a_network_of_the_wrong_shape_fails_its_case_clearly(tmp_path):
    torch.jit.script(MLP(3, 8, 1)).save(str(tmp_path / "three.ts"))
    suite = load_suite(_write(tmp_path, "s.toml", CKPT.format(model='file = "three.ts"')))
    df = run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "c")
    assert set(df["status"]) == {"failed"}
    assert "calling the network as v(x, t)" in df["reason"].iloc[0]


def test_a_file_changed_after_the_suite_was_read_fails(tmp_path, trained):
    d, _, _ = trained
    f = tmp_path / "net.ts"
    f.write_bytes((d / "net.ts").read_bytes())
    suite = load_suite(_write(tmp_path, "s.toml", CKPT.format(model='file = "net.ts"')))
    torch.jit.script(MLP(2, 16, 2)).save(str(f))  # other weights under the same name
    df = run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "c")
    assert set(df["status"]) == {"failed"} and "changed since" in df["reason"].iloc[0]
    f.unlink()
    df = run_suite(suite, tmp_path / "out2", cache_dir=tmp_path / "c")
    assert set(df["status"]) == {"failed"} and "is gone since" in df["reason"].iloc[0]


def test_registered_kinds():
    assert {"checkpoint", "torchcfm-unet"} <= set(MODELS)
    assert MODELS.get("checkpoint").data == ("points", "image")


def test_fmbench_eval_is_a_suite_of_one(trained, tmp_path, capsys):
    from fmbench.cli import main

    d, ref, _ = trained
    out = tmp_path / "out"
    args = ["eval", str(d / "net.ts"), "--target", "8gaussians", "--solver", "euler:10",
            "--solver", "rk4:3", "--metrics", "w2,npe,nfe", "--n-eval", "128",
            "--eval-draws", "2", "--out", str(out)]
    assert main(args) == 0
    got, want = _by_case(pd.read_csv(out / "results.csv")), _by_case(ref)
    assert {k[0] for k in got} == {"eulerx10", "rk4x3"} and len(got) == 2 * 2 * 4
    assert all(v == pytest.approx(want[k], rel=1e-5, abs=1e-6) for k, v in got.items())
    suite = load_suite(out / "suite.toml")  # what ran, as a suite file
    assert suite.model.kind == "checkpoint" and suite.name == "eval-net"
    assert suite.model.options.file == str(d / "net.ts") and len(suite.solvers) == 2
    assert main(args + ["--overwrite"]) == 0 and (out / "suite.toml").exists()
    assert main(args[:2] + ["--target", "8gaussians", "--solver", "euler:x",
                            "--out", str(tmp_path / "o2")]) == 2
    assert "--solver" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_eval_option_parsing():
    from fmbench.evalsuite import parse_setting, parse_solver

    assert parse_solver("euler:100") == {"name": "euler", "steps": 100}
    assert parse_solver("dopri5") == {"name": "dopri5"}
    assert parse_solver("dopri5:1e-5") == {"name": "dopri5", "rtol": 1e-5, "atol": 1e-5}
    assert parse_setting("sigma=0.0", "--path-param") == ("sigma", 0.0)
    assert parse_setting("channel_mult=[1, 2]", "x") == ("channel_mult", [1, 2])
    assert parse_setting("root=data/x.npz", "x") == ("root", "data/x.npz")
    with pytest.raises(SuiteError, match="KEY=VALUE"):
        parse_setting("sigma", "--path-param")


def test_noise_predicting_network_in_the_diffusion_convention(tmp_path):
    """A score-matching model (ε objective on sm-vp) fmbench trains, written as a TorchScript
    module taking integer-like timesteps in the diffusion direction, scores the same."""
    text = TRAIN.replace('name = "icfm"', 'name = "sm-vp"').replace(
        'name = ["euler", "rk4"]\nsteps = [10, 3]', 'name = "rk4"\nsteps = 8')
    ref = run_suite(load_suite(_write(tmp_path, "t.toml", text)), tmp_path / "ref",
                    cache_dir=tmp_path / "cache")
    (model_file,) = (tmp_path / "cache" / "models").glob("*.pt")
    net = MLP(2, 16, 2)
    net.load_state_dict(torch.load(model_file, weights_only=True)["state_dict"])

    class Diffusion(nn.Module):  # ε(x, τ) with τ = 999·(1 − t)
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, tau):
            return self.net(x, 1 - tau / 999)

    torch.jit.script(Diffusion(net.eval())).save(str(tmp_path / "eps.ts"))
    model = ('file = "eps.ts"\ntime = "data-at-0"\ntime_scale = 999\nprediction = "noise"')
    ck = CKPT.format(model=model).replace('name = "icfm"', 'name = "sm-vp"\nobjective = "noise"')
    ck = ck.replace('name = ["euler", "rk4"]\nsteps = [10, 3]', 'name = "rk4"\nsteps = 8')
    df = run_suite(load_suite(_write(tmp_path, "c.toml", ck)), tmp_path / "out",
                   cache_dir=tmp_path / "c2")
    want, got = _by_case(ref), _by_case(df)
    assert got and all(v == pytest.approx(want[k], rel=1e-5, abs=1e-6) for k, v in got.items())


def test_shape_mismatch_and_network_kind_errors(tmp_path, trained):
    d, _, _ = trained
    wrong = CKPT.format(model='file = "weights.pt"\nformat = "state-dict"\nkey = "net_model"\n'
                              '[model.network]\nkind = "mlp"\nwidth = 32\ndepth = 2')
    df = run_suite(load_suite(_write(d, "w.toml", wrong)), tmp_path / "out",
                   cache_dir=tmp_path / "c")
    reason = df["reason"].iloc[0]
    assert set(df["status"]) == {"failed"} and "weights.pt" in reason
    assert "do not fit a mlp network" in reason and "check [model.network]" in reason
    for table, key, message in [
        ('[model.network]\nkind = "checkpoint"\nfile = "net.ts"', "model.network.kind",
         "must be a network's kind"),
        ('[model.network]\nwidth = 16', "model.network.kind", "required"),
        ('[model.network]\nkind = "unet"', "model.network.kind", "has points data"),
    ]:
        text = CKPT.format(model=f'file = "weights.pt"\nformat = "state-dict"\n{table}')
        with pytest.raises(SuiteError) as e:
            load_suite(_write(d, "bad.toml", text))
        assert e.value.key == key and message in e.value.message, str(e.value)


def test_eval_pins_the_file_keeps_foreign_files_and_refuses_odd_values(trained, tmp_path,
                                                                       capsys):
    import tomllib

    from fmbench.cli import main

    d, _, _ = trained
    out = tmp_path / "out"
    base = ["eval", str(d / "net.ts"), "--target", "8gaussians", "--solver", "euler:4",
            "--metrics", "nfe", "--eval-draws", "1", "--out", str(out)]
    assert main(base) == 0
    written = tomllib.loads((out / "suite.toml").read_text())
    assert written["model"]["sha256"] == file_digest(d / "net.ts", 64)
    assert main(["run", str(out / "suite.toml"), "--out", str(out), "--overwrite"]) == 0
    assert (out / "suite.toml").exists()  # the suite being run is the user's file now
    capsys.readouterr()
    assert main(base[:2] + ["--target", "8gaussians", "--path-param", "sigma=2024-01-01",
                            "--out", str(tmp_path / "o2")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--path-param" in err and "sigma" in err and "bug" not in err
