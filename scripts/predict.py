"""Predict the digit in a picture: `python scripts/predict.py ckpt_path=<ckpt> image=<file> [explain=true]`
(see conf/predict.yaml)."""

from mnist_lstm.cli import main
from mnist_lstm.use.predict import predict

if __name__ == "__main__":
    main("predict", predict)
