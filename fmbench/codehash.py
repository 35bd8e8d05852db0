"""Digests of the code that defines a component: what model keys hash instead of whole files.

``code_digest(obj)`` hashes the source of ``obj`` (a function, a class, or a registered record
such as a ``ModelKind`` whose fields hold functions) together with, transitively, every function
or class it refers to that is *own code*: defined in fmbench or in the package ``obj`` itself
comes from (a plug-in's package). References are read from the compiled code (global names and
attribute names, nested functions and lambdas included), so a helper called through a module
alias (``I.load_cifar10``) counts; simple module constants it names (numbers, strings, tuples)
count by value. Registries and other mutable objects are data, not code: a component looked up at
run time is hashed only where it is named as a root (the model key names the task's datasets,
the path, the coupling, the model kind and the training loop). Over-inclusion only costs a cache
miss; what a component's code actually runs is never left out unless it is reached through a
registry lookup or an object attribute, or is third-party code (whose version is recorded apart).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import types

_SIMPLE = (int, float, str, bytes, bool, type(None))
_MEMO: dict[int, tuple[object, str, tuple[str, ...]]] = {}


def _top(module_name: str | None) -> str:
    return (module_name or "").split(".")[0]


def _is_simple(v) -> bool:
    """Plain data: numbers, strings, and tuples, lists, sets and dicts of plain data."""
    if isinstance(v, dict):
        return all(_is_simple(k) and _is_simple(x) for k, x in v.items())
    return isinstance(v, _SIMPLE) or (isinstance(v, (tuple, list, set, frozenset))
                                      and all(_is_simple(x) for x in v))


def _canonical(v) -> str:
    """Plain data as text that does not depend on hash randomisation (sets and dicts sorted)."""
    if isinstance(v, dict):
        return "{" + ", ".join(sorted(f"{_canonical(k)}: {_canonical(x)}"
                                      for k, x in v.items())) + "}"
    if isinstance(v, (set, frozenset)):
        return "{" + ", ".join(sorted(_canonical(x) for x in v)) + "}"
    if isinstance(v, (tuple, list)):
        return f"{type(v).__name__}(" + ", ".join(_canonical(x) for x in v) + ")"
    return repr(v)


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # no source file (code made by exec): its bytecode instead
        code = getattr(obj, "__code__", None)
        return _bytecode(code) if code else repr(obj)


def _bytecode(code: types.CodeType) -> str:
    """The code object as text, without the memory addresses nested code objects repr with."""
    consts = [_bytecode(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return repr((code.co_code, consts, code.co_names))


def _codes(code: types.CodeType):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def _generated(fn: types.FunctionType) -> bool:
    """A method a dataclass generated (its effect follows from the class's own source)."""
    code = getattr(fn, "__wrapped__", fn).__code__
    return "__create_fn__" in getattr(code, "co_qualname", code.co_name)


def _functions_of(obj) -> list:
    """The functions whose code ``obj`` runs (a class: its own methods and properties)."""
    if isinstance(obj, types.FunctionType):
        return [obj]
    out = []
    for v in vars(obj).values():
        v = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v
        if isinstance(v, property):
            out += [f for f in (v.fget, v.fset, v.fdel) if f is not None]
        elif isinstance(v, types.FunctionType) and not _generated(v):
            out.append(v)
    return out


class _Walk:
    def __init__(self, own: set[str]):
        self.own, self.seen, self.parts = own, set(), []

    def is_own(self, v) -> bool:
        return _top(getattr(v, "__module__", None)) in self.own

    def visit(self, obj) -> None:
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if not isinstance(obj, (type, types.FunctionType)):  # a record
            self.record(obj)
            return
        self.parts.append(f"{obj.__module__}.{obj.__qualname__}\n{_source(obj)}")
        if isinstance(obj, type):
            self.parts += [f"{obj.__qualname__}.{k} = {_canonical(v)}" for k, v in vars(obj).items()
                           if _is_simple(v) and not k.startswith("__")]
            for base in obj.__mro__[1:]:
                if self.is_own(base):
                    self.visit(base)
            for fn in _functions_of(obj):  # methods by their own source too: a class's
                self.visit(fn)  # source is not found when its module is not in sys.modules
            return
        self.references(obj)

    def record(self, obj) -> None:
        """A dataclass record (a ``ModelKind``) by what it runs: its type's own methods and the
        functions and classes in its fields (their packages count as own: a plug-in's record),
        not its list of fields, so a new field of the record type keeps every key. Another
        object: its type."""
        if not dataclasses.is_dataclass(obj):
            self.visit(type(obj))
            return
        for fn in _functions_of(type(obj)):
            self.visit(fn)
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, (type, types.FunctionType)):
                self.own.add(_top(v.__module__))
                self.visit(v)

    def references(self, fn: types.FunctionType) -> None:
        names = {n for code in _codes(fn.__code__) for n in code.co_names}
        scopes = [fn.__globals__]
        scopes += [v for v in fn.__globals__.values()
                   if isinstance(v, types.ModuleType) and _top(v.__name__) in self.own]
        for i, d in enumerate(fn.__defaults__ or ()):
            self.value(f"<default {i} of {fn.__qualname__}>", d)
        for k, d in sorted((fn.__kwdefaults__ or {}).items()):
            self.value(f"<default {k} of {fn.__qualname__}>", d)
        for cell in fn.__closure__ or ():
            try:
                self.value(f"<closure of {fn.__qualname__}>", cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        for name in sorted(n for n in names if not n.startswith("__")):
            for scope in scopes:
                space = scope if isinstance(scope, dict) else vars(scope)
                if name in space:
                    self.value(name, space[name])

    def value(self, name: str, v) -> None:
        if isinstance(v, functools.partial):
            self.value(f"<partial {name}>", v.func)
            for i, a in enumerate(v.args):
                self.value(f"<partial {name} argument {i}>", a)
            for k, a in sorted(v.keywords.items()):
                self.value(f"<partial {name} argument {k}>", a)
        elif isinstance(v, (type, types.FunctionType)) and self.is_own(v):
            self.visit(v)
        elif _is_simple(v):
            self.parts.append(f"{name} = {_canonical(v)}")


def _walked(obj) -> tuple[object, str, tuple[str, ...]]:
    memo = _MEMO.get(id(obj))
    if memo is None or memo[0] is not obj:
        inner = obj.func if isinstance(obj, functools.partial) else obj
        mod = inner.__module__ if isinstance(inner, (type, types.FunctionType)) else \
            type(inner).__module__
        walk = _Walk({"fmbench", _top(mod)})
        if isinstance(obj, functools.partial):
            walk.value("<root>", obj)
        else:
            walk.visit(obj)
        parts = sorted(set(walk.parts))
        memo = _MEMO[id(obj)] = (obj, hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16],
                                 tuple(p.split("\n", 1)[0] for p in parts))
    return memo


def code_digest(*objs) -> str:
    """A 16-hex-digit digest of the own code behind ``objs`` (module docstring)."""
    return hashlib.sha256(" ".join(_walked(o)[1] for o in objs).encode()).hexdigest()[:16]


def code_parts(*objs) -> list[str]:
    """What :func:`code_digest` hashes, one line each: qualified names of functions and classes,
    ``name = value`` of constants (to see why a key changed, and for tests)."""
    return sorted({p for o in objs for p in _walked(o)[2]})
