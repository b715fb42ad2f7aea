"""End to end: normal runs of `python scheduler.py` in a temp project (CONTRACT §1-3, §6)."""

import contextlib
import datetime
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import (
    ANSI,
    TESTS,
    cron_env,
    finish,
    load_json,
    load_summary,
    read_until,
    run_folder,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    split_log,
    started_scheduler,
    step_statuses,
)
from omegaconf import OmegaConf

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024

# Stands in for each script the seed config names: prints who it is and what it got.
STUB = """\
import json, os
from omegaconf import OmegaConf
args = OmegaConf.to_container(OmegaConf.from_cli())
print(json.dumps({"step": os.environ["CRUDE_LINK_STEP"], "args": args}))
"""
SEED_TASKS = {name: STUB for name in ("preproccess.py", "train.py", "validate.py", "deploy.py")}
SEED_NAMES = ["preproccess", "training", "validation", "deployment"]

ONE_STEP = """\
steps:
  - script: tasks/fate.py
    arguments: {record: record.json}
"""


def stub_report(log: Path) -> Dict[str, Any]:
    """Return what a STUB step printed into its log."""
    output, attempts = split_log(log)
    assert attempts == [1]
    report: Dict[str, Any] = json.loads(output)
    return report


# ── The seed's config ────────────────────────────────────────────────────


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


# ── Names ────────────────────────────────────────────────────────────────


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


def test_an_executable_script_that_is_not_python_runs_directly(make_project: Any) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/hello.sh
            arguments: {who: a b}
        """,
        {"hello.sh": '#!/bin/sh\necho "sh got $# args: $1"\n'},
    )
    script = project / "tasks" / "hello.sh"
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    (step,) = load_summary(project)["steps"]
    assert step["command"] == [str(script), "who='a b'"]
    assert split_log(run_folder(project) / "01-hello.log")[0] == b"sh got 1 args: who='a b'\n"


# ── Where things go: root, cwd, cron ─────────────────────────────────────


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


# ── What a step receives ─────────────────────────────────────────────────

ARGUMENTS_CONFIG = """\
steps:
  - script: tasks/fate.py
    arguments:
      record: record.json
      text_int: "42"
      text_float: "1.0"
      text_exp: "1e3"
      text_true: "true"
      text_yes: "yes"
      text_null: "null"
      text_tilde: "~"
      text_empty: ""
      text_space: "a b"
      text_padded: " padded "
      text_equals: "x=y"
      text_comma: "a,b"
      text_brackets: "[x]"
      text_braces: "{a: 1}"
      text_apostrophe: "it's"
      text_quotes: 'say "hi"'
      text_both: "it's \\"both\\""
      text_backslash: 'C:\\dir\\'
      text_hash: "#not a comment"
      text_colon: "key: value"
      text_dash: "-5"
      text_star: "*.csv"
      text_dollar: "$HOME"
      text_unicode: "naïve ☃ 日本"
      text_newline: "two\\nlines"
      nested: {lr: 0.1, deeper: {depth: 3, name: "x y"}}
      a_list: [1, two, "3", 4.5, true, null, "a,b"]
      empty_list: []
      a_null: null
      a_float: 0.25
      a_small_float: 1.0e-05
      an_int: -7
      a_bool: false
"""


def test_arguments_reach_the_step_with_the_same_values_and_types(make_project: Any) -> None:
    project = make_project(ARGUMENTS_CONFIG)
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    received = load_json(project / "record.json")
    config = OmegaConf.to_container(OmegaConf.load(project / "config.yaml"))
    assert isinstance(config, dict)
    assert received["args"] == config["steps"][0]["arguments"]
    assert "nested.lr=0.1" in received["argv"]  # nested mappings as dotted keys
    assert "nested.deeper.depth=3" in received["argv"]
    (step,) = load_summary(project)["steps"]
    assert step["command"] == [
        sys.executable,
        str(project / "tasks" / "fate.py"),
        *received["argv"],
    ]


def test_interpolations_resolve_when_the_command_is_built(make_project: Any) -> None:
    project = make_project(
        """\
        default: {model_dir: models}  # a top-level key of its own would be unknown
        steps:
          - script: tasks/fate.py
            arguments:
              record: record.json
              out: ${hydra:runtime.output_dir}/data.csv
              model: ${default.model_dir}/m.json
              script_again: ${..script}
              today: ${now:%Y-%m-%d}
        """
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    run = run_folder(project)
    args = load_json(project / "record.json")["args"]
    assert args["out"] == f"{run}/data.csv"
    assert args["model"] == "models/m.json"
    assert args["script_again"] == "tasks/fate.py"
    assert args["today"] in (run.parent.name, datetime.date.today().isoformat())


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


# ── Output: logs, live streaming, memory ─────────────────────────────────


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


# ── summary.json ─────────────────────────────────────────────────────────


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


# ── Step keys that shape the command ─────────────────────────────────────


def test_interpreter_launcher_and_argument_format_shape_the_command(make_project: Any) -> None:
    project = make_project(
        """\
        scheduler: {launcher: [env, TEST_LAUNCHED=by-default]}
        steps:
          - script: tasks/args.sh
            interpreter: sh
            argument_format: "--{key}={value}"
            arguments: {a: x y, n: 1}
          - script: tasks/fate.py
            launcher: [env, TEST_LAUNCHED=by-step]
            arguments: {record: own.json}
          - script: tasks/fate.py
            launcher: []
            arguments: {record: none.json}
        """,
        {"args.sh": 'printf "<%s>\\n" "$@"; echo "launched=$TEST_LAUNCHED"\n'},
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stderr
    first, own, none = load_summary(project)["steps"]
    script = str(project / "tasks" / "args.sh")
    shaped = ["--a='x y'", "--n=1"]  # each value rendered as ever, then put in the format
    assert first["command"] == ["env", "TEST_LAUNCHED=by-default", "sh", script, *shaped]
    output = split_log(run_folder(project) / "01-args.log")[0]
    assert output == b"<--a='x y'>\n<--n=1>\nlaunched=by-default\n"  # no shell in between
    assert own["command"][:3] == ["env", "TEST_LAUNCHED=by-step", sys.executable]
    assert load_json(project / "own.json")["env"]["TEST_LAUNCHED"] == "by-step"
    assert none["command"][0] == sys.executable
    assert "TEST_LAUNCHED" not in load_json(project / "none.json")["env"]


# ── Hydra's own flags ────────────────────────────────────────────────────


@pytest.mark.parametrize("flag", ["--cfg job", "--help"])
def test_hydra_flags_that_only_print_run_no_step(make_project: Any, flag: str) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, *flag.split())
    assert result.returncode == 0, result.stderr
    assert not (project / "record.json").exists()
    assert list(project.glob("outputs/*/*/[0-9][0-9]-*.log")) == []
    if flag == "--cfg job":
        assert OmegaConf.create(result.stdout).steps[0].script == "tasks/fate.py"
    else:
        assert "--cfg" in result.stdout


def test_config_name_and_config_dir_choose_the_config(make_project: Any, tmp_path: Path) -> None:
    project = make_project(ONE_STEP)
    other = "steps:\n  - {script: tasks/fate.py, arguments: {record: %s.json}}\n"
    (project / "other.yaml").write_text(other % "other")
    elsewhere = tmp_path / "confs"
    elsewhere.mkdir()
    (elsewhere / "third.yaml").write_text(other % "third")
    assert run_scheduler(project, "--config-name", "other").returncode == 0
    third = run_scheduler(project, "--config-dir", str(elsewhere), "--config-name", "third")
    assert third.returncode == 0, third.stderr
    assert (project / "other.json").exists()
    assert load_json(project / "third.json")["cwd"] == str(project)  # the root stays the root
    assert not (project / "record.json").exists()


def test_multirun_runs_every_job_under_multirun_and_fails_if_one_failed(
    make_project: Any,
) -> None:
    project = make_project(
        """\
        steps:
          - script: tasks/fate.py
            arguments: {exit_code: 0, record: record.json}
        """
    )
    result = run_scheduler(project, "-m", "steps.0.arguments.exit_code=3,0")
    assert result.returncode == 3, result.stdout + result.stderr
    summaries = sorted(project.glob("multirun/*/*/*/summary.json"))
    assert [load_json(path)["status"] for path in summaries] == ["failed", "succeeded"]
    assert list(project.glob("outputs/*/*/summary.json")) == []  # no run folder besides


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
