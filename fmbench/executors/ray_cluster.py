"""The ray executor: one Ray task per work unit. (Being written.)"""

from __future__ import annotations

from dataclasses import dataclass

from fmbench.executors import ExecutorDef

NAME = "ray"


@dataclass(frozen=True)
class RayOptions:
    address: str = ""  # an existing cluster ("auto", "ray://host:10001"); "" = start a local one
    num_cpus: float = 1.0  # per unit
    num_gpus: float = 0.0  # per unit
    local_cpus: int = 0  # CPUs of a local instance (0 = all)


def _make(options: RayOptions):
    raise NotImplementedError


DEFINITION = ExecutorDef(RayOptions, _make, "ray", "Ray tasks on a cluster or a local instance")
