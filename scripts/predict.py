"""Predict the digit in a picture: `python scripts/predict.py ckpt_path=<ckpt> image=<file> [explain=true]`
(see conf/predict.yaml)."""

import hydra
from omegaconf import DictConfig

from mnist_lstm.cli import reports_user_errors
from mnist_lstm.predict import predict


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@reports_user_errors
def main(cfg: DictConfig) -> int:
    """Returns the predicted digit."""
    return predict(cfg)


if __name__ == "__main__":
    main()
