"""``fmbench eval CHECKPOINT …``: the command line's options as a suite of one checkpoint model.

The suite is written as TOML text (the run's ``suite.toml``) and read by the same validator as
any suite file, so every option is checked, with the same messages, as ``[model]``,
``[[task]]``, ``[[path]]``, ``[[solver]]`` and ``[metrics]`` keys.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

from fmbench.validation import SuiteError

FILE = "<fmbench eval>"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else
                                                  ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _table(header: str, values: dict) -> str:
    lines = [header] + [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def parse_setting(text: str, option: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as TOML (``0.1``, ``true``, ``[1, 2]``, ``"x"``) or, where it
    is not TOML, as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SuiteError(FILE, option, f"expects KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    if not _plain(parsed):
        raise SuiteError(FILE, option, f"{key.strip()}: a number, true/false, a string or a "
                                       f"list of those, got {value.strip()!r}")
    return key.strip(), parsed


def _plain(v) -> bool:
    return isinstance(v, bool | int | float | str) or (isinstance(v, list)
                                                       and all(map(_plain, v)))


def parse_solver(text: str) -> dict:
    """``euler:100`` (a fixed-step method and its steps), ``dopri5`` (adaptive, default
    tolerances) or ``dopri5:1e-5`` (rtol = atol = 1e-5)."""
    from fmbench.solvers import SOLVERS

    name, _, arg = text.partition(":")
    if not arg:
        return {"name": name}
    try:
        number = float(arg)
    except ValueError:
        raise SuiteError(FILE, "--solver", f"expects NAME, NAME:STEPS or NAME:TOL, got "
                                           f"{text!r}") from None
    adaptive = name in SOLVERS and SOLVERS.get(name).adaptive
    if not adaptive and number.is_integer():
        return {"name": name, "steps": int(number)}
    return {"name": name, "rtol": number, "atol": number}


def _settings(pairs: list[str] | None, option: str) -> dict:
    return dict(parse_setting(p, option) for p in pairs or [])


def eval_suite_toml(args, sha256: str | None = None) -> str:
    """The suite ``fmbench eval`` runs, as TOML text (see ``fmbench eval --help``); ``sha256``
    pins the file (the suite written to OUT/suite.toml pins the file that was scored)."""
    from fmbench.image_tasks import IMAGE_DATASETS

    file = Path(args.checkpoint).expanduser().resolve()
    name = args.name or "eval-" + (_NAME_CHARS.sub("-", file.stem).strip("-.") or "model")[:59]
    image = args.target in IMAGE_DATASETS
    task = {"target": args.target, **({"source": args.source} if args.source else {}),
            **({"root": str(Path(args.root).expanduser().resolve())} if args.root else {}),
            **_settings(args.task_option, "--task-option")}
    model = {"kind": "checkpoint", "file": str(file), "format": args.format,
             **{k: getattr(args, k) for k in ("key", "time", "time_scale", "prediction",
                                              "arguments", "sha256")
                if getattr(args, k) is not None}}
    if sha256:
        model["sha256"] = sha256
    network = _settings(args.network_setting, "--network-setting")
    if args.network or network:
        default = "torchcfm-unet" if args.format == "torchcfm" else "mlp"
        network = {"kind": args.network or default, **network}
    path = {"name": args.path, **_settings(args.path_param, "--path-param")}
    metrics = {"names": args.metrics.split(",") if args.metrics else
               (["fid", "nfe", "sample_time"] if image else ["w2", "npe", "nfe", "sample_time"]),
               **({"n_eval": args.n_eval} if args.n_eval else {}),
               **({"eval_draws": args.eval_draws} if args.eval_draws else {}),
               **_settings(args.metric_setting, "--metric-setting")}
    parts = [
        "# written by fmbench eval\n" + _table("[suite]", {"name": name, "seeds": [0]}),
        _table("[[task]]", task), _table("[model]", model),
        *([_table("[model.network]", network)] if network else []),
        _table("[[path]]", path),
        *(_table("[[solver]]", parse_solver(s)) for s in (args.solver or ["dopri5"])),
        _table("[metrics]", metrics),
    ]
    return "\n".join(parts)
