"""Draw how a checkpoint's model reads digits row by row: `python scripts/visualize.py ckpt_path=<ckpt> index=4`
(see conf/visualize.yaml)."""

import hydra
from omegaconf import DictConfig

from mnist_lstm.cli import reports_user_errors
from mnist_lstm.visualize import visualize


@hydra.main(version_base="1.3", config_path="../conf", config_name="visualize")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    visualize(cfg)


if __name__ == "__main__":
    main()
