"""End to end: issue 12's "nothing let in": crontab injection, the lock file, secrets.

The crontab tests go through the real `crontab` command and put the user's table back
exactly as it was (test_e2e_cron's `user_crontab`); one of them runs a real cron daemon.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import (
    ROOT,
    cron_env,
    finish,
    load_json,
    load_summary,
    run_folder,
    run_scheduler,
    scheduler_env,
    terminal_text,
)
from test_e2e_cron import (
    CRON_DAEMON_WAIT,
    NEVER,
    cron_command,
    cron_daemon,  # noqa: F401 - a fixture, used by its name
    fake_crontab,  # noqa: F401 - a fixture, used by its name
    other_lines,
    project_with_probe,
    read_cron_log,
    read_crontab,
    user_crontab,  # noqa: F401 - a fixture: the user's table, put back exactly afterwards
    wait_for_finished_run,
    wait_for_scheduler_exit,
    write_crontab,
)

pytestmark = pytest.mark.e2e
with_user_crontab = pytest.mark.usefixtures("user_crontab")


# ── Crontab injection ────────────────────────────────────────────────────


@pytest.fixture
def spy_crontab(request: pytest.FixtureRequest) -> Any:
    """Return (env, calls file): the real crontab behind a stand-in that notes each call."""
    return request.getfixturevalue("fake_crontab")("spy")


def injection(target: Path, char: str = "\n") -> str:
    """Return an override whose value would start a cron job of its own after char."""
    return f"steps.1.arguments.print='x{char}* * * * * touch {target} #'"


def assert_refused(result: Any, named: str) -> None:
    """Assert a cron action was refused as bad input: exit 2, one problem naming the word."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert repr(named) in result.stderr, result.stderr
    assert "control character" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\t"], ids=["LF", "CR", "ESC", "TAB"])
def test_cron_print_refuses_an_override_with_a_control_character(
    make_project: Any, spy_crontab: Any, tmp_path: Path, char: str
) -> None:
    project = project_with_probe(make_project)
    env, calls = spy_crontab
    bad = injection(tmp_path / "pwned", char)
    result = run_scheduler(project, "scheduler.cron=print", f"scheduler.schedule={NEVER}", bad,
                           env=env)
    assert_refused(result, bad)
    assert calls.read_text() == "", "cron=print must not touch the crontab"


@with_user_crontab
@pytest.mark.parametrize("char", ["\n", "\r", "\x1b"], ids=["LF", "CR", "ESC"])
def test_cron_install_refuses_an_override_with_a_control_character_and_changes_nothing(
    make_project: Any, spy_crontab: Any, tmp_path: Path, char: str
) -> None:
    project = project_with_probe(make_project)
    other = other_lines(project)
    write_crontab(other)
    env, calls = spy_crontab
    bad = injection(tmp_path / "pwned", char)
    result = run_scheduler(project, "scheduler.cron=install", f"scheduler.schedule={NEVER}", bad,
                           env=env)
    assert_refused(result, bad)
    assert read_crontab() == other, "the crontab must stay byte for byte as it was"
    assert [call for call in calls.read_text().splitlines() if call != "-l"] == []
    removed = run_scheduler(project, "scheduler.cron=remove")
    assert removed.returncode == 0, removed.stderr
    assert read_crontab() == other


@with_user_crontab
def test_a_config_dir_or_name_with_a_newline_never_reaches_the_crontab(
    make_project: Any, tmp_path: Path
) -> None:
    project = project_with_probe(make_project)
    other = other_lines(project)
    write_crontab(other)
    odd_dir = tmp_path / "confs\n* * * * * touch pwned #"
    odd_dir.mkdir()
    (odd_dir / "other.yaml").write_text((project / "config.yaml").read_text())
    odd_name = "night\n* * * * * touch pwned #"
    (project / f"{odd_name}.yaml").write_text((project / "config.yaml").read_text())
    for flags, named in ((["--config-dir", str(odd_dir), "--config-name", "other"], str(odd_dir)),
                         (["--config-name", odd_name], odd_name)):
        for action in ("print", "install"):
            result = run_scheduler(project, f"scheduler.cron={action}",
                                   f"scheduler.schedule={NEVER}", *flags)
            assert_refused(result, named)
            assert read_crontab() == other, (action, named)


@with_user_crontab
def test_a_root_folder_with_a_newline_never_reaches_the_crontab(
    make_project: Any, tmp_path: Path
) -> None:
    made = project_with_probe(make_project)
    project = tmp_path / "odd\n* * * * * touch pwned #" / "proj"
    shutil.copytree(made, project)
    other = other_lines(made)
    write_crontab(other)
    for action in ("print", "install"):
        result = run_scheduler(project, f"scheduler.cron={action}", f"scheduler.schedule={NEVER}")
        assert_refused(result, str(project.resolve()))
        assert read_crontab() == other


@pytest.mark.usefixtures("user_crontab", "cron_daemon")
def test_a_real_cron_daemon_never_runs_an_injected_line(
    make_project: Any, tmp_path: Path
) -> None:
    """The refused line is never installed; a good line installed after it runs as ever."""
    project = project_with_probe(make_project)
    other = other_lines(project)
    write_crontab(other)
    pwned = tmp_path / "pwned"
    if time.time() % 60 > 50:  # cron looks at its tables as each minute starts
        time.sleep(60.5 - time.time() % 60)
    refused = run_scheduler(project, "scheduler.cron=install", "scheduler.schedule=* * * * *",
                            injection(pwned))
    assert_refused(refused, injection(pwned))
    assert read_crontab() == other
    good = run_scheduler(project, "scheduler.cron=install", "scheduler.schedule=* * * * *",
                         "steps.1.arguments.print='x * * * * * touch pwned #'")
    assert good.returncode == 0, good.stderr
    table = read_crontab()
    assert table is not None and table.count(b"\n") == other.count(b"\n") + 1
    folder = wait_for_finished_run(project, CRON_DAEMON_WAIT)
    assert folder is not None, f"cron did not run the good line:\n{table.decode()}"
    wait_for_scheduler_exit(project)
    assert load_json(folder / "summary.json")["status"] == "succeeded", read_cron_log(project)
    assert "x * * * * * touch pwned #" in read_cron_log(project).splitlines()
    assert not pwned.exists() and not (project / "pwned").exists()
    assert run_scheduler(project, "scheduler.cron=remove").returncode == 0
    assert read_crontab() == other


# ── The schedule and the user's own lines ────────────────────────────────

SCHEDULES = [
    "0 10 * * mon-fri", "0 10 * * mon,wed", "0 10 1 jan-mar *", "*/15 * * * *", "1-5/2 * * * *",
    "0 10 * * MON-Fri", "0 10 * * mon-5", "0 10 * jan-mar/2 *", "0 10 * * *,1", "5/2 * * * *",
    "0 10 * * */mon", "0 10 * * monday", "0 10 * * 1-*", "0 10 * * 1,", "0 10 * * 1/0",
    "0 10 * mon *", "0 10 * * 8", "60 * * * *",
]


@with_user_crontab
def test_the_schedule_check_agrees_with_the_real_crontab() -> None:
    sys.path.insert(0, str(ROOT))
    import scheduler  # the pure check, compared with its real consumer

    verdicts = []
    for schedule in SCHEDULES:
        tried = subprocess.run(["crontab", "-"], input=f"{schedule} /bin/true\n".encode(),
                               capture_output=True, timeout=30)
        verdicts.append((schedule, tried.returncode == 0, scheduler.check_schedule(schedule) == []))
    assert [v for v in verdicts if v[1] != v[2]] == [], "(schedule, crontab, crude-link)"
    assert any(v[1] for v in verdicts) and not all(v[1] for v in verdicts)


@with_user_crontab
@pytest.mark.parametrize("action", ["install", "remove"])
def test_install_and_remove_keep_a_line_the_user_commented_out(
    make_project: Any, action: str
) -> None:
    project = project_with_probe(make_project)
    active = run_scheduler(project, "scheduler.cron=print", f"scheduler.schedule={NEVER}")
    assert active.returncode == 0, active.stderr
    other = other_lines(project) + b"# " + active.stdout.encode()  # paused by the user
    write_crontab(other)
    result = run_scheduler(project, f"scheduler.cron={action}", "scheduler.schedule=0 0 30 2 *")
    assert result.returncode == 0, result.stderr
    table = read_crontab()
    assert table is not None and table.startswith(other)
    assert len(table.splitlines()) == len(other.splitlines()) + (action == "install")


# ── The lock file ────────────────────────────────────────────────────────

LOCKED = """\
steps:
  - script: tasks/fate.py
    arguments: {record: ran.json}
"""


def lock_path(project: Path) -> Path:
    (project / "outputs").mkdir(exist_ok=True)
    return project / "outputs" / ".crude-link.lock"


def assert_lock_refused(project: Path, result: Any, what: str) -> None:
    """Assert exit 70 with one line naming the lock path and what is wrong; no step ran."""
    assert result.returncode == 70, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(lock_path(project)) in lines[0] and what in lines[0], lines[0]
    assert not (project / "ran.json").exists(), "no step may run"
    assert list((project / "outputs").glob("*/*/summary.json")) == []


def test_the_lock_never_writes_through_a_symlink(make_project: Any, tmp_path: Path) -> None:
    project = make_project(LOCKED)
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"my thesis, chapter 1\n")
    lock_path(project).symlink_to(victim)
    result = run_scheduler(project)
    assert_lock_refused(project, result, "symbolic link")
    assert victim.read_bytes() == b"my thesis, chapter 1\n"
    assert lock_path(project).is_symlink(), "the user's link is left for the user to look at"


def test_a_dangling_lock_symlink_creates_nothing(make_project: Any, tmp_path: Path) -> None:
    project = make_project(LOCKED)
    target = tmp_path / "made-by-crude-link"
    lock_path(project).symlink_to(target)
    result = run_scheduler(project)
    assert_lock_refused(project, result, "symbolic link")
    assert not target.exists() and not target.is_symlink()


def test_a_lock_path_that_is_a_folder_or_a_fifo_is_an_error_at_once(make_project: Any) -> None:
    project = make_project(LOCKED)
    lock_path(project).mkdir()
    assert_lock_refused(project, run_scheduler(project), "folder")
    lock_path(project).rmdir()
    os.mkfifo(lock_path(project))
    started = time.monotonic()
    assert_lock_refused(project, run_scheduler(project), "FIFO")
    assert time.monotonic() - started < 30, "opening the FIFO must not wait for a writer"


def test_every_multirun_job_refuses_a_symlinked_lock(make_project: Any, tmp_path: Path) -> None:
    project = make_project(LOCKED)
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"keep\n")
    lock_path(project).symlink_to(victim)
    result = run_scheduler(project, "-m", "+steps.0.arguments.n=1,2")
    assert result.returncode == 70, result.stdout + result.stderr
    assert result.stderr.count(str(lock_path(project))) == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert victim.read_bytes() == b"keep\n"
    assert not (project / "ran.json").exists()


def test_a_plain_run_still_locks_and_leaves_a_regular_lock_file(make_project: Any) -> None:
    project = make_project(LOCKED)
    assert run_scheduler(project).returncode == 0
    lock = lock_path(project)
    assert lock.is_file() and not lock.is_symlink()
    assert lock.read_text().startswith("pid ")
    assert run_scheduler(project).returncode == 0, "the lock file is reused"


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
