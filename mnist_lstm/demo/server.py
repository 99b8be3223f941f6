"""scripts/demo.py's work: find the checkpoint, take the port, load the model once, serve until Ctrl-C."""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
from pathlib import Path

import torch
from omegaconf import DictConfig

from mnist_lstm.errors import UserError
from mnist_lstm.use.models import open_model

log = logging.getLogger(__name__)

INSTALL = 'pip install -e ".[demo]"'


def newest_best_checkpoint(log_dir: str | Path) -> Path:
    """The best checkpoint (highest val_acc in its name) of the newest run under `log_dir`: the run whose
    checkpoints were written last; its last.ckpt if it has no best one (a fast_dev_run)."""
    log_dir = Path(log_dir)
    runs = {ckpt.parent.parent for ckpt in log_dir.glob("**/checkpoints/*.ckpt")}
    if not runs:
        raise UserError(
            f"no trained run under {log_dir}/ (no <run>/checkpoints/*.ckpt): train one with python scripts/train.py, "
            "or pass ckpt_path=<a .ckpt written by scripts/train.py>"
        )
    newest = max(runs, key=lambda run: max(p.stat().st_mtime for p in (run / "checkpoints").glob("*.ckpt")))
    best = sorted((newest / "checkpoints").glob("step*.ckpt"), key=_val_acc)
    return best[-1] if best else newest / "checkpoints" / "last.ckpt"


def _val_acc(ckpt: Path) -> float:
    found = re.search(r"val_acc(\d+(?:\.\d+)?)", ckpt.stem)
    return float(found.group(1)) if found else -1.0


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: any free one), or a one-line UserError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UserError(
            f"host={host} is not an address to serve on ({err.strerror}): use host=127.0.0.1 (this machine only, "
            "the default) or host=0.0.0.0 (every network of this machine)"
        ) from err
    # The protocol named (TCP): asyncio turns Nagle's algorithm off only for a socket that names it, and with it
    # on, each answer after a connection's first waits for the client's delayed ACK.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        fixes = {
            errno.EADDRINUSE: f"port {port} on {host} is taken by another program: pass port=<another>, e.g. "
            f"port={port + 1}, or port=0 for any free one",
            errno.EACCES: f"port {port} needs special rights on this machine: pass port=8000 or another above 1023",
            errno.EADDRNOTAVAIL: f"host={host} is not an address of this machine: use host=127.0.0.1 or host=0.0.0.0",
        }
        raise UserError(fixes.get(err.errno, f"cannot serve on {host}:{port}: {err.strerror}")) from err
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):  # every address: this machine's own is one of them
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(cfg: DictConfig) -> None:
    """Run demo.py's config: serve the page and its API on cfg.host:cfg.port until Ctrl-C."""
    try:
        import uvicorn

        from mnist_lstm.demo.app import DigitReader, OfficialDigits, create_app
    except ImportError as err:
        raise UserError(f"the demo needs fastapi and uvicorn ({err.name} is not installed): {INSTALL}") from err
    ckpt_path = cfg.ckpt_path
    if not ckpt_path and not cfg.onnx:
        ckpt_path = str(newest_best_checkpoint(cfg.log_dir))
        log.info(f"Reading with {ckpt_path}: the newest run's best checkpoint under {cfg.log_dir}/ (or ckpt_path=)")
    sock = listen(cfg.host, cfg.port)  # before the slow part: a taken port is said at once
    try:
        model, hparams, source = open_model(ckpt_path, cfg.onnx, cfg.device)
        layers, hidden = hparams.get("layer_num"), hparams.get("hidden_size")
        about = {
            "model": f"LSTM, {layers} layers of {hidden} units" if layers and hidden else "LSTM",
            "source": source.name,
        }
        log.info(f"Model: {source} ({about['model']})")
        # One image's matmuls are too small for a second thread to help: each request computes on one core, and
        # concurrent requests share the cores.
        torch.set_num_threads(1)
        reader = DigitReader(model)
        # One blank image read now: the first call's one-off costs are not a user's wait, and a model that cannot
        # answer per row (an ONNX export with per_row=false) is refused at start.
        reader.read(torch.zeros(28, 28))
        test_digits = OfficialDigits.load(cfg.data_dir, cfg.download)
        if test_digits.unavailable:
            log.warning(f"The random test digit button will say so: {test_digits.unavailable}")
        app = create_app(reader, test_digits, about)
        log.info(f"Open {url_of(sock)} to draw a digit and watch the model read it (Ctrl-C to stop)")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops on Ctrl-C, then raises it again: a normal end
            server.run(sockets=[sock])
        log.info("Stopped")
    finally:
        sock.close()
