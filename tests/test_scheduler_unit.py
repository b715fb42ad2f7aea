"""Unit tests of scheduler.py's pure parts: rendering, checks, naming, planning, parsing."""

import contextlib
import copy
import errno
import fcntl
import gc
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from conftest import mounted_tmpfs
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scheduler  # noqa: E402


def from_cli(words: List[str]) -> Dict[str, Any]:
    """Return what a task sees when it reads its argv with OmegaConf.from_cli()."""
    container = OmegaConf.to_container(OmegaConf.from_cli(words), resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


# ── Argument rendering ───────────────────────────────────────────────────


@pytest.mark.parametrize("value, expected", [
    (True, "true"), (False, "false"), (None, "null"),
    (0, "0"), (-7, "-7"), (0.1, "0.1"), (1e-05, "1e-05"), (1e20, "1e+20"),
    (math.inf, ".inf"), (-math.inf, "-.inf"),
    ([1, 2], "[1,2]"), ([], "[]"), ({"a": 1}, "{a: 1}"),
    ("abc", "abc"), ("data/dummy.data", "data/dummy.data"), ("/abs/x-1.csv", "/abs/x-1.csv"),
    ("x,y", "'x,y'"),      # unquoted, Hydra would read a sweep
    ("true", "'true'"),    # must stay a string
    ("yes", "'yes'"), ("42", "'42'"), ("~", "'~'"), ("", "''"), ("1.0", "'1.0'"),
    ("a b", "'a b'"), ("x=y", "'x=y'"), ("[x]", "'[x]'"),
    ("it's", '"it\'s"'),  # both YAML and Hydra read double quotes the same way
    ("line\nbreak", '"line\\nbreak"'),
    ("${x}", "'\\${x}'"),  # else the task's OmegaConf reads an interpolation
])
def test_render_value(value: Any, expected: str) -> None:
    assert scheduler.render_value(value) == expected


def test_render_nan_reads_back_as_nan() -> None:
    assert math.isnan(from_cli([f"k={scheduler.render_value(math.nan)}"])["k"])


def test_render_arguments_flattens_nested_mappings_to_dotted_keys() -> None:
    arguments = {"opt": {"lr": 0.1, "betas": [0.9, 0.99]}, "empty": {}, "name": "run 1"}
    words = scheduler.render_arguments(arguments)
    assert words == ["opt.lr=0.1", "opt.betas=[0.9,0.99]", "empty={}", "name='run 1'"]
    assert from_cli(words) == arguments


def test_render_arguments_uses_the_argument_format() -> None:
    assert scheduler.render_arguments({"lr": 0.1, "a": "x y"}, fmt="--{key}={value}") == [
        "--lr=0.1", "--a='x y'"]


# Values a YAML config can hold; keys are plain identifiers (dotted keys nest).
scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=False) | st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), inner,
                      min_size=1, max_size=3),
    max_leaves=6)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=4))
def test_rendered_arguments_round_trip_through_from_cli(arguments: Dict[str, Any]) -> None:
    words = scheduler.render_arguments(arguments)
    expected = {k: v for k, v in arguments.items() if v != {}}
    got = {k: v for k, v in from_cli(words).items() if v != {}}
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
       | st.booleans() | st.integers() | st.none()
       | st.floats(allow_nan=False, allow_infinity=False))
def test_hydra_reads_rendered_values_the_same_where_quotes_agree(value: Any) -> None:
    text = scheduler.render_value(value)
    if isinstance(value, str) and "'" in value and ('"' in value or "\\" in value
                                                    or "${" in value):  # "\${" has one too
        return  # only YAML's '' escape fits; OmegaConf.from_cli is the reference there
    if isinstance(value, str) and value.endswith("\\"):
        return  # Hydra reads a backslash before the closing quote as an escape
    parsed = OverridesParser.create().parse_override(f"k={text}").value()
    parsed = OmegaConf.create({"k": parsed})["k"]  # as a Hydra app reads it: escapes resolved
    if isinstance(value, float) and isinstance(parsed, float):
        assert parsed == value
    else:
        assert parsed == value and type(parsed) is type(value)


# ── Names and commands ───────────────────────────────────────────────────

SEED_DEFAULTS = [
    {"preproccess": {"script": "tasks/preproccess.py"}},
    {"training": {"script": "tasks/train.py"}},
    {"validation": {"script": "tasks/validate.py"}},
    {"deployment": {"script": "./tasks/deploy.py"}},
]


def test_names_come_from_the_default_entry_with_the_same_script() -> None:
    steps = [{"script": "tasks/preproccess.py", "arguments": {"nr_images": 10}},
             {"script": "tasks/train.py"}, {"script": "tasks/validate.py"},
             {"script": "tasks/deploy.py"}, {"script": "tasks/other.py"}]
    names, problems = scheduler.derive_names(steps, SEED_DEFAULTS)
    assert names == ["preproccess", "training", "validation", "deployment", "other"]
    assert problems == []


def test_repeated_derived_names_get_numbers_and_explicit_names_win() -> None:
    steps = [{"script": "a.py"}, {"script": "a.py"}, {"script": "b.py", "name": "a-3"},
             {"script": "a.py"}]
    names, problems = scheduler.derive_names(steps, None)
    assert names == ["a", "a-2", "a-3", "a-4"]
    assert problems == []


def test_repeated_explicit_names_are_a_problem() -> None:
    steps = [{"script": "a.py", "name": "x"}, {"script": "b.py", "name": "x"}]
    _, problems = scheduler.derive_names(steps, None)
    assert problems == ["steps[1] (x): name 'x' is already used by steps[0]; "
                        "step names must be unique"]


def test_a_script_in_two_default_entries_names_no_step() -> None:
    defaults = [{"a": {"script": "t.py"}}, {"b": {"script": "t.py"}}]
    assert scheduler.derive_names([{"script": "t.py"}], defaults)[0] == ["t"]


def test_a_script_repeated_20000_times_is_named_in_linear_time() -> None:
    # A search from base-1 for each repeat would take minutes here (2·10⁸ set lookups).
    names, problems = scheduler.derive_names([{"script": "tasks/t.py"}] * 20_000, None)
    assert names[:3] == ["t", "t-2", "t-3"] and names[-1] == "t-20000"
    assert len(set(names)) == 20_000 and problems == []


def _names_one_search_each(steps: List[Dict[str, Any]]) -> List[str]:
    """derive_names' rule, searched from scratch for every step (no defaults)."""
    taken = {raw["name"] for raw in steps if "name" in raw}
    names = []
    for raw in steps:
        if "name" in raw:
            names.append(raw["name"])
            continue
        base = unique = Path(raw["script"]).stem
        n = 1
        while unique in taken:
            n += 1
            unique = f"{base}-{n}"
        taken.add(unique)
        names.append(unique)
    return names


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(["a.py", "a-2.py", "b.py"]).map(lambda script: {"script": script}),
    st.sampled_from(["a", "a-2", "a-3", "a-2-2", "b-2"]).map(
        lambda name: {"script": "x.py", "name": name})), max_size=12))
def test_derived_names_are_those_of_a_search_from_scratch(steps: List[Dict[str, Any]]) -> None:
    names, problems = scheduler.derive_names(steps, None)
    assert names == _names_one_search_each(steps)
    repeated = [raw["name"] for raw in steps if "name" in raw]
    assert len(problems) == len(repeated) - len(set(repeated))


@pytest.mark.parametrize("step, expected", [
    (scheduler.Step(script="tasks/t.py", arguments={"n": 1}),
     ["/py", "/root/tasks/t.py", "n=1"]),
    (scheduler.Step(script="/abs/run.sh"), ["/abs/run.sh"]),
    (scheduler.Step(script="t.R", interpreter="Rscript"), ["Rscript", "/root/t.R"]),
    (scheduler.Step(script="t.py", interpreter=["python3", "-X", "dev"], launcher=["srun", "-N1"]),
     ["srun", "-N1", "python3", "-X", "dev", "/root/t.py"]),
    (scheduler.Step(script="t.py", arguments={"lr": 0.1}, argument_format="--{key}={value}"),
     ["/py", "/root/t.py", "--lr=0.1"]),
])
def test_build_command(step: scheduler.Step, expected: List[str]) -> None:
    assert scheduler.build_command(step, Path("/root"), "/py") == expected


def test_a_step_launcher_wins_over_the_default_even_when_empty() -> None:
    step = scheduler.Step(script="t.py", launcher=[])
    assert scheduler.build_command(step, Path("/r"), "/py", ["srun"]) == ["/py", "/r/t.py"]
    step.launcher = None
    assert scheduler.build_command(step, Path("/r"), "/py", ["srun"]) == ["srun", "/py", "/r/t.py"]


def test_step_env_adds_the_step_env_and_crude_links_own() -> None:
    step = scheduler.Step(script="t.py", env={"A": 1, "B": True, "HOME": "/x"})
    env = scheduler.step_env(step, {"HOME": "/h", "PATH": "/bin"}, Path("/run"), 3, "train",
                             "/venv/bin/python")
    assert env == {"HOME": "/x", "PATH": "/venv/bin:/bin", "A": "1", "B": "true",
                   "PYTHONUNBUFFERED": "1", "CRUDE_LINK_RUN_DIR": "/run",
                   "CRUDE_LINK_STEP": "train", "CRUDE_LINK_STEP_INDEX": "3",
                   "CRUDE_LINK_PYTHON": "/venv/bin/python"}


@pytest.mark.parametrize("path, expected", [
    ("/usr/bin:/bin", "/venv/bin:/usr/bin:/bin"),
    ("/venv/bin:/bin", "/venv/bin:/bin"),        # already first: as it is
    ("/bin:/venv/bin", "/venv/bin:/bin:/venv/bin"),
    ("", "/venv/bin"),
    (None, "/venv/bin:" + os.defpath),          # no PATH at all: the system's default after
])
def test_step_path_puts_the_schedulers_python_first(path: Any, expected: str) -> None:
    assert scheduler.step_path(path, "/venv/bin/python") == expected


def test_a_steps_own_path_still_gets_the_schedulers_python_first() -> None:
    step = scheduler.Step(script="t.sh", env={"PATH": "/opt/r/bin"})
    env = scheduler.step_env(step, {"PATH": "/bin"}, Path("/run"), 1, "r", "/venv/bin/python")
    assert env["PATH"] == "/venv/bin:/opt/r/bin"


@pytest.mark.parametrize("index, name, expected", [
    (1, "train", "01-train.log"), (12, "a b/c", "12-a_b_c.log"), (100, "x-2", "100-x-2.log")])
def test_log_file_name(index: int, name: str, expected: str) -> None:
    assert scheduler.log_file_name(index, name) == expected


# ── Config checks ────────────────────────────────────────────────────────


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.py").write_text("")
    (tmp_path / "tasks" / "run.sh").write_text("#!/bin/sh\n")
    return tmp_path


@pytest.mark.parametrize("raw, expected", [
    ({"script": "tasks/t.py"}, []),
    ({"script": "tasks/t.py", "timeout": None, "retries": 2, "retry_delay": 0.5,
      "env": {"A": 1}, "interpreter": ["python3", "-u"], "launcher": [],
      "argument_format": "--{key}={value}", "name": "x", "arguments": {"a": [1]}}, []),
    ("tasks/t.py", ["steps[0]: a step must be a mapping with at least 'script', "
                    "got 'tasks/t.py'"]),
    ({}, ["steps[0]: missing required key 'script' (the file to run)"]),
    ({"script": "tasks/t.py", "scirpt": 1},
     ["steps[0]: unknown key 'scirpt' (did you mean 'script'?)"]),
    ({"script": "tasks/missing.py"}, ["steps[0]: script 'tasks/missing.py' does not exist"]),
    ({"script": "tasks/run.sh"}, ["steps[0]: script 'tasks/run.sh' is not executable"]),
    ({"script": "tasks/run.sh", "interpreter": "sh"}, []),
    ({"script": "tasks/t.py", "arguments": [1]}, ["steps[0]: arguments must be a mapping"]),
    ({"script": "tasks/t.py", "env": "A=1"}, ["steps[0]: env must be a mapping"]),
    ({"script": "tasks/t.py", "env": {"A": [1]}}, ["steps[0]: env.A must be a string"]),
    ({"script": "tasks/t.py", "timeout": "soon"},
     ["steps[0]: timeout must be a number or null, got 'soon'"]),
    ({"script": "tasks/t.py", "timeout": -1}, ["steps[0]: timeout must be >= 0"]),
    ({"script": "tasks/t.py", "retries": -1}, ["steps[0]: retries must be >= 0"]),
    ({"script": "tasks/t.py", "retries": 1.5}, ["steps[0]: retries must be a whole number"]),
    ({"script": "tasks/t.py", "retries": True}, ["steps[0]: retries must be a whole number"]),
    ({"script": "tasks/t.py", "interpreter": []}, ["steps[0]: interpreter must be a program"]),
    ({"script": "tasks/t.py", "launcher": "srun"}, ["steps[0]: launcher must be a list"]),
    ({"script": "tasks/t.py", "argument_format": "{k}"},
     ["steps[0]: argument_format must use only {key} and {value}"]),
    ({"script": "tasks/t.py", "argument_format": "--{key} {value}"},
     ["steps[0]: argument_format must use only {key} and {value}, in one word"]),
    ({"script": "tasks/t.py", "argument_format": "{key.__class__}={value}"},
     ["steps[0]: argument_format must use only {key} and {value}"]),
    ({"script": "tasks/t.py", "argument_format": "{key}={value!r}"},
     ["steps[0]: argument_format must use only {key} and {value}"]),
    ({"script": "tasks/t.py", "argument_style": "argparse", "argument_format": "--{key}={value}"},
     ["steps[0]: argument_format applies to the omegaconf and hydra styles"]),
    ({"script": "tasks/t.py", "argument_style": "getopt"},
     ["steps[0]: argument_style must be one of omegaconf, hydra, argparse, click"]),
    ({"script": "tasks/t.py", "argument_style": "argparse", "arguments": {"l": ["-x"]}},
     ["steps[0]: arguments.l: argparse would read the list item '-x' as an option"]),
    ({"script": "tasks/t.py", "argument_style": "hydra", "arguments": {"s": "a\0b"}},
     ["steps[0]: arguments.s: a NUL character cannot be passed"]),
    ({"script": "tasks/t.py", "args": ["in.csv", 3, 0.5, True]}, []),
    ({"script": "tasks/t.py", "args": ["in.csv", None]},
     ["steps[0]: args must be a list of words"]),
    ({"script": "tasks/t.py", "args": "in.csv"}, ["steps[0]: args must be a list"]),
    ({"script": "tasks/t.py", "launcher": ["nice", "-n", 10]}, []),
    ({"script": "tasks/t.py", "interpreter": ["python3", 3]}, []),
    ({"script": "tasks/t.py", "interpreter": "no-such-interpreter-xyz"},
     ["steps[0]: interpreter program 'no-such-interpreter-xyz' was not found"]),
    ({"script": "tasks/t.py", "launcher": ["no-such-launcher-xyz", "-v"]},
     ["steps[0]: launcher program 'no-such-launcher-xyz' was not found"]),
    ({"script": "tasks/t.py", "launcher": ["./tasks/run.sh"]},
     ["steps[0]: launcher program './tasks/run.sh' was not found (looked for"]),
])
def test_check_step(root: Path, raw: Any, expected: List[str]) -> None:
    problems = scheduler.check_step(0, raw, None, root)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(start), problem


def test_check_step_names_the_step(root: Path) -> None:
    assert scheduler.check_step(2, {"script": "tasks/t.py", "retries": -2}, "train", root) == [
        "steps[2] (train): retries must be >= 0, got -2"]


def test_check_config_reports_every_problem_at_once(root: Path) -> None:
    steps = [{"script": "tasks/t.py", "timeout": "x"}, {"scirpt": "t.py"},
             {"script": "tasks/t.py", "name": "x"}, {"script": "tasks/t.py", "name": "x"}]
    problems = scheduler.check_config(steps, {"on_failure": "maybe", "kill_grac": 1}, None, root)
    assert len(problems) == 6, problems
    assert "steps[0] (t): timeout must be a number or null, got 'x'" in problems
    assert "steps[1]: unknown key 'scirpt' (did you mean 'script'?)" in problems
    assert "steps[1]: missing required key 'script' (the file to run)" in problems
    assert any(p.startswith("steps[3] (x): name 'x' is already used") for p in problems)
    assert "scheduler: on_failure must be one of ask, abort, continue, got 'maybe'" in problems
    assert "scheduler: unknown key 'kill_grac' (did you mean 'kill_grace'?)" in problems


@pytest.mark.parametrize("steps", [None, []])
def test_no_steps_is_a_problem(root: Path, steps: Any) -> None:
    assert scheduler.check_config(steps, None, None, root)[0].startswith("steps: no steps")


def test_steps_must_be_a_list(root: Path) -> None:
    assert scheduler.check_config({"a": 1}, None, None, root) == [
        "steps: must be a list of steps, got dict"]


@pytest.mark.parametrize("options, expected", [
    (None, []), ({"on_failure": "continue", "kill_grace": 0}, []),
    ({"kill_grace": -1}, ["scheduler: kill_grace must be >= 0 seconds, got -1"]),
    ({"kill_grace": "x"}, ["scheduler: kill_grace must be a number, got 'x'"]),
    ("abort", ["scheduler: must be a mapping of options, got 'abort'"]),
])
def test_check_options(options: Any, expected: List[str]) -> None:
    assert scheduler.check_options(options) == expected


def test_the_schema_is_the_one_list_of_keys() -> None:
    assert scheduler.STEP_KEYS == {
        "script", "name", "arguments", "env", "timeout", "retries", "retry_delay",
        "interpreter", "launcher", "argument_format", "argument_style", "args"}


def test_resolve_section_reports_each_broken_interpolation() -> None:
    cfg = OmegaConf.create({"steps": [{"script": "a.py", "arguments": {
        "ok": "${x}", "bad": "${nope}", "also": "${missing.key}"}}], "x": 5})
    problems: List[str] = []
    steps = scheduler.resolve_section(cfg.steps, "steps", problems)
    assert steps == [{"script": "a.py", "arguments": {"ok": 5}}]
    assert [p.split(":")[0] for p in problems] == ["steps[0].arguments.bad",
                                                   "steps[0].arguments.also"]
    assert "'${nope}'" in problems[0]


# ── Selection and resume ─────────────────────────────────────────────────

NAMES = ["prep", "train", "validate", "deploy"]


def make_plan(names: List[str] = NAMES) -> List[scheduler.PlannedStep]:
    steps = [{"script": f"{n}.py"} for n in names]
    return scheduler.plan_steps(steps, names, Path("/r"), "/py")


@pytest.mark.parametrize("options, expected", [
    ({}, NAMES),
    ({"from_step": "validate"}, ["validate", "deploy"]),
    ({"from_step": 2}, ["train", "validate", "deploy"]),
    ({"only": ["deploy", "prep"]}, ["prep", "deploy"]),
    ({"only": "train"}, ["train"]),
    ({"skip": ["train"]}, ["prep", "validate", "deploy"]),
    ({"from_step": 2, "skip": "deploy"}, ["train", "validate"]),
])
def test_select_steps(options: Dict[str, Any], expected: List[str]) -> None:
    selected = scheduler.select_steps(make_plan(), scheduler.SchedulerOptions(**options))
    assert [p.name for p in selected] == expected


@pytest.mark.parametrize("options, expected", [
    ({"only": ["train", "tran"]}, ["scheduler: only names an unknown step 'tran' "
                                   "(did you mean 'train'?)"]),
    ({"skip": "zzz"}, ["scheduler: skip names an unknown step 'zzz'; "
                       "steps: prep, train, validate, deploy"]),
    ({"from_step": 5}, ["scheduler: from_step 5 is out of range: steps are numbered 1 to 4"]),
    ({"from_step": 0}, ["scheduler: from_step 0 is out of range: steps are numbered 1 to 4"]),
    ({"from_step": "valdate"}, ["scheduler: from_step names an unknown step 'valdate' "
                                "(did you mean 'validate'?)"]),
])
def test_check_selection(options: Dict[str, Any], expected: List[str]) -> None:
    assert scheduler.check_selection(NAMES, options) == expected


@pytest.mark.parametrize("options, start", [
    ({"from_step": True}, "scheduler: from_step must be a step name or a 1-based index"),
    ({"only": [1]}, "scheduler: only must be a step name or a list of names"),
    ({"from_step": 2, "resume": True}, "scheduler: from_step and resume=true"),
    ({"dry_run": "yes"}, "scheduler: dry_run must be true or false, got 'yes'"),
    ({"launcher": "srun"}, "scheduler: launcher must be a list of strings or null"),
])
def test_check_options_selection_types(options: Dict[str, Any], start: str) -> None:
    problems = scheduler.check_options(options)
    assert len(problems) == 1 and problems[0].startswith(start), problems


def previous_run(status: str, *statuses: str) -> Dict[str, Any]:
    return {"status": status,
            "steps": [{"name": n, "status": st} for n, st in zip(NAMES, statuses)]}


@pytest.mark.parametrize("previous, expected", [
    (previous_run("succeeded", "succeeded", "succeeded", "succeeded", "succeeded"), None),
    (previous_run("failed", "succeeded", "failed", "not_run", "not_run"), 2),
    (previous_run("failed", "succeeded", "succeeded", "timed_out", "not_run"), 3),
    (previous_run("interrupted", "succeeded", "interrupted", "not_run", "not_run"), 2),
    (previous_run("running", "succeeded", "succeeded", "running", "not_run"), 3),
    (previous_run("failed", "skipped", "succeeded", "succeeded", "failed"), 4),
    (previous_run("aborted", "succeeded", "succeeded"), 3),  # the config grew since
])
def test_resume_point(previous: Dict[str, Any], expected: Any) -> None:
    assert scheduler.resume_point(make_plan(), previous) == expected


RUN = Path("/r/outputs/d/new")
OLD = Path("/r/outputs/d/old")


def test_a_plain_run_plans_the_selected_steps_in_its_own_folder() -> None:
    plan, problems = scheduler.plan_run(make_plan(), scheduler.SchedulerOptions(skip="train"),
                                        RUN, None, Path("/r/outputs"))
    assert problems == [] and plan is not None
    assert [p.name for p in plan.selected] == ["prep", "validate", "deploy"]
    assert (plan.reused, plan.output_dir, plan.resumes) == ({}, RUN, None)


def test_a_resume_with_no_earlier_run_is_a_problem_before_anything_runs() -> None:
    plan, problems = scheduler.plan_run(make_plan(), scheduler.SchedulerOptions(resume=True),
                                        RUN, None, Path("/r/outputs"))
    assert plan is None
    assert problems == ["scheduler.resume: there is no earlier run under /r/outputs to resume"]


@pytest.mark.parametrize("previous, selected, reused", [
    (previous_run("succeeded", *["succeeded"] * 4), [], {}),
    (previous_run("failed", "succeeded", "failed", "not_run", "not_run"),
     ["train", "validate", "deploy"], {1: str(OLD)}),
    (previous_run("failed", "skipped", "succeeded", "timed_out", "not_run"),
     ["validate", "deploy"], {2: str(OLD)}),  # a step the earlier run skipped is not reused
])
def test_a_resume_plans_from_the_failed_step_and_reuses_what_succeeded(
        previous: Dict[str, Any], selected: List[str], reused: Dict[int, str]) -> None:
    options = scheduler.SchedulerOptions(resume=True)
    plan, problems = scheduler.plan_run(make_plan(), options, RUN, (OLD, previous),
                                        Path("/r/outputs"))
    assert problems == [] and plan is not None
    assert [p.name for p in plan.selected] == selected
    assert plan.reused == reused and plan.resumes == OLD
    assert plan.nothing_to_resume is (selected == [])
    assert plan.output_dir == OLD  # the steps go on reading and writing the first run's files


def test_resuming_a_resumed_run_keeps_the_first_folder_of_the_chain() -> None:
    previous = previous_run("failed", "succeeded", "succeeded", "failed", "not_run")
    previous["output_dir"] = "/r/outputs/d/first"
    previous["steps"][0]["reused_from"] = "/r/outputs/d/first"
    plan, _ = scheduler.plan_run(make_plan(), scheduler.SchedulerOptions(resume=True), RUN,
                                 (OLD, previous), Path("/r/outputs"))
    assert plan is not None
    assert plan.reused == {1: "/r/outputs/d/first", 2: str(OLD)}
    assert plan.output_dir == Path("/r/outputs/d/first")


def test_find_latest_run_picks_the_newest_start(tmp_path: Path) -> None:
    def run(day: str, folder: str, started: str) -> Path:
        path = tmp_path / day / folder
        path.mkdir(parents=True)
        (path / "summary.json").write_text(f'{{"started": "{started}"}}')
        return path
    run("2026-11-23", "23-59-59-1", "2026-11-23T23:59:59.100+00:00")
    newest = run("2026-11-24", "08-00-00-7", "2026-11-24T08:00:00.900+00:00")
    run("2026-11-24", "08-00-00-12", "2026-11-24T08:00:00.200+00:00")  # same second, earlier
    (tmp_path / "2026-11-24" / "09-00-00-3").mkdir()  # a dry run: no summary
    found = scheduler.find_latest_run(tmp_path)
    assert found is not None and found[0] == newest
    assert scheduler.find_latest_run(tmp_path / "nothing") is None


def test_help_lists_every_key() -> None:
    text = scheduler.help_text()
    for key in scheduler.STEP_KEYS | scheduler.OPTION_KEYS:
        assert f"\n  {key} " in text, key


# ── Cron ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("expression, ok", [
    ("0 10 * * 1", True), ("*/5 * * * *", True), ("0 10 * * mon", True),
    ("1-5/2,7 0 1 jan sun", True), ("0 0 1 1 7", True),
    ("0 24 * * *", False), ("0 10 * *", False), ("x * * * *", False), ("*/0 * * * *", False),
    ("0 10 * * 1 extra", False), ("0 0 0 * *", False),
])
def test_check_schedule(expression: str, ok: bool) -> None:
    assert (scheduler.check_schedule(expression) == []) is ok


def test_cron_entry_uses_absolute_paths_quotes_and_escapes_percent() -> None:
    line, tag = scheduler.cron_entry(
        "0 10 * * 1", "/venv/bin/python", Path("/srv/my proj"), None, "config",
        ["scheduler.cron=install", "steps.0.arguments.day=${now:%d}", "+x='a b'"])
    assert tag == "# crude-link: /srv/my proj config=config"
    assert line == (
        "0 10 * * 1 /venv/bin/python '/srv/my proj/scheduler.py' "
        "'steps.0.arguments.day=${now:\\%d}' '+x='\"'\"'a b'\"'\"'' "
        ">> '/srv/my proj/outputs/cron.log' 2>&1 # crude-link: /srv/my proj config=config")


def test_cron_entry_names_another_config_and_lets_cron_mail_quiet_runs() -> None:
    line, tag = scheduler.cron_entry("* * * * *", "/py", Path("/r"), "/etc/pipes", "nightly",
                                     [], quiet=True)
    assert line == ("* * * * * /py /r/scheduler.py --config-dir /etc/pipes --config-name nightly"
                    " 2>&1 | tee -a /r/outputs/cron.log"
                    " # crude-link: /r config=nightly dir=/etc/pipes")
    assert tag == "# crude-link: /r config=nightly dir=/etc/pipes"


def test_edit_crontab_replaces_only_its_own_line_and_keeps_the_rest() -> None:
    tag = "# crude-link: /r config=config"
    table = (b"MAILTO=me\n# keep me\r\n5 * * * * backup  # crude-link: /other config=config\n"
             b"0 1 * * * old " + tag.encode() + b"\n@reboot x")
    new = scheduler.edit_crontab(table, tag, "* * * * * new " + tag)
    assert new == (b"MAILTO=me\n# keep me\r\n5 * * * * backup  # crude-link: /other "
                   b"config=config\n@reboot x\n* * * * * new " + tag.encode() + b"\n")
    assert scheduler.edit_crontab(new, tag, "* * * * * new " + tag) == new  # idempotent
    assert scheduler.edit_crontab(new, tag, None) == (
        b"MAILTO=me\n# keep me\r\n5 * * * * backup  # crude-link: /other config=config\n"
        b"@reboot x\n")
    assert scheduler.edit_crontab(b"", tag, None) == b""


def test_name_steps_in_puts_the_step_name_beside_its_index() -> None:
    problems = ["steps[1].arguments.x: cannot resolve '${y}': nope", "scheduler.only: bad"]
    assert scheduler.name_steps_in(problems, ["a", "train"]) == [
        "steps[1] (train): arguments.x cannot resolve '${y}': nope", "scheduler.only: bad"]


# ── Dialog and messages ──────────────────────────────────────────────────


@pytest.mark.parametrize("text, expected", [
    ("r", "retry"), ("R", "retry"), (" retry\n", "retry"), ("p", "pipeline"),
    ("Pipeline", "pipeline"), ("rerun", "pipeline"), ("s", "skip"), ("SKIP", "skip"),
    ("a", "abort"), ("abort", "abort"), ("x", None), ("", None), ("re", None),
])
def test_parse_choice(text: str, expected: Any) -> None:
    assert scheduler.parse_choice(text) == expected


def test_ask_what_next_asks_again_until_it_understands(capsys: pytest.CaptureFixture[str]) -> None:
    replies = iter(["maybe", "", "s"])
    assert scheduler.ask_what_next(lambda prompt: next(replies)) == "skip"
    assert capsys.readouterr().out.count("Please answer") == 2


def test_end_of_input_at_the_dialog_means_abort() -> None:
    def eof(prompt: str) -> str:
        raise EOFError
    assert scheduler.ask_what_next(eof) == "abort"


@pytest.mark.parametrize("code, timed_out, expected", [
    (3, False, "exit code 3"), (137, False, "killed by SIGKILL (exit code 137)"),
    (124, True, "timed out after 5s (exit code 124)"), (200, False, "exit code 200"),
])
def test_describe_exit(code: int, timed_out: bool, expected: str) -> None:
    attempt = scheduler.Attempt(code, timed_out, 1.0, b"")
    assert scheduler.describe_exit(attempt, 5) == expected


def test_last_lines_shows_what_a_terminal_shows() -> None:
    tail = b"one\ntwo\r\nbar 1\rbar 2\rbar 3\n\n" + bytes([0xFF]) + b"end"
    assert scheduler.last_lines(tail, 3) == ["two", "bar 3", "\ufffdend"]


def test_summary_table() -> None:
    steps = [{"index": 1, "name": "prep", "status": "succeeded", "attempts": 1,
              "duration_s": 1.5, "log": "01-prep.log"},
             {"index": 2, "name": "train", "status": "not_run", "attempts": 0,
              "duration_s": None, "log": "02-train.log"}]
    assert scheduler.summary_table(steps) == [
        "#  step   status     attempts  duration  peak mem  log",
        "1  prep   succeeded  1         1.50s     -         01-prep.log",
        "2  train  not_run    0         -         -         -",
    ]


@pytest.mark.parametrize("seconds, expected", [(None, "-"), (0.5, "0.50s"), (185, "3m05s")])
def test_format_duration(seconds: Any, expected: str) -> None:
    assert scheduler.format_duration(seconds) == expected


# ── Hydra wiring ─────────────────────────────────────────────────────────


def test_default_overrides_anchor_run_folders_to_the_root() -> None:
    overrides = scheduler.default_overrides([], Path("/it's/root"), 42)
    assert overrides == [
        "hydra.run.dir='/it\\'s/root/outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}-42'",
        "hydra.sweep.dir='/it\\'s/root/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}-42'"]
    parser = OverridesParser.create()
    assert str(parser.parse_override(overrides[0]).value()).startswith("/it's/root/outputs/")


def test_default_overrides_leave_the_users_run_dir_alone() -> None:
    assert scheduler.default_overrides(["hydra.run.dir=x"], Path("/r"), 1) == [
        "hydra.sweep.dir='/r/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}-1'"]


@pytest.mark.parametrize("argv, expected", [
    ([], ["X"]),
    (["-m", "a=1,2"], ["-m", "X", "a=1,2"]),
    (["a=1", "-m", "b=2"], ["X", "a=1", "-m", "b=2"]),
    (["--config-name", "nightly", "--cfg", "job"], ["--config-name", "nightly", "--cfg", "job",
                                                    "X"]),
    (["-cd", "/etc/x", "a=1"], ["-cd", "/etc/x", "X", "a=1"]),
    (["--info"], ["X", "--info"]),
    (["--info", "searchpath", "a=1"], ["--info", "searchpath", "X", "a=1"]),
])
def test_with_overrides_keeps_overrides_in_one_block(argv: List[str],
                                                     expected: List[str]) -> None:
    assert scheduler.with_overrides(argv, ["X"]) == expected


def test_a_run_dir_set_in_the_config_wins(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("steps: []\nhydra:\n  run:\n    dir: /x/${now:%H}\n")
    (tmp_path / "confs").mkdir()
    (tmp_path / "confs" / "other.yaml").write_text("hydra:\n  sweep: {dir: /y}\n")
    def run_dirs(argv: List[str]) -> List[str]:
        return scheduler.configured_run_dirs(scheduler.primary_config(argv, tmp_path)[1])

    assert run_dirs([]) == ["hydra.run.dir"]
    assert run_dirs(["-cd", str(tmp_path / "confs"), "--config-name", "other"]) == [
        "hydra.sweep.dir"]
    assert run_dirs(["--config-name", "missing"]) == []
    assert scheduler.default_overrides([], Path("/r"), 1, ["hydra.run.dir"]) == [
        "hydra.sweep.dir='/r/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}-1'"]


def test_the_config_store_is_shared_by_copies_inside_the_block_only() -> None:
    store = ConfigStore.instance()
    repository = {"sources": [store]}  # what Hydra's repository copy reaches it through
    with scheduler.shared_config_store():
        assert copy.deepcopy(repository)["sources"][0] is store
    assert copy.deepcopy(repository)["sources"][0] is not store  # a launcher's pickled state
    assert "__deepcopy__" not in vars(store)


def test_importing_the_module_does_nothing() -> None:
    assert scheduler._job_exit_codes == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert gc.isenabled()  # only `python scheduler.py` starts up without it



# ── summary.json's rewrites, lock modes, the sweep report (small I/O, in tmp_path) ──


def test_many_parts_are_written_in_order_at_the_position_or_at_an_offset(
        tmp_path: Path) -> None:
    """More parts than one writev takes (a long run's summary.json, in slots: two a step)."""
    parts = [f"{n}:".encode() * (n % 7) for n in range(3 * scheduler.IOV_MAX + 5)]
    expected = b"".join(parts)
    with open(tmp_path / "f", "wb+", buffering=0) as file:
        scheduler._write_parts(file.fileno(), parts)
        scheduler._write_parts(file.fileno(), parts, 10)
        file.seek(0)
        assert file.read() == expected[:10] + expected


def test_a_reader_keeps_the_whole_version_it_opened_however_many_rewrites_follow(
        tmp_path: Path) -> None:
    # A step boundary rewrites summary.json twice in a row (one step ends, the next starts):
    # a file reused for a later version would show a slow reader parts of two.
    path = tmp_path / "summary.json"
    versions = [f"version {n}: " + "x" * (9000 - 1000 * n) + "\n" for n in range(6)]
    scheduler.write_text_atomic(path, versions[0])
    with open(path, encoding="utf-8") as reader:
        first = reader.read(4096)
        for text in versions[1:]:
            scheduler.write_text_atomic(path, text)
            assert path.read_text(encoding="utf-8") == text
        assert first + reader.read() == versions[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def _record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Tuple[scheduler.RunRecord, List[scheduler.PlannedStep], List[Dict[str, Any]]]:
    """Return a RunRecord of make_plan() in tmp_path, the plan, and every version written."""
    versions: List[Dict[str, Any]] = []
    write = scheduler.RunRecord.write

    def write_and_keep(record: scheduler.RunRecord) -> None:
        write(record)
        versions.append(json.loads(record.path.read_bytes()))

    monkeypatch.setattr(scheduler.RunRecord, "write", write_and_keep)
    plan = make_plan()
    record = scheduler.RunRecord(tmp_path, scheduler.RunPlan(plan, plan, {}, tmp_path))
    return record, plan, versions


def _statuses(version: Dict[str, Any]) -> List[str]:
    return [entry["status"] for entry in version["steps"]]


OK = scheduler.Attempt(0, False, 0.5, b"")


def test_a_step_boundary_is_one_rewrite_saying_one_step_ended_and_the_next_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record, plan, versions = _record(tmp_path, monkeypatch)
    record.start_attempt(plan[0])
    record.end_attempt(plan[0], OK, "succeeded", following=plan[1])
    record.start_attempt(plan[1])  # recorded already: no rewrite, no second attempt
    record.end_attempt(plan[1], OK, "succeeded")
    record.finish("succeeded", 0)
    assert [_statuses(v) for v in versions] == [
        ["not_run"] * 4,
        ["running", "not_run", "not_run", "not_run"],
        ["succeeded", "running", "not_run", "not_run"],
        ["succeeded", "succeeded", "not_run", "not_run"],
        ["succeeded", "succeeded", "not_run", "not_run"],
    ]
    assert versions[2]["status"] == "running" and versions[-1]["status"] == "succeeded"
    second = versions[-1]["steps"][1]
    assert second["attempts"] == 1 and second["started"] is not None
    assert versions[-1] == json.loads((tmp_path / "summary.json").read_bytes())
    assert versions[-1]["steps"] == record.data["steps"]


@pytest.mark.parametrize("fault", [False, True])
def test_a_step_recorded_as_running_that_never_started_is_put_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: bool) -> None:
    # SIGTERM between two steps, or a log file that cannot be opened: the next step never ran.
    record, plan, versions = _record(tmp_path, monkeypatch)
    record.start_attempt(plan[0])
    record.end_attempt(plan[0], OK, "succeeded", following=plan[1])
    if fault:
        record.finish_on_fault(70)
    else:
        record.finish("interrupted", 143)
    last = versions[-1]
    assert _statuses(last) == ["succeeded", "not_run", "not_run", "not_run"]
    assert last["steps"][1] == versions[0]["steps"][1]  # attempts 0, started null
    assert last["status"] == ("failed" if fault else "interrupted")


def test_a_failed_step_is_recorded_before_anything_follows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record, plan, versions = _record(tmp_path, monkeypatch)
    record.start_attempt(plan[0])
    record.end_attempt(plan[0], scheduler.Attempt(3, False, 0.1, b""), "failed")
    assert _statuses(versions[-1]) == ["failed", "not_run", "not_run", "not_run"]
    record.start_attempt(plan[0])  # a retry is a rewrite of its own
    assert _statuses(versions[-1])[0] == "running" and versions[-1]["steps"][0]["attempts"] == 2


def test_multirun_jobs_share_the_lock_and_a_plain_run_is_kept_out(tmp_path: Path) -> None:
    lock = tmp_path / "outputs" / "lock"
    first, holder = scheduler.acquire_lock(lock, tmp_path / "multirun" / "s" / "0", shared=True)
    second, _ = scheduler.acquire_lock(lock, tmp_path / "multirun" / "s" / "1", shared=True)
    assert first is not None and second is not None and holder == ""
    plain, holder = scheduler.acquire_lock(lock, tmp_path / "outputs" / "run")
    assert plain is None
    assert holder.startswith(f"a multirun, {tmp_path / 'multirun' / 's'}, started ")
    first.close()
    second.close()
    plain, holder = scheduler.acquire_lock(lock, tmp_path / "outputs" / "run")
    assert plain is not None and holder == ""
    job, holder = scheduler.acquire_lock(lock, tmp_path / "multirun" / "s" / "2", shared=True)
    assert job is None and holder.startswith(f"pid {os.getpid()}, started ")
    plain.close()


@pytest.mark.parametrize("submitit_id, number", [("11_0", 0), ("11_12", 12), ("11", 0)])
def test_job_number_of_a_submitit_job_id(submitit_id: str, number: int) -> None:
    assert scheduler._job_number(submitit_id) == number


def make_sweep(root: Path, pid: int, jobs: Dict[int, Any]) -> Path:
    """Write a sweep folder as submitit and crude-link leave it: {n: summary or None}."""
    sweep = root / "multirun" / "2026-11-28" / f"10-00-00-{pid}"
    for number, summary in jobs.items():
        slurm = sweep / ".submitit" / f"7_{number}"
        slurm.mkdir(parents=True)
        (slurm / f"7_{number}_submitted.pkl").write_bytes(b"")
        (slurm / f"7_{number}_0_log.out").write_text("")
        job = sweep / str(number)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- x={number}\n- lr=0.1\n")
        if summary is not None:
            (job / "summary.json").write_text(json.dumps(summary))
            (slurm / f"7_{number}_0_result.pkl").write_bytes(b"")
    return sweep


def test_sweep_report_names_each_failed_job_with_its_logs(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 42, {
        0: {"status": "succeeded", "exit_code": 0},
        1: {"status": "failed", "exit_code": 3},
        2: None,  # never started: no summary, no result
        3: {"status": "interrupted", "exit_code": 143},
    })
    watch = scheduler.SweepWatch(tmp_path, 42)
    watch.problems["7_2"] = "ended without a result"
    assert watch.without_result(sweep) == ["7_2"]
    lines, code = watch.report()
    assert code == 3
    assert lines == [
        f"crude-link: 3 of 4 job(s) failed in {sweep}:",
        f"  job 1 (x=1 lr=0.1): failed, exit code 3; {sweep / '1' / 'summary.json'}",
        f"    Slurm output: {sweep / '.submitit' / '7_1' / '7_1_0_log.out'}",
        "  job 2 (x=2 lr=0.1): ended without a result",
        f"    Slurm output: {sweep / '.submitit' / '7_2' / '7_2_0_log.out'}",
        f"  job 3 (x=3 lr=0.1): interrupted, exit code 143; {sweep / '3' / 'summary.json'}",
        f"    Slurm output: {sweep / '.submitit' / '7_3' / '7_3_0_log.out'}",
    ]


def test_sweep_report_is_empty_when_every_job_succeeded(tmp_path: Path) -> None:
    make_sweep(tmp_path, 42, {n: {"status": "succeeded", "exit_code": 0} for n in range(2)})
    make_sweep(tmp_path / "other", 43, {0: {"status": "failed", "exit_code": 1}})
    assert scheduler.SweepWatch(tmp_path, 42).report() == ([], 0)


def test_a_problem_noted_for_a_pending_array_applies_to_each_of_its_jobs(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 42, {0: None, 1: None})
    watch = scheduler.SweepWatch(tmp_path, 42)
    watch.problems["7"] = "can never start: Slurm says PartitionConfig"
    lines, code = watch.report()
    assert code == 1 and lines[0] == f"crude-link: 2 of 2 job(s) failed in {sweep}:"
    assert [line for line in lines if "never" in line] == [
        "  job 0 (x=0 lr=0.1): can never start: Slurm says PartitionConfig",
        "  job 1 (x=1 lr=0.1): can never start: Slurm says PartitionConfig"]

# ── Documentation ────────────────────────────────────────────────────────

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("key", sorted(scheduler.STEP_KEYS))
def test_readme_documents_every_step_key(key: str) -> None:
    assert f"| `{key}` |" in README


@pytest.mark.parametrize("key", sorted(scheduler.OPTION_KEYS))
def test_readme_documents_every_scheduler_option(key: str) -> None:
    assert f"| `{key}` |" in README


def test_shipped_config_declares_every_scheduler_option() -> None:
    shipped = OmegaConf.load(ROOT / "config.yaml")
    assert set(shipped.scheduler) == scheduler.OPTION_KEYS


def _long_record(tmp_path: Path, count: int = 300
                 ) -> Tuple[scheduler.RunRecord, List[scheduler.PlannedStep]]:
    steps = make_plan([f"s{index}" for index in range(1, count + 1)])
    return scheduler.RunRecord(tmp_path, scheduler.RunPlan(steps, steps, {}, tmp_path)), steps


# A failed attempt whose costs make its step's line grow by ~40 bytes each time.
GROWING = scheduler.Attempt(3, False, 0.1, b"", cpu_user_s=0.123, cpu_system_s=0.123,
                            max_rss_kb=123456789, rss_floor_kb=123456789)


def _run_through(record: scheduler.RunRecord, steps: List[scheduler.PlannedStep],
                 stop: int, start: int = 0) -> None:
    """Steps start + 1..stop succeed, one after the other; step stop + 1 is then running."""
    for position in range(start, stop):
        record.start_attempt(steps[position])
        record.end_attempt(steps[position], OK, scheduler.SUCCEEDED, steps[position + 1])


def test_summary_json_during_a_long_run_is_every_step_once_and_whole_at_the_end(
        tmp_path: Path) -> None:
    """During the run lines are written over their slots (SlotFile); each version is still
    one JSON document with every step once, and the final one has no room left in it."""
    count = 300
    record, steps = _long_record(tmp_path, count)
    done = 0
    for stop in (1, 2, 150, count - 1):
        _run_through(record, steps, stop, done)
        done = stop
        summary = json.loads((tmp_path / "summary.json").read_bytes())
        assert [entry["index"] for entry in summary["steps"]] == list(range(1, count + 1))
        assert _statuses(summary) == ["succeeded"] * stop + ["running"] + ["not_run"] * (
            count - stop - 1)
        assert summary["steps"] == record.data["steps"]
    record.end_attempt(steps[-1], OK, scheduler.SUCCEEDED)
    record.finish(scheduler.SUCCEEDED, 0)
    text = (tmp_path / "summary.json").read_text()
    assert json.loads(text) == record.data
    assert text.count("\n  {\"index\": ") == count and " \n" not in text
    assert text.endswith("}\n ]\n}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "summary.md"]


def test_a_reader_keeps_its_version_of_a_long_runs_summary_while_steps_go_on(
        tmp_path: Path) -> None:
    """A reader that opened summary.json (less, tail -f) is never shown a later version's
    lines: the file it holds is not the next one written over."""
    record, steps = _long_record(tmp_path)
    _run_through(record, steps, 3)
    path = tmp_path / "summary.json"
    expected = path.read_bytes()
    with open(path, "rb") as reader:
        first = reader.read(100)
        for position in range(3, 20):
            record.start_attempt(steps[position])
            record.end_attempt(steps[position], OK, scheduler.SUCCEEDED, steps[position + 1])
            assert _statuses(json.loads(path.read_bytes()))[position + 1] == "running"
        assert first + reader.read() == expected
    record.finish(scheduler.INTERRUPTED, 143)


def test_a_step_line_that_outgrows_its_slot_is_written_in_a_new_layout(
        tmp_path: Path) -> None:
    """Each attempt adds to a step's cost lists: past its slot's room, the file is written
    whole again with more room, and stays one valid version."""
    record, steps = _long_record(tmp_path, 5)
    for attempt in range(1, 30):
        record.start_attempt(steps[2])
        record.end_attempt(steps[2], GROWING, scheduler.FAILED)
        summary = json.loads((tmp_path / "summary.json").read_bytes())
        assert summary["steps"][2]["attempts"] == attempt
        assert len(summary["steps"][2]["cpu_user_s"]) == attempt
        assert summary["steps"] == record.data["steps"]
    record.finish(scheduler.FAILED, 3)
    assert json.loads((tmp_path / "summary.json").read_bytes()) == record.data


def test_on_a_full_disk_the_runs_end_is_still_written_as_a_new_file(tmp_path: Path) -> None:
    """The spare goes before the final whole write: its room is what that write needs, so it
    need not fall back to writing over summary.json, under a reader holding it."""
    with mounted_tmpfs(tmp_path / "disk", "size=2m") as disk:
        record, steps = _long_record(disk, 300)
        _run_through(record, steps, 100)
        with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as filler:
            while True:
                filler.write(b"x" * 4096)
        _run_through(record, steps, 150, 100)  # slots need no room: one version each
        path = disk / "summary.json"
        assert _statuses(json.loads(path.read_bytes()))[150] == "running"
        with open(path, "rb") as reader:
            held = reader.read()
            record.finish(scheduler.INTERRUPTED, 143)
            reader.seek(0)
            assert reader.read() == held
        assert json.loads(path.read_bytes()) == record.data


def test_a_runs_end_that_cannot_be_written_is_recorded_as_the_fault(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json written, summary.md not (a full disk): the run exits 70, and so
    summary.json must not say succeeded."""
    record, steps = _long_record(tmp_path, 3)
    _run_through(record, steps, 2)
    record.start_attempt(steps[2])
    record.end_attempt(steps[2], OK, scheduler.SUCCEEDED)

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(scheduler, "write_text_atomic", full)
    with pytest.raises(OSError):
        record.finish(scheduler.SUCCEEDED, 0)
    with pytest.raises(OSError):  # summary.md again; run_guarded says so in one line
        record.finish_on_fault(70)
    summary = json.loads((tmp_path / "summary.json").read_bytes())
    assert (summary["status"], summary["exit_code"]) == ("failed", 70)
    assert _statuses(summary) == ["succeeded"] * 3


def test_no_lease_is_ever_taken_on_the_file_named_summary_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a write lease is held, a reader opening the file waits (or, with O_NONBLOCK,
    fails): leases go on the spare only, never on what readers open by name."""
    real = fcntl.fcntl
    path = tmp_path / "summary.json"
    leased: List[bool] = []

    def watched(fd: int, command: int, arg: int = 0) -> Any:
        if command == fcntl.F_SETLEASE and arg == fcntl.F_WRLCK:
            leased.append(os.fstat(fd).st_ino == os.stat(path).st_ino)
        return real(fd, command, arg)

    monkeypatch.setattr(scheduler.fcntl, "fcntl", watched)
    record, steps = _long_record(tmp_path, 5)
    for _ in range(12):  # past its slot's room: a new layout, too
        record.start_attempt(steps[0])
        record.end_attempt(steps[0], GROWING, scheduler.FAILED)
    _run_through(record, steps, 3)
    assert leased and not any(leased)
    record.finish(scheduler.INTERRUPTED, 143)


def test_the_runs_end_removes_what_an_interrupted_whole_write_left(tmp_path: Path) -> None:
    record, steps = _long_record(tmp_path, 5)
    _run_through(record, steps, 2)
    for name in ("..summary.json.spare.tmp", ".summary.json.tmp"):  # write_bytes_atomic's
        (tmp_path / name).write_bytes(b"{")  # stopped halfway through a whole write
    record.finish(scheduler.INTERRUPTED, 143)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "summary.md"]


def test_slots_only_where_no_other_host_can_read_the_folder(tmp_path: Path) -> None:
    assert scheduler._local_file_system(tmp_path)
    assert not scheduler._local_file_system(Path("/proc/self"))
    with mounted_tmpfs(tmp_path / "mounted here", "size=64k") as mounted:  # \040 in mountinfo
        assert scheduler._local_file_system(mounted)


def test_without_leases_summary_json_is_written_whole_each_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where there are no leases (macOS, some network file systems) there is no spare: each
    version is a new file, as a reader must never see one written over."""
    monkeypatch.delattr(fcntl, "F_SETLEASE")
    record, steps = _long_record(tmp_path, 10)
    path = tmp_path / "summary.json"
    with open(path, "rb") as reader:
        expected = reader.read()
        _run_through(record, steps, 5)
        assert _statuses(json.loads(path.read_bytes()))[5] == "running"
        assert " \n" not in path.read_text()  # no slots: no room left in lines
        reader.seek(0)
        assert reader.read() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    record.finish(scheduler.INTERRUPTED, 143)
