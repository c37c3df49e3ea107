"""Exact export of trained torch BNNs: on every test image the simulator's integer scores and
every layer's bits equal the torch evaluation model's, and its float logits agree within 1e-5
-- with negative gammas and scaling factors, constant channels, and exact ties (BN output 0 ->
+1, binarized pixel x - 128 == 0 -> +1) planted on purpose."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import naive  # noqa: E402
from bnnfab.models import Conv2d, Dense, load_model, save_model, threshold_from_affine  # noqa: E402
from bnnfab.models.datasets import load_dataset  # noqa: E402
from bnnfab.models.train import ExportError, build_model, export_model, fold_thresholds, ir_inputs  # noqa: E402
from bnnfab.models.train.estimators import ClippedSTE  # noqa: E402
from bnnfab.models.train.layers import BinaryConv2d, BinaryLinear, ScoreHead, SignBatchNorm  # noqa: E402
from bnnfab.sim.functional import simulate  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _few_steps(model, x, y, steps=4, lr=1e-2, seed=0):
    """A few real training steps: non-trivial latent weights and running statistics."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    for _ in range(steps):
        idx = torch.randperm(len(xt), generator=g)[:128]
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _dots_into(model, module, x):
    """The evaluation-mode integer dot products entering ``module`` (channel axis 1)."""
    seen = {}
    handle = module.register_forward_hook(lambda m, inp, out: seen.setdefault("dot", inp[0].detach().clone()))
    try:
        with torch.no_grad():
            model.eval()
            model(torch.from_numpy(x.astype(np.float32)))
    finally:
        handle.remove()
    return seen["dot"]


@torch.no_grad()
def _plant(model, x, seed=0):
    """Negative gammas and scaling factors, a constant channel, and exact ties, layer by layer.

    Returns ``{layer index: tie channels}`` and the number of (sample, position, channel) ties.
    """
    rng = np.random.default_rng(seed)
    ties, n_ties = {}, 0
    bns = [m for m in model.body if isinstance(m, SignBatchNorm)]
    for li, m in enumerate(bns):
        n = m.channels
        dot = _dots_into(model, m, x)  # (B, N) or (B, N, H, W)
        bn = m.bn
        bn.weight.mul_(torch.tensor([-1.0 if c % 5 in (2, 4) else 1.0 for c in range(n)]))  # 40% negative
        bn.bias.add_(torch.from_numpy(rng.normal(0, 0.2, n).astype(np.float32)))
        if m.alpha is not None:
            m.alpha.copy_(torch.from_numpy(rng.uniform(0.3, 2.0, n) * rng.choice([-1.0, 1.0], n)).float())
        bn.weight[0] = 0.0  # constant channel, fires iff beta >= 0
        chans = {}  # every third channel: its BN output is exactly 0 at an occurring dot product v
        for c in range(1, n, 3):
            values = dot[:, c].reshape(-1)
            v = float(values[rng.integers(len(values))])
            sign = 1.0
            if m.alpha is not None:
                sign = 1.0 if c % 2 else -1.0
                m.alpha[c] = sign  # +-1 keeps A = +-gamma/sqrt(var+eps): BN(alpha v) is exactly 0
            bn.running_mean[c] = sign * v
            bn.bias[c] = 0.0
            chans[c] = int(v)
            n_ties += int((values == v).sum())
        ties[li] = chans
    return ties, n_ties


def _check_exact(model, x):
    """Torch evaluation model vs the simulator (and the naive reference): bits, scores, logits."""
    ir = export_model(model)
    tr = model.trace(x)
    xs = ir_inputs(ir, x)
    sim = simulate(ir, xs, return_activations=True)
    assert len(tr["activations"]) == len(sim.activations) == len(ir.layers)
    for i, (a, b) in enumerate(zip(tr["activations"], sim.activations)):
        assert a.shape == b.shape, f"layer {i}"
        np.testing.assert_array_equal(a, b, err_msg=f"layer {i} ({ir.layers[i].kind})")
    np.testing.assert_array_equal(tr["scores"], sim.scores)
    np.testing.assert_allclose(sim.logits, tr["logits"], rtol=0, atol=1e-5)
    if ir.epilogue.preserves_order:
        np.testing.assert_array_equal(sim.classes, np.argmax(tr["logits"], axis=1))
    np.testing.assert_array_equal(sim.classes, tr["classes"])
    want = naive.infer(ir, xs)
    np.testing.assert_array_equal(want["scores"], sim.scores)
    return ir, tr


MODELS = {
    "tfc-8bit-scaling": dict(arch="tfc", hidden=(48, 32, 24), scaling=True),
    "tfc-binary-input-bnhead": dict(arch="tfc", hidden=(40, 24), input_bits=1, head="bn"),
    "tfc-reste": dict(arch="tfc", hidden=(32, 32), estimator="reste"),
    "cnv-8bit-scaling": dict(arch="cnv", width=0.125, scaling=True),
    "cnv-binary-input-bnhead-biper": dict(arch="cnv", width=0.125, input_bits=1, head="bn", estimator="biper"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_matches_torch_on_digits(name, digits):
    train, test = digits
    kw = dict(MODELS[name])
    arch = kw.pop("arch")
    torch.manual_seed(1)
    model = build_model(arch, (8, 8, 1), 10, **kw)
    model.estimator.set_epoch(0, 2)
    _few_steps(model, train.x, train.y)
    ties, n_ties = _plant(model, test.x)
    assert n_ties > 0  # dot == tau happens on the test images
    if kw.get("head") == "bn":
        with torch.no_grad():  # a negative per-class scale in the epilogue
            model.body[-1].bn.weight[3] = -abs(float(model.body[-1].bn.weight[3]))
    ir, tr = _check_exact(model, test.x)
    compute = [l for l in ir.layers if isinstance(l, (Dense, Conv2d))]
    bns = [m for m in model.body if isinstance(m, SignBatchNorm)]
    for li, (layer, m) in enumerate(zip(compute, bns)):
        a, b = (v.numpy() for v in m.affine64())
        r = layer.k * (255 if li == 0 and kw.get("input_bits", 8) == 8 else 1)
        assert layer.thresholds[0] in (-r, r + 1)  # gamma == 0: constant channel
        assert (layer.thresholds[0] == -r) == (b[0] >= 0)
        for c, v in ties[li].items():  # fires at dot == v (BN output exactly 0 -> +1)
            assert layer.thresholds[c] == (v if a[c] > 0 else -v)
        flipped = a < 0
        assert flipped.any() and (~flipped).any()
        w_torch = _torch_bits(model, li)
        np.testing.assert_array_equal(layer.weights_2d, np.where(flipped[:, None], ~w_torch, w_torch))
    if kw.get("input_bits") == 1:
        assert (test.x == 128).any()  # x - 128 == 0 binarizes to +1 on both sides
        assert ir.input.binary and ir.metadata["input_offset"] == "128.0"
    if kw.get("head") == "bn":
        assert not ir.epilogue.preserves_order
    else:
        assert ir.epilogue.preserves_order


def _torch_bits(model, li):
    m = [c for c in model.body if isinstance(c, (BinaryLinear, BinaryConv2d))][li]
    w = m.binary_weight() > 0
    if isinstance(m, BinaryConv2d):
        w = w.permute(0, 2, 3, 1)
    return w.reshape(w.shape[0], -1).numpy()


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("input_bits", [8, 1])
def test_cnv_sized_for_mnist_and_cifar_exports_exactly(shape, input_bits):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (24,) + shape).astype(np.uint8)
    x[0, :4, :4, :] = 128  # binarized input ties
    torch.manual_seed(2)
    model = build_model("cnv", shape, 10, width=1 / 16, input_bits=input_bits, scaling=True)
    model.train()
    with torch.no_grad():  # running statistics of random weights
        for _ in range(3):
            model(torch.from_numpy(x.astype(np.float32)))
    _plant(model, x, seed=3)
    ir, _ = _check_exact(model, x)
    convs = [l for l in ir.layers if isinstance(l, Conv2d)]
    assert len(convs) == 6 and ir.shapes[-1] == (10,)
    pads = [c.pads[0] for c in convs]
    assert pads == ([2, 0, 0, 0, 0, 0] if shape[0] == 28 else [0] * 6)


def test_full_size_topologies_build_and_export():
    for arch, n_hidden in (("tfc", 64), ("sfc", 256), ("lfc", 1024)):
        ir = export_model(build_model(arch, (28, 28, 1), 10).eval())
        assert [l.n for l in ir.layers if isinstance(l, Dense)] == [n_hidden] * 3 + [10]
    ir = export_model(build_model("cnv", (32, 32, 3), 10).eval())
    assert [l.n for l in ir.layers if isinstance(l, (Dense, Conv2d))] == [64, 64, 128, 128, 256, 256, 512, 512, 10]
    assert ir.shapes[-2] == (512,)


def _bn_sign(gamma, beta, mean, var, alpha=None):
    m = SignBatchNorm(len(gamma), ClippedSTE(), spatial=False, scaling=alpha is not None)
    with torch.no_grad():
        m.bn.weight.copy_(torch.tensor(gamma, dtype=torch.float32))
        m.bn.bias.copy_(torch.tensor(beta, dtype=torch.float32))
        m.bn.running_mean.copy_(torch.tensor(mean, dtype=torch.float32))
        m.bn.running_var.copy_(torch.tensor(var, dtype=torch.float32))
        if alpha is not None:
            m.alpha.copy_(torch.tensor(alpha, dtype=torch.float32))
    return m.eval()


def _decisions(m, r):
    d = torch.arange(-r, r + 1, dtype=torch.float64)
    return m.decide(d[:, None].expand(-1, m.channels).contiguous()).numpy()  # (2r+1, N)


def test_fold_thresholds_by_hand():
    r = 10
    #          t=3   dot<=3  const+  const-  tau=2.5  dot<=2.5  alpha<0: dot<=-3 never always
    gamma = [1.0, -1.0, 0.0, 0.0, 1.0, -2.0, 1.0, 1.0, 1.0]
    beta = [0.0, 0.0, 0.5, -0.5, -0.5, 1.0, 0.0, -100.0, 100.0]
    mean = [3.0, 3.0, 0.0, 0.0, 3.0, 3.0, 3.0, 0.0, 0.0]
    alpha = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0]
    m = _bn_sign(gamma, beta, mean, [1 - 1e-5] * 9, alpha)  # var + eps == 1 (to float rounding)
    t, flip = fold_thresholds(m, r)
    assert flip.tolist() == [False, True, False, False, False, True, True, False, False]
    a, b = (v.numpy() for v in m.affine64())
    assert t[0] == 3 and t[1] == -3 and t[2] == -r and t[3] == r + 1
    assert t[4] == int(np.ceil(-b[4] / a[4])) and t[5] == -int(np.floor(-b[5] / a[5]))
    assert t[6] == 3 and t[7] == r + 1 and t[8] == -r
    fires = _decisions(m, r)  # the torch decision at every dot in [-r, r]
    d = np.arange(-r, r + 1)[:, None]
    np.testing.assert_array_equal(fires, np.where(flip, -d, d) >= t)


def test_fold_thresholds_where_ceil_of_rounded_tau_is_wrong():
    """BN output exactly 0 at an integer mean, yet -B/A rounds below the mean: ceil(tau) would put
    the tie on the wrong side; bisection on the decision itself does not."""
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.1, 3, 20000).astype(np.float32)
    var = rng.uniform(0.01, 100, 20000).astype(np.float32)
    mean = rng.integers(-60, 60, 20000).astype(np.float32)
    m = _bn_sign(gamma, np.zeros(20000, np.float32), mean, var)
    a, b = (v.numpy() for v in m.affine64())
    t_naive, _ = threshold_from_affine(a, -b / a)
    t, flip = fold_thresholds(m, 64)
    assert not flip.any()
    np.testing.assert_array_equal(t, mean.astype(np.int64))  # exactly the tie
    assert (t_naive != t).sum() > 100  # the trap is common, not hypothetical
    sub = np.flatnonzero(t_naive != t)[:50]
    fires = _decisions(_bn_sign(gamma[sub], np.zeros(50, np.float32), mean[sub], var[sub]), 64)
    np.testing.assert_array_equal(fires, np.arange(-64, 65)[:, None] >= t[sub])


def test_export_round_trips_through_the_model_file(tmp_path, digits):
    _, test = digits
    torch.manual_seed(0)
    model = build_model("tfc", (8, 8, 1), 10, hidden=(16, 16)).eval()
    ir = export_model(model, name="tiny", metadata={"note": "test"})
    path = tmp_path / "tiny.bnn"
    save_model(ir, path)
    back = load_model(path)
    assert back == ir and back.metadata["note"] == "test" and back.metadata["source"] == "bnnfab.models.train"
    np.testing.assert_array_equal(simulate(back, test.x).scores, model.trace(test.x)["scores"])


def test_export_rejects_what_it_cannot_reproduce():
    with pytest.raises(ExportError, match="takes a bnnfab BNN"):
        export_model(torch.nn.Linear(2, 2))
    model = build_model("tfc", (8, 8, 1), 10, hidden=(8,)).eval()
    del model.body[-1]  # no ScoreHead
    with pytest.raises(ExportError, match="must end with a compute layer and a ScoreHead"):
        export_model(model)
    big = build_model("tfc", (257, 257, 1), 10, hidden=(2,)).eval()  # 255 * 257**2 >= 2**24
    with pytest.raises(ExportError, match="exceed 2\\*\\*24"):
        export_model(big)
    assert isinstance(big.body[-1], ScoreHead)
