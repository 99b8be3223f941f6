"""The demo's web app: the page (static/), and a small JSON API that reads a digit row by row, with its gates and
the rows its answer depends on (docs/demo.md):
POST /api/read (body: a PNG/JPEG file), GET /api/test-digit[?index=N] (random without index), GET /api/about.
Every refusal is a 4xx answer `{"error": "<one line>"}`, never a traceback; an unexpected failure a 500 with one
line, logged, and the server goes on."""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from torch import Tensor

from mnist_lstm.data import ensure_mnist, load_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.use.cell import changing_units, read_cell, row_importance
from mnist_lstm.use.figures import per_row_probabilities
from mnist_lstm.use.images import MAX_PIXELS, NotAnImage, TooManyPixels, decode_image, digit_of
from mnist_lstm.use.models import OnnxModel, Reader, device_of

MAX_BYTES = 10_000_000  # an upload's size limit (10 MB): a photo from a phone fits
DRAIN_BYTES = 10 * MAX_BYTES  # how much of a body over the limit is read (and dropped) to answer it cleanly
# The page may load only what this server serves (and draw what it made itself): nothing leaves the machine.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"
)
NO_STORE = {"Cache-Control": "no-store"}  # a random digit is a new one every time
STATUS = {TooManyPixels: 413, NotAnImage: 415}  # the HTTP status of a refusal by its kind; any other: 400
UNITS = 16  # the units of the top layer shown on the page: those whose cell state changes most over the rows
NO_GATES_IN_ONNX = "an ONNX export has no gates to read: serve its checkpoint (ckpt_path=) to see them"


def rounded(values: Tensor, decimals: int) -> Any:
    """Nested lists of numbers rounded to `decimals` (in float64, so that 0.123 is written 0.123): a small answer.
    (+ 0.0 turns the -0.0 of a small negative number into 0.0.)"""
    return (torch.round(values.double(), decimals=decimals) + 0.0).tolist()


@dataclass(frozen=True)
class Reading:
    """One digit read row by row: `image` (28, 28) in [0, 1] as the model sees it (white on black), `per_row`
    (28, 10) the class probabilities after each row, `importance` (28,) each row's row_importance, `cell` the
    answer's "cell" (DigitReader.top_cell), or None; `label`, `index`: an official test digit's."""

    image: Tensor
    per_row: Tensor
    importance: Tensor
    cell: dict[str, Any] | None
    label: int | None = None
    index: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The API's answer (docs/demo.md): plain lists and numbers."""
        answers = self.per_row.argmax(dim=1).tolist()
        changes = [row + 1 for row in range(1, len(answers)) if answers[row] != answers[row - 1]]
        return {
            "answer": answers[-1],
            "probabilities": self.per_row[-1].tolist(),
            "per_row": self.per_row.tolist(),
            "per_row_answers": answers,
            "changes": changes,
            "settled_row": changes[-1] if changes else 1,  # the first row from which the answer is the final one
            "image": rounded(self.image, 4),
            # To 3 significant digits, not decimals: a model sure of its answer may care 1e-5 for a row.
            "importance": [float(f"{value:.3g}") for value in self.importance.tolist()],
            "cell": self.cell,
            "label": self.label,
            "index": self.index,
        }


class DigitReader:
    """The model, loaded once, and what each request asks of it."""

    def __init__(self, model: Reader) -> None:
        self.model, self.device = model, device_of(model)
        self.no_gates = why_no_gates(model)

    def read(self, image: Tensor, label: int | None = None, index: int | None = None) -> Reading:
        """One (28, 28) image -> its Reading. Safe from several threads at once: the model is only read."""
        images = image[None].to(self.device)
        probabilities = per_row_probabilities(self.model, images)[0].cpu().float()
        importance = row_importance(self.model, images[0]).cpu().float()  # (model(images) only: ONNX too)
        return Reading(image.cpu(), probabilities, importance, self.top_cell(images), label, index)

    def top_cell(self, images: Tensor) -> dict[str, Any] | None:
        """The top layer's forget and input gates and cell state after each row, each (rows, UNITS), for its UNITS
        units that change most (changing_units, as the cell figure); None if the model's gates cannot be read."""
        if self.no_gates:
            return None
        readings = read_cell(self.model, images)
        layer = len(readings.cell) - 1
        cell = readings.cell[layer, 0]  # (rows, hidden)
        units = changing_units(cell, UNITS)
        maps = {name: rounded(getattr(readings, name)[layer, 0][:, units].cpu(), 3) for name in ("forget", "input")}
        return {"layer": layer, "units": units.tolist(), **maps, "cell": rounded(cell[:, units].cpu(), 3)}

    def read_file(self, data: bytes) -> Reading:
        """An image file's bytes (a drawing, an upload), prepared as predict.py's pictures are -> its Reading."""
        if not data:
            raise UserError("no image in the request: send a PNG or JPEG file of one digit as its body")
        return self.read(digit_of(decode_image(data)))


def why_no_gates(model: Reader) -> str | None:
    """Why the page cannot show `model`'s gates, in one line, or None: only this project's own LSTM records them."""
    if isinstance(model, OnnxModel):
        return NO_GATES_IN_ONNX
    try:
        read_cell(model, torch.zeros(1, 1, 28, device=device_of(model)))  # one row of 28 pixels: cheap
    except UserError as err:
        return str(err)
    return None


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
            raise HTTPException(503, f"no official test digits on this server: {self.unavailable}")
        if index is None:
            index = self.random.randrange(len(self))
        if not 0 <= index < len(self):
            raise UserError(f"index={index} is not a test digit: pass an index in [0, {len(self) - 1}]")
        return index, self.images[index], int(self.labels[index])


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=NO_STORE)


async def body_within(request: Request) -> bytes:
    """The request's body, refused with 413 if over MAX_BYTES; never more than MAX_BYTES of it held in memory.

    A body over the limit is still read to its end (and dropped), up to DRAIN_BYTES: a client that sends the whole
    body before reading the answer (curl, a plain socket) would otherwise see the connection reset, as a server
    that closes with unread data makes TCP do, instead of the 413. Beyond DRAIN_BYTES, refused at once."""
    too_large = f"the file is over the limit of {MAX_BYTES / 1e6:g} MB: send a smaller image of the digit"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_BYTES:
        raise HTTPException(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_BYTES:
            break
        if size <= MAX_BYTES:
            chunks.append(chunk)
    if size > MAX_BYTES:
        raise HTTPException(413, too_large)
    return b"".join(chunks)


def create_app(reader: DigitReader, test_digits: OfficialDigits, about: dict[str, Any] | None = None) -> FastAPI:
    """The app around a loaded model and the test digits; `about` describes the model on the page."""
    app = FastAPI(title="mnist-lstm demo", docs_url=None, redoc_url=None, openapi_url=None)
    page = (files("mnist_lstm.demo") / "static" / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(packages=[("mnist_lstm.demo", "static")]), name="static")

    @app.exception_handler(UserError)
    async def refused(request: Request, err: UserError) -> JSONResponse:
        return error(STATUS.get(type(err), 400), str(err))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 404:
            return error(404, f"nothing at {request.url.path}: the page is at /, the API at /api/read, /api/test-digit")
        if err.status_code == 405:
            return error(405, f"{request.method} is not accepted at {request.url.path}: see docs/demo.md")
        return error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
        return error(400, f"malformed request: {where or 'the request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)  # (Starlette then re-raises it: uvicorn logs its traceback, for you only)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return error(500, f"the server failed to answer ({type(err).__name__}); it goes on serving: try again")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, **NO_STORE})

    @app.get("/api/about")
    def about_page() -> dict[str, Any]:
        return {
            **(about or {}),
            "test_digits": len(test_digits),
            "test_digits_unavailable": test_digits.unavailable or None,
            "cell_unavailable": reader.no_gates,
            "max_bytes": MAX_BYTES,
            "max_pixels": MAX_PIXELS,
        }

    @app.post("/api/read")
    async def read(request: Request) -> JSONResponse:
        data = await body_within(request)
        reading = await run_in_threadpool(reader.read_file, data)  # decoding and the model, off the loop
        return JSONResponse(reading.as_json(), headers=NO_STORE)

    @app.get("/api/test-digit")
    def test_digit(index: int | None = Query(default=None, description="0..9999; random if not given")) -> JSONResponse:
        index, image, label = test_digits.pick(index)
        return JSONResponse(reader.read(image, label, index).as_json(), headers=NO_STORE)

    return app
