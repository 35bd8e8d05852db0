"""Plug-ins end to end: the example package under tests/plugin_example is pip-installed into a
temporary folder and every fmbench command runs in a subprocess that has it on its path (the
pytest process never loads it, so the other tests see the built-ins only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).parent
DIST = "fmbench-example-plugin"


def _pip_install(src: Path, target: Path) -> None:
    """A real install (dist-info with entry_points.txt) from a copy, offline, without build
    isolation: setuptools comes from the environment (torch depends on it)."""
    build = target.parent / f"src-{src.name}"
    shutil.copytree(src, build)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target), str(build)],
                   check=True, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("plugins") / "site"
    _pip_install(HERE / "plugin_example", target)
    return target


def _fmbench(args: list[str], pythonpath: Path, cwd: Path, timeout: int = 300):
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "COLUMNS": "250",
           "FMBENCH_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "fmbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


SUITE = """
[suite]
name = "plug"
seeds = [0]
plugins = ["example", "example-couplings"]

[[task]]
target = "example-spiral"

[model]
kind = "example-resmlp"
width = 16

[training]
steps = 150
batch_size = 128

[[path]]
name = "example-quadratic"

[[path]]
name = "icfm"
coupling = "example-norm-sorted"

[[solver]]
name = ["euler", "example-ralston"]
steps = 10

[metrics]
names = ["w2", "example_mean_error", "nfe"]
n_eval = 200
eval_draws = 2
"""


def test_list_shows_plugin_components_and_origins(plugin_path, tmp_path):
    r = _fmbench(["list"], plugin_path, tmp_path)
    assert r.returncode == 0, r.stderr
    origin = f"plugin {DIST}"
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    for name in ("example-quadratic", "example-norm-sorted", "example-spiral",
                 "example_mean_error", "example-resmlp", "example-ralston"):
        assert name in rows and origin in rows[name], (name, r.stdout)
    for name in ("icfm", "exact-ot", "8gaussians", "cifar10", "w2", "mlp", "euler"):
        assert "built-in" in rows[name] and origin not in rows[name]
    assert "width=32, blocks=2" in rows["example-resmlp"]  # the model kind's settings
    for ep in ("example", "example-couplings"):
        assert "loaded" in rows[ep] and "0.1.0" in rows[ep]


def test_suite_with_plugins_runs_in_worker_processes(plugin_path, tmp_path):
    (tmp_path / "plug.toml").write_text(textwrap.dedent(SUITE))
    r = _fmbench(["run", "plug.toml", "--out", "out", "--workers", "2"], plugin_path, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(df["status"]) == {"ok"}
    assert set(df["path"]) == {"example-quadratic", "icfm"}
    assert set(df[df["path"] == "icfm"]["coupling"]) == {"example-norm-sorted"}
    wide = df.pivot_table(index=["path", "solver", "draw"], columns="metric", values="value")
    assert len(wide) == 8  # 2 paths × 2 solvers × 2 draws
    # an independent bound: |E X − E Y| ≤ W1 ≤ W2 between the same two point sets
    assert (wide["example_mean_error"] <= wide["w2"] + 1e-6).all(), wide
    assert (wide["example_mean_error"] > 0).all()
    nfe = wide["nfe"].groupby("solver").unique().to_dict()
    assert {k: list(v) for k, v in nfe.items()} == {"euler": [10], "example-ralston": [20]}
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    plugins = {p["name"]: p for p in meta["environment"]["plugins"]}
    assert {n: (p["distribution"], p["version"], p["loaded"]) for n, p in plugins.items()} == {
        "example": (DIST, "0.1.0", True), "example-couplings": (DIST, "0.1.0", True)}
    assert len(set(df["case_id"])) == 4
    # the plug-in's path, coupling and model code are part of what defines the model
    probe = ("from fmbench.suite import load_suite; from fmbench.plan import training_components;"
             "from fmbench.codehash import code_parts; s = load_suite('plug.toml');"
             "print('\\n'.join(code_parts(*training_components(s, s.tasks[0], s.paths[1]))))")
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    parts = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True,
                           capture_output=True, text=True, timeout=120).stdout.split("\n")
    for part in ("fmbench_example_plugin.ResMLP", "fmbench_example_plugin._build",
                 "fmbench_example_plugin.spiral",
                 "fmbench_example_plugin.couplings.NormSortedCoupling"):
        assert part in parts, (part, parts)
    assert "fmbench_example_plugin.mean_error" not in parts  # a metric does not train


def test_missing_plugin_is_a_clear_error(plugin_path, tmp_path):
    f = tmp_path / "miss.toml"
    f.write_text(textwrap.dedent(SUITE).replace('"example-couplings"]', '"nope"]'))
    r = _fmbench(["validate", str(f)], plugin_path, tmp_path)
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert str(f) in err and "suite.plugins" in err and "'nope' is not installed" in err, err
    assert "installed plug-ins: example, example-couplings" in err
    assert not (tmp_path / "out").exists()


def test_without_the_plugin_its_components_are_unknown(tmp_path):
    """The same suite where the plug-in is not installed: the requirement names it first."""
    f = tmp_path / "plug.toml"
    f.write_text(textwrap.dedent(SUITE))
    r = _fmbench(["validate", str(f)], tmp_path / "empty", tmp_path)
    assert r.returncode == 2 and "'example' is not installed" in " ".join(r.stderr.split())
    f.write_text(textwrap.dedent(SUITE).replace('plugins = ["example", "example-couplings"]', ""))
    r = _fmbench(["validate", str(f)], tmp_path / "empty", tmp_path)
    assert r.returncode == 2 and "unknown" in r.stderr and "example-spiral" in r.stderr


@pytest.mark.slow  # a second pip install and three fmbench processes (~15 s)
def test_broken_plugin_is_reported_and_does_not_stop_fmbench(plugin_path, tmp_path):
    pkg = tmp_path / "broken"
    (pkg / "fmbench_broken_plugin").mkdir(parents=True)
    (pkg / "fmbench_broken_plugin" / "__init__.py").write_text(
        "from fmbench.data import DATASETS\n"
        "DATASETS.register('broken-first')(lambda n, g: None)  # then it fails\n"
        "raise ImportError('needs a library that is not installed')\n")
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "fmbench-broken-plugin"
        version = "2.0"
        [project.entry-points."fmbench.plugins"]
        broken = "fmbench_broken_plugin"
        [tool.setuptools]
        packages = ["fmbench_broken_plugin"]
        """))
    site = tmp_path / "site"
    _pip_install(pkg, site)
    both = Path(f"{plugin_path}{os.pathsep}{site}")
    r = _fmbench(["list", "plugins"], both, tmp_path)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "failed: ImportError: needs a library that is not installed" in out
    assert "did not load" in r.stderr and "withdrawn" in r.stderr  # the warning
    r = _fmbench(["list", "datasets"], both, tmp_path)
    assert "example-spiral" in r.stdout and "broken-first" not in r.stdout  # rolled back
    f = tmp_path / "plug.toml"
    f.write_text(textwrap.dedent(SUITE))
    assert _fmbench(["validate", str(f)], both, tmp_path).returncode == 0  # not required: fine
    f.write_text(textwrap.dedent(SUITE).replace('"example-couplings"]',
                                                '"example-couplings", "broken"]'))
    r = _fmbench(["validate", str(f)], both, tmp_path)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "'broken' (fmbench-broken-plugin 2.0) failed to load" in err
    assert "needs a library that is not installed" in err
