"""A step that reads GNU long options with argparse, as a real tool does.

It writes what it parsed, as JSON {"parsed": {dest: value}, "argv": [...]}, to the path in
$TEST_RECORD, so a test can compare each value and its type with the config's. Unknown
options or bad values make argparse exit 2, as for any user of the program.
"""

import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--name", type=str)
    parser.add_argument("--note", type=str)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--layers", nargs="+", type=int)
    parser.add_argument("--offsets", nargs="+", type=float)
    parser.add_argument("--tags", nargs="*", type=str)
    parser.add_argument("--n-samples", type=int)  # dest n_samples
    parser.add_argument("--seed", type=int, default=7)  # null in the config leaves it out
    parser.add_argument("--optimizer.lr", dest="optimizer.lr", type=float)  # jsonargparse style
    parser.add_argument("--optimizer.name", dest="optimizer.name", type=str)
    parsed = vars(parser.parse_args())
    record = {"parsed": parsed, "argv": sys.argv[1:]}
    with open(os.environ["TEST_RECORD"], "w", encoding="utf-8") as out:
        json.dump(record, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
