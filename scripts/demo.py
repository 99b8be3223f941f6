"""Draw a digit and watch the model read it, row by row, in the browser: `python scripts/demo.py [ckpt_path=<ckpt>]`
(see conf/demo.yaml, docs/demo.md)."""

from mnist_lstm.cli import main
from mnist_lstm.demo.server import serve

if __name__ == "__main__":
    main("demo", serve)
