"""Train stage: a work unit's model, from the model cache or trained into it.

Layout of the cache folder (``--cache-dir``, ``$FMBENCH_CACHE`` or ``~/.cache/fmbench``)::

    models/<entry>.pt        trained weights (EMA weights when EMA is on) and training record
    checkpoints/<entry>.pt   a training checkpoint while the model trains (resumed from)
    locks/<entry>.lock       held while a process loads-or-trains that model

``<entry>`` is the model key, with the digest of the training images appended for image tasks
(:func:`entry_name`).
    features/                    cached Inception features of datasets (image metrics)

The cache may be shared by runs, workers and cluster jobs: a process takes the model's lock
before looking, so two of them never train the same model at once (the second waits, then loads
the first one's model); files are written atomically, so no reader sees half of one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from fmbench.artifacts import load_model, save_model
from fmbench.models import build_model
from fmbench.paths.couplings import make_coupling
from fmbench.plan import WorkUnit, derived_seed
from fmbench.storage import FolderLock, LockHeld, set_aside
from fmbench.tasks import TaskData
from fmbench.train import CorruptCheckpoint, TrainingFailed, train

log = logging.getLogger("fmbench")
CACHE_ORPHAN_AGE_S = 3600  # the model cache is shared: only temp files older than this go


def default_cache_dir() -> Path:
    return Path(os.environ.get("FMBENCH_CACHE", Path.home() / ".cache" / "fmbench"))


def new_model(unit: WorkUnit, model_cfg, data: TaskData) -> torch.nn.Module:
    """The unit's network, initialised from its own seed (a stream apart from training's)."""
    with torch.random.fork_rng():
        torch.manual_seed(derived_seed(unit.first.seed, "init"))
        try:
            return build_model(model_cfg, data.shape)
        except ValueError as e:
            raise ValueError(f"model: {e}") from None


def entry_name(unit: WorkUnit, data: TaskData) -> str:
    """The model's name in the cache: its model key, and the digest of its training data where
    that is read from files (:meth:`TaskData.content_digest`)."""
    content = data.content_digest()
    return f"{unit.key}-{content}" if content else unit.key


def _model_lock(cache: Path, unit: WorkUnit, name: str) -> FolderLock:
    """The model's lock in the cache, held; waits (saying so) while another process has it."""
    lock = FolderLock(cache / "locks", f"{name}.lock")
    try:
        return lock.acquire()
    except LockHeld:
        log.info("waiting for another process that is training or loading %s (%s)", unit.label,
                 name)
        return FolderLock(cache / "locks", f"{name}.lock", wait=True).acquire()


def trained_model(unit: WorkUnit, suite, data: TaskData, cache: Path,
                  on_step: Callable[[int, float, float], None] | None = None
                  ) -> tuple[torch.nn.Module, dict, bool]:
    """(model on the task's device, training record, whether it came from the cache).

    Training resumes a checkpoint when there is one; a corrupt checkpoint is set aside and
    training starts over. TrainingFailed when the loss diverges."""
    dev = data.device()
    case = unit.first
    name = entry_name(unit, data)
    file = cache / "models" / f"{name}.pt"
    ckpt = cache / "checkpoints" / f"{name}.pt"
    lock = _model_lock(cache, unit, name)
    try:
        model = new_model(unit, suite.model, data).to(dev)
        meta = load_model(file, model) if file.exists() else None
        if meta is not None:
            return model, meta, True

        def fit(m):
            coupling = make_coupling(case.path.coupling, **case.path.coupling_params())
            return train(m, case.path, coupling, data.source(case.path), data.target(),
                         suite.training, case.seed, on_step,
                         checkpoint=ckpt if suite.training.checkpoint_every else None,
                         device=dev)

        try:
            try:
                meta = fit(model)
            except CorruptCheckpoint as e:
                set_aside(e.file, e.reason)
                model = new_model(unit, suite.model, data).to(dev)
                meta = fit(model)
        except TrainingFailed as e:
            raise TrainingFailed(f"training failed: {e}") from None
        save_model(file, model, meta)
        ckpt.unlink(missing_ok=True)
        return model, meta, False
    finally:
        lock.release()
