"""A CIFAR-10 python batch, read without running code: a restricted unpickler whose allow-list
holds only numpy's array-rebuilding globals, each behind an argument check (any other global, an
object dtype or an odd array subtype is a :class:`~fmbench.image_data.DataError` naming the file),
then the batch's structure is checked (uint8 pixels of 3×32×32 images, integer labels 0–9).

A pickle can name any global to call; this reader resolves only the numpy globals an array in the
official format needs and refuses every other one, so a crafted batch cannot run code. The official
files were written by Python 2 cPickle (protocol 2, numpy.core names, byte strings as py2 str →
decoded as latin1).
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable

import numpy as np

from fmbench.image_data import DataError

_REFUSED_HINT = "a CIFAR-10 batch holds only plain containers and numpy arrays"
CIFAR_IMAGE_SIZE = 3 * 32 * 32


def _numpy_pickle_helpers() -> tuple[Callable, Callable]:
    """numpy's own ``_reconstruct`` (protocol ≤ 4 arrays) and ``_frombuffer`` (protocol 5)."""
    try:  # numpy ≥ 1.26 (the real module from numpy 2 on; numpy.core is a deprecated alias)
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    return _reconstruct, _frombuffer


class _Guarded:
    """An allowed numpy global as the unpickler hands it out: a call goes through ``check``, which
    validates the arguments before calling the real ``target``; BUILD (``__setstate__``) on it is
    refused, so a pickle cannot alter it."""

    __slots__ = ("name", "target", "_check", "_where")

    def __init__(self, name: str, target, check: Callable, where: str):
        self.name, self.target, self._check, self._where = name, target, check, where

    def __call__(self, *args):
        return self._check(self, *args)

    def refuse(self, what: str) -> DataError:
        return DataError(f"refusing {what} in {self._where}: {_REFUSED_HINT}")

    def __setstate__(self, state):
        raise self.refuse(f"a BUILD on {self.name}")


def _no_call(g: _Guarded, *args):
    """numpy.ndarray is only ever the subtype argument of _reconstruct, never called."""
    raise g.refuse(f"a call of {g.name}")


def _checked_reconstruct(g: _Guarded, subtype, shape, typecode):
    """``_reconstruct(ndarray, (0,), b'b')`` exactly: an empty plain array that BUILD then fills."""
    if not (isinstance(subtype, _Guarded) and subtype.target is np.ndarray):
        raise g.refuse(f"{g.name} of {getattr(subtype, 'name', type(subtype).__name__)} "
                       f"(only a plain numpy.ndarray is allowed)")
    if shape != (0,) or typecode not in (b"b", "b"):
        raise g.refuse(f"{g.name}{(shape, typecode)!r} (expected ((0,), b'b'))")
    return g.target(np.ndarray, shape, typecode)


def _checked_dtype(g: _Guarded, spec, *flags):
    """``dtype('u1', 0, 1)`` (align off, copy on: a fresh descriptor for BUILD to fill, never numpy's
    shared one); never an object dtype."""
    if not isinstance(spec, str) or flags != (0, 1):
        raise g.refuse(f"{g.name}{(spec, *flags)!r} (expected a type string, 0, 1)")
    dt = g.target(spec, *flags)
    if dt.hasobject:
        raise g.refuse(f"object dtype {spec!r} (arrays of Python objects are not pixel data)")
    return dt


def _checked_frombuffer(g: _Guarded, buf, dtype, shape, order, *axis_order):
    """Protocol-5 arrays: raw bytes, a checked dtype, a shape of ints."""
    if (not isinstance(buf, bytes | bytearray) or not isinstance(dtype, np.dtype) or dtype.hasobject
            or not isinstance(shape, tuple) or not all(type(n) is int for n in shape)
            or order not in ("C", "F", "K") or len(axis_order) > 1):
        raise g.refuse(f"{g.name} with arguments of types "
                       f"{[type(a).__name__ for a in (buf, dtype, shape, order, *axis_order)]}")
    return g.target(buf, dtype, shape, order, *axis_order)


def _allowed_globals() -> dict[tuple[str, str], tuple[object, Callable]]:
    reconstruct, frombuffer = _numpy_pickle_helpers()
    table: dict[tuple[str, str], tuple[object, Callable]] = {
        ("numpy", "ndarray"): (np.ndarray, _no_call),
        ("numpy", "dtype"): (np.dtype, _checked_dtype),
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = (reconstruct, _checked_reconstruct)
        table[(f"{core}.numeric", "_frombuffer")] = (frombuffer, _checked_frombuffer)
    return table


_ALLOWED_GLOBALS = _allowed_globals()


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain containers, strings and numbers, and numpy arrays through :class:`_Guarded`
    numpy globals; any other global is refused before it is even looked up."""

    def __init__(self, raw: bytes, where: str):
        super().__init__(io.BytesIO(raw), encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(f"refusing to load {module}.{name} from {self.where}: {_REFUSED_HINT}")
        target, check = allowed
        return _Guarded(f"{module}.{name}", target, check, self.where)


def _check_pixels(data, where: str) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise DataError(f"{where}: 'data' is a {type(data).__name__}, expected a uint8 numpy array")
    if data.dtype.hasobject:
        raise DataError(f"{where}: 'data' is an object array, expected uint8 pixels")
    if data.dtype != np.uint8 or data.ndim < 2 or math.prod(data.shape[1:]) != CIFAR_IMAGE_SIZE:
        raise DataError(f"{where}: 'data' is {data.shape} {data.dtype}, expected uint8 rows of "
                        f"{CIFAR_IMAGE_SIZE} = 3×32×32 pixels")
    return data.reshape(-1, 3, 32, 32)


def _check_labels(labels, n: int, where: str) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    else:
        ok = isinstance(labels, list | tuple) and all(type(v) is int for v in labels)
    if not ok:
        raise DataError(f"{where}: 'labels' must be a list or 1-d array of ints, got "
                        f"{type(labels).__name__}")
    if len(labels) != n:
        raise DataError(f"{where}: {n} images but {len(labels)} labels")
    try:
        return np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise DataError(f"{where}: a label does not fit in 64 bits") from None


def read_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one CIFAR-10 python batch."""
    try:
        d = _CifarUnpickler(raw, where).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any malformed stream gets the same message
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        found = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
        raise DataError(f"{where}: not a CIFAR-10 python batch (expected a dict with 'data' and "
                        f"'labels', found {found})")
    data = _check_pixels(d["data"], where)
    return data, _check_labels(d["labels"], len(data), where)
