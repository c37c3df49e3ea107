"""Images per second of the functional simulator against onnxruntime on the same imported QONNX model.

Usage::

    python bench/onnx_compare.py [--quick] [--nets lfc,cnv] [--batch B] [--threads 1,2]
                                 [--repeats R] [--qonnx-images N] [--seed S] [--json PATH]

For each network (``--nets``; default ``lfc,cnv``):

1. a bnn_pynq-style Brevitas model is built with random weights and random BatchNorm statistics
   (accuracy is not the point here, equality is) and exported with ``export_qonnx`` (TorchScript
   exporter, batch 1). Networks: ``lfc`` (bnn_pynq LFC: binary 28x28 input, 3 x 1024 binary
   hidden units, 10 outputs, TensorNorm), ``sfc`` (the same with 3 x 256), ``cnv`` (bnn_pynq CNV
   cut to a 1x28x28 8-bit input: conv 64, 64, pool, 128, 128, pool, 256, FC 512, 512, 10) and
   ``tiny`` (one hidden layer of 64, for tests);
2. bnnfab imports the file (:func:`bnnfab.models.qonnx.import_qonnx`) and runs it with
   :class:`bnnfab.sim.functional.Simulator`;
3. onnxruntime cannot run QONNX's ``Quant``/``BipolarQuant`` custom ops, so the same graph is
   rewritten into standard ONNX it runs natively, three ways, all timed:

   * **float32**: qonnx's ``cleanup_model(preserve_qnt_ops=False)`` folds the weight quantizers
     into constant ±c float weights; qonnx's ``QuantToQCDQ`` turns the 8-bit input ``Quant`` into
     QuantizeLinear/Clip/DequantizeLinear; every ``BipolarQuant`` becomes
     ``Where(GreaterOrEqual(x, 0), s, -s)`` (qonnx has no standard-op rewrite for it; ``Sign``
     would give 0 at 0). onnxruntime then fuses BatchNorm into the GEMMs itself;
   * **int8**: the float32 graph with every MatMul/Conv whose input is a sign (possibly through
     MaxPool/Reshape) replaced by ``MatMulInteger``/``ConvInteger`` on uint8 activations
     ``{0, 2}`` with zero point 1 (exactly ±1, and zero padding stays 0) and int8 ±1 weights, then
     ``Cast`` and a per-channel ``Mul`` by the weight magnitude: the exact integer dot products
     on onnxruntime's u8 x s8 kernels (VNNI where the CPU has it): for MatMul its fastest CPU
     path; its ConvInteger turned out slower than its float32 Conv. The first layer of ``cnv``
     takes 8-bit codes and stays float32;
   * **int8+thr**: the int8 graph streamlined as FINN would do it: each hidden layer's integer
     dot product goes straight into ``GreaterOrEqual`` with an integer threshold per channel (the
     Cast/scale/BatchNorm chain removed), the output layer through ``Cast, Mul, Add``. Its
     weights' channel flips, thresholds and output affine map are taken from bnnfab's imported
     model (the exact switch points of the graph's arithmetic), so this graph depends on the
     importer; the check below still compares it with the simulator, like the other two.

   Sessions use ``ORT_ENABLE_ALL`` graph optimizations, ``intra_op_num_threads`` = the thread
   count of the row (the simulator's Numba threads are set to the same), sequential execution.
4. Before any timing, each onnxruntime graph's outputs on the whole benchmark batch are checked
   against the simulator's: same class on every image whose top integer score is unique (on a
   tie the graph's float32 rounding picks among the tied classes, and its pick must be one of
   them) and logits within 1e-5 relative to the largest. A graph that differs is reported and
   not timed, and the exit status is 1.
5. Timing is end to end on the same float32 NCHW batch: ``Simulator.run(x)`` (input checks,
   quantisation, packing, every layer, epilogue) against ``session.run`` (input to logits). The
   candidates run interleaved, round by round, with a 50 ms pause between calls (onnxruntime's
   and Numba's idle workers spin a while after a call), after one warm-up call each; each
   figure is the median of ``--repeats`` rounds (default 5). ``qonnx``'s ``execute_onnx`` (node
   by node, its custom ops in numpy) is timed on ``--qonnx-images`` images one at a time, for
   reference.

6. A **ceiling** bounds what any bit-exact simulator can reach here: the C AVX-512 reference
   kernel of ``bench/sim_throughput.py`` (the machine's XNOR-popcount limit) is timed on each
   binary layer's own GEMM shape (M = batch x output positions, N, K), and the images/s of a
   program that spent only that time (input, integer layer, thresholds, pooling and output free)
   is printed with its ratio to the fastest onnxruntime graph. Where that ratio is below the goal,
   the goal is out of reach on this machine whatever the simulator does.

The goal line asks for the simulator at >= 20x the fastest onnxruntime graph at every thread
count. The machine may be shared: compare figures from one run only (the load average is
printed). ``--quick`` runs ``tiny`` with batch 256, 3 repeats, all threads only (a few seconds
plus imports). Nothing is written unless ``--json PATH`` is given; the exported and rewritten
graphs go to a temporary folder removed at exit.
"""

from __future__ import annotations

import os

os.environ.setdefault("BREVITAS_JIT", "0")  # Brevitas exports only without its JIT

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

try:
    from _results import machine_info, metric, threads, write_json  # run as a script: bench/ is on sys.path
except ImportError:  # pragma: no cover - imported as bench.onnx_compare
    from bench._results import machine_info, metric, threads, write_json

GOAL = 20.0  # simulator vs the fastest onnxruntime graph, images/s
PAUSE = 0.05  # seconds between timed calls
REQUIRED = ("torch", "brevitas", "onnx", "onnxruntime", "qonnx", "onnxscript")


class BenchSetupError(RuntimeError):
    """A missing package or an unusable option: the message names it and the fix."""


# --------------------------------------------------------------------------------------------
# Networks


@dataclass(frozen=True)
class Net:
    """A bnn_pynq-style network: ``convs`` (channels, or "P" for a 2x2 max-pool) then ``fcs``."""

    name: str
    description: str
    input_kind: str  # "binary" (sign of 2x - 1) or "q1.7" (bnn_pynq CNV's 8-bit input)
    convs: tuple = ()
    fcs: tuple = ()
    batch: int = 4096

    def layout(self) -> str:
        parts = ["1x28x28 " + ("binary" if self.input_kind == "binary" else "8-bit")]
        parts += [("pool" if c == "P" else f"conv{c}") for c in self.convs]
        parts += [f"fc{n}" for n in self.fcs] + ["fc10"]
        return " -> ".join(parts)


NETS = {
    "lfc": Net("lfc", "bnn_pynq LFC: binary input, 3 x 1024 hidden", "binary", fcs=(1024, 1024, 1024), batch=4096),
    "sfc": Net("sfc", "bnn_pynq SFC: binary input, 3 x 256 hidden", "binary", fcs=(256, 256, 256), batch=8192),
    "cnv": Net(
        "cnv",
        "bnn_pynq CNV cut to 28x28x1: 8-bit input, 5 binary convs, 2 binary FC",
        "q1.7",
        convs=(64, 64, "P", 128, 128, "P", 256),
        fcs=(512, 512),
        batch=256,
    ),
    "tiny": Net("tiny", "binary input, one hidden layer of 64 (tests)", "binary", fcs=(64,), batch=256),
}


def _require() -> dict[str, str]:
    """Versions of the packages this bench needs; a clear error naming the missing ones."""
    versions, missing = {}, []
    for name in REQUIRED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise BenchSetupError(
            f"onnx_compare needs {', '.join(missing)} (pip install -e '.[dev]' installs them)"
        )
    return versions


def build_torch(net: Net, seed: int):
    """The Brevitas module of ``net`` with random weights and random BatchNorm statistics (so
    thresholds are arbitrary reals and some gammas negative, as after training)."""
    import torch
    from brevitas.core.restrict_val import RestrictValueType
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
    from torch import nn

    def sign():
        return QuantIdentity(act_quant=CommonActQuant, bit_width=1)

    def binary(cls, *args, **kw):
        return cls(*args, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1, **kw)

    class BnnPynq(nn.Module):
        def __init__(self):
            super().__init__()
            if net.input_kind == "binary":
                self.inq = sign()
            else:
                self.inq = QuantIdentity(
                    act_quant=CommonActQuant, bit_width=8, min_val=-1.0, max_val=1.0 - 2.0**-7,
                    narrow_range=False, restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
                )
            convs, c, side = [], 1, 28
            for ch in net.convs:
                if ch == "P":
                    convs.append(nn.MaxPool2d(2))
                    side //= 2
                else:
                    convs += [binary(QuantConv2d, c, ch, 3), nn.BatchNorm2d(ch, eps=1e-4), sign()]
                    c, side = ch, side - 2
            self.convs = nn.Sequential(*convs)
            fcs, k = [], c * side * side
            for n in net.fcs:
                fcs += [binary(QuantLinear, k, n), nn.BatchNorm1d(n, eps=1e-4), sign()]
                k = n
            self.fcs = nn.Sequential(*fcs)
            self.out = binary(QuantLinear, k, 10)
            self.tn = TensorNorm()

        def forward(self, x):
            x = 2.0 * x - torch.tensor([1.0], device=x.device)
            x = self.inq(x if net.convs else x.view(x.shape[0], -1))
            x = self.convs(x)
            x = self.fcs(x.view(x.shape[0], -1))
            return self.tn(self.out(x))

    torch.manual_seed(seed)
    model = BnnPynq()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        for layer, norm in zip(layers, norms):
            n = norm.num_features
            k = layer.weight[0].numel()
            u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
            norm.running_mean.copy_(u(-0.3, 0.3) * k**0.5)
            norm.running_var.copy_(u(0.5, 1.5) * k)
            norm.weight.copy_(u(0.5, 1.5) * torch.where(torch.rand(n, generator=gen) < 0.2, -1.0, 1.0))
            norm.bias.copy_(u(-0.2, 0.2))
        k = layers[-1].weight[0].numel()
        model.tn.running_mean.fill_(0.3)
        model.tn.running_var.fill_(float(k))
        model.tn.weight.fill_(2.0)
        model.tn.bias.fill_(0.1)
    return model.eval()


def export(net: Net, seed: int, folder: Path) -> Path:
    """The QONNX file of ``net`` (Brevitas ``export_qonnx``, TorchScript exporter, batch 1)."""
    import torch
    from brevitas.export import export_qonnx

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_torch(net, seed)
        path = folder / f"{net.name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_qonnx(model, torch.rand(1, 1, 28, 28), export_path=str(path), dynamo=False)
    finally:
        torch.set_num_threads(torch_threads)
    return path


# --------------------------------------------------------------------------------------------
# Standard-ONNX rewrites of the QONNX graph


@dataclass
class Rewrite:
    """A standard-ONNX graph and what the rewrite did."""

    model: Any  # onnx.ModelProto
    signs: dict[str, tuple[str, float]] = field(default_factory=dict)  # sign output -> (its GreaterOrEqual output, scale)
    notes: list[str] = field(default_factory=list)

    def op_counts(self) -> str:
        counts: dict[str, int] = {}
        for node in self.model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _topo_sort(nodes: list, graph_inputs: set[str], initializers: set[str]) -> list:
    """``nodes`` in an order where every input is produced before it is used (stable)."""
    ready = set(graph_inputs) | set(initializers) | {""}
    pending, out = list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise BenchSetupError(f"rewritten graph has a cycle or a missing input at node {rest[0].name!r}")
        pending = rest
    return out


def _prune(graph) -> None:
    """Drop nodes whose outputs nothing uses, and initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def to_float_onnx(qonnx_path: Path) -> Rewrite:
    """The QONNX graph as standard ONNX in float32 (see the module docstring)."""
    import onnx
    from onnx import helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    wrapper = cleanup_model(ModelWrapper(str(qonnx_path)), preserve_qnt_ops=False)  # weight quantizers -> constants
    notes = []
    if wrapper.get_nodes_by_op_type("Quant"):
        from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapper = wrapper.transform(QuantToQCDQ())
        notes.append("input Quant -> QuantizeLinear/Clip/DequantizeLinear (qonnx QuantToQCDQ)")
    graph = wrapper.graph
    inits = {i.name: i for i in graph.initializer}
    signs: dict[str, tuple[str, float]] = {}
    nodes = []
    zero = "bnnfab_zero"
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), zero))
    for node in graph.node:
        if node.op_type == "BipolarQuant":
            scale = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
            if scale.size != 1:
                raise BenchSetupError(f"{node.name}: BipolarQuant with {scale.size} scales; this rewrite takes one")
            s = float(scale[0])
            ge, pos, neg = f"{node.name}_ge", f"{node.name}_pos", f"{node.name}_neg"
            graph.initializer.extend([numpy_helper.from_array(np.array(s, np.float32), pos),
                                      numpy_helper.from_array(np.array(-s, np.float32), neg)])
            nodes.append(helper.make_node("GreaterOrEqual", [node.input[0], zero], [ge], name=ge))
            nodes.append(helper.make_node("Where", [ge, pos, neg], [node.output[0]], name=node.name))
            signs[node.output[0]] = (ge, s)
        elif node.domain not in ("", "ai.onnx"):
            raise BenchSetupError(f"{node.name}: {node.domain}.{node.op_type} has no standard-ONNX rewrite here")
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    notes.append(f"{len(signs)} BipolarQuant -> Where(GreaterOrEqual(x, 0), s, -s)")
    _dynamic_batch(wrapper)
    model = wrapper.model
    version = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] + [13])
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", version))
    _prune(model.graph)
    onnx.checker.check_model(model)
    return Rewrite(model, signs, notes)


def _dynamic_batch(wrapper) -> None:
    """Batch 1 of the export -> a symbolic batch: inputs/outputs, and Reshape shapes (0 = copy)."""
    graph = wrapper.graph
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    del graph.value_info[:]
    for node in wrapper.get_nodes_by_op_type("Reshape"):
        shape = wrapper.get_initializer(node.input[1])
        if shape is not None and shape.size and shape[0] == 1:
            shape = shape.copy()
            shape[0] = 0  # copy the batch dimension of the input
            wrapper.set_initializer(node.input[1], shape)


def to_int8_onnx(base: Rewrite) -> Rewrite:
    """``base`` with binary MatMul/Conv layers on onnxruntime's integer kernels (module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(base.model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    new_nodes: list = []
    u8_names: dict[str, str | None] = {}

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        inits[name] = graph.initializer[-1]
        return name

    two, nought = const("bnnfab_u8_two", np.array(2, np.uint8)), const("bnnfab_u8_zero", np.array(0, np.uint8))
    one = const("bnnfab_u8_one", np.array(1, np.uint8))

    def u8_of(tensor: str) -> str | None:
        """A uint8 {0, 2} tensor equal to ``tensor``'s signs, or None when it is not a sign."""
        if tensor in u8_names:
            return u8_names[tensor]
        out = None
        if tensor in base.signs:
            ge, s = base.signs[tensor]
            if s > 0:
                out = f"{tensor}_u8"
                new_nodes.append(helper.make_node("Where", [ge, two, nought], [out], name=out))
        else:
            node = producer.get(tensor)
            if node is not None and node.op_type in ("MaxPool", "Reshape", "Flatten", "Identity"):
                src = u8_of(node.input[0])
                if src is not None and len(node.output) == 1:
                    out = f"{tensor}_u8"
                    new_nodes.append(helper.make_node(
                        node.op_type, [src, *node.input[1:]], [out], name=out, domain=node.domain
                    ))
                    new_nodes[-1].attribute.extend(node.attribute)
        u8_names[tensor] = out
        return out

    converted = kept = 0
    for node in list(graph.node):
        if node.op_type not in ("MatMul", "Conv") or len(node.input) < 2 or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        axis = 1 if node.op_type == "MatMul" else 0  # output channels: MatMul (K, N), Conv (N, C, kh, kw)
        mags = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        src = u8_of(node.input[0])
        if src is None or attrs.get("group", 1) != 1 or not (mags == mags[:, :1]).all() or not (mags[:, 0] > 0).all():
            kept += 1
            new_nodes.append(node)
            continue
        out = node.output[0]
        w8 = const(f"{node.name}_w_s8", np.sign(w).astype(np.int8))
        scale = mags[:, 0].astype(np.float32)
        if node.op_type == "Conv":
            scale = scale.reshape(1, -1, 1, 1)
            integer = helper.make_node("ConvInteger", [src, w8, one], [f"{out}_i32"], name=f"{node.name}_int")
            integer.attribute.extend(a for a in node.attribute if a.name != "group")
        else:
            integer = helper.make_node("MatMulInteger", [src, w8, one], [f"{out}_i32"], name=f"{node.name}_int")
        sc = const(f"{node.name}_scale", scale)
        cast = helper.make_node("Cast", [f"{out}_i32"], [f"{out}_f32"], name=f"{node.name}_cast", to=TensorProto.FLOAT)
        has_bias = node.op_type == "Conv" and len(node.input) > 2 and node.input[2]
        mul = helper.make_node("Mul", [f"{out}_f32", sc], [f"{out}_scaled" if has_bias else out], name=f"{node.name}_mul")
        new_nodes += [integer, cast, mul]
        if has_bias:
            bias = numpy_helper.to_array(inits[node.input[2]]).reshape(1, -1, 1, 1)
            new_nodes.append(helper.make_node("Add", [f"{out}_scaled", const(f"{node.name}_bias4", bias)], [out]))
        converted += 1
    graph_inputs = {i.name for i in graph.input}
    ordered = _topo_sort(new_nodes, graph_inputs, set(inits))
    del graph.node[:]
    graph.node.extend(ordered)
    _prune(graph)
    onnx.checker.check_model(model)
    notes = [f"{converted} binary MatMul/Conv -> MatMulInteger/ConvInteger (u8 {{0,2}} zero point 1 x s8 ±1)"]
    if kept:
        notes.append(f"{kept} MatMul/Conv kept in float32 (input not a sign, e.g. the 8-bit first layer)")
    return Rewrite(model, dict(base.signs), notes)


_CHAIN_OPS = ("Cast", "Mul", "Add", "Sub", "Div", "BatchNormalization")


def to_threshold_onnx(base: Rewrite, model) -> Rewrite:
    """``base`` (the int8 graph) streamlined as FINN would: each binary layer's integer dot
    product compared with an integer threshold, the float chain after it (Cast, scale,
    BatchNorm, ...) gone; the output layer's scores through ``Cast, Mul, Add`` of the epilogue.
    Weights (with their channel flips) and thresholds are those of bnnfab's imported ``model``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bnnfab.models import Conv2d, Padding

    out_model = onnx.ModelProto()
    out_model.CopyFrom(base.model)
    graph = out_model.graph
    integer = [n for n in graph.node if n.op_type in ("MatMulInteger", "ConvInteger")]
    layers = [layer for i, layer in model.compute_layers if not model.takes_integers(i)]
    if len(integer) != len(layers):
        raise BenchSetupError(f"threshold rewrite: {len(integer)} integer MatMul/Conv nodes but {len(layers)} binary layers")
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    sign_ges = {ge for ge, _ in base.signs.values()}

    def follow(tensor: str):
        """The GreaterOrEqual of a sign after ``tensor``'s chain of elementwise ops, or the graph
        output it ends in (and None)."""
        while tensor not in outputs:
            nxt = consumers.get(tensor, [])
            if len(nxt) != 1:
                return None, None
            node = nxt[0]
            if node.op_type == "GreaterOrEqual" and node.output[0] in sign_ges:
                return node, None
            if node.op_type not in _CHAIN_OPS:
                return None, None
            tensor = node.output[0]
        return None, tensor

    new_inits = []
    replaced: dict[str, Any] = {}
    for node, layer in zip(integer, layers):
        conv = node.op_type == "ConvInteger"
        w = np.where(layer.weights, 1, -1).astype(np.int8)  # (N, K) or (N, kh, kw, C)
        w = w.transpose(0, 3, 1, 2) if conv else w.T
        old = numpy_helper.to_array(next(i for i in graph.initializer if i.name == node.input[1]))
        if old.shape != w.shape or (conv and isinstance(layer, Conv2d) and layer.padded and layer.padding is not Padding.ZERO):
            raise BenchSetupError(f"threshold rewrite: {node.name} does not match bnnfab's layer {layer.name}")
        node.input[1] = f"{node.name}_w_bnnfab"
        new_inits.append(numpy_helper.from_array(w, node.input[1]))
        acc = node.output[0]
        shape = (1, -1, 1, 1) if conv else (-1,)
        ge, graph_out = follow(acc)
        if layer.thresholds is not None:
            if ge is None:
                raise BenchSetupError(f"threshold rewrite: no sign found after {node.name}")
            t = np.clip(layer.thresholds, -layer.k - 1, layer.k + 1).astype(np.int32).reshape(shape)
            new_inits.append(numpy_helper.from_array(t, f"{node.name}_thr"))
            replaced[ge.output[0]] = helper.make_node("GreaterOrEqual", [acc, f"{node.name}_thr"], [ge.output[0]],
                                                      name=f"{node.name}_ge")
        else:
            if graph_out is None or model.epilogue is None:
                raise BenchSetupError(f"threshold rewrite: the output layer {node.name} does not end the graph")
            scale = model.epilogue.scale.astype(np.float32)
            bias = model.epilogue.bias.astype(np.float32)
            new_inits += [numpy_helper.from_array(scale, "bnnfab_epi_scale"), numpy_helper.from_array(bias, "bnnfab_epi_bias")]
            replaced[graph_out] = [
                helper.make_node("Cast", [acc], ["bnnfab_scores"], name="bnnfab_scores", to=TensorProto.FLOAT),
                helper.make_node("Mul", ["bnnfab_scores", "bnnfab_epi_scale"], ["bnnfab_scaled"], name="bnnfab_scaled"),
                helper.make_node("Add", ["bnnfab_scaled", "bnnfab_epi_bias"], [graph_out], name="bnnfab_logits"),
            ]
    nodes = []
    for n in graph.node:
        hit = next((o for o in n.output if o in replaced), None)
        if hit is None:
            nodes.append(n)
        else:
            r = replaced[hit]
            nodes += r if isinstance(r, list) else [r]
    graph.initializer.extend(new_inits)
    ordered = _topo_sort(nodes, {i.name for i in graph.input}, {i.name for i in graph.initializer})
    del graph.node[:]
    graph.node.extend(ordered)
    _prune(graph)
    onnx.checker.check_model(out_model)
    hidden = len(replaced) - 1
    notes = [f"{hidden} hidden layer{'s' if hidden != 1 else ''}: integer dot >= integer threshold (bnnfab's), float chain dropped; "
             "output: Cast, Mul, Add of bnnfab's epilogue"]
    return Rewrite(out_model, dict(base.signs), notes)


# --------------------------------------------------------------------------------------------
# Checks and timing


@dataclass
class Check:
    images: int
    equal: int  # images with the same class where the simulator's top score is unique
    tied: int  # images whose top score is tied
    tied_ok: int  # of those, the graph's class is one of the tied
    max_diff: float  # max |logit difference| / max(1, max |logit|)

    @property
    def ok(self) -> bool:
        return self.equal + self.tied == self.images and self.tied_ok == self.tied and self.max_diff <= 1e-5

    def describe(self) -> str:
        verdict = "same network" if self.ok else "DIFFERENT"
        return (f"classes {self.equal + self.tied_ok}/{self.images} equal ({self.tied} tied top scores, "
                f"the graph's pick among them in {self.tied_ok}), max |logit diff| {self.max_diff:.1e} "
                f"of the largest logit: {verdict}")


def check_outputs(sim_result, logits: np.ndarray) -> Check:
    """Compare a graph's float logits with the simulator's result (classes and logits)."""
    scores = sim_result.scores
    top = scores == scores.max(axis=1, keepdims=True)
    unique = top.sum(axis=1) == 1
    pick = np.argmax(logits, axis=1)
    equal = int((pick[unique] == sim_result.classes[unique]).sum())
    tied_ok = int(top[np.arange(len(pick)), pick][~unique].sum())
    ref = sim_result.logits
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(np.abs(logits.astype(np.float64) - ref).max()) / scale
    return Check(len(pick), equal, int((~unique).sum()), tied_ok, diff)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each callable over ``repeats`` rounds, one call of each per round, after a
    warm-up call each; ``PAUSE`` between calls."""
    for f in fns.values():
        f()
        time.sleep(PAUSE)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
            time.sleep(PAUSE)
    return times


def ort_session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def time_qonnx(qonnx_path: Path, x: np.ndarray, sim_result) -> tuple[float, int] | None:
    """qonnx ``execute_onnx`` on the batch-1 graph, image by image: (seconds, images equal)."""
    if len(x) == 0:
        return None
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    wrapper = ModelWrapper(str(qonnx_path)).transform(InferShapes())
    name_in, name_out = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    execute_onnx(wrapper, {name_in: x[:1]})  # warm-up
    t = time.perf_counter()
    outs = [execute_onnx(wrapper, {name_in: x[i : i + 1]})[name_out] for i in range(len(x))]
    seconds = time.perf_counter() - t
    same = int((np.concatenate(outs).argmax(axis=1) == sim_result.classes[: len(x)]).sum())
    return seconds, same


# --------------------------------------------------------------------------------------------


def bench_net(net: Net, args, folder: Path) -> tuple[list[str], list[dict], dict, bool]:
    """Lines to print, metrics, the raw record and whether every graph was the same network."""
    import numba

    from bnnfab.models.qonnx import import_qonnx
    from bnnfab.sim.functional import Simulator

    lines = []
    t0 = time.perf_counter()
    path = export(net, args.seed, folder)
    model = import_qonnx(str(path))
    graphs = {"float32": to_float_onnx(path)}
    graphs["int8"] = to_int8_onnx(graphs["float32"])
    graphs["int8+thr"] = to_threshold_onnx(graphs["int8"], model)
    setup = time.perf_counter() - t0
    batch = args.batch or net.batch
    x = np.random.default_rng(args.seed).random((batch, 1, 28, 28), dtype=np.float32)

    lines.append(f"\n{net.name}: {net.description}; {net.layout()}")
    lines.append(f"  export + import + rewrites {setup:.1f} s; bnnfab model: {len(model.layers)} layers, "
                 f"prologue {model.prologue.describe()}")
    for name, g in graphs.items():
        lines.append(f"  onnxruntime {name}: {g.op_counts()}")
        lines.extend(f"    {n}" for n in g.notes)

    sim = Simulator(model)
    numba.set_num_threads(max(args.threads))
    ref = sim.run(x)
    checks, ok_graphs = {}, {}
    for name, g in graphs.items():
        sess = ort_session(g.model, max(args.threads))
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        checks[name] = check_outputs(ref, out)
        lines.append(f"  check on the {batch}-image batch, onnxruntime {name} vs simulator: {checks[name].describe()}")
        if checks[name].ok:
            ok_graphs[name] = g

    rows: dict[int, dict[str, float]] = {}
    for t in args.threads:
        sessions = {name: ort_session(g.model, t) for name, g in ok_graphs.items()}
        feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}

        def run_sim(t=t):
            numba.set_num_threads(t)
            return sim.run(x, batch_size=batch)

        fns: dict[str, Callable[[], Any]] = {"bnnfab sim": run_sim}
        for name, s in sessions.items():
            fns[f"onnxruntime {name}"] = lambda s=s, f=feeds[name]: s.run(None, f)
        times = interleaved(fns, args.repeats)
        rows[t] = {name: batch / statistics.median(ts) for name, ts in times.items()}

    lines.append(f"  {'threads':>7}  {'candidate':<22} {'images/s':>12} {'sim / this':>11}")
    metrics, goal_ratios = [], []
    for t, row in rows.items():
        sim_rate = row["bnnfab sim"]
        for name, rate in row.items():
            ratio = sim_rate / rate
            lines.append(f"  {t:>7}  {name:<22} {rate:>12,.0f} {'' if name == 'bnnfab sim' else f'{ratio:.2f}x':>11}")
            metrics.append(metric(f"{net.name} {name} images/s, {threads(t)}", rate, "images/s",
                                  headline=name == "bnnfab sim"))
            if name != "bnnfab sim":
                metrics.append(metric(f"{net.name} sim / {name}, {threads(t)}", ratio, "x"))
        ort_rates = {k: v for k, v in row.items() if k != "bnnfab sim"}
        if ort_rates:
            best = max(ort_rates, key=ort_rates.get)
            ratio = sim_rate / ort_rates[best]
            goal_ratios.append((t, best, ratio))
            metrics.append(metric(f"{net.name} sim / best onnxruntime ({best.split()[-1]}), {threads(t)}", ratio, "x",
                                  goal=f">= {GOAL:g}", headline=True))

    ceiling = limit_ceiling(model, batch, args.threads, args.repeats, args.seed)
    if ceiling is None:
        lines.append("  ceiling: no C AVX-512 reference (gcc or VPOPCNTDQ missing)")
    else:
        lines.append(f"  ceiling: every binary MAC at the C AVX-512 reference's measured rate on this model's "
                     f"{len(ceiling['layers'])} binary GEMM shapes, all else free (an upper bound on any exact simulator here):")
        for t, rate in ceiling["images_per_s"].items():
            ort_rates = {k: v for k, v in rows[t].items() if k != "bnnfab sim"}
            best = max(ort_rates, key=ort_rates.get) if ort_rates else None
            vs = f" = {rate / ort_rates[best]:.1f}x onnxruntime {best.split()[-1]}" if best else ""
            lines.append(f"  {t:>7}  {'ceiling':<22} {rate:>12,.0f} sim at {rows[t]['bnnfab sim'] / rate:.0%} of it{vs}")
            metrics.append(metric(f"{net.name} ceiling images/s, {threads(t)}", rate, "images/s"))
            if best:
                metrics.append(metric(f"{net.name} ceiling / best onnxruntime, {threads(t)}", rate / ort_rates[best], "x",
                                      headline=True))

    qonnx_rate = None
    q = time_qonnx(path, x[: args.qonnx_images], ref)
    if q is not None:
        seconds, same = q
        qonnx_rate = args.qonnx_images / seconds
        lines.append(f"  qonnx execute_onnx (reference, node by node): {args.qonnx_images} images one at a time in "
                     f"{seconds:.2f} s = {qonnx_rate:,.1f} images/s; classes equal to the simulator's on {same}")
        metrics.append(metric(f"{net.name} qonnx execute_onnx images/s", qonnx_rate, "images/s"))
    ok = all(c.ok for c in checks.values())
    raw = {
        "net": net.name, "layout": net.layout(), "batch": batch, "setup_seconds": setup,
        "graphs": {k: {"ops": g.op_counts(), "notes": g.notes} for k, g in graphs.items()},
        "checks": {k: vars(c) | {"ok": c.ok} for k, c in checks.items()},
        "images_per_s": {str(t): r for t, r in rows.items()},
        "goal_ratios": [{"threads": t, "best": b, "ratio": r} for t, b, r in goal_ratios],
        "qonnx_images_per_s": qonnx_rate,
        "ceiling": ceiling,
    }
    return lines, metrics, raw, ok


def limit_ceiling(model, batch: int, thread_counts: list[int], repeats: int, seed: int) -> dict | None:
    """Images/s of a machine that ran every binary layer's XNOR-popcount GEMM of ``model`` at the
    rate of the C AVX-512 reference (``bench/_c_ref.c``, the machine limit of
    ``bench/sim_throughput.py``) on the layer's own shape (M = batch x output positions) and did
    everything else (input, integer layer, thresholds, pooling, output) in no time: an upper bound
    on any bit-exact simulator here. None without gcc/AVX-512."""
    from bnnfab.sim import kernels
    from bnnfab.sim.report import layer_table

    try:
        from sim_throughput import CRef, median_times, random_packed
    except ImportError:  # pragma: no cover - imported as bench.onnx_compare
        from bench.sim_throughput import CRef, median_times, random_packed
    cref = CRef()
    if cref.lib is None:
        return None
    rng = np.random.default_rng(seed)
    table = layer_table(model)
    binary = table[table["datapath"] == "xnor-popcount"]
    out = {"layers": [], "images_per_s": {}}
    seconds = dict.fromkeys(thread_counts, 0.0)
    for row in binary.itertuples():
        m, n, k = batch * int(row.positions), int(row.N), int(row.K)
        a = random_packed(rng, m, k)
        pw = kernels.prepack_weights(random_packed(rng, n, k), k)
        for t in thread_counts:  # the C kernel takes its thread count itself
            secs = median_times({"c": lambda t=t: cref.gemm(a, pw, t)}, repeats)["c"]
            seconds[t] += secs / batch
        out["layers"].append({"layer": row.name, "M": m, "N": n, "K": k})
    out["images_per_s"] = {t: 1.0 / s for t, s in seconds.items() if s > 0}
    return out


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchSetupError(f"{what} must be comma-separated positive integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise BenchSetupError(f"{what} must be comma-separated positive integers, not {text!r}")
    return values


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the tiny net, batch 256, 3 repeats, all threads only")
    ap.add_argument("--nets", default=None, help=f"comma-separated, of {', '.join(NETS)} (default lfc,cnv; quick tiny)")
    ap.add_argument("--batch", type=int, default=None, help="images per call (default per net: lfc 4096, sfc 8192, cnv 256)")
    ap.add_argument("--threads", default=None, help="thread counts (default 1 and Numba's count; quick: Numba's count)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per figure (default 5, quick 3)")
    ap.add_argument("--qonnx-images", type=int, default=None, help="images through qonnx execute_onnx (default 8, quick 2)")
    ap.add_argument("--seed", type=int, default=2026, help="weights, BatchNorm statistics and images (default 2026)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except BenchSetupError as exc:
        print(f"onnx_compare: error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    versions = _require()
    import numba

    names = [n.strip() for n in (args.nets or ("tiny" if args.quick else "lfc,cnv")).split(",") if n.strip()]
    unknown = [n for n in names if n not in NETS]
    if unknown or not names:
        raise BenchSetupError(f"--nets takes names from {', '.join(NETS)}, not {args.nets!r}")
    max_threads = numba.config.NUMBA_NUM_THREADS
    if args.threads:
        args.threads = _ints(args.threads, "--threads")
        if max(args.threads) > max_threads:
            raise BenchSetupError(f"--threads goes up to Numba's {max_threads} threads (NUMBA_NUM_THREADS), not {max(args.threads)}")
    else:
        args.threads = [max_threads] if args.quick or max_threads == 1 else [1, max_threads]
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.qonnx_images = args.qonnx_images if args.qonnx_images is not None else (2 if args.quick else 8)
    if args.batch is None and args.quick:
        args.batch = 256
    for opt in ("batch", "repeats"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise BenchSetupError(f"--{opt} must be a positive integer, not {getattr(args, opt)}")
    if args.qonnx_images < 0:
        raise BenchSetupError(f"--qonnx-images must be 0 or more, not {args.qonnx_images}")
    logging.getLogger("onnxscript").setLevel(logging.ERROR)

    machine = machine_info()
    print(f"bnnfab onnx_compare: {machine['cpu']}, {machine['cpus']} CPUs, numba {numba.__version__} "
          f"(threads {args.threads}), " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"batch {args.batch or 'per net'}, median of {args.repeats} interleaved rounds, seed {args.seed}")
    load0 = machine["loadavg"][0] if machine["loadavg"] else float("nan")
    metrics, raws, all_ok, goal_ratios = [], [], True, []
    with tempfile.TemporaryDirectory(prefix="bnnfab-onnx-") as tmp:
        for name in names:
            lines, m, raw, ok = bench_net(NETS[name], args, Path(tmp))
            print("\n".join(lines), flush=True)
            metrics += m
            raws.append(raw)
            all_ok &= ok
            goal_ratios += [(name, g["threads"], g["best"], g["ratio"]) for g in raw["goal_ratios"]]
    load1 = os.getloadavg()[0]
    if goal_ratios:
        worst = min(goal_ratios, key=lambda g: g[3])
        met = all(r >= GOAL for *_, r in goal_ratios)
        print(f"\ngoal: simulator >= {GOAL:g}x the fastest onnxruntime graph, every net and thread count: "
              f"{'MET' if met else 'NOT MET'}; lowest {worst[3]:.2f}x ({worst[0]}, {threads(worst[1])}, vs {worst[2]})")
    else:
        print("\ngoal: no onnxruntime graph passed the check; nothing timed")
    print(f"load average (1 min) at start {load0:.2f}, at end {load1:.2f}: other processes on a shared machine "
          "skew the figures, ratios within one run much less")
    if not all_ok:
        print("CHECK FAILED: an onnxruntime graph differs from the simulator (see above); it was not timed")
    if args.json:
        write_json(args.json, {
            "bench": "onnx_compare", "machine": machine, "versions": versions,
            "options": {k: v for k, v in vars(args).items() if k != "json"},
            "loadavg": [load0, load1], "goal_ratio": GOAL, "nets": raws, "metrics": metrics,
        })
        print(f"wrote {args.json}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
