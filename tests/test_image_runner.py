"""An image suite end to end at toy scale: U-Net, FID/KID with a tiny registered extractor, bpd."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmbench.runner import run_suite
from fmbench.suite import SuiteError, load_suite
from tests.test_fid import TinyExtractor  # noqa: F401  (registers fmbench-test-tiny)

SUITE = """
[suite]
name = "img"
seeds = [0]

[[task]]
target = "image-folder"
root = "{root}"
name = "dots"

[model]
kind = "unet"
preset = "tiny"

[training]
steps = 4
batch_size = 8
ema_decay = 0.5
checkpoint_every = 2

[[path]]
name = "fm-ot"

[[path]]
name = "otcfm"

[[solver]]
name = "euler"
nfe = 4

[metrics]
names = ["fid", "kid", "bpd", "nfe", "solver_mse", "sample_time"]
n_eval = 16
eval_batch = 8
fid_ref_n = 40
kid_subset_size = 8
bpd_n = 4
bpd_rtol = 1e-3
reference_steps = 10
feature_extractor = "{extractor}"
"""


@pytest.fixture
def image_root(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        for cls in ("a", "b"):
            d = tmp_path / "imgs" / split / cls
            d.mkdir(parents=True)
            for i in range(n // 2):
                base = 60 if cls == "a" else 180
                arr = np.clip(rng.normal(base, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return tmp_path / "imgs"


def _suite(tmp_path, root, extractor="fmbench-test-tiny"):
    f = tmp_path / "img.toml"
    f.write_text(SUITE.format(root=root, extractor=extractor))
    return load_suite(f)


def test_image_suite_end_to_end(tmp_path, image_root):
    df = run_suite(_suite(tmp_path, image_root), tmp_path / "out")
    bad = df[df["status"] != "ok"]
    assert bad.empty, bad[["metric", "reason"]].to_string()
    assert set(df["metric"]) == {"fid", "fid_floor", "kid", "kid_std", "bpd", "nfe",
                                 "solver_mse", "sample_time"}
    assert (df[df.metric == "nfe"]["value"] == 4).all()
    bpd = df[df.metric == "bpd"]["value"]
    assert (bpd > 0).all() and (bpd < 20).all()
    fid = df[df.metric == "fid"]["value"]
    assert (fid > df[df.metric == "fid_floor"]["value"].iloc[0]).all()  # 4 steps: far from data
    pngs = list((tmp_path / "out" / "samples").glob("*.png"))
    assert len(pngs) == 2
    assert Image.open(pngs[0]).size[0] > 8  # a grid, not a single image
    assert not list((tmp_path / "cache" / "checkpoints").glob("*.pt"))  # removed when done
    feats = list((tmp_path / "cache" / "features").glob("*.npz"))
    # the train reference once, and the floor's test features of each of the 3 default draws
    assert len(feats) == 4
    from fmbench.report import build

    text = build(tmp_path / "out", "md").read_text()
    assert "Lipman et al. Table 1 layout" in text
    assert text.count("../samples/") == 2  # the sample grids are linked


def test_missing_inception_weights_fail_fid_only(tmp_path, image_root, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FMBENCH_INCEPTION_WEIGHTS", raising=False)
    df = run_suite(_suite(tmp_path, image_root, "inception-v3-compat"), tmp_path / "out")
    fid = df[df.metric.isin(["fid", "kid"])]
    assert (fid["status"] == "failed").all()
    assert fid["reason"].str.contains("fmbench fid-weights").all()
    assert (df[df.metric == "bpd"]["status"] == "ok").all()
    assert pd.notna(df[df.metric == "bpd"]["value"]).all()


def test_fid_floor_not_applicable_when_test_split_is_small(tmp_path, image_root):
    text = SUITE.format(root=image_root, extractor="fmbench-test-tiny")
    text = text.replace("n_eval = 16", "n_eval = 24").replace("steps = 4", "steps = 1")
    text = text.replace('[[path]]\nname = "otcfm"\n', "").replace(
        '"fid", "kid", "bpd", "nfe", "solver_mse", "sample_time"', '"fid"')
    f = tmp_path / "s.toml"
    f.write_text(text)
    df = run_suite(load_suite(f), tmp_path / "out")
    st = dict(zip(df.metric, df.status, strict=True))
    assert st == {"fid": "ok", "fid_floor": "not_applicable"}
    assert "20 images" in df[df.metric == "fid_floor"]["reason"].iloc[0]


def test_image_folder_n_test_does_not_cut_training_split(image_root):
    from fmbench.image_tasks import load_split

    opts = {"root": str(image_root), "channels": 3, "n_train": 0, "n_test": 6, "hflip": True}
    assert len(load_split("image-folder", opts, "train").images) == 40
    assert len(load_split("image-folder", opts, "test").images) == 6


def test_image_suite_validation(tmp_path, image_root):
    f = tmp_path / "bad.toml"
    f.write_text(SUITE.format(root=image_root, extractor="nope"))
    with pytest.raises(SuiteError, match="feature_extractor"):
        load_suite(f)
    f.write_text(SUITE.format(root=image_root, extractor="fmbench-test-tiny")
                 .replace('kind = "unet"\npreset = "tiny"', 'kind = "mlp"'))
    with pytest.raises(SuiteError, match="image data, which 'mlp' models do not take: kind = .*'unet'"):
        load_suite(f)
    f.write_text(SUITE.format(root=image_root, extractor="fmbench-test-tiny")
                 .replace('root = "', 'rot = "'))
    with pytest.raises(SuiteError, match="task\\[0\\]"):
        load_suite(f)


def test_preflight_refuses_before_training(tmp_path, image_root, monkeypatch, capsys):
    """Missing Inception weights or data: validate says what and how to fix it, run starts
    nothing (no results folder, no model trained) and exits 2."""
    from fmbench.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FMBENCH_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("FMBENCH_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "s.toml"
    f.write_text(SUITE.format(root=image_root, extractor="inception-v3-compat"))
    assert main(["validate", str(f)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not ready" in err and "fmbench fid-weights" in err
    assert main(["run", str(f), "--out", str(tmp_path / "out")]) == 2
    assert "nothing was started" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    f.write_text(SUITE.format(root=tmp_path / "nowhere", extractor="fmbench-test-tiny"))
    assert main(["validate", str(f)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "nowhere does not exist" in err and "task[0].root" in err
    f.write_text(SUITE.format(root=image_root, extractor="fmbench-test-tiny"))
    assert main(["validate", str(f)]) == 0
    assert "devices: " in capsys.readouterr().out
