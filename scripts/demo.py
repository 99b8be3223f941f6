"""Draw a digit and watch the model read it, row by row, in the browser: `python scripts/demo.py [ckpt_path=<ckpt>]`
(see conf/demo.yaml, docs/demo.md)."""

import gc

if __name__ == "__main__":  # (run, not imported: only then does hydra_main turn it back on)
    gc.disable()  # while importing: see mnist_lstm/cli/main.py (hydra_main)

from omegaconf import DictConfig

from mnist_lstm.cli.main import hydra_main
from mnist_lstm.demo.server import serve


@hydra_main(config_name="demo")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
