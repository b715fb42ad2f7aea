"""Shared helpers of the end-to-end tests: a temp project, running the real scheduler."""

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import pexpect
import pytest
import slurm_cluster

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# One line the scheduler writes before each attempt in a step's log.
SEPARATOR = re.compile(rb"^=== crude-link: .*attempt (\d+).*\n", re.MULTILINE)

ANSI = "\x1b["  # how every colour code starts

# Every option declared, as the shipped config.yaml does, so `scheduler.X=...` needs no `+`;
# kill_grace is short, for tests that wait it out.
OPTIONS = """\
scheduler:
  on_failure: ask
  from_step: null
  only: null
  skip: null
  resume: false
  dry_run: false
  lock: true
  kill_grace: 1
  launcher: null
  schedule: null
  cron: null
  quiet: false
  argument_style: omegaconf
"""


def make_config(steps: str, options: str = OPTIONS) -> str:
    """Return a config: the given `steps:` items (any indentation) and every option declared."""
    items = textwrap.indent(textwrap.dedent(steps), "  ")
    return "steps:\n" + items + ("" if items.endswith("\n") else "\n") + options


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
    project: Path, *overrides: str, stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE
) -> Iterator["subprocess.Popen[bytes]"]:
    """Start the scheduler with no terminal, stderr into stdout, and yield it; on the way out
    stop it if it still runs (SIGTERM, then SIGKILL). After a failed test, or when it still
    ran, whatever its steps left behind is killed too; otherwise that is left for the test to
    check after the `with` block (a step must not outlive a scheduler that ended)."""
    proc = subprocess.Popen(
        scheduler_command(project, *overrides),
        cwd=project.parent,
        env=scheduler_env(),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )
    clean_up = False
    try:
        yield proc
    except BaseException:
        clean_up = True
        raise
    finally:
        if proc.poll() is None:  # stop the run and its step, never hang
            clean_up = True
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe:
                pipe.close()
        if clean_up:
            kill_step_processes(project)


def output_text(proc: "subprocess.Popen[bytes]", timeout: float = 30) -> str:
    """Read a started scheduler's output until it has ended; return it as text."""
    return rest_of_output(proc, timeout).decode("utf-8", errors="replace")


def cron_env(home: Path) -> Dict[str, str]:
    """Return the environment cron gives a job, as `env -i PATH=/usr/bin:/bin HOME=...` does."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home)}


def run_folder(project: Path) -> Path:
    """Return the one run folder under the project's outputs/."""
    found = sorted((project / "outputs").glob("*/*/summary.json"))
    assert len(found) == 1, f"expected one run folder, found {found}"
    return found[0].parent


def summaries(project: Path, folder: str = "outputs") -> Dict[Path, Dict[str, Any]]:
    """Return run folder → summary for every run under the project's outputs/ (or multirun/)."""
    pattern = "*/*/summary.json" if folder == "outputs" else "*/*/*/summary.json"
    return {path.parent: load_json(path) for path in sorted((project / folder).glob(pattern))}


def new_run(project: Path, known: Iterable[Path]) -> Path:
    """Return the one run folder under the project's outputs/ that is not in known."""
    found = set(summaries(project)) - set(known)
    assert len(found) == 1, f"expected one new run folder, found {sorted(found)}"
    return found.pop()


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


def assert_rejected(project: Path, result: "subprocess.CompletedProcess[Any]") -> List[str]:
    """Check the run stopped as a config error before any step; return stderr's lines.

    A step that records it ran writes ran.json in the root: it must not be there."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (project / "ran.json").exists()
    assert list((project / "outputs").glob("*/*/[0-9][0-9]-*.log")) == []
    return result.stderr.splitlines()


def line_with(lines: List[str], *parts: str) -> str:
    """Return the first line holding every part; fail with the lines if there is none."""
    found = [line for line in lines if all(part in line for part in parts)]
    assert found, f"no line with {parts} in:\n" + "\n".join(lines)
    return found[0]


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


def step_processes(project: Path) -> List[int]:
    """Return the live processes started by any run of the project (found in procfs)."""
    prefix = f"CRUDE_LINK_RUN_DIR={project}/".encode()
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/environ").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        pid = int(entry.name)
        if any(item.startswith(prefix) for item in environ.split(b"\0")) and not is_gone(pid):
            found.append(pid)
    return found


def wait_for_no_step_processes(project: Path, timeout: float = 15) -> List[int]:
    """Return the project's step processes still alive after up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while (left := step_processes(project)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_step_processes(project: Path) -> None:
    """SIGKILL whatever a failed test left behind."""
    for pid in step_processes(project):
        kill_if_alive(pid)


def kill_if_alive(pid: int) -> None:
    """SIGKILL a leftover process, if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def kill_group(pid: int) -> None:
    """SIGKILL a leftover process group, if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# ── What several test files share ────────────────────────────────────────


ONE_STEP = """\
steps:
  - script: tasks/fate.py
    arguments: {record: record.json}
"""


LOCKED = """\
steps:
  - script: tasks/fate.py
    arguments: {record: ran.json}
"""


THREE_STEPS = """\
- {script: tasks/fate.py, name: a, arguments: {record: a.json}}
- {script: tasks/fate.py, name: b, arguments: {record: b.json}}
- {script: tasks/fate.py, name: c, arguments: {record: c.json}}
"""


# A shell script that writes its arguments, one per line, to sh-args.txt (in the root).
SHELL_TASK = '#!/bin/sh\nprintf "%s\\n" "$0" "$@" > sh-args.txt\n'


def step_logs(project: Path) -> List[str]:
    """Return the names of every step log under the project's outputs/."""
    return sorted(path.name for path in (project / "outputs").glob("*/*/[0-9][0-9]-*.log"))


PROGRAMS = TESTS / "programs"


def with_programs(project: Path) -> Path:
    """Copy the test programs into the project's tasks/ (modes kept); return the project."""
    for program in PROGRAMS.iterdir():
        if program.is_dir():
            shutil.copytree(program, project / "tasks" / program.name)
        else:
            shutil.copy(program, project / "tasks")
    return project


def succeeded(result: "subprocess.CompletedProcess[Any]") -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


NEVER = "0 0 31 2 *"  # valid, and never due: a running cron daemon will not fire it


def cron_command(line: str) -> Tuple[str, bytes]:
    """Return the shell command of a crontab line and its stdin, as Debian's cron makes them.

    After the five time fields cron turns `\\%` into `%` and `\\\\` into `\\`; an unescaped
    `%` ends the command, and the rest (each % a newline) is its stdin. (Checked against
    cron 3.0pl1's daemon: printf '%s' 'a\\\\b' prints a\\b; '50\\%' prints 50%.)
    """
    command = line.split(None, 5)[5]
    out: List[str] = []
    escaped = False
    for position, char in enumerate(command):
        if escaped:
            out.append(char if char in "%\\" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            return "".join(out), command[position + 1 :].replace("%", "\n").encode()
        else:
            out.append(char)
    return "".join(out) + ("\\" if escaped else ""), b""


def read_cron_log(project: Path) -> str:
    """Return <root>/outputs/cron.log, or "" when there is none."""
    path = project / "outputs" / "cron.log"
    return path.read_text(errors="replace") if path.exists() else ""


def home_folder(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


def assert_latest_is(project: Path, folder: Path) -> None:
    latest = project / "outputs" / "latest"
    assert latest.is_symlink()
    target = os.readlink(latest)
    assert not os.path.isabs(target), f"outputs/latest -> {target} is not relative"
    assert latest.resolve() == folder.resolve()


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


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs at where (made if missing) for the test; skip where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
