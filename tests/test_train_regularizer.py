"""The MST-distance regularizer: the surrogate's value and gradient against brute-force and
finite-difference references, its forest against the real planner, that descending it lowers the
real planner's cost, that a short regularized training run lowers the exported model's MST cost
against lambda = 0 on the same seed, resumability, option errors; and the ±1 conv padding the
hardware generator needs (exact export, accepted by the generator)."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bnnfab.models.datasets import load_dataset  # noqa: E402
from bnnfab.models.train import TrainError, build_model, export_model, ir_inputs, train  # noqa: E402
from bnnfab.models.train import cli as train_cli  # noqa: E402
from bnnfab.models.train.regularizer import (  # noqa: E402
    MstOptions,
    MstRegularizer,
    forest_cost,
    prim_forest,
    soft_forest_cost,
    soft_hamming,
    soft_sign,
)
from bnnfab.models.train.topologies import CONV_PADDINGS  # noqa: E402
from bnnfab.sim.functional import simulate  # noqa: E402
from bnnfab.sim.mst import plan_mst  # noqa: E402
from bnnfab.sim.report import plan_model_mst  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- naive references -------------------------------------------------------------------------


def naive_soft_forest_cost(s: np.ndarray, parent: np.ndarray) -> float:
    """K per root plus, per edge, sum over bits of (1 - s_child s_parent) / 2 -- loops only."""
    n, k = s.shape
    total = 0.0
    for j in range(n):
        if parent[j] < 0:
            total += k
            continue
        for b in range(k):
            total += (1.0 - s[j, b] * s[parent[j], b]) / 2.0
    return total


def naive_depths(parent: np.ndarray) -> list[int]:
    out = []
    for j in range(len(parent)):
        d, p = 0, parent[j]
        while p >= 0:
            d, p = d + 1, parent[p]
        out.append(d)
    return out


def _model_mst_ops(model, depth):
    schedules = plan_model_mst(model, max_depth=depth)
    return sum(model.positions(i) * s.cost for i, s in schedules.items())


# -- the surrogate -------------------------------------------------------------------------------


def test_soft_hamming_is_the_hamming_distance_on_pm1_values():
    rng = np.random.default_rng(0)
    bits = rng.random((7, 19)) < 0.5
    pm1 = torch.from_numpy(np.where(bits, 1.0, -1.0))
    for i in range(7):
        for j in range(7):
            assert float(soft_hamming(pm1[i], pm1[j])) == np.count_nonzero(bits[i] != bits[j])
    assert torch.equal(soft_sign(torch.tensor([-3.0, 0.0, 2.0]), 1e-9), torch.tensor([-1.0, 0.0, 1.0]))


def test_soft_forest_cost_matches_the_brute_force_reference():
    rng = np.random.default_rng(1)
    s = rng.uniform(-1, 1, size=(9, 13))
    parent = np.array([-1, 0, 0, 1, -1, 4, 3, 6, -1])
    got = float(soft_forest_cost(torch.from_numpy(s), parent))
    assert got == pytest.approx(naive_soft_forest_cost(s, parent), rel=1e-12)
    bits = s >= 0  # at ±1 soft values: exactly the forest's cost in binary ops
    pm1 = torch.from_numpy(np.where(bits, 1.0, -1.0))
    assert float(soft_forest_cost(pm1, parent)) == forest_cost(bits, parent)
    with pytest.raises(ValueError, match=r"parent must have shape \(9,\), not \(3,\)"):
        soft_forest_cost(torch.from_numpy(s), np.array([-1, 0, 0]))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    w = torch.tensor(rng.normal(size=(6, 11)), dtype=torch.float64, requires_grad=True)
    parent = np.array([-1, 0, 1, 1, -1, 4])
    tau = 0.7

    def f(v):
        return soft_forest_cost(soft_sign(v, tau), parent)

    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7)
    # and against a hand-written central difference on the loop reference
    g = torch.autograd.grad(f(w), w)[0].numpy()
    base = w.detach().numpy()
    h = 1e-6
    for i, j in [(0, 0), (1, 3), (2, 10), (3, 5), (4, 7), (5, 1)]:
        up, dn = base.copy(), base.copy()
        up[i, j] += h
        dn[i, j] -= h
        fd = (naive_soft_forest_cost(np.tanh(up / tau), parent) - naive_soft_forest_cost(np.tanh(dn / tau), parent)) / (2 * h)
        assert g[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_prim_forest_is_the_exact_mst_unlimited_and_respects_a_depth_limit():
    rng = np.random.default_rng(3)
    for n, k in [(1, 5), (12, 8), (40, 64), (33, 100)]:
        bits = rng.random((n, k)) < rng.uniform(0.2, 0.8)
        parent = prim_forest(bits)
        assert forest_cost(bits, parent) == plan_mst(bits).cost  # both exact MSTs
        for depth in (0, 1, 2, 4):
            parent = prim_forest(bits, depth)
            assert max(naive_depths(parent)) <= depth
            assert forest_cost(bits, parent) >= plan_mst(bits).cost  # the MST bounds every forest
            assert forest_cost(bits, parent) <= n * k
    with pytest.raises(ValueError, match="max_depth must be None or a whole number >= 0, not -1"):
        prim_forest(np.ones((2, 2), bool), -1)


def test_descending_the_surrogate_lowers_the_real_planners_cost():
    """Toy problem: 24 channels of 48 random latent weights, only the surrogate as the loss."""
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(24, 48, generator=g, dtype=torch.float64))
    opt = torch.optim.Adam([w], lr=0.05)
    tau = 0.5

    def bits():
        return (w.detach() >= 0).numpy()

    before = {d: plan_mst(bits(), d).cost for d in (1, 2, None)}
    for step in range(60):
        if step % 5 == 0:
            parent = prim_forest(bits(), 2)
        loss = soft_forest_cost(soft_sign(w, tau), parent) / w.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = {d: plan_mst(bits(), d).cost for d in (1, 2, None)}
    for d in before:
        assert after[d] < 0.6 * before[d], (before, after)


# -- the regularizer on a model ----------------------------------------------------------------------


def _tiny(estimator="ste", **kw):
    torch.manual_seed(0)
    return build_model("tfc", (8, 8, 1), 10, estimator=estimator, hidden=(8, 6), **kw)


@pytest.mark.parametrize("estimator", ["ste", "biper"])
def test_value_is_the_mean_normalised_soft_forest_cost(estimator):
    model = _tiny(estimator)
    with torch.no_grad():
        model.body[5].bn.weight[[1, 4]] = -0.5  # negative batch-norm scale: channels exported flipped
    reg = MstRegularizer(model, MstOptions(0.3, max_depth=2, temperature=0.8))
    assert reg.layers[0][1] is model.body[5]
    assert [m.weight.shape for m, _ in reg.layers] == [(6, 8), (10, 6)]  # the integer first layer is skipped
    reg.refresh()
    ir = export_model(model)
    exported = [ir.layers[i].weights_2d for i, _ in ir.compute_layers if not ir.takes_integers(i)]
    for got, want in zip(reg.canonical_bits(), exported):
        np.testing.assert_array_equal(got, want)
    terms = []
    for (m, bn), parent in zip(reg.layers, reg.parents):
        p = model.estimator.eval_weight_preimage(m.weight).detach().double().numpy()
        tau = 0.8 * np.abs(p).mean()
        flip = np.ones((p.shape[0], 1)) if bn is None else np.where(bn.affine64()[0].numpy() < 0, -1.0, 1.0)[:, None]
        s = flip * np.tanh(p / tau)
        terms.append(naive_soft_forest_cost(s, parent) / s.size)
        assert max(naive_depths(parent)) <= 2
    assert float(reg.value().detach()) == pytest.approx(np.mean(terms), rel=1e-5)
    assert float(reg.loss(1).detach()) == pytest.approx(0.3 * np.mean(terms), rel=1e-5)
    reg_no_out = MstRegularizer(model, MstOptions(0.3, include_output=False))
    assert len(reg_no_out.layers) == 1


def test_binary_input_model_regularizes_its_first_layer():
    reg = MstRegularizer(_tiny(input_bits=1), MstOptions(1.0))
    assert [tuple(m.weight.shape) for m, _ in reg.layers] == [(8, 64), (6, 8), (10, 6)]


def test_short_regularized_training_lowers_the_mst_cost():
    kw = dict(epochs=4, seed=5, hidden=(32, 32), threads=1)
    plain = train("tfc", "digits", "ste", **kw)
    reg = train("tfc", "digits", "ste", mst_lambda=1.0, mst_depth=4, **kw)
    a, b = plain.export(), reg.export()
    for depth in (2, 4, None):
        assert _model_mst_ops(b, depth) < 0.85 * _model_mst_ops(a, depth)
    assert reg.test_accuracy > 0.8
    assert "mst" not in plain.history[-1] and "mst_lambda" not in plain.run  # off: the run is as before
    assert reg.run["mst_lambda"] == 1.0 and reg.run["mst_depth"] == 4
    assert 0 < reg.history[-1]["mst"] < reg.history[0]["mst"] < 1


def test_regularized_run_resumes_exactly(tmp_path):
    kw = dict(epochs=3, seed=2, hidden=(16, 12), threads=1, mst_lambda=0.5, mst_depth=2, mst_params={"refresh_every": 3})
    whole = train("tfc", "digits", "reste", **kw)
    ck = tmp_path / "run.pt"
    train("tfc", "digits", "reste", checkpoint=ck, stop_after=2, **kw)
    rest = train("tfc", "digits", "reste", checkpoint=ck, resume=True, **kw)
    sa, sb = whole.model.state_dict(), rest.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(TrainError, match=r"mst_lambda=0.5 \(asked 0.25\)"):
        train("tfc", "digits", "reste", checkpoint=ck, resume=True, **dict(kw, mst_lambda=0.25))


def test_bad_regularizer_options_say_what_is_wrong():
    with pytest.raises(TrainError, match="mst_lambda must be a finite number >= 0, not -1"):
        train("tfc", "digits", "ste", epochs=1, mst_lambda=-1)
    with pytest.raises(TrainError, match="mst_depth must be None or a whole number >= 0, not 2.5"):
        train("tfc", "digits", "ste", epochs=1, mst_lambda=1, mst_depth=2.5)
    with pytest.raises(TrainError, match="mst temperature must be a positive number, not 0"):
        train("tfc", "digits", "ste", epochs=1, mst_lambda=1, mst_params={"temperature": 0})
    with pytest.raises(TrainError, match="unexpected keyword argument 'beta'"):
        train("tfc", "digits", "ste", epochs=1, mst_lambda=1, mst_params={"beta": 2})


def test_cli_trains_with_the_regularizer_and_reports_mst_ops():
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(["--epochs", "2", "--hidden", "16,16", "--threads", "1", "--no-progress",
                              "--mst-lambda", "0.5", "--mst-depth", "none", "--mst-temperature", "2"])
    assert args.mst_depth is None
    buf = io.StringIO()
    assert train_cli.run(args, out=buf, plan=plan_model_mst) == 0
    assert "MST at depth limit unlimited: 416 -> " in buf.getvalue()
    args = parser.parse_args(["--epochs", "1", "--mst-refresh", "4"])
    with pytest.raises(TrainError, match="--mst-temperature and --mst-refresh are options of the regularizer"):
        train_cli.run(args, out=io.StringIO())
    with pytest.raises(SystemExit):
        parser.parse_args(["--mst-lambda", "-0.1"])


# -- ±1 padding of binary convolutions ------------------------------------------------------------


@pytest.mark.parametrize("padding", ["-1", "+1"])
def test_pm1_conv_padding_exports_exactly_and_generates(padding):
    from bnnfab.codegen.plan import lower_layers

    r = train("cnv", "digits", "ste", epochs=1, seed=0, width=0.125, threads=1, conv_padding=padding)
    ir = r.export()
    kinds = [layer.padding.value for layer in ir.layers if layer.kind == "conv"]
    assert kinds == ["zero"] + [padding] * 5  # the integer first layer pads with pixel value 0
    test = load_dataset("digits", "test")
    sim = simulate(ir, ir_inputs(ir, test.x))
    np.testing.assert_array_equal(sim.scores, r.model.trace(test.x)["scores"])
    lower_layers(ir)  # the generator's lowering accepts it (it refuses zero-padded binary convs)
    assert r.run["conv_padding"] == padding
    assert set(CONV_PADDINGS) == set(train_cli.CONV_PADDING_CHOICES)
    with pytest.raises(TrainError, match="conv_padding must be one of zero, -1, \\+1, not 'one'"):
        train("cnv", "digits", "ste", epochs=1, width=0.125, conv_padding="one")
