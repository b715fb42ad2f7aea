"""Helpers shared by the example tasks (not a task itself): arguments, data rows, the model.

Every task reads `key=value` arguments with OmegaConf.from_cli and exits 0 on success,
1 when its work fails (bad input, a missing file, a model below the bar) and 2 when it was
called wrongly (a missing or mistyped argument), always with one message on stderr.
"""

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from omegaconf import OmegaConf

EXIT_FAILED = 1
EXIT_USAGE = 2
NR_PIXELS = 16
SIDE = 4
LABELS = {"0": "horizontal bar", "1": "vertical bar"}

Row = Tuple[int, List[float]]  # (label, pixels scaled to 0..1)


class TaskError(Exception):
    """The task cannot do its work; the message names the input and the problem."""

    exit_code = EXIT_FAILED


class UsageError(TaskError):
    """The task was called with missing or wrong arguments."""

    exit_code = EXIT_USAGE


class BadRow(ValueError):
    """A data line that is not a usable row; category groups it in preprocess's report."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category


# ── Arguments ────────────────────────────────────────────────────────────

# Each kind of argument: does a value from OmegaConf.from_cli fit, and how usage shows it.
# bool is a subclass of int, so numbers exclude it explicitly: `epochs=true` is a mistake.
KINDS: Dict[type, Tuple[Callable[[Any], bool], str]] = {
    str: (lambda v: isinstance(v, str) and v != "", "PATH"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "INTEGER"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "NUMBER"),
    bool: (lambda v: isinstance(v, bool), "true|false"),
}


def usage(spec: Mapping[str, type], defaults: Mapping[str, Any]) -> str:
    """Return the arguments a task takes, optional ones in brackets."""
    words = [f"{key}={KINDS[kind][1]}" for key, kind in spec.items()]
    return " ".join(f"[{w}]" if key in defaults else w for key, w in zip(spec, words))


def read_arguments(
    spec: Mapping[str, type], defaults: Mapping[str, Any], argv: List[str]
) -> Dict[str, Any]:
    """Return the arguments in argv, typed by spec; raise UsageError naming every problem."""
    try:
        container = OmegaConf.to_container(OmegaConf.from_cli(argv))
    except Exception as error:  # OmegaConf raises several types for one cause: bad syntax
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"cannot read the arguments {argv}: {first_line}") from None
    assert isinstance(container, dict)
    given = {str(key): value for key, value in container.items()}
    arguments = {**defaults, **given}
    problems = [f"unknown argument '{key}'" for key in given if key not in spec]
    missing = [key for key in spec if key not in arguments]
    if missing:
        problems.append(f"missing argument{'s' * (len(missing) > 1)} {', '.join(missing)}")
    for key, kind in spec.items():
        fits, shown = KINDS[kind]
        if key not in arguments:
            continue
        if not fits(arguments[key]):
            problems.append(f"{key} must be {shown}, got {arguments[key]!r}")
        else:
            arguments[key] = kind(arguments[key])
    if problems:
        raise UsageError(f"{'; '.join(problems)}\nusage: {usage(spec, defaults)}")
    return arguments


def run_task(name: str, work: Callable[[List[str]], None], argv: Optional[List[str]]) -> int:
    """Run work(argv) and return the exit code; print any failure on stderr, no traceback."""
    try:
        work(sys.argv[1:] if argv is None else argv)
    except TaskError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # a missing or unwritable file is a failure, not a crash
        where = f": '{error.filename}'" if error.filename else ""
        print(f"{name}: {error.strerror or error}{where}", file=sys.stderr)
        return EXIT_FAILED
    return 0


# ── Data rows ────────────────────────────────────────────────────────────


def read_lines(path: str) -> Iterator[Tuple[int, str]]:
    """Yield (line number, text) for each data line of a file; skip comments and blank lines."""
    # errors="replace": stray binary bytes make a bad row like any other, not a crash.
    with open(path, encoding="utf-8", errors="replace") as file:
        for number, line in enumerate(file, start=1):
            text = line.rstrip("\r\n")
            if text.strip() and not text.lstrip().startswith("#"):
                yield number, text


def parse_row(text: str) -> Row:
    """Return (label, pixels scaled to 0..1) from one data line; raise BadRow saying why not."""
    fields = text.split(",")
    if len(fields) != 1 + NR_PIXELS:
        raise BadRow("wrong field count", f"{len(fields)} fields, expected {1 + NR_PIXELS}")
    label = fields[0].strip()
    if label not in LABELS:
        raise BadRow("unknown label", f"label {label!r} is not one of {', '.join(LABELS)}")
    pixels = []
    for index, field in enumerate(fields[1:]):
        try:
            value = float(field)
        except ValueError:
            raise BadRow("not a number", f"pixel p{index} is {field!r}, not a number") from None
        if math.isnan(value):
            raise BadRow("nan", f"pixel p{index} is nan (a missing value)")
        if not 0 <= value <= 255:
            raise BadRow("out of range", f"pixel p{index} is {field}, outside 0-255")
        pixels.append(value / 255)
    return int(label), pixels


def load_rows(path: str) -> List[Row]:
    """Return every row of a data file; raise TaskError naming the file and line of a bad one."""
    rows = []
    for number, text in read_lines(path):
        try:
            rows.append(parse_row(text))
        except BadRow as bad:
            raise TaskError(
                f"{path} line {number}: bad row ({bad}); "
                "run preprocess with filters=true to drop such rows"
            ) from None
    if not rows:
        raise TaskError(f"{path} has no data rows")
    return rows


# ── The model: logistic regression on bar-shaped features ────────────────


def features(pixels: List[float]) -> List[float]:
    """Return the model's inputs: each row's mean brightness squared, then each column's.

    A bar lights one whole row or column, and squaring rewards brightness in one place over
    the same total spread out; the pixels themselves cannot separate the classes linearly.
    """
    rows = [sum(pixels[r * SIDE : (r + 1) * SIDE]) / SIDE for r in range(SIDE)]
    columns = [sum(pixels[c::SIDE]) / SIDE for c in range(SIDE)]
    return [mean * mean for mean in rows + columns]


def probability(weights: List[float], bias: float, x: List[float]) -> float:
    """Return the model's probability that x is label 1."""
    z = bias + sum(w * v for w, v in zip(weights, x))
    if z >= 0:  # two forms, so exp never overflows
        return 1 / (1 + math.exp(-z))
    return math.exp(z) / (1 + math.exp(z))


def load_model(path: str) -> Dict[str, Any]:
    """Return the model saved in a file; raise TaskError when the file is not one."""
    return parse_model(Path(path).read_bytes(), path)


def _is_model(model: Any) -> bool:
    """Say whether decoded JSON holds 8 numeric weights and a numeric bias."""
    if not isinstance(model, dict) or not isinstance(model.get("weights"), list):
        return False
    numbers = [*model["weights"], model.get("bias")]
    return len(numbers) == 2 * SIDE + 1 and all(
        isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers
    )


def parse_model(data: bytes, path: str) -> Dict[str, Any]:
    """Return the model in data, read from path; raise TaskError when it is not one."""
    try:
        model = json.loads(data)
    except ValueError as error:
        raise TaskError(f"{path} is not a model: invalid JSON ({error})") from None
    if not _is_model(model):
        raise TaskError(f"{path} is not a model: it needs 'weights' (8 numbers) and 'bias'")
    return model


def accuracy(weights: List[float], bias: float, rows: List[Row]) -> float:
    """Return the fraction of rows whose label the model predicts."""
    hits = sum((probability(weights, bias, features(px)) >= 0.5) == label for label, px in rows)
    return hits / len(rows)
