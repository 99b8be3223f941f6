"""MNIST for the row-by-row LSTM: the files (files.py), the LightningDataModule and the resumable order of the
training data (datamodule.py), and the training images' augmentation (augment.py)."""

from mnist_lstm.data.datamodule import MNISTDataModule, ResumableShuffle
from mnist_lstm.data.files import EXTRACTED_SIZES, MNIST_FILES, ensure_mnist, load_mnist, raw_dir

__all__ = [
    "EXTRACTED_SIZES",
    "MNIST_FILES",
    "MNISTDataModule",
    "ResumableShuffle",
    "ensure_mnist",
    "load_mnist",
    "raw_dir",
]
