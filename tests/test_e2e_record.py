"""End to end: what a run leaves behind (README "What a run leaves behind").

summary.json (during the run and at its end), the final table, the run folder, outputs/latest,
secrets masked wherever crude-link writes, and a fault of the machine: exit 70, one line.
"""

import contextlib
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import (
    LOCKED,
    NEVER,
    ONE_STEP,
    assert_latest_is,
    cron_command,
    cron_env,
    finish,
    home_folder,
    load_json,
    load_summary,
    make_config,
    mounted_tmpfs,
    new_run,
    read_cron_log,
    read_until,
    run_folder,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    started_scheduler,
    step_processes,
    step_statuses,
    terminal_text,
)
from test_e2e_cron import project_with_probe

pytestmark = pytest.mark.e2e


# ── summary.json and the final table ─────────────────────────────────────


def test_summary_says_running_during_the_run_and_tells_all_at_the_end(
    make_project: Any,
) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/fate.py
            arguments: {print: one}
          - script: tasks/fate.py
            name: snapshot
            arguments: {read_summary: during.json}
          - script: tasks/fate.py
            name: third
        """
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    during = load_json(project / "during.json")
    assert during["status"] == "running"
    assert step_statuses(during) == ["succeeded", "running", "not_run"]
    assert during["steps"][1]["attempts"] == 1

    summary = load_summary(project)
    assert summary["status"] == "succeeded"
    assert summary["exit_code"] == 0
    started = datetime.datetime.fromisoformat(summary["started"])
    finished = datetime.datetime.fromisoformat(summary["finished"])
    assert started <= finished
    fate = str(project / "tasks" / "fate.py")
    for index, (step, name) in enumerate(zip(summary["steps"], ["fate", "snapshot", "third"]), 1):
        assert set(step) >= {
            "index",
            "name",
            "command",
            "status",
            "exit_code",
            "attempts",
            "started",
            "finished",
            "duration_s",
            "log",
        }
        assert step["index"] == index
        assert step["name"] == name
        assert step["command"][:2] == [sys.executable, fate]
        assert (step["status"], step["exit_code"], step["attempts"]) == ("succeeded", 0, 1)
        assert step["log"] == f"{index:02d}-{name}.log"
        step_started = datetime.datetime.fromisoformat(step["started"])
        step_finished = datetime.datetime.fromisoformat(step["finished"])
        assert started <= step_started <= step_finished <= finished
        assert 0 <= step["duration_s"] <= (step_finished - step_started).total_seconds() + 0.01
    assert summary["steps"][0]["command"][2:] == ["print=one"]


def test_a_scheduler_killed_outright_leaves_a_summary_saying_running(
    make_project: Any, tmp_path: Path
) -> None:
    project = make_project(
        f"""\
        steps:
          - script: tasks/fate.py
            arguments: {{record: record.json, wait_for: {tmp_path / "stop"}}}
          - script: tasks/fate.py
            name: second
        """
    )
    stop = tmp_path / "stop"
    try:
        with started_scheduler(project) as proc:
            assert proc.stdout is not None
            read_until(proc.stdout.fileno(), b"waiting\n")
            proc.kill()
            proc.wait(timeout=60)
        step_pid = load_json(project / "record.json")["pid"]
        with contextlib.suppress(ProcessLookupError):  # stopped by the run's watchdog
            assert os.getpgid(step_pid) == step_pid  # the step leads its own process group
            os.killpg(step_pid, signal.SIGKILL)
    finally:
        stop.touch()  # the step, if still there, ends by itself
    summary = load_summary(project)
    assert summary["status"] == "running"
    assert step_statuses(summary) == ["running", "not_run"]
    assert summary["steps"][0]["attempts"] == 1


def test_summary_keeps_each_steps_command_and_exit_code(make_project: Any) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/fate.py
            name: ok
            arguments: {print: fine}
          - script: tasks/fate.py
            name: broken
            arguments: {exit_code: 3, stderr: broke}
          - script: tasks/fate.py
            name: later
            arguments: {print: never}
        """
    )
    result = run_scheduler(project, "steps.0.arguments.print=fine-tuned")
    assert result.returncode == 3
    summary = load_json(project / "outputs" / "latest" / "summary.json")
    assert summary == load_summary(project)
    fate = str(project.resolve() / "tasks" / "fate.py")
    assert [(s["name"], s["command"], s["status"], s["exit_code"]) for s in summary["steps"]] == [
        ("ok", [sys.executable, fate, "print=fine-tuned"], "succeeded", 0),
        ("broken", [sys.executable, fate, "exit_code=3", "stderr=broke"], "failed", 3),
        ("later", [sys.executable, fate, "print=never"], "not_run", None),
    ]
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)


def test_the_final_table_lists_every_step(make_project: Any) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/fate.py
            name: alpha
          - script: tasks/fate.py
            name: beta
        """
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    for name in ("alpha", "beta"):
        rows = [
            line
            for line in result.stdout.splitlines()
            if name in line and "succeeded" in line and re.search(rf"\d\d-{name}\.log", line)
        ]
        assert rows, f"no table row for {name} in:\n{result.stdout}"
        assert re.search(r"\b1\b", rows[-1])  # attempts
        assert re.search(r"\d(\.\d+)?\s?m?s\b", rows[-1])  # duration


# ── The run folder and outputs/latest ────────────────────────────────────


def test_two_runs_started_together_get_their_own_folders(make_project: Any) -> None:
    project = make_project(ONE_STEP + "scheduler: {lock: false}\n")
    env = scheduler_env()
    runs = [
        subprocess.Popen(
            scheduler_command(project),
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    assert [run.wait(timeout=60) for run in runs] == [0, 0]
    summaries = sorted((project / "outputs").glob("*/*/summary.json"))
    assert len(summaries) == 2
    assert all(load_json(path)["status"] == "succeeded" for path in summaries)


def test_a_run_dir_set_in_config_yaml_is_used(make_project: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "runs"
    project = make_project(
        f"""\
        steps:
          - script: tasks/fate.py
            arguments: {{record: record.json}}
        hydra:
          run:
            dir: {elsewhere}/${{now:%H%M%S%f}}
        """
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    summaries = list(elsewhere.glob("*/summary.json"))
    assert len(summaries) == 1, summaries
    assert load_json(summaries[0])["status"] == "succeeded"
    assert not list(project.glob("outputs/*/*/summary.json"))


def test_latest_points_at_the_newest_run_from_its_start(make_project: Any, tmp_path: Path) -> None:
    project = project_with_probe(make_project)
    home = home_folder(tmp_path)
    runs: List[Path] = []
    for overrides in ([], ["+steps.1.arguments.exit_code=4"]):  # newest, even when it fails
        result = run_scheduler(project, *overrides, cwd=Path("/"), env=cron_env(home))
        assert result.returncode == (4 if overrides else 0), result.stderr
        folder = new_run(project, runs)
        runs.append(folder)
        assert_latest_is(project, folder)
        # While its first step ran, outputs/latest already showed this run, in progress.
        seen = load_json(folder / "probe.json")
        assert Path(seen["latest_resolved"]) == folder.resolve()
        assert seen["latest_summary"]["status"] == "running"
        assert seen["latest_summary"]["steps"][0]["status"] == "running"
        logs = {p.name for p in (project / "outputs" / "latest").glob("*.log")}
        assert {"01-probe.log", "02-fate.log"} <= logs  # tail outputs/latest/*.log
    assert (project / "outputs" / "latest" / "02-fate.log").read_text().count("second step") == 1
    moved = tmp_path / "moved"
    project.rename(moved)  # a relative link survives moving the folder
    assert (moved / "outputs" / "latest").resolve() == (moved / runs[1].relative_to(project))


def test_a_dry_run_or_a_config_error_does_not_move_latest(make_project: Any) -> None:
    project = project_with_probe(make_project)
    assert run_scheduler(project).returncode == 0
    first = run_folder(project)
    assert run_scheduler(project, "scheduler.dry_run=true").returncode == 0
    assert run_scheduler(project, "scheduler.on_failure=sometimes").returncode == 2
    assert (
        run_scheduler(project, "scheduler.cron=print", f"scheduler.schedule={NEVER}").returncode
        == 0
    )
    assert_latest_is(project, first)


def test_a_real_folder_named_latest_leaves_no_temporary_link(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py}\n"))
    (project / "outputs" / "latest").mkdir(parents=True)
    (project / "outputs" / "latest" / "mine.txt").write_text("the user's")
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in (project / "outputs").iterdir() if p.name.startswith(".latest")] == []
    assert (project / "outputs" / "latest" / "mine.txt").read_text() == "the user's"


# ── Secrets ──────────────────────────────────────────────────────────────


TOKEN = "tok S3cr3t 'q' \"dq\""  # a space and both quotes: rendered quoted, and escaped


SERVICE = "svc-K3y-value"


SECRET_BITS = ["S3cr3t", "K3y-value", "hunter2", "pw-in-yaml", "cli-0verride"]


SECRETS = """\
steps:
  - script: tasks/fate.py
    name: fetch
    arguments:
      record: got.json
      auth: ${oc.env:API_TOKEN}
      header: Bearer ${oc.env:API_TOKEN}
      db: {password: hunter2-in-yaml, host: db.local}
      note: shown in clear
    env:
      TEST_SERVICE: ${oc.env:SERVICE_KEY}
      TEST_DB_PASSWD: pw-in-yaml
  - script: tasks/fate.py
    name: later
    arguments: {print: second step, copy: "${steps.0.arguments.auth}"}
scheduler: {dry_run: false, schedule: null, cron: null}
"""


CLI_SECRET = "+steps.0.arguments.api_key=cli-0verride"


def secret_env(**extra: str) -> Dict[str, str]:
    return scheduler_env(API_TOKEN=TOKEN, SERVICE_KEY=SERVICE, **extra)


def assert_masked(where: str, text: str) -> None:
    leaked = [bit for bit in SECRET_BITS if bit in text]
    assert leaked == [], f"{where} shows {leaked}:\n{text}"
    assert "***" in text, f"{where} shows no *** at all:\n{text}"


def assert_received_in_clear(project: Path) -> None:
    got = load_json(project / "got.json")
    assert got["args"]["auth"] == TOKEN
    assert got["args"]["header"] == f"Bearer {TOKEN}"
    assert got["args"]["db"] == {"password": "hunter2-in-yaml", "host": "db.local"}
    assert got["args"]["api_key"] == "cli-0verride"
    assert got["env"]["TEST_SERVICE"] == SERVICE
    assert got["env"]["TEST_DB_PASSWD"] == "pw-in-yaml"


def test_secrets_are_masked_in_the_terminal_the_log_and_summary_json(
    make_project: Any, spawn_scheduler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(SECRETS)
    for key, value in secret_env().items():
        monkeypatch.setenv(key, value)
    child = spawn_scheduler(project, CLI_SECRET)
    assert finish(child) == 0
    assert_received_in_clear(project)
    shown = terminal_text(child)
    assert_masked("the terminal", shown)
    assert "note='shown in clear'" in shown and "db.host=db.local" in shown
    assert "auth=***" in shown and "db.password=***" in shown and "api_key=***" in shown
    assert "copy=***" in shown, "a value copied from a secret is masked too"
    folder = run_folder(project)
    assert_masked("scheduler.log", (folder / "scheduler.log").read_text())
    raw = (folder / "summary.json").read_bytes()
    assert_masked("summary.json", raw.decode())
    commands = [step["command"] for step in load_summary(project)["steps"]]
    assert commands[0][2:] == ["record=got.json", "auth=***", "header=***", "db.password=***",
                               "db.host=db.local", "note='shown in clear'", "api_key=***"]
    # Hydra's own copy of the command line is Hydra's: the README says so.
    assert "cli-0verride" in (folder / ".hydra" / "overrides.yaml").read_text()


def test_secrets_are_masked_in_the_dry_run(make_project: Any) -> None:
    project = make_project(SECRETS)
    result = run_scheduler(project, "scheduler.dry_run=true", CLI_SECRET, env=secret_env())
    assert result.returncode == 0, result.stderr
    assert_masked("the dry run", result.stdout + result.stderr)
    env_line = next(line for line in result.stdout.splitlines() if "TEST_SERVICE" in line)
    assert "TEST_SERVICE='***'" in env_line and "TEST_DB_PASSWD='***'" in env_line
    assert "'note='\"'\"'shown in clear'\"'\"''" in result.stdout
    assert not (project / "got.json").exists()


def test_secrets_are_masked_in_cron_log(make_project: Any, tmp_path: Path) -> None:
    project = make_project(SECRETS)
    printed = run_scheduler(project, "scheduler.cron=print", f"scheduler.schedule={NEVER}",
                            env=secret_env())
    assert printed.returncode == 0, printed.stderr
    command, stdin = cron_command(printed.stdout.strip())
    home = tmp_path / "home"
    home.mkdir()
    # A crontab may set variables for its jobs (API_TOKEN=... above the line).
    env = {**cron_env(home), "SHELL": "/bin/sh", "API_TOKEN": TOKEN, "SERVICE_KEY": SERVICE}
    ran = subprocess.run(["/bin/sh", "-c", command], cwd=home, env=env, input=stdin,
                         capture_output=True, timeout=60)
    assert ran.returncode == 0, read_cron_log(project)
    assert_masked("cron.log", read_cron_log(project))
    assert load_json(project / "got.json")["args"]["auth"] == TOKEN


def test_the_failure_warning_masks_what_the_step_printed_but_its_log_keeps_it(
    make_project: Any,
) -> None:
    project = make_project("""\
        steps:
          - script: tasks/fate.py
            arguments: {print: "${oc.env:API_TOKEN}", exit_code: 3}
        """)
    result = run_scheduler(project, env=secret_env())
    assert result.returncode == 3
    assert "  | ***" in result.stdout.splitlines(), result.stdout
    folder = run_folder(project)
    scheduler_log = (folder / "scheduler.log").read_text()
    assert "S3cr3t" not in scheduler_log and "| ***" in scheduler_log
    # The step's own output is the step's: its log keeps it byte for byte.
    assert TOKEN in (folder / "01-fate.log").read_text().splitlines()


def test_summary_json_of_a_run_without_secrets_is_unchanged(make_project: Any) -> None:
    project = make_project(LOCKED)
    assert run_scheduler(project).returncode == 0
    command = load_summary(project)["steps"][0]["command"]
    assert command == [sys.executable, str(project.resolve() / "tasks" / "fate.py"),
                       "record=ran.json"]


ARGV_TASK = """\
import json
import sys

with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(sys.argv[2:], out)
"""


def read_argv(path: Path) -> List[str]:
    argv: List[str] = json.loads(path.read_text(encoding="utf-8"))
    return argv


def test_secrets_are_masked_in_every_argument_style_and_in_args(make_project: Any) -> None:
    project = make_project("""\
        steps:
          - script: tasks/argv.py
            name: positional
            args: [argv-1.json, "${oc.env:API_TOKEN}"]
            argument_style: argparse
            arguments: {service: "${oc.env:SERVICE_KEY}"}
          - script: tasks/argv.py
            name: hydra-app
            args: [argv-2.json]
            argument_style: hydra
            arguments: {auth: "${oc.env:API_TOKEN}", db: {password: hunter2-in-yaml}}
        scheduler: {dry_run: false}
        """, {"argv.py": ARGV_TASK})
    dry = run_scheduler(project, "scheduler.dry_run=true", env=secret_env())
    assert dry.returncode == 0, dry.stderr
    assert_masked("the dry run", dry.stdout)
    result = run_scheduler(project, env=secret_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert_masked("the output", result.stdout)
    folder = run_folder(project)
    assert_masked("scheduler.log", (folder / "scheduler.log").read_text())
    assert_masked("summary.json", (folder / "summary.json").read_text())
    first, second = (step["command"] for step in load_summary(project)["steps"])
    assert first[-2:] == ["***", "--service=***"]
    assert "auth=***" in second and "db.password=***" in second
    assert read_argv(project / "argv-1.json") == [TOKEN, f"--service={SERVICE}"]
    got = read_argv(project / "argv-2.json")
    assert got[0].startswith("auth=") and TOKEN not in got[0], "hydra style quotes it"
    assert "db.password=hunter2-in-yaml" in got


def test_scheduler_log_holds_each_step_with_its_command_and_the_final_table(
    make_project: Any,
) -> None:
    """The morning after: scheduler.log names each step, then the whole command it ran
    (interpreter and absolute paths), and ends with the table the terminal showed."""
    project = make_project("""\
        steps:
          - script: tasks/argv.py
            name: first
            args: [argv-1.json]
          - script: /bin/echo
            name: second
            args: [hello world]
        """, {"argv.py": ARGV_TASK})
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (run_folder(project) / "scheduler.log").read_text(encoding="utf-8").splitlines()
    starts = ["▶ [1/2] first: tasks/argv.py argv-1.json", "▶ [2/2] second: /bin/echo hello world"]
    for start, step in zip(starts, load_summary(project)["steps"]):
        command = f"  command: {shlex.join(step['command'])}"
        assert command in lines, lines
        assert lines[lines.index(command) - 1].endswith(f"[INFO] - {start}"), lines
    shown = result.stdout.splitlines()
    table = shown[next(i for i, line in enumerate(shown) if line.startswith("#  step")):]
    assert len(table) == 4 and table[-1].startswith("run succeeded (exit code 0)"), shown
    logged = lines[-len(table):]
    assert logged[0].endswith(f"[INFO] - {table[0]}") and logged[1:] == table[1:], lines


# ── Faults of the machine are exit 70, with one line ─────────────────────


def test_a_full_disk_while_a_step_prints_ends_the_run_failed_with_70(
    make_project: Any,
) -> None:
    project = make_project(
        make_config("- {script: tasks/fate.py, name: chatty, arguments: {bytes: 8388608}}\n"))
    with mounted_tmpfs(project / "outputs", "size=1m"):
        result = run_scheduler(project)
        output = result.stdout + result.stderr
        assert result.returncode == 70, output
        assert "Traceback" not in output
        assert "No space left on device" in result.stderr
        run = run_folder(project)
        summary = load_json(run / "summary.json")
        assert (summary["status"], summary["exit_code"]) == ("failed", 70)
        assert summary["finished"] is not None
        assert step_statuses(summary) == ["interrupted"]
        assert not list(run.glob(".*.tmp"))
        assert step_processes(project) == []


def assert_one_line_fault(result: "subprocess.CompletedProcess[str]", path: Path,
                          reason: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 70, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert str(path) in lines[0] and reason in lines[0], lines[0]


def test_a_read_only_outputs_folder_is_exit_70_with_one_line(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {record: r.json}}\n"))
    with mounted_tmpfs(project / "outputs", "ro"):
        result = run_scheduler(project)
    assert_one_line_fault(result, project / "outputs", "Read-only file system")
    assert not (project / "r.json").exists()


def test_a_full_disk_at_start_is_exit_70_with_one_line(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {record: r.json}}\n"))
    with mounted_tmpfs(project / "outputs", "size=64k") as outputs:
        with contextlib.suppress(OSError), open(outputs / "filler", "wb") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        result = run_scheduler(project)
    assert_one_line_fault(result, project / "outputs", "No space left on device")
    assert not (project / "r.json").exists()


def test_a_read_only_multirun_folder_is_exit_70_with_one_line(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {record: r.json}}\n"))
    with mounted_tmpfs(project / "multirun", "ro"):
        result = run_scheduler(project, "-m", "+steps.0.arguments.x=1,2")
    assert_one_line_fault(result, project / "multirun", "Read-only file system")
