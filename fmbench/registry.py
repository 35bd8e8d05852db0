"""One generic registry: register by decorator, look up by name, did-you-mean errors.

Every pluggable kind of object in fmbench (paths, couplings, solvers, metrics, datasets, model
kinds) lives in a :class:`Registry`. Registering the same name twice is an error; looking up an
unknown name raises :class:`UnknownNameError` whose message lists the closest known names. Each
entry remembers its origin: ``built-in``, the plug-in distribution whose entry point registered it
(fmbench.plugins), or the module that did. A lookup that misses loads the installed plug-ins once
and looks again, so a worker process that never parsed the suite still finds plug-in components.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
BUILT_IN = "built-in"
_ORIGIN: contextvars.ContextVar[str | None] = contextvars.ContextVar("fmbench_origin", default=None)


@contextlib.contextmanager
def registering_as(origin: str):
    """Registrations inside this block are credited to ``origin`` (a plug-in's distribution)."""
    token = _ORIGIN.set(origin)
    try:
        yield
    finally:
        _ORIGIN.reset(token)


def _origin_of(obj) -> str:
    explicit = _ORIGIN.get()
    if explicit:
        return explicit
    module = getattr(obj, "__module__", None) or ""
    if not isinstance(obj, type) and not callable(obj):  # a record: where its functions live
        funcs = [v for v in vars(obj).values() if callable(v)] if hasattr(obj, "__dict__") else []
        module = getattr(funcs[0], "__module__", module) if funcs else module
    return BUILT_IN if module.split(".")[0] == "fmbench" else f"module {module or '?'}"


class UnknownNameError(KeyError):
    """Raised when a name is not registered; ``str()`` gives a did-you-mean message."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        self.message = f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}."
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


_ALL: list[Registry] = []  # every registry made, for snapshots around a plug-in's loading


def snapshot() -> list[tuple[Registry, set[str]]]:
    """The names every registry holds now (see :func:`restore`)."""
    return [(r, set(r._items)) for r in _ALL]


def restore(snap: list[tuple[Registry, set[str]]]) -> list[str]:
    """Remove what was registered since ``snap`` (a plug-in that failed half-way leaves
    nothing behind); returns the names removed."""
    removed = []
    for reg, names in snap:
        for name in set(reg._items) - names:
            del reg._items[name]
            reg._origins.pop(name, None)
            removed.append(f"{reg.kind} {name!r}")
    return sorted(removed)


class Registry(Generic[T]):
    """A named collection of factories (classes or functions) of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        _ALL.append(self)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` adds the decorated object under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered "
                                 f"(by {self._origins[name]})")
            self._items[name] = obj
            self._origins[name] = _origin_of(obj)
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            from fmbench.plugins import load_plugins

            load_plugins()  # once per process; a no-op afterwards (and while loading)
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def origin(self, name: str) -> str:
        """``built-in``, ``plugin <distribution>`` or ``module <name>``: who registered it."""
        self.get(name)
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items and isinstance(name, str):
            from fmbench.plugins import load_plugins

            load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]
