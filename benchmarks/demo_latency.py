"""The demo's request-to-answer latency: the real server (scripts/demo.py) answering POST /api/read of a drawing
as the page sends it (a 280x280 PNG of the canvas), timed by its clients from the request to the parsed answer.

One client asking one request after another, then 8 clients at once, alternated over rounds (the machine is
shared: a noisy neighbour hits both alike); median and 95th percentile of each. The clients run on the same
machine as the server, as a user's browser does. Also, in this process, where one request's time goes: decoding
and preparing the picture, and the model's one call.

    python benchmarks/demo_latency.py --ckpt <a .ckpt> --data-dir data
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import torch
from PIL import Image

from benchmarks.run import machine
from benchmarks.timing import matmul_gflops
from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import ensure_mnist, load_mnist
from mnist_lstm.demo.reading import DigitReader
from mnist_lstm.use.images import decode_image, digit_of

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "cpu-xeon-2core" / "demo-latency.json"


def drawings(images: torch.Tensor, count: int) -> list[bytes]:
    """`count` test digits as the page's canvas sends them: black ink on white, 280x280 RGB PNG."""
    bodies = []
    for digit in images[:count]:
        ink = Image.fromarray((255 - 255 * digit).round().byte().numpy(), mode="L").resize((280, 280), Image.BILINEAR)
        out = io.BytesIO()
        ink.convert("RGB").save(out, "PNG")
        bodies.append(out.getvalue())
    return bodies


def start_server(ckpt: Path, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, str(REPO / "scripts" / "demo.py"), f"ckpt_path={ckpt}", f"port={port}",
               f"data_dir={data_dir}", "download=false", "device=cpu"]  # fmt: skip
    with log.open("w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/api/about", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the demo server did not start: {log.read_text()[-2000:]}")


def client_latencies(url: str, bodies: list[bytes], start: int, count: int) -> list[float]:
    """Seconds from sending each request to holding its parsed answer, one after another on one connection."""
    seconds = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for k in range(start, start + count):
            begin = time.perf_counter()
            response = client.post("/api/read", content=bodies[k % len(bodies)], headers={"Content-Type": "image/png"})
            response.json()
            seconds.append(time.perf_counter() - begin)
            assert response.status_code == 200, response.text
    return seconds


def concurrent_latencies(url: str, bodies: list[bytes], clients: int, per_client: int) -> tuple[list[float], float]:
    """`clients` clients at once, each asking `per_client` times in turn: every latency, and the wall time."""
    results: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = client_latencies(url, bodies, i * per_client, per_client)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    begin = time.perf_counter()
    for thread in threads:
        thread.join()
    return [s for r in results for s in r], time.perf_counter() - begin


def stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1e3 * s for s in seconds)
    return {
        "requests": len(ms),
        "median_ms": statistics.median(ms),
        "p95_ms": statistics.quantiles(ms, n=20, method="inclusive")[18],
        "min_ms": ms[0],
        "max_ms": ms[-1],
    }


def in_process(ckpt: Path, bodies: list[bytes], repeats: int) -> dict[str, float]:
    """Median ms of one request's two parts, in this process on one thread as the server computes: preparing
    the picture (decode, then images.py's MNIST preparation) and the model's one call."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reader = DigitReader(load_model(ckpt, "cpu").net)
    prepare, model = [], []
    for k in range(repeats):
        begin = time.perf_counter()
        digit = digit_of(decode_image(bodies[k % len(bodies)]))
        middle = time.perf_counter()
        reader.read(digit)
        end = time.perf_counter()
        prepare.append(middle - begin)
        model.append(end - middle)
    torch.set_num_threads(threads)
    return {"prepare_ms": 1e3 * statistics.median(prepare[5:]), "model_ms": 1e3 * statistics.median(model[5:])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="the checkpoint the server reads with")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="holds MNIST/raw/ (the drawings' digits)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (one client, then 8 at once)")
    parser.add_argument("--requests", type=int, default=100, help="of one client, per round")
    parser.add_argument("--clients", type=int, default=8, help="at once")
    parser.add_argument("--per-client", type=int, default=25, help="requests of each of them, per round")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    cpu = torch.device("cpu")
    facts = machine(cpu)
    facts["matmul_gflops_2048_fp32"] = matmul_gflops(2048, 5, cpu)
    facts.update(fastapi=version("fastapi"), uvicorn=version("uvicorn"), platform=platform.platform())
    ensure_mnist(args.data_dir, download=False)
    bodies = drawings(load_mnist(args.data_dir, train=False)[0], 100)

    log = args.out.with_suffix(".server.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server, url = start_server(args.ckpt, args.data_dir, log)
    try:
        client_latencies(url, bodies, 0, 20)  # warm-up
        one, many, walls = [], [], []
        for _ in range(args.rounds):
            one += client_latencies(url, bodies, 0, args.requests)
            latencies, wall = concurrent_latencies(url, bodies, args.clients, args.per_client)
            many += latencies
            walls.append(wall)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    log.unlink()
    facts["load_average_end"] = os.getloadavg()[0]

    concurrent = stats(many)
    concurrent["answers_per_second"] = len(many) / sum(walls)
    results = {
        "what": "POST /api/read of a 280x280 PNG drawing (a test digit, as the page's canvas sends it): from the "
        "request to the parsed JSON answer, measured by the clients; client and server on the same machine",
        "checkpoint": str(args.ckpt),
        "machine": facts,
        "one_client": stats(one),
        f"{args.clients}_clients_at_once": concurrent,
        "one_request_in_process": in_process(args.ckpt, bodies, 105),
        "rounds": args.rounds,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
