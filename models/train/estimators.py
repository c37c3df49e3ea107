"""Gradient estimators for training binary networks: forward ``sign``, a surrogate backward.

Every binarizer here computes ``+1`` for ``x >= 0`` and ``-1`` otherwise in its forward pass
(``sign(0) = +1``, design.md §2, unlike :func:`torch.sign`). They differ in the gradient they
pass back and in how they change over training:

``"ste"`` -- :class:`ClippedSTE`
    The clipped straight-through estimator of BinaryNet: backward ``1{|x| <= 1}``, for weights
    and activations; latent weights are clipped to ``[-1, 1]`` after every update.
    I. Hubara, M. Courbariaux, D. Soudry, R. El-Yaniv, Y. Bengio, "Binarized Neural Networks",
    NeurIPS 2016 (arXiv:1602.02830).

``"reste"`` -- :class:`ReSTE`
    The rectified straight-through estimator: the backward pass is the derivative of the power
    function ``sign(z) |z|^(1/o)``, ``(1/o) |z|^((1-o)/o)`` on ``0.1 < |z| <= 1.5``, zero
    beyond ``1.5`` and, below ``0.1``, the secant slope ``0.1^(1/o) / 0.1`` (the derivative is
    unbounded at 0). ``o`` grows from 1 (plain clipped STE) to ``o_end = 3`` over training,
    ``o = 1 + (o_end - 1)(1 - cos(pi/2 * epoch / epochs))``. For weights and activations.
    X.-M. Wu, D. Zheng, Z. Liu, W.-S. Zheng, "Estimator Meets Equilibrium Perspective: A
    Rectified Straight Through Estimator for Binary Neural Networks Training", ICCV 2023
    (arXiv:2308.06689).

``"biper"`` -- :class:`BiPer`
    Binary periodic weights: forward ``sign(sin(omega W))`` (a square wave of the latent
    weight), backward ``omega cos(omega W)``, the derivative of the sine with the square wave's
    period; ``omega = 20``. Training has two stages (the paper's Sec. 3 and its code): stage 1
    trains with the *real* weights ``sin(omega W)`` and binary activations, stage 2 starts from
    the stage-1 weights (warm start, fresh optimizer and learning-rate cycle) and binarizes
    them, ``sign(sin(omega W))``. Activations use the piecewise-quadratic ``ApproxSign`` of
    Bi-Real Net (backward ``max(0, 2 - 2|x|)``), as BiPer's code does.
    E. Vargas, C. V. Correa, C. Hinojosa, H. Arguello, "BiPer: Binary Neural Networks using a
    Periodic Function", CVPR 2024 (arXiv:2404.01278). Z. Liu et al., "Bi-Real Net", ECCV 2018.

The estimator objects are plain Python (no parameters): their only state is derived from the
epoch (:meth:`Estimator.set_epoch`), so a resumed run recomputes it exactly. In evaluation mode
the network never calls them: weights and activations are binarized with :func:`sign_pm1`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "ESTIMATORS",
    "sign_pm1",
    "ClippedSTEFunction",
    "ReSTEFunction",
    "BiPerSignFunction",
    "ApproxSignFunction",
    "reste_o",
    "reste_grad",
    "Estimator",
    "ClippedSTE",
    "ReSTE",
    "BiPer",
    "make_estimator",
]


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0`` (so ``sign(0) = +1``), ``-1`` elsewhere; same dtype as ``x``."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class ClippedSTEFunction(torch.autograd.Function):
    """``sign_pm1`` forward; backward ``grad * 1{|x| <= 1}`` (BinaryNet, Hubara et al. 2016)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def reste_o(epoch: int, epochs: int, o_end: float = 3.0) -> float:
    """ReSTE's exponent at the start of ``epoch`` (0-based) of ``epochs``:
    ``1 + (o_end - 1) (1 - cos(pi/2 * epoch / epochs))``; 1 at epoch 0, ``o_end`` at ``epochs``."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, not {epochs!r}")
    return 1.0 + (o_end - 1.0) * (1.0 - math.cos(math.pi / 2.0 * epoch / epochs))


def reste_grad(z: torch.Tensor, o: float, threshold: float = 1.5, interval: float = 0.1) -> torch.Tensor:
    """ReSTE's surrogate derivative at ``z`` (module docstring). Region boundaries are compared
    in ``z``'s dtype: ``|z| <= interval`` takes the secant slope, ``interval < |z| <= threshold``
    the power-function derivative, ``|z| > threshold`` zero."""
    a = z.abs()
    power = (1.0 / o) * torch.pow(a.clamp(min=interval), (1.0 - o) / o)
    secant = interval ** (1.0 / o) / interval
    g = torch.where(a <= interval, torch.full_like(a, secant), power)
    return torch.where(a <= threshold, g, torch.zeros_like(a))


class ReSTEFunction(torch.autograd.Function):
    """``sign_pm1`` forward; backward ``grad * reste_grad(x, o)`` (ReSTE, Wu et al. 2023)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, o: float, threshold: float, interval: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.params = (o, threshold, interval)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        o, threshold, interval = ctx.params
        return grad * reste_grad(x, o, threshold, interval).to(grad.dtype), None, None, None


class BiPerSignFunction(torch.autograd.Function):
    """Forward ``sign_pm1(sin(omega w))``; backward ``grad * omega cos(omega w)`` (BiPer stage 2)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, omega: float) -> torch.Tensor:
        ctx.save_for_backward(w)
        ctx.omega = omega
        return sign_pm1(torch.sin(omega * w))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (w,) = ctx.saved_tensors
        return grad * ctx.omega * torch.cos(ctx.omega * w), None


class ApproxSignFunction(torch.autograd.Function):
    """``sign_pm1`` forward; backward ``grad * max(0, 2 - 2|x|)`` (Bi-Real Net's ApproxSign)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp(min=0)


class Estimator:
    """How a network binarizes while training. Subclasses set :attr:`name` and implement
    :meth:`weight` and :meth:`activation`; :meth:`eval_weight_preimage` is what evaluation mode
    takes the sign of."""

    name = ""
    clip_weights = False  # clip latent weights to [-1, 1] after each optimizer step

    def __init__(self) -> None:
        self.epoch = 0
        self.epochs = 1

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Update the schedule for the start of ``epoch`` (0-based) of ``epochs``."""
        self.epoch, self.epochs = int(epoch), int(epochs)

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """Training-mode weights from the latent ones (±1, or real in BiPer's stage 1)."""
        raise NotImplementedError

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """Training-mode ±1 activations with this estimator's backward."""
        raise NotImplementedError

    def eval_weight_preimage(self, w: torch.Tensor) -> torch.Tensor:
        """The value whose sign is the deployed weight (``w`` itself, or ``sin(omega w)``)."""
        return w

    def params(self) -> dict[str, float]:
        """Hyper-parameters, for checkpoints and reports."""
        return {}

    def schedule(self) -> dict[str, float]:
        """The schedule's current values, for the training history."""
        return {}


class ClippedSTE(Estimator):
    """BinaryNet's clipped STE (module docstring)."""

    name = "ste"
    clip_weights = True

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return ClippedSTEFunction.apply(w)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return ClippedSTEFunction.apply(x)


class ReSTE(Estimator):
    """The rectified STE with its ``o`` schedule (module docstring)."""

    name = "reste"

    def __init__(self, o_end: float = 3.0, threshold: float = 1.5, interval: float = 0.1) -> None:
        super().__init__()
        if not o_end >= 1.0:
            raise ValueError(f"ReSTE o_end must be >= 1, not {o_end!r}")
        if not 0.0 < interval < threshold:
            raise ValueError(f"ReSTE needs 0 < interval < threshold, got interval={interval!r}, threshold={threshold!r}")
        self.o_end, self.threshold, self.interval = float(o_end), float(threshold), float(interval)
        self.o = 1.0

    def set_epoch(self, epoch: int, epochs: int) -> None:
        super().set_epoch(epoch, epochs)
        self.o = reste_o(epoch, epochs, self.o_end)

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return ReSTEFunction.apply(w, self.o, self.threshold, self.interval)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return ReSTEFunction.apply(x, self.o, self.threshold, self.interval)

    def params(self) -> dict[str, float]:
        return {"o_end": self.o_end, "threshold": self.threshold, "interval": self.interval}

    def schedule(self) -> dict[str, float]:
        return {"o": self.o}


class BiPer(Estimator):
    """BiPer's periodic binarization and two-stage schedule (module docstring).

    Parameters
    ----------
    omega : float
        Frequency of the square wave / sine (period ``2 pi / omega``).
    stage1_epochs : int or None
        Epochs of stage 1 (real ``sin(omega W)`` weights). ``None``: two thirds of the run, the
        paper's ratio (600 + 300 epochs on CIFAR-10, 200 + 100 on ImageNet).
    """

    name = "biper"

    def __init__(self, omega: float = 20.0, stage1_epochs: int | None = None) -> None:
        super().__init__()
        if not omega > 0:
            raise ValueError(f"BiPer omega must be positive, not {omega!r}")
        if stage1_epochs is not None and (isinstance(stage1_epochs, bool) or int(stage1_epochs) != stage1_epochs or stage1_epochs < 0):
            raise ValueError(f"BiPer stage1_epochs must be a whole number >= 0 or None, not {stage1_epochs!r}")
        self.omega = float(omega)
        self.stage1_epochs = None if stage1_epochs is None else int(stage1_epochs)
        self.stage = 1

    def stage1_length(self, epochs: int) -> int:
        """Epochs spent in stage 1 of a run of ``epochs``."""
        n = (2 * epochs) // 3 if self.stage1_epochs is None else self.stage1_epochs
        return min(n, epochs)

    def stage_at(self, epoch: int, epochs: int) -> int:
        """1 for the first :meth:`stage1_length` epochs, then 2."""
        return 1 if epoch < self.stage1_length(epochs) else 2

    def set_epoch(self, epoch: int, epochs: int) -> None:
        super().set_epoch(epoch, epochs)
        self.stage = self.stage_at(epoch, epochs)

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        if self.stage == 1:
            return torch.sin(self.omega * w)  # real weights; autograd gives omega cos(omega w)
        return BiPerSignFunction.apply(w, self.omega)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return ApproxSignFunction.apply(x)

    def eval_weight_preimage(self, w: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega * w)

    def params(self) -> dict[str, float]:
        return {"omega": self.omega, "stage1_epochs": -1 if self.stage1_epochs is None else self.stage1_epochs}

    def schedule(self) -> dict[str, float]:
        return {"stage": self.stage}


ESTIMATORS = {"ste": ClippedSTE, "reste": ReSTE, "biper": BiPer}


def make_estimator(name: str, **params: Any) -> Estimator:
    """An estimator by name (:data:`ESTIMATORS`) with its hyper-parameters.

    Raises
    ------
    ValueError
        For an unknown name, naming the choices.
    """
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}") from None
    if cls is BiPer and params.get("stage1_epochs") == -1:
        params = dict(params, stage1_epochs=None)
    return cls(**params)
