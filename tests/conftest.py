import textwrap

import pytest

TINY = """
[suite]
name = "tiny"
seeds = [0, 1]

[[task]]
source = "gaussian"
target = "8gaussians"

[model]
width = 16
depth = 2

[training]
steps = 30
batch_size = 64

[[path]]
name = "icfm"
sigma = 0.1

[[path]]
name = "otcfm"

[[solver]]
name = "euler"
nfe = 8

[[solver]]
name = "rk4"
steps = 2

[metrics]
names = ["w2", "npe", "nll", "nfe", "solver_mse", "train_time", "sample_time"]
n_eval = 64
eval_draws = 1
reference_steps = 20
"""


@pytest.fixture
def tiny_suite_file(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(textwrap.dedent(TINY))
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _in_process(monkeypatch):
    """Suites run in the test's process unless a test asks for workers (FMBENCH_WORKERS is the
    default worker count): monkeypatched stages apply, and no pool start-up per test."""
    monkeypatch.setenv("FMBENCH_WORKERS", "1")
