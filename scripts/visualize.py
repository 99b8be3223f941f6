"""Draw how a checkpoint's model reads digits row by row: `python scripts/visualize.py ckpt_path=<ckpt> index=4`
(see conf/visualize.yaml)."""

from mnist_lstm.cli import main
from mnist_lstm.use.visualize import visualize

if __name__ == "__main__":
    main("visualize", visualize)
