"""Train the row-by-row LSTM on MNIST: `python scripts/train.py layer_num=3` (see conf/train.yaml).

`python scripts/train.py ckpt_path=<run>/checkpoints/last.ckpt` continues that run where it stopped.
"""

from mnist_lstm.cli import main
from mnist_lstm.run.train import task

if __name__ == "__main__":
    main("train", task, resumable=True)
