"""Validate the example model on the holdout rows; fail when it is not good enough to deploy.

    python tasks/validate.py holdout_file=PATH model_file=PATH min_accuracy=0.85

Writes metrics.json next to the model, pass or fail, so a failed run still says by how much.
"""

import json
import sys
from pathlib import Path
from typing import List, Optional

from common import TaskError, UsageError, accuracy, load_model, load_rows, read_arguments, run_task

SPEC = {"holdout_file": str, "model_file": str, "min_accuracy": float}


def validate(argv: List[str]) -> None:
    args = read_arguments(SPEC, {}, argv)
    if not 0 <= args["min_accuracy"] <= 1:
        raise UsageError(f"min_accuracy must be between 0 and 1, got {args['min_accuracy']}")
    model = load_model(args["model_file"])
    rows = load_rows(args["holdout_file"])
    score = accuracy(model["weights"], model["bias"], rows)
    passed = score >= args["min_accuracy"]
    metrics = {
        "accuracy": score,
        "holdout_rows": len(rows),
        "holdout_file": args["holdout_file"],
        "min_accuracy": args["min_accuracy"],
        "passed": passed,
    }
    metrics_file = Path(args["model_file"]).with_name("metrics.json")
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"validate: accuracy {score:.3f} on {len(rows)} holdout rows from {args['holdout_file']}")
    print(f"validate: wrote {metrics_file}")
    if not passed:
        raise TaskError(
            f"accuracy {score:.3f} is below min_accuracy {args['min_accuracy']}; not deploying"
        )
    print(f"validate: passed (min_accuracy {args['min_accuracy']})")


def main(argv: Optional[List[str]] = None) -> int:
    return run_task("validate", validate, argv)


if __name__ == "__main__":
    sys.exit(main())
