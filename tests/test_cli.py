"""The ``bnnfab`` command: outputs, files written, and clear errors without tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import naive
from bnnfab.cli import main
from bnnfab.models import zoo
from bnnfab.models.datasets import load_dataset
from bnnfab.models.io import save_model


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.rtl
def test_demo_runs_the_whole_flow(icarus, capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--simulator", "icarus", "--images", "8", "--output", str(tmp_path))
    assert code == 0, err
    assert "IDENTICAL to the direct path" in out
    assert "PASS: 8 images through the RTL on icarus" in out
    assert (tmp_path / "bnnfab_top.v").is_file() and (tmp_path / "design.json").is_file()
    model = zoo.load(zoo.DEFAULT)
    ds = load_dataset("digits", "test")
    acc = (naive.infer(model, ds.x)["classes"] == ds.y).mean()
    assert f"accuracy {acc * 100:.2f}%" in out


def test_info_lists_layers(capsys):
    code, out, _ = run(capsys, "info", zoo.DEFAULT)
    assert code == 0
    model = zoo.load(zoo.DEFAULT)
    for layer in model.layers:
        assert layer.name in out
    assert "unsigned 8-bit integers" in out


def test_simulate_dataset_output_matches_reference(capsys, tmp_path):
    out_path = tmp_path / "y.npy"
    code, out, err = run(capsys, "simulate", zoo.DEFAULT, "--dataset", "digits", "--output", str(out_path), "--mst-depth", "2")
    assert code == 0, err
    ds = load_dataset("digits", "test")
    model = zoo.load(zoo.DEFAULT)
    want = naive.infer(model, ds.x)
    want_out = want["scores"] if model.epilogue is None else model.epilogue.apply(want["scores"])
    np.testing.assert_array_equal(np.load(out_path), want_out)
    acc = (want["classes"] == ds.y).mean()
    assert f"accuracy {acc * 100:.2f}%" in out
    assert "mst_ops" in out and "depth limit 2" in out


def test_simulate_inputs_file_with_labels(capsys, tmp_path):
    ds = load_dataset("digits", "train")
    np.save(tmp_path / "x.npy", ds.x[:50])
    np.save(tmp_path / "y.npy", ds.y[:50])
    model_path = tmp_path / "m.bnn"
    save_model(zoo.load(zoo.DEFAULT), model_path)
    code, out, err = run(capsys, "simulate", str(model_path), "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"))
    assert code == 0, err
    assert "(.../50)" not in out and "/50)" in out


def test_mst_json(capsys):
    code, out, _ = run(capsys, "mst", zoo.DEFAULT, "--max-depth", "3", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["max_depth"] == 3
    assert doc["summary"]["direct_ops_per_image"] >= doc["summary"]["mst_ops_per_image"] > 0
    for row in doc["layers"]:
        assert row["depth"] <= 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "missing.bnn"], "no such model file"),
        (["info", "no-such-model"], "no model file 'no-such-model' and no bundled model of that name"),
        (["mst", zoo.DEFAULT, "--max-depth", "-1"], "depth must be a whole number >= 0 or 'none', not '-1'"),
        (["simulate", zoo.DEFAULT, "--dataset", "svhn"], "unknown dataset 'svhn'; available: digits, mnist"),
        (["simulate", zoo.DEFAULT, "--dataset", "mnist", "--data-dir", "/nonexistent"], "mnist: IDX files not found in /nonexistent"),
        (["simulate", zoo.DEFAULT, "--inputs", "nope.npy"], "no such inputs file: nope.npy"),
        (["simulate", zoo.DEFAULT, "--batch-size", "0"], "must be a positive whole number, not '0'"),
        (["simulate", zoo.DEFAULT, "--labels", "y.npy"], "--labels goes with --inputs"),
        (["generate", zoo.DEFAULT, "-o", "x", "--register-every", "0"], "must be a positive whole number, not '0'"),
    ],
)
def test_errors_are_one_line_without_traceback(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


def test_inputs_of_wrong_shape(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 7), np.uint8))
    code, _, err = run(capsys, "simulate", zoo.DEFAULT, "--inputs", str(tmp_path / "x.npy"))
    assert code == 2
    assert "inputs must have shape (batch, 8, 8, 1) for this model, got (3, 7)" in err


def test_pickled_inputs_are_refused(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run(capsys, "simulate", zoo.DEFAULT, "--inputs", str(tmp_path / "x.npy"))
    assert code == 2 and "without pickle" in err


def test_console_script_is_installed():
    exe = shutil.which("bnnfab")
    cmd = [exe] if exe else [sys.executable, "-m", "bnnfab"]
    res = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for sub in ("demo", "simulate", "mst", "info"):
        assert sub in res.stdout
