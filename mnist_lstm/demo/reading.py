"""What the demo computes for one request: the 28x28 image the model reads, and what it believes after each row.

A drawing or an upload is prepared as predict.py's pictures are (`digit_of`); an official test digit is read as
it is. Either way the model answers in one call of `per_row_probabilities`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from mnist_lstm.data import ensure_mnist, load_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.use.figures import per_row_probabilities
from mnist_lstm.use.images import decode_image, digit_of
from mnist_lstm.use.models import Reader, device_of

MAX_BYTES = 10_000_000  # an upload's size limit (10 MB): a photo from a phone fits


class TooLarge(UserError):
    """An upload over MAX_BYTES."""


class NoOfficialDigits(UserError):
    """The official test set is not available to this server."""


@dataclass(frozen=True)
class Reading:
    """One digit read row by row: `image` (28, 28) in [0, 1] as the model sees it (white on black), and
    `per_row` (28, 10) the class probabilities after each row; `label`, `index`: an official test digit's."""

    image: Tensor
    per_row: Tensor
    label: int | None = None
    index: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The API's answer (docs/demo.md): plain lists and numbers."""
        answers = self.per_row.argmax(dim=1).tolist()
        answer = answers[-1]
        settled = len(answers)  # the first row from which the answer is the final one
        while settled > 1 and answers[settled - 2] == answer:
            settled -= 1
        return {
            "answer": answer,
            "probabilities": self.per_row[-1].tolist(),
            "per_row": self.per_row.tolist(),
            "per_row_answers": answers,
            "changes": [row + 1 for row in range(1, len(answers)) if answers[row] != answers[row - 1]],
            "settled_row": settled,
            "image": [[round(value, 4) for value in row] for row in self.image.tolist()],
            "label": self.label,
            "index": self.index,
        }


class DigitReader:
    """The model, loaded once, and what each request asks of it."""

    def __init__(self, model: Reader) -> None:
        self.model = model
        self.device = device_of(model)

    def read(self, image: Tensor, label: int | None = None, index: int | None = None) -> Reading:
        """One (28, 28) image -> its Reading. Safe from several threads at once: the model is only read."""
        probabilities = per_row_probabilities(self.model, image[None].to(self.device))[0].cpu().float()
        return Reading(image.cpu(), probabilities, label, index)

    def read_file(self, data: bytes) -> Reading:
        """An image file's bytes (a drawing, an upload) -> its Reading, or a UserError saying why not."""
        if not data:
            raise UserError("no image in the request: send a PNG or JPEG file of one digit as its body")
        return self.read(digit_of(decode_image(data)))


class OfficialDigits:
    """The official 10,000 test digits, or why they are not available (the server runs without them)."""

    def __init__(self, images: Tensor | None, labels: Tensor | None, unavailable: str = "") -> None:
        self.images, self.labels, self.unavailable = images, labels, unavailable
        self.random = random.Random()

    @classmethod
    def load(cls, data_dir: str | Path, download: bool) -> OfficialDigits:
        """From `<data_dir>/MNIST/raw/`, as training finds them; if they cannot be had, an empty set that says why."""
        try:
            ensure_mnist(data_dir, download, keys="")  # (the demo's keys are top-level: data_dir=, download=)
            images, labels = load_mnist(data_dir, train=False, keys="")
        except UserError as err:
            return cls(None, None, str(err))
        return cls(images, labels)

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    def pick(self, index: int | None) -> tuple[int, Tensor, int]:
        """(index, image (28, 28), label) of test digit `index`, or of a random one."""
        if self.images is None or self.labels is None:
            raise NoOfficialDigits(f"no official test digits on this server: {self.unavailable}")
        if index is None:
            index = self.random.randrange(len(self))
        if not 0 <= index < len(self):
            raise UserError(f"index={index} is not a test digit: pass an index in [0, {len(self) - 1}]")
        return index, self.images[index], int(self.labels[index])
