"""Generated Verilog in cocotb on Icarus and Verilator: whole models, bit-exact against the
simulator and cycle-exact against the cycle model under random stalls; a corrupted design is
caught."""

from __future__ import annotations

import json

import re

import numpy as np
import pytest

from bnnfab.cli import main
from bnnfab.codegen.config import Engine, GenConfig, LayerChoice
from bnnfab.codegen.generate import generate, write_design
from bnnfab.codegen.verify import VerifyError, load_design_dir, verify_design
from bnnfab.models import Conv2d, Dense, Flatten, InputSpec, Model, zoo
from bnnfab.models.datasets import load_dataset

pytestmark = pytest.mark.rtl


def _design(tmp_path, model, config):
    write_design(generate(model, config), tmp_path)
    return load_design_dir(tmp_path)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "test").x


def test_default_model_folded(rtl_simulator, rtl_build_root, tmp_path, digits):
    design = _design(tmp_path, zoo.load(), GenConfig(target_cycles=64))
    report = verify_design(design, digits[:12], simulator=rtl_simulator.name, seed=3, build_dir=rtl_build_root)
    assert report.passed, report.summary()
    assert report.emitted == 12


def test_default_model_with_unrolled_mst_layer(rtl_simulator, rtl_build_root, tmp_path, digits):
    cfg = GenConfig(target_cycles=32, mst_depth=3, layers={3: LayerChoice(engine=Engine.UNROLLED)})
    design = _design(tmp_path, zoo.load(), cfg)
    report = verify_design(design, digits[20:36], simulator=rtl_simulator.name, stalls="bursty", seed=5, build_dir=rtl_build_root)
    assert report.passed, report.summary()


def test_zoo_conv_net(rtl_simulator, rtl_build_root, tmp_path, digits):
    design = _design(tmp_path, zoo.load("digits-ecoc-cnn"), GenConfig(target_cycles=256))
    report = verify_design(design, digits[:5], simulator=rtl_simulator.name, seed=7, build_dir=rtl_build_root)
    assert report.passed, report.summary()


@pytest.mark.parametrize("seed", [0, 1])
def test_random_mlp_mixed_engines(icarus, rtl_build_root, tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    k0, h1, h2, classes = 13, 37, 21, 5
    model = Model(
        InputSpec((k0,), bits=6, signed=bool(seed)),
        (
            Dense(rng.random((h1, k0)) < 0.5, rng.integers(-40, 41, h1)),
            Dense(rng.random((h2, h1)) < 0.5, rng.integers(-9, 10, h2)),
            Dense(rng.random((classes, h2)) < 0.5),
        ),
    )
    lo, hi = model.input.value_range
    x = rng.integers(lo, hi + 1, size=(10, k0))
    layers = {1: LayerChoice(engine=Engine.FOLDED, pe=5, simd=6), 2: LayerChoice(engine=Engine.UNROLLED, mst_depth=None if seed else 1)}
    # seed 1 registers the unrolled trees every 2 levels
    design = _design(tmp_path, model, GenConfig(layers=layers, target_cycles=16, register_every=1 + seed % 2))
    report = verify_design(design, x, simulator="icarus", seed=seed, build_dir=rtl_build_root)
    assert report.passed, report.summary()


def test_zero_padded_binary_conv_net(icarus, rtl_build_root, tmp_path):
    """Both convolutions zero-padded (the binary one through per-position threshold classes)."""
    rng = np.random.default_rng(7)
    spec = InputSpec((5, 6, 2), bits=4)
    c1 = Conv2d(rng.random((6, 3, 3, 2)) < 0.5, rng.integers(0, 30, 6), pads=1, padding="zero")
    c2 = Conv2d(rng.random((7, 3, 3, 6)) < 0.5, rng.integers(-8, 9, 7), pads=(1, 2, 1, 0), stride=(1, 2), padding="zero")
    shape = c2.out_shape(c1.out_shape(spec.shape))
    model = Model(spec, (c1, c2, Flatten(), Dense(rng.random((4, int(np.prod(shape)))) < 0.5)))
    x = rng.integers(0, 16, size=(4, 5, 6, 2))
    design = _design(tmp_path, model, GenConfig(target_cycles=64))
    report = verify_design(design, x, simulator="icarus", seed=2, build_dir=rtl_build_root)
    assert report.passed, report.summary()


def test_corrupted_weight_bit_is_caught(icarus, rtl_build_root, tmp_path, digits):
    design = _design(tmp_path, zoo.load(), GenConfig(target_cycles=64))
    text = design.verilog.read_text()
    # the last weight memory written is the output layer's; flip bit 0 of its row 0 (weight of
    # class 0, element 0): that score changes by 2 for every image
    rows = list(re.finditer(r"wmem\[0\] = (\d+)'h([0-9a-f]+);", text))
    last = rows[-1]
    width, value = int(last.group(1)), int(last.group(2), 16)
    flipped = f"wmem[0] = {width}'h{value ^ 1:0{(width + 3) // 4}x};"
    design.verilog.write_text(text[: last.start()] + flipped + text[last.end() :])
    report = verify_design(design, digits[:4], simulator="icarus", build_dir=rtl_build_root)
    assert not report.passed
    assert report.first_mismatch.startswith("image 0: RTL gave class"), report.summary()


def test_cli_verify_prints_summary(icarus, tmp_path, capsys):
    """Through the CLI, with the output layer unrolled and its trees registered every 2 levels."""
    code = main(["generate", zoo.DEFAULT, "-o", str(tmp_path), "--target-cycles", "64", "--unroll", "3",
                 "--register-every", "2"])
    assert code == 0
    assert json.loads((tmp_path / "design.json").read_text())["config"]["register_every"] == 2
    capsys.readouterr()
    code = main(["verify", str(tmp_path), "--images", "5", "--simulator", "icarus"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "PASS: 5 images through the RTL on icarus" in out


def test_not_a_design_folder(tmp_path):
    with pytest.raises(VerifyError, match="not a design folder"):
        load_design_dir(tmp_path)
