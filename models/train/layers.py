"""PyTorch building blocks of a trainable BNN whose evaluation mode is exactly the deployed IR.

Contract of evaluation mode (``module.eval()``), what :func:`~bnnfab.models.train.export_model`
reproduces bit for bit:

* Compute layers (:class:`BinaryLinear`, :class:`BinaryConv2d`) use the weights
  ``sign_pm1(preimage(W))`` (±1, ``sign(0) = +1``) and emit the plain dot product. With ±1 or
  integer inputs every product and partial sum is an integer below ``2**24``, so float32 holds
  the dot product exactly whatever the summation order (and the layers round it, against
  backends that convolve through inexact transforms). Convolutions pad with zeros: padded taps
  contribute nothing (IR ``Padding.ZERO``) -- or, with ``pad_value`` ±1, with that activation
  (IR ``Padding.PLUS_ONE`` / ``MINUS_ONE``).
* :class:`SignBatchNorm` -- scaling factor, batch norm and sign after a compute layer -- decides
  each output from the integer dot product in float64:
  ``+1 iff fl(fl(dot * A) + B) >= 0`` with per-channel ``A = (gamma / sqrt(var + eps)) * alpha``
  and ``B = beta - (gamma / sqrt(var + eps)) * mean``, all in float64 from the float32
  parameters and running statistics (:meth:`SignBatchNorm.affine64`). The expression is
  monotone in ``dot``, so the set of firing dot products is ``dot >= t`` (``A > 0``) or
  ``dot <= t'`` (``A < 0``: the channel's weights are flipped in the IR); the exporter finds the
  integer threshold by evaluating this very function, so ties (``BN(dot) == 0`` -> +1),
  negative ``gamma`` or ``alpha`` and ``gamma == 0`` (a constant channel) are all exact.
* Max-pooling follows the sign, on ±1 values: it is the IR's OR on bits. (Pooling before a
  sign only commutes with it for a positive scale, so the topologies never do that.)
* :class:`ScoreHead` maps the last layer's integer scores to float64 logits
  ``fl(fl(score * A) + B)``, per class, with ``A``, ``B`` from :meth:`ScoreHead.affine64`: the
  IR epilogue's ``scale`` and ``bias``, applied by ``Epilogue.apply`` with the same two
  operations.

Training mode is ordinary float32 training through the estimator
(:mod:`~bnnfab.models.train.estimators`) with batch statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .estimators import Estimator, sign_pm1

__all__ = [
    "InputQuant",
    "ChannelsFirst",
    "ChannelsLast",
    "FlattenHWC",
    "BinaryLinear",
    "BinaryConv2d",
    "SignBatchNorm",
    "BinaryMaxPool2d",
    "ScoreHead",
]


class InputQuant(nn.Module):
    """The network's input: integer pixels as they are (``bits > 1``) or binarized
    ``x - offset >= 0 -> +1`` (``bits == 1``); NHWC in and out."""

    def __init__(self, bits: int, offset: float = 0.0) -> None:
        super().__init__()
        self.bits = int(bits)
        self.offset = float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits == 1:
            return sign_pm1(x - self.offset)
        return x

    def extra_repr(self) -> str:
        return f"bits={self.bits}, offset={self.offset:g}"


class ChannelsFirst(nn.Module):
    """NHWC -> NCHW (torch convolutions)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class ChannelsLast(nn.Module):
    """NCHW -> NHWC (so that a following flatten is in the IR's free ``hwc`` order)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class FlattenHWC(nn.Module):
    """Flatten an NHWC map (or pass a vector through) in ``(h, w, c)`` order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


def _init_latent(weight: torch.Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class _BinaryCompute(nn.Module):
    weight: nn.Parameter

    def __init__(self, estimator: Estimator) -> None:
        super().__init__()
        self.estimator = estimator

    def binary_weight(self) -> torch.Tensor:
        """The deployed ±1 weights (float32), in torch layout."""
        with torch.no_grad():
            return sign_pm1(self.estimator.eval_weight_preimage(self.weight))

    def _weights(self) -> torch.Tensor:
        return self.estimator.weight(self.weight) if self.training else self.binary_weight()

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        # Evaluation: the dot product is an integer. Rounding is a no-op on an exact result and
        # removes the sub-0.5 errors of a backend that computes a convolution through a
        # transform (e.g. Winograd) instead of exact sums.
        return y if self.training else torch.round(y)


class BinaryLinear(_BinaryCompute):
    """Dense layer with binarized weights ``(out, in)``; no bias (batch norm follows)."""

    def __init__(self, in_features: int, out_features: int, estimator: Estimator) -> None:
        super().__init__(estimator)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        _init_latent(self.weight, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(F.linear(x, self._weights()))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class BinaryConv2d(_BinaryCompute):
    """2-D convolution (NCHW) with binarized weights ``(out, in, k, k)``, no bias.

    ``pad_value`` says what the ``padding`` border holds: 0 -- zero padding, padded taps
    contribute nothing (IR ``Padding.ZERO``); +1 or -1 -- the padded taps are that activation
    and count in ``K`` (IR ``Padding.PLUS_ONE`` / ``MINUS_ONE``, which the hardware engines build
    for binary convolutions).
    """

    PAD_VALUES = (0.0, 1.0, -1.0)

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, estimator: Estimator, stride: int = 1, padding: int = 0, pad_value: float = 0.0
    ) -> None:
        super().__init__(estimator)
        if pad_value not in self.PAD_VALUES:
            raise ValueError(f"pad_value must be 0 (zero padding), 1 or -1, not {pad_value!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel, self.stride, self.padding = int(kernel), int(stride), int(padding)
        self.pad_value = float(pad_value)
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, self.kernel, self.kernel))
        _init_latent(self.weight, self.in_channels * self.kernel * self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding and self.pad_value != 0.0:
            p = self.padding
            x = F.pad(x, (p, p, p, p), value=self.pad_value)
            return self._out(F.conv2d(x, self._weights(), stride=self.stride))
        return self._out(F.conv2d(x, self._weights(), stride=self.stride, padding=self.padding))

    def extra_repr(self) -> str:
        kind = "zero" if self.pad_value == 0.0 else f"{self.pad_value:+g}"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}, "
            f"padding={self.padding} ({kind})"
        )


def _bn_affine64(bn: nn.modules.batchnorm._BatchNorm, alpha: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    mean = bn.running_mean.detach().to(torch.float64)
    var = bn.running_var.detach().to(torch.float64)
    gamma = bn.weight.detach().to(torch.float64)
    beta = bn.bias.detach().to(torch.float64)
    inv = gamma / torch.sqrt(var + bn.eps)
    a = inv if alpha is None else inv * alpha.detach().to(torch.float64)
    b = beta - inv * mean
    return a, b


class SignBatchNorm(nn.Module):
    """``sign(BN(alpha * dot))`` after a compute layer: optional per-channel scaling factor
    ``alpha`` (XNOR-Net / BiPer style; folded into the threshold on export), batch norm, and the
    estimator's binarizer in training; the exact float64 decision in evaluation (module
    docstring). ``spatial`` selects BatchNorm2d (NCHW maps) or BatchNorm1d (vectors)."""

    def __init__(self, channels: int, estimator: Estimator, spatial: bool, scaling: bool = False, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.channels, self.spatial = int(channels), bool(spatial)
        self.estimator = estimator
        bn = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        self.bn = bn(self.channels, eps=eps, momentum=momentum)
        self.alpha = nn.Parameter(torch.ones(self.channels)) if scaling else None

    def _view(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, 1, 1) if self.spatial else v.view(1, -1)

    def affine64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel float64 ``(A, B)``: evaluation fires where ``fl(fl(dot * A) + B) >= 0``."""
        return _bn_affine64(self.bn, self.alpha)

    def decide(self, dot: torch.Tensor) -> torch.Tensor:
        """The evaluation-mode decision on integer dot products (any float dtype, channel axis
        1): a boolean tensor, True for +1."""
        a, b = self.affine64()
        return dot.to(torch.float64) * self._view(a) + self._view(b) >= 0

    def forward(self, dot: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return torch.where(self.decide(dot), 1.0, -1.0).to(dot.dtype)
        x = dot if self.alpha is None else dot * self._view(self.alpha)
        return self.estimator.activation(self.bn(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scaling={self.alpha is not None}"


class BinaryMaxPool2d(nn.MaxPool2d):
    """Max-pool of ±1 maps (NCHW), after the sign: the IR's OR on bits."""


class ScoreHead(nn.Module):
    """Integer scores of the last layer -> logits.

    ``kind="scale"``: ``logits = exp(log_scale) * score``, one positive scale for all classes,
    so the argmax of the logits is the argmax of the integer scores (ties to the lowest index,
    like the hardware). ``kind="bn"``: a per-class batch norm (FINN's TFC head); its epilogue
    reproduces the logits but the hardware's class (argmax of the scores) may then differ from
    the argmax of the logits when the per-class scales differ.
    """

    KINDS = ("scale", "bn")

    def __init__(self, n_classes: int, fan_in: int, kind: str = "scale") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"head must be one of {', '.join(self.KINDS)}, not {kind!r}")
        self.n_classes, self.kind = int(n_classes), kind
        if kind == "scale":
            # scores of a random layer spread like sqrt(K): start with unit-scale logits
            self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(fan_in)))
        else:
            self.bn = nn.BatchNorm1d(self.n_classes)

    def affine64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class float64 ``(scale, bias)`` of the evaluation-mode logits (the IR epilogue)."""
        if self.kind == "scale":
            s = torch.exp(self.log_scale.detach().to(torch.float64))
            return s.expand(self.n_classes).clone(), torch.zeros(self.n_classes, dtype=torch.float64)
        return _bn_affine64(self.bn, None)

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        if not self.training:
            a, b = self.affine64()
            return score.to(torch.float64) * a + b
        if self.kind == "scale":
            return score * torch.exp(self.log_scale)
        return self.bn(score)

    def extra_repr(self) -> str:
        return f"classes={self.n_classes}, kind={self.kind!r}"
