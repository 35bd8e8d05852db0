"""Pre-flight: what a suite needs from the machine, checked before anything trains.

``problems(suite)`` lists, for each thing missing, what is missing and the one command (or
setting) that fixes it: image data roots and test files, the Inception weights of FID and KID
(a checkpoint file is checked, and hashed, when the suite is read). ``devices(suite)`` says
where the units will run. ``fmbench validate`` prints
both; ``fmbench run``, ``fmbench eval`` and ``fmbench.run`` refuse to start (exit 2) while a
problem remains, instead of training models whose FID then fails. (``run_suite`` itself keeps the
per-case rule: a metric that fails mid-run fails its rows only.)
"""

from __future__ import annotations

from pathlib import Path

from fmbench.tasks import kind_of

_FEATURE_METRICS = ("fid", "kid")


def _data_problems(suite) -> list[str]:
    out = []
    for i, t in enumerate(suite.tasks):
        if kind_of(t.target).kind != "image":
            continue
        opts = t.opts()
        for key in ("root", "test"):
            where = opts.get(key)
            if not where or Path(where).exists():
                continue
            if t.target == "cifar10" and key == "root" and opts.get("download"):
                continue  # downloaded on first use
            fix = ("set download = true in the task (or copy cifar-10-python.tar.gz there)"
                   if t.target == "cifar10" else
                   "apt install dataset-fashion-mnist" if t.target == "fashion-mnist" else
                   f"point task[{i}].{key} at the data")
            out.append(f"task[{i}] ({t.name}): {key} {where} does not exist: {fix}")
    return out


def _weights_problems(suite) -> list[str]:
    from fmbench.fid import INCEPTION_EXTRACTOR, InceptionWeightsError, resolve_inception_weights

    m = suite.metrics
    images = any(kind_of(t.target).kind == "image" for t in suite.tasks)
    if not images or not set(_FEATURE_METRICS) & set(m.names) or \
            m.feature_extractor != INCEPTION_EXTRACTOR:
        return []
    try:
        resolve_inception_weights(m.inception_weights or None)
    except InceptionWeightsError as e:
        return [f"metrics {', '.join(n for n in m.names if n in _FEATURE_METRICS)}: {e}"]
    return []


def problems(suite) -> list[str]:
    """Everything the suite needs that this machine lacks, each with its fix (empty: ready)."""
    return _data_problems(suite) + _weights_problems(suite)


def devices(suite) -> str:
    """Where the units will run: image tasks on the GPU when there is one, 2D tasks on CPUs."""
    import torch

    gpu = torch.cuda.is_available()
    uses = any(kind_of(t.target).uses_gpu for t in suite.tasks)
    if not uses:
        return "CPU (2D tasks train on the CPU)"
    if gpu:
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return f"{torch.cuda.device_count()} GPU(s): {', '.join(names)}"
    return "CPU: no GPU found (image suites are slow there; see the suite's header for cost)"


def check(suite) -> None:
    """RunError listing every problem (before anything trains)."""
    from fmbench.results import RunError

    found = problems(suite)
    if found:
        raise RunError(f"{suite.file}: not ready to run (nothing was started):\n  "
                       + "\n  ".join(found))
