"""Deploy the example model: publish model_file at target atomically.

    python tasks/deploy.py model_file=PATH target=outputs/deployed/model.json

Whoever reads target sees the old model or the new one, never half a file: the bytes go
to a temporary file in target's folder first, and os.replace swaps it in.
"""

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from common import TaskError, parse_model, read_arguments, run_task

SPEC = {"model_file": str, "target": str}


def write_atomically(target: Path, data: bytes) -> None:
    """Replace target with data in one step, durable once this returns."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as target: os.replace is atomic only within one file system.
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, _new_file_mode())
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
    _fsync_folder(target.parent)


def _new_file_mode() -> int:
    """Return the mode open() gives a new file; mkstemp's files are private (0600) instead."""
    umask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself survive a crash; folders cannot be opened on Windows."""
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def refuse_a_failed_model(metrics_file: Path) -> None:
    """Stop when validation wrote that the model failed: on_failure=continue must not ship it."""
    if not metrics_file.exists():
        return  # validation was not run (e.g. scheduler.only=[deployment]): the user's call
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    if metrics.get("passed") is False:
        raise TaskError(
            f"the model failed validation (accuracy {metrics.get('accuracy', 0):.3f} < "
            f"min_accuracy {metrics.get('min_accuracy')}, see {metrics_file}); not publishing"
        )


def deploy(argv: List[str]) -> None:
    args = read_arguments(SPEC, {}, argv)
    data = Path(args["model_file"]).read_bytes()
    model = parse_model(data, args["model_file"])  # refuse to publish anything but a model
    refuse_a_failed_model(Path(args["model_file"]).with_name("metrics.json"))
    write_atomically(Path(args["target"]), data)
    print(
        f"deploy: published {args['model_file']} (trained on {model.get('train_rows', '?')} "
        f"rows, {model.get('epochs', '?')} epochs) to {args['target']}"
    )


def main(argv: Optional[List[str]] = None) -> int:
    return run_task("deploy", deploy, argv)


if __name__ == "__main__":
    sys.exit(main())
