"""Plan: a suite → its cases and work units, with stable ids.

A *case* is one trained model × one solver configuration (× the seed the model was trained with);
a *work unit* is one trained model and every case that evaluates it: the unit of scheduling that
an executor places on a core, a GPU or a cluster node. Ids are content hashes of what defines the
numbers, so they are the same on every machine, in every process and in every order:

- ``model_key``: task (source, target, options as the suite writes them: a relative data root
  stays relative, so the same suite in another checkout reuses its models), path and its
  parameters, model and training settings, seed, and the digest of the code that defines the
  model (:func:`training_code`). It names the model in the model cache.
- ``case_id``: the model key, the task name, the solver label, the metric settings and the data
  seed. It names the case file in a results folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from fmbench.codehash import code_digest
from fmbench.paths.schedules import GaussianPath
from fmbench.solvers import SolverSpec
from fmbench.storage import digest

if TYPE_CHECKING:
    from fmbench.suite import Suite, Task


def derived_seed(*parts) -> int:
    """A 32-bit seed derived from ``parts`` (the work unit, a role, a sample index …)."""
    return int(digest(list(parts), 8), 16)


def training_components(suite: Suite, task: Task, path: GaussianPath) -> tuple:
    """What defines a trained model of (task, path) as code: the training loop and initial
    weights, the path's class, its coupling, the model kind and the task's data components
    (:meth:`fmbench.tasks.TaskData.components`)."""
    from fmbench.cache import trained_model
    from fmbench.models import MODELS
    from fmbench.paths.couplings import COUPLINGS
    from fmbench.tasks import kind_of

    # trained_model reaches the initial weights, the coupling's construction and the loop
    return (trained_model, type(path), COUPLINGS.get(path.coupling),
            MODELS.get(suite.model.kind), *kind_of(task.target).components(task))


def training_code(suite: Suite, task: Task, path: GaussianPath) -> str:
    """Digest of :func:`training_components` with the own code each reaches
    (:mod:`fmbench.codehash`; a plug-in's package counts as own code). Code a model does not run
    — another dataset, another path, the metrics, the runner — is not part of it."""
    return code_digest(*training_components(suite, task, path))


def suite_training_code(suite: Suite) -> str:
    """One digest of :func:`training_code` over the suite's tasks and paths (run.json's
    ``code.training``: a resumed run refuses cases trained by other code)."""
    return digest(sorted({training_code(suite, t, p) for t in suite.tasks for p in suite.paths}))


@dataclass(frozen=True)
class Case:
    """One model × solver × seed; ``model_key`` identifies the trained model it evaluates."""

    task: Task
    path: GaussianPath
    solver: SolverSpec
    seed: int
    model_key: str
    case_id: str


@dataclass(frozen=True)
class WorkUnit:
    """One trained model and the cases that evaluate it (all share task, path and seed)."""

    cases: tuple[Case, ...]

    @property
    def key(self) -> str:
        return self.cases[0].model_key

    @property
    def first(self) -> Case:
        return self.cases[0]

    @property
    def label(self) -> str:
        from fmbench.artifacts import path_label

        c = self.first
        return f"{c.task.name} {path_label(c.path)} seed {c.seed}"


def model_key(suite: Suite, task: Task, path: GaussianPath, seed: int) -> str:
    """Hash of everything that influences training (not solvers or metrics)."""
    return digest({
        "source": task.source, "target": task.target, "task_options": dict(task.options),
        "path": path.name, "path_params": path.params(), "model": asdict(suite.model),
        "training": suite.training.definition(), "seed": seed,
        "code": training_code(suite, task, path),
    })


def cases(suite: Suite) -> list[Case]:
    """Every case of the grid, in suite order (task, path, seed, solver); combinations a path
    does not support (``Suite.skipped``) are left out."""
    out = []
    metrics = asdict(suite.metrics)
    for task in suite.tasks:
        for path in suite.paths:
            if path.gaussian_source_only and not task.gaussian_source:
                continue
            for seed in suite.seeds:
                mkey = model_key(suite, task, path, seed)
                for spec in suite.solvers:
                    cid = digest({"model": mkey, "task": task.name, "solver": spec.label(),
                                  "metrics": metrics, "data_seed": suite.data_seed})
                    out.append(Case(task, path, spec, seed, mkey, cid))
    return out


def work_units(suite: Suite, done: set[str] = frozenset()) -> list[WorkUnit]:
    """The units with at least one case not in ``done``, each holding only its pending cases,
    in suite order."""
    by_model: dict[str, list[Case]] = {}
    for c in cases(suite):
        if c.case_id not in done:
            by_model.setdefault(c.model_key, []).append(c)
    return [WorkUnit(tuple(cs)) for cs in by_model.values()]
