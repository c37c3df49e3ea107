"""MST-distance regularizer: a differentiable surrogate of each binary layer's MST cost.

Why
---
A binary layer of ``N`` output channels of ``K`` weight bits costs ``N * K`` binary ops per
input vector on the direct path; planned as a forest (design.md §3) it costs
``K * roots + sum of the parent-child Hamming distances``. Weights trained without regard to
that structure sit near random ones, where the forest saves only 2-3x. This module adds a term to
the training loss whose value tracks the forest's cost and whose gradient pulls every channel's
latent weights toward those of its parent in the current forest (and the parent toward its
children), so the trained weights cluster and the forest gets cheap.

The surrogate
-------------
*Soft bits.* The deployed bit of a latent weight ``w`` is ``sign(preimage(w))`` (the estimator's
:meth:`~.estimators.Estimator.eval_weight_preimage`: ``w`` itself, or BiPer's ``sin(omega w)``),
and a channel whose batch-norm scale is negative is exported with its bits flipped (``f = -1``,
design.md §2). The soft ±1 value is ``s = f * tanh(preimage(w) / tau)`` with a per-layer
temperature ``tau = temperature * mean|preimage(w)|`` (fixed at each refresh, so the surrogate
does not depend on how large an estimator lets its latent weights grow). ``s -> sign`` as
``tau -> 0``.

*Soft Hamming distance.* ``d~(i, j) = sum_k (1 - s_ik s_jk) / 2``; it equals the Hamming
distance of the deployed bits when the soft bits are ±1. Its gradient on ``w_jk`` is largest for
latent weights near zero -- the bits that cost the task least to flip -- and fades for confident
ones.

*Soft forest cost.* Every ``refresh_every`` steps (and at the start of every epoch) the forest of
every regularized layer is planned on the current deployed bits (:func:`prim_forest`, a
depth-constrained Prim; the depth limit is ``max_depth``). Between refreshes the forest is held
fixed and the layer's surrogate is

    c~ = (K * roots + sum over edges (parent p, child j) of d~(p, j)) / (N * K)

which at ±1 soft bits is exactly the forest's cost over the direct cost, ``1 / ratio``. The
regularizer's value is the mean of ``c~`` over the regularized layers (so it lies in ``[0, 1]``
whatever the topology, and ``lambda`` means the same for every model), and the training loss is
``cross_entropy + lambda * value``. The roots term is a constant between refreshes: roots disappear
when the re-planned forest finds a parent closer than ``K``, which the pulled-together edges make
more frequent.

Why a fixed forest rather than a soft minimum over all pairs: the real cost is a function of the
forest, and for a fixed forest it is linear in the edge distances, so the gradient of ``c~`` is
the gradient of the real cost's smooth version around the current plan -- the planner's choice of
parents (the non-smooth part) is redone from scratch at each refresh. Penalising all pairs would
instead collapse the layer toward one vector, far beyond what the forest needs.

Which layers
------------
The binary layers -- those whose input is binary, exactly the ones the MST report and the
hardware plan (``bnnfab mst``): every compute layer except an integer-input first layer (8-bit
pixels x ±1 weights, which the planner does not count). The output layer is a binary layer and is
included unless ``include_output=False``.

The planner here is self-contained (NumPy), as :mod:`bnnfab.models` imports nothing from
:mod:`bnnfab.sim`; the reported MST ops come from the real planner
(:func:`bnnfab.sim.mst.plan_mst`) on the exported model. A different planner can be passed as
``planner``.

Choices, and what they were measured against (TFC on digits, STE, 5-8 seeds, with
``bench/mst_tradeoff.py``):

* The forests' depth limit should be the deployment's. At lambda 0.2 (30 epochs), depth-1
  forests gave 4.47x at depth 1 against 3.05x with depth-8 forests, and 5.06x against 5.46x at
  depth 8. The default, 4, is the generator's default ``--mst-depth``.
* Temperature 1 and 2 trace the same accuracy/ratio frontier once lambda is rescaled (2 needs
  about 5x the lambda: 60 epochs, 8 seeds, lambda 1 at temperature 2 gave 96.60% and 5.81x at
  depth 4, lambda 0.2 at temperature 1 96.49% and 5.65x); 0.25 (nearly hard bits: only near-zero
  weights get a gradient) lost both accuracy and ratio against 0.5-1 at the same lambda.
* Re-planning every step gave the same as every 10 steps; every 100 (about 4 epochs) a little
  less (lambda 0.5: 5.99x against 6.43x at depth 8).
* No root-count term: a trained layer's forest at depth >= 2 has one or two roots (its cost is
  the edges), and at depth 1 the roots fall when re-planning finds the pulled-together channels.
* The estimator matters (30 epochs, 5 seeds, at depth 8): ReSTE needs about 4x STE's lambda
  for the same ratio (lambda 0.5: 5.10x at +1.17 points, a gain over its own baseline; lambda
  2: 6.58x at -0.94), BiPer (deployed bit ``sign(sin(omega w))``) more (lambda 2: 5.20x at
  -1.28 points).

Evidence
--------
``python bench/mst_tradeoff.py`` (TFC: integer first layer, binary dense1-3 of 64x64, 64x64,
10x64 = 8,832 binary ops per image direct; STE, 60 epochs, forests at depth 4, 8 seeds; accuracy
on the digits test split from the bit-exact simulator; whole-model direct / MST ops from the real
planner)::

    lambda  acc %  d_acc   D=1   D=2   D=4   D=8   unlimited
    0       96.98   0.00  2.46  2.94  3.20  3.26  3.28
    0.1     96.70  -0.28  3.06  4.07  4.69  4.87  4.90
    0.2     96.49  -0.49  3.41  4.73  5.65  5.86  5.89
    0.5     95.87  -1.11  3.77  5.48  6.76  6.96  6.98
    1       95.03  -1.94  3.94  6.01  7.50  7.69  7.70
    random ±1 weights     2.20  2.49  2.61  2.62  2.63

With forests at depth 1 (``--train-depth 1``), lambda 0.2 gives 4.49x at depth 1 (5.27x at
depth 4) for -0.73 points. The seed-to-seed standard deviation of the accuracy is 0.5-1.2 points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .layers import BinaryConv2d, BinaryLinear, SignBatchNorm

__all__ = [
    "soft_sign",
    "soft_hamming",
    "soft_forest_cost",
    "prim_forest",
    "forest_cost",
    "MstOptions",
    "MstRegularizer",
]

Planner = Callable[[np.ndarray, "int | None"], np.ndarray]


def soft_sign(preimage: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """``tanh(preimage / tau)``: a differentiable ±1 bit, ``sign`` as ``tau -> 0``."""
    return torch.tanh(preimage / tau)


def soft_hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Soft Hamming distances ``sum_k (1 - a_k b_k) / 2`` of the rows of ``a`` and ``b`` (soft
    ±1 values, same shape ``(..., K)``); the Hamming distance when both are ±1."""
    return (1.0 - a * b).sum(dim=-1) / 2.0


def soft_forest_cost(s: torch.Tensor, parent: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A layer's soft forest cost ``K * roots + sum_edges d~(parent, child)`` (unnormalised).

    Parameters
    ----------
    s : (N, K) tensor
        Soft ±1 weights, one row per channel.
    parent : int (N,)
        Parent channel of every channel, -1 for a root.
    """
    par = torch.as_tensor(np.asarray(parent), dtype=torch.int64)
    if par.shape != (s.shape[0],):
        raise ValueError(f"parent must have shape ({s.shape[0]},), not {tuple(par.shape)}")
    child = torch.nonzero(par >= 0).flatten()
    roots = s.shape[0] - child.numel()
    edges = soft_hamming(s[child], s[par[child]]).sum() if child.numel() else s.sum() * 0.0
    return edges + float(s.shape[1] * roots)


def _hamming(bits: np.ndarray) -> np.ndarray:
    b = bits.astype(np.float32) * 2.0 - 1.0  # exact: integers below 2**24
    k = bits.shape[1]
    return np.rint((k - b @ b.T) / 2.0).astype(np.int64)


def prim_forest(bits: np.ndarray, max_depth: int | None = None) -> np.ndarray:
    """A channel-reuse forest of a layer's weight bits: Prim's algorithm on the channels plus a
    virtual root at cost ``K``, growing only from channels above the depth limit.

    With ``max_depth=None`` it is the exact minimum spanning forest (design.md §3); with a limit
    it is the depth-constrained Prim tree, a good (not optimal) plan -- the seed the real planner
    :func:`bnnfab.sim.mst.plan_mst` improves by local search. Ties go to the shallower parent,
    then to the earlier one, as there.

    Parameters
    ----------
    bits : bool (N, K)
        The layer's canonical weight bits, True = +1.
    max_depth : int >= 0 or None

    Returns
    -------
    int64 (N,)
        Parent of every channel, -1 for a root.
    """
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2 or min(bits.shape) < 1:
        raise ValueError(f"bits must be a non-empty 2-D (N, K) array, not shape {bits.shape}")
    if max_depth is not None and (isinstance(max_depth, bool) or int(max_depth) != max_depth or max_depth < 0):
        raise ValueError(f"max_depth must be None or a whole number >= 0, not {max_depth!r}")
    n, k = bits.shape
    par = np.full(n, -1, dtype=np.int64)
    if max_depth == 0:
        return par
    d = _hamming(bits)
    key = np.full(n, k, dtype=np.int64)
    cdepth = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    big = np.iinfo(np.int64).max
    for _ in range(n):
        v = int(np.argmin(np.where(done, big, key)))  # first of the cheapest: ties to the lower index
        done[v] = True
        dv = cdepth[v]
        if max_depth is not None and dv >= max_depth:
            continue
        c = d[v]
        better = ~done & ((c < key) | ((c == key) & (dv + 1 < cdepth)))
        key[better] = c[better]
        par[better] = v
        cdepth[better] = dv + 1
    return par


def forest_cost(bits: np.ndarray, parent: np.ndarray) -> int:
    """Binary ops per input vector of a forest: ``K * roots + sum of edge distances``."""
    bits = np.asarray(bits, dtype=bool)
    parent = np.asarray(parent, dtype=np.int64)
    child = np.flatnonzero(parent >= 0)
    dist = np.count_nonzero(bits[child] != bits[parent[child]], axis=1)
    return int(bits.shape[1] * (bits.shape[0] - child.size) + dist.sum())


def _binary_layers(model: nn.Module, include_output: bool) -> list[tuple[nn.Module, SignBatchNorm | None]]:
    """The compute layers the MST plan counts, each with the SignBatchNorm after it (or None)."""
    body = list(model.body)
    found = []
    for i, m in enumerate(body):
        if isinstance(m, (BinaryLinear, BinaryConv2d)):
            nxt = body[i + 1] if i + 1 < len(body) else None
            found.append((m, nxt if isinstance(nxt, SignBatchNorm) else None))
    if not found:
        return []
    if model.config["input_bits"] > 1:
        found = found[1:]  # the integer first layer: no MST plan in the flow
    if not include_output and found and found[-1][1] is None:
        found = found[:-1]
    return found


@dataclass(frozen=True)
class MstOptions:
    """Settings of the regularizer (validated on construction).

    Parameters
    ----------
    lam : float
        Weight of the term in the loss (``>= 0``).
    max_depth : int or None
        Depth limit of the forests the surrogate follows (None: unlimited).
    temperature : float
        Soft-sign temperature relative to the layer's mean ``|preimage(w)|``.
    refresh_every : int
        Re-plan the forests every this many optimizer steps (and at every epoch start).
    include_output : bool
        Regularize the output layer too (it is a binary layer and counts in the MST ops).
    planner : callable, optional
        ``planner(bits, max_depth) -> parent`` instead of :func:`prim_forest`.

    Raises
    ------
    ValueError
        For a bad option, naming the rule and the value.
    """

    lam: float
    max_depth: int | None = 8
    temperature: float = 1.0
    refresh_every: int = 10
    include_output: bool = True
    planner: Planner | None = None

    def __post_init__(self) -> None:
        lam, depth, t, every = self.lam, self.max_depth, self.temperature, self.refresh_every
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"mst_lambda must be a finite number >= 0, not {lam!r}")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0):
            raise ValueError(f"mst_depth must be None or a whole number >= 0, not {depth!r}")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t > 0 and math.isfinite(t)):
            raise ValueError(f"mst temperature must be a positive number, not {t!r}")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"mst refresh_every must be a whole number >= 1, not {every!r}")
        if self.planner is not None and not callable(self.planner):
            raise ValueError(f"mst planner must be callable (bits, max_depth) -> parent, not {self.planner!r}")
        object.__setattr__(self, "lam", float(lam))
        object.__setattr__(self, "max_depth", None if depth is None else int(depth))
        object.__setattr__(self, "temperature", float(t))
        object.__setattr__(self, "refresh_every", int(every))
        object.__setattr__(self, "include_output", bool(self.include_output))

    def record(self) -> dict[str, Any]:
        """The settings as plain data, for the run record and checkpoints."""
        out: dict[str, Any] = {
            "mst_lambda": self.lam,
            "mst_depth": self.max_depth,
            "mst_temperature": self.temperature,
            "mst_refresh_every": self.refresh_every,
            "mst_include_output": self.include_output,
        }
        if self.planner is not None:
            out["mst_planner"] = getattr(self.planner, "__name__", type(self.planner).__name__)
        return out


class MstRegularizer:
    """The MST-cost surrogate of a :class:`~.topologies.BNN` (module docstring) under
    :class:`MstOptions`."""

    def __init__(self, model: nn.Module, options: MstOptions) -> None:
        self.model = model
        self.options = options
        self.lam = options.lam
        self.planner: Planner = prim_forest if options.planner is None else options.planner
        self.layers = _binary_layers(model, options.include_output)
        self.parents: list[np.ndarray] = []
        self.taus: list[float] = []
        self.flips: list[torch.Tensor] = []

    # -- the pieces -----------------------------------------------------------------------

    def _preimage(self, m: nn.Module) -> torch.Tensor:
        p = m.estimator.eval_weight_preimage(m.weight)
        return p.reshape(p.shape[0], -1)  # conv taps in any order: distances do not care

    @staticmethod
    @torch.no_grad()
    def _flip(bn: SignBatchNorm | None, n: int) -> torch.Tensor:
        if bn is None:
            return torch.ones(n, 1)
        a, _ = bn.affine64()
        return torch.where(a < 0, -1.0, 1.0).to(torch.float32).reshape(n, 1)

    @torch.no_grad()
    def canonical_bits(self) -> list[np.ndarray]:
        """Each regularized layer's deployed bits as exported (flipped channels flipped)."""
        out = []
        for m, bn in self.layers:
            p = self._preimage(m)
            bits = (p >= 0) ^ (self._flip(bn, p.shape[0]) < 0)
            out.append(bits.numpy())
        return out

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-plan every layer's forest and fix the temperatures and flips until the next one."""
        self.parents, self.taus, self.flips = [], [], []
        for (m, bn), bits in zip(self.layers, self.canonical_bits()):
            self.parents.append(np.asarray(self.planner(bits, self.options.max_depth), dtype=np.int64))
            p = self._preimage(m)
            self.taus.append(self.options.temperature * max(float(p.abs().mean()), 1e-12))
            self.flips.append(self._flip(bn, p.shape[0]))

    def soft_bits(self, i: int) -> torch.Tensor:
        """Layer ``i``'s soft ±1 weights ``f * tanh(preimage / tau)`` (differentiable)."""
        m, _ = self.layers[i]
        return self.flips[i] * soft_sign(self._preimage(m), self.taus[i])

    def value(self) -> torch.Tensor:
        """The surrogate: mean over the layers of the soft forest cost over ``N * K``."""
        if not self.parents:
            self.refresh()
        if not self.layers:
            return torch.zeros(())
        terms = []
        for i in range(len(self.layers)):
            s = self.soft_bits(i)
            terms.append(soft_forest_cost(s, self.parents[i]) / float(s.numel()))
        return torch.stack(terms).mean()

    def loss(self, step: int) -> torch.Tensor:
        """``lambda * value()``, re-planning first when ``step`` (in the epoch, 0-based) is a
        multiple of ``refresh_every``."""
        if step % self.options.refresh_every == 0 or not self.parents:
            self.refresh()
        return self.lam * self.value()
