"""Image loaders on small fixtures written in the real on-disk formats."""

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmbench import image_data as I

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n).tolist(), "batch_label": f"b{seed}"}


def _write_cifar(root: Path, as_archive: bool) -> dict:
    batches = {f"data_batch_{i}": _cifar_batch(4, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(3, 9)
    if as_archive:
        with tarfile.open(root / I.CIFAR10_ARCHIVE, "w:gz") as tar:
            for name, d in batches.items():
                raw = pickle.dumps(d)
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        for name, d in batches.items():
            (folder / name).write_bytes(pickle.dumps(d))
    return batches


@pytest.mark.parametrize("as_archive", [True, False])
def test_cifar10_official_python_format(tmp_path, as_archive):
    batches = _write_cifar(tmp_path, as_archive)
    train = I.load_cifar10(tmp_path, "train")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    first = batches["data_batch_1"]["data"][0].reshape(3, 32, 32)
    assert np.array_equal(train.images[0].numpy(), first)  # row-major R, G, B planes
    assert train.labels.tolist()[:4] == batches["data_batch_1"]["labels"]
    assert len(I.load_cifar10(tmp_path, "test").images) == 3


def test_cifar10_missing_offline_error(tmp_path, monkeypatch):
    with pytest.raises(I.DataError, match="cifar-10-python.tar.gz"):
        I.load_cifar10(tmp_path)

    def offline(*a, **k):
        raise OSError("network unreachable")

    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(I.DataError, match="Offline, copy"):
        I.load_cifar10(tmp_path, download=True)


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_fashion_mnist_idx(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labs = rng.integers(0, 10, 7).astype(np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labs)))
    ds = I.load_fashion_mnist(tmp_path, "train")
    assert ds.images.shape == (7, 1, 28, 28)
    assert np.array_equal(ds.images[:, 0].numpy(), imgs)
    assert ds.labels.tolist() == labs.tolist()
    with pytest.raises(I.DataError, match="dataset-fashion-mnist"):
        I.load_fashion_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x01junk")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labs))
    with pytest.raises(I.DataError, match="unsigned byte"):
        I.load_fashion_mnist(tmp_path, "test")


def _write_folder(root: Path):
    rng = np.random.default_rng(1)
    arrays = {}
    for cls in ("cat", "ant"):
        d = root / "train" / cls
        d.mkdir(parents=True)
        for i in range(3):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(a).save(d / f"{i}.png")
            arrays[(cls, i)] = a
    return arrays


def test_image_folder_and_archive(tmp_path):
    arrays = _write_folder(tmp_path / "imgs")
    ds = I.load_image_folder(tmp_path / "imgs", "train")
    assert ds.images.shape == (6, 3, 8, 8)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]  # classes sorted: ant, cat
    assert np.array_equal(ds.images[0].numpy().transpose(1, 2, 0), arrays[("ant", 0)])
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "imgs", arcname="imgs")
    ds2 = I.load_image_folder(archive, "train")
    assert torch.equal(ds.images, ds2.images) and torch.equal(ds.labels, ds2.labels)
    sub = I.load_image_folder(archive, "train", limit=4)
    assert len(sub.images) == 4 and sub.labels.tolist() == [0, 0, 1, 1]  # class-balanced
    with pytest.raises(I.DataError, match="no image folder"):
        I.load_image_folder(tmp_path / "imgs", "test")


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_npz(tmp_path, layout):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    arr = x.transpose(0, 2, 3, 1) if layout == "nhwc" else x
    np.savez(tmp_path / "d.npz", images=arr, labels=np.arange(5))
    ds = I.load_npz(tmp_path / "d.npz")
    assert np.array_equal(ds.images.numpy(), x) and ds.labels.tolist() == list(range(5))
    np.savez(tmp_path / "bad.npz", images=arr.astype(np.float32))
    with pytest.raises(I.DataError, match="uint8"):
        I.load_npz(tmp_path / "bad.npz")


def test_scaling_roundtrip_and_flip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y = I.to_model_range(x)
    assert y.min() == -1 and y.max() == 1
    assert torch.equal(I.to_uint8(y), x)
    g = torch.Generator().manual_seed(0)
    batch = x.repeat(64, 1, 1, 1)
    flipped = I.random_hflip(batch, g)
    is_flipped = (flipped == x.flip(-1)).flatten(1).all(1)
    assert 10 < int(is_flipped.sum()) < 54
    assert ((flipped == x).flatten(1).all(1) | is_flipped).all()


@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason="shared CIFAR-10 JPEGs not available")
def test_shared_cifar10_jpegs():
    ds = I.load_image_folder(SHARED_CIFAR, "test", limit=50)
    assert ds.images.shape == (50, 3, 32, 32)
    assert ds.labels.bincount().tolist() == [5] * 10  # class folders in CIFAR label order
    mean = ds.images.float().mean() / 255
    assert 0.35 < float(mean) < 0.6


@pytest.mark.skipif(not Path(I.FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = I.load_fashion_mnist(split="test")
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.labels.bincount().tolist() == [1000] * 10
