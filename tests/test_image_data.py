"""Image loaders on small fixtures written in the real on-disk formats."""

import builtins
import gzip
import io
import itertools
import os
import pickle
import pickletools
import re
import struct
import subprocess
import tarfile
import warnings
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


def _write_batch_files(root: Path, raws: dict[str, bytes], as_archive: bool) -> Path:
    """The given batch files as cifar-10-python.tar.gz or as cifar-10-batches-py/; returns the file
    (archive) or folder the loader will name in its messages."""
    if as_archive:
        with tarfile.open(root / I.CIFAR10_ARCHIVE, "w:gz") as tar:
            for name, raw in raws.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        return root / I.CIFAR10_ARCHIVE
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name, raw in raws.items():
        (folder / name).write_bytes(raw)
    return folder


def _write_cifar(root: Path, as_archive: bool, protocol: int | None = None) -> dict:
    batches = {f"data_batch_{i}": _cifar_batch(4, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(3, 9)
    raws = {name: pickle.dumps(d, protocol=protocol) for name, d in batches.items()}
    _write_batch_files(root, raws, as_archive)
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


def test_cifar10_python3_protocol_5(tmp_path):
    """Protocol 5 stores arrays through numpy's _frombuffer: the other allowed route."""
    batches = _write_cifar(tmp_path, as_archive=False, protocol=5)
    train = I.load_cifar10(tmp_path, "train")
    want = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    assert np.array_equal(train.images.numpy(), want.reshape(-1, 3, 32, 32))


# ------------------------------------------- Python 2 cPickle, protocol 2: the official CIFAR-10 files
class _Py2Writer:
    """Writes pickle opcodes the way Python 2's cPickle did for the official batches: byte strings
    are py2 ``str`` (SHORT_BINSTRING / BINSTRING), globals are GLOBAL lines, and every memoizable
    object is followed by a BINPUT."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self._memo = itertools.count(1)

    def op(self, *chunks: bytes) -> "_Py2Writer":
        self.out += b"".join(chunks)
        return self

    def put(self) -> "_Py2Writer":
        return self.op(b"q", bytes([next(self._memo)]))  # BINPUT

    def str_(self, raw: bytes) -> "_Py2Writer":
        if len(raw) < 256:
            return self.op(b"U", bytes([len(raw)]), raw).put()  # SHORT_BINSTRING
        return self.op(b"T", struct.pack("<i", len(raw)), raw).put()  # BINSTRING

    def int_(self, v: int) -> "_Py2Writer":
        if 0 <= v < 256:
            return self.op(b"K", bytes([v]))  # BININT1
        if 0 <= v < 65536:
            return self.op(b"M", struct.pack("<H", v))  # BININT2
        return self.op(b"J", struct.pack("<i", v))  # BININT

    def global_(self, module: str, name: str) -> "_Py2Writer":
        return self.op(b"c", f"{module}\n{name}\n".encode()).put()  # GLOBAL

    def u1_array(self, a: np.ndarray) -> "_Py2Writer":
        """_reconstruct(ndarray, (0,), 'b') + BUILD (1, shape, dtype('u1'), False, raw bytes), the
        dtype being dtype('u1', 0, 1) + BUILD (3, '|', None, None, None, -1, -1, 0)."""
        self.global_("numpy.core.multiarray", "_reconstruct").global_("numpy", "ndarray")
        self.int_(0).op(b"\x85").str_(b"b").op(b"\x87", b"R").put()  # TUPLE1, TUPLE3, REDUCE
        self.op(b"(").int_(1).int_(a.shape[0]).int_(a.shape[1]).op(b"\x86")  # MARK ... TUPLE2
        self.global_("numpy", "dtype").str_(b"u1").int_(0).int_(1).op(b"\x87", b"R").put()
        self.op(b"(").int_(3).str_(b"|").op(b"NNN").int_(-1).int_(-1).int_(0).op(b"t", b"b")
        return self.op(b"\x89").str_(a.tobytes()).op(b"t", b"b")  # NEWFALSE, raw, TUPLE, BUILD

    def str_list(self, items: list[bytes]) -> "_Py2Writer":
        self.op(b"]").put().op(b"(")  # EMPTY_LIST, MARK
        for it in items:
            self.str_(it)
        return self.op(b"e")  # APPENDS

    def int_list(self, items: list[int]) -> "_Py2Writer":
        self.op(b"]").put().op(b"(")
        for it in items:
            self.int_(it)
        return self.op(b"e")


def _py2_cifar_batch(data: np.ndarray, labels: list[int], name: bytes) -> bytes:
    w = _Py2Writer().op(b"}").put().op(b"(")  # EMPTY_DICT, MARK
    w.str_(b"data").u1_array(data)
    w.str_(b"labels").int_list(labels)
    w.str_(b"batch_label").str_(b"training batch " + name)
    w.str_(b"filenames").str_list([b"img_%d_%s.png" % (i, name) for i in range(len(labels))])
    return bytes(w.op(b"u", b".").out)  # SETITEMS, STOP


def test_py2_writer_emits_the_official_opcodes():
    rng = np.random.default_rng(0)
    raw = _py2_cifar_batch(rng.integers(0, 256, (2, 3072), dtype=np.uint8), [3, 7], b"1")
    pickletools.dis(raw, out=io.StringIO())  # a well-formed stream (marks, memo, STOP)
    ops = [op.name for op, _, _ in pickletools.genops(raw)]
    assert {"SHORT_BINSTRING", "BINSTRING", "GLOBAL", "REDUCE", "BUILD", "NEWFALSE"} <= set(ops)
    assert not {"BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINBYTES", "STACK_GLOBAL"} & set(ops)
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw


@pytest.mark.parametrize("as_archive", [True, False])
def test_cifar10_official_py2_protocol2_format_still_loads(tmp_path, as_archive):
    """The format of the real files (Python 2 cPickle, numpy.core globals, py2 str → latin1) loads
    to the exact pixels and labels, without touching numpy's deprecated numpy.core alias."""
    rng = np.random.default_rng(7)
    data = {n: rng.integers(0, 256, (3, 3072), dtype=np.uint8)
            for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    labels = {n: rng.integers(0, 10, 3).tolist() for n in data}
    raws = {n: _py2_cifar_batch(data[n], labels[n], n[-1:].encode()) for n in data}
    _write_batch_files(tmp_path, raws, as_archive)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, test = I.load_cifar10(tmp_path, "train"), I.load_cifar10(tmp_path, "test")
    want = np.concatenate([data[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(train.images.numpy(), want)
    assert train.labels.tolist() == sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])
    assert np.array_equal(test.images.numpy(), data["test_batch"].reshape(-1, 3, 32, 32))
    assert test.labels.tolist() == labels["test_batch"]


# ------------------------------------------------------------------- crafted batches run no code
class _Payload:
    """Unpickles to a call of ``func(*args)`` (what a crafted batch would do)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {
        "os.system": _Payload(os.system, f"touch '{marker}'"),
        "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.call"])
def test_crafted_payload_is_refused_and_never_runs(tmp_path, kind):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_payloads(control)[kind]))  # plain pickle really runs it
    assert control.exists()
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[kind]
    refused = {"os.system": r"(posix|os|nt)\.system", "builtins.exec": r"builtins\.exec",
               "subprocess.call": r"subprocess\.call"}[kind]
    for as_archive in (False, True):
        root = tmp_path / f"archive={as_archive}"
        root.mkdir()
        batch = {"data": payload, "labels": [0]}
        good = pickle.dumps(_cifar_batch(1, 0))
        raws = {"data_batch_1": pickle.dumps(batch), **{f"data_batch_{i}": good for i in range(2, 6)}}
        where = _write_batch_files(root, raws, as_archive)
        with pytest.raises(I.DataError, match=rf"refusing to load {refused} from \S*{where.name}"
                                              r"\S*data_batch_1: a CIFAR-10 batch holds only"):
            I.load_cifar10(root, "train")
        assert not marker.exists()


def _raw_py2(build) -> bytes:
    return bytes(build(_Py2Writer()).op(b".").out)


SMUGGLED = {
    # numpy's real _reconstruct, but with numpy.dtype (not ndarray) as the subtype to instantiate
    "reconstruct-dtype-subtype": (lambda w: w.global_("numpy.core.multiarray", "_reconstruct")
                                  .global_("numpy", "dtype").int_(0).op(b"\x85").str_(b"b")
                                  .op(b"\x87", b"R"), "only a plain numpy.ndarray"),
    # calling the allowed numpy.ndarray global directly instead of passing it to _reconstruct
    "ndarray-called": (lambda w: w.global_("numpy", "ndarray").int_(4).op(b"\x85", b"\x85", b"R"),
                       r"a call of numpy\.ndarray"),
    # BUILD on an allowed global (would set attributes on it)
    "build-on-global": (lambda w: w.global_("numpy", "dtype").op(b"}", b"b"),
                        r"a BUILD on numpy\.dtype"),
    # an array of Python objects
    "object-dtype": (lambda w: w.global_("numpy", "dtype").str_(b"O8").int_(0).int_(1)
                     .op(b"\x87", b"R"), "object dtype 'O8'"),
    # the shared uint8 descriptor (copy=0) for a BUILD to modify
    "shared-dtype": (lambda w: w.global_("numpy", "dtype").str_(b"u1").int_(0).int_(0)
                     .op(b"\x87", b"R"), r"numpy\.dtype\('u1', 0, 0\)"),
}


@pytest.mark.parametrize("kind", list(SMUGGLED))
def test_allowed_looking_routes_are_refused(tmp_path, kind):
    build, message = SMUGGLED[kind]
    folder = _write_batch_files(tmp_path, {"test_batch": _raw_py2(build)}, as_archive=False)
    with pytest.raises(I.DataError, match=rf"refusing .*{message}.* in {re.escape(str(folder))}/"):
        I.load_cifar10(tmp_path, "test")


@pytest.mark.parametrize("func,name", [(np.load, "numpy.load"), (np.frombuffer, "numpy.frombuffer"),
                                       (np.memmap, "numpy.memmap")])
def test_other_numpy_globals_are_refused(tmp_path, func, name):
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([_Payload(os.system, f"touch '{tmp_path / 'pwned'}'")], dtype=object))
    args = {"numpy.load": (str(evil), None, True), "numpy.frombuffer": (b"\0" * 3072, "u1"),
            "numpy.memmap": (str(evil),)}[name]
    batch = {"data": _Payload(func, *args), "labels": [0]}
    _write_batch_files(tmp_path, {"test_batch": pickle.dumps(batch)}, as_archive=False)
    with pytest.raises(I.DataError, match=rf"refusing to load {name} from"):
        I.load_cifar10(tmp_path, "test")
    assert not (tmp_path / "pwned").exists()


def test_object_array_from_python3_pickle_is_refused(tmp_path):
    batch = {"data": np.array([1, "x"], dtype=object), "labels": [0]}
    _write_batch_files(tmp_path, {"test_batch": pickle.dumps(batch)}, as_archive=False)
    with pytest.raises(I.DataError, match="refusing object dtype"):
        I.load_cifar10(tmp_path, "test")


@pytest.mark.parametrize("batch,message", [
    ([1, 2, 3], "expected a dict with 'data' and 'labels', found list"),
    ({"data": np.zeros((1, 3072), np.uint8)}, r"found \['data'\]"),
    ({"data": np.zeros((1, 3072), np.float32), "labels": [0]}, "float32, expected uint8 rows"),
    ({"data": np.zeros((2, 1000), np.uint8), "labels": [0, 1]}, r"\(2, 1000\) uint8"),
    ({"data": [[0] * 3072], "labels": [0]}, "'data' is a list"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but 1 labels"),
    ({"data": np.zeros((1, 3072), np.uint8), "labels": ["cat"]}, "list or 1-d array of ints"),
    ({"data": np.zeros((1, 3072), np.uint8), "labels": np.zeros(1, np.float64)}, "1-d array of ints"),
    (b"\x80\x04garbage", "not a CIFAR-10 python batch"),
])
def test_cifar10_batch_structure_is_checked(tmp_path, batch, message):
    raw = batch if isinstance(batch, bytes) else pickle.dumps(batch)
    folder = _write_batch_files(tmp_path, {"test_batch": raw}, as_archive=False)
    with pytest.raises(I.DataError, match=rf"{re.escape(str(folder))}/test_batch.*{message}"):
        I.load_cifar10(tmp_path, "test")


def test_npz_object_arrays_are_not_unpickled(tmp_path):
    np.savez(tmp_path / "obj.npz", images=np.array([_Payload(os.system, "true")], dtype=object))
    with pytest.raises(I.DataError, match="allow_pickle"):
        I.load_npz(tmp_path / "obj.npz")


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
