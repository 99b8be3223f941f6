"""The demo's web app: the page (static/), and a small JSON API that reads a digit row by row.

    GET  /                       the page
    GET  /static/...             its script and style (nothing is fetched from anywhere else)
    GET  /api/about              the model, whether test digits are available, the upload limits
    POST /api/read               body: a PNG/JPEG file (a drawing, an upload) -> its reading
    GET  /api/test-digit[?index=N]   an official test digit (random without index) -> its reading, with its label

A reading is `Reading.as_json()` (reading.py; docs/demo.md). Every refusal is a 4xx answer `{"error": "<one
line>"}`, never a traceback; an unexpected failure is a 500 with one line, logged, and the server goes on.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mnist_lstm.demo.reading import MAX_BYTES, DigitReader, NoOfficialDigits, OfficialDigits, TooLarge
from mnist_lstm.errors import UserError
from mnist_lstm.use.images import MAX_PIXELS, NotAnImage, TooManyPixels

# The page may load only what this server serves (and draw what it made itself): nothing leaves the machine.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"
)
NO_STORE = {"Cache-Control": "no-store"}  # a random digit is a new one every time


# The HTTP status of a refusal by its kind; any other: 400.
STATUS = {TooLarge: 413, TooManyPixels: 413, NotAnImage: 415, NoOfficialDigits: 503}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=NO_STORE)


async def body_within(request: Request) -> bytes:
    """The request's body, refused as soon as it is known to be over MAX_BYTES (from its Content-Length, else
    while it arrives): a huge upload is never held in memory."""
    too_large = TooLarge(f"the file is over the limit of {MAX_BYTES / 1e6:g} MB: send a smaller image of the digit")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise too_large
        chunks.append(chunk)
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
