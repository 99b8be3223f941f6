"""scripts/export.py: a checkpoint to ONNX, proven equal to PyTorch on the official test set, used by predict.py and
eval.py through onnxruntime; and every bad input refused in one line with nothing half-written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import load_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.use.models import OnnxModel
from tests.helpers import run_script


@pytest.fixture(scope="module")
def exported(tiny_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the tiny run's best checkpoint, its export), made by the script as a user runs it."""
    (ckpt,) = (tiny_run[0] / "checkpoints").glob("step*.ckpt")
    out = tmp_path_factory.mktemp("export")
    result = run_script("export.py", f"ckpt_path={ckpt}", f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    onnx_file = out / f"{ckpt.stem}.onnx"
    assert f"Wrote {onnx_file}" in result.stdout
    return ckpt, onnx_file


def test_the_export_is_valid_onnx_with_a_dynamic_batch_and_says_how_to_feed_it(exported: tuple[Path, Path]) -> None:
    ckpt, onnx_file = exported
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    (images,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim][1:] == [28, 28]
    assert images.type.tensor_type.shape.dim[0].dim_param  # the batch is a named, dynamic dimension
    assert [o.name for o in model.graph.output] == ["logits", "per_row_logits"]
    sidecar = json.loads(onnx_file.with_suffix(".json").read_text())
    assert sidecar["classes"] == [str(k) for k in range(10)] and sidecar["opset"] == 18
    assert "white digit on black" in sidecar["input"]["images"] and "[0, 1]" in sidecar["input"]["images"]
    assert sidecar["checkpoint"] == str(ckpt.resolve()) and sidecar["hyper_parameters"]["layer_num"] == 3
    assert sidecar["parity"]["max_abs_logit_difference"] <= 1e-4 and sidecar["parity"]["same_answers"]
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == sorted([onnx_file.name, f"{ckpt.stem}.json"])


def test_onnxruntime_answers_as_pytorch_on_the_official_test_set(exported: tuple[Path, Path], mnist_dir: Path) -> None:
    """The largest logit difference over 1,000 test images <= 1e-4, the same answer on all 10,000; the per-row
    logits too (the reading figure drawn from the export is the checkpoint's)."""
    ckpt, onnx_file = exported
    images, _ = load_mnist(mnist_dir, train=False)
    net, runtime = load_model(ckpt, "cpu").net, OnnxModel(onnx_file)
    with torch.no_grad():
        expected = net(images)
        expected_rows = net.per_row_logits(images[:1000])
    got = runtime(images)
    assert (got[:1000] - expected[:1000]).abs().max() <= 1e-4
    assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1))
    assert (runtime.per_row_logits(images[:1000]) - expected_rows).abs().max() <= 1e-4


@pytest.mark.slow  # (CI runs it; the default run stays a few minutes)
def test_predict_and_eval_give_the_same_answers_from_the_export(
    exported: tuple[Path, Path], mnist_dir: Path, tmp_path: Path
) -> None:
    ckpt, onnx_file = exported
    image, _ = load_mnist(mnist_dir, train=False)
    picture = tmp_path / "digit.png"
    Image.fromarray((image[3] * 255).round().byte().numpy(), "L").save(picture)
    answers = []
    for source in (f"ckpt_path={ckpt}", f"onnx={onnx_file}"):
        result = run_script("predict.py", source, f"image={picture}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        answers.append(result.stdout.split(f"{picture}: ")[1].splitlines()[0])  # "predicted digit 0 (97.3%)"
    assert answers[0] == answers[1] and answers[0].startswith("predicted digit ")
    accuracies = []
    for source in (f"ckpt_path={ckpt}", f"onnx={onnx_file}"):
        out = tmp_path / source.partition("=")[0]
        result = run_script("eval.py", source, f"out={out}", f"data.data_dir={mnist_dir}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        accuracies.append(json.loads(next(out.glob("*.json")).read_text())["test/acc"])
    assert accuracies[0] == accuracies[1]


def foreign_onnx(path: Path) -> Path:
    """A valid ONNX model that is not ours: it reads (batch, 5) and answers (batch, 5)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "not_ours", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.slow  # (CI runs it)
def test_bad_inputs_are_one_line_and_nothing_is_half_written(exported: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, onnx_file = exported
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    digit = tmp_path / "digit.png"
    picture = Image.new("L", (28, 28))
    picture.paste(255, (10, 5, 17, 23))  # a white bar on black: a "1"
    picture.save(digit)
    before = {p: p.stat().st_mtime_ns for p in onnx_file.parent.iterdir()}
    cases = [
        ("export.py", [f"ckpt_path={text}", f"out={tmp_path / 'out'}"], f"{text} is not a PyTorch checkpoint"),
        ("export.py", [f"ckpt_path={ckpt}", f"out={a_file / 'sub'}"], f"cannot create the folder {a_file / 'sub'}"),
        ("export.py", [f"ckpt_path={ckpt}", f"out={tmp_path / 'my.onnx'}"], f"out={tmp_path / 'my.onnx'} names a file"),
        (
            "export.py",
            [f"ckpt_path={ckpt}", f"out={onnx_file.parent}"],
            f"{onnx_file} already exists and is never overwritten: pass overwrite=true",
        ),
        (
            "predict.py",
            [f"onnx={foreign_onnx(tmp_path / 'foreign.onnx')}", f"image={digit}"],
            f"{tmp_path / 'foreign.onnx'} is an ONNX model, but not one of this project's (input [['batch', 5]]",
        ),
        ("predict.py", [f"onnx={text}", f"image={digit}"], f"{text} is not an ONNX model onnxruntime can load"),
        ("eval.py", [f"ckpt_path={ckpt}", f"onnx={onnx_file}"], "both of ckpt_path= and onnx= given: pass one"),
    ]
    for script, args, message in cases:
        result = run_script(script, *args, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1, (script, args, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
    assert {p: p.stat().st_mtime_ns for p in onnx_file.parent.iterdir()} == before  # the export untouched
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "my.onnx").exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_without_onnxruntime_one_line_says_what_to_install(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    with pytest.raises(UserError, match=r'needs onnxruntime, not installed: pip install -e "\.\[export\]"'):
        OnnxModel(exported[1])


@pytest.mark.slow  # a second export through the real CLI
def test_an_export_without_per_row_logits_still_predicts(exported: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = exported
    result = run_script("export.py", f"ckpt_path={ckpt}", f"out={tmp_path}", "per_row=false")
    assert result.returncode == 0, result.stderr[-3000:]
    runtime = OnnxModel(tmp_path / f"{ckpt.stem}.onnx")
    assert not runtime.has_per_row and runtime(torch.rand(3, 28, 28)).shape == (3, 10)
    with pytest.raises(UserError, match=r"has no per-row logits \(exported with per_row=false\)"):
        runtime.per_row_logits(torch.rand(1, 28, 28))
