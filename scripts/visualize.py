"""Draw how a checkpoint's model reads digits row by row: `python scripts/visualize.py ckpt_path=<ckpt> index=4`
(see conf/visualize.yaml)."""

import gc

if __name__ == "__main__":  # (run, not imported: only then does hydra_main turn it back on)
    gc.disable()  # while importing: see mnist_lstm/cli/main.py (hydra_main)

from omegaconf import DictConfig

from mnist_lstm.cli.main import hydra_main
from mnist_lstm.use.visualize import visualize


@hydra_main(config_name="visualize")
def main(cfg: DictConfig) -> None:
    visualize(cfg)


if __name__ == "__main__":
    main()
