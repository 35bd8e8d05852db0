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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from fmbench import fid as F
from fmbench.artifacts import load_cached
from fmbench.image_data import to_uint8
from fmbench.likelihood import bits_per_dim
from fmbench.metrics import METRICS, EvalContext, MetricDef, NotApplicable, NotApplicableValue, metric
from fmbench.solvers import SolverSpec
from fmbench.storage import atomic_write

FID_SETTINGS = ("n_eval", "fid_ref_n", "feature_extractor")
KID_SETTINGS = (*FID_SETTINGS, "kid_subset_size")
BPD_SETTINGS = ("bpd_n", "bpd_k", "bpd_probes", "bpd_rtol")
for _name, _desc, _settings in [
    ("fid_floor", "FID of n_eval test images against the same training reference (floor)",
     FID_SETTINGS),
    ("kid_std", "standard deviation of KID over subsets", KID_SETTINGS),
]:
    METRICS.register(_name)(MetricDef(_name, "", False, _desc, settings=_settings))

_EXTRACTORS: dict[tuple, torch.nn.Module] = {}


def _image_ctx(ctx: EvalContext) -> dict:
    if not ctx.extras.get("is_image"):
        raise NotApplicable("image metric on a non-image task")
    return ctx.extras


def extractor(ctx: EvalContext) -> torch.nn.Module:
    ex = _image_ctx(ctx)
    m = ex["metrics"]
    key = (m.feature_extractor, m.inception_weights, str(ex["device"]))
    if key not in _EXTRACTORS:
        feature = ("2048" if m.feature_extractor == F.INCEPTION_EXTRACTOR
                   else _default_feature(m.feature_extractor))
        _EXTRACTORS[key] = F.make_extractor(m.feature_extractor, m.inception_weights or None,
                                            feature=feature).to(ex["device"])
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
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _WEIGHT_DIGESTS[key] = f"inception-{h.hexdigest()[:16]}"
    return _WEIGHT_DIGESTS[key]


def feature_batch(ctx: EvalContext) -> int:
    """Images per feature-extractor call: metrics.feature_batch, or (0) 16 on CPU (Inception's
    CPU throughput falls from ~14 to ~7 images/s between batch 16 and 128: benchmarks/image_costs.py)
    and 64 on GPU. An execution setting only: the features depend on it by float rounding at most."""
    ex = _image_ctx(ctx)
    fb = ex["metrics"].feature_batch
    return fb or (16 if torch.device(ex["device"]).type == "cpu" else 64)


def cached_features(ctx: EvalContext, split: str, n: int) -> torch.Tensor:
    """Features of the first n images of a split, cached on disk (atomic writes)."""
    ex = _image_ctx(ctx)
    images = ex["train_images"] if split == "train" else ex["test_images_fid"]
    n = min(n or len(images), len(images))
    task = ex["task"]
    ident = json.dumps({"target": task.target, "options": task.opts(), "split": split, "n": n,
                        "extractor": _weights_id(ex["metrics"])}, sort_keys=True, default=str)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    file = Path(ex["cache_dir"]) / "features" / f"{task.target}-{split}-{n}-{digest}.npz"
    mem = ctx.cache.setdefault("features", {})
    if file.name in mem:
        return mem[file.name]
    feats = _read_features(file, n) if file.exists() else None
    if feats is None:
        feats = F.extract_features(extractor(ctx), images[:n], feature_batch(ctx))
        arrays = {"features": feats.float().numpy(), "ident": np.array(ident)}
        atomic_write(file, lambda f: np.savez(f, **arrays))
    mem[file.name] = feats.double()
    return mem[file.name]


def _read_features(file: Path, n: int) -> torch.Tensor | None:
    """Cached features, or None (the file set aside) when it is unreadable or the wrong size."""

    def load(f: Path) -> torch.Tensor:
        with np.load(f, allow_pickle=False) as z:
            feats = torch.from_numpy(np.asarray(z["features"], dtype=np.float32))
        if feats.dim() != 2 or len(feats) != n or not torch.isfinite(feats).all():
            raise ValueError(f"features of shape {tuple(feats.shape)}, expected {n} finite rows")
        return feats

    return load_cached(file, load, "feature cache")


def generated_features(ctx: EvalContext) -> torch.Tensor:
    if "gen_features" not in ctx.local:
        ctx.local["gen_features"] = F.extract_features(
            extractor(ctx), to_uint8(ctx.samples()).cpu(), feature_batch(ctx))
    return ctx.local["gen_features"]


@metric("fid", "", False, "FID against the training split (with fid_floor), n_eval samples",
        FID_SETTINGS)
def _fid(ctx: EvalContext) -> dict[str, float]:
    m = _image_ctx(ctx)["metrics"]
    ref = F.statistics(cached_features(ctx, "train", m.fid_ref_n))
    gen = F.fid_from_statistics(F.statistics(generated_features(ctx)), ref)
    n_test = len(_image_ctx(ctx)["test_images_fid"])
    if n_test < m.n_eval:  # a floor at another sample count would mislead (FID is biased in n)
        return {"fid": gen, "fid_floor": NotApplicableValue(
            f"the test split has {n_test} images, fewer than n_eval = {m.n_eval}")}
    if "fid_floor" not in ctx.cache:
        test = cached_features(ctx, "test", m.n_eval)
        ctx.cache["fid_floor"] = F.fid_from_statistics(F.statistics(test), ref)
    return {"fid": gen, "fid_floor": ctx.cache["fid_floor"]}


@metric("kid", "", False, "KID against the training split (with kid_std)", KID_SETTINGS)
def _kid(ctx: EvalContext) -> dict[str, float]:
    m = _image_ctx(ctx)["metrics"]
    gen = generated_features(ctx)
    ref = cached_features(ctx, "train", m.fid_ref_n)
    size = min(m.kid_subset_size, len(gen), len(ref))
    mean, std = F.kid_from_features(gen, ref, subsets=100, subset_size=size)
    return {"kid": mean, "kid_std": std}


@metric("bpd", "bits/dim", False, "negative log-likelihood of test images in bits per dimension",
        BPD_SETTINGS)
def _bpd(ctx: EvalContext) -> dict[str, float]:
    ex = _image_ctx(ctx)
    if not ctx.gaussian_source:
        raise NotApplicable("bits/dim needs a Gaussian source density")
    if "bpd" in ctx.cache:  # independent of the sampling solver: once per model
        return {"bpd": ctx.cache["bpd"]}
    m = ex["metrics"]
    pixels = ex["test_images_fid"][: m.bpd_n]
    spec = SolverSpec("dopri5", rtol=m.bpd_rtol, atol=m.bpd_rtol)
    g = torch.Generator().manual_seed(0)
    out, nfe = [], 0
    for i in range(0, len(pixels), m.eval_batch):
        bpd, n = bits_per_dim(ctx.velocity, pixels[i:i + m.eval_batch].to(ex["device"]),
                              ctx.path.source_log_prob, spec, m.bpd_k, ctx.path.t_min,
                              ctx.path.t_max, m.bpd_probes, generator=g)
        out.append(bpd.cpu())
        nfe += n
    value = torch.cat(out)
    if not torch.isfinite(value).all():
        raise FloatingPointError("bits/dim is not finite")
    ctx.cache["bpd"] = float(value.mean())
    return {"bpd": ctx.cache["bpd"]}
