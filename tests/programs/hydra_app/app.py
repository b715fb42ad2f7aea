"""A step that is a Hydra app: `@hydra.main` with its own config.yaml beside it.

Hydra reads the step's `key=value` words as overrides of that config. The app writes, as
JSON, what its `cfg` holds (resolved, as the app's code would read it), its run folder, cwd
and argv to the path in $TEST_RECORD (with `.<job number>` appended in a multirun).
"""

import json
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    path = os.environ["TEST_RECORD"]
    if hydra_cfg.mode == RunMode.MULTIRUN:
        path += f".{hydra_cfg.job.num}"
    record = {
        "cfg": OmegaConf.to_container(cfg, resolve=True),
        "output_dir": hydra_cfg.runtime.output_dir,
        "cwd": os.getcwd(),
        "argv": sys.argv[1:],
    }
    with open(path, "w", encoding="utf-8") as out:
        json.dump(record, out)


if __name__ == "__main__":
    main()
