"""Evaluate a checkpoint on the official MNIST test set: `python scripts/eval.py ckpt_path=<ckpt>` (conf/eval.yaml)."""

import gc

if __name__ == "__main__":  # (run, not imported: only then does hydra_main turn it back on)
    gc.disable()  # while importing: see mnist_lstm/cli/main.py (hydra_main)

from omegaconf import DictConfig

from mnist_lstm.cli.main import hydra_main
from mnist_lstm.use.evaluate import evaluate


@hydra_main(config_name="eval")
def main(cfg: DictConfig) -> float:
    """Returns the test accuracy."""
    return evaluate(cfg)["test/acc"]


if __name__ == "__main__":
    main()
