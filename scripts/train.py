"""Train the row-by-row LSTM on MNIST: `python scripts/train.py layer_num=3` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from mnist_lstm.cli import reports_user_errors
from mnist_lstm.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@reports_user_errors
def main(cfg: DictConfig) -> float | None:
    """Returns the metric Hydra sweepers optimise (`optimized_metric`, val/acc_best by default)."""
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
