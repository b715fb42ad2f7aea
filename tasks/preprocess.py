"""Preprocess the example data: take the first rows, drop bad ones, split off a holdout set.

    python tasks/preprocess.py input_file=data/dummy.data nr_images=1000 filters=true \\
        holdout_fraction=0.2 train_file=PATH holdout_file=PATH

Rows are copied unchanged. With filters=false bad rows are kept too (and counted), so
training meets them and fails: the example's realistic failure.
"""

import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from common import (
    NR_PIXELS,
    BadRow,
    TaskError,
    UsageError,
    parse_row,
    read_arguments,
    read_lines,
    run_task,
)

SPEC = {
    "input_file": str,
    "nr_images": int,
    "filters": bool,
    "holdout_fraction": float,
    "train_file": str,
    "holdout_file": str,
}
HEADER = "# label," + ",".join(f"p{i}" for i in range(NR_PIXELS))


def classify(lines: List[Tuple[int, str]]) -> Tuple[List[str], Dict[str, List[int]]]:
    """Return the good lines, and the line numbers of bad ones by category."""
    good: List[str] = []
    bad: Dict[str, List[int]] = {}
    for number, text in lines:
        try:
            parse_row(text)
            good.append(text)
        except BadRow as error:
            bad.setdefault(error.category, []).append(number)
    return good, bad


def print_bad_rows(bad: Dict[str, List[int]], filters: bool) -> None:
    """Print how many bad rows there are of each category, and where the first one is."""
    total = sum(len(numbers) for numbers in bad.values())
    if filters:
        print(f"preprocess: dropped {total} bad rows")
    else:
        print(f"preprocess: kept {total} bad rows (filters=false): training will reject them")
    for category, numbers in sorted(bad.items()):
        print(f"preprocess:   {len(numbers):>4} {category} (first at line {numbers[0]})")


def write_rows(path: str, rows: List[str]) -> None:
    """Write rows under a header comment, creating the folder; print where they went."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    print(f"preprocess: wrote {len(rows)} rows to {path}")


def preprocess(argv: List[str]) -> None:
    args = read_arguments(SPEC, {}, argv)
    if args["nr_images"] < 1:
        raise UsageError(f"nr_images must be 1 or more, got {args['nr_images']}")
    if not 0 < args["holdout_fraction"] < 1:
        raise UsageError(
            f"holdout_fraction must be between 0 and 1, got {args['holdout_fraction']}"
        )
    lines = list(read_lines(args["input_file"]))
    taken = lines[: args["nr_images"]]
    print(f"preprocess: read {len(taken)} of {len(lines)} rows from {args['input_file']}")
    good, bad = classify(taken)
    print_bad_rows(bad, args["filters"])
    kept = good if args["filters"] else [text for _, text in taken]
    nr_holdout = round(len(kept) * args["holdout_fraction"])
    if nr_holdout == 0 or nr_holdout == len(kept):
        raise TaskError(
            f"{len(kept)} rows kept: too few to split with holdout_fraction "
            f"{args['holdout_fraction']}; raise nr_images"
        )
    write_rows(args["train_file"], kept[:-nr_holdout])
    write_rows(args["holdout_file"], kept[-nr_holdout:])


def main(argv: Optional[List[str]] = None) -> int:
    return run_task("preprocess", preprocess, argv)


if __name__ == "__main__":
    sys.exit(main())
