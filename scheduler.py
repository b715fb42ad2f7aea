"""crude-link: run the steps listed in config.yaml, one after another.

`python scheduler.py [overrides]` loads config.yaml (beside this file) with Hydra,
checks every step, then runs each step's script as a child process in the root
folder (the folder of this file), streaming its output to the terminal and into
`<run dir>/NN-<name>.log`. When a step fails it asks what to do next (retry,
rerun the pipeline, skip, abort) or, with no terminal, stops. `summary.json` in
the run folder always tells the state of the run. README.md is the user's guide.

Sections, in the order one run meets them (the function to read first):
  Constants
  Schema                                   Step, SchedulerOptions, Notify
  Schema: planned steps and plain values   PlannedStep, normalize_program
  Reading the config: its file             check_config_file (before Hydra: compose_yaml)
  Reading the config: its shape and size   shape_problems
  Reading the config: resolving, naming    resolve_section, derive_names
  Argument rendering: OmegaConf and Hydra  render_value, render_hydra_value
  Argument rendering: options, the table   ARGUMENT_STYLES, render_arguments
  Secrets (pure)                           find_secrets, mask
  Secrets: notification URLs (pure)        mask_url, url_overrides
  Checks: keys and types                   has_type, wrong_types
  Checks: a step                           check_step
  Checks: the schedule                     check_schedule
  Checks: notifications                    check_notify, check_url
  Checks: options                          check_options
  Checks: the whole config                 check_config
  Planning: commands and environment      build_command, step_env, plan_steps
  Planning: the run                        plan_run -> RunPlan, load_config
  Planning a sweep (pure)                  match_sweep_job, plan_job (resume of a sweep)
  Stopping a step: when the scheduler dies Watchdog
  Stopping a step: signals                 StopRequest (and which handler is live when)
  Stopping a step: on Slurm                SlurmJob, step_signaller
  Stopping a step: the schedule            StopSchedule
  Running a step: outcome, output, reaping Attempt, Terminal, _reap (os.wait4: the cost)
  Running a step: the attempt              run_attempt
  Failure dialog (I/O)                     ask_what_next
  Cost and summary.md (pure)               add_attempt_cost, summary_markdown
  Run record: writing files                write_bytes_atomic
  Run record: summary.json                 RunRecord (summary.json, summary.md)
  Messages                                 Console, summary_table, print_problems
  Notifications: what is sent (pure)       run_outcome, ping_body, webhook_payload
  Notifications: the metrics file (pure)   metrics_text
  The pipeline: context and messages       Pipeline, announce_attempt, print_failure
  The pipeline: running it                 run_pipeline, run_step
  The run lock                             acquire_lock
  Keeping outputs/ small: what to prune    choose_prunable
  Keeping outputs/ small: pruning, cron.log run_pruning, rotate_cron_log
  Notifications: requests (I/O)            send_request, start_heartbeat
  Notifications: after a run (I/O)         report_run, send_notifications
  One job: leftovers, latest, dry run      remove_unused_run_dir, print_dry_run
  One job: the guarded pipeline            run_job, run_guarded
  History rows (pure)                      history_row, format_history
  The HTML report: colours and bars (pure) render_timeline_bars
  The HTML report: the page (pure)         render_report
  History and report (I/O)                 run_history, read_history
  Cron                                     run_cron, cron_entry, edit_crontab
  The sweep record                         record_sweep (a sweep folder's summary.json)
  Sweep jobs: resume, ending early         find_resume_source, end_sweep_early
  Hydra's main                             main
  Hydra's error reports                    HeldErrorReport, report_hydra_error
  The sweep report                         sweep_report
  Fail fast on Slurm                       fail_fast_problems
  The sweep watch                          SweepWatch
  Notifications: the sweep's               report_sweep (the sweep told once)
  A sweep, from the launching process      run_multirun
  Command line                             help_text, register_help
  Command line: where Hydra looks          ProjectConfigSource (skips venvs, run folders),
                                           shared_config_store (help's ~50 copies of it)
  Command line: Hydra's argv, and _main    _main(argv), default_overrides, with_overrides
"""

import contextlib
import errno
import fcntl
import functools
import gc
import html
import io
import itertools
import json
import logging
import math
import os
import pickle
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    Callable,
    ClassVar,
    Dict,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

# Start-up makes a great many long-lived objects, which the cyclic garbage collector would
# go over again and again, for nothing: it is off while Hydra is imported, and what was made
# by then, and by Hydra's composing the config, is frozen (never scanned again), in the
# `__main__` block and in main(). Importing the module (the unit tests) leaves it alone.
if __name__ == "__main__":
    gc.disable()

import hydra  # noqa: E402
import yaml  # noqa: E402 - PyYAML: omegaconf imports it anyway
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: E402
from hydra._internal.core_plugins.file_config_source import FileConfigSource  # noqa: E402
from hydra.core.config_search_path import ConfigSearchPath  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.core.plugins import Plugins  # noqa: E402
from hydra.errors import CompactHydraException, HydraException  # noqa: E402
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource  # noqa: E402
from hydra.plugins.search_path_plugin import SearchPathPlugin  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, read_write  # noqa: E402
from omegaconf import __version__ as omegaconf_version  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402
from termcolor import colored  # noqa: E402

# ── Constants ────────────────────────────────────────────────────────────

ROOT = Path(__file__).resolve().parent

EXIT_OK = 0
EXIT_FAILED = 1  # a multirun job that failed without an exit code of its own
EXIT_CONFIG_ERROR = 2
EXIT_SOFTWARE = 70  # sysexits' EX_SOFTWARE: crude-link itself failed
EXIT_LOCKED = 75
EXIT_TIMEOUT = 124
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_SIGNAL_BASE = 128

PIPE_SIZE = 1024 * 1024
CHUNK_SIZE = PIPE_SIZE  # read what the pipe holds: 16x fewer reads and writes than 64 KiB
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # named in Python 3.10+; Linux's value
TAIL_BYTES = 8 * 1024  # enough for the last lines shown in a failure warning
TAIL_LINES = 10
POLL_INTERVAL = 0.25  # how often a silent step is checked for exit, timeout, signals
SLURM_TIMEOUT = 30.0  # for squeue and scancel, when an srun step has to be stopped
MAX_CONFIG_DEPTH = 32  # OmegaConf itself fails at ~80 levels of mappings
MAX_CONFIG_VALUES = 50_000  # Hydra takes about 10 s to compose that many

LOCK_FILE = ".crude-link.lock"  # in <root>/outputs/
MASK = "***"  # what crude-link shows instead of a secret value

# A key holding one of these (Airflow's list; case-insensitive) holds a secret.
SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential",
                "private_key")

ARGUMENT_FORMAT = "{key}={value}"  # a step's default argument_format
ON_FAILURE_CHOICES = ("ask", "abort", "continue")
CRON_ACTIONS = ("print", "install", "remove")
HISTORY_FORMATS = ("table", "json", "csv", "markdown")  # how scheduler.history prints
CRON_LOG = "cron.log"  # in <root>/outputs/
LATEST_LINK = "latest"  # <root>/outputs/latest -> the newest run folder
CHOICES = {"r": "retry", "p": "pipeline", "s": "skip", "a": "abort"}
CHOICE_WORDS = {"retry": "retry", "pipeline": "pipeline", "rerun": "pipeline",
                "skip": "skip", "abort": "abort"}

# Step and run states, as written to summary.json.
RUNNING, SUCCEEDED, FAILED, TIMED_OUT = "running", "succeeded", "failed", "timed_out"
INTERRUPTED, SKIPPED, NOT_RUN, ABORTED = "interrupted", "skipped", "not_run", "aborted"

log = logging.getLogger("crude-link")


# ── Schema ───────────────────────────────────────────────────────────────

def _doc(text: str) -> Dict[str, str]:
    """Return dataclass field metadata carrying the one-line help shown by --help."""
    return {"help": text}


@dataclass
class Step:
    script: str = field(default=MISSING, metadata=_doc(
        "file to run, absolute or relative to the folder of scheduler.py (required)"))
    name: Optional[str] = field(default=None, metadata=_doc(
        "shown in output, logs, selections (default: its default: entry's key, or file stem)"))
    arguments: Dict[str, Any] = field(default_factory=dict, metadata=_doc(
        "mapping passed on the command line, written in the argument_style"))
    env: Dict[str, Any] = field(default_factory=dict, metadata=_doc(
        "extra environment variables"))
    timeout: Optional[float] = field(default=None, metadata=_doc(
        "seconds before SIGTERM to the step's process group (exit code 124), or null"))
    retries: int = field(default=0, metadata=_doc(
        "automatic retries before the failure policy applies"))
    retry_delay: float = field(default=0.0, metadata=_doc("seconds between automatic retries"))
    interpreter: Any = field(default=None, metadata=_doc(  # str or list: normalize_program()
        "program (string or list) to run the script with; .py uses this Python"))
    launcher: Optional[List[str]] = field(default=None, metadata=_doc(  # [] opts out
        "command prefix for the whole step, e.g. [srun,-N1] (default: scheduler.launcher)"))
    argument_format: str = field(default=ARGUMENT_FORMAT, metadata=_doc(
        "template for one argument in the omegaconf and hydra styles, e.g. '+{key}={value}'"))
    argument_style: Optional[str] = field(default=None, metadata=_doc(
        "omegaconf | hydra | argparse | click: how arguments are written "
        "(default: scheduler.argument_style)"))
    args: List[Any] = field(default_factory=list, metadata=_doc(
        "positional words right after the script, e.g. [data/in.csv, out.csv]"))


@dataclass
class SchedulerOptions:
    on_failure: str = field(default="ask", metadata=_doc(
        "ask | abort | continue: what a failed step leads to (ask aborts without a terminal)"))
    from_step: Any = field(default=None, metadata=_doc(  # a name or a 1-based index
        "start at this step (name or 1-based index): scheduler.from_step=training"))
    only: Any = field(default=None, metadata=_doc(  # a name or a list of names
        "run only these steps: scheduler.only=[training,validation]"))
    skip: Any = field(default=None, metadata=_doc(
        "leave these steps out: scheduler.skip=[deployment]"))
    resume: bool = field(default=False, metadata=_doc(
        "start where the newest run under outputs/ stopped: scheduler.resume=true"))
    dry_run: bool = field(default=False, metadata=_doc(
        "print each selected step's command, cwd and env; run nothing: scheduler.dry_run=true"))
    lock: bool = field(default=True, metadata=_doc(
        "refuse to start (exit 75) while another run on this folder is running"))
    kill_grace: float = field(default=10.0, metadata=_doc(
        "seconds between SIGTERM and SIGKILL when a step is stopped"))
    launcher: Optional[List[str]] = field(default=None, metadata=_doc(
        "default launcher of every step: scheduler.launcher='[srun,-p,gpu]'"))
    schedule: Optional[str] = field(default=None, metadata=_doc(
        "five-field cron expression for cron=print|install: scheduler.schedule='0 10 * * 1'"))
    cron: Optional[str] = field(default=None, metadata=_doc(
        "print | install | remove this folder's crontab line, run no step: "
        "scheduler.cron=install"))
    quiet: bool = field(default=False, metadata=_doc(
        "print nothing unless something fails (for cron mail): scheduler.quiet=true"))
    argument_style: str = field(default="omegaconf", metadata=_doc(
        "argument_style of every step that sets none: scheduler.argument_style=argparse"))
    keep: Any = field(default=None, metadata=_doc(  # a mapping: see check_keep()
        "prune finished runs as a run ends, keeping the newest runs and those younger than "
        "days: scheduler.keep.runs=20 scheduler.keep.days=90 (unset: keep all)"))
    notify: Any = field(default=None, metadata=_doc(  # a mapping: Notify, check_notify()
        "tell a heartbeat, a chat or a command how a run ended (keys below)"))
    metrics_file: Optional[str] = field(default=None, metadata=_doc(
        "Prometheus text file rewritten after each run: scheduler.metrics_file=run.prom"))
    history: Optional[int] = field(default=None, metadata=_doc(
        "print the newest N runs (0: all), run no step: scheduler.history=20"))
    history_format: str = field(default="table", metadata=_doc(
        "table | json | csv | markdown: how history prints its rows"))
    report: Optional[str] = field(default=None, metadata=_doc(
        "write an HTML report of the newest runs (history; 30) there, run no step: "
        "scheduler.report=outputs/report.html"))
    fail_fast: bool = field(default=False, metadata=_doc(
        "in a multirun, start no job after one failed (on Slurm, cancel the others)"))

    def __post_init__(self) -> None:
        if not isinstance(self.notify, Notify):
            self.notify = Notify(**notify_mapping(self.notify))


@dataclass
class Notify:
    """scheduler.notify: who is told how a run ended (see the Notifications sections)."""

    ping: Optional[str] = field(default=None, metadata=_doc(
        "healthchecks-style URL: GET <url>/start, then POST <url>/<exit code>"))
    webhook: Optional[str] = field(default=None, metadata=_doc(
        "URL that gets POST JSON {\"text\": ...} (Slack, Mattermost), with status fields"))
    command: Optional[List[Any]] = field(default=None, metadata=_doc(
        "argv run after the run, with CRUDE_LINK_STATUS, _EXIT_CODE, _RUN_DIR, _SUMMARY"))
    on: str = field(default="failure", metadata=_doc(
        "failure | always | never: when webhook and command are used (ping: every run)"))
    timeout: float = field(default=10.0, metadata=_doc(
        "seconds per request (and for command); 3 tries, then a warning"))


def notify_mapping(raw: Any) -> Dict[Any, Any]:
    """Return scheduler.notify as a mapping; a YAML `on:` key (read as true) counts as 'on'.

    YAML 1.1 reads an unquoted `on` as the boolean true; a string 'on' (an override) wins.
    """
    if not isinstance(raw, dict):
        return {}
    mapping = {key: value for key, value in raw.items() if key is not True}
    if True in raw and "on" not in mapping:
        mapping["on"] = raw[True]
    return mapping


STEP_KEYS = frozenset(f.name for f in fields(Step))
OPTION_KEYS = frozenset(f.name for f in fields(SchedulerOptions))
NOTIFY_KEYS = frozenset(f.name for f in fields(Notify))


# ── Schema: planned steps and plain values ───────────────────────────────

@dataclass
class PlannedStep:
    """A checked step with everything needed to run it."""

    index: int  # 1-based position in the config's `steps`
    name: str
    step: Step
    command: List[str]
    log_name: str
    script_at: int = 0  # the script's position in command: what follows it is shown
    secrets: Tuple[str, ...] = ()  # values shown as *** wherever crude-link shows the step


def is_word(value: Any) -> bool:
    """Return whether a value can be one argv word as its text: a string, number or boolean."""
    return isinstance(value, (str, int, float))


def plain_text(value: Any) -> str:
    """Return a scalar as a program reads it from one argv word: no quoting, no escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # inf, -inf and nan as float() reads them
    return str(value)


def normalize_program(program: Any) -> Optional[List[str]]:
    """Return a program given as a string or a list as a list; None if it is neither."""
    if isinstance(program, str) and program:
        return [program]
    if isinstance(program, list) and program and all(is_word(p) and p != "" for p in program):
        return [plain_text(part) for part in program]
    return None


def normalize_names(names: Any) -> Optional[List[str]]:
    """Return a step name or a list of names as a list; None if it is neither."""
    if isinstance(names, str):
        return [names]
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


# ── Reading the config: its file ─────────────────────────────────────────

def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def primary_config(argv: Sequence[str], root: Path) -> Tuple[Path, Optional[str]]:
    """Return the primary config file the command line names, and its text (None: unread)."""
    folder, name = root, "config"
    for flag, value in zip(argv, argv[1:]):
        if flag in ("--config-name", "-cn"):
            name = value
        elif flag in ("--config-dir", "-cd", "--config-path", "-cp"):
            folder = root / value if flag in ("--config-path", "-cp") else Path(value)
    path = folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    try:
        return path, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return path, None  # Hydra will report a missing or unreadable config itself


def configured_run_dirs(text: Optional[str]) -> List[str]:
    """Return which of hydra.run.dir / hydra.sweep.dir the primary config's text sets."""
    if text is None or not re.search(r"^hydra\s*:", text, re.MULTILINE):
        return []  # the usual case: no YAML parse at start-up
    with contextlib.suppress(yaml.YAMLError, AttributeError):  # hydra: 3 is reported later
        node = (yaml.safe_load(text) or {}).get("hydra") or {}
        return [f"hydra.{key}.dir" for key in ("run", "sweep")
                if isinstance(node.get(key), dict) and "dir" in node[key]]
    return []


def not_utf8(path: Path) -> Optional[str]:
    """Return where a file stops being UTF-8 text ('byte 0xff at line 3, column 4'), or None."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except OSError:
        return None  # missing or unreadable: Hydra says so
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        return (f"not UTF-8 text (a binary file?): byte 0x{data[error.start]:02x} at line "
                f"{line}, column {column}")
    return None


def yaml_problem(text: str) -> Optional[str]:
    """Return what makes text invalid YAML ('... line 3, column 23'), or None."""
    return compose_yaml(text)[1]


class _Refused(Exception):
    """A config too big or too deep to give to Hydra; its message says where."""


def compose_yaml(text: str) -> Tuple[Any, Optional[str]]:
    """Return text's YAML node tree (None: empty) and what makes it invalid YAML, or None.

    Hydra would report a problem with a traceback. libyaml composes the text in a fraction
    of a millisecond; the slower pure-Python parser, which OmegaConf uses, confirms a problem
    before it counts. A key repeated in a mapping, which OmegaConf refuses, is one too.
    Nothing is constructed: merges (<<) of merges could take for ever (shape_problems says).
    """
    try:
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as error:
            if isinstance(error, yaml.composer.ComposerError) and error.context:
                return None, (f"{error.context}{_at(error.context_mark)}, "  # both anchors
                              f"{error.problem}{_at(error.problem_mark)}")
            return None, f"{error.problem or error.context or 'not valid YAML'}{_at(error)}"
        except yaml.YAMLError as error:
            return None, _first_line(error)
        except RecursionError:
            return None, f"nested too deeply (more than {MAX_CONFIG_DEPTH} levels)"
    return node, _repeated_key(node)


def _at(found: Any) -> str:
    """Return ' (line 3, column 23)': where a YAML error, node or mark is."""
    mark = getattr(found, "problem_mark", None) or getattr(found, "start_mark", found)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""


def _repeated_key(root: Any) -> Optional[str]:
    """Return the first key repeated in a mapping of a YAML node tree, as a problem, or None."""
    seen, todo = set(), [root] if root is not None else []
    while todo:
        node = todo.pop()
        if id(node) in seen or not isinstance(node, yaml.CollectionNode):
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: Dict[str, Any] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:str" and key.value in keys:
                    first = keys[key.value].start_mark.line + 1
                    return (f"found duplicate key {key.value!r}{_at(key)}; it is first at line "
                            f"{first}")
                keys.setdefault(key.value, key)
                todo.extend((key, value))
        else:
            todo.extend(node.value)
    return None


# ── Reading the config: its shape and size ───────────────────────────────

def shape_problems(root: Any) -> List[str]:
    """Return the problems of a config's YAML node tree that Hydra would fail on, badly.

    Aliases are counted as the copies OmegaConf makes of them: a few hundred bytes of
    anchors and aliases can stand for billions of values (hours and gigabytes in Hydra).
    """
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        return [f"the config must be a mapping (steps:, scheduler:...), got "
                f"{'a list' if isinstance(root, yaml.SequenceNode) else repr(root.value)}"
                f"{_at(root)}"]
    try:
        _measure(root, 1, {})
    except _Refused as refused:
        return [str(refused)]
    problems = []
    for key, value in root.value:
        if key.value == "hydra" and not isinstance(value, yaml.MappingNode):
            problems.append(f"hydra: must be a mapping of Hydra's settings{_at(value)}")
        elif key.value == "defaults":
            problems.extend(_defaults_problems(value))
    return problems


def _measure(node: Any, depth: int, known: Dict[int, Optional[Tuple[int, int]]]
             ) -> Tuple[int, int]:
    """Return (values, levels) a node stands for, aliases expanded; raise _Refused: too many.

    known: node id → its (values, levels), or None while its children are being measured.
    """
    if depth > MAX_CONFIG_DEPTH:
        raise _Refused(f"nested more than {MAX_CONFIG_DEPTH} levels deep{_at(node)}")
    if id(node) in known:
        measured = known[id(node)]
        if measured is None:
            raise _Refused(f"an alias refers to a node that holds it{_at(node)}: "
                           "it would repeat for ever")
        size, height = measured
    elif not isinstance(node, yaml.CollectionNode):
        size, height = 1, 1
    else:
        known[id(node)] = None
        size, height = 1, 1
        children = (node.value if isinstance(node, yaml.SequenceNode)
                    else [part for pair in node.value for part in pair])
        for child in children:
            child_size, child_height = _measure(child, depth + 1, known)
            size, height = size + child_size, max(height, child_height + 1)
            if size > MAX_CONFIG_VALUES:
                raise _Refused(f"the config stands for more than {MAX_CONFIG_VALUES} values, "
                               f"its aliases expanded{_at(node)}: too big to load")
        known[id(node)] = size, height
    if depth + height - 1 > MAX_CONFIG_DEPTH:
        raise _Refused(f"nested more than {MAX_CONFIG_DEPTH} levels deep{_at(node)}")
    return size, height


def _defaults_problems(node: Any) -> List[str]:
    """Return the problems of a `defaults:` list: Hydra's, of config groups; not step templates."""
    hint = ("defaults: is Hydra's list of configs to compose; step templates go in "
            "'default:' (did you mean 'default'?)")
    if not isinstance(node, yaml.SequenceNode):
        return [f"{hint}; got no list{_at(node)}"]
    for item in node.value:
        if isinstance(item, yaml.ScalarNode):
            continue
        pairs = item.value if isinstance(item, yaml.MappingNode) else []
        if (len(pairs) != 1 or not isinstance(pairs[0][0], yaml.ScalarNode)
                or pairs[0][0].value in STEP_KEYS or isinstance(pairs[0][1], yaml.MappingNode)
                or isinstance(pairs[0][1], yaml.SequenceNode)
                and not all(isinstance(v, yaml.ScalarNode) for v in pairs[0][1].value)):
            return [f"{hint}; an item must be a config name or 'group: option'{_at(item)}"]
    return []


def check_config_file(argv: Sequence[str], root: Path) -> Optional[str]:
    """Return the config file's text, checked before Hydra reads it; exit 2 if unusable."""
    path, text = primary_config(argv, root)
    tree, problem = compose_yaml(text) if text is not None else (None, not_utf8(path))
    if problem:
        print(colored(f"crude-link: {path.name} is not valid YAML; no step was run:", "red",
                      attrs=["bold"]) + f"\n  {path}: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR)
    problems = shape_problems(tree)
    if problems:
        print(colored(f"crude-link: {path.name} cannot be loaded; no step was run:", "red",
                      attrs=["bold"]), *(f"  {path}: {p}" for p in problems),
              sep="\n", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR)
    return text


# ── Reading the config: resolving and naming ─────────────────────────────

def _section(cfg: DictConfig, key: str, problems: List[str]) -> Any:
    """Return a top-level section of the config; None, and a problem, if it cannot resolve."""
    try:
        return cfg.get(key)
    except OmegaConfBaseException as error:  # `steps: ${steps}`, say
        raw: Any = OmegaConf.to_container(cfg)
        raw = raw[key]
        problems.append(f"{key}: cannot resolve {raw!r}: {_first_line(error)}")
        return None


def resolve_section(node: Any, where: str, problems: List[str]) -> Any:
    """Return a config node as plain data, resolving its interpolations.

    When something cannot resolve, the node is walked one key at a time instead, so
    every broken interpolation becomes a problem naming its path, not just the first.
    """
    if isinstance(node, (DictConfig, ListConfig)):
        with contextlib.suppress(OmegaConfBaseException):
            return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)  # usual case
    return _resolve_each(node, where, problems)


def _resolve_each(node: Any, where: str, problems: List[str]) -> Any:
    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    is_dict = isinstance(node, DictConfig)
    raw: Any = OmegaConf.to_container(node)  # the unresolved text, for messages
    resolved: Dict[Any, Any] = {}
    for key in (list(node) if is_dict else range(len(node))):
        path = f"{where}.{key!s}" if is_dict else f"{where}[{key}]"
        try:
            child = node[key]
        except OmegaConfBaseException as error:
            problems.append(f"{path}: cannot resolve {raw[key]!r}: {_first_line(error)}")
            continue
        resolved[key] = _resolve_each(child, path, problems)
    return resolved if is_dict else list(resolved.values())


def name_steps_in(problems: List[str], names: List[str]) -> List[str]:
    """Return `steps[2].arguments.x: ...` problems as `steps[2] (train): arguments.x ...`."""

    def locate(match: "re.Match[str]") -> str:
        index = int(match.group(1))
        name = names[index] if index < len(names) and names[index] else ""
        return f"steps[{index}]" + (f" ({name})" if name else "") + ": " + match.group(2)

    return [re.sub(r"^steps\[(\d+)\]\.([^:]+):", locate, problem) for problem in problems]


def _did_you_mean(word: str, choices: List[str], listing: str = "steps") -> str:
    """Return ' (did you mean 'x'?)' for a close choice, else '; <listing>: a, b'."""
    import difflib  # only a config with a typo pays for this import

    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f"; {listing}: {', '.join(choices)}"


def default_names(defaults: Any) -> Dict[str, str]:
    """Return script → entry key for the `default:` entries whose script is unique."""
    entries = []
    for item in defaults if isinstance(defaults, list) else [defaults]:
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, dict) and isinstance(value.get("script"), str):
                    entries.append((os.path.normpath(value["script"]), str(key)))
    counts: Dict[str, int] = {}
    for script, _ in entries:
        counts[script] = counts.get(script, 0) + 1
    return {script: key for script, key in entries if counts[script] == 1}


def derive_names(steps: List[Any], defaults: Any) -> Tuple[List[str], List[str]]:
    """Return each step's name and the problems with explicit names (repeats)."""
    from_defaults = default_names(defaults)
    explicit = [raw.get("name") if isinstance(raw, dict) else None for raw in steps]
    problems = []
    first: Dict[str, int] = {}  # name -> the index of the first step that has it
    for index, name in enumerate(explicit):
        if isinstance(name, str) and name and first.setdefault(name, index) != index:
            problems.append(f"steps[{index}] ({name}): name '{name}' is already used by "
                            f"steps[{first[name]}]; step names must be unique")
    taken = {name for name in explicit if isinstance(name, str)}
    # The number each base tries next: every one below it is taken, so a script repeated
    # 10,000 times costs 10,000 tries, not 50 million.
    tried: Dict[str, int] = {}
    names = []
    for raw, name in zip(steps, explicit):
        if isinstance(name, str) and name:
            names.append(name)
            continue
        script = raw.get("script") if isinstance(raw, dict) else None
        if not isinstance(script, str) or not script:
            names.append("")
            continue
        base = from_defaults.get(os.path.normpath(script), Path(script).stem)
        n = tried.get(base, 1)
        unique = base if n == 1 else f"{base}-{n}"
        while unique in taken:
            n += 1
            unique = f"{base}-{n}"
        tried[base] = n + 1
        taken.add(unique)
        names.append(unique)
    return names, problems


# ── Argument rendering: OmegaConf and Hydra (pure) ───────────────────────

# Plain words that YAML (OmegaConf.from_cli) or Hydra would turn into booleans, null or floats.
_SPECIAL_WORDS = frozenset(["y", "n", "yes", "no", "true", "false", "on", "off", "null",
                            "nan", "inf"])

_BARE = re.compile(r"(?:[A-Za-z_/]|\.[./])[A-Za-z0-9_./@%+-]*\Z")


class _Dialect(NamedTuple):
    """How one parser writes what JSON-like values share no spelling for."""

    nan: str
    inf: str  # -inf is "-" + inf
    colon: str  # between a key and its value in a mapping
    comma: str  # between the entries of a mapping
    key: Callable[[Any], str]
    string: Callable[[str], str]


def _render(value: Any, dialect: _Dialect) -> str:
    """Return a value as the dialect's parser writes it: null, true, 1, 0.5, [a,b], {k: v}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return dialect.nan
        if math.isinf(value):
            return dialect.inf if value > 0 else "-" + dialect.inf
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_render(v, dialect) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + dialect.comma.join(f"{dialect.key(k)}{dialect.colon}{_render(v, dialect)}"
                                        for k, v in value.items()) + "}"
    return dialect.string(str(value))


def render_value(value: Any) -> str:
    """Return a value as text that OmegaConf.from_cli (YAML) reads back unchanged."""
    return _render(value, _YAML)


def render_key(key: Any) -> str:
    """Return a mapping key inside a flow mapping, quoted when needed."""
    return render_string(str(key))


def render_string(text: str) -> str:
    """Return a string bare when both YAML and Hydra read it as itself, else quoted."""
    text = escape_interpolations(text)  # else the task's OmegaConf reads an interpolation
    if _BARE.match(text) and text.lower() not in _SPECIAL_WORDS:
        return text
    if not all(map(_is_yaml_printable, text)):
        return '"' + "".join(map(_escape_char, text)) + '"'
    if "'" not in text and not text.endswith("\\"):
        return f"'{text}'"  # read the same by YAML and by Hydra's override parser
    if '"' not in text and "\\" not in text:
        return f'"{text}"'
    return "'" + text.replace("'", "''") + "'"  # YAML's escape; from_cli is the reference


def escape_interpolations(text: str) -> str:
    """Return text with each "${" escaped as OmegaConf asks, so it stays a literal "${"."""
    if "${" not in text:
        return text
    # Backslashes right before "${" are doubled, then "${" becomes "\${".
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)


_YAML = _Dialect(".nan", ".inf", ": ", ", ", key=render_key, string=render_string)


def _is_yaml_printable(char: str) -> bool:
    """Return whether YAML holds char verbatim in a scalar (no control char, break or BOM)."""
    code = ord(char)
    return ((0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
             or code >= 0x10000) and char not in "\u2028\u2029\ufeff")


def _escape_char(char: str) -> str:
    """Return one character as it goes inside a YAML double-quoted scalar."""
    if char in '"\\':
        return "\\" + char
    if char in "\n\t\r":
        return "\\" + {"\n": "n", "\t": "t", "\r": "r"}[char]
    if _is_yaml_printable(char):
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def flatten_arguments(arguments: Mapping[Any, Any], prefix: str = "") -> List[Tuple[str, Any]]:
    """Return (dotted key, value) pairs: nested mappings become `opt.lr`-style keys."""
    pairs: List[Tuple[str, Any]] = []
    for key, value in arguments.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs.extend(flatten_arguments(value, dotted + "."))
        else:
            pairs.append((dotted, value))
    return pairs


def render_omegaconf(key: str, value: Any, fmt: str) -> List[str]:
    """Return one argument as `key=value` that OmegaConf.from_cli reads back unchanged."""
    return [fmt.format(key=key, value=render_value(value))]


# Plain words that Hydra's override grammar reads as something else than that string.
_HYDRA_WORDS = frozenset(["true", "false", "null", "inf", "nan"])
_HYDRA_BARE = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*\Z")
_HYDRA_KEY = re.compile(r"[A-Za-z0-9_/.+$%*@?|-]+\Z")


def render_hydra_value(value: Any) -> str:
    """Return a value in Hydra's override grammar, read back with the same value and type."""
    return _render(value, _HYDRA)


def _hydra_key(key: Any) -> str:
    """Return a key of a mapping inside a list; Hydra's grammar has no quoted keys."""
    text = str(key)
    if not _HYDRA_KEY.match(text) or text.lower() in _HYDRA_WORDS or _is_number(text):
        raise ValueError(f"Hydra cannot read {key!r} as a string key of a mapping inside a "
                         "list (it has no quoted keys)")
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _hydra_string(text: str) -> str:
    """Return a string bare when Hydra reads it as itself, else quoted as its grammar asks."""
    if _HYDRA_BARE.match(text) and text.lower() not in _HYDRA_WORDS:
        return text
    text = escape_interpolations(text)
    quote = '"' if "'" in text and '"' not in text else "'"
    # Backslashes are literal, except a run of them before a quote or the closing quote:
    # those are doubled, and a quote inside gets one more.
    text = re.sub(r"(\\*)" + quote, lambda m: m.group(1) * 2 + "\\" + quote, text)
    text = re.sub(r"(\\+)\Z", lambda m: m.group(1) * 2, text)
    return quote + text + quote


_HYDRA = _Dialect("nan", "inf", ":", ",", key=_hydra_key, string=_hydra_string)


def render_hydra(key: str, value: Any, fmt: str) -> List[str]:
    """Return one argument as `key=value` in the override grammar of a @hydra.main app."""
    return [fmt.format(key=key, value=render_hydra_value(value))]


# ── Argument rendering: options, and the table of styles (pure) ──────────

# What argparse reads as a negative number rather than an option (its own pattern).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def render_argparse(key: str, value: Any, fmt: str) -> List[str]:
    """Return one argument as GNU long options: --key=value, --key for true, --key a b."""
    option = f"--{key}"
    if value is True:
        return [option]
    if value is False or value is None or isinstance(value, dict):  # {}: nothing to pass
        return []
    if isinstance(value, (list, tuple)):
        items = [_argparse_item(key, item) for item in value]
        for item in items:
            if item.startswith("-") and not _NEGATIVE_NUMBER.match(item):
                raise ValueError(f"argparse would read the list item {item!r} as an option; "
                                 "use argument_style: click (--key=item per item) or a string")
        return [option, *items]
    return [f"{option}={plain_text(value)}"]


def render_click(key: str, value: Any, fmt: str) -> List[str]:
    """Return one argument as click reads it: as argparse, but --key=item per list item."""
    if isinstance(value, (list, tuple)):
        return [f"--{key}={_plain_item(key, item)}" for item in value]
    return render_argparse(key, value, fmt)


def _argparse_item(key: str, item: Any) -> str:
    """Return a list item for argparse: a negative float without an exponent (-0.00001).

    argparse takes a word for a negative number only as -12 or -1.5, else for an option.
    """
    if isinstance(item, float) and item < 0 and math.isfinite(item):
        from decimal import Decimal  # only such a list pays for this import

        return format(Decimal(repr(item)), "f")
    return _plain_item(key, item)


def _plain_item(key: str, item: Any) -> str:
    if item is None or isinstance(item, (list, tuple, dict)):
        raise ValueError(f"a list item must be a string, number or boolean, got {item!r}")
    return plain_text(item)


ARGUMENT_STYLES: Dict[str, Callable[[str, Any, str], List[str]]] = {
    "omegaconf": render_omegaconf,
    "hydra": render_hydra,
    "argparse": render_argparse,
    "click": render_click,
}

FORMATTED_STYLES = ("omegaconf", "hydra")  # the styles that argument_format applies to


def render_arguments(arguments: Mapping[Any, Any], style: str = "omegaconf",
                     fmt: str = "{key}={value}") -> List[str]:
    """Return the command-line words for a step's arguments in a style (ARGUMENT_STYLES).

    Raises ValueError, naming the argument, for a value the style cannot pass.
    """
    render = ARGUMENT_STYLES[style]
    words: List[str] = []
    for key, value in flatten_arguments(arguments):
        try:
            rendered = render(key, value, fmt)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None
        if any("\0" in word for word in rendered):
            raise ValueError(f"{key}: a NUL character cannot be passed on a command line")
        words.extend(rendered)
    return words


def hydra_folders(arguments: Mapping[Any, Any], folder: Path) -> List[str]:
    """Return overrides that put a Hydra app's own run and sweep folders in folder.

    A folder the step's arguments set (hydra.run.dir=..., +hydra.sweep.dir=...) is kept.
    """
    given = {key.lstrip("+~") for key, _ in flatten_arguments(arguments)}
    return [f"hydra.{mode}.dir={render_hydra_value(str(folder))}" for mode in ("run", "sweep")
            if f"hydra.{mode}.dir" not in given]


# ── Secrets (pure) ───────────────────────────────────────────────────────

# ${oc.env:...}, unless escaped: an odd number of backslashes before it makes it text.
_FROM_ENV = re.compile(r"(?<!\\)(?:\\\\)*\$\{\s*oc\.env\s*:")


def is_secret_key(key: str) -> bool:
    """Return whether an argument or env key (dotted for nested arguments) names a secret."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def find_secrets(value: Any, written: Any, key: str = "") -> List[str]:
    """Return the texts to mask for resolved arguments, args or env, given the text as written.

    A secret is a value read with ${oc.env:...} (seen in the written, unresolved text) or
    one under a secret-named key; a mapping or list there is secret all through.
    """
    if key and is_secret_key(key) or isinstance(written, str) and _FROM_ENV.search(written):
        return _secret_forms(value)
    if isinstance(value, dict):
        inner = written if isinstance(written, dict) else {}
        return [secret for k, v in value.items()
                for secret in find_secrets(v, inner.get(k), f"{key}.{k}" if key else str(k))]
    if isinstance(value, list):
        texts = written if isinstance(written, list) and len(written) == len(value) else []
        return [secret for v, text in zip(value, texts or [None] * len(value))
                for secret in find_secrets(v, text, key)]
    return []


def _secret_forms(value: Any) -> List[str]:
    """Return a secret value as it may be shown: as it is, and as each argument style writes it."""
    if value is None or isinstance(value, bool):  # nothing to hide; masking would only blur
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [form for item in value for form in _secret_forms(item)]
    return list(dict.fromkeys([str(value), plain_text(value), render_value(value),
                               render_hydra_value(value)]))


def mask(text: str, secrets: Sequence[str]) -> str:
    """Return text with each occurrence of each non-empty secret (longest first) as ***."""
    words = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
    if not words:
        return text
    return re.sub("|".join(map(re.escape, words)), MASK, text)  # one pass: *** stays ***


def mask_words(words: Sequence[str], secrets: Sequence[str]) -> List[str]:
    """Return a command's words, each masked (mask, then shell-quote: the *** survives)."""
    return [mask(word, secrets) for word in words]


# ── Secrets: notification URLs (pure) ────────────────────────────────────

# Ping and webhook URLs are credentials: crude-link shows only their scheme and host.

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_url(url: str) -> str:
    """Return a URL as crude-link shows it: scheme and host, then *** (and ***@ for a user)."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)?([^/?#]*)(.*)\Z", url, re.DOTALL)
    assert match is not None  # every group may be empty: any text matches
    scheme, host, rest = match.groups()
    if "@" in host:
        host = f"{MASK}@{host.rsplit('@', 1)[1]}"
    if not scheme and not rest:  # no URL at all: could be anything, show nothing
        return MASK if url else url
    return f"{scheme or ''}{host}" + (f"/{MASK}" if rest.strip("/") else rest)


def mask_urls(text: str) -> str:
    """Return text with every URL in it masked as mask_url does."""
    return _URL.sub(lambda match: mask_url(match.group(0)), text)


def mask_command(command: Sequence[Any]) -> List[str]:
    """Return the notify command's words with any URL in them masked."""
    return [mask_urls(plain_text(word)) for word in command]


def url_overrides(overrides: Sequence[str]) -> List[str]:
    """Return the overrides (masked) that put a notification URL on the command line."""
    return [mask_urls(o) for o in overrides
            if o.lstrip("+~").startswith("scheduler.notify") and _URL.search(o)]


# ── Checks: keys and types ───────────────────────────────────────────────

_TYPE_TEXT = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
}


def describe_type(annotation: Any) -> str:
    """Return how a schema annotation reads in a message: 'a number or null'."""
    origin = getattr(annotation, "__origin__", None)
    args: Tuple[Any, ...] = getattr(annotation, "__args__", ())
    if origin is list:
        return "a list of strings"
    if origin is dict:
        return "a mapping"
    if type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return f"{describe_type(inner)} or null"
    return _TYPE_TEXT.get(annotation, "a value")


def has_type(value: Any, annotation: Any) -> bool:
    """Return whether a plain value fits a schema annotation (no coercion but int→float)."""
    if annotation is Any:
        return True
    origin = getattr(annotation, "__origin__", None)
    args: Tuple[Any, ...] = getattr(annotation, "__args__", ())
    if type(None) in args:
        return value is None or any(has_type(value, a) for a in args if a is not type(None))
    if origin is list:  # a list of strings takes numbers too, as their text (launcher)
        return isinstance(value, list) and all(
            is_word(v) if args[0] is str else has_type(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _number(value: Any) -> Optional[float]:
    """Return value as a float if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _whole(value: Any) -> Optional[int]:
    """Return value if it is a whole number (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def check_keys(where: str, raw: Mapping[str, Any], schema: Any) -> List[str]:
    """Return a problem for each key the schema lacks, with a did-you-mean hint."""
    known = sorted(f.name for f in fields(schema))
    return [f"{where}: unknown key '{key}'{_did_you_mean(str(key), known, 'known keys')}"
            for key in sorted(set(raw) - set(known), key=str)]


def wrong_types(where: str, raw: Mapping[str, Any], schema: Any) -> Dict[str, str]:
    """Return key → problem for each value whose type does not fit the schema."""
    return {f.name: f"{where}: {f.name} must be {describe_type(f.type)}, got {raw[f.name]!r}"
            for f in fields(schema) if f.name in raw and not has_type(raw[f.name], f.type)}


def is_executable(path: Path) -> bool:
    """Return whether path is a file this user may execute."""
    return path.is_file() and os.access(path, os.X_OK)


# ── Checks: a step ───────────────────────────────────────────────────────

def check_step(index: int, raw: Any, name: Optional[str], root: Path,
                default_style: str = "omegaconf", python: str = "",
                search_path: Optional[str] = None) -> List[str]:
    """Return every problem with one raw step mapping; [] if it is usable.

    Its programs are looked up on the PATH the step gets: python's folder, then search_path
    (the caller's PATH) or the step's own env.PATH.
    """
    where = f"steps[{index}]" + (f" ({name})" if name else "")
    if not isinstance(raw, dict):
        return [f"{where}: a step must be a mapping with at least 'script', got {raw!r}"]
    type_failed = wrong_types(where, raw, Step)
    problems = check_keys(where, raw, Step) + list(type_failed.values())
    script = raw.get("script")
    if "script" not in raw:
        problems.append(f"{where}: missing required key 'script' (the file to run)")
    elif isinstance(script, str) and script:
        path = root / script
        if not path.is_file():
            problems.append(f"{where}: script '{script}' does not exist (looked for {path})")
        elif path.suffix != ".py" and raw.get("interpreter") is None and not is_executable(path):
            problems.append(f"{where}: script '{script}' is not executable: "
                            f"run 'chmod +x {script}' or set 'interpreter'")
    elif "script" not in type_failed:
        problems.append(f"{where}: script must be a non-empty file path")
    for key in ("timeout", "retries", "retry_delay"):
        value = raw.get(key)
        if key not in type_failed and isinstance(value, (int, float)) and value < 0:
            problems.append(f"{where}: {key} must be >= 0, got {value!r}")
        elif key not in type_failed and isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: {key} must be a finite number of seconds, got {value!r}")
    if raw.get("name") == "":
        problems.append(f"{where}: name must not be empty")
    for key, value in (raw.get("env") or {}).items() if isinstance(raw.get("env"), dict) else ():
        if not isinstance(value, (str, int, float, bool)):
            problems.append(f"{where}: env.{key} must be a string or a number, got {value!r}")
        elif "\0" in str(value):
            problems.append(f"{where}: env.{key} must not hold a NUL byte, got {value!r}")
        if not str(key) or "=" in str(key) or "\0" in str(key):
            problems.append(f"{where}: env has a variable named {str(key)!r}: a name must be "
                            "non-empty, without '=' or a NUL byte")
    interpreter = raw.get("interpreter")
    if interpreter is not None and normalize_program(interpreter) is None:
        problems.append(f"{where}: interpreter must be a program name or a list of strings, "
                        f"got {interpreter!r}")
    if "args" not in type_failed and not all(map(is_word, raw.get("args") or [])):
        problems.append(f"{where}: args must be a list of words (strings or numbers), "
                        f"got {raw['args']!r}")
    problems += _check_arguments(where, raw, type_failed, default_style)
    return problems + _check_programs(where, raw, root, python, search_path)


def _check_arguments(where: str, raw: Mapping[str, Any], type_failed: Mapping[str, str],
                     default_style: str) -> List[str]:
    """Return the problems with a step's argument_style, argument_format and arguments."""
    style = raw.get("argument_style") or default_style
    if style not in ARGUMENT_STYLES:
        return [] if "argument_style" in type_failed else [
            f"{where}: argument_style must be one of {', '.join(ARGUMENT_STYLES)}, "
            f"got {style!r}"]
    fmt = raw.get("argument_format", ARGUMENT_FORMAT)
    if not isinstance(fmt, str):
        return []
    if fmt != ARGUMENT_FORMAT and style not in FORMATTED_STYLES:
        return [f"{where}: argument_format applies to the {' and '.join(FORMATTED_STYLES)} "
                f"styles, not to argument_style {style}: leave it out"]
    if not is_argument_format(fmt):
        return [f"{where}: argument_format must use only {{key}} and {{value}}, in one word "
                f"(no spaces), got {fmt!r}; for options such as '--key value' set "
                "argument_style: argparse (or click, hydra) instead"]
    arguments = raw.get("arguments")
    if "arguments" in type_failed or not isinstance(arguments, dict):
        return []
    try:
        render_arguments(arguments, style, fmt)
    except ValueError as error:
        return [f"{where}: arguments.{error}"]
    return []


def is_argument_format(fmt: str) -> bool:
    """Return whether fmt is one word whose only fields are plain {key} and {value}."""
    import string  # only a config with an argument_format pays for this import

    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError:
        return False
    return not any(char.isspace() for char in fmt) and all(
        name is None or (name in ("key", "value") and not spec and not conversion)
        for _, name, spec, conversion in parts)


def _check_programs(where: str, raw: Mapping[str, Any], root: Path, python: str,
                    path: Optional[str]) -> List[str]:
    """Return a problem for an interpreter or launcher program that cannot be found."""
    env = raw.get("env")
    env_path = env.get("PATH") if isinstance(env, dict) else None
    path = step_path(str(env_path) if env_path is not None else path, python)
    problems = []
    for key, program in (("interpreter", raw.get("interpreter")),
                         ("launcher", raw.get("launcher"))):
        words = normalize_program(program) if isinstance(program, (str, list)) else None
        if words and not find_program(words[0], root, path):
            problems.append(f"{where}: {key} program {words[0]!r} was not found "
                            f"(looked {_where_looked(words[0], root, path)})")
    return problems


def find_program(program: str, root: Path, path: str) -> bool:
    """Return whether a program name (looked up on path) or path (from root) can run."""
    if os.sep in program:
        return is_executable(root / program)
    return shutil.which(program, path=path) is not None


def _where_looked(program: str, root: Path, path: str) -> str:
    return f"for {root / program}" if os.sep in program else f"on the step's PATH, {path}"


def step_path(path: Optional[str], python: str) -> str:
    """Return a step's PATH: python's folder first, as activating its venv would, then path."""
    folder = os.path.dirname(python)
    path = os.defpath if path is None else path
    if not folder or path.split(os.pathsep, 1)[0] == folder:
        return path
    return folder + os.pathsep + path if path else folder


# ── Checks: the schedule ─────────────────────────────────────────────────

_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7))

_CRON_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}


def check_schedule(expression: str) -> List[str]:
    """Return the problems of a five-field cron expression ([] if crontab accepts it)."""
    control = next((char for char in expression if is_control(char)), None)
    if control is not None:  # a newline would end the crontab line: a cron job of its own
        return [f"must not hold {control_name(control)}, got {expression!r}"]
    parts = expression.split()
    if len(parts) != 5:
        return [f"must have five fields (minute hour day-of-month month day-of-week), "
                f"got {expression!r}"]
    problems = []
    for part, (what, low, high) in zip(parts, _CRON_FIELDS):
        for item in part.split(","):
            if not _is_cron_item(item.lower(), _CRON_NAMES.get(what, []), low, high):
                named = " names," if what in _CRON_NAMES else ""
                problems.append(f"has an invalid {what} {item!r} in {expression!r} "
                                f"(allowed: {low}-{high},{named} *, lists, ranges, /steps)")
    return problems


def _is_cron_item(item: str, names: List[str], low: int, high: int) -> bool:
    """Return whether one list item of a cron field is valid: 5, mon, 1-5, mon-fri/2, */15."""
    match = re.fullmatch(r"(\*|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?", item)
    if not match:
        return False
    whole, first, last, step = match.groups()
    if step is not None and (int(step) == 0 or whole != "*" and last is None):
        return False  # crontab wants * or a range before a step: 5/2 is refused
    for value in (first, last):
        if value is not None and not (value.isdigit() and low <= int(value) <= high
                                      or value in names):
            return False
    return True


def is_control(char: str) -> bool:
    """Return whether char is a control character (C0, DEL, C1, line or paragraph separator)."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029"


def control_name(char: str) -> str:
    """Return a control character in words: 'a newline', 'control character U+001B'."""
    named = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}
    return named.get(char, f"control character U+{ord(char):04X}")


# ── Checks: notifications ────────────────────────────────────────────────

NOTIFY_ON = ("failure", "always", "never")


def check_notify(raw: Any, metrics_file: Any = None) -> List[str]:
    """Return every problem with scheduler.notify and scheduler.metrics_file."""
    problems = []
    if metrics_file == "":
        problems.append("scheduler: metrics_file must be a file path or null, got ''")
    if raw is None:
        return problems
    if not isinstance(raw, dict):
        return problems + [f"scheduler: notify must be a mapping (ping, webhook, command, on, "
                           f"timeout), got {raw!r}"]
    where = "scheduler.notify"
    mapping = notify_mapping(raw)
    type_failed = wrong_types(where, mapping, Notify)
    problems += check_keys(where, mapping, Notify)
    problems += [problem for key, problem in type_failed.items()
                 if key not in ("ping", "webhook", "command")]  # said better below
    for key in ("ping", "webhook"):
        if mapping.get(key) is not None:
            problem = check_url(mapping[key])
            if problem:
                problems.append(f"{where}: {key} {problem}")
    command = mapping.get("command")
    if command is not None and (not isinstance(command, list)
                                or normalize_program(command) is None):
        shown = command if isinstance(command, (list, dict)) else mask_urls(str(command))
        problems.append(f"{where}: command must be a list of words (program and arguments), "
                        f"e.g. [notify-send, crude-link], got {shown!r}")
    on = mapping.get("on", "failure")
    if "on" not in type_failed and on not in NOTIFY_ON:
        problems.append(f"{where}: on must be one of {', '.join(NOTIFY_ON)}, got {on!r}")
    timeout = mapping.get("timeout")
    if "timeout" not in type_failed and isinstance(timeout, (int, float)) and timeout <= 0:
        problems.append(f"{where}: timeout must be seconds > 0, got {timeout!r}")
    return problems


def check_url(url: Any) -> Optional[str]:
    """Return why a notification URL is unusable, or None; the URL shows masked."""
    from urllib.parse import urlsplit  # only configs that notify pay for this import

    text = url if isinstance(url, str) else ""
    shown = mask_url(text) if text else url
    bad = f"must be an http:// or https:// URL with a host, got {shown!r}"
    if not text or any(is_control(char) or char.isspace() for char in text):
        return bad
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return f"is not a valid URL (look at its host and port), got {shown!r}"
    return None if parts.scheme.lower() in ("http", "https") and parts.hostname else bad


# ── Checks: options ──────────────────────────────────────────────────────

KEEP_KEYS = ("runs", "days")  # scheduler.keep's


def check_keep(raw: Any) -> List[str]:
    """Return every problem with scheduler.keep: null, or {runs: N >= 1, days: D > 0}."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return [f"scheduler: keep must be a mapping such as {{runs: 20, days: 90}}, got {raw!r}"]
    problems = [f"scheduler: keep has an unknown key '{key}'"
                f"{_did_you_mean(str(key), list(KEEP_KEYS), 'known keys')}"
                for key in sorted(set(map(str, raw)) - set(KEEP_KEYS))]
    runs, days = raw.get("runs"), raw.get("days")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        problems.append(f"scheduler: keep.runs must be a whole number of runs >= 1 or null, "
                        f"got {runs!r}")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                             or not math.isfinite(days) or days <= 0):
        problems.append(f"scheduler: keep.days must be a number of days > 0 or null, "
                        f"got {days!r}")
    return problems


def check_options(raw: Any) -> List[str]:
    """Return every problem with the raw `scheduler:` mapping."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return [f"scheduler: must be a mapping of options, got {raw!r}"]
    problems = check_keys("scheduler", raw, SchedulerOptions)
    problems += wrong_types("scheduler", raw, SchedulerOptions).values()
    on_failure = raw.get("on_failure", "ask")
    if isinstance(on_failure, str) and on_failure not in ON_FAILURE_CHOICES:
        problems.append(f"scheduler: on_failure must be one of {', '.join(ON_FAILURE_CHOICES)}, "
                        f"got {on_failure!r}")
    grace = raw.get("kill_grace")
    if isinstance(grace, (int, float)) and grace < 0:
        problems.append(f"scheduler: kill_grace must be >= 0 seconds, got {grace!r}")
    elif isinstance(grace, float) and not math.isfinite(grace):
        problems.append(f"scheduler: kill_grace must be a finite number of seconds, "
                        f"got {grace!r}")
    for key in ("only", "skip"):
        if raw.get(key) is not None and normalize_names(raw[key]) is None:
            problems.append(f"scheduler: {key} must be a step name or a list of names, "
                            f"got {raw[key]!r}")
    start = raw.get("from_step")
    if start is not None and (isinstance(start, bool) or not isinstance(start, (str, int))):
        problems.append(f"scheduler: from_step must be a step name or a 1-based index, "
                        f"got {start!r}")
    cron = raw.get("cron")
    if isinstance(cron, str) and cron not in CRON_ACTIONS:
        problems.append(f"scheduler: cron must be one of {', '.join(CRON_ACTIONS)}, got {cron!r}")
    schedule = raw.get("schedule")
    if isinstance(schedule, str):
        problems.extend(f"scheduler: schedule {problem}" for problem in check_schedule(schedule))
    elif schedule is None and cron in ("print", "install"):
        problems.append(f"scheduler: cron={cron} needs a schedule, e.g. "
                        "scheduler.schedule='0 10 * * 1' (Mondays at 10:00)")
    style = raw.get("argument_style")
    if isinstance(style, str) and style not in ARGUMENT_STYLES:
        problems.append(f"scheduler: argument_style must be one of {', '.join(ARGUMENT_STYLES)}, "
                        f"got {style!r}")
    if start is not None and raw.get("resume") is True:
        problems.append("scheduler: from_step and resume=true both say where to start; "
                        "set only one of them")
    return (problems + check_keep(raw.get("keep"))
            + check_notify(raw.get("notify"), raw.get("metrics_file")))


def report_path(report: str, root: Path) -> Path:
    """Return where the report goes: a relative path is relative to the project folder."""
    path = Path(report).expanduser()
    return path if path.is_absolute() else root / path


def check_history_options(raw: Any, root: Path) -> List[str]:
    """Return the problems of the history, history_format and report options."""
    if not isinstance(raw, dict):
        return []
    problems = []
    count = _whole(raw.get("history"))
    if count is not None and count < 0:
        problems.append(f"scheduler: history must be a number of runs >= 0 (0: every run), "
                        f"got {count!r}")
    fmt = raw.get("history_format", "table")
    if isinstance(fmt, str) and fmt not in HISTORY_FORMATS:
        problems.append(f"scheduler: history_format must be one of {', '.join(HISTORY_FORMATS)}, "
                        f"got {fmt!r}")
    elif fmt != "table" and raw.get("history") is None and raw.get("report") is None:
        problems.append(f"scheduler: history_format={fmt} is how the history prints: also set "
                        f"scheduler.history=N (the newest N runs)")
    report = raw.get("report")
    if isinstance(report, str):
        where = report_path(report, root)
        if not report.lower().endswith(".html"):
            problems.append(f"scheduler: report must be a file name ending in .html, "
                            f"got {report!r}")
        elif not where.parent.is_dir():
            problems.append(f"scheduler: report: the folder {where.parent} does not exist (a "
                            f"relative report path is relative to {root}); create it or write "
                            f"e.g. scheduler.report=outputs/report.html")
    return problems


# ── Checks: the whole config ─────────────────────────────────────────────

TOP_LEVEL_KEYS = ("steps", "scheduler", "default")  # and Hydra's own hydra: and defaults:


def check_top_level(keys: List[Any], defaults: Any) -> List[str]:
    """Return a problem for each top-level key crude-link does not know, and a bad default:."""
    known = list(TOP_LEVEL_KEYS)
    problems = [f"unknown top-level key '{key}'{_did_you_mean(str(key), known, 'top-level keys')}"
                for key in sorted(set(map(str, keys)) - set(known))]
    if defaults is not None and not isinstance(defaults, (list, dict)):
        problems.append(f"default: must be a list or a mapping of step templates, "
                        f"got {defaults!r}")
    return problems


def check_selection(names: List[str], options: Any) -> List[str]:
    """Return a problem for each step name or index in the selection that does not exist."""
    options = options if isinstance(options, dict) else {}
    problems = []
    known = set(names)
    for key in ("only", "skip"):
        for name in normalize_names(options.get(key)) or []:
            if name not in known:
                problems.append(f"scheduler: {key} names an unknown step '{name}'"
                                f"{_did_you_mean(name, names)}")
    start = options.get("from_step")
    if isinstance(start, int) and not isinstance(start, bool) and not 1 <= start <= len(names):
        problems.append(f"scheduler: from_step {start} is out of range: "
                        f"steps are numbered 1 to {len(names)}")
    elif isinstance(start, str) and start not in names:
        problems.append(f"scheduler: from_step names an unknown step '{start}'"
                        f"{_did_you_mean(start, names)}")
    return problems


def check_config(steps: Any, options: Any, defaults: Any, root: Path,
                 python: str = "", path: Optional[str] = None,
                 named: Optional[Tuple[List[str], List[str]]] = None) -> List[str]:
    """Return every problem with the resolved `steps` and `scheduler` sections.

    Programs are looked up on path as the steps get it: python's folder first.
    """
    if steps is None or steps == []:
        return ["steps: no steps to run: add a 'steps:' list with at least one step "
                "(each a mapping with a 'script')"]
    if not isinstance(steps, list):
        return [f"steps: must be a list of steps, got {type(steps).__name__}"]
    names, problems = named or derive_names(steps, defaults)  # named: derived by the caller
    problems = list(problems)
    option_problems = check_options(options) + check_history_options(options, root)
    options = options if isinstance(options, dict) else {}
    style = options.get("argument_style")
    style = style if style in ARGUMENT_STYLES else "omegaconf"
    for index, raw in enumerate(steps):
        problems.extend(check_step(index, raw, names[index], root, style, python, path))
    launcher = normalize_program(options.get("launcher"))
    if launcher and not find_program(launcher[0], root, step_path(path, python)):
        problems.append(f"scheduler: launcher program {launcher[0]!r} was not found "
                        f"(looked {_where_looked(launcher[0], root, step_path(path, python))})")
    return problems + option_problems + check_selection(names, options)


# ── Planning: commands and environment (pure) ────────────────────────────

def log_file_name(index: int, name: str) -> str:
    """Return the log file name of a step: NN-<name>.log, safe for any name."""
    return f"{index:02d}-{re.sub(r'[^A-Za-z0-9_.+-]', '_', name)}.log"


def build_command(step: Step, root: Path, python: str, default_launcher: Sequence[str] = (),
                  default_style: str = "omegaconf", step_dir: Optional[Path] = None
                  ) -> List[str]:
    """Return the argv of a step: [launcher...] [interpreter] <script> <args> <arguments...>.

    A hydra-style step also gets its own run and sweep folders, step_dir, when given.
    """
    style = step.argument_style or default_style
    words = render_arguments(step.arguments, style, step.argument_format)
    if style == "hydra" and step_dir is not None:
        words += hydra_folders(step.arguments, step_dir)
    return [*program_words(step, python, default_launcher), script_path(step, root),
            *map(plain_text, step.args), *words]


def program_words(step: Step, python: str, default_launcher: Sequence[str] = ()) -> List[str]:
    """Return what comes before a step's script: its launcher and interpreter."""
    interpreter = normalize_program(step.interpreter)
    if interpreter is None:
        interpreter = [python] if Path(step.script).suffix == ".py" else []
    launcher = default_launcher if step.launcher is None else step.launcher
    return [*map(plain_text, launcher), *interpreter]


def script_path(step: Step, root: Path) -> str:
    """Return the script's path as the step runs it: relative paths from the root."""
    script = Path(step.script)
    return str(script if script.is_absolute() else root / script)


def step_env(step: Step, base_env: Mapping[str, str], run_dir: Path, index: int,
             name: str, python: str) -> Dict[str, str]:
    """Return a step's environment: the caller's, the step's `env`, crude-link's own."""
    env = dict(base_env)
    env.update(extra_env(step))
    env.update({
        "PATH": step_path(env.get("PATH"), python),
        "PYTHONUNBUFFERED": "1",
        "CRUDE_LINK_RUN_DIR": str(run_dir),
        "CRUDE_LINK_STEP": name,
        "CRUDE_LINK_STEP_INDEX": str(index),
        "CRUDE_LINK_PYTHON": python,
    })
    return env


def extra_env(step: Step) -> Dict[str, str]:
    """Return the step's own `env` as strings (true/false for booleans)."""
    return {str(k): render_value(v) if isinstance(v, bool) else str(v)
            for k, v in step.env.items()}


def plan_steps(steps: List[Dict[str, Any]], names: List[str], root: Path, python: str,
               default_launcher: Sequence[str] = (), default_style: str = "omegaconf",
               run_dir: Optional[Path] = None) -> List[PlannedStep]:
    """Return the checked raw steps as planned steps, with their commands.

    With run_dir, a hydra-style step's own Hydra folders go to <run dir>/NN-<name>/.
    """
    planned = []
    for position, (raw, name) in enumerate(zip(steps, names), start=1):
        step = Step(**raw)
        log_name = log_file_name(position, name)
        step_dir = run_dir / Path(log_name).stem if run_dir is not None else None
        command = build_command(step, root, python, default_launcher, default_style, step_dir)
        planned.append(PlannedStep(position, name, step, command, log_name,
                                   len(program_words(step, python, default_launcher))))
    return planned


def mark_secrets(plan: List[PlannedStep], steps: List[Dict[str, Any]], written: Any
                 ) -> List[PlannedStep]:
    """Return the plan with each step knowing the run's secrets, from resolved and written steps.

    The whole run's, not only the step's own: a step may pass a secret on to another
    through an interpolation (${steps.0.env.TOKEN}), which names no oc.env.
    """
    texts = written if isinstance(written, list) and len(written) == len(steps) else []
    found = []
    for raw, text in zip(steps, texts or [None] * len(steps)):
        text = text if isinstance(text, dict) else {}
        found += find_secrets(raw.get("args") or [], text.get("args"))  # positional: no names
        for key in ("arguments", "env"):
            found += find_secrets(raw.get(key) or {}, text.get(key))
    secrets = tuple(sorted({secret for secret in found if secret}, key=lambda s: (-len(s), s)))
    return [replace(planned, secrets=secrets) for planned in plan]


# ── Planning: the run (pure) ─────────────────────────────────────────────

def select_steps(plan: List[PlannedStep], options: SchedulerOptions,
                 start: int = 1) -> List[PlannedStep]:
    """Return the steps the selection options keep, in order, from 1-based index start on."""
    listed = normalize_names(options.only)
    only = None if listed is None else set(listed)  # sets: a long pipeline stays linear
    skip = set(normalize_names(options.skip) or [])
    if isinstance(options.from_step, str):
        start = max(start, next(p.index for p in plan if p.name == options.from_step))
    elif isinstance(options.from_step, int):
        start = max(start, options.from_step)
    return [p for p in plan if p.index >= start and (only is None or p.name in only)
            and p.name not in skip]


def resume_point(plan: List[PlannedStep], previous: Mapping[str, Any]
                 ) -> Optional[int]:
    """Return the 1-based index to resume at after a previous run; None if it succeeded.

    That is the first step, matched by name, that failed, timed out, was interrupted,
    was still running or was not reached; steps the previous run skipped are passed over.
    """
    if previous.get("status") == SUCCEEDED:
        return None
    before = {entry.get("name"): entry.get("status") for entry in previous.get("steps", [])}
    for planned in plan:
        if before.get(planned.name) not in (SUCCEEDED, SKIPPED):
            return planned.index
    return None


@dataclass
class RunPlan:
    """What one run will do, decided before any I/O."""

    steps: List[PlannedStep]  # every step of the config (summary.json lists them all)
    selected: List[PlannedStep]  # what runs, in order
    reused: Dict[int, str]  # step index -> the run folder it already succeeded in (resume)
    output_dir: Path  # what ${hydra:runtime.output_dir} means for the steps
    resumes: Optional[Path] = None  # the earlier run folder a resume continues
    nothing_to_resume: bool = False  # that run succeeded: no step is to run


Previous = Tuple[Path, Mapping[str, Any]]  # an earlier run's folder and its summary.json


def steps_output_dir(run_dir: Path, previous: Optional[Previous]) -> Path:
    """Return what ${hydra:runtime.output_dir} means for the steps of a run.

    A resumed run continues the pipeline of the run it resumes: its steps read and write
    that run's files, so the folder stays the one the first run of the chain had.
    """
    if previous is None:
        return run_dir
    return Path(previous[1].get("output_dir") or previous[0])


def plan_run(steps: List[PlannedStep], options: SchedulerOptions, run_dir: Path,
             previous: Optional[Previous], outputs: Path) -> Tuple[Optional[RunPlan], List[str]]:
    """Return what a run will do, or the problems that prevent it (no run to resume).

    previous is the newest run found under outputs, when the options ask to resume.
    """
    if not options.resume:
        return RunPlan(steps, select_steps(steps, options), {}, run_dir), []
    if previous is None:
        return None, [f"scheduler.resume: there is no earlier run under {outputs} to resume"]
    folder, summary = previous
    output_dir = steps_output_dir(run_dir, previous)
    start = resume_point(steps, summary)
    if start is None:
        return RunPlan(steps, [], {}, output_dir, folder, nothing_to_resume=True), []
    selected = select_steps(steps, options, start)
    first = min((p.index for p in selected), default=len(steps) + 1)
    before = {entry.get("name"): entry for entry in summary.get("steps", [])}
    reused = {p.index: str(before[p.name].get("reused_from", folder)) for p in steps
              if p.index < first and before.get(p.name, {}).get("status") == SUCCEEDED}
    return RunPlan(steps, selected, reused, output_dir, folder), []


def load_config(cfg: DictConfig, root: Path, python: str, run_dir: Optional[Path] = None
                ) -> Tuple[List[PlannedStep], SchedulerOptions, List[str]]:
    """Return the plan and options of a composed config, or the problems found in it."""
    unresolved: List[str] = []
    steps = resolve_section(_section(cfg, "steps", unresolved), "steps", unresolved)
    options = resolve_section(_section(cfg, "scheduler", unresolved), "scheduler", unresolved)
    defaults = _section(cfg, "default", unresolved)
    if isinstance(defaults, (DictConfig, ListConfig)):
        defaults = OmegaConf.to_container(defaults)  # plain user data: left unresolved
    named = derive_names(steps, defaults) if isinstance(steps, list) else None
    names = named[0] if named else []
    problems = check_top_level(list(cfg), defaults)
    problems += check_config(steps, options, defaults, root, python, os.environ.get("PATH"),
                             named)
    problems += name_steps_in(unresolved, names)
    if problems:
        return [], SchedulerOptions(), problems
    chosen = SchedulerOptions(**(options or {}))
    plan = plan_steps(steps, names, root, python, chosen.launcher or (), chosen.argument_style,
                      run_dir)
    return mark_secrets(plan, steps, OmegaConf.to_container(cfg["steps"])), chosen, []


# ── Planning a sweep (pure) ──────────────────────────────────────────────

# Overrides that say how to run a sweep, not which job it holds: a resume matches without them.
SWEEP_CONTROL = ("scheduler.resume", "scheduler.fail_fast")


def job_key(overrides: Sequence[str]) -> Tuple[str, ...]:
    """Return what identifies a job of a sweep: its overrides, sorted, less sweep control."""
    return tuple(sorted(word for word in overrides
                        if word.lstrip("+~").split("=", 1)[0] not in SWEEP_CONTROL))


def expand_sweep(overrides: Sequence[str]) -> Optional[List[List[str]]]:
    """Return each job's overrides in job number order, as Hydra's basic sweeper makes them.

    None if Hydra's parser refuses them without a config (glob(), say).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:  # whatever Hydra raises, the sweep's plan is just unknown
        return None


def _show_jobs(keys: Any) -> str:
    return "; ".join(" ".join(key) or "(no overrides)" for key in sorted(keys)) or "(no jobs)"


def match_sweep_job(before: Mapping[str, Any], folder: Path,
                    jobs: Optional[Sequence[Sequence[str]]], own: Sequence[str]
                    ) -> Tuple[Optional[Mapping[str, Any]], List[str]]:
    """Return the earlier sweep's entry for this job, matched by overrides, or the problem.

    before is the summary.json of the earlier sweep in folder; jobs, the overrides of every
    job of the new sweep (None if unknown: then only this job, own, must match).
    """
    earlier = {job_key(entry.get("overrides") or []): entry for entry in before.get("jobs", [])}
    now = {job_key(job) for job in jobs} if jobs is not None else {job_key(own)}
    if now - set(earlier) or jobs is not None and set(earlier) - now:
        return None, [f"scheduler.resume: a resumed sweep must have the jobs of the newest "
                      f"sweep, {folder}; give the same sweep overrides\n"
                      f"    the newest sweep's jobs: {_show_jobs(earlier)}\n"
                      f"    this sweep's jobs:       {_show_jobs(now)}"]
    return earlier[job_key(own)], []


class ResumeFrom(NamedTuple):
    """Where a resumed job starts: what the single-run resume is given."""

    previous: Optional[Previous] = None  # the run (or the job) it resumes, with its summary
    reuse: Optional[str] = None  # that job succeeded in this folder: reuse it, run nothing
    fresh: bool = False  # the job never ran, or left nothing: run it from the start
    problems: Tuple[str, ...] = ()


def plan_job(steps: List[PlannedStep], options: SchedulerOptions, run_dir: Path,
             source: ResumeFrom, outputs: Path) -> Tuple[Optional[RunPlan], List[str]]:
    """Return what a run or one sweep job will do (resumed from source), or its problems."""
    if source.problems:
        return None, list(source.problems)
    if source.fresh:
        return plan_run(steps, replace(options, resume=False), run_dir, None, outputs)
    if source.reuse is None:
        return plan_run(steps, options, run_dir, source.previous, outputs)
    before = {entry.get("name"): entry
              for entry in (source.previous[1].get("steps", []) if source.previous else [])}
    reused = {p.index: str(before.get(p.name, {}).get("reused_from", source.reuse))
              for p in steps if before.get(p.name, {}).get("status", SUCCEEDED) == SUCCEEDED}
    return RunPlan(steps, [], reused, steps_output_dir(run_dir, source.previous),
                   Path(source.reuse)), []


# ── Stopping a step: when the scheduler dies ─────────────────────────────

# The watchdog's shell script: $1 is kill_grace in tenths of a second. It reads process group
# ids, one a line, until the pipe ends; if the last is not 0, the scheduler died while that
# group ran. It stops the group, and holds the run lock (an inherited descriptor) till the
# group is gone. A group of zombies (an init that never reaps) counts as gone.
_WATCHDOG_SCRIPT = r"""# crude-link's watchdog: stops the running step if the scheduler dies
trap '' HUP INT
ticks=$1 group_fd=$2
while read -r line; do :; done  # until the scheduler closes the pipe, or dies
group=0
read -r group <&"$group_fd"
[ "$group" = done ] && exit 0  # it ended on its own, and removed its files itself
shift 2
# What a run has only while it goes on (summary.json's spare); not waited for: a hung
# mount must not keep the step running.
[ "$#" -gt 0 ] && rm -f -- "$@" &
[ "$group" -gt 0 ] 2>/dev/null || exit 0
alive() {
    kill -0 -"$group" 2>/dev/null || return 1
    [ -r /proc/self/stat ] || return 0
    for stat in /proc/[0-9]*/stat; do
        { read -r line <"$stat"; } 2>/dev/null || continue
        set -- ${line##*) }
        [ "$3" = "$group" ] && [ "$1" != Z ] && [ "$1" != X ] && return 0
    done
    return 1
}
kill -TERM -"$group" 2>/dev/null
tick=0
while alive; do
    [ "$tick" -eq "$ticks" ] && kill -KILL -"$group" 2>/dev/null
    [ "$tick" -gt $((ticks + 50)) ] && exit 0
    tick=$((tick + 1))
    sleep 0.1 2>/dev/null || sleep 1
done
"""


def _unnamed_file() -> int:
    """Return the fd of a new empty file that has no name: nothing to clean up, ever."""
    memfd_create = getattr(os, "memfd_create", None)  # Linux: not even a folder is needed
    if memfd_create is not None:
        with contextlib.suppress(OSError):
            fd: int = memfd_create("crude-link-watchdog", 0)
            return fd
    fd, name = tempfile.mkstemp(prefix="crude-link-watchdog-")
    os.unlink(name)
    return fd


class Watchdog:
    """A small shell, started once per run, that stops the running step if the scheduler dies.

    kill -9 or the OOM killer leave no chance to stop a step: it would run on, and, the run
    lock gone, the next run would start a second copy of it in the same folders. The
    watchdog waits for the end of a pipe from the scheduler, which comes when the scheduler
    closes it or dies; then it reads, from an unnamed file they share, the process group of
    the step that runs (0 when none does; `done` when the scheduler ended on its own). It
    removes what the run had only while it went on (summary.json's spare); a step's group
    then gets SIGTERM, SIGKILL after kill_grace, and the run lock stays held until the group
    is gone. Naming the group costs a pwrite of a few bytes per step, start and end, that
    wakes no one: a write to the pipe each time made the shell run, 0.2-0.4 ms a step on a
    busy machine.
    """

    def __init__(self, kill_grace: float, lock: Optional[BinaryIO],
                 leftovers: Sequence[Path] = ()) -> None:
        """leftovers: files the run removes when it ends, for the watchdog to remove if it
        cannot."""
        self.fd: Optional[int] = None  # the pipe's end
        self.group_fd: Optional[int] = None  # the shared file naming the running group
        self.proc: Optional[subprocess.Popen[bytes]] = None
        read, write = os.pipe()
        group_fd: Optional[int] = None
        try:
            group_fd = _unnamed_file()
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG_SCRIPT, "crude-link-watchdog",
                 str(math.ceil(kill_grace * 10)), str(group_fd), *map(str, leftovers)],
                stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                pass_fds=(group_fd, *((lock.fileno(),) if lock else ())),
                start_new_session=True)
            self.fd, self.group_fd = write, group_fd
        except OSError as error:  # no /bin/sh, no file to share: run without, as before
            log.warning("no watchdog for this run (%s): a step would outlive a scheduler "
                        "killed outright", error)
            os.close(write)
            if group_fd is not None:
                os.close(group_fd)
        finally:
            os.close(read)

    def watch(self, group: int) -> None:
        """Name the running step's process group (0: none runs)."""
        self._tell(b"%d\n" % group)

    def _tell(self, line: bytes) -> None:
        if self.group_fd is not None:
            try:  # the shell reads up to the newline: what follows it from before is no matter
                os.pwrite(self.group_fd, line, 0)
            except OSError as error:  # it would act on a group that is no more: end it
                log.warning("watchdog ended (%s): a step would outlive a scheduler killed "
                            "outright", error)
                fd, self.group_fd = self.group_fd, None
                os.close(fd)
                if self.proc is not None:
                    self.proc.kill()
                self.close()

    def close(self) -> None:
        """End the watchdog, without it stopping anything; wait for it (it holds the lock)."""
        self._tell(b"done\n")
        for fd in (self.fd, self.group_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.group_fd = None
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


# ── Stopping a step: signals ─────────────────────────────────────────────
#
# Which handler is live when (SIGUSR2 only where submitit installed one: a Slurm job):
#
#   while                        SIGINT / SIGTERM / SIGHUP             handler
#   Hydra composes, checks, lock Python's defaults (Ctrl-C raises)     -
#   the pipeline runs (steps,    recorded, passed on to the step's     StopRequest.handle,
#     retry delays)              group; SIGKILL after kill_grace;      set by run_guarded
#                                SIGUSR2 acts as SIGTERM
#   the dialog waits for input   raise Interrupted: the run aborts     _signals_raise
#   a multirun's launching       SIGTERM, SIGHUP raise SweepStopped,   run_multirun
#     process                    Ctrl-C KeyboardInterrupt: the sweep's
#                                jobs are cancelled, then all three
#                                are ignored until the report is out
#
# The exit code is 128 + the signal (SIGUSR2 counts as SIGTERM), decided in run_pipeline for
# a run and in run_multirun for a sweep; _main returns it for both.

class StopRequest:
    """What SIGINT/SIGTERM/SIGHUP asked for, and the process group to pass them on to."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.why = ""  # the signal that arrived, in words, for the run's last message
        self.at = 0.0
        self.group: Optional[int] = None
        self.forwarded_to: Optional[int] = None
        self.watchdog: Optional[Watchdog] = None  # told of each step's group

    def handle(self, signum: int, frame: Any) -> None:
        """Record the signal and pass it on to the running step at once."""
        # In a Slurm job step (a submitit job, `srun python scheduler.py`), Slurm's signals
        # (scancel, Ctrl-C to srun) reach every process of the step, the running step
        # included: SIGINT/SIGTERM are not passed on a second time; kill_grace still holds.
        from_slurm = ("SLURM_STEP_ID" in os.environ and signum != signal.SIGUSR2
                      and not _stdin_is_terminal())  # `srun --pty`: the terminal's Ctrl-C
        why = signal.Signals(signum).name
        if signum == signal.SIGUSR2:  # Slurm's time limit is near: stop as for SIGTERM
            signum, why = signal.SIGTERM, "SIGUSR2 (the Slurm job's time limit is near)"
        if self.signum is None:
            self.signum, self.at, self.why = signum, time.monotonic(), why
        if self.group is not None:
            if not from_slurm:
                signal_group(self.group, signum)
            self.forwarded_to = self.group


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False


def signal_group(group: int, signum: int) -> None:
    """Send a signal to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def process_is_alive(pid: int) -> bool:
    """Return whether a process runs (a zombie, dead but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no procfs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def group_is_alive(group: int) -> bool:
    """Return whether a process group still has a process that is not a zombie."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False  # the usual answer, in one system call
    except PermissionError:
        return True
    # Zombies count for kill(); an init that never reaps (some containers) keeps them.
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True  # no procfs: believe kill()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
            return True
    return False


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) arrived while the scheduler waited for the user."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _signals_raise:
    """Inside the dialog, Ctrl-C, SIGTERM and SIGHUP end the wait at once (as exceptions)."""

    def __enter__(self) -> None:
        def raise_interrupted(signum: int, frame: Any) -> None:
            raise Interrupted(signum)

        self.saved = {sig: signal.signal(sig, raise_interrupted)
                      for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


class SweepStopped(BaseException):
    """SIGTERM or SIGHUP reached the launching process of a multirun (or its watch gave up)."""


# ── Stopping a step: on Slurm ────────────────────────────────────────────

class SlurmJob:
    """The Slurm job (or job step) an `srun` step runs as, found by srun's pid.

    srun does not pass signals on as they are: SIGTERM makes it SIGKILL the job step (exit
    137) and a single SIGINT only prints its status. `scancel -s` delivers the signal itself
    to the step's tasks, so they can clean up, and srun then exits as they do (130, 143).
    srun makes a job of its own, whose AllocSID in squeue is srun's session: the step's pid.
    Inside an allocation (salloc, sbatch) it makes a job step, whose SrunHost:Pid is srun's.
    """

    def __init__(self, srun_pid: int) -> None:
        self.sid = str(srun_pid)
        self.job: Optional[str] = None  # "12" (srun's own job) or "12.3" (a job step)

    def find(self) -> Optional[str]:
        """Return the job's state (PENDING, RUNNING...) and remember its id; None if unseen."""
        allocation = os.environ.get("SLURM_JOB_ID")
        if allocation:  # inside an allocation, srun makes a step of it
            host = socket.gethostname().split(".")[0]
            steps = _slurm(["scontrol", "--oneliner", "show", "step"]) or ""
            for line in steps.splitlines():
                fields = dict(re.findall(r"(\S+?)=(\S*)", line))
                if fields.get("SrunHost:Pid") == f"{host}:{self.sid}" and "StepId" in fields:
                    self.job = fields["StepId"]
                    return fields.get("State", "RUNNING")
        for job, sid, state in _squeue(["JobID", "AllocSID", "State"]) or []:
            if sid == self.sid and job != allocation:  # never the job crude-link runs in
                self.job = job
                return state
        return None

    def send(self, signum: int) -> None:
        """Deliver signum to the job's tasks (a pending job is cancelled outright)."""
        state = self.find()
        if state is None:  # not (or no longer) in Slurm: srun is all there is to stop
            signal_group(int(self.sid), signal.SIGKILL if signum == signal.SIGKILL
                         else signal.SIGTERM)  # srun ends the step on SIGTERM, not SIGINT
            return
        if state == "PENDING":
            self.scancel()
        elif signum == signal.SIGKILL:
            # KILL to a whole job is a plain cancel (SIGTERM, then KillWait): aim at srun's
            # job step, whose tasks then die at once.
            self.scancel("--signal", "KILL", step="" if "." in (self.job or "") else ".0")
            signal_group(int(self.sid), signal.SIGKILL)
        else:
            self.scancel("--signal", signal.Signals(signum).name[3:])

    def scancel(self, *options: str, step: str = "") -> None:
        """Run scancel on the job (no options: cancel it); say nothing if it is gone."""
        if self.job is not None:
            _scancel(self.job + step, *options)


def _slurm(argv: List[str]) -> Optional[str]:
    """Run a Slurm command; return what it printed, or None if it is missing or failed."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=SLURM_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    return None if done.returncode else done.stdout


def _squeue(fields: Sequence[str]) -> Optional[List[List[str]]]:
    """Return squeue's rows of this user's jobs, one stripped value per field; None: failed."""
    listing = _slurm(["squeue", "--noheader", "--user", str(os.getuid()),
                      "--Format", ",".join(f"{name}:|" for name in fields)])
    if listing is None:
        return None
    return [[value.strip() for value in (line.split("|") + [""] * len(fields))[:len(fields)]]
            for line in listing.splitlines()]


def _scancel(job: str, *options: str) -> None:
    """Run scancel on a job, job step or array tasks; say nothing if it is gone."""
    _slurm(["scancel", *options, job])


def step_signaller(command: Sequence[str], pid: int) -> Tuple[Callable[[int], None],
                                                               Optional[SlurmJob]]:
    """Return how to signal a started step, and its Slurm job when it runs through srun."""
    if os.path.basename(command[0]) == "srun":
        job = SlurmJob(pid)
        return job.send, job
    return lambda signum: signal_group(pid, signum), None


# ── Stopping a step: the schedule ────────────────────────────────────────

@dataclass
class StopPolicy:
    """When a step is to be stopped: its timeout, the grace before SIGKILL, stop signals."""

    timeout: Optional[float]
    kill_grace: float
    stop: StopRequest


class StopSchedule:
    """When a running step is due SIGTERM and SIGKILL, and what it has been sent.

    SIGTERM is due when the timeout passes, when a stop signal arrives (the handler has
    passed it on already, unless the step's group was not known yet), or when the step's
    main process exits leaving processes in its group; SIGKILL kill_grace after the first of
    these, once. The copy loop asks only what is due (act) and how long to wait (wait).
    """

    def __init__(self, policy: StopPolicy, send: Callable[[int], None], pid: int,
                 started: float) -> None:
        self.policy, self.send, self.pid = policy, send, pid
        self.deadline = started + policy.timeout if policy.timeout else None
        self.terminated_at: Optional[float] = None  # SIGTERM (or the stop signal) went then
        self.killed_at: Optional[float] = None
        self.timed_out = False

    def due(self) -> Optional[float]:
        """Return when the next signal is due (None: nothing is scheduled)."""
        if self.killed_at is not None:
            return None
        if self.terminated_at is not None:
            return self.terminated_at + self.policy.kill_grace
        return self.deadline

    def is_pending(self, now: float) -> bool:
        """Return whether a signal is due by now, or a stop signal has arrived."""
        due = self.due()
        return self.policy.stop.signum is not None or due is not None and now >= due

    def act(self, now: float) -> None:
        """Send what is due by now to a step whose processes still run."""
        if self.killed_at is not None:
            return
        if self.deadline is not None and now >= self.deadline and not self.timed_out:
            self.timed_out = True  # the timeout covers what the step left too
            self.terminate(now)
        stop = self.policy.stop
        if stop.signum is not None and self.terminated_at is None:
            if stop.forwarded_to != self.pid:  # arrived before the group was known
                self.send(stop.signum)
            self.terminated_at = stop.at
        if self.terminated_at is not None and now >= self.terminated_at + self.policy.kill_grace:
            self.send(signal.SIGKILL)
            self.killed_at = now

    def terminate(self, now: float) -> None:
        """Send SIGTERM now; SIGKILL follows kill_grace after the first SIGTERM."""
        self.send(signal.SIGTERM)
        if self.terminated_at is None:
            self.terminated_at = now

    def wait(self, now: float) -> float:
        """Return how long the copy loop may wait for output before it must act."""
        due = self.due()
        return POLL_INTERVAL if due is None else min(POLL_INTERVAL, max(0.0, due - now))

    def given_up(self, now: float) -> bool:
        """Return whether a group SIGKILLed a while ago is no longer waited for (state D)."""
        return self.killed_at is not None and now >= self.killed_at + 4 * POLL_INTERVAL


# ── Running a step: outcome, output, reaping ─────────────────────────────

def write_all(fd: int, data: bytes) -> None:
    """Write every byte of data to fd (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass
class Attempt:
    exit_code: int
    timed_out: bool
    duration: float
    tail: bytes
    # What the step's processes cost, from os.wait4 (None: it never started).
    cpu_user_s: Optional[float] = None
    cpu_system_s: Optional[float] = None
    max_rss_kb: Optional[int] = None
    rss_floor_kb: Optional[int] = None  # the scheduler's own peak then: see add_attempt_cost
    killed: bool = False  # still running kill_grace after SIGTERM: SIGKILL was sent


class Terminal:
    """What the user sees: fd 1, or with `quiet` a spool file shown only if something fails."""

    def __init__(self, fd: Optional[int], quiet: bool = False) -> None:
        self.fd = fd
        self.spool: Optional[BinaryIO] = None
        if quiet:  # a file, not memory: a quiet run may hold back gigabytes of step output
            import tempfile  # only quiet runs pay for this import

            self.spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in reveal()/close()

    def write(self, chunk: bytes) -> None:
        if self.spool is not None:
            self.spool.write(chunk)
            return
        if self.fd is None:
            return
        try:
            write_all(self.fd, chunk)
        except OSError:  # e.g. `| head` closed the pipe: keep running, keep logging
            self.fd = None

    def close(self) -> None:
        """Drop what a quiet run held back (nothing failed, so nothing is shown)."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def reveal(self) -> None:
        """Show everything held back so far, and from now on write straight through."""
        spool, self.spool = self.spool, None
        if spool is None:
            return
        spool.seek(0)
        while chunk := spool.read(CHUNK_SIZE):
            self.write(chunk)
        spool.close()


@dataclass
class Sinks:
    """Where an attempt's output goes, and how its start is announced."""

    log_fd: int
    terminal: Terminal
    announce: Callable[[], None]  # called as soon as the command has started (or failed to)


def _reap(proc: "subprocess.Popen[bytes]", timeout: Optional[float], cost: Dict[str, Any]
          ) -> bool:
    """Return whether proc has exited, waiting up to timeout seconds for it (None: until then).

    It is reaped with os.wait4 instead of Popen.wait, which would throw away what the kernel
    says it cost: cost gets its CPU times and peak RSS (with those of the children it waited
    for). That is one system call either way, so a step costs no more to run.
    """
    if proc.returncode is not None:
        return True
    end = time.monotonic() + (timeout or 0.0)
    delay = 0.0005
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, 0 if timeout is None else os.WNOHANG)
        except ChildProcessError:  # reaped already (SIGCHLD ignored, say): cost unknown
            proc.wait()
            return True
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            cost.update(cpu_user_s=round(usage.ru_utime, 3), cpu_system_s=round(usage.ru_stime, 3),
                        max_rss_kb=usage.ru_maxrss // (1024 if sys.platform == "darwin" else 1))
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(2 * delay, 0.05)


# ── Running a step: the attempt (I/O) ────────────────────────────────────

def run_attempt(command: List[str], cwd: Path, env: Dict[str, str], sinks: Sinks,
                policy: StopPolicy) -> Attempt:
    """Run a command once in its own process group, copying its output; return the outcome.

    sinks.announce() overlaps the command's own start-up; its output is copied after it.
    """
    started = time.monotonic()
    log_fd, terminal, stop = sinks.log_fd, sinks.terminal, policy.stop
    tail = b""
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # see add_attempt_cost
    # The step's stdout and stderr, both: a pipe of its own, not Popen's, which would wrap
    # its end in a file object (three system calls) that this function does not use.
    out, into = os.pipe()
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=into, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as error:
        os.close(out)
        sinks.announce()
        message = f"crude-link: cannot start {command[0]!r}: {error.strerror}\n".encode()
        write_all(log_fd, message)
        terminal.write(message)
        code = EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_CANNOT_EXECUTE
        return Attempt(code, False, time.monotonic() - started, message)
    except BaseException:
        os.close(out)
        raise
    finally:
        os.close(into)  # the step has its copies: the output ends when they are closed
    send, slurm = step_signaller(command, proc.pid)
    schedule = StopSchedule(policy, send, proc.pid, started)
    # The signal handler passes a stop on at once to a plain step; an srun step needs
    # squeue and scancel, which the loop below runs instead (within POLL_INTERVAL).
    stop.group = None if slurm else proc.pid
    if stop.watchdog is not None:
        stop.watchdog.watch(proc.pid)
    with contextlib.suppress(OSError):  # a larger pipe: fewer, fuller reads (Linux only)
        fcntl.fcntl(out, F_SETPIPE_SZ, PIPE_SIZE)
    os.set_blocking(out, False)  # read while output flows; select only when the pipe is empty
    exit_fd = _open_pidfd(proc.pid)  # readable once the step exits: no polling for it
    watch = [out] if exit_fd is None else [out, exit_fd]
    look_at = started + POLL_INTERVAL  # look at the step's exit at least this often
    exited = False
    left = False  # processes of the step's group outlive its main process
    cost: Dict[str, Any] = {"rss_floor_kb": floor // (1024 if sys.platform == "darwin" else 1)}
    try:
        sinks.announce()
        while True:
            if out in watch:
                try:
                    chunk: Optional[bytes] = os.read(out, CHUNK_SIZE)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    write_all(log_fd, chunk)
                    terminal.write(chunk)
                    tail = chunk[-TAIL_BYTES:] if len(chunk) >= TAIL_BYTES else (
                        tail + chunk)[-TAIL_BYTES:]
                    now = time.monotonic()
                    if not schedule.is_pending(now) and now < look_at:
                        continue
                elif chunk == b"":
                    watch.remove(out)
            now = time.monotonic()
            if not exited or left:
                schedule.act(now)
            wait = schedule.wait(now)
            ready = select.select(watch, [], [], wait)[0] if watch else []
            if not exited and (out not in ready or exit_fd in ready or now >= look_at):
                look_at = now + POLL_INTERVAL
                if _reap(proc, 0.0, cost):
                    exited = True
                    if exit_fd in watch:
                        watch.remove(exit_fd)
                    # What the step started in its group (a forgotten `&`, a data loader's
                    # worker) is stopped too, as at a timeout: the run goes on without it.
                    schedule.send = functools.partial(signal_group, proc.pid)
                    left = group_is_alive(proc.pid)
                    if left and schedule.terminated_at is None:
                        schedule.terminate(now)
            elif left and (out not in ready or now >= look_at):
                look_at = now + POLL_INTERVAL
                left = group_is_alive(proc.pid) and not schedule.given_up(now)
            if out in ready:
                continue  # output (or its end) to read
            # Done when the step's group is gone and its output ended, or when a process
            # outside the group (a daemon started with setsid) holds the pipe but is silent.
            if exited and not left and (out not in watch or not ready):
                break
            if not watch and exited:  # output closed; what the step left has yet to go
                time.sleep(wait)
            elif not watch:  # output closed and no pidfd: wait for the exit the slow way
                _reap(proc, wait, cost)
    except BaseException:  # as subprocess.run does: never leave the step behind
        schedule.send(signal.SIGKILL)
        if slurm is not None:
            slurm.scancel()
        raise
    finally:
        stop.group = None
        os.close(out)
        if exit_fd is not None:
            os.close(exit_fd)
        _reap(proc, None, cost)
        if stop.watchdog is not None:
            stop.watchdog.watch(0)
        if slurm is not None and (schedule.timed_out or stop.signum is not None):
            slurm.scancel()  # whatever srun did on its way out: leave no job in squeue
    code = proc.returncode
    code = EXIT_SIGNAL_BASE - code if code < 0 else code
    if schedule.timed_out:
        code = EXIT_TIMEOUT
    return Attempt(code, schedule.timed_out, time.monotonic() - started, tail,
                   killed=schedule.killed_at is not None, **cost)


def _open_pidfd(pid: int) -> Optional[int]:
    """Return a file descriptor that becomes readable when pid exits (Linux), else None."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,no-any-return,unused-ignore]
    except (AttributeError, OSError):
        return None


def sleep_unless_stopped(seconds: float, stop: StopRequest) -> None:
    """Sleep for seconds, waking early when a stop signal arrives."""
    end = time.monotonic() + seconds
    while stop.signum is None and time.monotonic() < end:
        time.sleep(min(POLL_INTERVAL, max(0.0, end - time.monotonic())))


# ── Failure dialog (I/O) ─────────────────────────────────────────────────

def print_newline() -> None:
    """End the line a prompt left open; say nothing if the terminal is gone (SIGHUP)."""
    with contextlib.suppress(OSError):
        print(flush=True)


def parse_choice(text: str) -> Optional[str]:
    """Return the dialog choice a reply means ("R", "retry" → "retry"); None if unclear."""
    word = text.strip().lower()
    return CHOICES.get(word) or CHOICE_WORDS.get(word)


def ask_what_next(ask: Callable[[str], str] = input) -> str:
    """Ask until the reply is a choice; end of input means abort (EOFError is caught)."""
    prompt = (colored("What now? [r] retry step · [p] rerun pipeline · [s] skip step · [a] abort",
                      "yellow", attrs=["bold"]) + "? ")
    while True:
        try:
            reply = ask(prompt)
        except EOFError:
            print_newline()
            print("end of input at the prompt: aborting", flush=True)
            return "abort"
        choice = parse_choice(reply)
        if choice:
            return choice
        print(f"Please answer r, p, s or a (got {reply.strip()!r}).", flush=True)


def signal_name(code: int) -> Optional[str]:
    """Return 'SIGKILL' for exit code 137 (128+N), None for plain exit codes."""
    if code <= EXIT_SIGNAL_BASE or code == EXIT_TIMEOUT:
        return None
    try:
        return signal.Signals(code - EXIT_SIGNAL_BASE).name
    except ValueError:
        return None


def describe_exit(attempt: Attempt, timeout: Optional[float]) -> str:
    """Return how an attempt ended, in words: 'exit code 3', 'killed by SIGKILL'."""
    if attempt.timed_out:
        return f"timed out after {timeout:g}s (exit code {EXIT_TIMEOUT})"
    name = signal_name(attempt.exit_code)
    if name:
        return f"killed by {name} (exit code {attempt.exit_code})"
    return f"exit code {attempt.exit_code}"


def last_lines(tail: bytes, count: int = TAIL_LINES) -> List[str]:
    """Return the last lines of output as text, as a terminal would show `\\r` updates."""
    text = tail.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = [line.rsplit("\r", 1)[-1] for line in text.rstrip("\r\n").split("\n")]
    return [line for line in lines if line.strip()][-count:]


# ── Cost and summary.md (pure) ───────────────────────────────────────────
# What a step cost, from its attempts, and summary.md: the final table and the failure,
# from a summary. Nothing here reads or writes a file.

SUMMARY_MD = "summary.md"  # beside summary.json, written when a run ends
ENDED_BADLY = (FAILED, TIMED_OUT, INTERRUPTED)


def format_duration(seconds: Optional[float]) -> str:
    """Return a duration as '0.42s', '3m05s' or '-' when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def format_memory(kb: Any) -> str:
    """Return a peak RSS given in KiB as '840 KiB', '12.3 MiB', '2.1 GiB'; '-' when unknown."""
    value = _number(kb)
    if value is None:
        return "-"
    if value < 1024:
        return f"{value:.0f} KiB"
    if value < 1024 ** 2:
        return f"{value / 1024:.1f} MiB"
    return f"{value / 1024 ** 2:.1f} GiB"


COST_KEYS = ("cpu_user_s", "cpu_system_s", "max_rss_kb", "rss_floor_kb")


def add_attempt_cost(entry: Dict[str, Any], attempt: Attempt) -> None:
    """Append an attempt's cost to its step's summary entry: one list per key, one per attempt.

    Lists, not a mapping per attempt: every version of summary.json holds every step, so
    its size is what a step costs. A step starts as a copy of the scheduler (vfork), and Linux
    counts that in its max RSS: a step's peak never shows below the scheduler's own at its
    start (rss_floor_kb, ~40 MB); a max_rss_kb no more than that says only "at most this".
    """
    for key in COST_KEYS:
        entry.setdefault(key, []).append(getattr(attempt, key))


def step_cost(raw: Mapping[str, Any]) -> Dict[str, Any]:
    """Return a recorded step's cost over its attempts: CPU times summed, the largest peak."""
    def each(key: str) -> List[Any]:  # one value per attempt (a single number is one)
        value = raw.get(key)
        return value if isinstance(value, list) else [value]

    user = [v for v in each("cpu_user_s") if _number(v) is not None]
    system = [v for v in each("cpu_system_s") if _number(v) is not None]
    peaks, floors = each("max_rss_kb"), each("rss_floor_kb")
    pairs = [(peak, floor) for peak, floor in zip(peaks, floors + [None] * len(peaks))
             if _whole(peak) is not None]
    top = max(pairs, key=lambda pair: pair[0], default=(None, None))
    return {"cpu_user_s": round(sum(user), 3) if user else None,
            "cpu_system_s": round(sum(system), 3) if system else None,
            "max_rss_kb": top[0], "rss_floor_kb": _whole(top[1])}


def format_peak(step: Mapping[str, Any]) -> str:
    """Return a step's peak memory: '212.4 MiB', or '≤38.6 MiB' when only a bound is known."""
    cost = step_cost(step)
    kb, floor = cost["max_rss_kb"], cost["rss_floor_kb"]
    shown = format_memory(kb)
    return f"≤{shown}" if kb is not None and floor is not None and kb <= floor else shown


def describe_step_end(step: Mapping[str, Any]) -> str:
    """Return how a recorded step ended: 'exit code 3', 'timed out (exit code 124)'."""
    code = step.get("exit_code")
    if step.get("status") == TIMED_OUT:
        return f"timed out (exit code {code})"
    number = _whole(code)
    name = signal_name(number) if number is not None else None
    return f"killed by {name} (exit code {code})" if name else f"exit code {code}"


def seconds_between(started: Any, finished: Any) -> Optional[float]:
    """Return the seconds from one ISO 8601 time to another; None if either is unknown."""
    try:
        delta = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    except (TypeError, ValueError):
        return None
    return round(delta.total_seconds(), 3)


def _md_cell(text: Any) -> str:
    """Return text fit for one cell of a Markdown table: pipes escaped, on one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def summary_markdown(summary: Mapping[str, Any], title: str,
                     tails: Mapping[int, Sequence[str]]) -> str:
    """Return summary.md: the final table and each failure, with its last lines of output."""
    status, code = summary.get("status"), summary.get("exit_code")
    took = seconds_between(summary.get("started"), summary.get("finished"))
    lines = [f"# crude-link run {title}: {status} (exit code {code})", "",
             f"Started {summary.get('started')}, finished {summary.get('finished')}, "
             f"took {format_duration(took)}.",
             "", "| # | step | status | exit code | attempts | duration | CPU user | CPU system "
             "| peak memory | log |", "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: "
             "| ---: | --- |"]
    recorded = summary.get("steps")
    steps = [step for step in recorded if isinstance(step, dict)] if isinstance(
        recorded, list) else []
    for step in steps:
        shown = f"{step.get('status')} (reused)" if step.get("reused_from") else step.get("status")
        log_cell = f"[{step.get('log')}]({step.get('log')})" if step.get("attempts") else "-"
        cost = step_cost(step)
        cells = [step.get("index"), step.get("name"), shown,
                 "-" if step.get("exit_code") is None else step.get("exit_code"),
                 step.get("attempts"), format_duration(_number(step.get("duration_s"))),
                 format_duration(cost["cpu_user_s"]), format_duration(cost["cpu_system_s"]),
                 format_peak(step), log_cell]
        lines.append("| " + " | ".join(_md_cell(cell) for cell in cells) + " |")
    failed = [step for step in steps if step.get("status") in ENDED_BADLY]
    if failed:
        lines += ["", "## Failure" if len(failed) == 1 else "## Failures"]
    for step in failed:
        lines += ["", f"Step {step.get('index')} `{step.get('name')}`: "
                      f"{describe_step_end(step)} after "
                      f"{format_duration(_number(step.get('duration_s')))}; "
                      f"log: [{step.get('log')}]({step.get('log')})"]
        index = _whole(step.get("index"))
        tail = list(tails.get(index, ())) if index is not None else []
        if tail:  # a fence longer than any run of backticks in the output
            fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", "\n".join(tail)))])
            lines += ["", "Its last lines of output:", "", f"{fence}text", *tail, fence]
    return "\n".join(lines) + "\n"


# ── Run record: writing files ────────────────────────────────────────────

def now_iso() -> str:
    """Return the local time as an ISO 8601 string with its UTC offset."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file, so readers never see half a file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes, *more: bytes) -> None:
    """Write data (and more, after it) to path through a temporary file, so readers never
    see half a file.

    A new file every time: a reader that still has the replaced one open keeps reading one
    whole version, however many rewrites follow. The parts go out in one writev: a big
    file is not copied once more to join them.
    """
    parts = [data, *more]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            # Blocks allocated up front: ext4 then has no delayed allocation to flush when the
            # rename replaces the old file (auto_da_alloc), a wait that grows on a busy disk.
            with contextlib.suppress(AttributeError, OSError):
                os.posix_fallocate(fd, 0, sum(map(len, parts)))  # type: ignore[attr-defined,unused-ignore]
            _write_parts(fd, parts)
        finally:
            os.close(fd)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        with contextlib.suppress(OSError):
            tmp.unlink()
        _overwrite_in_place(path, b"".join(parts), error)
        return
    os.replace(tmp, path)


IOV_MAX = 1024  # what one writev takes at most, on Linux and macOS alike


def _write_parts(fd: int, parts: List[bytes], offset: Optional[int] = None) -> None:
    """Write every byte of parts to fd, in order (os.writev may write less): where fd's
    position is, or at offset."""
    views = [memoryview(part) for part in parts if part]
    first = 0  # the first view not yet written whole
    while first < len(views):
        if offset is None:
            done = os.writev(fd, views[first:first + IOV_MAX])
        else:
            done = os.pwritev(fd, views[first:first + IOV_MAX], offset)
            offset += done
        while first < len(views) and done >= len(views[first]):
            done -= len(views[first])
            first += 1
        if done:
            views[first] = views[first][done:]


def _overwrite_in_place(path: Path, data: bytes, full: OSError) -> None:
    """Write data over a file's old blocks, on a full disk; raise full if they are too few.

    Not atomic, but the only write left there, and without it a run's last state would be
    lost: summary.json would say `running` for good.
    """
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        raise full from None
    try:
        if os.fstat(fd).st_blocks * 512 < len(data):
            raise full
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _read_text(path: Path) -> str:
    """Return a file's text, or '' if it cannot be read (gone, say)."""
    try:
        return path.read_text("utf-8", errors="replace")
    except OSError:
        return ""


def read_json(path: Path) -> Dict[str, Any]:
    """Return a JSON object from a file, or {} if it is missing, unreadable or no object."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    return {}


def read_overrides(folder: Path) -> List[str]:
    """Return the overrides a run was given, from Hydra's .hydra/overrides.yaml ([] if none).

    A file that is no YAML list (cut off, say) still gives its `- ` lines.
    """
    text = _read_text(folder / ".hydra" / "overrides.yaml")
    if not text.strip():
        return []
    try:
        words = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError:
        words = re.findall(r"^- (.*)$", text, re.MULTILINE)
    return [str(word) for word in words] if isinstance(words, list) else []


# ── Run record: summary.json ─────────────────────────────────────────────

_STEP_SEPARATOR = b",\n  "
_SUMMARY_END = b"\n ]\n}\n"
SLOT_ROOM = 256  # bytes a step line may grow by in its slot (~170 on its first attempt)
_SLOT_GAP = _STEP_SEPARATOR[1:]  # between two slots: the comma is the slot's own


class SlotFile:
    """summary.json during a run: two files taking turns, each step line in a slot of its own.

    Every version holds every step, so writing each one whole costs O(steps) bytes (3.5 MB
    at 10,000 steps: 1 ms to write and free, between two steps) and a run O(steps²). Here the
    layout stays fixed between full writes: a line has SLOT_ROOM spaces after it to grow in,
    so a version is made by writing its changed lines over their slots in the spare (the
    file that was summary.json one version ago), which then takes summary.json's name.

    The spare is written only under a write lease, which Linux grants only when nothing else
    has the file open: a reader who opened summary.json keeps one whole version, however
    many versions follow. Where that is not so, the spare is written anew, whole. Where
    there are no leases, or another host may read the folder, summary.json is written whole
    each time (SlotFile.open says None, or the first spare's lease fails).
    """

    def __init__(self, path: Path, head: bytes, lines: List[bytes], fd: int) -> None:
        self.path, self.head, self.fd = path, head, fd
        # The spare's name, and summary.json's second name while the two trade names.
        self.spare_path, self.old_path, *_ = self.leftovers(path.parent)
        self.widths = [len(line) + 1 + SLOT_ROOM for line in lines]
        self.offsets = list(itertools.accumulate(
            [len(head)] + [width + len(_SLOT_GAP) for width in self.widths]))
        self.spare: Optional[int] = None
        self.behind: Set[int] = set()  # lines (0-based) the spare lacks

    @staticmethod
    def leftovers(run_dir: Path) -> List[Path]:
        """What a SlotFile in run_dir has there only while the run goes on: the spare, the
        second name, the temporary files of the whole writes (write_bytes_atomic's)."""
        return [run_dir / name for name in (".summary.json.spare", ".summary.json.old",
                                            "..summary.json.spare.tmp", ".summary.json.tmp")]

    @classmethod
    def open(cls, path: Path, head: bytes, lines: List[bytes]) -> "Optional[SlotFile]":
        """Write path whole in slots; return it, or None where its spare cannot be leased."""
        if not lines or not hasattr(fcntl, "F_SETLEASE"):
            return None
        try:
            if signal.getsignal(signal.SIGIO) == signal.SIG_DFL:  # what a lease break sends
                signal.signal(signal.SIGIO, _lease_broken)
        except ValueError:  # not the main thread: no signals, so no leases
            return None
        if not _local_file_system(path.parent):  # a reader on another host takes no lease
            return None
        slots = cls(path, head, lines, -1)
        write_bytes_atomic(path, *slots.layout(lines))
        slots.fd = os.open(path, os.O_WRONLY)
        return slots

    def layout(self, lines: List[bytes]) -> List[bytes]:
        """The whole file: the head, then each line in its slot."""
        last = len(lines) - 1
        parts = [self.head]
        for index, line in enumerate(lines):
            parts += [self.slot(index, line), _SLOT_GAP if index < last else _SUMMARY_END]
        return parts

    def slot(self, index: int, line: bytes) -> bytes:
        line += b"," if index < len(self.widths) - 1 else b""
        return line + b" " * (self.widths[index] - len(line))

    def write(self, head: bytes, lines: List[bytes], changed: Set[int]) -> bool:
        """Make summary.json the version of lines, where changed ones changed since the last
        write; False if they no longer fit (then write it whole, and open a new SlotFile)."""
        if head != self.head or any(len(lines[i]) + 1 > self.widths[i] for i in changed):
            return False
        if self.spare is not None:
            try:
                fcntl.fcntl(self.spare, fcntl.F_SETLEASE, fcntl.F_WRLCK)
            except OSError:  # someone is reading it: leave it to them
                self._drop_spare()
        if self.spare is None:
            write_bytes_atomic(self.spare_path, *self.layout(lines))
            self.spare = os.open(self.spare_path, os.O_WRONLY)
            try:  # leases work here? (raises where not: then whole writes, for the run)
                fcntl.fcntl(self.spare, fcntl.F_SETLEASE, fcntl.F_WRLCK)
                fcntl.fcntl(self.spare, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            except BlockingIOError:
                pass  # someone opened it already: the next lease will tell
        else:
            try:  # a run of neighbouring slots (a step boundary's) in one system call
                for first, parts in self._runs(sorted(self.behind | changed), lines):
                    _write_parts(self.spare, parts, self.offsets[first])
            finally:  # the spare kept is the one leased above
                fcntl.fcntl(self.spare, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        # The two names trade places: summary.json is always there, always whole.
        os.link(self.path, self.old_path)
        os.replace(self.spare_path, self.path)
        os.replace(self.old_path, self.spare_path)
        self.fd, self.spare = self.spare, self.fd
        self.behind = changed
        return True

    def _runs(self, indexes: List[int], lines: List[bytes]) -> Iterator[Tuple[int, List[bytes]]]:
        """Yield each run of consecutive indexes: its first, and its slots with the gaps
        between them (which the file holds already)."""
        for _, run in itertools.groupby(enumerate(indexes), lambda pair: pair[1] - pair[0]):
            slots = [index for _, index in run]
            parts = [self.slot(slots[0], lines[slots[0]])]
            for index in slots[1:]:
                parts += [_SLOT_GAP, self.slot(index, lines[index])]
            yield slots[0], parts

    def _drop_spare(self) -> None:
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None
        with contextlib.suppress(OSError):
            self.spare_path.unlink()

    def close(self) -> None:
        """Close both files and remove the spare (summary.json itself stays)."""
        self._drop_spare()
        for leftover in self.leftovers(self.path.parent)[1:]:  # if a fault stopped a write
            with contextlib.suppress(OSError):
                leftover.unlink()
        os.close(self.fd)


LOCAL_FILE_SYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay"}


def _local_file_system(folder: Path) -> bool:
    """Return whether folder is on a file system of this host only (mountinfo says which):
    a lease sees no reader on another host (NFS, Lustre, GPFS, a FUSE file system)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            table = mounts.read().splitlines()
    except OSError:
        return False
    where, kind = "", ""
    target = os.path.realpath(folder)
    for line in table:
        fields, _, rest = line.partition(" - ")
        point = fields.split(" ")[4].replace("\\040", " ") if fields.count(" ") >= 4 else ""
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(where) and rest:
            where, kind = point, rest.split(" ")[0]
    return kind in LOCAL_FILE_SYSTEMS


def _lease_broken(signum: int, frame: Any) -> None:
    """SIGIO: someone opened a spare while it was written; they get it once it is whole."""


class RunRecord:
    """summary.json: the run and every step of the config, rewritten on each change.

    One rewrite per step boundary: when a step succeeds and the next one follows at once,
    "this one ended, the next one is running" is a single version (end_attempt's
    following). Only a changed step is encoded again, and during the run only its line is
    written again (SlotFile); the final version is written whole, with no slots.
    """

    def __init__(self, run_dir: Path, plan: RunPlan) -> None:
        self.path = run_dir / "summary.json"
        chosen = {p.index for p in plan.selected}
        self.data: Dict[str, Any] = {
            "status": RUNNING, "exit_code": None, "started": now_iso(), "finished": None,
            # What ${hydra:runtime.output_dir} meant for the steps (a resumed run's origin).
            "output_dir": str(plan.output_dir),
            "steps": [{
                "index": p.index, "name": p.name, "command": mask_words(p.command, p.secrets),
                "status": NOT_RUN if p.index in chosen else SKIPPED,
                "exit_code": None, "attempts": 0, "started": None, "finished": None,
                "duration_s": None, "log": p.log_name,
            } for p in plan.steps],
        }
        for index, folder in plan.reused.items():  # a resumed run's earlier successes
            self.data["steps"][index - 1].update(status=SUCCEEDED, exit_code=0, attempts=0,
                                                 reused_from=folder)
        # One encoded JSON line per step, re-encoded only when that step changes.
        self._lines = [json.dumps(entry).encode() for entry in self.data["steps"]]
        self._changed: Set[int] = set()  # lines (0-based) changed since the last write
        self._slots: Optional[SlotFile] = None
        self._slotted = True  # False where there are no leases, or after a fault
        self._start = ("", b"")  # the run's fields as JSON, and the file's start from them
        self.finished = False  # both files of the run's end written (see finish_on_fault)
        # A step recorded as running before it starts, and its entry as it was before.
        self._early: Optional[Tuple[int, Dict[str, Any]]] = None
        self.tails: Dict[int, List[str]] = {}  # step index → last lines of a failed attempt
        self.write()

    def step(self, planned: PlannedStep) -> Dict[str, Any]:
        entry: Dict[str, Any] = self.data["steps"][planned.index - 1]
        return entry

    def start_attempt(self, planned: PlannedStep) -> None:
        if self._early is not None and self._early[0] == planned.index:
            self._early = None  # recorded with the end of the step before
            return
        self._mark_started(planned)
        self.write()

    def _mark_started(self, planned: PlannedStep) -> None:
        entry = self.step(planned)
        if entry["started"] is None:
            entry["started"] = now_iso()
        entry.update(status=RUNNING, attempts=entry["attempts"] + 1, exit_code=None,
                     finished=None)
        entry.pop("skipped_at_dialog", None)  # rerun with the pipeline: skipped no more
        self._encode(planned.index)

    def end_attempt(self, planned: PlannedStep, attempt: Attempt, status: str,
                    following: Optional[PlannedStep] = None) -> None:
        """Record how an attempt ended; with following, that step as running, in one rewrite.

        A scheduler killed before following starts leaves it `running`: resume then starts
        there, which is right, since this step's end is recorded too.
        """
        entry = self.step(planned)
        # Time spent running, summed over attempts: a wait at the dialog is not the step's.
        duration = (entry["duration_s"] or 0.0) + attempt.duration
        entry.update(status=status, exit_code=attempt.exit_code, finished=now_iso(),
                     duration_s=round(duration, 3))
        add_attempt_cost(entry, attempt)
        if status != SUCCEEDED:  # for summary.md, masked as the failure warning is
            self.tails[planned.index] = [mask(line, planned.secrets)
                                         for line in last_lines(attempt.tail)]
        self._encode(planned.index)
        if following is not None:
            self._early = (following.index, dict(self.step(following)))
            self._mark_started(following)
        self.write()

    def _undo_early_start(self) -> None:
        """Put back a step recorded as running that never started (the run stopped first)."""
        if self._early is not None:
            index, before = self._early
            self.data["steps"][index - 1] = before
            self._encode(index)
            self._early = None

    def skip_at_dialog(self, planned: PlannedStep) -> None:
        """Record that the user chose to skip this failed step: its status stays failed."""
        self.step(planned)["skipped_at_dialog"] = True
        self._encode(planned.index)
        self.write()

    def finish(self, status: str, exit_code: int) -> None:
        self._undo_early_start()
        self.data.update(status=status, exit_code=exit_code, finished=now_iso())
        if self._slots is not None:  # first: on a full disk, the spare's room is free then
            self._slots.close()
            self._slots = None
        self.write()  # whole, without slots
        write_text_atomic(self.path.with_name(SUMMARY_MD),
                          summary_markdown(self.data, self.path.parent.name, self.tails))
        self.finished = True

    def finish_on_fault(self, exit_code: int) -> None:
        """Record a run crude-link could not go on with: failed; a running step interrupted."""
        if self.finished:
            return  # what went wrong came after
        self._undo_early_start()
        for entry in self.data["steps"]:
            if entry["status"] == RUNNING:
                entry.update(status=INTERRUPTED, finished=now_iso())
                self._encode(entry["index"])
        self.finish(FAILED, exit_code)

    def add_notifications(self, tries: List[Dict[str, Any]]) -> None:
        """Record notifications sent for the run: every try, with its HTTP status."""
        self.data.setdefault("notifications", []).extend(tries)
        self.write()

    def _encode(self, index: int) -> None:
        self._lines[index - 1] = json.dumps(self.data["steps"][index - 1]).encode()
        self._changed.add(index - 1)

    def write(self) -> None:
        """Write summary.json's new version: in slots while the run goes on, else whole."""
        fields = {k: v for k, v in self.data.items() if k != "steps"}
        key = json.dumps(fields)  # C-encoded, unlike indent=1: a step boundary changes none
        if key != self._start[0]:
            head = json.dumps(fields, indent=1)
            self._start = key, f'{head[:-2]},\n "steps": [\n  '.encode()
        start = self._start[1]
        changed, self._changed = self._changed, set()
        if self._slots is not None:
            try:
                if self._slots.write(start, self._lines, changed):
                    return
            except OSError as error:  # disk full, say: told by the whole write below if it
                self._slotted = False  # fails too
                log.warning("summary.json: written whole from now on (%s)", error)
            self._slots.close()
            self._slots = None
        if self._slotted and self.data["status"] == RUNNING:
            with contextlib.suppress(OSError):  # as above
                self._slots = SlotFile.open(self.path, start, self._lines)
            if self._slots is not None:
                return
            self._slotted = False
        body = [part for line in self._lines for part in (_STEP_SEPARATOR, line)][1:]
        write_bytes_atomic(self.path, start, *body, _SUMMARY_END)


def write_config_error(run_dir: Path, problems: List[str]) -> None:
    """Record a multirun job's config problems as its summary.json, for the sweep report."""
    now = now_iso()
    write_text_atomic(run_dir / "summary.json", json.dumps({
        "status": FAILED, "exit_code": EXIT_CONFIG_ERROR, "started": now, "finished": now,
        "problems": problems, "steps": []}, indent=1) + "\n")


# ── Messages ─────────────────────────────────────────────────────────────

class Console:
    """The scheduler's own messages: coloured on the terminal, plain in Hydra's log file."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal

    def say(self, text: str, color: Optional[str] = None, bold: bool = False,
            logged: str = "") -> None:
        """Show text; log it, followed by logged (lines for the log file only)."""
        log.info(f"{text}\n{logged}" if logged else text)
        self._show(colored(text, color, attrs=["bold"] if bold else None))

    def say_lines(self, lines: Sequence[Tuple[str, Optional[str], bool]]) -> None:
        """Say (text, color, bold) lines at once: one log record, one write (a table of
        10,000 steps said a line at a time cost 0.05 ms a step)."""
        log.info("\n".join(text for text, _, _ in lines))
        self._show("\n".join(colored(text, color, attrs=["bold"] if bold else None)
                             for text, color, bold in lines))

    def warn(self, lines: Sequence[str]) -> None:
        for index, line in enumerate(lines):
            log.warning(line)
            self._show(colored(line, "red", attrs=["bold"] if index == 0 else None))

    def _show(self, text: str) -> None:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            sys.stdout.flush()  # anything print()ed before must come first
        self.terminal.write(text.encode("utf-8", errors="replace") + b"\n")


def summary_table(steps: List[Dict[str, Any]]) -> List[str]:
    """Return the final table: one row per step with status, attempts, duration, memory, log."""
    header = ["#", "step", "status", "attempts", "duration", "peak mem", "log"]
    rows = [[str(s["index"]), s["name"],
             s["status"] + (" (skipped)" if s.get("skipped_at_dialog") else ""),
             str(s["attempts"]), format_duration(s["duration_s"]), format_peak(s),
             s["log"] if s["attempts"] else "-"]
            for s in steps]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in [header, *rows]]




def print_problems(problems: List[str]) -> None:
    """Print config problems to stderr, one per line, and to the log."""
    heading = f"crude-link: the config has {len(problems)} problem(s); no step was run:"
    log.error(heading)
    print(colored(heading, "red", attrs=["bold"]), file=sys.stderr)
    for problem in problems:
        log.error("  %s", problem)
        print(f"  {problem}", file=sys.stderr)


def machine_fault(error: Optional[BaseException]) -> Optional[OSError]:
    """Return the fault of the machine (an OSError with an errno) behind an error, or None."""
    for _ in range(10):  # __cause__ and __context__ chains are short; never loop on a cycle
        if error is None or isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


def print_fault(error: OSError, where: Path, outcome: str) -> None:
    """Print one line on a fault of the machine: the path, the system's reason, the outcome."""
    print(colored(f"crude-link: a fault of the machine: {error.filename or where}: "
                  f"{error.strerror or error}; {outcome}", "red"), file=sys.stderr)


# ── Notifications: what is sent (pure) ───────────────────────────────────

# How a run ended reaches people who are not looking: a heartbeat URL (healthchecks'
# /start and /<exit code>), a chat webhook, a command. Built here from summary.json's
# data; sent by the I/O sections before "One job", which never change an exit code.

NOTIFY_TRIES = 3
NOTIFY_BACKOFF = (1.0, 2.0)  # seconds before the second and the third try
PING_BODY_LIMIT = 100 * 1024  # healthchecks keeps at most this much of a ping's body
USER_AGENT = "crude-link"  # some services refuse urllib's own Python-urllib/3.x


def ping_url(base: str, signal_path: str, rid: str) -> str:
    """Return <base>/<signal_path>?rid=<rid>, keeping a query the base URL has."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, f"rid={rid}") if q)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + signal_path,
                                     query=query))


def run_id(folder: Path) -> str:
    """Return the uuid that ties a run's (or a sweep's) start and end pings together.

    Made from the host and the run folder, which is the run's own, so the jobs of a sweep
    and its launching process all find the sweep's without being told.
    """
    import uuid  # only runs that notify pay for this import

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"crude-link://{socket.gethostname()}{folder}"))


@dataclass
class Outcome:
    """How a run or a sweep ended, as notifications tell it."""

    status: str
    exit_code: int
    run_dir: str
    summary: str  # the path of its summary.json
    config: str  # the config name
    host: str
    table: List[str] = field(default_factory=list)  # the final table, or a sweep's jobs
    failed_step: Optional[str] = None
    failed_exit_code: Optional[int] = None
    failed_log: Optional[str] = None
    last_lines: List[str] = field(default_factory=list)  # masked already
    sweep: bool = False


def failed_step_of(steps: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """Return the first step that failed, timed out or was interrupted, or None."""
    return next((s for s in steps if s.get("status") in (FAILED, TIMED_OUT, INTERRUPTED)), None)


def run_outcome(summary: Mapping[str, Any], run_dir: Path, exit_code: int, config: str,
                host: str, tail: Sequence[str] = ()) -> Outcome:
    """Return a run's outcome from its summary.json data; tail: the failed step's last lines."""
    steps = summary.get("steps", [])
    status = summary.get("status") or FAILED
    failed = failed_step_of(steps)
    return Outcome(
        status=FAILED if status == RUNNING else status, exit_code=exit_code,
        run_dir=str(run_dir), summary=str(run_dir / "summary.json"), config=config, host=host,
        table=summary_table(list(steps)),
        failed_step=failed["name"] if failed else None,
        failed_exit_code=failed.get("exit_code") if failed else None,
        failed_log=str(run_dir / failed["log"]) if failed else None,
        last_lines=list(tail) if failed else [])


def headline(outcome: Outcome) -> str:
    """Return the outcome in one line: 'crude-link on gpu1: run failed (exit code 3) at ...'."""
    what = "sweep" if outcome.sweep else "run"
    line = f"crude-link on {outcome.host}: {what} {outcome.status} (exit code {outcome.exit_code})"
    if outcome.failed_step:
        line += f" at step '{outcome.failed_step}'"
        if outcome.failed_exit_code is not None:
            line += f" (exit code {outcome.failed_exit_code})"
    return f"{line}; config '{outcome.config}', {outcome.run_dir}"


def should_tell(on: str, status: str) -> bool:
    """Return whether the webhook and the command are used for a run that ended so."""
    return on == "always" or on == "failure" and status != SUCCEEDED


def ping_body(outcome: Outcome, limit: int = PING_BODY_LIMIT) -> bytes:
    """Return the end ping's body: outcome, failed step, its log and last lines, the table."""
    lines = [headline(outcome), f"run folder: {outcome.run_dir}"]
    if outcome.failed_step:
        lines += [f"failed step: {outcome.failed_step}, exit code {outcome.failed_exit_code}",
                  f"log: {outcome.failed_log}"]
    lines += ["", *outcome.table]
    if outcome.last_lines:
        lines += ["", f"last lines of output of '{outcome.failed_step}':",
                  *(f"| {line}" for line in outcome.last_lines)]
    return truncate_utf8("\n".join(lines) + "\n", limit)


def truncate_utf8(text: str, limit: int) -> bytes:
    """Return text as UTF-8, cut to at most limit bytes (never inside a character)."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data
    marker = b"\n[... cut by crude-link]\n"
    return data[:limit - len(marker)].decode("utf-8", errors="ignore").encode() + marker


def webhook_payload(outcome: Outcome) -> Dict[str, Any]:
    """Return the webhook's JSON: Slack's and Mattermost's `text`, and fields for machines."""
    text = headline(outcome)
    if outcome.sweep:
        text += "\n" + "\n".join(outcome.table)
    if outcome.last_lines:
        text += "\n```\n" + "\n".join(outcome.last_lines) + "\n```"
    return {"text": text, "status": outcome.status, "exit_code": outcome.exit_code,
            "run_dir": outcome.run_dir, "failed_step": outcome.failed_step,
            "host": outcome.host, "config": outcome.config}


def command_env(outcome: Outcome, base_env: Mapping[str, str]) -> Dict[str, str]:
    """Return the notify command's environment: the caller's and how the run ended."""
    return {**base_env, "CRUDE_LINK_STATUS": outcome.status,
            "CRUDE_LINK_EXIT_CODE": str(outcome.exit_code),
            "CRUDE_LINK_RUN_DIR": outcome.run_dir, "CRUDE_LINK_SUMMARY": outcome.summary}


def would_notify(notify: "Notify", metrics_file: Optional[Path]) -> List[str]:
    """Return what a real run would send, in words, for a dry run (URLs masked)."""
    lines = []
    if notify.ping:
        lines.append(f"would GET {mask_url(notify.ping)}/start?rid=<run id> at the start, "
                     f"and POST {mask_url(notify.ping)}/<exit code>?rid=<run id> at the end")
    when = {"always": "after every run", "failure": "if the run fails", "never": ""}[notify.on]
    if notify.webhook and when:
        lines.append(f"would POST JSON to the webhook {mask_url(notify.webhook)} {when}")
    if notify.command and when:
        lines.append(f"would run {shlex.join(mask_command(notify.command))} {when}")
    if metrics_file is not None:
        lines.append(f"would rewrite the metrics file {metrics_file}")
    return lines


# ── Notifications: the metrics file (pure) ───────────────────────────────

# Prometheus' text format, for node_exporter's textfile collector.

def _timestamp(iso: Any) -> Optional[float]:
    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromisoformat(iso).timestamp()
    return None


def _label(value: str) -> str:
    """Return a Prometheus label value, escaped as its text format asks."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_METRICS = {  # name → (help, type)
    "crude_link_last_run_start_timestamp_seconds": "When the last run started (Unix time).",
    "crude_link_last_run_end_timestamp_seconds": "When the last run ended (Unix time).",
    "crude_link_last_success_timestamp_seconds": "When a run last succeeded (Unix time; 0: "
                                                 "never seen).",
    "crude_link_last_run_exit_code": "The last run's exit code.",
    "crude_link_last_run_status": "1 for the last run's status, 0 for the others.",
    "crude_link_step_duration_seconds": "Seconds the step ran in the last run, all attempts.",
    "crude_link_step_attempts": "Attempts of the step in the last run (0: not run).",
    "crude_link_step_status": "1 for the step's status in the last run, 0 for the others.",
}
RUN_STATUSES = (SUCCEEDED, FAILED, ABORTED, INTERRUPTED)
STEP_STATUSES = (SUCCEEDED, FAILED, TIMED_OUT, INTERRUPTED, SKIPPED, NOT_RUN, RUNNING)


def metrics_text(summary: Mapping[str, Any], exit_code: int, config: str,
                 last_success: Optional[float]) -> str:
    """Return the Prometheus text-format metrics of a finished run.

    last_success is the time an earlier run succeeded (read back from the file), for a run
    that did not.
    """
    status = summary.get("status")
    started, finished = _timestamp(summary.get("started")), _timestamp(summary.get("finished"))
    if status == SUCCEEDED:
        last_success = finished
    run = f'config="{_label(config)}"'
    samples: Dict[str, List[str]] = {name: [] for name in _METRICS}
    for name, value in (("crude_link_last_run_start_timestamp_seconds", started),
                        ("crude_link_last_run_end_timestamp_seconds", finished),
                        ("crude_link_last_success_timestamp_seconds", last_success or 0),
                        ("crude_link_last_run_exit_code", exit_code)):
        if value is not None:
            samples[name].append(f"{name}{{{run}}} {value:g}" if isinstance(value, int)
                                 else f"{name}{{{run}}} {value:.3f}")
    samples["crude_link_last_run_status"] = [
        f'crude_link_last_run_status{{{run},status="{s}"}} {int(s == status)}'
        for s in RUN_STATUSES]
    for step in summary.get("steps", []):
        labels = f'{run},step="{_label(str(step.get("name")))}"'
        if step.get("duration_s") is not None:
            samples["crude_link_step_duration_seconds"].append(
                f"crude_link_step_duration_seconds{{{labels}}} {step['duration_s']:.3f}")
        samples["crude_link_step_attempts"].append(
            f"crude_link_step_attempts{{{labels}}} {int(step.get('attempts') or 0)}")
        samples["crude_link_step_status"] += [
            f'crude_link_step_status{{{labels},status="{s}"}} {int(s == step.get("status"))}'
            for s in STEP_STATUSES]
    lines = []
    for name, meaning in _METRICS.items():
        lines += [f"# HELP {name} {meaning}", f"# TYPE {name} gauge", *samples[name]]
    return "\n".join(lines) + "\n"


def last_success_in(text: str, config: str) -> Optional[float]:
    """Return the last success time a metrics file holds for a config, or None."""
    pattern = (r'^crude_link_last_success_timestamp_seconds\{config="'
               + re.escape(_label(config)) + r'"\} (\S+)$')
    match = re.search(pattern, text, re.MULTILINE)
    with contextlib.suppress(ValueError, AttributeError):
        value = float(match.group(1))  # type: ignore[union-attr]
        return value if value > 0 else None
    return None


# ── The pipeline: its context and messages ───────────────────────────────

@dataclass
class Pipeline:
    """Everything a run needs besides the plan: where, how, and who to talk to."""

    root: Path
    run_dir: Path
    options: SchedulerOptions
    console: Console
    stop: StopRequest
    base_env: Mapping[str, str]
    interactive: bool
    ask: Callable[[str], str] = input

    @property
    def terminal(self) -> Terminal:
        return self.console.terminal


def announce_attempt(pipeline: Pipeline, planned: PlannedStep, fd: int, shown: str,
                     attempt: int, steps: int) -> None:
    """Say that an attempt has started: on the terminal, in scheduler.log, in the step's log."""
    again = f" (attempt {attempt})" if attempt > 1 else ""
    command = shlex.join(mask_words(planned.command, planned.secrets))
    pipeline.console.say(f"▶ [{planned.index}/{steps}] {planned.name}{again}: "
                         f"{mask(shown, planned.secrets)}", "cyan", bold=True,
                         logged=f"  command: {command}")  # one record: ~0.04 ms a step less
    separator = (f"=== crude-link: step {planned.index} '{planned.name}' attempt {attempt} "
                 f"at {now_iso()} ===\n").encode()
    if not _ends_with_newline(fd):
        separator = b"\n" + separator
    write_all(fd, separator)


def _ends_with_newline(fd: int) -> bool:
    """Return whether the file behind fd is empty or ends with a newline."""
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def print_failure(pipeline: Pipeline, planned: PlannedStep, attempt: Attempt) -> None:
    """Print the highlighted failure warning: step, how it ended, duration, log, last lines."""
    pipeline.terminal.reveal()  # quiet runs show everything once something fails
    after = "; stopped after" if attempt.timed_out else " after"  # two "after"s read badly
    lines = [
        f"✗ step {planned.index} '{planned.name}' failed: "
        f"{describe_exit(attempt, planned.step.timeout)}{after} "
        f"{format_duration(attempt.duration)}",
        f"  log: {pipeline.run_dir / planned.log_name}",
    ]
    output = last_lines(attempt.tail)
    if output:
        lines.append("  its last line of output:" if len(output) == 1
                     else f"  its last {len(output)} lines of output:")
        lines.extend(f"  | {mask(line, planned.secrets)}" for line in output)
    pipeline.console.warn(lines)


def print_report(pipeline: Pipeline, record: RunRecord) -> None:
    """Print the final table and the run's outcome."""
    status = record.data["status"]
    color = "green" if status == SUCCEEDED else "red"
    header, *rows = summary_table(record.data["steps"])
    pipeline.console.say_lines([(header, None, True), *((row, None, False) for row in rows),
                                (f"run {status} (exit code {record.data['exit_code']}); "
                                 f"run folder: {pipeline.run_dir}", color, True)])


# ── The pipeline: running it ─────────────────────────────────────────────

def run_step(pipeline: Pipeline, record: RunRecord, planned: PlannedStep,
             following: Optional[PlannedStep] = None) -> Attempt:
    """Run one step with its automatic retries; return its last attempt.

    following is the step that runs next if this one succeeds: summary.json records both
    in the same rewrite.
    """
    step = planned.step
    env = step_env(step, pipeline.base_env, pipeline.run_dir, planned.index, planned.name,
                   sys.executable)
    # What follows the script in the command, after the script as written.
    shown = " ".join([step.script, *planned.command[planned.script_at + 1:]])
    steps = len(record.data["steps"])
    # Opened before the step starts: a step that cannot be logged must not run.
    log_fd = os.open(pipeline.run_dir / planned.log_name,
                     os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    try:
        attempt_no = 0
        while True:
            attempt_no += 1
            record.start_attempt(planned)
            announce = functools.partial(announce_attempt, pipeline, planned, log_fd,
                                         shown, record.step(planned)["attempts"], steps)
            sinks = Sinks(log_fd, pipeline.terminal, announce)
            policy = StopPolicy(step.timeout, pipeline.options.kill_grace, pipeline.stop)
            attempt = run_attempt(planned.command, pipeline.root, env, sinks, policy)
            if attempt.killed:
                killed = (f"step {planned.index} '{planned.name}' was still running "
                          f"{policy.kill_grace:g}s after SIGTERM (kill_grace): sent SIGKILL")
                write_all(log_fd, f"=== crude-link: {killed}\n".encode())
                log.warning(killed)
            status = (SUCCEEDED if attempt.exit_code == 0 else
                      TIMED_OUT if attempt.timed_out else FAILED)
            if pipeline.stop.signum is not None and status != SUCCEEDED:
                status = INTERRUPTED
            record.end_attempt(planned, attempt, status,
                               following if status == SUCCEEDED and pipeline.stop.signum is None
                               else None)
            if status != FAILED and status != TIMED_OUT or attempt_no > step.retries:
                return attempt
            pipeline.console.say(f"{planned.name} failed ({describe_exit(attempt, step.timeout)}); "
                                 f"automatic retry {attempt_no} of {step.retries}"
                                 + (f" in {step.retry_delay:g}s" if step.retry_delay else ""),
                                 "yellow")
            sleep_unless_stopped(step.retry_delay, pipeline.stop)
            if pipeline.stop.signum is not None:
                return attempt
    finally:
        os.close(log_fd)


def decide_after_failure(pipeline: Pipeline) -> str:
    """Return what to do after a failed step: ask, or apply the policy without a terminal."""
    policy = pipeline.options.on_failure
    if policy == "continue":
        pipeline.console.say("on_failure=continue: going on with the next step", "yellow")
        return "skip"
    if policy == "abort":
        pipeline.console.say("on_failure=abort: stopping the run", "yellow")
        return "stop"
    if not pipeline.interactive:
        pipeline.console.say("no terminal on stdin: on_failure=ask acts as abort, "
                             "stopping the run", "yellow")
        return "stop"
    with _signals_raise():
        choice = ask_what_next(pipeline.ask)
    log.info("dialog answer: %s", choice)
    return choice


def run_pipeline(pipeline: Pipeline, record: RunRecord, plan: List[PlannedStep]) -> int:
    """Run the selected steps in order, apply the failure policy, record it; return exit code."""
    pipeline.console.say(f"crude-link: {len(plan)} step(s) to run; "
                         f"run folder {pipeline.run_dir}")
    run_status, exit_code = SUCCEEDED, EXIT_OK
    position = 0
    try:
        while position < len(plan):
            if pipeline.stop.signum is not None:
                break
            planned = plan[position]
            following = plan[position + 1] if position + 1 < len(plan) else None
            attempt = run_step(pipeline, record, planned, following)
            if attempt.exit_code == 0 or pipeline.stop.signum is not None:
                position += 1
                continue
            print_failure(pipeline, planned, attempt)
            choice = decide_after_failure(pipeline)
            if choice == "retry":
                continue
            if choice == "pipeline":
                position = 0
                continue
            if choice == "skip":
                if pipeline.interactive and pipeline.options.on_failure == "ask":
                    record.skip_at_dialog(planned)
                position += 1
                continue
            run_status = ABORTED if choice == "abort" else FAILED
            break
    except (Interrupted, KeyboardInterrupt) as stopped:
        signum = stopped.signum if isinstance(stopped, Interrupted) else signal.SIGINT
        print_newline()
        pipeline.console.say(f"{signal.Signals(signum).name} at the prompt: aborting", "yellow")
        run_status, exit_code = ABORTED, EXIT_SIGNAL_BASE + signum
    steps = record.data["steps"]
    if pipeline.stop.signum is not None:
        pipeline.console.say(f"crude-link: stopped by {pipeline.stop.why}", "yellow")
        run_status, exit_code = INTERRUPTED, EXIT_SIGNAL_BASE + pipeline.stop.signum
    elif exit_code == EXIT_OK:
        failed = [s for s in steps if s["status"] in (FAILED, TIMED_OUT)]
        if failed:
            exit_code = failed[0]["exit_code"]
            run_status = FAILED if run_status == SUCCEEDED else run_status
    record.finish(run_status, exit_code)
    if exit_code != EXIT_OK:
        pipeline.terminal.reveal()
    print_report(pipeline, record)
    return exit_code


# ── The run lock ─────────────────────────────────────────────────────────

class LockFileError(Exception):
    """The lock path is not a regular file crude-link may write (a symlink, a folder...)."""


def _open_lock_file(path: Path) -> BinaryIO:
    """Open (or create) the lock file, never through a symlink; raise LockFileError if unfit.

    Whoever can write outputs/ could put a symlink there, and the run would write its pid
    line into the file it points at. A FIFO or a device is not even opened (it could block
    or act); what is opened is checked again, in case it changed in between.
    """
    problem = _what_is_there(path)
    if not problem:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as error:
            problem = _what_is_there(path) or error.strerror or str(error)
        else:
            problem = _what_is_there(path, os.fstat(fd))
            if not problem:
                os.set_blocking(fd, True)
                return os.fdopen(fd, "r+b")
            os.close(fd)
    raise LockFileError(f"cannot use the run lock {path}: {problem}; not starting. "
                        f"Remove it, or run with scheduler.lock=false")


def _what_is_there(path: Path, info: Optional[os.stat_result] = None) -> str:
    """Return why the file at path is not fit to be the lock file ('' if it is)."""
    try:
        info = info or os.lstat(path)
    except OSError:
        return ""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        with contextlib.suppress(OSError):
            return f"it is a symbolic link (to {os.readlink(path)})"
        return "it is a symbolic link"
    if stat.S_ISREG(mode):
        return f"it has {info.st_nlink} hard links (it is another file too)" if (
            info.st_nlink > 1) else ""
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")]
    return "it is " + next((kind for test, kind in kinds if test(mode)), "not a regular file")


def acquire_lock(path: Path, run_dir: Path, shared: bool = False
                 ) -> Tuple[Optional[BinaryIO], str]:
    """Take the root's run lock; return (the open lock file, "") or (None, who holds it).

    flock belongs to the open file, so the lock dies with its process: no stale locks.
    The jobs of a multirun share it (shared=True): they may run at once, on a cluster,
    while a plain run, such as cron's, still finds the root busy, and waits for none.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _open_lock_file(path)
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode("utf-8", errors="replace").strip()
        handle.close()
        return None, holder or "another crude-link run"
    except OSError as error:  # a file system without flock (Lustre mounted noflock, say)
        handle.close()
        log.warning("cannot lock %s (%s): running without the run lock", path, error.strerror)
        print(colored(f"crude-link: cannot lock {path} ({error.strerror}); running without "
                      f"the run lock", "yellow"), file=sys.stderr)
        return None, ""
    what = f"a multirun, {run_dir.parent}" if shared else f"pid {os.getpid()}"
    handle.truncate(0)
    handle.write(f"{what}, started {now_iso()}, run folder {run_dir}\n".encode())
    handle.flush()
    return handle, ""


def lock_refusal(holder: str, root: Path) -> str:
    """Return why a run does not start, from what the lock file says of the run holding it."""
    match = re.match(r"pid (\d+), .*run folder (.*)", holder)
    if match and not process_is_alive(int(match.group(1))):  # its watchdog holds the lock
        return (f"crude-link: a step of an earlier run still runs (run folder {match.group(2)}), "
                f"though its scheduler, pid {match.group(1)}, has ended; it gets SIGTERM, "
                f"SIGKILL after kill_grace. Not starting while it runs.")
    return (f"crude-link: another run is using {root} ({holder}); not starting. "
            f"Wait for it, or stop it first.")


# ── Keeping outputs/ small: what to prune (pure) ─────────────────────────

DATE_FOLDER = re.compile(r"\d{4}-\d\d-\d\d")  # outputs/<date>/, as default_overrides names it
SWEEP_FILES = frozenset(["multirun.yaml", "summary.json", "summary.md", ".submitit"])
CRON_LOG_LIMIT = 10 * 1024 * 1024  # cron.log is rotated past this size, to cron.log.1


class Keep(NamedTuple):
    """scheduler.keep: a finished run stays if either limit keeps it; None is no limit."""

    runs: Optional[int] = None  # the newest N finished runs
    days: Optional[float] = None  # runs started less than D days ago


def keep_limits(raw: Any) -> Keep:
    """Return the limits of a checked scheduler.keep value (None: keep everything)."""
    raw = raw if isinstance(raw, dict) else {}
    return Keep(raw.get("runs"), raw.get("days"))


class RunFolder(NamedTuple):
    """A folder crude-link made for a run (under outputs/) or a whole sweep (multirun/)."""

    path: Path
    started: Optional[datetime]  # None: unknown, so it is never pruned
    finished: bool  # no job of it says running (it may still run, or was killed outright)
    points_to: Tuple[Path, ...] = ()  # its reused_from and output_dir folders
    sweep: bool = False


def parse_started(text: Any) -> Optional[datetime]:
    """Return summary.json's started time as an aware datetime, or None if it is no time."""
    try:
        started = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return started if started.tzinfo else started.astimezone()


def choose_prunable(runs: Sequence[RunFolder], keep: Keep, now: datetime,
                    protected: Sequence[Path] = ()) -> List[RunFolder]:
    """Return the runs the limits let go, oldest first; every other run stays.

    Runs and sweeps are counted apart. A run stays if it is protected, unfinished or of
    unknown age, among the newest keep.runs, younger than keep.days, or pointed to (through
    reused_from or output_dir) by a run that stays.
    """
    if keep.runs is None and keep.days is None:
        return []
    kept = {Path(p) for p in protected}
    going: Dict[Path, RunFolder] = {}
    for sweep in (False, True):
        ranked = sorted((run for run in runs if run.sweep is sweep and run.finished
                         and run.started is not None), key=lambda run: run.started or now,
                        reverse=True)
        for rank, run in enumerate(ranked):
            young = keep.days is not None and (
                (now - (run.started or now)).total_seconds() < keep.days * 86400)
            newest = keep.runs is not None and rank < keep.runs
            if not (young or newest or run.path in kept):
                going[run.path] = run
    staying = [run for run in runs if run.path not in going]
    while staying:  # what a staying run points to stays too, and so on down the chain
        run = staying.pop()
        for target in run.points_to:
            folder = next((path for path in going if target == path or path in target.parents),
                          None)
            if folder is not None:
                staying.append(going.pop(folder))
    return sorted(going.values(), key=lambda run: run.started or now)


# ── Keeping outputs/ small: pruning and cron.log (I/O) ───────────────────

def _read_run_summary(path: Path) -> Optional[Dict[str, Any]]:
    """Return a summary.json that crude-link wrote (status and steps), or None."""
    summary = read_json(path)
    if not isinstance(summary.get("status"), str) or not isinstance(summary.get("steps"), list):
        return None
    return summary


def _pointers(summary: Mapping[str, Any]) -> List[Path]:
    words = [summary.get("output_dir")] + [step.get("reused_from") for step in summary["steps"]
                                           if isinstance(step, dict)]
    return [Path(word) for word in words if isinstance(word, str) and word]


def _dated_folders(top: Path) -> List[Path]:
    """Return top/<date>/<name>/ folders, not following a symbolic link anywhere."""
    found = []
    with contextlib.suppress(OSError):
        for day in top.iterdir():
            if DATE_FOLDER.fullmatch(day.name) and day.is_dir() and not day.is_symlink():
                found += [p for p in day.iterdir() if p.is_dir() and not p.is_symlink()]
    return found


def _read_run(folder: Path) -> Optional[RunFolder]:
    summary = _read_run_summary(folder / "summary.json")
    if summary is None:
        return None  # not a run crude-link made: never a candidate
    return RunFolder(folder, parse_started(summary.get("started")),
                     summary["status"] != RUNNING, tuple(_pointers(summary)))


def _read_sweep(folder: Path) -> Optional[RunFolder]:
    """Return a sweep folder as one run, if it holds only crude-link's jobs and files."""
    jobs: List[RunFolder] = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name in SWEEP_FILES:
                continue
            job = _read_run(entry) if entry.name.isdigit() and not entry.is_symlink() else None
            if job is None:
                return None  # something crude-link did not make, or a job with no record
            jobs.append(job)
    if not jobs:
        return None
    starts = [job.started for job in jobs]
    return RunFolder(folder, None if None in starts else max(s for s in starts if s),
                     all(job.finished for job in jobs),
                     tuple(p for job in jobs for p in job.points_to), sweep=True)


def find_run_folders(root: Path) -> List[RunFolder]:
    """Return the runs under root/outputs/ and the sweeps under root/multirun/."""
    runs = [run for run in map(_read_run, _dated_folders(root / "outputs")) if run]
    return runs + [sweep for sweep in map(_read_sweep, _dated_folders(root / "multirun"))
                   if sweep]


def prune_candidates(root: Path, run_dir: Path, keep: Keep,
                     current: Optional[RunFolder] = None) -> List[RunFolder]:
    """Return what pruning would remove now; current stands in for a run not yet on disk."""
    runs = [run for run in find_run_folders(root) if current is None or run.path != current.path]
    protected = [run_dir.resolve()] + [
        (root / top / LATEST_LINK).resolve() for top in ("outputs", "multirun")
        if (root / top / LATEST_LINK).is_symlink()]
    resolved = [run._replace(path=run.path.resolve(),
                             points_to=tuple(p.resolve() for p in run.points_to))
                for run in runs + ([current] if current else [])]
    return choose_prunable(resolved, keep, datetime.now().astimezone(), protected)


def run_pruning(root: Path, run_dir: Path, keep: Keep) -> None:
    """Remove the runs scheduler.keep lets go, saying each in scheduler.log; never fail."""
    for run in prune_candidates(root, run_dir, keep):
        try:
            shutil.rmtree(run.path)
        except OSError as error:
            log.warning("scheduler.keep: could not remove %s: %s", run.path, error)
            continue
        started = run.started.isoformat(timespec="seconds") if run.started else "?"
        log.info("scheduler.keep: removed %s %s (started %s)",
                 "sweep" if run.sweep else "run", run.path, started)
        with contextlib.suppress(OSError):
            run.path.parent.rmdir()  # its day's folder, if that was its last


def print_prunable(root: Path, run_dir: Path, keep: Keep, plan: RunPlan) -> None:
    """Print what a run of this plan would prune at its end (a dry run's listing)."""
    points = tuple(Path(p) for p in [str(plan.output_dir), *plan.reused.values()])
    current = RunFolder(run_dir.resolve(), datetime.now().astimezone(), True, points)
    going = prune_candidates(root, run_dir, keep, current)
    print(f"crude-link: scheduler.keep (runs={keep.runs}, days={keep.days}): the run would "
          f"remove {len(going)} folder(s) as it ends" + (":" if going else ""))
    for run in going:
        started = run.started.isoformat(timespec="seconds") if run.started else "?"
        print(f"  {'sweep' if run.sweep else 'run'} {run.path} (started {started})")


def rotate_cron_log(path: Path, limit: int = CRON_LOG_LIMIT) -> None:
    """Rename cron.log to cron.log.1 once it passes limit bytes (the old .1 goes).

    A rename moves no byte: a run appending to it (the crontab line's >>, O_APPEND) goes on
    writing to the same inode, now cron.log.1, and the next `>>` makes a new cron.log. Two
    schedulers never both rotate: the one that gets the flock checks the name still means
    the file it opened.
    """
    try:
        if path.stat().st_size <= limit:
            return
        with path.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            opened = os.fstat(handle.fileno())
            if os.stat(path).st_ino == opened.st_ino and opened.st_size > limit:
                os.replace(path, path.with_name(path.name + ".1"))
    except OSError:
        return  # no cron.log, or none to rotate: never worth failing a run


# ── Notifications: requests (I/O) ────────────────────────────────────────

# Nothing here raises: what fails is recorded, then warned of.

def send_request(kind: str, method: str, url: str, body: Optional[bytes], content_type: str,
                 timeout: float, sleep: Callable[[float], None] = time.sleep
                 ) -> List[Dict[str, Any]]:
    """Send one HTTP request, up to NOTIFY_TRIES times; return every try (URL masked).

    A 2xx answer ends it, so does a 4xx (asking again would get the same); a 5xx, 429, a
    timeout or a network error is tried again. A certificate error is not: it will not pass.
    """
    import ssl
    import urllib.error
    import urllib.request

    tries: List[Dict[str, Any]] = []
    for number in range(1, NOTIFY_TRIES + 1):
        entry: Dict[str, Any] = {"kind": kind, "method": method, "url": mask_url(url),
                                 "try": number, "at": now_iso(), "status": None}
        final = False
        headers = {"User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(PING_BODY_LIMIT)
                entry["status"] = response.status
        except urllib.error.HTTPError as error:
            error.close()
            entry.update(status=error.code, error=f"HTTP {error.code} {error.reason}")
            final = error.code < 500 and error.code != 429
        except Exception as error:  # no answer, a dropped connection...: reported, not raised
            reason = getattr(error, "reason", error)
            final = isinstance(reason, ssl.SSLCertVerificationError)
            entry["error"] = mask_urls(describe_request_error(reason, timeout))
        tries.append(entry)
        if final or entry["status"] is not None and 200 <= entry["status"] < 300:
            break
        if number < NOTIFY_TRIES:
            sleep(NOTIFY_BACKOFF[number - 1])
    return tries


def describe_request_error(reason: Any, timeout: float) -> str:
    """Return why a request got no answer, in words."""
    import ssl

    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"HTTPS certificate error: {reason.verify_message or reason}"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g}s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def send_start_ping(notify: "Notify", rid: str) -> Callable[[], List[Dict[str, Any]]]:
    """Send GET <ping>/start?rid= in the background; return a function that waits for it.

    In a thread, so a slow heartbeat service never delays the first step.
    """
    if not notify.ping:
        return list
    tries: List[Dict[str, Any]] = []
    url = ping_url(notify.ping, "start", rid)
    thread = threading.Thread(target=lambda: tries.extend(
        send_request("ping", "GET", url, None, "", notify.timeout)), name="start-ping",
        daemon=True)
    thread.start()

    def wait() -> List[Dict[str, Any]]:
        thread.join()
        return tries

    return wait


def start_heartbeat(notify: "Notify", run_dir: Path, job: Optional[int] = None
                    ) -> Callable[[], List[Dict[str, Any]]]:
    """Send a run's /start ping; a multirun's is the sweep's, sent by its job 0 alone."""
    if not notify.ping or job not in (None, 0):
        return list
    return send_start_ping(notify, run_id(run_dir if job is None else run_dir.parent))


# ── Notifications: after a run (I/O) ─────────────────────────────────────

def _warn(lines: Sequence[str]) -> None:
    """Print a warning on stderr (a quiet run shows it too) and into scheduler.log."""
    sys.stdout.flush()
    for line in lines:
        log.warning(line)
        print(colored(line, "yellow"), file=sys.stderr, flush=True)


def run_notify_command(command: Sequence[Any], env: Mapping[str, str], cwd: Path,
                       timeout: float) -> Dict[str, Any]:
    """Run the notify command once (it may send mail: no retries); return what happened."""
    argv = [plain_text(word) for word in command]
    entry: Dict[str, Any] = {"kind": "command", "command": mask_command(command), "try": 1,
                             "at": now_iso(), "exit_code": None}
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as error:
        entry.update(exit_code=EXIT_NOT_FOUND if isinstance(error, FileNotFoundError)
                     else EXIT_CANNOT_EXECUTE, error=f"cannot start {argv[0]!r}: {error.strerror}")
        return entry
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        entry["error"] = f"killed after {timeout:g}s"
    entry["exit_code"] = EXIT_SIGNAL_BASE - proc.returncode if proc.returncode < 0 \
        else proc.returncode
    lines = last_lines(output[-TAIL_BYTES:])
    for line in lines:
        log.info("notify command: %s", mask_urls(line))
    if entry["exit_code"] and lines:
        entry["output"] = [mask_urls(line) for line in lines]
    return entry


def failed_tries(tries: Sequence[Mapping[str, Any]]) -> List[str]:
    """Return a warning line for each notification whose last try did not get through."""
    last: Dict[Tuple[str, str, str], Mapping[str, Any]] = {}
    for entry in tries:  # the start and the end ping differ by method, not by masked URL
        target = entry.get("url") or " ".join(entry.get("command", []))
        last[(entry["kind"], entry.get("method", ""), target)] = entry
    lines = []
    for (kind, _, target), entry in last.items():
        if kind == "command":
            if entry.get("exit_code") != 0:
                why = entry.get("error") or f"exit code {entry.get('exit_code')}"
                lines.append(f"crude-link: warning: the notify command {target} failed: {why}"
                             + "".join(f"\n  | {line}" for line in entry.get("output", [])))
        elif not (entry.get("status") and 200 <= entry["status"] < 300):
            why = entry.get("error") or f"HTTP {entry.get('status')}"
            lines.append(f"crude-link: warning: the {kind} {entry.get('method')} {target} "
                         f"failed after {entry['try']} tr{'y' if entry['try'] == 1 else 'ies'}: "
                         f"{why}")
    return lines


def send_notifications(notify: "Notify", outcome: Outcome, rid: str,
                       started: Callable[[], List[Dict[str, Any]]] = list,
                       base_env: Optional[Mapping[str, str]] = None, cwd: Path = ROOT
                       ) -> List[Dict[str, Any]]:
    """Send the end ping, the webhook and the command as notify says; return every try.

    Never raises, and a failure is a warning: the run's outcome is already decided.
    """
    tries: List[Dict[str, Any]] = []
    try:
        tries += started()
        if notify.ping:
            tries += send_request("ping", "POST", ping_url(notify.ping, str(outcome.exit_code),
                                                           rid),
                                  ping_body(outcome), "text/plain; charset=utf-8",
                                  notify.timeout)
        if should_tell(notify.on, outcome.status):
            if notify.webhook:
                body = json.dumps(webhook_payload(outcome)).encode()
                tries += send_request("webhook", "POST", notify.webhook, body,
                                      "application/json", notify.timeout)
            if notify.command:
                env = command_env(outcome, os.environ if base_env is None else base_env)
                tries.append(run_notify_command(notify.command, env, cwd, notify.timeout))
    except KeyboardInterrupt:
        tries.append({"kind": "notify", "at": now_iso(), "error": "cancelled by Ctrl-C"})
    except Exception as error:  # a bug here must not cost the run its record
        log.exception("notifications failed")
        tries.append({"kind": "notify", "at": now_iso(), "error": mask_urls(_first_line(error))})
    _warn(failed_tries(tries))
    return tries


def _log_tail(path: Path) -> bytes:
    """Return the end of a step's log without crude-link's separator lines ('' if unread)."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - TAIL_BYTES))
            data = file.read()
    except OSError:
        return b""
    return re.sub(rb"(?m)^=== crude-link: step .*attempt \d+ at .* ===\n", b"", data)


def write_metrics(path: Path, summary: Mapping[str, Any], exit_code: int, config: str) -> None:
    """Rewrite the metrics file atomically; a failure is a warning, never the run's."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        last = last_success_in(_read_text(path), config)
        write_text_atomic(path, metrics_text(summary, exit_code, config, last))
    except OSError as error:
        _warn([f"crude-link: warning: cannot write the metrics file {path}: "
               f"{error.strerror or error}"])


def metrics_path(metrics_file: Optional[str], root: Path) -> Optional[Path]:
    """Return where the metrics file goes: a relative path is from the root folder."""
    return root / metrics_file if metrics_file else None


def report_run(options: "SchedulerOptions", record: RunRecord, root: Path, code: int,
               config: str, started: Callable[[], List[Dict[str, Any]]], tell: bool,
               secrets: Sequence[str] = ()) -> None:
    """After a run: rewrite the metrics file, send the notifications, record every try.

    tell is False for a multirun's jobs: the sweep is told once, at its end.
    """
    path = metrics_path(options.metrics_file, root)
    if path is not None:
        write_metrics(path, record.data, code, config)
    notify = options.notify
    if not tell:
        tries = started()
    else:
        failed = failed_step_of(record.data["steps"])
        tail = [mask(line, secrets) for line in
                last_lines(_log_tail(record.path.parent / failed["log"]))] if failed else []
        outcome = run_outcome(record.data, record.path.parent, code, config,
                              socket.gethostname(), tail)
        tries = send_notifications(notify, outcome, run_id(record.path.parent), started,
                                   cwd=root)
    record.add_notifications(tries)


def print_would_notify(options: "SchedulerOptions", root: Path) -> None:
    """Say, in a dry run, what a real run would send (it sends nothing)."""
    for line in would_notify(options.notify, metrics_path(options.metrics_file, root)):
        print(f"crude-link: dry run: {line}")


# ── One job: leftovers, latest, dry run ──────────────────────────────────

HYDRA_FILES = frozenset(["config.yaml", "hydra.yaml", "overrides.yaml"])  # in .hydra/


def _holds_only_hydra_files(run_dir: Path) -> bool:
    """Return whether a run folder holds nothing but .hydra/ (Hydra's files) and the log."""
    names = {p.name for p in run_dir.iterdir()}
    return names <= {".hydra", "scheduler.log"} and (
        ".hydra" not in names or {p.name for p in (run_dir / ".hydra").iterdir()} <= HYDRA_FILES)


def hydra_made(run_dir: Path) -> bool:
    """Return whether run_dir holds only what Hydra makes for a job: .hydra/ and an empty log.

    Asked as main starts: whatever the log holds later, crude-link wrote.
    """
    with contextlib.suppress(OSError):
        return (_holds_only_hydra_files(run_dir)
                and (run_dir / "scheduler.log").stat().st_size == 0)
    return False


def remove_unused_run_dir(run_dir: Path, made_by_hydra: bool, outputs: Path,
                          outputs_too: bool = True) -> None:
    """Remove a run folder that ran no step, if Hydra made it and it holds only Hydra's files.

    Then its day's folder under outputs/, if this was its only run, and with outputs_too
    outputs/ itself if that leaves it empty (not after cron=...: the crontab line appends to
    outputs/cron.log). A folder of the user's (hydra.run.dir) that held files of its own, or
    outputs/latest's target, stays.
    """
    try:
        unused = (made_by_hydra and _holds_only_hydra_files(run_dir)
                  and (outputs / LATEST_LINK).resolve() != run_dir.resolve())
    except OSError:
        unused = False
    if not unused:
        return
    for logger in (logging.getLogger(), log):  # Hydra's log file there is open: close it
        for handler in list(logger.handlers):
            if (isinstance(handler, logging.FileHandler)
                    and Path(handler.baseFilename).parent == run_dir):
                handler.close()
                logger.removeHandler(handler)
    hydra_dir, log_file = run_dir / ".hydra", run_dir / "scheduler.log"
    with contextlib.suppress(OSError):
        for name in HYDRA_FILES:
            with contextlib.suppress(FileNotFoundError):
                (hydra_dir / name).unlink()
        with contextlib.suppress(FileNotFoundError):
            hydra_dir.rmdir()
        with contextlib.suppress(FileNotFoundError):
            log_file.unlink()
        run_dir.rmdir()
        if run_dir.parent.parent == outputs and DATE_FOLDER.fullmatch(run_dir.parent.name):
            run_dir.parent.rmdir()  # the day's folder, if this was its only run
            if outputs_too:
                outputs.rmdir()  # and outputs/, if nothing else was there (a first dry run)


def find_latest_run(outputs: Path) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """Return the folder and summary of the most recently started run under outputs/."""
    folders = sorted((p.parent for p in outputs.glob("*/*/summary.json")),
                     key=lambda d: (d.parent.name, d.name[:8]), reverse=True)
    newest = [d for d in folders if (d.parent.name, d.name[:8])
              == (folders[0].parent.name, folders[0].name[:8])] if folders else []
    runs = []
    for folder in newest:  # the newest second may hold several runs
        with contextlib.suppress(OSError, ValueError):
            runs.append((folder, json.loads((folder / "summary.json").read_text("utf-8"))))
    return max(runs, key=lambda run: str(run[1].get("started")), default=None)


def print_dry_run(selected: List[PlannedStep], root: Path, run_dir: Path,
                  base_env: Mapping[str, str], total: int) -> None:
    """Print each selected step's exact command (shell-quoted), cwd and extra env."""
    print(f"crude-link: dry run, nothing is executed; {len(selected)} of {total} step(s) selected")
    for planned in selected:
        env = step_env(planned.step, base_env, run_dir, planned.index, planned.name,
                       sys.executable)
        extra = {k: v for k, v in env.items() if base_env.get(k) != v}
        print(f"[{planned.index}/{total}] {planned.name}")
        print(f"  cwd:     {shlex.quote(str(root))}")
        shown = {k: mask(v, planned.secrets) for k, v in extra.items()}
        print(f"  env:     {' '.join(f'{k}={shlex.quote(v)}' for k, v in shown.items())}")
        print(f"  command: {shlex.join(mask_words(planned.command, planned.secrets))}")


def link_latest(outputs: Path, run_dir: Path) -> None:
    """Point outputs/latest at run_dir (a relative symlink), replacing it atomically."""
    temporary = outputs / f".{LATEST_LINK}.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(os.path.relpath(run_dir, outputs), temporary)
        os.replace(temporary, outputs / LATEST_LINK)
    except OSError as error:  # e.g. a real folder named latest: never worth failing a run
        log.warning("could not update %s: %s", outputs / LATEST_LINK, error)
        with contextlib.suppress(OSError):
            temporary.unlink()


# ── One job: the guarded pipeline ────────────────────────────────────────

def _in_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(plan: RunPlan, options: SchedulerOptions, run_dir: Path, stop: StopRequest) -> int:
    """Run one job (a run, or one multirun job) of a plan; return its exit code."""
    if options.dry_run:
        print_dry_run(plan.selected, ROOT, run_dir, os.environ, len(plan.steps))
        if keep_limits(options.keep) != Keep() and not _in_multirun():
            print_prunable(ROOT, run_dir, keep_limits(options.keep), plan)
        print_would_notify(options, ROOT)
        return EXIT_OK
    if plan.nothing_to_resume:
        console = Console(Terminal(sys.stdout.fileno(), options.quiet))
        console.say(f"crude-link: the newest run ({plan.resumes}) succeeded: nothing to "
                    "resume", "green")
        console.terminal.close()
        return EXIT_OK
    try:
        lock, holder = (acquire_lock(ROOT / "outputs" / LOCK_FILE, run_dir, _in_multirun())
                        if options.lock else (None, ""))
    except LockFileError as error:  # a fault of the machine, not of the config
        log.error("%s", error)
        print(colored(f"crude-link: {error}", "red"), file=sys.stderr)
        return EXIT_SOFTWARE
    if holder:
        print(colored(lock_refusal(holder, ROOT), "red"), file=sys.stderr)
        return EXIT_LOCKED
    console = Console(Terminal(sys.stdout.fileno(), options.quiet))
    try:
        if plan.resumes is not None:
            start = plan.selected[0] if plan.selected else None
            console.say(f"crude-link: resuming {plan.resumes}"
                        + (f" at step {start.index} '{start.name}'" if start else ""))
        pipeline = Pipeline(ROOT, run_dir, options, console, stop, dict(os.environ),
                            interactive=sys.stdin.isatty())
        if not _in_multirun():  # outputs/latest: the newest plain run; a sweep has its own
            link_latest(ROOT / "outputs", run_dir)
        stop.watchdog = Watchdog(options.kill_grace, lock, SlotFile.leftovers(run_dir))
        record = RunRecord(run_dir, plan)
        job = HydraConfig.get().job.num if _in_multirun() else None
        started = start_heartbeat(options.notify, run_dir, job)
        code = run_guarded(pipeline, record, plan.selected)
        report_run(options, record, ROOT, code, str(HydraConfig.get().job.config_name),
                   started, tell=job is None, secrets=plan.steps[0].secrets)
        if lock is not None and not _in_multirun():  # under an exclusive lock only
            run_pruning(ROOT, run_dir, keep_limits(options.keep))
        return code
    finally:
        console.terminal.close()
        if lock:
            lock.close()
        if stop.watchdog is not None:
            stop.watchdog.close()


def run_guarded(pipeline: Pipeline, record: RunRecord, selected: List[PlannedStep]) -> int:
    """Run the pipeline with SIGINT/SIGTERM/SIGHUP passed on to steps; return its exit code."""
    # SIGHUP: the terminal closed or the ssh connection dropped; the run stops as on SIGTERM.
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    if callable(signal.getsignal(signal.SIGUSR2)):
        # A submitit job on Slurm: SIGUSR2 says its time limit is near. submitit's own
        # handler would raise in the middle of a step; stop the step cleanly instead.
        signals.append(signal.SIGUSR2)
    saved = {sig: signal.signal(sig, pipeline.stop.handle) for sig in signals}
    try:
        return run_pipeline(pipeline, record, selected)
    except Exception as error:
        # A bug or a fault of the machine (disk full...), not a config error: say so plainly.
        log.exception("crude-link stopped on an internal error")
        fault = machine_fault(error)
        if fault is not None:
            print_fault(fault, pipeline.run_dir, "the run stopped, recorded as failed")
        else:
            print(f"crude-link: internal error, details in {pipeline.run_dir / 'scheduler.log'}:"
                  f"\n  {_first_line(error)}", file=sys.stderr)
        try:
            record.finish_on_fault(EXIT_SOFTWARE)
        except OSError as unrecorded:
            log.error("cannot record the run's end in %s: %s", record.path, unrecorded)
        return EXIT_SOFTWARE
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# ── History rows (pure) ──────────────────────────────────────────────────
# From summaries to the rows of the history (item 1 of issue 16) and their text: a
# table, JSON, CSV or Markdown. Nothing here reads a file.

REUSED = "reused"  # a resumed run's step that an earlier run ran (a mark, not a status)
DAMAGED = "damaged"  # the history's status for a summary.json that cannot be read
# One mark per step: each one column wide in any terminal, font or mail.
MULTIRUN = "multirun"  # a history entry for a sweep folder's own summary.json
STEP_MARKS = {SUCCEEDED: "✓", FAILED: "✗", TIMED_OUT: "T", INTERRUPTED: "!", RUNNING: "▸",
              REUSED: "↺", SKIPPED: "-", NOT_RUN: "."}
UNKNOWN_MARK = "?"
MARK_WORDS = {SUCCEEDED: "succeeded", FAILED: "failed", TIMED_OUT: "timed out",
              INTERRUPTED: "interrupted", RUNNING: "running", REUSED: "reused",
              SKIPPED: "skipped", NOT_RUN: "not run"}


def summary_problem(summary: Any) -> Optional[str]:
    """Return why a parsed summary.json is not a crude-link summary; None if it is one."""
    if not isinstance(summary, dict):
        return f"summary.json holds {type(summary).__name__}, not a run's summary"
    if not isinstance(summary.get("steps"), list):
        return "summary.json has no list of steps"
    return None


def history_step(raw: Any, position: int) -> Dict[str, Any]:
    """Return one step of a history row from a summary's step entry, however damaged."""
    raw = raw if isinstance(raw, dict) else {}
    status = _str_or_none(raw.get("status")) or UNKNOWN_MARK
    kind = REUSED if status == SUCCEEDED and raw.get("reused_from") else status
    return {"index": _whole(raw.get("index")) or position,
            "name": _str_or_none(raw.get("name")) or f"step {position}", "status": status,
            "mark": STEP_MARKS.get(kind, UNKNOWN_MARK), "reused": kind == REUSED,
            "exit_code": _whole(raw.get("exit_code")), "attempts": _whole(raw.get("attempts")),
            "duration_s": _number(raw.get("duration_s")), **step_cost(raw),
            "log": _str_or_none(raw.get("log"))}


def history_row(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """Return one history row from a run's entry: folder, kind, summary or problem, overrides.

    A summary that cannot be read (problem) or is not a summary gives a `damaged` row. A
    sweep's own entry (kind multirun) has one mark per job; its jobs' rows follow it.
    """
    if entry.get("kind") == MULTIRUN and isinstance(entry.get("summary"), dict):
        return _sweep_row(entry)
    summary = entry.get("summary")
    problem = entry.get("problem") or summary_problem(summary)
    summary = summary if isinstance(summary, dict) and not problem else {}
    steps = [history_step(raw, number) for number, raw in enumerate(summary.get("steps", []), 1)]
    cpu = [s[key] for s in steps for key in ("cpu_user_s", "cpu_system_s") if s[key] is not None]
    peaks = [s for s in steps if s["max_rss_kb"] is not None]
    top = max(peaks, key=lambda step: step["max_rss_kb"], default=None)
    return {
        "started": _str_or_none(summary.get("started")), "folder": entry.get("folder", ""),
        "kind": entry.get("kind", "run"),
        "status": DAMAGED if problem else _str_or_none(summary.get("status")) or UNKNOWN_MARK,
        "exit_code": _whole(summary.get("exit_code")),
        "duration_s": seconds_between(summary.get("started"), summary.get("finished")),
        "marks": "".join(step["mark"] for step in steps) or UNKNOWN_MARK,
        "overrides": [str(word) for word in entry.get("overrides", [])],
        "cpu_s": round(sum(cpu), 3) if cpu else None,
        "max_rss_kb": top["max_rss_kb"] if top else None,
        "rss_floor_kb": top["rss_floor_kb"] if top else None,
        "problem": problem, "steps": steps, "summary_md": bool(entry.get("summary_md")),
        "in_sweep": entry.get("in_sweep"),  # the sweep folder a job's row is listed under
    }


def _sweep_row(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """Return the history row of a sweep folder's own summary.json: one mark per job."""
    summary: Dict[str, Any] = dict(entry["summary"])
    jobs = [job for job in summary.get("jobs") or [] if isinstance(job, dict)]
    marks = "".join(STEP_MARKS.get(REUSED if job.get("reused_from") and job.get("status")
                                   == SUCCEEDED else str(job.get("status")), UNKNOWN_MARK)
                    for job in jobs)
    return {
        "started": _str_or_none(summary.get("started")), "folder": entry.get("folder", ""),
        "in_sweep": None, "kind": MULTIRUN,
        "status": _str_or_none(summary.get("status")) or UNKNOWN_MARK,
        "exit_code": _whole(summary.get("exit_code")),
        "duration_s": seconds_between(summary.get("started"), summary.get("finished")),
        "marks": marks or UNKNOWN_MARK, "overrides": [], "cpu_s": None, "max_rss_kb": None,
        "rss_floor_kb": None, "problem": None, "steps": [], "summary_md": False,
        "jobs": len(jobs),
    }


def _when(started: Optional[str]) -> str:
    """Return an ISO start time as the history shows it: '2026-12-01 03:00:01'."""
    return started[:19].replace("T", " ") if started else "-"


def _when_row(row: Mapping[str, Any]) -> str:
    """Return when a run started; for a damaged summary, as its folder's name says (~)."""
    if row["started"]:
        return _when(row["started"])
    found = re.search(r"(\d{4}-\d\d-\d\d)/(\d\d)-(\d\d)-(\d\d)", row["folder"])
    return "~{} {}:{}:{}".format(*found.groups()) if found else "-"


def _kind_text(row: Mapping[str, Any]) -> str:
    if row["kind"] == MULTIRUN:
        return f"sweep of {row.get('jobs', 0)}"
    return "sweep job" if row["kind"] == "sweep" else "run"


def _history_cells(row: Mapping[str, Any]) -> List[str]:
    note = f"({row['problem']})" if row["problem"] else ""
    folder = f"  └ {row['folder']}" if row.get("in_sweep") else row["folder"]
    return [_when_row(row), folder, _kind_text(row), row["status"],
            "-" if row["exit_code"] is None else str(row["exit_code"]),
            format_duration(row["duration_s"]), row["marks"],
            " ".join([*row["overrides"], note]).strip()]


HISTORY_HEADER = ["started", "run", "kind", "status", "exit", "duration", "steps", "overrides"]
HISTORY_LEGEND = "steps: " + "  ".join(f"{STEP_MARKS[kind]} {word}"
                                       for kind, word in MARK_WORDS.items())
CSV_COLUMNS = ["started", "folder", "kind", "status", "exit_code", "duration_s", "marks", "steps",
               "overrides", "cpu_s", "max_rss_kb", "problem"]


def format_history(rows: List[Dict[str, Any]], fmt: str = "table") -> str:
    """Return the history rows, newest first, as a table, JSON, CSV or a Markdown table."""
    if fmt == "json":
        shown = [{k: v for k, v in row.items() if k != "summary_md"} for row in rows]
        return json.dumps(shown, indent=1, ensure_ascii=False) + "\n"
    if fmt == "csv":
        import csv  # only csv output pays for this import

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            steps = " ".join(f"{s['name']}={REUSED if s['reused'] else s['status']}"
                             for s in row["steps"])
            writer.writerow(["" if value is None else value for value in [
                row["started"], row["folder"], row["kind"], row["status"], row["exit_code"],
                row["duration_s"], row["marks"], steps, " ".join(row["overrides"]),
                row["cpu_s"], row["max_rss_kb"], row["problem"]]])
        return out.getvalue()
    if not rows:
        return "crude-link: no runs yet under outputs/ or multirun/\n"
    table = [HISTORY_HEADER, *(_history_cells(row) for row in rows)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(_md_cell(cell) or " " for cell in cells) + " |"
                 for cells in table]
        lines.insert(1, "| " + " | ".join("---" for _ in HISTORY_HEADER) + " |")
        return "\n".join([*lines, "", HISTORY_LEGEND]) + "\n"
    widths = [max(len(cells[i]) for cells in table) for i in range(len(HISTORY_HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
             for cells in table]
    return "\n".join([*lines, HISTORY_LEGEND]) + "\n"


# ── The HTML report: colours and bars (pure) ─────────────────────────────

# The report's colours: green is good, red and orange ended badly, grey did not run.
STATUS_COLOURS = {SUCCEEDED: "#2e7d32", FAILED: "#c62828", TIMED_OUT: "#ef6c00",
                  INTERRUPTED: "#6a1b9a", ABORTED: "#ad1457", RUNNING: "#1565c0",
                  REUSED: "#a5d6a7", SKIPPED: "#cfd8dc", NOT_RUN: "#f1f3f4",
                  DAMAGED: "#616161"}
UNKNOWN_COLOUR = "#9e9e9e"
DARK_TEXT = frozenset([REUSED, SKIPPED, NOT_RUN])  # light bars get dark text
TIMELINE_WIDTH, BAR_HEIGHT = 700, 22  # px
MIN_BAR, LABELLED_BAR = 8, 58  # px: every step shows; a failed one fits 'exit 124'
CHART_WIDTH, CHART_HEIGHT = 300, 70  # px, each step's durations across runs
REPORT_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#202124}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5f6368;margin:0 0 12px}
.banner{padding:10px 14px;border-radius:6px;font-size:16px;margin:8px 0 12px;color:#fff}
.legend span{display:inline-block;margin-right:14px;white-space:nowrap}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;
margin-right:4px;border:1px solid #9aa0a6}
table{border-collapse:collapse}td,th{padding:3px 8px;text-align:left;vertical-align:middle}
.timeline td{padding:2px 8px;white-space:nowrap}.timeline svg{display:block}
.history th{border-bottom:2px solid #dadce0}.history td{border-bottom:1px solid #eceff1}
.history tr:nth-child(even) td{background:#fafafa}
.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 7px;border-radius:9px;color:#fff;font-size:12px}
.marks a{text-decoration:none;font-family:monospace;font-size:15px;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart h3{font-size:14px;margin:0}
.chart p{margin:0;color:#5f6368;font-size:12px}
.mono{font-family:ui-monospace,monospace;font-size:12px}.problem{color:#b71c1c}
.nowrap{white-space:nowrap}
a{color:#1a73e8}
"""


def _colour(kind: str) -> str:
    return STATUS_COLOURS.get(kind, UNKNOWN_COLOUR)


def _step_kind(step: Mapping[str, Any]) -> str:
    return REUSED if step["reused"] else str(step["status"])


def _href(root: Path, report_dir: Path, folder: str, name: str = "") -> str:
    """Return a relative link from the report's folder to a run's folder or file in it."""
    from urllib.parse import quote  # only reports pay for this import

    target = os.path.relpath(root / folder / name if name else root / folder, report_dir)
    return html.escape(quote(Path(target).as_posix() + ("" if name else "/")))


def _step_title(row: Mapping[str, Any], step: Mapping[str, Any]) -> str:
    parts = [f"{step['index']} {step['name']}: {_step_kind(step)}"]
    if step["status"] in ENDED_BADLY and step["exit_code"] is not None:
        parts.append(describe_step_end(step))
    parts.append(format_duration(step["duration_s"]))
    if step["max_rss_kb"] is not None:
        parts.append(f"peak {format_peak(step)}")
    if (step["attempts"] or 0) > 1:
        parts.append(f"{step['attempts']} attempts")
    return html.escape(f"{_when_row(row)} {row['folder']}\n" + ", ".join(parts))


def _bar_label(step: Mapping[str, Any], width: float) -> str:
    """Return the text that fits on a step's bar: a failure's exit code first, then its name."""
    name = str(step["name"])
    if (step["attempts"] or 0) > 1:
        name += f" ×{step['attempts']}"
    if step["status"] in ENDED_BADLY:
        code = "exit ?" if step["exit_code"] is None else f"exit {step['exit_code']}"
        both = f"{name}: {code}"
        return both if len(both) * 6.6 + 8 <= width else code
    return name if len(name) * 6.6 + 8 <= width else ""


def _min_bar(step: Mapping[str, Any]) -> int:
    return LABELLED_BAR if step["status"] in ENDED_BADLY else MIN_BAR


def _timeline_scale(rows: Sequence[Mapping[str, Any]]) -> float:
    """Return pixels per second, the same for every run, so that every run's bars fit."""
    scales = []
    for row in rows:
        total = sum(step["duration_s"] or 0.0 for step in row["steps"])
        room = TIMELINE_WIDTH - sum(_min_bar(step) for step in row["steps"])
        if total > 0:
            scales.append(max(room, 0) / total)
    return min(scales, default=0.0)


def render_timeline_bars(row: Mapping[str, Any], scale: float, root: Path,
                         report_dir: Path) -> str:
    """Return one run's timeline: an inline SVG, its steps as bars in order, coloured by status."""
    if row["status"] == DAMAGED or not row["steps"]:
        what = row["problem"] or "no steps recorded"
        return (f'<svg width="{TIMELINE_WIDTH}" height="{BAR_HEIGHT}" role="img">'
                f'<rect width="{TIMELINE_WIDTH}" height="{BAR_HEIGHT}" rx="3" fill="#eeeeee" '
                f'stroke="#9e9e9e" stroke-dasharray="4 3"/><text x="8" y="15" font-size="12" '
                f'fill="#424242">{html.escape(what)}</text></svg>')
    bars, x = [], 0.0
    for step in row["steps"]:
        kind = _step_kind(step)
        width = _min_bar(step) + (step["duration_s"] or 0.0) * scale
        dashed = ' stroke-dasharray="3 2"' if kind in (SKIPPED, NOT_RUN) else ""
        label = _bar_label(step, width)
        text = (f'<text x="{x + 4:.1f}" y="15" font-size="11" font-weight="bold" '
                f'fill="{"#202124" if kind in DARK_TEXT else "#ffffff"}">{html.escape(label)}'
                f'</text>' if label else "")
        bar = (f'<g><title>{_step_title(row, step)}</title><rect x="{x:.1f}" y="1" '
               f'width="{max(width - 1, 1):.1f}" height="{BAR_HEIGHT - 2}" rx="2" '
               f'fill="{_colour(kind)}" stroke="#9aa0a6" stroke-width="0.5"{dashed}/>{text}</g>')
        if step["attempts"] and step["log"]:
            bar = f'<a href="{_href(root, report_dir, row["folder"], step["log"])}">{bar}</a>'
        bars.append(bar)
        x += width
    return (f'<svg width="{max(TIMELINE_WIDTH, math.ceil(x))}" height="{BAR_HEIGHT}" '
            f'role="img">{"".join(bars)}</svg>')


# ── The HTML report: the page (pure) ─────────────────────────────────────

def render_step_charts(rows: Sequence[Mapping[str, Any]]) -> str:
    """Return one small bar chart per step name: its duration in each run, oldest first."""
    oldest_first = list(reversed(rows))
    names: List[str] = []
    for row in rows:  # the newest run's order first, then steps only older runs had
        names += [step["name"] for step in row["steps"] if step["name"] not in names]
    if not names:
        return "<p>No step has run yet.</p>"
    slot = CHART_WIDTH / max(len(oldest_first), 1)
    charts = []
    for name in names:
        found = [(row, next((s for s in row["steps"] if s["name"] == name), None))
                 for row in oldest_first]
        durations = [s["duration_s"] for _, s in found if s and s["duration_s"] is not None]
        top = max(durations, default=0.0) or 1.0
        bars = []
        for number, (row, step) in enumerate(found):
            x = number * slot + 1
            if step is None or step["duration_s"] is None:
                bars.append(f'<rect x="{x:.1f}" y="{CHART_HEIGHT - 2}" '
                            f'width="{max(slot - 2, 1):.1f}" height="2" fill="#dadce0"/>')
                continue
            height = max(2.0, step["duration_s"] / top * (CHART_HEIGHT - 4))
            bars.append(f'<g><title>{_step_title(row, step)}</title><rect x="{x:.1f}" '
                        f'y="{CHART_HEIGHT - height:.1f}" width="{max(slot - 2, 1):.1f}" '
                        f'height="{height:.1f}" fill="{_colour(_step_kind(step))}"/></g>')
        newest = next((s for _, s in reversed(found) if s and s["duration_s"] is not None), None)
        last = format_duration(newest["duration_s"]) if newest else "-"
        charts.append(f'<div class="chart"><h3>{html.escape(name)}</h3><p>longest '
                      f'{format_duration(max(durations, default=None))} · newest {last}</p>'
                      f'<svg width="{CHART_WIDTH}" height="{CHART_HEIGHT}" role="img">'
                      f'<rect width="{CHART_WIDTH}" height="{CHART_HEIGHT}" fill="#fafafa"/>'
                      f'{"".join(bars)}</svg></div>')
    return f'<div class="charts">{"".join(charts)}</div>'


def _sweep_note(row: Mapping[str, Any]) -> str:
    if row["kind"] != "sweep":
        return ""
    return f' <span class="meta">sweep job {html.escape(row["folder"].rsplit("/", 1)[-1])}</span>'


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{_colour(status)}">{html.escape(status)}</span>'


def render_history_table(rows: Sequence[Mapping[str, Any]], root: Path, report_dir: Path
                         ) -> str:
    """Return the history table as HTML: each mark links to its step's log."""
    head = ("<tr><th>started</th><th>run</th><th>kind</th><th>status</th><th>exit</th>"
            "<th>duration</th><th>steps</th><th>CPU</th><th>peak memory</th><th>overrides</th>"
            "<th>files</th></tr>")
    body = []
    for row in rows:
        marks = []
        for step in row["steps"]:
            mark = (f'<span style="color:{_colour(_step_kind(step))}" '
                    f'title="{_step_title(row, step)}">{html.escape(step["mark"])}</span>')
            if step["attempts"] and step["log"]:
                mark = f'<a href="{_href(root, report_dir, row["folder"], step["log"])}">{mark}</a>'
            marks.append(mark)
        files = [f'<a href="{_href(root, report_dir, row["folder"], "summary.json")}">'
                 f'summary.json</a>']
        if row["summary_md"]:
            files.append(f'<a href="{_href(root, report_dir, row["folder"], SUMMARY_MD)}">'
                         f'{SUMMARY_MD}</a>')
        note = (f' <span class="problem">({html.escape(row["problem"])})</span>'
                if row["problem"] else "")
        code = "-" if row["exit_code"] is None else row["exit_code"]
        body.append(
            f'<tr><td class="mono nowrap">{html.escape(_when_row(row))}</td>'
            f'<td class="mono nowrap"><a href="{_href(root, report_dir, row["folder"])}">'
            f'{html.escape(row["folder"])}</a></td><td>{html.escape(_kind_text(row))}</td>'
            f'<td>{_badge(row["status"])}</td><td class="num">{code}</td>'
            f'<td class="num">{format_duration(row["duration_s"])}</td>'
            f'<td class="marks">{"".join(marks) or UNKNOWN_MARK}</td>'
            f'<td class="num">{format_duration(row["cpu_s"])}</td>'
            f'<td class="num">{format_peak(row)}</td>'
            f'<td class="mono">{html.escape(" ".join(row["overrides"]))}{note}</td>'
            f'<td>{" · ".join(files)}</td></tr>')
    return f'<table class="history">{head}{"".join(body)}</table>'


def _newest_banner(row: Mapping[str, Any]) -> str:
    """Return the line at the top: how the newest run went, and where it failed."""
    bad = next((step for step in row["steps"] if step["status"] in ENDED_BADLY), None)
    words = f"Newest run {_when_row(row)}: {row['status']}"
    if row["exit_code"] not in (None, 0):
        words += f" (exit code {row['exit_code']})"
    if bad:
        words += f" at step {bad['index']} {bad['name']}: {describe_step_end(bad)}"
    if row["problem"]:
        words += f": {row['problem']}"
    return (f'<div class="banner" style="background:{_colour(row["status"])}">'
            f'{html.escape(words)} · <span class="mono">{html.escape(row["folder"])}</span></div>')


def render_report(rows: Sequence[Mapping[str, Any]], root: Path, report_dir: Path,
                  made: str) -> str:
    """Return the HTML report of history rows (newest first): one file, inline CSS and SVG.

    No script and nothing fetched: it opens from a file on a machine with no network. Links
    to run folders are relative to report_dir, so they work wherever the project is moved.
    """
    counts: Dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    tally = " · ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    legend = "".join(f'<span><i class="sw" style="background:{colour}"></i>'
                     f'{html.escape(MARK_WORDS.get(kind, kind))}</span>'
                     for kind, colour in STATUS_COLOURS.items() if kind not in (ABORTED, DAMAGED))
    scale = _timeline_scale(rows)
    timeline = "".join(
        f'<tr><td class="mono"><a href="{_href(root, report_dir, row["folder"])}" '
        f'title="{html.escape(row["folder"])}">{html.escape(_when_row(row))}</a></td>'
        f'<td>{_badge(row["status"])}{_sweep_note(row)}</td>'
        f'<td>{render_timeline_bars(row, scale, root, report_dir)}</td>'
        f'<td class="num">{format_duration(row["duration_s"])}</td></tr>' for row in rows)
    body = [f"<h1>crude-link: {html.escape(root.name)}</h1>",
            f'<p class="meta">{len(rows)} newest run(s) under outputs/ and multirun/ of '
            f'<span class="mono">{html.escape(str(root))}</span>, newest first'
            f'{" (" + html.escape(tally) + ")" if tally else ""} · made {html.escape(_when(made))}'
            f'</p>']
    if not rows:
        body.append("<p>No runs yet under outputs/ or multirun/.</p>")
    else:
        body += [_newest_banner(rows[0]), f'<p class="legend">{legend}</p>',
                 "<h2>Runs</h2><p class=\"meta\">One row per run, its steps in order; width by "
                 "duration (one scale for all), a failed step's exit code on its bar.</p>",
                 f'<table class="timeline">{timeline}</table>',
                 "<h2>Step durations across runs</h2><p class=\"meta\">Oldest run on the left."
                 "</p>", render_step_charts(rows),
                 "<h2>History</h2>", render_history_table(rows, root, report_dir),
                 f'<p class="meta">{html.escape(HISTORY_LEGEND)}</p>']
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>crude-link report: {html.escape(root.name)}</title>"
            f"<style>{REPORT_CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


# ── History and report (I/O) ─────────────────────────────────────────────

REPORT_RUNS = 30  # the runs in a report when scheduler.history is not set


def mask_override(override: str) -> str:
    """Return a Hydra override with the value of a secret-named key as ***."""
    key, equals, _ = override.partition("=")
    return f"{key}={MASK}" if equals and is_secret_key(key) else override


def find_runs(root: Path) -> List[Tuple[Tuple[str, str], str, Path]]:
    """Return (date and second from its folder names, kind, folder) of each recorded run.

    Runs under outputs/<date>/<time>-<pid>/ and sweep jobs under multirun/<date>/<time>/<n>/:
    globbing for summary.json reads no file, so thousands of runs stay fast.
    """
    found = [((path.parts[-3], path.parts[-2][:8]), "run", path.parent)
             for path in root.glob("outputs/*/*/summary.json") if path.parts[-3] != LATEST_LINK]
    found += [((path.parts[-4], path.parts[-3][:8]), "sweep", path.parent)
              for path in root.glob("multirun/*/*/*/summary.json")
              if LATEST_LINK not in path.parts[-4:-2]]
    found += [((path.parts[-3], path.parts[-2][:8]), MULTIRUN, path.parent)
              for path in root.glob("multirun/*/*/summary.json") if path.parts[-3] != LATEST_LINK]
    return found


def read_run(root: Path, kind: str, folder: Path) -> Dict[str, Any]:
    """Return a run's history entry: its summary.json (or why it is unreadable), overrides."""
    entry: Dict[str, Any] = {"folder": folder.relative_to(root).as_posix(), "kind": kind,
                             "summary": None, "problem": None,
                             "overrides": [mask_override(word) for word in read_overrides(folder)],
                             "summary_md": (folder / SUMMARY_MD).is_file()}
    try:
        entry["summary"] = json.loads((folder / "summary.json").read_bytes())
    except OSError as error:
        entry["problem"] = f"summary.json cannot be read: {error.strerror}"
    except ValueError as error:  # JSON or UTF-8: half-written, or damaged
        entry["problem"] = f"summary.json is damaged or half-written: {_first_line(error)}"
    return entry


def read_history(root: Path, count: int) -> List[Dict[str, Any]]:
    """Return the entries of the newest count runs (0: all), newest first.

    Folder names order the runs to the second, so only the runs shown are read; runs of the
    same second are put in order by the start time their summaries record.
    """
    found = sorted(find_runs(root), key=lambda item: item[0], reverse=True)
    # A sweep with a summary.json of its own is one entry, its jobs listed under it.
    sweeps = {folder for _, kind, folder in found if kind == MULTIRUN}
    jobs: Dict[Path, List[Path]] = {}
    for _, kind, folder in found:
        if kind == "sweep" and folder.parent in sweeps:
            jobs.setdefault(folder.parent, []).append(folder)
    found = [item for item in found if not (item[1] == "sweep" and item[2].parent in sweeps)]
    if count and len(found) > count:
        cut = found[count - 1][0]
        found = [item for number, item in enumerate(found) if number < count or item[0] == cut]
    entries = []
    for second, kind, folder in found:
        entry = read_run(root, kind, folder)
        summary = entry["summary"]
        started = summary.get("started") if isinstance(summary, dict) else None
        entries.append((second, str(started or ""), entry))
    entries.sort(key=lambda item: item[:2], reverse=True)
    listed = []
    for _, _, entry in entries[:count or None]:
        listed.append(entry)
        sweep = root / entry["folder"]
        for folder in sorted(jobs.get(sweep, []), key=lambda job: _job_sort_key(job.name)):
            listed.append({**read_run(root, "sweep", folder), "in_sweep": entry["folder"]})
    return listed


def _job_sort_key(name: str) -> Tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def run_history(options: SchedulerOptions, root: Path) -> int:
    """Print the newest runs (scheduler.history), or write the HTML report; return exit code."""
    count = options.history if options.history is not None else REPORT_RUNS
    rows = [history_row(entry) for entry in read_history(root, count)]
    if not options.report:
        try:
            sys.stdout.write(format_history(rows, options.history_format))
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has seen enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    path = report_path(options.report, root)
    try:
        write_text_atomic(path, render_report(rows, root, path.parent, now_iso()))
    except OSError as error:  # a read-only or full disk: the machine's fault
        print(colored(f"crude-link: cannot write the report {path}: {error.strerror}", "red"),
              file=sys.stderr)
        return EXIT_SOFTWARE
    print(f"crude-link: wrote the report of {len(rows)} run(s) to {path}")
    return EXIT_OK


# ── Cron ─────────────────────────────────────────────────────────────────

def check_cron_words(python: str, root: Path, config_dir: Optional[str], config_name: str,
                     overrides: Sequence[str]) -> List[str]:
    """Return a problem for each word of a crontab line that holds a control character.

    Quoting protects such a word from the shell, not from cron: cron reads a newline (or a
    carriage return, to some editors) as the end of the line, and runs the next one too.
    """
    rename = "rename it"
    words = [("the Python interpreter", python, "use one at another path"),
             ("the root folder", str(root), "move the folder"),
             ("--config-dir", config_dir or "", rename), ("--config-name", config_name, rename)]
    words += [("the override", override, "set that value in the config file instead")
              for override in overrides]
    problems = []
    for what, word, fix in words:
        if any(0xD800 <= ord(char) <= 0xDFFF for char in word):  # argv bytes that are not UTF-8
            problems.append(f"{what} {word!r} is not UTF-8 text, which a crontab must be; {fix}")
        control = next((char for char in word if is_control(char)), None)
        if control is not None:
            problems.append(f"{what} {word!r} holds {control_name(control)}: a crontab line "
                            f"cannot carry a control character (a newline would start a line "
                            f"of its own); {fix}")
    return problems


def cron_entry(schedule: str, python: str, root: Path, config_dir: Optional[str],
               config_name: str, overrides: Sequence[str], quiet: bool = False
               ) -> Tuple[str, str]:
    """Return this installation's crontab line and the tag comment that ends it.

    The command uses absolute paths (cron's PATH and cwd are not the user's), repeats the
    config and every override except scheduler.cron, and appends its output to cron.log.
    With quiet, the output also goes to cron, which mails it: quiet prints only failures.
    """
    argv = [python, str(root / "scheduler.py")]
    if config_dir:
        argv += ["--config-dir", config_dir]
    if config_name != "config":
        argv += ["--config-name", config_name]
    argv += [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "scheduler.cron"]
    tag = f"# crude-link: {root} config={config_name}"
    if config_dir:
        tag += f" dir={config_dir}"
    cron_log = shlex.quote(str(root / "outputs" / CRON_LOG))
    command = (f"{shlex.join(argv)} 2>&1 | tee -a {cron_log}" if quiet
               else f"{shlex.join(argv)} >> {cron_log} 2>&1")
    return _cron_escape(f"{schedule} {command} {tag}"), _cron_escape(tag)


def _cron_escape(text: str) -> str:
    """Return text as cron must see it: cron reads % as a newline and a backslash as an escape."""
    return text.replace("\\", "\\\\").replace("%", "\\%")


def edit_crontab(table: bytes, tag: str, line: Optional[str]) -> bytes:
    """Return the crontab without its active lines ending in tag, plus line if given.

    A line the user commented out is the user's, even when it ends with the tag.
    """
    marker = tag.encode()
    kept = [row for row in table.splitlines(keepends=True)
            if not row.rstrip(b"\r\n").endswith(marker) or row.lstrip().startswith(b"#")]
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += b"\n"
    return b"".join(kept) + (line.encode() + b"\n" if line else b"")


class CrontabError(Exception):
    """The crontab command is missing, or refused to read or write the table."""


def _crontab(*args: str, table: Optional[bytes] = None) -> bytes:
    """Run the crontab command; return its output or raise CrontabError with its message."""
    try:
        done = subprocess.run(["crontab", *args], input=table, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CrontabError(f"cannot run crontab ({error}); is cron installed?") from error
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", errors="replace").strip()
        if args == ("-l",) and "no crontab" in message:
            return b""
        raise CrontabError(message or f"crontab {' '.join(args)} exited {done.returncode}")
    return done.stdout


def run_cron_action(action: str, line: str, tag: str) -> int:
    """Print, install or remove this folder's crontab line; return the exit code."""
    if action == "print":
        print(line)
        return EXIT_OK
    try:
        before = _crontab("-l")
        after = edit_crontab(before, tag, line if action == "install" else None)
        if after != before:
            (ROOT / "outputs").mkdir(parents=True, exist_ok=True)  # for cron.log's >>
            _crontab("-", table=after)
    except CrontabError as error:
        print_problems([f"scheduler.cron={action}: crontab left unchanged: {error}"])
        return EXIT_CONFIG_ERROR
    if action == "install":
        print(f"crude-link: installed in your crontab:\n{line}")
    else:
        removed = len(before.splitlines()) - len(after.splitlines())
        print(f"crude-link: removed {removed} crontab line(s) tagged '{tag}'")
    return EXIT_OK


def warn_urls_in_crontab(overrides: Sequence[str]) -> None:
    """Warn when the crontab line would carry a notification URL, given as an override."""
    found = url_overrides(overrides)
    if found:
        _warn([f"crude-link: warning: the crontab line repeats {', '.join(found)} in clear "
               "(URLs are credentials); put the URL in config.yaml as ${oc.env:...} instead"])


def run_cron(options: SchedulerOptions, config_dir: Optional[str], config_name: str,
             overrides: List[str]) -> int:
    """Check the words of this folder's crontab line, then print, install or remove it."""
    action = options.cron or ""
    problems = check_cron_words(sys.executable, ROOT, config_dir, config_name,
                                overrides if action != "remove" else [])
    if problems:
        unchanged = "" if action == "print" else "; crontab left unchanged"
        print_problems([f"scheduler.cron={action}: {problem}{unchanged}" for problem in problems])
        return EXIT_CONFIG_ERROR
    line, tag = cron_entry(options.schedule or "", sys.executable, ROOT, config_dir,
                           config_name, overrides, quiet=options.quiet)
    if action in ("print", "install"):
        warn_urls_in_crontab(overrides)
    return run_cron_action(action, line, tag)


def cron_invocation(hydra_cfg: Any) -> Tuple[Optional[str], str, List[str]]:
    """Return the --config-dir (or None), config name and overrides this run was given."""
    config_dir = next((source.path for source in hydra_cfg.runtime.config_sources
                       if source.provider == "command-line"), None)
    return config_dir, hydra_cfg.job.config_name, list(hydra_cfg.overrides.task)


# ── The sweep record ─────────────────────────────────────────────────────

NO_RECORD = "no_record"  # a sweep's job that left no summary.json and no result behind
JOB_FILE = "job.json"  # in the run folder of a job run in a process of its own (submitit)
ENDED_STATES = (FAILED, TIMED_OUT, INTERRUPTED, RUNNING)  # a step a job ended or stopped at


def job_output(job: Path, task: Optional[Path]) -> List[str]:
    """Return the files that hold a job's output, as the launcher kept them (submitit's)."""
    if task is not None:
        return [str(path) for path in sorted(task.glob("*_log.*"))]
    noted = read_json(job / JOB_FILE)
    return [str(noted[name]) for name in ("stderr", "stdout") if isinstance(noted.get(name), str)]


def planned_jobs(sweep: Path) -> Optional[List[List[str]]]:
    """Return the overrides of every job of a sweep, from Hydra's multirun.yaml; None: unknown."""
    with contextlib.suppress(OSError, OmegaConfBaseException, yaml.YAMLError):
        config = OmegaConf.load(sweep / "multirun.yaml")
        sweeper = OmegaConf.to_container(OmegaConf.select(config, "hydra.sweeper"))
        task = OmegaConf.to_container(OmegaConf.select(config, "hydra.overrides.task"))
        if (isinstance(sweeper, dict) and "BasicSweeper" in str(sweeper.get("_target_"))
                and isinstance(task, list)):
            params = sweeper.get("params") or {}
            return expand_sweep([f"{k}={v}" for k, v in params.items()] + list(map(str, task)))
    return None


def _job_number(submitit_id: str) -> int:
    """Return the job number of submitit's job id: 11_3 (array task 3) → 3; 11 → 0."""
    return int(submitit_id.rsplit("_", 1)[1]) if "_" in submitit_id else 0


def _sent_to_slurm(folder: Path) -> bool:
    """Return whether the sweep's jobs went to Slurm: submitit wrote an sbatch script."""
    return any("#SBATCH" in _read_text(script)
               for script in (folder / ".submitit").glob("*/*_submission.sh"))


def slurm_tasks(sweep: Path) -> Dict[int, Path]:
    """Return job number → submitit's folder of its job: 11_3 is array task 3, 11 job 0."""
    tasks = [path for path in (sweep / ".submitit").glob("*") if any(path.glob("*_submitted.pkl"))]
    if sum("_" not in path.name for path in tasks) > 1:
        # Named by pid (submitit_local): no job number in the names.
        tasks = [path for path in tasks if "_" in path.name]
    return {_job_number(path.name): path for path in tasks}


def task_problem(problems: Mapping[str, str], task: Optional[Path]) -> Optional[str]:
    """Return what the watch of the sweep's Slurm jobs found about one job's task, if any."""
    if task is None:
        return None
    return problems.get(task.name.split("_")[0]) or problems.get(task.name)


def job_entry(sweep: Path, number: int, planned: Optional[List[str]], code: Optional[int],
              task: Optional[Path], problem: Optional[str], ended: bool) -> Dict[str, Any]:
    """Return a job's entry in the sweep's summary.json, from what the job left in its folder.

    code is its exit code when it ran in this process; problem, what the watch of its
    Slurm job found; task, submitit's folder of that job.
    """
    folder = sweep / str(number)
    summary = read_json(folder / "summary.json")
    entry: Dict[str, Any] = {"number": number, "overrides": read_overrides(folder) or planned or [],
                             "run_dir": str(folder), "status": NOT_RUN, "exit_code": None,
                             "failed_step": None}
    steps = summary.get("steps") or []
    if summary.get("status"):
        failed = [step["name"] for step in steps if step.get("status") in ENDED_STATES]
        entry.update(status=summary["status"], exit_code=summary.get("exit_code"),
                     failed_step=failed[0] if failed else None)
        if summary.get("problems"):
            entry.update(note="config error, no step was run", problems=summary["problems"])
        if steps and not any(step.get("attempts") for step in steps):
            reused = [step["reused_from"] for step in steps if "reused_from" in step]
            if reused:
                entry["reused_from"] = reused[-1]  # the last step ran in the newest folder
    elif code is not None:  # a dry run, a lock held: no summary of its own
        entry.update(status=SUCCEEDED if code == EXIT_OK else FAILED, exit_code=code)
    elif task is not None and any(task.glob("*_result.pkl")) or folder.is_dir() and (
            not ended and not problem):
        entry["status"] = SUCCEEDED if ended else RUNNING
    elif folder.is_dir() or problem:
        entry.update(status=NO_RECORD, note=problem or "left no summary.json: killed or lost "
                     "before crude-link could record it")
    if problem:
        entry["note"] = problem
    output = job_output(folder, task)
    if output:
        entry["output"] = output
    return entry


def record_sweep(sweep: Path, codes: Sequence[int], problems: Mapping[str, str] = {},
                 status: str = RUNNING, exit_code: Optional[int] = None) -> None:
    """Rewrite the sweep folder's summary.json from what its jobs left; point multirun/latest."""
    try:
        before = read_json(sweep / "summary.json")
        planned = planned_jobs(sweep) or []
        numbers = sorted({int(p.name) for p in sweep.iterdir() if p.name.isdigit()}
                         | set(range(len(planned))))
        slurm = slurm_tasks(sweep)
        jobs = [job_entry(sweep, n, planned[n] if n < len(planned) else None,
                          codes[n] if n < len(codes) else None, slurm.get(n),
                          task_problem(problems, slurm.get(n)), status != RUNNING)
                for n in numbers]
        data = {"status": status, "exit_code": exit_code,
                "started": before.get("started") or now_iso(),
                "finished": None if status == RUNNING else now_iso(), "jobs": jobs}
        write_text_atomic(sweep / "summary.json", json.dumps(data, indent=1) + "\n")
    except OSError as error:  # the jobs' own records still tell the truth
        log.warning("could not record the sweep in %s: %s", sweep / "summary.json", error)
    if sweep.parent.parent == ROOT / "multirun" and not _points_at(sweep.parent.parent, sweep):
        link_latest(sweep.parent.parent, sweep)


def _points_at(folder: Path, target: Path) -> bool:
    with contextlib.suppress(OSError):
        return (folder / LATEST_LINK).resolve() == target.resolve()
    return False


# ── Sweep jobs: where they resume, when the sweep ends early ─────────────

_LAUNCHING_PID = os.getpid()  # a multirun job running elsewhere sees the launcher's pid here


def find_latest_sweep(multirun: Path, besides: Path) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """Return the folder and summary of the most recently started sweep but besides.

    A sweep none of whose jobs got past its config (a refused resume, say) does not count.
    """
    sweeps = [(path.parent, read_json(path)) for path in multirun.glob("*/*/summary.json")
              if path.parent.parent.name != LATEST_LINK and path.parent != besides]
    return max(((folder, data) for folder, data in sweeps
                if any(job.get("status") != NOT_RUN and not job.get("problems")
                       for job in data.get("jobs") or [])),
               key=lambda sweep: str(sweep[1].get("started")), default=None)


def _wants_resume(cfg: DictConfig) -> bool:
    with contextlib.suppress(OmegaConfBaseException):
        return OmegaConf.select(cfg, "scheduler.resume", default=False) is True
    return False


def find_resume_source(outputs: Path, multirun: Path) -> ResumeFrom:
    """Return where this run resumes: the newest run, or this job's part of the newest sweep."""
    if not _in_multirun():
        return ResumeFrom(find_latest_run(outputs))
    sweep = Path(HydraConfig.get().sweep.dir)
    earlier = find_latest_sweep(multirun, sweep)
    if earlier is None:
        return ResumeFrom(problems=(f"scheduler.resume: there is no earlier sweep (a "
                                    f"summary.json) under {multirun} to resume",))
    entry, problems = match_sweep_job(earlier[1], earlier[0], planned_jobs(sweep),
                                      list(HydraConfig.get().overrides.task))
    if entry is None:
        return ResumeFrom(problems=tuple(problems))
    folder = Path(str(entry.get("run_dir")))
    summary = read_json(folder / "summary.json")
    if entry.get("status") == SUCCEEDED:
        return ResumeFrom((folder, summary) if summary else None, reuse=str(folder))
    if summary.get("steps"):
        return ResumeFrom((folder, summary))
    return ResumeFrom(fresh=True)  # it never started, or left nothing to resume from


def record_job_process(run_dir: Path) -> None:
    """Note in the job's run folder where its process writes its output, for the sweep."""
    noted: Dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    for name, fd in (("stdout", 1), ("stderr", 2)):
        with contextlib.suppress(OSError):
            path = os.readlink(f"/proc/self/fd/{fd}")  # submitit's log files, on Linux
            if os.path.isfile(path):
                noted[name] = path
    try:
        write_text_atomic(run_dir / JOB_FILE, json.dumps(noted, indent=1) + "\n")
    except OSError as error:
        log.warning("could not write %s: %s", run_dir / JOB_FILE, error)


class SweepEnded(BaseException):
    """A job of a sequential sweep failed and no later job may start (fail_fast, or abort)."""

    def __init__(self, code: int, status: str) -> None:
        super().__init__(code, status)
        self.code, self.status = code, status


def _sweep_here() -> Optional[Path]:
    """Return the sweep folder when this process runs a multirun's jobs itself, else None."""
    if os.getpid() != _LAUNCHING_PID or not _in_multirun():
        return None
    return Path(HydraConfig.get().sweep.dir)


def record_sweep_here(sweep: Optional[Path], codes: Sequence[int]) -> None:
    """Record a sweep whose jobs run in this process, in a sweep folder of crude-link's own.

    Only there does the launching process find the folder again to record the sweep's end:
    a record of a folder set by the user would say `running` for good.
    """
    if sweep is not None and sweep.parent.parent == ROOT / "multirun" and \
            sweep.name.endswith(f"-{_LAUNCHING_PID}"):
        record_sweep(sweep, codes)


def end_sweep_early(options: SchedulerOptions, run_dir: Path, code: int,
                    source: ResumeFrom) -> None:
    """Raise SweepEnded after a failed job of a sequential sweep that ends the sweep.

    That is, with fail_fast, after an abort at the dialog, or when the resume is refused
    (every job would be).
    """
    aborted = read_json(run_dir / "summary.json").get("status") == ABORTED
    if code and (options.fail_fast or aborted or source.problems):
        why = ("the job was aborted" if aborted else "the resume was refused" if source.problems
               else "fail_fast=true")
        print(colored(f"crude-link: {why}: no later job of the sweep is started", "yellow"),
              file=sys.stderr)
        raise SweepEnded(code, ABORTED if aborted else FAILED)


# ── Hydra's main ─────────────────────────────────────────────────────────

def _log_to_file_only() -> None:
    """Send crude-link's log records to Hydra's log file only (the terminal gets colour)."""
    log.propagate = False
    log.setLevel(logging.INFO)
    logging.raiseExceptions = False  # a full disk: no traceback from a failed log write
    log.handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


_job_exit_codes: List[int] = []  # the one module global: how exit codes get out of Hydra


def first_failure(codes: Sequence[int]) -> int:
    """Return the exit code of a process that ran these jobs: the first non-zero one, else 0."""
    return next((code for code in codes if code), EXIT_OK)


@contextlib.contextmanager
def _steps_output_dir(folder: Path) -> Iterator[None]:
    """Let `${hydra:runtime.output_dir}` in the config mean folder while it is resolved."""
    runtime = HydraConfig.get().runtime
    saved = runtime.output_dir
    with read_write(runtime):  # type: ignore[arg-type]
        runtime.output_dir = str(folder)
        try:
            yield
        finally:
            runtime.output_dir = saved


def _select_hydra(path: str) -> Any:
    """Resolve `${hydra:path}` as Hydra does, but fail on a key Hydra's config lacks."""
    missing = object()
    value = OmegaConf.select(HydraConfig.get(), path, default=missing)  # type: ignore[arg-type]
    if value is missing:  # Hydra's own resolver quietly returns null here
        raise KeyError(f"Hydra's config has no key '{path}' (e.g. runtime.output_dir, job.name)")
    return value


class JobFailed(CompactHydraException):
    """A multirun job failed (Hydra prints only this message; crude-link's report follows)."""


# Hydra 1.3 needs version_base="1.3" (without it, it warns and behaves as 1.1 did); Hydra 1.4
# deprecates the parameter, warning on every run even for None, and has no older behaviour.
_VERSION_BASE: Dict[str, Any] = (
    {"version_base": "1.3"} if tuple(map(int, hydra.__version__.split(".")[:2])) < (1, 4) else {})
# OmegaConf 2.4 renamed register_new_resolver to register_resolver and warns at the old name;
# OmegaConf 2.3's register_resolver is the deprecated legacy kind (string arguments only).
_REGISTER_RESOLVER = ("register_new_resolver" if omegaconf_version.startswith("2.3.")
                      else "register_resolver")


@hydra.main(config_path=".", config_name="config", **_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    if not _job_exit_codes:  # a process's first job only: in a multirun's later jobs, it
        gc.freeze()  # would freeze the earlier jobs' garbage too, never to be freed
    rotate_cron_log(ROOT / "outputs" / CRON_LOG)  # before this run writes to it
    _log_to_file_only()
    getattr(OmegaConf, _REGISTER_RESOLVER)("hydra", _select_hydra, replace=True)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    made_by_hydra = hydra_made(run_dir)
    sweep = _sweep_here()
    record_sweep_here(sweep, _job_exit_codes)
    if not sweep and _in_multirun():
        record_job_process(run_dir)
    source = (find_resume_source(ROOT / "outputs", ROOT / "multirun") if _wants_resume(cfg)
              else ResumeFrom())
    with _steps_output_dir(steps_output_dir(run_dir, source.previous)):
        steps, options, problems = load_config(cfg, ROOT, sys.executable, run_dir)
    plan: Optional[RunPlan] = None
    history = options.history is not None or bool(options.report)  # these run no step
    if not problems and not options.cron and not history:
        plan, problems = plan_job(steps, options, run_dir, source, ROOT / "outputs")
    stop = StopRequest()
    if problems or plan is None and not options.cron and not history:
        print_problems(problems)
        code = EXIT_CONFIG_ERROR
        if _in_multirun():
            write_config_error(run_dir, problems)
    elif options.cron:
        code = run_cron(options, *cron_invocation(HydraConfig.get()))
    elif history:
        code = run_history(options, ROOT)
    else:
        try:
            assert plan is not None
            code = run_job(plan, options, run_dir, stop)
        except OSError as error:
            if error.errno is None:
                raise
            print_fault(error, run_dir, "no step was run")
            code = EXIT_SOFTWARE
    _job_exit_codes.append(code)
    if not _in_multirun():  # a sweep's report reads each job's folder: it stays
        remove_unused_run_dir(run_dir, made_by_hydra, ROOT / "outputs",
                              outputs_too=not options.cron)
    record_sweep_here(sweep, _job_exit_codes)
    if stop.signum is not None and sweep:
        raise SweepStopped(stop.signum)  # Hydra's own launcher: no later job starts either
    if sweep:
        end_sweep_early(options, run_dir, code, source)
    if code and os.getpid() != _LAUNCHING_PID:
        # A job in a process of its own (submitit on Slurm, say): its exit code would stay
        # there, so fail through Hydra, which raises this in the launching process.
        raise JobFailed(f"crude-link: job {HydraConfig.get().job.num} failed "
                        f"(exit code {code}); its run folder: {run_dir}")


# ── Hydra's error reports ────────────────────────────────────────────────

class HeldErrorReport:
    """sys.stderr while Hydra sets a job up: holds back its traceback of an error crude-link
    says in one line instead.

    Hydra makes the run folder, its log file and .hydra/ before main runs, and reports what
    fails there (a read-only or full disk) with a traceback, then exits 1; so too a config
    file that its YAML parser refuses although libyaml took it (a tab inside a key, say).
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.held: List[str] = []

    def write(self, text: str) -> int:
        if _one_line_error(sys.exc_info()[1]) is not None and not _inside_main():
            self.held.append(text)
            return len(text)
        return int(self.stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _inside_main() -> bool:
    """Return whether crude-link's main (Hydra's task function) is on the call stack."""
    code = main.__wrapped__.__code__
    frame: Any = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _one_line_error(error: Optional[BaseException]) -> Optional[BaseException]:
    """Return the fault of the machine or the YAML error behind an error, or None."""
    fault = machine_fault(error)
    for _ in range(10):
        if fault is not None or error is None or isinstance(error, yaml.YAMLError):
            return fault or error
        error = error.__cause__ or error.__context__
    return None


def reader_gone() -> int:
    """Exit quietly when what reads our output has gone (`| head -1`): as `cat` does."""
    with contextlib.suppress(OSError):  # Python flushes stdout at exit: let it go nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def report_hydra_error(hydra_exit: SystemExit, held: HeldErrorReport, where: Path
                       ) -> Optional[int]:
    """Say in one line the error Hydra exited on, if crude-link can; return the exit code."""
    sys.stderr = held.stream  # Hydra is done
    error = _one_line_error(hydra_exit.__context__) if hydra_exit.code == 1 else None
    if isinstance(error, BrokenPipeError):  # `--cfg job | head -1`: the reader has seen enough
        return reader_gone()
    if isinstance(error, OSError):
        print_fault(error, where, "no step was run")
        return EXIT_SOFTWARE
    if error is not None:
        path = Path(getattr(getattr(error, "problem_mark", None), "name", "config"))
        problem = getattr(error, "problem", None) or _first_line(error)
        print(colored(f"crude-link: {path.name} is not valid YAML; no step was run:", "red",
                      attrs=["bold"]) + f"\n  {path}: {problem}{_at(error)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    held.stream.write("".join(held.held))  # not ours to shorten after all
    return None


# ── The sweep report ─────────────────────────────────────────────────────

GONE_WITHOUT_RESULT = "ended without a result: cancelled, or killed before crude-link " \
                      "could finish it"


def _job_overrides(job: Path) -> str:
    """Return ' (lr=0.1 seed=2)': what the job was run with, from Hydra's record of it."""
    words = read_overrides(job)
    return f" ({' '.join(words)})" if words else ""


def sweep_report(folder: Path, problems: Mapping[str, str]) -> Tuple[List[str], int]:
    """Return lines naming each failed job of a sweep folder and its logs, and the exit code.

    problems holds what a watch of the sweep's Slurm jobs found, by job or array id. A job
    that left no summary.json failed only if it also left no result: a dry run, or a resume
    with nothing to do, writes no summary and succeeds.
    """
    slurm = slurm_tasks(folder)
    numbers = sorted({int(path.name) for path in folder.iterdir() if path.name.isdigit()}
                     | set(slurm))
    lines, codes = [], []
    for number in numbers:
        job = folder / str(number)
        summary = read_json(job / "summary.json")
        task = slurm.get(number)
        problem = task_problem(problems, task)
        config_error = bool(summary.get("problems"))
        if not problem and not config_error and (
                summary.get("status") == SUCCEEDED
                or not summary and (task is None or any(task.glob("*_result.pkl")))):
            continue
        code = summary.get("exit_code") or EXIT_FAILED
        codes.append(code)
        if problem:
            how = problem
        elif config_error:
            how = f"config error, no step was run (exit code {code}); {job / 'scheduler.log'}"
        elif summary:
            how = f"{summary.get('status')}, exit code {code}; {job / 'summary.json'}"
        else:
            how = GONE_WITHOUT_RESULT
        lines.append(f"  job {number}{_job_overrides(job)}: {how}")
        lines.extend(f"    {'Slurm output' if task else 'output'}: {path}"
                     for path in job_output(job, task))
    if lines:
        lines.insert(0, f"crude-link: {len(codes)} of {len(numbers)} job(s) failed "
                        f"in {folder}:")
    return lines, codes[0] if codes else EXIT_OK


# ── Fail fast on Slurm ───────────────────────────────────────────────────

def wants_fail_fast(sweep: Path) -> bool:
    """Return whether a sweep was started with scheduler.fail_fast=true (its multirun.yaml)."""
    with contextlib.suppress(OSError, OmegaConfBaseException, yaml.YAMLError):
        config = OmegaConf.load(sweep / "multirun.yaml")
        return OmegaConf.select(config, "scheduler.fail_fast", default=False) is True
    return False


def array_tasks(job: str) -> List[str]:
    """Return the task ids squeue's row of pending array tasks means: 11_[2-3,5] → 11_2..."""
    match = re.fullmatch(r"(\d+)_\[([\d,-]+)\]", job)
    if match is None:
        return [job]
    tasks = []
    for part in match[2].split(","):
        first, _, last = part.partition("-")
        tasks += [f"{match[1]}_{n}" for n in range(int(first), int(last or first) + 1)]
    return tasks


def fail_fast_problems(sweep: Path, queued: Sequence[Tuple[str, str, str]]) -> Dict[str, str]:
    """Return task id → why, for the queued jobs fail_fast cancels now; {} if none is to be."""
    failed = [job for job in read_json(sweep / "summary.json").get("jobs") or []
              if job.get("status") in (FAILED, TIMED_OUT, ABORTED)]
    if not failed or not queued or not wants_fail_fast(sweep):
        return {}
    why = f"cancelled: fail_fast=true, after job {failed[0].get('number')} failed"
    return {task: why for job, _, _ in queued for task in array_tasks(job)}


# ── The sweep watch ──────────────────────────────────────────────────────

# Slurm's reasons for a pending job that no amount of waiting cures.
NEVER_STARTS = frozenset([
    "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
    "InvalidAccount", "InvalidQOS", "DependencyNeverSatisfied", "QOSMaxCpuPerJobLimit",
    "QOSMaxGRESPerJob", "QOSMaxNodePerJobLimit", "QOSMaxWallDurationPerJobLimit",
    "AssocMaxCpuPerJobLimit", "AssocMaxGRESPerJob", "AssocMaxNodePerJobLimit",
    "AssocMaxWallDurationPerJobLimit"])

SWEEP_POLL = 2.0  # seconds between two looks at the sweep's jobs in squeue

# How long jobs gone from squeue may take to show their results (a shared file system's
# attribute cache may lag) before the sweep stops waiting for them.
NO_RESULT_GRACE = 30.0


class SweepWatch:
    """The launching process of a multirun: its jobs on Slurm, and a report at the end.

    hydra-submitit-launcher waits for a result file from each job; without Slurm
    accounting (no sacct) it waits forever for a job that never writes one: one
    cancelled while pending, or pending for more than any node has. A thread looks at
    squeue for this sweep's jobs (their output files are in the sweep folder), cancels
    those that can never start, and ends the wait when no job is left in squeue but
    some left no result. Ctrl-C or SIGTERM cancels every job of the sweep.
    """

    def __init__(self, root: Path, pid: int, own_folder: bool = True) -> None:
        self.root, self.pid, self.started = root, pid, time.time()
        self.own_folder = own_folder  # False: the user set hydra.sweep.dir; we cannot find it
        self.problems: Dict[str, str] = {}  # Slurm job (or array) id → why it has no result
        self.gave_up = False
        self.slurm = False  # squeue is there to look at
        self.failed_fast = False  # fail_fast has cancelled the sweep's other jobs
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "SweepWatch":
        self.slurm = bool(shutil.which("squeue"))
        if self.own_folder:  # also to keep the sweep's summary.json of jobs run elsewhere
            self._thread = threading.Thread(target=self._watch, name="sweep-watch",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def sweep_dir(self) -> Optional[Path]:
        """Return this process's sweep folder (crude-link's default names it by pid)."""
        if not self.own_folder:
            return None
        found = [path for path in self.root.glob(f"multirun/*/*-{self.pid}")
                 if path.is_dir() and path.stat().st_mtime >= self.started - 1]
        return max(found, key=lambda path: path.stat().st_mtime, default=None)

    def _watch(self) -> None:
        since: Optional[float] = None
        while not self._done.wait(SWEEP_POLL):
            folder = self.sweep_dir()
            if folder is not None and (folder / ".submitit").is_dir():
                record_sweep(folder, [], self.problems)  # its jobs run in other processes
            jobs = self.queued(folder) if folder and self.slurm else None
            if folder and jobs and not self.failed_fast:
                self._fail_fast(folder, jobs)
            if folder is None or jobs is None:
                continue
            for job, state, reason in jobs:
                if state == "PENDING" and reason in NEVER_STARTS and not self._problem(job):
                    self.problems[job.split("_[")[0]] = (
                        f"can never start: Slurm says {reason} (it asks for more than the "
                        f"partition or any node offers)")
                    _scancel(job)
            # Only jobs sent to Slurm (submitit_local's never show in squeue).
            missing = [] if jobs or not _sent_to_slurm(folder) else self.without_result(folder)
            explained = all(self._problem(job) for job in missing)  # we cancelled them
            since = (since or time.monotonic()) if missing else None
            if since is not None and (explained
                                      or time.monotonic() - since >= NO_RESULT_GRACE):
                for job in missing:
                    self.problems.setdefault(job, GONE_WITHOUT_RESULT)
                self.gave_up = True
                # Stop waiting for results that will never come: SIGTERM, which the
                # launching process handles (SIGINT may be ignored, in a background job).
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def _fail_fast(self, folder: Path, jobs: List[Tuple[str, str, str]]) -> None:
        """With fail_fast, once a job has failed cancel the others (they end interrupted)."""
        cancelled = fail_fast_problems(folder, jobs)
        if cancelled:
            self.failed_fast = True
            self.problems.update(cancelled)
            self.cancel(signal.SIGTERM)

    def _problem(self, job: str) -> Optional[str]:
        return self.problems.get(job.split("_")[0]) or self.problems.get(job)

    def queued(self, folder: Path) -> Optional[List[Tuple[str, str, str]]]:
        """Return (job id, state, reason) of the sweep's jobs in squeue, or None.

        Job ids are as submitit names its folders, 11_2 for array task 2 (squeue's JobID
        would give the array's own id, 11, to one of its tasks, and scancel 11 means them
        all); the pending tasks of an array are one row, 11_[2-3] (as scancel takes it).
        """
        rows = _squeue(["JobArrayID", "State", "Reason", "StdOut"])
        if rows is None:
            return None
        inside = f"{folder}{os.sep}"
        return [(re.sub(r"%\d+\]$", "]", job), state, reason)  # 11_[2-3%4]: 4 at once
                for job, state, reason, out in rows if out.startswith(inside)]

    @staticmethod
    def without_result(folder: Path) -> List[str]:
        """Return the ids of the sweep's submitted jobs that have left no result (yet)."""
        jobs = folder / ".submitit"
        if not jobs.is_dir():
            return []
        return sorted(job.name for job in jobs.iterdir() if job.is_dir()
                      and any(job.glob("*_submitted.pkl")) and not any(job.glob("*_result.pkl")))

    def cancel(self, signum: int) -> None:
        """Stop every job of the sweep: running ones get signum, so they end as interrupted."""
        folder = self.sweep_dir()
        jobs = self.queued(folder) if folder else None
        if not folder or not jobs:
            return
        print(f"crude-link: cancelling the sweep's {len(jobs)} job(s) in Slurm", file=sys.stderr)
        for job, state, _ in jobs:
            if state == "PENDING":
                _scancel(job)
            else:
                _scancel(job, "--signal", signal.Signals(signum).name[3:])
        end = time.monotonic() + NO_RESULT_GRACE
        while (left := self.queued(folder)) and time.monotonic() < end:
            time.sleep(0.2)
        for job, _, _ in left or []:
            _scancel(job)

    def report(self) -> Tuple[List[str], int]:
        """Return the sweep report of this process's sweep folder, with what the watch saw."""
        folder = self.sweep_dir()
        return sweep_report(folder, self.problems) if folder else ([], EXIT_OK)


# ── Notifications: the sweep's ───────────────────────────────────────────

def report_sweep(watch: SweepWatch, code: int) -> int:
    """Tell the sweep's outcome once, as its first job's notify says; return code unchanged."""
    folder = watch.sweep_dir()
    if folder is None:
        return code
    try:
        jobs = sorted((p for p in folder.iterdir() if p.name.isdigit() and p.is_dir()),
                      key=lambda p: int(p.name))
        options = _sweep_options(jobs)
        if options is None or options.dry_run or options.cron:
            return code
        outcome = sweep_outcome(folder, jobs, code, socket.gethostname())
        tries = send_notifications(options.notify, outcome, run_id(folder))
        if tries:
            summary = folder / "summary.json"
            data = read_json(summary)
            data["notifications"] = data.get("notifications", []) + tries
            write_text_atomic(summary, json.dumps(data, indent=1) + "\n")
    except Exception as error:  # the sweep's exit code is decided; never lose it here
        _warn([f"crude-link: warning: cannot send the sweep's notifications: "
               f"{mask_urls(_first_line(error))}"])
    return code


def _sweep_options(jobs: Sequence[Path]) -> Optional["SchedulerOptions"]:
    """Return the scheduler options the sweep's first job was composed with, or None."""
    for job in jobs:
        with contextlib.suppress(OSError, OmegaConfBaseException):
            cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
            node = OmegaConf.select(cfg, "scheduler")
            node = node if isinstance(node, DictConfig) else OmegaConf.create({})
            raw: Dict[str, Any] = {
                key: OmegaConf.to_container(node[key], resolve=True)
                if isinstance(node[key], (DictConfig, ListConfig)) else node[key]
                for key in ("notify", "dry_run", "cron") if key in node}
            if check_notify(raw.get("notify")):
                return None  # the job said so already, as a config error
            return SchedulerOptions(**raw)
    return None


def sweep_outcome(folder: Path, jobs: Sequence[Path], code: int, host: str) -> Outcome:
    """Return a sweep's outcome from its jobs' summaries: one line per job, the first failure."""
    table, first = [], None
    for job in jobs:
        summary = read_json(job / "summary.json")
        status = summary.get("status", "no summary")
        line = f"job {job.name}{_job_overrides(job)}: {status}"
        if summary:
            line += f" (exit code {summary.get('exit_code')})"
        failed = failed_step_of(summary.get("steps", []))
        if failed:
            line += f", step '{failed['name']}' {failed['status']}"
            if first is None:  # its last lines stay out: this process knows no secrets
                first = run_outcome(summary, job, code, "", host)
        table.append(line)
    config = _read_text(jobs[0] / ".hydra" / "hydra.yaml") if jobs else ""
    name = re.search(r"^    config_name: (.*)$", config, re.MULTILINE)
    outcome = Outcome(status=SUCCEEDED if code == EXIT_OK else FAILED, exit_code=code,
                      run_dir=str(folder), summary=str(folder / "summary.json"),
                      config=name.group(1).strip() if name else "config", host=host,
                      table=table, sweep=True)
    if first is not None:
        outcome = replace(outcome, failed_step=first.failed_step,
                          failed_exit_code=first.failed_exit_code, failed_log=first.failed_log,
                          last_lines=first.last_lines)
    return outcome


# ── A sweep, from the launching process ──────────────────────────────────

def finish_despite_signals(stop: BaseException) -> int:
    """Ignore SIGINT, SIGTERM and SIGHUP from now on (a second one: finish what is left);
    return the signal that stopped the sweep (Ctrl-C's KeyboardInterrupt: SIGINT)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return stop.args[0] if isinstance(stop, SweepStopped) else signal.SIGINT


def run_multirun(watch: SweepWatch, held: Optional["HeldErrorReport"] = None) -> int:
    """Run Hydra's multirun from the launching process; return the exit code to end with."""
    code = run_sweep(watch, held)
    try:
        return report_sweep(watch, code)  # one notification per sweep
    except (KeyboardInterrupt, SweepStopped) as stop:  # while it was being sent: cut short
        signum = finish_despite_signals(stop)
        print(f"crude-link: {signal.Signals(signum).name} while the sweep's notifications were "
              f"being sent: not all were sent", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signum


def run_sweep(watch: SweepWatch, held: Optional["HeldErrorReport"] = None) -> int:
    """Run the multirun, with the watch, and print the sweep report; return the exit code."""

    def stopped(signum: int, frame: Any) -> None:
        raise SweepStopped(signum)

    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGHUP, stopped)
    hydra_code: Any = EXIT_OK
    stop_code = None
    ended: Optional[SweepEnded] = None
    try:
        with watch:
            main()
    except SweepEnded as end:
        ended = end
    except SystemExit as hydra_exit:
        hydra_code = hydra_exit.code
        reported = report_hydra_error(hydra_exit, held, ROOT / "multirun") if held else None
        hydra_code = hydra_code if reported is None else reported
    except (KeyboardInterrupt, SweepStopped) as stop:
        signum = finish_despite_signals(stop)
        if not watch.gave_up:
            stop_code = EXIT_SIGNAL_BASE + signum
            watch.cancel(signum)
    lines, failed = watch.report()
    for line in lines:
        print(line, file=sys.stderr)
    code = stop_code if stop_code is not None else _sweep_exit_code(watch, failed, hydra_code)
    folder = watch.sweep_dir()
    if folder is not None:
        status = (INTERRUPTED if stop_code is not None else ended.status if ended
                  else SUCCEEDED if code == EXIT_OK else FAILED)
        record_sweep(folder, _job_exit_codes, watch.problems, status, code)
    return code


def _sweep_exit_code(watch: SweepWatch, failed: int, hydra_code: Any) -> int:
    """Return the exit code of a sweep that was not stopped, from its jobs and from Hydra."""
    jobs = first_failure(_job_exit_codes)
    if jobs or failed:
        return jobs or failed
    if hydra_code == 1:
        # Hydra's own error before any job ran (exit 2), or, in a sweep folder of the user's
        # own that crude-link cannot look into, a job that failed elsewhere (Hydra's 1).
        return EXIT_CONFIG_ERROR if watch.own_folder else EXIT_FAILED
    return hydra_code if isinstance(hydra_code, int) else EXIT_FAILED


# ── Command line ─────────────────────────────────────────────────────────

def help_text() -> str:
    """Return `--help`'s text, made from the schema so it lists every key."""
    def rows(schema: Any, prefix: str = "") -> str:
        width = max(len(prefix + f.name) for f in fields(schema)) + 2
        return "\n".join(f"  {(prefix + f.name).ljust(width)}{f.metadata['help']}"
                         for f in fields(schema))

    example = {"lr": 0.1, "name": "my run", "verbose": True, "layers": [64, 64]}
    return "\n".join([
        "crude-link: run the steps listed in config.yaml (beside scheduler.py) one after",
        "another, streaming each step's output live and into <run dir>/NN-<name>.log; on a",
        "failure ask what to do (r retry, p rerun pipeline, s skip, a abort), or with no",
        "terminal stop. Run folders: outputs/<date>/<time>-<pid>/ (summary.json, logs).",
        "",
        "Usage: python scheduler.py [KEY=VALUE ...] [--cfg job] [-m] [--config-name NAME]",
        "  python scheduler.py                                   run the pipeline",
        "  python scheduler.py steps.0.arguments.nr_images=10    override an argument",
        "  python scheduler.py scheduler.on_failure=continue     a scheduler option",
        "  python scheduler.py -m steps.0.arguments.nr_images=100,500   one run per value",
        "  python scheduler.py --cfg job                         print the composed config",
        "",
        "Step keys (each item of steps:):",
        rows(Step),
        "",
        "Scheduler options (scheduler: in config.yaml, or scheduler.KEY=VALUE):",
        rows(SchedulerOptions),
        rows(Notify, "notify."),
        "",
        "Argument styles: the words after the script for arguments: " + render_value(example),
        *(f"  {style.ljust(11)}{' '.join(render_arguments(example, style))}"
          for style in ARGUMENT_STYLES),
        "  (hydra also sets the app's hydra.run.dir and hydra.sweep.dir to the step's folder)",
        "",
        "Exit status: 0 every selected step succeeded (or dry run, nothing to resume);",
        "  1-255 the first failed step's exit code (124 timeout, 128+N signal N);",
        "  2 config error (all listed, no step run); 75 another run holds the lock;",
        "  130 Ctrl-C; 143 SIGTERM; 129 SIGHUP; 70 crude-link itself failed or a fault",
        "  of the machine (a read-only or full disk).",
        "",
        "Hydra's own flags and help: python scheduler.py --hydra-help",
    ])


# Hydra's own --hydra-help, and the config groups of the app, which it leaves out.
HYDRA_HELP_TEMPLATE = """Hydra (${hydra.runtime.version})
See https://hydra.cc for more info.

== Flags ==
$FLAGS_HELP

== Configuration groups ==
Compose your configuration from those groups (For example, append \
hydra/job_logging=disabled to command line)

$HYDRA_CONFIG_GROUPS

== The app's configuration groups ==
Folders of YAML files beside config.yaml (choose one with GROUP=OPTION, e.g. db=mysql)

$APP_CONFIG_GROUPS

Use '--cfg hydra' to Show the Hydra config.
"""


def register_help() -> List[str]:
    """Store crude-link's help and Hydra's as Hydra help configs; return the overrides."""
    store = ConfigStore.instance()
    store.store(group="hydra/help", name="crude_link", node={
        "app_name": "crude-link", "header": "", "footer": "",
        "template": help_text().replace("$", "$$")})
    store.store(group="hydra/hydra_help", name="crude_link",
                node={"template": HYDRA_HELP_TEMPLATE})
    return ["hydra/help=crude_link", "hydra/hydra_help=crude_link"]


# ── Command line: where Hydra looks for configs ──────────────────────────

# crude-link's own folders beside config.yaml: thousands of run folders, no config group.
RUN_FOLDERS = frozenset(["outputs", "multirun"])

# A folder holding one of these is a virtual environment (venv, conda) or a run folder.
NOT_CONFIG_MARKERS = ("pyvenv.cfg", "conda-meta", "summary.json")


class ProjectConfigSource(FileConfigSource):
    """The folder of config.yaml as Hydra's config source, less what holds no config group.

    Hydra takes every folder under its config folder for a config group, and lists them all,
    at any depth, for --help and --hydra-help: in a project folder that is a .venv, outputs/
    and multirun/ (minutes, with thousands of run folders). Not groups here: hidden folders
    (no override can name them), outputs/ and multirun/ beside config.yaml, virtual
    environments and run folders. Any other folder (db/ of YAML files, say) still is one.
    """

    @staticmethod
    def scheme() -> str:
        return "crude-link"

    def is_group(self, config_path: str) -> bool:
        parts = [part for part in config_path.replace(os.sep, "/").split("/") if part]
        hidden = any(part.startswith(".") for part in parts)
        if hidden or len(parts) == 1 and parts[0] in RUN_FOLDERS:
            return False
        folder = os.path.join(self.path, config_path)
        return super().is_group(config_path) and not (parts and any(
            os.path.lexists(os.path.join(folder, marker)) for marker in NOT_CONFIG_MARKERS))

    # What each config file held when it was last loaded, and the config made of it, pickled:
    # Hydra composes twice a run (and once more per sweep job), and OmegaConf.create costs
    # ~0.12 ms a step of config.yaml each time; unpickling a copy costs a fifteenth of that.
    _loaded: ClassVar[Dict[str, Tuple[str, bytes]]] = {}

    def load_config(self, config_path: str) -> ConfigResult:
        """Load a config file as FileConfigSource does, parsed by libyaml where it can be.

        OmegaConf 2.3 parses with PyYAML's pure-Python parser: 0.2 s of a 1,000-step
        config.yaml, twice a run (Hydra composes twice). OmegaConf 2.4 uses libyaml itself.
        A file read again with the same text is not parsed again: a copy of the config made
        the first time is returned.
        """
        full_path = os.path.realpath(os.path.join(self.path,
                                                  self._normalize_file_name(config_path)))
        if not os.path.exists(full_path):
            raise ConfigLoadError(f"Config not found : {full_path}")
        with open(full_path, encoding="utf-8") as file:
            text = file.read()
        known = self._loaded.get(full_path)
        if known is not None and known[0] == text:
            cfg = pickle.loads(known[1])  # bytes made below, in this process
        else:
            loader = _c_yaml_loader()
            if loader is None:
                cfg = OmegaConf.load(io.StringIO(text))
            else:
                data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader: OmegaConf's
                cfg = OmegaConf.create() if data is None else OmegaConf.create(
                    {data: None} if isinstance(data, str) else data)
            self._loaded[full_path] = (text, pickle.dumps(cfg, pickle.HIGHEST_PROTOCOL))
        return ConfigResult(config=cfg, path=f"{self.scheme()}://{self.path}",
                            provider=self.provider,
                            header=ConfigSource._get_header_dict(text[:512]))


def _c_yaml_loader() -> Any:
    """Return OmegaConf's YAML loader on libyaml's parser, or None where it has no need.

    The same resolvers and constructors (its floats, no timestamps, a repeated key
    refused), only the parsing done in C, as OmegaConf 2.4 does. A new class each time, as
    OmegaConf makes its own (once per file a run, now that a second reading is a copy): no
    class cached, which submitit's cloudpickle, copying this module's functions into a job,
    could not take along (ProjectConfigSource keeps plain bytes).
    """
    try:
        from omegaconf._utils import get_yaml_loader  # type: ignore[attr-defined,unused-ignore]
        loader = get_yaml_loader()
    except (ImportError, TypeError):
        return None
    c_parser = getattr(getattr(yaml, "cyaml", None), "CParser", None)  # without libyaml: None
    if c_parser is None or issubclass(loader, c_parser):
        return None

    class CLoader(c_parser, loader):  # type: ignore[misc,valid-type]
        def __init__(self, stream: Any) -> None:
            c_parser.__init__(self, stream)  # type: ignore[misc,unused-ignore]
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return CLoader


class ProjectSearchPath(SearchPathPlugin):
    """Read the app's config folder through ProjectConfigSource instead of Hydra's own."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            plain = element.path[len("file://"):] if element.path.startswith("file://") \
                else element.path
            if element.provider == "main" and "://" not in plain:
                element.path = f"{ProjectConfigSource.scheme()}://{plain}"


def register_config_source() -> None:
    """Make Hydra read config.yaml's folder through ProjectConfigSource (in this process)."""
    Plugins.instance().register(ProjectConfigSource)
    Plugins.instance().register(ProjectSearchPath)


# The flags with which Hydra only prints (and exits 0) and never launches a job.
PRINTING_FLAGS = frozenset(["--help", "-h", "--hydra-help", "--info", "-i"])


@contextlib.contextmanager
def shared_config_store() -> Iterator[None]:
    """Let copies of Hydra's config repository share its ConfigStore, inside the block.

    Hydra lists the config groups for --help and --hydra-help whatever the template shows,
    through a fresh deep copy of its config repository for every group it asks about: some
    50 copies, in Hydra 1.3 each of them mostly the ConfigStore (Hydra's own configs: ~3 ms
    a copy; 1.4's sources no longer hold it), which none changes (ConfigStore.load hands out
    copies). A launcher copies the store on purpose (Singleton.get_state, to pickle it): for
    the printing flags alone, which launch nothing.
    """
    store = ConfigStore.instance()
    setattr(store, "__deepcopy__", lambda memo: store)  # noqa: B010 - copy looks it up here
    try:
        yield
    finally:
        delattr(store, "__deepcopy__")


# ── Command line: Hydra's argv, and _main ────────────────────────────────

def default_overrides(argv: Sequence[str], root: Path, pid: int,
                      configured: Sequence[str] = ()) -> List[str]:
    """Return Hydra overrides that put run folders under the root, unique per process.

    A folder the user sets, on the command line or in the config (configured), wins.
    """
    stamp = "${now:%Y-%m-%d}/${now:%H-%M-%S}-" + str(pid)
    quoted_root = str(root).replace("\\", "\\\\").replace("'", "\\'")
    overrides = []
    for key, folder in (("hydra.run.dir", "outputs"), ("hydra.sweep.dir", "multirun")):
        if key not in configured and not any(arg.lstrip("+~").startswith(key + "=")
                                             for arg in argv):
            overrides.append(f"{key}='{quoted_root}/{folder}/{stamp}'")
    return overrides


def printed_output_dir(argv: Sequence[str], ours: Sequence[str]) -> List[str]:
    """Return an override giving --cfg the run folder a run would have, for --resolve.

    Hydra sets hydra.runtime.output_dir only for a job it runs: `--cfg job --resolve` printed
    None/... for `${hydra:runtime.output_dir}/...`. A folder the user set, crude-link cannot
    foresee (it may name the job, say): a placeholder then.
    """
    if not {"--cfg", "-c"} & set(argv):
        return []
    folder = next((override.split("=", 1)[1] for override in ours
                   if override.startswith("hydra.run.dir=")), "'<the run folder>'")
    return [f"hydra.runtime.output_dir={folder}"]


# Hydra's flags that take a value; its --info takes one optionally.
_VALUE_FLAGS = frozenset(["--cfg", "-c", "--package", "-p", "--config-path", "-cp",
                          "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"])

_INFO_CHOICES = frozenset(["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"])


def with_overrides(argv: List[str], extra: List[str]) -> List[str]:
    """Return Hydra's argv with extra overrides placed beside the user's own.

    argparse reads overrides as one block of positionals: put anywhere else (before -m,
    say), they would make Hydra reject the command line.
    """
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _VALUE_FLAGS or (arg in ("--info", "-i") and index + 1 < len(argv)
                                   and argv[index + 1] in _INFO_CHOICES):
            index += 2
        elif arg.startswith("-"):
            index += 1
        else:
            return argv[:index] + extra + argv[index:]
    if argv and argv[-1] in ("--info", "-i"):  # its optional value must not be ours
        return argv[:-1] + extra + argv[-1:]
    return argv + extra


def configured_options(text: Optional[str]) -> List[str]:
    """Return the keys of the primary config's scheduler: mapping, as its text has them."""
    if text is None or not re.search(r"^scheduler\s*:", text, re.MULTILINE):
        return []
    with contextlib.suppress(yaml.YAMLError, AttributeError):  # scheduler: 3 is reported later
        return [str(key) for key in (yaml.safe_load(text) or {}).get("scheduler") or {}]
    return []


def with_option_overrides(argv: List[str], configured: Sequence[str]) -> List[str]:
    """Return argv with `++` before each scheduler.KEY=VALUE override of a key not configured.

    Hydra sets only keys its config has, unless told to add one (`+`, `++`): in a config with
    no scheduler: mapping, or part of one, scheduler.dry_run=true would be its error. Keys the
    config has are left as typed; an unknown key is crude-link's error (did you mean ...?).
    """
    loosened, after_flag = [], False
    for arg in argv:
        match = re.match(r"scheduler\.([^.=]+)[^=]*=", arg)
        if match and not after_flag and match.group(1) not in configured:
            arg = "++" + arg
        loosened.append(arg)
        after_flag = arg in _VALUE_FLAGS
    return loosened


def _run_main(argv: List[str], ours: Sequence[str], held: HeldErrorReport) -> int:
    """Run Hydra's main (or a multirun) on sys.argv as set; return the exit code."""
    if "-m" in argv or "--multirun" in argv:
        # The sweep folder is crude-link's (named by this pid) unless the user set one.
        own = any(override.startswith("hydra.sweep.dir=") for override in ours)
        return run_multirun(SweepWatch(ROOT, os.getpid(), own), held)
    try:
        main()
    except SystemExit as hydra_exit:
        reported = report_hydra_error(hydra_exit, held, ROOT / "outputs")
        if reported is not None:
            return reported
        # Hydra reports its own errors (YAML syntax, a bad override, a missing config)
        # in a message and exits 1: those are config errors found before any step ran.
        code = hydra_exit.code
        return EXIT_CONFIG_ERROR if code == 1 else code if isinstance(code, int) else EXIT_FAILED
    return first_failure(_job_exit_codes)


def _main(argv: List[str]) -> int:
    """Run crude-link with this command line (without the program name); return the exit code."""
    try:
        text = check_config_file(argv, ROOT)
    except SystemExit as refused:
        return int(refused.code or 0)
    ours = default_overrides(argv, ROOT, os.getpid(), configured_run_dirs(text))
    register_config_source()
    sys.argv[1:] = with_overrides(with_option_overrides(argv, configured_options(text)),
                                  [*register_help(), *ours, *printed_output_dir(argv, ours)])
    gc.freeze()  # the modules and all they made: no garbage, and the collector back on for
    gc.enable()  # what Hydra's two compositions throw away (a higher peak RSS otherwise)
    sys.stderr = held = HeldErrorReport(sys.stderr)
    if not PRINTING_FLAGS & set(argv):
        return _run_main(argv, ours, held)
    try:  # Hydra prints, and launches nothing
        with shared_config_store():
            code = _run_main(argv, ours, held)
        sys.stdout.flush()
    except BrokenPipeError:  # `--help | head -1`: the reader has seen enough
        sys.stderr = held.stream
        return reader_gone()
    except (HydraException, OmegaConfBaseException) as error:  # `--help nosuch=1`
        # Hydra's help has no error report of its own: say it as a run would, in words.
        sys.stderr = held.stream
        print("\n".join(str(e) for e in (error, error.__cause__) if e), file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
