"""Validation of suite tables: one helper per rule, each checking a value's type before using it.

:class:`Validator` is bound to one file; every problem is a :class:`SuiteError` naming the file,
the key (``path[2].sigma``) and what is allowed, in a message bounded in length however large,
deep or strange the offending value is (values are shown with a length- and depth-limited repr).
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import unicodedata
from dataclasses import dataclass, fields, replace
from pathlib import Path

from fmbench.registry import Registry, UnknownNameError


class SuiteError(ValueError):
    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


class FieldError(ValueError):
    """A config dataclass refusing one of its settings: ``path`` names it (``("channels",)``,
    ``("thresholds", "w2")``), ``message`` says what is allowed (``str()``: ``channels: must be
    …``). :meth:`Validator.bind` reports it at that key of the suite's table."""

    def __init__(self, path: str | tuple, message: str):
        self.path = (path,) if isinstance(path, str) else tuple(path)
        self.message = message
        super().__init__(f"{'.'.join(map(str, self.path))}: {message}")


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``Range(1)`` is >= 1, ``Range(0, lo_open=True)`` > 0,
    ``Range(0, 1, hi_open=True)`` in [0, 1)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x) -> bool:
        below = self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo)
        above = self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi)
        return not (below or above)

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{self.lo}, "
                    f"{self.hi}{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        return f"{'<' if self.hi_open else '<='} {self.hi}"


def check_ranges(obj, ranges: dict[str, Range]) -> None:
    """FieldError for the first field of the dataclass ``obj`` outside its range (a config's
    ``__post_init__`` calls this with the ranges declared beside it)."""
    for name, r in ranges.items():
        x = getattr(obj, name)
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise FieldError(name, f"must be a number, got {short_repr(x)}")
        if x not in r:
            raise FieldError(name, f"must be {r}, got {short_repr(x)}")


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
INT64 = (-(2**63), 2**63 - 1)  # TOML integers are 64-bit (the spec); tomllib accepts any size
SEED_MAX = 2**32 - 1
SUITE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SUITE_NAME_MAX = 64
TASK_NAME_MAX = 100
STRICT_ENV = "FMBENCH_STRICT_SUITE_ERRORS"  # "1": unexpected exceptions propagate (tests)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _ShortRepr(reprlib.Repr):
    """``repr`` bounded in length and depth: safe for huge strings, lists and deep nesting."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 2, 60, 60, 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 5

    def repr_int(self, x, level):
        if x.bit_length() > 128:  # repr() refuses ints beyond 4300 digits
            return f"<integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


short_repr = _ShortRepr().repr


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def join_key(key: str, part) -> str:
    """``key.part``, quoting a part that is not a short bare TOML key (newlines, 10 kB names)."""
    part = part if isinstance(part, str) and _BARE_KEY.fullmatch(part) else short_repr(part)
    return f"{key}.{part}" if key else part


def unknown_name(registry: Registry, value: str) -> str:
    """"unknown <kind> 'x'. Did you mean …? Known <kind>s: …" (a long name clipped)."""
    clipped = value if len(value) <= 60 else value[:60] + "…"
    return str(UnknownNameError(registry.kind, clipped, registry.names()))


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


class Validator:
    """Validation helper bound to one file: each rule here is written once and checks the type
    of a value before using it."""

    def __init__(self, file: str):
        self.file = file

    def err(self, key: str, msg: str) -> SuiteError:
        return SuiteError(self.file, key, msg)

    def table(self, d, key: str, allowed: set[str] | None = None,
              required: set[str] = frozenset()) -> dict:
        """``d`` must be a table; ``allowed`` None accepts any key (checked later)."""
        if not isinstance(d, dict):
            raise self.err(key, f"must be a table, got {short_repr(d)}")
        for k in d if allowed is not None else ():
            if k not in allowed:
                close = difflib.get_close_matches(str(k)[:100], sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.err(join_key(key, k),
                               f"unknown key{hint}; allowed: {', '.join(sorted(allowed))}")
        for k in sorted(required):
            if k not in d:
                raise self.err(join_key(key, k), "is required")
        return d

    def tables(self, value, key: str) -> list[dict]:
        """An array of tables (``[[key]]`` sections), each checked to be a table."""
        if isinstance(value, dict):
            raise self.err(key, f"must be a list of tables: write [[{key}]], not [{key}]")
        items = self.list_of(value, key, allow_scalar=False)
        return [self.table(x, f"{key}[{i}]") for i, x in enumerate(items)]

    def scalar(self, value, key: str, typ: type, lo=None, hi=None, lo_open=False):
        ok = isinstance(value, typ) and not (typ is not bool and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
            try:
                value = float(value)
            except OverflowError:
                raise self.err(key, f"must be a finite number, got {short_repr(value)}") from None
        if not ok:
            raise self.err(key, f"must be {_TYPE_NAMES[typ]}, got {short_repr(value)}")
        if typ is float and not math.isfinite(value):
            raise self.err(key, f"must be a finite number, got {value!r}")
        if typ is int and not INT64[0] <= value <= INT64[1]:
            raise self.err(key, f"must be a 64-bit integer (as TOML allows), got {short_repr(value)}")
        allowed = Range(lo, hi, lo_open)
        if value not in allowed:
            raise self.err(key, f"must be {allowed}, got {short_repr(value)}")
        return value

    def choice(self, value, key: str, choices) -> str:
        """A string out of a fixed set (checked as a string first: lists are unhashable)."""
        if not isinstance(value, str) or value not in choices:
            *rest, last = map(repr, sorted(choices))
            allowed = f"{', '.join(rest)} or {last}" if rest else last
            raise self.err(key, f"must be {allowed}, got {short_repr(value)}")
        return value

    def name(self, value, key: str, registry: Registry, extra: tuple[str, ...] = ()):
        if not isinstance(value, str):
            raise self.err(key, f"must be a string, got {short_repr(value)}")
        if value in extra or value in registry:
            return value
        raise self.err(key, unknown_name(registry, value))

    def bind(self, cls: type, table, key: str, skip: frozenset[str] = frozenset(),
             presets: dict | None = None, given: dict | None = None):
        """``table`` bound to the frozen dataclass ``cls``: its keys are the class's fields (plus
        ``skip``, which the caller reads, and ``preset`` when there are ``presets``), each value
        checked against its field's type (see :func:`field_type`); fields not given come from
        the preset, else the class's defaults; ``given``: values the caller built (nested
        tables, read under ``skip``). The class checks the values itself (its
        ``__post_init__``): a :class:`FieldError` it raises is reported at that field's key,
        another ValueError at ``key``."""
        types = {f.name: f for f in fields(cls)}
        self.table(table, key, {*types, *skip, *(("preset",) if presets else ())})
        base = None
        if presets and "preset" in table:
            base = presets[self.choice(table["preset"], join_key(key, "preset"), presets)]
        args = {k: self.field_value(val, join_key(key, k), types[k])
                for k, val in table.items() if k in types and k not in skip}
        args.update(given or {})
        try:
            return cls(**args) if base is None else replace(base, **args)
        except FieldError as e:
            where = key
            for part in e.path:
                where = join_key(where, part)
            raise self.err(where, one_line(e.message)) from None
        except ValueError as e:
            raise self.err(key, one_line(e)) from None

    def field_value(self, value, key: str, f):
        """A value for the dataclass field ``f``: a scalar of its type, a list for a
        ``tuple[T, ...]`` field (given as a TOML array), a table for a ``dict[str, T]`` one."""
        container, typ = field_type(f.type)
        if container == "tuple":
            if not isinstance(value, list):
                raise self.err(key, f"must be a list of {_PLURAL[typ]}, got {short_repr(value)}")
            return tuple(self.scalar(x, key, typ) for x in value)
        if container == "dict":
            if not isinstance(value, dict):
                what = f.metadata.get("entries", f"name = {_TYPE_NAMES[typ].split()[-1]}")
                raise self.err(key, f"must be a table of {what}, got {short_repr(value)}")
            return {k: self.scalar(x, join_key(key, k), typ) for k, x in value.items()}
        return self.scalar(value, key, typ)

    def list_of(self, value, key: str, allow_scalar: bool = True) -> list:
        if isinstance(value, list):
            if not value:
                raise self.err(key, "must not be empty")
            return value
        if allow_scalar:
            return [value]
        raise self.err(key, f"must be a list, got {short_repr(value)}")

    def label(self, value, key: str) -> str:
        """A task name: shown in tables and (sanitised) in file names."""
        value = self.scalar(value, key, str)
        if not 1 <= len(value) <= TASK_NAME_MAX or _has_control_chars(value):
            raise self.err(key, f"must be 1 to {TASK_NAME_MAX} characters without control "
                                f"characters (newline, tab, NUL, …), got {short_repr(value)}")
        return value

    def suite_name(self, value, key: str) -> str:
        """The suite name is the default output folder results/<name>: a name, not a path."""
        value = self.scalar(value, key, str)
        if len(value) > SUITE_NAME_MAX or not SUITE_NAME_RE.fullmatch(value):
            raise self.err(key, f"must be a plain name (it becomes the folder results/<name>): "
                                f"letters, digits, '.', '_' and '-', starting with a letter or "
                                f"digit, at most {SUITE_NAME_MAX} characters; got {short_repr(value)}")
        return value

    def file_path(self, value, key: str) -> str:
        """A path option (root, test): usable as a file name once ``~`` is expanded."""
        value = self.scalar(value, key, str)
        if "\0" in value:
            raise self.err(key, "must not contain a NUL character")
        try:
            Path(value).expanduser()
        except RuntimeError as e:  # ~user with no such user, or no home directory
            raise self.err(key, f"cannot expand {short_repr(value)}: {e}") from None
        return value


def annotation_type(ann) -> type:
    ann = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    return {"float": float, "int": int, "str": str, "bool": bool}.get(ann.split(" ")[0], str)


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
_CONTAINER = re.compile(r"(tuple)\[(\w+), \.\.\.\]|(dict)\[str, (\w+)\]")


def field_type(ann) -> tuple[str, type]:
    """("scalar" | "tuple" | "dict", value type) of a config field's annotation: ``int``,
    ``float | None``, ``str``, ``bool``; ``tuple[int, ...]``; ``dict[str, float]``."""
    text = ann if isinstance(ann, str) else ann.__name__ if isinstance(ann, type) else str(ann)
    m = _CONTAINER.fullmatch(text)
    if m:
        return (m[1] or m[3]), annotation_type(m[2] or m[4])
    return "scalar", annotation_type(text)
