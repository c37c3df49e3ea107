"""Exact export of a trained :class:`~.topologies.BNN` to the bnnfab IR.

What folds where (design.md §2; the evaluation contract is in :mod:`~.layers`):

* A compute layer + :class:`~.layers.SignBatchNorm` becomes one thresholded IR layer. Its
  weights are the deployed ±1 weights; its threshold is the integer ``t`` on the dot product
  such that the evaluation-mode decision ``fl(fl(dot * A) + B) >= 0`` is exactly ``dot >= t``.
  For ``A > 0`` that is ``t = ceil(tau)`` with ``tau = -B / A = mean - beta sqrt(var+eps) /
  (gamma alpha)``; for ``A < 0`` (a negative ``gamma`` or scaling factor) the channel fires on
  ``dot <= tau``, its weight bits are flipped and ``t = -floor(tau)``; for ``A == 0`` it is a
  constant channel, ``t = -R`` (always) or ``R + 1`` (never), ``R`` the largest ``|dot|``. Rather
  than trusting ``ceil`` of a rounded ``tau``, :func:`fold_thresholds` bisects on the decision
  function itself (it is monotone in ``dot``), so float rounding can never put a tie on the
  wrong side.
* Max-pools become IR ``MaxPool2d`` (OR on bits), the flatten an ``hwc`` ``Flatten``.
* The output layer becomes the threshold-free ``Dense``; the :class:`~.layers.ScoreHead` becomes
  the per-class ``Epilogue(scale, bias)``, applied by the simulator with the same float64
  operations, so its logits equal the torch evaluation model's.
* A binarized input becomes ``InputSpec(bits=1)``; the simulator binarizes ``x >= 0``, so feed
  it ``x - offset`` (:func:`ir_inputs`; the offset is in the model's metadata,
  ``input_offset``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..ir import Conv2d, Dense, Epilogue, Flatten, FlattenOrder, InputSpec, MaxPool2d, Model, Padding
from .layers import BinaryConv2d, BinaryLinear, BinaryMaxPool2d, FlattenHWC, ScoreHead, SignBatchNorm
from .topologies import BNN

__all__ = ["ExportError", "export_model", "fold_thresholds", "ir_inputs"]

_F32_EXACT = 2**24  # float32 holds every integer below this: the dot products must stay under it


class ExportError(ValueError):
    """A torch model that cannot be exported exactly; the message says which layer and why."""


@torch.no_grad()
def fold_thresholds(bn_sign: SignBatchNorm, max_abs_dot: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds and weight flips reproducing ``bn_sign``'s evaluation decision.

    Parameters
    ----------
    bn_sign : SignBatchNorm
    max_abs_dot : int
        ``R``: the dot products lie in ``[-R, R]`` (``K`` for a binary layer, ``K * max|x|``
        for an integer first layer).

    Returns
    -------
    t : int64 (N,)
        Output fires when ``dot' >= t``, ``dot'`` the dot product with the flipped weights.
    flip : bool (N,)
        Channels whose weight bits are inverted (``A < 0``).
    """
    a, b = bn_sign.affine64()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ExportError(f"batch norm of {bn_sign.channels} channels has non-finite folded scale or bias")
    n = a.shape[0]
    flip = a < 0
    r = int(max_abs_dot)
    lo = torch.full((n,), -r, dtype=torch.int64)
    hi = torch.full((n,), r + 1, dtype=torch.int64)  # r + 1 stands for "never fires"
    shape = (1, n, 1, 1) if bn_sign.spatial else (1, n)
    # the decision on the flipped dot d' = -d is non-decreasing in d': bisect for its first True
    while bool((lo < hi).any()):
        open_ = lo < hi
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        dot = torch.where(flip, -mid, mid).to(torch.float64)
        fire = bn_sign.decide(dot.view(shape)).reshape(n)
        hi = torch.where(open_ & fire, mid, hi)
        lo = torch.where(open_ & ~fire, mid + 1, lo)
    return lo.numpy().astype(np.int64), flip.numpy()


def _weight_bits(m: BinaryLinear | BinaryConv2d) -> np.ndarray:
    w = m.binary_weight() > 0
    if isinstance(m, BinaryConv2d):
        w = w.permute(0, 2, 3, 1)  # (N, C, kh, kw) -> (N, kh, kw, C): taps flatten (ky, kx, c)
    return w.contiguous().numpy()


def _compute_layer(m: BinaryLinear | BinaryConv2d, bits: np.ndarray, thresholds: np.ndarray | None, name: str):
    if isinstance(m, BinaryLinear):
        return Dense(weights=bits, thresholds=thresholds, name=name)
    p = m.padding
    kind = {0.0: Padding.ZERO, 1.0: Padding.PLUS_ONE, -1.0: Padding.MINUS_ONE}[m.pad_value if p else 0.0]
    return Conv2d(
        weights=bits,
        thresholds=thresholds,
        stride=(m.stride, m.stride),
        pads=(p, p, p, p),
        padding=kind,
        name=name,
    )


def export_model(model: BNN, name: str | None = None, metadata: Mapping[str, str] | None = None) -> Model:
    """The IR :class:`~bnnfab.models.Model` computing exactly what ``model`` computes in
    evaluation mode (module docstring): equal integer scores and bits of every layer, equal
    float64 logits.

    Raises
    ------
    ExportError
        For a module sequence the exporter does not know, or dot products too large for float32
        to hold exactly.
    """
    if not isinstance(model, BNN):
        raise ExportError(f"export_model takes a bnnfab BNN (see build_model), not {type(model).__name__}")
    cfg = model.config
    binary_input = cfg["input_bits"] == 1
    max_in = 1 if binary_input else 2 ** cfg["data_bits"] - 1
    layers: list[Any] = []
    pending: BinaryLinear | BinaryConv2d | None = None
    epilogue = None
    n_compute = 0
    for m in model.body:
        if isinstance(m, (BinaryLinear, BinaryConv2d)):
            if pending is not None:
                raise ExportError(f"compute layer {n_compute} is followed by another compute layer without a SignBatchNorm")
            pending = m
            continue
        if isinstance(m, (SignBatchNorm, ScoreHead)):
            if pending is None:
                raise ExportError(f"a {type(m).__name__} must follow a compute layer")
            bits = _weight_bits(pending)
            k = int(np.prod(bits.shape[1:]))
            r = k * max_in
            if r >= _F32_EXACT:
                raise ExportError(
                    f"compute layer {n_compute}: dot products up to {r} exceed 2**24, which float32 cannot hold exactly"
                )
            label = f"{'conv' if isinstance(pending, BinaryConv2d) else 'dense'}{n_compute}"
            if isinstance(m, SignBatchNorm):
                t, flip = fold_thresholds(m, r)
                bits = np.where(flip.reshape((-1,) + (1,) * (bits.ndim - 1)), ~bits, bits)
                layers.append(_compute_layer(pending, bits, t, label))
            else:
                layers.append(_compute_layer(pending, bits, None, label))
                a, b = m.affine64()
                epilogue = Epilogue(scale=a.numpy(), bias=b.numpy())
            pending = None
            n_compute += 1
            max_in = 1
        elif isinstance(m, BinaryMaxPool2d):
            k, s = m.kernel_size, m.stride
            if m.padding not in (0, (0, 0)) or m.ceil_mode or m.dilation not in (1, (1, 1)):
                raise ExportError("max-pool must have no padding, no dilation and floor mode")
            layers.append(MaxPool2d(kernel=k, stride=s, name=f"pool{len(layers)}"))
        elif isinstance(m, FlattenHWC):
            layers.append(Flatten(order=FlattenOrder.HWC, name="flatten"))
    if pending is not None or epilogue is None:
        raise ExportError("the model must end with a compute layer and a ScoreHead")
    meta = {
        "source": "bnnfab.models.train",
        "arch": str(cfg["arch"]),
        "estimator": str(cfg["estimator"]),
        "head": str(cfg["head"]),
    }
    if binary_input:
        meta["input_offset"] = repr(float(cfg["input_offset"]))
    meta.update(dict(metadata or {}))
    spec = InputSpec(shape=tuple(cfg["input_shape"]), bits=1 if binary_input else cfg["data_bits"], signed=False)
    return Model(
        input=spec,
        layers=tuple(layers),
        epilogue=epilogue,
        name=name if name is not None else f"{cfg['arch']}-{cfg['estimator']}",
        metadata=meta,
    )


def ir_inputs(model: Model | BNN, x: np.ndarray) -> np.ndarray:
    """What to give the simulator for raw pixels ``x``: ``x`` itself for an integer input,
    ``x - input_offset`` for a binarized one (the simulator binarizes ``>= 0``)."""
    x = np.asarray(x)
    if isinstance(model, BNN):
        offset = model.config["input_offset"] if model.config["input_bits"] == 1 else None
    else:
        offset = float(model.metadata["input_offset"]) if "input_offset" in model.metadata else None
    if offset is None:
        return x
    if float(offset).is_integer():
        return x.astype(np.int64) - int(offset)
    return x.astype(np.float64) - offset
