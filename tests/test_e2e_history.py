"""End to end: history, report, summary.md and cost per step on real run folders (issue 16).

One project is run a few times (a success, a failure, retries and a timeout, a sweep), a
copy of a run folder is damaged, and then history and report are asked for, as a user
would the morning after. The report is opened in a real browser (Debian's chromium).
"""

import csv
import io
import json
import re
import shutil
import struct
import subprocess
import textwrap
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote

import pytest
from conftest import ROOT, TESTS, load_json, run_scheduler

import scheduler

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024

CONFIG = """\
steps:
  - name: prep
    script: tasks/fate.py
    arguments: {print: preparing}
  - name: burn
    script: tasks/burn.py
    arguments: {mib: 0, cpu: 0, child_mib: 0}
  - name: train
    script: tasks/fate.py
    arguments: {print: training, exit_code: 0}
  - name: deploy
    script: tasks/fate.py
    arguments: {sleep: 0}
scheduler:
  on_failure: ask
  history: null
  history_format: table
  report: null
"""

# Holds mib MiB, spins cpu seconds of CPU; with child_mib, a child it waits for holds that.
BURN = """\
import subprocess, sys, time
from omegaconf import OmegaConf
args = OmegaConf.from_cli()
held = bytearray(int(args.mib) * 1024 * 1024)
for i in range(0, len(held), 4096):
    held[i] = 1
end = time.process_time() + float(args.cpu)
while time.process_time() < end:
    pass
if args.child_mib:
    code = "b = bytearray(%d * 1024 * 1024)\\nfor i in range(0, len(b), 4096): b[i] = 1" % (
        int(args.child_mib))
    subprocess.run([sys.executable, "-c", code], check=True)
print("burnt")
"""


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """Run the project's nights; return the project, the run folders and their output."""
    project = tmp_path_factory.mktemp("history") / "proj"
    (project / "tasks").mkdir(parents=True)
    shutil.copy(ROOT / "scheduler.py", project)
    shutil.copy(TESTS / "tasks" / "fate.py", project / "tasks")
    (project / "tasks" / "burn.py").write_text(BURN, encoding="utf-8")
    (project / "config.yaml").write_text(CONFIG, encoding="utf-8")
    runs: Dict[str, Any] = {"project": project}

    def night(name: str, *overrides: str, code: int = 0) -> None:
        before = set(project.glob("outputs/*/*/summary.json"))
        result = run_scheduler(project, *overrides)
        assert result.returncode == code, result.stdout + result.stderr
        new = set(project.glob("outputs/*/*/summary.json")) - before
        assert len(new) == 1, new
        runs[name] = new.pop().parent
        runs[name + ".out"] = result.stdout

    night("good", "steps.1.arguments.mib=150", "steps.1.arguments.cpu=0.3")
    night("failed", "steps.2.arguments.exit_code=3", "steps.2.arguments.print=loss is nan",
          code=3)
    marker = project / "marker"
    night("timeout", "+steps.2.retries=1", "+steps.2.arguments.fail_times=1",
          "steps.2.arguments.exit_code=5",
          f"+steps.2.arguments.marker={marker}", "+steps.3.timeout=0.5",
          "steps.3.arguments.sleep=30", "scheduler.on_failure=continue",
          "steps.1.arguments.child_mib=120", code=124)
    sweep = run_scheduler(project, "-m", "steps.0.arguments.print=a,b")
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    jobs = sorted(project.glob("multirun/*/*/*/summary.json"))
    assert len(jobs) == 2
    runs["jobs"] = [job.parent for job in jobs]
    # A copy of the good run, older than every other, with a half-written summary.json.
    damaged = project / "outputs" / "2000-01-01" / "00-00-00-1"
    shutil.copytree(runs["good"], damaged)
    text = (damaged / "summary.json").read_text()
    (damaged / "summary.json").write_text(text[: len(text) // 2])
    runs["damaged"] = damaged
    return runs


def rel(runs: Dict[str, Any], folder: Path) -> str:
    return folder.relative_to(runs["project"]).as_posix()


def newest_first(runs: Dict[str, Any]) -> List[str]:
    """Return the history's folders: the sweep is one entry, its jobs under it in order."""
    return [rel(runs, runs["jobs"][0].parent), rel(runs, runs["jobs"][0]),
            rel(runs, runs["jobs"][1])] + [
        rel(runs, runs[name]) for name in ("timeout", "failed", "good", "damaged")]


def history(runs: Dict[str, Any], *overrides: str) -> "subprocess.CompletedProcess[str]":
    """Ask for the history; check that it ran no step."""
    project = runs["project"]
    before = sorted(project.glob("*/*/*/summary.json")) + sorted(
        project.glob("multirun/*/*/*/summary.json"))
    result = run_scheduler(project, *overrides)
    after = sorted(project.glob("*/*/*/summary.json")) + sorted(
        project.glob("multirun/*/*/*/summary.json"))
    assert after == before, "history ran a step"
    assert "Traceback" not in result.stderr, result.stderr
    return result


# ── Cost per step, summary.md, the final table ───────────────────────────


def test_summary_records_cpu_time_and_peak_memory(nights: Dict[str, Any]) -> None:
    steps = load_json(nights["good"] / "summary.json")["steps"]
    burn = steps[1]
    assert len(burn["max_rss_kb"]) == 1 and burn["max_rss_kb"][0] >= 150 * 1024
    assert burn["cpu_user_s"][0] + burn["cpu_system_s"][0] >= 0.25
    for entry in steps:
        assert [len(entry[key]) for key in scheduler.COST_KEYS] == [1, 1, 1, 1]
        assert entry["cpu_user_s"][0] > 0 and entry["max_rss_kb"][0] > 0
        # The floor is what the scheduler's process had when it started the step: Linux
        # counts it in the step's peak (fork), so it holds what the caller had (pytest).
        assert entry["rss_floor_kb"][0] > 0


def test_a_child_the_step_waited_for_counts(nights: Dict[str, Any]) -> None:
    burn = load_json(nights["timeout"] / "summary.json")["steps"][1]
    assert burn["max_rss_kb"][0] >= 120 * 1024


def test_each_attempt_has_its_cost(nights: Dict[str, Any]) -> None:
    steps = load_json(nights["timeout"] / "summary.json")["steps"]
    train, deploy = steps[2], steps[3]
    assert train["attempts"] == 2
    assert [len(train[key]) for key in scheduler.COST_KEYS] == [2, 2, 2, 2]
    assert all(value is not None for key in scheduler.COST_KEYS for value in train[key])
    assert deploy["status"] == "timed_out" and len(deploy["cpu_user_s"]) == 1
    reused_or_not_run = load_json(nights["failed"] / "summary.json")["steps"][3]
    assert "cpu_user_s" not in reused_or_not_run  # a step that never ran has no cost


def test_final_table_shows_peak_memory(nights: Dict[str, Any]) -> None:
    lines = nights["good.out"].splitlines()
    header = next(line for line in lines if line.startswith("#  step"))
    assert header.split()[4:8] == ["duration", "peak", "mem", "log"]
    burn = next(line for line in lines if line.startswith("2  burn"))
    assert "MiB" in burn and float(burn.split("MiB")[0].split()[-1].lstrip("≤")) >= 150


def test_every_run_writes_summary_md(nights: Dict[str, Any]) -> None:
    good = (nights["good"] / "summary.md").read_text(encoding="utf-8")
    assert good.startswith(f"# crude-link run {nights['good'].name}: succeeded (exit code 0)")
    assert good.count("\n| ") == 6 and "## Failure" not in good
    failed = (nights["failed"] / "summary.md").read_text(encoding="utf-8")
    assert failed.startswith(f"# crude-link run {nights['failed'].name}: failed (exit code 3)")
    assert "| 3 | train | failed | 3 | 1 |" in failed
    assert "| 4 | deploy | not_run | - | 0 |" in failed
    assert "Step 3 `train`: exit code 3 after" in failed
    assert "loss is nan" in failed.split("## Failure")[1]
    timeout = (nights["timeout"] / "summary.md").read_text(encoding="utf-8")
    assert "Step 4 `deploy`: timed out (exit code 124) after" in timeout


# ── History in the terminal ──────────────────────────────────────────────


def folder_of(row: str) -> str:
    match = re.search(r"(?:outputs|multirun)/\S+", row)
    assert match, row
    return match.group()


def test_history_table(nights: Dict[str, Any]) -> None:
    result = history(nights, "scheduler.history=10")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["started", "run", "kind", "status", "exit", "duration", "steps",
                                "overrides"]
    rows = lines[1:-1]
    assert [folder_of(row) for row in rows] == newest_first(nights)
    assert lines[-1].startswith("steps: ✓ succeeded  ✗ failed  T timed out")
    cells = {folder_of(row): row.split(folder_of(row), 1)[1].split() for row in rows}
    good = cells[rel(nights, nights["good"])]
    assert good[:3] == ["run", "succeeded", "0"] and good[4] == "✓✓✓✓"
    assert good[5:] == ["steps.1.arguments.mib=150", "steps.1.arguments.cpu=0.3"]
    failed = cells[rel(nights, nights["failed"])]
    assert failed[1:3] == ["failed", "3"] and failed[4] == "✓✓✗."
    assert cells[rel(nights, nights["timeout"])][4] == "✓✓✓T"
    job = cells[rel(nights, nights["jobs"][1])]
    assert job[:4] == ["sweep", "job", "succeeded", "0"] and job[-1] == "steps.0.arguments.print=b"
    damaged = cells[rel(nights, nights["damaged"])]
    assert damaged[1] == "damaged" and "half-written" in " ".join(damaged)


def test_history_shows_the_newest_n(nights: Dict[str, Any]) -> None:
    result = history(nights, "scheduler.history=3")
    rows = result.stdout.splitlines()[1:-1]
    assert [folder_of(row) for row in rows] == newest_first(nights)[:5]  # a sweep and its jobs
    assert "sweep of 2" in rows[0] and "└" not in rows[0]  # the sweep: one entry...
    assert all(f"└ {folder_of(row)}  sweep job" in row for row in rows[1:3])  # ...its jobs


def test_history_as_json(nights: Dict[str, Any]) -> None:
    result = history(nights, "scheduler.history=0", "scheduler.history_format=json")
    data = json.loads(result.stdout)
    assert [row["folder"] for row in data] == newest_first(nights)
    failed = data[4]
    assert (failed["status"], failed["exit_code"], failed["marks"]) == ("failed", 3, "✓✓✗.")
    assert [s["status"] for s in failed["steps"]] == ["succeeded", "succeeded", "failed",
                                                      "not_run"]
    assert data[5]["steps"][1]["max_rss_kb"] >= 150 * 1024  # the largest of its attempts
    assert (data[0]["kind"], data[0]["status"], data[0]["marks"]) == ("multirun", "succeeded",
                                                                     "✓✓")
    assert data[1]["kind"] == "sweep" and data[1]["in_sweep"] == data[0]["folder"]
    assert data[6]["status"] == "damaged"


def test_history_as_csv_and_markdown(nights: Dict[str, Any]) -> None:
    result = history(nights, "scheduler.history=10", "scheduler.history_format=csv")
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["folder"] for row in parsed] == newest_first(nights)
    assert parsed[3]["steps"] == "prep=succeeded burn=succeeded train=succeeded deploy=timed_out"
    assert parsed[3]["exit_code"] == "124"
    result = history(nights, "scheduler.history=10", "scheduler.history_format=markdown")
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 7 and table[1].startswith("| --- |")


@pytest.mark.parametrize("overrides, message", [
    (["scheduler.history=-1"], "scheduler: history must be a number of runs >= 0"),
    (["scheduler.history=5", "scheduler.history_format=yaml"],
     "scheduler: history_format must be one of table, json, csv, markdown, got 'yaml'"),
    (["scheduler.history_format=csv"], "also set scheduler.history=N"),
    (["scheduler.report=report.pdf"], "scheduler: report must be a file name ending in .html"),
    (["scheduler.report=nowhere/report.html"], "nowhere does not exist"),
    (["scheduler.history=many"], "scheduler: history must be a whole number or null"),
])
def test_bad_history_options_are_config_errors(nights: Dict[str, Any], overrides: List[str],
                                               message: str) -> None:
    result = history(nights, *overrides)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "no step was run" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_new_options(nights: Dict[str, Any]) -> None:
    result = run_scheduler(nights["project"], "--help")
    assert result.returncode == 0
    for key in ("history", "history_format", "report"):
        assert re.search(rf"^  {key} +\S", result.stdout, re.MULTILINE), key


# ── The HTML report ──────────────────────────────────────────────────────


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: List[str] = []
        self.links: List[str] = []
        self.text: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.tags.append(tag)
        self.links += [value or "" for key, value in attrs if key in ("href", "src")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def report(nights: Dict[str, Any]) -> Path:
    """The report, asked for with a path relative to the project, from another folder."""
    result = history(nights, "scheduler.report=report.html")
    assert result.returncode == 0, result.stderr
    path: Path = nights["project"] / "report.html"
    assert f"to {path}" in result.stdout
    return path


def test_report_is_one_self_contained_file(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    page = read_page(report)
    assert "script" not in page.tags and "<script" not in text.lower()
    assert "http:" not in text and "https:" not in text
    assert "svg" in page.tags and "style" in page.tags and "link" not in page.tags


def test_report_links_reach_every_log_and_summary(nights: Dict[str, Any], report: Path) -> None:
    links = read_page(report).links
    for link in links:
        assert not link.startswith(("/", "file:")), link
        assert (report.parent / unquote(link)).exists(), link
    for name in ("good", "failed", "timeout"):
        folder = rel(nights, nights[name])
        assert f"{folder}/summary.json" in links and f"{folder}/summary.md" in links
        assert f"{folder}/01-prep.log" in links
    assert f"{rel(nights, nights['failed'])}/04-deploy.log" not in links  # never ran


def test_report_in_a_subfolder_links_back(nights: Dict[str, Any]) -> None:
    (nights["project"] / "reports").mkdir(exist_ok=True)
    result = history(nights, "scheduler.report=reports/nightly.html", "scheduler.history=2")
    assert result.returncode == 0, result.stderr
    path = nights["project"] / "reports" / "nightly.html"
    links = read_page(path).links
    assert f"../{rel(nights, nights['jobs'][1])}/01-prep.log" in links
    assert all((path.parent / unquote(link)).exists() for link in links)
    assert rel(nights, nights["failed"]) not in " ".join(read_page(path).text)  # newest 2 only


def test_report_that_cannot_be_written_is_exit_70(nights: Dict[str, Any]) -> None:
    blocker = nights["project"] / ".blocked.html.tmp"  # where the report is written first
    blocker.mkdir()
    try:
        result = history(nights, "scheduler.report=blocked.html")
    finally:
        blocker.rmdir()
    assert result.returncode == 70, result.stdout + result.stderr
    assert f"cannot write the report {nights['project'] / 'blocked.html'}" in result.stderr


# ── The report in a real browser ─────────────────────────────────────────

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser")
                 if shutil.which(name)), None)


def chromium(profile: Path, *args: str) -> "subprocess.CompletedProcess[bytes]":
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
         *args], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def png_pixels(data: bytes) -> Iterator[Tuple[int, int, int]]:
    """Yield the RGB of each pixel of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    for y in range(height):
        kind_ = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind_ == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 255
        elif kind_ == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, previous))
        elif kind_ == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + (left + previous[i]) // 2) & 255
        elif kind_ == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        yield from zip(line[0::channels], line[1::channels], line[2::channels])
        previous = line


def near(colour: Tuple[int, int, int], hex_colour: str, slack: int = 16) -> bool:
    want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= slack for a, b in zip(colour, want))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed here: .ci/run installs "
                    "Debian's chromium (apt-get install chromium)")
def test_report_renders_in_a_browser(nights: Dict[str, Any], report: Path,
                                     tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,900",
                      report.as_uri())
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    colours = Counter(png_pixels(shot.read_bytes()))
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    white = sum(count for colour, count in colours.items() if colour == (255, 255, 255))
    assert white < 0.97 * 1200 * 900
    red = sum(count for colour, count in colours.items() if near(colour, "#c62828"))
    green = sum(count for colour, count in colours.items() if near(colour, "#2e7d32"))
    orange = sum(count for colour, count in colours.items() if near(colour, "#ef6c00"))
    assert red > 2000 and green > 5000 and orange > 300, (red, green, orange)
    shutil.copy(shot, nights["project"] / "report.png")  # to look at, when debugging

    dom = chromium(tmp_path / "profile", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    text = dom.stdout.decode("utf-8")
    for folder in newest_first(nights):
        assert folder in text, folder
    for name in ("prep", "burn", "train", "deploy"):
        assert f">{name}<" in text or f">{name}: " in text, name
    assert "exit 3" in text and "exit 124" in text  # on the failed steps' bars
    assert "half-written" in text
    assert "Newest run" in text


def test_the_ci_installs_chromium() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "apt-get install" in ci and "chromium" in ci


def test_config_yaml_comments_the_new_options() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    for key in ("history", "history_format", "report"):
        block = text.split(f"\n  {key}:")[0].rsplit("\n", 4)[-4:]
        assert any(line.strip().startswith("#") for line in block), key


def test_damaged_summary_does_not_stop_the_report(nights: Dict[str, Any], tmp_path: Path
                                                  ) -> None:
    (nights["project"] / "outputs" / "2000-01-02" / "00-00-00-2").mkdir(parents=True)
    odd = nights["project"] / "outputs" / "2000-01-02" / "00-00-00-2" / "summary.json"
    odd.write_text(textwrap.dedent('{"status": "failed", "steps": "many"}'))
    try:
        result = history(nights, "scheduler.report=odd.html", "scheduler.history=0")
        assert result.returncode == 0, result.stderr
        text = " ".join(read_page(nights["project"] / "odd.html").text)
        assert "summary.json has no list of steps" in text
    finally:
        shutil.rmtree(odd.parent.parent)
