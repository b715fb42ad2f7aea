"""End to end: cron=print|install|remove, quiet runs, cron's environment (README "Running from
cron").

The tests that touch the crontab go through the real `crontab` command and put the user's
table back exactly as it was (`user_crontab`). The lines they install use a schedule that
never fires (February 31st), except the tests that run a real cron daemon. No override,
config path or folder with a control character ever reaches the crontab.
"""

import contextlib
import fcntl
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import (
    ANSI,
    NEVER,
    ROOT,
    assert_latest_is,
    cron_command,
    cron_env,
    home_folder,
    load_json,
    load_summary,
    read_cron_log,
    run_folder,
    run_scheduler,
    split_log,
)

pytestmark = pytest.mark.e2e

NEVER_EITHER = "0 0 30 2 *"
# Seconds for cron to start an entry installed early in a minute: normally the next minute
# tick, but a loaded machine can miss one, so allow a second tick before failing.
CRON_DAEMON_WAIT = 140

# Records what its step sees, in $CRUDE_LINK_RUN_DIR/probe.json: arguments, environment,
# terminal, the processes above it, and what <root>/outputs/latest points at.
PROBE = '''\
import json
import os
from pathlib import Path

from omegaconf import OmegaConf


def ancestors():
    """Return [{pid, name, tty_nr}] from the parent of this process up to pid 1."""
    chain = []
    pid = os.getppid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        rest = stat[stat.rindex(")") + 2 :].split()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        chain.append({"pid": pid, "name": name, "tty_nr": int(rest[4])})
        pid = int(rest[1])
    return chain


def main():
    latest = Path("outputs") / "latest"
    try:
        parent_stdin = os.readlink(f"/proc/{os.getppid()}/fd/0")
    except OSError as error:
        parent_stdin = str(error)
    summary = latest / "summary.json"
    seen = {
        "args": OmegaConf.to_container(OmegaConf.from_cli()),
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "stdin_isatty": os.isatty(0),
        "parent_stdin": parent_stdin,
        "ancestors": ancestors(),
        "latest_link": os.readlink(latest) if latest.is_symlink() else None,
        "latest_resolved": str(latest.resolve()) if latest.is_symlink() else None,
        "latest_summary": json.loads(summary.read_text()) if summary.exists() else None,
    }
    out = Path(os.environ["CRUDE_LINK_RUN_DIR"]) / "probe.json"
    out.write_text(json.dumps(seen, indent=2))
    print("probe: recorded what it saw")


main()
'''

PIPELINE = """\
steps:
  - script: tasks/probe.py
  - script: tasks/fate.py
    arguments: {print: second step here}
scheduler:
  on_failure: ask
  dry_run: false
  schedule: null
  cron: null
  quiet: false
"""

# Another config for the same folder: --config-name other.
OTHER_CONFIG = """\
steps:
  - script: tasks/fate.py
    arguments: {print: from the other config}
scheduler:
  schedule: null
  cron: null
"""

# Step 1 prints on stdout and stderr, step 2 fails with exit code 3, step 3 is ordinary.
FAILING = """\
steps:
  - script: tasks/fate.py
    arguments: {print: first step ok, stderr: first step warns, lines: 3}
  - script: tasks/fate.py
    arguments: {print: second step out, stderr: second step err, exit_code: 3}
  - script: tasks/fate.py
    arguments: {print: third step}
scheduler:
  on_failure: ask
  quiet: false
  schedule: null
  cron: null
"""

DURATION = re.compile(r"\b\d+(?:\.\d+)?s\b|\b\d+m\d\ds\b")


def project_with_probe(make_project: Any, config: str = PIPELINE) -> Path:
    """Return a temp project with tasks/probe.py and tasks/fate.py."""
    project: Path = make_project(config, {"probe.py": PROBE})
    return project


def tag_of(project: Path, config: str = "config") -> str:
    return f"# crude-link: {project.resolve()} config={config}"


def other_lines(project: Path) -> bytes:
    """Return a user's crontab lines that crude-link must keep byte for byte."""
    return (
        b'MAILTO=""\n'
        b"# my own jobs, not crude-link's\n"
        b"0 0 31 2 * /bin/true  # never: Feb 31\t \n"
        b"\n"
        b"0 0 30 2 * echo caf\xc3\xa9 \\% done\n"
        b"0 0 31 2 * /usr/bin/python3 /elsewhere/scheduler.py >> /elsewhere/outputs/cron.log"
        b" 2>&1 # crude-link: /elsewhere config=config\n"
        # Holds this folder's tag, but not at the end: not crude-link's line.
        + f"# note: '{tag_of(project)}' marks crude-link's line\n".encode()
    )


# ── The user's crontab ───────────────────────────────────────────────────


def read_crontab() -> Optional[bytes]:
    """Return the user's crontab (crontab -l), or None when there is none."""
    done = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
    if done.returncode == 0:
        return done.stdout
    assert b"no crontab" in done.stderr, f"crontab -l failed: {done.stderr!r}"
    return None


def write_crontab(table: Optional[bytes]) -> None:
    """Install table as the user's crontab; None means remove the crontab."""
    if table is None:
        if read_crontab() is not None:
            subprocess.run(["crontab", "-r"], check=True, capture_output=True, timeout=30)
        return
    subprocess.run(["crontab", "-"], input=table, check=True, capture_output=True, timeout=30)


@pytest.fixture
def user_crontab() -> Iterator[Optional[bytes]]:
    """Yield the user's crontab (None: none), and put it back exactly afterwards."""
    if shutil.which("crontab") is None:
        pytest.skip("no crontab command here (Debian: apt-get install cron)")
    done = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
    if done.returncode != 0 and b"no crontab" not in done.stderr:
        pytest.skip(f"crontab -l does not work here: {done.stderr.decode(errors='replace')}")
    saved = done.stdout if done.returncode == 0 else None
    try:
        yield saved
    finally:
        write_crontab(saved)
        assert read_crontab() == saved, "the user's crontab was not restored"


def tagged(table: Optional[bytes], tag: str) -> List[bytes]:
    """Return the lines of a crontab that end with tag."""
    return [row for row in (table or b"").splitlines() if row.endswith(tag.encode())]


@pytest.fixture
def fake_crontab(tmp_path: Path) -> Callable[[str], Tuple[Dict[str, str], Path]]:
    """Return a function giving (env, calls file) with a stand-in `crontab` first on PATH.

    mode "spy" passes every call on to the real crontab; "refuse-write" reads the real
    table but refuses to install one; "refuse-read" fails to list the table. Each call's
    arguments are appended to the calls file.
    """
    real = shutil.which("crontab") or "/usr/bin/crontab"

    def make(mode: str) -> Tuple[Dict[str, str], Path]:
        folder = tmp_path / f"fake-{mode}"
        folder.mkdir()
        calls = folder / "calls"
        calls.write_text("")
        script = folder / "crontab"
        script.write_text(
            "#!/bin/sh\n"
            f'echo "$*" >> {shlex.quote(str(calls))}\n'
            f'if [ {mode} = spy ]; then exec {shlex.quote(real)} "$@"; fi\n'
            f'if [ {mode} = refuse-write ] && [ "$1" = -l ]; then exec {shlex.quote(real)} -l; fi\n'
            "cat > /dev/null\n"
            f"echo 'crontab: refused by the test stand-in ({mode})' >&2\n"
            "exit 1\n"
        )
        script.chmod(0o755)
        env = {**os.environ, "NO_COLOR": "1", "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
        return env, calls

    return make


def calls_of(calls: Path) -> List[str]:
    return calls.read_text().splitlines()


# ── Running a crontab line the way cron does ─────────────────────────────


def run_like_cron(line: str, home: Path) -> "subprocess.CompletedProcess[bytes]":
    """Run a crontab line's command as cron would: /bin/sh -c, cron's environment, in HOME."""
    command, stdin = cron_command(line)
    user = pwd.getpwuid(os.getuid()).pw_name
    env = {**cron_env(home), "SHELL": "/bin/sh", "LOGNAME": user}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=home,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def line_words(line: str) -> List[str]:
    """Return the words of a crontab line's command as the shell splits them, tag dropped."""
    return shlex.split(cron_command(line)[0], comments=True)


def printed_line(project: Path, *overrides: str, **kwargs: Any) -> str:
    """Return the one line `scheduler.cron=print` prints for these overrides."""
    result = run_scheduler(project, "scheduler.cron=print", *overrides, **kwargs)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def cron_action(project: Path, action: str, *overrides: str, **kwargs: Any) -> Any:
    """Run `scheduler.cron=<action>` with these overrides; return the completed process."""
    return run_scheduler(project, f"scheduler.cron={action}", *overrides, **kwargs)


def assert_no_run(project: Path) -> None:
    """Assert that no step ran: no summary.json, no outputs/latest, no probe record."""
    outputs = project / "outputs"
    assert list(outputs.glob("*/*/summary.json")) == []
    assert list(outputs.glob("*/*/probe.json")) == []
    assert not (outputs / "latest").is_symlink()


# ── cron=print ───────────────────────────────────────────────────────────


def test_cron_print_shows_the_readme_line_and_runs_nothing(
    make_project: Any, fake_crontab: Any
) -> None:
    project = project_with_probe(make_project)
    env, calls = fake_crontab("spy")
    result = cron_action(project, "print", "scheduler.schedule=0 10 * * 1", env=env)
    assert result.returncode == 0, result.stderr
    root = project.resolve()
    assert result.stdout == (
        f"0 10 * * 1 {sys.executable} {root}/scheduler.py 'scheduler.schedule=0 10 * * 1'"
        f" >> {root}/outputs/cron.log 2>&1 # crude-link: {root} config=config\n"
    )
    assert result.stderr == ""
    assert_no_run(project)
    assert calls_of(calls) == [], "cron=print must not touch the crontab"


def test_cron_print_repeats_every_override_shell_quoted(make_project: Any, tmp_path: Path) -> None:
    project = project_with_probe(make_project)
    odd = """100% sure: "it" costs $HOME, a,b & `x`"""
    overrides = [
        "steps.1.arguments.print='" + odd + "'",
        "scheduler.on_failure=abort",
        "+steps.0.arguments.note='a b'",
        f"scheduler.schedule={NEVER}",
    ]
    line = printed_line(project, *overrides)
    root = project.resolve()
    assert line.startswith(NEVER + " ")
    assert line.endswith(" " + tag_of(project))
    assert line_words(line) == [
        sys.executable,
        str(root / "scheduler.py"),
        *overrides,
        ">>",
        str(root / "outputs" / "cron.log"),
        "2>&1",
    ]
    # cron starts the line with /bin/sh in $HOME, with PATH=/usr/bin:/bin and no terminal.
    ran = run_like_cron(line, home_folder(tmp_path))
    assert ran.returncode == 0, f"{ran.stderr!r}\ncron.log:\n{read_cron_log(project)}"
    assert ran.stdout == b"" and ran.stderr == b"", "without quiet nothing goes to cron's mail"
    summary = load_summary(project)
    assert summary["status"] == "succeeded"
    assert load_json(run_folder(project) / "probe.json")["args"] == {"note": "a b"}
    cron_log = read_cron_log(project)
    assert odd in cron_log.splitlines()
    assert "second step here" not in cron_log, "the override must replace the config's value"


@pytest.mark.parametrize(
    "value",
    [
        r"back\slash and C:\temp",
        r"two\\backslashes",
        r"percent after a backslash \%d",
    ],
)
def test_cron_line_passes_backslashes_unchanged(
    make_project: Any, tmp_path: Path, value: str
) -> None:
    """What a step gets from the cron line is what it gets from the same command line."""
    project = project_with_probe(make_project)
    override = "steps.1.arguments.print='" + value + "'"
    direct = run_scheduler(project, override)
    assert direct.returncode == 0, direct.stderr
    expected = (run_folder(project) / "02-fate.log").read_text().splitlines()[-1]
    shutil.rmtree(project / "outputs")
    line = printed_line(project, override, f"scheduler.schedule={NEVER}")
    (project / "outputs").mkdir(exist_ok=True)
    ran = run_like_cron(line, home_folder(tmp_path))
    assert ran.returncode == 0, f"{ran.stderr!r}\ncron.log:\n{read_cron_log(project)}"
    got = (run_folder(project) / "02-fate.log").read_text().splitlines()[-1]
    assert got == expected, f"cron turned {expected!r} into {got!r}; the line was:\n{line}"


@pytest.mark.parametrize("flags_first", [True, False], ids=["flags-first", "flags-last"])
def test_cron_line_with_config_dir_and_name_runs_that_config(
    make_project: Any, tmp_path: Path, flags_first: bool
) -> None:
    project = project_with_probe(make_project)
    confs = tmp_path / "confs"
    confs.mkdir()
    (confs / "other.yaml").write_text(OTHER_CONFIG)
    flags = ["--config-dir", "confs", "--config-name", "other"]  # relative to the cwd
    overrides = [f"scheduler.schedule={NEVER}", "steps.0.arguments.print='other, overridden'"]
    argv = [*flags, "scheduler.cron=print", *overrides]
    if not flags_first:
        argv = ["scheduler.cron=print", *overrides, *flags]
    result = run_scheduler(project, *argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    words = line_words(line)
    assert words[:2] == [sys.executable, str(project.resolve() / "scheduler.py")]
    at = words.index("--config-dir")
    assert words[at + 1] == str(confs.resolve())
    assert words[words.index("--config-name") + 1] == "other"
    assert [w for w in words if w in overrides] == overrides
    assert tag_of(project, "other") in line
    # The line must work from cron: the other config's step, with the override, runs.
    ran = run_like_cron(line, home_folder(tmp_path))
    cron_log = read_cron_log(project)
    assert ran.returncode == 0, f"the cron line failed:\n{line}\ncron.log:\n{cron_log}"
    assert load_summary(project)["status"] == "succeeded"
    assert "other, overridden" in cron_log.splitlines()


@pytest.mark.parametrize(
    "schedule",
    ["*/0 * * * *", "60 * * * *", "* 24 * * *", "* * * * 8", "* * * *", "0 10 * * 1 *", "@daily"],
)
def test_cron_print_rejects_an_invalid_schedule(
    make_project: Any, fake_crontab: Any, schedule: str
) -> None:
    project = project_with_probe(make_project)
    env, calls = fake_crontab("spy")
    result = cron_action(project, "print", f"scheduler.schedule='{schedule}'", env=env)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert "schedule" in result.stderr and schedule in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_run(project)
    assert calls_of(calls) == []


def test_cron_print_without_a_schedule_is_an_error(make_project: Any) -> None:
    project = project_with_probe(make_project)
    result = cron_action(project, "print")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "schedule" in result.stderr
    assert_no_run(project)


# ── cron=install and cron=remove, through the real crontab ───────────────


def test_install_replaces_its_own_line_and_remove_takes_it_out(
    make_project: Any, tmp_path: Path, user_crontab: Optional[bytes]
) -> None:
    project = project_with_probe(make_project)
    (project / "other.yaml").write_text(OTHER_CONFIG)
    twin = tmp_path / "twin"  # a second folder: a line of its own
    shutil.copytree(project, twin)
    other = other_lines(project)
    write_crontab(other)

    first = printed_line(project, f"scheduler.schedule={NEVER}")
    for _ in range(2):  # installing twice leaves one line
        result = cron_action(project, "install", f"scheduler.schedule={NEVER}")
        assert result.returncode == 0, result.stderr
        assert read_crontab() == other + first.encode() + b"\n"

    replaced = printed_line(project, f"scheduler.schedule={NEVER_EITHER}", "scheduler.quiet=true")
    result = cron_action(
        project, "install", f"scheduler.schedule={NEVER_EITHER}", "scheduler.quiet=true"
    )
    assert result.returncode == 0, result.stderr
    assert read_crontab() == other + replaced.encode() + b"\n"

    twin_line = printed_line(twin, f"scheduler.schedule={NEVER}")
    assert cron_action(twin, "install", f"scheduler.schedule={NEVER}").returncode == 0
    by_name = ["--config-name", "other"]  # after the overrides: see the flags-first test
    other_config = printed_line(project, f"scheduler.schedule={NEVER}", *by_name)
    assert other_config.endswith(tag_of(project, "other"))
    result = cron_action(project, "install", f"scheduler.schedule={NEVER}", *by_name)
    assert result.returncode == 0, result.stderr
    table = read_crontab()
    assert table == other + f"{replaced}\n{twin_line}\n{other_config}\n".encode()
    assert len(tagged(table, tag_of(project))) == 1

    for _ in range(2):  # removing twice is fine
        result = cron_action(project, "remove")
        assert result.returncode == 0, result.stderr
        assert read_crontab() == other + f"{twin_line}\n{other_config}\n".encode()
    assert cron_action(twin, "remove").returncode == 0
    assert cron_action(project, "remove", *by_name).returncode == 0
    assert read_crontab() == other


@pytest.mark.parametrize("before", [None, b""], ids=["no-crontab", "empty-crontab"])
def test_install_and_remove_with_no_other_lines(
    make_project: Any, user_crontab: Optional[bytes], before: Optional[bytes]
) -> None:
    project = project_with_probe(make_project)
    write_crontab(before)
    line = printed_line(project, f"scheduler.schedule={NEVER}")
    result = cron_action(project, "install", f"scheduler.schedule={NEVER}")
    assert result.returncode == 0, result.stderr
    assert line in result.stdout
    assert read_crontab() == line.encode() + b"\n"
    assert (project / "outputs").is_dir(), "cron.log's folder must exist for the line's >>"
    result = cron_action(project, "remove")
    assert result.returncode == 0, result.stderr
    assert read_crontab() in (None, b"")
    assert_no_run(project)


@pytest.mark.parametrize("schedule", ["*/0 * * * *", "0 10 * * 9", "0 10 * *", "@hourly"])
def test_install_rejects_an_invalid_schedule_and_leaves_the_crontab(
    make_project: Any, fake_crontab: Any, user_crontab: Optional[bytes], schedule: str
) -> None:
    project = project_with_probe(make_project)
    other = other_lines(project)
    write_crontab(other)
    env, calls = fake_crontab("spy")
    result = cron_action(project, "install", f"scheduler.schedule='{schedule}'", env=env)
    assert result.returncode == 2
    assert schedule in result.stderr
    assert "Traceback" not in result.stderr
    assert read_crontab() == other
    assert [call for call in calls_of(calls) if call != "-l"] == [], "nothing may be written"
    assert_no_run(project)


def test_crontab_refusing_the_table_is_an_error_and_changes_nothing(
    make_project: Any, user_crontab: Optional[bytes]
) -> None:
    """Debian's crontab refuses a command over 1000 characters: a real refusal."""
    project = project_with_probe(make_project)
    other = other_lines(project)
    write_crontab(other)
    too_long = other + b"0 0 31 2 * echo " + b"x" * 1100 + b"\n"
    probe = subprocess.run(["crontab", "-"], input=too_long, capture_output=True, timeout=30)
    if probe.returncode == 0:
        write_crontab(other)
        pytest.skip("this crontab accepts 1100-character commands: no real way to refuse")
    refusal = probe.stderr.decode().strip().splitlines()[-1]  # "errors in crontab file..."
    assert read_crontab() == other

    result = cron_action(
        project, "install", f"scheduler.schedule={NEVER}", "+steps.0.arguments.pad=" + "x" * 1100
    )
    assert result.returncode == 2, result.stdout
    assert "crontab" in result.stderr and refusal in result.stderr
    assert "Traceback" not in result.stderr
    assert "installed" not in result.stdout
    assert read_crontab() == other
    assert_no_run(project)


@pytest.mark.parametrize(
    "action, mode",
    [
        ("install", "refuse-write"),
        ("remove", "refuse-write"),
        ("install", "refuse-read"),
        ("remove", "refuse-read"),
    ],
)
def test_a_crontab_failure_is_an_error_and_changes_nothing(
    make_project: Any, fake_crontab: Any, user_crontab: Optional[bytes], action: str, mode: str
) -> None:
    project = project_with_probe(make_project)
    other = other_lines(project)
    write_crontab(other)
    if action == "remove":  # something to remove: this folder's line, installed for real
        assert cron_action(project, "install", f"scheduler.schedule={NEVER}").returncode == 0
    before = read_crontab()
    env, calls = fake_crontab(mode)
    result = cron_action(project, action, f"scheduler.schedule={NEVER_EITHER}", env=env)
    assert result.returncode == 2, result.stdout
    assert f"refused by the test stand-in ({mode})" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_crontab() == before
    if mode == "refuse-read":  # an unreadable table must never be overwritten
        assert [call for call in calls_of(calls) if call != "-l"] == []
    assert_no_run(project)


@pytest.mark.parametrize("action", ["install", "remove"])
def test_no_crontab_command_is_an_error(
    make_project: Any, tmp_path: Path, user_crontab: Optional[bytes], action: str
) -> None:
    project = project_with_probe(make_project)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {**os.environ, "NO_COLOR": "1", "PATH": str(empty)}
    result = cron_action(project, action, f"scheduler.schedule={NEVER}", env=env)
    assert result.returncode == 2
    assert "crontab" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_crontab() == user_crontab


# ── scheduler.quiet ──────────────────────────────────────────────────────


PEAK_MEMORY = re.compile(r"≤?\d+(?:\.\d+)? [KMG]iB")  # the final table's peak memory


def comparable_lines(output: str, project: Path) -> List[str]:
    """Return output's lines without what differs between two runs: folders and timings."""
    text = output.replace(str(run_folder(project)), "<run>").replace(str(project), "<root>")
    text = PEAK_MEMORY.sub("<memory>", text)  # differs between two runs too
    return [" ".join(DURATION.sub("<time>", line).split()) for line in text.splitlines()]


def is_subsequence(needles: List[str], haystack: List[str]) -> bool:
    rest = iter(haystack)
    return all(any(needle == line for line in rest) for needle in needles)


def test_quiet_prints_nothing_when_every_step_succeeds_and_logs_everything(
    make_project: Any,
) -> None:
    project = make_project(FAILING.replace("exit_code: 3", "exit_code: 0"))
    result = run_scheduler(project, "scheduler.quiet=true", "+steps.2.arguments.lines=500")
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == ("", "")
    folder = run_folder(project)
    assert load_summary(project)["status"] == "succeeded"
    scheduler_log = (folder / "scheduler.log").read_text()
    for text in ("[1/3]", "[2/3]", "[3/3]", "run succeeded"):
        assert text in scheduler_log
    assert (folder / "01-fate.log").read_text().count("first step") == 2
    assert "second step err" in (folder / "02-fate-2.log").read_text()
    assert "line 500" in (folder / "03-fate-3.log").read_text()


@pytest.mark.parametrize("on_failure", ["ask", "continue"])
def test_quiet_prints_everything_when_a_step_fails(
    make_project: Any, tmp_path: Path, on_failure: str
) -> None:
    loud = make_project(FAILING)
    quiet = tmp_path / "quiet"
    shutil.copytree(loud, quiet)
    policy = f"scheduler.on_failure={on_failure}"
    shown = run_scheduler(loud, policy)
    held = run_scheduler(quiet, policy, "scheduler.quiet=true")
    assert shown.returncode == held.returncode == 3
    expected = comparable_lines(shown.stdout, loud)
    got = comparable_lines(held.stdout, quiet)
    for text in ("first step ok", "first step warns", "second step out", "exit code 3", "failed"):
        assert any(text in line for line in expected), text  # the comparison means something
    missing = [line for line in expected if line not in got]
    assert missing == [], f"quiet run did not show: {missing}\n--- it showed:\n{held.stdout}"
    assert is_subsequence(expected, got), f"not in order:\n{held.stdout}"
    assert set(comparable_lines(shown.stderr, loud)) <= set(comparable_lines(held.stderr, quiet))
    assert ("third step" in held.stdout) == (on_failure == "continue")
    folder = run_folder(quiet)
    scheduler_log = (folder / "scheduler.log").read_text()
    assert "step 2" in scheduler_log and "exit code 3" in scheduler_log
    assert "second step err" in (folder / "02-fate-2.log").read_text()


@pytest.mark.parametrize("fails", [False, True], ids=["succeeds", "fails"])
def test_quiet_cron_line_mails_only_failures_and_logs_them(
    make_project: Any, tmp_path: Path, fails: bool
) -> None:
    """Under cron, what the line prints is mailed: nothing for a good run, all for a bad one."""
    project = make_project(FAILING if fails else FAILING.replace("exit_code: 3", "exit_code: 0"))
    line = printed_line(project, "scheduler.quiet=true", f"scheduler.schedule={NEVER}")
    assert "scheduler.quiet=true" in line_words(line)
    ran = run_like_cron(line, home_folder(tmp_path))
    mail = ran.stdout.decode() + ran.stderr.decode()
    cron_log = read_cron_log(project)
    summary = load_summary(project)
    if not fails:
        assert summary["status"] == "succeeded"
        assert mail == "" and cron_log == ""
        return
    assert summary["status"] == "failed"
    for text in ("first step ok", "second step out", "step 2", "exit code 3", "not_run"):
        assert text in mail, f"{text!r} missing from cron's mail:\n{mail}"
    assert cron_log.splitlines() == ran.stdout.decode().splitlines()


# ── A real cron daemon ───────────────────────────────────────────────────


def process_stat(pid: int) -> Tuple[str, int]:
    """Return a process's name and parent pid, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.index("(") + 1 : stat.rindex(")")], int(
        stat[stat.rindex(")") + 2 :].split()[1]
    )


def running_cron_daemons() -> List[int]:
    """Return the pids of the cron daemons running here (Debian's cron, cronie's crond)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name, parent = process_stat(int(entry.name))
                parent_name = process_stat(parent)[0] if parent > 1 else ""
            except (OSError, ValueError, IndexError):
                continue
            if name in ("cron", "crond") and parent_name not in ("cron", "crond"):
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def cron_daemon(tmp_path: Path) -> Iterator[Optional[int]]:
    """Yield the pid of a cron daemon started here (`cron -f`), stopped afterwards by pid;
    None when one was already running (it is used and left alone)."""
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find a running cron daemon")
    if running_cron_daemons():
        yield None
        return
    binary = shutil.which("cron") or next(
        (p for p in ("/usr/sbin/cron", "/usr/sbin/crond") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        pytest.skip("no cron daemon installed (Debian: apt-get install cron)")
    pid_file = Path("/run/crond.pid")
    pid_file_existed = pid_file.exists()
    output_path = tmp_path / "cron-daemon.out"
    with output_path.open("wb") as output:
        daemon = subprocess.Popen(
            [binary, "-f"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TEST_NOT_FOR_CRON_JOBS": "1"},  # cron jobs must not see it
            start_new_session=True,
        )
    try:
        time.sleep(1.5)  # up, and any crontab change from now on is in a later second
        if daemon.poll() is not None:
            pytest.skip(
                f"cannot start {binary} -f (exit {daemon.returncode}): "
                f"{output_path.read_text(errors='replace').strip()}"
            )
        yield daemon.pid
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)
        # The pid file is the daemon's, left behind: remove it if this test made it.
        with contextlib.suppress(OSError):
            if not pid_file_existed and pid_file.read_text().strip() == str(daemon.pid):
                pid_file.unlink()


def wait_for_finished_run(project: Path, timeout: float) -> Optional[Path]:
    """Return the first run folder whose summary.json says it ended; None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in (project / "outputs").glob("*/*/summary.json"):
            try:
                status = load_json(path).get("status")
            except (OSError, ValueError):
                continue
            if status not in (None, "running"):
                return path.parent
        time.sleep(0.5)
    return None


def wait_for_scheduler_exit(project: Path, timeout: float = 20) -> None:
    """Wait until no scheduler holds the folder's run lock (the run has fully ended)."""
    deadline = time.monotonic() + timeout
    with (project / "outputs" / ".crude-link.lock").open("a+b") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the scheduler started by cron did not end"
                time.sleep(0.2)


def test_a_real_cron_daemon_runs_the_installed_pipeline(
    make_project: Any, user_crontab: Optional[bytes], cron_daemon: Optional[int]
) -> None:
    project = project_with_probe(make_project)
    other = other_lines(project)
    write_crontab(other)
    odd = '100% done, "quoted" & $HOME'
    overrides = ["scheduler.schedule=* * * * *", "steps.1.arguments.print='" + odd + "'"]
    # Cron looks at its tables as each minute starts: install early in a minute.
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)
    installed_at = time.monotonic()
    result = cron_action(project, "install", *overrides)
    assert result.returncode == 0, result.stderr
    table = read_crontab()
    assert table is not None and table.startswith(other)
    assert len(tagged(table, tag_of(project))) == 1

    folder = wait_for_finished_run(project, CRON_DAEMON_WAIT)
    waited = time.monotonic() - installed_at
    assert folder is not None, (
        f"cron did not run the line within {CRON_DAEMON_WAIT}s:\n{table.decode()}\n"
        f"cron.log:\n{read_cron_log(project)}"
    )
    print(f"cron started the pipeline {waited:.1f}s after it was installed")
    wait_for_scheduler_exit(project)
    summary = load_json(folder / "summary.json")
    assert summary["status"] == "succeeded", read_cron_log(project)
    assert [s["exit_code"] for s in summary["steps"]] == [0, 0]
    assert summary["steps"][0]["command"] == [
        sys.executable,
        str(project.resolve() / "tasks" / "probe.py"),
    ]
    assert_latest_is(project, folder)

    # It ran in cron's world: cron's HOME and PATH, no terminal, started by cron.
    seen = load_json(folder / "probe.json")
    assert seen["env"]["HOME"] == pwd.getpwuid(os.getuid()).pw_dir
    path = seen["env"]["PATH"].split(":")
    # The scheduler's interpreter folder comes first (README "How a step runs"), then cron's.
    assert path[0] == os.path.dirname(sys.executable)
    assert set(path[1:]) <= {
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    }
    assert "TEST_NOT_FOR_CRON_JOBS" not in seen["env"] and "TERM" not in seen["env"]
    assert seen["stdin_isatty"] is False
    assert not seen["parent_stdin"].startswith("/dev/pts"), seen["parent_stdin"]
    assert seen["ancestors"][0]["tty_nr"] == 0, "the scheduler had a controlling terminal"
    assert any(a["name"] in ("cron", "crond") for a in seen["ancestors"]), seen["ancestors"]
    if cron_daemon is not None:
        assert cron_daemon in [a["pid"] for a in seen["ancestors"]]
    assert Path(seen["cwd"]) == project.resolve()

    cron_log = read_cron_log(project)
    assert "probe: recorded what it saw" in cron_log
    assert odd in cron_log.splitlines(), "the override did not reach the step intact"
    assert "run succeeded" in cron_log

    result = cron_action(project, "remove")
    assert result.returncode == 0, result.stderr
    assert read_crontab() == other


# ── Crontab injection ────────────────────────────────────────────────────


with_user_crontab = pytest.mark.usefixtures("user_crontab")


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


# ── A pipeline in cron's environment ─────────────────────────────────────


def test_cron_environment_runs_the_same_way(make_project: Any, tmp_path: Path) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/fate.py
            arguments: {record: record.json, print: done}
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    outputs_in_slash = Path("/outputs").exists()
    result = run_scheduler(project, cwd=Path("/"), env=cron_env(home))
    assert result.returncode == 0, result.stderr
    assert list(home.iterdir()) == []
    assert Path("/outputs").exists() == outputs_in_slash
    assert ANSI not in result.stdout + result.stderr  # cron mails the output: no colour codes
    run = run_folder(project)
    received = load_json(project / "record.json")
    assert received["cwd"] == str(project)
    assert received["env"] == {
        "PYTHONUNBUFFERED": "1",
        "CRUDE_LINK_RUN_DIR": str(run),
        "CRUDE_LINK_STEP": "fate",
        "CRUDE_LINK_STEP_INDEX": "1",
        "CRUDE_LINK_PYTHON": sys.executable,
    }
    assert split_log(run / "01-fate.log")[0] == b"done\n"
