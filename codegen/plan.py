"""Planning passes of hardware generation, each one concern:

1. :func:`lower_layers` — the model as a chain in stream order: matrix-vector layers (a
   convolution is a window generator plus a matrix-vector layer over its patches), max-pools,
   and gathers for a Flatten of a computed map; a Flatten at the input is absorbed, a CHW
   flatten becomes a permutation of the next layer's weight columns (exactly), binary
   thresholds move to the popcount domain.
2. :func:`plan_folding` — engine, PE and SIMD of every layer (explicit or automatic for a target
   cycles-per-image, balancing the pipeline).
3. :func:`plan_schedules` — the MST schedule of every unrolled layer that uses reuse.

The result, a :class:`HwPlan`, is all later passes (assembly, Verilog, reports, cycle model)
need; it holds no hardware objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from ..hdl.folded import position_threshold_classes
from ..models import Conv2d, Flatten, FlattenOrder, MaxPool2d, Model, Padding
from ..sim.mst import MstSchedule, plan_mst
from .config import ConfigError, Engine, GenConfig, LayerChoice

__all__ = [
    "MatVec",
    "WindowSpec",
    "PoolSpec",
    "GatherSpec",
    "LayerPlan",
    "HwPlan",
    "lower_layers",
    "plan_folding",
    "plan_schedules",
    "make_plan",
]


@dataclass(frozen=True)
class MatVec:
    """One matrix-vector layer in stream order (a Dense layer, or a Conv2d run once per output
    position on its ``(ky, kx, c)``-flattened patch).

    ``weights`` (N, K) bool with columns in the order the vector streams in; ``thresholds`` the
    popcount-domain ``T`` (binary layers) or dot-domain ``t`` (integer layer), None for the
    output layer; ``index`` the IR layer it comes from; ``positions`` the vectors per image;
    ``position_classes`` (zero-padded binary convolutions only) the threshold row of each output
    position, ``thresholds`` then holding one row of ``T`` per class.
    """

    index: int
    name: str
    weights: np.ndarray
    thresholds: np.ndarray | None
    integer: bool
    in_bits: int  # bits per input element (1 for binary layers)
    in_signed: bool
    positions: int = 1
    # zero-padded binary conv: the threshold row (class) of each output position, raster order;
    # ``thresholds`` is then (classes, N)
    position_classes: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.weights.shape[0])

    @property
    def k(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True)
class WindowSpec:
    """A sliding-window generator feeding a convolution's engine (:class:`hdl.window.SlidingWindow`)."""

    height: int
    width: int
    channels: int
    elem_bits: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    pad_value: int
    name: str = ""


@dataclass(frozen=True)
class PoolSpec:
    """A binary max-pool on the pixel stream (:class:`hdl.window.MaxPoolOr`)."""

    height: int
    width: int
    channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    name: str = ""


@dataclass(frozen=True)
class GatherSpec:
    """A Flatten of a pixel stream: ``pixels`` beats of ``chunk`` bits become one vector (HWC)."""

    chunk: int
    pixels: int
    name: str = ""


@dataclass(frozen=True)
class LayerPlan:
    """A layer's hardware: its engine, folding and MST schedule."""

    layer: MatVec
    engine: Engine
    pe: int
    simd: int
    schedule: MstSchedule | None = None

    @property
    def nf(self) -> int:
        return -(-self.layer.n // self.pe)

    @property
    def sf(self) -> int:
        return -(-self.layer.k // self.simd)

    @property
    def cycles_per_vector(self) -> int:
        return 1 if self.engine is Engine.UNROLLED else self.nf * self.sf

    @property
    def cycles_per_image(self) -> int:
        return self.layer.positions * self.cycles_per_vector


Stage = Union[WindowSpec, PoolSpec, GatherSpec, LayerPlan]


@dataclass(frozen=True)
class HwPlan:
    """The planned chain: ``stages`` in stream order; ``layers`` the engines among them."""

    model: Model
    config: GenConfig
    stages: tuple[Stage, ...]

    @property
    def layers(self) -> tuple[LayerPlan, ...]:
        return tuple(s for s in self.stages if isinstance(s, LayerPlan))

    @property
    def cycles_per_image(self) -> int:
        """Steady-state estimate: the slowest engine's cycles per image (the cycle model is exact)."""
        return max(lp.cycles_per_image for lp in self.layers)


def _chw_to_hwc_columns(shape: tuple[int, int, int]) -> np.ndarray:
    """perm such that w_hwc = w_chw[:, perm]: column j of the HWC order is column perm[j] in CHW."""
    h, w, c = shape
    return np.arange(h * w * c).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def lower_layers(model: Model) -> list[MatVec | WindowSpec | PoolSpec | GatherSpec]:
    """Pass 1: the model as a chain in stream order (see the module docstring).

    A convolution becomes a :class:`WindowSpec` and a :class:`MatVec` over patches; a max-pool a
    :class:`PoolSpec`; a Flatten of a computed map a :class:`GatherSpec` (its CHW order, if any,
    folded into the next layer's weight columns); a Flatten at the model input disappears (the
    input streams as one vector).

    Raises
    ------
    ConfigError
        For what the hardware cannot express exactly, naming the layer: a ±1 padding an unsigned
        integer input cannot hold. (A zero-padded binary convolution, whose valid taps vary per
        position, gets per-position threshold classes, :attr:`MatVec.position_classes`.)
    """
    out: list = []
    perm = None
    for i, layer in enumerate(model.layers):
        in_shape = model.shapes[i]
        integer = model.takes_integers(i)
        if isinstance(layer, MaxPool2d):
            h, w, c = in_shape
            out.append(PoolSpec(h, w, c, layer.kernel, layer.stride, name=layer.name or f"pool{i}"))
            continue
        if isinstance(layer, Flatten):
            if layer.order is FlattenOrder.CHW:
                perm = _chw_to_hwc_columns(in_shape)
            if i > 0:
                h, w, c = in_shape
                out.append(GatherSpec(chunk=c, pixels=h * w, name=layer.name or f"flatten{i}"))
            continue
        w2 = np.asarray(layer.weights_2d)
        positions = 1
        if isinstance(layer, Conv2d):
            h, w, c = in_shape
            if integer:
                pad_value = layer.padding.value_pm1
                lo, hi = model.input.value_range
                if layer.padded and not lo <= pad_value <= hi:
                    raise ConfigError(
                        f"{layer.where(i)}: padding {layer.padding.value} needs the value {pad_value}, "
                        f"which the {'signed' if model.input.signed else 'unsigned'} {model.input.bits}-bit input cannot hold"
                    )
            else:
                # zero padding: padded taps stream as bit 0 and per-position thresholds undo them
                pad_value = 1 if layer.padding is Padding.PLUS_ONE else 0
            out.append(
                WindowSpec(
                    h, w, c, model.input.bits if integer else 1, layer.kernel, layer.stride, layer.pads, pad_value,
                    name=f"{layer.name or f'conv{i}'}_window",
                )
            )
            positions = model.positions(i)
        if perm is not None:
            w2 = w2[:, perm]
            perm = None
        classes = None
        if layer.thresholds is None:
            thr = None
        elif not integer and isinstance(layer, Conv2d) and layer.padded and layer.padding is Padding.ZERO:
            # padded taps stream as bit 0; the valid taps per position decide its threshold row
            thr, classes = position_threshold_classes(layer.position_thresholds(in_shape))
        elif integer:
            thr = np.asarray(layer.thresholds, dtype=np.int64)
        else:
            thr = layer.popcount_thresholds().astype(np.int64)
        w2 = np.ascontiguousarray(w2)
        w2.flags.writeable = False
        out.append(
            MatVec(
                index=i,
                name=layer.name or f"layer{i}",
                weights=w2,
                thresholds=thr,
                integer=integer,
                in_bits=model.input.bits if integer else 1,
                in_signed=model.input.signed if integer else False,
                positions=positions,
                position_classes=classes,
            )
        )
    return out


def _cheapest_fold(n: int, k: int, target: int, bits: int = 1) -> tuple[int, int]:
    """The cheapest PE, SIMD with ceil(N/PE)*ceil(K/SIMD) <= target (ties: smaller PE).

    Cost model: a lane sums SIMD elements of ``bits`` bits and keeps an accumulator, about
    ``PE * (SIMD * bits + 2 * ceil(log2(K * 2**bits)))`` LUTs."""
    best = None
    for pe in range(1, n + 1):
        nf = -(-n // pe)
        if pe > 1 and -(-n // (pe - 1)) == nf:
            continue  # same folds with fewer lanes
        sf_max = target // nf
        if sf_max < 1:
            continue
        simd = -(-k // sf_max)
        simd = -(-k // (-(-k // simd)))  # narrowest SIMD with the same number of folds
        cost = pe * (simd * bits + 2 * (k << (bits - 1)).bit_length())
        if best is None or cost < best[0]:
            best = (cost, pe, simd)
    if best is None:
        return n, k
    return best[1], best[2]


def plan_folding(layers: list[MatVec], config: GenConfig) -> list[tuple[MatVec, Engine, int, int]]:
    """Pass 2: engine, PE and SIMD per layer.

    Explicit :class:`LayerChoice` values win (keyed by the IR layer index). Other layers are
    folded: with ``config.target_cycles`` each gets the cheapest fold within that many cycles
    per image (vectors per image x cycles per vector); without it, the target is the slowest
    explicitly folded layer's cycles per image, or, when none is explicit, that of the largest
    layer at PE = SIMD = 8 (so the default is a balanced pipeline a small FPGA holds). Unrolled
    layers take one cycle per vector; the integer input layer is always folded.
    """
    known = {lv.index for lv in layers}
    for key in config.layers:
        if key not in known:
            raise ConfigError(f"layer choice for layer {key!r}, which is not a compute layer; compute layers: {sorted(known)}")
    choices = {lv.index: config.layers.get(lv.index, LayerChoice()) for lv in layers}
    for lv in layers:
        ch = choices[lv.index]
        if ch.engine is Engine.UNROLLED and lv.integer:
            raise ConfigError(f"layer {lv.index} ({lv.name}): the integer input layer has a folded engine only, not 'unrolled'")
        if ch.engine is Engine.UNROLLED and lv.position_classes is not None:
            raise ConfigError(
                f"layer {lv.index} ({lv.name}): a zero-padded binary convolution needs per-position thresholds, "
                "which only the folded engine has; fold it (or use +1/-1 padding to unroll it)"
            )
        if ch.engine is Engine.UNROLLED and (ch.pe is not None or ch.simd is not None):
            raise ConfigError(f"layer {lv.index} ({lv.name}): pe/simd apply to folded engines, not to an unrolled one")
        for name, limit in (("pe", lv.n), ("simd", lv.k)):
            v = getattr(ch, name)
            if v is not None and v > limit:
                raise ConfigError(f"layer {lv.index} ({lv.name}): {name}={v} exceeds the layer's {'N' if name == 'pe' else 'K'}={limit}")
    target = config.target_cycles
    if target is None:
        explicit = [
            lv.positions * (-(-lv.n // ch.pe)) * (-(-lv.k // ch.simd))
            for lv in layers
            for ch in [choices[lv.index]]
            if ch.engine is not Engine.UNROLLED and ch.pe is not None and ch.simd is not None
        ]
        target = max(explicit) if explicit else max(lv.positions * (-(-lv.n // 8)) * (-(-lv.k // 8)) for lv in layers)
    planned = []
    for lv in layers:
        ch = choices[lv.index]
        engine = ch.engine or Engine.FOLDED
        if engine is Engine.UNROLLED:
            planned.append((lv, engine, lv.n, lv.k))
            continue
        pe, simd = ch.pe, ch.simd
        per_vector = max(1, target // lv.positions)
        if pe is None and simd is None:
            pe, simd = _cheapest_fold(lv.n, lv.k, per_vector, lv.in_bits)
        elif pe is None:
            sf = -(-lv.k // simd)
            pe = min(lv.n, -(-lv.n // max(1, per_vector // sf)))
        elif simd is None:
            nf = -(-lv.n // pe)
            simd = min(lv.k, -(-lv.k // max(1, per_vector // nf)))
        planned.append((lv, engine, pe, simd))
    return planned


def plan_schedules(planned, config: GenConfig) -> list[LayerPlan]:
    """Pass 3: MST schedules of unrolled layers that use reuse (depth limit from the layer's
    choice, else the config's)."""
    out = []
    for lv, engine, pe, simd in planned:
        sch = None
        if engine is Engine.UNROLLED:
            ch = config.layers.get(lv.index, LayerChoice())
            use = config.mst if ch.mst is None else ch.mst
            depth = ch.mst_depth if ch.mst_depth is not None else config.mst_depth
            if use and depth != 0:
                sch = plan_mst(lv.weights, max_depth=depth)
        out.append(LayerPlan(layer=lv, engine=engine, pe=pe, simd=simd, schedule=sch))
    return out


def make_plan(model: Model, config: GenConfig | None = None) -> HwPlan:
    """Run the planning passes."""
    config = config or GenConfig()
    chain = lower_layers(model)
    matvecs = [s for s in chain if isinstance(s, MatVec)]
    planned = iter(plan_schedules(plan_folding(matvecs, config), config))
    stages = tuple(next(planned) if isinstance(s, MatVec) else s for s in chain)
    return HwPlan(model=model, config=config, stages=stages)
