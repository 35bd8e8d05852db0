"""Artifacts of a case and a model: sample files in the results folder, trained models in the
model cache. Names are derived from the case, sanitised and bounded; writes are atomic
(:mod:`fmbench.storage`); a cached model that cannot be loaded is set aside and retrained.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from fmbench.paths.schedules import GaussianPath
from fmbench.storage import atomic_write, digest, set_aside
from fmbench.train import MACHINE_ERRORS

if TYPE_CHECKING:
    from fmbench.plan import Case

T = TypeVar("T")


def path_label(path: GaussianPath) -> str:
    """``name`` plus the parameters that differ from the registered defaults."""
    defaults = type(path)()
    diff = {f.name: getattr(path, f.name) for f in fields(path)
            if getattr(path, f.name) != getattr(defaults, f.name)}
    return path.name + (f"({','.join(f'{k}={v}' for k, v in diff.items())})" if diff else "")


STEM_MAX = 120  # file names from task names stay far below any file system's limit (255)


def case_file_stem(case: Case) -> str:
    """A safe file name for a case's samples (:func:`sample_stem`)."""
    return sample_stem(case.task.name, path_label(case.path), case.solver.label(), case.seed)


def sample_stem(task: str, path: str, solver: str, seed: int) -> str:
    """The file name of a case's samples from its task name, path and solver labels and seed
    (as results rows carry them, so reports find the file): sanitised, bounded (long names keep
    a prefix and a hash), always ending in ``-seed<N>``."""
    base = re.sub(r"[^A-Za-z0-9_.@=-]+", "_", f"{task}-{path}-{solver}").lstrip(".")
    if len(base) > STEM_MAX:
        base = f"{base[:STEM_MAX - 13]}-{digest(base, 12)}"
    return f"{base}-seed{seed}"


GRID_SAMPLES = 64  # images in a case's sample grid (samples/<stem>.png)


def save_sample_grid(file: Path, samples: torch.Tensor, n: int = GRID_SAMPLES) -> None:
    from torchvision.utils import save_image

    grid = (samples[:n].detach().float().cpu().clamp(-1, 1) + 1) / 2
    nrow = int(math.ceil(math.sqrt(min(n, len(grid)))))
    atomic_write(file, lambda f: save_image(grid, f, nrow=nrow, format="png"))


def save_model(file: Path, model: torch.nn.Module, meta: dict) -> None:
    state = {"state_dict": model.state_dict(), "meta": meta}
    atomic_write(file, lambda f: torch.save(state, f))


def load_cached(file: Path, load: Callable[[Path], T], what: str) -> T | None:
    """``load(file)``, or None with the file set aside when it is unreadable (truncated,
    foreign, malformed: recomputed by the caller). Errors of the machine (out of memory)
    propagate and leave the file in place."""
    try:
        return load(file)
    except MACHINE_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 - any other failure means the file is unusable
        set_aside(file, f"unreadable {what}: {type(e).__name__}: {e}"[:300])
        return None


def load_model(file: Path, model: torch.nn.Module) -> dict | None:
    """Load a cached model; None (and the file set aside) if it is unreadable, e.g. truncated."""

    def load(f: Path) -> dict:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
        meta = ckpt["meta"]
        if not isinstance(meta, dict) or "losses" not in meta or "train_time" not in meta:
            raise ValueError("no training metadata")
        return meta

    meta = load_cached(file, load, "cached model")
    if meta is not None:
        model.eval()
    return meta
