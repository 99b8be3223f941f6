"""The live demo (scripts/demo.py, mnist_lstm/demo/): its JSON API in-process, the real server in a subprocess,
and the page in a real browser, Debian's Chromium (/usr/bin/chromium) driven by Playwright's Python package.

The default tests read with the tiny run's checkpoint (3x64, 40 steps: weak, but a real model); the slow one
draws digits for a fully trained model and expects them read right (and writes docs/demo.png).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from omegaconf import OmegaConf
from PIL import Image

from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import load_mnist
from mnist_lstm.demo.app import MAX_BYTES, UNITS, DigitReader, OfficialDigits, create_app
from mnist_lstm.demo.server import listen, newest_best_checkpoint
from mnist_lstm.errors import UserError
from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.use.cell import read_cell, row_importance
from mnist_lstm.use.figures import per_row_probabilities
from mnist_lstm.use.images import load_digit
from mnist_lstm.use.models import OnnxModel
from mnist_lstm.use.onnx_export import RowReader, write_onnx
from mnist_lstm.use.predict import predict
from tests.helpers import REPO, run_script, tight_crop_on_paper

try:  # (a clear failure below if it is missing, not an error collecting the file)
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browser download is never used
# As root, without a sandbox; and no background connections, which this machine's closed network refuses.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TRAINED_VARIABLE = "MNIST_LSTM_TRAINED_CKPT"  # a fully trained checkpoint for the slow test (else it trains one)
SCREENSHOT_VARIABLE = "MNIST_LSTM_DEMO_SCREENSHOT"  # where the slow test also puts its screenshot (docs/demo.png)


def close(actual: object, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    torch.testing.assert_close(torch.tensor(actual), expected.float(), atol=atol, rtol=rtol)


def importance_close(actual: object, expected: torch.Tensor, atol: float = 1e-7) -> None:
    """The API's row importance, written to 3 significant digits (within 0.5%), against row_importance's."""
    close(actual, expected, atol=atol, rtol=5e-3)


# ---------------------------------------------------------------- pictures


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def paper_digit(digit: torch.Tensor, size: int = 140) -> Image.Image:
    """An MNIST digit as a user's picture: dark ink on white paper, larger, in colour."""
    ink = Image.fromarray((255 - 255 * digit).round().byte().numpy(), mode="L")
    return ink.resize((size, size), Image.BILINEAR).convert("RGB")


def png_header_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims width x height pixels (its data is one row): refused before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


# ---------------------------------------------------------------- the model, the app, the real server


@pytest.fixture(scope="module")
def ckpt(tiny_run: tuple[Path, str]) -> Path:
    (best,) = (tiny_run[0] / "checkpoints").glob("step*.ckpt")
    return best


@pytest.fixture(scope="module")
def model(ckpt: Path) -> torch.nn.Module:
    return load_model(ckpt, "cpu").net


@pytest.fixture(scope="module")
def test_set(mnist_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist(mnist_dir, train=False)


@contextmanager
def serving(app: object) -> Iterator[httpx.Client]:
    """`app` served by uvicorn in a thread of this process, on a free port: a client for it."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def client(model: torch.nn.Module, mnist_dir: Path) -> Iterator[httpx.Client]:
    with serving(create_app(DigitReader(model), OfficialDigits.load(mnist_dir, download=False))) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def demo_server(ckpt: Path, mnist_dir: Path, log: Path) -> Iterator[str]:
    """`python scripts/demo.py ckpt_path=... port=<free port>` as a user starts it; its URL once it answers.
    Stopped with Ctrl-C (SIGINT) at the end, which must end it cleanly, no traceback in its log ever."""
    port = free_port()
    command = [sys.executable, str(REPO / "scripts" / "demo.py"), f"ckpt_path={ckpt}", f"port={port}",
               f"data_dir={mnist_dir}", "download=false"]  # fmt: skip
    environ = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=log.parent, env=environ, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the demo server ended: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the demo server did not answer in 120 s: {log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/api/about", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        finally:
            server.kill()
    text = log.read_text()
    assert server.returncode == 0 and "Stopped" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert f"Open http://127.0.0.1:{port}/" in text


@pytest.fixture(scope="module")
def server(ckpt: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(ckpt, mnist_dir, tmp_path_factory.mktemp("demo") / "server.log") as url:
        yield url


# ---------------------------------------------------------------- the API


def test_a_picture_is_read_as_predict_reads_it(
    client: httpx.Client, model: torch.nn.Module, ckpt: Path, test_set: tuple, tmp_path: Path
) -> None:
    images, _ = test_set
    picture = tmp_path / "digit.png"
    paper_digit(images[3]).save(picture)

    response = client.post("/api/read", content=picture.read_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"answer", "probabilities", "per_row", "per_row_answers", "changes", "settled_row",
                           "image", "importance", "cell", "label", "index"}  # fmt: skip
    digit = load_digit(picture)  # predict.py's preparation of the same file
    close(answer["image"], digit, atol=1e-4)  # (28, 28)
    expected = per_row_probabilities(model, digit[None])[0]
    close(answer["per_row"], expected, atol=1e-5)  # (28, 10)
    close(answer["probabilities"], expected[-1], atol=1e-5)
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert answer["per_row_answers"] == expected.argmax(dim=1).tolist()
    settled = answer["settled_row"]
    assert set(answer["per_row_answers"][settled - 1 :]) == {answer["answer"]}
    assert answer["label"] is None and answer["index"] is None
    cfg = OmegaConf.create(
        {"ckpt_path": str(ckpt), "onnx": None, "image": str(picture), "explain": False, "out": None, "dpi": 100,
         "device": "cpu"}
    )  # fmt: skip
    assert answer["answer"] == predict(cfg)  # predict.py's answer for the same file


def test_a_digit_cropped_tight_is_accepted_and_read_as_the_original(
    client: httpx.Client, model: torch.nn.Module, test_set: tuple
) -> None:
    """Its strokes touch all four edges (once refused as blank): read as the model reads MNIST's own digit."""
    images, _ = test_set
    with torch.no_grad():
        sure = model(images[:200]).softmax(dim=1).max(dim=1).values >= 0.8  # a digit the tiny model is sure of
    index = int(sure.nonzero()[0])
    image = images[index]
    response = client.post("/api/read", content=png(tight_crop_on_paper(image)))
    assert response.status_code == 200, response.text
    seen = torch.tensor(response.json()["image"])
    assert torch.nn.functional.cosine_similarity(seen.flatten(), image.flatten(), dim=0) > 0.9
    assert response.json()["answer"] == int(model(images[index : index + 1]).argmax())


def test_an_official_test_digit_is_read_as_it_is(client: httpx.Client, model: torch.nn.Module, test_set: tuple) -> None:
    images, labels = test_set
    answer = client.get("/api/test-digit", params={"index": 4}).json()
    assert answer["index"] == 4 and answer["label"] == int(labels[4])
    close(answer["image"], images[4], atol=1e-4)
    close(answer["per_row"], per_row_probabilities(model, images[4:5])[0], atol=1e-5)
    assert answer["answer"] == int(model(images[4:5]).argmax())

    picked = {client.get("/api/test-digit").json()["index"] for _ in range(5)}
    assert len(picked) > 1 and all(0 <= i < 10_000 for i in picked)  # random: 5 draws of 10,000 differ
    about = client.get("/api/about").json()
    assert about["test_digits"] == 10_000 and about["test_digits_unavailable"] is None


MAPS = ("forget", "input", "cell")  # the API's heatmaps, read_cell's fields


def expected_cell(model: torch.nn.Module, image: torch.Tensor) -> dict:
    """What the API's "cell" must be for `image`: read_cell's top layer, for its UNITS units whose cell state
    ranges most over the rows, each map (rows, units)."""
    readings = read_cell(model, image[None])
    layer = len(model.lstm.layers) - 1
    cell = readings.cell[layer, 0]
    units = (cell.amax(dim=0) - cell.amin(dim=0)).topk(UNITS).indices
    units = units[cell[-1, units].argsort(descending=True)]  # ordered by the cell state after the last row
    return {"layer": layer, "units": units} | {name: getattr(readings, name)[layer, 0][:, units] for name in MAPS}


def test_a_reading_carries_the_gates_and_each_rows_importance(
    client: httpx.Client, model: torch.nn.Module, test_set: tuple
) -> None:
    images, _ = test_set
    for index in (4, 7):
        answer = client.get("/api/test-digit", params={"index": index}).json()
        importance_close(answer["importance"], row_importance(model, images[index]))  # (28,)
        cell, expected = answer["cell"], expected_cell(model, images[index])
        assert set(cell) == {"layer", "units", *MAPS}
        assert cell["layer"] == expected["layer"] == 2  # the tiny model's top layer of 3
        assert cell["units"] == expected["units"].tolist() and len(set(cell["units"])) == UNITS
        for name in MAPS:  # read_cell's own numbers, rounded to 3 decimals
            close(cell[name], expected[name], atol=1e-3)  # (28, UNITS)
    assert client.get("/api/about").json()["cell_unavailable"] is None


def test_a_model_on_nn_lstm_has_no_gates_and_says_why() -> None:
    """cell=torch: no gates can be read (use/cell.py), so "cell" is null and /api/about says why; the rows'
    importance needs only the model's answers."""
    torch.manual_seed(0)
    model = RowLSTMClassifier(hidden_size=8, layer_num=1, cell="torch").eval()
    reader = DigitReader(model)
    assert "cell=custom" in reader.no_gates
    reading = reader.read(a_bar()).as_json()
    assert reading["cell"] is None
    importance_close(reading["importance"], row_importance(model, a_bar()))


def a_bar() -> torch.Tensor:
    digit = torch.zeros(28, 28)
    digit[4:24, 13:15] = 1.0
    return digit


BLANK = png(Image.new("RGB", (280, 280), "white"))  # an empty canvas
DRAWING = png(paper_digit(a_bar()))


def truncated_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 300), "white").save(out, "JPEG")
    return out.getvalue()[:400]


BAD_REQUESTS = {  # what -> (method, path, body, status, a phrase of the message)
    "an empty request": ("POST", "/api/read", b"", 400, "no image in the request"),
    "an empty canvas": ("POST", "/api/read", BLANK, 400, "no digit found"),
    "not an image": ("POST", "/api/read", b'{"image": "a seven"}', 415, "not an image"),
    "a truncated PNG": ("POST", "/api/read", DRAWING[: len(DRAWING) // 2], 400, "damaged or truncated"),
    "a truncated JPEG": ("POST", "/api/read", truncated_jpeg(), 400, "damaged or truncated"),
    "too many pixels": ("POST", "/api/read", png_header_claiming(8000, 6000), 413, "48.0 megapixels"),
    "too many bytes": ("POST", "/api/read", b"\0" * (MAX_BYTES + 1), 413, "over the limit of 10 MB"),
    "a bad index": ("GET", "/api/test-digit?index=seven", b"", 400, "malformed request: index"),
    "an index out of range": ("GET", "/api/test-digit?index=10000", b"", 400, "[0, 9999]"),
    "the wrong method": ("GET", "/api/read", b"", 405, "GET is not accepted"),
    "no such address": ("GET", "/api/nothing", b"", 404, "nothing at /api/nothing"),
}


@pytest.mark.parametrize("what", list(BAD_REQUESTS))
def test_a_bad_request_is_refused_in_one_line_and_the_app_goes_on(client: httpx.Client, what: str) -> None:
    method, path, body, status, phrase = BAD_REQUESTS[what]
    response = client.request(method, path, content=body or None)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    message = response.json()["error"]
    assert phrase in message and "\n" not in message and "Traceback" not in message
    assert client.post("/api/read", content=DRAWING).status_code == 200


def test_a_body_over_the_limit_sent_whole_before_reading_still_gets_its_413(client: httpx.Client) -> None:
    """As curl or a plain socket do: the whole body first, then the answer; a reset connection would be a failure."""
    body = b"\0" * (MAX_BYTES + 1_000_000)
    request = b"POST /api/read HTTP/1.1\r\nHost: demo\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection((client.base_url.host, client.base_url.port), timeout=60) as sock:
        sock.sendall(request + body)
        answer = b""
        while b"over the limit" not in answer and (chunk := sock.recv(65536)):  # (headers and body may come apart)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the limit of 10 MB" in answer
    assert client.post("/api/read", content=DRAWING).status_code == 200


def test_without_mnist_the_test_digit_button_says_why(model: torch.nn.Module, tmp_path: Path) -> None:
    missing = OfficialDigits.load(tmp_path / "nowhere", download=False)
    with serving(create_app(DigitReader(model), missing)) as client:
        response = client.get("/api/test-digit")
        assert response.status_code == 503
        assert response.json()["error"].startswith("no official test digits on this server: MNIST is not in")
        assert client.get("/api/about").json()["test_digits"] == 0
        assert client.post("/api/read", content=DRAWING).status_code == 200  # drawing works without it


def test_the_newest_runs_best_checkpoint_is_found(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no trained run under .*: train one with python scripts/train.py"):
        newest_best_checkpoint(tmp_path)
    for run, names, when in (
        ("train/runs/2026-01-01_10-00-00", ["step00500-val_acc0.9800.ckpt", "last.ckpt"], 1000),
        ("improved/runs/2026-01-02_10-00-00", ["step00500-val_acc0.9500.ckpt", "step02000-val_acc0.9910.ckpt"], 2000),
    ):
        for name in names:
            (tmp_path / run / "checkpoints").mkdir(parents=True, exist_ok=True)
            (tmp_path / run / "checkpoints" / name).touch()
            os.utime(tmp_path / run / "checkpoints" / name, (when, when))
    found = newest_best_checkpoint(tmp_path)
    assert found == tmp_path / "improved/runs/2026-01-02_10-00-00/checkpoints/step02000-val_acc0.9910.ckpt"


def test_the_servers_connections_send_answers_at_once() -> None:
    """asyncio turns Nagle's algorithm off only on connections of a socket that names TCP: without it, every answer
    after a connection's first waited ~40 ms for the client's delayed ACK (measured: docs/demo.md, Speed)."""
    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_the_script_refuses_in_one_line(ckpt: Path, tmp_path: Path) -> None:
    """A taken port, no run under logs/, a file that is no checkpoint: `error: <one line>`, status 1."""
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        taken_port = f"port {port} on 127.0.0.1 is taken by another program: pass port=<another>"
        cases = {  # message -> overrides
            taken_port: [f"ckpt_path={ckpt}", f"port={port}"],
            "no trained run under logs/": [],
            f"{not_a_checkpoint} is not a PyTorch checkpoint": [f"ckpt_path={not_a_checkpoint}", "port=0"],
        }
        environ = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        started = {
            message: subprocess.Popen(
                [sys.executable, str(REPO / "scripts" / "demo.py"), *overrides],
                cwd=tmp_path,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for message, overrides in cases.items()
        }
        for message, process in started.items():
            out, err = process.communicate(timeout=120)
            assert process.returncode == 1, out + err
            assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.ckpt"]  # nothing left behind


def test_the_server_answers_50_requests_at_once(server: str, model: torch.nn.Module, test_set: tuple) -> None:
    images, _ = test_set
    bodies = [png(paper_digit(images[i])) for i in range(50)]

    def ask(body: bytes) -> httpx.Response:
        return httpx.post(f"{server}/api/read", content=body, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(ask, bodies))
    assert [r.status_code for r in answers] == [200] * 50
    reader = DigitReader(model)  # each answer is its own picture's
    for body, response in zip(bodies, answers, strict=True):
        close(response.json()["per_row"], reader.read_file(body).per_row, atol=1e-5)
    # The real server goes on after refusals too.
    for method, path, body, status, _ in BAD_REQUESTS.values():
        assert httpx.request(method, f"{server}{path}", content=body or None, timeout=30).status_code == status
    assert httpx.post(f"{server}/api/read", content=bodies[0], timeout=30).status_code == 200


# ---------------------------------------------------------------- the page, in Chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():  # a failure, never a silent skip: CI (.ci/run) installs it
        pytest.fail(f"the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium (as root)")
    if sync_playwright is None:
        pytest.fail('the browser tests need Playwright\'s Python package: pip install -e ".[test]"')
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@contextmanager
def opened(browser: object, url: str, **context_options: object) -> Iterator[object]:
    """The page at `url` in a fresh browser context. Every request it makes is recorded, and any not to the
    demo server refused: at the end, all must have been to it (nothing leaves the machine) and no script error."""
    context = browser.new_context(**context_options)
    requests, errors = [], []

    def only_local(route: object) -> None:
        requests.append(route.request.url)
        if route.request.url.startswith(f"{url}/"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{url}/")
        yield page
    finally:
        context.close()
    assert requests and all(r.startswith(f"{url}/") for r in requests), sorted(set(requests))
    assert not errors


def load_test_digit(page: object) -> dict[str, int]:
    """Click the test digit button; (index, label) the page then says."""
    before = page.locator("body").get_attribute("data-readings")
    page.click("#random")
    expect(page.locator("body")).not_to_have_attribute("data-readings", before)
    truth = page.locator("#truth").inner_text()  # "test digit #N: true L, right"
    index, label = truth.removeprefix("test digit #").split(": true ")
    return {"index": int(index), "label": int(label.split(",")[0])}


def draw(page: object, strokes: list[list[tuple[float, float]]]) -> list[int]:
    """Draw `strokes` (points in [0, 1] of the pad) with the mouse, one at a time; the answer after each."""
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()  # (in the viewport's coordinates)
    answers = []
    for stroke in strokes:
        before = page.locator("body").get_attribute("data-readings")
        (x, y), *rest = stroke
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=10)
        page.mouse.up()
        expect(page.locator("body")).not_to_have_attribute("data-readings", before, timeout=30_000)
        answers.append(int(page.locator("#answer").inner_text()))
    return answers


def shown_probabilities(page: object, bars: str) -> list[float]:
    return [float(p) for p in page.locator(f"{bars} li").evaluate_all("items => items.map(i => i.dataset.p)")]


def test_the_page_reads_a_test_digit_as_predict_does(
    browser: object, server: str, model: torch.nn.Module, test_set: tuple, ckpt: Path, tmp_path: Path
) -> None:
    images, labels = test_set
    with opened(browser, server, viewport={"width": 1280, "height": 800}) as page:
        shown = load_test_digit(page)
        i = shown["index"]
        assert shown["label"] == int(labels[i])
        expected = per_row_probabilities(model, images[i : i + 1])[0]  # what predict.py computes for this image
        assert int(page.locator("#answer").inner_text()) == int(model(images[i : i + 1]).argmax())
        assert shown_probabilities(page, "#final") == pytest.approx(expected[-1].tolist(), abs=1e-5)
        # The chart: 10 lines of 28 points, and the strip of the 28 answers, in the model's order.
        lines = page.locator("#chart polyline[data-class]")
        assert lines.count() == 10
        assert lines.evaluate_all("ls => ls.map(l => l.getAttribute('points').split(' ').length)") == [28] * 10
        strip = page.locator("#chart .strip rect").evaluate_all("cells => cells.map(c => c.dataset.answer)")
        assert [int(k) for k in strip] == expected.argmax(dim=1).tolist()
        page.screenshot(path=tmp_path / "page.png", full_page=True, animations="disabled")

        # The same digit as a file through the file picker: read as predict.py reads that file.
        picture = tmp_path / f"test_digit_{i}.png"
        paper_digit(images[i]).save(picture)
        before = page.locator("body").get_attribute("data-readings")
        page.set_input_files("#file", str(picture))
        expect(page.locator("body")).not_to_have_attribute("data-readings", before)
        cfg = OmegaConf.create(
            {"ckpt_path": str(ckpt), "onnx": None, "image": str(picture), "explain": False, "out": None, "dpi": 100,
             "device": "cpu"}
        )  # fmt: skip
        assert int(page.locator("#answer").inner_text()) == predict(cfg)
        assert page.locator("#truth").inner_text() == ""  # a file has no true label


def shown_cell(page: object) -> dict[str, list]:
    """What the page shows inside the cell: each heatmap's numbers (rows, units) from its cells' data-value, the
    units of its lines, and the bars' numbers."""
    heat = page.locator("#inside rect.heat").evaluate_all(
        "cells => cells.map(c => [c.dataset.map, +c.dataset.row, +c.dataset.unit, +c.dataset.value])"
    )
    units = list(dict.fromkeys(unit for _, row, unit, _ in heat if row == 1))
    shown = {name: [[0.0] * len(units) for _ in range(28)] for name in MAPS}
    for name, row, unit, value in heat:
        shown[name][row - 1][units.index(unit)] = value
    bars = page.locator("#importance rect.bar").evaluate_all("bars => bars.map(b => +b.dataset.value)")
    return {"units": units, **shown, "importance": bars}


def centres(page: object, selector: str) -> list[float]:
    return [box["x"] + box["width"] / 2 for box in (page.locator(selector).nth(i).bounding_box() for i in (0, -1))]


def test_the_page_shows_the_gates_and_each_rows_importance_as_the_api_reads_them(
    browser: object, server: str, model: torch.nn.Module, test_set: tuple
) -> None:
    images, _ = test_set
    with opened(browser, server, viewport={"width": 1280, "height": 800}) as page:
        i = load_test_digit(page)["index"]
        api = httpx.get(f"{server}/api/test-digit", params={"index": i}, timeout=30).json()
        shown = shown_cell(page)
        assert shown["units"] == api["cell"]["units"]
        for name in MAPS:
            assert shown[name] == api["cell"][name]  # 28 x 16 each, the API's numbers exactly
        assert shown["importance"] == api["importance"]
        importance_close(shown["importance"], row_importance(model, images[i]))
        # One column per row, under the chart's: the first and the last row's cells and bars under its strip's.
        strip = centres(page, "#chart .strip rect")
        first, last = api["cell"]["units"][0], api["cell"]["units"][-1]
        for selector in (f"#inside rect.heat[data-map=forget][data-unit='{first}']",
                         f"#inside rect.heat[data-map=cell][data-unit='{last}']", "#importance rect.bar"):  # fmt: skip
            assert centres(page, selector) == pytest.approx(strip, abs=1), selector
        # The accessible text says what they show, with the numbers.
        maps = page.locator("#inside").get_attribute("aria-label")
        assert f"units {', '.join(map(str, api['cell']['units']))}" in maps and "layer 3 (the top one)" in maps
        top = max(range(28), key=lambda t: api["importance"][t]) + 1
        bars = page.locator("#importance").get_attribute("aria-label")
        assert f"answer {api['answer']}: blanking row {top} lowers its probability most" in bars
        expect(page.locator("#no-gates")).to_be_hidden()
        page.fill("#row", "10")  # the cursor's veil covers the maps' and the bars' rows not yet read
        strip = centres(page, "#chart .strip rect")  # (again: moving the slider may have scrolled the page)
        column = (strip[1] - strip[0]) / 27
        for veil in page.locator("#inside .unread, #importance .unread").all():  # 3 maps, the bars
            assert veil.bounding_box()["x"] == pytest.approx(strip[0] + 9.5 * column, abs=1)  # after row 10


def test_the_slider_and_play_move_the_veil_and_the_probabilities(
    browser: object, server: str, model: torch.nn.Module, test_set: tuple
) -> None:
    images, _ = test_set
    with opened(browser, server, viewport={"width": 1280, "height": 800}) as page:
        i = load_test_digit(page)["index"]
        expected = per_row_probabilities(model, images[i : i + 1])[0]
        frame, veil = page.locator("#frame"), page.locator("#veil")
        expect(veil).to_be_hidden()  # all 28 rows read
        page.fill("#row", "10")
        expect(frame).to_have_attribute("data-rows-read", "10")
        expect(veil).to_be_visible()
        frame_box, veil_box = frame.bounding_box(), veil.bounding_box()
        assert veil_box["y"] - frame_box["y"] == pytest.approx(10 / 28 * frame_box["height"], abs=2)
        assert shown_probabilities(page, "#cursor-bars") == pytest.approx(expected[9].tolist(), abs=1e-5)
        assert page.locator("#row-label").inner_text() == "10 / 28 rows"
        page.locator("#row").press("ArrowLeft")  # the keyboard moves it too
        expect(frame).to_have_attribute("data-rows-read", "9")
        assert shown_probabilities(page, "#cursor-bars") == pytest.approx(expected[8].tolist(), abs=1e-5)

        page.click("#play")  # from row 9 to the end, one row at a time
        expect(page.locator("#play")).to_contain_text("Pause")
        expect(frame).to_have_attribute("data-rows-read", "28", timeout=10_000)
        expect(page.locator("#play")).to_contain_text("Play")
        expect(veil).to_be_hidden()
        assert shown_probabilities(page, "#cursor-bars") == pytest.approx(expected[27].tolist(), abs=1e-5)


def test_drawing_with_the_mouse_gets_an_answer(browser: object, server: str, model: torch.nn.Module) -> None:
    with opened(browser, server, viewport={"width": 1280, "height": 800}) as page:
        answers = draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
        first = shown_cell(page)
        answers += draw(page, [[(0.3, 0.3), (0.5, 0.15)]])
        assert len(answers) == 2 and all(0 <= a <= 9 for a in answers)
        # The page shows the server's reading of what is on the pad: its answer, gates and rows' importance.
        drawing = page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")
        body = base64.b64decode(drawing.split(",", 1)[1])
        api = httpx.post(f"{server}/api/read", content=body, timeout=30).json()
        assert api["answer"] == answers[-1]
        shown = shown_cell(page)
        assert shown == {"units": api["cell"]["units"], **{name: api["cell"][name] for name in MAPS},
                         "importance": api["importance"]}  # fmt: skip
        # ... which changed with the stroke added.
        assert all(shown[name] != first[name] for name in (*MAPS, "importance"))
        page.click("#clear")
        assert page.locator("#answer").inner_text() == "?"


def test_bad_files_get_a_message_on_the_page(browser: object, server: str) -> None:
    with opened(browser, server, viewport={"width": 1280, "height": 800}) as page:
        message = page.locator("#message")
        for name, data, says in (
            ("notes.png", b"not a picture", "not an image"),
            ("blank.png", BLANK, "no digit found"),
            ("broken.jpg", truncated_jpeg(), "damaged or truncated"),
            ("huge.png", b"\0" * (MAX_BYTES + 1), "over the limit of 10 MB"),
        ):
            page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
            expect(message).to_contain_text(says)
            expect(message).to_have_class("error")
            assert page.locator("#answer").inner_text() == "?"
        load_test_digit(page)  # and the page goes on
        expect(message).to_contain_text("Read a random test digit: the model answers")


@pytest.mark.slow  # it makes an ONNX export of its own
def test_an_onnx_model_shows_the_rows_importance_and_says_why_no_gates(
    browser: object, ckpt: Path, model: torch.nn.Module, mnist_dir: Path, test_set: tuple, tmp_path: Path
) -> None:
    """An export has no gates to read: "cell" is null, /api/about says why, and the page says it in one line;
    the rows' importance, which needs only the model's answers, is the checkpoint's."""
    images, _ = test_set
    write_onnx(RowReader(load_model(ckpt, "cpu", loop="plain").net).eval(), tmp_path / "tiny.onnx")
    app = create_app(DigitReader(OnnxModel(tmp_path / "tiny.onnx")), OfficialDigits.load(mnist_dir, download=False))
    with serving(app) as client:
        answer = client.get("/api/test-digit", params={"index": 4}).json()
        assert answer["cell"] is None
        importance_close(answer["importance"], row_importance(model, images[4]), atol=1e-4)  # (onnxruntime)
        why = client.get("/api/about").json()["cell_unavailable"]
        assert "ONNX export has no gates" in why and "ckpt_path=" in why
        with opened(browser, str(client.base_url).rstrip("/"), viewport={"width": 1280, "height": 800}) as page:
            i = load_test_digit(page)["index"]
            expect(page.locator("#no-gates")).to_have_text(f"{why[0].upper()}{why[1:]}.")
            expect(page.locator("#inside")).to_be_hidden()
            shown = shown_cell(page)["importance"]
            assert shown == client.get("/api/test-digit", params={"index": i}).json()["importance"]


def test_the_page_fits_a_phone(browser: object, server: str, tmp_path: Path) -> None:
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
    with opened(browser, server, **phone) as page:
        load_test_digit(page)
        page.fill("#row", "14")
        overflowing = page.evaluate(
            "() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            "innerWidth + 0.5).map(e => e.id || e.tagName)"
        )
        assert overflowing == []
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        before = page.locator("body").get_attribute("data-readings")
        page.locator("#pad").scroll_into_view_if_needed()
        box = page.locator("#pad").bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # a finger draws too
        expect(page.locator("body")).not_to_have_attribute("data-readings", before)
        page.screenshot(path=tmp_path / "phone.png", full_page=True, animations="disabled")


# ---------------------------------------------------------------- a fully trained model reads drawn digits right

ONE = [[(0.52, 0.12), (0.48, 0.88)]]
SEVEN = [[(0.25, 0.18), (0.75, 0.18)], [(0.75, 0.18), (0.58, 0.5), (0.45, 0.88)]]


@pytest.fixture(scope="module")
def trained_ckpt(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$MNIST_LSTM_TRAINED_CKPT, or a checkpoint of the improved recipe trained here (6-10 minutes on 2 cores)."""
    if os.environ.get(TRAINED_VARIABLE):
        return Path(os.environ[TRAINED_VARIABLE])
    run_dir = tmp_path_factory.mktemp("trained") / "improved"
    result = run_script("train.py", "experiment=improved", "seed=1", f"data.data_dir={mnist_dir}",
                        f"hydra.run.dir={run_dir}", timeout=3600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return newest_best_checkpoint(run_dir.parent)


@pytest.mark.recipe
def test_a_trained_model_reads_a_drawn_one_and_seven(
    browser: object, trained_ckpt: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    with (
        demo_server(trained_ckpt, mnist_dir, tmp_path / "server.log") as url,
        opened(browser, url, viewport={"width": 1280, "height": 800}) as page,
    ):
        assert draw(page, ONE)[-1] == 1
        page.click("#clear")
        answers = draw(page, SEVEN)
        assert answers[-1] == 7, answers
        page.fill("#row", "13")  # part-way: the veil and the cursor show
        page.screenshot(path=tmp_path / "demo.png", full_page=True, animations="disabled")
    if os.environ.get(SCREENSHOT_VARIABLE):  # docs/demo.png, the README's picture: of a fully trained model
        shutil.copy(tmp_path / "demo.png", os.environ[SCREENSHOT_VARIABLE])
