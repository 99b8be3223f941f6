"""The 2-layer CNN of the tutorial series, for the inference-memory comparison only."""

from __future__ import annotations

from torch import Tensor, nn


class TutorialCNN(nn.Module):
    """conv 5x5x32, pool, conv 5x5x64, pool, fc 1024, fc 10 ('same' padding, as the TensorFlow tutorial)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        )

    def forward(self, images: Tensor) -> Tensor:
        """images (batch, 28, 28) -> logits (batch, 10)."""
        return self.net(images.unsqueeze(1))
