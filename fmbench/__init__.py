"""fmbench: a benchmarking and evaluation harness for flow-matching generative models.

The Python API (README "Python API"): :func:`run` runs a suite, :func:`evaluate` scores a network
you have, :func:`load_suite` reads and checks a suite file; each returns what the command line
would write (the long-format results table). Imported lazily: ``import fmbench`` stays cheap.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("fmbench")
except metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "evaluate", "load_suite", "run"]


def __getattr__(name: str):
    if name in ("run", "evaluate"):
        from fmbench import api

        return getattr(api, name)
    if name == "load_suite":
        from fmbench.suite import load_suite

        return load_suite
    raise AttributeError(f"module 'fmbench' has no attribute {name!r}")
