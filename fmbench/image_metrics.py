"""Image metrics: FID (with its train-vs-test floor), KID and bits/dim.

- ``fid``: FID between n_eval generated images and the training split (``fid_ref_n`` images, all by
  default), torch-fidelity's Inception pool3 features; ``fid_floor`` is the FID of n_eval TEST
  images against the same reference: what a perfect model scores at this sample count (FID is biased
  in n); not applicable when the test split is smaller than n_eval. Reference features are cached
  on disk per dataset (resolved options), split, count and extractor (weights content hash).
- ``bpd`` does not depend on the sampling solver: computed once per model and shared.
- ``kid``: KID (polynomial-kernel unbiased MMD², torch-fidelity) of the same features, subsets of
  ``kid_subset_size``; ``kid_std`` is its spread over subsets.
- ``bpd``: bits/dim of ``bpd_n`` test images (:mod:`fmbench.likelihood`): dopri5 at
  rtol = atol = ``bpd_rtol``, ``bpd_k`` dequantisation importance samples, ``bpd_probes`` Hutchinson
  probes. Gaussian source only.

Evaluation draws (:mod:`fmbench.tasks`): draw r generates its own n_eval images, so FID and KID
get their evaluation standard error from R independent generated sets (not a bootstrap, which
resamples one set and so inherits its FID bias); the floor and bits/dim of draw r use the draw's
own test images (a random subset of the test split fixed by data_seed and r: image-folder
splits are sorted by class), so ``fid_floor`` is a distribution over R pairs (generated-size test
set vs the training reference). When the test split holds n_eval images or fewer every draw's
floor uses all of them (one cached feature set): its spread is then not measured (sd 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fmbench import fid as F
from fmbench.artifacts import load_cached
from fmbench.image_data import to_uint8
from fmbench.likelihood import bits_per_dim
from fmbench.metrics import (
    METRICS,
    MetricDef,
    NotApplicable,
    NotApplicableValue,
    Reference,
    Scoring,
    metric,
)
from fmbench.plan import derived_seed
from fmbench.solvers import SolverSpec
from fmbench.storage import atomic_write, digest, file_digest

FID_SETTINGS = ("n_eval", "fid_ref_n", "feature_extractor")
KID_SETTINGS = (*FID_SETTINGS, "kid_subset_size")
BPD_SETTINGS = ("bpd_n", "bpd_k", "bpd_probes", "bpd_rtol")
for _name, _desc, _settings, _role in [
    ("fid_floor", "FID of n_eval test images against the same training reference (floor)",
     FID_SETTINGS, "floor"),
    ("kid_std", "standard deviation of KID over subsets", KID_SETTINGS, "info"),
]:
    METRICS.register(_name)(MetricDef(_name, "", False, _desc, settings=_settings, role=_role))

_EXTRACTORS: dict[tuple, torch.nn.Module] = {}  # per process: each network is loaded once


def extractor(s: Scoring) -> torch.nn.Module:
    m = s.settings
    key = (m.feature_extractor, m.inception_weights, str(s.device))
    if key not in _EXTRACTORS:
        feature = ("2048" if m.feature_extractor == F.INCEPTION_EXTRACTOR
                   else _default_feature(m.feature_extractor))
        _EXTRACTORS[key] = F.make_extractor(m.feature_extractor, m.inception_weights or None,
                                            feature=feature).to(s.device)
    return _EXTRACTORS[key]


def _default_feature(name: str) -> str:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    return FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric("fid")


_WEIGHT_DIGESTS: dict[tuple, str] = {}


def _weights_id(m) -> str:
    """The extractor's identity for feature caches: its name, and for Inception a content hash
    of the weights file (so features from other weights are never reused)."""
    if m.feature_extractor != F.INCEPTION_EXTRACTOR:
        return m.feature_extractor
    p = F.resolve_inception_weights(m.inception_weights or None)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _WEIGHT_DIGESTS:
        _WEIGHT_DIGESTS[key] = f"inception-{file_digest(p)}"
    return _WEIGHT_DIGESTS[key]


def feature_batch(s: Scoring) -> int:
    """Images per feature-extractor call: metrics.feature_batch, or (0) 16 on CPU (Inception's
    CPU throughput falls from ~14 to ~7 images/s between batch 16 and 128: benchmarks/image_costs.py)
    and 64 on GPU. An execution setting only: the features depend on it by float rounding at most."""
    return s.settings.feature_batch or (16 if torch.device(s.device).type == "cpu" else 64)


def cached_features(s: Scoring, split: str, n: int) -> torch.Tensor:
    """Features of the first n images of a split (the test split in the draw's order), cached
    on disk (atomic writes)."""
    x = s.images()
    if split == "train":
        n = min(n or len(x.train_images), len(x.train_images))
        images, index = x.train_images[:n], None
    else:
        images, index = x.test_subset(n or len(x.test_images))
        n = len(images)
    ident = json.dumps({"target": x.target, "options": x.options, "split": split, "n": n,
                        "extractor": _weights_id(s.settings),
                        **({} if index is None else {"index": digest(index.tolist(), 16)})},
                       sort_keys=True, default=str)
    file = Path(s.cache_dir) / "features" / f"{x.target}-{split}-{n}-{digest(ident, 12)}.npz"
    feats = _read_features(file, n) if file.exists() else None
    if feats is None:
        feats = F.extract_features(extractor(s), images, feature_batch(s))
        arrays = {"features": feats.float().numpy(), "ident": np.array(ident)}
        atomic_write(file, lambda f: np.savez(f, **arrays))
    return feats.double()


def _read_features(file: Path, n: int) -> torch.Tensor | None:
    """Cached features, or None (the file set aside) when it is unreadable or the wrong size."""

    def load(f: Path) -> torch.Tensor:
        with np.load(f, allow_pickle=False) as z:
            feats = torch.from_numpy(np.asarray(z["features"], dtype=np.float32))
        if feats.dim() != 2 or len(feats) != n or not torch.isfinite(feats).all():
            raise ValueError(f"features of shape {tuple(feats.shape)}, expected {n} finite rows")
        return feats

    return load_cached(file, load, "feature cache")


def _fid_floor(s: Scoring) -> float:
    test = cached_features(s, "test", s.settings.n_eval)
    return F.fid_from_statistics(F.statistics(test), s.get(REFERENCE_STATISTICS))


TRAIN_FEATURES = Reference("FID reference features",
                           lambda s: cached_features(s, "train", s.settings.fid_ref_n),
                           per_draw=False)
REFERENCE_STATISTICS = Reference("FID reference statistics",
                                 lambda s: F.statistics(s.get(TRAIN_FEATURES)), per_draw=False)
FID_FLOOR = Reference("fid_floor", _fid_floor)
GENERATED_FEATURES = Reference(
    "features of the generated images",
    lambda s: F.extract_features(extractor(s), to_uint8(s.samples()).cpu(), feature_batch(s)),
    per_case=True)


@metric("fid", "", False, "FID against the training split (with fid_floor), n_eval samples",
        FID_SETTINGS)
def _fid(s: Scoring) -> dict[str, float]:
    x = s.images()
    ref = s.get(REFERENCE_STATISTICS)
    gen = F.fid_from_statistics(F.statistics(s.get(GENERATED_FEATURES)), ref)
    n_test = len(x.test_images)
    if n_test < s.settings.n_eval:  # a floor at another sample count would mislead (FID is biased in n)
        return {"fid": gen, "fid_floor": NotApplicableValue(
            f"the test split has {n_test} images, fewer than n_eval = {s.settings.n_eval}")}
    return {"fid": gen, "fid_floor": s.get(FID_FLOOR)}


@metric("kid", "", False, "KID against the training split (with kid_std)", KID_SETTINGS)
def _kid(s: Scoring) -> dict[str, float]:
    s.images()
    gen = s.get(GENERATED_FEATURES)
    ref = s.get(TRAIN_FEATURES)
    size = min(s.settings.kid_subset_size, len(gen), len(ref))
    mean, std = F.kid_from_features(gen, ref, subsets=100, subset_size=size)
    return {"kid": mean, "kid_std": std}


def _bits_per_dim(s: Scoring) -> float:
    """bits/dim of the draw's first bpd_n test images (its dequantization and probe noise from
    the draw): independent of the sampling solver, so one value per model and draw (a per-model
    reference)."""
    m = s.settings
    x = s.images()
    pixels, _ = x.test_subset(m.bpd_n)
    spec = SolverSpec("dopri5", rtol=m.bpd_rtol, atol=m.bpd_rtol)
    g = torch.Generator().manual_seed(derived_seed("bpd", x.draw))
    out = []
    for i in range(0, len(pixels), m.eval_batch):
        bpd, _ = bits_per_dim(s.field, pixels[i:i + m.eval_batch].to(s.device),
                              s.path.source_log_prob, spec, m.bpd_k, s.path.t_min,
                              s.path.t_max, m.bpd_probes, generator=g)
        out.append(bpd.cpu())
    value = torch.cat(out)
    if not torch.isfinite(value).all():
        raise FloatingPointError("bits/dim is not finite")
    return float(value.mean())


BITS_PER_DIM = Reference("bits/dim", _bits_per_dim)


@metric("bpd", "bits/dim", False, "negative log-likelihood of test images in bits per dimension",
        BPD_SETTINGS, uses_samples=False)
def _bpd(s: Scoring) -> dict[str, float]:
    s.images()
    if not s.gaussian_source:
        raise NotApplicable("bits/dim needs a Gaussian source density")
    return {"bpd": s.get(BITS_PER_DIM)}
