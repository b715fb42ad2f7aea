"""Malformed config.yaml files: exit 2 with one message naming where, never a traceback.

Named cases end to end, then hypothesis: mutated configs go through what the scheduler does
before any step (its checks of the text, Hydra's composition, its checks of the config) in
this process, and a few through the real `python scheduler.py` (README "The config",
"Exit status").
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest
import yaml
from conftest import ROOT, run_scheduler, scheduler_env
from hydra import compose, initialize_config_dir
from hydra.errors import CompactHydraException
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

sys.path.insert(0, str(ROOT))

import scheduler  # noqa: E402

GOOD_STEP = "  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n"

# 9 anchors of 9 aliases each: 387 420 489 values once expanded, in 248 bytes.
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['x'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi"))

# The same with merge keys: PyYAML's constructor itself would copy the keys 9**8 times.
MERGE_BOMB = "a: &a {" + ", ".join(f"k{i}: 1" for i in range(9)) + "}\n" + "".join(
    f"{name}: &{name} {{<<: [{', '.join([f'*{prev}'] * 9)}]}}\n"
    for prev, name in zip("abcdefgh", "bcdefghi"))


def nested(levels: int) -> str:
    return "x: " + "{a: " * levels + "1" + "}" * levels + "\n"


CASES = {
    "a repeated top-level key": (
        "steps:\n" + GOOD_STEP + "steps: []\n", ["duplicate key 'steps'", "line 3"]),
    "a repeated key in a step": (
        "steps:\n  - {script: tasks/fate.py, script: tasks/other.py}\n",
        ["duplicate key 'script'", "line 2"]),
    "not UTF-8": (
        "steps:\n" + GOOD_STEP + "  - {script: tasks/fate.py, arguments: {a: \udcff}}\n",
        ["not UTF-8", "0xff", "line 3"]),
    # PyYAML before 6.0.4 refuses the tab (line 1, column 2); later ones read key 'd\tefault',
    # which is then an unknown top-level key: one message and exit 2 either way.
    "a tab in a key (libyaml takes it, older PyYAML not)": (
        "d\tefault: 1\nsteps:\n" + GOOD_STEP, ["config"]),
    "a binary file": ("\x00\x01\x02\udcfe\n", ["config.yaml"]),
    "defaults: instead of default:": (
        "defaults:\n  - good: &good {script: tasks/fate.py, arguments: {record: ran.json}}\n"
        "steps:\n  - <<: *good\n",
        ["defaults:", "did you mean 'default'"]),
    "defaults: a bare template": (
        "defaults:\n  - &good {script: tasks/fate.py}\nsteps:\n  - <<: *good\n",
        ["defaults:", "did you mean 'default'"]),
    "defaults: not a list": ("defaults: 3\nsteps:\n" + GOOD_STEP, ["defaults:"]),
    "hydra: not a mapping": ("hydra: 3\nsteps:\n" + GOOD_STEP, ["hydra: must be a mapping"]),
    "hydra: empty": ("hydra:\nsteps:\n" + GOOD_STEP, ["hydra: must be a mapping"]),
    "default: not a list or mapping": ("default: 3\nsteps:\n" + GOOD_STEP, ["default: must be"]),
    "scheduler: not a mapping": ("scheduler: [1]\nsteps:\n" + GOOD_STEP, ["scheduler: must be"]),
    "the config is a list": ("- steps\n- scheduler\n", ["must be a mapping", "a list"]),
    "the config is a number": ("3\n", ["must be a mapping"]),
    "steps refers to itself": ("steps: ${steps}\n", ["steps: cannot resolve", "Recursive"]),
    "scheduler refers to itself": (
        "scheduler: ${scheduler}\nsteps:\n" + GOOD_STEP, ["scheduler: cannot resolve"]),
    "default cannot resolve": (
        "default: ${nowhere}\nsteps:\n" + GOOD_STEP, ["default: cannot resolve", "nowhere"]),
    "an argument refers to itself": (
        "steps:\n  - {script: tasks/fate.py, arguments: {x: '${steps.0.arguments.x}'}}\n",
        ["arguments.x", "Recursive"]),
    "an alias inside its own anchor": (
        "x: &a [1, *a]\nsteps:\n" + GOOD_STEP, ["alias refers to a node that holds it"]),
    "nested 40 levels deep": (nested(40) + "steps:\n" + GOOD_STEP, ["nested more than 32"]),
    "nested 3000 levels deep": (
        "x: " + "[" * 3000 + "]" * 3000 + "\nsteps:\n" + GOOD_STEP, ["nested", "deep"]),
    "an alias bomb": (ALIAS_BOMB + "steps:\n" + GOOD_STEP, ["more than 50000 values"]),
    "a merge bomb": (MERGE_BOMB + "steps:\n" + GOOD_STEP, ["more than 50000 values"]),
    "a merge of a number": (
        "x: {<<: 3}\nsteps:\n" + GOOD_STEP, ["expected a mapping or list of mappings"]),
    "a key repeated beside a merge": (
        "default:\n  - t: &t {script: tasks/fate.py, name: t}\n"
        "steps:\n  - {<<: *t, name: t, name: u}\n", ["duplicate key 'name'", "line 4"]),
    "a NaN timeout": (
        "steps:\n  - {script: tasks/fate.py, timeout: .nan}\n", ["timeout must be a finite"]),
    "an infinite retry_delay": (
        "steps:\n  - {script: tasks/fate.py, retry_delay: .inf}\n",
        ["retry_delay must be a finite"]),
    "an infinite kill_grace": (
        "scheduler: {kill_grace: .inf}\nsteps:\n" + GOOD_STEP, ["kill_grace must be a finite"]),
    "a misspelled section": (
        "schedular: {on_failure: abort}\nsteps:\n" + GOOD_STEP,
        ["unknown top-level key 'schedular'", "did you mean 'scheduler'"]),
}


@pytest.mark.e2e
@pytest.mark.parametrize("config, parts", CASES.values(), ids=CASES.keys())
def test_a_malformed_config_is_one_message_with_exit_2(
    make_project: Any, config: str, parts: List[str]
) -> None:
    project = make_project("steps: []\n")
    (project / "config.yaml").write_bytes(config.encode("utf-8", errors="surrogateescape"))
    began = time.monotonic()
    result = run_scheduler(project)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert time.monotonic() - began < 20  # the alias bomb took 321 s and 2.6 GB
    assert "Traceback" not in output
    assert any(all(part in line for part in parts) for line in result.stderr.splitlines()), \
        result.stderr
    assert not (project / "ran.json").exists()
    assert not list(project.glob("outputs/*/*/summary.json"))


def test_aliases_are_counted_as_the_copies_omegaconf_makes() -> None:
    tree, problem = scheduler.compose_yaml(ALIAS_BOMB)
    assert problem is None  # valid YAML: too big, not malformed
    [refused] = scheduler.shape_problems(tree)
    assert "more than 50000 values" in refused and "line " in refused
    small = "a: &a [1, 2]\nb: [*a, *a]\nc: {<<: {x: 1}}\n"
    assert scheduler.shape_problems(scheduler.compose_yaml(small)[0]) == []


def test_the_seed_config_and_a_hydra_defaults_list_pass_the_text_checks() -> None:
    for text in [(ROOT / "config.yaml").read_text(), (ROOT / "tests" / "seed_config.yaml")
                 .read_text(),
                 "defaults:\n  - _self_\n  - override hydra/job_logging: disabled\n"
                 "  - db: [a, b]\n  - optional x: null\nsteps: []\n"]:
        tree, problem = scheduler.compose_yaml(text)
        assert problem is None
        assert scheduler.shape_problems(tree) == []


# ── Fuzzing ──────────────────────────────────────────────────────────────

BASE = """\
default:
  - fate: &fate
      script: tasks/fate.py
      arguments: {print: hello, lines: 2}
steps:
  - <<: *fate
    name: first
    timeout: 30
    env: {TEST_A: '1'}
  - script: tasks/fate.py
    arguments: {print: '${steps.0.name}', nested: {a: [1, 2]}}
scheduler:
  on_failure: abort
  dry_run: true
  kill_grace: 1
"""

LINES = BASE.splitlines()

# Lines and characters that malformed configs are made of.
TRICKY_LINES = [
    "steps: []", "steps: 3", "scheduler: 3", "scheduler: ${scheduler}", "hydra: 3", "hydra:",
    "hydra: {run: {dir: 3}}", "default: 3", "defaults:", "defaults: 3", "  - a: {script: x}",
    "  - &x {script: tasks/fate.py}", "  - *x", "  - <<: *fate", "    <<: *nowhere",
    "x: &a [*a]", "x: ${x}", "    timeout: .nan", "    retry_delay: .inf", "    retries: -1",
    "  kill_grace: .inf", "    env: {'': 1}", "    env: {'A=B': 1}", "    arguments: [1]",
    "    arguments: {x: '${nowhere}'}", "  - 42", "  - null", "schedular: {}", "---", "...",
    "%YAML 1.1", "key: [", "key: {a: ", "\t- tab", "'unclosed", "- list at top",
    "  - {script: tasks/fate.py, script: x}", "    name: first", "  on_failure: maybe",
    "  from_step: 9", "  only: [nope]", "  resume: true", "  cron: install",
    "  schedule: '61 * * * *'",
]
TRICKY_CHARS = [":", "-", "[", "]", "{", "}", "&", "*", "'", '"', "\\", "\x00", "#", "$", "|",
                ">", "!", "%", "@", "`", ",", "?", " ", "\n", "\t", "\udcff", "\u2028", "é"]

inserts = st.tuples(st.just("insert"), st.integers(0, 40), st.sampled_from(TRICKY_LINES))
edits = st.one_of(  # inserts thrice as often: they keep more configs past the YAML parser
    inserts, inserts, inserts,
    st.tuples(st.just("delete"), st.integers(0, 40)),
    st.tuples(st.just("duplicate"), st.integers(0, 40)),
    st.tuples(st.just("indent"), st.integers(0, 40), st.sampled_from([-4, -2, 2, 4])),
    st.tuples(st.just("char"), st.integers(0, 2000), st.sampled_from(TRICKY_CHARS)),
    st.tuples(st.just("cut"), st.integers(0, 2000)),
)


def mutate(changes: List[Any]) -> bytes:
    """Return the base config with the changes applied, as bytes (maybe not UTF-8)."""
    lines = list(LINES)
    for change in changes:
        kind, where = change[0], change[1]
        if kind in ("delete", "duplicate", "indent") and not lines:
            continue
        at = where % (len(lines) + 1) if kind == "insert" else where % max(len(lines), 1)
        if kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "insert":
            lines.insert(at, change[2])
        elif kind == "indent":
            lines[at] = " " * change[2] + lines[at] if change[2] > 0 else lines[at][-change[2]:]
        else:
            text = "\n".join(lines)
            at = where % (len(text) + 1)
            text = text[:at] + (change[2] if kind == "char" else "") + (
                text[at + 1:] if kind == "char" else "")
            lines = text.split("\n")
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape")


def checked_before_any_step(folder: Path, data: bytes) -> Optional[List[str]]:
    """Do in-process what the scheduler does before its first step; return the problems.

    None: Hydra itself refused the config, with one of its messages. Any exception that
    escapes would be a traceback on the user's terminal.
    """
    (folder / "config.yaml").write_bytes(data)
    path, text = scheduler.primary_config([], folder)
    tree, problem = (scheduler.compose_yaml(text) if text is not None
                     else (None, scheduler.not_utf8(path)))
    if problem:
        return [problem]
    problems = scheduler.shape_problems(tree)
    if problems:
        return problems
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        try:
            cfg = compose("config")
        except (CompactHydraException, yaml.YAMLError, OmegaConfBaseException):
            # OmegaConf 2.4 refuses some interpolations (`scheduler: ${scheduler}`) as Hydra
            # composes; Hydra then reports it in one message, as it does the others.
            return None  # Hydra's message, or crude-link's one line on what OmegaConf's
            # YAML parser refuses though libyaml took it; exit 2 both
    return scheduler.load_config(cfg, folder, sys.executable)[2]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "tasks").mkdir()
    (folder / "tasks" / "fate.py").write_text((ROOT / "tests" / "tasks" / "fate.py").read_text())
    return folder


def test_the_base_config_is_valid(fuzz_root: Path) -> None:
    assert checked_before_any_step(fuzz_root, BASE.encode()) == []


# FUZZ_EXAMPLES=5000 for a longer search (300 take about 5 s here).
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edits, min_size=1, max_size=6))
def test_a_mutated_config_is_checked_without_an_exception(fuzz_root: Path,
                                                          changes: List[Any]) -> None:
    problems = checked_before_any_step(fuzz_root, mutate(changes))
    assert problems is None or all(isinstance(p, str) and p for p in problems)


@pytest.mark.e2e
def test_a_mutated_config_runs_or_exits_2_without_a_traceback(make_project: Any) -> None:
    project = make_project(BASE)

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(edits, min_size=1, max_size=4))
    def run_mutated(changes: List[Any]) -> None:
        (project / "config.yaml").write_bytes(mutate(changes))
        # Without -W error: a Python warning (Hydra's about _self_, say) is no traceback.
        result = subprocess.run(
            [sys.executable, str(project / "scheduler.py")], cwd=project.parent,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            env={**scheduler_env(), "PYTHONWARNINGS": "ignore"}, timeout=60)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        assert result.returncode in (0, 2), output

    run_mutated()


# ── Hydra's reading of config.yaml on libyaml (OmegaConf 2.3) ───────────────

# Scalars whose type is the YAML dialect's to decide: OmegaConf's floats (1e3, 1_000.5),
# no timestamps, YAML 1.1's bools and nulls, octal and hex, sexagesimal numbers.
TRICKY_SCALARS = ["1e3", "1.5e-3", "1_000", "1_000.5", ".5", "-.inf", ".NaN", "+1", "010",
                  "0x1F", "0o17", "1:20", "1:20.5", "2001-01-01", "2001-01-01 10:00:00",
                  "yes", "No", "on", "OFF", "~", "null", "", "true", "'1e3'", '"x: y"',
                  "a b", "ünï", "-", "0.", "1.", "1e", "e3"]
scalars = st.sampled_from(TRICKY_SCALARS) | st.text(
    st.characters(whitelist_categories=("L", "N", "P", "Zs")), max_size=8).map(
        lambda text: yaml.safe_dump(text, default_style='"').strip())
keys = st.sampled_from(["a", "b", "1", "true", "x_y", "ü"])
yaml_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
    st.dictionaries(keys, inner, max_size=4).map(
        lambda items: "{" + ", ".join(f"{k}: {v}" for k, v in items.items()) + "}")),
    max_leaves=12)


def _same(left: Any, right: Any) -> bool:
    """Equal, NaN included (float('nan') != itself)."""
    if isinstance(left, float) and isinstance(right, float) and left != left:
        return right != right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same, left, right))
    return type(left) is type(right) and left == right


def _load(text: str, loader: Any) -> Any:
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - OmegaConf's safe loader
    except yaml.YAMLError as error:
        return type(error).__name__


@pytest.mark.skipif(scheduler._c_yaml_loader() is None,
                    reason="OmegaConf (2.4 and later) parses with libyaml itself, or no libyaml")
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.dictionaries(keys, yaml_values, min_size=1, max_size=5))
def test_config_yaml_reads_the_same_on_libyaml_as_with_omegaconfs_own_loader(
        document: Any) -> None:
    from omegaconf._utils import get_yaml_loader

    text = "".join(f"{key}: {value}\n" for key, value in document.items())
    fast, own = _load(text, scheduler._c_yaml_loader()), _load(text, get_yaml_loader())
    assert _same(fast, own), (text, fast, own)


@pytest.mark.skipif(scheduler._c_yaml_loader() is None,
                    reason="OmegaConf (2.4 and later) parses with libyaml itself, or no libyaml")
def test_a_repeated_key_is_refused_on_libyaml_too() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="found duplicate key a"):
        yaml.load("a: 1\nb: {c: 2}\na: 3\n", Loader=scheduler._c_yaml_loader())  # noqa: S506


# What Hydra's second composition (and each sweep job's) reads: a copy of the first reading.
config_values = yaml_values | st.sampled_from(["'???'", "${a}", "'${oc.env:HOME}'", "[${b}, 1]"])


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")) // 3, deadline=None)
@given(st.dictionaries(keys, config_values, min_size=1, max_size=5))
@example({"1": "1e3"})  # OmegaConf 2.4 keeps the key as the int 1
def test_config_yaml_read_again_is_a_copy_of_its_first_reading(
        tmp_path_factory: pytest.TempPathFactory, document: Any) -> None:
    from omegaconf import OmegaConf

    folder = tmp_path_factory.mktemp("project")
    text = "".join(f"{key}: {value}\n" for key, value in document.items())
    (folder / "config.yaml").write_text(text, encoding="utf-8")
    source = scheduler.ProjectConfigSource(provider="main", path=str(folder))
    try:
        first = source.load_config("config").config
    except Exception as refused:  # whatever it is, the copy must say it too
        with pytest.raises(type(refused)):
            source.load_config("config")
        return
    with open(folder / "config.yaml", encoding="utf-8") as file:
        expected = OmegaConf.to_yaml(OmegaConf.load(file))  # what Hydra's own source reads
    assert OmegaConf.to_yaml(first) == expected
    key = next(iter(first))  # as OmegaConf keeps it (2.4: the int 1 for `1:`)
    first[key] = "changed by the first composition"
    second = source.load_config("config").config
    assert second is not first
    assert OmegaConf.to_yaml(second) == expected
    (folder / "config.yaml").write_text(text + "added: 1\n", encoding="utf-8")
    assert OmegaConf.select(source.load_config("config").config, "added") == 1
