"""Benchmark crude-link against its floors and its peers, side by side, in one run.

Run from the repo root with the project's venv (the one with hydra-core); the peers live in
their own venv (see requirements-bench.in):

    python tests/benchmarks/bench.py [--quick] [--out results.md] [--peers-venv /tmp/bench-venv]

Every runner does the same job: run N commands in order, stop at the first failure, for
N = 1, 10, 100 and two kinds of step: `/bin/true` (a real process) and a no-op `.py` script
run with this venv's python. The runners:

- floors: a bash `&&` chain, a bare Python loop of `subprocess.run`, and a minimal
  `@hydra.main` app running the same config.yaml (the floor of anything built on Hydra);
- crude-link: a copy of scheduler.py with a config.yaml of N steps, no terminal on stdin;
- peers: GNU make, doit, Snakemake, Luigi (local scheduler), `dvc repro --force`.

Then one step writing 256 MiB to stdout, through crude-link (terminal side to /dev/null, plus
its log file) against a shell redirect and a bare Python tee; and crude-link's own peak RSS.
And `--help`, `--hydra-help`, `--info` against a dry run of the same config, in a project
folder as a year of use leaves it: 5,000 run folders under outputs/, a .venv of a few thousand
files (`--only help` measures just that).
And long pipelines: N = 1,000 and 10,000 `/bin/true` steps, for the floors and crude-link
(the peers would take hours), against their N = 10 and 100: the per-step cost must not grow
with N (`--only long` measures just that, with the N = 10 and 100 cells it needs).

Absolute times drift (±20% here), so only ratios within one run count: every round runs
every job once, in a shuffled order, and the tables show medians over the rounds, in wall
time and in CPU time (user + sys of the runner and all it waited for).

Map of this file:
    Settings, parse_args     the command line and the time budget
    Job, Peers, find_peers   one timed command; where the peers' programs are
    fixture templates        the scripts the runners execute, written into the temp dir
    *_job functions          write one runner's files for one (flavour, N); return its Job
    help_jobs                help flags and a dry run in a cluttered project: <tmp>/help/
    build_jobs               the temp tree: <tmp>/<flavour>/N<n>/<runner>/
    run_benchmark            warm-up, then R interleaved rounds within the time budget
    measure_rss              the scheduler's own peak RSS (and why wait4 alone is not enough)
    report                   markdown tables and the targets block
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
SCHEDULER = REPO / "scheduler.py"
PYTHON = sys.executable  # the project's venv python: crude-link's default step interpreter

SIZES = (1, 10, 100)
LONG_SIZES = (1000, 10000)  # /bin/true only: 10,000 noop.py steps take minutes a run
LONG_RUNNERS = ("python loop", "hydra app", "crude-link")
BIG_FILE = 1 << 20  # removed at once by set_aside; smaller files wait for the end
SET_ASIDE = itertools.count(1)  # a new name for each folder set aside
FLAVOURS = ("/bin/true", "noop.py")
STREAM_MIB = 256
STREAM_CELL = f"{STREAM_MIB} MiB"
JOB_TIMEOUT = 600.0  # seconds; far above any runner's N = 10,000, it only guards against a hang
RSS_RUNS = 2  # peak RSS barely moves between runs; the max of two is enough (quick: 1)
RSS_RESERVE = 30.0  # seconds of the budget kept for measure_rss and the report
FAT_STEP_MIB = 200  # the RSS check: a step this big must not show in the scheduler's peak
HELP_RUNS = 5000  # run folders under the help case's outputs/
HELP_VENV_FILES = 3000  # files in its .venv (a small venv: numpy alone has ~1,000)
HELP_FLAGS = ("--help", "--hydra-help", "--info")
DRY_RUN_CELL = "dry run"

FLOORS = ("bash &&", "python loop", "hydra app")
PEERS = ("make", "doit", "snakemake", "luigi", "dvc")
RUNNERS = (*FLOORS, "crude-link", *PEERS)
SLOWER_PEERS = ("snakemake", "luigi", "dvc")  # the target: crude-link beats these everywhere
STREAMERS = ("shell redirect", "python tee", "crude-link")

# The targets the team works toward; the report ends with PASS/FAIL for each.
STARTUP_LIMIT = 1.10  # crude-link t1 / Hydra app t1, /bin/true
PER_STEP_SLACK_MS = 1.0  # crude-link per step <= Python loop per step + this
LINEAR_SLACK_MS = 1.0  # crude-link per step at N = 10,000 <= its per step at N = 10 + this
STREAM_LIMIT = 1.15  # crude-link 256 MiB / Python tee 256 MiB
RSS_LIMIT_MB = 40.0  # the scheduler's own peak, MB = 10**6 bytes
HELP_LIMIT = 1.10  # each help flag / a dry run, in the cluttered project (1.10: the noise)


# ── Settings ─────────────────────────────────────────────────────────────


@dataclass
class Settings:
    quick: bool  # warm up on the N = 1 jobs only; one measured round; one RSS run
    budget: float  # seconds the whole run should take, roughly
    min_repeats: int
    max_repeats: int
    repeats: Optional[int]  # a fixed R, overriding the budget
    out: Optional[Path]
    peers_venv: Path
    keep: bool
    seed: int
    command: str
    only: Optional[str]  # "help" or "long": that case alone


def parse_args(argv: List[str]) -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a ~2 minute run: short warm-up, 1 round"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=Path(os.environ.get("BENCH_VENV", "/tmp/bench-venv")),
        help="venv holding doit, snakemake, luigi, dvc (default: $BENCH_VENV or /tmp/bench-venv)",
    )
    parser.add_argument("--budget", type=float, help="seconds for the whole run (600; quick 120)")
    parser.add_argument("--repeats", type=int, help="measured repeats (default: fit the budget)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (its path is shown)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the per-repeat job order")
    parser.add_argument("--only", choices=["help", "long"], help="measure this case alone")
    args = parser.parse_args(argv)
    return Settings(
        quick=args.quick,
        budget=args.budget or (120.0 if args.quick else 600.0),
        min_repeats=1 if args.quick else 3,
        max_repeats=15,
        repeats=args.repeats,
        out=args.out,
        peers_venv=args.peers_venv,
        keep=args.keep,
        seed=args.seed,
        command=shlex.join(["python", "tests/benchmarks/bench.py", *argv]),
        only=args.only,
    )


# ── Jobs and peers ───────────────────────────────────────────────────────


@dataclass
class Job:
    """One command the harness times: a runner doing one cell's work."""

    runner: str
    cell: str  # "/bin/true N=10", "noop.py N=1", "256 MiB"
    argv: List[str]
    cwd: Path
    cleanup: List[Path] = field(default_factory=list)  # removed after every run, untimed
    env: Optional[Dict[str, str]] = None
    times: List[float] = field(default_factory=list)  # wall seconds, measured rounds only
    cpu: List[float] = field(default_factory=list)  # user+sys seconds of it and its children
    error: str = ""  # set when the job failed; it is not run again

    def clean(self) -> None:
        for path in self.cleanup:
            if path.is_dir():
                set_aside(path)
            elif path.exists():
                path.unlink()


def set_aside(folder: Path) -> None:
    """Take a run's folder out of the next run's way; it goes with the temp tree at the end.

    Not removed now: ext4 without a journal (these machines' disks) steps over every inode
    freed in the last minute or more, one by one, to make a new file (recently_deleted in
    fs/ext4/ialloc.c), and the next run makes as many files in the same place. Removing the
    last round's 10,000 step logs made each new one cost crude-link 0.1-0.3 ms instead of
    0.015: a cost of the harness, which the floors (no files) never paid. Its big files (the
    256 MiB log) go now: few inodes, much disk. (A benchmark started within minutes of the
    end of another, which removed its tree, still pays some of it.)
    """
    for path in folder.rglob("*"):
        if not path.is_symlink() and path.is_file() and path.stat().st_size > BIG_FILE:
            path.unlink()
    folder.rename(folder.with_name(f".{folder.name}.{next(SET_ASIDE)}"))


def cell_name(flavour: str, n: int) -> str:
    return f"{flavour} N={n}"


def output_lines(argv: List[str]) -> List[str]:
    """Return a command's stdout lines, [] when it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.strip().splitlines()


@dataclass
class Peers:
    """Where each peer's program is, its version, or why it is skipped."""

    venv: Path
    skipped: Dict[str, str] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def find_peers(venv: Path) -> Peers:
    """Check every peer once; a missing one is skipped with the reason, never fatal."""
    peers = Peers(venv)
    make = shutil.which("make")
    if make:
        peers.versions["make"] = (output_lines([make, "--version"]) or ["?"])[0]
    else:
        peers.skipped["make"] = "GNU make not found (apt-get install -y make)"
    python = venv / "bin" / "python"
    pypi_peers = [name for name in PEERS if name != "make"]
    if not python.exists():
        for name in pypi_peers:
            peers.skipped[name] = f"no venv at {venv} (see tests/benchmarks/requirements-bench.in)"
        return peers
    # One interpreter start for all four: which of them are installed, at which version.
    probe = (
        "import importlib.metadata as m\n"
        f"for name in {pypi_peers!r}:\n"
        "    try: print(name, m.version(name))\n"
        "    except m.PackageNotFoundError: print(name, '-')\n"
    )
    found = dict(line.split(maxsplit=1) for line in output_lines([str(python), "-c", probe]))
    for name in pypi_peers:
        if found.get(name, "-") == "-":
            peers.skipped[name] = f"not installed in {venv} (pip install -r requirements-bench.in)"
        else:
            peers.versions[name] = found[name]
    return peers


# ── Fixture templates ────────────────────────────────────────────────────
# @NAME@ placeholders, not str.format: several templates are full of braces.

NOOP_PY = '"""A step that does nothing."""\n'

WRITER_PY = '''\
"""A step that prints @MIB@ MiB to stdout, in 1 MiB os.write calls."""
import os

CHUNK = b"x" * (1 << 20)
for _ in range(@MIB@):
    view = memoryview(CHUNK)
    while view:
        view = view[os.write(1, view):]
'''

LOOP_PY = '''\
"""Floor: a bare loop of subprocess.run; stop at the first failure."""
import subprocess
import sys

for command in @COMMANDS@:
    code = subprocess.run(command).returncode
    if code:
        sys.exit(code)
'''

HYDRA_APP_PY = '''\
"""Floor for anything built on Hydra: load config.yaml, run each step with subprocess.run."""
import subprocess
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    for step in cfg.steps:
        script = ROOT / step.script
        command = [sys.executable, str(script)] if script.suffix == ".py" else [str(script)]
        code = subprocess.run(command, cwd=ROOT).returncode
        if code:
            sys.exit(code)


if __name__ == "__main__":
    main()
'''

DODO_PY = '''\
"""doit: one task per step, each after the previous; output shown live (verbosity 2)."""
COMMAND = @COMMAND@
DOIT_CONFIG = {"verbosity": 2}


def task_step():
    for i in range(1, @N@ + 1):
        yield {
            "name": str(i),
            "actions": [COMMAND],  # a list: run without a shell
            "task_dep": [f"step:{i - 1}"] if i > 1 else [],
            "verbosity": 2,
        }
'''

LUIGI_PY = '''\
"""Luigi, local scheduler: step i requires step i-1, so a failed step stops the chain."""
import subprocess
import sys

import luigi

COMMAND = @COMMAND@
_done = set()  # complete() in memory: no output files to clean up between runs


class Step(luigi.Task):
    i = luigi.IntParameter()

    def requires(self):
        return [Step(i=self.i - 1)] if self.i > 1 else []

    def complete(self):
        return self.i in _done

    def run(self):
        subprocess.run(COMMAND, check=True)
        _done.add(self.i)


if __name__ == "__main__":
    sys.exit(0 if luigi.build([Step(i=@N@)], local_scheduler=True, workers=1) else 1)
'''

TEE_PY = '''\
"""Floor for streaming: copy a child's stdout to a file and /dev/null in 64 KiB reads."""
import os
import subprocess
import sys


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
terminal = os.open(os.devnull, os.O_WRONLY)
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
out = proc.stdout.fileno()
while chunk := os.read(out, 65536):
    write_all(log, chunk)
    write_all(terminal, chunk)
sys.exit(proc.wait())
'''

# Imported as sitecustomize by the RSS runs only (PYTHONPATH points at its folder).
RSS_HOOK_PY = '''\
"""At exit, write this process's VmHWM and RUSAGE_SELF ru_maxrss (KiB) to a file.

The variable naming the file is removed at start-up, so the steps, which inherit the
scheduler's environment (PYTHONPATH included), import this too but do nothing.
"""
import os

_path = os.environ.pop("CRUDE_LINK_BENCH_RSS", None)
if _path:
    import atexit
    import resource

    def _write_peak():
        with open("/proc/self/status") as status:
            hwm = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
        with open(_path, "w") as out:
            out.write(f"{hwm} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")

    atexit.register(_write_peak)
'''

FAT_PY = '''\
"""The RSS check's step: hold @MIB@ MiB of touched memory for a moment."""
import time

data = b"x" * (@MIB@ << 20)
time.sleep(0.2)
'''


def fill(template: str, **values: object) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", str(value))
    return template


# ── One job per runner and cell ──────────────────────────────────────────


@dataclass
class Tree:
    """The temp dir: shared scripts, and the peers the jobs may use."""

    root: Path
    peers: Peers
    # Read once: the team edits scheduler.py meanwhile, and every copy must be the same one.
    scheduler: bytes = field(default_factory=SCHEDULER.read_bytes)

    def copy_scheduler(self, folder: Path) -> None:
        (folder / "scheduler.py").write_bytes(self.scheduler)

    @property
    def noop(self) -> Path:
        return self.root / "noop.py"

    @property
    def writer(self) -> Path:
        return self.root / "writer.py"

    def command(self, flavour: str) -> List[str]:
        """The step's command as every runner runs it (crude-link builds the same one)."""
        return ["/bin/true"] if flavour == "/bin/true" else [PYTHON, str(self.noop)]

    def script(self, flavour: str) -> str:
        """The step's `script:` in config.yaml: .py files run with sys.executable."""
        return "/bin/true" if flavour == "/bin/true" else str(self.noop)


def write_config(folder: Path, scripts: List[str]) -> None:
    """config.yaml for crude-link and the Hydra app: one step per script."""
    lines = ["steps:", *(f"  - script: {json.dumps(s)}" for s in scripts)]
    (folder / "config.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def bash_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    chain = " && ".join([shlex.join(tree.command(flavour))] * n)
    (folder / "chain.sh").write_text(chain + "\n", encoding="utf-8")
    return Job("bash &&", cell_name(flavour, n), ["/bin/bash", "chain.sh"], folder)


def loop_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    text = fill(LOOP_PY, COMMANDS=repr([tree.command(flavour)] * n))
    (folder / "loop.py").write_text(text, encoding="utf-8")
    return Job("python loop", cell_name(flavour, n), [PYTHON, "loop.py"], folder)


def hydra_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    write_config(folder, [tree.script(flavour)] * n)
    (folder / "app.py").write_text(HYDRA_APP_PY, encoding="utf-8")
    return Job(
        "hydra app", cell_name(flavour, n), [PYTHON, "app.py"], folder, cleanup=[folder / "outputs"]
    )


def crude_link_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    write_config(folder, [tree.script(flavour)] * n)
    tree.copy_scheduler(folder)
    return Job(
        "crude-link",
        cell_name(flavour, n),
        [PYTHON, "scheduler.py"],
        folder,
        cleanup=[folder / "outputs"],
    )


def make_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    # Chained phony targets, like a pipeline's steps: s2 needs s1, and so on.
    recipe = "\t" + shlex.join(tree.command(flavour))
    rules = [f".PHONY: all {' '.join(f's{i}' for i in range(1, n + 1))}", f"all: s{n}"]
    for i in range(1, n + 1):
        rules += [f"s{i}:" + (f" s{i - 1}" if i > 1 else ""), recipe]
    (folder / "Makefile").write_text("\n".join(rules) + "\n", encoding="utf-8")
    return Job("make", cell_name(flavour, n), ["make"], folder)


def doit_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    text = fill(DODO_PY, COMMAND=repr(tree.command(flavour)), N=n)
    (folder / "dodo.py").write_text(text, encoding="utf-8")
    return Job("doit", cell_name(flavour, n), [tree.peers.bin("doit")], folder)


def snakemake_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    # Snakemake orders rules by files: each step touches done/i (in-process, no extra
    # command), the next one needs it; --forceall reruns them all every time.
    shell = json.dumps(shlex.join(tree.command(flavour)))
    rules = [f'rule all:\n    input: "done/{n}"\n']
    for i in range(1, n + 1):
        needs = f'    input: "done/{i - 1}"\n' if i > 1 else ""
        rules.append(f'rule s{i}:\n{needs}    output: touch("done/{i}")\n    shell: {shell}\n')
    (folder / "Snakefile").write_text("\n".join(rules), encoding="utf-8")
    argv = [tree.peers.bin("snakemake"), "--cores", "1", "--forceall", "--snakefile", "Snakefile"]
    return Job("snakemake", cell_name(flavour, n), argv, folder)


def luigi_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    text = fill(LUIGI_PY, COMMAND=repr(tree.command(flavour)), N=n)
    (folder / "pipeline.py").write_text(text, encoding="utf-8")
    return Job("luigi", cell_name(flavour, n), [tree.peers.bin("python"), "pipeline.py"], folder)


def dvc_job(tree: Tree, folder: Path, flavour: str, n: int) -> Job:
    # Stages in order, no deps/outs: `dvc repro` runs them in dvc.yaml order and stops at
    # the first failure. No analytics or update check: they would wait on the network.
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = tree.peers.bin("dvc")
    job = Job("dvc", cell_name(flavour, n), [dvc, "repro", "--force"], folder, env=env)
    done = subprocess.run(
        [dvc, "init", "--no-scm", "-q"], cwd=folder, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        job.error = f"dvc init failed: {(done.stderr or done.stdout).strip()}"
        return job
    with open(folder / ".dvc" / "config", "a", encoding="utf-8") as config:  # = dvc config
        config.write("    analytics = false\n    check_update = false\n")
    cmd = json.dumps(shlex.join(tree.command(flavour)))
    stages = ["stages:", *(f"  s{i}:\n    cmd: {cmd}" for i in range(1, n + 1))]
    (folder / "dvc.yaml").write_text("\n".join(stages) + "\n", encoding="utf-8")
    return job


JOB_MAKERS: Dict[str, Callable[[Tree, Path, str, int], Job]] = {
    "bash &&": bash_job,
    "python loop": loop_job,
    "hydra app": hydra_job,
    "crude-link": crude_link_job,
    "make": make_job,
    "doit": doit_job,
    "snakemake": snakemake_job,
    "luigi": luigi_job,
    "dvc": dvc_job,
}


def stream_jobs(tree: Tree) -> List[Job]:
    """The 256 MiB step through a shell redirect, a bare Python tee, and crude-link."""
    base = tree.root / "stream"
    folders = {name: base / name.replace(" ", "-") for name in STREAMERS}
    for folder in folders.values():
        folder.mkdir(parents=True)
    writer = [PYTHON, str(tree.writer)]
    shell_out = folders["shell redirect"] / "out.log"
    tee_out = folders["python tee"] / "out.log"
    (folders["python tee"] / "tee.py").write_text(TEE_PY, encoding="utf-8")
    crude = folders["crude-link"]
    write_config(crude, [str(tree.writer)])
    tree.copy_scheduler(crude)
    redirect = ["/bin/bash", "-c", f"{shlex.join(writer)} > {shlex.quote(str(shell_out))}"]
    return [
        Job("shell redirect", STREAM_CELL, redirect, base, cleanup=[shell_out]),
        Job(
            "python tee",
            STREAM_CELL,
            [PYTHON, "tee.py", str(tee_out), *writer],
            folders["python tee"],
            cleanup=[tee_out],
        ),
        Job(
            "crude-link", STREAM_CELL, [PYTHON, "scheduler.py"], crude, cleanup=[crude / "outputs"]
        ),
    ]


def help_jobs(tree: Tree) -> List[Job]:
    """Each help flag and a dry run, in a project with HELP_RUNS runs and a .venv."""
    folder = tree.root / "help"
    for number in range(HELP_RUNS):  # as crude-link leaves them: .hydra/, logs, summary
        run = folder / "outputs" / f"2024-{1 + number // 1000:02d}-01" / f"10-00-00-{number}"
        (run / ".hydra").mkdir(parents=True)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            (run / ".hydra" / name).write_text("a: 1\n", encoding="utf-8")
        for name in ("summary.json", "scheduler.log", "01-true.log"):
            (run / name).write_text("\n", encoding="utf-8")
    venv = folder / ".venv"
    for number in range(HELP_VENV_FILES):
        package = venv / "lib" / "site-packages" / f"pkg{number // 100}" / f"sub{number // 10}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"module{number}.py").write_text("\n", encoding="utf-8")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    write_config(folder, ["/bin/true"])
    tree.copy_scheduler(folder)
    dry = folder / "dry-run"  # its own run folder: outputs/ stays as it was
    jobs = [Job("crude-link", DRY_RUN_CELL,
                [PYTHON, "scheduler.py", "scheduler.dry_run=true", f"hydra.run.dir={dry}"],
                folder, cleanup=[dry])]
    return jobs + [Job("crude-link", flag, [PYTHON, "scheduler.py", flag], folder)
                   for flag in HELP_FLAGS]


def long_jobs(tree: Tree, sizes: Tuple[int, ...] = LONG_SIZES) -> List[Job]:
    """The floors and crude-link running N /bin/true steps, for each N of sizes."""
    jobs = []
    for n in sizes:
        for runner in LONG_RUNNERS:
            folder = tree.root / "true" / f"N{n}" / runner.replace(" ", "-")
            folder.mkdir(parents=True)
            jobs.append(JOB_MAKERS[runner](tree, folder, "/bin/true", n))
    return jobs


def build_jobs(tree: Tree, only: Optional[str] = None) -> List[Job]:
    """Write every fixture under tree.root; return every job, skipped peers left out."""
    if only == "help":
        return help_jobs(tree)
    if only == "long":  # with the N = 10 and 100 cells its per-step costs are measured from
        return long_jobs(tree, (10, 100, *LONG_SIZES))
    tree.noop.write_text(NOOP_PY, encoding="utf-8")
    tree.writer.write_text(fill(WRITER_PY, MIB=STREAM_MIB), encoding="utf-8")
    (tree.root / "rss-hook").mkdir()
    (tree.root / "rss-hook" / "sitecustomize.py").write_text(RSS_HOOK_PY, encoding="utf-8")
    jobs = []
    for flavour in FLAVOURS:
        for n in SIZES:
            for runner, make in JOB_MAKERS.items():
                if runner in tree.peers.skipped:
                    continue
                kind = "true" if flavour == "/bin/true" else "py"
                folder = tree.root / kind / f"N{n}" / runner.replace(" ", "-")
                folder.mkdir(parents=True)
                jobs.append(make(tree, folder, flavour, n))
    return jobs + long_jobs(tree) + stream_jobs(tree) + help_jobs(tree)


# ── Harness ──────────────────────────────────────────────────────────────


def run_waited(
    argv: List[str], cwd: Path, env: Optional[Dict[str, str]] = None
) -> Tuple[int, float, resource.struct_rusage]:
    """Run argv with no terminal and no output; return exit code, wall time and rusage.

    os.wait4 instead of subprocess.run: the same cost, plus the CPU time of the runner and
    of every process it waited for, which the other sessions sharing this machine's two
    cores disturb far less than the wall time.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    timer = threading.Timer(JOB_TIMEOUT, proc.kill)  # only against a hang
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return proc.returncode, elapsed, usage


def run_job(job: Job, record: bool) -> None:
    """Run a job once; keep its wall and CPU time if record; on failure, say why."""
    code, elapsed, usage = run_waited(job.argv, job.cwd, job.env)
    job.clean()
    if code == 0:
        if record:
            job.times.append(elapsed)
            job.cpu.append(usage.ru_utime + usage.ru_stime)
        return
    # Run it again, untimed, to show why: the timed runs keep their output at /dev/null.
    done = subprocess.run(
        job.argv,
        cwd=job.cwd,
        env=job.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT,
    )
    job.clean()
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    job.error = f"exit {code}: " + " / ".join(tail)
    print(f"  {job.runner} {job.cell} FAILED ({job.error}); not run again", file=sys.stderr)


def run_round(jobs: List[Job], rng: random.Random, record: bool) -> float:
    """Run every job once, in a fresh random order; return how long it took."""
    order = [job for job in jobs if not job.error]
    rng.shuffle(order)  # no runner always goes first, or always after the slowest one
    start = time.perf_counter()
    for job in order:
        run_job(job, record)
    return time.perf_counter() - start


def choose_repeats(settings: Settings, spent: float, round_time: float) -> int:
    """Return R: fixed by --repeats, else as many rounds as the time budget leaves room for."""
    if settings.repeats:
        return settings.repeats
    if settings.quick:
        return 1
    fits = int((settings.budget - spent - RSS_RESERVE) / max(round_time, 1e-3))
    return max(settings.min_repeats, min(settings.max_repeats, fits))


def run_benchmark(jobs: List[Job], settings: Settings, started: float) -> int:
    """Warm up (caches, tools' metadata), then R measured rounds; return R.

    The full warm-up round also tells how long a round takes, hence R. --quick warms up on
    the N = 1 and streaming jobs only: enough for the page cache and every tool's first-run
    set-up, at a fraction of the time.
    """
    rng = random.Random(settings.seed)
    short = [job for job in jobs if job.cell.endswith(" N=1")
             or job.cell in (STREAM_CELL, DRY_RUN_CELL, *HELP_FLAGS)]
    warming = short if settings.quick else jobs
    warm = run_round(warming, rng, record=False)
    planned = choose_repeats(settings, time.perf_counter() - started, warm)
    print(f"warm-up: {warm:.1f}s; measuring up to {planned} round(s)", file=sys.stderr)
    took: List[float] = []
    while len(took) < planned:
        took.append(run_round(jobs, rng, record=True))
        print(f"round {len(took)}/{planned}: {took[-1]:.1f}s", file=sys.stderr)
        # Rounds slow down when other work shares the machine: stop when the next one
        # would overrun the budget, once the minimum is measured (--repeats: never).
        left = settings.budget - RSS_RESERVE - (time.perf_counter() - started)
        enough = not settings.repeats and len(took) >= settings.min_repeats
        if enough and left < statistics.mean(took):
            break
    return len(took)


# ── Peak RSS ─────────────────────────────────────────────────────────────
# Three ways to read the scheduler's peak, and why only the first is its own:
# - VmHWM of /proc/self/status at exit (read inside it by RSS_HOOK_PY): the high-water mark
#   of the process's address space since its exec. This is the number the target uses.
# - RUSAGE_SELF's ru_maxrss at exit: the kernel also folds in the image the process had
#   before exec, i.e. the (v)forked copy of its parent: here the benchmark itself.
# - os.wait4()'s ru_maxrss of the reaped scheduler: on Linux that is RUSAGE_BOTH, the
#   largest of the above and of every descendant it waited for: its steps. The check case
#   (one step holding FAT_STEP_MIB) shows it: wait4 sees the step, VmHWM does not.


@dataclass
class RssCase:
    name: str
    hwm_kib: int  # the scheduler's VmHWM at exit: its own peak
    self_kib: int  # its RUSAGE_SELF ru_maxrss at exit
    wait4_kib: int  # wait4's ru_maxrss of the scheduler


def scheduler_peaks(job: Job, hook_dir: Path) -> Tuple[int, int, int]:
    """Run a crude-link job with the hook; return VmHWM, RUSAGE_SELF and wait4's, in KiB."""
    report = hook_dir / "peak.txt"
    env = dict(os.environ, CRUDE_LINK_BENCH_RSS=str(report))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH")]))
    try:
        code, _, usage = run_waited(job.argv, job.cwd, env)
        if code != 0:
            raise RuntimeError(f"{shlex.join(job.argv)} in {job.cwd} exited {code}")
        hwm, self_peak = (int(word) for word in report.read_text().split())
        return hwm, self_peak, usage.ru_maxrss
    finally:
        job.clean()
        report.unlink(missing_ok=True)


def measure_rss(jobs: List[Job], tree: Tree, runs: int) -> List[RssCase]:
    """crude-link's own peak for N = 100 of each flavour, the 256 MiB step, and the check."""
    by_cell = {job.cell: job for job in jobs if job.runner == "crude-link"}
    cases = [cell_name(flavour, 100) for flavour in FLAVOURS] + [STREAM_CELL]
    check = tree.root / "rss-check"
    check.mkdir()
    (check / "fat.py").write_text(fill(FAT_PY, MIB=FAT_STEP_MIB), encoding="utf-8")
    write_config(check, [str(check / "fat.py")])
    tree.copy_scheduler(check)
    check_name = f"check: 1 step holding {FAT_STEP_MIB} MiB"
    by_cell[check_name] = Job(
        "crude-link", check_name, [PYTHON, "scheduler.py"], check, cleanup=[check / "outputs"]
    )
    found = []
    for cell in [*cases, check_name]:
        peaks = [scheduler_peaks(by_cell[cell], tree.root / "rss-hook") for _ in range(runs)]
        found.append(RssCase(cell, *(max(p[i] for p in peaks) for i in range(3))))
    return found


# ── Report ───────────────────────────────────────────────────────────────


class Results:
    """Medians by (runner, cell) of one metric, wall or CPU time, and what follows from them."""

    def __init__(self, jobs: List[Job], metric: str) -> None:
        self.jobs = {(job.runner, job.cell): job for job in jobs}
        self.metric = metric

    def values(self, runner: str, cell: str) -> List[float]:
        job = self.jobs.get((runner, cell))
        return [] if job is None else (job.times if self.metric == "wall" else job.cpu)

    def ms(self, runner: str, cell: str) -> Optional[float]:
        values = self.values(runner, cell)
        return statistics.median(values) * 1000 if values else None

    def per_step(self, runner: str, flavour: str, low: int = 10, high: int = 100
                 ) -> Optional[float]:
        """The slope between N = low and N = high (10 and 100 unless told), in ms per step."""
        t_low = self.ms(runner, cell_name(flavour, low))
        t_high = self.ms(runner, cell_name(flavour, high))
        return None if t_low is None or t_high is None else (t_high - t_low) / (high - low)

    def why_missing(self, runner: str, cell: str, peers: Peers) -> str:
        job = self.jobs.get((runner, cell))
        if runner in peers.skipped:
            return f"skipped: {peers.skipped[runner]}"
        return f"failed: {job.error}" if job and job.error else "not measured"


def fmt_ms(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def fmt_ratio(top: Optional[float], bottom: Optional[float]) -> str:
    return "–" if top is None or not bottom else f"{top / bottom:.2f}×"


def main_table(results: Results, peers: Peers) -> List[str]:
    """One row per runner × step: t1, t10, t100, per step, and the two ratios to the floors."""
    rows = [
        "| runner | step | t1 (ms) | t10 (ms) | t100 (ms) | per step (ms) "
        "| t1 / Hydra app t1 | per step / Python loop per step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = set()
    for runner in RUNNERS:
        for flavour in FLAVOURS:
            times = [results.ms(runner, cell_name(flavour, n)) for n in SIZES]
            step = results.per_step(runner, flavour)
            hydra_t1 = results.ms("hydra app", cell_name(flavour, 1))
            loop_step = results.per_step("python loop", flavour)
            name = f"**{runner}**" if runner == "crude-link" else runner
            rows.append(
                f"| {name} | `{flavour}` | {' | '.join(fmt_ms(t) for t in times)} "
                f"| {fmt_ms(step)} | {fmt_ratio(times[0], hydra_t1)} "
                f"| {fmt_ratio(step, loop_step)} |"
            )
            for n, t in zip(SIZES, times):
                if t is None and runner not in peers.skipped:  # skipped: said once, below
                    why = results.why_missing(runner, cell_name(flavour, n), peers)
                    notes.add(f"- {runner}, `{flavour}` N={n}: {why}")
    return rows + ([""] + sorted(notes) if notes else [])


def spread_table(results: Results) -> List[str]:
    """Every cell's median with its min–max over the rounds: how far to trust a ratio."""
    rows = [
        "| runner | step | N=1 (ms) | N=10 (ms) | N=100 (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for runner in RUNNERS:
        for flavour in FLAVOURS:
            cells = []
            for n in SIZES:
                values = [v * 1000 for v in results.values(runner, cell_name(flavour, n))]
                cells.append(
                    f"{fmt_ms(statistics.median(values))} ({fmt_ms(min(values))}–"
                    f"{fmt_ms(max(values))})"
                    if values
                    else "–"
                )
            rows.append(f"| {runner} | `{flavour}` | {' | '.join(cells)} |")
    return rows


# What each streamer's start-up is taken to be (its t1 with one /bin/true step), so that
# the stream table can also show the cost of the 256 MiB alone.
STARTUP_OF = {"shell redirect": "bash &&", "python tee": "python loop", "crude-link": "crude-link"}


def stream_table(wall: Results, cpu: Results) -> List[str]:
    rows = [
        f"| {STREAM_MIB} MiB to stdout, via | wall, median (ms) | min–max (ms) | MiB/s "
        "| wall / Python tee | CPU (ms) | CPU / Python tee | wall − start-up (ms) "
        "| that / Python tee's |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    wall_tee, cpu_tee = wall.ms("python tee", STREAM_CELL), cpu.ms("python tee", STREAM_CELL)
    net_tee = net_stream_ms(wall, "python tee")
    for runner in STREAMERS:
        values = wall.values(runner, STREAM_CELL)
        med, cpu_med = wall.ms(runner, STREAM_CELL), cpu.ms(runner, STREAM_CELL)
        spread = f"{fmt_ms(min(values) * 1000)}–{fmt_ms(max(values) * 1000)}" if values else "–"
        rate = f"{STREAM_MIB / (med / 1000):.0f}" if med else "–"
        net = net_stream_ms(wall, runner)
        rows.append(
            f"| {runner} | {fmt_ms(med)} | {spread} | {rate} | {fmt_ratio(med, wall_tee)} "
            f"| {fmt_ms(cpu_med)} | {fmt_ratio(cpu_med, cpu_tee)} | {fmt_ms(net)} "
            f"| {fmt_ratio(net, net_tee)} |"
        )
    return rows


def net_stream_ms(results: Results, runner: str) -> Optional[float]:
    """The 256 MiB run less the runner's start-up (its t1 with one /bin/true)."""
    total = results.ms(runner, STREAM_CELL)
    startup = results.ms(STARTUP_OF[runner], cell_name("/bin/true", 1))
    return None if total is None or startup is None else total - startup


def help_table(wall: Results, cpu: Results) -> List[str]:
    rows = [
        f"| {HELP_RUNS:,} runs in outputs/, {HELP_VENV_FILES:,} files in .venv | wall, median "
        "(ms) | min–max (ms) | / dry run | CPU (ms) | CPU / dry run's |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    dry, dry_cpu = wall.ms("crude-link", DRY_RUN_CELL), cpu.ms("crude-link", DRY_RUN_CELL)
    for cell in (DRY_RUN_CELL, *HELP_FLAGS):
        values = wall.values("crude-link", cell)
        med, cpu_med = wall.ms("crude-link", cell), cpu.ms("crude-link", cell)
        spread = f"{fmt_ms(min(values) * 1000)}–{fmt_ms(max(values) * 1000)}" if values else "–"
        rows.append(f"| `{cell}` | {fmt_ms(med)} | {spread} | {fmt_ratio(med, dry)} "
                    f"| {fmt_ms(cpu_med)} | {fmt_ratio(cpu_med, dry_cpu)} |")
    return rows


# The slopes of the long-pipeline table: (low N, high N).
LONG_SLOPES = ((10, 100), (100, 1000), (1000, 10000))


def long_table(results: Results) -> List[str]:
    """t10 ... t10,000 and the per-step slope between each pair of N, /bin/true steps."""
    sizes = (10, 100, *LONG_SIZES)
    rows = [
        f"| runner | {' | '.join(f't{n:,} (ms)' for n in sizes)} | "
        + " | ".join(f"per step {a:,}→{b:,} (ms)" for a, b in LONG_SLOPES) + " |",
        "| --- | " + "---: | " * (len(sizes) + len(LONG_SLOPES)),
    ]
    for runner in LONG_RUNNERS:
        times = [results.ms(runner, cell_name("/bin/true", n)) for n in sizes]
        slopes = [results.per_step(runner, "/bin/true", a, b) for a, b in LONG_SLOPES]
        name = f"**{runner}**" if runner == "crude-link" else runner
        rows.append(f"| {name} | {' | '.join(fmt_ms(t) for t in times)} | "
                    + " | ".join(f"{s:.2f}" if s is not None else "–" for s in slopes) + " |")
    return [row.rstrip() for row in rows]


def linear_target(wall: Results, cpu: Results) -> Target:
    """crude-link's per step at N = 10,000 (1,000→10,000) against its per step at 10."""
    name = (f"long pipelines: crude-link per step at N=10,000 <= per step at N=10 "
            f"+ {LINEAR_SLACK_MS} ms")
    at_10 = wall.per_step("crude-link", "/bin/true")
    at_10k = wall.per_step("crude-link", "/bin/true", *LONG_SLOPES[-1])
    if at_10 is None or at_10k is None:
        return Target(name, None, "not measured")
    detail = f"/bin/true: {at_10k:.2f} vs {at_10:.2f} ms ({at_10k - at_10:+.2f} ms"
    cpu_10, cpu_10k = (cpu.per_step("crude-link", "/bin/true"),
                       cpu.per_step("crude-link", "/bin/true", *LONG_SLOPES[-1]))
    if cpu_10 is not None and cpu_10k is not None:
        detail += f"; CPU {cpu_10k - cpu_10:+.2f} ms"
    loop_10k = wall.per_step("python loop", "/bin/true", *LONG_SLOPES[-1])
    if loop_10k is not None:
        detail += f"; at N=10,000 the Python loop's is {loop_10k:.2f} ms"
    return Target(name, at_10k <= at_10 + LINEAR_SLACK_MS, detail + ")")


def mb(kib: int) -> str:
    return f"{kib * 1024 / 1e6:.1f} MB"


def rss_table(cases: List[RssCase]) -> List[str]:
    rows = [
        "| crude-link run | **own peak: VmHWM at exit** | RUSAGE_SELF ru_maxrss "
        "(+ the pre-exec image) | wait4 ru_maxrss (+ every step) |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows += [
        f"| {c.name} | {mb(c.hwm_kib)} | {mb(c.self_kib)} | {mb(c.wait4_kib)} |" for c in cases
    ]
    return rows


RSS_NOTE = (
    "MB = 10⁶ bytes. The target reads VmHWM from /proc/self/status inside the scheduler at "
    "exit (a sitecustomize hook loaded only in these runs): the peak of its own address space "
    "since exec. `os.wait4`'s ru_maxrss is no good alone: Linux gives the reaped child's "
    "RUSAGE_BOTH, the max over the scheduler and every step it waited for (see the check row), "
    "and ru_maxrss also keeps the pre-exec image, the forked copy of the benchmark process."
)


@dataclass
class Target:
    name: str
    passed: Optional[bool]  # None: could not be measured
    detail: str

    def line(self) -> str:
        status = {True: "PASS", False: "FAIL", None: "N/A "}[self.passed]
        return f"{status}  {self.name}: {self.detail}"


def ratio_target(
    name: str,
    mine: Optional[float],
    floor: Optional[float],
    limit: float,
    cpu: Tuple[Optional[float], Optional[float]],
) -> Target:
    """A target 'mine <= limit × floor' on wall time; the CPU-time ratio is shown beside it."""
    if mine is None or floor is None:
        return Target(name, None, "not measured")
    detail = f"{mine:.0f} ms vs {floor:.0f} ms = {mine / floor:.2f}x"
    if cpu[0] is not None and cpu[1]:
        detail += f" (CPU time: {cpu[0] / cpu[1]:.2f}x)"
    return Target(name, mine <= limit * floor, detail)


def per_step_target(wall: Results, cpu: Results) -> Target:
    parts, passed = [], True
    for flavour in FLAVOURS:
        mine, floor = wall.per_step("crude-link", flavour), wall.per_step("python loop", flavour)
        if mine is None or floor is None:
            return Target("per-step overhead", None, f"{flavour}: not measured")
        passed = passed and mine <= floor + PER_STEP_SLACK_MS
        cpu_mine, cpu_floor = (
            cpu.per_step("crude-link", flavour),
            cpu.per_step("python loop", flavour),
        )
        extra = f"; CPU {cpu_mine - cpu_floor:+.2f} ms" if cpu_mine and cpu_floor else ""
        hydra = wall.per_step("hydra app", flavour)  # Hydra's own cost grows with the config
        if hydra is not None:
            extra += f"; the Hydra app: {hydra - floor:+.2f} ms"
        parts.append(f"{flavour}: {mine:.2f} vs {floor:.2f} ms ({mine - floor:+.2f} ms{extra})")
    name = f"per-step overhead <= Python loop's + {PER_STEP_SLACK_MS} ms"
    return Target(name, passed, "; ".join(parts))


def beats_peers(results: Results) -> Tuple[List[str], Optional[Tuple[float, str]], List[str]]:
    """Return the cells where crude-link is not faster than a slow peer, the closest call,
    and the cells not measured."""
    losses, missing = [], []
    closest: Optional[Tuple[float, str]] = None
    for peer in SLOWER_PEERS:
        for flavour in FLAVOURS:
            for n in SIZES:
                cell = cell_name(flavour, n)
                mine, theirs = results.ms("crude-link", cell), results.ms(peer, cell)
                if mine is None or theirs is None:
                    missing.append(f"{peer} {cell}")
                    continue
                if mine >= theirs:
                    losses.append(f"{peer} {cell} ({mine:.0f} vs {theirs:.0f} ms)")
                if closest is None or theirs / mine < closest[0]:
                    closest = (theirs / mine, f"{peer} {cell}: {theirs:.0f} vs {mine:.0f} ms")
    return losses, closest, missing


def peers_target(wall: Results, cpu: Results) -> Target:
    name = "faster than Snakemake, Luigi and DVC at every N and step"
    losses, closest, missing = beats_peers(wall)
    if closest is None:
        return Target(name, None, f"not measured: {', '.join(SLOWER_PEERS)}")
    detail = f"slower than {', '.join(losses)}" if losses else "faster in every cell"
    detail += f"; {'worst' if losses else 'closest'}: {closest[1]} ({closest[0]:.2f}x)"
    cpu_losses = beats_peers(cpu)[0]
    cpu_detail = f"more than {', '.join(cpu_losses)}" if cpu_losses else "less in every cell"
    detail += f"; CPU time: {cpu_detail}"
    if missing:
        detail += f"; not measured: {', '.join(missing)}"
    return Target(name, False if losses else (None if missing else True), detail)


def check_targets(wall: Results, cpu: Results, cases: List[RssCase]) -> List[Target]:
    true1 = cell_name("/bin/true", 1)
    targets = [
        ratio_target(
            f"start-up (N=1, /bin/true) <= {STARTUP_LIMIT:.2f}x Hydra app",
            wall.ms("crude-link", true1),
            wall.ms("hydra app", true1),
            STARTUP_LIMIT,
            (cpu.ms("crude-link", true1), cpu.ms("hydra app", true1)),
        ),
        per_step_target(wall, cpu),
        linear_target(wall, cpu),
        ratio_target(
            f"{STREAM_MIB} MiB streamed and logged <= {STREAM_LIMIT:.2f}x Python tee",
            wall.ms("crude-link", STREAM_CELL),
            wall.ms("python tee", STREAM_CELL),
            STREAM_LIMIT,
            (cpu.ms("crude-link", STREAM_CELL), cpu.ms("python tee", STREAM_CELL)),
        ),
    ]
    # Most of a 256 MiB run can be start-up: show the streaming alone beside the target.
    net, net_tee = net_stream_ms(wall, "crude-link"), net_stream_ms(wall, "python tee")
    if net is not None and net_tee:
        targets[
            -1
        ].detail += (
            f"; less each one's start-up: {net:.0f} vs {net_tee:.0f} ms = {net / net_tee:.2f}x"
        )
    measured = [c for c in cases if not c.name.startswith("check")]
    if measured:
        worst = max(measured, key=lambda c: c.hwm_kib)
        detail = f"{mb(worst.hwm_kib)} at most ({worst.name}); " + ", ".join(
            f"{c.name}: {mb(c.hwm_kib)}" for c in measured
        )
        limit = RSS_LIMIT_MB * 1e6 / 1024
        targets.append(
            Target(f"scheduler RSS <= {RSS_LIMIT_MB:.0f} MB", worst.hwm_kib <= limit, detail)
        )
    targets.append(peers_target(wall, cpu))
    slowest = max(HELP_FLAGS, key=lambda flag: wall.ms("crude-link", flag) or 0.0)
    targets.append(ratio_target(
        f"help flags in a cluttered project <= {HELP_LIMIT:.2f}x a dry run (slowest: {slowest})",
        wall.ms("crude-link", slowest), wall.ms("crude-link", DRY_RUN_CELL), HELP_LIMIT,
        (cpu.ms("crude-link", slowest), cpu.ms("crude-link", DRY_RUN_CELL))))
    return targets


@dataclass
class RunInfo:
    """What the report says about the run itself."""

    settings: Settings
    peers: Peers
    scheduler: str  # which scheduler.py was measured (scheduler_provenance)
    repeats: int = 0
    wall_time: float = 0.0
    loads: Tuple[str, str] = ("?", "?")  # load average at start, at end


def machine_lines(info: RunInfo) -> List[str]:
    peers, settings = info.peers, info.settings
    import hydra
    import omegaconf

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    versions = [f"hydra-core {hydra.__version__}", f"omegaconf {omegaconf.__version__}"]
    versions += [f"{name} {version}" for name, version in peers.versions.items() if name != "make"]
    versions.append(peers.versions.get("make", "make: skipped"))
    versions.append((output_lines(["/bin/bash", "--version"]) or ["bash ?"])[0])
    warm_up = "a warm-up on the N=1 and 256 MiB jobs" if settings.quick else "1 warm-up round"
    return [
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: `nproc` = {os.cpu_count()}, {cpu}, "
        f"{platform.system()} {platform.release()}; load average (1, 5, 15 min) at start "
        f"{info.loads[0]}, at end {info.loads[1]}",
        f"- python: {platform.python_version()} ({PYTHON})",
        f"- scheduler.py: {info.scheduler}",
        f"- versions: {'; '.join(versions)}",
        f"- peers' venv: {peers.venv}",
        f"- command: `{settings.command}` (from the repo root)",
        f"- rounds: {warm_up} + {info.repeats} measured, every job once per round in a "
        f"shuffled order; whole run {info.wall_time / 60:.1f} min",
    ]


def scheduler_provenance(scheduler: bytes) -> str:
    """Say which scheduler.py was measured: the team edits it while benchmarks run."""
    git = ["git", "-C", str(REPO)]
    commit = (output_lines([*git, "log", "-1", "--format=%h %s"]) or ["? (no git)"])[0]
    try:
        committed = subprocess.run([*git, "show", "HEAD:scheduler.py"], capture_output=True).stdout
    except OSError:
        committed = b""
    same = "as committed in" if committed == scheduler else "uncommitted changes on top of"
    return f"sha256 {hashlib.sha256(scheduler).hexdigest()[:12]}…, {same} {commit}"


def load_average() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


NOTES = [
    "- Each row's job: run N steps in order, stop at the first failure; no terminal on stdin, "
    "stdout and stderr to /dev/null. `noop.py` runs with the project venv's python "
    "(crude-link's `sys.executable`; the others get its absolute path).",
    "- per step = (t100 − t10) / 90 (long pipelines: the slope between each pair of N); "
    "start-up = t1. Medians over the measured rounds; only "
    "ratios within this one run mean anything (absolute times drift ±20% on this machine).",
    "- CPU time = user + sys of the runner and of every process it waited for (os.wait4): "
    "less disturbed than wall time by whatever else runs on the two cores.",
    "- make: chained phony targets. doit: tasks chained by `task_dep`, verbosity 2. "
    "Snakemake: rules chained by `touch()` outputs, `--cores 1 --forceall`; its `shell:` "
    "runs each step through bash. Luigi: `luigi.build(local_scheduler=True, workers=1)`, "
    "step i requires step i−1. DVC: `dvc repro --force` of N ordered stages (`dvc init "
    "--no-scm`, analytics and update check off); each `cmd` runs through a shell.",
    "- crude-link and the Hydra app each write a run folder (removed after each run, untimed).",
]


def report(jobs: List[Job], cases: List[RssCase], info: RunInfo) -> str:
    peers = info.peers
    wall, cpu = Results(jobs, "wall"), Results(jobs, "cpu")
    skipped = [f"- {name}: skipped: {why}" for name, why in peers.skipped.items()]
    lines = [
        "# crude-link benchmark",
        "",
        *machine_lines(info),
        "",
        "## Steps: N = 1, 10, 100 (wall time)",
        "",
        *main_table(wall, peers),
        "",
        "## Long pipelines: N = 10 to 10,000 `/bin/true` steps (wall time)",
        "",
        *long_table(wall),
        "",
        "## Throughput: one step printing 256 MiB",
        "",
        *stream_table(wall, cpu),
        "",
        "## Peak RSS of the crude-link scheduler process",
        "",
        *rss_table(cases),
        "",
        RSS_NOTE,
        "",
        "## Help in a cluttered project, against a dry run",
        "",
        *help_table(wall, cpu),
        "",
        "## Targets",
        "",
        "```",
        *(target.line() for target in check_targets(wall, cpu, cases)),
        "```",
        "",
        "## Steps: the same, in CPU time",
        "",
        *main_table(cpu, peers),
        "",
        "## Long pipelines: the same, in CPU time",
        "",
        *long_table(cpu),
        "",
        "## Spread: wall time, median (min–max) over the measured rounds",
        "",
        *spread_table(wall),
        "",
        "## Notes",
        "",
        *NOTES,
        *(["", "Skipped:", *skipped] if skipped else []),
        "",
    ]
    return "\n".join(lines)


# ── Main ─────────────────────────────────────────────────────────────────


def main(argv: List[str]) -> int:
    settings = parse_args(argv)
    started, load_start = time.perf_counter(), load_average()
    try:
        import hydra  # noqa: F401 - the Hydra app and crude-link run with this python
    except ImportError:
        print(f"{PYTHON} has no hydra-core: run this with the project's venv", file=sys.stderr)
        return 2
    peers = find_peers(settings.peers_venv)
    for name, why in peers.skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="crude-link-bench-"))
    try:
        tree = Tree(root, peers)
        # Said now, not at the end: the team may commit a new scheduler.py meanwhile.
        info = RunInfo(settings, peers, scheduler_provenance(tree.scheduler))
        jobs = build_jobs(tree, settings.only)
        for job in jobs:
            if job.error:  # a fixture that could not be set up (e.g. dvc init)
                print(f"  {job.runner} {job.cell}: {job.error}", file=sys.stderr)
        info.repeats = run_benchmark(jobs, settings, started)
        runs = 1 if settings.quick else RSS_RUNS
        cases = [] if settings.only else measure_rss(jobs, tree, runs)
        info.loads = (load_start, load_average())
        info.wall_time = time.perf_counter() - started
        text = report(jobs, cases, info)
    finally:
        if settings.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(text)
    if settings.out:
        settings.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
