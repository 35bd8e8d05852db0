"""Suite files: TOML → frozen dataclasses, strictly validated, grid expanded into cases.

Any problem raises :class:`SuiteError` naming the file, the key (``path[2].sigma``) and what is
allowed. See README "Suite file reference" for the schema.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import fmbench.image_metrics  # noqa: F401  (registers fid, kid, bpd)
from fmbench.compare import CheckSettings
from fmbench.data import DATASETS
from fmbench.executors import EXECUTORS
from fmbench.image_tasks import IMAGE_DATASETS
from fmbench.metrics import METRICS, MetricsConfig
from fmbench.models import DEFAULT_KIND, MODELS, ModelConfig
from fmbench.paths.couplings import COUPLINGS
from fmbench.paths.schedules import PATHS, GaussianPath
from fmbench.plan import Case
from fmbench.plugins import load_plugins, missing
from fmbench.solvers import SOLVERS, SolverSpec
from fmbench.tasks import kind_of
from fmbench.train import TrainConfig
from fmbench.validation import (
    SEED_MAX,
    STRICT_ENV,
    FieldError,
    SuiteError,
    Validator,
    annotation_type,
    field_type,
    join_key,
    one_line,
    short_repr,
)

__all__ = ["Case", "CheckSettings", "ModelConfig", "Suite", "SuiteError", "Task", "load_suite",
           "parse_suite"]  # Case: plan.py; ModelConfig: models.py; CheckSettings: compare.py


@dataclass(frozen=True)
class Task:
    name: str
    source: str  # "gaussian" or a dataset name
    target: str
    options: tuple[tuple[str, object], ...] = ()  # image datasets: root, n_train, hflip, …
    base_dir: str = field(default="", compare=False)  # relative roots resolve against this

    @property
    def gaussian_source(self) -> bool:
        return self.source == "gaussian"

    @property
    def is_image(self) -> bool:
        return kind_of(self.target).kind == "image"

    def opts(self) -> dict:
        """Options with relative ``root``/``test`` paths resolved against the suite's folder."""
        out = dict(self.options)
        for k in ("root", "test"):
            if isinstance(out.get(k), str) and out[k]:
                p = Path(out[k]).expanduser()
                out[k] = str(p if p.is_absolute() or not self.base_dir
                             else Path(self.base_dir) / p)
        return out


@dataclass(frozen=True)
class ExecutorConfig:
    """The suite's ``[executor]`` table: where work units run (fmbench.executors); it never
    changes a number, so it is not part of the suite's definition."""

    name: str = "local"
    options: object = None  # the executor's options dataclass (None = its defaults)


@dataclass(frozen=True)
class Suite:
    file: str
    name: str
    description: str
    seeds: tuple[int, ...]
    data_seed: int
    tasks: tuple[Task, ...]
    model: ModelConfig
    training: TrainConfig
    paths: tuple[GaussianPath, ...]
    solvers: tuple[SolverSpec, ...]
    metrics: MetricsConfig
    raw: dict = field(compare=False, hash=False, repr=False, default_factory=dict)
    check: CheckSettings = field(compare=False, hash=False, default_factory=CheckSettings)
    executor: ExecutorConfig = field(compare=False, default_factory=ExecutorConfig)
    plugins: tuple[str, ...] = field(compare=False, default=())  # required (fmbench.plugins)

    def skipped(self) -> list[str]:
        """Task × path combinations left out of the grid, with the reason."""
        return [
            f"{p.name} on {t.name}: {p.name} needs a Gaussian source"
            for t in self.tasks for p in self.paths
            if p.gaussian_source_only and not t.gaussian_source
        ]

    def cases(self) -> list[Case]:
        """Every case of the grid (fmbench.plan)."""
        from fmbench.plan import cases

        return cases(self)


def _build_path(v: Validator, entry: dict, key: str) -> GaussianPath:
    v.table(entry, key, None, {"name"})
    name = v.name(entry["name"], f"{key}.name", PATHS)
    cls = PATHS.get(name)
    fields_ = cls.param_fields()
    v.table(entry, key, set(fields_) | {"name"})
    params = {}
    for k, val in entry.items():
        if k == "name":
            continue
        typ = annotation_type(fields_[k])
        params[k] = v.scalar(val, f"{key}.{k}", typ)
    if "coupling" in params:
        v.name(params["coupling"], f"{key}.coupling", COUPLINGS)
    try:
        return cls(**params)
    except ValueError as e:
        raise v.err(key, f"{name}: {one_line(e)}") from None
    except ArithmeticError as e:  # e.g. 2·sigma² overflowing for sigma = 1e200
        raise v.err(key, f"{name}: parameters out of numeric range ({one_line(e)})") from None


def _build_solvers(v: Validator, entry: dict, key: str) -> list[SolverSpec]:
    """[[solver]]: a name or a list of names; each other key a SolverSpec field, with one value
    or a list (a sweep: lists are walked together, a single value goes with every position);
    a list-valued field (``times``) sweeps with a list of lists."""
    params = [f.name for f in fields(SolverSpec) if f.name != "method"]
    listed = {f.name for f in fields(SolverSpec) if field_type(f.type)[0] == "tuple"}
    v.table(entry, key, {"name", *params}, {"name"})
    names = [v.name(n, f"{key}.name", SOLVERS) for n in v.list_of(entry["name"], f"{key}.name")]
    sweep = {k: ([entry[k]] if k in listed and isinstance(entry[k], list)
                 and not any(isinstance(x, list) for x in entry[k])
                 else v.list_of(entry[k], join_key(key, k))) for k in params if k in entry}
    out = []
    for name in names:
        for i in range(max(map(len, sweep.values()), default=1)):
            at_i = {k: vals[i] if len(vals) > 1 else vals[0] for k, vals in sweep.items()}
            out.append(v.bind(SolverSpec, {"method": name, **at_i}, key))
            if len(out) == 1:  # the spec's own complaint first (e.g. both steps and nfe given)
                _check_sweep(v, sweep, key)
    return out


def _check_sweep(v: Validator, sweep: dict[str, list], key: str) -> None:
    lists = [(k, len(vals)) for k, vals in sweep.items() if len(vals) > 1]
    for k, n in lists[1:]:
        if n != lists[0][1]:
            raise v.err(join_key(key, k), f"must be one value or a list as long as "
                                          f"{lists[0][0]} ({lists[0][1]} values), got {n} values")


SUITE_KEYS = {"suite", "task", "model", "training", "path", "solver", "metrics", "check",
              "executor"}


def _build_task(v: Validator, t: dict, key: str) -> Task:
    v.table(t, key, None, {"target"})
    tgt = t["target"]
    if isinstance(tgt, str) and tgt in IMAGE_DATASETS:
        return _build_image_task(v, t, key, tgt)
    v.table(t, key, {"name", "source", "target"})
    src = v.name(t.get("source", "gaussian"), f"{key}.source", DATASETS)
    tgt = v.scalar(tgt, f"{key}.target", str)
    try:
        tgt = v.name(tgt, f"{key}.target", DATASETS)
    except SuiteError as e:
        raise v.err(e.key, e.message.replace("Known datasets:", "Known 2D datasets:") +
                    f" Image datasets: {', '.join(IMAGE_DATASETS.names())}.") from None
    label = "N" if src == "gaussian" else src
    return Task(v.label(t.get("name", f"{label}->{tgt}"), f"{key}.name"), src, tgt)


def _build_image_task(v: Validator, t: dict, key: str, tgt: str) -> Task:
    spec = IMAGE_DATASETS.get(tgt).options
    v.table(t, key, {"name", "source", "target", *spec})
    if t.get("source", "gaussian") != "gaussian":
        raise v.err(f"{key}.source", f"image tasks take a Gaussian source (leave source out or "
                                     f"write \"gaussian\"), got {short_repr(t['source'])}")
    opts = {}
    for opt, (typ, default) in spec.items():
        if opt in t:
            opts[opt] = (v.file_path(t[opt], f"{key}.{opt}") if opt in ("root", "test")
                         else v.scalar(t[opt], f"{key}.{opt}", typ, 0 if typ is int else None))
        elif default is None and not (tgt == "npz" and opt == "test"):
            raise v.err(f"{key}.{opt}", f"is required for {tgt}")
        else:
            opts[opt] = default
    if "channels" in opts and opts["channels"] not in (1, 3):
        raise v.err(f"{key}.channels", f"must be 1 or 3, got {opts['channels']}")
    if tgt == "npz" and not opts.get("test"):
        opts["test"] = opts["root"]
    name = v.label(t.get("name", tgt), f"{key}.name")
    base = Path(v.file).parent if Path(v.file).is_file() else Path.cwd()
    return Task(name, "gaussian", tgt, tuple(sorted(opts.items())), str(base.resolve()))


def _build_model(v: Validator, m, key: str = "model") -> ModelConfig:
    """[model]: ``kind`` (a registered model kind) and that kind's settings; a setting marked
    ``metadata={"model": True}`` is a nested model table (a checkpoint's network), and a kind's
    ``prepare`` completes the settings from the files they name (paths relative to the suite)."""
    v.table(m, key, None, {"kind"} if key != "model" else set())
    kind = v.name(m.get("kind", DEFAULT_KIND), f"{key}.kind", MODELS)
    d = MODELS.get(kind)
    nested = {f.name for f in fields(d.config) if f.metadata.get("model")}
    for name in nested & set(m):
        v.table(m[name], f"{key}.{name}")
    sub = {n: _build_model(v, m[n], f"{key}.{n}") for n in sorted(nested & set(m))}
    options = v.bind(d.config, m, key, skip=frozenset({"kind", *nested}), presets=d.presets,
                     given=sub)
    try:
        if d.prepare is not None:
            options = d.prepare(options, _suite_dir(v))
    except FieldError as e:
        raise v.err(join_key(key, ".".join(map(str, e.path))), one_line(e.message)) from None
    except ValueError as e:
        raise v.err(key, one_line(e)) from None
    return ModelConfig(kind, options)


def _check_model_data(v: Validator, model: ModelConfig, tasks: list[Task],
                      key: str = "model") -> None:
    """Each task's kind of data is one the model kind (and a nested network's) can model."""
    for i, t in enumerate(tasks):
        what = kind_of(t.target).kind
        if what not in MODELS.get(model.kind).data:
            kinds = [k for k, d in MODELS.items() if what in d.data]
            raise v.err(f"{key}.kind", f"task[{i}] ({t.name}) has {what} data, which "
                                       f"{model.kind!r} models do not take: kind = "
                                       f"{' or '.join(map(repr, kinds))}")
    for f in fields(model.options):
        nested = getattr(model.options, f.name)
        if f.metadata.get("model") and isinstance(nested, ModelConfig):
            _check_model_data(v, nested, tasks, f"{key}.{f.name}")


def _check_loaded_model(v: Validator, data: dict, model: ModelConfig, seeds: tuple,
                        paths: list[GaussianPath]) -> None:
    """A model read from a file is one model, not trained: no [training], one seed, and paths
    whose objective is what the network predicts."""
    if "training" in data:
        raise v.err("training", f"a {model.kind} model is read from its file, not trained here: "
                                "leave [training] out")
    if len(seeds) != 1:
        raise v.err("suite.seeds", f"a {model.kind} model is one trained model: give one seed "
                                   f"(evaluation draws vary the noise), got {len(seeds)}")
    prediction = getattr(model.options, "prediction", None)
    for i, p in enumerate(paths):
        if prediction is not None and p.objective != prediction:
            raise v.err(f"path[{i}].objective", f"the model predicts {prediction} (model."
                                                f"prediction), so the path must say objective "
                                                f"= {prediction!r}, got {p.objective!r}")


def _suite_dir(v: Validator) -> Path:
    return (Path(v.file).parent if Path(v.file).is_file() else Path.cwd()).resolve()


def parse_suite(data: dict, file: str = "<suite>") -> Suite:
    """Validate a parsed suite. Raises :class:`SuiteError` only: an unexpected exception is a bug
    in fmbench, reported as a SuiteError naming the file (re-raised as is when the environment
    variable ``FMBENCH_STRICT_SUITE_ERRORS=1`` is set, as the tests do)."""
    try:
        return _parse_suite(data, file)
    except SuiteError:
        raise
    except Exception as e:  # noqa: BLE001 - the safety net: the CLI must not print a traceback
        if os.environ.get(STRICT_ENV) == "1":
            raise
        raise SuiteError(file, "", f"bug in fmbench while checking this suite, please report "
                                   f"it: {type(e).__name__}: {one_line(e)}") from e


def _parse_suite(data: dict, file: str) -> Suite:
    v = Validator(file)
    v.table(data, "", SUITE_KEYS, {"suite", "task", "path", "solver"})
    s = v.table(data["suite"], "suite", {"name", "description", "seeds", "data_seed", "plugins"},
                {"name"})
    name = v.suite_name(s["name"], "suite.name")
    plugins = _require_plugins(v, s.get("plugins", []))
    seeds = tuple(v.scalar(x, "suite.seeds", int, 0, SEED_MAX)
                  for x in v.list_of(s.get("seeds", [0]), "suite.seeds", allow_scalar=False))
    if len(set(seeds)) != len(seeds):
        raise v.err("suite.seeds", f"has duplicates: {short_repr(list(seeds))}")
    tasks = _build_tasks(v, data["task"])
    model = _build_model(v, data.get("model", {}))
    _check_model_data(v, model, tasks)
    training = _build_training(v, data.get("training", {}))
    paths = [_build_path(v, p, f"path[{i}]") for i, p in enumerate(v.tables(data["path"], "path"))]
    if len({(p.name, json.dumps(p.params(), sort_keys=True)) for p in paths}) != len(paths):
        raise v.err("path", "the same path with the same parameters is listed twice")
    solvers = []
    for i, e in enumerate(v.tables(data["solver"], "solver")):
        solvers += _build_solvers(v, e, f"solver[{i}]")
    if len({sp.label() for sp in solvers}) != len(solvers):
        raise v.err("solver", "the same solver configuration is listed twice")
    metrics = _build_metrics(v, data.get("metrics", {}))
    if MODELS.get(model.kind).load is not None:
        _check_loaded_model(v, data, model, seeds, paths)
    suite = Suite(
        check=_build_check(v, data.get("check", {})), file=file, name=name,
        description=v.scalar(s.get("description", ""), "suite.description", str),
        seeds=seeds, data_seed=v.scalar(s.get("data_seed", 12345), "suite.data_seed", int, 0,
                                        SEED_MAX),
        tasks=tuple(tasks), model=model, training=training, paths=tuple(paths),
        solvers=tuple(solvers), metrics=metrics, raw=data,
        executor=_build_executor(v, data.get("executor", {})), plugins=plugins,
    )
    if not suite.cases():
        raise v.err("path", "no case left: every path needs a Gaussian source and no task has one")
    return suite


def _require_plugins(v: Validator, value) -> tuple[str, ...]:
    """[suite] plugins: entry-point names (fmbench.plugins) that must be installed and load."""
    names = tuple(v.scalar(n, "suite.plugins", str)
                  for n in (v.list_of(value, "suite.plugins", allow_scalar=False)
                            if value != [] else []))
    load_plugins()  # every installed plug-in registers before the suite's names are checked
    problems = missing(names)
    if problems:
        raise v.err("suite.plugins", "; ".join(problems))
    return names


def _build_tasks(v: Validator, value) -> list[Task]:
    tasks = [_build_task(v, t, f"task[{i}]") for i, t in enumerate(v.tables(value, "task"))]
    seen: set[str] = set()
    for i, t in enumerate(tasks):
        if t.name in seen:
            raise v.err(f"task[{i}].name", f"task names must be unique; {t.name!r} is taken "
                                           f"(give the tasks different name = …)")
        seen.add(t.name)
    return tasks


def _build_training(v: Validator, tr) -> TrainConfig:
    return v.bind(TrainConfig, tr, "training")


def _build_metrics(v: Validator, mt) -> MetricsConfig:
    return v.bind(MetricsConfig, mt, "metrics")


def _build_executor(v: Validator, e) -> ExecutorConfig:
    """[executor]: name (local, slurm, ray) and that executor's own options."""
    v.table(e, "executor")
    name = v.name(e.get("name", "local"), "executor.name", EXECUTORS)
    return ExecutorConfig(name, v.bind(EXECUTORS.get(name).options, e, "executor",
                                       skip=frozenset({"name"})))


def _build_check(v: Validator, c) -> CheckSettings:
    """[check]: fmbench check's settings (fmbench.compare); per-metric thresholds name metrics."""
    settings = v.bind(CheckSettings, c, "check")
    for k in settings.thresholds:
        v.name(k, join_key("check.thresholds", k), METRICS)
    return settings


def _read_toml(file: str) -> dict:
    try:
        raw = Path(file).read_bytes()
    except FileNotFoundError:
        raise SuiteError(file, "", "file not found") from None
    except OSError as e:
        raise SuiteError(file, "", f"cannot be read: {e.strerror or e}") from None
    except ValueError as e:  # e.g. a NUL character in the file name
        raise SuiteError(file, "", f"cannot be read: {one_line(e)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(file, "", f"not valid UTF-8 text: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(file, "", f"not valid TOML: {one_line(e)}") from None
    except (RecursionError, MemoryError):
        raise SuiteError(file, "", "nesting too deep (or too large) to read: nest arrays and "
                                   "tables at most a few hundred levels") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise SuiteError(file, "", f"not valid TOML: {one_line(e, 120)}") from None


def load_suite(file: str | Path) -> Suite:
    file = str(file)
    return parse_suite(_read_toml(file), file)
