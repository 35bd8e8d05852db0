"""The result row: its columns, their types and the one check every reader applies.

A row is one case × seed × evaluation draw × metric (long format, see README "Using it"). Case
files hold rows as JSON objects, results.csv as CSV records; both are checked by
:func:`parse_row`, so a row that one reader refuses is never accepted by another.
"""

from __future__ import annotations

import json
import math

SCHEMA_VERSION = 2  # 2: the draw column (evaluation draws)

ROW_COLUMNS = [
    "schema_version", "suite", "case_id", "model_key", "task", "source", "target", "path", "path_label",
    "path_params", "coupling", "objective", "solver", "solver_label", "solver_params", "seed",
    "draw", "n_eval", "settings", "metric", "value", "unit", "higher_is_better", "metric_version",
    "metric_params",
    "status", "reason", "model", "settings_json",
]
# columns added without a schema change: a row written before them reads with this default
# model: JSON, the model kind and its settings; settings_json: what the ``settings`` digest hashes
OPTIONAL_COLUMNS = {"model": "{}", "settings_json": "{}"}
STATUSES = ("ok", "failed", "not_applicable")
JSON_COLUMNS = ("path_params", "solver_params", "metric_params", "model", "settings_json")
INT_COLUMNS = ("schema_version", "seed", "draw", "n_eval", "metric_version")
NON_EMPTY = ("task", "source", "target", "path", "objective", "coupling", "solver", "metric", "suite",
             "path_label", "solver_label", "status", "higher_is_better", *INT_COLUMNS)


class BadRow(ValueError):
    """One malformed cell or row (its message completes 'line N: ...')."""


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        f = math.nan
    if not f.is_integer():
        raise BadRow("is not an integer")
    return int(f)


def _number(s: str) -> float:
    if s == "":
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise BadRow("is not a number") from None


def _bool(s: str) -> bool:
    if s.strip().lower() not in ("true", "false"):
        raise BadRow("is not true/false")
    return s.strip().lower() == "true"


def _status(s: str) -> str:
    if s not in STATUSES:
        raise BadRow("is not " + "/".join(STATUSES))
    return s


def _json_object(s: str) -> str:
    if s == "":
        return "{}"
    try:
        doc = json.loads(s)
    except (ValueError, RecursionError) as e:
        raise BadRow(f"is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BadRow("is not a JSON object")
    return s


PARSERS = {**{c: _int for c in INT_COLUMNS}, **{c: _json_object for c in JSON_COLUMNS},
           "value": _number, "higher_is_better": _bool, "status": _status}


def _quote(s: str, limit: int = 40) -> str:
    return repr(s if len(s) <= limit else s[:limit] + "…")


def _text(v: object) -> str:
    """A JSON value as the CSV writer would have written it."""
    if v is None:
        return ""
    if isinstance(v, dict | list):
        raise BadRow(f"holds a JSON {type(v).__name__}")
    return str(v)


def parse_row(raw: dict[str, object]) -> dict:
    """A row (CSV text or JSON values per column) as typed values, or BadRow naming the column
    and what is wrong: empty required cells, non-integers, bad JSON parameters, unknown status,
    a non-finite value in an ok row."""
    row = {}
    for col, v in raw.items():
        try:
            s = _text(v)
        except BadRow as e:
            raise BadRow(f"{col} {e}") from None
        if col in NON_EMPTY and s == "":
            raise BadRow(f"{col} is empty")
        try:
            row[col] = PARSERS[col](s) if col in PARSERS else s
        except BadRow as e:
            raise BadRow(f"{col} {_quote(s)} {e}") from None
    if row.get("status") == "ok" and not math.isfinite(row.get("value", math.nan)):
        raise BadRow(f"value {_quote(_text(raw.get('value')))} is not a finite number in an ok "
                     "row")
    return row
