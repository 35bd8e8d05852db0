"""Plug-ins: installed distributions that add paths, couplings, solvers, metrics, datasets or model
kinds through Python entry points in the group ``fmbench.plugins``.

An entry point names a module (importing it runs its ``@PATHS.register(...)``-style decorators,
the same ones the built-ins use) or a callable (called once with no arguments, to register what it
wants). In a plug-in's ``pyproject.toml``::

    [project.entry-points."fmbench.plugins"]
    spiral = "my_fm_extras.components"

Every installed plug-in is loaded once per process, on the first suite parsed or the first
registry lookup that misses (so worker processes find plug-in components too). A plug-in that
fails to load is reported by ``fmbench list plugins`` and in a warning, and does not stop fmbench;
a suite that needs it says so (``[suite] plugins = ["spiral"]``) and then fails with the plug-in's
error. Registrations are credited to the plug-in's distribution (``fmbench list`` shows origins)
and the plug-ins' names, distributions and versions are recorded in run.json.
"""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass
from importlib import metadata

from fmbench.registry import registering_as, restore, snapshot

GROUP = "fmbench.plugins"
log = logging.getLogger("fmbench")


@dataclass(frozen=True)
class Plugin:
    """One entry point of the group and what loading it gave."""

    name: str  # the entry point's name: what a suite's ``plugins`` lists
    value: str  # ``module`` or ``module:callable``
    distribution: str | None
    version: str | None
    error: str | None = None  # why it did not load (None: loaded)

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self) -> dict:
        return {"name": self.name, "entry_point": self.value, "distribution": self.distribution,
                "version": self.version, "loaded": self.ok, "error": self.error}


_LOADED: dict[str, Plugin] | None = None
_LOADING = False


def _load_one(ep: metadata.EntryPoint) -> Plugin:
    dist = getattr(ep, "dist", None)
    dist_name = dist.metadata["Name"] if dist is not None else None
    version = dist.version if dist is not None else None
    origin = f"plugin {dist_name or ep.name}"
    before = snapshot()
    try:
        with registering_as(origin):
            obj = ep.load()
            if callable(obj) and not isinstance(obj, types.ModuleType):
                obj()
    except Exception as e:  # noqa: BLE001 - a broken plug-in is reported, fmbench goes on
        error = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        removed = restore(before)  # what it registered before failing goes too
        log.warning("plug-in %r (%s) did not load: %s%s", ep.name, ep.value, error,
                    f" (its {', '.join(removed)} withdrawn)" if removed else "")
        return Plugin(ep.name, ep.value, dist_name, version, error)
    return Plugin(ep.name, ep.value, dist_name, version)


def load_plugins() -> dict[str, Plugin]:
    """Load every installed plug-in once (later calls return the same table; a call made while
    plug-ins are loading, e.g. by a plug-in's own lookup, returns what is loaded so far)."""
    global _LOADED, _LOADING
    if _LOADED is not None:
        return _LOADED
    if _LOADING:
        return {}
    _LOADING = True
    try:
        import fmbench.builtins  # noqa: F401  (built-ins first: a plug-in may not take their names)

        found: dict[str, Plugin] = {}
        eps = sorted(metadata.entry_points(group=GROUP), key=lambda e: (e.name, e.value))
        for ep in eps:
            if ep.name in found:  # two distributions declaring one name: the first one wins
                log.warning("plug-in name %r is declared twice (%s, %s); %s is ignored",
                            ep.name, found[ep.name].value, ep.value, ep.value)
                continue
            found[ep.name] = _load_one(ep)
        _LOADED = found
    finally:
        _LOADING = False
    return _LOADED


def missing(required: tuple[str, ...]) -> list[str]:
    """For each required plug-in that is not installed or did not load, why (empty: all fine)."""
    plugins = load_plugins()
    out = []
    for name in required:
        p = plugins.get(name)
        if p is None:
            known = ", ".join(sorted(plugins)) or "none"
            out.append(f"plug-in {name!r} is not installed (installed plug-ins: {known}; install "
                       f"the distribution that declares an entry point {name!r} in the group "
                       f"{GROUP!r})")
        elif not p.ok:
            out.append(f"plug-in {name!r} ({p.distribution} {p.version}) failed to load: "
                       f"{p.error}")
    return out


def records() -> list[dict]:
    """run.json's ``plugins``: every installed plug-in, loaded or not."""
    return [p.record() for p in load_plugins().values()]
