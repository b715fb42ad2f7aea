"""Shared helpers of the end-to-end tests: a temp project, running the real scheduler."""

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import pexpect
import pytest
import slurm_cluster

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# One line the scheduler writes before each attempt in a step's log.
SEPARATOR = re.compile(rb"^=== crude-link: .*attempt (\d+).*\n", re.MULTILINE)


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Return a function that builds tmp_path/proj: scheduler.py, config.yaml, tasks/."""

    def make(config: str, tasks: Optional[Mapping[str, str]] = None) -> Path:
        project = tmp_path / "proj"
        (project / "tasks").mkdir(parents=True)
        shutil.copy(ROOT / "scheduler.py", project)
        shutil.copy(TESTS / "tasks" / "fate.py", project / "tasks")
        (project / "config.yaml").write_text(textwrap.dedent(config), encoding="utf-8")
        for name, body in (tasks or {}).items():
            (project / "tasks" / name).write_text(textwrap.dedent(body), encoding="utf-8")
        return project

    return make


def scheduler_env(**extra: str) -> Dict[str, str]:
    """Return our environment without colour settings or variables the tests look for."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CRUDE_LINK_", "TEST_")) and key not in ("FORCE_COLOR", "NO_COLOR")
    }
    return {**env, "NO_COLOR": "1", **extra}


def scheduler_command(project: Path, *overrides: str) -> List[str]:
    """Return the argv that runs the project's scheduler, warnings as errors."""
    return [sys.executable, "-W", "error", str(project / "scheduler.py"), *overrides]


def run_scheduler(
    project: Path,
    *overrides: str,
    cwd: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
    text: bool = True,
) -> "subprocess.CompletedProcess[Any]":
    """Run the scheduler to the end with no terminal; env=None means scheduler_env()."""
    return subprocess.run(
        scheduler_command(project, *overrides),
        cwd=cwd or project.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=scheduler_env() if env is None else dict(env),
        timeout=60,
        encoding="utf-8" if text else None,
        errors="replace" if text else None,
    )


@contextlib.contextmanager
def started_scheduler(
    project: Path, stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE
) -> Iterator["subprocess.Popen[bytes]"]:
    """Start the scheduler with no terminal and yield it; kill it on the way out if it runs."""
    proc = subprocess.Popen(
        scheduler_command(project),
        cwd=project.parent,
        env=scheduler_env(),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe:
                pipe.close()


def cron_env(home: Path) -> Dict[str, str]:
    """Return the environment cron gives a job, as `env -i PATH=/usr/bin:/bin HOME=...` does."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home)}


def run_folder(project: Path) -> Path:
    """Return the one run folder under the project's outputs/."""
    found = sorted((project / "outputs").glob("*/*/summary.json"))
    assert len(found) == 1, f"expected one run folder, found {found}"
    return found[0].parent


def sweep_folder(project: Path) -> Path:
    """Return the project's one sweep folder, multirun/<date>/<HH-MM-SS>-<pid>."""
    found = sorted(path for path in project.glob("multirun/*/*")
                   if path.is_dir() and path.parent.name != "latest")  # multirun/latest/0
    assert len(found) == 1, f"expected one sweep folder, found {found}"
    assert re.fullmatch(rf"{re.escape(str(project))}/multirun/\d{{4}}-\d\d-\d\d/"
                        rf"\d\d-\d\d-\d\d-\d+", str(found[0])), found[0]
    return found[0]


def load_summary(project: Path) -> Dict[str, Any]:
    """Return the summary.json of the project's one run."""
    summary: Dict[str, Any] = json.loads((run_folder(project) / "summary.json").read_text())
    return summary


def step_statuses(summary: Mapping[str, Any]) -> List[str]:
    return [step["status"] for step in summary["steps"]]


def split_log(path: Path) -> Tuple[bytes, List[int]]:
    """Return a step log without its separator lines, and the attempt numbers they name."""
    data = path.read_bytes()
    attempts = [int(number) for number in SEPARATOR.findall(data)]
    return SEPARATOR.sub(b"", data), attempts


def load_json(path: Path) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def read_until(fd: int, needle: bytes, timeout: float = 20) -> bytes:
    """Read from a pipe until needle shows up; fail after timeout seconds."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} did not show up in {timeout}s; got {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"end of output before {needle!r}; got {seen[-500:]!r}"
            seen += chunk
    return seen



def rest_of_output(proc: "subprocess.Popen[bytes]", timeout: float = 30) -> bytes:
    """Read the scheduler's output until it has ended; fail after timeout seconds."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        chunk = os.read(fd, 65536) if ready else b""
        data += chunk
        # End of output, or the scheduler is gone and a leftover process holds the pipe.
        if not chunk and (ready or proc.poll() is not None):
            break
        assert time.monotonic() < deadline, f"still running after {timeout}s: {data[-500:]!r}"
    proc.wait(timeout=timeout)
    return data


def is_gone(pid: int) -> bool:
    """Return whether a process has ended (a zombie nobody reaps counts as ended)."""
    if not Path("/proc/self/stat").exists():  # no procfs: ask the kernel instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat_line.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until_gone(pid: int, timeout: float = 10) -> bool:
    """Return whether the process ended within timeout seconds."""
    deadline = time.monotonic() + timeout
    while not is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

# ── A real terminal, through pexpect ─────────────────────────────────────

# The dialog lists its choices, ending with abort, and waits after "? ".
PROMPT = r"\[a\][^\r\n]*\? "


@pytest.fixture
def spawn_scheduler(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Return a function that starts the scheduler on a pseudo-terminal (a pexpect child)."""
    children: List[Any] = []

    def spawn(project: Path, *overrides: str, color: bool = False) -> Any:
        env = scheduler_env()
        if color:
            del env["NO_COLOR"]
            env["TERM"] = "xterm"
        command = scheduler_command(project, *overrides)
        child = pexpect.spawn(
            command[0],
            command[1:],
            cwd=str(project.parent),
            env=env,
            encoding="utf-8",
            codec_errors="replace",
            timeout=20,
            dimensions=(40, 200),
        )
        child.logfile_read = (tmp_path / f"terminal-{len(children)}.log").open("w")
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)
        child.logfile_read.close()


def finish(child: Any) -> int:
    """Wait for a pexpect child to end; return its exit code."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None, f"scheduler killed by signal {child.signalstatus}"
    code: int = child.exitstatus
    return code


def terminal_text(child: Any) -> str:
    """Return everything the child wrote to its terminal so far."""
    child.logfile_read.flush()
    return Path(child.logfile_read.name).read_text(encoding="utf-8")


# ── A real single-node Slurm ─────────────────────────────────────────────


@pytest.fixture(scope="session")
def slurm_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start munged, slurmctld and slurmd once for the session; SLURM_CONF points at it."""
    missing = slurm_cluster.missing_programs()
    if missing:
        pytest.skip(f"Slurm is not installed here (no {', '.join(missing)}): "
                    ".ci/run installs Debian's slurm-wlm and munge")
    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    os.environ["SLURM_CONF"] = str(cluster.conf)  # the scheduler, srun and sbatch inherit it
    try:
        yield cluster
    finally:
        os.environ.pop("SLURM_CONF", None)
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster_session: Any) -> Iterator[Any]:
    """The session's Slurm, with an empty queue before the test and checked after it."""
    left = slurm_cluster_session.wait_queue_empty()
    assert not left, f"jobs left over from an earlier test: {left}"
    yield slurm_cluster_session
    left = slurm_cluster_session.wait_queue_empty(timeout=5)
    slurm_cluster_session.stop_jobs()
    assert not left, f"the test left jobs in squeue: {left}"
