"""Export a checkpoint to ONNX: `python scripts/export.py ckpt_path=<ckpt>` (see conf/export.yaml)."""

from mnist_lstm.cli import main
from mnist_lstm.use.onnx_export import export

if __name__ == "__main__":
    main("export", export)
