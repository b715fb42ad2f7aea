"""End to end: a step's arguments, in the style its program understands (README "Passing
arguments").

Real programs run as steps (tests/programs/): argparse, click and typer programs, a
`@hydra.main` app with its own config.yaml, and shell scripts. Each writes down what it
parsed, with Python's types, and the tests compare that with the config's values.
"""

import datetime
import json
import math
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from conftest import (
    OPTIONS,
    TESTS,
    load_json,
    load_summary,
    run_folder,
    run_scheduler,
    step_statuses,
    succeeded,
    with_programs,
)
from omegaconf import OmegaConf
from test_argument_styles import assert_same

sys.path.insert(0, str(TESTS.parent))

import scheduler  # noqa: E402

pytestmark = pytest.mark.e2e


# ── omegaconf: key=value words, read with OmegaConf.from_cli() ───────────


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


def test_a_config_without_argument_style_gives_the_words_of_before(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "fate.json"
    project = make_project(
        f"""\
        default: {{model_dir: models}}  # a top-level key of its own is unknown (issue 12)
        steps:
          - script: tasks/fate.py
            arguments:
              record: {record}
              lr: 0.1
              name: my run
              flag: true
              none: null
              items: [1, "x,y"]
              opt: {{lr: 0.01, deeper: {{depth: 3}}}}
              text: "it's"
              big: .inf
              interpolated: ${{default.model_dir}}/m.json
        """
    )
    succeeded(run_scheduler(project))
    (step,) = load_summary(project)["steps"]
    arguments = step_arguments(project)
    words = [f"{key}={scheduler.render_value(value)}"
             for key, value in scheduler.flatten_arguments(arguments)]
    assert step["command"] == [sys.executable, str(project / "tasks" / "fate.py"), *words]
    assert words == [  # as written by crude-link before argument_style existed
        f"record={record}", "lr=0.1", "name='my run'", "flag=true", "none=null",
        "items=[1,'x,y']", "opt.lr=0.01", "opt.deeper.depth=3", "text=\"it's\"", "big=.inf",
        "interpolated=models/m.json",
    ]
    assert_same(load_json(record)["args"], arguments)


# ── argparse, click, typer ───────────────────────────────────────────────


def step_arguments(project: Path, index: int = 0) -> Dict[str, Any]:
    """Return a step's arguments as the config holds them, interpolations resolved."""
    config = OmegaConf.to_container(OmegaConf.load(project / "config.yaml"), resolve=True)
    assert isinstance(config, dict)
    arguments: Dict[str, Any] = config["steps"][index]["arguments"]
    return arguments


def parsed(record: Path) -> Dict[str, Any]:
    """Return what a test program parsed, from its record."""
    data: Dict[str, Any] = load_json(record)["parsed"]
    return data


def words_after_script(command: List[str], script: Path) -> List[str]:
    return command[command.index(str(script)) + 1:]


def hydra_key(word: str) -> str:
    return word.split("=", 1)[0].lstrip("+~")


NOTE = "it's \"quoted\"\nnext line\tand $HOME * ; ends with \\"


def test_an_argparse_program_gets_the_values_and_types_of_the_config(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "argparse.json"
    project = with_programs(make_project(
        f"""\
        steps:
          - script: tasks/argparse_app.py
            argument_style: argparse
            env: {{TEST_RECORD: {record}}}
            arguments:
              lr: 0.1
              name: my run
              note: {json.dumps(NOTE)}
              verbose: true
              quiet: false
              layers: [64, 64]
              offsets: [-1.5, -2.0, 0.25]
              tags: []
              n-samples: 5
              seed: null
              optimizer: {{lr: 0.01, name: adam}}
        """
    ))
    result = run_scheduler(project)
    succeeded(result)
    assert_same(parsed(record), {
        "lr": 0.1, "name": "my run", "note": NOTE, "verbose": True, "quiet": False,
        "layers": [64, 64], "offsets": [-1.5, -2.0, 0.25], "tags": [], "n_samples": 5,
        "seed": 7,  # null leaves the option out: the program's default
        "optimizer.lr": 0.01, "optimizer.name": "adam",
    })
    argv = load_json(record)["argv"]
    (step,) = load_summary(project)["steps"]
    assert words_after_script(step["command"], project / "tasks" / "argparse_app.py") == argv
    assert argv[:5] == ["--lr=0.1", "--name=my run", f"--note={NOTE}", "--verbose", "--layers"]
    assert not any(word.startswith(("--quiet", "--seed")) for word in argv)
    assert "--optimizer.lr=0.01" in argv


def test_an_argparse_list_of_negative_numbers_with_exponents_reaches_the_program(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "argparse.json"
    project = with_programs(make_project(
        f"""\
        steps:
          - script: tasks/argparse_app.py
            argument_style: argparse
            env: {{TEST_RECORD: {record}}}
            arguments: {{lr: -1.0e-05, offsets: [-1.0e-05, -1.0e+20, -3.0]}}
        """
    ))
    succeeded(run_scheduler(project))
    assert_same({k: parsed(record)[k] for k in ("lr", "offsets")},
                {"lr": -1e-05, "offsets": [-1e-05, -1e20, -3.0]})


CLICK_NOTE = "both ' and \" quotes\nnew line\tand tab, trailing \\"


def test_a_click_program_gets_the_values_and_types_of_the_config(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "click.json"
    project = with_programs(make_project(
        f"""\
        steps:
          - script: tasks/click_app.py
            argument_style: click
            env: {{TEST_RECORD: {record}}}
            arguments:
              name: my run
              note: {json.dumps(CLICK_NOTE)}
              empty: ""
              count: 3
              ratio: 0.5
              big: -.inf
              verbose: true
              dry: false
              tag: [a, b c, "it's", "x=y", ""]
              size: [1, -2]
              shift: [-.inf, .nan, 0.5]
              none: []
              seed: null
              optimizer: {{lr: 0.01}}
        """
    ))
    succeeded(run_scheduler(project))
    assert_same(parsed(record), {
        "name": "my run", "note": CLICK_NOTE, "empty": "", "count": 3, "ratio": 0.5,
        "big": -math.inf, "verbose": True, "dry": False,
        "tag": ["a", "b c", "it's", "x=y", ""], "size": [1, -2],
        "shift": [-math.inf, math.nan, 0.5], "none_given": [], "seed": 7,
        "optimizer_lr": 0.01,
    })
    argv = load_json(record)["argv"]
    assert argv[argv.index("--tag=a"):][:5] == ["--tag=a", "--tag=b c", "--tag=it's",
                                                "--tag=x=y", "--tag="]


def test_a_typer_program_gets_the_values_and_types_of_the_config(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "typer.json"
    note = 'say "hi", it\'s\nfine \\'
    project = with_programs(make_project(
        f"""\
        steps:
          - script: tasks/typer_app.py
            argument_style: click
            env: {{TEST_RECORD: {record}}}
            arguments:
              name: my run
              note: {json.dumps(note)}
              n-samples: 4
              ratio: .nan
              verbose: true
              dry: false
              tag: [a, "", x y]
              size: [-1, 2]
              seed: null
        """
    ))
    succeeded(run_scheduler(project))
    assert_same(parsed(record), {
        "name": "my run", "note": note, "n_samples": 4, "ratio": math.nan, "verbose": True,
        "dry": False, "tag": ["a", "", "x y"], "size": [-1, 2], "seed": 7,
    })


# ── The default style: scheduler.argument_style ──────────────────────────


@pytest.mark.parametrize("where", ["command line", "config"])
def test_scheduler_argument_style_is_the_default_and_a_steps_own_wins(
    make_project: Any, tmp_path: Path, where: str
) -> None:
    record = tmp_path / "argparse.json"
    options = OPTIONS if where == "command line" else "scheduler: {argument_style: argparse}\n"
    project = with_programs(make_project(
        options
        + textwrap.dedent(f"""\
        steps:
          - script: tasks/argparse_app.py
            env: {{TEST_RECORD: {record}}}
            arguments: {{lr: 0.5, verbose: true, layers: [1, 2]}}
          - script: tasks/fate.py
            argument_style: omegaconf
            arguments: {{record: {tmp_path / "fate.json"}, lr: 0.5, verbose: true,
                         layers: [1, 2]}}
        """)
    ))
    overrides = ["scheduler.argument_style=argparse"] if where == "command line" else []
    succeeded(run_scheduler(project, *overrides))
    got = parsed(record)
    assert_same({k: got[k] for k in ("lr", "verbose", "layers")},
                {"lr": 0.5, "verbose": True, "layers": [1, 2]})
    fate = load_json(tmp_path / "fate.json")
    assert_same(fate["args"], {"record": str(tmp_path / "fate.json"), "lr": 0.5,
                               "verbose": True, "layers": [1, 2]})
    assert fate["argv"][1:] == ["lr=0.5", "verbose=true", "layers=[1,2]"]


def test_without_an_argument_style_an_argparse_program_gets_key_value_words(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "argparse.json"
    project = with_programs(make_project(
        OPTIONS
        + textwrap.dedent(f"""\
        steps:
          - script: tasks/argparse_app.py
            env: {{TEST_RECORD: {record}}}
            arguments: {{lr: 0.5}}
        """)
    ))
    result = run_scheduler(project)
    assert result.returncode == 2, result.stdout + result.stderr  # argparse's usage error
    summary = load_summary(project)
    assert step_statuses(summary) == ["failed"]
    assert summary["steps"][0]["command"][-1] == "lr=0.5"
    assert not record.exists()


# ── hydra: a real @hydra.main app ────────────────────────────────────────


# Every key of tests/programs/hydra_app/config.yaml but `untouched`, with the values a
# Hydra app's cfg must hold; `+new_key` adds a key the app's config lacks.
HYDRA_ARGUMENTS = r"""
              plain: my run
              single_quote: "it's"
              double_quote: 'say "hi"'
              both_quotes: "it's \"both\""
              backslash: 'C:\new\table'
              trailing_backslash: 'ends with \'
              newline: "line one\nline two"
              tab: "a\tb"
              control: "bell \a esc \e[0m cr \r"
              interpolation: '\${x} and \${oc.env:HOME}'
              equals: a=b=c
              commas: a,b,c
              unicode: "ünïcødé ✓ 😀"
              empty: ""
              looks_like_true: "true"
              looks_like_int: "42"
              looks_like_null: "null"
              looks_like_inf: "inf"
              count: 42
              ratio: 0.5
              big: .inf
              small: -.inf
              not_a_number: .nan
              flag: true
              other_flag: false
              nothing: null
              layers: [64, 64]
              nested_list: [[1, 2], [], [a, [b, "c d", "e,f"]]]
              empty_list: []
              optimizer: {lr: 0.01, betas: [0.9, 0.999], name: adam, schedule: {warmup: 100}}
              +new_key: added
              ++forced: [x, 1]
"""


def hydra_step(record: Path, name: Optional[str] = None, arguments: str = HYDRA_ARGUMENTS,
               extra: str = "") -> str:
    named = f"\n            name: {name}" if name else ""
    return f"""\
          - script: tasks/hydra_app/app.py{named}
            argument_style: hydra
            env: {{TEST_RECORD: {record}}}{extra}
            arguments:{arguments}"""


def merged(base: Any, over: Any) -> Any:
    """Return base with over merged in, as Hydra's overrides do: mappings key by key."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merged(base.get(key), value) if key in base else value
        return out
    return over


def expected_cfg(project: Path, index: int = 0) -> Dict[str, Any]:
    """Return the cfg a Hydra step's app must see: its config.yaml with the step's values."""
    app = OmegaConf.to_container(OmegaConf.load(project / "tasks" / "hydra_app" / "config.yaml"))
    given = {key.lstrip("+"): value for key, value in step_arguments(project, index).items()}
    cfg: Dict[str, Any] = merged(app, given)
    return cfg


def no_child_runs_beside(project: Path, run_dir: Path) -> None:
    """Check that nothing of a child Hydra app landed outside crude-link's run folder."""
    outputs = project / "outputs"
    dates = [path for path in outputs.iterdir() if path.is_dir() and not path.is_symlink()]
    assert [entry for date in dates for entry in date.iterdir()] == [run_dir]
    assert not (project / "multirun").exists()
    assert not list(project.glob("tasks/**/.hydra"))
    assert not (project / "tasks" / "hydra_app" / "outputs").exists()


def test_a_hydra_app_gets_the_values_and_types_of_the_config(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "app.json"
    project = with_programs(make_project("steps:\n" + hydra_step(record, "app")))
    succeeded(run_scheduler(project))
    got = load_json(record)
    assert_same(got["cfg"], expected_cfg(project), got["argv"])
    assert got["output_dir"] == str(run_folder(project) / "01-app")
    no_child_runs_beside(project, run_folder(project))
    assert got["cfg"]["interpolation"] == "${x} and ${oc.env:HOME}"  # literally
    assert got["cfg"]["untouched"] == "kept"
    (step,) = load_summary(project)["steps"]
    assert words_after_script(step["command"], project / "tasks" / "hydra_app" / "app.py") == (
        got["argv"])
    keys = [hydra_key(word) for word in got["argv"]]
    assert "new_key" in keys and "forced" in keys
    assert [word.split("=", 1)[0] for word in got["argv"]
            if hydra_key(word) in ("new_key", "forced")] == ["+new_key", "++forced"]  # as written


def test_a_hydra_apps_own_folder_is_its_steps_folder_in_the_run_folder(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "app.json"
    project = with_programs(make_project(
        "steps:\n" + hydra_step(record, arguments=" {count: 1}")
        + "\n" + hydra_step(tmp_path / "again.json", arguments=" {count: 2}")
    ))
    succeeded(run_scheduler(project))
    run_dir = run_folder(project)
    first, second = load_json(record), load_json(tmp_path / "again.json")
    assert first["output_dir"] == str(run_dir / "01-app")
    assert second["output_dir"] == str(run_dir / "02-app-2")  # never the same folder
    for folder, count in ((run_dir / "01-app", 1), (run_dir / "02-app-2", 2)):
        saved = OmegaConf.load(folder / ".hydra" / "config.yaml")
        assert saved.count == count
        assert (folder / ".hydra" / "overrides.yaml").is_file()
    assert (first["cwd"], second["cwd"]) == (str(project), str(project))
    no_child_runs_beside(project, run_dir)
    assert step_statuses(load_summary(project)) == ["succeeded", "succeeded"]


def test_a_hydra_apps_own_multirun_goes_to_its_steps_folder(
    make_project: Any, tmp_path: Path
) -> None:
    record = tmp_path / "app.json"
    project = with_programs(make_project(
        "steps:\n" + hydra_step(record, "sweep", arguments=" {ratio: 0.5}",
                                extra="\n            args: [--multirun, 'count=1,2']")
    ))
    succeeded(run_scheduler(project))
    run_dir = run_folder(project)
    sweep = run_dir / "01-sweep"
    assert (sweep / "multirun.yaml").is_file()
    for job in (0, 1):
        got = load_json(Path(f"{record}.{job}"))
        assert got["output_dir"] == str(sweep / str(job))
        assert (got["cfg"]["count"], got["cfg"]["ratio"]) == (job + 1, 0.5)
        assert (sweep / str(job) / ".hydra" / "config.yaml").is_file()
    no_child_runs_beside(project, run_dir)


@pytest.mark.parametrize("form", ["dotted", "nested"])
def test_a_hydra_step_that_sets_hydra_run_dir_keeps_it(
    make_project: Any, tmp_path: Path, form: str
) -> None:
    record = tmp_path / "app.json"
    own = tmp_path / "own run"
    arguments = (f' {{count: 3, hydra.run.dir: "{own}"}}' if form == "dotted"
                 else f' {{count: 3, hydra: {{run: {{dir: "{own}"}}}}}}')
    project = with_programs(make_project("steps:\n" + hydra_step(record, "app", arguments)))
    succeeded(run_scheduler(project))
    got = load_json(record)
    assert got["output_dir"] == str(own)
    assert (own / ".hydra" / "config.yaml").is_file()
    assert got["cfg"]["count"] == 3
    assert [hydra_key(word) for word in got["argv"]].count("hydra.run.dir") == 1
    assert not (run_folder(project) / "01-app" / ".hydra").exists()


# ── args: positional words ───────────────────────────────────────────────


@pytest.mark.parametrize("style, words", [
    ("omegaconf", ["mode=fast", "n=2"]),
    ("argparse", ["--mode=fast", "--n=2"]),
])
def test_args_come_right_after_the_script_before_the_arguments(
    make_project: Any, tmp_path: Path, style: str, words: List[str]
) -> None:
    record = tmp_path / "words.txt"
    project = with_programs(make_project(
        f"""\
        default: {{data_dir: data}}  # a top-level key of its own is unknown (issue 12)
        steps:
          - script: tasks/positional.sh
            argument_style: {style}
            env: {{TEST_RECORD: {record}}}
            args: ["${{default.data_dir}}/in.csv", 3, out.csv, 2.5, "a b", "it's"]
            arguments: {{mode: fast, n: 2}}
        """
    ))
    succeeded(run_scheduler(project))
    received = record.read_text(encoding="utf-8").splitlines()
    assert received == ["data/in.csv", "3", "out.csv", "2.5", "a b", "it's", *words]
    (step,) = load_summary(project)["steps"]
    assert step["command"] == [str(project / "tasks" / "positional.sh"), *received]


# ── One argv everywhere: dry run, the step line, summary.json ────────────


SAME_ARGUMENTS = ('{name: my run, quote: "it\'s \\"q\\"", lr: 0.1, flag: true, off: false, '
                  "none: null, tags: [a, b c], opt: {lr: 0.01}}")


def dry_run_commands(stdout: str) -> List[List[str]]:
    """Return the commands a dry run printed, its run folder written as <RUN>."""
    lines = stdout.splitlines()
    env_words = [word for line in lines if line.strip().startswith("env:")
                 for word in shlex.split(line.split("env:", 1)[1])]
    run_dirs = {word.split("=", 1)[1] for word in env_words
                if word.startswith("CRUDE_LINK_RUN_DIR=")}
    assert len(run_dirs) == 1, lines
    commands = [shlex.split(line.split("command:", 1)[1]) for line in lines
                if line.strip().startswith("command:")]
    (run_dir,) = run_dirs
    return [without_run_dir(command, run_dir) for command in commands]


def without_run_dir(command: List[str], run_dir: str) -> List[str]:
    return [word.replace(run_dir, "<RUN>") for word in command]


def test_dry_run_step_line_and_summary_show_the_same_argv_for_every_style(
    make_project: Any, tmp_path: Path
) -> None:
    styles = ["omegaconf", "hydra", "argparse", "click"]
    steps = "".join(
        f"  - script: tasks/positional.sh\n"
        f"    name: {style}\n"
        f"    argument_style: {style}\n"
        f"    env: {{TEST_RECORD: {tmp_path / style}.txt}}\n"
        f"    args: [in.csv]\n"
        f"    arguments: {SAME_ARGUMENTS}\n" for style in styles)
    project = with_programs(make_project("scheduler: {dry_run: false}\nsteps:\n" + steps))
    dry = run_scheduler(project, "scheduler.dry_run=true")
    succeeded(dry)
    assert not list(tmp_path.glob("*.txt"))
    printed = dry_run_commands(dry.stdout)

    real = run_scheduler(project)
    succeeded(real)
    run_dir = str(run_folder(project))
    commands = [step["command"] for step in load_summary(project)["steps"]]
    assert printed == [without_run_dir(command, run_dir) for command in commands]
    script = project / "tasks" / "positional.sh"
    for index, (style, command) in enumerate(zip(styles, commands), start=1):
        after = words_after_script(command, script)
        assert after[0] == "in.csv"
        received = (tmp_path / f"{style}.txt").read_text(encoding="utf-8").splitlines()
        assert received == after  # what the program got
        shown = re.findall(rf"^▶ \[{index}/4\] {style}: (.*)$", real.stdout, re.MULTILINE)
        assert shown == [" ".join(["tasks/positional.sh", *after])], real.stdout
    assert len({tuple(command[1:]) for command in commands}) == 4  # four different styles
