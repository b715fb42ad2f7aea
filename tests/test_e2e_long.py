"""End to end: a long pipeline: summary.json, read while it is rewritten at every step
boundary, held open by a reader while the run goes on, or left by a scheduler killed
outright, is whole and true (CONTRACT §6)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

import pytest
from conftest import scheduler_command, scheduler_env, started_scheduler

pytestmark = pytest.mark.e2e

STEPS = 400


def long_config(steps: int, slow: Optional[int] = None) -> str:
    """Return a config of /bin/true steps; step number slow (1-based) sleeps instead."""
    lines = ["steps:"]
    for index in range(1, steps + 1):
        lines.append('  - {script: /bin/sleep, args: ["30"]}' if index == slow
                     else "  - {script: /bin/true}")
    return "\n".join(lines) + "\n"


def summary_path(project: Path, proc: "subprocess.Popen[bytes]") -> Path:
    """Wait for the run's summary.json to appear; return its path."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list((project / "outputs").glob("*/*/summary.json"))
        if found:
            return found[0]
        assert proc.poll() is None, "the scheduler ended before writing summary.json"
        time.sleep(0.01)
    raise AssertionError("no summary.json after 60 s")


def running_step(summary: Dict[str, Any]) -> Optional[int]:
    """Check that a summary of a running run of succeeding steps is true; return its running step.

    Before the running step, every step succeeded; after it, none has started.
    """
    assert summary["status"] == "running"
    statuses = [entry["status"] for entry in summary["steps"]]
    assert len(statuses) == len(summary["steps"])
    running = [i for i, status in enumerate(statuses, start=1) if status == "running"]
    assert len(running) <= 1, running
    done = running[0] - 1 if running else statuses.count("succeeded")
    assert statuses[:done] == ["succeeded"] * done
    rest = statuses[done + 1 if running else done:]
    assert rest == ["not_run"] * len(rest)
    return running[0] if running else None


def read_while_running(path: Path, proc: "subprocess.Popen[bytes]",
                       check: Callable[[Dict[str, Any]], None]) -> int:
    """Read path until proc ends, checking every version read; return how many were read."""
    reads = 0
    while proc.poll() is None:
        data = path.read_bytes()  # a torn or half-written file fails json.loads
        summary = json.loads(data)
        assert data.endswith(b"}\n")
        if summary["status"] == "running":
            check(summary)
        reads += 1
    return reads


def test_summary_read_during_a_long_run_is_whole_and_names_the_running_step(
        make_project: Callable[..., Path]) -> None:
    project = make_project(long_config(STEPS))
    seen: Set[int] = set()
    with started_scheduler(project, stdout=subprocess.DEVNULL) as proc:
        path = summary_path(project, proc)
        reads = read_while_running(path, proc, lambda summary: seen.update(
            [step for step in [running_step(summary)] if step is not None]))
    assert proc.returncode == 0
    final = json.loads(path.read_bytes())
    assert final["status"] == "succeeded"
    assert [entry["attempts"] for entry in final["steps"]] == [1] * STEPS
    assert [entry["name"] for entry in final["steps"]][:3] == ["true", "true-2", "true-3"]
    assert final["steps"][-1]["name"] == f"true-{STEPS}"
    assert reads > 1 and len(seen) > 1, (reads, seen)  # the reader did see the run move


def read_all(fd: int) -> bytes:
    chunks: List[bytes] = []
    while True:
        chunk = os.pread(fd, 1 << 20, sum(map(len, chunks)))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_reader_holding_summary_json_open_keeps_the_version_it_opened(
        make_project: Callable[..., Path]) -> None:
    """less or tail -f keeps the file it opened while the run goes on: that file never
    changes under it, however many versions follow (each step's line is written over its
    place only in a file nobody has open)."""
    project = make_project(long_config(STEPS))
    with started_scheduler(project, stdout=subprocess.DEVNULL) as proc:
        path = summary_path(project, proc)
        deadline = time.monotonic() + 60
        while (running_step(json.loads(path.read_bytes())) or 0) < 5:
            assert time.monotonic() < deadline and proc.poll() is None
        fd = os.open(path, os.O_RDONLY)
        try:
            held = read_all(fd)
            opened_at = running_step(json.loads(held))
            assert opened_at is not None
            while (running_step(json.loads(path.read_bytes())) or STEPS) < opened_at + 20:
                assert time.monotonic() < deadline and proc.poll() is None
            assert read_all(fd) == held
        finally:
            os.close(fd)
        proc.wait(timeout=120)
    assert proc.returncode == 0


WCHAR_HOOK = """\
import atexit, os
def _count():  # what this process wrote, as the kernel counts it
    with open("/proc/self/io") as io, open(os.environ["TEST_WCHAR_FILE"], "w") as out:
        out.write([line.split()[1] for line in io if line.startswith("wchar:")][0])
atexit.register(_count)
"""


def test_a_long_run_writes_in_proportion_to_its_steps_not_their_square(
        make_project: Callable[..., Path], tmp_path: Path) -> None:
    """Every version of summary.json lists every step: written whole each time, a run wrote
    O(N**2) bytes (0.8 MB at 50 steps, 45 MB at 400). The scheduler's own writes, as
    /proc/self/io counts them at its exit (a sitecustomize hook)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(WCHAR_HOOK, encoding="utf-8")
    counted = tmp_path / "wchar"
    project = make_project(long_config(1))
    written: Dict[int, int] = {}
    for steps in (50, 400):
        (project / "config.yaml").write_text(long_config(steps), encoding="utf-8")
        result = subprocess.run(
            scheduler_command(project), cwd=project.parent, stdin=subprocess.DEVNULL,
            capture_output=True, env=scheduler_env(PYTHONPATH=str(hook),
                                                   TEST_WCHAR_FILE=str(counted)))
        assert result.returncode == 0, result.stderr
        written[steps] = int(counted.read_text())
    assert written[400] < 12 * written[50], written  # 8x the steps: ~8x, not ~60x


def test_a_scheduler_killed_outright_mid_run_leaves_the_truth(
        make_project: Callable[..., Path]) -> None:
    slow = STEPS // 2
    project = make_project(long_config(STEPS, slow=slow))
    with started_scheduler(project, stdout=subprocess.DEVNULL) as proc:
        path = summary_path(project, proc)
        deadline = time.monotonic() + 60
        while running_step(json.loads(path.read_bytes())) != slow:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    summary = json.loads(path.read_bytes())
    assert running_step(summary) == slow
    assert summary["steps"][slow - 1]["command"] == ["/bin/sleep", "30"]
    # Every step before the running one did run. The running one is recorded with the end
    # of the step before it, in one rewrite, so a kill in that instant finds no log of it yet.
    logs: List[Path] = [path.parent / entry["log"] for entry in summary["steps"][:slow - 1]]
    assert all(log.is_file() for log in logs)
    # summary.json's spare, there only while the run goes on, is removed by the watchdog.
    deadline = time.monotonic() + 10
    while list(path.parent.glob(".summary.json.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [".hydra"]
