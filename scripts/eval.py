"""Evaluate a checkpoint on the official MNIST test set: `python scripts/eval.py ckpt_path=<ckpt>` (conf/eval.yaml)."""

from mnist_lstm.cli import main
from mnist_lstm.use.evaluate import evaluate

if __name__ == "__main__":
    main("eval", evaluate)
