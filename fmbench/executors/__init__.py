"""Executors decide WHERE work units run; they never change a number.

Every executor takes a :class:`~fmbench.work.UnitJob` and the pending work units and yields a
:class:`~fmbench.work.UnitOutcome` per unit as it finishes (in any order); progress events go to
``on_event``. Workers write their own case files; the coordinator (``fmbench.runner``) assembles
the table. Seeds come from the work unit, never from the worker or the completion order.

- ``local`` (default): in this process (``workers = 1``) or a pool of worker processes on this
  machine, one per GPU when there are GPUs, else one per core (:mod:`.local`).
- ``slurm``: a submitit job array, one element per unit (:mod:`.slurm`; extra ``[slurm]``).
- ``ray``: Ray tasks on a cluster or a local Ray instance (:mod:`.ray_cluster`; extra ``[ray]``).

Options come from the suite's ``[executor]`` table, overridden by ``fmbench run`` flags. Each
executor owns its options dataclass; ``suite.py`` binds the table to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Protocol

from fmbench.plan import WorkUnit
from fmbench.registry import Registry
from fmbench.results import RunError
from fmbench.validation import one_line
from fmbench.work import UnitEvent, UnitJob, UnitOutcome

OnEvent = Callable[[UnitEvent], None]


class Executor(Protocol):
    def run(self, job: UnitJob, units: list[WorkUnit], on_event: OnEvent
            ) -> Iterator[UnitOutcome]: ...

    def describe(self, suite=None) -> str: ...  # where the units (of ``suite``) run


@dataclass(frozen=True)
class ExecutorDef:
    options: type  # a frozen dataclass of the executor's settings (all with defaults)
    make: Callable[[object], Executor]
    extra: str = ""  # the pip extra that installs its library ("" = none needed)
    description: str = ""


EXECUTORS: Registry[ExecutorDef] = Registry("executor")


def missing_extra(package: str, extra: str) -> RunError:
    return RunError(f"the {extra} executor needs the {package} package: "
                    f'pip install -e ".[{extra}]" (or pip install {package})')


def make_executor(name: str, options: object | None = None, **overrides) -> Executor:
    """The executor ``name`` with ``options`` (its options dataclass, e.g. from the suite's
    [executor] table) and non-None ``overrides`` (command-line flags) applied."""
    d = EXECUTORS.get(name)
    opts = options if isinstance(options, d.options) else d.options()
    known = {f.name for f in fields(d.options)}
    bad = sorted(k for k, v in overrides.items() if v is not None and k not in known)
    if bad:
        raise RunError(f"the {name} executor has no option {', '.join(bad)} (its options: "
                       f"{', '.join(sorted(known))})")
    try:  # the options dataclass checks its values (FieldError)
        opts = replace(opts, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        raise RunError(f"the {name} executor's {one_line(e)}") from None
    return d.make(opts)


def _register() -> None:
    from fmbench.executors import local, ray_cluster, slurm

    for mod in (local, slurm, ray_cluster):
        EXECUTORS.register(mod.NAME)(mod.DEFINITION)


_register()
