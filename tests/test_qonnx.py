"""QONNX import: Brevitas-trained bnn_pynq-style models against ``qonnx``'s own executor.

Small models of the bnn_pynq kinds (TFC-like MLPs, a CNV-like conv net, odd widths, negative
BatchNorm gammas, TensorNorm with a negative scale, per-channel weight scales) are trained for a
few steps on the digits training split, exported with Brevitas ``export_qonnx`` through both of
torch's exporters (dynamo: Gemm; TorchScript: Transpose + MatMul), raw and after ``qonnx``
cleanup, imported, and run by ``bnnfab``'s simulator on every digits test image in the source
graph's own layout (NCHW float32 in [0, 1]): logits within 1e-5 of
``qonnx.core.onnx_exec.execute_onnx`` and the same classes. Hand-built graphs pin the errors.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("BREVITAS_JIT", "0")  # Brevitas exports only without its JIT

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxoptimizer")  # Brevitas' export step needs it
pytest.importorskip("qonnx")

from brevitas.core.restrict_val import RestrictValueType  # noqa: E402
from brevitas.core.scaling import ScalingImplType  # noqa: E402
from brevitas.core.stats import StatsOp  # noqa: E402
from brevitas.export import export_qonnx  # noqa: E402
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear  # noqa: E402
from brevitas.quant.binary import SignedBinaryWeightPerTensorConst  # noqa: E402
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant  # noqa: E402
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.custom_op.general.intquant import int_quant  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402
from torch import nn  # noqa: E402

from bnnfab.models import Conv2d, Dense, Flatten, FlattenOrder, MaxPool2d, Padding, load_model, save_model  # noqa: E402
from bnnfab.models.datasets import load_dataset  # noqa: E402
from bnnfab.models.ir import InputPrologue, ModelError  # noqa: E402
from bnnfab.models.qonnx import SUPPORTED_OPS, QonnxImportError, import_qonnx  # noqa: E402
from bnnfab.sim.functional import InputError, Simulator, simulate  # noqa: E402

# ----------------------------------------------------------------------------- the models


def _input_quant(kind: str) -> QuantIdentity:
    if kind == "q1.7":  # bnn_pynq CNV: signed 8-bit, full range, scale 2**-7
        return QuantIdentity(
            act_quant=CommonActQuant,
            bit_width=8,
            min_val=-1.0,
            max_val=1.0 - 2.0**-7,
            narrow_range=False,
            restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
        )
    if kind == "narrow":  # signed 8-bit, narrow range [-127, 127], scale 1/127
        return QuantIdentity(act_quant=CommonActQuant, bit_width=8)
    if kind == "unsigned":  # unsigned 8-bit, full range [0, 255], scale 1/255
        return QuantIdentity(act_quant=CommonActQuant, bit_width=8, signed=False, min_val=0.0, max_val=1.0, narrow_range=False)
    return QuantIdentity(act_quant=CommonActQuant, bit_width=1)  # bnn_pynq TFC: a binary input


def _sign() -> QuantIdentity:
    return QuantIdentity(act_quant=CommonActQuant, bit_width=1)


def _binary(cls, *args, **kw):
    return cls(*args, bias=False, weight_quant=kw.pop("weight_quant", CommonWeightQuant), weight_bit_width=1, **kw)


class TFC(nn.Module):
    """bnn_pynq FC: flatten, 2 x - 1, input quantizer, binary Linear/BN/sign blocks, TensorNorm."""

    def __init__(self, input_kind: str, hidden: tuple[int, ...]):
        super().__init__()
        self.inq = _input_quant(input_kind)
        blocks, k = [], 64
        for n in hidden:
            blocks += [_binary(QuantLinear, k, n), nn.BatchNorm1d(n), _sign()]
            k = n
        self.features = nn.Sequential(*blocks)
        self.out = _binary(QuantLinear, k, 10)
        self.tn = TensorNorm()

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        x = 2.0 * x - torch.tensor([1.0], device=x.device)
        return self.tn(self.out(self.features(self.inq(x))))


class CNV(nn.Module):
    """bnn_pynq CNV in small: convs with zero padding 1 and 0, max-pool on bits, flatten, FC."""

    def __init__(self, input_kind: str):
        super().__init__()
        self.inq = _input_quant(input_kind)
        self.features = nn.Sequential(
            _binary(QuantConv2d, 1, 7, 3, padding=1),
            nn.BatchNorm2d(7, eps=1e-4),
            _sign(),
            _binary(QuantConv2d, 7, 9, 3),
            nn.BatchNorm2d(9, eps=1e-4),
            _sign(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(_binary(QuantLinear, 81, 13), nn.BatchNorm1d(13, eps=1e-4), _sign())
        self.out = _binary(QuantLinear, 13, 10)
        self.tn = TensorNorm()

    def forward(self, x):
        x = 2.0 * x - torch.tensor([1.0], device=x.device)
        x = self.features(self.inq(x))
        x = x.view(x.shape[0], -1)
        return self.tn(self.out(self.fc(x)))


class PerChannelBinaryWeight(CommonWeightQuant):
    """Binary weights scaled per output channel by their mean magnitude."""

    scaling_impl_type = ScalingImplType.STATS
    scaling_stats_op = StatsOp.AVE
    scaling_per_output_channel = True


class HalfSign(CommonActQuant):
    """A sign with scale 0.5."""

    min_val = -0.5
    max_val = 0.5


class Scaled(nn.Module):
    """Scales everywhere: unsigned 8-bit input (1/255), per-channel weight scales, activations of
    0.5, weights of 0.1 in the last layer."""

    def __init__(self):
        super().__init__()
        self.inq = _input_quant("unsigned")
        self.fc = _binary(QuantLinear, 64, 21, weight_quant=PerChannelBinaryWeight)
        self.bn = nn.BatchNorm1d(21)
        self.act = QuantIdentity(act_quant=HalfSign, bit_width=1)
        self.out = QuantLinear(21, 10, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
        self.tn = TensorNorm()

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        return self.tn(self.out(self.act(self.bn(self.fc(self.inq(x))))))


class PoolFirst(nn.Module):
    """Conv, max-pool, then BatchNorm and sign: the pool sits before the sign."""

    def __init__(self):
        super().__init__()
        self.inq = _input_quant("q1.7")
        self.conv = _binary(QuantConv2d, 1, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(6, eps=1e-4)
        self.act = _sign()
        self.out = _binary(QuantLinear, 96, 10)
        self.tn = TensorNorm()

    def forward(self, x):
        x = 2.0 * x - torch.tensor([1.0], device=x.device)
        x = self.act(self.bn(self.pool(self.conv(self.inq(x)))))
        return self.tn(self.out(x.view(x.shape[0], -1)))


@functools.lru_cache(maxsize=None)
def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The digits in the bnn_pynq convention: NCHW float32 in [0, 1]."""
    ds = load_dataset("digits", split)
    return (ds.x.transpose(0, 3, 1, 2) / 255.0).astype(np.float32), ds.y


def _train(make, steps: int, seed: int) -> nn.Module:
    """``make()`` trained for ``steps`` Adam steps of 64 images: deterministic for a seed."""
    torch.manual_seed(seed)
    model = make()
    x, y = _digits("train")
    x, y = torch.tensor(x), torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _negate_channels(model: nn.Module, tensor_norm: bool) -> None:
    """Negative BatchNorm gammas without changing the function: for every third channel of each
    (layer, BatchNorm) pair negate the layer's weights, the running mean and gamma. With
    ``tensor_norm`` also negate the last layer and TensorNorm's mean and scale (a negative
    epilogue scale). A max-pool between layer and norm would not commute: not done there."""
    kinds = (QuantLinear, QuantConv2d, QuantIdentity, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, TensorNorm)
    mods = [m for m in model.modules() if isinstance(m, kinds)]  # in forward order
    with torch.no_grad():
        for layer, norm in zip(mods, mods[1:]):
            if isinstance(layer, (QuantLinear, QuantConv2d)) and isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
                idx = torch.arange(0, norm.num_features, 3)
                layer.weight[idx] *= -1
                norm.running_mean[idx] *= -1
                norm.weight[idx] *= -1
        if tensor_norm:
            model.out.weight.mul_(-1)
            model.tn.running_mean.mul_(-1)
            model.tn.weight.mul_(-1)


def _build(name: str) -> nn.Module:
    if name == "tfc":
        model = _train(lambda: TFC("q1.7", (33, 17)), 150, 1)
        _negate_channels(model, tensor_norm=False)
    elif name == "tfc-binary-input":
        model = _train(lambda: TFC("binary", (27,)), 150, 2)
        _negate_channels(model, tensor_norm=True)
    elif name == "tfc-narrow":
        model = _train(lambda: TFC("narrow", (19,)), 100, 3)
        _negate_channels(model, tensor_norm=False)
    elif name == "cnv":
        model = _train(lambda: CNV("q1.7"), 120, 4)
        _negate_channels(model, tensor_norm=True)
    elif name == "scaled":
        model = _train(Scaled, 100, 5)
    elif name == "pool-first":
        model = _train(PoolFirst, 100, 6)
        with torch.no_grad():  # gammas positive: the pool commutes with the sign
            model.bn.weight.abs_()
    else:
        raise KeyError(name)
    return model


class _one_thread:
    """Tiny models: torch's threads only contend with each other (and with the other jobs)."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads)


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    with _one_thread():
        return _build(name)


_EXPORT_DIR: list = []


@functools.lru_cache(maxsize=None)
def _export(name: str, exporter: str, batch: int | None = None) -> str:
    """The exported graph's path; the example input is the whole test split (so the graph's
    batch is 360 and execute_onnx runs every image at once) unless ``batch`` says otherwise."""
    x, _ = _digits("test")
    example = torch.tensor(x if batch is None else x[:batch])
    path = os.path.join(_EXPORT_DIR[0], f"{name}-{exporter}-{batch}.onnx")
    model = _model(name)
    with _one_thread():
        export_qonnx(model, example, export_path=path, dynamo=exporter == "dynamo")
    return path


@pytest.fixture(scope="module", autouse=True)
def _export_dir(tmp_path_factory):
    _EXPORT_DIR[:] = [str(tmp_path_factory.mktemp("qonnx"))]
    yield
    _export.cache_clear()


def _graph(name: str, exporter: str, cleaned: bool, batch: int | None = None) -> ModelWrapper:
    wrapper = ModelWrapper(_export(name, exporter, batch))
    return cleanup_model(wrapper) if cleaned else wrapper


def _execute(wrapper: ModelWrapper, x: np.ndarray, full: bool = False):
    """The reference: qonnx's executor (node by node: onnxruntime and qonnx's custom ops)."""
    ready = wrapper.transform(InferShapes())  # shapes only; the arithmetic is the graph's
    out = execute_onnx(ready, {ready.graph.input[0].name: x}, return_full_exec_context=full)
    return out if full else out[ready.graph.output[0].name]


# ------------------------------------------------------------------------- against execute_onnx

MODELS = ["tfc", "tfc-binary-input", "tfc-narrow", "cnv", "scaled"]
CASES = [(m, e, c) for m in MODELS for e in ("dynamo", "torchscript") for c in (False, True)]


@pytest.mark.parametrize("name, exporter, cleaned", CASES, ids=[f"{m}-{e}-{'clean' if c else 'raw'}" for m, e, c in CASES])
def test_simulate_reproduces_execute_onnx(name: str, exporter: str, cleaned: bool) -> None:
    x, y = _digits("test")
    graph = _graph(name, exporter, cleaned)
    model = import_qonnx(graph)
    want = _execute(graph, x)
    got = simulate(model, x)  # the source graph's inputs: NCHW float32
    np.testing.assert_allclose(got.logits, want, rtol=0, atol=1e-5)
    if name == "scaled":
        # float32 sums of non-power-of-two scales give equal integer scores slightly different
        # float logits: where the top score is tied, the graph's rounding noise picks the class.
        top = got.scores == got.scores.max(axis=1, keepdims=True)
        unique = top.sum(axis=1) == 1
        assert unique.mean() > 0.75
        np.testing.assert_array_equal(got.classes[unique], want.argmax(axis=1)[unique])
        assert top[np.arange(len(x)), want.argmax(axis=1)].all()
    else:
        np.testing.assert_array_equal(got.classes, want.argmax(axis=1))
    assert (got.classes == y).mean() > 0.5, "the trained model should beat chance by far"
    assert model.epilogue.preserves_order


def test_structure_of_an_imported_conv_net() -> None:
    model = import_qonnx(_graph("cnv", "dynamo", False))
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [Conv2d, Conv2d, MaxPool2d, Flatten, Dense, Dense]
    c0, c1, pool, flat, fc, out = model.layers
    assert c0.pads == (1, 1, 1, 1) and c0.padding is Padding.ZERO and c1.pads == (0, 0, 0, 0)
    assert c0.weights.shape == (7, 3, 3, 1) and c1.weights.shape == (9, 3, 3, 7)
    assert pool.kernel == (2, 2) and pool.stride == (2, 2) and flat.order is FlattenOrder.CHW
    assert model.input.shape == (8, 8, 1) and model.input.bits == 8 and model.input.signed
    assert model.prologue == InputPrologue(
        (1, 8, 8), (("mul", 2.0), ("sub", 1.0)), bits=8, scale=2.0**-7, zero_point=0.0, signed=True, narrow=False
    )
    assert model.prologue.describe() == (
        "(1, 8, 8) float32 -> *2 -1 -> Quant 8-bit signed full range, scale 0.0078125, zero point 0, half_even"
    )
    # The weights are the signs of the exported float weights, permuted (N, C, kh, kw) -> (N, kh, kw, C),
    # with the channels of negative BatchNorm gammas flipped (every third one, see _negate_channels).
    conv = _model("cnv").features[0]
    gamma = _model("cnv").features[1].weight.detach().numpy()
    signs = (conv.weight.detach().numpy() >= 0).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(c0.weights, signs ^ (gamma < 0)[:, None, None, None])
    assert (gamma < 0).any()


def test_negative_tensor_norm_scale_is_canonicalised() -> None:
    model = import_qonnx(_graph("tfc-binary-input", "torchscript", False))
    assert _model("tfc-binary-input").tn.weight.item() < 0
    assert model.epilogue.preserves_order and (model.epilogue.scale > 0).all()
    last = _model("tfc-binary-input").out.weight.detach().numpy()
    np.testing.assert_array_equal(model.layers[-1].weights, last < 0)  # flipped: bit 1 where the weight is negative
    assert model.input.binary and model.prologue.binary and model.prologue.ops == (("mul", 2.0), ("sub", 1.0))
    assert model.prologue.describe() == "(1, 8, 8) float32 -> *2 -1 -> sign (x >= 0)"


def test_scales_are_folded() -> None:
    model = import_qonnx(_graph("scaled", "dynamo", True))
    p = model.prologue
    assert (p.bits, p.signed, p.narrow, p.ops) == (8, False, False, ())
    assert p.scale == float(np.float32(1 / 255)) and model.input.value_range == (0, 255)
    # the epilogue carries the activation scale 0.5 and the weight scale 0.1 of the last layer
    tn = _model("scaled").tn
    want = 0.5 * float(np.float32(0.1)) * tn.weight.item() / np.sqrt(np.float32(tn.running_var.item() + tn.eps))
    np.testing.assert_allclose(model.epilogue.scale, abs(want), rtol=1e-6)


def test_batch_one_export() -> None:
    """The usual export, with a batch of 1 baked into the graph; the model takes any batch."""
    x, _ = _digits("test")
    graph = _graph("cnv", "torchscript", True, batch=1)
    model = import_qonnx(graph)
    assert model == import_qonnx(_graph("cnv", "torchscript", True))
    got = simulate(model, x[:12])
    for i in range(12):
        want = _execute(graph, x[i : i + 1])
        np.testing.assert_allclose(got.logits[i : i + 1], want, rtol=0, atol=1e-5)
        assert got.classes[i] == want.argmax()


def test_prologue_rounds_half_to_even_and_clips_like_the_graph() -> None:
    """Inputs on exact ties of the Q1.7 quantizer and beyond its range: the same codes as the
    graph's Quant node, and the same logits."""
    graph = _graph("tfc", "torchscript", False)
    model = import_qonnx(graph)
    n = 360
    k = np.arange(-140.0, 140.0) + 0.5  # codes of 2 x - 1 = k / 128: every one a tie, some clipped
    x = ((k / 128 + 1) / 2).astype(np.float32)
    assert np.array_equal((2 * x.astype(np.float64) - 1) * 128, k)  # the ties are exact in float32
    rng = np.random.default_rng(7)
    batch = rng.choice(np.concatenate([x, [-3.0, -0.0, 0.0, 2.5, 1.0, np.inf, -np.inf]]), size=(n, 1, 8, 8))
    batch = batch.astype(np.float32)
    ctx = _execute(graph, batch, full=True)
    quant = next(node for node in graph.graph.node if node.op_type == "Quant")
    codes = ctx[quant.output[0]] * 128
    mine = Simulator(model).check_inputs(batch)
    np.testing.assert_array_equal(mine, codes.reshape(n, 64))
    assert (mine == -128).any() and (mine == 127).any()  # clipped at both ends
    inside = np.abs(k) < 127  # and, independently of the graph, ties in range went to even
    np.testing.assert_array_equal(model.prologue.apply(x[None, inside], (int(inside.sum()),))[0], np.round(k[inside]))
    got = simulate(model, batch)
    np.testing.assert_allclose(got.logits, ctx[graph.graph.output[0].name], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.classes, ctx[graph.graph.output[0].name].argmax(axis=1))


@pytest.mark.parametrize("mode", ["ROUND", "HALF_UP", "HALF_DOWN", "UP", "DOWN", "FLOOR", "CEIL"])
@pytest.mark.parametrize(
    "signed, narrow, zero_point", [(True, True, 0.0), (True, False, 0.0), (False, False, 0.0), (False, True, 3.0)]
)
def test_prologue_quantizer_is_qonnx_quant(mode: str, signed: bool, narrow: bool, zero_point: float) -> None:
    """InputPrologue.apply against qonnx's own int_quant, on ties, clipping and signed zeros."""
    rounding = {"ROUND": "half_even"}.get(mode, mode.lower())
    scale = np.float32(2.0**-3)
    x = np.concatenate([np.arange(-300, 300) / 16, [-0.0, 0.0, 1e9, -1e9]]).astype(np.float32)
    p = InputPrologue((x.size,), (("mul", 2.0), ("sub", 1.0)), 5, float(scale), zero_point, signed, narrow, rounding)
    y = (x * np.float32(2.0)) - np.float32(1.0)
    q = int_quant(y[None], scale, np.float32(zero_point), np.float32(5), signed, narrow, mode)
    np.testing.assert_array_equal(p.apply(x[None], (x.size,)), (q / scale).astype(np.int64))
    lo, hi = p.code_range
    assert (lo, hi) == (int(q.min() / scale), int(q.max() / scale))


def test_round_trip_through_the_bnn_file(tmp_path) -> None:
    x, _ = _digits("test")
    model = import_qonnx(_graph("cnv", "dynamo", True))
    path = tmp_path / "cnv.bnn"
    save_model(model, path)
    back = load_model(path)
    assert back == model and back.prologue == model.prologue
    a, b = simulate(model, x), simulate(back, x)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.classes, b.classes)


def test_import_from_a_file_names_the_model(tmp_path) -> None:
    model = import_qonnx(_export("tfc", "torchscript"))
    assert model.name == "tfc-torchscript-None" and model.metadata["source"] == "qonnx"
    assert import_qonnx(_export("tfc", "torchscript"), name="tfc").name == "tfc"


def test_simulator_takes_the_source_layout() -> None:
    model = import_qonnx(_graph("cnv", "torchscript", True))
    x, _ = _digits("test")
    sim = Simulator(model)
    nhwc = x.transpose(0, 2, 3, 1)
    with pytest.raises(InputError, match=r"inputs must have shape \(batch, 1, 8, 8\), the source graph's own layout"):
        sim.check_inputs(nhwc)
    bad = x[:2].copy()
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(InputError, match=r"inputs must not be NaN \(sample 1\)"):
        sim.check_inputs(bad)
    with pytest.raises(InputError, match="inputs must be real numbers"):
        sim.check_inputs(np.full((1, 1, 8, 8), "a"))
    # float64 and integer inputs are cast to the graph's float32 first
    np.testing.assert_array_equal(sim.check_inputs(x.astype(np.float64)), sim.check_inputs(x))
    ones = np.ones((1, 1, 8, 8), int)
    np.testing.assert_array_equal(sim.check_inputs(ones), sim.check_inputs(ones.astype(np.float32)))


def test_max_pool_before_the_sign() -> None:
    """Conv -> MaxPool -> BatchNorm -> sign: OR of bits when every gamma is positive; an error
    naming the pool when one is negative (the pool would be an AND)."""
    x, _ = _digits("test")
    graph = _graph("pool-first", "torchscript", False)
    model = import_qonnx(graph)
    assert [type(layer) for layer in model.layers] == [Conv2d, MaxPool2d, Flatten, Dense]
    want = _execute(graph, x)
    got = simulate(model, x)
    np.testing.assert_allclose(got.logits, want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.classes, want.argmax(axis=1))
    proto = onnx.load(_export("pool-first", "torchscript"))
    bn = next(node for node in proto.graph.node if node.op_type == "BatchNormalization")
    gamma = next(init for init in proto.graph.initializer if init.name == bn.input[1])
    values = numpy_helper.to_array(gamma).copy()
    values[2] *= -1
    gamma.CopyFrom(numpy_helper.from_array(values, gamma.name))
    with pytest.raises(QonnxImportError, match=r"\(MaxPool\): does not commute with the sign .* channel 2 .* AND of bits"):
        import_qonnx(proto)


# ------------------------------------------------------------------------------- errors


def _tiny(*, hidden: list | None = None, weights: np.ndarray | None = None, output_norm: bool = False):
    """A hand-built QONNX MLP: Quant 8-bit input, Gemm (binary weights), BN, BipolarQuant, Gemm.
    ``hidden`` replaces the nodes between BN and the second Gemm; ``weights`` are the first
    Gemm's plain constant weights (no BipolarQuant)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(5, 4)).astype(np.float32) if weights is None else weights
    w2 = rng.normal(size=(3, 5)).astype(np.float32)
    inits = {
        "s": np.array(2.0**-7, np.float32),
        "zp": np.array(0.0, np.float32),
        "bw": np.array(8.0, np.float32),
        "one": np.array(1.0, np.float32),
        "w1": w1,
        "w2": w2,
        "g": np.array([1.0, -2.0, 0.5, 1.5, -1.0], np.float32),
        "b": np.array([0.1, 0.2, -0.3, 0.0, 0.25], np.float32),
        "m": np.array([0.5, -1.0, 0.0, 2.0, 0.1], np.float32),
        "v": np.array([1.0, 2.0, 0.5, 3.0, 1.5], np.float32),
        "g3": np.array([1.0, 2.0, 3.0], np.float32),
        "z3": np.zeros(3, np.float32),
        "o3": np.ones(3, np.float32),
    }
    q = "qonnx.custom_op.general"
    nodes = [
        helper.make_node(
            "Quant", ["x", "s", "zp", "bw"], ["xq"], domain=q, name="inq", signed=1, narrow=0, rounding_mode="ROUND"
        ),
        helper.make_node("BipolarQuant", ["w1", "one"], ["w1q"], domain=q, name="w1q"),
        helper.make_node("Gemm", ["xq", "w1q" if weights is None else "w1"], ["h"], name="fc1", transB=1),
        helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["hn"], name="bn1"),
    ]
    nodes += hidden if hidden is not None else [helper.make_node("BipolarQuant", ["hn", "one"], ["a"], domain=q, name="sign1")]
    nodes += [
        helper.make_node("BipolarQuant", ["w2", "one"], ["w2q"], domain=q, name="w2q"),
        helper.make_node("Gemm", ["a", "w2q"], ["y" if not output_norm else "y0"], name="fc2", transB=1),
    ]
    if output_norm:
        nodes.append(helper.make_node("BatchNormalization", ["y0", "g3", "z3", "z3", "o3"], ["y"], name="bn_out"))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(q, 1)])


@pytest.mark.parametrize("weights", [None, np.array([[0.5, -0.5, 0.5, 0.5]] * 3 + [[-2.0, 2.0, -2.0, 2.0]] * 2, np.float32)])
def test_the_hand_built_graph_imports_exactly(weights) -> None:
    """Weights behind BipolarQuant, or plain constants that are ±c per output channel."""
    proto = _tiny(weights=weights)
    model = import_qonnx(proto)
    x = np.random.default_rng(3).uniform(-1.2, 1.2, size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(simulate(model, x).logits, _execute(ModelWrapper(proto), x), rtol=0, atol=1e-5)
    assert model.layers[0].weights.shape == (5, 4) and model.prologue.source_shape == (4,)


Q = "qonnx.custom_op.general"
ERRORS = [
    (
        dict(hidden=[helper.make_node("Relu", ["hn"], ["a"], name="relu1")]),
        "node 'relu1' (Relu): op 'Relu' on data is not supported; bnnfab imports BipolarQuant, Quant, Gemm, MatMul, Conv",
    ),
    (
        dict(hidden=[helper.make_node("Quant", ["hn", "s", "zp", "bw"], ["a"], domain=Q, name="act4", signed=1, narrow=0)]),
        "node 'act4' (Quant): a Quant of 8 bits on a layer's value: bnnfab's hidden activations are binary (BipolarQuant)",
    ),
    (
        dict(weights=np.arange(20, dtype=np.float32).reshape(5, 4) - 7),
        "node 'fc1' (Gemm): weights are not binary: output channel 0 has magnitudes [4.0, 5.0, 6.0, 7.0]",
    ),
    (
        dict(hidden=[helper.make_node("Mul", ["hn", "hn"], ["a"], name="square")]),
        "node 'square' (Mul): joins two data paths; bnnfab imports a single chain of layers",
    ),
    (
        dict(output_norm=True),
        "node 'fc2': the output's per-class affine map (scale [",
    ),
    (
        dict(hidden=[helper.make_node("BipolarQuant", ["hn", "one"], ["a0"], domain=Q, name="sign1"),
                     helper.make_node("Add", ["a0", "one"], ["a"], name="shift")]),
        "node 'shift' (Add): Add by 1.0 on quantized values would leave the integer/binary domain",
    ),
    (
        dict(hidden=[helper.make_node("BipolarQuant", ["hn", "one"], ["a0"], domain=Q, name="sign1"),
                     helper.make_node("Transpose", ["a0"], ["a"], name="t", perm=[1, 0])]),
        "node 't' (Transpose): op 'Transpose' on data is not supported; bnnfab imports",
    ),
]


@pytest.mark.parametrize("kw, message", ERRORS, ids=["relu", "hidden-quant", "weights", "branch", "order", "shift", "transpose"])
def test_unsupported_graphs_name_node_op_and_rule(kw: dict, message: str) -> None:
    with pytest.raises(QonnxImportError) as info:
        import_qonnx(_tiny(**kw))
    assert message in str(info.value)
    assert info.value.__cause__ is None


def test_order_check_can_be_waived() -> None:
    proto = _tiny(output_norm=True)
    model = import_qonnx(proto, strict_argmax=False)
    assert not model.epilogue.preserves_order and "argmax" in model.metadata
    x = np.random.default_rng(4).uniform(-1, 1, size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(simulate(model, x).logits, _execute(ModelWrapper(proto), x), rtol=0, atol=1e-5)


def _conv_graph(**conv_attrs) -> "onnx.ModelProto":
    rng = np.random.default_rng(1)
    inits = {
        "one": np.array(1.0, np.float32),
        "w": rng.normal(size=(4, 2, 3, 3)).astype(np.float32),
        "w2": rng.normal(size=(3, 4 * 2 * 2)).astype(np.float32),
        "shape": np.array([1, -1], np.int64),
    }
    pool = conv_attrs.pop("pool", dict(kernel_shape=[2, 2], strides=[2, 2]))
    nodes = [
        helper.make_node("BipolarQuant", ["x", "one"], ["xq"], domain=Q, name="inq"),
        helper.make_node("BipolarQuant", ["w", "one"], ["wq"], domain=Q, name="wq"),
        helper.make_node("Conv", ["xq", "wq"], ["c"], name="conv", **{"kernel_shape": [3, 3], "pads": [1] * 4, **conv_attrs}),
        helper.make_node("BipolarQuant", ["c", "one"], ["a"], domain=Q, name="sign"),
        helper.make_node("MaxPool", ["a"], ["p"], name="pool", **pool),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
        helper.make_node("BipolarQuant", ["w2", "one"], ["w2q"], domain=Q, name="w2q"),
        helper.make_node("Gemm", ["f", "w2q"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(Q, 1)])


def test_hand_built_conv_graph_with_binary_input() -> None:
    proto = _conv_graph()
    model = import_qonnx(proto)
    assert model.input.binary and model.input.shape == (4, 4, 2) and model.prologue.source_shape == (2, 4, 4)
    x = np.random.default_rng(5).normal(size=(1, 2, 4, 4)).astype(np.float32)
    x[0, 0, 0, :2] = [0.0, -0.0]  # sign(±0) = +1
    np.testing.assert_allclose(simulate(model, x).logits, _execute(ModelWrapper(proto), x), rtol=0, atol=1e-5)


CONV_ERRORS = [
    (dict(group=2), "node 'conv' (Conv): group=2 is not supported; supported: Conv 2-D"),
    (dict(dilations=[2, 2], pads=[2, 2, 2, 2]), "node 'conv' (Conv): dilations=[2, 2] are not supported; supported: Conv 2-D"),
    (dict(auto_pad="SAME_UPPER", pads=None), "node 'conv' (Conv): auto_pad='SAME_UPPER' is not supported (give explicit pads)"),
    (
        dict(pool=dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0])),
        "node 'pool' (MaxPool): pads=[1, 1, 0, 0] are not supported (bnnfab pools have no padding); supported: MaxPool 2-D",
    ),
]


@pytest.mark.parametrize("kw, message", CONV_ERRORS, ids=["group", "dilations", "auto-pad", "pool-pads"])
def test_unsupported_conv_attributes(kw: dict, message: str) -> None:
    if kw.get("pads", 0) is None:
        kw = {k: v for k, v in kw.items() if k != "pads"}
        proto = _conv_graph(**kw)
        conv = next(n for n in proto.graph.node if n.op_type == "Conv")
        del conv.attribute[[a.name for a in conv.attribute].index("pads")]
    else:
        proto = _conv_graph(**kw)
    with pytest.raises(QonnxImportError) as info:
        import_qonnx(proto)
    assert message in str(info.value)


def test_files_that_are_not_onnx(tmp_path) -> None:
    with pytest.raises(QonnxImportError, match="no such ONNX file"):
        import_qonnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00not onnx at all")
    with pytest.raises(QonnxImportError, match="junk.onnx: not an ONNX model"):
        import_qonnx(junk)
    with pytest.raises(TypeError, match="import_qonnx takes a path, an onnx.ModelProto or a qonnx ModelWrapper, not int"):
        import_qonnx(3)


def test_supported_ops_are_documented() -> None:
    assert {"BipolarQuant", "Quant", "Gemm", "MatMul", "Conv", "BatchNormalization", "MaxPool", "Reshape", "Flatten"} <= set(
        SUPPORTED_OPS
    )


def test_prologue_rules() -> None:
    with pytest.raises(ModelError, match="a bipolar prologue \\(bits=1\\) takes the sign only; scale must stay 1.0"):
        InputPrologue((4,), bits=1, scale=0.5)
    with pytest.raises(ModelError, match="ops\\[0\\] must be \\(op, constant\\) with op one of add, sub, mul, div, rsub"):
        InputPrologue((4,), (("pow", 2.0),))
    with pytest.raises(ModelError, match="ops\\[0\\] constant must be a finite real number, not nan"):
        InputPrologue((4,), (("mul", float("nan")),))
    with pytest.raises(ModelError, match="rounding must be one of half_even"):
        InputPrologue((4,), bits=8, scale=1.0, rounding="ROUND")
    with pytest.raises(ModelError, match="scale 0.1 is not a float32 value \\(the prologue's dtype is float32\\)"):
        InputPrologue((4,), bits=8, scale=0.1)
    assert InputPrologue((4,), bits=8, scale=0.1, dtype="float64").scale == 0.1
