"""Image datasets as uint8 tensors (N, C, H, W), read from their real on-disk formats.

- CIFAR-10: the official ``cifar-10-python.tar.gz`` (pickled batches), read straight from the
  archive or from its extracted ``cifar-10-batches-py/`` folder; :func:`download_cifar10` fetches it
  with torchvision's downloader and checksum.
- Fashion-MNIST: the IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``), e.g. from
  the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
- Image folders ``<root>/<split>/<class>/*.png|jpg`` (classes in sorted order), also read straight
  from a ``.tar``/``.tar.gz`` archive holding such a tree.
- ``.npz`` arrays of uint8 images (how users bring ImageNet 32/64): key ``images`` (or ``x`` or
  ``arr_0``), shaped (N, H, W, C) or (N, C, H, W); optional ``labels``/``y``.

Safety: no data file can run code. CIFAR-10 batches are unpickled with an allow-list holding only
numpy's array-rebuilding globals, each behind an argument check (any other global, an object dtype or
an odd array subtype is a :class:`DataError` naming the file), and then checked for structure;
``.npz`` files are read with ``allow_pickle=False``.

Models see x/127.5 − 1 ∈ [−1, 1] (:data:`PIXEL_SCALE`); NLL undoes it with the recorded scale.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# uint8 x ↦ x·scale + shift ∈ [−1, 1]; dequantised pixels (x + u)/256 map with scale 2/256
PIXEL_SCALE = {"scale": 2.0 / 255.0, "shift": -1.0}


class DataError(RuntimeError):
    """A dataset is missing or malformed; the message says where and what to do."""


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None
    name: str
    split: str

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"{self.name}/{self.split}: expected (N, C, H, W) uint8, got "
                            f"{tuple(self.images.shape)} {self.images.dtype}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 → float in [−1, 1]."""
    return x.float() * PIXEL_SCALE["scale"] + PIXEL_SCALE["shift"]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [−1, 1] → uint8 (rounded, clamped): how samples are saved and scored."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ------------------------------------------------------------------------------------- CIFAR-10
def download_cifar10(root: str | Path) -> Path:
    """torchvision's download with the official MD5; a clear error when offline."""
    from torchvision.datasets.utils import check_integrity, download_url

    root = Path(root)
    archive = root / CIFAR10_ARCHIVE
    if check_integrity(str(archive), CIFAR10_MD5):
        return archive
    try:
        download_url(CIFAR10_URL, str(root), CIFAR10_ARCHIVE, CIFAR10_MD5)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        raise DataError(
            f"could not download CIFAR-10 into {root} ({type(e).__name__}: {e}). Offline, copy "
            f"the official {CIFAR10_ARCHIVE} (md5 {CIFAR10_MD5}) into that folder, or its "
            f"extracted cifar-10-batches-py/ folder.") from None
    return archive


def _cifar_batches(split: str) -> list[str]:
    if split == "train":
        return [f"data_batch_{i}" for i in range(1, 6)]
    if split == "test":
        return ["test_batch"]
    raise DataError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")


def load_cifar10(root: str | Path, split: str = "train", download: bool = False) -> ImageSet:
    """CIFAR-10 from ``root`` holding cifar-10-python.tar.gz or cifar-10-batches-py/; batches are
    read without running code (:mod:`fmbench.cifar_pickle`)."""
    from fmbench.cifar_pickle import read_cifar_batch

    root = Path(root)
    names = _cifar_batches(split)
    folder, archive = root / "cifar-10-batches-py", root / CIFAR10_ARCHIVE
    if not folder.is_dir() and not archive.is_file():
        if download:
            download_cifar10(root)
        else:
            raise DataError(f"no CIFAR-10 in {root}: expected {CIFAR10_ARCHIVE} or "
                            f"cifar-10-batches-py/ there (set download = true to fetch it)")
    parts = []
    if folder.is_dir():
        for n in names:
            p = folder / n
            if not p.is_file():
                raise DataError(f"{p} is missing")
            parts.append(read_cifar_batch(p.read_bytes(), str(p)))
    else:
        with tarfile.open(archive) as tar:
            for n in names:
                try:
                    member = tar.extractfile(f"cifar-10-batches-py/{n}")
                except KeyError:
                    member = None
                if member is None:
                    raise DataError(f"{archive} has no cifar-10-batches-py/{n}")
                parts.append(read_cifar_batch(member.read(), f"{archive}:{n}"))
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageSet(images, labels, "cifar10", split)


# -------------------------------------------------------------------------------- Fashion-MNIST
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: IDX type {dtype_code:#x}, expected unsigned byte (0x08)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: {data.size} bytes of data for dimensions {dims}")
    return data.reshape(dims)


def load_fashion_mnist(root: str | Path = FASHION_MNIST_ROOT, split: str = "train") -> ImageSet:
    root = Path(root)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    found = {}
    for kind in ("images-idx3", "labels-idx1"):
        cands = [root / f"{prefix}-{kind}-ubyte.gz", root / f"{prefix}-{kind}-ubyte"]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            raise DataError(f"no {cands[0].name} in {root}: install the Debian package "
                            f"dataset-fashion-mnist or give the folder holding the IDX files")
        found[kind] = _read_idx(hit)
    images = torch.from_numpy(found["images-idx3"].copy())[:, None]
    labels = torch.from_numpy(found["labels-idx1"].astype(np.int64))
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels")
    return ImageSet(images, labels, "fashion-mnist", split)


# -------------------------------------------------------------------------------- image folders
def _decode(raw: bytes, where: str, channels: int) -> np.ndarray:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(raw))
        img = img.convert("RGB" if channels == 3 else "L")
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{where}: cannot decode image ({e})") from None
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _balanced(entries: list, limit: int | None) -> list:
    """Sort by (class, file name); with ``limit``, keep a class-balanced prefix: the k-th image of
    every class before the (k+1)-th of any, so a subset has all classes in equal measure."""
    entries = sorted(entries, key=lambda e: (e[0], e[1]))
    if not limit:
        return entries
    rank: dict[str, int] = {}
    keyed = []
    for e in entries:
        rank[e[0]] = rank.get(e[0], -1) + 1
        keyed.append((rank[e[0]], e[0], e))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return sorted((e for _, _, e in keyed[:limit]), key=lambda e: (e[0], e[1]))


def load_image_folder(root: str | Path, split: str = "train", channels: int = 3,
                      limit: int | None = None) -> ImageSet:
    """``<root>/<split>/<class>/*.png|jpg`` (a folder or a .tar/.tar.gz archive of one).

    ``limit`` keeps a class-balanced subset of ``limit`` images (see :func:`_balanced`)."""
    root = Path(root)
    entries: list[tuple[str, str, bytes | Path]] = []  # (class, name, content or path)
    if root.is_file() and (root.suffix in (".tar", ".gz", ".tgz")):
        with tarfile.open(root) as tar:
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if (m.isfile() and len(parts) >= 3 and parts[-3] == split
                        and Path(m.name).suffix.lower() in IMAGE_SUFFIXES):
                    entries.append((parts[-2], parts[-1], m.name))
        entries = _balanced(entries, limit)
        # a compressed archive is read front to back once: random access would re-decompress
        wanted = {name: i for i, (_, _, name) in enumerate(entries)}
        content: dict[int, bytes] = {}
        with tarfile.open(root, "r|*") as stream:
            for m in stream:
                if m.name in wanted:
                    content[wanted[m.name]] = stream.extractfile(m).read()
        entries = [(c, n, content[i]) for i, (c, n, _) in enumerate(entries)]
    elif (root / split).is_dir():
        for cdir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for f in sorted(cdir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    entries.append((cdir.name, f.name, f))
        entries = _balanced(entries, limit)
    else:
        raise DataError(f"no image folder {root / split} (expected <root>/<split>/<class>/*.png)")
    if not entries:
        raise DataError(f"{root}: no images under split {split!r}")
    classes = sorted({c for c, _, _ in entries})
    arrays = [_decode(src if isinstance(src, bytes) else src.read_bytes(), f"{root}:{c}/{n}",
                      channels) for c, n, src in entries]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"{root}: images differ in size: {sorted(shapes)[:3]}")
    labels = torch.tensor([classes.index(c) for c, _, _ in entries])
    return ImageSet(torch.from_numpy(np.stack(arrays)), labels, root.name, split)


# ------------------------------------------------------------------------------------------ npz
def _npz_array(z, key: str, path: Path) -> np.ndarray:
    """One array of an .npz opened with allow_pickle=False (an object array is refused here)."""
    try:
        return z[key]
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}:{key}: cannot read ({e})") from None


def load_npz(path: str | Path, split: str = "train") -> ImageSet:
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)  # an object array in a .npz is a pickle
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read as .npz ({e})") from None
    key = next((k for k in ("images", "x", "arr_0") if k in z.files), None)
    if key is None:
        raise DataError(f"{path}: no 'images', 'x' or 'arr_0' array (found {z.files})")
    arr = _npz_array(z, key, path)
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise DataError(f"{path}:{key}: expected 4-d uint8 images, got {arr.shape} {arr.dtype}")
    if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.shape[1] not in (1, 3):
        raise DataError(f"{path}:{key}: expected 1 or 3 channels, got shape {arr.shape}")
    lab_key = next((k for k in ("labels", "y") if k in z.files), None)
    labels = torch.from_numpy(_npz_array(z, lab_key, path).astype(np.int64)) if lab_key else None
    if labels is not None and len(labels) != len(arr):
        raise DataError(f"{path}: {len(arr)} images but {len(labels)} labels")
    return ImageSet(torch.from_numpy(np.ascontiguousarray(arr)), labels, path.stem, split)
