"""End to end: how a step runs (README "How a step runs").

Its command (interpreter, launcher, argument_format, a script that is not Python), its name,
its working folder and environment, and its output: live on the terminal, byte for byte in
its log, in flat memory.
"""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import (
    ONE_STEP,
    SHELL_TASK,
    TESTS,
    cron_env,
    finish,
    load_json,
    load_summary,
    make_config,
    read_until,
    run_folder,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    split_log,
    started_scheduler,
    step_statuses,
    succeeded,
    with_programs,
)

pytestmark = pytest.mark.e2e


# ── Names ────────────────────────────────────────────────────────────────


# Stands in for each script the seed config names: prints who it is and what it got.
STUB = """\
import json, os
from omegaconf import OmegaConf
args = OmegaConf.to_container(OmegaConf.from_cli())
print(json.dumps({"step": os.environ["CRUDE_LINK_STEP"], "args": args}))
"""


SEED_TASKS = {name: STUB for name in ("preproccess.py", "train.py", "validate.py", "deploy.py")}


SEED_NAMES = ["preproccess", "training", "validation", "deployment"]


def stub_report(log: Path) -> Dict[str, Any]:
    """Return what a STUB step printed into its log."""
    output, attempts = split_log(log)
    assert attempts == [1]
    report: Dict[str, Any] = json.loads(output)
    return report


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            [],
            [
                {"input_file": "data/dummy.data", "nr_images": 100, "filters": True},
                {"epochs": 10},
                {},
                {},
            ],
        ),
        (
            ["steps.0.arguments.nr_images=10", "+steps.1.arguments.lr=0.1"],
            [
                {"input_file": "data/dummy.data", "nr_images": 10, "filters": True},
                {"epochs": 10, "lr": 0.1},
                {},
                {},
            ],
        ),
    ],
    ids=["as-is", "overridden"],
)
def test_seed_config_runs_and_keeps_its_step_names(
    make_project: Any, overrides: List[str], expected: List[Dict[str, Any]]
) -> None:
    project = make_project((TESTS / "seed_config.yaml").read_text(), SEED_TASKS)
    result = run_scheduler(project, *overrides)
    assert result.returncode == 0, result.stderr
    run = run_folder(project)
    summary = load_summary(project)
    assert summary["status"] == "succeeded"
    assert summary["exit_code"] == 0
    assert [s["name"] for s in summary["steps"]] == SEED_NAMES
    assert step_statuses(summary) == ["succeeded"] * 4
    logs = [f"{n:02d}-{name}.log" for n, name in enumerate(SEED_NAMES, start=1)]
    assert [s["log"] for s in summary["steps"]] == logs
    for log, name, arguments in zip(logs, SEED_NAMES, expected):
        assert stub_report(run / log) == {"step": name, "args": arguments}


def test_a_step_listed_twice_gets_a_numbered_name(make_project: Any) -> None:
    project = make_project(
        """\
        default:
          - prep: &prep
              script: tasks/prep.py
              arguments: {record: prep.json}
        steps:
          - <<: *prep
          - <<: *prep
            arguments: {record: prep2.json}
          - script: tasks/fate.py
            arguments: {record: fate.json}
          - script: tasks/fate.py
            arguments: {record: fate2.json}
        """,
        {"prep.py": (TESTS / "tasks" / "fate.py").read_text()},
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    names = ["prep", "prep-2", "fate", "fate-2"]
    summary = load_summary(project)
    assert [s["name"] for s in summary["steps"]] == names
    for index, (name, record) in enumerate(zip(names, ["prep", "prep2", "fate", "fate2"]), start=1):
        received = load_json(project / f"{record}.json")["env"]
        assert received["CRUDE_LINK_STEP"] == name
        assert received["CRUDE_LINK_STEP_INDEX"] == str(index)
        assert (run_folder(project) / f"{index:02d}-{name}.log").is_file()


# ── The command: interpreter, launcher, argument_format ──────────────────


def test_interpreter_as_a_string_and_as_a_list(make_project: Any) -> None:
    project = make_project(
        make_config(
            f"""\
            - {{script: tasks/run.sh, name: shell, interpreter: sh, arguments: {{who: a b}}}}
            - script: tasks/fate.py
              name: probe
              interpreter: [{sys.executable}, -X, utf8]
              env: {{TEST_RECORD: probe.json}}
              arguments: {{n: 1}}
            """
        ),
        {"run.sh": SHELL_TASK},
    )
    script = project / "tasks" / "run.sh"
    assert not script.stat().st_mode & stat.S_IXUSR  # sh needs no x bit
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    shell, probe = load_summary(project)["steps"]
    assert shell["command"] == ["sh", str(script), "who='a b'"]
    assert (project / "sh-args.txt").read_text() == f"{script}\nwho='a b'\n"
    probe_py = str(project / "tasks" / "fate.py")
    assert probe["command"] == [sys.executable, "-X", "utf8", probe_py, "n=1"]
    seen = load_json(project / "probe.json")
    assert seen["xoptions"] == {"utf8": True}
    assert seen["argv"] == ["n=1"]


def test_launchers_wrap_the_step_and_a_steps_own_wins_even_when_empty(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            """\
            - {script: tasks/fate.py, name: plain, arguments: {record: plain.json}}
            - script: tasks/fate.py
              name: own
              launcher: [env, TEST_LAUNCHED=own]
              arguments: {record: own.json}
            - {script: tasks/fate.py, name: none, launcher: [], arguments: {record: none.json}}
            """
        )
    )
    # The default launcher comes from the command line, as the README shows it.
    result = run_scheduler(project, "scheduler.launcher=[env,'TEST_LAUNCHED=default']")
    assert result.returncode == 0, result.stdout + result.stderr
    fate = [sys.executable, str(project / "tasks" / "fate.py")]
    assert [s["command"] for s in load_summary(project)["steps"]] == [
        ["env", "TEST_LAUNCHED=default", *fate, "record=plain.json"],
        ["env", "TEST_LAUNCHED=own", *fate, "record=own.json"],
        [*fate, "record=none.json"],
    ]
    assert load_json(project / "plain.json")["env"].get("TEST_LAUNCHED") == "default"
    assert load_json(project / "own.json")["env"].get("TEST_LAUNCHED") == "own"
    assert "TEST_LAUNCHED" not in load_json(project / "none.json")["env"]


def test_argument_format_shapes_each_argument(make_project: Any) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              argument_format: "--{key}={value}"
              env: {TEST_RECORD: probe.json}
              arguments: {lr: 0.1, name: a b, opt: {depth: 3}, flag: true}
            """
        )
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    argv = ["--lr=0.1", "--name='a b'", "--opt.depth=3", "--flag=true"]
    assert load_json(project / "probe.json")["argv"] == argv
    assert load_summary(project)["steps"][0]["command"][2:] == argv


def test_a_script_without_interpreter_must_be_executable(make_project: Any) -> None:
    project = make_project(
        make_config("- {script: tasks/run.sh, name: shell, arguments: {who: a b}}"),
        {"run.sh": SHELL_TASK},
    )
    refused = run_scheduler(project)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert any(
        "tasks/run.sh" in line and "executable" in line for line in refused.stderr.splitlines()
    )
    assert not (project / "sh-args.txt").exists()
    script = project / "tasks" / "run.sh"
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_summary(project)["steps"][0]["command"] == [str(script), "who='a b'"]
    assert (project / "sh-args.txt").read_text() == f"{script}\nwho='a b'\n"


def test_numbers_in_launcher_and_interpreter_lists_are_taken_as_text(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "words.txt"
    project = with_programs(make_project(
        f"""\
        scheduler: {{launcher: [nice, -n, 5]}}
        steps:
          - script: tasks/fate.py
            launcher: [nice, -n, 10]
            arguments: {{record: {tmp_path / "fate.json"}}}
          - script: tasks/positional.sh
            interpreter: [timeout, 30, sh]
            env: {{TEST_RECORD: {record}}}
            args: [x]
        """
    ))
    succeeded(run_scheduler(project))
    first, second = load_summary(project)["steps"]
    assert first["command"][:4] == ["nice", "-n", "10", sys.executable]
    assert second["command"] == ["nice", "-n", "5", "timeout", "30", "sh",
                                 str(project / "tasks" / "positional.sh"), "x"]
    assert (tmp_path / "fate.json").exists()
    assert record.read_text(encoding="utf-8") == "x\n"


@pytest.mark.parametrize("undo, code, why", [
    ("chmod a-x tools/next.sh", 126, "Permission denied"),
    ("rm tools/next.sh", 127, "No such file or directory"),
])
def test_a_program_gone_by_the_time_its_step_starts_fails_that_step(
    make_project: Any, undo: str, code: int, why: str
) -> None:
    """The config check found tools/next.sh; the step before it took it away (a rebuild, say).
    The step fails as a shell would say it (126 or 127), its log and the terminal say why,
    and the run stops there (no terminal: on_failure=ask acts as abort)."""
    project = make_project(f"""\
        steps:
          - script: /bin/sh
            name: undo
            args: [-c, "{undo}"]
          - script: tools/next.sh
            name: next
          - script: /bin/true
            name: after
        """)
    tool = project / "tools" / "next.sh"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho next ran\n", encoding="utf-8")
    tool.chmod(0o755)
    result = run_scheduler(project)
    assert result.returncode == code, result.stdout + result.stderr
    summary = load_summary(project)
    assert step_statuses(summary) == ["succeeded", "failed", "not_run"]
    assert summary["steps"][1]["exit_code"] == code and summary["steps"][1]["attempts"] == 1
    said = f"crude-link: cannot start {str(tool)!r}: {why}"
    log = (run_folder(project) / "02-next.log").read_text(encoding="utf-8")
    assert said in log.splitlines() and "next ran" not in log, log
    assert said in result.stdout.splitlines(), result.stdout


# ── Where a step runs, and its environment ───────────────────────────────


def test_outputs_and_step_cwd_are_the_root_whatever_the_callers_cwd(
    make_project: Any, tmp_path: Path
) -> None:
    project = make_project(ONE_STEP)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_scheduler(project, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []
    run = run_folder(project)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d+", run.relative_to(project / "outputs").as_posix()
    )
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "scheduler.log").is_file()
    received = load_json(project / "record.json")
    assert received["cwd"] == str(project)
    assert received["env"]["CRUDE_LINK_RUN_DIR"] == str(run)


def test_each_step_gets_the_callers_env_its_own_env_and_crude_links(make_project: Any) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/fate.py
            name: first
            arguments: {record: first.json}
            env: {TEST_STEP: hello world, TEST_NUMBER: 3, TEST_OVERRIDDEN: by step}
          - script: tasks/fate.py
            name: second
            arguments: {record: second.json}
        """
    )
    caller = {
        **scheduler_env(),
        "TEST_CALLER": "from caller",
        "TEST_OVERRIDDEN": "by caller",
        "PYTHONUNBUFFERED": "",
    }
    result = run_scheduler(project, env=caller)
    assert result.returncode == 0, result.stderr
    run = str(run_folder(project))
    common = {"TEST_CALLER": "from caller", "PYTHONUNBUFFERED": "1", "CRUDE_LINK_RUN_DIR": run}
    assert load_json(project / "first.json")["env"] == {
        **common,
        "TEST_STEP": "hello world",
        "TEST_NUMBER": "3",
        "TEST_OVERRIDDEN": "by step",
        "CRUDE_LINK_STEP": "first",
        "CRUDE_LINK_STEP_INDEX": "1",
        "CRUDE_LINK_PYTHON": sys.executable,
    }
    assert load_json(project / "second.json")["env"] == {
        **common,
        "TEST_OVERRIDDEN": "by caller",
        "CRUDE_LINK_STEP": "second",
        "CRUDE_LINK_STEP_INDEX": "2",
        "CRUDE_LINK_PYTHON": sys.executable,
    }


def test_a_shell_step_under_cron_finds_the_schedulers_python(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "python.txt"
    project = with_programs(make_project(
        f"""\
        steps:
          - script: tasks/find_python.sh
            env: {{TEST_RECORD: {record}}}
          - script: tasks/fate.py
            interpreter: python  # cron's PATH has none: the step's PATH finds this Python
            arguments: {{record: {tmp_path / "fate.json"}}}
        """
    ))
    home = tmp_path / "home"
    home.mkdir()
    result = run_scheduler(project, cwd=Path("/"), env=cron_env(home))
    succeeded(result)
    python = Path(sys.executable)
    assert record.read_text(encoding="utf-8").splitlines() == [
        str(python), str(python.parent), str(python.parent / "python")]
    env = load_json(tmp_path / "fate.json")["env"]
    assert env["CRUDE_LINK_PYTHON"] == sys.executable
    (step,) = [s for s in load_summary(project)["steps"] if s["name"] == "fate"]
    assert step["command"][0] == "python"


def test_every_step_gets_crude_link_python_and_its_folder_first_on_path(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "fate.json"
    project = make_project(
        f"""\
        steps:
          - script: tasks/fate.py
            arguments: {{record: {record}}}
        """,
    )
    probe = tmp_path / "path.txt"
    (project / "tasks" / "path.sh").write_text(f'#!/bin/sh\necho "$PATH" > "{probe}"\n')
    (project / "tasks" / "path.sh").chmod(0o755)
    with (project / "config.yaml").open("a") as config:
        config.write("  - script: tasks/path.sh\n")
    env = scheduler_env(PATH="/usr/local/bin:/usr/bin:/bin")
    succeeded(run_scheduler(project, env=env))
    assert load_json(record)["env"]["CRUDE_LINK_PYTHON"] == sys.executable
    path = probe.read_text(encoding="utf-8").strip().split(":")
    assert path[0] == str(Path(sys.executable).parent)
    assert path[1:] == ["/usr/local/bin", "/usr/bin", "/bin"]  # the caller's PATH after it


def test_steps_do_not_read_the_terminal(make_project: Any, spawn_scheduler: Any) -> None:
    project = make_project(
        """\
        steps:
          - {script: tasks/fate.py, arguments: {record: record.json}}
        """
    )
    assert finish(spawn_scheduler(project)) == 0
    assert load_json(project / "record.json")["stdin_isatty"] is False


# ── Output: logs, live streaming, memory ─────────────────────────────────


MIB = 1024 * 1024


def test_the_log_and_the_terminal_get_the_steps_bytes_exactly(make_project: Any) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/fate.py
            arguments: {print: out ünï, stderr: err, lines: 2, progress: 3, binary: true}
        """
    )
    result = run_scheduler(project, text=False)
    assert result.returncode == 0, result.stderr
    wrote = (
        "out ünï\nerr\nline 1\nline 2\n".encode()
        + b"\rprogress 1/3\rprogress 2/3\rprogress 3/3"
        + b"\xff\xfe\x00raw\x80\n"  # fate.py's BINARY
    )
    assert split_log(run_folder(project) / "01-fate.log") == (wrote, [1])
    assert wrote in result.stdout


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_output_streams_while_the_step_runs(
    make_project: Any, spawn_scheduler: Any, tmp_path: Path, terminal: bool
) -> None:
    go = tmp_path / "go"
    project = make_project(
        f"""\
        steps:
          - script: tasks/fate.py
            arguments: {{print: hello, wait_for: {go}}}
        """
    )
    # The step only ends once the test has seen its output: buffering it would deadlock.
    try:
        if terminal:
            child = spawn_scheduler(project)
            child.expect("waiting")
            log = split_log(run_folder(project) / "01-fate.log")[0]
            go.touch()
            assert finish(child) == 0
        else:
            with started_scheduler(project) as proc:
                assert proc.stdout is not None
                read_until(proc.stdout.fileno(), b"waiting\n")
                log = split_log(run_folder(project) / "01-fate.log")[0]
                go.touch()
                proc.stdout.read()
                assert proc.wait(timeout=60) == 0
    finally:
        go.touch()  # a failed test must not leave the step waiting
    assert log == b"hello\nwaiting\n"  # the log is written live too


def test_memory_stays_flat_when_a_step_prints_256_mib_without_a_newline(
    make_project: Any,
) -> None:
    size = 256 * MIB
    project = make_project(
        f"""\
        steps:
          - script: tasks/fate.py
            arguments: {{bytes: {size}}}
        """
    )
    # A parent that reports the peak RSS of its children: the scheduler, and the step.
    wrapper = (
        "import resource, subprocess, sys;"
        "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    env = scheduler_env()
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *scheduler_command(project)],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout) / 1024  # ru_maxrss is in KiB on Linux
    assert peak_mb < 100
    log = run_folder(project) / "01-fate.log"
    with log.open("rb") as file:
        separator = file.readline(1000)
        assert re.match(rb"=== crude-link: .*attempt 1", separator)
        assert log.stat().st_size == len(separator) + size
        file.seek(-10, os.SEEK_END)
        assert file.read() == b"x" * 10
