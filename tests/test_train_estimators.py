"""Gradient estimators: every forward and backward against its paper's formula (autograd on a
grid that includes the region boundaries), and the schedules (ReSTE's o, BiPer's two stages)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bnnfab.models.train.estimators import (  # noqa: E402
    ESTIMATORS,
    ApproxSignFunction,
    BiPer,
    BiPerSignFunction,
    ClippedSTE,
    ClippedSTEFunction,
    ReSTE,
    ReSTEFunction,
    make_estimator,
    reste_o,
    sign_pm1,
)
from bnnfab.models.train.layers import BinaryLinear  # noqa: E402

F32 = np.float32


def _up(v: float) -> float:
    return float(np.nextafter(F32(v), F32(np.inf)))


def _down(v: float) -> float:
    return float(np.nextafter(F32(v), F32(-np.inf)))


# boundaries of all estimators (0, 0.1, 1, 1.5), each with its float32 neighbours, and interior points
_POINTS = [0.0, 1e-7, 0.03, 0.1, 0.25, 0.5, 0.99, 1.0, 1.2, 1.5, 1.7, 2.0, 3.5]
_POINTS += [_up(v) for v in (0.1, 1.0, 1.5)] + [_down(v) for v in (0.1, 1.0, 1.5)]
GRID = np.array(sorted(set(_POINTS) | {-v for v in _POINTS}), dtype=F32)


def _run(fn, z: np.ndarray, *args):
    """Forward of ``fn`` on ``z`` and the gradient for a random upstream gradient."""
    x = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    y = fn(x, *args)
    upstream = torch.linspace(0.5, 2.0, len(z), dtype=torch.float32)
    y.backward(upstream)
    return y.detach().numpy(), x.grad.numpy().astype(np.float64), upstream.numpy().astype(np.float64)


def test_sign_pm1_maps_zero_to_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert sign_pm1(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]


def test_clipped_ste_forward_and_backward():
    y, g, up = _run(ClippedSTEFunction.apply, GRID)
    np.testing.assert_array_equal(y, np.where(GRID >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(g, up * (np.abs(GRID) <= 1.0))
    assert g[GRID == F32(1.0)][0] > 0 and g[GRID == F32(_up(1.0))][0] == 0  # |x| <= 1 inclusive


def _reste_formula(z: np.ndarray, o: float) -> np.ndarray:
    """ReSTE's backward (Wu et al., ICCV 2023), in float64, boundaries compared in float32."""
    a = np.abs(z.astype(np.float64))
    lo, hi = float(F32(0.1)), float(F32(1.5))
    out = np.zeros_like(a)
    mid = (a > lo) & (a <= hi)
    out[mid] = (1.0 / o) * a[mid] ** ((1.0 - o) / o)
    out[a <= lo] = 0.1 ** (1.0 / o) / 0.1  # secant slope of |z|^(1/o) over [0, 0.1]
    return out


@pytest.mark.parametrize("o", [1.0, 1.5, 2.0, 2.7, 3.0])
def test_reste_backward_matches_formula(o):
    y, g, up = _run(ReSTEFunction.apply, GRID, o, 1.5, 0.1)
    np.testing.assert_array_equal(y, np.where(GRID >= 0, 1.0, -1.0))
    np.testing.assert_allclose(g, up * _reste_formula(GRID, o), rtol=2e-6, atol=0)


def test_reste_regions_at_their_boundaries():
    o = 3.0
    z = np.array([0.1, _up(0.1), 1.5, _up(1.5), -0.1, -1.5, 0.0], dtype=F32)
    _, g, up = _run(ReSTEFunction.apply, z, o, 1.5, 0.1)
    g = g / up
    secant = 0.1 ** (1 / o) / 0.1
    assert g[0] == pytest.approx(secant, rel=1e-6)  # 0.1 itself: the secant region
    assert g[1] == pytest.approx((1 / o) * float(z[1]) ** ((1 - o) / o), rel=1e-6)  # just above: power law
    assert g[2] == pytest.approx((1 / o) * 1.5 ** ((1 - o) / o), rel=1e-6)  # 1.5 itself: still power law
    assert g[3] == 0.0  # beyond 1.5: zero
    assert g[4] == pytest.approx(secant, rel=1e-6) and g[5] == pytest.approx(g[2], rel=1e-6)  # symmetric
    assert g[6] == pytest.approx(secant, rel=1e-6)  # finite at 0, where |z|^((1-o)/o) is not


def test_reste_o_schedule():
    epochs = 8
    values = [reste_o(e, epochs) for e in range(epochs + 1)]
    for e, v in enumerate(values):
        assert v == pytest.approx(1 + 2 * (1 - math.cos(math.pi / 2 * e / epochs)), abs=1e-15)
    assert values[0] == 1.0 and values[-1] == pytest.approx(3.0)
    assert values[epochs // 2] == pytest.approx(1 + 2 * (1 - math.cos(math.pi / 4)))
    assert all(b > a for a, b in zip(values, values[1:]))
    assert reste_o(5, 10, o_end=5.0) == pytest.approx(1 + 4 * (1 - math.cos(math.pi / 4)))


def test_reste_estimator_uses_the_scheduled_o():
    est = ReSTE()
    est.set_epoch(6, 8)
    assert est.o == pytest.approx(reste_o(6, 8)) and est.schedule() == {"o": est.o}
    for method in (est.weight, est.activation):
        _, g, up = _run(method, GRID)
        np.testing.assert_allclose(g, up * _reste_formula(GRID, est.o), rtol=2e-6, atol=0)


OMEGA = 20.0
# zeros of sin(omega w) (float32-rounded), their neighbours, and generic points
W_GRID = np.array(
    sorted(
        {0.0, 0.01, -0.01, 0.05, -0.05, 0.3, -0.3, 1.0, -1.0}
        | {float(F32(k * math.pi / OMEGA)) for k in (-3, -2, -1, 1, 2, 3)}
        | {_up(k * math.pi / OMEGA) for k in (-1, 1)}
        | {_down(k * math.pi / OMEGA) for k in (-1, 1)}
    ),
    dtype=F32,
)


def test_biper_sign_forward_and_backward():
    y, g, up = _run(BiPerSignFunction.apply, W_GRID, OMEGA)
    ref_sin = torch.sin(OMEGA * torch.tensor(W_GRID)).numpy()
    np.testing.assert_array_equal(y, np.where(ref_sin >= 0, 1.0, -1.0))  # the square wave of the float32 sine
    assert y[W_GRID == 0][0] == 1.0  # sin(0) = 0 -> +1
    expected = up * OMEGA * np.cos(OMEGA * W_GRID.astype(np.float64))
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-4)


def test_approx_sign_backward():
    y, g, up = _run(ApproxSignFunction.apply, GRID)
    np.testing.assert_array_equal(y, np.where(GRID >= 0, 1.0, -1.0))
    np.testing.assert_allclose(g, up * np.maximum(0.0, 2.0 - 2.0 * np.abs(GRID.astype(np.float64))), rtol=1e-6, atol=1e-7)


def test_biper_two_stage_schedule():
    est = BiPer()  # stage 1: the paper's two thirds of the run
    assert [est.stage_at(e, 9) for e in range(9)] == [1] * 6 + [2] * 3
    assert [est.stage_at(e, 1) for e in range(1)] == [2]  # too short for a stage 1
    est = BiPer(stage1_epochs=2)
    assert [est.stage_at(e, 5) for e in range(5)] == [1, 1, 2, 2, 2]
    assert est.stage1_length(1) == 1
    est.set_epoch(1, 5)
    assert est.stage == 1 and est.schedule() == {"stage": 1}
    est.set_epoch(2, 5)
    assert est.stage == 2


def test_biper_stage1_is_real_sine_stage2_is_its_square_wave():
    est = BiPer(omega=OMEGA, stage1_epochs=1)
    est.set_epoch(0, 3)
    y1, g1, up = _run(est.weight, W_GRID)
    np.testing.assert_allclose(y1, np.sin(OMEGA * W_GRID.astype(np.float64)), atol=2e-6)  # real weights
    np.testing.assert_allclose(g1, up * OMEGA * np.cos(OMEGA * W_GRID.astype(np.float64)), rtol=1e-5, atol=1e-4)
    est.set_epoch(1, 3)
    y2, g2, _ = _run(est.weight, W_GRID)
    np.testing.assert_array_equal(y2, np.where(torch.sin(OMEGA * torch.tensor(W_GRID)).numpy() >= 0, 1.0, -1.0))
    np.testing.assert_allclose(g2, g1, rtol=1e-6, atol=1e-6)  # the same surrogate gradient
    # activations use Bi-Real's ApproxSign in both stages
    _, ga, upa = _run(est.activation, GRID)
    np.testing.assert_allclose(ga, upa * np.maximum(0.0, 2.0 - 2.0 * np.abs(GRID.astype(np.float64))), rtol=1e-6, atol=1e-7)


def test_ste_estimator_weights_and_activations():
    est = ClippedSTE()
    assert est.clip_weights
    for method in (est.weight, est.activation):
        _, g, up = _run(method, GRID)
        np.testing.assert_array_equal(g, up * (np.abs(GRID) <= 1.0))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_layer_trains_through_estimator_and_evaluates_binary(name):
    est = make_estimator(name)
    est.set_epoch(0, 4)  # biper: stage 1, real weights
    torch.manual_seed(0)
    layer = BinaryLinear(6, 3, est)
    x = torch.randn(5, 6)
    layer.train()
    y = layer(x)
    y.sum().backward()
    w = layer.weight.detach()
    expect_w = est.weight(w.clone().requires_grad_(True)).detach()
    torch.testing.assert_close(y.detach(), x @ expect_w.T)
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    layer.eval()
    wb = layer.binary_weight()
    assert set(wb.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(wb, sign_pm1(est.eval_weight_preimage(w)))
    xi = torch.randint(-255, 256, (5, 6)).float()  # evaluation takes ±1 or integer inputs
    torch.testing.assert_close(layer(xi), xi @ wb.T, rtol=0, atol=0)


def test_make_estimator_rejects_unknown_names_and_bad_params():
    with pytest.raises(ValueError, match="unknown estimator 'xnor'; choose one of ste, reste, biper"):
        make_estimator("xnor")
    with pytest.raises(ValueError, match="o_end must be >= 1"):
        make_estimator("reste", o_end=0.5)
    with pytest.raises(ValueError, match="omega must be positive"):
        make_estimator("biper", omega=0)
    assert make_estimator("biper", stage1_epochs=-1).stage1_epochs is None  # -1: the checkpoint's "default"
