"""The slurm executor (submitit): one job-array element per work unit. (Being written.)"""

from __future__ import annotations

from dataclasses import dataclass

from fmbench.executors import ExecutorDef

NAME = "slurm"


@dataclass(frozen=True)
class SlurmOptions:
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    gpus_per_node: int = 0  # GPUs per unit
    cpus_per_task: int = 2
    mem_gb: int = 0  # 0 = the partition's default
    timeout_min: int = 24 * 60
    array_parallelism: int = 32  # array elements running at once
    folder: str = ""  # submitit's logs and pickles ("" = <results folder>/slurm)
    cluster: str = "slurm"  # submitit's cluster: slurm, or local/debug to try a suite here


def _make(options: SlurmOptions):
    raise NotImplementedError


DEFINITION = ExecutorDef(SlurmOptions, _make, "slurm", "a SLURM job array through submitit")
