"""Reference topologies, as trainable PyTorch models (:class:`BNN`).

* ``tfc`` / ``sfc`` / ``lfc``: FINN's MLPs, three hidden layers of 64 / 256 / 1024 neurons.
* ``cnv``: FINN's CNV conv net: 3x3 convolutions of 64, 64, 128, 128, 256, 256 channels (times
  ``width``) with 2x2 max-pools after the second and fourth, then dense layers of 512, 512
  (times ``width``) and the output layer. Sized per input:

  ============  ===================================================================
  input         convolutions
  ============  ===================================================================
  32 x 32 x C   all valid (no padding): 30, 28, pool 14, 12, 10, pool 5, 3, 1
  28 x 28 x C   the first one zero-pads 2 pixels, then as for 32 x 32
  8 x 8 x C     all zero-pad 1 pixel: 8, 8, pool 4, 4, 4, pool 2, 2, 2
  ============  ===================================================================

``conv_padding`` chooses what the padded border of the *binary* convolutions holds: ``"zero"``
(the default: padded taps contribute nothing), ``"-1"`` or ``"+1"`` (a constant activation that
counts in ``K``: one threshold per channel; zero-padded binary convolutions need per-position
threshold classes in the folded engine and cannot be unrolled). A
first convolution on integer pixels always zero-pads (a pixel value of 0).

Every hidden layer is compute -> :class:`~.layers.SignBatchNorm` (-> max-pool); the output
layer is a binary dense layer whose integer scores go through a :class:`~.layers.ScoreHead`.
The first layer takes the integer pixels (``input_bits`` = the data's bit depth, e.g. 8) or
binarized pixels (``input_bits=1``: ``pixel - offset >= 0 -> +1``, ``offset = 2**(data_bits-1)``
by default). Inputs are NHWC batches of integers (as :mod:`bnnfab.models.datasets` gives them).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .estimators import Estimator, make_estimator
from .layers import (
    BinaryConv2d,
    BinaryLinear,
    BinaryMaxPool2d,
    ChannelsFirst,
    ChannelsLast,
    FlattenHWC,
    InputQuant,
    ScoreHead,
    SignBatchNorm,
)

__all__ = ["ARCHS", "CONV_PADDINGS", "MLP_HIDDEN", "CNV_CONV", "CNV_DENSE", "BNN", "build_model", "model_from_config"]

MLP_HIDDEN = {"tfc": (64, 64, 64), "sfc": (256, 256, 256), "lfc": (1024, 1024, 1024)}
CNV_CONV = (64, 64, 128, 128, 256, 256)
CNV_DENSE = (512, 512)
ARCHS = ("tfc", "sfc", "lfc", "cnv")
CONV_PADDINGS = {"zero": 0.0, "-1": -1.0, "+1": 1.0}  # conv_padding -> BinaryConv2d.pad_value

# per input height: padding of each of the six convolutions (pools follow convs 2 and 4)
_CNV_PADS = {32: (0, 0, 0, 0, 0, 0), 28: (2, 0, 0, 0, 0, 0), 8: (1, 1, 1, 1, 1, 1)}


class BNN(nn.Module):
    """A trainable binary network: a sequence of the blocks of :mod:`~.layers` and the
    configuration that rebuilds it (:func:`model_from_config`).

    ``forward`` takes an NHWC batch (any real dtype; integers as floats) and returns logits:
    float32 in training mode, float64 in evaluation mode (see :mod:`~.layers` for the exact
    evaluation contract).
    """

    def __init__(self, body: Sequence[nn.Module], config: dict[str, Any], estimator: Estimator) -> None:
        super().__init__()
        self.body = nn.ModuleList(body)
        self.config = dict(config)
        self.estimator = estimator

    def forward(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float32)
        for m in self.body:
            x = m(x)
        return x

    @torch.no_grad()
    def trace(self, x: torch.Tensor | np.ndarray, batch_size: int = 4096) -> dict[str, Any]:
        """Evaluation-mode inference with the intermediate results, in the simulator's terms.

        Returns a dict: ``activations``, one numpy array per IR layer of the exported model
        (booleans, bit 1 = +1, NHWC or flat, for thresholded / pooled / flattened binary
        outputs; int64 for a flatten of the integer input; the int64 scores last), ``scores``
        (int64), ``logits`` (float64) and ``classes`` (argmax of the scores, ties to the lowest
        index). Batches of ``batch_size`` samples; the results do not depend on it.
        """
        was_training = self.training
        self.eval()
        try:
            parts = [self._trace_chunk(x[s : s + batch_size]) for s in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        acts = [np.concatenate([p[0][j] for p in parts]) for j in range(len(parts[0][0]))]
        scores = np.concatenate([p[1] for p in parts])
        logits = np.concatenate([p[2] for p in parts])
        return {"activations": acts, "scores": scores, "logits": logits, "classes": np.argmax(scores, axis=1)}

    def _trace_chunk(self, x: torch.Tensor | np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        v = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float32)
        acts: list[np.ndarray] = []
        integer = self.config["input_bits"] > 1
        scores = np.zeros((v.shape[0], 0), dtype=np.int64)
        for m in self.body:
            v_in = v
            v = m(v)
            if isinstance(m, SignBatchNorm):
                bits = v > 0
                acts.append((bits.permute(0, 2, 3, 1) if m.spatial else bits).numpy())
                integer = False
            elif isinstance(m, BinaryMaxPool2d):
                acts.append((v > 0).permute(0, 2, 3, 1).numpy())
            elif isinstance(m, FlattenHWC):
                acts.append(v.to(torch.int64).numpy() if integer else (v > 0).numpy())
            elif isinstance(m, ScoreHead):
                scores = v_in.to(torch.int64).numpy()
                acts.append(scores)
        return acts, scores, v.numpy()

    def compute_layers(self) -> list[nn.Module]:
        return [m for m in self.body if isinstance(m, (BinaryLinear, BinaryConv2d))]

    @torch.no_grad()
    def clip_latent(self, bound: float = 1.0) -> None:
        """Clip every latent weight to ``[-bound, bound]`` (BinaryNet)."""
        for m in self.compute_layers():
            m.weight.clamp_(-bound, bound)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C) with positive sizes, not {tuple(input_shape)!r}")
    return shape  # type: ignore[return-value]


def build_model(
    arch: str,
    input_shape: Sequence[int],
    n_classes: int,
    estimator: str | Estimator = "ste",
    input_bits: int = 8,
    data_bits: int = 8,
    input_offset: float | None = None,
    width: float = 1.0,
    hidden: Sequence[int] | None = None,
    scaling: bool = False,
    head: str = "scale",
    estimator_params: dict[str, Any] | None = None,
    conv_padding: str = "zero",
) -> BNN:
    """Build a reference topology (module docstring) with freshly initialised weights (seed the
    global torch RNG first for reproducible weights).

    Parameters
    ----------
    arch : {"tfc", "sfc", "lfc", "cnv"}
    input_shape : (H, W, C)
    n_classes : int
    estimator : str or Estimator
        ``"ste"``, ``"reste"`` or ``"biper"`` (:mod:`~.estimators`), with ``estimator_params``.
    input_bits : int
        ``data_bits`` (integer first layer) or 1 (binarized input).
    data_bits : int
        Bit depth of the unsigned integer pixels.
    input_offset : float, optional
        Binarization offset of a binary input (default ``2**(data_bits - 1)``).
    width : float
        Channel multiplier of ``cnv`` (e.g. 0.25 for 16, 16, 32, 32, 64, 64 / 128, 128).
    hidden : sequence of int, optional
        Hidden sizes of an MLP instead of the arch's (for small tests).
    scaling : bool
        Learnable per-channel scaling factors before each batch norm.
    head : {"scale", "bn"}
        The output head (:class:`~.layers.ScoreHead`).
    conv_padding : {"zero", "-1", "+1"}
        What the padded border of the binary convolutions holds (module docstring).

    Raises
    ------
    ValueError
        For an unknown arch, head, estimator or conv padding, or an input size ``cnv`` is not
        sized for.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    h, w, c = _check_shape(input_shape)
    if not (isinstance(data_bits, int) and 2 <= data_bits <= 16):
        raise ValueError(f"data_bits must be an integer from 2 to 16, not {data_bits!r}")
    if input_bits not in (1, data_bits):
        raise ValueError(f"input_bits must be 1 (binarized input) or the data's {data_bits} bits, not {input_bits!r}")
    if not (isinstance(n_classes, int) and n_classes >= 2):
        raise ValueError(f"n_classes must be an integer >= 2, not {n_classes!r}")
    if not width > 0:
        raise ValueError(f"width must be positive, not {width!r}")
    if head not in ScoreHead.KINDS:
        raise ValueError(f"head must be one of {', '.join(ScoreHead.KINDS)}, not {head!r}")
    if conv_padding not in CONV_PADDINGS:
        raise ValueError(f"conv_padding must be one of {', '.join(CONV_PADDINGS)}, not {conv_padding!r}")
    if isinstance(estimator, Estimator):
        est = estimator
    else:
        est = make_estimator(estimator, **(estimator_params or {}))
    offset = float(2 ** (data_bits - 1)) if input_offset is None else float(input_offset)
    config: dict[str, Any] = {
        "arch": arch,
        "input_shape": [h, w, c],
        "n_classes": n_classes,
        "input_bits": int(input_bits),
        "data_bits": int(data_bits),
        "input_offset": offset if input_bits == 1 else 0.0,
        "width": float(width),
        "hidden": None if hidden is None else [int(v) for v in hidden],
        "scaling": bool(scaling),
        "head": head,
        "estimator": est.name,
        "estimator_params": dict(est.params()),
        "conv_padding": conv_padding,
    }
    body: list[nn.Module] = [InputQuant(input_bits, config["input_offset"])]
    if arch == "cnv":
        if h != w or h not in _CNV_PADS:
            raise ValueError(f"cnv is sized for 8x8, 28x28 and 32x32 inputs, not {h}x{w}")
        if hidden is not None:
            raise ValueError("hidden sizes apply to the MLPs (tfc, sfc, lfc), not to cnv; use width")
        chans = [max(1, int(round(ch * width))) for ch in CNV_CONV]
        dense = [max(1, int(round(n * width))) for n in CNV_DENSE]
        body.append(ChannelsFirst())
        size, cin = h, c
        for i, (cout, pad) in enumerate(zip(chans, _CNV_PADS[h])):
            binary = i > 0 or input_bits == 1  # an integer first layer pads with pixel value 0
            pad_value = CONV_PADDINGS[conv_padding] if binary else 0.0
            body += [BinaryConv2d(cin, cout, 3, est, padding=pad, pad_value=pad_value), SignBatchNorm(cout, est, True, scaling)]
            size = size + 2 * pad - 2
            if i in (1, 3):
                body.append(BinaryMaxPool2d(2))
                size //= 2
            cin = cout
        body += [ChannelsLast(), FlattenHWC()]
        fan_in = size * size * cin
    else:
        dense = list(MLP_HIDDEN[arch] if hidden is None else hidden)
        if not dense or min(dense) < 1:
            raise ValueError(f"hidden sizes must be positive integers, not {hidden!r}")
        body.append(FlattenHWC())
        fan_in = h * w * c
    for n in dense:
        body += [BinaryLinear(fan_in, n, est), SignBatchNorm(n, est, False, scaling)]
        fan_in = n
    body += [BinaryLinear(fan_in, n_classes, est), ScoreHead(n_classes, fan_in, head)]
    return BNN(body, config, est)


def model_from_config(config: dict[str, Any]) -> BNN:
    """Rebuild (with fresh weights) the model a :attr:`BNN.config` describes; load a state dict
    into it to restore a trained one."""
    return build_model(
        config["arch"],
        config["input_shape"],
        config["n_classes"],
        estimator=config["estimator"],
        input_bits=config["input_bits"],
        data_bits=config["data_bits"],
        input_offset=config["input_offset"] if config["input_bits"] == 1 else None,
        width=config["width"],
        hidden=config["hidden"],
        scaling=config["scaling"],
        head=config["head"],
        estimator_params=config["estimator_params"],
        conv_padding=config.get("conv_padding", "zero"),  # configs from before the option: zero
    )

