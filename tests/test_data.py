"""The data module: split sizes, disjointness, value ranges, and the missing-data message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_lstm.data import MNIST_FILES, MNISTDataModule
from mnist_lstm.errors import UserError


@pytest.fixture(scope="module")
def datamodule(mnist_dir: Path) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=128, eval_batch_size=1000, download=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_split_sizes_and_no_overlap(datamodule: MNISTDataModule) -> None:
    train, val, test = datamodule.train_set, datamodule.val_set, datamodule.test_set
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)
    # Images as byte strings: a train image must not reappear in val (MNIST has no exact duplicates).
    as_keys = lambda ds: {bytes((img * 255).round().byte().numpy()) for img in ds.tensors[0]}  # noqa: E731
    assert not as_keys(train) & as_keys(val)


def test_split_is_fixed_across_setups(mnist_dir: Path, datamodule: MNISTDataModule) -> None:
    again = MNISTDataModule(data_dir=str(mnist_dir), download=False)
    again.prepare_data()
    again.setup("fit")
    assert torch.equal(again.val_set.tensors[1], datamodule.val_set.tensors[1])
    datamodule.setup("test")  # a second setup keeps the same objects
    assert datamodule.val_set is datamodule.val_set


def test_batches_are_row_sequences_in_unit_range(datamodule: MNISTDataModule) -> None:
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (128, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(10))


def test_a_batch_is_gathered_in_one_go_and_holds_the_sampled_images(datamodule: MNISTDataModule) -> None:
    loader = datamodule.train_dataloader()
    indices = list(iter(loader.sampler))[:128]  # the order this epoch reads the training set in
    images, labels = next(iter(loader))
    expected = torch.stack([datamodule.train_set[i][0] for i in indices])  # sample by sample, as by default
    assert torch.equal(images, expected) and torch.equal(labels, datamodule.train_set.tensors[1][indices])


@pytest.mark.parametrize(
    ("on_device", "device", "moved"),
    [("auto", "cpu", False), (True, "cpu", False), (False, "cpu", False)]
    + [("auto", "cuda", True), (True, "cuda", True), (False, "cuda", False)],
)
def test_where_the_data_is_kept(on_device: object, device: str, moved: bool) -> None:
    # Whether setup moves the splits to the run's device; the move itself: tests/test_gpu.py (pytest -m gpu).
    assert MNISTDataModule(on_device=on_device)._keep_on(torch.device(device)) is moved


def test_no_sample_is_dropped_in_eval(mnist_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir), eval_batch_size=999, download=False)
    dm.prepare_data()
    dm.setup()
    assert sum(len(y) for _, y in dm.val_dataloader()) == 5_000
    assert sum(len(y) for _, y in dm.test_dataloader()) == 10_000


@pytest.mark.parametrize("download", [False, True])
def test_missing_data_is_one_clear_line(tmp_path: Path, download: bool) -> None:
    """Offline (or with downloads off), missing files end in one line naming the folder and the files."""
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"), download=download)
    with pytest.raises(UserError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert all(name in message for name in MNIST_FILES)
    assert "data.data_dir=" in message


def test_a_random_shift_moves_each_image_by_at_most_the_pixels_asked() -> None:
    from mnist_lstm.data.augment import random_shift

    torch.manual_seed(0)
    images = torch.zeros(64, 28, 28)
    images[:, 10:18, 9:19] = torch.rand(64, 8, 10) + 0.1  # a "digit" away from the edges
    shifted = random_shift(images, 2)
    assert shifted.shape == images.shape and torch.equal(random_shift(images, 0), images)
    moves = set()
    for before, after in zip(images, shifted, strict=True):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(torch.roll(before, (dy, dx), dims=(0, 1)), after)  # (nothing crosses an edge here)
        ]
        assert len(found) == 1
        moves.add(found[0])
    assert len(moves) > 10  # each image its own move
    torch.testing.assert_close(shifted.sum(dim=(1, 2)), images.sum(dim=(1, 2)))


def test_a_random_rotation_turns_each_image_by_its_own_angle_within_the_degrees_asked() -> None:
    from mnist_lstm.data.augment import random_warp

    torch.manual_seed(0)
    images = torch.zeros(256, 28, 28)
    images[:, 13:15, 4:24] = 1.0  # a horizontal bar through the centre
    turned = random_warp(images, degrees=20)
    assert torch.equal(random_warp(images), images)
    # The bar's direction from the image's second moments (y grows downwards, so the sign is flipped).
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = turned.sum(dim=(1, 2))
    cy, cx = (turned * ys).sum(dim=(1, 2)) / mass, (turned * xs).sum(dim=(1, 2)) / mass
    dy, dx = ys - cy.view(-1, 1, 1), xs - cx.view(-1, 1, 1)
    mxx, myy, mxy = ((turned * m).sum(dim=(1, 2)) for m in (dx * dx, dy * dy, dx * dy))
    angles = torch.rad2deg(-0.5 * torch.atan2(2 * mxy, mxx - myy))
    assert angles.abs().max() <= 20.5  # within the degrees asked (bilinear resampling blurs a little)
    assert angles.min() < -15 and angles.max() > 15 and angles.std() > 8  # spread over the range, image by image
    torch.testing.assert_close(cx, torch.full_like(cx, 13.5), atol=0.05, rtol=0)  # about the centre
    torch.testing.assert_close(cy, torch.full_like(cy, 13.5), atol=0.05, rtol=0)


def test_an_elastic_distortion_moves_pixels_smoothly_by_about_the_pixels_asked() -> None:
    from mnist_lstm.data.augment import random_warp

    torch.manual_seed(0)
    # Each pixel holds its own column: bilinear sampling of a linear ramp gives back the column it sampled.
    columns = torch.arange(28.0).view(1, 1, 28).expand(64, 28, 28).contiguous()
    moved = (random_warp(columns, elastic=1.5) - columns)[:, 4:-4, 4:-4]  # away from the black border
    assert 1.2 < moved.std() < 1.8  # the moves' spread is what was asked
    assert (moved[:, :, 1:] - moved[:, :, :-1]).abs().mean() < 0.25 * moved.abs().mean()  # a smooth field
    per_image = moved.flatten(1)
    assert torch.corrcoef(per_image[:8]).fill_diagonal_(0).abs().max() < 0.9  # each image its own field


def test_the_blur_of_the_elastic_field_is_torchvisions_gaussian_blur() -> None:
    from torchvision.transforms.v2.functional import gaussian_blur

    from mnist_lstm.data.augment import _blur_matrix

    fields = torch.rand(4, 2, 28, 28) * 2 - 1
    blurred = _blur_matrix(28, 4.0, fields.device) @ fields @ _blur_matrix(28, 4.0, fields.device).T
    torch.testing.assert_close(blurred, gaussian_blur(fields, [33, 33], [4.0, 4.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("augmentation", [{"shift": 3}, {"rotate": 10.0}, {"elastic": 1.0}])
def test_only_training_batches_are_augmented(mnist_dir: Path, augmentation: dict) -> None:
    from types import SimpleNamespace

    dm = MNISTDataModule(data_dir=str(mnist_dir), download=False, **augmentation)
    batch = (torch.rand(8, 28, 28), torch.arange(8))
    dm.trainer = SimpleNamespace(training=False)
    assert dm.on_after_batch_transfer(batch, 0) is batch
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(1)
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(images, batch[0]) and labels is batch[1]
