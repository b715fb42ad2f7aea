"""A step that reads its options with typer, as a real typer tool does.

It writes what it parsed, as JSON {"parsed": {name: value}, "argv": [...]}, to the path in
$TEST_RECORD. Lists are List[...] options (one `--tag=x` per item), booleans are typer's
`--verbose/--no-verbose` flags, `n_samples` is the option `--n-samples`.
"""

import json
import os
import sys
from typing import Annotated, List, Optional

import typer


def main(
    name: Annotated[str, typer.Option()] = "unset",
    note: Annotated[str, typer.Option()] = "unset",
    n_samples: Annotated[int, typer.Option()] = 0,
    ratio: Annotated[float, typer.Option()] = 0.0,
    verbose: Annotated[bool, typer.Option()] = False,
    dry: Annotated[bool, typer.Option()] = False,
    tag: Annotated[Optional[List[str]], typer.Option()] = None,
    size: Annotated[Optional[List[int]], typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    parsed = {"name": name, "note": note, "n_samples": n_samples, "ratio": ratio,
              "verbose": verbose, "dry": dry, "tag": tag, "size": size, "seed": seed}
    with open(os.environ["TEST_RECORD"], "w", encoding="utf-8") as out:
        json.dump({"parsed": parsed, "argv": sys.argv[1:]}, out)


if __name__ == "__main__":
    typer.run(main)
