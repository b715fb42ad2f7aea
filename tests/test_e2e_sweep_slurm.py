"""End to end: a multirun whose jobs run as a Slurm job array (hydra-submitit-launcher).

`python scheduler.py -m hydra/launcher=submitit_slurm default.x=0,3` on the real single-node
Slurm of the `slurm` fixture (tests/conftest.py: 2 CPUs, partition debug, no accounting, so submitit
warns about sacct). Each job's folder is <sweep>/<n>/ (summary.json, 01-fate.log, .hydra/),
what its pipeline printed is in <sweep>/.submitit/<array>_<n>/<array>_<n>_0_log.out, and the
launching process ends with a report of the jobs that failed, never a traceback or a hang.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set

import pytest
from conftest import (
    load_json,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    split_log,
    sweep_folder,
)

pytestmark = pytest.mark.e2e
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

LAUNCHER = "hydra/launcher=submitit_slurm"
TRACEBACK = "Traceback (most recent call last)"

# x is swept; the one step prints it and exits with it.
CONFIG = """\
default: {x: 0}  # plain data (a top-level key of its own would be a config error)
steps:
  - script: tasks/fate.py
    arguments: {print: "x is ${default.x}", exit_code: "${default.x}"%s}
"""
# The step prints "waiting", then waits until the test creates <project>/go-<x>.
WAITING = CONFIG % ", wait_for: 'go-${default.x}'"
# As WAITING, and a SIGINT or SIGTERM makes fate print "fate: got SIGINT" and exit 128+N.
TRAPPING = CONFIG % ", wait_for: 'go-${default.x}', trap: true"
# Job x=2 ends after job x=1 (it sleeps longer): job order is not the order they end in.
SLEEPING = CONFIG % ", sleep: '${default.x}'"

NEVER_STARTS = "can never start: Slurm says PartitionConfig (it asks for more than the " \
               "partition or any node offers)"
NO_RESULT = "ended without a result: cancelled, or killed before crude-link could finish it"


def project_with(make_project: Any, config: str) -> Path:
    project: Path = make_project(config).resolve()  # the scheduler names resolved paths
    return project


def array_tasks(sweep: Path) -> Dict[int, str]:
    """Return job number → its Slurm array task id (11_0, 11_1), from submitit's folders."""
    tasks = {}
    for path in (sweep / ".submitit").iterdir():
        match = re.fullmatch(r"(\d+)_(\d+)", path.name)
        if match and path.is_dir():
            tasks[int(match[2])] = path.name
    arrays = {task.split("_")[0] for task in tasks.values()}
    assert len(arrays) == 1, f"expected the jobs of one array, found {sorted(tasks.values())}"
    return tasks


def slurm_log(sweep: Path, number: int, stream: str = "out") -> Path:
    task = array_tasks(sweep)[number]
    return sweep / ".submitit" / task / f"{task}_0_log.{stream}"


def slurm_lines(sweep: Path, number: int) -> List[str]:
    """Return the report's lines that name a job's Slurm output, as the report orders them."""
    return [f"    Slurm output: {slurm_log(sweep, number, stream)}" for stream in ("err", "out")]


def job_line(sweep: Path, number: int, overrides: str, how: str) -> List[str]:
    """Return the report's lines for one failed job that ran: its own line, its Slurm output."""
    return [f"  job {number} ({overrides}): {how}; {sweep / str(number) / 'summary.json'}",
            *slurm_lines(sweep, number)]


def step_output(job: Path) -> bytes:
    """Return what the job's one step printed (its log without the attempt separator)."""
    data, attempts = split_log(job / "01-fate.log")
    assert attempts == [1], data
    return data


def check_job(sweep: Path, number: int, status: str, exit_code: int, printed: bytes,
              exact: bool = True) -> None:
    """Check a job's summary.json, its step log (byte for byte, or how it starts) and its
    Slurm output."""
    job = sweep / str(number)
    summary = load_json(job / "summary.json")
    assert (summary["status"], summary["exit_code"]) == (status, exit_code), summary
    assert summary["output_dir"] == str(job)
    [step] = summary["steps"]
    assert (step["name"], step["status"], step["exit_code"]) == ("fate", status, exit_code)
    output = step_output(job)
    assert output == printed if exact else output.startswith(printed), output
    out = slurm_log(sweep, number).read_bytes()
    assert printed in out, out  # the pipeline's terminal output goes to submitit's log.out
    assert f"run {status} (exit code {exit_code}); run folder: {job}\n".encode() in out, out


def report(stderr: str) -> List[str]:
    """Return the lines from crude-link's report (or its cancel line) to the end."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"crude-link: (cancelling the sweep's|\d+ of \d+ job)", line)),
                 len(lines))
    return lines[start:]


def check_clean(stdout: str, stderr: str) -> None:
    assert TRACEBACK not in stdout + stderr, stdout + stderr


def wait_for(ready: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


class Sweep:
    """A multirun started in the background; its output goes to files, so nothing blocks."""

    def __init__(self, project: Path, proc: "subprocess.Popen[bytes]", out: Path) -> None:
        self.project, self.proc, self.out = project, proc, out

    def folder(self) -> Path:
        return sweep_folder(self.project)

    def wait_waiting(self, slurm: Any, jobs: int = 2, timeout: float = 60) -> Path:
        """Wait until every job is RUNNING in squeue and its step printed "waiting"."""

        def ready() -> bool:
            assert self.proc.poll() is None, f"the sweep ended early: {self.output()}"
            folders = [path for path in self.project.glob("multirun/*/*")
                       if path.is_dir() and path.parent.name != "latest"]
            if len(folders) != 1:
                return False
            logs = [folders[0] / str(n) / "01-fate.log" for n in range(jobs)]
            running = [row for row in slurm.squeue() if row.split()[1] == "RUNNING"]
            return len(running) == jobs and all(
                log.exists() and b"waiting\n" in log.read_bytes() for log in logs)

        try:
            wait_for(ready, timeout, f"{jobs} job(s) running and waiting")
        except AssertionError as error:
            raise AssertionError(f"{error}; squeue {slurm.squeue()}; {self.output()}") from None
        sweep = self.folder()
        assert sweep.name.endswith(f"-{self.proc.pid}"), sweep  # named by the launching pid
        for number in range(jobs):
            out = slurm_log(sweep, number).read_bytes()
            assert f"x is {number}\nwaiting\n".encode() in out, out
        return sweep

    def finish(self, timeout: float = 60) -> int:
        """Wait for the sweep to end (a hang fails the test); return its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep still runs after {timeout}s: {self.output()}")

    def output(self) -> str:
        return f"{self.stdout()}\n--- stderr:\n{self.stderr()}"

    def stdout(self) -> str:
        return (self.out / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.out / "stderr").read_text(errors="replace")


@contextlib.contextmanager
def started_sweep(project: Path, out: Path, *overrides: str,
                  env: Optional[Dict[str, str]] = None) -> Iterator[Sweep]:
    """Start `scheduler.py -m` on Slurm with no terminal; on the way out, let waiting steps
    end (x=0 and x=1) and kill the launching process if it still runs."""
    out.mkdir()
    with (out / "stdout").open("wb") as stdout, (out / "stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            scheduler_command(project, "-m", LAUNCHER, *overrides),
            cwd=project.parent, env=env or scheduler_env(), stdin=subprocess.DEVNULL,
            stdout=stdout, stderr=stderr)
    try:
        yield Sweep(project, proc, out)
    finally:
        release(project, 0, 1)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def release(project: Path, *numbers: int) -> None:
    """Let the waiting step of the jobs with these x end (WAITING, TRAPPING)."""
    for number in numbers:
        (project / f"go-{number}").touch()


def scancel(*args: str) -> None:
    subprocess.run(["scancel", *args], check=True, capture_output=True, timeout=30)


# ── Every job succeeds; a job fails ──────────────────────────────────────


def test_a_sweep_whose_jobs_all_succeed_exits_0_with_no_report(
    make_project: Any, slurm: Any
) -> None:
    project = project_with(make_project, CONFIG % "")
    result = run_scheduler(project, "-m", LAUNCHER, "steps.0.arguments.print=one,two")
    assert result.returncode == 0, result.stdout + result.stderr
    check_clean(result.stdout, result.stderr)
    assert "crude-link:" not in result.stderr, result.stderr  # no report, no cancel
    sweep = sweep_folder(project)
    assert f"Submitit 'slurm' sweep output dir : {sweep}\n" in result.stdout, result.stdout
    assert sorted(path.name for path in sweep.glob("[0-9]*")) == ["0", "1"]
    for number, word in enumerate(["one", "two"]):
        check_job(sweep, number, "succeeded", 0, f"{word}\n".encode())
        overrides = (sweep / str(number) / ".hydra" / "overrides.yaml").read_text()
        assert overrides == f"- steps.0.arguments.print={word}\n"
    assert list(project.glob("outputs/*/*/summary.json")) == []  # no plain run folder
    assert slurm.wait_queue_empty(timeout=15) == []


def test_a_failed_job_fails_the_sweep_with_its_exit_code_and_a_report(
    make_project: Any, slurm: Any
) -> None:
    project = project_with(make_project, CONFIG % "")
    result = run_scheduler(project, "-m", LAUNCHER, "default.x=0,3")
    assert result.returncode == 3, result.stdout + result.stderr
    check_clean(result.stdout, result.stderr)
    sweep = sweep_folder(project)
    check_job(sweep, 0, "succeeded", 0, b"x is 0\n")
    check_job(sweep, 1, "failed", 3, b"x is 3\n")
    assert report(result.stderr) == [
        f"crude-link: 1 of 2 job(s) failed in {sweep}:",
        *job_line(sweep, 1, "default.x=3", "failed, exit code 3"),
    ], result.stderr
    assert slurm.wait_queue_empty(timeout=15) == []


def test_the_sweep_exits_with_the_first_failed_job_in_job_order(
    make_project: Any, slurm: Any
) -> None:
    # Job 0 (x=2) sleeps 2 s, job 1 (x=1) 1 s: job 1 (usually) fails first, yet job 0 wins.
    project = project_with(make_project, SLEEPING)
    result = run_scheduler(project, "-m", LAUNCHER, "default.x=2,1")
    assert result.returncode == 2, result.stdout + result.stderr
    check_clean(result.stdout, result.stderr)
    sweep = sweep_folder(project)
    check_job(sweep, 0, "failed", 2, b"x is 2\n")
    check_job(sweep, 1, "failed", 1, b"x is 1\n")
    assert report(result.stderr) == [
        f"crude-link: 2 of 2 job(s) failed in {sweep}:",
        *job_line(sweep, 0, "default.x=2", "failed, exit code 2"),
        *job_line(sweep, 1, "default.x=1", "failed, exit code 1"),
    ], result.stderr
    assert slurm.wait_queue_empty(timeout=15) == []


# ── The lock: shared among the jobs, held against a plain run ────────────


def test_jobs_run_at_once_sharing_the_lock_while_a_plain_run_exits_75(
    make_project: Any, slurm: Any, tmp_path: Path
) -> None:
    project = project_with(make_project, WAITING)
    with started_sweep(project, tmp_path / "sweep", "default.x=0,1",
                       "steps.0.arguments.exit_code=0") as sweep:
        # Neither job can end before it is released: both waiting means both run at once.
        folder = sweep.wait_waiting(slurm)
        plain = run_scheduler(project, "~steps.0.arguments.wait_for")
        assert plain.returncode == 75, plain.stdout + plain.stderr
        assert re.fullmatch(
            rf"crude-link: another run is using {re.escape(str(project))} \(a multirun, "
            rf"{re.escape(str(folder))}, started \S+, run folder {re.escape(str(folder))}/[01]"
            rf"\); not starting\. Wait for it, or stop it first\.\n", plain.stderr), plain.stderr
        assert "x is" not in plain.stdout  # no step ran
        assert list(project.glob("outputs/*/*/summary.json")) == []
        release(project, 0, 1)
        code = sweep.finish()
        assert code == 0, sweep.output()
    check_clean(sweep.stdout(), sweep.stderr())
    assert "crude-link:" not in sweep.stderr(), sweep.stderr()
    for number in (0, 1):
        check_job(folder, number, "succeeded", 0, f"x is {number}\nwaiting\n".encode())
    # The two jobs overlapped in time.
    spans = [load_json(folder / str(n) / "summary.json") for n in (0, 1)]
    assert max(s["started"] for s in spans) < min(s["finished"] for s in spans), spans
    assert slurm.wait_queue_empty(timeout=15) == []


# ── A job cancelled in Slurm ─────────────────────────────────────────────


@pytest.mark.parametrize(
    "options",
    [pytest.param(["--signal=TERM"], id="scancel-signal-TERM"),
     pytest.param([], id="plain-scancel")],
)
def test_a_job_cancelled_with_sigterm_ends_as_interrupted_and_fails_the_sweep(
    make_project: Any, slurm: Any, tmp_path: Path, options: Sequence[str]
) -> None:
    """SIGTERM reaches the job's step (a plain scancel sends it KillWait = 30 s before SIGKILL):
    crude-link stops fate, writes interrupted/143 and ends through Hydra with a result."""
    project = project_with(make_project, WAITING)
    with started_sweep(project, tmp_path / "sweep", "default.x=0,1") as sweep:
        folder = sweep.wait_waiting(slurm)
        started = time.monotonic()
        scancel(*options, array_tasks(folder)[1])
        summary = folder / "1" / "summary.json"
        wait_for(lambda: load_json(summary)["status"] != "running", 30, "job 1 to end")
        release(project, 0)
        code = sweep.finish()
        elapsed = time.monotonic() - started
    assert code == 143, sweep.output()
    assert elapsed < 40, elapsed
    check_clean(sweep.stdout(), sweep.stderr())
    check_job(folder, 0, "succeeded", 0, b"x is 0\nwaiting\n")
    check_job(folder, 1, "interrupted", 143, b"x is 1\nwaiting\n")
    assert (folder / ".submitit" / array_tasks(folder)[1]
            / f"{array_tasks(folder)[1]}_0_result.pkl").exists()
    assert report(sweep.stderr()) == [
        f"crude-link: 1 of 2 job(s) failed in {folder}:",
        *job_line(folder, 1, "default.x=1", "interrupted, exit code 143"),
    ], sweep.stderr()
    assert slurm.wait_queue_empty(timeout=15) == []


def test_jobs_killed_without_a_result_end_the_sweep_after_the_grace(
    make_project: Any, slurm: Any, tmp_path: Path
) -> None:
    """Job 0's step gets SIGKILL (crude-link and its step die at once): no result, so
    submitit would wait forever; the launching process gives up 30 s after the jobs left
    squeue and reports it. Job 1 gets `scancel --signal=TERM --full`, which signals the batch
    step too, whose srun answers SIGTERM by killing the job step: a race between crude-link
    ending the job as interrupted (a result) and srun's SIGKILL (no result, the usual
    outcome here). Either way the sweep ends, with a report that matches each job."""
    project = project_with(make_project, WAITING)
    with started_sweep(project, tmp_path / "sweep", "default.x=0,1") as sweep:
        folder = sweep.wait_waiting(slurm)
        tasks = array_tasks(folder)
        started = time.monotonic()
        scancel("--signal=KILL", f"{tasks[0]}.0")  # step 0: srun's python -m submitit
        scancel("--signal=TERM", "--full", tasks[1])
        code = sweep.finish(timeout=120)
        elapsed = time.monotonic() - started
    assert code == 1, sweep.output()  # job 0 left no exit code of its own
    assert 28 < elapsed < 90, elapsed  # NO_RESULT_GRACE (30 s) and polling, then no hang
    check_clean(sweep.stdout(), sweep.stderr())
    results = {n: list((folder / ".submitit" / tasks[n]).glob("*_result.pkl")) for n in tasks}
    assert results[0] == []
    expected = [f"crude-link: 2 of 2 job(s) failed in {folder}:"]
    for number in (0, 1):
        if results[number]:  # crude-link won the race
            check_job(folder, number, "interrupted", 143, f"x is {number}\nwaiting\n".encode())
            expected += job_line(folder, number, f"default.x={number}",
                                 "interrupted, exit code 143")
        else:
            assert step_output(folder / str(number)) == f"x is {number}\nwaiting\n".encode()
            summary = load_json(folder / str(number) / "summary.json")
            assert summary["status"] == "running", summary  # killed mid-run
            out = slurm_log(folder, number).read_bytes()
            assert f"x is {number}\nwaiting\n".encode() in out, out
            expected += [f"  job {number} (default.x={number}): {NO_RESULT}",
                         *slurm_lines(folder, number)]
    assert report(sweep.stderr()) == expected, sweep.stderr()
    assert slurm.squeue() == []


def test_a_job_that_can_never_start_is_cancelled_and_reported(
    make_project: Any, slurm: Any
) -> None:
    project = project_with(make_project, CONFIG % "")
    started = time.monotonic()
    result = run_scheduler(project, "-m", LAUNCHER, "default.x=0,3",
                           "hydra.launcher.cpus_per_task=8")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 40, elapsed  # the node has 2 CPUs: no waiting for 8
    check_clean(result.stdout, result.stderr)
    sweep = sweep_folder(project)
    assert sorted(array_tasks(sweep)) == [0, 1]
    assert not list(sweep.glob("[0-9]*"))  # no job ran: no job folder
    assert not list(sweep.glob(".submitit/*/*_log.*"))
    tail = report(result.stderr)
    assert tail[0] == f"crude-link: 2 of 2 job(s) failed in {sweep}:", result.stderr
    assert len(tail) == 3, result.stderr
    for number, line in enumerate(tail[1:]):
        # No job folder, so no .hydra/overrides.yaml to name the job's overrides from.
        assert re.fullmatch(rf"  job {number}( \(default.x={[0, 3][number]}\))?: "
                            rf"{re.escape(NEVER_STARTS)}", line), result.stderr
    assert slurm.squeue() == []


# ── Ctrl-C or SIGTERM to the launching process ───────────────────────────


@pytest.mark.parametrize("signum, twice", [(signal.SIGINT, False), (signal.SIGTERM, False),
                                           (signal.SIGINT, True)],
                         ids=["SIGINT", "SIGTERM", "SIGINT-twice"])
def test_a_signal_to_the_launching_process_cancels_the_sweeps_jobs(
    make_project: Any, slurm: Any, tmp_path: Path, signum: int, twice: bool
) -> None:
    """Ctrl-C (or SIGTERM) cancels every job; a second Ctrl-C while it does so changes
    nothing: no traceback, no job left behind."""
    project = project_with(make_project, TRAPPING)
    name = signal.Signals(signum).name
    code_of_signal = 128 + signum
    with started_sweep(project, tmp_path / "sweep", "default.x=0,1") as sweep:
        folder = sweep.wait_waiting(slurm)
        started = time.monotonic()
        os.kill(sweep.proc.pid, signum)  # as Ctrl-C would (no terminal: send it ourselves)
        if twice:
            time.sleep(0.5)
            os.kill(sweep.proc.pid, signum)
        code = sweep.finish()
        elapsed = time.monotonic() - started
    assert code == code_of_signal, sweep.output()
    assert elapsed < 30, elapsed
    check_clean(sweep.stdout(), sweep.stderr())
    assert slurm.squeue() == []  # no job of the sweep is left
    expected = [
        "crude-link: cancelling the sweep's 2 job(s) in Slurm",
        f"crude-link: 2 of 2 job(s) failed in {folder}:",
    ]
    for number in (0, 1):
        # The signal reached the task once: Slurm delivers it to every process of the job
        # step, and crude-link, a task of that step, does not pass it on a second time.
        check_job(folder, number, "interrupted", code_of_signal,
                  f"x is {number}\nwaiting\nfate: got {name}\n".encode())
        expected += job_line(folder, number, f"default.x={number}",
                             f"interrupted, exit code {code_of_signal}")
    assert report(sweep.stderr()) == expected, sweep.stderr()


SCANCEL_LOG = """\
#!/bin/sh
printf '%s\\n' "$*" >> {log}
exec {scancel} "$@"
"""


def addressed(token: str, tasks: Dict[str, str], array: str) -> Set[str]:
    """Return the array tasks (11_0...) that a job id given to scancel stands for.

    11_0 is one task; a task's own job id is that task; the array's job id (which the
    array's last task also carries as its job id) is every task of the array.
    """
    if "_" in token:
        return {token}
    if token == array:
        return set(tasks)
    return {task for task, job_id in tasks.items() if job_id == token}


def test_cancelling_the_sweep_signals_each_running_job_once(
    make_project: Any, slurm: Any, tmp_path: Path
) -> None:
    """Ctrl-C to the launching process: each running array task gets SIGINT once from scancel.

    squeue's JobID of an array's last task is the array's own id, and `scancel 12` means
    every task of array 12: a task signalled by its own id and then by that one gets two
    SIGINTs (a task that cleans up on the first may be stopped by the second).
    """
    project = project_with(make_project, TRAPPING)
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    calls = tmp_path / "scancel.log"
    real = shutil.which("scancel")
    assert real is not None
    wrapper = wrappers / "scancel"
    wrapper.write_text(SCANCEL_LOG.format(log=calls, scancel=real))
    wrapper.chmod(0o755)
    env = scheduler_env()
    env["PATH"] = f"{wrappers}{os.pathsep}{env['PATH']}"
    with started_sweep(project, tmp_path / "sweep", "default.x=0,1", env=env) as sweep:
        folder = sweep.wait_waiting(slurm)
        listing = subprocess.run(["squeue", "--noheader", "--format", "%i %A %F"], check=True,
                                 capture_output=True, text=True, timeout=30).stdout
        rows = [line.split() for line in listing.splitlines()]
        tasks = {task: job_id for task, job_id, _ in rows}
        arrays = {array for _, _, array in rows}
        assert sorted(tasks) == sorted(array_tasks(folder).values()), listing
        assert len(arrays) == 1, listing
        array = arrays.pop()
        os.kill(sweep.proc.pid, signal.SIGINT)
        code = sweep.finish()
    assert code == 130, sweep.output()
    signalled: Dict[str, int] = dict.fromkeys(tasks, 0)
    for call in calls.read_text().splitlines():
        words = call.split()
        if "--signal" in words or any(word.startswith("--signal=") for word in words):
            for task in addressed(words[-1], tasks, array):
                signalled[task] += 1
    assert signalled == dict.fromkeys(tasks, 1), (calls.read_text(), listing)


def test_a_job_near_its_time_limit_stops_its_step_and_ends_as_interrupted(
    make_project: Any, slurm: Any, tmp_path: Path
) -> None:
    """submitit asks Slurm for SIGUSR2 120 s (its signal_delay_s) before a job's time limit;
    with a 1-minute limit it comes at once (Slurm checks time limits every few seconds).
    submitit's own handler would raise inside the running step; crude-link stops the step as
    for SIGTERM instead, so the job ends through Hydra, leaves its result, and the sweep says
    so and exits 143."""
    project = project_with(make_project, TRAPPING)
    with started_sweep(project, tmp_path / "sweep", "default.x=0",
                       "hydra.launcher.timeout_min=1") as sweep:
        code = sweep.finish(timeout=120)
    assert code == 143, sweep.output()
    check_clean(sweep.stdout(), sweep.stderr())
    folder = sweep_folder(project)
    summary = load_json(folder / "0" / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 143), summary
    [step] = summary["steps"]
    # Slurm signals every process of the job step: fate may die of SIGUSR2 itself (140)
    # before crude-link's SIGTERM reaches its trap (143).
    assert step["status"] == "interrupted", step
    assert step["exit_code"] in (128 + signal.SIGUSR2, 143), step
    assert step_output(folder / "0").startswith(b"x is 0\nwaiting\n")
    [task] = [path for path in (folder / ".submitit").iterdir() if any(path.glob("*_result.pkl"))]
    assert report(sweep.stderr()) == [
        f"crude-link: 1 of 1 job(s) failed in {folder}:",
        f"  job 0 (default.x=0): interrupted, exit code 143; {folder / '0' / 'summary.json'}",
        *(f"    Slurm output: {log}" for log in sorted(task.glob("*_log.*"))),
    ], sweep.stderr()
    said = "crude-link: stopped by SIGUSR2 (the Slurm job's time limit is near)\n"
    assert said in (task / f"{task.name}_0_log.out").read_text(), task
    assert said in (folder / "0" / "scheduler.log").read_text()



def test_a_job_with_a_config_error_fails_the_sweep_with_exit_2(
    make_project: Any, slurm: Any, tmp_path: Path
) -> None:
    """A config error is found in the job, on the node: it fails through Hydra too, and the
    report names the job and its scheduler.log (its summary.json holds the problems)."""
    project = project_with(make_project, CONFIG % "")
    result = run_scheduler(project, "-m", LAUNCHER, "+scheduler.kill_grace=1,-1")
    assert result.returncode == 2, result.stdout + result.stderr
    check_clean(result.stdout, result.stderr)
    folder = sweep_folder(project)
    assert report(result.stderr) == [
        f"crude-link: 1 of 2 job(s) failed in {folder}:",
        f"  job 1 (+scheduler.kill_grace=-1): config error, no step was run (exit code 2); "
        f"{folder / '1' / 'scheduler.log'}",
        *slurm_lines(folder, 1),
    ], result.stderr
    assert load_json(folder / "0" / "summary.json")["status"] == "succeeded"
    recorded = load_json(folder / "1" / "summary.json")  # the config error, as data
    assert recorded["exit_code"] == 2 and recorded["steps"] == []
    assert any("kill_grace" in problem for problem in recorded["problems"])
