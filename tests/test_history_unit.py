"""Unit tests of the history, the report, summary.md and per-step cost: tables of summaries."""

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scheduler

ROOT = Path("/proj")


def step(index: int, name: str, status: str, exit_code: Optional[int] = None,
         duration: Optional[float] = 1.0, **extra: Any) -> Dict[str, Any]:
    attempts = 0 if status in ("skipped", "not_run") else 1
    return {"index": index, "name": name, "command": ["x"], "status": status,
            "exit_code": exit_code, "attempts": attempts, "started": None, "finished": None,
            "duration_s": duration if attempts else None, "log": f"{index:02d}-{name}.log",
            **extra}


def summary(status: str, steps: List[Dict[str, Any]],
            started: str = "2026-12-01T03:00:00.000+01:00",
            finished: Optional[str] = "2026-12-01T03:00:02.500+01:00",
            exit_code: Optional[int] = 0) -> Dict[str, Any]:
    return {"status": status, "exit_code": exit_code, "started": started, "finished": finished,
            "steps": steps}


def entry(folder: str, data: Any = None, problem: Optional[str] = None, kind: str = "run",
          overrides: Tuple[str, ...] = ()) -> Dict[str, Any]:
    return {"folder": folder, "kind": kind, "summary": data, "problem": problem,
            "overrides": list(overrides), "summary_md": data is not None}


GOOD = entry("outputs/2026-12-01/03-00-00-11", summary("succeeded", [
    step(1, "prep", "succeeded", 0, 0.5, cpu_user_s=[0.4], cpu_system_s=[0.1],
         max_rss_kb=[300_000], rss_floor_kb=[40_000]),
    step(2, "train", "succeeded", 0, 2.0, cpu_user_s=[0.9, 1.0], cpu_system_s=[0.05, None],
         max_rss_kb=[35_000, 30_000], rss_floor_kb=[40_000, 40_000])]),
    overrides=("steps.1.arguments.lr=0.1",))
FAILED = entry("outputs/2026-12-02/03-00-00-12", summary("failed", [
    step(1, "prep", "succeeded", 0), step(2, "train", "failed", 3), step(3, "deploy", "not_run")],
    started="2026-12-02T03:00:00.000+01:00", finished="2026-12-02T03:00:01.000+01:00",
    exit_code=3))
TIMED_OUT = entry("outputs/2026-12-03/03-00-00-13", summary("failed", [
    step(1, "prep", "succeeded", 0, reused_from="/proj/outputs/2026-12-02/03-00-00-12"),
    step(2, "train", "timed_out", 124), step(3, "deploy", "skipped")],
    started="2026-12-03T03:00:00.000+01:00", finished=None, exit_code=124))
KILLED = entry("outputs/2026-12-04/03-00-00-14", summary("running", [
    step(1, "prep", "succeeded", 0), step(2, "train", "running", None, None)],
    started="2026-12-04T03:00:00.000+01:00", finished=None, exit_code=None))
INTERRUPTED = entry("multirun/2026-12-05/03-00-00-15/1", summary("interrupted", [
    step(1, "prep", "interrupted", 143)], started="2026-12-05T03:00:00.000+01:00", finished=None,
    exit_code=143),
    kind="sweep", overrides=("seed=2",))
HALF_WRITTEN = entry("outputs/2026-12-06/03-00-00-16",
                     problem="summary.json is damaged or half-written: Expecting ',' delimiter")
NOT_A_SUMMARY = entry("outputs/2026-12-07/03-00-00-17", data=[1, 2, 3])
ODD_STEPS = entry("outputs/2026-12-08/03-00-00-18", data={
    "status": 7, "started": "yesterday", "finished": None, "exit_code": "three",
    "steps": ["not a mapping", {"name": None, "status": "exploded", "duration_s": "long",
                                "max_rss_kb": True, "exit_code": 2.5}]})


@pytest.mark.parametrize("item, status, code, duration, marks", [
    (GOOD, "succeeded", 0, 2.5, "✓✓"),
    (FAILED, "failed", 3, 1.0, "✓✗."),
    (TIMED_OUT, "failed", 124, None, "↺T-"),   # no finished time: no duration
    (KILLED, "running", None, None, "✓▸"),     # a scheduler killed with kill -9
    (INTERRUPTED, "interrupted", 143, None, "!"),
    (HALF_WRITTEN, "damaged", None, None, "?"),
    (NOT_A_SUMMARY, "damaged", None, None, "?"),
    (ODD_STEPS, "?", None, None, "??"),        # readable JSON, nonsense values
])
def test_history_row(item: Dict[str, Any], status: str, code: Optional[int],
                     duration: Optional[float], marks: str) -> None:
    row = scheduler.history_row(item)
    assert (row["status"], row["exit_code"], row["duration_s"], row["marks"]) == (
        status, code, duration, marks)
    assert row["folder"] == item["folder"]


def test_history_row_names_the_damage_and_the_sweep() -> None:
    assert "half-written" in scheduler.history_row(HALF_WRITTEN)["problem"]
    assert "list" in scheduler.history_row(NOT_A_SUMMARY)["problem"]
    assert scheduler.history_row(INTERRUPTED)["kind"] == "sweep"
    odd = scheduler.history_row(ODD_STEPS)["steps"]
    assert [s["name"] for s in odd] == ["step 1", "step 2"]
    assert odd[1]["duration_s"] is None and odd[1]["max_rss_kb"] is None


def test_history_row_totals_cost() -> None:
    row = scheduler.history_row(GOOD)
    assert row["cpu_s"] == pytest.approx(2.45)
    assert row["max_rss_kb"] == 300_000


ALL = [KILLED, TIMED_OUT, FAILED, GOOD, INTERRUPTED, HALF_WRITTEN, NOT_A_SUMMARY, ODD_STEPS]


def rows() -> List[Dict[str, Any]]:
    return [scheduler.history_row(item) for item in ALL]


def test_table_has_one_line_per_run_and_a_legend() -> None:
    text = scheduler.format_history(rows(), "table")
    lines = text.splitlines()
    assert lines[0].split() == ["started", "run", "kind", "status", "exit", "duration", "steps",
                                "overrides"]
    assert len(lines) == 1 + len(ALL) + 1 and lines[-1].startswith("steps: ✓ succeeded")
    failed = next(line for line in lines if "12-02" in line)
    assert failed.split()[:8] == ["2026-12-02", "03:00:00", "outputs/2026-12-02/03-00-00-12",
                                  "run", "failed", "3", "1.00s", "✓✗."]
    sweep = next(line for line in lines if "multirun" in line)
    assert "sweep job" in sweep and sweep.rstrip().endswith("seed=2")
    damaged = next(line for line in lines if "12-06" in line)
    assert "damaged" in damaged and "half-written" in damaged


def test_table_columns_line_up() -> None:
    lines = scheduler.format_history(rows(), "table").splitlines()[:-1]
    starts = [line.index("run") for line in lines[:1]]
    assert all(line[starts[0] - 1] == " " for line in lines[1:])
    status_at = lines[0].index("status")
    assert all(line[status_at - 2:status_at] == "  " for line in lines[1:])


def test_json_rows() -> None:
    data = json.loads(scheduler.format_history(rows(), "json"))
    assert [row["folder"] for row in data] == [item["folder"] for item in ALL]
    first = data[3]
    assert first["status"] == "succeeded" and first["overrides"] == ["steps.1.arguments.lr=0.1"]
    assert [s["name"] for s in first["steps"]] == ["prep", "train"]
    assert first["steps"][0]["max_rss_kb"] == 300_000
    assert data[5]["status"] == "damaged" and data[5]["problem"]


def test_csv_rows() -> None:
    parsed = list(csv.DictReader(io.StringIO(scheduler.format_history(rows(), "csv"))))
    assert len(parsed) == len(ALL)
    assert parsed[2]["steps"] == "prep=succeeded train=failed deploy=not_run"
    assert parsed[1]["steps"].startswith("prep=reused ")
    assert parsed[2]["exit_code"] == "3" and parsed[3]["max_rss_kb"] == "300000"
    assert parsed[5]["status"] == "damaged"


def test_markdown_rows_escape_pipes() -> None:
    odd = entry("outputs/2026-12-09/03-00-00-19",
                summary("succeeded", [step(1, "a", "succeeded", 0)]), overrides=("x='a|b'",))
    text = scheduler.format_history([*rows(), scheduler.history_row(odd)], "markdown")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(ALL) + 1
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 9 for line in table)
    assert "x='a\\|b'" in table[-1]


def test_no_runs() -> None:
    assert "no runs" in scheduler.format_history([], "table")
    assert json.loads(scheduler.format_history([], "json")) == []
    assert scheduler.format_history([], "csv").splitlines() == [",".join(scheduler.CSV_COLUMNS)]


# ── Per-step cost ────────────────────────────────────────────────────────


def test_add_attempt_cost_keeps_one_value_per_attempt() -> None:
    entry_: Dict[str, Any] = {"attempts": 1}
    scheduler.add_attempt_cost(entry_, scheduler.Attempt(1, False, 0.5, b"", 0.25, 0.125,
                                                         90_000, 40_000))
    scheduler.add_attempt_cost(entry_, scheduler.Attempt(0, False, 0.25, b"", 0.5, 0.25,
                                                         50_000, 41_000))
    scheduler.add_attempt_cost(entry_, scheduler.Attempt(127, False, 0.0, b""))  # never started
    assert entry_ == {"attempts": 1, "cpu_user_s": [0.25, 0.5, None],
                      "cpu_system_s": [0.125, 0.25, None], "max_rss_kb": [90_000, 50_000, None],
                      "rss_floor_kb": [40_000, 41_000, None]}
    assert scheduler.step_cost(entry_) == {"cpu_user_s": 0.75, "cpu_system_s": 0.375,
                                           "max_rss_kb": 90_000, "rss_floor_kb": 40_000}


@pytest.mark.parametrize("raw, cost", [
    ({}, {"cpu_user_s": None, "cpu_system_s": None, "max_rss_kb": None, "rss_floor_kb": None}),
    ({"cpu_user_s": 1.5, "max_rss_kb": 7}, {"cpu_user_s": 1.5, "cpu_system_s": None,
                                             "max_rss_kb": 7, "rss_floor_kb": None}),
    ({"cpu_user_s": ["x", True, 2], "max_rss_kb": [3, 9], "rss_floor_kb": [1]},
     {"cpu_user_s": 2, "cpu_system_s": None, "max_rss_kb": 9, "rss_floor_kb": None}),
])
def test_step_cost_tolerates_odd_values(raw: Dict[str, Any], cost: Dict[str, Any]) -> None:
    assert scheduler.step_cost(raw) == cost


@pytest.mark.parametrize("kb, floor, shown", [
    (None, None, "-"), (512, None, "512 KiB"), (300_000, 40_000, "293.0 MiB"),
    (39_000, 40_000, "≤38.1 MiB"),   # no more than the scheduler's own: only a bound
    (3 * 1024 ** 2, 40_000, "3.0 GiB"), (True, None, "-"),
])
def test_format_peak(kb: Any, floor: Any, shown: str) -> None:
    assert scheduler.format_peak({"max_rss_kb": kb, "rss_floor_kb": floor}) == shown


def test_summary_table_shows_peak_memory() -> None:
    lines = scheduler.summary_table(GOOD["summary"]["steps"])
    assert lines[0].split()[4:7] == ["duration", "peak", "mem"]
    assert "293.0 MiB" in lines[1] and "≤34.2 MiB" in lines[2]


# ── summary.md ───────────────────────────────────────────────────────────


def test_summary_markdown_of_a_failed_run() -> None:
    text = scheduler.summary_markdown(FAILED["summary"], "03-00-00-12",
                                      {2: ["epoch 1", "loss ``` nan"]})
    lines = text.splitlines()
    assert lines[0] == "# crude-link run 03-00-00-12: failed (exit code 3)"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 3
    assert table[3].startswith("| 2 | train | failed | 3 | 1 | 1.00s |")
    assert table[4].startswith("| 3 | deploy | not_run | - | 0 | - |")
    assert "## Failure" in lines
    assert "Step 2 `train`: exit code 3 after 1.00s; log: [02-train.log](02-train.log)" in lines
    assert "````text" in lines and lines[-1] == "````"  # a fence longer than the output's
    assert "loss ``` nan" in lines


def test_summary_markdown_of_a_timed_out_and_a_good_run() -> None:
    text = scheduler.summary_markdown(TIMED_OUT["summary"], "t", {})
    assert "succeeded (reused)" in text and "timed out (exit code 124)" in text
    good = scheduler.summary_markdown(GOOD["summary"], "g", {})
    assert "## Failure" not in good and "| 293.0 MiB |" in good


# ── The HTML report ──────────────────────────────────────────────────────


class Links(HTMLParser):
    """Collect every href and src, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: List[str] = []
        self.text: List[str] = []
        self.tags: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.tags.append(tag)
        self.links += [value or "" for key, value in attrs if key in ("href", "src")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Links:
    parser = Links()
    parser.feed(page)
    return parser


def report(items: List[Dict[str, Any]], report_dir: Path = ROOT / "outputs") -> str:
    return scheduler.render_report([scheduler.history_row(i) for i in items], ROOT, report_dir,
                                   "2026-12-09T08:00:00.000+01:00")


def test_report_is_self_contained() -> None:
    page = report(ALL)
    parsed = parse(page)
    assert "script" not in parsed.tags and "<script" not in page.lower()
    assert "http:" not in page and "https:" not in page and "//" not in " ".join(parsed.links)
    assert "svg" in parsed.tags and "style" in parsed.tags
    assert not [link for link in parsed.links if link.startswith("/")]


def test_report_shows_every_run_and_step() -> None:
    text = " ".join(parse(report(ALL)).text)
    for item in ALL:
        assert item["folder"] in text
    for name in ("prep", "train", "deploy"):
        assert name in text
    assert "exit 3" in text and "exit 124" in text  # on the failed bars
    assert "damaged" in text and "half-written" in text


def test_report_links_are_relative_to_the_report() -> None:
    links = parse(report([FAILED], ROOT / "outputs")).links
    assert "2026-12-02/03-00-00-12/02-train.log" in links
    assert "2026-12-02/03-00-00-12/summary.json" in links
    assert "2026-12-02/03-00-00-12/summary.md" in links
    assert "2026-12-02/03-00-00-12/03-deploy.log" not in links  # not run: no log
    deeper = parse(report([FAILED], ROOT / "reports" / "nightly")).links
    assert "../../outputs/2026-12-02/03-00-00-12/02-train.log" in deeper


def test_report_escapes_everything() -> None:
    evil = entry("outputs/2026-12-10/03-00-00-20", summary("failed", [
        step(1, "<script>alert(1)</script>", "failed", 1)], exit_code=1),
        overrides=('x="><img src=x onerror=alert(1)>',))
    evil["folder"] = "outputs/2026-12-10/a&b <i>"
    page = report([evil])
    assert "<script>" not in page and "<img" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a%26b%20%3Ci%3E/01-%3Cscript%3Ealert%281%29%3C/script%3E.log" in page


def test_report_of_no_runs() -> None:
    assert "No runs yet" in report([])


def test_newest_run_banner_names_the_failure() -> None:
    text = " ".join(parse(report([FAILED, GOOD])).text)
    assert "Newest run 2026-12-02 03:00:00: failed (exit code 3) at step 2 train: exit code 3" \
        in text


# ── Whatever summary.json holds, history and report do not fail ──────────

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)
step_like = st.fixed_dictionaries({}, optional={
    key: json_values for key in ("index", "name", "status", "exit_code", "attempts",
                                 "duration_s", "log", "reused_from", "max_rss_kb",
                                 "rss_floor_kb", "cpu_user_s")})
summary_like = st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "status": json_values, "exit_code": json_values, "started": json_values,
    "finished": json_values, "steps": st.lists(st.one_of(step_like, json_values), max_size=5)}))


@settings(max_examples=150, deadline=None)
@given(summary_like)
def test_any_summary_gives_a_row_and_a_page(data: Any) -> None:
    row = scheduler.history_row(entry("outputs/d/t", data))
    for fmt in scheduler.HISTORY_FORMATS:
        assert scheduler.format_history([row], fmt)
    page = scheduler.render_report([row], ROOT, ROOT, "now")
    assert "<script" not in page
    assert scheduler.summary_markdown(data if isinstance(data, dict) else {}, "t", {})


# ── Options ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("options, problem", [
    ({"history": 20}, None),
    ({"history": 0}, None),
    ({"history": -1}, "history must be a number of runs >= 0"),
    ({"history": 5, "history_format": "yaml"},
     "history_format must be one of table, json, csv, markdown, got 'yaml'"),
    ({"history_format": "json"}, "also set scheduler.history=N"),
    ({"history": 5, "history_format": "markdown"}, None),
    ({"report": "report.html"}, None),
    ({"report": "outputs/report.html"}, None),
    ({"report": "report.pdf"}, "report must be a file name ending in .html, got 'report.pdf'"),
    ({"report": "missing/report.html"}, "the folder"),
])
def test_check_history_options(tmp_path: Path, options: Dict[str, Any],
                               problem: Optional[str]) -> None:
    (tmp_path / "outputs").mkdir()
    problems = scheduler.check_history_options(options, tmp_path)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_wrong_types_of_history_options_are_config_errors(tmp_path: Path) -> None:
    problems = scheduler.check_config([{"script": "/bin/true"}],
                                      {"history": "lots", "report": 3}, None, tmp_path)
    assert any("history must be a whole number or null" in p for p in problems), problems
    assert any("report must be a string or null" in p for p in problems), problems


def test_report_path_is_relative_to_the_project() -> None:
    assert scheduler.report_path("r.html", ROOT) == ROOT / "r.html"
    assert scheduler.report_path("/tmp/r.html", ROOT) == Path("/tmp/r.html")


@pytest.mark.parametrize("override, shown", [
    ("steps.0.arguments.lr=0.1", "steps.0.arguments.lr=0.1"),
    ("+steps.0.env.API_TOKEN=abc", "+steps.0.env.API_TOKEN=***"),
    ("steps.1.arguments.db_password='x=y'", "steps.1.arguments.db_password=***"),
])
def test_overrides_of_secret_keys_are_masked(override: str, shown: str) -> None:
    assert scheduler.mask_override(override) == shown


# ── Reading folders: thousands of runs, damaged ones, sweeps ─────────────


def make_runs(root: Path, count: int) -> None:
    """Write count fake run folders under outputs/, some damaged, and a sweep's jobs."""
    for number in range(count):
        day, second = divmod(number, 1000)
        folder = root / "outputs" / f"2026-11-{day + 1:02d}" / (
            f"{second // 3600:02d}-{second // 60 % 60:02d}-{second % 60:02d}-{1000 + number}")
        (folder / ".hydra").mkdir(parents=True)
        data = summary("succeeded" if number % 7 else "failed", [
            step(1, "prep", "succeeded", 0), step(2, "train", "succeeded" if number % 7 else
                                                 "failed", 0 if number % 7 else 1)],
            started=f"2026-11-{day + 1:02d}T00:00:00.{number % 1000:03d}+00:00",
            exit_code=0 if number % 7 else 1)
        text = json.dumps(data)
        if number % 500 == 3:
            text = text[:len(text) // 2]  # half-written
        (folder / "summary.json").write_text(text)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={number}\n")
    sweep = root / "multirun" / "2026-11-30" / "23-59-59-7"
    for job in range(2):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / "summary.json").write_text(json.dumps(summary("succeeded", [
            step(1, "prep", "succeeded", 0)], started=f"2026-11-30T23:59:59.{job}00+00:00")))
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(f"- lr=0.{job + 1}\n")
    (sweep / "summary.json").write_text("{}")  # a sweep's own summary: not a job
    (root / "outputs" / "2026-11-01" / "no-summary-1").mkdir()  # a config error, say


def test_read_history_of_two_thousand_runs(tmp_path: Path) -> None:
    make_runs(tmp_path, 2000)
    newest = scheduler.read_history(tmp_path, 20)
    # The sweep is one entry (its own summary.json), its jobs listed under it in order.
    assert [e["folder"] for e in newest[:3]] == ["multirun/2026-11-30/23-59-59-7",
                                                "multirun/2026-11-30/23-59-59-7/0",
                                                "multirun/2026-11-30/23-59-59-7/1"]
    assert [e["kind"] for e in newest[:4]] == ["multirun", "sweep", "sweep", "run"]
    assert newest[2]["overrides"] == ["lr=0.2"]
    assert newest[1]["in_sweep"] == newest[2]["in_sweep"] == "multirun/2026-11-30/23-59-59-7"
    assert len(newest) == 20 + 2  # 20 entries, and the sweep's jobs under it
    assert newest[3]["folder"] == "outputs/2026-11-02/00-16-39-2999"
    assert newest[3]["overrides"] == ["seed=1999"]
    everything = scheduler.read_history(tmp_path, 0)
    assert len(everything) == 2003
    damaged = [e for e in everything if e["problem"]]
    assert len(damaged) == 4 and all("half-written" in e["problem"] for e in damaged)
    rows = [scheduler.history_row(e) for e in everything]
    assert sum(row["status"] == "failed" for row in rows) == len(
        [n for n in range(2000) if n % 7 == 0 and n % 500 != 3])
    assert len(scheduler.format_history(rows).splitlines()) == 2003 + 2


def test_runs_of_the_same_second_in_start_order(tmp_path: Path) -> None:
    for pid, started in ((50, "10.900"), (7, "10.100"), (300, "10.500")):
        folder = tmp_path / "outputs" / "2026-12-01" / f"03-00-10-{pid}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary(
            "succeeded", [], started=f"2026-12-01T03:00:{started}+00:00")))
    assert [e["folder"][-2:] for e in scheduler.read_history(tmp_path, 2)] == ["50", "00"]
