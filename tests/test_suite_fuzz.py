"""Fuzzing the suite parser: whatever a suite file holds, the answer is a Suite or one short
SuiteError naming the file — never another exception, never a traceback-sized message.

The safety net in ``parse_suite`` (unexpected exceptions → "bug in fmbench") is switched off here
(``FMBENCH_STRICT_SUITE_ERRORS=1``) so that a crash shows up as itself and gets fixed at its cause.
"""

import copy
import datetime
import math
import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmbench.suite import STRICT_ENV, Suite, SuiteError, load_suite, parse_suite

SUITES = sorted((Path(__file__).parent.parent / "suites").glob("*.toml"))
FILE = "fuzzed-suite.toml"
MAX_LINES, MAX_CHARS = 5, 2000
# FMBENCH_FUZZ_EXAMPLES=5000 for a long local session; the default keeps the file at ~10 s
# derandomized by default so that CI runs the same examples every time (a gate must not flake)
FAST = settings(max_examples=int(os.environ.get("FMBENCH_FUZZ_EXAMPLES", "60")), deadline=None,
                derandomize="FMBENCH_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# drawn as markers, built fresh when applied: cheap to print, and a later mutation of the document
# must not change a constant of the strategy (hypothesis would see flaky data generation)
DEEP, EMPTY_LIST, EMPTY_TABLE = "<3000-deep list>", "<empty list>", "<empty table>"
NAMES = ["gaussian", "8gaussians", "moons", "cifar10", "npz", "image-folder", "fashion-mnist",
         "icfm", "sm-vp", "ve", "entropic-ot", "exact-ot", "euler", "dopri5", "rk4", "w2", "fid",
         "kid", "bpd", "mlp", "unet", "tiny", "small", "adam", "noise", "velocity"]
KEYS = ["name", "target", "source", "root", "test", "kind", "preset", "steps", "nfe", "rtol",
        "sigma", "coupling", "seeds", "data_seed", "names", "thresholds", "channel_mult", "n_eval",
        "lr", "optimizer", "task", "path", "solver", "model", "metrics", "check", "training"]
ODD_STRINGS = ["../x", "/tmp/x", "a/b", "", "a\nb", "\x00", "~no-such-user-fmbench/x", "x" * 3000,
               "é" * 70]

scalars = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([2**70, -(2**70), 2**63, 2**63 - 1, 2**32, -1, 10**400]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0]),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS + NAMES),
    st.booleans(),
    st.just(datetime.date(2020, 1, 1)),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=10), st.just("k" * 500))
values = st.one_of(
    st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                  st.dictionaries(keys, inner, max_size=3)),
                 max_leaves=6),
    st.sampled_from([DEEP, EMPTY_LIST, EMPTY_TABLE]),
)


def _materialise(value):
    if value == DEEP:
        deep: list = []
        for _ in range(3000):
            deep = [deep]
        return deep
    return [] if value == EMPTY_LIST else {} if value == EMPTY_TABLE else value


def _nodes(obj, path=(), depth=6):
    """Paths to every value (root included), not descending deeper than ``depth``."""
    yield path
    if depth == 0:
        return
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _nodes(v, path + (k,), depth - 1)


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def _mutate(doc, op: str, path: tuple, value, key: str) -> None:
    """Apply one structural mutation in place (a no-op where it does not apply)."""
    node = _at(doc, path)
    if op == "add":
        if isinstance(node, dict):
            node[key] = _materialise(value)
        return
    if not path:
        return
    parent, k = _at(doc, path[:-1]), path[-1]
    if op == "delete":
        del parent[k]
    elif op == "replace":
        parent[k] = _materialise(value)
    elif op == "wrap":  # a table (or anything) into a list
        parent[k] = [node]
    elif op == "unwrap":  # a list (or table) into its first item
        if isinstance(node, list | dict) and node:
            parent[k] = node[0] if isinstance(node, list) else next(iter(node.values()))
    elif op == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(k)


def _assert_suite_or_short_error(call, file: str) -> None:
    try:
        result = call()
    except SuiteError as e:
        msg = str(e)
        assert msg.startswith(file), msg[:300]
        assert len(msg) <= MAX_CHARS and msg.count("\n") < MAX_LINES, msg[:300]
        assert e.file == file
    else:
        assert isinstance(result, Suite)


@pytest.fixture(autouse=True)
def _strict(monkeypatch):
    monkeypatch.setenv(STRICT_ENV, "1")


@pytest.mark.parametrize("suite_file", SUITES, ids=lambda p: p.stem)
@FAST
@given(data=st.data())
def test_structural_mutations_give_suite_or_short_suite_error(suite_file, data):
    doc = copy.deepcopy(_base(suite_file))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        op = data.draw(st.sampled_from(["delete", "replace", "replace", "wrap", "unwrap", "add",
                                        "rename"]), label="op")
        path = data.draw(st.sampled_from(list(_nodes(doc))), label="path")
        value = data.draw(values, label="value") if op in ("replace", "add") else None
        key = data.draw(keys, label="key") if op in ("add", "rename") else ""
        _mutate(doc, op, path, value, key)
    _assert_suite_or_short_error(lambda: parse_suite(doc, FILE), FILE)


_BASES: dict[Path, dict] = {}


def _base(file: Path) -> dict:
    if file not in _BASES:
        _BASES[file] = tomllib.loads(file.read_text())
    return _BASES[file]


SYNTAX = list(b'[]{}="\'\n#.,\\ 0123456789-+:eE_xtrufalsin') + [0xff, 0x00, 0xc3]


@st.composite
def _mutated_bytes(draw, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "dup_line"]))
        if op == "delete":
            del buf[i:i + draw(st.integers(1, 40))]
        elif op == "dup_line":
            start = buf.rfind(b"\n", 0, i) + 1
            end = buf.find(b"\n", i)
            line = buf[start:end if end >= 0 else len(buf)]
            buf[start:start] = line + b"\n"
        else:
            new = draw(st.one_of(st.lists(st.sampled_from(SYNTAX), min_size=1, max_size=6)
                                 .map(bytes),
                                 st.text(min_size=1, max_size=4).map(str.encode)))
            buf[i:i + (len(new) if op == "replace" else 0)] = new
    return bytes(buf)


@pytest.mark.parametrize("suite_file", SUITES, ids=lambda p: p.stem)
@FAST
@given(data=st.data())
def test_text_mutations_give_suite_or_short_suite_error(suite_file, data, tmp_path):
    f = tmp_path / FILE
    f.write_bytes(data.draw(_mutated_bytes(suite_file.read_bytes()), label="text"))
    _assert_suite_or_short_error(lambda: load_suite(f), str(f))


def test_mutation_helpers_reach_their_targets():
    """The fuzzer really produces the malformed shapes it is meant to (and leaves the base alone)."""
    doc = copy.deepcopy(_base(SUITES[0]))
    _mutate(doc, "replace", ("model",), 5, "")
    _mutate(doc, "wrap", ("suite",), None, "")
    _mutate(doc, "unwrap", ("task",), None, "")
    _mutate(doc, "add", (), DEEP, "x")
    assert doc["model"] == 5 and isinstance(doc["suite"], list) and isinstance(doc["task"], dict)
    assert isinstance(doc["x"], list) and isinstance(_base(SUITES[0])["suite"], dict)
    with pytest.raises(SuiteError):
        parse_suite(doc, FILE)
