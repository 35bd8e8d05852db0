"""The Python API: README's example runs as written, and evaluate() agrees with run()."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

import fmbench
from fmbench.suite import SuiteError

README = Path(__file__).parent.parent / "README.md"


def _readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    section = section[:section.index("\n## ", 1)]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_readme_example_runs(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    ns: dict = {"__name__": "readme_example"}
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), ns)
    table, rows = ns["table"], ns["rows"]
    assert isinstance(table, pd.DataFrame) and set(table["status"]) == {"ok"}
    assert set(table["path"]) == {"icfm", "otcfm"} and set(table["seed"]) == {0, 1}
    assert (tmp_path / "results" / "api-demo" / "results.csv").exists()
    assert set(rows["status"]) == {"ok"}
    nfe = rows[rows.metric == "nfe"].groupby("solver")["value"].mean()
    assert nfe["euler"] == 20 and nfe["dopri5"] > 0
    w2 = rows[rows.metric == "w2"]["value"]
    floor = rows[rows.metric == "w2_floor"]["value"]
    assert w2.mean() < 3 and floor.mean() < w2.mean()  # a trained net, not noise
    assert not list((tmp_path / "tmp").glob("fmbench-evaluate-*"))  # a temporary folder


def test_evaluate_a_module_equals_running_its_checkpoint(tmp_path):
    """The same network through fmbench.evaluate (in memory) and as a TorchScript file."""
    from fmbench.models import MLP

    torch.manual_seed(0)
    net = MLP(2, 16, 2)
    file = tmp_path / "net.ts"
    torch.jit.script(net).save(str(file))
    kw = dict(task={"source": "moons", "target": "8gaussians"}, solvers=["rk4:5"],
              metrics=["w2", "nfe"], n_eval=100, eval_draws=2)
    a = fmbench.evaluate(net, **kw)
    b = fmbench.evaluate(file, **kw, out=tmp_path / "b")
    key = ["draw", "metric"]
    va, vb = a.set_index(key)["value"], b.set_index(key)["value"]
    assert len(va) == 6 and (va - vb.loc[va.index]).abs().max() < 1e-5
    assert set(a["model"].map(lambda m: '"in-memory"' in m)) == {True}
    other = MLP(2, 16, 2)  # other weights: another model key
    c = fmbench.evaluate(other, **kw)
    assert set(c["model_key"]).isdisjoint(set(a["model_key"]))
    assert net.training  # the caller's module is left as it was (a copy was evaluated)
    from fmbench.checkpoints import _MODULES

    assert not _MODULES  # and not held after the call
    again = fmbench.evaluate(file, **kw, out=tmp_path / "b", resume=True)  # nothing left to do
    assert again["value"].tolist() == b["value"].tolist()
    from fmbench.results import RunError

    with pytest.raises(RunError, match="model.kind: checkpoint → in-memory"):
        fmbench.evaluate(net, **kw, out=tmp_path / "b", resume=True)  # another model: refused


def test_api_errors_are_suite_errors(tmp_path):
    with pytest.raises(SuiteError, match="metrics.names"):
        fmbench.evaluate(torch.nn.Identity(), "8gaussians", metrics=["nope"])
    with pytest.raises(SuiteError, match="model.weights"):
        fmbench.run({"suite": {"name": "x"}, "task": [{"target": "8gaussians"}],
                     "model": {"kind": "in-memory", "weights": "0" * 64},
                     "path": [{"name": "icfm"}], "solver": [{"name": "euler"}]},
                    out=tmp_path / "o")
    assert fmbench.__version__ and callable(fmbench.load_suite)
