"""Hostile and broken inputs through the real command line: one line per probe with the exit
code, whether a traceback was printed, whether a planted payload ran, and the first line of
the message. Run: ``python scripts/probe_inputs.py`` (about five minutes on 2 CPU cores).

Every probe runs in a fresh temporary folder with its own model cache. Expected: suites and
unusable inputs → exit 2 with one message; failures inside cases → exit 1 with the suite done;
never a traceback, never a payload.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

TINY = textwrap.dedent("""
    [suite]
    name = "probe"
    seeds = [0]

    [[task]]
    source = "gaussian"
    target = "8gaussians"

    [model]
    width = 16
    depth = 2

    [training]
    steps = 20
    batch_size = 32

    [[path]]
    name = "icfm"

    [[solver]]
    name = "euler"
    nfe = 4

    [metrics]
    names = ["w2", "nfe"]
    n_eval = 32
""")


class Payload:
    """Unpickling this creates the marker file (what a crafted data or weights file does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def fmbench(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FMBENCH_CACHE": str(work / "cache"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fmbench.cli", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)


def suite(work: Path, old: str = "", new: str = "", text: str | None = None) -> str:
    body = text if text is not None else TINY.replace(old, new, 1)
    (work / "s.toml").write_text(body)
    return str(work / "s.toml")


def run_ok(work: Path) -> str:
    fmbench(work, "run", suite(work), "--out", "out")
    return "out"


# ------------------------------------------------------------------------------ the probes
def p_suite(old, new):
    return lambda w: fmbench(w, "run", suite(w, old, new), "--out", "out")


def p_top(line, drop_old="", drop_new=""):
    """A top-level key must come before the first table: prepend it."""
    return lambda w: fmbench(w, "run", suite(w, text=line + "\n" +
                                             TINY.replace(drop_old, drop_new, 1)), "--out", "out")


def p_deep(w):
    return fmbench(w, "validate", suite(w, text=TINY + "x = " + "[" * 3000 + "]" * 3000 + "\n"))


CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def p_crafted_cifar(archive: bool):
    """Every CIFAR-10 batch replaced by a payload pickle, as a folder or inside the archive."""
    def probe(w):
        root = w / "data"
        (root / "cifar-10-batches-py").mkdir(parents=True)
        raw = pickle.dumps(Payload(w / "PWNED"), protocol=2)
        for name in CIFAR_BATCHES:
            (root / "cifar-10-batches-py" / name).write_bytes(raw)
        if archive:
            with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
                tar.add(root / "cifar-10-batches-py", "cifar-10-batches-py")
            shutil.rmtree(root / "cifar-10-batches-py")
        text = TINY.replace('source = "gaussian"\ntarget = "8gaussians"',
                            f'target = "cifar10"\nroot = "{root}"').replace(
            "width = 16\ndepth = 2", 'kind = "unet"\npreset = "tiny"').replace(
            '["w2", "nfe"]', '["nfe"]')
        return fmbench(w, "run", suite(w, text=text), "--out", "out")
    return probe


def p_crafted_weights_verify(w):
    (w / "w.pth").write_bytes(pickle.dumps(Payload(w / "PWNED")))
    return fmbench(w, "fid-weights", "--verify", str(w / "w.pth"))


def p_crafted_weights_suite(w):
    import torch

    torch.save({"x": Payload(w / "PWNED")}, w / "w.pth")
    root = w / "imgs"
    from PIL import Image

    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / "a" / f"{i}.png")
    text = TINY.replace('source = "gaussian"\ntarget = "8gaussians"',
                        f'target = "image-folder"\nroot = "{root}"').replace(
        "width = 16\ndepth = 2", 'kind = "unet"\npreset = "tiny"').replace(
        '["w2", "nfe"]', f'["fid"]\ninception_weights = "{w / "w.pth"}"').replace(
        "n_eval = 32", "n_eval = 4")
    return fmbench(w, "run", suite(w, text=text), "--out", "out")


def p_foreign_out(flag):
    def probe(w):
        (w / "mine").mkdir()
        (w / "mine" / "thesis.tex").write_text("years of work")
        r = fmbench(w, "run", suite(w), "--out", "mine", *flag)
        r.stdout += "" if (w / "mine" / "thesis.tex").exists() else " DELETED thesis.tex"
        return r
    return probe


def p_resume_other_suite(w):
    run_ok(w)
    return fmbench(w, "run", suite(w, "steps = 20", "steps = 21"), "--out", "out", "--resume")


def p_corrupt(kind):
    def probe(w):
        out = w / run_ok(w)
        files = {"case": next((out / "cases").glob("*.json")), "run.json": out / "run.json"}
        if kind == "checkpoint":  # what a training killed mid-write of a checkpoint leaves
            from fmbench.suite import load_suite

            text = TINY.replace("batch_size = 32", "batch_size = 32\ncheckpoint_every = 5")
            key = load_suite(suite(w, text=text)).cases()[0].model_key
            ckpt = w / "cache" / "checkpoints" / f"{key}.pt"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.write_bytes(b"PK\x03\x04 truncated checkpoint")
            return fmbench(w, "run", "s.toml", "--out", "out2")
        f = files[kind]
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
        return fmbench(w, "run", "s.toml", "--out", "out", "--resume")
    return probe


def p_results(mutate, cmd):
    def probe(w):
        out = w / run_ok(w)
        shutil.copytree(out, w / "base")
        csv = out / "results.csv"
        mutate(csv, out)
        args = {"check": ["check", "out", "--baseline", "base"],
                "compare": ["compare", "base", "out"], "report": ["report", "out"]}[cmd]
        return fmbench(w, *args)
    return probe


def cut(csv, out):
    csv.write_bytes(csv.read_bytes()[:-40])


def _set_cell(csv_file, column: str, value: str) -> None:
    """Put ``value`` into ``column`` of the first data row (an ok row)."""
    import csv

    with open(csv_file, newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index(column)] = value
    with open(csv_file, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def nonnumeric(csv_file, out):
    _set_cell(csv_file, "value", "abc")


def badjson(csv_file, out):
    _set_cell(csv_file, "path_params", "{not json")


def badrun(csv, out):
    (out / "run.json").write_text("[1, 2")


def allfailed(csv, out):
    csv.write_text(csv.read_text().replace(",ok,", ",failed,"))


PROBES = [
    ("suite: model = 5", p_top("model = 5", "[model]\nwidth = 16\ndepth = 2")),
    ("suite: task = [1]", p_top("task = [1]", '[[task]]\nsource = "gaussian"\n'
                                              'target = "8gaussians"')),
    ("suite: path = [1]", p_top("path = [1]", '[[path]]\nname = "icfm"')),
    ("suite: [model] preset = [1, 2]", p_suite("width = 16\ndepth = 2",
                                               'kind = "unet"\npreset = [1, 2]')),
    ("suite: 3000-deep nested array", p_deep),
    ('suite: name = "../x"', p_suite('name = "probe"', 'name = "../x"')),
    ('suite: name = "/tmp/x"', p_suite('name = "probe"', 'name = "/tmp/x"')),
    ("suite: seeds = [2**63 - 1]", p_suite("seeds = [0]", "seeds = [9223372036854775807]")),
    ("suite: 300-character task name", p_suite('target = "8gaussians"',
                                                'target = "8gaussians"\nname = "' + "t" * 300
                                                + '"')),
    ("run: lr = 1e300 (fails its cases)", p_suite("batch_size = 32", "batch_size = 32\n"
                                                                     "lr = 1e300")),
    ("data: crafted CIFAR-10 batch (folder)", p_crafted_cifar(False)),
    ("data: crafted CIFAR-10 batch (archive)", p_crafted_cifar(True)),
    ("weights: crafted file, fid-weights --verify", p_crafted_weights_verify),
    ("weights: crafted inception_weights in a suite", p_crafted_weights_suite),
    ("out: non-empty foreign folder", p_foreign_out([])),
    ("out: --overwrite on a foreign folder", p_foreign_out(["--overwrite"])),
    ("resume: another suite's folder", p_resume_other_suite),
    ("corrupt: truncated case file, --resume", p_corrupt("case")),
    ("corrupt: truncated run.json, --resume", p_corrupt("run.json")),
    ("corrupt: truncated training checkpoint", p_corrupt("checkpoint")),
    ("check: results.csv cut mid-row", p_results(cut, "check")),
    ("check: non-numeric value", p_results(nonnumeric, "check")),
    ("check: bad JSON in path_params", p_results(badjson, "check")),
    ("check: corrupt run.json", p_results(badrun, "check")),
    ("compare: results.csv cut mid-row", p_results(cut, "compare")),
    ("report: every case failed", p_results(allfailed, "report")),
    ("report: results.csv cut mid-row", p_results(cut, "report")),
]


def main() -> int:
    print("| input | exit | traceback | payload ran | message |\n|---|---|---|---|---|")
    bad = 0
    for name, probe in PROBES:
        with tempfile.TemporaryDirectory() as d:
            w = Path(d)
            r = probe(w)
            text = (r.stderr + r.stdout).strip()
            tb = "Traceback" in text
            pwned = (w / "PWNED").exists()
            first = next((ln for ln in text.splitlines() if ln.strip()), "")[:110]
            bad += tb or pwned or "DELETED" in text
            print(f"| {name} | {r.returncode} | {'YES' if tb else 'no'} | "
                  f"{'YES' if pwned else 'no'} | {first.replace('|', '/')} |", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
