"""Predict the digit in a picture: `python scripts/predict.py ckpt_path=<ckpt> image=<file> [explain=true]`
(see conf/predict.yaml)."""

import gc

if __name__ == "__main__":  # (run, not imported: only then does hydra_main turn it back on)
    gc.disable()  # while importing: see mnist_lstm/cli/main.py (hydra_main)

from omegaconf import DictConfig

from mnist_lstm.cli.main import hydra_main
from mnist_lstm.use.predict import predict


@hydra_main(config_name="predict")
def main(cfg: DictConfig) -> int:
    """Returns the predicted digit."""
    return predict(cfg)


if __name__ == "__main__":
    main()
