"""A step that reads its options with click, as a real click tool does.

It writes what it parsed, as JSON {"parsed": {name: value}, "argv": [...]}, to the path in
$TEST_RECORD. Lists are `multiple=True` options (one `--tag=x` per item); click gives tuples,
recorded as lists. Unknown options or bad values make click exit 2.
"""

import json
import os
import sys
from typing import Any

import click


@click.command()
@click.option("--name", type=str)
@click.option("--note", type=str)
@click.option("--empty", type=str)
@click.option("--count", type=int)
@click.option("--ratio", type=float)
@click.option("--big", type=float)
@click.option("--verbose", is_flag=True)
@click.option("--dry", is_flag=True)
@click.option("--tag", type=str, multiple=True)
@click.option("--size", type=int, multiple=True)
@click.option("--shift", type=float, multiple=True)
@click.option("--none", "none_given", type=str, multiple=True)  # [] in the config: no option
@click.option("--seed", type=int, default=7)  # null in the config leaves it out
@click.option("--optimizer.lr", "optimizer_lr", type=float)
def main(**parsed: Any) -> None:
    record = {"parsed": {k: list(v) if isinstance(v, tuple) else v for k, v in parsed.items()},
              "argv": sys.argv[1:]}
    with open(os.environ["TEST_RECORD"], "w", encoding="utf-8") as out:
        json.dump(record, out)


if __name__ == "__main__":
    main()
