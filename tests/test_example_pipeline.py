"""End-to-end tests of the shipped example pipeline: each task run as `python tasks/X.py k=v`.

The tasks run from the repository root, as the scheduler runs them, reading the shipped
data/dummy.data and writing into a temp folder. The expected counts below are facts about
that file; test_dummy_data_regenerates_byte_for_byte keeps them honest.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "dummy.data"

# The shipped config.yaml's values.
NR_IMAGES = 1000
MIN_ACCURACY = 0.85

# Bad rows among the first NR_IMAGES rows of data/dummy.data, by preprocess's category.
BAD_IN_FIRST_1000 = {
    "wrong field count": 6,
    "nan": 7,
    "not a number": 8,
    "out of range": 7,
    "unknown label": 6,
}
NR_TRAIN, NR_HOLDOUT = 773, 193  # the 966 good rows, split 80/20
FIRST_BAD_TRAIN_LINE = 17  # filters=false: row 16 (line 21 of dummy.data) + train.csv's header


def run_task(task: str, *arguments: str) -> "subprocess.CompletedProcess[str]":
    """Run tasks/<task>.py from the repository root, warnings as errors; capture its output."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "tasks" / f"{task}.py"), *arguments],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,  # bytes: text=True would turn the progress bar's \r into \n
        timeout=60,
    )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    return subprocess.CompletedProcess(result.args, result.returncode, stdout, stderr)


def preprocess(out: Path, *overrides: str) -> "subprocess.CompletedProcess[str]":
    """Run preprocess with the shipped arguments, writing into out/data; overrides win."""
    return run_task(
        "preprocess",
        "input_file=data/dummy.data",  # relative: to the cwd, the repository root
        f"nr_images={NR_IMAGES}",
        "filters=true",
        "holdout_fraction=0.2",
        f"train_file={out}/data/train.csv",
        f"holdout_file={out}/data/holdout.csv",
        *overrides,
    )


def data_rows(path: Path) -> List[str]:
    """Return the data lines of a file: all but comments."""
    return [
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]


def is_good_row(text: str) -> bool:
    """Say whether a line is a label 0/1 and 16 whole pixels in 0-255."""
    label, *pixels = text.split(",")
    return (
        label in ("0", "1")
        and len(pixels) == 16
        and all(p.isdigit() and int(p) <= 255 for p in pixels)
    )


def predict(model: Dict[str, Any], text: str) -> int:
    """Return the model's label for a row, computed independently of tasks/common.py."""
    pixels = [int(p) / 255 for p in text.split(",")[1:]]
    rows = [sum(pixels[4 * r : 4 * r + 4]) / 4 for r in range(4)]
    columns = [sum(pixels[c::4]) / 4 for c in range(4)]
    z = model["bias"] + sum(w * m * m for w, m in zip(model["weights"], rows + columns))
    return int(z >= 0)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """Run the whole pipeline once with the shipped arguments; return the results and paths."""
    out = tmp_path_factory.mktemp("run")
    target = out / "deployed" / "model.json"
    target.parent.mkdir()
    target.write_text("an older model\n")  # deploy must replace it
    model = f"model_file={out}/model.json"
    results = {
        "preprocess": preprocess(out),
        "train": run_task(
            "train", f"train_file={out}/data/train.csv", model, "epochs=30", "lr=0.5"
        ),
        "validate": run_task(
            "validate",
            f"holdout_file={out}/data/holdout.csv",
            model,
            f"min_accuracy={MIN_ACCURACY}",
        ),
        "deploy": run_task("deploy", model, f"target={target}"),
    }
    return {"out": out, "target": target, **results}


def test_default_chain_deploys_a_model_that_beats_the_threshold(chain: Dict[str, Any]) -> None:
    for task in ("preprocess", "train", "validate", "deploy"):
        assert chain[task].returncode == 0, f"{task} failed: {chain[task].stderr}"
    deployed = chain["target"].read_bytes()
    assert deployed == (chain["out"] / "model.json").read_bytes()
    model = json.loads(deployed)
    holdout = data_rows(chain["out"] / "data" / "holdout.csv")
    labels = [int(row.split(",")[0]) for row in holdout]
    hits = sum(predict(model, row) == label for row, label in zip(holdout, labels))
    assert hits / len(holdout) >= MIN_ACCURACY + 0.05  # comfortably, not by luck
    metrics = json.loads((chain["out"] / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(hits / len(holdout))
    assert metrics["passed"] is True


def test_train_draws_one_progress_bar_update_per_epoch(chain: Dict[str, Any]) -> None:
    bar_lines = [line for line in chain["train"].stdout.split("\n") if "epoch" in line]
    assert len(bar_lines) == 1  # each update overwrites the last; only the final one ends a line
    updates = bar_lines[0].split("\r")[1:]
    assert len(updates) == 30
    assert re.fullmatch(r"train: epoch  30/30 \[#{30}\] loss \d\.\d{4}", updates[-1])


def test_filters_drop_exactly_the_bad_rows(chain: Dict[str, Any]) -> None:
    stdout = chain["preprocess"].stdout
    assert f"dropped {sum(BAD_IN_FIRST_1000.values())} bad rows" in stdout
    for category, count in BAD_IN_FIRST_1000.items():
        assert f" {count} {category} " in stdout
    train = data_rows(chain["out"] / "data" / "train.csv")
    holdout = data_rows(chain["out"] / "data" / "holdout.csv")
    assert (len(train), len(holdout)) == (NR_TRAIN, NR_HOLDOUT)
    assert all(is_good_row(row) for row in train + holdout)
    # The holdout set is the last rows kept, in file order.
    good = [row for row in data_rows(DATA)[:NR_IMAGES] if is_good_row(row)]
    assert train + holdout == good


def test_without_filters_training_fails_naming_the_bad_line(tmp_path: Path) -> None:
    result = preprocess(tmp_path, "filters=false")
    assert result.returncode == 0, result.stderr
    train_file = tmp_path / "data" / "train.csv"
    holdout = data_rows(tmp_path / "data" / "holdout.csv")
    assert len(data_rows(train_file)) + len(holdout) == NR_IMAGES
    lines = train_file.read_text(encoding="utf-8").splitlines()
    assert not is_good_row(lines[FIRST_BAD_TRAIN_LINE - 1])

    result = run_task(
        "train", f"train_file={train_file}", f"model_file={tmp_path}/model.json", "epochs=2", "lr=1"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{train_file} line {FIRST_BAD_TRAIN_LINE}:" in result.stderr
    assert not (tmp_path / "model.json").exists()


def test_validate_refuses_a_model_below_min_accuracy(chain: Dict[str, Any], tmp_path: Path) -> None:
    model = tmp_path / "model.json"  # a copy: this run's metrics.json must not clobber chain's
    model.write_bytes((chain["out"] / "model.json").read_bytes())
    holdout = chain["out"] / "data" / "holdout.csv"
    result = run_task(
        "validate", f"holdout_file={holdout}", f"model_file={model}", "min_accuracy=0.999"
    )
    assert result.returncode == 1
    assert "is below min_accuracy 0.999; not deploying" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["passed"] is False


def test_deploy_refuses_a_model_that_failed_validation(
    chain: Dict[str, Any], tmp_path: Path
) -> None:
    model = tmp_path / "model.json"  # validated below the bar: metrics.json says passed=false
    model.write_bytes((chain["out"] / "model.json").read_bytes())
    holdout = chain["out"] / "data" / "holdout.csv"
    run_task("validate", f"holdout_file={holdout}", f"model_file={model}", "min_accuracy=0.999")
    target = tmp_path / "deployed" / "model.json"
    result = run_task("deploy", f"model_file={model}", f"target={target}")
    assert result.returncode == 1
    assert "failed validation" in result.stderr and "not publishing" in result.stderr
    assert not target.exists()


def test_deploy_replaces_the_target_and_leaves_no_temp_file(chain: Dict[str, Any]) -> None:
    assert os.listdir(chain["target"].parent) == ["model.json"]
    assert set(json.loads(chain["target"].read_text())) >= {"weights", "bias"}
    assert str(chain["target"]) in chain["deploy"].stdout


def test_nr_images_keeps_that_many_rows(tmp_path: Path) -> None:
    result = preprocess(tmp_path, "nr_images=10")
    assert result.returncode == 0, result.stderr
    kept = data_rows(tmp_path / "data" / "train.csv") + data_rows(tmp_path / "data" / "holdout.csv")
    assert kept == data_rows(DATA)[:10]


@pytest.mark.parametrize(
    "task, arguments, missing",
    [
        (
            "preprocess",
            ["input_file=x", "nr_images=5", "filters=true", "holdout_fraction=0.2", "train_file=t"],
            "holdout_file",
        ),
        ("train", ["train_file=t", "model_file=m", "epochs=3"], "lr"),
        ("validate", ["holdout_file=h", "model_file=m"], "min_accuracy"),
        ("deploy", ["model_file=m"], "target"),
    ],
)
def test_a_missing_argument_is_named_with_exit_2(
    task: str, arguments: List[str], missing: str
) -> None:
    result = run_task(task, *arguments)
    assert result.returncode == 2
    assert f"{task}: missing argument {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_input_file_fails_with_exit_1(tmp_path: Path) -> None:
    result = preprocess(tmp_path, f"input_file={tmp_path}/nope.data")
    assert result.returncode == 1
    assert f"{tmp_path}/nope.data" in result.stderr
    assert "Traceback" not in result.stderr


def test_dummy_data_regenerates_byte_for_byte(tmp_path: Path) -> None:
    output = tmp_path / "dummy.data"
    result = subprocess.run(
        [sys.executable, str(ROOT / "data" / "make_dummy_data.py"), str(output)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == DATA.read_bytes()
    rows = data_rows(output)
    assert len(rows) == 1200
    assert sum(not is_good_row(row) for row in rows) == 40
    assert len(output.read_bytes()) < 150_000
