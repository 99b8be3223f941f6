"""Evaluate a checkpoint on the official MNIST test set: `python scripts/eval.py ckpt_path=<ckpt>` (conf/eval.yaml)."""

import hydra
from omegaconf import DictConfig

from mnist_lstm.cli import reports_user_errors
from mnist_lstm.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@reports_user_errors
def main(cfg: DictConfig) -> float:
    """Returns the test accuracy."""
    return evaluate(cfg)["test/acc"]


if __name__ == "__main__":
    main()
