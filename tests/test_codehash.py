"""Model keys hash the code that defines the model (fmbench.codehash, plan.training_code)."""

from __future__ import annotations

import functools
import importlib.util
import textwrap

from fmbench import plan
from fmbench.codehash import code_digest, code_parts
from fmbench.suite import load_suite

PLUGIN = '''
from dataclasses import dataclass

import torch

from fmbench.paths.schedules import ICFMPath

SCALE = {scale}
TABLE = {{"a": {scale}, "b": 1}}


def _helper(x):
    return x * SCALE


def ring(n, generator):
    return _helper(torch.randn(n, 2, generator=generator))


def with_default(n, generator, scale=SCALE):
    return scale * torch.randn(n, 2, generator=generator)


def with_table(n, generator):
    return TABLE["a"] * torch.randn(n, 2, generator=generator)


def build(cfg, shape):
    return Net()


def unrelated(n, generator):
    return torch.zeros(n, {unrelated})


class Net(torch.nn.Module):
    def forward(self, x, t):
        return x * {net}


@dataclass(frozen=True)
class MyPath(ICFMPath):
    def coeffs(self, t):
        return t, 1 - t, torch.full_like(t, {noise} * self.sigma)
'''


def _plugin(tmp_path, name, scale=2.0, unrelated=2, net=1.0, noise=1.0):
    """The plug-in module ``plugmod`` written to a folder of its own and imported from there:
    fresh objects each time, as in a new process (or another checkout)."""
    f = tmp_path / name / "plugmod.py"
    f.parent.mkdir()
    f.write_text(PLUGIN.format(scale=scale, unrelated=unrelated, net=net, noise=noise))
    spec = importlib.util.spec_from_file_location("plugmod", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plugin_code_changes_the_digest_only_where_it_is_used(tmp_path):
    def key(mod):
        return code_digest(mod.ring, mod.Net)

    base = key(_plugin(tmp_path, "base"))
    assert key(_plugin(tmp_path, "same")) == base  # another file, same code: same digest
    assert key(_plugin(tmp_path, "unrelated", unrelated=3)) == base
    assert key(_plugin(tmp_path, "helper_const", scale=3.0)) != base  # a constant it reads
    assert key(_plugin(tmp_path, "model", net=2.0)) != base  # the plug-in model's code
    for f in ("with_default", "with_table"):  # a default argument, a dict constant
        assert code_digest(getattr(_plugin(tmp_path, f"{f}0"), f)) != code_digest(
            getattr(_plugin(tmp_path, f"{f}1", scale=3.0), f)), f
    part = [code_digest(functools.partial(_plugin(tmp_path, f"partial{i}", scale=s).ring))
            for i, s in enumerate((2.0, 2.0, 3.0))]
    assert part[0] == part[1] != part[2]
    mod = _plugin(tmp_path, "parts")
    parts = code_parts(mod.ring)
    assert "plugmod._helper" in parts and "SCALE = 2.0" in parts
    assert "plugmod.unrelated" not in parts


def test_a_plugin_model_kind_is_hashed_through_its_record(tmp_path):
    """The record's type is fmbench's (ModelKind); its functions are the plug-in's code."""
    from fmbench.models import MLPConfig, ModelKind

    def kind(name, net):
        return code_digest(ModelKind(MLPConfig, _plugin(tmp_path, name, net=net).build))

    assert kind("k0", 1.0) == kind("k1", 1.0) != kind("k2", 2.0)
    assert "plugmod.Net" in code_parts(ModelKind(MLPConfig, _plugin(tmp_path, "k3").build))


def test_digests_do_not_depend_on_hash_randomisation(tmp_path):
    import subprocess
    import sys

    code = ("from fmbench import plan; from fmbench.suite import load_suite; "
            f"s = load_suite({str(tmp_path / 's.toml')!r}); "
            "print([plan.model_key(s, t, p, 0) for t in s.tasks for p in s.paths])")
    _suite(tmp_path, TOY)
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(h)},
                           check=True).stdout for h in (1, 2)}
    assert len(outs) == 1


def _suite(tmp_path, body, name="s.toml"):
    f = tmp_path / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(textwrap.dedent(body))
    return load_suite(f)


TOY = """
    [suite]
    name = "toy"
    [[task]]
    source = "gaussian"
    target = "8gaussians"
    [[path]]
    name = "icfm"
    [[path]]
    name = "otcfm"
    [[solver]]
    name = "euler"
    nfe = 2
"""


IMG = """
    [suite]
    name = "img"
    [[task]]
    target = "npz"
    root = "data/train.npz"
    test = "data/test.npz"
    [model]
    kind = "unet"
    preset = "tiny"
    [[path]]
    name = "icfm"
    [[solver]]
    name = "euler"
    nfe = 2
    """


def test_built_in_model_code_leaves_out_what_the_model_does_not_run(tmp_path):
    suite = _suite(tmp_path, TOY)
    task, (icfm, otcfm) = suite.tasks[0], suite.paths
    parts = code_parts(*plan.training_components(suite, task, icfm))
    for used in ("fmbench.data.eight_gaussians", "fmbench.paths.schedules.ICFMPath",
                 "fmbench.paths.schedules.GaussianPath", "fmbench.train._train",
                 "fmbench.batches.BatchMaker", "fmbench.models.MLP", "fmbench.cache.new_model",
                 "fmbench.paths.couplings.IndependentCoupling"):
        assert used in parts, used
    for unused in ("fmbench.data.moons", "fmbench.unet.UNet", "fmbench.paths.schedules.VEPath",
                   "fmbench.paths.couplings.ExactOTCoupling", "fmbench.metrics.w2",
                   "fmbench.runner.run_suite"):
        assert unused not in parts, unused
    ot = code_parts(*plan.training_components(suite, task, otcfm))
    assert "fmbench.paths.couplings.ExactOTCoupling" in ot
    assert plan.training_code(suite, task, icfm) != plan.training_code(suite, task, otcfm)


def test_an_edit_to_the_path_formula_changes_the_model_key(tmp_path):
    suite = _suite(tmp_path, TOY)
    task = suite.tasks[0]

    def key(mod):
        return plan.model_key(suite, task, mod.MyPath(), 0)

    base = key(_plugin(tmp_path, "base"))
    assert key(_plugin(tmp_path, "same")) == base
    assert key(_plugin(tmp_path, "unrelated", unrelated=5)) == base
    assert key(_plugin(tmp_path, "formula", noise=2.0)) != base
    parts = code_parts(*plan.training_components(suite, task, _plugin(tmp_path, "p").MyPath()))
    assert "plugmod.MyPath" in parts and "fmbench.paths.schedules.ICFMPath" in parts


def test_model_keys_ignore_where_the_suite_lives(tmp_path):
    a, b = _suite(tmp_path, IMG, "a/s.toml"), _suite(tmp_path, IMG, "b/s.toml")
    assert a.tasks[0].opts()["root"] != b.tasks[0].opts()["root"]  # resolved: other folders
    keys = [plan.model_key(s, s.tasks[0], s.paths[0], 0) for s in (a, b)]
    assert keys[0] == keys[1]
    parts = code_parts(*plan.training_components(a, a.tasks[0], a.paths[0]))
    assert "fmbench.image_data.load_npz" in parts and "fmbench.unet.UNet" in parts
    assert "fmbench.image_data.load_cifar10" not in parts


def test_cache_entries_of_image_models_follow_the_training_data(tmp_path):
    """Same model key (same text in the suite), other images: another cache entry; the same
    images loaded from anywhere: the same entry."""
    import torch

    from fmbench.cache import entry_name
    from fmbench.tasks import ImageData

    suite = _suite(tmp_path, IMG)
    unit = plan.work_units(suite)[0]
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=g)
    other = imgs.clone()
    other[0, 0, 0, 0] ^= 1
    name = entry_name(unit, ImageData(suite.tasks[0], imgs, imgs))
    assert name.startswith(unit.key) and name != unit.key
    assert entry_name(unit, ImageData(suite.tasks[0], imgs.clone(), imgs[:2])) == name
    assert entry_name(unit, ImageData(suite.tasks[0], other, imgs)) != name
    point = _suite(tmp_path, TOY, "toy.toml")
    from fmbench.tasks import load_task

    pu = plan.work_units(point)[0]
    assert entry_name(pu, load_task(point.tasks[0])) == pu.key  # generated data: the key alone


def test_a_record_is_hashed_by_what_it_runs_not_its_field_list():
    """A ModelKind's digest covers its build, load and prepare functions and what they reach,
    not the ModelKind class itself (a new field of the record type keeps every model's key)."""
    from fmbench.codehash import code_parts
    from fmbench.models import MODELS

    parts = code_parts(MODELS.get("checkpoint"))
    assert {"fmbench.checkpoints.load", "fmbench.checkpoints.prepare",
            "fmbench.checkpoints._not_trained"} <= set(parts)
    assert "fmbench.models.ModelKind" not in parts
    assert "fmbench.models._mlp" in code_parts(MODELS.get("mlp"))
