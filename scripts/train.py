"""Train the row-by-row LSTM on MNIST: `python scripts/train.py layer_num=3` (see conf/train.yaml).

`python scripts/train.py ckpt_path=<run>/checkpoints/last.ckpt` continues that run where it stopped.
"""

import gc

if __name__ == "__main__":  # (run, not imported: only then does hydra_main turn it back on)
    gc.disable()  # while importing: see mnist_lstm/cli/main.py (hydra_main)

from omegaconf import DictConfig

from mnist_lstm.cli.main import hydra_main
from mnist_lstm.run.train import train


@hydra_main(config_name="train", resumable=True)
def main(cfg: DictConfig) -> float | None:
    """Returns the metric Hydra sweepers optimise (`optimized_metric`, val/acc_best by default)."""
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
