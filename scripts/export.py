"""Export a checkpoint to ONNX: `python scripts/export.py ckpt_path=<ckpt>` (see conf/export.yaml)."""

import gc

if __name__ == "__main__":  # (run, not imported: only then does hydra_main turn it back on)
    gc.disable()  # while importing: see mnist_lstm/cli/main.py (hydra_main)

from omegaconf import DictConfig

from mnist_lstm.cli.main import hydra_main
from mnist_lstm.use.onnx_export import export


@hydra_main(config_name="export")
def main(cfg: DictConfig) -> str:
    """Returns the path of the ONNX file."""
    return str(export(cfg))


if __name__ == "__main__":
    main()
