"""Train the example model: logistic regression by stochastic gradient descent, saved as JSON.

    python tasks/train.py train_file=PATH model_file=PATH epochs=30 lr=0.5 [seed=0]

Prints a progress bar redrawn with carriage returns, one update per epoch. A bad row in
train_file (preprocess ran with filters=false) fails the task: exit 1, naming the line.
"""

import json
import math
import random
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from common import (
    LABELS,
    UsageError,
    accuracy,
    features,
    load_rows,
    probability,
    read_arguments,
    run_task,
)

SPEC = {"train_file": str, "model_file": str, "epochs": int, "lr": float, "seed": int}
DEFAULTS = {"seed": 0}
BAR_WIDTH = 30


def print_progress(epoch: int, epochs: int, loss: float) -> None:
    """Redraw the progress bar in place: a carriage return, no newline until the end."""
    done = BAR_WIDTH * epoch // epochs
    bar = "#" * done + "." * (BAR_WIDTH - done)
    end = "\n" if epoch == epochs else ""
    print(f"\rtrain: epoch {epoch:>3}/{epochs} [{bar}] loss {loss:.4f}", end=end, flush=True)


def fit(
    samples: List[Tuple[int, List[float]]], epochs: int, lr: float, seed: int
) -> Tuple[List[float], float, float]:
    """Return (weights, bias, last epoch's mean log loss) fitted by SGD on (label, x) pairs."""
    rng = random.Random(seed)  # the only randomness: the order of samples in each epoch
    weights = [0.0] * len(samples[0][1])
    bias = 0.0
    loss = math.log(2)
    order = list(range(len(samples)))
    for epoch in range(1, epochs + 1):
        rng.shuffle(order)
        total = 0.0
        for i in order:
            label, x = samples[i]
            p = probability(weights, bias, x)
            total -= math.log(max(p if label else 1 - p, 1e-12))
            step = lr * (p - label)
            weights = [w - step * v for w, v in zip(weights, x)]
            bias -= step
        loss = total / len(samples)
        print_progress(epoch, epochs, loss)
    return weights, bias, loss


def train(argv: List[str]) -> None:
    args = read_arguments(SPEC, DEFAULTS, argv)
    if args["epochs"] < 1:
        raise UsageError(f"epochs must be 1 or more, got {args['epochs']}")
    if args["lr"] <= 0:
        raise UsageError(f"lr must be more than 0, got {args['lr']}")
    rows = load_rows(args["train_file"])
    print(f"train: {len(rows)} rows from {args['train_file']}")
    samples = [(label, features(pixels)) for label, pixels in rows]
    weights, bias, loss = fit(samples, args["epochs"], args["lr"], args["seed"])
    model = {
        "kind": "logistic regression on row and column brightness (tasks/common.py)",
        "labels": LABELS,
        "weights": weights,
        "bias": bias,
        "train_accuracy": accuracy(weights, bias, rows),
        "train_loss": loss,
        "train_rows": len(rows),
        "train_file": args["train_file"],
        "epochs": args["epochs"],
        "lr": args["lr"],
        "seed": args["seed"],
    }
    Path(args["model_file"]).parent.mkdir(parents=True, exist_ok=True)
    Path(args["model_file"]).write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
    print(f"train: accuracy {model['train_accuracy']:.3f} on the training rows")
    print(f"train: saved the model to {args['model_file']}")


def main(argv: Optional[List[str]] = None) -> int:
    return run_task("train", train, argv)


if __name__ == "__main__":
    sys.exit(main())
