"""The training loop: seeds, a resumed run equal to an uninterrupted one, the schedules in the
history, checkpoint errors, each estimator learning digits, and the ``bnnfab train`` arguments."""

from __future__ import annotations

import argparse
import io
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bnnfab.models import load_model  # noqa: E402
from bnnfab.models.train import ARCHS, ESTIMATORS, TrainError, ir_inputs, train  # noqa: E402
from bnnfab.models.train import cli as train_cli  # noqa: E402
from bnnfab.models.train.estimators import reste_o  # noqa: E402
from bnnfab.models.train.layers import ScoreHead  # noqa: E402
from bnnfab.models.train.trainer import DEFAULT_LR, load_checkpoint  # noqa: E402
from bnnfab.sim.functional import simulate  # noqa: E402

SMALL = dict(hidden=(24, 16), threads=1)


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_same_seed_same_run_other_seed_other_run():
    a = train("tfc", "digits", "ste", epochs=2, seed=3, **SMALL)
    b = train("tfc", "digits", "ste", epochs=2, seed=3, **SMALL)
    c = train("tfc", "digits", "ste", epochs=2, seed=4, **SMALL)
    assert _same_state(a.model, b.model) and _strip(a.history) == _strip(b.history)
    assert not _same_state(a.model, c.model)
    assert not a.model.training and a.finished


@pytest.mark.parametrize("estimator", ["biper", "reste"])
def test_resumed_run_equals_uninterrupted(tmp_path, estimator):
    params = {"stage1_epochs": 2} if estimator == "biper" else None
    kw = dict(epochs=4, seed=1, estimator_params=params, **SMALL)
    whole = train("tfc", "digits", estimator, checkpoint=tmp_path / "whole.pt", **kw)
    ck = tmp_path / "parts.pt"
    part = train("tfc", "digits", estimator, checkpoint=ck, stop_after=1, **kw)
    assert not part.finished and len(part.history) == 1
    part = train("tfc", "digits", estimator, checkpoint=ck, resume=True, stop_after=1, **kw)
    assert len(part.history) == 2  # stops right before BiPer's stage 2 (optimizer restart)
    rest = train("tfc", "digits", estimator, checkpoint=ck, resume=True, **kw)
    assert rest.finished and [h["epoch"] for h in rest.history] == [1, 2, 3, 4]
    assert _same_state(whole.model, rest.model)
    assert _strip(whole.history) == _strip(rest.history)
    again = train("tfc", "digits", estimator, checkpoint=ck, resume=True, **kw)  # finished: nothing to do
    assert _same_state(whole.model, again.model) and again.finished
    assert load_checkpoint(ck)["epoch"] == 4


def test_history_follows_the_schedules():
    r = train("tfc", "digits", "reste", epochs=3, seed=0, lr=0.02, **SMALL)
    assert [h["o"] for h in r.history] == pytest.approx([reste_o(e, 3) for e in range(3)])
    assert [h["lr"] for h in r.history] == pytest.approx([0.02 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)])
    b = train("tfc", "digits", "biper", epochs=3, seed=0, **SMALL)  # default stage 1: 2 of 3 epochs
    assert [h["stage"] for h in b.history] == [1, 1, 2]
    lr = DEFAULT_LR["biper"]
    assert [h["lr"] for h in b.history] == pytest.approx([lr, lr * 0.5 * (1 + math.cos(math.pi / 2)), lr])  # restart
    s = train("tfc", "digits", "ste", epochs=2, seed=0, **SMALL)
    assert all(float(m.weight.detach().abs().max()) <= 1.0 for m in s.model.compute_layers())  # BinaryNet's clip


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_each_estimator_learns_digits_and_exports_exactly(estimator):
    r = train("tfc", "digits", estimator, epochs=6, seed=0, threads=1)
    assert r.test_accuracy >= 0.85, r.history
    ir = r.export()
    test = r.test
    sim = simulate(ir, ir_inputs(ir, test.x))
    tr = r.model.trace(test.x)
    np.testing.assert_array_equal(sim.scores, tr["scores"])
    assert float((sim.classes == test.y).mean()) == pytest.approx(r.test_accuracy)


def test_cnv_and_binary_input_train_briefly():
    r = train("cnv", "digits", "ste", epochs=1, seed=0, width=0.125, input_bits=1, threads=1)
    ir = r.export()
    assert ir.input.binary and ir.metadata["input_offset"] == "128.0"
    sim = simulate(ir, ir_inputs(ir, r.test.x))
    np.testing.assert_array_equal(sim.scores, r.model.trace(r.test.x)["scores"])


def test_checkpoint_errors(tmp_path):
    ck = tmp_path / "run.pt"
    with pytest.raises(TrainError, match="no checkpoint at"):
        train("tfc", "digits", "ste", epochs=2, checkpoint=ck, resume=True, **SMALL)
    with pytest.raises(TrainError, match="resume needs a checkpoint path"):
        train("tfc", "digits", "ste", epochs=2, resume=True, **SMALL)
    train("tfc", "digits", "ste", epochs=2, checkpoint=ck, stop_after=1, **SMALL)
    with pytest.raises(TrainError, match="exists; resume it"):
        train("tfc", "digits", "ste", epochs=2, checkpoint=ck, **SMALL)
    with pytest.raises(TrainError, match=r"other settings: epochs=2 \(asked 3\)"):
        train("tfc", "digits", "ste", epochs=3, checkpoint=ck, resume=True, **SMALL)
    with pytest.raises(TrainError, match=r"estimator='ste' \(asked 'reste'\)"):
        train("tfc", "digits", "reste", epochs=2, checkpoint=ck, resume=True, **SMALL)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="not a readable training checkpoint"):
        train("tfc", "digits", "ste", epochs=2, checkpoint=bad, resume=True, **SMALL)


def test_bad_options_say_what_is_wrong():
    with pytest.raises(TrainError, match="unknown estimator 'sgd'; choose one of ste, reste, biper"):
        train("tfc", "digits", "sgd", epochs=1)
    with pytest.raises(TrainError, match="unknown arch 'vgg'; choose one of tfc, sfc, lfc, cnv"):
        train("vgg", "digits", "ste", epochs=1)
    with pytest.raises(TrainError, match="unknown dataset 'svhn'"):
        train("tfc", "svhn", "ste", epochs=1)
    with pytest.raises(TrainError, match="epochs must be a whole number >= 1, not 0"):
        train("tfc", "digits", "ste", epochs=0)
    with pytest.raises(TrainError, match="input_bits must be 1 .* or the data's 8 bits, not 4"):
        train("tfc", "digits", "ste", epochs=1, input_bits=4)


def test_progress_bar_and_epoch_callback(capsys):
    seen = []
    train("tfc", "digits", "ste", epochs=1, progress=True, on_epoch=seen.append, **SMALL)
    assert "train tfc/ste" in capsys.readouterr().err
    assert len(seen) == 1 and set(seen[0]) >= {"epoch", "loss", "train_acc", "test_acc", "lr"}


def test_cli_choices_mirror_the_implementation():
    assert train_cli.ARCH_CHOICES == ARCHS
    assert train_cli.ESTIMATOR_CHOICES == tuple(ESTIMATORS)
    assert train_cli.HEAD_CHOICES == ScoreHead.KINDS


def test_cli_trains_exports_and_checks(tmp_path):
    out_path = tmp_path / "m.bnn"
    argv = ["--arch", "tfc", "--estimator", "biper", "--epochs", "2", "--hidden", "24,16", "--omega", "15",
            "--stage1-epochs", "1", "--threads", "1", "--no-progress", "-o", str(out_path)]
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    buf = io.StringIO()
    status = train_cli.run(args, out=buf, check=lambda m, x: simulate(m, x).classes)
    text = buf.getvalue()
    assert status == 0, text
    assert "tfc/biper on digits: 2 epochs" in text and "360/360 predictions equal the torch model's" in text
    model = load_model(out_path)
    assert model.metadata["estimator"] == "biper"
    assert train_cli.main(argv[:-2] + ["--output", str(tmp_path / "n.bnn")]) == 0


def test_cli_errors(tmp_path, capsys):
    assert train_cli.main(["--estimator", "ste", "--omega", "20", "--epochs", "1"]) == 2
    assert "--omega is an option of the biper estimator, not of ste" in capsys.readouterr().err
    assert train_cli.main(["--resume", "--epochs", "1"]) == 2
    assert "--resume needs --checkpoint PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["--epochs", "0"])
    assert "must be a positive whole number, not '0'" in capsys.readouterr().err


def test_declaring_the_arguments_needs_no_torch():
    code = (
        "import sys, argparse\n"
        "import bnnfab.models\n"
        "from bnnfab.models.train.cli import add_arguments\n"
        "add_arguments(argparse.ArgumentParser())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
