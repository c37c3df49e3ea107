"""The training loop: seeded, resumable, with a progress bar.

Determinism: the model is initialised under ``torch.manual_seed(seed)``; epoch ``e`` visits the
training set in the order of a generator seeded from ``(seed, e)``; nothing else draws random
numbers. A checkpoint, written atomically after every epoch, holds the model, the optimizer and
the history, and the estimator's schedule is a function of the epoch, so a resumed run repeats
the uninterrupted one exactly (same torch build and thread count).

Schedule: Adam; the learning rate follows a cosine from ``lr`` over the run. BiPer restarts the
optimizer and the cosine at the start of its stage 2 (the paper trains stage 2 as a new run
warm-started from stage 1). BinaryNet's STE clips the latent weights to [-1, 1] after each step.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import Dataset, DatasetError, load_dataset
from ..ir import Model
from .errors import TrainError
from .estimators import BiPer, make_estimator
from .export import export_model
from .regularizer import MstOptions, MstRegularizer
from .topologies import BNN, build_model, model_from_config

__all__ = ["TrainResult", "train", "evaluate", "load_checkpoint", "CHECKPOINT_FORMAT", "DEFAULT_LR"]

CHECKPOINT_FORMAT = "bnnfab-train-checkpoint"
CHECKPOINT_VERSION = 1
DEFAULT_LR = {"ste": 1e-2, "reste": 1e-2, "biper": 5e-3}


@dataclass
class TrainResult:
    """A trained model (evaluation mode), its per-epoch history and the run's settings.

    ``history`` has one dict per finished epoch: ``epoch`` (1-based), ``lr``, ``loss`` and
    ``train_acc`` (training mode, over the epoch), ``test_acc`` (evaluation mode: the deployed
    binary network), ``seconds`` and the estimator's schedule (``o`` for ReSTE, ``stage`` for
    BiPer). ``finished`` is False when ``stop_after`` ended the call early.
    """

    model: BNN
    history: list[dict[str, Any]]
    run: dict[str, Any]
    checkpoint: Path | None = None
    finished: bool = True
    test: Dataset | None = field(default=None, repr=False)

    @property
    def test_accuracy(self) -> float | None:
        return self.history[-1]["test_acc"] if self.history else None

    def export(self, name: str | None = None) -> Model:
        """The IR model (:func:`~.export.export_model`)."""
        return export_model(self.model, name=name)


@torch.no_grad()
def evaluate(model: BNN, x: np.ndarray, y: np.ndarray, batch_size: int = 2048) -> float:
    """Accuracy of the evaluation-mode model (argmax of its logits) on ``x``, ``y``."""
    was = model.training
    model.eval()
    correct = 0
    try:
        for s in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(np.asarray(x[s : s + batch_size], dtype=np.float32)))
            correct += int((logits.argmax(dim=1).numpy() == np.asarray(y[s : s + batch_size])).sum())
    finally:
        model.train(was)
    return correct / max(1, len(x))


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2, dtype=np.uint64)
    g = torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(n, generator=g)


def _cycles(estimator: Any, epochs: int) -> list[tuple[int, int]]:
    """Learning-rate cycles ``(start, length)``: one, or BiPer's two stages."""
    if isinstance(estimator, BiPer):
        s1 = estimator.stage1_length(epochs)
        return [c for c in ((0, s1), (s1, epochs - s1)) if c[1] > 0]
    return [(0, epochs)]


def _lr_at(epoch: int, lr: float, cycles: list[tuple[int, int]]) -> float:
    for start, length in cycles:
        if start <= epoch < start + length:
            return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - start) / length))
    return lr


def _make_optimizer(model: BNN, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain data only: ``weights_only`` loading).

    Raises
    ------
    TrainError
        If the file is missing or is not a bnnfab training checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"no checkpoint at {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise TrainError(f"{p}: not a readable training checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{p}: not a bnnfab training checkpoint")
    if ck.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"{p}: checkpoint version {ck.get('version')!r}, this bnnfab reads version {CHECKPOINT_VERSION}")
    return ck


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a half-written checkpoint


def _resolve_dataset(dataset: str | tuple[Dataset, Dataset]) -> tuple[str, Dataset, Dataset]:
    if isinstance(dataset, str):
        try:
            return dataset, load_dataset(dataset, "train"), load_dataset(dataset, "test")
        except DatasetError as exc:
            raise TrainError(str(exc)) from None
    try:
        tr, te = dataset
    except (TypeError, ValueError):
        raise TrainError(f"dataset must be a bundled dataset name or a (train, test) pair of Datasets, not {dataset!r}") from None
    if not (isinstance(tr, Dataset) and isinstance(te, Dataset)):
        raise TrainError("dataset pairs must hold bnnfab.models.datasets.Dataset objects")
    return tr.name, tr, te


def _whole(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise TrainError(f"{what} must be a whole number >= {minimum}, not {value!r}")
    return int(value)


def _mst_options(lam: float, depth: int | None, params: dict[str, Any] | None) -> MstOptions | None:
    """The regularizer's validated options, or None when it is off (``lam == 0``)."""
    try:
        options = MstOptions(lam, depth, **(params or {}))
    except (TypeError, ValueError) as exc:
        raise TrainError(str(exc)) from None
    return options if options.lam > 0 else None


def train(
    arch: str = "tfc",
    dataset: str | tuple[Dataset, Dataset] = "digits",
    estimator: str = "ste",
    epochs: int = 20,
    seed: int = 0,
    *,
    batch_size: int = 64,
    lr: float | None = None,
    weight_decay: float = 0.0,
    input_bits: int | None = None,
    width: float = 1.0,
    hidden: list[int] | tuple[int, ...] | None = None,
    scaling: bool = False,
    head: str = "scale",
    estimator_params: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = False,
    threads: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    mst_lambda: float = 0.0,
    mst_depth: int | None = 4,
    mst_params: dict[str, Any] | None = None,
    conv_padding: str = "zero",
) -> TrainResult:
    """Train a reference topology on a dataset.

    Parameters
    ----------
    arch : {"tfc", "sfc", "lfc", "cnv"}
    dataset : str or (Dataset, Dataset)
        A bundled dataset name (its train and test splits) or a ``(train, test)`` pair.
    estimator : {"ste", "reste", "biper"}
        Gradient estimator (:mod:`~.estimators`); ``estimator_params`` passes its
        hyper-parameters (``o_end``; ``omega``, ``stage1_epochs``).
    epochs, seed : int
    batch_size : int
    lr : float, optional
        Adam's initial learning rate (default :data:`DEFAULT_LR` of the estimator).
    weight_decay : float
    input_bits : int, optional
        The data's bit depth (integer first layer; the default) or 1 (binarized input).
    width, hidden, scaling, head, conv_padding
        Topology options (:func:`~.topologies.build_model`).
    checkpoint : path, optional
        Written after every epoch. An existing file is only continued with ``resume=True``.
    resume : bool
        Continue the run in ``checkpoint``; its settings must equal these.
    stop_after : int, optional
        Stop after this many epochs in this call (the checkpoint lets a later call resume).
    progress : bool
        Show a progress bar (stderr).
    threads : int, optional
        Torch CPU threads for this call (restored afterwards); default: torch's setting. Float
        reductions depend on it, so a run repeats bit for bit only with the same count, and a
        resume with another count warns. One thread is fastest for the small models.
    on_epoch : callable, optional
        Called with each epoch's history entry.
    mst_lambda, mst_depth, mst_params
        The MST-distance regularizer (:mod:`~.regularizer`): its weight (0: off), the depth
        limit of the forests it follows, and its other options (``temperature``,
        ``refresh_every``, ``include_output``, ``planner``). With ``mst_lambda > 0`` the history
        gains ``mst`` (the surrogate, mean over the epoch) and the run record the settings.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainError
        For bad options, a missing checkpoint to resume, an existing one without ``resume``, or a
        checkpoint made with other settings.
    """
    if threads is not None:
        threads = _whole(threads, "threads", 1)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return train(
                arch, dataset, estimator, epochs, seed, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                input_bits=input_bits, width=width, hidden=hidden, scaling=scaling, head=head,
                estimator_params=estimator_params, checkpoint=checkpoint, resume=resume, stop_after=stop_after,
                progress=progress, threads=None, on_epoch=on_epoch,
                mst_lambda=mst_lambda, mst_depth=mst_depth, mst_params=mst_params, conv_padding=conv_padding,
            )
        finally:
            torch.set_num_threads(before)
    epochs = _whole(epochs, "epochs", 1)
    seed = _whole(seed, "seed", 0)
    batch_size = _whole(batch_size, "batch_size", 2)
    if stop_after is not None:
        stop_after = _whole(stop_after, "stop_after", 1)
    try:
        est = make_estimator(estimator, **(estimator_params or {}))
    except (ValueError, TypeError) as exc:
        raise TrainError(str(exc)) from None
    if lr is None:
        lr = DEFAULT_LR[est.name]
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise TrainError(f"lr must be a positive number, not {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise TrainError(f"weight_decay must be a number >= 0, not {weight_decay!r}")
    ds_name, tr, te = _resolve_dataset(dataset)
    bits = tr.bits if input_bits is None else input_bits
    run: dict[str, Any] = {
        "arch": arch,
        "dataset": ds_name,
        "estimator": est.name,
        "estimator_params": est.params(),
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "input_bits": int(bits),
        "width": float(width),
        "hidden": None if hidden is None else [int(h) for h in hidden],
        "scaling": bool(scaling),
        "head": head,
    }
    if conv_padding != "zero":
        run["conv_padding"] = conv_padding  # recorded when not the default, as for the regularizer
    mst = _mst_options(mst_lambda, mst_depth, mst_params)
    if mst is not None:
        run.update(mst.record())  # only when on: a lambda = 0 run records what it always did
    ck_path = None if checkpoint is None else Path(checkpoint)
    if resume and ck_path is None:
        raise TrainError("resume needs a checkpoint path")

    start, history, opt_state = 0, [], None
    if resume:
        ck = load_checkpoint(ck_path)  # type: ignore[arg-type]
        diff = [f"{k}={ck['run'].get(k)!r} (asked {v!r})" for k, v in run.items() if ck["run"].get(k) != v]
        if diff:
            raise TrainError(f"checkpoint {ck_path} was made with other settings: {', '.join(diff)}")
        if ck.get("threads") != torch.get_num_threads():
            warnings.warn(
                f"checkpoint {ck_path} was written with {ck.get('threads')} torch threads, this run has "
                f"{torch.get_num_threads()}: the result may differ in the last bits from an uninterrupted run",
                stacklevel=2,
            )
        model = model_from_config(ck["model_config"])
        model.load_state_dict(ck["state_dict"])
        start, history, opt_state = int(ck["epoch"]), list(ck["history"]), ck["optimizer"]
    else:
        if ck_path is not None and ck_path.exists():
            raise TrainError(f"checkpoint {ck_path} exists; resume it (--resume) or delete it to start over")
        torch.manual_seed(seed)
        try:
            model = build_model(
                arch,
                tr.x.shape[1:],
                tr.n_classes,
                estimator=est,
                input_bits=bits,
                data_bits=tr.bits,
                width=width,
                hidden=hidden,
                scaling=scaling,
                head=head,
                conv_padding=conv_padding,
            )
        except ValueError as exc:
            raise TrainError(str(exc)) from None
    est = model.estimator
    reg = None if mst is None else MstRegularizer(model, mst)

    x_tr = torch.from_numpy(tr.x.astype(np.float32))
    y_tr = torch.from_numpy(tr.y.astype(np.int64))
    n = x_tr.shape[0]
    steps = n // batch_size + (1 if n % batch_size > 1 else 0)  # a last batch of 1 is dropped (batch norm)
    cycles = _cycles(est, epochs)
    opt = _make_optimizer(model, lr, weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs * steps, initial=start * steps, unit="step", desc=f"train {arch}/{est.name}", leave=True)
    end = epochs if stop_after is None else min(epochs, start + stop_after)
    try:
        for epoch in range(start, end):
            t0 = time.perf_counter()
            est.set_epoch(epoch, epochs)
            if epoch > 0 and any(epoch == c for c, _ in cycles):
                opt = _make_optimizer(model, lr, weight_decay)  # BiPer stage 2: a fresh run, warm-started
            lr_e = _lr_at(epoch, lr, cycles)
            for group in opt.param_groups:
                group["lr"] = lr_e
            model.train()
            order = _epoch_order(seed, epoch, n)
            loss_sum, correct, seen = 0.0, 0, 0
            reg_sum, reg_steps = 0.0, 0
            for step, s in enumerate(range(0, n, batch_size)):
                idx = order[s : s + batch_size]
                if idx.numel() < 2:
                    continue
                xb, yb = x_tr[idx], y_tr[idx]
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                total = loss
                if reg is not None:  # MST-distance regularizer
                    term = reg.loss(step)
                    total = loss + term
                    reg_sum, reg_steps = reg_sum + float(term.detach()) / reg.lam, reg_steps + 1
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                if est.clip_weights:
                    model.clip_latent(1.0)
                loss_sum += float(loss.detach()) * idx.numel()
                correct += int((logits.detach().argmax(dim=1) == yb).sum())
                seen += idx.numel()
                if bar is not None:
                    bar.update(1)
            entry = {
                "epoch": epoch + 1,
                "lr": lr_e,
                "loss": loss_sum / max(1, seen),
                "train_acc": correct / max(1, seen),
                "test_acc": evaluate(model, te.x, te.y),
                **est.schedule(),
            }
            if reg is not None:
                entry["mst"] = reg_sum / max(1, reg_steps)
            entry["seconds"] = time.perf_counter() - t0
            history.append(entry)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{entry['loss']:.3f}", test=f"{entry['test_acc']:.3f}")
            if ck_path is not None:
                _save_checkpoint(
                    ck_path,
                    {
                        "format": CHECKPOINT_FORMAT,
                        "version": CHECKPOINT_VERSION,
                        "run": run,
                        "model_config": model.config,
                        "epoch": epoch + 1,
                        "state_dict": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "history": history,
                        "threads": torch.get_num_threads(),
                    },
                )
            if on_epoch is not None:
                on_epoch(entry)
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    done = start if not history else int(history[-1]["epoch"])
    return TrainResult(model=model, history=history, run=run, checkpoint=ck_path, finished=done >= epochs, test=te)
